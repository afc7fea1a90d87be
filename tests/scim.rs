//! SCIM gateway end to end: the real server on a loopback port, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[macro_use]
mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Db, TestServer, integration};

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": name, "type": "work", "primary": true}],
        "active": true
    })
}

async fn create(s: &TestServer, gw: &str, endpoint: &str, body: &Value) -> Value {
    let r = s
        .req(Method::POST, gw, endpoint)
        .json(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED, "create {endpoint}");
    r.json().await.expect("json")
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ct.starts_with("application/scim+json"),
        "error content type {ct}"
    );
    let body: Value = r.json().await.expect("error json");
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(body["status"], json!(status.as_u16().to_string()));
    (status, body)
}

async fn counts(s: &TestServer, gw: &str) -> (usize, usize, usize) {
    let users = s
        .store()
        .list_resources(gw, usher::store::ResourceType::User, None)
        .await
        .expect("list");
    let jobs = s
        .store()
        .list_jobs(&usher::store::JobFilter {
            integration_id: Some(gw),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .expect("jobs");
    let events = s
        .store()
        .audit_events(Some(gw), 1_000_000)
        .await
        .expect("audit");
    (users.len(), jobs.len(), events.len())
}

async fn replays_okta_fixtures(db: Db) {
    let s = TestServer::start(db, vec![integration("okta")]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scim/okta");
    let done = support::replay::replay_dir(&s.client, &s.root("okta"), s.token("okta"), &dir, "r1")
        .await
        .expect("okta fixtures replay");
    assert!(done.len() >= 5, "replayed {} files", done.len());
    // Replaying again (new run id) works against the same database.
    support::replay::replay_dir(&s.client, &s.root("okta"), s.token("okta"), &dir, "r2")
        .await
        .expect("second run");
    assert!(s.store().verify_audit_chain().await.expect("chain") > 0);
    s.stop().await;
}

async fn replays_entra_fixtures(db: Db) {
    let s = TestServer::start(db, vec![integration("entra")]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scim/entra");
    let done =
        support::replay::replay_dir(&s.client, &s.root("entra"), s.token("entra"), &dir, "r1")
            .await
            .expect("entra fixtures replay");
    assert!(done.len() >= 4, "replayed {} files", done.len());
    s.stop().await;
}

async fn integrations_are_isolated(db: Db) {
    let s = TestServer::start(db, vec![integration("a"), integration("b")]).await;
    let ua = create(&s, "a", "/Users", &user("same@x.example")).await;
    // The same userName in another integration is another user.
    let ub = create(&s, "b", "/Users", &user("same@x.example")).await;
    assert_ne!(ua["id"], ub["id"]);
    let a_id = ua["id"].as_str().expect("id");

    // b's token on a's gateway: 401 for every method.
    for (m, body) in [
        (Method::GET, None),
        (Method::PUT, Some(user("evil@x"))),
        (Method::DELETE, None),
    ] {
        let mut r = s
            .client
            .request(m.clone(), format!("{}/Users/{a_id}", s.root("a")))
            .bearer_auth(s.token("b"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|h| h.to_str().ok()),
            Some("Bearer realm=\"usher\"")
        );
        error_of(r).await;
    }
    // b's own gateway does not know a's user id.
    let r = s
        .req(Method::GET, "b", &format!("/Users/{a_id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .req(Method::PATCH, "b", &format!("/Users/{a_id}"))
        .json(&json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .req(Method::DELETE, "b", &format!("/Users/{a_id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Lists only show each gateway's own.
    let la: Value = s
        .req(Method::GET, "a", "/Users")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(la["totalResults"], json!(1));
    assert_eq!(la["Resources"][0]["id"], ua["id"]);
    // a's user is untouched.
    let got: Value = s
        .req(Method::GET, "a", &format!("/Users/{a_id}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(got["active"], json!(true));
    // No token and a wrong token, and an unknown gateway, are all 401.
    let r = s
        .client
        .get(format!("{}/Users", s.root("a")))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .client
        .get(format!("{}/Users", s.root("nope")))
        .bearer_auth(s.token("a"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

async fn bad_input_is_refused_and_writes_nothing(db: Db) {
    let s = TestServer::start_with(
        db,
        vec![integration("g")],
        "scim:\n  max_body_bytes: 4096\n",
    )
    .await;
    create(&s, "g", "/Users", &user("keep@x.example")).await;
    let before = counts(&s, "g").await;
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, Option<&str>)> = vec![
        ("malformed json", s.req(Method::POST, "g", "/Users").header("content-type", "application/scim+json").body("{\"userName\": "), StatusCode::BAD_REQUEST, Some("invalidSyntax")),
        ("not an object", s.req(Method::POST, "g", "/Users").header("content-type", "application/scim+json").body("[1,2]"), StatusCode::BAD_REQUEST, Some("invalidSyntax")),
        ("wrong schema", s.req(Method::POST, "g", "/Users").json(&json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"w@x"})), StatusCode::BAD_REQUEST, Some("invalidSyntax")),
        ("no userName", s.req(Method::POST, "g", "/Users").json(&json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"active":true})), StatusCode::BAD_REQUEST, Some("invalidValue")),
        ("wrong type", s.req(Method::POST, "g", "/Users").json(&json!({"userName":"t@x","active":"maybe"})), StatusCode::BAD_REQUEST, Some("invalidValue")),
        ("duplicate userName", s.req(Method::POST, "g", "/Users").json(&user("KEEP@x.example")), StatusCode::CONFLICT, Some("uniqueness")),
        ("oversize body", s.req(Method::POST, "g", "/Users").header("content-type", "application/scim+json").body(format!("{{\"userName\":\"{}\"}}", "a".repeat(10_000))), StatusCode::PAYLOAD_TOO_LARGE, None),
        ("wrong content type", s.req(Method::POST, "g", "/Users").header("content-type", "text/plain").body("userName=x"), StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
        ("bad filter", s.req(Method::GET, "g", "/Users?filter=userName%20eq"), StatusCode::BAD_REQUEST, Some("invalidFilter")),
        ("unknown filter attribute", s.req(Method::GET, "g", "/Users?filter=shoeSize%20gt%2042"), StatusCode::BAD_REQUEST, Some("invalidFilter")),
        ("hostile nesting", s.req(Method::GET, "g", &format!("/Users?filter={}", "(".repeat(5000))), StatusCode::BAD_REQUEST, Some("invalidFilter")),
        ("bad count", s.req(Method::GET, "g", "/Users?count=ten"), StatusCode::BAD_REQUEST, Some("invalidValue")),
        ("unknown endpoint", s.req(Method::GET, "g", "/Widgets"), StatusCode::NOT_FOUND, None),
    ];
    for (name, req, status, scim_type) in cases {
        let r = req.send().await.expect("send");
        let (got, body) = error_of(r).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(
            body.get("scimType").and_then(Value::as_str),
            scim_type,
            "{name}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
    // A PATCH with a bad path on a real user changes nothing either.
    let list: Value = s
        .req(Method::GET, "g", "/Users")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = list["Resources"][0]["id"].as_str().expect("id").to_string();
    let r = s
        .req(Method::PATCH, "g", &format!("/Users/{id}"))
        .json(&json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"name.givenName","value":"Changed"},{"op":"replace","path":"noSuchThing","value":"x"}]}))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], json!("invalidPath"));
    let r = s
        .req(Method::PATCH, "g", &format!("/Users/{id}"))
        .json(&json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[type eq","value":"x"}]}))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], json!("invalidPath"));
    assert_eq!(
        counts(&s, "g").await,
        before,
        "nothing was written by bad requests"
    );
    let got: Value = s
        .req(Method::GET, "g", &format!("/Users/{id}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(got["name"]["givenName"], json!("Ada"));
    s.stop().await;
}

/// Input a held-out battery of malformed requests found accepted: every case is an
/// RFC 7644 error document, and nothing of it is stored (resources, jobs, audit).
async fn strict_input_is_refused_and_writes_nothing(db: Db) {
    let s = TestServer::start(db, vec![integration("g")]).await;
    let u = create(&s, "g", "/Users", &user("keep@x.example")).await;
    let uid = u["id"].as_str().expect("id").to_string();
    let g = create(
        &s,
        "g",
        "/Groups",
        &json!({"displayName": "Keepers", "members": [{"value": uid}]}),
    )
    .await;
    let gid = g["id"].as_str().expect("id").to_string();
    let get = |path: String| {
        let s = &s;
        async move {
            s.req(Method::GET, "g", &path)
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let user_before = get(format!("/Users/{uid}")).await;
    let group_before = get(format!("/Groups/{gid}")).await;
    let before = counts(&s, "g").await;
    let patch_op = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let users = "/Users".to_string();
    let groups = "/Groups".to_string();
    let the_user = format!("/Users/{uid}");
    let the_group = format!("/Groups/{gid}");
    let cases: Vec<(&str, Method, &String, Value, &str)> = vec![
        // userName and group displayName: a string with a visible character and no control character.
        (
            "userName a number",
            Method::POST,
            &users,
            json!({"userName": 12345}),
            "invalidValue",
        ),
        (
            "userName empty",
            Method::POST,
            &users,
            json!({"userName": ""}),
            "invalidValue",
        ),
        (
            "userName whitespace",
            Method::POST,
            &users,
            json!({"userName": " \t "}),
            "invalidValue",
        ),
        (
            "userName with NUL",
            Method::POST,
            &users,
            json!({"userName": "bob\u{0}@x.example"}),
            "invalidValue",
        ),
        (
            "userName with BEL",
            Method::POST,
            &users,
            json!({"userName": "a\u{7}b@x.example"}),
            "invalidValue",
        ),
        (
            "userName with a newline",
            Method::POST,
            &users,
            json!({"userName": "a\nb@x.example"}),
            "invalidValue",
        ),
        (
            "userName a number on PUT",
            Method::PUT,
            &the_user,
            json!({"userName": 5}),
            "invalidValue",
        ),
        (
            "group displayName a number",
            Method::POST,
            &groups,
            json!({"displayName": 7}),
            "invalidValue",
        ),
        (
            "group displayName blank",
            Method::POST,
            &groups,
            json!({"displayName": "   "}),
            "invalidValue",
        ),
        (
            "group displayName with NUL",
            Method::POST,
            &groups,
            json!({"displayName": "x\u{0}"}),
            "invalidValue",
        ),
        // A multi-valued attribute is an array.
        (
            "emails a string",
            Method::POST,
            &users,
            json!({"userName": "m1@x.example", "emails": "a@example.com"}),
            "invalidSyntax",
        ),
        (
            "emails an object",
            Method::POST,
            &users,
            json!({"userName": "m2@x.example", "emails": {"value": "a@example.com"}}),
            "invalidSyntax",
        ),
        (
            "roles a string",
            Method::POST,
            &users,
            json!({"userName": "m3@x.example", "roles": "Admin"}),
            "invalidSyntax",
        ),
        (
            "emails a string on PUT",
            Method::PUT,
            &the_user,
            json!({"userName": "keep@x.example", "emails": "a@example.com"}),
            "invalidSyntax",
        ),
        (
            "members a string",
            Method::POST,
            &groups,
            json!({"displayName": "G2", "members": "someone"}),
            "invalidSyntax",
        ),
        (
            "members an object on PUT",
            Method::PUT,
            &the_group,
            json!({"displayName": "Keepers", "members": {"value": uid}}),
            "invalidSyntax",
        ),
        // PATCH: a value path that matches nothing is noTarget (only the Entra form creates).
        (
            "replace through an unmatched filter",
            Method::PATCH,
            &the_user,
            patch_op(
                json!([{"op": "replace", "path": "emails[value eq \"nobody@example.com\"].display", "value": "Nobody"}]),
            ),
            "noTarget",
        ),
        (
            "add through an unmatched filter",
            Method::PATCH,
            &the_user,
            patch_op(
                json!([{"op": "add", "path": "emails[value eq \"nobody@example.com\"].display", "value": "Nobody"}]),
            ),
            "noTarget",
        ),
        (
            "replace a whole unmatched element",
            Method::PATCH,
            &the_user,
            patch_op(
                json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@x.example"}}]),
            ),
            "noTarget",
        ),
        (
            "atomic: a good op, then an unmatched one",
            Method::PATCH,
            &the_user,
            patch_op(json!([
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "add", "path": "emails", "value": [{"value": "second@x.example", "type": "home"}]},
            {"op": "replace", "path": "emails[value eq \"nobody@example.com\"].display", "value": "Nobody"}])),
            "noTarget",
        ),
        (
            "PATCH userName a number",
            Method::PATCH,
            &the_user,
            patch_op(json!([{"op": "replace", "path": "userName", "value": 123}])),
            "invalidValue",
        ),
        (
            "PATCH path-less userName with a control character",
            Method::PATCH,
            &the_user,
            patch_op(json!([{"op": "replace", "value": {"userName": "x\u{1b}y"}}])),
            "invalidValue",
        ),
        (
            "PATCH path-less emails a string",
            Method::PATCH,
            &the_user,
            patch_op(json!([{"op": "add", "value": {"emails": "a@example.com"}}])),
            "invalidSyntax",
        ),
        (
            "PATCH group displayName empty",
            Method::PATCH,
            &the_group,
            patch_op(json!([{"op": "replace", "path": "displayName", "value": ""}])),
            "invalidValue",
        ),
        (
            "PATCH path-less members a string",
            Method::PATCH,
            &the_group,
            patch_op(json!([{"op": "replace", "value": {"members": "someone"}}])),
            "invalidSyntax",
        ),
        (
            "PATCH group member through an unmatched filter",
            Method::PATCH,
            &the_group,
            patch_op(
                json!([{"op": "replace", "path": "members[value eq \"nobody\"].display", "value": "x"}]),
            ),
            "noTarget",
        ),
    ];
    for (name, method, path, body, scim_type) in cases {
        let r = s
            .req(method, "g", path)
            .json(&body)
            .send()
            .await
            .expect("send");
        let (status, doc) = error_of(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {doc}");
        assert_eq!(doc["scimType"], json!(scim_type), "{name}: {doc}");
        assert!(
            doc["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        assert_eq!(counts(&s, "g").await, before, "{name} wrote something");
    }
    assert_eq!(get(format!("/Users/{uid}")).await, user_before);
    assert_eq!(get(format!("/Groups/{gid}")).await, group_before);
    // The documented Entra form still creates the element it names.
    let r = s
        .req(Method::PATCH, "g", &the_user)
        .json(&patch_op(json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "home@x.example"}])))
        .send()
        .await
        .expect("send");
    assert!(r.status().is_success(), "{}", r.status());
    let after = get(format!("/Users/{uid}")).await;
    assert!(
        after["emails"].as_array().is_some_and(|es| es
            .iter()
            .any(|e| e == &json!({"type": "home", "value": "home@x.example"}))),
        "{after}"
    );
    s.stop().await;
}

async fn writes_record_job_and_audit_event(db: Db) {
    let s = TestServer::start(db, vec![integration("j")]).await;
    let u = create(&s, "j", "/Users", &user("job@x.example")).await;
    let id = u["id"].as_str().expect("id");
    assert!(
        u.get("urn:usher:params:scim:schemas:extension:provisioning:2.0:User")
            .is_none(),
        "returned on request only"
    );
    let asked: Value = s
        .req(Method::GET, "j", &format!("/Users/{id}?attributes=urn:usher:params:scim:schemas:extension:provisioning:2.0:User"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        asked["urn:usher:params:scim:schemas:extension:provisioning:2.0:User"]["state"],
        json!("pending"),
        "{asked}"
    );
    assert!(
        asked["schemas"]
            .as_array()
            .expect("schemas")
            .contains(&json!(
                "urn:usher:params:scim:schemas:extension:provisioning:2.0:User"
            ))
    );
    let r = s
        .req(Method::PATCH, "j", &format!("/Users/{id}"))
        .json(&json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","value":{"active":"False"}}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .req(Method::DELETE, "j", &format!("/Users/{id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let jobs = s
        .store()
        .list_jobs(&usher::store::JobFilter {
            integration_id: Some("j"),
            resource_id: Some(id),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("jobs");
    let ops: Vec<&str> = jobs.iter().rev().map(|j| j.operation.as_str()).collect();
    assert_eq!(ops, ["create", "patch", "delete"]);
    // The leaver's job supersedes the ones still queued.
    let status: Vec<&str> = jobs.iter().rev().map(|j| j.status.as_str()).collect();
    assert_eq!(status, ["superseded", "superseded", "pending"]);
    let events = s.store().audit_events(Some("j"), 100).await.expect("audit");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["scim.create", "scim.patch", "scim.delete"]);
    assert!(
        events
            .iter()
            .all(|e| e.actor == "idp:j" && e.target.as_deref() == Some(id))
    );
    assert_eq!(s.store().verify_audit_chain().await.expect("chain"), 3);
    s.stop().await;
}

async fn etags_and_if_match(db: Db) {
    let s = TestServer::start(db, vec![integration("e")]).await;
    let r = s
        .req(Method::POST, "e", "/Users")
        .json(&user("etag@x.example"))
        .send()
        .await
        .expect("send");
    let etag = r
        .headers()
        .get("etag")
        .and_then(|h| h.to_str().ok())
        .expect("etag")
        .to_string();
    let location = r
        .headers()
        .get("location")
        .and_then(|h| h.to_str().ok())
        .expect("location")
        .to_string();
    let u: Value = r.json().await.expect("json");
    assert_eq!(u["meta"]["version"], json!(etag));
    assert_eq!(u["meta"]["location"], json!(location));
    let path = format!("/Users/{}", u["id"].as_str().expect("id"));
    let r = s
        .req(Method::PUT, "e", &path)
        .header("if-match", "W/\"999\"")
        .json(&user("etag@x.example"))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(r).await.0, StatusCode::PRECONDITION_FAILED);
    let r = s
        .req(Method::PUT, "e", &path)
        .header("if-match", &etag)
        .json(&user("etag2@x.example"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let new_etag = r
        .headers()
        .get("etag")
        .and_then(|h| h.to_str().ok())
        .expect("etag")
        .to_string();
    assert_ne!(new_etag, etag);
    let r = s
        .req(Method::GET, "e", &path)
        .header("if-none-match", &new_etag)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s
        .req(Method::DELETE, "e", &path)
        .header("if-match", &etag)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    s.stop().await;
}

async fn concurrent_group_patches_keep_every_member(db: Db) {
    let s = TestServer::start(db, vec![integration("c")]).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(
            create(&s, "c", "/Users", &user(&format!("m{i}@x.example"))).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let g = create(&s, "c", "/Groups", &json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Engineering"})).await;
    let gpath = format!("/Groups/{}", g["id"].as_str().expect("id"));
    let mut tasks = Vec::new();
    for id in &ids {
        let req = s.req(Method::PATCH, "c", &gpath).json(&json!({
            "schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"Add","path":"members","value":[{"value": id}]}]
        }));
        tasks.push(tokio::spawn(
            async move { req.send().await.map(|r| r.status()) },
        ));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("send"),
            StatusCode::NO_CONTENT
        );
    }
    let got: Value = s
        .req(Method::GET, "c", &gpath)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let members: Vec<&str> = got["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(members.len(), ids.len(), "no member was dropped");
    // Users show the group; a deleted user leaves it.
    let u: Value = s
        .req(Method::GET, "c", &format!("/Users/{}", ids[0]))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(u["groups"][0]["value"], g["id"]);
    assert_eq!(u["groups"][0]["display"], json!("Engineering"));
    s.req(Method::DELETE, "c", &format!("/Users/{}", ids[0]))
        .send()
        .await
        .expect("send");
    let got: Value = s
        .req(Method::GET, "c", &gpath)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        got["members"].as_array().expect("members").len(),
        ids.len() - 1
    );
    let filtered: Value = s
        .req(
            Method::GET,
            "c",
            &format!(
                "/Users?filter=groups.value%20eq%20%22{}%22",
                g["id"].as_str().expect("id")
            ),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(filtered["totalResults"], json!(ids.len() - 1));
    s.stop().await;
}

async fn lists_filter_sort_page_and_project(db: Db) {
    let s = TestServer::start(db, vec![integration("l")]).await;
    for (i, n) in ["carol", "alice", "bob", "dave", "eve"].iter().enumerate() {
        let mut u = user(&format!("{n}@x.example"));
        u["name"]["familyName"] = json!(format!("F{i}"));
        u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
            json!({"department": if i % 2 == 0 {"Eng"} else {"Ops"}});
        u["schemas"].as_array_mut().expect("schemas").push(json!(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ));
        create(&s, "l", "/Users", &u).await;
    }
    let get = |q: &str| {
        let r = s.req(Method::GET, "l", &format!("/Users?{q}"));
        async move {
            r.send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let v = get("filter=userName%20eq%20%22ALICE@x.example%22").await;
    assert_eq!(v["totalResults"], json!(1), "userName is case-insensitive");
    let v = get("filter=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department%20eq%20%22Eng%22%20and%20not%20(userName%20sw%20%22e%22)").await;
    assert_eq!(v["totalResults"], json!(2));
    let v =
        get("sortBy=userName&sortOrder=descending&startIndex=2&count=2&attributes=userName").await;
    assert_eq!(v["totalResults"], json!(5));
    assert_eq!(v["startIndex"], json!(2));
    assert_eq!(v["itemsPerPage"], json!(2));
    let names: Vec<&str> = v["Resources"]
        .as_array()
        .expect("r")
        .iter()
        .filter_map(|r| r["userName"].as_str())
        .collect();
    assert_eq!(names, ["dave@x.example", "carol@x.example"]);
    assert!(
        v["Resources"][0].get("name").is_none(),
        "attributes= projects"
    );
    assert!(
        v["Resources"][0].get("id").is_some(),
        "id is always returned"
    );
    let v = get("excludedAttributes=emails,name&count=1").await;
    assert!(v["Resources"][0].get("emails").is_none());
    assert!(v["Resources"][0].get("userName").is_some());
    let v = get("filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22bob%22%5D").await;
    assert_eq!(v["totalResults"], json!(1));
    let v = get("count=0").await;
    assert_eq!(v["totalResults"], json!(5));
    assert_eq!(v["Resources"], json!([]));
    s.stop().await;
}

async fn discovery_tells_the_truth(db: Db) {
    let s = TestServer::start(db, vec![integration("d")]).await;
    let spc: Value = s
        .req(Method::GET, "d", "/ServiceProviderConfig")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(spc["patch"]["supported"], json!(true));
    assert_eq!(spc["bulk"]["supported"], json!(false));
    assert_eq!(spc["filter"]["supported"], json!(true));
    assert_eq!(spc["etag"]["supported"], json!(true));
    assert_eq!(spc["sort"]["supported"], json!(true));
    let rts: Value = s
        .req(Method::GET, "d", "/ResourceTypes")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(rts["totalResults"], json!(2));
    let schemas: Value = s
        .req(Method::GET, "d", "/Schemas")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .expect("r")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for want in [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:usher:params:scim:schemas:extension:provisioning:2.0:User",
    ] {
        assert!(ids.contains(&want), "{want} in /Schemas");
    }
    let one = s
        .req(
            Method::GET,
            "d",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(one.status(), StatusCode::OK);
    let h = s
        .client
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .expect("send");
    assert_eq!(h.status(), StatusCode::OK);
    assert!(h.headers().get("x-request-id").is_some());
    s.stop().await;
}

on_both_databases!(
    replays_okta_fixtures,
    replays_entra_fixtures,
    integrations_are_isolated,
    bad_input_is_refused_and_writes_nothing,
    strict_input_is_refused_and_writes_nothing,
    writes_record_job_and_audit_event,
    etags_and_if_match,
    concurrent_group_patches_keep_every_member,
    lists_filter_sort_page_and_project,
    discovery_tells_the_truth,
);
