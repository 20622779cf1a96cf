//! The spike on real metrics: metrics-server reads the real node's kubelet, the HPA
//! controller scales the frontend from the pods' real CPU, and the operator suspends comments
//! on its own when the frontend sits at its maximum over the threshold, then resumes them once
//! the load is gone. Nothing here writes an autoscaler's status.
//!
//! The run's time series (page requests per second, page p99, replicas per tier, the frontend
//! autoscaler's reading, suspended or not) is written as CSV next to the test binary's target
//! directory, `<target>/io360-spike/spike.csv`, for `tests/spike/plot.sh` to draw.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::flows::{LiveClient, post_until_acknowledged, start_cluster};
use crate::support::{Suite, all_ready, condition};

/// `kubectl top pods` and the metrics API give a running io360 pod's real CPU and memory,
/// scraped from the node's kubelet by metrics-server.
pub fn resource_metrics_of_real_pods(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("metrics").await?;
        start_cluster(s, &ns, "gauge", json!({})).await?;
        let frontend = s.service_url(&ns, "gauge", "frontend").await?;
        // Some page traffic, so the frontend's CPU is more than an idle process's.
        let load = Load::start(frontend);
        load.set_rate(40);
        let selector = "app.kubernetes.io/instance=gauge,app.kubernetes.io/component=frontend";
        let pods = s.pods(&ns, selector).await?;
        let pod = pods
            .first()
            .and_then(|p| p.metadata.name.clone())
            .context("no frontend pod")?;
        let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{pod}");
        let (cpu, memory) = s
            .wait(
                "the metrics API to report the frontend's CPU and memory",
                90,
                || {
                    let path = path.clone();
                    async move {
                        let raw = s
                            .kubectl(&["get", "--raw", &path])
                            .await
                            .map_err(|e| e.to_string())?;
                        let metrics: Value =
                            serde_json::from_str(&raw).map_err(|e| e.to_string())?;
                        let usage = &metrics["containers"][0]["usage"];
                        let cpu = usage["cpu"].as_str().and_then(cpu_millis);
                        let memory = usage["memory"].as_str().and_then(bytes);
                        match (cpu, memory) {
                            (Some(c), Some(m)) if c > 0.0 && m > 1024.0 * 1024.0 => Ok((c, m)),
                            _ => Err(format!("usage so far: {usage}")),
                        }
                    }
                },
            )
            .await?;
        let (_, failed, _) = load.stop().await;
        ensure!(failed.is_empty(), "page requests failed: {failed:?}");
        // The same through kubectl, as an operator types it.
        let top = s
            .kubectl(&["top", "pods", "-n", &ns, "-l", selector, "--no-headers"])
            .await?;
        let line = top
            .lines()
            .find(|l| l.starts_with(&pod))
            .with_context(|| format!("kubectl top pods lists no {pod}: {top}"))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() == 3 && fields[1].ends_with('m') && fields[2].ends_with("Mi"),
            "kubectl top pods line: {line:?}"
        );
        let top_memory: f64 = fields[2].trim_end_matches("Mi").parse()?;
        ensure!(top_memory >= 1.0, "kubectl top shows {line:?}");
        s.measure(format!(
            "metrics-server: frontend pod {pod} at {cpu:.1} mCPU and {:.1} MiB under 40 pages/s ({line})",
            memory / 1024.0 / 1024.0
        ));
        s.delete_namespace(&ns).await
    })
}

