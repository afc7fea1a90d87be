//! The provisioning engine: the one place where SCIM and the browser meet.
//!
//! Workers claim jobs from the store (with a lease and heartbeats), compare the user's
//! desired state with what the app is known to have, run the playbook actions that
//! close the gap through the driver (one shared Chromium), confirm each write by
//! read-back, and record the outcome, the evidence and the audit event. Transient
//! failures are retried with exponential backoff and jitter; permanent ones fail at once.

mod canary;
mod mfa;
mod pause;
mod plan;
mod posture;
mod reconcile;
mod rotate;
mod sso;
mod user;
mod webhook;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::evidence::EvidenceStore;
use crate::config::{Config, EngineSettings, IntegrationConfig, WebhookConfig};
use crate::playbook::{self, Driver, DriverConfig, DriverError, Playbook, PlaybookErrors};
use crate::store::Store;
use crate::vault::{Secret, VaultError};

pub use canary::{CHECK_CANARY, CanaryError, CanaryReport, UiFinding};
pub use mfa::{Enrolment, MfaError, enable_mfa};
pub use plan::{AccountState, plan};
pub use posture::{AccessRow, Posture, access_csv, access_report, posture};
pub use reconcile::{AppAccount, Finding, ReconcileError, ReconcileReport};
pub use rotate::{
    RotateError, Rotation, generate_password, reconcile, recover_login, rotate_password,
};
pub use sso::{SsoLogin, SsoLoginError, UserRotation, user_entry};
pub use user::user_context;
pub use webhook::{SIGNATURE_HEADER, envelope as webhook_envelope, sign, wants as webhook_wants};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Every integration's playbook that failed to load, each with all its mistakes.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Playbooks(Vec<PlaybookErrors>),
    #[error("integration `{0}` has no loaded playbook")]
    NoPlaybook(String),
    #[error("integration `{integration}`: cannot read its service account's secret: {source}")]
    Secret {
        integration: String,
        source: VaultError,
    },
    #[error("evidence folder {path}: {reason}")]
    Evidence { path: String, reason: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Canary(#[from] CanaryError),
}

/// Integration id → its loaded playbook.
pub type Playbooks = HashMap<String, Arc<Playbook>>;

/// Where service-account secrets come from.
#[derive(Clone)]
pub enum Secrets {
    /// The encrypted vault (`usher serve`): read again before every job, so a rotation
    /// or an update by another process is seen at once.
    Vault(crate::vault::Vault),
    /// Fixed secrets by service-account name (tests, benchmarks).
    Fixed(HashMap<String, Arc<Secret>>),
}

impl Secrets {
    /// The secret named `name`; `Ok(None)` when there is none.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Arc<Secret>>, VaultError> {
        match self {
            Secrets::Fixed(m) => Ok(m.get(name).cloned()),
            Secrets::Vault(v) => Ok(v.find(name).await?.map(Arc::new)),
        }
    }
}

/// One integration as the engine runs it.
pub(crate) struct RunningIntegration {
    pub config: IntegrationConfig,
    pub playbook: Arc<Playbook>,
    /// The app as the driver acts on it.
    pub target: playbook::AppTarget,
}

