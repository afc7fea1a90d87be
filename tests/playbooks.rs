//! End to end: the playbooks in `playbooks/` drive the fixture apps in real headless
//! Chromium through the Driver, and every action is checked against the app's ground
//! truth. Also: failures carry position, locator, URL and a PNG; expired sessions and a
//! killed Chromium are recovered from; secrets never leak; `usher playbook` CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use usher::audit::evidence::EvidenceStore;
use usher::playbook::{
    self, ActionName, ActionOutcome, ActionStatus, AppTarget, Driver, DriverConfig, DriverError,
    RunOptions, UserContext,
};
use usher::vault::Secret;
use usher_fixture_apps::{AppKind, AppUser, FixtureOptions, NewUser, RunningApp};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Loads a playbook under its repository-relative name, so positions read `playbooks/x.yaml:N`.
fn load(rel: &str, text: Option<String>) -> Arc<playbook::Playbook> {
    let text = text.unwrap_or_else(|| std::fs::read_to_string(repo(rel)).expect("read playbook"));
    match playbook::load_str(rel, &text) {
        Ok(pb) => Arc::new(pb),
        Err(e) => panic!("{e}"),
    }
}

fn seed_users(n: usize) -> Vec<NewUser> {
    (1..=n)
        .map(|i| NewUser {
            email: format!("seed{i:02}@acme.test"),
            given_name: format!("Seed{i}"),
            family_name: "User".into(),
            roles: vec!["Viewer".into()],
            active: true,
        })
        .collect()
}

fn scim_user(email: &str, given: &str, family: &str, roles: &[&str]) -> UserContext {
    usher::engine::user_context(&serde_json::json!({
        "userName": email,
        "name": { "givenName": given, "familyName": family },
        "emails": [{ "value": email, "type": "work", "primary": true }],
        "active": true,
        "roles": roles.iter().map(|r| serde_json::json!({ "value": r })).collect::<Vec<_>>(),
    }))
}

struct Setup {
    app: RunningApp,
    driver: Driver,
    integ: AppTarget,
}

async fn setup(kind: AppKind, rel: &str, text: Option<String>, opts: FixtureOptions) -> Setup {
    let app = RunningApp::start(kind, opts.clone())
        .await
        .expect("start app");
    let driver = Driver::new(DriverConfig::default());
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    let integ = driver
        .target(
            "acme",
            "Acme",
            app.base_url(),
            load(rel, text),
            Arc::new(secret),
        )
        .expect("integration");
    Setup { app, driver, integ }
}

/// The classic fixture app with its playbook as it is on disk.
async fn classic(opts: FixtureOptions) -> Setup {
    setup(AppKind::Classic, "playbooks/classic.yaml", None, opts).await
}

async fn run(s: &Setup, action: ActionName, user: &UserContext) -> ActionOutcome {
    match s
        .driver
        .run(&s.integ, action, user.clone(), &RunOptions::default())
        .await
    {
        Ok(o) => o,
        Err(e) => panic!("{action} failed: {e}"),
    }
}

fn truth(app: &RunningApp, email: &str) -> AppUser {
    app.user_by_email(email)
        .unwrap_or_else(|| panic!("{email} is not in the app"))
}

