//! Starting tiers for tests: in-process on loopback, or as real `io360` processes.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use io360_common::serve::{Shutdown, ShutdownTrigger};
use serde_json::Value;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// The keyring every tier of a test process shares.
pub static KEYS: std::sync::LazyLock<io360_common::auth::Keyring> =
    std::sync::LazyLock::new(io360_common::auth::Keyring::generate);

/// The tiers' credentials and keyring, in memory.
pub fn auth() -> io360_common::auth::TierAuthConfig {
    io360_common::auth::TierAuthConfig::in_memory(&KEYS)
}

/// An HTTP client that presents `tier`'s credential on every request, as that tier would.
pub fn as_tier(tier: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        io360_common::auth::HEADER,
        io360_common::auth::Credential::of(tier, &KEYS).header(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[derive(Parser)]
struct LogicArgs {
    #[command(flatten)]
    config: io360_logic::Config,
}

/// Logic configuration as `io360 serve logic` would parse these flags.
pub fn logic_config(flags: &[&str]) -> io360_logic::Config {
    let mut argv = vec!["logic"];
    argv.extend_from_slice(flags);
    let mut config = LogicArgs::try_parse_from(argv).expect("logic flags").config;
    config.tier_auth = auth();
    config
}

/// Store and logic in this process, on loopback ports; stops when dropped.
pub struct Stack {
    pub api: String,
    pub store: String,
    pub http: reqwest::Client,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

/// Starts a store with its data in `dir/store` on a free loopback port; its base URL.
pub async fn start_store(dir: &std::path::Path, shutdown: Shutdown) -> String {
    let store_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = format!("http://{}", store_l.local_addr().unwrap());
    let cfg = io360_store::Config {
        data_dir: dir.join("store"),
        group_commit_max: 256,
        audit: Default::default(),
        write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
        limits: Default::default(),
        tier_auth: auth(),
    };
    tokio::spawn(async move { io360_store::serve(cfg, store_l, shutdown).await.unwrap() });
    store
}

impl Stack {
    pub async fn start(flags: &[&str]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let store = start_store(dir.path(), shutdown.clone()).await;
        let mut all = vec!["--admin-token", ADMIN, "--store-url", &store];
        all.extend_from_slice(flags);
        let logic = logic_config(&all);
        let logic_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", logic_l.local_addr().unwrap());
        tokio::spawn(async move { io360_logic::serve(logic, logic_l, shutdown).await.unwrap() });
        // Tests stand where the frontend stands: logic answers only it.
        let http = as_tier("frontend");
        wait_ready(&http, &format!("{api}/readyz")).await;
        Stack {
            api,
            store,
            http,
            trigger,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// Posts a comment; returns (status, body).
    pub async fn post(&self, thread: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url("/api/v1/comments"))
            .query(&[("thread", thread)])
            .json(&body)
            .send()
            .await
            .unwrap();
        status_json(res).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_json(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn list(&self, thread: &str) -> Value {
        let res = self
            .http
            .get(self.url("/api/v1/comments"))
            .query(&[("thread", thread)])
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(res).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

pub async fn status_json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became ready");
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A real `io360 serve <tier>` process; killed when dropped. It is handed its credential and
/// the keyring as files, as a Kubernetes Secret would be.
pub struct Proc(pub Child, tempfile::TempDir);

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let keys = tempfile::tempdir().unwrap();
        let tier = match args {
            ["serve", tier, ..] => tier,
            _ => "none",
        };
        std::fs::write(keys.path().join("keys"), KEYS.to_text()).unwrap();
        std::fs::write(keys.path().join("token"), KEYS.credential(tier)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_io360"));
        cmd.args(args)
            .env("IO360_TIER_KEYS_FILE", keys.path().join("keys"))
            .env("IO360_TIER_TOKEN_FILE", keys.path().join("token"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc(cmd.spawn().expect("starting io360"), keys)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
