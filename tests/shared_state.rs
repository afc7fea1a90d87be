//! State that every Usher process on one database shares (issue 9), on SQLite and
//! PostgreSQL: TOTP windows taken once across processes, the sign-in budget and the
//! pause of an integration, process heartbeats. Each "process" is its own store handle
//! with its own connection pool, as two `usher serve` processes would have.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Db, TestDb, TestServer, integration, open_store};
use usher::audit::{Actor, NewEvent};
use usher::store::{JobFilter, JobStatus, SignInAdmission};

fn event(kind: &'static str) -> NewEvent {
    NewEvent {
        actor: Actor::System,
        event_type: kind,
        target: None,
        integration_id: Some("a".into()),
        detail: json!({}),
    }
}

async fn totp_steps_are_taken_once_across_processes(db: Db) {
    let db = TestDb::new(db).await;
    let one = open_store(&db.url).await;
    let two = open_store(&db.url).await;
    // Both want step 100 and may go up to 101: one gets 100, the other 101, and a
    // third taker is told the last step used.
    let (a, b) = tokio::join!(
        one.take_totp_step("acct", 100, 101),
        two.take_totp_step("acct", 100, 101)
    );
    let got: BTreeSet<i64> = [a.expect("a"), b.expect("b")]
        .into_iter()
        .map(|r| r.expect("a step"))
        .collect();
    assert_eq!(got, BTreeSet::from([100, 101]));
    assert_eq!(
        one.take_totp_step("acct", 100, 101).await.expect("c"),
        Err(101)
    );
    // A later window is free again; other accounts are independent.
    assert_eq!(
        two.take_totp_step("acct", 103, 104).await.expect("d"),
        Ok(103)
    );
    assert_eq!(
        one.take_totp_step("other", 100, 101).await.expect("e"),
        Ok(100)
    );
    // A first take beyond `max` is refused too (its process used the earlier steps
    // without the database), and says when `wanted` opens; it then takes it.
    assert_eq!(
        one.take_totp_step("fresh", 302, 301).await.expect("j"),
        Err(301)
    );
    assert_eq!(
        two.take_totp_step("fresh", 302, 302).await.expect("k"),
        Ok(302)
    );
    // Many takers at once never share a step.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            s.take_totp_step("busy", 500, 520).await.expect("take")
        }));
    }
    let mut steps = BTreeSet::new();
    for t in tasks {
        assert!(steps.insert(t.await.expect("task").expect("step")));
    }
    assert_eq!(steps.len(), 8);
    // A step given back (no code typed from it) is free again, unless a later one was
    // taken meanwhile.
    assert_eq!(
        two.take_totp_step("back", 200, 201).await.expect("f"),
        Ok(200)
    );
    one.give_back_totp_step("back", 200)
        .await
        .expect("give back");
    assert_eq!(
        two.take_totp_step("back", 200, 201).await.expect("g"),
        Ok(200)
    );
    assert_eq!(
        one.take_totp_step("back", 200, 201).await.expect("h"),
        Ok(201)
    );
    two.give_back_totp_step("back", 200)
        .await
        .expect("stale give back");
    assert_eq!(
        one.take_totp_step("back", 200, 201).await.expect("i"),
        Err(201),
        "a give-back of an older step frees nothing"
    );
}

