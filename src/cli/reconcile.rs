//! `usher reconcile`: one reconciliation run of an integration now — list the app's
//! accounts, compare them with Usher's users, report, and queue the jobs its policy
//! allows (none with `--dry-run`). Exit 0: the app is in line; 1: findings; 2: the run
//! could not be made.

use std::path::PathBuf;
use std::process::ExitCode;

use usher::engine::{Engine, Finding, ReconcileReport};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
    config: PathBuf,
    /// The integration to reconcile.
    #[arg(long)]
    integration: String,
    /// Read and report only: record nothing, queue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let params = match super::run_once::prepare(&args.config, Some(&args.integration)).await {
        Ok(p) => p,
        Err(e) => return Ok(failed(&e)),
    };
    let report =
        match Engine::reconcile_once(params, &args.integration, args.dry_run, super::cli_actor())
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(failed(&anyhow::Error::new(e))),
        };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let findings = report.drifted + report.missing + report.adopted + report.discovered;
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn failed(e: &anyhow::Error) -> ExitCode {
    errln!("usher: reconcile failed: {}", super::one_line(e));
    ExitCode::from(2)
}

/// An account as people read it: its email or login, and the app's id.
fn named(a: &usher::engine::AppAccount) -> String {
    let name = a
        .email
        .clone()
        .or_else(|| a.user_name.clone())
        .unwrap_or_default();
    match &a.app_id {
        Some(id) if !name.is_empty() && *id != name => format!("{name} (app id {id})"),
        Some(id) => id.clone(),
        None => name,
    }
}

fn print_report(r: &ReconcileReport) {
    outln!(
        "{}{}: {} account(s) listed: {} in line, {} drifted, {} missing, {} adopted, {} discovered, {} protected, {} gone; {} job(s) queued",
        r.integration,
        if r.dry_run { " (dry run)" } else { "" },
        r.listed,
        r.in_line,
        r.drifted,
        r.missing,
        r.adopted,
        r.discovered,
        r.protected,
        r.gone,
        r.jobs.len()
    );
    for f in &r.findings {
        match f {
            Finding::InLine { .. } => {}
            Finding::Drifted {
                user, differences, ..
            } => outln!("drifted    {user}: {}", differences.join("; ")),
            Finding::Missing { user } => outln!("missing    {user}: not in the app"),
            Finding::Gone { user } => {
                outln!("gone       {user}: a deleted user's account is no longer in the app")
            }
            Finding::Adoptable { user, account } => {
                outln!("adopted    {user}: {}", named(account))
            }
            Finding::Orphan {
                account,
                protected,
                duplicate_of,
            } => outln!(
                "{}{}{}",
                if *protected {
                    "protected  "
                } else {
                    "discovered "
                },
                named(account),
                match duplicate_of {
                    Some(u) => format!(" (a second account of {u})"),
                    None => String::new(),
                }
            ),
        }
    }
}
