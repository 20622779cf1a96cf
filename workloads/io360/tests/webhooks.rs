//! Webhooks under `io360 up` with no mail server (`IO360_WEBHOOKS` alone starts the notify
//! tier), through the admin API, against a receiver on loopback that checks signatures,
//! timestamps and ids: bad registrations get a 4xx problem naming the field, and `kill -9`
//! while a delivery is on the wire loses nothing and resends nothing the receiver had
//! acknowledged (the one delivery in flight goes again under its own id, which is how the
//! receiver drops the copy).

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;
#[path = "../../notify/tests/receiver/mod.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use receiver::Receiver;
use serde_json::{Value, json};

const TOKEN: &str = "webhooks-admin-token";
const SECRET: &str = "whsec_process-test-secret-0123";

struct Up(Child);

impl Up {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn up(addr: &str, data: &Path, env: &[(&str, &str)]) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", addr, "--data-dir"])
        .arg(data)
        .env("IO360_LOG", "warn")
        .env_remove("IO360_SMTP_URL")
        .env("IO360_WEBHOOKS", "true")
        .env("IO360_ADMIN_TOKEN", TOKEN)
        .env("IO360_NO_RATE_LIMITS", "true")
        .env("IO360_LONGPOLL_HOLD_SECS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    common::wait_ready(
        &reqwest::Client::new(),
        &format!("http://{addr}/api/v1/status"),
    )
    .await;
    Up(child)
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    common::status_json(req.send().await.unwrap()).await
}

