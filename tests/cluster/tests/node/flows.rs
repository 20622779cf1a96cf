//! The flows on the real node, each in its own namespace, as a site operator meets them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::REAL_NODE_NAME;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::{
    RELEASE_NAMESPACE, Suite, TAGS, all_ready, comment_cluster, condition, pod_ready,
    start_to_ready,
};

/// The tiers of a CommentCluster, as the `app.kubernetes.io/component` label names them.
const TIERS: [&str; 6] = ["frontend", "logic", "sync", "longpoll", "store", "logger"];

/// How long a fresh CommentCluster may take to be Ready on the two-core node.
const READY_SECS: u64 = 240;

/// The chart's operator: two pods on the real node, running the image from the node's
/// registry as the chart's ServiceAccount; one holds the leader Lease; neither was refused
/// anything by the API server.
pub fn operator_runs_in_real_pods(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let pods = s
            .pods(RELEASE_NAMESPACE, "app.kubernetes.io/name=io360-operator")
            .await?;
        ensure!(
            pods.len() == 2,
            "expected two operator pods, found {}",
            pods.len()
        );
        all_ready(&pods).map_err(|e| anyhow!("operator pods: {e}"))?;
        let names: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        for pod in &pods {
            let spec = pod.spec.as_ref().context("pod without spec")?;
            ensure!(
                spec.node_name.as_deref() == Some(REAL_NODE_NAME),
                "operator pod {:?} is on {:?}, not the real node",
                pod.metadata.name,
                spec.node_name
            );
            let image = spec.containers[0].image.clone().unwrap_or_default();
            ensure!(
                image.starts_with(&s.images.operator_repository),
                "operator pod runs {image}, not the image from the node's registry"
            );
            let account = spec.service_account_name.clone().unwrap_or_default();
            ensure!(
                account != "default" && !account.is_empty(),
                "operator pod runs as ServiceAccount {account:?}, not the chart's"
            );
        }

        // One of the two holds the Lease; the other waits.
        let leases = s
            .kubectl(&["get", "leases", "-n", RELEASE_NAMESPACE, "-o", "json"])
            .await?;
        let leases: Value = serde_json::from_str(&leases)?;
        let holders: Vec<String> = leases["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            .filter(|h| names.contains(h))
            .collect();
        ensure!(
            holders.len() == 1,
            "expected exactly one operator pod to hold a Lease, found holders {holders:?} among {names:?}"
        );

        for name in &names {
            let log = s.kubectl(&["logs", "-n", RELEASE_NAMESPACE, name]).await?;
            let denied: Vec<&str> = log
                .lines()
                .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
                .take(3)
                .collect();
            ensure!(
                denied.is_empty(),
                "operator pod {name} was refused: {denied:?}"
            );
        }
        Ok(())
    })
}

