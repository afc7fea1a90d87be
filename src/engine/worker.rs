//! Workers: claim, run, confirm, record.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::plan::{self, AccountState};
use super::{RunningIntegration, Secrets};
use crate::audit::evidence::EvidenceStore;
use crate::audit::{Actor, NewEvent, kinds};
use crate::clock::{Clock, format_time};
use crate::config::{EngineSettings, WebhookConfig};
use crate::playbook::{
    ActionName, ActionOutcome, ActionStatus, Driver, DriverError, RunError, RunErrorKind,
    RunOptions, StepRecord, UserContext,
};
use crate::store::{
    Claimant, ClaimedJob, DISCOVERED_PREFIX, JobFinish, JobStatus, ResourceType, Store, StoreError,
};

/// State shared by the workers of one engine.
pub(crate) struct Shared {
    pub store: Store,
    /// The store's clock: lease and retry times, webhook times and signatures.
    pub clock: Arc<dyn Clock>,
    pub driver: Arc<Driver>,
    pub integrations: HashMap<String, Arc<RunningIntegration>>,
    order: Vec<String>,
    next: AtomicUsize,
    pub settings: EngineSettings,
    /// Every action keeps its screenshots in the evidence store.
    run_options: RunOptions,
    pub webhooks: Vec<WebhookConfig>,
    secrets: Secrets,
    process: String,
    stopping: AtomicBool,
    stop_tx: watch::Sender<bool>,
    /// Fires when running jobs must be released (end of the shutdown grace).
    abort_tx: watch::Sender<bool>,
}

/// Why a run failed, and whether another attempt may help.
pub(super) struct Failure {
    pub(super) message: String,
    transient: bool,
    detail: Value,
    /// The job must wait rather than retry: no attempt is spent.
    wait: Option<Wait>,
    /// The sign-in failed or was refused (`usher_login_failures_total`).
    login_failed: bool,
}

/// Why a job waits without spending an attempt.
enum Wait {
    /// The app refused the sign-in (the reason as the app or the failed step said it):
    /// the integration is to be paused.
    Refused(String),
    /// The integration is paused (by this or another process).
    Paused(String),
    /// The sign-in budget is spent until this time.
    Until(String),
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure {
            detail: json!({ "reason": message }),
            message,
            transient: false,
            wait: None,
            login_failed: false,
        }
    }

    /// A failure another attempt may cure; `message` is also the audited reason.
    fn transient(message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure {
            detail: json!({ "reason": message }),
            message,
            transient: true,
            wait: None,
            login_failed: false,
        }
    }

    fn database(e: StoreError) -> Failure {
        Failure::transient(format!("database: {e}"))
    }

    fn from_driver(action: ActionName, e: &DriverError) -> Failure {
        let (transient, detail) = match e.run_error() {
            Some(re) => (re.kind != RunErrorKind::Playbook, run_error_detail(re)),
            None => (
                !matches!(e, DriverError::Playbook(_)),
                json!({ "reason": e.to_string() }),
            ),
        };
        // A pause is not the app's fault, and waits for an operator or a new secret.
        let transient = transient || matches!(e, DriverError::Paused(_));
        let mut detail = detail;
        if let Value::Object(m) = &mut detail {
            m.insert("action".into(), json!(action.as_str()));
        }
        let wait = match e {
            DriverError::LoginRefused { reason, .. } => Some(Wait::Refused(reason.clone())),
            DriverError::Paused(reason) => Some(Wait::Paused(reason.clone())),
            DriverError::SignInBudget { retry_at } => Some(Wait::Until(retry_at.clone())),
            _ => None,
        };
        Failure {
            message: format!("{action}: {e}"),
            transient,
            detail,
            wait,
            login_failed: matches!(e, DriverError::Login(_) | DriverError::LoginRefused { .. }),
        }
    }
}

