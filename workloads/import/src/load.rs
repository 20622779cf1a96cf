//! Writing a stream of [`Record`]s into an io360 store.
//!
//! Exports are seldom in time order, and io360 numbers a thread's comments in the order they
//! were written, so the stream is sorted first, on disk: every comment goes into a temporary
//! fjall keyspace under `(thread, created, source id)`, then is read back thread by thread,
//! oldest first, and written in batches through the store's single writer (so imported
//! comments get sequence numbers and feed positions, and flow through the change feed like
//! posted ones). Memory stays bounded by a batch, whatever the file's size.
//!
//! Writing is idempotent on the source id (`<format>:<id>`): the store keeps a permanent map
//! from it to the io360 id, so a second run of the same file adds nothing, and a run stopped
//! half way continues where it stopped. Bodies go through io360's own rendering: Markdown is
//! rendered as a posted comment's text is, HTML is sanitized as io360's own output is.
//!
//! Page titles are kept by thread once the comments are in: the same title again writes
//! nothing, and a later import with another title for the page replaces it.

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use io360_common::model::{Status, Votes};
use io360_store::api::{Imported, ImportedComment, MAX_TITLE_BYTES, ThreadTitle, WriteOp};
use io360_store::{Db, StoreClient, StoreError};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use crate::{Body, Format, ImportError, Record, Records, State};

/// Comments written to the store in one batch (one durable group).
const BATCH: usize = 512;

/// Bytes of sorted comments in one batch at most (a batch sent over HTTP is one request).
const BATCH_BYTES: usize = 4 << 20;

/// Page titles written to the store in one batch (at most about 256 KiB).
const TITLE_BATCH: usize = 256;

/// Where an import writes: the store itself (the offline commands hold its data directory),
/// or a running store through its client (logic's `POST /api/v1/admin/import`).
pub trait Target: Sync {
    /// What the store answers when it fails.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes a batch, oldest first per thread; idempotent on source ids.
    fn import(
        &self,
        batch: Vec<ImportedComment>,
    ) -> impl Future<Output = Result<Imported, Self::Error>> + Send;

    /// Whether `thread` is closed to new comments.
    fn closed(&self, thread: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Closes `thread` to new comments.
    fn close(&self, thread: String) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Keeps page titles for their threads; answers how many were new or changed.
    fn set_titles(
        &self,
        titles: Vec<ThreadTitle>,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;
}

impl Target for Db {
    type Error = StoreError;

    async fn import(&self, batch: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        Db::import(self, batch).await
    }

    async fn closed(&self, thread: &str) -> Result<bool, StoreError> {
        Ok(self.meta(thread.to_owned()).await?.closed)
    }

    async fn close(&self, thread: String) -> Result<(), StoreError> {
        self.write(WriteOp::Close { thread }).await.map(|_| ())
    }

    async fn set_titles(&self, titles: Vec<ThreadTitle>) -> Result<u64, StoreError> {
        Ok(Db::set_titles(self, titles).await?.changed)
    }
}

impl Target for StoreClient {
    type Error = io360_common::client::ClientError;

    async fn import(&self, batch: Vec<ImportedComment>) -> Result<Imported, Self::Error> {
        StoreClient::import(self, &batch).await
    }

    async fn closed(&self, thread: &str) -> Result<bool, Self::Error> {
        Ok(self.meta(thread).await?.closed)
    }

    async fn close(&self, thread: String) -> Result<(), Self::Error> {
        self.write(&WriteOp::Close { thread }).await.map(|_| ())
    }

    async fn set_titles(&self, titles: Vec<ThreadTitle>) -> Result<u64, Self::Error> {
        Ok(StoreClient::set_titles(self, &titles).await?.changed)
    }
}

/// How records become io360 comments.
pub struct Options<'a> {
    /// The format read (it qualifies source ids: `disqus:123`).
    pub format: Format,
    /// Markdown to sanitized HTML: logic's renderer, so imported text reads as posted text.
    pub render: &'a (dyn Fn(&str) -> String + Sync),
    /// The author key for an email, as logic derives it, so an erase by email finds
    /// imported comments too.
    pub author_key: &'a (dyn Fn(&str) -> String + Sync),
    /// Where the temporary sort keyspace goes (removed at the end).
    pub scratch: &'a Path,
}

/// Counts of an import, so far or at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Records read from the file.
    pub records: u64,
    /// Bytes read from the file, where the reader counts them.
    pub bytes: u64,
    /// Threads in the file.
    pub threads: u64,
    /// Comments in the file.
    pub comments: u64,
    /// Comments written now.
    pub imported: u64,
    /// Comments imported by an earlier run (or twice in the file): not written again.
    pub skipped: u64,
    /// Comments whose parent the file does not have: written at the top level.
    pub orphans: u64,
    /// The first few of those, by source id.
    pub orphan_examples: Vec<String>,
    /// Comments naming a thread the file does not have: not written.
    pub without_thread: u64,
    /// Threads closed to new comments as they were in the source.
    pub closed: u64,
    /// Page titles kept now: new, or different from the one kept before.
    pub titles: u64,
    /// Time taken so far.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        write!(
            f,
            "{} records ({:.1} MiB) in {:.1} s: {} threads, {} comments, {} imported, {} already imported, {} without their parent (now top level), {} without a thread, {} threads closed, {} page titles kept; {:.0} records/s, {:.1} MiB/s",
            self.records,
            self.bytes as f64 / 1048576.0,
            secs,
            self.threads,
            self.comments,
            self.imported,
            self.skipped,
            self.orphans,
            self.without_thread,
            self.closed,
            self.titles,
            self.records as f64 / secs,
            self.bytes as f64 / 1048576.0 / secs,
        )
    }
}

