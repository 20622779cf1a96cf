//! Follows sync's change stream into the hub, resuming from the last position applied.
//!
//! The first stream starts at sync's head: a fresh instance has nothing to catch up, and
//! clients bring their own positions (gaps are filled per thread). Every later stream asks
//! for the changes after the last position applied, on whichever replica answers, so the
//! hub sees every change exactly once and in feed order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use io360_common::retry::Backoff;
use io360_common::serve::Shutdown;
use io360_common::telemetry::Readiness;
use io360_sync::SyncClient;
use io360_sync::api::StreamLine;

use crate::hub::Hub;

/// Runs until shutdown.
pub async fn run(hub: Arc<Hub>, sync: SyncClient, ready: Readiness, shutdown: Shutdown) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let after = hub.started().then(|| hub.pos());
        let attempt = async {
            let stream = match sync.stream(after).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open sync's change stream");
                    return false;
                }
            };
            let mut stream = std::pin::pin!(stream);
            let mut progressed = false;
            while let Some(line) = stream.next().await {
                match line {
                    Ok(StreamLine::Hello { hello }) => {
                        if after.is_some_and(|a| a != hello.after) {
                            tracing::error!(asked = ?after, got = hello.after, "sync answered from another position");
                            return progressed;
                        }
                        hub.start_at(hello.after);
                        ready.set(true);
                        tracing::info!(
                            epoch = hello.epoch,
                            after = hello.after,
                            "following sync's change stream"
                        );
                    }
                    Ok(StreamLine::Heartbeat { .. }) => {}
                    Ok(StreamLine::Change(change)) => {
                        let pos = hub.pos();
                        if !hub.started() || change.pos <= pos {
                            continue;
                        }
                        if change.pos != pos + 1 {
                            tracing::error!(
                                pos,
                                got = change.pos,
                                "sync's stream skipped a position; reopening"
                            );
                            return progressed;
                        }
                        hub.advance(change.pos);
                        hub.publish(change);
                        progressed = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sync's change stream broke");
                        return progressed;
                    }
                }
            }
            tracing::warn!("sync's change stream ended");
            progressed
        };
        let progressed = tokio::select! {
            p = attempt => p,
            _ = shutdown.wait() => return,
        };
        hub.metrics.stream_reconnects.inc();
        sync.next_replica();
        if progressed {
            backoff.reset();
        }
        if !backoff.wait(shutdown.wait()).await {
            return;
        }
    }
}
