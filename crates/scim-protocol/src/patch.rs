//! PATCH (RFC 7644 §3.5.2) with the dialects Okta and Microsoft Entra ID send.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{CompareOp, Filter, compare_one};
use super::path::{AttrPath, PatchPath, parse_patch_path};
use super::resource::{
    check_multi_valued_shape, check_required, coerce_scalar, fix_schemas, normalize_attr,
    normalize_item, normalize_single,
};
use super::schema::{self, AttrDef, Mutability, PATCH_OP_SCHEMA, ResourceKind, SchemaDef};
use super::util::{get_ci, is_unassigned, key_ci, remove_ci};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<String>,
    /// `Some(Value::Null)` when the client sent an explicit null.
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub schemas: Option<Vec<String>>,
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// Parses a PatchOp body. Keys ("Operations", "op", "path", "value") and
    /// `op` values are case-insensitive (Entra sends "Replace"); extra keys
    /// in an operation (Microsoft's collection sends "name"/"id") are ignored.
    ///
    /// Decision: an absent `schemas` is accepted (nothing is ambiguous about
    /// a body with `Operations`), but a present `schemas` must list the
    /// PatchOp URN, else 400 invalidSyntax. An empty `Operations` is 400
    /// invalidSyntax, as RFC 7644 §3.5.2 requires at least one operation.
    pub fn from_value(v: Value) -> Result<PatchRequest, ScimError> {
        let Value::Object(m) = v else {
            return Err(ScimError::invalid_syntax(
                "PatchOp body must be a JSON object",
            ));
        };
        let schemas = match get_ci(&m, "schemas") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => {
                let list: Vec<String> = a
                    .iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                if !list.iter().any(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA)) {
                    return Err(ScimError::invalid_syntax(format!(
                        "'schemas' must contain '{PATCH_OP_SCHEMA}'"
                    )));
                }
                Some(list)
            }
            Some(_) => return Err(ScimError::invalid_syntax("'schemas' must be an array")),
        };
        let ops = match get_ci(&m, "Operations") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => {
                return Err(ScimError::invalid_syntax("'Operations' must not be empty"));
            }
            Some(_) => return Err(ScimError::invalid_syntax("'Operations' must be an array")),
            None => return Err(ScimError::invalid_syntax("missing 'Operations'")),
        };
        let mut operations = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let Value::Object(o) = op else {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}] must be an object"
                )));
            };
            let kind = match get_ci(o, "op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("add") => PatchOpKind::Add,
                Some("remove") => PatchOpKind::Remove,
                Some("replace") => PatchOpKind::Replace,
                _ => {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}].op must be one of add, remove, replace"
                    )));
                }
            };
            let path = match get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(ScimError::invalid_path(format!(
                        "Operations[{i}].path must be a string"
                    )));
                }
            };
            operations.push(PatchOperation {
                op: kind,
                path,
                value: get_ci(o, "value").cloned(),
            });
        }
        Ok(PatchRequest {
            schemas,
            operations,
        })
    }
}

impl<'de> Deserialize<'de> for PatchRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        PatchRequest::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// Applies all operations atomically: on error `resource` is untouched.
pub fn apply_patch(
    resource: &mut Value,
    req: &PatchRequest,
    kind: ResourceKind,
) -> Result<(), ScimError> {
    apply_patch_report(resource, req, kind).map(|_| ())
}

/// Like `apply_patch`, also returning unknown attribute names that were
/// ignored in path-less operations (for logging).
pub fn apply_patch_report(
    resource: &mut Value,
    req: &PatchRequest,
    kind: ResourceKind,
) -> Result<Vec<String>, ScimError> {
    let mut work = resource.clone();
    let Some(obj) = work.as_object_mut() else {
        return Err(ScimError::invalid_syntax("resource must be a JSON object"));
    };
    let mut ignored = Vec::new();
    for (i, op) in req.operations.iter().enumerate() {
        apply_op(obj, op, kind, &mut ignored)
            .map_err(|e| e.with_prefix(&format!("Operations[{i}]: ")))?;
    }
    prune_map(obj, 0);
    check_required(obj, kind)?;
    fix_schemas(obj, kind);
    *resource = work;
    Ok(ignored)
}

type Obj = Map<String, Value>;

fn apply_op(
    obj: &mut Obj,
    op: &PatchOperation,
    kind: ResourceKind,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    let path = op.path.as_deref().map(str::trim).filter(|p| !p.is_empty());
    let Some(p) = path else {
        if op.op == PatchOpKind::Remove {
            return Err(ScimError::no_target("remove requires a path"));
        }
        return apply_pathless(obj, op.op, op.value.as_ref(), kind, ignored);
    };
    if let Some(ext) = schema::extension(kind, p) {
        return apply_extension(obj, op.op, ext, op.value.as_ref(), kind, ignored);
    }
    if p.eq_ignore_ascii_case(kind.core_schema()) {
        if op.op == PatchOpKind::Remove {
            return Err(ScimError::no_target("cannot remove the core schema"));
        }
        return apply_pathless(obj, op.op, op.value.as_ref(), kind, ignored);
    }
    let pp = parse_patch_path(p, kind)?;
    apply_path(obj, op.op, &pp, op.value.as_ref(), kind, ignored)
}

/// No `path`: every key of the object value is an attribute name, a full
/// PATCH path (`emails[type eq "work"].value`, Entra) or an extension URN
/// holding an object. Unknown names are ignored (reported), like on POST.
/// A null for one key unassigns that attribute.
fn apply_pathless(
    obj: &mut Obj,
    op: PatchOpKind,
    value: Option<&Value>,
    kind: ResourceKind,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    let Some(Value::Object(m)) = value else {
        return Err(ScimError::invalid_value(
            "an operation without 'path' needs an object 'value'",
        ));
    };
    for (k, v) in m {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = schema::extension(kind, k) {
            apply_extension(obj, op, ext, Some(v), kind, ignored)?;
            continue;
        }
        if k.eq_ignore_ascii_case(kind.core_schema()) {
            apply_pathless(obj, op, Some(v), kind, ignored)?;
            continue;
        }
        let head = k.split('[').next().unwrap_or_default().trim();
        if schema::resolve(kind, head).is_none() {
            ignored.push(k.clone());
            continue;
        }
        let pp = parse_patch_path(k, kind)?;
        // A path-less value is a set of attributes, as in a body: whole multi-valued
        // attributes come as arrays.
        if pp.value_filter.is_none()
            && pp.attr.sub.is_none()
            && let Some(top) = pp.attr.top_def(kind)
        {
            check_multi_valued_shape(top, v, &pp.attr.to_string())?;
        }
        let eff_op = if v.is_null() { PatchOpKind::Remove } else { op };
        apply_path(
            obj,
            eff_op,
            &pp,
            Some(v).filter(|v| !v.is_null()),
            kind,
            ignored,
        )?;
    }
    Ok(())
}

