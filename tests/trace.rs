//! Authoring (issue 13): `usher playbook run --trace` writes one self-contained HTML
//! file that headless Chromium opens, with every step, its `file:line` and screenshot,
//! the failing step opened and no secret; `--step` runs a step only after its Enter;
//! `--keep-open` keeps the page inspectable; `--integration` runs with the vault entry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use support::{Db, TestDb, open_store};
use usher::browser::{Browser, BrowserConfig, Locator};
use usher::vault::{Keyring, Secret, Vault, VaultKey};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn usher(args: &[String], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("run usher");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// A user file and a secrets file for the fixture's admin.
fn inputs(dir: &Path, opts: &FixtureOptions) -> (String, String) {
    let user = dir.join("user.json");
    std::fs::write(
        &user,
        r#"{"userName":"jo.trace@acme.test","name":{"givenName":"Jo","familyName":"Trace"},
            "emails":[{"value":"jo.trace@acme.test","primary":true}],"roles":[{"value":"Viewer"}]}"#,
    )
    .expect("write");
    let secrets = dir.join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "username: {}\npassword: {}\ntotp: {}\n",
            opts.admin_username, opts.admin_password, opts.totp_seed
        ),
    )
    .expect("write");
    (
        format!("@{}", user.display()),
        format!("@{}", secrets.display()),
    )
}

/// Step lines the CLI printed: `  ok …`, `  -- …`, `  no …`, `  FAIL …`.
fn step_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| {
            ["  ok ", "  -- ", "  no ", "  FAIL "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect()
}

/// TOTP codes of the seed around now: none may appear in a trace.
fn codes_around_now(seed: &str) -> Vec<String> {
    let totp = usher::vault::TotpSpec::parse(seed).expect("seed");
    let now = u64::try_from(usher::clock::Clock::now(&usher::clock::SystemClock).timestamp())
        .expect("time");
    (0..12)
        .map(|k| totp.code_at(now + 30 * 4 - 30 * k))
        .collect()
}

/// Opens a trace in headless Chromium: (steps, `file:line` texts, failed-and-open
/// steps, after-screenshots).
async fn open_trace(path: &Path) -> (usize, Vec<String>, usize, usize) {
    let browser = Browser::launch(BrowserConfig::default())
        .await
        .expect("chromium");
    let ctx = browser.new_context().await.expect("context");
    let page = ctx.page();
    page.goto(
        &format!("file://{}", path.display()),
        Duration::from_secs(10),
    )
    .await
    .expect("open the trace");
    let css = |c: &str| Locator::parse(&format!("css={c}")).expect("locator");
    let steps = page.count(&css("details.step")).await.expect("count");
    let wheres = page
        .all_texts(&css("details.step .where"))
        .await
        .expect("texts");
    let failed_open = page
        .count(&css("details.step.failed[open]"))
        .await
        .expect("count");
    let shots = page
        .count(&css("details.step img.after"))
        .await
        .expect("count");
    ctx.close().await.expect("close");
    browser.close().await.expect("close browser");
    (steps, wheres, failed_open, shots)
}

fn assert_no_secret(html: &str, opts: &FixtureOptions) {
    assert!(
        !html.contains(&opts.admin_password),
        "password in the trace"
    );
    assert!(!html.contains(&opts.totp_seed), "TOTP seed in the trace");
    // Screenshots are base64: a code would show in the text parts only.
    let text: String = html
        .split("data:image/png;base64,")
        .map(|part| part.split_once('"').map_or(part, |(_, rest)| rest))
        .collect();
    for code in codes_around_now(&opts.totp_seed) {
        assert!(!text.contains(&code), "TOTP code {code} in the trace");
    }
    assert!(!html.contains("src=\"http"), "nothing is fetched");
}

/// Every embedded screenshot is a PNG.
fn assert_pngs(html: &str) -> usize {
    let mut n = 0;
    for part in html.split("data:image/png;base64,").skip(1) {
        let b64 = part.split('"').next().expect("attribute");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_a_passing_and_a_failing_run_open_in_chromium() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, secrets) = inputs(dir.path(), &opts);
    let base = app.base_url().to_owned();

    // Passing: create_user, the precondition first saying "not done yet".
    let pass = dir.path().join("pass.html");
    let args = s(&[
        "playbook",
        "run",
        "playbooks/classic.yaml",
        "create_user",
        "--base-url",
        &base,
        "--user",
        &user,
        "--secrets",
        &secrets,
        "--trace",
        &pass.display().to_string(),
    ]);
    let (code, out, err) = tokio::task::spawn_blocking(move || usher(&args, &[]))
        .await
        .expect("join");
    assert_eq!(code, 0, "{out}{err}");
    assert!(app.user_by_email("jo.trace@acme.test").is_some());
    // The precondition that does not hold is the expected answer, said once, plainly.
    let not_yet: Vec<&str> = err.lines().filter(|l| l.contains("not done yet")).collect();
    assert_eq!(not_yet.len(), 1, "{err}");
    // The `fail` step is named once, without its template source.
    assert!(
        not_yet[0].starts_with("  --")
            && not_yet[0].ends_with("  fail → not done yet: the action's steps run")
            && !not_yet[0].contains("{{"),
        "{err}"
    );
    let printed = step_lines(&err);
    let html = std::fs::read_to_string(&pass).expect("trace");
    assert_no_secret(&html, &opts);
    assert!(assert_pngs(&html) >= printed.len());
    let (steps, wheres, failed_open, shots) = open_trace(&pass).await;
    assert_eq!(steps, printed.len(), "every step is in the trace: {err}");
    assert_eq!(shots, steps, "a screenshot after every step");
    assert_eq!(failed_open, 0);
    for (w, line) in wheres.iter().zip(&printed) {
        assert!(w.starts_with("playbooks/classic.yaml:"), "{w}");
        assert!(line.contains(w.as_str()), "{w} vs {line}");
    }
    assert!(
        html.contains("class=\"before\""),
        "before and after page changes"
    );

    // Failing: a button that is not there. A fresh app: the first run's TOTP code
    // window is spent there, and without --config this run would not know it.
    app.shutdown().await;
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let base = app.base_url().to_owned();
    let text = std::fs::read_to_string(repo("playbooks/classic.yaml"))
        .expect("read")
        .replace("timeout: 10s", "timeout: 2s")
        .replace("name='Send invite'", "name='Send invitation'");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, text).expect("write");
    let broken_s = broken.display().to_string();
    let fail = dir.path().join("fail.html");
    let user2 = r#"{"userName":"al.fail@acme.test","name":{"givenName":"Al","familyName":"Fail"},"emails":[{"value":"al.fail@acme.test"}]}"#;
    let args = s(&[
        "playbook",
        "run",
        &broken_s,
        "create_user",
        "--base-url",
        &base,
        "--user",
        user2,
        "--secrets",
        &secrets,
        "--trace",
        &fail.display().to_string(),
    ]);
    let (code, out, err) = tokio::task::spawn_blocking(move || usher(&args, &[]))
        .await
        .expect("join");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Send invitation"), "{err}");
    let printed = step_lines(&err);
    let html = std::fs::read_to_string(&fail).expect("trace");
    assert_no_secret(&html, &opts);
    let (steps, wheres, failed_open, shots) = open_trace(&fail).await;
    assert_eq!(steps, printed.len(), "{err}");
    assert_eq!(shots, steps);
    assert_eq!(
        failed_open,
        1,
        "the failing step is marked and opened: {}",
        html.lines()
            .filter(|l| l.contains("failed"))
            .collect::<Vec<_>>()
            .join("\n")
            .chars()
            .take(3000)
            .collect::<String>()
    );
    let failed_where = wheres.last().expect("steps");
    assert!(
        failed_where.starts_with(&format!("{broken_s}:")),
        "{failed_where}"
    );
    assert!(html.contains("Send invitation"), "the failing step's text");
    assert!(html.contains("<dd class=\"status\">failed</dd>"));
    app.shutdown().await;
}

