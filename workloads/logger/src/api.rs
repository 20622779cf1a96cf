//! The logger's HTTP API (internal: tiers ship to it, logic reads it for the admin API).
//!
//! | route | what |
//! |---|---|
//! | `POST /logger/v1/events` | `{events: [...]}`: a batch, stored all or nothing, answered once durable |
//! | `GET /logger/v1/events?since&until&before&kind&thread&actor&author&limit` | a [`Page`], newest first |
//! | `GET /logger/v1/tail?kind&thread` | new events as Server-Sent Events |
//! | `POST /logger/v1/erase` | `{authorKey}`: removes an author's personal data from every event |
//! | `GET /logger/v1/export?author` | every event about an author, oldest first |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use http::StatusCode;
use io360_common::Problem;
use io360_common::auth::{TIERS, Verifier};
use io360_common::extract::{Json, Query};
use io360_common::rules;
use io360_common::serve::Shutdown;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_stream::wrappers::BroadcastStream;

use crate::db::{EventLog, Filter, Page, parse_id};
use crate::error::LogError;
use crate::event::{Event, Kind};

impl From<LogError> for Problem {
    fn from(e: LogError) -> Problem {
        match e {
            LogError::Stopping => Problem::unavailable(
                "logger-stopping",
                "the logger is shutting down",
                Duration::from_secs(2),
            ),
            LogError::Busy => Problem::unavailable(
                "logger-busy",
                "the logger's disk is behind; send the batch again shortly",
                Duration::from_secs(1),
            ),
            LogError::Storage(_) | LogError::Corrupt(_) | LogError::Internal(_) => {
                Problem::internal(e)
            }
        }
    }
}

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Largest batch body, in bytes.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Most events one query answers.
pub const MAX_LIMIT: usize = rules::MAX_PAGE;

/// A batch of events, as tiers ship them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The events, in the order they happened.
    pub events: Vec<Event>,
}

/// The answer to a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    /// How many events were stored.
    pub stored: usize,
}

/// Whose data to erase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseRequest {
    /// The author's pseudonymous key.
    pub author_key: String,
}

/// The answer to an erase request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Erased {
    /// How many events had personal data removed.
    pub erased: u64,
}

/// Every event about one author.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    /// Oldest first.
    pub events: Vec<Event>,
}

#[derive(Clone)]
struct AppState {
    log: Arc<EventLog>,
    keep_addresses: bool,
    shutdown: Shutdown,
}

/// The logger's routes: every tier may send events; only logic (the admin API) may read,
/// erase or export them.
pub fn router(
    log: Arc<EventLog>,
    keep_addresses: bool,
    shutdown: Shutdown,
    verifier: &Verifier,
) -> Router {
    let reads = Router::new()
        .route("/logger/v1/tail", get(tail))
        .route("/logger/v1/erase", post(erase))
        .route("/logger/v1/export", get(export));
    Router::new()
        .route(
            "/logger/v1/events",
            verifier
                .guard_method(&TIERS, post(ingest))
                .merge(verifier.guard_method(&["logic"], get(events))),
        )
        .merge(verifier.guard(&["logic"], reads))
        .fallback(|| async { Problem::not_found("no-such-route", "there is no such logger route") })
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(AppState {
            log,
            keep_addresses,
            shutdown,
        })
}

async fn ingest(
    State(s): State<AppState>,
    Json(batch): Json<Batch>,
) -> Result<(StatusCode, axum::Json<Accepted>), Problem> {
    if batch.events.is_empty() {
        return Err(Problem::invalid("events", "must hold at least one event"));
    }
    if batch.events.len() > MAX_BATCH {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!(
                "`events` holds {} events; at most {MAX_BATCH} are accepted in one batch",
                batch.events.len()
            ),
        )
        .with_field("events"));
    }
    // Check everything first: a batch is stored whole or not at all.
    let mut valid = Vec::with_capacity(batch.events.len());
    for (i, mut e) in batch.events.into_iter().enumerate() {
        let nanos = e.validate(format_args!("events[{i}]"), s.keep_addresses)?;
        valid.push((nanos, e));
    }
    let stored = s.log.append(valid).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { stored })))
}

