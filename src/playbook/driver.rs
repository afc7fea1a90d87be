//! The driver: one Chromium, one isolated context per running action, a logged-in
//! session kept per integration, crash recovery.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tokio::sync::{RwLock, Semaphore};

use super::model::{ActionName, Playbook};
use super::run::{self, ActionOutcome, Phase, RunError, RunOptions, StepRecord};
use super::template::{IntegrationContext, RenderError, TemplateContext, TemplateEnv, UserContext};
use crate::browser::{Browser, BrowserConfig, BrowserError, SessionState};
use crate::clock::{Clock, SystemClock};
use crate::vault::{Secret, TotpTracker};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Browser(#[from] BrowserError),
    /// The sign-in failed for a reason other than a refusal: the app answered with an
    /// error (HTTP 5xx, unreachable), or the playbook's login is broken.
    #[error("login failed: {0}")]
    Login(Box<RunError>),
    /// The app refused the sign-in (any login failure that is not an app error):
    /// `reason` is what the app showed (a `login.refused` marker) or the failed step.
    #[error("the app refused the sign-in: {reason}")]
    LoginRefused { reason: String, run: Box<RunError> },
    /// The integration is paused: no sign-in is attempted.
    #[error("integration paused: {0}")]
    Paused(String),
    /// The sign-in budget of a playbook without `login.refused` is spent.
    #[error(
        "sign-ins wait until {retry_at}: at most {SIGN_IN_BUDGET} sign-in attempts per 15 minutes for a playbook without `login.refused`"
    )]
    SignInBudget { retry_at: String },
    /// Whether a sign-in may be attempted could not be found out (database).
    #[error("cannot tell whether a sign-in is allowed: {0}")]
    Gate(String),
    /// No unused TOTP code window could be taken.
    #[error("TOTP: {0}")]
    Totp(String),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Playbook(#[from] RenderError),
    #[error("driver is shut down")]
    ShutDown,
}

impl DriverError {
    /// Chromium died: the action may be retried on a fresh browser.
    pub fn is_crash(&self) -> bool {
        match self {
            DriverError::Browser(e) => e.is_crash() || matches!(e, BrowserError::Closed),
            DriverError::Login(e) | DriverError::Run(e) => e.is_crash(),
            _ => false,
        }
    }

    /// The failed step, when a step failed.
    pub fn run_error(&self) -> Option<&RunError> {
        match self {
            DriverError::Login(e) | DriverError::Run(e) => Some(e.as_ref()),
            DriverError::LoginRefused { run, .. } => Some(run.as_ref()),
            _ => None,
        }
    }
}

/// Sign-in attempts a playbook without `login.refused` may make per integration per
/// [`SIGN_IN_WINDOW`]: it cannot tell a refusal from a page that did not render.
pub const SIGN_IN_BUDGET: i64 = 2;
/// The window of [`SIGN_IN_BUDGET`].
pub const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether a sign-in may be attempted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInVerdict {
    Go,
    Paused {
        reason: String,
    },
    /// The budget is spent until `retry_at` (RFC 3339).
    Budget {
        retry_at: String,
    },
    /// The answer could not be had (database down): do not sign in.
    Unknown(String),
}

/// Asked before every sign-in attempt. The engine answers from the database, so that
/// every process agrees: no sign-in while the integration is paused, and, for a
/// playbook that cannot tell a refusal (`budgeted`), no more than the budget.
pub trait SignInGate: Send + Sync {
    fn admit<'a>(&'a self, target: &'a str, budgeted: bool) -> BoxFuture<'a, SignInVerdict>;
    /// The app refused a sign-in (`said`: its message, or the failed step). Called
    /// before the login lock is released, so that no other sign-in of any worker or
    /// process is admitted after it.
    fn refused<'a>(&'a self, target: &'a str, said: &'a str) -> BoxFuture<'a, ()>;
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub browser: BrowserConfig,
    /// Browser contexts (running actions) at most at once. Default 4.
    pub max_contexts: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            browser: BrowserConfig::default(),
            max_contexts: 4,
        }
    }
}

