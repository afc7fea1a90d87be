//! TOTP enrolment of a service account through the app's own UI, safe against a
//! failure at any point, like password rotation (see `rotate`):
//!
//! 1. The playbook's `enable_mfa` action opens the app's enrolment page; its
//!    `capture_totp` step reads the secret the app shows (text or QR code).
//! 2. Usher stores it in the vault as the entry's *pending* TOTP before the next step
//!    runs, so before the app is asked to confirm it (after which it requires codes).
//! 3. The action confirms it in the app with a code of the new secret. When the action
//!    (with its `verify`) succeeds, pending becomes the TOTP, and a fresh login with it
//!    proves that Usher signs in the way the app now demands.
//!
//! Whatever stops the sequence, the vault holds the secret: a login tries the current
//! credentials first, then the pending TOTP, and the one that passes settles it
//! (`rotate::reconcile`). The enrolment page is never photographed (`run_action`
//! takes no screenshot in `enable_mfa`): it shows the secret.

use std::sync::{Arc, Mutex};

use secrecy::SecretString;

use super::rotate::{ROTATION_GRACE, RotateError, recover_login};
use crate::playbook::{
    ActionName, ActionOutcome, ActionStatus, AppTarget, Driver, DriverError, RunOptions,
    TotpCapture,
};
use crate::vault::{Vault, VaultError};

/// An enrolment that took effect.
#[derive(Debug)]
pub struct Enrolment {
    /// The `enable_mfa` action's result, when it succeeded.
    pub outcome: Option<ActionOutcome>,
    /// When the action failed after the app had taken the new TOTP: its error
    /// (redacted). The vault holds the TOTP all the same.
    pub recovered_from: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the playbook has no `enable_mfa` action")]
    NoAction,
    #[error(
        "vault entry `{0}` has a TOTP seed already: the service account is enrolled (to replace the seed, change it in the app, then `usher vault set`)"
    )]
    AlreadyEnrolled(String),
    #[error(
        "vault entry `{name}` has a pending password or TOTP from a rotation or MFA enrolment started {age_secs}s ago, which may still be running; try again later"
    )]
    InProgress { name: String, age_secs: u64 },
    #[error("cannot settle the unfinished rotation or enrolment of `{name}`: {source}")]
    Unsettled {
        name: String,
        source: Box<DriverError>,
    },
    #[error("enable_mfa stopped before it captured a TOTP secret; nothing changed: {0}")]
    NotStarted(Box<DriverError>),
    #[error(
        "enable_mfa finished without capturing a TOTP secret (its `capture_totp` step did not run): the app may already require TOTP for the service account, whose seed the vault lacks; add it with `usher vault set --totp`"
    )]
    NothingCaptured,
    #[error("the app did not take the new TOTP (the vault has discarded it): {0}")]
    NotChanged(Box<DriverError>),
    #[error(
        "enable_mfa failed ({action}), and logging in afterwards failed with and without the new TOTP ({login}); the vault keeps it as pending, and the next login tries both"
    )]
    Unknown {
        action: Box<DriverError>,
        login: Box<DriverError>,
    },
    #[error(
        "MFA was enabled in the app and the TOTP recorded in the vault, but signing in with it failed: {0}"
    )]
    LoginAfter(Box<DriverError>),
}

impl From<RotateError> for MfaError {
    fn from(e: RotateError) -> Self {
        match e {
            RotateError::Vault(v) => MfaError::Vault(v),
            RotateError::InProgress { name, age_secs } => MfaError::InProgress { name, age_secs },
            RotateError::Unsettled { name, source } => MfaError::Unsettled { name, source },
            RotateError::NotChanged(d) => MfaError::NotChanged(d),
            RotateError::Unknown { action, login } => MfaError::Unknown { action, login },
        }
    }
}

