//! Password rotation against the fixture apps in headless Chromium: the new password
//! works in the app and is the vault's; a failure after the app took it, a crash before
//! the vault recorded it, and a refusal by the app all end with Usher able to log in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use support::{Db, TestDb, open_store};
use usher::engine::{self, RotateError};
use usher::playbook::{self, ActionName, AppTarget, Driver, DriverConfig, RunOptions, UserContext};
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const NAME: &str = "acme-admin";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn playbook_text(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).expect("read playbook")
}

struct Setup {
    app: RunningApp,
    _db: TestDb,
    vault: Vault,
    driver: Driver,
    integ: AppTarget,
    playbook: Arc<playbook::Playbook>,
}

async fn setup(kind: AppKind, rel: &str, text: String) -> Setup {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(kind, opts.clone())
        .await
        .expect("start app");
    let db = TestDb::new(Db::Sqlite).await;
    let store = open_store(&db.url).await;
    let vault = Vault::new(store, Keyring::new(VaultKey::generate()));
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    vault.set(NAME, &secret).await.expect("vault set");
    let playbook = match playbook::load_str(rel, &text) {
        Ok(pb) => Arc::new(pb),
        Err(e) => panic!("{e}"),
    };
    let driver = Driver::new(DriverConfig::default());
    let integ = driver
        .target(
            "acme",
            "Acme",
            app.base_url(),
            playbook.clone(),
            Arc::new(vault.get(NAME).await.expect("get")),
        )
        .expect("integration");
    Setup {
        app,
        _db: db,
        vault,
        driver,
        integ,
        playbook,
    }
}

async fn list_users(s: &Setup, integ: &AppTarget) {
    s.driver
        .run(
            integ,
            ActionName::ListUsers,
            UserContext::default(),
            &RunOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("list_users failed: {e}"));
}

async fn stored(s: &Setup) -> Secret {
    s.vault.get(NAME).await.expect("vault get")
}

