//! The vault key: 32 random bytes from the environment or a key file, never from the
//! database. Its id is a fingerprint, so an entry names the key it needs without
//! anyone having to name keys.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;

/// The key itself, base64 of 32 bytes.
pub const ENV_KEY: &str = "USHER_VAULT_KEY";
/// A file holding the key (base64 of 32 bytes).
pub const ENV_KEY_FILE: &str = "USHER_VAULT_KEY_FILE";
/// The new key for `usher vault rekey`, base64 of 32 bytes.
pub const ENV_NEW_KEY: &str = "USHER_VAULT_NEW_KEY";

/// A 256-bit vault key. Zeroized on drop; Debug shows the id only.
pub struct VaultKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultKey({})", self.id)
    }
}

impl VaultKey {
    pub fn from_bytes(bytes: [u8; 32]) -> VaultKey {
        let bytes = Zeroizing::new(bytes);
        let mut h = Sha256::new();
        h.update(b"usher vault key id\0");
        h.update(bytes.as_slice());
        let id = hex::encode(&h.finalize()[..8]);
        VaultKey { id, bytes }
    }

    /// A new random key.
    pub fn generate() -> VaultKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        VaultKey::from_bytes(*bytes)
    }

    /// Base64 (standard, padding optional, surrounding whitespace ignored) of 32 bytes.
    /// `source` names where the text came from, for errors.
    pub fn from_base64(text: &str, source: &str) -> Result<VaultKey, VaultError> {
        let bad = |reason: String| VaultError::BadKey {
            origin: source.to_owned(),
            reason,
        };
        let bytes = crate::keytext::key32_from_base64(text).map_err(|e| match e {
            crate::keytext::KeyTextError::NotBase64 => bad("is not base64".into()),
            crate::keytext::KeyTextError::WrongLength(n) => bad(format!(
                "is {n} bytes long; a vault key is 32 bytes (make one with `usher vault keygen`)"
            )),
        })?;
        Ok(VaultKey::from_bytes(*bytes))
    }

    /// A key file: the key in base64 on one line.
    pub fn from_file(path: &Path) -> Result<VaultKey, VaultError> {
        let shown = path.display().to_string();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| VaultError::KeyFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?,
            );
        warn_if_readable_by_others(path);
        VaultKey::from_base64(&text, &format!("key file {shown}"))
    }

    /// The fingerprint stored with every entry encrypted under this key (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key in base64, for `usher vault keygen`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_slice()))
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the vault key file can be read by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// The keys a vault works with. Today one: entries are encrypted under it and must be
/// encrypted under it to be read (`usher vault rekey` moves them to a new one).
#[derive(Clone)]
pub struct Keyring {
    primary: std::sync::Arc<VaultKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({})", self.primary.id)
    }
}

impl Keyring {
    pub fn new(primary: VaultKey) -> Keyring {
        Keyring {
            primary: std::sync::Arc::new(primary),
        }
    }

    /// The key from `USHER_VAULT_KEY`, else the file `USHER_VAULT_KEY_FILE` names, else
    /// the configuration's `vault.key_file`.
    pub fn from_env_or_config(key_file: Option<&Path>) -> Result<Keyring, VaultError> {
        Keyring::load(|n| std::env::var(n).ok(), key_file)
    }

    /// [`Keyring::from_env_or_config`] with the environment given as a function.
    pub fn load(
        env: impl Fn(&str) -> Option<String>,
        key_file: Option<&Path>,
    ) -> Result<Keyring, VaultError> {
        if let Some(text) = env(ENV_KEY).map(Zeroizing::new)
            && !text.trim().is_empty()
        {
            return Ok(Keyring::new(VaultKey::from_base64(&text, ENV_KEY)?));
        }
        if let Some(path) = env(ENV_KEY_FILE).filter(|p| !p.trim().is_empty()) {
            return Ok(Keyring::new(VaultKey::from_file(Path::new(path.trim()))?));
        }
        if let Some(path) = key_file {
            return Ok(Keyring::new(VaultKey::from_file(path)?));
        }
        Err(VaultError::NoKey)
    }

