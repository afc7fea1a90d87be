//! Pure SCIM 2.0 protocol core of Usher (RFC 7643 / RFC 7644): schema rules, filter
//! and PATCH-path parsers, PATCH application, projection and sorting, as functions
//! over `serde_json::Value`. No I/O: this crate depends on no runtime, database, HTTP
//! stack or browser, so the compiler keeps it pure. Usher's gateway re-exports it as
//! `usher::scim::protocol`; `fuzz/` builds against it alone.

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
