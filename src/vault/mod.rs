//! Secrets of service accounts (username, password, TOTP seed, extra fields).
//!
//! Values live in `secrecy` types (zeroized on drop) and are never printed. The
//! [`Vault`] keeps them in Usher's database, each entry encrypted with
//! XChaCha20-Poly1305 under a key from the environment or a key file (`keys`), bound to
//! its name (`entries`). An entry can hold a *pending* password, the half-way state of
//! a rotation (which the engine drives: `engine::rotate_password`). A YAML secrets
//! file still feeds `usher playbook run --secrets @file`.

mod blob;
mod entries;
mod keys;
mod password;
mod totp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use entries::{EntryInfo, Vault, kinds};
pub use keys::{ENV_KEY, ENV_KEY_FILE, ENV_NEW_KEY, Keyring, VaultKey};
pub use password::{PASSWORD_LEN, generate_password};
pub use totp::{TOTP_MIN_REMAINING_SECS, TotpAlgorithm, TotpSpec, TotpTracker, otpauth_from_png};

/// Errors of the vault. Never carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read secrets file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("secrets file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("invalid TOTP secret: {0}")]
    Totp(String),
    #[error(
        "no vault key: set {ENV_KEY} (base64 of 32 bytes) or {ENV_KEY_FILE}, or `vault.key_file` in the configuration; `usher vault keygen` makes a key"
    )]
    NoKey,
    #[error("no new vault key: pass --new-key-file or set {ENV_NEW_KEY}")]
    NoNewKey,
    #[error("vault key from {origin} {reason}")]
    BadKey { origin: String, reason: String },
    #[error("cannot read vault key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("cannot write key file {path}: {reason}")]
    KeyWrite { path: String, reason: String },
    #[error(
        "vault entry `{name}` is encrypted under key `{key_id}`, but the configured key is `{configured}` (wrong key?)"
    )]
    UnknownKey {
        name: String,
        key_id: String,
        configured: String,
    },
    #[error(
        "vault key `{key_id}` cannot decrypt entry `{name}`: the stored entry was altered or belongs to another entry"
    )]
    Decrypt { name: String, key_id: String },
    #[error("vault entry `{name}` is corrupt: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("no vault entry `{0}`")]
    NotFound(String),
    #[error("vault entry `{0}` changed while it was being updated; try again")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("vault: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One service account's credentials.
#[derive(Clone)]
pub struct Secret {
    pub username: SecretString,
    pub password: SecretString,
    /// A new password a rotation generated and stored before changing it in the app.
    /// Until the rotation is confirmed the app may hold either; a login tries
    /// `password` first, then this one (see `engine::rotate_password`).
    pub pending_password: Option<SecretString>,
    /// The TOTP seed or URI as given (templates pass it to `totp()`), parsed.
    pub totp: Option<(SecretString, TotpSpec)>,
    /// A TOTP seed an MFA enrolment captured from the app and stored before confirming
    /// it there. Until the enrolment is confirmed the app may or may not ask for codes;
    /// a login tries the current secret first, then this one (see `engine::enable_mfa`).
    pub pending_totp: Option<(SecretString, TotpSpec)>,
    pub extra: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a Debug print must be safe to log.
        f.debug_struct("Secret")
            .field("username", &"[REDACTED]")
            .field("password", &"[REDACTED]")
            .field(
                "pending_password",
                &self.pending_password.as_ref().map(|_| "[REDACTED]"),
            )
            .field("totp", &self.totp.as_ref().map(|(_, s)| s))
            .field("pending_totp", &self.pending_totp.as_ref().map(|(_, s)| s))
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
        Ok(Secret {
            username: SecretString::from(username.into()),
            password: SecretString::from(password.into()),
            pending_password: None,
            totp: parse_totp(totp)?,
            pending_totp: None,
            extra: BTreeMap::new(),
        })
    }

    /// Sets the TOTP seed or `otpauth://` URI (checked); `None` or blank removes it.
    pub fn set_totp(&mut self, totp: Option<&str>) -> Result<(), VaultError> {
        self.totp = parse_totp(totp)?;
        Ok(())
    }

    /// Adds an extra field (`secret.NAME` in templates): letters, digits and `_`, not
    /// one of the standard fields.
    pub fn set_extra(&mut self, name: &str, value: impl Into<String>) -> Result<(), VaultError> {
        check_extra_name(name)?;
        self.extra
            .insert(name.to_owned(), SecretString::from(value.into()));
        Ok(())
    }

    /// Names of the fields present, never values: `username`, `password`,
    /// `pending_password`, `totp`, `extra.NAME`…
    pub fn field_names(&self) -> Vec<String> {
        let mut v = vec!["username".to_owned(), "password".to_owned()];
        if self.pending_password.is_some() {
            v.push("pending_password".into());
        }
        if self.totp.is_some() {
            v.push("totp".into());
        }
        if self.pending_totp.is_some() {
            v.push("pending_totp".into());
        }
        v.extend(self.extra.keys().map(|k| format!("extra.{k}")));
        v
    }

    /// This secret with its pending password as the password and its pending TOTP as
    /// the TOTP (a rotation or enrolment the app took); `None` when nothing is pending.
    pub fn promoted(&self) -> Option<Secret> {
        if self.pending_password.is_none() && self.pending_totp.is_none() {
            return None;
        }
        let mut s = self.clone();
        if let Some(p) = s.pending_password.take() {
            s.password = p;
        }
        if let Some(t) = s.pending_totp.take() {
            s.totp = Some(t);
        }
        Some(s)
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
        if let Some(p) = &self.pending_password {
            v.push(p.expose_secret());
        }
        if let Some((src, _)) = &self.totp {
            v.push(src.expose_secret());
        }
        if let Some((src, _)) = &self.pending_totp {
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
        for (k, v) in raw.extra {
            s.set_extra(&k, v).map_err(|e| VaultError::Parse {
                path: name.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Ok(s)
    }
}

/// Extra field names become `secret.NAME` in templates and `extra.NAME` in listings.
/// A TOTP seed or `otpauth://` URI (checked); `None` or blank is none.
pub(crate) fn parse_totp(
    totp: Option<&str>,
) -> Result<Option<(SecretString, TotpSpec)>, VaultError> {
    match totp.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some((
            SecretString::from(t.to_owned()),
            TotpSpec::parse(t)?,
        ))),
        None => Ok(None),
    }
}

pub fn check_extra_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !matches!(
            name,
            "username" | "password" | "pending_password" | "totp" | "pending_totp"
        );
    if ok {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "extra field name `{name}` must be 1-64 letters, digits or `_`, and not username, password, pending_password, totp or pending_totp"
        )))
    }
}

/// Entry names are what integrations' `service_account` says: 1-128 characters of
/// letters, digits, `-`, `_`, `.`, `@`.
pub fn check_entry_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "vault entry name `{}` must be 1-128 characters of letters, digits, `-`, `_`, `.` or `@`",
            name.chars().take(40).collect::<String>()
        )))
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