/// A CPU quantity (`123456n`, `12m`, `1`) in millicores.
fn cpu_millis(q: &str) -> Option<f64> {
    let (num, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-6),
        (i, 'u') => (&q[..i], 1e-3),
        (i, 'm') => (&q[..i], 1.0),
        _ => (q, 1000.0),
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// A memory quantity (`12345Ki`, `12Mi`, `1000`) in bytes.
fn bytes(q: &str) -> Option<f64> {
    for (suffix, scale) in [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ] {
        if let Some(num) = q.strip_suffix(suffix) {
            return num.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    q.parse().ok()
}

/// One answered (or failed) page request: when it was sent, from the load's start, and how
/// long it took.
#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    millis: f64,
}

/// An open-loop load of page requests to the frontend Service at a settable rate, as visitors
/// arrive: requests are sent on schedule whether or not earlier ones were answered, so a slow
/// frontend shows up as latency, not as a lower rate.
struct Load {
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    failed: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Load {
    fn start(frontend: String) -> Load {
        let rate = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(512)
            .build()
            .expect("a plain HTTP client builds");
        let task = tokio::spawn({
            let (rate, stop, samples, failed, sent) = (
                rate.clone(),
                stop.clone(),
                samples.clone(),
                failed.clone(),
                sent.clone(),
            );
            async move {
                // Every request is its own task; at most this many are in flight, a bound far
                // above what the spike needs (reaching it means the frontend has stalled).
                let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut owed = 0.0f64;
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let now = Instant::now();
                    owed += rate.load(Ordering::Relaxed) as f64
                        * now.duration_since(last).as_secs_f64();
                    last = now;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        let Ok(permit) = in_flight.clone().acquire_owned().await else {
                            return;
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        let (http, url) = (http.clone(), format!("{frontend}/"));
                        let (samples, failed) = (samples.clone(), failed.clone());
                        tokio::spawn(async move {
                            let at = Instant::now();
                            let outcome = match http.get(&url).send().await {
                                Ok(r) if r.status() == 200 => match r.bytes().await {
                                    Ok(_) => Ok(()),
                                    Err(e) => Err(format!("body cut: {e}")),
                                },
                                Ok(r) => Err(format!("status {}", r.status())),
                                Err(e) => Err(e.to_string()),
                            };
                            let sample = Sample {
                                at: at.duration_since(started).as_secs_f64(),
                                millis: at.elapsed().as_secs_f64() * 1000.0,
                            };
                            match outcome {
                                Ok(()) => samples.lock().expect("poisoned").push(sample),
                                Err(e) => failed.lock().expect("poisoned").push(e),
                            }
                            drop(permit);
                        });
                    }
                }
            }
        });
        Load {
            rate,
            stop,
            started,
            samples,
            failed,
            sent,
            task,
        }
    }

    fn set_rate(&self, per_second: u64) {
        self.rate.store(per_second, Ordering::Relaxed);
    }

    /// Seconds since the load started.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Answered requests sent in `[from, to)` seconds.
    fn between(&self, from: f64, to: f64) -> Vec<f64> {
        self.samples
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.millis)
            .collect()
    }

    /// Stops sending, waits for the requests in flight, and returns how many were sent, what
    /// failed and how many were answered.
    async fn stop(self) -> (u64, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Requests in flight finish within the client's timeout.
        let deadline = Instant::now() + Duration::from_secs(12);
        let sent = self.sent.load(Ordering::Relaxed);
        loop {
            let done = self.samples.lock().expect("poisoned").len()
                + self.failed.lock().expect("poisoned").len();
            if done as u64 >= sent || Instant::now() > deadline {
                let failed = self.failed.lock().expect("poisoned").clone();
                return (sent, failed, done);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The 99th percentile of some latencies, in milliseconds (0 for none).
fn p99(mut millis: Vec<f64>) -> f64 {
    if millis.is_empty() {
        return 0.0;
    }
    millis.sort_by(f64::total_cmp);
    let rank = ((millis.len() as f64) * 0.99).ceil() as usize;
    millis[rank.clamp(1, millis.len()) - 1]
}

/// One row of the time series, sampled once a second.
#[derive(Clone, Debug, Default)]
struct Row {
    t: f64,
    rate: u64,
    answered: usize,
    p99: f64,
    replicas: BTreeMap<String, i32>,
    hpa_replicas: i32,
    hpa_utilization: Option<i32>,
    suspended: bool,
    reason: String,
}

const CSV_TIERS: [&str; 6] = ["frontend", "logic", "sync", "longpoll", "store", "logger"];

impl Row {
    fn header() -> String {
        let mut h = "t_seconds,target_rate,page_answers_per_second,page_p99_ms".to_string();
        for tier in CSV_TIERS {
            let _ = write!(h, ",{tier}_replicas");
        }
        h + ",frontend_hpa_replicas,frontend_cpu_utilization,suspended,reason"
    }

    fn csv(&self) -> String {
        let mut line = format!(
            "{:.1},{},{},{:.2}",
            self.t, self.rate, self.answered, self.p99
        );
        for tier in CSV_TIERS {
            let _ = write!(line, ",{}", self.replicas.get(tier).copied().unwrap_or(0));
        }
        let _ = write!(
            line,
            ",{},{},{},{}",
            self.hpa_replicas,
            self.hpa_utilization
                .map(|u| u.to_string())
                .unwrap_or_default(),
            u8::from(self.suspended),
            self.reason
        );
        line
    }
}

/// Samples the cluster and the load every second until stopped.
struct Recorder {
    rows: Arc<Mutex<Vec<Row>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Recorder {
    fn start(s: &Suite, ns: &str, name: &str, load: &Load) -> Recorder {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), ns);
        let sets: Api<StatefulSet> = Api::namespaced(s.client.clone(), ns);
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), ns);
        let ccs = s.comment_clusters(ns);
        let (samples, rate, started) = (load.samples.clone(), load.rate.clone(), load.started);
        let selector = format!("app.kubernetes.io/instance={name}");
        let (name, frontend) = (name.to_string(), format!("{name}-frontend"));
        let task = tokio::spawn({
            let (rows, stop) = (rows.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let t = started.elapsed().as_secs_f64();
                    // Requests sent in the last whole second that have been answered by now.
                    let window: Vec<f64> = samples
                        .lock()
                        .expect("poisoned")
                        .iter()
                        .filter(|x| x.at >= t - 2.0 && x.at < t - 1.0)
                        .map(|x| x.millis)
                        .collect();
                    let mut row = Row {
                        t,
                        rate: rate.load(Ordering::Relaxed),
                        answered: window.len(),
                        p99: p99(window),
                        ..Row::default()
                    };
                    if let Ok(list) = deployments
                        .list(&ListParams::default().labels(&selector))
                        .await
                    {
                        for d in list.items {
                            let tier = d
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("app.kubernetes.io/component").cloned())
                                .unwrap_or_default();
                            let ready = d.status.and_then(|st| st.ready_replicas).unwrap_or(0);
                            row.replicas.insert(tier, ready);
                        }
                    }
                    if let Ok(list) = sets.list(&ListParams::default().labels(&selector)).await {
                        for set in list.items {
                            let tier = set
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("app.kubernetes.io/component").cloned())
                                .unwrap_or_default();
                            let ready = set.status.and_then(|st| st.ready_replicas).unwrap_or(0);
                            row.replicas.insert(tier, ready);
                        }
                    }
                    if let Ok(hpa) = hpas.get(&frontend).await
                        && let Some(st) = hpa.status
                    {
                        row.hpa_replicas = st.current_replicas.unwrap_or(0);
                        row.hpa_utilization = st.current_metrics.iter().flatten().find_map(|m| {
                            m.resource
                                .as_ref()
                                .filter(|r| r.name == "cpu")
                                .and_then(|r| r.current.average_utilization)
                        });
                    }
                    if let Ok(cc) = ccs.get(&name).await
                        && let Ok(cc) = serde_json::to_value(cc)
                        && let Some((status, reason, _)) = condition(&cc, "CommentsSuspended")
                    {
                        row.suspended = status == "True";
                        row.reason = if row.suspended { reason } else { String::new() };
                    }
                    rows.lock().expect("poisoned").push(row);
                }
            }
        });
        Recorder { rows, stop, task }
    }

    fn rows(&self) -> Vec<Row> {
        self.rows.lock().expect("poisoned").clone()
    }

    async fn finish(self) -> Vec<Row> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.rows.lock().expect("poisoned").clone()
    }
}

