//! Reconciliation end to end: the real server with its engine, real Chromium and the
//! classic fixture app, on SQLite and PostgreSQL. Accounts are changed in the app behind
//! Usher's back; a run must find each change, report it, and (only as its policy says)
//! queue the jobs that put things right — never deleting, never touching the service
//! account or the allow-list, and changing nothing on a dry run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[macro_use]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Db, TestDb};
use usher::audit::Actor;
use usher::config::{Config, DriftPolicy, OrphanPolicy, ReconcileSettings, hash_token};
use usher::engine::Finding;
use usher::server::{EngineSetup, Running};
use usher::vault::{Keyring, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, NewUser, RunningApp};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

struct Rig {
    app: RunningApp,
    running: Option<Running>,
    _db: TestDb,
    token: String,
    root: String,
    _evidence: tempfile::TempDir,
    /// The configuration as written (for the CLI).
    config_text: String,
}

async fn rig(db: Db, opts: FixtureOptions) -> Rig {
    rig_with(db, opts, "", None).await
}

/// `extra`: more lines of the integration; `vault`: the service account's secret in
/// an encrypted vault (else fixed in memory).
async fn rig_with(db: Db, opts: FixtureOptions, extra: &str, vault: Option<[u8; 32]>) -> Rig {
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("fixture app");
    let db = TestDb::new(db).await;
    let token = format!("reconcile-test-{}", uuid::Uuid::new_v4().simple());
    let evidence = tempfile::tempdir().expect("tempdir");
    // One attempt: a create that meets a broken app fails at once, leaving a SCIM
    // user without an app account (what adoption is about).
    // SAFETY: set before the server reads its configuration; every test sets the same value.
    unsafe {
        std::env::set_var(
            "USHER_TEST_RECONCILE_HOOK_SECRET",
            "whsec-reconcile-0123456789",
        )
    };
    // Webhooks go to a port nothing listens on: the test reads the outbox.
    let text = format!(
        "listen: 127.0.0.1:0\ndatabase: {db}\nwebhooks:\n  - url: http://127.0.0.1:9/hooks\n    secret: ${{USHER_TEST_RECONCILE_HOOK_SECRET}}\nengine:\n  workers: 2\n  lease: 10s\n  max_attempts: 1\n  backoff_base: 300ms\n  backoff_max: 3s\n  poll: 200ms\n  evidence_dir: {ev}\nintegrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: {playbook}\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n{reconcile}{extra}",
        reconcile = if extra.contains("reconcile:") {
            ""
        } else {
            "    reconcile: { allow: [keep@acme.example] }\n"
        },
        playbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("playbooks/classic.yaml")
            .display(),
        db = db.url,
        ev = evidence.path().display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    let config = Config::parse("reconcile-test.yaml", &text).expect("config");
    let secret = usher::vault::Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    let secrets = match vault {
        Some(key) => {
            let store = support::open_store(&db.url).await;
            let v = Vault::new(store, Keyring::new(VaultKey::from_bytes(key)));
            v.set("acme-admin", &secret).await.expect("vault set");
            usher::engine::Secrets::Vault(v)
        }
        None => {
            let mut m = HashMap::new();
            m.insert("acme-admin".to_string(), Arc::new(secret));
            usher::engine::Secrets::Fixed(m)
        }
    };
    let running = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse().expect("addr"),
        Some(EngineSetup {
            config_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            secrets,
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await
    .expect("server with engine starts");
    let root = format!("http://{}/scim/v2/acme", running.addr);
    Rig {
        app,
        running: Some(running),
        _db: db,
        token,
        root,
        _evidence: evidence,
        config_text: text,
    }
}

impl Rig {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    async fn create(&self, local: &str) -> String {
        let body = json!({
            "schemas": [USER_SCHEMA],
            "userName": format!("{local}@acme.example"),
            "name": {"givenName": "Test", "familyName": local},
            "emails": [{"primary": true, "value": format!("{local}@acme.example"), "type": "work"}],
            "active": true
        });
        let resp = reqwest::Client::new()
            .post(format!("{}/Users", self.root))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 201);
        let v: Value = resp.json().await.expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Waits until every job of the integration has ended.
    async fn settled(&self) {
        let store = &self.running().store;
        for _ in 0..1500 {
            let jobs = store
                .list_jobs(&usher::store::JobFilter {
                    integration_id: Some("acme"),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .expect("jobs");
            if jobs.iter().all(|j| j.is_terminal()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the jobs of acme did not end");
    }

    fn user(&self, local: &str) -> Option<usher_fixture_apps::AppUser> {
        self.app.user_by_email(&format!("{local}@acme.example"))
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("shutdown");
        }
        self.app.shutdown().await;
    }
}

fn by_hand(local: &str, role: &str) -> NewUser {
    NewUser {
        email: format!("{local}@acme.example"),
        given_name: "Hand".into(),
        family_name: "Made".into(),
        roles: vec![role.into()],
        active: true,
    }
}

async fn drift_orphans_adoption_and_missing_accounts(db: Db) {
    let rig = rig(db, FixtureOptions::default()).await;
    for u in ["ann", "bob", "cat", "eve"] {
        rig.create(u).await;
    }
    rig.settled().await;
    for u in ["ann", "bob", "cat", "eve"] {
        assert!(rig.user(u).is_some(), "{u} provisioned");
    }
    // Dan's create meets a broken app and fails (one attempt): a SCIM user of the
    // integration without an app account.
    rig.app.set_fail_rate(1.0);
    rig.create("dan").await;
    rig.settled().await;
    rig.app.set_fail_rate(0.0);
    assert!(rig.user("dan").is_none());

    // Behind Usher's back: an account for dan, a stranger, an allow-listed account, the
    // service account listed as a user; bob made Admin, eve deactivated, cat deleted.
    assert!(rig.app.add_user(&by_hand("dan", "Viewer")).is_some());
    assert!(rig.app.add_user(&by_hand("stranger", "Admin")).is_some());
    assert!(rig.app.add_user(&by_hand("keep", "Admin")).is_some());
    let mut svc = by_hand("admin", "Admin");
    svc.email = "admin@acme.example".into();
    assert!(rig.app.add_user(&svc).is_some());
    assert!(rig.app.set_user_roles("bob@acme.example", &["Admin"]));
    assert!(rig.app.set_user_active("eve@acme.example", false));
    assert!(rig.app.remove_user("cat@acme.example").is_some());
    let before = rig.app.users();

    let engine = rig.running().engine.as_ref().expect("engine");
    let store = &rig.running().store;
    let events_before = store
        .audit_events(Some("acme"), 100_000)
        .await
        .expect("events")
        .len();

    // A dry run reports everything and changes nothing, in the app or in Usher.
    let dry = engine
        .reconcile("acme", true, Actor::System)
        .await
        .expect("dry run");
    assert_eq!(
        (
            dry.listed,
            dry.in_line,
            dry.drifted,
            dry.missing,
            dry.adopted,
            dry.discovered,
            dry.protected
        ),
        (7, 1, 2, 1, 1, 1, 2),
        "{dry:#?}"
    );
    assert!(dry.jobs.is_empty());
    let bob_drift = dry
        .findings
        .iter()
        .find_map(|f| match f {
            Finding::Drifted { differences, .. }
                if differences.iter().any(|d| d.contains("[admin]")) =>
            {
                Some(differences.clone())
            }
            _ => None,
        })
        .expect("bob's role drift is reported");
    assert!(bob_drift[0].starts_with("roles:"), "{bob_drift:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rig.app.users(),
        before,
        "a dry run changes nothing in the app"
    );
    assert!(
        store
            .discovered_accounts("acme")
            .await
            .expect("discovered")
            .is_empty()
    );
    assert_eq!(
        store
            .audit_events(Some("acme"), 100_000)
            .await
            .expect("events")
            .len(),
        events_before,
        "a dry run records nothing"
    );

    // The configured policy (report): discovered accounts recorded, cat re-provisioned,
    // dan adopted (not created twice); drift only reported.
    let run = engine
        .reconcile("acme", false, Actor::System)
        .await
        .expect("run");
    assert_eq!(
        (run.drifted, run.missing, run.adopted, run.discovered),
        (2, 1, 1, 1)
    );
    assert_eq!(
        run.jobs.len(),
        2,
        "cat's re-provision and dan's adoption: {run:#?}"
    );
    rig.settled().await;
    assert!(
        rig.user("cat").is_some(),
        "the missing account is provisioned again"
    );
    let dans: Vec<_> = rig
        .app
        .users()
        .into_iter()
        .filter(|u| u.email == "dan@acme.example")
        .collect();
    assert_eq!(dans.len(), 1, "dan adopted, not duplicated");
    assert_eq!(
        rig.user("bob").expect("bob").roles,
        vec!["Admin"],
        "drift: report changes nothing"
    );
    assert!(!rig.user("eve").expect("eve").active);
    let discovered = store.discovered_accounts("acme").await.expect("discovered");
    let status = |email: &str| {
        discovered
            .iter()
            .find(|d| d.email.as_deref() == Some(email))
            .map(|d| d.status.clone())
    };
    assert_eq!(
        status("stranger@acme.example").as_deref(),
        Some("discovered")
    );
    assert_eq!(status("keep@acme.example").as_deref(), Some("allowed"));
    assert_eq!(status("admin@acme.example").as_deref(), Some("allowed"));
    let stranger = discovered
        .iter()
        .find(|d| d.email.as_deref() == Some("stranger@acme.example"))
        .expect("stranger");
    assert_eq!(stranger.roles, vec!["Admin"]);
    assert_eq!(stranger.active, Some(true));
    let events = store
        .audit_events(Some("acme"), 100_000)
        .await
        .expect("events");
    let runs: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "reconcile.run")
        .collect();
    assert_eq!(runs.len(), 1, "one audit event per run");
    assert_eq!(runs[0].detail["drifted"], json!(2));
    assert_eq!(runs[0].detail["discovered"], json!(1));

    // Repair and deactivate: bob and eve put back, the stranger deactivated; the
    // allow-listed and service accounts untouched; nothing deleted.
    let policy = ReconcileSettings {
        every: None,
        drift: DriftPolicy::Repair,
        orphans: OrphanPolicy::Deactivate,
        allow: vec!["keep@acme.example".into()],
    };
    let count_before = rig.app.users().len();
    let repair = engine
        .reconcile_with("acme", &policy, false, Actor::System)
        .await
        .expect("repair run");
    assert_eq!((repair.drifted, repair.discovered), (2, 1), "{repair:#?}");
    assert_eq!(repair.jobs.len(), 3, "{repair:#?}");
    rig.settled().await;
    assert_eq!(rig.user("bob").expect("bob").roles, vec!["Viewer"]);
    assert!(rig.user("eve").expect("eve").active);
    assert!(!rig.user("stranger").expect("stranger kept").active);
    assert!(rig.user("keep").expect("keep").active);
    assert!(
        rig.app
            .user_by_email("admin@acme.example")
            .expect("service account")
            .active
    );
    assert_eq!(rig.app.users().len(), count_before, "a run never deletes");
    let discovered = store.discovered_accounts("acme").await.expect("discovered");
    assert_eq!(
        discovered
            .iter()
            .find(|d| d.email.as_deref() == Some("stranger@acme.example"))
            .map(|d| d.status.as_str()),
        Some("deactivated")
    );
    // Each change was a job with read-back and evidence.
    let events = store
        .audit_events(Some("acme"), 100_000)
        .await
        .expect("events");
    let repaired: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "job.succeeded" && e.detail["operation"] == json!("reconcile"))
        .collect();
    assert!(repaired.len() >= 3, "{repaired:?}");
    for e in &repaired {
        let actions = e.detail["actions"].as_array().expect("actions");
        assert!(!actions.is_empty(), "{e:?}");
    }
    // Now in line: a further run finds no drift.
    let again = engine
        .reconcile_with("acme", &policy, false, Actor::System)
        .await
        .expect("third run");
    assert_eq!(
        (again.drifted, again.missing, again.adopted),
        (0, 0, 0),
        "{again:#?}"
    );
    store.verify_audit_chain().await.expect("chain intact");
    rig.stop().await;
}

async fn a_due_schedule_runs_once_across_nodes(db: Db) {
    let db = TestDb::new(db).await;
    let one = support::open_store(&db.url).await;
    let two = support::open_store(&db.url).await;
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        one.claim_schedule("acme", "reconcile", "node-1", lease),
        two.claim_schedule("acme", "reconcile", "node-2", lease)
    );
    let (a, b) = (a.expect("claim 1"), b.expect("claim 2"));
    assert!(a ^ b, "exactly one node runs a due schedule: {a} {b}");
    let (winner, owner, other) = if a {
        (&one, "node-1", &two)
    } else {
        (&two, "node-2", &one)
    };
    // Not again while it runs, nor after it ran, until it is due again.
    assert!(
        !other
            .claim_schedule("acme", "reconcile", "node-x", lease)
            .await
            .expect("claim")
    );
    assert!(
        winner
            .finish_schedule(
                "acme",
                "reconcile",
                owner,
                Duration::from_secs(3600),
                &json!({"ok": true})
            )
            .await
            .expect("finish")
    );
    assert!(
        !one.claim_schedule("acme", "reconcile", "node-1", lease)
            .await
            .expect("claim")
    );
    assert!(
        !two.claim_schedule("acme", "reconcile", "node-2", lease)
            .await
            .expect("claim")
    );
    let row = one
        .schedule("acme", "reconcile")
        .await
        .expect("row")
        .expect("schedule");
    assert!(row.last_run.is_some());
    assert_eq!(row.last_result, Some(json!({"ok": true})));
    // A lost lease cannot finish the run.
    assert!(
        !two.finish_schedule(
            "acme",
            "reconcile",
            "node-x",
            Duration::from_secs(1),
            &json!({})
        )
        .await
        .expect("finish")
    );
    // Other integrations have schedules of their own; many takers at once, one winner.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            s.claim_schedule(
                "other",
                "reconcile",
                &format!("n{i}"),
                Duration::from_secs(60),
            )
            .await
            .expect("claim")
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.expect("task") {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

/// The line of `playbooks/classic.yaml` that holds `needle`, as `file:line`.
fn classic_line(needle: &str) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/classic.yaml"),
    )
    .expect("playbook");
    let n = text
        .lines()
        .position(|l| l.contains(needle))
        .expect("line in the playbook");
    format!("classic.yaml:{}", n + 1)
}

async fn the_canary_reports_a_changed_ui_and_clears_when_it_is_back(db: Db) {
    let rig = rig(db, FixtureOptions::default()).await;
    let engine = rig.running().engine.as_ref().expect("engine");
    let store = &rig.running().store;
    let events_of = |kind: &'static str| async move {
        store
            .audit_events(Some("acme"), 100_000)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.event_type == kind)
            .count()
    };

    let ok = engine.canary("acme").await.expect("canary");
    assert_eq!(ok.status, "ok", "{ok:#?}");
    assert!(ok.checked.contains(&"list_users".to_owned()), "{ok:#?}");
    assert!(
        ok.checked.contains(&"probe create_user".to_owned()),
        "{ok:#?}"
    );
    assert_eq!(events_of("integration.ui_changed").await, 0);

    // A new release of the app renamed the invite form's button.
    rig.app.set_ui_renamed(true);
    let bad = engine.canary("acme").await.expect("canary");
    assert_eq!(bad.status, "degraded");
    assert_eq!(bad.findings.len(), 1, "{bad:#?}");
    let f = &bad.findings[0];
    assert_eq!(f.part, "probe create_user");
    assert!(
        f.at.ends_with(&classic_line("role=button[name='Send invite']\", timeout")),
        "the exact file:line: {f:#?}"
    );
    assert!(
        f.locator
            .as_deref()
            .is_some_and(|l| l.contains("Send invite")),
        "{f:#?}"
    );
    let shot = f
        .screenshot
        .as_deref()
        .expect("a screenshot of the changed page");
    let evidence =
        usher::audit::evidence::EvidenceStore::new(rig._evidence.path()).expect("evidence");
    assert!(evidence.path_of(shot).exists());
    assert_eq!(events_of("integration.ui_changed").await, 1);
    let health = store.health(Some("acme")).await.expect("health");
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].status, "degraded");
    assert_eq!(health[0].detail["findings"][0]["step"], json!(f.step));
    let hooks = store.webhook_statuses().await.expect("outbox");
    assert_eq!(
        hooks
            .iter()
            .filter(|(t, _, _)| t == "integration.ui_changed")
            .count(),
        1,
        "{hooks:?}"
    );
    // Still changed: no second alarm.
    assert_eq!(
        engine.canary("acme").await.expect("canary").status,
        "degraded"
    );
    assert_eq!(events_of("integration.ui_changed").await, 1);

    // Back as the playbook knows it: cleared.
    rig.app.set_ui_renamed(false);
    let back = engine.canary("acme").await.expect("canary");
    assert_eq!(back.status, "ok", "{back:#?}");
    assert_eq!(events_of("integration.ui_restored").await, 1);
    assert_eq!(
        store.health(Some("acme")).await.expect("health")[0].status,
        "ok"
    );
    let hooks = store.webhook_statuses().await.expect("outbox");
    assert!(
        hooks.iter().any(|(t, _, _)| t == "integration.ui_restored"),
        "{hooks:?}"
    );
    // The canary wrote nothing to the app.
    assert!(rig.app.users().is_empty());
    assert_eq!(rig.app.create_submissions(), 0);
    store.verify_audit_chain().await.expect("chain intact");
    rig.stop().await;
}

