//! Notify's internal routes, called by logic only (with logic's tier credential): logic owns
//! the public face, its rate limits and client addresses; notify owns the addresses and the
//! secret links are signed with.
//!
//! - `POST /notify/v1/subscriptions` `{email, thread, comment?}` → 202 `{status}`
//! - `POST /notify/v1/confirm` `{token}` → 200 `{status, thread}`
//! - `POST /notify/v1/unsubscribe` `{token}` → 200 `{status, thread}`
//! - `POST /notify/v1/moderate` `{token}` → 200 `{action, comment, moderator}`, once per link
//! - `POST /notify/v1/addresses/export` `{email}` → 200 `{subscriptions}`
//! - `POST /notify/v1/addresses/erase` `{email}` → 200 `{erased}`

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use io360_common::Problem;
use io360_common::auth::Verifier;
use io360_common::extract::Json;
use io360_common::model::check_line_chars;
use serde::{Deserialize, Serialize};

use crate::link::{Action, LinkError, Signer};
use crate::outbox::{Outbox, OutboxError, Scope, Subscription};

/// Unconfirmed subscriptions one address may have at once: a flood of sign-ups in someone
/// else's name sends that person a few confirmations, not hundreds.
pub const MAX_PENDING_PER_ADDRESS: usize = 5;

/// A request to be told of new comments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Where to send them.
    pub email: String,
    /// The thread.
    pub thread: String,
    /// Only replies to this comment; absent: every new comment in the thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<u64>,
}

/// What became of a subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// `pending` (a confirmation was sent, or is on its way), `confirmed`, or `unsubscribed`.
    pub status: String,
    /// The thread.
    pub thread: String,
}

/// A signed link's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The `token` parameter of the link.
    pub token: String,
}

/// What a moderator's link is for, answered once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moderation {
    /// `approve` or `delete`.
    pub action: String,
    /// The comment.
    pub comment: u64,
    /// The moderator the link was sent to.
    pub moderator: String,
}

/// An address, for export and erase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// The address.
    pub email: String,
}

/// The subscriptions of an address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressExport {
    /// Every subscription, confirmed or not.
    pub subscriptions: Vec<Subscription>,
}

/// What an erase removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Erased {
    /// Subscriptions removed.
    pub erased: usize,
}

#[derive(Clone)]
struct AppState {
    outbox: Outbox,
    signer: Signer,
    wake: Arc<tokio::sync::Notify>,
}

pub(crate) fn router(
    outbox: Outbox,
    signer: Signer,
    wake: Arc<tokio::sync::Notify>,
    verifier: &Verifier,
) -> Router {
    let routes = Router::new()
        .route("/notify/v1/subscriptions", post(subscribe))
        .route("/notify/v1/confirm", post(confirm))
        .route("/notify/v1/unsubscribe", post(unsubscribe))
        .route("/notify/v1/moderate", post(moderate))
        .route("/notify/v1/addresses/export", post(export))
        .route("/notify/v1/addresses/erase", post(erase));
    verifier.guard(&["logic"], routes).with_state(AppState {
        outbox,
        signer,
        wake,
    })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn internal(e: OutboxError) -> Problem {
    Problem::internal(e)
}

async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, Problem> {
    let o = s.outbox.clone();
    tokio::task::spawn_blocking(move || f(&o))
        .await
        .map_err(Problem::internal)?
        .map_err(internal)
}

/// The address rules: one line, the shared address rule, and what the mail library takes as
/// an address (so a row queued can always be sent).
pub fn check_email(email: &str) -> Result<(), Problem> {
    check_line_chars(email).map_err(|rule| Problem::invalid("email", rule))?;
    io360_common::rules::email(email)?;
    email
        .parse::<lettre::Address>()
        .map_err(|_| Problem::invalid("email", "must be an address like name@example.org"))?;
    Ok(())
}

async fn subscribe(
    State(s): State<AppState>,
    Json(r): Json<SubscribeRequest>,
) -> Result<(StatusCode, axum::Json<SubscriptionState>), Problem> {
    check_email(&r.email)?;
    io360_common::rules::thread("thread", &r.thread)?;
    let sub = Subscription {
        v: 1,
        email: r.email.clone(),
        thread: r.thread.clone(),
        scope: r.comment.map_or(Scope::Thread, Scope::Replies),
        confirmed: false,
        created: now(),
    };
    let (queued, status) = blocking(&s, move |o| {
        if let Some(old) = o.subscription(&sub.thread, &sub.scope, &sub.email)?
            && old.confirmed
        {
            return Ok((false, Some("confirmed")));
        }
        let pending = o
            .subscriptions_of(&sub.email)?
            .iter()
            .filter(|s| !s.confirmed)
            .count();
        if pending >= MAX_PENDING_PER_ADDRESS
            && o.subscription(&sub.thread, &sub.scope, &sub.email)?
                .is_none()
        {
            return Ok((false, None));
        }
        Ok((o.subscribe(sub, now())?, Some("pending")))
    })
    .await?;
    let Some(status) = status else {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-pending-subscriptions",
            format!(
                "this address already has {MAX_PENDING_PER_ADDRESS} subscriptions waiting for \
                 confirmation; confirm one of them first"
            ),
        )
        .with_field("email"));
    };
    if queued {
        s.wake.notify_one();
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(SubscriptionState {
            status: status.into(),
            thread: r.thread,
        }),
    ))
}