/// The app of one integration as the driver acts on it: the playbook, where the app
/// is, and the service account's credentials (with the playbook's compiled templates).
pub struct AppTarget {
    /// Sessions are kept per key.
    pub key: String,
    pub name: String,
    pub base_url: String,
    pub playbook: Arc<Playbook>,
    /// Replaced by [`AppTarget::set_secret`] (another process may have rotated it).
    secret: std::sync::RwLock<Arc<Secret>>,
    /// A login succeeded only with the secret's pending password (see `engine::reconcile`).
    pending_login: AtomicBool,
    env: Arc<TemplateEnv>,
}

impl AppTarget {
    /// The credentials the next login uses.
    pub fn secret(&self) -> Arc<Secret> {
        match self.secret.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Uses these credentials from the next login on (the kept session stays).
    pub fn set_secret(&self, secret: Arc<Secret>) {
        match self.secret.write() {
            Ok(mut s) => *s = secret,
            Err(poisoned) => *poisoned.into_inner() = secret,
        }
    }

    /// True once after a login that the current password failed and the pending
    /// password of an unfinished rotation passed: the app took the rotation, and the
    /// in-memory secret now has it as its password; the vault must be told
    /// (`engine::reconcile`).
    pub fn take_pending_login(&self) -> bool {
        self.pending_login.swap(false, Ordering::SeqCst)
    }
}

impl fmt::Debug for AppTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppTarget")
            .field("key", &self.key)
            .field("base_url", &self.base_url)
            .field("app", &self.playbook.app)
            .finish()
    }
}

#[derive(Default)]
struct KeptSession {
    /// Bumped at every login, so a job that waited for another's login sees it.
    generation: u64,
    state: Option<SessionState>,
}

/// Runs playbook actions in one lazily launched Chromium.
pub struct Driver {
    cfg: DriverConfig,
    browser: RwLock<Option<Browser>>,
    sessions: Mutex<HashMap<String, KeptSession>>,
    /// One login at a time per integration: TOTP codes are single-use.
    login_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    slots: Semaphore,
    totp: TotpTracker,
    clock: Arc<dyn Clock>,
    gate: Option<Arc<dyn SignInGate>>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("cfg", &self.cfg).finish()
    }
}

impl Driver {
    pub fn new(cfg: DriverConfig) -> Driver {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    pub fn with_clock(cfg: DriverConfig, clock: Arc<dyn Clock>) -> Driver {
        let slots = Semaphore::new(cfg.max_contexts.max(1));
        Driver {
            cfg,
            browser: RwLock::new(None),
            sessions: Mutex::new(HashMap::new()),
            login_locks: Mutex::new(HashMap::new()),
            slots,
            totp: TotpTracker::new(),
            clock,
            gate: None,
        }
    }

    /// Takes TOTP windows with `tracker` (e.g. [`TotpTracker::shared`], so that every
    /// process on the database agrees). Before any [`target`](Self::target) is made.
    pub fn with_totp(mut self, tracker: TotpTracker) -> Driver {
        self.totp = tracker;
        self
    }

    /// Asks `gate` before every sign-in attempt.
    pub fn with_sign_in_gate(mut self, gate: Arc<dyn SignInGate>) -> Driver {
        self.gate = Some(gate);
        self
    }

    /// Prepares the app of an integration: compiles the playbook's templates with a `totp()` that
    /// never hands out the same code window twice.
    pub fn target(
        &self,
        key: impl Into<String>,
        name: impl Into<String>,
        base_url: impl Into<String>,
        playbook: Arc<Playbook>,
        secret: Arc<Secret>,
    ) -> Result<AppTarget, DriverError> {
        let tracker = self.totp.clone();
        let clock = self.clock.clone();
        let env = TemplateEnv::new(&playbook, move |seed: &str| {
            tracker
                .code(seed, clock.as_ref())
                .map_err(|e| e.to_string())
        })?;
        Ok(AppTarget {
            key: key.into(),
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            playbook,
            secret: std::sync::RwLock::new(secret),
            pending_login: AtomicBool::new(false),
            env: Arc::new(env),
        })
    }

    /// Chromium's pid, if it is running.
    pub async fn browser_pid(&self) -> Option<u32> {
        self.browser.read().await.as_ref().and_then(Browser::pid)
    }

    /// Chromium is running, launched now if it was not (it is kept for the next
    /// action): what readiness checks.
    pub async fn ensure_browser(&self) -> Result<(), DriverError> {
        if self.slots.is_closed() {
            return Err(DriverError::ShutDown);
        }
        let mut guard = self.browser.write().await;
        match guard.as_mut() {
            Some(b) => {
                b.relaunch_if_dead().await?;
            }
            None => *guard = Some(Browser::launch(self.cfg.browser.clone()).await?),
        }
        Ok(())
    }

    /// Forgets the kept session of an integration (the next action logs in).
    pub fn forget_session(&self, key: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(key);
        }
    }

