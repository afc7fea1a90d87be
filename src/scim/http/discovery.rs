//! Discovery endpoints (RFC 7644 §4): ServiceProviderConfig, ResourceTypes, Schemas,
//! each with absolute locations under the gateway's own base URL.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::base_url;
use super::error::{ApiResult, scim_json};
use super::state::ScimState;
use crate::scim::protocol::{self, ScimError};

pub(super) async fn service_provider_config(
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

pub(super) fn list_document(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
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

pub(super) async fn resource_types(
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

pub(super) async fn resource_type(
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

pub(super) async fn schemas(
    State(state): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.authorize(&gw, &headers)?;
    let base = base_url(&headers, &gw);
    Ok(discovery_list(protocol::schema::schemas_json(), &base))
}

pub(super) async fn schema(
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
