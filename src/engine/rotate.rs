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

use secrecy::ExposeSecret;

use crate::playbook::{ActionOutcome, AppTarget, Driver, DriverError, RunOptions};
use crate::vault::{Vault, VaultError};

pub use crate::vault::generate_password;

/// A pending password younger than this may belong to a rotation still running in
/// another process, so a new rotation will not settle (discard) it.
pub(super) const ROTATION_GRACE: Duration = Duration::from_secs(600);

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
        "vault entry `{name}` has a pending password or TOTP from a rotation or MFA enrolment started {age_secs}s ago, which may still be running; try again later"
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
/// credentials passed (a rotated password, an enrolled TOTP), they become the entry's.
/// Call it after any action (it is cheap when there is nothing to do). True when it
/// promoted.
pub async fn reconcile(vault: &Vault, integ: &AppTarget, name: &str) -> Result<bool, VaultError> {
    if !integ.take_pending_login() {
        return Ok(false);
    }
    let passed = integ.secret();
    let stored = vault.get(name).await?;
    let mut promoted = false;
    if stored
        .pending_password
        .as_ref()
        .is_some_and(|p| p.expose_secret() == passed.password.expose_secret())
        && vault.promote_pending(name, &passed.password).await?
    {
        promoted = true;
        tracing::info!(integration = %integ.key, entry = name,
            "recorded the rotated password the app had taken");
    }
    if let (Some((pending, _)), Some((totp, _))) = (&stored.pending_totp, &passed.totp)
        && pending.expose_secret() == totp.expose_secret()
        && vault.promote_pending_totp(name, totp).await?
    {
        promoted = true;
        tracing::info!(integration = %integ.key, entry = name,
            "recorded the TOTP enrolment the app had taken");
    }
    Ok(promoted)
}

/// Logs in afresh to learn which credentials the app has, and records the answer: the
/// pending password or TOTP is promoted (the app took it) or discarded (the app has
/// the current ones). True when pending credentials were promoted.
pub async fn recover_login(
    driver: &Driver,
    integ: &AppTarget,
    vault: &Vault,
    name: &str,
    opts: &RunOptions,
) -> Result<bool, RotateError> {
    let pending = integ.secret().pending_password.clone();
    let pending_totp = integ.secret().pending_totp.clone().map(|(s, _)| s);
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
    if let Some(t) = pending_totp {
        vault.discard_pending_totp(name, &t).await?;
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
    if current.pending_password.is_some() || current.pending_totp.is_some() {
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
            driver.forget_session(&integ.key).await;
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
