//! Console sessions: the cookie, the CSRF guard, the break-glass sign-in and sign-out.
//!
//! The cookie holds 32 random bytes; the database keeps only their SHA-256, with the
//! person, their role, a CSRF token and the times the idle and absolute timeouts are
//! measured from. Every request that changes state (any method but GET/HEAD) must
//! carry the session's CSRF token, in the `X-CSRF-Token` header (API, htmx) or the
//! `_csrf` form field (plain forms); `SameSite=Lax` alone would not cover top-level
//! POSTs from older browsers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{WebError, WebState};
use crate::audit::{Actor, NewEvent, kinds};
use crate::config::ConsoleRole;
use crate::digest::sha256_hex;
use crate::store::{ConsoleSession, NewSession};

/// The break-glass account's one name.
pub const LOCAL_ACCOUNT: &str = "admin";
/// A pre-sign-in cookie binding a sign-in form (or an OpenID round trip) to the browser
/// that started it, against login CSRF.
pub(crate) const LOGIN_COOKIE: &str = "usher_login";

/// The largest form body the CSRF guard reads to find `_csrf`.
const MAX_FORM_BYTES: usize = 64 * 1024;

impl WebState {
    pub(crate) fn session_cookie_name(&self) -> &'static str {
        // `__Host-` makes the browser refuse the cookie unless Secure, Path=/ and no Domain.
        if self.secure {
            "__Host-usher_session"
        } else {
            "usher_session"
        }
    }

    pub(crate) fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .build()
    }

    /// Opens a session for a person who proved who they are; returns the cookie to set.
    pub(crate) async fn open_session(
        &self,
        person: &str,
        display_name: &str,
        role: ConsoleRole,
        how: &str,
    ) -> Result<Cookie<'static>, WebError> {
        let value = random_token();
        let csrf = random_token();
        let id_hash = sha256_hex(value.as_bytes());
        self.store
            .create_session(
                &NewSession {
                    id_hash: &id_hash,
                    person,
                    display_name,
                    role: role.as_str(),
                    csrf_token: &csrf,
                },
                self.console
                    .absolute_timeout
                    .max(self.console.sign_in_window),
                &NewEvent {
                    actor: Actor::Admin(person.to_owned()),
                    event_type: kinds::CONSOLE_SIGN_IN,
                    target: None,
                    integration_id: None,
                    detail: json!({"role": role.as_str(), "via": how}),
                },
            )
            .await?;
        Ok(self.cookie(self.session_cookie_name(), value))
    }

    /// Whether `keys` are over the sign-in rate limit.
    pub(crate) async fn sign_in_limited(&self, keys: &[&str]) -> Result<bool, WebError> {
        for key in keys {
            let n = self
                .store
                .sign_in_failures(key, self.console.sign_in_window)
                .await?;
            if n >= i64::from(self.console.sign_in_attempts) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Renders the page that says a sign-in was refused, and why.
    pub(crate) fn refused(&self, status: StatusCode, message: &str) -> Response {
        match self.render(
            "message.html",
            minijinja::context! {
                title => "Not signed in",
                message => message,
                link => minijinja::context! { href => "/console/sign-in", text => "Back to sign-in" },
            },
        ) {
            Ok(page) => (status, page).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// 32 random bytes, URL-safe base64.
pub(crate) fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An argon2id hash (PHC string) of a password, for `usher admin set-password`.
pub fn hash_password(password: &str) -> Result<String, WebError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| WebError::Password(e.to_string()))
}

fn password_matches(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// The signed-in person of a request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub session: ConsoleSession,
    pub role: ConsoleRole,
    /// SHA-256 of the cookie: the session's key in the store.
    pub(crate) id_hash: String,
}

impl Signed {
    /// Who the audit trail names for what this person does.
    pub fn actor(&self) -> Actor {
        Actor::Admin(self.session.person.clone())
    }

    /// What templates show about the person.
    pub fn view(&self) -> minijinja::Value {
        minijinja::context! {
            display_name => &self.session.display_name,
            role => self.role.as_str(),
            csrf => &self.session.csrf_token,
        }
    }
}

/// Why a request has no usable session.
pub enum NotSignedIn {
    /// No cookie, or a session that ended or timed out.
    Missing {
        api: bool,
        path: String,
    },
    Failed(WebError),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Missing { api: true, .. } => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "sign in first: no live console session"})),
            )
                .into_response(),
            NotSignedIn::Missing { api: false, path } => {
                let next: String = url_encode(&path);
                Redirect::to(&format!("/console/sign-in?next={next}")).into_response()
            }
            NotSignedIn::Failed(e) => e.into_response(),
        }
    }
}

fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

async fn lookup(state: &WebState, parts: &Parts) -> Result<Signed, NotSignedIn> {
    let missing = || NotSignedIn::Missing {
        api: parts.uri.path().starts_with("/api/"),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    };
    let jar = CookieJar::from_headers(&parts.headers);
    let Some(cookie) = jar.get(state.session_cookie_name()) else {
        return Err(missing());
    };
    let id_hash = sha256_hex(cookie.value().as_bytes());
    let session = state
        .store
        .live_session(
            &id_hash,
            state.console.idle_timeout,
            state.console.absolute_timeout,
        )
        .await
        .map_err(|e| NotSignedIn::Failed(e.into()))?
        .ok_or_else(missing)?;
    // A role this build no longer knows signs nobody in.
    let role = ConsoleRole::parse(&session.role).ok_or_else(missing)?;
    Ok(Signed {
        session,
        role,
        id_hash,
    })
}

impl FromRequestParts<WebState> for Signed {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Signed, NotSignedIn> {
        if let Some(s) = parts.extensions.get::<Signed>() {
            return Ok(s.clone());
        }
        let s = lookup(state, parts).await?;
        parts.extensions.insert(s.clone());
        Ok(s)
    }
}

/// Paths a state-changing request may reach without a session (they check their own
/// proof: the login cookie, the OpenID state, the claim capability).
fn open_path(path: &str) -> bool {
    path == "/console/sign-in" || path.starts_with("/claim/")
}

/// Every state-changing request must come from a live session and carry its CSRF token.
pub async fn guard(State(state): State<WebState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) || open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let signed = match lookup(&state, &parts).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let header = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_form = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (token, body) = match header {
        Some(t) => (Some(t), body),
        None if is_form => {
            let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
                Ok(b) => b,
                Err(_) => {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response();
                }
            };
            let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|fields| fields.into_iter().find(|(k, _)| k == "_csrf"))
                .map(|(_, v)| v);
            (token, axum::body::Body::from(bytes))
        }
        None => (None, body),
    };
    let ok =
        token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(signed.session.csrf_token.as_bytes())));
    if !ok {
        let api = parts.uri.path().starts_with("/api/");
        let message =
            "the request lacks this session's CSRF token (X-CSRF-Token header or _csrf field)";
        return if api {
            (StatusCode::FORBIDDEN, Json(json!({"error": message}))).into_response()
        } else {
            (StatusCode::FORBIDDEN, format!("Forbidden: {message}\n")).into_response()
        };
    }
    parts.extensions.insert(signed);
    next.run(Request::from_parts(parts, body)).await
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    pub(crate) next: Option<String>,
}

/// Only a local path may be the target after sign-in (no open redirect).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/console/".to_owned(),
    }
}

