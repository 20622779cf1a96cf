//! Stopping without refusing anyone: after SIGTERM a tier started with a shutdown delay keeps
//! answering (new connections and keep-alive ones) while `/readyz` says it is not ready, closes
//! each connection after its answer, and only then closes; a poll held when longpoll stops
//! gets an answer, never a reset. The metrics listener serves metrics and health only.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use std::time::{Duration, Instant};

use common::{Proc, free_addr, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request on `stream` and reads one answer (head and a Content-Length
/// body). Returns the status and the head, lowercased.
async fn exchange(stream: &mut TcpStream, path: &str) -> std::io::Result<(u16, String)> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(40), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("no answer in 40 s"))??;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before an answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head))
}

async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    exchange(&mut s, path).await
}

fn sigterm(p: &Proc) {
    let pid = p.0.id() as libc::pid_t;
    // SAFETY: kill(2) with a pid of a child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

async fn exit_within(p: &mut Proc, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the tier did not exit in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_answers_through_its_shutdown_delay_unready_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let addr = free_addr().to_string();
    let metrics = free_addr().to_string();
    let mut store = Proc::spawn(
        &[
            "serve",
            "store",
            "--addr",
            &addr,
            "--metrics-addr",
            &metrics,
            "--data-dir",
            data.to_str().unwrap(),
            "--shutdown-delay-secs",
            "3",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://{addr}/readyz")).await;

    // The metrics listener: metrics and health of the tier, and nothing of its API.
    let (status, _) = get(&metrics, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    let text = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("io360_http_requests"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    let (status, _) = get(&metrics, "/store/v1/thread?thread=/x").await.unwrap();
    assert_eq!(status, 404, "the API must not be on the metrics listener");

    // A keep-alive connection, opened before the signal.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    let (status, head) = exchange(&mut kept, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    assert!(!head.contains("connection: close"), "{head}");

    let signalled = Instant::now();
    sigterm(&store);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Draining: the kept connection still gets its answer, told to close after it.
    let (status, head) = exchange(&mut kept, "/healthz").await.unwrap();
    assert_eq!(
        status, 200,
        "a request on a kept connection during the drain"
    );
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), kept.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection after its answer")
        .unwrap();
    assert_eq!(n, 0);

    // New connections are still taken; readiness says to stop sending them.
    let (status, _) = get(&addr, "/healthz").await.unwrap();
    assert_eq!(status, 200, "a new connection during the drain");
    let (status, _) = get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "/readyz while draining");
    let (status, _) = get(&metrics, "/readyz").await.unwrap();
    assert_eq!(
        status, 503,
        "/readyz on the metrics listener while draining"
    );
    assert!(store.0.try_wait().unwrap().is_none());

    let status = exit_within(&mut store, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "exited {:?} after SIGTERM, before its 3 s delay",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_held_when_longpoll_stops_gets_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let store_addr = free_addr().to_string();
    let sync_addr = free_addr().to_string();
    let lp_addr = free_addr().to_string();
    let _store = Proc::spawn(
        &[
            "serve",
            "store",
            "--addr",
            &store_addr,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let _sync = Proc::spawn(
        &["serve", "sync", "--addr", &sync_addr],
        &[("IO360_STORE_URL", &format!("http://{store_addr}"))],
    );
    let mut longpoll = Proc::spawn(
        &[
            "serve",
            "longpoll",
            "--addr",
            &lp_addr,
            "--shutdown-delay-secs",
            "2",
        ],
        &[
            ("IO360_SYNC_URL", &format!("http://{sync_addr}")),
            ("IO360_LONGPOLL_DRAIN_SECS", "0.5"),
        ],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://{lp_addr}/readyz")).await;
    let mut kept = TcpStream::connect(&lp_addr).await.unwrap();
    let (status, head) = exchange(&mut kept, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    assert!(!head.contains("connection: close"), "{head}");

    // One poll held before the signal, one made during the drain.
    let mut before = TcpStream::connect(&lp_addr).await.unwrap();
    let first = tokio::spawn(async move {
        let answer = exchange(&mut before, "/v1/poll?thread=/drain&since=0").await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    sigterm(&longpoll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get(&lp_addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "/readyz while draining");
    let (status, head) = exchange(&mut kept, "/healthz").await.unwrap();
    assert_eq!(
        status, 200,
        "a request on a kept connection during the drain"
    );
    assert!(head.contains("connection: close"), "{head}");
    let mut during = TcpStream::connect(&lp_addr).await.unwrap();
    let second = tokio::spawn(async move {
        let answer = exchange(&mut during, "/v1/poll?thread=/drain&since=0").await;
        (answer, Instant::now())
    });

    for (name, task) in [("held before", first), ("made during", second)] {
        let (answer, at) = task.await.unwrap();
        let (status, _) = answer.unwrap_or_else(|e| panic!("the poll {name} the drain: {e}"));
        assert_eq!(status, 204, "the poll {name} the drain");
        assert!(
            at.duration_since(signalled) >= Duration::from_millis(1900),
            "the poll {name} the drain was answered {:?} after SIGTERM, inside the delay",
            at.duration_since(signalled)
        );
    }
    let status = exit_within(&mut longpoll, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_answers_kept_connections_through_its_delay_and_closes_them() {
    let addr = free_addr().to_string();
    let mut frontend = Proc::spawn(
        &[
            "serve",
            "frontend",
            "--addr",
            &addr,
            "--shutdown-delay-secs",
            "2",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://{addr}/readyz")).await;
    // A page (the fast path) and a health check (the router), each on its kept connection.
    let mut page = TcpStream::connect(&addr).await.unwrap();
    let mut health = TcpStream::connect(&addr).await.unwrap();
    for (conn, path) in [(&mut page, "/"), (&mut health, "/healthz")] {
        let (status, head) = exchange(conn, path).await.unwrap();
        assert_eq!(status, 200, "{path}");
        assert!(!head.contains("connection: close"), "{path}: {head}");
    }
    sigterm(&frontend);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (conn, path) in [(&mut page, "/"), (&mut health, "/healthz")] {
        let (status, head) = exchange(conn, path).await.unwrap();
        assert_eq!(status, 200, "{path} on a kept connection during the drain");
        assert!(head.contains("connection: close"), "{path}: {head}");
    }
    let (status, _) = get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "/readyz while draining");
    let status = exit_within(&mut frontend, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}
