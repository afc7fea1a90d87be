//! Engine benchmark (`scripts/bench.sh engine`): the real server and engine on SQLite,
//! real Chromium, for each app — the classic fixture, the SPA fixture and a real
//! DokuWiki (Debian's package, as the tests run it):
//!
//! - **UI actions**: create / set_roles / deactivate / delete, each timed from the SCIM
//!   request to the end of its job, read-back included (`mode: sync`: the answer comes
//!   when the job has ended), one worker, warm session; the median of `BENCH_UI_N`
//!   (default 5). Beside it, the same UI work by a hand-written Playwright script
//!   (`bench/playwright/ui.mjs`: playwright-core driving the same Chromium, logged in
//!   once, no read-back), and the ratio Usher / Playwright.
//! - **Throughput**: `BENCH_JOINERS` (default 100) joiners POSTed at once, joiners per
//!   minute with 1 and 4 workers (integration `concurrency` = workers; the first
//!   `workers` joiners warm the session pool up and are not counted), with the peak
//!   resident memory of this process (Usher, with the fixture apps in it) and the peak
//!   summed Pss of its Chromium processes, sampled every 200 ms.
//!
//! `BENCH_APPS` (default `classic,spa,dokuwiki`) picks apps; `BENCH_JOINERS=0` skips the
//! throughput runs. Prints one line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool, not the product

#[path = "../tests/support/dokuwiki.rs"]
mod dokuwiki;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use usher::config::{Config, hash_token};
use usher::server::EngineSetup;
use usher::store::{JobFilter, JobStatus};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

/// One app under test and how to sign in to it.
struct App {
    name: &'static str,
    playbook: &'static str,
    base_url: String,
    username: String,
    password: String,
    totp: Option<String>,
    /// The playbook has deactivate_user (DokuWiki has no disabled state).
    deactivates: bool,
    /// The SCIM group that maps onto a role the create gives, and the one set_roles sets.
    roles: (&'static str, &'static str),
    _fixture: Option<RunningApp>,
    _wiki: Option<dokuwiki::DokuWiki>,
}

async fn start_app(name: &str) -> anyhow::Result<App> {
    let fixture = |kind, name, playbook| async move {
        let opts = FixtureOptions {
            page_size: 50,
            ..FixtureOptions::default()
        };
        let app = RunningApp::start(kind, opts.clone()).await?;
        anyhow::Ok(App {
            name,
            playbook,
            base_url: app.base_url().to_owned(),
            username: opts.admin_username.clone(),
            password: opts.admin_password.clone(),
            totp: Some(opts.totp_seed.clone()),
            deactivates: true,
            roles: ("Engineering", "Finance"),
            _fixture: Some(app),
            _wiki: None,
        })
    };
    match name {
        "classic" => fixture(AppKind::Classic, "classic", "playbooks/classic.yaml").await,
        "spa" => fixture(AppKind::Spa, "spa", "playbooks/spa.yaml").await,
        "dokuwiki" => {
            let wiki = dokuwiki::DokuWiki::start().await?;
            Ok(App {
                name: "dokuwiki",
                playbook: "playbooks/dokuwiki.yaml",
                base_url: wiki.base_url.clone(),
                username: wiki.admin_user.clone(),
                password: wiki.admin_password.clone(),
                totp: None,
                deactivates: false,
                roles: ("Engineering", "Finance"),
                _fixture: None,
                _wiki: Some(wiki),
            })
        }
        other => anyhow::bail!("unknown app {other:?} in BENCH_APPS (classic, spa, dokuwiki)"),
    }
}

struct Server {
    running: usher::server::Running,
    root: String,
    token: String,
    client: reqwest::Client,
}

