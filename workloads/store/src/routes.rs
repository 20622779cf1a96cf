//! The store's HTTP API (internal: only logic and sync call it).
//!
//! | route | what |
//! |---|---|
//! | `POST /store/v1/write` | apply one [`WriteOp`]; answers a `WriteResult` once durable |
//! | `GET /store/v1/comments?thread&after&limit` | a [`ThreadPage`] |
//! | `GET /store/v1/thread?thread` | [`ThreadMeta`] |
//! | `POST /store/v1/counts` | [`CountsRequest`] → [`Counts`] |
//! | `GET /store/v1/comment/{id}` | a [`StoredComment`], private fields included |
//! | `GET /store/v1/changes?thread&after&limit` | a thread's changes after a sequence number |
//! | `GET /store/v1/feed?after` | every change after a feed position, as an endless NDJSON stream |
//! | `GET /store/v1/position` | the last durable feed position |
//! | `GET /store/v1/pending?limit` | held comments, oldest first |
//! | `GET /store/v1/author?key` | how many approved comments an author has |
//! | `GET`/`PUT /store/v1/suspension` | the durable manual suspension flag |
//! | `GET`/`PUT /store/v1/bans` | the durable list of banned authors and address ranges |
//! | `GET /store/v1/search?thread&author&text&status&before&limit` | comments, newest first |
//! | `GET /store/v1/author/comments?key` | every comment of an author, private fields included |
//! | `POST /store/v1/author/erase` | `{authorKey}`: deletes and scrubs every comment of an author |
//! | `POST /store/v1/import` | a batch of [`ImportedComment`](crate::api::ImportedComment)s, oldest first per thread → [`Imported`](crate::api::Imported) once durable |
//! | `POST /store/v1/titles` | [`ThreadTitle`](crate::api::ThreadTitle)s: page titles kept for their threads → [`TitlesSet`](crate::api::TitlesSet) once durable |
//! | `GET /store/v1/source?source` | the id of the comment imported under a source id (`disqus:12`) |
//! | `GET /store/v1/export` | every thread, then every comment with its private fields and source ids, as NDJSON [`ExportItem`](crate::api::ExportItem)s from one snapshot |
//!
//! This is the only place where the storage layer's [`StoreError`]s become problems with a
//! status code.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use io360_common::Problem;
use io360_common::auth::Verifier;
use io360_common::extract::{Json, Query};
use io360_common::model::{FeedPos, Seq, ThreadMeta, ThreadPage};
use io360_common::rules;
use io360_common::sanitize::sanitize;
use io360_common::serve::Shutdown;
use serde::Deserialize;

use crate::api::{
    Author, Bans, Counts, CountsRequest, EraseAuthor, ErasedComments, Found, MAX_LIMIT, Pending,
    Position, Search, StoredComment, Suspension, ThreadChanges, WriteOp,
};
use crate::engine::Engine;
use crate::error::StoreError;

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        let title = e.to_string();
        match e {
            StoreError::Invalid(invalid) => invalid.into(),
            StoreError::ThreadClosed => Problem::new(StatusCode::FORBIDDEN, "thread-closed", title),
            StoreError::NoComment(_) => Problem::not_found("comment-not-found", title),
            StoreError::Deleted(_) => Problem::new(StatusCode::GONE, "comment-deleted", title),
            StoreError::NotPending(_) => Problem::new(StatusCode::CONFLICT, "not-pending", title),
            StoreError::AlreadyVoted(_) => {
                Problem::new(StatusCode::CONFLICT, "already-voted", title)
            }
            StoreError::NotVotable(_) => Problem::new(StatusCode::CONFLICT, "not-votable", title),
            StoreError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                title,
            )
            .with_field("Idempotency-Key"),
            StoreError::Busy => Problem::unavailable("store-busy", title, Duration::from_secs(1)),
            StoreError::Stopping => {
                Problem::unavailable("store-stopping", title, Duration::from_secs(2))
            }
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "the database is unavailable");
                Problem::unavailable("store-unavailable", title, Duration::from_secs(2))
            }
            StoreError::Poisoned
            | StoreError::Storage(_)
            | StoreError::Corrupt { .. }
            | StoreError::Internal(_) => Problem::internal(title),
        }
    }
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceQuery {
    source: String,
}

async fn source(
    State(s): State<AppState>,
    Query(q): Query<SourceQuery>,
) -> Result<axum::Json<crate::api::SourceMatch>, Problem> {
    Ok(axum::Json(crate::api::SourceMatch {
        id: s.db.by_source(q.source).await?,
    }))
}

/// The largest batch of imported comments taken in one request: logic sends at most about
/// 4 MiB, and one comment may be large.
const MAX_IMPORT_BATCH: usize = 64 << 20;

async fn import(
    State(s): State<AppState>,
    Json(mut batch): Json<Vec<crate::api::ImportedComment>>,
) -> Result<axum::Json<crate::api::Imported>, Problem> {
    // As for any write: no HTML is kept that the sanitizer would not have let through.
    for c in &mut batch {
        c.html = sanitize(&c.html);
    }
    Ok(axum::Json(s.db.import(batch).await?))
}

