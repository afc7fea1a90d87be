//! Small JSON helpers shared by the protocol modules.

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

/// Key in `map` matching `name` case-insensitively (RFC 7643 §2.1); exact match preferred.
pub(super) fn key_ci(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_string());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

pub(super) fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match map.get(name) {
        Some(v) => Some(v),
        None => map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v),
    }
}

/// Removes `name` (any case); returns the removed value.
pub(super) fn remove_ci(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = key_ci(map, name)?;
    map.shift_remove(&key)
}

/// Inserts under the canonical `name`, dropping any differently-cased duplicate first.
pub(super) fn insert_canonical(map: &mut Map<String, Value>, name: &str, v: Value) {
    while let Some(k) = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name) && k.as_str() != name)
        .cloned()
    {
        map.shift_remove(&k);
    }
    map.insert(name.to_string(), v);
}

/// "Unassigned" in the RFC 7643 §2.5 sense.
pub(super) fn is_unassigned(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// RFC 3339 with any fractional precision and offset (Entra sends 7 digits).
pub(super) fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s.trim()).ok()
}
