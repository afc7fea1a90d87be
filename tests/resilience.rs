//! `usher serve` as operators run it (a separate process, secrets in the encrypted
//! vault), against a fixture app in this process:
//!
//! - crash: kill -9 while 50 joiners run, start again: every user is in the app once;
//!   then neither the password nor the TOTP seed is in the logs, the database outside
//!   the vault table, or the evidence;
//! - scale-out: two processes on one PostgreSQL database take 100 jobs between them,
//!   and each job runs exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Db, TestDb, open_store};
use usher::config::hash_token;
use usher::store::{JobFilter, JobStatus, Store};
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

struct Serve {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Every process below `pid`, deepest first (Chromium and its helpers), whichever of
/// its threads forked them.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    for t in tasks {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/children", t.to_string_lossy()))
                .unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            out.extend(descendants(c));
            out.push(c);
        }
    }
    out
}

/// Processes (not zombies) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X");
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

async fn serve(config: &Path, key: &VaultKey, log: &Path) -> Serve {
    serve_env(config, key, log, &[]).await
}

async fn serve_env(config: &Path, key: &VaultKey, log: &Path, env: &[(&str, &Path)]) -> Serve {
    let text = std::fs::read_to_string(config).expect("config");
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen: "))
        .expect("listen")
        .to_string();
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--config"])
        .arg(config)
        .env("USHER_VAULT_KEY", key.to_base64().as_str())
        .env("USHER_LOG", "debug,sqlx=warn,hyper=info,reqwest=info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("spawn usher serve");
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Serve { child, base };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "usher serve did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

impl Serve {
    /// SIGKILL to `usher serve` alone, as an OOM killer or an operator would send it.
    fn kill9_alone(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill9(&mut self) {
        let below = descendants(self.child.id());
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        for p in below {
            kill9(p);
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A vault key and the fixture admin's secret stored under it, as an operator would
/// with `usher vault set`.
async fn seed_vault(url: &str, opts: &FixtureOptions) -> (VaultKey, Store) {
    let key = VaultKey::generate();
    let store = open_store(url).await;
    let copy = VaultKey::from_base64(key.to_base64().as_str(), "test").expect("key");
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    Vault::new(store.clone(), Keyring::new(copy))
        .set("acme-admin", &secret)
        .await
        .expect("vault set");
    (key, store)
}

fn secret_options() -> FixtureOptions {
    // A known secret, different for every run.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let b32: String = tag
        .bytes()
        .map(|b| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(b % 32) as usize] as char)
        .collect();
    FixtureOptions {
        admin_password: format!("Pw-{}-Zq9!", &tag[..20]),
        totp_seed: b32,
        page_size: 50,
        ..Default::default()
    }
}

fn config(db: &str, port: u16, base: &str, token: &str, workers: usize, evidence: &Path) -> String {
    format!(
        "listen: 127.0.0.1:{port}\ndatabase: {db}\nengine:\n  workers: {workers}\n  lease: 6s\n  poll: 200ms\n  backoff_base: 500ms\n  backoff_max: 4s\n  max_attempts: 10\n  evidence_dir: {ev}\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: {pb}\n    base_url: {base}\n    service_account: acme-admin\n    concurrency: 4\n    scim_token_sha256: {hash}\n",
        ev = evidence.display(),
        pb = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("playbooks/classic.yaml")
            .display(),
        hash = hex::encode(hash_token(token)),
    )
}

async fn post_users(
    base: &str,
    token: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in range {
        let email = format!("{prefix}-{n}@corp.example");
        let r = client
            .post(format!("{base}/scim/v2/acme/Users"))
            .bearer_auth(token)
            .header("content-type", "application/scim+json")
            .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email,
                "name": {"givenName": "Joiner", "familyName": format!("N{n}")},
                "emails": [{"value": email, "type": "work", "primary": true}], "active": true}).to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 201);
        ids.push(
            r.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    ids
}

/// Waits until every job of the integration has ended.
async fn all_jobs_end(store: &Store, minutes: u64) -> Vec<usher::store::JobRow> {
    for _ in 0..minutes * 300 {
        let jobs = store
            .list_jobs(&JobFilter {
                integration_id: Some("acme"),
                limit: 100_000,
                ..Default::default()
            })
            .await
            .expect("jobs");
        if !jobs.is_empty() && jobs.iter().all(|j| j.is_terminal()) {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("jobs did not end");
}

fn assert_each_once(app: &RunningApp, prefix: &str, n: usize) {
    let users = app.users();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for u in &users {
        *count.entry(u.email.clone()).or_default() += 1;
    }
    for i in 0..n {
        let email = format!("{prefix}-{i}@corp.example");
        assert_eq!(
            count.get(&email).copied(),
            Some(1),
            "{email} exactly once; app has {}",
            users.len()
        );
    }
    assert_eq!(users.len(), n, "nothing else in the app");
}

/// Everything in the database except the vault's own table, as text.
async fn dump_outside_vault(url: &str) -> String {
    let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .expect("tables");
    let mut out = String::new();
    for t in tables.iter().filter(|t| t.as_str() != "vault_entries") {
        let q = format!("SELECT * FROM \"{t}\"");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(&pool)
            .await
            .expect("rows");
        use sqlx::{Column, Row, ValueRef};
        for row in rows {
            for (i, c) in row.columns().iter().enumerate() {
                if let Ok(v) = row.try_get_raw(i)
                    && !v.is_null()
                    && let Ok(s) = row.try_get::<String, _>(i)
                {
                    out.push_str(c.name());
                    out.push('=');
                    out.push_str(&s);
                    out.push('\n');
                }
            }
        }
    }
    pool.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_50_joiners_loses_and_duplicates_nothing_and_leaks_no_secret() {
    let opts = secret_options();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("app");
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, store) = seed_vault(&db.url, &opts).await;
    let token = format!("crash-{}", uuid::Uuid::new_v4().simple());
    let evidence = dir.path().join("evidence");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        config(&db.url, free_port(), app.base_url(), &token, 4, &evidence),
    )
    .expect("config");
    let log = dir.path().join("serve.log");

    let mut first = serve(&cfg, &key, &log).await;
    post_users(&first.base, &token, "crash", 0..50).await;
    // Kill it in the middle of the run.
    for _ in 0..1500 {
        if app.users().len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_kill = app.users().len();
    assert!(at_kill < 50, "the kill came mid-run ({at_kill} done)");
    let running_at_kill = store
        .list_jobs(&JobFilter {
            integration_id: Some("acme"),
            status: Some(JobStatus::Running),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("jobs")
        .len();
    first.kill9();

    let mut second = serve(&cfg, &key, &log).await;
    let jobs = all_jobs_end(&store, 10).await;
    assert_each_once(&app, "crash", 50);
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{:?}",
        jobs.iter()
            .filter(|j| j.status != JobStatus::Succeeded)
            .collect::<Vec<_>>()
    );
    if running_at_kill > 0 {
        assert!(
            jobs.iter().any(|j| j.attempts >= 2),
            "jobs held by the killed process were taken over"
        );
    }
    second.stop();
    store
        .verify_audit_chain()
        .await
        .expect("audit chain intact");

    // No secret anywhere but the vault's table.
    let password = opts.admin_password.as_str();
    let seed = opts.totp_seed.as_str();
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(logs.contains("job succeeded"), "logs were captured");
    let dump = dump_outside_vault(&db.url).await;
    assert!(
        dump.contains("job.succeeded"),
        "the dump holds the audit trail"
    );
    let mut evidence_bytes = Vec::new();
    let mut shots = 0;
    for e in std::fs::read_dir(&evidence)
        .expect("evidence dir")
        .flatten()
    {
        shots += 1;
        evidence_bytes.extend(e.file_name().to_string_lossy().as_bytes());
        evidence_bytes.extend(std::fs::read(e.path()).unwrap_or_default());
    }
    assert!(shots > 0, "evidence was kept");
    for (what, text) in [("logs", logs.as_str()), ("database", dump.as_str())] {
        assert!(!text.contains(password), "password in the {what}");
        assert!(!text.contains(seed), "TOTP seed in the {what}");
        assert!(
            !text.contains(&seed.to_lowercase()),
            "TOTP seed in the {what}"
        );
    }
    let ev = String::from_utf8_lossy(&evidence_bytes);
    assert!(
        !ev.contains(password) && !ev.contains(seed),
        "secret in the evidence"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_postgresql_run_each_of_100_jobs_once() {
    let opts = secret_options();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("app");
    let db = TestDb::new(Db::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, store) = seed_vault(&db.url, &opts).await;
    let token = format!("scale-{}", uuid::Uuid::new_v4().simple());
    let evidence = dir.path().join("evidence");
    let (c1, c2) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(
        &c1,
        config(&db.url, free_port(), app.base_url(), &token, 2, &evidence),
    )
    .expect("config");
    std::fs::write(
        &c2,
        config(&db.url, free_port(), app.base_url(), &token, 2, &evidence),
    )
    .expect("config");
    let mut a = serve(&c1, &key, &dir.path().join("a.log")).await;
    let mut b = serve(&c2, &key, &dir.path().join("b.log")).await;
    // The IdP's writes land on both processes.
    let (left, right) = tokio::join!(
        post_users(&a.base, &token, "scale", 0..50),
        post_users(&b.base, &token, "scale", 50..100)
    );
    let ids: BTreeSet<String> = left.into_iter().chain(right).collect();
    assert_eq!(ids.len(), 100);
    let jobs = all_jobs_end(&store, 15).await;
    assert_eq!(jobs.len(), 100);
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:?}"
    );
    assert_each_once(&app, "scale", 100);
    // Exactly one successful run per job, one confirmed create per user, and both
    // processes took a share.
    let events = store
        .audit_events(Some("acme"), 100_000)
        .await
        .expect("events");
    let mut runs: BTreeMap<i64, usize> = BTreeMap::new();
    let mut creates: BTreeMap<String, usize> = BTreeMap::new();
    let mut processes: BTreeSet<String> = BTreeSet::new();
    for e in events.iter().filter(|e| e.event_type == "job.succeeded") {
        *runs
            .entry(e.detail["job"].as_i64().expect("job id"))
            .or_default() += 1;
        if let Some(w) = e.detail["worker"].as_str() {
            processes.insert(
                w.rsplit_once('/')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default(),
            );
        }
        for a in e.detail["actions"].as_array().cloned().unwrap_or_default() {
            if a["action"] == "create_user" && a["status"] == "done" {
                *creates
                    .entry(e.target.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(runs.len(), 100);
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    assert_eq!(creates.len(), 100);
    assert!(creates.values().all(|&n| n == 1), "{creates:?}");
    assert_eq!(processes.len(), 2, "both processes ran jobs: {processes:?}");
    a.stop();
    b.stop();
    store.verify_audit_chain().await.expect("chain");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_dies_with_a_killed_usher_and_the_next_start_removes_its_profile() {
    let opts = secret_options();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("app");
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Usher's own temporary folder, so that its profile folders are the only ones here.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let (key, store) = seed_vault(&db.url, &opts).await;
    let token = format!("orphan-{}", uuid::Uuid::new_v4().simple());
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        config(
            &db.url,
            free_port(),
            app.base_url(),
            &token,
            2,
            &dir.path().join("ev"),
        ),
    )
    .expect("config");
    let log = dir.path().join("serve.log");
    let env = [("TMPDIR", tmp.as_path())];
    let profiles = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let needle = tmp.display().to_string();

    let mut first = serve_env(&cfg, &key, &log, &env).await;
    post_users(&first.base, &token, "orphan", 0..3).await;
    // Chromium runs (and works) for the first process.
    for _ in 0..600 {
        if !app.users().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chromium = processes_mentioning(&needle);
    assert!(
        !chromium.is_empty(),
        "chromium runs with a profile in {needle}"
    );
    let left = profiles();
    assert_eq!(left.len(), 1, "one profile folder: {left:?}");

    first.kill9_alone();
    // The kernel kills Chromium with its parent; its helpers follow.
    let mut survivors = processes_mentioning(&needle);
    for _ in 0..100 {
        if survivors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        survivors = processes_mentioning(&needle);
    }
    for p in &survivors {
        kill9(*p);
    }
    assert!(
        survivors.is_empty(),
        "chromium processes outlived the killed usher: {survivors:?}"
    );
    assert!(
        left[0].exists(),
        "a killed usher cannot remove its profile folder"
    );

    // The next start removes it (before any job needs a browser).
    let mut second = serve_env(&cfg, &key, &log, &env).await;
    for _ in 0..100 {
        if !left[0].exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !left[0].exists(),
        "stale profile folder {} removed",
        left[0].display()
    );
    all_jobs_end(&store, 5).await;
    assert_each_once(&app, "orphan", 3);
    second.stop();
    // A stopped usher closes its browser and removes its own folder.
    assert!(profiles().is_empty(), "{:?}", profiles());
    assert!(processes_mentioning(&needle).is_empty());
    app.shutdown().await;
}

/// kill -9 of a node mid-run, then a restart: the jobs it held are taken over as soon
/// as its heartbeat is stale (a few seconds), not when their 60 s leases run out, and
/// each take-over is logged and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_takes_over_its_predecessors_jobs_within_10_s() {
    let opts = secret_options();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("app");
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, store) = seed_vault(&db.url, &opts).await;
    let token = format!("takeover-{}", uuid::Uuid::new_v4().simple());
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        config(
            &db.url,
            free_port(),
            app.base_url(),
            &token,
            3,
            &dir.path().join("ev"),
        )
        .replace("lease: 6s", "lease: 60s"),
    )
    .expect("config");
    let log = dir.path().join("serve.log");
    let mut first = serve(&cfg, &key, &log).await;
    post_users(&first.base, &token, "takeover", 0..20).await;
    let running = |jobs: &[usher::store::JobRow]| -> Vec<(i64, String)> {
        jobs.iter()
            .filter(|j| j.status == JobStatus::Running)
            .map(|j| (j.id, j.lease_owner.clone().unwrap_or_default()))
            .collect()
    };
    let mut held = Vec::new();
    for _ in 0..1500 {
        let jobs = store
            .list_jobs(&JobFilter {
                integration_id: Some("acme"),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("jobs");
        held = running(&jobs);
        if held.len() >= 2 && !app.users().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!held.is_empty(), "jobs were running at the kill");
    first.kill9();
    let mut second = serve(&cfg, &key, &log).await;
    let restarted = std::time::Instant::now();
    let mut waiting: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
    while !waiting.is_empty() && restarted.elapsed() < Duration::from_secs(10) {
        let mut still = Vec::new();
        for id in waiting {
            let j = store.job(id).await.expect("job").expect("row");
            let old = held
                .iter()
                .find(|(h, _)| *h == id)
                .map(|(_, o)| o.as_str())
                .unwrap_or("");
            if j.status == JobStatus::Running && j.lease_owner.as_deref() == Some(old) {
                still.push(id);
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiting.is_empty(),
        "jobs {waiting:?} still held by the killed node 10 s after the restart"
    );
    let jobs = all_jobs_end(&store, 10).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:?}"
    );
    assert_each_once(&app, "takeover", 20);
    second.stop();
    let events = store
        .audit_events(Some("acme"), 10_000)
        .await
        .expect("events");
    for (id, old) in &held {
        let e = events
            .iter()
            .find(|e| e.event_type == "job.taken_over" && e.detail["job"] == json!(id))
            .unwrap_or_else(|| panic!("no job.taken_over event for job {id}"));
        assert_eq!(e.detail["from"], json!(old), "{}", e.detail);
    }
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(logs.contains("taking over job"), "take-over logged");
    store.verify_audit_chain().await.expect("chain");
    app.shutdown().await;
}

/// Two processes on one database never sign in with the same TOTP code window: the
/// app refuses a replayed code (and counts it towards locking the account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_use_one_totp_window_twice() {
    let opts = secret_options();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("app");
    let db = TestDb::new(Db::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, store) = seed_vault(&db.url, &opts).await;
    let token = format!("totp-{}", uuid::Uuid::new_v4().simple());
    let evidence = dir.path().join("evidence");
    let (c1, c2) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    for c in [&c1, &c2] {
        std::fs::write(
            c,
            config(&db.url, free_port(), app.base_url(), &token, 1, &evidence),
        )
        .expect("config");
    }
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (mut a, mut b) = tokio::join!(serve(&c1, &key, &la), serve(&c2, &key, &lb));
    // Both processes get work at once, so both sign in at once.
    tokio::join!(
        post_users(&a.base, &token, "totp", 0..4),
        post_users(&b.base, &token, "totp", 4..8)
    );
    let jobs = all_jobs_end(&store, 5).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:?}"
    );
    assert_each_once(&app, "totp", 8);
    a.stop();
    b.stop();
    let processes: BTreeSet<String> = store
        .audit_events(Some("acme"), 10_000)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.event_type == "job.succeeded")
        .filter_map(|e| e.detail["worker"].as_str())
        .map(|w| {
            w.rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(processes.len(), 2, "both processes signed in and ran jobs");
    assert_eq!(app.failed_logins(), 0, "no code was replayed");
    assert_eq!(app.successful_logins(), 2, "one sign-in per process");
    app.shutdown().await;
}
