//! The admin API under `/api/v1/admin`, behind `Authorization: Bearer <admin token>`.
//!
//! Every action here is recorded in the audit trail with its actor: `admin`, or
//! `admin:<name>` when the caller says who they are in `X-IO360-Actor` (the console sends the
//! name its user typed in). The trail itself is read back through `GET /api/v1/admin/events`,
//! which forwards to the logger and answers 503 while the logger is away; moderation keeps
//! working meanwhile.

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::routing::{delete, get, post, put};
use http::StatusCode;
use http::request::Parts;
use io360_common::Problem;
use io360_common::client::ClientError;
use io360_common::extract::{Json, Query};
use io360_common::model::{Comment, Status};
use io360_common::rules;
use io360_logger::{Kind, Page};
use io360_store::api::{
    BannedAuthor, BannedRange, Bans, Found, Pending, Search, Suspension, WriteOp,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{One, ThreadQuery, bearer, check_thread};
use crate::audit;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/queue", get(queue))
        .route("/api/v1/admin/comments/{id}/approve", post(approve))
        .route("/api/v1/admin/comments/{id}", delete(remove))
        .route("/api/v1/admin/threads", get(thread))
        .route("/api/v1/admin/threads/close", post(close))
        .route("/api/v1/admin/threads/reopen", post(reopen))
        .route("/api/v1/admin/suspension", put(suspend).get(suspension))
        .route("/api/v1/admin/comments/{id}/reject", post(reject))
        .route("/api/v1/admin/comments", get(search))
        .route("/api/v1/admin/bans", get(bans).post(ban).delete(unban))
        .route("/api/v1/admin/events", get(events))
        .route("/api/v1/admin/authors/erase", post(erase))
        .route("/api/v1/admin/authors/export", post(export))
        .route("/api/v1/admin/export", get(export_site))
        .route("/api/v1/admin/sources", get(by_source))
}

/// The import's routes: an upload lasts as long as the file takes, so they are served outside
/// the API's request timeout, under a bound of their own (`IO360_IMPORT_TIMEOUT_SECS`).
pub fn import_router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/admin/import",
        post(crate::import::upload).get(crate::import::status),
    )
}

/// Proof that the request carries the admin token, and who says they are acting.
pub(crate) struct Admin {
    pub(crate) actor: String,
}

/// The header a moderator's name travels in.
const ACTOR_HEADER: &str = "x-io360-actor";

