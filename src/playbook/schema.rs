//! JSON Schema of the playbook file format, generated with schemars from
//! types that mirror the YAML surface (the loader itself walks a node tree
//! so that it can report every mistake at once; tests keep the two in step).

#![allow(dead_code)] // these types exist only to describe the format

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The JSON Schema for playbook files (draft 2020-12), for editors such as
/// yaml-language-server (`# yaml-language-server: $schema=…`).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PlaybookDoc);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}

/// An Usher playbook: how to log in to one app and one action per lifecycle task.
#[derive(JsonSchema)]
#[schemars(title = "Usher playbook")]
#[serde(deny_unknown_fields)]
struct PlaybookDoc {
    /// Name of the app.
    app: String,
    /// Format version; must be 1.
    #[schemars(range(min = 1, max = 1))]
    version: u32,
    defaults: Option<DefaultsDoc>,
    sessions: Option<SessionsDoc>,
    /// Steps run when `session_check` fails, or `{steps, refused}`.
    login: LoginDoc,
    /// Steps that succeed when the kept session is still logged in.
    #[schemars(length(min = 1))]
    session_check: Vec<StepDoc>,
    /// Reusable step sequences, run with `call: NAME`.
    subroutines: Option<BTreeMap<String, Vec<StepDoc>>>,
    actions: ActionsDoc,
    /// SCIM role or group name → app role (or list of app roles).
    roles: Option<BTreeMap<String, RoleTargetDoc>>,
    /// The app tells account names apart by case (default false: `Alice` and `alice`
    /// are one account, as in SCIM); the list_users read-back compares user names
    /// exactly when true.
    case_sensitive_names: Option<bool>,
    accounts: Option<AccountsDoc>,
    user_login: Option<UserLoginDoc>,
}

/// Single sign-on through Usher (docs/sso.md): how one person is signed in to the app
/// with the credentials Usher holds for them (`secret.username`, `secret.password`;
/// the person is `user`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct UserLoginDoc {
    #[schemars(length(min = 1))]
    steps: Vec<StepDoc>,
    /// A regular expression: an app response that redirects to a matching URL means
    /// the person's app session ended (Usher signs them in again).
    signed_out: String,
    /// A regular expression: a request whose path and query match is the app's sign-out, and
    /// ends the person's SSO session for the app too.
    logout: Option<String>,
}

/// How the app holds and shows an account's roles in `list_users`, for
/// reconciliation's drift check (docs/reconcile.md).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct AccountsDoc {
    /// `one`: the app holds one role per account, the first of the mapped app roles
    /// (sorted), as `user.app_roles | first` gives it. Default `many`.
    roles: Option<AccountRolesDoc>,
    /// What the app shows for an account granted no role (`Viewer`).
    no_role: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum AccountRolesDoc {
    One,
    Many,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct DefaultsDoc {
    /// Per-step timeout (default 15s).
    timeout: Option<DurationDoc>,
    /// When evidence screenshots are taken (default on_change).
    screenshots: Option<ScreenshotsDoc>,
}

/// How many logged-in sessions of the service account Usher keeps open, and how long a
/// session that proved itself is used without `session_check`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionsDoc {
    /// Sessions at most at once (default: the integration's `concurrency`; 1 for a
    /// playbook without `login.refused`). 1 for apps that allow one session per account.
    #[schemars(range(min = 1, max = 64))]
    max: Option<u32>,
    /// How long a session that passed its check or an action is trusted (default 60s;
    /// 0s checks before every action).
    trust: Option<TrustDoc>,
}

/// A duration, or 0s.
struct TrustDoc;

impl JsonSchema for TrustDoc {
    fn schema_name() -> Cow<'static, str> {
        "Trust".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]{1,9}(ms|s|m)$",
            "description": "A whole number with a unit (0s, 30s, 2m): at most 1 hour."
        })
    }
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ScreenshotsDoc {
    OnChange,
    Always,
    OnFailure,
}

/// A duration: a whole number with a unit: 500ms, 15s, 2m.
struct DurationDoc;

