//! `usher admin set-password`: the console's break-glass account (`admin`). Its argon2
//! hash is kept in the database; the account signs in only where `console.break_glass`
//! is on.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use usher::audit::{NewEvent, kinds};

use super::vault::SecretInput;

/// Shorter passwords are refused: this account bypasses the IdP.
const MIN_PASSWORD: usize = 12;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Set the break-glass account's password (read from a prompt or standard input;
    /// repeated at a prompt). Signs out the account's open sessions.
    SetPassword,
}

pub async fn run(path: &Path, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::SetPassword => {
            let mut input = SecretInput::stdin();
            let password = input.read("new password")?;
            if input.is_terminal() {
                let again = input.read("the same password again")?;
                if *again != *password {
                    anyhow::bail!("the two passwords differ; nothing was changed");
                }
            }
            if password.chars().count() < MIN_PASSWORD {
                anyhow::bail!(
                    "the password is shorter than {MIN_PASSWORD} characters; nothing was changed"
                );
            }
            let (config, store) = super::open(path).await?;
            let hash = usher::web::hash_password(&password)?;
            let event = NewEvent {
                actor: super::cli_actor(),
                event_type: kinds::CONSOLE_PASSWORD_SET,
                target: Some(format!("console:local:{}", usher::web::LOCAL_ACCOUNT)),
                integration_id: None,
                detail: json!({}),
            };
            store
                .set_local_password(usher::web::LOCAL_ACCOUNT, &hash, &event)
                .await?;
            store.close().await;
            if config.console.break_glass {
                outln!("the break-glass account `admin` has a new password");
            } else {
                outln!(
                    "the break-glass account `admin` has a new password; it signs in only once console.break_glass is on"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