async fn sign_in_budget_and_pause_are_shared(db: Db) {
    let db = TestDb::new(db).await;
    let one = open_store(&db.url).await;
    let two = open_store(&db.url).await;
    let budget = Some((2, Duration::from_secs(900)));
    assert_eq!(
        one.admit_sign_in("a", "p1", budget).await.expect("1"),
        SignInAdmission::Admitted
    );
    assert_eq!(
        two.admit_sign_in("a", "p2", budget).await.expect("2"),
        SignInAdmission::Admitted
    );
    match one.admit_sign_in("a", "p1", budget).await.expect("3") {
        SignInAdmission::Budget { used, retry_at } => {
            assert_eq!(used, 2);
            assert!(retry_at.as_str() > "2000", "{retry_at}");
        }
        other => panic!("third attempt within the window: {other:?}"),
    }
    // Without a budget (the playbook can tell a refusal) only the pause stops sign-ins.
    assert_eq!(
        two.admit_sign_in("a", "p2", None).await.expect("4"),
        SignInAdmission::Admitted
    );
    assert_eq!(one.sign_in_attempts("a").await.expect("n"), 3);
    // Another integration has its own budget.
    assert_eq!(
        two.admit_sign_in("b", "p2", budget).await.expect("5"),
        SignInAdmission::Admitted
    );

    assert!(
        one.pause_integration(
            "a",
            "the app refused",
            Some("v3"),
            &event("integration.paused")
        )
        .await
        .expect("pause")
    );
    assert!(
        !two.pause_integration("a", "again", None, &event("integration.paused"))
            .await
            .expect("pause twice")
    );
    assert_eq!(
        two.admit_sign_in("a", "p2", None).await.expect("paused"),
        SignInAdmission::Paused {
            reason: "the app refused".into()
        }
    );
    let st = two
        .integration_state("a")
        .await
        .expect("state")
        .expect("row");
    assert!(st.is_paused());
    assert_eq!(st.paused_secret.as_deref(), Some("v3"));
    assert_eq!(two.paused_integrations().await.expect("paused").len(), 1);
    assert!(
        two.resume_integration("a", &event("integration.resumed"))
            .await
            .expect("resume")
    );
    assert!(
        !one.resume_integration("a", &event("integration.resumed"))
            .await
            .expect("resume twice")
    );
    assert!(one.paused_integrations().await.expect("none").is_empty());
    let kinds: Vec<String> = one
        .audit_events(None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(kinds, ["integration.paused", "integration.resumed"]);
}

async fn pausing_holds_queued_jobs_and_resuming_releases_them(db: Db) {
    let s = TestServer::start(db, vec![integration("a")]).await;
    let store = s.store().clone();
    let r = s
        .req(Method::POST, "a", "/Users")
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "p@x.example"})
                .to_string(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(
        store
            .pause_integration(
                "a",
                "sign-in refused: Invalid email or password",
                None,
                &event("integration.paused")
            )
            .await
            .expect("pause")
    );
    let jobs = store
        .list_jobs(&JobFilter {
            integration_id: Some("a"),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Paused);
    let res = store
        .get_resource("a", usher::store::ResourceType::User, &id)
        .await
        .expect("get")
        .expect("user");
    assert_eq!(res.provisioning.state, "pending");
    assert_eq!(
        res.provisioning.reason.as_deref(),
        Some("integration paused: sign-in refused: Invalid email or password")
    );
    assert!(
        store
            .resume_integration("a", &event("integration.resumed"))
            .await
            .expect("resume")
    );
    let job = store.job(jobs[0].id).await.expect("job").expect("row");
    assert_eq!(job.status, JobStatus::Pending);
    let res = store
        .get_resource("a", usher::store::ResourceType::User, &id)
        .await
        .expect("get")
        .expect("user");
    assert_eq!(res.provisioning.reason, None);
    s.stop().await;
}

async fn processes_register_and_beat(db: Db) {
    let db = TestDb::new(db).await;
    let one = open_store(&db.url).await;
    one.register_process("host:1:aa", "host", 1)
        .await
        .expect("register");
    one.register_process("host:2:bb", "host", 2)
        .await
        .expect("register");
    assert!(one.process_heartbeat("host:1:aa").await.expect("beat"));
    assert!(!one.process_heartbeat("host:3:cc").await.expect("unknown"));
    let live = one
        .live_processes(Duration::from_secs(5))
        .await
        .expect("live");
    assert_eq!(live.len(), 2);
    one.deregister_process("host:2:bb")
        .await
        .expect("deregister");
    let live = one
        .live_processes(Duration::from_secs(5))
        .await
        .expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, "host:1:aa");
}

/// A clock that starts at `base` (unix seconds) and runs in real time.
struct RunningFrom {
    base: i64,
    started: std::time::Instant,
}

impl usher::clock::Clock for RunningFrom {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let secs = self.base + i64::try_from(self.started.elapsed().as_secs()).unwrap_or(0);
        chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }
}

/// An enrolment confirms with a code `totp()` hands out (in this process only) and
/// signs in with the new seed at once. Near a window's end the confirmation takes
/// the next window's code; the sign-in must then wait for that window to open and
/// take the one after, never a code two windows ahead (which apps refuse).
async fn a_shared_tracker_waits_after_a_code_handed_out_near_the_end_of_a_window(db: Db) {
    let db = TestDb::new(db).await;
    let store = open_store(&db.url).await;
    let seed = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ";
    let spec = usher::vault::TotpSpec::parse(seed).expect("seed");
    // 28 s into window 40_000_000 (30 s periods): 2 s left.
    let clock = RunningFrom {
        base: 40_000_000 * 30 + 28,
        started: std::time::Instant::now(),
    };
    let tracker = usher::vault::TotpTracker::shared(store);
    let confirm = tracker.code(seed, &clock).expect("confirm code");
    assert_eq!(confirm, spec.code_for_step(40_000_001));
    tracker.reserve(seed, &clock).await.expect("reserve");
    let now = usher::clock::Clock::now(&clock).timestamp();
    assert!(
        now >= 40_000_001 * 30,
        "reserve returned at {now}, before window 40000001 opened"
    );
    assert_eq!(
        tracker.code(seed, &clock).expect("login code"),
        spec.code_for_step(40_000_002)
    );
}

on_both_databases!(
    a_shared_tracker_waits_after_a_code_handed_out_near_the_end_of_a_window,
    totp_steps_are_taken_once_across_processes,
    sign_in_budget_and_pause_are_shared,
    pausing_holds_queued_jobs_and_resuming_releases_them,
    processes_register_and_beat,
);
