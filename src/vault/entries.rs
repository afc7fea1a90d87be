//! Vault entries: one [`Secret`] per name, sealed with XChaCha20-Poly1305 and kept in
//! the store as an opaque row.
//!
//! An entry's plaintext is one JSON object (username, password, pending password,
//! TOTP, extra fields), held in zeroized buffers, encrypted as one blob under a fresh
//! random 24-byte nonce at every write. The associated data binds the ciphertext to
//! the format version, the entry's name, the key id and the list of field names, so a
//! row copied to another name, or any edited byte, fails authentication.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::keys::{Keyring, VaultKey};
use super::{Secret, VaultError, check_entry_name};
use crate::audit::{Actor, NewEvent};
use crate::store::{Store, StoreError, VaultExpect, VaultRow, VaultWrite};

/// Version of the plaintext layout and of the associated data.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// Audit event types of the vault (names and field names only, never values).
pub mod kinds {
    pub const VAULT_SET: &str = "vault.set";
    pub const VAULT_REMOVE: &str = "vault.remove";
    pub const VAULT_REKEY: &str = "vault.rekey";
    pub const VAULT_ROTATION_BEGIN: &str = "vault.rotation.begin";
    pub const VAULT_ROTATION_DONE: &str = "vault.rotation.done";
    pub const VAULT_ROTATION_DISCARD: &str = "vault.rotation.discard";
    pub const VAULT_MFA_BEGIN: &str = "vault.mfa.begin";
    pub const VAULT_MFA_DONE: &str = "vault.mfa.done";
    pub const VAULT_MFA_DISCARD: &str = "vault.mfa.discard";
}

#[derive(Serialize)]
struct PlainOut<'a> {
    v: u8,
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_totp: Option<&'a str>,
    extra: BTreeMap<&'a str, &'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainIn {
    v: u8,
    username: String,
    password: String,
    #[serde(default)]
    pending_password: Option<String>,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    pending_totp: Option<String>,
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

impl Drop for PlainIn {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.username.zeroize();
        self.password.zeroize();
        self.pending_password.zeroize();
        self.totp.zeroize();
        self.pending_totp.zeroize();
        for v in self.extra.values_mut() {
            v.zeroize();
        }
    }
}

