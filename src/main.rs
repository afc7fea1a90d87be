//! The `usher` command line (`cli`): parse, set up logging and the runtime, run the
//! command, print an error as one plain line.

use std::process::ExitCode;

use clap::Parser;

/// `print!` that never panics: when standard output is closed (`usher … | head`), the
/// process ends quietly with exit 0; any other write error ends it with 1.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_or_exit(&mut std::io::stdout(), format_args!($($arg)*)) };
}
/// `println!` that never panics (see `out!`).
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}
/// `eprintln!` that never panics (see `out!`).
macro_rules! errln {
    () => { $crate::write_or_exit(&mut std::io::stderr(), format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_or_exit(&mut std::io::stderr(), format_args!("{}\n", format_args!($($arg)*))) };
}

mod cli;

/// Writes and flushes; a closed pipe ends the process with 0 (the reader has what it
/// wanted), another error with 1.
pub(crate) fn write_or_exit(w: &mut impl std::io::Write, args: std::fmt::Arguments<'_>) {
    if let Err(e) = w.write_fmt(args).and_then(|()| w.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Standard error may be the closed one: nothing more can be said.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("usher: cannot write the output: {e}\n"),
        );
        std::process::exit(1);
    }
}

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
            errln!("usher: cannot start the runtime: {e}");
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
                errln!("usher: {}", cli::one_line(&e));
            }
            ExitCode::FAILURE
        }
    }
}
