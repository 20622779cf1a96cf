//! The public face of email notifications: subscribing (rate-limited like posting), and the
//! confirm and unsubscribe links in messages. Logic checks the request and the client's
//! limits and hands over to the notify tier, which keeps the addresses and signs the links.
//!
//! A link's GET shows a small page with a button (a form POST, no JavaScript): mail scanners
//! that open every link in a message must not confirm or unsubscribe anyone. The POST acts,
//! and is also what a mail client's one-click unsubscribe (RFC 8058) sends.

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use io360_common::Problem;
use io360_common::extract::{Json, Query};
use io360_common::html::escape;
use io360_notify::api::SubscribeRequest;
use serde::Deserialize;

use crate::api::{Client, check_thread, limit_writes};
use crate::state::AppState;

/// Longest link token accepted.
const MAX_TOKEN: usize = 2048;

/// The routes; every one answers 404 when the site has no notify tier.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications/subscribe", post(subscribe))
        .route(
            "/api/v1/notifications/confirm",
            get(confirm_page).post(confirm),
        )
        .route(
            "/api/v1/notifications/unsubscribe",
            get(unsubscribe_page).post(unsubscribe),
        )
        .route(
            "/api/v1/notifications/moderate",
            get(moderate_page).post(moderate),
        )
}

fn notify(s: &AppState) -> Result<&io360_notify::NotifyClient, Problem> {
    s.notify.as_ref().ok_or_else(|| {
        Problem::not_found(
            "notifications-off",
            "this site does not send email notifications",
        )
    })
}

async fn subscribe(
    State(s): State<AppState>,
    client: Client,
    Json(r): Json<SubscribeRequest>,
) -> Result<Response, Problem> {
    let notify = notify(&s)?;
    check_thread(&r.thread)?;
    io360_notify::api::check_email(&r.email)?;
    limit_writes(&s, client.0)?;
    let state = notify.subscribe(&r).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(state)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    token: String,
}

fn check_token(t: &str) -> Result<(), Problem> {
    if t.is_empty() || t.len() > MAX_TOKEN {
        return Err(Problem::invalid(
            "token",
            format!("must be the token of a link from a message (1 to {MAX_TOKEN} bytes)"),
        ));
    }
    Ok(())
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title></head>\
         <body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    ))
}

fn form(action: &str, token: &str, button: &str, note: &str) -> Html<String> {
    page(
        button,
        &format!(
            "<p>{}</p><form method=\"post\" action=\"/api/v1/notifications/{action}?token={}\">\
             <button type=\"submit\">{}</button></form>",
            escape(note),
            escape(token),
            escape(button)
        ),
    )
}

async fn confirm_page(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    notify(&s)?;
    check_token(&q.token)?;
    Ok(form(
        "confirm",
        &q.token,
        "Confirm",
        "Confirm that you want emails about new comments.",
    ))
}

async fn confirm(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    let notify = notify(&s)?;
    check_token(&q.token)?;
    let state = notify.confirm(&q.token).await?;
    Ok(page(
        "Confirmed",
        &format!(
            "<p>You will get an email about new comments on {}. Every email has a link to stop them.</p>",
            escape(&state.thread)
        ),
    ))
}

async fn unsubscribe_page(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    notify(&s)?;
    check_token(&q.token)?;
    Ok(form(
        "unsubscribe",
        &q.token,
        "Unsubscribe",
        "Stop emails about new comments.",
    ))
}

async fn unsubscribe(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    let notify = notify(&s)?;
    check_token(&q.token)?;
    let state = notify.unsubscribe(&q.token).await?;
    Ok(page(
        "Unsubscribed",
        &format!("<p>No more emails about {}.</p>", escape(&state.thread)),
    ))
}

async fn moderate_page(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    notify(&s)?;
    check_token(&q.token)?;
    Ok(form(
        "moderate",
        &q.token,
        "Go ahead",
        "Approve or delete the held comment, as the link in the email said.",
    ))
}

async fn moderate(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> Result<Html<String>, Problem> {
    let notify = notify(&s)?;
    check_token(&q.token)?;
    let m = notify.moderate(&q.token).await?;
    let approve = m.action == "approve";
    crate::admin::moderate_by_link(&s, approve, m.comment).await?;
    Ok(page(
        if approve { "Approved" } else { "Deleted" },
        &format!(
            "<p>Comment {} is {}.</p>",
            m.comment,
            if approve { "approved" } else { "deleted" }
        ),
    ))
}
