//! Stored resources as the IdP sees them: `id`, `meta`, a user's groups and provisioning
//! state, members' `$ref`s, projection, ETags.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{ApiError, scim_json};
use super::kind_of;
use super::state::ScimState;
use crate::scim::protocol::{self, Projection, ResourceKind};
use crate::store::{ResourceType, StoredResource};

/// The resource as the IdP sees it: body, id, meta, users' groups and provisioning state.
pub(super) fn render(
    r: &StoredResource,
    base: &str,
    groups: Option<&Vec<(String, String)>>,
) -> Value {
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
pub(super) fn project(projection: &Projection, v: &Value, kind: ResourceKind) -> Value {
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

pub(super) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

pub(super) fn resource_response(
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

pub(super) async fn render_one(
    state: &ScimState,
    r: &StoredResource,
    base: &str,
) -> Result<Value, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ProvisioningState;

    fn stored(rt: ResourceType, data: Value) -> StoredResource {
        StoredResource {
            id: "r1".into(),
            integration_id: "acme".into(),
            resource_type: rt,
            version: 3,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            modified_at: "2026-01-02T00:00:00.000Z".into(),
            data,
            provisioning: ProvisioningState {
                state: "provisioned".into(),
                reason: None,
                app_account_id: Some("42".into()),
                last_synced_at: None,
            },
        }
    }

    #[test]
    fn a_user_gets_id_meta_groups_and_its_provisioning_state() {
        let base = "https://usher.example/scim/v2/acme";
        let r = stored(
            ResourceType::User,
            json!({"schemas": [protocol::USER_SCHEMA], "userName": "ada"}),
        );
        let groups = vec![("g1".to_string(), "Finance".to_string())];
        let v = render(&r, base, Some(&groups));
        assert_eq!(v["id"], "r1");
        assert_eq!(v["meta"]["version"], "W/\"3\"");
        assert_eq!(v["meta"]["location"], format!("{base}/Users/r1"));
        assert_eq!(v["meta"]["resourceType"], "User");
        assert_eq!(
            v["groups"],
            json!([{"value": "g1", "display": "Finance", "$ref": format!("{base}/Groups/g1"), "type": "direct"}])
        );
        assert_eq!(
            v[protocol::PROVISIONING_SCHEMA],
            json!({"state": "provisioned", "appAccountId": "42"})
        );
        assert_eq!(
            v["schemas"],
            json!([protocol::USER_SCHEMA, protocol::PROVISIONING_SCHEMA])
        );
        // Leaving the extension out also takes its URN out of `schemas`.
        let kind = ResourceKind::User;
        let p = Projection::parse(None, Some(protocol::PROVISIONING_SCHEMA), kind).unwrap();
        let projected = project(&p, &v, kind);
        assert_eq!(projected["schemas"], json!([protocol::USER_SCHEMA]));
        assert!(projected.get(protocol::PROVISIONING_SCHEMA).is_none());
    }

    #[test]
    fn group_members_get_references() {
        let r = stored(
            ResourceType::Group,
            json!({"displayName": "G", "members": [{"value": "u1"}, {"value": "g2", "type": "Group"}, {"value": "u3", "$ref": "kept"}]}),
        );
        let v = render(&r, "http://h/scim/v2/acme", None);
        assert_eq!(v["members"][0]["$ref"], "http://h/scim/v2/acme/Users/u1");
        assert_eq!(v["members"][1]["$ref"], "http://h/scim/v2/acme/Groups/g2");
        assert_eq!(v["members"][2]["$ref"], "kept");
        assert_eq!(etag(12), "W/\"12\"");
    }
}