/// Applies a CommentCluster on the real node and waits until it and all its pods are Ready;
/// notes how long that took, and each tier's time from container start to Ready.
pub async fn start_cluster(s: &Suite, ns: &str, name: &str, spec: Value) -> Result<()> {
    let applied = Instant::now();
    s.apply(ns, &comment_cluster(s, name, TAGS[0], spec))
        .await?;
    s.wait_ready(ns, name, READY_SECS).await?;
    let selector = format!("app.kubernetes.io/instance={name}");
    s.wait("every pod Ready", 60, || async {
        let pods = s.pods(ns, &selector).await.map_err(|e| e.to_string())?;
        all_ready(&pods)
    })
    .await?;
    s.measure(format!(
        "{ns}: kubectl apply to CommentCluster Ready, every pod Ready: {:.1} s",
        applied.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The body of a comment POST.
fn comment(text: &str) -> Value {
    json!({"text": text, "author": "Node"})
}

/// Posts a comment to thread `/` through `base` (the frontend's public `/api` path); the
/// status and body.
pub(crate) async fn post(
    s: &Suite,
    base: &str,
    text: &str,
) -> Result<(u16, Value, Option<String>)> {
    let response = s
        .http
        .post(format!("{base}/api/v1/comments?thread=/"))
        .json(&comment(text))
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body, retry_after))
}

/// Posts `text` to thread `/` until it is acknowledged (at most `secs` seconds), as a reader
/// retries; answers the comment's answer and the statuses of the attempts refused before it.
pub(crate) async fn post_until_acknowledged(
    s: &Suite,
    base: &str,
    text: &str,
    secs: u64,
) -> Result<(Value, Vec<u16>)> {
    let refused = std::sync::Mutex::new(Vec::new());
    let body = s
        .wait(&format!("{text:?} to be acknowledged"), secs, || async {
            match post(s, base, text).await {
                Ok((201, body, _)) => Ok(body),
                Ok((status, body, _)) => {
                    refused.lock().map_err(|e| e.to_string())?.push(status);
                    Err(format!("{status}: {body}"))
                }
                Err(e) => Err(format!("{e:#}")),
            }
        })
        .await?;
    Ok((body, refused.into_inner().unwrap_or_default()))
}

/// Every comment id of thread `/`, read through the public API.
async fn listed_ids(s: &Suite, base: &str) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = s
            .http
            .get(format!(
                "{base}/api/v1/comments?thread=/&after={after}&limit=100"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let comments = page["comments"].as_array().cloned().unwrap_or_default();
        if comments.is_empty() {
            return Ok(ids);
        }
        for c in &comments {
            ids.push(c["id"].as_i64().unwrap_or_default());
            after = after.max(c["seq"].as_i64().unwrap_or_default());
        }
    }
}

/// A live client of thread `/` through the longpoll Service: polls from its last sequence
/// number, checks that every event is the next one (or an explicit reset, after which it
/// reloads the thread), and keeps every comment id it saw.
pub(crate) struct LiveClient {
    seen: Arc<std::sync::Mutex<Vec<i64>>>,
    states: Arc<std::sync::Mutex<Vec<String>>>,
    problems: Arc<std::sync::Mutex<Vec<String>>>,
    last: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl LiveClient {
    pub(crate) fn start(s: &Suite, longpoll: String, frontend: String, since: u64) -> LiveClient {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let states = Arc::new(std::sync::Mutex::new(Vec::new()));
        let problems = Arc::new(std::sync::Mutex::new(Vec::new()));
        let last = Arc::new(AtomicU64::new(since));
        let stop = Arc::new(AtomicBool::new(false));
        let http = s.http.clone();
        let task = tokio::spawn({
            let (seen, states, problems, last, stop) = (
                seen.clone(),
                states.clone(),
                problems.clone(),
                last.clone(),
                stop.clone(),
            );
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let since = last.load(Ordering::Relaxed);
                    let url = format!("{longpoll}/v1/poll?thread=/&since={since}");
                    let answer = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                        Ok(r) if r.status() == 204 => continue,
                        // Longpoll or sync restarting: try again, as the widget does.
                        _ => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            continue;
                        }
                    };
                    let Some(answer) = answer else { continue };
                    for event in answer["events"].as_array().into_iter().flatten() {
                        let seq = event["seq"].as_u64().unwrap_or_default();
                        // Comments suspended or resumed: no change of the thread, its seq is
                        // the client's own position. Noted, and polled on from where it was.
                        if let Some(kind @ ("suspended" | "resumed")) = event["kind"].as_str() {
                            states.lock().expect("poisoned").push(kind.to_string());
                            continue;
                        }
                        if event["kind"] == "reset" {
                            // Reload the thread, as a client must, and continue from the head.
                            if let Ok(page) = http
                                .get(format!("{frontend}/api/v1/comments?thread=/&limit=1000"))
                                .send()
                                .await
                                && let Ok(page) = page.json::<Value>().await
                            {
                                let mut seen = seen.lock().expect("poisoned");
                                for c in page["comments"].as_array().into_iter().flatten() {
                                    seen.push(c["id"].as_i64().unwrap_or_default());
                                }
                            }
                            last.store(seq, Ordering::Relaxed);
                            continue;
                        }
                        let expected = last.load(Ordering::Relaxed) + 1;
                        if seq != expected {
                            problems
                                .lock()
                                .expect("poisoned")
                                .push(format!("event seq {seq} where {expected} was next"));
                        }
                        if let Some(id) = event["comment"]["id"].as_i64() {
                            seen.lock().expect("poisoned").push(id);
                        }
                        last.store(seq.max(expected - 1), Ordering::Relaxed);
                    }
                }
            }
        });
        LiveClient {
            seen,
            states,
            problems,
            last,
            stop,
            task,
        }
    }

    /// The suspension state events the client's polls were answered with, in order.
    pub(crate) fn states(&self) -> Vec<String> {
        self.states.lock().expect("poisoned").clone()
    }

    /// Waits until the client has seen sequence number `seq`.
    pub(crate) async fn wait_for(&self, s: &Suite, seq: u64, secs: u64) -> Result<()> {
        s.wait(
            &format!("the live client to reach seq {seq}"),
            secs,
            || async {
                let last = self.last.load(Ordering::Relaxed);
                if last >= seq {
                    Ok(())
                } else {
                    Err(format!("at seq {last}"))
                }
            },
        )
        .await
    }

    pub(crate) async fn finish(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        let _ = self.task.await;
        let seen = self.seen.lock().expect("poisoned").clone();
        let problems = self.problems.lock().expect("poisoned").clone();
        (seen, problems)
    }
}