pub async fn sign_in_page(
    State(state): State<WebState>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Result<Response, WebError> {
    let login_token = random_token();
    let page = state.render(
        "sign_in.html",
        minijinja::context! {
            title => "Sign in",
            oidc => state.oidc.is_some(),
            break_glass => state.console.break_glass,
            login_token => &login_token,
            next => safe_next(q.next.as_deref()),
        },
    )?;
    let jar = jar.add(state.cookie(LOGIN_COOKIE, login_token));
    Ok((jar, page).into_response())
}

#[derive(Deserialize)]
pub struct LocalSignIn {
    name: String,
    password: String,
    login_token: String,
    #[serde(default)]
    next: Option<String>,
}

/// The client's address, for the rate limit (the proxy's when behind one).
pub(crate) fn client_key(parts: &axum::http::Extensions) -> String {
    parts
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| format!("ip:{}", c.0.ip()))
        .unwrap_or_else(|| "ip:unknown".into())
}

pub async fn sign_in_local(
    State(state): State<WebState>,
    jar: CookieJar,
    ext: axum::http::Extensions,
    Form(form): Form<LocalSignIn>,
) -> Result<Response, WebError> {
    let bound = jar
        .get(LOGIN_COOKIE)
        .is_some_and(|c| bool::from(c.value().as_bytes().ct_eq(form.login_token.as_bytes())));
    if !bound {
        return Ok(state.refused(
            StatusCode::FORBIDDEN,
            "This sign-in form was not opened in this browser; open the sign-in page again.",
        ));
    }
    if !state.console.break_glass {
        return Ok(state.refused(
            StatusCode::FORBIDDEN,
            "The break-glass account is off (console.break_glass in usher.yaml).",
        ));
    }
    let ip = client_key(&ext);
    let name_key = format!("local:{}", form.name);
    if state.sign_in_limited(&[&ip, &name_key]).await? {
        return Ok(state.refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins; wait a few minutes and try again.",
        ));
    }
    let hash = if form.name == LOCAL_ACCOUNT {
        state.store.local_password(LOCAL_ACCOUNT).await?
    } else {
        None
    };
    let password = form.password;
    let ok = match hash {
        // argon2 is slow on purpose: off the async threads.
        Some(hash) => tokio::task::spawn_blocking(move || password_matches(&password, &hash))
            .await
            .unwrap_or(false),
        None => false,
    };
    if !ok {
        state
            .store
            .record_sign_in_failure(
                &[&ip, &name_key],
                &NewEvent {
                    actor: Actor::System,
                    event_type: kinds::CONSOLE_SIGN_IN_REFUSED,
                    target: Some(name_key.clone()),
                    integration_id: None,
                    detail: json!({"via": "break-glass", "why": "wrong name or password"}),
                },
            )
            .await?;
        return Ok(state.refused(StatusCode::UNAUTHORIZED, "Wrong name or password."));
    }
    let cookie = state
        .open_session(
            &format!("console:local:{LOCAL_ACCOUNT}"),
            "Break-glass admin",
            ConsoleRole::Owner,
            "break-glass",
        )
        .await?;
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/"))
        .add(cookie);
    Ok((jar, Redirect::to(&safe_next(form.next.as_deref()))).into_response())
}

pub async fn sign_out(
    State(state): State<WebState>,
    jar: CookieJar,
    signed: Signed,
) -> Result<Response, WebError> {
    if let Some(c) = jar.get(state.session_cookie_name()) {
        let id_hash = sha256_hex(c.value().as_bytes());
        state
            .store
            .end_session(
                &id_hash,
                &NewEvent {
                    actor: signed.actor(),
                    event_type: kinds::CONSOLE_SIGN_OUT,
                    target: None,
                    integration_id: None,
                    detail: json!({}),
                },
            )
            .await?;
    }
    let jar = jar.remove(Cookie::build(state.session_cookie_name()).path("/"));
    Ok((jar, Redirect::to("/console/sign-in")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches("correct horse battery staple", &h));
        assert!(!password_matches("wrong", &h));
        assert!(!password_matches("x", "not a hash"));
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/console/i/x")), "/console/i/x");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", ""] {
            assert_eq!(safe_next(Some(bad)), "/console/", "{bad}");
        }
        assert_eq!(safe_next(None), "/console/");
    }
}
