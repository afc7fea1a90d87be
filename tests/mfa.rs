//! TOTP enrolment of the service account through the app's UI (`enable_mfa`), against
//! the classic fixture app in headless Chromium: afterwards the app asks for codes and
//! Usher signs in with the seed it captured (from the QR code or the key's text); a
//! failure after the app took the code, and a crash before the vault recorded it, end
//! with Usher able to sign in; a refused code changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use support::{Db, TestDb, open_store};
use usher::engine::{self, MfaError};
use usher::playbook::{
    self, ActionName, AppTarget, Driver, DriverConfig, Phase, RunOptions, UserContext,
};
use usher::store::Store;
use usher::vault::{Keyring, Secret, TotpSpec, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const NAME: &str = "acme-admin";
const QR_STEP: &str = r##"      - capture_totp: { qr: "#totp-qr" }"##;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn classic() -> String {
    let text = std::fs::read_to_string(repo("playbooks/classic.yaml")).expect("read playbook");
    assert!(
        text.contains(QR_STEP),
        "the classic playbook captures the QR code"
    );
    text
}

struct Setup {
    app: RunningApp,
    _db: TestDb,
    store: Store,
    vault: Vault,
    driver: Driver,
    integ: AppTarget,
    playbook: Arc<playbook::Playbook>,
    opts: FixtureOptions,
}

/// The classic app with an admin that has no authenticator yet, and a vault entry
/// without a TOTP seed.
async fn setup(db: Db, text: &str) -> Setup {
    let opts = FixtureOptions {
        mfa_enrolled: false,
        ..FixtureOptions::default()
    };
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start app");
    let db = TestDb::new(db).await;
    let store = open_store(&db.url).await;
    let vault = Vault::new(store.clone(), Keyring::new(VaultKey::generate()));
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        None,
    )
    .expect("secret");
    vault.set(NAME, &secret).await.expect("vault set");
    let playbook = match playbook::load_str("playbooks/classic.yaml", text) {
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
        store,
        vault,
        driver,
        integ,
        playbook,
        opts,
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

fn fingerprint(seed: &str) -> String {
    TotpSpec::parse(seed).expect("a TOTP seed").fingerprint()
}

/// The vault's TOTP is the app's authenticator, and nothing is pending.
async fn enrolled_in_both(s: &Setup) -> String {
    assert!(s.app.mfa_enabled(), "the app now asks for a code");
    let app_seed = s.app.admin_totp_seed().expect("the app's seed");
    let after = stored(s).await;
    let (seed, _) = after.totp.as_ref().expect("the vault has the TOTP");
    assert_eq!(fingerprint(seed.expose_secret()), fingerprint(&app_seed));
    assert!(after.pending_totp.is_none() && after.pending_password.is_none());
    assert_eq!(
        s.integ
            .secret()
            .totp
            .as_ref()
            .map(|(t, _)| fingerprint(t.expose_secret())),
        Some(fingerprint(&app_seed))
    );
    app_seed
}

/// A fresh sign-in (the app asks for a code now) lists the users.
async fn signs_in_with_a_code(s: &Setup) {
    let before = s.app.successful_logins();
    s.driver.forget_session(&s.integ.key).await;
    list_users(s, &s.integ).await;
    assert!(s.app.successful_logins() > before, "a new sign-in");
    assert_eq!(s.app.failed_logins(), 0, "no code was refused");
}

/// The vault's audit events of the enrolment, in order, and none shows the seed.
async fn mfa_events(s: &Setup, seed: &str) -> Vec<String> {
    let events = s.store.audit_events(None, 200).await.expect("audit");
    let text =
        serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>()).expect("json");
    let compact: String = seed.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(!text.contains(&compact), "{text}");
    events
        .iter()
        .map(|e| e.event_type.clone())
        .filter(|t| t.starts_with("vault.mfa."))
        .collect()
}

