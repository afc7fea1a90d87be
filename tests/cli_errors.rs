//! The command line's errors: one plain line, each cause once (a cause printed by an
//! error's own message is not printed again from its source chain).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn usher(args: &[&str], config: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .env("USHER_LOG", "error")
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .output()
        .expect("run usher");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The `usher: …` line of stderr.
fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| l.starts_with("usher: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// No run of 12+ characters between `: ` separators appears twice.
fn assert_no_repeat(line: &str) {
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    for (i, p) in parts.iter().enumerate() {
        if p.len() >= 12 {
            assert!(
                !parts[i + 1..]
                    .iter()
                    .any(|q| q.contains(p) || p.contains(q) && q.len() >= 12),
                "`{p}` repeats in: {line}"
            );
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn a_missing_playbook_is_named_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let cfg = write(
        dir.path(),
        "usher.yaml",
        &format!(
            "listen: 127.0.0.1:0\ndatabase: {db}\nengine:\n  workers: 1\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme\n    playbook: does-not-exist.yaml\n    base_url: http://127.0.0.1:9\n    service_account: acme-admin\n    scim_token_sha256: {}\n",
            "0".repeat(64)
        ),
    );
    // The vault key is asked for first; give one so that the playbook is what fails.
    let key = write(
        dir.path(),
        "vault.key",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("USHER_VAULT_KEY_FILE", &key)
        .env("USHER_LOG", "error")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(line.matches("does-not-exist.yaml").count(), 1, "{line}");
    assert_eq!(line.matches("cannot read playbook").count(), 1, "{line}");
    assert_no_repeat(&line);
}

#[test]
fn an_invalid_playbook_block_is_shown_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    write(
        dir.path(),
        "bad.yaml",
        "app: Bad\nversion: 1\nlogin: []\nsession_check: []\nactions:\n  create_usr:\n    steps: [ { goto: \"x\" } ]\n",
    );
    let cfg = write(
        dir.path(),
        "usher.yaml",
        &format!(
            "listen: 127.0.0.1:0\ndatabase: {db}\nengine:\n  workers: 1\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme\n    playbook: bad.yaml\n    base_url: http://127.0.0.1:9\n    service_account: acme-admin\n    scim_token_sha256: {}\n",
            "0".repeat(64)
        ),
    );
    let key = write(
        dir.path(),
        "vault.key",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("USHER_VAULT_KEY_FILE", &key)
        .env("USHER_LOG", "error")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("create_usr").count(), 1, "{stderr}");
}

#[test]
fn an_address_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let cfg = write(
        dir.path(),
        "usher.yaml",
        &format!("listen: 127.0.0.1:{port}\ndatabase: {db}\n"),
    );
    let (ok, stderr) = usher(&["serve"], Some(&cfg));
    assert!(!ok);
    let line = error_line(&stderr);
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_no_repeat(&line);
}

#[test]
fn a_database_error_is_said_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1.
    let cfg = write(
        dir.path(),
        "usher.yaml",
        "listen: 127.0.0.1:0\ndatabase: postgres://usher@127.0.0.1:1/usher\n",
    );
    let (ok, stderr) = usher(&["jobs", "list"], Some(&cfg));
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.to_lowercase().contains("connection refused"), "{line}");
    assert_eq!(
        line.to_lowercase().matches("connection refused").count(),
        1,
        "{line}"
    );
    assert_no_repeat(&line);
}

#[test]
fn a_missing_sqlite_folder_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "usher.yaml",
        "listen: 127.0.0.1:0\ndatabase: sqlite://no-such-folder/usher.db\n",
    );
    let (ok, stderr) = usher(&["jobs", "list"], Some(&cfg));
    assert!(!ok);
    let line = error_line(&stderr);
    let folder = dir.path().join("no-such-folder");
    assert!(
        line.contains(&format!("its folder {} does not exist", folder.display())),
        "{line}"
    );
    assert_no_repeat(&line);
    // A config named from its own folder: the error still names the full path.
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["jobs", "list", "--config", "usher.yaml"])
        .current_dir(dir.path())
        .env("USHER_LOG", "error")
        .output()
        .expect("run");
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(
        line.contains(&format!("its folder {} does not exist", folder.display())),
        "{line}"
    );
}

#[test]
fn relative_paths_follow_the_config_file_not_the_current_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "usher.yaml",
        "listen: 127.0.0.1:0\ndatabase: sqlite://usher.db\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["jobs", "list", "--config"])
        .arg(&cfg)
        .current_dir(elsewhere.path())
        .env("USHER_LOG", "error")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("usher.db").exists());
    assert!(!elsewhere.path().join("usher.db").exists());
}

#[test]
fn vault_keygen_makes_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("etc/usher/vault.key");
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["vault", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(key.exists());
    let again = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["vault", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("cannot write key file"), "{stderr}");
    assert!(!stderr.contains("cannot read"), "{stderr}");
}
