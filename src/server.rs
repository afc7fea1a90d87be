//! `usher serve`: one listener for every gateway, health, request ids and tracing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::get;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::audit::checkpoint::{CheckpointError, CheckpointKey, CheckpointSinks, CheckpointWriter};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{self, Engine, EngineError, EngineParams, Secrets};
use crate::ops::{Ops, OpsError};
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
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error("TLS: cannot use {cert} and {key}: {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A running server; dropping it does not stop it, call `shutdown`.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub engine: Option<Engine>,
    shutdown_grace: Duration,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    /// The `metrics_listen:` listener, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
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
        let _ = self.shutdown.send(true);
        if let Some(e) = self.engine {
            e.shutdown(self.shutdown_grace).await;
        }
        let r = self.task.await.unwrap_or(Ok(()));
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
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
/// `playbooks` (integration id → its loaded playbook): the console's Settings tab shows
/// its actions, the access report its role mapping.
pub fn app(
    config: &Config,
    store: Store,
    public_url: &str,
    ops: Ops,
    playbooks: crate::web::Playbooks,
    sso: Option<crate::sso::SsoState>,
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
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::ops::router(
            ops.clone(),
            config.metrics_listen.is_none(),
        ))
        .merge(scim::router(scim_state))
        .merge(crate::web::router(config, store, public_url, playbooks));
    // Requests for an SSO host never reach the routes above.
    let router = match sso {
        Some(s) => router.layer(axum::middleware::from_fn_with_state(
            s,
            crate::sso::dispatch,
        )),
        None => router,
    };
    router
        .layer(
            tower::ServiceBuilder::new()
                // Honours the caller's `x-request-id`, else makes one; sent back.
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req
                                .extensions()
                                .get::<RequestId>()
                                .and_then(|id| id.header_value().to_str().ok())
                                .unwrap_or("-");
                            // The path, never the query: filters carry user names.
                            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                        })
                        // The access log line (ops::access_log) replaces tower-http's own.
                        .on_request(())
                        .on_response(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn_with_state(
                    ops,
                    crate::ops::access_log,
                )),
        )
}

/// What the SCIM side builds absolute URLs (`meta.location`) from, fixed by the
/// configuration rather than by whoever sends the request: no forwarded header is
/// trusted. With `public_url` its scheme and host are used; else the request's Host
/// and the listener's own scheme.
#[derive(Clone)]
struct Edge {
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

impl Edge {
    fn new(public_url: Option<&str>, tls: bool) -> Edge {
        let parsed = public_url.and_then(|u| {
            let (scheme, rest) = u.split_once("://")?;
            let host = rest.split('/').next().filter(|h| !h.is_empty())?;
            Some((
                scheme.to_ascii_lowercase(),
                HeaderValue::from_str(host).ok()?,
            ))
        });
        match parsed {
            Some((scheme, host)) => Edge {
                proto: HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
                host: Some(host),
            },
            None => Edge {
                proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
                host: None,
            },
        }
    }

    fn apply<B>(&self, mut req: Request<B>) -> Request<B> {
        // Single sign-on routes by the host the client named (docs/sso.md).
        if let Some(host) = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| crate::sso::RequestHost(h.to_owned()))
        {
            req.extensions_mut().insert(host);
        }
        let h = req.headers_mut();
        for name in ["forwarded", "x-forwarded-host", "x-forwarded-for"] {
            h.remove(name);
        }
        h.insert("x-forwarded-proto", self.proto.clone());
        if let Some(host) = &self.host {
            h.insert(axum::http::header::HOST, host.clone());
        }
        canonicalise_scim_path(req)
    }
}

