//! io360's logger tier: the audit trail of everything that happened.
//!
//! A site owner asks "who posted this, who removed it, and why were comments off between 14:02
//! and 14:31?". Every tier ships structured [`Event`]s here in batches through a [`Shipper`]
//! (which never slows a request); the logger validates each batch whole, stores it durably in
//! fjall (fsync before the answer), keeps it within a retention limit of age and size, and
//! answers queries by time, kind, thread and actor, newest first, with a live tail. Client
//! addresses are truncated on the way in unless configured otherwise, and an author's personal
//! data can be erased or exported on request.
//!
//! The public surface is [`Config`] and [`serve`] for the tier, [`Shipper`] and
//! [`ShipperConfig`] for the tiers that send events, [`LoggerClient`] for reading, and the
//! event model in [`event`].

pub mod api;
mod db;
mod error;
pub mod event;
mod format;
mod record;
mod shipper;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use tokio::net::TcpListener;

pub use db::{EventLog, Filter, OpenError, Page, Retention};
pub use error::LogError;
pub use event::{Event, Kind};
pub use shipper::{LoggerClient, Shipper, ShipperConfig};

/// Configuration of the logger tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where events are kept on disk. Created when missing; one process at a time.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data/logger")]
    pub data_dir: PathBuf,

    /// Events older than this many seconds are deleted (default: 90 days).
    #[arg(long, env = "IO360_LOGGER_RETENTION_SECS", default_value_t = 90 * 24 * 3600)]
    pub retention_secs: u64,

    /// When stored events exceed this many bytes, the oldest are deleted (default: 1 GiB).
    #[arg(long, env = "IO360_LOGGER_RETENTION_BYTES", default_value_t = 1 << 30)]
    pub retention_bytes: u64,

    /// How often retention runs, in milliseconds.
    #[arg(long, env = "IO360_LOGGER_SWEEP_MS", default_value_t = 60_000)]
    pub sweep_ms: u64,

    /// Keep client addresses whole instead of truncating them to /24 (IPv4) or /48 (IPv6)
    /// (`true`, `1`, `yes` or `on`).
    #[arg(long, env = "IO360_LOGGER_KEEP_ADDRESSES", value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_addresses: bool,

    /// Requests handled at once, and how long each may take.
    #[command(flatten)]
    pub limits: io360_common::limits::Limits,

    /// The keyring the tiers' credentials are checked against (the logger calls no other
    /// tier, so it needs no credential of its own).
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

impl Config {
    /// Defaults for a data directory, as `io360 up` uses them.
    pub fn in_dir(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            retention_secs: 90 * 24 * 3600,
            retention_bytes: 1 << 30,
            sweep_ms: 60_000,
            keep_addresses: false,
            limits: Default::default(),
            tier_auth: Default::default(),
        }
    }

    /// Checks the configuration and says what is wrong in a sentence.
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_secs == 0 {
            return Err("IO360_LOGGER_RETENTION_SECS must be at least 1".into());
        }
        if self.retention_bytes < 4096 {
            return Err("IO360_LOGGER_RETENTION_BYTES must be at least 4096".into());
        }
        self.limits.validate()
    }
}

/// Why the logger tier stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the event log and serves the logger API on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let verifier = config.tier_auth.verifier("logger").map_err(Error::Config)?;
    let telemetry = Telemetry::new("logger");
    shutdown.attach(&telemetry);
    let log = EventLog::open(
        &config.data_dir,
        Retention {
            max_age: Duration::from_secs(config.retention_secs),
            max_bytes: config.retention_bytes,
        },
    )?;
    log.register_metrics(&telemetry);
    let log = Arc::new(log);
    record_self(&log, Kind::TierStarted).await;
    let sweeper = log.clone();
    let every = Duration::from_millis(config.sweep_ms.max(10));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            if let Err(e) = sweeper.sweep().await {
                tracing::error!(error = %e, "retention failed");
            }
        }
    });
    telemetry.ready.set(true);
    let router = telemetry.instrument(config.limits.apply(
        "logger",
        api::router(
            log.clone(),
            config.keep_addresses,
            shutdown.clone(),
            &verifier,
        ),
    ));
    io360_common::serve::serve("logger", listener, router, shutdown).await?;
    record_self(&log, Kind::TierStopped).await;
    log.close();
    Ok(())
}

/// The logger records its own start and stop directly.
async fn record_self(log: &EventLog, kind: Kind) {
    let mut e = Event::now(kind, "logger", "system");
    match e.validate("event", false) {
        Ok(nanos) => {
            if let Err(p) = log.append(vec![(nanos, e)]).await {
                tracing::warn!(problem = %p, "cannot record the logger's own {kind}");
            }
        }
        Err(p) => tracing::warn!(problem = %p, "invalid self event"),
    }
}
