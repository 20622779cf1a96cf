//! io360's sync tier: makes sure every longpoll instance sees every change.
//!
//! Sync follows the store's change feed ([`tail`]), keeps a bounded window of recent changes
//! indexed by feed position and by thread ([`history`]), and serves longpoll instances two
//! things ([`api`]): a gap-free stream of every change after a feed position, and a thread's
//! changes after a sequence number (from history or, beyond it, from the store). Replicas
//! share nothing: positions are the store's, so any replica can answer any longpoll instance.
//!
//! The public surface is [`Config`], [`serve`], the wire types in [`api`] and [`SyncClient`].

pub mod api;
mod client;
mod history;
mod tail;

use std::sync::Arc;

use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use io360_store::StoreClient;
use tokio::net::TcpListener;

pub use client::SyncClient;

/// Configuration of the sync tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Base URL of the store tier.
    #[arg(long, env = "IO360_STORE_URL", default_value = "http://127.0.0.1:8084")]
    pub store_url: String,

    /// Most recent changes kept in memory, across all threads.
    #[arg(long, env = "IO360_SYNC_HISTORY_CHANGES", default_value_t = 200_000)]
    pub history_changes: usize,

    /// Most memory the recent changes may take, in MiB (estimated).
    #[arg(long, env = "IO360_SYNC_HISTORY_MIB", default_value_t = 128)]
    pub history_mib: usize,

    /// Most recent changes kept per thread.
    #[arg(long, env = "IO360_SYNC_HISTORY_PER_THREAD", default_value_t = 1000)]
    pub history_per_thread: usize,

    /// Where audit events (this tier's start and stop) go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// Requests handled at once, and how long each may take.
    #[command(flatten)]
    pub limits: io360_common::limits::Limits,

    /// This tier's credential (for the store and the logger) and the keyring longpoll's
    /// credential is checked against.
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

/// Why the sync tier stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("invalid sync configuration: {0}")]
    Config(String),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Config {
    fn validate(&self) -> Result<history::Limits, ServeError> {
        if !(self.store_url.starts_with("http://") || self.store_url.starts_with("https://")) {
            return Err(ServeError::Config(format!(
                "--store-url (IO360_STORE_URL) must be an http:// or https:// URL, not `{}`",
                self.store_url
            )));
        }
        if self.history_changes == 0 || self.history_per_thread == 0 || self.history_mib == 0 {
            return Err(ServeError::Config(
                "--history-changes, --history-mib and --history-per-thread must be at least 1"
                    .into(),
            ));
        }
        Ok(history::Limits {
            max_changes: self.history_changes,
            max_bytes: self.history_mib.saturating_mul(1 << 20),
            per_thread: self.history_per_thread,
        })
    }
}

/// Follows the store's feed and serves sync's API on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let limits = config.validate()?;
    config.audit.validate().map_err(ServeError::Config)?;
    config.limits.validate().map_err(ServeError::Config)?;
    let telemetry = Telemetry::new("sync");
    shutdown.attach(&telemetry);
    let credential = config
        .tier_auth
        .credential("sync")
        .map_err(ServeError::Config)?;
    let verifier = config
        .tier_auth
        .verifier("sync")
        .map_err(ServeError::Config)?;
    let audit = io360_logger::Shipper::new("sync", &config.audit, &config.tier_auth, &telemetry)
        .map_err(ServeError::Config)?;
    let history = Arc::new(History::new(limits));
    let store = StoreClient::new(&config.store_url, credential);
    tracing::info!(
        epoch = history.epoch(),
        store = %config.store_url,
        history_changes = limits.max_changes,
        history_per_thread = limits.per_thread,
        history_bytes = limits.max_bytes,
        "sync starting"
    );

    let tail_metrics = tail::TailMetrics::default();
    telemetry.register(
        "sync_feed_position",
        "Last change-feed position applied to history",
        tail_metrics.position.clone(),
    );
    telemetry.register(
        "sync_feed_reconnects",
        "Times the store's change feed was reopened",
        tail_metrics.reconnects.clone(),
    );
    telemetry.register(
        "sync_history_changes",
        "Changes held in history",
        tail_metrics.history_changes.clone(),
    );
    telemetry.register(
        "sync_history_bytes",
        "Estimated bytes held in history",
        tail_metrics.history_bytes.clone(),
    );
    telemetry.register(
        "sync_history_threads",
        "Threads with changes in history",
        tail_metrics.history_threads.clone(),
    );
    let api_metrics = api::Metrics::default();
    telemetry.register(
        "sync_streams",
        "Change streams being served",
        api_metrics.streams.clone(),
    );
    telemetry.register(
        "sync_ranges",
        "Range requests answered, by source",
        api_metrics.ranges.clone(),
    );
    telemetry.register(
        "sync_store_catch_ups",
        "Streams that had to be caught up from the store",
        api_metrics.store_catch_ups.clone(),
    );

    let tail = tokio::spawn(tail::run(
        history.clone(),
        store.clone(),
        telemetry.ready.clone(),
        tail_metrics,
        shutdown.clone(),
    ));
    let router = telemetry.instrument(config.limits.apply(
        "sync",
        api::router(history, store, shutdown.clone(), api_metrics, &verifier),
    ));
    let served = audit
        .around(io360_common::serve::serve(
            "sync", listener, router, shutdown,
        ))
        .await;
    tail.abort();
    served?;
    Ok(())
}

use history::History;
