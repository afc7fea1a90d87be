//! The provisioning engine end to end: the real server on a loopback port with its
//! engine, real Chromium, a fixture admin app, on SQLite and PostgreSQL. The IdPs'
//! joiner → mover → leaver sequences must leave the app's ground truth exactly as the
//! IdP declared.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[macro_use]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Db, TestDb};
use usher::config::{Config, hash_token};
use usher::server::{EngineSetup, Running};
use usher::store::JobStatus;
use usher_fixture_apps::{AppKind, AppUser, FixtureOptions, RunningApp};

const PROV: &str = "urn:usher:params:scim:schemas:extension:provisioning:2.0:User";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const WEBHOOK_SECRET: &str = "whsec-engine-test-0123456789";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Rig {
    app: RunningApp,
    running: Option<Running>,
    _db: TestDb,
    token: String,
    client: reqwest::Client,
    root: String,
    evidence: tempfile::TempDir,
    base: String,
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn rig(db: Db, kind: AppKind, integration_extra: &str, opts: FixtureOptions) -> Rig {
    rig_full(db, kind, integration_extra, opts, RigExtra::default()).await
}

#[derive(Default)]
struct RigExtra {
    /// Top-level configuration lines (webhooks).
    top: String,
    max_attempts: Option<u32>,
    /// More `engine:` lines, each indented by two spaces.
    engine: String,
    /// A playbook file instead of the bundled one.
    playbook: Option<std::path::PathBuf>,
}

async fn rig_full(
    db: Db,
    kind: AppKind,
    integration_extra: &str,
    opts: FixtureOptions,
    extra: RigExtra,
) -> Rig {
    let app = RunningApp::start(kind, opts.clone())
        .await
        .expect("fixture app");
    let db = TestDb::new(db).await;
    let token = format!("engine-test-{}", uuid::Uuid::new_v4().simple());
    let evidence = tempfile::tempdir().expect("tempdir");
    let playbook = match (&extra.playbook, kind) {
        (Some(p), _) => p.display().to_string(),
        (None, AppKind::Classic) => "playbooks/classic.yaml".into(),
        (None, AppKind::Spa) => "playbooks/spa.yaml".into(),
    };
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: {db}\n{top}engine:\n  workers: 2\n  lease: 10s\n  max_attempts: {attempts}\n  backoff_base: 300ms\n  backoff_max: 3s\n  poll: 200ms\n{engine_extra}  evidence_dir: {ev}\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: {playbook}\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n{integration_extra}",
        db = db.url,
        top = extra.top,
        engine_extra = extra.engine,
        attempts = extra.max_attempts.unwrap_or(12),
        ev = evidence.path().display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    let config = Config::parse("engine-test.yaml", &text).expect("config");
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
    .expect("server with engine starts");
    let base = format!("http://{}", running.addr);
    Rig {
        root: format!("{base}/scim/v2/acme"),
        base,
        app,
        running: Some(running),
        _db: db,
        token,
        client: reqwest::Client::new(),
        evidence,
    }
}

impl Rig {
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

    async fn state(&self, id: &str) -> Value {
        let (s, v) = self
            .call(Method::GET, &format!("/Users/{id}?attributes={PROV}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v[PROV].clone()
    }

    /// Waits until the user's newest jobs have all ended and returns the state extension.
    /// Up to 7.5 minutes: under injected faults every new sign-in waits for an unused TOTP
    /// window (30 s each), and on a loaded 2-core runner a job can need several.
    async fn settled(&self, id: &str) -> Value {
        let store = &self.running.as_ref().expect("running").store;
        for _ in 0..2250 {
            let jobs = store
                .list_jobs(&usher::store::JobFilter {
                    resource_id: Some(id),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .expect("jobs");
            if jobs.iter().all(|j| j.is_terminal()) {
                return self.state(id).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "jobs of {id} did not end: {:?}",
            store
                .list_jobs(&usher::store::JobFilter {
                    resource_id: Some(id),
                    limit: 100,
                    ..Default::default()
                })
                .await
        );
    }

    async fn wait_for(&self, what: &str, mut ok: impl FnMut(&[AppUser]) -> bool) {
        for _ in 0..900 {
            if ok(&self.app.users()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{what}: app has {:?}", self.app.users());
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("shutdown");
        }
        self.app.shutdown().await;
    }
}

fn okta_user(local: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": format!("{local}@okta.example"),
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "value": format!("{local}@okta.example"), "type": "work"}],
        "displayName": format!("{given} {family}"),
        "externalId": format!("00u{local}"),
        "groups": [],
        "password": "not-stored-by-usher-1!",
        "active": true
    })
}

fn user_in_app<'a>(users: &'a [AppUser], email: &str) -> Vec<&'a AppUser> {
    users.iter().filter(|u| u.email == email).collect()
}

/// Okta: joiner (GET filter, POST), group push (Engineering → Finance through
/// membership PATCHes), profile update (PUT), leaver (PATCH active false: Okta
/// deactivates, it does not delete).
async fn okta_lifecycle(db: Db) {
    let rig = rig(db, AppKind::Classic, "", FixtureOptions::default()).await;
    let email = "okta-ann@okta.example";
    let (s, v) = rig
        .call(
            Method::GET,
            "/Users?filter=userName%20eq%20%22okta-ann%40okta.example%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!((s, v["totalResults"].as_i64()), (200, Some(0)));
    let (s, created) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("okta-ann", "Ann", "Lee")),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    let users = rig.app.users();
    let mine = user_in_app(&users, email);
    assert_eq!(mine.len(), 1, "{users:?}");
    assert_eq!(st["appAccountId"], json!(mine[0].id));
    assert_eq!(mine[0].roles, vec!["Viewer".to_string()]);

    // Group push: create Engineering and Finance, add Ann to Engineering.
    let (s, eng) = rig
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": []})),
        )
        .await;
    assert_eq!(s, 201, "{eng}");
    let (s, fin) = rig
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "Finance", "members": []})),
        )
        .await;
    assert_eq!(s, 201, "{fin}");
    let eng = eng["id"].as_str().expect("id").to_string();
    let fin = fin["id"].as_str().expect("id").to_string();
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Groups/{eng}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": id, "display": email}]}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Ann becomes an Editor", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|a| a.roles == ["Editor"])
    })
    .await;
    // Mover: Okta's documented combined PATCH moves her from Engineering to Finance.
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Groups/{eng}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "remove", "path": format!("members[value eq \"{id}\"]")}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Groups/{fin}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": id, "display": email}]}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Ann moves to Billing", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|a| a.roles == ["Billing"])
    })
    .await;
    // Profile update by PUT (Okta AIW apps).
    let mut put = okta_user("okta-ann", "Annabel", "Lee");
    put["id"] = json!(id);
    let (s, v) = rig
        .call(Method::PUT, &format!("/Users/{id}"), Some(put))
        .await;
    assert_eq!(s, 200, "{v}");
    rig.wait_for("Ann is renamed", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|a| a.given_name == "Annabel")
    })
    .await;
    // Leaver: Okta deactivates.
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "value": {"active": false}}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    let users = rig.app.users();
    let mine = user_in_app(&users, email);
    assert_eq!(mine.len(), 1, "exactly one account: {users:?}");
    let ann = mine[0];
    assert!(!ann.active, "deactivated: {ann:?}");
    assert_eq!(
        (ann.given_name.as_str(), ann.family_name.as_str()),
        ("Annabel", "Lee")
    );
    assert_eq!(ann.roles, vec!["Billing".to_string()]);
    assert_eq!(users.len(), 1, "nothing else was created: {users:?}");

    // The trail: each job's success is audited with its evidence, the chain holds.
    let store = &rig.running.as_ref().expect("running").store;
    let events = store
        .audit_events(Some("acme"), 10_000)
        .await
        .expect("events");
    let succeeded: Vec<&usher::audit::Event> = events
        .iter()
        .filter(|e| e.event_type == "job.succeeded" && e.target.as_deref() == Some(id.as_str()))
        .collect();
    assert!(succeeded.len() >= 4, "{succeeded:?}");
    let actions: Vec<String> = succeeded
        .iter()
        .flat_map(|e| e.detail["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["action"].as_str().map(str::to_owned))
        .collect();
    for want in ["create_user", "set_roles", "update_user", "deactivate_user"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    let shots = succeeded
        .iter()
        .flat_map(|e| e.detail["actions"].as_array().cloned().unwrap_or_default())
        .flat_map(|a| a["evidence"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["screenshot"].as_str().map(str::to_owned))
        .collect::<Vec<_>>();
    assert!(!shots.is_empty(), "evidence screenshots are recorded");
    let evidence =
        usher::audit::evidence::EvidenceStore::new(rig.evidence.path()).expect("evidence");
    for h in &shots {
        assert!(evidence.path_of(h).exists(), "screenshot {h} is kept");
    }
    store.verify_audit_chain().await.expect("chain intact");
    rig.stop().await;
}

/// Entra ID: joiner, attribute change with capitalised ops and string booleans, group
/// membership Add/Remove, disable ("False") then DELETE — the account is deleted.
async fn entra_lifecycle(db: Db) {
    let rig = rig(db, AppKind::Spa, "", FixtureOptions::default()).await;
    let email = "entra.bo@contoso.example";
    let (s, created) = rig
        .call(Method::POST, "/Users", Some(json!({
            "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "bo", "userName": email, "active": true,
            "displayName": "Bo Chen",
            "emails": [{"primary": true, "type": "work", "value": email}],
            "name": {"formatted": "Bo Chen", "familyName": "Chen", "givenName": "Bo"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}
        })))
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    let (s, g) = rig
        .call(Method::POST, "/Groups", Some(json!({"schemas": [GROUP_SCHEMA], "externalId": "g1", "displayName": "Admins", "members": []})))
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().expect("id").to_string();
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Add", "path": "members", "value": [{"value": id}]}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Bo is Editor and Admin", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|b| b.roles == ["Editor", "Admin"])
    })
    .await;
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Replace", "path": "name.familyName", "value": "Chen-Wu"}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Bo is renamed", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|b| b.family_name == "Chen-Wu")
    })
    .await;
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Remove", "path": "members", "value": [{"value": id}]}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Bo is back to Viewer", |u| {
        user_in_app(u, email)
            .first()
            .is_some_and(|b| b.roles == ["Viewer"])
    })
    .await;
    let (s, _) = rig
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Replace", "path": "active", "value": "False"}
            ]})),
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    rig.wait_for("Bo is disabled", |u| {
        user_in_app(u, email).first().is_some_and(|b| !b.active)
    })
    .await;
    let (s, _) = rig
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(s, 204);
    rig.wait_for("Bo is deleted", |u| user_in_app(u, email).is_empty())
        .await;
    let store = &rig.running.as_ref().expect("running").store;
    for _ in 0..300 {
        let jobs = store
            .list_jobs(&usher::store::JobFilter {
                resource_id: Some(&id),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("jobs");
        if jobs.iter().all(|j| j.is_terminal()) {
            assert!(
                jobs.iter().all(|j| j.status != JobStatus::Failed),
                "{jobs:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rig.app.users().is_empty(), "{:?}", rig.app.users());
    store.verify_audit_chain().await.expect("chain intact");
    rig.stop().await;
}

/// `mode: sync`: the answer waits for the job and tells its real outcome; a change the
/// playbook cannot make is a SCIM error naming the missing action.
async fn sync_mode_answers_with_the_outcome(db: Db) {
    let rig = rig(
        db,
        AppKind::Classic,
        "    mode: sync\n    leavers: deactivate\n",
        FixtureOptions::default(),
    )
    .await;
    let (s, created) = rig
        .call(
            Method::POST,
            &format!("/Users?attributes={PROV}"),
            Some(okta_user("sync-cy", "Cy", "Ng")),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    // The answer came after the account was confirmed in the app.
    let users = rig.app.users();
    let cy = user_in_app(&users, "sync-cy@okta.example");
    assert_eq!(cy.len(), 1, "{users:?}");
    let id = created["id"].as_str().expect("id").to_string();
    let st = rig.state(&id).await;
    assert_eq!(st["state"], "provisioned");
    assert_eq!(st["appAccountId"], json!(cy[0].id));
    // leavers: deactivate → DELETE deactivates, and answers once done.
    let (s, _) = rig
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let users = rig.app.users();
    let cy = user_in_app(&users, "sync-cy@okta.example");
    assert_eq!(cy.len(), 1, "kept: {users:?}");
    assert!(!cy[0].active, "deactivated before the answer: {users:?}");
    rig.stop().await;
}

/// `invites: on_claim`: the joiner waits until they claim at their link.
async fn on_claim_invites_wait_for_the_claim(db: Db) {
    let (url, got) = receiver().await;
    // SAFETY: every test that sets it sets the same value, before reading configuration.
    unsafe { std::env::set_var("USHER_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET) };
    let rig = rig_full(
        db,
        AppKind::Classic,
        "    invites: on_claim\n",
        FixtureOptions::default(),
        RigExtra {
            top: format!("webhooks:\n  - url: {url}\n    secret: ${{USHER_TEST_WEBHOOK_SECRET}}\n"),
            ..Default::default()
        },
    )
    .await;
    let (s, created) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("claim-di", "Di", "Ox")),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(rig.state(&id).await["state"], "staged");
    let store = &rig.running.as_ref().expect("running").store;
    let token = store
        .claim_token_of("acme", &id)
        .await
        .expect("db")
        .expect("staged token");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rig.app.users().is_empty(), "nothing before the claim");
    // The link reaches the webhooks (Usher sends no mail), signed.
    let mut staged = Vec::new();
    for _ in 0..100 {
        staged = got.lock().map(|g| g.clone()).unwrap_or_default();
        if !staged.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (kind, sig, body) = staged.first().cloned().expect("invite.staged delivered");
    assert_eq!(kind, "invite.staged");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["user"], json!(id));
    assert_eq!(v["userName"], "claim-di@okta.example");
    assert_eq!(v["claim_url"], json!(format!("{}/claim/{token}", rig.base)));
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert_eq!(
        sig,
        usher::engine::sign(WEBHOOK_SECRET.as_bytes(), t, &body)
    );
    // A GET (mail scanners, previews) does not claim.
    let page = rig
        .client
        .get(format!("{}/claim/{token}", rig.base))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.text()
            .await
            .unwrap_or_default()
            .contains("Set up my account")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.state(&id).await["state"], "staged");
    let bad = rig
        .client
        .post(format!("{}/claim/not-a-real-token-0000000000", rig.base))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 404);
    let ok = rig
        .client
        .post(format!("{}/claim/{token}", rig.base))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status().as_u16(), 200);
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    assert_eq!(
        user_in_app(&rig.app.users(), "claim-di@okta.example").len(),
        1
    );
    rig.stop().await;
}

/// Faults: the app fails 20 % of its requests with 500 and delays some by seconds.
/// Every job still ends; retries and final failures are in the audit trail with their
/// screenshots; no user is ever created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_audited_with_evidence() {
    let opts = FixtureOptions {
        fail_rate: 0.2,
        slow_rate: 0.05,
        slow_ms: 2500,
        ..Default::default()
    };
    let rig = rig(Db::Sqlite, AppKind::Classic, "", opts).await;
    // More attempts than the default, quick backoff: the test is about outcomes.
    let mut ids = Vec::new();
    for n in 0..8 {
        let (s, v) = rig
            .call(
                Method::POST,
                "/Users",
                Some(okta_user(&format!("fault-{n}"), "F", &format!("N{n}"))),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let mut states = Vec::new();
    for id in &ids {
        states.push(rig.settled(id).await);
    }
    let users = rig.app.users();
    for (n, st) in states.iter().enumerate() {
        let email = format!("fault-{n}@okta.example");
        let count = user_in_app(&users, &email).len();
        match st["state"].as_str() {
            Some("provisioned") => assert_eq!(count, 1, "{email}: {users:?}"),
            Some("failed") => assert!(count <= 1, "{email}: {users:?}"),
            other => panic!("{email} ended {other:?}: {st}"),
        }
    }
    let store = &rig.running.as_ref().expect("running").store;
    let events = store
        .audit_events(Some("acme"), 100_000)
        .await
        .expect("events");
    let retries: Vec<&usher::audit::Event> = events
        .iter()
        .filter(|e| e.event_type == "job.retry")
        .collect();
    assert!(!retries.is_empty(), "a 20 % failure rate causes retries");
    let evidence =
        usher::audit::evidence::EvidenceStore::new(rig.evidence.path()).expect("evidence");
    let with_shot = retries
        .iter()
        .chain(
            events
                .iter()
                .filter(|e| e.event_type == "job.failed")
                .collect::<Vec<_>>()
                .iter(),
        )
        .filter_map(|e| e.detail["error"]["screenshot"].as_str())
        .collect::<Vec<_>>();
    assert!(
        !with_shot.is_empty(),
        "failures carry screenshots: {retries:?}"
    );
    for h in with_shot {
        assert!(evidence.path_of(h).exists(), "{h}");
    }
    for e in events.iter().filter(|e| e.event_type == "job.failed") {
        assert!(e.detail["error"]["reason"].as_str().is_some(), "{e:?}");
        assert_eq!(
            e.detail["attempt"],
            json!(12),
            "failed only after the last attempt: {e:?}"
        );
    }
    store.verify_audit_chain().await.expect("chain intact");
    rig.stop().await;
}

/// A playbook that lacks an action a change needs: the failure names the action — in
/// the SCIM answer in sync mode, in the state extension and the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_action_is_reported_not_dropped() {
    let classic = std::fs::read_to_string(repo().join("playbooks/classic.yaml")).expect("read");
    let start = classic.find("  set_roles:").expect("set_roles");
    let end = classic.find("  deactivate_user:").expect("deactivate_user");
    let without = format!("{}{}", &classic[..start], &classic[end..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-set-roles.yaml");
    std::fs::write(&path, without).expect("write");
    let rig = rig_full(
        Db::Sqlite,
        AppKind::Classic,
        "    mode: sync\n",
        FixtureOptions::default(),
        RigExtra {
            playbook: Some(path),
            ..Default::default()
        },
    )
    .await;
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("noroles-ed", "Ed", "Po")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let (s, v) = rig
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "roles", "value": [{"value": "Engineering"}]}
            ]})),
        )
        .await;
    assert_eq!(s, 502, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("set_roles"), "{detail}");
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    let st = rig.state(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("set_roles"),
        "{st}"
    );
    let store = &rig.running.as_ref().expect("running").store;
    let failed: Vec<_> = store
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.event_type == "job.failed")
        .collect();
    assert_eq!(failed.len(), 1, "failed at once, no retries: {failed:?}");
    assert_eq!(failed[0].detail["attempt"], json!(1));
    rig.stop().await;
}

