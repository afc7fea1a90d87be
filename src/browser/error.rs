//! Error types of the browser layer. Every `Display` is one line; no error ever carries a
//! value that was typed into a field (those may be passwords): errors name the locator.

use std::time::Duration;

/// A locator string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid locator at byte {offset}: {message}")]
pub struct LocatorError {
    /// What is wrong.
    pub message: String,
    /// Byte offset into the locator source where the problem was found.
    pub offset: usize,
}

/// Errors of the browser layer.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Chromium could not be started or did not expose its DevTools endpoint.
    #[error("could not launch chromium ({executable}): {reason}")]
    Launch { executable: String, reason: String },

    /// The Chromium process died or its DevTools websocket dropped. Relaunch the browser.
    #[error("browser crashed or disconnected: {0}")]
    Crashed(String),

    /// The browser (or this context) was closed on purpose.
    #[error("browser or context already closed")]
    Closed,

    /// An auto-waiting operation gave up.
    #[error(
        "timed out after {} waiting for {}{} at {url}: {seen}",
        fmt_duration(*after),
        locator.as_deref().map(|l| format!("{l} ")).unwrap_or_default(),
        action
    )]
    Timeout {
        /// What was awaited, e.g. `to be visible, enabled and stable (click)`.
        action: String,
        /// The locator source, if the operation had one.
        locator: Option<String>,
        /// The page URL when giving up.
        url: String,
        /// What was seen on the last poll: `0 matches`, `1 match, hidden`, `3 matches`…
        seen: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// A navigation failed: network error or an HTTP status >= 500.
    #[error("navigation to {url} failed: {reason}")]
    Navigation {
        url: String,
        /// HTTP status, if the server answered.
        status: Option<u16>,
        /// `HTTP 500` or the network error text (`net::ERR_CONNECTION_REFUSED`).
        reason: String,
    },

    /// The locator did not parse.
    #[error(transparent)]
    Locator(#[from] LocatorError),

    /// The locator parsed but the page rejected it (e.g. invalid CSS or XPath).
    #[error("locator {locator} is not valid in the page: {message}")]
    InvalidSelector { locator: String, message: String },

    /// An action could not be performed on an element that was found
    /// (e.g. `select` on something that is not a `<select>`).
    #[error("{action} on {locator} failed: {reason}")]
    Action {
        action: String,
        locator: String,
        reason: String,
    },

    /// A DevTools protocol call failed or did not answer in time.
    #[error("devtools call {call} failed: {message}")]
    Cdp { call: String, message: String },

    /// Script evaluation in the page threw.
    #[error("script error in page: {0}")]
    Script(String),

    /// A regular expression given to `expect_url` is invalid.
    #[error("invalid URL pattern: {0}")]
    Pattern(String),

    /// Local I/O (profile directory, process handling).
    #[error("i/o error: {0}")]
    Io(String),
}

impl BrowserError {
    /// True when the caller should relaunch the browser.
    pub fn is_crash(&self) -> bool {
        matches!(self, BrowserError::Crashed(_))
    }
}

/// `5s`, `800ms`, `1.5s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