/// Where the spike's CSV goes: `<target>/io360-spike/`, next to the build's `debug` directory.
fn output_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/debug/deps/node-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| anyhow!("{} has no target directory", exe.display()))?;
    let dir = target.join("io360-spike");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes the time series to `<target>/io360-spike/spike.csv`; returns the directory.
fn write_csv(rows: &[Row]) -> Result<PathBuf> {
    let dir = output_dir()?;
    let mut csv = Row::header() + "\n";
    for row in rows {
        csv += &row.csv();
        csv.push('\n');
    }
    std::fs::write(dir.join("spike.csv"), csv)?;
    Ok(dir)
}

/// A CommentCluster whose frontend the HPA scales 1 to 3 on CPU and whose comments the
/// operator suspends on overload after `hold` seconds.
fn spike_spec(hold: u64) -> Value {
    json!({
        "frontend": {
            "replicas": null,
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": MAX_FRONTENDS,
                "targetCpuUtilization": TARGET_PERCENT,
            },
            // A small request, so the frontend's modest CPU under the spike is well over it;
            // the limit leaves room, so pages stay fast while it is.
            "resources": {
                "requests": {"cpu": CPU_REQUEST, "memory": "32Mi"},
                "limits": {"cpu": "300m", "memory": "256Mi"},
            },
        },
        "autoDegrade": {
            "enabled": true,
            "utilizationThreshold": OVERLOAD_PERCENT,
            "holdSeconds": hold,
            "recoveryThreshold": RECOVERY_PERCENT,
            "cooldownSeconds": COOLDOWN_SECONDS,
        },
    })
}