/// `usher ARGS` against the rig's configuration; (exit code, standard output).
fn cli(rig: &Rig, args: &[&str]) -> (i32, String) {
    cli_with_key(rig, args, None)
}

/// The same, with the vault key (`[7; 32]`) in the environment.
fn cli_with_key(rig: &Rig, args: &[&str], key: Option<[u8; 32]>) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usher.yaml");
    std::fs::write(&path, &rig.config_text).expect("config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args(args).arg("--config").arg(&path);
    if let Some(k) = key {
        use base64::Engine;
        cmd.env(
            "USHER_VAULT_KEY",
            base64::engine::general_purpose::STANDARD.encode(k),
        );
    }
    let out = cmd.output().expect("usher");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

async fn posture_and_access_reports(db: Db) {
    let key = [7u8; 32];
    let rig = rig_with(
        db,
        FixtureOptions::default(),
        "    mfa: required\n    rotate_password: { every: 30d }\n",
        Some(key),
    )
    .await;
    let ann = rig.create("ann").await;
    rig.create("bob").await;
    // Ann is in Admins (classic maps Admins to Admin); bob in no group.
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Admins",
        "members": [{"value": ann}]
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/Groups", rig.root))
        .bearer_auth(&rig.token)
        .header("content-type", "application/scim+json")
        .body(group.to_string())
        .send()
        .await
        .expect("group");
    assert_eq!(resp.status().as_u16(), 201);
    rig.settled().await;
    assert_eq!(rig.user("ann").expect("ann").roles, vec!["Admin"]);
    assert!(rig.app.add_user(&by_hand("stranger", "Billing")).is_some());
    let engine = rig.running().engine.as_ref().expect("engine");
    engine
        .reconcile("acme", false, Actor::System)
        .await
        .expect("reconcile");

    let (code, said) = cli(&rig, &["posture", "--integration", "acme", "--json"]);
    let all: Value = serde_json::from_str(&said).expect("json");
    let p = &all[0];
    assert_eq!(code, 0, "no policy broken: {p:#}");
    assert_eq!(p["mfa_policy"], json!("required"));
    assert_eq!(p["mfa_in_vault"], json!(true));
    assert_eq!(
        p["last_login_used_mfa"],
        json!(true),
        "the app asked for the code"
    );
    assert!(p["last_login_at"].is_string());
    assert_eq!(p["rotation_every_days"], json!(30));
    assert_eq!(p["password_age_days"], json!(0));
    assert_eq!(p["rotation_overdue"], json!(false));
    assert_eq!(p["discovered"], json!(1));
    assert_eq!(p["drifted"], json!(0));
    assert_eq!(p["canary"], json!("unknown"));
    assert_eq!(p["violations"], json!([]));

    // The same entry without its TOTP seed breaks `mfa: required`.
    let store = support::open_store(&rig._db.url).await;
    let v = Vault::new(store, Keyring::new(VaultKey::from_bytes(key)));
    let plain = usher::vault::Secret::new("admin@acme.example", "correct horse battery", None)
        .expect("secret");
    v.set("acme-admin", &plain).await.expect("set");
    let (code, said) = cli(&rig, &["posture", "--integration", "acme"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no TOTP seed"), "{said}");
    assert!(
        !said.contains("correct horse"),
        "no secret in the report: {said}"
    );

    // Who has access to what, and why.
    let (code, csv) = cli(&rig, &["access", "report", "--integration", "acme"]);
    assert_eq!(code, 0, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("integration,source,user_id"), "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ann@acme.example") && l.ends_with(",Admin,Admins")),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bob@acme.example") && l.ends_with(",Viewer,")),
        "bob has the app's default role and no grant: {csv}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("acme,discovered,")
            && l.contains("stranger@acme.example")
            && l.ends_with(",Billing,")),
        "{csv}"
    );
    let (_, json_out) = cli(&rig, &["access", "report", "--format", "json"]);
    let rows: Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{rows:#}");
    rig.stop().await;
}

/// Two nodes on one PostgreSQL database, both with a reconciliation schedule: the due
/// run happens once, on one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgresql_run_a_due_reconciliation_once() {
    let one = rig_with(
        Db::Postgres,
        FixtureOptions::default(),
        "    reconcile: { every: 1h }\n",
        None,
    )
    .await;
    // The second node: the same configuration and database, its own engine and Chromium.
    let config = Config::parse("reconcile-test.yaml", &one.config_text).expect("config");
    let opts = FixtureOptions::default();
    let secret = usher::vault::Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    let mut m = HashMap::new();
    m.insert("acme-admin".to_string(), Arc::new(secret));
    let two = usher::server::start_with(
        &config,
        "127.0.0.1:0".parse().expect("addr"),
        Some(EngineSetup {
            config_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            secrets: usher::engine::Secrets::Fixed(m),
            driver: usher::playbook::DriverConfig::default(),
        }),
    )
    .await
    .expect("second node");
    let store = &one.running().store;
    let runs = || async {
        store
            .audit_events(Some("acme"), 100_000)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.event_type == "reconcile.run")
            .count()
    };
    let mut seen = 0;
    for _ in 0..300 {
        seen = runs().await;
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, 1, "the schedule ran at start");
    // Both nodes look for due schedules again (every 15 s): not due for an hour.
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(runs().await, 1, "a due run happens once across nodes");
    let row = store
        .schedule("acme", "reconcile")
        .await
        .expect("schedule")
        .expect("a row");
    assert!(row.lease_owner.is_none());
    assert!(row.next_due > row.last_run.clone().unwrap_or_default());
    assert_eq!(
        row.last_result.as_ref().map(|r| r["ok"].clone()),
        Some(json!(true))
    );
    two.shutdown().await.expect("shutdown");
    one.stop().await;
}

