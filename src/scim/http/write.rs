//! Writes: create, replace, patch and delete. Each stores the desired state, its job and
//! its audit event in one transaction; replace and patch re-read and re-apply when
//! another writer got there first (`update_with_retry`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::params::Params;
use super::render::{etag, project, render, render_one, resource_response};
use super::state::ScimState;
use super::sync::{admit_sync_write, await_job, new_claim_token, settle};
use super::{base_url, kind_of};
use crate::audit::{self, Actor, NewEvent};
use crate::config::{Invites, PatchResponse};
use crate::scim::auth::Gateway;
use crate::scim::protocol::{self, PatchRequest, Projection, ScimError, ScimType, WriteMode};
use crate::store::{JobOperation, ResourceType, ResourceWrite, StoreError, StoredResource};

/// How often a write re-reads and re-applies when another writer got there first.
const MAX_WRITE_RETRIES: usize = 16;

/// Reads the body within the configured limit and checks its media type.
pub(super) async fn read_json(state: &ScimState, req: Request) -> Result<Value, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let media = ct.split(';').next().unwrap_or("").trim();
        if media != "application/scim+json" && media != "application/json" {
            return Err(ApiError::Scim(ScimError {
                status: 415,
                scim_type: None,
                detail: format!(
                    "content type `{media}` is not supported; send application/scim+json"
                ),
            }));
        }
    }
    let limit = state.settings.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::Scim(ScimError {
                status: 413,
                scim_type: None,
                detail: format!("request body is larger than {limit} bytes"),
            })
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Scim(ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("request body is not valid JSON: {e}"),
        ))
    })
}

/// The version an `If-Match` header asks for, if any.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(h) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = h.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    let tag = s.trim_start_matches("W/").trim_matches('"');
    tag.parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::PreconditionFailed)
}

/// A write that lost to other writers: 412 when the client named a version, else 409.
fn conflict(wanted: Option<i64>) -> ApiError {
    match wanted {
        Some(_) => ApiError::PreconditionFailed,
        None => ApiError::Scim(ScimError {
            status: 409,
            scim_type: None,
            detail: "the resource is being changed by other requests; retry".into(),
        }),
    }
}

