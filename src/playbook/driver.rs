//! The driver: one Chromium, a pool of logged-in sessions (isolated browser contexts,
//! each its own cookie jar and login) per integration, crash recovery.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tokio::sync::{RwLock, Semaphore};

use super::model::{ActionName, Playbook};
use super::run::{self, ActionOutcome, Phase, RunError, RunOptions, StepRecord};
use super::sessions::{Checkout, Pools, Return, Session};
use super::template::{IntegrationContext, RenderError, TemplateContext, TemplateEnv, UserContext};
use crate::browser::{Browser, BrowserConfig, BrowserContext, BrowserError, SessionState};
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
    /// The playbook has no `user_login` section (single sign-on needs one).
    #[error("the playbook has no `user_login` section")]
    NoUserLogin,
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
    /// A sign-in succeeded; `mfa`: a TOTP code was typed in it.
    fn signed_in<'a>(&'a self, _target: &'a str, _mfa: bool) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub browser: BrowserConfig,
    /// Browser contexts running actions at most at once, and idle logged-in sessions
    /// kept at most across integrations. Default 4.
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

/// One pooled session's browser side: its context, and the browser it lives in.
struct Warm {
    ctx: BrowserContext,
    /// [`Driver::epoch`] when it was made: a relaunched browser has none of its contexts.
    epoch: u64,
}

