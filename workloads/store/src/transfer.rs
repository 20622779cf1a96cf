//! Moving a site's store between its engines (`io360 move-store`): every record of a fjall
//! data directory into an empty PostgreSQL database, or every row of a database into a fresh
//! data directory.
//!
//! Nothing is renumbered: comment ids, thread ids, feed positions and per-thread sequence
//! numbers come over as they are, with idempotency keys, votes, the moderation queue, author
//! counts, imported comments' source ids, the suspension and the bans. Both engines keep the
//! same records ([`crate::record`]), so records are copied as bytes. Clients that remember a
//! sequence number or a feed position keep them across the move.
//!
//! The source is read from one snapshot, in batches, while the target is written: memory
//! stays bounded by a few batches. Into PostgreSQL the whole copy is one transaction that
//! holds the counters' lock: an interrupted move leaves the database empty. A target that
//! holds anything is refused before anything is written. Afterwards the target's own tables
//! are counted again and compared with what was read: per thread its comments, its last
//! sequence number and its approved count; overall the feed position and every other table.
//! Into PostgreSQL the comparison runs before the commit, and a difference rolls it back.
//!
//! Both ends must be idle: a store process holds its data directory (a second open is
//! refused), but the database may have store replicas writing to it, which must be stopped
//! first, or what they write after the snapshot stays behind.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, OpenError};
use crate::error::StoreError;
use crate::pg::{PgDb, PgOpenError, PgOptions};
use crate::record::{IdemRecord, ThreadRecord};

/// Records copied per batch.
pub(crate) const BATCH: usize = 512;
/// Batches read ahead of the writer.
const AHEAD: usize = 4;

/// One record of a store, as both engines hold it.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A thread's record, under its name.
    Thread { name: String, rec: ThreadRecord },
    /// A change of the feed.
    Change {
        pos: u64,
        thread_id: u64,
        seq: u64,
        comment_id: Option<u64>,
        bytes: Vec<u8>,
    },
    /// A comment; `seq` is the sequence number of its last change.
    Comment {
        id: u64,
        thread_id: u64,
        seq: u64,
        parent: Option<u64>,
        author_key: Option<String>,
        bytes: Vec<u8>,
    },
    /// An idempotency key of a thread.
    Idempotency {
        thread_id: u64,
        key: String,
        record: IdemRecord,
    },
    /// A vote.
    Vote {
        comment_id: u64,
        voter: String,
        value: i8,
    },
    /// A held comment's place in the moderation queue.
    Pending(u64),
    /// An author's approved comments.
    Author { key: String, approved: u64 },
    /// An imported comment's source id.
    Source { source: String, comment_id: u64 },
    /// The suspension or the bans.
    Setting { name: String, bytes: Vec<u8> },
    /// The last feed position, comment id and thread id assigned: sent last.
    Counters {
        feed: u64,
        comment: u64,
        thread: u64,
    },
}

/// What a store holds, counted: what a move compares on both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Per thread, by name.
    pub threads: BTreeMap<String, ThreadCensus>,
    /// The last feed position assigned.
    pub feed_position: u64,
    /// The last comment id assigned.
    pub last_comment_id: u64,
    /// The last thread id assigned.
    pub last_thread_id: u64,
    /// Changes in the feed.
    pub changes: u64,
    /// Comments, deleted ones (tombstones) included.
    pub comments: u64,
    /// Idempotency keys remembered.
    pub idempotency_keys: u64,
    /// Votes.
    pub votes: u64,
    /// Comments held for moderation.
    pub pending: u64,
    /// Authors with an approved comment count.
    pub authors: u64,
    /// Imported comments' source ids.
    pub sources: u64,
    /// Settings (the suspension, the bans).
    pub settings: u64,
}

/// One thread, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCensus {
    /// Its id.
    pub id: u64,
    /// Its last sequence number, as its record says.
    pub head: u64,
    /// The highest sequence number among its changes in the feed.
    pub max_seq: u64,
    /// Its approved, not deleted comments, as its record says.
    pub approved: u64,
    /// Its comments, deleted ones included.
    pub comments: u64,
    /// Whether it is closed.
    pub closed: bool,
}

