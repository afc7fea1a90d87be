//! axum routes of the SCIM gateways, mapping the protocol core onto the store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::auth::Gateway;
use super::protocol::{
    self, Filter, PatchRequest, Projection, ResourceKind, ScimError, ScimType, SortSpec, WriteMode,
};
use crate::audit::{self, Actor, NewEvent};
use crate::config::{Invites, Mode, PatchResponse, ScimSettings};
use crate::store::{LookupColumn, ResourceType, ResourceWrite, Store, StoreError, StoredResource};

const SCIM_CONTENT_TYPE: &str = "application/scim+json";
/// How often a PATCH re-reads and re-applies when another writer got there first.
const MAX_WRITE_RETRIES: usize = 16;

/// Everything the SCIM handlers share.
pub struct ScimState {
    pub store: Store,
    pub gateways: HashMap<String, Gateway>,
    pub settings: ScimSettings,
    in_flight: Arc<Semaphore>,
    resource_locks: ResourceLocks,
    /// `mode: sync`: how long a write waits for its job.
    pub sync_timeout: std::time::Duration,
    /// Called when a joiner is staged (`invites: on_claim`) with their claim token.
    pub on_staged: Option<StagedHook>,
}

/// Told about each staged joiner: (gateway id, user id, userName, claim token).
pub type StagedHook = Arc<dyn Fn(&str, &str, &str, &str) + Send + Sync>;

/// One async mutex per resource being written, so that concurrent writes to the same
/// resource in this process queue instead of racing; across processes the store's
/// version check (and a retry) still decides.
#[derive(Default)]
struct ResourceLocks(std::sync::Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>);

impl ResourceLocks {
    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 1024 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

impl ScimState {
    pub fn new(store: Store, gateways: Vec<Gateway>, settings: ScimSettings) -> Arc<ScimState> {
        Self::with_engine(
            store,
            gateways,
            settings,
            std::time::Duration::from_secs(50),
            None,
        )
    }

    /// Same, with the engine-facing settings.
    pub fn with_engine(
        store: Store,
        gateways: Vec<Gateway>,
        settings: ScimSettings,
        sync_timeout: std::time::Duration,
        on_staged: Option<StagedHook>,
    ) -> Arc<ScimState> {
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        Arc::new(ScimState {
            store,
            gateways: gateways.into_iter().map(|g| (g.id.clone(), g)).collect(),
            settings,
            in_flight,
            resource_locks: ResourceLocks::default(),
            sync_timeout,
            on_staged,
        })
    }