/// Runs playbook actions in one lazily launched Chromium.
pub struct Driver {
    cfg: DriverConfig,
    browser: RwLock<Option<Browser>>,
    /// Bumped whenever Chromium is (re)launched.
    epoch: AtomicU64,
    pools: Pools<Warm>,
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
        let pools = Pools::new(cfg.max_contexts.max(1));
        Driver {
            cfg,
            browser: RwLock::new(None),
            epoch: AtomicU64::new(0),
            pools,
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
                if b.relaunch_if_dead().await? {
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                }
            }
            None => *guard = Some(Browser::launch(self.cfg.browser.clone()).await?),
        }
        Ok(())
    }

    /// Forgets the logged-in sessions of an integration: idle ones are closed, ones
    /// running an action are closed when it ends; the next action logs in.
    pub async fn forget_session(&self, key: &str) {
        let closing = self.pools.forget(key);
        close_contexts(closing).await;
    }

    /// Sessions of the integration that are idle (logged in, kept for the next action)
    /// and that exist (idle or running an action).
    pub fn sessions(&self, key: &str) -> (usize, usize) {
        (self.pools.idle(key), self.pools.live(key))
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
        self.run_with(integ, action, &user, None, opts, false).await
    }

    /// Runs an action's read-only `probe` in a logged-in session (the UI-change
    /// canary): its steps, or none when the action has no probe.
    pub async fn probe(
        &self,
        integ: &AppTarget,
        action: ActionName,
        user: UserContext,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        self.run_with(integ, action, &user, None, opts, true).await
    }

    /// Runs the playbook's `create_user` action with `password` as the template
    /// variable `generated_password` (single sign-on: the password Usher keeps for the
    /// person), instead of a fresh one.
    pub async fn run_create_user(
        &self,
        integ: &AppTarget,
        user: UserContext,
        password: &SecretString,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        self.run_with(
            integ,
            ActionName::CreateUser,
            &user,
            Some(password),
            opts,
            false,
        )
        .await
    }

    /// Runs the playbook's `set_user_password` action for `user` with `password` as
    /// the template variable `new_password` (single sign-on: the person's own password).
    pub async fn run_set_user_password(
        &self,
        integ: &AppTarget,
        user: UserContext,
        password: &SecretString,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        self.run_with(
            integ,
            ActionName::SetUserPassword,
            &user,
            Some(password),
            opts,
            false,
        )
        .await
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
        let result = self
            .run_with(
                integ,
                ActionName::RotatePassword,
                &user,
                Some(new_password),
                opts,
                false,
            )
            .await;
        // Apps often end the account's other sessions on a password change.
        self.pools.distrust(&integ.key, Instant::now());
        result
    }

    /// Runs the playbook's `enable_mfa` action. Its `capture_totp` step hands the secret
    /// to `opts.on_totp_capture` before the app is asked to confirm it: only changes
    /// the app; `engine::enable_mfa` is what keeps the vault in step.
    pub async fn run_enable_mfa(
        &self,
        integ: &AppTarget,
        opts: &RunOptions,
    ) -> Result<ActionOutcome, DriverError> {
        let user = UserContext::default();
        let result = self
            .run_with(integ, ActionName::EnableMfa, &user, None, opts, false)
            .await;
        // Apps often end the account's other sessions when its sign-in changes.
        self.pools.distrust(&integ.key, Instant::now());
        result
    }

    /// Signs one person in to the app with their own credentials (the playbook's
    /// `user_login`, with `user` and `secret` theirs) in a browser context of its own,
    /// never one of the service account's sessions, and returns the app's cookies.
    pub async fn user_login(
        &self,
        integ: &AppTarget,
        user: &UserContext,
        secret: &Secret,
        opts: &RunOptions,
    ) -> Result<(SessionState, Vec<StepRecord>), DriverError> {
        let pb = integ.playbook.as_ref();
        let Some(ul) = pb.user_login.as_ref() else {
            return Err(DriverError::NoUserLogin);
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| DriverError::ShutDown)?;
        let warm = self.new_context().await?;
        let mut ctx = base_context(integ, user);
        ctx.secret = secret.template_values();
        run::add_app_roles(pb, &mut ctx);
        let result = run::run_phase(
            pb,
            &integ.env,
            warm.ctx.page(),
            Phase::UserLogin,
            &ul.steps,
            &mut ctx,
            opts,
        )
        .await;
        let out = match result {
            Ok(steps) => match warm.ctx.cookies().await {
                Ok(jar) => Ok((jar, steps)),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(DriverError::Run(Box::new(e))),
        };
        close_contexts(vec![warm]).await;
        out
    }

    /// Forgets the integration's sessions and logs in afresh in a new one (current
    /// password, then the pending one), which is kept. Returns the step records.
    pub async fn relogin(
        &self,
        integ: &AppTarget,
        opts: &RunOptions,
    ) -> Result<Vec<StepRecord>, DriverError> {
        self.forget_session(&integ.key).await;
        let generation = self.pools.grow(&integ.key);
        let mut session = self.make_session(integ, generation, None).await?;
        let slot = self.slots.acquire().await;
        let result = match slot {
            Ok(_slot) => {
                let mut ctx = base_context(integ, &UserContext::default());
                let mut steps = Vec::new();
                self.login(integ, &mut session, &mut ctx, opts, &mut steps)
                    .await
                    .map(|()| steps)
            }
            Err(_) => Err(DriverError::ShutDown),
        };
        let how = if result.is_ok() {
            Return::Keep
        } else {
            Return::Close
        };
        self.give_back(integ, session, how).await;
        result
    }

    async fn run_with(
        &self,
        integ: &AppTarget,
        action: ActionName,
        user: &UserContext,
        new_password: Option<&SecretString>,
        opts: &RunOptions,
        probe: bool,
    ) -> Result<ActionOutcome, DriverError> {
        let mut steps = Vec::new();
        // Rotation is never run twice here: `engine::rotate` finds out what happened.
        let mut rerun_left = !action.changes_credentials();
        let mut crash_left = true;
        let mut slot = None;
        loop {
            // The session first, then the slot: a job waiting for its integration's
            // session holds no slot another integration could use. A Chromium found dead
            // before the action started (a new session's context could not be made in
            // it) is the same crash as one under the action.
            let result = match self.checkout(integ).await {
                Ok(session) => {
                    if slot.is_none() {
                        match self.slots.acquire().await {
                            Ok(s) => slot = Some(s),
                            Err(_) => {
                                self.give_back(integ, session, Return::Close).await;
                                return Err(DriverError::ShutDown);
                            }
                        }
                    }
                    let attempt = Attempt {
                        integ,
                        action,
                        user,
                        new_password,
                        opts,
                        rerun: rerun_left,
                        probe,
                    };
                    self.run_once(session, &attempt, &mut steps).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(Some(out)) => return Ok(out),
                // The session had ended under the action: once more, in a session that
                // is logged in.
                Ok(None) => rerun_left = false,
                Err(e) if crash_left && (e.is_crash() || !self.browser_alive().await) => {
                    tracing::warn!(error = %e, integration = %integ.key, %action,
                        "browser crashed; relaunching and retrying the action once");
                    crash_left = false;
                    steps.clear();
                    self.relaunch().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes Chromium (and its profile directory).
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.slots.close();
        close_contexts(self.pools.drain()).await;
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
        self.epoch.fetch_add(1, Ordering::SeqCst);
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

    async fn new_context(&self) -> Result<Warm, DriverError> {
        {
            let guard = self.browser.read().await;
            if let Some(b) = guard.as_ref() {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let ctx = b.new_context().await?;
                return Ok(Warm { ctx, epoch });
            }
        }
        let mut guard = self.browser.write().await;
        if guard.is_none() {
            *guard = Some(Browser::launch(self.cfg.browser.clone()).await?);
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        match guard.as_ref() {
            Some(b) => Ok(Warm {
                ctx: b.new_context().await?,
                epoch,
            }),
            None => Err(DriverError::ShutDown),
        }
    }

    /// Sessions an integration may have at once: one for a playbook without
    /// `login.refused` (every sign-in spends its budget), else `sessions.max`, else as
    /// many as its actions running at once.
    fn sessions_max(integ: &AppTarget) -> usize {
        let pb = integ.playbook.as_ref();
        if pb.login_refused.is_empty() {
            return 1;
        }
        pb.sessions
            .max
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
    }

    /// A session of the integration: an idle one, else a new one (not logged in, or
    /// with the cookies of one lost with a crashed browser), else the next one freed.
    async fn checkout(&self, integ: &AppTarget) -> Result<Session<Warm>, DriverError> {
        let max = Self::sessions_max(integ);
        loop {
            if self.slots.is_closed() {
                return Err(DriverError::ShutDown);
            }
            // While no unused TOTP window is open, a new session would wait for one:
            // waiting for a busy session may be quicker.
            let grow_wait = match &integ.secret().totp {
                Some((seed, _)) => self
                    .totp
                    .wait_for_unused(seed.expose_secret(), self.clock.as_ref()),
                None => Duration::ZERO,
            };
            let epoch = self.epoch.load(Ordering::SeqCst);
            let (decision, closing) =
                self.pools
                    .checkout(&integ.key, max, grow_wait, Instant::now(), |w| {
                        w.epoch == epoch && !w.ctx.is_dead()
                    });
            close_contexts(closing).await;
            match decision {
                Checkout::Warm(s) => return Ok(s),
                Checkout::Grow { generation, jar } => {
                    return self.make_session(integ, generation, jar).await;
                }
                Checkout::Wait { woken, at_most } => {
                    let _ = tokio::time::timeout(at_most, woken).await;
                }
            }
        }
    }

    /// The session a grow of the pool counted: a new context, with `jar` (the cookies
    /// of a session lost with a crashed browser) restored into it. When it cannot be
    /// made, the pool forgets the grow.
    async fn make_session(
        &self,
        integ: &AppTarget,
        generation: u64,
        jar: Option<SessionState>,
    ) -> Result<Session<Warm>, DriverError> {
        let made = match self.new_context().await {
            Ok(w) => match &jar {
                Some(j) => match w.ctx.set_cookies(j).await {
                    Ok(()) => Ok(w),
                    Err(e) => {
                        close_contexts(vec![w]).await;
                        Err(e.into())
                    }
                },
                None => Ok(w),
            },
            Err(e) => Err(e),
        };
        match made {
            Ok(w) => Ok(self.pools.session(w, generation, jar)),
            Err(e) => {
                // A jar whose restore failed for another reason than a dead browser
                // is not tried again.
                let had_jar = jar.is_some();
                let keep = if e.is_crash() || !self.browser_alive().await {
                    jar
                } else {
                    None
                };
                self.pools.abandon(&integ.key, had_jar, keep);
                Err(e)
            }
        }
    }

    /// Hands a session back to the pool and closes what the pool let go.
    async fn give_back(&self, integ: &AppTarget, session: Session<Warm>, how: Return) {
        let closing = self.pools.release(&integ.key, session, how, Instant::now());
        close_contexts(closing).await;
    }

    fn login_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.login_locks.lock() {
            Ok(mut m) => m.entry(key.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Runs the action in `session` and hands the session back. `Ok(None)`: the
    /// session had ended under the action and the action should run once more (only
    /// when `attempt.rerun`); the step records so far are in `steps`.
    async fn run_once(
        &self,
        mut session: Session<Warm>,
        attempt: &Attempt<'_>,
        steps: &mut Vec<StepRecord>,
    ) -> Result<Option<ActionOutcome>, DriverError> {
        let integ = attempt.integ;
        let result = self.in_session(&mut session, attempt, steps).await;
        if let Some(keep) = &attempt.opts.keep_open
            && !result.as_ref().is_err_and(DriverError::is_crash)
        {
            keep(session.item.ctx.page().devtools_url().await).await;
        }
        let how = match &result {
            Ok(_) => Return::Keep,
            Err(e) if e.is_crash() => Return::Crashed,
            // The session is signed in; the page may be left anywhere (a dialog, a
            // half-filled form): start the next action from a blank page.
            Err(DriverError::Run(_) | DriverError::Playbook(_)) if session.logged_in => {
                let blank = session
                    .item
                    .ctx
                    .page()
                    .goto("about:blank", self.cfg.browser.cdp_timeout)
                    .await;
                if blank.is_ok() {
                    Return::Keep
                } else {
                    Return::Close
                }
            }
            Err(_) => Return::Close,
        };
        self.give_back(integ, session, how).await;
        result
    }

    async fn in_session(
        &self,
        session: &mut Session<Warm>,
        attempt: &Attempt<'_>,
        steps: &mut Vec<StepRecord>,
    ) -> Result<Option<ActionOutcome>, DriverError> {
        let Attempt {
            integ,
            action,
            user,
            new_password,
            opts,
            rerun,
            probe,
        } = *attempt;
        let pb = integ.playbook.as_ref();
        let mut ctx = base_context(integ, user);
        // The credential the action sets: the person's password in create_user, the
        // service account's new one in rotate_password.
        if action == ActionName::CreateUser {
            ctx.generated_password = new_password.cloned();
        } else {
            ctx.new_password = new_password.cloned();
        }

        // A session that proved itself a moment ago is used without a check. Rotation
        // always checks first: it must not run on a session that may have ended.
        let trusted = !action.changes_credentials()
            && opts.from_line.is_none()
            && session.trusted(pb.sessions.trust, Instant::now());
        if session.logged_in && !trusted {
            self.check_kept(integ, session, &mut ctx, opts, steps)
                .await?;
        }
        if !session.logged_in {
            self.login(integ, session, &mut ctx, opts, steps).await?;
        }
        ctx.outputs.clear();
        let page = session.item.ctx.page();
        let result = if probe {
            run::run_probe(pb, &integ.env, page, action, &mut ctx, opts)
                .await
                .map(|steps| ActionOutcome {
                    status: run::ActionStatus::Done,
                    outputs: ctx.outputs.clone(),
                    records: Vec::new(),
                    steps: steps.unwrap_or_default(),
                })
        } else {
            run::run_action(pb, &integ.env, page, action, &mut ctx, opts).await
        };

        // A result that an ended session could also give checks the session: a failure
        // (the session may have ended since it proved itself, or another sign-in of the
        // account ended it), and, on trust, `already_done` or a list (a sign-in page
        // has no row to find either) or an action without `verify`. If it had ended,
        // the action runs once more (preconditions make that safe, as after a crash).
        let proof_needed = match &result {
            Ok(out) => trusted && !probe && needs_proof(pb, action, out),
            Err(e) => {
                !action.changes_credentials()
                    && !e.is_crash()
                    && e.kind != run::RunErrorKind::Playbook
            }
        };
        if !proof_needed {
            return self.finish(session, result, steps).await.map(Some);
        }
        let result = match result {
            Ok(mut out) => {
                steps.append(&mut out.steps);
                Ok(out)
            }
            Err(mut e) => {
                steps.append(&mut e.steps);
                Err(e)
            }
        };
        // The check's records join the story only when it ended the attempt: a failed
        // action's error keeps its failed step as the last record.
        let mut check_steps = Vec::new();
        let checked = self
            .check_kept(integ, session, &mut ctx, opts, &mut check_steps)
            .await;
        if let Err(e) = &checked {
            tracing::debug!(error = %e, "checking the session after its action failed");
        }
        if !session.logged_in {
            steps.append(&mut check_steps);
        }
        if checked.is_err() || session.logged_in || !rerun {
            return self.finish(session, result, steps).await.map(Some);
        }
        tracing::info!(integration = %integ.key, %action,
            "the session had ended under the action; running it once more in a logged-in session");
        Ok(None)
    }

    /// The attempt's result with every step record so far.
    async fn finish(
        &self,
        session: &mut Session<Warm>,
        result: Result<ActionOutcome, RunError>,
        steps: &mut Vec<StepRecord>,
    ) -> Result<ActionOutcome, DriverError> {
        match result {
            Ok(out) => Ok(self.succeeded(session, out, steps).await),
            Err(e) => Err(failed_with(e, steps)),
        }
    }

    /// The action succeeded: the session proved itself; its cookies (the app may have
    /// refreshed them) are kept to restore it after a browser crash.
    async fn succeeded(
        &self,
        session: &mut Session<Warm>,
        mut out: ActionOutcome,
        steps: &mut Vec<StepRecord>,
    ) -> ActionOutcome {
        session.proven_at = Some(Instant::now());
        if let Ok(state) = session.item.ctx.cookies().await {
            session.jar = Some(state);
        }
        steps.append(&mut out.steps);
        out.steps = std::mem::take(steps);
        out
    }

    /// Checks a kept session, twice before calling it lost: an error page from a flaky
    /// app is not a lost session, and each login spends a single-use TOTP code. When the
    /// app answered the last check with an error (HTTP 5xx, unreachable) nobody knows
    /// whether the session lives: that error is the attempt's (the job is retried) and
    /// the session is kept, signed in, for the next attempt to check again.
    async fn check_kept(
        &self,
        integ: &AppTarget,
        session: &mut Session<Warm>,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<(), DriverError> {
        let page = session.item.ctx.page();
        let mut last = Checked::Ended;
        for _ in 0..2 {
            last = self.session_check(integ, page, ctx, opts, steps).await?;
            if matches!(last, Checked::Alive) {
                session.proven_at = Some(Instant::now());
                return Ok(());
            }
        }
        if let Checked::Unknown(mut e) = last {
            e.steps = std::mem::take(steps);
            return Err(DriverError::Run(e));
        }
        if self.pools.lost(&integ.key, session) {
            tracing::warn!(integration = %integ.key,
                "a session ended after another one signed in: the app allows one session per account; keeping one (say `sessions: {{ max: 1 }}` in the playbook)");
        }
        Ok(())
    }

    /// Whether the kept session is logged in. Crashes and playbook bugs are errors.
    async fn session_check(
        &self,
        integ: &AppTarget,
        page: &crate::browser::Page,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<Checked, DriverError> {
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
                Ok(Checked::Alive)
            }
            Err(mut e) if e.kind == run::RunErrorKind::App => {
                tracing::info!(integration = %integ.key, reason = %e.reason,
                    "the app answered the session check with an error");
                steps.append(&mut e.steps);
                Ok(Checked::Unknown(Box::new(e)))
            }
            Err(mut e) if !e.is_crash() && e.kind != run::RunErrorKind::Playbook => {
                tracing::info!(integration = %integ.key, "session check failed; logging in");
                steps.append(&mut e.steps);
                Ok(Checked::Ended)
            }
            Err(e) => Err(DriverError::Run(Box::new(e))),
        }
    }

    /// Logs `session` in (one login of the integration at a time: TOTP codes are
    /// single-use), with the pending password of an unfinished rotation as a fallback.
    async fn login(
        &self,
        integ: &AppTarget,
        session: &mut Session<Warm>,
        ctx: &mut TemplateContext,
        opts: &RunOptions,
        steps: &mut Vec<StepRecord>,
    ) -> Result<(), DriverError> {
        let page = session.item.ctx.page();
        let lock = self.login_lock(&integ.key);
        let _one_login = lock.lock().await;
        let secret = integ.secret();
        let first = self.sign_in(integ, &secret, page, ctx, opts, steps).await;
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
                match self.sign_in(integ, &promoted, page, ctx, opts, steps).await {
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
        self.pools.logged_in(&integ.key, session, Instant::now());
        session.jar = Some(session.item.ctx.cookies().await?);
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
        secret: &Secret,
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
        if let Some((seed, _)) = &secret.totp {
            self.totp
                .reserve(seed.expose_secret(), self.clock.as_ref())
                .await
                .map_err(|e| DriverError::Totp(e.to_string()))?;
        }
        let attempt = self.attempt_login(integ, page, ctx, opts, steps).await;
        let mut typed_code = false;
        if let Some((seed, _)) = &secret.totp {
            match self.totp.release_unused(seed.expose_secret()).await {
                Ok(typed) => typed_code = typed,
                Err(e) => {
                    tracing::warn!(integration = %integ.key, error = %e, "giving back an unused TOTP window failed")
                }
            }
        }
        if attempt.is_ok()
            && let Some(gate) = &self.gate
        {
            gate.signed_in(&integ.key, typed_code).await;
        }
        match attempt {
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
                        match self
                            .session_check(integ, page, ctx, opts, &mut checked)
                            .await?
                        {
                            Checked::Alive => {
                                tracing::info!(integration = %integ.key,
                                    "the login steps did not match but the session is alive");
                                steps.append(&mut e.steps);
                                steps.append(&mut checked);
                                return Ok(());
                            }
                            // The app is failing: an app error, not a refusal (a refusal
                            // pauses the integration).
                            Checked::Unknown(mut app) => {
                                e.steps.append(&mut checked);
                                app.steps = std::mem::take(&mut e.steps);
                                return Err(DriverError::Login(app));
                            }
                            Checked::Ended => {}
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

/// Whether an action's success on a session used without a check could also be what an
/// ended session gives (a sign-in page where the app was expected).
fn needs_proof(pb: &Playbook, action: ActionName, out: &ActionOutcome) -> bool {
    out.status == run::ActionStatus::AlreadyDone
        || action == ActionName::ListUsers
        || pb.actions.get(&action).is_none_or(|a| a.verify.is_none())
}

/// What a session check found.
enum Checked {
    Alive,
    /// The check's expectations failed: the session ended.
    Ended,
    /// The app answered with an error (HTTP 5xx, unreachable): nobody knows.
    Unknown(Box<RunError>),
}

/// The failed action's error with every step record of the attempt.
fn failed_with(mut e: RunError, steps: &mut Vec<StepRecord>) -> DriverError {
    steps.append(&mut e.steps);
    e.steps = std::mem::take(steps);
    DriverError::Run(Box::new(e))
}

/// One run of an action: what [`Driver::run_with`] hands each attempt.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    integ: &'a AppTarget,
    action: ActionName,
    user: &'a UserContext,
    new_password: Option<&'a SecretString>,
    opts: &'a RunOptions,
    /// The action may run once more if its session ended under it.
    rerun: bool,
    /// Run the action's read-only `probe` instead of the action.
    probe: bool,
}

/// Closes browser contexts the pool let go (best effort: a dead browser has none).
async fn close_contexts(items: Vec<Warm>) {
    for w in items {
        if let Err(e) = w.ctx.close().await {
            tracing::debug!(error = %e, "closing a browser context failed");
        }
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
