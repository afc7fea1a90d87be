//! What reconciliation keeps: accounts found in the app that nobody provisioned, the
//! writes a reconciliation run makes (all in one transaction with its audit event), and
//! the schedules that run periodic work once across nodes.

use std::time::Duration;

use serde_json::Value;

use super::jobs::{JobOperation, JobStatus};
use super::{Backend, ResourceType, Store, StoreError};
use crate::audit::{self, NewEvent};
use crate::clock::format_time;

/// An account the app has that no SCIM user of the integration matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredAccount {
    /// The app's id, else the lower-cased login or email.
    pub account_key: String,
    pub app_account_id: Option<String>,
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    /// `None`: the app's list shows no state.
    pub active: Option<bool>,
    /// `discovered`, `allowed` (on the allow-list or the service account),
    /// `deactivating` (a job is queued), `deactivated`, `gone` (no longer listed).
    pub status: String,
    pub first_seen: String,
    pub last_seen: String,
}

/// One user's write of a reconciliation run.
#[derive(Debug, Clone)]
pub struct ReconcileWrite {
    /// The SCIM user id, or `discovered:KEY` for a discovered account.
    pub resource_id: String,
    /// What the app is known to have from now on: `Some((app id, state))` records it,
    /// `None` forgets it (the account is gone from the app).
    pub known: Option<(Option<String>, Value)>,
    /// Queue a job that brings the account in line.
    pub queue: bool,
}

/// A schedule's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub integration_id: String,
    pub kind: String,
    pub next_due: String,
    pub lease_owner: Option<String>,
    pub last_run: Option<String>,
    pub last_result: Option<Value>,
}

/// The resource id of a discovered account's job.
pub const DISCOVERED_PREFIX: &str = "discovered:";

type DiscoveredRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    String,
);

