//! io360's notify tier: emails readers about replies they subscribed to.
//!
//! Notify follows the store's change feed from a position it keeps in its own database
//! ([`outbox`]); each new comment becomes rows in a durable outbox, one per confirmed
//! subscriber, written in the same batch as the feed position past it. A sender ([`sender`])
//! drains the outbox to an SMTP server, batching replies into digests, and retries with
//! backoff while the server is away. Links in the messages ([`link`]) are signed, so
//! confirming and unsubscribing need no table of issued links. Nothing here runs on a
//! request's path: a post never waits for a mail server.
//!
//! Webhooks ([`hooks`], [`webhook`]) ride the same feed: each change a registered endpoint
//! asked for becomes a delivery queued in the same batch, then a signed POST retried with
//! backoff. Notify runs for webhooks alone when no mail server is configured.
//!
//! The public surface is [`Config`], [`serve`], the wire types in [`api`] and
//! [`NotifyClient`].

pub mod api;
mod follow;
pub mod hooks;
pub mod letter;
pub mod link;
pub mod outbox;
pub mod phrases;
pub mod sender;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use io360_common::client::{ClientError, TierClient};
use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use io360_store::StoreClient;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use tokio::net::TcpListener;

pub use letter::Letters;
pub use link::Signer;
pub use outbox::Outbox;
pub use phrases::Phrases;
pub use sender::Sender;
pub use webhook::{Deliverer, WebhookConfig};

/// Configuration of the notify tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Base URL of the store tier, whose change feed notify follows.
    #[arg(long, env = "IO360_STORE_URL", default_value = "http://127.0.0.1:8084")]
    pub store_url: String,

    /// Where subscriptions, the outbox and the feed position are kept. One process at a time.
    #[arg(long, env = "IO360_DATA_DIR", default_value = "./data/notify")]
    pub data_dir: PathBuf,

    /// The mail server: `smtp://[user:pass@]host[:port]` (plain, port 25),
    /// `smtp://...?tls=required` (STARTTLS or fail, port 587), `smtp://...?tls=opportunistic`
    /// (STARTTLS when offered), `smtps://...` (TLS from the first byte, port 465). User and
    /// password are percent-decoded.
    #[arg(long, env = "IO360_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// A file holding the user name to log in to the mail server with (instead of one in the
    /// URL); on Kubernetes, a Secret's key mounted as a file. Needs `--smtp-password-file`.
    #[arg(long, env = "IO360_SMTP_USERNAME_FILE")]
    pub smtp_username_file: Option<PathBuf>,

    /// A file holding the password that goes with `--smtp-username-file`.
    #[arg(long, env = "IO360_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,

    /// The sender of every message, e.g. `Comments <comments@example.org>`.
    #[arg(long, env = "IO360_NOTIFY_FROM")]
    pub from: Option<String>,

    /// A JSON file of the phrases messages are written in, over the English defaults (the
    /// keys and their defaults are in docs/CONTRACTS.md): a site in another language gives
    /// its own, with `lang` its language tag.
    #[arg(long, env = "IO360_NOTIFY_STRINGS_FILE")]
    pub strings_file: Option<PathBuf>,

    /// The site's public base URL; links in messages point under it.
    #[arg(long, env = "IO360_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Addresses (comma-separated) emailed when a comment is held for moderation, with
    /// one-time approve and delete links.
    #[arg(long, env = "IO360_NOTIFY_MODERATORS", value_delimiter = ',')]
    pub moderators: Vec<String>,

    /// Email each moderator a summary of the comments waiting for moderation once a day
    /// (every `--summary-secs`): how many, and the oldest with one-time approve links. None
    /// is sent when nothing waits.
    #[arg(long, env = "IO360_NOTIFY_DAILY_SUMMARY", default_value_t = false)]
    pub daily_summary: bool,

    /// Seconds between two moderators' summaries.
    #[arg(long, env = "IO360_NOTIFY_SUMMARY_SECS", default_value_t = 86_400)]
    pub summary_secs: u64,

    /// Comments listed in a summary (the oldest first); the rest are counted.
    #[arg(long, env = "IO360_NOTIFY_SUMMARY_LIST", default_value_t = 20)]
    pub summary_list: usize,

    /// Seconds replies wait before they go, so a busy thread sends one digest.
    #[arg(long, env = "IO360_NOTIFY_DIGEST_SECS", default_value_t = 300)]
    pub digest_secs: u64,

    /// The secret links are signed with (at least 16 bytes). Unset: one kept in the data
    /// directory (file `link-secret`), made on first start.
    #[arg(long, env = "IO360_NOTIFY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Webhooks: signed POSTs of the site's events to registered URLs.
    #[command(flatten)]
    pub webhooks: WebhookConfig,

    /// Where audit events (this tier's start and stop) go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// Requests handled at once, and how long each may take.
    #[command(flatten)]
    pub limits: io360_common::limits::Limits,

    /// This tier's credential (for the store) and the keyring logic's credential is checked
    /// against.
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

