//! Browser layer of Usher: drives headless Chromium through the DevTools protocol
//! (chromiumoxide) with auto-waiting, locator resolution, dialogs, sessions and crash
//! detection. Knows nothing about playbooks or SCIM.
//!
//! ```text
//! let browser = Browser::launch(BrowserConfig::default()).await?;
//! let ctx = browser.new_context().await?;
//! let page = ctx.page();
//! page.goto("http://app/login", secs(10)).await?;
//! page.fill(&Locator::parse("label=Email")?, "a@b.c", secs(5)).await?;
//! page.click(&Locator::parse("role=button[name='Sign in']")?, secs(5)).await?;
//! ctx.close().await?;
//! browser.close().await?;
//! ```

use std::path::PathBuf;
use std::time::Duration;

mod context;
mod error;
mod launch;
mod locator;
mod page;

pub use context::{BrowserContext, SessionCookie, SessionState};
pub use error::{BrowserError, LocatorError};
pub use launch::Browser;
pub use locator::{ARIA_ROLES, Locator};
pub use page::{DialogPolicy, Page, WaitState};

/// How to start Chromium.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// Chromium binary; default `$USHER_CHROME`, else `/usr/bin/chromium`.
    pub executable: PathBuf,
    /// Run headless (default true).
    pub headless: bool,
    /// Extra command-line switches, with or without the leading `--`.
    pub extra_args: Vec<String>,
    /// Upper bound for every single DevTools call (default 10 s).
    pub cdp_timeout: Duration,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        let executable = std::env::var_os("USHER_CHROME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        BrowserConfig {
            executable,
            headless: true,
            extra_args: Vec::new(),
            cdp_timeout: Duration::from_secs(10),
        }
    }
}
