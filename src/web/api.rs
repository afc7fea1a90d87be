//! The console's JSON REST API under `/api/v1`, described by an OpenAPI document built
//! from these handlers (`utoipa`) at `/api/v1/openapi.json`. The pages call the same
//! functions (`queries`), so nothing is computed twice.
//!
//! Every route needs a console session; state-changing ones carry its CSRF token
//! (`X-CSRF-Token`). Auditors read activity and evidence only.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::queries::{self, ActivityQuery, ExportFormat};
use super::{Signed, WebError, WebState};
use crate::audit::{NewEvent, kinds};
use crate::store::StoreError;

/// An API error: a status and one plain sentence.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> ApiError {
        tracing::error!(error = %e, "console API request failed");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Usher could not answer; the reason is in its log".into(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        WebError::from(e).into()
    }
}

pub(crate) fn forbidden_for(signed: &Signed) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "the {} role reads activity and evidence only",
            signed.role.as_str()
        ),
    )
}

fn must_act(signed: &Signed) -> Result<(), ApiError> {
    if signed.role.may_act() {
        Ok(())
    } else {
        Err(forbidden_for(signed))
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Usher console API",
        description = "Integrations, users, jobs and the audit trail of an Usher gateway. Every route needs a console session cookie; POSTs carry the session's CSRF token in X-CSRF-Token."
    ),
    paths(
        me,
        integrations,
        integration,
        users,
        jobs,
        posture,
        access,
        events,
        event,
        evidence,
        retry_job,
        cancel_job,
        rerun_user,
        verify_audit,
        export_audit,
        openapi_json
    )
)]
pub struct ApiDoc;

/// The routes under `/api/v1`.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/integrations", get(integrations))
        .route("/api/v1/integrations/{id}", get(integration))
        .route("/api/v1/integrations/{id}/users", get(users))
        .route("/api/v1/integrations/{id}/jobs", get(jobs))
        .route("/api/v1/integrations/{id}/posture", get(posture))
        .route("/api/v1/integrations/{id}/access", get(access))
        .route(
            "/api/v1/integrations/{id}/users/{user_id}/rerun",
            post(rerun_user),
        )
        .route("/api/v1/audit/events", get(events))
        .route("/api/v1/audit/events/{seq}", get(event))
        .route("/api/v1/audit/verify", post(verify_audit))
        .route("/api/v1/audit/export", get(export_audit))
        .route("/api/v1/evidence/{sha256}", get(evidence))
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/openapi.json", get(openapi_json))
}

/// The signed-in person.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub person: String,
    pub display_name: String,
    pub role: String,
    /// Send it as `X-CSRF-Token` with every POST.
    pub csrf_token: String,
    pub signed_in_at: String,
}

#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, description = "what was asked for", body = Me), (status = 401, description = "no live console session", body = ErrorBody)))]
async fn me(signed: Signed) -> Json<Me> {
    Json(Me {
        person: signed.session.person.clone(),
        display_name: signed.session.display_name.clone(),
        role: signed.role.as_str().into(),
        csrf_token: signed.session.csrf_token.clone(),
        signed_in_at: signed.session.created_at.clone(),
    })
}

#[utoipa::path(get, path = "/api/v1/integrations",
    responses((status = 200, description = "what was asked for", body = Vec<queries::IntegrationSummary>), (status = 403, description = "not for this role, or the CSRF token is missing", body = ErrorBody)))]
