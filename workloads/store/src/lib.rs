//! io360's store tier: the durable home of every comment.
//!
//! Comments live in fjall on disk by default, or in PostgreSQL ([`PgDb`], chosen with
//! `IO360_STORE_ENGINE=postgres`) where the store must survive a node failure; both engines
//! keep one contract behind [`Engine`]. On fjall, one writer thread assigns each thread's next sequence
//! number and the next change-feed position, applies a batch of concurrent writes, and makes
//! them durable with a single fsync before any of them is acknowledged (group commit). Reads
//! run on tokio's blocking pool, never on the async workers. Committed changes stream to
//! consumers (sync, logic's cache) through the change feed.
//!
//! Three layers, each knowing only the one below: the HTTP API (`routes`), which alone picks
//! status codes; the storage layer ([`Db`]: open, reads, the single writer), which answers
//! [`StoreError`]s; and the records on disk (`record`), private and versioned (`format`),
//! apart from the wire types in [`api`] that logic and sync use through [`StoreClient`].
//!
//! The public surface is [`Config`], [`EngineConfig`], [`serve`], the engines ([`Db`],
//! [`PgDb`], [`Engine`]: for tests and tools), the wire types, and [`transfer`], which moves a
//! site's store from one engine to the other (`io360 move-store`).

pub mod api;
mod client;
mod db;
mod engine;
mod error;
mod format;
mod keys;
mod pg;
mod record;
mod routes;
pub mod transfer;

use std::path::PathBuf;
use std::sync::Arc;

use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use tokio::net::TcpListener;

pub use client::StoreClient;
pub use db::{DEFAULT_WRITE_QUEUE, Db, OpenError};
pub use engine::{Engine, EngineConfig, EngineKind};
pub use error::StoreError;
pub use pg::{PgDb, PgOpenError, PgOptions};

/// Configuration of the store tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where comments are kept on disk. Created when missing; one process at a time.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data/store")]
    pub data_dir: PathBuf,

    /// Most writes made durable by one fsync.
    #[arg(long, env = "IO360_STORE_GROUP_COMMIT_MAX", default_value_t = 512)]
    pub group_commit_max: usize,

    /// Most writes waiting for the writer; when that many wait, a write is answered 503 with
    /// `Retry-After` instead of queueing.
    #[arg(long, env = "IO360_STORE_WRITE_QUEUE_MAX", default_value_t = db::DEFAULT_WRITE_QUEUE)]
    pub write_queue_max: usize,

    /// Requests handled at once, and how long each may take.
    #[command(flatten)]
    pub limits: io360_common::limits::Limits,

    /// Where audit events (this tier's start and stop) go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// This tier's credential (for the logger) and the keyring its callers are checked
    /// against.
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

/// Why the store tier stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The database could not be used.
    #[error(transparent)]
    Database(#[from] PgOpenError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is wrong.
    #[error("{0}")]
    Config(String),
}

/// Opens the data directory and serves the store API on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    serve_on(config, EngineConfig::default(), listener, shutdown).await
}

/// Opens the engine `engine` chooses and serves the store API on `listener` until `shutdown`.
pub async fn serve_on(
    config: Config,
    engine: EngineConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    config.audit.validate().map_err(ServeError::Config)?;
    engine.validate().map_err(ServeError::Config)?;
    config.limits.validate().map_err(ServeError::Config)?;
    if config.write_queue_max == 0 {
        return Err(ServeError::Config(
            "--write-queue-max (IO360_STORE_WRITE_QUEUE_MAX) must be at least 1".into(),
        ));
    }
    let telemetry = Telemetry::new("store");
    shutdown.attach(&telemetry);
    let verifier = config
        .tier_auth
        .verifier("store")
        .map_err(ServeError::Config)?;
    let audit = io360_logger::Shipper::new("store", &config.audit, &config.tier_auth, &telemetry)
        .map_err(ServeError::Config)?;
    let (dir, group, queue) = (
        config.data_dir.clone(),
        config.group_commit_max,
        config.write_queue_max,
    );
    let db = match engine.engine {
        EngineKind::Fjall => {
            // Opening replays the journal: disk work, kept off the async workers.
            let db = tokio::task::spawn_blocking(move || Db::open_bounded(&dir, group, queue))
                .await
                .map_err(|e| std::io::Error::other(format!("opening the store panicked: {e}")))??;
            Engine::Fjall(db)
        }
        EngineKind::Postgres => Engine::Postgres(
            PgDb::connect(PgOptions {
                url: engine.url().map_err(ServeError::Config)?,
                pool_max: engine.database_pool_max,
                group_commit_max: group,
                write_queue_max: queue,
            })
            .await?,
        ),
    };
    db.register_metrics(&telemetry);
    let db = Arc::new(db);
    telemetry.ready.set(true);
    // On PostgreSQL, ready only while the database answers: a store that cannot reach it is
    // taken out of its Service (its liveness stays good, so it is not restarted).
    if let Some(mut reachable) = db.reachable() {
        let ready = telemetry.ready.clone();
        tokio::spawn(async move {
            loop {
                ready.set(*reachable.borrow_and_update());
                if reachable.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    let router = telemetry.instrument(config.limits.apply(
        "store",
        routes::router(db.clone(), shutdown.clone(), &verifier),
    ));
    let served = audit
        .around(io360_common::serve::serve(
            "store", listener, router, shutdown,
        ))
        .await;
    db.close();
    served?;
    Ok(())
}