/// Length-prefixed, so that no two (name, key id, fields) encode alike.
fn associated_data(name: &str, key_id: &str, fields: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len() + key_id.len() + fields.len());
    out.extend_from_slice(b"usher-vault\0");
    out.push(FORMAT);
    for part in [name, key_id, fields] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn cipher(key: &VaultKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

/// Encrypts `secret` as entry `name` under `key`.
pub(super) fn seal(key: &VaultKey, name: &str, secret: &Secret) -> Result<VaultWrite, VaultError> {
    let fields = secret.field_names().join(",");
    let plain = PlainOut {
        v: FORMAT,
        username: secret.username.expose_secret(),
        password: secret.password.expose_secret(),
        pending_password: secret
            .pending_password
            .as_ref()
            .map(ExposeSecret::expose_secret),
        totp: secret.totp.as_ref().map(|(s, _)| s.expose_secret()),
        pending_totp: secret.pending_totp.as_ref().map(|(s, _)| s.expose_secret()),
        extra: secret
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect(),
    };
    // Sized up front so that growing never leaves a stray copy behind.
    let size = 128
        + secret
            .values()
            .iter()
            .map(|v| 2 * v.len() + 32)
            .sum::<usize>();
    let mut buf = Zeroizing::new(Vec::with_capacity(size));
    serde_json::to_writer(&mut *buf, &plain).map_err(|e| VaultError::Corrupt {
        name: name.to_owned(),
        reason: format!("cannot encode: {}", e.classify_name()),
    })?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let aad = associated_data(name, key.id(), &fields);
    let ciphertext = cipher(key)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: buf.as_slice(),
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::Corrupt {
            name: name.to_owned(),
            reason: "encryption failed".into(),
        })?;
    Ok(VaultWrite {
        name: name.to_owned(),
        key_id: key.id().to_owned(),
        fields,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Decrypts a stored row with the keyring's key of the row's id.
pub(super) fn open(keys: &Keyring, row: &VaultRow) -> Result<Secret, VaultError> {
    let key = keys
        .find(&row.key_id)
        .ok_or_else(|| VaultError::UnknownKey {
            name: row.name.clone(),
            key_id: row.key_id.clone(),
            configured: keys.ids().join("`, `"),
        })?;
    open_with(key, row)
}

fn open_with(key: &VaultKey, row: &VaultRow) -> Result<Secret, VaultError> {
    let corrupt = |reason: &str| VaultError::Corrupt {
        name: row.name.clone(),
        reason: reason.to_owned(),
    };
    let nonce: [u8; NONCE_LEN] = row
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("the nonce is not 24 bytes"))?;
    let aad = associated_data(&row.name, key.id(), &row.fields);
    let plain = Zeroizing::new(
        cipher(key)
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Decrypt {
                name: row.name.clone(),
                key_id: key.id().to_owned(),
            })?,
    );
    // serde_json's messages may quote the input: keep only the category.
    let mut p: PlainIn = serde_json::from_slice(&plain)
        .map_err(|e| corrupt(&format!("{} error in the plaintext", e.classify_name())))?;
    if p.v != FORMAT {
        return Err(corrupt(&format!("unknown format version {}", p.v)));
    }
    let take = |s: &mut String| SecretString::from(std::mem::take(s));
    let mut secret = Secret {
        username: take(&mut p.username),
        password: take(&mut p.password),
        pending_password: p.pending_password.as_mut().map(take),
        totp: None,
        pending_totp: None,
        extra: BTreeMap::new(),
    };
    secret.set_totp(p.totp.as_deref())?;
    secret.pending_totp = super::parse_totp(p.pending_totp.as_deref())?;
    for (k, v) in p.extra.iter_mut() {
        secret.set_extra(k, std::mem::take(v))?;
    }
    if secret.field_names().join(",") != row.fields {
        return Err(corrupt("the field list does not match the sealed entry"));
    }
    Ok(secret)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "truncation",
        }
    }
}

/// What `usher vault list` shows: names and metadata, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    pub name: String,
    /// `username`, `password`, `pending_password` (a rotation not confirmed yet), `totp`,
    /// `pending_totp` (an MFA enrolment not confirmed yet), `extra.NAME`…
    pub fields: Vec<String>,
    pub key_id: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The service accounts' secrets, encrypted in Usher's database. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    keys: Keyring,
    actor: Actor,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.keys.primary().id())
            .field("backend", &self.store.backend_name())
            .finish()
    }
}

/// How often a read-modify-write is retried when another writer got there first.
const CAS_ATTEMPTS: usize = 5;

impl Vault {
    pub fn new(store: Store, keys: Keyring) -> Vault {
        Vault {
            store,
            keys,
            actor: Actor::System,
        }
    }

