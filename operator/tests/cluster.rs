//! The operator against a real control plane (the loopback harness of `tests/cluster`, or the
//! cluster `IO360_TEST_KUBECONFIG` names): updates that add and prune children, a hand edit
//! put back, status that settles instead of looping, metrics, and leader election handing over
//! from one operator process to another. The chart-level flows (install, suspend, degrade,
//! delete) are in the end-to-end suite of `tests/cluster`.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use io360_cluster_tests::Cluster;
use io360_operator::crd::CommentCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{install_crd, start_operator as operator, until};

const NS: &str = "operator-flows";
const CC: &str = "flows";

async fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn status(ccs: &Api<CommentCluster>) -> std::result::Result<CommentCluster, String> {
    ccs.get(CC).await.map_err(|e| e.to_string())
}

fn config_hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()["io360.dev/config-hash"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_prune_restore_settle_and_hand_over() -> Result<()> {
    let cluster = Cluster::start()
        .await
        .context("starting the test cluster")?;
    let client = cluster.client().await?;

    install_crd(&client, "operator-test").await?;

    let port_a = free_port()?;
    let mut op_a = operator(&cluster, "operator-a", port_a)?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "admin"}, "stringData": {"token": "t"}}),
            )?,
        )
        .await?;

    let ccs: Api<CommentCluster> = Api::namespaced(client.clone(), NS);
    let apply = |spec: Value| {
        let ccs = ccs.clone();
        async move {
            let obj = json!({
                "apiVersion": "io360.dev/v1alpha1", "kind": "CommentCluster",
                "metadata": {"name": CC}, "spec": spec,
            });
            ccs.patch(
                CC,
                &PatchParams::apply("operator-test").force(),
                &Patch::Apply(&obj),
            )
            .await
        }
    };
    apply(json!({
        "adminTokenSecret": {"name": "admin"},
        "frontend": {"replicas": 1},
        "logic": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        "sync": {"replicas": 1},
        "longpoll": {"replicas": 1},
        "ingress": {"host": "comments.example.test"},
    }))
    .await?;
    until("status of generation 1", 30, || async {
        let cc = status(&ccs).await?;
        match &cc.status {
            Some(s) if s.observed_generation == Some(1) && s.tiers.len() == 6 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    ensure!(hpas.get_opt("flows-logic").await?.is_some(), "no logic HPA");
    ensure!(ingresses.get_opt("flows").await?.is_some(), "no Ingress");
    let frontend_hash = config_hash(&deployments.get("flows-frontend").await?);
    let logic_hash = config_hash(&deployments.get("flows-logic").await?);

    // Update: fixed replicas for logic (its HPA goes), no Ingress, another moderation mode.
    apply(json!({
        "adminTokenSecret": {"name": "admin"},
        "frontend": {"replicas": 1},
        "logic": {"replicas": 2},
        "sync": {"replicas": 1},
        "longpoll": {"replicas": 1},
        "moderation": "all",
    }))
    .await?;
    until("generation 2 applied and pruned", 30, || async {
        let cc = status(&ccs).await?;
        let observed = cc.status.as_ref().and_then(|s| s.observed_generation);
        let hpa = hpas
            .get_opt("flows-logic")
            .await
            .map_err(|e| e.to_string())?;
        let ing = ingresses
            .get_opt("flows")
            .await
            .map_err(|e| e.to_string())?;
        if observed == Some(2) && hpa.is_none() && ing.is_none() {
            Ok(())
        } else {
            Err(format!(
                "observed {observed:?}, hpa {}, ingress {}",
                hpa.is_some(),
                ing.is_some()
            ))
        }
    })
    .await?;
    let logic = deployments.get("flows-logic").await?;
    ensure!(
        logic.spec.as_ref().unwrap().replicas == Some(2),
        "logic replicas {:?}",
        logic.spec.as_ref().unwrap().replicas
    );
    ensure!(
        config_hash(&logic) != logic_hash,
        "moderation changed but logic pods would not roll"
    );
    ensure!(
        config_hash(&deployments.get("flows-frontend").await?) == frontend_hash,
        "frontend pods would roll for a change that is not theirs"
    );

    // A hand edit is put back.
    deployments
        .patch(
            "flows-frontend",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "io360", "image": "someone/else:1"}
            ]}}}})),
        )
        .await?;
    until("the hand-edited image to be put back", 30, || async {
        let d = deployments
            .get("flows-frontend")
            .await
            .map_err(|e| e.to_string())?;
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        if image == format!("io360:{}", env!("CARGO_PKG_VERSION")) {
            Ok(())
        } else {
            Err(image)
        }
    })
    .await?;

    // Status settles: once Ready, the resource is not rewritten over and over.
    until("Ready", 120, || async {
        let cc = status(&ccs).await?;
        let ready = cc.status.as_ref().map(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready == Some(true) {
            Ok(())
        } else {
            Err(format!("{:?}", cc.status))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rv = ccs.get(CC).await?.resource_version();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rv2 = ccs.get(CC).await?.resource_version();
    ensure!(
        rv == rv2,
        "the CommentCluster keeps being rewritten: {rv:?} -> {rv2:?}"
    );

    let metrics = http_get(port_a, "/metrics").await?;
    ensure!(
        metrics.contains("io360_operator_reconciles_total"),
        "{metrics}"
    );
    ensure!(
        http_get(port_a, "/healthz")
            .await?
            .starts_with("HTTP/1.1 200"),
        "healthz"
    );

    // Leader election: B stands by while A leads, and takes over when A stops.
    let port_b = free_port()?;
    let _op_b = operator(&cluster, "operator-b", port_b)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = || async {
        let l = leases
            .get("io360-operator")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(l.spec.and_then(|s| s.holder_identity).unwrap_or_default())
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    ensure!(
        holder().await.map_err(anyhow::Error::msg)? == "operator-a",
        "A should still lead"
    );
    ensure!(
        http_get(port_b, "/metrics")
            .await?
            .contains("io360_operator_leader 0"),
        "B must not act as leader"
    );
    op_a.stop(Duration::from_secs(10));
    let handed = Instant::now();
    until("operator-b to take the Lease", 30, || async {
        match holder().await? {
            h if h == "operator-b" => Ok(()),
            h => Err(h),
        }
    })
    .await?;
    ensure!(
        handed.elapsed() < Duration::from_secs(10),
        "a clean stop releases the Lease; took {:?}",
        handed.elapsed()
    );

    // The new leader acts: suspend by hand.
    let cc_json = json!({
        "apiVersion": "io360.dev/v1alpha1", "kind": "CommentCluster",
        "metadata": {"name": CC},
        "spec": {
            "adminTokenSecret": {"name": "admin"},
            "frontend": {"replicas": 1}, "logic": {"replicas": 2}, "sync": {"replicas": 1},
            "longpoll": {"replicas": 1}, "moderation": "all", "commentsSuspended": true,
        },
    });
    ccs.patch(
        CC,
        &PatchParams::apply("operator-test").force(),
        &Patch::Apply(&cc_json),
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    until("operator-b to suspend comments", 30, || async {
        let cm = cms.get("flows-control").await.map_err(|e| e.to_string())?;
        let data = cm.data.unwrap_or_default();
        let lp = deployments
            .get("flows-longpoll")
            .await
            .map_err(|e| e.to_string())?;
        let replicas = lp.spec.and_then(|s| s.replicas);
        if data.get("commentsSuspended").map(String::as_str) == Some("true") && replicas == Some(0)
        {
            Ok(())
        } else {
            Err(format!("{data:?}, longpoll replicas {replicas:?}"))
        }
    })
    .await?;
    until("the suspended gauge", 15, || async {
        let m = http_get(port_b, "/metrics")
            .await
            .map_err(|e| e.to_string())?;
        if m.contains("io360_operator_suspended_clusters 1") {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await?;
    Ok(())
}
