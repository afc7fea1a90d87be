//! The vault's rows: opaque ciphertexts keyed by entry name. The crypto lives in
//! `crate::vault`; nothing here ever sees a plaintext value.

use std::fmt;

use sqlx::Row;

use super::{Backend, Store, StoreError, unique_violation};
use crate::audit::{self, NewEvent};

/// One stored vault entry, as the database holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultRow {
    pub name: String,
    /// Fingerprint of the key the entry is encrypted under.
    pub key_id: String,
    /// Names of the fields present (no values), bound into the associated data.
    pub fields: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Bumped at every write.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl fmt::Debug for VaultRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultRow")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("fields", &self.fields)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("version", &self.version)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What a write stores for an entry.
#[derive(Clone)]
pub struct VaultWrite {
    pub name: String,
    pub key_id: String,
    pub fields: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for VaultWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultWrite")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("fields", &self.fields)
            .finish()
    }
}

/// The condition a write needs to hold, so that concurrent writers cannot lose an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultExpect {
    /// Create or replace, whatever is there.
    Any,
    /// Only create: the name must be free.
    Absent,
    /// Only replace the entry at this version.
    Version(i64),
}

const VAULT_COLUMNS: &str =
    "name, key_id, fields, nonce, ciphertext, version, created_at, updated_at";

fn vault_row<R>(row: &R) -> Result<VaultRow, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(VaultRow {
        name: row.try_get("name")?,
        key_id: row.try_get("key_id")?,
        fields: row.try_get("fields")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One conditional write inside an open transaction; the new version.
macro_rules! vault_write {
    ($tx:expr, $now:expr, $w:expr, $expect:expr) => {{
        let w: &VaultWrite = $w;
        let written: Result<Option<i64>, sqlx::Error> = match $expect {
            VaultExpect::Any => {
                sqlx::query_scalar(
                    "INSERT INTO vault_entries (name, key_id, fields, nonce, ciphertext, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) \
                     ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id, fields = excluded.fields, nonce = excluded.nonce, ciphertext = excluded.ciphertext, version = vault_entries.version + 1, updated_at = excluded.updated_at \
                     RETURNING version",
                )
                .bind(&w.name)
                .bind(&w.key_id)
                .bind(&w.fields)
                .bind(w.nonce.as_slice())
                .bind(w.ciphertext.as_slice())
                .bind($now)
                .fetch_optional(&mut *$tx)
                .await
            }
            VaultExpect::Absent => {
                sqlx::query_scalar(
                    "INSERT INTO vault_entries (name, key_id, fields, nonce, ciphertext, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) RETURNING version",
                )
                .bind(&w.name)
                .bind(&w.key_id)
                .bind(&w.fields)
                .bind(w.nonce.as_slice())
                .bind(w.ciphertext.as_slice())
                .bind($now)
                .fetch_optional(&mut *$tx)
                .await
            }
            VaultExpect::Version(v) => {
                sqlx::query_scalar(
                    "UPDATE vault_entries SET key_id = $1, fields = $2, nonce = $3, ciphertext = $4, version = version + 1, updated_at = $5 WHERE name = $6 AND version = $7 RETURNING version",
                )
                .bind(&w.key_id)
                .bind(&w.fields)
                .bind(w.nonce.as_slice())
                .bind(w.ciphertext.as_slice())
                .bind($now)
                .bind(&w.name)
                .bind(v)
                .fetch_optional(&mut *$tx)
                .await
            }
        };
        match written {
            Err(e) if unique_violation(&e) => Err(StoreError::Uniqueness(format!(
                "vault entry `{}`",
                w.name
            ))),
            Err(e) => Err(StoreError::from(e)),
            Ok(Some(version)) => Ok(version),
            Ok(None) => {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM vault_entries WHERE name = $1")
                        .bind(&w.name)
                        .fetch_optional(&mut *$tx)
                        .await?;
                Err(if exists.is_some() {
                    StoreError::VersionConflict
                } else {
                    StoreError::NotFound
                })
            }
        }
    }};
}

impl Store {
    /// One vault entry's row.
    pub async fn vault_get(&self, name: &str) -> Result<Option<VaultRow>, StoreError> {
        let sql = format!("SELECT {VAULT_COLUMNS} FROM vault_entries WHERE name = $1");
        on_backend!(self, |_w, r| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(name)
                .fetch_optional(r)
                .await?;
            row.as_ref().map(vault_row).transpose()
        })
    }

    /// Every vault row, by name.
    pub async fn vault_list(&self) -> Result<Vec<VaultRow>, StoreError> {
        let sql = format!("SELECT {VAULT_COLUMNS} FROM vault_entries ORDER BY name");
        on_backend!(self, |_w, r| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(r)
                .await?;
            rows.iter().map(vault_row).collect()
        })
    }

    /// Writes one entry if `expect` holds, with its audit event; returns the new version.
    pub async fn vault_put(
        &self,
        write: &VaultWrite,
        expect: VaultExpect,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let version = vault_write!(tx, &now, write, expect)?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(version)
        })
    }

    /// Rewrites several entries in one transaction, each only at its expected version
    /// (all or none: a conflict rolls everything back).
    pub async fn vault_put_all(
        &self,
        writes: &[(VaultWrite, i64)],
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            for (write, version) in writes {
                vault_write!(tx, &now, write, VaultExpect::Version(*version))?;
            }
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes an entry; false when there was none.
    pub async fn vault_delete(&self, name: &str, event: &NewEvent) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let gone = sqlx::query("DELETE FROM vault_entries WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            if gone {
                append_audit!(tx, is_pg, &now, event);
            }
            tx.commit().await?;
            Ok(gone)
        })
    }
}
