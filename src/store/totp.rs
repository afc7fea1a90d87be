//! The TOTP windows used, per service account, shared by every process on the database.

use super::{Backend, Store, StoreError};

impl Store {
    /// Takes a TOTP time step for `account` (a seed fingerprint) in one atomic statement:
    /// `wanted` if no process used it or a later one yet, else the step after the last
    /// one used, as long as that is at most `max`. `Err(last)` when none is left: the
    /// last step used (or `wanted - 1` when none was), so the caller knows when the
    /// next window opens. A first take beyond `max` is refused too.
    pub async fn take_totp_step(
        &self,
        account: &str,
        wanted: i64,
        max: i64,
    ) -> Result<Result<i64, i64>, StoreError> {
        let now = self.now();
        let taken: Option<i64> = on_backend!(self, |w, _r| {
            sqlx::query_scalar(
                "INSERT INTO totp_windows (account, last_step, updated_at) SELECT $1, $2, $4 WHERE $2 <= $3 \
                 ON CONFLICT (account) DO UPDATE SET \
                   last_step = CASE WHEN totp_windows.last_step < excluded.last_step THEN excluded.last_step ELSE totp_windows.last_step + 1 END, \
                   updated_at = excluded.updated_at \
                 WHERE (CASE WHEN totp_windows.last_step < excluded.last_step THEN excluded.last_step ELSE totp_windows.last_step + 1 END) <= $3 \
                 RETURNING last_step",
            )
            .bind(account)
            .bind(wanted)
            .bind(max)
            .bind(&now)
            .fetch_optional(w)
            .await?
        });
        if let Some(step) = taken {
            return Ok(Ok(step));
        }
        let last: Option<i64> = on_backend!(self, |w, _r| {
            sqlx::query_scalar("SELECT last_step FROM totp_windows WHERE account = $1")
                .bind(account)
                .fetch_optional(w)
                .await?
        });
        // No step used yet, but `wanted` is beyond `max` (this process used earlier
        // ones without the database, e.g. an enrolment's confirmation code): it opens
        // once `wanted - 1` is the current step.
        Ok(Err(last.unwrap_or(wanted - 1)))
    }

    /// Gives back `step` of `account` if it is still the last one taken (a window no
    /// code was typed from); a later step taken meanwhile keeps it used.
    pub async fn give_back_totp_step(&self, account: &str, step: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_backend!(self, |w, _r| {
            sqlx::query(
                "UPDATE totp_windows SET last_step = $2 - 1, updated_at = $3 WHERE account = $1 AND last_step = $2",
            )
            .bind(account)
            .bind(step)
            .bind(&now)
            .execute(w)
            .await?;
            Ok(())
        })
    }
}
