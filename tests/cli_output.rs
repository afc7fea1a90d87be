//! The command line's output: no command panics when its standard output is closed
//! (`usher playbook schema | head -c 200`); `usher completions`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

/// Runs usher with standard output a pipe whose reader is already gone: every write
/// fails with EPIPE, deterministically.
fn with_closed_stdout(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(args)
        .current_dir(dir)
        .env("USHER_LOG", "error")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run usher")
}

#[test]
fn no_command_panics_on_a_closed_pipe() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("usher.yaml"),
        "listen: 127.0.0.1:0\ndatabase: sqlite://usher.db\n",
    )
    .expect("config");
    for args in [
        &["playbook", "schema"][..],
        &["token", "generate"],
        &["config", "check"],
        &["jobs", "list"],
        &["jobs", "list", "--json"],
        &["vault", "keygen"],
        &["completions", "bash"],
        &["--version"],
    ] {
        let out = with_closed_stdout(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{args:?} died of a signal");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, needle) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef usher"),
        ("fish", "complete -c usher"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(needle),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(text.contains("run-once"), "{shell} completes subcommands");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert!(!out.status.success());
}
