//! One real node next to KWOK's fake ones: containerd and runc with the CNI bridge, the
//! kubelet and kube-proxy at the control plane's release, CoreDNS for Service names, an OCI
//! registry on loopback that pods pull io360's images from, local PersistentVolumes that
//! claims bind and mount for real, kube-router's firewall, which enforces NetworkPolicies
//! on the node's pods with iptables and ipsets, and metrics-server, so autoscalers read the
//! pods' real CPU.
//!
//! Everything runs inside the run's namespaces (see [`crate::isolate`]); the node's address, the
//! pods' and the Services' addresses exist only there. The node is tainted
//! [`REAL_NODE_TAINT`] and labelled [`REAL_NODE_LABEL`], so a test puts a pod on it only by
//! asking (a toleration and a node selector) and the fake nodes keep everything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control_plane::{ControlPlane, node_ready};
use crate::isolate::{NODE_IP, POD_CIDR, RunNamespace, SERVICE_CIDR};
use crate::pki::REAL_NODE_NAME;
use crate::process::Process;
use crate::tools::Tools;
use crate::{Error, Result, wait};

/// The taint on the real node (`key=value:NoSchedule`): pods must tolerate it to land there.
pub const REAL_NODE_TAINT: (&str, &str) = ("io360.dev/real-node", "true");
/// The label on the real node (`key=value`), for node selectors.
pub const REAL_NODE_LABEL: (&str, &str) = ("io360.dev/node", "real");
/// The StorageClass of the real node's local volumes.
pub const LOCAL_STORAGE_CLASS: &str = "io360-local";
/// How many local PersistentVolumes the node offers.
pub const LOCAL_VOLUMES: usize = 24;

/// The real node; its processes stop in reverse start order on drop.
#[derive(Debug)]
pub struct RealNode {
    procs: std::sync::Mutex<Vec<Process>>,
    /// metrics-server, kept apart so a test can take the metrics pipeline away and bring it
    /// back, and whether it should be running.
    metrics: std::sync::Mutex<(Option<Process>, bool)>,
    registry: String,
    dir: PathBuf,
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

use crate::process::run_blocking as command;

impl RealNode {
    /// Starts the registry, containerd, the kubelet, kube-proxy and CoreDNS in `run`'s
    /// namespaces, makes the node's volumes, pushes the pause image, and waits until the node
    /// is Ready and DNS answers.
    pub async fn start(
        plane: &ControlPlane,
        tools: &Tools,
        run: &RunNamespace,
    ) -> Result<RealNode> {
        let kubelet = tools.bin("kubelet")?;
        let proxy = tools.bin("kube-proxy")?;
        let coredns = tools.bin("coredns")?;
        let registry_bin = tools.bin("registry")?;
        let pause = tools.bin("pause")?;
        let kube_router = tools.bin("kube-router")?;
        tools.bin("metrics-server")?;
        for (tool, path) in [
            ("containerd", "/usr/bin/containerd"),
            ("runc", "/usr/sbin/runc"),
            ("CNI bridge plugin", "/usr/lib/cni/bridge"),
            ("skopeo", "/usr/bin/skopeo"),
            ("umoci", "/usr/bin/umoci"),
            ("ipset", "/usr/sbin/ipset"),
        ] {
            if !Path::new(path).exists() {
                return Err(Error::MissingTool {
                    tool: format!("{tool} (Debian package; tests/run-all.sh installs it)"),
                    path: path.into(),
                });
            }
        }
        run.create_cgroup_root()?;
        let dir = run.dir().to_path_buf();
        let log = |name: &str| dir.join(format!("{name}.log"));
        let mut node = RealNode {
            procs: std::sync::Mutex::new(Vec::new()),
            metrics: std::sync::Mutex::new((None, true)),
            registry: String::new(),
            dir: dir.clone(),
        };

        // --- the registry, on the namespace's loopback
        let registry_port = free_port()?;
        node.registry = format!("127.0.0.1:{registry_port}");
        let registry_config = dir.join("registry.yaml");
        write(
            &registry_config,
            &format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
                 filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
                p(&dir.join("registry")),
                node.registry
            ),
        )?;
        node.push(Process::start(
            "registry",
            &registry_bin,
            vec!["serve".into(), p(&registry_config)],
            log("registry"),
        )?);
        Probe::new(&format!("http://{}/v2/", node.registry))
            .wait("the image registry", Duration::from_secs(30))
            .await?;
        let pause_ref = node.push_pause(&pause)?;