/// A steady loop of page requests to the frontend Service, counting answers other than 200.
struct PageLoop {
    sent: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl PageLoop {
    fn start(s: &Suite, frontend: String, every: Duration) -> PageLoop {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = s.http.clone();
        let task = tokio::spawn({
            let (sent, failed, stop) = (sent.clone(), failed.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let outcome = http
                        .get(format!("{frontend}/"))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(r) if r.status() == 200 => {
                            if r.bytes().await.is_err() {
                                failed.lock().expect("poisoned").push("body cut".into());
                            }
                        }
                        Ok(r) => failed
                            .lock()
                            .expect("poisoned")
                            .push(format!("status {}", r.status())),
                        Err(e) => failed.lock().expect("poisoned").push(e.to_string()),
                    }
                    tokio::time::sleep(every.saturating_sub(at.elapsed())).await;
                }
            }
        });
        PageLoop {
            sent,
            failed,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let failed = self.failed.lock().expect("poisoned").clone();
        (self.sent.load(Ordering::Relaxed), failed)
    }
}

/// Through the Services only: the page is served with its comment snapshot; a comment posted
/// through the public API path is stored, reaches a poll held through the longpoll Service,
/// and appears in the next page's snapshot. The store's claim is bound and mounted.
pub fn pages_and_live_comments_through_services(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("live").await?;
        start_cluster(s, &ns, "blog", json!({})).await?;

        // Each tier's time from its container's start to Ready.
        for tier in TIERS {
            let pods = s
                .pods(
                    &ns,
                    &format!("app.kubernetes.io/instance=blog,app.kubernetes.io/component={tier}"),
                )
                .await?;
            let times: Vec<String> = pods
                .iter()
                .filter_map(start_to_ready)
                .map(|t| format!("{t:.0} s"))
                .collect();
            s.measure(format!(
                "{tier}: container start to Ready {}",
                times.join(", ")
            ));
        }

        let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), &ns);
        let claims = claims.list(&ListParams::default()).await?.items;
        ensure!(
            claims.len() >= 2,
            "expected the store's and logger's claims, found {}",
            claims.len()
        );
        for claim in &claims {
            let phase = claim.status.as_ref().and_then(|st| st.phase.clone());
            ensure!(
                phase.as_deref() == Some("Bound"),
                "claim {:?} is {phase:?}, not Bound",
                claim.metadata.name
            );
        }
        let printed = s.kubectl(&["get", "cc", "-n", &ns]).await?;
        ensure!(
            printed.contains("True"),
            "`kubectl get cc` does not show Ready:\n{printed}"
        );

        pages_and_a_live_comment(
            s,
            &ns,
            "blog",
            "Posted through the frontend Service on a real node",
        )
        .await?;
        s.delete_namespace(&ns).await
    })
}

