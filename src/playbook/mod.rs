//! Playbooks: one YAML file per app describing how to log in and one named
//! action per lifecycle task. Data, not code: [`load_file`] / [`load_str`]
//! validate everything before anything runs and report every mistake at once
//! as `file:line:col: message`.
//!
//! Layout: `node` (YAML → position-marked tree), `validate` (tree → typed
//! [`Playbook`], all errors), `model` (the types), `template` (minijinja,
//! strict undefined, render context), `redact` (secrets out of every string),
//! `locator_check` (the browser's locator parser at load time), `schema` (JSON Schema),
//! `run` (executes steps on a browser page), `driver` (browser, sessions, retries),
//! `trace` (a run's steps and screenshots as one HTML file for authors).

mod driver;
mod locator_check;
mod model;
mod node;
mod redact;
mod run;
mod schema;
mod sessions;
mod suggest;
mod template;
pub mod trace;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

pub use driver::{
    AppTarget, Driver, DriverConfig, DriverError, SIGN_IN_BUDGET, SIGN_IN_WINDOW, SignInGate,
    SignInVerdict,
};
pub use locator_check::{ARIA_ROLES, validate_locator};
pub use model::{
    AccountsPolicy, Action, ActionName, Condition, DEFAULT_TIMEOUT, Defaults, Expectation,
    ExtractFrom, Extraction, LocatorTpl, Pattern, Playbook, RoleMapping, STEP_NAMES,
    ScreenshotPolicy, Step, StepKind, Template, TotpSource, UserLogin, WaitState,
};
pub use redact::{REDACTED, Redactor};
pub use run::{
    ActionOutcome, ActionStatus, BeforeStep, KeepOpen, Phase, RunError, RunErrorKind, RunOptions,
    StepAhead, StepObserver, StepOutcome, StepRecord, TotpCapture, add_app_roles, run_action,
    run_phase,
};
pub use schema::json_schema;
pub use template::{
    IntegrationContext, KNOWN_VARIABLES, RenderError, Rendered, TemplateContext, TemplateEnv,
    TotpFn, UserContext,
};
pub use validate::MAX_PAGES;

/// One mistake in a playbook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for PlaybookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every mistake found in a playbook, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookErrors(pub Vec<PlaybookError>);

impl fmt::Display for PlaybookErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlaybookErrors {}

/// Read and validate a playbook file. Positions name `path` as given.
pub fn load_file(path: &Path) -> Result<Playbook, PlaybookErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => load_str(&name, &src),
        Err(e) => Err(PlaybookErrors(vec![PlaybookError {
            file: name,
            line: 1,
            col: 1,
            message: format!("cannot read playbook: {e}"),
        }])),
    }
}

/// Validate playbook text; `name` is used as the file in every position.
pub fn load_str(name: &str, src: &str) -> Result<Playbook, PlaybookErrors> {
    validate::load(name, src).map_err(PlaybookErrors)
}