/// `usher reconcile` and `usher canary` from the command line, on the vault, against the
/// running server's database: the report, the exit codes, and the jobs queued.
async fn the_commands_report_and_exit_as_documented(db: Db) {
    let key = [7u8; 32];
    let rig = rig_with(db, FixtureOptions::default(), "", Some(key)).await;
    rig.create("ann").await;
    rig.settled().await;
    assert!(rig.app.add_user(&by_hand("stranger", "Admin")).is_some());
    assert!(rig.app.set_user_roles("ann@acme.example", &["Billing"]));

    let (code, said) = cli_with_key(
        &rig,
        &["reconcile", "--integration", "acme", "--dry-run", "--json"],
        Some(key),
    );
    assert_eq!(code, 1, "findings: {said}");
    let report: Value = serde_json::from_str(&said).expect("json");
    assert_eq!(report["dry_run"], json!(true));
    assert_eq!(report["drifted"], json!(1));
    assert_eq!(report["discovered"], json!(1));
    assert_eq!(report["jobs"], json!([]));
    let (code, said) = cli_with_key(&rig, &["reconcile", "--integration", "acme"], Some(key));
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("1 drifted"), "{said}");
    assert!(
        said.contains("discovered stranger@acme.example (app id "),
        "{said}"
    );
    assert!(!said.contains("correct horse"), "{said}");
    let store = &rig.running().store;
    assert_eq!(
        store
            .discovered_accounts("acme")
            .await
            .expect("discovered")
            .len(),
        1,
        "recorded by the command"
    );

    // Each command is its own process: its sign-in waits for a TOTP window the
    // server has not used, so the ok case is left to the engine's test.
    rig.app.set_ui_renamed(true);
    let (code, said) = cli_with_key(&rig, &["canary", "--integration", "acme"], Some(key));
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("degraded"), "{said}");
    assert!(said.contains("probe create_user"), "{said}");
    assert!(
        said.contains(&classic_line("role=button[name='Send invite']\", timeout")),
        "{said}"
    );
    // Without the vault key the run cannot start: exit 2, one plain line.
    let (code, _) = cli(&rig, &["canary", "--integration", "acme"]);
    assert_eq!(code, 2);
    rig.stop().await;
}

on_both_databases!(
    drift_orphans_adoption_and_missing_accounts,
    a_due_schedule_runs_once_across_nodes,
    the_canary_reports_a_changed_ui_and_clears_when_it_is_back,
    posture_and_access_reports,
    the_commands_report_and_exit_as_documented
);