/// Through the Services of CommentCluster `name`: the page is served with its comment
/// section; `text`, posted through the public API path, is stored, reaches a poll held
/// through the longpoll Service, and appears in the next page's snapshot.
pub async fn pages_and_a_live_comment(s: &Suite, ns: &str, name: &str, text: &str) -> Result<()> {
    let frontend = s.service_url(ns, name, "frontend").await?;
    let longpoll = s.service_url(ns, name, "longpoll").await?;
    let page = s.http.get(format!("{frontend}/")).send().await?;
    ensure!(page.status() == 200, "page answered {}", page.status());
    let html = page.text().await?;
    ensure!(
        html.contains("io360 on a real node"),
        "not the site's page: {html:.300}"
    );
    ensure!(
        html.contains("io360-thread"),
        "no comment section in the page"
    );

    let live = LiveClient::start(s, longpoll.clone(), frontend.clone(), 0);
    // Give the poll time to be held before the comment is posted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body, _) = post(s, &frontend, text).await?;
    ensure!(status == 201, "POST answered {status}: {body}");
    let id = body["comment"]["id"].as_i64().context("no comment id")?;
    let seq = body["comment"]["seq"].as_u64().context("no seq")?;
    live.wait_for(s, seq, 30).await?;
    let (seen, problems) = live.finish().await;
    ensure!(
        seen.contains(&id),
        "the live client saw {seen:?}, not comment {id}"
    );
    ensure!(problems.is_empty(), "live delivery: {problems:?}");

    s.wait("the comment in the next page's snapshot", 30, || async {
        let html = s
            .http
            .get(format!("{frontend}/"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if html.contains(text) {
            Ok(())
        } else {
            Err("not in the snapshot yet".to_string())
        }
    })
    .await?;
    Ok(())
}

/// The store's pod is deleted by force, and later its process is killed: it comes back on
/// the same claim with every acknowledged comment, and a live client sees no gap.
pub fn store_restarts_on_its_claim(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("store").await?;
        start_cluster(s, &ns, "notes", json!({})).await?;
        let frontend = s.service_url(&ns, "notes", "frontend").await?;
        let longpoll = s.service_url(&ns, "notes", "longpoll").await?;
        let live = LiveClient::start(s, longpoll, frontend.clone(), 0);
        let store_selector = "app.kubernetes.io/instance=notes,app.kubernetes.io/component=store";
        let claim_of = |pods: &[k8s_openapi::api::core::v1::Pod]| -> Option<String> {
            pods.first()?
                .spec
                .as_ref()?
                .volumes
                .as_ref()?
                .iter()
                .find_map(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
        };
        let claim = claim_of(&s.pods(&ns, store_selector).await?).context("store has no claim")?;

        let mut acknowledged = Vec::new();
        let mut last_seq = 0;
        // The first posts, as a reader makes them: retried until acknowledged. Just after the
        // cluster is Ready, a post was once refused; what was refused, if anything, is printed.
        let mut refused = Vec::new();
        for i in 0..5 {
            let (body, before) =
                post_until_acknowledged(s, &frontend, &format!("before {i}"), 60).await?;
            refused.extend(before);
            acknowledged.push(body["comment"]["id"].as_i64().unwrap_or_default());
            last_seq = last_seq.max(body["comment"]["seq"].as_u64().unwrap_or_default());
        }
        if !refused.is_empty() {
            s.measure(format!(
                "store: first posts refused before one was acknowledged: {refused:?}"
            ));
        }
        let mut post_some =
            async |round: &str, n: usize, acknowledged: &mut Vec<i64>| -> Result<()> {
                for i in 0..n {
                    let (status, body, _) = post(s, &frontend, &format!("{round} {i}")).await?;
                    if status == 201 {
                        acknowledged.push(body["comment"]["id"].as_i64().unwrap_or_default());
                        last_seq =
                            last_seq.max(body["comment"]["seq"].as_u64().unwrap_or_default());
                    }
                }
                Ok(())
            };

        for how in ["pod deleted by force", "process killed"] {
            let before = s.pods(&ns, store_selector).await?;
            let old_uid = before[0].metadata.uid.clone().unwrap_or_default();
            let old_restarts = restarts(&before[0]);
            let pod_name = before[0].metadata.name.clone().unwrap_or_default();
            if how == "pod deleted by force" {
                s.kubectl(&[
                    "delete",
                    "pod",
                    "-n",
                    &ns,
                    &pod_name,
                    "--grace-period=0",
                    "--force",
                ])
                .await?;
            } else {
                kill_container_process(&old_uid, "store")?;
            }
            // Writes go on while the store is away; those that are acknowledged must last.
            post_some(how, 5, &mut acknowledged).await?;
            s.wait(&format!("store Ready again after: {how}"), 180, || async {
                let pods = s
                    .pods(&ns, store_selector)
                    .await
                    .map_err(|e| e.to_string())?;
                let pod = pods.first().ok_or("no store pod")?;
                let replaced = pod.metadata.uid.as_deref() != Some(old_uid.as_str())
                    || restarts(pod) > old_restarts;
                if replaced && pod_ready(pod) {
                    Ok(())
                } else {
                    Err(format!("replaced: {replaced}, ready: {}", pod_ready(pod)))
                }
            })
            .await?;
            let now = claim_of(&s.pods(&ns, store_selector).await?);
            ensure!(
                now.as_deref() == Some(claim.as_str()),
                "store came back on {now:?}, not {claim}"
            );
            // Logic stays Ready while the store is away (it serves what it has cached), so
            // Ready says nothing of the store: wait, as a reader would retry, until a thread
            // read through the frontend reaches the store again.
            s.wait("a thread read to reach the store again", 120, || async {
                let r = s
                    .http
                    .get(format!(
                        "{frontend}/api/v1/comments?thread=/&after=0&limit=1"
                    ))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() == 200 {
                    Ok(())
                } else {
                    Err(format!("the read answered {}", r.status()))
                }
            })
            .await?;
            post_some(&format!("after {how}"), 3, &mut acknowledged).await?;
        }

        let listed = s
            .wait("the whole thread to be listed", 60, || async {
                listed_ids(s, &frontend).await.map_err(|e| format!("{e:#}"))
            })
            .await?;
        let lost: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| !listed.contains(id))
            .collect();
        ensure!(lost.is_empty(), "acknowledged comments lost: {lost:?}");
        live.wait_for(s, last_seq, 60).await?;
        let (seen, problems) = live.finish().await;
        ensure!(problems.is_empty(), "live client saw a gap: {problems:?}");
        let unseen: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| !seen.contains(id))
            .collect();
        ensure!(unseen.is_empty(), "the live client never saw {unseen:?}");
        s.measure(format!(
            "store: {} comments acknowledged across a forced delete and a killed process, none lost",
            acknowledged.len()
        ));
        s.delete_namespace(&ns).await
    })
}