/// The frontend HPA's reading: its current replicas and CPU utilization.
async fn hpa_reading(s: &Suite, ns: &str, name: &str) -> Result<(i32, Option<i32>)> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), ns);
    let hpa = hpas.get(&format!("{name}-frontend")).await?;
    let status = hpa.status.unwrap_or_default();
    let utilization = status.current_metrics.iter().flatten().find_map(|m| {
        m.resource
            .as_ref()
            .filter(|r| r.name == "cpu")
            .and_then(|r| r.current.average_utilization)
    });
    Ok((status.current_replicas.unwrap_or(0), utilization))
}

/// The spike settings: what the test drives and what it expects.
const MAX_FRONTENDS: i32 = 3;
/// An idle frontend pod reads 6 to 7 mCPU on this node (3 to 4 in earlier runs), one
/// serving 40 pages/s about 13 mCPU: at 20m, three idle pods read about 33 %, well under the
/// recovery threshold, and three under the spike far over the overload one.
const CPU_REQUEST: &str = "20m";
const TARGET_PERCENT: i32 = 40;
const HOLD_SECONDS: u64 = 10;
const COOLDOWN_SECONDS: u64 = 20;
const OVERLOAD_PERCENT: i32 = 60;
const RECOVERY_PERCENT: i32 = 45;
/// Page requests per second before the spike and during it.
const QUIET_RATE: u64 = 10;
const SPIKE_RATE: u64 = 500;