    fn authorize(&self, gateway_id: &str, headers: &HeaderMap) -> Result<&Gateway, ApiError> {
        match self.gateways.get(gateway_id) {
            Some(g) if g.accepts(headers) => Ok(g),
            // Same answer for an unknown gateway and a wrong token: ids are not secrets,
            // but there is no reason to confirm them to an unauthenticated caller.
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// An error on its way to becoming a SCIM error document.
#[derive(Debug)]
pub enum ApiError {
    Scim(ScimError),
    Unauthorized,
    PreconditionFailed,
    Overloaded,
    /// `mode: sync` and the integration's workers are all busy.
    Busy {
        retry_after_secs: u64,
    },
    Internal(String),
}

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        ApiError::Scim(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::Scim(ScimError::not_found("resource not found")),
            StoreError::Uniqueness(what) => ApiError::Scim(ScimError::conflict_uniqueness(
                format!("{what} is already taken"),
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn error_document(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Value {
    let mut doc = json!({
        "schemas": [protocol::ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        doc["scimType"] = json!(t);
    }
    doc
}

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Scim(e) => {
                let status =
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                scim_json(status, &e.to_json())
            }
            ApiError::Unauthorized => {
                let mut r = scim_json(
                    StatusCode::UNAUTHORIZED,
                    &error_document(
                        StatusCode::UNAUTHORIZED,
                        None,
                        "missing or invalid bearer token for this gateway",
                    ),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"usher\""),
                );
                r
            }
            ApiError::PreconditionFailed => scim_json(
                StatusCode::PRECONDITION_FAILED,
                &error_document(
                    StatusCode::PRECONDITION_FAILED,
                    None,
                    "If-Match does not match the current version of the resource",
                ),
            ),
            ApiError::Overloaded => {
                let mut r = scim_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_document(
                        StatusCode::TOO_MANY_REQUESTS,
                        None,
                        "too many requests in flight; retry later",
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Busy { retry_after_secs } => {
                let mut r = scim_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_document(
                        StatusCode::TOO_MANY_REQUESTS,
                        None,
                        "this integration's workers are all busy; retry later",
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            ApiError::Internal(detail) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %detail, "internal error while serving SCIM");
                scim_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &error_document(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "internal error; see the server log",
                    ),
                )
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// The SCIM routes of every gateway.
pub fn router(state: Arc<ScimState>) -> Router {
    let gateway = Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/", get(list_users))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Users/.search", axum::routing::post(search_users))
        .route("/Groups/.search", axum::routing::post(search_groups))
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/", get(list_groups))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/ServiceProviderConfig", get(service_provider_config))
        // Microsoft's test collection asks for this legacy name; same document.
        .route("/serviceConfiguration", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        // Searching several resource types at once is optional (RFC 7644 §3.4.3).
        .route("/.search", axum::routing::any(not_implemented))
        .route("/Bulk", axum::routing::any(not_implemented))
        .route("/Me", axum::routing::any(not_implemented))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/scim/v2/{gateway}", gateway)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed_load,
        ))
        .with_state(state)
}

/// Answers 429 with Retry-After instead of queueing without bound.
async fn shed_load(
    State(state): State<Arc<ScimState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

async fn not_found(
    State(state): State<Arc<ScimState>>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(p.get("gateway").map(String::as_str).unwrap_or(""), &headers)?;
    Err(ScimError::not_found("no such SCIM endpoint").into())
}

async fn method_not_allowed() -> Response {
    scim_json(
        StatusCode::METHOD_NOT_ALLOWED,
        &error_document(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "method not allowed on this endpoint",
        ),
    )
}

async fn not_implemented(
    State(state): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    Ok(scim_json(
        StatusCode::NOT_IMPLEMENTED,
        &error_document(
            StatusCode::NOT_IMPLEMENTED,
            None,
            "not supported by this service provider",
        ),
    ))
}

/// The absolute SCIM root of a gateway as the client reached it.
fn base_url(headers: &HeaderMap, gateway_id: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}/scim/v2/{gateway_id}")
}

fn kind_of(rt: ResourceType) -> ResourceKind {
    match rt {
        ResourceType::User => ResourceKind::User,
        ResourceType::Group => ResourceKind::Group,
    }
}

// ---------------------------------------------------------------- discovery

async fn service_provider_config(
    State(state): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let mut doc = protocol::schema::service_provider_config_json(&protocol::schema::SpcOptions {
        max_results: state.settings.max_results,
        max_operations: 0,
        max_payload_size: state.settings.max_body_bytes,
        documentation_uri: None,
    });
    doc["meta"]["location"] = json!(format!("{}/ServiceProviderConfig", base_url(&headers, &gw)));
    Ok(scim_json(StatusCode::OK, &doc))
}

fn list_document(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [protocol::LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// A discovery array (schemas, resource types) as a ListResponse with absolute locations.
fn discovery_list(all: Value, base: &str) -> Response {
    let items: Vec<Value> = protocol::schema::with_base(all, base)
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = items.len();
    scim_json(StatusCode::OK, &list_document(items, n, 1))
}

async fn resource_types(
    State(state): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let base = base_url(&headers, &gw);
    Ok(discovery_list(
        protocol::schema::resource_types_json(),
        &base,
    ))
}

async fn resource_type(
    State(state): State<Arc<ScimState>>,
    Path((gw, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let base = base_url(&headers, &gw);
    let all = protocol::schema::with_base(protocol::schema::resource_types_json(), &base);
    all.as_array()
        .and_then(|a| {
            a.iter()
                .find(|rt| rt["id"] == json!(name) || rt["name"] == json!(name))
        })
        .map(|rt| scim_json(StatusCode::OK, rt))
        .ok_or_else(|| ScimError::not_found(format!("no resource type `{name}`")).into())
}

async fn schemas(
    State(state): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let base = base_url(&headers, &gw);
    Ok(discovery_list(protocol::schema::schemas_json(), &base))
}

async fn schema(
    State(state): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let base = base_url(&headers, &gw);
    match protocol::schema::schema_json(&id) {
        Some(s) => Ok(scim_json(
            StatusCode::OK,
            &protocol::schema::with_base(s, &base),
        )),
        None => Err(ScimError::not_found(format!("no schema `{id}`")).into()),
    }
}

// ---------------------------------------------------------------- query parameters

/// Query parameters, matched case-insensitively as IdPs vary their casing.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Result<Params, ApiError> {
        let raw = raw.unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&raw).map_err(|_| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                "query string is not valid URL encoding",
            )
        })?;
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::Scim(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{name} must be an integer, not `{v}`"),
                ))
            }),
        }
    }

    fn projection(&self, kind: ResourceKind) -> Result<Projection, ApiError> {
        Ok(Projection::parse(
            self.get("attributes"),
            self.get("excludedAttributes"),
            kind,
        )?)
    }

    fn asks_for_body(&self) -> bool {
        self.get("attributes").is_some() || self.get("excludedAttributes").is_some()
    }
}

/// A `POST …/.search` body (RFC 7644 §3.4.3) as the query parameters it stands for.
fn search_params(body: Value) -> Result<Params, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "SearchRequest must be a JSON object",
        )
        .into());
    };
    let mut pairs = Vec::new();
    for (key, value) in obj {
        let text = match (key.to_ascii_lowercase().as_str(), value) {
            ("schemas", _) => continue,
            ("attributes" | "excludedattributes", Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(","))
                .ok_or_else(|| {
                    ScimError::bad_request(
                        ScimType::InvalidValue,
                        format!("{key} must be a list of strings"),
                    )
                })?,
            (
                "filter" | "sortby" | "sortorder" | "attributes" | "excludedattributes",
                Value::String(v),
            ) => v,
            ("startindex" | "count", Value::Number(n)) => n.to_string(),
            ("startindex" | "count", Value::String(v)) => v,
            (_, Value::Null) => continue,
            _ => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    format!("`{key}` is not a SearchRequest attribute or has the wrong type"),
                )
                .into());
            }
        };
        pairs.push((key, text));
    }
    Ok(Params(pairs))
}

