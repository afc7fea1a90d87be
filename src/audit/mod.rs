//! The audit trail: append-only events, each chained to the one before by a SHA-256
//! hash over a deterministic serialisation, so that any edit or deletion is detectable;
//! signed checkpoints of the chain head (`checkpoint`) make a truncated tail
//! detectable too, and the evidence files the events cite are checked by content.

pub mod checkpoint;
pub mod evidence;

use serde_json::Value;

/// The hash the first event of a trail is chained to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An identity provider, through the SCIM gateway of an integration.
    Idp { integration_id: String },
    /// An operator using the CLI or dashboard.
    Admin(String),
    /// Usher itself (workers, schedulers).
    System,
    /// A person signing in to an app through Usher's single sign-on (as the OpenID
    /// provider named them).
    Person(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Idp { integration_id } => write!(f, "idp:{integration_id}"),
            Actor::Admin(name) => write!(f, "admin:{name}"),
            Actor::System => f.write_str("system"),
            Actor::Person(who) => write!(f, "person:{who}"),
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: Actor,
    pub event_type: &'static str,
    pub target: Option<String>,
    pub integration_id: Option<String>,
    /// A JSON object; never holds secrets.
    pub detail: Value,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub event_type: String,
    pub target: Option<String>,
    pub integration_id: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Event types, in the words of the design.
pub mod kinds {
    pub const SCIM_CREATE: &str = "scim.create";
    pub const SCIM_REPLACE: &str = "scim.replace";
    pub const SCIM_PATCH: &str = "scim.patch";
    pub const SCIM_DELETE: &str = "scim.delete";
    /// A job's run ended well: the app shows the desired state.
    pub const JOB_SUCCEEDED: &str = "job.succeeded";
    /// A run failed and will be tried again.
    pub const JOB_RETRY: &str = "job.retry";
    /// The last attempt failed, or the failure cannot be retried.
    pub const JOB_FAILED: &str = "job.failed";
    pub const JOB_CANCELLED: &str = "job.cancelled";
    pub const JOB_REQUEUED: &str = "job.requeued";
    /// A staged joiner claimed access at their link.
    pub const INVITE_CLAIMED: &str = "invite.claimed";
    /// A worker took over a running job whose holder stopped (dead process or lease).
    pub const JOB_TAKEN_OVER: &str = "job.taken_over";
    /// A job waits because its integration is paused.
    pub const JOB_PAUSED: &str = "job.paused";
    /// The app refused the service account's sign-in: no more sign-ins until resumed.
    pub const INTEGRATION_PAUSED: &str = "integration.paused";
    /// Sign-ins allowed again (vault entry changed, or an operator said so).
    pub const INTEGRATION_RESUMED: &str = "integration.resumed";
    /// A person signed in to the console (the actor), with their role.
    pub const CONSOLE_SIGN_IN: &str = "console.sign_in";
    /// A sign-in was refused (wrong password, no mapped role, IdP error).
    pub const CONSOLE_SIGN_IN_REFUSED: &str = "console.sign_in_refused";
    pub const CONSOLE_SIGN_OUT: &str = "console.sign_out";
    /// The break-glass account's password was set.
    pub const CONSOLE_PASSWORD_SET: &str = "console.password_set";
    /// Someone asked for the audit chain to be verified, with the outcome.
    pub const AUDIT_VERIFIED: &str = "audit.verified";
    /// Someone exported the audit trail (a copy left Usher).
    pub const AUDIT_EXPORTED: &str = "audit.exported";
    /// An operator asked for a user's desired state to be applied again.
    pub const USER_RERUN: &str = "user.rerun";
    /// A reconciliation run compared the app's accounts with Usher's users: its counts
    /// and the jobs it queued.
    pub const RECONCILE_RUN: &str = "reconcile.run";
    /// A reconciliation run could not finish (its reason).
    pub const RECONCILE_FAILED: &str = "reconcile.failed";
    /// The canary found a step that no longer matches the app's UI: degraded.
    pub const INTEGRATION_UI_CHANGED: &str = "integration.ui_changed";
    /// The canary passes again.
    pub const INTEGRATION_UI_RESTORED: &str = "integration.ui_restored";
    /// A person signed in to an app's SSO host through the OpenID provider.
    pub const SSO_SIGN_IN: &str = "sso.sign_in";
    /// A person was refused at an SSO host (not a user of the integration, deactivated…).
    pub const SSO_REFUSED: &str = "sso.refused";
    /// Usher signed a person in to the app with the credentials it holds for them.
    pub const SSO_APP_LOGIN: &str = "sso.app_login";
    /// A person signed out (the app's sign-out ends the SSO session too).
    pub const SSO_SIGN_OUT: &str = "sso.sign_out";
    /// A person's own app password (single sign-on) was rotated, or a rotation failed.
    pub const SSO_PASSWORD_ROTATED: &str = "sso.password_rotated";
    /// Usher ended a person's SSO sessions (a leaver).
    pub const SSO_FORCED_SIGN_OUT: &str = "sso.forced_sign_out";
}

/// JSON with object keys sorted at every level, so that the same value always hashes the same.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The hash of an event given the hash of the one before it.
pub fn chain_hash(
    prev_hash: &str,
    at: &str,
    actor: &str,
    event_type: &str,
    target: Option<&str>,
    integration_id: Option<&str>,
    detail_canonical: &str,
) -> String {
    let body = serde_json::json!({
        "prev": prev_hash,
        "at": at,
        "actor": actor,
        "type": event_type,
        "target": target,
        "integration": integration_id,
        "detail": detail_canonical,
    });
    crate::digest::sha256_hex(canonical_json(&body).as_bytes())
}

/// Where a trail stops being consistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("audit event {seq}: its hash does not match its content (edited)")]
    Tampered { seq: i64 },
    #[error("audit event {seq}: not chained to the event before it (removed or reordered)")]
    Broken { seq: i64 },
}

