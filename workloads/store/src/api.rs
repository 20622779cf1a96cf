//! The store's HTTP API (internal: only logic and sync call it) and its wire types.
//!
//! | route | what |
//! |---|---|
//! | `POST /store/v1/write` | apply one [`WriteOp`]; answers [`WriteResult`] once durable |
//! | `GET /store/v1/comments?thread&after&limit` | a [`ThreadPage`] |
//! | `GET /store/v1/thread?thread` | [`ThreadMeta`] |
//! | `POST /store/v1/counts` | [`CountsRequest`] → [`Counts`] |
//! | `GET /store/v1/comment/{id}` | a [`StoredComment`], private fields included |
//! | `GET /store/v1/changes?thread&after&limit` | a thread's [`Change`]s after a sequence number |
//! | `GET /store/v1/feed?after` | every change after a feed position, as an endless NDJSON stream |
//! | `GET /store/v1/position` | the last durable feed position |
//! | `GET /store/v1/pending?limit` | held comments, oldest first |
//! | `GET /store/v1/author?key` | how many approved comments an author has |
//! | `GET`/`PUT /store/v1/suspension` | the durable manual suspension flag |
//! | `GET`/`PUT /store/v1/bans` | the durable list of banned authors and address ranges |
//! | `GET /store/v1/search?thread&author&text&status&before&limit` | comments, newest first |
//! | `GET /store/v1/author/comments?key` | every comment of an author, private fields included |
//! | `POST /store/v1/author/erase` | `{authorKey}`: deletes and scrubs every comment of an author |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use http::header;
use io360_common::Problem;
use io360_common::auth::Verifier;
use io360_common::extract::{Json, Query};
use io360_common::model::{Change, Comment, FeedPos, Seq, ThreadMeta, ThreadPage};
use io360_common::sanitize::sanitize;
use io360_common::serve::Shutdown;
use serde::{Deserialize, Serialize};

use crate::db::Db;

/// Most items one read returns.
pub const MAX_LIMIT: usize = 1000;

/// A comment to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewComment {
    /// The comment it replies to.
    pub parent: Option<u64>,
    /// Display name.
    pub author: Option<String>,
    /// Email (private).
    pub email: Option<String>,
    /// Website.
    pub website: Option<String>,
    /// Markdown source.
    pub text: String,
    /// Sanitized HTML.
    pub html: String,
    /// Approved, or pending when held for moderation.
    pub status: io360_common::model::Status,
    /// The client's address, truncated (private).
    pub remote: Option<String>,
    /// A stable key for the author, for first-time moderation (private).
    pub author_key: Option<String>,
}

/// One write. Each successful write is one [`Change`] with the thread's next sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum WriteOp {
    /// Appends a comment. A repeated idempotency key on the same thread with the same
    /// fingerprint returns the first result instead of a second comment.
    Append {
        /// The thread.
        thread: String,
        /// The comment.
        comment: NewComment,
        /// Makes retries return the first result (boxed: most appends have none).
        #[serde(default)]
        idempotency: Option<Box<Idempotency>>,
    },
    /// Replaces a comment's text.
    Edit {
        /// The comment.
        id: u64,
        /// New Markdown source.
        text: String,
        /// New sanitized HTML.
        html: String,
    },
    /// Deletes a comment: its text and private data are erased, a tombstone stays.
    Delete {
        /// The comment.
        id: u64,
    },
    /// Approves a held comment.
    Approve {
        /// The comment.
        id: u64,
    },
    /// Counts a vote, once per voter.
    Vote {
        /// The comment.
        id: u64,
        /// Who votes (an opaque key).
        voter: String,
        /// +1 or -1.
        value: i8,
    },
    /// Closes a thread to new comments.
    Close {
        /// The thread.
        thread: String,
    },
    /// Reopens a thread.
    Reopen {
        /// The thread.
        thread: String,
    },
}

