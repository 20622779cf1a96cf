//! The public face of `io360 up` (one port for pages, `/api`, `/v1`) under requests a browser
//! would not send: oversized bodies, preflights through the proxy, odd paths and heads.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_addr, status_json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `io360 up` on a loopback port with its own data directory; killed when dropped.
struct Up {
    base: String,
    addr: std::net::SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Up {
    async fn start(env: &[(&str, &str)]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_io360"));
        cmd.args(["up", "--addr", &addr.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .env("IO360_LOG", "warn")
            .env("IO360_NO_RATE_LIMITS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting io360 up");
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        common::wait_ready(&http, &format!("{base}/api/v1/status")).await;
        Up {
            base,
            addr,
            child,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends raw bytes on a new connection; answers what came back until the server closed
    /// or 5 s passed.
    async fn raw(&self, bytes: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_through_the_public_port() {
    let up = Up::start(&[]).await;
    let http = reqwest::Client::new();
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(2 << 20));
    for _ in 0..20 {
        let res = http
            .post(up.url("/api/v1/comments?thread=/big-body"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let (st, p) = status_json(res).await;
        assert_eq!(st, 413, "{p}");
        assert_eq!(p["type"], "https://io360.dev/problems/body-too-large");
    }
    // Without a length, streamed in chunks.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; 32 * 1024])).collect();
    let res = http
        .post(up.url("/api/v1/comments?thread=/big-body"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (st, p) = status_json(res).await;
    assert_eq!(st, 413, "{p}");
    // A body under the limit still goes through.
    let res = http
        .post(up.url("/api/v1/comments?thread=/big-body"))
        .json(&serde_json::json!({"text": "fits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_preflight_for_live_updates_passes_the_public_port() {
    let up = Up::start(&[("IO360_ALLOWED_ORIGINS", "https://blog.example")]).await;
    let http = reqwest::Client::new();
    for path in ["/v1/poll?thread=/p&since=0", "/v1/events?thread=/p"] {
        let res = http
            .request(reqwest::Method::OPTIONS, up.url(path))
            .header("origin", "https://blog.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{path}: {:?}", res.text().await);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://blog.example"
        );
    }
    // The API's preflight too.
    let res = http
        .request(
            reqwest::Method::OPTIONS,
            up.url("/api/v1/comments?thread=/p"),
        )
        .header("origin", "https://blog.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://blog.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_redirect_never_names_another_host() {
    let up = Up::start(&[]).await;
    for (target, location) in [
        ("/posts/hello", "/posts/hello/"),
        ("//posts/hello", "/posts/hello/"),
        ("///posts/hello?x=1", "/posts/hello/?x=1"),
    ] {
        let answer = up
            .raw(
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
        assert!(answer.starts_with("HTTP/1.1 308"), "{target}: {answer}");
        let got = answer
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_default();
        assert_eq!(got, location, "{target}");
    }
}
