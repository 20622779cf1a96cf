//! `commentsSuspended: true` scales longpoll to zero without its HPA bringing it
//! back, writes the control ConfigMap, sets the condition and records an Event; flipping it
//! back brings longpoll back.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use serde_json::json;

use crate::support::{Suite, comment_cluster, condition};

pub fn manual_suspension_round_trip(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let _hpa = s.hpa_gate.lock().await;
        // The real HPA controller runs for this test, syncing every second: if the operator
        // left longpoll's replicas where the autoscaler would raise them, it would.
        let _controller = s.cluster.hpa_controller(Duration::from_secs(1))?;

        let ns = s.namespace("suspend").await?;
        let name = "paused";
        let longpoll = format!("{name}-longpoll");
        s.apply(
            &ns,
            &comment_cluster(
                name,
                json!({"longpoll": {"replicas": null, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}),
            ),
        )
        .await?;
        s.wait_ready(&ns, name, 120).await?;
        s.wait("longpoll at its HPA minimum (2 ready)", 90, || async {
            match s.deployment_replicas(&ns, &longpoll).await? {
                (2, 2) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;

        s.set_suspended(&ns, name, true).await?;
        s.wait("longpoll scaled to zero", 60, || async {
            match s.deployment_replicas(&ns, &longpoll).await? {
                (0, 0) => Ok(()),
                other => Err(format!("(spec, ready) = {other:?}")),
            }
        })
        .await?;
        s.wait("longpoll pods gone", 60, || async {
            let pods = s.pods(&ns, "").await.map_err(|e| e.to_string())?;
            let live: Vec<_> = pods
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .filter(|n| n.starts_with(&format!("{longpoll}-")))
                .collect();
            if live.is_empty() {
                Ok(())
            } else {
                Err(format!("{live:?}"))
            }
        })
        .await?;

        // Several HPA syncs later it is still at zero.
        let held = Instant::now();
        while held.elapsed() < Duration::from_secs(6) {
            let (spec, _) = s
                .deployment_replicas(&ns, &longpoll)
                .await
                .map_err(anyhow::Error::msg)?;
            ensure!(
                spec == 0,
                "longpoll came back to {spec} replicas while suspended"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        let control = s
            .control_data(&ns, name)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            control["commentsSuspended"] == "true" && control["reason"] == "Manual",
            "control ConfigMap while suspended: {control}"
        );
        ensure!(
            control["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {control}"
        );
        let cc = s
            .wait("condition CommentsSuspended=True (Manual)", 30, || async {
                let cc = s.cc(&ns, name).await?;
                match condition(&cc, "CommentsSuspended") {
                    Some((st, reason)) if st == "True" && reason == "Manual" => Ok(cc),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?;
        ensure!(
            cc["status"]["comments"] == "Suspended",
            "status.comments {}",
            cc["status"]["comments"]
        );
        ensure!(
            cc["status"]["suspension"]["reason"] == "Manual",
            "status.suspension {}",
            cc["status"]["suspension"]
        );
        s.wait("a CommentsSuspended Event", 30, || async {
            let events = s
                .events(&ns, name, "CommentsSuspended")
                .await
                .map_err(|e| e.to_string())?;
            if events.is_empty() {
                Err("none".to_string())
            } else {
                Ok(())
            }
        })
        .await?;
        // Each generation applied has its own Event, not a repeat count on the first one's
        // text.
        let generation = cc["metadata"]["generation"].as_i64().unwrap_or_default();
        let note = format!("for generation {generation}");
        s.wait("an Applied Event naming the new generation", 30, || async {
            let events = s
                .events(&ns, name, "Applied")
                .await
                .map_err(|e| e.to_string())?;
            let messages: Vec<_> = events.iter().filter_map(|e| e.message.clone()).collect();
            if messages.iter().any(|m| m.ends_with(&note)) && messages.len() >= 2 {
                Ok(())
            } else {
                Err(format!("Applied events: {messages:?}"))
            }
        })
        .await?;
        let table = s.kubectl(&["get", "cc", name, "-n", &ns]).await?;
        ensure!(
            table.contains("Suspended") && table.contains("Manual"),
            "kubectl get cc does not show the suspension:\n{table}"
        );

        s.set_suspended(&ns, name, false).await?;
        s.wait("longpoll back at 2 ready replicas", 90, || async {
            match s.deployment_replicas(&ns, &longpoll).await? {
                (spec, ready) if spec >= 2 && ready >= 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;
        s.wait("control ConfigMap live again", 30, || async {
            let control = s.control_data(&ns, name).await?;
            if control["commentsSuspended"] == "false" {
                Ok(())
            } else {
                Err(control.to_string())
            }
        })
        .await?;
        s.wait(
            "condition CommentsSuspended=False and a CommentsResumed Event",
            30,
            || async {
                let cc = s.cc(&ns, name).await?;
                let cond = condition(&cc, "CommentsSuspended");
                let resumed = s
                    .events(&ns, name, "CommentsResumed")
                    .await
                    .map_err(|e| e.to_string())?;
                if cond.as_ref().is_some_and(|(st, _)| st == "False")
                    && !resumed.is_empty()
                    && cc["status"]["comments"] == "Live"
                {
                    Ok(())
                } else {
                    Err(format!(
                        "condition {cond:?}, {} resumed events, comments {}",
                        resumed.len(),
                        cc["status"]["comments"]
                    ))
                }
            },
        )
        .await?;

        // The same suspension again: the same Event, counted twice, not a second one.
        s.set_suspended(&ns, name, true).await?;
        s.wait("the CommentsSuspended Event counted twice", 30, || async {
            let events = s
                .events(&ns, name, "CommentsSuspended")
                .await
                .map_err(|e| e.to_string())?;
            let counts: Vec<_> = events
                .iter()
                .map(|e| e.series.as_ref().and_then(|s| s.count).unwrap_or(1))
                .collect();
            if counts == [2] {
                Ok(())
            } else {
                Err(format!("CommentsSuspended events with counts {counts:?}"))
            }
        })
        .await?;
        Ok(())
    })
}
