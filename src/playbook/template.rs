//! Templates: minijinja with strict undefined, the render context, and the
//! load-time checks (syntax, unknown variables, unknown filters).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::locator_check::validate_locator;
use super::model::{Condition, Expectation, LocatorTpl, Playbook, Step, StepKind, Template};
use super::redact::Redactor;

/// Top-level names a template may use.
pub const KNOWN_VARIABLES: &[&str] = &[
    "user",
    "integration",
    "base_url",
    "secret",
    "outputs",
    "new_password",
    "generated_password",
    "new_totp",
];

/// Names whose values are secret: a template using them renders a sensitive value.
const SENSITIVE_NAMES: &[&str] = &[
    "secret",
    "new_password",
    "generated_password",
    "new_totp",
    "totp",
];

/// Computes a TOTP code from a seed (the vault provides it). `Err` is a
/// message that must not contain the seed.
pub type TotpFn = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

fn build_env(totp: TotpFn) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.add_function(
        "totp",
        move |seed: String| -> Result<String, minijinja::Error> {
            totp(&seed).map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("totp(): {e}"))
            })
        },
    );
    env
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// A load-time template problem; `line` is 1-based inside the template text.
pub(super) struct TemplateIssue {
    pub line: usize,
    pub message: String,
}

/// Checks templates at load time, with the same environment as at run time.
pub(super) struct TemplateChecker {
    env: Environment<'static>,
    globals: HashSet<String>,
}

impl TemplateChecker {
    pub fn new() -> Self {
        let env = build_env(Arc::new(|_| Ok("000000".into())));
        let globals = env.globals().map(|(k, _)| k.to_owned()).collect();
        Self { env, globals }
    }

    /// `Ok(sensitive)` or every problem found in this template.
    pub fn check(&self, src: &str) -> Result<bool, Vec<TemplateIssue>> {
        let tmpl = match self.env.template_from_str(src) {
            Ok(t) => t,
            Err(e) => {
                return Err(vec![TemplateIssue {
                    line: e.line().unwrap_or(1).max(1),
                    message: format!("template syntax error: {}", describe(&e)),
                }]);
            }
        };
        let mut issues = Vec::new();
        let vars = tmpl.undeclared_variables(false);
        let mut unknown: Vec<&String> = vars
            .iter()
            .filter(|v| !KNOWN_VARIABLES.contains(&v.as_str()) && !self.globals.contains(*v))
            .collect();
        unknown.sort();
        for v in unknown {
            issues.push(TemplateIssue {
                line: 1,
                message: format!(
                    "unknown variable `{v}`{}; known: {}",
                    super::suggest::hint(v, KNOWN_VARIABLES),
                    KNOWN_VARIABLES.join(", ")
                ),
            });
        }
        for f in filter_names(src) {
            let mut state = self.env.empty_state();
            if let Err(e) = state.apply_filter(&f, &[])
                && e.kind() == ErrorKind::UnknownFilter
            {
                issues.push(TemplateIssue {
                    line: 1,
                    message: format!("unknown filter `{f}`"),
                });
            }
        }
        if issues.is_empty() {
            Ok(vars.iter().any(|v| SENSITIVE_NAMES.contains(&v.as_str())))
        } else {
            Err(issues)
        }
    }
}

static FILTER_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)").unwrap_or_else(|_| unreachable!())
});
static BLOCK_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}").unwrap_or_else(|_| unreachable!())
});
static STRING_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r#"'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*""#).unwrap_or_else(|_| unreachable!())
});

/// Filter names used in the expression blocks of a template.
fn filter_names(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in BLOCK_RE.find_iter(src) {
        let code = STRING_RE.replace_all(block.as_str(), "''");
        for c in FILTER_RE.captures_iter(&code) {
            if let Some(m) = c.get(1)
                && !out.iter().any(|x: &String| x == m.as_str())
            {
                out.push(m.as_str().to_owned());
            }
        }
    }
    out
}

/// The locator text with template parts replaced by a neutral placeholder,
/// so that its syntax can be checked at load time.
pub(super) fn locator_skeleton(src: &str) -> String {
    static ANY: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}").unwrap_or_else(|_| unreachable!())
    });
    ANY.replace_all(src, |c: &regex::Captures<'_>| {
        if c.get(0).is_some_and(|m| m.as_str().starts_with("{{")) {
            "x"
        } else {
            ""
        }
    })
    .into_owned()
}

/// The user, flattened to friendly names for templates (the engine fills it from the
/// SCIM resource: `engine::user_context`). Absent values are left out, so using them is an error (strict undefined)
/// unless the template says `| default(…)`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UserContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Primary email, else the work one, else the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Emails by type: `user.emails.work`, `user.emails.home`.
    pub emails: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The app's own id for the account, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Anything else the engine wants to expose (`user.<key>`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IntegrationContext {
    pub id: String,
    pub name: String,
    pub base_url: String,
}