// ---------------------------------------------------------------- rendering

/// The resource as the IdP sees it: body, id, meta, users' groups and provisioning state.
fn render(r: &StoredResource, base: &str, groups: Option<&Vec<(String, String)>>) -> Value {
    let mut v = r.data.clone();
    if !v.is_object() {
        v = json!({});
    }
    let kind = kind_of(r.resource_type);
    let endpoint = kind.endpoint();
    let location = format!("{base}{endpoint}/{}", r.id);
    v["id"] = json!(r.id);
    v["meta"] = json!({
        "resourceType": kind.name(),
        "created": r.created_at,
        "lastModified": r.modified_at,
        "version": etag(r.version),
        "location": location,
    });
    if r.resource_type == ResourceType::User {
        let groups: Vec<Value> = groups
            .map(|gs| {
                gs.iter()
                    .map(|(gid, name)| {
                        json!({"value": gid, "display": name, "$ref": format!("{base}/Groups/{gid}"), "type": "direct"})
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !groups.is_empty() {
            v["groups"] = Value::Array(groups);
        }
        let p = &r.provisioning;
        let mut ext = json!({ "state": p.state });
        if let Some(reason) = &p.reason {
            ext["reason"] = json!(reason);
        }
        if let Some(app_id) = &p.app_account_id {
            ext["appAccountId"] = json!(app_id);
        }
        if let Some(t) = &p.last_synced_at {
            ext["lastSyncedAt"] = json!(t);
        }
        v[protocol::PROVISIONING_SCHEMA] = ext;
        if let Some(Value::Array(schemas)) = v.get_mut("schemas")
            && !schemas.iter().any(|s| s == protocol::PROVISIONING_SCHEMA)
        {
            schemas.push(json!(protocol::PROVISIONING_SCHEMA));
        }
    } else if let Some(Value::Array(members)) = v.get_mut("members") {
        for m in members.iter_mut() {
            if let Some(id) = m.get("value").and_then(Value::as_str).map(str::to_string)
                && m.get("$ref").is_none()
            {
                let endpoint = match m.get("type").and_then(Value::as_str) {
                    Some("Group") => "Groups",
                    _ => "Users",
                };
                m["$ref"] = json!(format!("{base}/{endpoint}/{id}"));
            }
        }
    }
    v
}

/// Applies `attributes`/`excludedAttributes` and keeps `schemas` true to what is left:
/// an extension whose attributes were all left out is no longer named.
fn project(projection: &Projection, v: &Value, kind: ResourceKind) -> Value {
    let mut out = projection.apply(v, kind);
    if let Some(obj) = out.as_object_mut() {
        let present: Vec<String> = obj.keys().map(|k| k.to_ascii_lowercase()).collect();
        if let Some(Value::Array(schemas)) = obj.get_mut("schemas") {
            let core = kind.core_schema();
            schemas.retain(|s| {
                s.as_str().is_some_and(|s| {
                    s.eq_ignore_ascii_case(core) || present.contains(&s.to_ascii_lowercase())
                })
            });
        }
    }
    out
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn resource_response(
    status: StatusCode,
    body: &Value,
    version: i64,
    location: Option<&str>,
) -> Response {
    let mut resp = scim_json(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

async fn render_one(state: &ScimState, r: &StoredResource, base: &str) -> Result<Value, ApiError> {
    if r.resource_type == ResourceType::User {
        let groups = state
            .store
            .groups_of(&r.integration_id, &[r.id.as_str()])
            .await?;
        Ok(render(r, base, groups.get(&r.id)))
    } else {
        Ok(render(r, base, None))
    }
}

// ---------------------------------------------------------------- read

async fn list(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    headers: &HeaderMap,
    params: Params,
) -> ApiResult {
    let kind = kind_of(rt);
    let filter: Option<Filter> = match params.get("filter") {
        Some(f) if !f.trim().is_empty() => Some(protocol::filter::parse_filter_for(f, kind)?),
        _ => None,
    };
    let sort = SortSpec::parse(params.get("sortBy"), params.get("sortOrder"), kind)?;
    let projection = params.projection(kind)?;
    let start_index = params.integer("startIndex")?.unwrap_or(1).max(1) as usize;
    let count = params
        .integer("count")?
        .map(|c| c.max(0) as usize)
        .unwrap_or(state.settings.max_results)
        .min(state.settings.max_results);

    // `attr eq "value"` on an indexed column narrows in SQL; the whole filter still
    // runs below, so the pushdown only has to be a superset.
    let lookup = filter
        .as_ref()
        .and_then(|f| f.simple_eq())
        .and_then(|(attr, value)| {
            let col = match (rt, attr.as_str()) {
                (_, "id") => LookupColumn::Id,
                (_, "externalId") => LookupColumn::ExternalId,
                (ResourceType::User, "userName") => LookupColumn::NameKey,
                (ResourceType::Group, "displayName") => LookupColumn::NameKey,
                _ => return None,
            };
            Some((col, value))
        });
    let stored = state
        .store
        .list_resources(gw, rt, lookup.as_ref().map(|(c, v)| (*c, v.as_str())))
        .await?;
    let base = base_url(headers, gw);
    let groups = if rt == ResourceType::User {
        let ids: Vec<&str> = stored.iter().map(|r| r.id.as_str()).collect();
        state.store.groups_of(gw, &ids).await?
    } else {
        HashMap::new()
    };
    let mut rendered: Vec<Value> = stored
        .iter()
        .map(|r| render(r, &base, groups.get(&r.id)))
        .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v, kind)))
        .collect();
    if let Some(sort) = &sort {
        protocol::sort_resources(&mut rendered, sort, kind);
    }
    let total = rendered.len();
    let page: Vec<Value> = rendered
        .into_iter()
        .skip(start_index - 1)
        .take(count)
        .map(|v| project(&projection, &v, kind))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &list_document(page, total, start_index),
    ))
}

async fn get_one(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    id: &str,
    headers: &HeaderMap,
    params: Params,
) -> ApiResult {
    let kind = kind_of(rt);
    let projection = params.projection(kind)?;
    let r = state
        .store
        .get_resource(gw, rt, id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))?;
    let base = base_url(headers, gw);
    let v = render_one(state, &r, &base).await?;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|inm| {
            inm.split(',')
                .any(|t| t.trim() == etag(r.version) || t.trim() == "*")
        });
    if not_modified {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(e) = HeaderValue::from_str(&etag(r.version)) {
            resp.headers_mut().insert(header::ETAG, e);
        }
        return Ok(resp);
    }
    Ok(resource_response(
        StatusCode::OK,
        &project(&projection, &v, kind),
        r.version,
        None,
    ))
}

