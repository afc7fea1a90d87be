//! Single sign-on for apps without it (docs/sso.md): an identity-aware access proxy.
//!
//! Each SSO-enabled integration has its own host name; a request whose `Host` is one
//! is handled here, before any other route. A person without an SSO session is sent to
//! the company's OpenID provider (authorization code + PKCE, the console's client);
//! back here, the claim names them, and only an active, provisioned user of the
//! integration gets a session. Usher then signs them in to the app with the password it
//! set for them (the engine runs the playbook's `user_login` in the browser), keeps the
//! app's cookies in a server-side jar sealed with the vault key, and forwards their
//! requests to the app's `base_url` with those cookies. The app's `Set-Cookie` goes
//! into the jar, never to the browser; `Location` headers that point at `base_url` are
//! rewritten to the SSO host. Every request checks that the person is still an active
//! user: a leaver's next request is refused and the jar dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::audit::{Actor, NewEvent, kinds};
use crate::browser::{SessionCookie, SessionState};
use crate::config::{Config, SsoClaim};
use crate::digest::sha256_hex;
use crate::engine::SsoLogin;
use crate::store::{PendingLogin, ResourceType, Store};
use crate::vault::Vault;
use crate::web::oidc::Oidc;

/// Where the provider sends the browser back, on every SSO host.
pub const CALLBACK_PATH: &str = "/.usher/sso/callback";
/// The largest request body forwarded to an app, and the largest response returned.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long a sign-in may take at the provider.
const LOGIN_MAX_AGE: Duration = Duration::from_secs(600);

/// The host an HTTP request named, as the client sent it (before the edge fixes `Host`
/// for the other routes).
#[derive(Clone, Debug)]
pub struct RequestHost(pub String);

/// One integration's SSO host.
struct SsoApp {
    id: String,
    name: String,
    /// `scheme://host` people use.
    origin: String,
    base_url: String,
    claim: SsoClaim,
    idle: Duration,
    signed_out: regex::Regex,
    logout: Option<regex::Regex>,
    oidc: Oidc,
}

struct Inner {
    apps: HashMap<String, SsoApp>,
    store: Store,
    vault: Vault,
    login: SsoLogin,
    http: reqwest::Client,
    secure: bool,
}

/// The SSO hosts of this process. Cheap to clone.
#[derive(Clone)]
pub struct SsoState(Arc<Inner>);

impl SsoState {
    /// The SSO hosts of `config` whose playbooks have `user_login`; `None` when there
    /// are none (or no provider): no request is routed here then.
    pub fn new(
        config: &Config,
        playbooks: &crate::engine::Playbooks,
        store: Store,
        vault: Vault,
        login: SsoLogin,
        secure: bool,
    ) -> Option<SsoState> {
        let settings = config.console.oidc.clone()?;
        let scheme = if secure { "https" } else { "http" };
        let mut apps = HashMap::new();
        for i in &config.integrations {
            let Some(sso) = &i.sso else { continue };
            let Some(ul) = playbooks.get(&i.id).and_then(|p| p.user_login.clone()) else {
                tracing::warn!(integration = %i.id, "sso is configured but the playbook has no user_login: the SSO host is off");
                continue;
            };
            let host = sso.host.trim().to_ascii_lowercase();
            let origin = format!("{scheme}://{host}");
            apps.insert(
                host,
                SsoApp {
                    id: i.id.clone(),
                    name: i.name.clone(),
                    oidc: Oidc::with_redirect(settings.clone(), format!("{origin}{CALLBACK_PATH}")),
                    origin,
                    base_url: i.base_url.trim_end_matches('/').to_owned(),
                    claim: sso.claim,
                    idle: sso.idle_timeout,
                    signed_out: ul.signed_out.regex.clone(),
                    logout: ul.logout.map(|p| p.regex),
                },
            );
        }
        if apps.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            // Redirects go back to the browser (rewritten), never followed here.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .ok()?;
        Some(SsoState(Arc::new(Inner {
            apps,
            store,
            vault,
            login,
            http,
            secure,
        })))
    }

    fn cookie_name(&self) -> &'static str {
        if self.0.secure {
            "__Host-usher_sso"
        } else {
            "usher_sso"
        }
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.0.secure {
            "__Host-usher_sso_login"
        } else {
            "usher_sso_login"
        }
    }

    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        // Host-only (no Domain): the cookie of one SSO host is never sent to another.
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.0.secure)
            .build()
    }
}

