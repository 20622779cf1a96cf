//! The internal tiers answer only io360's own tiers. Each attack a process on the same host
//! could make by reaching a tier's port directly is refused: writes and reads of the store,
//! its suspension and bans, a tier's credential on a route that is not its own, and logic's
//! API (where a forged `X-Forwarded-For` would slip past the rate limits). HTML that reaches
//! the store by any path is sanitized where it is stored.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use common::{KEYS, Stack, as_tier, status_json};
use io360_common::auth::Credential;
use io360_store::StoreClient;
use io360_store::api::{NewComment, WriteOp};
use serde_json::{Value, json};

fn append(thread: &str, html: &str) -> WriteOp {
    WriteOp::Append {
        thread: thread.into(),
        comment: NewComment {
            parent: None,
            author: Some("mallory".into()),
            email: None,
            website: None,
            text: "hi".into(),
            html: html.into(),
            status: io360_common::model::Status::Approved,
            remote: None,
            author_key: None,
        },
        idempotency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_callers_without_a_credential_on_every_route() {
    let s = Stack::start(&[]).await;
    let (status, body) = s
        .post("/t", json!({"text": "a comment", "email": "a@example.org"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["comment"]["id"].as_u64().unwrap();

    let anyone = reqwest::Client::new();
    let write = serde_json::to_value(append("/t", "<script>alert(1)</script>")).unwrap();
    let res = anyone
        .post(format!("{}/store/v1/write", s.store))
        .json(&write)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Io360-Tier");
    let (_, p) = status_json(res).await;
    assert_eq!(
        p["type"],
        "https://io360.dev/problems/tier-credential-required"
    );

    let reads = [
        "/store/v1/comments?thread=/t".to_owned(),
        "/store/v1/thread?thread=/t".to_owned(),
        format!("/store/v1/comment/{id}"),
        "/store/v1/changes?thread=/t".to_owned(),
        "/store/v1/feed".to_owned(),
        "/store/v1/position".to_owned(),
        "/store/v1/pending".to_owned(),
        "/store/v1/author?key=k".to_owned(),
        "/store/v1/suspension".to_owned(),
        "/store/v1/bans".to_owned(),
        "/store/v1/search?q=a".to_owned(),
        "/store/v1/author/comments?key=k".to_owned(),
    ];
    for path in &reads {
        let res = anyone
            .get(format!("{}{path}", s.store))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, 401, "{path}: {text}");
        assert!(!text.contains("a@example.org"), "{path} leaked an email");
    }
    for (path, body) in [
        (
            "/store/v1/suspension",
            json!({"suspended": true, "reason": "x"}),
        ),
        ("/store/v1/bans", json!({"addresses": ["1.2.3.4"]})),
    ] {
        let res = anyone
            .put(format!("{}{path}", s.store))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "PUT {path}");
    }
    let res = anyone
        .post(format!("{}/store/v1/author/erase", s.store))
        .json(&json!({"key": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Health stays open for kubelet's probes.
    let res = anyone
        .get(format!("{}/readyz", s.store))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Nothing changed: comments are not suspended and the one comment is still alone.
    let (status, st) = s.get("/api/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(st["suspended"], false, "{st}");
    assert_eq!(s.list("/t").await["comments"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_may_call_only_the_routes_it_uses() {
    let s = Stack::start(&[]).await;
    // Logic holds a valid credential, but a thread's changes are sync's to read.
    let res = as_tier("logic")
        .get(format!("{}/store/v1/changes?thread=/t", s.store))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (_, p) = status_json(res).await;
    assert_eq!(p["type"], "https://io360.dev/problems/tier-not-allowed");
    let res = as_tier("sync")
        .get(format!("{}/store/v1/changes?thread=/t", s.store))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Writes are logic's alone.
    for tier in ["sync", "longpoll", "frontend", "logger"] {
        let res = as_tier(tier)
            .post(format!("{}/store/v1/write", s.store))
            .json(&append("/t", "<p>x</p>"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{tier}");
    }
    // Logic answers only the frontend, and longpoll's question whether comments are
    // suspended.
    let res = as_tier("store")
        .get(format!("{}/api/v1/status", s.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = as_tier("longpoll")
        .get(format!("{}/api/v1/status", s.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_tier("longpoll")
        .get(format!("{}/api/v1/comments?thread=/t", s.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logic_reached_directly_is_refused_so_a_forged_forwarded_address_gains_nothing() {
    let s = Stack::start(&["--trusted-proxy-header", "x-forwarded-for"]).await;
    let anyone = reqwest::Client::new();
    // Each request claims another address: before, each was a new client to the limits.
    for i in 0..20 {
        let res = anyone
            .post(format!("{}/api/v1/comments?thread=/rl", s.api))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"text": format!("spam {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "request {i}");
    }
    let res = anyone
        .get(format!("{}/api/v1/comments?thread=/rl", s.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(s.list("/rl").await["comments"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_written_to_the_store_is_sanitized_whoever_sent_it() {
    let s = Stack::start(&[]).await;
    // Even with logic's credential (stolen, or a bug in logic), no script is kept.
    let store = StoreClient::new(&s.store, Credential::of("logic", &KEYS));
    let hostile = r#"<p onclick="steal()">hello</p><script>alert(document.cookie)</script><a href="javascript:x()">l</a>"#;
    store.write(&append("/xss", hostile)).await.unwrap();
    let list: Value = s.list("/xss").await;
    let html = list["comments"][0]["html"].as_str().unwrap();
    assert!(html.contains("hello"), "{html}");
    for bad in ["<script", "onclick", "javascript:"] {
        assert!(!html.contains(bad), "{bad} kept in {html}");
    }
    // An edit is sanitized too.
    let id = list["comments"][0]["id"].as_u64().unwrap();
    store
        .write(&WriteOp::Edit {
            id,
            text: "x".into(),
            html: "<img src=x onerror=alert(1)><b>bold</b>".into(),
        })
        .await
        .unwrap();
    let page = store.page("/xss", 0, 10).await.unwrap();
    let html = &page.comments[0].html;
    assert!(
        html.contains("<b>bold</b>") && !html.contains("onerror"),
        "{html}"
    );
}

/// A frontend in this process in front of `logic`, believing `X-Forwarded-For` from
/// `trusted`; its base URL.
async fn frontend(
    logic: &str,
    trusted: &[&str],
    shutdown: io360_common::serve::Shutdown,
) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let config = io360_frontend::Config {
        logic_url: Some(logic.to_owned()),
        trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
        tier_auth: common::auth(),
        ..io360_frontend::Config::default()
    };
    tokio::spawn(async move { io360_frontend::serve(config, l, shutdown).await.unwrap() });
    common::wait_ready(&reqwest::Client::new(), &format!("{url}/readyz")).await;
    url
}

/// Posts 8 comments through `front`, each claiming an address in another /24; the statuses.
async fn post_claiming_addresses(front: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..8 {
        let res = reqwest::Client::new()
            .post(format!("{front}/api/v1/comments?thread=/xff"))
            .header("x-forwarded-for", format!("198.51.{i}.7"))
            .json(&json!({"text": format!("comment number {i}")}))
            .send()
            .await
            .unwrap();
        out.push(res.status().as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_address_counts_only_when_it_comes_through_a_trusted_proxy() {
    let (trigger, shutdown) = io360_common::serve::Shutdown::new();
    // Rate limits on: 5 writes at once per client network.
    let flags = ["--trusted-proxy-header", "x-forwarded-for"];

    // No proxy configured: every claim is replaced by the connection's address, so the eight
    // posts are one client's, and the limit stops them.
    let s = Stack::start(&flags).await;
    let front = frontend(&s.api, &[], shutdown.clone()).await;
    let statuses = post_claiming_addresses(&front).await;
    assert_eq!(&statuses[..5], [201; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");

    // The test's own address is a trusted proxy: each claimed address is its own client.
    let s = Stack::start(&flags).await;
    let front = frontend(&s.api, &["127.0.0.0/8"], shutdown.clone()).await;
    let statuses = post_claiming_addresses(&front).await;
    assert_eq!(statuses, [201; 8], "{statuses:?}");
    trigger.trigger();
}