/// Why an import stopped; `E` is the store's error (see [`Target`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E: std::error::Error + 'static = StoreError> {
    /// The file is wrong at some place; what was imported before it stays.
    #[error(
        "{source}; nothing was written from this run (fix the file and run again: comments already imported are skipped)"
    )]
    Read {
        /// Where and why.
        source: ImportError,
    },
    /// A record cannot become an io360 comment.
    #[error("{format} import stopped at {at}: {message}; nothing was written from this run")]
    Invalid {
        /// The format.
        format: Format,
        /// The record.
        at: String,
        /// Why.
        message: String,
    },
    /// The store refused or failed; what it wrote before stays, and a new run continues.
    #[error(
        "writing to the store failed after {imported} comments: {source}; run again to continue"
    )]
    Store {
        /// Comments written before the failure.
        imported: u64,
        /// The store's error.
        source: E,
    },
    /// The temporary sort space failed.
    #[error("the temporary sort space failed: {0}")]
    Scratch(String),
}

impl<E: std::error::Error + 'static> From<fjall::Error> for LoadError<E> {
    fn from(e: fjall::Error) -> Self {
        LoadError::Scratch(e.to_string())
    }
}

/// A thread as the sort keeps it.
#[derive(Serialize, Deserialize)]
struct SortedThread {
    name: String,
    closed: bool,
    #[serde(default)]
    title: Option<String>,
}

/// A source's page title as io360 keeps it: one line, its runs of white space made one space,
/// cut (at a character) to [`MAX_TITLE_BYTES`]; `None` when nothing is left.
fn page_title(title: Option<String>) -> Option<String> {
    let one_line: String = title?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX_TITLE_BYTES {
        out.truncate(out.floor_char_boundary(MAX_TITLE_BYTES));
        out.truncate(out.trim_end().len());
    }
    (!out.is_empty()).then_some(out)
}

/// The io360 thread name of a source thread.
fn thread_name(format: Format, t: &crate::Thread) -> String {
    match format {
        // io360's own names are kept as they are (a thread is any string, not only a path).
        Format::Io360 => t.url.clone(),
        _ => t.name(),
    }
}

/// A comment's source key: `<format>:<id>`; an io360 export's ids are already qualified.
fn source_key(format: Format, id: &str) -> String {
    match format {
        Format::Io360 => id.to_owned(),
        _ => format!("{format}:{id}"),
    }
}

