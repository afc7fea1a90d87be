//! The admin console end to end (issue 12), on SQLite and PostgreSQL: sessions and the
//! break-glass account over plain HTTP; sign-in through a real OpenID provider
//! (`oidc-provider`, started here; `scripts/install-deps.sh` installs it) in real
//! headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[macro_use]
mod support;

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use support::{Db, TestDb, TestServer, integration};
use usher::audit::{Actor, NewEvent};
use usher::browser::{Browser, BrowserConfig, BrowserContext, Locator, Page};
use usher::clock::Clock;
use usher::store::{NewSession, Store};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const PASSWORD: &str = "correct horse battery staple";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a Set-Cookie header for `name`, and the whole header.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?.trim();
        (pair.split_once('=')?.0 == name).then(|| (pair.to_owned(), v.to_owned()))
    })
}

/// The value of a hidden input in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Sets the break-glass password through the real CLI, as an operator would.
fn set_password_with_cli(db_url: &str, password: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        format!("database: {db_url}\nconsole:\n  break_glass: true\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["admin", "set-password", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

struct LocalSignIn {
    cookie: String,
}

/// Opens the sign-in page (its login cookie and token) and posts the form.
async fn post_sign_in(
    server: &TestServer,
    client: &reqwest::Client,
    name: &str,
    password: &str,
) -> reqwest::Response {
    let base = format!("http://{}", server.addr);
    let page = client
        .get(format!("{base}/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (login, _) = set_cookie(&page, "usher_login").expect("login cookie");
    let html = page.text().await.unwrap();
    let token = hidden(&html, "login_token");
    client
        .post(format!("{base}/console/sign-in"))
        .header("cookie", login)
        .form(&[
            ("name", name),
            ("password", password),
            ("login_token", token.as_str()),
            ("next", "/console/"),
        ])
        .send()
        .await
        .unwrap()
}

async fn sign_in_local(server: &TestServer, client: &reqwest::Client) -> LocalSignIn {
    let resp = post_sign_in(server, client, "admin", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (cookie, header) = set_cookie(&resp, "usher_session").expect("session cookie");
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Lax"), "{header}");
    assert!(header.contains("Path=/"), "{header}");
    // Plain HTTP here: Secure would make the browser drop it.
    assert!(!header.contains("Secure"), "{header}");
    LocalSignIn { cookie }
}

async fn break_glass_sessions_csrf_and_rate_limit(db: Db) {
    let server = TestServer::start_with(
        db,
        vec![integration("app1")],
        "console:\n  break_glass: true\n  sign_in_attempts: 3\n",
    )
    .await;
    let out = set_password_with_cli(&server.db.url, PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A short password is refused in one plain line, and nothing changes.
    let short = set_password_with_cli(&server.db.url, "short");
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("shorter than 12"), "{err}");

    let c = no_redirects();
    let base = format!("http://{}", server.addr);

    // No session: the console sends to sign-in, keeping where one was going.
    let r = c.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in?next=%2Fconsole%2F");

    // A form not opened in this browser (no login cookie) is refused.
    let r = c
        .post(format!("{base}/console/sign-in"))
        .form(&[
            ("name", "admin"),
            ("password", PASSWORD),
            ("login_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A wrong password: refused, and audited.
    let r = post_sign_in(&server, &c, "admin", "not the password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("Wrong name or password"));

    let s = sign_in_local(&server, &c).await;
    let page = c
        .get(format!("{base}/console/"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Break-glass admin"), "{html}");
    let csrf = hidden(&html, "_csrf");

    // State-changing requests without this session's CSRF token: 403, nothing happens.
    for token in [None, Some("forged")] {
        let mut req = c
            .post(format!("{base}/console/sign-out"))
            .header("cookie", &s.cookie);
        if let Some(t) = token {
            req = req.form(&[("_csrf", t)]);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "token {token:?}");
    }
    let still = c
        .get(format!("{base}/console/"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    // With it (header form, as the API and htmx send it): signed out.
    let r = c
        .post(format!("{base}/console/sign-out"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The signed-out session's cookie is refused from now on.
    let r = c
        .get(format!("{base}/console/"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/console/sign-in")
    );

    // Two more failures reach the limit of 3: then even the right password waits.
    for _ in 0..2 {
        let r = post_sign_in(&server, &c, "admin", "wrong again").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = post_sign_in(&server, &c, "admin", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    let events = server.store().audit_events(None, 100).await.unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.event_type.starts_with("console."))
        .map(|e| (e.event_type.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("console.password_set", kinds[0].1),
            ("console.sign_in_refused", "system"),
            ("console.sign_in", "admin:console:local:admin"),
            ("console.sign_out", "admin:console:local:admin"),
            ("console.sign_in_refused", "system"),
            ("console.sign_in_refused", "system"),
        ]
    );
    assert!(kinds[0].1.starts_with("admin:cli:"), "{kinds:?}");
    // No password nor hash in the trail.
    let trail = serde_json::to_string(&events.iter().map(|e| e.detail.clone()).collect::<Vec<_>>())
        .unwrap();
    assert!(
        !trail.contains(PASSWORD) && !trail.contains("argon2"),
        "{trail}"
    );
    server.stop().await;
}

/// Behind HTTPS (the public URL says so) the session cookie is Secure with the
/// `__Host-` prefix; the plain name is not accepted there.
async fn https_public_url_makes_cookies_secure(db: Db) {
    let server = TestServer::start_with(
        db,
        vec![integration("app1")],
        "public_url: https://usher.example.test\nconsole:\n  break_glass: true\n",
    )
    .await;
    assert!(
        set_password_with_cli(&server.db.url, PASSWORD)
            .status
            .success()
    );
    let c = no_redirects();
    let r = post_sign_in(&server, &c, "admin", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (cookie, header) = set_cookie(&r, "__Host-usher_session").expect("__Host- cookie");
    assert!(
        header.contains("Secure") && header.contains("HttpOnly"),
        "{header}"
    );
    assert!(
        header.contains("SameSite=Lax") && header.contains("Path=/"),
        "{header}"
    );
    assert!(!header.contains("Domain"), "{header}");
    let ok = c
        .get(format!("http://{}/api/v1/me", server.addr))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let plain = cookie.replacen("__Host-", "", 1);
    let r = c
        .get(format!("http://{}/api/v1/me", server.addr))
        .header("cookie", plain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// Sessions live in the database: a second node on it honours a sign-in made on the
/// first, and a sign-out on the second ends it for both.
async fn sessions_are_shared_between_nodes(db: Db) {
    let extra = "console:\n  break_glass: true\n";
    let server = TestServer::start_with(db, vec![integration("app1")], extra).await;
    assert!(
        set_password_with_cli(&server.db.url, PASSWORD)
            .status
            .success()
    );
    let config = usher::config::Config::parse(
        "second.yaml",
        &support::config_text(&server.db.url, &server.integrations, extra),
    )
    .unwrap();
    let second = usher::server::start(&config).await.unwrap();
    let c = no_redirects();
    let s = sign_in_local(&server, &c).await;
    let me = |addr: std::net::SocketAddr| {
        c.get(format!("http://{addr}/api/v1/me"))
            .header("cookie", &s.cookie)
            .send()
    };
    let r = me(second.addr).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A live Activity stream on the first node, carrying the trail so far.
    let mut stream = c
        .get(format!(
            "http://{}/console/events/stream?after=0",
            server.addr
        ))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let first = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.starts_with("event: audit\ndata: {"), "{first}");
    let csrf = r.json::<serde_json::Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .post(format!("http://{}/console/sign-out", second.addr))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        me(server.addr).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The stream ends with the session.
    tokio::time::timeout(Duration::from_secs(20), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await
    .expect("the stream ends after sign-out");
    second.shutdown().await.unwrap();
    server.stop().await;
}

/// The break-glass account is off unless configured, even with a password set.
async fn break_glass_is_off_unless_configured(db: Db) {
    let server = TestServer::start_with(db, vec![integration("app1")], "").await;
    assert!(
        set_password_with_cli(&server.db.url, PASSWORD)
            .status
            .success()
    );
    let c = no_redirects();
    let base = format!("http://{}", server.addr);
    let page = c
        .get(format!("{base}/console/sign-in"))
        .send()
        .await
        .unwrap();
    let (login, _) = set_cookie(&page, "usher_login").unwrap();
    let html = page.text().await.unwrap();
    assert!(!html.contains("password"), "no password form: {html}");
    assert!(html.contains("No way to sign in is configured"), "{html}");
    // Even a hand-made post with a bound login token gets no session.
    let token = login.split_once('=').unwrap().1.to_owned();
    let r = c
        .post(format!("{base}/console/sign-in"))
        .header("cookie", &login)
        .form(&[
            ("name", "admin"),
            ("password", PASSWORD),
            ("login_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&r, "usher_session").is_none());
    server.stop().await;
}

struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(d).unwrap();
    }
}

async fn session(store: &Store, id: &str) {
    store
        .create_session(
            &NewSession {
                id_hash: id,
                person: "console:t@example.test",
                display_name: "T",
                role: "admin",
                csrf_token: "c",
            },
            Duration::from_secs(7200),
            &NewEvent {
                actor: Actor::Admin("console:t@example.test".into()),
                event_type: usher::audit::kinds::CONSOLE_SIGN_IN,
                target: None,
                integration_id: None,
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
}

/// Idle and absolute timeouts, measured by the store's clock.
async fn session_timeouts(db: Db) {
    let tdb = TestDb::new(db).await;
    let start: DateTime<Utc> = "2026-01-05T09:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock(Mutex::new(start)));
    let store = Store::connect(&tdb.url, clock.clone()).await.unwrap();
    let idle = Duration::from_secs(600);
    let absolute = Duration::from_secs(3600);
    let min = Duration::from_secs(60);

    session(&store, "idle").await;
    clock.advance(9 * min);
    assert!(
        store
            .live_session("idle", idle, absolute)
            .await
            .unwrap()
            .is_some()
    );
    // Use kept it alive: another 9 minutes is still inside the idle timeout.
    clock.advance(9 * min);
    assert!(
        store
            .live_session("idle", idle, absolute)
            .await
            .unwrap()
            .is_some()
    );
    clock.advance(11 * min);
    assert!(
        store
            .live_session("idle", idle, absolute)
            .await
            .unwrap()
            .is_none()
    );

    session(&store, "busy").await;
    for _ in 0..11 {
        clock.advance(5 * min);
        assert!(
            store
                .live_session("busy", idle, absolute)
                .await
                .unwrap()
                .is_some()
        );
    }
    clock.advance(6 * min);
    assert!(
        store
            .live_session("busy", idle, absolute)
            .await
            .unwrap()
            .is_none(),
        "an hour after sign-in the session is over however busy"
    );
    // Sessions past forgetting are deleted at the next sign-in.
    clock.advance(Duration::from_secs(7200));
    session(&store, "later").await;
    let year = Duration::from_secs(365 * 86_400);
    assert!(
        store
            .live_session("idle", year, year)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .live_session("later", year, year)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .live_session("unknown", idle, absolute)
            .await
            .unwrap()
            .is_none()
    );
    store.close().await;
}

// ---- The real OpenID provider and real Chromium -------------------------------------

const OIDC_SECRET_ENV: &str = "USHER_TEST_OIDC_SECRET";
const OIDC_SECRET: &str = "usher-console-test-client-secret-0123";
const T: Duration = Duration::from_secs(20);

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

/// `oidc-provider` in Node on a loopback port; stopped when dropped.
struct Provider {
    child: std::process::Child,
}

impl Provider {
    fn start(port: u16, redirect: &str) -> Provider {
        use std::io::BufRead;
        let dir = repo().join("tests/node");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "run scripts/install-deps.sh (npm install in tests/node)"
        );
        let mut child = std::process::Command::new("node")
            .arg("oidc-provider.mjs")
            .arg(port.to_string())
            .arg(redirect)
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
        // Keep reading: the provider logs, and a closed pipe would stop it (EPIPE).
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

fn oidc_config(port: u16) -> String {
    // Every test sets the same value: the process environment is shared.
    unsafe { std::env::set_var(OIDC_SECRET_ENV, OIDC_SECRET) };
    format!(
        "console:\n  oidc:\n    issuer: http://127.0.0.1:{port}\n    client_id: usher-console\n    client_secret_env: {OIDC_SECRET_ENV}\n    scopes: [openid, email, profile, groups]\n    roles_claim: groups\n    role_map:\n      usher-owners: owner\n      usher-admins: admin\n      usher-auditors: auditor\n"
    )
}

fn loc(s: &str) -> Locator {
    Locator::parse(s).unwrap()
}

/// Signs `login` in through the provider's login page, from the console's sign-in page.
async fn oidc_sign_in(page: &Page, base: &str, login: &str) {
    oidc_sign_in_at(page, base, "/console/", login).await;
}

/// The same, beginning at `path`: the console sends to sign-in and back there after.
async fn oidc_sign_in_at(page: &Page, base: &str, path: &str, login: &str) {
    page.goto(&format!("{base}{path}"), T).await.unwrap();
    page.expect_url("/console/sign-in", T).await.unwrap();
    page.click(&loc("text=Sign in with your company account"), T)
        .await
        .unwrap();
    page.fill(&loc("input[name=login]"), login, T)
        .await
        .unwrap();
    page.fill(&loc("input[name=password]"), "any password", T)
        .await
        .unwrap();
    page.click(&loc("button[type=submit]"), T).await.unwrap();
}

/// The session cookie Chromium holds for the console, as a Cookie header.
async fn session_cookie(ctx: &BrowserContext) -> String {
    let state = ctx.cookies().await.unwrap();
    let c = state
        .cookies
        .iter()
        .find(|c| c.name == "usher_session")
        .expect("session cookie in the browser");
    assert!(c.http_only, "HttpOnly");
    assert_eq!(c.same_site.as_deref(), Some("Lax"));
    format!("{}={}", c.name, c.value)
}

/// axe-core in the page: no serious or critical violation.
async fn assert_accessible(page: &Page, what: &str) {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let axe = AXE.get_or_init(|| {
        std::fs::read_to_string(repo().join("tests/node/node_modules/axe-core/axe.min.js"))
            .expect("axe-core (scripts/install-deps.sh)")
    });
    page.evaluate(axe, T).await.unwrap();
    let v = page
        .evaluate(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', ')))",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!([]), "axe on {what}");
}

/// Refusals and roles through the real provider: no role, auditor read-only, and what
/// needs a session.
async fn oidc_roles_and_refusals(db: Db) {
    let port = free_port();
    let server = TestServer::start_with(db, vec![integration("app1")], &oidc_config(port)).await;
    let base = format!("http://{}", server.addr);
    let _provider = Provider::start(port, &format!("{base}/console/oidc/callback"));
    let c = no_redirects();

    // Without a session: the API says 401, evidence is not served, pages send to sign-in.
    for path in [
        "/api/v1/integrations",
        "/api/v1/audit/events",
        &format!("/api/v1/evidence/{}", "a".repeat(64)),
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c
        .post(format!("{base}/api/v1/jobs/1/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let browser = Browser::launch(BrowserConfig::default()).await.unwrap();

    // A person whose groups map to no role is refused, with the reason on the page.
    let ctx = browser.new_context().await.unwrap();
    ctx.page()
        .goto(&format!("{base}/console/sign-in"), T)
        .await
        .unwrap();
    assert_accessible(ctx.page(), "the sign-in page").await;
    oidc_sign_in(ctx.page(), &base, "eve").await;
    ctx.page()
        .expect_text(None, "has no Usher role", T)
        .await
        .unwrap();
    assert_accessible(ctx.page(), "the refusal page").await;
    assert!(
        ctx.cookies()
            .await
            .unwrap()
            .cookies
            .iter()
            .all(|c| c.name != "usher_session")
    );
    ctx.close().await.unwrap();

    // An auditor reads activity, and nothing else.
    let ctx = browser.new_context().await.unwrap();
    let page = ctx.page();
    oidc_sign_in_at(
        page,
        &base,
        "/console/activity?event_type=console.sign_in",
        "aud",
    )
    .await;
    // Back at the page first asked for, filter and all.
    page.expect_url("/console/activity\\?event_type=console.sign_in$", T)
        .await
        .unwrap();
    page.expect_text(None, "Audrey Auditor (auditor)", T)
        .await
        .unwrap();
    assert_accessible(page, "the auditor's activity page").await;
    let cookie = session_cookie(&ctx).await;
    let me: serde_json::Value = c
        .get(format!("{base}/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "auditor");
    assert_eq!(me["person"], "console:aud@example.test");
    let csrf = me["csrf_token"].as_str().unwrap().to_owned();
    let r = c
        .get(format!("{base}/api/v1/integrations"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // With a valid CSRF token the auditor still cannot retry.
    let r = c
        .post(format!("{base}/api/v1/jobs/1/retry"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("auditor"));
    let r = c
        .get(format!("{base}/console/integrations/app1/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The API's POST without the CSRF token: 403.
    let r = c
        .post(format!("{base}/api/v1/audit/verify"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(format!("{base}/api/v1/audit/verify"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["intact"], true, "{v}");
    ctx.close().await.unwrap();
    browser.close().await.unwrap();

    let events = server.store().audit_events(None, 100).await.unwrap();
    let refused = events
        .iter()
        .find(|e| e.event_type == "console.sign_in_refused")
        .unwrap();
    assert_eq!(refused.target.as_deref(), Some("console:eve@example.test"));
    assert!(
        events.iter().any(
            |e| e.event_type == "audit.verified" && e.actor == "admin:console:aud@example.test"
        )
    );
    server.stop().await;
}

// ---- The admin's journey: engine, fixture app, provider, Chromium ------------------------

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

fn scim_user(local: &str) -> serde_json::Value {
    serde_json::json!({
        "schemas": [USER_SCHEMA],
        "userName": format!("{local}@okta.example"),
        "name": {"givenName": "Grace", "familyName": local},
        "emails": [{"primary": true, "value": format!("{local}@okta.example"), "type": "work"}],
        "displayName": format!("Grace {local}"),
        "active": true
    })
}

struct Journey {
    app: RunningApp,
    running: Option<usher::server::Running>,
    _db: TestDb,
    _evidence: tempfile::TempDir,
    token: String,
    base: String,
}

impl Journey {
    async fn start(db: Db, provider_port: u16) -> Journey {
        let opts = FixtureOptions::default();
        let app = RunningApp::start(AppKind::Classic, opts.clone())
            .await
            .unwrap();
        let db = TestDb::new(db).await;
        let token = format!("console-test-{}", uuid::Uuid::new_v4().simple());
        let evidence = tempfile::tempdir().unwrap();
        let text = format!(
            "listen: 127.0.0.1:0\ndatabase: {db}\nengine:\n  workers: 2\n  lease: 10s\n  max_attempts: 2\n  backoff_base: 200ms\n  backoff_max: 1s\n  poll: 200ms\n  evidence_dir: {ev}\n{console}integrations:\n  - id: acme\n    name: Acme\n    app: Acme Admin\n    playbook: playbooks/classic.yaml\n    base_url: {base}\n    service_account: acme-admin\n    scim_token_sha256: {hash}\n",
            db = db.url,
            ev = evidence.path().display(),
            console = oidc_config(provider_port),
            base = app.base_url(),
            hash = hex::encode(usher::config::hash_token(&token)),
        );
        let config = usher::config::Config::parse("console-test.yaml", &text).unwrap();
        let secret = usher::vault::Secret::new(
            opts.admin_username.clone(),
            opts.admin_password.clone(),
            Some(&opts.totp_seed),
        )
        .unwrap();
        let mut secrets = std::collections::HashMap::new();
        secrets.insert("acme-admin".to_string(), Arc::new(secret));
        let running = usher::server::start_with(
            &config,
            "127.0.0.1:0".parse().unwrap(),
            Some(usher::server::EngineSetup {
                config_dir: repo(),
                secrets: usher::engine::Secrets::Fixed(secrets),
                driver: usher::playbook::DriverConfig::default(),
            }),
        )
        .await
        .unwrap();
        Journey {
            base: format!("http://{}", running.addr),
            app,
            running: Some(running),
            _db: db,
            _evidence: evidence,
            token,
        }
    }

    fn store(&self) -> &Store {
        &self.running.as_ref().unwrap().store
    }

    async fn create_user(&self, local: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/scim/v2/acme/Users", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(scim_user(local).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Waits until every job of the user has ended; returns the user's state in the app.
    async fn settled(&self, id: &str) -> usher::store::StoredResource {
        for _ in 0..600 {
            let jobs = self
                .store()
                .list_jobs(&usher::store::JobFilter {
                    resource_id: Some(id),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            if !jobs.is_empty() && jobs.iter().all(|j| j.is_terminal()) {
                return self
                    .store()
                    .get_resource("acme", usher::store::ResourceType::User, id)
                    .await
                    .unwrap()
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("jobs of {id} did not end");
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        self.app.shutdown().await;
    }
}

async fn text_of(page: &Page, selector: &str) -> String {
    page.text(&loc(selector), T).await.unwrap()
}

/// Takes a 1280×800 screenshot of the page; with `USHER_DOC_SCREENSHOTS=1` it replaces
/// the one in docs/images (the README shows them), so that a test run does not change
/// tracked files unless asked to.
async fn doc_screenshot(page: &Page, name: &str) {
    page.set_viewport(1280, 800).await.unwrap();
    let png = page.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The IHDR chunk: width and height, big-endian, at bytes 16..24.
    assert_eq!(&png[16..24], &[0, 0, 5, 0, 0, 0, 3, 32], "1280×800");
    if std::env::var("USHER_DOC_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = repo().join("docs/images");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// The issue's "Done when", end to end: an admin signs in through the provider, sees a
/// provisioned user move the Integrations page, finds the user and the create's
/// evidence, watches a failing app turn the status, and retries from the page.
async fn admin_journey(db: Db) {
    let port = free_port();
    let j = Journey::start(db, port).await;
    let base = j.base.clone();
    let _provider = Provider::start(port, &format!("{base}/console/oidc/callback"));
    let browser = Browser::launch(BrowserConfig::default()).await.unwrap();
    let ctx = browser.new_context().await.unwrap();
    let page = ctx.page();
    page.set_viewport(1280, 800).await.unwrap();

    oidc_sign_in(page, &base, "alice").await;
    page.expect_url("/console/$", T).await.unwrap();
    page.expect_text(None, "Alice Admin (admin)", T)
        .await
        .unwrap();
    let row = "tr[data-integration=acme]";
    assert_eq!(text_of(page, &format!("{row} .last-synced")).await, "never");
    assert_eq!(text_of(page, &format!("{row} .gateway-id")).await, "acme");
    assert_eq!(
        text_of(page, &format!("{row} .scim-url")).await,
        format!("{base}/scim/v2/acme")
    );

    // A user provisioned through SCIM moves "last synced"; the status is healthy.
    let user = j.create_user("grace").await;
    let stored = j.settled(&user).await;
    assert_eq!(stored.provisioning.state, "provisioned");
    let account = stored.provisioning.app_account_id.clone().unwrap();
    page.goto(&format!("{base}/console/"), T).await.unwrap();
    let synced = text_of(page, &format!("{row} .last-synced")).await;
    assert!(synced.starts_with("20"), "last synced: {synced}");
    assert_eq!(text_of(page, &format!("{row} .status")).await, "healthy");
    assert_eq!(text_of(page, &format!("{row} .n-provisioned")).await, "1");
    assert_accessible(page, "the Integrations page").await;
    if db == Db::Sqlite {
        doc_screenshot(page, "console-integrations.png").await;
    }
    // On a phone the page does not scroll sideways (the table scrolls in its box).
    page.set_viewport(390, 844).await.unwrap();
    let wide = page
        .evaluate("document.documentElement.scrollWidth", T)
        .await
        .unwrap();
    assert!(
        wide.as_i64().unwrap() <= 390,
        "page is {wide} px wide on a phone"
    );
    assert_accessible(page, "the Integrations page on a phone").await;
    // Keyboard: the first Tab reaches the skip link, Enter moves to the content.
    page.press(None, "Tab", T).await.unwrap();
    let focused = page
        .evaluate(
            "document.activeElement && document.activeElement.textContent",
            T,
        )
        .await
        .unwrap();
    assert_eq!(focused, "Skip to content");
    page.set_viewport(1280, 800).await.unwrap();

    // The integration: the user is provisioned with the app's id.
    page.click(&loc("role=link[name=\"Acme\"]"), T)
        .await
        .unwrap();
    page.expect_url("/console/integrations/acme/settings", T)
        .await
        .unwrap();
    let actions = text_of(page, "dd.actions").await;
    assert!(actions.contains("create_user"), "{actions}");
    assert!(
        !page
            .evaluate("document.body.innerText", T)
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .contains("correct horse battery"),
        "no secret on the Settings tab"
    );
    assert_accessible(page, "the Settings tab").await;
    page.click(&loc("role=link[name=\"Users\"]"), T)
        .await
        .unwrap();
    let urow = format!("tr[data-user=\"{user}\"]");
    assert_eq!(
        text_of(page, &format!("{urow} .app-account")).await,
        account
    );
    assert!(
        text_of(page, &format!("{urow} .app-state"))
            .await
            .starts_with("provisioned")
    );
    assert_accessible(page, "the Users tab").await;
    if db == Db::Sqlite {
        doc_screenshot(page, "console-users.png").await;
    }

    // Activity, filtered by the user; the create's job event and its screenshot.
    page.click(&loc("role=link[name=\"Activity\"] >> nth=-1"), T)
        .await
        .unwrap();
    page.expect_url("/console/integrations/acme/activity", T)
        .await
        .unwrap();
    page.fill(&loc("label=Target (user id)"), &user, T)
        .await
        .unwrap();
    page.click(&loc("role=button[name=\"Filter\"]"), T)
        .await
        .unwrap();
    page.expect_url("target=", T).await.unwrap();
    let types = page
        .all_texts(&loc("#events tbody tr td:nth-child(3) a"))
        .await
        .unwrap();
    assert!(types.contains(&"scim.create".to_owned()), "{types:?}");
    assert!(types.contains(&"job.succeeded".to_owned()), "{types:?}");
    assert_accessible(page, "the Activity tab").await;
    if db == Db::Sqlite {
        doc_screenshot(page, "console-activity.png").await;
    }
    page.click(&loc("#events a:has-text(\"job.succeeded\")"), T)
        .await
        .unwrap();
    page.expect_url("/console/events/", T).await.unwrap();
    page.expect_visible(&loc("img.evidence"), T).await.unwrap();
    // The image served is the one whose SHA-256 the event cites.
    let seq: i64 = page
        .url()
        .await
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let event = j.store().audit_event(seq).await.unwrap().unwrap();
    let cited = usher::audit::evidence::cited_hashes(&event.detail);
    assert!(!cited.is_empty(), "{event:?}");
    let served = page
        .evaluate(
            "(async () => { const img = document.querySelector('img.evidence'); const b = await (await fetch(img.src)).arrayBuffer(); const d = await crypto.subtle.digest('SHA-256', b); return [img.dataset.sha256, Array.from(new Uint8Array(d)).map(x => x.toString(16).padStart(2, '0')).join(''), img.naturalWidth > 0]; })()",
            T,
        )
        .await
        .unwrap();
    assert_eq!(served[0], cited[0].as_str());
    assert_eq!(
        served[1],
        cited[0].as_str(),
        "served bytes hash to the cited SHA-256"
    );
    assert_eq!(served[2], true, "the image renders");
    let trace = page
        .all_texts(&loc("table.trace tbody td:first-child"))
        .await
        .unwrap();
    assert!(
        trace.contains(&"create_user".to_owned()),
        "step trace: {trace:?}"
    );
    assert_accessible(page, "an event's detail").await;

    // New events appear on the Activity tab without a reload (server-sent events).
    page.goto(&format!("{base}/console/integrations/acme/activity"), T)
        .await
        .unwrap();
    page.evaluate("window.__not_reloaded = true", T)
        .await
        .unwrap();
    let second = j.create_user("hopper").await;
    page.expect_text(Some(&loc("#events tbody tr.new")), &second, T)
        .await
        .unwrap();
    assert_eq!(
        page.evaluate("window.__not_reloaded === true", T)
            .await
            .unwrap(),
        true
    );
    j.settled(&second).await;

    // A failing app: the job fails after its attempts, the status turns, the failed
    // job shows its step and screenshot.
    j.app.set_fail_rate(1.0);
    let third = j.create_user("lovelace").await;
    let stored = j.settled(&third).await;
    assert_eq!(stored.provisioning.state, "failed");
    page.goto(&format!("{base}/console/"), T).await.unwrap();
    let status = text_of(page, &format!("{row} .status")).await;
    assert!(status == "degraded" || status == "failing", "{status}");
    assert_eq!(text_of(page, &format!("{row} .n-failed")).await, "1");
    page.goto(&format!("{base}/console/integrations/acme/jobs"), T)
        .await
        .unwrap();
    let failed = "#jobs tbody tr.job-failed";
    let step = text_of(page, &format!("{failed} .failed-step")).await;
    assert!(step.contains("classic.yaml:"), "failed step: {step}");
    page.expect_visible(&loc(&format!("{failed} a.screenshot")), T)
        .await
        .unwrap();
    assert_accessible(page, "the Jobs tab").await;
    // The failure's event shows the failed step where it happened.
    let failed_event = j
        .store()
        .find_audit_events(&usher::store::AuditFilter {
            event_type: Some("job.failed"),
            target: Some(&third),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    page.goto(&format!("{base}/console/events/{}", failed_event[0].seq), T)
        .await
        .unwrap();
    page.expect_text(Some(&loc("dl.failure")), "classic.yaml:", T)
        .await
        .unwrap();
    page.expect_visible(&loc("img.evidence"), T).await.unwrap();
    assert_accessible(page, "a failure's detail").await;
    page.goto(&format!("{base}/console/integrations/acme/jobs"), T)
        .await
        .unwrap();

    // Retry from the page once the app works again: provisioned, audited as Alice.
    j.app.set_fail_rate(0.0);
    page.click(&loc(&format!("{failed} button")), T)
        .await
        .unwrap();
    page.expect_text(Some(&loc("p.done")), "queued again", T)
        .await
        .unwrap();
    let stored = j.settled(&third).await;
    assert_eq!(stored.provisioning.state, "provisioned");
    let events = j.store().audit_events(Some("acme"), 1000).await.unwrap();
    let requeued = events
        .iter()
        .find(|e| e.event_type == "job.requeued")
        .expect("the retry is audited");
    assert_eq!(requeued.actor, "admin:console:alice@example.test");
    assert_eq!(requeued.target.as_deref(), Some(third.as_str()));
    j.store().verify_audit_chain().await.unwrap();

    ctx.close().await.unwrap();
    browser.close().await.unwrap();
    j.stop().await;
}

/// The REST API over data written through SCIM (no engine: jobs stay queued): lists,
/// actions with their refusals, filters and paging, export through the API and the CLI.
async fn api_reads_acts_filters_and_exports(db: Db) {
    let server = TestServer::start_with(
        db,
        vec![integration("app1")],
        "console:\n  break_glass: true\n",
    )
    .await;
    assert!(
        set_password_with_cli(&server.db.url, PASSWORD)
            .status
            .success()
    );
    let c = no_redirects();
    let base = format!("http://{}", server.addr);
    let s = sign_in_local(&server, &c).await;
    let get = |path: String| {
        let c = c.clone();
        let cookie = s.cookie.clone();
        let base = base.clone();
        async move {
            let r = c
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    let (_, me) = get("/api/v1/me".into()).await;
    let csrf = json(&me)["csrf_token"].as_str().unwrap().to_owned();
    let post = |path: String| {
        c.post(format!("{base}{path}"))
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &csrf)
            .send()
    };

    let mut ids = Vec::new();
    for n in 0..3 {
        let r = server
            .req(reqwest::Method::POST, "app1", "/Users")
            .header("content-type", "application/scim+json")
            .body(scim_user(&format!("u{n}")).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let (st, body) = get("/api/v1/integrations".into()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let list = json(&body);
    assert_eq!(list[0]["id"], "app1");
    assert_eq!(list[0]["users_pending"], 3);
    assert_eq!(list[0]["last_synced_at"], serde_json::Value::Null);
    assert_eq!(list[0]["scim_base_url"], format!("{base}/scim/v2/app1"));

    let (_, body) = get("/api/v1/integrations/app1".into()).await;
    let settings = json(&body);
    assert_eq!(settings["service_account"], "svc-app1");
    assert_eq!(settings["vault_entry"], serde_json::Value::Null);
    // With a vault entry: its fields, key id and last change, never its contents.
    server
        .store()
        .vault_put(
            &usher::store::VaultWrite {
                name: "svc-app1".into(),
                key_id: "k-test-0001".into(),
                fields: "username,password,totp".into(),
                nonce: vec![7; 24],
                ciphertext: b"SEALED-SECRET-BYTES".to_vec(),
            },
            usher::store::VaultExpect::Any,
            &NewEvent {
                actor: Actor::System,
                event_type: "vault.set",
                target: Some("svc-app1".into()),
                integration_id: None,
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    let (_, body) = get("/api/v1/integrations/app1".into()).await;
    let entry = &json(&body)["vault_entry"];
    assert_eq!(
        entry["fields"],
        serde_json::json!(["username", "password", "totp"])
    );
    assert_eq!(entry["key_id"], "k-test-0001");
    assert!(entry["last_changed"].as_str().unwrap().starts_with("20"));
    assert!(
        !body.contains("SEALED") && !body.contains("nonce"),
        "{body}"
    );
    let (_, page) = get("/console/integrations/app1/settings".into()).await;
    assert!(page.contains("k-test-0001") && page.contains("username, password, totp"));
    assert!(!page.contains("SEALED"));
    let (st, _) = get("/api/v1/integrations/nope".into()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Posture and access: the vault entry's fields, a discovered account with no grant.
    let discovered = usher::store::DiscoveredAccount {
        account_key: "901".into(),
        app_account_id: Some("901".into()),
        user_name: None,
        email: Some("stranger@app1.example".into()),
        display_name: None,
        roles: vec!["Admin".into()],
        active: Some(true),
        status: "discovered".into(),
        first_seen: String::new(),
        last_seen: String::new(),
    };
    server
        .store()
        .record_reconciliation(
            "app1",
            &[discovered],
            &[],
            &NewEvent {
                actor: Actor::System,
                event_type: "reconcile.run",
                target: None,
                integration_id: Some("app1".into()),
                detail: serde_json::json!({"drifted": 0, "missing": 0, "discovered": 1}),
            },
        )
        .await
        .unwrap();
    let (st, body) = get("/api/v1/integrations/app1/posture".into()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let posture = json(&body);
    assert_eq!(posture["mfa_in_vault"], true);
    assert_eq!(posture["password_age_days"], 0);
    assert_eq!(posture["discovered"], 1);
    assert_eq!(posture["drifted"], 0);
    let (st, body) = get("/api/v1/integrations/app1/access".into()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let rows = json(&body);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(rows[0]["source"], "discovered");
    assert_eq!(rows[0]["app_role"], "Admin");
    assert_eq!(rows[0]["granted_by"], serde_json::json!([]));
    let (st, page) = get("/console/integrations/app1/access".into()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        page.contains("stranger@app1.example") && page.contains("no grant"),
        "{page}"
    );
    assert!(page.contains("TOTP in the vault"), "{page}");
    let (st, _) = get("/api/v1/integrations/nope/posture".into()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (_, body) = get("/api/v1/integrations/app1/users".into()).await;
    let users = json(&body);
    assert_eq!(users.as_array().unwrap().len(), 3);
    assert_eq!(users[0]["app_state"], "pending");
    assert_eq!(users[0]["user_name"], "u0@okta.example");
    assert_eq!(users[0]["last_job"]["status"], "pending");

    let (_, body) = get("/api/v1/integrations/app1/jobs".into()).await;
    let jobs = json(&body);
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    let job = jobs[0]["id"].as_i64().unwrap();

    // Cancel, retry, and a retry that does not apply (409); all audited as the person.
    let r = post(format!("/api/v1/jobs/{job}/cancel")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(format!("/api/v1/jobs/{job}/retry")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(format!("/api/v1/jobs/{job}/retry")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("is pending"));
    let r = post("/api/v1/jobs/999999/retry".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post(format!("/api/v1/integrations/app1/users/{}/rerun", ids[1]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post("/api/v1/integrations/app1/users/nobody/rerun".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The pages' forms: Retry on the Users tab re-runs a user whose last job did not
    // fail; Retry on a job that cannot be retried comes back with the reason.
    let form = |path: String, token: Option<&str>| {
        let mut req = c.post(format!("{base}{path}")).header("cookie", &s.cookie);
        req = match token {
            Some(t) => req.form(&[("_csrf", t)]),
            None => req.form(&[("x", "y")]),
        };
        req.send()
    };
    let r = form(
        format!("/console/integrations/app1/users/{}/retry", ids[2]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = form(
        format!("/console/integrations/app1/users/{}/retry", ids[2]),
        Some(&csrf),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        to.starts_with("/console/integrations/app1/users?done=job+"),
        "{to}"
    );
    let (_, page) = get(to).await;
    assert!(page.contains("queued"), "the outcome is shown");
    let r = form(
        format!("/console/integrations/app1/jobs/{job}/retry"),
        Some(&csrf),
    )
    .await
    .unwrap();
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(to.contains("failed=job"), "{to}");

    // Filters and paging.
    let (_, body) = get("/api/v1/audit/events?event_type=scim.create&limit=2".into()).await;
    let page1 = json(&body);
    assert_eq!(page1["events"].as_array().unwrap().len(), 2);
    let before = page1["next_before"].as_i64().expect("a next page");
    let (_, body) = get(format!(
        "/api/v1/audit/events?event_type=scim.create&limit=2&before={before}"
    ))
    .await;
    let page2 = json(&body);
    assert_eq!(page2["events"].as_array().unwrap().len(), 1);
    assert_eq!(page2["next_before"], serde_json::Value::Null);
    let seqs: Vec<i64> = page1["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["events"].as_array().unwrap())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let (_, body) = get(format!("/api/v1/audit/events?target={}", ids[1])).await;
    let kinds: Vec<String> = json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["user.rerun", "scim.create"]);
    let (_, body) = get(format!("/api/v1/audit/events?target={}", ids[2])).await;
    assert_eq!(
        json(&body)["events"][0]["actor"],
        "admin:console:local:admin",
        "the page's retry is audited as the person"
    );
    let (_, body) =
        get("/api/v1/audit/events?actor=admin:console:local:admin&event_type=job.cancelled".into())
            .await;
    assert_eq!(json(&body)["events"].as_array().unwrap().len(), 1);
    let (st, body) = get("/api/v1/audit/events?since=yesterday".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("since `yesterday`")
    );
    let (_, body) =
        get("/api/v1/audit/events?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z".into())
            .await;
    assert_eq!(json(&body)["events"].as_array().unwrap().len(), 0);

    // Export through the API: every event since, oldest first, with hashes.
    let total = server
        .store()
        .audit_events(None, 10_000)
        .await
        .unwrap()
        .len();
    let (st, body) = get("/api/v1/audit/export?since=1h&format=jsonl".into()).await;
    assert_eq!(st, StatusCode::OK);
    let lines: Vec<serde_json::Value> = body.lines().map(json).collect();
    assert_eq!(lines.len(), total);
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    assert!(
        lines
            .iter()
            .all(|l| l["hash"].as_str().unwrap().len() == 64)
    );
    let (st, body) = get("/api/v1/audit/export?since=1h&format=csv&integration=app1".into()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        body.starts_with("seq,at,actor,event_type,target,integration_id,detail,prev_hash,hash\n")
    );
    assert!(body.lines().skip(1).all(|l| l.contains(",app1,")), "{body}");
    let (st, _) = get("/api/v1/audit/export?since=1h&format=xml".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // And through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(
        &cfg,
        support::config_text(&server.db.url, &server.integrations, ""),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["audit", "export", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "--since",
        "2000-01-01T00:00:00Z",
        "--integration",
        "app1",
        "--format",
        "jsonl",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() >= 7, "{text}");
    assert!(
        text.lines()
            .map(json)
            .all(|l| l["integration_id"] == "app1")
    );
    let out = cli(&["--since", "yesterday"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = cli(&["--since", "1h", "--integration", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no integration `nope`"));

    let events = server.store().audit_events(None, 10_000).await.unwrap();
    let exports: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "audit.exported")
        .map(|e| e.actor.as_str())
        .collect();
    assert_eq!(exports.len(), 3, "{exports:?}");
    assert!(
        exports[..2]
            .iter()
            .all(|a| *a == "admin:console:local:admin")
    );
    assert!(exports[2].starts_with("admin:cli:"));
    server.stop().await;
}

/// The OpenAPI document validates and lists every route the API serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_validates_and_lists_every_route() {
    let server = TestServer::start(Db::Sqlite, vec![integration("app1")]).await;
    let r = reqwest::get(format!("http://{}/api/v1/openapi.json", server.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: serde_json::Value = r.json().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg(repo().join("tests/node/validate-openapi.mjs"))
        .arg(&file)
        .current_dir(repo().join("tests/node"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("valid 3."),
        "{said}"
    );

    // Every route the router serves under /api/v1, read from its source, is listed.
    let source = std::fs::read_to_string(repo().join("src/web/api.rs")).unwrap();
    let re = regex::Regex::new(r#"\.route\(\s*"(/api/v1/[^"]+)""#).unwrap();
    let routes: std::collections::BTreeSet<String> =
        re.captures_iter(&source).map(|c| c[1].to_owned()).collect();
    assert!(routes.len() >= 14, "{routes:?}");
    let listed: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(routes, listed);
    server.stop().await;
}

on_both_databases!(
    admin_journey,
    api_reads_acts_filters_and_exports,
    break_glass_sessions_csrf_and_rate_limit,
    break_glass_is_off_unless_configured,
    https_public_url_makes_cookies_secure,
    sessions_are_shared_between_nodes,
    session_timeouts,
    oidc_roles_and_refusals,
);