        // --- containerd with the CRI plugin, runc and the CNI bridge
        let ctrd = dir.join("containerd");
        let socket = ctrd.join("containerd.sock");
        let certs = ctrd.join("certs.d");
        write(
            &certs.join(&node.registry).join("hosts.toml"),
            &format!(
                "server = \"http://{r}\"\n\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                r = node.registry
            ),
        )?;
        let cni_conf = dir.join("cni/net.d");
        write(
            &cni_conf.join("10-io360.conflist"),
            &serde_json::json!({
                "cniVersion": "0.4.0",
                "name": "io360",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": crate::isolate::BRIDGE,
                        "isGateway": true,
                        "ipMasq": true,
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP.to_string()}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": p(&dir.join("cni/ipam")),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            })
            .to_string(),
        )?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  # This machine's process may not lower an oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
            root = p(&ctrd.join("root")),
            state = p(&ctrd.join("state")),
            socket = p(&socket),
            cni_conf = p(&cni_conf),
            certs = p(&certs),
        );
        let containerd_config = ctrd.join("config.toml");
        write(&containerd_config, &config)?;
        node.push(Process::start(
            "containerd",
            Path::new("/usr/bin/containerd"),
            vec!["--config".into(), p(&containerd_config)],
            log("containerd"),
        )?);
        {
            let socket = socket.clone();
            wait::until(
                "containerd's socket",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    let socket = socket.clone();
                    async move {
                        if socket.exists() {
                            Ok(())
                        } else {
                            Err("not yet".to_string())
                        }
                    }
                },
            )
            .await?;
        }

