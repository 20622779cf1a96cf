//! Whether comments are suspended, from wherever that is decided.
//!
//! Two sources: the durable manual flag in store (set through the admin API where no operator
//! runs, as in `io360 up`) and the operator's control ConfigMap on Kubernetes. Either one
//! suspends; the ConfigMap's reason (`Manual`, `Overload`) is reported when it is the cause.

use std::sync::{Arc, RwLock};

use io360_common::serve::Shutdown;
use serde::Serialize;

/// What `/api/v1/status` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SuspensionState {
    /// Whether writes are refused.
    pub suspended: bool,
    /// `Manual` or `Overload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for readers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Since when, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// The audit event for a change of the control ConfigMap. It is stamped with the
/// ConfigMap's `since` (when the operator made the change), so every logic replica reports
/// the same event and the logger keeps it once.
fn operator_event(state: &io360_control::ControlState) -> io360_logger::Event {
    use io360_logger::Kind;
    let kind = if state.suspended {
        Kind::CommentsSuspended
    } else {
        Kind::CommentsResumed
    };
    let mut e = io360_logger::Event::now(kind, "logic", "operator");
    if let Some(since) = state.since
        && let Ok(t) =
            time::OffsetDateTime::from(since).format(&time::format_description::well_known::Rfc3339)
    {
        e.time = t;
    }
    if let Some(r) = state.reason {
        e = e.reason(r.as_str().to_ascii_lowercase());
    }
    if !state.message.is_empty() {
        e = e.detail(state.message.clone());
    }
    e
}

/// The two sources, combined on read.
#[derive(Debug, Clone, Default)]
pub struct Suspension {
    manual: Arc<RwLock<SuspensionState>>,
    control: Arc<RwLock<SuspensionState>>,
}

impl Suspension {
    /// Records the store's manual flag.
    pub fn set_manual(&self, s: &io360_store::api::Suspension) {
        let state = SuspensionState {
            suspended: s.suspended,
            reason: s.suspended.then(|| "Manual".to_owned()),
            message: s.reason.clone(),
            since: s.since.clone(),
        };
        if let Ok(mut m) = self.manual.write() {
            *m = state;
        }
    }

    /// Records the control ConfigMap's state.
    fn set_control(&self, s: &io360_control::ControlState) {
        let state = SuspensionState {
            suspended: s.suspended,
            reason: s.reason.map(|r| r.as_str().to_owned()),
            message: Some(s.message.clone()).filter(|m| !m.is_empty()),
            since: s.since.map(|t| {
                time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            }),
        };
        if let Ok(mut c) = self.control.write() {
            *c = state;
        }
    }

    /// Follows the control ConfigMap until `shutdown`. Each suspension and resumption the
    /// operator makes there (by hand through `spec.commentsSuspended`, or automatically on
    /// overload) goes to the audit trail as done by `operator`.
    pub fn follow_control(
        &self,
        control: io360_control::Control,
        audit: io360_logger::Shipper,
        shutdown: Shutdown,
    ) {
        let this = self.clone();
        // The state at start is not a change: a pod started while suspended records nothing.
        let mut last = None;
        control.follow(async move { shutdown.wait().await }, move |state| {
            this.set_control(state);
            let now = (state.suspended, state.reason);
            if last.is_some_and(|l| l != now) {
                audit.emit(operator_event(state));
            }
            last = Some(now);
        });
    }

    /// The combined state: the control ConfigMap wins when it suspends.
    pub fn get(&self) -> SuspensionState {
        let control = self.control.read().map(|c| c.clone()).unwrap_or_default();
        if control.suspended {
            return control;
        }
        self.manual.read().map(|m| m.clone()).unwrap_or_default()
    }
}
