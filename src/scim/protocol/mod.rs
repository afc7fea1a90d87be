//! Pure SCIM 2.0 protocol core (RFC 7643 / RFC 7644): no I/O, only functions
//! over `serde_json::Value`. Sibling modules are referenced with `super::` so
//! the folder can be moved verbatim into another crate.

pub mod error;
pub mod filter;
pub mod patch;
pub mod path;
pub mod projection;
pub mod resource;
pub mod schema;
pub mod sort;
mod util;

pub use error::{ScimError, ScimType};
pub use filter::{Filter, parse_filter};
pub use patch::{PatchRequest, apply_patch};
pub use projection::Projection;
pub use resource::{WriteMode, normalize_input};
pub use schema::{
    ENTERPRISE_USER_SCHEMA, ERROR_SCHEMA, GROUP_SCHEMA, LIST_RESPONSE_SCHEMA, PATCH_OP_SCHEMA,
    PROVISIONING_SCHEMA, ResourceKind, USER_SCHEMA,
};
pub use sort::{SortSpec, sort_resources};
