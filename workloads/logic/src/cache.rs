//! Popular threads served from memory.
//!
//! A thread is cached whole (every comment, in sequence order) the first time it is read, and
//! dropped when the store's change feed reports a change to it. A write through this replica
//! drops it at once, so its author reads their own write; other replicas follow within the
//! feed's latency. A fill that raced with a change is not kept: each entry remembers the head
//! it was read at, and a fill older than the newest head seen on the feed is discarded.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use io360_common::model::{Seq, ThreadPage};
use io360_common::serve::Shutdown;
use io360_store::StoreClient;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;

/// Threads longer than this are not cached whole.
const MAX_CACHED_COMMENTS: usize = 5000;

/// A cached thread: every comment, and the public answer for the whole thread already
/// serialized, since that is what nearly every reader asks for.
pub struct CachedThread {
    /// Every comment, held ones included, in sequence order.
    pub page: ThreadPage,
    /// The JSON answer to "the whole thread" (held comments left out).
    pub public_json: bytes::Bytes,
}

impl CachedThread {
    fn new(page: ThreadPage) -> Self {
        let public = ThreadPage {
            thread: page.thread.clone(),
            head: page.head,
            closed: page.closed,
            comments: page
                .comments
                .iter()
                .filter(|c| c.status != io360_common::model::Status::Pending)
                .cloned()
                .collect(),
        };
        let public_json = serde_json::to_vec(&public).unwrap_or_default().into();
        CachedThread { page, public_json }
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
                .weigher(|_, t: &Arc<CachedThread>| t.page.comments.len().max(1) as u32)
                .build(),
            heads: Cache::builder().max_capacity(100_000).build(),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// The whole thread, from memory or from store.
    pub async fn thread(
        &self,
        store: &StoreClient,
        thread: &str,
    ) -> Result<Arc<CachedThread>, io360_common::client::ClientError> {
        if let Some(p) = self.pages.get(thread) {
            self.hits.inc();
            return Ok(p);
        }
        self.misses.inc();
        let mut page = store.page(thread, 0, io360_store::api::MAX_LIMIT).await?;
        while page.comments.len() < MAX_CACHED_COMMENTS
            && page.comments.len() % io360_store::api::MAX_LIMIT == 0
            && let Some(last) = page.comments.last().map(|c| c.seq)
        {
            let more = store
                .page(thread, last, io360_store::api::MAX_LIMIT)
                .await?;
            if more.comments.is_empty() {
                break;
            }
            page.head = more.head;
            page.comments.extend(more.comments);
        }
        let cached = Arc::new(CachedThread::new(page));
        let newest_seen = self.heads.get(thread).unwrap_or(0);
        if cached.page.head >= newest_seen && cached.page.comments.len() < MAX_CACHED_COMMENTS {
            self.pages.insert(thread.to_owned(), cached.clone());
        }
        Ok(cached)
    }

    /// Drops a thread after a change at `seq`.
    pub fn changed(&self, thread: &str, seq: Seq) {
        let newest = self.heads.get(thread).unwrap_or(0).max(seq);
        self.heads.insert(thread.to_owned(), newest);
        self.pages.invalidate(thread);
    }

    /// Drops everything (the feed was interrupted, so changes may have been missed).
    pub fn clear(&self) {
        self.pages.invalidate_all();
    }

    /// Follows the store's change feed until `shutdown`, dropping changed threads.
    pub async fn follow(self, store: StoreClient, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
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
                backoff = Duration::from_millis(100);
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
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn store_feed_url(store: &StoreClient) -> String {
    format!("{}/store/v1/feed", store.base())
}
