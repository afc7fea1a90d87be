//! Password rotation that survives a failure at any point. It drives a playbook
//! action and keeps the vault in step, so it lives here, above both.
//!
//! 1. A strong password is generated and stored in the vault as the entry's *pending*
//!    password (encrypted) before the app hears of it.
//! 2. The playbook's `rotate_password` action changes it in the app.
//! 3. When the action (with its `verify`) succeeds, pending becomes the password.
//!
//! Whatever stops the sequence, the vault holds both the old and the new password, and
//! the driver's login tries the current one, then the pending one. A login that only
//! the pending password passes means the app took the rotation: [`reconcile`] then
//! promotes it in the vault. A login that the current password passes means the app
//! kept the old one, and the pending password is discarded.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::playbook::{ActionOutcome, AppTarget, Driver, DriverError, RunOptions};
use crate::vault::{Vault, VaultError};

/// Length of generated passwords.
pub const PASSWORD_LEN: usize = 32;

/// A pending password younger than this may belong to a rotation still running in
/// another process, so a new rotation will not settle (discard) it.
pub const ROTATION_GRACE: Duration = Duration::from_secs(600);

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
/// Symbols that survive forms, URLs and shells without quoting trouble.
const SYMBOLS: &[u8] = b"!#%+-.=@_~";

/// A random password of [`PASSWORD_LEN`] characters with at least one lower-case and
/// one upper-case letter, one digit and one symbol (typical complexity rules), from
/// the operating system's CSPRNG (through `rand`'s thread RNG).
pub fn generate_password() -> SecretString {
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    let mut rng = rand::rng();
    loop {
        let mut pw = Zeroizing::new(String::with_capacity(PASSWORD_LEN));
        for _ in 0..PASSWORD_LEN {
            pw.push(char::from(all[rng.random_range(0..all.len())]));
        }
        let has = |set: &[u8]| pw.bytes().any(|b| set.contains(&b));
        if has(LOWER) && has(UPPER) && has(DIGITS) && has(SYMBOLS) {
            return SecretString::from(pw.as_str().to_owned());
        }
    }
}

/// A rotation that took effect.
#[derive(Debug)]
pub struct Rotation {
    /// The `rotate_password` action's result, when it succeeded.
    pub outcome: Option<ActionOutcome>,
    /// When the action failed after the app had taken the new password: its error
    /// (redacted). The vault holds the new password all the same.
    pub recovered_from: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "vault entry `{name}` has a pending password from a rotation started {age_secs}s ago, which may still be running; try again later"
    )]
    InProgress { name: String, age_secs: u64 },
    #[error("cannot settle the unfinished rotation of `{name}`: {source}")]
    Unsettled {
        name: String,
        source: Box<DriverError>,
    },
    #[error("the app kept the old password (so does the vault): {0}")]
    NotChanged(Box<DriverError>),
    #[error(
        "rotate_password failed ({action}), and logging in afterwards failed with both the old and the new password ({login}); the vault keeps both, and the next login tries both"
    )]
    Unknown {
        action: Box<DriverError>,
        login: Box<DriverError>,
    },
}

/// Tells the vault what the integration's last login learnt: when only the pending
/// password passed, it becomes the entry's password. Call it after any action (it is
/// cheap when there is nothing to do). True when it promoted.
pub async fn reconcile(vault: &Vault, integ: &AppTarget, name: &str) -> Result<bool, VaultError> {
    if !integ.take_pending_login() {
        return Ok(false);
    }
    let password = integ.secret().password.clone();
    let promoted = vault.promote_pending(name, &password).await?;
    if promoted {
        tracing::info!(integration = %integ.key, entry = name,
            "recorded the rotated password the app had taken");
    }
    Ok(promoted)
}

/// Logs in afresh to learn which password the app has, and records the answer: the
/// pending password is promoted (the app took it) or discarded (the app has the
/// current one). True when the pending password was promoted.
pub async fn recover_login(
    driver: &Driver,
    integ: &AppTarget,
    vault: &Vault,
    name: &str,
    opts: &RunOptions,
) -> Result<bool, RotateError> {
    let pending = integ.secret().pending_password.clone();
    driver
        .relogin(integ, opts)
        .await
        .map_err(|e| RotateError::Unsettled {
            name: name.to_owned(),
            source: Box::new(e),
        })?;
    if reconcile(vault, integ, name).await? {
        return Ok(true);
    }
    if let Some(p) = pending {
        vault.discard_pending(name, &p).await?;
    }
    integ.set_secret(Arc::new(vault.get(name).await?));
    Ok(false)
}

/// Rotates the service account `name`'s password in the app (through the playbook's
/// `rotate_password` action) and in the vault, so that a failure at any point leaves
/// Usher able to log in (see the module documentation).
pub async fn rotate_password(
    driver: &Driver,
    integ: &AppTarget,
    vault: &Vault,
    name: &str,
    opts: &RunOptions,
) -> Result<Rotation, RotateError> {
    let current = vault.get(name).await?;
    if current.pending_password.is_some() {
        let age = vault.entry_age(name).await?;
        if age < ROTATION_GRACE {
            return Err(RotateError::InProgress {
                name: name.to_owned(),
                age_secs: age.as_secs(),
            });
        }
        integ.set_secret(Arc::new(current));
        recover_login(driver, integ, vault, name, opts).await?;
    }

    let new_password = generate_password();
    let staged = vault.begin_rotation(name, &new_password).await?;
    integ.set_secret(Arc::new(staged));
    tracing::info!(integration = %integ.key, entry = name, "rotating the service account's password");

    match driver.run_rotate_password(integ, &new_password, opts).await {
        Ok(outcome) => {
            if !vault.promote_pending(name, &new_password).await? {
                return Err(VaultError::Conflict(name.to_owned()).into());
            }
            integ.set_secret(Arc::new(vault.get(name).await?));
            tracing::info!(integration = %integ.key, entry = name, "password rotated");
            Ok(Rotation {
                outcome: Some(outcome),
                recovered_from: None,
            })
        }
        Err(action) => {
            tracing::warn!(integration = %integ.key, entry = name, error = %action,
                "rotate_password failed; logging in afresh to learn which password the app has");
            driver.forget_session(&integ.key);
            match recover_login(driver, integ, vault, name, opts).await {
                Ok(true) => Ok(Rotation {
                    outcome: None,
                    recovered_from: Some(action.to_string()),
                }),
                Ok(false) => Err(RotateError::NotChanged(Box::new(action))),
                Err(RotateError::Unsettled { source, .. }) => Err(RotateError::Unknown {
                    action: Box::new(action),
                    login: source,
                }),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn generated_passwords_are_long_mixed_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        let a = a.expose_secret();
        assert_eq!(a.chars().count(), PASSWORD_LEN);
        assert_ne!(a, b.expose_secret());
        for set in [LOWER, UPPER, DIGITS, SYMBOLS] {
            assert!(a.bytes().any(|c| set.contains(&c)), "missing a class");
        }
        assert!(
            a.bytes()
                .all(|c| [LOWER, UPPER, DIGITS, SYMBOLS].concat().contains(&c))
        );
    }
}
