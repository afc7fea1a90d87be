//! The admin console's durable state: sessions, OpenID sign-ins under way, failed
//! sign-ins (the rate limit) and the break-glass local account. In the database so that
//! several nodes on PostgreSQL share it.

use std::time::Duration;

use super::{Backend, JobOperation, JobStatus, ResourceType, Store, StoreError};
use crate::audit;
use crate::audit::NewEvent;

/// A live session, as the console sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Who, as the audit trail names them (`oidc:…` or `local:admin`).
    pub person: String,
    pub display_name: String,
    /// `owner`, `super_admin`, `admin` or `auditor`.
    pub role: String,
    pub csrf_token: String,
    pub created_at: String,
}

/// A new session to store.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: &'a str,
    pub person: &'a str,
    pub display_name: &'a str,
    pub role: &'a str,
    pub csrf_token: &'a str,
}

/// An OpenID sign-in under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub browser_hash: String,
    pub pkce_verifier: String,
    pub nonce: String,
    /// Where the browser goes once signed in (a local path).
    pub next_path: String,
}

type SessionRow = (String, String, String, String, String);

/// What the Integrations page shows of one integration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegrationActivity {
    /// The time of the last job that reached the app (succeeded).
    pub last_synced_at: Option<String>,
    /// Users by provisioning state (`provisioned`, `pending`, `failed`, …).
    pub users_by_state: Vec<(String, i64)>,
    /// Failed runs (retried or final) in the window asked for.
    pub recent_failures: i64,
    /// Outcomes of the newest finished jobs, newest first (`succeeded` / `failed`).
    pub last_outcomes: Vec<String>,
}

