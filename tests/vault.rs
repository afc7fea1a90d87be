//! The vault over a real database, SQLite and PostgreSQL: round trip, wrong key,
//! tampered and moved ciphertexts, rekey, the rotation bookkeeping, and `usher vault`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use secrecy::{ExposeSecret, SecretString};
use support::{Db, TestDb, open_store};
use usher::audit::NewEvent;
use usher::store::{Store, VaultExpect, VaultWrite};
use usher::vault::{Keyring, Secret, Vault, VaultError, VaultKey};

const PW: &str = "Pw-0123456789-very-secret";
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const TOKEN: &str = "tok-api-5f6e7d8c9b";
const URI: &str = "otpauth://totp/Acme:svc?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8&period=60&algorithm=SHA256&issuer=Acme";

fn key(b: u8) -> VaultKey {
    VaultKey::from_bytes([b; 32])
}

fn vault(store: &Store, b: u8) -> Vault {
    Vault::new(store.clone(), Keyring::new(key(b)))
}

fn account() -> Secret {
    let mut s = Secret::new("svc@acme.example", PW, Some(SEED)).expect("secret");
    s.set_extra("api_token", TOKEN).expect("extra");
    s
}

fn event() -> NewEvent {
    NewEvent {
        actor: usher::audit::Actor::System,
        event_type: "test.tamper",
        target: None,
        integration_id: None,
        detail: serde_json::json!({}),
    }
}

/// Every byte the database holds for the vault, as text, to look for plaintext.
async fn raw_dump(store: &Store) -> String {
    let mut out = String::new();
    for r in store.vault_list().await.expect("rows") {
        out.push_str(&format!(
            "{} {} {} {} {}\n",
            r.name,
            r.key_id,
            r.fields,
            String::from_utf8_lossy(&r.nonce),
            String::from_utf8_lossy(&r.ciphertext)
        ));
    }
    out
}

async fn round_trip(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = open_store(&db.url).await;
    let v = vault(&store, 1);
    v.set("acme-admin", &account()).await.expect("set");
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(s.username.expose_secret(), "svc@acme.example");
    assert_eq!(s.password.expose_secret(), PW);
    assert_eq!(s.totp.as_ref().map(|(t, _)| t.expose_secret()), Some(SEED));
    assert_eq!(s.extra["api_token"].expose_secret(), TOKEN);
    assert!(s.pending_password.is_none());

    // An otpauth URI keeps its digits, period and algorithm.
    let s = v.set_totp("acme-admin", URI).await.expect("totp");
    let spec = &s.totp.as_ref().expect("totp").1;
    assert_eq!((spec.digits(), spec.period()), (8, 60));
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(s.totp.as_ref().map(|(t, _)| t.expose_secret()), Some(URI));

    let list = v.list().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "acme-admin");
    assert_eq!(
        list[0].fields,
        ["username", "password", "totp", "extra.api_token"]
    );
    assert_eq!(list[0].key_id, key(1).id());

    let dump = raw_dump(&store).await;
    for value in [PW, SEED, TOKEN, "svc@acme.example", "GEZDGNBVGY3TQOJQ"] {
        assert!(!dump.contains(value), "plaintext {value} in the database");
    }
    // Writes, never values, are in the audit trail.
    let events = store.audit_events(None, 100).await.expect("events");
    assert!(events.iter().any(|e| e.event_type == "vault.set"));
    assert!(!format!("{events:?}").contains(PW));
    store.verify_audit_chain().await.expect("chain intact");

    assert!(matches!(
        v.get("nobody").await,
        Err(VaultError::NotFound(_))
    ));
    assert!(v.remove("acme-admin").await.expect("rm"));
    assert!(!v.remove("acme-admin").await.expect("rm again"));
    assert!(v.find("acme-admin").await.expect("find").is_none());
    assert!(v.set("bad name!", &account()).await.is_err());
}

#[tokio::test]
async fn round_trip_sqlite() {
    round_trip(Db::Sqlite).await;
}

#[tokio::test]
async fn round_trip_postgres() {
    round_trip(Db::Postgres).await;
}