/// Without `verify` and `precondition` on `create_user`, the engine reads back through
/// `list_users`, and a create that may already have happened (an interrupted run) is
/// looked up there first: the account is adopted, never created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_reads_back_and_finds_an_interrupted_create() {
    let classic = std::fs::read_to_string(repo().join("playbooks/classic.yaml")).expect("read");
    let pre = classic
        .find("  create_user:\n    precondition:\n")
        .expect("create_user")
        + "  create_user:\n".len();
    let steps = pre + classic[pre..].find("    steps:\n").expect("steps");
    let verify = steps
        + classic[steps..]
            .find("    verify:\n      - call: check_user\n")
            .expect("verify");
    let stripped = format!(
        "{}{}{}",
        &classic[..pre],
        &classic[steps..verify],
        &classic[verify + "    verify:\n      - call: check_user\n".len()..]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare-create.yaml");
    std::fs::write(&path, stripped).expect("write");
    // The app already has Hu's account, as if a crashed run had created it.
    let opts = FixtureOptions {
        seed_users: vec![usher_fixture_apps::NewUser {
            email: "bare-hu@okta.example".into(),
            given_name: "Hu".into(),
            family_name: "Old".into(),
            roles: vec!["Viewer".into()],
            active: true,
        }],
        ..Default::default()
    };
    let rig = rig_full(
        Db::Sqlite,
        AppKind::Classic,
        "    invites: on_claim\n",
        opts,
        RigExtra {
            playbook: Some(path),
            ..Default::default()
        },
    )
    .await;
    let store = rig.running.as_ref().expect("running").store.clone();
    // Iva: a plain create, confirmed through list_users.
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("bare-iva", "Iva", "Ny")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let iva = v["id"].as_str().expect("id").to_string();
    let token = store
        .claim_token_of("acme", &iva)
        .await
        .expect("db")
        .expect("token");
    let r = rig
        .client
        .post(format!("{}/claim/{token}", rig.base))
        .send()
        .await
        .expect("claim");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(rig.settled(&iva).await["state"], "provisioned");
    // Hu: a create that was under way when Usher stopped.
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("bare-hu", "Hu", "New")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let hu = v["id"].as_str().expect("id").to_string();
    let intent = serde_json::to_value(usher::engine::AccountState {
        user_name: Some("bare-hu@okta.example".into()),
        email: Some("bare-hu@okta.example".into()),
        active: true,
        pending_create: true,
        ..Default::default()
    })
    .expect("json");
    store
        .record_app_account("acme", &hu, None, &intent)
        .await
        .expect("intent");
    let token = store
        .claim_token_of("acme", &hu)
        .await
        .expect("db")
        .expect("token");
    let r = rig
        .client
        .post(format!("{}/claim/{token}", rig.base))
        .send()
        .await
        .expect("claim");
    assert_eq!(r.status().as_u16(), 200);
    let st = rig.settled(&hu).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    let users = rig.app.users();
    let hus = user_in_app(&users, "bare-hu@okta.example");
    assert_eq!(hus.len(), 1, "adopted, not created again: {users:?}");
    assert_eq!(hus[0].family_name, "New", "and brought in line");
    assert_eq!(st["appAccountId"], json!(hus[0].id));
    assert_eq!(user_in_app(&users, "bare-iva@okta.example").len(), 1);
    let events = store
        .audit_events(Some("acme"), 1000)
        .await
        .expect("events");
    let actions = |id: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.event_type == "job.succeeded" && e.target.as_deref() == Some(id))
            .flat_map(|e| e.detail["actions"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let iva_create = actions(&iva)
        .into_iter()
        .find(|a| a["action"] == "create_user")
        .expect("create");
    assert_eq!(iva_create["verified"], "list_users", "{iva_create}");
    let hu_actions: Vec<String> = actions(&hu)
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_owned))
        .collect();
    assert!(
        hu_actions.contains(&"list_users".to_string()),
        "{hu_actions:?}"
    );
    assert!(
        !hu_actions.contains(&"create_user".to_string()),
        "{hu_actions:?}"
    );
    assert!(
        hu_actions.contains(&"update_user".to_string()),
        "{hu_actions:?}"
    );
    rig.stop().await;
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

