//! Validation and normalisation of POST/PUT bodies (RFC 7643 §2, RFC 7644 §3.3, §3.5.1).

use serde_json::{Map, Number, Value};

use super::error::ScimError;
use super::schema::{self, AttrDef, AttrType, Mutability, ResourceKind, SchemaDef};
use super::util::{insert_canonical, is_unassigned, parse_datetime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// POST
    Create,
    /// PUT: the caller merges with the stored resource (see `carry_over_for_replace`).
    Replace,
}

/// Outcome of `normalize_input`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub resource: Value,
    /// Unknown attributes that were dropped (dotted / URN-prefixed), for logging.
    pub ignored: Vec<String>,
}

/// The name of a resource (User `userName`, Group `displayName`) must be a JSON string
/// with a visible character and no control character (U+0000-U+001F, U+007F-U+009F):
/// it becomes a login or group name in the app, where a number, a blank or a NUL is
/// at best a broken account. 400 invalidValue otherwise; no coercion.
pub(super) fn check_name(v: &Value, name: &str) -> Result<(), ScimError> {
    let Value::String(s) = v else {
        return Err(ScimError::invalid_value(format!(
            "attribute '{name}' must be a string, got {}",
            json_kind(v)
        )));
    };
    if s.trim().is_empty() {
        return Err(ScimError::invalid_value(format!(
            "attribute '{name}' must not be empty or only whitespace"
        )));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(ScimError::invalid_value(format!(
            "attribute '{name}' must not contain control characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

/// A multi-valued attribute in a resource body is a JSON array (RFC 7643 §2.4); a
/// lone string or object is not among the dialects Usher accepts: 400 invalidSyntax.
pub(super) fn check_multi_valued_shape(
    def: &AttrDef,
    v: &Value,
    name: &str,
) -> Result<(), ScimError> {
    if def.multi_valued && !matches!(v, Value::Array(_) | Value::Null) {
        return Err(ScimError::invalid_syntax(format!(
            "attribute '{name}' is multi-valued and must be a JSON array, got {}",
            json_kind(v)
        )));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Coerces one scalar to `def`'s type where lossless (Entra sends "True",
/// some clients send numbers for string attributes); else 400 invalidValue. The
/// resource's name is never coerced (`check_name`).
pub(super) fn coerce_scalar(def: &AttrDef, v: Value, name: &str) -> Result<Value, ScimError> {
    if def.names_resource {
        check_name(&v, name)?;
        return Ok(v);
    }
    let bad = |v: &Value| {
        ScimError::invalid_value(format!(
            "attribute '{name}' expects a {} value, got {v}",
            def.ty.as_str()
        ))
    };
    match def.ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => match v {
            Value::String(_) => Ok(v),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(bad(&other)),
        },
        AttrType::Boolean => match &v {
            Value::Bool(_) => Ok(v),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(bad(&v)),
            },
            _ => Err(bad(&v)),
        },
        AttrType::Integer => match &v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v),
            Value::Number(n) => match n.as_f64() {
                // 3.0 → 3 is lossless; 3.5 is not.
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Ok(Value::Number(Number::from(f as i64)))
                }
                _ => Err(bad(&v)),
            },
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|i| Value::Number(i.into()))
                .map_err(|_| bad(&v)),
            _ => Err(bad(&v)),
        },
        AttrType::Decimal => match &v {
            Value::Number(_) => Ok(v),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad(&v)),
            _ => Err(bad(&v)),
        },
        AttrType::DateTime => match &v {
            Value::String(s) if parse_datetime(s).is_some() => Ok(v),
            _ => Err(bad(&v)),
        },
        AttrType::Complex => Err(bad(&v)),
    }
}

