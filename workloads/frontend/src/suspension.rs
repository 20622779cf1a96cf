//! Whether comments are suspended, as the frontend knows it.
//!
//! While comments are suspended the pages still carry their last snapshot, with a note that
//! comments are paused, and the widget starts in its paused state. The frontend learns the
//! state from two sources, as logic does: the operator's control ConfigMap, watched when
//! `IO360_CONTROL_CONFIGMAP` is set (on Kubernetes), and logic's `/api/v1/status`, polled
//! every few seconds (which also carries the manual flag of `io360 up`). Either one suspends.
//! If a source cannot be reached its last known state stays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    from_logic: Mutex<SuspensionState>,
    from_control: Mutex<SuspensionState>,
    state: ArcSwap<SuspensionState>,
    generation: AtomicU64,
    changed_at: ArcSwap<SystemTime>,
}

impl Suspension {
    pub fn new() -> Suspension {
        Suspension {
            from_logic: Mutex::new(SuspensionState::default()),
            from_control: Mutex::new(SuspensionState::default()),
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

    /// Records what logic says and recomputes the state.
    fn set_logic(&self, s: SuspensionState) {
        *self.from_logic.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.combine();
    }

    /// Records what the control ConfigMap says and recomputes the state.
    fn set_control(&self, c: &io360_control::ControlState) {
        let s = SuspensionState {
            suspended: c.suspended,
            reason: c.reason.map(|r| r.as_str().to_owned()),
            message: Some(c.message.clone()).filter(|m| !m.trim().is_empty()),
            since: c.since.map(httpdate::fmt_http_date),
        };
        *self.from_control.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.combine();
    }

    /// The control ConfigMap wins when it suspends; otherwise logic's word counts.
    fn combine(&self) {
        let control = self
            .from_control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let next = if control.suspended {
            control
        } else {
            self.from_logic
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        self.set(next);
    }

    /// Follows the control ConfigMap until shutdown.
    pub fn follow_control(self: Arc<Self>, control: io360_control::Control, shutdown: Shutdown) {
        control.follow(async move { shutdown.wait().await }, move |state| {
            self.set_control(state)
        });
    }

    /// Records a state; a no-op when nothing changed.
    fn set(&self, next: SuspensionState) {
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
                Ok(Ok(state)) => self.set_logic(state),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn either_source_suspends_and_changes_bump_the_generation() {
        let s = Suspension::new();
        let g0 = s.generation();
        s.set_logic(SuspensionState {
            suspended: true,
            reason: Some("Manual".into()),
            ..Default::default()
        });
        assert!(s.get().suspended);
        assert!(s.generation() > g0);
        let g1 = s.generation();
        s.set_logic(SuspensionState {
            suspended: true,
            reason: Some("Manual".into()),
            ..Default::default()
        });
        assert_eq!(s.generation(), g1, "the same state is no change");
        s.set_logic(SuspensionState::default());
        assert!(!s.get().suspended);
        let data = BTreeMap::from([
            ("commentsSuspended".to_owned(), "true".to_owned()),
            ("reason".to_owned(), "Overload".to_owned()),
            ("message".to_owned(), "Too busy".to_owned()),
        ]);
        s.set_control(&io360_control::ControlState::from_data(&data));
        let now = s.get();
        assert!(now.suspended);
        assert_eq!(now.reason.as_deref(), Some("Overload"));
        assert_eq!(now.note(), "Too busy");
    }
}
