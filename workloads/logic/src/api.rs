//! The public API under `/api/v1` (see DESIGN.md for the contract).

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use io360_common::Problem;
use io360_common::auth::{Caller, Verifier};
use io360_common::extract::{Json, Query};
use io360_common::model::{Comment, Status, ThreadPage, check_line_chars, check_text_chars};
use io360_common::rules;
use io360_store::api::{Idempotency, NewComment, WriteOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::audit::{self, Banned};
use crate::cache::LIST_LIMIT;
use crate::state::AppState;
use crate::token::TokenError;
use crate::{Moderation, SUSPENDED_RETRY, limits, render};
use io360_logger::Kind;

/// Largest request body accepted.
const MAX_BODY: usize = io360_common::extract::MAX_API_BODY;
/// Longest author name, website, email and title, in bytes.
const MAX_AUTHOR: usize = 100;
const MAX_EMAIL: usize = rules::MAX_EMAIL_BYTES;
const MAX_WEBSITE: usize = 500;
const MAX_TITLE: usize = 300;
/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Logic's routes. Browsers reach them only through the frontend, so every route asks for
/// the frontend's credential: a process that reaches logic's port directly gets 401, and the
/// client address the frontend forwards can be believed. `/api/v1/status` also answers
/// longpoll, which tells open pages when comments are suspended.
pub fn router(
    state: AppState,
    verifier: &Verifier,
    limits: &io360_common::limits::Limits,
) -> Router {
    let cors = cors(&state.config.allowed_origins);
    let routes = Router::new()
        .route("/api/v1/comments", get(list).post(create))
        .route(
            "/api/v1/comments/{id}",
            axum::routing::patch(edit).delete(remove),
        )
        .route("/api/v1/comments/{id}/vote", post(vote))
        .route("/api/v1/counts", post(counts))
        .route("/api/v1/feed", get(crate::atom::feed))
        .route("/api/v1/preview", post(preview))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(crate::admin::router())
        .merge(crate::notify::router())
        .merge(crate::webhooks::router())
        .merge(io360_console::router());
    // Longpoll asks whether comments are suspended, to tell every open page at once.
    let status_route = Router::new().route("/api/v1/status", get(status));
    let limited = verifier
        .guard(&["frontend"], routes)
        .merge(verifier.guard(&["frontend", "longpoll"], status_route))
        .with_state(state.clone());
    // An import's upload takes as long as the file does: its own time bound, not the API's.
    let import = io360_common::limits::Limits {
        max_in_flight: 8,
        request_timeout_secs: state.config.import_timeout_secs as f64,
    }
    .apply(
        "logic",
        verifier
            .guard(&["frontend"], crate::admin::import_router())
            .with_state(state.clone()),
    );
    limits
        .apply("logic", limited)
        .merge(import)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
}

fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            http::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("this API route does not take {method}"),
    )
}

async fn not_found() -> Problem {
    Problem::not_found("no-such-route", "there is no such API route")
}

/// The client's address, as the rate limits and the store see it.
pub struct Client(pub IpAddr);

