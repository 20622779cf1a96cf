//! The API server restarts under a running operator; the operator stays up,
//! re-establishes its watches and converges on changes made after the restart.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use serde_json::json;

use crate::support::{Suite, comment_cluster, secs};

pub fn operator_recovers_from_apiserver_restart(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("restart").await?;
        let name = "survivor";
        s.apply(&ns, &comment_cluster(name, json!({}))).await?;
        s.wait_ready(&ns, name, 120).await?;

        let started = Instant::now();
        let log_before = s.operator_log_len();
        s.cluster.restart_apiserver().await?;
        eprintln!(
            "kube-apiserver restarted and ready again in {:.1} s",
            secs(started)
        );
        // An outage longer than the Lease's renew deadline makes the operator step down and
        // exit, as leader-elected controllers do; in a pod the kubelet starts it again.
        // It decides on its next renew attempt, so keep watching for a few seconds.
        let watching = Instant::now();
        while watching.elapsed() < Duration::from_secs(5) {
            if s.restart_operator_if_stepped_down()? {
                eprintln!("the operator stepped down during the outage and was started again");
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Let the authorizer warm up (it refuses everyone for a moment after a start) before
        // refusals count as RBAC gaps again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.mark_outage(log_before);
        s.check_running()?;

        // A spec change after the restart is seen (the CommentCluster watch is back) ...
        let patch = json!({"spec": {"logic": {"replicas": 2}}}).to_string();
        s.kubectl(&[
            "patch",
            "commentcluster",
            name,
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
        let cc = s.wait_ready(&ns, name, 120).await?;
        let logic = &cc["status"]["tiers"]["logic"];
        ensure!(
            logic["desiredReplicas"] == 2 && logic["readyReplicas"] == 2,
            "status.tiers.logic after the restart: {logic}"
        );

        // ... and so is a child's deletion (the owned-object watches are back too).
        let service = format!("{name}-sync");
        s.kubectl(&["delete", "service", &service, "-n", &ns])
            .await?;
        s.wait(
            &format!("service {service} recreated after the restart"),
            60,
            || async {
                s.kubectl(&["get", "service", &service, "-n", &ns])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
        s.check_running()?;
        Ok(())
    })
}
