//! Job claims on SQLite and PostgreSQL: per-user order, coalescing, supersession by a
//! delete, the per-integration limit, lease expiry and take-over, and operators' retry
//! and cancel. SCIM writes go through the real server (gateway only); claims are made
//! on its store as the engine's workers make them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[macro_use]
mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Db, TestServer, integration};
use usher::audit::{Actor, NewEvent};
use usher::clock::{Clock, SystemClock};
use usher::store::{JobFilter, JobFinish, Store};

const LEASE: Duration = Duration::from_secs(30);

async fn post_user(s: &TestServer, name: &str) -> String {
    let r = s
        .req(Method::POST, "a", "/Users")
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name})
                .to_string(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_string()
}

async fn patch_user(s: &TestServer, id: &str, title: &str) {
    let r = s
        .req(Method::PATCH, "a", &format!("/Users/{id}"))
        .header("content-type", "application/scim+json")
        .body(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": title}]}).to_string())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 204);
}

async fn jobs_of(store: &Store, id: &str) -> Vec<usher::store::JobRow> {
    let mut v = store
        .list_jobs(&JobFilter {
            resource_id: Some(id),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("jobs");
    v.reverse();
    v
}

fn event() -> NewEvent {
    NewEvent {
        actor: Actor::System,
        event_type: "job.succeeded",
        target: None,
        integration_id: Some("a".into()),
        detail: json!({}),
    }
}

async fn claims_keep_order_and_coalesce(db: Db) {
    let s = TestServer::start(db, vec![integration("a")]).await;
    let store = s.store().clone();
    let u = post_user(&s, "u@x.example").await;
    patch_user(&s, &u, "One").await;
    patch_user(&s, &u, "Two").await;
    let v = post_user(&s, "v@x.example").await;
    let uj = jobs_of(&store, &u).await;
    assert_eq!(uj.len(), 3);
    let c1 = store
        .claim_job("a", 10, "w1", LEASE)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(c1.job.id, uj[0].id, "oldest first");
    assert_eq!(
        c1.covers, uj[2].id,
        "the run covers every queued job of the user"
    );
    assert_eq!(c1.job.attempts, 1);
    // The user's later jobs wait for the running one; the other user's does not.
    let c2 = store
        .claim_job("a", 10, "w2", LEASE)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(c2.job.resource_id, v);
    assert!(
        store
            .claim_job("a", 10, "w3", LEASE)
            .await
            .expect("claim")
            .is_none()
    );
    // A change that arrives during the run is not covered by it.
    patch_user(&s, &u, "Three").await;
    assert!(
        store
            .finish_job(
                &c1,
                &JobFinish::Succeeded,
                &json!({}),
                Some(("provisioned", None)),
                &event()
            )
            .await
            .expect("finish")
    );
    let uj = jobs_of(&store, &u).await;
    let status: Vec<&str> = uj.iter().map(|j| j.status.as_str()).collect();
    assert_eq!(status, ["succeeded", "superseded", "superseded", "pending"]);
    assert_eq!(uj[1].superseded_by, Some(uj[0].id));
    let c3 = store
        .claim_job("a", 10, "w1", LEASE)
        .await
        .expect("claim")
        .expect("the new change");
    assert_eq!(c3.job.id, uj[3].id);
    // Finishing twice, or by another owner, is refused.
    assert!(
        !store
            .finish_job(&c1, &JobFinish::Succeeded, &json!({}), None, &event())
            .await
            .expect("finish")
    );
    s.stop().await;
}

async fn delete_supersedes_and_limit_holds(db: Db) {
    let s = TestServer::start(db, vec![integration("a")]).await;
    let store = s.store().clone();
    let y = post_user(&s, "y@x.example").await;
    patch_user(&s, &y, "One").await;
    let r = s
        .req(Method::DELETE, "a", &format!("/Users/{y}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    let yj = jobs_of(&store, &y).await;
    let status: Vec<&str> = yj.iter().map(|j| j.status.as_str()).collect();
    assert_eq!(status, ["superseded", "superseded", "pending"]);
    assert_eq!(yj[2].operation, usher::store::JobOperation::Delete);
    assert_eq!(yj[0].superseded_by, Some(yj[2].id));
    // Per-integration limit: with one slot, a second job waits.
    let z = post_user(&s, "z@x.example").await;
    let c = store
        .claim_job("a", 1, "w1", LEASE)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(c.job.id, yj[2].id);
    assert!(
        store
            .claim_job("a", 1, "w2", LEASE)
            .await
            .expect("claim")
            .is_none(),
        "limit 1"
    );
    let c2 = store
        .claim_job("a", 2, "w2", LEASE)
        .await
        .expect("claim")
        .expect("limit 2");
    assert_eq!(c2.job.resource_id, z);
    s.stop().await;
}

async fn expired_leases_are_taken_over(db: Db) {
    let s = TestServer::start(db, vec![integration("a")]).await;
    let store = s.store().clone();
    let u = post_user(&s, "lease@x.example").await;
    let short = Duration::from_secs(2);
    let c1 = store
        .claim_job("a", 10, "dead-worker", short)
        .await
        .expect("claim")
        .expect("job");
    assert!(
        store
            .heartbeat(c1.job.id, "dead-worker", short)
            .await
            .expect("hb")
    );
    assert!(
        store
            .claim_job("a", 10, "w2", LEASE)
            .await
            .expect("claim")
            .is_none(),
        "lease is live"
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let c2 = store
        .claim_job("a", 10, "w2", LEASE)
        .await
        .expect("claim")
        .expect("taken over");
    assert_eq!((c2.job.id, c2.job.attempts), (c1.job.id, 2));
    assert_eq!(c2.job.resource_id, u);
    // The old owner has lost it: no heartbeat, no finish.
    assert!(
        !store
            .heartbeat(c1.job.id, "dead-worker", short)
            .await
            .expect("hb")
    );
    assert!(
        !store
            .finish_job(&c1, &JobFinish::Succeeded, &json!({}), None, &event())
            .await
            .expect("finish")
    );
    // Retry puts it back with its error; an operator can cancel a pending job and
    // queue a failed one again.
    let later = usher::clock::format_time(SystemClock.now() + chrono::Duration::seconds(3600));
    assert!(
        store
            .finish_job(
                &c2,
                &JobFinish::Retry {
                    run_after: later,
                    error: "timeout".into()
                },
                &json!({}),
                None,
                &event()
            )
            .await
            .expect("retry")
    );
    let j = store.job(c1.job.id).await.expect("job").expect("exists");
    assert_eq!(
        (j.status.as_str(), j.last_error.as_deref()),
        ("pending", Some("timeout"))
    );
    assert!(
        store
            .claim_job("a", 10, "w3", LEASE)
            .await
            .expect("claim")
            .is_none(),
        "backoff holds it"
    );
    let mut op = event();
    op.event_type = "job.cancelled";
    assert!(store.cancel_job(j.id, &op).await.expect("cancel"));
    assert!(!store.cancel_job(j.id, &op).await.expect("cancel twice"));
    op.event_type = "job.requeued";
    assert!(store.requeue_job(j.id, &op).await.expect("requeue"));
    let again = store
        .claim_job("a", 10, "w3", LEASE)
        .await
        .expect("claim")
        .expect("requeued");
    assert_eq!((again.job.id, again.job.attempts), (j.id, 1));
    store.verify_audit_chain().await.expect("chain");
    s.stop().await;
}

on_both_databases!(
    claims_keep_order_and_coalesce,
    delete_supersedes_and_limit_holds,
    expired_leases_are_taken_over,
);