/// Failed jobs and recoveries reach the webhooks, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_recoveries_reach_webhooks_signed() {
    let (url, got) = receiver().await;
    let secret = WEBHOOK_SECRET;
    // SAFETY: every test that sets it sets the same value, before reading configuration.
    unsafe { std::env::set_var("USHER_TEST_WEBHOOK_SECRET", secret) };
    let opts = FixtureOptions {
        fail_rate: 1.0,
        ..Default::default()
    };
    let rig = rig_full(
        Db::Sqlite,
        AppKind::Classic,
        "",
        opts,
        RigExtra {
            top: format!("webhooks:\n  - url: {url}\n    secret: ${{USHER_TEST_WEBHOOK_SECRET}}\n"),
            max_attempts: Some(2),
            ..Default::default()
        },
    )
    .await;
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("hook-fa", "Fa", "Il")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    // The app recovers; an operator runs the job again.
    rig.app.set_fail_rate(0.0);
    let store = &rig.running.as_ref().expect("running").store;
    let job = store
        .list_jobs(&usher::store::JobFilter {
            resource_id: Some(&id),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("jobs")
        .into_iter()
        .find(|j| j.status == JobStatus::Failed)
        .expect("failed job");
    let ev = usher::audit::NewEvent {
        actor: usher::audit::Actor::Admin("test".into()),
        event_type: "job.requeued",
        target: Some(id.clone()),
        integration_id: Some("acme".into()),
        detail: json!({"job": job.id}),
    };
    assert!(store.requeue_job(job.id, &ev).await.expect("requeue"));
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "provisioned", "{st}");
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = got.lock().map(|g| g.clone()).unwrap_or_default();
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["job.failed", "job.recovered"], "{seen:?}");
    for (_, sig, body) in &seen {
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        assert_eq!(
            sig,
            &usher::engine::sign(secret.as_bytes(), t, body),
            "signature checks"
        );
        let v: Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["user"], json!(id));
        assert!(!body.contains("correct horse"), "no secret in a webhook");
    }
    rig.stop().await;
}