/// Why the notify tier stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("invalid notify configuration: {0}")]
    Config(String),
    /// The database could not be opened.
    #[error("{0}")]
    Outbox(#[from] outbox::OutboxError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Config {
    /// Whether notifications are configured at all (`io360 up` starts notify only then):
    /// a mail server, or webhooks.
    pub fn enabled(&self) -> bool {
        self.smtp_url.is_some() || self.webhooks.enabled
    }

    fn letters(&self, secret: &[u8]) -> Result<Letters, ServeError> {
        let bad = |m: String| ServeError::Config(m);
        let from = self
            .from
            .as_deref()
            .ok_or_else(|| bad("--from (IO360_NOTIFY_FROM) is required".into()))?
            .parse()
            .map_err(|e| bad(format!("--from (IO360_NOTIFY_FROM) is not an address: {e}")))?;
        let public_url = self
            .public_url
            .as_deref()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| {
                bad("--public-url (IO360_PUBLIC_URL) must be the site's http(s):// URL".into())
            })?
            .trim_end_matches('/')
            .to_owned();
        let phrases = match &self.strings_file {
            Some(path) => Phrases::load(path)
                .map_err(|e| bad(format!("--strings-file (IO360_NOTIFY_STRINGS_FILE): {e}")))?,
            None => Phrases::default(),
        };
        Ok(Letters {
            from,
            public_url,
            signer: Signer::new(secret),
            phrases,
        })
    }

    /// The mail server connection `--smtp-url` and the login files describe.
    pub fn mailer(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, ServeError> {
        let url = self
            .smtp_url
            .as_deref()
            .ok_or_else(|| ServeError::Config("--smtp-url (IO360_SMTP_URL) is required".into()))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| {
                ServeError::Config(format!(
                    "--smtp-url (IO360_SMTP_URL) must be smtp:// or smtps://: {e}"
                ))
            })?
            .timeout(Some(Duration::from_secs(30)));
        if let Some(login) = self.smtp_login()? {
            builder = builder.credentials(login);
        }
        Ok(builder.build())
    }

    /// The login from `--smtp-username-file` and `--smtp-password-file`: both or neither.
    fn smtp_login(
        &self,
    ) -> Result<Option<lettre::transport::smtp::authentication::Credentials>, ServeError> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    ServeError::Config(format!("{flag}: cannot read {}: {e}", path.display()))
                })
        };
        match (&self.smtp_username_file, &self.smtp_password_file) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => {
                let user = read("--smtp-username-file (IO360_SMTP_USERNAME_FILE)", user)?;
                let password = read("--smtp-password-file (IO360_SMTP_PASSWORD_FILE)", password)?;
                if user.is_empty() {
                    return Err(ServeError::Config(
                        "--smtp-username-file (IO360_SMTP_USERNAME_FILE) is empty".into(),
                    ));
                }
                Ok(Some(lettre::transport::smtp::authentication::Credentials::new(user, password)))
            }
            _ => Err(ServeError::Config(
                "--smtp-username-file and --smtp-password-file (IO360_SMTP_USERNAME_FILE, IO360_SMTP_PASSWORD_FILE) go together: set both or neither".into(),
            )),
        }
    }

    fn secret(&self) -> Result<Vec<u8>, ServeError> {
        if let Some(s) = &self.secret {
            if s.len() < 16 {
                return Err(ServeError::Config(
                    "--secret (IO360_NOTIFY_SECRET) must be at least 16 bytes".into(),
                ));
            }
            return Ok(s.as_bytes().to_vec());
        }
        let path = self.data_dir.join("link-secret");
        if let Ok(s) = std::fs::read_to_string(&path)
            && s.trim().len() >= 16
        {
            return Ok(s.trim().as_bytes().to_vec());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        // From the operating system's generator: whoever could guess this key could
        // confirm, unsubscribe and moderate with links of their own.
        let bytes: [u8; 32] = rand::random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &secret)?;
        Ok(secret.into_bytes())
    }
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Follows the store's feed, sends what it queues, and serves notify's API on `listener`
/// until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    config.limits.validate().map_err(ServeError::Config)?;
    config.audit.validate().map_err(ServeError::Config)?;
    let moderators: Vec<String> = config
        .moderators
        .iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    for m in &moderators {
        api::check_email(m).map_err(|p| {
            ServeError::Config(format!(
                "--moderators (IO360_NOTIFY_MODERATORS): `{m}` {}",
                p.title
            ))
        })?;
    }
    config.webhooks.validate().map_err(ServeError::Config)?;
    if config.daily_summary && moderators.is_empty() {
        return Err(ServeError::Config(
            "--daily-summary (IO360_NOTIFY_DAILY_SUMMARY) needs moderators to send it to: set \
             IO360_NOTIFY_MODERATORS"
                .into(),
        ));
    }
    let email = config.smtp_url.is_some();
    let secret = config.secret()?;
    let mail = if email {
        Some((config.mailer()?, Arc::new(config.letters(&secret)?)))
    } else {
        None
    };
    let digest = Duration::from_secs(config.digest_secs);
    let telemetry = Telemetry::new("notify");
    shutdown.attach(&telemetry);
    let credential = config
        .tier_auth
        .credential("notify")
        .map_err(ServeError::Config)?;
    let verifier = config
        .tier_auth
        .verifier("notify")
        .map_err(ServeError::Config)?;
    let audit = io360_logger::Shipper::new("notify", &config.audit, &config.tier_auth, &telemetry)
        .map_err(ServeError::Config)?;
    let dir = config.data_dir.clone();
    let outbox = tokio::task::spawn_blocking(move || Outbox::open(&dir))
        .await
        .map_err(std::io::Error::other)??
        .with_webhook_queue(config.webhooks.queue);
    let store = StoreClient::new(&config.store_url, credential);

    let metrics = sender::SendMetrics::default();
    telemetry.register(
        "notify_queued",
        "Notifications waiting in the outbox",
        metrics.queued.clone(),
    );
    telemetry.register(
        "notify_sent",
        "Messages the mail server accepted",
        metrics.sent.clone(),
    );
    telemetry.register(
        "notify_retried",
        "Sends the mail server refused for now, to be retried",
        metrics.retried.clone(),
    );
    telemetry.register(
        "notify_failed",
        "Messages refused for good (not retried)",
        metrics.failed.clone(),
    );
    let hook_metrics = webhook::HookMetrics::default();
    telemetry.register(
        "notify_webhook_queued",
        "Webhook deliveries waiting",
        hook_metrics.queued.clone(),
    );
    telemetry.register(
        "notify_webhook_sent",
        "Webhook deliveries a receiver acknowledged with 2xx",
        hook_metrics.sent.clone(),
    );
    telemetry.register(
        "notify_webhook_retried",
        "Webhook attempts that failed, to be retried",
        hook_metrics.retried.clone(),
    );
    telemetry.register(
        "notify_webhook_failed",
        "Webhook deliveries given up after their last attempt or dropped from a full queue",
        hook_metrics.failed.clone(),
    );
    let position = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    telemetry.register(
        "notify_feed_position",
        "Last change-feed position turned into notifications",
        position.clone(),
    );
    tracing::info!(
        store = %config.store_url,
        digest_secs = config.digest_secs,
        email,
        allow_private_webhooks = config.webhooks.allow_private,
        "notify starting"
    );

    let wake = Arc::new(tokio::sync::Notify::new());
    let wake_hooks = Arc::new(tokio::sync::Notify::new());
    let follow = tokio::spawn(follow::run(
        outbox.clone(),
        store,
        Arc::new(moderators.clone()),
        follow::Wakes {
            email: wake.clone(),
            hooks: wake_hooks.clone(),
            dropped: hook_metrics.failed.clone(),
        },
        telemetry.ready.clone(),
        position,
        shutdown.clone(),
    ));
    let send = mail.map(|(mailer, letters)| {
        tokio::spawn(
            Sender {
                outbox: outbox.clone(),
                mailer,
                letters,
                digest,
                metrics,
            }
            .run(wake.clone(), shutdown.clone()),
        )
    });
    let summary = (email && config.daily_summary && !moderators.is_empty()).then(|| {
        tokio::spawn(summarize(
            outbox.clone(),
            moderators.clone(),
            config.summary_secs.max(1) as i64,
            config.summary_list,
            wake.clone(),
            shutdown.clone(),
        ))
    });
    let deliver = tokio::spawn(
        Deliverer::new(outbox.clone(), config.webhooks.clone(), hook_metrics)
            .run(wake_hooks.clone(), shutdown.clone()),
    );
    let wiring = api::Wiring {
        signer: Signer::new(&secret),
        wake,
        wake_hooks,
        email,
        hooks: config.webhooks.clone(),
    };
    let router = telemetry.instrument(
        config
            .limits
            .apply("notify", api::router(outbox, wiring, &verifier)),
    );
    let served = audit
        .around(io360_common::serve::serve(
            "notify", listener, router, shutdown,
        ))
        .await;
    follow.abort();
    if let Some(send) = send {
        send.abort();
    }
    deliver.abort();
    if let Some(summary) = summary {
        summary.abort();
    }
    served?;
    Ok(())
}