/// The job's outcome in `/metrics`: labels are the integration, the operation or
/// playbook action and the outcome only (never a user).
fn record_metrics(job: &crate::store::JobRow, finish: &JobFinish, detail: &Value, took: Duration) {
    let integration = job.integration_id.clone();
    let outcome = match finish {
        JobFinish::Succeeded => "succeeded",
        JobFinish::Retry { .. } => "retried",
        JobFinish::Failed { .. } => "failed",
        JobFinish::Paused { .. } => "paused",
        JobFinish::Deferred { .. } => "deferred",
    };
    metrics::counter!("usher_jobs_finished_total", "integration" => integration.clone(), "status" => outcome)
        .increment(1);
    if matches!(finish, JobFinish::Retry { .. }) {
        metrics::counter!("usher_job_retries_total", "integration" => integration.clone())
            .increment(1);
    }
    metrics::histogram!("usher_job_duration_seconds", "integration" => integration.clone(), "action" => job.operation.as_str())
        .record(took.as_secs_f64());
    for a in detail["actions"].as_array().into_iter().flatten() {
        if let (Some(action), Some(ms)) = (a["action"].as_str(), a["duration_ms"].as_u64()) {
            metrics::histogram!("usher_action_duration_seconds", "integration" => integration.clone(), "action" => action.to_owned())
                .record(ms as f64 / 1000.0);
        }
    }
}

fn run_error_detail(e: &RunError) -> Value {
    json!({
        "step": e.step,
        "at": e.step_file_line,
        "phase": e.phase,
        "reason": e.reason,
        "url": e.url,
        "screenshot": e.screenshot,
        "kind": e.kind,
    })
}

/// What one action did, for the job's outcome and the audit event.
fn action_record(action: ActionName, out: &ActionOutcome, verified: &str, ms: u128) -> Value {
    json!({
        "action": action.as_str(),
        "status": match out.status { ActionStatus::Done => "done", ActionStatus::AlreadyDone => "already_done" },
        "verified": verified,
        "steps": out.steps.len(),
        "evidence": step_evidence(&out.steps),
        "duration_ms": ms as u64,
    })
}

