//! axum routes of the SCIM gateways, mapping the protocol core onto the store.
//!
//! One file per concern: `state` (what the handlers share), `error` (`ApiError` → SCIM
//! error document), `discovery` (ServiceProviderConfig, ResourceTypes, Schemas),
//! `params` (query parameters and `.search` bodies), `render` (stored resource → SCIM
//! JSON), `read` (list, search, get), `write` (create, replace, patch, delete) and
//! `sync` (`mode: sync` admission and waiting for a write's job). Each route has its own
//! named handler (`create_user`, `patch_group`, …) in `read` or `write`.

mod discovery;
mod error;
mod params;
mod read;
mod render;
mod state;
mod sync;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use super::protocol::{ResourceKind, ScimError};
use crate::store::ResourceType;
use discovery::{resource_type, resource_types, schema, schemas, service_provider_config};
use error::{ApiError, ApiResult, error_document, scim_json};
use read::{get_group, get_user, list_groups, list_users, search_groups, search_users};
use write::{
    create_group, create_user, delete_group, delete_user, patch_group, patch_user, replace_group,
    replace_user,
};

pub use state::{ScimState, StagedHook};

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
        .route("/Users/.search", post(search_users))
        .route("/Groups/.search", post(search_groups))
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
        .route("/.search", any(not_implemented))
        .route("/Bulk", any(not_implemented))
        .route("/Me", any(not_implemented))
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
pub(super) fn base_url(headers: &HeaderMap, gateway_id: &str) -> String {
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

pub(super) fn kind_of(rt: ResourceType) -> ResourceKind {
    match rt {
        ResourceType::User => ResourceKind::User,
        ResourceType::Group => ResourceKind::Group,
    }
}