async fn titles(
    State(s): State<AppState>,
    Json(titles): Json<Vec<crate::api::ThreadTitle>>,
) -> Result<axum::Json<crate::api::TitlesSet>, Problem> {
    Ok(axum::Json(s.db.set_titles(titles).await?))
}

#[derive(Clone)]
struct AppState {
    db: Arc<Engine>,
    shutdown: Shutdown,
}

/// The store's routes.
pub fn router(db: Arc<Engine>, shutdown: Shutdown, verifier: &Verifier) -> Router {
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
        .route("/store/v1/author/erase", post(erase_author))
        .route("/store/v1/export", get(export))
        .route("/store/v1/source", get(source))
        .route(
            "/store/v1/import",
            post(import).layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BATCH)),
        )
        .route("/store/v1/titles", post(titles));
    let feed = Router::new()
        .route("/store/v1/feed", get(feed))
        .route("/store/v1/position", get(position));
    let sync = Router::new().route("/store/v1/changes", get(changes));
    verifier
        .guard(&["logic"], logic)
        .merge(verifier.guard(&["sync", "logic", "notify"], feed))
        .merge(verifier.guard(&["sync"], sync))
        .with_state(AppState { db, shutdown })
}

fn check_thread(thread: &str) -> Result<(), Problem> {
    Ok(rules::thread("thread", thread)?)
}

fn limit(limit: Option<usize>) -> Result<usize, Problem> {
    Ok(rules::limit(limit, MAX_LIMIT)?)
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
    rules::threads("threads", &req.threads)?;
    Ok(axum::Json(s.db.counts(req.threads).await?))
}

async fn comment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<StoredComment>, Problem> {
    let id = rules::comment_id(&id)?;
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
    rules::limit(Some(q.limit), MAX_LIMIT)?;
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

async fn position(State(s): State<AppState>) -> axum::Json<Position> {
    axum::Json(Position {
        position: *s.db.durable().borrow(),
    })
}

/// How often an idle feed says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The change feed: every change after `after`, then each new one as it becomes durable.
/// Streams the export: the scan runs on the blocking pool and hands chunks of lines over a
/// short queue, so memory stays bounded however large the store and however slow the reader.
async fn export(State(s): State<AppState>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let db = s.db.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(1 << 16);
        let r = db.export_blocking(|item| {
            serde_json::to_writer(&mut buf, &item)
                .map_err(|e| StoreError::Internal(format!("encoding the export: {e}")))?;
            buf.push(b'\n');
            if buf.len() >= 1 << 16 {
                let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(1 << 16)));
                tx.blocking_send(Ok(chunk))
                    .map_err(|_| StoreError::Internal("the export's reader left".into()))?;
            }
            Ok(())
        });
        let last = match r {
            Ok(()) => Ok(Bytes::from(buf)),
            Err(e) => {
                tracing::error!(error = %e, "the export stopped");
                Err(std::io::Error::other(e.to_string()))
            }
        };
        let _ = tx.blocking_send(last);
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_error_is_the_problem_clients_match_on() {
        let cases = [
            (
                StoreError::invalid("parent", "must be a comment of this thread; 9 is not"),
                400,
                "invalid-field",
                "`parent` must be a comment of this thread; 9 is not",
            ),
            (
                StoreError::ThreadClosed,
                403,
                "thread-closed",
                "this thread is closed to new comments",
            ),
            (
                StoreError::NoComment(7),
                404,
                "comment-not-found",
                "there is no comment 7",
            ),
            (
                StoreError::Deleted(7),
                410,
                "comment-deleted",
                "comment 7 has been deleted",
            ),
            (
                StoreError::NotPending(7),
                409,
                "not-pending",
                "comment 7 is not waiting for moderation",
            ),
            (
                StoreError::AlreadyVoted(7),
                409,
                "already-voted",
                "you have already voted on comment 7",
            ),
            (
                StoreError::NotVotable(7),
                409,
                "not-votable",
                "comment 7 cannot be voted on",
            ),
            (
                StoreError::IdempotencyKeyReused,
                422,
                "idempotency-key-reused",
                "this Idempotency-Key was already used for a different request; pick a new key for a new comment",
            ),
            (
                StoreError::Stopping,
                503,
                "store-stopping",
                "the store is shutting down",
            ),
            (
                StoreError::Poisoned,
                500,
                "internal",
                "io360 failed to handle this request; it has been logged",
            ),
        ];
        for (err, status, slug, title) in cases {
            let p = Problem::from(err);
            assert_eq!(
                (p.status, p.slug(), p.title.as_str()),
                (status, slug, title)
            );
        }
        let p = Problem::from(StoreError::IdempotencyKeyReused);
        assert_eq!(p.field.as_deref(), Some("Idempotency-Key"));
        let p = Problem::from(StoreError::invalid("thread", "must not be empty"));
        assert_eq!(p.field.as_deref(), Some("thread"));
        let p = Problem::from(StoreError::Busy);
        assert_eq!((p.status, p.retry_after), (503, Some(1)));
        // The database away is the caller's to retry, never a 500; its detail stays in the log.
        let p = Problem::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(
            (p.status, p.slug(), p.retry_after),
            (503, "store-unavailable", Some(2))
        );
        assert!(!p.title.contains("refused"), "{}", p.title);
    }
}