#[tokio::test]
async fn enable_mfa_enrols_the_qr_code_secret_and_usher_signs_in_with_it() {
    let s = setup(Db::Sqlite, &classic()).await;
    let dir = tempfile::tempdir().expect("dir");
    let opts = RunOptions {
        evidence: Some(Arc::new(
            usher::audit::evidence::EvidenceStore::new(dir.path()).expect("evidence"),
        )),
        ..RunOptions::default()
    };
    let enrolment = engine::enable_mfa(&s.driver, &s.integ, &s.vault, NAME, &opts)
        .await
        .unwrap_or_else(|e| panic!("enable_mfa failed: {e}"));
    assert!(enrolment.recovered_from.is_none());
    let seed = enrolled_in_both(&s).await;

    // The enrolment page is never photographed, and no record shows the secret.
    let outcome = enrolment.outcome.expect("outcome");
    assert!(
        outcome
            .steps
            .iter()
            .any(|r| r.step.starts_with("capture_totp qr")),
        "{:?}",
        outcome.steps
    );
    // (The sign-in before it keeps its evidence: that page shows no secret.)
    let action: Vec<_> = outcome
        .steps
        .iter()
        .filter(|r| !matches!(r.phase, Phase::Login | Phase::SessionCheck))
        .collect();
    assert!(action.len() >= 6, "{action:?}");
    assert!(
        action
            .iter()
            .all(|r| r.screenshot.is_none() && r.screenshot_before.is_none()),
        "{action:?}"
    );
    let records = serde_json::to_string(&outcome.steps).expect("json");
    assert!(!records.contains(&seed), "{records}");
    assert_eq!(
        mfa_events(&s, &seed).await,
        vec!["vault.mfa.begin", "vault.mfa.done"]
    );

    signs_in_with_a_code(&s).await;
    // Enrolling twice is refused before the app is touched.
    let again = engine::enable_mfa(&s.driver, &s.integ, &s.vault, NAME, &opts)
        .await
        .expect_err("enrolled already");
    assert!(matches!(again, MfaError::AlreadyEnrolled(_)), "{again}");
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn enable_mfa_failing_after_the_app_took_the_code_is_recovered_on_postgresql() {
    // The key's text this time, and a failure once the app has taken the code.
    let confirmed = r#"      - expect: { url: "/admin/account/two-factor$" }"#;
    let text = classic()
        .replace(QR_STEP, r##"      - capture_totp: { text: "#totp-key" }"##)
        .replace(
            confirmed,
            &format!("{confirmed}\n      - fail: \"forced failure after the app took the code\""),
        );
    let s = setup(Db::Postgres, &text).await;
    let enrolment = engine::enable_mfa(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("not recovered: {e}"));
    let why = enrolment
        .recovered_from
        .expect("recovered from the failure");
    assert!(why.contains("forced failure"), "{why}");
    let seed = enrolled_in_both(&s).await;
    assert!(!why.contains(&seed), "{why}");
    assert_eq!(
        mfa_events(&s, &seed).await,
        vec!["vault.mfa.begin", "vault.mfa.done"]
    );
    // The recovery login is the session kept: actions go on, with codes.
    list_users(&s, &s.integ).await;
    signs_in_with_a_code(&s).await;
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_crash_between_the_app_enrolment_and_the_vault_record_is_recovered_at_the_next_login() {
    let s = setup(Db::Sqlite, &classic()).await;
    // What a process that died after the app confirmed the code leaves: the vault has
    // the secret as pending only, the app asks for its codes.
    let seed = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ";
    s.vault
        .begin_mfa(NAME, &SecretString::from(seed.to_owned()))
        .await
        .expect("begin");
    s.app.set_admin_totp(Some(seed)).expect("enrol in the app");

    // Another Usher process: its own integration, the secret from the vault, no session.
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
    assert_eq!(
        s.app.failed_logins(),
        0,
        "no code was typed without the seed"
    );
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
    assert_eq!(
        after
            .totp
            .as_ref()
            .map(|(t, _)| t.expose_secret().to_owned()),
        Some(seed.to_owned())
    );
    assert!(after.pending_totp.is_none());

    // A pending enrolment younger than the grace period may still be running in
    // another process: a new enrolment does not settle it under its feet.
    s.app.set_admin_totp(None).expect("no authenticator");
    let plain = Secret::new(
        s.opts.admin_username.clone(),
        s.opts.admin_password.clone(),
        None,
    )
    .expect("secret");
    s.vault.set(NAME, &plain).await.expect("reset");
    s.vault
        .begin_mfa(NAME, &SecretString::from(seed.to_owned()))
        .await
        .expect("begin");
    s.integ.set_secret(Arc::new(stored(&s).await));
    let e = engine::enable_mfa(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
        .await
        .expect_err("a fresh pending enrolment may still be running");
    assert!(matches!(e, MfaError::InProgress { .. }), "{e}");
    assert!(!s.app.mfa_enabled(), "the app was not touched");
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_code_the_app_refuses_changes_nothing_and_the_pending_secret_is_discarded() {
    let code = r##"      - fill: { into: "#totp-code", value: "{{ totp(new_totp) }}" }"##;
    let text = classic();
    assert!(text.contains(code));
    let text = text.replace(
        code,
        r##"      - fill: { into: "#totp-code", value: "000000" }"##,
    );
    let s = setup(Db::Sqlite, &text).await;
    let e = engine::enable_mfa(&s.driver, &s.integ, &s.vault, NAME, &RunOptions::default())
        .await
        .expect_err("the app refused the code");
    assert!(matches!(e, MfaError::NotChanged(_)), "{e}");
    assert!(!s.app.mfa_enabled());
    let after = stored(&s).await;
    assert!(after.totp.is_none() && after.pending_totp.is_none());
    // Signing in still takes the password alone.
    s.driver.forget_session(&s.integ.key).await;
    list_users(&s, &s.integ).await;
    s.driver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn capture_totp_is_only_for_enable_mfa_and_enable_mfa_must_capture() {
    let text = classic();
    let misplaced = text.replacen(
        "      - goto: \"{{ base_url }}/admin/account/password\"",
        &format!(
            "      - goto: \"{{{{ base_url }}}}/admin/account/password\"\n{}",
            QR_STEP
        ),
        1,
    );
    let errs = playbook::load_str("classic.yaml", &misplaced)
        .expect_err("capture_totp outside enable_mfa")
        .to_string();
    assert!(
        errs.contains("`capture_totp` is only allowed in the steps of the enable_mfa action"),
        "{errs}"
    );
    let uncaptured = text.replace(&format!("{QR_STEP}\n"), "");
    let errs = playbook::load_str("classic.yaml", &uncaptured)
        .expect_err("enable_mfa without capture_totp")
        .to_string();
    assert!(
        errs.contains(
            "`enable_mfa.steps` must read the new TOTP secret with a `capture_totp` step"
        ),
        "{errs}"
    );
    assert!(errs.starts_with("classic.yaml:"), "{errs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_vault_enable_mfa_enrols_through_the_integration_playbook() {
    let opts = FixtureOptions {
        mfa_enrolled: false,
        ..FixtureOptions::default()
    };
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
        None,
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
    let run = move |args: Vec<&'static str>| {
        let (cfg, key_b64) = (cfg.clone(), key_b64.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
                .args(args)
                .args(["-c", &cfg])
                .env("USHER_VAULT_KEY", key_b64)
                .env_remove("USHER_VAULT_KEY_FILE")
                .output()
                .expect("run usher")
        })
    };
    let out = run(vec!["vault", "enable-mfa", "--integration", "acme"])
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{NAME}: TOTP enrolled in Acme Admin and recorded in the vault; signed in with it")
    );
    let app_seed = app.admin_totp_seed().expect("enrolled");
    let stored = vault.get(NAME).await.expect("get");
    let (seed, _) = stored.totp.as_ref().expect("vault totp");
    assert_eq!(fingerprint(seed.expose_secret()), fingerprint(&app_seed));
    assert!(!stdout.contains(&app_seed) && !stderr.contains(&app_seed));

    // Again: one plain line, exit 1, the app untouched.
    let out = run(vec!["vault", "enable-mfa", "--integration", "acme"])
        .await
        .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has a TOTP seed already"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(app.admin_totp_seed().as_deref(), Some(app_seed.as_str()));
}