/// The server with `workers` workers on the database in `dir` (kept across runs of one
/// app, so that TOTP windows used by a run are known to the next).
async fn start_server(app: &App, dir: &Path, workers: usize, mode: &str) -> anyhow::Result<Server> {
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\nengine:\n  workers: {workers}\n  poll: 100ms\n  backoff_base: 500ms\n  evidence_dir: {ev}\nintegrations:\n  - id: bench\n    name: Bench\n    app: {name}\n    playbook: {pb}\n    base_url: {base}\n    service_account: admin\n    concurrency: {workers}\n    mode: {mode}\n    scim_token_sha256: {hash}\n",
        db = dir.join("usher.db").display(),
        ev = dir.join("evidence").display(),
        name = app.name,
        pb = app.playbook,
        base = app.base_url,
        hash = hex::encode(hash_token(&token)),
    );
    let config = Config::parse("bench.yaml", &text)?;
    let secret = usher::vault::Secret::new(
        app.username.clone(),
        app.password.clone(),
        app.totp.as_deref(),
    )?;
    let mut secrets = HashMap::new();
    secrets.insert("admin".to_string(), Arc::new(secret));
    let running = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse()?,
        Some(EngineSetup {
            config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            secrets: usher::engine::Secrets::Fixed(secrets),
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await?;
    Ok(Server {
        root: format!("http://{}/scim/v2/bench", running.addr),
        running,
        token,
        client: reqwest::Client::new(),
    })
}

impl Server {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.root))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(120));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {text}"
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, email: &str, group: &str) -> anyhow::Result<String> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email,
            "name": {"givenName": "Bench", "familyName": "User"},
            "emails": [{"value": email, "type": "work", "primary": true}],
            "roles": [{"value": group}],
            "active": true
        });
        let created = self
            .send(reqwest::Method::POST, "/Users", Some(body))
            .await?;
        Ok(created["id"].as_str().unwrap_or_default().to_owned())
    }

    async fn patch(&self, id: &str, op: Value) -> anyhow::Result<()> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [op]
        });
        self.send(reqwest::Method::PATCH, &format!("/Users/{id}"), Some(body))
            .await
            .map(|_| ())
    }

    /// The jobs of the integration: (ended, failed).
    async fn jobs_ended(&self) -> anyhow::Result<(usize, usize)> {
        let jobs = self
            .running
            .store
            .list_jobs(&JobFilter {
                integration_id: Some("bench"),
                resource_id: None,
                status: None,
                limit: 100_000,
            })
            .await?;
        let ended = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.status,
                    JobStatus::Succeeded | JobStatus::Failed | JobStatus::Superseded
                )
            })
            .count();
        let failed = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Failed)
            .count();
        Ok((ended, failed))
    }

    async fn wait_jobs(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        loop {
            let (ended, failed) = self.jobs_ended().await?;
            anyhow::ensure!(failed == 0, "{failed} jobs failed");
            if ended >= n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < until,
                "only {ended} of {n} jobs ended after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        let _ = self.running.shutdown().await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Sleeps into the next 30-s TOTP window, so that no code used before (by Playwright,
/// or by a run on another database) is used again: the app refuses a replayed code.
async fn next_totp_window(app: &App) {
    if app.totp.is_none() {
        return;
    }
    use usher::clock::Clock as _;
    let now = u64::try_from(usher::clock::SystemClock.now().timestamp()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(31 - now % 30)).await;
}

/// Usher's UI actions: SCIM request → job ended (read-back done), medians per action.
async fn ui_actions(app: &App, dir: &Path, n: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let server = start_server(app, dir, 1, "sync").await?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    // Warm: the session is logged in before the first timed request.
    server
        .create(&format!("warm-{}@bench.example", &tag[..8]), app.roles.0)
        .await?;
    let mut times: Vec<(&'static str, Vec<f64>)> = vec![
        ("create", Vec::new()),
        ("set_roles", Vec::new()),
        ("deactivate", Vec::new()),
        ("delete", Vec::new()),
    ];
    for i in 0..n {
        let email = format!("ui-{}-{i}@bench.example", &tag[..8]);
        let t = Instant::now();
        let id = server.create(&email, app.roles.0).await?;
        times[0].1.push(ms(t.elapsed()));
        let t = Instant::now();
        server
            .patch(
                &id,
                json!({"op": "replace", "path": "roles", "value": [{"value": app.roles.1}]}),
            )
            .await?;
        times[1].1.push(ms(t.elapsed()));
        if app.deactivates {
            let t = Instant::now();
            server
                .patch(
                    &id,
                    json!({"op": "replace", "path": "active", "value": false}),
                )
                .await?;
            times[2].1.push(ms(t.elapsed()));
        }
        let t = Instant::now();
        server
            .send(reqwest::Method::DELETE, &format!("/Users/{id}"), None)
            .await?;
        times[3].1.push(ms(t.elapsed()));
    }
    server.stop().await;
    Ok(times
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(a, v)| (a, median(v)))
        .collect())
}

/// The hand-written Playwright script's medians per action, when it can run.
fn playwright(app: &App, n: usize) -> Result<HashMap<String, f64>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/playwright");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("not installed (scripts/bench.sh installs it with npm)".into());
    }
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dir.join("ui.mjs"))
        .args(["--app", app.name, "--base", &app.base_url])
        .args(["--user", &app.username, "--password", &app.password])
        .args(["--n", &n.to_string(), "--prefix", "pw"]);
    if let Some(seed) = &app.totp {
        cmd.args(["--totp", seed]);
    }
    let out = cmd.output().map_err(|e| format!("node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut medians = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let (Some(a), Some(m)) = (v["action"].as_str(), v["median_ms"].as_f64())
        {
            medians.insert(a.to_owned(), m);
        }
    }
    Ok(medians)
}

