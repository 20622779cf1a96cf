//! Longpoll scaled on what loads it: held connections per pod, scraped by Prometheus from the
//! pods' `/metrics` and served to the autoscaler by a custom metrics adapter. Nothing here
//! writes an autoscaler's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::flows::start_cluster;
use crate::support::{Suite, condition};

/// Polls held open at once during the test.
const HELD: usize = 60;
/// The autoscaler's target of held connections per longpoll pod.
const TARGET: u32 = 10;
const MAX_LONGPOLLS: i32 = 3;

/// `HELD` clients each holding a poll on thread `/` through the longpoll Service, polling
/// again as soon as one is answered, as open pages do.
struct Holders {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Holders {
    fn start(http: reqwest::Client, longpoll: &str) -> Holders {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..HELD)
            .map(|_| {
                let (http, stop) = (http.clone(), stop.clone());
                let url = format!("{longpoll}/v1/poll?thread=/&since=0");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if http.get(&url).send().await.is_err() {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                })
            })
            .collect();
        Holders { stop, tasks }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The longpoll autoscaler's current replicas and its reading of held connections per pod.
async fn reading(s: &Suite, ns: &str, name: &str) -> Result<(i32, Option<f64>)> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), ns);
    let status = hpas
        .get(&format!("{name}-longpoll"))
        .await?
        .status
        .unwrap_or_default();
    let per_pod = status.current_metrics.iter().flatten().find_map(|m| {
        let pods = m.pods.as_ref()?;
        (pods.metric.name == "io360_longpoll_held_connections")
            .then(|| {
                pods.current
                    .average_value
                    .as_ref()
                    .and_then(|q| quantity(&q.0))
            })
            .flatten()
    });
    Ok((status.current_replicas.unwrap_or(0), per_pod))
}

/// A decimal quantity (`20`, `19500m`) as a number.
fn quantity(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|v| v / 1000.0),
        None => q.parse().ok(),
    }
}

/// The CommentCluster's `status.tiers.longpoll.autoscaling.metricsAvailable`.
async fn longpoll_metrics_available(s: &Suite, ns: &str, name: &str) -> String {
    match s.cc(ns, name).await {
        Ok(cc) => cc["status"]["tiers"]["longpoll"]["autoscaling"]["metricsAvailable"]
            .as_str()
            .unwrap_or("absent")
            .to_string(),
        Err(e) => e,
    }
}

/// Longpoll's autoscaler, on its default metric (held connections per pod, from Prometheus
/// through the custom metrics adapter), scales longpoll out to its maximum while open pages
/// hold polls, and the CommentCluster reports the metric as read. With Prometheus down, the
/// autoscaler cannot read it: it keeps its replicas, and the CommentCluster names longpoll in
/// `AutoscalingHealthy`; with Prometheus back, the reading returns.
pub fn longpoll_scales_on_held_connections(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("held").await?;
        let name = "held";
        let _hpa = s.cluster.hpa_controller(Duration::from_secs(2))?;
        let metrics = s.cluster.custom_metrics().await?;
        start_cluster(
            s,
            &ns,
            name,
            json!({"longpoll": {
                "replicas": null,
                "autoscaling": {
                    "minReplicas": 1,
                    "maxReplicas": MAX_LONGPOLLS,
                    "targetHeldConnections": TARGET,
                },
            }}),
        )
        .await?;
        let longpoll = s.service_url(&ns, name, "longpoll").await?;

        // Before any poll is held, the autoscaler reads the pods' held connections (none).
        let quiet = s
            .wait("the longpoll HPA reading held connections", 120, || async {
                match reading(s, &ns, name).await {
                    Ok((replicas, Some(v))) => Ok((replicas, v)),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?;
        ensure!(
            quiet.0 == 1,
            "longpoll scaled to {} with no poll held",
            quiet.0
        );
        s.wait(
            "the CommentCluster reporting longpoll's metric read",
            60,
            || async {
                match longpoll_metrics_available(s, &ns, name).await.as_str() {
                    "True" => Ok(()),
                    other => Err(other.to_string()),
                }
            },
        )
        .await?;

        // Open pages hold polls: HELD over one pod against a target of TARGET per pod.
        let held_at = Instant::now();
        let holders = Holders::start(s.http.clone(), &longpoll);
        let peak = s
            .wait(
                "longpoll scaled to its maximum on held connections",
                180,
                || async {
                    match reading(s, &ns, name).await {
                        Ok((replicas, Some(v))) if replicas >= MAX_LONGPOLLS => Ok(v),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await?;
        let scaled_after = held_at.elapsed().as_secs_f64();
        // The reading follows: the held polls are now counted over three pods.
        let spread = s
            .wait("the reading over three pods", 90, || async {
                match reading(s, &ns, name).await {
                    Ok((replicas, Some(v)))
                        if replicas == MAX_LONGPOLLS && v <= HELD as f64 / 2.0 =>
                    {
                        Ok(v)
                    }
                    other => Err(format!("{other:?}")),
                }
            })
            .await?;

        // Prometheus goes down: no reading, replicas held, longpoll named in status.
        metrics.stop_prometheus();
        let outage = async {
            let healthy = s
                .wait("AutoscalingHealthy False naming longpoll", 120, || async {
                    let (replicas, _) = reading(s, &ns, name).await.map_err(|e| e.to_string())?;
                    if replicas != MAX_LONGPOLLS {
                        return Ok(Err(format!(
                            "the HPA moved longpoll to {replicas} replicas without a reading"
                        )));
                    }
                    let cc = s.cc(&ns, name).await?;
                    match condition(&cc, "AutoscalingHealthy") {
                        Some((status, reason, message))
                            if status == "False" && message.contains("longpoll") =>
                        {
                            Ok(Ok((reason, message)))
                        }
                        other => Err(format!("{other:?}")),
                    }
                })
                .await?
                .map_err(anyhow::Error::msg)?;
            // A while longer without a reading: the replicas stay where they were.
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                let (replicas, _) = reading(s, &ns, name).await?;
                ensure!(
                    replicas == MAX_LONGPOLLS,
                    "the HPA moved longpoll to {replicas} replicas without a reading"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            ensure!(
                longpoll_metrics_available(s, &ns, name).await == "False",
                "status.tiers.longpoll.autoscaling.metricsAvailable is not False with Prometheus down"
            );
            Ok(healthy)
        }
        .await;
        let restarted = metrics.start_prometheus();
        let (reason, message) = outage?;
        restarted?;
        s.wait("longpoll's metric read again", 120, || async {
            match longpoll_metrics_available(s, &ns, name).await.as_str() {
                "True" => Ok(()),
                other => Err(other.to_string()),
            }
        })
        .await?;
        holders.stop();
        metrics.check_running()?;
        s.measure(format!(
            "longpoll on held connections: {HELD} polls held, target {TARGET}/pod: reading \
             {peak:.1} per pod, 1 to {MAX_LONGPOLLS} replicas in {scaled_after:.1} s, then \
             {spread:.1} per pod; Prometheus down: replicas held, AutoscalingHealthy False \
             ({reason}: {})",
            message.chars().take(160).collect::<String>()
        ));
        drop(metrics);
        s.delete_namespace(&ns).await
    })
}