/// Columns and membership derived from a normalised body.
fn write_of(rt: ResourceType, mut data: Value) -> Result<ResourceWrite, ApiError> {
    // Usher never keeps end users' passwords: apps get invites, and a password in the
    // desired state would be one more secret at rest.
    if let Some(obj) = data.as_object_mut() {
        obj.remove("password");
        obj.remove("id");
        obj.remove("meta");
        obj.remove("groups");
        obj.remove(protocol::PROVISIONING_SCHEMA);
    }
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let (name_key, display_name) = match rt {
        ResourceType::User => {
            let user_name = text("userName").ok_or_else(|| {
                ScimError::bad_request(ScimType::InvalidValue, "userName is required")
            })?;
            (user_name.to_lowercase(), text("displayName"))
        }
        ResourceType::Group => {
            let name = text("displayName").ok_or_else(|| {
                ScimError::bad_request(ScimType::InvalidValue, "displayName is required")
            })?;
            (name.to_lowercase(), Some(name))
        }
    };
    let members = match rt {
        ResourceType::User => None,
        ResourceType::Group => Some(
            data.get("members")
                .and_then(Value::as_array)
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    };
    Ok(ResourceWrite {
        external_id: text("externalId"),
        name_key,
        display_name,
        members,
        data,
        claim_token: None,
    })
}

/// What a PATCH did, for the audit trail: operations and paths, never values.
fn patch_summary(req: &PatchRequest) -> Vec<Value> {
    req.operations
        .iter()
        .map(|op| {
            let kind = match op.op {
                protocol::patch::PatchOpKind::Add => "add",
                protocol::patch::PatchOpKind::Remove => "remove",
                protocol::patch::PatchOpKind::Replace => "replace",
            };
            json!({"op": kind, "path": op.path})
        })
        .collect()
}

fn audit_event(
    gateway: &Gateway,
    event_type: &'static str,
    rt: ResourceType,
    target: Option<&str>,
    detail: Value,
) -> NewEvent {
    let mut detail = detail;
    detail["resourceType"] = json!(rt.as_str());
    NewEvent {
        actor: Actor::Idp {
            integration_id: gateway.id.clone(),
        },
        event_type,
        target: target.map(str::to_string),
        integration_id: Some(gateway.id.clone()),
        detail,
    }
}

fn name_detail(rt: ResourceType, data: &Value) -> Value {
    match rt {
        ResourceType::User => json!({"userName": data.get("userName")}),
        ResourceType::Group => json!({"displayName": data.get("displayName")}),
    }
}

async fn create(state: &ScimState, gw: &str, rt: ResourceType, req: Request) -> ApiResult {
    let gateway = state.authorize(gw, req.headers())?.clone();
    let headers = req.headers().clone();
    let kind = kind_of(rt);
    let body = read_json(state, req).await?;
    let normalized = protocol::normalize_input(kind, body, WriteMode::Create)?;
    if !normalized.ignored.is_empty() {
        tracing::info!(gateway = gw, ignored = ?normalized.ignored, "ignored unknown attributes");
    }
    let mut write = write_of(rt, normalized.resource)?;
    admit_sync_write(state, &gateway).await?;
    if rt == ResourceType::User && gateway.invites == Invites::OnClaim {
        write.claim_token = Some(new_claim_token());
    }
    let event = audit_event(
        &gateway,
        audit::kinds::SCIM_CREATE,
        rt,
        None,
        name_detail(rt, &write.data),
    );
    let stored = state.store.create_resource(gw, rt, &write, &event).await?;
    if let (Some(token), Some(hook)) = (write.claim_token.as_deref(), &state.on_staged) {
        let name = write.data["userName"].as_str().unwrap_or_default();
        hook(gw, &stored.id, name, token);
    }
    let stored = settle(state, &gateway, stored).await?;
    let base = base_url(&headers, gw);
    // A brand-new user is in no group yet (its id did not exist), so no look-up.
    let v = project(
        &Projection::parse(None, None, kind)?,
        &render(&stored, &base, None),
        kind,
    );
    let location = format!("{base}{}/{}", kind.endpoint(), stored.id);
    Ok(resource_response(
        StatusCode::CREATED,
        &v,
        stored.version,
        Some(&location),
    ))
}

async fn replace(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    id: &str,
    req: Request,
) -> ApiResult {
    let gateway = state.authorize(gw, req.headers())?.clone();
    let headers = req.headers().clone();
    let kind = kind_of(rt);
    let wanted = if_match(&headers)?;
    let body = read_json(state, req).await?;
    let normalized = protocol::normalize_input(kind, body, WriteMode::Replace)?;
    admit_sync_write(state, &gateway).await?;
    let updated = update_with_retry(
        state,
        &gateway,
        rt,
        id,
        wanted,
        JobOperation::Replace,
        |current| {
            let mut replacement = normalized.resource.clone();
            protocol::resource::carry_over_for_replace(kind, &current.data, &mut replacement)?;
            let write = write_of(rt, replacement)?;
            let event = audit_event(
                &gateway,
                audit::kinds::SCIM_REPLACE,
                rt,
                Some(id),
                name_detail(rt, &write.data),
            );
            Ok(Change::Write(Box::new((write, event))))
        },
    )
    .await?;
    let base = base_url(&headers, gw);
    let v = render_one(state, &updated, &base).await?;
    let v = project(&Projection::parse(None, None, kind)?, &v, kind);
    Ok(resource_response(StatusCode::OK, &v, updated.version, None))
}

async fn patch(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    id: &str,
    params: Params,
    req: Request,
) -> ApiResult {
    let gateway = state.authorize(gw, req.headers())?.clone();
    let headers = req.headers().clone();
    let kind = kind_of(rt);
    let wanted = if_match(&headers)?;
    let body = read_json(state, req).await?;
    let patch_req: PatchRequest = serde_json::from_value(body).map_err(|e| {
        ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("not a PatchOp request: {e}"),
        )
    })?;
    let projection = params.projection(kind)?;
    admit_sync_write(state, &gateway).await?;
    let updated = update_with_retry(
        state,
        &gateway,
        rt,
        id,
        wanted,
        JobOperation::Patch,
        |current| {
            let mut data = current.data.clone();
            // With its id in place, Okta's write-back of a group's own id is a no-op.
            if let Some(obj) = data.as_object_mut() {
                obj.insert("id".into(), json!(current.id));
            }
            protocol::apply_patch(&mut data, &patch_req, kind)?;
            let normalized = protocol::normalize_input(kind, data, WriteMode::Replace)?;
            let write = write_of(rt, normalized.resource)?;
            if write.data == current.data {
                // Nothing changed (IdPs re-send memberships): no new version, no job.
                return Ok(Change::Unchanged);
            }
            let detail = json!({"operations": patch_summary(&patch_req)});
            let event = audit_event(&gateway, audit::kinds::SCIM_PATCH, rt, Some(id), detail);
            Ok(Change::Write(Box::new((write, event))))
        },
    )
    .await?;
    if gateway.patch_response == PatchResponse::NoContent && !params.asks_for_body() {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(e) = HeaderValue::from_str(&etag(updated.version)) {
            resp.headers_mut().insert(header::ETAG, e);
        }
        return Ok(resp);
    }
    let base = base_url(&headers, gw);
    let v = render_one(state, &updated, &base).await?;
    Ok(resource_response(
        StatusCode::OK,
        &project(&projection, &v, kind),
        updated.version,
        None,
    ))
}

