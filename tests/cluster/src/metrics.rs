//! metrics-server for the real node: the resource metrics pipeline HorizontalPodAutoscalers
//! read. It runs as a process in the run's namespaces, scrapes the real node's kubelet
//! (`/metrics/resource`, verified against the harness CA) and serves `metrics.k8s.io`, which
//! the API server aggregates: `kubectl top pods` and the HPA controller see the pods' real CPU
//! and memory.
//!
//! The API server reaches it through a Service without a selector whose one endpoint is the
//! node's address (the API server routes aggregated APIs to endpoints, not ClusterIPs), and
//! trusts it through the CA bundle of the `APIService`.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use crate::control_plane::ControlPlane;
use crate::isolate::NODE_IP;
use crate::pki::METRICS_SERVER_SERVICE;
use crate::process::Process;
use crate::tools::Tools;
use crate::{Error, Result, wait};

/// The port metrics-server serves on, at the node's address.
pub const METRICS_SERVER_PORT: u16 = 4443;

/// How often metrics-server scrapes the kubelet, in seconds (its floor is 10 s). HPAs see a
/// load change within about this long plus their own sync period.
pub const METRIC_RESOLUTION_SECS: u64 = 10;

/// Starts metrics-server; the caller keeps the process.
pub(crate) fn start(plane: &ControlPlane, tools: &Tools, dir: &Path) -> Result<Process> {
    let binary = tools.bin("metrics-server")?;
    let (cert, key) = plane.metrics_serving();
    let kubeconfig = plane.kubeconfig().display().to_string();
    Process::start(
        "metrics-server",
        &binary,
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--bind-address={NODE_IP}"),
            format!("--secure-port={METRICS_SERVER_PORT}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--cert-dir={}", dir.join("metrics-server-certs").display()),
            format!(
                "--kubelet-certificate-authority={}",
                plane.ca_cert().display()
            ),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--kubelet-use-node-status-port".into(),
            // Only the real node: the fake nodes' addresses are not to be dialled.
            format!(
                "--node-selector={}={}",
                crate::node::REAL_NODE_LABEL.0,
                crate::node::REAL_NODE_LABEL.1
            ),
            format!("--metric-resolution={METRIC_RESOLUTION_SECS}s"),
            // Must stay under the resolution; the node's kubelet answers in milliseconds.
            "--kubelet-request-timeout=5s".into(),
            "--v=1".into(),
        ],
        dir.join("metrics-server.log"),
    )
}

/// Registers an aggregated API served by a process at the node's address: a Service without a
/// selector in `kube-system` named `service`, whose one endpoint is the node's `port` (the API
/// server routes aggregated APIs to endpoints, not ClusterIPs), and an `APIService` for each of
/// `versions` (version, priority) of `group`, trusted through the harness CA.
pub(crate) async fn register_aggregated(
    plane: &ControlPlane,
    client: &kube::Client,
    service: &str,
    port: u16,
    group: &str,
    versions: &[(&str, i32)],
) -> Result<()> {
    let ca = std::fs::read(plane.ca_cert())
        .map_err(|e| Error::io(format!("reading {}", plane.ca_cert().display()), e))?;
    // ByteString serializes as base64, as the API wants the bundle.
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(ca)).expect("bytes serialize");
    let mut objects = vec![
        (
            ("", "v1", "Service"),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": "kube-system"},
                "spec": {"ports": [{"name": "https", "port": port, "targetPort": port}]},
            }),
        ),
        (
            ("", "v1", "Endpoints"),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": service, "namespace": "kube-system"},
                "subsets": [{
                    "addresses": [{"ip": NODE_IP.to_string()}],
                    "ports": [{"name": "https", "port": port}],
                }],
            }),
        ),
    ];
    for (version, priority) in versions {
        objects.push((
            ("apiregistration.k8s.io", "v1", "APIService"),
            serde_json::json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}")},
                "spec": {
                    "group": group,
                    "version": version,
                    "service": {"name": service, "namespace": "kube-system", "port": port},
                    "caBundle": ca_bundle,
                    "groupPriorityMinimum": 100,
                    "versionPriority": priority,
                },
            }),
        ));
    }
    for ((group, version, kind), object) in objects {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(
            name,
            &PatchParams::apply("io360-cluster-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| Error::kube(format!("applying {kind} {name}"), e))?;
    }
    Ok(())
}

/// Registers metrics-server as `v1beta1.metrics.k8s.io` and waits until the API server calls it
/// Available and it reports the real node's usage.
pub(crate) async fn register(plane: &ControlPlane, alive: impl Fn() -> Result<()>) -> Result<()> {
    let client = crate::cluster::client_for(plane.kubeconfig()).await?;
    register_aggregated(
        plane,
        &client,
        METRICS_SERVER_SERVICE,
        METRICS_SERVER_PORT,
        "metrics.k8s.io",
        &[("v1beta1", 100)],
    )
    .await?;

    wait::until_alive(
        "metrics.k8s.io serving the real node's usage",
        Duration::from_secs(120),
        Duration::from_millis(500),
        alive,
        || {
            let client = client.clone();
            async move {
                let path = format!(
                    "/apis/metrics.k8s.io/v1beta1/nodes/{}",
                    crate::pki::REAL_NODE_NAME
                );
                let request = http::Request::get(path)
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let body = client
                    .request_text(request)
                    .await
                    .map_err(|e| e.to_string())?;
                if body.contains("\"cpu\"") {
                    Ok(())
                } else {
                    Err(body)
                }
            }
        },
    )
    .await
}
