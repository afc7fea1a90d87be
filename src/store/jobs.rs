//! Jobs as the engine sees them: claim with a lease, heartbeat, finish, retry; what the
//! app is known to have; group expansion; the webhook outbox; operators' commands.
//!
//! A job reconciles one resource. Claims respect per-resource order (a job is taken only
//! when no older job of its resource is queued, staged or running) and a per-integration
//! limit of running jobs. SQLite claims go through its single writer; PostgreSQL claims
//! use `FOR UPDATE SKIP LOCKED`, so several processes never take the same job.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use sqlx::Row;

use super::{Backend, ResourceType, Store, StoreError};
use crate::audit::{self, NewEvent};

/// Where a job is in its life. Stored as its lower-case name.
///
/// `pending` → `running` → `succeeded` | `failed` (or back to `pending` for a retry);
/// `staged` waits for an invite claim; `cancelled` by an operator; `superseded` by a
/// newer job of the same resource whose run covered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Staged,
    /// Waits because its integration is paused (the app refused the sign-in).
    Paused,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Superseded,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Staged,
        JobStatus::Paused,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Staged => "staged",
            JobStatus::Paused => "paused",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Superseded => "superseded",
        }
    }

    /// True once the job will not run again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Superseded
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not a [`JobStatus`] or [`JobOperation`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job {what} `{name}`; one of: {known}")]
pub struct UnknownJobValue {
    what: &'static str,
    name: String,
    known: String,
}

impl FromStr for JobStatus {
    type Err = UnknownJobValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownJobValue {
                what: "status",
                name: s.chars().take(40).collect(),
                known: JobStatus::ALL.map(JobStatus::as_str).join(", "),
            })
    }
}

/// What caused a job: the SCIM write (`create`, `replace`, `patch`, `delete`) or, for
/// a user's job queued by a group change, `group`. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobOperation {
    Create,
    Replace,
    Patch,
    Delete,
    Group,
    /// Queued by a reconciliation run (drift repaired, missing account, orphan).
    Reconcile,
}

impl JobOperation {
    pub const ALL: [JobOperation; 6] = [
        JobOperation::Create,
        JobOperation::Replace,
        JobOperation::Patch,
        JobOperation::Delete,
        JobOperation::Group,
        JobOperation::Reconcile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOperation::Create => "create",
            JobOperation::Replace => "replace",
            JobOperation::Patch => "patch",
            JobOperation::Delete => "delete",
            JobOperation::Group => "group",
            JobOperation::Reconcile => "reconcile",
        }
    }
}

impl fmt::Display for JobOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobOperation {
    type Err = UnknownJobValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobOperation::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownJobValue {
                what: "operation",
                name: s.chars().take(40).collect(),
                known: JobOperation::ALL.map(JobOperation::as_str).join(", "),
            })
    }
}

/// A job row with everything operators and the engine look at.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub integration_id: String,
    pub resource_type: ResourceType,
    pub resource_id: String,
    pub operation: JobOperation,
    pub resource_version: i64,
    pub status: JobStatus,
    pub attempts: i64,
    pub run_after: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
    pub last_error: Option<String>,
    pub superseded_by: Option<i64>,
    pub covers_job: Option<i64>,
    pub outcome: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    /// The process holding the lease (its heartbeat keeps the job).
    pub lease_process: Option<String>,
    /// The previous holder, when the newest claim took the job over.
    pub taken_over_from: Option<String>,
    /// Why it was taken over: `process stopped` or `lease expired`.
    pub taken_over_why: Option<String>,
}

impl JobRow {
    /// True once the job will not run again by itself.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// A job this process holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: JobRow,
    pub owner: String,
    /// Newest job id of the resource when it was claimed: the run covers up to it.
    pub covers: i64,
}

/// How a claimed job ends.
#[derive(Debug, Clone)]
pub enum JobFinish {
    Succeeded,
    /// Back to `pending`, to run again at `run_after`.
    Retry {
        run_after: String,
        error: String,
    },
    Failed {
        error: String,
    },
    /// Back to waiting without spending an attempt: `paused` while the integration is
    /// paused (else `pending`), with `reason` as the last error.
    Paused {
        reason: String,
    },
    /// Back to `pending` at `run_after` without spending an attempt (the sign-in
    /// budget is spent until then).
    Deferred {
        run_after: String,
        reason: String,
    },
}

