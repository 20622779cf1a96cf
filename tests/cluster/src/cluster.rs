//! The cluster a test runs against: one this harness started, or the one
//! `IO360_TEST_KUBECONFIG` names. Either way tests get a kubeconfig, a client, and `kubectl` and
//! `helm` built at the matching release.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::control_plane::{ControlPlane, HpaController, PlaneOptions};
use crate::isolate::RunNamespace;
use crate::node::RealNode;
use crate::tools::Tools;
use crate::{Error, Result};

/// The environment variable naming an existing cluster's kubeconfig to test against.
pub const KUBECONFIG_ENV: &str = "IO360_TEST_KUBECONFIG";

/// Where the cluster came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMode {
    /// Started by this harness on loopback; stopped when the [`Cluster`] drops.
    Owned,
    /// An existing cluster named by `IO360_TEST_KUBECONFIG`; left as it was found.
    External,
}

/// A Kubernetes cluster for tests. Dropping it stops a control plane the harness started.
#[derive(Debug)]
pub struct Cluster {
    tools: Tools,
    kubeconfig: PathBuf,
    // Declared in drop order: the node's kubelet before the control plane, processes before
    // the files they use.
    node: Option<RealNode>,
    plane: Option<ControlPlane>,
    scratch: tempfile::TempDir,
}

/// A client for the current context of the kubeconfig at `path`.
pub(crate) async fn client_for(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    kube::Client::try_from(config).map_err(|e| Error::kube("building a client", e))
}

