//! State of an integration that every process obeys: paused after the app refused the
//! service account's sign-in, and the sign-in attempts counted against a budget.

use super::{Backend, Store, StoreError};
use crate::audit::{self, NewEvent};

/// An integration's shared state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegrationState {
    pub integration_id: String,
    /// When it was paused; `None` while it runs.
    pub paused_at: Option<String>,
    pub paused_reason: Option<String>,
    /// The version of the service account's vault entry at the pause: a new version
    /// (the operator corrected the secret) resumes it.
    pub paused_secret: Option<String>,
}

impl IntegrationState {
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }
}

/// Whether a sign-in may be attempted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInAdmission {
    /// Go ahead (the attempt is recorded).
    Admitted,
    /// The integration is paused.
    Paused { reason: String },
    /// The budget of attempts is spent until `retry_at`.
    Budget { retry_at: String, used: i64 },
}

const STATE_COLUMNS: &str = "integration_id, paused_at, paused_reason, paused_secret";

type StateRow = (String, Option<String>, Option<String>, Option<String>);

fn state(row: StateRow) -> IntegrationState {
    IntegrationState {
        integration_id: row.0,
        paused_at: row.1,
        paused_reason: row.2,
        paused_secret: row.3,
    }
}

impl Store {
    /// The service account signed in now; `mfa`: the app asked for its TOTP code.
    pub async fn record_login(&self, id: &str, mfa: bool) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO integration_state (integration_id, updated_at, last_login_at, last_login_mfa) VALUES ($1, $2, $2, $3) \
                 ON CONFLICT (integration_id) DO UPDATE SET last_login_at = excluded.last_login_at, last_login_mfa = excluded.last_login_mfa, updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(&now)
            .bind(if mfa { "true" } else { "false" })
            .execute(w)
            .await?;
            Ok(())
        })
    }

    /// The last successful sign-in of the integration's service account: (when, whether
    /// the app asked for the TOTP code).
    pub async fn last_login(&self, id: &str) -> Result<Option<(String, bool)>, StoreError> {
        let row: Option<(Option<String>, Option<String>)> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT last_login_at, last_login_mfa FROM integration_state WHERE integration_id = $1",
            )
            .bind(id)
            .fetch_optional(r)
            .await?
        });
        Ok(row.and_then(|(at, mfa)| at.map(|at| (at, mfa.as_deref() == Some("true")))))
    }

    /// The shared state of one integration (`None`: never paused nor signed in to).
    pub async fn integration_state(
        &self,
        id: &str,
    ) -> Result<Option<IntegrationState>, StoreError> {
        let sql =
            format!("SELECT {STATE_COLUMNS} FROM integration_state WHERE integration_id = $1");
        let row: Option<StateRow> = on_backend!(self, |_w, r| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id)
                .fetch_optional(r)
                .await?
        });
        Ok(row.map(state))
    }

    /// Every paused integration.
    pub async fn paused_integrations(&self) -> Result<Vec<IntegrationState>, StoreError> {
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM integration_state WHERE paused_at IS NOT NULL ORDER BY integration_id"
        );
        let rows: Vec<StateRow> = on_backend!(self, |_w, r| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(r)
                .await?
        });
        Ok(rows.into_iter().map(state).collect())
    }

    /// Pauses an integration: no process signs in to its app again until it is resumed,
    /// and its queued jobs wait as `paused` (their users' provisioning reason says why).
    /// One transaction with the audit event. False when it was paused already.
    pub async fn pause_integration(
        &self,
        id: &str,
        reason: &str,
        secret_version: Option<&str>,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let shown = format!("integration paused: {reason}");
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let n = sqlx::query(
                "INSERT INTO integration_state (integration_id, paused_at, paused_reason, paused_secret, updated_at) VALUES ($1, $2, $3, $4, $2) \
                 ON CONFLICT (integration_id) DO UPDATE SET paused_at = excluded.paused_at, paused_reason = excluded.paused_reason, paused_secret = excluded.paused_secret, updated_at = excluded.updated_at \
                 WHERE integration_state.paused_at IS NULL",
            )
            .bind(id)
            .bind(&now)
            .bind(reason)
            .bind(secret_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE jobs SET status = 'paused', updated_at = $1 WHERE integration_id = $2 AND status = 'pending'",
            )
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE scim_resources SET prov_state = 'pending', prov_reason = $1 WHERE integration_id = $2 AND resource_type = 'User' \
                 AND id IN (SELECT resource_id FROM jobs WHERE integration_id = $2 AND status = 'paused')",
            )
            .bind(&shown)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Resumes a paused integration: its paused jobs are queued to run now. One
    /// transaction with the audit event. False when it was not paused.
    pub async fn resume_integration(&self, id: &str, event: &NewEvent) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let done = on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let n = sqlx::query(
                "UPDATE integration_state SET paused_at = NULL, paused_reason = NULL, paused_secret = NULL, updated_at = $1 WHERE integration_id = $2 AND paused_at IS NOT NULL",
            )
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE scim_resources SET prov_reason = NULL WHERE integration_id = $1 AND resource_type = 'User' AND prov_state = 'pending' \
                 AND id IN (SELECT resource_id FROM jobs WHERE integration_id = $1 AND status = 'paused')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET status = 'pending', run_after = $1, updated_at = $1 WHERE integration_id = $2 AND status = 'paused'",
            )
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok::<bool, StoreError>(true)
        })?;
        if done {
            self.wake_job_watchers();
        }
        Ok(done)
    }

    /// Admits one sign-in attempt to the app of integration `id`, recorded so that every
    /// process counts it: refused while the integration is paused, and, with a `budget`
    /// of (attempts, window), once that many were made within the window.
    pub async fn admit_sign_in(
        &self,
        id: &str,
        process: &str,
        budget: Option<(i64, std::time::Duration)>,
    ) -> Result<SignInAdmission, StoreError> {
        let now = self.now();
        let forget_before = self.time_before(std::time::Duration::from_secs(24 * 3600));
        let window = budget.map(|(limit, w)| (limit, w, self.time_before(w)));
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            // The upsert locks the integration's row (PostgreSQL) for the rest of the
            // transaction: admissions of one integration happen one at a time everywhere.
            let (paused_at, reason): (Option<String>, Option<String>) = sqlx::query_as(
                "INSERT INTO integration_state (integration_id, updated_at) VALUES ($1, $2) \
                 ON CONFLICT (integration_id) DO UPDATE SET updated_at = excluded.updated_at \
                 RETURNING paused_at, paused_reason",
            )
            .bind(id)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            if paused_at.is_some() {
                return Ok(SignInAdmission::Paused {
                    reason: reason.unwrap_or_default(),
                });
            }
            if let Some((limit, span, since)) = &window {
                let (used, oldest): (i64, Option<String>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(at) FROM login_attempts WHERE integration_id = $1 AND at > $2",
                )
                .bind(id)
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
                if used >= *limit {
                    let retry_at = oldest
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| {
                            crate::clock::format_time(
                                t.with_timezone(&chrono::Utc)
                                    + chrono::Duration::from_std(*span).unwrap_or_default(),
                            )
                        })
                        .unwrap_or_else(|| now.clone());
                    return Ok(SignInAdmission::Budget { retry_at, used });
                }
            }
            sqlx::query("DELETE FROM login_attempts WHERE integration_id = $1 AND at < $2")
                .bind(id)
                .bind(&forget_before)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO login_attempts (integration_id, at, process) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(&now)
            .bind(process)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(SignInAdmission::Admitted)
        })
    }

    /// Sign-in attempts recorded for an integration (tests, operators).
    pub async fn sign_in_attempts(&self, id: &str) -> Result<i64, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM login_attempts WHERE integration_id = $1")
                    .bind(id)
                    .fetch_one(r)
                    .await?,
            )
        })
    }
}
