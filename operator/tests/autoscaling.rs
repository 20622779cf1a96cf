//! Autoscalers that cannot read their metric, against a real API server: the operator names
//! each such tier in the CommentCluster's status, and automatic degrade takes a frontend
//! autoscaler that cannot read CPU as no reading, so it does not suspend on the stale
//! utilization left in that autoscaler's status. The test plays the HPA controller (the
//! harness runs none), writing the autoscalers' status as it would.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use io360_cluster_tests::Cluster;
use io360_operator::crd::CommentCluster;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod support;
use support::{install_crd, start_operator, until};

const NS: &str = "autoscaling";
const CC: &str = "spiky";
const HOLD_SECS: u64 = 2;

/// Writes an autoscaler's status: at `replicas`, reporting `utilization` percent CPU, with
/// condition ScalingActive as given.
async fn report(
    hpas: &Api<HorizontalPodAutoscaler>,
    name: &str,
    replicas: i32,
    utilization: Option<i32>,
    active: (&str, &str, &str),
) -> Result<()> {
    let (status, reason, message) = active;
    let metrics: Vec<Value> = utilization
        .map(|u| {
            json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": u, "averageValue": "900m"}}})
        })
        .into_iter()
        .collect();
    hpas.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "currentReplicas": replicas,
            "desiredReplicas": replicas,
            "currentMetrics": metrics,
            "conditions": [{
                "type": "ScalingActive", "status": status, "reason": reason,
                "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }})),
    )
    .await
    .with_context(|| format!("writing the status of HPA {name}"))?;
    Ok(())
}

fn condition(cc: &CommentCluster, type_: &str) -> Option<Condition> {
    cc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metrics_show_in_status_and_give_degrade_no_reading() -> Result<()> {
    let cluster = Cluster::start()
        .await
        .context("starting the test cluster")?;
    let client = cluster.client().await?;
    install_crd(&client, "operator-test").await?;

    let _operator = start_operator(&cluster, "operator", 0)?;

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "admin"}, "stringData": {"token": "t"}}),
            )?,
        )
        .await?;
    let ccs: Api<CommentCluster> = Api::namespaced(client.clone(), NS);
    let obj = json!({
        "apiVersion": "io360.dev/v1alpha1", "kind": "CommentCluster",
        "metadata": {"name": CC},
        "spec": {
            "adminTokenSecret": {"name": "admin"},
            "frontend": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
            "logic": {"replicas": 1},
            "sync": {"replicas": 1},
            "longpoll": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
            "autoDegrade": {"enabled": true, "utilizationThreshold": 80, "holdSeconds": HOLD_SECS,
                            "recoveryThreshold": 50, "cooldownSeconds": 5},
        },
    });
    ccs.patch(
        CC,
        &PatchParams::apply("operator-test").force(),
        &Patch::Apply(&obj),
    )
    .await?;

    // longpoll's autoscaler scales on held connections per pod, by default.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    let longpoll = until("longpoll's autoscaler", 30, || async {
        hpas.get_opt(&format!("{CC}-longpoll"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_string())
    })
    .await?;
    let metric = &longpoll.spec.unwrap().metrics.unwrap()[0];
    let pods = metric.pods.as_ref().context("a Pods metric")?;
    ensure!(
        pods.metric.name == "io360_longpoll_held_connections"
            && pods.target.type_ == "AverageValue"
            && pods.target.average_value.as_ref().map(|q| q.0.as_str()) == Some("5k"),
        "longpoll scales on {metric:?}"
    );
    until("frontend's autoscaler", 30, || async {
        hpas.get_opt(&format!("{CC}-frontend"))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "not yet".to_string())
    })
    .await?;

    // Neither autoscaler can read its metric; the frontend's still shows the 95 % it read
    // before, at its maximum.
    report(
        &hpas,
        &format!("{CC}-longpoll"),
        1,
        None,
        (
            "False",
            "FailedGetPodsMetric",
            "the HPA was unable to compute the replica count: unable to get metric io360_longpoll_held_connections",
        ),
    )
    .await?;
    report(
        &hpas,
        &format!("{CC}-frontend"),
        2,
        Some(95),
        (
            "False",
            "FailedGetResourceMetric",
            "the HPA was unable to compute the replica count: failed to get cpu utilization",
        ),
    )
    .await?;
    let started = Instant::now();
    let cc = until(
        "status to name the tiers whose metrics are missing",
        30,
        || async {
            let cc = ccs.get(CC).await.map_err(|e| e.to_string())?;
            match condition(&cc, "AutoscalingHealthy") {
                Some(c)
                    if c.status == "False"
                        && c.message.contains(
                            "longpoll (io360_longpoll_held_connections): FailedGetPodsMetric",
                        )
                        && c.message
                            .contains("frontend (cpu): FailedGetResourceMetric") =>
                {
                    Ok(cc)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let tiers = &cc.status.as_ref().unwrap().tiers;
    let longpoll = tiers["longpoll"]
        .autoscaling
        .clone()
        .context("longpoll autoscaling status")?;
    ensure!(
        longpoll.metric == "io360_longpoll_held_connections"
            && longpoll.metrics_available == "False",
        "{longpoll:?}"
    );
    ensure!(
        tiers["logic"].autoscaling.is_none(),
        "logic has no autoscaler"
    );
    let degrade = condition(&cc, "AutoDegrade").context("an AutoDegrade condition")?;
    ensure!(
        degrade.status == "False"
            && degrade.reason == "NoReading"
            && degrade.message.contains("FailedGetResourceMetric"),
        "{degrade:?}"
    );

    // Well past the hold, comments stay live: a stale 95 % is no evidence.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let suspended = || async {
        let cm = cms.get(&format!("{CC}-control")).await?;
        Ok::<_, anyhow::Error>(
            cm.data
                .unwrap_or_default()
                .get("commentsSuspended")
                .map(String::as_str)
                == Some("true"),
        )
    };
    while started.elapsed() < Duration::from_secs(HOLD_SECS * 3 + 2) {
        ensure!(
            !suspended().await?,
            "suspended {:.1} s after the frontend autoscaler lost its metrics",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The same load, read: the operator decides again, and suspends after the hold.
    report(
        &hpas,
        &format!("{CC}-frontend"),
        2,
        Some(95),
        ("True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization"),
    )
    .await?;
    until(
        "suspension once the frontend is read as overloaded",
        30,
        || async {
            match suspended().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("live".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    until("AutoDegrade to read the frontend again", 30, || async {
        let cc = ccs.get(CC).await.map_err(|e| e.to_string())?;
        match condition(&cc, "AutoDegrade") {
            Some(c) if c.status == "True" && c.reason == "Reading" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    Ok(())
}