fn restarts(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// Kills with SIGKILL the process of `io360 serve <tier>` running in the pod with `uid`: found
/// through /proc by its command line and the pod's cgroup (the kubelet names pod cgroups after
/// the pod's UID).
fn kill_container_process(uid: &str, tier: &str) -> Result<()> {
    let marker = uid.replace('-', "_");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&format!("serve {tier}")) {
            continue;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(uid) || cgroup.contains(&marker) {
            // SAFETY: sending a signal to a pid.
            if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
            }
            return Ok(());
        }
    }
    bail!("no `io360 serve {tier}` process in a cgroup of pod {uid}")
}

/// `spec.commentsSuspended: true`: longpoll's pods terminate, writes get 503 with Retry-After
/// within 5 s, pages keep answering 200 throughout; resuming brings longpoll back and live
/// delivery works again.
pub fn suspension_on_real_pods(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("suspend").await?;
        start_cluster(s, &ns, "news", json!({})).await?;
        let frontend = s.service_url(&ns, "news", "frontend").await?;
        let longpoll = s.service_url(&ns, "news", "longpoll").await?;
        let pages = PageLoop::start(s, frontend.clone(), Duration::from_millis(100));
        let longpoll_selector =
            "app.kubernetes.io/instance=news,app.kubernetes.io/component=longpoll";

        let patch = |on: bool| json!({"spec": {"commentsSuspended": on}}).to_string();
        let flipped = Instant::now();
        s.kubectl(&[
            "patch",
            "cc",
            "news",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &patch(true),
        ])
        .await?;
        let refused = loop {
            let (status, body, retry_after) = post(s, &frontend, "during suspension").await?;
            if status == 503 {
                ensure!(retry_after.is_some(), "503 without Retry-After: {body}");
                break flipped.elapsed();
            }
            ensure!(status == 201, "POST answered {status}: {body}");
            ensure!(
                flipped.elapsed() < Duration::from_secs(5),
                "writes still accepted 5 s after the flip"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        s.measure(format!(
            "suspension: writes refused {:.1} s after the flip",
            refused.as_secs_f64()
        ));
        s.wait("longpoll's pods gone", 90, || async {
            let pods = s
                .pods(&ns, longpoll_selector)
                .await
                .map_err(|e| e.to_string())?;
            if pods.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pods", pods.len()))
            }
        })
        .await?;
        let cc = s.cc(&ns, "news").await.map_err(|e| anyhow!(e))?;
        let suspended = condition(&cc, "CommentsSuspended");
        ensure!(
            suspended
                .as_ref()
                .is_some_and(|(st, reason, _)| st == "True" && reason == "Manual"),
            "CommentsSuspended condition: {suspended:?}"
        );

        s.kubectl(&[
            "patch",
            "cc",
            "news",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &patch(false),
        ])
        .await?;
        s.wait("longpoll back and Ready", 120, || async {
            let pods = s
                .pods(&ns, longpoll_selector)
                .await
                .map_err(|e| e.to_string())?;
            all_ready(&pods)
        })
        .await?;
        let longpoll = s
            .service_url(&ns, "news", "longpoll")
            .await
            .unwrap_or(longpoll);
        let live = LiveClient::start(s, longpoll, frontend.clone(), 0);
        let (posted, _) = post_until_acknowledged(s, &frontend, "after resuming", 30).await?;
        let seq = posted["comment"]["seq"].as_u64().context("no seq")?;
        live.wait_for(s, seq, 30).await?;
        let (_, problems) = live.finish().await;
        ensure!(
            problems.is_empty(),
            "live delivery after resuming: {problems:?}"
        );
        let (sent, failed) = pages.finish().await;
        ensure!(
            failed.is_empty(),
            "{} of {sent} page requests failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        s.measure(format!(
            "suspension round trip: {sent} page requests, all 200"
        ));
        s.delete_namespace(&ns).await
    })
}

