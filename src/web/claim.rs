//! The invite claim page of `invites: on_claim` (a joiner's account is created only
//! once they claim it at their link).
//!
//! The link is a capability: whoever holds the token can claim. GET only shows a page
//! with a button; the claim itself is a POST, so that mail scanners and link previews
//! that fetch URLs do not claim on the joiner's behalf.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::audit::{Actor, NewEvent, kinds};
use crate::store::{JobStatus, Store};

/// Routes under `/claim`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/claim/{token}", get(show).post(claim))
        .with_state(store)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:36rem;margin:4rem auto\"><h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

fn token_ok(t: &str) -> bool {
    (20..=100).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn show(State(store): State<Store>, Path(token): Path<String>) -> Response {
    if !token_ok(&token) {
        return page(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "<p>This link is not valid.</p>",
        );
    }
    match store.staged_invite(&token).await {
        Ok(Some(job)) if job.status == JobStatus::Staged => page(
            StatusCode::OK,
            "Claim your access",
            &format!(
                "<p>Your account is ready to be set up.</p>\
                 <form method=\"post\" action=\"/claim/{token}\"><button type=\"submit\">Set up my account</button></form>"
            ),
        ),
        Ok(Some(_)) => page(
            StatusCode::OK,
            "Already claimed",
            "<p>This access has already been claimed; your account is being set up or is ready.</p>",
        ),
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "<p>This link is not valid.</p>",
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading an invite failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>Please try again in a moment.</p>",
            )
        }
    }
}

async fn claim(State(store): State<Store>, Path(token): Path<String>) -> Response {
    if !token_ok(&token) {
        return page(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "<p>This link is not valid.</p>",
        );
    }
    let r = store
        .claim_invite(&token, |job| NewEvent {
            actor: Actor::System,
            event_type: kinds::INVITE_CLAIMED,
            target: Some(job.resource_id.clone()),
            integration_id: Some(job.integration_id.clone()),
            detail: json!({"job": job.id}),
        })
        .await;
    match r {
        Ok(Some(_)) => page(
            StatusCode::OK,
            "Thank you",
            "<p>Your account is being set up now.</p>",
        ),
        Ok(None) => show(State(store), Path(token)).await,
        Err(e) => {
            tracing::error!(error = %e, "claiming an invite failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>Please try again in a moment.</p>",
            )
        }
    }
}