/// Loads each integration's playbook (relative to `config_dir`), reporting every error.
pub fn load_playbooks(
    config: &Config,
    config_dir: &Path,
) -> Result<HashMap<String, Arc<Playbook>>, EngineError> {
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for i in &config.integrations {
        let path = resolve(config_dir, &i.playbook);
        match playbook::load_file(&path) {
            Ok(pb) => {
                out.insert(i.id.clone(), Arc::new(pb));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(EngineError::Playbooks(errors))
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The evidence folder: the configured one, else `evidence/` beside a SQLite database,
/// else `./evidence`.
pub fn evidence_dir(config: &Config) -> PathBuf {
    if let Some(d) = &config.engine.evidence_dir {
        return d.clone();
    }
    let db = config.database.as_str();
    if let Some(path) = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = Path::new(path).parent() {
            return parent.join("evidence");
        }
    }
    PathBuf::from("evidence")
}

/// Everything the engine needs to start.
pub struct EngineParams {
    pub store: Store,
    pub settings: EngineSettings,
    pub integrations: Vec<IntegrationConfig>,
    pub playbooks: HashMap<String, Arc<Playbook>>,
    pub secrets: Secrets,
    pub webhooks: Vec<WebhookConfig>,
    pub evidence_dir: PathBuf,
    pub driver: DriverConfig,
}

/// The running engine: workers, the webhook sender, one Chromium.
pub struct Engine {
    shared: Arc<worker::Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What `usher run-once` runs: which jobs, how many, for how long.
#[derive(Debug, Clone, Default)]
pub struct RunOnceLimits {
    /// Stop claiming after this many jobs (all workers together).
    pub max_jobs: Option<usize>,
    /// Stop claiming at this deadline, and release the jobs still running.
    pub timeout: Option<std::time::Duration>,
}

/// How the jobs of a `run-once` ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOnceSummary {
    pub succeeded: usize,
    /// Ended `failed` (a permanent error, or the last attempt).
    pub failed: usize,
    /// A transient failure, a paused integration or a sign-in budget: the job waits
    /// (`pending`) for a later run.
    pub waiting: usize,
    /// Still running at the timeout: released (`pending`) for a later run.
    pub released: usize,
    /// Cancelled or superseded while running.
    pub other: usize,
    /// The timeout was reached.
    pub timed_out: bool,
}

impl RunOnceSummary {
    /// Every job claimed succeeded (or there was none).
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.waiting == 0 && self.released == 0
    }

    pub fn total(&self) -> usize {
        self.succeeded + self.failed + self.waiting + self.released + self.other
    }
}

impl Engine {
    /// Starts `settings.workers` workers and the webhook sender.
    pub async fn start(p: EngineParams) -> Result<Engine, EngineError> {
        let workers = p.settings.workers;
        let shared = Engine::prepare(p).await?;
        let mut tasks = Vec::new();
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move { heartbeat_loop(s).await }));
            let s = shared.clone();
            tasks.push(tokio::spawn(async move { pause::resume_loop(s).await }));
        }
        for n in 0..workers {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move { s.worker_loop(n).await }));
        }
        if !shared.webhooks.is_empty() {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move { webhook::sender_loop(s).await }));
        }
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(
                async move { reconcile::schedule_loop(s).await },
            ));
        }
        tracing::info!(workers, "provisioning engine started");
        Ok(Engine { shared, tasks })
    }

    /// `usher run-once`: the same workers claim and run the jobs that are due now
    /// (`settings.workers` at once) until none is left, `max_jobs` were claimed or the
    /// timeout is reached; then the due webhooks are sent once and Chromium is closed.
    /// A job is run at most once per call.
    pub async fn run_once(
        p: EngineParams,
        limits: RunOnceLimits,
    ) -> Result<RunOnceSummary, EngineError> {
        let workers = p.settings.workers.max(1);
        let shared = Engine::prepare(p).await?;
        let hb = {
            let s = shared.clone();
            tokio::spawn(async move { heartbeat_loop(s).await })
        };
        let budget = Arc::new(std::sync::atomic::AtomicUsize::new(
            limits.max_jobs.unwrap_or(usize::MAX),
        ));
        let summary = Arc::new(std::sync::Mutex::new(RunOnceSummary::default()));
        let mut tasks = Vec::new();
        for n in 0..workers {
            let (s, b, t) = (shared.clone(), budget.clone(), summary.clone());
            tasks.push(tokio::spawn(async move { s.run_once_loop(n, b, t).await }));
        }
        let all = futures::future::join_all(tasks);
        tokio::pin!(all);
        let timed_out = match limits.timeout {
            Some(t) => tokio::select! {
                _ = &mut all => false,
                _ = tokio::time::sleep(t) => true,
            },
            None => {
                (&mut all).await;
                false
            }
        };
        if timed_out {
            tracing::warn!("run-once timeout reached: releasing the running jobs");
            // No grace: the running jobs are released at once for a later run.
            shared.stop(std::time::Duration::ZERO);
            all.await;
        }
        if !shared.webhooks.is_empty() {
            webhook::deliver_once(&shared).await;
        }
        shared.stop(std::time::Duration::ZERO);
        let _ = hb.await;
        if let Err(e) = shared.driver.shutdown().await {
            tracing::warn!(error = %e, "closing Chromium failed");
        }
        if let Err(e) = shared.store.deregister_process(shared.process()).await {
            tracing::warn!(error = %e, "removing this process's heartbeat failed");
        }
        let mut out = summary
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        out.timed_out = timed_out;
        Ok(out)
    }

    /// `usher reconcile`: one reconciliation run of `integration` with its configured
    /// policy (report only when `dry_run`), then Chromium is closed. The jobs it queues
    /// are run by the engines serving the database (or `usher run-once`).
    pub async fn reconcile_once(
        p: EngineParams,
        integration: &str,
        dry_run: bool,
        actor: crate::audit::Actor,
    ) -> Result<ReconcileReport, EngineError> {
        let shared = Engine::prepare(p).await?;
        let result = shared
            .reconcile_configured(integration, dry_run, actor)
            .await;
        if let Err(e) = shared.driver.shutdown().await {
            tracing::warn!(error = %e, "closing Chromium failed");
        }
        if let Err(e) = shared.store.deregister_process(shared.process()).await {
            tracing::warn!(error = %e, "removing this process's heartbeat failed");
        }
        Ok(result?)
    }

    /// One reconciliation run of `integration` now, with its configured policy.
    pub async fn reconcile(
        &self,
        integration: &str,
        dry_run: bool,
        actor: crate::audit::Actor,
    ) -> Result<ReconcileReport, ReconcileError> {
        self.shared
            .reconcile_configured(integration, dry_run, actor)
            .await
    }

    /// `usher canary`: one canary run of `integration`, then Chromium is closed.
    pub async fn canary_once(
        p: EngineParams,
        integration: &str,
    ) -> Result<CanaryReport, EngineError> {
        let shared = Engine::prepare(p).await?;
        let result = shared.canary(integration).await;
        if let Err(e) = shared.driver.shutdown().await {
            tracing::warn!(error = %e, "closing Chromium failed");
        }
        if let Err(e) = shared.store.deregister_process(shared.process()).await {
            tracing::warn!(error = %e, "removing this process's heartbeat failed");
        }
        Ok(result?)
    }

    /// One canary run of `integration` now.
    pub async fn canary(&self, integration: &str) -> Result<CanaryReport, CanaryError> {
        self.shared.canary(integration).await
    }

    /// One reconciliation run of `integration` now with `policy` instead of the
    /// configured one.
    pub async fn reconcile_with(
        &self,
        integration: &str,
        policy: &crate::config::ReconcileSettings,
        dry_run: bool,
        actor: crate::audit::Actor,
    ) -> Result<ReconcileReport, ReconcileError> {
        self.shared
            .reconcile(integration, policy, dry_run, actor)
            .await
    }

    /// Everything the workers share, with this process registered.
    async fn prepare(p: EngineParams) -> Result<Arc<worker::Shared>, EngineError> {
        let evidence = EvidenceStore::new(&p.evidence_dir).map_err(|e| EngineError::Evidence {
            path: p.evidence_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        // What a killed predecessor left behind goes before this engine runs anything.
        crate::browser::clean_stale_profiles();
        let mut dcfg = p.driver;
        dcfg.max_contexts = dcfg.max_contexts.max(p.settings.workers.max(1));
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "usher".into());
        // host:pid:token:n — the token is drawn once per OS process, so that a new
        // process with a reused pid (Usher as PID 1 of a restarted container) is told
        // from its predecessor; n tells engines of one process apart (tests).
        let process = format!(
            "{host}:{}:{}:{}",
            std::process::id(),
            process_token(),
            ENGINES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        // One time source for the engine: the store's (leases, retries, TOTP windows).
        // TOTP windows and sign-in admissions go through the database: every process
        // on it agrees.
        let driver = Arc::new(
            Driver::with_clock(dcfg, p.store.clock())
                .with_totp(crate::vault::TotpTracker::shared(p.store.clone()))
                .with_sign_in_gate(Arc::new(pause::StoreGate {
                    store: p.store.clone(),
                    process: process.clone(),
                    secrets: p.secrets.clone(),
                    accounts: p
                        .integrations
                        .iter()
                        .map(|i| (i.id.clone(), i.service_account.clone()))
                        .collect(),
                    webhooks: p.webhooks.clone(),
                })),
        );
        let mut integrations = HashMap::new();
        for cfg in p.integrations {
            let Some(pb) = p.playbooks.get(&cfg.id).cloned() else {
                return Err(EngineError::NoPlaybook(cfg.id.clone()));
            };
            // A missing entry does not stop the start: the operator may set it next,
            // and each job reads it again (jobs fail clearly until it is there).
            let secret = match p.secrets.get(&cfg.service_account).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::warn!(integration = %cfg.id, entry = %cfg.service_account,
                        "no vault entry for the service account; jobs fail until `usher vault set` adds it");
                    Arc::new(
                        Secret::new("", "", None).map_err(|source| EngineError::Secret {
                            integration: cfg.id.clone(),
                            source,
                        })?,
                    )
                }
                Err(source) => {
                    return Err(EngineError::Secret {
                        integration: cfg.id.clone(),
                        source,
                    });
                }
            };
            let target = driver.target(
                cfg.id.clone(),
                cfg.name.clone(),
                cfg.base_url.clone(),
                pb.clone(),
                secret,
            )?;
            integrations.insert(
                cfg.id.clone(),
                Arc::new(RunningIntegration {
                    config: cfg,
                    playbook: pb,
                    target,
                }),
            );
        }
        // Registered before the first claim, so that its leases are backed by a heartbeat.
        p.store
            .register_process(&process, &host, std::process::id())
            .await?;
        // A predecessor on this machine that is gone (killed, crashed; or this very pid,
        // when Usher is PID 1 of a restarted container) loses its jobs now.
        let me = i64::from(std::process::id());
        let mine = format!("{host}:{me}:{}:", process_token());
        let gone = p
            .store
            .forget_gone_processes(&host, &process, |id, pid| {
                if pid == me {
                    !id.starts_with(&mine)
                } else {
                    !std::path::Path::new(&format!("/proc/{pid}")).exists()
                }
            })
            .await?;
        if !gone.is_empty() {
            tracing::warn!(processes = ?gone, "processes on this machine are gone; their running jobs are taken over");
        }
        Ok(Arc::new(worker::Shared::new(
            p.store,
            driver,
            integrations,
            p.settings.clone(),
            Arc::new(evidence),
            p.webhooks,
            p.secrets,
            process,
        )))
    }

    /// What `/readyz` asks of the engine.
    /// Signs people in to apps for single sign-on (docs/sso.md).
    pub fn sso_login(&self) -> SsoLogin {
        SsoLogin {
            shared: self.shared.clone(),
        }
    }

    pub fn probe(&self) -> EngineProbe {
        EngineProbe {
            shared: self.shared.clone(),
        }
    }

    /// Chromium's pid (tests).
    pub async fn browser_pid(&self) -> Option<u32> {
        self.shared.driver.browser_pid().await
    }

    /// Graceful stop: no new claims; running jobs get `grace` to finish, then they are
    /// released for another worker; Chromium is closed.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.shared.stop(grace);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.shared.driver.shutdown().await {
            tracing::warn!(error = %e, "closing Chromium failed");
        }
        // Its jobs are finished or released: nothing for another process to take over.
        if let Err(e) = self
            .shared
            .store
            .deregister_process(self.shared.process())
            .await
        {
            tracing::warn!(error = %e, "removing this process's heartbeat failed");
        }
        tracing::info!("provisioning engine stopped");
    }
}