impl FromRequestParts<AppState> for Client {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        // Only the frontend's word on the client's address is taken: it replaced whatever
        // the client claimed.
        let from_frontend = parts.extensions.get::<Caller>() == Some(&Caller("frontend"));
        let header = state
            .config
            .trusted_proxy_header
            .as_deref()
            .filter(|_| from_frontend);
        Ok(Client(limits::client_ip(&parts.headers, peer, header)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    thread: String,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    pub thread: String,
}

pub fn check_thread(thread: &str) -> Result<(), Problem> {
    Ok(rules::thread("thread", thread)?)
}

/// Comments others may see: held ones are left out.
fn visible(page: &ThreadPage, after: u64, limit: usize) -> ThreadPage {
    // Comments are in sequence order: start at the first one after `after`.
    let from = page.comments.partition_point(|c| c.seq <= after);
    let comments: Vec<Comment> = page.comments[from..]
        .iter()
        .filter(|c| c.status != Status::Pending)
        .take(limit)
        .cloned()
        .collect();
    ThreadPage {
        thread: page.thread.clone(),
        head: page.head,
        closed: page.closed,
        comments,
    }
}

async fn list(
    State(s): State<AppState>,
    client: Client,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    limit_reads(&s, client.0)?;
    check_thread(&q.thread)?;
    let limit = rules::limit(q.limit, LIST_LIMIT)?;
    let cached = s.cache.thread(&s.store, &q.thread).await?;
    if q.after == 0 && (limit == LIST_LIMIT || limit >= cached.page.comments.len()) {
        // The common case, a reader opening the page: bytes prepared once per change.
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            cached.first_json.clone(),
        )
            .into_response());
    }
    Ok(axum::Json(visible(&cached.page, q.after, limit)).into_response())
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    text: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    website: Option<String>,
    #[serde(default)]
    parent: Option<u64>,
    #[serde(default)]
    title: Option<String>,
    /// The honeypot: hidden from people, filled in by bots.
    #[serde(default)]
    homepage: Option<String>,
    /// Email me replies to this comment, or every new comment in the thread (double opt-in:
    /// a confirmation goes to `email` first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify: Option<NotifyChoice>,
}

/// What a reader posting a comment asks to be emailed about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NotifyChoice {
    /// Replies to the comment posted.
    Replies,
    /// Every new comment in the thread.
    Thread,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Posted {
    comment: Comment,
    edit_token: String,
    editable_until: String,
}

/// Counts a write against the client's rate limit; a refusal is counted in the audit trail.
pub(crate) fn limit_writes(s: &AppState, ip: IpAddr) -> Result<(), Problem> {
    s.writes.check(ip).inspect_err(|_| {
        s.audit.reject(Kind::RateLimitRejected, ip, "writes");
    })
}

/// Counts a read against the client's rate limit; a refusal is counted in the audit trail.
fn limit_reads(s: &AppState, ip: IpAddr) -> Result<(), Problem> {
    s.reads.check(ip).inspect_err(|_| {
        s.audit.reject(Kind::RateLimitRejected, ip, "reads");
    })
}

fn refuse_when_suspended(s: &AppState) -> Result<(), Problem> {
    let sus = s.suspension.get();
    if sus.suspended {
        let mut p = Problem::unavailable(
            "comments-suspended",
            "comments are paused for now; reading still works",
            SUSPENDED_RETRY,
        );
        if let Some(m) = sus.message.or(sus.reason) {
            p = p.with_detail(m);
        }
        return Err(p);
    }
    Ok(())
}

fn optional(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, Problem> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim().to_owned();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > max {
        return Err(Problem::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    check_line_chars(&v).map_err(|rule| Problem::invalid(field, rule))?;
    Ok(Some(v))
}

fn check_text(s: &AppState, text: &str) -> Result<(), Problem> {
    if text.trim().is_empty() {
        return Err(Problem::invalid("text", "must not be empty"));
    }
    check_text_chars(text).map_err(|rule| Problem::invalid("text", rule))?;
    let max = s.config.max_text_bytes;
    if text.len() > max {
        return Err(Problem::invalid(
            "text",
            format!("must be at most {max} bytes"),
        ));
    }
    let links = render::count_links(text);
    if links > s.config.max_links {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-links",
            format!(
                "`text` has {links} links; at most {} are allowed",
                s.config.max_links
            ),
        )
        .with_field("text"));
    }
    let lower = text.to_lowercase();
    if let Some(w) = s.banned.iter().find(|w| lower.contains(w.as_str())) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "banned-word",
            format!("`text` contains a word this site does not accept (`{w}`)"),
        )
        .with_field("text"));
    }
    Ok(())
}

fn check_website(website: &Option<String>) -> Result<(), Problem> {
    if let Some(w) = website
        && !(w.starts_with("http://") || w.starts_with("https://"))
    {
        return Err(Problem::invalid(
            "website",
            "must start with http:// or https://",
        ));
    }
    Ok(())
}