/// What a replace or patch makes of the current resource.
enum Change {
    /// The resource stays as it is: no new version, no job.
    Unchanged,
    /// Store this, with this audit event.
    Write(Box<(ResourceWrite, NewEvent)>),
}

/// The optimistic write shared by replace and patch. Under the resource's lock in this
/// process, reads the current version, checks `If-Match`, lets `change` compute the new
/// body from it and stores that only if the version is still current; when another
/// process wrote first, reads and applies again (unless the client named a version:
/// then the answer is 412). Returns the resource as it now stands (after its job, in
/// sync mode).
async fn update_with_retry(
    state: &ScimState,
    gateway: &Gateway,
    rt: ResourceType,
    id: &str,
    wanted: Option<i64>,
    operation: JobOperation,
    mut change: impl FnMut(&StoredResource) -> Result<Change, ApiError>,
) -> Result<StoredResource, ApiError> {
    let gw = gateway.id.as_str();
    let kind = kind_of(rt);
    let _guard = state.resource_locks.lock(format!("{gw}/{id}")).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = state
            .store
            .get_resource(gw, rt, id)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
        if wanted.is_some_and(|v| v != current.version) {
            return Err(ApiError::PreconditionFailed);
        }
        let (write, event) = match change(&current)? {
            Change::Unchanged => return Ok(current),
            Change::Write(w) => *w,
        };
        match state
            .store
            .update_resource(gw, rt, id, current.version, &write, operation, &event)
            .await
        {
            Ok(updated) => return settle(state, gateway, updated).await,
            Err(StoreError::VersionConflict)
                if wanted.is_none() && attempts < MAX_WRITE_RETRIES =>
            {
                continue;
            }
            Err(StoreError::VersionConflict) => return Err(conflict(wanted)),
            Err(e) => return Err(e.into()),
        }
    }
}