/// `mode: sync` with every worker busy answers 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_sheds_load_with_429() {
    let opts = FixtureOptions {
        slow_rate: 1.0,
        slow_ms: 700,
        ..Default::default()
    };
    let rig = rig(
        Db::Sqlite,
        AppKind::Classic,
        "    mode: sync\n    concurrency: 1\n",
        opts,
    )
    .await;
    let rig = Arc::new(rig);
    let mut calls = Vec::new();
    for n in 0..4 {
        let r = rig.clone();
        calls.push(tokio::spawn(async move {
            let req = r
                .client
                .post(format!("{}/Users", r.root))
                .bearer_auth(&r.token)
                .header("content-type", "application/scim+json")
                .body(okta_user(&format!("busy-{n}"), "B", "U").to_string());
            let resp = req.send().await.expect("post");
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            )
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.expect("join"));
    }
    assert!(answers.iter().any(|(s, _)| *s == 201), "{answers:?}");
    let shed: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!shed.is_empty(), "{answers:?}");
    for (_, ra) in shed {
        let secs: u64 = ra
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&secs));
    }
    if let Ok(rig) = Arc::try_unwrap(rig) {
        rig.stop().await;
    }
}

/// Graceful shutdown: a job still running when the grace period ends is released for
/// another worker (back to `pending`, audited), not left to wait for its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_running_jobs() {
    let opts = FixtureOptions {
        slow_rate: 1.0,
        slow_ms: 1500,
        ..Default::default()
    };
    let mut rig = rig_full(
        Db::Sqlite,
        AppKind::Classic,
        "",
        opts,
        RigExtra {
            engine: "  shutdown_grace: 1s\n".into(),
            ..Default::default()
        },
    )
    .await;
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("late-gu", "Gu", "Ro")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let store = rig.running.as_ref().expect("running").store.clone();
    let filter = usher::store::JobFilter {
        resource_id: Some(&id),
        limit: 10,
        ..Default::default()
    };
    for _ in 0..300 {
        if store
            .list_jobs(&filter)
            .await
            .expect("jobs")
            .iter()
            .any(|j| j.status == JobStatus::Running)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.running
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("shutdown");
    let store = support::open_store(&rig._db.url).await;
    let jobs = store.list_jobs(&filter).await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Pending, "{jobs:?}");
    assert_eq!(jobs[0].lease_owner, None);
    assert_eq!(jobs[0].last_error.as_deref(), Some("released at shutdown"));
    let events = store.audit_events(Some("acme"), 100).await.expect("events");
    assert!(
        events.iter().any(|e| e.event_type == "job.retry"
            && e.detail["error"]["reason"] == "Usher shut down while the job ran"),
        "{events:?}"
    );
    store.close().await;
    rig.app.shutdown().await;
}

