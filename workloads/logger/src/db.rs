//! The event log on disk: fjall keyspaces, one writer thread, retention, reads on the blocking
//! pool.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `events` | (time in Unix nanoseconds, xxh3 hash of the JSON) | the event, an [`EventRecord`] |
//! | `meta` | name | the [format version](crate::format) |
//!
//! Keys are big-endian so fjall's order is time order; "newest first" is a reverse range
//! scan. There is no index by author: erase and export requests, which are rare, scan the log
//! (bounded by retention) for the author's key, and every event stored does not pay for
//! keeping an index sorted and compacted. (Logs of format 1 had one, in an `authors`
//! keyspace; the migration to format 2 deletes it.)
//!
//! What is stored are the records of [`crate::record`], never the wire [`Event`]; this layer
//! knows nothing of HTTP and answers [`LogError`]s, which the HTTP layer maps to problems.
//!
//! The writer thread takes every queued batch, commits them, and calls
//! `persist(SyncAll)` once before answering any of them, like the store's group commit. The
//! same thread applies retention (oldest events first, by age and by total size) and erasure,
//! so the size it tracks is exact without locks.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use io360_common::format::FormatError;
use io360_common::telemetry::Telemetry;
use io360_common::writer::{Refused, WriterThread};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{broadcast, oneshot};

use crate::error::LogError;
use crate::event::{Event, Kind};
use crate::record::{EventRecord, decode as decode_record, encode};

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory.
    #[error(
        "the data directory {0} is in use by another io360 logger process; stop it, or give this one its own --data-dir"
    )]
    Locked(PathBuf),
    /// The directory could not be created, locked or read.
    #[error("cannot use the data directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// fjall refused to open it.
    #[error("cannot open the event log in {dir}: {source}")]
    Fjall {
        /// The directory.
        dir: PathBuf,
        /// fjall's error.
        source: fjall::Error,
    },
    /// A newer logger wrote the directory; this one cannot know what its records mean.
    #[error(
        "the data directory {dir} holds events in format {found}, written by a newer io360 logger; this version reads formats up to {supported}, so it left the directory untouched: run the newer version on it"
    )]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// The format found.
        found: u64,
        /// The newest format this version reads.
        supported: u64,
    },
    /// The directory's format version stamp is not one.
    #[error(
        "the data directory {dir} has an unreadable format version stamp ({stamp:?}); it was not written by an io360 logger, or was damaged"
    )]
    UnreadableFormat {
        /// The directory.
        dir: PathBuf,
        /// The stamp's bytes.
        stamp: Vec<u8>,
    },
}

/// How long and how much the log keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// When the stored events exceed this many bytes, the oldest are deleted.
    pub max_bytes: u64,
}

/// What a query asks for. Every filter is optional; results are newest first.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events at or after this time (Unix nanoseconds).
    pub since: Option<u64>,
    /// Only events before this time (Unix nanoseconds).
    pub until: Option<u64>,
    /// Only events strictly older than this cursor (an event `id`).
    pub before: Option<[u8; 16]>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<Kind>,
    /// Only this thread.
    pub thread: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only events concerning this author key.
    pub author_key: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self
                .thread
                .as_ref()
                .is_none_or(|t| e.thread.as_ref() == Some(t))
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self
                .author_key
                .as_ref()
                .is_none_or(|k| e.author_key.as_ref() == Some(k))
    }
}

/// A page of events, newest first, with the cursor for the next page when there may be more.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Page {
    /// The events.
    pub events: Vec<Event>,
    /// Pass as `before` to get the next (older) page; absent when this is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Jobs that may wait for the writer. Requests in flight are bounded first (each holds at most
/// one job), so this is reached only when the disk falls far behind; then a batch is refused
/// with 503 and its shipper retries it.
const WRITE_QUEUE: usize = 4096;

/// The size at which a keyspace's memtable is flushed to disk.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// Most events one query examines before it answers with what it found and a cursor.
const SCAN_LIMIT: usize = 200_000;

