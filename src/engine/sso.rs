//! The engine's part in single sign-on (docs/sso.md): the per-person credentials Usher
//! sets in the app at create_user and keeps in the vault, and signing a person in to
//! the app with them through the driver (the SSO proxy never touches the browser).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::worker::Shared;
use crate::audit::{Actor, NewEvent, kinds};
use crate::browser::SessionState;
use crate::store::ResourceType;
use crate::vault::{Secret, Vault, VaultError};

/// The vault entry of a person's own credentials for an integration.
pub fn user_entry(integration_id: &str, user_id: &str) -> String {
    format!("sso.{integration_id}.{user_id}")
}

/// The password create_user sets for a person: the one already in their entry (a
/// retried create sets the same), else a new one, stored before the app hears of it.
pub(super) async fn user_password(
    vault: &Vault,
    integration_id: &str,
    user_id: &str,
    login: &str,
) -> Result<SecretString, VaultError> {
    let name = user_entry(integration_id, user_id);
    match vault.get(&name).await {
        Ok(s) => return Ok(s.password),
        Err(VaultError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let password = crate::vault::generate_password();
    vault
        .set(&name, &Secret::new(login, password.expose_secret(), None)?)
        .await?;
    Ok(password)
}

#[derive(Debug, thiserror::Error)]
pub enum SsoLoginError {
    #[error("integration `{0}` is not run by this process's engine")]
    NoIntegration(String),
    #[error("no user `{0}`")]
    NoUser(String),
    #[error(
        "Usher holds no password for this person in the app (provisioned before single sign-on was enabled)"
    )]
    NoCredentials,
    #[error("single sign-on needs the vault")]
    NoVault,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("signing in to the app failed: {0}")]
    Driver(#[from] crate::playbook::DriverError),
    #[error("the playbook has no `set_user_password` action")]
    NoSetPassword,
    #[error(
        "set_user_password failed ({action}); the vault keeps the old and the new password, and the person's next sign-in finds out which one the app has"
    )]
    Unsettled { action: String },
    #[error("the app kept the person's old password: {0}")]
    NotChanged(String),
}

/// A person's password rotation that took effect.
#[derive(Debug)]
pub struct UserRotation {
    /// The action failed after the app had taken the new password: its error.
    pub recovered_from: Option<String>,
}

/// Signs people in to apps with the credentials Usher holds for them. Cheap to clone.
#[derive(Clone)]
pub struct SsoLogin {
    pub(super) shared: Arc<Shared>,
}

impl SsoLogin {
    /// Signs SCIM user `user_id` of `integration_id` in to the app (the playbook's
    /// `user_login`) and returns the app's cookies; audited as `sso.app_login` with
    /// the person (`who`) as actor.
    pub async fn sign_in(
        &self,
        integration_id: &str,
        user_id: &str,
        who: &str,
    ) -> Result<SessionState, SsoLoginError> {
        let shared = &self.shared;
        let integ = shared
            .integrations
            .get(integration_id)
            .ok_or_else(|| SsoLoginError::NoIntegration(integration_id.to_owned()))?;
        let super::Secrets::Vault(vault) = shared.secrets() else {
            return Err(SsoLoginError::NoVault);
        };
        let user = self.person(integration_id, user_id).await?;
        let entry = user_entry(integration_id, user_id);
        let secret = match vault.get(&entry).await {
            Ok(s) => s,
            Err(VaultError::NotFound(_))
                if integ
                    .playbook
                    .action(crate::playbook::ActionName::SetUserPassword)
                    .is_some() =>
            {
                // An account created before single sign-on: Usher gives it a password
                // of its own first (the admin sets it in the app).
                self.rotate_password(integration_id, user_id).await?;
                vault.get(&entry).await?
            }
            Err(VaultError::NotFound(_)) => return Err(SsoLoginError::NoCredentials),
            Err(e) => return Err(e.into()),
        };
        let mut result = shared
            .driver
            .user_login(&integ.target, &user, &secret, shared.run_options())
            .await;
        if result.is_err()
            && let Some(promoted) = secret.promoted()
        {
            // A rotation stored its new password before the app took it and may not
            // have recorded the app's answer: that password may be the app's now.
            let second = shared
                .driver
                .user_login(&integ.target, &user, &promoted, shared.run_options())
                .await;
            if second.is_ok() {
                vault.promote_pending(&entry, &promoted.password).await?;
                tracing::warn!(integration = %integration_id, "a person's rotated password was the app's: recorded");
                result = second;
            }
        }
        let (ok, detail) = match &result {
            Ok((_, steps)) => (
                true,
                json!({
                    "steps": steps.len(),
                    "screenshot": steps.iter().rev().find_map(|s| s.screenshot.clone()),
                }),
            ),
            Err(e) => (false, json!({ "error": e.to_string() })),
        };
        let mut detail = detail;
        detail["ok"] = json!(ok);
        detail["user_id"] = json!(user_id);
        if let Err(e) = shared
            .store
            .append_event(&NewEvent {
                actor: Actor::Person(who.to_owned()),
                event_type: kinds::SSO_APP_LOGIN,
                target: Some(user_id.to_owned()),
                integration_id: Some(integration_id.to_owned()),
                detail,
            })
            .await
        {
            tracing::warn!(error = %e, "recording an SSO app sign-in failed");
        }
        Ok(result?.0)
    }