/// Which audit events to list: all filters are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub integration_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub target: Option<&'a str>,
    /// Events at or after this time (RFC 3339, as stored).
    pub since: Option<&'a str>,
    /// Events before this time.
    pub until: Option<&'a str>,
    /// Paging: events with a smaller sequence number only (the next page, newest first).
    pub before_seq: Option<i64>,
    /// Paging for exports: events with a larger sequence number only (oldest first).
    pub after_seq: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub(super) fn ago(&self, d: Duration) -> String {
        let now = self.clock.now();
        let then = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        crate::clock::format_time(then)
    }

    /// Stores a session and its sign-in event in one transaction. Sessions older than
    /// `forget_after` go (over by their absolute timeout: a replayed cookie of one is
    /// refused as unknown), and so do failed sign-ins older than it.
    pub async fn create_session(
        &self,
        s: &NewSession<'_>,
        forget_after: Duration,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let old = self.ago(forget_after);
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            sqlx::query("DELETE FROM console_sessions WHERE created_at < $1")
                .bind(&old)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM console_sign_in_failures WHERE at < $1")
                .bind(&old)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, person, display_name, role, csrf_token, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(s.id_hash)
            .bind(s.person)
            .bind(s.display_name)
            .bind(s.role)
            .bind(s.csrf_token)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The session whose cookie hashes to `id_hash`, if it is neither signed out nor
    /// past its idle or absolute timeout. Use keeps it alive (written at most every
    /// few seconds, so that reading pages does not turn into a write each).
    pub async fn live_session(
        &self,
        id_hash: &str,
        idle: Duration,
        absolute: Duration,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let idle_since = self.ago(idle);
        let created_since = self.ago(absolute);
        let row: Option<SessionRow> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT person, display_name, role, csrf_token, created_at FROM console_sessions \
                 WHERE id_hash = $1 AND ended_at IS NULL AND last_seen_at >= $2 AND created_at >= $3",
            )
            .bind(id_hash)
            .bind(&idle_since)
            .bind(&created_since)
            .fetch_optional(r)
            .await?
        });
        let Some(row) = row else { return Ok(None) };
        let now = self.now();
        let stale = self.ago(Duration::from_secs(5));
        on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $3",
            )
            .bind(&now)
            .bind(id_hash)
            .bind(&stale)
            .execute(w)
            .await?;
        });
        Ok(Some(ConsoleSession {
            person: row.0,
            display_name: row.1,
            role: row.2,
            csrf_token: row.3,
            created_at: row.4,
        }))
    }

    /// Whether a session is still live, without counting this look as use (the live
    /// Activity stream asks this: an open tab is not a person at work).
    pub async fn session_is_live(
        &self,
        id_hash: &str,
        idle: Duration,
        absolute: Duration,
    ) -> Result<bool, StoreError> {
        let idle_since = self.ago(idle);
        let created_since = self.ago(absolute);
        let n: i64 = on_backend!(self, |_w, r| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM console_sessions WHERE id_hash = $1 AND ended_at IS NULL AND last_seen_at >= $2 AND created_at >= $3",
            )
            .bind(id_hash)
            .bind(&idle_since)
            .bind(&created_since)
            .fetch_one(r)
            .await?
        });
        Ok(n > 0)
    }

    /// Signs a session out (its cookie is refused from now on), with its event. False
    /// when it was not live.
    pub async fn end_session(&self, id_hash: &str, event: &NewEvent) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let n = sqlx::query(
                "UPDATE console_sessions SET ended_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
            )
            .bind(&now)
            .bind(id_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                append_audit!(tx, is_pg, &now, event);
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Remembers an OpenID sign-in under way.
    pub async fn begin_login(&self, state: &str, login: &PendingLogin) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO console_logins (state, browser_hash, pkce_verifier, nonce, next_path, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(state)
            .bind(&login.browser_hash)
            .bind(&login.pkce_verifier)
            .bind(&login.nonce)
            .bind(&login.next_path)
            .bind(&now)
            .execute(w)
            .await?;
        });
        Ok(())
    }

    /// Takes (and forgets) the sign-in under way for `state`, if it began less than
    /// `max_age` ago: each one is finished at most once.
    pub async fn take_login(
        &self,
        state: &str,
        max_age: Duration,
    ) -> Result<Option<PendingLogin>, StoreError> {
        let since = self.ago(max_age);
        let row: Option<(String, String, String, String)> = on_backend!(self, |w, _r| {
            // Old ones go too: nobody finishes them any more.
            let mut tx = w.begin().await?;
            let row: Option<(String, String, String, String, String)> = sqlx::query_as(
                "DELETE FROM console_logins WHERE state = $1 RETURNING browser_hash, pkce_verifier, nonce, next_path, created_at",
            )
            .bind(state)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM console_logins WHERE created_at < $1")
                .bind(&since)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            row.filter(|r| r.4 >= since).map(|r| (r.0, r.1, r.2, r.3))
        });
        Ok(row.map(
            |(browser_hash, pkce_verifier, nonce, next_path)| PendingLogin {
                browser_hash,
                pkce_verifier,
                nonce,
                next_path,
            },
        ))
    }

    /// Failed sign-ins under `key` in the last `window`.
    pub async fn sign_in_failures(&self, key: &str, window: Duration) -> Result<i64, StoreError> {
        let since = self.ago(window);
        let n: i64 = on_backend!(self, |_w, r| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM console_sign_in_failures WHERE key = $1 AND at >= $2",
            )
            .bind(key)
            .bind(&since)
            .fetch_one(r)
            .await?
        });
        Ok(n)
    }

    /// Counts a failed sign-in against each of `keys`, with its audit event.
    pub async fn record_sign_in_failure(
        &self,
        keys: &[&str],
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            for key in keys {
                sqlx::query("INSERT INTO console_sign_in_failures (key, at) VALUES ($1, $2)")
                    .bind(*key)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
            }
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Sets the password hash of a local account, with its audit event.
    pub async fn set_local_password(
        &self,
        name: &str,
        password_hash: &str,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            sqlx::query(
                "INSERT INTO console_accounts (name, password_hash, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(password_hash)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            // Sessions opened with the old password end with it.
            sqlx::query(
                "UPDATE console_sessions SET ended_at = $1 WHERE person = $2 AND ended_at IS NULL",
            )
            .bind(&now)
            .bind(format!("console:local:{name}"))
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The password hash of a local account.
    pub async fn local_password(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(on_backend!(self, |_w, r| {
            sqlx::query_scalar("SELECT password_hash FROM console_accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(r)
                .await?
        }))
    }

    /// What the Integrations page shows of one integration; `failures_since` bounds
    /// the failures counted.
    pub async fn integration_activity(
        &self,
        integration_id: &str,
        failures_since: Duration,
        outcomes: i64,
    ) -> Result<IntegrationActivity, StoreError> {
        let since = self.ago(failures_since);
        on_backend!(self, |_w, r| {
            let last_synced_at: Option<String> = sqlx::query_scalar(
                "SELECT MAX(updated_at) FROM jobs WHERE integration_id = $1 AND status = 'succeeded'",
            )
            .bind(integration_id)
            .fetch_one(r)
            .await?;
            let users_by_state: Vec<(String, i64)> = sqlx::query_as(
                "SELECT prov_state, COUNT(*) FROM scim_resources WHERE integration_id = $1 AND resource_type = 'User' GROUP BY prov_state ORDER BY prov_state",
            )
            .bind(integration_id)
            .fetch_all(r)
            .await?;
            let recent_failures: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND event_type IN ('job.failed', 'job.retry') AND at >= $2",
            )
            .bind(integration_id)
            .bind(&since)
            .fetch_one(r)
            .await?;
            let last_outcomes: Vec<String> = sqlx::query_scalar(
                "SELECT status FROM jobs WHERE integration_id = $1 AND status IN ('succeeded', 'failed') ORDER BY updated_at DESC, id DESC LIMIT $2",
            )
            .bind(integration_id)
            .bind(outcomes)
            .fetch_all(r)
            .await?;
            Ok(IntegrationActivity {
                last_synced_at,
                users_by_state,
                recent_failures,
                last_outcomes,
            })
        })
    }

    /// Audit events matching `f`: newest first, or oldest first with `after_seq` (exports).
    pub async fn find_audit_events(
        &self,
        f: &AuditFilter<'_>,
    ) -> Result<Vec<crate::audit::Event>, StoreError> {
        let mut cond: Vec<String> = Vec::new();
        let mut text: Vec<&str> = Vec::new();
        for (col, op, v) in [
            ("integration_id", "=", f.integration_id),
            ("event_type", "=", f.event_type),
            ("actor", "=", f.actor),
            ("target", "=", f.target),
            ("at", ">=", f.since),
            ("at", "<", f.until),
        ] {
            if let Some(v) = v {
                text.push(v);
                cond.push(format!("{col} {op} ${}", text.len()));
            }
        }
        let mut seq: Vec<i64> = Vec::new();
        if let Some(b) = f.before_seq {
            seq.push(b);
            cond.push(format!("seq < ${}", text.len() + seq.len()));
        }
        if let Some(a) = f.after_seq {
            seq.push(a);
            cond.push(format!("seq > ${}", text.len() + seq.len()));
        }
        let wh = if cond.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", cond.join(" AND "))
        };
        let order = if f.after_seq.is_some() { "ASC" } else { "DESC" };
        let limit = f.limit.clamp(1, 10_000);
        let sql = format!(
            "SELECT seq, at, actor, event_type, target, integration_id, detail, prev_hash, hash FROM audit_events{wh} ORDER BY seq {order} LIMIT {limit}"
        );
        on_backend!(self, |_w, r| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for t in &text {
                q = q.bind(*t);
            }
            for n in &seq {
                q = q.bind(*n);
            }
            let rows = q.fetch_all(r).await?;
            rows.iter().map(super::event_from_row).collect()
        })
    }

    /// One audit event.
    pub async fn audit_event(&self, seq: i64) -> Result<Option<crate::audit::Event>, StoreError> {
        on_backend!(self, |_w, r| {
            let row = sqlx::query(
                "SELECT seq, at, actor, event_type, target, integration_id, detail, prev_hash, hash FROM audit_events WHERE seq = $1",
            )
            .bind(seq)
            .fetch_optional(r)
            .await?;
            row.as_ref().map(super::event_from_row).transpose()
        })
    }

    /// Operator: applies a user's desired state to the app again (a `replace` job at
    /// the stored version), with its audit event. `None` when there is no such user.
    pub async fn rerun_user(
        &self,
        integration_id: &str,
        user_id: &str,
        event: &NewEvent,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let rt = ResourceType::User;
        let op = JobOperation::Replace;
        let job = on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let version: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM scim_resources WHERE integration_id = $1 AND id = $2 AND resource_type = 'User'",
            )
            .bind(integration_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(version) = version else {
                return Ok(None);
            };
            let id = insert_job!(tx, &now, integration_id, rt, user_id, op, version);
            mark_queued!(tx, integration_id, [user_id.to_owned()].iter());
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            id
        });
        self.wake_job_watchers();
        Ok(Some(job))
    }
}
