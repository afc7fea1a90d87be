//! The typed, validated playbook. Built only by the loader; every step
//! carries the line and column it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The states `wait_for` waits for are the browser's own.
pub use crate::browser::WaitState;

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub app: String,
    pub version: u32,
    pub defaults: Defaults,
    /// How the driver keeps logged-in sessions of the app (`sessions`).
    pub sessions: SessionPolicy,
    /// Run when `session_check` fails.
    pub login: Vec<Step>,
    /// What a refused sign-in looks like (`login.refused`): looked for when a login
    /// fails, the first one shown gives the reason in the app's words.
    pub login_refused: Vec<LocatorTpl>,
    /// Succeeds when the kept session is still logged in.
    pub session_check: Vec<Step>,
    /// Reusable step sequences, run by `call`.
    pub subroutines: BTreeMap<String, Vec<Step>>,
    pub actions: BTreeMap<ActionName, Action>,
    /// SCIM role or group name → app roles.
    pub roles: BTreeMap<String, Vec<String>>,
    /// The app tells account names apart by case (`case_sensitive_names: true`); by
    /// default it does not, like SCIM's `userName` (RFC 7643 `caseExact: false`).
    pub case_sensitive_names: bool,
    /// How the app shows an account's roles in `list_users` (`accounts`), for
    /// reconciliation's drift check.
    pub accounts: AccountsPolicy,
    /// How a person is signed in to the app with their own credentials, for single
    /// sign-on through Usher (`user_login`).
    pub user_login: Option<UserLogin>,
    /// The file name given to the loader, used in every position.
    pub source_file: String,
}

/// `user_login`: signs one person in (templates see the person as `user` and their
/// own credentials as `secret.username`/`secret.password`).
#[derive(Debug, Clone)]
pub struct UserLogin {
    pub steps: Vec<Step>,
    /// An app response that redirects to a URL matching this means the person's app
    /// session has ended: Usher signs them in again.
    pub signed_out: Pattern,
    /// A request whose path (with its query) matches this is the app's sign-out: it
    /// ends the person's Usher SSO session for the app too.
    pub logout: Option<Pattern>,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Per-step timeout when a step sets none. Default 15s.
    pub timeout: Duration,
    /// Default `on_change`.
    pub screenshots: ScreenshotPolicy,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            screenshots: ScreenshotPolicy::OnChange,
        }
    }
}

/// How many logged-in sessions of the service account the driver keeps open at once,
/// and how long a session that proved itself is trusted without a `session_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// At most this many sessions at once (`sessions.max`); `None`: as many as actions
    /// run at once for the integration (its `concurrency`). A playbook without
    /// `login.refused` keeps one whatever this says (each sign-in spends its budget).
    pub max: Option<u32>,
    /// A session that passed its check or an action less than this long ago runs the
    /// next action without `session_check` (`sessions.trust`, default 60s; `0s` checks
    /// before every action).
    pub trust: Duration,
}

pub const DEFAULT_TRUST: Duration = Duration::from_secs(60);
/// Largest `sessions.max` accepted.
pub const MAX_SESSIONS: u32 = 64;

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            max: None,
            trust: DEFAULT_TRUST,
        }
    }
}

/// How the app holds and shows an account's roles, as reconciliation compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountsPolicy {
    /// The app holds one role per account (`accounts.roles: one`): the first of the
    /// mapped app roles, in sorted order, as `user.app_roles | first` gives it.
    pub one_role: bool,
    /// What the app shows for an account granted no role (`accounts.no_role`).
    pub no_role: Option<String>,
}

/// When the engine takes evidence screenshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenshotPolicy {
    /// After every step that may change the page (goto, fill, click, select,
    /// check, uncheck, press) and on failure.
    OnChange,
    /// After every step.
    Always,
    /// Only when a step fails.
    OnFailure,
}

impl ScreenshotPolicy {
    pub const NAMES: &'static [&'static str] = &["on_change", "always", "on_failure"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "on_change" => Some(Self::OnChange),
            "always" => Some(Self::Always),
            "on_failure" => Some(Self::OnFailure),
            _ => None,
        }
    }
}

/// The lifecycle tasks a playbook can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionName {
    CreateUser,
    UpdateUser,
    DeactivateUser,
    ReactivateUser,
    DeleteUser,
    SetRoles,
    ListUsers,
    RotatePassword,
    EnableMfa,
    SetUserPassword,
}