async fn register(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    // notify may still be starting behind logic: 503 until it answers.
    for _ in 0..100 {
        let r = admin(
            http,
            reqwest::Method::POST,
            format!("{base}/api/v1/admin/webhooks"),
            Some(body.clone()),
        )
        .await;
        if r.0 != 503 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("notify never answered");
}

async fn post(http: &reqwest::Client, base: &str, text: &str) -> u64 {
    for _ in 0..100 {
        let r = http
            .post(format!("{base}/api/v1/comments?thread=/hooked"))
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            let v: Value = r.json().await.unwrap();
            return v["comment"]["id"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the post was never accepted");
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    for _ in 0..secs * 20 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_get_a_problem_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr().to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    // Private addresses are not allowed here: the default.
    let _io360 = up(
        &addr,
        &dir.path().join("data"),
        &[("IO360_WEBHOOK_MAX_ENDPOINTS", "1")],
    )
    .await;

    let cases = [
        (
            json!({"url": "ftp://hooks.example.org/in", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/hook", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "http://[::1]:9/hook", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "http://localhost:9/hook", "events": ["comment.created"]}),
            400,
            "url",
        ),
        (
            json!({"url": "http://10.0.0.1/hook", "events": ["comment.exploded"]}),
            400,
            "events",
        ),
        (
            json!({"url": "http://10.0.0.1/hook", "events": []}),
            400,
            "events",
        ),
        (
            json!({"url": "http://10.0.0.1/hook", "events": ["comment.created"], "secret": "short"}),
            400,
            "secret",
        ),
    ];
    for (body, status, field) in cases {
        let (s, p) = register(&http, &base, body.clone()).await;
        assert_eq!(s, status, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
        assert!(
            p["title"].as_str().unwrap().contains(&format!("`{field}`")),
            "{p}"
        );
    }
    let (_, p) = register(
        &http,
        &base,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["comment.created"]}),
    )
    .await;
    assert!(
        p["title"]
            .as_str()
            .unwrap()
            .contains("IO360_WEBHOOK_ALLOW_PRIVATE"),
        "{p}"
    );
    assert_eq!(
        p["type"].as_str().unwrap().rsplit('/').next(),
        Some("private-address"),
        "{p}"
    );

    // Without the admin token: nothing.
    let r = http
        .get(format!("{base}/api/v1/admin/webhooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, list) = admin(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/admin/webhooks"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(list["webhooks"], json!([]), "nothing refused was kept");
    assert!(
        list["events"]
            .as_array()
            .unwrap()
            .contains(&json!("comment.held"))
    );
    let (s, p) = admin(
        &http,
        reqwest::Method::DELETE,
        format!("{base}/api/v1/admin/webhooks/nope"),
        None,
    )
    .await;
    assert_eq!((s, p["field"].as_str()), (400, Some("id")), "{p}");
    let (s, _) = admin(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/admin/webhooks/wh_0123456789abcdef/deliveries"),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_nothing_and_resends_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = common::free_addr().to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let rx = Receiver::start(SECRET).await;
    let env = [
        ("IO360_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("IO360_WEBHOOK_MAX_ENDPOINTS", "2"),
        ("IO360_WEBHOOK_RETRY_MS", "200"),
        ("IO360_WEBHOOK_TIMEOUT_SECS", "30"),
    ];
    let mut io360 = up(&addr, &data, &env).await;

    let (s, made) = register(
        &http,
        &base,
        json!({"url": rx.url(), "events": ["comment.created"], "secret": SECRET}),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["secret"], SECRET);
    let id = made["id"].as_str().unwrap().to_owned();
    let (s, other) = register(
        &http,
        &base,
        json!({"url": rx.url(), "events": ["thread.closed"]}),
    )
    .await;
    assert_eq!(s, 201);
    assert!(
        other["secret"].as_str().unwrap().starts_with("whsec_"),
        "one is made"
    );
    let (s, p) = register(
        &http,
        &base,
        json!({"url": rx.url(), "events": ["comment.created"]}),
    )
    .await;
    assert_eq!((s, p["field"].as_str()), (409, Some("url")), "{p}");
    assert!(
        p["title"]
            .as_str()
            .unwrap()
            .contains("IO360_WEBHOOK_MAX_ENDPOINTS")
    );
    let (_, list) = admin(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/admin/webhooks"),
        None,
    )
    .await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "a secret is shown once: {list}"
    );

    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(post(&http, &base, &format!("acknowledged {n}")).await);
    }
    wait_for("three deliveries", 20, || rx.accepted().len() == 3).await;

    // The receiver takes the next delivery and never answers; io360 dies meanwhile.
    rx.stall.store(true, Ordering::SeqCst);
    ids.push(post(&http, &base, "in flight").await);
    wait_for("the delivery in flight", 20, || rx.arrivals().len() == 4).await;
    io360.kill9();
    rx.stall.store(false, Ordering::SeqCst);

    let _io360 = up(&addr, &data, &env).await;
    ids.push(post(&http, &base, "after the restart").await);
    wait_for("every comment", 30, || rx.accepted().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every comment arrived; only the one in flight arrived twice, under one id.
    let mut by_comment: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for a in rx.arrivals() {
        assert_eq!(a.body["type"], "comment.created");
        by_comment
            .entry(a.body["comment"]["id"].as_u64().unwrap())
            .or_default()
            .push(a.id.clone());
    }
    assert_eq!(by_comment.keys().copied().collect::<Vec<_>>(), ids);
    for (n, c) in ids.iter().enumerate() {
        let got = &by_comment[c];
        if n == 3 {
            assert_eq!(got.len(), 2, "the delivery in flight goes again: {got:?}");
            assert_eq!(got[0], got[1], "under the same id");
        } else {
            assert_eq!(
                got.len(),
                1,
                "comment {c} was delivered {} times",
                got.len()
            );
        }
    }
    assert!(
        rx.arrivals()
            .iter()
            .all(|a| a.refused.as_deref() != Some("a bad signature"))
    );

    // The delivery log says so, newest first.
    let (s, log) = admin(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/admin/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{log}");
    let attempts = log["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 5, "{log}");
    assert!(
        attempts
            .iter()
            .all(|a| a["outcome"] == "sent" && a["status"] == 204),
        "{log}"
    );
    assert!(attempts.iter().all(|a| a["latency_ms"].is_u64()));
    assert_eq!(log["webhook"]["waiting"], 0);

    let (s, gone) = admin(
        &http,
        reqwest::Method::DELETE,
        format!("{base}/api/v1/admin/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!((s, gone["deleted"].as_bool()), (200, Some(true)));
    let (s, _) = admin(
        &http,
        reqwest::Method::DELETE,
        format!("{base}/api/v1/admin/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
}
