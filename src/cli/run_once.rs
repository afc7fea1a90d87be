//! `usher run-once`: claim and run the jobs that are due, then exit — for Kubernetes
//! CronJobs, cron and CI pipelines. Exit 0: every job succeeded (or there was none);
//! 1: some did not; 2: it could not start (configuration, keys, playbooks, database).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use usher::config::{Config, Purpose, parse_duration};
use usher::engine::{self, Engine, EngineParams, RunOnceLimits, Secrets};
use usher::playbook::DriverConfig;
use usher::vault::{Keyring, Vault};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
    config: PathBuf,
    /// Only this integration's jobs.
    #[arg(long)]
    integration: Option<String>,
    /// Stop claiming after this many jobs.
    #[arg(long, value_name = "N")]
    max_jobs: Option<usize>,
    /// Stop claiming after this long (e.g. 10m) and release the jobs still running.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    timeout: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration like 500ms, 30s, 10m, 1h"))
}

const CANNOT_START: u8 = 2;

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match prepare(&args.config, args.integration.as_deref()).await {
        Ok(params) => {
            let limits = RunOnceLimits {
                max_jobs: args.max_jobs,
                timeout: args.timeout,
            };
            let s = match Engine::run_once(params, limits).await {
                Ok(s) => s,
                Err(e) => return Ok(cannot_start(&anyhow::Error::new(e))),
            };
            outln!(
                "usher run-once: {} job(s): {} succeeded, {} failed, {} waiting for a retry, {} released{}{}",
                s.total(),
                s.succeeded,
                s.failed,
                s.waiting,
                s.released,
                if s.other > 0 {
                    format!(", {} cancelled or superseded", s.other)
                } else {
                    String::new()
                },
                if s.timed_out {
                    " (timeout reached)"
                } else {
                    ""
                }
            );
            Ok(if s.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => Ok(cannot_start(&e)),
    }
}

fn cannot_start(e: &anyhow::Error) -> ExitCode {
    errln!("usher: run-once cannot start: {}", super::one_line(e));
    ExitCode::from(CANNOT_START)
}

/// The engine's parameters, as `usher serve` sets them up (secrets from the vault).
pub(super) async fn prepare(path: &Path, only: Option<&str>) -> anyhow::Result<EngineParams> {
    let mut config = Config::load_for(path, Purpose::RunJobs)?;
    if let Some(id) = only {
        if !config.integrations.iter().any(|i| i.id == id) {
            let known: Vec<&str> = config.integrations.iter().map(|i| i.id.as_str()).collect();
            anyhow::bail!(
                "no integration `{id}` in {} (it has: {})",
                path.display(),
                known.join(", ")
            );
        }
        config.integrations.retain(|i| i.id == id);
    }
    if config.integrations.is_empty() {
        anyhow::bail!("{}: no integrations to run jobs for", path.display());
    }
    let playbooks = engine::load_playbooks(&config, Path::new(""))?;
    let keys = Keyring::from_env_or_config(config.vault.key_file.as_deref())?;
    let store = super::open_store(&config).await?;
    Ok(EngineParams {
        store: store.clone(),
        settings: config.engine.clone(),
        integrations: config.integrations.clone(),
        playbooks,
        secrets: Secrets::Vault(Vault::new(store, keys)),
        webhooks: config.webhooks.clone(),
        evidence_dir: engine::evidence_dir(&config),
        driver: DriverConfig::default(),
    })
}
