//! The public face of `io360 up` (one port for pages, `/api`, `/v1`) under requests a browser
//! would not send: oversized bodies, preflights through the proxy, odd paths and heads.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_addr, status_json};
use serde_json::Value;
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

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("data").join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
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

/// The status and the problem body of a raw answer.
fn raw_problem(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "not a problem: {answer}"
    );
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_malformed_requests_are_problems() {
    let up = Up::start(&[]).await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let huge_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40_000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"GARBAGE\x01 / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "a bare LF inside the head",
            b"GET /posts/hello/ HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n".to_vec(),
            400,
        ),
        ("a long target", long_target.into_bytes(), 414),
        ("a request line longer than a head", huge_line.into_bytes(), 414),
        ("a big head", big_head.into_bytes(), 431),
        (
            "a page posted to",
            b"POST /posts/hello/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
            405,
        ),
        (
            "an API route with the wrong method",
            b"PUT /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
            405,
        ),
    ];
    for (what, bytes, status) in cases {
        let answer = up.raw(&bytes).await;
        let (got, p) = raw_problem(&answer);
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(p["status"], status, "{what}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_text_that_could_deceive_are_refused() {
    let up = Up::start(&[]).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { status_json(http.get(path).send().await.unwrap()).await }
    };
    // Invalid UTF-8 in a thread name is refused, not decoded into U+FFFD.
    for path in [
        "/api/v1/comments?thread=%2Fa%FF",
        "/v1/poll?thread=%2Fa%FF&since=0",
        "/v1/events?thread=%2Fa%FE",
    ] {
        let (st, p) = get(up.url(path)).await;
        assert_eq!(
            (st, p["field"].as_str()),
            (400, Some("thread")),
            "{path}: {p}"
        );
    }
    // One name, one thread: the decomposed form is refused with a clear rule.
    let post = |thread: &str, body: Value| {
        http.post(up.url("/api/v1/comments"))
            .query(&[("thread", thread)])
            .json(&body)
            .send()
    };
    let (st, p) = status_json(
        post("/caf\u{65}\u{301}", serde_json::json!({"text": "hi"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, p["field"].as_str()), (400, Some("thread")), "{p}");
    assert!(p["title"].as_str().unwrap().contains("NFC"), "{p}");
    let (st, _) = status_json(
        post("/caf\u{e9}", serde_json::json!({"text": "hi"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201);
    // NUL bytes and direction overrides in what readers see.
    for (body, field) in [
        (serde_json::json!({"text": "a\u{0}b"}), "text"),
        (serde_json::json!({"text": "see \u{202E}gnp.exe"}), "text"),
        (
            serde_json::json!({"text": "ok", "author": "Ann\u{2066}"}),
            "author",
        ),
        (
            serde_json::json!({"text": "ok", "author": "A\u{0}nn"}),
            "author",
        ),
    ] {
        let (st, p) = status_json(post("/t", body.clone()).await.unwrap()).await;
        assert_eq!((st, p["field"].as_str()), (400, Some(field)), "{body}: {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_must_match_exactly() {
    let up = Up::start(&[]).await;
    let token = up.admin_token();
    let http = reqwest::Client::new();
    let queue = |auth: String| {
        http.get(up.url("/api/v1/admin/queue"))
            .header("authorization", auth)
            .send()
    };
    let ok = queue(format!("Bearer {token}")).await.unwrap();
    assert_eq!(ok.status(), 200);
    // Whitespace at the very end of a header is not part of its value (RFC 9110, 5.5): the
    // HTTP parser drops it before io360 sees the header. Whitespace io360 does see is not
    // ignored.
    for auth in [
        format!("Bearer {token} x"),
        format!("Bearer  {token}"),
        format!("Bearer {token}x"),
    ] {
        let res = queue(auth.clone()).await.unwrap();
        assert!(
            res.status() == 401 || res.status() == 403,
            "{auth:?}: {}",
            res.status()
        );
    }
}
