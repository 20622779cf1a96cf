//! The per-tier metrics pipeline of the real node: Prometheus scrapes every io360 pod on the
//! node (`/metrics` on the `metrics` port), and a custom metrics adapter
//! (`tests/cluster/metrics-adapter`, on the library prometheus-adapter is built on) serves
//! `custom.metrics.k8s.io` from it. HorizontalPodAutoscalers then read per-pod metrics such as
//! longpoll's held connections, as they would in a cluster running Prometheus and
//! prometheus-adapter.
//!
//! Debian's Prometheus has no Kubernetes service discovery, so a task of the harness lists the
//! node's io360 pods every [`DISCOVERY_EVERY`] and writes them as Prometheus's file-based
//! targets, each labelled with its `namespace`, `pod` and `component`, the labels the adapter
//! queries by.
//!
//! A test starts the pipeline when it needs it ([`crate::Cluster::custom_metrics`]); dropping
//! it stops both processes and unregisters the API, so a namespace deleted later is not held
//! up by an API group nobody serves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::control_plane::ControlPlane;
use crate::isolate::NODE_IP;
use crate::pki::{CUSTOM_METRICS_SERVICE, REAL_NODE_NAME};
use crate::process::Process;
use crate::tools::Tools;
use crate::{Error, Result, wait};

/// The port the adapter serves on, at the node's address.
pub const ADAPTER_PORT: u16 = 4444;
/// The port of every tier pod's `/metrics` (the operator names it `metrics`).
const TIER_METRICS_PORT: u16 = 9090;
/// How often Prometheus scrapes the pods (and evaluates), in seconds.
pub const SCRAPE_EVERY_SECS: u64 = 2;
/// How often the harness writes the node's pods as Prometheus's targets.
const DISCOVERY_EVERY: Duration = Duration::from_secs(2);
/// The metrics the adapter serves for pods: the ones a CommentCluster's autoscalers can name.
pub const SERVED_METRICS: [&str; 2] = [
    "io360_longpoll_held_connections",
    "io360_http_requests_in_flight",
];
/// The API versions registered for the adapter.
const VERSIONS: [&str; 2] = ["v1beta1", "v1beta2"];

/// Prometheus and the adapter, running; stopped and unregistered on drop.
#[derive(Debug)]
pub struct CustomMetrics {
    prometheus: Mutex<Process>,
    adapter: Mutex<Process>,
    discovery: tokio::task::JoinHandle<()>,
    prometheus_url: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// The node's Running io360 pods as one Prometheus file-based target group each.
async fn targets(pods: &Api<Pod>) -> std::result::Result<String, kube::Error> {
    let params = ListParams::default()
        .labels("app.kubernetes.io/name=io360")
        .fields(&format!(
            "spec.nodeName={REAL_NODE_NAME},status.phase=Running"
        ));
    let groups: Vec<serde_json::Value> = pods
        .list(&params)
        .await?
        .into_iter()
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            Some(serde_json::json!({
                "targets": [format!("{ip}:{}", TIER_METRICS_PORT)],
                "labels": {
                    "namespace": pod.metadata.namespace.clone().unwrap_or_default(),
                    "pod": pod.metadata.name.clone().unwrap_or_default(),
                    "component": labels.get("app.kubernetes.io/component").cloned().unwrap_or_default(),
                },
            }))
        })
        .collect();
    Ok(serde_json::Value::Array(groups).to_string())
}

impl CustomMetrics {
    /// Starts Prometheus, the target discovery and the adapter in `dir`, registers the
    /// adapter as `custom.metrics.k8s.io`, and waits until the API server serves it.
    pub(crate) async fn start(
        plane: &ControlPlane,
        tools: &Tools,
        dir: &Path,
    ) -> Result<CustomMetrics> {
        let prometheus_bin = tools.bin("prometheus")?;
        let adapter_bin = tools.bin("io360-metrics-adapter")?;
        let kubectl = tools.bin("kubectl")?;
        let dir = dir.join("custom-metrics");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let client = crate::cluster::client_for(plane.kubeconfig()).await?;

        // --- the targets, written before Prometheus starts and then every two seconds
        let targets_file = dir.join("targets.json");
        let pods: Api<Pod> = Api::all(client.clone());
        write(
            &targets_file,
            &targets(&pods)
                .await
                .map_err(|e| Error::kube("listing the node's io360 pods", e))?,
        )?;
        let discovery = tokio::spawn({
            let targets_file = targets_file.clone();
            async move {
                loop {
                    tokio::time::sleep(DISCOVERY_EVERY).await;
                    // A failed list keeps the last targets; the next round tries again.
                    if let Ok(json) = targets(&pods).await {
                        let tmp = targets_file.with_extension("json.tmp");
                        if std::fs::write(&tmp, json).is_ok() {
                            let _ = std::fs::rename(&tmp, &targets_file);
                        }
                    }
                }
            }
        });

        // --- Prometheus, on the namespace's loopback
        let port = free_port()?;
        let prometheus_url = format!("http://127.0.0.1:{port}");
        let config = dir.join("prometheus.yml");
        write(
            &config,
            &format!(
                "global:\n  scrape_interval: {SCRAPE_EVERY_SECS}s\n  scrape_timeout: 1s\n  \
                 evaluation_interval: {SCRAPE_EVERY_SECS}s\nscrape_configs:\n  - job_name: io360\n    \
                 file_sd_configs:\n      - files: [{}]\n        refresh_interval: {}s\n",
                targets_file.display(),
                DISCOVERY_EVERY.as_secs()
            ),
        )?;
        let prometheus = Process::start(
            "prometheus",
            &prometheus_bin,
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                "--storage.tsdb.retention.time=2h".into(),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // A pod gone for this long has no value (its series are also marked stale
                // at once when its target goes).
                "--query.lookback-delta=15s".into(),
                "--log.level=warn".into(),
            ],
            dir.join("prometheus.log"),
        )?;

