//! Children deleted by hand come back; deleting the CommentCluster lets garbage
//! collection remove every child; invalid specs are refused by the API server itself with a
//! message naming the field.

use anyhow::{Context, Result, bail, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::run;
use serde_json::json;

use crate::lifecycle::{made_by_others, objects};
use crate::support::{Suite, comment_cluster, merge};

async fn uid_of(
    s: &Suite,
    ns: &str,
    kind: &str,
    name: &str,
) -> std::result::Result<String, String> {
    s.kubectl(&[
        "get",
        kind,
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ])
    .await
    .map_err(|e| e.to_string())
}

pub fn children_are_restored_and_collected(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("children").await?;
        let name = "restored";
        s.apply(&ns, &comment_cluster(name, json!({}))).await?;
        s.wait_ready(&ns, name, 120).await?;

        for (kind, child) in [
            ("deployment", format!("{name}-logic")),
            ("statefulset", format!("{name}-store")),
            ("service", format!("{name}-store")),
            ("configmap", format!("{name}-control")),
        ] {
            let before = uid_of(s, &ns, kind, &child)
                .await
                .map_err(anyhow::Error::msg)?;
            s.kubectl(&["delete", kind, &child, "-n", &ns, "--wait=false"])
                .await?;
            s.wait(&format!("{kind} {child} recreated"), 60, || async {
                match uid_of(s, &ns, kind, &child).await {
                    Ok(uid) if !uid.is_empty() && uid != before => Ok(()),
                    Ok(uid) => Err(format!("uid {uid}")),
                    Err(e) => Err(e),
                }
            })
            .await?;
        }
        s.wait_ready(&ns, name, 120).await?;

        let cc = s.cc(&ns, name).await.map_err(anyhow::Error::msg)?;
        let uid = cc["metadata"]["uid"]
            .as_str()
            .context("no uid")?
            .to_string();
        let owned = objects(s, &ns).await?;
        let owned_count = owned.iter().filter(|(_, _, o)| o.contains(&uid)).count();
        ensure!(
            owned_count >= 10,
            "only {owned_count} owned children before delete: {owned:?}"
        );

        s.kubectl(&["delete", "commentcluster", name, "-n", &ns, "--wait=false"])
            .await?;
        s.wait("garbage collection of every child", 120, || async {
            let left: Vec<_> = objects(s, &ns)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(kind, child, _)| !made_by_others(kind, child))
                .collect();
            let pods = s.pods(&ns, "").await.map_err(|e| e.to_string())?;
            if left.is_empty() && pods.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?} and {} pods left", pods.len()))
            }
        })
        .await?;
        Ok(())
    })
}

pub fn invalid_specs_are_rejected(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("invalid").await?;
        let cases = [
            (
                "both-replicas-and-autoscaling",
                json!({"spec": {"frontend": {"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}}),
                "spec.frontend",
            ),
            (
                "negative-replicas",
                json!({"spec": {"longpoll": {"replicas": -1}}}),
                "spec.longpoll.replicas",
            ),
            (
                "unknown-moderation",
                json!({"spec": {"moderation": "sometimes"}}),
                "spec.moderation",
            ),
            (
                "no-admin-token",
                json!({"spec": {"adminTokenSecret": null}}),
                "spec.adminTokenSecret",
            ),
        ];
        for (name, patch, field) in cases {
            let mut object = comment_cluster(name, json!({}));
            merge(&mut object, patch);
            let path = s.cluster.scratch().join(format!("invalid-{name}.json"));
            std::fs::write(&path, serde_json::to_vec(&object)?)?;
            let result = run(s
                .cluster
                .kubectl()
                .args(["apply", "-n", &ns, "-f"])
                .arg(&path))
            .await;
            match result {
                Ok(out) => bail!("the server accepted the invalid spec {name}: {out}"),
                Err(io360_cluster_tests::Error::Command { stderr, .. }) => {
                    ensure!(
                        stderr.contains(field) && stderr.to_lowercase().contains("invalid"),
                        "rejection of {name} does not name {field}: {stderr}"
                    );
                }
                Err(other) => return Err(other.into()),
            }
        }
        let left = s.kubectl(&["get", "cc", "-n", &ns, "-o", "name"]).await?;
        ensure!(
            left.trim().is_empty(),
            "invalid CommentClusters were stored: {left}"
        );
        Ok(())
    })
}