    /// The new key of a rekey: `--new-key-file`, else `USHER_VAULT_NEW_KEY`.
    pub fn new_key(
        env: impl Fn(&str) -> Option<String>,
        new_key_file: Option<&Path>,
    ) -> Result<VaultKey, VaultError> {
        if let Some(path) = new_key_file {
            return VaultKey::from_file(path);
        }
        match env(ENV_NEW_KEY).map(Zeroizing::new) {
            Some(text) if !text.trim().is_empty() => VaultKey::from_base64(&text, ENV_NEW_KEY),
            _ => Err(VaultError::NoNewKey),
        }
    }

    /// The key entries are encrypted under.
    pub fn primary(&self) -> &VaultKey {
        &self.primary
    }

    /// The key with this id, if this keyring has it.
    pub fn find(&self, id: &str) -> Option<&VaultKey> {
        (self.primary.id == id).then_some(self.primary.as_ref())
    }

    /// Ids of the keys, for errors.
    pub fn ids(&self) -> Vec<&str> {
        vec![self.primary.id.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn key_sources_in_order_and_clear_errors() {
        let a = VaultKey::from_bytes([7u8; 32]);
        let b64 = a.to_base64();
        let dir = tempfile::tempdir().expect("dir");
        let b = VaultKey::from_bytes([9u8; 32]);
        let file = dir.path().join("vault.key");
        std::fs::write(&file, format!("{}\n", b.to_base64().as_str())).expect("write");
        let file_s = file.display().to_string();

        // The variable wins over the file and the configuration.
        let k = Keyring::load(
            env(&[(ENV_KEY, &b64), (ENV_KEY_FILE, &file_s)]),
            Some(&file),
        )
        .expect("key");
        assert_eq!(k.primary().id(), a.id());
        let k = Keyring::load(env(&[(ENV_KEY_FILE, &file_s)]), None).expect("key");
        assert_eq!(k.primary().id(), b.id());
        let k = Keyring::load(env(&[]), Some(&file)).expect("key");
        assert_eq!(k.primary().id(), b.id());

        let e = Keyring::load(env(&[]), None).unwrap_err().to_string();
        assert!(e.contains("USHER_VAULT_KEY"), "{e}");
        let e = Keyring::load(env(&[(ENV_KEY, "c2hvcnQ=")]), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "vault key from USHER_VAULT_KEY is 5 bytes long; a vault key is 32 bytes (make one with `usher vault keygen`)"
        );
        let e = Keyring::load(env(&[(ENV_KEY, "not base64!")]), None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "vault key from USHER_VAULT_KEY is not base64");
        let e = Keyring::load(env(&[]), Some(&dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read vault key file "), "{e}");

        let n = Keyring::new_key(env(&[(ENV_NEW_KEY, &b64)]), None).expect("new key");
        assert_eq!(n.id(), a.id());
        let n = Keyring::new_key(env(&[(ENV_NEW_KEY, &b64)]), Some(&file)).expect("new key");
        assert_eq!(n.id(), b.id());
        assert!(Keyring::new_key(env(&[]), None).is_err());
    }

    #[test]
    fn ids_are_stable_fingerprints_and_debug_hides_the_key() {
        let a = VaultKey::from_bytes([7u8; 32]);
        assert_eq!(a.id(), VaultKey::from_bytes([7u8; 32]).id());
        assert_eq!(a.id().len(), 16);
        assert_ne!(a.id(), VaultKey::generate().id());
        let b64 = a.to_base64();
        assert_eq!(
            VaultKey::from_base64(&b64, "t").expect("round trip").id(),
            a.id()
        );
        let dbg = format!("{a:?} {:?}", Keyring::new(VaultKey::from_bytes([7u8; 32])));
        assert!(!dbg.contains(b64.as_str()), "{dbg}");
        assert!(!dbg.contains("7, 7"), "{dbg}");
    }
}
