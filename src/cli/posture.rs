//! `usher posture` and `usher access report`: what Usher knows of each integration's
//! service account (password age, rotation, MFA, last sign-in, canary, reconciliation)
//! and who has access to what in each app, and why. Read from the database (and the
//! playbooks' role mappings); nothing is signed in to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use usher::config::Config;
use usher::engine;

#[derive(clap::Args)]
pub struct PostureArgs {
    #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
    config: PathBuf,
    /// Only this integration.
    #[arg(long)]
    integration: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Every account in each app with its roles and the SCIM groups or roles that grant
    /// them, and the discovered accounts with no grant.
    Report {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
        /// Only this integration.
        #[arg(long)]
        integration: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

fn chosen<'a>(
    config: &'a Config,
    path: &Path,
    only: Option<&str>,
) -> anyhow::Result<Vec<&'a usher::config::IntegrationConfig>> {
    match only {
        Some(id) => match config.integrations.iter().find(|i| i.id == id) {
            Some(i) => Ok(vec![i]),
            None => anyhow::bail!("no integration `{id}` in {}", path.display()),
        },
        None => Ok(config.integrations.iter().collect()),
    }
}

/// Exit 0: every integration in line with its policy; 1: violations.
pub async fn posture(args: PostureArgs) -> anyhow::Result<ExitCode> {
    let (config, store) = super::open(&args.config).await?;
    let mut all = Vec::new();
    for i in chosen(&config, &args.config, args.integration.as_deref())? {
        all.push(engine::posture(&store, i).await?);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for p in &all {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "never".into());
            outln!("{}:", p.integration);
            outln!(
                "  password        {} (changed {}{}), last rotation {}{}{}",
                p.service_account,
                opt(&p.password_changed_at),
                p.password_age_days
                    .map(|d| format!(", {d} days ago"))
                    .unwrap_or_default(),
                opt(&p.last_rotation_at),
                p.rotation_every_days
                    .map(|d| format!(", every {d} days"))
                    .unwrap_or_default(),
                if p.rotation_pending {
                    ", a rotation is unfinished"
                } else {
                    ""
                }
            );
            outln!(
                "  mfa             {} (policy {}), last sign-in {}{}{}",
                if p.mfa_in_vault {
                    "TOTP in vault"
                } else {
                    "no TOTP in vault"
                },
                p.mfa_policy,
                opt(&p.last_login_at),
                match p.last_login_used_mfa {
                    Some(true) => " with a code",
                    Some(false) => " without a code",
                    None => "",
                },
                if p.mfa_enrolment_pending {
                    ", a TOTP enrolment is unfinished"
                } else {
                    ""
                }
            );
            outln!(
                "  canary          {}{}",
                p.canary,
                p.canary_since
                    .as_deref()
                    .map(|s| format!(" since {s}"))
                    .unwrap_or_default()
            );
            outln!(
                "  reconciliation  last {}: {} drifted, {} missing; {} discovered account(s){}",
                opt(&p.last_reconcile_at),
                p.drifted.map_or_else(|| "?".into(), |n| n.to_string()),
                p.missing.map_or_else(|| "?".into(), |n| n.to_string()),
                p.discovered,
                if p.paused { "; PAUSED" } else { "" }
            );
            for v in &p.violations {
                outln!("  violation       {v}");
            }
        }
    }
    store.close().await;
    Ok(if all.iter().all(|p| p.violations.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn access(command: AccessCommand) -> anyhow::Result<ExitCode> {
    let AccessCommand::Report {
        config: path,
        integration,
        format,
    } = command;
    let (config, store) = super::open(&path).await?;
    let playbooks = engine::load_playbooks(&config, Path::new(""))?;
    let mut rows = Vec::new();
    for i in chosen(&config, &path, integration.as_deref())? {
        let pb = playbooks.get(&i.id).map(|p| p.as_ref());
        rows.extend(engine::access_report(&store, i, pb).await?);
    }
    match format {
        Format::Csv => out!("{}", engine::access_csv(&rows)),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&rows)?),
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
