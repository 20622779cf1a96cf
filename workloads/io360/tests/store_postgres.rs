//! `io360 serve store` on PostgreSQL, as the operator runs it: the engine and the connection
//! string from the environment (the string in a file, as a mounted Secret), a store process
//! killed and another taking over on the same database, and the database away for a while.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

#[path = "../../store/tests/support/pg.rs"]
mod pg;

use common::{Proc, free_addr, wait_ready};
use serde_json::{Value, json};

fn append(text: &str) -> Value {
    json!({
        "op": "append",
        "thread": "/pg",
        "comment": {
            "parent": null, "author": "ann", "email": null, "website": null,
            "text": text, "html": format!("<p>{text}</p>"), "status": "approved",
            "remote": null, "authorKey": null
        },
        "idempotency": {"key": format!("k {text}"), "fingerprint": text}
    })
}

fn start_store(addr: &str, dsn_file: &std::path::Path, data: &std::path::Path) -> Proc {
    Proc::spawn(
        &[
            "serve",
            "store",
            "--addr",
            addr,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("IO360_STORE_ENGINE", "postgres"),
            ("IO360_DATABASE_URL_FILE", dsn_file.to_str().unwrap()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_store_on_postgres_from_the_environment_survives_its_process_and_the_database() {
    let mut pg = pg::Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, format!("{}\n", pg.url())).unwrap();
    let data = dir.path().join("store");
    let http = common::as_tier("logic");

    let first = free_addr().to_string();
    let mut store = start_store(&first, &dsn, &data);
    wait_ready(&http, &format!("http://{first}/readyz")).await;
    for i in 0..5 {
        let r = http
            .post(format!("http://{first}/store/v1/write"))
            .json(&append(&format!("c{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        !data.exists(),
        "the postgres engine keeps nothing in the data directory"
    );

    // The process dies; another, anywhere, serves the same comments.
    store.kill9();
    let second = free_addr().to_string();
    let _store = start_store(&second, &dsn, &data);
    wait_ready(&http, &format!("http://{second}/readyz")).await;
    let page: Value = http
        .get(format!("http://{second}/store/v1/comments?thread=/pg"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["head"], 5);
    assert_eq!(page["comments"].as_array().unwrap().len(), 5);

    // The database goes away: a write is refused for a while, not lost and not a 500.
    pg.stop();
    let r = http
        .post(format!("http://{second}/store/v1/write"))
        .json(&append("while away"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let p: io360_common::Problem = r.json().await.unwrap();
    assert_eq!(p.slug(), "store-unavailable");
    pg.restart().await;
    // Back: the same write goes through, as the sixth change of the thread.
    let mut answer = None;
    for _ in 0..50 {
        let r = http
            .post(format!("http://{second}/store/v1/write"))
            .json(&append("while away"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            answer = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 503);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let answer = answer.expect("the store never wrote again after the database came back");
    assert_eq!(answer["change"]["seq"], 6, "{answer}");
}

/// The status of `GET url`, or 0 when nothing answered.
async fn status(http: &reqwest::Client, url: &str) -> u16 {
    match http.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits up to `secs` for `GET url` to answer `want`; answers whether it did.
async fn turns(http: &reqwest::Client, url: &str, want: u16, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if status(http, url).await == want {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_database_is_down_is_not_ready_but_alive() {
    let mut pg = pg::Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, format!("{}\n", pg.url())).unwrap();
    let http = common::as_tier("logic");
    let addr = free_addr().to_string();
    let _store = start_store(&addr, &dsn, &dir.path().join("store"));
    let (ready, alive) = (
        format!("http://{addr}/readyz"),
        format!("http://{addr}/healthz"),
    );
    wait_ready(&http, &ready).await;

    pg.stop();
    assert!(
        turns(&http, &ready, 503, 10).await,
        "the store stayed ready with its database down"
    );
    // Kubernetes takes it out of its Service, and does not restart it.
    assert_eq!(status(&http, &alive).await, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        status(&http, &ready).await,
        503,
        "ready again with no database"
    );
    assert_eq!(status(&http, &alive).await, 200);

    pg.restart().await;
    assert!(
        turns(&http, &ready, 200, 10).await,
        "the store never became ready again once its database was back"
    );
    let r = http
        .post(format!("http://{addr}/store/v1/write"))
        .json(&append("once ready again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ready, yet refusing writes");
}
