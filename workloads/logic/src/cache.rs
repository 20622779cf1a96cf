//! Popular threads served from memory.
//!
//! A thread is cached whole (every comment, in sequence order) the first time it is read,
//! whatever its length. A change reported by the store's change feed (or made through this
//! replica) marks it stale; the next read asks the store only for the comments changed since
//! the cached head and merges them in, so a long, busy thread costs one small read per change,
//! not a reload. A write through this replica marks it at once, so its author reads their own
//! write; other replicas follow within the feed's latency. A fill that raced with a change is
//! kept but marked stale: each entry remembers the head it was read at and the newest head
//! seen on the feed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use io360_common::model::{Seq, Status, ThreadPage};
use io360_common::retry::Backoff;
use io360_common::serve::Shutdown;
use io360_store::StoreClient;
use io360_store::api::MAX_LIMIT;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;

/// The most comments one list answer holds.
pub const LIST_LIMIT: usize = 1000;

/// A cached thread: every comment, and its first answer already serialized, since that is what
/// nearly every reader asks for.
pub struct CachedThread {
    /// Every comment, held ones included, in sequence order.
    pub page: ThreadPage,
    /// The JSON answer to "the thread from the start" (held comments left out, at most
    /// [`LIST_LIMIT`] comments).
    pub first_json: bytes::Bytes,
    /// The newest head the change feed reported for this thread.
    newest_seen: AtomicU64,
}

impl CachedThread {
    fn new(page: ThreadPage, newest_seen: Seq) -> Self {
        let first = ThreadPage {
            thread: page.thread.clone(),
            head: page.head,
            closed: page.closed,
            comments: page
                .comments
                .iter()
                .filter(|c| c.status != Status::Pending)
                .take(LIST_LIMIT)
                .cloned()
                .collect(),
        };
        let first_json = serde_json::to_vec(&first).unwrap_or_default().into();
        CachedThread {
            page,
            first_json,
            newest_seen: AtomicU64::new(newest_seen),
        }
    }

    fn is_fresh(&self) -> bool {
        self.page.head >= self.newest_seen.load(Ordering::Acquire)
    }
}

/// The cache of whole threads.
#[derive(Clone)]
pub struct ThreadCache {
    pages: Cache<String, Arc<CachedThread>>,
    heads: Cache<String, Seq>,
    /// Reads answered from memory.
    pub hits: Counter,
    /// Reads that went to store.
    pub misses: Counter,
}

impl ThreadCache {
    /// A cache holding about `max_comments` comments.
    pub fn new(max_comments: u64) -> Self {
        ThreadCache {
            pages: Cache::builder()
                .max_capacity(max_comments)
                .weigher(|_, t: &Arc<CachedThread>| {
                    u32::try_from(t.page.comments.len().max(1)).unwrap_or(u32::MAX)
                })
                .build(),
            heads: Cache::builder().max_capacity(100_000).build(),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// The whole thread, from memory, brought up to date from store when it changed.
    pub async fn thread(
        &self,
        store: &StoreClient,
        thread: &str,
    ) -> Result<Arc<CachedThread>, io360_common::client::ClientError> {
        let prev = self.pages.get(thread);
        if let Some(p) = &prev
            && p.is_fresh()
        {
            self.hits.inc();
            return Ok(p.clone());
        }
        self.misses.inc();
        let after = prev.as_ref().map(|p| p.page.head).unwrap_or(0);
        let mut page = store.page(thread, after, MAX_LIMIT).await?;
        while page.comments.len() % MAX_LIMIT == 0
            && let Some(last) = page.comments.last().map(|c| c.seq)
        {
            let more = store.page(thread, last, MAX_LIMIT).await?;
            if more.comments.is_empty() {
                break;
            }
            page.head = page.head.max(more.head);
            page.closed = more.closed;
            page.comments.extend(more.comments);
        }
        if let Some(p) = &prev {
            page = merge(&p.page, page);
        }
        let newest_seen = self.heads.get(thread).unwrap_or(0);
        let cached = Arc::new(CachedThread::new(page, newest_seen));
        // A change seen while reading leaves the entry stale, so the next read catches up.
        self.pages.insert(thread.to_owned(), cached.clone());
        Ok(cached)
    }

    /// Marks a thread stale after a change at `seq`.
    pub fn changed(&self, thread: &str, seq: Seq) {
        let newest = self.heads.get(thread).unwrap_or(0).max(seq);
        self.heads.insert(thread.to_owned(), newest);
        if let Some(p) = self.pages.get(thread) {
            p.newest_seen.fetch_max(newest, Ordering::AcqRel);
        }
    }

    /// Drops everything (the feed was interrupted, so changes may have been missed).
    pub fn clear(&self) {
        self.pages.invalidate_all();
    }

    /// Follows the store's change feed until `shutdown`, dropping changed threads.
    pub async fn follow(self, store: StoreClient, shutdown: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let run = async {
                let pos = store.position().await?;
                // Whatever happened while disconnected is unknown: start clean.
                self.clear();
                let feed = store.feed(pos).await?;
                futures::pin_mut!(feed);
                backoff.reset();
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(30), feed.next()).await;
                    match next {
                        Ok(Some(Ok(Some(change)))) => self.changed(&change.thread, change.seq),
                        Ok(Some(Ok(None))) => {}
                        Ok(Some(Err(e))) => return Err::<(), _>(e),
                        Ok(None) | Err(_) => {
                            return Err(io360_common::client::ClientError::Unavailable {
                                tier: "store",
                                url: store_feed_url(&store),
                                reason: "the change feed ended".into(),
                            });
                        }
                    }
                }
            };
            tokio::select! {
                r = run => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "cache lost the change feed; reconnecting");
                    }
                }
                _ = shutdown.wait() => return,
            }
            self.clear();
            if !backoff.wait(shutdown.wait()).await {
                return;
            }
        }
    }
}

/// `old` with the comments changed since its head (`newer`, in sequence order) moved to the end.
fn merge(old: &ThreadPage, newer: ThreadPage) -> ThreadPage {
    let changed: HashSet<u64> = newer.comments.iter().map(|c| c.id).collect();
    let mut comments = Vec::with_capacity(old.comments.len() + newer.comments.len());
    comments.extend(
        old.comments
            .iter()
            .filter(|c| !changed.contains(&c.id))
            .cloned(),
    );
    comments.extend(newer.comments);
    ThreadPage {
        thread: newer.thread,
        head: newer.head.max(old.head),
        closed: newer.closed,
        comments,
    }
}

fn store_feed_url(store: &StoreClient) -> String {
    format!("{}/store/v1/feed", store.base())
}
