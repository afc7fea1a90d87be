//! `usher serve`.

use std::path::Path;
use std::process::ExitCode;

use usher::config::Config;
use usher::engine::Secrets;
use usher::playbook::DriverConfig;
use usher::server::{self, EngineSetup};
use usher::vault::{Keyring, Vault};

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    if config.integrations.is_empty() {
        tracing::warn!("the configuration has no integrations: no gateway is served");
    }
    let setup = EngineSetup {
        config_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        secrets: serve_secrets(&config).await?,
        driver: DriverConfig::default(),
    };
    let running = server::start_with(&config, config.listen, Some(setup)).await?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mode = if running.engine.is_some() {
        format!("engine: {} worker(s)", config.engine.workers)
    } else {
        "gateway only".to_string()
    };
    // With JSON logs the banner is log events too: every line on stderr is JSON.
    if crate::json_logs() {
        tracing::info!(gateways = config.integrations.len(), addr = %running.addr, %scheme, mode = %mode, "usher serving");
        for i in &config.integrations {
            tracing::info!(integration = %i.id, app = %i.app, url = %format!("{scheme}://{}/scim/v2/{}", running.addr, i.id), "gateway");
        }
    } else {
        errln!(
            "usher: serving {} gateway(s) on {scheme}://{} ({mode})",
            config.integrations.len(),
            running.addr,
        );
        for i in &config.integrations {
            errln!(
                "usher:   {} ({}) at {scheme}://{}/scim/v2/{}",
                i.name,
                i.app,
                running.addr,
                i.id
            );
        }
    }
    server::shutdown_signal().await;
    // Within Docker's and Kubernetes' default 10 s: running jobs are released after
    // engine.shutdown_grace; whatever still holds on after 9 s (or 4 s past a longer
    // grace) is left to the leases.
    let limit = std::time::Duration::from_secs(9)
        .max(config.engine.shutdown_grace + std::time::Duration::from_secs(4));
    match tokio::time::timeout(limit, running.shutdown()).await {
        Ok(r) => r?,
        Err(_) => tracing::warn!(
            "shutdown took over {}s; exiting (leases expire for the rest)",
            limit.as_secs()
        ),
    }
    tracing::info!("usher stopped");
    Ok(ExitCode::SUCCESS)
}

/// Secrets of the integrations' service accounts for `usher serve`: the vault, when
/// the engine runs (it needs the key).
async fn serve_secrets(config: &Config) -> anyhow::Result<Secrets> {
    if config.engine.workers == 0 || config.integrations.is_empty() {
        return Ok(Secrets::Fixed(Default::default()));
    }
    let keys = Keyring::from_env_or_config(config.vault.key_file.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{e} (the engine logs into apps with secrets from the vault; set engine.workers: 0 for a gateway-only process)"
        )
    })?;
    Ok(Secrets::Vault(Vault::new(
        super::open_store(config).await?,
        keys,
    )))
}