// ---------------------------------------------------------------- write

/// Reads the body within the configured limit and checks its media type.
async fn read_json(state: &ScimState, req: Request) -> Result<Value, ApiError> {
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
        match state
            .store
            .update_resource(gw, rt, id, current.version, &write, "replace", &event)
            .await
        {
            Ok(updated) => {
                let updated = settle(state, &gateway, updated).await?;
                let base = base_url(&headers, gw);
                let v = render_one(state, &updated, &base).await?;
                let v = project(&Projection::parse(None, None, kind)?, &v, kind);
                return Ok(resource_response(StatusCode::OK, &v, updated.version, None));
            }
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
        let mut data = current.data.clone();
        // With its id in place, Okta's write-back of a group's own id is a no-op.
        if let Some(obj) = data.as_object_mut() {
            obj.insert("id".into(), json!(current.id));
        }
        protocol::apply_patch(&mut data, &patch_req, kind)?;
        let normalized = protocol::normalize_input(kind, data, WriteMode::Replace)?;
        let write = write_of(rt, normalized.resource)?;
        let base = base_url(&headers, gw);
        let updated = if write.data == current.data {
            // Nothing changed (IdPs re-send memberships): no new version, no job.
            current
        } else {
            let detail = json!({"operations": patch_summary(&patch_req)});
            let event = audit_event(&gateway, audit::kinds::SCIM_PATCH, rt, Some(id), detail);
            match state
                .store
                .update_resource(gw, rt, id, current.version, &write, "patch", &event)
                .await
            {
                Ok(updated) => settle(state, &gateway, updated).await?,
                Err(StoreError::VersionConflict)
                    if wanted.is_none() && attempts < MAX_WRITE_RETRIES =>
                {
                    continue;
                }
                Err(StoreError::VersionConflict) => return Err(conflict(wanted)),
                Err(e) => return Err(e.into()),
            }
        };
        if gateway.patch_response == PatchResponse::NoContent && !params.asks_for_body() {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(e) = HeaderValue::from_str(&etag(updated.version)) {
                resp.headers_mut().insert(header::ETAG, e);
            }
            return Ok(resp);
        }
        let v = render_one(state, &updated, &base).await?;
        return Ok(resource_response(
            StatusCode::OK,
            &project(&projection, &v, kind),
            updated.version,
            None,
        ));
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

// ---------------------------------------------------------------- sync mode

/// A claim token: 32 random bytes, URL-safe.
fn new_claim_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `mode: sync` sheds load: when as many jobs of the integration are queued or running
/// as it has workers, a new write would wait behind them, so the IdP is told to come
/// back (429 with Retry-After) rather than left to time out.
async fn admit_sync_write(state: &ScimState, gateway: &Gateway) -> Result<(), ApiError> {
    if gateway.mode != Mode::Sync {
        return Ok(());
    }
    let queued = state.store.queued_jobs(&gateway.id).await?;
    let slots = gateway.concurrency.max(1) as i64;
    if queued >= slots {
        return Err(ApiError::Busy {
            retry_after_secs: (5 * (queued / slots + 1)).min(60) as u64,
        });
    }
    Ok(())
}

/// In sync mode, waits for the write's job and re-reads the resource with its state.
async fn settle(
    state: &ScimState,
    gateway: &Gateway,
    written: crate::store::StoredResource,
) -> Result<crate::store::StoredResource, ApiError> {
    if !await_job(state, gateway, &written.id, written.version).await? {
        return Ok(written);
    }
    Ok(state
        .store
        .get_resource(&gateway.id, written.resource_type, &written.id)
        .await?
        .unwrap_or(written))
}

/// In sync mode, waits until the job of the write of `resource_id` at `version` has
/// ended (following the job that covered it), up to the sync timeout. True when it
/// succeeded; a failed job is a 502 carrying the reason; a timeout answers as async
/// does (the state extension says `pending`).
async fn await_job(
    state: &ScimState,
    gateway: &Gateway,
    resource_id: &str,
    version: i64,
) -> Result<bool, ApiError> {
    if gateway.mode != Mode::Sync {
        return Ok(false);
    }
    let Some(mut job_id) = state
        .store
        .job_for_write(&gateway.id, resource_id, version)
        .await?
    else {
        return Ok(false);
    };
    let deadline = tokio::time::Instant::now() + state.sync_timeout;
    loop {
        let changed = state.store.jobs_changed();
        let Some(job) = state.store.job(job_id).await? else {
            return Ok(false);
        };
        match job.status.as_str() {
            "superseded" if job.superseded_by.is_some() => {
                job_id = job.superseded_by.unwrap_or(job_id);
                continue;
            }
            "succeeded" => return Ok(true),
            "failed" => {
                return Err(ScimError::new(
                    502,
                    None,
                    format!(
                        "the app did not accept the change: {}",
                        job.last_error.as_deref().unwrap_or("unknown error")
                    ),
                )
                .into());
            }
            "staged" | "cancelled" | "superseded" => return Ok(false),
            _ => {}
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(gateway = %gateway.id, job = job_id, "sync write answered before its job ended");
                return Ok(false);
            }
        }
    }
}

// ---------------------------------------------------------------- handlers

macro_rules! resource_handlers {
    ($rt:expr, $list:ident, $search:ident, $get:ident, $create:ident, $replace:ident, $patch:ident, $delete:ident) => {
        async fn $search(
            State(s): State<Arc<ScimState>>,
            Path(gw): Path<String>,
            req: Request<Body>,
        ) -> ApiResult {
            s.authorize(&gw, req.headers())?;
            let headers = req.headers().clone();
            let params = search_params(read_json(&s, req).await?)?;
            list(&s, &gw, $rt, &headers, params).await
        }
        async fn $list(
            State(s): State<Arc<ScimState>>,
            Path(gw): Path<String>,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
        ) -> ApiResult {
            s.authorize(&gw, &headers)?;
            list(&s, &gw, $rt, &headers, Params::parse(q)?).await
        }
        async fn $get(
            State(s): State<Arc<ScimState>>,
            Path((gw, id)): Path<(String, String)>,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
        ) -> ApiResult {
            s.authorize(&gw, &headers)?;
            get_one(&s, &gw, $rt, &id, &headers, Params::parse(q)?).await
        }
        async fn $create(
            State(s): State<Arc<ScimState>>,
            Path(gw): Path<String>,
            req: Request<Body>,
        ) -> ApiResult {
            create(&s, &gw, $rt, req).await
        }
        async fn $replace(
            State(s): State<Arc<ScimState>>,
            Path((gw, id)): Path<(String, String)>,
            req: Request<Body>,
        ) -> ApiResult {
            replace(&s, &gw, $rt, &id, req).await
        }
        async fn $patch(
            State(s): State<Arc<ScimState>>,
            Path((gw, id)): Path<(String, String)>,
            RawQuery(q): RawQuery,
            req: Request<Body>,
        ) -> ApiResult {
            s.authorize(&gw, req.headers())?;
            patch(&s, &gw, $rt, &id, Params::parse(q)?, req).await
        }
        async fn $delete(
            State(s): State<Arc<ScimState>>,
            Path((gw, id)): Path<(String, String)>,
            headers: HeaderMap,
        ) -> ApiResult {
            delete(&s, &gw, $rt, &id, &headers).await
        }
    };
}

resource_handlers!(
    ResourceType::User,
    list_users,
    search_users,
    get_user,
    create_user,
    replace_user,
    patch_user,
    delete_user
);
resource_handlers!(
    ResourceType::Group,
    list_groups,
    search_groups,
    get_group,
    create_group,
    replace_group,
    patch_group,
    delete_group
);
