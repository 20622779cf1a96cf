//! The tier side of io360's control ConfigMap: whether live comments are suspended, and why.
//!
//! On Kubernetes the operator writes a ConfigMap `<cc>-control` (docs/CONTRACTS.md) with the
//! keys `commentsSuspended`, `reason`, `message` and `since`. The logic and frontend tiers
//! watch it: logic refuses writes with 503 while suspended, frontend shows a "comments paused"
//! note. This crate is the small library they call.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), io360_control::Error> {
//! // At start, before reporting ready: the first state is read here, so a pod started while
//! // comments are suspended starts suspended.
//! if let Some(target) = io360_control::Target::from_env() {
//!     let control = io360_control::start(target).await?;
//!     let state = control.receiver();
//!     // ... hand `state` to the request handlers; `state.borrow().suspended` is always the
//!     // latest known state, and `state.changed().await` wakes on every change.
//!     # drop(state);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`start`] reads the ConfigMap once (failing if the API server cannot be reached or the
//! ServiceAccount may not read it, so a misconfigured pod fails its start instead of serving
//! with a wrong state), then spawns a task that watches it for as long as the returned
//! [`Control`] lives, reconnecting with backoff after errors. [`watch`] is the same loop for a
//! caller that owns the `tokio::sync::watch::Sender`.
//!
//! A ConfigMap that does not exist (yet) means "not suspended": the operator creates it before
//! the tiers' Deployments, and a tier run outside an operator has no ConfigMap to watch.
//!
//! The client uses the ambient configuration: in a pod, the ServiceAccount token (the operator
//! grants `<cc>-tiers` get/list/watch on this one ConfigMap only); elsewhere `KUBECONFIG`.
//! The watch filters on `metadata.name`, which is what that narrow RBAC allows.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why comments are suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An operator of the site suspended comments by hand (`spec.commentsSuspended`).
    Manual,
    /// The io360 operator suspended comments because frontend was overloaded.
    Overload,
}

impl Reason {
    /// The value in the ConfigMap and in problem bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "Manual",
            Reason::Overload => "Overload",
        }
    }
}

/// The suspension state of live comments, as the control ConfigMap says.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ControlState {
    /// Whether live comments are suspended: logic refuses writes, longpoll is at zero.
    pub suspended: bool,
    /// Why, when suspended and the reason is one io360 knows.
    pub reason: Option<Reason>,
    /// A human sentence for readers and problem bodies (may be empty).
    pub message: String,
    /// When the current state began, when known.
    pub since: Option<SystemTime>,
}

impl ControlState {
    /// Reads a control ConfigMap's `data`. Unknown or malformed values degrade to "live"
    /// for `commentsSuspended` and to `None` for `reason` and `since`, so a half-written
    /// ConfigMap never takes comments down.
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let suspended = data
            .get("commentsSuspended")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let reason = match data.get("reason").map(|r| r.trim()) {
            Some("Manual") => Some(Reason::Manual),
            Some("Overload") => Some(Reason::Overload),
            _ => None,
        };
        let since = data
            .get("since")
            .and_then(|s| s.trim().parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from);
        ControlState {
            suspended,
            reason: reason.filter(|_| suspended),
            message: data.get("message").cloned().unwrap_or_default(),
            since,
        }
    }

    fn from_configmap(cm: Option<&ConfigMap>) -> Self {
        cm.and_then(|cm| cm.data.as_ref())
            .map(Self::from_data)
            .unwrap_or_default()
    }
}

/// Which ConfigMap to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its namespace; `None` uses the client's default (the pod's namespace in a pod).
    pub namespace: Option<String>,
    /// Its name, `<cc>-control`.
    pub name: String,
}

impl Target {
    /// From `IO360_CONTROL_CONFIGMAP` and `IO360_CONTROL_NAMESPACE`; `None` when the first is
    /// unset or empty (no watch: comments are live unless suspended some other way).
    pub fn from_env() -> Option<Self> {
        let name = std::env::var("IO360_CONTROL_CONFIGMAP")
            .ok()
            .filter(|n| !n.trim().is_empty())?;
        let namespace = std::env::var("IO360_CONTROL_NAMESPACE")
            .ok()
            .filter(|n| !n.trim().is_empty());
        Some(Target { namespace, name })
    }
}

/// What can go wrong reading the control ConfigMap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes configuration was found (not in a pod, no KUBECONFIG).
    #[error("no Kubernetes configuration for watching the control ConfigMap: {0}")]
    Config(#[source] kube::Error),
    /// The API server refused or failed the read.
    #[error("reading control ConfigMap {namespace}/{name}: {source}")]
    Read {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Every receiver of the state is gone, so there is no one left to tell.
    #[error("every receiver of the control state was dropped")]
    Closed,
}

/// A running watch of the control ConfigMap. Dropping it stops the watch.
pub struct Control {
    rx: watch::Receiver<ControlState>,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// A receiver of the current state and its changes.
    pub fn receiver(&self) -> watch::Receiver<ControlState> {
        self.rx.clone()
    }

    /// The current state.
    pub fn current(&self) -> ControlState {
        self.rx.borrow().clone()
    }

    /// Calls `apply` with the current state at once, then with every change, from a task
    /// that owns this watch, until `stop` resolves or the watch ends.
    pub fn follow(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
        mut apply: impl FnMut(&ControlState) + Send + 'static,
    ) {
        let mut rx = self.receiver();
        apply(&rx.borrow_and_update());
        tokio::spawn(async move {
            let _watch = self;
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let state = rx.borrow_and_update().clone();
                        info!(suspended = state.suspended, reason = ?state.reason, "control ConfigMap changed");
                        apply(&state);
                    }
                    _ = &mut stop => return,
                }
            }
        });
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn api(target: &Target) -> Result<(Api<ConfigMap>, String), Error> {
    let client = kube::Client::try_default().await.map_err(Error::Config)?;
    let ns = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    Ok((Api::namespaced(client, &ns), ns))
}

