//! Shipping events from a tier to the logger without ever slowing a request.
//!
//! A request handler calls [`Shipper::emit`], which writes the event out as JSON (while its fields
//! are still in the handler's cache, and so that the buffer holds one allocation per event) and
//! puts it in a bounded buffer with `try_send`, returning at once; when the buffer is full the
//! event is dropped and counted (`io360_logger_events_dropped_total`). One background task takes
//! whatever has accumulated, sends it as one batch, and on failure keeps that batch and retries
//! with exponential backoff while new events queue behind it (and are dropped once the buffer
//! fills). When the logger comes back the held batch goes first and shipping resumes. A batch the
//! logger finds too large (413: over its byte limit, which long texts can reach) is sent again in
//! halves, not dropped. Rate-limit and spam rejections are counted per address and reason and
//! shipped as one event per flush interval, so a flood of refused requests costs the logger a
//! handful of events. Without `IO360_LOGGER_URL` the shipper does nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use io360_common::client::{ClientError, TierClient};
use io360_common::retry::Backoff;
use io360_common::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::api::{Accepted, EraseRequest, Erased, Export, MAX_BATCH};
use crate::db::Page;
use crate::event::{Event, Kind, truncate};

/// How a tier ships its events (flags and `IO360_LOGGER_*` variables).
#[derive(Debug, Clone, clap::Args)]
pub struct ShipperConfig {
    /// Base URL of the logger tier; unset: events are not shipped.
    #[arg(long, env = "IO360_LOGGER_URL")]
    pub logger_url: Option<String>,

    /// Events held while the logger is slow or down; beyond this they are dropped and counted.
    #[arg(long, env = "IO360_LOGGER_BUFFER", default_value_t = 10_000)]
    pub logger_buffer: usize,

    /// Most events in one batch (at most the logger's limit, 1,000). The logger's cost per
    /// event falls with the batch size: each batch is a request and an fsync.
    #[arg(long, env = "IO360_LOGGER_BATCH", default_value_t = 1000)]
    pub logger_batch: usize,

    /// How often aggregated rejections are shipped, in milliseconds.
    #[arg(long, env = "IO360_LOGGER_FLUSH_MS", default_value_t = 1000)]
    pub logger_flush_ms: u64,

    /// How long the first event of a batch waits for company before the batch is sent, in
    /// milliseconds: under load this turns one logger request (and fsync) per event into one
    /// per batch, which is what keeps shipping cheap for the comment path.
    #[arg(long, env = "IO360_LOGGER_LINGER_MS", default_value_t = 100)]
    pub logger_linger_ms: u64,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        ShipperConfig {
            logger_url: None,
            logger_buffer: 10_000,
            logger_batch: 1000,
            logger_flush_ms: 1000,
            logger_linger_ms: 100,
        }
    }
}