/// Queues the moderators' summary whenever one falls due, until shutdown.
async fn summarize(
    outbox: Outbox,
    moderators: Vec<String>,
    period: i64,
    list: usize,
    wake: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
) {
    let moderators = Arc::new(moderators);
    loop {
        let o = outbox.clone();
        let m = moderators.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due_in = tokio::task::spawn_blocking(move || {
            if let Some(queued) = o.queue_summary(&m, now, period, list)?
                && queued > 0
            {
                tracing::info!(queued, "moderators' summary queued");
                return Ok((true, period));
            }
            o.summary_due_in(now, period).map(|d| (false, d))
        })
        .await;
        let wait = match due_in {
            Ok(Ok((queued, due_in))) => {
                if queued {
                    wake.notify_one();
                }
                due_in
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot queue the moderators' summary");
                10
            }
            Err(_) => 10,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait.clamp(1, 3600) as u64)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// How logic calls notify.
#[derive(Debug, Clone)]
pub struct NotifyClient {
    inner: TierClient,
}

impl NotifyClient {
    /// A client of the notify tier at `base`, calling with `credential`.
    pub fn new(base: &str, credential: io360_common::auth::Credential) -> Self {
        NotifyClient {
            inner: TierClient::new("notify", base, credential),
        }
    }

    /// Asks for a subscription (a confirmation message goes out).
    pub async fn subscribe(
        &self,
        r: &api::SubscribeRequest,
    ) -> Result<api::SubscriptionState, ClientError> {
        self.inner.post("/notify/v1/subscriptions", r).await
    }

    /// Follows a confirmation link.
    pub async fn confirm(&self, token: &str) -> Result<api::SubscriptionState, ClientError> {
        let r = api::TokenRequest {
            token: token.into(),
        };
        self.inner.post("/notify/v1/confirm", &r).await
    }

    /// Follows an unsubscribe link.
    pub async fn unsubscribe(&self, token: &str) -> Result<api::SubscriptionState, ClientError> {
        let r = api::TokenRequest {
            token: token.into(),
        };
        self.inner.post("/notify/v1/unsubscribe", &r).await
    }

    /// Uses a moderator's one-time link: answers what it is for, once.
    pub async fn moderate(&self, token: &str) -> Result<api::Moderation, ClientError> {
        let r = api::TokenRequest {
            token: token.into(),
        };
        self.inner.post("/notify/v1/moderate", &r).await
    }

    /// Every subscription of an address.
    pub async fn export(&self, email: &str) -> Result<api::AddressExport, ClientError> {
        let r = api::AddressRequest {
            email: email.into(),
        };
        self.inner.post("/notify/v1/addresses/export", &r).await
    }

    /// Every registered webhook endpoint.
    pub async fn webhooks(&self) -> Result<api::Webhooks, ClientError> {
        self.inner.get("/notify/v1/webhooks").await
    }

    /// Registers a webhook endpoint; the answer carries its secret, shown this once.
    pub async fn register_webhook(
        &self,
        r: &api::WebhookRequest,
    ) -> Result<api::Webhook, ClientError> {
        self.inner.post("/notify/v1/webhooks", r).await
    }

    /// Removes a webhook endpoint with its queue and log.
    pub async fn delete_webhook(&self, id: &str) -> Result<api::Deleted, ClientError> {
        self.inner
            .send_json(
                reqwest::Method::DELETE,
                &format!("/notify/v1/webhooks/{id}"),
                &(),
            )
            .await
    }

    /// A webhook endpoint's delivery log.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<api::DeliveryLog, ClientError> {
        self.inner
            .get(&format!("/notify/v1/webhooks/{id}/deliveries"))
            .await
    }

    /// Erases an address.
    pub async fn erase(&self, email: &str) -> Result<api::Erased, ClientError> {
        let r = api::AddressRequest {
            email: email.into(),
        };
        self.inner.post("/notify/v1/addresses/erase", &r).await
    }
}