/// Checks a trail given in `seq` order; returns how many events were checked.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<usize, ChainError> {
    let mut prev = GENESIS_HASH.to_string();
    let mut n = 0;
    for e in events {
        if e.prev_hash != prev {
            return Err(ChainError::Broken { seq: e.seq });
        }
        let expect = chain_hash(
            &e.prev_hash,
            &e.at,
            &e.actor,
            &e.event_type,
            e.target.as_deref(),
            e.integration_id.as_deref(),
            &canonical_json(&e.detail),
        );
        if expect != e.hash {
            return Err(ChainError::Tampered { seq: e.seq });
        }
        prev = e.hash.clone();
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64, prev: &str, detail: Value) -> Event {
        let at = format!("2026-01-01T00:00:0{seq}.000Z");
        let hash = chain_hash(
            prev,
            &at,
            "system",
            "t",
            Some("x"),
            None,
            &canonical_json(&detail),
        );
        Event {
            seq,
            at,
            actor: "system".into(),
            event_type: "t".into(),
            target: Some("x".into()),
            integration_id: None,
            detail,
            prev_hash: prev.into(),
            hash,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn chain_verifies_and_detects_edits_and_removals() {
        let e1 = event(1, GENESIS_HASH, json!({"k": 1}));
        let e2 = event(2, &e1.hash, json!({"k": 2}));
        let e3 = event(3, &e2.hash, json!({"k": 3}));
        assert_eq!(verify_chain([&e1, &e2, &e3]), Ok(3));
        let mut edited = e2.clone();
        edited.detail = json!({"k": 20});
        assert_eq!(
            verify_chain([&e1, &edited, &e3]),
            Err(ChainError::Tampered { seq: 2 })
        );
        assert_eq!(verify_chain([&e1, &e3]), Err(ChainError::Broken { seq: 3 }));
    }
}