impl ShipperConfig {
    /// Checks the configuration and says what is wrong in a sentence.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(u) = &self.logger_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!(
                "IO360_LOGGER_URL must be an http(s) URL, not `{u}`"
            ));
        }
        if self.logger_buffer == 0 || self.logger_batch == 0 {
            return Err("IO360_LOGGER_BUFFER and IO360_LOGGER_BATCH must be at least 1".into());
        }
        if self.logger_batch > MAX_BATCH {
            return Err(format!(
                "IO360_LOGGER_BATCH is {}, but the logger accepts at most {MAX_BATCH} events in one batch",
                self.logger_batch
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Metrics {
    shipped: Counter,
    dropped: Counter,
    failures: Counter,
    buffered: Gauge,
}

type RejectionKey = (Kind, String, String);

struct Inner {
    tier: &'static str,
    tx: mpsc::Sender<Box<RawValue>>,
    rx: Mutex<Option<mpsc::Receiver<Box<RawValue>>>>,
    rejections: Mutex<HashMap<RejectionKey, u64>>,
    client: TierClient,
    batch: usize,
    flush: Duration,
    linger: Duration,
    stop: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A tier's connection to the logger. Cheap to clone; a no-op when no logger is configured.
#[derive(Clone)]
pub struct Shipper {
    inner: Option<Arc<Inner>>,
    metrics: Metrics,
}

impl Shipper {
    /// A shipper for `tier`, with its metrics registered in `telemetry`. With a logger
    /// configured, the tier's credential is taken from `auth`; without one, the error names the
    /// setting that is missing.
    pub fn new(
        tier: &'static str,
        config: &ShipperConfig,
        auth: &io360_common::auth::TierAuthConfig,
        telemetry: &Telemetry,
    ) -> Result<Shipper, String> {
        let credential = match config.logger_url {
            Some(_) => Some(auth.credential(tier)?),
            None => None,
        };
        let metrics = Metrics::default();
        telemetry.register(
            "logger_events_shipped",
            "Audit events delivered to the logger",
            metrics.shipped.clone(),
        );
        telemetry.register(
            "logger_events_dropped",
            "Audit events dropped because the buffer was full or the logger refused them",
            metrics.dropped.clone(),
        );
        telemetry.register(
            "logger_ship_failures",
            "Failed attempts to deliver a batch to the logger",
            metrics.failures.clone(),
        );
        telemetry.register(
            "logger_events_buffered",
            "Audit events waiting to be shipped",
            metrics.buffered.clone(),
        );
        let inner = config
            .logger_url
            .as_deref()
            .zip(credential)
            .map(|(url, credential)| {
                let (tx, rx) = mpsc::channel(config.logger_buffer.max(1));
                Arc::new(Inner {
                    tier,
                    tx,
                    rx: Mutex::new(Some(rx)),
                    rejections: Mutex::default(),
                    client: TierClient::new("logger", url, credential),
                    batch: config.logger_batch.max(1),
                    flush: Duration::from_millis(config.logger_flush_ms.max(10)),
                    linger: Duration::from_millis(config.logger_linger_ms),
                    stop: Notify::new(),
                    task: Mutex::new(None),
                })
            });
        Ok(Shipper { inner, metrics })
    }

    /// A shipper that ships nothing.
    pub fn disabled() -> Shipper {
        Shipper {
            inner: None,
            metrics: Metrics::default(),
        }
    }

    /// Whether a logger is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The tier name events are stamped with.
    pub fn tier(&self) -> &'static str {
        self.inner.as_ref().map(|i| i.tier).unwrap_or("unknown")
    }

    /// A client for the logger's read API, when one is configured.
    pub fn client(&self) -> Option<LoggerClient> {
        self.inner.as_ref().map(|i| LoggerClient {
            inner: i.client.clone(),
        })
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.metrics.dropped.get()
    }

    /// Starts the background task that ships batches. Call once.
    pub fn start(&self) {
        let Some(inner) = &self.inner else { return };
        let Some(rx) = inner.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let task = tokio::spawn(run(inner.clone(), rx, self.metrics.clone()));
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task);
        }
    }

    /// Ships what is buffered (giving up after `deadline`) and stops the background task.
    pub async fn stop(&self, deadline: Duration) {
        let Some(inner) = &self.inner else { return };
        inner.stop.notify_one();
        let task = inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(deadline, task).await;
        }
    }

    /// Runs a tier: starts shipping, records `tier.started`, awaits `served` (the tier serving
    /// until its shutdown), records `tier.stopped`, and ships what is left for up to 2 s.
    pub async fn around<T>(&self, served: impl Future<Output = T>) -> T {
        self.start();
        self.emit(Event::now(Kind::TierStarted, self.tier(), "system"));
        let out = served.await;
        self.emit(Event::now(Kind::TierStopped, self.tier(), "system"));
        self.stop(Duration::from_secs(2)).await;
        out
    }

    /// Queues an event; never waits. When the buffer is full the event is dropped and counted.
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        // A full buffer (the logger away for a while) drops the event before it is encoded.
        let Some(json) = (inner.tx.capacity() > 0).then(|| encode(&event)).flatten() else {
            self.metrics.dropped.inc();
            return;
        };
        match inner.tx.try_send(json) {
            Ok(()) => {
                self.metrics.buffered.inc();
            }
            Err(_) => {
                self.metrics.dropped.inc();
            }
        }
    }

    /// Counts a refused request (`ratelimit.rejected` or `spam.rejected`) from `ip` for
    /// `reason`; shipped as one aggregated event per address and reason per flush interval.
    pub fn reject(&self, kind: Kind, ip: IpAddr, reason: &str) {
        let Some(inner) = &self.inner else { return };
        if let Ok(mut r) = inner.rejections.lock() {
            // Bounded like the buffer: a flood from many addresses must not grow memory.
            let key = (kind, truncate(ip), reason.to_owned());
            if r.len() < 10_000 || r.contains_key(&key) {
                *r.entry(key).or_insert(0) += 1;
            } else {
                self.metrics.dropped.inc();
            }
        }
    }
}

