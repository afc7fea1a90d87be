//! What the console shows, computed once for the API and the pages alike.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{WebError, WebState};
use crate::audit::Event;
use crate::audit::evidence::cited_hashes;
use crate::config::IntegrationConfig;
use crate::store::{AuditFilter, JobFilter, JobRow, ResourceType, Store, StoreError};

/// Failures counted for `degraded`.
const DEGRADED_WINDOW: Duration = Duration::from_secs(3600);
/// The newest finished jobs that, all failed, make an integration `failing`.
const FAILING_RUN: i64 = 3;
/// Largest page of the Activity tab and its API.
pub const MAX_PAGE: i64 = 200;

/// One row of the Integrations page.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationSummary {
    pub id: String,
    pub name: String,
    pub app: String,
    /// The SCIM base URL to paste into the IdP.
    pub scim_base_url: String,
    /// The time of the last job that reached the app.
    pub last_synced_at: Option<String>,
    /// healthy, degraded (failures in the last hour, or the canary found the app's UI
    /// changed), failing (the last 3 jobs failed), paused (the app refused the
    /// sign-in), gateway_only (no engine configured).
    pub status: String,
    pub paused_reason: Option<String>,
    /// Since when the UI-change canary finds a step that no longer matches the app.
    pub ui_changed_since: Option<String>,
    pub users_provisioned: i64,
    pub users_pending: i64,
    pub users_failed: i64,
}

fn status_of(
    paused: bool,
    gateway_only: bool,
    recent_failures: i64,
    last_outcomes: &[String],
    ui_changed: bool,
) -> &'static str {
    if paused {
        "paused"
    } else if gateway_only {
        "gateway_only"
    } else if last_outcomes.len() as i64 >= FAILING_RUN
        && last_outcomes
            .iter()
            .take(FAILING_RUN as usize)
            .all(|o| o == "failed")
    {
        "failing"
    } else if recent_failures > 0 || ui_changed {
        "degraded"
    } else {
        "healthy"
    }
}

impl WebState {
    pub(crate) fn integration_config(&self, id: &str) -> Option<&IntegrationConfig> {
        self.integrations.iter().find(|i| i.id == id)
    }

    pub(crate) fn has_integration(&self, id: &str) -> bool {
        self.integration_config(id).is_some()
    }
}