    /// Who the audit events of this handle's writes name (default: Usher itself).
    pub fn with_actor(mut self, actor: Actor) -> Vault {
        self.actor = actor;
        self
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Names the current content of entry `name` without decrypting it (its write
    /// version and time), so that a change made by any process can be noticed.
    pub async fn version(&self, name: &str) -> Result<Option<String>, VaultError> {
        Ok(self
            .store
            .vault_get(name)
            .await?
            .map(|row| format!("{}@{}", row.version, row.updated_at)))
    }

    fn event(
        &self,
        event_type: &'static str,
        name: Option<&str>,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            actor: self.actor.clone(),
            event_type,
            target: name.map(str::to_owned),
            integration_id: None,
            detail,
        }
    }

    async fn load(&self, name: &str) -> Result<Option<(Secret, i64)>, VaultError> {
        match self.store.vault_get(name).await? {
            Some(row) => Ok(Some((open(&self.keys, &row)?, row.version))),
            None => Ok(None),
        }
    }

    /// The entry `name` (an integration's `service_account`).
    pub async fn get(&self, name: &str) -> Result<Secret, VaultError> {
        self.find(name)
            .await?
            .ok_or_else(|| VaultError::NotFound(name.to_owned()))
    }

    /// The entry `name`, or `None` when there is none.
    pub async fn find(&self, name: &str) -> Result<Option<Secret>, VaultError> {
        Ok(self.load(name).await?.map(|(s, _)| s))
    }

    /// Creates or replaces the entry `name` (a pending password in `secret` is kept as is).
    pub async fn set(&self, name: &str, secret: &Secret) -> Result<(), VaultError> {
        check_entry_name(name)?;
        let write = seal(self.keys.primary(), name, secret)?;
        let event = self.event(
            kinds::VAULT_SET,
            Some(name),
            json!({ "fields": secret.field_names(), "key_id": write.key_id }),
        );
        self.store
            .vault_put(&write, VaultExpect::Any, &event)
            .await?;
        Ok(())
    }

    /// Every entry's name, fields and dates.
    pub async fn list(&self) -> Result<Vec<EntryInfo>, VaultError> {
        Vault::entries(&self.store).await
    }

    /// How long ago entry `name` was last written (by its store's clock): for an entry
    /// with a pending password, the age of that rotation.
    pub async fn entry_age(&self, name: &str) -> Result<std::time::Duration, VaultError> {
        let info = self
            .list()
            .await?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| VaultError::NotFound(name.to_owned()))?;
        let at = chrono::DateTime::parse_from_rfc3339(&info.updated_at).map_err(|_| {
            VaultError::Corrupt {
                name: name.to_owned(),
                reason: "bad updated_at".into(),
            }
        })?;
        let age = self.store.clock().now().signed_duration_since(at);
        Ok(age.to_std().unwrap_or_default())
    }

