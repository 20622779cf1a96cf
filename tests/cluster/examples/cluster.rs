//! Starts the test control plane and keeps it up until Ctrl-C, for poking at it by hand or
//! for running the suite against it as an existing cluster:
//!
//! ```text
//! cargo run -p io360-cluster-tests --example cluster
//! IO360_TEST_KUBECONFIG=<printed path> cargo test -p io360-cluster-tests
//! ```

use anyhow::{Context, Result};
use io360_cluster_tests::Cluster;

#[tokio::main]
async fn main() -> Result<()> {
    // Without this the harness would use the existing cluster instead of starting one.
    if std::env::var_os(io360_cluster_tests::KUBECONFIG_ENV).is_some() {
        anyhow::bail!(
            "unset {} to start a new cluster",
            io360_cluster_tests::KUBECONFIG_ENV
        );
    }
    let cluster = Cluster::start()
        .await
        .context("starting the control plane")?;
    let plane = cluster
        .control_plane()
        .context("the harness started this cluster")?;
    println!("API server:  {}", plane.server());
    println!("kubeconfig:  {}", cluster.kubeconfig().display());
    println!("logs:        {}", plane.dir().display());
    println!("kubectl:     {}", cluster.tools().bin("kubectl")?.display());
    println!(
        "Ctrl-C stops everything and removes {}",
        plane.dir().display()
    );
    tokio::signal::ctrl_c().await?;
    drop(cluster);
    Ok(())
}
