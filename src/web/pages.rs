//! The console's pages, rendered on the server (minijinja) from the same queries as the
//! API. Forms post with the session's `_csrf` token and come back to the page they
//! were sent from with a message.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures::Stream;
use minijinja::context;
use serde::Deserialize;

use super::api::{ActionResult, ApiError};
use super::queries::{self, ActivityQuery};
use super::{Signed, WebError, WebState};
use crate::store::AuditFilter;

fn v<T: serde::Serialize>(t: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(t))
}

/// How often the live Activity stream looks for new events (other nodes write too).
const STREAM_POLL: Duration = Duration::from_secs(1);

impl WebState {
    fn page(
        &self,
        signed: &Signed,
        name: &str,
        title: &str,
        ctx: minijinja::Value,
    ) -> Result<Response, WebError> {
        let base = context! {
            title => title,
            who => signed.view(),
            may_act => signed.role.may_act(),
        };
        Ok(self
            .render(name, context! { ..base, ..ctx })?
            .into_response())
    }

    fn forbidden_page(&self, signed: &Signed) -> Result<Response, WebError> {
        let page = self.page(
            signed,
            "message.html",
            "Not for your role",
            context! {
                message => format!(
                    "The {} role reads activity and evidence only.",
                    signed.role.as_str()
                ),
                link => context! { href => "/console/activity", text => "Open the activity" },
            },
        )?;
        Ok((StatusCode::FORBIDDEN, page).into_response())
    }

    fn not_found_page(&self, signed: &Signed, what: &str) -> Result<Response, WebError> {
        let page = self.page(
            signed,
            "message.html",
            "Not found",
            context! { message => format!("There is no such {what}.") },
        )?;
        Ok((StatusCode::NOT_FOUND, page).into_response())
    }
}

#[derive(Deserialize, Default)]
pub struct Flash {
    done: Option<String>,
    failed: Option<String>,
}

/// `/console/`: the Integrations page (auditors go to the activity).
pub async fn home(State(state): State<WebState>, signed: Signed) -> Result<Response, WebError> {
    if !signed.role.may_act() {
        return Ok(Redirect::to("/console/activity").into_response());
    }
    let rows = queries::integrations(&state).await?;
    state.page(
        &signed,
        "integrations.html",
        "Integrations",
        context! { integrations => v(&rows) },
    )
}