/// Reads the control ConfigMap once and then keeps watching it in a background task.
/// Returns after the first read, so callers can report ready knowing the state.
pub async fn start(target: Target) -> Result<Control, Error> {
    let (api, ns) = api(&target).await?;
    let first = api
        .get_opt(&target.name)
        .await
        .map_err(|source| Error::Read {
            namespace: ns.clone(),
            name: target.name.clone(),
            source,
        })?;
    let (tx, rx) = watch::channel(ControlState::from_configmap(first.as_ref()));
    let name = target.name.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = follow(api, name, tx).await {
            info!(error = %e, "control ConfigMap watch ended");
        }
    });
    Ok(Control { rx, task })
}

/// Watches the control ConfigMap `name` in `namespace` (default: the client's namespace) and
/// sends every change of state to `tx`, reconnecting after errors, until every receiver is
/// dropped. The first state is sent before any change.
pub async fn watch(
    namespace: Option<String>,
    name: String,
    tx: watch::Sender<ControlState>,
) -> Result<(), Error> {
    let target = Target { namespace, name };
    let (api, ns) = api(&target).await?;
    let first = api
        .get_opt(&target.name)
        .await
        .map_err(|source| Error::Read {
            namespace: ns,
            name: target.name.clone(),
            source,
        })?;
    tx.send_replace(ControlState::from_configmap(first.as_ref()));
    follow(api, target.name, tx).await
}

async fn follow(
    api: Api<ConfigMap>,
    name: String,
    tx: watch::Sender<ControlState>,
) -> Result<(), Error> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut events = watcher::watcher(api.clone(), config.clone()).boxed();
        // A relist ends with InitDone; until then, a missing ConfigMap is "live".
        let mut seen_in_init = false;
        loop {
            let ev = tokio::select! {
                ev = events.try_next() => ev,
                _ = tx.closed() => return Err(Error::Closed),
            };
            match ev {
                Ok(Some(Event::Apply(cm) | Event::InitApply(cm))) => {
                    seen_in_init = true;
                    publish(&tx, ControlState::from_configmap(Some(&cm)), &name);
                    backoff = Duration::from_millis(500);
                }
                Ok(Some(Event::Delete(_))) => {
                    publish(&tx, ControlState::default(), &name);
                }
                Ok(Some(Event::Init)) => seen_in_init = false,
                Ok(Some(Event::InitDone)) => {
                    if !seen_in_init {
                        publish(&tx, ControlState::default(), &name);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The watcher keeps no state across this error: back off, then relist.
                    warn!(configmap = %name, error = %e, "control ConfigMap watch failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = tx.closed() => return Err(Error::Closed),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn publish(tx: &watch::Sender<ControlState>, state: ControlState, name: &str) {
    tx.send_if_modified(|cur| {
        if *cur == state {
            return false;
        }
        info!(
            configmap = %name,
            suspended = state.suspended,
            reason = state.reason.map(Reason::as_str).unwrap_or(""),
            "control state changed"
        );
        *cur = state;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_suspension() {
        let s = ControlState::from_data(&data(&[
            ("commentsSuspended", "true"),
            ("reason", "Overload"),
            ("message", "Comments are paused."),
            ("since", "2026-01-02T03:04:05Z"),
        ]));
        assert!(s.suspended);
        assert_eq!(s.reason, Some(Reason::Overload));
        assert_eq!(s.message, "Comments are paused.");
        let since = s.since.unwrap();
        assert_eq!(
            since
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_767_323_045
        );
    }

    #[test]
    fn live_when_false_missing_or_garbled() {
        for d in [
            data(&[("commentsSuspended", "false"), ("reason", "Manual")]),
            data(&[]),
            data(&[("commentsSuspended", "yes please")]),
        ] {
            let s = ControlState::from_data(&d);
            assert!(!s.suspended, "{d:?}");
            assert_eq!(
                s.reason, None,
                "{d:?}: a reason only counts while suspended"
            );
        }
    }

    #[test]
    fn unknown_reason_and_bad_time_still_suspend() {
        let s = ControlState::from_data(&data(&[
            ("commentsSuspended", "TRUE"),
            ("reason", "Martians"),
            ("since", "yesterday"),
        ]));
        assert!(s.suspended);
        assert_eq!(s.reason, None);
        assert_eq!(s.since, None);
    }

    #[test]
    fn target_from_env() {
        // Single test touching these variables, so no other test races with it.
        unsafe {
            std::env::remove_var("IO360_CONTROL_CONFIGMAP");
            std::env::remove_var("IO360_CONTROL_NAMESPACE");
        }
        assert_eq!(Target::from_env(), None);
        unsafe {
            std::env::set_var("IO360_CONTROL_CONFIGMAP", "blog-control");
            std::env::set_var("IO360_CONTROL_NAMESPACE", "sites");
        }
        assert_eq!(
            Target::from_env(),
            Some(Target {
                namespace: Some("sites".into()),
                name: "blog-control".into()
            })
        );
    }
}
