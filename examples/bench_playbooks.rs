//! Playbook benchmark (run by `scripts/bench.sh`): wall time of `create_user` on each
//! fixture app with a warm session (median of 10), and 20 creates with 1, 2 and 4
//! browser contexts in parallel. Evidence screenshots are taken as the engine takes
//! them (the playbook's policy, into a temporary evidence folder). Prints one line per
//! figure. `BENCH_SERIAL_ONLY=1` measures the warm median alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool, not the product

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use usher::playbook::{self, ActionName, Driver, DriverConfig, RunOptions, UserContext};
use usher::vault::Secret;
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

fn user(email: &str) -> UserContext {
    usher::engine::user_context(&serde_json::json!({
        "userName": email,
        "name": { "givenName": "Bench", "familyName": "User" },
        "emails": [{ "value": email, "type": "work", "primary": true }],
        "active": true,
        "roles": [{ "value": "Engineering" }],
    }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorts `v` and returns its median (the mean of the two middle values of an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

async fn bench_app(kind: AppKind, name: &str, rel: &str) -> anyhow::Result<()> {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(kind, opts.clone()).await?;
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))?;
    let pb = Arc::new(playbook::load_str(rel, &text).map_err(|e| anyhow::anyhow!("{e}"))?);
    let evidence_dir = tempfile::tempdir()?;
    let run_opts = RunOptions {
        evidence: Some(Arc::new(usher::audit::evidence::EvidenceStore::new(
            evidence_dir.path(),
        )?)),
        ..RunOptions::default()
    };
    // One TOTP tracker for every driver: a driver must not type a code window the
    // previous one used (the app refuses a replayed code).
    let totp = usher::vault::TotpTracker::new();
    for contexts in [1usize, 2, 4] {
        let driver = Driver::new(DriverConfig {
            max_contexts: contexts,
            ..DriverConfig::default()
        })
        .with_totp(totp.clone());
        let secret = Secret::new(
            opts.admin_username.clone(),
            opts.admin_password.clone(),
            Some(&opts.totp_seed),
        )?;
        let integ = driver.target(name, name, app.base_url(), pb.clone(), Arc::new(secret))?;
        let run = |email: String| {
            let (driver, integ, run_opts) = (&driver, &integ, &run_opts);
            async move {
                driver
                    .run(integ, ActionName::CreateUser, user(&email), run_opts)
                    .await
            }
        };
        // Warm up: browser start and login.
        run(format!("warm-{contexts}@bench.test")).await?;
        if contexts == 1 {
            let mut times = Vec::new();
            // Where the time goes: the steps' own durations summed per phase, and what
            // is outside every step (browser context, cookies, bookkeeping).
            let mut phases: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
            for i in 0..10 {
                let t = Instant::now();
                let out = run(format!("serial-{i}@bench.test")).await?;
                let total = ms(t.elapsed());
                times.push(total);
                let mut in_steps = 0.0;
                let mut this: std::collections::BTreeMap<String, f64> = Default::default();
                for step in &out.steps {
                    let phase = serde_json::to_value(step.phase)?
                        .as_str()
                        .unwrap_or("?")
                        .to_owned();
                    *this.entry(phase).or_default() += step.duration_ms as f64;
                    in_steps += step.duration_ms as f64;
                }
                this.insert("outside_steps".into(), total - in_steps);
                for (phase, v) in this {
                    phases.entry(phase).or_default().push(v);
                }
            }
            let mid = median(&mut times);
            println!(
                "{name} create_user_warm median={mid:.0}ms min={:.0}ms max={:.0}ms (n=10)",
                times[0], times[9]
            );
            let split: Vec<String> = phases
                .into_iter()
                .map(|(phase, mut v)| format!("{phase}={:.0}ms", median(&mut v)))
                .collect();
            println!(
                "{name} create_user_warm split (medians) {}",
                split.join(" ")
            );
        }
        if std::env::var("BENCH_SERIAL_ONLY").is_ok_and(|v| v == "1") {
            driver.shutdown().await?;
            break;
        }
        let t = Instant::now();
        let results = futures::future::join_all(
            (0..20).map(|i| run(format!("par{contexts}-{i}@bench.test"))),
        )
        .await;
        let wall = t.elapsed();
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        anyhow::ensure!(
            failures.is_empty(),
            "{} of 20 creates failed: {}",
            failures.len(),
            failures.join(" | ")
        );
        println!(
            "{name} create_user_x20 contexts={contexts} wall={:.0}ms per_user={:.0}ms",
            ms(wall),
            ms(wall) / 20.0
        );
        driver.shutdown().await?;
    }
    app.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench_app(AppKind::Classic, "classic", "playbooks/classic.yaml").await?;
    bench_app(AppKind::Spa, "spa", "playbooks/spa.yaml").await?;
    Ok(())
}