/// The tabs of one integration.
pub async fn integration_tab(
    State(state): State<WebState>,
    signed: Signed,
    Path((id, tab)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Result<Response, WebError> {
    if !signed.role.may_act() {
        return state.forbidden_page(&signed);
    }
    let Some(settings) = queries::settings(&state, &id).await? else {
        return state.not_found_page(&signed, "integration");
    };
    let title = format!("{} — {}", settings.summary.name, tab_title(&tab));
    let flash = context! { done => flash.done, failed => flash.failed };
    match tab.as_str() {
        "settings" => state.page(
            &signed,
            "integration.html",
            &title,
            context! { tab => "settings", i => v(&settings), flash => flash },
        ),
        "users" => {
            let users = queries::users(&state, &id).await?;
            state.page(
                &signed,
                "integration.html",
                &title,
                context! { tab => "users", i => v(&settings), users => v(&users), flash => flash },
            )
        }
        "jobs" => {
            let jobs = queries::jobs(&state, &id).await?;
            state.page(
                &signed,
                "integration.html",
                &title,
                context! { tab => "jobs", i => v(&settings), jobs => v(&jobs), flash => flash },
            )
        }
        "access" => {
            let Some(cfg) = state.integration_config(&id) else {
                return state.not_found_page(&signed, "integration");
            };
            let posture = crate::engine::posture(&state.store, cfg).await?;
            let pb = state.playbooks.get(&id).map(|p| p.as_ref());
            let rows = crate::engine::access_report(&state.store, cfg, pb).await?;
            state.page(
                &signed,
                "integration.html",
                &title,
                context! { tab => "access", i => v(&settings), posture => v(&posture), access => v(&rows), flash => flash },
            )
        }
        _ => state.not_found_page(&signed, "tab"),
    }
}

fn tab_title(tab: &str) -> &'static str {
    match tab {
        "settings" => "Settings",
        "users" => "Users",
        "jobs" => "Jobs",
        "access" => "Access",
        _ => "Activity",
    }
}

pub async fn integration_root(Path(id): Path<String>) -> Redirect {
    Redirect::to(&format!(
        "/console/integrations/{}/settings",
        urlencode(&id)
    ))
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// The Activity tab of an integration, or of everything (`/console/activity`).
async fn activity_page(
    state: &WebState,
    signed: &Signed,
    integration: Option<String>,
    mut q: ActivityQuery,
) -> Result<Response, WebError> {
    let settings = match &integration {
        Some(id) => match queries::settings(state, id).await? {
            Some(s) => Some(s),
            None => return state.not_found_page(signed, "integration"),
        },
        None => None,
    };
    q.integration = integration.clone();
    let (page, error) = match queries::activity(state, &q).await? {
        Ok(p) => (Some(p), None),
        Err(m) => (None, Some(m)),
    };
    // The link to the next page keeps the filters.
    let next = page.as_ref().and_then(|p| p.next_before).map(|before| {
        let mut n = q.clone();
        n.before = Some(before);
        n.integration = None;
        serde_urlencoded::to_string(&n).unwrap_or_default()
    });
    let newest = page
        .as_ref()
        .and_then(|p| p.events.first())
        .map(|e| e.seq)
        .unwrap_or(0);
    let title = match &settings {
        Some(s) => format!("{} — Activity", s.summary.name),
        None => "Activity".to_owned(),
    };
    let live = q.before.is_none();
    state.page(
        signed,
        "activity.html",
        &title,
        context! {
            tab => "activity",
            i => v(&settings),
            integration => integration,
            q => v(&q),
            page => v(&page),
            error => error,
            next => next,
            newest => newest,
            live => live,
        },
    )
}

pub async fn integration_activity(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<ActivityQuery>,
) -> Result<Response, WebError> {
    // Auditors read activity: this tab is theirs too.
    activity_page(&state, &signed, Some(id), q).await
}

pub async fn all_activity(
    State(state): State<WebState>,
    signed: Signed,
    Query(q): Query<ActivityQuery>,
) -> Result<Response, WebError> {
    let integration = q.integration.clone().filter(|s| !s.is_empty());
    activity_page(&state, &signed, integration, q).await
}

/// An event's detail: its step trace and the screenshots it cites.
pub async fn event_detail(
    State(state): State<WebState>,
    signed: Signed,
    Path(seq): Path<i64>,
) -> Result<Response, WebError> {
    let Some(e) = state.store.audit_event(seq).await? else {
        return state.not_found_page(&signed, "event");
    };
    let view = queries::EventView::from(e);
    let detail = serde_json::to_string_pretty(&view.detail).unwrap_or_default();
    let title = format!("Event {} — {}", view.seq, view.event_type);
    state.page(
        &signed,
        "event.html",
        &title,
        context! { e => v(&view), detail => detail },
    )
}

#[derive(Deserialize)]
pub struct StreamQuery {
    integration: Option<String>,
    #[serde(default)]
    after: i64,
}

/// New audit events as server-sent events (`audit` events carrying the row as JSON).
pub async fn event_stream(
    State(state): State<WebState>,
    signed: Signed,
    Query(q): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let id_hash = signed.id_hash;
    let stream = futures::stream::unfold(
        (state, q.integration.filter(|s| !s.is_empty()), q.after),
        move |(state, integration, mut after)| {
            let id_hash = id_hash.clone();
            async move {
                loop {
                    // The stream ends with the session (signed out, or timed out).
                    let live = state
                        .store
                        .session_is_live(
                            &id_hash,
                            state.console.idle_timeout,
                            state.console.absolute_timeout,
                        )
                        .await;
                    if !matches!(live, Ok(true)) {
                        return None;
                    }
                    let found = state
                        .store
                        .find_audit_events(&AuditFilter {
                            integration_id: integration.as_deref(),
                            after_seq: Some(after),
                            limit: 100,
                            ..AuditFilter::default()
                        })
                        .await;
                    match found {
                        Ok(events) if !events.is_empty() => {
                            let mut out = Vec::new();
                            for e in events {
                                after = after.max(e.seq);
                                let v = queries::EventView::from(e);
                                if let Ok(json) = serde_json::to_string(&v) {
                                    out.push(Ok(SseEvent::default().event("audit").data(json)));
                                }
                            }
                            return Some((futures::stream::iter(out), (state, integration, after)));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reading new audit events failed"),
                    }
                    tokio::time::sleep(STREAM_POLL).await;
                }
            }
        },
    );
    Sse::new(futures::StreamExt::flatten(stream)).keep_alive(KeepAlive::default())
}

/// Where a form's action sends the browser back to, with its outcome.
fn back(to: &str, r: Result<ActionResult, ApiError>) -> Response {
    let (key, message) = match r {
        Ok(a) => ("done", a.message),
        Err(ApiError(_, m)) => ("failed", m),
    };
    let q = serde_urlencoded::to_string([(key, message)]).unwrap_or_default();
    Redirect::to(&format!("{to}?{q}")).into_response()
}

pub async fn retry_job_form(
    State(state): State<WebState>,
    signed: Signed,
    Path((id, job)): Path<(String, i64)>,
) -> Result<Response, WebError> {
    if !signed.role.may_act() {
        return state.forbidden_page(&signed);
    }
    let r = super::api::job_action(&state, &signed, job, true).await;
    Ok(back(
        &format!("/console/integrations/{}/jobs", urlencode(&id)),
        r,
    ))
}

#[derive(Deserialize)]
pub struct ReturnTo {
    #[serde(default)]
    back: Option<String>,
}

pub async fn retry_user_form(
    State(state): State<WebState>,
    signed: Signed,
    Path((id, user)): Path<(String, String)>,
    axum::Form(ret): axum::Form<ReturnTo>,
) -> Result<Response, WebError> {
    if !signed.role.may_act() {
        return state.forbidden_page(&signed);
    }
    // A failed last job is retried (its attempts start over); otherwise the user's
    // desired state is applied again.
    let users = queries::users(&state, &id).await?;
    let failed_job = users
        .iter()
        .find(|u| u.id == user)
        .and_then(|u| u.last_job.as_ref())
        .filter(|j| j.status == "failed" || j.status == "cancelled")
        .map(|j| j.id);
    let r = match failed_job {
        Some(job) => super::api::job_action(&state, &signed, job, true).await,
        None => super::api::rerun(&state, &signed, &id, &user).await,
    };
    let to = match ret.back.as_deref() {
        Some("jobs") => format!("/console/integrations/{}/jobs", urlencode(&id)),
        _ => format!("/console/integrations/{}/users", urlencode(&id)),
    };
    Ok(back(&to, r))
}