/// Routes a request for an SSO host here; any other goes on.
pub async fn dispatch(State(state): State<SsoState>, req: Request, next: Next) -> Response {
    let host = req
        .extensions()
        .get::<RequestHost>()
        .map(|h| h.0.clone())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .map(|h| h.to_ascii_lowercase());
    match host.as_deref().and_then(|h| state.0.apps.get(h)) {
        Some(app) => handle(&state, app, req).await,
        None => next.run(req).await,
    }
}

async fn handle(state: &SsoState, app: &SsoApp, req: Request) -> Response {
    let result = if req.uri().path() == CALLBACK_PATH {
        callback(state, app, req).await
    } else {
        proxy(state, app, req).await
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(integration = %app.id, error = %e, "single sign-on failed");
        page(
            StatusCode::BAD_GATEWAY,
            &app.name,
            "Something went wrong",
            "Usher could not complete this request. Try again in a moment.",
        )
    })
}

#[derive(Debug, thiserror::Error)]
enum SsoError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("the provider: {0}")]
    Oidc(String),
    #[error("the app: {0}")]
    App(String),
}

/// A small HTML page (refusals, errors): never a secret, never the app's content.
fn page(status: StatusCode, app: &str, title: &str, text: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · {a}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
<body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem\">\
<h1 id=\"sso-title\">{t}</h1><p id=\"sso-reason\">{x}</p><p><small>{a}, through Usher single sign-on</small></p></body></html>\n",
        t = esc(title),
        a = esc(app),
        x = esc(text),
    );
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn audit(state: &SsoState, app: &SsoApp, who: &str, kind: &'static str, detail: Value) {
    if let Err(e) = state
        .0
        .store
        .append_event(&NewEvent {
            actor: Actor::Person(who.to_owned()),
            event_type: kind,
            target: detail["user_id"].as_str().map(str::to_owned),
            integration_id: Some(app.id.clone()),
            detail,
        })
        .await
    {
        tracing::warn!(error = %e, "recording an SSO event failed");
    }
}

/// Sends the browser to the provider, to come back to `next` (a local path).
async fn begin(state: &SsoState, app: &SsoApp, next: &str) -> Result<Response, SsoError> {
    let (url, csrf, verifier, nonce) = app
        .oidc
        .authorize()
        .await
        .map_err(|e| SsoError::Oidc(e.to_string()))?;
    let browser = crate::web::random_token();
    state
        .0
        .store
        .begin_login(
            &csrf,
            &PendingLogin {
                browser_hash: sha256_hex(browser.as_bytes()),
                pkce_verifier: verifier,
                nonce,
                next_path: next.to_owned(),
            },
        )
        .await?;
    let jar = CookieJar::new().add(state.cookie(state.login_cookie_name(), browser));
    Ok((jar, Redirect::to(&url)).into_response())
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The provider sends the browser back here: the person is named by the claim, and
/// must be an active, provisioned user of the integration.
async fn callback(state: &SsoState, app: &SsoApp, req: Request) -> Result<Response, SsoError> {
    let refused = |why: &str| page(StatusCode::FORBIDDEN, &app.name, "Access refused", why);
    if let Some(e) = query_param(&req, "error") {
        return Ok(refused(&format!("The sign-in was not completed ({e}).")));
    }
    let (Some(code), Some(login_state)) = (query_param(&req, "code"), query_param(&req, "state"))
    else {
        return Ok(refused("The sign-in answer lacks a code."));
    };
    let jar = CookieJar::from_headers(req.headers());
    let pending = state
        .0
        .store
        .take_login(&login_state, LOGIN_MAX_AGE)
        .await?;
    let bound = pending.as_ref().is_some_and(|p| {
        jar.get(state.login_cookie_name())
            .is_some_and(|c| sha256_hex(c.value().as_bytes()) == p.browser_hash)
    });
    let Some(pending) = pending.filter(|_| bound) else {
        return Ok(refused(
            "This sign-in was not begun in this browser, or took too long. Open the app again.",
        ));
    };
    let claims = match app
        .oidc
        .finish(code, pending.pkce_verifier, pending.nonce)
        .await
    {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(integration = %app.id, %why, "an SSO sign-in failed at the provider");
            return Ok(refused("The sign-in could not be verified."));
        }
    };
    let claim = match app.claim {
        SsoClaim::Email => "email",
        SsoClaim::PreferredUsername => "preferred_username",
    };
    let Some(who) = claims.get(claim).and_then(Value::as_str).map(str::to_owned) else {
        return Ok(refused(&format!(
            "The provider did not say who you are (no `{claim}` claim)."
        )));
    };
    match person(state, app, &who).await? {
        Ok(user_id) => {
            let sid = crate::web::random_token();
            let hash = sha256_hex(sid.as_bytes());
            state
                .0
                .store
                .sso_session_open(&hash, &app.id, &user_id, &who)
                .await?;
            audit(
                state,
                app,
                &who,
                kinds::SSO_SIGN_IN,
                json!({"user_id": user_id}),
            )
            .await;
            let jar = jar
                .remove(Cookie::build(state.login_cookie_name()).path("/"))
                .add(state.cookie(state.cookie_name(), sid));
            let next = if pending.next_path.starts_with('/') && !pending.next_path.starts_with("//")
            {
                pending.next_path
            } else {
                "/".to_owned()
            };
            Ok((jar, Redirect::to(&next)).into_response())
        }
        Err(why) => {
            audit(state, app, &who, kinds::SSO_REFUSED, json!({"reason": why})).await;
            Ok(refused(&why))
        }
    }
}