/// Enrols the service account `name` in TOTP in the app (through the playbook's
/// `enable_mfa` action) and in the vault, so that a failure at any point leaves Usher
/// able to log in (see the module documentation).
pub async fn enable_mfa(
    driver: &Driver,
    integ: &AppTarget,
    vault: &Vault,
    name: &str,
    opts: &RunOptions,
) -> Result<Enrolment, MfaError> {
    if integ.playbook.action(ActionName::EnableMfa).is_none() {
        return Err(MfaError::NoAction);
    }
    let current = vault.get(name).await?;
    if current.totp.is_some() {
        return Err(MfaError::AlreadyEnrolled(name.to_owned()));
    }
    if current.pending_password.is_some() || current.pending_totp.is_some() {
        let age = vault.entry_age(name).await?;
        if age < ROTATION_GRACE {
            return Err(MfaError::InProgress {
                name: name.to_owned(),
                age_secs: age.as_secs(),
            });
        }
        integ.set_secret(Arc::new(current));
        recover_login(driver, integ, vault, name, opts).await?;
        if vault.get(name).await?.totp.is_some() {
            // The unfinished enrolment had been taken by the app.
            return Err(MfaError::AlreadyEnrolled(name.to_owned()));
        }
    }
    integ.set_secret(Arc::new(vault.get(name).await?));

    let captured: Arc<Mutex<Option<SecretString>>> = Arc::new(Mutex::new(None));
    let record: TotpCapture = {
        let (vault, name, captured) = (vault.clone(), name.to_owned(), captured.clone());
        Arc::new(move |seed: SecretString| {
            let (vault, name, captured) = (vault.clone(), name.clone(), captured.clone());
            Box::pin(async move {
                vault
                    .begin_mfa(&name, &seed)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Ok(mut c) = captured.lock() {
                    *c = Some(seed);
                }
                tracing::info!(entry = %name, "recorded the TOTP secret the app showed, before confirming it");
                Ok(())
            })
        })
    };
    let take = || captured.lock().ok().and_then(|mut c| c.take());
    let run_opts = RunOptions {
        on_totp_capture: Some(record),
        ..opts.clone()
    };
    tracing::info!(integration = %integ.key, entry = name, "enrolling the service account in TOTP");

    match driver.run_enable_mfa(integ, &run_opts).await {
        Ok(outcome) => {
            let Some(seed) = take() else {
                return Err(MfaError::NothingCaptured);
            };
            if outcome.status == ActionStatus::AlreadyDone {
                // A precondition said MFA is on already, after a secret was captured:
                // which one the app holds is what a login finds out.
                tracing::warn!(integration = %integ.key, "enable_mfa's precondition found MFA on after a capture");
            }
            if !vault.promote_pending_totp(name, &seed).await? {
                return Err(VaultError::Conflict(name.to_owned()).into());
            }
            integ.set_secret(Arc::new(vault.get(name).await?));
            tracing::info!(integration = %integ.key, entry = name, "TOTP enrolled; signing in with it");
            driver
                .relogin(integ, opts)
                .await
                .map_err(|e| MfaError::LoginAfter(Box::new(e)))?;
            Ok(Enrolment {
                outcome: Some(outcome),
                recovered_from: None,
            })
        }
        Err(action) => {
            if take().is_none() {
                return Err(MfaError::NotStarted(Box::new(action)));
            }
            tracing::warn!(integration = %integ.key, entry = name, error = %action,
                "enable_mfa failed after the secret was recorded; logging in afresh to learn whether the app took it");
            driver.forget_session(&integ.key).await;
            integ.set_secret(Arc::new(vault.get(name).await?));
            match recover_login(driver, integ, vault, name, opts).await {
                Ok(true) => Ok(Enrolment {
                    outcome: None,
                    recovered_from: Some(action.to_string()),
                }),
                Ok(false) => Err(MfaError::NotChanged(Box::new(action))),
                Err(RotateError::Unsettled { source, .. }) => Err(MfaError::Unknown {
                    action: Box::new(action),
                    login: source,
                }),
                Err(e) => Err(e.into()),
            }
        }
    }
}