impl Census {
    /// Counts `items` as they go by. Threads' own numbers come from their records; their
    /// comments and highest sequence numbers from the comments and changes.
    pub(crate) fn count(&mut self, items: &[Item], names: &mut BTreeMap<u64, String>) {
        for item in items {
            match item {
                Item::Thread { name, rec } => {
                    names.insert(rec.id, name.clone());
                    let t = self.threads.entry(name.clone()).or_default();
                    t.id = rec.id;
                    t.head = rec.head;
                    t.approved = rec.count;
                    t.closed = rec.closed;
                }
                Item::Change { .. } => self.changes += 1,
                Item::Comment { .. } => self.comments += 1,
                Item::Idempotency { .. } => self.idempotency_keys += 1,
                Item::Vote { .. } => self.votes += 1,
                Item::Pending(_) => self.pending += 1,
                Item::Author { .. } => self.authors += 1,
                Item::Source { .. } => self.sources += 1,
                Item::Setting { .. } => self.settings += 1,
                Item::Counters {
                    feed,
                    comment,
                    thread,
                } => {
                    self.feed_position = *feed;
                    self.last_comment_id = *comment;
                    self.last_thread_id = *thread;
                }
            }
        }
        for item in items {
            let (tid, seq, comment) = match item {
                Item::Change { thread_id, seq, .. } => (*thread_id, *seq, false),
                Item::Comment { thread_id, .. } => (*thread_id, 0, true),
                _ => continue,
            };
            // Threads come first from either engine, so every id has its name by now; an id
            // without one is counted under a name no thread has, and the check fails on it.
            let name = names
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| format!("(no thread record for thread id {tid})"));
            let t = self.threads.entry(name).or_default();
            if comment {
                t.comments += 1;
            } else {
                t.max_seq = t.max_seq.max(seq);
            }
        }
    }

    /// The first difference between what was read and what was written, if any.
    pub(crate) fn difference(&self, written: &Census) -> Option<String> {
        for (name, read) in &self.threads {
            match written.threads.get(name) {
                None => return Some(format!("thread {name:?} is missing from the target")),
                Some(w) if w != read => {
                    return Some(format!(
                        "thread {name:?}: read {read:?}, the target holds {w:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(name) = written
            .threads
            .keys()
            .find(|n| !self.threads.contains_key(*n))
        {
            return Some(format!(
                "the target holds a thread {name:?} that was not read"
            ));
        }
        let totals = |c: &Census| {
            [
                ("feed position", c.feed_position),
                ("last comment id", c.last_comment_id),
                ("last thread id", c.last_thread_id),
                ("changes", c.changes),
                ("comments", c.comments),
                ("idempotency keys", c.idempotency_keys),
                ("votes", c.votes),
                ("held comments", c.pending),
                ("authors", c.authors),
                ("source ids", c.sources),
                ("settings", c.settings),
            ]
        };
        totals(self)
            .into_iter()
            .zip(totals(written))
            .find(|((_, r), (_, w))| r != w)
            .map(|((what, r), (_, w))| format!("{what}: read {r}, the target holds {w}"))
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let approved: u64 = self.threads.values().map(|t| t.approved).sum();
        write!(
            f,
            "{} threads, {} comments ({approved} approved, {} held), {} changes up to feed position {}, {} votes, {} idempotency keys, {} author counts, {} source ids, {} settings (suspension, bans)",
            self.threads.len(),
            self.comments,
            self.pending,
            self.changes,
            self.feed_position,
            self.votes,
            self.idempotency_keys,
            self.authors,
            self.sources,
            self.settings,
        )
    }
}

/// Why a move did not happen, or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Dir(#[from] OpenError),
    /// The source data directory holds no store.
    #[error("{0} holds no io360 store (no {0}/fjall): give the data directory the store ran on")]
    NoStore(String),
    /// The database could not be used.
    #[error(transparent)]
    Database(#[from] PgOpenError),
    /// The target holds data already.
    #[error(
        "{0} is not empty: a store moves only into an empty database or a fresh data directory, so nothing was written"
    )]
    NotEmpty(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Store(String),
    /// What was written is not what was read.
    #[error("the moved store does not match its source ({0})")]
    Mismatch(String),
    /// Moving into a data directory stopped half way.
    #[error(
        "{cause}; the data directory {dir} holds part of the copy: remove it before moving again"
    )]
    Partial {
        /// The directory.
        dir: String,
        /// What stopped the move.
        cause: String,
    },
}

impl From<StoreError> for MoveError {
    fn from(e: StoreError) -> MoveError {
        match e {
            // The detail says what the database answered.
            StoreError::Unavailable(detail) => MoveError::Store(detail),
            e => MoveError::Store(e.to_string()),
        }
    }
}

fn pg_options(url: String) -> PgOptions {
    PgOptions {
        url,
        pool_max: 4,
        group_commit_max: 1,
        write_queue_max: 1,
    }
}

fn open_source(dir: &Path) -> Result<Db, MoveError> {
    if !dir.join("fjall").is_dir() {
        return Err(MoveError::NoStore(dir.display().to_string()));
    }
    Ok(Db::open(dir, 1)?)
}

/// Copies the store in the data directory `dir` (the store's own: `<data-dir>/store` under
/// `io360 up`) into the empty database at `url`, and checks the copy. Answers what was moved.
pub async fn fjall_to_postgres(dir: &Path, url: String) -> Result<Census, MoveError> {
    let source = open_source(dir)?;
    let target = PgDb::connect(pg_options(url)).await?;
    if !target.is_empty().await? {
        return Err(MoveError::NotEmpty("the database".into()));
    }
    let (tx, rx) = mpsc::channel::<Vec<Item>>(AHEAD);
    let (read_tx, read_rx) = oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut read = Census::default();
        let mut names = BTreeMap::new();
        // A writer that stopped says why itself: the reader stops as if told to.
        let r = source.dump_blocking(&mut |batch| {
            read.count(&batch, &mut names);
            tx.blocking_send(batch).map_err(|_| StoreError::Stopping)
        });
        source.close();
        drop(tx);
        // Only a complete read is compared, and so committed.
        if r.is_ok() {
            let _ = read_tx.send(read.clone());
        }
        r.map(|()| read)
    });
    let written = target.fill(rx, read_rx).await;
    target.close();
    let read = reader
        .await
        .map_err(|e| MoveError::Store(format!("reading the data directory failed: {e}")))?;
    match (written, read) {
        (Ok(()), Ok(read)) => Ok(read),
        (Err(FillError::NotEmpty), _) => Err(MoveError::NotEmpty("the database".into())),
        (Err(FillError::Mismatch(d)), _) => Err(MoveError::Mismatch(d)),
        // A reader that failed on its own explains why the writer had nothing to commit.
        (_, Err(e)) if !matches!(e, StoreError::Stopping) => Err(e.into()),
        (Err(FillError::Store(e)), _) => Err(e.into()),
        (Ok(()), Err(e)) => Err(e.into()),
    }
}