    /// The scheduled rotation: every active, provisioned person of the integration
    /// whose password is `every` old or older gets a new one. The schedule's result,
    /// and when it is due again (within the hour, when some are due sooner).
    pub(super) async fn rotate_due(
        &self,
        integration_id: &str,
        every: std::time::Duration,
    ) -> (serde_json::Value, std::time::Duration) {
        let hour = std::time::Duration::from_secs(3600);
        let super::Secrets::Vault(vault) = self.shared.secrets() else {
            return (
                json!({"ok": false, "reason": "single sign-on needs the vault"}),
                every,
            );
        };
        let (entries, users) = match (
            vault.list().await,
            self.shared
                .store
                .list_resources(integration_id, ResourceType::User, None)
                .await,
        ) {
            (Ok(e), Ok(u)) => (e, u),
            (Err(e), _) => return (json!({"ok": false, "reason": e.to_string()}), hour),
            (_, Err(e)) => return (json!({"ok": false, "reason": e.to_string()}), hour),
        };
        let now = self.shared.store.clock().now();
        let (mut rotated, mut failed, mut next) = (0u64, 0u64, every);
        for u in users {
            if u.data["active"].as_bool() == Some(false) {
                continue;
            }
            let name = user_entry(integration_id, &u.id);
            let Some(info) = entries.iter().find(|e| e.name == name) else {
                continue;
            };
            let age = chrono::DateTime::parse_from_rfc3339(&info.updated_at)
                .ok()
                .and_then(|t| now.signed_duration_since(t).to_std().ok())
                .unwrap_or_default();
            if age < every {
                next = next.min(every - age);
                continue;
            }
            match self.rotate_password(integration_id, &u.id).await {
                Ok(_) => rotated += 1,
                Err(e) => {
                    tracing::warn!(integration = %integration_id, user = %u.id, error = %e, "a scheduled SSO password rotation failed");
                    failed += 1;
                    next = next.min(hour);
                }
            }
        }
        (
            json!({"ok": failed == 0, "rotated": rotated, "failed": failed}),
            next.max(std::time::Duration::from_secs(60)),
        )
    }

