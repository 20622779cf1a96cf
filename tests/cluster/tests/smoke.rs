//! The harness itself: a control plane comes up, KWOK's fake nodes turn Ready, a Deployment
//! gets Ready pods on them, and dropping the cluster stops every process and removes its files.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use io360_cluster_tests::{Cluster, ClusterMode, FAKE_NODES, run, wait};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_runs_a_deployment_on_fake_nodes_and_tears_down() -> Result<()> {
    let cluster = Cluster::start()
        .await
        .context("starting the test cluster")?;
    let client = cluster.client().await?;

    let nodes: Api<Node> = Api::all(client.clone());
    let ready_nodes = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    let wanted = if cluster.mode() == ClusterMode::Owned {
        FAKE_NODES
    } else {
        1
    };
    ensure!(
        ready_nodes >= wanted,
        "{ready_nodes} Ready nodes, wanted {wanted}"
    );

    // kubectl built at the server's release talks to it and reports the pinned version.
    let version = run(cluster.kubectl().args(["version", "-o", "json"])).await?;
    let version: serde_json::Value = serde_json::from_str(&version)?;
    if cluster.mode() == ClusterMode::Owned {
        ensure!(
            version["serverVersion"]["gitVersion"] == io360_cluster_tests::K8S_VERSION,
            "server reports {}",
            version["serverVersion"]
        );
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = "io360-smoke";
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pause"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {
                "metadata": {"labels": {"app": "pause"}},
                "spec": {"containers": [{
                    "name": "pause",
                    "image": "registry.k8s.io/pause:3.10",
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                }]},
            },
        },
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    wait::until(
        "Deployment pause to have 3 ready replicas",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("pause").await.map_err(|e| e.to_string())?;
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                if ready == 3 {
                    Ok(())
                } else {
                    Err(format!("{ready} ready"))
                }
            }
        },
    )
    .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels("app=pause"))
        .await?
        .items;
    ensure!(pods.len() == 3, "{} pods", pods.len());
    for pod in &pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        ensure!(phase == "Running", "pod on {node} is {phase}");
        if cluster.mode() == ClusterMode::Owned {
            ensure!(node.starts_with("kwok-node-"), "pod scheduled on {node:?}");
        }
    }

    if cluster.mode() == ClusterMode::External {
        namespaces.delete(ns, &DeleteParams::default()).await?;
        return Ok(());
    }

    // Teardown: after drop, nothing answers on the API server's port and the directory is gone.
    let plane = cluster.control_plane().expect("owned");
    let server = plane.server().trim_start_matches("https://").to_string();
    let dir = plane.dir().to_path_buf();
    drop(pods);
    drop(client);
    drop(cluster);
    ensure!(!dir.exists(), "{} still exists after drop", dir.display());
    ensure!(
        std::net::TcpStream::connect(&server).is_err(),
        "something still listens on {server} after drop"
    );
    Ok(())
}
