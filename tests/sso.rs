//! Single sign-on through Usher (docs/sso.md), end to end: a real OpenID provider
//! (`oidc-provider`, started here), the real server with its engine and vault, the
//! classic fixture app, and real Chromium playing the person at the SSO host
//! `acme.localhost:PORT` (Chromium resolves `*.localhost` to the loopback address).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use support::{Db, TestDb, open_store};
use usher::browser::{Browser, BrowserConfig, Locator, Page};
use usher::store::Store;
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const OIDC_SECRET_ENV: &str = "USHER_TEST_OIDC_SECRET";
const OIDC_SECRET: &str = "usher-console-test-client-secret-0123";
const T: Duration = Duration::from_secs(20);
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loc(s: &str) -> Locator {
    Locator::parse(s).unwrap()
}

/// `oidc-provider` in Node on a loopback port; stopped when dropped.
struct Provider {
    child: std::process::Child,
}

impl Provider {
    fn start(port: u16, redirects: &[String]) -> Provider {
        use std::io::BufRead;
        let dir = repo().join("tests/node");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "run scripts/install-deps.sh (npm install in tests/node)"
        );
        let mut child = std::process::Command::new("node")
            .arg("oidc-provider.mjs")
            .arg(port.to_string())
            .arg(redirects.join(","))
            .arg(OIDC_SECRET)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "provider said {line:?}");
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Provider { child }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app behind the SSO host: its integration id, playbook, base URL and service
/// account.
struct Target {
    id: &'static str,
    playbook: &'static str,
    base_url: String,
    service_account: Secret,
}

struct Sso {
    id: &'static str,
    app: Option<RunningApp>,
    running: Option<usher::server::Running>,
    vault: Vault,
    _db: TestDb,
    _evidence: tempfile::TempDir,
    _provider: Provider,
    token: String,
    base: String,
    /// `http://acme.localhost:PORT`
    sso: String,
}

impl Sso {
    async fn start(db: Db) -> Sso {
        let opts = FixtureOptions::default();
        let app = RunningApp::start(AppKind::Classic, opts.clone())
            .await
            .unwrap();
        let secret = Secret::new(
            opts.admin_username.clone(),
            opts.admin_password.clone(),
            Some(&opts.totp_seed),
        )
        .unwrap();
        let target = Target {
            id: "acme",
            playbook: "playbooks/classic.yaml",
            base_url: app.base_url().to_owned(),
            service_account: secret,
        };
        let mut s = Sso::start_for(db, target).await;
        s.app = Some(app);
        s
    }

    async fn start_for(db: Db, target: Target) -> Sso {
        let db = TestDb::new(db).await;
        let store = open_store(&db.url).await;
        let vault = Vault::new(store, Keyring::new(VaultKey::generate()));
        vault
            .set("svc-admin", &target.service_account)
            .await
            .unwrap();

        let (port, provider_port) = (free_port(), free_port());
        let sso = format!("http://{}.localhost:{port}", target.id);
        let provider = Provider::start(provider_port, &[format!("{sso}/.usher/sso/callback")]);
        // Every test sets the same value: the process environment is shared.
        unsafe { std::env::set_var(OIDC_SECRET_ENV, OIDC_SECRET) };
        let token = format!("sso-test-{}", uuid::Uuid::new_v4().simple());
        let evidence = tempfile::tempdir().unwrap();
        let text = format!(
            "listen: 127.0.0.1:{port}\ndatabase: {db}\nengine:\n  workers: 2\n  lease: 10s\n  max_attempts: 2\n  backoff_base: 200ms\n  backoff_max: 1s\n  poll: 200ms\n  evidence_dir: {ev}\n\
console:\n  oidc:\n    issuer: http://127.0.0.1:{provider_port}\n    client_id: usher-console\n    client_secret_env: {OIDC_SECRET_ENV}\n    scopes: [openid, email, profile]\n    roles_claim: groups\n    role_map:\n      usher-admins: admin\n\
integrations:\n  - id: {id}\n    name: Acme\n    app: Acme Admin\n    playbook: {playbook}\n    base_url: {base}\n    service_account: svc-admin\n    scim_token_sha256: {hash}\n    sso:\n      host: {id}.localhost:{port}\n",
            db = db.url,
            ev = evidence.path().display(),
            id = target.id,
            playbook = target.playbook,
            base = target.base_url,
            hash = hex::encode(usher::config::hash_token(&token)),
        );
        let config = usher::config::Config::parse("sso-test.yaml", &text).unwrap();
        let running = usher::server::start_with(
            &config,
            format!("127.0.0.1:{port}").parse().unwrap(),
            Some(usher::server::EngineSetup {
                config_dir: repo(),
                secrets: usher::engine::Secrets::Vault(vault.clone()),
                driver: usher::playbook::DriverConfig::default(),
            }),
        )
        .await
        .unwrap();
        Sso {
            id: target.id,
            base: format!("http://{}", running.addr),
            app: None,
            running: Some(running),
            vault,
            _db: db,
            _evidence: evidence,
            _provider: provider,
            token,
            sso,
        }
    }

