//! What the SCIM handlers share: the store, the gateways, the settings, the load-shedding
//! semaphore and the per-resource write locks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::config::ScimSettings;
use crate::scim::auth::Gateway;
use crate::store::Store;

/// Everything the SCIM handlers share.
pub struct ScimState {
    pub store: Store,
    pub gateways: HashMap<String, Gateway>,
    pub settings: ScimSettings,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) resource_locks: ResourceLocks,
    /// `mode: sync`: how long a write waits for its job.
    pub sync_timeout: std::time::Duration,
    /// Called when a joiner is staged (`invites: on_claim`) with their claim token.
    pub on_staged: Option<StagedHook>,
}

/// Told about each staged joiner: (gateway id, user id, userName, claim token).
pub type StagedHook = Arc<dyn Fn(&str, &str, &str, &str) + Send + Sync>;

/// One async mutex per resource being written, so that concurrent writes to the same
/// resource in this process queue instead of racing; across processes the store's
/// version check (and a retry) still decides.
#[derive(Default)]
pub(super) struct ResourceLocks(
    std::sync::Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
);

impl ResourceLocks {
    pub(super) async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 1024 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

impl ScimState {
    pub fn new(store: Store, gateways: Vec<Gateway>, settings: ScimSettings) -> Arc<ScimState> {
        Self::with_engine(
            store,
            gateways,
            settings,
            std::time::Duration::from_secs(50),
            None,
        )
    }

    /// Same, with the engine-facing settings.
    pub fn with_engine(
        store: Store,
        gateways: Vec<Gateway>,
        settings: ScimSettings,
        sync_timeout: std::time::Duration,
        on_staged: Option<StagedHook>,
    ) -> Arc<ScimState> {
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        Arc::new(ScimState {
            store,
            gateways: gateways.into_iter().map(|g| (g.id.clone(), g)).collect(),
            settings,
            in_flight,
            resource_locks: ResourceLocks::default(),
            sync_timeout,
            on_staged,
        })
    }

    pub(super) fn authorize(
        &self,
        gateway_id: &str,
        headers: &HeaderMap,
    ) -> Result<&Gateway, ApiError> {
        match self.gateways.get(gateway_id) {
            Some(g) if g.accepts(headers) => Ok(g),
            // Same answer for an unknown gateway and a wrong token: ids are not secrets,
            // but there is no reason to confirm them to an unauthenticated caller.
            _ => Err(ApiError::Unauthorized),
        }
    }
}
