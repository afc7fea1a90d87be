//! Durable state: SCIM resources (the desired state), jobs and the audit trail.
//!
//! One implementation per backend would duplicate every query; instead each method
//! is written once and expanded for SQLite and PostgreSQL by `on_backend!`, using SQL
//! that both understand (`$1` placeholders, TEXT timestamps in a fixed-width RFC 3339
//! form that sorts as text). SQLite writes go through a single connection, which is
//! what SQLite wants anyway; PostgreSQL serialises only the audit chain head.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::audit::{self, NewEvent};
use crate::clock::{Clock, format_time};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to the database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("unsupported database URL `{0}` (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("not found")]
    NotFound,
    #[error("the resource changed since it was read")]
    VersionConflict,
    #[error("{0} is already taken")]
    Uniqueness(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Chain(#[from] audit::ChainError),
}

/// Kind of SCIM resource, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    User,
    Group,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::User => "User",
            ResourceType::Group => "Group",
        }
    }

    /// The stored name back to the type.
    pub fn parse(s: &str) -> Option<ResourceType> {
        match s {
            "User" => Some(ResourceType::User),
            "Group" => Some(ResourceType::Group),
            _ => None,
        }
    }
}

/// Where a user stands in the app (Usher's provisioning-state extension).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisioningState {
    pub state: String,
    pub reason: Option<String>,
    pub app_account_id: Option<String>,
    pub last_synced_at: Option<String>,
}

/// A stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub id: String,
    pub integration_id: String,
    pub resource_type: ResourceType,
    pub version: i64,
    pub created_at: String,
    pub modified_at: String,
    /// The resource body without `id` and `meta`.
    pub data: Value,
    pub provisioning: ProvisioningState,
}

/// What a write stores for a resource.
#[derive(Debug, Clone)]
pub struct ResourceWrite {
    pub data: Value,
    /// Lower-cased userName (Users) or displayName (Groups).
    pub name_key: String,
    pub display_name: Option<String>,
    pub external_id: Option<String>,
    /// Member ids for Groups (`None` for Users).
    pub members: Option<Vec<String>>,
    /// On create only: stage the joiner's job until this token is claimed (invites: on_claim).
    pub claim_token: Option<String>,
}

/// Columns a list can be narrowed by in SQL; the rest of a filter runs in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupColumn {
    Id,
    NameKey,
    DisplayName,
    ExternalId,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// A database as [`Store::inspect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStatus {
    /// False for a SQLite file not created yet.
    pub exists: bool,
    /// Migrations of this build not applied yet (`usher serve` applies them at start).
    pub pending: usize,
    /// Applied migrations this build does not know: the database is a newer Usher's.
    pub unknown: Vec<i64>,
    /// Migrations recorded as failed.
    pub failed: Vec<i64>,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    clock: Arc<dyn Clock>,
    /// Woken when jobs are queued or end in this process (workers, sync waiters).
    jobs_changed: Arc<tokio::sync::Notify>,
    /// SQLite: creates are committed in groups by one task ([`group_commit`]).
    creates: Option<tokio::sync::mpsc::Sender<CreateRequest>>,
    /// SQLite: the [`wal_checkpoints`] task's connection, and a sender held while the
    /// store lives (the task ends when the store is dropped or closed).
    checkpoints: Option<(sqlx::SqlitePool, tokio::sync::mpsc::Sender<()>)>,
}

/// One create waiting for its group's commit.
struct CreateRequest {
    integration_id: String,
    rt: ResourceType,
    id: String,
    now: String,
    write: ResourceWrite,
    event: NewEvent,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Creates in one group at most (one transaction, one savepoint each).
const CREATE_GROUP_MAX: usize = 64;

/// How often the SQLite WAL is copied back into the database file, off the commit path.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL size (pages) at which a commit checkpoints by itself, as SQLite does by
/// default at 1000: only when [`wal_checkpoints`] cannot keep up.
const WAL_AUTOCHECKPOINT_PAGES: &str = "20000";

/// Expands `$body` once per backend with `$w` bound to the pool writes go to and
/// `$r` to the pool reads come from.
macro_rules! on_backend {
    ($self:expr, |$w:ident, $r:ident| $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { writer, reader } => {
                let $w = writer;
                let $r = reader;
                $body
            }
            Backend::Postgres(pool) => {
                let $w = pool;
                let $r = pool;
                $body
            }
        }
    };
}

/// What a write that queues a job sets, in the same statement: the user is `pending`
/// until the job ends (a staged joiner stays staged until the claim).
pub(crate) const QUEUED_STATE: &str = "prov_state = CASE WHEN prov_state = 'staged' THEN 'staged' ELSE 'pending' END, prov_reason = CASE WHEN prov_state = 'staged' THEN prov_reason ELSE NULL END";