pub async fn summary(
    state: &WebState,
    i: &IntegrationConfig,
) -> Result<IntegrationSummary, StoreError> {
    let activity = state
        .store
        .integration_activity(&i.id, DEGRADED_WINDOW, FAILING_RUN)
        .await?;
    let paused = state.store.integration_state(&i.id).await?;
    let count = |s: &str| {
        activity
            .users_by_state
            .iter()
            .filter(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let is_paused = paused.as_ref().is_some_and(|p| p.is_paused());
    let ui_changed_since = state
        .store
        .health(Some(&i.id))
        .await?
        .into_iter()
        .find(|h| h.check == crate::engine::CHECK_CANARY && h.status == "degraded")
        .map(|h| h.since);
    Ok(IntegrationSummary {
        id: i.id.clone(),
        name: i.name.clone(),
        app: i.app.clone(),
        scim_base_url: format!("{}/scim/v2/{}", state.public_url, i.id),
        last_synced_at: activity.last_synced_at.clone(),
        status: status_of(
            is_paused,
            state.engine_workers == 0,
            activity.recent_failures,
            &activity.last_outcomes,
            ui_changed_since.is_some(),
        )
        .into(),
        paused_reason: paused.and_then(|p| p.paused_reason),
        ui_changed_since,
        users_provisioned: count("provisioned"),
        users_pending: count("pending") + count("staged"),
        users_failed: count("failed"),
    })
}

pub async fn integrations(state: &WebState) -> Result<Vec<IntegrationSummary>, StoreError> {
    let mut out = Vec::new();
    for i in &state.integrations {
        out.push(summary(state, i).await?);
    }
    Ok(out)
}

/// An integration's Settings tab: the configuration as loaded and the service
/// account's vault entry (never a value).
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationSettings {
    #[serde(flatten)]
    pub summary: IntegrationSummary,
    pub playbook: String,
    /// The actions the playbook defines; empty where this process runs no engine.
    pub playbook_actions: Vec<String>,
    pub base_url: String,
    pub mode: String,
    pub invites: String,
    pub leavers: String,
    pub concurrency: usize,
    pub service_account: String,
    pub vault_entry: Option<VaultEntryView>,
}

/// What is known of a vault entry without decrypting it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VaultEntryView {
    pub fields: Vec<String>,
    pub key_id: String,
    pub version: i64,
    pub last_changed: String,
}

fn debug_name(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

pub async fn settings(
    state: &WebState,
    id: &str,
) -> Result<Option<IntegrationSettings>, StoreError> {
    let Some(i) = state.integration_config(id) else {
        return Ok(None);
    };
    let vault_entry = state
        .store
        .vault_get(&i.service_account)
        .await?
        .map(|row| VaultEntryView {
            fields: row
                .fields
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            key_id: row.key_id.clone(),
            version: row.version,
            last_changed: row.updated_at.clone(),
        });
    Ok(Some(IntegrationSettings {
        summary: summary(state, i).await?,
        playbook: i.playbook.display().to_string(),
        playbook_actions: state
            .playbooks
            .get(&i.id)
            .map(|pb| pb.actions.keys().map(|a| a.as_str().to_owned()).collect())
            .unwrap_or_default(),
        base_url: i.base_url.clone(),
        mode: debug_name(&i.mode),
        invites: debug_name(&i.invites),
        leavers: debug_name(&i.leavers),
        concurrency: i.concurrency,
        service_account: i.service_account.clone(),
        vault_entry,
    }))
}

/// A job, as the Jobs tab and the Users tab show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub user_id: String,
    pub operation: String,
    pub status: String,
    pub attempts: i64,
    pub reason: Option<String>,
    /// The failed step, `file:line`.
    pub failed_step: Option<String>,
    /// SHA-256 of the failure's screenshot (`/api/v1/evidence/{sha256}`).
    pub screenshot: Option<String>,
    pub updated_at: String,
}

impl From<&JobRow> for JobView {
    fn from(j: &JobRow) -> JobView {
        let error = j.outcome.as_ref().and_then(|o| o.get("error"));
        let text = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        JobView {
            id: j.id,
            user_id: j.resource_id.clone(),
            operation: j.operation.as_str().into(),
            status: j.status.as_str().into(),
            attempts: j.attempts,
            reason: j.last_error.clone().or_else(|| text("reason")),
            failed_step: text("at"),
            screenshot: text("screenshot"),
            updated_at: j.updated_at.clone(),
        }
    }
}

/// The integration's jobs, failed first, then newest first.
pub async fn jobs(state: &WebState, id: &str) -> Result<Vec<JobView>, StoreError> {
    let rows = state
        .store
        .list_jobs(&JobFilter {
            integration_id: Some(id),
            limit: 500,
            ..JobFilter::default()
        })
        .await?;
    let mut views: Vec<JobView> = rows.iter().map(JobView::from).collect();
    views.sort_by_key(|j| (j.status != "failed", std::cmp::Reverse(j.id)));
    Ok(views)
}

/// A SCIM user: desired state beside the state in the app.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub user_name: String,
    pub display_name: Option<String>,
    /// Desired: the IdP's `active`.
    pub active: bool,
    /// In the app: provisioned, pending, failed, staged, deprovisioned, …
    pub app_state: String,
    pub app_reason: Option<String>,
    pub app_account_id: Option<String>,
    pub last_synced_at: Option<String>,
    pub last_job: Option<JobView>,
}

pub async fn users(state: &WebState, id: &str) -> Result<Vec<UserView>, StoreError> {
    let resources = state
        .store
        .list_resources(id, ResourceType::User, None)
        .await?;
    let jobs = state
        .store
        .list_jobs(&JobFilter {
            integration_id: Some(id),
            limit: 5000,
            ..JobFilter::default()
        })
        .await?;
    Ok(resources
        .into_iter()
        .map(|r| {
            let text = |k: &str| r.data.get(k).and_then(Value::as_str).map(str::to_owned);
            // Jobs come newest first: the first one of the user is their last.
            let last_job = jobs
                .iter()
                .find(|j| j.resource_id == r.id)
                .map(JobView::from);
            UserView {
                user_name: text("userName").unwrap_or_default(),
                display_name: text("displayName"),
                active: r
                    .data
                    .get("active")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                app_state: r.provisioning.state.clone(),
                app_reason: r.provisioning.reason.clone(),
                app_account_id: r.provisioning.app_account_id.clone(),
                last_synced_at: r.provisioning.last_synced_at.clone(),
                last_job,
                id: r.id,
            }
        })
        .collect())
}

/// Filters of the Activity tab (and its API).
#[derive(Debug, Default, Clone, Deserialize, Serialize, IntoParams)]
pub struct ActivityQuery {
    pub integration: Option<String>,
    pub event_type: Option<String>,
    pub actor: Option<String>,
    /// A user's id (or any event target).
    pub target: Option<String>,
    /// From this time (RFC 3339).
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    pub until: Option<String>,
    /// Paging: events older than this sequence number (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, at most 200 (default 50).
    pub limit: Option<i64>,
}

/// An audit event as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub event_type: String,
    pub target: Option<String>,
    pub integration_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    /// The screenshots it cites (SHA-256; `/api/v1/evidence/{sha256}`).
    pub evidence: Vec<String>,
    pub hash: String,
}

impl From<Event> for EventView {
    fn from(e: Event) -> EventView {
        EventView {
            evidence: cited_hashes(&e.detail),
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            event_type: e.event_type,
            target: e.target,
            integration_id: e.integration_id,
            detail: e.detail,
            hash: e.hash,
        }
    }
}

