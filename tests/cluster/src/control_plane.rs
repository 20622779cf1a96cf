//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on free 127.0.0.1
//! ports, in one temporary directory that goes away with the [`ControlPlane`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};

use crate::pki::{self, Pki};
use crate::process::Process;
use crate::tools::Tools;
use crate::{Error, Result, wait};

/// How many fake nodes KWOK runs.
pub const FAKE_NODES: usize = 3;

/// How many PersistentVolumes the harness pre-creates. Nothing provisions volumes in this
/// cluster, so claims without a StorageClass bind to these (static provisioning); KWOK pods do
/// not mount anything, so the volumes only have to exist as objects.
pub const FAKE_VOLUMES: usize = 48;

/// The fake nodes' names: `kwok-node-0` and so on.
pub fn fake_node_name(i: usize) -> String {
    format!("kwok-node-{i}")
}

/// How the control plane is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaneOptions {
    /// Serve pods of a real node too: the API server listens on every address of the run's
    /// network namespace and advertises the node's address (pods reach it through the
    /// `kubernetes` Service), and the Node authorizer admits the kubelet.
    pub real_node: bool,
}

/// A control plane the harness started; stopped (every process, then the directory) on drop.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: processes stop before their directory is removed.
    procs: Mutex<Vec<Process>>,
    server: String,
    kubeconfig: PathBuf,
    pki: Pki,
    dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (free when asked; the component binds it moments later).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

