//! `io360 up` as a user runs it: every tier reports its start and its stop to the audit
//! trail, and the logger stops last so that the other tiers' stops are recorded.

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

/// A frontend setting given to `io360 up` is the frontend's, as it is for
/// `io360 serve frontend`: here the cache lifetime of the site's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_setting_given_to_up_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("IO360_ASSET_MAX_AGE", "1234")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting io360 up");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    wait_up(&http, &base).await;
    let r = http.get(format!("{base}/style.css")).send().await.unwrap();
    let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(terminate(child).success());
    assert!(cache.contains("max-age=1234"), "cache-control: {cache}");
}
