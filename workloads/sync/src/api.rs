//! Sync's HTTP API (internal: only longpoll calls it) and its wire types.
//!
//! | route | what |
//! |---|---|
//! | `GET /sync/v1/stream?after=P` | every change after feed position `P` (default: the head), as an endless NDJSON stream of [`StreamLine`]s |
//! | `GET /sync/v1/changes?thread=T&after=S&limit=N&at=P` | [`RangeAnswer`]: thread `T`'s changes after sequence `S` |
//!
//! Positions are the store's global feed positions, so they mean the same on every sync
//! replica: a longpoll instance that loses one replica resumes from another with the last
//! position it applied. A stream that starts behind the in-memory window is served from the
//! store until it reaches the window, so the stream is gap-free for any `after`.
//!
//! `at` makes a range answer at least as fresh as the caller: history answers only when it
//! has read the feed up to `at`, otherwise the store answers. A longpoll instance passes the
//! position it has applied, so every change is either in the answer or still to come on its
//! stream.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use http::header;
use io360_common::Problem;
use io360_common::auth::Verifier;
use io360_common::extract::Query;
use io360_common::model::{Change, FeedPos, Seq};
use io360_common::rules;
use io360_common::serve::Shutdown;
use io360_store::StoreClient;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::history::{History, Range, Read};

/// Most changes one range answer carries.
pub const MAX_LIMIT: usize = io360_common::rules::MAX_PAGE;

/// How often an idle stream says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The first line of a stream: who is answering and from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The answering replica's history epoch.
    pub epoch: u64,
    /// The stream carries every change after this position.
    pub after: FeedPos,
    /// The replica's head when the stream began.
    pub head: FeedPos,
}

/// One line of a stream.
#[allow(clippy::large_enum_variant)] // changes dominate; boxing them would cost every line
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamLine {
    /// The first line.
    Hello {
        /// Who answers.
        hello: Hello,
    },
    /// Nothing new; the replica has applied the feed up to `heartbeat`.
    Heartbeat {
        /// The replica's head.
        heartbeat: FeedPos,
    },
    /// The next change.
    Change(Change),
}

/// Where a range answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Sync's in-memory history.
    History,
    /// The store (the history did not reach back far enough).
    Store,
}

/// A thread's changes after a sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangeAnswer {
    /// The answering replica's history epoch.
    pub epoch: u64,
    /// The thread.
    pub thread: String,
    /// The thread's head sequence number as of the answer.
    pub head: Seq,
    /// Changes after the asked sequence number, in order, gap-free (at most the limit).
    pub changes: Vec<Change>,
    /// Where the answer came from.
    pub source: Source,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    after: Option<FeedPos>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    thread: String,
    #[serde(default)]
    after: Seq,
    limit: Option<usize>,
    #[serde(default)]
    at: FeedPos,
}

/// Sync's own metrics.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    pub streams: Gauge,
    pub ranges: Family<SourceLabel, Counter>,
    pub store_catch_ups: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct SourceLabel {
    source: &'static str,
}

#[derive(Clone)]
struct AppState {
    history: Arc<History>,
    store: StoreClient,
    shutdown: Shutdown,
    metrics: Metrics,
}

/// Sync's routes, open only to longpoll.
pub(crate) fn router(
    history: Arc<History>,
    store: StoreClient,
    shutdown: Shutdown,
    metrics: Metrics,
    verifier: &Verifier,
) -> Router {
    let routes = Router::new()
        .route("/sync/v1/stream", get(stream))
        .route("/sync/v1/changes", get(changes));
    verifier.guard(&["longpoll"], routes).with_state(AppState {
        history,
        store,
        shutdown,
        metrics,
    })
}

async fn changes(
    State(s): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<RangeAnswer>, Problem> {
    rules::thread("thread", &q.thread)?;
    let limit = rules::limit(q.limit, MAX_LIMIT)?;
    let epoch = s.history.epoch();
    if let Range::Covered { head, changes } = s.history.range(&q.thread, q.after, limit, q.at) {
        s.metrics
            .ranges
            .get_or_create(&SourceLabel { source: "history" })
            .inc();
        return Ok(axum::Json(RangeAnswer {
            epoch,
            thread: q.thread,
            head,
            changes,
            source: Source::History,
        }));
    }
    s.metrics
        .ranges
        .get_or_create(&SourceLabel { source: "store" })
        .inc();
    let page = s.store.changes(&q.thread, q.after, limit).await?;
    Ok(axum::Json(RangeAnswer {
        epoch,
        thread: page.thread,
        head: page.head,
        changes: page.changes,
        source: Source::Store,
    }))
}

fn line(l: &StreamLine) -> Option<Bytes> {
    let mut out = serde_json::to_vec(l).ok()?;
    out.push(b'\n');
    Some(Bytes::from(out))
}

async fn stream(State(s): State<AppState>, Query(q): Query<StreamQuery>) -> Response {
    let head = s.history.head();
    let after = q.after.unwrap_or(head);
    let hello = Hello {
        epoch: s.history.epoch(),
        after,
        head,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let metrics = s.metrics.clone();
    tokio::spawn(async move {
        metrics.streams.inc();
        if let Some(l) = line(&StreamLine::Hello { hello })
            && tx.send(l).await.is_ok()
        {
            let shutdown = s.shutdown.clone();
            tokio::select! {
                _ = feed_stream(&s, after, &tx) => {}
                _ = shutdown.wait() => {}
            }
        }
        metrics.streams.dec();
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Sends every change after `after` into `tx` until the receiver goes away or the store
/// cannot fill what history lost.
async fn feed_stream(s: &AppState, mut after: FeedPos, tx: &mpsc::Sender<Bytes>) {
    let mut head = s.history.watch_head();
    loop {
        head.borrow_and_update();
        match s.history.read(after, 256) {
            Read::Changes(changes) => {
                let mut out = Vec::with_capacity(changes.len() * 512);
                for c in &changes {
                    if serde_json::to_writer(&mut out, &**c).is_err() {
                        return;
                    }
                    out.push(b'\n');
                }
                if let Some(last) = changes.last() {
                    after = last.pos;
                }
                if tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
            Read::Caught => {
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        let Some(l) = line(&StreamLine::Heartbeat { heartbeat: s.history.head() }) else { return };
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
            Read::Evicted { floor } => {
                s.metrics.store_catch_ups.inc();
                match catch_up_from_store(s, after, floor, tx).await {
                    Some(reached) => after = reached,
                    None => return,
                }
            }
        }
    }
}

/// Relays the store's feed from `after` until it reaches `floor`, the start of the window.
/// Returns the last position sent, or `None` when the stream must end.
async fn catch_up_from_store(
    s: &AppState,
    mut after: FeedPos,
    floor: FeedPos,
    tx: &mpsc::Sender<Bytes>,
) -> Option<FeedPos> {
    let feed = match s.store.feed(after).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, after, "cannot catch a stream up from the store");
            return None;
        }
    };
    let mut feed = std::pin::pin!(feed);
    while after < floor {
        match feed.next().await {
            Some(Ok(Some(change))) => {
                if change.pos <= after {
                    continue;
                }
                if change.pos != after + 1 {
                    tracing::error!(
                        after,
                        got = change.pos,
                        "the store's feed skipped a position"
                    );
                    return None;
                }
                after = change.pos;
                let l = line(&StreamLine::Change(change))?;
                tx.send(l).await.ok()?;
            }
            Some(Ok(None)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the store's feed broke during a catch-up");
                return None;
            }
            None => return None,
        }
    }
    Some(after)
}