/// Reads the child's standard error line by line on a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            // Keep reading when nobody listens: a closed pipe would fail the child.
            let _ = tx.send(line);
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_runs_each_step_after_its_enter_and_keep_open_keeps_the_page() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, secrets) = inputs(dir.path(), &opts);
    let base = app.base_url().to_owned();
    let common = s(&[
        "playbook",
        "run",
        "playbooks/classic.yaml",
        "list_users",
        "--base-url",
        &base,
        "--user",
        &user,
        "--secrets",
        &secrets,
    ]);

    // --step: at the k-th pause exactly k-1 steps have run; after 4, input ends and
    // the rest runs without pausing.
    let mut args = common.clone();
    args.push("--step".into());
    let (prompts, records, code) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let rx = lines_of(&mut child);
        let mut stdin = child.stdin.take();
        let (mut prompts, mut records) = (0usize, 0usize);
        for line in rx.iter() {
            if line.starts_with("  next ") {
                prompts += 1;
                assert_eq!(records, prompts - 1, "a step ran before its Enter: {line}");
                assert!(line.contains("playbooks/classic.yaml:"), "{line}");
                match (prompts, stdin.as_mut()) {
                    (1..=3, Some(w)) => w.write_all(b"\n").expect("enter"),
                    _ => drop(stdin.take()),
                }
            } else if !step_lines(&line).is_empty() {
                records += 1;
            }
        }
        let status = child.wait().expect("wait");
        (prompts, records, status.code())
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0));
    assert_eq!(prompts, 4, "no pause once input ended");
    assert!(records > 4, "the remaining steps ran: {records}");

    // --keep-open: the DevTools URL is printed and the page is still there until
    // standard input ends. A fresh app: the code window of the run above is spent.
    app.shutdown().await;
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let base = app.base_url().to_owned();
    let mut args = common;
    let at = args.iter().position(|a| a == "--base-url").expect("flag") + 1;
    args[at] = base.clone();
    args.push("--keep-open".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let rx = lines_of(&mut child);
    let url = tokio::task::spawn_blocking(move || {
        rx.iter()
            .find_map(|l| l.strip_prefix("devtools: ").map(str::to_owned))
            .expect("a devtools line")
    })
    .await
    .expect("join");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let host = url
        .strip_prefix("http://")
        .and_then(|u| u.split('/').next())
        .expect("host");
    let target = url.rsplit('/').next().expect("target id").to_owned();
    let list: serde_json::Value = reqwest::get(format!("http://{host}/json/list"))
        .await
        .expect("devtools answers while the run waits")
        .json()
        .await
        .expect("json");
    let page = list
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["id"] == target.as_str())
        .unwrap_or_else(|| panic!("the page {target} is open: {list}"));
    assert!(
        page["url"].as_str().unwrap_or("").starts_with(&base),
        "{page}"
    );
    drop(child.stdin.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["status"], "done");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_integration_logs_in_with_the_vault_entry() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start app");
    let db = TestDb::new(Db::Sqlite).await;
    let key = VaultKey::generate();
    let key_b64 = key.to_base64().as_str().to_owned();
    let store = open_store(&db.url).await;
    let vault = Vault::new(store.clone(), Keyring::new(key));
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    vault.set("acme-admin", &secret).await.expect("set");
    let dir = tempfile::tempdir().expect("dir");
    // The playbook relative to the configuration's folder, as `usher serve` reads it.
    std::fs::copy(repo("playbooks/classic.yaml"), dir.path().join("acme.yaml")).expect("copy");
    let config = dir.path().join("usher.yaml");
    std::fs::write(
        &config,
        format!(
            "database: {}\nintegrations:\n  - id: acme\n    name: Acme Admin\n    app: Acme\n    playbook: acme.yaml\n    base_url: {}\n    service_account: acme-admin\n    scim_token_sha256: '{}'\n",
            db.url,
            app.base_url(),
            "0".repeat(64),
        ),
    )
    .expect("config");
    let args = s(&[
        "playbook",
        "run",
        "list_users",
        "--integration",
        "acme",
        "--config",
        &config.display().to_string(),
        "--user",
        "{}",
    ]);
    let envs_key = key_b64.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        usher(&args, &[("USHER_VAULT_KEY", envs_key.as_str())])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("  ok ") && l.contains("fill #otp1")),
        "signed in with the vault's TOTP: {err}"
    );
    assert!(!err.contains(&opts.admin_password));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["status"], "done");
    // The code window is recorded where `usher serve` looks for it.
    let pool = sqlx::SqlitePool::connect(&db.url).await.expect("db");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM totp_windows")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 1, "the TOTP window is in the shared record");

    // Without the key the vault cannot be read: one plain line.
    let args = s(&[
        "playbook",
        "run",
        "list_users",
        "--integration",
        "nope",
        "--config",
        &config.display().to_string(),
        "--user",
        "{}",
    ]);
    let (code, _, err) =
        tokio::task::spawn_blocking(move || usher(&args, &[("USHER_VAULT_KEY", key_b64.as_str())]))
            .await
            .expect("join");
    assert_eq!(code, 1);
    assert!(err.contains("no integration `nope`"), "{err}");
    app.shutdown().await;
}

