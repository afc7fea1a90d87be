//! Sign-in with the company's OpenID provider: authorization code flow with PKCE
//! (`openidconnect`). The provider is discovered at the first sign-in (and again after
//! an hour, for rotated keys), so a provider that is down does not stop Usher.
//!
//! The sign-in under way (state, PKCE verifier, nonce) is kept in the database, so any
//! node can finish it, and is bound to the browser that began it by the login cookie.
//! The person's role comes from a claim of the ID token (`roles_claim`, e.g. `groups`),
//! mapped by `role_map`; nobody without a mapped value is let in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::{LOGIN_COOKIE, NextQuery, client_key, random_token, safe_next};
use super::{WebError, WebState};
use crate::audit::{Actor, NewEvent, kinds};
use crate::config::{ConsoleRole, OidcSettings};
use crate::digest::sha256_hex;
use crate::store::PendingLogin;

/// How long a sign-in may take at the provider.
const LOGIN_MAX_AGE: Duration = Duration::from_secs(600);
/// Discovery (and the provider's keys) are read again after this long.
const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(3600);

/// Every claim beyond the standard ones, so that the configured roles claim can be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

type TokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcClient = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StandardTokenResponse<TokenFields, CoreTokenType>,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The configured provider and what was discovered about it.
pub struct Oidc {
    settings: OidcSettings,
    redirect: String,
    http: openidconnect::reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Instant, Arc<CoreProviderMetadata>)>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings, public_url: &str) -> Oidc {
        Oidc {
            settings,
            redirect: format!("{public_url}/console/oidc/callback"),
            // No redirects: a token endpoint that redirects could leak the code (SSRF).
            http: openidconnect::reqwest::Client::builder()
                .redirect(openidconnect::reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                // Sign-ins are rare: a kept-alive connection would mostly be one the
                // provider has closed since (seen: "connection reset" on the token call).
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
            discovered: tokio::sync::Mutex::new(None),
        }
    }

    /// The same provider and client, with another redirect URL (an SSO host's).
    pub fn with_redirect(settings: OidcSettings, redirect: String) -> Oidc {
        let mut o = Oidc::new(settings, "");
        o.redirect = redirect;
        o
    }

    /// Where to send the browser: (URL, state, PKCE verifier, nonce).
    pub async fn authorize(&self) -> Result<(String, String, String, String), WebError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, csrf, nonce) = request.url();
        Ok((
            url.to_string(),
            csrf.secret().clone(),
            verifier.secret().clone(),
            nonce.secret().clone(),
        ))
    }

    /// Exchanges the code and checks the ID token: its claims (`sub`, `email`,
    /// `preferred_username`, `name`) as a JSON object. `Err`: why, in words.
    pub async fn finish(
        &self,
        code: String,
        verifier: String,
        nonce: String,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| format!("token endpoint: {e}"))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| format!("the code exchange failed: {}", with_causes(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| "the provider sent no ID token".to_owned())?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce))
            .map_err(|e| format!("the ID token is not valid: {e}"))?;
        let mut out = serde_json::Map::new();
        out.insert("sub".into(), json!(claims.subject().as_str()));
        if let Some(e) = claims.email() {
            out.insert("email".into(), json!(e.as_str()));
        }
        if let Some(u) = claims.preferred_username() {
            out.insert("preferred_username".into(), json!(u.as_str()));
        }
        if let Some(n) = claims.name().and_then(|n| n.get(None)) {
            out.insert("name".into(), json!(n.as_str()));
        }
        Ok(out)
    }

    async fn metadata(&self) -> Result<Arc<CoreProviderMetadata>, WebError> {
        let mut cached = self.discovered.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_MAX_AGE
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| WebError::Oidc(format!("issuer URL: {e}")))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| WebError::Oidc(format!("discovery at {}: {e}", self.settings.issuer)))?;
        let m = Arc::new(m);
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    async fn client(&self) -> Result<OidcClient, WebError> {
        let m = self.metadata().await?;
        let secret = match &self.settings.client_secret_env {
            Some(var) => Some(ClientSecret::new(std::env::var(var).map_err(|_| {
                WebError::Oidc(format!("the client secret variable {var} is not set"))
            })?)),
            None => None,
        };
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| WebError::Oidc(format!("redirect URL: {e}")))?;
        Ok(OidcClient::from_provider_metadata(
            (*m).clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect))
    }

    /// The highest Usher role the claim's values map to.
    fn role_of(&self, claims: &serde_json::Map<String, Value>) -> Option<ConsoleRole> {
        let values: Vec<&str> = match claims.get(&self.settings.roles_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        values
            .iter()
            .filter_map(|v| self.settings.role_map.get(*v).copied())
            .max()
    }
}