        // --- the kubelet
        let resolv = dir.join("resolv.conf");
        write(&resolv, "")?;
        let (serving_cert, serving_key) = plane.kubelet_serving();
        let healthz = free_port()?;
        let kubelet_config = dir.join("kubelet.yaml");
        let kubelet_yaml = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP.to_string(),
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": p(plane.ca_cert())},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": p(serving_cert),
            "tlsPrivateKeyFile": p(serving_key),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": run.cgroup_root(),
            // This machine has cgroups v1 (with a v2 hierarchy beside them).
            "failCgroupV1": false,
            "failSwapOn": false,
            // Lowering an oom_score_adj needs CAP_SYS_RESOURCE, which this machine withholds.
            "oomScoreAdj": 0,
            "clusterDNS": [NODE_IP.to_string()],
            "clusterDomain": "cluster.local",
            "containerRuntimeEndpoint": format!("unix://{}", p(&socket)),
            "resolvConf": p(&resolv),
            "registerWithTaints": [{
                "key": REAL_NODE_TAINT.0, "value": REAL_NODE_TAINT.1, "effect": "NoSchedule",
            }],
            // The machine's disk is shared with builds; evict only when it is truly full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 60,
            "serializeImagePulls": false,
            "syncFrequency": "10s",
        });
        write(&kubelet_config, &kubelet_yaml.to_string())?;
        node.push(Process::start(
            "kubelet",
            &kubelet,
            vec![
                format!("--config={}", p(&kubelet_config)),
                format!("--kubeconfig={}", p(&plane.node_kubeconfig("kubelet")?)),
                format!("--root-dir={}", p(&dir.join("kubelet"))),
                format!("--hostname-override={REAL_NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                format!("--node-labels={}={}", REAL_NODE_LABEL.0, REAL_NODE_LABEL.1),
                "--v=1".into(),
            ],
            log("kubelet"),
        )?);

        // --- kube-proxy (iptables mode, in the run's network namespace)
        let proxy_config = dir.join("kube-proxy.yaml");
        let proxy_yaml = serde_json::json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": p(&plane.node_kubeconfig("proxy")?)},
            "hostnameOverride": REAL_NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": format!("127.0.0.1:{}", free_port()?),
            "metricsBindAddress": format!("127.0.0.1:{}", free_port()?),
            // Conntrack table sizes are the machine's, not the namespace's: leave them alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        });
        write(&proxy_config, &proxy_yaml.to_string())?;
        node.push(Process::start(
            "kube-proxy",
            &proxy,
            vec![format!("--config={}", p(&proxy_config)), "--v=1".into()],
            log("kube-proxy"),
        )?);

        // --- CoreDNS on the node's address, answering cluster names from the API server
        let corefile = dir.join("Corefile");
        let dns_health = free_port()?;
        let dns_ready = free_port()?;
        write(
            &corefile,
            &format!(
                ".:53 {{\n    bind {NODE_IP}\n    errors\n    health 127.0.0.1:{dns_health}\n    \
                 ready 127.0.0.1:{dns_ready}\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        \
                 kubeconfig {}\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    \
                 cache 5\n}}\n",
                p(plane.kubeconfig())
            ),
        )?;
        node.push(Process::start(
            "coredns",
            &coredns,
            vec!["-conf".into(), p(&corefile)],
            log("coredns"),
        )?);

        node.wait_ready(plane).await?;
        Probe::new(&format!("http://127.0.0.1:{dns_ready}/ready"))
            .wait("CoreDNS ready", Duration::from_secs(60))
            .await
            .map_err(|e| node.enrich(e))?;

        // --- kube-router's firewall alone (no routing, service proxy or CNI): NetworkPolicies
        // become iptables chains and ipsets for the pods on this node. It reads the node's
        // address from its Node object, so it starts once the node is registered.
        let router_health = free_port()?;
        node.push(Process::start(
            "kube-router",
            &kube_router,
            vec![
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--run-loadbalancer=false".into(),
                "--enable-cni=false".into(),
                format!("--kubeconfig={}", p(plane.kubeconfig())),
                format!("--hostname-override={REAL_NODE_NAME}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--health-port={router_health}"),
                "--metrics-port=0".into(),
                "--v=1".into(),
            ],
            log("kube-router"),
        )?);
        Probe::new(&format!("http://127.0.0.1:{router_health}/healthz"))
            .wait("kube-router's firewall healthy", Duration::from_secs(60))
            .await
            .map_err(|e| node.enrich(e))?;
        node.create_volumes(plane).await?;

        // --- metrics-server, so autoscalers and `kubectl top` read the pods' real usage
        *node.metrics.lock().expect("poisoned") =
            (Some(crate::metrics::start(plane, tools, &dir)?), true);
        crate::metrics::register(plane, || node.check_running())
            .await
            .map_err(|e| node.enrich(e))?;
        Ok(node)
    }

    /// The registry's address, `127.0.0.1:<port>` (inside the run's network namespace).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The directory of the node's state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A component's log file, e.g. `kubelet.log`.
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    fn push(&self, proc: Process) {
        self.procs.lock().expect("process list poisoned").push(proc);
    }

    /// Fails with a log tail if a node component has died (metrics-server counts unless a
    /// test stopped it).
    pub fn check_running(&self) -> Result<()> {
        for proc in self.procs.lock().expect("process list poisoned").iter_mut() {
            proc.check_running()?;
        }
        if let (Some(proc), true) = &mut *self.metrics.lock().expect("poisoned") {
            proc.check_running()?;
        }
        Ok(())
    }

    /// Stops metrics-server, as an outage of the metrics pipeline: `metrics.k8s.io` stays
    /// registered and answers 503, so autoscalers get no reading.
    pub fn stop_metrics_server(&self) {
        let mut metrics = self.metrics.lock().expect("poisoned");
        metrics.1 = false;
        if let Some(proc) = metrics.0.as_mut() {
            proc.stop(Duration::from_secs(5));
        }
    }

    /// Starts metrics-server again after [`RealNode::stop_metrics_server`] and waits until it
    /// reports the node's usage.
    pub async fn start_metrics_server(&self, plane: &ControlPlane) -> Result<()> {
        {
            let mut metrics = self.metrics.lock().expect("poisoned");
            if let Some(proc) = metrics.0.as_mut() {
                proc.restart(Duration::from_secs(5))?;
            }
            metrics.1 = true;
        }
        crate::metrics::register(plane, || self.check_running())
            .await
            .map_err(|e| self.enrich(e))
    }

    fn enrich(&self, error: Error) -> Error {
        match self.check_running() {
            Err(dead) => dead,
            Ok(()) => error,
        }
    }

    /// Pushes an OCI archive (as `tests/images/build.sh` writes) to the registry as
    /// `<registry>/<name>:<tag>`, and returns that reference.
    pub fn push_archive(&self, archive: &Path, name: &str, tag: &str) -> Result<String> {
        let reference = format!("{}/{name}:{tag}", self.registry);
        skopeo_copy(&format!("oci-archive:{}", p(archive)), &reference)?;
        Ok(reference)
    }

    /// Makes the pause image (a static `pause` and nothing else) with umoci and pushes it.
    fn push_pause(&self, pause: &Path) -> Result<String> {
        let layout = self.dir.join("pause-oci");
        let image = format!("{}:pause", p(&layout));
        command("umoci", &["init", "--layout", &p(&layout)])?;
        command("umoci", &["new", "--image", &image])?;
        command("umoci", &["insert", "--image", &image, &p(pause), "/pause"])?;
        command(
            "umoci",
            &["config", "--image", &image, "--config.entrypoint", "/pause"],
        )?;
        let reference = format!("{}/pause:{}", self.registry, crate::tools::K8S_VERSION);
        skopeo_copy(&format!("oci:{image}"), &reference)?;
        Ok(reference)
    }

    /// Makes the probe image (a static busybox from Debian's `busybox-static`, at `/busybox`,
    /// for `wget` and `nc` in pods) with umoci, pushes it, and returns its reference.
    pub fn push_probe(&self) -> Result<String> {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err(Error::MissingTool {
                tool: "busybox-static (Debian package; tests/run-all.sh installs it)".into(),
                path: busybox.into(),
            });
        }
        let layout = self.dir.join("probe-oci");
        let image = format!("{}:probe", p(&layout));
        if !layout.exists() {
            command("umoci", &["init", "--layout", &p(&layout)])?;
            command("umoci", &["new", "--image", &image])?;
            command(
                "umoci",
                &["insert", "--image", &image, &p(busybox), "/busybox"],
            )?;
            command(
                "umoci",
                &[
                    "config",
                    "--image",
                    &image,
                    "--config.entrypoint",
                    "/busybox",
                ],
            )?;
        }
        let reference = format!("{}/probe:busybox", self.registry);
        skopeo_copy(&format!("oci:{image}"), &reference)?;
        Ok(reference)
    }

    async fn wait_ready(&self, plane: &ControlPlane) -> Result<()> {
        let client = crate::cluster::client_for(plane.kubeconfig()).await?;
        let nodes: Api<Node> = Api::all(client);
        let result = wait::until(
            "the real node Ready",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || {
                let nodes = nodes.clone();
                async move {
                    match nodes.get_opt(REAL_NODE_NAME).await {
                        Ok(Some(n)) if node_ready(&n) => Ok(()),
                        Ok(Some(_)) => Err("registered, not Ready".to_string()),
                        Ok(None) => Err("not registered".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        result.map_err(|e| self.enrich(e))
    }

    /// A StorageClass whose volumes bind when a pod needs them, and local volumes on the node
    /// for it: directories in the run's directory, bind-mounted into pods by the kubelet.
    async fn create_volumes(&self, plane: &ControlPlane) -> Result<()> {
        let client = crate::cluster::client_for(plane.kubeconfig()).await?;
        let apply = |obj: serde_json::Value, gvk: (&'static str, &'static str, &'static str)| {
            let client = client.clone();
            async move {
                let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                    gvk.0, gvk.1, gvk.2,
                ));
                let api: Api<DynamicObject> = Api::all_with(client, &resource);
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("io360-cluster-tests").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .map(|_| ())
                .map_err(|e| Error::kube(format!("applying {} {name}", gvk.2), e))
            }
        };
        apply(
            serde_json::json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": LOCAL_STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }),
            ("storage.k8s.io", "v1", "StorageClass"),
        )
        .await?;
        for i in 0..LOCAL_VOLUMES {
            let path = self.dir.join("volumes").join(i.to_string());
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            apply(
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": format!("local-volume-{i}")},
                    "spec": {
                        "capacity": {"storage": "5Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": LOCAL_STORAGE_CLASS,
                        "local": {"path": p(&path)},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{
                            "matchExpressions": [{
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": [REAL_NODE_NAME],
                            }],
                        }]}},
                    },
                }),
                ("", "v1", "PersistentVolume"),
            )
            .await?;
        }
        Ok(())
    }
}

