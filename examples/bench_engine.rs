//! Engine benchmark (run by `scripts/bench.sh`): the real server with its engine on
//! SQLite, the classic fixture app, real Chromium.
//!
//! - latency: SCIM POST → account present in the app, with a warm session, one user at
//!   a time (median and p95 of 20);
//! - throughput: 100 joiners POSTed at once, joiners per minute with 1, 2 and 4 workers
//!   (integration `concurrency` = workers).
//!
//! Prints one line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool, not the product

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use usher::config::{Config, hash_token};
use usher::server::EngineSetup;
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

struct Bench {
    app: RunningApp,
    running: usher::server::Running,
    root: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(workers: usize) -> anyhow::Result<Bench> {
    let opts = FixtureOptions {
        page_size: 50,
        ..FixtureOptions::default()
    };
    let app = RunningApp::start(AppKind::Classic, opts.clone()).await?;
    let dir = tempfile::tempdir()?;
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\nengine:\n  workers: {workers}\n  poll: 100ms\n  backoff_base: 500ms\n  evidence_dir: {ev}\nintegrations:\n  - id: bench\n    name: Bench\n    app: Acme Admin\n    playbook: playbooks/classic.yaml\n    base_url: {base}\n    service_account: admin\n    concurrency: {workers}\n    scim_token_sha256: {hash}\n",
        db = dir.path().join("usher.db").display(),
        ev = dir.path().join("evidence").display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    let config = Config::parse("bench.yaml", &text)?;
    let secret = usher::vault::Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )?;
    let mut secrets = HashMap::new();
    secrets.insert("admin".to_string(), Arc::new(secret));
    let running = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse()?,
        Some(EngineSetup {
            config_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            secrets: usher::engine::Secrets::Fixed(secrets),
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await?;
    Ok(Bench {
        root: format!("http://{}/scim/v2/bench", running.addr),
        app,
        running,
        token,
        client: reqwest::Client::new(),
        _dir: dir,
    })
}

impl Bench {
    async fn post(&self, email: &str) -> anyhow::Result<()> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email,
            "name": {"givenName": "Bench", "familyName": "User"},
            "emails": [{"value": email, "type": "work", "primary": true}],
            "active": true
        });
        let r = self
            .client
            .post(format!("{}/Users", self.root))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "POST answered {}", r.status());
        Ok(())
    }

    async fn wait_present(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        while self.app.users().len() < n {
            anyhow::ensure!(
                Instant::now() < until,
                "only {} of {n} accounts after {limit:?}",
                self.app.users().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn stop(self) {
        let _ = self.running.shutdown().await;
        self.app.shutdown().await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // Latency with a warm session.
    let b = start(1).await?;
    b.post("warm@bench.test").await?;
    b.wait_present(1, Duration::from_secs(120)).await?;
    let mut times = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        b.post(&format!("lat-{i}@bench.test")).await?;
        b.wait_present(i + 2, Duration::from_secs(60)).await?;
        times.push(t0.elapsed());
    }
    times.sort();
    println!(
        "engine  post_to_account_present median={:.0}ms p95={:.0}ms min={:.0}ms max={:.0}ms (n=20, warm session)",
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 95).div_ceil(100) - 1]),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
    b.stop().await;

    // Throughput: 100 joiners with 1, 2, 4 workers.
    let mut line = String::from("engine  joiners_x100");
    for workers in [1usize, 2, 4] {
        let b = start(workers).await?;
        b.post("warm@bench.test").await?;
        b.wait_present(1, Duration::from_secs(120)).await?;
        let t0 = Instant::now();
        for i in 0..100 {
            b.post(&format!("j{workers}-{i}@bench.test")).await?;
        }
        b.wait_present(101, Duration::from_secs(1800)).await?;
        let wall = t0.elapsed();
        line.push_str(&format!(
            " | workers={workers} wall={:.1}s per_min={:.0}",
            wall.as_secs_f64(),
            100.0 / wall.as_secs_f64() * 60.0
        ));
        b.stop().await;
    }
    println!("{line}");
    Ok(())
}