/// The SCIM user of the integration that `who` names, if they may use the app:
/// `Ok(Ok(id))`, or `Ok(Err(why))`.
async fn person(
    state: &SsoState,
    app: &SsoApp,
    who: &str,
) -> Result<Result<String, String>, SsoError> {
    let users = match app.claim {
        SsoClaim::PreferredUsername => {
            state
                .0
                .store
                .list_resources(
                    &app.id,
                    ResourceType::User,
                    Some((crate::store::LookupColumn::NameKey, who)),
                )
                .await?
        }
        SsoClaim::Email => {
            let all = state
                .0
                .store
                .list_resources(&app.id, ResourceType::User, None)
                .await?;
            all.into_iter()
                .filter(|u| {
                    u.data["emails"].as_array().is_some_and(|es| {
                        es.iter().any(|e| {
                            e["value"]
                                .as_str()
                                .is_some_and(|v| v.eq_ignore_ascii_case(who))
                        })
                    }) || u.data["userName"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(who))
                })
                .collect()
        }
    };
    let Some(u) = users.into_iter().next() else {
        return Ok(Err(format!(
            "{who} is not a user of {} in Usher: ask your administrator for access.",
            app.name
        )));
    };
    Ok(may_use(state, app, &u.id, &u.data).await?.map(|()| u.id))
}

/// Whether SCIM user `id` (resource `data`) may use the app now: active, and its
/// account provisioned.
async fn may_use(
    state: &SsoState,
    app: &SsoApp,
    id: &str,
    data: &Value,
) -> Result<Result<(), String>, SsoError> {
    let active = data["active"]
        .as_bool()
        .or_else(|| {
            data["active"]
                .as_str()
                .map(|a| a.eq_ignore_ascii_case("true"))
        })
        .unwrap_or(true);
    if !active {
        return Ok(Err(format!("Your access to {} has ended.", app.name)));
    }
    if state.0.store.app_account(&app.id, id).await?.is_none() {
        return Ok(Err(format!(
            "Your account in {} is not ready yet. Try again in a few minutes.",
            app.name
        )));
    }
    Ok(Ok(()))
}