/// A new image tag rolls every tier under a steady load of page requests and posts: no page
/// request fails, and every acknowledged comment is there afterwards.
pub fn rolling_update_under_load(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("roll").await?;
        start_cluster(s, &ns, "shop", json!({})).await?;
        let frontend = s.service_url(&ns, "shop", "frontend").await?;
        let pages = PageLoop::start(s, frontend.clone(), Duration::from_millis(50));
        let stop = Arc::new(AtomicBool::new(false));
        let poster = tokio::spawn({
            let http = s.http.clone();
            let frontend = frontend.clone();
            let stop = stop.clone();
            async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0u64;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let sent = http
                        .post(format!("{frontend}/api/v1/comments?thread=/"))
                        .json(&comment(&format!("during the roll {i}")))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            if let Ok(body) = r.json::<Value>().await {
                                acknowledged
                                    .push(body["comment"]["id"].as_i64().unwrap_or_default());
                            }
                        }
                        _ => refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                (acknowledged, refused)
            }
        });

        let rolled = Instant::now();
        let patch = json!({"spec": {"image": {"tag": TAGS[1]}}}).to_string();
        s.kubectl(&[
            "patch",
            "cc",
            "shop",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
        s.wait("every pod on the new tag and Ready", READY_SECS, || async {
            let pods = s
                .pods(&ns, "app.kubernetes.io/instance=shop")
                .await
                .map_err(|e| e.to_string())?;
            let old: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|sp| sp.containers[0].image.as_deref())
                        .is_none_or(|i| !i.ends_with(TAGS[1]))
                })
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            if !old.is_empty() {
                return Err(format!("still on the old tag: {old:?}"));
            }
            all_ready(&pods)
        })
        .await?;
        s.wait_ready(&ns, "shop", 60).await?;
        let took = rolled.elapsed();
        // A little load after the roll, so requests in flight at its end are counted too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let (acknowledged, refused) = poster.await?;
        let (sent, failed) = pages.finish().await;
        ensure!(
            failed.is_empty(),
            "{} of {sent} page requests failed during the roll: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        let listed = listed_ids(s, &frontend).await?;
        let lost: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| !listed.contains(id))
            .collect();
        ensure!(
            lost.is_empty(),
            "acknowledged comments lost in the roll: {lost:?}"
        );
        s.measure(format!(
            "rolling update of every tier in {:.0} s: {sent} page requests all 200; {} posts acknowledged and kept, {refused} refused while the store rolled",
            took.as_secs_f64(),
            acknowledged.len()
        ));
        s.delete_namespace(&ns).await
    })
}

