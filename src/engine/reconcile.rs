//! Reconciliation: the engine looks at the app on its own. A run reads every account
//! with the playbook's `list_users`, matches each to the integration's SCIM users (by
//! the recorded app id, then userName, then email) and classifies them: in line,
//! drifted, missing, adoptable, or an orphan nobody provisioned. What it changes, it
//! changes through jobs (same read-back and evidence as any job); it never deletes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};

use super::plan::AccountState;
use super::worker::Shared;
use crate::audit::{Actor, NewEvent, kinds};
use crate::config::{DriftPolicy, OrphanPolicy, ReconcileSettings};
use crate::playbook::{AccountsPolicy, ActionName, DriverError, Playbook, UserContext};
use crate::store::{DISCOVERED_PREFIX, DiscoveredAccount, ReconcileWrite, ResourceType};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("no integration `{0}` is configured")]
    UnknownIntegration(String),
    #[error("the playbook of `{0}` has no `list_users` action: nothing to compare with")]
    NoListUsers(String),
    #[error("cannot sign in or list the accounts of `{integration}`: {source}")]
    Driver {
        integration: String,
        source: Box<DriverError>,
    },
    #[error(
        "list_users showed no account at all while Usher knows {known} in `{integration}`: nothing was changed (a broken list page must not re-provision everyone)"
    )]
    EmptyList { integration: String, known: usize },
    #[error("{0}")]
    Secret(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// An account as the app's `list_users` shows it. Fields are read from the emitted
/// record by these names (docs/reconcile.md): `app_id` (or `id`), `user_name` (or
/// `username`, `login`), `email` (or `mail`), `display_name` (or `name`), `roles` (or
/// `role`, `groups`; a list split at `,` `;` `|`), `active` (or `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppAccount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `None`: the list shows no roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// `None`: the list shows no state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

fn field(rec: &BTreeMap<String, String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| rec.get(*n))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `active`/`status` text as a state: `None` when it says neither.
fn parse_active(v: &str) -> Option<bool> {
    let v = v.trim().to_lowercase();
    const OFF: &[&str] = &[
        "false",
        "no",
        "0",
        "inactive",
        "disabled",
        "deactivated",
        "suspended",
        "locked",
        "blocked",
        "off",
    ];
    const ON: &[&str] = &["true", "yes", "1", "active", "enabled", "on"];
    if OFF
        .iter()
        .any(|w| v == *w || v.starts_with(&format!("{w} ")))
    {
        Some(false)
    } else if ON
        .iter()
        .any(|w| v == *w || v.starts_with(&format!("{w} ")))
    {
        Some(true)
    } else {
        None
    }
}

impl AppAccount {
    pub fn from_record(rec: &BTreeMap<String, String>) -> AppAccount {
        const ROLE_FIELDS: [&str; 3] = ["roles", "role", "groups"];
        let roles = ROLE_FIELDS.iter().any(|k| rec.contains_key(*k)).then(|| {
            let mut out: Vec<String> = Vec::new();
            for part in field(rec, &ROLE_FIELDS)
                .unwrap_or_default()
                .split([',', ';', '|'])
            {
                let p = part.trim();
                if !p.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(p)) {
                    out.push(p.to_owned());
                }
            }
            out
        });
        AppAccount {
            app_id: field(rec, &["app_id", "id"]),
            user_name: field(rec, &["user_name", "username", "login"]),
            email: field(rec, &["email", "mail"]),
            display_name: field(rec, &["display_name", "name"]),
            roles,
            active: field(rec, &["active", "status"]).and_then(|v| parse_active(&v)),
        }
    }

    /// The key it is recorded under: the app id, else the lower-cased login or email.
    pub fn key(&self) -> Option<String> {
        self.app_id.clone().or_else(|| {
            self.user_name
                .as_ref()
                .or(self.email.as_ref())
                .map(|s| s.to_lowercase())
        })
    }

    /// True when `name` (a login, email or app id) names this account.
    fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        [&self.app_id, &self.user_name, &self.email]
            .into_iter()
            .flatten()
            .any(|v| v.eq_ignore_ascii_case(name))
    }

    /// The state Usher records for it: what the app showed, its attributes unknown.
    fn as_state(&self) -> AccountState {
        let mut roles = self.roles.clone().unwrap_or_default();
        roles.sort();
        AccountState {
            user_name: self.user_name.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            active: self.active.unwrap_or(true),
            app_roles: roles,
            attributes_unknown: true,
            roles_unknown: self.roles.is_none(),
            ..AccountState::default()
        }
    }
}

