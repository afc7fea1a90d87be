//! README.md's "Running it yourself" block, run as written in a fresh folder: it must
//! start the fixture app and the gateway, and a user POSTed through SCIM must be
//! provisioned into the app.
//!
//! The folder holds what a clone and its build have: the repository's `playbooks/` and
//! the built binaries in `target/release/` (links to the ones `cargo test` built). The
//! one rule applied to the block: lines starting with `cargo build` are skipped (that
//! is the build the links stand for). Ports come from `ACME_PORT` and `USHER_LISTEN`,
//! which the block reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const PROV: &str = "urn:usher:params:scim:schemas:extension:provisioning:2.0:User";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first ```sh block after the "## Running it yourself" heading.
fn quickstart_block(readme: &str) -> String {
    let section = readme
        .split_once("## Running it yourself")
        .expect("README has a Running it yourself section")
        .1;
    let body = section
        .split_once("```sh\n")
        .expect("the section has a sh block")
        .1;
    body.split_once("\n```")
        .expect("the block is closed")
        .0
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Kills the block's process group (the shell, the fixture app and `usher serve`).
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process group this test created.
        unsafe {
            libc::kill(-self.0, libc::SIGTERM);
        }
    }
}

#[tokio::test]
async fn readme_running_it_yourself_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let block = quickstart_block(&readme);
    let skipped: Vec<&str> = block
        .lines()
        .filter(|l| l.trim_start().starts_with("cargo build"))
        .collect();
    assert_eq!(skipped.len(), 1, "the block builds once: {block}");
    let script: String = block
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(|l| format!("{l}\n"))
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    copy_dir(&repo().join("playbooks"), &root.join("playbooks"));
    let bin = root.join("target/release");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let usher = PathBuf::from(env!("CARGO_BIN_EXE_usher"));
    let fixture = usher.with_file_name("usher-fixture-apps");
    assert!(
        fixture.exists(),
        "{} is built by `cargo build --workspace --all-targets`",
        fixture.display()
    );
    std::os::unix::fs::symlink(&usher, bin.join("usher")).expect("link");
    std::os::unix::fs::symlink(&fixture, bin.join("usher-fixture-apps")).expect("link");

    let (app_port, usher_port) = (free_port(), free_port());
    let mut child = Command::new("bash")
        .arg("-e")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("ACME_PORT", app_port.to_string())
        .env("USHER_LISTEN", format!("127.0.0.1:{usher_port}"))
        .env("USHER_LOG", "warn")
        .env_remove("ACME_BASE_URL")
        .env_remove("ACME_SCIM_TOKEN")
        .env_remove("USHER_CONFIG")
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let _group = Group(child.id() as i32);

    // The token the block printed; then the gateway's answer on /healthz.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("block: {line}");
            let _ = tx.send(line);
        }
    });
    let mut token = None;
    let mut checked = false;
    while token.is_none() || !checked {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the block stopped early: {:?}", child.try_wait()));
        if let Some(t) = line.strip_prefix("SCIM bearer token: ") {
            token = Some(t.trim().to_string());
        }
        if line.contains("usher.yaml: ok") {
            checked = true;
        }
    }
    let token = token.expect("token");
    assert_eq!(token.len(), 64, "{token}");

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{usher_port}");
    let mut up = false;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the block ended: {status}");
        }
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "usher serve did not answer on {base}/healthz");

    let scim = format!("{base}/scim/v2/acme");
    let created: Value = client
        .post(format!("{scim}/Users"))
        .bearer_auth(&token)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ann.quickstart@acme.example",
            "name": {"givenName": "Ann", "familyName": "Quickstart"},
            "emails": [{"value": "ann.quickstart@acme.example", "primary": true}],
            "active": true
        }))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let mut state = Value::Null;
    for _ in 0..600 {
        let user: Value = client
            .get(format!("{scim}/Users/{id}?attributes={PROV}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        state = user[PROV].clone();
        if state["state"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state["state"], "provisioned", "{state}");
    assert!(
        state["appAccountId"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{state}"
    );
    // The database is the one the config names, beside it.
    assert!(root.join("usher.db").exists());
}
