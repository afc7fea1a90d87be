//! Isolated browser contexts (own cookies/storage), one page each, and session cookies.

use std::fmt;
use std::sync::Arc;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::network::{CookieParam, CookieSameSite, TimeSinceEpoch};
use chromiumoxide::cdp::browser_protocol::storage::{GetCookiesParams, SetCookiesParams};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateBrowserContextParams, CreateTargetParams, DisposeBrowserContextParams,
};
use serde::{Deserialize, Serialize};

use super::error::BrowserError;
use super::launch::Shared;
use super::page::Page;

/// One cookie of a saved session. `Debug` never prints the value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    pub path: String,
    /// Unix seconds; `None` for a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<f64>,
    #[serde(default)]
    pub http_only: bool,
    #[serde(default)]
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

impl fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCookie")
            .field("name", &self.name)
            .field("value", &"[REDACTED]")
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("expires", &self.expires)
            .finish()
    }
}

/// A logged-in session, to be saved per integration (encrypted by the caller: cookie
/// values are credentials) and restored into a fresh context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub cookies: Vec<SessionCookie>,
}

/// An isolated browser context with one page. Close it with [`BrowserContext::close`].
pub struct BrowserContext {
    shared: Arc<Shared>,
    id: BrowserContextId,
    page: Page,
    _in_use: InUse,
}

/// Counts the context in the `usher_browser_contexts_in_use` gauge while it lives
/// (closed or dropped).
struct InUse;

impl InUse {
    fn new() -> InUse {
        metrics::gauge!("usher_browser_contexts_in_use").increment(1.0);
        InUse
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        metrics::gauge!("usher_browser_contexts_in_use").decrement(1.0);
    }
}

impl fmt::Debug for BrowserContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserContext")
            .field("id", &self.id.inner())
            .finish()
    }
}

impl BrowserContext {
    pub(super) async fn create(shared: Arc<Shared>) -> Result<BrowserContext, BrowserError> {
        let t = shared.cdp_timeout;
        let guard = shared.cb.read().await;
        let cb = guard.as_ref().ok_or(BrowserError::Closed)?;
        let id = shared
            .guard(
                "Target.createBrowserContext",
                t,
                cb.create_browser_context(CreateBrowserContextParams::default()),
            )
            .await?;
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(id.clone())
            .width(1280)
            .height(900)
            .build()
            .map_err(|e| BrowserError::Cdp {
                call: "Target.createTarget".into(),
                message: e,
            });
        let created = match params {
            Ok(p) => shared.guard("Target.createTarget", t, cb.new_page(p)).await,
            Err(e) => Err(e),
        };
        let cpage = match created {
            Ok(p) => p,
            Err(e) => {
                let _ = shared
                    .guard(
                        "Target.disposeBrowserContext",
                        t,
                        cb.dispose_browser_context(id.clone()),
                    )
                    .await;
                return Err(e);
            }
        };
        drop(guard);
        match Page::init(shared.clone(), cpage).await {
            Ok(page) => Ok(BrowserContext {
                shared,
                id,
                page,
                _in_use: InUse::new(),
            }),
            Err(e) => {
                let ctx = ContextIds {
                    shared: shared.clone(),
                    id,
                };
                let _ = ctx.dispose(None).await;
                Err(e)
            }
        }
    }

    /// True once its browser has died (the context is gone with it).
    pub fn is_dead(&self) -> bool {
        self.shared.is_dead()
    }

    /// The context's page.
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// All cookies of this context.
    pub async fn cookies(&self) -> Result<SessionState, BrowserError> {
        let t = self.shared.cdp_timeout;
        let guard = self.shared.cb.read().await;
        let cb = guard.as_ref().ok_or(BrowserError::Closed)?;
        let params = GetCookiesParams {
            browser_context_id: Some(self.id.clone()),
        };
        let res = self
            .shared
            .guard("Storage.getCookies", t, cb.execute(params))
            .await?;
        let cookies = res
            .result
            .cookies
            .into_iter()
            .map(|c| SessionCookie {
                expires: if c.session || c.expires <= 0.0 {
                    None
                } else {
                    Some(c.expires)
                },
                same_site: c.same_site.map(|s| s.as_ref().to_string()),
                name: c.name,
                value: c.value,
                domain: c.domain,
                path: c.path,
                http_only: c.http_only,
                secure: c.secure,
            })
            .collect();
        Ok(SessionState { cookies })
    }

    /// Adds the cookies of a saved session to this context.
    pub async fn set_cookies(&self, state: &SessionState) -> Result<(), BrowserError> {
        if state.cookies.is_empty() {
            return Ok(());
        }
        let cookies: Vec<CookieParam> = state
            .cookies
            .iter()
            .map(|c| {
                let mut p = CookieParam::new(c.name.clone(), c.value.clone());
                p.domain = Some(c.domain.clone());
                p.path = Some(c.path.clone());
                p.secure = Some(c.secure);
                p.http_only = Some(c.http_only);
                p.expires = c.expires.map(TimeSinceEpoch::new);
                p.same_site = match c.same_site.as_deref() {
                    Some("Strict") => Some(CookieSameSite::Strict),
                    Some("Lax") => Some(CookieSameSite::Lax),
                    Some("None") => Some(CookieSameSite::None),
                    _ => None,
                };
                p
            })
            .collect();
        let t = self.shared.cdp_timeout;
        let guard = self.shared.cb.read().await;
        let cb = guard.as_ref().ok_or(BrowserError::Closed)?;
        let params = SetCookiesParams {
            cookies,
            browser_context_id: Some(self.id.clone()),
        };
        self.shared
            .guard("Storage.setCookies", t, cb.execute(params))
            .await?;
        Ok(())
    }

    /// Closes the page, then disposes of the browser context.
    pub async fn close(self) -> Result<(), BrowserError> {
        let target = self.page.target_id();
        self.page.shutdown();
        let ids = ContextIds {
            shared: self.shared,
            id: self.id,
        };
        ids.dispose(Some(target)).await
    }
}

struct ContextIds {
    shared: Arc<Shared>,
    id: BrowserContextId,
}

impl ContextIds {
    async fn dispose(
        self,
        target: Option<chromiumoxide::cdp::browser_protocol::target::TargetId>,
    ) -> Result<(), BrowserError> {
        if self.shared.is_dead() {
            return Ok(());
        }
        let t = self.shared.cdp_timeout;
        let guard = self.shared.cb.read().await;
        let Some(cb) = guard.as_ref() else {
            return Ok(());
        };
        if let Some(target) = target {
            // best effort: disposing of the context closes its pages anyway
            let _ = self
                .shared
                .guard(
                    "Target.closeTarget",
                    t,
                    cb.execute(CloseTargetParams::new(target)),
                )
                .await;
        }
        self.shared
            .guard(
                "Target.disposeBrowserContext",
                t,
                cb.execute(DisposeBrowserContextParams::new(self.id)),
            )
            .await?;
        Ok(())
    }
}
