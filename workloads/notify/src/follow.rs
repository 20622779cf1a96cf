//! Follows the store's change feed from the position the outbox keeps, turning each change
//! into outbox rows. The position moves only in the batch that holds the rows a change
//! produced, so a crash at any point resumes at the first change not yet turned into rows.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use io360_common::retry::Backoff;
use io360_common::serve::Shutdown;
use io360_common::telemetry::Readiness;
use io360_store::StoreClient;
use prometheus_client::metrics::gauge::Gauge;

use crate::outbox::Outbox;

/// Who to tell that something was queued.
pub(crate) struct Wakes {
    /// The mail sender.
    pub(crate) email: Arc<tokio::sync::Notify>,
    /// The webhook deliverer.
    pub(crate) hooks: Arc<tokio::sync::Notify>,
    /// Counts webhook deliveries dropped from a full queue.
    pub(crate) dropped: prometheus_client::metrics::counter::Counter,
}

/// Runs until shutdown.
pub(crate) async fn run(
    outbox: Outbox,
    store: StoreClient,
    moderators: Arc<Vec<String>>,
    wake: Wakes,
    ready: Readiness,
    position: Gauge,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let attempt = async {
            let o = outbox.clone();
            let after = match tokio::task::spawn_blocking(move || o.cursor()).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the notification feed position");
                    return false;
                }
                Err(_) => return false,
            };
            let feed = match store.feed(after).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, after, "cannot open the store's change feed");
                    return false;
                }
            };
            tracing::info!(after, "following the store's change feed");
            ready.set(true);
            let mut feed = std::pin::pin!(feed);
            let mut progressed = false;
            while let Some(item) = feed.next().await {
                match item {
                    Ok(Some(change)) => {
                        let o = outbox.clone();
                        let m = moderators.clone();
                        let now = time::OffsetDateTime::now_utc().unix_timestamp();
                        let pos = change.pos;
                        match tokio::task::spawn_blocking(move || o.apply_all(&change, now, &m))
                            .await
                        {
                            Ok(Ok(applied)) => {
                                progressed = true;
                                position.set(pos as i64);
                                if applied.emails > 0 {
                                    wake.email.notify_one();
                                }
                                if applied.hooks > 0 {
                                    wake.hooks.notify_one();
                                }
                                wake.dropped.inc_by(applied.dropped as u64);
                            }
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, pos, "cannot queue notifications");
                                return progressed;
                            }
                            Err(_) => return progressed,
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the store's change feed broke");
                        return progressed;
                    }
                }
            }
            progressed
        };
        let progressed = tokio::select! {
            p = attempt => p,
            _ = shutdown.wait() => return,
        };
        if progressed {
            backoff.reset();
        }
        if !backoff.wait(shutdown.wait()).await {
            return;
        }
    }
}
