//! The `usher` command line (`cli`): parse, set up logging and the runtime, run the
//! command, print an error as one plain line.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn init_tracing() {
    // chromiumoxide logs every DevTools message (typed values included) at TRACE, and a
    // WARN per event Chromium 156 renamed: keep it quiet unless asked for by name.
    let filter = match std::env::var("USHER_LOG") {
        Ok(f) if f.contains("chromiumoxide") => tracing_subscriber::EnvFilter::new(f),
        Ok(f) => tracing_subscriber::EnvFilter::new(format!("{f},chromiumoxide=error")),
        Err(_) => {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info,chromiumoxide=error")
        }
    };
    let json = json_logs();
    // Colour codes only for a person at a terminal, never into files or collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `USHER_LOG_FORMAT=json`: every line on stderr is a JSON object (the banner and a
/// final error too).
pub(crate) fn json_logs() -> bool {
    std::env::var("USHER_LOG_FORMAT").is_ok_and(|f| f == "json")
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("usher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One plain line: the error and each cause once.
            if json_logs() {
                tracing::error!(error = %cli::one_line(&e), "usher stopped");
            } else {
                eprintln!("usher: {}", cli::one_line(&e));
            }
            ExitCode::FAILURE
        }
    }
}
