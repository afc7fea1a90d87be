//! Posture and access: what Usher knows about each integration's service account
//! (password age, rotation, MFA, last sign-in, the canary, reconciliation's counts) and
//! who has access to what in the app, and why. Read from the store and the playbooks'
//! role mappings only: no browser.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::{IntegrationConfig, MfaPolicy};
use crate::playbook::Playbook;
use crate::store::{AuditFilter, ResourceType, Store, StoreError, VaultRow};
use crate::vault::kinds as vault_kinds;

/// One integration's posture.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Posture {
    pub integration: String,
    pub service_account: String,
    /// The vault has an entry for the service account.
    pub vault_entry: bool,
    /// When the password was last set or rotated (RFC 3339), as the audit trail says.
    pub password_changed_at: Option<String>,
    pub password_age_days: Option<i64>,
    pub last_rotation_at: Option<String>,
    /// `rotate_password.every`, in days.
    pub rotation_every_days: Option<u64>,
    /// The password is older than `rotate_password.every`.
    pub rotation_overdue: bool,
    /// A rotation began and was not confirmed (the next sign-in finds out).
    pub rotation_pending: bool,
    /// A TOTP enrolment (`usher vault enable-mfa`) began and was not confirmed.
    pub mfa_enrolment_pending: bool,
    /// `required` or `optional`.
    pub mfa_policy: String,
    /// The vault entry holds a TOTP seed.
    pub mfa_in_vault: bool,
    pub last_login_at: Option<String>,
    /// The last sign-in typed a TOTP code.
    pub last_login_used_mfa: Option<bool>,
    /// What breaks the policy, in words (empty: in line).
    pub violations: Vec<String>,
    pub paused: bool,
    /// `ok`, `degraded`, or `unknown` (no canary ran).
    pub canary: String,
    pub canary_since: Option<String>,
    pub last_reconcile_at: Option<String>,
    pub drifted: Option<i64>,
    pub missing: Option<i64>,
    /// Discovered accounts still listed by the app (not allowed, not gone).
    pub discovered: i64,
}

fn days_between(earlier: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(earlier)
        .ok()
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_days())
}

async fn newest(
    store: &Store,
    event_type: &str,
    target: Option<&str>,
    integration: Option<&str>,
) -> Result<Option<crate::audit::Event>, StoreError> {
    Ok(store
        .find_audit_events(&AuditFilter {
            integration_id: integration,
            event_type: Some(event_type),
            target,
            limit: 1,
            ..AuditFilter::default()
        })
        .await?
        .into_iter()
        .next())
}

/// When the password of vault entry `entry` (its row: `row`) was last set or rotated,
/// as the audit trail says (else when the entry was made), and when it was last
/// rotated.
pub(super) async fn password_changes(
    store: &Store,
    entry: &str,
    row: Option<&VaultRow>,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let set = newest(store, vault_kinds::VAULT_SET, Some(entry), None).await?;
    let rotated = newest(store, vault_kinds::VAULT_ROTATION_DONE, Some(entry), None).await?;
    let changed = [set.as_ref(), rotated.as_ref()]
        .into_iter()
        .flatten()
        .map(|e| e.at.clone())
        .max()
        .or_else(|| row.map(|r| r.created_at.clone()));
    Ok((changed, rotated.map(|e| e.at)))
}

