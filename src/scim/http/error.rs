//! `ApiError`: every way a SCIM request can fail, turned into an RFC 7644 error document
//! with the right status, `scimType` and headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::scim::protocol::{self, ScimError};
use crate::store::StoreError;

const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// An error on its way to becoming a SCIM error document.
#[derive(Debug)]
pub enum ApiError {
    Scim(ScimError),
    Unauthorized,
    PreconditionFailed,
    Overloaded,
    /// `mode: sync` and the integration's workers are all busy.
    Busy {
        retry_after_secs: u64,
    },
    Internal(String),
}

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        ApiError::Scim(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::Scim(ScimError::not_found("resource not found")),
            StoreError::Uniqueness(what) => ApiError::Scim(ScimError::conflict_uniqueness(
                format!("{what} is already taken"),
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub(super) fn error_document(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Value {
    let mut doc = json!({
        "schemas": [protocol::ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        doc["scimType"] = json!(t);
    }
    doc
}

pub(super) fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Scim(e) => {
                let status =
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                scim_json(status, &e.to_json())
            }
            ApiError::Unauthorized => {
                let mut r = scim_json(
                    StatusCode::UNAUTHORIZED,
                    &error_document(
                        StatusCode::UNAUTHORIZED,
                        None,
                        "missing or invalid bearer token for this gateway",
                    ),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"usher\""),
                );
                r
            }
            ApiError::PreconditionFailed => scim_json(
                StatusCode::PRECONDITION_FAILED,
                &error_document(
                    StatusCode::PRECONDITION_FAILED,
                    None,
                    "If-Match does not match the current version of the resource",
                ),
            ),
            ApiError::Overloaded => {
                let mut r = scim_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_document(
                        StatusCode::TOO_MANY_REQUESTS,
                        None,
                        "too many requests in flight; retry later",
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Busy { retry_after_secs } => {
                let mut r = scim_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_document(
                        StatusCode::TOO_MANY_REQUESTS,
                        None,
                        "this integration's workers are all busy; retry later",
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            ApiError::Internal(detail) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %detail, "internal error while serving SCIM");
                scim_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &error_document(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "internal error; see the server log",
                    ),
                )
            }
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn doc(e: ApiError) -> (StatusCode, axum::http::HeaderMap, Value) {
        let r = e.into_response();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_error_is_a_scim_error_document() {
        let cases = [
            (
                ApiError::Scim(ScimError::invalid_value("bad")),
                400,
                Some("invalidValue"),
            ),
            (ApiError::Unauthorized, 401, None),
            (ApiError::PreconditionFailed, 412, None),
            (ApiError::Overloaded, 429, None),
            (
                ApiError::Busy {
                    retry_after_secs: 15,
                },
                429,
                None,
            ),
            (
                ApiError::Internal("db password=hunter2 in an error".into()),
                500,
                None,
            ),
            (StoreError::NotFound.into(), 404, None),
            (
                StoreError::Uniqueness("userName".into()).into(),
                409,
                Some("uniqueness"),
            ),
        ];
        for (e, status, scim_type) in cases {
            let (got, headers, body) = doc(e).await;
            assert_eq!(got.as_u16(), status);
            assert_eq!(
                headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some(SCIM_CONTENT_TYPE)
            );
            assert_eq!(body["schemas"], json!([protocol::ERROR_SCHEMA]));
            assert_eq!(body["status"], json!(status.to_string()));
            assert_eq!(body.get("scimType").and_then(Value::as_str), scim_type);
            assert!(
                !body.to_string().contains("hunter2"),
                "internal causes stay in the log"
            );
        }
    }

    #[tokio::test]
    async fn retry_and_auth_headers() {
        let (_, h, _) = doc(ApiError::Unauthorized).await;
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer realm=\"usher\"");
        let (_, h, _) = doc(ApiError::Overloaded).await;
        assert_eq!(h[header::RETRY_AFTER], "1");
        let (_, h, _) = doc(ApiError::Busy {
            retry_after_secs: 15,
        })
        .await;
        assert_eq!(h[header::RETRY_AFTER], "15");
    }
}
