//! Running Usher as a service (issue 11): `/readyz` with each check failing in turn,
//! `/metrics` after a real provisioning run (parsed by a Prometheus text parser), the
//! access log and JSON logs through the binary's stderr, SIGTERM with a job running on
//! a hanging app, and SCIM over HTTPS with a certificate reloaded when it changes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Db, TestDb, TestServer, integration, open_store};
use usher::config::{Config, hash_token};
use usher::server::{EngineSetup, Running};
use usher::store::{JobFilter, JobStatus};
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn user(local: &str) -> Value {
    let email = format!("{local}@corp.example");
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email,
        "name": {"givenName": "Joiner", "familyName": "Ops"},
        "emails": [{"value": email, "type": "work", "primary": true}], "active": true})
}

/// A configuration with one integration `id` on the classic fixture app at `base`.
fn engine_config(
    db: &str,
    listen: &str,
    id: &str,
    base: &str,
    token: &str,
    evidence: &Path,
) -> String {
    format!(
        "listen: {listen}\ndatabase: {db}\nengine:\n  workers: 1\n  lease: 10s\n  poll: 200ms\n  backoff_base: 500ms\n  backoff_max: 2s\n  max_attempts: 5\n  evidence_dir: {ev}\nintegrations:\n  - id: {id}\n    name: Acme\n    app: Acme Admin\n    playbook: {pb}\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n",
        ev = evidence.display(),
        pb = repo().join("playbooks/classic.yaml").display(),
        hash = hex::encode(hash_token(token)),
    )
}

fn fixed_secret(opts: &FixtureOptions) -> usher::engine::Secrets {
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    let mut m = HashMap::new();
    m.insert("acme-admin".to_string(), Arc::new(secret));
    usher::engine::Secrets::Fixed(m)
}

/// The server with its engine, in this process, on Chromium at `chromium` (default
/// when None).
async fn start_engine(
    text: &str,
    opts: &FixtureOptions,
    chromium: Option<&Path>,
) -> Result<Running, usher::server::ServeError> {
    let config = Config::parse("ops-test.yaml", text).expect("config");
    let mut driver = usher::playbook::DriverConfig::default();
    if let Some(c) = chromium {
        driver.browser.executable = c.to_path_buf();
    }
    usher::server::start_with(
        &config,
        "127.0.0.1:0".parse().expect("addr"),
        Some(EngineSetup {
            config_dir: repo(),
            secrets: fixed_secret(opts),
            driver,
        }),
    )
    .await
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("readyz answers JSON"))
}

/// Gateway only: the database is the only check; a PostgreSQL database dropped under
/// the running server makes it 503 with `database` named, while `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_goes_away() {
    let s = TestServer::start(Db::Postgres, vec![integration("ready-pg")]).await;
    let (status, body) = readyz(s.addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["chromium"]["ok"], true, "{body}");

    // The database disappears (dropped with its connections).
    use sqlx::Connection;
    let name = s.db.url.rsplit('/').next().expect("name").to_string();
    let mut admin = sqlx::PgConnection::connect(&support::pg_admin_url())
        .await
        .expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop");
    let (status, body) = readyz(s.addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["failing"], json!(["database"]), "{body}");
    assert_eq!(body["checks"]["database"]["ok"], false);
    assert!(
        !body["checks"]["database"]["error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{body}"
    );
    let live = reqwest::get(format!("http://{}/healthz", s.addr))
        .await
        .expect("healthz");
    assert_eq!(
        live.status().as_u16(),
        200,
        "liveness does not depend on the database"
    );
    if let Some(r) = s.running {
        // The store is gone: a shutdown error is expected and beside the point.
        let _ = r.shutdown().await;
    }
}

