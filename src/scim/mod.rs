//! The SCIM 2.0 gateways: one per integration at `/scim/v2/{gateway_id}/…`.
//!
//! `protocol` is the pure RFC 7643/7644 core (no I/O); `http` maps it onto axum and
//! the store. This module never touches a browser: every accepted write becomes a
//! job in the store, and the engine takes it from there.

pub mod protocol;

mod auth;
mod http;

pub use auth::Gateway;
pub use http::{ScimState, router};