impl Store {
    /// Every app account Usher knows of for the integration: (SCIM user id, app id, state).
    pub async fn app_accounts_of(
        &self,
        integration_id: &str,
    ) -> Result<Vec<(String, Option<String>, Value)>, StoreError> {
        let rows: Vec<(String, Option<String>, String)> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT resource_id, app_account_id, state FROM app_accounts WHERE integration_id = $1 ORDER BY resource_id",
            )
            .bind(integration_id)
            .fetch_all(r)
            .await?
        });
        rows.into_iter()
            .map(|(id, app, s)| {
                serde_json::from_str(&s)
                    .map(|v| (id, app, v))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The discovered accounts of an integration (every status), by key.
    pub async fn discovered_accounts(
        &self,
        integration_id: &str,
    ) -> Result<Vec<DiscoveredAccount>, StoreError> {
        let rows: Vec<DiscoveredRow> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT account_key, app_account_id, user_name, email, display_name, roles, active, status, first_seen, last_seen \
                 FROM discovered_accounts WHERE integration_id = $1 ORDER BY account_key",
            )
            .bind(integration_id)
            .fetch_all(r)
            .await?
        });
        rows.into_iter()
            .map(
                |(key, app, user, email, name, roles, active, status, first, last)| {
                    Ok(DiscoveredAccount {
                        account_key: key,
                        app_account_id: app,
                        user_name: user,
                        email,
                        display_name: name,
                        roles: serde_json::from_str(&roles)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        active: active.as_deref().map(|a| a == "true"),
                        status,
                        first_seen: first,
                        last_seen: last,
                    })
                },
            )
            .collect()
    }

    /// Sets a discovered account's status (`deactivated` once its job confirmed it).
    pub async fn set_discovered_status(
        &self,
        integration_id: &str,
        account_key: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE discovered_accounts SET status = $3 WHERE integration_id = $1 AND account_key = $2",
            )
            .bind(integration_id)
            .bind(account_key)
            .bind(status)
            .execute(w)
            .await?;
            Ok(())
        })
    }

    /// Records a reconciliation run in one transaction: the accounts it discovered
    /// (those of earlier runs not seen now become `gone`), what the app is known to
    /// have for each user it looked at, the jobs it queued, and its audit event.
    /// Returns the ids of the jobs queued.
    pub async fn record_reconciliation(
        &self,
        integration_id: &str,
        discovered: &[DiscoveredAccount],
        writes: &[ReconcileWrite],
        event: &NewEvent,
    ) -> Result<Vec<i64>, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let mut jobs = Vec::new();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            for d in discovered {
                let roles = serde_json::to_string(&d.roles).unwrap_or_else(|_| "[]".into());
                let active = d.active.map(|a| if a { "true" } else { "false" });
                sqlx::query(
                    "INSERT INTO discovered_accounts (integration_id, account_key, app_account_id, user_name, email, display_name, roles, active, status, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
                     ON CONFLICT (integration_id, account_key) DO UPDATE SET app_account_id = excluded.app_account_id, user_name = excluded.user_name, \
                       email = excluded.email, display_name = excluded.display_name, roles = excluded.roles, active = excluded.active, \
                       status = excluded.status, last_seen = excluded.last_seen",
                )
                .bind(integration_id)
                .bind(&d.account_key)
                .bind(d.app_account_id.as_deref())
                .bind(d.user_name.as_deref())
                .bind(d.email.as_deref())
                .bind(d.display_name.as_deref())
                .bind(&roles)
                .bind(active)
                .bind(&d.status)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE discovered_accounts SET status = 'gone' WHERE integration_id = $1 AND last_seen < $2 AND status <> 'gone'",
            )
            .bind(integration_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            for wr in writes {
                match &wr.known {
                    Some((app_id, state)) => {
                        upsert_app_account!(
                            tx,
                            &now,
                            integration_id,
                            wr.resource_id.as_str(),
                            app_id.as_deref(),
                            state.to_string()
                        );
                    }
                    None => {
                        sqlx::query(
                            "DELETE FROM app_accounts WHERE integration_id = $1 AND resource_id = $2",
                        )
                        .bind(integration_id)
                        .bind(&wr.resource_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if wr.queue {
                    let id = insert_job!(
                        tx,
                        &now,
                        integration_id,
                        ResourceType::User,
                        wr.resource_id.as_str(),
                        JobOperation::Reconcile,
                        0i64
                    );
                    jobs.push(id);
                    mark_queued!(tx, integration_id, [&wr.resource_id]);
                }
            }
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        if !jobs.is_empty() {
            self.wake_job_watchers();
        }
        Ok(jobs)
    }

    /// Takes the lease of a due schedule (made due now if it is new): true when this
    /// process is to run it. A schedule is run by one process at a time; a holder that
    /// died loses it when `lease` runs out.
    pub async fn claim_schedule(
        &self,
        integration_id: &str,
        kind: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now_t = self.clock.now();
        let now = format_time(now_t);
        let until = format_time(now_t + chrono::Duration::from_std(lease).unwrap_or_default());
        let n = on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO schedules (integration_id, kind, next_due) VALUES ($1, $2, $3) ON CONFLICT (integration_id, kind) DO NOTHING",
            )
            .bind(integration_id)
            .bind(kind)
            .bind(&now)
            .execute(w)
            .await?;
            sqlx::query(
                "UPDATE schedules SET lease_owner = $3, lease_until = $5 \
                 WHERE integration_id = $1 AND kind = $2 AND next_due <= $4 AND (lease_until IS NULL OR lease_until < $4)",
            )
            .bind(integration_id)
            .bind(kind)
            .bind(owner)
            .bind(&now)
            .bind(&until)
            .execute(w)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends a run of a schedule this process holds: due again after `every`, with the
    /// run's result. False when the lease was lost meanwhile.
    pub async fn finish_schedule(
        &self,
        integration_id: &str,
        kind: &str,
        owner: &str,
        every: Duration,
        result: &Value,
    ) -> Result<bool, StoreError> {
        let now_t = self.clock.now();
        let now = format_time(now_t);
        let next = format_time(now_t + chrono::Duration::from_std(every).unwrap_or_default());
        let n = on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE schedules SET next_due = $4, last_run = $5, last_result = $6, lease_owner = NULL, lease_until = NULL \
                 WHERE integration_id = $1 AND kind = $2 AND lease_owner = $3",
            )
            .bind(integration_id)
            .bind(kind)
            .bind(owner)
            .bind(&next)
            .bind(&now)
            .bind(result.to_string())
            .execute(w)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// A schedule's row, if it ever ran or was claimed.
    pub async fn schedule(
        &self,
        integration_id: &str,
        kind: &str,
    ) -> Result<Option<ScheduleRow>, StoreError> {
        type Row = (String, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT next_due, lease_owner, last_run, last_result FROM schedules WHERE integration_id = $1 AND kind = $2",
            )
            .bind(integration_id)
            .bind(kind)
            .fetch_optional(r)
            .await?
        });
        Ok(row.map(
            |(next_due, lease_owner, last_run, last_result)| ScheduleRow {
                integration_id: integration_id.to_owned(),
                kind: kind.to_owned(),
                next_due,
                lease_owner,
                last_run,
                last_result: last_result.and_then(|s| serde_json::from_str(&s).ok()),
            },
        ))
    }
}