/// `path` (or a path-less key) naming a whole extension schema.
fn apply_extension(
    obj: &mut Obj,
    op: PatchOpKind,
    ext: &'static SchemaDef,
    value: Option<&Value>,
    kind: ResourceKind,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    let read_only = ext
        .attributes
        .iter()
        .all(|a| a.mutability == Mutability::ReadOnly);
    if read_only {
        // Clients echoing the server's own value back is harmless.
        if op != PatchOpKind::Remove && value.is_some() && value == get_ci(obj, ext.id) {
            return Ok(());
        }
        return Err(ScimError::mutability(format!("'{}' is readOnly", ext.id)));
    }
    match (op, value) {
        (PatchOpKind::Remove, _) | (_, Some(Value::Null)) => {
            remove_ci(obj, ext.id);
            Ok(())
        }
        (_, Some(Value::Object(m))) => {
            for (k, v) in m {
                let Some(path) = schema::resolve(kind, &format!("{}:{k}", ext.id)) else {
                    ignored.push(format!("{}:{k}", ext.id));
                    continue;
                };
                let pp = PatchPath {
                    attr: path,
                    value_filter: None,
                    sub_attr: None,
                };
                let eff_op = if v.is_null() { PatchOpKind::Remove } else { op };
                apply_path(
                    obj,
                    eff_op,
                    &pp,
                    Some(v).filter(|v| !v.is_null()),
                    kind,
                    ignored,
                )?;
            }
            Ok(())
        }
        _ => Err(ScimError::invalid_value(format!(
            "value for '{}' must be an object",
            ext.id
        ))),
    }
}

/// Container map for a path: the resource or its extension object.
fn container<'a>(obj: &'a mut Obj, urn: Option<&str>, create: bool) -> Option<&'a mut Obj> {
    let Some(urn) = urn else { return Some(obj) };
    if let Some(k) = key_ci(obj, urn)
        && k != urn
        && let Some(v) = obj.shift_remove(&k)
    {
        obj.insert(urn.to_string(), v);
    }
    if !obj.get(urn).is_some_and(Value::is_object) {
        if !create {
            return None;
        }
        obj.insert(urn.to_string(), Value::Object(Map::new()));
    }
    obj.get_mut(urn).and_then(Value::as_object_mut)
}

/// The attribute's slot under its canonical name (Null when unassigned).
fn slot<'a>(c: &'a mut Obj, name: &str) -> &'a mut Value {
    if !c.contains_key(name)
        && let Some(k) = key_ci(c, name)
        && let Some(v) = c.shift_remove(&k)
    {
        c.insert(name.to_string(), v);
    }
    c.entry(name.to_string()).or_insert(Value::Null)
}

fn ensure_array(v: &mut Value) -> Option<&mut Vec<Value>> {
    if !v.is_array() {
        let old = std::mem::take(v);
        *v = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
    }
    v.as_array_mut()
}

fn ensure_object(v: &mut Value) -> Option<&mut Obj> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

fn check_immutable(
    def: &AttrDef,
    current: Option<&Value>,
    new: Option<&Value>,
    name: &str,
) -> Result<(), ScimError> {
    if def.mutability == Mutability::Immutable
        && let Some(cur) = current.filter(|c| !is_unassigned(c))
        && new != Some(cur)
    {
        return Err(ScimError::mutability(format!(
            "attribute '{name}' is immutable"
        )));
    }
    Ok(())
}

fn scalar_for(def: &AttrDef, v: Value, name: &str) -> Result<Value, ScimError> {
    if matches!(v, Value::Array(_) | Value::Object(_)) {
        return Err(ScimError::invalid_value(format!(
            "attribute '{name}' expects a {} value",
            def.ty.as_str()
        )));
    }
    coerce_scalar(def, v, name)
}

/// Same element of a multi-valued attribute: equal, or same `value` (by the
/// attribute's case rules) with compatible `type`. Used to avoid duplicates
/// when Okta/Entra re-add members.
fn same_item(def: &AttrDef, a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let (Some(ao), Some(bo), Some(vs)) = (a.as_object(), b.as_object(), def.value_sub()) else {
        return false;
    };
    let (Some(x), Some(y)) = (ao.get("value"), bo.get("value")) else {
        return false;
    };
    let types_ok = match (
        ao.get("type").and_then(Value::as_str),
        bo.get("type").and_then(Value::as_str),
    ) {
        (Some(t1), Some(t2)) => t1.eq_ignore_ascii_case(t2),
        _ => true,
    };
    types_ok && compare_one(CompareOp::Eq, x, y, vs)
}

/// Removal by example (Entra `remove members` with `[{"value": id}]`):
/// every sub-attribute given in `pattern` equals the element's.
fn matches_pattern(def: &AttrDef, elem: &Value, pattern: &Value) -> bool {
    match (elem.as_object(), pattern.as_object()) {
        (Some(e), Some(p)) => p.iter().all(|(k, pv)| match (e.get(k), def.sub_attr(k)) {
            (Some(ev), Some(sd)) => ev == pv || compare_one(CompareOp::Eq, ev, pv, sd),
            (Some(ev), None) => ev == pv,
            (None, _) => false,
        }),
        _ => elem == pattern,
    }
}

