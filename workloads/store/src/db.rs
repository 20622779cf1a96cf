//! The store's database: fjall keyspaces, the single writer with group commit, and reads on
//! the blocking pool.
//!
//! Keyspaces:
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `threads` | thread name | [`ThreadRecord`] |
//! | `log` | (thread id, seq) | feed position of that change |
//! | `feed` | feed position | the change, a [`ChangeRecord`] |
//! | `latest` | (thread id, seq of a comment's last change) | comment id |
//! | `comments` | comment id | a [`CommentRecord`] |
//! | `idem` | (thread id, scoped idempotency key) | [`IdemRecord`]: the first result's feed position, the request's fingerprint, when |
//! | `votes` | (comment id, voter) | the vote |
//! | `pending` | comment id | empty: the moderation queue |
//! | `authors` | author key | approved comment count |
//! | `sources` | an imported comment's source id (`disqus:123`) | its comment id: permanent, so an import never writes a source comment twice |
//! | `source_of` | comment id | the source id it was imported under |
//! | `titles` | thread name | its page's title (UTF-8), as an import found it |
//! | `meta` | name | counters, the [format version](crate::format), the suspension and the bans |
//!
//! What is stored are the records of [`crate::record`], never the wire types: this layer takes
//! and answers the wire types of [`crate::api`] and converts at the keyspace's edge. It knows
//! nothing of HTTP: it answers [`StoreError`]s, which the HTTP layer maps to problems.
//!
//! Every write is one fjall batch (atomic). The writer thread drains up to
//! `group_commit_max` queued writes, commits each batch to the journal without syncing, then
//! calls `persist(SyncAll)` once for the whole group, and only then answers the writers and
//! advances the durable feed position that change-feed readers follow. A crash before the
//! fsync loses only unacknowledged writes, and always a suffix of them, so sequence numbers
//! stay gap-free.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use io360_common::model::{Change, ChangeKind, FeedPos, Seq, Status, ThreadMeta, ThreadPage};
use io360_common::telemetry::Telemetry;
use io360_common::writer::{Refused, WriterThread};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{oneshot, watch};

use crate::api::{
    Bans, Counts, ExportItem, ExportedComment, ExportedThread, Idempotency, Imported,
    ImportedComment, MAX_TITLE_BYTES, Renamed, Search, StoredComment, Suspension, ThreadChanges,
    ThreadTitle, TitlesSet, WriteOp, WriteResult,
};
use crate::error::StoreError;
use crate::keys::{id_bytes, read_u64, thread_seq, u64_key};
use crate::record::{
    BansRecord, ChangeRecord, CommentRecord, IdemRecord, SuspensionRecord, ThreadRecord, decode,
    encode,
};
use io360_common::format::FormatError;

mod moving;

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory.
    #[error(
        "the data directory {0} is in use by another io360 store process; stop it, or give this one its own --data-dir"
    )]
    Locked(PathBuf),
    /// The directory could not be created or locked.
    #[error("cannot use the data directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// fjall refused to open it.
    #[error("cannot open the comment database in {dir}: {source}")]
    Fjall {
        /// The directory.
        dir: PathBuf,
        /// fjall's error.
        source: fjall::Error,
    },
    /// A newer store wrote the directory; this one cannot know what its records mean.
    #[error(
        "the data directory {dir} holds comments in format {found}, written by a newer io360 store; this version reads formats up to {supported}, so it left the directory untouched: run the newer version on it"
    )]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// The format found.
        found: u64,
        /// The newest format this version reads.
        supported: u64,
    },
    /// The directory's format version marker is not one.
    #[error(
        "the data directory {dir} has an unreadable format version marker ({marker:?}); it was not written by an io360 store, or was damaged"
    )]
    UnreadableFormat {
        /// The directory.
        dir: PathBuf,
        /// The marker's bytes.
        marker: Vec<u8>,
    },
}

struct Tables {
    db: Database,
    threads: Keyspace,
    log: Keyspace,
    feed: Keyspace,
    latest: Keyspace,
    comments: Keyspace,
    idem: Keyspace,
    votes: Keyspace,
    pending: Keyspace,
    authors: Keyspace,
    sources: Keyspace,
    source_of: Keyspace,
    titles: Keyspace,
    meta: Keyspace,
}

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

enum Job {
    Write(WriteOp, Reply),
    Suspend(Suspension, oneshot::Sender<Result<Suspension, StoreError>>),
    Erase(EraseStep, oneshot::Sender<Result<Vec<Change>, StoreError>>),
    Bans(Bans, oneshot::Sender<Result<Bans, StoreError>>),
    Import(
        Vec<ImportedComment>,
        oneshot::Sender<Result<Imported, StoreError>>,
    ),
    Remap(Remap, oneshot::Sender<Result<Vec<Renamed>, StoreError>>),
    Titles(
        Vec<ThreadTitle>,
        oneshot::Sender<Result<TitlesSet, StoreError>>,
    ),
}

/// A rename of every thread whose name starts with `from`.
struct Remap {
    from: String,
    to: String,
    dry_run: bool,
}

#[derive(Clone)]
struct Metrics {
    writes: Counter,
    refused: Counter,
    group_size: Histogram,
    fsync_seconds: Histogram,
    durable_pos: Gauge,
}

/// How many writes may wait for the writer unless configured otherwise: several full groups,
/// so bursts are absorbed, while memory stays bounded.
pub const DEFAULT_WRITE_QUEUE: usize = 8192;

/// The comment database. Cheap to share behind an `Arc`.
pub struct Db {
    tables: Arc<Tables>,
    writer: WriterThread<Job>,
    durable: watch::Receiver<FeedPos>,
    metrics: Metrics,
    _lock: File,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time")
}

impl Db {
    /// Opens (creating if needed) the database in `dir` and starts its writer thread, with
    /// room for [`DEFAULT_WRITE_QUEUE`] waiting writes.
    pub fn open(dir: &Path, group_commit_max: usize) -> Result<Db, OpenError> {
        Db::open_bounded(dir, group_commit_max, DEFAULT_WRITE_QUEUE)
    }

