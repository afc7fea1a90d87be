//! What operators look at: readiness of the database and the queue's statistics
//! (for `/readyz` and `/metrics`).

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// The queue of one integration, as `/metrics` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Jobs by status (`pending`, `running`, `failed`, …).
    pub by_status: BTreeMap<String, i64>,
    /// When the oldest pending job was queued (RFC 3339), if any is pending.
    pub oldest_pending: Option<String>,
    /// When a job of this integration last succeeded (RFC 3339).
    pub last_success: Option<String>,
}

impl Store {
    /// Reachable and migrated: every migration this build knows is applied.
    pub async fn readiness(&self) -> Result<(), StoreError> {
        let (applied, known): (Vec<i64>, Vec<i64>) = on_backend!(self, |_w, r| {
            let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(r)
                .await?;
            let applied = rows
                .iter()
                .map(|r| r.try_get::<i64, _>("version"))
                .collect::<Result<Vec<_>, _>>()?;
            let known = match &self.backend {
                Backend::Sqlite { .. } => sqlx::migrate!("./migrations/sqlite")
                    .iter()
                    .map(|m| m.version)
                    .collect(),
                Backend::Postgres(_) => sqlx::migrate!("./migrations/postgres")
                    .iter()
                    .map(|m| m.version)
                    .collect(),
            };
            (applied, known)
        });
        match known.iter().find(|v| !applied.contains(v)) {
            Some(v) => Err(StoreError::Corrupt(format!("migration {v} is not applied"))),
            None => Ok(()),
        }
    }

    /// The queue of every integration that has jobs.
    pub async fn queue_stats(&self) -> Result<BTreeMap<String, QueueStats>, StoreError> {
        let mut out: BTreeMap<String, QueueStats> = BTreeMap::new();
        on_backend!(self, |_w, r| {
            let rows = sqlx::query(
                "SELECT integration_id, status, COUNT(*) AS n, \
                 MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest, \
                 MAX(CASE WHEN status = 'succeeded' THEN updated_at END) AS last_ok \
                 FROM jobs GROUP BY integration_id, status",
            )
            .fetch_all(r)
            .await?;
            for row in rows {
                let id: String = row.try_get("integration_id")?;
                let status: String = row.try_get("status")?;
                let n: i64 = row.try_get("n")?;
                let oldest: Option<String> = row.try_get("oldest")?;
                let last_ok: Option<String> = row.try_get("last_ok")?;
                let s = out.entry(id).or_default();
                s.by_status.insert(status, n);
                if oldest.is_some() {
                    s.oldest_pending = oldest;
                }
                if last_ok.is_some() {
                    s.last_success = last_ok;
                }
            }
        });
        Ok(out)
    }
}
