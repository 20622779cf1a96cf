//! Benchmark (not a test): how fast the operator converges on a real control plane.
//!
//! Starts the loopback control plane of the cluster-test harness (or uses the cluster
//! `IO360_TEST_KUBECONFIG` names), installs the CRD, runs the operator binary, then for 1 and
//! for `IO360_BENCH_CLUSTERS` (default 200) CommentClusters measures the time from the API
//! server accepting each CommentCluster to its status being written (which the operator does
//! only after every child was applied), checks that every child exists, and reads the
//! operator's resident memory.
//!
//! Run: `cargo bench -p io360-operator --bench converge`
//! Targets: one cluster under 1 s, 200 within 30 s, under 100 MiB RSS.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use io360_cluster_tests::{Cluster, Process};
use io360_operator::crd::CommentCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const TARGET_ONE: Duration = Duration::from_secs(1);
const TARGET_MANY: Duration = Duration::from_secs(30);
const TARGET_RSS_MIB: f64 = 100.0;

fn rss_mib(identity: &str) -> Result<f64> {
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(identity) {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        return Ok(kb / 1024.0);
    }
    bail!("operator process not found")
}

/// Creates `n` CommentClusters in `ns` and returns each one's time from creation accepted to
/// status written, plus the wall time for all of them.
async fn converge(client: &kube::Client, ns: &str, n: usize) -> Result<(Vec<Duration>, Duration)> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "admin-token"},
                "stringData": {"token": "bench-admin-token"},
            }))?,
        )
        .await?;

    let ccs: Api<CommentCluster> = Api::namespaced(client.clone(), ns);
    // Watch first, so no status write is missed.
    let mut written: HashMap<String, Instant> = HashMap::new();
    let watch = watcher(ccs.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_task = tokio::spawn(async move {
        let mut watch = watch;
        while let Ok(Some(cc)) = watch.try_next().await {
            let done = cc.status.as_ref().is_some_and(|s| {
                s.observed_generation == cc.metadata.generation && s.tiers.len() == 6
            });
            if done && tx.send((cc.name_any(), Instant::now())).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let accepted: Vec<(String, Instant)> = stream::iter(0..n)
        .map(|i| {
            let ccs = ccs.clone();
            async move {
                let name = format!("site-{i:03}");
                let cc: CommentCluster = serde_json::from_value(json!({
                    "apiVersion": "io360.dev/v1alpha1",
                    "kind": "CommentCluster",
                    "metadata": {"name": name},
                    "spec": {
                        "adminTokenSecret": {"name": "admin-token"},
                        "frontend": {"autoscaling": {"minReplicas": 2, "maxReplicas": 10}},
                        "longpoll": {"autoscaling": {"minReplicas": 2, "maxReplicas": 10}},
                        "autoDegrade": {"enabled": true},
                    },
                }))?;
                ccs.create(&PostParams::default(), &cc).await?;
                Ok::<_, anyhow::Error>((name, Instant::now()))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;

    let deadline = Instant::now() + Duration::from_secs(180);
    while written.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((name, at))) => {
                written.entry(name).or_insert(at);
            }
            _ => {
                println!(
                    "  only {} of {n} clusters converged within 180 s",
                    written.len()
                );
                break;
            }
        }
    }
    let wall = start.elapsed();
    watch_task.abort();

    // Converged clusters only; a missing one shows as fewer samples than clusters.
    let latencies: Vec<Duration> = accepted
        .iter()
        .filter_map(|(name, at)| Some(written.get(name)?.saturating_duration_since(*at)))
        .collect();

    // Every child of a converged cluster is there: 5 Deployments each, for instance.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let count = deployments
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    ensure!(
        count >= 5 * latencies.len(),
        "{count} Deployments for {} converged clusters",
        latencies.len()
    );
    Ok((latencies, wall))
}

/// The operator's reconcile passes so far, from its `/metrics` (a plain HTTP/1.0 GET).
async fn reconciles(port: u16) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("io360_operator_reconciles_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no io360_operator_reconciles_total in the operator's metrics")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let many: usize = std::env::var("IO360_BENCH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cluster = Cluster::start()
        .await
        .context("starting the control plane")?;
    let client = cluster.client().await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "commentclusters.io360.dev",
        &PatchParams::apply("io360-bench").force(),
        &Patch::Apply(io360_operator::crd()),
    )
    .await
    .context("installing the CRD")?;
    let established = Instant::now();
    loop {
        let crd = crds.get("commentclusters.io360.dev").await?;
        let ok = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if ok {
            break;
        }
        ensure!(
            established.elapsed() < Duration::from_secs(30),
            "CRD not established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let identity = format!("io360-bench-operator-{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _operator = Process::start_with_env(
        "io360-operator",
        std::path::Path::new(env!("CARGO_BIN_EXE_io360-operator")),
        vec![
            "run".into(),
            format!("--identity={identity}"),
            "--lease-namespace=default".into(),
            format!("--metrics-addr=127.0.0.1:{port}"),
            "--log=warn".into(),
        ],
        vec![(
            "KUBECONFIG".into(),
            cluster.kubeconfig().display().to_string(),
        )],
        cluster.scratch().join("operator.log"),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_mib(&identity)?;

    let (one, _) = converge(&client, "bench-one", 1).await?;
    let before = reconciles(port).await?;
    let (mut lat, wall) = converge(&client, "bench-many", many).await?;
    let passes = reconciles(port).await? - before;
    ensure!(!one.is_empty(), "the single cluster did not converge");
    ensure!(!lat.is_empty(), "none of the {many} clusters converged");
    lat.sort();
    // Let the periodic degrade evaluations of every cluster run a few rounds.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss = rss_mib(&identity)?;

    println!("io360-operator convergence on a loopback control plane (kube-apiserver, etcd, KWOK)");
    println!(
        "  1 cluster:      {:>7.0} ms from accepted to status written (target < {} ms)",
        one[0].as_secs_f64() * 1000.0,
        TARGET_ONE.as_millis()
    );
    println!(
        "  {many} clusters:   {} converged, {:>7.2} s wall (target: all < {} s); per cluster p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        lat.len(),
        wall.as_secs_f64(),
        TARGET_MANY.as_secs(),
        pct(&lat, 0.5).as_secs_f64(),
        pct(&lat, 0.99).as_secs_f64(),
        lat.last().unwrap().as_secs_f64()
    );
    println!(
        "  reconcile passes while the {many} converged: {passes} ({:.1} per cluster)",
        passes as f64 / many as f64
    );
    println!(
        "  operator RSS:   {idle:.1} MiB idle, {rss:.1} MiB with {} clusters (target < {TARGET_RSS_MIB} MiB)",
        many + 1
    );
    let met =
        one[0] < TARGET_ONE && lat.len() == many && wall < TARGET_MANY && rss < TARGET_RSS_MIB;
    println!("  targets {}", if met { "met" } else { "MISSED" });
    Ok(())
}