struct Tables {
    db: Database,
    events: Keyspace,
}

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

enum Job {
    Append(Vec<(u64, Event)>, Reply<usize>),
    /// An author's key and the keys of the events found to concern them.
    Erase(String, Vec<Vec<u8>>, Reply<u64>),
    Sweep(Reply<u64>),
}

#[derive(Clone)]
struct Metrics {
    ingested: Counter,
    expired: Counter,
    stored: Gauge,
    bytes: Gauge,
    fsync_seconds: Histogram,
}

/// The event log. Cheap to share behind an `Arc`.
pub struct EventLog {
    tables: Arc<Tables>,
    writer: WriterThread<Job>,
    tail: broadcast::Sender<Arc<Event>>,
    metrics: Metrics,
    _lock: File,
}

/// The 16-byte key of an event: its time, then a hash of its content (`0` and `u64::MAX`
/// bound ranges).
fn event_key(nanos: u64, hash: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&nanos.to_be_bytes());
    k[8..].copy_from_slice(&hash.to_be_bytes());
    k
}

fn key_nanos(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_be_bytes(b)
}

/// An event's public id: its key in hex.
pub fn key_id(k: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(k.len() * 2);
    for b in k {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parses an event id back into its key.
pub fn parse_id(id: &str) -> Option<[u8; 16]> {
    if id.len() != 32 || !id.is_ascii() {
        return None;
    }
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&id[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(k)
}

/// Every stored event concerning the author with this key, oldest first, with its key. The
/// scan only decodes records that hold the key as a JSON string somewhere, then checks the
/// field itself.
fn author_scan(events: &Keyspace, author_key: &str) -> Result<Vec<(Vec<u8>, Event)>, LogError> {
    let quoted = encode(&author_key);
    let finder = memchr::memmem::Finder::new(&quoted);
    let mut out = Vec::new();
    for kv in events.iter() {
        let (k, v) = kv.into_inner()?;
        if finder.find(&v).is_none() {
            continue;
        }
        let e = decode(&k, &v)?;
        if e.author_key.as_deref() == Some(author_key) {
            out.push((k.to_vec(), e));
        }
    }
    Ok(out)
}

/// A stored record with its id, as queries answer it.
fn decode(key: &[u8], v: &[u8]) -> Result<Event, LogError> {
    Ok(decode_record::<EventRecord>(v)?.into_event(Some(key_id(key))))
}

impl EventLog {
    /// Opens (creating if needed) the log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<EventLog, OpenError> {
        let dir_err = |source| OpenError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let lock = File::create(dir.join("io360-logger.lock")).map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let fj = |source| OpenError::Fjall {
            dir: dir.to_owned(),
            source,
        };
        let db = Database::builder(dir.join("fjall"))
            .manual_journal_persist(true)
            .open()
            .map_err(fj)?;
        // Small memtables: the log is written in time order and read rarely, so flushing
        // often costs little, and the memory of a flushed memtable is reused instead of the
        // process growing by fresh pages (which a steady stream of events would otherwise
        // touch at every write).
        //
        // Indexes and filters unpinned and partitioned, under the block cache: the log's keys
        // only grow, so compaction moves each flushed table down unchanged, and fjall would
        // keep the index and filter it pinned at the first level for as long as the table
        // lives (the store's keyspaces are made the same way, for the same reason).
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .index_block_pinning_policy(PinningPolicy::all(false))
                .filter_block_pinning_policy(PinningPolicy::all(false))
                .index_block_partitioning_policy(PartitioningPolicy::all(true))
                .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        };
        let events = db.keyspace("events", options).map_err(fj)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(fj)?;
        let format = io360_common::format::upgrade(
            &crate::format::Dir {
                db: db.clone(),
                meta,
                events: events.clone(),
            },
            crate::format::MIGRATIONS,
        )
        .map_err(|e| match e {
            FormatError::Newer(found) => OpenError::NewerFormat {
                dir: dir.to_owned(),
                found,
                supported: crate::format::CURRENT,
            },
            FormatError::Unreadable(stamp) => OpenError::UnreadableFormat {
                dir: dir.to_owned(),
                stamp,
            },
            FormatError::Storage(source) => fj(source),
        })?;
        if let Some(from) = format.filter(|v| *v != crate::format::CURRENT) {
            tracing::info!(from, to = crate::format::CURRENT, "event log upgraded");
        }
        // The size and the newest key come from one pass over the log at start.
        let (mut count, mut bytes, mut newest) = (0u64, 0u64, [0u8; 16]);
        for kv in events.iter() {
            let (k, v) = kv.into_inner().map_err(fj)?;
            count += 1;
            bytes += (k.len() + v.len()) as u64;
            newest.copy_from_slice(&k);
        }
        let tables = Arc::new(Tables { db, events });
        let metrics = Metrics {
            ingested: Counter::default(),
            expired: Counter::default(),
            stored: Gauge::default(),
            bytes: Gauge::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
        };
        metrics.stored.set(count as i64);
        metrics.bytes.set(bytes as i64);
        let (tail, _) = broadcast::channel(4096);
        let mut writer = Writer {
            t: tables.clone(),
            count,
            bytes,
            newest,
            retention,
            tail: tail.clone(),
            metrics: metrics.clone(),
        };
        let writer =
            WriterThread::spawn("io360-logger-writer", WRITE_QUEUE, move |rx| writer.run(rx))
                .map_err(dir_err)?;
        tracing::info!(dir = %dir.display(), events = count, bytes, "event log opened");
        Ok(EventLog {
            tables,
            writer,
            tail,
            metrics,
            _lock: lock,
        })
    }

    /// Adds the log's metrics to a tier's registry.
    pub fn register_metrics(&self, t: &Telemetry) {
        let m = &self.metrics;
        t.register(
            "logger_events_ingested",
            "Events stored durably",
            m.ingested.clone(),
        );
        t.register(
            "logger_events_expired",
            "Events deleted by retention (age or size)",
            m.expired.clone(),
        );
        t.register("logger_events_stored", "Events kept now", m.stored.clone());
        t.register(
            "logger_stored_bytes",
            "Bytes of events kept now",
            m.bytes.clone(),
        );
        t.register(
            "logger_fsync_seconds",
            "Time spent in one group fsync",
            m.fsync_seconds.clone(),
        );
    }

    /// Follows events as they become durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tail.subscribe()
    }

    /// Stops the writer after it has finished what is queued.
    pub fn close(&self) {
        self.writer.close();
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, LogError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .submit(make(tx))
            .map_err(|refused| match refused {
                Refused::Full => LogError::Busy,
                Refused::Stopped => LogError::Stopping,
            })?;
        rx.await
            .map_err(|_| LogError::Internal("the event log writer stopped".into()))?
    }

    /// Stores already-validated events (with their times in Unix nanoseconds); answers once
    /// they are on disk.
    pub async fn append(&self, events: Vec<(u64, Event)>) -> Result<usize, LogError> {
        self.submit(|r| Job::Append(events, r)).await
    }

    /// Removes the personal data of the author with this key from every event that concerns
    /// them; answers how many events were changed.
    pub async fn erase_author(&self, author_key: String) -> Result<u64, LogError> {
        // Found off the writer, so ingest does not wait for the scan; the writer then reads
        // each event again and changes it only if it still concerns the author.
        let t = self.tables.clone();
        let key = author_key.clone();
        let found = tokio::task::spawn_blocking(move || author_scan(&t.events, &key))
            .await
            .map_err(|e| LogError::Internal(format!("erase task failed: {e}")))??;
        let keys = found.into_iter().map(|(k, _)| k).collect();
        self.submit(|r| Job::Erase(author_key, keys, r)).await
    }

    /// Applies retention now; answers how many events were deleted.
    pub async fn sweep(&self) -> Result<u64, LogError> {
        self.submit(Job::Sweep).await
    }

    /// Events matching `f`, newest first.
    pub async fn query(&self, f: Filter) -> Result<Page, LogError> {
        let t = self.tables.clone();
        tokio::task::spawn_blocking(move || query(&t, &f))
            .await
            .map_err(|e| LogError::Internal(format!("query task failed: {e}")))?
    }

    /// Every event concerning an author, oldest first (for export requests).
    pub async fn author_events(&self, author_key: String) -> Result<Vec<Event>, LogError> {
        let t = self.tables.clone();
        tokio::task::spawn_blocking(move || {
            Ok(author_scan(&t.events, &author_key)?
                .into_iter()
                .map(|(_, e)| e)
                .collect())
        })
        .await
        .map_err(|e| LogError::Internal(format!("export task failed: {e}")))?
    }
}

