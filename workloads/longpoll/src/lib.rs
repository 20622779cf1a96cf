//! io360's longpoll tier: holds browsers' polls and event streams and answers them.
//!
//! `GET /v1/poll` and `GET /v1/events` are served by a small purpose-built HTTP/1.1 front
//! ([`http`]) so that a held poll costs little more than its socket. The [`hub`] keeps each
//! thread's recent events and its waiters; [`follow`] feeds it every change from sync, in
//! feed order; a poll or stream whose position the hub cannot cover is filled from sync, or
//! told to reset when nothing can cover it ([`poll`], [`sse`]).
//!
//! The public surface is [`Config`] and [`serve`].

mod event;
mod follow;
mod http;
mod hub;
mod metrics;
mod poll;
mod server;
mod sse;
mod suspension;

use std::sync::Arc;
use std::time::Duration;

use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use io360_sync::SyncClient;
use tokio::net::TcpListener;

/// Configuration of the longpoll tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Base URL(s) of the sync tier, comma-separated; any replica can serve any instance.
    #[arg(long, env = "IO360_SYNC_URL", default_value = "http://127.0.0.1:8085")]
    pub sync_url: String,

    /// Base URL of logic, asked every second whether comments are suspended, so every open
    /// page learns of a suspension or resumption at once. Without it, pages learn it from
    /// their own status checks.
    #[arg(long, env = "IO360_LOGIC_URL")]
    pub logic_url: Option<String>,

    /// Origins allowed to read live updates from a browser (comma-separated; `*` for any).
    #[arg(long, env = "IO360_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// How long a poll is held when nothing happens, in seconds (jittered by ±10%).
    #[arg(long, env = "IO360_LONGPOLL_HOLD_SECS", default_value_t = 25.0)]
    pub hold_secs: f64,

    /// Most polls and event streams held at once; 0 sizes it from the open-file limit.
    #[arg(long, env = "IO360_LONGPOLL_MAX_HELD", default_value_t = 0)]
    pub max_held: usize,

    /// Most recent events kept per thread.
    #[arg(long, env = "IO360_LONGPOLL_HISTORY_PER_THREAD", default_value_t = 64)]
    pub history_per_thread: usize,

    /// Most recent events kept in all.
    #[arg(long, env = "IO360_LONGPOLL_HISTORY_EVENTS", default_value_t = 100_000)]
    pub history_events: usize,

    /// Largest gap, in events, caught up for a client; a client further behind gets a reset
    /// and reloads the thread from the API.
    #[arg(long, env = "IO360_LONGPOLL_MAX_CATCH_UP", default_value_t = 500)]
    pub max_catch_up: u64,

    /// Seconds over which held polls are answered on shutdown.
    #[arg(long, env = "IO360_LONGPOLL_DRAIN_SECS", default_value_t = 5.0)]
    pub drain_secs: f64,

    /// Where audit events (this tier's start and stop) go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// This tier's credential, for sync and the logger (longpoll's own routes are public).
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

/// Why the longpoll tier stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("invalid longpoll configuration: {0}")]
    Config(String),
}

/// Most events one answer carries.
const BATCH: usize = 100;

fn open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur as usize)
}

impl Config {
    fn validate(&self) -> Result<(), ServeError> {
        let urls: Vec<&str> = self
            .sync_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if urls.is_empty()
            || urls
                .iter()
                .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ServeError::Config(format!(
                "--sync-url (IO360_SYNC_URL) must be one or more http:// URLs, comma-separated, not `{}`",
                self.sync_url
            )));
        }
        if let Some(u) = &self.logic_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ServeError::Config(format!(
                "--logic-url (IO360_LOGIC_URL) must be an http:// URL, not `{u}`"
            )));
        }
        if !(self.hold_secs > 0.0 && self.hold_secs <= 300.0) {
            return Err(ServeError::Config(
                "--hold-secs must be more than 0 and at most 300".into(),
            ));
        }
        if !(self.drain_secs >= 0.0 && self.drain_secs <= 300.0) {
            return Err(ServeError::Config(
                "--drain-secs must be from 0 to 300".into(),
            ));
        }
        if self.history_per_thread == 0 || self.history_events == 0 {
            return Err(ServeError::Config(
                "--history-per-thread and --history-events must be at least 1".into(),
            ));
        }
        self.audit.validate().map_err(ServeError::Config)
    }
}

/// Follows sync and serves live updates on `listener` until `shutdown`, then answers held
/// polls and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    config.validate()?;
    let max_held = match config.max_held {
        0 => open_file_limit()
            .map(|n| n.saturating_sub(256).max(64))
            .unwrap_or(10_000),
        n => n,
    };
    let telemetry = Telemetry::new("longpoll");
    shutdown.attach(&telemetry);
    let credential = config
        .tier_auth
        .credential("longpoll")
        .map_err(ServeError::Config)?;
    let audit =
        io360_logger::Shipper::new("longpoll", &config.audit, &config.tier_auth, &telemetry)
            .map_err(ServeError::Config)?;
    let metrics = metrics::Metrics::default();
    metrics.register(&telemetry);
    metrics.held_limit.set(max_held as i64);
    let hub = Arc::new(hub::Hub::new(
        hub::Limits {
            per_thread: config.history_per_thread,
            events: config.history_events,
            batch: BATCH,
        },
        http::Origins::parse(&config.allowed_origins),
        metrics,
    ));
    let logic = config
        .logic_url
        .as_deref()
        .map(|u| io360_common::client::TierClient::new("logic", u, credential.clone()));
    let sync = SyncClient::new(&[config.sync_url.as_str()], credential);
    let ctx = Arc::new(server::Ctx {
        hub: hub.clone(),
        fills: poll::GapFills::new(hub.clone(), sync.clone(), config.max_catch_up),
        shutdown: shutdown.clone(),
        telemetry: telemetry.clone(),
        max_held,
        hold: Duration::from_secs_f64(config.hold_secs),
        drain: Duration::from_secs_f64(config.drain_secs),
        write_timeout: Duration::from_secs(10),
        suspension: tokio::sync::watch::Sender::new(None),
        logic: logic.clone(),
        doubters: parking_lot::Mutex::new(Vec::new()),
    });
    server::connect_hub(&ctx);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(tier = "longpoll", %addr, max_held, "listening");
    }
    let follower = tokio::spawn(follow::run(
        hub,
        sync,
        telemetry.ready.clone(),
        shutdown.clone(),
    ));
    let watcher = logic.map(|l| tokio::spawn(suspension::follow(ctx.clone(), l)));
    audit.around(server::accept_loop(ctx, listener)).await;
    follower.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    Ok(())
}
