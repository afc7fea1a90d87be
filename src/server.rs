//! `usher serve`: one listener for every gateway, health, request ids and tracing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::audit::checkpoint::{CheckpointError, CheckpointKey, CheckpointSinks, CheckpointWriter};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{self, Engine, EngineError, EngineParams, Secrets};
use crate::playbook::DriverConfig;
use crate::scim::{self, Gateway, ScimState, StagedHook};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the engine: {0}")]
    Engine(#[from] EngineError),
    #[error("audit checkpoints: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server; dropping it does not stop it, call `shutdown`.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub engine: Option<Engine>,
    shutdown_grace: Duration,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    checkpoints: Option<Checkpoints>,
}

/// The checkpoint writer's task and its stop signal.
struct Checkpoints {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, stops the engine (running jobs
    /// finish or are released), closes the store.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(());
        if let Some(e) = self.engine {
            e.shutdown(self.shutdown_grace).await;
        }
        let r = self.task.await.unwrap_or(Ok(()));
        // Last, so that the final checkpoint covers what the shutdown appended.
        if let Some(c) = self.checkpoints {
            let _ = c.stop.send(true);
            let _ = c.task.await;
        }
        self.store.close().await;
        Ok(r?)
    }
}

/// What the engine needs beyond the configuration file.
pub struct EngineSetup {
    /// Playbook paths are relative to it (the configuration file's folder).
    pub config_dir: std::path::PathBuf,
    pub secrets: Secrets,
    pub driver: DriverConfig,
}

/// The whole HTTP application over a store. `public_url` is where claim links point;
/// `playbook_actions` (integration id → the actions its playbook defines) is shown on
/// the console's Settings tab.
pub fn app(
    config: &Config,
    store: Store,
    public_url: &str,
    playbook_actions: std::collections::HashMap<String, Vec<String>>,
) -> Router {
    let gateways = config
        .integrations
        .iter()
        .filter_map(Gateway::from_config)
        .collect();
    let on_staged = staged_hook(config, store.clone(), public_url);
    let scim_state = ScimState::with_engine(
        store.clone(),
        gateways,
        config.scim.clone(),
        config.engine.sync_timeout,
        Some(on_staged),
    );
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(scim::router(scim_state))
        .merge(crate::web::router(config, store, public_url, playbook_actions))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .extensions()
                            .get::<RequestId>()
                            .and_then(|id| id.header_value().to_str().ok())
                            .unwrap_or("-");
                        // The path, never the query: filters carry user names.
                        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}

