//! The UI-change canary: a read-only run that signs in, lists the accounts and runs
//! each action's `probe` (steps that reach the action's pages without writing and
//! check that its locators still resolve). A locator that stopped resolving marks the
//! integration degraded and raises `integration.ui_changed` — before a real joiner or
//! leaver fails on it; the next clean run clears it (`integration.ui_restored`).

use serde::Serialize;
use serde_json::json;

use super::worker::Shared;
use crate::audit::{Actor, NewEvent, kinds};
use crate::playbook::{ActionName, DriverError, RunError, RunErrorKind, UserContext};

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("no integration `{0}` is configured")]
    UnknownIntegration(String),
    /// The app could not be looked at (it answered with errors, the integration is
    /// paused, …): no finding either way.
    #[error("the canary of `{integration}` could not look at the app: {reason}")]
    Inconclusive { integration: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A step of the canary that no longer works on the app's UI.
#[derive(Debug, Clone, Serialize)]
pub struct UiFinding {
    /// `login`, `session_check`, `list_users`, or `probe ACTION`.
    pub part: String,
    /// `playbooks/acme.yaml:42`.
    pub at: String,
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub reason: String,
    /// SHA-256 of the failure screenshot in the evidence store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
}

impl UiFinding {
    fn of(part: String, e: &RunError) -> UiFinding {
        UiFinding {
            part,
            at: e.step_file_line.clone(),
            step: e.step.clone(),
            locator: e.locator.clone(),
            url: e.url.clone(),
            reason: e.reason.clone(),
            screenshot: e.screenshot.clone(),
        }
    }
}

/// What a canary run found.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub integration: String,
    /// `ok` or `degraded`.
    pub status: String,
    /// What ran: `list_users`, `probe create_user`, …
    pub checked: Vec<String>,
    pub findings: Vec<UiFinding>,
}

/// A failure that says the UI changed (a step that no longer matches), not that the
/// app is down or the run could not start.
fn ui_failure(e: &DriverError) -> Option<&RunError> {
    match e {
        DriverError::Run(r) | DriverError::Login(r)
            if matches!(r.kind, RunErrorKind::Browser | RunErrorKind::Failed) =>
        {
            Some(r)
        }
        DriverError::LoginRefused { run, .. } => Some(run),
        _ => None,
    }
}

/// The user probes render with: nobody real, so that a probe's search finds nothing.
fn sample_user() -> UserContext {
    let mut u = UserContext {
        user_name: Some("usher-canary@example.invalid".into()),
        email: Some("usher-canary@example.invalid".into()),
        given_name: Some("Usher".into()),
        family_name: Some("Canary".into()),
        display_name: Some("Usher Canary".into()),
        active: Some(true),
        ..UserContext::default()
    };
    u.emails
        .insert("work".into(), "usher-canary@example.invalid".into());
    u
}

impl Shared {
    /// One canary run of `integration`: records the status, and on a change the audit
    /// event and the webhook.
    pub(crate) async fn canary(&self, integration: &str) -> Result<CanaryReport, CanaryError> {
        let integ = self
            .integrations
            .get(integration)
            .cloned()
            .ok_or_else(|| CanaryError::UnknownIntegration(integration.to_owned()))?;
        let inconclusive = |reason: String| CanaryError::Inconclusive {
            integration: integration.to_owned(),
            reason,
        };
        self.refresh_secret(&integ)
            .await
            .map_err(|f| inconclusive(f.message))?;
        let pb = integ.playbook.clone();
        let mut checked = Vec::new();
        let mut findings = Vec::new();
        let opts = self.run_options();
        // list_users signs in (session check, login) and reads the list; without it,
        // the first probe does.
        let mut parts: Vec<(String, ActionName, bool)> = Vec::new();
        if pb.actions.contains_key(&ActionName::ListUsers) {
            parts.push(("list_users".into(), ActionName::ListUsers, false));
        }
        for (name, act) in &pb.actions {
            if act.probe.is_some() {
                parts.push((format!("probe {name}"), *name, true));
            }
        }
        if parts.is_empty() {
            return Err(inconclusive(
                "the playbook has neither list_users nor any `probe`: nothing to look at".into(),
            ));
        }
        for (part, action, probe) in parts {
            let result = if probe {
                self.driver
                    .probe(&integ.target, action, sample_user(), opts)
                    .await
            } else {
                self.driver
                    .run(&integ.target, action, UserContext::default(), opts)
                    .await
            };
            match result {
                Ok(_) => checked.push(part),
                Err(e) => match ui_failure(&e) {
                    Some(r) => {
                        let part = match &e {
                            DriverError::Login(_) | DriverError::LoginRefused { .. } => {
                                "login".to_owned()
                            }
                            _ => part,
                        };
                        checked.push(part.clone());
                        findings.push(UiFinding::of(part, r));
                        // A broken sign-in leaves nothing else to look at.
                        if matches!(e, DriverError::Login(_) | DriverError::LoginRefused { .. }) {
                            break;
                        }
                    }
                    None => return Err(inconclusive(e.to_string())),
                },
            }
        }
        let status = if findings.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let detail = json!({ "checked": checked, "findings": findings });
        let event_detail = detail.clone();
        let before = self
            .store
            .record_health(integration, CHECK_CANARY, status, &detail, |before| {
                let kind = match (before, status) {
                    (_, "degraded") => kinds::INTEGRATION_UI_CHANGED,
                    (Some("degraded"), _) => kinds::INTEGRATION_UI_RESTORED,
                    _ => return None,
                };
                Some(NewEvent {
                    actor: Actor::System,
                    event_type: kind,
                    target: None,
                    integration_id: Some(integration.to_owned()),
                    detail: event_detail,
                })
            })
            .await?;
        match (before.as_deref(), status) {
            (Some("degraded"), "degraded") => {}
            (_, "degraded") => {
                tracing::warn!(
                    integration,
                    findings = findings.len(),
                    "the app's UI changed: the integration is degraded"
                );
                self.notify_integration("integration.ui_changed", integration, detail)
                    .await;
            }
            (Some("degraded"), _) => {
                tracing::info!(integration, "the canary passes again");
                self.notify_integration("integration.ui_restored", integration, detail)
                    .await;
            }
            _ => {}
        }
        Ok(CanaryReport {
            integration: integration.to_owned(),
            status: status.to_owned(),
            checked,
            findings,
        })
    }
}

/// The health check name of the canary.
pub const CHECK_CANARY: &str = "canary";