/// `(thread, created, source)`, ordered: the name with its length first, the time as
/// nanoseconds with the sign bit flipped so byte order is time order.
fn sort_key(thread: &str, created: time::OffsetDateTime, source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + thread.len() + 16 + source.len());
    k.extend_from_slice(&(thread.len() as u16).to_be_bytes());
    k.extend_from_slice(thread.as_bytes());
    let nanos = created.unix_timestamp_nanos() as u128 ^ (1u128 << 127);
    k.extend_from_slice(&nanos.to_be_bytes());
    k.extend_from_slice(source.as_bytes());
    k
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Reads `records` into a temporary sort, then writes them into `db`, calling `progress`
/// about once a second with the counts so far. `bytes` reports how much of the file has been
/// read.
pub async fn load<T: Target>(
    records: Records,
    db: &T,
    opts: &Options<'_>,
    bytes: &(dyn Fn() -> u64 + Sync),
    progress: &mut (dyn FnMut(&Summary) + Send),
) -> Result<Summary, LoadError<T::Error>> {
    let started = Instant::now();
    let scratch = tempdir_in(opts.scratch)?;
    let sort = Database::builder(scratch.path())
        .temporary(true)
        .cache_size(8 << 20)
        .open()?;
    // Small memtables: the sort is written once and read once, so memory buys nothing.
    let small = || KeyspaceCreateOptions::default().max_memtable_size(16 << 20);
    let threads = sort.keyspace("threads", small)?;
    let comments = sort.keyspace("comments", small)?;
    let mut s = Summary::default();
    let mut last_report = Instant::now();

    // Pass 1: read and sort. The reads block, so the pass runs in place off the async
    // workers' duty (block_in_place), borrowing the renderer and the progress callback.
    let mut records = records;
    tokio::task::block_in_place(|| {
        sort_pass(
            opts,
            &mut records,
            &threads,
            &comments,
            &mut s,
            &mut |s: &Summary| {
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    let mut now = s.clone();
                    now.elapsed = started.elapsed();
                    now.bytes = bytes();
                    progress(&now);
                }
            },
        )
    })?;
    drop(records);
    s.bytes = bytes();
    // The sort's last memtables go to disk before the store's writing begins, so the two
    // do not hold memory at once.
    tokio::task::block_in_place(|| {
        threads.rotate_memtable_and_wait()?;
        comments.rotate_memtable_and_wait()
    })?;

    // Pass 2: oldest first per thread, in batches through the store's writer.
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_bytes = 0;
    let mut iter = comments.iter();
    loop {
        let next = tokio::task::block_in_place(|| iter.next());
        let done = next.is_none();
        if let Some(kv) = next {
            let (_, v) = kv.into_inner()?;
            let c: ImportedComment = serde_json::from_slice(&v)
                .map_err(|e| LoadError::Scratch(format!("a sorted comment does not read: {e}")))?;
            batch_bytes += v.len();
            batch.push(c);
        }
        if batch.len() >= BATCH || batch_bytes >= BATCH_BYTES || (done && !batch.is_empty()) {
            batch_bytes = 0;
            let r = db
                .import(std::mem::take(&mut batch))
                .await
                .map_err(|source| LoadError::Store {
                    imported: s.imported,
                    source,
                })?;
            s.imported += r.created;
            s.skipped += r.skipped;
            s.orphans += r.orphans.len() as u64;
            for o in r.orphans {
                if s.orphan_examples.len() < 10 {
                    s.orphan_examples.push(o);
                }
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                s.elapsed = started.elapsed();
                progress(&s);
            }
        }
        if done {
            break;
        }
    }

    // Threads the source had closed are closed last, once their comments are in; titles go
    // with them.
    let mut titles = Vec::new();
    for kv in threads.iter() {
        let (_, v) = kv.into_inner()?;
        let t: SortedThread = serde_json::from_slice(&v)
            .map_err(|e| LoadError::Scratch(format!("a sorted thread does not read: {e}")))?;
        let store = |source| LoadError::Store {
            imported: s.imported,
            source,
        };
        if let Some(title) = t.title {
            titles.push(ThreadTitle {
                thread: t.name.clone(),
                title,
            });
            if titles.len() >= TITLE_BATCH {
                s.titles += db
                    .set_titles(std::mem::take(&mut titles))
                    .await
                    .map_err(store)?;
            }
        }
        if t.closed && !db.closed(&t.name).await.map_err(store)? {
            db.close(t.name).await.map_err(store)?;
            s.closed += 1;
        }
    }
    if !titles.is_empty() {
        s.titles += db
            .set_titles(titles)
            .await
            .map_err(|source| LoadError::Store {
                imported: s.imported,
                source,
            })?;
    }
    drop(sort);
    s.elapsed = started.elapsed();
    Ok(s)
}