/// An event as it is shipped. (Encoding an [`Event`] cannot fail: it has only strings, numbers
/// and a kind; a failure would be logged and the event not shipped.)
fn encode(event: &Event) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(event)
        .inspect_err(
            |e| tracing::error!(error = %e, kind = %event.kind, "cannot encode an audit event"),
        )
        .ok()
}

fn take_rejections(inner: &Inner) -> Vec<Box<RawValue>> {
    let drained: Vec<(RejectionKey, u64)> = match inner.rejections.lock() {
        Ok(mut r) => r.drain().collect(),
        Err(_) => Vec::new(),
    };
    drained
        .into_iter()
        .filter_map(|((kind, address, reason), count)| {
            let mut e = Event::now(kind, inner.tier, "system").reason(reason);
            e.address = Some(address);
            e.count = Some(count);
            encode(&e)
        })
        .collect()
}

enum Sent {
    Ok,
    /// Over the logger's limits: worth sending again in smaller batches.
    TooLarge,
    Refused,
    Unavailable,
}

/// Writes a [`crate::api::Batch`] of encoded events into `buf` and takes it out as a body.
/// `buf` keeps its memory: once the logger has answered and the body is dropped, the next batch
/// is written into the same memory. (A fresh buffer of a batch's size, a few hundred
/// kilobytes, would be fresh pages from the kernel every time.)
fn batch_body(buf: &mut BytesMut, events: &[Box<RawValue>]) -> Bytes {
    const HEAD: &[u8] = b"{\"events\":[";
    const TAIL: &[u8] = b"]}";
    let len: usize = events.iter().map(|e| e.get().len() + 1).sum();
    buf.clear();
    buf.reserve(HEAD.len() + len + TAIL.len());
    buf.put_slice(HEAD);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(e.get().as_bytes());
    }
    buf.put_slice(TAIL);
    buf.split().freeze()
}

async fn send(inner: &Inner, buf: &mut BytesMut, events: &[Box<RawValue>]) -> Sent {
    let body = batch_body(buf, events);
    match inner
        .client
        .post_encoded::<Accepted>("/logger/v1/events", body)
        .await
    {
        Ok(_) => Sent::Ok,
        Err(ClientError::Problem(p)) if p.status == 413 && events.len() > 1 => Sent::TooLarge,
        Err(ClientError::Problem(p)) if p.status < 500 && p.status != 429 => {
            tracing::warn!(problem = %p, events = events.len(), "the logger refused a batch; dropping it");
            Sent::Refused
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot ship audit events");
            Sent::Unavailable
        }
    }
}

