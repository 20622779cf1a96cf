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
//! - `GET /notify/v1/webhooks` → 200 `{webhooks, events}`
//! - `POST /notify/v1/webhooks` `{url, events, secret?}` → 201 the endpoint with its secret
//! - `DELETE /notify/v1/webhooks/{id}` → 200 `{deleted}`
//! - `GET /notify/v1/webhooks/{id}/deliveries` → 200 `{webhook, attempts}` (newest first)

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::StatusCode;
use io360_common::Problem;
use io360_common::auth::Verifier;
use io360_common::extract::Json;
use io360_common::model::check_line_chars;
use serde::{Deserialize, Serialize};

use crate::hooks::{Attempt, Endpoint, EventKind, RegisterError};
use crate::link::{Action, LinkError, Signer};
use crate::outbox::{Outbox, OutboxError, Scope, Subscription};
use crate::webhook::{UrlError, WebhookConfig};

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

/// A request to register a webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where deliveries are POSTed: an http:// or https:// URL.
    pub url: String,
    /// The event kinds it receives, e.g. `["comment.created", "comment.held"]`.
    pub events: Vec<String>,
    /// The signing secret (16 to 256 printable ASCII characters); absent: one is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A registered webhook endpoint, as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The event kinds it receives.
    pub events: Vec<EventKind>,
    /// When it was registered, Unix seconds.
    pub created: i64,
    /// Deliveries waiting for it.
    pub waiting: usize,
    /// The signing secret: shown once, in the answer to the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Every registered endpoint, and the kinds one may ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhooks {
    /// The endpoints.
    pub webhooks: Vec<Webhook>,
    /// Every event kind.
    pub events: Vec<EventKind>,
}

/// An endpoint's delivery log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryLog {
    /// The endpoint.
    pub webhook: Webhook,
    /// Its last attempts, newest first.
    pub attempts: Vec<Attempt>,
}

/// What a removal did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    /// Whether the endpoint existed (and is now gone, with its queue and log).
    pub deleted: bool,
}

#[derive(Clone)]
struct AppState {
    outbox: Outbox,
    signer: Signer,
    wake: Arc<tokio::sync::Notify>,
    wake_hooks: Arc<tokio::sync::Notify>,
    /// Whether a mail server is configured; without one, subscribing answers 404.
    email: bool,
    hooks: Arc<WebhookConfig>,
}

/// What the routes need beyond the database.
pub(crate) struct Wiring {
    pub(crate) signer: Signer,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) wake_hooks: Arc<tokio::sync::Notify>,
    pub(crate) email: bool,
    pub(crate) hooks: WebhookConfig,
}

