//! Whether comments are suspended, as the frontend knows it.
//!
//! While comments are suspended the pages still carry their last snapshot, with a note that
//! comments are paused, and the widget starts in its paused state. The frontend learns the
//! state from logic's `/api/v1/status`, polled every few seconds (where no operator writes a
//! control ConfigMap, as in `io360 up`). If logic cannot be reached the last known state
//! stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use io360_common::client::TierClient;
use io360_common::serve::Shutdown;
use serde::Deserialize;

/// The suspension state as logic reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SuspensionState {
    /// Whether comments are suspended.
    #[serde(default)]
    pub suspended: bool,
    /// `Manual` or `Overload`, when suspended.
    #[serde(default)]
    pub reason: Option<String>,
    /// A sentence for readers.
    #[serde(default)]
    pub message: Option<String>,
    /// When the state began (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
}

impl SuspensionState {
    /// The note shown to readers while suspended.
    pub fn note(&self) -> &str {
        self.message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("Comments are paused for now. Existing comments stay readable.")
    }
}

/// The current state, with a generation that changes whenever the state does.
#[derive(Debug)]
pub(crate) struct Suspension {
    state: ArcSwap<SuspensionState>,
    generation: AtomicU64,
    changed_at: ArcSwap<SystemTime>,
}

impl Suspension {
    pub fn new() -> Suspension {
        Suspension {
            state: ArcSwap::from_pointee(SuspensionState::default()),
            generation: AtomicU64::new(0),
            changed_at: ArcSwap::from_pointee(SystemTime::UNIX_EPOCH),
        }
    }

    /// The current state.
    pub fn get(&self) -> Arc<SuspensionState> {
        self.state.load_full()
    }

    /// Changes with every change of state.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// When the state last changed.
    pub fn changed_at(&self) -> SystemTime {
        **self.changed_at.load()
    }

    /// Records a state; a no-op when nothing changed.
    pub fn set(&self, next: SuspensionState) {
        if *self.state.load_full() == next {
            return;
        }
        tracing::info!(
            suspended = next.suspended,
            reason = next.reason.as_deref().unwrap_or(""),
            "comment suspension changed"
        );
        self.changed_at.store(Arc::new(SystemTime::now()));
        self.state.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Polls logic's status every `interval` until shutdown.
    pub async fn follow_logic(
        self: Arc<Self>,
        logic: TierClient,
        interval: Duration,
        shutdown: Shutdown,
    ) {
        loop {
            let read = tokio::time::timeout(
                interval.max(Duration::from_secs(1)),
                logic.get::<SuspensionState>("/api/v1/status"),
            )
            .await;
            match read {
                Ok(Ok(state)) => self.set(state),
                Ok(Err(e)) => tracing::debug!(error = %e, "suspension status unavailable"),
                Err(_) => tracing::debug!("suspension status timed out"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