/// Everything else on an SSO host: the person's requests, forwarded to the app.
async fn proxy(state: &SsoState, app: &SsoApp, req: Request) -> Result<Response, SsoError> {
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let jar = CookieJar::from_headers(req.headers());
    let session = match jar.get(state.cookie_name()) {
        Some(c) => {
            let hash = sha256_hex(c.value().as_bytes());
            state
                .0
                .store
                .sso_session(&hash, &app.id, app.idle)
                .await?
                .map(|s| (hash, s))
        }
        None => None,
    };
    let Some((hash, session)) = session else {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return begin(state, app, &path_q).await;
        }
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            &app.name,
            "Signed out",
            "Your session has ended. Open the app again to sign in.",
        ));
    };
    let who = session.subject.clone();
    // A leaver is refused at their next request, whatever the app knows.
    let data = state
        .0
        .store
        .get_resource(&app.id, ResourceType::User, &session.user_id)
        .await?
        .map(|r| r.data);
    let allowed = match &data {
        Some(d) => may_use(state, app, &session.user_id, d).await?,
        None => Err(format!("Your access to {} has ended.", app.name)),
    };
    if let Err(why) = allowed {
        state.0.store.sso_session_end(&hash).await?;
        audit(
            state,
            app,
            &who,
            kinds::SSO_FORCED_SIGN_OUT,
            json!({"user_id": session.user_id, "reason": why}),
        )
        .await;
        let jar = jar.remove(Cookie::build(state.cookie_name()).path("/"));
        return Ok((
            jar,
            page(StatusCode::FORBIDDEN, &app.name, "Access refused", &why),
        )
            .into_response());
    }

    if is_websocket(req.headers()) {
        return websocket(state, app, req, &hash, &session.user_id, &session.jar, &who).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| SsoError::App(format!("request body larger than {MAX_BODY} bytes")))?;
    let mut cookies = match &session.jar {
        Some(sealed) => open_jar(state, &hash, sealed)?,
        None => app_sign_in(state, app, &hash, &session.user_id, &who).await?,
    };
    let mut signed_in_now = session.jar.is_none();
    let signing_out = app.logout.as_ref().is_some_and(|l| l.is_match(&path_q));
    let resp = loop {
        let resp = forward(state, app, &parts, &path_q, body.clone(), &cookies).await?;
        // The app's sign-out sends to its sign-in page too: that is no expired session.
        let expired = !signing_out
            && resp.status().is_redirection()
            && resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .is_some_and(|l| app.signed_out.is_match(l));
        if expired && !signed_in_now {
            // The app's session ended: sign in again, unseen, and send the request again.
            tracing::info!(integration = %app.id, "the app session of an SSO user ended; signing in again");
            cookies = app_sign_in(state, app, &hash, &session.user_id, &who).await?;
            signed_in_now = true;
            continue;
        }
        break resp;
    };
    if take_cookies(
        &mut cookies,
        resp.headers(),
        state.0.store.clock().now().timestamp(),
    ) {
        let sealed = seal_jar(state, &hash, &cookies)?;
        state
            .0
            .store
            .sso_session_set_jar(&hash, Some(&sealed))
            .await?;
    }
    let mut out = Response::builder().status(resp.status());
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if is_hop_by_hop(name) || name == header::SET_COOKIE || name == header::CONTENT_LENGTH {
            continue;
        }
        if name == header::LOCATION {
            if let Some(v) = value
                .to_str()
                .ok()
                .map(|l| rewrite_location(l, &app.base_url, &app.origin))
                .and_then(|l| HeaderValue::from_str(&l).ok())
            {
                headers.append(name.clone(), v);
            }
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    let response = if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(SsoError::App(format!(
            "response larger than {MAX_BODY} bytes"
        )));
    } else {
        let mut seen = 0usize;
        let stream = resp.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len();
            if seen > MAX_BODY {
                return Err(std::io::Error::other("response too large"));
            }
            Ok(chunk)
        });
        out.body(Body::from_stream(stream))
            .map_err(|e| SsoError::App(e.to_string()))?
    };
    if signing_out {
        // The app's sign-out (forwarded, so the app ends its session) ends the SSO
        // session for this app too. The person sees that they are out, rather than
        // the app's sign-in page, which would sign them straight back in.
        drop(response);
        state.0.store.sso_session_end(&hash).await?;
        audit(
            state,
            app,
            &who,
            kinds::SSO_SIGN_OUT,
            json!({"user_id": session.user_id}),
        )
        .await;
        let jar = jar.remove(Cookie::build(state.cookie_name()).path("/"));
        return Ok((
            jar,
            page(
                StatusCode::OK,
                &app.name,
                "Signed out",
                &format!(
                    "You have signed out of {}. Open it again to sign in.",
                    app.name
                ),
            ),
        )
            .into_response());
    }
    Ok(response)
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A WebSocket: accepted from the browser, opened to the app with the person's
/// cookies, and the messages pumped both ways (each at most `MAX_BODY` bytes).
async fn websocket(
    state: &SsoState,
    app: &SsoApp,
    req: Request,
    hash: &str,
    user_id: &str,
    jar: &Option<String>,
    who: &str,
) -> Result<Response, SsoError> {
    use axum::extract::FromRequestParts;
    use axum::extract::ws::WebSocketUpgrade;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let cookies = match jar {
        Some(sealed) => open_jar(state, hash, sealed)?,
        None => app_sign_in(state, app, hash, user_id, who).await?,
    };
    let (mut parts, _) = req.into_parts();
    let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return Ok(page(
            StatusCode::BAD_REQUEST,
            &app.name,
            "Bad request",
            "This WebSocket request could not be accepted.",
        ));
    };
    let ws_base = if let Some(rest) = app.base_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!(
            "ws://{}",
            app.base_url
                .strip_prefix("http://")
                .unwrap_or(&app.base_url)
        )
    };
    let mut to_app = format!("{ws_base}{path_q}")
        .into_client_request()
        .map_err(|e| SsoError::App(format!("WebSocket request: {e}")))?;
    let path = parts.uri.path().to_owned();
    let cookie_header: Vec<String> = cookies
        .iter()
        .filter(|c| path.starts_with(if c.path.is_empty() { "/" } else { &c.path }))
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    if !cookie_header.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookie_header.join("; "))
    {
        to_app.headers_mut().insert(header::COOKIE, v);
    }
    if let Some(o) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|v| rewrite_location(v, &app.origin, &app.base_url))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        to_app.headers_mut().insert(header::ORIGIN, o);
    }
    let (app_ws, _) = tokio_tungstenite::connect_async(to_app)
        .await
        .map_err(|e| SsoError::App(format!("WebSocket to {}: {e}", app.base_url)))?;
    Ok(upgrade
        .max_message_size(MAX_BODY)
        .on_upgrade(move |browser_ws| pump(browser_ws, app_ws))
        .into_response())
}

