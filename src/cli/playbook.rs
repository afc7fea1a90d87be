//! `usher playbook check|schema|run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Subcommand;
use tokio::io::AsyncBufReadExt;

use usher::audit::evidence::EvidenceStore;
use usher::config::Config;
use usher::playbook::trace::{self, Trace, TraceSection};
use usher::playbook::{
    self, ActionName, BeforeStep, Driver, DriverConfig, KeepOpen, Phase, RunOptions, StepAhead,
    StepObserver, StepOutcome, StepRecord,
};
use usher::store::Store;
use usher::vault::{Keyring, Secret, SecretsFile, Vault};

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
        /// `FILE ACTION`, or with `--integration` just `ACTION` (the configured
        /// playbook) or `FILE ACTION` (a draft of it). Actions: create_user, update_user,
        /// set_roles, deactivate_user, reactivate_user, delete_user, list_users,
        /// rotate_password.
        #[arg(required = true, num_args = 1..=2, value_name = "[FILE] ACTION")]
        args: Vec<String>,
        /// The app's base URL, e.g. http://127.0.0.1:8080 (from the configuration with
        /// `--integration`).
        #[arg(long, conflicts_with = "integration")]
        base_url: Option<String>,
        /// The SCIM user: `@user.json` or inline JSON (a SCIM User resource).
        #[arg(long)]
        user: String,
        /// The service account: `@secrets.yaml` with username, password, totp (from
        /// the vault with `--integration`).
        #[arg(long, conflicts_with = "integration")]
        secrets: Option<String>,
        /// Run as `usher serve` runs this integration of `--config`: its playbook, base
        /// URL and service account from the vault.
        #[arg(long, requires = "config")]
        integration: Option<String>,
        /// A configuration whose database records the TOTP code windows used, shared
        /// with `usher serve` (without it, only this run knows them).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for evidence screenshots (none are kept without it).
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// Write the run's trace: one HTML file with every step and its screenshots.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Pause before each step until Enter (a line on standard input); when standard
        /// input ends, the rest runs without pausing.
        #[arg(long)]
        step: bool,
        /// At the end, print the page's DevTools URL and keep the browser open until
        /// Enter, end of standard input or Ctrl-C.
        #[arg(long)]
        keep_open: bool,
        /// Start the action at its top-level step on this line (after the login; the
        /// precondition and the steps before it are skipped).
        #[arg(long, value_name = "LINE")]
        from: Option<usize>,
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
            args,
            base_url,
            user,
            secrets,
            integration,
            config,
            evidence,
            trace,
            step,
            keep_open,
            from,
        } => {
            run_action(RunArgs {
                args,
                base_url,
                user,
                secrets,
                integration,
                config,
                evidence,
                trace,
                step,
                keep_open,
                from,
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
    args: Vec<String>,
    base_url: Option<String>,
    user: String,
    secrets: Option<String>,
    integration: Option<String>,
    config: Option<PathBuf>,
    evidence: Option<PathBuf>,
    trace: Option<PathBuf>,
    step: bool,
    keep_open: bool,
    from: Option<usize>,
}

/// What a run acts on: where its playbook, app and service account come from.
struct Target {
    playbook: PathBuf,
    key: String,
    name: String,
    base_url: String,
    secret: Arc<Secret>,
}

/// The playbook, app and service account of a run: given on the command line, or as
/// `usher serve` takes them for an integration of the configuration.
async fn target(a: &RunArgs, config: Option<&(Config, Store)>) -> anyhow::Result<(Target, String)> {
    let (file, action) = match a.args.as_slice() {
        [action] => (None, action.clone()),
        [file, action] => (Some(PathBuf::from(file)), action.clone()),
        _ => anyhow::bail!("give [FILE] ACTION"),
    };
    let Some(id) = &a.integration else {
        let file = file.ok_or_else(|| {
            anyhow::anyhow!(
                "give the playbook FILE and the ACTION (or --integration ID --config FILE)"
            )
        })?;
        let base_url = a
            .base_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--base-url is required without --integration"))?;
        let secrets = a
            .secrets
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--secrets is required without --integration"))?;
        let secrets_path = secrets.strip_prefix('@').unwrap_or(secrets);
        let secret = Arc::new(SecretsFile::load(Path::new(secrets_path))?);
        return Ok((
            Target {
                playbook: file,
                key: "cli".into(),
                name: "cli".into(),
                base_url,
                secret,
            },
            action,
        ));
    };
    let (Some((c, store)), Some(path)) = (config, a.config.as_deref()) else {
        anyhow::bail!("--integration needs --config");
    };
    let ic = c
        .integrations
        .iter()
        .find(|i| &i.id == id)
        .ok_or_else(|| anyhow::anyhow!("no integration `{id}` in {}", path.display()))?;
    // Relative to the configuration's folder, as `usher serve` reads it.
    let playbook = file.unwrap_or_else(|| {
        if ic.playbook.is_absolute() {
            ic.playbook.clone()
        } else {
            path.parent().unwrap_or(Path::new("")).join(&ic.playbook)
        }
    });
    let keys = Keyring::from_env_or_config(c.vault.key_file.as_deref())?;
    let vault = Vault::new(store.clone(), keys);
    let secret = vault.find(&ic.service_account).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "the vault has no entry `{}` for the service account of `{id}`; add it with `usher vault set {}`",
            ic.service_account,
            ic.service_account
        )
    })?;
    if let Some(st) = store.integration_state(id).await?
        && st.is_paused()
    {
        anyhow::bail!(
            "integration `{id}` is paused ({}); no sign-in is attempted until `usher integration resume {id}`",
            st.paused_reason.unwrap_or_default()
        );
    }
    Ok((
        Target {
            playbook,
            key: ic.id.clone(),
            name: ic.name.clone(),
            base_url: ic.base_url.clone(),
            secret: Arc::new(secret),
        },
        action,
    ))
}