/// Each screenshot with the step that took it (`file:line` and text), once: a page
/// that did not change between two steps gives the same image, listed at the first.
fn step_evidence(steps: &[StepRecord]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    steps
        .iter()
        .flat_map(|s| {
            [s.screenshot_before.as_deref(), s.screenshot.as_deref()]
                .into_iter()
                .flatten()
                .map(move |h| (s, h))
        })
        .filter(|(_, h)| seen.insert(*h))
        .map(|(s, h)| json!({"at": format!("{}:{}", s.file, s.line), "step": s.step, "screenshot": h}))
        .collect()
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        driver: Arc<Driver>,
        integrations: HashMap<String, Arc<RunningIntegration>>,
        settings: EngineSettings,
        evidence: Arc<EvidenceStore>,
        webhooks: Vec<WebhookConfig>,
        secrets: Secrets,
        process: String,
    ) -> Shared {
        let mut order: Vec<String> = integrations.keys().cloned().collect();
        order.sort();
        Shared {
            clock: store.clock(),
            run_options: RunOptions {
                evidence: Some(evidence),
                clock: store.clock(),
                ..RunOptions::default()
            },
            store,
            driver,
            integrations,
            order,
            next: AtomicUsize::new(0),
            settings,
            webhooks,
            secrets,
            process,
            stopping: AtomicBool::new(false),
            stop_tx: watch::channel(false).0,
            abort_tx: watch::channel(false).0,
        }
    }

    pub fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(true);
        let abort = self.abort_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = abort.send(true);
        });
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// The options every action runs with (evidence kept).
    pub(super) fn run_options(&self) -> &RunOptions {
        &self.run_options
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// This process's id (`host:pid:random`), as its heartbeat row and leases name it.
    pub fn process(&self) -> &str {
        &self.process
    }

    pub async fn worker_loop(self: Arc<Self>, n: usize) {
        let owner = format!("{}/w{n}", self.process);
        let mut stop = self.stop_tx.subscribe();
        while !self.is_stopping() {
            let changed = self.store.jobs_changed();
            match self.claim_any(&owner).await {
                Ok(Some(claimed)) => {
                    self.run_claimed(claimed).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a job failed"),
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// A `run-once` worker: claims and runs due jobs until there is none, the shared
    /// budget is spent or the engine stops; tallies how each ended.
    pub async fn run_once_loop(
        self: Arc<Self>,
        n: usize,
        budget: Arc<AtomicUsize>,
        summary: Arc<std::sync::Mutex<super::RunOnceSummary>>,
    ) {
        let owner = format!("{}/once{n}", self.process);
        let mut seen = std::collections::HashSet::new();
        while !self.is_stopping() {
            if budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_err()
            {
                return;
            }
            let claimed = match self.claim_any(&owner).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    if let Ok(mut s) = summary.lock() {
                        s.failed += 1;
                    }
                    return;
                }
            };
            let id = claimed.job.id;
            // A job due again at once (released, deferred to now) is not run twice.
            let again = !seen.insert(id);
            self.run_claimed(claimed).await;
            let status = match self.store.job(id).await {
                Ok(Some(j)) => Some(j.status),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(job = id, error = %e, "reading a job's outcome failed");
                    None
                }
            };
            let released = self.is_stopping();
            if let Ok(mut s) = summary.lock() {
                match status {
                    Some(JobStatus::Succeeded) => s.succeeded += 1,
                    Some(JobStatus::Failed) | None => s.failed += 1,
                    Some(JobStatus::Cancelled | JobStatus::Superseded) => s.other += 1,
                    Some(_) if released => s.released += 1,
                    Some(_) => s.waiting += 1,
                }
            }
            if again {
                return;
            }
        }
    }

    async fn claim_any(&self, owner: &str) -> Result<Option<ClaimedJob>, StoreError> {
        if self.order.is_empty() {
            return Ok(None);
        }
        // Start at a different integration each time, so that a busy one does not
        // starve the others.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.order.len() {
            let id = &self.order[(start + k) % self.order.len()];
            let Some(integ) = self.integrations.get(id) else {
                continue;
            };
            let limit = integ.config.concurrency as i64;
            let claimant = Claimant {
                owner,
                process: Some(&self.process),
                stale_after: self.settings.heartbeat_timeout,
            };
            if let Some(c) = self
                .store
                .claim_job_as(id, limit, &claimant, self.settings.lease)
                .await?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Runs a claimed job with a heartbeat; releases it when the shutdown grace ends,
    /// and stops it when its lease is lost (another worker took it over).
    async fn run_claimed(&self, claimed: ClaimedJob) {
        if let Some(from) = &claimed.job.taken_over_from {
            let why = claimed
                .job
                .taken_over_why
                .clone()
                .unwrap_or_else(|| "lease expired".into());
            tracing::warn!(job = claimed.job.id, from = %from, %why, "taking over job {} from {from} ({why})", claimed.job.id);
            let event = self.event(
                &claimed,
                kinds::JOB_TAKEN_OVER,
                json!({"job": claimed.job.id, "from": from, "why": why, "by": claimed.owner}),
            );
            if let Err(e) = self.store.append_event(&event).await {
                tracing::warn!(job = claimed.job.id, error = %e, "auditing a take-over failed");
            }
        }
        let lost = Arc::new(tokio::sync::Notify::new());
        let hb = {
            let store = self.store.clone();
            let (id, owner, lease) = (claimed.job.id, claimed.owner.clone(), self.settings.lease);
            let lost = lost.clone();
            tokio::spawn(async move {
                let every = lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match store.heartbeat(id, &owner, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                job = id,
                                "lease lost: another worker took the job; stopping this run"
                            );
                            lost.notify_one();
                            return;
                        }
                        Err(e) => tracing::warn!(job = id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let mut abort = self.abort_tx.subscribe();
        let job_id = claimed.job.id;
        tokio::select! {
            _ = self.run_job(&claimed) => {}
            _ = lost.notified() => {}
            _ = async { while !*abort.borrow_and_update() { if abort.changed().await.is_err() { break; } } } => {
                tracing::warn!(job = job_id, "shutting down: releasing the running job");
                let event = self.event(&claimed, kinds::JOB_RETRY, json!({
                    "job": job_id, "attempt": claimed.job.attempts,
                    "error": {"reason": "Usher shut down while the job ran"},
                }));
                // Usher stopped it, not the app: the attempt is given back (Deferred).
                let _ = self.store.finish_job(&claimed, &JobFinish::Deferred {
                    run_after: format_time(self.clock.now()),
                    reason: "released at shutdown".into(),
                }, &json!({}), None, &event).await;
                tracing::info!(job = job_id, "job released: back to pending, attempt not spent");
            }
        }
        hb.abort();
    }

    fn event(&self, claimed: &ClaimedJob, kind: &'static str, detail: Value) -> NewEvent {
        NewEvent {
            actor: Actor::System,
            event_type: kind,
            target: Some(claimed.job.resource_id.clone()),
            integration_id: Some(claimed.job.integration_id.clone()),
            detail,
        }
    }

    async fn run_job(&self, claimed: &ClaimedJob) {
        let job = &claimed.job;
        let Some(integ) = self.integrations.get(&job.integration_id).cloned() else {
            return;
        };
        if job.resource_type == ResourceType::Group {
            let r = self
                .store
                .expand_group_job(claimed, |users| {
                    self.event(
                        claimed,
                        kinds::JOB_SUCCEEDED,
                        json!({"job": job.id, "group": job.resource_id, "queued_users": users}),
                    )
                })
                .await;
            match r {
                Ok(users) => {
                    tracing::info!(
                        job = job.id,
                        users = users.len(),
                        "group change queued for its members"
                    );
                }
                Err(e) => tracing::warn!(job = job.id, error = %e, "expanding a group job failed"),
            }
            return;
        }
        let started = Instant::now();
        let mut records: Vec<Value> = Vec::new();
        let result = match self.refresh_secret(&integ).await {
            Ok(()) => self.reconcile_user(&integ, claimed, &mut records).await,
            Err(f) => Err((None, f)),
        };
        // A login may have found that the app took a rotated password whose record
        // was interrupted: write that down in the vault.
        if let Secrets::Vault(v) = &self.secrets
            && let Err(e) = super::reconcile(v, &integ.target, &integ.config.service_account).await
        {
            tracing::warn!(integration = %integ.config.id, error = %e, "recording a rotated password failed");
        }
        let user_name = match &result {
            Ok((name, _)) | Err((name, _)) => name.clone(),
        };
        let attempt = job.attempts;
        let base = json!({
            "job": job.id,
            "attempt": attempt,
            "worker": claimed.owner,
            "operation": job.operation.as_str(),
            "userName": user_name,
            "actions": records,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        if let Err((_, f)) = &result
            && f.login_failed
        {
            metrics::counter!("usher_login_failures_total", "integration" => job.integration_id.clone())
                .increment(1);
        }
        let result = match result {
            Err((_, f)) if f.wait.is_some() => {
                self.wait(claimed, &integ, f, base).await;
                return;
            }
            r => r,
        };
        let (finish, kind, prov, detail) = match result {
            Ok((_, deleted)) => {
                let state = if deleted {
                    "deprovisioned"
                } else {
                    "provisioned"
                };
                (
                    JobFinish::Succeeded,
                    kinds::JOB_SUCCEEDED,
                    Some((state.to_string(), None)),
                    base,
                )
            }
            Err((_, f)) => {
                let mut detail = base;
                if let Value::Object(m) = &mut detail {
                    m.insert("error".into(), f.detail.clone());
                }
                if f.transient && (attempt as u32) < self.settings.max_attempts {
                    let delay = self.backoff(attempt as u32);
                    let run_after = format_time(
                        self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    );
                    if let Value::Object(m) = &mut detail {
                        m.insert("retry_in_ms".into(), json!(delay.as_millis() as u64));
                    }
                    (
                        JobFinish::Retry {
                            run_after,
                            error: f.message.clone(),
                        },
                        kinds::JOB_RETRY,
                        Some((
                            "pending".to_string(),
                            Some(format!("attempt {attempt} failed, retrying: {}", f.message)),
                        )),
                        detail,
                    )
                } else {
                    (
                        JobFinish::Failed {
                            error: f.message.clone(),
                        },
                        kinds::JOB_FAILED,
                        Some(("failed".to_string(), Some(f.message.clone()))),
                        detail,
                    )
                }
            }
        };
        // Read before this outcome is appended; only a success can be a recovery, and
        // only webhooks care.
        let was_failed = matches!(finish, JobFinish::Succeeded)
            && !self.webhooks.is_empty()
            && self
                .store
                .last_job_outcome(&job.integration_id, &job.resource_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|t| t == kinds::JOB_FAILED);
        let event = self.event(claimed, kind, detail.clone());
        let prov_ref = prov.as_ref().map(|(s, r)| (s.as_str(), r.as_deref()));
        match self
            .store
            .finish_job(claimed, &finish, &detail, prov_ref, &event)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    job = job.id,
                    "the job's lease was lost before it ended; its outcome is not recorded"
                );
                return;
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "recording the end of a job failed");
                return;
            }
        }
        record_metrics(job, &finish, &detail, started.elapsed());
        match &finish {
            JobFinish::Succeeded => {
                tracing::info!(job = job.id, integration = %job.integration_id, "job succeeded");
                if was_failed {
                    self.notify("job.recovered", claimed, &detail).await;
                }
            }
            JobFinish::Retry { error, .. } => {
                tracing::warn!(job = job.id, attempt, error = %error, "job failed; will retry");
            }
            JobFinish::Failed { error } => {
                tracing::error!(job = job.id, attempt, error = %error, "job failed");
                self.notify("job.failed", claimed, &detail).await;
            }
            // Ended by `wait`.
            JobFinish::Paused { .. } | JobFinish::Deferred { .. } => {}
        }
    }

    /// Ends a run that must wait without spending an attempt: the app refused the
    /// sign-in (the integration is paused, everywhere, at once), the integration was
    /// paused meanwhile, or the sign-in budget is spent.
    async fn wait(
        &self,
        claimed: &ClaimedJob,
        integ: &RunningIntegration,
        f: Failure,
        mut detail: Value,
    ) {
        let job = &claimed.job;
        if let Value::Object(m) = &mut detail {
            m.insert("error".into(), f.detail.clone());
        }
        let (finish, reason, kind) = match f.wait {
            Some(Wait::Refused(said)) => {
                // The driver's gate paused it already; this covers a driver without one.
                let reason = super::pause::refusal_reason(&integ.config.service_account, &said);
                super::pause::pause(
                    &self.store,
                    &self.secrets,
                    &self.webhooks,
                    &job.integration_id,
                    &integ.config.service_account,
                    &reason,
                    Some(job.id),
                )
                .await;
                let shown = format!("integration paused: {reason}");
                (
                    JobFinish::Paused {
                        reason: shown.clone(),
                    },
                    shown,
                    kinds::JOB_PAUSED,
                )
            }
            Some(Wait::Paused(reason)) => {
                let shown = format!("integration paused: {reason}");
                (
                    JobFinish::Paused {
                        reason: shown.clone(),
                    },
                    shown,
                    kinds::JOB_PAUSED,
                )
            }
            Some(Wait::Until(retry_at)) => (
                JobFinish::Deferred {
                    run_after: retry_at,
                    reason: f.message.clone(),
                },
                f.message.clone(),
                kinds::JOB_RETRY,
            ),
            None => return,
        };
        let event = self.event(claimed, kind, detail.clone());
        match self
            .store
            .finish_job(
                claimed,
                &finish,
                &detail,
                Some(("pending", Some(reason.as_str()))),
                &event,
            )
            .await
        {
            Ok(true) => tracing::info!(job = job.id, %reason, "job waits"),
            Ok(false) => tracing::warn!(job = job.id, "the job's lease was lost before it ended"),
            Err(e) => tracing::error!(job = job.id, error = %e, "recording a waiting job failed"),
        }
    }

    /// Tells the webhooks that want it about an integration (paused, resumed).
    pub async fn notify_integration(&self, event_type: &str, integration: &str, fields: Value) {
        let body = super::webhook::envelope(event_type, self.clock.now(), integration, "", fields);
        for w in &self.webhooks {
            if !super::webhook::wants(w, event_type) {
                continue;
            }
            if let Err(e) = self.store.enqueue_webhook(&w.url, event_type, &body).await {
                tracing::warn!(error = %e, "queueing a webhook failed");
            }
        }
    }

    /// Reads the service account's secret again (another process may have rotated it).
    pub(super) async fn refresh_secret(&self, integ: &RunningIntegration) -> Result<(), Failure> {
        let name = &integ.config.service_account;
        match self.secrets.get(name).await {
            Ok(Some(s)) => {
                integ.target.set_secret(s);
                Ok(())
            }
            Ok(None) => Err(Failure::transient(format!(
                "the vault has no entry `{name}` for the service account of `{}`; add it with `usher vault set {name}`",
                integ.config.id
            ))),
            Err(e) => Err(Failure::transient(format!(
                "cannot read vault entry `{name}`: {e}"
            ))),
        }
    }

    /// Exponential backoff with ±25 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.backoff_base.as_millis() as f64;
        let exp = base * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
        let capped = exp.min(self.settings.backoff_max.as_millis() as f64);
        let jitter = rand::rng().random_range(0.75..1.25);
        Duration::from_millis((capped * jitter) as u64)
    }

    async fn notify(&self, event_type: &str, claimed: &ClaimedJob, detail: &Value) {
        let body = super::webhook::envelope(
            event_type,
            self.clock.now(),
            &claimed.job.integration_id,
            &claimed.job.resource_id,
            json!({"job": claimed.job.id, "detail": detail}),
        );
        for w in &self.webhooks {
            if !super::webhook::wants(w, event_type) {
                continue;
            }
            if let Err(e) = self.store.enqueue_webhook(&w.url, event_type, &body).await {
                tracing::warn!(error = %e, "queueing a webhook failed");
            }
        }
    }

    /// Brings the app in line with the user's desired state. Returns the userName and
    /// whether the user is gone; on failure, the userName and why.
    async fn reconcile_user(
        &self,
        integ: &RunningIntegration,
        claimed: &ClaimedJob,
        records: &mut Vec<Value>,
    ) -> Result<(Option<String>, bool), (Option<String>, Failure)> {
        let job = &claimed.job;
        // An account nobody provisioned, which a reconciliation run chose to deactivate.
        let discovered = job.resource_id.starts_with(DISCOVERED_PREFIX);
        let resource = if discovered {
            None
        } else {
            self.store
                .get_resource(&job.integration_id, ResourceType::User, &job.resource_id)
                .await
                .map_err(|e| (None, Failure::database(e)))?
        };
        let desired_user = match &resource {
            Some(r) => {
                let groups = self
                    .store
                    .groups_of(&job.integration_id, &[r.id.as_str()])
                    .await
                    .map_err(|e| (None, Failure::database(e)))?;
                Some(super::user::user_context_with_groups(
                    &r.data,
                    groups.get(&r.id),
                ))
            }
            None => None,
        };
        let (mut app_id, mut known) = match self
            .store
            .app_account(&job.integration_id, &job.resource_id)
            .await
            .map_err(|e| (None, Failure::database(e)))?
        {
            Some((id, state)) => (id, AccountState::from_json(&state)),
            None => (None, None),
        };
        let desired = if discovered {
            // Deactivated, never deleted; nothing else about it is Usher's to change.
            if let Some(k) = &mut known {
                k.attributes_unknown = false;
                k.roles_unknown = false;
            }
            known.clone().map(|mut k| {
                k.active = false;
                k
            })
        } else {
            desired_user
                .as_ref()
                .map(|u| AccountState::desired(u, &integ.playbook))
        };
        let user_name = desired
            .as_ref()
            .and_then(|d| d.user_name.clone())
            .or_else(|| known.as_ref().and_then(|k| k.user_name.clone()));
        let fail = |f: Failure| (user_name.clone(), f);
        let mut adopted = false;
        // A few rounds at most: each action changes the known state, and the plan is
        // made again from it (an adopted account then gets its update and roles).
        for _round in 0..8 {
            let actions = plan::plan(known.as_ref(), desired.as_ref(), integ.config.leavers);
            let Some(&action) = actions.first() else {
                break;
            };
            let missing = plan::missing_actions(&integ.playbook, &[action], adopted);
            if !missing.is_empty() {
                return Err(fail(Failure::permanent(format!(
                    "the playbook of `{}` has no `{action}` action, so this change cannot be made in the app",
                    integ.config.id
                ))));
            }
            if !integ.playbook.actions.contains_key(&action) {
                // Best effort on an adopted account: take the desired state as known.
                known = plan::after(action, known.as_ref(), desired.as_ref());
                continue;
            }
            let mut user = desired_user.clone().unwrap_or_else(|| {
                user_from_state(known.as_ref().unwrap_or(&AccountState::default()))
            });
            user.app_id = app_id.clone();
            if action == ActionName::CreateUser {
                // Idempotence: a retried or interrupted create first looks for the account.
                // With a precondition the action checks by itself; without one the
                // engine looks the account up when this create may have run before.
                let has_precondition = integ
                    .playbook
                    .actions
                    .get(&action)
                    .is_some_and(|a| a.precondition.is_some());
                let retried = !has_precondition
                    && (job.attempts > 1
                        || known.as_ref().is_some_and(|k| k.pending_create)
                        || self
                            .store
                            .resource_was_attempted(&job.integration_id, &job.resource_id, job.id)
                            .await
                            .unwrap_or(true));
                // A look-up that cannot answer is an error (retried), never "not there";
                // with no way to look at all, a second create is not risked.
                if retried && !integ.playbook.actions.contains_key(&ActionName::ListUsers) {
                    return Err(fail(Failure::permanent(format!(
                        "create_user may have run before for this user, and the playbook of `{}` has neither a precondition on create_user nor a list_users action to find out; check the app, then `usher jobs retry`",
                        integ.config.id
                    ))));
                }
                if retried
                    && let Some(found) = self
                        .look_up(integ, job, &user, records)
                        .await
                        .map_err(&fail)?
                {
                    adopted = true;
                    app_id = found.or(app_id);
                    known = desired.clone().map(|mut d| {
                        d.attributes_unknown = true;
                        d.roles_unknown = true;
                        d
                    });
                    self.record(job, app_id.as_deref(), known.as_ref())
                        .await
                        .map_err(&fail)?;
                    continue;
                }
                // Remember that a create is under way before it starts.
                let mut intent = desired.clone().unwrap_or_default();
                intent.pending_create = true;
                self.store
                    .record_app_account(
                        &job.integration_id,
                        &job.resource_id,
                        None,
                        &intent.to_json(),
                    )
                    .await
                    .map_err(|e| fail(Failure::database(e)))?;
                if known.is_none() {
                    known = Some(intent);
                }
            }
            let t0 = Instant::now();
            let out = self
                .run_traced(integ, job, action, user.clone())
                .await
                .map_err(|e| fail(Failure::from_driver(action, &e)))?;
            if let Some(id) = out.outputs.get("app_id").filter(|s| !s.is_empty()) {
                app_id = Some(id.clone());
            }
            // Read-back: the action's own verify ran inside it; without one, list_users.
            let has_verify = integ
                .playbook
                .actions
                .get(&action)
                .is_some_and(|a| a.verify.is_some());
            let verified = if out.status == ActionStatus::AlreadyDone {
                "precondition"
            } else if has_verify {
                "verify"
            } else if integ.playbook.actions.contains_key(&ActionName::ListUsers) {
                let present = self
                    .look_up(integ, job, &user, records)
                    .await
                    .map_err(&fail)?;
                let want_present = action != ActionName::DeleteUser;
                if present.is_some() != want_present {
                    return Err(fail(Failure {
                        message: format!(
                            "{action} did not take: list_users {} the account afterwards",
                            if want_present {
                                "does not show"
                            } else {
                                "still shows"
                            }
                        ),
                        transient: true,
                        detail: json!({"action": action.as_str(), "reason": "read-back through list_users disagrees"}),
                        wait: None,
                        login_failed: false,
                    }));
                }
                "list_users"
            } else {
                "unverified"
            };
            records.push(action_record(
                action,
                &out,
                verified,
                t0.elapsed().as_millis(),
            ));
            if action == ActionName::CreateUser && out.status == ActionStatus::AlreadyDone {
                adopted = true;
                known = desired.clone().map(|mut d| {
                    d.attributes_unknown = true;
                    d.roles_unknown = true;
                    d
                });
            } else {
                known = plan::after(action, known.as_ref(), desired.as_ref());
            }
            match &known {
                Some(k) => self
                    .record(job, app_id.as_deref(), Some(k))
                    .await
                    .map_err(&fail)?,
                None => self
                    .store
                    .forget_app_account(&job.integration_id, &job.resource_id)
                    .await
                    .map_err(|e| fail(Failure::database(e)))?,
            }
        }
        if discovered && let Some(key) = job.resource_id.strip_prefix(DISCOVERED_PREFIX) {
            self.store
                .set_discovered_status(&job.integration_id, key, "deactivated")
                .await
                .map_err(|e| fail(Failure::database(e)))?;
        }
        Ok((user_name, desired.is_none()))
    }

    /// Runs an action and keeps its step records with the job (`usher jobs trace`),
    /// whether it succeeded or not.
    async fn run_traced(
        &self,
        integ: &RunningIntegration,
        job: &crate::store::JobRow,
        action: ActionName,
        user: UserContext,
    ) -> Result<ActionOutcome, DriverError> {
        let result = match self.sso_password(integ, job, action, &user).await {
            Ok(Some(password)) => {
                self.driver
                    .run_create_user(&integ.target, user, &password, &self.run_options)
                    .await
            }
            Ok(None) => {
                self.driver
                    .run(&integ.target, action, user, &self.run_options)
                    .await
            }
            Err(e) => Err(DriverError::Gate(format!(
                "the person's single sign-on password could not be kept in the vault: {e}"
            ))),
        };
        let (steps, error) = match &result {
            Ok(out) => (out.steps.as_slice(), None),
            Err(e) => (
                e.run_error().map_or(&[][..], |r| r.steps.as_slice()),
                Some(e.to_string()),
            ),
        };
        let steps = serde_json::to_value(steps).unwrap_or_else(|_| json!([]));
        if let Err(e) = self
            .store
            .record_job_trace(
                job.id,
                job.attempts,
                action.as_str(),
                &steps,
                error.as_deref(),
            )
            .await
        {
            tracing::warn!(job = job.id, error = %e, "keeping the job's trace failed");
        }
        result
    }

    /// With single sign-on (`sso:`), the password create_user sets for the person:
    /// kept in the vault first (docs/sso.md).
    async fn sso_password(
        &self,
        integ: &RunningIntegration,
        job: &crate::store::JobRow,
        action: ActionName,
        user: &UserContext,
    ) -> Result<Option<secrecy::SecretString>, crate::vault::VaultError> {
        // Only a create that sets the password: otherwise (an app that mails its own)
        // the first SSO sign-in has the admin set one (`set_user_password`).
        if action != ActionName::CreateUser
            || integ.config.sso.is_none()
            || !integ
                .playbook
                .action_uses(ActionName::CreateUser, "generated_password")
        {
            return Ok(None);
        }
        let Secrets::Vault(vault) = &self.secrets else {
            return Ok(None);
        };
        let login = user
            .user_name
            .clone()
            .or_else(|| user.email.clone())
            .unwrap_or_default();
        super::sso::user_password(vault, &job.integration_id, &job.resource_id, &login)
            .await
            .map(Some)
    }

    async fn record(
        &self,
        job: &crate::store::JobRow,
        app_id: Option<&str>,
        state: Option<&AccountState>,
    ) -> Result<(), Failure> {
        let Some(state) = state else { return Ok(()) };
        self.store
            .record_app_account(
                &job.integration_id,
                &job.resource_id,
                app_id,
                &state.to_json(),
            )
            .await
            .map_err(Failure::database)
    }

    /// Runs `list_users` and looks for the user by userName or email. Returns
    /// `Some(app id if shown)` when found.
    async fn look_up(
        &self,
        integ: &RunningIntegration,
        job: &crate::store::JobRow,
        user: &UserContext,
        records: &mut Vec<Value>,
    ) -> Result<Option<Option<String>>, Failure> {
        if !integ.playbook.actions.contains_key(&ActionName::ListUsers) {
            return Ok(None);
        }
        let t0 = Instant::now();
        let out = self
            .run_traced(integ, job, ActionName::ListUsers, user.clone())
            .await
            .map_err(|e| Failure::from_driver(ActionName::ListUsers, &e))?;
        records.push(action_record(
            ActionName::ListUsers,
            &out,
            "read",
            t0.elapsed().as_millis(),
        ));
        let case_sensitive = integ.playbook.case_sensitive_names;
        for rec in &out.records {
            if shows_user(rec, user, case_sensitive) {
                let id = ["app_id", "id"]
                    .iter()
                    .find_map(|k| rec.get(*k).cloned())
                    .filter(|s| !s.is_empty());
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// Whether a `list_users` record is this user: a value equal to the userName or the
/// email. Emails compare case-insensitively; user names too unless the playbook says
/// the app tells them apart by case (`case_sensitive_names: true`).
fn shows_user(
    rec: &std::collections::BTreeMap<String, String>,
    user: &UserContext,
    case_sensitive: bool,
) -> bool {
    rec.values().map(|v| v.trim()).any(|v| {
        let name = user.user_name.as_deref().is_some_and(|n| {
            if case_sensitive {
                v == n
            } else {
                v.to_lowercase() == n.to_lowercase()
            }
        });
        name || user
            .email
            .as_deref()
            .is_some_and(|e| v.to_lowercase() == e.to_lowercase())
    })
}

/// A user context from what the app is known to have (a deleted user's last state).
fn user_from_state(s: &AccountState) -> UserContext {
    let mut u = UserContext {
        user_name: s.user_name.clone(),
        email: s.email.clone(),
        given_name: s.given_name.clone(),
        family_name: s.family_name.clone(),
        display_name: s.display_name.clone(),
        title: s.title.clone(),
        department: s.department.clone(),
        manager: s.manager.clone(),
        active: Some(s.active),
        ..Default::default()
    };
    if let Some(e) = &s.email {
        u.emails.insert("work".into(), e.clone());
    }
    u.extra
        .insert("app_roles".into(), json!(s.app_roles.clone()));
    u
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn list_users_read_back_follows_the_apps_case_rule() {
        let user = UserContext {
            user_name: Some("alice".into()),
            email: Some("Alice@Acme.test".into()),
            ..Default::default()
        };
        // MediaWiki shows `Alice` for `alice`: the same account unless the app is case-sensitive.
        let shown = rec(&[("name", "Alice"), ("app_id", "7")]);
        assert!(shows_user(&shown, &user, false));
        assert!(!shows_user(&shown, &user, true));
        assert!(shows_user(&rec(&[("name", " alice ")]), &user, true));
        // Emails compare case-insensitively either way.
        assert!(shows_user(
            &rec(&[("email", "alice@acme.test")]),
            &user,
            true
        ));
        assert!(!shows_user(&rec(&[("name", "alicia")]), &user, false));
    }
}