async fn rotates(kind: AppKind, rel: &str) {
    let s = setup(kind, rel, playbook_text(rel)).await;
    let old = s.app.admin_password();
    let rotation =
        engine::rotate_password(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
            .await
            .unwrap_or_else(|e| panic!("rotation failed: {e}"));
    assert!(rotation.recovered_from.is_none());

    let new = stored(&s).await;
    let pw = new.password.expose_secret().to_owned();
    assert_ne!(pw, old);
    assert!(pw.chars().count() >= 24);
    assert!(new.pending_password.is_none());
    assert_eq!(
        s.app.admin_password(),
        pw,
        "the app has the vault's password"
    );
    assert_eq!(s.integ.secret().password.expose_secret(), pw);

    // No step record shows either password.
    let records = serde_json::to_string(&rotation.outcome.expect("outcome").steps).expect("json");
    assert!(!records.contains(&pw), "{records}");
    assert!(!records.contains(&old), "{records}");

    // A fresh login with the new password works.
    s.driver.forget_session(&s.integ.key).await;
    list_users(&s, &s.integ).await;
    assert_eq!(s.app.failed_logins(), 0);
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn rotation_classic_new_password_works_in_the_app_and_the_vault() {
    rotates(AppKind::Classic, "playbooks/classic.yaml").await;
}

#[tokio::test]
async fn rotation_spa_new_password_works_in_the_app_and_the_vault() {
    rotates(AppKind::Spa, "playbooks/spa.yaml").await;
}

#[tokio::test]
async fn rotation_failing_after_the_app_accepted_is_recovered() {
    let rel = "playbooks/classic.yaml";
    let ok = r#"      - expect: { text: "Password changed", in: ".flash" }"#;
    let text = playbook_text(rel);
    assert!(text.contains(ok));
    let text = text.replace(
        ok,
        &format!("{ok}\n      - fail: \"forced failure after the app accepted the password\""),
    );
    let s = setup(AppKind::Classic, rel, text).await;
    let old = s.app.admin_password();

    let rotation =
        engine::rotate_password(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
            .await
            .unwrap_or_else(|e| panic!("not recovered: {e}"));
    let why = rotation.recovered_from.expect("recovered from the failure");
    assert!(why.contains("forced failure"), "{why}");

    let new = stored(&s).await;
    let pw = new.password.expose_secret().to_owned();
    assert_ne!(pw, old);
    assert!(new.pending_password.is_none());
    assert_eq!(s.app.admin_password(), pw);
    assert!(!why.contains(&pw) && !why.contains(&old), "{why}");
    // The recovery login is the session kept: actions go on.
    list_users(&s, &s.integ).await;
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn crash_between_the_app_change_and_the_vault_record_is_recovered_at_the_next_login() {
    let rel = "playbooks/spa.yaml";
    let s = setup(AppKind::Spa, rel, playbook_text(rel)).await;
    let old = s.app.admin_password();

    // Steps 1 and 2 of a rotation, then the process "dies" before step 3.
    let p = engine::generate_password();
    let staged = s.vault.begin_rotation(NAME, &p).await.expect("begin");
    s.integ.set_secret(Arc::new(staged));
    s.driver
        .run_rotate_password(&s.integ, &p, &RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("rotate_password failed: {e}"));
    assert_eq!(s.app.admin_password(), p.expose_secret());
    let before = stored(&s).await;
    assert_eq!(before.password.expose_secret(), old);
    assert!(before.pending_password.is_some());

    // Another Usher process: its own integration, secret from the vault, no session.
    let integ = s
        .driver
        .target(
            "acme-2",
            "Acme",
            s.app.base_url(),
            s.playbook.clone(),
            Arc::new(stored(&s).await),
        )
        .expect("integration");
    list_users(&s, &integ).await;
    assert_eq!(s.app.failed_logins(), 1, "the old password was tried once");
    assert!(
        engine::reconcile(&s.vault, &integ, NAME)
            .await
            .expect("reconcile")
    );
    assert!(
        !engine::reconcile(&s.vault, &integ, NAME)
            .await
            .expect("once")
    );

    let after = stored(&s).await;
    assert_eq!(after.password.expose_secret(), p.expose_secret());
    assert!(after.pending_password.is_none());
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn rotation_refused_by_the_app_keeps_the_old_password() {
    let rel = "playbooks/classic.yaml";
    let confirm = r##"      - fill: { into: "#confirm_password", value: "{{ new_password }}" }"##;
    let text = playbook_text(rel);
    assert!(text.contains(confirm));
    let text = text.replace(
        confirm,
        r##"      - fill: { into: "#confirm_password", value: "{{ new_password }}-typo" }"##,
    );
    let s = setup(AppKind::Classic, rel, text).await;
    let old = s.app.admin_password();

    let e = engine::rotate_password(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
        .await
        .expect_err("the app refused");
    assert!(matches!(e, RotateError::NotChanged(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("the app kept the old password"), "{msg}");
    assert!(!msg.contains(&old), "{msg}");

    let after = stored(&s).await;
    assert_eq!(after.password.expose_secret(), old);
    assert!(after.pending_password.is_none(), "pending discarded");
    assert_eq!(s.app.admin_password(), old);
    // A fresh rotation can start at once.
    let p = SecretString::from("another-Password-123".to_owned());
    s.vault.begin_rotation(NAME, &p).await.expect("begin again");
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_vault_rotate_rotates_through_the_integration_playbook() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start app");
    let db = TestDb::new(Db::Sqlite).await;
    let key = VaultKey::generate();
    let key_b64 = key.to_base64().as_str().to_owned();
    let store = open_store(&db.url).await;
    let vault = Vault::new(store, Keyring::new(key));
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    vault.set(NAME, &secret).await.expect("set");

    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("usher.yaml");
    std::fs::write(
        &config,
        format!(
            "database: {}\nintegrations:\n  - id: acme\n    name: Acme Admin\n    app: Acme\n    playbook: {}\n    base_url: {}\n    service_account: {NAME}\n    scim_token_sha256: '{}'\n",
            db.url,
            repo("playbooks/classic.yaml").display(),
            app.base_url(),
            "0".repeat(64),
        ),
    )
    .expect("config");
    let cfg = config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["vault", "rotate", "--integration", "acme", "-c", &cfg])
            .env("USHER_VAULT_KEY", key_b64)
            .env_remove("USHER_VAULT_KEY_FILE")
            .output()
            .expect("run usher")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{NAME}: password rotated in Acme Admin and in the vault")
    );
    let new = vault.get(NAME).await.expect("get");
    let pw = new.password.expose_secret();
    assert_ne!(pw, opts.admin_password);
    assert_eq!(app.admin_password(), pw);
    assert!(!stdout.contains(pw) && !stderr.contains(pw));
    assert!(!stderr.contains(&opts.admin_password));
}
