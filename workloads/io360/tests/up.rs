//! `io360 up` as a user runs it: every tier reports its start and its stop to the audit
//! trail, and the logger stops last so that the other tiers' stops are recorded.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TIERS: [&str; 6] = ["frontend", "logic", "store", "sync", "longpoll", "logger"];

fn up(addr: &str, data: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", addr, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting io360 up")
}

/// SIGTERM, then the exit status.
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for io360 up") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("io360 up did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the public face answers.
async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never answered");
}

/// The tiers named by `kind` events in the audit trail, waiting until all six are there.
async fn tiers_with(http: &reqwest::Client, base: &str, token: &str, kind: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let r = http
            .get(format!("{base}/api/v1/admin/events?kind={kind}&limit=100"))
            .bearer_auth(token)
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            let body: Value = r.json().await.unwrap();
            seen = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["tier"].as_str().unwrap_or_default().to_owned())
                .collect();
            let distinct: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
            if TIERS.iter().all(|t| distinct.contains(t)) {
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not every tier reported {kind}; the trail has {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_reports_its_start_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let first = up(&addr, dir.path());
    wait_up(&http, &base).await;
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let token = token.trim();
    tiers_with(&http, &base, token, "tier.started").await;
    assert!(terminate(first).success(), "io360 up did not exit cleanly");

    // The stops were shipped before the logger closed: the next run's trail has them all.
    let second = up(&addr, dir.path());
    wait_up(&http, &base).await;
    let stopped = tiers_with(&http, &base, token, "tier.stopped").await;
    assert_eq!(
        stopped.len(),
        TIERS.len(),
        "one stop per tier from one run: {stopped:?}"
    );
    assert!(terminate(second).success());
}

/// `io360 up` on a free port of its own with these variables set; stops when dropped.
struct Up {
    child: Option<Child>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Up {
    async fn start(vars: &[(&str, &str)]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let log = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_io360"))
            .args(["up", "--addr", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .env("IO360_ADMIN_TOKEN", "up-settings-admin-token")
            .env("IO360_LOG_FORMAT", "json")
            .envs(vars.iter().copied())
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting io360 up");
        let mut up = Up {
            child: Some(child),
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        for _ in 0..600 {
            if let Some(status) = up.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                up.child = None;
                panic!("io360 up with {vars:?} exited at start: {status}");
            }
            if let Ok(r) = up.http.get(format!("{}/", up.base)).send().await
                && r.status().is_success()
            {
                return up;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never answered", up.base);
    }

    /// The JSON log lines written so far.
    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self._dir.path().join("stdout"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn post(&self, thread: &str, text: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/comments?thread={thread}", self.base))
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let status = terminate(child);
            if !std::thread::panicking() {
                assert!(status.success(), "io360 up did not exit cleanly");
            }
        }
    }
}

// Each tier is given one setting it alone reads, away from its default, and shows that it
// has it. Under `io360 up` as under `io360 serve <tier>`, the variable means the same.

/// The frontend: the cache lifetime of the site's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_the_frontend_its_settings() {
    let up = Up::start(&[("IO360_ASSET_MAX_AGE", "1234")]).await;
    let r = up
        .http
        .get(format!("{}/style.css", up.base))
        .send()
        .await
        .unwrap();
    let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.contains("max-age=1234"), "cache-control: {cache}");
}

/// Logic: the longest comment it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_logic_its_settings() {
    let up = Up::start(&[("IO360_MAX_TEXT_BYTES", "10")]).await;
    assert_eq!(up.post("/settings/", "short").await.status(), 201);
    let r = up.post("/settings/", "longer than ten bytes").await;
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
}

/// The store: how many writes may wait for the writer. With room for one, a crowd of
/// posts at once finds it full and is told to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_the_store_its_settings() {
    let up = Up::start(&[
        ("IO360_STORE_WRITE_QUEUE_MAX", "1"),
        ("IO360_NO_RATE_LIMITS", "1"),
    ])
    .await;
    let posts = (0..64).map(|i| {
        let up = &up;
        async move {
            let r = up
                .post(&format!("/crowd/{}/", i % 8), &format!("hello {i}"))
                .await;
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    });
    let answers = futures::future::join_all(posts).await;
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(
        busy > 0,
        "no post found the store's queue full: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(s, retry)| *s == 201 || (*s == 503 && *retry)),
        "{answers:?}"
    );
}

/// Sync: how much recent history it keeps. That is a cache in front of the store, which no
/// answer shows, so sync's start line, which says what it keeps, is what is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_sync_its_settings() {
    let up = Up::start(&[
        ("IO360_SYNC_HISTORY_PER_THREAD", "7"),
        ("IO360_SYNC_HISTORY_CHANGES", "4321"),
    ])
    .await;
    let log = up.log();
    let start = log
        .iter()
        .find(|l| l["fields"]["message"] == "sync starting")
        .unwrap_or_else(|| panic!("no start line from sync in {log:?}"));
    assert_eq!(start["fields"]["history_per_thread"], 7, "{start}");
    assert_eq!(start["fields"]["history_changes"], 4321, "{start}");
}

/// Longpoll: how many polls it holds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_longpoll_its_settings() {
    let up = Up::start(&[("IO360_LONGPOLL_MAX_HELD", "1")]).await;
    let url = format!("{}/v1/poll?thread=/held/&since=0", up.base);
    let held = tokio::spawn(up.http.get(&url).send());
    let mut second = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = up.http.get(&url).send().await.unwrap();
        if r.status() == 503 {
            second = Some(r);
            break;
        }
    }
    assert!(
        second.is_some(),
        "a second poll was held beside the first, past a limit of one"
    );
    held.abort();
}

/// The logger: how long it keeps events. With three seconds, the tiers' start events are
/// seen, then go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_the_logger_its_settings() {
    let up = Up::start(&[
        ("IO360_LOGGER_RETENTION_SECS", "3"),
        ("IO360_LOGGER_SWEEP_MS", "100"),
    ])
    .await;
    let started = || async {
        let body: Value = up
            .http
            .get(format!(
                "{}/api/v1/admin/events?kind=tier.started&limit=100",
                up.base
            ))
            .bearer_auth("up-settings-admin-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["events"].as_array().unwrap().len()
    };
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.push(started().await);
        if seen.iter().any(|n| *n > 0) && seen.last() == Some(&0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("start events were not seen, then gone, within 20 s: counts {seen:?}");
}
