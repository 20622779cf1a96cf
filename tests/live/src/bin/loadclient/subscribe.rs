//! The subscribers: held long polls (io360's `/v1/poll`, Nchan's `/sub/`) and event streams
//! (io360's `/v1/events`, Centrifugo's unidirectional SSE), each recording what it got and when.
//!
//! Messages are recognised by the markers the publisher puts in their text: `round-<n>-end`
//! for a fan-out round, `storm-<k>-end` for the k-th event of a reconnect storm. Bodies are
//! searched, not parsed, so the client spends per message on every server what it spends on
//! the cheapest: the measurement is the servers', not the client's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use io360_live_tests::stream::{EventStream, SseMessage};
use tokio::io::AsyncWriteExt;

use crate::Target;
use crate::net::{connect, read_some, read_stamped};

/// What one subscriber has seen.
pub struct Conn {
    /// The last fan-out round whose message it read.
    pub round: AtomicU64,
    /// When it read that message (ns since [`Shared::start`]).
    pub at: AtomicU64,
    /// When that message arrived in its socket (ns since the Unix epoch, the kernel's clock).
    pub arrived: AtomicU64,
    /// Storm events: when each first arrived (ns since [`Shared::start`], plus one; 0: not yet).
    pub got: Box<[AtomicU64]>,
    /// Storm events not yet seen.
    pub missing: AtomicU32,
    /// When the last missing storm event arrived (ns since [`Shared::start`]; 0: not yet).
    pub complete_at: AtomicU64,
    /// Times the server told it to reload (io360's reset, Centrifugo's `recovered: false`).
    pub reloads: AtomicU32,
    /// When it was last told to reload (ns since [`Shared::start`]).
    pub reloaded_at: AtomicU64,
    /// Storm events that arrived more than once.
    pub dups: AtomicU32,
    /// Times it connected again after its connection was cut.
    pub reconnects: AtomicU32,
}

/// Everything the subscribers share.
pub struct Shared {
    /// The clock of every `at` and `complete_at`.
    pub start: Instant,
    /// One per subscriber.
    pub conns: Vec<Conn>,
    /// Whether a cut connection is opened again (the storm) or ends the subscriber.
    pub reconnect: AtomicBool,
}

impl Shared {
    /// `n` subscribers, each following `storm_events` storm events.
    pub fn new(n: usize, storm_events: usize) -> Self {
        Shared {
            start: Instant::now(),
            conns: (0..n)
                .map(|_| Conn {
                    round: AtomicU64::new(0),
                    at: AtomicU64::new(0),
                    arrived: AtomicU64::new(0),
                    got: (0..storm_events).map(|_| AtomicU64::new(0)).collect(),
                    missing: AtomicU32::new(storm_events as u32),
                    complete_at: AtomicU64::new(0),
                    reloads: AtomicU32::new(0),
                    reloaded_at: AtomicU64::new(0),
                    dups: AtomicU32::new(0),
                    reconnects: AtomicU32::new(0),
                })
                .collect(),
            reconnect: AtomicBool::new(false),
        }
    }

