//! The admin API under `/api/v1/admin`, behind `Authorization: Bearer <admin token>`.

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::routing::{delete, get, post, put};
use http::StatusCode;
use http::request::Parts;
use io360_common::Problem;
use io360_common::extract::{Json, Query};
use io360_store::api::{Pending, Suspension, WriteOp};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{One, ThreadQuery, bearer, check_thread};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/queue", get(queue))
        .route("/api/v1/admin/comments/{id}/approve", post(approve))
        .route("/api/v1/admin/comments/{id}", delete(remove))
        .route("/api/v1/admin/threads/close", post(close))
        .route("/api/v1/admin/threads/reopen", post(reopen))
        .route("/api/v1/admin/suspension", put(suspend).get(suspension))
}

/// Proof that the request carries the admin token.
struct Admin;

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
        Ok(Admin)
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
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(Problem::invalid("limit", "must be between 1 and 1000")),
    };
    Ok(axum::Json(s.store.pending(limit).await?))
}

fn id(raw: &str) -> Result<u64, Problem> {
    raw.parse()
        .map_err(|_| Problem::invalid("id", "must be a comment id (a positive integer)"))
}

async fn write(s: &AppState, op: WriteOp) -> Result<io360_store::api::WriteResult, Problem> {
    let r = s.store.write(&op).await?;
    s.cache.changed(&r.change.thread, r.change.seq);
    Ok(r)
}

async fn approve(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<axum::Json<One>, Problem> {
    let r = write(&s, WriteOp::Approve { id: id(&raw)? }).await?;
    let comment = r
        .change
        .comment
        .ok_or_else(|| Problem::internal("approve without comment"))?;
    Ok(axum::Json(One { comment }))
}

async fn remove(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<axum::Json<One>, Problem> {
    let r = write(&s, WriteOp::Delete { id: id(&raw)? }).await?;
    let comment = r
        .change
        .comment
        .ok_or_else(|| Problem::internal("delete without comment"))?;
    Ok(axum::Json(One { comment }))
}

async fn close(
    _: Admin,
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
    Ok(axum::Json(s.store.meta(&q.thread).await?))
}

async fn reopen(
    _: Admin,
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
    _: Admin,
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
    Ok(axum::Json(s.suspension.get()))
}

async fn suspension(_: Admin, State(s): State<AppState>) -> axum::Json<crate::SuspensionState> {
    axum::Json(s.suspension.get())
}
