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
            eprintln!("usher: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
