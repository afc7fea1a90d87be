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
        let res = shared
            .store
            .get_resource(integration_id, ResourceType::User, user_id)
            .await?
            .ok_or_else(|| SsoLoginError::NoUser(user_id.to_owned()))?;
        let user = super::user::user_context(&res.data);
        let secret = match vault.get(&user_entry(integration_id, user_id)).await {
            Ok(s) => s,
            Err(VaultError::NotFound(_)) => return Err(SsoLoginError::NoCredentials),
            Err(e) => return Err(e.into()),
        };
        let result = shared
            .driver
            .user_login(&integ.target, &user, &secret, shared.run_options())
            .await;
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
}