/// Every action of one app's playbook, each checked against the app's ground truth.
async fn lifecycle(kind: AppKind, rel: &str, multi_roles: bool) {
    let opts = FixtureOptions {
        seed_users: seed_users(25),
        ..FixtureOptions::default()
    };
    let s = setup(kind, rel, None, opts).await;

    // create_user with a role from the playbook's `roles` mapping (login with TOTP first).
    let t = Instant::now();
    let alice = scim_user("Alice.Doe@acme.test", "Alice", "Doe", &["Engineering"]);
    let out = run(&s, ActionName::CreateUser, &alice).await;
    let cold = t.elapsed();
    assert_eq!(out.status, ActionStatus::Done);
    let a = truth(&s.app, "alice.doe@acme.test");
    assert_eq!(out.outputs.get("app_id"), Some(&a.id), "{:?}", out.outputs);
    assert_eq!(
        (a.given_name.as_str(), a.family_name.as_str()),
        ("Alice", "Doe")
    );
    assert_eq!(a.roles, vec!["Editor".to_string()]);
    assert!(a.active);
    assert_eq!(s.app.successful_logins(), 1);
    assert!(out.steps.iter().any(|r| r.step.starts_with("fill #otp")));
    // The canary's probe of create_user passes on the app as the playbook knows it.
    let probed = s
        .driver
        .probe(
            &s.integ,
            ActionName::CreateUser,
            UserContext::default(),
            &RunOptions::default(),
        )
        .await
        .expect("the probe passes");
    assert!(probed.steps.len() >= 2, "{:?}", probed.steps);

    // Warm: the kept session is reused, no second login.
    let t = Instant::now();
    let bob = scim_user("bob@acme.test", "Bob", "Roe", &[]);
    run(&s, ActionName::CreateUser, &bob).await;
    let warm = t.elapsed();
    assert_eq!(
        truth(&s.app, "bob@acme.test").roles,
        vec!["Viewer".to_string()]
    );
    assert_eq!(s.app.successful_logins(), 1);
    eprintln!("{rel}: create_user cold (with login) {cold:?}, warm {warm:?}");

    // Replayed create: the precondition finds the account; nothing is created twice.
    let again = run(&s, ActionName::CreateUser, &alice).await;
    assert_eq!(again.status, ActionStatus::AlreadyDone);
    assert_eq!(again.outputs.get("app_id"), Some(&a.id));
    assert_eq!(s.app.users().len(), 27);

    // update_user (found by email).
    let renamed = scim_user(
        "alice.doe@acme.test",
        "Alicia",
        "Doe-Smith",
        &["Engineering"],
    );
    let t = Instant::now();
    run(&s, ActionName::UpdateUser, &renamed).await;
    eprintln!("{rel}: update_user {:?}", t.elapsed());
    let a2 = truth(&s.app, "alice.doe@acme.test");
    assert_eq!(
        (a2.given_name.as_str(), a2.family_name.as_str()),
        ("Alicia", "Doe-Smith")
    );

    // set_roles (app id known).
    let mut with_id = if multi_roles {
        scim_user(
            "alice.doe@acme.test",
            "Alicia",
            "Doe-Smith",
            &["Admins", "Finance"],
        )
    } else {
        scim_user("alice.doe@acme.test", "Alicia", "Doe-Smith", &["Finance"])
    };
    with_id.app_id = Some(a.id.clone());
    run(&s, ActionName::SetRoles, &with_id).await;
    let want: Vec<String> = if multi_roles {
        vec!["Editor".into(), "Admin".into(), "Billing".into()]
    } else {
        vec!["Billing".into()]
    };
    assert_eq!(truth(&s.app, "alice.doe@acme.test").roles, want);

    // deactivate / reactivate, each idempotent.
    let out = run(&s, ActionName::DeactivateUser, &with_id).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert!(!truth(&s.app, "alice.doe@acme.test").active);
    let out = run(&s, ActionName::DeactivateUser, &with_id).await;
    assert_eq!(out.status, ActionStatus::AlreadyDone);
    run(&s, ActionName::ReactivateUser, &with_id).await;
    assert!(truth(&s.app, "alice.doe@acme.test").active);

    // list_users: every user across all pages (27 users, 10 a page).
    let t = Instant::now();
    let listed = run(&s, ActionName::ListUsers, &UserContext::default()).await;
    eprintln!("{rel}: list_users (3 pages) {:?}", t.elapsed());
    let got: BTreeMap<String, String> = listed
        .records
        .iter()
        .map(|r| (r["email"].clone(), r["app_id"].clone()))
        .collect();
    let all = s.app.users();
    assert_eq!(listed.records.len(), all.len(), "{:?}", listed.records);
    for u in &all {
        assert_eq!(
            got.get(&u.email),
            Some(&u.id),
            "{} missing or wrong id",
            u.email
        );
    }
    assert!(listed.records.iter().all(|r| r["status"] == "Active"));
    assert!(
        listed
            .steps
            .iter()
            .filter(|r| r.step.starts_with("paginate next"))
            .count()
            >= 2,
        "three pages"
    );

    // delete_user, idempotent.
    run(&s, ActionName::DeleteUser, &renamed).await;
    assert!(s.app.user_by_email("alice.doe@acme.test").is_none());
    let out = run(&s, ActionName::DeleteUser, &renamed).await;
    assert_eq!(out.status, ActionStatus::AlreadyDone);
    assert_eq!(s.app.users().len(), 26);

    // An expired session is detected by session_check; the action succeeds after a
    // second login, which uses a fresh TOTP window (codes are single-use).
    s.app.expire_sessions();
    let out = run(&s, ActionName::UpdateUser, &bob).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert_eq!(s.app.successful_logins(), 2);
    assert_eq!(s.app.failed_logins(), 0);
    assert!(
        out.steps.iter().any(|r| r.phase == playbook::Phase::Login),
        "relogin recorded"
    );

    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_every_action_against_ground_truth() {
    lifecycle(AppKind::Classic, "playbooks/classic.yaml", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spa_every_action_against_ground_truth() {
    lifecycle(AppKind::Spa, "playbooks/spa.yaml", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_chromium_is_replaced_and_the_action_retried() {
    let s = classic(FixtureOptions::default()).await;
    run(&s, ActionName::ListUsers, &UserContext::default()).await;
    let pid = s.driver.browser_pid().await.expect("chromium pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let carol = scim_user("carol@acme.test", "Carol", "Poe", &["Admins"]);
    let out = run(&s, ActionName::CreateUser, &carol).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert_eq!(
        truth(&s.app, "carol@acme.test").roles,
        vec!["Admin".to_string()]
    );
    let new_pid = s.driver.browser_pid().await.expect("new chromium pid");
    assert_ne!(pid, new_pid);
    // The kept session survived the browser: no second login was needed.
    assert_eq!(s.app.successful_logins(), 1);
    // Killed again, and this time its death is known before the next action starts
    // (its session cannot even be made): relaunched all the same, still no login.
    let killed = std::process::Command::new("kill")
        .args(["-9", &new_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let dan = scim_user("dan@acme.test", "Dan", "Poe", &[]);
    let out = run(&s, ActionName::CreateUser, &dan).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert_ne!(s.driver.browser_pid().await, Some(new_pid));
    assert_eq!(s.app.successful_logins(), 1);
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// Runs `action` for every user at once.
async fn run_all(s: &Setup, action: ActionName, users: &[UserContext]) -> Vec<ActionOutcome> {
    let opts = RunOptions::default();
    futures::future::join_all(
        users
            .iter()
            .map(|u| s.driver.run(&s.integ, action, u.clone(), &opts)),
    )
    .await
    .into_iter()
    .map(|r| match r {
        Ok(o) => o,
        Err(e) => panic!("{action} failed: {e}"),
    })
    .collect()
}

fn checked_session(out: &ActionOutcome) -> bool {
    out.steps
        .iter()
        .any(|r| r.phase == playbook::Phase::SessionCheck)
}

/// Jobs of one integration at once get sessions of their own (own cookie jar, own
/// sign-in), which are kept logged in and reused by the next actions without a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sessions_run_side_by_side_and_are_kept_warm() {
    let s = classic(FixtureOptions::default()).await;
    let users: Vec<UserContext> = (0..4)
        .map(|n| scim_user(&format!("side{n}@acme.test"), "Side", &format!("N{n}"), &[]))
        .collect();
    let outs = run_all(&s, ActionName::CreateUser, &users).await;
    assert!(outs.iter().all(|o| o.status == ActionStatus::Done));
    for n in 0..4 {
        assert_eq!(
            truth(&s.app, &format!("side{n}@acme.test")).family_name,
            format!("N{n}")
        );
    }
    let logins = s.app.successful_logins();
    // Two sign-ins at least (the actions overlapped), each its own TOTP window: none
    // was refused, and a third waits for a free session rather than a window.
    assert!((2..=4).contains(&logins), "{logins} sign-ins");
    assert_eq!(s.app.failed_logins(), 0);
    let (idle, live) = s.driver.sessions("acme");
    assert_eq!((idle, live), (logins as usize, logins as usize));

    // As many actions at once as there are sessions: each takes a warm one, trusted
    // (no session check), and nobody signs in again.
    let renamed: Vec<UserContext> = (0..idle)
        .map(|n| {
            scim_user(
                &format!("side{n}@acme.test"),
                "Renamed",
                &format!("N{n}"),
                &[],
            )
        })
        .collect();
    let outs = run_all(&s, ActionName::UpdateUser, &renamed).await;
    assert!(outs.iter().all(|o| o.status == ActionStatus::Done));
    assert!(
        !outs.iter().any(checked_session),
        "trusted sessions are not checked"
    );
    for n in 0..idle {
        assert_eq!(
            truth(&s.app, &format!("side{n}@acme.test")).given_name,
            "Renamed"
        );
    }
    assert_eq!(s.app.successful_logins(), logins);
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// A session used on trust that the app has ended meanwhile: the leaver's
/// precondition, run on the sign-in page, finds no account ("already done"); that
/// answer is not believed until the session is checked, and the account is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_trusted_session_never_passes_for_a_done_leaver() {
    let s = classic(FixtureOptions::default()).await;
    let alice = scim_user("alice@acme.test", "Alice", "Doe", &[]);
    run(&s, ActionName::CreateUser, &alice).await;
    assert_eq!(s.app.successful_logins(), 1);
    s.app.expire_sessions();
    let out = run(&s, ActionName::DeleteUser, &alice).await;
    assert_eq!(out.status, ActionStatus::Done, "{:#?}", out.steps);
    assert!(s.app.user_by_email("alice@acme.test").is_none(), "deleted");
    assert_eq!(s.app.successful_logins(), 2);
    assert_eq!(s.app.failed_logins(), 0);
    let phases: Vec<_> = out.steps.iter().map(|r| r.phase).collect();
    let check = phases
        .iter()
        .position(|p| *p == playbook::Phase::SessionCheck)
        .expect("checked");
    let login = phases
        .iter()
        .position(|p| *p == playbook::Phase::Login)
        .expect("logged in");
    assert!(
        check < login,
        "checked after the first run, then logged in: {phases:?}"
    );
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// Evidence under `on_change`: a goto or form input directly followed by another form
/// input leaves its screenshot to the last input, which shows the filled form; the
/// submit and the page it leads to have their own, and every screenshot is a PNG. A
/// precondition takes none, but one of the page where it found the work done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_form_inputs_is_evidenced_once_filled() {
    let s = classic(FixtureOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RunOptions {
        evidence: Some(Arc::new(EvidenceStore::new(dir.path()).expect("store"))),
        ..RunOptions::default()
    };
    let carol = scim_user("carol@acme.test", "Carol", "Poe", &["Finance"]);
    let out = s
        .driver
        .run(&s.integ, ActionName::CreateUser, carol, &opts)
        .await
        .expect("create");
    let shots: Vec<(String, bool)> = out
        .steps
        .iter()
        .filter(|r| r.phase == playbook::Phase::Steps)
        .map(|r| (r.step.clone(), r.screenshot.is_some()))
        .collect();
    let taken = |prefix: &str| -> Vec<bool> {
        shots
            .iter()
            .filter(|(step, _)| step.starts_with(prefix))
            .map(|(_, shot)| *shot)
            .collect()
    };
    assert_eq!(taken("goto"), vec![false], "{shots:#?}");
    assert_eq!(
        taken("fill"),
        vec![false, false, false, false],
        "{shots:#?}"
    );
    assert_eq!(taken("select"), vec![true], "{shots:#?}");
    assert_eq!(taken("click"), vec![true], "{shots:#?}");
    // The read-back's goto is followed by no input: it keeps its screenshot.
    assert!(out.steps.iter().any(|r| r.phase == playbook::Phase::Verify
        && r.step.starts_with("goto")
        && r.screenshot.is_some()));
    // A precondition that finds work to do takes no screenshot on `on_change`.
    let pre = |out: &ActionOutcome| -> Vec<bool> {
        out.steps
            .iter()
            .filter(|r| r.phase == playbook::Phase::Precondition)
            .map(|r| r.screenshot.is_some())
            .collect()
    };
    let first = pre(&out);
    assert!(
        !first.is_empty() && first.iter().all(|shot| !shot),
        "{first:?}"
    );
    // One that finds it done takes one: the page it answered on, on its last record.
    let again = s
        .driver
        .run(
            &s.integ,
            ActionName::CreateUser,
            scim_user("carol@acme.test", "Carol", "Poe", &["Finance"]),
            &opts,
        )
        .await
        .expect("create again");
    assert_eq!(again.status, ActionStatus::AlreadyDone);
    let second = pre(&again);
    assert!(second.len() > 1, "{second:?}");
    assert_eq!(second.iter().filter(|shot| **shot).count(), 1, "{second:?}");
    assert_eq!(second.last(), Some(&true), "{second:?}");
    for r in out
        .steps
        .iter()
        .chain(&again.steps)
        .filter_map(|r| r.screenshot.as_ref())
    {
        let png = std::fs::read(dir.path().join(format!("{r}.png"))).expect("evidence file");
        assert!(png.starts_with(b"\x89PNG"));
    }
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// `sessions: { trust: 0s }` checks the session before every action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_zero_checks_before_every_action() {
    let text = std::fs::read_to_string(repo("playbooks/classic.yaml"))
        .expect("read")
        .replacen(
            "defaults: { timeout: 10s, screenshots: on_change }",
            "defaults: { timeout: 10s, screenshots: on_change }\nsessions: { trust: 0s }",
            1,
        );
    assert!(text.contains("trust: 0s"));
    let s = setup(
        AppKind::Classic,
        "playbooks/classic.yaml",
        Some(text),
        FixtureOptions::default(),
    )
    .await;
    let bob = scim_user("bob@acme.test", "Bob", "Roe", &[]);
    run(&s, ActionName::CreateUser, &bob).await;
    let out = run(&s, ActionName::UpdateUser, &bob).await;
    assert!(checked_session(&out), "checked before the action");
    assert_eq!(s.app.successful_logins(), 1);
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// An app that allows one session per account (a sign-in ends the others): a session
/// found ended runs its action once more in a logged-in one (and the pool learns to
/// keep one, see `playbook::sessions`); every action goes through without a refused
/// sign-in, and no sign-in ends the session in use again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_account_is_learnt_and_every_action_goes_through() {
    let s = classic(FixtureOptions {
        single_session: true,
        ..FixtureOptions::default()
    })
    .await;
    let users: Vec<UserContext> = (0..2)
        .map(|n| scim_user(&format!("one{n}@acme.test"), "One", &format!("N{n}"), &[]))
        .collect();
    // Two at once: the second session's sign-in ends the first one's session.
    let outs = run_all(&s, ActionName::CreateUser, &users).await;
    assert!(outs.iter().all(|o| o.status == ActionStatus::Done));
    for n in 0..2 {
        assert_eq!(
            truth(&s.app, &format!("one{n}@acme.test")).family_name,
            format!("N{n}")
        );
    }
    assert_eq!(s.app.failed_logins(), 0);
    // From now on one session serves every action: no more sign-ins.
    let logins = s.app.successful_logins();
    for u in &users {
        let out = run(&s, ActionName::DeactivateUser, u).await;
        assert_eq!(out.status, ActionStatus::Done);
    }
    assert!((0..2).all(|n| !truth(&s.app, &format!("one{n}@acme.test")).active));
    assert_eq!(s.app.successful_logins(), logins);
    assert_eq!(s.app.failed_logins(), 0);
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_selector_fails_with_position_locator_url_and_png() {
    let text = std::fs::read_to_string(repo("playbooks/classic.yaml")).expect("read");
    let from = "      - click: \"role=button[name='Send invite']\"";
    assert!(text.contains(from));
    let text = text.replace(from, "      - { click: \"#never-there\", timeout: 1s }");
    let line = text
        .lines()
        .position(|l| l.contains("#never-there"))
        .map(|i| i + 1)
        .expect("line");
    let s = setup(
        AppKind::Classic,
        "playbooks/classic-broken.yaml",
        Some(text),
        FixtureOptions::default(),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RunOptions {
        evidence: Some(Arc::new(EvidenceStore::new(dir.path()).expect("store"))),
        ..RunOptions::default()
    };
    let dave = scim_user("dave@acme.test", "Dave", "Moe", &[]);
    let err = match s
        .driver
        .run(&s.integ, ActionName::CreateUser, dave, &opts)
        .await
    {
        Err(DriverError::Run(e)) => e,
        other => panic!("expected a step failure, got {other:?}"),
    };
    let msg = err.to_string();
    eprintln!("{msg}");
    assert_eq!(
        err.step_file_line,
        format!("playbooks/classic-broken.yaml:{line}")
    );
    assert!(
        msg.starts_with(&format!(
            "playbooks/classic-broken.yaml:{line}: click #never-there: timed out after 1s"
        )),
        "{msg}"
    );
    assert_eq!(err.locator.as_deref(), Some("#never-there"));
    let url = err.url.clone().expect("url");
    assert!(url.ends_with("/admin/users/new"), "{url}");
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("0 matches"), "{msg}");
    let shot = err.screenshot_path.clone().expect("screenshot");
    let png = std::fs::read(&shot).expect("screenshot file");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(
        shot.file_name().and_then(|n| n.to_str()),
        Some(format!("{}.png", err.screenshot.as_deref().unwrap_or("")).as_str())
    );
    // The failed step is the last record, and on_change evidence was taken before it.
    let last = err.steps.last().expect("records");
    assert_eq!(last.line, line);
    assert!(matches!(last.outcome, playbook::StepOutcome::Failed { .. }));
    assert!(err.steps.iter().filter(|r| r.screenshot.is_some()).count() >= 3);
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

/// Collects formatted log lines in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime so the thread-local log capture sees every task.
#[tokio::test]
async fn secrets_never_reach_records_errors_or_logs() {
    const PASSWORD: &str = "Pw-7f3c!unique-secret-91";
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,chromiumoxide=info",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let text = std::fs::read_to_string(repo("playbooks/classic.yaml")).expect("read");
    // A step whose locator carries the password: its failure must not show it.
    let from = "      - click: \"role=button[name='Send invite']\"";
    let text = text.replace(
        from,
        "      - { click: \"#x-{{ secret.password }}\", timeout: 1s }",
    );
    let opts = FixtureOptions {
        admin_password: PASSWORD.into(),
        ..FixtureOptions::default()
    };
    let s = setup(AppKind::Classic, "playbooks/classic.yaml", Some(text), opts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ropts = RunOptions {
        evidence: Some(Arc::new(EvidenceStore::new(dir.path()).expect("store"))),
        ..RunOptions::default()
    };
    let ok = s
        .driver
        .run(
            &s.integ,
            ActionName::ListUsers,
            UserContext::default(),
            &ropts,
        )
        .await
        .expect("list_users after a login with the password");
    assert!(ok.steps.iter().any(|r| r.step == "fill #password"));
    let eve = scim_user("eve@acme.test", "Eve", "Loe", &[]);
    let err = match s
        .driver
        .run(&s.integ, ActionName::CreateUser, eve, &ropts)
        .await
    {
        Err(DriverError::Run(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    };
    let mut seen = vec![
        serde_json::to_string(&ok.steps).expect("json"),
        serde_json::to_string(&err.steps).expect("json"),
        serde_json::to_string(&err).expect("json"),
        err.to_string(),
        format!("{err:?}"),
    ];
    seen.push(String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned());
    for (i, text) in seen.iter().enumerate() {
        assert!(
            !text.contains(PASSWORD),
            "password leaked in item {i}: {text}"
        );
    }
    assert!(err.to_string().contains("[REDACTED]"), "{err}");
    assert!(!seen[5].is_empty(), "logs were captured");
    s.driver.shutdown().await.expect("shutdown");
    s.app.shutdown().await;
}

fn usher(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run usher");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_check_reports_every_mistake_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("five.yaml");
    std::fs::write(
        &bad,
        r#"app: Five mistakes
version: 1
login:
  - goto: "{{ base_url }}/login"
  - clik: "text=Sign in"
session_check:
  - expect: { url: "(unclosed" }
subroutines:
  open:
    - goto: "{{ base_url }"
actions:
  delete_user:
    steps:
      - goto: "{{ base_url }}/users"
      - call: opne
    verfy:
      - goto: "{{ base_url }}/users"
"#,
    )
    .expect("write");
    let path = bad.display().to_string();
    let (code, out, err) = usher(&["playbook", "check", &path]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}{err}");
    for (l, (line, what)) in lines.iter().zip([
        (5, "unknown step `clik` (did you mean `click`?)"),
        (7, "invalid regex"),
        (10, "template syntax error"),
        (15, "unknown subroutine `opne` (did you mean `open`?)"),
        (16, "unknown key `verfy`"),
    ]) {
        assert!(l.starts_with(&format!("{path}:{line}:")), "{l}");
        assert!(l.contains(what), "{l}");
    }

    let (code, out, err) = usher(&[
        "playbook",
        "check",
        "playbooks/classic.yaml",
        "playbooks/spa.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "playbooks/classic.yaml: ok\nplaybooks/spa.yaml: ok\n");

    let (code, out, _) = usher(&["playbook", "schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).expect("schema is JSON");
    assert!(schema.get("properties").is_some() || schema.get("$defs").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_runs_an_action_with_progress_and_json() {
    let opts = FixtureOptions {
        seed_users: seed_users(3),
        ..FixtureOptions::default()
    };
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let user = dir.path().join("user.json");
    std::fs::write(
        &user,
        r#"{"userName":"x@acme.test","emails":[{"value":"x@acme.test","primary":true}]}"#,
    )
    .expect("write");
    let secrets = dir.path().join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "username: {}\npassword: {}\ntotp: {}\n",
            opts.admin_username, opts.admin_password, opts.totp_seed
        ),
    )
    .expect("write");
    let base = app.base_url().to_owned();
    let user_arg = format!("@{}", user.display());
    let secrets_arg = format!("@{}", secrets.display());
    let ev = dir.path().join("evidence").display().to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        usher(&[
            "playbook",
            "run",
            "playbooks/classic.yaml",
            "list_users",
            "--base-url",
            &base,
            "--user",
            &user_arg,
            "--secrets",
            &secrets_arg,
            "--evidence",
            &ev,
        ])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.lines().any(|l| l.starts_with("  ok ")
            && l.contains("playbooks/classic.yaml:")
            && l.contains("goto http://")),
        "{err}"
    );
    assert!(!err.contains(&opts.admin_password), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["status"], "done");
    assert_eq!(json["records"].as_array().map(Vec::len), Some(3), "{out}");
    app.shutdown().await;
}
