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

use crate::clock::SystemClock;
use crate::config::Config;
use crate::scim::{self, Gateway, ScimState};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
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
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, closes the store.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(());
        let r = self.task.await.unwrap_or(Ok(()));
        self.store.close().await;
        Ok(r?)
    }
}

/// The whole HTTP application over a store.
pub fn app(config: &Config, store: Store) -> Router {
    let gateways = config
        .integrations
        .iter()
        .filter_map(Gateway::from_config)
        .collect();
    let scim_state = ScimState::new(store, gateways, config.scim.clone());
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(scim::router(scim_state))
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

/// Opens the store, binds the listener and serves until `shutdown`.
pub async fn start(config: &Config) -> Result<Running, ServeError> {
    start_on(config, config.listen).await
}

/// Same as `start` on another address (tests pass port 0).
pub async fn start_on(config: &Config, addr: SocketAddr) -> Result<Running, ServeError> {
    let store = Store::connect(&config.database, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    // Outside the router, so that the rewritten path is the one routed.
    let app = tower::ServiceExt::<Request<axum::body::Body>>::map_request(
        app(config, store.clone()),
        canonicalise_scim_path,
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<Request<axum::body::Body>>::into_make_service(app),
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
        shutdown: tx,
        task,
    })
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