/// A CommentCluster whose image does not exist, and one whose tiers cannot start: the status
/// names the tiers and the reason instead of staying Progressing with no word.
pub fn broken_tiers_are_named_in_status(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("broken").await?;
        let mut missing = comment_cluster(s, "missing", TAGS[0], json!({}));
        missing["spec"]["image"]["tag"] = json!("no-such-tag");
        s.apply(&ns, &missing).await?;
        // The operator's image has no `io360` binary: every tier's container fails to start.
        let mut crashing = comment_cluster(s, "crashing", TAGS[0], json!({}));
        crashing["spec"]["image"] =
            json!({"repository": s.images.operator_repository, "tag": s.images.operator_tag});
        s.apply(&ns, &crashing).await?;

        for (name, reasons) in [
            ("missing", &["ErrImagePull", "ImagePullBackOff"][..]),
            (
                "crashing",
                &["CrashLoopBackOff", "RunContainerError", "StartError"][..],
            ),
        ] {
            let said = s
                .wait(
                    &format!("{name}: status names the failing tiers"),
                    120,
                    || async {
                        let cc = s.cc(&ns, name).await?;
                        let (status, reason, message) =
                            condition(&cc, "Ready").ok_or("no Ready condition")?;
                        let named = TIERS.iter().any(|t| message.contains(t));
                        let why = reasons.iter().any(|r| message.contains(r) || reason == *r);
                        if status == "False" && named && why {
                            Ok(format!("{reason}: {message}"))
                        } else {
                            Err(format!("Ready={status} {reason}: {message}"))
                        }
                    },
                )
                .await?;
            s.measure(format!("{name}: Ready=False, {said}"));
        }
        s.delete_namespace(&ns).await
    })
}
