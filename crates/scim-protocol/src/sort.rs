//! `sortBy` / `sortOrder` (RFC 7644 §3.4.2.3).

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::error::ScimError;
use super::path::AttrPath;
use super::schema::{self, AttrType, ResourceKind};
use super::util::{get_ci, parse_datetime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    pub path: AttrPath,
    pub descending: bool,
}

impl SortSpec {
    /// `Ok(None)` without `sortBy` (a lone `sortOrder` is ignored). An
    /// unknown `sortBy` or `sortOrder` is 400 invalidValue: silently ignoring
    /// it would return pages that look sorted but are not.
    pub fn parse(
        sort_by: Option<&str>,
        sort_order: Option<&str>,
        kind: ResourceKind,
    ) -> Result<Option<SortSpec>, ScimError> {
        let descending = match sort_order.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder must be 'ascending' or 'descending', got '{other}'"
                )));
            }
        };
        let Some(by) = sort_by.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let path = schema::resolve(kind, by)
            .ok_or_else(|| ScimError::invalid_value(format!("unknown sortBy attribute '{by}'")))?;
        let leaf = schema::attribute(kind, &path)
            .ok_or_else(|| ScimError::invalid_value(format!("unknown sortBy attribute '{by}'")))?;
        if leaf.is_complex() && leaf.value_sub().is_none() {
            return Err(ScimError::invalid_value(format!(
                "cannot sort by complex attribute '{by}'"
            )));
        }
        Ok(Some(SortSpec { path, descending }))
    }
}

#[derive(Debug, PartialEq)]
enum Key {
    Time(DateTime<FixedOffset>),
    Num(f64),
    Bool(bool),
    Str(String),
    Missing,
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Time(_) => 0,
            Key::Num(_) => 1,
            Key::Bool(_) => 2,
            Key::Str(_) => 3,
            Key::Missing => 4,
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Time(a), Key::Time(b)) => a.cmp(b),
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// The value a resource sorts by: for multi-valued attributes the primary
/// element, else the first (RFC 7644 §3.4.2.3).
fn sort_key(resource: &Value, spec: &SortSpec, kind: ResourceKind) -> Key {
    let (Some(top_def), Some(top)) = (
        schema::top_attribute(kind, &spec.path),
        spec.path.top_value(resource),
    ) else {
        return Key::Missing;
    };
    let elem = match top {
        Value::Array(a) => a
            .iter()
            .find(|e| e.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| a.first()),
        other => Some(other),
    };
    let Some(elem) = elem else {
        return Key::Missing;
    };
    let sub = spec
        .path
        .sub
        .clone()
        .or_else(|| top_def.value_sub().map(|d| d.name.to_string()));
    let (v, def) = match &sub {
        Some(s) => (
            elem.as_object().and_then(|o| get_ci(o, s)),
            top_def.sub_attr(s),
        ),
        None => (Some(elem), Some(top_def)),
    };
    let (Some(v), Some(def)) = (v, def) else {
        return Key::Missing;
    };
    match v {
        Value::String(s) if def.ty == AttrType::DateTime => match parse_datetime(s) {
            Some(t) => Key::Time(t),
            None => Key::Str(s.clone()),
        },
        Value::String(s) if def.case_exact => Key::Str(s.clone()),
        Value::String(s) => Key::Str(s.to_lowercase()),
        Value::Number(n) => n.as_f64().map_or(Key::Missing, Key::Num),
        Value::Bool(b) => Key::Bool(*b),
        _ => Key::Missing,
    }
}

/// Stable sort. Resources without a value sort last in both orders
/// (decision: keeps the useful rows on the first page either way).
pub fn sort_resources(resources: &mut [Value], spec: &SortSpec, kind: ResourceKind) {
    let mut keyed: Vec<(Key, Value)> = resources
        .iter_mut()
        .map(|r| (sort_key(r, spec, kind), std::mem::take(r)))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Key::Missing, Key::Missing) => Ordering::Equal,
        (Key::Missing, _) => Ordering::Greater,
        (_, Key::Missing) => Ordering::Less,
        _ if spec.descending => b.cmp(a),
        _ => a.cmp(b),
    });
    for (slot, (_, v)) in resources.iter_mut().zip(keyed) {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::*;
    use serde_json::json;

    const U: ResourceKind = ResourceKind::User;

    fn names(rs: &[Value]) -> Vec<String> {
        rs.iter()
            .map(|r| r["id"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn spec(by: &str, order: Option<&str>) -> SortSpec {
        SortSpec::parse(Some(by), order, U).unwrap().unwrap()
    }

    #[test]
    fn parse_rules() {
        assert_eq!(SortSpec::parse(None, Some("descending"), U).unwrap(), None);
        assert!(spec("USERNAME", Some("Descending")).descending);
        let e = SortSpec::parse(Some("userName"), Some("up"), U).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = SortSpec::parse(Some("bogus"), None, U).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(SortSpec::parse(Some("name"), None, U).is_err());
        assert!(SortSpec::parse(Some("emails"), None, U).is_ok());
    }

    #[test]
    fn case_insensitive_stable_missing_last() {
        let mut rs = vec![
            json!({"id": "1", "userName": "bob"}),
            json!({"id": "2"}),
            json!({"id": "3", "userName": "Alice"}),
            json!({"id": "4", "userName": "alice"}),
            json!({"id": "5", "userName": "Carol"}),
        ];
        sort_resources(&mut rs, &spec("userName", None), U);
        assert_eq!(names(&rs), ["3", "4", "1", "5", "2"]);
        sort_resources(&mut rs, &spec("userName", Some("descending")), U);
        assert_eq!(names(&rs), ["5", "1", "3", "4", "2"]);
    }

    #[test]
    fn case_exact_and_datetimes() {
        let mut rs = vec![json!({"id": "b"}), json!({"id": "B"}), json!({"id": "a"})];
        sort_resources(&mut rs, &spec("id", None), U);
        assert_eq!(names(&rs), ["B", "a", "b"]);
        let mut rs = vec![
            json!({"id": "1", "meta": {"created": "2020-01-01T10:00:00+02:00"}}),
            json!({"id": "2", "meta": {"created": "2020-01-01T09:00:00Z"}}),
            json!({"id": "3", "meta": {"created": "2020-01-01T08:30:00.1234567Z"}}),
        ];
        sort_resources(&mut rs, &spec("meta.created", None), U);
        assert_eq!(names(&rs), ["1", "3", "2"]);
    }

    #[test]
    fn multi_valued_uses_primary_then_first() {
        let mut rs = vec![
            json!({"id": "1", "emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]}),
            json!({"id": "2", "emails": [{"value": "m@x"}, {"value": "b@x"}]}),
            json!({"id": "3", "emails": []}),
        ];
        sort_resources(&mut rs, &spec("emails", None), U);
        assert_eq!(names(&rs), ["1", "2", "3"]);
        sort_resources(&mut rs, &spec("emails.value", Some("descending")), U);
        assert_eq!(names(&rs), ["2", "1", "3"]);
    }

    #[test]
    fn extension_and_booleans() {
        let ent = super::super::schema::ENTERPRISE_USER_SCHEMA;
        let mut rs = vec![
            json!({"id": "1", ent: {"department": "b"}, "active": true}),
            json!({"id": "2", ent: {"department": "A"}, "active": false}),
        ];
        sort_resources(&mut rs, &spec(&format!("{ent}:department"), None), U);
        assert_eq!(names(&rs), ["2", "1"]);
        sort_resources(&mut rs, &spec("active", Some("descending")), U);
        assert_eq!(names(&rs), ["1", "2"]);
    }
}