    /// Runs one action for one user. A browser crash is recovered from by relaunching
    /// Chromium and running the whole action once more (preconditions make that safe).
    pub async fn run(
        &self,
        integ: &AppTarget,
        action: ActionName,
        user: UserContext,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        self.run_with(integ, action, &user, None, opts).await
    }

    /// Runs the playbook's `rotate_password` action with `new_password` as the
    /// template variable `new_password` (redacted like every secret). Only changes the
    /// app: `engine::rotate_password` is what keeps the vault in step.
    pub async fn run_rotate_password(
        &self,
        integ: &AppTarget,
        new_password: &SecretString,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        let user = UserContext::default();
        self.run_with(
            integ,
            ActionName::RotatePassword,
            &user,
            Some(new_password),
            opts,
        )
        .await
    }

    /// Forgets the kept session and logs in afresh (current password, then the pending
    /// one). Returns the step records.
    pub async fn relogin(
        &self,
        integ: &AppTarget,
        opts: &RunOptions,
    ) -> Result<Vec<StepRecord>, DriverError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| DriverError::ShutDown)?;
        self.forget_session(&integ.key);
        let bctx = self.new_context().await?;
        let mut ctx = base_context(integ, &UserContext::default());
        let mut steps = Vec::new();
        let (generation, _) = self.kept(&integ.key);
        let result = self
            .login(integ, &bctx, &mut ctx, opts, &mut steps, generation)
            .await;
        if let Err(e) = bctx.close().await {
            tracing::debug!(error = %e, "closing a browser context failed");
        }
        result.map(|()| steps)
    }

    async fn run_with(
        &self,
        integ: &AppTarget,
        action: ActionName,
        user: &UserContext,
        new_password: Option<&SecretString>,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| DriverError::ShutDown)?;
        match self.run_once(integ, action, user, new_password, opts).await {
            Err(e) if e.is_crash() || !self.browser_alive().await => {
                tracing::warn!(error = %e, integration = %integ.key, %action,
                    "browser crashed; relaunching and retrying the action once");
                self.relaunch().await?;
                self.run_once(integ, action, user, new_password, opts).await
            }
            r => r,
        }
    }

    /// Closes Chromium (and its profile directory).
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.slots.close();
        if let Some(b) = self.browser.write().await.take() {
            b.close().await?;
        }
        Ok(())
    }

    async fn browser_alive(&self) -> bool {
        self.browser
            .read()
            .await
            .as_ref()
            .is_none_or(Browser::is_alive)
    }

    async fn relaunch(&self) -> Result<(), DriverError> {
        let mut guard = self.browser.write().await;
        match guard.as_mut() {
            Some(b) => {
                if !b.relaunch_if_dead().await? {
                    // Alive but failing: replace it all the same.
                    let fresh = Browser::launch(self.cfg.browser.clone()).await?;
                    if let Some(old) = guard.replace(fresh) {
                        let _ = old.close().await;
                    }
                }
            }
            None => *guard = Some(Browser::launch(self.cfg.browser.clone()).await?),
        }
        Ok(())
    }

    async fn new_context(&self) -> Result<crate::browser::BrowserContext, DriverError> {
        {
            let guard = self.browser.read().await;
            if let Some(b) = guard.as_ref() {
                return Ok(b.new_context().await?);
            }
        }
        let mut guard = self.browser.write().await;
        if guard.is_none() {
            *guard = Some(Browser::launch(self.cfg.browser.clone()).await?);
        }
        match guard.as_ref() {
            Some(b) => Ok(b.new_context().await?),
            None => Err(DriverError::ShutDown),
        }
    }

    fn kept(&self, key: &str) -> (u64, Option<SessionState>) {
        self.sessions
            .lock()
            .ok()
            .and_then(|s| s.get(key).map(|k| (k.generation, k.state.clone())))
            .unwrap_or((0, None))
    }

    fn keep(&self, key: &str, state: SessionState, new_login: bool) {
        if let Ok(mut s) = self.sessions.lock() {
            let k = s.entry(key.to_owned()).or_default();
            if new_login {
                k.generation += 1;
            }
            k.state = Some(state);
        }
    }

    fn login_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.login_locks.lock() {
            Ok(mut m) => m.entry(key.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    async fn run_once(
        &self,
        integ: &AppTarget,
        action: ActionName,
        user: &UserContext,
        new_password: Option<&SecretString>,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        let bctx = self.new_context().await?;
        let result = self
            .in_context(&bctx, integ, action, user, new_password, opts)
            .await;
        if let Some(keep) = &opts.keep_open
            && !result.as_ref().is_err_and(DriverError::is_crash)
        {
            keep(bctx.page().devtools_url().await).await;
        }
        if let Err(e) = bctx.close().await {
            tracing::debug!(error = %e, "closing a browser context failed");
        }
        result
    }

    async fn in_context(
        &self,
        bctx: &crate::browser::BrowserContext,
        integ: &AppTarget,
        action: ActionName,
        user: &UserContext,
        new_password: Option<&SecretString>,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        let page = bctx.page();
        let pb = integ.playbook.as_ref();
        let mut ctx = base_context(integ, user);
        ctx.new_password = new_password.cloned();
        let mut steps: Vec<StepRecord> = Vec::new();

        let (generation, kept) = self.kept(&integ.key);
        if let Some(state) = &kept {
            bctx.set_cookies(state).await?;
        }
        // A failed check is looked at twice before logging in: an error page from a
        // flaky app is not a lost session, and each login spends a single-use TOTP code.
        let checked = kept.is_some()
            && (self
                .session_check(integ, page, &mut ctx, opts, &mut steps)
                .await?
                || self
                    .session_check(integ, page, &mut ctx, opts, &mut steps)
                    .await?);
        if !checked {
            self.login(integ, bctx, &mut ctx, opts, &mut steps, generation)
                .await?;
        }

        ctx.outputs.clear();
        match run::run_action(pb, &integ.env, page, action, &mut ctx, opts).await {
            Ok(mut out) => {
                // The app may have refreshed its cookies; keep the newest.
                if let Ok(state) = bctx.cookies().await {
                    self.keep(&integ.key, state, false);
                }
                steps.append(&mut out.steps);
                out.steps = steps;
                Ok(out)
            }
            Err(mut e) => {
                steps.append(&mut e.steps);
                e.steps = steps;
                Err(DriverError::Run(Box::new(e)))
            }
        }
    }

    /// True when the kept session is logged in. Crashes and playbook bugs are errors.
    async fn session_check(
        &self,
        integ: &AppTarget,
        page: &crate::browser::Page,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<bool, DriverError> {
        let pb = integ.playbook.as_ref();
        match run::run_phase(
            pb,
            &integ.env,
            page,
            Phase::SessionCheck,
            &pb.session_check,
            ctx,
            opts,
        )
        .await
        {
            Ok(mut s) => {
                steps.append(&mut s);
                Ok(true)
            }
            Err(mut e) if !e.is_crash() && e.kind != run::RunErrorKind::Playbook => {
                tracing::info!(integration = %integ.key, "session check failed; logging in");
                steps.append(&mut e.steps);
                Ok(false)
            }
            Err(e) => Err(DriverError::Run(Box::new(e))),
        }
    }

    async fn login(
        &self,
        integ: &AppTarget,
        bctx: &crate::browser::BrowserContext,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
        seen_generation: u64,
    ) -> Result<(), DriverError> {
        let page = bctx.page();
        let lock = self.login_lock(&integ.key);
        let _one_login = lock.lock().await;
        // Another job may have logged in while this one waited: use its session.
        let (generation, kept) = self.kept(&integ.key);
        if generation != seen_generation
            && let Some(state) = kept
        {
            bctx.set_cookies(&state).await?;
            if self.session_check(integ, page, ctx, opts, steps).await? {
                return Ok(());
            }
        }
        let first = self.sign_in(integ, page, ctx, opts, steps).await;
        let secret = integ.secret();
        match (first, secret.promoted()) {
            (
                Err(first @ (DriverError::Login(_) | DriverError::LoginRefused { .. })),
                Some(promoted),
            ) if first
                .run_error()
                .is_some_and(|r| r.kind != run::RunErrorKind::Playbook) =>
            {
                // A rotation stored its new password before changing it in the app and
                // may not have recorded the app's answer: try that password.
                tracing::warn!(integration = %integ.key,
                    "login with the current password failed; trying the pending password of an unfinished rotation");
                if let Some(r) = first.run_error() {
                    steps.extend(r.steps.iter().cloned());
                }
                let current = std::mem::replace(&mut ctx.secret, promoted.template_values());
                match self.sign_in(integ, page, ctx, opts, steps).await {
                    Ok(()) => {
                        tracing::warn!(integration = %integ.key,
                            "the pending password logged in: the app took the rotation");
                        integ.set_secret(Arc::new(promoted));
                        integ.pending_login.store(true, Ordering::SeqCst);
                    }
                    Err(e) if e.is_crash() => return Err(e),
                    Err(e) => {
                        ctx.secret = current;
                        let second = match e.run_error() {
                            Some(r) => format!("{}: {}", r.step_file_line, r.reason),
                            None => e.to_string(),
                        };
                        let also = format!(
                            "; the pending password of an unfinished rotation failed too ({second})"
                        );
                        return Err(match first {
                            DriverError::LoginRefused { reason, run } => {
                                DriverError::LoginRefused {
                                    reason: format!("{reason}{also}"),
                                    run,
                                }
                            }
                            DriverError::Login(mut r) => {
                                r.reason = format!("{}{also}", r.reason);
                                DriverError::Login(r)
                            }
                            other => other,
                        });
                    }
                }
            }
            (Err(e), _) => return Err(e),
            (Ok(()), _) => {}
        }
        let state = bctx.cookies().await?;
        self.keep(&integ.key, state, true);
        tracing::info!(integration = %integ.key, "logged in");
        Ok(())
    }

    /// One sign-in attempt: admitted by the gate (not paused, within the budget), with a
    /// TOTP code window taken for it, then the login steps and the session check. A
    /// failure that is not an app error (HTTP 5xx, unreachable) nor a playbook bug is a
    /// refusal.
    async fn sign_in(
        &self,
        integ: &AppTarget,
        page: &crate::browser::Page,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<(), DriverError> {
        let pb = integ.playbook.as_ref();
        if let Some(gate) = &self.gate {
            match gate.admit(&integ.key, pb.login_refused.is_empty()).await {
                SignInVerdict::Go => {}
                SignInVerdict::Paused { reason } => return Err(DriverError::Paused(reason)),
                SignInVerdict::Budget { retry_at } => {
                    return Err(DriverError::SignInBudget { retry_at });
                }
                SignInVerdict::Unknown(e) => return Err(DriverError::Gate(e)),
            }
        }
        // Failed sign-ins (here or in another process) may have used the open code
        // windows: take one nobody used, waiting for it if need be.
        if let Some((seed, _)) = &integ.secret().totp {
            self.totp
                .reserve(seed.expose_secret(), self.clock.as_ref())
                .await
                .map_err(|e| DriverError::Totp(e.to_string()))?;
        }
        match self.attempt_login(integ, page, ctx, opts, steps).await {
            Err(DriverError::Login(mut e))
                if !matches!(e.kind, run::RunErrorKind::App | run::RunErrorKind::Playbook) =>
            {
                let shown = run::refusal_shown(pb, &integ.env, page, ctx, opts).await;
                let reason = match shown {
                    Some(text) => text,
                    None => {
                        // No refusal on the page: the login form may simply not have been
                        // shown because the session is alive after all (a session check
                        // that met an app error or a slow page sends the job here, and the
                        // app then redirects its login page). That is no refusal.
                        let mut checked = Vec::new();
                        if self
                            .session_check(integ, page, ctx, opts, &mut checked)
                            .await?
                        {
                            tracing::info!(integration = %integ.key,
                                "the login steps did not match but the session is alive");
                            steps.append(&mut e.steps);
                            steps.append(&mut checked);
                            return Ok(());
                        }
                        e.steps.append(&mut checked);
                        format!("{}: {}: {}", e.step_file_line, e.step, e.reason)
                    }
                };
                tracing::error!(integration = %integ.key, %reason, "the app refused the sign-in");
                if let Some(gate) = &self.gate {
                    gate.refused(&integ.key, &reason).await;
                }
                Err(DriverError::LoginRefused { reason, run: e })
            }
            other => other,
        }
    }

    /// The login steps, then the session check.
    async fn attempt_login(
        &self,
        integ: &AppTarget,
        page: &crate::browser::Page,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<(), DriverError> {
        let pb = integ.playbook.as_ref();
        let as_login = |e: RunError| {
            if e.is_crash() {
                DriverError::Run(Box::new(e))
            } else {
                DriverError::Login(Box::new(e))
            }
        };
        match run::run_phase(pb, &integ.env, page, Phase::Login, &pb.login, ctx, opts).await {
            Ok(mut s) => steps.append(&mut s),
            Err(mut e) => {
                steps.append(&mut e.steps);
                e.steps = std::mem::take(steps);
                return Err(as_login(e));
            }
        }
        match run::run_phase(
            pb,
            &integ.env,
            page,
            Phase::SessionCheck,
            &pb.session_check,
            ctx,
            opts,
        )
        .await
        {
            Ok(mut s) => steps.append(&mut s),
            Err(mut e) => {
                steps.append(&mut e.steps);
                e.steps = std::mem::take(steps);
                e.reason = format!("still not logged in after the login steps: {}", e.reason);
                return Err(as_login(e));
            }
        }
        Ok(())
    }
}

/// The render context of an action: the user, the integration and its secret.
fn base_context(integ: &AppTarget, user: &UserContext) -> TemplateContext {
    let mut ctx = TemplateContext::new(
        user.clone(),
        IntegrationContext {
            id: integ.key.clone(),
            name: integ.name.clone(),
            base_url: integ.base_url.clone(),
        },
    );
    ctx.secret = integ.secret().template_values();
    ctx
}