fn query(t: &Tables, f: &Filter) -> Result<Page, LogError> {
    let mut upper = [0xffu8; 16];
    if let Some(u) = f.until {
        upper = event_key(u, 0);
    }
    if let Some(b) = f.before
        && b < upper
    {
        upper = b;
    }
    let lower = event_key(f.since.unwrap_or(0), 0);
    let mut events = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    let mut scanned = 0usize;
    let mut more = false;
    for kv in t.events.range(lower..upper).rev() {
        let (k, v) = kv.into_inner()?;
        scanned += 1;
        let e = decode(&k, &v)?;
        if f.matches(&e) {
            if events.len() == f.limit {
                more = true;
                break;
            }
            events.push(e);
        }
        last_key = Some(k.to_vec());
        if scanned >= SCAN_LIMIT && events.len() < f.limit {
            more = true;
            break;
        }
    }
    Ok(Page {
        next: if more {
            last_key.map(|k| key_id(&k))
        } else {
            None
        },
        events,
    })
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// What one append produced: how many events were stored, and the stored events with their
/// ids for the live tail (empty when nobody follows it).
type Appended = Result<(usize, Vec<Event>), LogError>;

/// The single writer: owns the sequence counter and the size accounting.
struct Writer {
    t: Arc<Tables>,
    count: u64,
    bytes: u64,
    /// No stored key is greater than this one, so an event with a greater key needs no lookup
    /// to know it is new (most are: events arrive roughly in time order).
    newest: [u8; 16],
    retention: Retention,
    tail: broadcast::Sender<Arc<Event>>,
    metrics: Metrics,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < 256 {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let mut appended: Vec<(Reply<usize>, Appended)> = Vec::new();
            let mut others: Vec<(Reply<u64>, Result<u64, LogError>)> = Vec::new();
            for job in group {
                match job {
                    Job::Append(events, reply) => appended.push((reply, self.append(events))),
                    Job::Erase(author, keys, reply) => {
                        others.push((reply, self.erase(&author, keys)))
                    }
                    Job::Sweep(reply) => others.push((reply, self.sweep())),
                }
            }
            if self.bytes > self.retention.max_bytes
                && let Err(e) = self.sweep()
            {
                tracing::error!(error = %e, "retention by size failed");
            }
            let start = Instant::now();
            if let Err(e) = self.t.db.persist(PersistMode::SyncAll) {
                tracing::error!(error = %e, "fsync of the event log failed");
                let failed = || LogError::Internal(format!("fsync of the event log failed: {e}"));
                for (_, r) in &mut appended {
                    *r = Err(failed());
                }
                for (_, r) in &mut others {
                    *r = Err(failed());
                }
            }
            self.metrics
                .fsync_seconds
                .observe(start.elapsed().as_secs_f64());
            self.metrics.stored.set(self.count as i64);
            self.metrics.bytes.set(self.bytes as i64);
            for (reply, r) in appended {
                let r = r.map(|(n, events)| {
                    self.metrics.ingested.inc_by(n as u64);
                    for e in events {
                        let _ = self.tail.send(Arc::new(e));
                    }
                    n
                });
                let _ = reply.send(r);
            }
            for (reply, r) in others {
                let _ = reply.send(r);
            }
        }
        if let Err(e) = self.t.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final fsync of the event log failed");
        }
    }

    /// Stores a batch. An event's key is its time and a hash of its content, so an event
    /// identical to one already stored (same time to the nanosecond, same fields) is stored
    /// once: a batch retried after its answer was lost is not doubled, and a state change
    /// every replica of a tier reports alike (a suspension read from the control ConfigMap,
    /// stamped with its `since`) is one event. (Two different events would also need the
    /// same 64-bit hash in the same nanosecond to collide.)
    fn append(&mut self, events: Vec<(u64, Event)>) -> Appended {
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.t.db.clone(), events.len());
        // Only a live tail needs the stored events back; without one they are dropped here.
        let tailed = self.tail.receiver_count() > 0;
        let mut out = Vec::with_capacity(if tailed { events.len() } else { 0 });
        let (mut stored, mut added) = (0usize, 0u64);
        let mut in_batch = std::collections::HashSet::with_capacity(events.len());
        let mut newest = self.newest;
        for (nanos, mut e) in events {
            e.id = None;
            let value = encode(&EventRecord::from(&e));
            let key = event_key(nanos, xxhash_rust::xxh3::xxh3_64(&value));
            if !in_batch.insert(key) || (key <= self.newest && self.t.events.contains_key(key)?) {
                continue;
            }
            newest = newest.max(key);
            stored += 1;
            added += (key.len() + value.len()) as u64;
            batch.insert(&self.t.events, key, value);
            if tailed {
                e.id = Some(key_id(&key));
                out.push(e);
            }
        }
        batch.durability(None).commit()?;
        self.newest = newest;
        self.count += stored as u64;
        self.bytes += added;
        Ok((stored, out))
    }

    fn erase(&mut self, author: &str, keys: Vec<Vec<u8>>) -> Result<u64, LogError> {
        let mut batch = self.t.db.batch();
        let mut n = 0;
        for ek in keys {
            // Deleted by retention since the scan, or already erased: nothing to do.
            let Some(v) = self.t.events.get(&ek)? else {
                continue;
            };
            let mut e: EventRecord = decode_record(&v)?;
            if !e.concerns(author) {
                continue;
            }
            e.erase_author();
            let nv = encode(&e);
            self.bytes = (self.bytes + nv.len() as u64).saturating_sub(v.len() as u64);
            batch.insert(&self.t.events, ek, nv);
            n += 1;
        }
        batch.durability(None).commit()?;
        Ok(n)
    }

    /// Deletes events older than the age limit, then the oldest until under the size limit.
    fn sweep(&mut self) -> Result<u64, LogError> {
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            - self.retention.max_age.as_nanos() as i128;
        let cutoff = cutoff.max(0) as u64;
        let mut deleted = 0u64;
        loop {
            let mut batch = self.t.db.batch();
            let mut in_batch = 0;
            let mut done = true;
            for kv in self.t.events.iter() {
                let (k, v) = kv.into_inner()?;
                let old = key_nanos(&k) < cutoff;
                if !old && self.bytes <= self.retention.max_bytes {
                    break;
                }
                batch.remove(&self.t.events, k.to_vec());
                self.bytes = self.bytes.saturating_sub((k.len() + v.len()) as u64);
                self.count = self.count.saturating_sub(1);
                in_batch += 1;
                if in_batch == 10_000 {
                    done = false;
                    break;
                }
            }
            batch.durability(None).commit()?;
            deleted += in_batch;
            if done {
                break;
            }
        }
        if deleted > 0 {
            self.metrics.expired.inc_by(deleted);
            tracing::info!(deleted, "retention deleted old events");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_author_index_of_an_earlier_version_is_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path().join("fjall")).open().unwrap();
            let authors = db
                .keyspace("authors", KeyspaceCreateOptions::default)
                .unwrap();
            authors.insert(b"key-ann\x000123456789abcdef", b"").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let retention = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 20,
        };
        drop(EventLog::open(dir.path(), retention).unwrap());
        let db = Database::builder(dir.path().join("fjall")).open().unwrap();
        assert!(!db.keyspace_exists("authors"));
        assert!(db.keyspace_exists("events"));
    }
}