async fn delete(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    id: &str,
    headers: &HeaderMap,
) -> ApiResult {
    let gateway = state.authorize(gw, headers)?.clone();
    let kind = kind_of(rt);
    let _guard = state.resource_locks.lock(format!("{gw}/{id}")).await;
    if let Some(v) = if_match(headers)? {
        let current = state
            .store
            .get_resource(gw, rt, id)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
        if current.version != v {
            return Err(ApiError::PreconditionFailed);
        }
    }
    admit_sync_write(state, &gateway).await?;
    let event = audit_event(&gateway, audit::kinds::SCIM_DELETE, rt, Some(id), json!({}));
    match state.store.delete_resource(gw, rt, id, &event).await {
        Ok(version) => {
            await_job(state, &gateway, id, version).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(StoreError::NotFound) => {
            Err(ScimError::not_found(format!("{} {id} not found", kind.name())).into())
        }
        Err(e) => Err(e.into()),
    }
}

// The routes' handlers: one per resource type, so that each can be found by name.

pub(super) async fn create_user(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    req: Request,
) -> ApiResult {
    create(&s, &gw, ResourceType::User, req).await
}

pub(super) async fn create_group(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    req: Request,
) -> ApiResult {
    create(&s, &gw, ResourceType::Group, req).await
}

pub(super) async fn replace_user(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    replace(&s, &gw, ResourceType::User, &id, req).await
}

pub(super) async fn replace_group(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    replace(&s, &gw, ResourceType::Group, &id, req).await
}

pub(super) async fn patch_user(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult {
    s.authorize(&gw, req.headers())?;
    patch(&s, &gw, ResourceType::User, &id, Params::parse(q)?, req).await
}

pub(super) async fn patch_group(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult {
    s.authorize(&gw, req.headers())?;
    patch(&s, &gw, ResourceType::Group, &id, Params::parse(q)?, req).await
}

pub(super) async fn delete_user(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    delete(&s, &gw, ResourceType::User, &id, &headers).await
}

pub(super) async fn delete_group(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    delete(&s, &gw, ResourceType::Group, &id, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_match: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(if_match).unwrap());
        h
    }

    #[test]
    fn if_match_names_a_version_or_none() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&headers("W/\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&headers("\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&headers("*")).unwrap(), None);
        assert!(matches!(
            if_match(&headers("W/\"abc\"")),
            Err(ApiError::PreconditionFailed)
        ));
        assert!(matches!(conflict(Some(3)), ApiError::PreconditionFailed));
        assert!(matches!(conflict(None), ApiError::Scim(e) if e.status == 409));
    }

    #[test]
    fn a_write_keeps_no_password_and_no_server_owned_attributes() {
        let w = write_of(
            ResourceType::User,
            json!({"userName": "Ada@X.example", "password": "hunter2", "id": "x", "meta": {},
                   "groups": [{"value": "g"}], "externalId": "e1", "displayName": "Ada",
                   protocol::PROVISIONING_SCHEMA: {"state": "provisioned"}}),
        )
        .unwrap();
        assert_eq!(
            w.data,
            json!({"userName": "Ada@X.example", "externalId": "e1", "displayName": "Ada"})
        );
        assert_eq!(w.name_key, "ada@x.example");
        assert_eq!(w.external_id.as_deref(), Some("e1"));
        assert_eq!(w.members, None);
        let g = write_of(
            ResourceType::Group,
            json!({"displayName": "Finance", "members": [{"value": "u1"}, {"display": "no id"}, {"value": "u2"}]}),
        )
        .unwrap();
        assert_eq!(g.name_key, "finance");
        assert_eq!(g.members, Some(vec!["u1".to_string(), "u2".to_string()]));
        assert!(write_of(ResourceType::Group, json!({"members": []})).is_err());
    }

    #[test]
    fn the_audit_trail_gets_operations_and_paths_never_values() {
        let req: PatchRequest = serde_json::from_value(json!({
            "schemas": [protocol::PATCH_OP_SCHEMA],
            "Operations": [{"op": "Replace", "path": "userName", "value": "secret-name"},
                           {"op": "add", "value": {"title": "x"}}]
        }))
        .unwrap();
        let summary = patch_summary(&req);
        assert_eq!(
            summary,
            vec![
                json!({"op": "replace", "path": "userName"}),
                json!({"op": "add", "path": null})
            ]
        );
    }
}
