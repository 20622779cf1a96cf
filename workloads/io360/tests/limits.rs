//! The tiers that call the store refuse requests over their in-flight limit and answer a
//! request they cannot finish in time, instead of holding their callers while the store does
//! not answer. One check, run against each of them as `io360 serve <tier>` configures it.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::future::Future;
use std::time::Duration;

use clap::Parser;
use io360_common::Problem;
use io360_common::serve::Shutdown;
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args<C: clap::Args> {
    #[command(flatten)]
    config: C,
}

/// A store that takes connections and never answers.
async fn silent_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    url
}

/// Serves `tier` with at most one request in flight and one second per request, in front of a
/// store that never answers; `path` is a request that asks the store, sent as `caller`.
async fn check<C, F, Fut, E>(tier: &str, flags: &[&str], serve: F, caller: &str, path: &str)
where
    C: clap::Args + clap::FromArgMatches,
    F: FnOnce(C, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let store = silent_store().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = io360_common::auth::Keyring::generate();
    let (keys_file, token_file) = (dir.path().join("keys"), dir.path().join("token"));
    std::fs::write(&keys_file, keys.to_text()).unwrap();
    std::fs::write(&token_file, keys.credential(tier)).unwrap();
    let mut argv = vec![tier, "--store-url", &store];
    argv.extend_from_slice(&["--max-in-flight", "1", "--request-timeout-secs", "1"]);
    argv.extend_from_slice(flags);
    let (k, t) = (keys_file.to_str().unwrap(), token_file.to_str().unwrap());
    argv.extend_from_slice(&["--tier-keys-file", k, "--tier-token-file", t]);
    let config = Args::<C>::parse_from(argv).config;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = Shutdown::new();
    let served = tokio::spawn(serve(config, listener, shutdown));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        io360_common::auth::HEADER,
        io360_common::auth::Credential::of(caller, &keys).header(),
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
    let url = format!("{base}{path}");
    let held = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503, "{tier}: a second request in flight");
    assert_eq!(refused.headers()["retry-after"], "1", "{tier}");
    let p: Problem = refused.json().await.unwrap();
    assert_eq!(p.slug(), "overloaded", "{tier}");
    let timed_out = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap_or_else(|_| panic!("{tier}: the held request was never answered"))
        .unwrap();
    assert_eq!(timed_out.status(), 503, "{tier}: a request past its time");
    let p: Problem = timed_out.json().await.unwrap();
    assert_eq!(p.slug(), "request-timeout", "{tier}");
    trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logic_answers_503_over_its_limits() {
    // Listing a thread asks the store.
    let path = "/api/v1/comments?thread=/t";
    check(
        "logic",
        &["--no-rate-limits"],
        io360_logic::serve,
        "frontend",
        path,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_answers_503_over_its_limits() {
    // History does not cover this thread, so sync asks the store.
    let path = "/sync/v1/changes?thread=/t";
    check("sync", &[], io360_sync::serve, "longpoll", path).await;
}
