//! `usher run-once`: jobs queued by a gateway-only server are claimed and run by the
//! same engine code in real Chromium against a fixture app, then it exits: 0 when
//! every job succeeded (the queue is empty), 1 when one failed, 2 when it cannot start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use usher::config::{Config, hash_token};
use usher::store::{JobFilter, JobStatus};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const TOKEN: &str = "run-once-test-token-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config in `dir` for an app at `base_url`; writes the vault key and entry.
fn setup(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("usher.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\ndatabase: sqlite://usher.db\nvault:\n  key_file: vault.key\n{extra}integrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: {}\n    base_url: {base_url}\n    service_account: acme-admin\n    scim_token_sha256: {}\n",
            repo().join("playbooks/classic.yaml").display(),
            hex::encode(hash_token(TOKEN))
        ),
    )
    .expect("config");
    let usher = env!("CARGO_BIN_EXE_usher");
    let ok = Command::new(usher)
        .args(["vault", "keygen", "--out"])
        .arg(dir.join("vault.key"))
        .status()
        .expect("keygen");
    assert!(ok.success());
    let defaults = FixtureOptions::default();
    let mut set = Command::new(usher)
        .args([
            "vault",
            "set",
            "acme-admin",
            "--username",
            &defaults.admin_username,
            "--totp",
            "--config",
        ])
        .arg(&cfg)
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .stdin(Stdio::piped())
        .spawn()
        .expect("vault set");
    use std::io::Write;
    write!(
        set.stdin.take().expect("stdin"),
        "{}\n{}\n",
        defaults.admin_password,
        defaults.totp_seed
    )
    .expect("write");
    assert!(set.wait().expect("wait").success());
    cfg
}

/// Queues a joiner per name through a gateway-only server (no engine).
async fn queue_users(cfg: &Path, names: &[&str]) {
    let mut config = Config::load(cfg).expect("config");
    config.engine.workers = 0;
    let running = usher::server::start_on(&config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start");
    let client = reqwest::Client::new();
    for n in names {
        let r = client
            .post(format!("http://{}/scim/v2/acme/Users", running.addr))
            .bearer_auth(TOKEN)
            .json(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("{n}@runonce.example"),
                "name": {"givenName": n, "familyName": "Once"},
                "emails": [{"value": format!("{n}@runonce.example"), "primary": true}],
                "active": true
            }))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 201);
    }
    running.shutdown().await.expect("shutdown");
}

fn run_once(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .arg("run-once")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("USHER_LOG", "warn")
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .output()
        .expect("run-once");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn jobs(cfg: &Path) -> Vec<usher::store::JobRow> {
    let config = Config::load(cfg).expect("config");
    let store = usher::store::Store::connect(
        &config.database,
        std::sync::Arc::new(usher::clock::SystemClock),
    )
    .await
    .expect("store");
    let jobs = store
        .list_jobs(&JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("jobs");
    store.close().await;
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_empties_the_queue_and_exits_0() {
    let app = RunningApp::start_on(
        AppKind::Classic,
        FixtureOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("app");
    let dir = tempfile::tempdir().expect("dir");
    let cfg = setup(dir.path(), app.base_url(), "engine:\n  workers: 2\n");
    queue_users(&cfg, &["ann", "bob", "cyd"]).await;
    assert_eq!(
        jobs(&cfg)
            .await
            .iter()
            .filter(|j| j.status == JobStatus::Pending)
            .count(),
        3
    );

    let (code, out, err) = run_once(&cfg, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("usher run-once: 3 job(s): 3 succeeded, 0 failed"),
        "{out}"
    );
    let jobs = jobs(&cfg).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:?}"
    );
    for n in ["ann", "bob", "cyd"] {
        let email = format!("{n}@runonce.example");
        assert!(
            app.users().iter().any(|u| u.email == email),
            "{email} not in the app"
        );
    }
    // Nothing left: a second run claims nothing and exits 0.
    let (code, out, _) = run_once(&cfg, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("0 job(s)"), "{out}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_exits_1_when_a_job_fails_and_2_when_it_cannot_start() {
    // Nothing listens on the app's port; one attempt only, so the job ends `failed`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().expect("dir");
    let cfg = setup(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        "engine:\n  workers: 1\n  max_attempts: 1\n",
    );
    queue_users(&cfg, &["dan"]).await;
    let (code, out, err) = run_once(&cfg, &["--max-jobs", "5", "--timeout", "5m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 job(s): 0 succeeded, 1 failed"), "{out}");
    assert_eq!(jobs(&cfg).await[0].status, JobStatus::Failed);

    let (code, _, err) = run_once(&cfg, &["--integration", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no integration `nope`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_releases_the_running_job_at_its_timeout() {
    // Every page of the app hangs for a minute: the job is still running at the timeout.
    let app = RunningApp::start_on(
        AppKind::Classic,
        FixtureOptions {
            slow_rate: 1.0,
            slow_ms: 60_000,
            ..FixtureOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("app");
    let dir = tempfile::tempdir().expect("dir");
    let cfg = setup(dir.path(), app.base_url(), "engine:\n  workers: 1\n");
    queue_users(&cfg, &["eve"]).await;
    let (code, out, err) = run_once(&cfg, &["--timeout", "2s"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "1 job(s): 0 succeeded, 0 failed, 0 waiting for a retry, 1 released (timeout reached)"
        ),
        "{out}"
    );
    // Released for a later run, not failed and not held by a lease.
    let job = &jobs(&cfg).await[0];
    assert_eq!(job.status, JobStatus::Pending, "{job:?}");
    assert!(job.lease_owner.is_none(), "{job:?}");
    app.shutdown().await;
}
