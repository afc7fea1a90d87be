//! `usher healthcheck` (the container image's HEALTHCHECK) against a real server: healthy,
//! unhealthy answers, a server that is gone, one that never answers, and the listen
//! address read from the configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::process::Command;

use support::{Db, TestServer, config_text, integration};

/// Runs `usher healthcheck ARGS` with `USHER_CONFIG` as given; (exit code, stdout, stderr).
fn healthcheck(args: &[&str], usher_config: Option<&std::path::Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.arg("healthcheck").args(args).env_remove("USHER_CONFIG");
    if let Some(path) = usher_config {
        cmd.env("USHER_CONFIG", path);
    }
    let out = cmd.output().expect("run usher healthcheck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A failure is exit 1 and exactly one line on stderr.
fn assert_one_line_failure(r: &(i32, String, String), expected: &str) {
    let (code, out, err) = r;
    assert_eq!(*code, 1, "stdout: {out} stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert_eq!(lines[0], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_server_unhealthy_answers_and_a_stopped_server() {
    let s = TestServer::start(Db::Sqlite, vec![integration("a")]).await;
    let base = format!("http://{}", s.addr);

    let (code, out, err) = healthcheck(&["--url", &base], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("healthy: {base}/healthz answered 200 OK")
    );

    // A path that answers, but not 2xx: SCIM without a token is 401.
    let r = healthcheck(&["--url", &base, "--path", "/scim/v2/a/Users"], None);
    assert_one_line_failure(
        &r,
        &format!("usher: unhealthy: {base}/scim/v2/a/Users: answered 401 Unauthorized"),
    );

    // The configuration's listen address, 0.0.0.0 reached on loopback; through
    // USHER_CONFIG as in the image, and through --config.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("usher.yaml");
    let text = config_text(&s.db.url, &s.integrations, "").replacen(
        "listen: 127.0.0.1:0",
        &format!("listen: 0.0.0.0:{}", s.addr.port()),
        1,
    );
    std::fs::write(&cfg, text).expect("config");
    let loopback = format!("http://127.0.0.1:{}/healthz", s.addr.port());
    let (code, out, err) = healthcheck(&[], Some(&cfg));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("healthy: {loopback} answered 200 OK"));
    let cfg_arg = cfg.display().to_string();
    let (code, _, err) = healthcheck(&["--config", &cfg_arg], None);
    assert_eq!(code, 0, "{err}");

    s.stop().await;
    let r = healthcheck(&["--url", &base], None);
    assert_one_line_failure(
        &r,
        &format!(
            "usher: unhealthy: {base}/healthz: cannot connect (Connection refused (os error 111))"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_within_the_timeout() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    let base = format!("http://{addr}");
    let url = base.clone();
    let r = tokio::task::spawn_blocking(move || {
        healthcheck(&["--url", &url, "--timeout", "300ms"], None)
    })
    .await
    .expect("join");
    assert_one_line_failure(
        &r,
        &format!("usher: unhealthy: {base}/healthz: no answer within 300ms"),
    );
    held.abort();
}

#[test]
fn bad_arguments_and_a_missing_config_are_one_line_errors() {
    let r = healthcheck(&["--url", "localhost:8080"], None);
    assert_one_line_failure(
        &r,
        "usher: `localhost:8080` is not an http:// or https:// URL",
    );
    let r = healthcheck(&["--url", "http://127.0.0.1:9", "--path", "healthz"], None);
    assert_one_line_failure(&r, "usher: `healthz` is not a path (it must start with /)");
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let (code, _, err) = healthcheck(&[], Some(&missing));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("usher: {}: ", missing.display())) && err.lines().count() == 1,
        "{err}"
    );
    // --url and --config name two different servers: refused by the parser.
    let (code, _, err) = healthcheck(&["--url", "http://127.0.0.1:9", "--config", "x.yaml"], None);
    assert_eq!(code, 2, "{err}");
}
