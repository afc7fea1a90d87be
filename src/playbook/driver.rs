//! The driver: one Chromium, one isolated context per running action, a logged-in
//! session kept per integration, crash recovery.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Login steps failed, or the session check still failed after them.
    #[error("login failed: {0}")]
    Login(Box<RunError>),
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
            _ => None,
        }
    }
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
        }
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
        // Failed logins may have spent the code windows that are open now: wait for a
        // fresh one (at most one period) rather than fail on a code the app refuses.
        if let Some((seed, _)) = &integ.secret().totp {
            let wait = self
                .totp
                .wait_for_unused(seed.expose_secret(), self.clock.as_ref());
            if !wait.is_zero() {
                tracing::info!(integration = %integ.key, wait_s = wait.as_secs(), "waiting for an unused TOTP window before logging in");
                tokio::time::sleep(wait).await;
            }
        }
        let first = self.attempt_login(integ, page, ctx, opts, steps).await;
        let secret = integ.secret();
        match (first, secret.promoted()) {
            (Err(DriverError::Login(first)), Some(promoted)) => {
                // A rotation stored its new password before changing it in the app and
                // may not have recorded the app's answer: try that password.
                tracing::warn!(integration = %integ.key,
                    "login with the current password failed; trying the pending password of an unfinished rotation");
                steps.extend(first.steps.iter().cloned());
                let current = std::mem::replace(&mut ctx.secret, promoted.template_values());
                match self.attempt_login(integ, page, ctx, opts, steps).await {
                    Ok(()) => {
                        tracing::warn!(integration = %integ.key,
                            "the pending password logged in: the app took the rotation");
                        integ.set_secret(Arc::new(promoted));
                        integ.pending_login.store(true, Ordering::SeqCst);
                    }
                    Err(e) if e.is_crash() => return Err(e),
                    Err(e) => {
                        ctx.secret = current;
                        let mut first = first;
                        let second = match e.run_error() {
                            Some(r) => format!("{}: {}", r.step_file_line, r.reason),
                            None => e.to_string(),
                        };
                        first.reason = format!(
                            "{}; the pending password of an unfinished rotation failed too ({second})",
                            first.reason
                        );
                        return Err(DriverError::Login(first));
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