async fn refusals(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = open_store(&db.url).await;
    let v = vault(&store, 1);
    v.set("acme-admin", &account()).await.expect("set");
    v.set("other-app", &account()).await.expect("set");

    // Wrong key: a clear error naming both keys, and no value.
    let e = vault(&store, 2)
        .get("acme-admin")
        .await
        .expect_err("wrong key refused");
    assert_eq!(
        e.to_string(),
        format!(
            "vault entry `acme-admin` is encrypted under key `{}`, but the configured key is `{}` (wrong key?)",
            key(1).id(),
            key(2).id()
        )
    );

    // A flipped byte in the stored ciphertext.
    let row = store
        .vault_get("acme-admin")
        .await
        .expect("row")
        .expect("some");
    let mut ct = row.ciphertext.clone();
    let i = ct.len() / 3;
    ct[i] ^= 0x20;
    let tampered = VaultWrite {
        name: row.name.clone(),
        key_id: row.key_id.clone(),
        fields: row.fields.clone(),
        nonce: row.nonce.clone(),
        ciphertext: ct,
    };
    store
        .vault_put(&tampered, VaultExpect::Any, &event())
        .await
        .expect("tamper");
    let e = v.get("acme-admin").await.expect_err("tamper detected");
    assert!(matches!(e, VaultError::Decrypt { .. }), "{e}");
    assert!(e.to_string().contains("altered"), "{e}");

    // A whole entry copied over another name.
    let row = store
        .vault_get("acme-admin")
        .await
        .expect("row")
        .expect("some");
    v.set("acme-admin", &account()).await.expect("set again");
    let good = store
        .vault_get("acme-admin")
        .await
        .expect("row")
        .expect("some");
    assert_ne!(good.nonce, row.nonce, "a new nonce at every write");
    let moved = VaultWrite {
        name: "other-app".into(),
        key_id: good.key_id.clone(),
        fields: good.fields.clone(),
        nonce: good.nonce.clone(),
        ciphertext: good.ciphertext.clone(),
    };
    store
        .vault_put(&moved, VaultExpect::Any, &event())
        .await
        .expect("move");
    let e = v.get("other-app").await.expect_err("moved entry refused");
    assert_eq!(
        e.to_string(),
        format!(
            "vault key `{}` cannot decrypt entry `other-app`: the stored entry was altered or belongs to another entry",
            key(1).id()
        )
    );
    assert_eq!(
        v.get("acme-admin")
            .await
            .expect("original")
            .password
            .expose_secret(),
        PW
    );
}

#[tokio::test]
async fn wrong_key_tampering_and_moved_entries_are_refused_sqlite() {
    refusals(Db::Sqlite).await;
}

#[tokio::test]
async fn wrong_key_tampering_and_moved_entries_are_refused_postgres() {
    refusals(Db::Postgres).await;
}

async fn rekey(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = open_store(&db.url).await;
    let old = vault(&store, 1);
    for i in 0..5 {
        let mut s = account();
        s.password = SecretString::from(format!("{PW}-{i}"));
        old.set(&format!("app-{i}"), &s).await.expect("set");
    }
    let new_key = key(9);
    assert_eq!(old.rekey(&new_key).await.expect("rekey"), 5);
    let new = vault(&store, 9);
    for i in 0..5 {
        let name = format!("app-{i}");
        assert_eq!(
            new.get(&name)
                .await
                .expect("new key reads")
                .password
                .expose_secret(),
            format!("{PW}-{i}")
        );
        let e = old.get(&name).await.expect_err("old key no longer reads");
        assert!(matches!(e, VaultError::UnknownKey { .. }), "{e}");
    }
    assert!(
        new.list()
            .await
            .expect("list")
            .iter()
            .all(|e| e.key_id == new_key.id())
    );
    // Run again (an interrupted rekey is simply repeated): still fine.
    assert_eq!(old.rekey(&new_key).await.expect("again"), 5);
    assert_eq!(
        new.get("app-3")
            .await
            .expect("reads")
            .password
            .expose_secret(),
        format!("{PW}-3")
    );
    // A third key cannot rekey entries it cannot read.
    assert!(vault(&store, 3).rekey(&key(4)).await.is_err());
    store.verify_audit_chain().await.expect("chain intact");
}

#[tokio::test]
async fn rekey_keeps_every_secret_readable_under_the_new_key_only_sqlite() {
    rekey(Db::Sqlite).await;
}

#[tokio::test]
async fn rekey_keeps_every_secret_readable_under_the_new_key_only_postgres() {
    rekey(Db::Postgres).await;
}

