//! SSO sessions (docs/sso.md): who is signed in to which integration's app through
//! Usher, and the app's cookies kept for them (sealed by the caller).

use std::time::Duration;

use super::{Backend, Store, StoreError};

/// One SSO session.
#[derive(Debug, Clone)]
pub struct SsoSessionRow {
    pub integration_id: String,
    pub user_id: String,
    pub subject: String,
    /// The sealed cookie jar, once the app signed the person in.
    pub jar: Option<String>,
    pub created_at: String,
    pub last_seen: String,
}

impl Store {
    /// Opens an SSO session named by `id_hash` (the SHA-256 of its cookie).
    pub async fn sso_session_open(
        &self,
        id_hash: &str,
        integration_id: &str,
        user_id: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO sso_sessions (id_hash, integration_id, user_id, subject, jar, created_at, last_seen) VALUES ($1, $2, $3, $4, NULL, $5, $5)",
            )
            .bind(id_hash)
            .bind(integration_id)
            .bind(user_id)
            .bind(subject)
            .bind(&now)
            .execute(w)
            .await?;
            Ok(())
        })
    }

    /// The session `id_hash` of `integration_id`, if it was used within `idle`; an
    /// older one is deleted. A found one is marked used now.
    pub async fn sso_session(
        &self,
        id_hash: &str,
        integration_id: &str,
        idle: Duration,
    ) -> Result<Option<SsoSessionRow>, StoreError> {
        let now = self.now();
        let since = self.ago(idle);
        let row: Option<(String, String, String, Option<String>, String, String)> = on_backend!(
            self,
            |w, _r| {
                sqlx::query("DELETE FROM sso_sessions WHERE last_seen < $1")
                    .bind(&since)
                    .execute(w)
                    .await?;
                sqlx::query_as(
                    "UPDATE sso_sessions SET last_seen = $3 WHERE id_hash = $1 AND integration_id = $2 \
                     RETURNING integration_id, user_id, subject, jar, created_at, last_seen",
                )
                .bind(id_hash)
                .bind(integration_id)
                .bind(&now)
                .fetch_optional(w)
                .await?
            }
        );
        Ok(row.map(
            |(integration_id, user_id, subject, jar, created_at, last_seen)| SsoSessionRow {
                integration_id,
                user_id,
                subject,
                jar,
                created_at,
                last_seen,
            },
        ))
    }

    /// Replaces the session's sealed cookie jar (`None`: the app session ended).
    pub async fn sso_session_set_jar(
        &self,
        id_hash: &str,
        jar: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, |w, _r| {
            sqlx::query("UPDATE sso_sessions SET jar = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(jar)
                .execute(w)
                .await?;
            Ok(())
        })
    }

    /// Ends one session (sign-out, refusal). True when it existed.
    pub async fn sso_session_end(&self, id_hash: &str) -> Result<bool, StoreError> {
        let n = on_backend!(self, |w, _r| {
            sqlx::query("DELETE FROM sso_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(w)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Ends every SSO session of a user of an integration (a leaver): how many.
    pub async fn sso_sessions_end_for_user(
        &self,
        integration_id: &str,
        user_id: &str,
    ) -> Result<u64, StoreError> {
        let n = on_backend!(self, |w, _r| {
            sqlx::query("DELETE FROM sso_sessions WHERE integration_id = $1 AND user_id = $2")
                .bind(integration_id)
                .bind(user_id)
                .execute(w)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
