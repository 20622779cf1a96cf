//! `GET /v1/poll`: answer at once when events follow the client's position, else hold.
//!
//! `thread` may repeat, each followed by its own `since`, so a page with many threads uses one
//! connection. The answer is `{"events":[...]}` (200) with every event the instance can give
//! after each `since` (a batch at most), or 204 when the hold time passes. A thread whose
//! position no history can cover gets a `reset` event instead of its events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use io360_common::Problem;
use io360_common::model::Seq;
use io360_common::rules;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::event::{Event, poll_body};
use crate::http::{self, Request};
use crate::hub::{Hub, Look, Slot};
use crate::server::{Ctx, Next};
use crate::suspension::doubt;
use io360_sync::SyncClient;

/// Most threads one poll may wait on.
pub const MAX_THREADS: usize = 100;

/// Largest `since` accepted: the largest integer a browser's JSON numbers hold exactly.
pub const MAX_SEQ: Seq = (1 << 53) - 1;

/// Parses a sequence number given by a client.
pub fn parse_seq(field: &str, v: &str) -> Result<Seq, Problem> {
    let rule = "must be a sequence number: an integer from 0 to 9007199254740991";
    if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::invalid(field, rule));
    }
    match v.parse::<Seq>() {
        Ok(n) if n <= MAX_SEQ => Ok(n),
        _ => Err(Problem::invalid(field, rule)),
    }
}

/// The threads of a poll, each with the position after which the client wants events.
pub type Threads = Vec<(Arc<str>, Seq)>;

/// Parses `thread=T&since=S&thread=U&since=V...`: each `since` belongs to the `thread` just
/// before it; a thread without one starts at 0.
#[cfg(test)]
pub fn parse_query(query: &str) -> Result<Vec<(Arc<str>, Seq)>, Problem> {
    parse_poll(query).map(|(threads, _)| threads)
}

/// As [`parse_query`], with `suspended=0|1`: whether the page believes comments are
/// suspended (a poll that says so is answered at once when longpoll knows otherwise).
pub fn parse_poll(query: &str) -> Result<(Threads, Option<bool>), Problem> {
    io360_common::extract::check_query_utf8(query)?;
    let mut believes = None;
    let mut threads: Vec<(Arc<str>, Option<Seq>)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "thread" => {
                if threads.len() == MAX_THREADS {
                    return Err(Problem::invalid(
                        "thread",
                        format!("may be given at most {MAX_THREADS} times in one poll"),
                    ));
                }
                rules::thread("thread", &v)?;
                if threads.iter().any(|(t, _)| **t == *v) {
                    return Err(Problem::invalid(
                        "thread",
                        format!("must not name the same thread twice (`{v}`)"),
                    ));
                }
                threads.push((Arc::from(&*v), None));
            }
            "since" => {
                let seq = parse_seq("since", &v)?;
                match threads.last_mut() {
                    Some((_, s @ None)) => *s = Some(seq),
                    _ => {
                        return Err(Problem::invalid(
                            "since",
                            "must follow the `thread` it belongs to, once per thread",
                        ));
                    }
                }
            }
            "_" => {}
            "suspended" => {
                believes = Some(match &*v {
                    "0" => false,
                    "1" => true,
                    _ => return Err(Problem::invalid("suspended", "must be 0 or 1")),
                });
            }
            other => {
                return Err(Problem::invalid(
                    other,
                    "is not a parameter of /v1/poll (use `thread`, `since` and `suspended`)",
                ));
            }
        }
    }
    if threads.is_empty() {
        return Err(Problem::invalid("thread", "is required"));
    }
    let threads = threads
        .into_iter()
        .map(|(t, s)| (t, s.unwrap_or(0)))
        .collect();
    Ok((threads, believes))
}

/// What a gap fill found.
#[derive(Clone)]
pub enum Filled {
    /// Events after the position.
    Events(Vec<Event>),
    /// Nothing can cover the position: this reset.
    Reset(Event),
    /// Nothing follows the position yet.
    Hold,
}