/// The posture of one integration.
pub async fn posture(store: &Store, i: &IntegrationConfig) -> Result<Posture, StoreError> {
    let now = store.clock().now();
    let entry = i.service_account.as_str();
    let row = store.vault_get(entry).await?;
    let fields: Vec<String> = row
        .as_ref()
        .map(|r| r.fields.split(',').map(|f| f.trim().to_owned()).collect())
        .unwrap_or_default();
    let (password_changed_at, last_rotation_at) =
        password_changes(store, entry, row.as_ref()).await?;
    let password_age_days = password_changed_at
        .as_deref()
        .and_then(|t| days_between(t, now));
    let rotation_every_days = i.rotate_password.every.map(|d| d.as_secs() / 86_400);
    let rotation_overdue = match (i.rotate_password.every, password_age_days) {
        (Some(every), Some(age)) => {
            age.saturating_mul(86_400) >= i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
        }
        _ => false,
    };
    let last_login = store.last_login(&i.id).await?;
    let mfa_in_vault = fields.iter().any(|f| f == "totp");
    let mut violations = Vec::new();
    if row.is_none() {
        violations.push(format!("the vault has no entry `{entry}`"));
    }
    if rotation_overdue {
        violations.push(format!(
            "the password is {} days old; rotate_password.every is {} days",
            password_age_days.unwrap_or_default(),
            rotation_every_days.unwrap_or_default()
        ));
    }
    if i.mfa == MfaPolicy::Required {
        if !mfa_in_vault {
            violations.push(
                "mfa: required, but the vault entry has no TOTP seed (enrol it with `usher vault enable-mfa`)"
                    .into(),
            );
        }
        if let Some((_, false)) = &last_login {
            violations.push(
                "mfa: required, but the app did not ask for a code at the last sign-in".into(),
            );
        }
    }
    let health = store.health(Some(&i.id)).await?;
    let canary = health
        .iter()
        .find(|h| h.check == super::canary::CHECK_CANARY);
    let reconcile = newest(store, "reconcile.run", None, Some(&i.id)).await?;
    let count = |k: &str| {
        reconcile
            .as_ref()
            .and_then(|e| e.detail.get(k))
            .and_then(Value::as_i64)
    };
    let discovered = store
        .discovered_accounts(&i.id)
        .await?
        .iter()
        .filter(|d| matches!(d.status.as_str(), "discovered" | "deactivating"))
        .count();
    let paused = store
        .integration_state(&i.id)
        .await?
        .is_some_and(|s| s.is_paused());
    Ok(Posture {
        integration: i.id.clone(),
        service_account: entry.to_owned(),
        vault_entry: row.is_some(),
        password_changed_at,
        password_age_days,
        last_rotation_at,
        rotation_every_days,
        rotation_overdue,
        rotation_pending: fields.iter().any(|f| f == "pending_password"),
        mfa_enrolment_pending: fields.iter().any(|f| f == "pending_totp"),
        mfa_policy: match i.mfa {
            MfaPolicy::Required => "required",
            MfaPolicy::Optional => "optional",
        }
        .into(),
        mfa_in_vault,
        last_login_used_mfa: last_login.as_ref().map(|(_, m)| *m),
        last_login_at: last_login.map(|(at, _)| at),
        violations,
        paused,
        canary: canary.map_or_else(|| "unknown".to_owned(), |h| h.status.clone()),
        canary_since: canary.map(|h| h.since.clone()),
        last_reconcile_at: reconcile.as_ref().map(|e| e.at.clone()),
        drifted: count("drifted"),
        missing: count("missing"),
        discovered: i64::try_from(discovered).unwrap_or(i64::MAX),
    })
}

/// One line of the access report: an account in the app, one of its roles, and what
/// grants it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessRow {
    pub integration: String,
    /// `provisioned` (a SCIM user's account) or `discovered` (nobody provisioned it).
    pub source: String,
    /// The SCIM user id (empty for a discovered account).
    pub user_id: String,
    pub user_name: String,
    pub email: String,
    pub active: bool,
    pub app_account_id: String,
    /// One app role (empty: the account has none).
    pub app_role: String,
    /// The SCIM roles and groups that grant it (empty: no grant — a discovered account,
    /// or a role given in the app by hand).
    pub granted_by: Vec<String>,
}

