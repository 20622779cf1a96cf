//! Automatic degrade. The test plays the HPA controller, writing the frontend
//! HPA's status as it would; the operator must suspend only after overload at maxReplicas has
//! held, and resume only after load stayed low for the cooldown, without flapping in between.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use serde_json::json;

use crate::support::{Suite, comment_cluster, condition, secs};

const HOLD: f64 = 6.0;
const COOLDOWN: f64 = 10.0;

/// Writes the HPA's status subresource: replicas and CPU utilization, as the HPA controller
/// reports them.
async fn report_load(
    s: &Suite,
    ns: &str,
    hpa: &str,
    replicas: i32,
    utilization: i32,
) -> Result<()> {
    let status = json!({"status": {
        "currentReplicas": replicas,
        "desiredReplicas": replicas,
        "currentMetrics": [{
            "type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": utilization, "averageValue": "900m"}},
        }],
        "conditions": [{
            "type": "ScalingLimited",
            "status": if replicas == 2 { "True" } else { "False" },
            "reason": if replicas == 2 { "TooManyReplicas" } else { "DesiredWithinRange" },
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }],
    }})
    .to_string();
    s.kubectl(&[
        "patch",
        "hpa",
        hpa,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
    .await?;
    Ok(())
}

async fn suspended(s: &Suite, ns: &str, cc: &str) -> Result<bool> {
    let control = s.control_data(ns, cc).await.map_err(anyhow::Error::msg)?;
    Ok(control["commentsSuspended"] == "true")
}

/// Asserts the suspension state stays `expected` for `span`.
async fn stays(
    s: &Suite,
    ns: &str,
    cc: &str,
    expected: bool,
    span: Duration,
    why: &str,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < span {
        let now = suspended(s, ns, cc).await?;
        ensure!(
            now == expected,
            "suspended = {now} after {:.1} s: {why}",
            secs(start)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

pub fn overload_suspends_and_recovers(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let _hpa = s.hpa_gate.lock().await;
        let ns = s.namespace("degrade").await?;
        let name = "spiky";
        let hpa = format!("{name}-frontend");
        s.apply(
            &ns,
            &comment_cluster(
                name,
                json!({
                    "frontend": {"replicas": null, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
                    "autoDegrade": {
                        "enabled": true,
                        "utilizationThreshold": 80,
                        "holdSeconds": HOLD as i64,
                        "recoveryThreshold": 50,
                        "cooldownSeconds": COOLDOWN as i64,
                    },
                }),
            ),
        )
        .await?;
        s.wait_ready(&ns, name, 120).await?;
        ensure!(!suspended(s, &ns, name).await?, "suspended before any load");

        // Hot but below maxReplicas: the autoscaler can still add pods, so no degrade.
        report_load(s, &ns, &hpa, 1, 99).await?;
        stays(
            s,
            &ns,
            name,
            false,
            Duration::from_secs(HOLD as u64 + 3),
            "below maxReplicas is not overload",
        )
        .await?;

        // At maxReplicas and over the threshold: suspend once that has held for holdSeconds.
        report_load(s, &ns, &hpa, 2, 95).await?;
        let overloaded_at = Instant::now();
        s.wait("automatic suspension", HOLD as u64 + 30, || async {
            match suspended(s, &ns, name).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("live".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        let took = secs(overloaded_at);
        ensure!(
            took >= HOLD - 0.5,
            "suspended after {took:.1} s of overload, before the {HOLD} s hold"
        );

        let control = s
            .control_data(&ns, name)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            control["reason"] == "Overload",
            "control ConfigMap: {control}"
        );
        s.wait(
            "longpoll scaled to zero and condition Overload",
            60,
            || async {
                let cc = s.cc(&ns, name).await?;
                let cond = condition(&cc, "CommentsSuspended");
                let longpoll = s
                    .deployment_replicas(&ns, &format!("{name}-longpoll"))
                    .await?;
                if cond
                    .as_ref()
                    .is_some_and(|(st, r)| st == "True" && r == "Overload")
                    && longpoll == (0, 0)
                {
                    Ok(())
                } else {
                    Err(format!("condition {cond:?}, longpoll {longpoll:?}"))
                }
            },
        )
        .await?;
        let events = s.events(&ns, name, "CommentsSuspended").await?;
        ensure!(
            events.iter().any(|e| e
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("Overload")),
            "no CommentsSuspended Event naming Overload: {:?}",
            events.iter().map(|e| e.message.clone()).collect::<Vec<_>>()
        );

        // Load between the two thresholds: not recovered, so it stays suspended past the
        // cooldown (no flapping on the way down).
        report_load(s, &ns, &hpa, 2, 70).await?;
        stays(
            s,
            &ns,
            name,
            true,
            Duration::from_secs_f64(COOLDOWN + 3.0),
            "load between thresholds is not recovery",
        )
        .await?;

        // Low load: resume once it has stayed low for the cooldown, and stay live.
        report_load(s, &ns, &hpa, 2, 30).await?;
        let calm_at = Instant::now();
        s.wait("automatic resume", COOLDOWN as u64 + 30, || async {
            match suspended(s, &ns, name).await {
                Ok(false) => Ok(()),
                Ok(true) => Err("suspended".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        let took = secs(calm_at);
        ensure!(
            took >= COOLDOWN - 0.5,
            "resumed after {took:.1} s of low load, before the {COOLDOWN} s cooldown"
        );
        stays(
            s,
            &ns,
            name,
            false,
            Duration::from_secs(5),
            "flapped back after recovering",
        )
        .await?;
        s.wait("longpoll back after recovery", 60, || async {
            match s
                .deployment_replicas(&ns, &format!("{name}-longpoll"))
                .await?
            {
                (1, 1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;
        let cc = s.cc(&ns, name).await.map_err(anyhow::Error::msg)?;
        ensure!(
            cc["status"]["comments"] == "Live",
            "status after recovery: {}",
            cc["status"]
        );
        Ok(())
    })
}