/// One SCIM user of the integration (or an account Usher once provisioned whose
/// user is gone), as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct UserView {
    pub resource_id: String,
    pub user_name: Option<String>,
    pub email: Option<String>,
    /// `None`: the SCIM user was deleted (its account kept, deactivated).
    pub desired: Option<AccountState>,
    /// What Usher last confirmed in the app: (app id, state).
    pub known: Option<(Option<String>, AccountState)>,
}

impl UserView {
    /// Usher believes the account exists in the app.
    fn provisioned(&self) -> bool {
        self.known.as_ref().is_some_and(|(_, k)| !k.pending_create)
    }
}

/// What a run found for one user or account.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Finding {
    /// Matched, and the app shows the desired state.
    InLine { user: String },
    /// Matched, but roles, attributes or the active state differ.
    Drifted {
        user: String,
        differences: Vec<String>,
        account: AppAccount,
    },
    /// Usher provisioned it; the app does not have it.
    Missing { user: String },
    /// The account of a deleted SCIM user is gone from the app: nothing to do but forget it.
    Gone { user: String },
    /// In the app, matching a SCIM user that has no app account yet: linked to it.
    Adoptable { user: String, account: AppAccount },
    /// In the app, unknown to the IdP. `protected`: the service account or on the
    /// allow-list, never touched.
    Orphan {
        account: AppAccount,
        protected: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        duplicate_of: Option<String>,
    },
}

/// How roles are compared: the roles the playbook grants, and how the app holds them.
pub struct RoleView {
    managed: HashSet<String>,
    policy: AccountsPolicy,
}

impl RoleView {
    pub fn of(pb: &Playbook) -> RoleView {
        let mut managed: HashSet<String> = pb
            .roles
            .values()
            .flatten()
            .map(|r| r.to_lowercase())
            .collect();
        if let Some(n) = &pb.accounts.no_role {
            managed.insert(n.to_lowercase());
        }
        RoleView {
            managed,
            policy: pb.accounts.clone(),
        }
    }

