//! Everything a request handler needs, built once at start.

use std::sync::Arc;
use std::time::Duration;

use io360_common::serve::Shutdown;
use io360_common::telemetry::{Readiness, Telemetry};
use io360_store::StoreClient;
use moka::sync::Cache;

use crate::Config;
use crate::cache::ThreadCache;
use crate::limits::{FORGET_EVERY, Limit};
use crate::suspension::Suspension;
use crate::token::Keys;

/// Shared state of the logic tier: one `Arc`, so that handing it to a request (axum clones
/// the state for every one) is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: StoreClient,
    pub keys: Keys,
    pub cache: ThreadCache,
    pub suspension: Suspension,
    pub writes: Limit,
    pub reads: Limit,
    /// (client, thread, text hash) of recent posts, for the duplicate check.
    pub recent: Cache<(std::net::IpAddr, String, [u8; 32]), ()>,
    pub banned: Arc<Vec<String>>,
    /// Where audit events go.
    pub audit: io360_logger::Shipper,
    /// Banned authors and address ranges, refreshed from store.
    pub bans: crate::audit::BanList,
    /// The import slot and the running import's progress.
    pub imports: crate::import::Imports,
    /// The notify tier, when the site sends email notifications.
    pub notify: Option<io360_notify::NotifyClient>,
}

impl AppState {
    pub fn new(
        config: Config,
        telemetry: &Telemetry,
        credential: io360_common::auth::Credential,
        audit: io360_logger::Shipper,
    ) -> Self {
        let secret = config
            .signing_key
            .clone()
            .or_else(|| config.admin_token.clone())
            .unwrap_or_else(|| {
                tracing::warn!(
                    "neither IO360_SIGNING_KEY nor IO360_ADMIN_TOKEN is set: edit tokens are \
                     signed with a random key and stop working when this process restarts"
                );
                let bytes: [u8; 32] = rand::random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            });
        let (wpm, rpm) = if config.no_rate_limits {
            (0, 0)
        } else {
            (config.writes_per_minute, config.reads_per_minute)
        };
        let cache = ThreadCache::new(200_000);
        telemetry.register(
            "logic_cache_hits",
            "Thread reads answered from memory",
            cache.hits.clone(),
        );
        telemetry.register(
            "logic_cache_misses",
            "Thread reads that went to store",
            cache.misses.clone(),
        );
        let banned = config
            .banned_words
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        AppState(Arc::new(Shared {
            audit,
            bans: crate::audit::BanList::default(),
            imports: crate::import::Imports::new(),
            notify: config
                .notify_url
                .as_deref()
                .map(|u| io360_notify::NotifyClient::new(u, credential.clone())),
            store: StoreClient::new(&config.store_url, credential),
            keys: Keys::new(secret.as_bytes()),
            cache,
            suspension: Suspension::default(),
            writes: Limit::new("writes", wpm, config.writes_burst),
            reads: Limit::new("reads", rpm, rpm / 4),
            recent: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.duplicate_window.max(1)))
                .build(),
            banned: Arc::new(banned),
            config: Arc::new(config),
        }))
    }

    /// Starts the tasks that keep the cache, the suspension flag and the limits fresh.
    pub fn start_background(&self, shutdown: Shutdown, ready: Readiness) {
        tokio::spawn(
            self.cache
                .clone()
                .follow(self.store.clone(), shutdown.clone()),
        );
        let s = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait() => return,
                }
                match s.store.suspension().await {
                    Ok(sus) => {
                        s.suspension.set_manual(&sus);
                        ready.set(true);
                        match s.store.bans().await {
                            Ok(b) => s.bans.set(&b),
                            Err(e) => tracing::debug!(error = %e, "cannot read the bans"),
                        }
                    }
                    // Ready once the store has answered, and ready after: every logic pod
                    // shares the one store, so turning unready while it restarts (a rolling
                    // update) would take every pod out of the Service at once, where reads
                    // from the cache still answer and writes get their own 503.
                    Err(e) => tracing::debug!(error = %e, "cannot read the suspension flag"),
                }
            }
        });
        let s = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FORGET_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait() => return,
                }
                s.writes.forget_idle();
                s.reads.forget_idle();
            }
        });
    }
}
