//! `GET /v1/events?thread=T`: the same events as Server-Sent Events.
//!
//! The stream resumes after `Last-Event-ID` (or `since`, for a first connection that already
//! holds a position); each message's `id` is the event's sequence number. A stream's only
//! queue is its cursor into the hub's shared history: a client that falls behind the history
//! is caught up from sync, or sent a reset, rather than buffered without bound.

use std::sync::Arc;
use std::time::Duration;

use io360_common::Problem;
use io360_common::model::Seq;
use io360_common::rules;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::event::{Event, sse_message, state_json};
use crate::http::{self, Request};
use crate::hub::Look;
use crate::poll::{Filled, fill, parse_seq};
use crate::server::{Ctx, Next};

/// How often an idle stream sends a comment line, so proxies keep it open.
const PING: Duration = Duration::from_secs(15);

fn parse(req: &Request) -> Result<(Arc<str>, Seq), Problem> {
    io360_common::extract::check_query_utf8(&req.query)?;
    let mut thread: Option<Arc<str>> = None;
    let mut since: Option<Seq> = None;
    for (k, v) in form_urlencoded::parse(req.query.as_bytes()) {
        match &*k {
            "thread" if thread.is_none() => {
                rules::thread("thread", &v)?;
                thread = Some(Arc::from(&*v));
            }
            "thread" => {
                return Err(Problem::invalid(
                    "thread",
                    "may be given once per event stream (use /v1/poll for several threads)",
                ));
            }
            "since" if since.is_none() => since = Some(parse_seq("since", &v)?),
            "since" => return Err(Problem::invalid("since", "may be given once")),
            "_" => {}
            other => {
                return Err(Problem::invalid(
                    other,
                    "is not a parameter of /v1/events (use `thread` and `since`)",
                ));
            }
        }
    }
    let thread = thread.ok_or_else(|| Problem::invalid("thread", "is required"))?;
    let since = match &req.last_event_id {
        Some(id) => parse_seq("Last-Event-ID", id)?,
        None => since.unwrap_or(0),
    };
    Ok((thread, since))
}

/// Removes a stream's subscription when the stream ends, however it ends.
struct Subscription<'a> {
    ctx: &'a Ctx,
    thread: Arc<str>,
    id: u64,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.ctx.hub.unsubscribe(&self.thread, self.id);
    }
}

/// Serves one event stream; the connection ends with it.
pub async fn handle(ctx: &Arc<Ctx>, mut stream: TcpStream, req: &Request) -> Next {
    let cors = ctx.hub.origins().index(req.origin.as_deref());
    let (thread, since) = match parse(req) {
        Ok(p) => p,
        Err(p) => return ctx.reply_problem(stream, &p, cors, req.keep_alive).await,
    };
    if !ctx.hub.started() || ctx.shutdown.is_triggered() {
        let p = Problem::unavailable(
            "not-ready",
            "live updates are not available on this instance right now; reconnect shortly",
            Duration::from_secs(1),
        );
        return ctx.reply_problem(stream, &p, cors, false).await;
    }
    if ctx.hub.metrics.held.get() as usize >= ctx.max_held {
        ctx.hub.metrics.rejected.inc();
        let p = Problem::unavailable(
            "too-many-streams",
            "this live-update instance holds as many connections as it may; try again shortly",
            Duration::from_secs(fastrand::u64(2..=6)),
        );
        return ctx.reply_problem(stream, &p, cors, false).await;
    }
    let _held = ctx.hub.hold_stream();
    let mut out = Vec::with_capacity(512);
    http::head(
        &mut out,
        200,
        "OK",
        ctx.hub.origins().cors(cors),
        false,
        Some("text/event-stream"),
        &["X-Accel-Buffering: no"],
    );
    out.extend_from_slice(b"\r\nretry: 2000\n\n");
    if http::write_all(&mut stream, &out, ctx.write_timeout)
        .await
        .is_err()
    {
        return Next::Done;
    }
    let notify = Arc::new(Notify::new());
    let _sub = Subscription {
        ctx,
        id: ctx.hub.subscribe(&thread, notify.clone()),
        thread: thread.clone(),
    };
    let mut cursor = since;
    // A stream opened while comments are suspended says so first; then every change of the
    // state is one message (without an `id`: it is no position in the thread).
    let mut state = ctx.suspension.subscribe();
    let mut was_suspended = state
        .borrow_and_update()
        .as_ref()
        .is_some_and(|s| s.suspended);
    let mut tell = was_suspended;
    loop {
        if std::mem::take(&mut tell) {
            let now = state.borrow_and_update().clone().unwrap_or_default();
            out.clear();
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&state_json(
                &thread,
                cursor,
                now.suspended,
                now.message.as_deref(),
            ));
            out.extend_from_slice(b"\n\n");
            if http::write_all(&mut stream, &out, ctx.write_timeout)
                .await
                .is_err()
            {
                return Next::Done;
            }
        }
        let events: Vec<Event> = match ctx.hub.look(&thread, cursor) {
            Look::Events(e) => e,
            Look::Hold => Vec::new(),
            Look::Fill => match fill(ctx, &thread, cursor, ctx.hub.pos()).await {
                Ok(Filled::Events(e)) => e,
                Ok(Filled::Reset(e)) => vec![e],
                Ok(Filled::Hold) => Vec::new(),
                // The client reconnects with its Last-Event-ID.
                Err(_) => return Next::Done,
            },
        };
        if let Some(last) = events.last() {
            cursor = last.seq;
            out.clear();
            for e in &events {
                sse_message(&mut out, e);
            }
            let delivered = events.iter().filter(|e| !e.reset).count() as u64;
            if http::write_all(&mut stream, &out, ctx.write_timeout)
                .await
                .is_err()
            {
                return Next::Done;
            }
            ctx.hub.metrics.delivered.inc_by(delivered);
            continue;
        }
        tokio::select! {
            _ = notify.notified() => {}
            changed = state.changed() => {
                // Only a change of whether comments are suspended is news to the page.
                let before = was_suspended;
                was_suspended = state.borrow().as_ref().is_some_and(|s| s.suspended);
                tell = changed.is_ok() && before != was_suspended;
            }
            _ = tokio::time::sleep(PING) => {
                if http::write_all(&mut stream, b": ping\n\n", ctx.write_timeout).await.is_err() {
                    return Next::Done;
                }
            }
            _ = ctx.shutdown.wait() => {
                // Spread reconnects over the drain time.
                tokio::time::sleep(ctx.drain.mul_f64(fastrand::f64())).await;
                return Next::Done;
            }
        }
    }
}