/// Most gap fills asked of sync at once. Past it, fills wait their turn: after a restart, every
/// client reconnecting at once would otherwise open a request (and a descriptor) each.
const MAX_FILLS_IN_FLIGHT: usize = 32;

type SharedFill = Shared<BoxFuture<'static, Result<Filled, Problem>>>;
/// A gap: the thread, the client's position, the feed position the answer must be as fresh as.
type Gap = (Arc<str>, Seq, u64);

/// Gap fills from sync, one request per (thread, position, feed position) however many clients
/// need it at once: after a longpoll restart, thousands of clients reconnect from the same few
/// positions, and each distinct one is asked of sync once.
pub struct GapFills {
    hub: Arc<Hub>,
    sync: SyncClient,
    max_catch_up: u64,
    permits: Semaphore,
    in_flight: Mutex<HashMap<Gap, SharedFill>>,
}

impl GapFills {
    /// Fills for `hub` from `sync`; a gap of more than `max_catch_up` events is a reset.
    pub fn new(hub: Arc<Hub>, sync: SyncClient, max_catch_up: u64) -> Arc<Self> {
        Arc::new(GapFills {
            hub,
            sync,
            max_catch_up,
            permits: Semaphore::new(MAX_FILLS_IN_FLIGHT),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The thread's events after `since`, as fresh as feed position `at`, shared with every
    /// other caller asking the same now.
    pub async fn fill(
        self: &Arc<Self>,
        thread: &str,
        since: Seq,
        at: u64,
    ) -> Result<Filled, Problem> {
        let key = (Arc::<str>::from(thread), since, at);
        let shared = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let me = self.clone();
                    let k = key.clone();
                    let f = async move {
                        let r = match me.permits.acquire().await {
                            Ok(_permit) => me.ask_sync(&k.0, k.1, k.2).await,
                            Err(_) => Err(Problem::internal("gap fills stopped")),
                        };
                        me.in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&k);
                        r
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key, f.clone());
                    f
                }
            }
        };
        shared.await
    }

    /// Fills a gap from sync: the thread's events after `since`, as fresh as feed position `at`.
    async fn ask_sync(&self, thread: &str, since: Seq, at: u64) -> Result<Filled, Problem> {
        let m = &self.hub.metrics;
        m.gap_fills.inc();
        let batch = self.hub.limits().batch;
        // A client can be a moment ahead of the sync replica this instance asks (it saw the
        // change through another replica): give that replica a few short chances to catch up
        // before concluding the client is ahead of every record.
        let mut tries = 0;
        let ans = loop {
            let ans = self
                .sync
                .changes(thread, since, batch, at)
                .await
                .map_err(|e| {
                    m.gap_fill_failures.inc();
                    let mut p = e.into_problem();
                    if p.status >= 500 {
                        p = Problem::unavailable(
                            "sync-unavailable",
                            "live updates cannot catch up right now; poll again shortly with the same `since`",
                            std::time::Duration::from_secs(1),
                        );
                    }
                    p
                })?;
            tries += 1;
            if ans.head >= since || tries >= 5 {
                break ans;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let reset = |head| {
            m.resets.inc();
            Ok(Filled::Reset(Event::reset(thread, head)))
        };
        if ans.head < since {
            // The client is ahead of every record: reload.
            self.hub.seed_head(thread, ans.head);
            return reset(ans.head);
        }
        if ans.head - since > self.max_catch_up {
            return reset(ans.head);
        }
        if ans.changes.is_empty() {
            if ans.head == since {
                self.hub.seed_head(thread, ans.head);
            }
            return Ok(Filled::Hold);
        }
        let contiguous = ans
            .changes
            .iter()
            .enumerate()
            .all(|(i, c)| c.seq == since + 1 + i as Seq && &*c.thread == thread);
        if !contiguous {
            tracing::error!(thread, since, "a gap fill came back with holes");
            return reset(ans.head);
        }
        Ok(Filled::Events(
            ans.changes.into_iter().map(Event::from_change).collect(),
        ))
    }
}

/// Fills a gap from sync: the thread's events after `since`, as fresh as feed position `at`.
pub async fn fill(ctx: &Ctx, thread: &str, since: Seq, at: u64) -> Result<Filled, Problem> {
    ctx.fills.fill(thread, since, at).await
}

/// Serves one poll request on `stream`.
pub async fn handle(ctx: &Arc<Ctx>, stream: TcpStream, req: &Request) -> Next {
    let cors = ctx.hub.origins().index(req.origin.as_deref());
    let (threads, believes) = match parse_poll(&req.query) {
        Ok(t) => t,
        Err(p) => return ctx.reply_problem(stream, &p, cors, req.keep_alive).await,
    };
    if !ctx.hub.started() {
        let p = Problem::unavailable(
            "not-ready",
            "live updates are starting; poll again shortly",
            std::time::Duration::from_secs(1),
        );
        return ctx.reply_problem(stream, &p, cors, req.keep_alive).await;
    }
    if ctx.shutdown.is_triggered() {
        return ctx
            .reply(
                stream,
                http::response(
                    204,
                    "No Content",
                    ctx.hub.origins().cors(cors),
                    false,
                    None,
                    &[],
                    b"",
                ),
                false,
            )
            .await;
    }
    if ctx.hub.metrics.held.get() as usize >= ctx.max_held {
        ctx.hub.metrics.rejected.inc();
        let p = Problem::unavailable(
            "too-many-polls",
            "this live-update instance holds as many polls as it may; try again shortly",
            std::time::Duration::from_secs(fastrand::u64(2..=6)),
        );
        return ctx.reply_problem(stream, &p, cors, false).await;
    }
    let slot = ctx
        .hub
        .slot(threads, cors, req.keep_alive, believes, ctx.hold_time());
    run(ctx.clone(), slot, stream).await
}

/// Looks, fills and parks until the poll is answered or parked.
pub async fn run(ctx: Arc<Ctx>, slot: Arc<Slot>, stream: TcpStream) -> Next {
    let cors = ctx.hub.origins().cors(slot.cors);
    let keep_alive = slot.keep_alive;
    let mut stream = stream;
    loop {
        let looks = ctx.hub.register(&slot);
        let at = ctx.hub.pos();
        let mut ready: Vec<Event> = Vec::new();
        let mut fills = Vec::new();
        for ((thread, since), look) in slot.threads().iter().zip(looks) {
            match look {
                Look::Events(e) => ready.extend(e),
                Look::Hold => {}
                Look::Fill => fills.push((thread.clone(), *since)),
            }
        }
        if ready.is_empty() && !fills.is_empty() {
            let results = join_all(
                fills
                    .iter()
                    .map(|(thread, since)| fill(&ctx, thread, *since, at)),
            )
            .await;
            for r in results {
                match r {
                    Ok(Filled::Events(e)) => ready.extend(e),
                    Ok(Filled::Reset(e)) => ready.push(e),
                    Ok(Filled::Hold) => {}
                    Err(p) => {
                        slot.finish();
                        ctx.hub.unregister(&slot);
                        return ctx.reply_problem(stream, &p, slot.cors, keep_alive).await;
                    }
                }
            }
        }
        if !ready.is_empty() {
            if !slot.finish() {
                // Answered meanwhile by a timer or shutdown: cannot happen for an active
                // slot, but never answer twice.
                return Next::Done;
            }
            ctx.hub.unregister(&slot);
            ctx.hub
                .metrics
                .delivered
                .inc_by(ready.iter().filter(|e| !e.reset).count() as u64);
            let body = poll_body(&ready);
            let bytes = http::response(
                200,
                "OK",
                cors,
                keep_alive,
                Some("application/json"),
                &[],
                &body,
            );
            return ctx.reply(stream, bytes, keep_alive).await;
        }
        if ctx.shutdown.is_triggered() || std::time::Instant::now() >= slot.deadline() {
            slot.finish();
            ctx.hub.unregister(&slot);
            let keep = keep_alive && !ctx.shutdown.is_triggered();
            let bytes = http::response(204, "No Content", cors, keep, None, &[], b"");
            return ctx.reply(stream, bytes, keep).await;
        }
        match ctx.hub.park(&slot, stream) {
            Ok(()) => {
                // The page believes otherwise than longpoll knows: the next answer from logic
                // settles it. (This also catches a change that answered every parked poll
                // between the look above and parking.)
                doubt(&ctx, &slot);
                return Next::Done;
            }
            Err(s) => stream = s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_threads_with_their_since() {
        let t = parse_query("thread=%2Fa&since=3&thread=%2Fb&thread=c&since=9&_=123").unwrap();
        let got: Vec<(&str, Seq)> = t.iter().map(|(t, s)| (&**t, *s)).collect();
        assert_eq!(got, [("/a", 3), ("/b", 0), ("c", 9)]);
    }

    #[test]
    fn a_poll_may_say_what_its_page_believes() {
        let (threads, believes) = parse_poll("thread=a&since=3&suspended=1").unwrap();
        assert_eq!(threads.len(), 1);
        assert_eq!(believes, Some(true));
        assert_eq!(parse_poll("suspended=0&thread=a").unwrap().1, Some(false));
        assert_eq!(parse_poll("thread=a").unwrap().1, None);
        for bad in ["yes", "", "2", "true"] {
            let p = parse_poll(&format!("thread=a&suspended={bad}")).unwrap_err();
            assert_eq!(p.field.as_deref(), Some("suspended"), "{bad}");
        }
    }

    #[test]
    fn bad_input_names_the_parameter() {
        for (q, field) in [
            ("", "thread"),
            ("since=3", "since"),
            ("thread=a&since=-1", "since"),
            ("thread=a&since=99999999999999999999", "since"),
            ("thread=a&since=9007199254740992", "since"),
            ("thread=a&since=1&since=2", "since"),
            ("thread=a&thread=a", "thread"),
            ("thread=", "thread"),
            ("thread=a%0Ab", "thread"),
            ("thread=a&after=3", "after"),
        ] {
            let p = parse_query(q).unwrap_err();
            assert_eq!(p.status, 400, "{q}");
            assert_eq!(p.field.as_deref(), Some(field), "{q}");
        }
        let many: String = (0..=MAX_THREADS).map(|i| format!("thread=t{i}&")).collect();
        assert_eq!(
            parse_query(&many).unwrap_err().field.as_deref(),
            Some("thread")
        );
        assert_eq!(parse_seq("since", "9007199254740991").unwrap(), MAX_SEQ);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_query_is_an_answer_or_a_problem_naming_a_parameter(q in "[ -~]{0,300}") {
                match parse_query(&q) {
                    Ok(threads) => {
                        prop_assert!(threads.len() <= MAX_THREADS);
                        for (i, (t, _)) in threads.iter().enumerate() {
                            prop_assert!(io360_common::model::validate_thread(t).is_ok());
                            prop_assert!(threads[..i].iter().all(|(u, _)| u != t));
                        }
                    }
                    Err(p) => {
                        prop_assert_eq!(p.status, 400);
                        prop_assert!(p.field.is_some(), "{:?}", p);
                    }
                }
            }

            #[test]
            fn threads_and_positions_survive_encoding(
                threads in proptest::collection::btree_map("[a-zA-Z0-9/ _.\u{e9}\u{4e16}-]{1,40}", 0u64..=MAX_SEQ, 1..20)
            ) {
                let query: Vec<String> = threads
                    .iter()
                    .map(|(t, s)| {
                        let t: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
                        format!("thread={t}&since={s}")
                    })
                    .collect();
                let parsed = parse_query(&query.join("&")).unwrap();
                let back: Vec<(String, Seq)> =
                    parsed.iter().map(|(t, s)| (t.to_string(), *s)).collect();
                let want: Vec<(String, Seq)> = threads.into_iter().collect();
                prop_assert_eq!(back, want);
            }

            #[test]
            fn positions_past_the_range_are_refused(s in (MAX_SEQ + 1)..u64::MAX) {
                let p = parse_query(&format!("thread=a&since={s}")).unwrap_err();
                prop_assert_eq!(p.field.as_deref(), Some("since"));
            }
        }
    }
}
