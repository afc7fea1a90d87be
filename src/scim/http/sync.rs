//! `mode: sync`: load shedding before a write, and waiting for the write's job after it.

use super::error::ApiError;
use super::state::ScimState;
use crate::config::Mode;
use crate::scim::auth::Gateway;
use crate::scim::protocol::ScimError;
use crate::store::{JobStatus, StoredResource};

/// A claim token: 32 random bytes, URL-safe.
pub(super) fn new_claim_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `mode: sync` sheds load: when as many jobs of the integration are queued or running
/// as it has workers, a new write would wait behind them, so the IdP is told to come
/// back (429 with Retry-After) rather than left to time out.
pub(super) async fn admit_sync_write(state: &ScimState, gateway: &Gateway) -> Result<(), ApiError> {
    if gateway.mode != Mode::Sync {
        return Ok(());
    }
    let queued = state.store.queued_jobs(&gateway.id).await?;
    let slots = gateway.concurrency.max(1) as i64;
    if queued >= slots {
        return Err(ApiError::Busy {
            retry_after_secs: (5 * (queued / slots + 1)).min(60) as u64,
        });
    }
    Ok(())
}

/// In sync mode, waits for the write's job and re-reads the resource with its state.
pub(super) async fn settle(
    state: &ScimState,
    gateway: &Gateway,
    written: StoredResource,
) -> Result<StoredResource, ApiError> {
    if !await_job(state, gateway, &written.id, written.version).await? {
        return Ok(written);
    }
    Ok(state
        .store
        .get_resource(&gateway.id, written.resource_type, &written.id)
        .await?
        .unwrap_or(written))
}

/// In sync mode, waits until the job of the write of `resource_id` at `version` has
/// ended (following the job that covered it), up to the sync timeout. True when it
/// succeeded; a failed job is a 502 carrying the reason; a timeout answers as async
/// does (the state extension says `pending`).
pub(super) async fn await_job(
    state: &ScimState,
    gateway: &Gateway,
    resource_id: &str,
    version: i64,
) -> Result<bool, ApiError> {
    if gateway.mode != Mode::Sync {
        return Ok(false);
    }
    let Some(mut job_id) = state
        .store
        .job_for_write(&gateway.id, resource_id, version)
        .await?
    else {
        return Ok(false);
    };
    let deadline = tokio::time::Instant::now() + state.sync_timeout;
    loop {
        let changed = state.store.jobs_changed();
        let Some(job) = state.store.job(job_id).await? else {
            return Ok(false);
        };
        match job.status {
            JobStatus::Superseded if job.superseded_by.is_some() => {
                job_id = job.superseded_by.unwrap_or(job_id);
                continue;
            }
            JobStatus::Succeeded => return Ok(true),
            JobStatus::Failed => {
                return Err(ScimError::new(
                    502,
                    None,
                    format!(
                        "the app did not accept the change: {}",
                        job.last_error.as_deref().unwrap_or("unknown error")
                    ),
                )
                .into());
            }
            // A paused integration answers at once: the job waits for a resume.
            JobStatus::Staged
            | JobStatus::Paused
            | JobStatus::Cancelled
            | JobStatus::Superseded => {
                return Ok(false);
            }
            JobStatus::Pending | JobStatus::Running => {}
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(gateway = %gateway.id, job = job_id, "sync write answered before its job ended");
                return Ok(false);
            }
        }
    }
}