fn sort_pass<E: std::error::Error + 'static>(
    opts: &Options<'_>,
    records: &mut Records,
    threads: &Keyspace,
    comments: &Keyspace,
    s: &mut Summary,
    tick: &mut dyn FnMut(&Summary),
) -> Result<(), LoadError<E>> {
    let format = opts.format;
    for record in records {
        let record = record.map_err(|source| LoadError::Read { source })?;
        s.records += 1;
        match record {
            Record::Thread(t) => {
                let name = thread_name(format, &t);
                io360_common::rules::thread("thread", &name).map_err(|e| LoadError::Invalid {
                    format,
                    at: format!("thread {}", t.source_id),
                    message: format!("its name {name:?} is not an io360 thread name: {e}"),
                })?;
                s.threads += 1;
                let v = serde_json::to_vec(&SortedThread {
                    name,
                    closed: t.closed,
                    title: page_title(t.title),
                })
                .unwrap_or_default();
                threads.insert(t.source_id.as_bytes(), v)?;
            }
            Record::Comment(c) => {
                s.comments += 1;
                let Some(t) = threads.get(c.thread.as_bytes())? else {
                    s.without_thread += 1;
                    continue;
                };
                let t: SortedThread = serde_json::from_slice(&t).map_err(|e| {
                    LoadError::Scratch(format!("a sorted thread does not read: {e}"))
                })?;
                let source = source_key(format, &c.source_id);
                let (text, html) = match c.body {
                    Body::Markdown(m) => {
                        let html = (opts.render)(&m);
                        (m, html)
                    }
                    Body::Html(h) => {
                        let html = io360_common::sanitize::sanitize(&h);
                        (h, html)
                    }
                    Body::Rendered { text, html } => {
                        (text, io360_common::sanitize::sanitize(&html))
                    }
                };
                let email = c
                    .email
                    .map(|e| e.trim().to_owned())
                    .filter(|e| !e.is_empty());
                let imported = ImportedComment {
                    thread: t.name.clone(),
                    parent_source: c.parent.map(|p| source_key(format, &p)),
                    author: c.author,
                    author_key: email
                        .as_deref()
                        .map(|e| (opts.author_key)(&e.to_lowercase())),
                    email,
                    website: c.website,
                    remote: c.remote,
                    text,
                    html,
                    created: rfc3339(c.created),
                    modified: c.modified.map(rfc3339),
                    status: match c.state {
                        State::Approved => Status::Approved,
                        State::Pending | State::Spam => Status::Pending,
                        State::Deleted => Status::Deleted,
                    },
                    votes: Votes {
                        up: c.likes,
                        down: c.dislikes,
                    },
                    source: source.clone(),
                };
                let key = sort_key(&t.name, c.created, &source);
                if comments.contains_key(&key)? {
                    // The same comment twice in the file (merged downloads): written once.
                    s.skipped += 1;
                    continue;
                }
                let v = serde_json::to_vec(&imported).unwrap_or_default();
                comments.insert(key, v)?;
            }
        }
        tick(s);
    }
    Ok(())
}

/// A fresh directory under `root`, removed when dropped.
fn tempdir_in<E: std::error::Error + 'static>(
    root: &Path,
) -> Result<tempfile::TempDir, LoadError<E>> {
    std::fs::create_dir_all(root)
        .map_err(|e| LoadError::Scratch(format!("cannot create {}: {e}", root.display())))?;
    tempfile::Builder::new()
        .prefix("io360-import-")
        .tempdir_in(root)
        .map_err(|e| {
            LoadError::Scratch(format!(
                "cannot create a directory in {}: {e}",
                root.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_title_is_one_line_cut_at_a_character() {
        assert_eq!(
            page_title(Some("  Café\n\t &\u{7} crème  ".into())).as_deref(),
            Some("Café & crème")
        );
        assert_eq!(page_title(Some(" \n ".into())), None);
        assert_eq!(page_title(None), None);
        // 'é' is two bytes: a cut through it keeps the whole characters before it.
        let long = format!("{}é tail", "a".repeat(MAX_TITLE_BYTES - 1));
        let cut = page_title(Some(long)).unwrap();
        assert_eq!(cut.len(), MAX_TITLE_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'a'));
    }
}
