//! `usher integration list|resume`: the shared state of integrations (paused after the
//! app refused the service account's sign-in).

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use usher::audit::{NewEvent, kinds};

#[derive(Subcommand)]
pub enum IntegrationCommand {
    /// Every configured integration: running, or paused with when and why.
    List,
    /// Allow sign-ins to a paused integration again; its paused jobs are queued.
    Resume { id: String },
}

pub async fn run(path: &Path, command: IntegrationCommand) -> anyhow::Result<ExitCode> {
    let (config, store) = super::open(path).await?;
    let code = match command {
        IntegrationCommand::List => {
            outln!(
                "{:<16} {:<8} {:<24}  reason",
                "integration",
                "state",
                "since"
            );
            for i in &config.integrations {
                let st = store.integration_state(&i.id).await?.unwrap_or_default();
                match (&st.paused_at, &st.paused_reason) {
                    (Some(at), reason) => outln!(
                        "{:<16} {:<8} {:<24}  {}",
                        i.id,
                        "paused",
                        &at[..at.len().min(19)],
                        reason.as_deref().unwrap_or("")
                    ),
                    (None, _) => outln!("{:<16} {:<8}", i.id, "running"),
                }
            }
            ExitCode::SUCCESS
        }
        IntegrationCommand::Resume { id } => {
            if !config.integrations.iter().any(|i| i.id == id) {
                store.close().await;
                anyhow::bail!("no integration `{id}` in {}", path.display());
            }
            let event = NewEvent {
                actor: super::cli_actor(),
                event_type: kinds::INTEGRATION_RESUMED,
                target: None,
                integration_id: Some(id.clone()),
                detail: json!({"reason": "resumed by an operator"}),
            };
            if store.resume_integration(&id, &event).await? {
                // The webhooks hear it as they heard the pause.
                let body = usher::engine::webhook_envelope(
                    kinds::INTEGRATION_RESUMED,
                    store.clock().now(),
                    &id,
                    "",
                    json!({"reason": "resumed by an operator"}),
                );
                for w in config
                    .webhooks
                    .iter()
                    .filter(|w| usher::engine::webhook_wants(w, kinds::INTEGRATION_RESUMED))
                {
                    store
                        .enqueue_webhook(&w.url, kinds::INTEGRATION_RESUMED, &body)
                        .await?;
                }
                outln!("{id}: resumed; its paused jobs are queued");
                ExitCode::SUCCESS
            } else {
                errln!("usher: integration `{id}` is not paused");
                ExitCode::from(1)
            }
        }
    };
    store.close().await;
    Ok(code)
}