async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<Box<RawValue>>, m: Metrics) {
    let mut pending: Vec<Box<RawValue>> = Vec::new();
    let mut buf = BytesMut::new();
    let mut tick = tokio::time::interval(inner.flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    // The batch size for the next send: halved while the logger finds batches too large.
    let mut limit = inner.batch;
    let mut stopping = false;
    loop {
        if pending.is_empty() && !stopping {
            tokio::select! {
                n = rx.recv_many(&mut pending, inner.batch) => {
                    if n == 0 { stopping = true; }
                }
                _ = tick.tick() => pending.extend(take_rejections(&inner)),
                _ = inner.stop.notified() => stopping = true,
            }
            if !stopping && pending.len() < inner.batch && !inner.linger.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(inner.linger) => {}
                    _ = inner.stop.notified() => stopping = true,
                }
            }
        }
        while pending.len() < inner.batch {
            match rx.try_recv() {
                Ok(e) => pending.push(e),
                Err(_) => break,
            }
        }
        if stopping {
            pending.extend(take_rejections(&inner));
        }
        m.buffered.set(rx.len() as i64);
        if pending.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let n = pending.len().min(limit);
        match send(&inner, &mut buf, &pending[..n]).await {
            Sent::Ok => {
                m.shipped.inc_by(n as u64);
                pending.drain(..n);
                backoff.reset();
                limit = inner.batch;
            }
            Sent::TooLarge => limit = n / 2,
            Sent::Refused => {
                m.dropped.inc_by(n as u64);
                pending.drain(..n);
            }
            Sent::Unavailable => {
                m.failures.inc();
                if stopping {
                    // Shutting down and the logger is away: what is left is lost, and counted.
                    m.dropped.inc_by((pending.len() + rx.len()) as u64);
                    return;
                }
                if !backoff.wait(inner.stop.notified()).await {
                    stopping = true;
                }
            }
        }
    }
}

/// A client for the logger's read API, used by logic's admin endpoints.
#[derive(Debug, Clone)]
pub struct LoggerClient {
    inner: TierClient,
}

impl LoggerClient {
    /// A client for the logger at `base`, presenting the calling tier's `credential`.
    pub fn new(base: &str, credential: io360_common::auth::Credential) -> Self {
        LoggerClient {
            inner: TierClient::new("logger", base, credential),
        }
    }

    /// Events matching `query` (a query string in the form of
    /// [`EventsQuery`](crate::api::EventsQuery)), newest first.
    pub async fn events(&self, query: &str) -> Result<Page, ClientError> {
        self.inner.get(&format!("/logger/v1/events?{query}")).await
    }

    /// Removes an author's personal data from every event.
    pub async fn erase(&self, author_key: &str) -> Result<Erased, ClientError> {
        self.inner
            .post(
                "/logger/v1/erase",
                &EraseRequest {
                    author_key: author_key.to_owned(),
                },
            )
            .await
    }

    /// Every event about an author.
    pub async fn export(&self, author_key: &str) -> Result<Export, ClientError> {
        let q: String = form_urlencoded::byte_serialize(author_key.as_bytes()).collect();
        self.inner
            .get(&format!("/logger/v1/export?author={q}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Batch;

    #[test]
    fn a_batch_body_is_the_events_as_sent_and_its_memory_serves_the_next_batch() {
        let events = [
            Event::now(Kind::CommentPosted, "logic", "Ann \"the\" reader")
                .thread("/posts/hello/")
                .comment(7),
            Event::now(Kind::TierStarted, "logic", "system"),
        ];
        let encoded: Vec<Box<RawValue>> = events.iter().filter_map(encode).collect();
        let mut buf = BytesMut::new();
        let body = batch_body(&mut buf, &encoded);
        let batch: Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.events, events);
        let memory = body.as_ptr();
        drop(body);
        let body = batch_body(&mut buf, &encoded[1..]);
        let batch: Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.events, events[1..]);
        assert_eq!(
            body.as_ptr(),
            memory,
            "the second batch was written into new memory"
        );
    }
}
