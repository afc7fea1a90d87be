//! Pages people open in a browser and the console's REST API: the invite claim page
//! (`claim`), and the admin console (`docs/console.md`): sign-in with the company's
//! OpenID provider or the break-glass account (`session`, `oidc`).
//!
//! The console reads through the store's public face only; it never touches SCIM
//! handlers or the browser.

mod api;
mod claim;
pub(crate) mod oidc;
mod pages;
pub mod queries;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::config::{Config, ConsoleSettings};
use crate::store::{Store, StoreError};

pub use api::ApiDoc;
pub(crate) use session::random_token;
pub use session::{LOCAL_ACCOUNT, Signed, hash_password};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the OpenID provider: {0}")]
    Oidc(String),
    #[error("page template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("password hashing: {0}")]
    Password(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        // The cause goes to the log; the person sees that it is on our side.
        tracing::error!(error = %self, "console request failed");
        let status = match self {
            WebError::Oidc(_) => axum::http::StatusCode::BAD_GATEWAY,
            _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        };
        (
            status,
            Html(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Try again</title></head>\
                 <body><main><h1>Try again</h1><p>Usher could not answer this request; the reason is in its log.</p></main></body></html>",
            ),
        )
            .into_response()
    }
}

/// What every console handler shares.
#[derive(Clone)]
pub struct WebState(Arc<Inner>);

/// Integration id → its loaded playbook (the engine's face).
pub type Playbooks = crate::engine::Playbooks;

pub struct Inner {
    pub(crate) store: Store,
    pub(crate) console: ConsoleSettings,
    /// Behind HTTPS (the public URL says so): cookies get `Secure` and the `__Host-` prefix.
    pub(crate) secure: bool,
    pub(crate) public_url: String,
    pub(crate) templates: minijinja::Environment<'static>,
    pub(crate) oidc: Option<oidc::Oidc>,
    pub(crate) integrations: Vec<crate::config::IntegrationConfig>,
    /// Where screenshots are kept (the engine's `evidence_dir`).
    pub(crate) evidence_dir: std::path::PathBuf,
    /// 0: this configuration runs no engine (integrations are `gateway only`).
    pub(crate) engine_workers: usize,
    /// Integration id → its playbook (known where this process runs the engine): the
    /// actions it defines, its role mapping for the access report.
    pub(crate) playbooks: Playbooks,
}

impl std::ops::Deref for WebState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("message.html", include_str!("templates/message.html")),
        (
            "integrations.html",
            include_str!("templates/integrations.html"),
        ),
        ("tabs.html", include_str!("templates/tabs.html")),
        (
            "integration.html",
            include_str!("templates/integration.html"),
        ),
        ("activity.html", include_str!("templates/activity.html")),
        ("event.html", include_str!("templates/event.html")),
    ] {
        // The templates are compiled in; a broken one fails the unit test below.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(error = %e, template = name, "console template does not compile");
        }
    }
    env
}

/// Every page and the console under one router. `public_url` is where people reach Usher.
pub fn router(config: &Config, store: Store, public_url: &str, playbooks: Playbooks) -> Router {
    let public_url = public_url.trim_end_matches('/').to_owned();
    let state = WebState(Arc::new(Inner {
        store: store.clone(),
        console: config.console.clone(),
        secure: public_url.starts_with("https://"),
        oidc: config
            .console
            .oidc
            .clone()
            .map(|o| oidc::Oidc::new(o, &public_url)),
        public_url,
        templates: templates(),
        integrations: config.integrations.clone(),
        evidence_dir: crate::engine::evidence_dir(config),
        engine_workers: config.engine.workers,
        playbooks,
    }));
    let console = Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::home))
        .route("/console/activity", get(pages::all_activity))
        .route("/console/events/stream", get(pages::event_stream))
        .route("/console/events/{seq}", get(pages::event_detail))
        .route("/console/integrations/{id}", get(pages::integration_root))
        .route(
            "/console/integrations/{id}/activity",
            get(pages::integration_activity),
        )
        .route(
            "/console/integrations/{id}/{tab}",
            get(pages::integration_tab),
        )
        .route(
            "/console/integrations/{id}/jobs/{job}/retry",
            post(pages::retry_job_form),
        )
        .route(
            "/console/integrations/{id}/users/{user}/retry",
            post(pages::retry_user_form),
        )
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in_local),
        )
        .route("/console/sign-in/oidc", get(oidc::begin))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/sign-out", post(session::sign_out))
        .merge(api::routes())
        .route(
            "/console/static/usher.css",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/css")],
                    include_str!("static/usher.css"),
                )
            }),
        )
        .route(
            "/console/static/console.js",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/javascript")],
                    include_str!("static/console.js"),
                )
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::guard,
        ))
        .with_state(state);
    Router::new().merge(claim::router(store)).merge(console)
}

impl WebState {
    /// Renders a template with `ctx`.
    pub(crate) fn render(
        &self,
        name: &str,
        ctx: minijinja::Value,
    ) -> Result<Html<String>, WebError> {
        Ok(Html(self.templates.get_template(name)?.render(ctx)?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::templates();
        for name in [
            "base.html",
            "sign_in.html",
            "message.html",
            "integrations.html",
            "tabs.html",
            "integration.html",
            "activity.html",
            "event.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
