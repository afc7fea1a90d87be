//! Page operations: auto-waiting actions and assertions, navigation, dialogs, screenshots.
//!
//! Every locator operation polls (every 10 ms at first, backing off to 50 ms) the injected helper
//! `window.__usher.probe`, which resolves the locator and reports the element's state in one
//! round trip, until the operation's conditions hold or its timeout expires.
//!
//! Navigation detection after `click`/`press`: before the input is dispatched the current
//! document is marked (`window.__usherDocMark = <token>`) and the helper's `beforeunload`/
//! `pagehide` listeners reset a flag. After the input, the page is polled: if the mark is
//! gone, a new document replaced the old one and we wait for `readyState == "complete"`
//! (and fail on HTTP >= 500); if the old document reports it is unloading we keep waiting
//! for the new one; a trusted click on a link or a form submission that no handler
//! prevented is a navigation on its way (waited for to start for up to 1.5 s); if none of
//! this happens within a 40 ms settle window the action did not navigate and we return.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, CaptureScreenshotFormat, CaptureScreenshotParams,
    EventJavascriptDialogOpening, HandleJavaScriptDialogParams, NavigateParams,
};
use chromiumoxide::cdp::browser_protocol::target::TargetId;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::error::BrowserError;
use super::launch::Shared;
use super::locator::Locator;

const HELPER_JS: &str = include_str!("inject.js");
const POLL: Duration = Duration::from_millis(50);

/// How long to wait before looking again, `started` being when the wait began: often at
/// first (most waits end within a few frames: a page loaded, an element rendered), then
/// every 25 ms, then every [`POLL`] (each look is a round trip into the page).
fn pace(started: Instant) -> Duration {
    match started.elapsed().as_millis() {
        0..150 => Duration::from_millis(10),
        150..1000 => Duration::from_millis(25),
        _ => POLL,
    }
}
/// After an input, how long a document that shows no sign of navigating is watched for
/// one starting (a script's `location` change, a `form.submit()` run in a task of its
/// own) before the input counts as not navigating.
const NAV_SETTLE: Duration = Duration::from_millis(40);
/// After a link followed or a form submitted that no handler prevented, how long a
/// navigation is waited for to start (`beforeunload`) before the input counts as not
/// navigating after all (a 204 answer, a download).
const INTENT_SETTLE: Duration = Duration::from_millis(1500);

/// What to do with the next JavaScript dialog (`alert`/`confirm`/`prompt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogPolicy {
    Accept,
    Dismiss,
    /// Accept a `prompt()` with this text.
    AcceptWithText(String),
}

/// States for [`Page::wait_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    /// At least one match in the DOM.
    Attached,
    /// No match in the DOM.
    Detached,
    /// At least one visible match.
    Visible,
    /// No visible match (none at all, or all hidden).
    Hidden,
}

#[derive(Default)]
struct DialogState {
    armed: Mutex<Option<DialogPolicy>>,
    last: Mutex<Option<String>>,
}

