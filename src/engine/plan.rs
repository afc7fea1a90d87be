//! From desired state to actions: compares what the IdP declared with what the app is
//! known to have (the state last confirmed by a read-back) and lists the playbook
//! actions that close the gap, in the order they must run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Leavers;
use crate::playbook::UserContext;
use crate::playbook::{ActionName, Playbook};

/// The parts of a user that a playbook can change in an app, as compared between the
/// desired state and the app's known state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub manager: Option<String>,
    pub active: bool,
    /// App roles after the playbook's `roles` mapping, sorted.
    pub app_roles: Vec<String>,
    /// Set when the account was adopted (found already there): its attributes are
    /// unknown, so the next plan updates them.
    #[serde(default)]
    pub attributes_unknown: bool,
    /// Same for its roles.
    #[serde(default)]
    pub roles_unknown: bool,
    /// Set before `create_user` runs and cleared when it was confirmed: a crash in
    /// between leaves an account that may or may not exist, so the next run checks.
    #[serde(default)]
    pub pending_create: bool,
}

impl AccountState {
    /// The state a user context asks for.
    pub fn desired(user: &UserContext, playbook: &Playbook) -> AccountState {
        let mut names = user.roles.clone();
        names.extend(user.groups.iter().cloned());
        let mut app_roles = playbook.map_roles_detailed(&names).app_roles;
        app_roles.sort();
        AccountState {
            user_name: user.user_name.clone(),
            email: user.email.clone(),
            given_name: user.given_name.clone(),
            family_name: user.family_name.clone(),
            display_name: user.display_name.clone(),
            title: user.title.clone(),
            department: user.department.clone(),
            manager: user.manager.clone(),
            active: user.active.unwrap_or(true),
            app_roles,
            attributes_unknown: false,
            roles_unknown: false,
            pending_create: false,
        }
    }

