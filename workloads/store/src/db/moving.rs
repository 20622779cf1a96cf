//! The fjall side of moving a store between engines ([`crate::transfer`]): every record read
//! from one snapshot, records written straight into the keyspaces of a fresh directory (not
//! through the writer: nothing is renumbered), and the census of what a directory holds.

use std::collections::HashMap;

use fjall::{PersistMode, Readable};

use super::{Db, read_change, read_comment};
use crate::error::StoreError;
use crate::keys::{id_bytes, read_u64, thread_seq, u64_key};
use crate::record::{IdemRecord, ThreadRecord, decode, encode};
use crate::transfer::{Batches, Census, Item, ThreadCensus};

/// The `meta` entries a move carries: the rest (counters, the format version) follow from
/// what is written.
const SETTINGS: [&str; 2] = ["suspension", "bans"];

fn text(what: &str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Internal(format!("a {what} is not UTF-8: {bytes:?}")))
}

impl Db {
    /// Hands every record to `out`, a batch at a time, from one snapshot: threads first,
    /// then the feed, the comments and the rest, the counters last. Blocking.
    pub(crate) fn dump_blocking(
        &self,
        out: &mut dyn FnMut(Vec<Item>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let t = &self.tables;
        let s = t.db.snapshot();
        let mut b = Batches::new(out);
        let mut ids: HashMap<String, u64> = HashMap::new();
        for kv in s.iter(&t.threads) {
            let (k, v) = kv.into_inner()?;
            let name = text("thread name", &k)?;
            let rec: ThreadRecord = decode("thread", &v)?;
            ids.insert(name.clone(), rec.id);
            b.push(Item::Thread { name, rec })?;
        }
        let thread_id = |name: &str, what: String| {
            ids.get(name).copied().ok_or_else(|| {
                StoreError::Internal(format!("{what} names thread {name:?}, which has no record"))
            })
        };
        for kv in s.iter(&t.feed) {
            let (k, v) = kv.into_inner()?;
            let pos = read_u64(&k);
            let ch = read_change(&v)?;
            b.push(Item::Change {
                pos,
                thread_id: thread_id(&ch.thread, format!("the change at position {pos}"))?,
                seq: ch.seq,
                comment_id: ch.comment.as_ref().map(|c| c.id),
                bytes: v.to_vec(),
            })?;
        }
        for kv in s.iter(&t.comments) {
            let (_, v) = kv.into_inner()?;
            let c = read_comment(&v)?;
            b.push(Item::Comment {
                id: c.comment.id,
                thread_id: thread_id(&c.comment.thread, format!("comment {}", c.comment.id))?,
                seq: c.comment.seq,
                parent: c.comment.parent,
                author_key: c.author_key,
                bytes: v.to_vec(),
            })?;
        }
        for kv in s.iter(&t.idem) {
            let (k, v) = kv.into_inner()?;
            b.push(Item::Idempotency {
                thread_id: read_u64(&k[..8.min(k.len())]),
                key: text("idempotency key", k.get(8..).unwrap_or_default())?,
                record: IdemRecord::parse(&v),
            })?;
        }
        for kv in s.iter(&t.votes) {
            let (k, v) = kv.into_inner()?;
            b.push(Item::Vote {
                comment_id: read_u64(&k[..8.min(k.len())]),
                voter: text("voter", k.get(8..).unwrap_or_default())?,
                value: v.first().map(|b| *b as i8).unwrap_or(0),
            })?;
        }
        for kv in s.iter(&t.pending) {
            b.push(Item::Pending(read_u64(&kv.key()?)))?;
        }
        for kv in s.iter(&t.authors) {
            let (k, v) = kv.into_inner()?;
            b.push(Item::Author {
                key: text("author key", &k)?,
                approved: read_u64(&v),
            })?;
        }
        for kv in s.iter(&t.sources) {
            let (k, v) = kv.into_inner()?;
            b.push(Item::Source {
                source: text("source id", &k)?,
                comment_id: read_u64(&v),
            })?;
        }
        for name in SETTINGS {
            if let Some(v) = s.get(&t.meta, name)? {
                b.push(Item::Setting {
                    name: name.to_owned(),
                    bytes: v.to_vec(),
                })?;
            }
        }
        let last = |k: &fjall::Keyspace| -> Result<u64, StoreError> {
            Ok(match s.last_key_value(k) {
                Some(g) => read_u64(&g.key()?),
                None => 0,
            })
        };
        let thread = match s.get(&t.meta, "next_thread_id")? {
            Some(v) => read_u64(&v).saturating_sub(1),
            None => 0,
        };
        b.push(Item::Counters {
            feed: last(&t.feed)?,
            comment: last(&t.comments)?,
            thread,
        })?;
        b.finish()
    }

    /// Whether the directory holds nothing a store wrote (a fresh one). Blocking.
    pub(crate) fn is_empty_blocking(&self) -> Result<bool, StoreError> {
        let t = &self.tables;
        let data = [
            &t.threads,
            &t.log,
            &t.feed,
            &t.latest,
            &t.comments,
            &t.idem,
            &t.votes,
            &t.pending,
            &t.authors,
            &t.sources,
            &t.source_of,
        ];
        for ks in data {
            if ks.first_key_value().is_some() {
                return Ok(false);
            }
        }
        for name in SETTINGS.iter().chain(&["next_thread_id"]) {
            if t.meta.contains_key(name)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes moved records as they are, with the index entries each implies, in one batch.
    /// Into a fresh directory only; the counters follow from the keys when it is next opened.
    /// Blocking.
    pub(crate) fn fill_blocking(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let t = &self.tables;
        let mut batch = t.db.batch();
        for item in items {
            match item {
                Item::Thread { name, rec } => {
                    batch.insert(&t.threads, name.as_bytes(), encode(&rec));
                }
                Item::Change {
                    pos,
                    thread_id,
                    seq,
                    bytes,
                    ..
                } => {
                    batch.insert(&t.feed, u64_key(pos), bytes);
                    batch.insert(&t.log, thread_seq(thread_id, seq), u64_key(pos));
                }
                Item::Comment {
                    id,
                    thread_id,
                    seq,
                    bytes,
                    ..
                } => {
                    batch.insert(&t.comments, u64_key(id), bytes);
                    batch.insert(&t.latest, thread_seq(thread_id, seq), u64_key(id));
                }
                Item::Idempotency {
                    thread_id,
                    key,
                    record,
                } => {
                    batch.insert(
                        &t.idem,
                        id_bytes(thread_id, key.as_bytes()),
                        encode(&record),
                    );
                }
                Item::Vote {
                    comment_id,
                    voter,
                    value,
                } => {
                    batch.insert(
                        &t.votes,
                        id_bytes(comment_id, voter.as_bytes()),
                        [value as u8],
                    );
                }
                Item::Pending(id) => batch.insert(&t.pending, u64_key(id), []),
                Item::Author { key, approved } => {
                    batch.insert(&t.authors, key.as_bytes(), u64_key(approved));
                }
                Item::Source { source, comment_id } => {
                    batch.insert(&t.sources, source.as_bytes(), u64_key(comment_id));
                    batch.insert(&t.source_of, u64_key(comment_id), source.as_bytes());
                }
                Item::Setting { name, bytes } => batch.insert(&t.meta, name.as_bytes(), bytes),
                Item::Counters { thread, .. } => {
                    if thread > 0 {
                        batch.insert(&t.meta, "next_thread_id", u64_key(thread + 1));
                    }
                }
            }
        }
        batch.durability(None).commit()?;
        Ok(())
    }

    /// Makes what [`Db::fill_blocking`] wrote durable. Blocking.
    pub(crate) fn finish_fill_blocking(&self) -> Result<(), StoreError> {
        self.tables.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Counts what the directory holds, from its own keyspaces. Blocking.
    pub(crate) fn census_blocking(&self) -> Result<Census, StoreError> {
        let t = &self.tables;
        let mut c = Census::default();
        for kv in t.threads.iter() {
            let (k, v) = kv.into_inner()?;
            let rec: ThreadRecord = decode("thread", &v)?;
            let (lo, hi) = (thread_seq(rec.id, 0), thread_seq(rec.id, u64::MAX));
            let comments = t.latest.range(lo..=hi).count() as u64;
            let max_seq = match t.log.range(lo..=hi).next_back() {
                Some(kv) => read_u64(kv.key()?.get(8..).unwrap_or_default()),
                None => 0,
            };
            c.threads.insert(
                text("thread name", &k)?,
                ThreadCensus {
                    id: rec.id,
                    head: rec.head,
                    max_seq,
                    approved: rec.count,
                    comments,
                    closed: rec.closed,
                },
            );
        }
        let last = |k: &fjall::Keyspace| -> Result<u64, StoreError> {
            Ok(match k.last_key_value() {
                Some(g) => read_u64(&g.key()?),
                None => 0,
            })
        };
        c.feed_position = last(&t.feed)?;
        c.last_comment_id = last(&t.comments)?;
        c.last_thread_id = match t.meta.get("next_thread_id")? {
            Some(v) => read_u64(&v).saturating_sub(1),
            None => 0,
        };
        c.changes = t.feed.iter().count() as u64;
        c.comments = t.comments.iter().count() as u64;
        c.idempotency_keys = t.idem.iter().count() as u64;
        c.votes = t.votes.iter().count() as u64;
        c.pending = t.pending.iter().count() as u64;
        c.authors = t.authors.iter().count() as u64;
        c.sources = t.sources.iter().count() as u64;
        for name in SETTINGS {
            if t.meta.contains_key(name)? {
                c.settings += 1;
            }
        }
        Ok(c)
    }
}