    /// [`Vault::list`] without a key: names and field names are stored in the clear.
    pub async fn entries(store: &Store) -> Result<Vec<EntryInfo>, VaultError> {
        Ok(store
            .vault_list()
            .await?
            .into_iter()
            .map(|r| EntryInfo {
                fields: r
                    .fields
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect(),
                name: r.name,
                key_id: r.key_id,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    /// Deletes the entry; false when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, VaultError> {
        let event = self.event(kinds::VAULT_REMOVE, Some(name), json!({}));
        Ok(self.store.vault_delete(name, &event).await?)
    }

    /// Re-encrypts every entry under `new_key`, in one transaction: afterwards each is
    /// readable under the new key only. Entries already under `new_key` are re-sealed
    /// too, so an interrupted rekey can simply be run again. Returns the count.
    pub async fn rekey(&self, new_key: &VaultKey) -> Result<usize, VaultError> {
        let rows = self.store.vault_list().await?;
        let mut writes = Vec::with_capacity(rows.len());
        for row in &rows {
            let secret = if row.key_id == new_key.id() {
                open_with(new_key, row)?
            } else {
                open(&self.keys, row)?
            };
            writes.push((seal(new_key, &row.name, &secret)?, row.version));
        }
        let event = self.event(
            kinds::VAULT_REKEY,
            None,
            json!({ "entries": rows.len(), "from": self.keys.primary().id(), "to": new_key.id() }),
        );
        match self.store.vault_put_all(&writes, &event).await {
            Ok(()) => Ok(rows.len()),
            Err(StoreError::VersionConflict | StoreError::NotFound) => {
                Err(VaultError::Conflict("*".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the entry, lets `change` edit it, and writes it back only if nobody wrote
    /// it in between (retrying a few times). `change` returns false to write nothing.
    /// Returns the entry as it stands afterwards.
    pub(crate) async fn modify(
        &self,
        name: &str,
        event_type: &'static str,
        mut change: impl FnMut(&mut Secret) -> Result<bool, VaultError>,
    ) -> Result<Secret, VaultError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut secret, version) = self
                .load(name)
                .await?
                .ok_or_else(|| VaultError::NotFound(name.to_owned()))?;
            if !change(&mut secret)? {
                return Ok(secret);
            }
            let write = seal(self.keys.primary(), name, &secret)?;
            let event = self.event(
                event_type,
                Some(name),
                json!({ "fields": secret.field_names(), "key_id": write.key_id }),
            );
            match self
                .store
                .vault_put(&write, VaultExpect::Version(version), &event)
                .await
            {
                Ok(_) => return Ok(secret),
                Err(StoreError::VersionConflict) => continue,
                Err(StoreError::NotFound) => return Err(VaultError::NotFound(name.to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Conflict(name.to_owned()))
    }

    /// Replaces the TOTP seed or `otpauth://` URI of an existing entry.
    pub async fn set_totp(&self, name: &str, totp: &str) -> Result<Secret, VaultError> {
        let spec = super::TotpSpec::parse(totp)?;
        let src = SecretString::from(totp.trim().to_owned());
        self.modify(name, kinds::VAULT_SET, |s| {
            s.totp = Some((src.clone(), spec.clone()));
            Ok(true)
        })
        .await
    }

    /// Step 1 of a rotation: stores `new_password` as the pending password, before the
    /// app is asked to take it. Refuses when another rotation is pending.
    pub async fn begin_rotation(
        &self,
        name: &str,
        new_password: &SecretString,
    ) -> Result<Secret, VaultError> {
        self.modify(name, kinds::VAULT_ROTATION_BEGIN, |s| {
            if s.pending_password.is_some() || s.pending_totp.is_some() {
                return Err(VaultError::Invalid(format!(
                    "vault entry `{name}` has an unfinished rotation or MFA enrolment; log in once (which settles it) and try again"
                )));
            }
            s.pending_password = Some(new_password.clone());
            Ok(true)
        })
        .await
    }

    /// The app took `password`: make it the password, if it is the pending one.
    /// True when the entry now has it as its password (already, or by this call).
    pub async fn promote_pending(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<bool, VaultError> {
        let s = self
            .modify(name, kinds::VAULT_ROTATION_DONE, |s| {
                match &s.pending_password {
                    Some(p) if same(p, password) => {
                        s.password = password.clone();
                        s.pending_password = None;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await?;
        Ok(same(&s.password, password))
    }

    /// The app kept the old password: forget the pending one, if it is `password`.
    pub async fn discard_pending(
        &self,
        name: &str,
        password: &SecretString,
    ) -> Result<bool, VaultError> {
        let mut discarded = false;
        self.modify(name, kinds::VAULT_ROTATION_DISCARD, |s| {
            discarded = s
                .pending_password
                .as_ref()
                .is_some_and(|p| same(p, password));
            if discarded {
                s.pending_password = None;
            }
            Ok(discarded)
        })
        .await?;
        Ok(discarded)
    }

    /// Step 1 of an MFA enrolment: stores the TOTP seed the app showed as the pending
    /// TOTP, before the app is asked to confirm it (after which it requires codes).
    /// Refuses when another rotation or enrolment is pending.
    pub async fn begin_mfa(&self, name: &str, seed: &SecretString) -> Result<Secret, VaultError> {
        let spec = super::TotpSpec::parse(seed.expose_secret())?;
        self.modify(name, kinds::VAULT_MFA_BEGIN, |s| {
            if s.pending_password.is_some() || s.pending_totp.is_some() {
                return Err(VaultError::Invalid(format!(
                    "vault entry `{name}` has an unfinished rotation or MFA enrolment; log in once (which settles it) and try again"
                )));
            }
            s.pending_totp = Some((seed.clone(), spec.clone()));
            Ok(true)
        })
        .await
    }

    /// The app requires codes of `seed` now: make it the entry's TOTP, if it is the
    /// pending one. True when the entry now has it as its TOTP (already, or by this call).
    pub async fn promote_pending_totp(
        &self,
        name: &str,
        seed: &SecretString,
    ) -> Result<bool, VaultError> {
        let s = self
            .modify(name, kinds::VAULT_MFA_DONE, |s| match &s.pending_totp {
                Some((p, _)) if same(p, seed) => {
                    s.totp = s.pending_totp.take();
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await?;
        Ok(s.totp.as_ref().is_some_and(|(t, _)| same(t, seed)))
    }

    /// The app did not take the enrolment: forget the pending TOTP, if it is `seed`.
    pub async fn discard_pending_totp(
        &self,
        name: &str,
        seed: &SecretString,
    ) -> Result<bool, VaultError> {
        let mut discarded = false;
        self.modify(name, kinds::VAULT_MFA_DISCARD, |s| {
            discarded = s.pending_totp.as_ref().is_some_and(|(p, _)| same(p, seed));
            if discarded {
                s.pending_totp = None;
            }
            Ok(discarded)
        })
        .await?;
        Ok(discarded)
    }
}

/// Constant-time comparison of two secrets.
fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret()
        .as_bytes()
        .ct_eq(b.expose_secret().as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        let mut s = Secret::new(
            "svc@acme.example",
            "pw-0123456789-secret",
            Some("JBSWY3DPEHPK3PXP"),
        )
        .expect("secret");
        s.set_extra("api_token", "tok-abcdef-123").expect("extra");
        s
    }

    fn row_of(w: &VaultWrite) -> VaultRow {
        VaultRow {
            name: w.name.clone(),
            key_id: w.key_id.clone(),
            fields: w.fields.clone(),
            nonce: w.nonce.clone(),
            ciphertext: w.ciphertext.clone(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces_and_no_plaintext() {
        let key = VaultKey::from_bytes([1u8; 32]);
        let keys = Keyring::new(VaultKey::from_bytes([1u8; 32]));
        let mut s = secret();
        s.pending_password = Some(SecretString::from("next-pw-XYZ-987654".to_owned()));
        let w1 = seal(&key, "acme-admin", &s).expect("seal");
        let w2 = seal(&key, "acme-admin", &s).expect("seal");
        assert_ne!(w1.nonce, w2.nonce, "one random nonce per write");
        assert_ne!(w1.ciphertext, w2.ciphertext);
        assert_eq!(
            w1.fields,
            "username,password,pending_password,totp,extra.api_token"
        );
        for v in s.values() {
            assert!(
                !w1.ciphertext
                    .windows(v.len())
                    .any(|win| win == v.as_bytes()),
                "plaintext in the ciphertext"
            );
        }
        let back = open(&keys, &row_of(&w1)).expect("open");
        assert_eq!(back.username.expose_secret(), "svc@acme.example");
        assert_eq!(back.password.expose_secret(), "pw-0123456789-secret");
        assert_eq!(
            back.pending_password.as_ref().map(|p| p.expose_secret()),
            Some("next-pw-XYZ-987654")
        );
        assert_eq!(
            back.totp.as_ref().map(|(s, _)| s.expose_secret()),
            Some("JBSWY3DPEHPK3PXP")
        );
        assert_eq!(back.extra["api_token"].expose_secret(), "tok-abcdef-123");
    }

    #[test]
    fn wrong_key_tampering_and_moving_are_refused_without_garbage() {
        let key = VaultKey::from_bytes([1u8; 32]);
        let w = seal(&key, "acme-admin", &secret()).expect("seal");

        let other = Keyring::new(VaultKey::from_bytes([2u8; 32]));
        let e = open(&other, &row_of(&w)).expect_err("wrong key refused");
        assert!(matches!(e, VaultError::UnknownKey { .. }));
        assert!(e.to_string().contains("(wrong key?)"), "{e}");
        assert!(e.to_string().contains(key.id()), "{e}");

        let keys = Keyring::new(VaultKey::from_bytes([1u8; 32]));
        for i in [0, w.ciphertext.len() / 2, w.ciphertext.len() - 1] {
            let mut r = row_of(&w);
            r.ciphertext[i] ^= 0x01;
            let e = open(&keys, &r).expect_err("flipped byte detected");
            assert!(matches!(e, VaultError::Decrypt { .. }), "{e}");
        }
        let mut r = row_of(&w);
        r.nonce[3] ^= 0x80;
        assert!(matches!(open(&keys, &r), Err(VaultError::Decrypt { .. })));

        let mut r = row_of(&w);
        r.name = "other-app".into();
        let e = open(&keys, &r).expect_err("moved entry refused");
        assert_eq!(
            e.to_string(),
            format!(
                "vault key `{}` cannot decrypt entry `other-app`: the stored entry was altered or belongs to another entry",
                key.id()
            )
        );

        // The field list is bound too: hiding a field is detected.
        let mut r = row_of(&w);
        r.fields = "username,password".into();
        assert!(matches!(open(&keys, &r), Err(VaultError::Decrypt { .. })));
    }

    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(
            associated_data("ab", "c", "d"),
            associated_data("a", "bc", "d")
        );
    }
}