    fn attributes_differ(&self, other: &AccountState) -> bool {
        self.attributes_unknown
            || other.attributes_unknown
            || (
                &self.user_name,
                &self.email,
                &self.given_name,
                &self.family_name,
                &self.display_name,
                &self.title,
                &self.department,
                &self.manager,
            ) != (
                &other.user_name,
                &other.email,
                &other.given_name,
                &other.family_name,
                &other.display_name,
                &other.title,
                &other.department,
                &other.manager,
            )
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn from_json(v: &Value) -> Option<AccountState> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// The actions that take the app from `known` to `desired` (`None` = the user was deleted
/// in the IdP), in order: reactivate before changes, deactivate after them.
pub fn plan(
    known: Option<&AccountState>,
    desired: Option<&AccountState>,
    leavers: Leavers,
) -> Vec<ActionName> {
    use ActionName::*;
    // An interrupted create: the account may exist. Create again (its precondition or
    // the engine's look-up finds it) or, for a leaver, remove it (its precondition
    // makes that a no-op when there is nothing).
    let known = match known {
        Some(k) if k.pending_create => {
            return match desired {
                Some(d) if d.active => vec![CreateUser],
                Some(_) => vec![CreateUser, DeactivateUser],
                None => match leavers {
                    Leavers::Delete => vec![DeleteUser],
                    Leavers::Deactivate => vec![DeactivateUser],
                },
            };
        }
        k => k,
    };
    match (known, desired) {
        (None, None) => vec![],
        (Some(k), None) => match leavers {
            Leavers::Delete => vec![DeleteUser],
            Leavers::Deactivate if k.active => vec![DeactivateUser],
            Leavers::Deactivate => vec![],
        },
        (None, Some(d)) => {
            if d.active {
                vec![CreateUser]
            } else {
                vec![CreateUser, DeactivateUser]
            }
        }
        (Some(k), Some(d)) => {
            let mut out = Vec::new();
            if d.active && !k.active {
                out.push(ReactivateUser);
            }
            if d.attributes_differ(k) {
                out.push(UpdateUser);
            }
            if k.roles_unknown || d.app_roles != k.app_roles {
                out.push(SetRoles);
            }
            if !d.active && k.active {
                out.push(DeactivateUser);
            }
            out
        }
    }
}

/// Actions of a plan that the playbook cannot do. Changes to an adopted account's
/// unknown attributes are best effort, so those are not reported.
pub fn missing_actions(
    playbook: &Playbook,
    actions: &[ActionName],
    adopted: bool,
) -> Vec<ActionName> {
    actions
        .iter()
        .copied()
        .filter(|a| !playbook.actions.contains_key(a))
        .filter(|a| !(adopted && matches!(a, ActionName::UpdateUser | ActionName::SetRoles)))
        .collect()
}

/// The state the app has after `action` succeeded, starting from `before`.
pub fn after(
    action: ActionName,
    before: Option<&AccountState>,
    desired: Option<&AccountState>,
) -> Option<AccountState> {
    use ActionName::*;
    let mut s = before.cloned().or_else(|| desired.cloned())?;
    let d = desired.cloned().unwrap_or_else(|| s.clone());
    match action {
        CreateUser => {
            s = d;
            s.active = true;
            s.pending_create = false;
        }
        UpdateUser => {
            let (active, roles, roles_unknown) = (s.active, s.app_roles.clone(), s.roles_unknown);
            s = d;
            s.active = active;
            s.app_roles = roles;
            s.roles_unknown = roles_unknown;
        }
        SetRoles => {
            s.app_roles = d.app_roles;
            s.roles_unknown = false;
        }
        DeactivateUser => s.active = false,
        ReactivateUser => s.active = true,
        DeleteUser => return None,
        ListUsers | RotatePassword | EnableMfa | SetUserPassword => {}
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionName::*;

    fn st(active: bool, given: &str, roles: &[&str]) -> AccountState {
        AccountState {
            user_name: Some("a@x".into()),
            email: Some("a@x".into()),
            given_name: Some(given.into()),
            active,
            app_roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn joiner_mover_leaver() {
        let d = st(true, "Ann", &["Editor"]);
        assert_eq!(plan(None, Some(&d), Leavers::Delete), vec![CreateUser]);
        assert_eq!(
            plan(Some(&d), Some(&d), Leavers::Delete),
            Vec::<ActionName>::new()
        );
        let renamed = st(true, "Anna", &["Editor"]);
        assert_eq!(
            plan(Some(&d), Some(&renamed), Leavers::Delete),
            vec![UpdateUser]
        );
        let promoted = st(true, "Ann", &["Admin"]);
        assert_eq!(
            plan(Some(&d), Some(&promoted), Leavers::Delete),
            vec![SetRoles]
        );
        let both = st(true, "Anna", &["Admin"]);
        assert_eq!(
            plan(Some(&d), Some(&both), Leavers::Delete),
            vec![UpdateUser, SetRoles]
        );
        let off = st(false, "Ann", &["Editor"]);
        assert_eq!(
            plan(Some(&d), Some(&off), Leavers::Delete),
            vec![DeactivateUser]
        );
        assert_eq!(
            plan(Some(&off), Some(&d), Leavers::Delete),
            vec![ReactivateUser]
        );
        assert_eq!(plan(Some(&d), None, Leavers::Delete), vec![DeleteUser]);
        assert_eq!(
            plan(Some(&d), None, Leavers::Deactivate),
            vec![DeactivateUser]
        );
        assert_eq!(
            plan(Some(&off), None, Leavers::Deactivate),
            Vec::<ActionName>::new()
        );
        assert_eq!(plan(None, None, Leavers::Delete), Vec::<ActionName>::new());
        assert_eq!(
            plan(None, Some(&off), Leavers::Delete),
            vec![CreateUser, DeactivateUser]
        );
    }

    #[test]
    fn an_interrupted_create_is_checked_again() {
        let mut k = st(true, "Ann", &["Editor"]);
        k.pending_create = true;
        assert_eq!(
            plan(Some(&k), Some(&k.clone()), Leavers::Delete),
            vec![CreateUser]
        );
        assert_eq!(plan(Some(&k), None, Leavers::Delete), vec![DeleteUser]);
        let done = after(CreateUser, Some(&k), Some(&st(true, "Ann", &["Editor"]))).expect("s");
        assert!(!done.pending_create);
    }

    #[test]
    fn reactivation_comes_first_and_deactivation_last() {
        let off = st(false, "Ann", &["Editor"]);
        let back = st(true, "Anna", &["Admin"]);
        assert_eq!(
            plan(Some(&off), Some(&back), Leavers::Delete),
            vec![ReactivateUser, UpdateUser, SetRoles]
        );
        let on = st(true, "Ann", &["Editor"]);
        let leaving = st(false, "Anna", &["Admin"]);
        assert_eq!(
            plan(Some(&on), Some(&leaving), Leavers::Delete),
            vec![UpdateUser, SetRoles, DeactivateUser]
        );
    }

    #[test]
    fn adopted_accounts_are_brought_in_line() {
        let mut adopted = st(true, "", &[]);
        adopted.attributes_unknown = true;
        adopted.roles_unknown = true;
        let d = st(true, "Ann", &["Editor"]);
        assert_eq!(
            plan(Some(&adopted), Some(&d), Leavers::Delete),
            vec![UpdateUser, SetRoles]
        );
        let s = after(UpdateUser, Some(&adopted), Some(&d)).expect("state");
        let s = after(SetRoles, Some(&s), Some(&d)).expect("state");
        assert_eq!(
            plan(Some(&s), Some(&d), Leavers::Delete),
            Vec::<ActionName>::new()
        );
    }

    #[test]
    fn state_after_each_action() {
        let d = st(true, "Ann", &["Editor"]);
        let created = after(CreateUser, None, Some(&d)).expect("state");
        assert_eq!(created, d);
        let promoted = st(true, "Ann", &["Admin"]);
        let s = after(SetRoles, Some(&created), Some(&promoted)).expect("state");
        assert_eq!(s.app_roles, vec!["Admin".to_string()]);
        assert!(after(DeleteUser, Some(&s), None).is_none());
        let s = after(DeactivateUser, Some(&s), None).expect("state");
        assert!(!s.active);
    }
}