impl ActionName {
    pub const ALL: [ActionName; 10] = [
        Self::CreateUser,
        Self::UpdateUser,
        Self::DeactivateUser,
        Self::ReactivateUser,
        Self::DeleteUser,
        Self::SetRoles,
        Self::ListUsers,
        Self::RotatePassword,
        Self::EnableMfa,
        Self::SetUserPassword,
    ];
    pub const NAMES: &'static [&'static str] = &[
        "create_user",
        "update_user",
        "deactivate_user",
        "reactivate_user",
        "delete_user",
        "set_roles",
        "list_users",
        "rotate_password",
        "enable_mfa",
        "set_user_password",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateUser => "create_user",
            Self::UpdateUser => "update_user",
            Self::DeactivateUser => "deactivate_user",
            Self::ReactivateUser => "reactivate_user",
            Self::DeleteUser => "delete_user",
            Self::SetRoles => "set_roles",
            Self::ListUsers => "list_users",
            Self::RotatePassword => "rotate_password",
            Self::EnableMfa => "enable_mfa",
            Self::SetUserPassword => "set_user_password",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Changes the service account's own credentials (password, TOTP): never run
    /// twice by the driver, always on a session checked first; the engine keeps the
    /// vault in step.
    pub fn changes_credentials(self) -> bool {
        matches!(self, Self::RotatePassword | Self::EnableMfa)
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action: optional precondition (if it succeeds, the work is already
/// done and the action is skipped), steps, optional read-back `verify`.
#[derive(Debug, Clone)]
pub struct Action {
    pub precondition: Option<Vec<Step>>,
    pub steps: Vec<Step>,
    pub verify: Option<Vec<Step>>,
    /// Read-only steps the UI-change canary runs: they reach the pages the action
    /// uses without writing and check that its locators still resolve.
    pub probe: Option<Vec<Step>>,
    pub line: usize,
    pub col: usize,
}

/// A template string as written in the playbook (checked at load time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    /// Refers to `secret.*` or `totp()`, or was marked `sensitive: true`:
    /// its rendered value must never be shown.
    pub sensitive: bool,
    pub line: usize,
    pub col: usize,
}

impl Template {
    /// No template syntax at all: renders to itself.
    pub fn is_literal(&self) -> bool {
        !(self.source.contains("{{") || self.source.contains("{%") || self.source.contains("{#"))
    }
}

/// A locator, possibly with template placeholders (`tr:has-text('{{ user.email }}')`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatorTpl(pub Template);

impl LocatorTpl {
    pub fn source(&self) -> &str {
        &self.0.source
    }
}

/// A compiled regular expression with the position it was written at.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: regex::Regex,
    pub line: usize,
    pub col: usize,
}

impl Pattern {
    /// The first capture group, or the whole match when the pattern has none.
    pub fn extract<'t>(&self, haystack: &'t str) -> Option<&'t str> {
        let caps = self.regex.captures(haystack)?;
        caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str())
    }
}

/// One step with its common options and its position in the file.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    pub timeout: Option<Duration>,
    /// Label for logs and evidence.
    pub name: Option<String>,
    /// Overrides the screenshot policy for this step.
    pub screenshot: Option<bool>,
    pub line: usize,
    pub col: usize,
}