/// The first ```yaml block after `heading` in docs/playbooks.md, de-indented.
fn doc_yaml(heading: &str) -> String {
    let doc = std::fs::read_to_string(repo("docs/playbooks.md")).expect("docs");
    let section = &doc[doc.find(heading).expect("heading")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let body = &section[start..];
    let indent = section[..start - "```yaml\n".len()]
        .rsplit('\n')
        .next()
        .map_or(0, str::len);
    let end = body.find("```").expect("block end");
    body[..end]
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// docs/playbooks.md "Writing your first playbook": the playbook as written checks,
/// lists users, creates one (the precondition first saying "not done yet") and then
/// answers already_done, run with --integration as the walk-through says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_playbook_walk_through_runs_as_written() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start app");
    let db = TestDb::new(Db::Sqlite).await;
    let key = VaultKey::generate();
    let key_b64 = key.to_base64().as_str().to_owned();
    let vault = Vault::new(open_store(&db.url).await, Keyring::new(key));
    let secret = Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )
    .expect("secret");
    vault.set("acme-admin", &secret).await.expect("set");
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first.yaml");
    std::fs::write(&first, doc_yaml("## Writing your first playbook")).expect("write");
    // What `usher demo` writes, minus serving.
    let config = dir.path().join("usher.yaml");
    std::fs::write(
        &config,
        format!(
            "database: {}\nintegrations:\n  - id: acme-demo\n    name: Acme Admin (demo)\n    app: Acme Admin\n    playbook: {}\n    base_url: {}\n    service_account: acme-admin\n    scim_token_sha256: '{}'\n",
            db.url,
            repo("playbooks/classic.yaml").display(),
            app.base_url(),
            "0".repeat(64),
        ),
    )
    .expect("config");
    let first_s = first.display().to_string();
    let cfg = config.display().to_string();
    let key_env = key_b64.clone();
    let check = s(&["playbook", "check", &first_s]);
    let (code, out, err) = tokio::task::spawn_blocking(move || usher(&check, &[]))
        .await
        .expect("join");
    assert_eq!(
        (code, out.trim()),
        (0, format!("{first_s}: ok").as_str()),
        "{err}"
    );

    let ada = r#"{"userName":"ada@example.com","name":{"givenName":"Ada","familyName":"Lovelace"},"emails":[{"value":"ada@example.com","primary":true}],"roles":[{"value":"Engineering"}]}"#;
    let trace = dir.path().join("create.html").display().to_string();
    let run = move |action: &str, user: &str| {
        s(&[
            "playbook",
            "run",
            &first_s,
            action,
            "--integration",
            "acme-demo",
            "--config",
            &cfg,
            "--user",
            user,
            "--trace",
            &trace,
        ])
    };
    let runs = [
        run("list_users", "{}"),
        run("create_user", ada),
        run("create_user", ada),
    ];
    let results = tokio::task::spawn_blocking(move || {
        runs.iter()
            .map(|a| usher(a, &[("USHER_VAULT_KEY", key_env.as_str())]))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    for (code, out, err) in &results {
        assert_eq!(*code, 0, "{out}{err}");
    }
    let listed: serde_json::Value = serde_json::from_str(&results[0].1).expect("json");
    assert_eq!(listed["status"], "done");
    let created: serde_json::Value = serde_json::from_str(&results[1].1).expect("json");
    assert_eq!(created["status"], "done", "{}", results[1].2);
    assert!(results[1].2.contains("→ not done yet"), "{}", results[1].2);
    let user = app.user_by_email("ada@example.com").expect("created");
    assert_eq!(user.roles, vec!["Editor".to_string()], "roles mapped");
    let again: serde_json::Value = serde_json::from_str(&results[2].1).expect("json");
    assert_eq!(again["status"], "already_done");
    app.shutdown().await;
}

/// `--from LINE`: after the login, the action starts at that step (no precondition);
/// a line that starts no top-level step is an error naming those that do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_line_starts_the_action_at_that_step() {
    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, secrets) = inputs(dir.path(), &opts);
    let text = std::fs::read_to_string(repo("playbooks/classic.yaml")).expect("read");
    let line = text
        .lines()
        .position(|l| l.trim() == "- goto: \"{{ base_url }}/admin/users/new\"")
        .expect("the step")
        + 1;
    let base = app.base_url().to_owned();
    let args = |from: usize| {
        s(&[
            "playbook",
            "run",
            "playbooks/classic.yaml",
            "create_user",
            "--base-url",
            &base,
            "--user",
            &user,
            "--secrets",
            &secrets,
            "--from",
            &from.to_string(),
        ])
    };
    let (bad, good) = (args(line - 1), args(line));
    let ((bcode, _, berr), (code, out, err)) =
        tokio::task::spawn_blocking(move || (usher(&bad, &[]), usher(&good, &[])))
            .await
            .expect("join");
    assert_eq!(bcode, 1);
    assert!(
        berr.contains(&format!(
            "--from {}: no step of create_user's `steps`",
            line - 1
        )) && berr.contains(&line.to_string()),
        "{berr}"
    );
    assert_eq!(code, 0, "{out}{err}");
    let ran = step_lines(&err);
    let first_action_step = ran
        .iter()
        .position(|l| l.contains("/admin/users/new"))
        .expect("the step ran");
    assert!(
        ran[first_action_step].contains(&format!("playbooks/classic.yaml:{line} ")),
        "{err}"
    );
    assert!(!err.contains("not done yet"), "no precondition: {err}");
    assert!(app.user_by_email("jo.trace@acme.test").is_some());
    app.shutdown().await;
}
