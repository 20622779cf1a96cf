//! A real Kubernetes control plane on loopback, for io360's cluster tests.
//!
//! The operator has to be proven against the real API server: CRD schemas it rejects,
//! server-side apply conflicts, RBAC one verb short and garbage collection only show up there.
//! [`Cluster::start`] either starts etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and KWOK (fake nodes whose pods turn Running and Ready) on free 127.0.0.1
//! ports, or, when `IO360_TEST_KUBECONFIG` names a kubeconfig, uses that cluster instead, so the
//! same suite runs on kind, k3d or a real cluster.
//!
//! The binaries come from `tests/cluster/install-tools.sh`, which builds them from the Go module
//! proxy into the user's cache directory; a missing binary is an error, never a skip.
//!
//! [`Cluster::start_with_real_node`] adds one real node (containerd, runc, the kubelet,
//! kube-proxy, CoreDNS and a registry) that runs io360's real images. Its addresses, and every
//! process that dials them, live in a network namespace the run creates ([`isolate`]).
//!
//! Outside that namespace nothing dials a pod or Service address: the fake nodes' pods have
//! fake 10.x addresses. Every process
//! started here is stopped when its [`Cluster`] drops, and is killed by the kernel if the test
//! process dies first.

pub mod cc;
mod cluster;
mod control_plane;
mod custom_metrics;
pub mod isolate;
mod metrics;
mod node;
mod pki;
mod postgres;
pub mod process;
mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterMode, KUBECONFIG_ENV, run};
pub use control_plane::{
    ControlPlane, FAKE_NODES, FAKE_VOLUMES, HpaController, PlaneOptions, fake_node_name,
};
pub use custom_metrics::{ADAPTER_PORT, CustomMetrics, SCRAPE_EVERY_SECS, SERVED_METRICS};
pub use metrics::{METRIC_RESOLUTION_SECS, METRICS_SERVER_PORT};
pub use node::{LOCAL_STORAGE_CLASS, REAL_NODE_LABEL, REAL_NODE_TAINT, RealNode};
pub use pki::REAL_NODE_NAME;
pub use postgres::{POSTGRES_PORT, PostgresServer};
pub use process::{Process, log_tail};
pub use tools::{K8S_VERSION, Tools};

/// JSON merge patch (RFC 7386) of `patch` into `target`: how the suites write a
/// CommentCluster as a base with a test's own fields over it.
pub fn merge_json(target: &mut serde_json::Value, patch: serde_json::Value) {
    match patch {
        serde_json::Value::Object(fields) => {
            if !target.is_object() {
                *target = serde_json::json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    if let Some(object) = target.as_object_mut() {
                        object.remove(&key);
                    }
                } else {
                    merge_json(&mut target[&key], value);
                }
            }
        }
        other => *target = other,
    }
}

/// What can go wrong while starting or driving the test cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary install-tools.sh should have built is not where the harness looks.
    #[error(
        "{tool} not found at {path}: run `bash tests/cluster/install-tools.sh` to build the cluster tools"
    )]
    MissingTool {
        /// The binary's name.
        tool: String,
        /// Where it was expected.
        path: std::path::PathBuf,
    },
    /// No cache directory could be derived (neither `XDG_CACHE_HOME` nor `HOME` is set).
    #[error("neither XDG_CACHE_HOME nor HOME is set, so the cluster tools cannot be located")]
    NoCacheDir,
    /// Reading or writing a file or starting a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificates or keys for the control plane could not be generated.
    #[error("generating control-plane certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// The Kubernetes client could not be built or a request failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: kube::Error,
    },
    /// The kubeconfig could not be read or turned into a client configuration.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Which kubeconfig.
        path: std::path::PathBuf,
        /// Why it is unusable.
        message: String,
    },
    /// A control-plane process exited while it should be running.
    #[error("{name} exited ({status}); last lines of {log}:\n{tail}")]
    ProcessExited {
        /// The component, e.g. `kube-apiserver`.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of that log.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the wait was.
        secs: u64,
    },
    /// A command (kubectl, helm, ...) exited unsuccessfully.
    #[error("{command} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The operation needs a control plane this harness started (e.g. restarting the API server)
    /// but the cluster came from `IO360_TEST_KUBECONFIG`.
    #[error("{0} needs the control plane started by the harness, not an existing cluster")]
    NotOwned(&'static str),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
