//! The `usher` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rand::RngCore;

use usher::config::{Config, hash_token};

#[derive(Parser)]
#[command(
    name = "usher",
    version,
    about = "SCIM 2.0 gateway for apps with an admin UI and no API"
)]
struct Cli {
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
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Bearer tokens for integrations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and exit non-zero on any error.
    Check {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the SHA-256 to put in `scim_token_sha256`.
    Generate,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit trail; non-zero exit if it was tampered with.
    Verify {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("USHER_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let running = usher::server::start(&config).await?;
            eprintln!(
                "usher: serving {} gateway(s) on http://{}",
                config.integrations.len(),
                running.addr
            );
            for i in &config.integrations {
                eprintln!(
                    "usher:   {} ({}) at http://{}/scim/v2/{}",
                    i.name, i.app, running.addr, i.id
                );
            }
            usher::server::shutdown_signal().await;
            running.shutdown().await?;
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let c = Config::load(&config)?;
            println!(
                "{}: ok ({} integration(s))",
                config.display(),
                c.integrations.len()
            );
        }
        Command::Token {
            command: TokenCommand::Generate,
        } => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            println!("token:  {token}");
            println!("sha256: {}", hex::encode(hash_token(&token)));
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let c = Config::load(&config)?;
            let store = usher::store::Store::connect(
                &c.database,
                std::sync::Arc::new(usher::clock::SystemClock),
            )
            .await?;
            let n = store.verify_audit_chain().await?;
            store.close().await;
            println!("audit trail intact: {n} event(s) verified");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("usher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One plain line: the error and its causes.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                line.push_str(": ");
                line.push_str(&cause.to_string());
            }
            eprintln!("usher: {line}");
            ExitCode::FAILURE
        }
    }
}