pub(crate) fn router(outbox: Outbox, w: Wiring, verifier: &Verifier) -> Router {
    let routes = Router::new()
        .route("/notify/v1/subscriptions", post(subscribe))
        .route("/notify/v1/confirm", post(confirm))
        .route("/notify/v1/unsubscribe", post(unsubscribe))
        .route("/notify/v1/moderate", post(moderate))
        .route("/notify/v1/addresses/export", post(export))
        .route("/notify/v1/addresses/erase", post(erase))
        .route("/notify/v1/webhooks", get(webhooks).post(register))
        .route(
            "/notify/v1/webhooks/{id}",
            axum::routing::delete(unregister),
        )
        .route("/notify/v1/webhooks/{id}/deliveries", get(deliveries));
    verifier.guard(&["logic"], routes).with_state(AppState {
        outbox,
        signer: w.signer,
        wake: w.wake,
        wake_hooks: w.wake_hooks,
        email: w.email,
        hooks: Arc::new(w.hooks),
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
    if !s.email {
        return Err(Problem::not_found(
            "notifications-off",
            "this site does not send email notifications",
        ));
    }
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

fn view(o: &Outbox, ep: Endpoint, queue: usize) -> Webhook {
    Webhook {
        waiting: o.waiting(&ep.id, queue),
        id: ep.id,
        url: ep.url,
        events: ep.events,
        created: ep.created,
        secret: None,
    }
}

async fn webhooks(State(s): State<AppState>) -> Result<axum::Json<Webhooks>, Problem> {
    let queue = s.hooks.queue;
    let webhooks = blocking(&s, move |o| {
        Ok(o.endpoints()?
            .into_iter()
            .map(|ep| view(o, ep, queue))
            .collect())
    })
    .await?;
    Ok(axum::Json(Webhooks {
        webhooks,
        events: EventKind::ALL.to_vec(),
    }))
}

fn url_problem(e: UrlError) -> Problem {
    match e {
        UrlError::Private(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "private-address",
            format!("`url` {e}"),
        )
        .with_field("url"),
        _ => Problem::invalid("url", e),
    }
}

/// The registration rules: a usable URL (public unless the operator allows otherwise), known
/// event kinds (at least one), a secret of a sensible size.
async fn check_webhook(r: &WebhookRequest, allow_private: bool) -> Result<Vec<EventKind>, Problem> {
    let url = crate::webhook::parse_url(&r.url).map_err(url_problem)?;
    let allowed = || {
        EventKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if r.events.is_empty() {
        return Err(Problem::invalid(
            "events",
            format!("must name at least one event kind of: {}", allowed()),
        ));
    }
    let mut events = Vec::new();
    for name in &r.events {
        let Some(k) = EventKind::parse(name) else {
            let shown: String = name.chars().take(64).collect();
            return Err(Problem::invalid(
                "events",
                format!(
                    "`{shown}` is not an event kind; the kinds are: {}",
                    allowed()
                ),
            ));
        };
        if !events.contains(&k) {
            events.push(k);
        }
    }
    events.sort();
    if let Some(secret) = &r.secret
        && (secret.len() < 16
            || secret.len() > 256
            || !secret.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(Problem::invalid(
            "secret",
            "must be 16 to 256 printable ASCII characters, without spaces",
        ));
    }
    crate::webhook::check_reachable(&url, allow_private)
        .await
        .map_err(url_problem)?;
    Ok(events)
}

/// `bytes` random bytes in hex, from the operating system's generator: a webhook's secret
/// must not be guessable from others the same process made.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

async fn register(
    State(s): State<AppState>,
    Json(r): Json<WebhookRequest>,
) -> Result<(StatusCode, axum::Json<Webhook>), Problem> {
    let events = check_webhook(&r, s.hooks.allow_private).await?;
    let ep = Endpoint {
        v: 1,
        id: format!("wh_{}", random_hex(8)),
        url: r.url,
        events,
        secret: r
            .secret
            .unwrap_or_else(|| format!("whsec_{}", random_hex(32))),
        created: now(),
    };
    let max = s.hooks.max_endpoints;
    let stored = ep.clone();
    let o = s.outbox.clone();
    tokio::task::spawn_blocking(move || o.register(&stored, max))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| match e {
            RegisterError::TooMany(n) => Problem::new(
                StatusCode::CONFLICT,
                "too-many-webhooks",
                format!(
                    "this site has {n} webhooks, as many as IO360_WEBHOOK_MAX_ENDPOINTS allows; \
                     remove one first"
                ),
            )
            .with_field("url"),
            RegisterError::Outbox(e) => internal(e),
        })?;
    s.wake_hooks.notify_one();
    Ok((
        StatusCode::CREATED,
        axum::Json(Webhook {
            id: ep.id,
            url: ep.url,
            events: ep.events,
            created: ep.created,
            waiting: 0,
            secret: Some(ep.secret),
        }),
    ))
}

fn check_webhook_id(id: &str) -> Result<(), Problem> {
    if id.len() != 19 || !id.starts_with("wh_") || !id[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::invalid(
            "id",
            "must be a webhook id like wh_0123456789abcdef",
        ));
    }
    Ok(())
}

fn no_such_webhook() -> Problem {
    Problem::not_found("no-such-webhook", "there is no webhook with this id")
}

async fn unregister(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>, Problem> {
    check_webhook_id(&id)?;
    if !blocking(&s, move |o| o.unregister(&id)).await? {
        return Err(no_such_webhook());
    }
    Ok(axum::Json(Deleted { deleted: true }))
}

async fn deliveries(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryLog>, Problem> {
    check_webhook_id(&id)?;
    let queue = s.hooks.queue;
    let log = blocking(&s, move |o| {
        let Some(ep) = o.endpoint(&id)? else {
            return Ok(None);
        };
        Ok(Some(DeliveryLog {
            attempts: o.attempts(&ep.id)?,
            webhook: view(o, ep, queue),
        }))
    })
    .await?;
    log.map(axum::Json).ok_or_else(no_such_webhook)
}
