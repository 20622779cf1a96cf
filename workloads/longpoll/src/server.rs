//! The accept loop, request routing, and shutdown for the longpoll tier.
//!
//! Each connection is a task only while it is reading a request or writing an answer; a held
//! poll parks its socket in the hub and its task ends (see [`crate::hub`]). On shutdown the
//! listener closes first, then held polls are answered in batches spread over the drain
//! time, so clients do not all come back at the same instant.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use io360_common::Problem;
use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use tokio::net::{TcpListener, TcpStream};

use crate::http::{self, ReadError, Request};
use crate::hub::{Callbacks, Hub};
use crate::{poll, sse};

/// What a request handler leaves behind.
pub enum Next {
    /// The connection may carry another request.
    Continue(TcpStream),
    /// The connection is closed or owned elsewhere (parked in the hub).
    Done,
}

/// Everything a connection needs.
pub struct Ctx {
    /// Threads, history and waiters.
    pub hub: Arc<Hub>,
    /// Gap fills in flight, shared by the clients that need the same one.
    pub fills: Arc<crate::poll::GapFills>,
    /// Shutdown signal.
    pub shutdown: Shutdown,
    /// Telemetry (metrics and readiness).
    pub telemetry: Telemetry,
    /// Most polls and streams held at once.
    pub max_held: usize,
    /// Base hold time of a poll.
    pub hold: Duration,
    /// How long answers to held polls are spread over at shutdown.
    pub drain: Duration,
    /// Longest time a write to a client may take.
    pub write_timeout: Duration,
    /// Whether comments are suspended, as logic last said (see [`crate::suspension`]).
    pub suspension: crate::suspension::Known,
    /// Logic, asked whether comments are suspended; `None` when not configured.
    pub logic: Option<io360_common::client::TierClient>,
    /// Held polls whose page believes otherwise than longpoll knows; answered by the next
    /// answer from logic that still disagrees with them (see [`crate::suspension::learn`]).
    pub doubters: parking_lot::Mutex<Vec<Weak<crate::hub::Slot>>>,
}

impl Ctx {
    /// A poll's hold time: the base, jittered by ±10% so held polls do not expire together.
    pub fn hold_time(&self) -> Duration {
        self.hold.mul_f64(0.9 + 0.2 * fastrand::f64())
    }

    /// Writes a whole answer; keeps the connection when asked and the write succeeded.
    pub async fn reply(&self, mut stream: TcpStream, bytes: Vec<u8>, keep_alive: bool) -> Next {
        match http::write_all(&mut stream, &bytes, self.write_timeout).await {
            Ok(()) if keep_alive => Next::Continue(stream),
            Ok(()) => {
                tokio::spawn(http::linger_close(stream));
                Next::Done
            }
            Err(_) => Next::Done,
        }
    }

    /// Writes a problem.
    pub async fn reply_problem(
        &self,
        stream: TcpStream,
        p: &Problem,
        cors: u16,
        keep_alive: bool,
    ) -> Next {
        let bytes = http::problem(p, self.hub.origins().cors(cors), keep_alive);
        self.reply(stream, bytes, keep_alive).await
    }
}

/// Serves requests on a connection until it closes or parks.
pub fn spawn_connection(ctx: Arc<Ctx>, stream: TcpStream) {
    tokio::spawn(connection(ctx, stream));
}

async fn connection(ctx: Arc<Ctx>, mut stream: TcpStream) {
    loop {
        let read = tokio::select! {
            r = http::read_request(&mut stream, http::IDLE) => r,
            _ = ctx.shutdown.wait() => return,
        };
        let mut req = match read {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(p)) => {
                ctx.reply_problem(stream, &p, 0, false).await;
                return;
            }
        };
        // While draining, every answer closes its connection, so a client on a keep-alive
        // connection comes back through the load balancer, to another instance.
        if ctx.shutdown.is_draining() {
            req.keep_alive = false;
        }
        // Boxed: what a request does (a gap fill from sync, an event stream) takes far more
        // room than waiting for the next request, and every connection between two polls
        // would carry that room in its task (2.2 KiB a connection instead of 0.8).
        match Box::pin(route(&ctx, stream, req)).await {
            Next::Continue(s) => stream = s,
            Next::Done => return,
        }
    }
}