/// Peak memory while a closure's future runs: this process's VmRSS and the summed Pss
/// of its Chromium descendants (their pages are shared: summing RSS would overcount).
struct MemoryPeak {
    stop: Arc<AtomicBool>,
    usher_kib: Arc<AtomicU64>,
    chromium_kib: Arc<AtomicU64>,
    task: std::thread::JoinHandle<()>,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn chromium_pss_kib(root: u32) -> u64 {
    let mut parent = HashMap::new();
    let mut comm = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some(close) = stat.rfind(')')
            {
                let name = stat[stat.find('(').map_or(0, |o| o + 1)..close].to_owned();
                let ppid = stat[close + 1..]
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
                    .unwrap_or(0);
                parent.insert(pid, ppid);
                comm.insert(pid, name);
            }
        }
    }
    let descends = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == root => return true,
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|&&p| descends(p) && comm.get(&p).is_some_and(|c| c.contains("chrom")))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Pss:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

impl MemoryPeak {
    fn start() -> MemoryPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let usher_kib = Arc::new(AtomicU64::new(0));
        let chromium_kib = Arc::new(AtomicU64::new(0));
        let (s, u, c) = (stop.clone(), usher_kib.clone(), chromium_kib.clone());
        let me = std::process::id();
        let task = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                u.fetch_max(status_kib(me, "VmRSS:"), Ordering::SeqCst);
                c.fetch_max(chromium_pss_kib(me), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        MemoryPeak {
            stop,
            usher_kib,
            chromium_kib,
            task,
        }
    }

    /// (usher MiB, chromium MiB)
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.join();
        (
            self.usher_kib.load(Ordering::SeqCst) / 1024,
            self.chromium_kib.load(Ordering::SeqCst) / 1024,
        )
    }
}

/// Joiners per minute with `workers` workers, and the memory peaks.
async fn throughput(
    app: &App,
    dir: &Path,
    workers: usize,
    joiners: usize,
) -> anyhow::Result<(f64, f64, u64, u64)> {
    let server = start_server(app, dir, workers, "async").await?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (before, _) = server.jobs_ended().await?;
    // Warm-up: as many joiners as workers, so that the pool has logged in.
    for i in 0..workers {
        server
            .create(
                &format!("warm{workers}-{}-{i}@bench.example", &tag[..8]),
                app.roles.0,
            )
            .await?;
    }
    server
        .wait_jobs(before + workers, Duration::from_secs(600))
        .await?;
    let mem = MemoryPeak::start();
    let t0 = Instant::now();
    for i in 0..joiners {
        server
            .create(
                &format!("j{workers}-{}-{i}@bench.example", &tag[..8]),
                app.roles.0,
            )
            .await?;
    }
    server
        .wait_jobs(before + workers + joiners, Duration::from_secs(3600))
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    let (usher, chromium) = mem.stop();
    server.stop().await;
    Ok((wall, joiners as f64 / wall * 60.0, usher, chromium))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // `BENCH_LOG=info` shows what the engine does (to stderr).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let apps = std::env::var("BENCH_APPS").unwrap_or_else(|_| "classic,spa,dokuwiki".into());
    let n: usize = std::env::var("BENCH_UI_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let joiners: usize = std::env::var("BENCH_JOINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for name in apps.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let app = start_app(name).await?;
        let dir = tempfile::tempdir()?;
        // Playwright first, then a fresh TOTP window for Usher.
        let pw = playwright(&app, n);
        next_totp_window(&app).await;
        let usher = ui_actions(&app, dir.path(), n).await?;
        for (action, median_ms) in &usher {
            let theirs = match &pw {
                Ok(m) => match m.get(*action) {
                    Some(p) => format!("playwright={p:.0}ms ratio={:.2}", median_ms / p),
                    None => "playwright=n/a".to_owned(),
                },
                Err(e) => format!("playwright: {e}"),
            };
            println!(
                "ui {:<8} {:<10} usher={median_ms:.0}ms {theirs} (SCIM request → read-back done, median of {n})",
                app.name, action
            );
        }
        if !app.deactivates {
            println!(
                "ui {:<8} deactivate n/a (the playbook has no deactivate_user)",
                app.name
            );
        }
        if joiners == 0 {
            continue; // BENCH_JOINERS=0: the UI figures alone
        }
        let mut per_min = Vec::new();
        for workers in [1usize, 4] {
            let (wall, rate, usher_mib, chromium_mib) =
                throughput(&app, dir.path(), workers, joiners).await?;
            println!(
                "throughput {:<8} workers={workers} joiners={joiners} wall={wall:.1}s per_min={rate:.1} usher_peak_rss={usher_mib}MiB chromium_peak_pss={chromium_mib}MiB",
                app.name
            );
            per_min.push(rate);
        }
        println!(
            "throughput {:<8} speedup_4_over_1={:.2}",
            app.name,
            per_min[1] / per_min[0]
        );
    }
    Ok(())
}