/// Lines of standard input, shared by `--step` and `--keep-open`.
type Stdin = Arc<tokio::sync::Mutex<tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>>>;

/// Waits for a line of standard input; false at its end.
async fn next_line(stdin: &Stdin) -> bool {
    matches!(stdin.lock().await.next_line().await, Ok(Some(_)))
}

async fn run_action(a: RunArgs) -> anyhow::Result<ExitCode> {
    let opened = match &a.config {
        Some(path) => Some(super::open(path).await?),
        None => None,
    };
    let (t, action_name) = target(&a, opened.as_ref()).await?;
    let pb = match playbook::load_file(&t.playbook) {
        Ok(pb) => Arc::new(pb),
        Err(errs) => {
            errln!("{errs}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let action = ActionName::parse(&action_name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown action `{action_name}`; known: {}",
            ActionName::NAMES.join(", ")
        )
    })?;
    // Before the browser starts: a wrong line must not spend a sign-in.
    if let (Some(line), Some(act)) = (a.from, pb.action(action))
        && !act.steps.iter().any(|s| s.line == line)
    {
        let lines: Vec<String> = act.steps.iter().map(|s| s.line.to_string()).collect();
        anyhow::bail!(
            "--from {line}: no step of {action}'s `steps` in {} starts on line {line}; they start on lines {}",
            t.playbook.display(),
            lines.join(", ")
        );
    }
    let user_text = match a.user.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read user file {path}: {e}"))?,
        None => a.user.clone(),
    };
    let user_json: serde_json::Value = serde_json::from_str(&user_text)
        .map_err(|e| anyhow::anyhow!("user is not valid JSON: {e}"))?;
    let user = usher::engine::user_context(&user_json);
    // A trace needs screenshots: without --evidence they go to a folder removed after.
    let scratch = match (&a.trace, &a.evidence) {
        (Some(_), None) => Some(ScratchDir::new()?),
        _ => None,
    };
    let evidence_dir = a
        .evidence
        .clone()
        .or_else(|| scratch.as_ref().map(|s| s.0.clone()));
    let evidence = match &evidence_dir {
        Some(dir) => Some(Arc::new(EvidenceStore::new(dir)?)),
        None => None,
    };
    let steps: Arc<Mutex<Vec<StepRecord>>> = Arc::default();
    let stdin: Stdin = Arc::new(tokio::sync::Mutex::new(
        tokio::io::BufReader::new(tokio::io::stdin()).lines(),
    ));
    let opts = RunOptions {
        on_step: Some(print_step(
            evidence.clone(),
            a.evidence.is_some(),
            steps.clone(),
        )),
        evidence: evidence.clone(),
        trace: a.trace.is_some(),
        before_step: a.step.then(|| pause_before_step(stdin.clone())),
        keep_open: a.keep_open.then(|| keep_open(stdin.clone())),
        from_line: a.from,
        ..RunOptions::default()
    };
    let mut driver = Driver::new(DriverConfig::default());
    if let Some((_, store)) = &opened {
        driver = driver.with_totp(usher::vault::TotpTracker::shared(store.clone()));
    }
    let integ = driver.target(
        t.key.clone(),
        t.name.clone(),
        t.base_url.clone(),
        pb.clone(),
        t.secret,
    )?;
    let result = driver.run(&integ, action, user, &opts).await;
    if let Err(e) = driver.shutdown().await {
        tracing::debug!(error = %e, "closing the browser failed");
    }
    if let Some(path) = &a.trace {
        let trace = Trace {
            title: format!("{action} · {}", pb.app),
            facts: vec![
                ("playbook".into(), t.playbook.display().to_string()),
                ("app".into(), t.base_url.clone()),
                ("integration".into(), t.key.clone()),
                (
                    "user".into(),
                    user_json
                        .get("userName")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned(),
                ),
            ],
            sections: vec![TraceSection {
                heading: action.to_string(),
                steps: steps.lock().map(|s| s.clone()).unwrap_or_default(),
                error: result.as_ref().err().map(ToString::to_string),
            }],
        };
        let html = trace::render_html(&trace, &|h| {
            evidence
                .as_ref()
                .and_then(|ev| std::fs::read(ev.path_of(h)).ok())
        });
        std::fs::write(path, html)
            .map_err(|e| anyhow::anyhow!("cannot write the trace {}: {e}", path.display()))?;
        errln!("trace: {}", path.display());
    }
    drop(scratch);
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

