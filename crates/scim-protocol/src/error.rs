//! SCIM error type and the RFC 7644 §3.12 error document.

use serde_json::{Value, json};

use super::schema::ERROR_SCHEMA;

/// `scimType` values from RFC 7644 §3.12, Table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

impl std::fmt::Display for ScimType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error carrying the HTTP status and optional `scimType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    pub fn conflict_uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }

    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::Mutability, detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidFilter, detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidPath, detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }

    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidSyntax, detail)
    }

    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::NoTarget, detail)
    }

    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::TooMany, detail)
    }

    pub fn invalid_vers(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidVers, detail)
    }

    pub fn sensitive(detail: impl Into<String>) -> Self {
        Self::new(403, Some(ScimType::Sensitive), detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, None, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, None, detail)
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(413, None, detail)
    }

    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(501, None, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(500, None, detail)
    }

    /// Same error with `prefix` prepended to the detail (e.g. which PATCH operation failed).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.detail = format!("{prefix}{}", self.detail);
        self
    }

    /// RFC 7644 §3.12 error body; `status` is a string there, not a number.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
        });
        if let (Some(t), Some(obj)) = (self.scim_type, v.as_object_mut()) {
            obj.insert("scimType".into(), Value::String(t.as_str().into()));
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert("detail".into(), Value::String(self.detail.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_shape() {
        let e = ScimError::invalid_filter("bad filter");
        assert_eq!(
            e.to_json(),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidFilter","detail":"bad filter"})
        );
        assert_eq!(e.to_string(), "bad filter");
    }

    #[test]
    fn not_found_has_no_scim_type() {
        let e = ScimError::not_found("User 1 not found");
        assert_eq!(e.status, 404);
        assert_eq!(
            e.to_json(),
            json!({"schemas":[ERROR_SCHEMA],"status":"404","detail":"User 1 not found"})
        );
    }

    #[test]
    fn constructors_map_to_status_and_type() {
        assert_eq!(ScimError::conflict_uniqueness("x").status, 409);
        assert_eq!(
            ScimError::conflict_uniqueness("x").scim_type,
            Some(ScimType::Uniqueness)
        );
        assert_eq!(
            ScimError::mutability("x").scim_type,
            Some(ScimType::Mutability)
        );
        assert_eq!(
            ScimError::no_target("x").scim_type,
            Some(ScimType::NoTarget)
        );
        assert_eq!(
            ScimError::invalid_path("x").scim_type,
            Some(ScimType::InvalidPath)
        );
        assert_eq!(
            ScimError::invalid_value("x").scim_type,
            Some(ScimType::InvalidValue)
        );
        assert_eq!(
            ScimError::invalid_syntax("x").scim_type,
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(ScimType::InvalidVers.as_str(), "invalidVers");
        assert_eq!(ScimType::TooMany.as_str(), "tooMany");
        assert_eq!(ScimType::Sensitive.as_str(), "sensitive");
    }
}
