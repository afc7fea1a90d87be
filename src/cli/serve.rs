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
    errln!(
        "usher: serving {} gateway(s) on http://{} ({})",
        config.integrations.len(),
        running.addr,
        if running.engine.is_some() {
            format!("engine: {} worker(s)", config.engine.workers)
        } else {
            "gateway only".to_string()
        }
    );
    for i in &config.integrations {
        errln!(
            "usher:   {} ({}) at http://{}/scim/v2/{}",
            i.name,
            i.app,
            running.addr,
            i.id
        );
    }
    server::shutdown_signal().await;
    running.shutdown().await?;
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