fn canonicalise_scim_path<B>(mut req: Request<B>) -> Request<B> {
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
    let tls = match &config.tls {
        Some(t) => Some(tls_config(t).await?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m)
                .await
                .map_err(|source| ServeError::Bind { addr: m, source })?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let playbooks_for_web = engine_parts
        .as_ref()
        .map(|(_, playbooks)| playbooks.clone())
        .unwrap_or_default();
    let sso_vault = match &engine_parts {
        Some((setup, _)) => match &setup.secrets {
            Secrets::Vault(v) => Some(v.clone()),
            Secrets::Fixed(_) => None,
        },
        None => None,
    };
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
    let ops = Ops::new(
        store.clone(),
        engine.as_ref().map(Engine::probe),
        config.integrations.iter().map(|i| i.id.clone()),
    )?;
    let sso = match (&engine, sso_vault) {
        (Some(e), Some(vault)) => crate::sso::SsoState::new(
            config,
            &playbooks_for_web,
            store.clone(),
            vault,
            e.sso_login(),
            public_url.starts_with("https://"),
        ),
        _ => None,
    };
    let router = app(
        config,
        store.clone(),
        &public_url,
        ops.clone(),
        playbooks_for_web,
        sso,
    );
    // Applied outside the router, so that the rewritten path is the one routed.
    let edge = Edge::new(config.public_url.as_deref(), tls.is_some());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let task = match tls {
        Some((rustls, files)) => {
            let handle = axum_server::Handle::new();
            {
                let handle = handle.clone();
                let rx = rx.clone();
                tokio::spawn(async move {
                    stopped(rx).await;
                    // Requests in flight get a moment; the engine has its own grace.
                    handle.graceful_shutdown(Some(Duration::from_secs(5)));
                });
            }
            tokio::spawn(reload_tls(rustls.clone(), files, rx.clone()));
            let server = axum_server::from_tcp_rustls(listener, rustls).handle(handle);
            // Outside the router, so that the rewritten path is the one routed.
            let app = tower::ServiceExt::<Request<_>>::map_request(router, move |r| edge.apply(r));
            tokio::spawn(async move {
                server
                    .serve(
                        axum::ServiceExt::<Request<_>>::into_make_service_with_connect_info::<
                            SocketAddr,
                        >(app),
                    )
                    .await
            })
        }
        None => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let rx = rx.clone();
            let app =
                tower::ServiceExt::<Request<axum::body::Body>>::map_request(router, move |r| {
                    edge.apply(r)
                });
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    // The client's address is the console's sign-in rate limit key.
                    axum::ServiceExt::<Request<axum::body::Body>>::into_make_service_with_connect_info::<
                        SocketAddr,
                    >(app),
                )
                .with_graceful_shutdown(stopped(rx))
                .await
            })
        }
    };
    let (metrics_addr, metrics_task) = match metrics_listener {
        Some(l) => {
            let maddr = l.local_addr()?;
            let router = crate::ops::metrics_router(ops);
            let rx = rx.clone();
            let t = tokio::spawn(async move {
                axum::serve(l, router)
                    .with_graceful_shutdown(stopped(rx))
                    .await
            });
            tracing::info!(addr = %maddr, "metrics listening");
            (Some(maddr), Some(t))
        }
        None => (None, None),
    };
    tracing::info!(%addr, tls = config.tls.is_some(), database = store.backend_name(), "usher listening");
    Ok(Running {
        addr,
        store,
        engine,
        shutdown_grace: config.engine.shutdown_grace,
        shutdown: tx,
        task,
        metrics_addr,
        metrics_task,
        checkpoints,
    })
}

/// The certificate files and when they last changed.
struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl TlsFiles {
    fn stamp(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

async fn tls_config(
    t: &crate::config::TlsSettings,
) -> Result<(axum_server::tls_rustls::RustlsConfig, TlsFiles), ServeError> {
    // One crypto provider for the process (ring, as reqwest uses); a second install is
    // refused harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert_file, &t.key_file)
        .await
        .map_err(|e| ServeError::Tls {
            cert: t.cert_file.display().to_string(),
            key: t.key_file.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok((
        config,
        TlsFiles {
            cert: t.cert_file.clone(),
            key: t.key_file.clone(),
        },
    ))
}

/// Reads the certificate and key again on SIGHUP and when either file changes (checked
/// every 2 s: certificate renewals are rare, and polling works on every file system and
/// in containers with mounted secrets). A bad pair keeps the one in use.
async fn reload_tls(
    rustls: axum_server::tls_rustls::RustlsConfig,
    files: TlsFiles,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = files.stamp();
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let why = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = hup_recv => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let now = files.stamp();
                if now == seen || now.is_none() {
                    continue;
                }
                "the files changed"
            }
        };
        seen = files.stamp();
        match rustls.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded ({why})")
            }
            Err(e) => tracing::error!(cert = %files.cert.display(), error = %e,
                "TLS certificate not reloaded ({why}); the previous one stays in use"),
        }
    }
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

/// Waits for Ctrl-C or SIGTERM, and logs which arrived.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let which = {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = ctrl_c.await;
                "SIGINT"
            }
        }
    };
    #[cfg(not(unix))]
    let which = {
        let _ = ctrl_c.await;
        "Ctrl-C"
    };
    tracing::info!(
        signal = which,
        "{which} received: stopping (running jobs are released after engine.shutdown_grace)"
    );
}

#[cfg(test)]
mod tests {
    use super::Edge;
    use axum::http::Request;

    fn apply(edge: &Edge, headers: &[(&str, &str)]) -> (String, Option<String>) {
        let mut b = Request::builder().uri("/scim/v2/g/users");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = edge.apply(b.body(()).expect("request"));
        let get = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(req.uri().path(), "/scim/v2/g/Users", "still canonicalised");
        assert!(get("x-forwarded-host").is_none() && get("forwarded").is_none());
        (get("x-forwarded-proto").expect("proto"), get("host"))
    }

    #[test]
    fn forwarded_headers_are_replaced_by_the_configuration() {
        let forged = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("host", "usher.internal:8080"),
        ];
        let plain = Edge::new(None, false);
        assert_eq!(
            apply(&plain, &forged),
            ("http".into(), Some("usher.internal:8080".into()))
        );
        let tls = Edge::new(None, true);
        assert_eq!(apply(&tls, &forged[..1]).0, "https");
        let public = Edge::new(Some("https://usher.example.com/base"), false);
        assert_eq!(
            apply(&public, &forged),
            ("https".into(), Some("usher.example.com".into()))
        );
        // Not a URL: the request's own Host and the listener's scheme.
        let odd = Edge::new(Some("usher.example.com"), false);
        assert_eq!(
            apply(&odd, &forged[2..]).1.as_deref(),
            Some("usher.internal:8080")
        );
    }
}