    /// Opens the database with room for at most `write_queue_max` writes waiting for the
    /// writer; a write beyond that is refused with [`StoreError::Busy`].
    pub fn open_bounded(
        dir: &Path,
        group_commit_max: usize,
        write_queue_max: usize,
    ) -> Result<Db, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        let lock = File::create(dir.join("io360-store.lock")).map_err(|source| OpenError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenError::Dir {
                    dir: dir.to_owned(),
                    source,
                });
            }
        }
        let fj = |source| OpenError::Fjall {
            dir: dir.to_owned(),
            source,
        };
        let db = Database::builder(dir.join("fjall"))
            .manual_journal_persist(true)
            .open()
            .map_err(fj)?;
        let ks = |name: &str| db.keyspace(name, keyspace_options);
        let tables = Tables {
            threads: ks("threads").map_err(fj)?,
            log: ks("log").map_err(fj)?,
            feed: ks("feed").map_err(fj)?,
            latest: ks("latest").map_err(fj)?,
            comments: ks("comments").map_err(fj)?,
            idem: ks("idem").map_err(fj)?,
            votes: ks("votes").map_err(fj)?,
            pending: ks("pending").map_err(fj)?,
            authors: ks("authors").map_err(fj)?,
            sources: ks("sources").map_err(fj)?,
            source_of: ks("source_of").map_err(fj)?,
            titles: ks("titles").map_err(fj)?,
            meta: ks("meta").map_err(fj)?,
            db,
        };
        let format = io360_common::format::upgrade(
            &crate::format::Dir {
                db: tables.db.clone(),
                meta: tables.meta.clone(),
                holds_data: vec![
                    tables.threads.clone(),
                    tables.feed.clone(),
                    tables.comments.clone(),
                ],
            },
            crate::format::MIGRATIONS,
        )
        .map_err(|e| match e {
            FormatError::Newer(found) => OpenError::NewerFormat {
                dir: dir.to_owned(),
                found,
                supported: crate::format::CURRENT,
            },
            FormatError::Unreadable(marker) => OpenError::UnreadableFormat {
                dir: dir.to_owned(),
                marker,
            },
            FormatError::Storage(source) => OpenError::Fjall {
                dir: dir.to_owned(),
                source,
            },
        })?;
        if let Some(from) = format.filter(|v| *v != crate::format::CURRENT) {
            tracing::info!(
                from,
                to = crate::format::CURRENT,
                "store data directory upgraded"
            );
        }
        let last = |k: &Keyspace| -> Result<u64, OpenError> {
            match k.last_key_value() {
                None => Ok(0),
                Some(g) => Ok(read_u64(&g.key().map_err(fj)?)),
            }
        };
        let last_pos = last(&tables.feed)?;
        let last_id = last(&tables.comments)?;
        let next_tid = match tables.meta.get("next_thread_id").map_err(fj)? {
            Some(v) => read_u64(&v),
            None => 1,
        };
        let tables = Arc::new(tables);
        let (durable_tx, durable) = watch::channel(last_pos);
        let metrics = Metrics {
            writes: Counter::default(),
            refused: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            durable_pos: Gauge::default(),
        };
        metrics.durable_pos.set(last_pos as i64);
        let mut writer = Writer {
            t: tables.clone(),
            next_pos: last_pos + 1,
            next_id: last_id + 1,
            next_tid,
            durable: durable_tx,
            metrics: metrics.clone(),
            poisoned: false,
            imported_bytes: 0,
        };
        let max = group_commit_max.max(1);
        let writer = WriterThread::spawn("io360-store-writer", write_queue_max, move |rx| {
            writer.run(rx, max)
        })
        .map_err(|source| OpenError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), feed_position = last_pos, "store opened");
        Ok(Db {
            tables,
            writer,
            durable,
            metrics,
            _lock: lock,
        })
    }

    /// Adds the store's metrics to a tier's registry.
    pub fn register_metrics(&self, t: &Telemetry) {
        let m = &self.metrics;
        t.register("store_writes", "Writes made durable", m.writes.clone());
        t.register(
            "store_writes_refused_busy",
            "Writes refused because the write queue was full",
            m.refused.clone(),
        );
        t.register(
            "store_group_commit_size",
            "Writes made durable by one fsync",
            m.group_size.clone(),
        );
        t.register(
            "store_fsync_seconds",
            "Time spent in one group fsync",
            m.fsync_seconds.clone(),
        );
        t.register(
            "store_feed_position",
            "Last durable change-feed position",
            m.durable_pos.clone(),
        );
    }

    /// Follows the last durable change-feed position.
    pub fn durable(&self) -> watch::Receiver<FeedPos> {
        self.durable.clone()
    }

    /// Stops the writer after it has finished what is queued.
    pub fn close(&self) {
        self.writer.close();
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.writer.submit(job).map_err(|refused| match refused {
            Refused::Full => {
                self.metrics.refused.inc();
                StoreError::Busy
            }
            Refused::Stopped => StoreError::Stopping,
        })
    }

    /// Applies one write; answers once it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Write(op, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Sets the durable manual suspension.
    pub async fn set_suspension(&self, mut s: Suspension) -> Result<Suspension, StoreError> {
        if s.since.is_none() {
            s.since = Some(now());
        }
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Suspend(s, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Erases the personal data of every comment whose author has this key: each comment not
    /// yet deleted is deleted (a change of its thread, so live readers see it go), and copies
    /// of it kept in the change feed are scrubbed. Answers the changes made.
    ///
    /// The search is a scan of the comments and the feed, so it runs on the blocking pool,
    /// not on the writer; the writer then applies what was found in small steps, each queued
    /// behind the writes already waiting, so writes keep flowing during a long erase. A last
    /// step covers what was written while the scan ran.
    pub async fn erase_author(&self, key: String) -> Result<Vec<Change>, StoreError> {
        let found = {
            let key = key.clone();
            self.read(move |t| t.erase_plan(&key)).await?
        };
        let ids: Arc<BTreeSet<u64>> = Arc::new(found.ids.iter().copied().collect());
        let mut changes = Vec::new();
        for chunk in found.ids.chunks(ERASE_STEP) {
            let step = EraseStep::Comments {
                key: key.clone(),
                ids: chunk.to_vec(),
            };
            changes.extend(self.erase_step(step).await?);
        }
        for chunk in found.copies.chunks(ERASE_STEP * 4) {
            let step = EraseStep::Copies {
                ids: ids.clone(),
                positions: chunk.to_vec(),
            };
            self.erase_step(step).await?;
        }
        let step = EraseStep::Since {
            key,
            ids,
            id: found.last_id,
            pos: found.last_pos,
        };
        changes.extend(self.erase_step(step).await?);
        Ok(changes)
    }

    /// Applies one step of an erase, then leaves the writer to other writes for as long as
    /// the step took, so a long erase uses at most about half of the writer's time.
    async fn erase_step(&self, step: EraseStep) -> Result<Vec<Change>, StoreError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Erase(step, tx))?;
        let changes = rx.await.map_err(|_| writer_stopped())??;
        tokio::time::sleep(started.elapsed()).await;
        Ok(changes)
    }

    /// Replaces the durable list of bans.
    pub async fn set_bans(&self, bans: Bans) -> Result<Bans, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Bans(bans, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Writes comments imported from another system, in the order given (a reply after the
    /// comment it replies to), as new changes of their threads. A comment whose source id was
    /// imported before is skipped, so a batch can be written again after a failure. Answers
    /// once the batch is durable.
    pub async fn import(&self, comments: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Import(comments, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Renames every thread whose name starts with `from` to `to` followed by the rest of its
    /// name (a site that moved: `https://old.example/` to `/`), with its comments, counts and
    /// history; answers what was (or, with `dry_run`, would be) renamed. A name that is not a
    /// thread name, or a new name a thread already has, refuses the whole remap.
    ///
    /// Offline only: the renamed history is rewritten in place, which the change feed's
    /// readers (sync, longpoll, logic's cache) would not learn of. Run it on a data directory
    /// no running io360 holds.
    pub async fn remap(
        &self,
        from: String,
        to: String,
        dry_run: bool,
    ) -> Result<Vec<Renamed>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Remap(Remap { from, to, dry_run }, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// The io360 id of the comment imported under `source` (`disqus:123`), if any.
    pub async fn by_source(&self, source: String) -> Result<Option<u64>, StoreError> {
        self.read(move |t| Ok(t.sources.get(source.as_bytes())?.map(|v| read_u64(&v))))
            .await
    }

    /// Keeps page titles for their threads, replacing a different title kept before; answers
    /// once durable. A title equal to the one kept writes nothing, so an import run twice
    /// changes nothing the second time. A thread name or title that breaks the rules (see
    /// [`ThreadTitle`]) refuses the whole batch.
    pub async fn set_titles(&self, titles: Vec<ThreadTitle>) -> Result<TitlesSet, StoreError> {
        for t in &titles {
            check_title(t)?;
        }
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Titles(titles, tx))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// The title kept for `thread`'s page, if any.
    pub async fn title(&self, thread: String) -> Result<Option<String>, StoreError> {
        self.read(move |t| t.title(&thread)).await
    }

    /// Every thread, then every comment in id order with its private fields and source id,
    /// handed to `out` one at a time from one snapshot (memory stays bounded by one item).
    /// Blocking: call it off the async workers.
    pub fn export_blocking(
        &self,
        mut out: impl FnMut(ExportItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let t = &self.tables;
        let snapshot = t.db.snapshot();
        for kv in snapshot.iter(&t.threads) {
            let (k, v) = kv.into_inner()?;
            let rec: ThreadRecord = decode("thread", &v)?;
            let title = snapshot
                .get(&t.titles, &k)?
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            out(ExportItem::Thread(ExportedThread {
                thread: String::from_utf8_lossy(&k).into_owned(),
                closed: rec.closed,
                title,
            }))?;
        }
        // Pages with a title and no comments yet: threads too, so their titles come along.
        for kv in snapshot.iter(&t.titles) {
            let (k, v) = kv.into_inner()?;
            if snapshot.contains_key(&t.threads, &k)? {
                continue;
            }
            out(ExportItem::Thread(ExportedThread {
                thread: String::from_utf8_lossy(&k).into_owned(),
                closed: false,
                title: Some(String::from_utf8_lossy(&v).into_owned()),
            }))?;
        }
        for kv in snapshot.iter(&t.comments) {
            let (k, v) = kv.into_inner()?;
            let stored = read_comment(&v)?;
            let source = snapshot
                .get(&t.source_of, &k)?
                .map(|s| String::from_utf8_lossy(&s).into_owned());
            let parent_source = match stored.comment.parent {
                Some(p) => snapshot
                    .get(&t.source_of, u64_key(p))?
                    .map(|s| String::from_utf8_lossy(&s).into_owned()),
                None => None,
            };
            out(ExportItem::Comment(Box::new(ExportedComment {
                stored,
                source,
                parent_source,
            })))?;
        }
        Ok(())
    }

    /// The durable list of bans.
    pub async fn bans(&self) -> Result<Bans, StoreError> {
        self.read(|t| match t.meta.get("bans")? {
            Some(v) => Ok(decode::<BansRecord>("bans", &v)?.into()),
            None => Ok(Bans::default()),
        })
        .await
    }

    /// Every comment (with private fields) whose author has this key, oldest first.
    pub async fn author_comments(&self, key: String) -> Result<Vec<StoredComment>, StoreError> {
        self.read(move |t| {
            let mut out = Vec::new();
            for kv in t.comments.iter() {
                let (_, v) = kv.into_inner()?;
                let c = read_comment(&v)?;
                if c.author_key.as_deref() == Some(key.as_str()) {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Comments matching `q`, newest first: a scan of the comment table, for moderators.
    pub async fn search(&self, q: Search) -> Result<Vec<StoredComment>, StoreError> {
        self.read(move |t| {
            let upper = q.before.unwrap_or(u64::MAX);
            let text = q.text.as_ref().map(|s| s.to_lowercase());
            let author = q.author.as_ref().map(|s| s.to_lowercase());
            let mut out = Vec::new();
            for kv in t.comments.range(..u64_key(upper)).rev() {
                let (_, v) = kv.into_inner()?;
                let c = read_comment(&v)?;
                let ok = q.thread.as_ref().is_none_or(|th| &c.comment.thread == th)
                    && q.status.is_none_or(|st| c.comment.status == st)
                    && author.as_ref().is_none_or(|a| {
                        c.comment
                            .author
                            .as_ref()
                            .is_some_and(|n| n.to_lowercase().contains(a.as_str()))
                            || c.email.as_ref().is_some_and(|e| e.to_lowercase() == *a)
                    })
                    && text
                        .as_ref()
                        .is_none_or(|x| c.comment.text.to_lowercase().contains(x.as_str()));
                if ok {
                    out.push(c);
                    if out.len() >= q.limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let t = self.tables.clone();
        tokio::task::spawn_blocking(move || f(&t))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// A thread's comments whose last change is after `after`, in sequence order.
    pub async fn page(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadPage, StoreError> {
        self.read(move |t| {
            let Some(rec) = t.thread(&thread)? else {
                return Ok(ThreadPage {
                    thread,
                    ..ThreadPage::default()
                });
            };
            let from = thread_seq(rec.id, after.saturating_add(1));
            let to = thread_seq(rec.id, u64::MAX);
            let mut comments = Vec::new();
            for kv in t.latest.range(from..=to).take(limit) {
                let (_, id) = kv.into_inner()?;
                if let Some(c) = t.comment(read_u64(&id))? {
                    comments.push(c.comment);
                }
            }
            Ok(ThreadPage {
                thread,
                head: rec.head,
                closed: rec.closed,
                comments,
            })
        })
        .await
    }

    /// A thread's metadata (all zero for a thread nobody wrote to).
    pub async fn meta(&self, thread: String) -> Result<ThreadMeta, StoreError> {
        self.read(move |t| {
            let rec = t.thread(&thread)?.unwrap_or_default();
            let title = t.title(&thread)?;
            Ok(ThreadMeta {
                thread,
                head: rec.head,
                count: rec.count,
                closed: rec.closed,
                title,
            })
        })
        .await
    }

    /// Approved comment counts for many threads.
    pub async fn counts(&self, threads: Vec<String>) -> Result<Counts, StoreError> {
        self.read(move |t| {
            let mut counts = std::collections::BTreeMap::new();
            for name in threads {
                let n = t.thread(&name)?.map(|r| r.count).unwrap_or(0);
                counts.insert(name, n);
            }
            Ok(Counts { counts })
        })
        .await
    }

    /// One comment with its private fields.
    pub async fn comment(&self, id: u64) -> Result<Option<StoredComment>, StoreError> {
        self.read(move |t| t.comment(id)).await
    }

    /// A thread's changes after `after`, in sequence order.
    pub async fn changes(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadChanges, StoreError> {
        let durable = *self.durable.borrow();
        self.read(move |t| {
            let Some(rec) = t.thread(&thread)? else {
                return Ok(ThreadChanges {
                    thread,
                    head: 0,
                    changes: Vec::new(),
                });
            };
            let from = thread_seq(rec.id, after.saturating_add(1));
            let to = thread_seq(rec.id, u64::MAX);
            let mut changes = Vec::new();
            let mut cut = false;
            for kv in t.log.range(from..=to).take(limit) {
                let (_, pos) = kv.into_inner()?;
                let pos = read_u64(&pos);
                if pos > durable {
                    // Not yet durable: a reader must never see a change a crash could undo.
                    cut = true;
                    break;
                }
                if let Some(c) = t.feed.get(u64_key(pos))? {
                    changes.push(read_change(&c)?);
                }
            }
            let head = if cut {
                changes.last().map(|c| c.seq).unwrap_or(after)
            } else {
                rec.head
            };
            Ok(ThreadChanges {
                thread,
                head,
                changes,
            })
        })
        .await
    }

    /// Durable changes after feed position `after`, at most `limit`.
    pub async fn feed(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        let durable = *self.durable.borrow();
        self.read(move |t| {
            let mut out = Vec::new();
            if after >= durable {
                return Ok(out);
            }
            for kv in t
                .feed
                .range(u64_key(after + 1)..=u64_key(durable))
                .take(limit)
            {
                let (_, v) = kv.into_inner()?;
                out.push(read_change(&v)?);
            }
            Ok(out)
        })
        .await
    }

    /// Held comments, oldest first.
    pub async fn pending(&self, limit: usize) -> Result<Vec<StoredComment>, StoreError> {
        self.read(move |t| {
            let mut out = Vec::new();
            for kv in t.pending.iter().take(limit) {
                let id = kv.key()?;
                if let Some(c) = t.comment(read_u64(&id))? {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await
    }

    /// How many approved comments the author with this key has.
    pub async fn author_approved(&self, key: String) -> Result<u64, StoreError> {
        self.read(move |t| {
            Ok(t.authors
                .get(key.as_bytes())?
                .map(|v| read_u64(&v))
                .unwrap_or(0))
        })
        .await
    }

    /// The durable manual suspension.
    pub async fn suspension(&self) -> Result<Suspension, StoreError> {
        self.read(|t| match t.meta.get("suspension")? {
            Some(v) => Ok(decode::<SuspensionRecord>("suspension", &v)?.into()),
            None => Ok(Suspension::default()),
        })
        .await
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.close();
    }
}

/// What an erase found, off the writer: the author's comments and the feed positions that
/// hold copies of them with content, up to the last comment and feed position that existed
/// when the scan began.
struct ErasePlan {
    ids: Vec<u64>,
    copies: Vec<FeedPos>,
    last_id: u64,
    last_pos: FeedPos,
}

/// One step of an erase, applied by the writer.
enum EraseStep {
    /// Deletes (or, if deleted already, forgets the author of) these comments, if they are
    /// still the author's.
    Comments { key: String, ids: Vec<u64> },
    /// Scrubs these feed positions' copies of these comments.
    Copies {
        ids: Arc<BTreeSet<u64>>,
        positions: Vec<FeedPos>,
    },
    /// Erases what the scan could not see: the author's comments after comment `id`, copies
    /// after feed position `pos`; then forgets the author's approved count.
    Since {
        key: String,
        ids: Arc<BTreeSet<u64>>,
        id: u64,
        pos: FeedPos,
    },
}

/// Comments deleted by one step of an erase (feed copies scrubbed: four times as many).
const ERASE_STEP: usize = 8;

impl Tables {
    /// Finds an author's comments and the feed's copies of them (a scan of both tables).
    ///
    /// Both scans read one snapshot, so the last comment and the last feed position agree: a
    /// comment written while the scan runs has every copy after `last_pos`, where the last
    /// step of the erase looks for it.
    fn erase_plan(&self, key: &str) -> Result<ErasePlan, StoreError> {
        let snapshot = self.db.snapshot();
        let last = |k: &Keyspace| -> Result<u64, StoreError> {
            Ok(match snapshot.last_key_value(k) {
                Some(g) => read_u64(&g.key()?),
                None => 0,
            })
        };
        let (last_id, last_pos) = (last(&self.comments)?, last(&self.feed)?);
        let mut ids = Vec::new();
        for kv in snapshot.range(&self.comments, ..=u64_key(last_id)) {
            let (_, v) = kv.into_inner()?;
            let c = read_comment(&v)?;
            if c.author_key.as_deref() == Some(key) {
                ids.push(c.comment.id);
            }
        }
        let mut copies = Vec::new();
        if !ids.is_empty() {
            let theirs: BTreeSet<u64> = ids.iter().copied().collect();
            for kv in snapshot.range(&self.feed, ..=u64_key(last_pos)) {
                let (k, v) = kv.into_inner()?;
                let ch = read_change(&v)?;
                if ch
                    .comment
                    .as_ref()
                    .is_some_and(|c| theirs.contains(&c.id) && c.has_content())
                {
                    copies.push(read_u64(&k));
                }
            }
        }
        Ok(ErasePlan {
            ids,
            copies,
            last_id,
            last_pos,
        })
    }

    fn thread(&self, name: &str) -> Result<Option<ThreadRecord>, StoreError> {
        match self.threads.get(name.as_bytes())? {
            Some(v) => Ok(Some(decode("thread", &v)?)),
            None => Ok(None),
        }
    }

    fn comment(&self, id: u64) -> Result<Option<StoredComment>, StoreError> {
        match self.comments.get(u64_key(id))? {
            Some(v) => Ok(Some(read_comment(&v)?)),
            None => Ok(None),
        }
    }

    fn title(&self, thread: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .titles
            .get(thread.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// How the store's keyspaces are made (fjall keeps these with the keyspace: they apply to
/// keyspaces created from now on, and a data directory keeps those it was made with).
///
/// - **No index or filter held outside the block cache.** fjall pins a table's index and
///   filter blocks in memory when the table is written to the first levels, and keeps them
///   pinned when compaction later moves the table down unchanged, as it does with keys that
///   only grow (ids, feed positions). A 1 GiB import left about 460 such tables in each of
///   eight keyspaces, pinning 60 MiB that nothing gave back. And a table whose index is one
///   block keeps that whole block in memory as its top level: 16 MiB more. Unpinned, and
///   partitioned into 4 KiB blocks under a small top level, indexes and filters go through
///   the block cache like data: the store's memory is bounded by the cache, not the data.
/// - **16 MiB tables**, not 64: compaction holds the hash of every key of the table it writes,
///   to build the table's filter; for small entries (source ids, feed and thread indexes) a
///   64 MiB table held 32 MiB of them.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .index_block_pinning_policy(PinningPolicy::all(false))
        .filter_block_pinning_policy(PinningPolicy::all(false))
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default().with_table_target_size(16 << 20),
        ))
}

/// The single writer: owns the counters, so sequence numbers and feed positions are assigned
/// in commit order without locks.
struct Writer {
    t: Arc<Tables>,
    next_pos: FeedPos,
    next_id: u64,
    next_tid: u64,
    durable: watch::Sender<FeedPos>,
    metrics: Metrics,
    poisoned: bool,
    /// Bytes imported since the memtables were last rotated (see [`IMPORT_MEMTABLE_BYTES`]).
    imported_bytes: u64,
}

/// An import writes far more at once than posts do: after this many bytes of imported
/// records the memtables are sealed and flushed, so a large import's memory stays bounded by
/// this rather than by fjall's 64 MiB per keyspace.
const IMPORT_MEMTABLE_BYTES: u64 = 8 << 20;

enum Done {
    Write(Reply, Box<Result<WriteResult, StoreError>>),
    Suspend(
        oneshot::Sender<Result<Suspension, StoreError>>,
        Result<Suspension, StoreError>,
    ),
    Erase(
        oneshot::Sender<Result<Vec<Change>, StoreError>>,
        Result<Vec<Change>, StoreError>,
    ),
    Bans(
        oneshot::Sender<Result<Bans, StoreError>>,
        Result<Bans, StoreError>,
    ),
    Import(
        oneshot::Sender<Result<Imported, StoreError>>,
        Result<Imported, StoreError>,
    ),
    Remap(
        oneshot::Sender<Result<Vec<Renamed>, StoreError>>,
        Result<Vec<Renamed>, StoreError>,
    ),
    Titles(
        oneshot::Sender<Result<TitlesSet, StoreError>>,
        Result<TitlesSet, StoreError>,
    ),
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>, max: usize) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < max {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            // Steps of an erase go after the group's other jobs, in a commit of their own, so
            // a write never waits for an erase step queued beside it.
            let (erase, group): (Vec<Job>, Vec<Job>) =
                group.into_iter().partition(|j| matches!(j, Job::Erase(..)));
            self.commit_group(group);
            self.commit_group(erase);
        }
        if let Err(e) = self.t.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final fsync failed");
        }
    }

    /// Applies `group`, makes it durable with one fsync, then answers each job.
    fn commit_group(&mut self, group: Vec<Job>) {
        if group.is_empty() {
            return;
        }
        let mut done = Vec::with_capacity(group.len());
        let mut wrote = false;
        for job in group {
            match job {
                Job::Write(op, reply) => {
                    let r = self.apply(op);
                    wrote |= matches!(&r, Ok(w) if !w.replayed);
                    done.push(Done::Write(reply, Box::new(r)));
                }
                Job::Suspend(s, reply) => {
                    let r = self.suspend(s);
                    wrote |= r.is_ok();
                    done.push(Done::Suspend(reply, r));
                }
                Job::Erase(step, reply) => {
                    let r = self.erase(step);
                    wrote |= r.is_ok();
                    done.push(Done::Erase(reply, r));
                }
                Job::Bans(b, reply) => {
                    let r = self.set_bans(b);
                    wrote |= r.is_ok();
                    done.push(Done::Bans(reply, r));
                }
                Job::Import(comments, reply) => {
                    let r = self.import(comments);
                    // A batch refused half way has written its first part: make that durable
                    // too before the feed position that covers it is announced.
                    wrote = true;
                    done.push(Done::Import(reply, r));
                }
                Job::Remap(remap, reply) => {
                    let r = self.remap(remap);
                    wrote = true;
                    done.push(Done::Remap(reply, r));
                }
                Job::Titles(titles, reply) => {
                    let r = self.set_titles(titles);
                    wrote |= matches!(&r, Ok(t) if t.changed > 0);
                    done.push(Done::Titles(reply, r));
                }
            }
        }
        if wrote {
            let start = Instant::now();
            if let Err(e) = self.t.db.persist(PersistMode::SyncAll) {
                // The journal can no longer be trusted: refuse everything from now on.
                self.poisoned = true;
                tracing::error!(error = %e, "fsync failed; the store refuses further writes");
                for d in &mut done {
                    match d {
                        Done::Write(_, r) => **r = Err(StoreError::Poisoned),
                        Done::Suspend(_, r) => *r = Err(StoreError::Poisoned),
                        Done::Erase(_, r) => *r = Err(StoreError::Poisoned),
                        Done::Bans(_, r) => *r = Err(StoreError::Poisoned),
                        Done::Import(_, r) => *r = Err(StoreError::Poisoned),
                        Done::Remap(_, r) => *r = Err(StoreError::Poisoned),
                        Done::Titles(_, r) => *r = Err(StoreError::Poisoned),
                    }
                }
            }
            self.metrics
                .fsync_seconds
                .observe(start.elapsed().as_secs_f64());
            self.metrics.group_size.observe(done.len() as f64);
        }
        if !self.poisoned {
            let durable = self.next_pos - 1;
            self.metrics.durable_pos.set(durable as i64);
            self.durable.send_replace(durable);
        }
        for d in done {
            match d {
                Done::Write(reply, r) => {
                    if r.is_ok() {
                        self.metrics.writes.inc();
                    }
                    let _ = reply.send(*r);
                }
                Done::Suspend(reply, r) => {
                    let _ = reply.send(r);
                }
                Done::Erase(reply, r) => {
                    let _ = reply.send(r);
                }
                Done::Bans(reply, r) => {
                    let _ = reply.send(r);
                }
                Done::Import(reply, r) => {
                    let _ = reply.send(r);
                }
                Done::Remap(reply, r) => {
                    let _ = reply.send(r);
                }
                Done::Titles(reply, r) => {
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn set_bans(&mut self, b: Bans) -> Result<Bans, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.t.meta.insert("bans", encode(&BansRecord::from(&b)))?;
        Ok(b)
    }

    fn erase(&mut self, step: EraseStep) -> Result<Vec<Change>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        match step {
            EraseStep::Comments { key, ids } => self.erase_comments(&key, ids),
            EraseStep::Copies { ids, positions } => {
                self.scrub_copies(&ids, positions)?;
                Ok(Vec::new())
            }
            EraseStep::Since { key, ids, id, pos } => {
                let mut later = Vec::new();
                for kv in self.t.comments.range(u64_key(id.saturating_add(1))..) {
                    let (_, v) = kv.into_inner()?;
                    let c = read_comment(&v)?;
                    if c.author_key.as_deref() == Some(key.as_str()) {
                        later.push(c.comment.id);
                    }
                }
                let mut ids = (*ids).clone();
                ids.extend(&later);
                let changes = self.erase_comments(&key, later)?;
                let mut copies = Vec::new();
                for kv in self.t.feed.range(u64_key(pos.saturating_add(1))..) {
                    let (k, v) = kv.into_inner()?;
                    copies.push((read_u64(&k), v));
                }
                let positions = copies
                    .into_iter()
                    .filter_map(|(p, v)| {
                        let ch = read_change(&v).ok()?;
                        let c = ch.comment?;
                        (ids.contains(&c.id) && c.has_content()).then_some(p)
                    })
                    .collect();
                self.scrub_copies(&ids, positions)?;
                self.t.authors.remove(key.as_bytes())?;
                Ok(changes)
            }
        }
    }

    /// Deletes those of `ids` that are still the author's, or forgets their author if they
    /// are deleted already.
    fn erase_comments(&mut self, key: &str, ids: Vec<u64>) -> Result<Vec<Change>, StoreError> {
        let mut changes = Vec::new();
        for id in ids {
            let Some(mut c) = self.t.comment(id)? else {
                continue;
            };
            if c.author_key.as_deref() != Some(key) {
                continue;
            }
            if c.comment.status != Status::Deleted {
                let r = self.update(id, ChangeKind::Deleted, |c| {
                    c.author_key = None;
                    tombstone(id, c)
                })?;
                changes.push(r.change);
            } else {
                c.author_key = None;
                self.t.comments.insert(u64_key(id), comment_bytes(&c))?;
            }
        }
        Ok(changes)
    }

    /// Scrubs the copies of `ids` that the changes at `positions` still carry.
    fn scrub_copies(
        &mut self,
        ids: &BTreeSet<u64>,
        positions: Vec<FeedPos>,
    ) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut batch = self.t.db.batch();
        for pos in positions {
            let Some(v) = self.t.feed.get(u64_key(pos))? else {
                continue;
            };
            let mut ch = read_change(&v)?;
            if let Some(c) = &mut ch.comment
                && ids.contains(&c.id)
                && c.has_content()
            {
                c.scrub();
                batch.insert(&self.t.feed, u64_key(pos), change_bytes(&ch));
            }
        }
        batch.durability(None).commit().map_err(|e| {
            self.poisoned = true;
            StoreError::Storage(e)
        })
    }

    fn suspend(&mut self, s: Suspension) -> Result<Suspension, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.t
            .meta
            .insert("suspension", encode(&SuspensionRecord::from(&s)))?;
        Ok(s)
    }

    fn apply(&mut self, op: WriteOp) -> Result<WriteResult, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        match op {
            WriteOp::Append {
                thread,
                comment,
                idempotency,
            } => self.append(thread, comment, idempotency),
            WriteOp::Close { thread } => self.set_closed(thread, true),
            WriteOp::Reopen { thread } => self.set_closed(thread, false),
            WriteOp::Edit { id, text, html } => self.update(id, ChangeKind::Edited, |c| {
                if c.comment.status == Status::Deleted {
                    return Err(gone(id));
                }
                c.comment.text = text;
                c.comment.html = html;
                c.comment.modified = Some(now());
                Ok(0)
            }),
            WriteOp::Delete { id } => self.update(id, ChangeKind::Deleted, |c| tombstone(id, c)),
            WriteOp::Approve { id } => self.update(id, ChangeKind::Approved, |c| {
                if c.comment.status != Status::Pending {
                    return Err(StoreError::NotPending(id));
                }
                c.comment.status = Status::Approved;
                Ok(1)
            }),
            WriteOp::Vote { id, voter, value } => {
                io360_common::rules::vote(value)?;
                let key = id_bytes(id, voter.as_bytes());
                if self.t.votes.contains_key(&key)? {
                    return Err(StoreError::AlreadyVoted(id));
                }
                let votes = self.t.votes.clone();
                self.update_with(id, ChangeKind::Voted, |c, batch| {
                    if c.comment.status != Status::Approved {
                        return Err(StoreError::NotVotable(id));
                    }
                    if value > 0 {
                        c.comment.votes.up += 1;
                    } else {
                        c.comment.votes.down += 1;
                    }
                    batch.insert(&votes, key, [value as u8]);
                    Ok(0)
                })
            }
        }
    }

    fn thread_or_new(&mut self, name: &str) -> Result<(ThreadRecord, bool), StoreError> {
        match self.t.thread(name)? {
            Some(r) => Ok((r, false)),
            None => Ok((
                ThreadRecord {
                    id: self.next_tid,
                    ..ThreadRecord::default()
                },
                true,
            )),
        }
    }

    /// Adds the records common to every change to `batch` and advances the counters.
    fn record_change(
        &mut self,
        batch: &mut fjall::OwnedWriteBatch,
        name: &str,
        rec: &mut ThreadRecord,
        created_thread: bool,
        kind: ChangeKind,
        comment: Option<&StoredComment>,
    ) -> Change {
        let t = &self.t;
        let pos = self.next_pos;
        rec.head += 1;
        let change = Change {
            pos,
            thread: name.to_owned(),
            seq: rec.head,
            kind,
            comment: comment.map(|c| c.comment.clone()),
        };
        batch.insert(&t.threads, name.as_bytes(), encode(rec));
        batch.insert(&t.log, thread_seq(rec.id, rec.head), u64_key(pos));
        batch.insert(&t.feed, u64_key(pos), change_bytes(&change));
        if created_thread {
            batch.insert(&t.meta, "next_thread_id", u64_key(rec.id + 1));
        }
        change
    }

    fn commit(
        &mut self,
        batch: fjall::OwnedWriteBatch,
        created_thread: bool,
    ) -> Result<(), StoreError> {
        batch.durability(None).commit().map_err(|e| {
            self.poisoned = true;
            StoreError::Storage(e)
        })?;
        self.next_pos += 1;
        if created_thread {
            self.next_tid += 1;
        }
        Ok(())
    }

    fn append(
        &mut self,
        thread: String,
        new: crate::api::NewComment,
        idempotency: Option<Box<Idempotency>>,
    ) -> Result<WriteResult, StoreError> {
        io360_common::rules::thread("thread", &thread)?;
        let (mut rec, created_thread) = self.thread_or_new(&thread)?;
        let at = now_unix();
        let idem_key = idempotency
            .as_ref()
            .map(|i| id_bytes(rec.id, i.key.as_bytes()));
        if let (Some(k), Some(i)) = (&idem_key, &idempotency)
            && !created_thread
            && let Some(v) = self.t.idem.get(k)?
        {
            match IdemRecord::parse(&v).replay(&i.fingerprint, at) {
                Replay::Fresh => {}
                Replay::Conflict => return Err(StoreError::IdempotencyKeyReused),
                Replay::Of(pos) => {
                    let change = self.t.feed.get(u64_key(pos))?.ok_or_else(|| {
                        StoreError::Internal(format!(
                            "the idempotency record of position {pos} has no change"
                        ))
                    })?;
                    return Ok(WriteResult {
                        change: read_change(&change)?,
                        replayed: true,
                    });
                }
            }
        }
        if rec.closed {
            return Err(StoreError::ThreadClosed);
        }
        if let Some(parent) = new.parent {
            match self.t.comment(parent)? {
                Some(p) if p.comment.thread == thread => {}
                _ => {
                    return Err(StoreError::invalid(
                        "parent",
                        format!("must be a comment of this thread; {parent} is not"),
                    ));
                }
            }
        }
        let id = self.next_id;
        let status = new.status;
        let stored = StoredComment {
            comment: io360_common::model::Comment {
                id,
                thread: thread.clone(),
                seq: rec.head + 1,
                parent: new.parent,
                author: new.author,
                website: new.website,
                text: new.text,
                html: new.html,
                created: now(),
                modified: None,
                status,
                votes: Default::default(),
            },
            email: new.email,
            remote: new.remote,
            author_key: new.author_key,
        };
        if status == Status::Approved {
            rec.count += 1;
        }
        let mut batch = self.t.db.batch();
        let change = self.record_change(
            &mut batch,
            &thread,
            &mut rec,
            created_thread,
            ChangeKind::Created,
            Some(&stored),
        );
        let t = self.t.clone();
        batch.insert(&t.comments, u64_key(id), comment_bytes(&stored));
        batch.insert(&t.latest, thread_seq(rec.id, rec.head), u64_key(id));
        if let (Some(k), Some(i)) = (idem_key, idempotency) {
            let record = IdemRecord {
                pos: change.pos,
                fingerprint: i.fingerprint,
                at,
            };
            batch.insert(&t.idem, k, encode(&record));
        }
        if status == Status::Pending {
            batch.insert(&t.pending, u64_key(id), []);
        }
        if status == Status::Approved
            && let Some(key) = &stored.author_key
        {
            self.bump_author(&mut batch, key)?;
        }
        self.commit(batch, created_thread)?;
        self.next_id += 1;
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }

    /// Writes imported comments, each as a `created` change of its thread with its own times,
    /// state and votes; see [`Db::import`].
    fn import(&mut self, comments: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut out = Imported::default();
        for c in comments {
            if self.t.sources.contains_key(c.source.as_bytes())? {
                out.skipped += 1;
                continue;
            }
            io360_common::rules::thread("thread", &c.thread)?;
            let (mut rec, created_thread) = self.thread_or_new(&c.thread)?;
            let parent = match &c.parent_source {
                None => None,
                Some(p) => {
                    let found = match self.t.sources.get(p.as_bytes())? {
                        Some(v) => self
                            .t
                            .comment(read_u64(&v))?
                            .filter(|pc| pc.comment.thread == c.thread)
                            .map(|pc| pc.comment.id),
                        None => None,
                    };
                    if found.is_none() {
                        out.orphans.push(c.source.clone());
                    }
                    found
                }
            };
            let id = self.next_id;
            let mut stored = StoredComment {
                comment: io360_common::model::Comment {
                    id,
                    thread: c.thread.clone(),
                    seq: rec.head + 1,
                    parent,
                    author: c.author,
                    website: c.website,
                    text: c.text,
                    html: c.html,
                    created: c.created,
                    modified: c.modified,
                    status: c.status,
                    votes: c.votes,
                },
                email: c.email,
                remote: c.remote,
                author_key: c.author_key,
            };
            if c.status == Status::Deleted {
                stored.comment.scrub();
                stored.email = None;
                stored.remote = None;
                stored.author_key = None;
            }
            if c.status == Status::Approved {
                rec.count += 1;
            }
            let mut batch = self.t.db.batch();
            self.record_change(
                &mut batch,
                &c.thread,
                &mut rec,
                created_thread,
                ChangeKind::Created,
                Some(&stored),
            );
            let t = self.t.clone();
            let bytes = comment_bytes(&stored);
            // The comment, its copy in the feed, and the index entries.
            // Each of the seven entries costs a memtable about 100 bytes besides its own.
            self.imported_bytes += 2 * bytes.len() as u64 + 2 * c.source.len() as u64 + 700;
            batch.insert(&t.comments, u64_key(id), bytes);
            batch.insert(&t.latest, thread_seq(rec.id, rec.head), u64_key(id));
            batch.insert(&t.sources, c.source.as_bytes(), u64_key(id));
            batch.insert(&t.source_of, u64_key(id), c.source.as_bytes());
            if c.status == Status::Pending {
                batch.insert(&t.pending, u64_key(id), []);
            }
            if c.status == Status::Approved
                && let Some(key) = &stored.author_key
            {
                self.bump_author(&mut batch, key)?;
            }
            self.commit(batch, created_thread)?;
            self.next_id += 1;
            out.created += 1;
        }
        if self.imported_bytes >= IMPORT_MEMTABLE_BYTES {
            self.imported_bytes = 0;
            let t = &self.t;
            // Every keyspace an import writes, the small ones too: an author's count, the
            // moderation queue and the thread counter are rewritten at each comment, and a
            // memtable keeps every version of a key until it is flushed. Left to grow, they
            // held on to about 100 MiB at 1 GiB imported, and no journal could be deleted
            // before they were flushed.
            for ks in [
                &t.comments,
                &t.feed,
                &t.latest,
                &t.log,
                &t.sources,
                &t.source_of,
                &t.threads,
                &t.pending,
                &t.authors,
                &t.meta,
            ] {
                ks.rotate_memtable()?;
            }
            // Sealed memtables stay in memory until flushed: an import waits for the flushes
            // to catch up (for a few seconds at most) rather than piling them up.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while self.t.db.outstanding_flushes() > 2 && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(out)
    }

    /// See [`Db::set_titles`].
    fn set_titles(&mut self, titles: Vec<ThreadTitle>) -> Result<TitlesSet, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut out = TitlesSet::default();
        let mut batch = self.t.db.batch();
        let mut seen = BTreeSet::new();
        // The last title given for a thread wins, as it would in separate calls.
        for t in titles.iter().rev() {
            if !seen.insert(t.thread.as_str()) {
                continue;
            }
            if self.t.title(&t.thread)?.as_deref() == Some(t.title.as_str()) {
                continue;
            }
            batch.insert(&self.t.titles, t.thread.as_bytes(), t.title.as_bytes());
            out.changed += 1;
        }
        if out.changed > 0 {
            batch.durability(None).commit().map_err(|e| {
                self.poisoned = true;
                StoreError::Storage(e)
            })?;
        }
        Ok(out)
    }

    /// See [`Db::remap`].
    fn remap(&mut self, r: Remap) -> Result<Vec<Renamed>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if r.from.is_empty() {
            return Err(StoreError::invalid(
                "from",
                "must not be empty (it would rename every thread)",
            ));
        }
        let mut plan = Vec::new();
        for kv in self.t.threads.prefix(r.from.as_bytes()) {
            let (k, v) = kv.into_inner()?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec: ThreadRecord = decode("thread", &v)?;
            let to = format!("{}{}", r.to, &name[r.from.len()..]);
            io360_common::rules::thread("to", &to)?;
            let comments = self
                .t
                .latest
                .range(thread_seq(rec.id, 0)..=thread_seq(rec.id, u64::MAX))
                .count() as u64;
            plan.push((name, to, Some(rec), comments));
        }
        // Titles move with their threads; a page with a title and no comments moves too.
        let mut titles = Vec::new();
        for kv in self.t.titles.prefix(r.from.as_bytes()) {
            let (k, v) = kv.into_inner()?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let to = format!("{}{}", r.to, &name[r.from.len()..]);
            io360_common::rules::thread("to", &to)?;
            if !self.t.threads.contains_key(&k)? {
                plan.push((name.clone(), to.clone(), None, 0));
            }
            titles.push((name, to, String::from_utf8_lossy(&v).into_owned()));
        }
        plan.sort_by(|a, b| a.0.cmp(&b.0));
        let moving: BTreeSet<&str> = plan.iter().map(|(n, ..)| n.as_str()).collect();
        for (name, to, ..) in &plan {
            if self.t.threads.contains_key(to.as_bytes())? && !moving.contains(to.as_str()) {
                return Err(StoreError::invalid(
                    "to",
                    format!("{name} would become {to}, which is a thread already"),
                ));
            }
        }
        let answer: Vec<Renamed> = plan
            .iter()
            .map(|(from, to, _, comments)| Renamed {
                from: from.clone(),
                to: to.clone(),
                comments: *comments,
                title: titles
                    .iter()
                    .find(|(n, ..)| n == from)
                    .map(|(.., title)| title.clone()),
            })
            .collect();
        if r.dry_run {
            return Ok(answer);
        }
        // An old name that is also a new one (`/a` to `/b` while `/b` moves to `/c`) is
        // overwritten, not removed: a key appears once in the batch.
        let targets: BTreeSet<&str> = plan
            .iter()
            .filter(|(.., rec, _)| rec.is_some())
            .map(|(_, to, ..)| to.as_str())
            .collect();
        let mut batch = self.t.db.batch();
        for (name, _, rec, _) in &plan {
            if rec.is_some() && !targets.contains(name.as_str()) {
                batch.remove(&self.t.threads, name.as_bytes());
            }
        }
        let title_targets: BTreeSet<&str> = titles.iter().map(|(_, to, _)| to.as_str()).collect();
        for (name, to, title) in &titles {
            if !title_targets.contains(name.as_str()) {
                batch.remove(&self.t.titles, name.as_bytes());
            }
            batch.insert(&self.t.titles, to.as_bytes(), title.as_bytes());
        }
        for (_, to, rec, _) in &plan {
            let Some(rec) = rec else { continue };
            batch.insert(&self.t.threads, to.as_bytes(), encode(rec));
            let (lo, hi) = (thread_seq(rec.id, 0), thread_seq(rec.id, u64::MAX));
            for kv in self.t.latest.range(lo..=hi) {
                let (_, id) = kv.into_inner()?;
                if let Some(mut c) = self.t.comment(read_u64(&id))? {
                    c.comment.thread = to.clone();
                    batch.insert(&self.t.comments, id, comment_bytes(&c));
                }
            }
            for kv in self.t.log.range(lo..=hi) {
                let (_, pos) = kv.into_inner()?;
                if let Some(v) = self.t.feed.get(&pos)? {
                    let mut ch = read_change(&v)?;
                    ch.thread = to.clone();
                    if let Some(c) = &mut ch.comment {
                        c.thread = to.clone();
                    }
                    batch.insert(&self.t.feed, pos, change_bytes(&ch));
                }
            }
        }
        batch.durability(None).commit().map_err(|e| {
            self.poisoned = true;
            StoreError::Storage(e)
        })?;
        Ok(answer)
    }

    fn bump_author(&self, batch: &mut fjall::OwnedWriteBatch, key: &str) -> Result<(), StoreError> {
        let n = self
            .t
            .authors
            .get(key.as_bytes())?
            .map(|v| read_u64(&v))
            .unwrap_or(0);
        batch.insert(&self.t.authors, key.as_bytes(), u64_key(n + 1));
        Ok(())
    }

    fn set_closed(&mut self, thread: String, closed: bool) -> Result<WriteResult, StoreError> {
        io360_common::rules::thread("thread", &thread)?;
        let (mut rec, created_thread) = self.thread_or_new(&thread)?;
        rec.closed = closed;
        let kind = if closed {
            ChangeKind::Closed
        } else {
            ChangeKind::Reopened
        };
        let mut batch = self.t.db.batch();
        let change = self.record_change(&mut batch, &thread, &mut rec, created_thread, kind, None);
        self.commit(batch, created_thread)?;
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }

    fn update(
        &mut self,
        id: u64,
        kind: ChangeKind,
        f: impl FnOnce(&mut StoredComment) -> Result<i64, StoreError>,
    ) -> Result<WriteResult, StoreError> {
        self.update_with(id, kind, |c, _| f(c))
    }

    /// Applies `f` to a comment as a new change of its thread. `f` returns how the thread's
    /// visible count changes.
    fn update_with(
        &mut self,
        id: u64,
        kind: ChangeKind,
        f: impl FnOnce(&mut StoredComment, &mut fjall::OwnedWriteBatch) -> Result<i64, StoreError>,
    ) -> Result<WriteResult, StoreError> {
        let mut stored = self.t.comment(id)?.ok_or(StoreError::NoComment(id))?;
        let thread = stored.comment.thread.clone();
        let mut rec = self
            .t
            .thread(&thread)?
            .ok_or_else(|| StoreError::Internal(format!("comment {id} has no thread record")))?;
        let old_seq = stored.comment.seq;
        let was_pending = stored.comment.status == Status::Pending;
        let mut batch = self.t.db.batch();
        let delta = f(&mut stored, &mut batch)?;
        rec.count = rec.count.saturating_add_signed(delta);
        stored.comment.seq = rec.head + 1;
        let change = self.record_change(&mut batch, &thread, &mut rec, false, kind, Some(&stored));
        let t = self.t.clone();
        batch.remove(&t.latest, thread_seq(rec.id, old_seq));
        batch.insert(&t.latest, thread_seq(rec.id, rec.head), u64_key(id));
        batch.insert(&t.comments, u64_key(id), comment_bytes(&stored));
        if was_pending && stored.comment.status != Status::Pending {
            batch.remove(&t.pending, u64_key(id));
        }
        if kind == ChangeKind::Approved
            && let Some(key) = &stored.author_key
        {
            self.bump_author(&mut batch, key)?;
        }
        self.commit(batch, false)?;
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }
}

/// Turns a comment into a tombstone: its text and private data are erased. Answers how the
/// thread's visible count changes.
pub(crate) fn tombstone(id: u64, c: &mut StoredComment) -> Result<i64, StoreError> {
    let delta = match c.comment.status {
        Status::Deleted => return Err(gone(id)),
        Status::Approved => -1,
        Status::Pending => 0,
    };
    c.comment.status = Status::Deleted;
    c.comment.scrub();
    c.email = None;
    c.remote = None;
    Ok(delta)
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What an idempotency record says about a new request with the same key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Nothing usable is remembered: append.
    Fresh,
    /// The same request again: answer the first result (at this feed position).
    Of(FeedPos),
    /// Another request under a used key.
    Conflict,
}

impl IdemRecord {
    pub(crate) fn replay(&self, fingerprint: &str, now: i64) -> Replay {
        let window = crate::api::IDEMPOTENCY_WINDOW.as_secs() as i64;
        if self.at == i64::MIN || now.saturating_sub(self.at) > window {
            Replay::Fresh
        } else if self.fingerprint == fingerprint {
            Replay::Of(self.pos)
        } else {
            Replay::Conflict
        }
    }
}

fn gone(id: u64) -> StoreError {
    StoreError::Deleted(id)
}

/// Checks a title against the rules of [`ThreadTitle`]; both engines keep the same ones.
pub(crate) fn check_title(t: &ThreadTitle) -> Result<(), StoreError> {
    io360_common::rules::thread("thread", &t.thread)?;
    if t.title.trim().is_empty() {
        return Err(StoreError::invalid("title", "must not be empty"));
    }
    if t.title.len() > MAX_TITLE_BYTES {
        return Err(StoreError::invalid(
            "title",
            format!("must be at most {MAX_TITLE_BYTES} bytes"),
        ));
    }
    if t.title.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "title",
            "must be one line of text, without control characters",
        ));
    }
    Ok(())
}

fn writer_stopped() -> StoreError {
    StoreError::Internal("the store writer stopped".into())
}

fn read_comment(bytes: &[u8]) -> Result<StoredComment, StoreError> {
    Ok(decode::<CommentRecord>("comment", bytes)?.into())
}

fn comment_bytes(c: &StoredComment) -> Vec<u8> {
    encode(&CommentRecord::from(c))
}

fn read_change(bytes: &[u8]) -> Result<Change, StoreError> {
    Ok(decode::<ChangeRecord>("change", bytes)?.into())
}

fn change_bytes(c: &Change) -> Vec<u8> {
    encode(&ChangeRecord::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_records_replay_only_the_same_request_while_fresh() {
        let r = IdemRecord {
            pos: 7,
            fingerprint: "abc".into(),
            at: 1_000,
        };
        assert_eq!(r.replay("abc", 1_000 + 60), Replay::Of(7));
        assert_eq!(r.replay("abd", 1_000 + 60), Replay::Conflict);
        let day = crate::api::IDEMPOTENCY_WINDOW.as_secs() as i64;
        assert_eq!(r.replay("abc", 1_000 + day + 1), Replay::Fresh);
        assert_eq!(r.replay("abd", 1_000 + day + 1), Replay::Fresh);
        // A record from before fingerprints never replays.
        assert_eq!(
            IdemRecord::parse(&7u64.to_be_bytes()).replay("", 0),
            Replay::Fresh
        );
        let bytes = encode(&r);
        assert_eq!(IdemRecord::parse(&bytes), r);
    }
}