/// Who has access to what in the app of `i`, and why: every account Usher provisioned
/// (as last confirmed in the app) with each app role and the SCIM roles or groups that
/// grant it, then the discovered accounts the app still lists, with no grant.
pub async fn access_report(
    store: &Store,
    i: &IntegrationConfig,
    pb: Option<&Playbook>,
) -> Result<Vec<AccessRow>, StoreError> {
    let none = BTreeMap::new();
    let roles = pb.map_or(&none, |p| &p.roles);
    // An account granted no role shows the app's default (`accounts.no_role`).
    let no_role = pb
        .and_then(|p| p.accounts.no_role.clone())
        .unwrap_or_default();
    let resources = store
        .list_resources(&i.id, ResourceType::User, None)
        .await?;
    let ids: Vec<&str> = resources.iter().map(|r| r.id.as_str()).collect();
    let groups = store.groups_of(&i.id, &ids).await?;
    let mut known = super::reconcile::known_accounts(store, &i.id).await?;
    known.retain(|_, (_, s)| !s.pending_create);
    let mut out = Vec::new();
    for r in &resources {
        let Some((app_id, state)) = known.get(&r.id) else {
            continue;
        };
        let user = super::user::user_context_with_groups(&r.data, groups.get(&r.id));
        let mut names: Vec<String> = user.roles.clone();
        names.extend(user.groups.iter().cloned());
        let grants = |role: &str| -> Vec<String> {
            names
                .iter()
                .filter(|n| {
                    roles
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .is_some_and(|(_, targets)| targets.iter().any(|t| t == role))
                })
                .cloned()
                .collect()
        };
        let app_roles = if state.app_roles.is_empty() {
            vec![no_role.clone()]
        } else {
            state.app_roles.clone()
        };
        for role in app_roles {
            out.push(AccessRow {
                integration: i.id.clone(),
                source: "provisioned".into(),
                user_id: r.id.clone(),
                user_name: state
                    .user_name
                    .clone()
                    .or(user.user_name.clone())
                    .unwrap_or_default(),
                email: state
                    .email
                    .clone()
                    .or(user.email.clone())
                    .unwrap_or_default(),
                active: state.active,
                app_account_id: app_id.clone().unwrap_or_default(),
                granted_by: grants(&role),
                app_role: role,
            });
        }
    }
    for d in store.discovered_accounts(&i.id).await? {
        if d.status == "gone" {
            continue;
        }
        let roles = if d.roles.is_empty() {
            vec![String::new()]
        } else {
            d.roles.clone()
        };
        for role in roles {
            out.push(AccessRow {
                integration: i.id.clone(),
                source: "discovered".into(),
                user_id: String::new(),
                user_name: d.user_name.clone().unwrap_or_default(),
                email: d.email.clone().unwrap_or_default(),
                active: d.active.unwrap_or(true),
                app_account_id: d.app_account_id.clone().unwrap_or_default(),
                app_role: role,
                granted_by: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// The access report as CSV (RFC 4180; `granted_by` joined with `; `).
pub fn access_csv(rows: &[AccessRow]) -> String {
    fn field(s: &str) -> String {
        // A leading = + - @ would be a formula in a spreadsheet.
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from(
        "integration,source,user_id,user_name,email,active,app_account_id,app_role,granted_by\r\n",
    );
    for r in rows {
        let line = [
            field(&r.integration),
            field(&r.source),
            field(&r.user_id),
            field(&r.user_name),
            field(&r.email),
            r.active.to_string(),
            field(&r.app_account_id),
            field(&r.app_role),
            field(&r.granted_by.join("; ")),
        ]
        .join(",");
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let row = AccessRow {
            integration: "acme".into(),
            source: "discovered".into(),
            user_id: String::new(),
            user_name: "=HYPERLINK(\"x\")".into(),
            email: "a,b@x.example".into(),
            active: true,
            app_account_id: "7".into(),
            app_role: "Admin".into(),
            granted_by: vec!["Admins".into(), "Ops".into()],
        };
        let csv = access_csv(&[row]);
        let line = csv.lines().nth(1).expect("a row");
        assert_eq!(
            line,
            "acme,discovered,,\"'=HYPERLINK(\"\"x\"\")\",\"a,b@x.example\",true,7,Admin,Admins; Ops"
        );
    }
}
