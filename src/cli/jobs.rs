//! `usher jobs list|show|retry|cancel`: the operators' view of the jobs.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use usher::audit::evidence::EvidenceStore;
use usher::audit::{NewEvent, kinds};
use usher::config::Config;
use usher::playbook::StepRecord;
use usher::playbook::trace::{Trace, TraceSection, render_html};
use usher::store::{JobFilter, JobRow, JobStatus, LookupColumn, ResourceType, Store};

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Newest jobs first.
    List {
        #[arg(long)]
        integration: Option<String>,
        /// pending, staged, running, succeeded, failed, cancelled, superseded.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Jobs of one SCIM user or group id.
        #[arg(long, conflicts_with = "user")]
        resource: Option<String>,
        /// Jobs of one user, by userName or SCIM id.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One job with its outcome, its audit events and its evidence, step by step.
    Show { id: i64 },
    /// The job's trace for authors: one HTML file on standard output with every step
    /// each attempt ran, its screenshots and the failing step opened.
    Trace { id: i64 },
    /// Run a failed or cancelled job again.
    Retry { id: i64 },
    /// Cancel a job that has not started.
    Cancel { id: i64 },
}

pub async fn run(path: &Path, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let (config, store) = super::open(path).await?;
    let code = match command {
        JobsCommand::List {
            integration,
            status,
            resource,
            user,
            limit,
            json,
        } => {
            let query = ListQuery {
                integration,
                status,
                resource,
                user,
                limit,
                json,
            };
            list(&config, &store, query).await
        }
        JobsCommand::Show { id } => show(&store, id).await,
        JobsCommand::Trace { id } => trace(path, &store, id).await,
        JobsCommand::Retry { id } => transition(&store, id, true).await,
        JobsCommand::Cancel { id } => transition(&store, id, false).await,
    };
    store.close().await;
    code
}

struct ListQuery {
    integration: Option<String>,
    status: Option<JobStatus>,
    resource: Option<String>,
    user: Option<String>,
    limit: i64,
    json: bool,
}

