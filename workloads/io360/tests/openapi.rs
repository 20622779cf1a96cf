//! The OpenAPI document (`docs/openapi.json`) says what `io360 up` answers: it is served at
//! `/api/v1/openapi.json` as kept in the repository, every operation it lists is routed, and
//! every method it leaves out of a path is refused with 405.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// `io360 up`, its base URL, and its data directory (removed when dropped).
struct Up(Child, String, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn up() -> Up {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", &addr.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("IO360_LOG", "error")
        .env("IO360_NO_RATE_LIMITS", "true")
        .env("IO360_LONGPOLL_HOLD_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    common::wait_ready(&reqwest::Client::new(), &format!("{base}/api/v1/status")).await;
    Up(child, base, dir)
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_routes() {
    let kept: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
    let up = up().await;
    let http = reqwest::Client::new();
    let served: Value = http
        .get(format!("{}/api/v1/openapi.json", up.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, kept, "the served document is the one in docs/");

    let paths = kept["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (path, ops) in paths {
        // A concrete request for each template: ids and threads that need not exist.
        let concrete = path.replace("{id}", "1");
        let url = format!("{}{concrete}?thread=/openapi-check", up.1);
        for method in METHODS {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = http.request(m, &url);
            if ops
                .get(method)
                .is_some_and(|op| op.get("requestBody").is_some())
            {
                req = req.header("content-type", "application/json").body("{}");
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            // An event stream never ends: its first bytes say enough.
            let body = tokio::time::timeout(std::time::Duration::from_secs(3), res.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let routed = status != 405 && !body.contains("/problems/no-such-route");
            if ops.get(method).is_some() {
                assert!(
                    routed,
                    "{method} {path} is documented but not routed: {status} {body}"
                );
                assert!(status < 500, "{method} {path}: {status} {body}");
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is routed but not documented: {body}"
                );
            }
        }
    }
}
