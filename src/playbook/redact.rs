//! Redaction of secret values from any text shown to people or stored.

use std::fmt;

pub const REDACTED: &str = "[REDACTED]";

/// Knows the secret values of one run (vault secrets, TOTP codes, and every
/// rendered value that was sensitive) and blanks them out of any string.
///
/// Each secret is also recognised in its URL-encoded and JSON-escaped forms.
/// Every non-empty value is registered, however short: a leak is worse than
/// an over-redacted log line.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a secret value (and its encoded forms).
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or("")
            .to_owned();
        for v in [secret.to_owned(), percent_encode(secret), json] {
            if !v.is_empty() && !self.needles.contains(&v) {
                self.needles.push(v);
            }
        }
        self.needles
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// The text with every known secret replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// Whether the text contains any known secret.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }
}

/// Percent-encoding of everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_and_encoded_forms() {
        let mut r = Redactor::new();
        r.add("p@ss word\"1");
        r.add("");
        let s = r.redact("login with p@ss word\"1 / p%40ss%20word%221 / p@ss word\\\"1");
        assert_eq!(s, "login with [REDACTED] / [REDACTED] / [REDACTED]");
        assert!(r.contains_secret("xx p@ss word\"1"));
        assert!(!r.contains_secret("nothing here"));
        assert!(format!("{r:?}").starts_with("Redactor("));
    }

    #[test]
    fn longest_secret_wins() {
        let mut r = Redactor::new();
        r.add("abc");
        r.add("abcdef");
        assert_eq!(r.redact("xabcdefx"), "x[REDACTED]x");
    }
}
