//! `usher playbook check|schema|run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use usher::audit::evidence::EvidenceStore;
use usher::playbook::{
    self, ActionName, Driver, DriverConfig, RunOptions, StepObserver, StepOutcome, StepRecord,
};
use usher::vault::SecretsFile;

#[derive(Subcommand)]
pub enum PlaybookCommand {
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
        /// A configuration whose database records the TOTP code windows used, shared
        /// with `usher serve` (without it, only this run knows them).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub async fn run(command: PlaybookCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlaybookCommand::Check { files } => Ok(check(&files)),
        PlaybookCommand::Schema => {
            outln!(
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
            config,
        } => {
            run_action(RunArgs {
                config,
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

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match playbook::load_file(f) {
            Ok(_) => outln!("{}: ok", f.display()),
            Err(errs) => {
                failed = true;
                outln!("{errs}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

struct RunArgs {
    config: Option<PathBuf>,
    file: PathBuf,
    action: String,
    base_url: String,
    user: String,
    secrets: String,
    evidence: Option<PathBuf>,
    integration: String,
}

async fn run_action(a: RunArgs) -> anyhow::Result<ExitCode> {
    let pb = match playbook::load_file(&a.file) {
        Ok(pb) => Arc::new(pb),
        Err(errs) => {
            errln!("{errs}");
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
    let user = usher::engine::user_context(&user_json);
    let secrets_path = a.secrets.strip_prefix('@').unwrap_or(&a.secrets);
    let secret = Arc::new(SecretsFile::load(Path::new(secrets_path))?);
    let evidence = match &a.evidence {
        Some(dir) => Some(Arc::new(EvidenceStore::new(dir)?)),
        None => None,
    };
    let opts = RunOptions {
        on_step: Some(print_step(evidence.clone())),
        evidence,
        ..RunOptions::default()
    };
    let mut driver = Driver::new(DriverConfig::default());
    let store = match &a.config {
        Some(path) => Some(super::open(path).await?.1),
        None => None,
    };
    if let Some(store) = &store {
        driver = driver.with_totp(usher::vault::TotpTracker::shared(store.clone()));
    }
    let integ = driver.target(
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
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "status": out.status,
            "outputs": out.outputs,
            "records": out.records,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// One line per step on standard error, with the failure screenshot's path.
fn print_step(evidence: Option<Arc<EvidenceStore>>) -> StepObserver {
    Arc::new(move |r: &StepRecord| {
        let (tag, reason) = match &r.outcome {
            StepOutcome::Ok => ("ok  ", String::new()),
            StepOutcome::NotMet { reason } => ("no  ", format!(": {reason}")),
            StepOutcome::Failed { reason } => ("FAIL", format!(": {reason}")),
        };
        let shot = match (&r.outcome, &r.screenshot, &evidence) {
            (StepOutcome::Failed { .. }, Some(h), Some(ev)) => {
                format!("  [screenshot {}]", ev.path_of(h).display())
            }
            _ => String::new(),
        };
        errln!(
            "  {tag} {:>6}ms  {}:{}  {}{reason}{shot}",
            r.duration_ms,
            r.file,
            r.line,
            r.step
        );
    })
}