/// Copies the store in the database at `url` into a fresh data directory `dir`, and checks the
/// copy. Answers what was moved.
pub async fn postgres_to_fjall(url: String, dir: &Path) -> Result<Census, MoveError> {
    let source = PgDb::connect(pg_options(url)).await?;
    let target = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Db::open(&dir, 1))
            .await
            .map_err(|e| MoveError::Store(format!("opening the data directory failed: {e}")))??
    };
    let target = std::sync::Arc::new(target);
    let fresh = {
        let t = target.clone();
        tokio::task::spawn_blocking(move || t.is_empty_blocking())
            .await
            .map_err(|e| MoveError::Store(e.to_string()))??
    };
    if !fresh {
        return Err(MoveError::NotEmpty(dir.display().to_string()));
    }
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(AHEAD);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let writer = {
        let t = target.clone();
        tokio::task::spawn_blocking(move || -> Result<Census, StoreError> {
            let mut read = Census::default();
            let mut names = BTreeMap::new();
            while let Some(batch) = rx.blocking_recv() {
                read.count(&batch, &mut names);
                t.fill_blocking(batch)?;
            }
            // Made durable only once the database was read whole.
            done_rx.blocking_recv().map_err(|_| StoreError::Stopping)?;
            t.finish_fill_blocking()?;
            Ok(read)
        })
    };
    let dumped = source.dump(tx).await;
    source.close();
    if dumped.is_ok() {
        let _ = done_tx.send(());
    } else {
        // Dropped unsent, it tells the writer the read stopped half way.
        drop(done_tx);
    }
    let written = writer
        .await
        .map_err(|e| MoveError::Store(format!("writing the data directory failed: {e}")))?;
    let partial = |e: StoreError| MoveError::Partial {
        dir: dir.display().to_string(),
        cause: MoveError::from(e).to_string(),
    };
    let read = match (dumped, written) {
        (Ok(()), Ok(read)) => read,
        // A writer that failed on its own explains why the reader stopped.
        (_, Err(e)) if !matches!(e, StoreError::Stopping) => return Err(partial(e)),
        (Err(e), _) | (Ok(()), Err(e)) => return Err(partial(e)),
    };
    let written = {
        let t = target.clone();
        tokio::task::spawn_blocking(move || t.census_blocking())
            .await
            .map_err(|e| MoveError::Store(e.to_string()))??
    };
    target.close();
    match read.difference(&written) {
        None => Ok(read),
        Some(d) => Err(MoveError::Partial {
            dir: dir.display().to_string(),
            cause: MoveError::Mismatch(d).to_string(),
        }),
    }
}

/// Why filling a database stopped.
pub(crate) enum FillError {
    /// It holds data already.
    NotEmpty,
    /// What was written is not what was read: rolled back.
    Mismatch(String),
    /// Reading or writing failed.
    Store(StoreError),
}

impl From<StoreError> for FillError {
    fn from(e: StoreError) -> FillError {
        FillError::Store(e)
    }
}

/// Hands items to `out` a batch at a time.
pub(crate) struct Batches<'a> {
    out: &'a mut dyn FnMut(Vec<Item>) -> Result<(), StoreError>,
    batch: Vec<Item>,
}

impl<'a> Batches<'a> {
    pub(crate) fn new(out: &'a mut dyn FnMut(Vec<Item>) -> Result<(), StoreError>) -> Self {
        Batches {
            out,
            batch: Vec::with_capacity(BATCH),
        }
    }

    pub(crate) fn push(&mut self, item: Item) -> Result<(), StoreError> {
        self.batch.push(item);
        if self.batch.len() >= BATCH {
            (self.out)(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        (self.out)(std::mem::take(&mut self.batch))
    }
}