fn actor(parts: &Parts) -> String {
    let name = parts
        .headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        });
    match name {
        Some(n) => format!("admin:{n}"),
        None => "admin".to_owned(),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Problem> {
        let Some(expected) = s.config.admin_token.as_deref() else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "admin-disabled",
                "the admin API is closed: no IO360_ADMIN_TOKEN is configured",
            ));
        };
        let given = bearer(&parts.headers).ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "admin-token-missing",
                "send the admin token as `Authorization: Bearer <token>`",
            )
            .with_field("Authorization")
        })?;
        // Compare digests so the time taken says nothing about the token.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "admin-token-invalid",
                "the admin token is not valid",
            )
            .with_field("Authorization"));
        }
        Ok(Admin {
            actor: actor(parts),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueQuery {
    limit: Option<usize>,
}

async fn queue(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<QueueQuery>,
) -> Result<axum::Json<Pending>, Problem> {
    let limit = rules::limit(q.limit, 100)?;
    Ok(axum::Json(s.store.pending(limit).await?))
}

fn id(raw: &str) -> Result<u64, Problem> {
    Ok(rules::comment_id(raw)?)
}

async fn write(s: &AppState, op: WriteOp) -> Result<io360_store::api::WriteResult, Problem> {
    let r = s.store.write(&op).await?;
    s.cache.changed(&r.change.thread, r.change.seq);
    Ok(r)
}

/// Records a moderator's action on a comment.
fn audit_comment(s: &AppState, admin: &Admin, kind: Kind, c: &Comment, key: Option<String>) {
    s.audit.emit(
        audit::event(kind, &admin.actor)
            .thread(&c.thread)
            .comment(c.id)
            .author_key(key),
    );
}

async fn approve(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<axum::Json<One>, Problem> {
    moderate(
        &s,
        &admin,
        WriteOp::Approve { id: id(&raw)? },
        Kind::CommentApproved,
    )
    .await
}

/// Makes a moderator's change to one comment, records it in the trail, and answers the
/// comment as it now is.
async fn moderate(
    s: &AppState,
    admin: &Admin,
    op: WriteOp,
    kind: Kind,
) -> Result<axum::Json<One>, Problem> {
    let r = write(s, op).await?;
    let comment = r
        .change
        .comment
        .ok_or_else(|| Problem::internal(format!("the store's {kind:?} change has no comment")))?;
    audit_comment(s, admin, kind, &comment, None);
    Ok(axum::Json(One { comment }))
}

/// Approves or deletes a comment for a moderator who followed a one-time link from a
/// notification email (the link was checked and spent by notify).
pub(crate) async fn moderate_by_link(s: &AppState, approve: bool, id: u64) -> Result<(), Problem> {
    let admin = Admin {
        actor: "moderation link".into(),
    };
    let (op, kind) = if approve {
        (WriteOp::Approve { id }, Kind::CommentApproved)
    } else {
        (WriteOp::Delete { id }, Kind::CommentDeleted)
    };
    moderate(s, &admin, op, kind).await.map(|_| ())
}

async fn remove(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<axum::Json<One>, Problem> {
    moderate(
        &s,
        &admin,
        WriteOp::Delete { id: id(&raw)? },
        Kind::CommentDeleted,
    )
    .await
}

/// Rejects a held comment: it is deleted, and the trail says it was refused, not removed.
async fn reject(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<axum::Json<One>, Problem> {
    let id = id(&raw)?;
    match s.store.comment(id).await? {
        None => {
            return Err(Problem::not_found(
                "comment-not-found",
                format!("there is no comment {id}"),
            ));
        }
        Some(c) if c.comment.status != Status::Pending => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "not-pending",
                format!("comment {id} is not waiting for moderation; delete it instead"),
            ));
        }
        Some(_) => {}
    }
    moderate(&s, &admin, WriteOp::Delete { id }, Kind::CommentRejected).await
}

/// A thread's metadata as the store keeps it: its head, count, whether it is closed, and the
/// page title an import brought.
async fn thread(
    _admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<ThreadQuery>,
) -> Result<axum::Json<io360_common::model::ThreadMeta>, Problem> {
    check_thread(&q.thread)?;
    Ok(axum::Json(s.store.meta(&q.thread).await?))
}

async fn close(
    admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<ThreadQuery>,
) -> Result<axum::Json<io360_common::model::ThreadMeta>, Problem> {
    check_thread(&q.thread)?;
    write(
        &s,
        WriteOp::Close {
            thread: q.thread.clone(),
        },
    )
    .await?;
    s.audit
        .emit(audit::event(Kind::ThreadClosed, &admin.actor).thread(&q.thread));
    Ok(axum::Json(s.store.meta(&q.thread).await?))
}

async fn reopen(
    admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<ThreadQuery>,
) -> Result<axum::Json<io360_common::model::ThreadMeta>, Problem> {
    check_thread(&q.thread)?;
    write(
        &s,
        WriteOp::Reopen {
            thread: q.thread.clone(),
        },
    )
    .await?;
    s.audit
        .emit(audit::event(Kind::ThreadReopened, &admin.actor).thread(&q.thread));
    Ok(axum::Json(s.store.meta(&q.thread).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    suspended: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn suspend(
    admin: Admin,
    State(s): State<AppState>,
    Json(body): Json<SuspendBody>,
) -> Result<axum::Json<crate::SuspensionState>, Problem> {
    if body.reason.as_deref().is_some_and(|r| r.len() > 500) {
        return Err(Problem::invalid("reason", "must be at most 500 bytes"));
    }
    let stored = s
        .store
        .set_suspension(&Suspension {
            suspended: body.suspended,
            reason: body.reason,
            since: None,
        })
        .await?;
    s.suspension.set_manual(&stored);
    tracing::info!(suspended = stored.suspended, reason = ?stored.reason, "comments suspension changed");
    let kind = if stored.suspended {
        Kind::CommentsSuspended
    } else {
        Kind::CommentsResumed
    };
    let mut e = audit::event(kind, &admin.actor).reason("manual");
    if let Some(r) = stored.reason.filter(|r| !r.is_empty()) {
        e = e.detail(r);
    }
    s.audit.emit(e);
    Ok(axum::Json(s.suspension.get()))
}

/// The suspension as moderators see it: who decides it, too.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AdminSuspension {
    #[serde(flatten)]
    state: crate::SuspensionState,
    /// On Kubernetes the operator decides (`spec.commentsSuspended`, or its own overload
    /// rule); flipping it here is not the way.
    operator: bool,
}

async fn suspension(_: Admin, State(s): State<AppState>) -> axum::Json<AdminSuspension> {
    axum::Json(AdminSuspension {
        state: s.suspension.get(),
        operator: s.config.control_configmap.is_some(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    thread: Option<String>,
    author: Option<String>,
    text: Option<String>,
    status: Option<Status>,
    before: Option<u64>,
    limit: Option<usize>,
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

async fn search(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<axum::Json<Found>, Problem> {
    let thread = nonempty(q.thread);
    if let Some(t) = &thread {
        check_thread(t)?;
    }
    let limit = rules::limit(q.limit, 50)?;
    for (field, v) in [("author", &q.author), ("text", &q.text)] {
        if v.as_ref().is_some_and(|v| v.len() > 500) {
            return Err(Problem::invalid(field, "must be at most 500 bytes"));
        }
    }
    Ok(axum::Json(
        s.store
            .search(&Search {
                thread,
                author: nonempty(q.author),
                text: nonempty(q.text),
                status: q.status,
                before: q.before,
                limit,
            })
            .await?,
    ))
}

async fn bans(_: Admin, State(s): State<AppState>) -> Result<axum::Json<Bans>, Problem> {
    Ok(axum::Json(s.store.bans().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    /// Ban the author of this comment.
    #[serde(default)]
    comment: Option<u64>,
    /// Ban the author who uses this email.
    #[serde(default)]
    email: Option<String>,
    /// Ban this address range.
    #[serde(default)]
    range: Option<String>,
}

fn now() -> String {
    io360_logger::event::now_rfc3339()
}

async fn ban(
    admin: Admin,
    State(s): State<AppState>,
    Json(body): Json<BanBody>,
) -> Result<axum::Json<Bans>, Problem> {
    let mut bans = s.store.bans().await?;
    let event = match (body.comment, body.email, body.range) {
        (Some(id), None, None) => {
            let c =
                s.store.comment(id).await?.ok_or_else(|| {
                    Problem::invalid("comment", format!("there is no comment {id}"))
                })?;
            let key = c.author_key.clone().ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no-author",
                    format!(
                        "comment {id} was posted without a name or email, so there is no author to ban; ban its address range instead"
                    ),
                )
                .with_field("comment")
            })?;
            let label = format!(
                "{} (comment {id})",
                audit::reader(c.comment.author.as_deref())
            );
            if !bans.authors.iter().any(|a| a.key == key) {
                bans.authors.push(BannedAuthor {
                    key: key.clone(),
                    label: label.clone(),
                    since: now(),
                });
            }
            audit::event(Kind::AuthorBanned, &admin.actor)
                .thread(&c.comment.thread)
                .comment(id)
                .author_key(Some(key))
                .detail(label)
        }
        (None, Some(email), None) => {
            let email = email.trim().to_lowercase();
            rules::email(&email)?;
            let key = s.keys.derive("author-email", &email);
            if !bans.authors.iter().any(|a| a.key == key) {
                bans.authors.push(BannedAuthor {
                    key: key.clone(),
                    label: "an author by email".to_owned(),
                    since: now(),
                });
            }
            audit::event(Kind::AuthorBanned, &admin.actor)
                .author_key(Some(key))
                .detail("an author by email")
        }
        (None, None, Some(range)) => {
            let cidr = audit::parse_range(&range).ok_or_else(|| {
                Problem::invalid(
                    "range",
                    "must be an address or a range like 203.0.113.0/24 or 2001:db8::/48",
                )
            })?;
            if !bans.ranges.iter().any(|r| r.cidr == cidr) {
                bans.ranges.push(BannedRange {
                    cidr: cidr.clone(),
                    since: now(),
                });
            }
            audit::event(Kind::AddressBanned, &admin.actor).detail(cidr)
        }
        _ => {
            return Err(Problem::invalid(
                "comment",
                "give exactly one of `comment` (ban its author), `email` or `range`",
            ));
        }
    };
    let stored = s.store.set_bans(&bans).await?;
    s.bans.set(&stored);
    s.audit.emit(event);
    Ok(axum::Json(stored))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanQuery {
    author: Option<String>,
    range: Option<String>,
}

async fn unban(
    admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<UnbanQuery>,
) -> Result<axum::Json<Bans>, Problem> {
    let mut bans = s.store.bans().await?;
    let detail = match (q.author, q.range) {
        (Some(key), None) => {
            let before = bans.authors.len();
            bans.authors.retain(|a| a.key != key);
            if bans.authors.len() == before {
                return Err(Problem::not_found(
                    "no-such-ban",
                    "that author is not banned",
                ));
            }
            "an author".to_owned()
        }
        (None, Some(range)) => {
            let cidr = audit::parse_range(&range)
                .ok_or_else(|| Problem::invalid("range", "must be a range like 203.0.113.0/24"))?;
            let before = bans.ranges.len();
            bans.ranges.retain(|r| r.cidr != cidr);
            if bans.ranges.len() == before {
                return Err(Problem::not_found(
                    "no-such-ban",
                    format!("{cidr} is not banned"),
                ));
            }
            cidr
        }
        _ => {
            return Err(Problem::invalid(
                "author",
                "give exactly one of `author` (a banned author's key) or `range`",
            ));
        }
    };
    let stored = s.store.set_bans(&bans).await?;
    s.bans.set(&stored);
    s.audit
        .emit(audit::event(Kind::BanLifted, &admin.actor).detail(detail));
    Ok(axum::Json(stored))
}

fn logger_unavailable() -> Problem {
    Problem::unavailable(
        "audit-unavailable",
        "the audit trail is unavailable right now (the logger tier is down or not configured); \
         moderation still works",
        std::time::Duration::from_secs(5),
    )
}

fn from_logger(e: ClientError) -> Problem {
    match e {
        ClientError::Problem(p) if p.status < 500 => p,
        other => {
            tracing::warn!(error = %other, "logger unavailable");
            logger_unavailable()
        }
    }
}

async fn events(
    _: Admin,
    State(s): State<AppState>,
    uri: http::Uri,
) -> Result<axum::Json<Page>, Problem> {
    let raw = uri.query().unwrap_or("");
    // Check here, so a bad parameter is a 400 even while the logger is away.
    let q: io360_logger::api::EventsQuery = io360_common::extract::parse_query(raw)?;
    q.filter()?;
    let logger = s.audit.client().ok_or_else(logger_unavailable)?;
    Ok(axum::Json(logger.events(raw).await.map_err(from_logger)?))
}

/// Whose data a data protection request is about.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorRequest {
    /// The email they commented with.
    #[serde(default)]
    email: Option<String>,
    /// The edit token of one of their comments (expired ones too).
    #[serde(default)]
    edit_token: Option<String>,
}

async fn author_key(s: &AppState, req: AuthorRequest) -> Result<String, Problem> {
    match (req.email, req.edit_token) {
        (Some(email), None) => {
            let email = email.trim().to_lowercase();
            rules::email(&email)?;
            Ok(s.keys.author_of_email(&email))
        }
        (None, Some(token)) => {
            let bad = || Problem::invalid("editToken", "is not an edit token issued by this site");
            let id: u64 = token
                .split('.')
                .next()
                .and_then(|i| i.parse().ok())
                .ok_or_else(bad)?;
            // Any token this site signed proves the request, however old.
            s.keys
                .verify_edit(&token, id, i64::MIN)
                .map_err(|_| bad())?;
            let c = s.store.comment(id).await?.ok_or_else(bad)?;
            c.author_key.ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no-author",
                    format!(
                        "comment {id} has no author data left (it was posted anonymously or has been erased)"
                    ),
                )
                .with_field("editToken")
            })
        }
        _ => Err(Problem::invalid(
            "email",
            "give exactly one of `email` or `editToken`",
        )),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErasedAuthor {
    /// Comments deleted now (comments already deleted were scrubbed too).
    comments: usize,
    /// Audit events whose personal data was removed.
    events: u64,
    /// Email notification subscriptions of the address removed (with anything queued for it).
    subscriptions: usize,
}

/// The address an author request names: the one given, or the one kept with the comment an
/// edit token is for (none once that comment was erased).
async fn author_email(s: &AppState, req: &AuthorRequest) -> Result<Option<String>, Problem> {
    if let Some(e) = &req.email {
        return Ok(Some(e.trim().to_lowercase()));
    }
    let Some(id) = req
        .edit_token
        .as_deref()
        .and_then(|t| t.split('.').next())
        .and_then(|i| i.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    Ok(s.store.comment(id).await?.and_then(|c| c.email))
}

async fn erase(
    admin: Admin,
    State(s): State<AppState>,
    Json(req): Json<AuthorRequest>,
) -> Result<axum::Json<ErasedAuthor>, Problem> {
    let email = author_email(&s, &req).await?;
    let key = author_key(&s, req).await?;
    let logger = s.audit.client().ok_or_else(logger_unavailable)?;
    let erased = s.store.erase_author(&key).await?;
    let subscriptions = match (&s.notify, email) {
        (Some(n), Some(e)) => n.erase(&e).await?.erased,
        _ => 0,
    };
    for ch in &erased.changes {
        s.cache.changed(&ch.thread, ch.seq);
    }
    // Events about this author still in a shipper's buffer can reach the logger after this;
    // repeating the request is safe and scrubs them too.
    let events = logger.erase(&key).await.map_err(from_logger)?;
    s.audit.emit(
        audit::event(Kind::AuthorErased, &admin.actor).detail(format!(
            "{} comments deleted, {} audit events scrubbed",
            erased.changes.len(),
            events.erased
        )),
    );
    Ok(axum::Json(ErasedAuthor {
        comments: erased.changes.len(),
        events: events.erased,
        subscriptions,
    }))
}

#[derive(Debug, Serialize)]
struct ExportedAuthor {
    comments: Vec<io360_store::api::StoredComment>,
    events: Vec<io360_logger::Event>,
    subscriptions: Vec<io360_notify::outbox::Subscription>,
}

async fn export(
    admin: Admin,
    State(s): State<AppState>,
    Json(req): Json<AuthorRequest>,
) -> Result<axum::Json<ExportedAuthor>, Problem> {
    let email = author_email(&s, &req).await?;
    let key = author_key(&s, req).await?;
    let logger = s.audit.client().ok_or_else(logger_unavailable)?;
    let comments = s.store.author_comments(&key).await?.comments;
    let subscriptions = match (&s.notify, email) {
        (Some(n), Some(e)) => n.export(&e).await?.subscriptions,
        _ => Vec::new(),
    };
    let events = logger.export(&key).await.map_err(from_logger)?.events;
    s.audit.emit(
        audit::event(Kind::AuthorExported, &admin.actor).detail(format!(
            "{} comments, {} audit events",
            comments.len(),
            events.len()
        )),
    );
    Ok(axum::Json(ExportedAuthor {
        comments,
        events,
        subscriptions,
    }))
}

/// `GET /api/v1/admin/export`: everything the store holds, in io360's export format (versioned
/// NDJSON, as `io360 export` writes it), streamed from the store a chunk at a time.
async fn export_site(
    admin: Admin,
    State(s): State<AppState>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    use io360_import::io360::{Header, Line, ThreadLine};
    use io360_store::api::ExportItem;
    let items = s.store.export().await?;
    let mut header = Vec::new();
    io360_import::io360::write_line(&mut header, &Header::current())
        .map_err(|e| Problem::internal(format!("encoding the export header: {e}")))?;
    let audit = ExportAudit {
        state: s.clone(),
        actor: admin.actor,
        threads: 0,
        comments: 0,
        end: None,
    };
    let lines = futures::stream::unfold(
        (items.boxed(), audit),
        |(mut items, mut audit)| async move {
            let line = match items.next().await {
                // The audit is dropped here, having seen the end.
                None => {
                    audit.end.get_or_insert_with(|| "sent whole".to_owned());
                    return None;
                }
                Some(Ok(ExportItem::Thread(t))) => {
                    audit.threads += 1;
                    Line::Thread(ThreadLine::from(t))
                }
                Some(Ok(ExportItem::Comment(c))) => {
                    audit.comments += 1;
                    Line::Comment(Box::new((*c).into()))
                }
                Some(Err(e)) => {
                    audit.end = Some(format!("stopped: {e}"));
                    let stop = Err(std::io::Error::other(e.to_string()));
                    return Some((stop, (futures::stream::empty().boxed(), audit)));
                }
            };
            let mut out = Vec::with_capacity(512);
            let line =
                io360_import::io360::write_line(&mut out, &line).map(|()| bytes::Bytes::from(out));
            Some((line, (items, audit)))
        },
    );
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(header)) }).chain(lines);
    Ok((
        [
            (http::header::CONTENT_TYPE, "application/x-ndjson"),
            (
                http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"io360-export.ndjson\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Records a site export in the trail once its stream is done with (sent whole, failed, or
/// dropped by a client that left), with what it held.
struct ExportAudit {
    state: AppState,
    actor: String,
    threads: u64,
    comments: u64,
    /// How the stream ended; `None`: the client left before the end.
    end: Option<String>,
}

impl Drop for ExportAudit {
    fn drop(&mut self) {
        let end = self
            .end
            .take()
            .unwrap_or_else(|| "cut short: the client left".to_owned());
        let detail = format!(
            "{} threads, {} comments, {end}",
            self.threads, self.comments
        );
        self.state
            .audit
            .emit(audit::event(Kind::SiteExported, &self.actor).detail(detail));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceQuery {
    /// A source id as an import keyed it: `disqus:12`, `isso:7`, `wordpress:34`.
    source: String,
}

#[derive(Debug, Serialize)]
struct BySource {
    source: String,
    comment: Comment,
}

/// `GET /api/v1/admin/sources?source=isso:12`: the comment imported under a source id, so an
/// old link (`#isso-12`) can be sent to its io360 comment.
async fn by_source(
    _admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<SourceQuery>,
) -> Result<axum::Json<BySource>, Problem> {
    let missing = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-such-source",
            format!("no comment was imported under {:?}", q.source),
        )
        .with_field("source")
    };
    let id = s.store.by_source(&q.source).await?.ok_or_else(missing)?;
    let c = s.store.comment(id).await?.ok_or_else(missing)?;
    Ok(axum::Json(BySource {
        source: q.source.clone(),
        comment: c.comment,
    }))
}