/// The page of a [`super::BrowserContext`].
pub struct Page {
    shared: Arc<Shared>,
    page: chromiumoxide::Page,
    dialogs: Arc<DialogState>,
    dialog_task: JoinHandle<()>,
    seq: AtomicU64,
    /// Inputs that may navigate (goto, click, press) made in this page: each marks the
    /// document it starts from ([`Page::unedited_load`]).
    marks: AtomicU64,
    /// A fill, select, check or script ran since the document was last marked.
    edited: AtomicBool,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("target", &self.page.target_id().inner())
            .finish()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.dialog_task.abort();
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn center(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Probe {
    count: usize,
    visible_count: usize,
    url: String,
    error: Option<String>,
    texts: Option<Vec<String>>,
    any_text: Option<bool>,
    visible: bool,
    enabled: bool,
    editable: bool,
    checked: Option<bool>,
    text: Option<String>,
    attr: Option<String>,
    hover_box: Option<Rect>,
    label_box: Option<Rect>,
    stable: Option<bool>,
    #[serde(rename = "box")]
    bbox: Option<Rect>,
    covered: Option<String>,
}

type ProbeCheck = fn(&Probe) -> Result<(), String>;

/// Conditions an action waits for.
#[derive(Clone, Copy, Default)]
struct Need {
    strict: bool,
    visible: bool,
    enabled: bool,
    editable: bool,
    stable: bool,
    hit: bool,
    /// Move the mouse over the nearest visible ancestor of a hidden match (hover menus).
    reveal: bool,
}

impl Need {
    fn click() -> Need {
        Need {
            strict: true,
            visible: true,
            enabled: true,
            stable: true,
            hit: true,
            reveal: true,
            ..Need::default()
        }
    }
}

fn matches_word(n: usize) -> String {
    if n == 1 {
        "1 match".to_string()
    } else {
        format!("{n} matches")
    }
}

/// Why a probe does not satisfy `need` (the "seen" of a timeout), or None when it does.
fn unmet(p: &Probe, need: &Need) -> Option<String> {
    if p.count == 0 {
        return Some("0 matches".to_string());
    }
    if need.strict && p.count > 1 {
        return Some(format!("{} matches", p.count));
    }
    let m = matches_word(p.count);
    if need.visible && !p.visible {
        return Some(format!("{m}, hidden"));
    }
    if need.enabled && !p.enabled {
        return Some(format!("{m}, disabled"));
    }
    if need.editable && !p.editable {
        return Some(format!("{m}, not editable"));
    }
    if need.stable && p.stable != Some(true) {
        return Some(format!("{m}, still moving"));
    }
    if need.hit
        && let Some(c) = &p.covered
    {
        return Some(format!("{m}, {c}"));
    }
    None
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let t: String = s.chars().take(max).collect();
        format!("{t}…")
    }
}

/// True when `to` differs from `from` only in a fragment that `to` has.
fn same_document(from: &str, to: &str) -> bool {
    let base = |u: &str| u.split('#').next().unwrap_or("").to_string();
    to.contains('#') && base(from) == base(to) && !from.starts_with("about:")
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Outcome of one evaluation inside a polling loop.
enum Eval {
    Value(Value),
    /// Page is between documents, helper missing, or a call failed without killing the browser.
    Transient(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NavState {
    same: bool,
    unloading: bool,
    /// A link was followed or a form submitted, not prevented ([`INTENT_SETTLE`]).
    #[serde(default)]
    intent: bool,
    ready: String,
    url: String,
    status: u16,
}

impl Page {
    pub(super) async fn init(
        shared: Arc<Shared>,
        page: chromiumoxide::Page,
    ) -> Result<Page, BrowserError> {
        let t = shared.cdp_timeout;
        let mut events = shared
            .guard(
                "Page.javascriptDialogOpening listener",
                t,
                page.event_listener::<EventJavascriptDialogOpening>(),
            )
            .await?;
        let dialogs = Arc::new(DialogState::default());
        let dpage = page.clone();
        let dstate = dialogs.clone();
        let dialog_task = tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                let kind = ev.r#type.as_ref().to_string();
                let armed = dstate.armed.lock().ok().and_then(|mut a| a.take());
                if let Ok(mut last) = dstate.last.lock() {
                    *last = Some(ev.message.clone());
                }
                let policy = match armed {
                    Some(p) => p,
                    None if kind == "beforeunload" => DialogPolicy::Accept,
                    None => {
                        tracing::warn!(
                            kind = %kind,
                            message = %truncate(&ev.message, 200),
                            "unexpected JavaScript dialog dismissed (arm_dialog was not called)"
                        );
                        DialogPolicy::Dismiss
                    }
                };
                let mut params =
                    HandleJavaScriptDialogParams::new(!matches!(policy, DialogPolicy::Dismiss));
                if let DialogPolicy::AcceptWithText(text) = &policy {
                    params.prompt_text = Some(text.clone());
                }
                tracing::debug!(kind = %kind, ?policy, "handling JavaScript dialog");
                if let Err(e) = tokio::time::timeout(t, dpage.execute(params)).await {
                    tracing::debug!(error = %e, "Page.handleJavaScriptDialog timed out");
                }
            }
        });
        let this = Page {
            shared,
            page,
            dialogs,
            dialog_task,
            seq: AtomicU64::new(1),
            marks: AtomicU64::new(0),
            edited: AtomicBool::new(false),
        };
        this.call(
            "Page.addScriptToEvaluateOnNewDocument",
            AddScriptToEvaluateOnNewDocumentParams::new(HELPER_JS),
        )
        .await?;
        this.install_helper().await?;
        Ok(this)
    }

    pub(super) fn target_id(&self) -> TargetId {
        self.page.target_id().clone()
    }

    pub(super) fn shutdown(&self) {
        self.dialog_task.abort();
    }

    async fn call<T: chromiumoxide::types::Command>(
        &self,
        name: &str,
        cmd: T,
    ) -> Result<T::Response, BrowserError> {
        self.call_within(name, self.shared.cdp_timeout, cmd).await
    }

    async fn call_within<T: chromiumoxide::types::Command>(
        &self,
        name: &str,
        timeout: Duration,
        cmd: T,
    ) -> Result<T::Response, BrowserError> {
        let resp = self
            .shared
            .guard(name, timeout, self.page.execute(cmd))
            .await?;
        Ok(resp.result)
    }

    async fn install_helper(&self) -> Result<(), BrowserError> {
        match self
            .eval_raw(HELPER_JS, false, self.shared.cdp_timeout)
            .await?
        {
            Eval::Value(_) => Ok(()),
            Eval::Transient(m) => Err(BrowserError::Script(m)),
        }
    }

    /// Runtime.evaluate in the main frame; JS exceptions and CDP errors are `Transient`.
    async fn eval_raw(
        &self,
        expr: &str,
        await_promise: bool,
        timeout: Duration,
    ) -> Result<Eval, BrowserError> {
        let mut p = EvaluateParams::new(expr);
        p.return_by_value = Some(true);
        p.await_promise = Some(await_promise);
        match self.call_within("Runtime.evaluate", timeout, p).await {
            Ok(r) => {
                if let Some(ed) = r.exception_details {
                    let msg = ed.exception.and_then(|e| e.description).unwrap_or(ed.text);
                    return Ok(Eval::Transient(truncate(&msg, 300)));
                }
                Ok(Eval::Value(r.result.value.unwrap_or(Value::Null)))
            }
            Err(e @ (BrowserError::Crashed(_) | BrowserError::Closed)) => Err(e),
            Err(e) => Ok(Eval::Transient(e.to_string())),
        }
    }

    /// Evaluates an expression that needs the helper; reinstalls it once if missing.
    async fn eval_helper(
        &self,
        expr: &str,
        await_promise: bool,
        timeout: Duration,
    ) -> Result<Eval, BrowserError> {
        let wrapped = format!("window.__usher ? ({expr}) : '__usher_missing__'");
        let r = self.eval_raw(&wrapped, await_promise, timeout).await?;
        if let Eval::Value(Value::String(s)) = &r
            && s == "__usher_missing__"
        {
            if let Eval::Transient(m) = self.eval_raw(HELPER_JS, false, timeout).await? {
                return Ok(Eval::Transient(m));
            }
            return self.eval_raw(&wrapped, await_promise, timeout).await;
        }
        Ok(r)
    }

    fn per_call(&self, deadline: Instant) -> Duration {
        let left = deadline.saturating_duration_since(Instant::now());
        left.max(Duration::from_millis(500))
            .min(self.shared.cdp_timeout)
    }

    async fn probe(
        &self,
        loc: &Locator,
        opts: Value,
        deadline: Instant,
    ) -> Result<Result<Probe, String>, BrowserError> {
        let expr = format!("window.__usher.probe({}, {})", loc.to_json(), opts);
        match self
            .eval_helper(&expr, true, self.per_call(deadline))
            .await?
        {
            Eval::Value(v) => {
                let p: Probe = serde_json::from_value(v)
                    .map_err(|e| BrowserError::Script(format!("unexpected helper answer: {e}")))?;
                if let Some(err) = p.error {
                    return Err(BrowserError::InvalidSelector {
                        locator: loc.to_string(),
                        message: err,
                    });
                }
                Ok(Ok(p))
            }
            Eval::Transient(m) => Ok(Err(format!("page not ready ({})", truncate(&m, 120)))),
        }
    }

    async fn current_url(&self) -> String {
        match self
            .eval_raw("location.href", false, Duration::from_secs(1))
            .await
        {
            Ok(Eval::Value(Value::String(s))) => s,
            _ => match self.page.url().await {
                Ok(Some(u)) => u,
                _ => "(unknown url)".to_string(),
            },
        }
    }

    async fn timeout_error(
        &self,
        action: &str,
        loc: Option<&Locator>,
        seen: String,
        after: Duration,
    ) -> BrowserError {
        BrowserError::Timeout {
            action: action.to_string(),
            locator: loc.map(|l| l.to_string()),
            url: self.current_url().await,
            seen,
            after,
        }
    }

    async fn move_mouse(&self, x: f64, y: f64) -> Result<(), BrowserError> {
        self.call(
            "Input.dispatchMouseEvent",
            DispatchMouseEventParams::new(DispatchMouseEventType::MouseMoved, x, y),
        )
        .await?;
        Ok(())
    }

    /// Polls until `need` holds; returns the last probe.
    async fn wait_need(
        &self,
        loc: &Locator,
        need: Need,
        action: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Probe, BrowserError> {
        let opts = serde_json::json!({
            "strict": need.strict,
            "stable": need.stable,
            "scroll": need.hit || need.stable,
            "hit": need.hit,
        });
        let mut seen;
        let started = Instant::now();
        loop {
            match self.probe(loc, opts.clone(), deadline).await? {
                Ok(p) => match unmet(&p, &need) {
                    None => return Ok(p),
                    Some(s) => {
                        seen = s;
                        if need.reveal
                            && !p.visible
                            && let Some(r) = p.hover_box
                        {
                            let (x, y) = r.center();
                            self.move_mouse(x, y).await?;
                        }
                        if p.stable == Some(false) && Instant::now() < deadline {
                            continue; // the probe already spent two frames
                        }
                    }
                },
                Err(s) => seen = s,
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self.timeout_error(action, Some(loc), seen, timeout).await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    // ---------------------------------------------------------------- navigation

    fn next_token(&self) -> String {
        format!("usher-{}", self.seq.fetch_add(1, Ordering::SeqCst))
    }

    async fn mark_document(&self, token: &str) -> Result<(), BrowserError> {
        self.marks.fetch_add(1, Ordering::SeqCst);
        self.edited.store(false, Ordering::SeqCst);
        let expr = format!(
            "(() => {{ window.__usherDocMark = {t}; if (window.__usher) {{ window.__usher.unloading = false; window.__usher.intent = null; }} return true; }})()",
            t = js_str(token)
        );
        self.eval_raw(&expr, false, self.shared.cdp_timeout)
            .await
            .map(|_| ())
    }

    async fn nav_state(
        &self,
        token: &str,
        deadline: Instant,
    ) -> Result<Option<NavState>, BrowserError> {
        let expr = format!(
            "(() => {{ const n = performance.getEntriesByType('navigation')[0]; const u = window.__usher; return {{ same: window.__usherDocMark === {t}, unloading: !!(u && u.unloading), intent: !!(u && u.navIntent && u.navIntent()), ready: document.readyState, url: location.href, status: (n && n.responseStatus) || 0 }}; }})()",
            t = js_str(token)
        );
        match self.eval_raw(&expr, false, self.per_call(deadline)).await? {
            Eval::Value(v) => Ok(serde_json::from_value(v).ok()),
            Eval::Transient(_) => Ok(None),
        }
    }

    /// After an input that may navigate: wait for the new document (see module docs).
    async fn settle(
        &self,
        token: &str,
        action: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(), BrowserError> {
        let settle_until = Instant::now() + NAV_SETTLE;
        let intent_until = Instant::now() + INTENT_SETTLE;
        // Give a navigation request at least a few seconds even when the action's own
        // deadline is nearly used up by waiting for the element.
        let deadline = deadline.max(Instant::now() + Duration::from_secs(3));
        let mut seen = "navigation pending".to_string();
        let started = Instant::now();
        loop {
            match self.nav_state(token, deadline).await? {
                Some(st) if !st.same => {
                    if st.ready == "complete" {
                        if st.status >= 500 {
                            return Err(BrowserError::Navigation {
                                url: st.url,
                                status: Some(st.status),
                                reason: format!("HTTP {}", st.status),
                            });
                        }
                        return Ok(());
                    }
                    seen = format!("new document still {}", st.ready);
                }
                Some(st) => {
                    let now = Instant::now();
                    if st.unloading {
                        seen = "old document unloading, new one not committed".to_string();
                    } else if st.intent {
                        if now >= intent_until {
                            return Ok(());
                        }
                        seen = "a link followed or a form submitted, no navigation started".into();
                    } else if now >= settle_until {
                        return Ok(());
                    }
                }
                None => seen = "between documents".to_string(),
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self.timeout_error(action, None, seen, timeout).await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Navigates and waits for the load event (`readyState == "complete"`).
    /// Network errors and HTTP status >= 500 give `BrowserError::Navigation`.
    pub async fn goto(&self, url: &str, timeout: Duration) -> Result<(), BrowserError> {
        self.goto_allowing(url, timeout, &[]).await
    }

    /// [`Page::goto`], with HTTP statuses of 500 and more in `allow` loading like any page.
    pub async fn goto_allowing(
        &self,
        url: &str,
        timeout: Duration,
        allow: &[u16],
    ) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        // A fragment-only change (single-page app routes like `/#/users/42`) is a
        // same-document navigation; Page.navigate may never answer for those with this
        // Chromium, so let the page change its own location (firing `hashchange`).
        if let Ok(current) = self.url().await
            && same_document(&current, url)
        {
            let expr = format!("location.assign({}); true", js_str(url));
            self.eval_raw(&expr, false, timeout.min(self.shared.cdp_timeout))
                .await?;
            return Ok(());
        }
        let token = self.next_token();
        self.mark_document(&token).await?;
        let nav = NavigateParams::new(url);
        let res = match self
            .shared
            .guard("Page.navigate", timeout, self.page.execute(nav))
            .await
        {
            Ok(r) => r.result,
            Err(BrowserError::Cdp { message, .. }) if message.starts_with("no answer") => {
                return Err(self
                    .timeout_error(
                        "navigation to start (goto)",
                        None,
                        format!("Page.navigate to {url} did not answer"),
                        timeout,
                    )
                    .await);
            }
            Err(e) => return Err(e),
        };
        if let Some(err) = res.error_text.filter(|e| !e.is_empty()) {
            return Err(BrowserError::Navigation {
                url: url.to_string(),
                status: None,
                reason: err,
            });
        }
        if res.loader_id.is_none() {
            return Ok(()); // same-document navigation (fragment)
        }
        let mut seen;
        let started = Instant::now();
        loop {
            match self.nav_state(&token, deadline).await? {
                Some(st) if !st.same && st.ready == "complete" => {
                    if st.status >= 500 && !allow.contains(&st.status) {
                        return Err(BrowserError::Navigation {
                            url: url.to_string(),
                            status: Some(st.status),
                            reason: format!("HTTP {}", st.status),
                        });
                    }
                    return Ok(());
                }
                Some(st) if !st.same => seen = format!("document still {}", st.ready),
                Some(_) => seen = "old document still shown".to_string(),
                None => seen = "between documents".to_string(),
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self
                    .timeout_error(&format!("{url} to load (goto)"), None, seen, timeout)
                    .await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// The DevTools front-end URL that inspects this page (Chromium serves it on its
    /// debugging port), for an author who keeps the browser open.
    pub async fn devtools_url(&self) -> Option<String> {
        let guard = self.shared.cb.read().await;
        let ws = guard.as_ref()?.websocket_address().clone();
        // ws://127.0.0.1:PORT/devtools/browser/ID
        let host = ws.strip_prefix("ws://")?.split('/').next()?.to_owned();
        Some(format!(
            "http://{host}/devtools/inspector.html?ws={host}/devtools/page/{}",
            self.page.target_id().inner()
        ))
    }

    /// How many gotos, clicks and presses this page has made: compared before and
    /// after some steps, whether they made one.
    pub fn marks(&self) -> u64 {
        self.marks.load(Ordering::SeqCst)
    }

    /// The URL of the current document if it was loaded (completely) after the last goto,
    /// click or press, and nothing was filled, selected, checked or scripted since: then
    /// the page shows what the app served after the last input, and loading it again
    /// would show the same. None otherwise (a click that did not navigate, a form edited
    /// since, a same-document route change, a page still loading).
    pub async fn unedited_load(&self) -> Result<Option<String>, BrowserError> {
        if self.edited.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let expr = "(window.__usherDocMark === undefined && document.readyState === 'complete') ? location.href : null";
        match self.eval_raw(expr, false, self.shared.cdp_timeout).await? {
            Eval::Value(Value::String(href)) if !self.edited.load(Ordering::SeqCst) => {
                Ok(Some(href))
            }
            _ => Ok(None),
        }
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String, BrowserError> {
        match self
            .eval_raw("location.href", false, self.shared.cdp_timeout)
            .await?
        {
            Eval::Value(Value::String(s)) => Ok(s),
            _ => self
                .shared
                .guard(
                    "Target.getTargetInfo",
                    self.shared.cdp_timeout,
                    self.page.url(),
                )
                .await
                .map(|u| u.unwrap_or_default()),
        }
    }

    // ---------------------------------------------------------------- actions

    async fn mouse_click_at(&self, x: f64, y: f64) -> Result<(), BrowserError> {
        self.move_mouse(x, y).await?;
        for kind in [
            DispatchMouseEventType::MousePressed,
            DispatchMouseEventType::MouseReleased,
        ] {
            let mut p = DispatchMouseEventParams::new(kind, x, y);
            p.button = Some(MouseButton::Left);
            p.click_count = Some(1);
            p.buttons = Some(1);
            self.call("Input.dispatchMouseEvent", p).await?;
        }
        Ok(())
    }

    /// Clicks the centre of the element with real mouse events (after hovering it). Waits
    /// until it is visible, enabled, stable and not covered. If the click navigates, waits
    /// for the new document to be complete.
    pub async fn click(&self, loc: &Locator, timeout: Duration) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        let action = "to be visible, enabled, stable and clickable (click)";
        let token = loop {
            let p = self
                .wait_need(loc, Need::click(), action, timeout, deadline)
                .await?;
            let (x, y) = p.bbox.unwrap_or_default().center();
            let token = self.next_token();
            self.mark_document(&token).await?;
            let armed = matches!(
                self.eval_helper("window.__usher.armClick()", false, self.per_call(deadline))
                    .await?,
                Eval::Value(Value::Bool(true))
            );
            self.mouse_click_at(x, y).await?;
            if !armed {
                break token;
            }
            // A document that navigated away took the guard with it: the click landed.
            let missed = match self
                .eval_raw(
                    "window.__usher ? window.__usher.disarmClick() : null",
                    false,
                    self.per_call(deadline),
                )
                .await?
            {
                Eval::Value(Value::String(m)) => Some(m),
                _ => None,
            };
            match missed {
                None => break token,
                // The element moved or the page re-rendered after the probe; the click
                // was swallowed, so nothing happened: find the element again.
                Some(m) if Instant::now() + POLL < deadline => {
                    tracing::debug!(locator = %loc, "{m}; clicking again");
                    tokio::time::sleep(POLL).await;
                }
                Some(m) => {
                    return Err(self
                        .timeout_error(action, Some(loc), format!("1 match, but {m}"), timeout)
                        .await);
                }
            }
        };
        self.settle(
            &token,
            "navigation after click to finish",
            timeout,
            deadline,
        )
        .await
    }

    /// Moves the mouse over the element.
    pub async fn hover(&self, loc: &Locator, timeout: Duration) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        let need = Need {
            enabled: false,
            ..Need::click()
        };
        let p = self
            .wait_need(
                loc,
                need,
                "to be visible and stable (hover)",
                timeout,
                deadline,
            )
            .await?;
        let (x, y) = p.bbox.unwrap_or_default().center();
        self.move_mouse(x, y).await
    }

    async fn act(
        &self,
        op: &str,
        arg: Value,
        deadline: Instant,
    ) -> Result<Option<Value>, BrowserError> {
        let expr = format!("window.__usher.act({}, {})", js_str(op), arg);
        match self
            .eval_helper(&expr, false, self.per_call(deadline))
            .await?
        {
            Eval::Value(v) => {
                if v.get("error").and_then(|e| e.as_str()) == Some("detached") {
                    return Ok(None);
                }
                Ok(Some(v))
            }
            Eval::Transient(_) => Ok(None),
        }
    }

    /// Replaces the field's content with `value` (focus, clear, one `Input.insertText`,
    /// then `change`). On the first box of a group of one-character inputs (split TOTP
    /// fields) a longer value is spread one character per box. The value never appears in
    /// errors or logs.
    pub async fn fill(
        &self,
        loc: &Locator,
        value: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.edited.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        // Not `stable`: the text goes to the focused element wherever it is drawn (a
        // field of a dialog still sliding in takes it as well), and waiting two frames
        // per field was most of a form's time.
        let action = "to be visible, enabled and editable (fill)";
        let need = Need {
            strict: true,
            visible: true,
            enabled: true,
            editable: true,
            ..Need::default()
        };
        let chars: Vec<char> = value.chars().collect();
        loop {
            self.wait_need(loc, need, action, timeout, deadline).await?;
            let Some(plan) = self
                .act("prepareFill", Value::from(chars.len()), deadline)
                .await?
            else {
                continue; // re-rendered in between: probe again
            };
            let split = plan.get("split").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            if split > 0 {
                let mut ok = true;
                for (i, c) in chars.iter().enumerate().take(split) {
                    if self
                        .act("focusGroup", Value::from(i), deadline)
                        .await?
                        .is_none()
                    {
                        ok = false;
                        break;
                    }
                    self.call("Input.insertText", InsertTextParams::new(c.to_string()))
                        .await?;
                }
                if !ok {
                    continue;
                }
            } else {
                if plan.get("focused").and_then(|v| v.as_bool()) != Some(true) {
                    return Err(BrowserError::Action {
                        action: "fill".into(),
                        locator: loc.to_string(),
                        reason: "the element did not take focus".into(),
                    });
                }
                if !value.is_empty() {
                    self.call("Input.insertText", InsertTextParams::new(value))
                        .await?;
                }
            }
            self.act("finishFill", Value::Null, deadline).await?;
            return Ok(());
        }
    }

    /// Selects options of a `<select>` by value or label (several for a multi-select;
    /// options not listed are deselected).
    pub async fn select(
        &self,
        loc: &Locator,
        options: &[&str],
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.edited.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let action = "to be visible and enabled with the options (select)";
        let need = Need {
            strict: true,
            visible: true,
            enabled: true,
            ..Need::default()
        };
        let started = Instant::now();
        loop {
            let seen = match self.wait_need(loc, need, action, timeout, deadline).await {
                Ok(_) => match self
                    .act("select", serde_json::json!(options), deadline)
                    .await?
                {
                    None => "1 match, re-rendered".to_string(),
                    Some(v) => {
                        if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
                            return Err(BrowserError::Action {
                                action: "select".into(),
                                locator: loc.to_string(),
                                reason: err.to_string(),
                            });
                        }
                        if let Some(m) = v.get("missing").and_then(|e| e.as_str()) {
                            format!("1 match, no option {}", js_str(m))
                        } else {
                            return Ok(());
                        }
                    }
                },
                Err(e) => return Err(e),
            };
            if Instant::now() + pace(started) > deadline {
                return Err(self.timeout_error(action, Some(loc), seen, timeout).await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Checks a checkbox, radio button or ARIA checkbox/switch (no-op when already checked).
    pub async fn check(&self, loc: &Locator, timeout: Duration) -> Result<(), BrowserError> {
        self.set_checked(loc, true, timeout).await
    }

    /// Unchecks a checkbox or ARIA checkbox/switch (no-op when already unchecked).
    pub async fn uncheck(&self, loc: &Locator, timeout: Duration) -> Result<(), BrowserError> {
        self.set_checked(loc, false, timeout).await
    }

    async fn set_checked(
        &self,
        loc: &Locator,
        want: bool,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.edited.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let verb = if want { "check" } else { "uncheck" };
        let action = format!("to be visible, enabled and stable ({verb})");
        let opts = serde_json::json!({"strict": true, "stable": true, "scroll": true, "hit": true});
        let mut clicked = false;
        let mut seen;
        let started = Instant::now();
        loop {
            match self.probe(loc, opts.clone(), deadline).await? {
                Ok(p) => {
                    if p.count == 1 && p.checked == Some(want) {
                        return Ok(());
                    }
                    if p.count == 1 && p.checked.is_none() {
                        return Err(BrowserError::Action {
                            action: verb.into(),
                            locator: loc.to_string(),
                            reason: "not a checkbox, radio button or switch".into(),
                        });
                    }
                    // a hidden native input behind a visible label: click the label
                    let target = if p.count == 1 && !p.visible && p.enabled {
                        p.label_box
                    } else {
                        None
                    };
                    seen = unmet(&p, &Need::click()).unwrap_or_default();
                    let click_at = match (target, unmet(&p, &Need::click())) {
                        (Some(r), _) => Some(r.center()),
                        (None, None) => p.bbox.map(|b| b.center()),
                        _ => None,
                    };
                    if let Some((x, y)) = click_at
                        && !clicked
                    {
                        self.mouse_click_at(x, y).await?;
                        clicked = true;
                        continue;
                    }
                    if clicked {
                        seen = format!(
                            "1 match, still {}",
                            if want { "unchecked" } else { "checked" }
                        );
                    }
                }
                Err(s) => seen = s,
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self.timeout_error(&action, Some(loc), seen, timeout).await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Presses a key (`Enter`, `Tab`, `Escape`, `ArrowDown`, `a`…), on the element if a
    /// locator is given (it is focused first), else on whatever has focus. Waits for a
    /// navigation the key starts (e.g. Enter submitting a form).
    pub async fn press(
        &self,
        loc: Option<&Locator>,
        key: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        let def =
            chromiumoxide::keys::get_key_definition(key).ok_or_else(|| BrowserError::Action {
                action: "press".into(),
                locator: loc
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "(focused element)".into()),
                reason: format!("unknown key {}", js_str(key)),
            })?;
        if let Some(loc) = loc {
            let need = Need {
                strict: true,
                visible: true,
                enabled: true,
                ..Need::default()
            };
            loop {
                self.wait_need(
                    loc,
                    need,
                    "to be visible and enabled (press)",
                    timeout,
                    deadline,
                )
                .await?;
                if self.act("focus", Value::Null, deadline).await?.is_some() {
                    break;
                }
            }
        }
        let token = self.next_token();
        self.mark_document(&token).await?;
        let text = def
            .text
            .map(|t| t.to_string())
            .or_else(|| (def.key.chars().count() == 1).then(|| def.key.to_string()));
        let mut down = DispatchKeyEventParams::new(if text.is_some() {
            DispatchKeyEventType::KeyDown
        } else {
            DispatchKeyEventType::RawKeyDown
        });
        down.key = Some(def.key.to_string());
        down.code = Some(def.code.to_string());
        down.windows_virtual_key_code = Some(def.key_code);
        down.native_virtual_key_code = Some(def.key_code);
        down.text = text;
        let mut up = down.clone();
        up.r#type = DispatchKeyEventType::KeyUp;
        up.text = None;
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call("Input.dispatchKeyEvent", up).await?;
        self.settle(
            &token,
            "navigation after key press to finish",
            timeout,
            deadline,
        )
        .await
    }

    // ---------------------------------------------------------------- assertions & reads

    async fn wait_until(
        &self,
        loc: &Locator,
        opts: Value,
        action: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Probe) -> Result<(), String>,
    ) -> Result<Probe, BrowserError> {
        let deadline = Instant::now() + timeout;
        let mut seen;
        let started = Instant::now();
        loop {
            match self.probe(loc, opts.clone(), deadline).await? {
                Ok(p) => match ok(&p) {
                    Ok(()) => return Ok(p),
                    Err(s) => seen = s,
                },
                Err(s) => seen = s,
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self.timeout_error(action, Some(loc), seen, timeout).await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Waits until the locator reaches `state`.
    pub async fn wait_for(
        &self,
        loc: &Locator,
        state: WaitState,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let (action, f): (&str, ProbeCheck) = match state {
            WaitState::Attached => ("to be attached", |p| {
                if p.count > 0 {
                    Ok(())
                } else {
                    Err("0 matches".into())
                }
            }),
            WaitState::Detached => ("to be detached", |p| {
                if p.count == 0 {
                    Ok(())
                } else {
                    Err(matches_word(p.count))
                }
            }),
            WaitState::Visible => ("to be visible", |p| {
                if p.visible_count > 0 {
                    Ok(())
                } else if p.count == 0 {
                    Err("0 matches".into())
                } else {
                    Err(format!("{}, hidden", matches_word(p.count)))
                }
            }),
            WaitState::Hidden => ("to be hidden", |p| {
                if p.visible_count == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{}, {} visible",
                        matches_word(p.count),
                        p.visible_count
                    ))
                }
            }),
        };
        self.wait_until(loc, serde_json::json!({}), action, timeout, f)
            .await
            .map(|_| ())
    }

    /// A PNG of the viewport once the first visible match is scrolled into view, laid
    /// out (not moving) and not empty: what it draws (a QR code) is in the image.
    pub async fn visible_png(
        &self,
        loc: &Locator,
        timeout: Duration,
    ) -> Result<Vec<u8>, BrowserError> {
        self.wait_until(
            loc,
            serde_json::json!({"scroll": true, "stable": true}),
            "to be visible and drawn",
            timeout,
            |p| match (&p.bbox, p.stable) {
                _ if p.count == 0 => Err("0 matches".into()),
                _ if !p.visible => Err("not visible".into()),
                (Some(b), Some(true)) if b.w >= 1.0 && b.h >= 1.0 => Ok(()),
                (Some(_), Some(true)) => Err("has no size".into()),
                _ => Err("still moving".into()),
            },
        )
        .await?;
        self.screenshot().await
    }

    /// Waits until at least one match is visible.
    pub async fn expect_visible(
        &self,
        loc: &Locator,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.wait_for(loc, WaitState::Visible, timeout).await
    }

    /// Waits until no match is visible (absent or hidden).
    pub async fn expect_hidden(
        &self,
        loc: &Locator,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        self.wait_for(loc, WaitState::Hidden, timeout).await
    }

    /// Waits until the text of a match (or, without a locator, the page's visible text)
    /// contains `text` (whitespace-normalised, case-insensitive).
    pub async fn expect_text(
        &self,
        loc: Option<&Locator>,
        text: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let action = format!("to contain text {}", js_str(&truncate(text, 80)));
        if let Some(loc) = loc {
            let opts = serde_json::json!({"anyText": text, "text": true});
            return self
                .wait_until(loc, opts, &action, timeout, |p| {
                    if p.any_text == Some(true) {
                        Ok(())
                    } else if p.count == 0 {
                        Err("0 matches".into())
                    } else {
                        Err(format!(
                            "{}, text {}",
                            matches_word(p.count),
                            js_str(&truncate(p.text.as_deref().unwrap_or(""), 60))
                        ))
                    }
                })
                .await
                .map(|_| ());
        }
        let deadline = Instant::now() + timeout;
        let expr = format!(
            "(() => {{ const n = (s) => String(s || '').replace(/\\s+/g, ' ').trim().toLowerCase(); const b = document.body; return !!b && n(b.innerText).includes(n({})); }})()",
            js_str(text)
        );
        let mut seen;
        let started = Instant::now();
        loop {
            match self.eval_raw(&expr, false, self.per_call(deadline)).await? {
                Eval::Value(Value::Bool(true)) => return Ok(()),
                Eval::Value(_) => seen = "page text does not contain it".to_string(),
                Eval::Transient(m) => seen = format!("page not ready ({})", truncate(&m, 120)),
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self
                    .timeout_error(&format!("page {action}"), None, seen, timeout)
                    .await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Waits until the URL matches the regular expression `pattern`.
    pub async fn expect_url(&self, pattern: &str, timeout: Duration) -> Result<(), BrowserError> {
        let re = regex::Regex::new(pattern).map_err(|e| BrowserError::Pattern(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let mut seen;
        let started = Instant::now();
        loop {
            match self
                .eval_raw("location.href", false, self.per_call(deadline))
                .await?
            {
                Eval::Value(Value::String(u)) if re.is_match(&u) => return Ok(()),
                Eval::Value(Value::String(u)) => seen = format!("url is {u}"),
                Eval::Value(_) => seen = "no url".to_string(),
                Eval::Transient(m) => seen = format!("page not ready ({})", truncate(&m, 120)),
            }
            if Instant::now() + pace(started) > deadline {
                return Err(self
                    .timeout_error(&format!("url to match /{pattern}/"), None, seen, timeout)
                    .await);
            }
            tokio::time::sleep(pace(started)).await;
        }
    }

    /// Text of the first (visible preferred) match, waiting for one to exist.
    /// Form fields give their value.
    pub async fn text(&self, loc: &Locator, timeout: Duration) -> Result<String, BrowserError> {
        let p = self
            .wait_until(
                loc,
                serde_json::json!({"text": true}),
                "to be attached (text)",
                timeout,
                attached,
            )
            .await?;
        Ok(p.text.unwrap_or_default())
    }

    /// An attribute of the first (visible preferred) match, waiting for one to exist.
    pub async fn attribute(
        &self,
        loc: &Locator,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<String>, BrowserError> {
        let p = self
            .wait_until(
                loc,
                serde_json::json!({"attr": name}),
                "to be attached (attribute)",
                timeout,
                attached,
            )
            .await?;
        Ok(p.attr)
    }

    async fn probe_now(&self, loc: &Locator, opts: Value) -> Result<Probe, BrowserError> {
        let deadline = Instant::now() + self.shared.cdp_timeout;
        match self.probe(loc, opts, deadline).await? {
            Ok(p) => Ok(p),
            Err(seen) => Err(BrowserError::Script(seen)),
        }
    }

    /// Texts of all matches now (no waiting), e.g. the rows of a table.
    pub async fn all_texts(&self, loc: &Locator) -> Result<Vec<String>, BrowserError> {
        Ok(self
            .probe_now(loc, serde_json::json!({"all": true}))
            .await?
            .texts
            .unwrap_or_default())
    }

    /// Number of matches now (hidden ones included; no waiting).
    pub async fn count(&self, loc: &Locator) -> Result<usize, BrowserError> {
        Ok(self.probe_now(loc, serde_json::json!({})).await?.count)
    }

    /// True when at least one match is in the page right now, hidden or not (no waiting):
    /// what `wait_for: attached` waits for.
    pub async fn exists_now(&self, loc: &Locator) -> Result<bool, BrowserError> {
        Ok(self.probe_now(loc, serde_json::json!({})).await?.count > 0)
    }

    /// True when at least one match (of all of them) is visible right now (no waiting):
    /// what `wait_for: visible` waits for.
    pub async fn visible_now(&self, loc: &Locator) -> Result<bool, BrowserError> {
        Ok(self
            .probe_now(loc, serde_json::json!({}))
            .await?
            .visible_count
            > 0)
    }

    /// Finds the matches of `rows` now (no waiting) and remembers those very elements in
    /// the page, for [`Locator::row`]: a row stays the same element whatever later steps
    /// do to which rows match. Returns the key to pass to [`Locator::row`] and the count.
    pub async fn remember_rows(&self, rows: &Locator) -> Result<(String, usize), BrowserError> {
        let key = self.next_token();
        let expr = format!(
            "window.__usher.remember({}, {})",
            rows.to_json(),
            js_str(&key)
        );
        match self
            .eval_helper(&expr, false, self.shared.cdp_timeout)
            .await?
        {
            Eval::Value(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok((key, n)),
                None => Err(BrowserError::Script(format!(
                    "unexpected helper answer: {}",
                    truncate(&v.to_string(), 120)
                ))),
            },
            Eval::Transient(m) => Err(BrowserError::InvalidSelector {
                locator: rows.to_string(),
                message: m,
            }),
        }
    }

    /// True when a match is visible and enabled right now (no waiting): a "Next" button
    /// that is still there but disabled ends a pagination.
    pub async fn enabled_now(&self, loc: &Locator) -> Result<bool, BrowserError> {
        let p = self.probe_now(loc, serde_json::json!({})).await?;
        Ok(p.visible_count > 0 && p.visible && p.enabled)
    }

    // ---------------------------------------------------------------- dialogs & evidence

    /// Sets how the NEXT JavaScript dialog is answered (one-shot). Without it, dialogs are
    /// dismissed and logged (beforeunload prompts are accepted).
    pub fn arm_dialog(&self, policy: DialogPolicy) {
        if let Ok(mut a) = self.dialogs.armed.lock() {
            *a = Some(policy);
        }
    }

    /// Message of the last JavaScript dialog seen on this page.
    pub fn last_dialog_message(&self) -> Option<String> {
        self.dialogs.last.lock().ok().and_then(|l| l.clone())
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and returns its
    /// value as JSON. For tools that inspect a page (an accessibility checker); playbooks
    /// have no such step.
    pub async fn evaluate(&self, expr: &str, timeout: Duration) -> Result<Value, BrowserError> {
        self.edited.store(true, Ordering::SeqCst);
        match self.eval_raw(expr, true, timeout).await? {
            Eval::Value(v) => Ok(v),
            Eval::Transient(m) => Err(BrowserError::Script(m)),
        }
    }

    /// Sets the size of the viewport in CSS pixels (screenshots take this size).
    pub async fn set_viewport(&self, width: i64, height: i64) -> Result<(), BrowserError> {
        use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
        let p = SetDeviceMetricsOverrideParams::new(width, height, 1.0, width < 600);
        self.call("Emulation.setDeviceMetricsOverride", p).await?;
        Ok(())
    }

    /// PNG of the viewport. Uses `Page.captureScreenshot` directly under a timeout; if that
    /// does not answer, retries once without `fromSurface`, then fails cleanly.
    /// `optimizeForSpeed`: Chromium compresses the PNG lightly (the same pixels, a larger
    /// file); a screenshot is taken after most page-changing steps, and at full compression
    /// the encoding was a large part of an action's time and CPU.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        let t = self.shared.cdp_timeout;
        let first = CaptureScreenshotParams {
            format: Some(CaptureScreenshotFormat::Png),
            optimize_for_speed: Some(true),
            ..Default::default()
        };
        let res = match self.call_within("Page.captureScreenshot", t, first).await {
            Ok(r) => r,
            Err(e @ (BrowserError::Crashed(_) | BrowserError::Closed)) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "screenshot failed, retrying without fromSurface");
                let second = CaptureScreenshotParams {
                    format: Some(CaptureScreenshotFormat::Png),
                    optimize_for_speed: Some(true),
                    from_surface: Some(false),
                    ..Default::default()
                };
                self.call_within("Page.captureScreenshot", t, second)
                    .await?
            }
        };
        let b64: &str = res.data.as_ref();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| BrowserError::Cdp {
                call: "Page.captureScreenshot".into(),
                message: format!("invalid base64: {e}"),
            })
    }
}

/// Wait condition of reads (`text`, `attribute`): at least one match exists.
fn attached(p: &Probe) -> Result<(), String> {
    if p.count > 0 {
        Ok(())
    } else {
        Err("0 matches".into())
    }
}

#[cfg(test)]
mod tests {
    use super::same_document;

    #[test]
    fn fragment_only_changes_are_same_document() {
        assert!(same_document("http://a/", "http://a/#/users"));
        assert!(same_document("http://a/#/users", "http://a/#/users/7"));
        assert!(!same_document(
            "http://a/#/users",
            "http://a/?fresh#/users/7"
        ));
        assert!(!same_document("http://a/x", "http://a/x"));
        assert!(!same_document("about:blank", "about:blank#x"));
    }
}