impl Cluster {
    /// Uses the cluster `IO360_TEST_KUBECONFIG` names, or starts one on loopback.
    pub async fn start() -> Result<Cluster> {
        let tools = Tools::locate()?;
        // kubectl and helm are needed in both modes; fail before starting anything.
        tools.bin("kubectl")?;
        tools.bin("helm")?;
        let scratch = crate::process::scratch_dir("io360-cluster-tests-")?;

        let (kubeconfig, plane) = match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                // Prove the cluster answers before any test runs.
                let client = client_for(&path).await?;
                client.apiserver_version().await.map_err(|e| {
                    Error::kube(format!("reaching the cluster in {}", path.display()), e)
                })?;
                (path, None)
            }
            None => {
                let plane = ControlPlane::start(&tools).await?;
                (plane.kubeconfig().to_path_buf(), Some(plane))
            }
        };
        Ok(Cluster {
            tools,
            kubeconfig,
            node: None,
            plane,
            scratch,
        })
    }

    /// Starts a control plane and, next to KWOK's fake nodes, one real node (containerd, the
    /// kubelet, kube-proxy, CoreDNS, a registry), all inside `run`'s namespaces, which the
    /// process must have entered already ([`crate::isolate::enter`]).
    pub async fn start_with_real_node(run: &RunNamespace) -> Result<Cluster> {
        let tools = Tools::locate()?;
        tools.bin("kubectl")?;
        tools.bin("helm")?;
        let scratch = crate::process::scratch_dir("io360-cluster-tests-")?;
        let plane = ControlPlane::start_with(&tools, PlaneOptions { real_node: true }).await?;
        let node = RealNode::start(&plane, &tools, run).await?;
        Ok(Cluster {
            kubeconfig: plane.kubeconfig().to_path_buf(),
            tools,
            node: Some(node),
            plane: Some(plane),
            scratch,
        })
    }

    /// The real node, when the cluster has one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// Whether the harness started this cluster or found it.
    pub fn mode(&self) -> ClusterMode {
        if self.plane.is_some() {
            ClusterMode::Owned
        } else {
            ClusterMode::External
        }
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The built tools (kubectl, helm and, for an owned cluster, the control plane).
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// The control plane, when the harness started it.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.plane.as_ref()
    }

    /// A directory that lives as long as the cluster, for test files.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// `kubectl --kubeconfig <admin>`, from the tools built at the server's release.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd =
            tokio::process::Command::new(self.tools.bin("kubectl").expect("checked in start"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd.kill_on_drop(true);
        cmd
    }

    /// `helm` with the admin kubeconfig and its cache, config and data kept in the scratch
    /// directory, so tests neither read nor change the user's Helm setup.
    pub fn helm(&self) -> tokio::process::Command {
        let mut cmd =
            tokio::process::Command::new(self.tools.bin("helm").expect("checked in start"));
        let home = self.scratch.path().join("helm");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` with a token
    /// from the TokenRequest API, against the same server as the admin kubeconfig. Whatever
    /// runs with it gets exactly the RBAC that account was granted.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 6 * 3600},
        }))
        .expect("TokenRequest literal is valid");
        let granted: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::kube(
                    format!("requesting a token for ServiceAccount {namespace}/{name}"),
                    e,
                )
            })?;
        let token = granted.status.map(|s| s.token).unwrap_or_default();

        let admin = Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Kubeconfig {
            path: self.kubeconfig.clone(),
            message: e.to_string(),
        })?;
        let admin = serde_json::to_value(&admin).expect("kubeconfig serializes");
        let bad = |message: &str| Error::Kubeconfig {
            path: self.kubeconfig.clone(),
            message: message.to_string(),
        };
        let current = admin["current-context"]
            .as_str()
            .ok_or_else(|| bad("no current-context"))?;
        let context = admin["contexts"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == current))
            .ok_or_else(|| bad("current-context names no context"))?;
        let cluster_name = context["context"]["cluster"].clone();
        let cluster = admin["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == cluster_name))
            .ok_or_else(|| bad("the current context names no cluster"))?;

        let user = format!("system:serviceaccount:{namespace}:{name}");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{
                "name": user,
                "context": {"cluster": cluster_name, "user": user, "namespace": namespace},
            }],
            "current-context": user,
        });
        let path = self
            .scratch
            .path()
            .join(format!("{namespace}-{name}.kubeconfig"));
        let yaml = serde_yaml::to_string(&config).expect("kubeconfig serializes");
        std::fs::write(&path, yaml)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// Restarts the API server (owned clusters only) and waits until it is ready again.
    pub async fn restart_apiserver(&self) -> Result<()> {
        match &self.plane {
            Some(plane) => plane.restart_apiserver().await,
            None => Err(Error::NotOwned("restarting the API server")),
        }
    }

    /// Runs the HPA controller for as long as the guard lives. An external cluster runs its
    /// own, so there this returns `None`.
    pub fn hpa_controller(&self, sync_period: Duration) -> Result<Option<HpaController>> {
        match &self.plane {
            Some(plane) => plane
                .start_hpa_controller(&self.tools, sync_period)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Starts the real node's per-tier metrics pipeline (Prometheus scraping the node's io360
    /// pods, and a custom metrics adapter serving `custom.metrics.k8s.io` from it) and waits
    /// until the API server serves it; dropping the handle stops and unregisters it.
    pub async fn custom_metrics(&self) -> Result<crate::CustomMetrics> {
        match (&self.node, &self.plane) {
            (Some(node), Some(plane)) => {
                crate::CustomMetrics::start(plane, &self.tools, node.dir()).await
            }
            _ => Err(Error::NotOwned("starting the custom metrics pipeline")),
        }
    }

    /// Starts a PostgreSQL server on the real node's address, for store pods on engine
    /// Postgres; dropping the handle stops it.
    pub async fn postgres(&self) -> Result<crate::PostgresServer> {
        match &self.node {
            Some(node) => crate::PostgresServer::start(node.dir()).await,
            None => Err(Error::NotOwned("starting PostgreSQL")),
        }
    }

    /// Stops the real node's metrics-server (an outage of the metrics pipeline).
    pub fn stop_metrics_server(&self) -> Result<()> {
        match &self.node {
            Some(node) => {
                node.stop_metrics_server();
                Ok(())
            }
            None => Err(Error::NotOwned("stopping metrics-server")),
        }
    }

    /// Starts the real node's metrics-server again and waits until it serves.
    pub async fn start_metrics_server(&self) -> Result<()> {
        match (&self.node, &self.plane) {
            (Some(node), Some(plane)) => node.start_metrics_server(plane).await,
            _ => Err(Error::NotOwned("starting metrics-server")),
        }
    }

    /// Fails with a log tail if a component of an owned control plane has died.
    pub fn check_running(&self) -> Result<()> {
        if let Some(node) = &self.node {
            node.check_running()?;
        }
        match &self.plane {
            Some(plane) => plane.check_running(),
            None => Ok(()),
        }
    }
}

/// Runs a command to completion and returns its stdout, or an error carrying its stderr.
pub async fn run(cmd: &mut tokio::process::Command) -> Result<String> {
    let described = format!("{:?}", cmd.as_std());
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {described}"), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: described,
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
