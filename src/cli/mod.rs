//! The `usher` command line: the clap definitions and one module per command group
//! (`serve`, `config` with `token`, `audit`, `playbook`, `vault`, `jobs`, `healthcheck`,
//! `demo`).
//! Handlers print their result and return the exit code; errors go back to `main`,
//! which prints them as one plain line.

mod admin;
mod audit;
mod canary;
mod config;
mod demo;
mod healthcheck;
mod integration;
mod jobs;
mod playbook;
mod posture;
mod reconcile;
mod run_once;
mod serve;
mod vault;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

use usher::audit::Actor;
use usher::clock::SystemClock;
use usher::config::{Config, Purpose};
use usher::store::Store;

#[derive(Parser)]
#[command(
    name = "usher",
    version,
    about = "SCIM 2.0 gateway for apps with an admin UI and no API"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every integration's SCIM gateway.
    Serve {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Claim and run the jobs that are due, then exit: 0 all succeeded, 1 some did not,
    /// 2 cannot start (for cron, Kubernetes CronJobs, CI).
    RunOnce(run_once::Args),
    /// Compare an integration's app accounts with Usher's users now: drifted, missing,
    /// adopted and discovered accounts (exit 0 in line, 1 findings, 2 failed).
    Reconcile(reconcile::Args),
    /// Look at an integration's admin UI now: sign in, list, run each action's read-only
    /// probe (exit 0 ok, 1 degraded: the UI changed, 2 failed).
    Canary(canary::Args),
    /// Each integration's service account: password age and rotation, MFA, last
    /// sign-in, canary, reconciliation (exit 1 when a policy is broken).
    Posture(posture::PostureArgs),
    /// Who has access to what in each app, and why.
    Access {
        #[command(subcommand)]
        command: posture::AccessCommand,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Bearer tokens for integrations.
    Token {
        #[command(subcommand)]
        command: config::TokenCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Playbook tools: check, schema, run one action.
    Playbook {
        #[command(subcommand)]
        command: playbook::PlaybookCommand,
    },
    /// The vault of service-account secrets (values are read from standard input or a
    /// prompt, never from arguments, and never printed).
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Provisioning jobs: list, show, retry, cancel.
    Jobs {
        #[arg(
            long,
            short,
            default_value = "usher.yaml",
            env = "USHER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Check that a running server answers on /healthz (or --path); exit 0 or 1.
    Healthcheck(healthcheck::Args),
    /// Integrations' shared state: list (running or paused, and why), resume.
    Integration {
        #[arg(
            long,
            short,
            default_value = "usher.yaml",
            env = "USHER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: integration::IntegrationCommand,
    },
    /// Print a shell completion script: `usher completions bash >
    /// /etc/bash_completion.d/usher` (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// The admin console: the break-glass account.
    Admin {
        #[arg(
            long,
            short,
            default_value = "usher.yaml",
            env = "USHER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Run a complete demo: a bundled admin app, a SCIM gateway for it and the engine.
    Demo {
        /// Address of the SCIM gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Folder for the demo's database, configuration and evidence.
        #[arg(long, default_value = "usher-demo")]
        dir: PathBuf,
    },
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve::run(&config).await,
        Command::RunOnce(args) => run_once::run(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Canary(args) => canary::run(args).await,
        Command::Posture(args) => posture::posture(args).await,
        Command::Access { command } => posture::access(command).await,
        Command::Config { command } => config::config_command(command).await,
        Command::Token { command } => config::token_command(command),
        Command::Audit { command } => audit::run(command).await,
        Command::Playbook { command } => playbook::run(command).await,
        Command::Vault { command } => vault::run(command).await,
        Command::Jobs { config, command } => jobs::run(&config, command).await,
        Command::Healthcheck(args) => {
            healthcheck::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Integration { config, command } => integration::run(&config, command).await,
        Command::Admin { config, command } => admin::run(&config, command).await,
        Command::Demo { listen, dir } => demo::run(listen, &dir).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "usher", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configuration's store, with the system clock. Every command opens it here.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::connect(&config.database, Arc::new(SystemClock)).await?)
}

/// Loads the configuration file and opens its store.
async fn open(path: &Path) -> anyhow::Result<(Config, Store)> {
    let config = Config::load_for(path, Purpose::Tool)?;
    let store = open_store(&config).await?;
    Ok((config, store))
}

/// An error as one plain line: its message, then each cause its message does not
/// already show (many errors print their source in their own message, and the chain
/// would say it again).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if c.is_empty() || line.contains(&c) {
            continue;
        }
        line.push_str(": ");
        line.push_str(&c);
    }
    line
}

/// Who the audit trail names for anything done through the CLI: `admin:cli:$USER`.
fn cli_actor() -> Actor {
    let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    Actor::Admin(format!("cli:{who}"))
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot listen on 127.0.0.1:1: {source}")]
        Bind { source: std::io::Error },
        #[error("cannot start: {0}")]
        Wrapped(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("inner reason")]
    struct Inner;

    #[test]
    fn each_cause_is_printed_once() {
        let e = anyhow::Error::new(Outer::Bind {
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
        let line = one_line(&e);
        assert_eq!(line.matches("address in use").count(), 1, "{line}");
        // A cause the message does not show is still printed.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start")]
        struct Plain(#[source] Inner);
        let line = one_line(&anyhow::Error::new(Plain(Inner)));
        assert_eq!(line, "cannot start: inner reason");
        let line = one_line(&anyhow::Error::new(Outer::Wrapped(Inner)));
        assert_eq!(line, "cannot start: inner reason");
        let line = one_line(&anyhow::Error::new(Plain(Inner)).context("running usher serve"));
        assert_eq!(line, "running usher serve: cannot start: inner reason");
    }
}