/// One page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A time filter as stored (RFC 3339 UTC with milliseconds); `Err` says what is wrong.
fn time_filter(s: Option<&str>, what: &str) -> Result<Option<String>, String> {
    match s {
        None => Ok(None),
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .or_else(|_| DateTime::parse_from_rfc3339(&format!("{s}:00Z")))
                .map_err(|_| format!("{what} `{s}` is not a time like 2026-01-05T09:00:00Z"))?;
            Ok(Some(crate::clock::format_time(t.with_timezone(&Utc))))
        }
    }
}

/// The Activity tab's page; the inner `Err` is a bad filter.
pub async fn activity(
    state: &WebState,
    q: &ActivityQuery,
) -> Result<Result<EventPage, String>, WebError> {
    let since = match time_filter(nonempty(&q.since), "since") {
        Ok(t) => t,
        Err(m) => return Ok(Err(m)),
    };
    let until = match time_filter(nonempty(&q.until), "until") {
        Ok(t) => t,
        Err(m) => return Ok(Err(m)),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let events = state
        .store
        .find_audit_events(&AuditFilter {
            integration_id: nonempty(&q.integration),
            event_type: nonempty(&q.event_type),
            actor: nonempty(&q.actor),
            target: nonempty(&q.target),
            since: since.as_deref(),
            until: until.as_deref(),
            before_seq: q.before,
            after_seq: None,
            // One more tells whether there is a next page.
            limit: limit + 1,
        })
        .await?;
    let more = events.len() as i64 > limit;
    let events: Vec<EventView> = events
        .into_iter()
        .take(limit as usize)
        .map(EventView::from)
        .collect();
    let next_before = if more {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Ok(EventPage {
        events,
        next_before,
    }))
}

/// The PNG of a screenshot, by the SHA-256 events cite.
pub async fn evidence(state: &WebState, sha256: &str) -> Option<Vec<u8>> {
    let valid = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return None;
    }
    let path = crate::audit::evidence::EvidenceStore::at(&state.evidence_dir).path_of(sha256);
    tokio::fs::read(path).await.ok()
}

/// `since` as given to exports: an RFC 3339 time, or a duration back from now (`24h`).
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<String, String> {
    if let Some(d) = crate::config::parse_duration(s) {
        let d = chrono::Duration::from_std(d).map_err(|_| format!("`{s}` is too long ago"))?;
        return Ok(crate::clock::format_time(now - d));
    }
    time_filter(Some(s), "since")?.ok_or_else(|| "since is empty".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes the audit events since `since` (oldest first), as JSON lines or CSV, for a
/// SIEM; returns how many. Read in pages, so the trail's size does not matter.
pub async fn export(
    store: &Store,
    since: &str,
    integration: Option<&str>,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<usize, ExportError> {
    if format == ExportFormat::Csv {
        writeln!(
            out,
            "seq,at,actor,event_type,target,integration_id,detail,prev_hash,hash"
        )?;
    }
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = store
            .find_audit_events(&AuditFilter {
                integration_id: integration,
                since: Some(since),
                after_seq: Some(after),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            match format {
                ExportFormat::Jsonl => {
                    let line = serde_json::json!({
                        "seq": e.seq, "at": e.at, "actor": e.actor, "event_type": e.event_type,
                        "target": e.target, "integration_id": e.integration_id, "detail": e.detail,
                        "prev_hash": e.prev_hash, "hash": e.hash,
                    });
                    writeln!(out, "{line}")?;
                }
                ExportFormat::Csv => writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    e.seq,
                    csv_field(&e.at),
                    csv_field(&e.actor),
                    csv_field(&e.event_type),
                    csv_field(e.target.as_deref().unwrap_or("")),
                    csv_field(e.integration_id.as_deref().unwrap_or("")),
                    csv_field(&crate::audit::canonical_json(&e.detail)),
                    e.prev_hash,
                    e.hash
                )?,
            }
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_rules_in_order() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            status_of(true, false, 9, &f(&["failed"; 3]), true),
            "paused"
        );
        assert_eq!(status_of(false, true, 0, &[], false), "gateway_only");
        assert_eq!(
            status_of(false, false, 3, &f(&["failed", "failed", "failed"]), false),
            "failing"
        );
        assert_eq!(
            status_of(
                false,
                false,
                2,
                &f(&["failed", "failed", "succeeded"]),
                false
            ),
            "degraded"
        );
        assert_eq!(
            status_of(false, false, 0, &f(&["succeeded"]), false),
            "healthy"
        );
        // The canary found the UI changed: degraded before any job failed.
        assert_eq!(
            status_of(false, false, 0, &f(&["succeeded"]), true),
            "degraded"
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now: DateTime<Utc> = "2026-01-05T09:00:00Z".parse().unwrap();
        assert_eq!(parse_since("24h", now).unwrap(), "2026-01-04T09:00:00.000Z");
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now).unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
        assert!(parse_since("yesterday", now).unwrap_err().contains("since"));
    }
}
