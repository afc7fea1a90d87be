//! Never locked out: sign-ins are admitted from the database (no sign-in while the
//! integration is paused; a budget for playbooks that cannot tell a refusal), and a
//! paused integration resumes when its service account's vault entry changes.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::json;

use super::Secrets;
use super::worker::Shared;
use crate::audit::{Actor, NewEvent, kinds};
use crate::config::WebhookConfig;
use crate::playbook::{SIGN_IN_BUDGET, SIGN_IN_WINDOW, SignInGate, SignInVerdict};
use crate::store::{SignInAdmission, Store};

/// Admits sign-ins through the database, so that every process agrees, and pauses an
/// integration the moment its app refuses a sign-in.
pub(crate) struct StoreGate {
    pub store: Store,
    pub process: String,
    pub secrets: Secrets,
    /// Integration id → its service account's vault entry.
    pub accounts: HashMap<String, String>,
    pub webhooks: Vec<WebhookConfig>,
}

/// The reason a refused sign-in pauses an integration with.
pub(crate) fn refusal_reason(account: &str, said: &str) -> String {
    format!("the app refused the sign-in of service account `{account}`: {said}")
}

/// Pauses `integration` (once: false when it already was), audited, logged and sent to
/// the webhooks that want `integration.paused`.
pub(crate) async fn pause(
    store: &Store,
    secrets: &Secrets,
    webhooks: &[WebhookConfig],
    integration: &str,
    account: &str,
    reason: &str,
    job: Option<i64>,
) -> bool {
    let version = secret_version(secrets, account).await;
    let event = NewEvent {
        actor: Actor::System,
        event_type: kinds::INTEGRATION_PAUSED,
        target: None,
        integration_id: Some(integration.to_owned()),
        detail: json!({"reason": reason, "job": job, "service_account": account}),
    };
    match store
        .pause_integration(integration, reason, version.as_deref(), &event)
        .await
    {
        Ok(true) => {
            tracing::error!(integration = %integration,
                "integration paused: {reason}; no sign-in until its vault entry changes or `usher integration resume {integration}`");
            let body = super::webhook::envelope(
                kinds::INTEGRATION_PAUSED,
                store.clock().now(),
                integration,
                "",
                json!({"reason": reason}),
            );
            for w in webhooks {
                if super::webhook::wants(w, kinds::INTEGRATION_PAUSED)
                    && let Err(e) = store
                        .enqueue_webhook(&w.url, kinds::INTEGRATION_PAUSED, &body)
                        .await
                {
                    tracing::warn!(error = %e, "queueing a webhook failed");
                }
            }
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::error!(integration = %integration, error = %e, "pausing the integration failed");
            false
        }
    }
}

impl SignInGate for StoreGate {
    fn signed_in<'a>(&'a self, target: &'a str, mfa: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.store.record_login(target, mfa).await {
                tracing::warn!(integration = target, error = %e, "recording a sign-in failed");
            }
        })
    }

    fn admit<'a>(&'a self, target: &'a str, budgeted: bool) -> BoxFuture<'a, SignInVerdict> {
        Box::pin(async move {
            let budget = budgeted.then_some((SIGN_IN_BUDGET, SIGN_IN_WINDOW));
            match self
                .store
                .admit_sign_in(target, &self.process, budget)
                .await
            {
                Ok(SignInAdmission::Admitted) => SignInVerdict::Go,
                Ok(SignInAdmission::Paused { reason }) => SignInVerdict::Paused { reason },
                Ok(SignInAdmission::Budget { retry_at, .. }) => SignInVerdict::Budget { retry_at },
                Err(e) => SignInVerdict::Unknown(e.to_string()),
            }
        })
    }

    fn refused<'a>(&'a self, target: &'a str, said: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let account = self.accounts.get(target).map(String::as_str).unwrap_or("?");
            let reason = refusal_reason(account, said);
            pause(
                &self.store,
                &self.secrets,
                &self.webhooks,
                target,
                account,
                &reason,
                None,
            )
            .await;
        })
    }
}

/// The version of an integration's service-account entry, when the secrets come from
/// the vault (fixed secrets never change: only an operator resumes those).
pub(crate) async fn secret_version(secrets: &Secrets, entry: &str) -> Option<String> {
    match secrets {
        Secrets::Vault(v) => v.version(entry).await.ok().flatten(),
        Secrets::Fixed(_) => None,
    }
}

/// Resumes, every `poll`, the paused integrations of this engine whose vault entry
/// changed since the pause.
pub(crate) async fn resume_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop_signal();
    while !shared.is_stopping() {
        if let Err(e) = resume_changed(&shared).await {
            tracing::warn!(error = %e, "checking paused integrations failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.poll) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn resume_changed(shared: &Shared) -> Result<(), crate::store::StoreError> {
    for st in shared.store.paused_integrations().await? {
        let Some(integ) = shared.integrations.get(&st.integration_id) else {
            continue;
        };
        let entry = &integ.config.service_account;
        let Some(now) = secret_version(shared.secrets(), entry).await else {
            continue;
        };
        if st.paused_secret.as_deref() == Some(now.as_str()) {
            continue;
        }
        let why = format!("the vault entry `{entry}` changed");
        let event = NewEvent {
            actor: Actor::System,
            event_type: kinds::INTEGRATION_RESUMED,
            target: None,
            integration_id: Some(st.integration_id.clone()),
            detail: json!({"reason": why, "paused_reason": st.paused_reason}),
        };
        if shared
            .store
            .resume_integration(&st.integration_id, &event)
            .await?
        {
            tracing::warn!(integration = %st.integration_id, "integration resumed: {why}");
            shared
                .notify_integration(
                    kinds::INTEGRATION_RESUMED,
                    &st.integration_id,
                    json!({"reason": why}),
                )
                .await;
        }
    }
    Ok(())
}
