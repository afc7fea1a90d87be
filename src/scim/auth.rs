//! Bearer-token authentication of one gateway.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{IntegrationConfig, Invites, Mode, PatchResponse};

/// What the SCIM layer knows of an integration.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: String,
    pub name: String,
    pub token_sha256: [u8; 32],
    pub mode: Mode,
    pub patch_response: PatchResponse,
    pub invites: Invites,
    /// Jobs the integration runs at once (sync mode sheds load above it).
    pub concurrency: usize,
}

impl Gateway {
    pub fn from_config(i: &IntegrationConfig) -> Option<Gateway> {
        Some(Gateway {
            id: i.id.clone(),
            name: i.name.clone(),
            token_sha256: i.token_hash()?,
            mode: i.mode,
            patch_response: i.patch_response,
            invites: i.invites,
            concurrency: i.concurrency,
        })
    }

    /// True when the request carries this gateway's bearer token. The comparison of
    /// digests is constant-time, so timing tells nothing about the token.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(token) = bearer_token(headers) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest.ct_eq(&self.token_sha256).into()
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn gw(token: &str) -> Gateway {
        Gateway {
            id: "g".into(),
            name: "G".into(),
            token_sha256: crate::config::hash_token(token),
            mode: Mode::Async,
            patch_response: PatchResponse::NoContent,
            invites: Invites::Immediate,
            concurrency: 2,
        }
    }

    #[test]
    fn accepts_only_its_own_bearer_token() {
        let g = gw("token-aaaaaaaaaaaaaaaa");
        let mut h = HeaderMap::new();
        assert!(!g.accepts(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer token-aaaaaaaaaaaaaaaa"),
        );
        assert!(g.accepts(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("bearer  token-aaaaaaaaaaaaaaaa "),
        );
        assert!(g.accepts(&h));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer token-bbbbbbbbbbbbbbbb"),
        );
        assert!(!g.accepts(&h));
        h.insert("authorization", HeaderValue::from_static("Basic dG9rZW4="));
        assert!(!g.accepts(&h));
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert!(!g.accepts(&h));
    }
}
