//! Node tree → typed [`Playbook`], collecting every mistake with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use super::PlaybookError;
use super::locator_check::{starts_with_row, validate_locator};
use super::model::{
    AccountsPolicy, Action, ActionName, Condition, Defaults, Expectation, ExtractFrom, Extraction,
    LocatorTpl, MAX_SESSIONS, Pattern, Playbook, STEP_NAMES, ScreenshotPolicy, SessionPolicy, Step,
    StepKind, Template, TotpSource, UserLogin, WaitState,
};
use super::node::{self, Node, Value};
use super::suggest::hint;
use super::template::{TemplateChecker, locator_skeleton};

const TOP_KEYS: &[&str] = &[
    "app",
    "version",
    "defaults",
    "sessions",
    "login",
    "session_check",
    "subroutines",
    "actions",
    "roles",
    "case_sensitive_names",
    "accounts",
    "user_login",
];
const DEFAULTS_KEYS: &[&str] = &["timeout", "screenshots"];
const SESSIONS_KEYS: &[&str] = &["max", "trust"];
const ACCOUNTS_KEYS: &[&str] = &["roles", "no_role"];
const ACTION_KEYS: &[&str] = &["precondition", "steps", "verify", "probe"];
const LOGIN_KEYS: &[&str] = &["steps", "refused"];
const USER_LOGIN_KEYS: &[&str] = &["steps", "signed_out", "logout"];
const COMMON_KEYS: &[&str] = &["name", "screenshot", "timeout"];
const CONDITION_KEYS: &[&str] = &["exists", "not_exists", "visible", "hidden", "value"];
const IF_KEYS: &[&str] = &["then", "else", "name", "screenshot", "timeout"];

/// Longest step timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest `max_pages` accepted.
pub const MAX_PAGES: u32 = 10_000;

static IDENT: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap_or_else(|_| unreachable!())
});
static DURATION: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^([0-9]{1,9})(ms|s|m)$").unwrap_or_else(|_| unreachable!())
});

pub(super) fn load(file: &str, src: &str) -> Result<Playbook, Vec<PlaybookError>> {
    let root = match node::parse(src) {
        Ok(n) => n,
        Err(e) => {
            return Err(vec![PlaybookError {
                file: file.to_owned(),
                line: e.line,
                col: e.col,
                message: e.message,
            }]);
        }
    };
    let mut l = Loader {
        file: file.to_owned(),
        errors: Vec::new(),
        checker: TemplateChecker::new(),
        sub_names: Vec::new(),
        calls: Vec::new(),
        sub_emits: BTreeSet::new(),
        row_ok: false,
        lines: src.lines().map(str::to_owned).collect(),
    };
    let pb = l.playbook(&root);
    l.check_calls();
    if let Some(pb) = &pb {
        for (line, col, message) in probe_writes(pb) {
            l.errors.push(PlaybookError {
                file: file.to_owned(),
                line,
                col,
                message,
            });
        }
    }
    if l.errors.is_empty()
        && let Some(pb) = pb
    {
        return Ok(pb);
    }
    let mut errors = l.errors;
    if errors.is_empty() {
        errors.push(PlaybookError {
            file: file.to_owned(),
            line: 1,
            col: 1,
            message: "invalid playbook".into(),
        });
    }
    errors.sort_by(|a, b| (a.line, a.col, &a.message).cmp(&(b.line, b.col, &b.message)));
    errors.dedup_by(|a, b| a.line == b.line && a.col == b.col && a.message == b.message);
    Err(errors)
}

/// A `capture_totp` step among `steps` (nested in `if`/`unless` too).
fn captures_totp(steps: &[Step]) -> bool {
    steps.iter().any(|s| match &s.kind {
        StepKind::CaptureTotp { .. } => true,
        StepKind::If { then, else_, .. } | StepKind::Unless { then, else_, .. } => {
            captures_totp(then) || captures_totp(else_)
        }
        _ => false,
    })
}

