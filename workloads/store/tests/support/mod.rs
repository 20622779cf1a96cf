//! Starting a store over HTTP on loopback, for the tests that need its HTTP face.

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "in tests a panic is the failure report; each test uses part of the support"
)]

pub mod engines;
pub mod pg;

use io360_common::serve::{Shutdown, ShutdownTrigger};

/// A store serving on a free loopback port.
pub struct Served {
    /// Its base URL.
    pub base: String,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), io360_store::ServeError>>,
}

/// Starts a store with `config` and waits until it is ready.
pub async fn start(config: io360_store::Config) -> Served {
    start_on(config, io360_store::EngineConfig::default()).await
}

/// Starts a store with `config` on the engine `engine` chooses and waits until it is ready.
pub async fn start_on(config: io360_store::Config, engine: io360_store::EngineConfig) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn(io360_store::serve_on(config, engine, listener, shutdown));
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Served {
                base,
                trigger,
                task,
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the store at {base} never became ready");
}

/// The keyring of the tests' tiers.
pub static KEYS: std::sync::LazyLock<io360_common::auth::Keyring> =
    std::sync::LazyLock::new(io360_common::auth::Keyring::generate);

/// An HTTP client that presents logic's credential, as the store's only writer does.
pub fn as_logic() -> reqwest::Client {
    as_tier("logic")
}

/// An HTTP client that presents `tier`'s credential.
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

/// A store's configuration with its data in `dir`.
pub fn config(dir: &std::path::Path) -> io360_store::Config {
    io360_store::Config {
        data_dir: dir.join("store"),
        group_commit_max: 64,
        write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
        limits: Default::default(),
        audit: Default::default(),
        tier_auth: io360_common::auth::TierAuthConfig::in_memory(&KEYS),
    }
}

/// The engine settings of a store on the PostgreSQL database at `url`.
pub fn postgres(url: String) -> io360_store::EngineConfig {
    io360_store::EngineConfig {
        engine: io360_store::EngineKind::Postgres,
        database_url: Some(url),
        ..Default::default()
    }
}

impl Served {
    /// Stops the store and checks it stopped cleanly.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
    }
}