const RESOURCE_COLUMNS: &str = "id, integration_id, resource_type, version, created_at, modified_at, data, prov_state, prov_reason, app_account_id, last_synced_at";

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn resource_from_row<R>(row: &R) -> Result<StoredResource, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let data: String = row.try_get("data")?;
    let rt: String = row.try_get("resource_type")?;
    let resource_type = ResourceType::parse(&rt)
        .ok_or_else(|| StoreError::Corrupt(format!("resource type `{rt}`")))?;
    Ok(StoredResource {
        id: row.try_get("id")?,
        integration_id: row.try_get("integration_id")?,
        resource_type,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        modified_at: row.try_get("modified_at")?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        provisioning: ProvisioningState {
            state: row.try_get("prov_state")?,
            reason: row.try_get("prov_reason")?,
            app_account_id: row.try_get("app_account_id")?,
            last_synced_at: row.try_get("last_synced_at")?,
        },
    })
}

fn event_from_row<R>(row: &R) -> Result<audit::Event, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let detail: String = row.try_get("detail")?;
    Ok(audit::Event {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        event_type: row.try_get("event_type")?,
        target: row.try_get("target")?,
        integration_id: row.try_get("integration_id")?,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// The statements one audit append runs: lock the chain head (PostgreSQL only), read it, insert.
macro_rules! append_audit {
    ($tx:expr, $is_pg:expr, $now:expr, $event:expr) => {{
        let mut head = None;
        append_audit!($tx, $is_pg, $now, $event, &mut head);
    }};
    // `$head`: the chain's head as this transaction last read or wrote it (`None`: not
    // yet), kept up to date, so appends in one transaction read it once.
    ($tx:expr, $is_pg:expr, $now:expr, $event:expr, $head:expr) => {{
        let head: &mut Option<String> = $head;
        let prev = match head.take() {
            Some(prev) => prev,
            None => {
                if $is_pg {
                    sqlx::query("SELECT pg_advisory_xact_lock(7355608)")
                        .execute(&mut *$tx)
                        .await?;
                }
                let prev: Option<String> = sqlx::query_scalar(
                    "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&mut *$tx)
                .await?;
                prev.unwrap_or_else(|| audit::GENESIS_HASH.to_string())
            }
        };
        let event: &NewEvent = $event;
        let actor = event.actor.to_string();
        let detail = audit::canonical_json(&event.detail);
        let hash = audit::chain_hash(
            &prev,
            $now,
            &actor,
            event.event_type,
            event.target.as_deref(),
            event.integration_id.as_deref(),
            &detail,
        );
        sqlx::query(
            "INSERT INTO audit_events (at, actor, event_type, target, integration_id, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($now)
        .bind(&actor)
        .bind(event.event_type)
        .bind(event.target.as_deref())
        .bind(event.integration_id.as_deref())
        .bind(&detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        *head = Some(hash);
        audit::checkpoint::note_append();
    }};
}

/// Inserts a job (`pending`, or `staged` with a claim token) and evaluates to its id.
macro_rules! insert_job {
    ($tx:expr, $now:expr, $integration:expr, $rt:expr, $id:expr, $op:expr, $version:expr) => {
        insert_job!($tx, $now, $integration, $rt, $id, $op, $version, None::<&str>)
    };
    ($tx:expr, $now:expr, $integration:expr, $rt:expr, $id:expr, $op:expr, $version:expr, $claim:expr) => {{
        let claim: Option<&str> = $claim;
        let job_id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (integration_id, resource_type, resource_id, operation, resource_version, status, attempts, run_after, created_at, updated_at, claim_token) VALUES ($1, $2, $3, $4, $5, $7, 0, $6, $6, $6, $8) RETURNING id",
        )
        .bind($integration)
        .bind($rt.as_str())
        .bind($id)
        .bind(JobOperation::as_str($op))
        .bind($version)
        .bind($now)
        .bind(if claim.is_some() {
            JobStatus::Staged.as_str()
        } else {
            JobStatus::Pending.as_str()
        })
        .bind(claim)
        .fetch_one(&mut *$tx)
        .await?;
        job_id
    }};
}

/// Records what the app has for a user and its app account id (kept when `None`), and
/// the id on the SCIM resource.
macro_rules! upsert_app_account {
    ($tx:expr, $now:expr, $integration:expr, $resource:expr, $app_id:expr, $state:expr) => {{
        let app_id: Option<&str> = $app_id;
        sqlx::query(
            "INSERT INTO app_accounts (integration_id, resource_id, app_account_id, state, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (integration_id, resource_id) DO UPDATE SET app_account_id = COALESCE(excluded.app_account_id, app_accounts.app_account_id), state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind($integration)
        .bind($resource)
        .bind(app_id)
        .bind($state)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        if let Some(app_id) = app_id {
            sqlx::query(
                "UPDATE scim_resources SET app_account_id = $1 WHERE integration_id = $2 AND id = $3",
            )
            .bind(app_id)
            .bind($integration)
            .bind($resource)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// Marks users `pending` (see [`QUEUED_STATE`]): a write queued work that concerns them.
macro_rules! mark_queued {
    ($tx:expr, $integration:expr, $ids:expr) => {
        for uid in $ids {
            let sql = format!(
                "UPDATE scim_resources SET {} WHERE integration_id = $1 AND id = $2 AND resource_type = 'User'",
                $crate::store::QUEUED_STATE
            );
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind($integration)
                .bind(uid.as_str())
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// The members and display name of a group as stored now.
macro_rules! group_now {
    ($tx:expr, $group_id:expr) => {{
        let members: Vec<String> =
            sqlx::query_scalar("SELECT member_id FROM scim_group_members WHERE group_id = $1")
                .bind($group_id)
                .fetch_all(&mut *$tx)
                .await?;
        let name: Option<Option<String>> =
            sqlx::query_scalar("SELECT display_name FROM scim_resources WHERE id = $1")
                .bind($group_id)
                .fetch_optional(&mut *$tx)
                .await?;
        (members, name.flatten())
    }};
}

macro_rules! set_members {
    ($tx:expr, $integration:expr, $group_id:expr, $members:expr) => {
        sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1")
            .bind($group_id)
            .execute(&mut *$tx)
            .await?;
        let mut seen = std::collections::HashSet::new();
        for m in $members {
            if seen.insert(m.as_str()) {
                sqlx::query(
                    "INSERT INTO scim_group_members (integration_id, group_id, member_id) VALUES ($1, $2, $3)",
                )
                .bind($integration)
                .bind($group_id)
                .bind(m.as_str())
                .execute(&mut *$tx)
                .await?;
            }
        }
    };
}

/// The statements of one create (resource, members, its job, its audit event) in `$tx`;
/// evaluates to `Result<(), StoreError>`. A taken name is `Uniqueness`, returned by the
/// first statement, so such a create has written nothing. `$head`: see `append_audit!`.
macro_rules! create_in {
    ($tx:expr, $is_pg:expr, $integration_id:expr, $rt:expr, $id:expr, $now:expr, $write:expr, $event:expr, $head:expr) => {{
        let integration_id: &str = $integration_id;
        let rt: ResourceType = $rt;
        let id: &str = $id;
        let now: &str = $now;
        let write: &ResourceWrite = $write;
        let data = write.data.to_string();
        let r: Result<(), StoreError> = async {
            let inserted = sqlx::query(
                "INSERT INTO scim_resources (id, integration_id, resource_type, name_key, external_id, display_name, version, created_at, modified_at, data, prov_state) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, 'pending')",
            )
            .bind(id)
            .bind(integration_id)
            .bind(rt.as_str())
            .bind(&write.name_key)
            .bind(write.external_id.as_deref())
            .bind(write.display_name.as_deref())
            .bind(now)
            .bind(&data)
            .execute(&mut *$tx)
            .await;
            match inserted {
                Err(e) if unique_violation(&e) => {
                    return Err(StoreError::Uniqueness("userName".into()));
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            if let Some(members) = &write.members {
                set_members!($tx, integration_id, id, members);
                // Joining a group may change the members' roles in the app.
                mark_queued!($tx, integration_id, members.iter());
            }
            if let Some(token) = write.claim_token.as_deref() {
                sqlx::query("UPDATE scim_resources SET prov_state = 'staged' WHERE id = $1")
                    .bind(id)
                    .execute(&mut *$tx)
                    .await?;
                insert_job!($tx, now, integration_id, rt, id, JobOperation::Create, 1i64, Some(token));
            } else {
                insert_job!($tx, now, integration_id, rt, id, JobOperation::Create, 1i64);
            }
            let mut event: NewEvent = $event.clone();
            event.target = Some(id.to_string());
            append_audit!($tx, $is_pg, now, &event, $head);
            Ok(())
        }
        .await;
        r
    }};
}

/// Copies the SQLite WAL back into the database file every [`WAL_CHECKPOINT_EVERY`] on
/// a connection of its own, until every sender of `alive` is dropped (the store is
/// gone). A commit that checkpoints (SQLite's default, at 1000 pages) holds the only
/// writer while it copies and syncs: every create waiting behind it waits too.
/// PASSIVE never blocks writers or readers; a checkpoint it leaves unfinished is
/// finished by the next one.
async fn wal_checkpoints(pool: sqlx::SqlitePool, mut alive: tokio::sync::mpsc::Receiver<()>) {
    loop {
        tokio::select! {
            _ = alive.recv() => break,
            () = tokio::time::sleep(WAL_CHECKPOINT_EVERY) => {}
        }
        if pool.is_closed() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
    pool.close().await;
}

/// Commits the SQLite creates sent to it in groups: each waits for the transaction of
/// the group it joined, which holds every create that arrived while the one before was
/// being committed (at most [`CREATE_GROUP_MAX`]). One that fails (a taken userName)
/// is undone alone ([`commit_group`]); a failed commit fails them all. A
/// create is answered once its group is committed, as a create of its own would be.
async fn group_commit(
    writer: sqlx::SqlitePool,
    mut requests: tokio::sync::mpsc::Receiver<CreateRequest>,
) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while group.len() < CREATE_GROUP_MAX {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let outcome = match commit_group(&writer, &group).await {
            Ok(each) => Ok(each),
            Err(e) => {
                tracing::debug!(error = %e, creates = group.len(),
                    "a group of creates failed; committing it again with a savepoint each");
                commit_group_each_whole(&writer, &group).await
            }
        };
        match outcome {
            Ok(each) => {
                for (r, result) in group.into_iter().zip(each) {
                    let _ = r.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, creates = group.len(), "a group of creates could not be committed");
                let reason = e.to_string();
                for r in group {
                    let _ = r.done.send(Err(StoreError::Database(sqlx::Error::Protocol(
                        reason.clone(),
                    ))));
                }
            }
        }
    }
}

/// `create_in!` for a [`CreateRequest`] `$r` (SQLite).
macro_rules! request_in {
    ($tx:expr, $r:expr, $head:expr) => {
        create_in!(
            $tx,
            false,
            &$r.integration_id,
            $r.rt,
            &$r.id,
            &$r.now,
            &$r.write,
            &$r.event,
            $head
        )
    };
}

/// One transaction for `group`, its statements back to back and the audit chain's head
/// read once. A taken userName fails its create alone (it wrote nothing); any other
/// error fails the whole transaction, which [`commit_group_each_whole`] then redoes.
async fn commit_group(
    writer: &sqlx::SqlitePool,
    group: &[CreateRequest],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tx = writer.begin().await?;
    let mut head = None;
    let mut each = Vec::with_capacity(group.len());
    for r in group {
        match request_in!(tx, r, &mut head) {
            Ok(()) => each.push(Ok(())),
            Err(e @ StoreError::Uniqueness(_)) => each.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(each)
}

/// One transaction for `group` with a savepoint per create, so a create that fails in
/// any statement is undone alone.
async fn commit_group_each_whole(
    writer: &sqlx::SqlitePool,
    group: &[CreateRequest],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tx = writer.begin().await?;
    let mut each = Vec::with_capacity(group.len());
    for r in group {
        let mut one = sqlx::Acquire::begin(&mut *tx).await?;
        let result = request_in!(one, r, &mut None);
        if result.is_ok() {
            one.commit().await?;
        } else {
            one.rollback().await?;
        }
        each.push(result);
    }
    tx.commit().await?;
    Ok(each)
}

impl Store {
    /// Connects and runs the migrations of the backend the URL names.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
            // SQLite says only "unable to open database file": name the file, and the
            // folder when that is what is missing (it is not created: a typo would
            // silently start an empty database elsewhere).
            let file = opts.get_filename().to_path_buf();
            let cannot_open = |reason: String| StoreError::Connect {
                url: file.display().to_string(),
                reason,
            };
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
                && file.to_str() != Some(":memory:")
            {
                return Err(cannot_open(format!(
                    "its folder {} does not exist",
                    dir.display()
                )));
            }
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await
                .map_err(|e| cannot_open(e.to_string()))?;
            sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
            let reader = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts.read_only(true))
                .await?;
            Backend::Sqlite { writer, reader }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // One plain connection first: when the server cannot be reached, the pool
            // would only say that it timed out; this says why (refused, auth, name).
            {
                use sqlx::Connection;
                let first = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect_with(&opts),
                )
                .await
                .map_err(|_| StoreError::Connect {
                    url: crate::config::redact_url(url),
                    reason: "no answer within 10s".into(),
                })?;
                match first {
                    Ok(c) => {
                        let _ = c.close().await;
                    }
                    Err(e) => {
                        return Err(StoreError::Connect {
                            url: crate::config::redact_url(url),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)));
        };
        let (creates, checkpoints) = match &backend {
            Backend::Sqlite { writer, .. } => {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(group_commit(writer.clone(), rx));
                let checkpointer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(writer.connect_options().as_ref().clone())
                    .await?;
                let (alive, until) = tokio::sync::mpsc::channel(1);
                tokio::spawn(wal_checkpoints(checkpointer.clone(), until));
                (Some(tx), Some((checkpointer, alive)))
            }
            Backend::Postgres(_) => (None, None),
        };
        Ok(Store {
            backend,
            clock,
            jobs_changed: Arc::new(tokio::sync::Notify::new()),
            creates,
            checkpoints,
        })
    }

    /// Looks at a database without changing it (`usher config check`): reachable, and
    /// how its migrations compare with this build's. A SQLite file that does not exist
    /// yet is fine (`usher serve` creates it); its folder must exist.
    pub async fn inspect(url: &str) -> Result<DbStatus, StoreError> {
        let unreachable = |reason: String| StoreError::Connect {
            url: crate::config::redact_url(url),
            reason,
        };
        let applied: Vec<(i64, bool)>;
        let known: Vec<i64>;
        if url.starts_with("sqlite:") {
            known = sqlx::migrate!("./migrations/sqlite")
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .map(|m| m.version)
                .collect();
            let opts = SqliteConnectOptions::from_str(url)?;
            let file = opts.get_filename().to_path_buf();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(StoreError::Connect {
                    url: file.display().to_string(),
                    reason: format!("its folder {} does not exist", dir.display()),
                });
            }
            if !file.exists() {
                return Ok(DbStatus {
                    exists: false,
                    pending: known.len(),
                    unknown: Vec::new(),
                    failed: Vec::new(),
                });
            }
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect_with(&opts.read_only(true))
                .await
                .map_err(|e| StoreError::Connect {
                    url: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            let has: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&mut c)
            .await?;
            applied = if has > 0 {
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                    .fetch_all(&mut c)
                    .await?
            } else {
                Vec::new()
            };
            let _ = c.close().await;
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            known = sqlx::migrate!("./migrations/postgres")
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .map(|m| m.version)
                .collect();
            let opts = PgConnectOptions::from_str(url)?;
            use sqlx::Connection;
            let mut c = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::PgConnection::connect_with(&opts),
            )
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
            let has: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&mut c)
                    .await?;
            applied = if has {
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                    .fetch_all(&mut c)
                    .await?
            } else {
                Vec::new()
            };
            let _ = c.close().await;
        } else {
            return Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)));
        }
        Ok(DbStatus {
            exists: true,
            pending: known
                .iter()
                .filter(|v| !applied.iter().any(|(a, ok)| a == *v && *ok))
                .count(),
            unknown: applied
                .iter()
                .filter(|(a, _)| !known.contains(a))
                .map(|(a, _)| *a)
                .collect(),
            failed: applied
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(a, _)| *a)
                .collect(),
        })
    }

    /// Resolves at the next job change in this process (other processes are seen by
    /// polling). Create it before looking, so that no change is missed.
    pub fn jobs_changed(&self) -> tokio::sync::futures::OwnedNotified {
        self.jobs_changed.clone().notified_owned()
    }

    pub(crate) fn wake_job_watchers(&self) {
        self.jobs_changed.notify_waiters();
    }

    /// The clock every stored time comes from; the engine keeps time by it too.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn is_pg(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Name of the backend, for logs and benchmarks.
    pub fn backend_name(&self) -> &'static str {
        if self.is_pg() { "postgres" } else { "sqlite" }
    }

    fn now(&self) -> String {
        format_time(self.clock.now())
    }

    /// Stores a new resource with its job and audit event in one transaction.
    pub async fn create_resource(
        &self,
        integration_id: &str,
        rt: ResourceType,
        write: &ResourceWrite,
        event: &NewEvent,
    ) -> Result<StoredResource, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = self.now();
        let is_pg = self.is_pg();
        let result = match &self.creates {
            // SQLite has one writer: concurrent creates share a transaction (and its
            // commit), each in a savepoint of its own, instead of queueing for it.
            Some(creates) => {
                let (done, answer) = tokio::sync::oneshot::channel();
                let request = CreateRequest {
                    integration_id: integration_id.to_string(),
                    rt,
                    id: id.clone(),
                    now: now.clone(),
                    write: write.clone(),
                    event: event.clone(),
                    done,
                };
                if creates.send(request).await.is_err() {
                    return Err(StoreError::Database(sqlx::Error::PoolClosed));
                }
                answer
                    .await
                    .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
            }
            None => on_backend!(self, |w, _r| {
                let mut tx = w.begin().await?;
                create_in!(
                    tx,
                    is_pg,
                    integration_id,
                    rt,
                    &id,
                    &now,
                    write,
                    event,
                    &mut None
                )?;
                tx.commit().await?;
                Ok(())
            }),
        };
        result?;
        self.wake_job_watchers();
        Ok(StoredResource {
            id,
            integration_id: integration_id.to_string(),
            resource_type: rt,
            version: 1,
            created_at: now.clone(),
            modified_at: now,
            data: write.data.clone(),
            provisioning: ProvisioningState {
                state: if write.claim_token.is_some() {
                    "staged".into()
                } else {
                    "pending".into()
                },
                ..Default::default()
            },
        })
    }

    /// Reads one resource.
    pub async fn get_resource(
        &self,
        integration_id: &str,
        rt: ResourceType,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM scim_resources WHERE integration_id = $1 AND resource_type = $2 AND id = $3"
        );
        on_backend!(self, |_w, r| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(integration_id)
                .bind(rt.as_str())
                .bind(id)
                .fetch_optional(r)
                .await?;
            row.as_ref().map(resource_from_row).transpose()
        })
    }

    /// Lists resources of one type, optionally narrowed to `column = value`, oldest first.
    pub async fn list_resources(
        &self,
        integration_id: &str,
        rt: ResourceType,
        lookup: Option<(LookupColumn, &str)>,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let (cond, value) = match lookup {
            None => (String::new(), None),
            Some((col, v)) => {
                let (c, v) = match col {
                    LookupColumn::Id => ("id", v.to_string()),
                    LookupColumn::NameKey => ("name_key", v.to_lowercase()),
                    LookupColumn::DisplayName => ("display_name", v.to_string()),
                    LookupColumn::ExternalId => ("external_id", v.to_string()),
                };
                (format!(" AND {c} = $3"), Some(v))
            }
        };
        // A look-up returns a row or two: ordering them in SQL would tempt the planner
        // into the (integration, type, created_at) index and a scan of every row.
        let order = if value.is_some() {
            ""
        } else {
            " ORDER BY created_at, id"
        };
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM scim_resources WHERE integration_id = $1 AND resource_type = $2{cond}{order}"
        );
        let mut found: Vec<StoredResource> = on_backend!(self, |_w, r| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(integration_id)
                .bind(rt.as_str());
            if let Some(v) = &value {
                q = q.bind(v.as_str());
            }
            let rows = q.fetch_all(r).await?;
            rows.iter()
                .map(resource_from_row)
                .collect::<Result<_, StoreError>>()
        })?;
        if value.is_some() {
            found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        }
        Ok(found)
    }

    /// Replaces a resource's body if it still has `expected_version`; records a job and an event.
    #[allow(clippy::too_many_arguments)] // one write, and each argument is part of it
    pub async fn update_resource(
        &self,
        integration_id: &str,
        rt: ResourceType,
        id: &str,
        expected_version: i64,
        write: &ResourceWrite,
        operation: JobOperation,
        event: &NewEvent,
    ) -> Result<StoredResource, StoreError> {
        let now = self.now();
        let data = write.data.to_string();
        let version = expected_version + 1;
        let is_pg = self.is_pg();
        let sql = format!(
            "UPDATE scim_resources SET name_key = $1, external_id = $2, display_name = $3, data = $4, version = $5, modified_at = $6, {QUEUED_STATE} WHERE integration_id = $7 AND resource_type = $8 AND id = $9 AND version = $10 RETURNING {RESOURCE_COLUMNS}"
        );
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let before = match rt {
                ResourceType::Group => Some(group_now!(tx, id)),
                ResourceType::User => None,
            };
            let updated = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&write.name_key)
                .bind(write.external_id.as_deref())
                .bind(write.display_name.as_deref())
                .bind(&data)
                .bind(version)
                .bind(&now)
                .bind(integration_id)
                .bind(rt.as_str())
                .bind(id)
                .bind(expected_version)
                .fetch_optional(&mut *tx)
                .await;
            let row = match updated {
                Err(e) if unique_violation(&e) => {
                    return Err(StoreError::Uniqueness("userName".into()));
                }
                Err(e) => return Err(e.into()),
                Ok(None) => {
                    let exists: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM scim_resources WHERE integration_id = $1 AND resource_type = $2 AND id = $3",
                    )
                    .bind(integration_id)
                    .bind(rt.as_str())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Err(if exists.is_some() {
                        StoreError::VersionConflict
                    } else {
                        StoreError::NotFound
                    });
                }
                Ok(Some(row)) => resource_from_row(&row)?,
            };
            if let Some(members) = &write.members {
                set_members!(tx, integration_id, id, members);
            }
            // The members whose roles the change may touch show `pending` too: those who
            // joined or left, or every one when the group was renamed.
            if let Some((old_members, old_name)) = before {
                let (new_members, new_name) = group_now!(tx, id);
                let renamed = old_name != new_name;
                let touched: std::collections::BTreeSet<&String> = old_members
                    .iter()
                    .filter(|m| renamed || !new_members.contains(m))
                    .chain(
                        new_members
                            .iter()
                            .filter(|m| renamed || !old_members.contains(m)),
                    )
                    .collect();
                mark_queued!(tx, integration_id, touched.into_iter());
            }
            insert_job!(tx, &now, integration_id, rt, id, operation, version);
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(row)
        })
        .inspect(|_| self.wake_job_watchers())
    }

    /// Deletes a resource; a deleted user also leaves every group it was in. Returns the
    /// version the delete's job carries.
    pub async fn delete_resource(
        &self,
        integration_id: &str,
        rt: ResourceType,
        id: &str,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            let version: Option<i64> = sqlx::query_scalar(
                "DELETE FROM scim_resources WHERE integration_id = $1 AND resource_type = $2 AND id = $3 RETURNING version",
            )
            .bind(integration_id)
            .bind(rt.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(version) = version else {
                return Err(StoreError::NotFound);
            };
            match rt {
                ResourceType::Group => {
                    let (members, _) = group_now!(tx, id);
                    mark_queued!(tx, integration_id, members.iter());
                    sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                ResourceType::User => {
                    let groups: Vec<String> = sqlx::query_scalar(
                        "SELECT group_id FROM scim_group_members WHERE integration_id = $1 AND member_id = $2",
                    )
                    .bind(integration_id)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for gid in groups {
                        let row = sqlx::query("SELECT data FROM scim_resources WHERE id = $1")
                            .bind(&gid)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let Some(row) = row else { continue };
                        let data: String = row.try_get("data")?;
                        let mut data: Value = serde_json::from_str(&data)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        if let Some(Value::Array(members)) = data.get_mut("members") {
                            members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                        }
                        sqlx::query(
                            "UPDATE scim_resources SET data = $1, version = version + 1, modified_at = $2 WHERE id = $3",
                        )
                        .bind(data.to_string())
                        .bind(&now)
                        .bind(&gid)
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query("DELETE FROM scim_group_members WHERE integration_id = $1 AND member_id = $2")
                        .bind(integration_id)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let job_id = insert_job!(
                tx,
                &now,
                integration_id,
                rt,
                id,
                JobOperation::Delete,
                version + 1
            );
            // A leaver supersedes whatever of theirs is still queued or staged.
            sqlx::query(
                "UPDATE jobs SET status = 'superseded', superseded_by = $1, updated_at = $2 WHERE integration_id = $3 AND resource_id = $4 AND status IN ('pending', 'staged') AND id < $1",
            )
            .bind(job_id)
            .bind(&now)
            .bind(integration_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            self.wake_job_watchers();
            Ok(version + 1)
        })
    }

    /// The groups each of `member_ids` belongs to: member id → [(group id, displayName)].
    pub async fn groups_of(
        &self,
        integration_id: &str,
        member_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(String, String)>>, StoreError> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if member_ids.is_empty() {
            return Ok(out);
        }
        // One query for a single user; for a page of users, all memberships of the
        // integration (cheaper than a long IN list, and bounded by the group sizes).
        let single = member_ids.len() == 1;
        let sql = if single {
            "SELECT m.member_id, r.id, r.display_name FROM scim_group_members m JOIN scim_resources r ON r.id = m.group_id WHERE m.integration_id = $1 AND m.member_id = $2 ORDER BY r.display_name, r.id"
        } else {
            "SELECT m.member_id, r.id, r.display_name FROM scim_group_members m JOIN scim_resources r ON r.id = m.group_id WHERE m.integration_id = $1 ORDER BY r.display_name, r.id"
        };
        let wanted: std::collections::HashSet<&str> = member_ids.iter().copied().collect();
        let rows: Vec<(String, String, Option<String>)> = on_backend!(self, |_w, r| {
            let mut q = sqlx::query_as(sql).bind(integration_id);
            if single {
                q = q.bind(member_ids[0]);
            }
            q.fetch_all(r).await?
        });
        for (member, gid, name) in rows {
            if wanted.contains(member.as_str()) {
                out.entry(member)
                    .or_default()
                    .push((gid, name.unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// Audit events in order, optionally of one integration, at most `limit` of the newest.
    pub async fn audit_events(
        &self,
        integration_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<audit::Event>, StoreError> {
        let sql = if integration_id.is_some() {
            "SELECT * FROM (SELECT seq, at, actor, event_type, target, integration_id, detail, prev_hash, hash FROM audit_events WHERE integration_id = $1 ORDER BY seq DESC LIMIT $2) t ORDER BY seq"
        } else {
            "SELECT * FROM (SELECT seq, at, actor, event_type, target, integration_id, detail, prev_hash, hash FROM audit_events ORDER BY seq DESC LIMIT $1) t ORDER BY seq"
        };
        on_backend!(self, |_w, r| {
            let mut q = sqlx::query(sql);
            if let Some(i) = integration_id {
                q = q.bind(i);
            }
            let rows = q.bind(limit).fetch_all(r).await?;
            rows.iter().map(event_from_row).collect()
        })
    }

    /// Appends one audit event on its own (events that go with no other write).
    pub async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let now = self.now();
        let is_pg = self.is_pg();
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            append_audit!(tx, is_pg, &now, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The newest audit event's sequence number and hash (the chain head).
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        on_backend!(self, |_w, r| {
            Ok(
                sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(r)
                    .await?,
            )
        })
    }

    /// Re-computes the whole audit chain; returns the number of events checked.
    pub async fn verify_audit_chain(&self) -> Result<usize, StoreError> {
        let events = self.audit_events(None, i64::MAX).await?;
        Ok(audit::verify_chain(&events)?)
    }

    /// Closes the pools (waits for connections to finish).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, reader } => {
                if let Some((checkpointer, _)) = &self.checkpoints {
                    checkpointer.close().await;
                }
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(p) => p.close().await,
        }
    }
}

// After the macros above, which they use.
mod console;
mod integrations;
mod jobs;
mod ops;
mod processes;
mod reconcile;
mod sso;
mod totp;
mod traces;
mod vault;
pub use console::{AuditFilter, ConsoleSession, IntegrationActivity, NewSession, PendingLogin};
pub use integrations::{IntegrationState, SignInAdmission};
pub use jobs::{
    Claimant, ClaimedJob, JobFilter, JobFinish, JobOperation, JobRow, JobStatus, UnknownJobValue,
    WebhookDelivery,
};
pub use ops::QueueStats;
pub use reconcile::{DISCOVERED_PREFIX, DiscoveredAccount, HealthRow, ReconcileWrite, ScheduleRow};
pub use sso::SsoSessionRow;
pub use traces::JobTrace;
pub use vault::{VaultExpect, VaultRow, VaultWrite};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str) -> ResourceWrite {
        ResourceWrite {
            data: json!({ "userName": name }),
            name_key: name.to_lowercase(),
            display_name: None,
            external_id: None,
            members: None,
            claim_token: None,
        }
    }

    /// Creates a user of each name, all sent at once; their answers in the same order.
    async fn create_at_once(store: &Store, names: Vec<String>) -> Vec<Result<String, StoreError>> {
        let tasks: Vec<_> = names
            .into_iter()
            .map(|name| {
                let store = store.clone();
                tokio::spawn(async move {
                    let event = NewEvent {
                        actor: audit::Actor::Idp {
                            integration_id: "gw".into(),
                        },
                        event_type: audit::kinds::SCIM_CREATE,
                        target: None,
                        integration_id: Some("gw".into()),
                        detail: json!({ "userName": name }),
                    };
                    store
                        .create_resource("gw", ResourceType::User, &user(&name), &event)
                        .await
                        .map(|r| r.id)
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for t in tasks {
            answers.push(t.await.expect("task"));
        }
        answers
    }

    /// Creates sent at once share transactions on SQLite: each is answered, a taken
    /// userName fails alone, and every stored create has its job and its audit event
    /// (the chain intact).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_commit_together_each_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, Arc::new(crate::clock::SystemClock))
            .await
            .expect("connect");
        // 20 names are sent twice (and differently cased): one of each pair wins.
        let names = (0..120)
            .map(|i| {
                if i < 100 {
                    format!("u{i}@x.test")
                } else {
                    format!("U{}@X.test", i - 100)
                }
            })
            .collect();
        let (mut stored, mut taken) = (Vec::new(), 0);
        for answer in create_at_once(&store, names).await {
            match answer {
                Ok(id) => stored.push(id),
                Err(StoreError::Uniqueness(_)) => taken += 1,
                Err(e) => panic!("create failed: {e}"),
            }
        }
        assert_eq!((stored.len(), taken), (100, 20));
        let jobs = store
            .list_jobs(&jobs::JobFilter {
                integration_id: Some("gw"),
                resource_id: None,
                status: None,
                limit: 1000,
            })
            .await
            .expect("jobs");
        assert_eq!(jobs.len(), 100, "one job per stored create");
        for id in &stored {
            assert!(jobs.iter().any(|j| &j.resource_id == id), "no job for {id}");
            let found = store
                .get_resource("gw", ResourceType::User, id)
                .await
                .expect("read");
            assert!(found.is_some(), "the answered create {id} is not stored");
        }
        assert_eq!(store.verify_audit_chain().await.expect("chain"), 100);
    }

    /// A create that fails after its first statement (here its audit event, refused by
    /// a trigger) fails alone: its group is redone with a savepoint each, the create
    /// leaves no resource and no job, and every other create of the group is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_create_failing_in_a_later_statement_is_undone_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, Arc::new(crate::clock::SystemClock))
            .await
            .expect("connect");
        let Backend::Sqlite { writer, .. } = &store.backend else {
            panic!("sqlite")
        };
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events \
             WHEN NEW.detail LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .execute(writer)
        .await
        .expect("trigger");
        let names = (0..60)
            .map(|i| {
                if i % 20 == 7 {
                    format!("poison{i}@x.test")
                } else {
                    format!("u{i}@x.test")
                }
            })
            .collect();
        let (mut stored, mut failed) = (0, 0);
        for answer in create_at_once(&store, names).await {
            match answer {
                Ok(_) => stored += 1,
                Err(StoreError::Database(e)) => {
                    assert!(e.to_string().contains("poisoned"), "{e}");
                    failed += 1;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!((stored, failed), (57, 3));
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(writer)
                .await
                .expect("count")
        };
        assert_eq!(
            count("SELECT COUNT(*) FROM scim_resources WHERE name_key LIKE 'poison%'").await,
            0
        );
        assert_eq!(count("SELECT COUNT(*) FROM scim_resources").await, 57);
        assert_eq!(count("SELECT COUNT(*) FROM jobs").await, 57);
        assert_eq!(store.verify_audit_chain().await.expect("chain"), 57);
    }
}