/// Copies an image (`oci:` layout or `oci-archive:`) to `reference` in the node's registry,
/// which speaks plain HTTP on loopback.
fn skopeo_copy(source: &str, reference: &str) -> Result<()> {
    command(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            source,
            &format!("docker://{reference}"),
        ],
    )
    .map(|_| ())
}

impl Drop for RealNode {
    /// The kubelet goes first so it restarts nothing; the run's teardown then kills what the
    /// containers and shims left.
    fn drop(&mut self) {
        let metrics = self.metrics.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(proc) = metrics.0.as_mut() {
            proc.stop(Duration::from_secs(5));
        }
        let procs = self.procs.get_mut().unwrap_or_else(|p| p.into_inner());
        while let Some(mut proc) = procs.pop() {
            proc.stop(Duration::from_secs(5));
        }
    }
}

/// A plain HTTP GET on loopback that succeeds on a 2xx, for readiness waits (the harness has
/// no HTTP client of its own besides kube's).
struct Probe {
    url: String,
}

impl Probe {
    fn new(url: &str) -> Probe {
        Probe {
            url: url.to_string(),
        }
    }

    /// Waits until the URL answers 2xx, polling every 200 ms.
    async fn wait(&self, what: &str, timeout: Duration) -> Result<()> {
        wait::until(what, timeout, Duration::from_millis(200), || self.check()).await
    }

    async fn check(&self) -> std::result::Result<(), String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| "only http:// URLs".to_string())?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        if line.starts_with("HTTP/1.1 2") || line.starts_with("HTTP/1.0 2") {
            Ok(())
        } else {
            Err(line.lines().next().unwrap_or_default().to_string())
        }
    }
}