/// Normalises one (non-array) value of `def`: complex → object with canonical
/// sub-attribute names; unknown sub-attributes go to `ignored`; readOnly
/// sub-attributes are dropped (RFC 7643 §2.2); a scalar given for a complex
/// attribute with a `value` sub-attribute becomes `{"value": …}` (Entra sends
/// the manager id as a plain string). `None` means "unassigned".
pub(super) fn normalize_single(
    def: &AttrDef,
    v: Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    if !def.is_complex() {
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            return Err(ScimError::invalid_value(format!(
                "attribute '{name}' expects a {} value",
                def.ty.as_str()
            )));
        }
        return coerce_scalar(def, v, name).map(Some);
    }
    let obj = match v {
        Value::Object(o) => o,
        // Entra adds a manager as a one-element array; a single-valued complex
        // attribute takes that element.
        Value::Array(mut items) if items.len() == 1 && items[0].is_object() => match items.pop() {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        },
        scalar @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
            let Some(vs) = def.value_sub() else {
                return Err(ScimError::invalid_value(format!(
                    "attribute '{name}' expects a complex value"
                )));
            };
            let mut o = Map::new();
            o.insert(vs.name.to_string(), scalar);
            o
        }
        _ => {
            return Err(ScimError::invalid_value(format!(
                "attribute '{name}' expects a complex value"
            )));
        }
    };
    let mut out = Map::new();
    for (k, sv) in obj {
        // Microsoft's collection names a member's `display` `displayName`.
        let sub = def.sub_attr(&k).or_else(|| {
            (k.eq_ignore_ascii_case("displayName") && def.name == "members")
                .then(|| def.sub_attr("display"))
                .flatten()
        });
        let Some(sub) = sub else {
            ignored.push(format!("{name}.{k}"));
            continue;
        };
        if sv.is_null() || sub.mutability == Mutability::ReadOnly {
            continue;
        }
        let full = format!("{name}.{}", sub.name);
        if matches!(sv, Value::Array(_) | Value::Object(_)) {
            return Err(ScimError::invalid_value(format!(
                "attribute '{full}' expects a {} value",
                sub.ty.as_str()
            )));
        }
        let cv = coerce_scalar(sub, sv, &full)?;
        insert_canonical(&mut out, sub.name, cv);
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Object(out)))
}

/// Normalises one element of a multi-valued attribute and checks its required
/// sub-attributes (e.g. Group `members[].value`).
pub(super) fn normalize_item(
    def: &AttrDef,
    v: Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    let Some(item) = normalize_single(def, v, name, ignored)? else {
        return Ok(None);
    };
    if let Value::Object(o) = &item {
        for sub in def.sub_attributes.iter().filter(|s| s.required) {
            if o.get(sub.name).is_none_or(is_unassigned) {
                return Err(ScimError::invalid_value(format!(
                    "attribute '{name}.{}' is required",
                    sub.name
                )));
            }
        }
    }
    Ok(Some(item))
}

/// Normalises a whole attribute value (array for multi-valued attributes;
/// a lone element is wrapped). Drops exact duplicates and keeps at most one
/// `primary: true` (the first; RFC 7643 §2.4). `None` = unassigned.
pub(super) fn normalize_attr(
    def: &AttrDef,
    v: Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if !def.multi_valued {
        if let Value::Array(_) = v {
            return Err(ScimError::invalid_value(format!(
                "attribute '{name}' is single-valued"
            )));
        }
        return normalize_single(def, v, name, ignored);
    }
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(a) => a,
        other => vec![other],
    };
    let mut out: Vec<Value> = Vec::new();
    for it in items {
        if let Value::Array(_) = it {
            return Err(ScimError::invalid_value(format!(
                "attribute '{name}' has a nested array"
            )));
        }
        if let Some(n) = normalize_item(def, it, name, ignored)?
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    let mut seen_primary = false;
    for it in out.iter_mut() {
        if let Some(Value::Bool(true)) = it.get("primary") {
            if seen_primary && let Some(o) = it.as_object_mut() {
                o.insert("primary".into(), Value::Bool(false));
            }
            seen_primary = true;
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Array(out)))
}

/// Sets `schemas` to the core URN plus the extension URNs present (non-empty).
pub(super) fn fix_schemas(obj: &mut Map<String, Value>, kind: ResourceKind) {
    let mut schemas = vec![Value::String(kind.core_schema().to_string())];
    for ext in kind.extensions() {
        if let Some(v) = obj.get(ext.id)
            && !is_unassigned(v)
        {
            schemas.push(Value::String(ext.id.to_string()));
        }
    }
    // `schemas` first: clients (and humans) expect it there.
    let rest: Map<String, Value> = std::mem::take(obj)
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
        .collect();
    obj.insert("schemas".into(), Value::Array(schemas));
    obj.extend(rest);
}

/// Required top-level attributes (userName / Group displayName) present and non-empty.
pub(super) fn check_required(
    obj: &Map<String, Value>,
    kind: ResourceKind,
) -> Result<(), ScimError> {
    for def in kind.core().attributes.iter().filter(|d| d.required) {
        if obj.get(def.name).is_none_or(is_unassigned) {
            return Err(ScimError::invalid_value(format!(
                "attribute '{}' is required",
                def.name
            )));
        }
    }
    Ok(())
}

