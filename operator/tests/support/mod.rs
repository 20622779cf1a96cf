//! What the operator's tests on a real API server share: installing the CRD, running the
//! operator, and waiting.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use io360_cluster_tests::{Cluster, Process};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

/// Calls `check` every 200 ms until it answers `Ok`, for at most `secs` seconds; the error
/// names `what` and the last thing `check` saw.
pub async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() > deadline => {
                bail!("timed out after {secs} s waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Applies the generated CRD (server-side, as `field_manager`) and waits until the API
/// server serves it.
pub async fn install_crd(client: &kube::Client, field_manager: &str) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "commentclusters.io360.dev",
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(io360_operator::crd()),
    )
    .await
    .context("the API server must accept the generated CRD")?;
    until("the CRD to be established", 30, || async {
        let crd = crds
            .get("commentclusters.io360.dev")
            .await
            .map_err(|e| e.to_string())?;
        let conds = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            Ok(())
        } else {
            Err(format!("{conds:?}"))
        }
    })
    .await
}

/// Runs the operator binary against `cluster` as `identity`, its metrics on `port` of
/// 127.0.0.1 (0: any), automatic degrade checked every second.
pub fn start_operator(cluster: &Cluster, identity: &str, port: u16) -> Result<Process> {
    Ok(Process::start_with_env(
        identity,
        Path::new(env!("CARGO_BIN_EXE_io360-operator")),
        vec![
            "run".into(),
            format!("--identity={identity}"),
            "--lease-namespace=default".into(),
            format!("--metrics-addr=127.0.0.1:{port}"),
            "--degrade-interval=1".into(),
        ],
        vec![(
            "KUBECONFIG".into(),
            cluster.kubeconfig().display().to_string(),
        )],
        cluster.scratch().join(format!("{identity}.log")),
    )?)
}