/// What makes an append safe to retry.
///
/// The key is scoped by the caller to one client (logic hashes the client's address with the
/// key the client chose), so two clients that pick the same key never meet. The fingerprint
/// is a hash of the request: a retry must carry the same one, and the same key with another
/// fingerprint is refused (422 `idempotency-key-reused`) rather than answered with the first
/// result. A key is remembered for [`IDEMPOTENCY_WINDOW`]; after that it makes a new comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The scoped key.
    pub key: String,
    /// A hash of the request the key was first used with.
    pub fingerprint: String,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The committed change.
    pub change: Change,
    /// True when an idempotent retry returned an earlier result.
    #[serde(default)]
    pub replayed: bool,
}

/// A comment with its private fields, for logic's own use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredComment {
    /// The public comment.
    pub comment: Comment,
    /// Email, erased on delete.
    pub email: Option<String>,
    /// Truncated client address, erased on delete.
    pub remote: Option<String>,
    /// Author key for first-time moderation.
    pub author_key: Option<String>,
}

/// Which threads to count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsRequest {
    /// Thread names.
    pub threads: Vec<String>,
}

/// Approved comment counts per thread (0 for unknown threads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    /// Thread name → count.
    pub counts: BTreeMap<String, u64>,
}

/// A thread's changes after a sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadChanges {
    /// The thread.
    pub thread: String,
    /// Its head sequence number.
    pub head: Seq,
    /// Changes in sequence order.
    pub changes: Vec<Change>,
}

/// One line of the change feed: a change, or a heartbeat carrying the durable position.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeedLine {
    /// A committed change.
    Change(Box<Change>),
    /// Nothing new; the feed is durable up to `heartbeat`.
    Heartbeat {
        /// The durable feed position.
        heartbeat: FeedPos,
    },
}

/// The durable manual suspension (set by an admin where no operator runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Whether comments are suspended.
    pub suspended: bool,
    /// Why, in a sentence.
    #[serde(default)]
    pub reason: Option<String>,
    /// Since when, RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
}

/// Held comments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Oldest first.
    pub comments: Vec<StoredComment>,
}

/// An author's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Author {
    /// Approved comments so far.
    pub approved: u64,
}

/// A banned author: their comments are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BannedAuthor {
    /// The author's pseudonymous key.
    pub key: String,
    /// What the moderator saw (a display name and a comment id), for the ban list.
    pub label: String,
    /// When, RFC 3339.
    pub since: String,
}

/// A banned address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BannedRange {
    /// The range in CIDR notation, e.g. `203.0.113.0/24`.
    pub cidr: String,
    /// When, RFC 3339.
    pub since: String,
}

/// Who may not comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bans {
    /// Banned authors.
    #[serde(default)]
    pub authors: Vec<BannedAuthor>,
    /// Banned address ranges.
    #[serde(default)]
    pub ranges: Vec<BannedRange>,
}

/// A moderator's comment search. Every filter is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Only this thread.
    pub thread: Option<String>,
    /// Display name containing this (case-insensitive), or this exact email.
    pub author: Option<String>,
    /// Text containing this (case-insensitive).
    pub text: Option<String>,
    /// Only this status.
    pub status: Option<io360_common::model::Status>,
    /// Only comments with a smaller id (paging: the last id of the previous page).
    pub before: Option<u64>,
    /// At most this many (default 50, at most 1000).
    #[serde(default = "default_search_limit")]
    pub limit: usize,
}

fn default_search_limit() -> usize {
    50
}

/// Comments, with private fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    /// The comments.
    pub comments: Vec<StoredComment>,
}

/// Whose comments to erase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseAuthor {
    /// The author's pseudonymous key.
    pub author_key: String,
}

