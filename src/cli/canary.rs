//! `usher canary`: one UI-change canary run of an integration now — sign in, list the
//! accounts, run each action's `probe` — and record the integration's status. Exit 0:
//! the UI matches the playbook; 1: degraded (each finding printed with its `file:line`
//! and locator); 2: the run could not look at the app.

use std::path::PathBuf;
use std::process::ExitCode;

use usher::engine::Engine;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
    config: PathBuf,
    /// The integration to look at.
    #[arg(long)]
    integration: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let params = match super::run_once::prepare(&args.config, Some(&args.integration)).await {
        Ok(p) => p,
        Err(e) => return Ok(failed(&e)),
    };
    let report = match Engine::canary_once(params, &args.integration).await {
        Ok(r) => r,
        Err(e) => return Ok(failed(&anyhow::Error::new(e))),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{}: {} (checked: {})",
            report.integration,
            report.status,
            report.checked.join(", ")
        );
        for f in &report.findings {
            outln!(
                "{} {}: {}: {}{}",
                f.part,
                f.at,
                f.step,
                f.reason,
                f.locator
                    .as_deref()
                    .map(|l| format!(" (locator {l})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn failed(e: &anyhow::Error) -> ExitCode {
    errln!("usher: canary failed: {}", super::one_line(e));
    ExitCode::from(2)
}
