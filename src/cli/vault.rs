//! `usher vault …`: secret values come from standard input (one per line) or, on a
//! terminal, from a prompt that does not echo; never from the command line, where
//! other users and shell histories would see them. Output names fields, never values.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use zeroize::Zeroizing;

use usher::audit::evidence::EvidenceStore;
use usher::config::Config;
use usher::playbook::{self, Driver, DriverConfig, RunOptions};
use usher::vault::{
    EntryInfo, Keyring, Secret, TotpAlgorithm, TotpSpec, Vault, VaultError, VaultKey,
    check_entry_name,
};

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Create or replace an entry. Reads from standard input, one per line (or prompts):
    /// the password, then the TOTP seed or otpauth:// URI (with --totp), then each
    /// --extra field's value.
    Set {
        /// Entry name: the integrations' `service_account`.
        name: String,
        #[arg(long)]
        username: String,
        /// Also read a TOTP seed (base32) or an otpauth:// URI.
        #[arg(long)]
        totp: bool,
        /// Also read a value for this extra field (`secret.FIELD` in templates); repeatable.
        #[arg(long = "extra", value_name = "FIELD")]
        extras: Vec<String>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Set an entry's TOTP from an otpauth:// URI read from standard input.
    ImportOtpauth {
        name: String,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// List entries: names, fields present, key id, last change. Never values.
    List {
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Delete an entry.
    Rm {
        name: String,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Re-encrypt every entry under a new key (then configure that key everywhere).
    Rekey {
        /// File with the new key; else USHER_VAULT_NEW_KEY (base64 of 32 bytes).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Print a new random vault key (base64), or write it to a new file (mode 600).
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rotate a service account's password in the app (the playbook's rotate_password
    /// action) and in the vault.
    Rotate {
        /// The entry; defaults to the integration's `service_account`.
        name: Option<String>,
        /// The integration whose playbook and app to use.
        #[arg(long)]
        integration: String,
        /// Directory for evidence screenshots.
        #[arg(long)]
        evidence: Option<PathBuf>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
    /// Enrol a service account in TOTP in the app (the playbook's enable_mfa action),
    /// recording the secret the app shows in the vault before confirming it there.
    EnableMfa {
        /// The entry; defaults to the integration's `service_account`.
        name: Option<String>,
        /// The integration whose playbook and app to use.
        #[arg(long)]
        integration: String,
        /// Directory for evidence screenshots (of the sign-in that proves the new TOTP;
        /// the enrolment page itself is never photographed).
        #[arg(long)]
        evidence: Option<PathBuf>,
        #[arg(long, short, default_value = "usher.yaml", env = "USHER_CONFIG")]
        config: PathBuf,
    },
}

pub async fn run(command: VaultCommand) -> anyhow::Result<ExitCode> {
    match command {
        VaultCommand::Set {
            name,
            username,
            totp,
            extras,
            config,
        } => {
            let (_, vault) = open_vault(&config).await?;
            let mut input = SecretInput::stdin();
            outln!(
                "{}",
                set(&vault, &name, &username, totp, &extras, &mut input).await?
            );
        }
        VaultCommand::ImportOtpauth { name, config } => {
            let (_, vault) = open_vault(&config).await?;
            let mut input = SecretInput::stdin();
            outln!("{}", import_otpauth(&vault, &name, &mut input).await?);
        }
        VaultCommand::List { config } => {
            // Listing needs no key: names and field names are stored in the clear.
            let (_, store) = super::open(&config).await?;
            let entries = Vault::entries(&store).await?;
            outln!("{}", format_list(&entries));
        }
        VaultCommand::Rm { name, config } => {
            let (_, vault) = open_vault(&config).await?;
            if !vault.remove(&name).await? {
                anyhow::bail!("no vault entry `{name}`");
            }
            outln!("{name}: removed");
        }
        VaultCommand::Rekey {
            new_key_file,
            config,
        } => {
            let (_, vault) = open_vault(&config).await?;
            let new_key = Keyring::new_key(|n| std::env::var(n).ok(), new_key_file.as_deref())?;
            let n = vault.rekey(&new_key).await?;
            outln!(
                "{n} entr{} re-encrypted from key {} to key {}; configure the new key everywhere now",
                if n == 1 { "y" } else { "ies" },
                vault.keys().primary().id(),
                new_key.id()
            );
        }
        VaultCommand::Keygen { out } => {
            let (key, text) = keygen(out.as_deref())?;
            match (text, out) {
                (Some(text), _) => out!("{}", text.as_str()),
                (None, Some(path)) => {
                    outln!("wrote vault key {} to {}", key.id(), path.display())
                }
                (None, None) => {}
            }
        }
        VaultCommand::Rotate {
            name,
            integration,
            evidence,
            config,
        } => rotate(name, &integration, evidence, &config).await?,
        VaultCommand::EnableMfa {
            name,
            integration,
            evidence,
            config,
        } => enable_mfa(name, &integration, evidence, &config).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration and the vault over its store, with the key from the environment
/// or `vault.key_file`; changes are audited as the CLI's actor.
async fn open_vault(path: &Path) -> anyhow::Result<(Config, Vault)> {
    let config = Config::load_for(path, usher::config::Purpose::Tool)?;
    let keys = Keyring::from_env_or_config(config.vault.key_file.as_deref())?;
    let store = super::open_store(&config).await?;
    Ok((
        config,
        Vault::new(store, keys).with_actor(super::cli_actor()),
    ))
}

/// What changing a service account's credentials in the app needs: the vault, the
/// entry, a driver and the integration's target.
struct CredentialRun {
    vault: Vault,
    name: String,
    app: String,
    driver: Driver,
    integ: usher::playbook::AppTarget,
    opts: RunOptions,
}

async fn credential_run(
    name: Option<String>,
    integration: &str,
    evidence: Option<PathBuf>,
    config: &Path,
) -> anyhow::Result<CredentialRun> {
    let (c, vault) = open_vault(config).await?;
    let ic = c
        .integrations
        .iter()
        .find(|i| i.id == integration)
        .ok_or_else(|| anyhow::anyhow!("no integration `{integration}` in {}", config.display()))?;
    let name = name.unwrap_or_else(|| ic.service_account.clone());
    if name != ic.service_account {
        anyhow::bail!(
            "integration `{integration}` logs in as `{}`, not `{name}`",
            ic.service_account
        );
    }
    let pb = match playbook::load_file(&ic.playbook) {
        Ok(pb) => Arc::new(pb),
        Err(errs) => anyhow::bail!("{errs}"),
    };
    let secret = Arc::new(vault.get(&name).await?);
    let opts = RunOptions {
        evidence: match &evidence {
            Some(dir) => Some(Arc::new(EvidenceStore::new(dir)?)),
            None => None,
        },
        ..RunOptions::default()
    };
    // Code windows are taken in the database, as `usher serve` takes them.
    let store = super::open_store(&c).await?;
    let driver = Driver::new(DriverConfig::default())
        .with_totp(usher::vault::TotpTracker::shared(store.clone()));
    let integ = driver.target(
        ic.id.clone(),
        ic.name.clone(),
        ic.base_url.clone(),
        pb,
        secret,
    )?;
    Ok(CredentialRun {
        vault,
        name,
        app: ic.name.clone(),
        driver,
        integ,
        opts,
    })
}

async fn rotate(
    name: Option<String>,
    integration: &str,
    evidence: Option<PathBuf>,
    config: &Path,
) -> anyhow::Result<()> {
    let r = credential_run(name, integration, evidence, config).await?;
    let result =
        usher::engine::rotate_password(&r.driver, &r.integ, &r.vault, &r.name, &r.opts).await;
    if let Err(e) = r.driver.shutdown().await {
        tracing::debug!(error = %e, "closing the browser failed");
    }
    let (name, app) = (&r.name, &r.app);
    match result?.recovered_from {
        None => outln!("{name}: password rotated in {app} and in the vault"),
        Some(e) => outln!(
            "{name}: password rotated in {app} and in the vault, although rotate_password reported: {e}"
        ),
    }
    Ok(())
}

async fn enable_mfa(
    name: Option<String>,
    integration: &str,
    evidence: Option<PathBuf>,
    config: &Path,
) -> anyhow::Result<()> {
    let r = credential_run(name, integration, evidence, config).await?;
    let result = usher::engine::enable_mfa(&r.driver, &r.integ, &r.vault, &r.name, &r.opts).await;
    if let Err(e) = r.driver.shutdown().await {
        tracing::debug!(error = %e, "closing the browser failed");
    }
    let (name, app) = (&r.name, &r.app);
    match result?.recovered_from {
        None => {
            outln!("{name}: TOTP enrolled in {app} and recorded in the vault; signed in with it")
        }
        Some(e) => outln!(
            "{name}: TOTP enrolled in {app} and recorded in the vault (signed in with it), although enable_mfa reported: {e}"
        ),
    }
    Ok(())
}

/// Where secret values are read from.
pub enum SecretInput {
    /// A prompt on the terminal, without echo.
    Terminal,
    /// One value per line (standard input when it is not a terminal, or tests).
    Lines(Box<dyn BufRead + Send>),
}

impl SecretInput {
    /// The terminal when standard input is one, else standard input's lines.
    pub fn stdin() -> SecretInput {
        if std::io::stdin().is_terminal() {
            SecretInput::Terminal
        } else {
            SecretInput::Lines(Box::new(std::io::BufReader::new(std::io::stdin())))
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, SecretInput::Terminal)
    }

    /// One value; `what` names it in the prompt and in errors.
    pub fn read(&mut self, what: &str) -> Result<Zeroizing<String>, VaultError> {
        match self {
            SecretInput::Terminal => rpassword::prompt_password(format!("{what}: "))
                .map(Zeroizing::new)
                .map_err(|e| VaultError::Invalid(format!("cannot read the {what}: {e}"))),
            SecretInput::Lines(r) => {
                let mut line = Zeroizing::new(String::new());
                let n = r
                    .read_line(&mut line)
                    .map_err(|e| VaultError::Invalid(format!("cannot read the {what}: {e}")))?;
                if n == 0 {
                    return Err(VaultError::Invalid(format!(
                        "expected the {what} on standard input (one value per line)"
                    )));
                }
                let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
                Ok(trimmed)
            }
        }
    }

    /// Refuses values nobody asked for (a TOTP seed piped without `--totp` would
    /// otherwise be dropped without a word).
    pub fn ensure_consumed(&mut self, expected: &str) -> Result<(), VaultError> {
        let SecretInput::Lines(r) = self else {
            return Ok(());
        };
        let mut rest = Zeroizing::new(String::new());
        r.read_to_string(&mut rest)
            .map_err(|e| VaultError::Invalid(format!("cannot read standard input: {e}")))?;
        if rest.trim().is_empty() {
            return Ok(());
        }
        Err(VaultError::Invalid(format!(
            "standard input has more lines than were asked for ({expected}); nothing was stored (pass --totp to store a TOTP seed)"
        )))
    }
}

/// `usher vault set NAME --username U [--totp] [--extra FIELD]…`: creates or replaces
/// the entry. Reads, in this order: the password, the TOTP seed or URI (with `--totp`),
/// one value per extra field. Returns the line to print.
pub async fn set(
    vault: &Vault,
    name: &str,
    username: &str,
    with_totp: bool,
    extras: &[String],
    input: &mut SecretInput,
) -> Result<String, VaultError> {
    check_entry_name(name)?;
    if username.trim().is_empty() {
        return Err(VaultError::Invalid("--username must not be empty".into()));
    }
    let password = input.read(&format!("password for {name}"))?;
    if password.is_empty() {
        return Err(VaultError::Invalid("the password must not be empty".into()));
    }
    if input.is_terminal() {
        let again = input.read("the same password again")?;
        if *again != *password {
            return Err(VaultError::Invalid("the passwords do not match".into()));
        }
    }
    let mut secret = Secret::new(username.trim(), password.as_str(), None)?;
    if with_totp {
        let totp = input.read("TOTP seed (base32) or otpauth:// URI")?;
        if totp.trim().is_empty() {
            return Err(VaultError::Invalid(
                "--totp was given but the TOTP seed is empty".into(),
            ));
        }
        secret.set_totp(Some(totp.as_str()))?;
    }
    for field in extras {
        usher::vault::check_extra_name(field)?;
        let value = input.read(&format!("value of extra field {field}"))?;
        secret.set_extra(field, value.as_str())?;
    }
    let mut expected = vec!["the password"];
    if with_totp {
        expected.push("the TOTP seed");
    }
    if !extras.is_empty() {
        expected.push("one value per --extra");
    }
    input.ensure_consumed(&expected.join(", then "))?;
    vault.set(name, &secret).await?;
    Ok(format!(
        "{name}: stored ({}) under key {}",
        secret.field_names().join(", "),
        vault.keys().primary().id()
    ))
}

/// `usher vault import-otpauth NAME`: reads an `otpauth://totp/…` URI and makes it the
/// entry's TOTP (digits, period and algorithm included).
pub async fn import_otpauth(
    vault: &Vault,
    name: &str,
    input: &mut SecretInput,
) -> Result<String, VaultError> {
    let uri = input.read("otpauth:// URI")?;
    let uri = uri.trim();
    if !uri
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("otpauth://"))
    {
        return Err(VaultError::Totp(
            "expected an otpauth://totp/… URI (use `usher vault set --totp` for a bare seed)"
                .into(),
        ));
    }
    let spec = TotpSpec::parse(uri)?;
    vault.set_totp(name, uri).await?;
    Ok(format!(
        "{name}: TOTP set ({} digits, every {} s, {})",
        spec.digits(),
        spec.period(),
        match spec.algorithm() {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    ))
}

/// `usher vault list`: one line per entry, names and fields only.
pub fn format_list(entries: &[EntryInfo]) -> String {
    if entries.is_empty() {
        return "no vault entries".into();
    }
    let w = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<w$}  {:<16}  {:<20}  FIELDS\n", "NAME", "KEY", "CHANGED");
    for e in entries {
        out.push_str(&format!(
            "{:<w$}  {:<16}  {:<20}  {}\n",
            e.name,
            e.key_id,
            e.updated_at
                .get(..19)
                .unwrap_or(&e.updated_at)
                .replace('T', " "),
            e.fields.join(", ")
        ));
    }
    out.pop();
    out
}

/// `usher vault keygen [--out FILE]`: a new key, written to a new file only its owner
/// can read, or returned for printing.
pub fn keygen(out: Option<&Path>) -> Result<(VaultKey, Option<Zeroizing<String>>), VaultError> {
    let key = VaultKey::generate();
    let text = Zeroizing::new(format!("{}\n", key.to_base64().as_str()));
    match out {
        None => Ok((key, Some(text))),
        Some(path) => {
            write_private(path, text.as_bytes()).map_err(|e| VaultError::KeyWrite {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok((key, None))
        }
    }
}

/// Writes a new key file (mode 600), creating its folder (mode 700) when missing; never
/// overwrites an existing file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dir.mode(0o700);
        }
        dir.create(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_input_reads_values_and_reports_missing_ones() {
        let mut input = SecretInput::Lines(Box::new(std::io::Cursor::new(
            b"pw with spaces \r\notpauth://x\n".to_vec(),
        )));
        assert_eq!(
            input.read("password").expect("1").as_str(),
            "pw with spaces "
        );
        assert_eq!(input.read("uri").expect("2").as_str(), "otpauth://x");
        let e = input.read("TOTP seed").unwrap_err().to_string();
        assert_eq!(
            e,
            "expected the TOTP seed on standard input (one value per line)"
        );
    }

    #[test]
    fn values_nobody_asked_for_are_refused() {
        let mut input = SecretInput::Lines(Box::new(std::io::Cursor::new(
            b"pw\nJBSWY3DPEHPK3PXP\n".to_vec(),
        )));
        assert_eq!(input.read("password").expect("pw").as_str(), "pw");
        let e = input
            .ensure_consumed("the password")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass --totp"), "{e}");
        assert!(!e.contains("JBSWY3DPEHPK3PXP"), "{e}");
        let mut input = SecretInput::Lines(Box::new(std::io::Cursor::new(b"pw\n\n".to_vec())));
        input.read("password").expect("pw");
        input
            .ensure_consumed("the password")
            .expect("a blank line is fine");
    }

    #[test]
    fn keygen_writes_a_private_file_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("vault.key");
        let (key, printed) = keygen(Some(&path)).expect("keygen");
        assert!(printed.is_none());
        let back = VaultKey::from_file(&path).expect("read back");
        assert_eq!(back.id(), key.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = keygen(Some(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot write key file "),
            "never overwrites a key: {e}"
        );
        // A missing folder is made (the README's /etc/usher/vault.key on a fresh machine).
        let nested = dir.path().join("etc/usher/vault.key");
        let (key, _) = keygen(Some(&nested)).expect("keygen into a new folder");
        assert_eq!(VaultKey::from_file(&nested).expect("read").id(), key.id());
    }
}
