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
mod process;

pub use context::{BrowserContext, SessionCookie, SessionState};
pub use error::{BrowserError, LocatorError};
pub use launch::Browser;
pub use locator::{ARIA_ROLES, Locator};
pub use page::{DialogPolicy, Page, WaitState};
pub use process::clean_stale_profiles;

/// Whether Chromium runs its own sandbox (renderers confined by Linux namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// Off when running as root (Chromium refuses its sandbox there); otherwise on, unless
    /// Chromium exits at start with it and starts without it (a container whose seccomp
    /// profile denies user namespaces or chroot): then off for the rest of the process,
    /// with one warning.
    Auto,
    /// Always on: launching fails where the sandbox cannot start.
    On,
    /// Always off (`--no-sandbox`).
    Off,
}

impl Sandbox {
    /// `auto`, `on`/`true`/`1`, `off`/`false`/`0` (any case).
    pub fn parse(s: &str) -> Option<Sandbox> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Sandbox::Auto),
            "on" | "true" | "1" | "yes" => Some(Sandbox::On),
            "off" | "false" | "0" | "no" => Some(Sandbox::Off),
            _ => None,
        }
    }

    /// From `USHER_CHROME_SANDBOX`; default `auto`. An unknown value turns the sandbox on
    /// (a typo never weakens the browser) and says so.
    pub fn from_env() -> Sandbox {
        let Some(raw) = std::env::var_os("USHER_CHROME_SANDBOX") else {
            return Sandbox::Auto;
        };
        let raw = raw.to_string_lossy();
        Sandbox::parse(&raw).unwrap_or_else(|| {
            tracing::warn!(
                value = %raw,
                "USHER_CHROME_SANDBOX is not auto, on or off; the sandbox stays on"
            );
            Sandbox::On
        })
    }
}

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
    /// Chromium's own sandbox; default from `USHER_CHROME_SANDBOX`, else `Auto`.
    pub sandbox: Sandbox,
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
            sandbox: Sandbox::from_env(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sandbox;

    #[test]
    fn sandbox_settings_parse() {
        assert_eq!(Sandbox::parse("AUTO"), Some(Sandbox::Auto));
        assert_eq!(Sandbox::parse(" off "), Some(Sandbox::Off));
        assert_eq!(Sandbox::parse("false"), Some(Sandbox::Off));
        assert_eq!(Sandbox::parse("1"), Some(Sandbox::On));
        assert_eq!(Sandbox::parse("disabled"), None);
    }
}