/// Sends the browser to the provider.
pub async fn begin(
    State(state): State<WebState>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Result<Response, WebError> {
    let Some(oidc) = state.oidc.as_ref() else {
        return Ok(state.refused(
            StatusCode::NOT_FOUND,
            "Sign-in with an OpenID provider is not configured (console.oidc in usher.yaml).",
        ));
    };
    let client = oidc.client().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in &oidc.settings.scopes {
        if scope != "openid" {
            request = request.add_scope(Scope::new(scope.clone()));
        }
    }
    let (url, csrf, nonce) = request.url();
    let browser = random_token();
    state
        .store
        .begin_login(
            csrf.secret(),
            &PendingLogin {
                browser_hash: sha256_hex(browser.as_bytes()),
                pkce_verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
                next_path: safe_next(q.next.as_deref()),
            },
        )
        .await?;
    let jar = jar.add(state.cookie(LOGIN_COOKIE, browser));
    Ok((jar, Redirect::to(url.as_str())).into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here with a code.
pub async fn callback(
    State(state): State<WebState>,
    jar: CookieJar,
    ext: axum::http::Extensions,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, WebError> {
    let Some(oidc) = state.oidc.as_ref() else {
        return Ok(state.refused(StatusCode::NOT_FOUND, "OpenID sign-in is not configured."));
    };
    let ip = client_key(&ext);
    if state.sign_in_limited(&[&ip]).await? {
        return Ok(state.refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins; wait a few minutes and try again.",
        ));
    }
    if let Some(error) = q.error {
        let why = format!(
            "the provider refused: {error} {}",
            q.error_description.unwrap_or_default()
        );
        return refuse(&state, &ip, None, &why).await;
    }
    let (Some(code), Some(login_state)) = (q.code, q.state) else {
        return Ok(state.refused(
            StatusCode::BAD_REQUEST,
            "The provider's answer lacks a code.",
        ));
    };
    let pending = state.store.take_login(&login_state, LOGIN_MAX_AGE).await?;
    let bound = pending.as_ref().is_some_and(|p| {
        jar.get(LOGIN_COOKIE)
            .is_some_and(|c| sha256_hex(c.value().as_bytes()) == p.browser_hash)
    });
    let Some(mut pending) = pending.filter(|_| bound) else {
        return refuse(
            &state,
            &ip,
            None,
            "this sign-in was not begun in this browser, or took too long",
        )
        .await;
    };
    let client = oidc.client().await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| WebError::Oidc(format!("token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(std::mem::take(
            &mut pending.pkce_verifier,
        )))
        .request_async(&oidc.http)
        .await;
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                &state,
                &ip,
                None,
                &format!("the code exchange failed: {}", with_causes(&e)),
            )
            .await;
        }
    };
    let Some(id_token) = tokens.id_token() else {
        return refuse(&state, &ip, None, "the provider sent no ID token").await;
    };
    let nonce = Nonce::new(std::mem::take(&mut pending.nonce));
    let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                &state,
                &ip,
                None,
                &format!("the ID token is not valid: {e}"),
            )
            .await;
        }
    };
    let who = claims
        .email()
        .map(|e| e.as_str().to_owned())
        .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
        .unwrap_or_else(|| claims.subject().as_str().to_owned());
    let display = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| who.clone());
    let Some(role) = oidc.role_of(&claims.additional_claims().rest) else {
        return refuse(
            &state,
            &ip,
            Some(&who),
            &format!(
                "{who} has no Usher role: none of their `{}` values is mapped in console.oidc.role_map",
                oidc.settings.roles_claim
            ),
        )
        .await;
    };
    let cookie = state
        .open_session(&format!("console:{who}"), &display, role, "oidc")
        .await?;
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/"))
        .add(cookie);
    Ok((jar, Redirect::to(&safe_next(Some(&pending.next_path)))).into_response())
}

/// An error and its causes on one line (the crate's errors say little on their own).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

/// Records a refused sign-in (it counts against the rate limit) and says why.
async fn refuse(
    state: &WebState,
    ip: &str,
    who: Option<&str>,
    why: &str,
) -> Result<Response, WebError> {
    state
        .store
        .record_sign_in_failure(
            &[ip],
            &NewEvent {
                actor: Actor::System,
                event_type: kinds::CONSOLE_SIGN_IN_REFUSED,
                target: who.map(|w| format!("console:{w}")),
                integration_id: None,
                detail: json!({"via": "oidc", "why": why}),
            },
        )
        .await?;
    Ok(state.refused(StatusCode::FORBIDDEN, &format!("Sign-in refused: {why}.")))
}