/// The engine's side of readiness: Chromium and the vault.
#[derive(Clone)]
pub struct EngineProbe {
    shared: Arc<worker::Shared>,
}

impl EngineProbe {
    /// Chromium can be started (it is launched once and kept for the workers).
    pub async fn chromium(&self) -> Result<(), EngineError> {
        Ok(self.shared.driver.ensure_browser().await?)
    }

    /// The vault key is loaded and opens every integration's service-account entry
    /// (a missing entry is not an error here: the job says so).
    pub async fn vault(&self) -> Result<(), EngineError> {
        for i in self.shared.integrations.values() {
            let name = &i.config.service_account;
            self.shared
                .secrets()
                .get(name)
                .await
                .map_err(|source| EngineError::Secret {
                    integration: i.config.id.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Engines started by this OS process.
static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A random token drawn once per OS process.
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
}

/// Writes this process's heartbeat every `heartbeat_every` until the engine stops. A
/// missed beat is logged: after `heartbeat_timeout` of them others take its jobs over.
async fn heartbeat_loop(shared: Arc<worker::Shared>) {
    let mut stop = shared.stop_signal();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "usher".into());
    while !shared.is_stopping() {
        match shared.store.process_heartbeat(shared.process()).await {
            Ok(true) => {}
            Ok(false) => {
                // Its row was removed (pruned after a long stall): write it again.
                tracing::warn!(process = %shared.process(), "heartbeat row missing; registering again");
                if let Err(e) = shared
                    .store
                    .register_process(shared.process(), &host, std::process::id())
                    .await
                {
                    tracing::warn!(error = %e, "registering this process failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "writing the heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.heartbeat_every) => {}
            _ = stop.changed() => {}
        }
    }
}