fn arg(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

impl ControlPlane {
    /// Starts everything, waits until the API server is ready, the fake nodes are Ready and the
    /// controller manager has made the `default` ServiceAccount, and returns.
    ///
    /// Each component gets a port found free moments before it binds it; on a busy machine
    /// another socket can take that port in between. A start that fails that way is made
    /// again with fresh ports (the processes of the failed one are stopped as it drops).
    pub async fn start(tools: &Tools) -> Result<ControlPlane> {
        Self::start_with(tools, PlaneOptions::default()).await
    }

    /// [`ControlPlane::start`] with options.
    pub async fn start_with(tools: &Tools, options: PlaneOptions) -> Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match Self::start_once(tools, options).await {
                Err(Error::ProcessExited { tail, .. })
                    if attempt < 3 && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn start_once(tools: &Tools, options: PlaneOptions) -> Result<ControlPlane> {
        // Resolve every binary first: a missing one fails before anything starts.
        let etcd = tools.bin("etcd")?;
        let apiserver = tools.bin("kube-apiserver")?;
        let controller_manager = tools.bin("kube-controller-manager")?;
        let scheduler = tools.bin("kube-scheduler")?;
        let kwok = tools.bin("kwok")?;
        let kwok_stages = tools.kwok_stages()?;

        let dir = crate::process::scratch_dir("io360-k8s-")?;
        let root = dir.path().to_path_buf();
        let pki = pki::generate(&root)?;
        let log = |name: &str| root.join(format!("{name}.log"));

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        // With a real node the API server has the run's network namespace to itself and takes
        // its usual port: NetworkPolicies that let tiers reach it name TCP 443 and 6443, and
        // the node's pods reach it past Service NAT on the port it listens on.
        let api_port = if options.real_node {
            6443
        } else {
            free_port()?
        };
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = root.join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server,
            &pki.ca_cert,
            (&pki.admin_cert, &pki.admin_key),
            "io360-admin",
        )?;

        let plane = ControlPlane {
            procs: Mutex::new(Vec::new()),
            server,
            kubeconfig,
            pki: pki.clone(),
            dir,
        };
        let (bind, advertise, authorization) = if options.real_node {
            let node = crate::isolate::NODE_IP.to_string();
            ("0.0.0.0".to_string(), node, "Node,RBAC")
        } else {
            ("127.0.0.1".to_string(), "127.0.0.1".to_string(), "RBAC")
        };

        plane.push(Process::start(
            "etcd",
            &etcd,
            vec![
                arg("name", "io360"),
                arg("data-dir", root.join("etcd").display()),
                arg(
                    "listen-client-urls",
                    format!("http://127.0.0.1:{etcd_client}"),
                ),
                arg(
                    "advertise-client-urls",
                    format!("http://127.0.0.1:{etcd_client}"),
                ),
                arg("listen-peer-urls", format!("http://127.0.0.1:{etcd_peer}")),
                arg(
                    "initial-advertise-peer-urls",
                    format!("http://127.0.0.1:{etcd_peer}"),
                ),
                arg(
                    "initial-cluster",
                    format!("io360=http://127.0.0.1:{etcd_peer}"),
                ),
                // A test cluster lives minutes; durability across power loss is not needed and
                // fsync on a busy two-core machine is the slowest part of every write.
                arg("unsafe-no-fsync", true),
                arg("log-level", "warn"),
            ],
            log("etcd"),
        )?);

        plane.push(Process::start(
            "kube-apiserver",
            &apiserver,
            vec![
                arg("etcd-servers", format!("http://127.0.0.1:{etcd_client}")),
                arg("bind-address", &bind),
                arg("advertise-address", &advertise),
                arg("secure-port", api_port),
                // Logs and exec go from the API server to the kubelet as an admin.
                arg("kubelet-client-certificate", p(&pki.admin_cert)),
                arg("kubelet-client-key", p(&pki.admin_key)),
                arg("kubelet-preferred-address-types", "InternalIP"),
                arg("cert-dir", root.join("apiserver-certs").display()),
                arg("tls-cert-file", p(&pki.serving_cert)),
                arg("tls-private-key-file", p(&pki.serving_key)),
                arg("client-ca-file", p(&pki.ca_cert)),
                // The aggregation layer, for metrics-server's `metrics.k8s.io`: the API server
                // proxies to it as `front-proxy-client`, naming the caller in headers, and dials
                // the endpoint of its Service directly (the node's address), not the ClusterIP.
                arg("requestheader-client-ca-file", p(&pki.ca_cert)),
                arg("requestheader-allowed-names", pki::FRONT_PROXY_NAME),
                arg("requestheader-username-headers", "X-Remote-User"),
                arg("requestheader-group-headers", "X-Remote-Group"),
                arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
                arg("proxy-client-cert-file", p(&pki.front_proxy_cert)),
                arg("proxy-client-key-file", p(&pki.front_proxy_key)),
                arg("enable-aggregator-routing", true),
                arg("authorization-mode", authorization),
                arg(
                    "service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                ),
                arg(
                    "service-account-key-file",
                    p(&pki.service_account_public_key),
                ),
                arg(
                    "service-account-signing-key-file",
                    p(&pki.service_account_key),
                ),
                arg("service-cluster-ip-range", "10.96.0.0/16"),
                arg("allow-privileged", true),
                arg("profiling", false),
                arg("v", 1),
            ],
            log("kube-apiserver"),
        )?);
        plane.wait_apiserver_ready(Duration::from_secs(120)).await?;

        let cm_port = free_port()?;
        plane.push(Process::start(
            "kube-controller-manager",
            &controller_manager,
            vec![
                arg("kubeconfig", p(&plane.kubeconfig)),
                arg("authentication-kubeconfig", p(&plane.kubeconfig)),
                arg("authorization-kubeconfig", p(&plane.kubeconfig)),
                arg("leader-elect", false),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", cm_port),
                arg("cert-dir", root.join("controller-manager-certs").display()),
                arg(
                    "service-account-private-key-file",
                    p(&pki.service_account_key),
                ),
                arg("root-ca-file", p(&pki.ca_cert)),
                arg("cluster-signing-cert-file", p(&pki.ca_cert)),
                arg("cluster-signing-key-file", p(&pki.ca_key)),
                arg("use-service-account-credentials", false),
                // No metrics pipeline runs here, so the HPA controller could only overwrite
                // HPA status with "failed to get metrics"; tests that need it start one with
                // [`ControlPlane::start_hpa_controller`].
                arg("controllers", "*,-horizontal-pod-autoscaler-controller"),
                arg("v", 1),
            ],
            log("kube-controller-manager"),
        )?);

        let sched_port = free_port()?;
        plane.push(Process::start(
            "kube-scheduler",
            &scheduler,
            vec![
                arg("kubeconfig", p(&plane.kubeconfig)),
                arg("authentication-kubeconfig", p(&plane.kubeconfig)),
                arg("authorization-kubeconfig", p(&plane.kubeconfig)),
                arg("leader-elect", false),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", sched_port),
                arg("v", 1),
            ],
            log("kube-scheduler"),
        )?);

        plane.push(Process::start(
            "kwok",
            &kwok,
            vec![
                arg("kubeconfig", p(&plane.kubeconfig)),
                arg("config", p(&kwok_stages)),
                arg("manage-all-nodes", false),
                arg(
                    "manage-nodes-with-annotation-selector",
                    "kwok.x-k8s.io/node=fake",
                ),
                arg("cidr", "10.244.0.1/16"),
                arg("node-ip", "10.240.0.1"),
                arg("node-lease-duration-seconds", 40),
            ],
            log("kwok"),
        )?);

        plane.create_fake_volumes().await?;
        plane.create_fake_nodes().await?;
        Ok(plane)
    }

    fn push(&self, proc: Process) {
        self.procs.lock().expect("process list poisoned").push(proc);
    }

    /// Fails with a log tail if any component has exited.
    pub fn check_running(&self) -> Result<()> {
        for proc in self.procs.lock().expect("process list poisoned").iter_mut() {
            proc.check_running()?;
        }
        Ok(())
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig for the real node's kubelet (`kubelet`) or kube-proxy (`proxy`)
    /// with its own client certificate, and returns its path.
    pub fn node_kubeconfig(&self, component: &str) -> Result<PathBuf> {
        let (cert, key, user) = match component {
            "kubelet" => (
                &self.pki.kubelet_client_cert,
                &self.pki.kubelet_client_key,
                "kubelet",
            ),
            _ => (&self.pki.proxy_cert, &self.pki.proxy_key, "kube-proxy"),
        };
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.pki.ca_cert, (cert, key), user)?;
        Ok(path)
    }

    /// The cluster CA's certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The kubelet's serving certificate and key.
    pub fn kubelet_serving(&self) -> (&Path, &Path) {
        (
            &self.pki.kubelet_serving_cert,
            &self.pki.kubelet_serving_key,
        )
    }

    /// metrics-server's serving certificate and key.
    pub fn metrics_serving(&self) -> (&Path, &Path) {
        (
            &self.pki.metrics_serving_cert,
            &self.pki.metrics_serving_key,
        )
    }

    /// The directory holding certificates, data and every component's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A component's log file, e.g. `kube-apiserver.log`.
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.path().join(format!("{component}.log"))
    }

    async fn admin_client(&self) -> Result<kube::Client> {
        crate::cluster::client_for(&self.kubeconfig).await
    }

    async fn wait_apiserver_ready(&self, timeout: Duration) -> Result<()> {
        let client = self.admin_client().await?;
        wait::until_alive(
            "kube-apiserver /readyz",
            timeout,
            Duration::from_millis(300),
            || self.check_running(),
            || {
                let client = client.clone();
                async move {
                    let request = http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| e.to_string())?;
                    match client.request_text(request).await {
                        Ok(body) if body.trim() == "ok" => Ok(()),
                        Ok(body) => Err(body),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await
        .map_err(|e| self.enrich(e))
    }

    /// Turns a timeout into an error that also carries the tail of a dead component's log.
    fn enrich(&self, error: Error) -> Error {
        match self.check_running() {
            Err(dead) => dead,
            Ok(()) => error,
        }
    }

    async fn create_fake_volumes(&self) -> Result<()> {
        let volumes: Api<PersistentVolume> = Api::all(self.admin_client().await?);
        for i in 0..FAKE_VOLUMES {
            let name = format!("fake-volume-{i}");
            let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"io360.dev/fake-volume": "true"}},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/io360-fake-volumes/{i}")},
                },
            }))
            .expect("volume literal is a valid PersistentVolume");
            volumes
                .create(&PostParams::default(), &volume)
                .await
                .map_err(|e| Error::kube(format!("creating {name}"), e))?;
        }
        Ok(())
    }

    async fn create_fake_nodes(&self) -> Result<()> {
        let client = self.admin_client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..FAKE_NODES {
            let node: Node = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": fake_node_name(i),
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": fake_node_name(i),
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }))
            .expect("node literal is a valid Node");
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map_err(|e| Error::kube(format!("creating fake node {}", fake_node_name(i)), e))?;
        }

        wait::until_alive(
            "fake nodes Ready",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || self.check_running(),
            || {
                let nodes = nodes.clone();
                async move {
                    let list = nodes
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let ready = list.items.iter().filter(|n| node_ready(n)).count();
                    if ready >= FAKE_NODES {
                        Ok(())
                    } else {
                        Err(format!("{ready} of {FAKE_NODES} nodes Ready"))
                    }
                }
            },
        )
        .await
        .map_err(|e| self.enrich(e))?;

        // Pods cannot be admitted until the controller manager has made the namespace's
        // `default` ServiceAccount.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        wait::until_alive(
            "ServiceAccount default/default",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || self.check_running(),
            || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not created yet".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await
        .map_err(|e| self.enrich(e))
    }

    /// Stops the API server and starts it again on the same port and etcd, then waits for
    /// `/readyz`. Everything else keeps running, as in a control-plane upgrade or crash.
    pub async fn restart_apiserver(&self) -> Result<()> {
        {
            let mut procs = self.procs.lock().expect("process list poisoned");
            let apiserver = procs
                .iter_mut()
                .find(|p| p.name() == "kube-apiserver")
                .expect("the control plane always has an API server");
            apiserver.restart(Duration::from_secs(10))?;
        }
        self.wait_apiserver_ready(Duration::from_secs(120)).await
    }

    /// Starts a second controller manager running only the HPA controller (syncing every
    /// `sync_period`), for as long as the returned guard lives.
    pub fn start_hpa_controller(
        &self,
        tools: &Tools,
        sync_period: Duration,
    ) -> Result<HpaController> {
        let binary = tools.bin("kube-controller-manager")?;
        let port = free_port()?;
        let root = self.dir.path();
        let proc = Process::start(
            "hpa-controller",
            &binary,
            vec![
                arg("kubeconfig", p(&self.kubeconfig)),
                arg("leader-elect", false),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", port),
                arg("cert-dir", root.join("hpa-controller-certs").display()),
                arg("controllers", "horizontal-pod-autoscaler-controller"),
                arg(
                    "horizontal-pod-autoscaler-sync-period",
                    format!("{}s", sync_period.as_secs().max(1)),
                ),
                arg("v", 2),
            ],
            root.join("hpa-controller.log"),
        )?;
        Ok(HpaController { _proc: proc })
    }
}

impl Drop for ControlPlane {
    /// Stops components in the reverse of their start order, so nothing outlives what it
    /// depends on (an API server without etcd takes long to give up); the directory goes after.
    fn drop(&mut self) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut proc) = procs.pop() {
            proc.stop(Duration::from_secs(5));
        }
    }
}

/// A running HPA-only controller manager; stopped on drop.
#[derive(Debug)]
pub struct HpaController {
    _proc: Process,
}

/// Whether a Node's `Ready` condition is `True`.
pub(crate) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    (cert, key): (&Path, &Path),
    user: &str,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "io360-test",
            "cluster": {"server": server, "certificate-authority": p(ca)},
        }],
        "users": [{
            "name": user,
            "user": {"client-certificate": p(cert), "client-key": p(key)},
        }],
        "contexts": [{
            "name": "io360-test",
            "context": {"cluster": "io360-test", "user": user, "namespace": "default"},
        }],
        "current-context": "io360-test",
    });
    let yaml = serde_yaml::to_string(&config).expect("kubeconfig literal serializes");
    std::fs::write(path, yaml).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