impl Step {
    /// The step's own timeout, else the playbook default.
    pub fn timeout_or(&self, defaults: &Defaults) -> Duration {
        self.timeout.unwrap_or(defaults.timeout)
    }
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Goto {
        url: Template,
        /// HTTP statuses of 500 and more that load like a page instead of failing.
        allow_status: Vec<u16>,
    },
    Fill {
        into: LocatorTpl,
        value: Template,
        /// `sensitive: true`, or the value comes from `secret.*`/`totp()`.
        sensitive: bool,
    },
    Click {
        on: LocatorTpl,
    },
    Select {
        in_: LocatorTpl,
        /// One option, or several for a multi-select.
        options: Vec<Template>,
        /// Written as `options:`: each template may give a list (`{{ user.app_roles }}`),
        /// whose items are options; the select ends with exactly these chosen.
        expand: bool,
    },
    Check {
        on: LocatorTpl,
    },
    Uncheck {
        on: LocatorTpl,
    },
    Press {
        key: String,
        on: Option<LocatorTpl>,
    },
    Expect(Expectation),
    WaitFor {
        state: WaitState,
        on: LocatorTpl,
    },
    Extract(Vec<Extraction>),
    /// Arms the policy for the next dialog: accept (typing `text` into a prompt).
    AcceptDialog {
        text: Option<Template>,
    },
    /// Arms the policy for the next dialog: dismiss.
    DismissDialog,
    Screenshot {
        name: Option<String>,
    },
    If {
        cond: Condition,
        then: Vec<Step>,
        else_: Vec<Step>,
    },
    /// `if` with the condition inverted.
    Unless {
        cond: Condition,
        then: Vec<Step>,
        else_: Vec<Step>,
    },
    /// Runs `steps` once per matching row; locators inside are scoped to the row.
    ForEach {
        rows: LocatorTpl,
        steps: Vec<Step>,
    },
    /// Runs `steps`, clicks `next` while it exists and is enabled, up to `max_pages` pages.
    Paginate {
        next: LocatorTpl,
        max_pages: u32,
        steps: Vec<Step>,
    },
    Call {
        name: String,
    },
    /// Appends the current outputs as one record of the action's result (list_users only).
    Emit {
        name: String,
    },
    /// Sets `outputs.NAME` for each entry, in order.
    Set(Vec<(String, Template)>),
    Fail {
        message: Template,
    },
    /// `enable_mfa` only: reads the TOTP setup secret the app shows (a base32 key or an
    /// `otpauth://` URI as text, or a QR code image), hands it to Usher, which stores it
    /// in the vault before the next step runs, and makes it `new_totp`.
    CaptureTotp {
        from: TotpSource,
        on: LocatorTpl,
    },
}

/// Where `capture_totp` reads the setup secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpSource {
    /// The element's text (or a field's value): a base32 key, spaces allowed, or an
    /// `otpauth://` URI.
    Text,
    /// The element as it is drawn (an `img`, `canvas` or `svg`): a QR code of an
    /// `otpauth://` URI.
    Qr,
}

impl StepKind {
    /// The step keyword as written in YAML.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Goto { .. } => "goto",
            Self::Fill { .. } => "fill",
            Self::Click { .. } => "click",
            Self::Select { .. } => "select",
            Self::Check { .. } => "check",
            Self::Uncheck { .. } => "uncheck",
            Self::Press { .. } => "press",
            Self::Expect(_) => "expect",
            Self::WaitFor { .. } => "wait_for",
            Self::Extract(_) => "extract",
            Self::AcceptDialog { .. } => "accept_dialog",
            Self::DismissDialog => "dismiss_dialog",
            Self::Screenshot { .. } => "screenshot",
            Self::If { .. } => "if",
            Self::Unless { .. } => "unless",
            Self::ForEach { .. } => "for_each",
            Self::Paginate { .. } => "paginate",
            Self::Call { .. } => "call",
            Self::Emit { .. } => "emit",
            Self::Set(_) => "set",
            Self::Fail { .. } => "fail",
            Self::CaptureTotp { .. } => "capture_totp",
        }
    }
}

/// Every step keyword, in reference order.
pub const STEP_NAMES: &[&str] = &[
    "goto",
    "fill",
    "click",
    "select",
    "check",
    "uncheck",
    "press",
    "expect",
    "wait_for",
    "extract",
    "accept_dialog",
    "dismiss_dialog",
    "screenshot",
    "if",
    "unless",
    "for_each",
    "paginate",
    "call",
    "emit",
    "set",
    "fail",
    "capture_totp",
];

#[derive(Debug, Clone)]
pub enum Expectation {
    Visible(LocatorTpl),
    Hidden(LocatorTpl),
    /// The text appears on the page, or inside `in_`.
    Text {
        text: Template,
        in_: Option<LocatorTpl>,
    },
    /// The current URL matches.
    Url(Pattern),
}

