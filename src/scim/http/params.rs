//! Query parameters (`filter`, `attributes`, `startIndex`, …) and the `POST …/.search`
//! body that stands for them.

use serde_json::Value;

use super::error::ApiError;
use crate::scim::protocol::{Projection, ResourceKind, ScimError, ScimType};

/// Query parameters, matched case-insensitively as IdPs vary their casing.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn parse(raw: Option<String>) -> Result<Params, ApiError> {
        let raw = raw.unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&raw).map_err(|_| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                "query string is not valid URL encoding",
            )
        })?;
        Ok(Params(pairs))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::Scim(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{name} must be an integer, not `{v}`"),
                ))
            }),
        }
    }

    pub(super) fn projection(&self, kind: ResourceKind) -> Result<Projection, ApiError> {
        Ok(Projection::parse(
            self.get("attributes"),
            self.get("excludedAttributes"),
            kind,
        )?)
    }

    pub(super) fn asks_for_body(&self) -> bool {
        self.get("attributes").is_some() || self.get("excludedAttributes").is_some()
    }
}

/// A `POST …/.search` body (RFC 7644 §3.4.3) as the query parameters it stands for.
pub(super) fn search_params(body: Value) -> Result<Params, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "SearchRequest must be a JSON object",
        )
        .into());
    };
    let mut pairs = Vec::new();
    for (key, value) in obj {
        let text = match (key.to_ascii_lowercase().as_str(), value) {
            ("schemas", _) => continue,
            ("attributes" | "excludedattributes", Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(","))
                .ok_or_else(|| {
                    ScimError::bad_request(
                        ScimType::InvalidValue,
                        format!("{key} must be a list of strings"),
                    )
                })?,
            (
                "filter" | "sortby" | "sortorder" | "attributes" | "excludedattributes",
                Value::String(v),
            ) => v,
            ("startindex" | "count", Value::Number(n)) => n.to_string(),
            ("startindex" | "count", Value::String(v)) => v,
            (_, Value::Null) => continue,
            _ => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    format!("`{key}` is not a SearchRequest attribute or has the wrong type"),
                )
                .into());
            }
        };
        pairs.push((key, text));
    }
    Ok(Params(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scim_type(e: ApiError) -> Option<ScimType> {
        match e {
            ApiError::Scim(e) => e.scim_type,
            other => panic!("not a SCIM error: {other:?}"),
        }
    }

    #[test]
    fn names_match_in_any_case_and_values_are_decoded() {
        let p = Params::parse(Some(
            "FILTER=userName%20eq%20%22a%22&StartIndex=2&count=&attributes=emails".into(),
        ))
        .unwrap();
        assert_eq!(p.get("filter"), Some("userName eq \"a\""));
        assert_eq!(p.integer("startIndex").unwrap(), Some(2));
        assert_eq!(
            p.integer("count").unwrap(),
            None,
            "an empty value is absent"
        );
        assert_eq!(p.integer("sortBy").unwrap(), None);
        assert!(p.asks_for_body());
        assert!(!Params::parse(None).unwrap().asks_for_body());
    }

    #[test]
    fn bad_integers_are_invalid_values() {
        let p = Params::parse(Some("count=ten".into())).unwrap();
        assert_eq!(
            scim_type(p.integer("count").unwrap_err()),
            Some(ScimType::InvalidValue)
        );
    }

    #[test]
    fn a_search_body_stands_for_the_query() {
        let p = search_params(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "attributes": ["userName", "emails"],
            "filter": "userName sw \"a\"",
            "startIndex": 3,
            "count": "10",
            "sortOrder": null
        }))
        .unwrap();
        assert_eq!(p.get("attributes"), Some("userName,emails"));
        assert_eq!(p.get("filter"), Some("userName sw \"a\""));
        assert_eq!(p.integer("startindex").unwrap(), Some(3));
        assert_eq!(p.integer("count").unwrap(), Some(10));
        assert_eq!(p.get("sortOrder"), None);
        for (body, t) in [
            (json!([1]), ScimType::InvalidSyntax),
            (json!({"filter": 5}), ScimType::InvalidSyntax),
            (json!({"shoeSize": "9"}), ScimType::InvalidSyntax),
            (json!({"attributes": ["a", 1]}), ScimType::InvalidValue),
        ] {
            assert_eq!(
                scim_type(search_params(body.clone()).err().unwrap()),
                Some(t),
                "{body}"
            );
        }
    }
}
