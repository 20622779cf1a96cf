//! The store on PostgreSQL: the same contract as the fjall engine ([`crate::Db`]), for sites
//! whose store must outlive a node, with several store replicas writing to one database.
//!
//! Tables (created and upgraded by the versioned migrations in `migrations/`, applied at
//! start): `counters` (one row: the last feed position, comment id and thread id), `threads`,
//! `feed`, `comments`, `idempotency`, `votes`, `pending`, `authors`, `sources`, `settings`.
//! Comments, changes, the suspension and the bans are kept as the same records the fjall engine
//! writes ([`crate::record`]).
//!
//! Writes: each store replica has one writer task. It takes up to `group_commit_max` queued
//! writes and applies them in one transaction, each inside a savepoint (a refused write undoes
//! only itself). The transaction's first statement locks the `counters` row, and the lock is
//! held until commit: transactions of every replica take turns, so feed positions and
//! per-thread sequence numbers are assigned in commit order and a position becomes visible
//! only after every smaller one has. The transaction ends with a `NOTIFY` carrying the new
//! last position, delivered to every replica on commit; each replica also polls the counter
//! once a second, in case a notification is lost with a connection. No application lock is
//! involved: the database's row lock alone makes the guarantees hold.
//!
//! While the database cannot be reached, writes and reads answer
//! [`StoreError::Unavailable`] (503 with `Retry-After`). A write is acknowledged only after its
//! transaction committed; when a commit's outcome is unknown (the connection broke during
//! `COMMIT`) the write is answered unavailable, and a retry with its idempotency key finds the
//! first result if it did commit.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::{StreamExt, TryStreamExt};
use io360_common::model::{Change, ChangeKind, FeedPos, Seq, Status, ThreadMeta, ThreadPage};
use io360_common::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::api::{
    Bans, Counts, ExportItem, ExportedComment, ExportedThread, Idempotency, Imported,
    ImportedComment, Renamed, Search, StoredComment, Suspension, ThreadChanges, ThreadTitle,
    TitlesSet, WriteOp, WriteResult,
};
use crate::db::{Replay, check_title, tombstone};
use crate::error::StoreError;
use crate::record::{
    BansRecord, ChangeRecord, CommentRecord, IdemRecord, SuspensionRecord, ThreadRecord, decode,
    encode,
};

mod moving;
mod tls;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The channel on which committed feed positions are announced.
const CHANNEL: &str = "io360_feed";
/// How often a replica reads the last committed position, besides being notified.
const POLL: Duration = Duration::from_secs(1);
/// How long a request waits for a connection to the database before it is answered 503.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Comments deleted by one step of an erase.
const ERASE_STEP: i64 = 8;

/// Why the PostgreSQL engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The DSN is not one.
    #[error("IO360_DATABASE_URL is not a PostgreSQL connection string: {0}")]
    Url(String),
    /// TLS to the database, as the connection string asks it, cannot be set up.
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
    /// The pool could not be built.
    #[error("cannot build the database connection pool: {0}")]
    Pool(String),
    /// The database could not be reached.
    #[error("cannot reach the database: {0}")]
    Connect(String),
    /// The schema could not be brought up to date.
    #[error(
        "cannot bring the database schema up to date: {0} (a newer io360 store may have migrated it: run the newer version)"
    )]
    Migrate(String),
    /// The writer could not start.
    #[error("{0}")]
    Internal(String),
}

/// How to reach the database and how much of it to use.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A PostgreSQL connection string (`postgres://user:pass@host:5432/db?sslmode=require`).
    pub url: String,
    /// Connections at most, per store replica.
    pub pool_max: usize,
    /// Most writes in one transaction.
    pub group_commit_max: usize,
    /// Most writes waiting for the writer.
    pub write_queue_max: usize,
}

#[derive(Clone)]
struct Metrics {
    writes: Counter,
    refused: Counter,
    group_size: Histogram,
    commit_seconds: Histogram,
    durable_pos: Gauge,
    unavailable: Counter,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Write(WriteOp, Reply<WriteResult>),
    Suspend(Suspension, Reply<Suspension>),
    EraseStep(String, Reply<(Vec<Change>, bool)>),
    Bans(Bans, Reply<Bans>),
    Import(Vec<ImportedComment>, Reply<Imported>),
    Remap(String, String, bool, Reply<Vec<Renamed>>),
    Titles(Vec<ThreadTitle>, Reply<TitlesSet>),
}

/// The comment database on PostgreSQL. Cheap to share behind an `Arc`; several of them (in
/// one process or in many) may write to one database at once.
pub struct PgDb {
    pool: Pool,
    pg: Arc<tokio_postgres::Config>,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    durable: watch::Receiver<FeedPos>,
    reachable: watch::Receiver<bool>,
    metrics: Metrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time")
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A count or id as PostgreSQL's `bigint`; larger values (only ever "no limit") clamp.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn small(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An error with its causes (a failed TLS handshake says why only in its source).
fn why(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

/// Whether a database error means the database is away (answer 503 and let the caller retry)
/// rather than a fault of the store.
fn unavailable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            // Connection exceptions, operator intervention (shutdown, crash recovery),
            // insufficient resources, serialization failures and deadlocks.
            c.starts_with("08") || c.starts_with("57") || c.starts_with("53") || c.starts_with("40")
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if unavailable(&e) {
            StoreError::Unavailable(format!("the database is unavailable: {}", why(&e)))
        } else {
            StoreError::Internal(format!("database error: {}", why(&e)))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Unavailable(format!("the database is unavailable: {}", why(&e)))
    }
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

fn writer_stopped() -> StoreError {
    StoreError::Internal("the store writer stopped".into())
}

impl PgDb {
    /// Connects to the database, brings its schema up to date and starts the writer and the
    /// feed follower. Several replicas may start at once: migrations take an advisory lock.
    pub async fn connect(o: PgOptions) -> Result<PgDb, PgOpenError> {
        let (rest, wish) = tls::split(&o.url).map_err(PgOpenError::Url)?;
        let mut pg: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
        pg.ssl_mode(wish.ssl_mode());
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_WAIT);
        }
        // A replica that stops in the middle of a transaction (a frozen process, a network
        // partition) must not hold the counters' lock, and with it every replica's writes,
        // for long: the server ends such a session after a few seconds.
        let options = match pg.get_options() {
            Some(o) => format!("{o} -c idle_in_transaction_session_timeout=10000"),
            None => "-c idle_in_transaction_session_timeout=10000".to_owned(),
        };
        pg.options(&options);
        let tls = wish.connector().map_err(PgOpenError::Tls)?;
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(o.pool_max.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_WAIT))
            .create_timeout(Some(CONNECT_WAIT))
            .recycle_timeout(Some(CONNECT_WAIT))
            .build()
            .map_err(|e| PgOpenError::Pool(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| PgOpenError::Connect(why(&e)))?;
        client
            .execute("SELECT pg_advisory_lock(360360)", &[])
            .await
            .map_err(|e| PgOpenError::Migrate(e.to_string()))?;
        let migrated = embedded::migrations::runner()
            .set_abort_missing(true)
            .run_async(&mut **client)
            .await;
        let _ = client
            .execute("SELECT pg_advisory_unlock(360360)", &[])
            .await;
        let report = migrated.map_err(|e| PgOpenError::Migrate(e.to_string()))?;
        for m in report.applied_migrations() {
            tracing::info!(
                version = m.version(),
                name = m.name(),
                "store schema migrated"
            );
        }
        let last: i64 = client
            .query_one("SELECT feed FROM counters", &[])
            .await
            .map_err(|e| PgOpenError::Connect(why(&e)))?
            .get(0);
        drop(client);
        let last = small(last);
        let (durable_tx, durable) = watch::channel(last);
        let metrics = Metrics {
            writes: Counter::default(),
            refused: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            durable_pos: Gauge::default(),
            unavailable: Counter::default(),
        };
        metrics.durable_pos.set(big(last));
        let durable_tx = Arc::new(durable_tx);
        let (reachable_tx, reachable) = watch::channel(true);
        let (tx, rx) = mpsc::channel(o.write_queue_max.max(1));
        let writer = Writer {
            pool: pool.clone(),
            durable: durable_tx.clone(),
            metrics: metrics.clone(),
        };
        let max = o.group_commit_max.max(1);
        let tasks = vec![
            tokio::spawn(writer.run(rx, max)),
            tokio::spawn(follow(
                pg.clone(),
                tls.clone(),
                pool.clone(),
                durable_tx,
                reachable_tx,
                metrics.clone(),
            )),
        ];
        tracing::info!(feed_position = last, "store opened on PostgreSQL");
        Ok(PgDb {
            pool,
            pg: Arc::new(pg),
            tls,
            queue: Mutex::new(Some(tx)),
            durable,
            reachable,
            metrics,
            tasks,
        })
    }