/// With workers, Chromium must start: a missing executable and one that exits 1 each
/// make `/readyz` 503 naming `chromium`; the real one makes it 200 (and the vault
/// check passes: the service account's secret is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_chromium_cannot_start() {
    let opts = FixtureOptions::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = dir.path().join("chromium-that-fails");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n",
    )
    .expect("script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cases: [(&str, Option<PathBuf>, u16); 3] = [
        ("missing", Some(dir.path().join("no-such-chromium")), 503),
        ("exits 1", Some(failing), 503),
        ("real", None, 200),
    ];
    for (what, chromium, want) in cases {
        let db = TestDb::new(Db::Sqlite).await;
        let text = engine_config(
            &db.url,
            "127.0.0.1:0",
            "ready-chrome",
            // No job runs: the app is never reached.
            "http://127.0.0.1:9",
            "token-unused",
            dir.path(),
        );
        let running = start_engine(&text, &opts, chromium.as_deref())
            .await
            .expect("server starts");
        let (status, body) = readyz(running.addr).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(body["checks"]["database"]["ok"], true, "{what}: {body}");
        assert_eq!(body["checks"]["vault"]["ok"], true, "{what}: {body}");
        if want == 503 {
            assert_eq!(body["failing"], json!(["chromium"]), "{what}: {body}");
            // Cached: asked again at once, the same answer (no new launch needed).
            let (again, body2) = readyz(running.addr).await;
            assert_eq!(again, 503, "{what}: {body2}");
        } else {
            assert_eq!(body["checks"]["chromium"]["detail"], "launchable", "{body}");
        }
        running.shutdown().await.expect("shutdown");
    }
}

