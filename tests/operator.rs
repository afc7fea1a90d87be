//! Operators' commands: `usher jobs list|show|retry|cancel`, and `usher demo` (README's
//! "run" command) provisioning a user end to end through the bundled app.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Db, TestServer, config_text, integration};

fn usher(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(args)
        .env_remove("USHER_CONFIG")
        .output()
        .expect("run usher");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_show_retry_cancel() {
    let s = TestServer::start(Db::Sqlite, vec![integration("a")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("usher.yaml");
    std::fs::write(&cfg, config_text(&s.db.url, &s.integrations, "")).expect("config");
    let cfg = cfg.display().to_string();
    let r = s
        .req(Method::POST, "a", "/Users")
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "op@x.example"}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let user: Value = r.json().await.expect("json");
    let uid = user["id"].as_str().expect("id");

    let (code, out, err) = usher(&["jobs", "list", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    // The user column shows the userName; times carry their zone.
    let line = out
        .lines()
        .find(|l| l.contains("op@x.example"))
        .expect("job listed");
    assert!(
        line.contains("pending") && line.contains("create"),
        "{line}"
    );
    assert!(
        regex::Regex::new(r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
            .unwrap()
            .is_match(line),
        "{line}"
    );
    // --json; --user by userName (any case) or by SCIM id; a bogus status is refused.
    let (code, out, err) = usher(&["jobs", "list", "--json", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rows[0]["resource"], uid);
    assert_eq!(rows[0]["name"], "op@x.example");
    assert_eq!(rows[0]["status"], "pending");
    for who in ["OP@x.example", uid] {
        let (code, out, err) = usher(&["jobs", "list", "--json", "--user", who, "--config", &cfg]);
        assert_eq!(code, 0, "{err}");
        let rows: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{who}: {out}");
    }
    let (code, _, err) = usher(&[
        "jobs",
        "list",
        "--user",
        "nobody@x.example",
        "--config",
        &cfg,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no user `nobody@x.example`"), "{err}");
    let (code, out, err) = usher(&["jobs", "list", "--status", "bogus", "--config", &cfg]);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("unknown job status `bogus`"), "{err}");
    let id: i64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("job id");

    let (code, out, err) = usher(&["jobs", "show", &id.to_string(), "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (shown["id"].as_i64(), shown["status"].as_str()),
        (Some(id), Some("pending"))
    );

    // Only failed or cancelled jobs can be retried; pending ones can be cancelled.
    let (code, _, err) = usher(&["jobs", "retry", &id.to_string(), "--config", &cfg]);
    assert_eq!(code, 1);
    assert!(
        err.trim().starts_with(&format!(
            "usher: job {id} is pending: a worker runs it when it is due ("
        )),
        "{err}"
    );
    let (code, out, err) = usher(&["jobs", "cancel", &id.to_string(), "--config", &cfg]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("job {id}: cancelled").as_str()),
        "{err}"
    );
    let (code, out, _) = usher(&["jobs", "list", "--status", "cancelled", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("op@x.example"), "{out}");
    let (code, out, err) = usher(&["jobs", "retry", &id.to_string(), "--config", &cfg]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("job {id}: queued again").as_str()),
        "{err}"
    );
    let (code, _, err) = usher(&["jobs", "show", "999999", "--config", &cfg]);
    assert_eq!((code, err.trim()), (1, "usher: no job 999999"));
    // Each operator command is audited, with the operator as the actor.
    let events = s
        .store()
        .audit_events(Some("a"), 100)
        .await
        .expect("events");
    let ops: Vec<&str> = events
        .iter()
        .filter(|e| e.actor.starts_with("admin:cli:"))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(ops, ["job.cancelled", "job.requeued"]);
    s.stop().await;
}

/// README's run command: `usher demo` prints a SCIM URL, a token and a curl command;
/// a user POSTed there ends up in the bundled admin app, confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_provisions_a_user_into_the_bundled_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut url, mut token, mut curl, mut console) = (None, None, false, None);
    while url.is_none() || token.is_none() || !curl {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("demo prints its URL");
        if let Some(v) = line.trim().strip_prefix("SCIM URL:") {
            url = Some(v.trim().to_string());
        }
        if let Some(v) = line.trim().strip_prefix("SCIM token:") {
            token = Some(v.trim().to_string());
        }
        curl |= line.contains("curl -s -X POST");
        // `console:     http://…/console/  (break-glass: admin / PASSWORD)`
        if let Some(v) = line.trim().strip_prefix("console:") {
            let mut parts = v.split_whitespace();
            let at = parts.next().expect("console URL").to_string();
            let password = v
                .rsplit(" / ")
                .next()
                .expect("password")
                .trim_end_matches(')');
            console = Some((at, password.to_string()));
        }
    }
    let (url, token) = (url.expect("url"), token.expect("token"));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}], "active": true}).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let ext = "urn:usher:params:scim:schemas:extension:provisioning:2.0:User";
    let mut state = Value::Null;
    for _ in 0..300 {
        let v: Value = client
            .get(format!("{url}/Users/{id}?attributes={ext}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        state = v[ext].clone();
        if state["state"] == "provisioned" || state["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state["state"], "provisioned", "{state}");
    assert!(
        state["appAccountId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{state}"
    );
    // The console shows it, signed in with the break-glass account the demo printed.
    let (console_url, password) = console.expect("demo prints the console");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = c
        .get(format!("{console_url}sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let login = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("usher_login="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .to_string();
    let login_token = login.trim_start_matches("usher_login=").to_string();
    let r = c
        .post(format!("{console_url}sign-in"))
        .header("cookie", &login)
        .form(&[
            ("name", "admin"),
            ("password", password.as_str()),
            ("login_token", login_token.as_str()),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status().as_u16(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("usher_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    let list: Value = c
        .get(console_url.replace("/console/", "/api/v1/integrations"))
        .header("cookie", &session)
        .send()
        .await
        .expect("integrations")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["id"], "acme-demo", "{list}");
    assert_eq!(list[0]["users_provisioned"], 1, "{list}");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "demo exits cleanly on SIGTERM: {status:?}"
    );
    assert!(dir.path().join("usher.db").exists());
}