/// Who claims: the worker (lease owner) and, when the process heartbeats, which
/// process it belongs to and how long a silent process keeps its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub owner: &'a str,
    pub process: Option<&'a str>,
    pub stale_after: std::time::Duration,
}

/// One webhook notification to send.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub id: i64,
    pub url: String,
    pub event_type: String,
    pub body: String,
    pub attempts: i64,
}

const JOB_COLUMNS: &str = "id, integration_id, resource_type, resource_id, operation, resource_version, status, attempts, run_after, lease_owner, lease_until, last_error, superseded_by, covers_job, outcome, created_at, updated_at, lease_process, taken_over_from, taken_over_why";

fn job_from_row<R>(row: &R) -> Result<JobRow, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let outcome: Option<String> = row.try_get("outcome")?;
    let resource_type: String = row.try_get("resource_type")?;
    let operation: String = row.try_get("operation")?;
    let status: String = row.try_get("status")?;
    let corrupt = |e: UnknownJobValue| StoreError::Corrupt(e.to_string());
    Ok(JobRow {
        id: row.try_get("id")?,
        integration_id: row.try_get("integration_id")?,
        resource_type: ResourceType::parse(&resource_type)
            .ok_or_else(|| StoreError::Corrupt(format!("resource type `{resource_type}`")))?,
        resource_id: row.try_get("resource_id")?,
        operation: operation.parse().map_err(corrupt)?,
        resource_version: row.try_get("resource_version")?,
        status: status.parse().map_err(corrupt)?,
        attempts: row.try_get("attempts")?,
        run_after: row.try_get("run_after")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        superseded_by: row.try_get("superseded_by")?,
        covers_job: row.try_get("covers_job")?,
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        lease_process: row.try_get("lease_process")?,
        taken_over_from: row.try_get("taken_over_from")?,
        taken_over_why: row.try_get("taken_over_why")?,
    })
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub integration_id: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub status: Option<JobStatus>,
    pub limit: i64,
}

/// Ends, as `superseded` by the claimed job, the user's queued jobs its run covered.
macro_rules! supersede_covered {
    ($tx:expr, $now:expr, $claimed:expr) => {{
        let claimed: &ClaimedJob = $claimed;
        sqlx::query(
            "UPDATE jobs SET status = 'superseded', superseded_by = $1, updated_at = $2 WHERE integration_id = $3 AND resource_id = $4 AND status = 'pending' AND id > $1 AND id <= $5",
        )
        .bind(claimed.job.id)
        .bind($now)
        .bind(&claimed.job.integration_id)
        .bind(&claimed.job.resource_id)
        .bind(claimed.covers)
        .execute(&mut *$tx)
        .await?;
    }};
}

impl Store {
    fn time_after(&self, d: std::time::Duration) -> String {
        let now = self.clock.now();
        crate::clock::format_time(now + chrono::Duration::from_std(d).unwrap_or_default())
    }

    /// Takes the next runnable job of `integration_id` if fewer than `limit` of its jobs
    /// run (with a live lease), holding it for `lease`. Expired leases are taken over.
    pub async fn claim_job(
        &self,
        integration_id: &str,
        limit: i64,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let claimant = Claimant {
            owner,
            process: None,
            stale_after: std::time::Duration::ZERO,
        };
        self.claim_job_as(integration_id, limit, &claimant, lease)
            .await
    }

