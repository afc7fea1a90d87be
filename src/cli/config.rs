//! `usher config check` and `usher token generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use rand::RngCore;

use usher::audit::checkpoint::{CheckpointError, CheckpointKey};
use usher::config::{Config, ConfigError, Purpose, hash_token, located, redact_url};
use usher::store::Store;
use usher::vault::{Keyring, Vault};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file as `usher serve` would (playbooks, database, keys)
    /// without starting anything; print every mistake and exit 1 when there is one.
    Check {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the SHA-256 to put in `scim_token_sha256`.
    Generate,
}

pub async fn config_command(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { config } => {
            let report = check(&config).await;
            for p in report.problems.iter().chain(&report.warnings) {
                errln!("{p}");
            }
            if report.problems.is_empty() {
                outln!("{}: ok ({})", config.display(), report.notes.join("; "));
                Ok(ExitCode::SUCCESS)
            } else {
                errln!(
                    "usher: {}: {} mistake(s)",
                    config.display(),
                    report.problems.len()
                );
                Ok(ExitCode::from(1))
            }
        }
    }
}

/// What `config check` found: mistakes (each a line, with `file:line:col` where it
/// comes from the file) and notes for the ok line.
pub struct Report {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// What `serve` starts with but is likely a slip (each a line, not a mistake).
    pub warnings: Vec<String>,
}

/// Everything `usher serve` checks before it listens, all of it, without stopping at
/// the first mistake and without changing anything (the database is only read).
pub async fn check(path: &Path) -> Report {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let file = path.display().to_string();
    let config = match Config::load_with_problems(path, Purpose::Serve) {
        Ok((c, found)) => {
            problems.extend(found.iter().map(ToString::to_string));
            c
        }
        Err(e) => {
            // A YAML syntax or type error stops the parse: nothing else can be checked.
            problems.extend(e.into_list().iter().map(ToString::to_string));
            return Report {
                problems,
                notes,
                warnings,
            };
        }
    };
    if config.integrations.is_empty() {
        problems.push(
            located(
                &file,
                config.positions.integrations,
                "no integrations: `usher serve` would serve no gateway".into(),
            )
            .to_string(),
        );
    }
    notes.push(format!("{} integration(s)", config.integrations.len()));
    // Playbooks: the file exists and every mistake in it, as `serve` loads them.
    let mut seen = std::collections::HashSet::new();
    for (n, i) in config.integrations.iter().enumerate() {
        if !seen.insert(i.playbook.clone()) {
            continue; // each file's mistakes once
        }
        if let Err(errors) = usher::playbook::load_file(&i.playbook) {
            let unreadable = match errors.0.as_slice() {
                [one] => one.message.strip_prefix("cannot read playbook: "),
                _ => None,
            };
            match unreadable {
                Some(why) => problems.push(
                    located(
                        &file,
                        config.positions.of(n).playbook,
                        format!(
                            "integration `{}`: cannot read playbook {}: {why}",
                            i.id,
                            i.playbook.display()
                        ),
                    )
                    .to_string(),
                ),
                None => problems.extend(errors.0.iter().map(ToString::to_string)),
            }
        }
    }
    // The database: reachable, and migrations this build can run.
    match Store::inspect(&config.database).await {
        Ok(st) => {
            let at = config.positions.database;
            if !st.unknown.is_empty() {
                problems.push(located(&file, at, format!(
                    "the database has migrations this Usher does not know ({:?}): it belongs to a newer version",
                    st.unknown
                )).to_string());
            }
            if !st.failed.is_empty() {
                problems.push(
                    located(
                        &file,
                        at,
                        format!(
                            "the database has failed migrations ({:?}); see docs/operations.md",
                            st.failed
                        ),
                    )
                    .to_string(),
                );
            }
            let db = redact_url(&config.database);
            if st.exists && st.pending == 0 && st.unknown.is_empty() {
                warnings.extend(missing_entries(&config).await);
            }
            notes.push(match (st.exists, st.pending) {
                (false, _) => format!("database {db} will be created"),
                (true, 0) => format!("database {db} reachable and migrated"),
                (true, n) => format!("database {db} reachable, {n} migration(s) to apply at start"),
            });
        }
        Err(e) => {
            problems.push(located(&file, config.positions.database, e.to_string()).to_string())
        }
    }
    // The vault key, when this process would run the engine.
    if config.engine.workers > 0 && !config.integrations.is_empty() {
        match Keyring::from_env_or_config(config.vault.key_file.as_deref()) {
            Ok(k) => notes.push(format!("vault key {}", k.primary().id())),
            Err(e) => problems
                .push(located(&file, config.positions.vault_key_file, e.to_string()).to_string()),
        }
    }
    // Audit checkpoints: a key that reads, and one when a checkpoint file is asked for.
    match CheckpointKey::from_env_or_config(config.audit.checkpoint_key_file.as_deref()) {
        Ok(Some(_)) => notes.push("audit checkpoints on".into()),
        Ok(None) if config.audit.checkpoint_file.is_some() => {
            problems.push(
                ConfigError::Semantic {
                    file: file.clone(),
                    message: CheckpointError::NoKey.to_string(),
                }
                .to_string(),
            );
        }
        Ok(None) => {}
        Err(e) => problems.push(format!("{file}: {e}")),
    }
    Report {
        problems,
        notes,
        warnings,
    }
}

/// Service accounts without a vault entry: `serve` starts, but their jobs fail until
/// `usher vault set` adds one (a note, not a mistake). Only for a migrated database,
/// which opening does not change.
async fn missing_entries(config: &Config) -> Vec<String> {
    let Ok(store) = super::open_store(config).await else {
        return Vec::new();
    };
    let names: Vec<String> = match Vault::entries(&store).await {
        Ok(e) => e.into_iter().map(|e| e.name).collect(),
        Err(_) => Vec::new(),
    };
    store.close().await;
    let mut out: Vec<String> = config
        .integrations
        .iter()
        .filter(|i| !names.contains(&i.service_account))
        .map(|i| {
            format!(
                "warning: no vault entry `{}` for integration `{}` (its jobs fail until `usher vault set {}`)",
                i.service_account, i.id, i.service_account
            )
        })
        .collect();
    out.dedup();
    out
}

pub fn token_command(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Generate => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            outln!("token:  {token}");
            outln!("sha256: {}", hex::encode(hash_token(&token)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
