//! `usher audit verify` against tampering, on SQLite and PostgreSQL: a deleted and an
//! altered evidence file are named, and a truncated trail is found given a signed
//! checkpoint (which the chain alone cannot see). The trail and the evidence come from
//! real jobs: the server with its engine, Chromium and the classic fixture app.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Db, TestDb};
use usher::config::{Config, hash_token};
use usher::server::EngineSetup;
use usher::store::JobFilter;
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `usher audit verify` with `args`: (success, stdout, stderr).
fn verify(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["audit", "verify", "--config"])
        .arg(config)
        .args(args)
        .env_remove("USHER_AUDIT_KEY")
        .env_remove("USHER_AUDIT_KEY_FILE")
        .output()
        .expect("run usher audit verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Deletes the newest `n` audit events, as someone with the database's owner rights
/// can (the triggers refuse Usher's own connections, not the owner).
async fn truncate_trail(db: Db, url: &str, n: i64) {
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
            sqlx::query("DROP TRIGGER audit_events_no_delete")
                .execute(&pool)
                .await
                .expect("drop trigger");
            sqlx::query(
                "DELETE FROM audit_events WHERE seq > (SELECT MAX(seq) FROM audit_events) - $1",
            )
            .bind(n)
            .execute(&pool)
            .await
            .expect("delete");
            pool.close().await;
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("pg");
            sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
                .execute(&pool)
                .await
                .expect("disable trigger");
            sqlx::query(
                "DELETE FROM audit_events WHERE seq > (SELECT MAX(seq) FROM audit_events) - $1",
            )
            .bind(n)
            .execute(&pool)
            .await
            .expect("delete");
            pool.close().await;
        }
    }
}

async fn verify_names_tampered_evidence_and_a_truncated_trail(db: Db) {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let tdb = TestDb::new(db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let evidence = dir.path().join("evidence");
    let key_file = dir.path().join("audit.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["audit", "keygen", "--out"])
        .arg(&key_file)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let token = format!("audit-{}", uuid::Uuid::new_v4().simple());
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: {db}\naudit:\n  checkpoint_key_file: {key}\n  checkpoint_file: {cp}\n  checkpoint_interval: 100ms\nengine:\n  workers: 2\n  poll: 200ms\n  backoff_base: 300ms\n  evidence_dir: {ev}\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: playbooks/classic.yaml\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n",
        db = tdb.url,
        key = key_file.display(),
        cp = checkpoints.display(),
        ev = evidence.display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(&cfg, &text).expect("config");
    let config = Config::parse("audit.yaml", &text).expect("config");
    let secret = usher::vault::Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    let mut secrets = HashMap::new();
    secrets.insert("acme-admin".to_string(), Arc::new(secret));
    let running = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse().expect("addr"),
        Some(EngineSetup {
            config_dir: repo(),
            secrets: usher::engine::Secrets::Fixed(secrets),
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await
    .expect("server");
    let client = reqwest::Client::new();
    for n in 0..2 {
        let email = format!("audited-{n}@corp.example");
        let r = client
            .post(format!("http://{}/scim/v2/acme/Users", running.addr))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email,
                "name": {"givenName": "Audited", "familyName": format!("N{n}")},
                "emails": [{"value": email, "type": "work", "primary": true}]}).to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 201);
    }
    let store = running.store.clone();
    for _ in 0..900 {
        let jobs = store
            .list_jobs(&JobFilter {
                integration_id: Some("acme"),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("jobs");
        if jobs.len() == 2
            && jobs
                .iter()
                .all(|j| j.status == usher::store::JobStatus::Succeeded)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.shutdown().await.expect("shutdown");
    let store = support::open_store(&tdb.url).await;
    let head = store.audit_head().await.expect("head").expect("events");
    store.close().await;

    // Untouched: the chain, every cited file and the checkpoints hold.
    let (ok, out, err) = verify(&cfg, &["--checkpoint", &checkpoints.display().to_string()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("audit trail intact"), "{out}");
    let written = std::fs::read_to_string(&checkpoints).expect("checkpoints");
    let last: Value =
        serde_json::from_str(written.lines().last().expect("a checkpoint")).expect("json");
    assert_eq!(
        last["seq"],
        json!(head.0),
        "the last checkpoint is of the final head"
    );
    assert_eq!(last["hash"], json!(head.1));

    // One screenshot deleted, another altered: both named.
    let mut shots: Vec<std::path::PathBuf> = std::fs::read_dir(&evidence)
        .expect("evidence")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    shots.sort();
    assert!(shots.len() >= 2, "evidence was kept: {shots:?}");
    std::fs::remove_file(&shots[0]).expect("delete");
    let mut altered = std::fs::read(&shots[1]).expect("read");
    altered.extend_from_slice(b"tampered");
    std::fs::write(&shots[1], altered).expect("alter");
    let (ok, out, err) = verify(&cfg, &[]);
    assert!(!ok, "tampered evidence must fail: {out}");
    let name = |p: &Path| p.file_name().expect("name").to_string_lossy().to_string();
    assert!(
        err.contains("evidence missing") && err.contains(&name(&shots[0])),
        "{err}"
    );
    assert!(
        err.contains("evidence altered") && err.contains(&name(&shots[1])),
        "{err}"
    );
    assert!(err.contains("cited by event"), "{err}");

    // The newest events deleted: the chain alone still holds, the checkpoint does not.
    truncate_trail(db, &tdb.url, 3).await;
    let (_, out, err) = verify(&cfg, &[]);
    assert!(!err.contains("truncated"), "{out}{err}");
    assert!(
        !err.contains("hash does not match"),
        "the shorter chain is consistent: {err}"
    );
    let (ok, out, err) = verify(&cfg, &["--checkpoint", &checkpoints.display().to_string()]);
    assert!(!ok, "{out}");
    assert!(err.contains("audit trail truncated"), "{err}");
    assert!(err.contains(&format!("names event {}", head.0)), "{err}");
    // A forged checkpoint (no key) is refused, not trusted.
    let forged = dir.path().join("forged.jsonl");
    let mut f: Value = last.clone();
    f["seq"] = json!(head.0 - 3);
    std::fs::write(&forged, format!("{f}\n")).expect("forged");
    let (ok, _, err) = verify(&cfg, &["--checkpoint", &forged.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("signature does not verify"), "{err}");
    app.shutdown().await;
}

on_both_databases!(verify_names_tampered_evidence_and_a_truncated_trail);