/// Copies messages between the browser's WebSocket and the app's until one closes.
async fn pump(
    browser: axum::extract::ws::WebSocket,
    app: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use axum::extract::ws::{CloseFrame as ACloseFrame, Message as A};
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message as T;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;

    let (mut b_tx, mut b_rx) = browser.split();
    let (mut a_tx, mut a_rx) = app.split();
    let up = async {
        while let Some(Ok(m)) = b_rx.next().await {
            let out = match m {
                A::Text(t) => T::Text(t.to_string().into()),
                A::Binary(b) => T::Binary(b),
                A::Ping(b) => T::Ping(b),
                A::Pong(b) => T::Pong(b),
                A::Close(f) => T::Close(f.map(|f| TCloseFrame {
                    code: f.code.into(),
                    reason: f.reason.to_string().into(),
                })),
            };
            if a_tx.send(out).await.is_err() {
                break;
            }
        }
        let _ = a_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = a_rx.next().await {
            let out = match m {
                T::Text(t) => A::Text(t.to_string().into()),
                T::Binary(b) => A::Binary(b),
                T::Ping(b) => A::Ping(b),
                T::Pong(b) => A::Pong(b),
                T::Close(f) => A::Close(f.map(|f| ACloseFrame {
                    code: f.code.into(),
                    reason: f.reason.to_string().into(),
                })),
                T::Frame(_) => continue,
            };
            if b_tx.send(out).await.is_err() {
                break;
            }
        }
        let _ = b_tx.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Signs the person in to the app through the engine and keeps the cookies.
async fn app_sign_in(
    state: &SsoState,
    app: &SsoApp,
    hash: &str,
    user_id: &str,
    who: &str,
) -> Result<Vec<SessionCookie>, SsoError> {
    let jar: SessionState = state
        .0
        .login
        .sign_in(&app.id, user_id, who)
        .await
        .map_err(|e| SsoError::App(e.to_string()))?;
    let sealed = seal_jar(state, hash, &jar.cookies)?;
    state
        .0
        .store
        .sso_session_set_jar(hash, Some(&sealed))
        .await?;
    Ok(jar.cookies)
}

fn seal_jar(state: &SsoState, hash: &str, cookies: &[SessionCookie]) -> Result<String, SsoError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(&SessionState {
            cookies: cookies.to_vec(),
        })
        .map_err(|e| SsoError::App(e.to_string()))?,
    );
    Ok(state.0.vault.seal_blob(hash, &plain)?)
}