on_both_databases!(
    okta_lifecycle,
    entra_lifecycle,
    sync_mode_answers_with_the_outcome,
    on_claim_invites_wait_for_the_claim,
);

/// `usher jobs trace`: a failed job's trace is one HTML file with every step each
/// attempt ran (login included), the failing step opened with its screenshot; and
/// `usher jobs show` ties each screenshot to its step, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_has_a_trace_and_evidence_per_step() {
    let classic = std::fs::read_to_string(repo().join("playbooks/classic.yaml")).expect("read");
    let broken = classic
        .replace("timeout: 10s", "timeout: 2s")
        .replace("name='Send invite'", "name='Send invitation'");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, broken).expect("write");
    let opts = FixtureOptions::default();
    let rig = rig_full(
        Db::Sqlite,
        AppKind::Classic,
        "",
        opts.clone(),
        RigExtra {
            playbook: Some(path.clone()),
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    let (s, v) = rig
        .call(
            Method::POST,
            "/Users",
            Some(okta_user("traced", "Tra", "Ced")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let st = rig.settled(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    let store = &rig.running.as_ref().expect("running").store;
    let job = store
        .list_jobs(&usher::store::JobFilter {
            resource_id: Some(&id),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("jobs")
        .into_iter()
        .find(|j| j.status == JobStatus::Failed)
        .expect("the failed job");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        format!(
            "database: {}\nengine:\n  evidence_dir: {}\n",
            rig._db.url,
            rig.evidence.path().display()
        ),
    )
    .expect("config");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(args)
            .output()
            .expect("usher");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg_s = cfg.display().to_string();
    let (code, html, err) = run(vec![
        "jobs".into(),
        "trace".into(),
        job.id.to_string(),
        "--config".into(),
        cfg_s.clone(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let file = path.display().to_string();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains(&format!("{file}:15")),
        "the login's first step"
    );
    assert_eq!(
        html.matches("class=\"step failed\"").count(),
        1,
        "one failing step"
    );
    let failed = html
        .split("<details class=\"step failed\"")
        .nth(1)
        .expect("failed step");
    assert!(
        failed
            .split_once('>')
            .is_some_and(|(attrs, _)| attrs.ends_with(" open"))
    );
    assert!(failed.contains("Send invitation"));
    assert!(failed.contains("data:image/png;base64,"), "its screenshot");
    assert!(!html.contains(&opts.admin_password));
    assert!(!html.contains(&opts.totp_seed));

    let (code, out, err) = run(vec![
        "jobs".into(),
        "show".into(),
        job.id.to_string(),
        "--config".into(),
        cfg_s,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    let evidence = shown["evidence"].as_array().expect("evidence");
    assert!(
        evidence
            .iter()
            .any(|e| e["at"].as_str().is_some_and(|a| a.starts_with(&file))
                && e["screenshot"].as_str().is_some()),
        "{out}"
    );
    let mut seen = std::collections::HashSet::new();
    for e in evidence {
        assert!(
            seen.insert(e["screenshot"].to_string()),
            "listed twice: {e}"
        );
    }
    rig.stop().await;
}