    /// Takes the next runnable job of `integration_id` if fewer than `limit` of its jobs
    /// run, holding it for `lease` on behalf of `claimant`. A running job is live while
    /// its lease runs and, when its process heartbeats, while that heartbeat is newer
    /// than `claimant.stale_after`; a job that is not live is taken over (recorded in
    /// `taken_over_from` and `taken_over_why`). Nothing of a paused integration is taken.
    pub async fn claim_job_as(
        &self,
        integration_id: &str,
        limit: i64,
        claimant: &Claimant<'_>,
        lease: std::time::Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = self.now();
        let until = self.time_after(lease);
        // Without a heartbeat of its own, a claimant judges others by their leases only.
        let heard_since = if claimant.process.is_some() {
            self.time_before(claimant.stale_after)
        } else {
            String::new()
        };
        let lock = if self.is_pg() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let live = |x: &str| {
            format!(
                "({x}.lease_until >= $3 AND ({x}.lease_process IS NULL OR EXISTS (SELECT 1 FROM usher_processes p WHERE p.id = {x}.lease_process AND p.heartbeat_at >= $7)))"
            )
        };
        let (live_j, live_r, live_c) = (live("j"), live("r"), live("c"));
        let sql = format!(
            "UPDATE jobs SET status = 'running', lease_owner = $4, lease_until = $5, lease_process = $6, attempts = attempts + 1, updated_at = $3, \
             taken_over_from = CASE WHEN status = 'running' THEN lease_owner ELSE NULL END, \
             taken_over_why = CASE WHEN status = 'running' AND lease_until < $3 THEN 'lease expired' WHEN status = 'running' THEN 'process stopped' ELSE NULL END, \
             covers_job = (SELECT MAX(k.id) FROM jobs k WHERE k.integration_id = jobs.integration_id AND k.resource_id = jobs.resource_id AND (k.status = 'pending' OR k.id = jobs.id)) \
             WHERE id = (SELECT j.id FROM jobs j WHERE j.integration_id = $1 \
               AND NOT EXISTS (SELECT 1 FROM integration_state s WHERE s.integration_id = $1 AND s.paused_at IS NOT NULL) \
               AND ((j.status = 'pending' AND j.run_after <= $3) OR (j.status = 'running' AND NOT {live_j})) \
               AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.resource_id = j.resource_id AND o.integration_id = j.integration_id AND o.id < j.id AND o.status IN ('pending', 'staged', 'paused', 'running')) \
               AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.resource_id = j.resource_id AND r.integration_id = j.integration_id AND r.id <> j.id AND r.status = 'running' AND {live_r}) \
               AND (SELECT COUNT(*) FROM jobs c WHERE c.integration_id = $1 AND c.status = 'running' AND {live_c}) < $2 \
               ORDER BY CASE WHEN j.status = 'running' THEN 0 ELSE 1 END, j.id LIMIT 1{lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        let row = on_backend!(self, |w, _r| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(integration_id)
                .bind(limit)
                .bind(&now)
                .bind(claimant.owner)
                .bind(&until)
                .bind(claimant.process)
                .bind(&heard_since)
                .fetch_optional(w)
                .await?;
            row.as_ref().map(job_from_row).transpose()?
        });
        Ok(row.map(|job| ClaimedJob {
            covers: job.covers_job.unwrap_or(job.id),
            job,
            owner: claimant.owner.to_owned(),
        }))
    }

    /// Extends a lease; false when this owner no longer holds the job.
    pub async fn heartbeat(
        &self,
        job_id: i64,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let until = self.time_after(lease);
        let n = on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
            )
            .bind(&until)
            .bind(job_id)
            .bind(owner)
            .execute(w)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends a claimed run: job status, covered jobs, provisioning state and the audit
    /// event, in one transaction. False when the lease was lost (nothing is written).
    pub async fn finish_job(
        &self,
        claimed: &ClaimedJob,
        finish: &JobFinish,
        outcome: &Value,
        provisioning: Option<(&str, Option<&str>)>,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let job = &claimed.job;
        let (status, run_after, error) = match finish {
            JobFinish::Succeeded => (JobStatus::Succeeded, None, None),
            JobFinish::Retry { run_after, error } => (
                JobStatus::Pending,
                Some(run_after.as_str()),
                Some(error.as_str()),
            ),
            JobFinish::Failed { error } => (JobStatus::Failed, None, Some(error.as_str())),
            JobFinish::Paused { reason } => (JobStatus::Paused, None, Some(reason.as_str())),
            JobFinish::Deferred { run_after, reason } => (
                JobStatus::Pending,
                Some(run_after.as_str()),
                Some(reason.as_str()),
            ),
        };
        // Waiting for a resume or for the sign-in budget spends no attempt.
        let spent: i64 = if matches!(
            finish,
            JobFinish::Paused { .. } | JobFinish::Deferred { .. }
        ) {
            1
        } else {
            0
        };
        let outcome = outcome.to_string();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            // A paused job goes back to `pending` when the pause was lifted meanwhile.
            let n = sqlx::query(
                "UPDATE jobs SET status = CASE WHEN $1 = 'paused' AND NOT EXISTS (SELECT 1 FROM integration_state s WHERE s.integration_id = jobs.integration_id AND s.paused_at IS NOT NULL) THEN 'pending' ELSE $1 END, \
                 run_after = COALESCE($2, run_after), last_error = $3, outcome = $4, lease_owner = NULL, lease_until = NULL, lease_process = NULL, attempts = attempts - $8, updated_at = $5 \
                 WHERE id = $6 AND lease_owner = $7 AND status = 'running'",
            )
            .bind(status.as_str())
            .bind(run_after)
            .bind(error)
            .bind(&outcome)
            .bind(&now)
            .bind(job.id)
            .bind(&claimed.owner)
            .bind(spent)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            if matches!(status, JobStatus::Succeeded | JobStatus::Failed) {
                supersede_covered!(tx, &now, claimed);
            }
            if let Some((state, reason)) = provisioning {
                sqlx::query(
                    "UPDATE scim_resources SET prov_state = $1, prov_reason = $2, last_synced_at = $3 WHERE integration_id = $4 AND id = $5",
                )
                .bind(state)
                .bind(reason)
                .bind(&now)
                .bind(&job.integration_id)
                .bind(&job.resource_id)
                .execute(&mut *tx)
                .await?;
            }
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            self.wake_job_watchers();
            Ok(true)
        })
    }

    /// Records what the app now has for a user (after a confirmed write), and its id.
    pub async fn record_app_account(
        &self,
        integration_id: &str,
        resource_id: &str,
        app_account_id: Option<&str>,
        state: &Value,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let state = state.to_string();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            upsert_app_account!(
                tx,
                &now,
                integration_id,
                resource_id,
                app_account_id,
                &state
            );
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forgets the app account of a user (it was deleted in the app).
    pub async fn forget_app_account(
        &self,
        integration_id: &str,
        resource_id: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, |w, _r| {
            sqlx::query("DELETE FROM app_accounts WHERE integration_id = $1 AND resource_id = $2")
                .bind(integration_id)
                .bind(resource_id)
                .execute(w)
                .await?;
            Ok(())
        })
    }

    /// What the app is known to have for a user: (app account id, state).
    pub async fn app_account(
        &self,
        integration_id: &str,
        resource_id: &str,
    ) -> Result<Option<(Option<String>, Value)>, StoreError> {
        let row: Option<(Option<String>, String)> = on_backend!(self, |_w, r| {
            sqlx::query_as(
                "SELECT app_account_id, state FROM app_accounts WHERE integration_id = $1 AND resource_id = $2",
            )
            .bind(integration_id)
            .bind(resource_id)
            .fetch_optional(r)
            .await?
        });
        row.map(|(id, s)| {
            serde_json::from_str(&s)
                .map(|v| (id, v))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// The newest job outcome event (`job.succeeded` / `job.failed`) of a resource.
    pub async fn last_job_outcome(
        &self,
        integration_id: &str,
        resource_id: &str,
    ) -> Result<Option<String>, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_scalar(
                "SELECT event_type FROM audit_events WHERE target = $1 AND integration_id = $2 AND event_type IN ('job.succeeded', 'job.failed') ORDER BY seq DESC LIMIT 1",
            )
            .bind(resource_id)
            .bind(integration_id)
            .fetch_optional(r)
            .await?)
        })
    }

    /// True when some job of the resource other than `except` has started a run.
    pub async fn resource_was_attempted(
        &self,
        integration_id: &str,
        resource_id: &str,
        except: i64,
    ) -> Result<bool, StoreError> {
        let n: i64 = on_backend!(self, |_w, r| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE integration_id = $1 AND resource_id = $2 AND id <> $3 AND attempts > 0",
            )
            .bind(integration_id)
            .bind(resource_id)
            .bind(except)
            .fetch_one(r)
            .await?
        });
        Ok(n > 0)
    }

    /// Turns a group job into one job per user whose roles the group change touches
    /// (members added or removed; every member when the group was renamed or deleted),
    /// and ends the group job, in one transaction. Returns the users queued.
    pub async fn expand_group_job(
        &self,
        claimed: &ClaimedJob,
        event_of: impl FnOnce(&[String]) -> NewEvent,
    ) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let job = &claimed.job;
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let name: Option<Option<String>> = sqlx::query_scalar(
                "SELECT display_name FROM scim_resources WHERE integration_id = $1 AND id = $2",
            )
            .bind(&job.integration_id)
            .bind(&job.resource_id)
            .fetch_optional(&mut *tx)
            .await?;
            let members: Vec<String> = sqlx::query_scalar(
                "SELECT member_id FROM scim_group_members WHERE integration_id = $1 AND group_id = $2 ORDER BY member_id",
            )
            .bind(&job.integration_id)
            .bind(&job.resource_id)
            .fetch_all(&mut *tx)
            .await?;
            let known: Option<String> = sqlx::query_scalar(
                "SELECT members FROM group_sync WHERE integration_id = $1 AND group_id = $2",
            )
            .bind(&job.integration_id)
            .bind(&job.resource_id)
            .fetch_optional(&mut *tx)
            .await?;
            let known: Value = known
                .and_then(|k| serde_json::from_str(&k).ok())
                .unwrap_or(Value::Null);
            let known_members: Vec<String> = known
                .get("members")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let known_name = known.get("displayName").and_then(Value::as_str);
            let name = name.flatten();
            let renamed = known_name.is_some() && known_name != name.as_deref();
            let mut affected: std::collections::BTreeSet<String> = Default::default();
            for m in &members {
                if renamed || !known_members.contains(m) {
                    affected.insert(m.clone());
                }
            }
            for m in &known_members {
                if renamed || name.is_none() || !members.contains(m) {
                    affected.insert(m.clone());
                }
            }
            let mut queued = Vec::new();
            for user in &affected {
                let version: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM scim_resources WHERE integration_id = $1 AND id = $2 AND resource_type = 'User'",
                )
                .bind(&job.integration_id)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(v) = version {
                    insert_job!(
                        tx,
                        &now,
                        &job.integration_id,
                        ResourceType::User,
                        user,
                        JobOperation::Group,
                        v
                    );
                    queued.push(user.clone());
                }
            }
            mark_queued!(tx, &job.integration_id, queued.iter());
            // Members a write marked pending that this run finds unaffected (a change
            // undone before it ran) are back to what their own jobs confirmed.
            for user in members.iter().chain(known_members.iter()) {
                if affected.contains(user) {
                    continue;
                }
                sqlx::query(
                    "UPDATE scim_resources SET prov_state = 'provisioned' WHERE integration_id = $1 AND id = $2 AND resource_type = 'User' AND prov_state = 'pending' \
                     AND NOT EXISTS (SELECT 1 FROM jobs WHERE integration_id = $1 AND resource_id = $2 AND status IN ('pending', 'staged', 'running', 'paused')) \
                     AND EXISTS (SELECT 1 FROM app_accounts WHERE integration_id = $1 AND resource_id = $2)",
                )
                .bind(&job.integration_id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            }
            if name.is_some() {
                let state =
                    serde_json::json!({"displayName": name, "members": members}).to_string();
                sqlx::query(
                    "INSERT INTO group_sync (integration_id, group_id, members, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (integration_id, group_id) DO UPDATE SET members = excluded.members, updated_at = excluded.updated_at",
                )
                .bind(&job.integration_id)
                .bind(&job.resource_id)
                .bind(&state)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query("DELETE FROM group_sync WHERE integration_id = $1 AND group_id = $2")
                    .bind(&job.integration_id)
                    .bind(&job.resource_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let outcome = serde_json::json!({"queued_users": queued}).to_string();
            let n = sqlx::query(
                "UPDATE jobs SET status = 'succeeded', outcome = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
            )
            .bind(&outcome)
            .bind(&now)
            .bind(job.id)
            .bind(&claimed.owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(Vec::new());
            }
            supersede_covered!(tx, &now, claimed);
            let event = event_of(&queued);
            append_audit!(tx, is_pg, &now, &event);
            tx.commit().await?;
            self.wake_job_watchers();
            Ok(queued)
        })
    }

    /// One job.
    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        on_backend!(self, |_w, r| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id)
                .fetch_optional(r)
                .await?;
            row.as_ref().map(job_from_row).transpose()
        })
    }

    /// The job a SCIM write of `resource_id` at `version` queued.
    pub async fn job_for_write(
        &self,
        integration_id: &str,
        resource_id: &str,
        version: i64,
    ) -> Result<Option<i64>, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_scalar(
                "SELECT MAX(id) FROM jobs WHERE integration_id = $1 AND resource_id = $2 AND resource_version = $3",
            )
            .bind(integration_id)
            .bind(resource_id)
            .bind(version)
            .fetch_one(r)
            .await?)
        })
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, f: &JobFilter<'_>) -> Result<Vec<JobRow>, StoreError> {
        let mut cond = Vec::new();
        let mut binds: Vec<&str> = Vec::new();
        for (col, v) in [
            ("integration_id", f.integration_id),
            ("resource_id", f.resource_id),
            ("status", f.status.map(JobStatus::as_str)),
        ] {
            if let Some(v) = v {
                binds.push(v);
                cond.push(format!("{col} = ${}", binds.len()));
            }
        }
        let wh = if cond.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", cond.join(" AND "))
        };
        let limit = if f.limit > 0 { f.limit } else { 100 };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs{wh} ORDER BY id DESC LIMIT {limit}");
        on_backend!(self, |_w, r| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for b in &binds {
                q = q.bind(*b);
            }
            let rows = q.fetch_all(r).await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// Jobs of one integration that are running or due to run (sync-mode back-pressure).
    pub async fn queued_jobs(&self, integration_id: &str) -> Result<i64, StoreError> {
        let now = self.now();
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE integration_id = $1 AND ((status = 'pending' AND run_after <= $2) OR status = 'running')",
            )
            .bind(integration_id)
            .bind(&now)
            .fetch_one(r)
            .await?)
        })
    }

    /// Operator: runs a failed or cancelled job again (attempts start over).
    pub async fn requeue_job(&self, id: i64, event: &NewEvent) -> Result<bool, StoreError> {
        self.operator_transition(
            id,
            "UPDATE jobs SET status = 'pending', attempts = 0, run_after = $1, last_error = NULL, updated_at = $1 WHERE id = $2 AND status IN ('failed', 'cancelled')",
            Some(JobStatus::Pending.as_str()),
            event,
        )
        .await
    }

    /// Operator: cancels a job that has not started (pending or staged).
    pub async fn cancel_job(&self, id: i64, event: &NewEvent) -> Result<bool, StoreError> {
        self.operator_transition(
            id,
            "UPDATE jobs SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status IN ('pending', 'staged')",
            None,
            event,
        )
        .await
    }

    async fn operator_transition(
        &self,
        id: i64,
        sql: &'static str,
        prov_state: Option<&str>,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let n = sqlx::query(sql)
                .bind(&now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            if let Some(state) = prov_state {
                sqlx::query(
                    "UPDATE scim_resources SET prov_state = $1, prov_reason = NULL WHERE id = (SELECT resource_id FROM jobs WHERE id = $2) AND resource_type = 'User'",
                )
                .bind(state)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            self.wake_job_watchers();
            Ok(true)
        })
    }

    /// A joiner claims access: their staged job becomes pending. Returns the job.
    pub async fn claim_invite(
        &self,
        token: &str,
        event_of: impl FnOnce(&JobRow) -> NewEvent,
    ) -> Result<Option<JobRow>, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        let sql = format!(
            "UPDATE jobs SET status = 'pending', run_after = $1, updated_at = $1 WHERE claim_token = $2 AND status = 'staged' RETURNING {JOB_COLUMNS}"
        );
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&now)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let job = job_from_row(&row)?;
            sqlx::query(
                "UPDATE scim_resources SET prov_state = 'pending' WHERE integration_id = $1 AND id = $2",
            )
            .bind(&job.integration_id)
            .bind(&job.resource_id)
            .execute(&mut *tx)
            .await?;
            let event = event_of(&job);
            append_audit!(tx, is_pg, &now, &event);
            tx.commit().await?;
            self.wake_job_watchers();
            Ok(Some(job))
        })
    }

    /// The staged job behind a claim token, if it is still staged.
    pub async fn staged_invite(&self, token: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE claim_token = $1");
        on_backend!(self, |_w, r| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(token)
                .fetch_optional(r)
                .await?;
            row.as_ref().map(job_from_row).transpose()
        })
    }

    /// The claim token of a user's staged joiner job.
    pub async fn claim_token_of(
        &self,
        integration_id: &str,
        resource_id: &str,
    ) -> Result<Option<String>, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_scalar(
                "SELECT claim_token FROM jobs WHERE integration_id = $1 AND resource_id = $2 AND status = 'staged' ORDER BY id LIMIT 1",
            )
            .bind(integration_id)
            .bind(resource_id)
            .fetch_optional(r)
            .await?)
        })
    }

    /// Queues a webhook notification.
    pub async fn enqueue_webhook(
        &self,
        url: &str,
        event_type: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "INSERT INTO webhook_deliveries (url, event_type, body, attempts, status, run_after, created_at) VALUES ($1, $2, $3, 0, 'pending', $4, $4)",
            )
            .bind(url)
            .bind(event_type)
            .bind(body)
            .bind(&now)
            .execute(w)
            .await?;
            Ok(())
        })
    }

    /// Takes up to `limit` due webhook deliveries, hiding them from other senders for `lease`.
    pub async fn claim_webhooks(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let now = self.now();
        let until = self.time_after(lease);
        let lock = if self.is_pg() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET run_after = $2, attempts = attempts + 1 WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND run_after <= $1 ORDER BY id LIMIT $3{lock}) RETURNING id, url, event_type, body, attempts"
        );
        on_backend!(self, |w, _r| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&now)
                .bind(&until)
                .bind(limit)
                .fetch_all(w)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(WebhookDelivery {
                        id: r.try_get("id")?,
                        url: r.try_get("url")?,
                        event_type: r.try_get("event_type")?,
                        body: r.try_get("body")?,
                        attempts: r.try_get("attempts")?,
                    })
                })
                .collect()
        })
    }

    /// Records a delivery attempt: delivered, or retry at `retry_after`, or given up.
    pub async fn webhook_attempted(
        &self,
        id: i64,
        result: Result<(), String>,
        retry_after: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        let (status, error, run_after) = match (&result, retry_after) {
            (Ok(()), _) => ("delivered", None, self.now()),
            (Err(e), Some(d)) => ("pending", Some(e.as_str()), self.time_after(d)),
            (Err(e), None) => ("failed", Some(e.as_str()), self.now()),
        };
        on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, last_error = $2, run_after = $3 WHERE id = $4",
            )
            .bind(status)
            .bind(error)
            .bind(&run_after)
            .bind(id)
            .execute(w)
            .await?;
            Ok(())
        })
    }

    /// Webhook deliveries by status (tests, operators).
    pub async fn webhook_statuses(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_as(
                "SELECT event_type, status, attempts FROM webhook_deliveries ORDER BY id",
            )
            .fetch_all(r)
            .await?)
        })
    }

    /// Sets a user's provisioning state outside a job's end (e.g. a staged invite).
    pub async fn set_provisioning_state(
        &self,
        integration_id: &str,
        resource_id: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE scim_resources SET prov_state = $1, prov_reason = $2, last_synced_at = $3 WHERE integration_id = $4 AND id = $5",
            )
            .bind(state)
            .bind(reason)
            .bind(&now)
            .bind(integration_id)
            .bind(resource_id)
            .execute(w)
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_operations_round_trip_and_refuse_unknown_names() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(format!("{s:<10}|"), format!("{:<10}|", s.as_str()));
        }
        for o in JobOperation::ALL {
            assert_eq!(o.as_str().parse::<JobOperation>(), Ok(o));
        }
        let e = "Pending".parse::<JobStatus>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown job status `Pending`; one of: pending, staged, paused, running, succeeded, failed, cancelled, superseded"
        );
        assert!("update".parse::<JobOperation>().is_err());
        assert!(JobStatus::Superseded.is_terminal() && !JobStatus::Staged.is_terminal());
        assert!(
            !JobStatus::Paused.is_terminal(),
            "a paused job runs again after the resume"
        );
    }

    /// The statuses the SQL of the store names are the enum's: a typo in a query
    /// would otherwise match nothing, silently.
    #[test]
    fn every_status_named_in_sql_is_a_job_status() {
        let sources = [include_str!("jobs.rs"), include_str!("mod.rs")];
        let re = regex::Regex::new(r"status(?: = | IN \()((?:'[a-z]+'(?:, )?)+)")
            .unwrap_or_else(|_| unreachable!());
        let mut seen = 0;
        for src in sources {
            for c in re.captures_iter(src) {
                for name in c[1].trim_end_matches(", ").split(", ") {
                    let name = name.trim_matches('\'');
                    seen += 1;
                    assert!(name.parse::<JobStatus>().is_ok(), "`{name}` in SQL");
                }
            }
        }
        assert!(seen > 15, "the pattern found only {seen} names");
    }
}
