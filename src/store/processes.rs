//! Usher processes and their heartbeats: a running job whose process stopped beating is
//! taken over (see `claim_job`) without waiting for its lease.

use super::{Backend, Store, StoreError};

/// Rows of processes silent for this long are removed when a process registers.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Store {
    /// Registers this process (and forgets processes silent for a day).
    pub async fn register_process(&self, id: &str, host: &str, pid: u32) -> Result<(), StoreError> {
        let now = self.now();
        let forget_before = self.time_before(FORGET_AFTER);
        on_backend!(self, |w, _r| {
            let mut tx = w.begin().await?;
            sqlx::query("DELETE FROM usher_processes WHERE heartbeat_at < $1")
                .bind(&forget_before)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO usher_processes (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )
            .bind(id)
            .bind(host)
            .bind(i64::from(pid))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forgets the processes of `host` that `gone` says have ended (a restarted node on
    /// the same machine knows its predecessor is dead without waiting for its heartbeat
    /// to go stale): their running jobs can be taken over at once. Returns their ids.
    pub async fn forget_gone_processes(
        &self,
        host: &str,
        me: &str,
        gone: impl Fn(&str, i64) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String, i64)> = on_backend!(self, |_w, r| {
            sqlx::query_as("SELECT id, pid FROM usher_processes WHERE host = $1 AND id <> $2")
                .bind(host)
                .bind(me)
                .fetch_all(r)
                .await?
        });
        let dead: Vec<String> = rows
            .into_iter()
            .filter(|(id, pid)| gone(id, *pid))
            .map(|(id, _)| id)
            .collect();
        for id in &dead {
            self.deregister_process(id).await?;
        }
        Ok(dead)
    }

    /// One heartbeat of process `id`. False when its row was gone (it is written again).
    pub async fn process_heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_backend!(self, |w, _r| {
            sqlx::query("UPDATE usher_processes SET heartbeat_at = $1 WHERE id = $2")
                .bind(&now)
                .bind(id)
                .execute(w)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// A process that stops in order says so: its jobs (already released) and rows go.
    pub async fn deregister_process(&self, id: &str) -> Result<(), StoreError> {
        on_backend!(self, |w, _r| {
            sqlx::query("DELETE FROM usher_processes WHERE id = $1")
                .bind(id)
                .execute(w)
                .await?;
            Ok(())
        })
    }

    /// Processes whose last heartbeat is newer than `stale` ago: (id, host, pid, heartbeat).
    pub async fn live_processes(
        &self,
        stale: std::time::Duration,
    ) -> Result<Vec<(String, String, i64, String)>, StoreError> {
        let cutoff = self.time_before(stale);
        on_backend!(self, |_w, r| {
            Ok(sqlx::query_as(
                "SELECT id, host, pid, heartbeat_at FROM usher_processes WHERE heartbeat_at >= $1 ORDER BY id",
            )
            .bind(&cutoff)
            .fetch_all(r)
            .await?)
        })
    }

    pub(crate) fn time_before(&self, d: std::time::Duration) -> String {
        let now = self.clock.now();
        crate::clock::format_time(now - chrono::Duration::from_std(d).unwrap_or_default())
    }
}
