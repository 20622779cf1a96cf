//! Sync refuses requests over its in-flight limit and answers a request it cannot finish in
//! time, instead of holding callers while its store does not answer.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::time::Duration;

use clap::Parser;
use io360_common::Problem;
use io360_common::serve::Shutdown;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: io360_sync::Config,
}

/// A store that takes connections and never answers.
async fn silent_store() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limit_or_past_their_time_get_503() {
    let store = silent_store().await;
    let keys = io360_common::auth::Keyring::generate();
    let mut config = Args::parse_from([
        "sync",
        "--store-url",
        &store,
        "--max-in-flight",
        "1",
        "--request-timeout-secs",
        "1",
    ])
    .config;
    config.tier_auth = io360_common::auth::TierAuthConfig::in_memory(&keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = Shutdown::new();
    let served = tokio::spawn(io360_sync::serve(config, listener, shutdown));
    // The tier that calls this one, with its credential.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        io360_common::auth::HEADER,
        io360_common::auth::Credential::of("longpoll", &keys).header(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // History does not cover this thread, so sync asks the store, which never answers.
    let range = format!("{base}/sync/v1/changes?thread=/t");
    let held = tokio::spawn({
        let (http, range) = (http.clone(), range.clone());
        async move { http.get(range).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = http.get(&range).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let p: Problem = refused.json().await.unwrap();
    assert_eq!(p.slug(), "overloaded");
    let timed_out = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held request was never answered")
        .unwrap();
    assert_eq!(timed_out.status(), 503);
    let p: Problem = timed_out.json().await.unwrap();
    assert_eq!(p.slug(), "request-timeout");
    trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
}
