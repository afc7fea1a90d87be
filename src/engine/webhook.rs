//! Webhook notifications: failed jobs, recoveries, staged invites. Each is queued in
//! the store (so a restart loses none), sent as JSON signed with HMAC-SHA256, and
//! retried with backoff when the receiver fails.
//!
//! Signature header: `Usher-Signature: t=UNIX_SECONDS,v1=HEX(HMAC_SHA256(secret, "t.body"))`.
//! The timestamp is signed too, so a receiver can refuse replays older than it likes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::worker::Shared;
use crate::config::WebhookConfig;

pub const SIGNATURE_HEADER: &str = "Usher-Signature";

/// Event types sent when a webhook lists none.
pub const DEFAULT_EVENTS: &[&str] = &[
    "job.failed",
    "job.recovered",
    "invite.staged",
    "integration.paused",
    "integration.resumed",
    "integration.ui_changed",
    "integration.ui_restored",
    "integration.reconciled",
];

/// Deliveries are given up after this many attempts (about a day with the backoff).
const MAX_ATTEMPTS: i64 = 12;

/// The `Usher-Signature` value for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The JSON body of one notification: its type, a unique id, the time, the
/// integration and the SCIM user, and the event's own `fields`. Every webhook that
/// wants the event gets this same body.
pub fn envelope(
    event_type: &str,
    at: DateTime<Utc>,
    integration: &str,
    user: &str,
    fields: serde_json::Value,
) -> String {
    let mut body = serde_json::json!({
        "type": event_type,
        "id": uuid::Uuid::now_v7().to_string(),
        "at": crate::clock::format_time(at),
        "integration": integration,
        "user": user,
    });
    if let (Some(b), serde_json::Value::Object(f)) = (body.as_object_mut(), fields) {
        b.extend(f);
    }
    body.to_string()
}

/// True when `w` wants events of `event_type`.
pub fn wants(w: &WebhookConfig, event_type: &str) -> bool {
    if w.events.is_empty() {
        DEFAULT_EVENTS.contains(&event_type)
    } else {
        w.events.iter().any(|e| e == event_type || e == "*")
    }
}

fn retry_delay(attempts: i64) -> Duration {
    let secs = 2u64.saturating_pow(attempts.clamp(0, 16) as u32).min(3600);
    Duration::from_secs(secs)
}

/// Sends queued deliveries until the engine stops.
pub(crate) async fn sender_loop(shared: Arc<Shared>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client cannot start; notifications stay queued");
            return;
        }
    };
    let mut stop = shared.stop_signal();
    while !shared.is_stopping() {
        deliver_due(&shared, &client).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One pass over the deliveries that are due (`usher run-once` makes one at its end;
/// what fails stays queued for the next run or server).
pub(crate) async fn deliver_once(shared: &Shared) {
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => deliver_due(shared, &client).await,
        Err(e) => {
            tracing::error!(error = %e, "webhook client cannot start; notifications stay queued")
        }
    }
}

async fn deliver_due(shared: &Shared, client: &reqwest::Client) {
    match shared
        .store
        .claim_webhooks(20, Duration::from_secs(60))
        .await
    {
        Ok(batch) => {
            for d in batch {
                let Some(w) = shared.webhooks.iter().find(|w| w.url == d.url) else {
                    let _ = shared
                        .store
                        .webhook_attempted(d.id, Err("webhook no longer configured".into()), None)
                        .await;
                    continue;
                };
                // Engines load the configuration with the webhook secrets required;
                // a process without them leaves deliveries to one that has them.
                let Some(key) = w.secret.expose_for_signing() else {
                    continue;
                };
                let now = shared.clock.now().timestamp();
                let sig = sign(key, now, &d.body);
                let r = client
                    .post(&d.url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, sig)
                    .header("Usher-Event", &d.event_type)
                    .body(d.body.clone())
                    .send()
                    .await;
                let result = match r {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => Err(format!("receiver answered {}", resp.status())),
                    Err(e) => Err(format!("cannot reach the receiver: {e}")),
                };
                if let Err(e) = &result {
                    tracing::warn!(url = %crate::config::redact_url(&d.url), attempt = d.attempts, error = %e, "webhook delivery failed");
                }
                let retry = (d.attempts < MAX_ATTEMPTS).then(|| retry_delay(d.attempts));
                if let Err(e) = shared.store.webhook_attempted(d.id, result, retry).await {
                    tracing::warn!(error = %e, "recording a webhook delivery failed");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the webhook outbox failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // Reference value computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec-0123456789abcdef'
        let sig = sign(b"whsec-0123456789abcdef", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=d77c78ac4da074c56908b55eac30358b2a7bfc573be4c76819af5102e8dcf939"
        );
        assert_ne!(
            sig,
            sign(b"whsec-0123456789abcdeX", 1_700_000_000, r#"{"a":1}"#)
        );
        assert_ne!(
            sig,
            sign(b"whsec-0123456789abcdef", 1_700_000_001, r#"{"a":1}"#)
        );
        assert_ne!(
            sig,
            sign(b"whsec-0123456789abcdef", 1_700_000_000, r#"{"a":2}"#)
        );
    }

    #[test]
    fn envelope_carries_type_id_time_integration_user_and_fields() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let a: serde_json::Value = serde_json::from_str(&envelope(
            "job.failed",
            at,
            "acme",
            "u1",
            serde_json::json!({"job": 7, "detail": {"reason": "x"}}),
        ))
        .expect("json");
        assert_eq!(a["type"], "job.failed");
        assert_eq!(
            (a["integration"].as_str(), a["user"].as_str()),
            (Some("acme"), Some("u1"))
        );
        assert_eq!(
            (a["job"].as_i64(), a["detail"]["reason"].as_str()),
            (Some(7), Some("x"))
        );
        assert_eq!(a["at"], "2023-11-14T22:13:20.000Z");
        let b: serde_json::Value = serde_json::from_str(&envelope(
            "job.failed",
            at,
            "acme",
            "u1",
            serde_json::json!({}),
        ))
        .expect("json");
        assert_ne!(a["id"], b["id"], "each notification has its own id");
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert!(retry_delay(1) < retry_delay(4));
        assert_eq!(retry_delay(30), Duration::from_secs(3600));
    }
}
