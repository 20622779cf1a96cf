//! The PostgreSQL side of moving a store between engines ([`crate::transfer`]): every row read
//! from one snapshot, rows written into an empty database in one transaction that holds the
//! counters' lock, and the census of what a database holds.

use deadpool_postgres::GenericClient;
use futures::TryStreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{PgDb, big, small};
use crate::error::StoreError;
use crate::record::{IdemRecord, ThreadRecord};
use crate::transfer::{BATCH, Census, FillError, Item, ThreadCensus};

/// Whether nothing has been written to the database the client is connected to.
async fn empty(c: &impl GenericClient) -> Result<bool, StoreError> {
    let r = c
        .query_one(
            "SELECT feed = 0 AND comment = 0 AND thread = 0 \
               AND NOT EXISTS (SELECT 1 FROM threads) AND NOT EXISTS (SELECT 1 FROM feed) \
               AND NOT EXISTS (SELECT 1 FROM comments) AND NOT EXISTS (SELECT 1 FROM idempotency) \
               AND NOT EXISTS (SELECT 1 FROM votes) AND NOT EXISTS (SELECT 1 FROM pending) \
               AND NOT EXISTS (SELECT 1 FROM authors) AND NOT EXISTS (SELECT 1 FROM sources) \
               AND NOT EXISTS (SELECT 1 FROM settings) FROM counters",
            &[],
        )
        .await?;
    Ok(r.get(0))
}

/// Counts what the database holds, from its own tables.
async fn census(c: &impl GenericClient) -> Result<Census, StoreError> {
    let mut out = Census::default();
    let rows = c
        .query(
            "SELECT t.name, t.id, t.head, t.count, t.closed, \
                    (SELECT count(*) FROM comments c WHERE c.thread_id = t.id), \
                    (SELECT coalesce(max(f.seq), 0) FROM feed f WHERE f.thread_id = t.id) \
               FROM threads t",
            &[],
        )
        .await?;
    for r in rows {
        out.threads.insert(
            r.get(0),
            ThreadCensus {
                id: small(r.get(1)),
                head: small(r.get(2)),
                approved: small(r.get(3)),
                closed: r.get(4),
                comments: small(r.get(5)),
                max_seq: small(r.get(6)),
            },
        );
    }
    let r = c
        .query_one(
            "SELECT n.feed, n.comment, n.thread, (SELECT count(*) FROM feed), \
                    (SELECT count(*) FROM comments), (SELECT count(*) FROM idempotency), \
                    (SELECT count(*) FROM votes), (SELECT count(*) FROM pending), \
                    (SELECT count(*) FROM authors), (SELECT count(*) FROM sources), \
                    (SELECT count(*) FROM settings) FROM counters n",
            &[],
        )
        .await?;
    let n = |i: usize| small(r.get(i));
    out.feed_position = n(0);
    out.last_comment_id = n(1);
    out.last_thread_id = n(2);
    out.changes = n(3);
    out.comments = n(4);
    out.idempotency_keys = n(5);
    out.votes = n(6);
    out.pending = n(7);
    out.authors = n(8);
    out.sources = n(9);
    out.settings = n(10);
    Ok(out)
}

/// Runs `sql` once per row of `rows`, streamed, turning each into an item.
async fn each(
    c: &impl GenericClient,
    sql: &str,
    out: &mut Sender,
    f: impl Fn(&tokio_postgres::Row) -> Result<Item, StoreError>,
) -> Result<(), StoreError> {
    let none: [&(dyn ToSql + Sync); 0] = [];
    let rows = c.query_raw(sql, none).await?;
    futures::pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        out.push(f(&r)?).await?;
    }
    Ok(())
}

/// Sends items a batch at a time.
struct Sender {
    tx: mpsc::Sender<Vec<Item>>,
    batch: Vec<Item>,
}

impl Sender {
    async fn push(&mut self, item: Item) -> Result<(), StoreError> {
        self.batch.push(item);
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(std::mem::take(&mut self.batch))
            .await
            // The writer says why it stopped.
            .map_err(|_| StoreError::Stopping)
    }
}

