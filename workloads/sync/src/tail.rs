//! Follows the store's change feed into the history, reconnecting from where it left off.
//!
//! The tail starts at feed position 0 on boot, so a restarted sync rebuilds its window from
//! the store (bounded by the history limits) before it serves anything that depends on it.
//! When the store goes away, the tail retries with backoff from the last position applied: a
//! store restart loses nothing acknowledged, because acknowledged changes are durable.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use io360_common::retry::Backoff;
use io360_common::serve::Shutdown;
use io360_common::telemetry::Readiness;
use io360_store::StoreClient;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::history::History;

/// The tail's metrics.
#[derive(Clone, Default)]
pub(crate) struct TailMetrics {
    pub position: Gauge,
    pub reconnects: Counter,
    pub history_changes: Gauge,
    pub history_bytes: Gauge,
    pub history_threads: Gauge,
}

/// Runs until shutdown.
pub(crate) async fn run(
    history: Arc<History>,
    store: StoreClient,
    ready: Readiness,
    metrics: TailMetrics,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let after = history.head();
        let attempt = async {
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
            let mut applied_any = false;
            while let Some(item) = feed.next().await {
                match item {
                    Ok(Some(change)) => {
                        if !history.apply(change) {
                            tracing::error!(
                                head = history.head(),
                                "the store's feed skipped a position; re-reading"
                            );
                            return applied_any;
                        }
                        applied_any = true;
                        metrics.position.set(history.head() as i64);
                        let (n, bytes, threads) = history.size();
                        metrics.history_changes.set(n as i64);
                        metrics.history_bytes.set(bytes as i64);
                        metrics.history_threads.set(threads as i64);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the store's change feed broke");
                        return applied_any;
                    }
                }
            }
            tracing::warn!("the store's change feed ended");
            applied_any
        };
        let progressed = tokio::select! {
            p = attempt => p,
            _ = shutdown.wait() => return,
        };
        metrics.reconnects.inc();
        if progressed {
            backoff.reset();
        }
        if !backoff.wait(shutdown.wait()).await {
            return;
        }
    }
}
