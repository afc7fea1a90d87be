//! Reads: list with filter, sort and paging; `.search`; get one (with `If-None-Match`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;

use super::discovery::list_document;
use super::error::{ApiResult, scim_json};
use super::params::{Params, search_params};
use super::render::{etag, project, render, render_one, resource_response};
use super::state::ScimState;
use super::write::read_json;
use super::{base_url, kind_of};
use crate::scim::protocol::{self, Filter, ScimError, SortSpec};
use crate::store::{LookupColumn, ResourceType};

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

// The routes' handlers: one per resource type, so that each can be found by name.

pub(super) async fn list_users(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    list_query(&s, &gw, ResourceType::User, &headers, q).await
}

pub(super) async fn list_groups(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    list_query(&s, &gw, ResourceType::Group, &headers, q).await
}

pub(super) async fn search_users(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    req: Request,
) -> ApiResult {
    search(&s, &gw, ResourceType::User, req).await
}

pub(super) async fn search_groups(
    State(s): State<Arc<ScimState>>,
    Path(gw): Path<String>,
    req: Request,
) -> ApiResult {
    search(&s, &gw, ResourceType::Group, req).await
}

pub(super) async fn get_user(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    s.authorize(&gw, &headers)?;
    get_one(
        &s,
        &gw,
        ResourceType::User,
        &id,
        &headers,
        Params::parse(q)?,
    )
    .await
}

pub(super) async fn get_group(
    State(s): State<Arc<ScimState>>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    s.authorize(&gw, &headers)?;
    get_one(
        &s,
        &gw,
        ResourceType::Group,
        &id,
        &headers,
        Params::parse(q)?,
    )
    .await
}

async fn list_query(
    state: &ScimState,
    gw: &str,
    rt: ResourceType,
    headers: &HeaderMap,
    query: Option<String>,
) -> ApiResult {
    state.authorize(gw, headers)?;
    list(state, gw, rt, headers, Params::parse(query)?).await
}

/// `POST …/.search`: the body stands for the query parameters (RFC 7644 §3.4.3).
async fn search(state: &ScimState, gw: &str, rt: ResourceType, req: Request) -> ApiResult {
    state.authorize(gw, req.headers())?;
    let headers = req.headers().clone();
    let params = search_params(read_json(state, req).await?)?;
    list(state, gw, rt, &headers, params).await
}