        // --- the adapter, at the node's address, where the API server's aggregator dials it
        let (cert, key) = plane.metrics_serving();
        let kubeconfig = plane.kubeconfig().display().to_string();
        let mut args = vec![
            format!("--lister-kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--bind-address={NODE_IP}"),
            format!("--secure-port={ADAPTER_PORT}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--prometheus-url={prometheus_url}"),
            "--v=1".into(),
        ];
        args.extend(SERVED_METRICS.iter().map(|m| format!("--metric={m}")));
        let adapter = Process::start(
            "io360-metrics-adapter",
            &adapter_bin,
            args,
            dir.join("io360-metrics-adapter.log"),
        )?;

        let pipeline = CustomMetrics {
            prometheus: Mutex::new(prometheus),
            adapter: Mutex::new(adapter),
            discovery,
            prometheus_url,
            kubectl,
            kubeconfig: plane.kubeconfig().to_path_buf(),
        };
        pipeline.register(plane, &client).await?;
        Ok(pipeline)
    }

    /// Prometheus's address, `http://127.0.0.1:<port>` (inside the run's network namespace).
    pub fn prometheus_url(&self) -> &str {
        &self.prometheus_url
    }

    /// Fails with a log tail if Prometheus or the adapter has died.
    pub fn check_running(&self) -> Result<()> {
        self.prometheus.lock().expect("poisoned").check_running()?;
        self.adapter.lock().expect("poisoned").check_running()
    }

    /// Stops Prometheus, as an outage of the metrics pipeline: the adapter stays up and
    /// answers every read with an error, so autoscalers get no reading.
    pub fn stop_prometheus(&self) {
        self.prometheus
            .lock()
            .expect("poisoned")
            .stop(Duration::from_secs(5));
    }

    /// Starts Prometheus again on its data, after [`CustomMetrics::stop_prometheus`].
    pub fn start_prometheus(&self) -> Result<()> {
        self.prometheus
            .lock()
            .expect("poisoned")
            .restart(Duration::from_secs(5))
    }

    async fn register(&self, plane: &ControlPlane, client: &kube::Client) -> Result<()> {
        let versions: Vec<(&str, i32)> = VERSIONS
            .iter()
            .map(|v| (*v, if *v == "v1beta2" { 200 } else { 100 }))
            .collect();
        crate::metrics::register_aggregated(
            plane,
            client,
            CUSTOM_METRICS_SERVICE,
            ADAPTER_PORT,
            "custom.metrics.k8s.io",
            &versions,
        )
        .await?;
        wait::until_alive(
            "custom.metrics.k8s.io served by the adapter",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || self.check_running(),
            || {
                let client = client.clone();
                async move {
                    let request = http::Request::get("/apis/custom.metrics.k8s.io/v1beta2")
                        .body(Vec::new())
                        .map_err(|e| e.to_string())?;
                    let body = client
                        .request_text(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    if body.contains(SERVED_METRICS[0]) {
                        Ok(())
                    } else {
                        Err(body)
                    }
                }
            },
        )
        .await
    }
}

impl Drop for CustomMetrics {
    /// Unregisters the API first (a group nobody serves holds up namespace deletion), then
    /// stops the adapter, the discovery and Prometheus.
    fn drop(&mut self) {
        let names: Vec<String> = VERSIONS
            .iter()
            .map(|v| format!("{v}.custom.metrics.k8s.io"))
            .collect();
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "delete".to_string(),
            "apiservice".to_string(),
            "--ignore-not-found".to_string(),
        ];
        args.extend(names);
        if let Err(e) = std::process::Command::new(&self.kubectl)
            .args(&args)
            .output()
        {
            eprintln!("unregistering custom.metrics.k8s.io: {e}");
        }
        self.adapter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stop(Duration::from_secs(5));
        self.discovery.abort();
        self.prometheus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stop(Duration::from_secs(5));
    }
}