    fn app(&self) -> &RunningApp {
        self.app.as_ref().unwrap()
    }

    fn store(&self) -> &Store {
        &self.running.as_ref().unwrap().store
    }

    async fn scim(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, format!("{}/scim/v2/{}{path}", self.base, self.id))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A joiner through SCIM, provisioned: the user's id.
    async fn joiner(&self, email: &str, given: &str, family: &str) -> String {
        let r = self
            .scim(
                reqwest::Method::POST,
                "/Users",
                serde_json::json!({
                    "schemas": [USER_SCHEMA],
                    "userName": email,
                    "name": {"givenName": given, "familyName": family},
                    "emails": [{"primary": true, "value": email, "type": "work"}],
                    "active": true
                }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: serde_json::Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        for _ in 0..600 {
            let jobs = self
                .store()
                .list_jobs(&usher::store::JobFilter {
                    resource_id: Some(&id),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            if !jobs.is_empty() && jobs.iter().all(|j| j.is_terminal()) {
                let u = self
                    .store()
                    .get_resource(self.id, usher::store::ResourceType::User, &id)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(u.provisioning.state, "provisioned", "{:?}", u.provisioning);
                return id;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("jobs of {id} did not end");
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// At the provider's login page (the person was sent there): signs `login` in.
async fn provider_sign_in(page: &Page, login: &str) {
    page.fill(&loc("input[name=login]"), login, T)
        .await
        .unwrap();
    page.fill(&loc("input[name=password]"), "any password", T)
        .await
        .unwrap();
    page.click(&loc("button[type=submit]"), T).await.unwrap();
}

async fn html_of(page: &Page) -> String {
    page.evaluate("document.documentElement.outerHTML", T)
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn sso_end_to_end(db: Db) {
    let s = Sso::start(db).await;
    let alice = s.joiner("alice@example.test", "Alice", "Liddell").await;

    // The password the app got for Alice is the one the vault keeps for her.
    let entry = usher::engine::user_entry("acme", &alice);
    let kept = s.vault.get(&entry).await.unwrap();
    let password = kept.password.expose_secret().to_owned();
    assert!(password.chars().count() >= 24);
    assert_eq!(
        s.app().user_password("alice@example.test").as_deref(),
        Some(password.as_str())
    );

    let browser = Browser::launch(BrowserConfig::default()).await.unwrap();
    let ctx = browser.new_context().await.unwrap();
    let page = ctx.page();

    // Opening the app sends Alice to the provider, and back, signed in as herself.
    page.goto(&format!("{}/me", s.sso), T).await.unwrap();
    provider_sign_in(page, "alice").await;
    page.expect_url("^http://acme\\.localhost:\\d+/me$", T)
        .await
        .unwrap();
    assert_eq!(
        page.text(&loc("#me-name"), T).await.unwrap(),
        "Alice Liddell"
    );
    assert_eq!(s.app().member_logins(), 1);

    // She uses it: a form goes through to the app.
    page.fill(&loc("#note"), "lunch at noon", T).await.unwrap();
    page.click(&loc("role=button[name='Save note']"), T)
        .await
        .unwrap();
    page.expect_text(None, "Note saved", T).await.unwrap();
    assert_eq!(
        s.app().user_notes("alice@example.test"),
        vec!["lunch at noon".to_string()]
    );

    // A WebSocket passes through to the app, signed in as her.
    let echo = page
        .evaluate(
            "new Promise((res, rej) => { const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/me/echo'); ws.onopen = () => ws.send('hi'); ws.onmessage = e => { res(e.data); ws.close(); }; ws.onerror = () => rej('WebSocket error'); setTimeout(() => rej('timeout'), 10000); })",
            T,
        )
        .await
        .unwrap();
    assert_eq!(echo, serde_json::json!("Alice: hi"));

    // The browser holds Usher's SSO cookie only, never the app's; no page shows the password.
    let jar = ctx.cookies().await.unwrap();
    let names: Vec<&str> = jar.cookies.iter().map(|c| c.name.as_str()).collect();
    assert!(!names.contains(&"_acme_admin_session"), "{names:?}");
    let sso_cookie = jar
        .cookies
        .iter()
        .find(|c| c.name == "usher_sso")
        .expect("SSO cookie");
    assert!(sso_cookie.http_only);
    assert_eq!(sso_cookie.same_site.as_deref(), Some("Lax"));
    assert_eq!(sso_cookie.domain, "acme.localhost", "host-only");
    assert!(!html_of(page).await.contains(&password));

    // The app ends her session: the next request signs her in again, unseen.
    assert!(s.app().end_user_sessions("alice@example.test") >= 1);
    page.goto(&format!("{}/me", s.sso), T).await.unwrap();
    page.expect_url("/me$", T).await.unwrap();
    assert_eq!(
        page.text(&loc("#me-name"), T).await.unwrap(),
        "Alice Liddell"
    );
    assert_eq!(s.app().member_logins(), 2);
    assert_eq!(s.app().user_notes("alice@example.test").len(), 1);

    // Signing out of the app ends the SSO session too; coming back signs in afresh.
    page.click(&loc("role=button[name='Sign out']"), T)
        .await
        .unwrap();
    page.expect_text(Some(&loc("#sso-title")), "Signed out", T)
        .await
        .unwrap();
    let jar = ctx.cookies().await.unwrap();
    assert!(
        jar.cookies.iter().all(|c| c.name != "usher_sso"),
        "SSO cookie removed"
    );
    page.goto(&format!("{}/me", s.sso), T).await.unwrap();
    for _ in 0..100 {
        if page.url().await.unwrap().ends_with("/me") {
            break;
        }
        if page
            .exists_now(&loc("input[name=login]"))
            .await
            .unwrap_or(false)
        {
            provider_sign_in(page, "alice").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.expect_url("^http://acme\\.localhost:\\d+/me$", T)
        .await
        .unwrap();
    assert_eq!(
        page.text(&loc("#me-name"), T).await.unwrap(),
        "Alice Liddell"
    );

    // Rotation: the person's password changes in the app and in the vault, and SSO
    // keeps working with the new one.
    let engine = s.running.as_ref().unwrap().engine.as_ref().unwrap();
    let rotation = engine
        .sso_login()
        .rotate_password("acme", &alice)
        .await
        .unwrap();
    assert!(rotation.recovered_from.is_none());
    let rotated = s.vault.get(&entry).await.unwrap();
    let rotated_pw = rotated.password.expose_secret().to_owned();
    assert_ne!(rotated_pw, password);
    assert!(rotated.pending_password.is_none());
    assert_eq!(
        s.app().user_password("alice@example.test").as_deref(),
        Some(rotated_pw.as_str())
    );
    assert!(s.app().end_user_sessions("alice@example.test") >= 1);
    page.goto(&format!("{}/me", s.sso), T).await.unwrap();
    page.expect_url("/me$", T).await.unwrap();
    assert_eq!(
        page.text(&loc("#me-name"), T).await.unwrap(),
        "Alice Liddell"
    );

    // A crash between the app's change and the vault record: the vault has the new
    // password as pending only; the next sign-in finds it is the app's and records it.
    let crashed = usher::engine::generate_password();
    s.vault.begin_rotation(&entry, &crashed).await.unwrap();
    assert!(
        s.app()
            .set_user_password("alice@example.test", crashed.expose_secret())
    );
    assert!(s.app().end_user_sessions("alice@example.test") >= 1);
    // The old password is tried first and refused (the sign-in step waits for it).
    let slow = Duration::from_secs(60);
    page.goto(&format!("{}/me", s.sso), slow).await.unwrap();
    page.expect_url("/me$", T).await.unwrap();
    assert_eq!(
        page.text(&loc("#me-name"), T).await.unwrap(),
        "Alice Liddell"
    );
    let settled = s.vault.get(&entry).await.unwrap();
    assert_eq!(settled.password.expose_secret(), crashed.expose_secret());
    assert!(settled.pending_password.is_none());

    let before_eve = s.app().member_logins();

    // Someone who is not a user of the integration is refused, with the reason.
    let eve_ctx = browser.new_context().await.unwrap();
    let eve = eve_ctx.page();
    eve.goto(&format!("{}/me", s.sso), T).await.unwrap();
    provider_sign_in(eve, "eve").await;
    eve.expect_text(Some(&loc("#sso-title")), "Access refused", T)
        .await
        .unwrap();
    let why = eve.text(&loc("#sso-reason"), T).await.unwrap();
    assert!(
        why.contains("eve@example.test is not a user of Acme"),
        "{why}"
    );
    assert_eq!(
        s.app().member_logins(),
        before_eve,
        "Eve never reached the app"
    );

    // An account created before single sign-on (Usher holds no password for it):
    // the first sign-in has the admin set one in the app, then signs in with it.
    let olivia = s.joiner("olivia@example.test", "Olivia", "Owner").await;
    let olivia_entry = usher::engine::user_entry("acme", &olivia);
    assert!(s.vault.remove(&olivia_entry).await.unwrap());
    let before = s.app().user_password("olivia@example.test");
    let olivia_ctx = browser.new_context().await.unwrap();
    let o = olivia_ctx.page();
    o.goto(&format!("{}/me", s.sso), T).await.unwrap();
    provider_sign_in(o, "olivia").await;
    o.expect_url("/me$", Duration::from_secs(60)).await.unwrap();
    assert_eq!(o.text(&loc("#me-name"), T).await.unwrap(), "Olivia Owner");
    let given = s.vault.get(&olivia_entry).await.unwrap();
    assert_eq!(
        s.app().user_password("olivia@example.test").as_deref(),
        Some(given.password.expose_secret())
    );
    assert_ne!(before.as_deref(), Some(given.password.expose_secret()));

    // A leaver: after the SCIM deactivation, her very next request is refused.
    let r = s
        .scim(
            reqwest::Method::PATCH,
            &format!("/Users/{alice}"),
            serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            }),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    page.goto(&format!("{}/me", s.sso), T).await.unwrap();
    page.expect_text(Some(&loc("#sso-title")), "Access refused", T)
        .await
        .unwrap();
    let why = page.text(&loc("#sso-reason"), T).await.unwrap();
    assert!(why.contains("has ended"), "{why}");

    // The audit trail tells it, with the person as actor, and never the password.
    let events = s.store().audit_events(Some("acme"), 500).await.unwrap();
    let of = |kind: &str| events.iter().filter(|e| e.event_type == kind).count();
    assert_eq!(of("sso.sign_in"), 3);
    assert_eq!(of("sso.sign_out"), 1);
    assert_eq!(
        of("sso.app_login") as u64,
        s.app().member_logins(),
        "each app sign-in audited"
    );
    assert_eq!(of("sso.app_login"), 6);
    assert_eq!(of("sso.password_rotated"), 2);
    assert_eq!(of("sso.refused"), 1, "Eve");
    assert_eq!(of("sso.forced_sign_out"), 1, "Alice, the leaver");
    assert!(
        events
            .iter()
            .filter(|e| e.event_type.starts_with("sso.") && e.event_type != "sso.password_rotated")
            .all(|e| e.actor.starts_with("person:"))
    );
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    for pw in [&password, &rotated_pw, &crashed.expose_secret().to_owned()] {
        assert!(!all.contains(pw.as_str()));
    }

    drop(ctx);
    drop(eve_ctx);
    drop(olivia_ctx);
    browser.close().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_signs_people_in_with_credentials_usher_holds_sqlite() {
    sso_end_to_end(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_signs_people_in_with_credentials_usher_holds_postgres() {
    sso_end_to_end(Db::Postgres).await;
}

#[path = "support/dokuwiki.rs"]
mod dokuwiki;

/// The same flow against the real DokuWiki the other tests run. Its accounts are
/// created with a password DokuWiki mails (the playbook's create_user sets none), so the
/// first SSO sign-in has the admin set one (`set_user_password`); the person then reads
/// and edits a page as themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_signs_people_in_to_a_real_dokuwiki() {
    let wiki = dokuwiki::DokuWiki::start().await.expect("DokuWiki starts");
    let s = Sso::start_for(
        Db::Sqlite,
        Target {
            id: "wiki",
            playbook: "playbooks/dokuwiki.yaml",
            base_url: wiki.base_url.clone(),
            service_account: Secret::new(
                wiki.admin_user.clone(),
                wiki.admin_password.clone(),
                None,
            )
            .unwrap(),
        },
    )
    .await;
    let alice = s.joiner("alice@example.test", "Alice", "Liddell").await;
    assert!(wiki.users().unwrap().iter().any(|u| u.login == "alice"));
    let entry = usher::engine::user_entry("wiki", &alice);
    assert!(
        s.vault.get(&entry).await.is_err(),
        "no password kept: DokuWiki mailed its own"
    );

    let browser = Browser::launch(BrowserConfig::default()).await.unwrap();
    let ctx = browser.new_context().await.unwrap();
    let page = ctx.page();
    page.goto(&format!("{}/doku.php?id=start", s.sso), T)
        .await
        .unwrap();
    provider_sign_in(page, "alice").await;
    page.expect_url(
        "^http://wiki\\.localhost:\\d+/doku\\.php\\?id=start$",
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    // Signed in as herself: DokuWiki names her and offers to log out.
    page.expect_visible(&loc("li.action.logout"), T)
        .await
        .unwrap();
    page.expect_text(Some(&loc(".user")), "Alice Liddell", T)
        .await
        .unwrap();
    let password = s
        .vault
        .get(&entry)
        .await
        .unwrap()
        .password
        .expose_secret()
        .to_owned();

    // She edits a page: the form goes through DokuWiki's own checks (its security token).
    page.goto(&format!("{}/doku.php?id=playground:sso&do=edit", s.sso), T)
        .await
        .unwrap();
    page.fill(
        &loc("#wiki__text"),
        "Written through Usher single sign-on.",
        T,
    )
    .await
    .unwrap();
    page.click(&loc("button[name='do[save]']"), T)
        .await
        .unwrap();
    page.expect_text(None, "Written through Usher single sign-on.", T)
        .await
        .unwrap();
    let jar = ctx.cookies().await.unwrap();
    // (The provider's own cookies are on its host.) None of DokuWiki's.
    let names: Vec<&str> = jar.cookies.iter().map(|c| c.name.as_str()).collect();
    assert!(
        jar.cookies
            .iter()
            .filter(|c| c.domain == "wiki.localhost")
            .all(|c| c.name == "usher_sso"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("DokuWiki") && !n.starts_with("DW")),
        "{names:?}"
    );
    assert!(!html_of(page).await.contains(&password));

    drop(ctx);
    browser.close().await.unwrap();
    s.stop().await;
}