fn check_email(email: &Option<String>) -> Result<(), Problem> {
    if let Some(e) = email {
        rules::email(e)?;
    }
    Ok(())
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn created_unix(c: &Comment) -> i64 {
    time::OffsetDateTime::parse(&c.created, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

async fn create(
    State(s): State<AppState>,
    client: Client,
    Query(q): Query<ThreadQuery>,
    headers: HeaderMap,
    Json(body): Json<PostBody>,
) -> Result<Response, Problem> {
    check_thread(&q.thread)?;
    refuse_when_suspended(&s)?;
    limit_writes(&s, client.0)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    Problem::invalid(
                        "Idempotency-Key",
                        "must be 1 to 200 visible ASCII characters",
                    )
                })?;
            Some(v.to_owned())
        }
    };
    // A retry is the same client sending the same request: the key is scoped to the client's
    // address, and the request's hash must match, so a key seen by someone else never hands
    // over another reader's comment and edit token.
    let idempotency = idempotency_key.map(|key| {
        Box::new(Idempotency {
            key: s
                .keys
                .derive("idempotency", &format!("{}\n{key}", client.0)),
            fingerprint: request_fingerprint(&body),
        })
    });
    if body.homepage.as_deref().is_some_and(|h| !h.is_empty()) {
        s.audit.reject(Kind::SpamRejected, client.0, "honeypot");
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "spam-rejected",
            "this comment looks automated and was not accepted",
        )
        .with_field("homepage"));
    }
    check_text(&s, &body.text).inspect_err(|p| {
        if p.status == 422 {
            s.audit.reject(Kind::SpamRejected, client.0, p.slug());
        }
    })?;
    let author = optional("author", body.author, MAX_AUTHOR)?;
    let email = optional("email", body.email, MAX_EMAIL)?;
    let website = optional("website", body.website, MAX_WEBSITE)?;
    optional("title", body.title, MAX_TITLE)?;
    check_website(&website)?;
    check_email(&email)?;
    let subscribe = match body.notify {
        None => None,
        Some(choice) => {
            let notify = s.notify.clone().ok_or_else(|| {
                Problem::invalid("notify", "is not offered: this site sends no email")
            })?;
            let address = email
                .clone()
                .ok_or_else(|| Problem::invalid("notify", "needs an email to write to"))?;
            io360_notify::api::check_email(&address)?;
            Some((notify, address, choice))
        }
    };
    let digest: [u8; 32] = Sha256::digest(body.text.trim().as_bytes()).into();
    let dup_key = (client.0, q.thread.clone(), digest);
    if idempotency.is_none() && s.recent.contains_key(&dup_key) {
        s.audit.reject(Kind::SpamRejected, client.0, "duplicate");
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "duplicate",
            "you have just posted the same text on this thread",
        )
        .with_field("text"));
    }
    let author_key = match (&email, &author) {
        (Some(e), _) => Some(s.keys.author_of_email(e)),
        (None, Some(a)) => Some(s.keys.derive(
            "author-name",
            &format!("{a}@{}", limits::truncate(client.0)),
        )),
        (None, None) => None,
    };
    if let Some(b) = s.bans.check(author_key.as_deref(), client.0) {
        let reason = match b {
            Banned::Author => "banned-author",
            Banned::Address => "banned-address",
        };
        s.audit.reject(Kind::SpamRejected, client.0, reason);
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "banned",
            "this site no longer accepts comments from this author or address",
        ));
    }
    let status = match s.config.moderation {
        Moderation::Off => Status::Approved,
        Moderation::All => Status::Pending,
        Moderation::FirstTime => match &author_key {
            Some(k) if s.store.author_approved(k).await? > 0 => Status::Approved,
            _ => Status::Pending,
        },
    };
    let html = render::render(&body.text);
    let actor = audit::reader(author.as_deref());
    let audit_key = author_key.clone();
    let op = WriteOp::Append {
        thread: q.thread.clone(),
        comment: NewComment {
            parent: body.parent,
            author,
            email,
            website,
            text: body.text,
            html,
            status,
            remote: Some(limits::truncate(client.0)),
            author_key,
        },
        idempotency,
    };
    let result = s.store.write(&op).await?;
    s.cache.changed(&q.thread, result.change.seq);
    s.recent.insert(dup_key, ());
    let comment = result
        .change
        .comment
        .ok_or_else(|| Problem::internal("store answered an append without its comment"))?;
    if !result.replayed {
        let e = audit::event(Kind::CommentPosted, actor)
            .thread(&comment.thread)
            .comment(comment.id)
            .address(client.0)
            .author_key(audit_key);
        if comment.status == Status::Pending {
            let held = io360_logger::Event {
                kind: Kind::CommentHeld,
                actor: "system".to_owned(),
                reason: Some("moderation".to_owned()),
                ..e.clone()
            };
            s.audit.emit(e);
            s.audit.emit(held);
        } else {
            s.audit.emit(e);
        }
    }
    if !result.replayed
        && let Some((notify, email, choice)) = subscribe
    {
        // Recorded off the request's path: the comment is in, whatever notify is doing.
        let req = io360_notify::api::SubscribeRequest {
            email,
            thread: q.thread.clone(),
            comment: match choice {
                NotifyChoice::Replies => Some(comment.id),
                NotifyChoice::Thread => None,
            },
        };
        tokio::spawn(async move {
            if let Err(e) = notify.subscribe(&req).await {
                tracing::warn!(error = %e, "could not record the subscription asked for with a post");
            }
        });
    }
    let expires = created_unix(&comment) + s.config.edit_window as i64;
    let body = Posted {
        edit_token: s.keys.edit_token(comment.id, expires),
        editable_until: rfc3339(expires),
        comment,
    };
    let mut res = (StatusCode::CREATED, axum::Json(body)).into_response();
    if result.replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// A hash of everything a post says, so a retry can be told from another post under the same
