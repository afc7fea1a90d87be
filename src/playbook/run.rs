//! The runner: executes a playbook's steps on a browser [`Page`], with evidence,
//! per-step records and redaction. Knows nothing about sessions or retries (see
//! `driver`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::model::{
    ActionName, Condition, Expectation, ExtractFrom, LocatorTpl, Playbook, ScreenshotPolicy, Step,
    StepKind, Template, TotpSource, WaitState,
};
use super::redact::Redactor;
use super::template::{RenderError, Rendered, TemplateContext, TemplateEnv};
use crate::audit::evidence::EvidenceStore;
use crate::browser::{BrowserError, DialogPolicy, Locator, Page};
use crate::clock::{Clock, SystemClock};

/// Called with every step record as soon as it exists (progress output, logs).
pub type StepObserver = Arc<dyn Fn(&StepRecord) + Send + Sync>;

/// The step about to run, as its source says it (nothing rendered yet, so no secret).
#[derive(Debug, Clone)]
pub struct StepAhead {
    pub phase: Phase,
    /// Keyword and source argument: `click text=Send invite`.
    pub step: String,
    pub file: String,
    pub line: usize,
}

/// Awaited before every step runs (an author's `--step` pause).
pub type BeforeStep = Arc<dyn Fn(&StepAhead) -> BoxFuture<'static, ()> + Send + Sync>;

/// Awaited at the end of a run, before its browser context closes, with the page's
/// DevTools URL (an author's `--keep-open`).
pub type KeepOpen = Arc<dyn Fn(Option<String>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Awaited by `capture_totp` with the TOTP secret it read, before the next step runs:
/// the engine stores it in the vault as the pending TOTP. An `Err` (a message without
/// the secret) fails the step, so the app is never asked to confirm a secret Usher
/// could not record.
pub type TotpCapture =
    Arc<dyn Fn(SecretString) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How a run keeps evidence, reports progress and tells the time.
#[derive(Clone)]
pub struct RunOptions {
    /// Where screenshots go; without it none are taken.
    pub evidence: Option<Arc<EvidenceStore>>,
    pub on_step: Option<StepObserver>,
    /// Stamps every step record (`at`); the system clock by default.
    pub clock: Arc<dyn Clock>,
    /// For a trace: a screenshot after every step whatever the playbook's policy, and
    /// one before every page-changing step.
    pub trace: bool,
    pub before_step: Option<BeforeStep>,
    pub keep_open: Option<KeepOpen>,
    /// Start the action at its top-level step on this line: the precondition and the
    /// steps before it are skipped (the author has brought the app there).
    pub from_line: Option<usize>,
    /// Where `capture_totp` hands the secret it read; without it the step fails.
    pub on_totp_capture: Option<TotpCapture>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            evidence: None,
            on_step: None,
            clock: Arc::new(SystemClock),
            trace: false,
            before_step: None,
            keep_open: None,
            from_line: None,
            on_totp_capture: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("evidence", &self.evidence)
            .field("on_step", &self.on_step.is_some())
            .field("trace", &self.trace)
            .field("from_line", &self.from_line)
            .field("on_totp_capture", &self.on_totp_capture.is_some())
            .finish()
    }
}

/// Which list of steps a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    SessionCheck,
    Login,
    Precondition,
    Steps,
    Verify,
    /// An action's read-only `probe` (the UI-change canary).
    Probe,
    /// A person's own sign-in to the app (`user_login`, single sign-on).
    UserLogin,
}