async fn integrations(
    State(state): State<WebState>,
    signed: Signed,
) -> Result<Json<Vec<queries::IntegrationSummary>>, ApiError> {
    must_act(&signed)?;
    Ok(Json(queries::integrations(&state).await?))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "what was asked for", body = queries::IntegrationSettings), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn integration(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Json<queries::IntegrationSettings>, ApiError> {
    must_act(&signed)?;
    queries::settings(&state, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("integration"))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/users", params(("id" = String, Path)),
    responses((status = 200, description = "what was asked for", body = Vec<queries::UserView>), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn users(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Json<Vec<queries::UserView>>, ApiError> {
    must_act(&signed)?;
    if !state.has_integration(&id) {
        return Err(not_found("integration"));
    }
    Ok(Json(queries::users(&state, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/jobs", params(("id" = String, Path)),
    responses((status = 200, description = "what was asked for", body = Vec<queries::JobView>), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn jobs(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Json<Vec<queries::JobView>>, ApiError> {
    must_act(&signed)?;
    if !state.has_integration(&id) {
        return Err(not_found("integration"));
    }
    Ok(Json(queries::jobs(&state, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/posture", params(("id" = String, Path)),
    responses((status = 200, description = "the service account's posture: password age and rotation, MFA, last sign-in, canary, reconciliation", body = crate::engine::Posture), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn posture(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Json<crate::engine::Posture>, ApiError> {
    must_act(&signed)?;
    let Some(i) = state.integrations.iter().find(|i| i.id == id) else {
        return Err(not_found("integration"));
    };
    Ok(Json(crate::engine::posture(&state.store, i).await?))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/access", params(("id" = String, Path)),
    responses((status = 200, description = "who has access to what in the app, and why (each account, app role and the SCIM groups or roles that grant it; discovered accounts with no grant)", body = Vec<crate::engine::AccessRow>), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn access(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::engine::AccessRow>>, ApiError> {
    must_act(&signed)?;
    let Some(i) = state.integrations.iter().find(|i| i.id == id) else {
        return Err(not_found("integration"));
    };
    let pb = state.playbooks.get(&id).map(|p| p.as_ref());
    Ok(Json(
        crate::engine::access_report(&state.store, i, pb).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/audit/events", params(ActivityQuery),
    responses((status = 200, description = "what was asked for", body = queries::EventPage), (status = 400, description = "a filter or parameter is not valid", body = ErrorBody)))]
async fn events(
    State(state): State<WebState>,
    _signed: Signed,
    Query(q): Query<ActivityQuery>,
) -> Result<Json<queries::EventPage>, ApiError> {
    let page = queries::activity(&state, &q)
        .await?
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/api/v1/audit/events/{seq}", params(("seq" = i64, Path)),
    responses((status = 200, description = "what was asked for", body = queries::EventView), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn event(
    State(state): State<WebState>,
    _signed: Signed,
    Path(seq): Path<i64>,
) -> Result<Json<queries::EventView>, ApiError> {
    state
        .store
        .audit_event(seq)
        .await?
        .map(|e| Json(queries::EventView::from(e)))
        .ok_or_else(|| not_found("event"))
}

#[utoipa::path(get, path = "/api/v1/evidence/{sha256}", params(("sha256" = String, Path, description = "the SHA-256 an event cites")),
    responses((status = 200, content_type = "image/png", description = "the screenshot"), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn evidence(
    State(state): State<WebState>,
    _signed: Signed,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let png = queries::evidence(&state, &sha256)
        .await
        .ok_or_else(|| not_found("evidence"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        png,
    )
        .into_response())
}

/// What an action did.
#[derive(Serialize, ToSchema)]
pub struct ActionResult {
    pub done: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", params(("id" = i64, Path)),
    responses((status = 200, description = "what was asked for", body = ActionResult), (status = 403, description = "not for this role, or the CSRF token is missing", body = ErrorBody), (status = 409, description = "the job is not in a state that allows this", body = ErrorBody)))]
async fn retry_job(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<i64>,
) -> Result<Json<ActionResult>, ApiError> {
    must_act(&signed)?;
    job_action(&state, &signed, id, true).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 200, description = "what was asked for", body = ActionResult), (status = 403, description = "not for this role, or the CSRF token is missing", body = ErrorBody), (status = 409, description = "the job is not in a state that allows this", body = ErrorBody)))]
async fn cancel_job(
    State(state): State<WebState>,
    signed: Signed,
    Path(id): Path<i64>,
) -> Result<Json<ActionResult>, ApiError> {
    must_act(&signed)?;
    job_action(&state, &signed, id, false).await.map(Json)
}

/// Retry (a failed or cancelled job) or cancel (one that has not started), audited with
/// the signed-in person as actor. Shared with the pages.
pub(crate) async fn job_action(
    state: &WebState,
    signed: &Signed,
    id: i64,
    retry: bool,
) -> Result<ActionResult, ApiError> {
    let job = state.store.job(id).await?.ok_or_else(|| not_found("job"))?;
    let event = NewEvent {
        actor: signed.actor(),
        event_type: if retry {
            kinds::JOB_REQUEUED
        } else {
            kinds::JOB_CANCELLED
        },
        target: Some(job.resource_id.clone()),
        integration_id: Some(job.integration_id.clone()),
        detail: json!({"job": id, "was": job.status.as_str(), "via": "console"}),
    };
    let done = if retry {
        state.store.requeue_job(id, &event).await?
    } else {
        state.store.cancel_job(id, &event).await?
    };
    if !done {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "job {id} is {}: only failed or cancelled jobs can be retried, pending or staged ones cancelled",
                job.status.as_str()
            ),
        ));
    }
    Ok(ActionResult {
        done: true,
        message: if retry {
            format!("job {id} queued again")
        } else {
            format!("job {id} cancelled")
        },
        job: Some(id),
    })
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/users/{user_id}/rerun",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "what was asked for", body = ActionResult), (status = 403, description = "not for this role, or the CSRF token is missing", body = ErrorBody), (status = 404, description = "no such thing", body = ErrorBody)))]
async fn rerun_user(
    State(state): State<WebState>,
    signed: Signed,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Json<ActionResult>, ApiError> {
    must_act(&signed)?;
    rerun(&state, &signed, &id, &user_id).await.map(Json)
}

/// Queues a job that applies a user's desired state again. Shared with the pages.
pub(crate) async fn rerun(
    state: &WebState,
    signed: &Signed,
    integration_id: &str,
    user_id: &str,
) -> Result<ActionResult, ApiError> {
    if !state.has_integration(integration_id) {
        return Err(not_found("integration"));
    }
    let event = NewEvent {
        actor: signed.actor(),
        event_type: kinds::USER_RERUN,
        target: Some(user_id.to_owned()),
        integration_id: Some(integration_id.to_owned()),
        detail: json!({"via": "console"}),
    };
    let job = state
        .store
        .rerun_user(integration_id, user_id, &event)
        .await?
        .ok_or_else(|| not_found("user"))?;
    Ok(ActionResult {
        done: true,
        message: format!("job {job} queued"),
        job: Some(job),
    })
}

/// The audit chain's check.
#[derive(Serialize, ToSchema)]
pub struct VerifyResult {
    pub intact: bool,
    pub events_checked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/audit/verify", responses((status = 200, description = "what was asked for", body = VerifyResult)))]
async fn verify_audit(
    State(state): State<WebState>,
    signed: Signed,
) -> Result<Json<VerifyResult>, ApiError> {
    // Auditors may verify: it changes nothing but the trail's note that it was checked.
    let result = match state.store.verify_audit_chain().await {
        Ok(n) => VerifyResult {
            intact: true,
            events_checked: n,
            problem: None,
        },
        Err(StoreError::Chain(e)) => VerifyResult {
            intact: false,
            events_checked: 0,
            problem: Some(e.to_string()),
        },
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .append_event(&NewEvent {
            actor: signed.actor(),
            event_type: kinds::AUDIT_VERIFIED,
            target: None,
            integration_id: None,
            detail: json!({"intact": result.intact, "events": result.events_checked}),
        })
        .await?;
    Ok(Json(result))
}

#[derive(Deserialize, IntoParams)]
pub struct ExportQuery {
    /// Events at or after this time (RFC 3339, or a duration back from now like `24h`).
    pub since: String,
    pub integration: Option<String>,
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit/export", params(ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson", description = "one event per line (or CSV)"), (status = 400, description = "a filter or parameter is not valid", body = ErrorBody)))]
async fn export_audit(
    State(state): State<WebState>,
    signed: Signed,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        None | Some("jsonl") => ExportFormat::Jsonl,
        Some("csv") => ExportFormat::Csv,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("format `{other}` is not jsonl or csv"),
            ));
        }
    };
    let since = queries::parse_since(&q.since, state.store.clock().now())
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    let mut out = Vec::new();
    let n = queries::export(
        &state.store,
        &since,
        q.integration.as_deref(),
        format,
        &mut out,
    )
    .await
    .map_err(|e| match e {
        queries::ExportError::Store(e) => ApiError::from(e),
        queries::ExportError::Io(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    state
        .store
        .append_event(&NewEvent {
            actor: signed.actor(),
            event_type: kinds::AUDIT_EXPORTED,
            target: None,
            integration_id: q.integration.clone(),
            detail: json!({"since": since, "events": n, "format": format.as_str()}),
        })
        .await?;
    let content_type = match format {
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], out).into_response())
}

#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json() -> Json<Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
}