/// Everything a template can see during one action run.
#[derive(Clone, Default)]
pub struct TemplateContext {
    pub user: UserContext,
    pub integration: IntegrationContext,
    /// `secret.username`, `secret.password`, `secret.totp`, and extra fields.
    pub secret: BTreeMap<String, SecretString>,
    /// Values extracted or set so far in this action.
    pub outputs: BTreeMap<String, String>,
    /// Only for rotate_password.
    pub new_password: Option<SecretString>,
    /// Only for create_user: a fresh random password for the new account, for apps whose
    /// create form requires one. Set by the caller (which may keep it, e.g. for single
    /// sign-on) or else generated per create_user run; never stored by the runner.
    pub generated_password: Option<SecretString>,
    /// Only in enable_mfa, after its `capture_totp` step: the TOTP secret the app
    /// showed (`totp(new_totp)` gives the code that confirms it).
    pub new_totp: Option<SecretString>,
}

impl std::fmt::Debug for TemplateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateContext")
            .field("user", &self.user)
            .field("integration", &self.integration)
            .field("secret", &self.secret.keys().collect::<Vec<_>>())
            .field("outputs", &self.outputs.keys().collect::<Vec<_>>())
            .field(
                "new_password",
                &self.new_password.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "generated_password",
                &self.generated_password.as_ref().map(|_| "[REDACTED]"),
            )
            .field("new_totp", &self.new_totp.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl TemplateContext {
    pub fn new(user: UserContext, integration: IntegrationContext) -> Self {
        Self {
            user,
            integration,
            ..Default::default()
        }
    }

    pub fn with_secret(mut self, name: &str, value: impl Into<String>) -> Self {
        self.secret
            .insert(name.to_owned(), SecretString::from(value.into()));
        self
    }

    /// A redactor that knows this context's secrets (vault values, new password).
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::new();
        for v in self.secret.values() {
            r.add(v.expose_secret());
        }
        if let Some(p) = &self.new_password {
            r.add(p.expose_secret());
        }
        if let Some(p) = &self.generated_password {
            r.add(p.expose_secret());
        }
        if let Some(p) = &self.new_totp {
            r.add(p.expose_secret());
        }
        r
    }

    fn to_value(&self) -> Value {
        let secrets: BTreeMap<&str, &str> = self
            .secret
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        let mut m: BTreeMap<&str, Value> = BTreeMap::new();
        m.insert("user", Value::from(minijinja::value::Serde(&self.user)));
        m.insert(
            "integration",
            Value::from(minijinja::value::Serde(&self.integration)),
        );
        m.insert("base_url", Value::from(self.integration.base_url.as_str()));
        m.insert("secret", Value::from(minijinja::value::Serde(&secrets)));
        m.insert(
            "outputs",
            Value::from(minijinja::value::Serde(&self.outputs)),
        );
        if let Some(p) = &self.new_password {
            m.insert("new_password", Value::from(p.expose_secret()));
        }
        if let Some(p) = &self.generated_password {
            m.insert("generated_password", Value::from(p.expose_secret()));
        }
        if let Some(p) = &self.new_totp {
            m.insert("new_totp", Value::from(p.expose_secret()));
        }
        Value::from(minijinja::value::Serde(&m))
    }
}

/// A rendered template. When `sensitive`, `text` must never be shown;
/// its Debug form is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub sensitive: bool,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if self.sensitive {
            super::redact::REDACTED
        } else {
            &self.text
        };
        f.debug_struct("Rendered")
            .field("text", &text)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl Rendered {
    /// Truthiness for `if: {value: …}`: false when the text, trimmed, is
    /// empty or one of `false`, `0`, `no`, `none` (any case).
    pub fn is_truthy(&self) -> bool {
        let t = self.text.trim().to_ascii_lowercase();
        !matches!(t.as_str(), "" | "false" | "0" | "no" | "none")
    }
}

/// A failure while running a playbook's templates. Messages are redacted.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{file}:{line}:{col}: template: {message}")]
    Template {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}:{line}:{col}: locator: {message}")]
    Locator {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
}

/// The compiled templates of one playbook, ready to render.
pub struct TemplateEnv {
    env: Environment<'static>,
    file: String,
}

impl std::fmt::Debug for TemplateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateEnv")
            .field("file", &self.file)
            .finish()
    }
}

impl TemplateEnv {
    /// Compile every template of `playbook`. `totp` computes a code from a
    /// seed (`totp(secret.totp)` in templates).
    pub fn new(
        playbook: &Playbook,
        totp: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static,
    ) -> Result<Self, RenderError> {
        let mut env = build_env(Arc::new(totp));
        let mut all = Vec::new();
        for step in playbook.all_steps() {
            step_templates(step, &mut all);
        }
        for t in all {
            if env.get_template(&t.source).is_err() {
                env.add_template_owned(t.source.clone(), t.source.clone())
                    .map_err(|e| RenderError::Template {
                        file: playbook.source_file.clone(),
                        line: t.line,
                        col: t.col,
                        message: describe(&e),
                    })?;
            }
        }
        Ok(Self {
            env,
            file: playbook.source_file.clone(),
        })
    }

