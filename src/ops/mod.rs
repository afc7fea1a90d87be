//! What operators and orchestrators look at: `/readyz`, `/metrics` and the access log.
//!
//! Metrics go through the `metrics` facade (the engine and the browser record there
//! too) into one Prometheus recorder per process. Labels are integration ids, methods,
//! statuses and action names only: never a user, a token or a secret.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::engine::EngineProbe;
use crate::store::{JobStatus, Store};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// How long a Chromium check's answer is reused: probes come every few seconds, and a
/// failing executable must not be started for each of them.
const CHROMIUM_CHECK_TTL: Duration = Duration::from_secs(10);
/// A check that takes longer than this fails (a probe must answer).
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Latency buckets of SCIM requests and jobs, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Result<PrometheusHandle, OpsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
        .map_err(OpsError::Recorder)
}

/// A check's answer and when it was made.
type CachedCheck = (Instant, Result<(), String>);

/// What `/readyz` and `/metrics` read.
#[derive(Clone)]
pub struct Ops {
    store: Store,
    engine: Option<EngineProbe>,
    /// Configured integration ids: the only values the `integration` label takes.
    integrations: Arc<BTreeSet<String>>,
    metrics: PrometheusHandle,
    chromium: Arc<Mutex<Option<CachedCheck>>>,
}

impl Ops {
    pub fn new(
        store: Store,
        engine: Option<EngineProbe>,
        integrations: impl IntoIterator<Item = String>,
    ) -> Result<Ops, OpsError> {
        Ok(Ops {
            store,
            engine,
            integrations: Arc::new(integrations.into_iter().collect()),
            metrics: metrics_handle()?,
            chromium: Arc::new(Mutex::new(None)),
        })
    }

    /// Every check, in order: `(name, Ok(detail) | Err(reason))`.
    pub async fn checks(&self) -> Vec<(&'static str, Result<String, String>)> {
        let mut out = Vec::new();
        let db = match tokio::time::timeout(CHECK_TIMEOUT, self.store.readiness()).await {
            Ok(Ok(())) => Ok(format!(
                "{} reachable and migrated",
                self.store.backend_name()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        out.push(("database", db));
        let Some(engine) = &self.engine else {
            out.push(("vault", Ok("not needed (no engine)".into())));
            out.push(("chromium", Ok("not needed (no engine)".into())));
            return out;
        };
        let vault = match tokio::time::timeout(CHECK_TIMEOUT, engine.vault()).await {
            Ok(Ok(())) => Ok("key loaded".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        out.push(("vault", vault));
        out.push((
            "chromium",
            self.chromium(engine).await.map(|()| "launchable".into()),
        ));
        out
    }

    async fn chromium(&self, engine: &EngineProbe) -> Result<(), String> {
        if let Ok(cached) = self.chromium.lock()
            && let Some((at, r)) = cached.as_ref()
            && at.elapsed() < CHROMIUM_CHECK_TTL
        {
            return r.clone();
        }
        // A launch takes about half a second; Chromium is kept for the workers.
        let r = match tokio::time::timeout(Duration::from_secs(15), engine.chromium()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("did not start within 15s".into()),
        };
        if let Ok(mut cached) = self.chromium.lock() {
            *cached = Some((Instant::now(), r.clone()));
        }
        r
    }

    /// The integration label of a request path: a configured id, else `none`.
    fn integration_of(&self, path: &str) -> &str {
        path.strip_prefix("/scim/v2/")
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .and_then(|id| self.integrations.get(id))
            .map_or("none", String::as_str)
    }

    /// The Prometheus text: the recorder's series and the queue read now.
    pub async fn render(&self) -> String {
        let stats = match tokio::time::timeout(CHECK_TIMEOUT, self.store.queue_stats()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        match stats {
            Ok(stats) => {
                let now = self.store.clock().now();
                for id in self.integrations.iter() {
                    let s = stats.get(id).cloned().unwrap_or_default();
                    for status in JobStatus::ALL {
                        let n = s.by_status.get(status.as_str()).copied().unwrap_or(0);
                        metrics::gauge!("usher_jobs", "integration" => id.clone(), "status" => status.as_str())
                            .set(n as f64);
                    }
                    let pending = s.by_status.get("pending").copied().unwrap_or(0);
                    metrics::gauge!("usher_queue_depth", "integration" => id.clone())
                        .set(pending as f64);
                    let age = s
                        .oldest_pending
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| (now - t.to_utc()).num_milliseconds().max(0) as f64 / 1000.0)
                        .unwrap_or(0.0);
                    metrics::gauge!("usher_queue_oldest_pending_age_seconds", "integration" => id.clone())
                        .set(age);
                    if let Some(t) = s
                        .last_success
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    {
                        metrics::gauge!("usher_last_success_timestamp_seconds", "integration" => id.clone())
                            .set(t.timestamp_millis() as f64 / 1000.0);
                    }
                }
                metrics::gauge!("usher_metrics_database_up").set(1.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the queue for /metrics failed");
                metrics::gauge!("usher_metrics_database_up").set(0.0);
            }
        }
        self.metrics.run_upkeep();
        self.metrics.render()
    }
}

/// `/readyz`, and `/metrics` unless it has a listener of its own.
pub fn router(ops: Ops, with_metrics: bool) -> Router {
    let r = Router::new().route("/readyz", get(readyz));
    let r = if with_metrics {
        r.route("/metrics", get(metrics_page))
    } else {
        r
    };
    r.with_state(ops)
}

/// The admin listener's routes (`metrics_listen:`).
pub fn metrics_router(ops: Ops) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(ops)
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let checks = ops.checks().await;
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        json!(if failing.is_empty() {
            "ready"
        } else {
            "not ready"
        }),
    );
    if !failing.is_empty() {
        body.insert("failing".into(), json!(failing));
    }
    let mut detail = serde_json::Map::new();
    for (name, r) in &checks {
        detail.insert(
            (*name).into(),
            match r {
                Ok(d) => json!({"ok": true, "detail": d}),
                Err(e) => json!({"ok": false, "error": e}),
            },
        );
    }
    body.insert("checks".into(), serde_json::Value::Object(detail));
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        tracing::warn!(failing = ?failing, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(serde_json::Value::Object(body))).into_response()
}

async fn metrics_page(State(ops): State<Ops>) -> Response {
    let text = ops.render().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// One access-log line per request (method, path without its query, status, duration,
/// integration, request id) and the SCIM request metrics. Runs inside the request-id
/// layer, so the id is the caller's `x-request-id` or a new one.
pub async fn access_log(State(ops): State<Ops>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // The path, never the query: filters carry user names.
    let path = req.uri().path().to_owned();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let integration = ops.integration_of(&path).to_owned();
    // Methods are an open set on the wire: only the standard ones become labels.
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    tracing::info!(
        target: "usher::access",
        method = %method,
        path = %path,
        status,
        duration_ms = took.as_millis() as u64,
        integration = %integration,
        request_id = %id,
        "request"
    );
    if path.starts_with("/scim/") {
        metrics::counter!("usher_scim_requests_total", "integration" => integration.clone(), "method" => method_label, "status" => status.to_string())
            .increment(1);
        metrics::histogram!("usher_scim_request_duration_seconds", "integration" => integration, "method" => method_label)
            .record(took.as_secs_f64());
    }
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorder_installs_once() {
        let a = super::metrics_handle().expect("recorder");
        let b = super::metrics_handle().expect("recorder again");
        metrics::counter!("usher_test_total").increment(2);
        assert!(a.render().contains("usher_test_total 2"));
        assert!(b.render().contains("usher_test_total 2"));
    }
}
