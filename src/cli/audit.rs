//! `usher audit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit trail; non-zero exit if it was tampered with.
    Verify {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { config } => {
            let (_, store) = super::open(&config).await?;
            let verified = store.verify_audit_chain().await;
            store.close().await;
            println!("audit trail intact: {} event(s) verified", verified?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
