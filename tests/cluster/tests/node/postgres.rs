//! The store on PostgreSQL, on the real node: two store pods on one database, one of them
//! deleted by force while readers post, and nothing acknowledged is lost.

use std::time::Instant;

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::POSTGRES_PORT;
use io360_cluster_tests::isolate::NODE_IP;
use serde_json::{Value, json};

use crate::flows::{LiveClient, start_cluster};
use crate::support::{Suite, pod_ready};

const STORE_REPLICAS: usize = 2;

/// Every comment of thread `/` through the public API: (id, seq).
async fn listed(s: &Suite, frontend: &str) -> Result<Vec<(i64, u64)>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = s
            .http
            .get(format!(
                "{frontend}/api/v1/comments?thread=/&after={after}&limit=100"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let comments = page["comments"].as_array().cloned().unwrap_or_default();
        if comments.is_empty() {
            return Ok(out);
        }
        for c in &comments {
            let seq = c["seq"].as_u64().unwrap_or_default();
            out.push((c["id"].as_i64().unwrap_or_default(), seq));
            after = after.max(seq);
        }
    }
}

/// Posts `text` to thread `/` as reader `n` behind the site's proxy (the node's address, a
/// trusted proxy here), so each reader has its own rate limit, as readers behind an Ingress
/// do; the status and body.
async fn post_as(s: &Suite, frontend: &str, n: u32, text: &str) -> Result<(u16, Value)> {
    let response = s
        .http
        .post(format!("{frontend}/api/v1/comments?thread=/"))
        // Logic limits writes per /24 network: each reader in its own (a header, never dialled).
        .header("x-forwarded-for", format!("100.64.{}.1", n % 250 + 1))
        .json(&json!({"text": text, "author": format!("Reader {n}")}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Posts until acknowledged, as a reader retries (60 s at most); the comment's id, and the
/// statuses refused on the way into `refused`.
async fn post_until_acknowledged(
    s: &Suite,
    frontend: &str,
    n: u32,
    text: &str,
    refused: &mut Vec<u16>,
) -> Result<i64> {
    let until = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = post_as(s, frontend, n, text).await?;
        if status == 201 {
            return Ok(body["comment"]["id"].as_i64().unwrap_or_default());
        }
        refused.push(status);
        ensure!(
            Instant::now() < until,
            "{text:?} never acknowledged: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The store pods' logs (and their last crashed run's), for a failure to explain itself.
async fn store_logs(s: &Suite, ns: &str, selector: &str) -> String {
    let mut out = String::new();
    for previous in ["--previous=false", "--previous=true"] {
        let logs = s
            .kubectl(&[
                "logs",
                "-n",
                ns,
                "-l",
                selector,
                "--prefix",
                "--tail=20",
                previous,
            ])
            .await
            .unwrap_or_else(|e| format!("{e:#}"));
        out.push_str(&format!("--- store logs ({previous}) ---\n{logs}\n"));
    }
    out
}

/// A CommentCluster whose store runs on a PostgreSQL server beside the cluster (at the
/// node's address) with two replicas reaches Ready; one store pod is deleted by force while
/// posts go on: the other keeps acknowledging them before the replacement is Ready, every
/// acknowledged comment is listed afterwards with gap-free sequence numbers, and a live
/// client sees each one.
pub fn store_on_postgres_survives_a_pod_loss(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let mut database = s.cluster.postgres().await?;
        let ns = s.namespace("pg").await?;
        let name = "pg";
        s.apply(
            &ns,
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "database"},
                "stringData": {"uri": database.url()},
            }),
        )
        .await?;
        start_cluster(
            s,
            &ns,
            name,
            json!({"store": {
                "engine": "Postgres",
                "postgres": {
                    "urlSecret": {"name": "database", "key": "uri"},
                    "port": POSTGRES_PORT,
                    "peers": [{"ipBlock": {"cidr": format!("{NODE_IP}/32")}}],
                },
                "replicas": STORE_REPLICAS,
            },
            // Readers come through a proxy at the node's address, each with its own address.
            "network": {
                "apiServerCidrs": [format!("{NODE_IP}/32")],
                "trustedProxies": [format!("{NODE_IP}/32")],
            }}),
        )
        .await?;
        let selector =
            format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=store");
        let pods = s.pods(&ns, &selector).await?;
        ensure!(
            pods.len() == STORE_REPLICAS && pods.iter().all(pod_ready),
            "{} store pods, wanted {STORE_REPLICAS} Ready",
            pods.len()
        );
        let frontend = s.service_url(&ns, name, "frontend").await?;
        let longpoll = s.service_url(&ns, name, "longpoll").await?;
        let live = LiveClient::start(s, longpoll, frontend.clone(), 0);

        let mut acknowledged = Vec::new();
        let mut refused = Vec::new();
        let mut reader = 0;
        for i in 0..10 {
            reader += 1;
            acknowledged.push(
                post_until_acknowledged(s, &frontend, reader, &format!("before {i}"), &mut refused)
                    .await?,
            );
        }

        // One store pod goes; posts go on at once.
        let victim = pods[0].metadata.name.clone().unwrap_or_default();
        s.kubectl(&[
            "delete",
            "pod",
            "-n",
            &ns,
            &victim,
            "--grace-period=0",
            "--force",
        ])
        .await?;
        let deleted = Instant::now();
        let mut while_one = 0;
        for i in 0..30 {
            reader += 1;
            let (status, body) = post_as(s, &frontend, reader, &format!("during {i}")).await?;
            if status == 201 {
                acknowledged.push(body["comment"]["id"].as_i64().unwrap_or_default());
                let replaced = s
                    .pods(&ns, &selector)
                    .await?
                    .iter()
                    .filter(|p| p.metadata.name.as_deref() != Some(victim.as_str()))
                    .filter(|p| pod_ready(p))
                    .count();
                if replaced < STORE_REPLICAS {
                    while_one += 1;
                }
            } else {
                refused.push(status);
            }
        }
        if while_one == 0 {
            let logs = store_logs(s, &ns, &selector).await;
            anyhow::bail!(
                "no post was acknowledged while only one store pod was Ready (refused: \
                 {refused:?})\n{logs}"
            );
        }
        s.wait("both store pods Ready again", 120, || async {
            let pods = s.pods(&ns, &selector).await.map_err(|e| e.to_string())?;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            if ready == STORE_REPLICAS {
                Ok(())
            } else {
                Err(format!("{ready} Ready"))
            }
        })
        .await?;
        let back = deleted.elapsed().as_secs_f64();
        for i in 0..5 {
            reader += 1;
            acknowledged.push(
                post_until_acknowledged(s, &frontend, reader, &format!("after {i}"), &mut refused)
                    .await?,
            );
        }
        database.check_running()?;

        let comments = listed(s, &frontend).await?;
        let ids: Vec<i64> = comments.iter().map(|(id, _)| *id).collect();
        let lost: Vec<&i64> = acknowledged.iter().filter(|id| !ids.contains(id)).collect();
        ensure!(lost.is_empty(), "acknowledged comments lost: {lost:?}");
        let seqs: Vec<u64> = comments.iter().map(|(_, seq)| *seq).collect();
        let gap_free: Vec<u64> = (1..=seqs.len() as u64).collect();
        ensure!(seqs == gap_free, "sequence numbers are not 1..n: {seqs:?}");
        let last = seqs.last().copied().unwrap_or_default();
        live.wait_for(s, last, 60).await?;
        let (seen, problems) = live.finish().await;
        ensure!(problems.is_empty(), "live client saw a gap: {problems:?}");
        let unseen: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| !seen.contains(id))
            .collect();
        ensure!(unseen.is_empty(), "the live client never saw {unseen:?}");
        s.measure(format!(
            "store on PostgreSQL, {STORE_REPLICAS} replicas: {} comments acknowledged, {while_one} \
             of them while one store pod was gone, none lost, seqs 1..{last}; refused on the way: \
             {refused:?}; the replacement Ready {back:.1} s after the forced delete",
            acknowledged.len()
        ));
        s.delete_namespace(&ns).await
    })
}
