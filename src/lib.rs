//! Usher: a SCIM 2.0 gateway for apps that have an admin web page but no provisioning API.
//!
//! The modules follow the design's picture: `scim` receives the IdP's requests,
//! `store` keeps desired state, jobs and the `audit` trail durably; the engine,
//! `engine` joins them: it runs each job through the integration's `playbook` in the
//! `browser`, with the service account's secrets from the `vault`; `web` serves the
//! pages people open (invite claims).

pub mod audit;
pub mod browser;
pub mod clock;
pub mod config;
pub mod digest;
pub mod engine;
pub mod keytext;
pub mod ops;
pub mod playbook;
pub mod scim;
pub mod server;
pub mod sso;
pub mod store;
pub mod vault;
pub mod web;