#[derive(Debug, Clone)]
pub struct Extraction {
    /// Becomes `outputs.NAME`.
    pub name: String,
    pub from: ExtractFrom,
    /// Required outside `for_each` for text/attribute/value; inside
    /// `for_each`, absent means the row itself. Never used with `url`.
    pub locator: Option<LocatorTpl>,
    /// Keeps the first capture group (or the whole match if none).
    pub pattern: Option<Pattern>,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractFrom {
    Text,
    /// The named attribute.
    Attribute(String),
    Url,
    /// The value of an input, select or textarea.
    Value,
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// At least one match is in the page, hidden or not (`wait_for: attached`).
    Exists(LocatorTpl),
    /// No match at all.
    NotExists(LocatorTpl),
    /// At least one of all the matches is visible (`wait_for: visible`).
    Visible(LocatorTpl),
    /// No match is visible: none at all, or all hidden (`wait_for: hidden`).
    Hidden(LocatorTpl),
    /// Truthy after rendering: not empty, not `false`, `0`, `no`, `none`.
    Value(Template),
}

/// Outcome of [`Playbook::map_roles_detailed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMapping {
    /// App roles, deduplicated, in first-seen order.
    pub app_roles: Vec<String>,
    /// Input names with no entry in `roles` (dropped).
    pub unmapped: Vec<String>,
}

impl Playbook {
    pub fn action(&self, name: ActionName) -> Option<&Action> {
        self.actions.get(&name)
    }

    /// Whether a template of the action (its steps and the subroutines they call)
    /// uses the variable `var` (`generated_password`: whether create_user sets the
    /// password Usher keeps for single sign-on).
    pub fn action_uses(&self, name: ActionName, var: &str) -> bool {
        fn walk(pb: &Playbook, steps: &[Step], var: &str, seen: &mut Vec<String>) -> bool {
            steps.iter().any(|s| {
                let mut ts = Vec::new();
                super::template::step_templates(s, &mut ts);
                if ts.iter().any(|t| t.source.contains(var)) {
                    return true;
                }
                match &s.kind {
                    StepKind::If { then, else_, .. } | StepKind::Unless { then, else_, .. } => {
                        walk(pb, then, var, seen) || walk(pb, else_, var, seen)
                    }
                    StepKind::ForEach { steps, .. } | StepKind::Paginate { steps, .. } => {
                        walk(pb, steps, var, seen)
                    }
                    StepKind::Call { name } if !seen.contains(name) => {
                        seen.push(name.clone());
                        pb.subroutines
                            .get(name)
                            .is_some_and(|sub| walk(pb, sub, var, seen))
                    }
                    _ => false,
                }
            })
        }
        self.action(name)
            .is_some_and(|a| walk(self, &a.steps, var, &mut Vec::new()))
    }

    /// SCIM roles and group names → app roles through `roles`.
    /// Names match exactly, else case-insensitively. Unmapped names are
    /// dropped (see [`Self::map_roles_detailed`] to log them).
    pub fn map_roles(&self, scim_roles_and_groups: &[String]) -> Vec<String> {
        self.map_roles_detailed(scim_roles_and_groups).app_roles
    }

    pub fn map_roles_detailed(&self, scim_roles_and_groups: &[String]) -> RoleMapping {
        let mut out = RoleMapping::default();
        for name in scim_roles_and_groups {
            let targets = self.roles.get(name).or_else(|| {
                self.roles
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            });
            match targets {
                Some(ts) => {
                    for t in ts {
                        if !out.app_roles.contains(t) {
                            out.app_roles.push(t.clone());
                        }
                    }
                }
                None => {
                    if !out.unmapped.contains(name) {
                        out.unmapped.push(name.clone());
                    }
                }
            }
        }
        out
    }

    /// Every step of the playbook (depth first), for tools and tests.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                match &s.kind {
                    StepKind::If { then, else_, .. } | StepKind::Unless { then, else_, .. } => {
                        walk(then, out);
                        walk(else_, out);
                    }
                    StepKind::ForEach { steps, .. } | StepKind::Paginate { steps, .. } => {
                        walk(steps, out)
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.login, &mut out);
        walk(&self.session_check, &mut out);
        if let Some(u) = &self.user_login {
            walk(&u.steps, &mut out);
        }
        for steps in self.subroutines.values() {
            walk(steps, &mut out);
        }
        for a in self.actions.values() {
            walk(a.precondition.as_deref().unwrap_or(&[]), &mut out);
            walk(&a.steps, &mut out);
            walk(a.verify.as_deref().unwrap_or(&[]), &mut out);
        }
        out
    }
}
