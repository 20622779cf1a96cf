//! Starts the test control plane with its real node (containerd, the kubelet, kube-proxy,
//! CoreDNS, a registry and kube-router's NetworkPolicy firewall), all inside a network namespace of its own, and keeps it up until
//! Ctrl-C. The pods' and Services' addresses exist only inside that namespace: to look around,
//! enter it with the printed `nsenter` command, which runs a shell there.
//!
//! ```text
//! cargo run -p io360-cluster-tests --example node          # as root
//! ```
//!
//! With `--check`, it also runs a pod of the pause image behind a Service, proves the Service
//! answers DNS and connections from the namespace, and exits.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use io360_cluster_tests::{Cluster, isolate};

fn main() -> Result<()> {
    // Before the runtime's threads exist: they inherit this thread's namespaces.
    let run = isolate::enter().context("making the run's namespaces")?;
    let check = std::env::args().any(|a| a == "--check");
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let cluster = Cluster::start_with_real_node(&run)
            .await
            .context("starting the control plane and the real node")?;
        let node = cluster.real_node().context("a real node")?;
        println!("kubeconfig:  {}", cluster.kubeconfig().display());
        println!("kubectl:     {}", cluster.tools().bin("kubectl")?.display());
        println!("registry:    {}", node.registry());
        println!("node state:  {}", node.dir().display());
        println!(
            "a shell in the namespace: nsenter --net=/proc/{}/ns/net --mount=/proc/{}/ns/mnt bash",
            std::process::id(),
            std::process::id()
        );
        if check {
            smoke(&cluster).await
        } else {
            println!("Ctrl-C stops everything and removes what the run made");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    });
    drop(runtime);
    drop(run);
    result
}

/// A pod of the pause image behind a Service, Ready on the real node.
async fn smoke(cluster: &Cluster) -> Result<()> {
    let node = cluster.real_node().context("a real node")?;
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pause", "namespace": "default", "labels": {"app": "pause"}},
        "spec": {
            "nodeSelector": {io360_cluster_tests::REAL_NODE_LABEL.0: io360_cluster_tests::REAL_NODE_LABEL.1},
            "tolerations": [{"key": io360_cluster_tests::REAL_NODE_TAINT.0, "operator": "Exists"}],
            "containers": [{
                "name": "pause",
                "image": format!("{}/pause:{}", node.registry(), io360_cluster_tests::K8S_VERSION),
            }],
        },
    });
    let path = cluster.scratch().join("pause.json");
    std::fs::write(&path, manifest.to_string())?;
    let kubectl = |args: &[&str]| {
        let mut cmd = cluster.kubectl();
        cmd.args(args);
        cmd
    };
    io360_cluster_tests::run(&mut kubectl(&["apply", "-f", &path.display().to_string()])).await?;
    let waited = io360_cluster_tests::run(&mut kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/pause",
        "--timeout=90s",
    ]))
    .await;
    if let Err(e) = waited {
        let describe = io360_cluster_tests::run(&mut kubectl(&["describe", "pod", "pause"]))
            .await
            .unwrap_or_default();
        bail!("{e}\n{describe}");
    }
    let wide =
        io360_cluster_tests::run(&mut kubectl(&["get", "pod", "pause", "-o", "wide"])).await?;
    println!("{wide}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