async fn rotation_bookkeeping(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = open_store(&db.url).await;
    let v = vault(&store, 1);
    v.set("acme-admin", &account()).await.expect("set");
    let p1 = SecretString::from("Next-Password-1-abcdefgh".to_owned());
    let p2 = SecretString::from("Next-Password-2-abcdefgh".to_owned());

    let staged = v.begin_rotation("acme-admin", &p1).await.expect("begin");
    assert_eq!(staged.password.expose_secret(), PW, "old one kept");
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(
        s.pending_password.as_ref().map(|p| p.expose_secret()),
        Some("Next-Password-1-abcdefgh")
    );
    assert!(
        v.list().await.expect("list")[0]
            .fields
            .contains(&"pending_password".to_string())
    );
    // One rotation at a time.
    assert!(v.begin_rotation("acme-admin", &p2).await.is_err());
    // Only the pending password itself can be promoted or discarded.
    assert!(!v.promote_pending("acme-admin", &p2).await.expect("no-op"));
    assert!(!v.discard_pending("acme-admin", &p2).await.expect("no-op"));
    assert!(v.promote_pending("acme-admin", &p1).await.expect("promote"));
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(s.password.expose_secret(), "Next-Password-1-abcdefgh");
    assert!(s.pending_password.is_none());
    assert_eq!(s.extra["api_token"].expose_secret(), TOKEN, "rest kept");
    // Promoting again is harmless (another process got there first).
    assert!(v.promote_pending("acme-admin", &p1).await.expect("again"));

    v.begin_rotation("acme-admin", &p2).await.expect("begin 2");
    assert!(v.discard_pending("acme-admin", &p2).await.expect("discard"));
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(s.password.expose_secret(), "Next-Password-1-abcdefgh");
    assert!(s.pending_password.is_none());

    // MFA enrolment: the captured seed waits as pending_totp, exclusive with a rotation.
    let seed = SecretString::from("KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ".to_owned());
    let other = SecretString::from("JBSWY3DPEHPK3PXP".to_owned());
    let before = v.get("acme-admin").await.expect("get").totp.map(|(t, _)| t);
    assert!(
        v.begin_mfa("acme-admin", &SecretString::from("not base32!".to_owned()))
            .await
            .is_err()
    );
    let staged = v.begin_mfa("acme-admin", &seed).await.expect("begin mfa");
    assert!(staged.pending_totp.is_some());
    assert!(
        v.list().await.expect("list")[0]
            .fields
            .contains(&"pending_totp".to_string())
    );
    assert!(
        v.begin_rotation("acme-admin", &p2).await.is_err(),
        "one change at a time"
    );
    assert!(v.begin_mfa("acme-admin", &other).await.is_err());
    let promoted = staged.promoted().expect("something pending");
    assert_eq!(
        promoted.totp.as_ref().map(|(t, _)| t.expose_secret()),
        Some(seed.expose_secret())
    );
    assert!(
        !v.promote_pending_totp("acme-admin", &other)
            .await
            .expect("no-op")
    );
    assert!(
        !v.discard_pending_totp("acme-admin", &other)
            .await
            .expect("no-op")
    );
    assert!(
        v.discard_pending_totp("acme-admin", &seed)
            .await
            .expect("discard")
    );
    let s = v.get("acme-admin").await.expect("get");
    assert!(s.pending_totp.is_none());
    assert_eq!(
        s.totp.map(|(t, _)| t.expose_secret().to_owned()),
        before.map(|t| t.expose_secret().to_owned()),
        "discarding keeps the TOTP it had"
    );
    v.begin_mfa("acme-admin", &seed).await.expect("begin again");
    assert!(
        v.promote_pending_totp("acme-admin", &seed)
            .await
            .expect("promote")
    );
    let s = v.get("acme-admin").await.expect("get");
    assert_eq!(
        s.totp.as_ref().map(|(t, _)| t.expose_secret()),
        Some(seed.expose_secret())
    );
    assert!(s.pending_totp.is_none() && s.promoted().is_none());
    assert!(
        v.promote_pending_totp("acme-admin", &seed)
            .await
            .expect("again")
    );

    // Concurrent writers never lose an update (compare-and-swap with retries).
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let v = v.clone();
            tokio::spawn(async move {
                v.set_totp(
                    "acme-admin",
                    &format!("otpauth://totp/A:b?secret={SEED}&period={}", 30 + i),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("set_totp");
    }
    let e = store.audit_events(None, 1000).await.expect("events");
    assert!(
        e.iter()
            .filter(|e| e.event_type == "vault.rotation.done")
            .count()
            >= 1
    );
}

#[tokio::test]
async fn rotation_bookkeeping_sqlite() {
    rotation_bookkeeping(Db::Sqlite).await;
}

#[tokio::test]
async fn rotation_bookkeeping_postgres() {
    rotation_bookkeeping(Db::Postgres).await;
}

/// `usher vault …` with `input` on standard input; (exit code, stdout, stderr).
fn usher(args: &[&str], env: &[(&str, &str)], input: &str) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args(args)
        .env_remove("USHER_VAULT_KEY")
        .env_remove("USHER_VAULT_KEY_FILE")
        .env_remove("USHER_VAULT_NEW_KEY")
        .env_remove("USHER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run usher");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_sets_lists_imports_rekeys_and_removes_without_printing_values() {
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let keyfile = dir.path().join("vault.key");
    let newkey = dir.path().join("new.key");
    let config = dir.path().join("usher.yaml");
    std::fs::write(
        &config,
        format!(
            "database: {}\nvault:\n  key_file: {}\n",
            db.url,
            keyfile.display()
        ),
    )
    .expect("config");
    let cfg = config.display().to_string();
    let all_output = std::cell::RefCell::new(String::new());
    let run = |args: &[&str], env: &[(&str, &str)], input: &str| {
        let r = usher(args, env, input);
        all_output.borrow_mut().push_str(&r.1);
        all_output.borrow_mut().push_str(&r.2);
        r
    };

    // The configured key file does not exist yet: one plain line saying so.
    let (code, _, err) = run(&["vault", "list", "-c", &cfg], &[], "");
    assert_eq!(code, 0, "listing needs no key: {err}");
    let (code, _, err) = run(
        &[
            "vault",
            "set",
            "acme-admin",
            "--username",
            "svc",
            "-c",
            &cfg,
        ],
        &[],
        "x\n",
    );
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("usher: cannot read vault key file "),
        "{err}"
    );

    let (code, out, err) = run(
        &["vault", "keygen", "--out", &keyfile.display().to_string()],
        &[],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("wrote vault key "), "{out}");

    let input = format!("{PW}\n{SEED}\n{TOKEN}\n");
    let (code, out, err) = run(
        &[
            "vault",
            "set",
            "acme-admin",
            "--username",
            "svc@acme.example",
            "--totp",
            "--extra",
            "api_token",
            "-c",
            &cfg,
        ],
        &[],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("acme-admin: stored (username, password, totp, extra.api_token)"),
        "{out}"
    );

    // Too little input: the missing value is named.
    let (code, _, err) = run(
        &["vault", "set", "b", "--username", "u", "--totp", "-c", &cfg],
        &[],
        "only-a-password\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("expected the TOTP seed"), "{err}");

    let (code, out, err) = run(
        &["vault", "import-otpauth", "acme-admin", "-c", &cfg],
        &[],
        &format!("{URI}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "acme-admin: TOTP set (8 digits, every 60 s, SHA256)"
    );
    let (code, _, err) = run(
        &["vault", "import-otpauth", "acme-admin", "-c", &cfg],
        &[],
        "JBSWY3DPEHPK3PXP\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("expected an otpauth://totp/"), "{err}");

    let (code, out, _) = run(&["vault", "list", "-c", &cfg], &[], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("acme-admin"), "{out}");
    assert!(
        out.contains("username, password, totp, extra.api_token"),
        "{out}"
    );

    // Rekey to a key from the environment; the old key file no longer reads.
    let (_, new_b64, _) = run(&["vault", "keygen"], &[], "");
    std::fs::write(&newkey, &new_b64).expect("new key");
    let (code, out, err) = run(
        &["vault", "rekey", "-c", &cfg],
        &[("USHER_VAULT_NEW_KEY", new_b64.trim())],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("1 entry re-encrypted"), "{out}");
    let store = open_store(&db.url).await;
    let new = Vault::new(
        store.clone(),
        Keyring::new(VaultKey::from_file(&newkey).expect("key")),
    );
    let s = new.get("acme-admin").await.expect("new key reads");
    assert_eq!(s.password.expose_secret(), PW);
    assert_eq!(s.extra["api_token"].expose_secret(), TOKEN);
    let (code, _, err) = run(
        &["vault", "import-otpauth", "acme-admin", "-c", &cfg],
        &[],
        &format!("{URI}\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("(wrong key?)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // The environment variable takes precedence over the configured key file.
    let (code, out, err) = run(
        &["vault", "rm", "acme-admin", "-c", &cfg],
        &[("USHER_VAULT_KEY", new_b64.trim())],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "acme-admin: removed");
    let (code, _, err) = run(
        &["vault", "rm", "acme-admin", "-c", &cfg],
        &[("USHER_VAULT_KEY", new_b64.trim())],
        "",
    );
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "usher: no vault entry `acme-admin`");

    for value in [PW, SEED, TOKEN, "GEZDGNBVGY3TQOJQ"] {
        assert!(!all_output.borrow().contains(value), "{value} printed");
    }
    // Values never come from arguments.
    let (code, _, err) = run(
        &[
            "vault",
            "set",
            "x",
            "--username",
            "u",
            "--password",
            PW,
            "-c",
            &cfg,
        ],
        &[],
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("--password"), "{err}");
}
