//! io360's logic tier: the public comment API.
//!
//! Logic holds no state of its own: comments live in store, and what logic keeps in memory (a
//! cache of popular threads, rate-limit counters) can be lost at any time. It checks and
//! renders what readers send (Markdown to sanitized HTML, once, at write time), applies the
//! abuse limits and moderation rules, and answers reads from its cache, which the store's
//! change feed keeps fresh.

mod admin;
mod api;
mod atom;
mod audit;
mod cache;
mod import;
mod limits;
mod notify;
mod render;
mod state;
mod suspension;
mod token;
mod webhooks;

use std::time::Duration;

use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use tokio::net::TcpListener;

pub use render::render;
pub use suspension::SuspensionState;
pub use token::Keys;

/// How held comments are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Moderation {
    /// Every comment is published at once. Spelled `none` (as in the CommentCluster, where
    /// an unquoted `off` would read as a boolean to YAML 1.1 readers); `off` is still taken.
    #[value(name = "none", alias = "off")]
    Off,
    /// Every comment waits for a moderator.
    All,
    /// An author's first comment waits; once one is approved, the rest are published at once.
    FirstTime,
}

/// Configuration of the logic tier. Every limit can be changed; defaults suit a small site.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Base URL of the store tier.
    #[arg(long, env = "IO360_STORE_URL", default_value = "http://127.0.0.1:8084")]
    pub store_url: String,

    /// Base URL of the notify tier, when the site sends email notifications; unset: the
    /// `/api/v1/notifications/...` routes answer 404.
    #[arg(long, env = "IO360_NOTIFY_URL")]
    pub notify_url: Option<String>,

    /// Whether the notify tier sends email (it may run for webhooks alone). With a notify
    /// URL and this on, `/api/v1/status` says `notifications: true` and the widget offers
    /// "Email me replies".
    #[arg(long, env = "IO360_NOTIFY_EMAIL", default_value_t = true, action = clap::ArgAction::Set)]
    pub notify_email: bool,

    /// Bearer token for the admin API. Without one (and no token file), the admin API is
    /// closed.
    #[arg(long, env = "IO360_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A file holding the admin token (a mounted Secret), read at start when `--admin-token`
    /// is unset; a trailing newline is not part of the token.
    #[arg(long, env = "IO360_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,

    /// Key that signs edit tokens; derived from the admin token when unset, so every replica
    /// given the same admin token agrees.
    #[arg(long, env = "IO360_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,

    /// How long an author may edit or delete a comment, in seconds.
    #[arg(long, env = "IO360_EDIT_WINDOW", default_value_t = 900)]
    pub edit_window: u64,

    /// Moderation mode.
    #[arg(long, env = "IO360_MODERATION", value_enum, default_value_t = Moderation::Off)]
    pub moderation: Moderation,

    /// Origins allowed to embed comments (CORS), comma-separated, e.g.
    /// `https://blog.example.org`. Empty: same origin only.
    #[arg(long, env = "IO360_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Header set by a trusted reverse proxy with the client's address (e.g.
    /// `X-Forwarded-For`). Unset: the connection's address is the client's.
    #[arg(long, env = "IO360_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Switches the per-client rate limits off (for benchmarks and tests), as Isso's guard can
    /// (`true`, `1`, `yes` or `on`).
    #[arg(long, env = "IO360_NO_RATE_LIMITS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_rate_limits: bool,

    /// Writes (posts, edits, votes) per client per minute.
    #[arg(long, env = "IO360_WRITES_PER_MINUTE", default_value_t = 10)]
    pub writes_per_minute: u32,

    /// Burst of writes allowed at once.
    #[arg(long, env = "IO360_WRITES_BURST", default_value_t = 5)]
    pub writes_burst: u32,

    /// Reads per client per minute.
    #[arg(long, env = "IO360_READS_PER_MINUTE", default_value_t = 1200)]
    pub reads_per_minute: u32,

    /// Longest comment, in bytes.
    #[arg(long, env = "IO360_MAX_TEXT_BYTES", default_value_t = 20_000)]
    pub max_text_bytes: usize,

    /// Most links in one comment.
    #[arg(long, env = "IO360_MAX_LINKS", default_value_t = 5)]
    pub max_links: usize,

    /// Words that get a comment refused, comma-separated, matched case-insensitively.
    #[arg(long, env = "IO360_BANNED_WORDS", value_delimiter = ',')]
    pub banned_words: Vec<String>,

    /// How long the same text from the same client on the same thread counts as a duplicate,
    /// in seconds.
    #[arg(long, env = "IO360_DUPLICATE_WINDOW", default_value_t = 600)]
    pub duplicate_window: u64,

    /// The site's public URL, for links in Atom feeds.
    #[arg(
        long,
        env = "IO360_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,

    /// Name of the control ConfigMap to watch for suspension (on Kubernetes).
    #[arg(long, env = "IO360_CONTROL_CONFIGMAP")]
    pub control_configmap: Option<String>,

    /// Namespace of the control ConfigMap; default: the kubeconfig's namespace.
    #[arg(long, env = "IO360_CONTROL_NAMESPACE")]
    pub control_namespace: Option<String>,

    /// The largest upload `POST /api/v1/admin/import` takes, in bytes (the frontend, where it
    /// forwards the upload, reads the same setting).
    #[arg(long, env = "IO360_IMPORT_MAX_BYTES", default_value_t = DEFAULT_IMPORT_MAX_BYTES)]
    pub import_max_bytes: u64,

    /// The longest an import's request may take, upload and writing, in seconds (in place of
    /// the API's request timeout, which would cut a large upload).
    #[arg(long, env = "IO360_IMPORT_TIMEOUT_SECS", default_value_t = DEFAULT_IMPORT_TIMEOUT_SECS)]
    pub import_timeout_secs: u64,

    /// Where an import sorts its comments (and keeps an uploaded Isso database) while it
    /// runs: about the size of the upload at most, removed at the end. Default: the system's
    /// temporary directory.
    #[arg(long, env = "IO360_IMPORT_SCRATCH_DIR")]
    pub import_scratch_dir: Option<std::path::PathBuf>,

    /// Where audit events go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// Requests handled at once, and how long each may take.
    #[command(flatten)]
    pub limits: io360_common::limits::Limits,

    /// This tier's credential (for the store and the logger) and the keyring the frontend's
    /// credential is checked against: logic answers only the frontend.
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