/// The spike: page traffic far over what the frontend's CPU request covers at its maximum of
/// three replicas. The HPA, reading the pods' real CPU from metrics-server, scales the
/// frontend to its maximum; the operator, seeing it there over the threshold for the hold
/// time, suspends comments with reason Overload and longpoll goes to zero; every page request
/// is answered. After the load ends comments resume once the cooldown has passed, exactly
/// once, and a comment is delivered live again. A second, shorter spike with a manual
/// suspension set during it shows the manual suspension outlasting the load and the cooldown.
pub fn spike_on_real_metrics(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let began = Instant::now();
        let ns = s.namespace("spike").await?;
        let name = "spike";
        let _hpa = s.cluster.hpa_controller(Duration::from_secs(2))?;
        start_cluster(s, &ns, name, spike_spec(HOLD_SECONDS)).await?;
        let frontend = s.service_url(&ns, name, "frontend").await?;
        let longpoll = s.service_url(&ns, name, "longpoll").await?;
        let longpoll_selector =
            format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=longpoll");

        // The HPA reads the frontend's CPU before anything is driven.
        s.wait("the frontend HPA reading real CPU", 90, || async {
            match hpa_reading(s, &ns, name).await {
                Ok((_, Some(u))) => Ok(u),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;

        let live = LiveClient::start(s, longpoll.clone(), frontend.clone(), 0);
        let load = Load::start(frontend.clone());
        let recorder = Recorder::start(s, &ns, name, &load);

        // Quiet traffic first: the unloaded latency.
        load.set_rate(QUIET_RATE);
        tokio::time::sleep(Duration::from_secs(12)).await;
        let quiet_end = load.now();
        // From the third second: the first requests also open connections.
        let p99_quiet = p99(load.between(3.0, quiet_end));

        // The spike.
        let spike_start = load.now();
        load.set_rate(SPIKE_RATE);
        let at_max = s
            .wait("the frontend HPA at its maximum", 180, || async {
                let rows = recorder.rows();
                rows.iter()
                    .find(|r| r.t >= spike_start && r.hpa_replicas >= MAX_FRONTENDS)
                    .map(|r| r.t)
                    .ok_or_else(|| format!("last sample {:?}", rows.last()))
            })
            .await?;
        let suspended_at = s
            .wait("comments suspended for Overload", 120, || async {
                let rows = recorder.rows();
                rows.iter()
                    .find(|r| r.t >= spike_start && r.suspended)
                    .map(|r| (r.t, r.reason.clone()))
                    .ok_or_else(|| format!("last sample {:?}", rows.last()))
            })
            .await?;
        ensure!(
            suspended_at.1 == "Overload",
            "suspended with reason {:?}, not Overload",
            suspended_at.1
        );
        // The operator's overload starts when its reading (the HPA's status) is at the maximum
        // and over the threshold; from there it waits the hold time, then reconciles.
        let rows = recorder.rows();
        let overloaded_from = rows
            .iter()
            .find(|r| {
                r.t >= spike_start
                    && r.hpa_replicas >= MAX_FRONTENDS
                    && r.hpa_utilization.is_some_and(|u| u >= OVERLOAD_PERCENT)
            })
            .map(|r| r.t)
            .context("suspended without a sample showing overload")?;
        let hold_to_suspended = suspended_at.0 - overloaded_from;
        // Hold, the operator's degrade interval (2 s), one reconcile and the 1 s sampling.
        ensure!(
            hold_to_suspended <= HOLD_SECONDS as f64 + 8.0,
            "suspended {hold_to_suspended:.1} s after overload began; the hold is {HOLD_SECONDS} s"
        );
        s.wait("longpoll's pods gone while suspended", 60, || async {
            let pods = s
                .pods(&ns, &longpoll_selector)
                .await
                .map_err(|e| e.to_string())?;
            if pods.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pods", pods.len()))
            }
        })
        .await?;
        // Keep the spike on a while suspended: pages must stay fast.
        let suspended_from = load.now();
        tokio::time::sleep(Duration::from_secs(12)).await;
        let load_end = load.now();
        load.set_rate(0);
        let p99_peak = p99(load.between(overloaded_from, suspended_at.0));
        let p99_suspended = p99(load.between(suspended_from, load_end));
        let spike_answered = load.between(spike_start, load_end).len();

        let resumed_at = s
            .wait(
                "comments resumed after the cooldown",
                COOLDOWN_SECONDS + 90,
                || async {
                    let rows = recorder.rows();
                    rows.iter()
                        .find(|r| r.t >= load_end && !r.suspended)
                        .map(|r| r.t)
                        .ok_or_else(|| format!("last sample {:?}", rows.last()))
                },
            )
            .await?;
        let end_to_resumed = resumed_at - load_end;
        ensure!(
            end_to_resumed >= COOLDOWN_SECONDS as f64,
            "resumed {end_to_resumed:.1} s after the load ended, inside the {COOLDOWN_SECONDS} s cooldown"
        );
        s.wait("longpoll back and Ready", 120, || async {
            let pods = s
                .pods(&ns, &longpoll_selector)
                .await
                .map_err(|e| e.to_string())?;
            all_ready(&pods)
        })
        .await?;
        // Live delivery again, through a poll held on the new longpoll pod.
        let (posted, _) = post_until_acknowledged(s, &frontend, "after the spike", 30).await?;
        let seq = posted["comment"]["seq"].as_u64().context("no seq")?;
        live.wait_for(s, seq, 40).await?;
        let states = live.states();
        ensure!(
            states.first().is_some_and(|k| k == "suspended"),
            "the poll held when the spike hit was not told of the suspension: {states:?}"
        );
        let (_, problems) = live.finish().await;
        ensure!(
            problems.is_empty(),
            "live delivery around the spike: {problems:?}"
        );
        let phase_one = recorder.rows();
        write_csv(&phase_one)?;
        let flips = phase_one
            .windows(2)
            .filter(|w| w[0].suspended != w[1].suspended)
            .count();
        ensure!(
            flips == 2,
            "expected one suspension and one resumption, the samples show {flips} changes"
        );

        // A second spike, with a manual suspension set during it: it outlasts the load and
        // the cooldown.
        load.set_rate(SPIKE_RATE);
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.kubectl(&[
            "patch",
            "cc",
            name,
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &json!({"spec": {"commentsSuspended": true}}).to_string(),
        ])
        .await?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let second_end = load.now();
        load.set_rate(0);
        // The frontend's CPU falls under the recovery threshold and stays there for the
        // cooldown and a little more: without the manual flag, comments would resume now.
        s.wait(
            "the frontend's CPU under the recovery threshold for the cooldown",
            COOLDOWN_SECONDS + 90,
            || async {
                let rows = recorder.rows();
                let after: Vec<&Row> = rows.iter().filter(|r| r.t >= second_end).collect();
                let calm_since = after
                    .iter()
                    .rposition(|r| r.hpa_utilization.is_none_or(|u| u >= RECOVERY_PERCENT))
                    .map(|i| after.get(i + 1).map(|r| r.t))
                    .unwrap_or(after.first().map(|r| r.t));
                let last = after.last().map(|r| r.t).unwrap_or(second_end);
                match calm_since {
                    Some(t) if last - t >= COOLDOWN_SECONDS as f64 + 5.0 => Ok(()),
                    _ => Err(format!("last sample {:?}", after.last())),
                }
            },
        )
        .await?;
        write_csv(&recorder.rows())?;
        let cc = s.cc(&ns, name).await.map_err(|e| anyhow!(e))?;
        let still = condition(&cc, "CommentsSuspended");
        ensure!(
            still
                .as_ref()
                .is_some_and(|(st, reason, _)| st == "True" && reason == "Manual"),
            "after the load and the cooldown, CommentsSuspended is {still:?}, not Manual"
        );
        ensure!(
            s.pods(&ns, &longpoll_selector).await?.is_empty(),
            "longpoll runs while manually suspended"
        );

        let rows = recorder.finish().await;
        let (sent, failed, answered) = load.stop().await;
        ensure!(
            failed.is_empty() && answered as u64 == sent,
            "{} of {sent} page requests failed or went unanswered: {:?}",
            sent - answered as u64 + failed.len() as u64,
            &failed[..failed.len().min(5)]
        );

        // The picture's data.
        let dir = write_csv(&rows)?;
        let summary = format!(
            "hpa_at_max_s={:.1}\noverload_to_suspended_s={hold_to_suspended:.1}\n\
             max_to_suspended_s={:.1}\nload_end_to_resumed_s={end_to_resumed:.1}\n\
             pages_sent={sent}\npages_answered={answered}\npages_during_spike={spike_answered}\n\
             p99_quiet_ms={p99_quiet:.1}\np99_peak_ms={p99_peak:.1}\n\
             p99_suspended_ms={p99_suspended:.1}\nspike_rate={SPIKE_RATE}\n\
             hold_s={HOLD_SECONDS}\ncooldown_s={COOLDOWN_SECONDS}\nwall_s={:.0}\n",
            at_max - spike_start,
            suspended_at.0 - at_max,
            began.elapsed().as_secs_f64(),
        );
        std::fs::write(dir.join("spike.txt"), &summary)?;
        s.measure(format!(
            "spike: frontend at max {:.1} s into the spike, suspended {:.1} s later \
             ({hold_to_suspended:.1} s after the HPA reported overload, hold {HOLD_SECONDS} s); \
             resumed {end_to_resumed:.1} s after the load ended (cooldown {COOLDOWN_SECONDS} s); \
             {answered}/{sent} page requests answered; page p99 quiet {p99_quiet:.1} ms, \
             at peak {p99_peak:.1} ms, suspended {p99_suspended:.1} ms; CSV in {}",
            at_max - spike_start,
            suspended_at.0 - at_max,
            dir.join("spike.csv").display()
        ));
        ensure!(
            p99_suspended <= 2.0 * p99_quiet,
            "page p99 while suspended ({p99_suspended:.1} ms) is over twice the quiet p99 \
             ({p99_quiet:.1} ms)"
        );
        s.delete_namespace(&ns).await
    })
}