    /// The managed roles the app should show for `desired` app roles (lower-cased).
    fn expected(&self, desired: &[String]) -> Vec<String> {
        let mut want: Vec<String> = if self.policy.one_role {
            desired.first().cloned().into_iter().collect()
        } else {
            desired.to_vec()
        };
        if want.is_empty()
            && let Some(n) = &self.policy.no_role
        {
            want.push(n.clone());
        }
        let mut out: Vec<String> = want.iter().map(|r| r.to_lowercase()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The managed roles among what the app shows (lower-cased); roles the playbook
    /// never grants (an app's built-in groups) are not Usher's to compare.
    fn shown(&self, roles: &[String]) -> Vec<String> {
        let mut out: Vec<String> = roles
            .iter()
            .map(|r| r.to_lowercase())
            .filter(|r| self.managed.contains(r))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// How the account differs from what it should be; empty when in line.
fn differences(want: &AccountState, shown: &AppAccount, roles: &RoleView) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(active) = shown.active
        && active != want.active
    {
        out.push(format!(
            "active: the app shows {active}, the desired state is {}",
            want.active
        ));
    }
    if let Some(r) = &shown.roles {
        let (expected, seen) = (roles.expected(&want.app_roles), roles.shown(r));
        if expected != seen {
            out.push(format!(
                "roles: the app shows [{}], the desired state is [{}]",
                seen.join(", "),
                expected.join(", ")
            ));
        }
    }
    if let (Some(e), Some(w)) = (&shown.email, &want.email)
        && !e.eq_ignore_ascii_case(w)
    {
        out.push(format!(
            "email: the app shows {e}, the desired state is {w}"
        ));
    }
    out
}

/// Matches the app's accounts to the users and classifies both. `protected`: the
/// service account's login and the allow-list.
pub fn classify(
    users: &[UserView],
    accounts: &[AppAccount],
    roles: &RoleView,
    protected: &[String],
    case_sensitive: bool,
) -> Vec<Finding> {
    let norm = |s: &str| {
        if case_sensitive {
            s.trim().to_owned()
        } else {
            s.trim().to_lowercase()
        }
    };
    let mut by_app_id: HashMap<&str, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_email: HashMap<String, usize> = HashMap::new();
    for (i, u) in users.iter().enumerate() {
        if let Some((Some(id), _)) = &u.known {
            by_app_id.entry(id.as_str()).or_insert(i);
        }
        if let Some(n) = &u.user_name {
            by_name.entry(norm(n)).or_insert(i);
        }
        if let Some(e) = &u.email {
            by_email.entry(e.trim().to_lowercase()).or_insert(i);
        }
    }
    let is_protected = |a: &AppAccount| protected.iter().any(|p| a.is_named(p));
    let mut matched: Vec<Option<&AppAccount>> = vec![None; users.len()];
    let mut findings = Vec::new();
    for a in accounts {
        let names = [&a.user_name, &a.email];
        let hit = a
            .app_id
            .as_deref()
            .and_then(|id| by_app_id.get(id).copied())
            .or_else(|| {
                names
                    .iter()
                    .copied()
                    .flatten()
                    .find_map(|v| by_name.get(&norm(v)).copied())
            })
            .or_else(|| {
                names
                    .iter()
                    .copied()
                    .flatten()
                    .find_map(|v| by_email.get(&v.trim().to_lowercase()).copied())
            });
        match hit {
            Some(i) if matched[i].is_none() => matched[i] = Some(a),
            Some(i) => findings.push(Finding::Orphan {
                account: a.clone(),
                protected: is_protected(a),
                duplicate_of: Some(users[i].resource_id.clone()),
            }),
            None => findings.push(Finding::Orphan {
                account: a.clone(),
                protected: is_protected(a),
                duplicate_of: None,
            }),
        }
    }
    for (u, seen) in users.iter().zip(matched) {
        let user = u.resource_id.clone();
        match (seen, u.provisioned()) {
            (Some(a), true) => {
                // A deleted user's account should stay as Usher last left it.
                let want = u.desired.as_ref().or(u.known.as_ref().map(|(_, k)| k));
                let diff = want.map(|w| differences(w, a, roles)).unwrap_or_default();
                if diff.is_empty() {
                    findings.push(Finding::InLine { user });
                } else {
                    findings.push(Finding::Drifted {
                        user,
                        differences: diff,
                        account: a.clone(),
                    });
                }
            }
            (Some(a), false) if u.desired.is_some() => findings.push(Finding::Adoptable {
                user,
                account: a.clone(),
            }),
            (Some(a), false) => findings.push(Finding::Orphan {
                account: a.clone(),
                protected: is_protected(a),
                duplicate_of: None,
            }),
            (None, true) if u.desired.as_ref().is_some_and(|d| d.active) => {
                findings.push(Finding::Missing { user })
            }
            (None, true) => findings.push(Finding::Gone { user }),
            (None, false) => {}
        }
    }
    findings
}

/// What a run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    pub integration: String,
    pub dry_run: bool,
    /// Accounts the app listed.
    pub listed: usize,
    pub in_line: usize,
    pub drifted: usize,
    pub missing: usize,
    pub adopted: usize,
    pub discovered: usize,
    pub protected: usize,
    pub gone: usize,
    /// Jobs queued (repairs, re-provisions, adoptions, orphan deactivations).
    pub jobs: Vec<i64>,
    pub findings: Vec<Finding>,
}

impl Shared {
    /// A run with the integration's configured policy.
    pub(crate) async fn reconcile_configured(
        &self,
        integration: &str,
        dry_run: bool,
        actor: Actor,
    ) -> Result<ReconcileReport, ReconcileError> {
        let policy = self
            .integrations
            .get(integration)
            .map(|i| i.config.reconcile.clone())
            .ok_or_else(|| ReconcileError::UnknownIntegration(integration.to_owned()))?;
        self.reconcile(integration, &policy, dry_run, actor).await
    }

    /// One reconciliation run of `integration` with `policy`. A dry run reads the app
    /// and reports; it records and queues nothing.
    pub(crate) async fn reconcile(
        &self,
        integration: &str,
        policy: &ReconcileSettings,
        dry_run: bool,
        actor: Actor,
    ) -> Result<ReconcileReport, ReconcileError> {
        let integ = self
            .integrations
            .get(integration)
            .cloned()
            .ok_or_else(|| ReconcileError::UnknownIntegration(integration.to_owned()))?;
        let pb = integ.playbook.clone();
        if !pb.actions.contains_key(&ActionName::ListUsers) {
            return Err(ReconcileError::NoListUsers(integration.to_owned()));
        }
        self.refresh_secret(&integ)
            .await
            .map_err(|f| ReconcileError::Secret(f.message))?;
        let out = self
            .driver
            .run(
                &integ.target,
                ActionName::ListUsers,
                UserContext::default(),
                self.run_options(),
            )
            .await
            .map_err(|source| ReconcileError::Driver {
                integration: integration.to_owned(),
                source: Box::new(source),
            })?;
        let accounts: Vec<AppAccount> = out.records.iter().map(AppAccount::from_record).collect();
        let users = self.user_views(integration, &pb).await?;
        let known = users.iter().filter(|u| u.provisioned()).count();
        if accounts.is_empty() && known > 0 {
            return Err(ReconcileError::EmptyList {
                integration: integration.to_owned(),
                known,
            });
        }
        let mut protected = policy.allow.clone();
        let login = integ.target.secret().username.expose_secret().to_owned();
        if !login.is_empty() {
            protected.push(login);
        }
        let roles = RoleView::of(&pb);
        let findings = classify(
            &users,
            &accounts,
            &roles,
            &protected,
            pb.case_sensitive_names,
        );
        let mut report = ReconcileReport {
            integration: integration.to_owned(),
            dry_run,
            listed: accounts.len(),
            ..ReconcileReport::default()
        };
        let by_id: HashMap<&str, &UserView> =
            users.iter().map(|u| (u.resource_id.as_str(), u)).collect();
        let can_deactivate = pb.actions.contains_key(&ActionName::DeactivateUser);
        let previous: HashMap<String, DiscoveredAccount> = self
            .store
            .discovered_accounts(integration)
            .await?
            .into_iter()
            .map(|d| (d.account_key.clone(), d))
            .collect();
        let now = crate::clock::format_time(self.clock.now());
        let mut writes = Vec::new();
        let mut discovered = Vec::new();
        for f in &findings {
            match f {
                Finding::InLine { .. } => report.in_line += 1,
                Finding::Drifted {
                    user,
                    account,
                    differences,
                } => {
                    report.drifted += 1;
                    // A deleted user's account is only reported: its repair could
                    // be a delete, and a run never deletes.
                    if policy.drift == DriftPolicy::Repair
                        && let Some(u) = by_id.get(user.as_str())
                        && u.desired.is_some()
                    {
                        // What drifted is taken from the app into the known state; the
                        // rest stays as last confirmed. The job's plan then runs only the
                        // actions that put the desired state back.
                        let app_id = u.known.as_ref().and_then(|(id, _)| id.clone());
                        let drifted = |what: &str| differences.iter().any(|d| d.starts_with(what));
                        let mut state = u
                            .known
                            .as_ref()
                            .map_or_else(|| account.as_state(), |(_, k)| k.clone());
                        if drifted("roles:") {
                            let mut shown = account.roles.clone().unwrap_or_default();
                            shown.sort();
                            state.app_roles = shown;
                            state.roles_unknown = false;
                        }
                        if drifted("active:") {
                            state.active = account.active.unwrap_or(state.active);
                        }
                        if drifted("email:") {
                            state.email = account.email.clone();
                        }
                        writes.push(ReconcileWrite {
                            resource_id: user.clone(),
                            known: Some((app_id.or(account.app_id.clone()), state.to_json())),
                            queue: true,
                        });
                    }
                }
                Finding::Missing { user } => {
                    report.missing += 1;
                    writes.push(ReconcileWrite {
                        resource_id: user.clone(),
                        known: None,
                        queue: true,
                    });
                }
                Finding::Gone { user } => {
                    report.gone += 1;
                    writes.push(ReconcileWrite {
                        resource_id: user.clone(),
                        known: None,
                        queue: false,
                    });
                }
                Finding::Adoptable { user, account } => {
                    report.adopted += 1;
                    let mut state = account.as_state();
                    state.attributes_unknown = true;
                    writes.push(ReconcileWrite {
                        resource_id: user.clone(),
                        known: Some((account.app_id.clone(), state.to_json())),
                        queue: true,
                    });
                }
                Finding::Orphan {
                    account, protected, ..
                } => {
                    let Some(key) = account.key() else { continue };
                    if *protected {
                        report.protected += 1;
                    } else {
                        report.discovered += 1;
                    }
                    let before = previous.get(&key).map(|d| d.status.as_str());
                    let status = if *protected {
                        "allowed"
                    } else if account.active == Some(false) {
                        "deactivated"
                    } else if policy.orphans == OrphanPolicy::Deactivate && can_deactivate {
                        writes.push(ReconcileWrite {
                            resource_id: format!("{DISCOVERED_PREFIX}{key}"),
                            known: Some((account.app_id.clone(), account.as_state().to_json())),
                            queue: true,
                        });
                        "deactivating"
                    } else if before == Some("deactivating") {
                        "deactivating"
                    } else {
                        "discovered"
                    };
                    discovered.push(DiscoveredAccount {
                        account_key: key.clone(),
                        app_account_id: account.app_id.clone(),
                        user_name: account.user_name.clone(),
                        email: account.email.clone(),
                        display_name: account.display_name.clone(),
                        roles: account.roles.clone().unwrap_or_default(),
                        active: account.active,
                        status: status.to_owned(),
                        first_seen: previous
                            .get(&key)
                            .map_or_else(|| now.clone(), |d| d.first_seen.clone()),
                        last_seen: now.clone(),
                    });
                }
            }
        }
        report.findings = findings;
        if dry_run {
            return Ok(report);
        }
        let event = NewEvent {
            actor,
            event_type: kinds::RECONCILE_RUN,
            target: None,
            integration_id: Some(integration.to_owned()),
            detail: json!({
                "listed": report.listed,
                "in_line": report.in_line,
                "drifted": report.drifted,
                "missing": report.missing,
                "adopted": report.adopted,
                "discovered": report.discovered,
                "protected": report.protected,
                "gone": report.gone,
                "drift": match policy.drift { DriftPolicy::Report => "report", DriftPolicy::Repair => "repair" },
                "orphans": match policy.orphans { OrphanPolicy::Report => "report", OrphanPolicy::Deactivate => "deactivate" },
                "findings": report.findings.iter().filter(|f| !matches!(f, Finding::InLine { .. })).collect::<Vec<_>>(),
            }),
        };
        report.jobs = self
            .store
            .record_reconciliation(integration, &discovered, &writes, &event)
            .await?;
        let mut evented = event.detail;
        if let Value::Object(m) = &mut evented {
            m.insert("jobs".into(), json!(report.jobs));
        }
        if report.drifted + report.missing + report.discovered > 0 {
            self.notify_integration("integration.reconciled", integration, evented)
                .await;
        }
        tracing::info!(
            integration,
            listed = report.listed,
            drifted = report.drifted,
            missing = report.missing,
            adopted = report.adopted,
            discovered = report.discovered,
            jobs = report.jobs.len(),
            "reconciliation run done"
        );
        Ok(report)
    }

    /// Every SCIM user of the integration with its desired and known state, and the
    /// accounts Usher keeps for users that were deleted.
    async fn user_views(
        &self,
        integration: &str,
        pb: &Playbook,
    ) -> Result<Vec<UserView>, ReconcileError> {
        let resources = self
            .store
            .list_resources(integration, ResourceType::User, None)
            .await?;
        let ids: Vec<&str> = resources.iter().map(|r| r.id.as_str()).collect();
        let groups = self.store.groups_of(integration, &ids).await?;
        let mut known = known_accounts(&self.store, integration).await?;
        let mut out = Vec::with_capacity(resources.len());
        for r in &resources {
            let user = super::user::user_context_with_groups(&r.data, groups.get(&r.id));
            let desired = AccountState::desired(&user, pb);
            out.push(UserView {
                resource_id: r.id.clone(),
                user_name: user.user_name.clone(),
                email: user.email.clone(),
                desired: Some(desired),
                known: known.remove(&r.id),
            });
        }
        for (id, (app, state)) in known {
            out.push(UserView {
                resource_id: id,
                user_name: state.user_name.clone(),
                email: state.email.clone(),
                desired: None,
                known: Some((app, state)),
            });
        }
        Ok(out)
    }
}

/// What Usher last confirmed in the app for each SCIM user of `integration` (and for
/// deleted users whose account is kept): user id → (app id, state). Discovered
/// accounts' rows are not users'.
pub(super) async fn known_accounts(
    store: &crate::store::Store,
    integration: &str,
) -> Result<HashMap<String, (Option<String>, AccountState)>, crate::store::StoreError> {
    Ok(store
        .app_accounts_of(integration)
        .await?
        .into_iter()
        .filter(|(id, _, _)| !id.starts_with(DISCOVERED_PREFIX))
        .filter_map(|(id, app, s)| AccountState::from_json(&s).map(|s| (id, (app, s))))
        .collect())
}

/// Runs the schedules of every integration that has one (reconciliation, canary), on
/// this node while it holds their lease, until the engine stops.
pub(crate) async fn schedule_loop(shared: Arc<Shared>) {
    let mut scheduled: Vec<(String, &'static str, Duration)> = Vec::new();
    for i in shared.integrations.values() {
        if let Some(every) = i.config.reconcile.every {
            scheduled.push((i.config.id.clone(), SCHEDULE_RECONCILE, every));
        }
        if let Some(every) = i.config.canary.every {
            scheduled.push((i.config.id.clone(), SCHEDULE_CANARY, every));
        }
        if let Some(every) = i.config.rotate_password.every {
            scheduled.push((i.config.id.clone(), SCHEDULE_ROTATE, every));
        }
        if let Some(every) = i.config.sso.as_ref().and_then(|s| s.rotate_every) {
            scheduled.push((i.config.id.clone(), SCHEDULE_SSO_ROTATE, every));
        }
    }
    if scheduled.is_empty() {
        return;
    }
    scheduled.sort();
    let mut stop = shared.stop_signal();
    let owner = format!("{}/schedules", shared.process());
    while !shared.is_stopping() {
        for (id, kind, every) in &scheduled {
            if shared.is_stopping() {
                break;
            }
            match shared
                .store
                .claim_schedule(id, kind, &owner, SCHEDULE_LEASE)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(integration = %id, schedule = kind, error = %e, "claiming a schedule failed");
                    continue;
                }
            }
            let (result, next_in) = run_scheduled(&shared, id, kind, *every).await;
            if let Err(e) = shared
                .store
                .finish_schedule(id, kind, &owner, next_in, &result)
                .await
            {
                tracing::warn!(integration = %id, schedule = kind, error = %e, "recording a schedule's run failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SCHEDULE_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One scheduled run: its result as the schedule keeps it, and when it is due again.
async fn run_scheduled(
    shared: &Arc<Shared>,
    id: &str,
    kind: &str,
    every: Duration,
) -> (Value, Duration) {
    let failed = |reason: String| {
        tracing::warn!(integration = %id, schedule = kind, %reason, "a scheduled run failed");
        json!({"ok": false, "reason": reason})
    };
    if kind == SCHEDULE_CANARY {
        let result = match shared.canary(id).await {
            Ok(r) => json!({"ok": true, "status": r.status, "findings": r.findings.len()}),
            Err(e) => failed(e.to_string()),
        };
        return (result, every);
    }
    if kind == SCHEDULE_ROTATE {
        return rotate_scheduled(shared, id, every).await;
    }
    if kind == SCHEDULE_SSO_ROTATE {
        let login = super::SsoLogin {
            shared: shared.clone(),
        };
        return login.rotate_due(id, every).await;
    }
    let result = match shared.reconcile_configured(id, false, Actor::System).await {
        Ok(r) => json!({
            "ok": true, "listed": r.listed, "drifted": r.drifted, "missing": r.missing,
            "adopted": r.adopted, "discovered": r.discovered, "jobs": r.jobs.len(),
        }),
        Err(e) => {
            let event = NewEvent {
                actor: Actor::System,
                event_type: kinds::RECONCILE_FAILED,
                target: None,
                integration_id: Some(id.to_owned()),
                detail: json!({"reason": e.to_string()}),
            };
            if let Err(e) = shared.store.append_event(&event).await {
                tracing::warn!(error = %e, "recording a failed reconciliation failed");
            }
            failed(e.to_string())
        }
    };
    (result, every)
}

/// A scheduled rotation of the service account's password: when it is older than
/// `every` (else due again when it will be), with the crash-safe rotation protocol.
async fn rotate_scheduled(shared: &Shared, id: &str, every: Duration) -> (Value, Duration) {
    let retry = Duration::from_secs(3600).min(every);
    let Some(integ) = shared.integrations.get(id).cloned() else {
        return (json!({"ok": false, "reason": "no such integration"}), every);
    };
    let super::Secrets::Vault(vault) = shared.secrets() else {
        return (
            json!({"ok": false, "reason": "scheduled rotation needs the vault (usher serve)"}),
            every,
        );
    };
    let entry = integ.config.service_account.as_str();
    let changed = match shared.store.vault_get(entry).await {
        Ok(row) => match super::posture::password_changes(&shared.store, entry, row.as_ref()).await
        {
            Ok((changed, _)) => changed,
            Err(e) => return (json!({"ok": false, "reason": e.to_string()}), retry),
        },
        Err(e) => return (json!({"ok": false, "reason": e.to_string()}), retry),
    };
    if let Some(wait) = rotation_wait(changed.as_deref(), shared.clock.now(), every) {
        return (
            json!({"ok": true, "skipped": format!("the password was changed at {}", changed.unwrap_or_default())}),
            wait,
        );
    }
    if let Err(f) = shared.refresh_secret(&integ).await {
        return (json!({"ok": false, "reason": f.message}), retry);
    }
    match super::rotate_password(
        &shared.driver,
        &integ.target,
        vault,
        &integ.config.service_account,
        shared.run_options(),
    )
    .await
    {
        Ok(_) => {
            tracing::info!(integration = %id, "scheduled password rotation done");
            (json!({"ok": true, "rotated": true}), every)
        }
        Err(e) => {
            tracing::warn!(integration = %id, error = %e, "a scheduled password rotation failed");
            (json!({"ok": false, "reason": e.to_string()}), retry)
        }
    }
}

/// How long until a password changed at `changed` (RFC 3339; `None`: unknown, so due)
/// is `every` old; `None` when it is already.
fn rotation_wait(
    changed: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    every: Duration,
) -> Option<Duration> {
    let changed = chrono::DateTime::parse_from_rfc3339(changed?).ok()?;
    let age = (now - changed.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    every.checked_sub(age).filter(|w| !w.is_zero())
}

/// The schedule kind of reconciliation runs.
pub const SCHEDULE_RECONCILE: &str = "reconcile";
/// The schedule kind of canary runs.
pub const SCHEDULE_CANARY: &str = "canary";
/// The schedule kind of the rotations of people's own app passwords (single sign-on).
pub const SCHEDULE_SSO_ROTATE: &str = "rotate_user_passwords";
/// The schedule kind of password rotations.
pub const SCHEDULE_ROTATE: &str = "rotate_password";
/// How long a node holds a schedule it runs before another may take it (a run that
/// lists thousands of accounts page by page takes minutes).
const SCHEDULE_LEASE: Duration = Duration::from_secs(30 * 60);
/// How often a node looks for due schedules.
const SCHEDULE_POLL: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn account(id: &str, email: &str, roles: &[&str], active: bool) -> AppAccount {
        AppAccount {
            app_id: Some(id.to_owned()),
            email: Some(email.to_owned()),
            roles: Some(roles.iter().map(|r| (*r).to_owned()).collect()),
            active: Some(active),
            ..AppAccount::default()
        }
    }

    fn state(email: &str, roles: &[&str], active: bool) -> AccountState {
        AccountState {
            user_name: Some(email.to_owned()),
            email: Some(email.to_owned()),
            active,
            app_roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..AccountState::default()
        }
    }

    fn user(id: &str, email: &str, desired: &[&str], known: Option<(&str, &[&str])>) -> UserView {
        UserView {
            resource_id: id.to_owned(),
            user_name: Some(email.to_owned()),
            email: Some(email.to_owned()),
            desired: Some(state(email, desired, true)),
            known: known.map(|(app, roles)| (Some(app.to_owned()), state(email, roles, true))),
        }
    }

    fn roles(one: bool, no_role: Option<&str>) -> RoleView {
        RoleView {
            managed: ["viewer", "editor", "admin", "billing"]
                .into_iter()
                .map(String::from)
                .collect(),
            policy: AccountsPolicy {
                one_role: one,
                no_role: no_role.map(String::from),
            },
        }
    }

    #[test]
    fn a_rotation_is_due_when_the_password_is_as_old_as_the_policy() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00.000Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            rotation_wait(Some("2026-12-03T10:00:00.000Z"), now, 30 * day),
            Some(29 * day)
        );
        assert_eq!(
            rotation_wait(Some("2026-11-04T10:00:00.000Z"), now, 30 * day),
            None
        );
        assert_eq!(
            rotation_wait(Some("2026-01-01T00:00:00.000Z"), now, 30 * day),
            None
        );
        // Unknown or unreadable: due (better a rotation than a password of any age).
        assert_eq!(rotation_wait(None, now, 30 * day), None);
        assert_eq!(rotation_wait(Some("yesterday"), now, 30 * day), None);
    }

    #[test]
    fn a_listed_record_is_read_by_its_conventional_names() {
        let a = AppAccount::from_record(&rec(&[
            ("login", "Ann"),
            ("mail", "ann@x.example"),
            ("groups", "user, finance; Finance |admin"),
            ("status", "Deactivated"),
            ("app_id", " 42 "),
        ]));
        assert_eq!(a.app_id.as_deref(), Some("42"));
        assert_eq!(a.user_name.as_deref(), Some("Ann"));
        assert_eq!(a.email.as_deref(), Some("ann@x.example"));
        assert_eq!(
            a.roles,
            Some(vec![
                "user".to_owned(),
                "finance".to_owned(),
                "admin".to_owned()
            ])
        );
        assert_eq!(a.active, Some(false));
        assert_eq!(a.key().as_deref(), Some("42"));
        let b = AppAccount::from_record(&rec(&[("email", "Bob@X.example"), ("status", "?")]));
        assert_eq!((&b.roles, b.active), (&None, None));
        assert_eq!(b.key().as_deref(), Some("bob@x.example"));
        assert_eq!(parse_active("Active"), Some(true));
        assert_eq!(parse_active("inactive since May"), Some(false));
    }

    #[test]
    fn each_account_is_matched_and_classified() {
        let users = vec![
            user(
                "u-inline",
                "a@x.example",
                &["Editor"],
                Some(("1", &["Editor"])),
            ),
            user(
                "u-drift",
                "b@x.example",
                &["Editor"],
                Some(("2", &["Editor"])),
            ),
            user(
                "u-missing",
                "c@x.example",
                &["Viewer"],
                Some(("3", &["Viewer"])),
            ),
            user("u-adopt", "d@x.example", &["Viewer"], None),
            user("u-never", "e@x.example", &[], None),
        ];
        let accounts = vec![
            // Matched by app id although the email changed case.
            account("1", "A@X.example", &["Editor"], true),
            account("2", "b@x.example", &["Admin"], true),
            account("7", "d@x.example", &["Viewer"], true),
            account("8", "stranger@x.example", &["Admin"], true),
            account("9", "svc@x.example", &["Admin"], true),
            // A second account for the in-line user.
            account("10", "a@x.example", &["Viewer"], true),
        ];
        let f = classify(
            &users,
            &accounts,
            &roles(false, None),
            &["SVC@x.example".to_owned()],
            false,
        );
        let has = |pred: &dyn Fn(&Finding) -> bool| f.iter().filter(|x| pred(x)).count();
        assert_eq!(
            has(&|x| matches!(x, Finding::InLine { user } if user == "u-inline")),
            1,
            "{f:?}"
        );
        assert_eq!(
            has(&|x| matches!(x, Finding::Drifted { user, differences, .. }
                if user == "u-drift" && differences.len() == 1 && differences[0].contains("[admin]"))),
            1,
            "{f:?}"
        );
        assert_eq!(
            has(&|x| matches!(x, Finding::Missing { user } if user == "u-missing")),
            1
        );
        assert_eq!(
            has(&|x| matches!(x, Finding::Adoptable { user, account }
                if user == "u-adopt" && account.app_id.as_deref() == Some("7"))),
            1
        );
        assert_eq!(
            has(
                &|x| matches!(x, Finding::Orphan { account, protected: false, duplicate_of: None }
                if account.app_id.as_deref() == Some("8"))
            ),
            1
        );
        assert_eq!(
            has(&|x| matches!(
                x,
                Finding::Orphan {
                    protected: true,
                    ..
                }
            )),
            1,
            "the service account is protected: {f:?}"
        );
        assert_eq!(
            has(&|x| matches!(x, Finding::Orphan { duplicate_of: Some(u), .. } if u == "u-inline")),
            1
        );
        // A user never provisioned and not in the app is no finding.
        assert_eq!(f.len(), 7, "{f:?}");
    }

    #[test]
    fn one_role_apps_and_unmanaged_roles_compare_as_the_app_holds_them() {
        let one = roles(true, Some("Viewer"));
        // The app keeps the first mapped role; Viewer for none.
        assert!(
            differences(
                &state("a@x", &["Editor", "Viewer"], true),
                &account("1", "a@x", &["Editor"], true),
                &one
            )
            .is_empty()
        );
        assert!(
            differences(
                &state("a@x", &[], true),
                &account("1", "a@x", &["Viewer"], true),
                &one
            )
            .is_empty()
        );
        let d = differences(
            &state("a@x", &[], true),
            &account("1", "a@x", &["Admin"], false),
            &one,
        );
        assert_eq!(d.len(), 2, "{d:?}");
        // Roles the playbook never grants (an app's built-in group) are not compared.
        let many = roles(false, None);
        assert!(
            differences(
                &state("a@x", &["admin"], true),
                &account("1", "a@x", &["user", "admin"], true),
                &many
            )
            .is_empty()
        );
    }
}
