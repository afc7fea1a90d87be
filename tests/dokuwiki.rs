//! End to end against a real third-party admin UI: Debian's DokuWiki, its User Manager
//! driven by `playbooks/dokuwiki.yaml` in real headless Chromium, with the wiki's own
//! `conf/users.auth.php` as ground truth.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[path = "support/dokuwiki.rs"]
mod dokuwiki;

use std::path::Path;
use std::sync::Arc;

use usher::playbook::{
    self, ActionName, ActionStatus, Driver, DriverConfig, RunOptions, UserContext,
};
use usher::vault::Secret;

fn scim_user(
    user_name: &str,
    given: &str,
    family: &str,
    email: &str,
    roles: &[&str],
) -> UserContext {
    usher::engine::user_context(&serde_json::json!({
        "userName": user_name,
        "name": { "givenName": given, "familyName": family },
        "emails": [{ "value": email, "type": "work", "primary": true }],
        "active": true,
        "roles": roles.iter().map(|r| serde_json::json!({ "value": r })).collect::<Vec<_>>(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dokuwiki_user_manager_every_action_against_its_user_file() {
    let wiki = dokuwiki::DokuWiki::start().await.expect("DokuWiki starts");
    let rel = "playbooks/dokuwiki.yaml";
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).expect("playbook");
    let pb = match playbook::load_str(rel, &text) {
        Ok(pb) => Arc::new(pb),
        Err(e) => panic!("{e}"),
    };
    let driver = Driver::new(DriverConfig::default());
    let secret =
        Secret::new(wiki.admin_user.clone(), wiki.admin_password.clone(), None).expect("secret");
    let integ = driver
        .target("wiki", "DokuWiki", &wiki.base_url, pb, Arc::new(secret))
        .expect("integration");
    let run = |action: ActionName, user: UserContext| {
        let driver = &driver;
        let integ = &integ;
        async move {
            match driver
                .run(integ, action, user, &RunOptions::default())
                .await
            {
                Ok(o) => o,
                Err(e) => panic!("{action} failed: {e}"),
            }
        }
    };
    let find = |login: &str| {
        wiki.users()
            .expect("users")
            .into_iter()
            .find(|u| u.login == login)
    };

    // Joiner: login, create with groups mapped from SCIM roles.
    let jane = scim_user(
        "Jane.Doe@corp.example",
        "Jane",
        "Doe",
        "jane.doe@corp.example",
        &["Engineering"],
    );
    let out = run(ActionName::CreateUser, jane.clone()).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert_eq!(
        out.outputs.get("app_id").map(String::as_str),
        Some("jane.doe")
    );
    let u = find("jane.doe").expect("jane.doe in users.auth.php");
    assert_eq!(u.name, "Jane Doe");
    assert_eq!(u.mail, "jane.doe@corp.example");
    assert_eq!(
        u.groups,
        vec!["user".to_string(), "engineering".to_string()]
    );

    // A replayed joiner does not create a second account.
    let again = run(ActionName::CreateUser, jane.clone()).await;
    assert_eq!(again.status, ActionStatus::AlreadyDone);
    assert_eq!(
        wiki.users()
            .expect("users")
            .iter()
            .filter(|u| u.login == "jane.doe")
            .count(),
        1
    );

    // Mover: name and mail, then groups.
    let mut moved = scim_user(
        "Jane.Doe@corp.example",
        "Jane",
        "Smith",
        "jane.smith@corp.example",
        &["Engineering"],
    );
    moved.app_id = Some("jane.doe".into());
    run(ActionName::UpdateUser, moved.clone()).await;
    let u = find("jane.doe").expect("still there");
    assert_eq!(
        (u.name.as_str(), u.mail.as_str()),
        ("Jane Smith", "jane.smith@corp.example")
    );
    let mut regrouped = scim_user(
        "Jane.Doe@corp.example",
        "Jane",
        "Smith",
        "jane.smith@corp.example",
        &["Finance", "Editors"],
    );
    regrouped.app_id = Some("jane.doe".into());
    run(ActionName::SetRoles, regrouped.clone()).await;
    let u = find("jane.doe").expect("still there");
    let mut groups = u.groups.clone();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            "editors".to_string(),
            "finance".to_string(),
            "user".to_string()
        ]
    );

    // list_users returns every account the wiki has, across pages (20 a page; 22 accounts).
    for i in 0..20 {
        let name = format!("bulk{i:02}@corp.example");
        run(
            ActionName::CreateUser,
            scim_user(&name, "Bulk", &format!("N{i}"), &name, &[]),
        )
        .await;
    }
    let listed = run(ActionName::ListUsers, UserContext::default()).await;
    let truth = wiki.users().expect("users");
    assert_eq!(listed.records.len(), truth.len(), "{:?}", listed.records);
    for u in &truth {
        assert!(
            listed
                .records
                .iter()
                .any(|r| r.get("app_id") == Some(&u.login)),
            "{} listed",
            u.login
        );
    }

    // Reconciliation reads the wiki's list by its field names: login, mail, name, and
    // the groups (the wiki's own `user` group beside the mapped ones).
    let accounts: Vec<usher::engine::AppAccount> = listed
        .records
        .iter()
        .map(usher::engine::AppAccount::from_record)
        .collect();
    let jane_listed = accounts
        .iter()
        .find(|a| a.app_id.as_deref() == Some("jane.doe"))
        .expect("jane.doe read");
    assert_eq!(jane_listed.user_name.as_deref(), Some("jane.doe"));
    assert_eq!(
        jane_listed.email.as_deref(),
        Some("jane.smith@corp.example")
    );
    assert_eq!(jane_listed.display_name.as_deref(), Some("Jane Smith"));
    let mut shown = jane_listed.roles.clone().expect("groups read as roles");
    shown.sort();
    assert_eq!(shown, vec!["editors", "finance", "user"]);
    assert_eq!(jane_listed.active, None, "the wiki's list shows no state");
    assert!(
        accounts
            .iter()
            .any(|a| a.user_name.as_deref() == Some(wiki.admin_user.as_str())),
        "the service account is listed (reconciliation protects it)"
    );
    // The canary's probe of create_user: the add-user form as the steps use it.
    let probed = driver
        .probe(
            &integ,
            ActionName::CreateUser,
            UserContext::default(),
            &RunOptions::default(),
        )
        .await
        .expect("the probe passes on the wiki");
    assert!(probed.steps.len() >= 6, "{:?}", probed.steps);

    // Leaver: DokuWiki has no deactivation, so the playbook has no such action; delete.
    assert!(run_missing(&driver, &integ, ActionName::DeactivateUser, &regrouped).await);
    run(ActionName::DeleteUser, regrouped.clone()).await;
    assert!(find("jane.doe").is_none(), "jane.doe deleted");
    let gone = run(ActionName::DeleteUser, regrouped).await;
    assert_eq!(gone.status, ActionStatus::AlreadyDone);

    driver.shutdown().await.expect("browser closes");
    wiki.stop().await;
}

/// True when the playbook has no such action and the driver says so.
async fn run_missing(
    driver: &Driver,
    integ: &usher::playbook::AppTarget,
    action: ActionName,
    user: &UserContext,
) -> bool {
    match driver
        .run(integ, action, user.clone(), &RunOptions::default())
        .await
    {
        Ok(_) => false,
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("deactivate_user"), "{text}");
            true
        }
    }
}