/// The default bound of an import's upload: 4 GiB.
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 4 << 30;

/// The default bound of an import's request: 4 hours.
pub const DEFAULT_IMPORT_TIMEOUT_SECS: u64 = 4 * 3600;

impl Config {
    /// Where an import's scratch files go.
    pub fn import_scratch_dir(&self) -> std::path::PathBuf {
        self.import_scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Reads the admin token from `admin_token_file` when no token was given directly.
    pub fn read_admin_token_file(&mut self) -> Result<(), String> {
        if self.admin_token.is_none()
            && let Some(path) = &self.admin_token_file
        {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "IO360_ADMIN_TOKEN_FILE: cannot read {}: {e}",
                    path.display()
                )
            })?;
            self.admin_token = Some(text.trim_end_matches(['\r', '\n']).to_string());
        }
        Ok(())
    }

    /// Checks the configuration and says what is wrong in a sentence.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.store_url.starts_with("http://") || self.store_url.starts_with("https://")) {
            return Err(format!(
                "IO360_STORE_URL must be an http(s) URL, not `{}`",
                self.store_url
            ));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("IO360_ADMIN_TOKEN must be at least 16 characters".into());
        }
        if self.import_max_bytes == 0 || self.import_timeout_secs == 0 {
            return Err(
                "IO360_IMPORT_MAX_BYTES and IO360_IMPORT_TIMEOUT_SECS must be at least 1".into(),
            );
        }
        if self.max_text_bytes == 0 {
            return Err("IO360_MAX_TEXT_BYTES must be at least 1".into());
        }
        self.audit.validate()?;
        self.limits.validate()?;
        for o in &self.allowed_origins {
            if http::HeaderValue::from_str(o).is_err() || !o.contains("://") {
                return Err(format!(
                    "IO360_ALLOWED_ORIGINS: `{o}` is not an origin like https://example.org"
                ));
            }
        }
        Ok(())
    }
}

/// Why the logic tier stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The control ConfigMap could not be read at start.
    #[error(transparent)]
    Control(#[from] io360_control::Error),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the public API on `listener` until `shutdown`.
pub async fn serve(
    mut config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    config.read_admin_token_file().map_err(ServeError::Config)?;
    config.validate().map_err(ServeError::Config)?;
    let telemetry = Telemetry::new("logic");
    shutdown.attach(&telemetry);
    let control = match &config.control_configmap {
        Some(name) if !name.trim().is_empty() => Some(
            io360_control::start(io360_control::Target {
                namespace: config.control_namespace.clone(),
                name: name.clone(),
            })
            .await?,
        ),
        _ => None,
    };
    let limits = config.limits.clone();
    let credential = config
        .tier_auth
        .credential("logic")
        .map_err(ServeError::Config)?;
    let verifier = config
        .tier_auth
        .verifier("logic")
        .map_err(ServeError::Config)?;
    let audit = io360_logger::Shipper::new("logic", &config.audit, &config.tier_auth, &telemetry)
        .map_err(ServeError::Config)?;
    let state = state::AppState::new(config, &telemetry, credential, audit);
    if let Some(control) = control {
        // The first state was read before serving: a pod started while suspended starts
        // suspended.
        state
            .suspension
            .follow_control(control, state.audit.clone(), shutdown.clone());
    }
    let audit = state.audit.clone();
    audit
        .around(async move {
            state.start_background(shutdown.clone(), telemetry.ready.clone());
            let router = telemetry.instrument(api::router(state, &verifier, &limits));
            io360_common::serve::serve("logic", listener, router, shutdown).await
        })
        .await?;
    Ok(())
}

/// How long a write is refused after suspension, as told to clients in `Retry-After`.
pub const SUSPENDED_RETRY: Duration = Duration::from_secs(60);