/// A provisioning run moves the counters; the text parses as Prometheus exposition
/// format, and no user name appears in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_after_a_provisioning_run() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let db = TestDb::new(Db::Sqlite).await;
    let evidence = tempfile::tempdir().expect("tempdir");
    let token = format!("metrics-{}", uuid::Uuid::new_v4().simple());
    let id = "metrics-acme";
    let text = engine_config(
        &db.url,
        "127.0.0.1:0",
        id,
        app.base_url(),
        &token,
        evidence.path(),
    );
    let running = start_engine(&text, &opts, None).await.expect("starts");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/scim/v2/{id}/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(user("grace.metrics").to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let filter = JobFilter {
        integration_id: Some(id),
        limit: 10,
        ..Default::default()
    };
    let mut done = false;
    for _ in 0..600 {
        let jobs = running.store.list_jobs(&filter).await.expect("jobs");
        if jobs.iter().all(|j| j.status == JobStatus::Succeeded) && !jobs.is_empty() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done, "the job succeeded");
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(!text.contains("grace.metrics"), "no user name in metrics");
    assert!(!text.contains(&token), "no token in metrics");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref b) => {
                    b.last().map(|b| b.count).unwrap_or_default()
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    };
    let posted = value(
        "usher_scim_requests_total",
        &[("integration", id), ("method", "POST"), ("status", "201")],
    );
    assert_eq!(posted, Some(1.0), "{text}");
    assert_eq!(
        value(
            "usher_jobs_finished_total",
            &[("integration", id), ("status", "succeeded")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            "usher_jobs",
            &[("integration", id), ("status", "succeeded")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("usher_queue_depth", &[("integration", id)]),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(
            "usher_last_success_timestamp_seconds",
            &[("integration", id)]
        )
        .is_some_and(|t| t > 1.7e9),
        "{text}"
    );
    assert!(
        value(
            "usher_job_duration_seconds_count",
            &[("integration", id), ("action", "create")]
        )
        .or_else(|| value(
            "usher_job_duration_seconds",
            &[("integration", id), ("action", "create")]
        ))
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(
            "usher_action_duration_seconds_count",
            &[("integration", id), ("action", "create_user")]
        )
        .or_else(|| value(
            "usher_action_duration_seconds",
            &[("integration", id), ("action", "create_user")]
        ))
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        value(
            "usher_scim_request_duration_seconds_count",
            &[("integration", id), ("method", "POST")]
        )
        .or_else(|| value(
            "usher_scim_request_duration_seconds",
            &[("integration", id), ("method", "POST")]
        ))
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(text.contains("usher_browser_contexts_in_use"), "{text}");
    running.shutdown().await.expect("shutdown");
    app.shutdown().await;
}

/// `usher serve` with its stderr in a file.
struct Serve {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Serve {
    fn start(config: &Path, log: &Path, env: &[(&str, String)]) -> Serve {
        let text = std::fs::read_to_string(config).expect("config");
        let listen = text
            .lines()
            .find_map(|l| l.strip_prefix("listen: "))
            .expect("listen")
            .to_string();
        let logf = std::fs::File::create(log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("USHER_LOG")
            .env_remove("USHER_LOG_FORMAT")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn usher serve");
        Serve {
            child,
            base: format!("http://{listen}"),
            log: log.to_path_buf(),
        }
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("usher serve exited ({status}): {}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        panic!("usher serve did not start: {}", self.stderr());
    }

    fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, then waits up to `deadline` for the exit; SIGKILL after it. The exit
    /// status, or None when it had to be killed.
    fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let polls = deadline.as_millis() / 50;
        for _ in 0..polls {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

/// Through the binary: one access-log line per request with the caller's request id
/// (sent back too), the path without its query; with `USHER_LOG_FORMAT=json` every
/// stderr line is JSON, the banner included; plain logs carry no colour codes when
/// stderr is a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_and_json_logs_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Db::Sqlite).await;
    let token = format!("logs-{}", uuid::Uuid::new_v4().simple());
    for json_logs in [true, false] {
        let cfg = dir.path().join("usher.yaml");
        let text = engine_config(
            &db.url,
            &format!("127.0.0.1:{}", free_port()),
            "logs",
            "http://127.0.0.1:9",
            &token,
            dir.path(),
        )
        .replace("  workers: 1\n", "  workers: 0\n");
        std::fs::write(&cfg, text).expect("config");
        let log = dir.path().join(format!("stderr-{json_logs}.log"));
        let env = if json_logs {
            vec![("USHER_LOG_FORMAT", "json".to_string())]
        } else {
            vec![]
        };
        let mut serve = Serve::start(&cfg, &log, &env);
        serve.wait_healthy().await;
        let rid = format!("req-{}", uuid::Uuid::new_v4().simple());
        let r = reqwest::Client::new()
            .get(format!(
                "{}/scim/v2/logs/Users?filter=userName%20eq%20%22secret.person%40corp.example%22",
                serve.base
            ))
            .bearer_auth(&token)
            .header("x-request-id", &rid)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(rid.as_str()),
            "the request id is sent back"
        );
        // Without an id, one is made and sent back.
        let r = reqwest::get(format!("{}/healthz", serve.base))
            .await
            .expect("healthz");
        assert!(r.headers().get("x-request-id").is_some());
        let status = serve.terminate(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{}", serve.stderr());
        let err = serve.stderr();
        assert!(!err.contains("secret.person"), "no query in the log: {err}");
        assert!(!err.contains('\u{1b}'), "no colour codes in a file: {err}");
        if json_logs {
            let mut access = None;
            for line in err.lines() {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{err}"));
                if v["fields"]["request_id"] == rid.as_str() {
                    access = Some(v);
                }
            }
            let v = access.unwrap_or_else(|| panic!("an access line for {rid}: {err}"));
            let f = &v["fields"];
            assert_eq!(f["method"], "GET", "{v}");
            assert_eq!(f["path"], "/scim/v2/logs/Users", "{v}");
            assert_eq!(f["status"], 200, "{v}");
            assert_eq!(f["integration"], "logs", "{v}");
            assert!(f["duration_ms"].is_u64(), "{v}");
            assert!(
                err.lines().any(|l| l.contains("usher serving")),
                "the banner is a JSON line: {err}"
            );
        } else {
            let line = err
                .lines()
                .find(|l| l.contains(&rid))
                .unwrap_or_else(|| panic!("an access line for {rid}: {err}"));
            for part in [
                "method=GET",
                "path=/scim/v2/logs/Users",
                "status=200",
                "integration=logs",
                "duration_ms=",
            ] {
                assert!(line.contains(part), "{part} in {line}");
            }
            assert!(err.contains("usher: serving 1 gateway(s)"), "{err}");
        }
        assert!(err.contains("SIGTERM received"), "{err}");
    }
}

/// SIGTERM while a job runs on an app that hangs: the signal is logged, the browser
/// work is abandoned, the job goes back to `pending` with its attempt given back, and
/// the process exits on its own within Docker's 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_job_on_a_hanging_app_and_exits() {
    let opts = FixtureOptions {
        slow_rate: 1.0,
        slow_ms: 120_000,
        ..Default::default()
    };
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Db::Sqlite).await;
    let token = format!("term-{}", uuid::Uuid::new_v4().simple());
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        engine_config(
            &db.url,
            &format!("127.0.0.1:{}", free_port()),
            "acme",
            app.base_url(),
            &token,
            dir.path(),
        ),
    )
    .expect("config");
    // The service account's secret in the vault, as `usher vault set` writes it.
    let key = VaultKey::generate();
    {
        let store = open_store(&db.url).await;
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
        store.close().await;
    }
    let log = dir.path().join("stderr.log");
    let mut serve = Serve::start(
        &cfg,
        &log,
        &[("USHER_VAULT_KEY", key.to_base64().as_str().to_string())],
    );
    serve.wait_healthy().await;
    let r = reqwest::Client::new()
        .post(format!("{}/scim/v2/acme/Users", serve.base))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(user("hang.term").to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let store = open_store(&db.url).await;
    let filter = JobFilter {
        integration_id: Some("acme"),
        limit: 10,
        ..Default::default()
    };
    let mut running = false;
    for _ in 0..300 {
        let jobs = store.list_jobs(&filter).await.expect("jobs");
        if jobs.iter().any(|j| j.status == JobStatus::Running) {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the job runs: {}", serve.stderr());
    // Let the browser get into the hanging page.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = serve.terminate(Duration::from_secs(10));
    let err = serve.stderr();
    assert!(
        status.is_some(),
        "usher serve did not exit within 10 s of SIGTERM: {err}"
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {err}");
    assert!(err.contains("SIGTERM received"), "{err}");
    let jobs = store.list_jobs(&filter).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        jobs[0].status,
        JobStatus::Pending,
        "released: {jobs:?}\n{err}"
    );
    assert_eq!(jobs[0].lease_owner, None);
    assert_eq!(jobs[0].attempts, 0, "the attempt is given back: {jobs:?}");
    assert_eq!(jobs[0].last_error.as_deref(), Some("released at shutdown"));
    store.close().await;
    app.shutdown().await;
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn certificate() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn https_client(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client")
}

/// `tls:` in the configuration: SCIM over HTTPS with a test certificate; a new
/// certificate written over the files is picked up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_over_https_and_certificate_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert).expect("cert");
    std::fs::write(&key_file, &key).expect("key");
    let s = TestServer::start_with(
        Db::Sqlite,
        vec![integration("tls")],
        &format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/scim/v2/tls/Users", s.addr.port());
    let r = https_client(&cert)
        .get(&url)
        .bearer_auth(s.token("tls"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["totalResults"], 0, "{v}");
    // Plain HTTP is not spoken on a TLS listener.
    assert!(
        reqwest::get(format!("http://{}/healthz", s.addr))
            .await
            .is_err()
    );

    // Renewal: new files; the server takes them without a restart.
    let (cert2, key2) = certificate();
    std::fs::write(&key_file, &key2).expect("key");
    std::fs::write(&cert_file, &cert2).expect("cert");
    let mut reloaded = false;
    for _ in 0..100 {
        if https_client(&cert2)
            .get(format!("https://127.0.0.1:{}/healthz", s.addr.port()))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reloaded, "the new certificate is served");
    s.stop().await;
}

/// POSTs a user through `client` at `url` and returns its `meta.location`.
async fn location_of(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    local: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(user(local).to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.expect("json");
    v["meta"]["location"]
        .as_str()
        .expect("location")
        .to_string()
}

/// No forwarded header is trusted for the base URL: locations come from the request's
/// Host and the listener's scheme, or from `public_url` when it is set; over TLS they
/// are `https://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_ignore_forwarded_headers() {
    let forged = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "proto=https;host=evil.example"),
    ];
    let s = TestServer::start(Db::Sqlite, vec![integration("edge")]).await;
    let loc = location_of(
        &s.client,
        &format!("{}/Users", s.root("edge")),
        s.token("edge"),
        "edge.one",
        &forged,
    )
    .await;
    assert!(
        loc.starts_with(&format!("http://{}/scim/v2/edge/Users/", s.addr)),
        "{loc}"
    );
    s.stop().await;

    let s = TestServer::start_with(
        Db::Sqlite,
        vec![integration("edge")],
        "public_url: https://usher.example.com\n",
    )
    .await;
    let loc = location_of(
        &s.client,
        &format!("{}/Users", s.root("edge")),
        s.token("edge"),
        "edge.two",
        &forged,
    )
    .await;
    assert!(
        loc.starts_with("https://usher.example.com/scim/v2/edge/Users/"),
        "{loc}"
    );
    s.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("c.pem"), &cert).expect("cert");
    std::fs::write(dir.path().join("k.pem"), &key).expect("key");
    let s = TestServer::start_with(
        Db::Sqlite,
        vec![integration("edge")],
        &format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n",
            dir.path().join("c.pem").display(),
            dir.path().join("k.pem").display()
        ),
    )
    .await;
    let loc = location_of(
        &https_client(&cert),
        &format!("https://127.0.0.1:{}/scim/v2/edge/Users", s.addr.port()),
        s.token("edge"),
        "edge.three",
        &[("x-forwarded-proto", "http")],
    )
    .await;
    assert!(
        loc.starts_with(&format!(
            "https://127.0.0.1:{}/scim/v2/edge/Users/",
            s.addr.port()
        )),
        "{loc}"
    );
    s.stop().await;
}

/// `metrics_listen:` serves `/metrics` on its own port, and then not on `listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_a_separate_listener() {
    let s = TestServer::start_with(
        Db::Sqlite,
        vec![integration("adm")],
        "metrics_listen: 127.0.0.1:0\n",
    )
    .await;
    let r = s
        .req(reqwest::Method::GET, "adm", "/Users")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let admin = s
        .running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("metrics address");
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("usher_scim_requests_total")
                && l.contains("integration=\"adm\"")
                && l.contains("method=\"GET\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    let main = reqwest::get(format!("http://{}/metrics", s.addr))
        .await
        .expect("main listener");
    assert_eq!(main.status().as_u16(), 404, "not on the SCIM listener");
    s.stop().await;
}

/// Through the binary with `tls:`: the banner says https, `usher healthcheck` reaches
/// the HTTPS listener from the configuration, SIGHUP loads a renewed certificate, and a
/// broken one on SIGHUP is refused with the previous one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_usher_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Db::Sqlite).await;
    let (cert, key) = certificate();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).expect("cert");
    std::fs::write(&key_file, &key).expect("key");
    let port = free_port();
    let cfg = dir.path().join("usher.yaml");
    let text = engine_config(
        &db.url,
        &format!("127.0.0.1:{port}"),
        "hup",
        "http://127.0.0.1:9",
        "token-unused",
        dir.path(),
    )
    .replace("  workers: 1\n", "  workers: 0\n");
    // Relative paths: beside the configuration file.
    std::fs::write(
        &cfg,
        format!("{text}tls:\n  cert_file: cert.pem\n  key_file: key.pem\n"),
    )
    .expect("config");
    let log = dir.path().join("stderr.log");
    let mut serve = Serve::start(&cfg, &log, &[]);
    let health = format!("https://127.0.0.1:{port}/healthz");
    let mut up = false;
    for _ in 0..300 {
        if https_client(&cert)
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "HTTPS answers: {}", serve.stderr());
    assert!(
        serve
            .stderr()
            .contains(&format!("on https://127.0.0.1:{port}")),
        "{}",
        serve.stderr()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["healthcheck", "--config"])
        .arg(&cfg)
        .output()
        .expect("healthcheck");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&health));

    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
    };
    let wait_log = |needle: &'static str, serve: &Serve| {
        for _ in 0..200 {
            if serve.stderr().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{needle}` in the log: {}", serve.stderr());
    };
    let (cert2, key2) = certificate();
    std::fs::write(&key_file, &key2).expect("key");
    std::fs::write(&cert_file, &cert2).expect("cert");
    hup(serve.child.id());
    wait_log("TLS certificate reloaded (SIGHUP)", &serve);
    let r = https_client(&cert2).get(&health).send().await;
    assert!(
        r.is_ok_and(|r| r.status().is_success()),
        "the new certificate"
    );

    std::fs::write(&cert_file, "not a certificate").expect("cert");
    hup(serve.child.id());
    wait_log("the previous one stays in use", &serve);
    let r = https_client(&cert2).get(&health).send().await;
    assert!(
        r.is_ok_and(|r| r.status().is_success()),
        "kept after a bad one"
    );
    assert!(
        serve.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    let status = serve.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", serve.stderr());
}

/// A refused sign-in is counted in `usher_login_failures_total`, and the password
/// that was refused appears nowhere in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_are_counted() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let db = TestDb::new(Db::Sqlite).await;
    let evidence = tempfile::tempdir().expect("tempdir");
    let token = format!("login-{}", uuid::Uuid::new_v4().simple());
    let id = "login-fail";
    let text = engine_config(
        &db.url,
        "127.0.0.1:0",
        id,
        app.base_url(),
        &token,
        evidence.path(),
    );
    let wrong = FixtureOptions {
        admin_password: "Wrong-password-4711!".into(),
        ..opts.clone()
    };
    let running = start_engine(&text, &wrong, None).await.expect("starts");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/scim/v2/{id}/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(user("refused.login").to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let mut last = String::new();
    let mut counted = false;
    for _ in 0..300 {
        last = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if last.lines().any(|l| {
            l.starts_with("usher_login_failures_total{")
                && l.contains(&format!("integration=\"{id}\""))
                && !l.ends_with(" 0")
        }) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(counted, "{last}");
    assert!(!last.contains("Wrong-password-4711!"));
    assert!(!last.contains("refused.login"));
    running.shutdown().await.expect("shutdown");
    app.shutdown().await;
}

/// A certificate that cannot be used stops the start with one plain line naming both
/// files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_certificate_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Db::Sqlite).await;
    let cfg = dir.path().join("usher.yaml");
    let text = engine_config(
        &db.url,
        &format!("127.0.0.1:{}", free_port()),
        "badtls",
        "http://127.0.0.1:9",
        "token-unused",
        dir.path(),
    )
    .replace("  workers: 1\n", "  workers: 0\n");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("cert");
    std::fs::write(
        &cfg,
        format!("{text}tls:\n  cert_file: cert.pem\n  key_file: missing-key.pem\n"),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("USHER_LOG_FORMAT")
        .env("USHER_LOG", "off")
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("usher: TLS: cannot use "), "{err}");
    assert!(
        lines[0].contains("cert.pem") && lines[0].contains("missing-key.pem"),
        "{err}"
    );
}