fn canonicalise_scim_path(mut req: Request<axum::body::Body>) -> Request<axum::body::Body> {
    if let Some(path) = scim::canonical_path(req.uri().path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Tells the webhooks about a staged joiner and their claim link; logs the link for
/// operators (it is a capability, so at info level only its path).
fn staged_hook(config: &Config, store: Store, public_url: &str) -> StagedHook {
    let webhooks = config.webhooks.clone();
    let public_url = public_url.trim_end_matches('/').to_owned();
    Arc::new(
        move |gateway: &str, user_id: &str, user_name: &str, token: &str| {
            let claim_url = format!("{public_url}/claim/{token}");
            tracing::info!(
                gateway,
                user = user_id,
                "joiner staged until they claim access"
            );
            let body = engine::webhook_envelope(
                "invite.staged",
                store.clock().now(),
                gateway,
                user_id,
                serde_json::json!({"userName": user_name, "claim_url": claim_url}),
            );
            let targets: Vec<String> = webhooks
                .iter()
                .filter(|w| engine::webhook_wants(w, "invite.staged"))
                .map(|w| w.url.clone())
                .collect();
            let store = store.clone();
            tokio::spawn(async move {
                for url in targets {
                    if let Err(e) = store.enqueue_webhook(&url, "invite.staged", &body).await {
                        tracing::warn!(error = %e, "queueing an invite webhook failed");
                    }
                }
            });
        },
    )
}

/// Opens the store, binds the listener and serves until `shutdown` (gateway only).
pub async fn start(config: &Config) -> Result<Running, ServeError> {
    start_on(config, config.listen).await
}

/// Same as `start` on another address (tests pass port 0).
pub async fn start_on(config: &Config, addr: SocketAddr) -> Result<Running, ServeError> {
    start_with(config, addr, None).await
}

/// Gateway and, with `engine`, the provisioning engine (`engine.workers` workers).
pub async fn start_with(
    config: &Config,
    addr: SocketAddr,
    engine_setup: Option<EngineSetup>,
) -> Result<Running, ServeError> {
    let store = Store::connect(&config.database, Arc::new(SystemClock)).await?;
    let checkpoints = start_checkpoints(config, &store)?;
    // Playbooks are checked before anything listens: a broken one stops the start.
    let engine_parts = match engine_setup {
        Some(setup) if config.engine.workers > 0 && !config.integrations.is_empty() => {
            let playbooks = engine::load_playbooks(config, &setup.config_dir)?;
            Some((setup, playbooks))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let playbook_actions = engine_parts
        .as_ref()
        .map(|(_, playbooks)| {
            playbooks
                .iter()
                .map(|(id, pb)| {
                    let names = pb.actions.keys().map(|a| a.as_str().to_owned()).collect();
                    (id.clone(), names)
                })
                .collect()
        })
        .unwrap_or_default();
    let engine = match engine_parts {
        Some((setup, playbooks)) => Some(
            Engine::start(EngineParams {
                store: store.clone(),
                settings: config.engine.clone(),
                integrations: config.integrations.clone(),
                playbooks,
                secrets: setup.secrets,
                webhooks: config.webhooks.clone(),
                evidence_dir: engine::evidence_dir(config),
                driver: setup.driver,
            })
            .await?,
        ),
        None => None,
    };
    // Outside the router, so that the rewritten path is the one routed.
    let app = tower::ServiceExt::<Request<axum::body::Body>>::map_request(
        app(config, store.clone(), &public_url, playbook_actions),
        canonicalise_scim_path,
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            // The client's address is the console's sign-in rate limit key.
            axum::ServiceExt::<Request<axum::body::Body>>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        })
        .await
    });
    tracing::info!(%addr, database = store.backend_name(), "usher listening");
    Ok(Running {
        addr,
        store,
        engine,
        shutdown_grace: config.engine.shutdown_grace,
        shutdown: tx,
        task,
        checkpoints,
    })
}

/// Starts the audit checkpoint writer when a checkpoint key is set: after appends (at
/// most every `audit.checkpoint_interval`, and every few intervals for appends by other
/// processes) it signs the chain head and writes it to the file, the log and the
/// webhooks that list `audit.checkpoint`.
fn start_checkpoints(config: &Config, store: &Store) -> Result<Option<Checkpoints>, ServeError> {
    let settings = &config.audit;
    let Some(key) = CheckpointKey::from_env_or_config(settings.checkpoint_key_file.as_deref())?
    else {
        // A file was asked for: running without it would silently drop the protection.
        if settings.checkpoint_file.is_some() {
            return Err(CheckpointError::NoKey.into());
        }
        return Ok(None);
    };
    let targets: Vec<String> = config
        .webhooks
        .iter()
        .filter(|w| w.events.iter().any(|e| e == "audit.checkpoint"))
        .map(|w| w.url.clone())
        .collect();
    let forward: Option<Arc<dyn Fn(String) + Send + Sync>> = if targets.is_empty() {
        None
    } else {
        let store = store.clone();
        Some(Arc::new(move |line: String| {
            let store = store.clone();
            let targets = targets.clone();
            tokio::spawn(async move {
                let body = format!("{{\"type\":\"audit.checkpoint\",\"checkpoint\":{line}}}");
                for url in targets {
                    if let Err(e) = store.enqueue_webhook(&url, "audit.checkpoint", &body).await {
                        tracing::warn!(error = %e, "queueing an audit checkpoint webhook failed");
                    }
                }
            });
        }))
    };
    let key_id = key.id().to_owned();
    let mut writer = CheckpointWriter::new(
        key,
        CheckpointSinks {
            file: settings.checkpoint_file.clone(),
            log: settings.checkpoint_log,
            forward,
        },
    );
    let interval = settings.checkpoint_interval.max(Duration::from_millis(10));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let store = store.clone();
    let clock = store.clock();
    let task = tokio::spawn(async move {
        let mut write = |head: Option<(i64, String)>| {
            if let Some((seq, hash)) = head {
                let at = crate::clock::format_time(clock.now());
                if let Err(e) = writer.write(seq, &hash, &at) {
                    tracing::error!(error = %e, "writing an audit checkpoint failed");
                }
            }
        };
        loop {
            let stopping = tokio::select! {
                _ = crate::audit::checkpoint::appended() => false,
                _ = tokio::time::sleep(interval * 5) => false,
                _ = stopped.changed() => true,
            };
            if !stopping {
                // Let a burst of appends (and their commits) land: one checkpoint for all.
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {},
                    _ = stopped.changed() => {},
                }
            }
            match store.audit_head().await {
                Ok(head) => write(head),
                Err(e) => tracing::warn!(error = %e, "reading the audit chain head failed"),
            }
            if *stopped.borrow() {
                return;
            }
        }
    });
    tracing::info!(key = %key_id, "audit checkpoints on");
    Ok(Some(Checkpoints { stop, task }))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    // Give in-flight requests a moment; axum's graceful shutdown waits for them.
    tokio::time::sleep(Duration::from_millis(10)).await;
}