fn place(
    out: &mut Map<String, Value>,
    ext: Option<&SchemaDef>,
    name: &str,
    sub: Option<&str>,
    v: Value,
) {
    let container = match ext {
        Some(e) => {
            let slot = out
                .entry(e.id.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot.as_object_mut() {
                Some(m) => m,
                None => return,
            }
        }
        None => out,
    };
    match sub {
        None => insert_canonical(container, name, v),
        Some(s) => {
            let slot = container
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = slot.as_object_mut() {
                m.insert(s.to_string(), v);
            }
        }
    }
}

/// Normalises one top-level key/value of the body into `out`.
fn absorb(
    kind: ResourceKind,
    key: &str,
    v: Value,
    out: &mut Map<String, Value>,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    if let Some(ext) = schema::extension(kind, key) {
        // readOnly extensions (provisioning) are server-owned: ignore on input.
        if ext
            .attributes
            .iter()
            .all(|a| a.mutability == Mutability::ReadOnly)
            || v.is_null()
        {
            return Ok(());
        }
        let Value::Object(inner) = v else {
            return Err(ScimError::invalid_value(format!(
                "extension '{}' must be an object",
                ext.id
            )));
        };
        for (k, iv) in inner {
            let Some(def) = ext.attr(&k) else {
                ignored.push(format!("{}:{k}", ext.id));
                continue;
            };
            if def.mutability == Mutability::ReadOnly {
                continue;
            }
            let full = format!("{}:{}", ext.id, def.name);
            check_multi_valued_shape(def, &iv, &full)?;
            if let Some(nv) = normalize_attr(def, iv, &full, ignored)? {
                place(out, Some(ext), def.name, None, nv);
            }
        }
        return Ok(());
    }
    let Some(path) = schema::resolve(kind, key) else {
        ignored.push(key.to_string());
        return Ok(());
    };
    let (Some(top), Some(leaf)) = (
        schema::top_attribute(kind, &path),
        schema::attribute(kind, &path),
    ) else {
        ignored.push(key.to_string());
        return Ok(());
    };
    if top.mutability == Mutability::ReadOnly || leaf.mutability == Mutability::ReadOnly {
        return Ok(());
    }
    let ext = path
        .schema_urn
        .as_deref()
        .and_then(|u| schema::extension(kind, u));
    let full = path.to_string();
    match &path.sub {
        None => {
            check_multi_valued_shape(top, &v, &full)?;
            if let Some(nv) = normalize_attr(top, v, &full, ignored)? {
                place(out, ext, top.name, None, nv);
            }
        }
        // A dotted key like "name.givenName" in a body: only for single-valued complex.
        Some(sub) if !top.multi_valued => {
            if let Some(nv) = normalize_attr(leaf, v, &full, ignored)? {
                place(out, ext, top.name, Some(sub), nv);
            }
        }
        Some(_) => ignored.push(key.to_string()),
    }
    Ok(())
}

/// Validates and normalises a POST/PUT body. Does not add `id`/`meta`.
///
/// Decisions: a missing `schemas` is accepted (Microsoft's test collection
/// posts without it) but a `schemas` lacking the kind's core URN is 400
/// invalidSyntax; unknown attributes are dropped and reported in `ignored`;
/// readOnly attributes are silently dropped; nulls mean "unassigned".
pub fn normalize_input(
    kind: ResourceKind,
    body: Value,
    mode: WriteMode,
) -> Result<Normalized, ScimError> {
    // Both modes validate the same way; PUT-specific rules need the stored
    // resource and live in `carry_over_for_replace`.
    let _ = mode;
    let Value::Object(body) = body else {
        return Err(ScimError::invalid_syntax(
            "request body must be a JSON object",
        ));
    };
    let mut out = Map::new();
    let mut ignored = Vec::new();
    for (k, v) in body {
        if k.eq_ignore_ascii_case("schemas") {
            let ok = match &v {
                Value::Array(a) => a.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(kind.core_schema()))
                }),
                Value::Null => true,
                _ => false,
            };
            if !ok {
                return Err(ScimError::invalid_syntax(format!(
                    "'schemas' must contain '{}'",
                    kind.core_schema()
                )));
            }
            continue;
        }
        if k.eq_ignore_ascii_case(kind.core_schema()) {
            // Core attributes nested under the core URN: flatten them.
            if let Value::Object(inner) = v {
                for (ik, iv) in inner {
                    absorb(kind, &ik, iv, &mut out, &mut ignored)?;
                }
            }
            continue;
        }
        absorb(kind, &k, v, &mut out, &mut ignored)?;
    }
    out.retain(|_, v| !is_unassigned(v));
    check_required(&out, kind)?;
    fix_schemas(&mut out, kind);
    Ok(Normalized {
        resource: Value::Object(out),
        ignored,
    })
}

