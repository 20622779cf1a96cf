//! Whether comments are suspended, from wherever that is decided.
//!
//! Two sources: the durable manual flag in store (set through the admin API where no operator
//! runs, as in `io360 up`) and the operator's control ConfigMap on Kubernetes. Either one
//! suspends; the ConfigMap's reason (`Manual`, `Overload`) is reported when it is the cause.

use std::sync::{Arc, RwLock};

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
    #[allow(dead_code)]
    pub fn set_control(&self, s: SuspensionState) {
        if let Ok(mut c) = self.control.write() {
            *c = s;
        }
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
