//! The SCIM → playbook mapping of a user: what a playbook's templates see as `user`.
//! It lives here because the engine is where SCIM and the browser side meet; the
//! playbook only knows [`UserContext`].

use serde_json::Value;
use usher_scim_protocol::ENTERPRISE_USER_SCHEMA;

use crate::playbook::UserContext;

/// The user context of a stored SCIM user with the groups it belongs to (as
/// `Store::groups_of` lists them: id and display name), which map to app roles.
pub fn user_context_with_groups(
    data: &Value,
    groups: Option<&Vec<(String, String)>>,
) -> UserContext {
    let mut data = data.clone();
    if let Value::Object(m) = &mut data {
        let gs: Vec<Value> = groups
            .map(|v| {
                v.iter()
                    .map(|(id, name)| serde_json::json!({"value": id, "display": name}))
                    .collect()
            })
            .unwrap_or_default();
        m.insert("groups".into(), Value::Array(gs));
    }
    user_context(&data)
}

/// Flattens a SCIM 2.0 User resource (core and enterprise extension) for templates.
/// Booleans sent as strings (`"active": "True"`) are read as booleans.
pub fn user_context(u: &Value) -> UserContext {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let mut ctx = UserContext {
        user_name: s(&u["userName"]),
        given_name: s(&u["name"]["givenName"]),
        family_name: s(&u["name"]["familyName"]),
        display_name: s(&u["displayName"]),
        external_id: s(&u["externalId"]),
        title: s(&u["title"]),
        active: u["active"]
            .as_bool()
            .or_else(|| u["active"].as_str().map(|a| a.eq_ignore_ascii_case("true"))),
        department: s(&u[ENTERPRISE_USER_SCHEMA]["department"]),
        manager: s(&u[ENTERPRISE_USER_SCHEMA]["manager"]["displayName"])
            .or_else(|| s(&u[ENTERPRISE_USER_SCHEMA]["manager"]["value"])),
        ..Default::default()
    };
    let emails = u["emails"].as_array().cloned().unwrap_or_default();
    for e in &emails {
        if let (Some(t), Some(v)) = (e["type"].as_str(), e["value"].as_str()) {
            ctx.emails
                .entry(t.to_owned())
                .or_insert_with(|| v.to_owned());
        }
    }
    ctx.email = emails
        .iter()
        .find(|e| e["primary"].as_bool() == Some(true))
        .and_then(|e| s(&e["value"]))
        .or_else(|| ctx.emails.get("work").cloned())
        .or_else(|| emails.first().and_then(|e| s(&e["value"])));
    let names = |v: &Value, keys: &[&str]| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .or_else(|| keys.iter().find_map(|k| s(&x[*k])))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    ctx.roles = names(&u["roles"], &["value", "display"]);
    ctx.groups = names(&u["groups"], &["display", "value"]);
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_group_memberships_replace_what_the_resource_says() {
        let data = serde_json::json!({
            "userName": "a@x.test",
            "groups": [ { "value": "stale", "display": "Stale" } ]
        });
        let groups = vec![("g1".to_owned(), "Admins".to_owned())];
        let u = user_context_with_groups(&data, Some(&groups));
        assert_eq!(u.groups, vec!["Admins".to_string()]);
        assert!(user_context_with_groups(&data, None).groups.is_empty());
    }

    #[test]
    fn maps_core_enterprise_emails_roles_and_groups() {
        let u = user_context(&serde_json::json!({
            "userName": "ada",
            "name": { "givenName": "Ada", "familyName": "Lovelace" },
            "emails": [ { "value": "ada@home.test", "type": "home" },
                        { "value": "ada+x@acme.test", "type": "work", "primary": true } ],
            "active": true,
            "roles": [ { "value": "Engineering" } ],
            "groups": [ { "value": "g1", "display": "Finance" } ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "R&D", "manager": { "value": "m1", "displayName": "Grace" }
            }
        }));
        assert_eq!(u.user_name.as_deref(), Some("ada"));
        assert_eq!(u.email.as_deref(), Some("ada+x@acme.test"));
        assert_eq!(
            u.emails.get("home").map(String::as_str),
            Some("ada@home.test")
        );
        assert_eq!(u.given_name.as_deref(), Some("Ada"));
        assert_eq!(u.family_name.as_deref(), Some("Lovelace"));
        assert_eq!(u.roles, vec!["Engineering".to_string()]);
        assert_eq!(u.groups, vec!["Finance".to_string()]);
        assert_eq!(u.department.as_deref(), Some("R&D"));
        assert_eq!(u.manager.as_deref(), Some("Grace"));
        assert_eq!(u.active, Some(true));
    }

    #[test]
    fn email_falls_back_to_work_then_first_and_active_may_be_a_string() {
        let u = user_context(&serde_json::json!({
            "userName": "bob",
            "active": "False",
            "emails": [ { "value": "b@home.test", "type": "home" },
                        { "value": "b@work.test", "type": "work" } ]
        }));
        assert_eq!(u.email.as_deref(), Some("b@work.test"));
        assert_eq!(u.active, Some(false));
        let u = user_context(&serde_json::json!({
            "emails": [ { "value": "c@x.test" } ], "roles": ["Admin"]
        }));
        assert_eq!(u.email.as_deref(), Some("c@x.test"));
        assert_eq!(u.roles, vec!["Admin".to_string()]);
        assert_eq!(u.user_name, None);
    }
}