async fn list(config: &Config, store: &Store, q: ListQuery) -> anyhow::Result<ExitCode> {
    // The resources whose jobs are listed: none (all), the given id, or the user's ids.
    let mut unknown_user = None;
    let resources: Vec<Option<String>> = match (&q.resource, &q.user) {
        (Some(r), _) => vec![Some(r.clone())],
        (None, Some(u)) => {
            let ids = user_ids(config, store, q.integration.as_deref(), u).await?;
            if ids.is_empty() {
                // Perhaps a deleted user's id: its jobs stay.
                unknown_user = Some(u.clone());
                vec![Some(u.clone())]
            } else {
                ids.into_iter().map(Some).collect()
            }
        }
        (None, None) => vec![None],
    };
    let mut jobs = Vec::new();
    for r in &resources {
        jobs.extend(
            store
                .list_jobs(&JobFilter {
                    integration_id: q.integration.as_deref(),
                    resource_id: r.as_deref(),
                    status: q.status,
                    limit: q.limit,
                })
                .await?,
        );
    }
    if let (Some(u), true) = (&unknown_user, jobs.is_empty()) {
        errln!("usher: no user `{u}` (neither a userName nor a SCIM id with jobs)");
        return Ok(ExitCode::from(1));
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
    jobs.truncate(usize::try_from(q.limit).unwrap_or(0));
    let mut names = std::collections::HashMap::new();
    for j in &jobs {
        let key = (j.integration_id.clone(), j.resource_id.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = names.entry(key) {
            e.insert(resource_name(store, j).await?);
        }
    }
    let name_of = |j: &JobRow| {
        names
            .get(&(j.integration_id.clone(), j.resource_id.clone()))
            .cloned()
            .flatten()
    };
    if q.json {
        let rows: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({
                    "id": j.id, "integration": j.integration_id, "status": j.status.as_str(),
                    "operation": j.operation.as_str(), "resource_type": j.resource_type.as_str(),
                    "resource": j.resource_id, "name": name_of(j), "attempts": j.attempts,
                    "run_after": j.run_after, "created_at": j.created_at,
                    "updated_at": j.updated_at, "last_error": j.last_error,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>7}  {:<12} {:<10} {:<8} {:<32} {:>3}  {:<20}  last error",
        "job",
        "integration",
        "status",
        "op",
        "user (userName or group)",
        "try",
        "updated (UTC)"
    );
    for j in &jobs {
        let who = name_of(j).unwrap_or_else(|| j.resource_id.clone());
        outln!(
            "{:>7}  {:<12} {:<10} {:<8} {:<32} {:>3}  {:<20}  {}",
            j.id,
            j.integration_id,
            j.status,
            j.operation,
            who,
            j.attempts,
            table_time(&j.updated_at),
            j.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A stored time (RFC 3339 UTC with milliseconds) to the second, keeping its zone:
/// `2026-12-03T07:32:22Z`.
fn table_time(t: &str) -> String {
    match (t.get(..19), t.ends_with('Z')) {
        (Some(s), true) => format!("{s}Z"),
        _ => t.to_string(),
    }
}

/// The SCIM ids a `--user` names: itself when it is a user's id, else the users with
/// that userName (in the integration given, or in every configured one).
async fn user_ids(
    config: &Config,
    store: &Store,
    integration: Option<&str>,
    user: &str,
) -> anyhow::Result<Vec<String>> {
    let integrations: Vec<&str> = match integration {
        Some(i) => vec![i],
        None => config.integrations.iter().map(|i| i.id.as_str()).collect(),
    };
    let mut ids = Vec::new();
    for i in &integrations {
        if store
            .get_resource(i, ResourceType::User, user)
            .await?
            .is_some()
        {
            return Ok(vec![user.to_string()]);
        }
    }
    for i in &integrations {
        for r in store
            .list_resources(i, ResourceType::User, Some((LookupColumn::NameKey, user)))
            .await?
        {
            ids.push(r.id);
        }
    }
    Ok(ids)
}

/// A job's user's userName (or a group's displayName); `None` once it is deleted.
async fn resource_name(store: &Store, j: &JobRow) -> anyhow::Result<Option<String>> {
    let r = store
        .get_resource(&j.integration_id, j.resource_type, &j.resource_id)
        .await?;
    let field = match j.resource_type {
        ResourceType::User => "userName",
        ResourceType::Group => "displayName",
    };
    Ok(r.and_then(|r| r.data.get(field).and_then(Value::as_str).map(str::to_owned)))
}

async fn show(store: &Store, id: i64) -> anyhow::Result<ExitCode> {
    let Some(j) = store.job(id).await? else {
        errln!("usher: no job {id}");
        return Ok(ExitCode::from(1));
    };
    let events: Vec<Value> = store
        .audit_events(Some(&j.integration_id), 100_000)
        .await?
        .into_iter()
        .filter(|e| e.detail.get("job").and_then(Value::as_i64) == Some(id))
        .map(|e| {
            json!({"seq": e.seq, "at": e.at, "type": e.event_type, "actor": e.actor, "detail": e.detail})
        })
        .collect();
    // The outcome is the detail of the job's last event: said once.
    let outcome_shown = events
        .iter()
        .any(|e| Some(&e["detail"]) == j.outcome.as_ref());
    // Each screenshot once, at the first step that shows it (an unchanged page gives
    // the same image).
    let mut seen = std::collections::HashSet::new();
    let evidence: Vec<Value> = store
        .job_traces(id)
        .await?
        .into_iter()
        .flat_map(|t| {
            let steps: Vec<StepRecord> = serde_json::from_value(t.steps).unwrap_or_default();
            steps.into_iter().flat_map(move |s| {
                let (attempt, action) = (t.attempt, t.action.clone());
                [("before", s.screenshot_before.clone()), ("after", s.screenshot.clone())]
                    .into_iter()
                    .filter_map(move |(when, h)| {
                        h.map(|h| json!({"attempt": attempt, "action": action, "at": format!("{}:{}", s.file, s.line), "step": s.step, "when": when, "screenshot": h}))
                    })
            })
        })
        .filter(|e| seen.insert(e["screenshot"].to_string()))
        .collect();
    let out = json!({
        "id": j.id, "integration": j.integration_id, "resource_type": j.resource_type.as_str(),
        "resource": j.resource_id, "operation": j.operation.as_str(), "status": j.status.as_str(),
        "attempts": j.attempts, "run_after": j.run_after, "lease_owner": j.lease_owner,
        "lease_until": j.lease_until, "last_error": j.last_error,
        "superseded_by": j.superseded_by, "created_at": j.created_at,
        "updated_at": j.updated_at,
        "outcome": if outcome_shown { json!("(the detail of its last event)") } else { json!(j.outcome) },
        "events": events, "evidence": evidence,
    });
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `usher jobs trace`: the stored step records of every action the job ran, with their
/// screenshots from the evidence folder, as one HTML file on standard output.
async fn trace(path: &Path, store: &Store, id: i64) -> anyhow::Result<ExitCode> {
    let Some(j) = store.job(id).await? else {
        errln!("usher: no job {id}");
        return Ok(ExitCode::from(1));
    };
    let config = usher::config::Config::load(path)?;
    let evidence = EvidenceStore::new(usher::engine::evidence_dir(&config))?;
    let traces = store.job_traces(id).await?;
    if traces.is_empty() {
        errln!("usher: job {id} has no trace (it has not run an action since Usher kept traces)");
        return Ok(ExitCode::from(1));
    }
    let mut sections = Vec::new();
    for t in traces {
        let steps: Vec<StepRecord> = serde_json::from_value(t.steps)
            .map_err(|e| anyhow::anyhow!("job {id}: stored trace is not readable: {e}"))?;
        sections.push(TraceSection {
            heading: format!("attempt {} · {} · {}", t.attempt, t.action, t.at),
            steps,
            error: t.error,
        });
    }
    let trace = Trace {
        title: format!(
            "job {id} · {} {} · {}",
            j.operation, j.resource_id, j.status
        ),
        facts: vec![
            ("integration".into(), j.integration_id.clone()),
            ("job".into(), id.to_string()),
            ("status".into(), j.status.to_string()),
            (
                "last error".into(),
                j.last_error.clone().unwrap_or_default(),
            ),
        ],
        sections,
    };
    print!(
        "{}",
        render_html(&trace, &|h| std::fs::read(evidence.path_of(h)).ok())
    );
    Ok(ExitCode::SUCCESS)
}

/// Retry (`retry`) or cancel a job, audited with the CLI's actor.
async fn transition(store: &Store, id: i64, retry: bool) -> anyhow::Result<ExitCode> {
    let Some(j) = store.job(id).await? else {
        errln!("usher: no job {id}");
        return Ok(ExitCode::from(1));
    };
    if retry && j.status == JobStatus::Pending {
        errln!(
            "usher: job {id} is pending: a worker runs it when it is due ({}); nothing to retry",
            table_time(&j.run_after)
        );
        return Ok(ExitCode::from(1));
    }
    let event = NewEvent {
        actor: super::cli_actor(),
        event_type: if retry {
            kinds::JOB_REQUEUED
        } else {
            kinds::JOB_CANCELLED
        },
        target: Some(j.resource_id.clone()),
        integration_id: Some(j.integration_id.clone()),
        detail: json!({"job": id, "was": j.status.as_str()}),
    };
    let done = if retry {
        store.requeue_job(id, &event).await?
    } else {
        store.cancel_job(id, &event).await?
    };
    if done {
        outln!(
            "job {id}: {}",
            if retry { "queued again" } else { "cancelled" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    errln!(
        "usher: job {id} is {}; only {} jobs can be {}",
        j.status,
        if retry {
            "failed or cancelled"
        } else {
            "pending or staged"
        },
        if retry { "retried" } else { "cancelled" }
    );
    Ok(ExitCode::from(1))
}