/// key.
fn request_fingerprint(body: &PostBody) -> String {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn comment_id(raw: &str) -> Result<u64, Problem> {
    Ok(rules::comment_id(raw)?)
}

/// Checks the edit token in `Authorization` for comment `id`.
fn authorize_edit(s: &AppState, headers: &HeaderMap, id: u64) -> Result<(), Problem> {
    let token = bearer(headers).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "edit-token-missing",
            "send the comment's edit token as `Authorization: Bearer <editToken>`",
        )
        .with_field("Authorization")
    })?;
    s.keys.verify_edit(token, id, now_unix()).map_err(|e| {
        match e {
            TokenError::Invalid => {
                Problem::new(StatusCode::FORBIDDEN, "edit-token-invalid", e.to_string())
            }
            TokenError::Expired => {
                Problem::new(StatusCode::FORBIDDEN, "edit-window-closed", e.to_string())
            }
        }
        .with_field("Authorization")
    })
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        // The token exactly as given: nothing around it is ignored.
        .filter(|t| !t.is_empty() && !t.contains(|c: char| c.is_ascii_whitespace()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    text: String,
}

#[derive(Debug, Serialize)]
pub struct One {
    pub comment: Comment,
}

async fn edit(
    State(s): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<EditBody>,
) -> Result<axum::Json<One>, Problem> {
    let id = comment_id(&id)?;
    authorize_edit(&s, &headers, id)?;
    refuse_when_suspended(&s)?;
    limit_writes(&s, client.0)?;
    check_text(&s, &body.text)?;
    let html = render::render(&body.text);
    let key = author_key_of(&s, id).await;
    let r = s
        .store
        .write(&WriteOp::Edit {
            id,
            text: body.text,
            html,
        })
        .await?;
    audit_author_change(&s, Kind::CommentEdited, &r, client.0, key);
    one(&s, r)
}

/// The author key of a comment, for the audit trail (none when store cannot say).
async fn author_key_of(s: &AppState, id: u64) -> Option<String> {
    if !s.audit.enabled() {
        return None;
    }
    s.store
        .comment(id)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.author_key)
}