impl PgDb {
    /// Whether nothing has been written to the database.
    pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
        let c = self.client().await?;
        empty(&c).await
    }

    /// Sends every row to `tx`, a batch at a time, from one snapshot: threads first, then the
    /// feed, the comments and the rest, the counters last.
    pub(crate) async fn dump(&self, tx: mpsc::Sender<Vec<Item>>) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let t = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut out = Sender {
            tx,
            batch: Vec::with_capacity(BATCH),
        };
        each(
            &t,
            "SELECT name, id, head, count, closed FROM threads ORDER BY id",
            &mut out,
            |r| {
                Ok(Item::Thread {
                    name: r.get(0),
                    rec: ThreadRecord {
                        id: small(r.get(1)),
                        head: small(r.get(2)),
                        count: small(r.get(3)),
                        closed: r.get(4),
                    },
                })
            },
        )
        .await?;
        each(
            &t,
            "SELECT pos, thread_id, seq, comment_id, change FROM feed ORDER BY pos",
            &mut out,
            |r| {
                Ok(Item::Change {
                    pos: small(r.get(0)),
                    thread_id: small(r.get(1)),
                    seq: small(r.get(2)),
                    comment_id: r.get::<_, Option<i64>>(3).map(small),
                    bytes: r.get(4),
                })
            },
        )
        .await?;
        each(
            &t,
            "SELECT id, thread_id, seq, parent_id, author_key, record FROM comments ORDER BY id",
            &mut out,
            |r| {
                Ok(Item::Comment {
                    id: small(r.get(0)),
                    thread_id: small(r.get(1)),
                    seq: small(r.get(2)),
                    parent: r.get::<_, Option<i64>>(3).map(small),
                    author_key: r.get(4),
                    bytes: r.get(5),
                })
            },
        )
        .await?;
        each(
            &t,
            "SELECT thread_id, key, pos, fingerprint, at FROM idempotency",
            &mut out,
            |r| {
                Ok(Item::Idempotency {
                    thread_id: small(r.get(0)),
                    key: r.get(1),
                    record: IdemRecord {
                        pos: small(r.get(2)),
                        fingerprint: r.get(3),
                        at: r.get(4),
                    },
                })
            },
        )
        .await?;
        each(
            &t,
            "SELECT comment_id, voter, value FROM votes",
            &mut out,
            |r| {
                Ok(Item::Vote {
                    comment_id: small(r.get(0)),
                    voter: r.get(1),
                    value: i8::try_from(r.get::<_, i16>(2)).unwrap_or(0),
                })
            },
        )
        .await?;
        each(&t, "SELECT comment_id FROM pending", &mut out, |r| {
            Ok(Item::Pending(small(r.get(0))))
        })
        .await?;
        each(&t, "SELECT key, approved FROM authors", &mut out, |r| {
            Ok(Item::Author {
                key: r.get(0),
                approved: small(r.get(1)),
            })
        })
        .await?;
        each(
            &t,
            "SELECT source, comment_id FROM sources",
            &mut out,
            |r| {
                Ok(Item::Source {
                    source: r.get(0),
                    comment_id: small(r.get(1)),
                })
            },
        )
        .await?;
        each(&t, "SELECT name, value FROM settings", &mut out, |r| {
            Ok(Item::Setting {
                name: r.get(0),
                bytes: r.get(1),
            })
        })
        .await?;
        each(
            &t,
            "SELECT feed, comment, thread FROM counters",
            &mut out,
            |r| {
                Ok(Item::Counters {
                    feed: small(r.get(0)),
                    comment: small(r.get(1)),
                    thread: small(r.get(2)),
                })
            },
        )
        .await?;
        out.flush().await?;
        t.commit().await?;
        Ok(())
    }

    /// Writes the items from `rx` into the empty database in one transaction that holds the
    /// counters' lock, then compares the database's census with the one `read` brings (sent
    /// once the source was read whole) and commits only if they agree.
    pub(crate) async fn fill(
        &self,
        mut rx: mpsc::Receiver<Vec<Item>>,
        read: oneshot::Receiver<Census>,
    ) -> Result<(), FillError> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(StoreError::from)?;
        // Reading a large directory may leave the transaction idle for a while between
        // batches; the store's usual limit is for writers stuck mid-transaction.
        tx.batch_execute(
            "SET LOCAL idle_in_transaction_session_timeout = '10min'; \
             SELECT 1 FROM counters FOR UPDATE",
        )
        .await
        .map_err(StoreError::from)?;
        if !empty(&tx).await? {
            return Err(FillError::NotEmpty);
        }
        while let Some(batch) = rx.recv().await {
            insert(&tx, batch).await?;
        }
        let Ok(read) = read.await else {
            // The source could not be read whole: the transaction rolls back.
            return Err(FillError::Store(StoreError::Internal(
                "the source was not read whole; nothing was written".into(),
            )));
        };
        let written = census(&tx).await?;
        if let Some(d) = read.difference(&written) {
            return Err(FillError::Mismatch(d));
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// One batch's threads, a vector per column, for `unnest`.
#[derive(Default)]
struct ThreadRows {
    id: Vec<i64>,
    name: Vec<String>,
    head: Vec<i64>,
    count: Vec<i64>,
    closed: Vec<bool>,
}

/// One batch's changes, a vector per column.
#[derive(Default)]
struct FeedRows {
    pos: Vec<i64>,
    thread_id: Vec<i64>,
    seq: Vec<i64>,
    comment_id: Vec<Option<i64>>,
    change: Vec<Vec<u8>>,
}

/// One batch's comments, a vector per column.
#[derive(Default)]
struct CommentRows {
    id: Vec<i64>,
    thread_id: Vec<i64>,
    seq: Vec<i64>,
    parent_id: Vec<Option<i64>>,
    author_key: Vec<Option<String>>,
    record: Vec<Vec<u8>>,
}

/// One batch's idempotency keys, a vector per column.
#[derive(Default)]
struct IdemRows {
    thread_id: Vec<i64>,
    key: Vec<String>,
    pos: Vec<i64>,
    fingerprint: Vec<String>,
    at: Vec<i64>,
}

/// Inserts one batch, a statement per table (arrays unnested into rows).
async fn insert(c: &impl GenericClient, items: Vec<Item>) -> Result<(), StoreError> {
    let mut threads = ThreadRows::default();
    let mut feed = FeedRows::default();
    let mut comments = CommentRows::default();
    let mut idem = IdemRows::default();
    let mut votes: (Vec<i64>, Vec<String>, Vec<i16>) = Default::default();
    let mut pending: Vec<i64> = Vec::new();
    let mut authors: (Vec<String>, Vec<i64>) = Default::default();
    let mut sources: (Vec<String>, Vec<i64>) = Default::default();
    for item in items {
        match item {
            Item::Thread { name, rec } => {
                threads.id.push(big(rec.id));
                threads.name.push(name);
                threads.head.push(big(rec.head));
                threads.count.push(big(rec.count));
                threads.closed.push(rec.closed);
            }
            Item::Change {
                pos,
                thread_id,
                seq,
                comment_id,
                bytes,
            } => {
                feed.pos.push(big(pos));
                feed.thread_id.push(big(thread_id));
                feed.seq.push(big(seq));
                feed.comment_id.push(comment_id.map(big));
                feed.change.push(bytes);
            }
            Item::Comment {
                id,
                thread_id,
                seq,
                parent,
                author_key,
                bytes,
            } => {
                comments.id.push(big(id));
                comments.thread_id.push(big(thread_id));
                comments.seq.push(big(seq));
                comments.parent_id.push(parent.map(big));
                comments.author_key.push(author_key);
                comments.record.push(bytes);
            }
            Item::Idempotency {
                thread_id,
                key,
                record,
            } => {
                idem.thread_id.push(big(thread_id));
                idem.key.push(key);
                idem.pos.push(big(record.pos));
                idem.fingerprint.push(record.fingerprint);
                idem.at.push(record.at);
            }
            Item::Vote {
                comment_id,
                voter,
                value,
            } => {
                votes.0.push(big(comment_id));
                votes.1.push(voter);
                votes.2.push(i16::from(value));
            }
            Item::Pending(id) => pending.push(big(id)),
            Item::Author { key, approved } => {
                authors.0.push(key);
                authors.1.push(big(approved));
            }
            Item::Source { source, comment_id } => {
                sources.0.push(source);
                sources.1.push(big(comment_id));
            }
            Item::Setting { name, bytes } => {
                c.execute(
                    "INSERT INTO settings (name, value) VALUES ($1, $2)",
                    &[&name, &bytes],
                )
                .await?;
            }
            Item::Counters {
                feed,
                comment,
                thread,
            } => {
                c.execute(
                    "UPDATE counters SET feed = $1, comment = $2, thread = $3",
                    &[&big(feed), &big(comment), &big(thread)],
                )
                .await?;
            }
        }
    }
    if !threads.id.is_empty() {
        c.execute(
            "INSERT INTO threads (id, name, head, count, closed) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[])",
            &[
                &threads.id,
                &threads.name,
                &threads.head,
                &threads.count,
                &threads.closed,
            ],
        )
        .await?;
    }
    if !feed.pos.is_empty() {
        c.execute(
            "INSERT INTO feed (pos, thread_id, seq, comment_id, change) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])",
            &[
                &feed.pos,
                &feed.thread_id,
                &feed.seq,
                &feed.comment_id,
                &feed.change,
            ],
        )
        .await?;
    }
    if !comments.id.is_empty() {
        c.execute(
            "INSERT INTO comments (id, thread_id, seq, parent_id, author_key, record) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bytea[])",
            &[
                &comments.id,
                &comments.thread_id,
                &comments.seq,
                &comments.parent_id,
                &comments.author_key,
                &comments.record,
            ],
        )
        .await?;
    }
    if !idem.key.is_empty() {
        c.execute(
            "INSERT INTO idempotency (thread_id, key, pos, fingerprint, at) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])",
            &[
                &idem.thread_id,
                &idem.key,
                &idem.pos,
                &idem.fingerprint,
                &idem.at,
            ],
        )
        .await?;
    }
    if !votes.0.is_empty() {
        c.execute(
            "INSERT INTO votes (comment_id, voter, value) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[])",
            &[&votes.0, &votes.1, &votes.2],
        )
        .await?;
    }
    if !pending.is_empty() {
        c.execute(
            "INSERT INTO pending (comment_id) SELECT * FROM unnest($1::bigint[])",
            &[&pending],
        )
        .await?;
    }
    if !authors.0.is_empty() {
        c.execute(
            "INSERT INTO authors (key, approved) SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&authors.0, &authors.1],
        )
        .await?;
    }
    if !sources.0.is_empty() {
        c.execute(
            "INSERT INTO sources (source, comment_id) SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&sources.0, &sources.1],
        )
        .await?;
    }
    Ok(())
}
