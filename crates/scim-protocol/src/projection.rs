//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) honouring `returned` (RFC 7643 §2.2).

use serde_json::{Map, Value};

use super::error::ScimError;
use super::path::AttrPath;
use super::schema::{self, AttrDef, ResourceKind, Returned};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Projection {
    /// `Some` when `attributes` was given: only these (plus `returned: always`).
    pub attributes: Option<Vec<AttrPath>>,
    pub excluded: Vec<AttrPath>,
    /// Extension URNs named on their own (the whole extension object).
    pub included_schemas: Vec<String>,
    pub excluded_schemas: Vec<String>,
}

/// Splits on commas outside brackets and quotes (value filters may hold commas).
fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    let mut cur = String::new();
    for ch in s.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
            cur.push(ch);
            continue;
        }
        match ch {
            '"' => in_str = true,
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `emails[type eq "work"].value` → `emails.value` (Microsoft sends value
/// filters inside `attributes`; projection works per attribute anyway).
fn strip_value_filter(item: &str) -> String {
    match (item.find('['), item.rfind(']')) {
        (Some(open), Some(close)) if close > open => {
            let head = item.get(..open).unwrap_or_default();
            let tail = item.get(close + 1..).unwrap_or_default();
            format!("{head}{tail}")
        }
        (Some(open), _) => item.get(..open).unwrap_or_default().to_string(),
        _ => item.to_string(),
    }
}

fn parse_list(raw: &str, kind: ResourceKind, paths: &mut Vec<AttrPath>, schemas: &mut Vec<String>) {
    for item in split_list(raw) {
        if let Some(ext) = schema::extension(kind, &item) {
            schemas.push(ext.id.to_string());
        } else if let Some(p) = schema::resolve(kind, &strip_value_filter(&item)) {
            paths.push(p);
        }
        // Unknown names are ignored (RFC 7644 does not make them an error).
    }
}

impl Projection {
    /// Parses the query parameters; unknown names are ignored. Never fails
    /// today; the `Result` leaves room for stricter rules.
    pub fn parse(
        attributes: Option<&str>,
        excluded: Option<&str>,
        kind: ResourceKind,
    ) -> Result<Projection, ScimError> {
        let mut p = Projection::default();
        if let Some(a) = attributes.filter(|a| !a.trim().is_empty()) {
            let mut list = Vec::new();
            parse_list(a, kind, &mut list, &mut p.included_schemas);
            p.attributes = Some(list);
        }
        if let Some(e) = excluded {
            parse_list(e, kind, &mut p.excluded, &mut p.excluded_schemas);
        }
        Ok(p)
    }

    fn project_attr(&self, urn: Option<&str>, def: &AttrDef, v: &Value) -> Option<Value> {
        match def.returned {
            Returned::Never => return None,
            Returned::Always => return Some(v.clone()),
            _ => {}
        }
        let probe = AttrPath {
            schema_urn: urn.map(String::from),
            attr: def.name.to_string(),
            sub: None,
        };
        let urn_in = |list: &Vec<String>| {
            urn.is_some_and(|u| list.iter().any(|s| s.eq_ignore_ascii_case(u)))
        };
        let subs_of = |list: &[AttrPath]| -> Vec<String> {
            list.iter()
                .filter(|p| p.same_attr(&probe))
                .filter_map(|p| p.sub.clone())
                .collect()
        };
        let mut value = if let Some(attrs) = &self.attributes {
            let whole = urn_in(&self.included_schemas)
                || attrs.iter().any(|p| p.same_attr(&probe) && p.sub.is_none());
            if whole {
                v.clone()
            } else {
                let keep = subs_of(attrs);
                if keep.is_empty() {
                    return None;
                }
                retain_subs(v, |k| keep.iter().any(|s| s.eq_ignore_ascii_case(k)))
            }
        } else {
            if def.returned == Returned::Request {
                return None;
            }
            v.clone()
        };
        if urn_in(&self.excluded_schemas)
            || self
                .excluded
                .iter()
                .any(|p| p.same_attr(&probe) && p.sub.is_none())
        {
            return None;
        }
        let drop = subs_of(&self.excluded);
        if !drop.is_empty() {
            value = retain_subs(&value, |k| !drop.iter().any(|s| s.eq_ignore_ascii_case(k)));
        }
        let empty = match &value {
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => false,
        };
        (!empty).then_some(value)
    }

    /// Applies the projection to a rendered resource. `schemas` and
    /// `returned: always` attributes (`id`) are always kept; `returned: never`
    /// attributes (`password`) are always dropped.
    pub fn apply(&self, resource: &Value, kind: ResourceKind) -> Value {
        let Some(obj) = resource.as_object() else {
            return resource.clone();
        };
        let mut out = Map::new();
        for (k, v) in obj {
            if k.eq_ignore_ascii_case("schemas") {
                out.insert(k.clone(), v.clone());
                continue;
            }
            if let Some(ext) = schema::extension(kind, k) {
                let Some(inner) = v.as_object() else { continue };
                let mut e = Map::new();
                for (ik, iv) in inner {
                    match ext.attr(ik) {
                        Some(def) => {
                            if let Some(pv) = self.project_attr(Some(ext.id), def, iv) {
                                e.insert(ik.clone(), pv);
                            }
                        }
                        None if self.attributes.is_none() => {
                            e.insert(ik.clone(), iv.clone());
                        }
                        None => {}
                    }
                }
                if !e.is_empty() {
                    out.insert(k.clone(), Value::Object(e));
                }
                continue;
            }
            match schema::core_attr(kind, k) {
                Some(def) => {
                    if let Some(pv) = self.project_attr(None, def, v) {
                        out.insert(k.clone(), pv);
                    }
                }
                // Keys outside the schema pass through only without `attributes`.
                None if self.attributes.is_none() => {
                    out.insert(k.clone(), v.clone());
                }
                None => {}
            }
        }
        Value::Object(out)
    }
}

/// Keeps the sub-attributes accepted by `keep` in an object or each element of an array.
fn retain_subs(v: &Value, keep: impl Fn(&str) -> bool) -> Value {
    let filter_obj = |o: &Map<String, Value>| -> Map<String, Value> {
        o.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    match v {
        Value::Object(o) => Value::Object(filter_obj(o)),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter_map(|e| match e {
                    Value::Object(o) => {
                        let f = filter_obj(o);
                        (!f.is_empty()).then_some(Value::Object(f))
                    }
                    _ => None,
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{
        ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, PROVISIONING_SCHEMA, USER_SCHEMA,
    };
    use super::*;
    use serde_json::json;

    const U: ResourceKind = ResourceKind::User;
    const ENT: &str = ENTERPRISE_USER_SCHEMA;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENT, PROVISIONING_SCHEMA],
            "id": "u1",
            "externalId": "e1",
            "userName": "bjensen",
            "password": "secret",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@x", "type": "work"}, {"value": "h@x", "type": "home"}],
            "meta": {"resourceType": "User", "created": "2020-01-01T00:00:00Z"},
            ENT: {"department": "Ops", "manager": {"value": "m1", "displayName": "M"}},
            PROVISIONING_SCHEMA: {"state": "provisioned"}
        })
    }

    fn proj(a: Option<&str>, e: Option<&str>) -> Value {
        Projection::parse(a, e, U).unwrap().apply(&user(), U)
    }

    #[test]
    fn default_drops_never_and_request_only() {
        let v = proj(None, None);
        let mut expected = user();
        expected.as_object_mut().unwrap().remove("password");
        // The provisioning extension is returned on request only.
        expected
            .as_object_mut()
            .unwrap()
            .remove(PROVISIONING_SCHEMA);
        assert_eq!(v, expected);
        let asked = proj(Some(PROVISIONING_SCHEMA), None);
        assert_eq!(asked[PROVISIONING_SCHEMA]["state"], "provisioned");
        assert_eq!(asked["id"], "u1");
        assert!(asked.get("userName").is_none());
    }

    #[test]
    fn attributes_keep_always_and_named() {
        assert_eq!(
            proj(Some("userName"), None),
            json!({"schemas": [USER_SCHEMA, ENT, PROVISIONING_SCHEMA], "id": "u1", "userName": "bjensen"})
        );
        assert_eq!(
            proj(Some("NAME.givenName, password"), None),
            json!({"schemas": [USER_SCHEMA, ENT, PROVISIONING_SCHEMA], "id": "u1", "name": {"givenName": "Barbara"}})
        );
        assert_eq!(
            proj(Some("emails.value"), None)["emails"],
            json!([{"value": "b@x"}, {"value": "h@x"}])
        );
        let v = proj(
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value,bogus"),
            None,
        );
        assert_eq!(v[ENT], json!({"manager": {"value": "m1"}}));
        assert!(v.get("userName").is_none());
        let v = proj(Some(ENT), None);
        assert_eq!(v[ENT], user()[ENT]);
        assert_eq!(
            proj(Some("meta.created"), None)["meta"],
            json!({"created": "2020-01-01T00:00:00Z"})
        );
    }

    #[test]
    fn microsoft_value_filter_in_attributes() {
        let v = proj(Some("emails[type eq \"work\"],userName"), None);
        assert!(v.get("emails").is_some());
        assert_eq!(v["userName"], "bjensen");
        let v = proj(Some("emails[type eq \"a,b\"].value"), None);
        assert_eq!(v["emails"], json!([{"value": "b@x"}, {"value": "h@x"}]));
    }

    #[test]
    fn excluded_attributes() {
        let v = proj(None, Some("emails,name.familyName,id"));
        assert!(v.get("emails").is_none());
        assert_eq!(v["name"], json!({"givenName": "Barbara"}));
        assert_eq!(v["id"], "u1", "returned=always cannot be excluded");
        let v = proj(None, Some(PROVISIONING_SCHEMA));
        assert!(v.get(PROVISIONING_SCHEMA).is_none());
        let v = proj(None, Some(&format!("{ENT}:department")));
        assert_eq!(
            v[ENT],
            json!({"manager": {"value": "m1", "displayName": "M"}})
        );
        // Entra: excludedAttributes=members on groups.
        let g = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G", "members": [{"value": "u1"}]});
        let p = Projection::parse(None, Some("members"), ResourceKind::Group).unwrap();
        assert_eq!(
            p.apply(&g, ResourceKind::Group),
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G"})
        );
    }

    #[test]
    fn empty_attributes_param_means_default() {
        assert_eq!(proj(Some(" "), None), proj(None, None));
        assert_eq!(split_list("a, b,,c"), vec!["a", "b", "c"]);
    }
}