/// What one of an integration's own checks last found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub integration_id: String,
    pub check: String,
    /// `ok` or `degraded`.
    pub status: String,
    pub detail: Value,
    pub since: String,
    pub checked_at: String,
}

impl Store {
    /// Records a check's finding, with `event` appended in the same transaction when the
    /// status changed. Returns the status before (`None` the first time).
    pub async fn record_health(
        &self,
        integration_id: &str,
        check: &str,
        status: &str,
        detail: &Value,
        event_on_change: impl FnOnce(Option<&str>) -> Option<NewEvent>,
    ) -> Result<Option<String>, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let detail = detail.to_string();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            if is_pg {
                // One writer per row: two nodes' canaries agree on what changed.
                sqlx::query("SELECT pg_advisory_xact_lock(7355609)")
                    .execute(&mut *tx)
                    .await?;
            }
            let before: Option<String> = sqlx::query_scalar(
                "SELECT status FROM integration_health WHERE integration_id = $1 AND check_name = $2",
            )
            .bind(integration_id)
            .bind(check)
            .fetch_optional(&mut *tx)
            .await?;
            let changed = before.as_deref() != Some(status);
            sqlx::query(
                "INSERT INTO integration_health (integration_id, check_name, status, detail, since, checked_at) VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (integration_id, check_name) DO UPDATE SET status = excluded.status, detail = excluded.detail, checked_at = excluded.checked_at, \
                   since = CASE WHEN integration_health.status = excluded.status THEN integration_health.since ELSE excluded.since END",
            )
            .bind(integration_id)
            .bind(check)
            .bind(status)
            .bind(&detail)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            if changed && let Some(event) = event_on_change(before.as_deref()) {
                append_audit!(tx, is_pg, &now, &event);
            }
            tx.commit().await?;
            Ok(before)
        })
    }

    /// Every check's last finding for an integration (or all integrations).
    pub async fn health(&self, integration_id: Option<&str>) -> Result<Vec<HealthRow>, StoreError> {
        type Row = (String, String, String, String, String, String);
        let rows: Vec<Row> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT integration_id, check_name, status, detail, since, checked_at FROM integration_health \
                 WHERE ($1 IS NULL OR integration_id = $1) ORDER BY integration_id, check_name",
            )
            .bind(integration_id)
            .fetch_all(r)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(integration_id, check, status, detail, since, checked_at)| HealthRow {
                    integration_id,
                    check,
                    status,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    since,
                    checked_at,
                },
            )
            .collect())
    }
}
