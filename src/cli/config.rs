//! `usher config check` and `usher token generate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use rand::RngCore;

use usher::config::{Config, hash_token};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and exit non-zero on any error.
    Check {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the SHA-256 to put in `scim_token_sha256`.
    Generate,
}

pub fn config_command(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { config } => {
            let c = Config::load(&config)?;
            println!(
                "{}: ok ({} integration(s))",
                config.display(),
                c.integrations.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn token_command(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Generate => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            println!("token:  {token}");
            println!("sha256: {}", hex::encode(hash_token(&token)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
