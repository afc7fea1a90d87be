//! The `usher` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rand::RngCore;

use usher::config::{Config, hash_token};

mod demo;
mod healthcheck;

/// Secrets of the integrations' service accounts for `usher serve`: the vault, when
/// the engine runs (it needs the key).
async fn serve_secrets(config: &Config) -> anyhow::Result<usher::engine::Secrets> {
    if config.engine.workers == 0 || config.integrations.is_empty() {
        return Ok(usher::engine::Secrets::Fixed(Default::default()));
    }
    let keys = usher::vault::Keyring::from_env_or_config(config.vault.key_file.as_deref())
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (the engine logs into apps with secrets from the vault; set engine.workers: 0 for a gateway-only process)"
            )
        })?;
    Ok(usher::engine::Secrets::Vault(usher::vault::Vault::new(
        open_store(config).await?,
        keys,
    )))
}

#[derive(Parser)]
#[command(
    name = "usher",
    version,
    about = "SCIM 2.0 gateway for apps with an admin UI and no API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every integration's SCIM gateway.
    Serve {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Bearer tokens for integrations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Playbook tools: check, schema, run one action.
    Playbook {
        #[command(subcommand)]
        command: PlaybookCommand,
    },
    /// The vault of service-account secrets (values are read from standard input or a
    /// prompt, never from arguments, and never printed).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Provisioning jobs: list, show, retry, cancel.
    Jobs {
        #[arg(
            long,
            short,
            default_value = "usher.yaml",
            env = "USHER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Check that a running server answers on /healthz (or --path); exit 0 or 1.
    Healthcheck(healthcheck::Args),
    /// Run a complete demo: a bundled admin app, a SCIM gateway for it and the engine.
    Demo {
        /// Address of the SCIM gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Folder for the demo's database, configuration and evidence.
        #[arg(long, default_value = "usher-demo")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Create or replace an entry. Reads from standard input, one per line (or prompts):
    /// the password, then the TOTP seed or otpauth:// URI (with --totp), then each
    /// --extra field's value.
    Set {
        /// Entry name: the integrations' `service_account`.
        name: String,
        #[arg(long)]
        username: String,
        /// Also read a TOTP seed (base32) or an otpauth:// URI.
        #[arg(long)]
        totp: bool,
        /// Also read a value for this extra field (`secret.FIELD` in templates); repeatable.
        #[arg(long = "extra", value_name = "FIELD")]
        extras: Vec<String>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Set an entry's TOTP from an otpauth:// URI read from standard input.
    ImportOtpauth {
        name: String,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// List entries: names, fields present, key id, last change. Never values.
    List {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Delete an entry.
    Rm {
        name: String,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Re-encrypt every entry under a new key (then configure that key everywhere).
    Rekey {
        /// File with the new key; else USHER_VAULT_NEW_KEY (base64 of 32 bytes).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Print a new random vault key (base64), or write it to a new file (mode 600).
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rotate a service account's password in the app (the playbook's rotate_password
    /// action) and in the vault.
    Rotate {
        /// The entry; defaults to the integration's `service_account`.
        name: Option<String>,
        /// The integration whose playbook and app to use.
        #[arg(long)]
        integration: String,
        /// Directory for evidence screenshots.
        #[arg(long)]
        evidence: Option<PathBuf>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Newest jobs first.
    List {
        #[arg(long)]
        integration: Option<String>,
        /// pending, staged, running, succeeded, failed, cancelled, superseded.
        #[arg(long)]
        status: Option<String>,
        /// Jobs of one SCIM user or group id.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One job with its outcome and its audit events.
    Show { id: i64 },
    /// Run a failed or cancelled job again.
    Retry { id: i64 },
    /// Cancel a job that has not started.
    Cancel { id: i64 },
}

#[derive(Subcommand)]
enum PlaybookCommand {
    /// Validate playbooks; prints every mistake as `file:line:col: message`.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of playbooks (for editors).
    Schema,
    /// Run one action of a playbook against an app, printing each step as it goes.
    Run {
        /// The playbook file.
        file: PathBuf,
        /// create_user, update_user, set_roles, deactivate_user, reactivate_user,
        /// delete_user, list_users, rotate_password.
        action: String,
        /// The app's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        base_url: String,
        /// The SCIM user: `@user.json` or inline JSON.
        #[arg(long)]
        user: String,
        /// The service account: `@secrets.yaml` with username, password, totp.
        #[arg(long)]
        secrets: String,
        /// Directory for evidence screenshots (none are taken without it).
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// Integration name shown to templates as `integration.name`.
        #[arg(long, default_value = "cli")]
        integration: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and exit non-zero on any error.
    Check {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the SHA-256 to put in `scim_token_sha256`.
    Generate,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit trail; non-zero exit if it was tampered with.
    Verify {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

fn init_tracing() {
    // chromiumoxide logs every DevTools message (typed values included) at TRACE, and a
    // WARN per event Chromium 156 renamed: keep it quiet unless asked for by name.
    let filter = match std::env::var("USHER_LOG") {
        Ok(f) if f.contains("chromiumoxide") => tracing_subscriber::EnvFilter::new(f),
        Ok(f) => tracing_subscriber::EnvFilter::new(format!("{f},chromiumoxide=error")),
        Err(_) => {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info,chromiumoxide=error")
        }
    };
    let json = std::env::var("USHER_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config: path } => {
            let config = Config::load(&path)?;
            let setup = usher::server::EngineSetup {
                config_dir: path
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default(),
                secrets: serve_secrets(&config).await?,
                driver: usher::playbook::DriverConfig::default(),
            };
            let running = usher::server::start_with(&config, config.listen, Some(setup)).await?;
            eprintln!(
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
                eprintln!(
                    "usher:   {} ({}) at http://{}/scim/v2/{}",
                    i.name, i.app, running.addr, i.id
                );
            }
            usher::server::shutdown_signal().await;
            running.shutdown().await?;
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let c = Config::load(&config)?;
            println!(
                "{}: ok ({} integration(s))",
                config.display(),
                c.integrations.len()
            );
        }
        Command::Token {
            command: TokenCommand::Generate,
        } => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            println!("token:  {token}");
            println!("sha256: {}", hex::encode(hash_token(&token)));
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let c = Config::load(&config)?;
            let store = usher::store::Store::connect(
                &c.database,
                std::sync::Arc::new(usher::clock::SystemClock),
            )
            .await?;
            let n = store.verify_audit_chain().await?;
            store.close().await;
            println!("audit trail intact: {n} event(s) verified");
        }
        Command::Playbook { command } => return playbook_command(command).await,
        Command::Vault { command } => vault_command(command).await?,
        Command::Jobs { config, command } => return jobs_command(&config, command).await,
        Command::Demo { listen, dir } => return demo::run(listen, &dir).await,
        Command::Healthcheck(args) => healthcheck::run(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration's store and the vault over it, with the key from the environment
/// or `vault.key_file`.
async fn open_vault(config: &std::path::Path) -> anyhow::Result<(Config, usher::vault::Vault)> {
    use usher::vault::{Keyring, Vault};
    let c = Config::load(config)?;
    let keys = Keyring::from_env_or_config(c.vault.key_file.as_deref())?;
    let store =
        usher::store::Store::connect(&c.database, std::sync::Arc::new(usher::clock::SystemClock))
            .await?;
    let actor =
        usher::audit::Actor::Admin(std::env::var("USER").unwrap_or_else(|_| "cli".to_owned()));
    Ok((c, Vault::new(store, keys).with_actor(actor)))
}

async fn vault_command(command: VaultCommand) -> anyhow::Result<()> {
    use usher::vault::cli::{self, SecretInput};
    use usher::vault::{Keyring, Vault};
    match command {
        VaultCommand::Set {
            name,
            username,
            totp,
            extras,
            config,
        } => {
            let (_, vault) = open_vault(&config).await?;
            let mut input = SecretInput::stdin();
            println!(
                "{}",
                cli::set(&vault, &name, &username, totp, &extras, &mut input).await?
            );
        }
        VaultCommand::ImportOtpauth { name, config } => {
            let (_, vault) = open_vault(&config).await?;
            let mut input = SecretInput::stdin();
            println!("{}", cli::import_otpauth(&vault, &name, &mut input).await?);
        }
        VaultCommand::List { config } => {
            let c = Config::load(&config)?;
            let store = usher::store::Store::connect(
                &c.database,
                std::sync::Arc::new(usher::clock::SystemClock),
            )
            .await?;
            // Listing needs no key: names and field names are stored in the clear.
            let entries = Vault::entries(&store).await?;
            println!("{}", cli::format_list(&entries));
        }
        VaultCommand::Rm { name, config } => {
            let (_, vault) = open_vault(&config).await?;
            if !vault.remove(&name).await? {
                anyhow::bail!("no vault entry `{name}`");
            }
            println!("{name}: removed");
        }
        VaultCommand::Rekey {
            new_key_file,
            config,
        } => {
            let (_, vault) = open_vault(&config).await?;
            let new_key = Keyring::new_key(|n| std::env::var(n).ok(), new_key_file.as_deref())?;
            let n = vault.rekey(&new_key).await?;
            println!(
                "{n} entr{} re-encrypted from key {} to key {}; configure the new key everywhere now",
                if n == 1 { "y" } else { "ies" },
                vault.keys().primary().id(),
                new_key.id()
            );
        }
        VaultCommand::Keygen { out } => {
            let (key, text) = cli::keygen(out.as_deref())?;
            match (text, out) {
                (Some(text), _) => print!("{}", text.as_str()),
                (None, Some(path)) => {
                    println!("wrote vault key {} to {}", key.id(), path.display())
                }
                (None, None) => {}
            }
        }
        VaultCommand::Rotate {
            name,
            integration,
            evidence,
            config,
        } => rotate_command(name, &integration, evidence, &config).await?,
    }
    Ok(())
}

async fn rotate_command(
    name: Option<String>,
    integration: &str,
    evidence: Option<PathBuf>,
    config: &std::path::Path,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use usher::audit::evidence::EvidenceStore;
    use usher::playbook::{self, Driver, DriverConfig, RunOptions};

    let (c, vault) = open_vault(config).await?;
    let ic = c
        .integrations
        .iter()
        .find(|i| i.id == integration)
        .ok_or_else(|| anyhow::anyhow!("no integration `{integration}` in {}", config.display()))?;
    let name = name.unwrap_or_else(|| ic.service_account.clone());
    if name != ic.service_account {
        anyhow::bail!(
            "integration `{integration}` logs in as `{}`, not `{name}`",
            ic.service_account
        );
    }
    let pb = match playbook::load_file(&ic.playbook) {
        Ok(pb) => Arc::new(pb),
        Err(errs) => anyhow::bail!("{errs}"),
    };
    let secret = Arc::new(vault.get(&name).await?);
    let opts = RunOptions {
        evidence: match &evidence {
            Some(dir) => Some(Arc::new(EvidenceStore::new(dir)?)),
            None => None,
        },
        on_step: None,
    };
    let driver = Driver::new(DriverConfig::default());
    let integ = driver.integration(
        ic.id.clone(),
        ic.name.clone(),
        ic.base_url.clone(),
        pb,
        secret,
    )?;
    let result = usher::vault::rotate_password(&driver, &integ, &vault, &name, &opts).await;
    if let Err(e) = driver.shutdown().await {
        tracing::debug!(error = %e, "closing the browser failed");
    }
    let rotation = result?;
    match rotation.recovered_from {
        None => println!("{name}: password rotated in {} and in the vault", ic.name),
        Some(e) => println!(
            "{name}: password rotated in {} and in the vault, although rotate_password reported: {e}",
            ic.name
        ),
    }
    Ok(())
}

async fn open_store(config: &Config) -> anyhow::Result<usher::store::Store> {
    Ok(usher::store::Store::connect(
        &config.database,
        std::sync::Arc::new(usher::clock::SystemClock),
    )
    .await?)
}

fn operator() -> usher::audit::Actor {
    let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    usher::audit::Actor::Admin(format!("cli:{who}"))
}

async fn jobs_command(path: &std::path::Path, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let store = open_store(&config).await?;
    let code = match command {
        JobsCommand::List {
            integration,
            status,
            resource,
            limit,
        } => {
            let jobs = store
                .list_jobs(&usher::store::JobFilter {
                    integration_id: integration.as_deref(),
                    resource_id: resource.as_deref(),
                    status: status.as_deref(),
                    limit,
                })
                .await?;
            println!(
                "{:>7}  {:<12} {:<10} {:<8} {:<36} {:>3}  {:<20}  last error",
                "job", "integration", "status", "op", "resource", "try", "updated"
            );
            for j in jobs {
                println!(
                    "{:>7}  {:<12} {:<10} {:<8} {:<36} {:>3}  {:<20}  {}",
                    j.id,
                    j.integration_id,
                    j.status,
                    j.operation,
                    j.resource_id,
                    j.attempts,
                    &j.updated_at[..j.updated_at.len().min(19)],
                    j.last_error.as_deref().unwrap_or("")
                );
            }
            ExitCode::SUCCESS
        }
        JobsCommand::Show { id } => match store.job(id).await? {
            None => {
                eprintln!("usher: no job {id}");
                ExitCode::from(1)
            }
            Some(j) => {
                let events: Vec<serde_json::Value> = store
                    .audit_events(Some(&j.integration_id), 100_000)
                    .await?
                    .into_iter()
                    .filter(|e| {
                        e.detail.get("job").and_then(serde_json::Value::as_i64) == Some(id)
                    })
                    .map(|e| {
                        serde_json::json!({"seq": e.seq, "at": e.at, "type": e.event_type, "actor": e.actor, "detail": e.detail})
                    })
                    .collect();
                let out = serde_json::json!({
                    "id": j.id, "integration": j.integration_id, "resource_type": j.resource_type,
                    "resource": j.resource_id, "operation": j.operation, "status": j.status,
                    "attempts": j.attempts, "run_after": j.run_after, "lease_owner": j.lease_owner,
                    "lease_until": j.lease_until, "last_error": j.last_error,
                    "superseded_by": j.superseded_by, "created_at": j.created_at,
                    "updated_at": j.updated_at, "outcome": j.outcome, "events": events,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                ExitCode::SUCCESS
            }
        },
        JobsCommand::Retry { id } | JobsCommand::Cancel { id } => {
            let retry = matches!(command, JobsCommand::Retry { .. });
            let Some(j) = store.job(id).await? else {
                eprintln!("usher: no job {id}");
                store.close().await;
                return Ok(ExitCode::from(1));
            };
            let event = usher::audit::NewEvent {
                actor: operator(),
                event_type: if retry {
                    usher::audit::kinds::JOB_REQUEUED
                } else {
                    usher::audit::kinds::JOB_CANCELLED
                },
                target: Some(j.resource_id.clone()),
                integration_id: Some(j.integration_id.clone()),
                detail: serde_json::json!({"job": id, "was": j.status}),
            };
            let done = if retry {
                store.requeue_job(id, &event).await?
            } else {
                store.cancel_job(id, &event).await?
            };
            if done {
                println!(
                    "job {id}: {}",
                    if retry { "queued again" } else { "cancelled" }
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "usher: job {id} is {}; only {} jobs can be {}",
                    j.status,
                    if retry {
                        "failed or cancelled"
                    } else {
                        "pending or staged"
                    },
                    if retry { "retried" } else { "cancelled" }
                );
                ExitCode::from(1)
            }
        }
    };
    store.close().await;
    Ok(code)
}

async fn playbook_command(command: PlaybookCommand) -> anyhow::Result<ExitCode> {
    use usher::playbook;
    match command {
        PlaybookCommand::Check { files } => {
            let mut failed = false;
            for f in &files {
                match playbook::load_file(f) {
                    Ok(_) => println!("{}: ok", f.display()),
                    Err(errs) => {
                        failed = true;
                        println!("{errs}");
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PlaybookCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&playbook::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        PlaybookCommand::Run {
            file,
            action,
            base_url,
            user,
            secrets,
            evidence,
            integration,
        } => {
            run_playbook(RunArgs {
                file,
                action,
                base_url,
                user,
                secrets,
                evidence,
                integration,
            })
            .await
        }
    }
}

struct RunArgs {
    file: PathBuf,
    action: String,
    base_url: String,
    user: String,
    secrets: String,
    evidence: Option<PathBuf>,
    integration: String,
}

async fn run_playbook(a: RunArgs) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use usher::audit::evidence::EvidenceStore;
    use usher::playbook::{self, ActionName, Driver, DriverConfig, RunOptions, StepOutcome};

    let pb = match playbook::load_file(&a.file) {
        Ok(pb) => Arc::new(pb),
        Err(errs) => {
            eprintln!("{errs}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let action = ActionName::parse(&a.action).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown action `{}`; known: {}",
            a.action,
            ActionName::NAMES.join(", ")
        )
    })?;
    let user_text = match a.user.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read user file {path}: {e}"))?,
        None => a.user.clone(),
    };
    let user_json: serde_json::Value = serde_json::from_str(&user_text)
        .map_err(|e| anyhow::anyhow!("user is not valid JSON: {e}"))?;
    let user = playbook::UserContext::from_scim(&user_json);
    let secrets_path = a.secrets.strip_prefix('@').unwrap_or(&a.secrets);
    let secret = Arc::new(usher::vault::SecretsFile::load(std::path::Path::new(
        secrets_path,
    ))?);
    let evidence = match &a.evidence {
        Some(dir) => Some(Arc::new(EvidenceStore::new(dir)?)),
        None => None,
    };
    let ev_for_print = evidence.clone();
    let on_step: playbook::StepObserver = Arc::new(move |r: &playbook::StepRecord| {
        let (tag, reason) = match &r.outcome {
            StepOutcome::Ok => ("ok  ", String::new()),
            StepOutcome::NotMet { reason } => ("no  ", format!(": {reason}")),
            StepOutcome::Failed { reason } => ("FAIL", format!(": {reason}")),
        };
        let shot = match (&r.outcome, &r.screenshot, &ev_for_print) {
            (StepOutcome::Failed { .. }, Some(h), Some(ev)) => {
                format!("  [screenshot {}]", ev.path_of(h).display())
            }
            _ => String::new(),
        };
        eprintln!(
            "  {tag} {:>6}ms  {}:{}  {}{reason}{shot}",
            r.duration_ms, r.file, r.line, r.step
        );
    });
    let opts = RunOptions {
        evidence,
        on_step: Some(on_step),
    };
    let driver = Driver::new(DriverConfig::default());
    let integ = driver.integration(
        a.integration.clone(),
        a.integration.clone(),
        a.base_url.clone(),
        pb,
        secret,
    )?;
    let result = driver.run(&integ, action, user, &opts).await;
    if let Err(e) = driver.shutdown().await {
        tracing::debug!(error = %e, "closing the browser failed");
    }
    let out = result?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "status": out.status,
            "outputs": out.outputs,
            "records": out.records,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("usher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One plain line: the error and its causes.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                line.push_str(": ");
                line.push_str(&cause.to_string());
            }
            eprintln!("usher: {line}");
            ExitCode::FAILURE
        }
    }
}
