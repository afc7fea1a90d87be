//! `usher config check`: everything `usher serve` would refuse, all at once, each
//! mistake with `file:line:col` where it comes from the file; nothing is changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Exit code, stdout, stderr.
fn check(cfg: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args(["config", "check", "--config"])
        .arg(cfg)
        .env("USHER_LOG", "error")
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .env_remove("USHER_AUDIT_KEY")
        .env_remove("USHER_AUDIT_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run usher");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn integration(id: &str, playbook: &str, base_url: &str) -> String {
    format!(
        "  - id: {id}\n    name: A\n    app: A\n    playbook: {playbook}\n    base_url: {base_url}\n    service_account: s\n    scim_token_sha256: '{}'\n",
        "0".repeat(64)
    )
}

#[test]
fn a_good_config_is_ok_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("vault.key"), KEY).expect("key");
    let pb = repo().join("playbooks/classic.yaml");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        format!(
            "database: sqlite://usher.db\nvault:\n  key_file: vault.key\nintegrations:\n{}",
            integration("acme", &pb.display().to_string(), "http://127.0.0.1:3000")
        ),
    )
    .expect("write");
    let (code, out, err) = check(&cfg, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("usher.yaml: ok (1 integration(s)"), "{out}");
    assert!(out.contains("will be created"), "{out}");
    assert!(
        !dir.path().join("usher.db").exists(),
        "check must not create the database"
    );
}

#[test]
fn every_mistake_is_reported_at_once_with_its_position() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "app: Bad\nversion: 1\nlogin: []\nsession_check: []\nactions:\n  create_usr:\n    steps: [ { goto: \"x\" } ]\n",
    )
    .expect("bad playbook");
    let cfg = dir.path().join("usher.yaml");
    let text = format!(
        "database: sqlite://no-such-folder/usher.db\nvault:\n  key_file: missing.key\nintegrations:\n{}{}{}",
        integration("acme", "does-not-exist.yaml", "http://127.0.0.1:3000"),
        integration("acme", "bad.yaml", "admin.example"),
        integration("other", "bad.yaml", "http://x"),
    );
    std::fs::write(&cfg, &text).expect("write");
    let (code, out, err) = check(&cfg, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let f = cfg.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let has = |prefix: String, needle: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no `{prefix}…{needle}` in:\n{err}"
        )
    };
    // The second `acme` (line 12) is a duplicate; its base_url (line 16) is no URL.
    has(format!("{f}:12:9: "), "integration id `acme` is used twice");
    has(format!("{f}:16:15: "), "base_url `admin.example`");
    // The missing playbook, where the config names it.
    has(format!("{f}:8:15: "), "does-not-exist.yaml");
    // The invalid playbook's own mistakes, in the playbook's file, once although two
    // integrations name it.
    let bad = dir.path().join("bad.yaml").display().to_string();
    has(format!("{bad}:6:3: "), "create_usr");
    assert_eq!(err.matches("create_usr").count(), 1, "{err}");
    // The database folder, named.
    has(format!("{f}:1:11: "), "no-such-folder");
    // The vault key file, where the config names it.
    has(format!("{f}:3:13: "), "missing.key");
    assert!(err.contains("mistake(s)"), "{err}");
}

#[test]
fn no_integrations_and_an_unreachable_database_are_mistakes() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        "database: postgres://usher:secretpw@127.0.0.1:1/usher\nintegrations: []\n",
    )
    .expect("write");
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no integrations"), "{err}");
    let f = cfg.display().to_string();
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("{f}:1:11: ")) && l.to_lowercase().contains("refused")),
        "{err}"
    );
    assert!(!err.contains("secretpw"), "{err}");
}

#[test]
fn a_database_of_a_newer_usher_is_a_mistake_and_a_migrated_one_is_ok() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("vault.key"), KEY).expect("key");
    let pb = repo().join("playbooks/classic.yaml");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        format!(
            "database: sqlite://usher.db\nvault:\n  key_file: vault.key\nintegrations:\n{}",
            integration("acme", &pb.display().to_string(), "http://127.0.0.1:3000")
        ),
    )
    .expect("write");
    // `jobs list` opens (and migrates) the database.
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["jobs", "list", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let (code, out, err) = check(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reachable and migrated"), "{out}");
    // The service account has no vault entry yet: serve starts, but say it.
    assert!(
        err.contains("warning: no vault entry `s` for integration `acme`"),
        "{err}"
    );
    let db = dir.path().join("usher.db");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open");
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'future', 1, x'00', 0)")
            .execute(&mut c)
            .await
            .expect("insert");
    });
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("newer version"), "{err}");
}