    /// Rotates SCIM user `user_id`'s own password in the app (the playbook's
    /// `set_user_password`) and in the vault, with the protocol of the service
    /// account's rotation: the new password is stored as pending first, promoted when
    /// the action succeeds; when it fails, a sign-in as the person finds out which
    /// password the app has. A person without an entry (an account created before
    /// single sign-on) gets one with the new password.
    pub async fn rotate_password(
        &self,
        integration_id: &str,
        user_id: &str,
    ) -> Result<UserRotation, SsoLoginError> {
        let shared = &self.shared;
        let integ = shared
            .integrations
            .get(integration_id)
            .ok_or_else(|| SsoLoginError::NoIntegration(integration_id.to_owned()))?;
        if integ
            .playbook
            .action(crate::playbook::ActionName::SetUserPassword)
            .is_none()
        {
            return Err(SsoLoginError::NoSetPassword);
        }
        let super::Secrets::Vault(vault) = shared.secrets() else {
            return Err(SsoLoginError::NoVault);
        };
        let user = self.person(integration_id, user_id).await?;
        let entry = user_entry(integration_id, user_id);
        let new_password = crate::vault::generate_password();
        let existing = match vault.get(&entry).await {
            Ok(s) => Some(s),
            Err(VaultError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let current = match existing {
            Some(s) => {
                if s.pending_password.is_some() {
                    self.settle(integration_id, user_id, &entry, &s).await?;
                }
                vault.begin_rotation(&entry, &new_password).await?;
                Some(vault.get(&entry).await?)
            }
            None => {
                let login = user
                    .user_name
                    .clone()
                    .or_else(|| user.email.clone())
                    .unwrap_or_default();
                vault
                    .set(
                        &entry,
                        &Secret::new(login, new_password.expose_secret(), None)?,
                    )
                    .await?;
                None
            }
        };
        let result = shared
            .driver
            .run_set_user_password(&integ.target, user, &new_password, shared.run_options())
            .await;
        let outcome = match (result, current) {
            (Ok(_), Some(_)) => {
                vault.promote_pending(&entry, &new_password).await?;
                Ok(UserRotation {
                    recovered_from: None,
                })
            }
            (Ok(_), None) => Ok(UserRotation {
                recovered_from: None,
            }),
            (Err(e), None) => Err(SsoLoginError::Unsettled {
                action: e.to_string(),
            }),
            (Err(e), Some(staged)) => {
                let action = e.to_string();
                match self
                    .settle(integration_id, user_id, &entry, &staged)
                    .await?
                {
                    Some(true) => Ok(UserRotation {
                        recovered_from: Some(action),
                    }),
                    Some(false) => Err(SsoLoginError::NotChanged(action)),
                    None => Err(SsoLoginError::Unsettled { action }),
                }
            }
        };
        let detail = match &outcome {
            Ok(r) => json!({"user_id": user_id, "ok": true, "recovered_from": r.recovered_from}),
            Err(e) => json!({"user_id": user_id, "ok": false, "error": e.to_string()}),
        };
        if let Err(e) = shared
            .store
            .append_event(&NewEvent {
                actor: Actor::System,
                event_type: kinds::SSO_PASSWORD_ROTATED,
                target: Some(user_id.to_owned()),
                integration_id: Some(integration_id.to_owned()),
                detail,
            })
            .await
        {
            tracing::warn!(error = %e, "recording an SSO password rotation failed");
        }
        outcome
    }

    /// The person as the playbook sees them: their SCIM user and their app account id.
    async fn person(
        &self,
        integration_id: &str,
        user_id: &str,
    ) -> Result<crate::playbook::UserContext, SsoLoginError> {
        let store = &self.shared.store;
        let res = store
            .get_resource(integration_id, ResourceType::User, user_id)
            .await?
            .ok_or_else(|| SsoLoginError::NoUser(user_id.to_owned()))?;
        let mut user = super::user::user_context(&res.data);
        user.app_id = store
            .app_account(integration_id, user_id)
            .await?
            .and_then(|(id, _)| id);
        Ok(user)
    }

    /// Which of an entry's passwords the app has, found by signing the person in:
    /// the current one → the pending one is discarded (`Some(false)`); the pending one
    /// → promoted (`Some(true)`); neither → both kept (`None`).
    async fn settle(
        &self,
        integration_id: &str,
        user_id: &str,
        entry: &str,
        staged: &Secret,
    ) -> Result<Option<bool>, SsoLoginError> {
        let shared = &self.shared;
        let super::Secrets::Vault(vault) = shared.secrets() else {
            return Err(SsoLoginError::NoVault);
        };
        let integ = shared
            .integrations
            .get(integration_id)
            .ok_or_else(|| SsoLoginError::NoIntegration(integration_id.to_owned()))?;
        let Some(pending) = staged.pending_password.clone() else {
            return Ok(Some(false));
        };
        let data = shared
            .store
            .get_resource(integration_id, ResourceType::User, user_id)
            .await?
            .ok_or_else(|| SsoLoginError::NoUser(user_id.to_owned()))?
            .data;
        let user = super::user::user_context(&data);
        let opts = shared.run_options();
        if shared
            .driver
            .user_login(&integ.target, &user, staged, opts)
            .await
            .is_ok()
        {
            vault.discard_pending(entry, &pending).await?;
            return Ok(Some(false));
        }
        if let Some(promoted) = staged.promoted()
            && shared
                .driver
                .user_login(&integ.target, &user, &promoted, opts)
                .await
                .is_ok()
        {
            vault.promote_pending(entry, &pending).await?;
            return Ok(Some(true));
        }
        Ok(None)
    }
}
