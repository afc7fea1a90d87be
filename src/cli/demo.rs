//! `usher demo`: the bundled "Acme Admin" app, a SCIM gateway for it, the engine and
//! SQLite, all in one process, with the commands to try it printed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use rand::RngCore;
use usher::config::{Config, hash_token};
use usher_fixture_apps::{AppKind, FixtureOptions, RunningApp};

const PLAYBOOK: &str = include_str!("../../playbooks/classic.yaml");

pub async fn run(listen: SocketAddr, dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir.join("playbooks"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    std::fs::write(dir.join("playbooks/acme.yaml"), PLAYBOOK)?;

    let opts = FixtureOptions::default();
    let app = RunningApp::start(AppKind::Classic, opts.clone())
        .await
        .context("cannot start the demo app")?;

    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let db = dir.join("usher.db");
    // The service account's secret goes into the encrypted vault, as in production;
    // the demo keeps its key beside the data (production keeps it elsewhere).
    let key_file = dir.join("vault.key");
    if !key_file.exists() {
        super::vault::keygen(Some(&key_file))?;
    }
    let text = format!(
        "listen: {listen}\n\
         database: sqlite://{db}\n\
         vault:\n  key_file: {key}\n\
         engine:\n  workers: 2\n  backoff_base: 2s\n\
         console:\n  break_glass: true\n\
         integrations:\n\
         \x20 - id: acme-demo\n\
         \x20   name: Acme Admin (demo)\n\
         \x20   app: Acme Admin\n\
         \x20   playbook: playbooks/acme.yaml\n\
         \x20   base_url: {base}\n\
         \x20   service_account: acme-admin\n\
         \x20   scim_token_sha256: {hash}\n",
        db = db.display(),
        key = key_file.display(),
        base = app.base_url(),
        hash = hex::encode(hash_token(&token)),
    );
    std::fs::write(dir.join("usher.yaml"), &text)?;
    let config = Config::parse(&dir.join("usher.yaml").display().to_string(), &text)?;

    let secret = usher::vault::Secret::new(
        opts.admin_username.clone(),
        opts.admin_password.clone(),
        Some(&opts.totp_seed),
    )?;
    let store = super::open_store(&config).await?;
    let vault = usher::vault::Vault::new(
        store,
        usher::vault::Keyring::load(|_| None, config.vault.key_file.as_deref())?,
    );
    vault.set("acme-admin", &secret).await?;
    // The console's break-glass account with a fresh password each run (a demo has no
    // OpenID provider).
    let mut pw = [0u8; 15];
    rand::rng().fill_bytes(&mut pw);
    let console_password = hex::encode(pw);
    let store = super::open_store(&config).await?;
    store
        .set_local_password(
            usher::web::LOCAL_ACCOUNT,
            &usher::web::hash_password(&console_password)?,
            &usher::audit::NewEvent {
                actor: super::cli_actor(),
                event_type: usher::audit::kinds::CONSOLE_PASSWORD_SET,
                target: Some(format!("console:local:{}", usher::web::LOCAL_ACCOUNT)),
                integration_id: None,
                detail: serde_json::json!({"via": "demo"}),
            },
        )
        .await?;
    store.close().await;
    let setup = usher::server::EngineSetup {
        config_dir: dir.clone(),
        secrets: usher::engine::Secrets::Vault(vault),
        driver: usher::playbook::DriverConfig::default(),
    };
    let running = usher::server::start_with(&config, listen, Some(setup)).await?;
    let scim = format!("http://{}/scim/v2/acme-demo", running.addr);
    outln!("Usher demo is running (Ctrl-C to stop).");
    outln!();
    outln!("  admin app:   {}/admin/users", app.base_url());
    outln!(
        "               sign in as {} / {} (TOTP seed {})",
        opts.admin_username,
        opts.admin_password,
        opts.totp_seed
    );
    outln!(
        "  console:     http://{}/console/  (break-glass: admin / {console_password})",
        running.addr
    );
    outln!("  SCIM URL:    {scim}");
    outln!("  SCIM token:  {token}");
    outln!("  data:        {}", dir.display());
    outln!();
    outln!("Provision a user:");
    outln!();
    outln!(
        "  curl -s -X POST {scim}/Users \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/scim+json' \\\n    -d '{{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"ada@example.com\",\"name\":{{\"givenName\":\"Ada\",\"familyName\":\"Lovelace\"}},\"emails\":[{{\"value\":\"ada@example.com\",\"type\":\"work\",\"primary\":true}}],\"active\":true}}'"
    );
    outln!();
    outln!("Then watch it arrive in the admin app, and follow it with:");
    outln!();
    outln!(
        "  curl -s '{scim}/Users?filter=userName%20eq%20%22ada@example.com%22&attributes=urn:usher:params:scim:schemas:extension:provisioning:2.0:User' -H 'Authorization: Bearer {token}'"
    );
    outln!(
        "  usher jobs list --config {}",
        dir.join("usher.yaml").display()
    );
    outln!();
    usher::server::shutdown_signal().await;
    running.shutdown().await?;
    app.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