impl Phase {
    /// Whether a failure in this phase is an answer ("not logged in", "not done yet")
    /// rather than an error: no failure screenshot, outcome `not_met`. Any failed step of
    /// a session check is; in a precondition only a check that did not match is.
    fn failure_is_answer(self, check: bool) -> bool {
        match self {
            Phase::SessionCheck => true,
            Phase::Precondition => check,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepOutcome {
    Ok,
    /// A session check or precondition step that did not hold.
    NotMet {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

/// What one step did. Every text in it is redacted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub at: DateTime<Utc>,
    pub phase: Phase,
    /// Keyword and redacted summary: `click text=Send invite`.
    pub step: String,
    pub file: String,
    pub line: usize,
    /// Page URL after the step.
    pub url: Option<String>,
    pub duration_ms: u64,
    /// SHA-256 of the evidence screenshot (taken after the step).
    pub screenshot: Option<String>,
    /// SHA-256 of the screenshot taken before a page-changing step (traces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot_before: Option<String>,
    pub outcome: StepOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Done,
    /// The precondition held: nothing was changed.
    AlreadyDone,
}

/// The result of one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionOutcome {
    pub status: ActionStatus,
    pub outputs: BTreeMap<String, String>,
    /// Rows emitted by `emit` (list_users).
    pub records: Vec<BTreeMap<String, String>>,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunErrorKind {
    /// A browser operation failed (timeout, action).
    Browser,
    /// The app answered with an error (HTTP status ≥ 500) or could not be reached.
    App,
    /// Chromium died or its connection dropped: retry on a fresh browser.
    Crashed,
    /// A template or a rendered locator is wrong (a playbook bug).
    Playbook,
    /// A `fail` step ran, or an `extract` pattern did not match.
    Failed,
}

/// A failed step: where, what, why, and the evidence. Every text in it is redacted.
#[derive(Debug, Clone, Serialize)]
pub struct RunError {
    /// `playbooks/acme.yaml:42`.
    pub step_file_line: String,
    pub phase: Phase,
    /// Keyword and summary of the failed step.
    pub step: String,
    pub locator: Option<String>,
    pub url: Option<String>,
    pub reason: String,
    /// SHA-256 of the failure screenshot.
    pub screenshot: Option<String>,
    pub screenshot_path: Option<PathBuf>,
    pub kind: RunErrorKind,
    /// The failed step is a check that did not match: an `expect` or `wait_for` that
    /// timed out, or a `fail` step. In a precondition this is the answer "not done";
    /// any other failure leaves the answer unknown.
    #[serde(skip)]
    pub check: bool,
    /// Every step record of the run up to and including the failed one.
    #[serde(skip)]
    pub steps: Vec<StepRecord>,
}

impl RunError {
    pub fn is_crash(&self) -> bool {
        self.kind == RunErrorKind::Crashed
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.step_file_line)?;
        match self.phase {
            Phase::Verify => f.write_str("verify failed: ")?,
            Phase::Probe => f.write_str("probe failed: ")?,
            Phase::Precondition => f.write_str("precondition could not be answered: ")?,
            _ => {}
        }
        write!(f, "{}: {}", self.step, self.reason)?;
        if let Some(u) = self.url.as_deref().filter(|u| !self.reason.contains(*u)) {
            write!(f, " (at {u})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {}

/// Why a step failed, before the evidence is gathered.
struct Failure {
    reason: String,
    locator: Option<String>,
    kind: RunErrorKind,
    /// An auto-waiting operation gave up (what a check that does not match does).
    timed_out: bool,
}

impl Failure {
    fn browser(e: BrowserError, locator: Option<&Locator>) -> Failure {
        Failure {
            kind: if e.is_crash() || matches!(e, BrowserError::Closed) {
                RunErrorKind::Crashed
            } else if matches!(e, BrowserError::Navigation { .. }) {
                RunErrorKind::App
            } else {
                RunErrorKind::Browser
            },
            timed_out: matches!(e, BrowserError::Timeout { .. }),
            reason: e.to_string(),
            locator: locator.map(|l| l.source().to_owned()),
        }
    }
    fn playbook(reason: String, locator: Option<String>) -> Failure {
        Failure {
            reason,
            locator,
            kind: RunErrorKind::Playbook,
            timed_out: false,
        }
    }
    /// A step that ran and said no (`fail`, an `extract` pattern that did not match).
    fn failed(reason: String, locator: Option<String>) -> Failure {
        Failure {
            reason,
            locator,
            kind: RunErrorKind::Failed,
            timed_out: false,
        }
    }
}

/// Whether `f`, the failure of `step`, is a check that did not match.
fn is_check(step: &Step, f: &Failure) -> bool {
    match step.kind {
        StepKind::Expect(_) | StepKind::WaitFor { .. } => {
            f.timed_out && f.kind == RunErrorKind::Browser
        }
        StepKind::Fail { .. } => f.kind == RunErrorKind::Failed,
        _ => false,
    }
}

/// Runs one step list (login, session_check) outside an action.
pub async fn run_phase(
    playbook: &Playbook,
    env: &TemplateEnv,
    page: &Page,
    phase: Phase,
    steps: &[Step],
    ctx: &mut TemplateContext,
    opts: &RunOptions,
) -> Result<Vec<StepRecord>, RunError> {
    let mut ex = Exec::new(playbook, env, page, ctx, opts);
    ex.phase = phase;
    match ex.run_steps(steps, None, Next::Other).await {
        Ok(()) => Ok(ex.steps),
        Err(mut e) => {
            e.steps = ex.steps;
            Err(e)
        }
    }
}

/// Runs an action's `probe` (read-only steps the canary runs); `Ok(None)` when the
/// action has none.
pub async fn run_probe(
    playbook: &Playbook,
    env: &TemplateEnv,
    page: &Page,
    action: ActionName,
    ctx: &mut TemplateContext,
    opts: &RunOptions,
) -> Result<Option<Vec<StepRecord>>, RunError> {
    let Some(probe) = playbook.action(action).and_then(|a| a.probe.as_ref()) else {
        return Ok(None);
    };
    add_app_roles(playbook, ctx);
    run_phase(playbook, env, page, Phase::Probe, probe, ctx, opts)
        .await
        .map(Some)
}

/// What the app shows to say that it refused a sign-in: the text of the first of the
/// playbook's `login.refused` markers visible on the page (whitespace collapsed,
/// redacted, at most 200 characters), or the marker itself when it has no text.
pub async fn refusal_shown(
    playbook: &Playbook,
    env: &TemplateEnv,
    page: &Page,
    ctx: &mut TemplateContext,
    opts: &RunOptions,
) -> Option<String> {
    let ex = Exec::new(playbook, env, page, ctx, opts);
    let mut ex = ex;
    for marker in &playbook.login_refused {
        let Ok(loc) = ex.locator(marker, None) else {
            continue;
        };
        if page
            .expect_visible(&loc, Duration::from_millis(300))
            .await
            .is_err()
        {
            continue;
        }
        let text = page
            .text(&loc, Duration::from_millis(500))
            .await
            .unwrap_or_default();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown = if text.is_empty() {
            format!("{loc} is shown")
        } else {
            text
        };
        return Some(truncate(&ex.redactor.redact(&shown), 200));
    }
    None
}

/// Adds `user.app_roles` (the user's SCIM roles and groups mapped through the
/// playbook's `roles`) unless the caller set it.
pub fn add_app_roles(playbook: &Playbook, ctx: &mut TemplateContext) {
    if ctx.user.extra.contains_key("app_roles") {
        return;
    }
    let mut names = ctx.user.roles.clone();
    names.extend(ctx.user.groups.iter().cloned());
    let mapping = playbook.map_roles_detailed(&names);
    if !mapping.unmapped.is_empty() {
        tracing::info!(unmapped = ?mapping.unmapped, "roles and groups with no app role in the playbook");
    }
    ctx.user
        .extra
        .insert("app_roles".into(), serde_json::json!(mapping.app_roles));
}

/// Runs an action: precondition (all steps succeed → `AlreadyDone`), steps, verify.
pub async fn run_action(
    playbook: &Playbook,
    env: &TemplateEnv,
    page: &Page,
    action: ActionName,
    ctx: &mut TemplateContext,
    opts: &RunOptions,
) -> Result<ActionOutcome, RunError> {
    let Some(act) = playbook.action(action) else {
        return Err(RunError {
            step_file_line: playbook.source_file.clone(),
            phase: Phase::Steps,
            step: action.to_string(),
            locator: None,
            url: None,
            reason: format!("the playbook has no `{action}` action"),
            screenshot: None,
            screenshot_path: None,
            kind: RunErrorKind::Playbook,
            check: false,
            steps: Vec::new(),
        });
    };
    add_app_roles(playbook, ctx);
    if action == ActionName::CreateUser && ctx.generated_password.is_none() {
        ctx.generated_password = Some(crate::vault::generate_password());
    }
    // The enrolment pages show the TOTP secret as text and as a QR code, which no
    // redaction can blank out of an image: enable_mfa keeps no screenshot at all.
    let no_shots;
    let opts = if action == ActionName::EnableMfa {
        no_shots = RunOptions {
            evidence: None,
            trace: false,
            ..opts.clone()
        };
        &no_shots
    } else {
        opts
    };
    let mut ex = Exec::new(playbook, env, page, ctx, opts);
    let result = ex.action(act).await;
    match result {
        Ok(status) => Ok(ActionOutcome {
            status,
            outputs: ex.ctx.outputs.clone(),
            records: std::mem::take(&mut ex.records),
            steps: std::mem::take(&mut ex.steps),
        }),
        Err(mut e) => {
            e.steps = std::mem::take(&mut ex.steps);
            Err(e)
        }
    }
}

struct Exec<'a> {
    pb: &'a Playbook,
    env: &'a TemplateEnv,
    page: &'a Page,
    ctx: &'a mut TemplateContext,
    opts: &'a RunOptions,
    redactor: Redactor,
    phase: Phase,
    records: Vec<BTreeMap<String, String>>,
    steps: Vec<StepRecord>,
    /// The trace's screenshot before the step now running.
    before: Option<String>,
    /// What certainly runs after the step now running ([`next_step`]).
    followed_by: Next,
    /// `Page::marks` when the action's `steps` began.
    marks_at_steps: Option<u64>,
    /// The last evidence screenshot taken.
    last_shot: Option<String>,
    /// The step now running did not load the page again (a `goto` in `verify` to the page
    /// the steps ended on): its evidence is the last screenshot.
    page_reused: bool,
}

impl<'a> Exec<'a> {
    fn new(
        pb: &'a Playbook,
        env: &'a TemplateEnv,
        page: &'a Page,
        ctx: &'a mut TemplateContext,
        opts: &'a RunOptions,
    ) -> Self {
        let redactor = ctx.redactor();
        Exec {
            pb,
            env,
            page,
            ctx,
            opts,
            redactor,
            phase: Phase::Steps,
            records: Vec::new(),
            steps: Vec::new(),
            before: None,
            followed_by: Next::Other,
            marks_at_steps: None,
            last_shot: None,
            page_reused: false,
        }
    }

    async fn action(&mut self, act: &super::model::Action) -> Result<ActionStatus, RunError> {
        if let Some(line) = self.opts.from_line {
            let Some(start) = act.steps.iter().position(|s| s.line == line) else {
                let lines: Vec<String> = act.steps.iter().map(|s| s.line.to_string()).collect();
                return Err(RunError {
                    step_file_line: format!("{}:{line}", self.pb.source_file),
                    phase: Phase::Steps,
                    step: format!("--from {line}"),
                    locator: None,
                    url: None,
                    reason: format!(
                        "no step of the action's `steps` starts on line {line}; they start on lines {}",
                        lines.join(", ")
                    ),
                    screenshot: None,
                    screenshot_path: None,
                    kind: RunErrorKind::Playbook,
                    check: false,
                    steps: Vec::new(),
                });
            };
            self.phase = Phase::Steps;
            self.marks_at_steps = Some(self.page.marks());
            self.run_steps(&act.steps[start..], None, Next::Other)
                .await?;
            if let Some(verify) = &act.verify {
                self.phase = Phase::Verify;
                self.run_steps(verify, None, Next::Other).await?;
            }
            return Ok(ActionStatus::Done);
        }
        if let Some(pre) = &act.precondition {
            self.phase = Phase::Precondition;
            // Done, not done, or unknown: only a check that did not match says "not
            // done"; an app that failed to answer has not said the work is missing.
            match self.run_steps(pre, None, Next::Other).await {
                Ok(()) => {
                    self.answer_evidence().await;
                    return Ok(ActionStatus::AlreadyDone);
                }
                Err(e) if e.check => {
                    tracing::debug!(at = %e.step_file_line, "precondition: not done, running the action");
                }
                Err(e) => {
                    if !e.is_crash() && e.kind != RunErrorKind::Playbook {
                        tracing::info!(at = %e.step_file_line, reason = %e.reason,
                            "precondition could not be answered; the action does not run");
                    }
                    return Err(e);
                }
            }
        }
        self.phase = Phase::Steps;
        self.marks_at_steps = Some(self.page.marks());
        self.run_steps(&act.steps, None, Next::Other).await?;
        if let Some(verify) = &act.verify {
            self.phase = Phase::Verify;
            self.run_steps(verify, None, Next::Other).await?;
        }
        Ok(ActionStatus::Done)
    }

    /// Runs `steps`; `then`: what certainly runs after the last of them ([`next_step`]).
    fn run_steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        scope: Option<Locator>,
        then: Next,
    ) -> BoxFuture<'s, Result<(), RunError>> {
        Box::pin(async move {
            for (i, s) in steps.iter().enumerate() {
                self.followed_by = next_step(self.pb, steps, i + 1, then, 0);
                self.step(s, scope.as_ref()).await?;
            }
            Ok(())
        })
    }

    fn timeout(&self, step: &Step) -> Duration {
        step.timeout_or(&self.pb.defaults)
    }

    fn render(&mut self, t: &Template) -> Result<Rendered, Failure> {
        self.env
            .render(t, self.ctx, &mut self.redactor)
            .map_err(|e| Failure::playbook(run_error_message(e), None))
    }

    /// Renders a locator and, inside `for_each`, scopes it to the current row (`row`
    /// is the row itself).
    fn locator(&mut self, l: &LocatorTpl, scope: Option<&Locator>) -> Result<Locator, Failure> {
        let r = self
            .env
            .render(&l.0, self.ctx, &mut self.redactor)
            .map_err(|e| Failure::playbook(run_error_message(e), Some(l.source().to_owned())))?;
        let loc = Locator::parse(&r.text).map_err(|e| {
            Failure::playbook(format!("invalid locator: {e}"), Some(r.text.clone()))
        })?;
        match scope {
            Some(row) => Ok(loc.within(row)),
            None if loc.starts_with_row() => Err(Failure::playbook(
                "`row` is the current row of `for_each`, and this step is not inside one".into(),
                Some(r.text),
            )),
            None => Ok(loc),
        }
    }

    fn want_screenshot(&self, step: &Step) -> bool {
        if let Some(b) = step.screenshot {
            return b;
        }
        match self.pb.defaults.screenshots {
            ScreenshotPolicy::Always => true,
            ScreenshotPolicy::OnFailure => false,
            // A goto or form input certainly followed by a form input leaves its evidence
            // to the last input of the run: that screenshot shows the same page with every
            // value in it (each screenshot costs tens of milliseconds). A goto, click or
            // press certainly followed by another leaves it to the last of them: the page
            // it shows is left at once (the last input's screenshot keeps what was typed).
            // The precondition only looks: its evidence is the page it answered "done" on
            // ([`Exec::action`]). A failing step always takes its own.
            ScreenshotPolicy::OnChange => {
                let goto = matches!(step.kind, StepKind::Goto { .. });
                changes_page(&step.kind)
                    && self.phase != Phase::Precondition
                    && !(self.followed_by == Next::Input && (is_form_input(&step.kind) || goto))
                    && !(self.followed_by == Next::Navigation && navigates(&step.kind))
            }
        }
    }

    /// The evidence of a precondition that found the work done: the page it answered
    /// on, on its last step's record (its steps take none on `on_change`).
    async fn answer_evidence(&mut self) {
        if self.pb.defaults.screenshots != ScreenshotPolicy::OnChange
            || self.steps.last().is_none_or(|r| r.screenshot.is_some())
        {
            return;
        }
        if let Some((hash, _)) = self.screenshot().await
            && let Some(last) = self.steps.last_mut()
        {
            last.screenshot = Some(hash);
        }
    }

    async fn screenshot(&mut self) -> Option<(String, PathBuf)> {
        let store = self.opts.evidence.as_ref()?;
        let t0 = Instant::now();
        let shot = self.page.screenshot().await;
        tracing::debug!(ms = ms(t0), "evidence screenshot");
        match shot {
            Ok(png) => match store.put_png(&png) {
                Ok(h) => {
                    let p = store.path_of(&h);
                    self.last_shot = Some(h.clone());
                    Some((h, p))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not store a screenshot");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "screenshot failed");
                None
            }
        }
    }

    /// Whether the page is `url` as loaded by the action's own steps after their last
    /// input ([`Page::unedited_load`]).
    async fn steps_ended_on(&self, url: &str) -> bool {
        let Some(start) = self.marks_at_steps else {
            return false;
        };
        if self.page.marks() <= start {
            return false;
        }
        match self.page.unedited_load().await {
            Ok(Some(href)) => same_url(&href, url),
            _ => false,
        }
    }

    async fn current_url(&self) -> Option<String> {
        self.page.url().await.ok().map(|u| self.redactor.redact(&u))
    }

    fn push(&mut self, rec: StepRecord) {
        tracing::debug!(
            step = %rec.step, file = %rec.file, line = rec.line, ms = rec.duration_ms,
            outcome = ?rec.outcome, "playbook step"
        );
        if let Some(cb) = &self.opts.on_step {
            cb(&rec);
        }
        self.steps.push(rec);
    }

    async fn ok_record(&mut self, step: &Step, summary: &str, at: DateTime<Utc>, t0: Instant) {
        let screenshot = if std::mem::take(&mut self.page_reused) {
            self.last_shot.clone()
        } else if self.opts.trace
            || self.want_screenshot(step)
            || matches!(step.kind, StepKind::Screenshot { .. })
        {
            self.screenshot().await.map(|(h, _)| h)
        } else {
            None
        };
        let rec = StepRecord {
            at,
            phase: self.phase,
            step: self.redactor.redact(summary),
            file: self.pb.source_file.clone(),
            line: step.line,
            url: self.current_url().await,
            duration_ms: ms(t0),
            screenshot,
            screenshot_before: self.before.take(),
            outcome: StepOutcome::Ok,
        };
        self.push(rec);
    }

    async fn fail(
        &mut self,
        step: &Step,
        summary: &str,
        at: DateTime<Utc>,
        t0: Instant,
        f: Failure,
    ) -> RunError {
        let crashed = f.kind == RunErrorKind::Crashed;
        let check = is_check(step, &f);
        let answer = self.phase.failure_is_answer(check);
        let shot = if crashed || (answer && !self.opts.trace) {
            None
        } else {
            self.screenshot().await
        };
        let url = if crashed {
            None
        } else {
            self.current_url().await
        };
        let reason = self.redactor.redact(&f.reason);
        let summary = self.redactor.redact(summary);
        let before = self.before.take();
        let outcome = if answer {
            StepOutcome::NotMet {
                reason: reason.clone(),
            }
        } else {
            StepOutcome::Failed {
                reason: reason.clone(),
            }
        };
        self.push(StepRecord {
            at,
            phase: self.phase,
            step: summary.clone(),
            file: self.pb.source_file.clone(),
            line: step.line,
            url: url.clone(),
            duration_ms: ms(t0),
            screenshot: shot.as_ref().map(|(h, _)| h.clone()),
            screenshot_before: before,
            outcome,
        });
        RunError {
            step_file_line: format!("{}:{}", self.pb.source_file, step.line),
            phase: self.phase,
            step: summary,
            locator: f.locator.map(|l| self.redactor.redact(&l)),
            url,
            reason,
            screenshot: shot.as_ref().map(|(h, _)| h.clone()),
            screenshot_path: shot.map(|(_, p)| p),
            kind: f.kind,
            check,
            steps: Vec::new(),
        }
    }

    async fn step(&mut self, step: &Step, scope: Option<&Locator>) -> Result<(), RunError> {
        // Nested steps overwrite it: what follows this step, for the end of its branch.
        let then_next = self.followed_by;
        let mut summary = initial_summary(step);
        if let Some(hook) = &self.opts.before_step {
            hook(&StepAhead {
                phase: self.phase,
                step: self.redactor.redact(&summary),
                file: self.pb.source_file.clone(),
                line: step.line,
            })
            .await;
        }
        self.before = if self.opts.trace && changes_page(&step.kind) {
            self.screenshot().await.map(|(h, _)| h)
        } else {
            None
        };
        let at = self.opts.clock.now();
        let t0 = Instant::now();
        match &step.kind {
            StepKind::If { cond, then, else_ } | StepKind::Unless { cond, then, else_ } => {
                let invert = matches!(step.kind, StepKind::Unless { .. });
                let held = match self.condition(cond, scope, &mut summary).await {
                    Ok(v) => v != invert,
                    Err(f) => return Err(self.fail(step, &summary, at, t0, f).await),
                };
                summary.push_str(if held { " → then" } else { " → else" });
                self.ok_record(step, &summary, at, t0).await;
                let branch = if held { then } else { else_ };
                self.run_steps(branch, scope.cloned(), then_next).await
            }
            StepKind::ForEach { rows, steps } => {
                let rows_loc = match self.locator(rows, scope) {
                    Ok(l) => l,
                    Err(f) => return Err(self.fail(step, &summary, at, t0, f).await),
                };
                // The rows found now are remembered as elements: each pass acts on its
                // own row even when a step changes which rows match.
                let (key, n) = match self.page.remember_rows(&rows_loc).await {
                    Ok(found) => found,
                    Err(e) => {
                        let f = Failure::browser(e, Some(&rows_loc));
                        return Err(self.fail(step, &summary, at, t0, f).await);
                    }
                };
                summary = format!(
                    "for_each {rows_loc}: {n} row{}",
                    if n == 1 { "" } else { "s" }
                );
                self.ok_record(step, &summary, at, t0).await;
                let start_outputs = self.ctx.outputs.clone();
                for i in 0..n {
                    // Each row starts from the outputs before the loop.
                    self.ctx.outputs = start_outputs.clone();
                    let row = Locator::row(&rows_loc, &key, i);
                    self.run_steps(steps, Some(row), Next::Other).await?;
                }
                Ok(())
            }
            StepKind::Paginate {
                next,
                max_pages,
                steps,
            } => {
                let next_loc = match self.locator(next, scope) {
                    Ok(l) => l,
                    Err(f) => return Err(self.fail(step, &summary, at, t0, f).await),
                };
                summary = format!("paginate page 1 (next: {next_loc})");
                self.ok_record(step, &summary, at, t0).await;
                for page_no in 1..=*max_pages {
                    self.run_steps(steps, scope.cloned(), Next::Other).await?;
                    let at = self.opts.clock.now();
                    let t0 = Instant::now();
                    let summary = format!("paginate next {next_loc} → page {}", page_no + 1);
                    let more = match self.page.enabled_now(&next_loc).await {
                        Ok(m) => m,
                        Err(e) => {
                            let f = Failure::browser(e, Some(&next_loc));
                            return Err(self.fail(step, &summary, at, t0, f).await);
                        }
                    };
                    if !more {
                        break;
                    }
                    if page_no == *max_pages {
                        tracing::warn!(max_pages, file = %self.pb.source_file, line = step.line,
                            "paginate stopped at max_pages with a next page still there");
                        break;
                    }
                    if let Err(e) = self.page.click(&next_loc, self.timeout(step)).await {
                        let f = Failure::browser(e, Some(&next_loc));
                        return Err(self.fail(step, &summary, at, t0, f).await);
                    }
                    self.ok_record(step, &summary, at, t0).await;
                }
                Ok(())
            }
            StepKind::Call { name } => {
                let Some(sub) = self.pb.subroutines.get(name) else {
                    let f = Failure::playbook(format!("no subroutine `{name}`"), None);
                    return Err(self.fail(step, &summary, at, t0, f).await);
                };
                self.ok_record(step, &summary, at, t0).await;
                self.run_steps(sub, scope.cloned(), then_next).await
            }
            _ => match self.simple(step, scope, &mut summary).await {
                Ok(()) => {
                    self.ok_record(step, &summary, at, t0).await;
                    Ok(())
                }
                Err(f) => Err(self.fail(step, &summary, at, t0, f).await),
            },
        }
    }

    async fn condition(
        &mut self,
        cond: &Condition,
        scope: Option<&Locator>,
        summary: &mut String,
    ) -> Result<bool, Failure> {
        let kw = summary.split(' ').next().unwrap_or("if").to_owned();
        match cond {
            Condition::Exists(l)
            | Condition::NotExists(l)
            | Condition::Visible(l)
            | Condition::Hidden(l) => {
                let loc = self.locator(l, scope)?;
                let (name, visible, not) = match cond {
                    Condition::Exists(_) => ("exists", false, false),
                    Condition::NotExists(_) => ("not_exists", false, true),
                    Condition::Visible(_) => ("visible", true, false),
                    _ => ("hidden", true, true),
                };
                *summary = format!("{kw} {name} {loc}");
                // Every match counts, hidden ones too for exists (the same as
                // `wait_for: attached`); visible looks for any visible one.
                let there = if visible {
                    self.page.visible_now(&loc).await
                } else {
                    self.page.exists_now(&loc).await
                }
                .map_err(|e| Failure::browser(e, Some(&loc)))?;
                Ok(there != not)
            }
            Condition::Value(t) => {
                let r = self.render(t)?;
                *summary = format!("{kw} value {}", shown(&r));
                Ok(r.is_truthy())
            }
        }
    }

    /// Steps that do one thing.
    async fn simple(
        &mut self,
        step: &Step,
        scope: Option<&Locator>,
        summary: &mut String,
    ) -> Result<(), Failure> {
        let t = self.timeout(step);
        let page = self.page;
        let b = |loc: &Locator| {
            let loc = loc.clone();
            move |e: BrowserError| Failure::browser(e, Some(&loc))
        };
        match &step.kind {
            StepKind::Goto { url, allow_status } => {
                let u = self.render(url)?;
                *summary = if u.sensitive {
                    format!("goto {}", super::redact::REDACTED)
                } else {
                    format!("goto {}", u.text)
                };
                // A read-back of the page the steps ended on: when the steps' last input
                // navigated to it and nothing was typed into it since, it already shows
                // what the app served after the change, as loading it again would.
                if self.phase == Phase::Verify && self.steps_ended_on(&u.text).await {
                    summary.push_str(" (already there: the page the steps' last input loaded)");
                    self.page_reused = true;
                    return Ok(());
                }
                page.goto_allowing(&u.text, t, allow_status)
                    .await
                    .map_err(|e| {
                        // A page that does not load in time is the app's doing (hanging,
                        // overloaded), as an error status is: never a refused sign-in.
                        let mut f = Failure::browser(e, None);
                        if f.kind == RunErrorKind::Browser {
                            f.kind = RunErrorKind::App;
                        }
                        f
                    })
            }
            StepKind::Fill {
                into,
                value,
                sensitive,
            } => {
                let loc = self.locator(into, scope)?;
                *summary = format!("fill {loc}");
                let v = self.render(value)?;
                if *sensitive {
                    self.redactor.add(&v.text);
                }
                page.fill(&loc, &v.text, t).await.map_err(b(&loc))
            }
            StepKind::Click { on } => {
                let loc = self.locator(on, scope)?;
                *summary = format!("click {loc}");
                page.click(&loc, t).await.map_err(b(&loc))
            }
            StepKind::Select {
                in_,
                options,
                expand,
            } => {
                let loc = self.locator(in_, scope)?;
                let mut opts = Vec::with_capacity(options.len());
                for o in options {
                    if *expand {
                        let items = self
                            .env
                            .render_options(o, self.ctx, &mut self.redactor)
                            .map_err(|e| Failure::playbook(run_error_message(e), None))?;
                        opts.extend(items);
                    } else {
                        opts.push(self.render(o)?);
                    }
                }
                *summary = format!(
                    "select {loc} = {}",
                    opts.iter().map(shown).collect::<Vec<_>>().join(", ")
                );
                let refs: Vec<&str> = opts.iter().map(|o| o.text.as_str()).collect();
                page.select(&loc, &refs, t).await.map_err(b(&loc))
            }
            StepKind::Check { on } => {
                let loc = self.locator(on, scope)?;
                *summary = format!("check {loc}");
                page.check(&loc, t).await.map_err(b(&loc))
            }
            StepKind::Uncheck { on } => {
                let loc = self.locator(on, scope)?;
                *summary = format!("uncheck {loc}");
                page.uncheck(&loc, t).await.map_err(b(&loc))
            }
            StepKind::Press { key, on } => {
                let loc = match on {
                    Some(l) => Some(self.locator(l, scope)?),
                    None => None,
                };
                *summary = match &loc {
                    Some(l) => format!("press {key} on {l}"),
                    None => format!("press {key}"),
                };
                page.press(loc.as_ref(), key, t)
                    .await
                    .map_err(|e| Failure::browser(e, loc.as_ref()))
            }
            StepKind::Expect(e) => self.expect(e, scope, t, summary).await,
            StepKind::WaitFor { state, on } => {
                let loc = self.locator(on, scope)?;
                let name = match state {
                    WaitState::Visible => "visible",
                    WaitState::Hidden => "hidden",
                    WaitState::Attached => "attached",
                    WaitState::Detached => "detached",
                };
                *summary = format!("wait_for {name} {loc}");
                page.wait_for(&loc, *state, t).await.map_err(b(&loc))
            }
            StepKind::Extract(xs) => {
                *summary = format!(
                    "extract {}",
                    xs.iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for x in xs {
                    let (raw, loc) = match &x.from {
                        ExtractFrom::Url => (
                            page.url().await.map_err(|e| Failure::browser(e, None))?,
                            None,
                        ),
                        from => {
                            let loc = match (&x.locator, scope) {
                                (Some(l), _) => self.locator(l, scope)?,
                                (None, Some(row)) => row.clone(),
                                (None, None) => {
                                    return Err(Failure::playbook(
                                        format!("extract `{}` needs a locator", x.name),
                                        None,
                                    ));
                                }
                            };
                            let v = match from {
                                ExtractFrom::Attribute(name) => page
                                    .attribute(&loc, name, t)
                                    .await
                                    .map_err(b(&loc))?
                                    .ok_or_else(|| {
                                        Failure::failed(
                                            format!(
                                                "extract `{}`: {loc} has no attribute `{name}`",
                                                x.name
                                            ),
                                            Some(loc.source().to_owned()),
                                        )
                                    })?,
                                // `text` gives a form field's value too.
                                _ => page.text(&loc, t).await.map_err(b(&loc))?,
                            };
                            (v, Some(loc))
                        }
                    };
                    let value = match &x.pattern {
                        Some(p) => match p.extract(&raw) {
                            Some(v) => v.to_owned(),
                            None => {
                                return Err(Failure::failed(
                                    format!(
                                        "extract `{}`: pattern `{}` does not match {:?}",
                                        x.name,
                                        p.regex.as_str(),
                                        truncate(&raw, 120)
                                    ),
                                    loc.map(|l| l.source().to_owned()),
                                ));
                            }
                        },
                        None => raw,
                    };
                    self.ctx.outputs.insert(x.name.clone(), value);
                }
                Ok(())
            }
            StepKind::CaptureTotp { from, on } => {
                let loc = self.locator(on, scope)?;
                let kw = match from {
                    TotpSource::Text => "text",
                    TotpSource::Qr => "qr",
                };
                *summary = format!("capture_totp {kw} {loc}");
                let Some(record) = self.opts.on_totp_capture.clone() else {
                    return Err(Failure::playbook(
                        "capture_totp needs Usher's vault to record the secret before the app is asked to confirm it: run enable_mfa with `usher vault enable-mfa`".into(),
                        None,
                    ));
                };
                let unreadable = |e: crate::vault::VaultError| {
                    Failure::failed(
                        format!("capture_totp: {loc} shows no TOTP secret: {e}"),
                        Some(loc.source().to_owned()),
                    )
                };
                let raw = match from {
                    TotpSource::Text => page.text(&loc, t).await.map_err(b(&loc))?,
                    TotpSource::Qr => {
                        let png = page.visible_png(&loc, t).await.map_err(b(&loc))?;
                        crate::vault::otpauth_from_png(&png).map_err(unreadable)?
                    }
                };
                let seed = raw.trim().to_owned();
                // Blanked in every form it may take from here on (as shown, as base32,
                // as the URI's parameter), before anything can print it.
                self.redactor.add(&seed);
                self.redactor.add(&seed_base32(&seed));
                if let Some(param) = otpauth_secret_param(&seed) {
                    self.redactor.add(&param);
                }
                crate::vault::TotpSpec::parse(&seed).map_err(unreadable)?;
                let seed = SecretString::from(seed);
                record(seed.clone()).await.map_err(|m| {
                    Failure::failed(
                        format!("capture_totp: the vault did not record the secret, so it is not confirmed in the app: {m}"),
                        None,
                    )
                })?;
                self.ctx.new_totp = Some(seed);
                Ok(())
            }
            StepKind::AcceptDialog { text } => {
                let policy = match text {
                    Some(t) => DialogPolicy::AcceptWithText(self.render(t)?.text),
                    None => DialogPolicy::Accept,
                };
                page.arm_dialog(policy);
                Ok(())
            }
            StepKind::DismissDialog => {
                page.arm_dialog(DialogPolicy::Dismiss);
                Ok(())
            }
            StepKind::Screenshot { .. } => Ok(()), // taken by the record
            StepKind::Emit { .. } => {
                self.records.push(self.ctx.outputs.clone());
                Ok(())
            }
            StepKind::Set(entries) => {
                for (name, tpl) in entries {
                    let v = self.render(tpl)?;
                    self.ctx.outputs.insert(name.clone(), v.text);
                }
                Ok(())
            }
            StepKind::Fail { message } => {
                let m = self.render(message)?;
                // The rendered message is the reason: the source is not said again.
                *summary = "fail".into();
                Err(Failure::failed(m.text, None))
            }
            StepKind::If { .. }
            | StepKind::Unless { .. }
            | StepKind::ForEach { .. }
            | StepKind::Paginate { .. }
            | StepKind::Call { .. } => Ok(()), // handled in `step`
        }
    }

    async fn expect(
        &mut self,
        e: &Expectation,
        scope: Option<&Locator>,
        t: Duration,
        summary: &mut String,
    ) -> Result<(), Failure> {
        let page = self.page;
        match e {
            Expectation::Visible(l) => {
                let loc = self.locator(l, scope)?;
                *summary = format!("expect visible {loc}");
                page.expect_visible(&loc, t)
                    .await
                    .map_err(|e| Failure::browser(e, Some(&loc)))
            }
            Expectation::Hidden(l) => {
                let loc = self.locator(l, scope)?;
                *summary = format!("expect hidden {loc}");
                page.expect_hidden(&loc, t)
                    .await
                    .map_err(|e| Failure::browser(e, Some(&loc)))
            }
            Expectation::Text { text, in_ } => {
                let r = self.render(text)?;
                // Inside a row, a text without `in` is looked for in the row.
                let loc = match (in_, scope) {
                    (Some(l), _) => Some(self.locator(l, scope)?),
                    (None, Some(row)) => Some(row.clone()),
                    (None, None) => None,
                };
                *summary = match &loc {
                    Some(l) => format!("expect text {} in {l}", shown(&r)),
                    None => format!("expect text {}", shown(&r)),
                };
                page.expect_text(loc.as_ref(), &r.text, t)
                    .await
                    .map_err(|e| Failure::browser(e, loc.as_ref()))
            }
            Expectation::Url(p) => {
                *summary = format!("expect url /{}/", p.regex.as_str());
                page.expect_url(p.regex.as_str(), t)
                    .await
                    .map_err(|e| Failure::browser(e, None))
            }
        }
    }
}

/// A base32 key as an authenticator reads it: no spaces, dashes or padding, upper case.
fn seed_base32(seed: &str) -> String {
    seed.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '='))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The `secret` parameter of an `otpauth://` URI.
fn otpauth_secret_param(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("secret=")
                .or_else(|| kv.strip_prefix("SECRET="))
        })
        .map(str::to_owned)
}

/// Two URLs that name the same page once parsed (`http://h:80/a` and `http://h/a`).
fn same_url(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Steps that change what the page shows (screenshots on `on_change`, and before and
/// after in a trace): form inputs, and goto, click, press.
fn changes_page(kind: &StepKind) -> bool {
    is_form_input(kind) || navigates(kind)
}

/// Steps that may load another page: goto, click, press.
fn navigates(kind: &StepKind) -> bool {
    matches!(
        kind,
        StepKind::Goto { .. } | StepKind::Click { .. } | StepKind::Press { .. }
    )
}

/// What certainly runs next, for the evidence policy ([`next_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// A form input (fill, select, check, uncheck).
    Input,
    /// A goto, click or press: the page changes again at once.
    Navigation,
    /// Anything else, or not known.
    Other,
}

/// What the step run after `steps[..from]` certainly is: the next step (past `set`s,
/// which only compute), or what both branches of an `if`/`unless` start with, or what a
/// called subroutine starts with; `after` answers for the end of the list. Where it
/// cannot be sure, [`Next::Other`] (the screenshot is taken).
pub(super) fn next_step(
    pb: &Playbook,
    steps: &[Step],
    from: usize,
    after: Next,
    depth: u8,
) -> Next {
    if depth > 8 {
        return Next::Other;
    }
    for s in steps.iter().skip(from) {
        match &s.kind {
            StepKind::Set(_) => {}
            k if is_form_input(k) => return Next::Input,
            k if navigates(k) => return Next::Navigation,
            StepKind::If { then, else_, .. } | StepKind::Unless { then, else_, .. } => {
                let a = next_step(pb, then, 0, Next::Other, depth + 1);
                let b = next_step(pb, else_, 0, Next::Other, depth + 1);
                return if a == b { a } else { Next::Other };
            }
            StepKind::Call { name } => {
                return pb.subroutines.get(name).map_or(Next::Other, |sub| {
                    next_step(pb, sub, 0, Next::Other, depth + 1)
                });
            }
            _ => return Next::Other,
        }
    }
    after
}

/// Steps that type into or choose in a form without submitting it.
fn is_form_input(kind: &StepKind) -> bool {
    matches!(
        kind,
        StepKind::Fill { .. }
            | StepKind::Select { .. }
            | StepKind::Check { .. }
            | StepKind::Uncheck { .. }
    )
}

/// The step before anything is rendered: keyword and its source argument.
fn initial_summary(step: &Step) -> String {
    let kw = step.kind.keyword();
    match &step.kind {
        StepKind::Goto { url, .. } => format!("{kw} {}", url.source),
        StepKind::Fill { into: l, .. }
        | StepKind::Click { on: l }
        | StepKind::Check { on: l }
        | StepKind::Uncheck { on: l }
        | StepKind::Select { in_: l, .. }
        | StepKind::WaitFor { on: l, .. }
        | StepKind::ForEach { rows: l, .. } => format!("{kw} {}", l.source()),
        StepKind::Call { name } | StepKind::Emit { name } => format!("{kw} {name}"),
        StepKind::Screenshot { name: Some(n) } => format!("{kw} {n}"),
        StepKind::Set(entries) => format!(
            "{kw} {}",
            entries
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        StepKind::Fail { message } => format!("{kw} {}", message.source),
        _ => kw.to_owned(),
    }
}

/// A rendered value as it may be shown: quoted, or `[REDACTED]`.
fn shown(r: &Rendered) -> String {
    if r.sensitive {
        super::redact::REDACTED.to_owned()
    } else {
        format!("{:?}", truncate(&r.text, 120))
    }
}

fn run_error_message(e: RenderError) -> String {
    match e {
        RenderError::Template { message, .. } => format!("template: {message}"),
        RenderError::Locator { message, .. } => format!("locator: {message}"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(phase: Phase, reason: &str, url: Option<&str>) -> RunError {
        RunError {
            step_file_line: "playbooks/acme.yaml:42".into(),
            phase,
            step: "click text=Send invite".into(),
            locator: Some("text=Send invite".into()),
            url: url.map(str::to_owned),
            reason: reason.into(),
            screenshot: None,
            screenshot_path: None,
            kind: RunErrorKind::Browser,
            check: false,
            steps: Vec::new(),
        }
    }

    #[test]
    fn run_error_display_is_one_line_with_position_step_and_url() {
        let e = err(
            Phase::Steps,
            "timed out after 15s waiting for text=Send invite to be visible at http://x/new: 0 matches",
            Some("http://x/new"),
        );
        assert_eq!(
            e.to_string(),
            "playbooks/acme.yaml:42: click text=Send invite: timed out after 15s waiting for text=Send invite to be visible at http://x/new: 0 matches"
        );
        let e = err(Phase::Verify, "boom", Some("http://x/y"));
        assert_eq!(
            e.to_string(),
            "playbooks/acme.yaml:42: verify failed: click text=Send invite: boom (at http://x/y)"
        );
    }

    #[test]
    fn summaries_hide_sensitive_values() {
        let r = Rendered {
            text: "hunter2".into(),
            sensitive: true,
        };
        assert_eq!(shown(&r), "[REDACTED]");
        let r = Rendered {
            text: "Editor".into(),
            sensitive: false,
        };
        assert_eq!(shown(&r), "\"Editor\"");
    }
}