    /// Records that subscriber `i` was told to reload at `now`.
    fn reload(&self, i: usize, now: u64) {
        self.conns[i].reloads.fetch_add(1, Ordering::SeqCst);
        self.conns[i].reloaded_at.store(now, Ordering::SeqCst);
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records a message with this body that subscriber `i` read at `now`, arrived at `arrived`.
    fn saw(&self, i: usize, body: &[u8], now: u64, arrived: u64) {
        let c = &self.conns[i];
        if let Some(r) = number_after(body, b"round-")
            && r > c.round.load(Ordering::SeqCst)
        {
            c.at.store(now, Ordering::SeqCst);
            c.arrived.store(arrived, Ordering::SeqCst);
            c.round.store(r, Ordering::SeqCst);
        }
        if let Some(k) = number_after(body, b"storm-")
            && let Some(slot) = c.got.get(k as usize)
        {
            let first = slot
                .compare_exchange(0, now + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if first {
                if c.missing.fetch_sub(1, Ordering::SeqCst) == 1 {
                    c.complete_at.store(now, Ordering::SeqCst);
                }
            } else {
                c.dups.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The number right after the first `prefix` in `body`.
fn number_after(body: &[u8], prefix: &[u8]) -> Option<u64> {
    let i = find(body, prefix)? + prefix.len();
    digits_at(body, i)
}

fn digits_at(body: &[u8], at: usize) -> Option<u64> {
    let rest = body.get(at..)?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// The sequence number of the last event in a poll answer: the first `"seq":` after the last
/// `{"thread":`, which only ever opens an event (a comment object opens with its `id`).
pub fn last_seq(body: &[u8]) -> Option<u64> {
    let start = find_last(body, b"{\"thread\":")?;
    let key = b"\"seq\":";
    let at = start + find(&body[start..], key)? + key.len();
    digits_at(body, at)
}

/// Where a subscriber is in its channel, to resume from after a cut.
#[derive(Debug, Default, Clone)]
pub struct Position {
    /// io360: the last sequence number seen.
    pub seq: u64,
    /// Nchan: the validators of the last message.
    pub last_modified: Option<String>,
    /// Nchan: the validators of the last message.
    pub etag: Option<String>,
    /// Centrifugo: the stream's epoch and last offset.
    pub epoch: Option<String>,
    /// Centrifugo: the last offset seen.
    pub offset: u64,
}

/// How a subscriber reaches its server.
pub struct Dial {
    /// Which server and transport.
    pub target: Target,
    /// The server's address.
    pub addr: SocketAddr,
    /// The loopback address to connect from.
    pub source: IpAddr,
    /// The channel (thread) name, without a leading slash.
    pub channel: String,
    /// Centrifugo's connection token.
    pub token: String,
}

impl Dial {
    /// The Centrifugo channel: the benchmark's namespace keeps history.
    pub fn centrifugo_channel(&self) -> String {
        format!("bench:{}", self.channel)
    }

    fn request(&self, pos: &Position) -> String {
        let ch = &self.channel;
        match self.target {
            Target::Io360 => format!(
                "GET /v1/poll?thread=%2F{ch}&since={} HTTP/1.1\r\nHost: bench\r\n\r\n",
                pos.seq
            ),
            Target::Io360Sse => format!(
                "GET /v1/events?thread=%2F{ch}&since={} HTTP/1.1\r\nHost: bench\r\n\r\n",
                pos.seq
            ),
            Target::Nchan => {
                let mut r = format!("GET /sub/{ch} HTTP/1.1\r\nHost: bench\r\n");
                if let Some(v) = &pos.last_modified {
                    r.push_str(&format!("If-Modified-Since: {v}\r\n"));
                }
                if let Some(v) = &pos.etag {
                    r.push_str(&format!("If-None-Match: {v}\r\n"));
                }
                r.push_str("\r\n");
                r
            }
            Target::Centrifugo => {
                let mut connect = serde_json::json!({ "token": self.token });
                if let Some(epoch) = &pos.epoch {
                    connect["subs"] = serde_json::json!({
                        self.centrifugo_channel(): { "recover": true, "epoch": epoch, "offset": pos.offset }
                    });
                }
                format!(
                    "GET /connection/uni_sse?cf_connect={} HTTP/1.1\r\nHost: bench\r\n\r\n",
                    io360_live_tests::url_encode(&connect.to_string())
                )
            }
        }
    }
}

/// Subscriber `i`: holds its poll or stream, and when the storm cuts it, connects again after
/// a jittered backoff (the same for every server) and resumes from its position.
pub async fn subscribe(shared: Arc<Shared>, i: usize, dial: Dial, mut pos: Position) -> Result<()> {
    let mut attempt = 0u32;
    loop {
        let r = match dial.target {
            Target::Io360 | Target::Nchan => hold_polls(&shared, i, &dial, &mut pos).await,
            Target::Io360Sse | Target::Centrifugo => {
                hold_stream(&shared, i, &dial, &mut pos, &mut attempt).await
            }
        };
        if !shared.reconnect.load(Ordering::SeqCst) {
            return r;
        }
        shared.conns[i].reconnects.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(backoff(i, attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The wait before the `attempt`-th reconnection of subscriber `i`: a random share of a
/// second, doubling per failed attempt up to 8 s, as browser clients back off.
fn backoff(i: usize, attempt: u32) -> Duration {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt) << 32;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let cap = 1000u64 << attempt.min(3);
    Duration::from_millis(x % cap)
}

async fn hold_polls(shared: &Shared, i: usize, dial: &Dial, pos: &mut Position) -> Result<()> {
    let mut s = connect(dial.source, dial.addr).await?;
    let mut buf = Vec::with_capacity(2048);
    loop {
        s.write_all(dial.request(pos).as_bytes()).await?;
        let (a, arrived) = read_stamped(&s, &mut buf).await?;
        if a.status == 200 {
            shared.saw(i, &a.body, shared.now(), arrived);
            match dial.target {
                Target::Io360 => {
                    if find(&a.body, b"\"kind\":\"reset\"").is_some() {
                        shared.reload(i, shared.now());
                    }
                    pos.seq = last_seq(&a.body).unwrap_or(pos.seq);
                }
                _ => {
                    pos.last_modified = a
                        .header("last-modified")
                        .map(str::to_owned)
                        .or(pos.last_modified.take());
                    pos.etag = a.header("etag").map(str::to_owned).or(pos.etag.take());
                }
            }
        } else if a.status >= 500 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn hold_stream(
    shared: &Shared,
    i: usize,
    dial: &Dial,
    pos: &mut Position,
    attempt: &mut u32,
) -> Result<()> {
    let mut s = connect(dial.source, dial.addr).await?;
    let mut req = dial.request(pos);
    if dial.target == Target::Io360Sse && pos.seq > 0 {
        // What a browser's EventSource sends when it reconnects.
        req.insert_str(req.len() - 2, &format!("Last-Event-ID: {}\r\n", pos.seq));
    }
    s.write_all(req.as_bytes()).await?;
    let mut stream = EventStream::new();
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (n, stamp) = read_some(&s, &mut buf).await?;
        if n == 0 {
            bail!("the stream closed");
        }
        stream.push(&buf)?;
        if stream.status() != 0 && stream.status() != 200 {
            bail!("the stream was answered {}", stream.status());
        }
        *attempt = 0;
        let now = shared.now();
        while let Some(m) = stream.next_message() {
            on_message(shared, i, dial, pos, &m, now, stamp.unwrap_or(0));
        }
    }
}

fn on_message(
    shared: &Shared,
    i: usize,
    dial: &Dial,
    pos: &mut Position,
    m: &SseMessage,
    now: u64,
    arrived: u64,
) {
    let data = m.data.as_bytes();
    match dial.target {
        Target::Io360Sse => {
            if let Some(seq) = m.id.as_deref().and_then(|id| id.parse().ok()) {
                pos.seq = seq;
            }
            if find(data, b"\"kind\":\"reset\"").is_some() {
                shared.reload(i, now);
            } else {
                shared.saw(i, data, now, arrived);
            }
        }
        Target::Centrifugo if data.starts_with(b"{\"connect\"") => {
            // The reply to a connection: the subscription's epoch and, on a reconnection,
            // whether the missed publications could be recovered (and those publications).
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
                return;
            };
            let sub = &v["connect"]["subs"][dial.centrifugo_channel()];
            if sub["was_recovering"].as_bool() == Some(true) && sub["recovered"] != true {
                shared.reload(i, now);
            }
            if let Some(e) = sub["epoch"].as_str() {
                pos.epoch = Some(e.to_owned());
            }
            for p in sub["publications"].as_array().into_iter().flatten() {
                shared.saw(i, p["data"].to_string().as_bytes(), now, arrived);
                pos.offset = pos.offset.max(p["offset"].as_u64().unwrap_or(0));
            }
            if sub["recovered"] != true {
                pos.offset = pos.offset.max(sub["offset"].as_u64().unwrap_or(0));
            }
        }
        Target::Centrifugo => {
            if let Some(at) = find_last(data, b"\"offset\":")
                && let Some(o) = digits_at(data, at + 9)
            {
                pos.offset = pos.offset.max(o);
            }
            shared.saw(i, data, now, arrived);
        }
        Target::Io360 | Target::Nchan => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{Shared, backoff, last_seq, number_after};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn the_last_events_seq_is_read_without_parsing() {
        let body = br#"{"events":[{"thread":"/b","seq":7,"kind":"created","comment":{"id":3,"thread":"/b","seq":7}},{"thread":"/b","seq":8,"kind":"deleted","comment":{"id":3,"thread":"/b","seq":99}}]}"#;
        assert_eq!(last_seq(body), Some(8));
        assert_eq!(last_seq(br#"{"events":[]}"#), None);
    }

    #[test]
    fn storm_events_are_counted_once_and_duplicates_apart() {
        let s = Shared::new(1, 3);
        for k in [0, 1, 1, 2] {
            s.saw(0, format!("<p>storm-{k}-end</p>").as_bytes(), 10 + k, 0);
        }
        let c = &s.conns[0];
        assert_eq!(c.missing.load(Ordering::SeqCst), 0);
        assert_eq!(c.dups.load(Ordering::SeqCst), 1);
        assert_eq!(c.complete_at.load(Ordering::SeqCst), 12);
        assert_eq!(number_after(b"round-17-end", b"round-"), Some(17));
    }

    #[test]
    fn reconnections_spread_out_and_back_off() {
        let first: Vec<Duration> = (0..100).map(|i| backoff(i, 0)).collect();
        assert!(first.iter().all(|d| *d < Duration::from_secs(1)));
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(distinct.len() > 90, "jitter spreads subscribers");
        assert!((0..100).all(|i| backoff(i, 10) < Duration::from_secs(8)));
    }
}
