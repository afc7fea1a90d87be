//! The SCIM 2.0 gateways: one per integration at `/scim/v2/{gateway_id}/…`.
//!
//! `protocol` is the pure RFC 7643/7644 core (no I/O); `http` maps it onto axum and
//! the store. This module never touches a browser: every accepted write becomes a
//! job in the store, and the engine takes it from there.

/// The pure protocol core, its own crate (`crates/scim-protocol`).
pub use usher_scim_protocol as protocol;

mod auth;
mod http;

pub use auth::Gateway;
pub use http::{ScimState, StagedHook, router};

/// Rewrites the endpoint segment of a SCIM path to its canonical case
/// (`/scim/v2/g/users/1` → `/scim/v2/g/Users/1`): some IdP test suites vary it, and
/// routing happens before any handler could be lenient.
pub fn canonical_path(path: &str) -> Option<String> {
    const ENDPOINTS: [&str; 7] = [
        "Users",
        "Groups",
        "ServiceProviderConfig",
        "ResourceTypes",
        "Schemas",
        "Bulk",
        "Me",
    ];
    let rest = path.strip_prefix("/scim/v2/")?;
    let (gateway, rest) = rest.split_once('/')?;
    let (endpoint, tail) = match rest.split_once('/') {
        Some((e, t)) => (e, Some(t)),
        None => (rest, None),
    };
    let canonical = ENDPOINTS
        .iter()
        .find(|e| e.eq_ignore_ascii_case(endpoint) && **e != endpoint)?;
    Some(match tail {
        Some(t) => format!("/scim/v2/{gateway}/{canonical}/{t}"),
        None => format!("/scim/v2/{gateway}/{canonical}"),
    })
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn endpoint_case_is_canonicalised() {
        assert_eq!(
            canonical_path("/scim/v2/g/users").as_deref(),
            Some("/scim/v2/g/Users")
        );
        assert_eq!(
            canonical_path("/scim/v2/g/GROUPS/x").as_deref(),
            Some("/scim/v2/g/Groups/x")
        );
        assert_eq!(canonical_path("/scim/v2/g/Users"), None);
        assert_eq!(canonical_path("/scim/v2/g/widgets"), None);
        assert_eq!(canonical_path("/healthz"), None);
    }
}