/// A folder under the system's temporary folder, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!(
            "usher-trace-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `--step`: names the next step and waits for a line of standard input.
fn pause_before_step(stdin: Stdin) -> BeforeStep {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    Arc::new(move |s: &StepAhead| {
        let stdin = stdin.clone();
        let open = open.clone();
        let line = format!(
            "  next        {}:{}  {} — Enter runs it",
            s.file, s.line, s.step
        );
        Box::pin(async move {
            if !open.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            errln!("{line}");
            if !next_line(&stdin).await {
                errln!("  (standard input ended: the remaining steps run without pausing)");
                open.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        })
    })
}

/// `--keep-open`: prints the DevTools URL and waits for Enter, end of input or Ctrl-C.
fn keep_open(stdin: Stdin) -> KeepOpen {
    Arc::new(move |url: Option<String>| {
        let stdin = stdin.clone();
        Box::pin(async move {
            match url {
                Some(u) => errln!("devtools: {u}"),
                None => errln!("devtools: (no URL: the browser is not reachable)"),
            }
            errln!("the browser stays open; Enter, end of input (Ctrl-D) or Ctrl-C closes it");
            tokio::select! {
                _ = next_line(&stdin) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
    })
}

/// One line per step on standard error (and into `steps` for the trace), with the
/// failure screenshot's path when evidence is kept. A precondition or session check
/// that does not hold is an answer, shown as such.
fn print_step(
    evidence: Option<Arc<EvidenceStore>>,
    show_paths: bool,
    steps: Arc<Mutex<Vec<StepRecord>>>,
) -> StepObserver {
    Arc::new(move |r: &StepRecord| {
        if let Ok(mut s) = steps.lock() {
            s.push(r.clone());
        }
        let (tag, reason) = match (&r.outcome, r.phase) {
            (StepOutcome::Ok, _) => ("ok  ", String::new()),
            (StepOutcome::NotMet { .. }, Phase::Precondition) => {
                ("--  ", " → not done yet: the action's steps run".to_owned())
            }
            (StepOutcome::NotMet { .. }, Phase::SessionCheck) => {
                ("--  ", " → not logged in".to_owned())
            }
            (StepOutcome::NotMet { reason }, _) => ("no  ", format!(": {reason}")),
            (StepOutcome::Failed { reason }, _) => ("FAIL", format!(": {reason}")),
        };
        let shot = match (&r.outcome, &r.screenshot, &evidence) {
            (StepOutcome::Failed { .. }, Some(h), Some(ev)) if show_paths => {
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