fn enforce_primary(arr: &mut [Value], keep: usize) {
    for (i, e) in arr.iter_mut().enumerate() {
        if i != keep
            && let Some(o) = e.as_object_mut()
            && o.get("primary") == Some(&Value::Bool(true))
        {
            o.insert("primary".into(), Value::Bool(false));
        }
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

fn merge_into(target: &mut Value, src: Obj, top: &AttrDef, name: &str) -> Result<(), ScimError> {
    let Some(t) = ensure_object(target) else {
        return Ok(());
    };
    for (k, v) in src {
        if let Some(sd) = top.sub_attr(&k) {
            check_immutable(sd, t.get(&k), Some(&v), &format!("{name}.{k}"))?;
        }
        t.insert(k, v);
    }
    Ok(())
}

fn apply_path(
    obj: &mut Obj,
    op: PatchOpKind,
    pp: &PatchPath,
    value: Option<&Value>,
    kind: ResourceKind,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    let name = pp.attr.to_string();
    let top = pp
        .attr
        .top_def(kind)
        .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute '{name}'")))?;
    let sub_name = pp.attr.sub.as_deref().or(pp.sub_attr.as_deref());
    let sub_def = sub_name.and_then(|s| top.sub_attr(s));
    if top.mutability == Mutability::ReadOnly
        || sub_def.is_some_and(|s| s.mutability == Mutability::ReadOnly)
    {
        // Okta sends the group's own `id` inside replace values: an unchanged
        // readOnly value is a no-op, anything else is a mutability error.
        let unchanged = op != PatchOpKind::Remove
            && pp.value_filter.is_none()
            && pp.attr.sub.is_none()
            && value.is_some()
            && value == pp.attr.top_value(&Value::Object(obj.clone()));
        if unchanged {
            return Ok(());
        }
        return Err(ScimError::mutability(format!(
            "attribute '{name}' is readOnly"
        )));
    }
    match op {
        PatchOpKind::Remove => remove_at(obj, pp, top, value, kind, &name, ignored),
        PatchOpKind::Add | PatchOpKind::Replace => {
            let v = match value {
                None | Some(Value::Null) => {
                    return Err(ScimError::invalid_value(format!(
                        "'{}' on '{name}' requires a non-null value",
                        if op == PatchOpKind::Add {
                            "add"
                        } else {
                            "replace"
                        }
                    )));
                }
                Some(v) => v.clone(),
            };
            let Some(c) = container(obj, pp.attr.schema_urn.as_deref(), true) else {
                return Ok(());
            };
            let s = slot(c, top.name);
            match (&pp.value_filter, pp.attr.sub.as_deref()) {
                (None, None) => write_whole(s, op, top, v, &name, ignored),
                (None, Some(sub)) => write_sub_all(s, top, sub, v, &name),
                (Some(f), _) => write_filtered(
                    s,
                    op,
                    top,
                    f,
                    pp.sub_attr.as_deref(),
                    v,
                    kind,
                    &name,
                    ignored,
                ),
            }
        }
    }
}

fn write_whole(
    s: &mut Value,
    op: PatchOpKind,
    top: &AttrDef,
    v: Value,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    if top.multi_valued {
        let items = match normalize_attr(top, v, name, ignored)? {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let Some(arr) = ensure_array(s) else {
            return Ok(());
        };
        let mut new_primary = None;
        if op == PatchOpKind::Replace {
            new_primary = items.iter().position(is_primary);
            *arr = items;
        } else {
            for item in items {
                let primary = is_primary(&item);
                let idx = match arr.iter().position(|e| same_item(top, e, &item)) {
                    Some(i) => {
                        if let (Some(e), Value::Object(src)) = (arr.get_mut(i), item) {
                            merge_into(e, src, top, name)?;
                        }
                        i
                    }
                    None => {
                        arr.push(item);
                        arr.len() - 1
                    }
                };
                if primary {
                    new_primary = Some(idx);
                }
            }
        }
        if let Some(i) = new_primary {
            enforce_primary(arr, i);
        }
        return Ok(());
    }
    let nv = normalize_single(top, v, name, ignored)?;
    if top.is_complex() {
        // RFC 7644 §3.5.2.1/.3: sub-attributes not given are left unchanged.
        if let Some(Value::Object(src)) = nv {
            merge_into(s, src, top, name)?;
        }
        return Ok(());
    }
    check_immutable(top, Some(s), nv.as_ref(), name)?;
    *s = nv.unwrap_or(Value::Null);
    Ok(())
}

/// `name.givenName`, or `emails.value` without a filter (applies to every element).
fn write_sub_all(
    s: &mut Value,
    top: &AttrDef,
    sub: &str,
    v: Value,
    name: &str,
) -> Result<(), ScimError> {
    let Some(sd) = top.sub_attr(sub) else {
        return Err(ScimError::invalid_path(format!(
            "unknown attribute '{name}'"
        )));
    };
    let nv = scalar_for(sd, v, name)?;
    if top.multi_valued {
        let Some(arr) = ensure_array(s) else {
            return Ok(());
        };
        if arr.is_empty() {
            let mut o = Map::new();
            o.insert(sd.name.to_string(), nv);
            arr.push(Value::Object(o));
            return Ok(());
        }
        for e in arr.iter_mut() {
            if let Some(o) = e.as_object_mut() {
                check_immutable(sd, o.get(sd.name), Some(&nv), name)?;
                o.insert(sd.name.to_string(), nv.clone());
            }
        }
        if sd.name == "primary" && nv == Value::Bool(true) {
            enforce_primary(arr, 0);
        }
        return Ok(());
    }
    if let Some(o) = ensure_object(s) {
        check_immutable(sd, o.get(sd.name), Some(&nv), name)?;
        o.insert(sd.name.to_string(), nv);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_filtered(
    s: &mut Value,
    op: PatchOpKind,
    top: &AttrDef,
    f: &Filter,
    sub_attr: Option<&str>,
    v: Value,
    kind: ResourceKind,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    let sub_def = match sub_attr {
        Some(sa) => Some(top.sub_attr(sa).ok_or_else(|| {
            ScimError::invalid_path(format!("unknown sub-attribute '{sa}' of '{name}'"))
        })?),
        None => None,
    };
    let full = match sub_def {
        Some(sd) => format!("{name}.{}", sd.name),
        None => name.to_string(),
    };
    if !top.multi_valued {
        if !(s.is_object() && f.matches_element(s, kind)) {
            return Err(ScimError::no_target(format!(
                "no value of '{name}' matches the filter"
            )));
        }
        return match sub_def {
            Some(sd) => {
                let nv = scalar_for(sd, v, &full)?;
                let mut m = Map::new();
                m.insert(sd.name.to_string(), nv);
                merge_into(s, m, top, name)
            }
            None => match normalize_single(top, v, name, ignored)? {
                Some(Value::Object(m)) => merge_into(s, m, top, name),
                _ => Ok(()),
            },
        };
    }
    let Some(arr) = ensure_array(s) else {
        return Ok(());
    };
    let idx: Vec<usize> = arr
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_object() && f.matches_element(e, kind))
        .map(|(i, _)| i)
        .collect();
    // A new element when nothing matches, only for the documented Entra form
    // `ATTR[type eq "…"].SUB` (`emails[type eq "work"].value` on a user without a
    // work email); any other filter that matches nothing is 400 noTarget
    // (RFC 7644 §3.5.2.3), so a typo never invents an element.
    let create = |extra: Obj, ignored: &mut Vec<String>| -> Result<Value, ScimError> {
        let Some(mut tpl) = sub_def.and_then(|_| type_template(f)) else {
            return Err(ScimError::no_target(format!(
                "no value of '{name}' matches the filter {}",
                f.display_in_scope()
            )));
        };
        tpl.extend(extra);
        normalize_item(top, Value::Object(tpl), name, ignored)?
            .ok_or_else(|| ScimError::invalid_value(format!("empty value for '{name}'")))
    };
    let mut primary_at = None;
    match sub_def {
        Some(sd) => {
            let nv = scalar_for(sd, v, &full)?;
            let set_primary = sd.name == "primary" && nv == Value::Bool(true);
            if idx.is_empty() {
                let mut extra = Map::new();
                extra.insert(sd.name.to_string(), nv);
                let item = create(extra, ignored)?;
                if is_primary(&item) {
                    primary_at = Some(arr.len());
                }
                arr.push(item);
            } else {
                for &i in &idx {
                    if let Some(o) = arr.get_mut(i).and_then(Value::as_object_mut) {
                        check_immutable(sd, o.get(sd.name), Some(&nv), &full)?;
                        o.insert(sd.name.to_string(), nv.clone());
                    }
                }
                if set_primary {
                    primary_at = idx.first().copied();
                }
            }
        }
        None => {
            let item = normalize_item(top, v, name, ignored)?
                .ok_or_else(|| ScimError::invalid_value(format!("empty value for '{name}'")))?;
            let Value::Object(item_obj) = item else {
                return Err(ScimError::invalid_value(format!(
                    "'{name}' expects an object"
                )));
            };
            let primary = item_obj.get("primary") == Some(&Value::Bool(true));
            if idx.is_empty() {
                let new = create(item_obj, ignored)?;
                arr.push(new);
                if primary {
                    primary_at = Some(arr.len() - 1);
                }
            } else {
                for &i in &idx {
                    if let Some(e) = arr.get_mut(i) {
                        if op == PatchOpKind::Replace {
                            *e = Value::Object(item_obj.clone());
                        } else {
                            merge_into(e, item_obj.clone(), top, name)?;
                        }
                    }
                }
                if primary {
                    primary_at = idx.first().copied();
                }
            }
        }
    }
    if let Some(i) = primary_at {
        enforce_primary(arr, i);
    }
    Ok(())
}

/// `{"type": "work"}` for the filter `type eq "work"`, the one filter a PATCH may
/// create an element from.
fn type_template(f: &Filter) -> Option<Obj> {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: value @ Value::String(_),
        } if path.sub.as_deref() == Some("type") => {
            let mut m = Map::new();
            m.insert("type".to_string(), value.clone());
            Some(m)
        }
        _ => None,
    }
}

fn remove_at(
    obj: &mut Obj,
    pp: &PatchPath,
    top: &AttrDef,
    value: Option<&Value>,
    kind: ResourceKind,
    name: &str,
    ignored: &mut Vec<String>,
) -> Result<(), ScimError> {
    // Removing something already absent is a no-op: removals are idempotent.
    let Some(c) = container(obj, pp.attr.schema_urn.as_deref(), false) else {
        return Ok(());
    };
    if key_ci(c, top.name).is_none() {
        return Ok(());
    }
    let s = slot(c, top.name);
    match (&pp.value_filter, pp.attr.sub.as_deref()) {
        (None, None) => {
            match value.filter(|v| !v.is_null()) {
                Some(v) if top.multi_valued => {
                    let patterns = match normalize_attr(top, v.clone(), name, ignored)? {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    if let Value::Array(arr) = s {
                        arr.retain(|e| !patterns.iter().any(|p| matches_pattern(top, e, p)));
                    }
                }
                _ => {
                    check_immutable(top, Some(s), None, name)?;
                    *s = Value::Null;
                }
            }
            Ok(())
        }
        (None, Some(sub)) => {
            let sd = top.sub_attr(sub);
            let strip = |o: &mut Obj| -> Result<(), ScimError> {
                if let Some(sd) = sd {
                    check_immutable(sd, get_ci(o, sub), None, name)?;
                }
                remove_ci(o, sub);
                Ok(())
            };
            match s {
                Value::Object(o) => strip(o)?,
                Value::Array(arr) => {
                    for e in arr.iter_mut() {
                        if let Some(o) = e.as_object_mut() {
                            strip(o)?;
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        }
        (Some(f), _) => {
            let sub = pp.sub_attr.as_deref();
            let sd = sub.and_then(|x| top.sub_attr(x));
            match s {
                Value::Array(arr) => match sub {
                    None => arr.retain(|e| !(e.is_object() && f.matches_element(e, kind))),
                    Some(sub) => {
                        for e in arr.iter_mut() {
                            if e.is_object()
                                && f.matches_element(e, kind)
                                && let Some(o) = e.as_object_mut()
                            {
                                if let Some(sd) = sd {
                                    check_immutable(sd, get_ci(o, sub), None, name)?;
                                }
                                remove_ci(o, sub);
                            }
                        }
                    }
                },
                Value::Object(_) if f.matches_element(s, kind) => match (sub, s.as_object_mut()) {
                    (Some(sub), Some(o)) => {
                        remove_ci(o, sub);
                    }
                    _ => *s = Value::Null,
                },
                _ => {}
            }
            Ok(())
        }
    }
}

/// Drops unassigned values (null, "", [], {}) so removing the last
/// sub-attribute or extension attribute leaves nothing empty behind.
fn prune_map(m: &mut Obj, depth: usize) {
    for v in m.values_mut() {
        prune(v, depth + 1);
    }
    m.retain(|k, v| k == "schemas" || !is_unassigned(v));
}

fn prune(v: &mut Value, depth: usize) {
    // Resources are shallow (≤ 4 levels); the bound only guards odd stored data.
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(m) => prune_map(m, depth),
        Value::Array(a) => {
            for e in a.iter_mut() {
                prune(e, depth + 1);
            }
            a.retain(|e| !is_unassigned(e));
        }
        _ => {}
    }
}

/// Helper for callers that hold a path string: the top-level attribute a
/// PATCH path would touch (e.g. to decide whether `members` changed).
pub fn touched_attribute(path: &str, kind: ResourceKind) -> Option<AttrPath> {
    parse_patch_path(path, kind).ok().map(|p| AttrPath {
        sub: None,
        ..p.attr
    })
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::super::schema::{
        ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, PROVISIONING_SCHEMA, USER_SCHEMA,
    };
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const U: ResourceKind = ResourceKind::User;
    const G: ResourceKind = ResourceKind::Group;
    const ENT: &str = ENTERPRISE_USER_SCHEMA;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, PROVISIONING_SCHEMA],
            "id": "u1",
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [{"value": "b@example.com", "type": "work", "primary": true}],
            "groups": [{"value": "g1"}],
            "meta": {"resourceType": "User", "created": "2020-01-01T00:00:00Z"},
            PROVISIONING_SCHEMA: {"state": "provisioned"}
        })
    }

    fn group() -> Value {
        json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Ops",
               "members": [{"value": "u1", "display": "A"}, {"value": "u2"}]})
    }

    fn req(ops: Value) -> PatchRequest {
        PatchRequest::from_value(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})).unwrap()
    }

    fn patch(mut r: Value, kind: ResourceKind, ops: Value) -> Result<Value, ScimError> {
        apply_patch(&mut r, &req(ops), kind).map(|_| r)
    }

    fn patch_err(r: Value, kind: ResourceKind, ops: Value) -> ScimError {
        let before = r.clone();
        let mut r2 = r;
        let e = apply_patch(&mut r2, &req(ops), kind).unwrap_err();
        assert_eq!(r2, before, "resource changed on error");
        e
    }

    #[test]
    fn request_parsing() {
        let r = PatchRequest::from_value(json!({"schemas":[PATCH_OP_SCHEMA],"operations":[
            {"OP":"Replace","Path":"active","Value":"False","name":"x","id":"y"}]}))
        .unwrap();
        assert_eq!(r.operations[0].op, PatchOpKind::Replace);
        assert_eq!(r.operations[0].path.as_deref(), Some("active"));
        // schemas absent: accepted.
        assert!(
            PatchRequest::from_value(json!({"Operations":[{"op":"remove","path":"title"}]}))
                .is_ok()
        );
        // Deserialize impl goes through the same rules.
        let r: PatchRequest =
            serde_json::from_str(r#"{"Operations":[{"op":"add","value":{"title":"x"}}]}"#).unwrap();
        assert_eq!(r.operations[0].op, PatchOpKind::Add);
        for bad in [
            json!({"schemas":["urn:wrong"],"Operations":[{"op":"add","path":"title","value":"x"}]}),
            json!({"schemas":"x","Operations":[]}),
            json!({"schemas":[PATCH_OP_SCHEMA]}),
            json!({"schemas":[PATCH_OP_SCHEMA],"Operations":[]}),
            json!({"schemas":[PATCH_OP_SCHEMA],"Operations":{}}),
            json!({"schemas":[PATCH_OP_SCHEMA],"Operations":[{"op":"move","path":"title"}]}),
            json!({"schemas":[PATCH_OP_SCHEMA],"Operations":[1]}),
            json!([]),
        ] {
            let e = PatchRequest::from_value(bad.clone()).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax), "{bad}");
        }
        let e =
            PatchRequest::from_value(json!({"Operations":[{"op":"add","path":1}]})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    }

    #[test]
    fn entra_replace_active_string_boolean() {
        for s in ["False", "false", "FALSE"] {
            let r = patch(
                user(),
                U,
                json!([{"op":"Replace","path":"active","value":s}]),
            )
            .unwrap();
            assert_eq!(r["active"], false);
        }
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"active","value":"True"}]),
        )
        .unwrap();
        assert_eq!(r["active"], true);
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"active","value":"maybe"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(e.detail.starts_with("Operations[0]: "));
    }

    #[test]
    fn entra_pathless_mixed_keys() {
        let r = patch(
            user(),
            U,
            json!([{"op":"Replace","value":{
                "active": "False",
                "name.givenName": "X",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Y",
                "emails[type eq \"work\"].value": "a@b",
                "bogusAttr": 1
            }}]),
        )
        .unwrap();
        assert_eq!(r["active"], false);
        assert_eq!(r["name"], json!({"givenName": "X", "familyName": "Jensen"}));
        assert_eq!(r[ENT], json!({"department": "Y"}));
        assert_eq!(
            r["emails"],
            json!([{"value": "a@b", "type": "work", "primary": true}])
        );
        assert_eq!(r["schemas"], json!([USER_SCHEMA, ENT, PROVISIONING_SCHEMA]));
        let mut u = user();
        let ignored = apply_patch_report(
            &mut u,
            &req(json!([{"op":"add","value":{"bogusAttr":1,"nickName":"B"}}])),
            U,
        )
        .unwrap();
        assert_eq!(ignored, vec!["bogusAttr".to_string()]);
        assert_eq!(u["nickName"], "B");
    }

    #[test]
    fn pathless_extension_object_and_okta_group_rename() {
        let r = patch(
            user(),
            U,
            json!([{"op":"add","value":{ENT: {"employeeNumber": 42, "manager": {"value": "m1"}}}}]),
        )
        .unwrap();
        assert_eq!(
            r[ENT],
            json!({"employeeNumber": "42", "manager": {"value": "m1"}})
        );
        // Okta renames a group with its own id in the value.
        let g = patch(group(), G, json!([{"op":"replace","value":{"id":"g1","displayName":"Ops 2","schemas":[GROUP_SCHEMA]}}])).unwrap();
        assert_eq!(g["displayName"], "Ops 2");
        let e = patch_err(group(), G, json!([{"op":"replace","value":{"id":"other"}}]));
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn entra_manager_as_string_and_removal() {
        let path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        let r = patch(user(), U, json!([{"op":"Add","path":path,"value":"m1"}])).unwrap();
        assert_eq!(r[ENT], json!({"manager": {"value": "m1"}}));
        assert!(r["schemas"].as_array().unwrap().contains(&json!(ENT)));
        let r = patch(
            r,
            U,
            json!([{"op":"Remove","path":path,"value":[{"value":"m1"}]}]),
        )
        .unwrap();
        assert!(r.get(ENT).is_none(), "empty extension left behind: {r}");
        assert_eq!(r["schemas"], json!([USER_SCHEMA, PROVISIONING_SCHEMA]));
        let e = patch_err(
            user(),
            U,
            json!([{"op":"add","path":format!("{path}.displayName"),"value":"x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn extension_whole_path() {
        let r = patch(
            user(),
            U,
            json!([{"op":"add","path":ENT,"value":{"department":"D","costCenter":"C"}}]),
        )
        .unwrap();
        assert_eq!(r[ENT], json!({"department":"D","costCenter":"C"}));
        let r = patch(r, U, json!([{"op":"remove","path":ENT}])).unwrap();
        assert!(r.get(ENT).is_none());
        let r = patch(
            user(),
            U,
            json!([
            {"op":"add","path":format!("{ENT}:department"),"value":"D"},
            {"op":"remove","path":format!("{ENT}:department")}]),
        )
        .unwrap();
        assert!(r.get(ENT).is_none());
        assert!(!r["schemas"].as_array().unwrap().contains(&json!(ENT)));
    }

    #[test]
    fn read_only_attributes_rejected() {
        for (op, path, value) in [
            ("replace", "id", json!("x")),
            (
                "replace",
                "meta",
                json!({"created": "2020-01-01T00:00:00Z"}),
            ),
            ("add", "groups", json!([{"value":"g2"}])),
            ("remove", "groups", Value::Null),
            (
                "replace",
                "urn:usher:params:scim:schemas:extension:provisioning:2.0:User:state",
                json!("failed"),
            ),
            ("remove", PROVISIONING_SCHEMA, Value::Null),
            ("remove", "meta.created", Value::Null),
        ] {
            let e = patch_err(user(), U, json!([{"op":op,"path":path,"value":value}]));
            assert_eq!(e.scim_type, Some(ScimType::Mutability), "{op} {path}");
        }
    }

    #[test]
    fn null_value_and_required_removal() {
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"title","value":null}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(user(), U, json!([{"op":"add","path":"title"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(user(), U, json!([{"op":"remove","path":"userName"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"userName","value":""}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(group(), G, json!([{"op":"remove","path":"displayName"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(user(), U, json!([{"op":"remove"}]));
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e = patch_err(user(), U, json!([{"op":"add","value":"x"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn atomic_on_later_failure() {
        let e = patch_err(
            user(),
            U,
            json!([
            {"op":"replace","path":"title","value":"T"},
            {"op":"replace","path":"nope","value":"x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
        assert!(e.detail.starts_with("Operations[1]"));
    }

    #[test]
    fn group_members_dialects() {
        // Okta/Entra add (re-adding u1 does not duplicate).
        let g = patch(group(), G, json!([{"op":"Add","path":"members","value":[{"value":"u1"},{"value":"u3","display":"C"}]}])).unwrap();
        assert_eq!(
            g["members"],
            json!([{"value":"u1","display":"A"},{"value":"u2"},{"value":"u3","display":"C"}])
        );
        // Okta remove with filter.
        let g2 = patch(
            g.clone(),
            G,
            json!([{"op":"remove","path":"members[value eq \"u2\"]"}]),
        )
        .unwrap();
        assert_eq!(
            g2["members"],
            json!([{"value":"u1","display":"A"},{"value":"u3","display":"C"}])
        );
        // Idempotent removal of an absent member.
        let g3 = patch(
            g2.clone(),
            G,
            json!([{"op":"remove","path":"members[value eq \"zz\"]"}]),
        )
        .unwrap();
        assert_eq!(g3, g2);
        // Entra remove with value array and no filter.
        let g4 = patch(
            g.clone(),
            G,
            json!([{"op":"Remove","path":"members","value":[{"value":"u1"},{"value":"u3"}]}]),
        )
        .unwrap();
        assert_eq!(g4["members"], json!([{"value":"u2"}]));
        // Remove all.
        let g5 = patch(g.clone(), G, json!([{"op":"remove","path":"members"}])).unwrap();
        assert!(g5.get("members").is_none());
        // Replace all.
        let g6 = patch(
            g,
            G,
            json!([{"op":"replace","path":"members","value":[{"value":"u9"}]}]),
        )
        .unwrap();
        assert_eq!(g6["members"], json!([{"value":"u9"}]));
        // Members need a value.
        let e = patch_err(
            group(),
            G,
            json!([{"op":"add","path":"members","value":[{"display":"x"}]}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        // Member value is immutable once set.
        let e = patch_err(
            group(),
            G,
            json!([{"op":"replace","path":"members[value eq \"u1\"].value","value":"u5"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        // Adding to a group without members.
        let g7 = patch(
            json!({"id":"g","displayName":"x"}),
            G,
            json!([{"op":"add","path":"members","value":{"value":"u1"}}]),
        )
        .unwrap();
        assert_eq!(g7["members"], json!([{"value":"u1"}]));
    }

    #[test]
    fn filtered_creation_and_no_target() {
        let r = patch(user(), U, json!([{"op":"replace","path":"phoneNumbers[type eq \"mobile\"].value","value":"+1 555"}])).unwrap();
        assert_eq!(
            r["phoneNumbers"],
            json!([{"type":"mobile","value":"+1 555"}])
        );
        let r = patch(
            user(),
            U,
            json!([{"op":"add","path":"emails[type eq \"home\"].value","value":"h@x"}]),
        )
        .unwrap();
        assert_eq!(
            r["emails"],
            json!([{"value":"b@example.com","type":"work","primary":true},{"type":"home","value":"h@x"}])
        );
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"emails[type eq \"work\"].value","value":"new@x"}]),
        )
        .unwrap();
        assert_eq!(
            r["emails"],
            json!([{"value":"new@x","type":"work","primary":true}])
        );
        // Non-template filter with no match: noTarget.
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"emails[value co \"zzz\"].type","value":"home"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        // Filter on a single-valued complex attribute that does not match.
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"name[givenName eq \"Nope\"].familyName","value":"X"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let r = patch(user(), U, json!([{"op":"replace","path":"name[givenName eq \"barbara\"].familyName","value":"X"}])).unwrap();
        assert_eq!(r["name"]["familyName"], "X");
        // Whole-element replace through a filter.
        let r = patch(user(), U, json!([{"op":"replace","path":"emails[type eq \"work\"]","value":{"value":"w@x","type":"work"}}])).unwrap();
        assert_eq!(r["emails"], json!([{"value":"w@x","type":"work"}]));
        // Remove a sub-attribute of matching elements.
        let r = patch(
            user(),
            U,
            json!([{"op":"remove","path":"emails[type eq \"work\"].primary"}]),
        )
        .unwrap();
        assert_eq!(
            r["emails"],
            json!([{"value":"b@example.com","type":"work"}])
        );
        let r = patch(
            user(),
            U,
            json!([{"op":"remove","path":"emails[type eq \"work\"]"}]),
        )
        .unwrap();
        assert!(r.get("emails").is_none());
    }

    #[test]
    fn primary_is_exclusive() {
        let r = patch(user(), U, json!([{"op":"add","path":"emails","value":[{"value":"p@x","type":"home","primary":true}]}])).unwrap();
        assert_eq!(
            r["emails"],
            json!([{"value":"b@example.com","type":"work","primary":false},{"value":"p@x","type":"home","primary":true}])
        );
        let r = patch(
            r,
            U,
            json!([{"op":"replace","path":"emails[type eq \"work\"].primary","value":"true"}]),
        )
        .unwrap();
        assert_eq!(r["emails"][0]["primary"], true);
        assert_eq!(r["emails"][1]["primary"], false);
    }

    #[test]
    fn complex_and_sub_attribute_ops() {
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"name","value":{"FamilyName":"J2"}}]),
        )
        .unwrap();
        assert_eq!(r["name"], json!({"givenName":"Barbara","familyName":"J2"}));
        let r = patch(user(), U, json!([{"op":"remove","path":"name.givenName"},{"op":"remove","path":"name.familyName"}])).unwrap();
        assert!(r.get("name").is_none());
        let r = patch(user(), U, json!([{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName","value":"K"}])).unwrap();
        assert_eq!(r["name"]["familyName"], "K");
        let r = patch(
            user(),
            U,
            json!([{"op":"add","path":"NAME.GIVENNAME","value":"Babs"}]),
        )
        .unwrap();
        assert_eq!(r["name"]["givenName"], "Babs");
        // Value items normalised: {"Value": …} becomes value.
        let r = patch(
            user(),
            U,
            json!([{"op":"add","path":"emails","value":[{"Value":"c@x","Type":"other"}]}]),
        )
        .unwrap();
        assert_eq!(r["emails"][1], json!({"value":"c@x","type":"other"}));
        // Remove of an absent attribute is a no-op.
        let r = patch(user(), U, json!([{"op":"remove","path":"nickName"}])).unwrap();
        assert_eq!(r, user());
        // Type errors.
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"name.givenName","value":{"a":1}}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = patch_err(
            user(),
            U,
            json!([{"op":"replace","path":"userName","value":["a"]}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn replace_multi_valued_without_filter() {
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"emails","value":[{"value":"x@y","type":"work"}]}]),
        )
        .unwrap();
        assert_eq!(r["emails"], json!([{"value":"x@y","type":"work"}]));
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"emails.type","value":"home"}]),
        )
        .unwrap();
        assert_eq!(r["emails"][0]["type"], "home");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|i| json!(i)),
            prop::sample::select(vec![
                "True",
                "false",
                "work",
                "u1",
                "",
                "2020-01-01T00:00:00Z"
            ])
            .prop_map(|s| json!(s)),
            "\\PC{0,6}".prop_map(Value::String),
        ];
        let keys = prop::sample::select(vec![
            "value",
            "Value",
            "type",
            "primary",
            "display",
            "givenName",
            "active",
            "userName",
            "emails",
            "members",
            "name.givenName",
            ENT,
            "id",
            "meta",
            "bogus",
            "displayName",
            "emails[type eq \"work\"].value",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            PROVISIONING_SCHEMA,
            "schemas",
            "manager",
        ]);
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..4).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    fn arb_op() -> impl Strategy<Value = Value> {
        let ops = prop::sample::select(vec![
            "add", "Add", "remove", "Remove", "replace", "Replace", "bogus",
        ]);
        let paths = prop::option::of(prop_oneof![
            prop::sample::select(vec![
                "userName",
                "active",
                "name",
                "name.givenName",
                "emails",
                "emails.value",
                "emails[type eq \"work\"].value",
                "emails[type eq \"work\"]",
                "members",
                "members[value eq \"u1\"]",
                "members[value eq \"u1\"].display",
                "displayName",
                "id",
                "meta.created",
                "groups",
                ENT,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                PROVISIONING_SCHEMA,
                "emails[value co \"x\" or primary eq true].primary",
                "name[givenName pr]",
                "",
                "nope",
                "emails[",
            ])
            .prop_map(String::from),
            "\\PC{0,12}",
        ]);
        (ops, paths, prop::option::of(arb_json())).prop_map(|(op, path, value)| {
            let mut m = Map::new();
            m.insert("op".into(), json!(op));
            if let Some(p) = path {
                m.insert("path".into(), json!(p));
            }
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            Value::Object(m)
        })
    }

    #[test]
    fn a_filter_that_matches_nothing_creates_only_the_entra_form() {
        // The documented Entra form still creates: `ATTR[type eq "…"].SUB`.
        for op in ["add", "replace"] {
            let r = patch(
                user(),
                U,
                json!([{"op": op, "path": "emails[type eq \"home\"].value", "value": "h@x"}]),
            )
            .unwrap();
            assert_eq!(r["emails"][1], json!({"type": "home", "value": "h@x"}));
            let r = patch(user(), U, json!([{"op": op, "path": "addresses[TYPE eq \"work\"].locality", "value": "Oslo"}])).unwrap();
            assert_eq!(
                r["addresses"],
                json!([{"type": "work", "locality": "Oslo"}])
            );
        }
        // Any other filter that matches nothing is noTarget, for add and replace.
        for (op, path, value) in [
            (
                "replace",
                "emails[value eq \"nobody@example.com\"].display",
                json!("N"),
            ),
            (
                "add",
                "emails[value eq \"nobody@example.com\"].display",
                json!("N"),
            ),
            (
                "replace",
                "emails[type eq \"home\"]",
                json!({"value": "h@x"}),
            ),
            ("add", "emails[type eq \"home\"]", json!({"value": "h@x"})),
            (
                "replace",
                "emails[type eq \"home\" and primary eq true].value",
                json!("h@x"),
            ),
            ("replace", "emails[type ne \"work\"].value", json!("h@x")),
            ("replace", "emails[type co \"hom\"].value", json!("h@x")),
            (
                "replace",
                "phoneNumbers[value eq \"+1 555\"].type",
                json!("mobile"),
            ),
        ] {
            let before = user();
            let mut after = before.clone();
            let req = PatchRequest::from_value(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": op, "path": path, "value": value}]})).unwrap();
            let e = apply_patch(&mut after, &req, U).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::NoTarget), "{op} {path}");
            assert_eq!(e.status, 400);
            assert!(e.detail.contains("matches the filter"), "{}", e.detail);
            assert_eq!(after, before, "nothing changes");
        }
        let e = patch_err(
            group(),
            G,
            json!([{"op":"add","path":"members[value eq \"u9\"].display","value":"x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn a_failing_operation_keeps_the_whole_request_out() {
        let before = user();
        let mut after = before.clone();
        let req = PatchRequest::from_value(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
            {"op": "replace", "path": "displayName", "value": "Babs"},
            {"op": "add", "path": "emails", "value": [{"value": "new@x", "type": "home"}]},
            {"op": "replace", "path": "emails[value eq \"nobody@example.com\"].display", "value": "N"}
        ]}))
        .unwrap();
        let e = apply_patch(&mut after, &req, U).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        assert!(e.detail.starts_with("Operations[2]: "), "{}", e.detail);
        assert_eq!(after, before);
    }

    #[test]
    fn names_stay_strict_through_patch() {
        for ops in [
            json!([{"op":"replace","path":"userName","value":12345}]),
            json!([{"op":"replace","path":"userName","value":"   "}]),
            json!([{"op":"replace","path":"userName","value":"a\u{0}b"}]),
            json!([{"op":"replace","value":{"userName": 7}}]),
            json!([{"op":"add","value":{"userName": "tab\tbed"}}]),
        ] {
            let e = patch_err(user(), U, ops.clone());
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{ops}");
        }
        for ops in [
            json!([{"op":"replace","path":"displayName","value":99}]),
            json!([{"op":"replace","value":{"displayName":"\u{1b}[31mred"}}]),
        ] {
            let e = patch_err(group(), G, ops.clone());
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{ops}");
        }
        let r = patch(
            user(),
            U,
            json!([{"op":"replace","path":"userName","value":"b.jensen@example.com"}]),
        )
        .unwrap();
        assert_eq!(r["userName"], "b.jensen@example.com");
    }

    #[test]
    fn path_less_values_carry_multi_valued_attributes_as_arrays() {
        for (kind, res, value) in [
            (U, user(), json!({"emails": "a@example.com"})),
            (U, user(), json!({"emails": {"value": "a@example.com"}})),
            (G, group(), json!({"members": "u1"})),
            (G, group(), json!({"members": {"value": "u1"}})),
        ] {
            let e = patch_err(res, kind, json!([{"op":"add","value": value.clone()}]));
            assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax), "{value}");
        }
        let r = patch(
            user(),
            U,
            json!([{"op":"add","value":{"emails":[{"value":"c@x"}]}}]),
        )
        .unwrap();
        assert_eq!(r["emails"].as_array().map(Vec::len), Some(2));
        // With a path, the value is the value added (RFC 7644 §3.5.2.1): one element
        // may come alone.
        let r = patch(
            user(),
            U,
            json!([{"op":"add","path":"emails","value":{"value":"c@x"}}]),
        )
        .unwrap();
        assert_eq!(r["emails"].as_array().map(Vec::len), Some(2));
    }

    proptest! {
        #[test]
        fn patch_never_panics_and_is_atomic(ops in prop::collection::vec(arb_op(), 0..5)) {
            let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
            if let Ok(r) = PatchRequest::from_value(body) {
                for (kind, orig) in [(U, user()), (G, group())] {
                    let mut res = orig.clone();
                    match apply_patch(&mut res, &r, kind) {
                        Err(e) => {
                            prop_assert_eq!(&res, &orig);
                            prop_assert_eq!(e.status, 400);
                        }
                        Ok(()) => {
                            // The result is still a valid resource of its kind.
                            prop_assert!(res.get("schemas").is_some());
                        }
                    }
                }
            }
        }

        #[test]
        fn a_value_filter_other_than_type_eq_never_invents_an_element(
            value in "[a-z@.]{1,12}",
            sub in prop::sample::select(vec!["display", "type", "value"]),
            op in prop::sample::select(vec!["add", "replace", "Replace"]),
        ) {
            let path = format!("emails[value eq \"{value}-absent\"].{sub}");
            let before = user();
            let mut after = before.clone();
            let req = PatchRequest::from_value(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": op, "path": path, "value": "x"}]})).unwrap();
            let e = apply_patch(&mut after, &req, U).unwrap_err();
            prop_assert_eq!(e.scim_type, Some(ScimType::NoTarget));
            prop_assert_eq!(after, before);
        }
    }
}