    /// Render one template. Strict: an undefined variable is an error.
    /// A sensitive result is registered with the redactor; error messages
    /// are redacted.
    pub fn render(
        &self,
        tpl: &Template,
        ctx: &TemplateContext,
        redactor: &mut Redactor,
    ) -> Result<Rendered, RenderError> {
        let value = ctx.to_value();
        let result = match self.env.get_template(&tpl.source) {
            Ok(t) => t.render(&value),
            Err(_) => self.env.render_str(&tpl.source, &value),
        };
        match result {
            Ok(text) => {
                let sensitive = tpl.sensitive || redactor.contains_secret(&text);
                if sensitive {
                    redactor.add(&text);
                }
                Ok(Rendered { text, sensitive })
            }
            Err(e) => Err(RenderError::Template {
                file: self.file.clone(),
                line: tpl.line,
                col: tpl.col,
                message: redactor.redact(&describe(&e)),
            }),
        }
    }

    /// Render the options of `select: {options: …}`: a template that is one expression
    /// (`{{ user.app_roles }}`) giving a list gives one option per item; anything else
    /// renders to one option. Items are sensitive like the template.
    pub fn render_options(
        &self,
        tpl: &Template,
        ctx: &TemplateContext,
        redactor: &mut Redactor,
    ) -> Result<Vec<Rendered>, RenderError> {
        let Some(expr) = single_expression(&tpl.source) else {
            return Ok(vec![self.render(tpl, ctx, redactor)?]);
        };
        let fail = |message: String, redactor: &Redactor| RenderError::Template {
            file: self.file.clone(),
            line: tpl.line,
            col: tpl.col,
            message: redactor.redact(&message),
        };
        let value = self
            .env
            .compile_expression(expr)
            .and_then(|e| e.eval(ctx.to_value()))
            .map_err(|e| fail(describe(&e), redactor))?;
        if value.is_undefined() {
            return Err(fail("undefined value".into(), redactor));
        }
        let items: Vec<Value> = match value.kind() {
            minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Iterable => value
                .try_iter()
                .map_err(|e| fail(describe(&e), redactor))?
                .collect(),
            _ => vec![value],
        };
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let sensitive = tpl.sensitive || redactor.contains_secret(&text);
            if sensitive {
                redactor.add(&text);
            }
            out.push(Rendered { text, sensitive });
        }
        Ok(out)
    }

    /// Render a locator and check the result's syntax.
    pub fn render_locator(
        &self,
        loc: &LocatorTpl,
        ctx: &TemplateContext,
        redactor: &mut Redactor,
    ) -> Result<Rendered, RenderError> {
        let r = self.render(&loc.0, ctx, redactor)?;
        validate_locator(&r.text).map_err(|m| RenderError::Locator {
            file: self.file.clone(),
            line: loc.0.line,
            col: loc.0.col,
            message: redactor.redact(&m),
        })?;
        Ok(r)
    }
}

/// `EXPR` when the whole template is `{{ EXPR }}` (surrounding blanks allowed).
fn single_expression(src: &str) -> Option<&str> {
    let inner = src.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-');
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// The templates a step holds directly (not those of nested steps).
pub(super) fn step_templates<'a>(step: &'a Step, out: &mut Vec<&'a Template>) {
    match &step.kind {
        StepKind::Goto { url, .. } => out.push(url),
        StepKind::Fill { into, value, .. } => out.extend([&into.0, value]),
        StepKind::Click { on } | StepKind::Check { on } | StepKind::Uncheck { on } => {
            out.push(&on.0)
        }
        StepKind::Select { in_, options, .. } => {
            out.push(&in_.0);
            out.extend(options);
        }
        StepKind::Press { on, .. } => out.extend(on.iter().map(|l| &l.0)),
        StepKind::Expect(e) => match e {
            Expectation::Visible(l) | Expectation::Hidden(l) => out.push(&l.0),
            Expectation::Text { text, in_ } => {
                out.push(text);
                out.extend(in_.iter().map(|l| &l.0));
            }
            Expectation::Url(_) => {}
        },
        StepKind::WaitFor { on, .. } | StepKind::CaptureTotp { on, .. } => out.push(&on.0),
        StepKind::Extract(xs) => {
            out.extend(xs.iter().filter_map(|x| x.locator.as_ref().map(|l| &l.0)))
        }
        StepKind::AcceptDialog { text } => out.extend(text),
        StepKind::If { cond, .. } | StepKind::Unless { cond, .. } => match cond {
            Condition::Exists(l)
            | Condition::NotExists(l)
            | Condition::Visible(l)
            | Condition::Hidden(l) => out.push(&l.0),
            Condition::Value(t) => out.push(t),
        },
        StepKind::ForEach { rows, .. } => out.push(&rows.0),
        StepKind::Paginate { next, .. } => out.push(&next.0),
        StepKind::Set(entries) => out.extend(entries.iter().map(|(_, t)| t)),
        StepKind::Fail { message } => out.push(message),
        StepKind::DismissDialog
        | StepKind::Screenshot { .. }
        | StepKind::Call { .. }
        | StepKind::Emit { .. } => {}
    }
}