impl JsonSchema for DurationDoc {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]{1,9}(ms|s|m)$",
            "description": "A whole number with a unit: 500ms, 15s, 2m."
        })
    }
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ActionsDoc {
    create_user: Option<ActionDoc>,
    update_user: Option<ActionDoc>,
    deactivate_user: Option<ActionDoc>,
    reactivate_user: Option<ActionDoc>,
    delete_user: Option<ActionDoc>,
    set_roles: Option<ActionDoc>,
    list_users: Option<ActionDoc>,
    rotate_password: Option<ActionDoc>,
    /// Enrols TOTP for the service account: its steps must `capture_totp` the secret
    /// the app shows, then confirm it with `{{ totp(new_totp) }}`. No screenshots are
    /// taken (the page shows the secret).
    enable_mfa: Option<ActionDoc>,
    /// Single sign-on (docs/sso.md): an admin sets a person's own password in the app
    /// (`user` is the person, `new_password` the password). Rotates it, and gives one
    /// to an account created before single sign-on was enabled.
    set_user_password: Option<ActionDoc>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ActionDoc {
    /// If these steps succeed, the work is already done and the action is skipped.
    precondition: Option<Vec<StepDoc>>,
    #[schemars(length(min = 1))]
    steps: Vec<StepDoc>,
    /// Read-back: confirms the app now shows what was asked.
    verify: Option<Vec<StepDoc>>,
    /// Read-only steps the UI-change canary runs: they reach the action's pages without
    /// writing and check that its locators still resolve (no fill, click, select,
    /// check, uncheck, press or dialog steps).
    probe: Option<Vec<StepDoc>>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum LoginDoc {
    /// The login steps.
    Steps(#[schemars(length(min = 1))] Vec<StepDoc>),
    WithRefused(LoginFullDoc),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct LoginFullDoc {
    /// The login steps.
    #[schemars(length(min = 1))]
    steps: Vec<StepDoc>,
    /// Locators of what the app shows when it refuses a sign-in (wrong password or code,
    /// locked account): the first one shown is the reason the integration is paused.
    #[schemars(length(min = 1))]
    refused: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum RoleTargetDoc {
    One(String),
    Many(Vec<String>),
}

/// Keys every step may carry besides its step keyword.
#[derive(JsonSchema)]
struct CommonDoc {
    /// Overrides `defaults.timeout` for this step.
    timeout: Option<DurationDoc>,
    /// Label for logs and evidence.
    name: Option<String>,
    /// Force (true) or suppress (false) the evidence screenshot of this step.
    screenshot: Option<bool>,
}

/// One step: a map with exactly one step keyword.
#[derive(JsonSchema)]
#[serde(untagged)]
enum StepDoc {
    Goto(GotoStep),
    Fill(FillStep),
    Click(ClickStep),
    Select(SelectStep),
    Check(CheckStep),
    Uncheck(UncheckStep),
    Press(PressStep),
    Expect(ExpectStep),
    WaitFor(WaitForStep),
    Extract(ExtractStep),
    AcceptDialog(AcceptDialogStep),
    DismissDialog(DismissDialogStep),
    Screenshot(ScreenshotStep),
    If(IfStep),
    Unless(UnlessStep),
    ForEach(ForEachStep),
    Paginate(PaginateStep),
    Call(CallStep),
    Emit(EmitStep),
    Set(SetStep),
    Fail(FailStep),
    CaptureTotp(CaptureTotpStep),
}

/// A step's example for editors, written as JSON in the `step_doc!` table (each one is
/// checked by a unit test to parse).
fn example(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
}

macro_rules! step_doc {
    ($name:ident, $key:literal, $ty:ty, $doc:literal, $ex:expr) => {
        #[derive(JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[schemars(description = $doc, example = example($ex))]
        struct $name {
            #[doc = $doc]
            #[serde(rename = $key)]
            arg: $ty,
            #[serde(flatten)]
            common: CommonDoc,
        }
    };
}

/// Every `step_doc!` example, for the test that they parse.
#[cfg(test)]
pub(super) const STEP_EXAMPLES: &[&str] = &[
    GOTO_EX,
    FILL_EX,
    CLICK_EX,
    SELECT_EX,
    CHECK_EX,
    UNCHECK_EX,
    PRESS_EX,
    EXPECT_EX,
    WAIT_FOR_EX,
    EXTRACT_EX,
    ACCEPT_EX,
    DISMISS_EX,
    FOR_EACH_EX,
    PAGINATE_EX,
    CALL_EX,
    EMIT_EX,
    SET_EX,
    FAIL_EX,
    SCREENSHOT_EX,
    IF_EX,
    UNLESS_EX,
    CAPTURE_TOTP_EX,
];

const GOTO_EX: &str = r##"{"goto": "{{ base_url }}/admin/users"}"##;
const FILL_EX: &str = r##"{"fill": {"into": "#email", "value": "{{ user.email }}"}}"##;
const CLICK_EX: &str = r##"{"click": "role=button[name='Save']"}"##;
const SELECT_EX: &str = r##"{"select": {"in": "#role", "option": "{{ user.app_roles | first | default('Viewer') }}"}}"##;
const CHECK_EX: &str = r##"{"check": "#active"}"##;
const UNCHECK_EX: &str = r##"{"uncheck": "#active"}"##;
const PRESS_EX: &str = r##"{"press": {"key": "Enter", "on": "#search"}}"##;
const EXPECT_EX: &str = r##"{"expect": {"url": "/admin/users/\\d+$"}}"##;
const WAIT_FOR_EX: &str = r##"{"wait_for": {"detached": ".spinner"}}"##;
const EXTRACT_EX: &str =
    r##"{"extract": {"app_id": {"from": "url", "pattern": "/users/(\\d+)$"}}}"##;
const ACCEPT_EX: &str = r##"{"accept_dialog": {}}"##;
const DISMISS_EX: &str = r##"{"dismiss_dialog": {}}"##;
const FOR_EACH_EX: &str = r##"{"for_each": {"rows": "table#users tbody tr", "steps": [{"extract": {"email": {"from": "text", "locator": "td:nth-child(1)"}}}, {"emit": "user"}]}}"##;
const PAGINATE_EX: &str = r##"{"paginate": {"next": "a[rel=next]", "max_pages": 100, "steps": [{"call": "read_page"}]}}"##;
const CALL_EX: &str = r##"{"call": "open_user"}"##;
const EMIT_EX: &str = r##"{"emit": "user"}"##;
const SET_EX: &str = r##"{"set": {"role": "{{ user.app_roles | first | default('Viewer') }}"}}"##;
const FAIL_EX: &str = r##"{"fail": "no account for {{ user.email }} yet"}"##;
const CAPTURE_TOTP_EX: &str = r##"{"capture_totp": {"text": "#totp-key"}}"##;
const SCREENSHOT_EX: &str = r##"{"screenshot": {"name": "before-delete"}}"##;
const IF_EX: &str = r##"{"if": {"exists": "text=Delete user"}, "then": [{"accept_dialog": {}}, {"click": "text=Delete user"}], "else": [{"fail": "no delete button"}]}"##;
const UNLESS_EX: &str = r##"{"unless": {"exists": "text=\"{{ user.email | lower }}\""}, "then": [{"fail": "no account for {{ user.email }} yet"}]}"##;

step_doc!(
    GotoStep,
    "goto",
    GotoDoc,
    "Open this URL (template), or {url, allow_status}, and wait for the page to load. Fails when the app cannot be reached or answers with HTTP status 500 or more, unless `allow_status` lists that status; a 4xx page loads like any other (check it with `expect`).",
    GOTO_EX
);
step_doc!(
    FillStep,
    "fill",
    FillDoc,
    "Type a value into a field (replacing what it holds). Values from secret.*, new_password and totp() are redacted everywhere; `sensitive: true` redacts any other.",
    FILL_EX
);
step_doc!(
    ClickStep,
    "click",
    ClickDoc,
    "Click an element: a locator, or {on: locator}. Waits until it is visible, enabled, stable and not covered.",
    CLICK_EX
);
step_doc!(
    SelectStep,
    "select",
    SelectDoc,
    "Choose option(s) of a <select>. Each option is matched by value first, then by label, then by label ignoring case: the value wins.",
    SELECT_EX
);
step_doc!(
    CheckStep,
    "check",
    String,
    "Tick a checkbox (locator); nothing happens if it is ticked already.",
    CHECK_EX
);
step_doc!(
    UncheckStep,
    "uncheck",
    String,
    "Untick a checkbox (locator); nothing happens if it is unticked already.",
    UNCHECK_EX
);
step_doc!(
    PressStep,
    "press",
    PressDoc,
    "Press a key (Enter, Tab, Control+A), on an element or the focused one.",
    PRESS_EX
);
step_doc!(
    ExpectStep,
    "expect",
    ExpectDoc,
    "Wait until the page shows this, or fail: {visible: LOC} | {hidden: LOC} | {text: TEMPLATE, in?: LOC} | {url: REGEX}. `url` is searched anywhere in the URL (a substring match); anchor it with ^ and $.",
    EXPECT_EX
);
step_doc!(
    WaitForStep,
    "wait_for",
    WaitForDoc,
    "Wait until an element is visible, hidden, attached or detached.",
    WAIT_FOR_EX
);
step_doc!(
    ExtractStep,
    "extract",
    BTreeMap<String, ExtractionDoc>,
    "Read values into outputs.NAME: from text, value, attribute (with `name`) or url; `pattern` keeps its first group.",
    EXTRACT_EX
);
step_doc!(
    AcceptDialogStep,
    "accept_dialog",
    Option<AcceptDialogDoc>,
    "Accept the next JavaScript dialog (typing `text` into a prompt); put it before the click that opens it.",
    ACCEPT_EX
);
step_doc!(
    DismissDialogStep,
    "dismiss_dialog",
    Option<EmptyDoc>,
    "Dismiss the next JavaScript dialog; put it before the click that opens it.",
    DISMISS_EX
);
step_doc!(
    ForEachStep,
    "for_each",
    ForEachDoc,
    "Run steps once per row; locators inside are scoped to the row, `row` is the row itself.",
    FOR_EACH_EX
);
step_doc!(
    PaginateStep,
    "paginate",
    PaginateDoc,
    "Run steps on each page, clicking `next` until it is gone or disabled (at most max_pages pages).",
    PAGINATE_EX
);
step_doc!(
    CallStep,
    "call",
    String,
    "Run a subroutine's steps here, with the same outputs.",
    CALL_EX
);
step_doc!(
    EmitStep,
    "emit",
    String,
    "Append the current outputs as one record (list_users only).",
    EMIT_EX
);
step_doc!(
    SetStep,
    "set",
    BTreeMap<String, String>,
    "Set outputs.NAME to a template's value.",
    SET_EX
);
step_doc!(
    FailStep,
    "fail",
    String,
    "Fail the action with this message (template). In a precondition it is the answer \"not done yet\": the action's steps run.",
    FAIL_EX
);

step_doc!(
    CaptureTotpStep,
    "capture_totp",
    CaptureTotpDoc,
    "enable_mfa only: read the TOTP setup secret the app shows, from an element's text (a base32 key, spaces allowed, or an otpauth:// URI) or from a QR code drawn by an element (`qr`), and have Usher store it in the vault before the next step runs; afterwards `{{ totp(new_totp) }}` gives the code that confirms it.",
    CAPTURE_TOTP_EX
);

/// Take an evidence screenshot (`screenshot: {}` or `screenshot: {name: …}`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example(SCREENSHOT_EX))]
struct ScreenshotStep {
    screenshot: Option<ScreenshotDoc>,
    timeout: Option<DurationDoc>,
    name: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ScreenshotDoc {
    name: Option<String>,
}

/// Run `then` when the condition holds, else `else`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example(IF_EX))]
struct IfStep {
    /// Condition: {exists|not_exists|visible|hidden: LOC} | {value: TEMPLATE}.
    #[serde(rename = "if")]
    cond: ConditionDoc,
    then: Vec<StepDoc>,
    #[serde(rename = "else")]
    else_: Option<Vec<StepDoc>>,
    #[serde(flatten)]
    common: CommonDoc,
}

/// Run `then` when the condition does not hold, else `else`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example(UNLESS_EX))]
struct UnlessStep {
    /// Condition, inverted: {exists|not_exists|visible|hidden: LOC} | {value: TEMPLATE}.
    unless: ConditionDoc,
    then: Vec<StepDoc>,
    #[serde(rename = "else")]
    else_: Option<Vec<StepDoc>>,
    #[serde(flatten)]
    common: CommonDoc,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum ConditionDoc {
    /// At least one match in the page, hidden or not (like `wait_for: attached`).
    Exists(String),
    /// No match at all.
    NotExists(String),
    /// At least one match visible (like `wait_for: visible`).
    Visible(String),
    /// No match visible: none, or all hidden (like `wait_for: hidden`).
    Hidden(String),
    /// The rendered template is truthy.
    Value(String),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum GotoDoc {
    Url(String),
    Full(GotoFullDoc),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct GotoFullDoc {
    /// The URL (template).
    url: String,
    /// HTTP statuses from 500 to 599 that load like a page instead of failing the step.
    allow_status: Option<StatusesDoc>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum StatusesDoc {
    One(#[schemars(range(min = 500, max = 599))] u16),
    Many(Vec<u16>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct FillDoc {
    /// Locator of the field.
    into: String,
    /// Template of the value.
    value: String,
    /// Treat the value as secret (automatic for secret.* and totp()).
    sensitive: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum ClickDoc {
    Locator(String),
    On(ClickOnDoc),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClickOnDoc {
    on: String,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(untagged)]
enum SelectDoc {
    /// One option, or a list (a multi-select).
    Option(SelectOptionDoc),
    /// Exactly these options, the rest cleared: a template giving a list
    /// (`{{ user.app_roles }}`), or a list of templates.
    Options(SelectOptionsDoc),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SelectOptionDoc {
    #[serde(rename = "in")]
    in_: String,
    option: OneOrManyDoc,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SelectOptionsDoc {
    #[serde(rename = "in")]
    in_: String,
    options: OneOrManyDoc,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum OneOrManyDoc {
    One(String),
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct PressDoc {
    /// Key name: Enter, Tab, a, Control+A.
    key: String,
    on: Option<String>,
}

#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
enum ExpectDoc {
    Visible {
        visible: String,
        timeout: Option<DurationDoc>,
    },
    Hidden {
        hidden: String,
        timeout: Option<DurationDoc>,
    },
    Text {
        text: String,
        #[serde(rename = "in")]
        in_: Option<String>,
        timeout: Option<DurationDoc>,
    },
    Url {
        /// Regular expression the current URL must match.
        url: String,
        timeout: Option<DurationDoc>,
    },
}

#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
enum WaitForDoc {
    Visible {
        visible: String,
        timeout: Option<DurationDoc>,
    },
    Hidden {
        hidden: String,
        timeout: Option<DurationDoc>,
    },
    Attached {
        attached: String,
        timeout: Option<DurationDoc>,
    },
    Detached {
        detached: String,
        timeout: Option<DurationDoc>,
    },
}

#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
enum CaptureTotpDoc {
    /// The element's text (or a field's value).
    Text { text: String },
    /// A QR code the element draws (an img, canvas or svg), of an otpauth:// URI.
    Qr { qr: String },
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExtractionDoc {
    from: ExtractFromDoc,
    locator: Option<String>,
    /// Attribute name (from: attribute).
    name: Option<String>,
    /// Regular expression; keeps the first capture group.
    pattern: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ExtractFromDoc {
    Text,
    Attribute,
    Url,
    Value,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct AcceptDialogDoc {
    text: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmptyDoc {}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ForEachDoc {
    /// Locator matching every row.
    rows: String,
    steps: Vec<StepDoc>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct PaginateDoc {
    /// Locator of the "next page" control.
    next: String,
    #[schemars(range(min = 1, max = 10000))]
    max_pages: u32,
    steps: Vec<StepDoc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_kind_has_a_description_and_an_example_that_parses() {
        for ex in STEP_EXAMPLES {
            let v: serde_json::Value = serde_json::from_str(ex).expect("example parses");
            let keys: Vec<&String> = v.as_object().expect("a map").keys().collect();
            assert!(
                keys.iter()
                    .any(|k| super::super::STEP_NAMES.contains(&k.as_str())),
                "{ex}"
            );
        }
        let schema = json_schema();
        let defs = schema["$defs"].as_object().expect("$defs");
        let steps = defs["StepDoc"]["anyOf"].as_array().expect("step kinds");
        assert_eq!(steps.len(), STEP_EXAMPLES.len());
        for s in steps {
            let name = s["$ref"]
                .as_str()
                .expect("ref")
                .rsplit('/')
                .next()
                .expect("name");
            let def = &defs[name];
            assert!(def["description"].is_string(), "{name}: {def}");
            assert!(
                def["examples"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty() && !e[0].is_null()),
                "{name}: {def}"
            );
        }
    }
}
