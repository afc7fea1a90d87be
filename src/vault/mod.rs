//! Secrets of service accounts (username, password, TOTP seed, extra fields).
//!
//! Minimal for now: values live in `secrecy` types and are never printed; a YAML
//! secrets file feeds `usher playbook run --secrets @file`. The encrypted vault comes
//! later and will hand out the same [`Secret`].

mod totp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use totp::{TOTP_MIN_REMAINING_SECS, TotpAlgorithm, TotpSpec, TotpTracker};

/// Errors of the vault. Never carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read secrets file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("secrets file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("invalid TOTP secret: {0}")]
    Totp(String),
}

/// One service account's credentials.
pub struct Secret {
    pub username: SecretString,
    pub password: SecretString,
    /// The TOTP seed or URI as given (templates pass it to `totp()`), parsed.
    pub totp: Option<(SecretString, TotpSpec)>,
    pub extra: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a Debug print must be safe to log.
        f.debug_struct("Secret")
            .field("username", &"[REDACTED]")
            .field("password", &"[REDACTED]")
            .field("totp", &self.totp.as_ref().map(|(_, s)| s))
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secret {
    /// Builds a secret, checking the TOTP seed or URI.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        totp: Option<&str>,
    ) -> Result<Secret, VaultError> {
        let totp = match totp.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Some((SecretString::from(t.to_owned()), TotpSpec::parse(t)?)),
            None => None,
        };
        Ok(Secret {
            username: SecretString::from(username.into()),
            password: SecretString::from(password.into()),
            totp,
            extra: BTreeMap::new(),
        })
    }

    /// The `secret.*` values templates see: `username`, `password`, `totp`, extras.
    pub fn template_values(&self) -> BTreeMap<String, SecretString> {
        let mut m = self.extra.clone();
        m.insert("username".into(), self.username.clone());
        m.insert("password".into(), self.password.clone());
        if let Some((src, _)) = &self.totp {
            m.insert("totp".into(), src.clone());
        }
        m
    }

    /// Every secret value, for a redactor.
    pub fn values(&self) -> Vec<&str> {
        let mut v = vec![self.username.expose_secret(), self.password.expose_secret()];
        if let Some((src, _)) = &self.totp {
            v.push(src.expose_secret());
        }
        v.extend(self.extra.values().map(|s| s.expose_secret()));
        v
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsYaml {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

/// A YAML secrets file: `{username, password, totp?, extra?}`.
pub struct SecretsFile;

impl SecretsFile {
    pub fn load(path: &Path) -> Result<Secret, VaultError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| VaultError::Read {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Secret, VaultError> {
        // serde-saphyr errors quote source snippets, which may hold a password: keep only
        // the first line's position-free part.
        let raw: SecretsYaml = serde_saphyr::from_str(text).map_err(|e| VaultError::Parse {
            path: name.to_owned(),
            reason: sanitize_yaml_error(&e.to_string(), text),
        })?;
        let mut s = Secret::new(raw.username, raw.password, raw.totp.as_deref())?;
        s.extra = raw
            .extra
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect();
        Ok(s)
    }
}

/// First line of a YAML error with every value of the file removed.
fn sanitize_yaml_error(msg: &str, text: &str) -> String {
    let first = msg.lines().next().unwrap_or("invalid YAML").to_owned();
    let mut out = first;
    for line in text.lines() {
        if let Some((_, v)) = line.split_once(':') {
            let v = v.trim().trim_matches(['"', '\'']);
            if v.len() >= 3 && out.contains(v) {
                out = out.replace(v, "[REDACTED]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_secrets_file_and_never_prints_values() {
        let s = SecretsFile::parse(
            "s.yaml",
            "username: admin@acme.example\npassword: hunter2-very-secret\ntotp: JBSWY3DPEHPK3PXP\nextra:\n  api_token: tok-123\n",
        )
        .expect("parse");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("admin@acme"), "{dbg}");
        assert!(!dbg.contains("JBSWY3"), "{dbg}");
        let m = s.template_values();
        assert_eq!(m["password"].expose_secret(), "hunter2-very-secret");
        assert_eq!(m["totp"].expose_secret(), "JBSWY3DPEHPK3PXP");
        assert_eq!(m["api_token"].expose_secret(), "tok-123");
        assert!(s.values().contains(&"tok-123"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_totp() {
        let e = SecretsFile::parse("s.yaml", "username: a\npassword: b\npasswd: c\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("secrets file s.yaml:"), "{e}");
        let e = SecretsFile::parse("s.yaml", "username: a\npassword: b\ntotp: '!!!'\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("invalid TOTP secret"), "{e}");
        assert!(!e.contains("!!!"), "{e}");
    }
}