    /// Adds the store's metrics to a tier's registry (the fjall engine's names, so one
    /// dashboard reads both).
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
            "Writes made durable by one commit",
            m.group_size.clone(),
        );
        t.register(
            "store_fsync_seconds",
            "Time spent in one group commit",
            m.commit_seconds.clone(),
        );
        t.register(
            "store_feed_position",
            "Last durable change-feed position",
            m.durable_pos.clone(),
        );
        t.register(
            "store_database_unavailable",
            "Requests answered 503 because the database could not be reached",
            m.unavailable.clone(),
        );
    }

    /// Follows the last committed change-feed position (of every replica).
    pub fn durable(&self) -> watch::Receiver<FeedPos> {
        self.durable.clone()
    }

    /// Follows whether the database answered the last time it was asked (about once a
    /// second): a store that cannot reach it reports itself not ready, so it is taken out of
    /// its Service rather than restarted, and ready again once the database answers.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.reachable.clone()
    }

    /// Stops taking writes; what is queued is still written.
    pub fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        // The follower has nothing to finish.
        if let Some(f) = self.tasks.get(1) {
            f.abort();
        }
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        let q = self
            .queue
            .lock()
            .map_err(|_| StoreError::Internal("the write queue's lock is poisoned".into()))?;
        let Some(q) = q.as_ref() else {
            return Err(StoreError::Stopping);
        };
        q.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics.refused.inc();
                StoreError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopping,
        })
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(job(tx))?;
        let r = rx.await.map_err(|_| writer_stopped())?;
        if matches!(r, Err(StoreError::Unavailable(_))) {
            self.metrics.unavailable.inc();
        }
        r
    }

    /// Applies one write; answers once it is committed.
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        self.ask(|tx| Job::Write(op, tx)).await
    }

    /// Sets the durable manual suspension.
    pub async fn set_suspension(&self, mut s: Suspension) -> Result<Suspension, StoreError> {
        if s.since.is_none() {
            s.since = Some(now());
        }
        self.ask(|tx| Job::Suspend(s, tx)).await
    }

    /// Erases the personal data of every comment whose author has this key; see
    /// [`crate::Db::erase_author`]. Each step deletes a few of the author's comments and
    /// scrubs the feed's copies of them in a transaction of its own, then leaves the writer to
    /// other writes for as long as the step took; the last step finds none left (a comment
    /// the author wrote meanwhile is found by a later step) and forgets the author's count.
    pub async fn erase_author(&self, key: String) -> Result<Vec<Change>, StoreError> {
        let mut changes = Vec::new();
        loop {
            let started = Instant::now();
            let (step, done) = self.ask(|tx| Job::EraseStep(key.clone(), tx)).await?;
            changes.extend(step);
            if done {
                return Ok(changes);
            }
            tokio::time::sleep(started.elapsed()).await;
        }
    }

    /// Replaces the durable list of bans.
    pub async fn set_bans(&self, bans: Bans) -> Result<Bans, StoreError> {
        self.ask(|tx| Job::Bans(bans, tx)).await
    }

    /// Writes imported comments; see [`crate::Db::import`]. A batch is one transaction: a
    /// refused batch writes nothing.
    pub async fn import(&self, comments: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        self.ask(|tx| Job::Import(comments, tx)).await
    }

    /// Keeps page titles for their threads; see [`crate::Db::set_titles`].
    pub async fn set_titles(&self, titles: Vec<ThreadTitle>) -> Result<TitlesSet, StoreError> {
        for t in &titles {
            check_title(t)?;
        }
        self.ask(|tx| Job::Titles(titles, tx)).await
    }

    /// The title kept for `thread`'s page, if any.
    pub async fn title(&self, thread: String) -> Result<Option<String>, StoreError> {
        let r = async {
            let c = self.client().await?;
            let row = opt(&c, "SELECT title FROM titles WHERE thread = $1", &[&thread]).await?;
            Ok(row.map(|r| r.get(0)))
        }
        .await;
        self.read(r).await
    }

    /// Renames threads; see [`crate::Db::remap`]. Offline only, as there.
    pub async fn remap(
        &self,
        from: String,
        to: String,
        dry_run: bool,
    ) -> Result<Vec<Renamed>, StoreError> {
        self.ask(|tx| Job::Remap(from, to, dry_run, tx)).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            self.metrics.unavailable.inc();
            StoreError::from(e)
        })
    }

    async fn read<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(r, Err(StoreError::Unavailable(_))) {
            self.metrics.unavailable.inc();
        }
        r
    }

    /// The io360 id of the comment imported under `source`, if any.
    pub async fn by_source(&self, source: String) -> Result<Option<u64>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT comment_id FROM sources WHERE source = $1",
                &[&source],
            )
            .await
            .map(|r| r.map(|r| small(r.get(0))))
            .map_err(StoreError::from);
        self.read(r).await
    }

    /// Every thread, then every comment in id order with its private fields and source id,
    /// handed to `out` one at a time from one snapshot. Blocking: call it off the async
    /// workers. It reads over a connection of its own, on a runtime of its own, so it may be
    /// called from any thread.
    pub fn export_blocking(
        &self,
        mut out: impl FnMut(ExportItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<ExportItem, StoreError>>(256);
        let (pg, tls) = ((*self.pg).clone(), self.tls.clone());
        let reader = std::thread::Builder::new()
            .name("io360-store-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(StoreError::Internal(e.to_string())));
                        return;
                    }
                };
                if let Err(e) = rt.block_on(export(pg, tls, &tx)) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Internal(format!("starting the export: {e}")))?;
        let mut result = Ok(());
        for item in rx.iter() {
            match item.and_then(&mut out) {
                Ok(()) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.join();
        result
    }

    /// The durable list of bans.
    pub async fn bans(&self) -> Result<Bans, StoreError> {
        let r = self.setting("bans").await.and_then(|v| match v {
            Some(v) => Ok(decode::<BansRecord>("bans", &v)?.into()),
            None => Ok(Bans::default()),
        });
        self.read(r).await
    }

    /// The durable manual suspension.
    pub async fn suspension(&self) -> Result<Suspension, StoreError> {
        let r = self.setting("suspension").await.and_then(|v| match v {
            Some(v) => Ok(decode::<SuspensionRecord>("suspension", &v)?.into()),
            None => Ok(Suspension::default()),
        });
        self.read(r).await
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
                .await?
                .map(|r| r.get(0)),
        )
    }

    /// Every comment (with private fields) whose author has this key, oldest first.
    pub async fn author_comments(&self, key: String) -> Result<Vec<StoredComment>, StoreError> {
        let r = async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT record FROM comments WHERE author_key = $1 ORDER BY id",
                    &[&key],
                )
                .await?;
            rows.iter().map(|r| read_comment(r.get(0))).collect()
        }
        .await;
        self.read(r).await
    }

    /// Comments matching `q`, newest first: a scan of the comments, for moderators.
    pub async fn search(&self, q: Search) -> Result<Vec<StoredComment>, StoreError> {
        let r = async {
            let c = self.client().await?;
            let upper = big(q.before.unwrap_or(u64::MAX));
            let text = q.text.as_ref().map(|s| s.to_lowercase());
            let author = q.author.as_ref().map(|s| s.to_lowercase());
            let params: [&(dyn ToSql + Sync); 1] = [&upper];
            let rows = c
                .query_raw(
                    "SELECT record FROM comments WHERE id < $1 ORDER BY id DESC",
                    params,
                )
                .await?;
            futures::pin_mut!(rows);
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await? {
                let c = read_comment(row.get(0))?;
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
        }
        .await;
        self.read(r).await
    }

    /// A thread's comments whose last change is after `after`, in sequence order.
    pub async fn page(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadPage, StoreError> {
        let r = async {
            let mut c = self.client().await?;
            let tx = snapshot(&mut c).await?;
            let Some(rec) = thread_record(&tx, &thread).await? else {
                return Ok(ThreadPage {
                    thread,
                    ..ThreadPage::default()
                });
            };
            let rows = tx
                .query(
                    "SELECT record FROM comments WHERE thread_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&big(rec.id), &big(after), &big(limit as u64)],
                )
                .await?;
            tx.commit().await?;
            let comments = rows
                .iter()
                .map(|r| read_comment(r.get(0)).map(|c| c.comment))
                .collect::<Result<_, _>>()?;
            Ok(ThreadPage {
                thread,
                head: rec.head,
                closed: rec.closed,
                comments,
            })
        }
        .await;
        self.read(r).await
    }

    /// A thread's metadata (all zero for a thread nobody wrote to).
    pub async fn meta(&self, thread: String) -> Result<ThreadMeta, StoreError> {
        let r = async {
            let c = self.client().await?;
            let rec = thread_record(&c, &thread).await?.unwrap_or_default();
            let title = opt(&c, "SELECT title FROM titles WHERE thread = $1", &[&thread]).await?;
            Ok(ThreadMeta {
                thread,
                head: rec.head,
                count: rec.count,
                closed: rec.closed,
                title: title.map(|r| r.get(0)),
            })
        }
        .await;
        self.read(r).await
    }

    /// Approved comment counts for many threads.
    pub async fn counts(&self, threads: Vec<String>) -> Result<Counts, StoreError> {
        let r = async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT name, count FROM threads WHERE name = ANY($1)",
                    &[&threads],
                )
                .await?;
            let mut counts: std::collections::BTreeMap<String, u64> =
                threads.into_iter().map(|t| (t, 0)).collect();
            for r in rows {
                counts.insert(r.get(0), small(r.get(1)));
            }
            Ok(Counts { counts })
        }
        .await;
        self.read(r).await
    }

    /// One comment with its private fields.
    pub async fn comment(&self, id: u64) -> Result<Option<StoredComment>, StoreError> {
        let r = async {
            let c = self.client().await?;
            comment(&c, id).await
        }
        .await;
        self.read(r).await
    }

    /// A thread's changes after `after`, in sequence order.
    pub async fn changes(
        &self,
        thread: String,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadChanges, StoreError> {
        let r = async {
            let mut c = self.client().await?;
            let tx = snapshot(&mut c).await?;
            let Some(rec) = thread_record(&tx, &thread).await? else {
                return Ok(ThreadChanges {
                    thread,
                    head: 0,
                    changes: Vec::new(),
                });
            };
            let rows = tx
                .query(
                    "SELECT change FROM feed WHERE thread_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&big(rec.id), &big(after), &big(limit as u64)],
                )
                .await?;
            tx.commit().await?;
            let changes = rows
                .iter()
                .map(|r| read_change(r.get(0)))
                .collect::<Result<_, _>>()?;
            Ok(ThreadChanges {
                thread,
                head: rec.head,
                changes,
            })
        }
        .await;
        self.read(r).await
    }

    /// Committed changes after feed position `after`, at most `limit`, up to the position
    /// this replica last learned was committed.
    pub async fn feed(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        let durable = *self.durable.borrow();
        if after >= durable {
            return Ok(Vec::new());
        }
        let r = async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT change FROM feed WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3",
                    &[&big(after), &big(durable), &big(limit as u64)],
                )
                .await?;
            rows.iter().map(|r| read_change(r.get(0))).collect()
        }
        .await;
        self.read(r).await
    }

    /// Held comments, oldest first.
    pub async fn pending(&self, limit: usize) -> Result<Vec<StoredComment>, StoreError> {
        let r = async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT c.record FROM pending p JOIN comments c ON c.id = p.comment_id ORDER BY p.comment_id LIMIT $1",
                    &[&big(limit as u64)],
                )
                .await?;
            rows.iter().map(|r| read_comment(r.get(0))).collect()
        }
        .await;
        self.read(r).await
    }

    /// How many approved comments the author with this key has.
    pub async fn author_approved(&self, key: String) -> Result<u64, StoreError> {
        let r = async {
            let c = self.client().await?;
            Ok(
                c.query_opt("SELECT approved FROM authors WHERE key = $1", &[&key])
                    .await?
                    .map(|r| small(r.get(0)))
                    .unwrap_or(0),
            )
        }
        .await;
        self.read(r).await
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read-only transaction over one snapshot.
async fn snapshot(
    c: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Runs `sql` as a statement prepared once per connection; answers its row, if any.
async fn opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

/// Runs `sql` as a statement prepared once per connection; answers its rows.
async fn all(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

/// Runs `sql` as a statement prepared once per connection; answers the rows it changed.
async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

async fn thread_record(
    c: &impl GenericClient,
    name: &str,
) -> Result<Option<ThreadRecord>, StoreError> {
    Ok(opt(
        c,
        "SELECT id, head, count, closed FROM threads WHERE name = $1",
        &[&name],
    )
    .await?
    .map(|r| ThreadRecord {
        id: small(r.get(0)),
        head: small(r.get(1)),
        count: small(r.get(2)),
        closed: r.get(3),
    }))
}

async fn comment(c: &impl GenericClient, id: u64) -> Result<Option<StoredComment>, StoreError> {
    match opt(c, "SELECT record FROM comments WHERE id = $1", &[&big(id)]).await? {
        Some(r) => Ok(Some(read_comment(r.get(0))?)),
        None => Ok(None),
    }
}

/// Reads the export over its own connection and hands each item to `tx`.
async fn export(
    pg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: &std::sync::mpsc::SyncSender<Result<ExportItem, StoreError>>,
) -> Result<(), StoreError> {
    let (mut client, conn) = pg.connect(tls).await?;
    let driver = tokio::spawn(conn);
    let t = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let none: [&(dyn ToSql + Sync); 0] = [];
    // Threads, then pages with a title and no comments yet (as the fjall engine exports them).
    let rows = t
        .query_raw(
            "SELECT name, closed, title FROM ( \
             SELECT t.name, t.closed, ti.title, 0 AS part FROM threads t \
             LEFT JOIN titles ti ON ti.thread = t.name \
             UNION ALL SELECT ti.thread, false, ti.title, 1 FROM titles ti \
             WHERE NOT EXISTS (SELECT 1 FROM threads t WHERE t.name = ti.thread)) u \
             ORDER BY part, name COLLATE \"C\"",
            none,
        )
        .await?;
    futures::pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        let item = ExportItem::Thread(ExportedThread {
            thread: r.get(0),
            closed: r.get(1),
            title: r.get(2),
        });
        if tx.send(Ok(item)).is_err() {
            return Ok(());
        }
    }
    let none: [&(dyn ToSql + Sync); 0] = [];
    let rows = t
        .query_raw(
            "SELECT c.record, s.source, ps.source FROM comments c \
             LEFT JOIN sources s ON s.comment_id = c.id \
             LEFT JOIN sources ps ON ps.comment_id = c.parent_id ORDER BY c.id",
            none,
        )
        .await?;
    futures::pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        let item = ExportItem::Comment(Box::new(ExportedComment {
            stored: read_comment(r.get(0))?,
            source: r.get(1),
            parent_source: r.get(2),
        }));
        if tx.send(Ok(item)).is_err() {
            return Ok(());
        }
    }
    t.commit().await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Keeps `durable` at the last committed feed position of every replica: woken by `NOTIFY`
/// on a connection of its own, and reading the counter every [`POLL`] whatever happens (a
/// notification sent while that connection was down is never delivered). Whether that read
/// succeeds is whether the database is `reachable`.
async fn follow(
    pg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    pool: Pool,
    durable: Arc<watch::Sender<FeedPos>>,
    reachable: watch::Sender<bool>,
    metrics: Metrics,
) {
    let answered = |ok: bool, error: Option<String>| {
        reachable.send_if_modified(|r| {
            if *r == ok {
                return false;
            }
            *r = ok;
            if ok {
                tracing::info!("the database answers again: the store is ready");
            } else {
                tracing::warn!(
                    error = error.as_deref().unwrap_or_default(),
                    "the database cannot be reached: the store reports itself not ready"
                );
            }
            true
        });
    };
    let advance = |pos: FeedPos| {
        durable.send_if_modified(|d| {
            if pos > *d {
                *d = pos;
                metrics.durable_pos.set(big(pos));
                true
            } else {
                false
            }
        });
    };
    loop {
        let (notes_tx, mut notes) = mpsc::unbounded_channel::<FeedPos>();
        let listener = match pg.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = m
                            && let Ok(pos) = n.payload().parse()
                            && notes_tx.send(pos).is_err()
                        {
                            break;
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => Some((client, driver)),
                    Err(_) => {
                        driver.abort();
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                note = notes.recv(), if listener.is_some() => match note {
                    Some(pos) => advance(pos),
                    // The listening connection broke: make another.
                    None => break,
                },
                _ = tick.tick() => {
                    let read = match pool.get().await {
                        Ok(c) => c
                            .query_one("SELECT feed FROM counters", &[])
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match read {
                        Ok(r) => {
                            advance(small(r.get(0)));
                            answered(true, None);
                        }
                        Err(e) => answered(false, Some(e)),
                    }
                    if listener.is_none() {
                        break;
                    }
                }
            }
        }
        drop(listener);
        tokio::time::sleep(POLL).await;
    }
}

/// The counters of the transaction under way, read under the `counters` row lock.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// The last feed position assigned.
    feed: u64,
    /// The last comment id assigned.
    comment: u64,
    /// The last thread id assigned.
    thread: u64,
}

/// One store replica's writer: applies groups of queued writes, one transaction each.
struct Writer {
    pool: Pool,
    durable: Arc<watch::Sender<FeedPos>>,
    metrics: Metrics,
}

enum Done {
    Write(Reply<WriteResult>, Box<Result<WriteResult, StoreError>>),
    Suspend(Reply<Suspension>, Result<Suspension, StoreError>),
    Erase(
        Reply<(Vec<Change>, bool)>,
        Result<(Vec<Change>, bool), StoreError>,
    ),
    Bans(Reply<Bans>, Result<Bans, StoreError>),
    Import(Reply<Imported>, Result<Imported, StoreError>),
    Remap(Reply<Vec<Renamed>>, Result<Vec<Renamed>, StoreError>),
    Titles(Reply<TitlesSet>, Result<TitlesSet, StoreError>),
}

impl Done {
    fn fail(&mut self, e: &StoreError) {
        let again = || match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            other => StoreError::Unavailable(other.to_string()),
        };
        match self {
            Done::Write(_, r) => **r = Err(again()),
            Done::Suspend(_, r) => *r = Err(again()),
            Done::Erase(_, r) => *r = Err(again()),
            Done::Bans(_, r) => *r = Err(again()),
            Done::Import(_, r) => *r = Err(again()),
            Done::Remap(_, r) => *r = Err(again()),
            Done::Titles(_, r) => *r = Err(again()),
        }
    }

    fn answer(self, metrics: &Metrics) {
        match self {
            Done::Write(reply, r) => {
                if r.is_ok() {
                    metrics.writes.inc();
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

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>, max: usize) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < max {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            // Steps of an erase go in a transaction of their own, after the others.
            let (erase, group): (Vec<Job>, Vec<Job>) = group
                .into_iter()
                .partition(|j| matches!(j, Job::EraseStep(..)));
            self.commit_group(group).await;
            self.commit_group(erase).await;
        }
    }

    async fn commit_group(&self, group: Vec<Job>) {
        if group.is_empty() {
            return;
        }
        let start = Instant::now();
        let n = group.len();
        let mut done = Vec::with_capacity(n);
        let outcome = self.transaction(group, &mut done).await;
        match outcome {
            Ok(Some(last)) => {
                self.durable.send_if_modified(|d| {
                    if last > *d {
                        *d = last;
                        self.metrics.durable_pos.set(big(last));
                        true
                    } else {
                        false
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, writes = n, "a group of writes was not committed");
                for d in &mut done {
                    d.fail(&e);
                }
                self.metrics.unavailable.inc();
            }
        }
        self.metrics
            .commit_seconds
            .observe(start.elapsed().as_secs_f64());
        self.metrics.group_size.observe(n as f64);
        for d in done {
            d.answer(&self.metrics);
        }
    }

    /// Applies `group` in one transaction, leaving each job's outcome in `done`. Answers the
    /// last feed position the transaction committed (none when it assigned none), or why it
    /// did not commit.
    async fn transaction(
        &self,
        group: Vec<Job>,
        done: &mut Vec<Done>,
    ) -> Result<Option<FeedPos>, StoreError> {
        let mut jobs = group.into_iter();
        let mut client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                // Every job is answered unavailable.
                let e = StoreError::from(e);
                for job in jobs.by_ref() {
                    done.push(unanswered(job, &e));
                }
                return Err(e);
            }
        };
        // Read committed, whatever the database's default: each statement after the lock
        // reads what the transaction before committed.
        let tx = match client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
        {
            Ok(tx) => tx,
            Err(e) => {
                let e = StoreError::from(e);
                for job in jobs.by_ref() {
                    done.push(unanswered(job, &e));
                }
                return Err(e);
            }
        };
        let mut w = match Tx::begin(&tx).await {
            Ok(w) => w,
            Err(e) => {
                for job in jobs.by_ref() {
                    done.push(unanswered(job, &e));
                }
                return Err(e);
            }
        };
        let first_pos = w.n.feed;
        for job in jobs.by_ref() {
            if let Err(e) = tx.batch_execute("SAVEPOINT job").await {
                let e = StoreError::from(e);
                done.push(unanswered(job, &e));
                for job in jobs.by_ref() {
                    done.push(unanswered(job, &e));
                }
                return Err(e);
            }
            let before = w.n;
            let (d, ended) = w.job(job).await;
            done.push(d);
            let end = match ended {
                Ended::Written => "RELEASE SAVEPOINT job",
                Ended::Refused => {
                    w.n = before;
                    "ROLLBACK TO SAVEPOINT job"
                }
                Ended::Failed(e) => {
                    for job in jobs.by_ref() {
                        done.push(unanswered(job, &e));
                    }
                    return Err(e);
                }
            };
            if let Err(e) = tx.batch_execute(end).await {
                // The jobs not reached yet are answered too: none is left without a reply.
                let e = StoreError::from(e);
                for job in jobs.by_ref() {
                    done.push(unanswered(job, &e));
                }
                return Err(e);
            }
        }
        let n = w.n;
        tx.execute(
            "UPDATE counters SET feed = $1, comment = $2, thread = $3",
            &[&big(n.feed), &big(n.comment), &big(n.thread)],
        )
        .await?;
        if n.feed > first_pos {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &n.feed.to_string()])
                .await?;
        }
        tx.commit().await?;
        Ok((n.feed > first_pos).then_some(n.feed))
    }
}

/// A job the transaction never reached, answered with why.
fn unanswered(job: Job, e: &StoreError) -> Done {
    let mut d = match job {
        Job::Write(_, r) => Done::Write(r, Box::new(Err(writer_stopped()))),
        Job::Suspend(_, r) => Done::Suspend(r, Err(writer_stopped())),
        Job::EraseStep(_, r) => Done::Erase(r, Err(writer_stopped())),
        Job::Bans(_, r) => Done::Bans(r, Err(writer_stopped())),
        Job::Import(_, r) => Done::Import(r, Err(writer_stopped())),
        Job::Remap(_, _, _, r) => Done::Remap(r, Err(writer_stopped())),
        Job::Titles(_, r) => Done::Titles(r, Err(writer_stopped())),
    };
    d.fail(e);
    d
}

/// One writing transaction: the counters it holds the lock of, and the writes.
struct Tx<'a, 'c> {
    tx: &'a Transaction<'c>,
    n: Counters,
}

/// How a job ended: written, refused (it undoes only itself), or failed with the database
/// (the transaction is lost).
enum Ended {
    Written,
    Refused,
    Failed(StoreError),
}

/// A job's answer and how it ended.
type Outcome = (Done, Ended);

fn outcome<T>(r: Result<T, StoreError>, f: impl FnOnce(Result<T, StoreError>) -> Done) -> Outcome {
    match r {
        Ok(v) => (f(Ok(v)), Ended::Written),
        Err(StoreError::Unavailable(m)) => (
            f(Err(StoreError::Unavailable(m.clone()))),
            Ended::Failed(StoreError::Unavailable(m)),
        ),
        Err(StoreError::Internal(m)) => (
            f(Err(StoreError::Internal(m.clone()))),
            Ended::Failed(StoreError::Internal(m)),
        ),
        Err(e) => (f(Err(e)), Ended::Refused),
    }
}

impl<'a, 'c> Tx<'a, 'c> {
    /// Locks the counters row: from here to commit, this transaction is the only writer.
    async fn begin(tx: &'a Transaction<'c>) -> Result<Tx<'a, 'c>, StoreError> {
        let r = tx
            .query_one("SELECT feed, comment, thread FROM counters FOR UPDATE", &[])
            .await?;
        Ok(Tx {
            tx,
            n: Counters {
                feed: small(r.get(0)),
                comment: small(r.get(1)),
                thread: small(r.get(2)),
            },
        })
    }

    async fn job(&mut self, job: Job) -> Outcome {
        match job {
            Job::Write(op, reply) => {
                outcome(self.apply(op).await, |r| Done::Write(reply, Box::new(r)))
            }
            Job::Suspend(s, reply) => outcome(
                self.set("suspension", encode(&SuspensionRecord::from(&s)))
                    .await
                    .map(|()| s),
                |r| Done::Suspend(reply, r),
            ),
            Job::Bans(b, reply) => outcome(
                self.set("bans", encode(&BansRecord::from(&b)))
                    .await
                    .map(|()| b),
                |r| Done::Bans(reply, r),
            ),
            Job::EraseStep(key, reply) => {
                outcome(self.erase_step(&key).await, |r| Done::Erase(reply, r))
            }
            Job::Import(comments, reply) => {
                outcome(self.import(comments).await, |r| Done::Import(reply, r))
            }
            Job::Remap(from, to, dry, reply) => {
                outcome(self.remap(from, to, dry).await, |r| Done::Remap(reply, r))
            }
            Job::Titles(titles, reply) => {
                outcome(self.set_titles(titles).await, |r| Done::Titles(reply, r))
            }
        }
    }

    async fn set(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        exec(
            self.tx,
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    async fn apply(&mut self, op: WriteOp) -> Result<WriteResult, StoreError> {
        match op {
            WriteOp::Append {
                thread,
                comment,
                idempotency,
            } => self.append(thread, comment, idempotency).await,
            WriteOp::Close { thread } => self.set_closed(thread, true).await,
            WriteOp::Reopen { thread } => self.set_closed(thread, false).await,
            WriteOp::Edit { id, text, html } => {
                self.update(id, ChangeKind::Edited, |c| {
                    if c.comment.status == Status::Deleted {
                        return Err(StoreError::Deleted(id));
                    }
                    c.comment.text = text;
                    c.comment.html = html;
                    c.comment.modified = Some(now());
                    Ok(0)
                })
                .await
            }
            WriteOp::Delete { id } => {
                self.update(id, ChangeKind::Deleted, |c| tombstone(id, c))
                    .await
            }
            WriteOp::Approve { id } => {
                self.update(id, ChangeKind::Approved, |c| {
                    if c.comment.status != Status::Pending {
                        return Err(StoreError::NotPending(id));
                    }
                    c.comment.status = Status::Approved;
                    Ok(1)
                })
                .await
            }
            WriteOp::Vote { id, voter, value } => {
                io360_common::rules::vote(value)?;
                let voted = opt(
                    self.tx,
                    "SELECT 1 FROM votes WHERE comment_id = $1 AND voter = $2",
                    &[&big(id), &voter],
                )
                .await?;
                if voted.is_some() {
                    return Err(StoreError::AlreadyVoted(id));
                }
                let r = self
                    .update(id, ChangeKind::Voted, |c| {
                        if c.comment.status != Status::Approved {
                            return Err(StoreError::NotVotable(id));
                        }
                        if value > 0 {
                            c.comment.votes.up += 1;
                        } else {
                            c.comment.votes.down += 1;
                        }
                        Ok(0)
                    })
                    .await?;
                exec(
                    self.tx,
                    "INSERT INTO votes (comment_id, voter, value) VALUES ($1, $2, $3)",
                    &[&big(id), &voter, &i16::from(value)],
                )
                .await?;
                Ok(r)
            }
        }
    }

    /// The thread's record, or a new one (not yet written) with the next thread id.
    async fn thread_or_new(&self, name: &str) -> Result<(ThreadRecord, bool), StoreError> {
        match thread_record(self.tx, name).await? {
            Some(r) => Ok((r, false)),
            None => Ok((
                ThreadRecord {
                    id: self.n.thread + 1,
                    ..ThreadRecord::default()
                },
                true,
            )),
        }
    }

    /// Writes the records common to every change and advances the counters.
    async fn record_change(
        &mut self,
        name: &str,
        rec: &mut ThreadRecord,
        created_thread: bool,
        kind: ChangeKind,
        comment: Option<&StoredComment>,
    ) -> Result<Change, StoreError> {
        let pos = self.n.feed + 1;
        rec.head += 1;
        let change = Change {
            pos,
            thread: name.to_owned(),
            seq: rec.head,
            kind,
            comment: comment.map(|c| c.comment.clone()),
        };
        let (id, head, count) = (big(rec.id), big(rec.head), big(rec.count));
        let thread = async {
            if created_thread {
                exec(
                    self.tx,
                    "INSERT INTO threads (id, name, head, count, closed) VALUES ($1, $2, $3, $4, $5)",
                    &[&id, &name, &head, &count, &rec.closed],
                )
                .await
            } else {
                exec(
                    self.tx,
                    "UPDATE threads SET head = $2, count = $3, closed = $4 WHERE id = $1",
                    &[&id, &head, &count, &rec.closed],
                )
                .await
            }
        };
        let comment_id = comment.map(|c| big(c.comment.id));
        let bytes = change_bytes(&change);
        // Both go out at once (pipelined on the connection), answered in one round trip.
        let at = big(pos);
        let feed = async {
            exec(
                self.tx,
                "INSERT INTO feed (pos, thread_id, seq, comment_id, change) VALUES ($1, $2, $3, $4, $5)",
                &[&at, &id, &head, &comment_id, &bytes],
            )
            .await
        };
        futures::try_join!(thread, feed)?;
        if created_thread {
            self.n.thread = rec.id;
        }
        self.n.feed = pos;
        Ok(change)
    }

    async fn bump_author(&self, key: &str) -> Result<(), StoreError> {
        exec(
            self.tx,
            "INSERT INTO authors (key, approved) VALUES ($1, 1) \
                 ON CONFLICT (key) DO UPDATE SET approved = authors.approved + 1",
            &[&key],
        )
        .await?;
        Ok(())
    }

    async fn insert_comment(&self, c: &StoredComment, thread_id: u64) -> Result<(), StoreError> {
        exec(
            self.tx,
            "INSERT INTO comments (id, thread_id, seq, parent_id, author_key, record) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &big(c.comment.id),
                &big(thread_id),
                &big(c.comment.seq),
                &c.comment.parent.map(big),
                &c.author_key,
                &comment_bytes(c),
            ],
        )
        .await?;
        Ok(())
    }

    async fn set_closed(
        &mut self,
        thread: String,
        closed: bool,
    ) -> Result<WriteResult, StoreError> {
        io360_common::rules::thread("thread", &thread)?;
        let (mut rec, created_thread) = self.thread_or_new(&thread).await?;
        rec.closed = closed;
        let kind = if closed {
            ChangeKind::Closed
        } else {
            ChangeKind::Reopened
        };
        let change = self
            .record_change(&thread, &mut rec, created_thread, kind, None)
            .await?;
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }

    async fn append(
        &mut self,
        thread: String,
        new: crate::api::NewComment,
        idempotency: Option<Box<Idempotency>>,
    ) -> Result<WriteResult, StoreError> {
        io360_common::rules::thread("thread", &thread)?;
        let (mut rec, created_thread) = self.thread_or_new(&thread).await?;
        let at = now_unix();
        if let Some(i) = &idempotency
            && !created_thread
            && let Some(r) = opt(
                self.tx,
                "SELECT pos, fingerprint, at FROM idempotency WHERE thread_id = $1 AND key = $2",
                &[&big(rec.id), &i.key],
            )
            .await?
        {
            let record = IdemRecord {
                pos: small(r.get(0)),
                fingerprint: r.get(1),
                at: r.get(2),
            };
            match record.replay(&i.fingerprint, at) {
                Replay::Fresh => {}
                Replay::Conflict => return Err(StoreError::IdempotencyKeyReused),
                Replay::Of(pos) => {
                    let row = opt(
                        self.tx,
                        "SELECT change FROM feed WHERE pos = $1",
                        &[&big(pos)],
                    )
                    .await?
                    .ok_or_else(|| {
                        StoreError::Internal(format!(
                            "the idempotency record of position {pos} has no change"
                        ))
                    })?;
                    return Ok(WriteResult {
                        change: read_change(row.get(0))?,
                        replayed: true,
                    });
                }
            }
        }
        if rec.closed {
            return Err(StoreError::ThreadClosed);
        }
        if let Some(parent) = new.parent {
            match comment(self.tx, parent).await? {
                Some(p) if p.comment.thread == thread => {}
                _ => {
                    return Err(StoreError::invalid(
                        "parent",
                        format!("must be a comment of this thread; {parent} is not"),
                    ));
                }
            }
        }
        let id = self.n.comment + 1;
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
        let change = self
            .record_change(
                &thread,
                &mut rec,
                created_thread,
                ChangeKind::Created,
                Some(&stored),
            )
            .await?;
        let idem = async {
            match &idempotency {
                Some(i) => exec(
                    self.tx,
                    "INSERT INTO idempotency (thread_id, key, pos, fingerprint, at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (thread_id, key) DO UPDATE SET pos = excluded.pos, fingerprint = excluded.fingerprint, at = excluded.at",
                    &[&big(rec.id), &i.key, &big(change.pos), &i.fingerprint, &at],
                )
                .await
                .map(drop),
                None => Ok(()),
            }
        };
        let pending = async {
            if status == Status::Pending {
                exec(
                    self.tx,
                    "INSERT INTO pending (comment_id) VALUES ($1)",
                    &[&big(id)],
                )
                .await
                .map(drop)
            } else {
                Ok(())
            }
        };
        let author = async {
            match &stored.author_key {
                Some(key) if status == Status::Approved => self.bump_author(key).await,
                _ => Ok(()),
            }
        };
        // Independent writes, pipelined.
        futures::try_join!(self.insert_comment(&stored, rec.id), idem, pending, author)?;
        self.n.comment = id;
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }

    /// Applies `f` to a comment as a new change of its thread. `f` returns how the thread's
    /// visible count changes.
    async fn update(
        &mut self,
        id: u64,
        kind: ChangeKind,
        f: impl FnOnce(&mut StoredComment) -> Result<i64, StoreError>,
    ) -> Result<WriteResult, StoreError> {
        let mut stored = comment(self.tx, id)
            .await?
            .ok_or(StoreError::NoComment(id))?;
        let thread = stored.comment.thread.clone();
        let mut rec = thread_record(self.tx, &thread)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("comment {id} has no thread record")))?;
        let was_pending = stored.comment.status == Status::Pending;
        let delta = f(&mut stored)?;
        rec.count = rec.count.saturating_add_signed(delta);
        stored.comment.seq = rec.head + 1;
        let change = self
            .record_change(&thread, &mut rec, false, kind, Some(&stored))
            .await?;
        exec(
            self.tx,
            "UPDATE comments SET seq = $2, author_key = $3, record = $4 WHERE id = $1",
            &[
                &big(id),
                &big(stored.comment.seq),
                &stored.author_key,
                &comment_bytes(&stored),
            ],
        )
        .await?;
        if was_pending && stored.comment.status != Status::Pending {
            exec(
                self.tx,
                "DELETE FROM pending WHERE comment_id = $1",
                &[&big(id)],
            )
            .await?;
        }
        if kind == ChangeKind::Approved
            && let Some(key) = &stored.author_key
        {
            self.bump_author(key).await?;
        }
        Ok(WriteResult {
            change,
            replayed: false,
        })
    }

    /// Deletes (or, if deleted already, forgets the author of) a few of the author's
    /// comments and scrubs the feed's copies of them. Answers the deletions, and whether none
    /// was left (then the author's approved count is forgotten too).
    async fn erase_step(&mut self, key: &str) -> Result<(Vec<Change>, bool), StoreError> {
        let rows = all(
            self.tx,
            "SELECT id FROM comments WHERE author_key = $1 ORDER BY id LIMIT $2",
            &[&key, &ERASE_STEP],
        )
        .await?;
        if rows.is_empty() {
            exec(self.tx, "DELETE FROM authors WHERE key = $1", &[&key]).await?;
            return Ok((Vec::new(), true));
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut changes = Vec::new();
        for &id in &ids {
            let id = small(id);
            let Some(mut c) = comment(self.tx, id).await? else {
                continue;
            };
            if c.comment.status != Status::Deleted {
                let r = self
                    .update(id, ChangeKind::Deleted, |c| {
                        c.author_key = None;
                        tombstone(id, c)
                    })
                    .await?;
                changes.push(r.change);
            } else {
                c.author_key = None;
                exec(
                    self.tx,
                    "UPDATE comments SET author_key = NULL, record = $2 WHERE id = $1",
                    &[&big(id), &comment_bytes(&c)],
                )
                .await?;
            }
        }
        let copies = all(
            self.tx,
            "SELECT pos, change FROM feed WHERE comment_id = ANY($1)",
            &[&ids],
        )
        .await?;
        for row in copies {
            let pos: i64 = row.get(0);
            let mut ch = read_change(row.get(1))?;
            if let Some(c) = &mut ch.comment
                && c.has_content()
            {
                c.scrub();
                exec(
                    self.tx,
                    "UPDATE feed SET change = $2 WHERE pos = $1",
                    &[&pos, &change_bytes(&ch)],
                )
                .await?;
            }
        }
        Ok((changes, false))
    }

    async fn import(&mut self, comments: Vec<ImportedComment>) -> Result<Imported, StoreError> {
        let mut out = Imported::default();
        for c in comments {
            let known = opt(
                self.tx,
                "SELECT 1 FROM sources WHERE source = $1",
                &[&c.source],
            )
            .await?;
            if known.is_some() {
                out.skipped += 1;
                continue;
            }
            io360_common::rules::thread("thread", &c.thread)?;
            let (mut rec, created_thread) = self.thread_or_new(&c.thread).await?;
            let parent = match &c.parent_source {
                None => None,
                Some(p) => {
                    let found = match opt(
                        self.tx,
                        "SELECT comment_id FROM sources WHERE source = $1",
                        &[p],
                    )
                    .await?
                    {
                        Some(r) => comment(self.tx, small(r.get(0)))
                            .await?
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
            let id = self.n.comment + 1;
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
            self.record_change(
                &c.thread,
                &mut rec,
                created_thread,
                ChangeKind::Created,
                Some(&stored),
            )
            .await?;
            self.insert_comment(&stored, rec.id).await?;
            exec(
                self.tx,
                "INSERT INTO sources (source, comment_id) VALUES ($1, $2)",
                &[&c.source, &big(id)],
            )
            .await?;
            if c.status == Status::Pending {
                exec(
                    self.tx,
                    "INSERT INTO pending (comment_id) VALUES ($1)",
                    &[&big(id)],
                )
                .await?;
            }
            if c.status == Status::Approved
                && let Some(key) = &stored.author_key
            {
                self.bump_author(key).await?;
            }
            self.n.comment = id;
            out.created += 1;
        }
        Ok(out)
    }

    async fn set_titles(&mut self, titles: Vec<ThreadTitle>) -> Result<TitlesSet, StoreError> {
        let mut out = TitlesSet::default();
        let mut seen = BTreeSet::new();
        // The last title given for a thread wins, as on fjall.
        for t in titles.iter().rev() {
            if !seen.insert(t.thread.as_str()) {
                continue;
            }
            out.changed += exec(
                self.tx,
                "INSERT INTO titles (thread, title) VALUES ($1, $2) ON CONFLICT (thread) \
                 DO UPDATE SET title = excluded.title WHERE titles.title <> excluded.title",
                &[&t.thread, &t.title],
            )
            .await?;
        }
        Ok(out)
    }

    async fn remap(
        &mut self,
        from: String,
        to: String,
        dry_run: bool,
    ) -> Result<Vec<Renamed>, StoreError> {
        if from.is_empty() {
            return Err(StoreError::invalid(
                "from",
                "must not be empty (it would rename every thread)",
            ));
        }
        let rows = all(
            self.tx,
            "SELECT t.id, t.name, (SELECT count(*) FROM comments c WHERE c.thread_id = t.id) \
                 FROM threads t WHERE starts_with(t.name, $1) ORDER BY t.name COLLATE \"C\"",
            &[&from],
        )
        .await?;
        let mut plan = Vec::new();
        for r in rows {
            let (id, name): (i64, String) = (r.get(0), r.get(1));
            let new = format!("{to}{}", &name[from.len()..]);
            io360_common::rules::thread("to", &new)?;
            plan.push((Some(id), name, new, small(r.get(2))));
        }
        // Titles move with their threads; a page with a title and no comments moves too.
        let rows = all(
            self.tx,
            "SELECT ti.thread, ti.title, EXISTS (SELECT 1 FROM threads t WHERE t.name = ti.thread) \
                 FROM titles ti WHERE starts_with(ti.thread, $1)",
            &[&from],
        )
        .await?;
        let mut titles = Vec::new();
        for r in rows {
            let (name, title, thread): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
            let new = format!("{to}{}", &name[from.len()..]);
            io360_common::rules::thread("to", &new)?;
            if !thread {
                plan.push((None, name.clone(), new.clone(), 0));
            }
            titles.push((name, new, title));
        }
        plan.sort_by(|a, b| a.1.cmp(&b.1));
        let moving: BTreeSet<&str> = plan.iter().map(|(_, n, ..)| n.as_str()).collect();
        for (_, name, new, _) in &plan {
            if !moving.contains(new.as_str()) && thread_record(self.tx, new).await?.is_some() {
                return Err(StoreError::invalid(
                    "to",
                    format!("{name} would become {new}, which is a thread already"),
                ));
            }
        }
        let answer: Vec<Renamed> = plan
            .iter()
            .map(|(_, from, to, comments)| Renamed {
                from: from.clone(),
                to: to.clone(),
                comments: *comments,
                title: titles
                    .iter()
                    .find(|(n, ..)| n == from)
                    .map(|(.., title)| title.clone()),
            })
            .collect();
        if dry_run {
            return Ok(answer);
        }
        exec(
            self.tx,
            "DELETE FROM titles WHERE starts_with(thread, $1)",
            &[&from],
        )
        .await?;
        for (_, new, title) in &titles {
            exec(
                self.tx,
                "INSERT INTO titles (thread, title) VALUES ($1, $2) \
                 ON CONFLICT (thread) DO UPDATE SET title = excluded.title",
                &[new, title],
            )
            .await?;
        }
        let plan: Vec<(i64, String, String, u64)> = plan
            .into_iter()
            .filter_map(|(id, name, new, n)| id.map(|id| (id, name, new, n)))
            .collect();
        // Names are unique: every moving thread steps aside first, so `/a` may become `/b`
        // while `/b` becomes `/c`.
        for (id, ..) in &plan {
            exec(
                self.tx,
                "UPDATE threads SET name = $2 WHERE id = $1",
                &[id, &format!("\u{1}remap {id}")],
            )
            .await?;
        }
        for (id, _, new, _) in &plan {
            exec(
                self.tx,
                "UPDATE threads SET name = $2 WHERE id = $1",
                &[id, new],
            )
            .await?;
            let rows = all(
                self.tx,
                "SELECT id, record FROM comments WHERE thread_id = $1",
                &[id],
            )
            .await?;
            for r in rows {
                let mut c = read_comment(r.get(1))?;
                c.comment.thread = new.clone();
                let cid: i64 = r.get(0);
                exec(
                    self.tx,
                    "UPDATE comments SET record = $2 WHERE id = $1",
                    &[&cid, &comment_bytes(&c)],
                )
                .await?;
            }
            let rows = all(
                self.tx,
                "SELECT pos, change FROM feed WHERE thread_id = $1",
                &[id],
            )
            .await?;
            for r in rows {
                let mut ch = read_change(r.get(1))?;
                ch.thread = new.clone();
                if let Some(c) = &mut ch.comment {
                    c.thread = new.clone();
                }
                let pos: i64 = r.get(0);
                exec(
                    self.tx,
                    "UPDATE feed SET change = $2 WHERE pos = $1",
                    &[&pos, &change_bytes(&ch)],
                )
                .await?;
            }
        }
        Ok(answer)
    }
}