/// What an erase changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasedComments {
    /// One deletion per comment that was still visible or held.
    pub changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    thread: String,
    #[serde(default)]
    after: Seq,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreadQuery {
    thread: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    #[serde(default)]
    after: FeedPos,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorQuery {
    key: String,
}

#[derive(Clone)]
struct AppState {
    db: Arc<Db>,
    shutdown: Shutdown,
}

/// The store's routes, each open only to the tiers that use it: writes, moderation and
/// personal data to logic; the change feed and the feed position to sync and to logic's
/// cache; a thread's changes to sync.
pub fn router(db: Arc<Db>, shutdown: Shutdown, verifier: &Verifier) -> Router {
    let logic = Router::new()
        .route("/store/v1/write", post(write))
        .route("/store/v1/comments", get(comments))
        .route("/store/v1/thread", get(thread))
        .route("/store/v1/counts", post(counts))
        .route("/store/v1/comment/{id}", get(comment))
        .route("/store/v1/pending", get(pending))
        .route("/store/v1/author", get(author))
        .route("/store/v1/suspension", get(suspension).put(set_suspension))
        .route("/store/v1/bans", get(bans).put(set_bans))
        .route("/store/v1/search", get(search))
        .route("/store/v1/author/comments", get(author_comments))
        .route("/store/v1/author/erase", post(erase_author));
    let feed = Router::new()
        .route("/store/v1/feed", get(feed))
        .route("/store/v1/position", get(position));
    let sync = Router::new().route("/store/v1/changes", get(changes));
    verifier
        .guard(&["logic"], logic)
        .merge(verifier.guard(&["sync", "logic"], feed))
        .merge(verifier.guard(&["sync"], sync))
        .with_state(AppState { db, shutdown })
}

fn check_thread(thread: &str) -> Result<(), Problem> {
    io360_common::model::validate_thread(thread).map_err(|rule| Problem::invalid("thread", rule))
}

fn limit(limit: Option<usize>) -> Result<usize, Problem> {
    match limit {
        None => Ok(MAX_LIMIT),
        Some(0) => Err(Problem::invalid("limit", "must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(Problem::invalid("limit", "must be at most 1000")),
        Some(n) => Ok(n),
    }
}

async fn write(
    State(s): State<AppState>,
    Json(mut op): Json<WriteOp>,
) -> Result<Response, Problem> {
    // Whoever sent it, no HTML is kept that the sanitizer would not have let through.
    match &mut op {
        WriteOp::Append { comment, .. } => comment.html = sanitize(&comment.html),
        WriteOp::Edit { html, .. } => *html = sanitize(html),
        _ => {}
    }
    let result = s.db.write(op).await?;
    Ok(axum::Json(result).into_response())
}

async fn comments(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<ThreadPage>, Problem> {
    check_thread(&q.thread)?;
    let limit = limit(q.limit)?;
    Ok(axum::Json(s.db.page(q.thread, q.after, limit).await?))
}

async fn thread(
    State(s): State<AppState>,
    Query(q): Query<ThreadQuery>,
) -> Result<axum::Json<ThreadMeta>, Problem> {
    check_thread(&q.thread)?;
    Ok(axum::Json(s.db.meta(q.thread).await?))
}

async fn counts(
    State(s): State<AppState>,
    Json(req): Json<CountsRequest>,
) -> Result<axum::Json<Counts>, Problem> {
    if req.threads.len() > MAX_LIMIT {
        return Err(Problem::invalid(
            "threads",
            "must list at most 1000 threads",
        ));
    }
    for (i, t) in req.threads.iter().enumerate() {
        io360_common::model::validate_thread(t)
            .map_err(|rule| Problem::invalid(&format!("threads[{i}]"), rule))?;
    }
    Ok(axum::Json(s.db.counts(req.threads).await?))
}

async fn comment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<StoredComment>, Problem> {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::invalid("id", "must be a comment id (a positive integer)"))?;
    match s.db.comment(id).await? {
        Some(c) => Ok(axum::Json(c)),
        None => Err(Problem::not_found(
            "comment-not-found",
            format!("there is no comment {id}"),
        )),
    }
}

async fn changes(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<ThreadChanges>, Problem> {
    check_thread(&q.thread)?;
    let limit = limit(q.limit)?;
    Ok(axum::Json(s.db.changes(q.thread, q.after, limit).await?))
}

async fn pending(
    State(s): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<axum::Json<Pending>, Problem> {
    let limit = limit(q.limit)?;
    Ok(axum::Json(Pending {
        comments: s.db.pending(limit).await?,
    }))
}

async fn author(
    State(s): State<AppState>,
    Query(q): Query<AuthorQuery>,
) -> Result<axum::Json<Author>, Problem> {
    Ok(axum::Json(Author {
        approved: s.db.author_approved(q.key).await?,
    }))
}

async fn suspension(State(s): State<AppState>) -> Result<axum::Json<Suspension>, Problem> {
    Ok(axum::Json(s.db.suspension().await?))
}

async fn set_suspension(
    State(s): State<AppState>,
    Json(sus): Json<Suspension>,
) -> Result<axum::Json<Suspension>, Problem> {
    Ok(axum::Json(s.db.set_suspension(sus).await?))
}

async fn bans(State(s): State<AppState>) -> Result<axum::Json<Bans>, Problem> {
    Ok(axum::Json(s.db.bans().await?))
}

async fn set_bans(
    State(s): State<AppState>,
    Json(b): Json<Bans>,
) -> Result<axum::Json<Bans>, Problem> {
    if b.authors.len() + b.ranges.len() > 10_000 {
        return Err(Problem::invalid("authors", "at most 10000 bans are kept"));
    }
    Ok(axum::Json(s.db.set_bans(b).await?))
}

async fn search(
    State(s): State<AppState>,
    Query(q): Query<Search>,
) -> Result<axum::Json<Found>, Problem> {
    if let Some(t) = &q.thread {
        check_thread(t)?;
    }
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(Problem::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(axum::Json(Found {
        comments: s.db.search(q).await?,
    }))
}

async fn author_comments(
    State(s): State<AppState>,
    Query(q): Query<AuthorQuery>,
) -> Result<axum::Json<Found>, Problem> {
    Ok(axum::Json(Found {
        comments: s.db.author_comments(q.key).await?,
    }))
}

async fn erase_author(
    State(s): State<AppState>,
    Json(req): Json<EraseAuthor>,
) -> Result<axum::Json<ErasedComments>, Problem> {
    if req.author_key.is_empty() {
        return Err(Problem::invalid("authorKey", "must not be empty"));
    }
    Ok(axum::Json(ErasedComments {
        changes: s.db.erase_author(req.author_key).await?,
    }))
}

/// The last durable change-feed position.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Position {
    /// The position.
    pub position: FeedPos,
}

async fn position(State(s): State<AppState>) -> axum::Json<Position> {
    axum::Json(Position {
        position: *s.db.durable().borrow(),
    })
}

/// How often an idle feed says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The change feed: every change after `after`, then each new one as it becomes durable.
async fn feed(State(s): State<AppState>, Query(q): Query<FeedQuery>) -> Response {
    let db = s.db.clone();
    let shutdown = s.shutdown.clone();
    let durable = db.durable();
    let stream = futures::stream::unfold(
        (q.after, durable, false),
        move |(after, mut durable, stopped)| {
            let db = db.clone();
            let shutdown = shutdown.clone();
            async move {
                if stopped {
                    return None;
                }
                loop {
                    let head = *durable.borrow_and_update();
                    if head > after {
                        let changes = match db.feed(after, 256).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::error!(error = %e, "reading the change feed");
                                return None;
                            }
                        };
                        let next = changes.last().map(|c| c.pos).unwrap_or(head);
                        let mut out = Vec::with_capacity(changes.len() * 256);
                        for c in changes {
                            serde_json::to_writer(&mut out, &c).ok()?;
                            out.push(b'\n');
                        }
                        return Some((
                            Ok::<_, std::io::Error>(Bytes::from(out)),
                            (next, durable, false),
                        ));
                    }
                    tokio::select! {
                        changed = durable.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        _ = tokio::time::sleep(HEARTBEAT) => {
                            let line = format!("{{\"heartbeat\":{head}}}\n");
                            return Some((Ok(Bytes::from(line)), (after, durable, false)));
                        }
                        _ = shutdown.wait() => return None,
                    }
                }
            }
        },
    )
    .boxed();
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