/// Records a change an author made to their own comment.
fn audit_author_change(
    s: &AppState,
    kind: Kind,
    r: &io360_store::api::WriteResult,
    ip: IpAddr,
    key: Option<String>,
) {
    let Some(c) = &r.change.comment else { return };
    // A deleted comment has lost its author name; the key still links the event to them.
    let actor = if key.is_some() && c.author.is_none() {
        "author".to_owned()
    } else {
        audit::reader(c.author.as_deref())
    };
    s.audit.emit(
        audit::event(kind, actor)
            .thread(&c.thread)
            .comment(c.id)
            .address(ip)
            .author_key(key),
    );
}

fn one(s: &AppState, r: io360_store::api::WriteResult) -> Result<axum::Json<One>, Problem> {
    s.cache.changed(&r.change.thread, r.change.seq);
    let comment = r
        .change
        .comment
        .ok_or_else(|| Problem::internal("store answered a comment change without its comment"))?;
    Ok(axum::Json(One { comment }))
}

async fn remove(
    State(s): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<One>, Problem> {
    let id = comment_id(&id)?;
    authorize_edit(&s, &headers, id)?;
    refuse_when_suspended(&s)?;
    limit_writes(&s, client.0)?;
    let key = author_key_of(&s, id).await;
    let r = s.store.write(&WriteOp::Delete { id }).await?;
    audit_author_change(&s, Kind::CommentDeleted, &r, client.0, key);
    one(&s, r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    value: i8,
}

async fn vote(
    State(s): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    Json(body): Json<VoteBody>,
) -> Result<axum::Json<One>, Problem> {
    let id = comment_id(&id)?;
    rules::vote(body.value)?;
    refuse_when_suspended(&s)?;
    limit_writes(&s, client.0)?;
    // One vote per network: a client holds every address of its /24 or /64.
    let voter = s
        .keys
        .derive("voter", &limits::network(client.0).to_string());
    let r = s
        .store
        .write(&WriteOp::Vote {
            id,
            voter,
            value: body.value,
        })
        .await?;
    s.audit.emit(
        audit::event(Kind::CommentVoted, "anonymous")
            .thread(&r.change.thread)
            .comment(id)
            .address(client.0)
            .detail(if body.value > 0 { "+1" } else { "-1" }),
    );
    one(&s, r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsBody {
    threads: Vec<String>,
}

async fn counts(
    State(s): State<AppState>,
    client: Client,
    Json(body): Json<CountsBody>,
) -> Result<Response, Problem> {
    limit_reads(&s, client.0)?;
    rules::threads("threads", &body.threads)?;
    Ok(axum::Json(s.store.counts(body.threads).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    text: String,
}

#[derive(Debug, Serialize)]
struct Preview {
    html: String,
}

async fn preview(
    State(s): State<AppState>,
    client: Client,
    Json(body): Json<PreviewBody>,
) -> Result<axum::Json<Preview>, Problem> {
    limit_reads(&s, client.0)?;
    check_text(&s, &body.text)?;
    Ok(axum::Json(Preview {
        html: render::render(&body.text),
    }))
}

/// The OpenAPI document of the public API, as kept in the repository (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `/api/v1/status`: the suspension state, and whether readers can ask for email.
#[derive(Debug, Serialize)]
struct StatusAnswer {
    #[serde(flatten)]
    state: crate::SuspensionState,
    /// Whether the site sends email notifications (the widget then offers a subscription).
    notifications: bool,
}

async fn status(State(s): State<AppState>) -> axum::Json<StatusAnswer> {
    axum::Json(StatusAnswer {
        state: s.suspension.get(),
        notifications: s.notify.is_some() && s.config.notify_email,
    })
}