fn link_problem(e: LinkError) -> Problem {
    let slug = match e {
        LinkError::Invalid => "invalid-link",
        LinkError::Expired => "expired-link",
    };
    Problem::new(StatusCode::BAD_REQUEST, slug, e.to_string()).with_field("token")
}

async fn confirm(
    State(s): State<AppState>,
    Json(r): Json<TokenRequest>,
) -> Result<axum::Json<SubscriptionState>, Problem> {
    let claim = s.signer.verify(&r.token, now()).map_err(link_problem)?;
    if claim.a != Action::Confirm {
        return Err(link_problem(LinkError::Invalid));
    }
    let (t, scope, e) = (claim.t.clone(), claim.s.clone(), claim.e.clone());
    if !blocking(&s, move |o| o.confirm(&t, &scope, &e)).await? {
        return Err(Problem::not_found(
            "no-such-subscription",
            "this subscription was withdrawn; subscribe again",
        ));
    }
    Ok(axum::Json(SubscriptionState {
        status: "confirmed".into(),
        thread: claim.t,
    }))
}

async fn unsubscribe(
    State(s): State<AppState>,
    Json(r): Json<TokenRequest>,
) -> Result<axum::Json<SubscriptionState>, Problem> {
    let claim = s.signer.verify(&r.token, now()).map_err(link_problem)?;
    if claim.a != Action::Unsubscribe {
        return Err(link_problem(LinkError::Invalid));
    }
    let (t, scope, e) = (claim.t.clone(), claim.s.clone(), claim.e.clone());
    blocking(&s, move |o| o.unsubscribe(&t, &scope, &e)).await?;
    Ok(axum::Json(SubscriptionState {
        status: "unsubscribed".into(),
        thread: claim.t,
    }))
}

async fn moderate(
    State(s): State<AppState>,
    Json(r): Json<TokenRequest>,
) -> Result<axum::Json<Moderation>, Problem> {
    let claim = s.signer.verify(&r.token, now()).map_err(link_problem)?;
    let (action, Scope::Replies(comment)) = (claim.a, claim.s) else {
        return Err(link_problem(LinkError::Invalid));
    };
    let action = match action {
        Action::Approve => "approve",
        Action::Delete => "delete",
        _ => return Err(link_problem(LinkError::Invalid)),
    };
    let token = r.token;
    if !blocking(&s, move |o| o.redeem(&token)).await? {
        return Err(Problem::new(
            StatusCode::GONE,
            "link-used",
            "this link was used already; each moderation link works once",
        )
        .with_field("token"));
    }
    Ok(axum::Json(Moderation {
        action: action.into(),
        comment,
        moderator: claim.e,
    }))
}

async fn export(
    State(s): State<AppState>,
    Json(r): Json<AddressRequest>,
) -> Result<axum::Json<AddressExport>, Problem> {
    check_email(&r.email)?;
    let subscriptions = blocking(&s, move |o| o.subscriptions_of(&r.email)).await?;
    Ok(axum::Json(AddressExport { subscriptions }))
}

async fn erase(
    State(s): State<AppState>,
    Json(r): Json<AddressRequest>,
) -> Result<axum::Json<Erased>, Problem> {
    check_email(&r.email)?;
    let erased = blocking(&s, move |o| o.erase(&r.email)).await?;
    Ok(axum::Json(Erased { erased }))
}