async fn route(ctx: &Arc<Ctx>, stream: TcpStream, req: Request) -> Next {
    let keep = req.keep_alive;
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/poll") => poll::handle(ctx, stream, &req).await,
        ("GET", "/v1/events") => sse::handle(ctx, stream, &req).await,
        ("OPTIONS", "/v1/poll" | "/v1/events") => {
            let cors = ctx.hub.origins().index(req.origin.as_deref());
            let bytes = http::response(
                204,
                "No Content",
                ctx.hub.origins().cors(cors),
                keep,
                None,
                &[
                    "Access-Control-Allow-Methods: GET, OPTIONS",
                    "Access-Control-Allow-Headers: Last-Event-ID, Cache-Control",
                    "Access-Control-Max-Age: 600",
                ],
                b"",
            );
            ctx.reply(stream, bytes, keep).await
        }
        (_, "/v1/poll" | "/v1/events") => {
            let p = Problem::new(
                ::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{} accepts GET only", req.path),
            );
            let cors = ctx.hub.origins().index(req.origin.as_deref());
            ctx.reply_problem(stream, &p, cors, keep).await
        }
        ("GET", "/metrics") => {
            let body = ctx.telemetry.encode();
            let bytes = http::response(
                200,
                "OK",
                http::Cors::None,
                keep,
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                &[],
                body.as_bytes(),
            );
            ctx.reply(stream, bytes, keep).await
        }
        ("GET", "/healthz") => {
            let bytes = http::plain(200, "OK", keep, b"ok\n");
            ctx.reply(stream, bytes, keep).await
        }
        ("GET", "/readyz") => {
            let bytes = if ctx.telemetry.ready.get() && !ctx.shutdown.is_triggered() {
                http::plain(200, "OK", keep, b"ready\n")
            } else {
                http::plain(503, "Service Unavailable", keep, b"not ready\n")
            };
            ctx.reply(stream, bytes, keep).await
        }
        _ => {
            let p = Problem::not_found(
                "not-found",
                format!("there is no {} {} here", req.method, req.path),
            );
            ctx.reply_problem(stream, &p, 0, keep).await
        }
    }
}

/// Installs the hub's callbacks, which point back at the context without keeping it alive.
pub fn connect_hub(ctx: &Arc<Ctx>) {
    let weak: Weak<Ctx> = Arc::downgrade(ctx);
    let weak2 = weak.clone();
    ctx.hub.set_callbacks(Callbacks {
        resume: Box::new(move |stream| {
            if let Some(ctx) = weak.upgrade() {
                spawn_connection(ctx, stream);
            }
        }),
        repoll: Box::new(move |slot, stream| {
            if let Some(ctx) = weak2.upgrade() {
                tokio::spawn(async move {
                    if let Next::Continue(stream) = poll::run(ctx.clone(), slot, stream).await {
                        connection(ctx, stream).await;
                    }
                });
            }
        }),
    });
}

/// Accepts connections until shutdown, then drains held polls.
pub async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    let sweeper = {
        let hub = ctx.hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                hub.expire(Instant::now());
            }
        })
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(ctx.clone(), stream);
                }
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = ctx.shutdown.wait() => break,
        }
    }
    drop(listener);
    ctx.telemetry.ready.set(false);
    // Stopping may be the operator suspending comments (it scales longpoll to zero): ask
    // logic once more, so held polls carry the suspension rather than a bare 204.
    if let Some(logic) = &ctx.logic {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            crate::suspension::refresh(&ctx, logic),
        )
        .await;
    }
    let parked = ctx.hub.take_parked();
    ctx.hub.wake_streams();
    tracing::info!(held = parked.len(), drain = ?ctx.drain, "answering held polls before exit");
    let batches = 20usize;
    let per_batch = parked.len().div_ceil(batches).max(1);
    let pause = ctx.drain / batches as u32;
    let mut parked = parked.into_iter().peekable();
    while parked.peek().is_some() {
        for (slot, mut stream) in parked.by_ref().take(per_batch) {
            let bytes = http::response(
                204,
                "No Content",
                ctx.hub.origins().cors(slot.cors),
                false,
                None,
                &[],
                b"",
            );
            tokio::spawn(async move {
                let _ = http::write_all(&mut stream, &bytes, Duration::from_secs(2)).await;
            });
        }
        if parked.peek().is_some() {
            tokio::time::sleep(pause).await;
        }
    }
    sweeper.abort();
    // Let event streams close over the drain time and in-flight answers finish.
    tokio::time::sleep(ctx.drain.min(Duration::from_secs(1))).await;
}