fn open_jar(state: &SsoState, hash: &str, sealed: &str) -> Result<Vec<SessionCookie>, SsoError> {
    let plain = state.0.vault.open_blob(hash, sealed)?;
    let jar: SessionState =
        serde_json::from_slice(&plain).map_err(|e| SsoError::App(e.to_string()))?;
    Ok(jar.cookies)
}

/// Sends one request to the app with the person's cookies.
async fn forward(
    state: &SsoState,
    app: &SsoApp,
    parts: &axum::http::request::Parts,
    path_q: &str,
    body: Bytes,
    cookies: &[SessionCookie],
) -> Result<reqwest::Response, SsoError> {
    let url = format!("{}{path_q}", app.base_url);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name)
            || name == header::HOST
            || name == header::COOKIE
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        // Apps that check where a form came from see their own origin.
        if (name == header::ORIGIN || name == header::REFERER)
            && let Some(v) = value
                .to_str()
                .ok()
                .map(|v| rewrite_location(v, &app.origin, &app.base_url))
                .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(name.clone(), v);
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let path = parts.uri.path();
    let cookie_header: Vec<String> = cookies
        .iter()
        .filter(|c| path.starts_with(if c.path.is_empty() { "/" } else { &c.path }))
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    if !cookie_header.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookie_header.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
    state
        .0
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| SsoError::App(format!("{}: {e}", app.base_url)))
}

/// Puts the app's `Set-Cookie`s into the jar. True when it changed.
fn take_cookies(jar: &mut Vec<SessionCookie>, headers: &HeaderMap, now: i64) -> bool {
    let mut changed = false;
    for v in headers.get_all(header::SET_COOKIE) {
        let Some(c) = v
            .to_str()
            .ok()
            .and_then(|s| Cookie::parse(s.to_owned()).ok())
        else {
            continue;
        };
        let path = c.path().unwrap_or("/").to_owned();
        jar.retain(|k| !(k.name == c.name() && k.path == path));
        let gone = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
            || c.expires_datetime()
                .is_some_and(|t| t.unix_timestamp() < now);
        if !gone {
            jar.push(SessionCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                domain: String::new(),
                path,
                expires: c.expires_datetime().map(|t| t.unix_timestamp() as f64),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
            });
        }
        changed = true;
    }
    changed
}

/// `Location` (or `Origin`, `Referer`) pointing at `from` points at `to` instead.
fn rewrite_location(l: &str, from: &str, to: &str) -> String {
    match l.strip_prefix(from) {
        Some(rest) if rest.is_empty() || rest.starts_with(['/', '?', '#']) => format!("{to}{rest}"),
        _ => l.to_owned(),
    }
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), not forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_at_the_app_are_rewritten_to_the_sso_host_and_others_kept() {
        let (app, sso) = ("http://127.0.0.1:9000", "https://acme.sso.example");
        assert_eq!(
            rewrite_location("http://127.0.0.1:9000/me", app, sso),
            "https://acme.sso.example/me"
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:9000", app, sso),
            "https://acme.sso.example"
        );
        assert_eq!(
            rewrite_location("/login?next=%2Fme", app, sso),
            "/login?next=%2Fme"
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:90001/x", app, sso),
            "http://127.0.0.1:90001/x"
        );
        assert_eq!(
            rewrite_location("https://elsewhere.test/", app, sso),
            "https://elsewhere.test/"
        );
    }

    #[test]
    fn set_cookies_fill_replace_and_empty_the_jar() {
        let mut jar = Vec::new();
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=abc; Path=/; HttpOnly"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("pref=1; Path=/app"),
        );
        assert!(take_cookies(&mut jar, &h, 0));
        assert_eq!(jar.len(), 2);
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=def; Path=/"),
        );
        assert!(take_cookies(&mut jar, &h, 0));
        assert_eq!(
            jar.iter()
                .find(|c| c.name == "sid")
                .map(|c| c.value.as_str()),
            Some("def")
        );
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=; Path=/; Max-Age=0"),
        );
        assert!(take_cookies(&mut jar, &h, 0));
        assert!(jar.iter().all(|c| c.name != "sid"));
        assert!(!take_cookies(&mut jar, &HeaderMap::new(), 0));
    }

    #[test]
    fn hop_by_hop_headers_are_known() {
        assert!(is_hop_by_hop(&header::CONNECTION));
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE));
    }
}
