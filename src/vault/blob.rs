//! Small sealed values outside the entries, under the vault's key: an SSO session's
//! cookie jar. XChaCha20-Poly1305 with a fresh nonce; the associated data binds the
//! ciphertext to its purpose (a session's id hash), so a blob moved to another
//! session fails to open.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::{Vault, VaultError};

const NONCE_LEN: usize = 24;

fn aad(purpose: &str, key_id: &str) -> Vec<u8> {
    let mut out = b"usher-blob\0".to_vec();
    for part in [purpose, key_id] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

impl Vault {
    /// `plain` sealed for `purpose` under the primary key: `v1.KEYID.BASE64`.
    pub fn seal_blob(&self, purpose: &str, plain: &[u8]) -> Result<String, VaultError> {
        let key = self.keys().primary();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new(key.bytes().into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad(purpose, key.id()),
                },
            )
            .map_err(|_| VaultError::Invalid("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("v1.{}.{}", key.id(), URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens a blob sealed for `purpose` (by any key of the keyring).
    pub fn open_blob(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let bad =
            || VaultError::Invalid("a sealed value does not open (wrong key, or moved)".into());
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let key = self.keys().find(key_id).ok_or_else(bad)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| bad())?;
        XChaCha20Poly1305::new(key.bytes().into())
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(purpose, key_id),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{Keyring, VaultKey};

    #[tokio::test]
    async fn a_blob_opens_for_its_purpose_only() {
        let store = crate::store::Store::connect(
            "sqlite::memory:",
            std::sync::Arc::new(crate::clock::SystemClock),
        )
        .await
        .expect("store");
        let v = Vault::new(store, Keyring::new(VaultKey::generate()));
        let sealed = v.seal_blob("session-a", b"cookie=value").expect("seal");
        assert!(!sealed.contains("cookie"));
        assert_eq!(
            &v.open_blob("session-a", &sealed).expect("open")[..],
            b"cookie=value"
        );
        assert!(
            v.open_blob("session-b", &sealed).is_err(),
            "moved to another session"
        );
        let mut tampered = sealed.clone();
        tampered.push('A');
        assert!(v.open_blob("session-a", &tampered).is_err());
        assert!(v.open_blob("session-a", "v1.x.y").is_err());
    }
}
