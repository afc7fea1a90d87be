//! Never twice, never locked out (issue 9), end to end: the real server with its engine,
//! real Chromium and a fixture app, on SQLite and PostgreSQL.
//!
//! - a precondition that cannot answer (the app's search fails after the create went
//!   through) never runs a second create;
//! - a refused sign-in pauses the integration at once, with the app's own message, and a
//!   corrected vault entry resumes it; without `refused:` in the playbook, sign-ins are
//!   budgeted to two per integration per 15 minutes;
//! - `pending` shows right after a PATCH.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Db, TestDb, TestServer, integration};
use usher::config::{Config, hash_token};
use usher::server::{EngineSetup, Running};
use usher::store::{JobFilter, JobRow, JobStatus, Store};
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const PROV: &str = "urn:usher:params:scim:schemas:extension:provisioning:2.0:User";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const WEBHOOK_SECRET: &str = "whsec-reliability-test-0123456789";

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Rig {
    app: RunningApp,
    running: Option<Running>,
    _db: TestDb,
    token: String,
    client: reqwest::Client,
    root: String,
    vault: Vault,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Setup {
    /// A playbook file instead of playbooks/classic.yaml.
    playbook: Option<std::path::PathBuf>,
    /// The password the vault holds (default: the app's).
    password: Option<String>,
    /// Top-level configuration lines.
    top: String,
}

async fn rig(db: Db, opts: FixtureOptions, setup: Setup) -> Rig {
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("reliability-{}", uuid::Uuid::new_v4().simple());
    let playbook = setup
        .playbook
        .clone()
        .unwrap_or_else(|| repo().join("playbooks/classic.yaml"));
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: {db}\n{top}engine:\n  workers: 2\n  lease: 20s\n  max_attempts: 12\n  backoff_base: 300ms\n  backoff_max: 2s\n  poll: 200ms\n  evidence_dir: {ev}\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: {pb}\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n",
        db = db.url,
        top = setup.top,
        ev = dir.path().join("evidence").display(),
        pb = playbook.display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    let config = Config::parse("reliability.yaml", &text).expect("config");
    let store = support::open_store(&db.url).await;
    let vault = Vault::new(store, Keyring::new(VaultKey::generate()));
    let secret = Secret::new(
        opts.admin_username.clone(),
        setup
            .password
            .clone()
            .unwrap_or_else(|| opts.admin_password.clone()),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    vault.set("acme-admin", &secret).await.expect("vault set");
    let running = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse().expect("addr"),
        Some(EngineSetup {
            config_dir: repo(),
            secrets: usher::engine::Secrets::Vault(vault.clone()),
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await
    .expect("server with engine starts");
    Rig {
        root: format!("http://{}/scim/v2/acme", running.addr),
        app,
        running: Some(running),
        _db: db,
        token,
        client: reqwest::Client::new(),
        vault,
        _dir: dir,
    }
}

impl Rig {
    fn store(&self) -> &Store {
        &self.running.as_ref().expect("running").store
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.root))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn joiner(&self, local: &str) -> String {
        let email = format!("{local}@corp.example");
        let (s, v) = self
            .call(
                Method::POST,
                "/Users",
                Some(json!({"schemas": [USER_SCHEMA], "userName": email,
                    "name": {"givenName": "Joiner", "familyName": local},
                    "emails": [{"value": email, "type": "work", "primary": true}], "active": true})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn state(&self, id: &str) -> Value {
        let (s, v) = self
            .call(Method::GET, &format!("/Users/{id}?attributes={PROV}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v[PROV].clone()
    }

    async fn jobs(&self) -> Vec<JobRow> {
        self.store()
            .list_jobs(&JobFilter {
                integration_id: Some("acme"),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("jobs")
    }

    async fn until<F: Fn(&[JobRow]) -> bool>(&self, what: &str, ok: F) -> Vec<JobRow> {
        for _ in 0..900 {
            let jobs = self.jobs().await;
            if ok(&jobs) {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{what}: {:#?}", self.jobs().await);
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("shutdown");
        }
        self.app.shutdown().await;
    }
}

fn all_succeeded(jobs: &[JobRow]) -> bool {
    !jobs.is_empty() && jobs.iter().all(|j| j.status == JobStatus::Succeeded)
}

/// The app's search answers 500 after the create went through (and the page the create
/// leads to fails once, so the first attempt fails after the account exists): the retry's
/// precondition cannot answer, and must not be read as "not there yet".
async fn a_precondition_that_cannot_answer_never_creates_twice(db: Db) {
    let opts = FixtureOptions {
        search_fails_after_create: 2,
        ..Default::default()
    };
    let rig = rig(db, opts, Setup::default()).await;
    let id = rig.joiner("once").await;
    let jobs = rig.until("the joiner's job ends", all_succeeded).await;
    assert_eq!(jobs.len(), 1);
    assert!(
        jobs[0].attempts >= 3,
        "failed once, then twice unknown: {jobs:?}"
    );
    let users = rig.app.users();
    assert_eq!(users.len(), 1, "exactly one account: {users:?}");
    assert_eq!(
        rig.app.create_submissions(),
        1,
        "the create was submitted once"
    );
    assert_eq!(
        rig.app.failed_searches(),
        2,
        "both failing searches were seen"
    );
    assert_eq!(rig.state(&id).await["state"], "provisioned");
    // The retries say why: the precondition could not be answered.
    let events = rig
        .store()
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events");
    let retries: Vec<&Value> = events
        .iter()
        .filter(|e| e.event_type == "job.retry")
        .map(|e| &e.detail)
        .collect();
    assert!(
        retries.iter().any(|d| d["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("HTTP 500"))
            && d["error"]["phase"] == "precondition"),
        "{retries:#?}"
    );
    let done = events
        .iter()
        .find(|e| e.event_type == "job.succeeded")
        .expect("succeeded");
    let create = done.detail["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["action"] == "create_user"))
        .expect("create_user");
    assert_eq!(create["status"], "already_done", "{create}");
    rig.stop().await;
}

/// The session check meets an app error while the admin's session is alive: the login
/// page then redirects into the app and the login steps do not match. That is no
/// refusal: the session is checked again and the job goes on, without a pause and
/// without a new sign-in.
async fn a_failed_session_check_with_a_live_session_is_no_refusal(db: Db) {
    let rig = rig(db, FixtureOptions::default(), Setup::default()).await;
    rig.joiner("first").await;
    rig.until("the first joiner's job ends", all_succeeded)
        .await;
    let logins = rig.app.successful_logins();
    // The session check is tried twice before a login: both meet the error.
    rig.app.fail_next_gets("/admin/users", 2);
    let id = rig.joiner("second").await;
    let jobs = rig
        .until("the second joiner's job ends or waits", |j| {
            j.len() == 2 && (all_succeeded(j) || j.iter().any(|j| j.status == JobStatus::Paused))
        })
        .await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{jobs:#?}"
    );
    assert_eq!(rig.state(&id).await["state"], "provisioned");
    assert_eq!(rig.app.failed_logins(), 0);
    assert_eq!(
        rig.app.successful_logins(),
        logins,
        "no new sign-in was needed"
    );
    let events = rig
        .store()
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events");
    assert!(
        !events.iter().any(|e| e.event_type == "integration.paused"),
        "not paused: {events:?}"
    );
    rig.stop().await;
}

/// The app hangs on its sign-in page: the login's `goto` times out. That is the app's
/// failure, not a refusal: the job is retried, the integration is not paused, and once
/// the app answers again the job goes through.
async fn a_hanging_login_page_is_no_refusal(db: Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbook = dir.path().join("classic.yaml");
    let text = std::fs::read_to_string(repo().join("playbooks/classic.yaml"))
        .expect("classic playbook")
        .replace("timeout: 10s", "timeout: 2s");
    std::fs::write(&playbook, text).expect("write playbook");
    let rig = rig(
        db,
        FixtureOptions::default(),
        Setup {
            playbook: Some(playbook),
            ..Default::default()
        },
    )
    .await;
    rig.app.set_slow(1.0, 4000);
    let id = rig.joiner("hanging").await;
    let jobs = rig
        .until("the job is retried or waits", |j| {
            j.len() == 1 && (j[0].attempts >= 2 || j[0].status == JobStatus::Paused)
        })
        .await;
    assert_ne!(jobs[0].status, JobStatus::Paused, "{jobs:#?}");
    rig.app.set_slow(0.0, 0);
    let jobs = rig
        .until("the job ends or waits", |j| {
            all_succeeded(j) || j.iter().any(|j| j.status == JobStatus::Paused)
        })
        .await;
    assert!(all_succeeded(&jobs), "{jobs:#?}");
    assert_eq!(rig.state(&id).await["state"], "provisioned");
    assert_eq!(rig.app.failed_logins(), 0);
    let events = rig
        .store()
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events");
    assert!(
        !events.iter().any(|e| e.event_type == "integration.paused"),
        "not paused"
    );
    rig.stop().await;
}

async fn a_refused_sign_in_pauses_and_a_corrected_vault_entry_resumes(db: Db) {
    let (hook, got) = receiver().await;
    // SAFETY: every test that sets it sets the same value, before reading configuration.
    unsafe { std::env::set_var("USHER_TEST_RELIABILITY_WEBHOOK", WEBHOOK_SECRET) };
    let opts = FixtureOptions {
        lock_after: 3,
        ..Default::default()
    };
    let rig = rig(
        db,
        opts.clone(),
        Setup {
            password: Some("an old password, wrong now".into()),
            top: format!(
                "webhooks:\n  - url: {hook}\n    secret: ${{USHER_TEST_RELIABILITY_WEBHOOK}}\n    events: [integration.paused, integration.resumed, job.failed]\n"
            ),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(rig.joiner(&format!("paused-{n}")).await);
    }
    let jobs = rig
        .until("the jobs wait as paused", |j| {
            j.len() == 3 && j.iter().all(|j| j.status == JobStatus::Paused)
        })
        .await;
    // One sign-in, refused: no second try from any worker, the account is not locked.
    assert_eq!(rig.app.failed_logins(), 1, "sign-ins sent");
    assert!(!rig.app.is_locked());
    let st = rig
        .store()
        .integration_state("acme")
        .await
        .expect("state")
        .expect("row");
    let reason = st.paused_reason.clone().unwrap_or_default();
    assert!(reason.contains("refused"), "{reason}");
    assert!(
        reason.contains("Invalid email or password"),
        "the app's own words: {reason}"
    );
    assert!(
        !reason.contains("an old password"),
        "no secret in the reason"
    );
    for j in &jobs {
        assert_eq!(j.status, JobStatus::Paused);
    }
    for id in &ids {
        let s = rig.state(id).await;
        assert_eq!(s["state"], "pending", "{s}");
        assert!(
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Invalid email or password")),
            "{s}"
        );
    }
    // Nothing more happens while paused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.app.failed_logins(), 1);

    // The operator corrects the vault entry: the integration resumes by itself.
    let good = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    rig.vault.set("acme-admin", &good).await.expect("vault set");
    rig.until("the jobs ran after the resume", |j| {
        j.len() == 3 && all_succeeded(j)
    })
    .await;
    assert_eq!(rig.app.users().len(), 3);
    assert_eq!(rig.app.failed_logins(), 1);
    assert!(
        !rig.store()
            .integration_state("acme")
            .await
            .expect("state")
            .expect("row")
            .is_paused()
    );
    let events = rig
        .store()
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(kinds.contains(&"integration.paused"), "{kinds:?}");
    assert!(kinds.contains(&"integration.resumed"), "{kinds:?}");
    assert!(
        !kinds.contains(&"job.failed"),
        "paused jobs are not failed: {kinds:?}"
    );
    // The webhooks heard both.
    for _ in 0..100 {
        let n = got.lock().map(|g| g.len()).unwrap_or(0);
        if n >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Vec<String> = got
        .lock()
        .map(|g| g.iter().map(|(e, _, _)| e.clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        seen,
        ["integration.paused", "integration.resumed"],
        "{seen:?}"
    );
    rig.stop().await;
}

/// Without `refused:`, Usher cannot tell a refused sign-in from a broken page: every
/// sign-in counts against a budget of two per integration per 15 minutes, however many
/// jobs and workers want one.
async fn without_refused_sign_ins_are_budgeted(db: Db) {
    let classic = std::fs::read_to_string(repo().join("playbooks/classic.yaml")).expect("read");
    let start = classic
        .find("  refused:")
        .expect("classic declares refused:");
    let end = start
        + classic[start..]
            .find("\n  steps:")
            .expect("steps after refused");
    let bare = format!("{}{}", &classic[..start], &classic[end + 1..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-refused.yaml");
    std::fs::write(&path, bare).expect("write");
    let opts = FixtureOptions {
        lock_after: 3,
        ..Default::default()
    };
    let rig = rig(
        db,
        opts,
        Setup {
            playbook: Some(path),
            // The app answers 500 on the sign-in page: an app error, not a refusal, so
            // the jobs retry; only the budget stops the sign-ins.
            ..Default::default()
        },
    )
    .await;
    rig.app.set_login_fails(true);
    for n in 0..3 {
        rig.joiner(&format!("budget-{n}")).await;
    }
    let jobs = rig
        .until("the jobs wait for the budget", |j| {
            j.len() == 3
                && j.iter().all(|j| {
                    j.status == JobStatus::Pending
                        && j.last_error
                            .as_deref()
                            .is_some_and(|e| e.contains("2 sign-in attempts per 15 minutes"))
                })
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.store()
            .sign_in_attempts("acme")
            .await
            .expect("attempts"),
        2,
        "{jobs:#?}"
    );
    assert!(
        rig.app.login_page_hits() <= 2,
        "{}",
        rig.app.login_page_hits()
    );
    rig.stop().await;
}

/// Every write that queues a job shows `pending` at once, in the same transaction.
async fn pending_shows_right_after_a_patch(db: Db) {
    let s = TestServer::start(db, vec![integration("a")]).await;
    let r = s
        .req(Method::POST, "a", "/Users")
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": [USER_SCHEMA], "userName": "pat@x.example", "active": true})
                .to_string(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // As if the engine had provisioned the user.
    s.store()
        .set_provisioning_state("a", &id, "provisioned", None)
        .await
        .expect("provisioned");
    let get = |s: &TestServer| {
        s.req(Method::GET, "a", &format!("/Users/{id}?attributes={PROV}"))
            .send()
    };
    let before: Value = get(&s).await.expect("get").json().await.expect("json");
    assert_eq!(before[PROV]["state"], "provisioned");
    let synced = before[PROV]["lastSyncedAt"].clone();
    let r = s
        .req(Method::PATCH, "a", &format!("/Users/{id}"))
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]}).to_string())
        .send()
        .await
        .expect("patch");
    assert!(r.status().is_success(), "{}", r.status());
    let after: Value = get(&s).await.expect("get").json().await.expect("json");
    assert_eq!(after[PROV]["state"], "pending", "{after}");
    assert_eq!(after[PROV]["lastSyncedAt"], synced, "not synced since");
    // A replace too.
    s.store()
        .set_provisioning_state("a", &id, "provisioned", None)
        .await
        .expect("provisioned");
    let r = s
        .req(Method::PUT, "a", &format!("/Users/{id}"))
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": [USER_SCHEMA], "userName": "pat@x.example", "active": true, "title": "Boss"}).to_string())
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let after: Value = get(&s).await.expect("get").json().await.expect("json");
    assert_eq!(after[PROV]["state"], "pending", "{after}");
    s.stop().await;
}

/// A webhook receiver on a loopback port that keeps what it gets.
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<(String, String, String)>>>) {
    let got: Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                if let Ok(mut g) = keep.lock() {
                    g.push((h("usher-event"), h("usher-signature"), body));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), got)
}

on_both_databases!(
    a_precondition_that_cannot_answer_never_creates_twice,
    a_refused_sign_in_pauses_and_a_corrected_vault_entry_resumes,
    a_failed_session_check_with_a_live_session_is_no_refusal,
    a_hanging_login_page_is_no_refusal,
    without_refused_sign_ins_are_budgeted,
    pending_shows_right_after_a_patch,
);