/// Steps of a `probe` (directly or through `call`) that could change the app: a probe
/// runs on a schedule against the live app, so it may only look.
fn probe_writes(pb: &Playbook) -> Vec<(usize, usize, String)> {
    fn walk(
        pb: &Playbook,
        action: &str,
        steps: &[Step],
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(usize, usize, String)>,
    ) {
        for s in steps {
            match &s.kind {
                StepKind::Fill { .. }
                | StepKind::Click { .. }
                | StepKind::Select { .. }
                | StepKind::Check { .. }
                | StepKind::Uncheck { .. }
                | StepKind::Press { .. }
                | StepKind::AcceptDialog { .. }
                | StepKind::DismissDialog => out.push((
                    s.line,
                    s.col,
                    format!(
                        "`{}` is not allowed in `{action}.probe`: a probe only looks (goto, expect, wait_for, extract, if, set, call of such steps), it must not change the app",
                        s.kind.keyword()
                    ),
                )),
                StepKind::If { then, else_, .. } | StepKind::Unless { then, else_, .. } => {
                    walk(pb, action, then, seen, out);
                    walk(pb, action, else_, seen, out);
                }
                StepKind::ForEach { steps, .. } | StepKind::Paginate { steps, .. } => {
                    walk(pb, action, steps, seen, out)
                }
                StepKind::Call { name } => {
                    if seen.insert(name.clone())
                        && let Some(sub) = pb.subroutines.get(name)
                    {
                        let mut inner = Vec::new();
                        walk(pb, action, sub, seen, &mut inner);
                        if !inner.is_empty() {
                            out.push((
                                s.line,
                                s.col,
                                format!(
                                    "`call: {name}` is not allowed in `{action}.probe`: subroutine `{name}` changes the app (a probe only looks)"
                                ),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (name, act) in &pb.actions {
        if let Some(probe) = &act.probe {
            walk(pb, name.as_str(), probe, &mut BTreeSet::new(), &mut out);
        }
    }
    out
}

struct CallSite {
    callee: String,
    /// `None` for a call from login, session_check or an action.
    caller: Option<String>,
    emit_ok: bool,
    line: usize,
    col: usize,
}

#[derive(Clone, Copy)]
struct Scope<'a> {
    /// Inside the list_users action.
    emit_ok: bool,
    /// Inside `for_each`: locators are relative to the row.
    in_row: bool,
    /// Inside this subroutine.
    sub: Option<&'a str>,
    /// Inside `enable_mfa.steps`, the one place `capture_totp` may be.
    capture_ok: bool,
}

struct Loader {
    file: String,
    errors: Vec<PlaybookError>,
    checker: TemplateChecker,
    sub_names: Vec<String>,
    calls: Vec<CallSite>,
    sub_emits: BTreeSet<String>,
    /// Inside `for_each` steps or a subroutine (which may be called from one): `row`
    /// may be used in a locator.
    row_ok: bool,
    /// The source lines, to point at the character of a bad locator.
    lines: Vec<String>,
}

struct Fields<'a> {
    node: &'a Node,
    items: Vec<(&'a str, &'a Node, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }
    fn key(&self, key: &str) -> Option<&'a Node> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| *k)
    }
}

fn one_line_regex_error(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl Loader {
    fn err(&mut self, n: &Node, message: impl Into<String>) {
        self.errors.push(PlaybookError {
            file: self.file.clone(),
            line: n.line,
            col: n.col,
            message: message.into(),
        });
    }

    // ---------- generic shapes ----------

    fn fields<'a>(&mut self, n: &'a Node, what: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Value::Map(m) = &n.value else {
            self.err(n, format!("{what} must be a map, found {}", n.kind_name()));
            return None;
        };
        let mut items = Vec::new();
        for (k, v) in m {
            let Some(ks) = k.as_str() else {
                self.err(
                    k,
                    format!("keys in {what} must be strings, found {}", k.kind_name()),
                );
                continue;
            };
            if !allowed.contains(&ks) {
                let allowed_list = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                self.err(
                    k,
                    format!(
                        "unknown key `{ks}` in {what}{}; allowed: {allowed_list}",
                        hint(ks, allowed)
                    ),
                );
                continue;
            }
            items.push((ks, k, v));
        }
        Some(Fields { node: n, items })
    }

    fn required<'a>(&mut self, f: &Fields<'a>, key: &str, what: &str) -> Option<&'a Node> {
        let r = f.get(key);
        if r.is_none() {
            self.err(f.node, format!("missing required key `{key}` in {what}"));
        }
        r
    }

    /// Exactly one of `keys` present in `f`: returns (key, value).
    fn exactly_one<'a>(
        &mut self,
        f: &Fields<'a>,
        keys: &[&'static str],
        what: &str,
    ) -> Option<(&'static str, &'a Node)> {
        let present: Vec<&'static str> = keys
            .iter()
            .copied()
            .filter(|k| f.get(k).is_some())
            .collect();
        match present.as_slice() {
            [] => {
                self.err(f.node, format!("{what} needs one of: {}", keys.join(", ")));
                None
            }
            [k] => f.get(k).map(|v| (*k, v)),
            [_, second, ..] => {
                if let Some(kn) = f.key(second) {
                    self.err(kn, format!("{what} takes only one of: {}", keys.join(", ")));
                }
                None
            }
        }
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.err(
                    n,
                    format!("{what} must be a string, found {}", n.kind_name()),
                );
                None
            }
        }
    }

    fn nonempty_string(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.string(n, what)?;
        if s.trim().is_empty() {
            self.err(n, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    fn ident(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.string(n, what)?;
        if !IDENT.is_match(&s) {
            self.err(
                n,
                format!("{what} `{s}` must be a name of letters, digits and `_` (not starting with a digit)"),
            );
            return None;
        }
        Some(s)
    }

    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.err(
                    n,
                    format!("{what} must be true or false, found {}", n.kind_name()),
                );
                None
            }
        }
    }

    /// `goto.allow_status`: one HTTP status of 500 to 599, or a list of them (below 500
    /// a page loads anyway).
    fn http_statuses(&mut self, n: &Node) -> Option<Vec<u16>> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match item.value {
                Value::Int(i) if (500..=599).contains(&i) => {
                    out.push(u16::try_from(i).unwrap_or(500));
                }
                _ => {
                    self.err(
                        item,
                        "`goto.allow_status` takes HTTP statuses from 500 to 599 (a page with a lower status loads anyway)",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let bad = |s: &str| {
            format!(
                "bad duration `{s}` for {what}: write a whole number with a unit, like 500ms, 15s or 2m"
            )
        };
        let s = match &n.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => {
                self.err(n, bad(&i.to_string()));
                return None;
            }
            _ => {
                self.err(
                    n,
                    format!(
                        "{what} must be a duration like 15s, found {}",
                        n.kind_name()
                    ),
                );
                return None;
            }
        };
        let Some(c) = DURATION.captures(s.trim()) else {
            self.err(n, bad(&s));
            return None;
        };
        let num: u64 = c.get(1).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
        let d = match c.get(2).map(|m| m.as_str()) {
            Some("ms") => Duration::from_millis(num),
            Some("s") => Duration::from_secs(num),
            _ => Duration::from_secs(num.saturating_mul(60)),
        };
        if d.is_zero() || d > MAX_TIMEOUT {
            self.err(
                n,
                format!("{what} `{s}` must be more than 0 and at most 1 hour"),
            );
            return None;
        }
        Some(d)
    }

    fn template(&mut self, n: &Node, what: &str) -> Option<Template> {
        let source = self.string(n, what)?;
        match self.checker.check(&source) {
            Ok(sensitive) => Some(Template {
                source,
                sensitive,
                line: n.line,
                col: n.col,
            }),
            Err(issues) => {
                for i in issues {
                    self.errors.push(PlaybookError {
                        file: self.file.clone(),
                        line: n.line + i.line.saturating_sub(1),
                        col: if i.line <= 1 { n.col } else { 1 },
                        message: format!("{what}: {}", i.message),
                    });
                }
                None
            }
        }
    }

    fn locator(&mut self, n: &Node, what: &str) -> Option<LocatorTpl> {
        let t = self.template(n, what)?;
        let skeleton = locator_skeleton(&t.source);
        if let Err(m) = validate_locator(&skeleton) {
            let col = crate::browser::Locator::parse(&skeleton)
                .err()
                .and_then(|e| self.locator_col(n, &t.source, &skeleton, e.offset))
                .unwrap_or(n.col);
            self.errors.push(PlaybookError {
                file: self.file.clone(),
                line: n.line,
                col,
                message: format!("{what}: bad locator: {m}"),
            });
            return None;
        }
        if !self.row_ok && starts_with_row(&skeleton) {
            self.err(
                n,
                format!("{what}: `row` is the current row of `for_each`, and this is not inside one (for an element named row, write `css=row`)"),
            );
            return None;
        }
        Some(LocatorTpl(t))
    }

    /// The column of byte `offset` of a locator written on one line, plain or quoted,
    /// when the text up to it is as written (no template or escape before it).
    fn locator_col(&self, n: &Node, source: &str, skeleton: &str, offset: usize) -> Option<usize> {
        let before = source.get(..offset)?;
        if skeleton.get(..offset)? != before {
            return None;
        }
        let line = self.lines.get(n.line.checked_sub(1)?)?;
        let rest: String = line.chars().skip(n.col.checked_sub(1)?).collect();
        let quoted = rest.starts_with('"') || rest.starts_with('\'');
        let text = if quoted { &rest[1..] } else { rest.as_str() };
        text.starts_with(before)
            .then(|| n.col + usize::from(quoted) + before.chars().count())
    }

    fn pattern(&mut self, n: &Node, what: &str) -> Option<Pattern> {
        let s = self.string(n, what)?;
        match regex::Regex::new(&s) {
            Ok(regex) => Some(Pattern {
                regex,
                line: n.line,
                col: n.col,
            }),
            Err(e) => {
                self.err(
                    n,
                    format!("{what}: invalid regex: {}", one_line_regex_error(&e)),
                );
                None
            }
        }
    }

    // ---------- top level ----------

    fn playbook(&mut self, root: &Node) -> Option<Playbook> {
        if matches!(root.value, Value::Null) {
            self.err(
                root,
                "empty playbook: expected a map with app, version, login, session_check, actions",
            );
            return None;
        }
        let f = self.fields(root, "the playbook", TOP_KEYS)?;
        // Subroutine names first: `call` may come before the definition.
        if let Some(Value::Map(m)) = f.get("subroutines").map(|n| &n.value) {
            self.sub_names = m
                .iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                .collect();
        }
        let app = self
            .required(&f, "app", "the playbook")
            .and_then(|n| self.nonempty_string(n, "`app`"));
        let version = self
            .required(&f, "version", "the playbook")
            .and_then(|n| match n.value {
                Value::Int(1) => Some(1u32),
                Value::Int(v) => {
                    self.err(
                        n,
                        format!("unsupported playbook version {v}; this Usher reads version 1"),
                    );
                    None
                }
                _ => {
                    self.err(
                        n,
                        format!("`version` must be the number 1, found {}", n.kind_name()),
                    );
                    None
                }
            });
        let defaults = match f.get("defaults") {
            Some(n) => self.defaults(n),
            None => Defaults::default(),
        };
        let sessions = match f.get("sessions") {
            Some(n) => self.sessions(n),
            None => SessionPolicy::default(),
        };
        let top = Scope {
            emit_ok: false,
            in_row: false,
            sub: None,
            capture_ok: false,
        };
        let login = self
            .required(&f, "login", "the playbook")
            .map(|n| self.login(n, top));
        let session_check = self
            .required(&f, "session_check", "the playbook")
            .map(|n| self.steps(n, "`session_check`", top));
        let mut subroutines = BTreeMap::new();
        if let Some(n) = f.get("subroutines")
            && !matches!(n.value, Value::Map(_))
        {
            self.err(
                n,
                format!(
                    "`subroutines` must be a map of name → steps, found {}",
                    n.kind_name()
                ),
            );
        }
        if let Some(Value::Map(m)) = f.get("subroutines").map(|n| &n.value) {
            for (k, v) in m {
                let Some(name) = self.ident(k, "subroutine name") else {
                    continue;
                };
                let scope = Scope {
                    emit_ok: false,
                    in_row: false,
                    sub: Some(&name),
                    capture_ok: false,
                };
                // A subroutine may be called from inside for_each: `row` is checked when it runs.
                self.row_ok = true;
                let steps = self.steps(v, &format!("subroutine `{name}`"), scope);
                self.row_ok = false;
                subroutines.insert(name.clone(), steps);
            }
        }
        let actions = self
            .required(&f, "actions", "the playbook")
            .map(|n| self.actions(n))
            .unwrap_or_default();
        let roles = f.get("roles").map(|n| self.roles(n)).unwrap_or_default();
        let case_sensitive_names = match f.get("case_sensitive_names") {
            Some(n) => self.boolean(n, "`case_sensitive_names`"),
            None => Some(false),
        };
        let accounts = match f.get("accounts") {
            Some(n) => self.accounts(n),
            None => AccountsPolicy::default(),
        };
        let user_login = match f.get("user_login") {
            Some(n) => Some(self.user_login(n)?),
            None => None,
        };
        let (login, login_refused) = login?;
        Some(Playbook {
            app: app?,
            version: version?,
            defaults,
            sessions,
            login,
            login_refused,
            session_check: session_check?,
            subroutines,
            actions,
            roles,
            case_sensitive_names: case_sensitive_names?,
            accounts,
            user_login,
            source_file: self.file.clone(),
        })
    }

    /// `user_login: { steps, signed_out, logout? }`.
    fn user_login(&mut self, n: &Node) -> Option<UserLogin> {
        let f = self.fields(n, "`user_login`", USER_LOGIN_KEYS)?;
        let scope = Scope {
            emit_ok: false,
            in_row: false,
            sub: None,
            capture_ok: false,
        };
        let steps = self
            .required(&f, "steps", "`user_login`")
            .map(|s| self.steps(s, "`user_login.steps`", scope));
        let signed_out = self
            .required(&f, "signed_out", "`user_login`")
            .and_then(|p| self.pattern(p, "`user_login.signed_out`"));
        let logout = match f.get("logout") {
            Some(p) => Some(self.pattern(p, "`user_login.logout`")?),
            None => None,
        };
        Some(UserLogin {
            steps: steps?,
            signed_out: signed_out?,
            logout,
            line: n.line,
            col: n.col,
        })
    }

    /// `login`: a list of steps, or `{ steps, refused? }`.
    fn login(&mut self, n: &Node, scope: Scope<'_>) -> (Vec<Step>, Vec<LocatorTpl>) {
        if !matches!(n.value, Value::Map(_)) {
            return (self.steps(n, "`login`", scope), Vec::new());
        }
        let Some(f) = self.fields(n, "`login`", LOGIN_KEYS) else {
            return (Vec::new(), Vec::new());
        };
        let steps = self
            .required(&f, "steps", "`login`")
            .map(|s| self.steps(s, "`login.steps`", scope))
            .unwrap_or_default();
        let mut refused = Vec::new();
        if let Some(r) = f.get("refused") {
            match &r.value {
                Value::Seq(items) if !items.is_empty() => {
                    for i in items {
                        if let Some(l) = self.locator(i, "`login.refused`") {
                            refused.push(l);
                        }
                    }
                }
                Value::Seq(_) => self.err(
                    r,
                    "`login.refused` is empty: list what a refused sign-in shows",
                ),
                _ => self.err(
                    r,
                    format!(
                        "`login.refused` must be a list of locators, found {}",
                        r.kind_name()
                    ),
                ),
            }
        }
        (steps, refused)
    }

    fn accounts(&mut self, n: &Node) -> AccountsPolicy {
        let mut p = AccountsPolicy::default();
        let Some(f) = self.fields(n, "`accounts`", ACCOUNTS_KEYS) else {
            return p;
        };
        if let Some(r) = f.get("roles") {
            match &r.value {
                Value::Str(s) if s.trim() == "one" => p.one_role = true,
                Value::Str(s) if s.trim() == "many" => {}
                _ => self.err(r, "`accounts.roles` must be `one` or `many`"),
            }
        }
        if let Some(r) = f.get("no_role") {
            p.no_role = self
                .string(r, "`accounts.no_role`")
                .filter(|s| !s.trim().is_empty());
        }
        p
    }

    fn sessions(&mut self, n: &Node) -> SessionPolicy {
        let mut p = SessionPolicy::default();
        let Some(f) = self.fields(n, "`sessions`", SESSIONS_KEYS) else {
            return p;
        };
        if let Some(m) = f.get("max") {
            match m.value {
                Value::Int(i) if (1..=i64::from(MAX_SESSIONS)).contains(&i) => {
                    p.max = u32::try_from(i).ok();
                }
                _ => self.err(
                    m,
                    format!("`sessions.max` must be a whole number from 1 to {MAX_SESSIONS}"),
                ),
            }
        }
        if let Some(t) = f.get("trust") {
            // `0s` is allowed here (check before every action), unlike a timeout.
            let zero = matches!(&t.value, Value::Str(s)
                if matches!(s.trim(), "0s" | "0ms" | "0m"));
            if zero {
                p.trust = Duration::ZERO;
            } else if let Some(d) = self.duration(t, "`sessions.trust`") {
                p.trust = d;
            }
        }
        p
    }

    fn defaults(&mut self, n: &Node) -> Defaults {
        let mut d = Defaults::default();
        let Some(f) = self.fields(n, "`defaults`", DEFAULTS_KEYS) else {
            return d;
        };
        if let Some(t) = f
            .get("timeout")
            .and_then(|n| self.duration(n, "`defaults.timeout`"))
        {
            d.timeout = t;
        }
        if let Some(sn) = f.get("screenshots")
            && let Some(s) = self.string(sn, "`defaults.screenshots`")
        {
            match ScreenshotPolicy::parse(&s) {
                Some(p) => d.screenshots = p,
                None => self.err(
                    sn,
                    format!(
                        "unknown screenshot policy `{s}`{}; known: {}",
                        hint(&s, ScreenshotPolicy::NAMES),
                        ScreenshotPolicy::NAMES.join(", ")
                    ),
                ),
            }
        }
        d
    }

    fn actions(&mut self, n: &Node) -> BTreeMap<ActionName, Action> {
        let mut out = BTreeMap::new();
        let Value::Map(m) = &n.value else {
            self.err(
                n,
                format!(
                    "`actions` must be a map of action name → action, found {}",
                    n.kind_name()
                ),
            );
            return out;
        };
        if m.is_empty() {
            self.err(n, "`actions` is empty: define at least one action");
        }
        for (k, v) in m {
            let Some(name) = self.string(k, "action name") else {
                continue;
            };
            let Some(action) = ActionName::parse(&name) else {
                self.err(
                    k,
                    format!(
                        "unknown action `{name}`{}; known: {}",
                        hint(&name, ActionName::NAMES),
                        ActionName::NAMES.join(", ")
                    ),
                );
                continue;
            };
            let what = format!("action `{name}`");
            let Some(f) = self.fields(v, &what, ACTION_KEYS) else {
                continue;
            };
            let scope = Scope {
                emit_ok: action == ActionName::ListUsers,
                in_row: false,
                sub: None,
                capture_ok: false,
            };
            let precondition = f
                .get("precondition")
                .map(|n| self.steps(n, &format!("`{name}.precondition`"), scope));
            let steps = match f.get("steps") {
                Some(n) => {
                    let steps = self.steps(
                        n,
                        &format!("`{name}.steps`"),
                        Scope {
                            capture_ok: action == ActionName::EnableMfa,
                            ..scope
                        },
                    );
                    if action == ActionName::EnableMfa && !captures_totp(&steps) {
                        self.err(
                            n,
                            "`enable_mfa.steps` must read the new TOTP secret with a `capture_totp` step before confirming it, so that Usher records it before the app requires it",
                        );
                    }
                    steps
                }
                None => {
                    self.err(v, format!("action `{name}` has no steps: add `steps:`"));
                    Vec::new()
                }
            };
            let verify = f
                .get("verify")
                .map(|n| self.steps(n, &format!("`{name}.verify`"), scope));
            let probe = f.get("probe").map(|n| {
                self.steps(
                    n,
                    &format!("`{name}.probe`"),
                    Scope {
                        emit_ok: false,
                        ..scope
                    },
                )
            });
            out.insert(
                action,
                Action {
                    precondition,
                    steps,
                    verify,
                    probe,
                    line: v.line,
                    col: v.col,
                },
            );
        }
        out
    }

    fn roles(&mut self, n: &Node) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Value::Map(m) = &n.value else {
            self.err(
                n,
                format!(
                    "`roles` must be a map of SCIM role or group → app role(s), found {}",
                    n.kind_name()
                ),
            );
            return out;
        };
        for (k, v) in m {
            let Some(name) = self.nonempty_string(k, "a SCIM role or group name") else {
                continue;
            };
            if out.keys().any(|o| o.eq_ignore_ascii_case(&name)) {
                self.err(
                    k,
                    format!("role `{name}` is listed twice (names match case-insensitively)"),
                );
                continue;
            }
            let targets = match &v.value {
                Value::Str(_) => self.nonempty_string(v, "an app role").into_iter().collect(),
                Value::Seq(items) => {
                    if items.is_empty() {
                        self.err(v, format!("role `{name}` maps to an empty list"));
                    }
                    items
                        .iter()
                        .filter_map(|i| self.nonempty_string(i, "an app role"))
                        .collect()
                }
                _ => {
                    self.err(
                        v,
                        format!(
                            "role `{name}` must map to an app role or a list of them, found {}",
                            v.kind_name()
                        ),
                    );
                    Vec::new()
                }
            };
            out.insert(name, targets);
        }
        out
    }

    // ---------- steps ----------

    fn steps(&mut self, n: &Node, what: &str, scope: Scope<'_>) -> Vec<Step> {
        let Value::Seq(items) = &n.value else {
            self.err(
                n,
                format!("{what} must be a list of steps, found {}", n.kind_name()),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.err(n, format!("{what} has no steps"));
        }
        items.iter().filter_map(|i| self.step(i, scope)).collect()
    }

    fn step(&mut self, n: &Node, scope: Scope<'_>) -> Option<Step> {
        let Value::Map(m) = &n.value else {
            self.err(
                n,
                format!(
                    "a step must be a map with one step keyword, like `- click: \"text=Save\"`; found {}",
                    n.kind_name()
                ),
            );
            return None;
        };
        let mut keys = Vec::new();
        for (k, v) in m {
            match k.as_str() {
                Some(s) => keys.push((s, k, v)),
                None => self.err(
                    k,
                    format!("step keys must be strings, found {}", k.kind_name()),
                ),
            }
        }
        let has_other_step = keys
            .iter()
            .any(|(k, _, _)| *k != "screenshot" && STEP_NAMES.contains(k));
        let mut step_key: Option<(&str, &Node, &Node)> = None;
        let mut others = Vec::new();
        let mut unknown = Vec::new();
        for (k, kn, vn) in keys {
            let is_step = STEP_NAMES.contains(&k) && !(k == "screenshot" && has_other_step);
            if is_step {
                if let Some((first, _, _)) = step_key {
                    self.err(
                        kn,
                        format!("a step has exactly one step keyword; found `{first}` and `{k}`"),
                    );
                } else {
                    step_key = Some((k, kn, vn));
                }
            } else if IF_KEYS.contains(&k) {
                others.push((k, kn, vn));
            } else {
                unknown.push((k, kn));
            }
        }
        let Some((kw, _kn, vn)) = step_key else {
            if unknown.is_empty() {
                self.err(
                    n,
                    format!(
                        "step has no step keyword; known steps: {}",
                        STEP_NAMES.join(", ")
                    ),
                );
            }
            for (k, kn) in unknown {
                self.err(
                    kn,
                    format!(
                        "unknown step `{k}`{}; known steps: {}",
                        hint(k, STEP_NAMES),
                        STEP_NAMES.join(", ")
                    ),
                );
            }
            return None;
        };
        let allowed: &[&str] = if matches!(kw, "if" | "unless") {
            IF_KEYS
        } else {
            COMMON_KEYS
        };
        for (k, kn) in unknown {
            self.err(
                kn,
                format!(
                    "unknown key `{k}` in `{kw}` step{}; allowed: {}",
                    hint(k, allowed),
                    allowed.join(", ")
                ),
            );
        }
        let mut timeout = None;
        let mut name = None;
        let mut screenshot = None;
        let mut then = None;
        let mut else_ = None;
        for (k, kn, v) in others {
            match k {
                "timeout" => timeout = self.duration(v, "`timeout`"),
                "name" => name = self.nonempty_string(v, "step `name`"),
                "screenshot" => screenshot = self.boolean(v, "`screenshot`"),
                "then" | "else" if allowed.contains(&k) => {
                    let steps = self.steps(v, &format!("`{kw}.{k}`"), scope);
                    if k == "then" {
                        then = Some(steps);
                    } else {
                        else_ = Some(steps);
                    }
                }
                _ => self.err(
                    kn,
                    format!(
                        "unknown key `{k}` in `{kw}` step; allowed: {}",
                        allowed.join(", ")
                    ),
                ),
            }
        }
        let what = format!("`{kw}`");
        let (kind, inner_timeout) = match kw {
            "goto" => {
                let (url, allow_status) = match &vn.value {
                    Value::Map(_) => {
                        let f = self.fields(vn, &what, &["url", "allow_status"])?;
                        let url = self.required(&f, "url", &what)?;
                        let url = self.template(url, "`goto.url`")?;
                        let allow = match f.get("allow_status") {
                            Some(n) => self.http_statuses(n)?,
                            None => Vec::new(),
                        };
                        (url, allow)
                    }
                    _ => (self.template(vn, "`goto` URL")?, Vec::new()),
                };
                (StepKind::Goto { url, allow_status }, None)
            }
            "fill" => (self.fill(vn)?, None),
            "click" => {
                let on = match &vn.value {
                    Value::Map(_) => {
                        let f = self.fields(vn, &what, &["on"])?;
                        let on = self.required(&f, "on", &what)?;
                        self.locator(on, "`click.on`")?
                    }
                    _ => self.locator(vn, "`click` locator")?,
                };
                (StepKind::Click { on }, None)
            }
            "select" => (self.select(vn)?, None),
            "check" => (
                StepKind::Check {
                    on: self.locator(vn, "`check` locator")?,
                },
                None,
            ),
            "uncheck" => (
                StepKind::Uncheck {
                    on: self.locator(vn, "`uncheck` locator")?,
                },
                None,
            ),
            "press" => (self.press(vn)?, None),
            "expect" => self.expect(vn)?,
            "wait_for" => self.wait_for(vn)?,
            "extract" => (self.extract(vn, scope)?, None),
            "accept_dialog" => {
                let text = match &vn.value {
                    Value::Null => None,
                    _ => {
                        let f = self.fields(vn, &what, &["text"])?;
                        match f.get("text") {
                            Some(t) => Some(self.template(t, "`accept_dialog.text`")?),
                            None => None,
                        }
                    }
                };
                (StepKind::AcceptDialog { text }, None)
            }
            "dismiss_dialog" => {
                if !matches!(vn.value, Value::Null) {
                    self.fields(vn, &what, &[])?;
                }
                (StepKind::DismissDialog, None)
            }
            "screenshot" => {
                let name = match &vn.value {
                    Value::Null => None,
                    Value::Bool(_) => {
                        self.err(
                            vn,
                            "`screenshot: true/false` only sets another step's screenshot; to take one, write `screenshot: {}`",
                        );
                        return None;
                    }
                    _ => {
                        let f = self.fields(vn, &what, &["name"])?;
                        match f.get("name") {
                            Some(n) => Some(self.nonempty_string(n, "`screenshot.name`")?),
                            None => None,
                        }
                    }
                };
                (StepKind::Screenshot { name }, None)
            }
            "if" | "unless" => {
                let cond = self.condition(vn, &what);
                if then.is_none() {
                    self.err(n, format!("`{kw}` step needs `then:` steps"));
                }
                let (cond, then) = (cond?, then?);
                let else_ = else_.unwrap_or_default();
                let kind = if kw == "if" {
                    StepKind::If { cond, then, else_ }
                } else {
                    StepKind::Unless { cond, then, else_ }
                };
                (kind, None)
            }
            "for_each" => {
                let f = self.fields(vn, &what, &["rows", "steps"])?;
                let rows = self
                    .required(&f, "rows", &what)
                    .and_then(|r| self.locator(r, "`for_each.rows`"));
                let inner = Scope {
                    in_row: true,
                    capture_ok: false,
                    ..scope
                };
                let outer_row_ok = self.row_ok;
                self.row_ok = true;
                let steps = self
                    .required(&f, "steps", &what)
                    .map(|s| self.steps(s, "`for_each.steps`", inner));
                self.row_ok = outer_row_ok;
                (
                    StepKind::ForEach {
                        rows: rows?,
                        steps: steps?,
                    },
                    None,
                )
            }
            "paginate" => {
                let f = self.fields(vn, &what, &["next", "max_pages", "steps"])?;
                let next = self
                    .required(&f, "next", &what)
                    .and_then(|r| self.locator(r, "`paginate.next`"));
                let max_pages = self.required(&f, "max_pages", &what).and_then(|m| match m.value {
                    Value::Int(i) if (1..=i64::from(MAX_PAGES)).contains(&i) => u32::try_from(i).ok(),
                    _ => {
                        self.err(m, format!("`paginate.max_pages` must be a whole number from 1 to {MAX_PAGES}"));
                        None
                    }
                });
                let steps = self
                    .required(&f, "steps", &what)
                    .map(|s| self.steps(s, "`paginate.steps`", scope));
                (
                    StepKind::Paginate {
                        next: next?,
                        max_pages: max_pages?,
                        steps: steps?,
                    },
                    None,
                )
            }
            "call" => {
                let name = self.ident(vn, "`call`")?;
                if !self.sub_names.contains(&name) {
                    let names: Vec<&str> = self.sub_names.iter().map(String::as_str).collect();
                    let defined = if names.is_empty() {
                        "no subroutines are defined".to_owned()
                    } else {
                        format!("defined: {}", names.join(", "))
                    };
                    let h = hint(&name, &names);
                    self.err(vn, format!("unknown subroutine `{name}`{h}; {defined}"));
                    return None;
                }
                self.calls.push(CallSite {
                    callee: name.clone(),
                    caller: scope.sub.map(str::to_owned),
                    emit_ok: scope.emit_ok,
                    line: vn.line,
                    col: vn.col,
                });
                (StepKind::Call { name }, None)
            }
            "emit" => {
                let name = self.ident(vn, "`emit`")?;
                if let Some(sub) = scope.sub {
                    self.sub_emits.insert(sub.to_owned());
                } else if !scope.emit_ok {
                    self.err(n, "`emit` is only allowed in the list_users action");
                    return None;
                }
                (StepKind::Emit { name }, None)
            }
            "set" => {
                let Value::Map(m) = &vn.value else {
                    self.err(
                        vn,
                        format!(
                            "`set` must be a map of NAME: template, found {}",
                            vn.kind_name()
                        ),
                    );
                    return None;
                };
                if m.is_empty() {
                    self.err(vn, "`set` is empty");
                }
                let mut entries = Vec::new();
                let mut ok = true;
                for (k, v) in m {
                    let name = self.ident(k, "`set` name");
                    let t = self.template(v, "`set` value");
                    match (name, t) {
                        (Some(name), Some(t)) => entries.push((name, t)),
                        _ => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                (StepKind::Set(entries), None)
            }
            "fail" => (
                StepKind::Fail {
                    message: self.template(vn, "`fail` message")?,
                },
                None,
            ),
            "capture_totp" => {
                if !scope.capture_ok {
                    self.err(
                        n,
                        "`capture_totp` is only allowed in the steps of the enable_mfa action (outside `for_each`)",
                    );
                    return None;
                }
                let f = self.fields(vn, &what, &["text", "qr"])?;
                let (k, v) = self.exactly_one(&f, &["text", "qr"], &what)?;
                let from = if k == "qr" {
                    TotpSource::Qr
                } else {
                    TotpSource::Text
                };
                let on = self.locator(v, &format!("`capture_totp.{k}`"))?;
                (StepKind::CaptureTotp { from, on }, None)
            }
            _ => {
                self.err(n, format!("unknown step `{kw}`"));
                return None;
            }
        };
        if inner_timeout.is_some() && timeout.is_some() {
            self.err(n, format!("`timeout` given twice for this `{kw}` step"));
        }
        Some(Step {
            kind,
            timeout: timeout.or(inner_timeout),
            name,
            screenshot,
            line: n.line,
            col: n.col,
        })
    }

    fn fill(&mut self, vn: &Node) -> Option<StepKind> {
        let f = self.fields(vn, "`fill`", &["into", "value", "sensitive"])?;
        let into = self
            .required(&f, "into", "`fill`")
            .and_then(|n| self.locator(n, "`fill.into`"));
        let value = self
            .required(&f, "value", "`fill`")
            .and_then(|n| self.template(n, "`fill.value`"));
        let marked = match f.get("sensitive") {
            Some(s) => self.boolean(s, "`fill.sensitive`")?,
            None => false,
        };
        let mut value = value?;
        value.sensitive |= marked;
        Some(StepKind::Fill {
            into: into?,
            sensitive: value.sensitive,
            value,
        })
    }

    fn select(&mut self, vn: &Node) -> Option<StepKind> {
        let f = self.fields(vn, "`select`", &["in", "option", "options"])?;
        let in_ = self
            .required(&f, "in", "`select`")
            .and_then(|n| self.locator(n, "`select.in`"));
        let (key, o) = self.exactly_one(&f, &["option", "options"], "`select`")?;
        let what = format!("`select.{key}`");
        let options = match &o.value {
            Value::Seq(items) => {
                // `options: []` clears a multi-select; `option:` names at least one.
                if items.is_empty() && key == "option" {
                    self.err(o, "`select.option` is an empty list");
                    return None;
                }
                let ts: Vec<Option<Template>> =
                    items.iter().map(|i| self.template(i, &what)).collect();
                ts.into_iter().collect()
            }
            _ => self.template(o, &what).map(|t| vec![t]),
        };
        Some(StepKind::Select {
            in_: in_?,
            options: options?,
            expand: key == "options",
        })
    }

    fn press(&mut self, vn: &Node) -> Option<StepKind> {
        let f = self.fields(vn, "`press`", &["key", "on"])?;
        let key = self.required(&f, "key", "`press`").and_then(|k| {
            let s = self.nonempty_string(k, "`press.key`")?;
            let ok = s.split('+').all(|p| {
                !p.is_empty() && p.chars().all(|c| !c.is_whitespace()) && (p.chars().count() == 1 || p.chars().all(|c| c.is_ascii_alphanumeric()))
            });
            if !ok {
                self.err(k, format!("bad key `{s}`: use a key name like Enter, Tab, a, or a combination like Control+A"));
                return None;
            }
            Some(s)
        });
        let on = match f.get("on") {
            Some(n) => Some(self.locator(n, "`press.on`")?),
            None => None,
        };
        Some(StepKind::Press { key: key?, on })
    }

    fn expect(&mut self, vn: &Node) -> Option<(StepKind, Option<Duration>)> {
        let f = self.fields(
            vn,
            "`expect`",
            &["visible", "hidden", "text", "in", "url", "timeout"],
        )?;
        let timeout = match f.get("timeout") {
            Some(t) => Some(self.duration(t, "`expect.timeout`")?),
            None => None,
        };
        let (k, v) = self.exactly_one(&f, &["visible", "hidden", "text", "url"], "`expect`")?;
        if k != "text"
            && let Some(kn) = f.key("in")
        {
            self.err(kn, "`in` is only allowed with `expect: {text: …}`");
            return None;
        }
        let e = match k {
            "visible" => Expectation::Visible(self.locator(v, "`expect.visible`")?),
            "hidden" => Expectation::Hidden(self.locator(v, "`expect.hidden`")?),
            "text" => {
                let text = self.template(v, "`expect.text`");
                let in_ = match f.get("in") {
                    Some(n) => Some(self.locator(n, "`expect.in`")?),
                    None => None,
                };
                Expectation::Text { text: text?, in_ }
            }
            _ => Expectation::Url(self.pattern(v, "`expect.url`")?),
        };
        Some((StepKind::Expect(e), timeout))
    }

    fn wait_for(&mut self, vn: &Node) -> Option<(StepKind, Option<Duration>)> {
        let f = self.fields(
            vn,
            "`wait_for`",
            &["visible", "hidden", "attached", "detached", "timeout"],
        )?;
        let timeout = match f.get("timeout") {
            Some(t) => Some(self.duration(t, "`wait_for.timeout`")?),
            None => None,
        };
        let (k, v) = self.exactly_one(
            &f,
            &["visible", "hidden", "attached", "detached"],
            "`wait_for`",
        )?;
        let state = match k {
            "visible" => WaitState::Visible,
            "hidden" => WaitState::Hidden,
            "attached" => WaitState::Attached,
            _ => WaitState::Detached,
        };
        let on = self.locator(v, &format!("`wait_for.{k}`"))?;
        Some((StepKind::WaitFor { state, on }, timeout))
    }

    fn extract(&mut self, vn: &Node, scope: Scope<'_>) -> Option<StepKind> {
        let Value::Map(m) = &vn.value else {
            self.err(
                vn,
                format!(
                    "`extract` must be a map of NAME: {{from: …}}, found {}",
                    vn.kind_name()
                ),
            );
            return None;
        };
        if m.is_empty() {
            self.err(vn, "`extract` is empty");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (k, spec) in m {
            match self.extraction(k, spec, scope) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(StepKind::Extract(out))
    }

    fn extraction(&mut self, k: &Node, spec: &Node, scope: Scope<'_>) -> Option<Extraction> {
        let name = self.ident(k, "output name");
        let base = format!("extract.{}", name.as_deref().unwrap_or("?"));
        let what = format!("`{base}`");
        let f = self.fields(spec, &what, &["from", "locator", "name", "pattern"])?;
        let from_node = self.required(&f, "from", &what)?;
        let from_s = self.string(from_node, &format!("`{base}.from`"))?;
        const FROMS: &[&str] = &["text", "attribute", "url", "value"];
        if !FROMS.contains(&from_s.as_str()) {
            self.err(
                from_node,
                format!(
                    "unknown `from: {from_s}`{}; known: {}",
                    hint(&from_s, FROMS),
                    FROMS.join(", ")
                ),
            );
            return None;
        }
        let mut ok = true;
        let attr = match (from_s.as_str(), f.get("name")) {
            ("attribute", Some(n)) => self.nonempty_string(n, &format!("`{base}.name`")),
            ("attribute", None) => {
                self.err(
                    f.node,
                    format!("{what}: `from: attribute` needs `name:` (the attribute)"),
                );
                None
            }
            (_, Some(_)) => {
                if let Some(kn) = f.key("name") {
                    self.err(kn, format!("{what}: `name` is only for `from: attribute`"));
                }
                ok = false;
                None
            }
            (_, None) => None,
        };
        let locator = match (from_s.as_str(), f.get("locator")) {
            ("url", Some(_)) => {
                if let Some(kn) = f.key("locator") {
                    self.err(kn, format!("{what}: `from: url` takes no `locator`"));
                }
                ok = false;
                None
            }
            (_, Some(l)) => {
                let loc = self.locator(l, &format!("`{base}.locator`"));
                ok &= loc.is_some();
                loc
            }
            ("url", None) => None,
            (_, None) if scope.in_row => None,
            (_, None) => {
                self.err(
                    f.node,
                    format!("{what}: `from: {from_s}` needs `locator:` (outside `for_each` there is no row to read)"),
                );
                ok = false;
                None
            }
        };
        let pattern = match f.get("pattern") {
            Some(p) => {
                let pat = self.pattern(p, &format!("`{base}.pattern`"));
                ok &= pat.is_some();
                pat
            }
            None => None,
        };
        let from = match from_s.as_str() {
            "text" => ExtractFrom::Text,
            "attribute" => ExtractFrom::Attribute(attr?),
            "url" => ExtractFrom::Url,
            _ => ExtractFrom::Value,
        };
        if !ok {
            return None;
        }
        Some(Extraction {
            name: name?,
            from,
            locator,
            pattern,
            line: k.line,
            col: k.col,
        })
    }

    fn condition(&mut self, vn: &Node, what: &str) -> Option<Condition> {
        let kw = what.trim_matches('`');
        let f = self.fields(vn, &format!("{what} condition"), CONDITION_KEYS)?;
        let (k, v) = self.exactly_one(&f, CONDITION_KEYS, &format!("{what} condition"))?;
        Some(match k {
            "exists" => Condition::Exists(self.locator(v, &format!("`{kw}.exists`"))?),
            "not_exists" => Condition::NotExists(self.locator(v, &format!("`{kw}.not_exists`"))?),
            "visible" => Condition::Visible(self.locator(v, &format!("`{kw}.visible`"))?),
            "hidden" => Condition::Hidden(self.locator(v, &format!("`{kw}.hidden`"))?),
            _ => Condition::Value(self.template(v, &format!("`{kw}.value`"))?),
        })
    }

    // ---------- whole-playbook checks ----------

    /// Recursion cycles among subroutines, and `emit` reached through `call`
    /// from outside list_users.
    fn check_calls(&mut self) {
        let mut graph: BTreeMap<&str, Vec<&CallSite>> = BTreeMap::new();
        for c in &self.calls {
            if let Some(caller) = &c.caller {
                graph.entry(caller.as_str()).or_default().push(c);
            }
        }
        // Cycles: depth-first search, reporting each back edge at its call.
        let mut found: Vec<(usize, usize, String)> = Vec::new();
        let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 = on stack, 2 = done
        fn dfs<'a>(
            node: &'a str,
            graph: &BTreeMap<&'a str, Vec<&'a CallSite>>,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
            found: &mut Vec<(usize, usize, String)>,
        ) {
            state.insert(node, 1);
            stack.push(node);
            for c in graph.get(node).map(Vec::as_slice).unwrap_or(&[]) {
                let callee = c.callee.as_str();
                match state.get(callee) {
                    Some(1) => {
                        let start = stack.iter().position(|s| *s == callee).unwrap_or(0);
                        let mut path: Vec<&str> = stack[start..].to_vec();
                        path.push(callee);
                        found.push((
                            c.line,
                            c.col,
                            format!("subroutine cycle: {}", path.join(" → ")),
                        ));
                    }
                    Some(_) => {}
                    None => dfs(callee, graph, state, stack, found),
                }
            }
            stack.pop();
            state.insert(node, 2);
        }
        let names: Vec<&str> = self.sub_names.iter().map(String::as_str).collect();
        for name in &names {
            if !state.contains_key(name) {
                dfs(name, &graph, &mut state, &mut Vec::new(), &mut found);
            }
        }
        // Emit reachability (fixed point).
        let mut emits: BTreeSet<&str> = self.sub_emits.iter().map(String::as_str).collect();
        loop {
            let before = emits.len();
            for c in &self.calls {
                if let Some(caller) = &c.caller
                    && emits.contains(c.callee.as_str())
                {
                    emits.insert(caller.as_str());
                }
            }
            if emits.len() == before {
                break;
            }
        }
        for c in &self.calls {
            if c.caller.is_none() && !c.emit_ok && emits.contains(c.callee.as_str()) {
                found.push((
                    c.line,
                    c.col,
                    format!(
                        "subroutine `{}` uses `emit`, which is only allowed in the list_users action",
                        c.callee
                    ),
                ));
            }
        }
        for (line, col, message) in found {
            self.errors.push(PlaybookError {
                file: self.file.clone(),
                line,
                col,
                message,
            });
        }
    }
}
