//! Open pages learn of a suspension through live delivery: under `io360 up`, a poll held when
//! comments are suspended by the admin API is answered at once with a `suspended` event (and
//! with `resumed` when they come back); a poll that says what its page believes is answered
//! when longpoll knows otherwise; a poll that says nothing is not answered in a loop; an event
//! stream says so too.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up(addr: &str, data: &Path) -> Up {
    Up(Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", addr, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting io360 up"))
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..1200 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became ready");
}

/// A poll on thread `t` from position 0, with `extra` appended to the query: its status, its
/// events, and how long it took.
async fn poll(http: &reqwest::Client, base: &str, extra: &str) -> (u16, Vec<Value>, Duration) {
    let at = Instant::now();
    let r = http
        .get(format!("{base}/v1/poll?thread=t&since=0{extra}"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("polling");
    let status = r.status().as_u16();
    let events = if status == 200 {
        let v: Value = r.json().await.unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    (status, events, at.elapsed())
}

/// Reads an event stream until `needle` arrives (within 5 s); what was read.
async fn read_until(stream: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle} within 5 s; the stream said: {seen}"))
            .unwrap()
            .expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

async fn suspend(http: &reqwest::Client, base: &str, token: &str, on: bool) {
    let r = http
        .put(format!("{base}/api/v1/admin/suspension"))
        .bearer_auth(token)
        .json(&json!({"suspended": on, "reason": "maintenance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_carry_a_suspension_and_a_resumption() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _up = up(&addr, &dir.path().join("data"));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    wait_up(&http, &base).await;
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let token = token.trim();
    // Longpoll has read the state at least once.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A poll as today's widget makes it (no `suspended`), held when comments are suspended.
    let held = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { poll(&http, &base, "").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = Instant::now();
    suspend(&http, &base, token, true).await;
    let (status, events, _) = held.await.unwrap();
    assert_eq!(status, 200);
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    assert_eq!(
        events,
        [json!({"thread": "t", "seq": 0, "kind": "suspended", "message": "maintenance"})]
    );

    // A page that believes comments are open learns otherwise within a second or so.
    let (status, events, took) = poll(&http, &base, "&suspended=0").await;
    assert_eq!(status, 200);
    assert_eq!(events[0]["kind"], "suspended");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // An event stream opened while suspended says so first, without an `id`.
    let mut stream = http
        .get(format!("{base}/v1/events?thread=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = read_until(&mut stream, "\"kind\":\"suspended\"").await;
    assert!(!first.contains("id:"), "{first}");

    // A page that says nothing is not answered in a loop: its poll is held.
    let quiet = tokio::time::timeout(Duration::from_secs(2), poll(&http, &base, "")).await;
    assert!(
        quiet.is_err(),
        "a poll without `suspended` was answered: {quiet:?}"
    );

    // A paused page's poll is held until comments resume, then answered at once.
    let paused = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { poll(&http, &base, "&suspended=1").await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !paused.is_finished(),
        "a paused page's poll was answered while still paused"
    );
    let at = Instant::now();
    suspend(&http, &base, token, false).await;
    let (status, events, _) = paused.await.unwrap();
    assert_eq!(status, 200);
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    assert_eq!(
        events,
        [json!({"thread": "t", "seq": 0, "kind": "resumed"})]
    );
    // The stream says so too.
    read_until(&mut stream, "\"kind\":\"resumed\"").await;

    // A bad value names the parameter.
    let r = http
        .get(format!("{base}/v1/poll?thread=t&suspended=yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "suspended");
}