/// For PUT: rejects changes to immutable attributes that are already set
/// (400 mutability) and carries over what the client cannot send: readOnly
/// attributes (`id`, `meta`, `groups`, read-only extensions) and, when the
/// body omits it, the writeOnly `password` (it is never returned, so a
/// client doing GET-modify-PUT could not resend it).
pub fn carry_over_for_replace(
    kind: ResourceKind,
    existing: &Value,
    new: &mut Value,
) -> Result<(), ScimError> {
    let (Some(old), Some(new_obj)) = (existing.as_object(), new.as_object_mut()) else {
        return Err(ScimError::invalid_syntax("resource must be a JSON object"));
    };
    for def in kind
        .core()
        .attributes
        .iter()
        .chain(schema::common_attributes())
    {
        let Some(ov) = old.get(def.name) else {
            continue;
        };
        match def.mutability {
            Mutability::ReadOnly => {
                new_obj.insert(def.name.to_string(), ov.clone());
            }
            Mutability::WriteOnly if !new_obj.contains_key(def.name) => {
                new_obj.insert(def.name.to_string(), ov.clone());
            }
            Mutability::Immutable => {
                if let Some(nv) = new_obj.get(def.name)
                    && nv != ov
                {
                    return Err(ScimError::mutability(format!(
                        "attribute '{}' is immutable",
                        def.name
                    )));
                }
            }
            _ => {}
        }
    }
    for ext in kind.extensions() {
        if ext
            .attributes
            .iter()
            .all(|a| a.mutability == Mutability::ReadOnly)
            && let Some(ov) = old.get(ext.id)
        {
            new_obj.insert(ext.id.to_string(), ov.clone());
        }
    }
    fix_schemas(new_obj, kind);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::super::schema::{
        ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, PROVISIONING_SCHEMA, USER_SCHEMA,
    };
    use super::*;
    use serde_json::json;

    const U: ResourceKind = ResourceKind::User;
    const G: ResourceKind = ResourceKind::Group;

    fn norm(kind: ResourceKind, v: Value) -> Result<Normalized, ScimError> {
        normalize_input(kind, v, WriteMode::Create)
    }

    #[test]
    fn canonicalises_names_and_schemas() {
        let n = norm(
            U,
            json!({
                "schemas": [USER_SCHEMA],
                "UserName": "bjensen",
                "NAME": {"GivenName": "Barbara", "familyname": "Jensen"},
                "Emails": [{"Value": "b@x.com", "TYPE": "work", "Primary": "True"}],
                "Active": "False",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"EmployeeNumber": 701984, "Manager": "26118915"}
            }),
        )
        .unwrap();
        assert_eq!(
            n.resource,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "userName": "bjensen",
                "name": {"givenName": "Barbara", "familyName": "Jensen"},
                "emails": [{"value": "b@x.com", "type": "work", "primary": true}],
                "active": false,
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
            })
        );
        assert!(n.ignored.is_empty());
    }

    #[test]
    fn missing_schemas_accepted_wrong_rejected() {
        let n = norm(U, json!({"userName": "a"})).unwrap();
        assert_eq!(n.resource["schemas"], json!([USER_SCHEMA]));
        let e = norm(U, json!({"schemas": [GROUP_SCHEMA], "userName": "a"})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        let e = norm(U, json!({"schemas": "x", "userName": "a"})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        let e = norm(U, json!([1])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        // Extension URN listed in schemas but absent from the body is dropped.
        let n = norm(
            U,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a"}),
        )
        .unwrap();
        assert_eq!(n.resource["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn required_attributes() {
        for body in [
            json!({}),
            json!({"userName": ""}),
            json!({"userName": null}),
        ] {
            let e = norm(U, body).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        }
        let e = norm(G, json!({"schemas": [GROUP_SCHEMA]})).unwrap_err();
        assert!(e.detail.contains("displayName"));
        let e = norm(
            G,
            json!({"displayName": "g", "members": [{"display": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(e.detail.contains("members.value"));
        let n = norm(
            G,
            json!({"displayName": "g", "members": [{"value": "u1", "$REF": "https://x/Users/u1"}]}),
        )
        .unwrap();
        assert_eq!(
            n.resource["members"],
            json!([{"value": "u1", "$ref": "https://x/Users/u1"}])
        );
    }

    #[test]
    fn read_only_dropped_unknown_reported() {
        let n = norm(
            U,
            json!({
                "id": "x", "meta": {"created": "2020-01-01T00:00:00Z"}, "userName": "a",
                "groups": [{"value": "g"}], "adreses": [{"x": 1}],
                PROVISIONING_SCHEMA: {"state": "provisioned"},
                "emails": [{"value": "a@b", "bogus": 1}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m", "displayName": "M"}, "nope": 1},
                "urn:example:custom": {"a": 1}
            }),
        )
        .unwrap();
        assert_eq!(
            n.resource,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a", "emails": [{"value": "a@b"}],
                   ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m"}}})
        );
        assert_eq!(
            n.ignored,
            vec![
                "adreses".to_string(),
                "emails.bogus".into(),
                format!("{ENTERPRISE_USER_SCHEMA}:nope"),
                "urn:example:custom".into()
            ]
        );
    }

    #[test]
    fn nulls_and_empties_drop() {
        let n = norm(
            U,
            json!({"userName": "a", "title": null, "emails": [], "name": {"givenName": null},
            ENTERPRISE_USER_SCHEMA: {"department": null}}),
        )
        .unwrap();
        assert_eq!(
            n.resource,
            json!({"schemas": [USER_SCHEMA], "userName": "a"})
        );
    }

    #[test]
    fn type_errors() {
        for body in [
            json!({"userName": "a", "active": "yes"}),
            json!({"userName": "a", "active": 1}),
            json!({"userName": {"x": 1}}),
            json!({"userName": "a", "name": "Bob"}),
            json!({"userName": "a", "emails": [[1]]}),
            json!({"userName": "a", "emails": [{"value": {"a": 1}}]}),
            json!({"userName": ["a"]}),
            json!({"userName": "a", ENTERPRISE_USER_SCHEMA: "x"}),
        ] {
            let e = norm(U, body.clone()).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{body}");
        }
    }

    #[test]
    fn primary_kept_once_and_duplicates_dropped() {
        let n = norm(U, json!({"userName": "a", "emails": [
            {"value": "a@x", "primary": true}, {"value": "a@x", "primary": true}, {"value": "b@x", "primary": true}
        ]})).unwrap();
        assert_eq!(
            n.resource["emails"],
            json!([{"value": "a@x", "primary": true}, {"value": "b@x", "primary": false}])
        );
    }

    #[test]
    fn a_multi_valued_attribute_must_be_an_array() {
        for body in [
            json!({"userName": "a", "emails": "a@example.com"}),
            json!({"userName": "a", "emails": {"value": "a@x"}}),
            json!({"userName": "a", "roles": "Admin"}),
            json!({"userName": "a", "emails": 5}),
            json!({"urn:ietf:params:scim:schemas:core:2.0:User": {"userName": "a", "phoneNumbers": {"value": "1"}}}),
        ] {
            let e = norm(U, body.clone()).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax), "{body}");
            assert!(e.detail.contains("must be a JSON array"), "{}", e.detail);
        }
        let e = norm(G, json!({"displayName": "g", "members": "u1"})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        assert!(e.detail.starts_with("attribute 'members' is multi-valued"));
        // An array, an empty array and null stay fine.
        for emails in [json!([{"value": "a@x"}]), json!([]), Value::Null] {
            assert!(norm(U, json!({"userName": "a", "emails": emails})).is_ok());
        }
    }

    #[test]
    fn the_name_of_a_resource_is_real_text() {
        for (kind, attr) in [(U, "userName"), (G, "displayName")] {
            for bad in [
                json!(12345),
                json!(1.5),
                json!(true),
                json!(""),
                json!("   "),
                json!("\t\n"),
                json!("bob\u{0}"),
                json!("a\u{7}b"),
                json!("line\nbreak"),
                json!("del\u{7f}"),
                json!("c1\u{85}"),
            ] {
                let e = norm(kind, json!({ attr: bad.clone() })).unwrap_err();
                assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{attr}: {bad}");
                assert!(e.detail.contains(attr), "{}", e.detail);
            }
            for good in ["bob@example.com", "Ünïcødé 名前", " padded "] {
                let n = norm(kind, json!({ attr: good })).unwrap();
                assert_eq!(n.resource[attr], good);
            }
        }
        let e = norm(U, json!({"userName": 42})).unwrap_err();
        assert_eq!(
            e.detail,
            "attribute 'userName' must be a string, got a number"
        );
        let e = norm(U, json!({"userName": "a\u{0}"})).unwrap_err();
        assert_eq!(
            e.detail,
            "attribute 'userName' must not contain control characters (found U+0000)"
        );
        // Other string attributes keep the lenient coercion of numbers.
        let n = norm(U, json!({"userName": "a", "displayName": 7})).unwrap();
        assert_eq!(n.resource["displayName"], "7");
    }

    proptest::proptest! {
        #[test]
        fn names_with_a_control_character_are_refused(
            before in "[a-z]{0,5}",
            c in proptest::sample::select((0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32).collect::<Vec<_>>()),
            after in "[a-z]{0,5}",
        ) {
            let name = format!("{before}{c}{after}");
            let e = norm(U, json!({"userName": name})).unwrap_err();
            proptest::prop_assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        }

        #[test]
        fn any_number_for_a_name_is_refused(n in proptest::num::f64::NORMAL, i in proptest::num::i64::ANY) {
            for v in [json!(n), json!(i)] {
                let e = norm(G, json!({"displayName": v})).unwrap_err();
                proptest::prop_assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
            }
        }

        #[test]
        fn printable_names_are_kept_as_sent(name in "[ -~\u{a0}-\u{2fff}]{0,40}[!-~\u{a1}-\u{2fff}][ -~]{0,5}") {
            let n = norm(U, json!({"userName": name.clone()})).unwrap();
            proptest::prop_assert_eq!(&n.resource["userName"], &json!(name));
        }
    }

    #[test]
    fn urn_prefixed_and_dotted_keys() {
        let n = norm(
            U,
            json!({
                "urn:ietf:params:scim:schemas:core:2.0:User:userName": "a",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops",
                "name.givenName": "B"
            }),
        )
        .unwrap();
        assert_eq!(
            n.resource,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a",
            ENTERPRISE_USER_SCHEMA: {"department": "Ops"}, "name": {"givenName": "B"}})
        );
    }

    #[test]
    fn replace_carries_over_server_owned() {
        let existing = json!({"schemas": [USER_SCHEMA, PROVISIONING_SCHEMA], "id": "1", "userName": "a", "password": "p",
            "meta": {"created": "2020-01-01T00:00:00Z"}, "groups": [{"value": "g"}], PROVISIONING_SCHEMA: {"state": "pending"}});
        let mut n = normalize_input(
            U,
            json!({"userName": "b", "id": "other"}),
            WriteMode::Replace,
        )
        .unwrap()
        .resource;
        carry_over_for_replace(U, &existing, &mut n).unwrap();
        assert_eq!(n["id"], "1");
        assert_eq!(n["password"], "p");
        assert_eq!(n["groups"], json!([{"value": "g"}]));
        assert_eq!(n["schemas"], json!([USER_SCHEMA, PROVISIONING_SCHEMA]));
        assert_eq!(n["userName"], "b");
    }

    #[test]
    fn coercions() {
        let user_name = &super::super::schema::USER_CORE.attributes[0];
        assert!(user_name.names_resource);
        assert!(coerce_scalar(user_name, json!(5), "userName").is_err());
        let d = AttrDef {
            names_resource: false,
            ..user_name.clone()
        };
        assert_eq!(coerce_scalar(&d, json!(5), "x").unwrap(), json!("5"));
        let i = AttrDef {
            ty: AttrType::Integer,
            ..d.clone()
        };
        assert_eq!(coerce_scalar(&i, json!("42"), "x").unwrap(), json!(42));
        assert_eq!(coerce_scalar(&i, json!(3.0), "x").unwrap(), json!(3));
        assert!(coerce_scalar(&i, json!(3.5), "x").is_err());
        let dec = AttrDef {
            ty: AttrType::Decimal,
            ..d.clone()
        };
        assert_eq!(coerce_scalar(&dec, json!("1.5"), "x").unwrap(), json!(1.5));
        assert!(coerce_scalar(&dec, json!("NaN"), "x").is_err());
        let dtd = AttrDef {
            ty: AttrType::DateTime,
            ..d
        };
        assert!(coerce_scalar(&dtd, json!("2015-10-10T14:38:21.8617979-07:00"), "x").is_ok());
        assert!(coerce_scalar(&dtd, json!("yesterday"), "x").is_err());
    }
}