/// Query parameters of `GET /logger/v1/events` (and of logic's `/api/v1/admin/events`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    pub until: Option<String>,
    /// Only events older than this event id (the `next` of the previous page).
    pub before: Option<String>,
    /// Only these kinds, comma-separated (`comment.approved,comment.deleted`).
    pub kind: Option<String>,
    /// Only this thread.
    pub thread: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only events about this author key.
    pub author: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<usize>,
}

fn time_param(field: &str, v: &Option<String>) -> Result<Option<u64>, Problem> {
    let Some(v) = v else { return Ok(None) };
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
        Problem::invalid(field, "must be an RFC 3339 time like 2026-01-02T03:04:05Z")
    })?;
    Ok(Some(
        t.unix_timestamp_nanos().clamp(0, u64::MAX as i128) as u64
    ))
}

fn kinds(v: &Option<String>) -> Result<Vec<Kind>, Problem> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            Kind::parse(k).ok_or_else(|| {
                Problem::invalid("kind", format!("names an unknown event kind `{k}`"))
            })
        })
        .collect()
}

impl EventsQuery {
    /// Checks the parameters and turns them into a [`Filter`].
    pub fn filter(&self) -> Result<Filter, Problem> {
        let limit = rules::limit(self.limit, 100)?;
        let before = match &self.before {
            None => None,
            Some(b) => Some(parse_id(b).ok_or_else(|| {
                Problem::invalid(
                    "before",
                    "must be an event id from a previous page's `next`",
                )
            })?),
        };
        if let Some(t) = &self.thread {
            rules::thread("thread", t)?;
        }
        Ok(Filter {
            since: time_param("since", &self.since)?,
            until: time_param("until", &self.until)?,
            before,
            kinds: kinds(&self.kind)?,
            thread: self.thread.clone(),
            actor: self.actor.clone().filter(|a| !a.is_empty()),
            author_key: self.author.clone().filter(|a| !a.is_empty()),
            limit,
        })
    }
}

async fn events(
    State(s): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<axum::Json<Page>, Problem> {
    Ok(axum::Json(s.log.query(q.filter()?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    kind: Option<String>,
    thread: Option<String>,
}

async fn tail(
    State(s): State<AppState>,
    Query(q): Query<TailQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let filter = Filter {
        kinds: kinds(&q.kind)?,
        thread: q.thread,
        ..Filter::default()
    };
    let shutdown = s.shutdown.clone();
    let stream = BroadcastStream::new(s.log.subscribe())
        .take_until(async move { shutdown.wait().await })
        .filter_map(move |item| {
            let out = match item {
                Ok(e) if filter.kinds.is_empty() || filter.kinds.contains(&e.kind) => {
                    if filter.thread.is_none() || filter.thread == e.thread {
                        let data = serde_json::to_string(&*e).unwrap_or_default();
                        let mut ev = SseEvent::default().event(e.kind.as_str()).data(data);
                        if let Some(id) = &e.id {
                            ev = ev.id(id.clone());
                        }
                        Some(Ok(ev))
                    } else {
                        None
                    }
                }
                Ok(_) => None,
                // A slow reader missed events: say so rather than skip silently.
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    Some(Ok(SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{n}}}"))))
                }
            };
            futures::future::ready(out)
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn erase(
    State(s): State<AppState>,
    Json(req): Json<EraseRequest>,
) -> Result<axum::Json<Erased>, Problem> {
    if req.author_key.is_empty() || req.author_key.len() > 200 {
        return Err(Problem::invalid("authorKey", "must be 1 to 200 bytes"));
    }
    Ok(axum::Json(Erased {
        erased: s.log.erase_author(req.author_key).await?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    author: String,
}

async fn export(
    State(s): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<axum::Json<Export>, Problem> {
    if q.author.is_empty() || q.author.len() > 200 {
        return Err(Problem::invalid("author", "must be 1 to 200 bytes"));
    }
    Ok(axum::Json(Export {
        events: s.log.author_events(q.author).await?,
    }))
}
