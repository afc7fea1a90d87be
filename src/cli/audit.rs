//! `usher audit verify` and `usher audit keygen`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use usher::audit::checkpoint::{Checkpoint, CheckpointError, CheckpointKey, check_trail};
use usher::audit::evidence::EvidenceStore;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit trail, check every evidence file the events
    /// cite, and (with --checkpoint) that the trail still reaches every signed
    /// checkpoint; non-zero exit, one line per problem, if anything was tampered with.
    Verify {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
        /// A file of signed checkpoints (`audit.checkpoint_file`, or a log holding
        /// `audit checkpoint` lines); needs the checkpoint key.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Write the audit events since a time to standard output, for a SIEM: one JSON
    /// object per line, or CSV with a header. The export itself is audited.
    Export {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
        /// An RFC 3339 time, or a duration back from now (`24h`, `30m`).
        #[arg(long)]
        since: String,
        /// Only this integration's events.
        #[arg(long)]
        integration: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormatArg,
    },
    /// Print a new random checkpoint key (base64), or write it to a new file (mode 600).
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormatArg {
    Jsonl,
    Csv,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export {
            config,
            since,
            integration,
            format,
        } => export(&config, &since, integration.as_deref(), format).await,
        AuditCommand::Verify { config, checkpoint } => verify(&config, checkpoint).await,
        AuditCommand::Keygen { out } => {
            // The same form as a vault key: 32 random bytes in base64.
            let (_, text) = super::vault::keygen(out.as_deref())?;
            match (text, out) {
                (Some(text), _) => out!("{}", text.as_str()),
                (None, Some(path)) => outln!("wrote audit checkpoint key to {}", path.display()),
                (None, None) => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn export(
    config: &std::path::Path,
    since: &str,
    integration: Option<&str>,
    format: ExportFormatArg,
) -> anyhow::Result<ExitCode> {
    use usher::web::queries::{ExportFormat, export, parse_since};
    let (c, store) = super::open(config).await?;
    if let Some(id) = integration
        && !c.integrations.iter().any(|i| i.id == id)
    {
        store.close().await;
        anyhow::bail!("no integration `{id}` in {}", config.display());
    }
    let since = match parse_since(since, store.clock().now()) {
        Ok(s) => s,
        Err(m) => {
            store.close().await;
            anyhow::bail!("{m}");
        }
    };
    let format = match format {
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let n = export(&store, &since, integration, format, &mut out).await;
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    std::io::Write::flush(&mut out)?;
    drop(out);
    let r = store
        .append_event(&usher::audit::NewEvent {
            actor: super::cli_actor(),
            event_type: usher::audit::kinds::AUDIT_EXPORTED,
            target: None,
            integration_id: integration.map(str::to_owned),
            detail: serde_json::json!({"since": since, "events": n, "format": format.as_str()}),
        })
        .await;
    store.close().await;
    r?;
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: &std::path::Path, checkpoint: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (c, store) = super::open(config).await?;
    let events = store.audit_events(None, i64::MAX).await;
    store.close().await;
    let events = events?;
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = usher::audit::verify_chain(&events) {
        problems.push(e.to_string());
    }
    let evidence = EvidenceStore::at(usher::engine::evidence_dir(&c));
    let report = evidence.verify(&events);
    for m in &report.missing {
        problems.push(format!("evidence missing: {m}"));
    }
    for a in &report.altered {
        problems.push(format!("evidence altered: {a}"));
    }
    let mut vouched = None;
    if let Some(path) = &checkpoint {
        let key = CheckpointKey::from_env_or_config(c.audit.checkpoint_key_file.as_deref())?
            .ok_or(CheckpointError::NoKey)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read checkpoints {}: {e}", path.display()))?;
        let cps = Checkpoint::parse_all(&path.display().to_string(), &text)?;
        match check_trail(&events, &cps, &key) {
            Ok(seq) => vouched = Some((cps.len(), seq)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            errln!("usher: {p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    out!(
        "audit trail intact: {} event(s) verified, {} evidence file(s) checked",
        events.len(),
        report.intact
    );
    match vouched {
        Some((n, seq)) => outln!(", reaches {n} signed checkpoint(s) (up to event {seq})"),
        None => outln!(),
    }
    Ok(ExitCode::SUCCESS)
}
