//! A full write queue is answered 503 with `Retry-After`, over HTTP, instead of growing.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod support;

use io360_common::model::Status;
use io360_store::api::{NewComment, WriteOp};
use support::engines::{Kind, on_both};

on_both!(
    a_full_write_queue_answers_503_with_retry_after,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn a_full_write_queue_answers_503_with_retry_after(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match kind {
        Kind::Fjall => None,
        Kind::Postgres => Some(support::pg::Postgres::start().await),
    };
    let engine = match &pg {
        None => io360_store::EngineConfig::default(),
        Some(pg) => support::postgres(pg.url()),
    };
    let store = support::start_on(
        io360_store::Config {
            // One write per commit and room for one more: a burst must overflow.
            group_commit_max: 1,
            write_queue_max: 1,
            ..support::config(dir.path())
        },
        engine,
    )
    .await;
    let base = store.base.clone();
    let http = support::as_logic();
    let op = |i: usize| WriteOp::Append {
        thread: "/busy".into(),
        comment: NewComment {
            parent: None,
            author: None,
            email: None,
            website: None,
            text: format!("{i}"),
            html: format!("<p>{i}</p>"),
            status: Status::Approved,
            remote: None,
            author_key: None,
        },
        idempotency: None,
    };
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, url, body) = (http.clone(), format!("{base}/store/v1/write"), op(i));
        tasks.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.unwrap()
        }));
    }
    let (mut ok, mut busy) = (0u64, 0u64);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                let p: io360_common::Problem = r.json().await.unwrap();
                assert_eq!(p.slug(), "store-busy");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        busy > 0,
        "200 writes at once never found the queue of 1 full"
    );
    assert!(ok > 0, "no write got through");
    // What was accepted is all there, gap-free; what was refused left no trace.
    let page: io360_common::model::ThreadPage = http
        .get(format!("{base}/store/v1/comments?thread=/busy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.head, ok);
    assert_eq!(page.comments.len() as u64, ok);
    store.stop().await;
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_get_503_and_slow_ones_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = support::start(io360_store::Config {
        limits: io360_common::limits::Limits {
            max_in_flight: 1,
            request_timeout_secs: 1.0,
        },
        ..support::config(dir.path())
    })
    .await;
    let addr = store.base.trim_start_matches("http://").to_owned();
    let http = support::as_logic();
    // A write whose body never finishes arriving holds the one place in flight.
    let mut held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /store/v1/write HTTP/1.1\r\nhost: store\r\n{}: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        io360_common::auth::HEADER,
        support::KEYS.credential("logic"),
    );
    held.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let res = http
        .get(format!("http://{addr}/store/v1/position"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let p: io360_common::Problem = res.json().await.unwrap();
    assert_eq!(p.slug(), "overloaded");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), held.read(&mut answer))
        .await
        .expect("the held write was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    let res = http
        .get(format!("http://{addr}/store/v1/position"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    store.stop().await;
}