/// The metrics pipeline fails in the middle of a spike: metrics-server stops just as the
/// frontend sits at its maximum over the threshold. The HPA keeps the replicas it has, and the
/// operator, with no reading, does not suspend comments however long the load lasts; when
/// metrics come back the spike is read again.
pub fn spike_without_metrics(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("blind").await?;
        let name = "blind";
        let _hpa = s.cluster.hpa_controller(Duration::from_secs(2))?;
        // A hold long enough that the outage starts well inside it.
        let hold = 20;
        start_cluster(s, &ns, name, spike_spec(hold)).await?;
        let frontend = s.service_url(&ns, name, "frontend").await?;
        let load = Load::start(frontend);
        load.set_rate(SPIKE_RATE);
        s.wait(
            "the frontend HPA at its maximum over the threshold",
            180,
            || async {
                match hpa_reading(s, &ns, name).await {
                    Ok((r, Some(u))) if r >= MAX_FRONTENDS && u >= OVERLOAD_PERCENT => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await?;
        s.cluster.stop_metrics_server()?;
        let outage = async {
            // The spike goes on past the hold with no metrics.
            let stopped = Instant::now();
            let mut lost_reading = false;
            while stopped.elapsed() < Duration::from_secs(hold + 15) {
                let (replicas, utilization) = hpa_reading(s, &ns, name).await?;
                ensure!(
                    replicas == MAX_FRONTENDS,
                    "the HPA moved the frontend to {replicas} replicas without metrics"
                );
                lost_reading |= utilization.is_none();
                let cc = s.cc(&ns, name).await.map_err(|e| anyhow!(e))?;
                let suspended = condition(&cc, "CommentsSuspended");
                ensure!(
                    suspended.as_ref().is_none_or(|(st, _, _)| st != "True"),
                    "comments suspended without a reading: {suspended:?}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            ensure!(
                lost_reading,
                "the HPA kept reporting CPU with metrics-server stopped"
            );
            let hpa = s
                .kubectl(&[
                    "get",
                    "hpa",
                    &format!("{name}-frontend"),
                    "-n",
                    &ns,
                    "-o",
                    "json",
                ])
                .await?;
            let hpa: Value = serde_json::from_str(&hpa)?;
            let active = condition(&hpa, "ScalingActive");
            ensure!(
                active.as_ref().is_some_and(|(st, _, _)| st == "False"),
                "the HPA's ScalingActive condition with no metrics: {active:?}"
            );
            Ok(())
        }
        .await;
        // Whatever happened, the pipeline comes back for the tests after this one.
        let restarted = s.cluster.start_metrics_server().await;
        outage?;
        restarted?;
        // Over the target again, as only the spike makes it (idle reads under it).
        s.wait("the spike read again once metrics return", 60, || async {
            match hpa_reading(s, &ns, name).await {
                Ok((_, Some(u))) if u > TARGET_PERCENT => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;
        let (sent, failed, answered) = load.stop().await;
        ensure!(
            failed.is_empty() && answered as u64 == sent,
            "{} of {sent} page requests failed or went unanswered: {:?}",
            sent - answered as u64 + failed.len() as u64,
            &failed[..failed.len().min(5)]
        );
        s.measure(format!(
            "metrics outage mid-spike: frontend held at {MAX_FRONTENDS}, comments not suspended \
             past the {hold} s hold; {answered}/{sent} page requests answered"
        ));
        s.delete_namespace(&ns).await
    })
}
