//! io360's frontend tier: the site's pages, always up, with their comments inside.
//!
//! The frontend serves a directory of static files from memory (every representation
//! prepared in advance, reloaded when the directory changes), splices a read-only snapshot of
//! each page's comments into the page, serves the embed widget (`/embed.js`, `/embed.css`),
//! and, where it is the only public face (`io360 up`), forwards `/api` to logic and `/v1` to
//! longpoll. Nothing a dynamic tier does can slow or fail a page: snapshots refresh in the
//! background, stale snapshots are served when logic is down, and under load the dynamic
//! routes are refused first.
//!
//! The public surface is [`Config`], [`serve`] and [`Error`].

mod assets;
mod clients;
mod fast;
mod marker;
mod page;
mod proxy;
mod respond;
mod shed;
mod site;
mod snapshot;
mod suspension;
mod watch;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderValue, Method, StatusCode, header};
use io360_common::Problem;
use io360_common::client::TierClient;
use io360_common::serve::Shutdown;
use io360_common::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use crate::site::{Entry, Lookup, PathRefused, Site};
use crate::snapshot::{SnapshotMetrics, Snapshots};
use crate::suspension::Suspension;

pub use crate::site::LoadError;
pub use crate::suspension::SuspensionState;

/// Configuration of the frontend tier.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The site's static files. Unset: the demo site built into io360.
    #[arg(long = "site-dir", env = "IO360_SITE_DIR")]
    pub site_dir: Option<PathBuf>,

    /// Base URL of logic: comment snapshots, suspension status, and where `/api` and `/admin`
    /// are forwarded. Unset: pages are served without snapshots and `/api` answers 503.
    #[arg(long, env = "IO360_LOGIC_URL")]
    pub logic_url: Option<String>,

    /// Base URL of longpoll, where `/v1` is forwarded. Unset: `/v1` answers 503 (on
    /// Kubernetes an Ingress routes `/v1` to longpoll directly).
    #[arg(long, env = "IO360_LONGPOLL_URL")]
    pub longpoll_url: Option<String>,

    /// How old a snapshot may get before a page request triggers a background refresh.
    #[arg(long, env = "IO360_SNAPSHOT_REFRESH_MS", default_value_t = 1000)]
    pub snapshot_refresh_ms: u64,

    /// Longest wait for logic when refreshing one snapshot.
    #[arg(long, env = "IO360_SNAPSHOT_TIMEOUT_MS", default_value_t = 2000)]
    pub snapshot_timeout_ms: u64,

    /// How often logic's suspension status is read.
    #[arg(long, env = "IO360_STATUS_INTERVAL_MS", default_value_t = 3000)]
    pub status_interval_ms: u64,

    /// Most static requests in flight before static requests get 503. Dynamic requests get
    /// 503 from half of this.
    #[arg(long, env = "IO360_MAX_STATIC_IN_FLIGHT", default_value_t = 8192)]
    pub max_static_in_flight: usize,

    /// Most `/api`, `/v1` and `/admin` requests in flight (held long polls count).
    #[arg(long, env = "IO360_MAX_DYNAMIC_IN_FLIGHT", default_value_t = 32768)]
    pub max_dynamic_in_flight: usize,

    /// Name of the control ConfigMap to watch for suspension (on Kubernetes). Unset: the
    /// suspension state comes from logic only.
    #[arg(long, env = "IO360_CONTROL_CONFIGMAP")]
    pub control_configmap: Option<String>,

    /// Namespace of the control ConfigMap; default: the kubeconfig's namespace.
    #[arg(long, env = "IO360_CONTROL_NAMESPACE")]
    pub control_namespace: Option<String>,

    /// `Cache-Control: max-age` for files other than pages, in seconds.
    #[arg(long, env = "IO360_ASSET_MAX_AGE", default_value_t = 3600)]
    pub asset_max_age: u64,

    /// Event-loop threads serving requests, each with its own connections; 0: one per core.
    #[arg(long, env = "IO360_FRONTEND_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Most connections one client address may hold open; 0: no limit (set 0 when an Ingress
    /// or load balancer is the only client the frontend sees).
    #[arg(long, env = "IO360_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,

    /// Most `/api`, `/admin` and `/v1` requests (held polls included) one client address may
    /// have open at once; 0: no limit (as above).
    #[arg(long, env = "IO360_MAX_REQUESTS_PER_CLIENT", default_value_t = 64)]
    pub max_requests_per_client: usize,

    /// File descriptors kept for page requests: when fewer than this are free, comment
    /// requests get 503 and idle connections are closed after 2 s. 0: a tenth of the limit.
    #[arg(long, env = "IO360_PAGE_RESERVE_FDS", default_value_t = 0)]
    pub page_reserve_fds: usize,

    /// Proxies in front of the frontend (a load balancer, an Ingress controller) whose
    /// `X-Forwarded-For` is believed, as comma-separated CIDRs (`10.0.0.0/8,192.168.1.7/32`).
    /// The client is then the rightmost address of the header not in this list. Empty: the
    /// header a client sends is replaced by the connection's address, so no client can claim
    /// another's address to slip past rate limits.
    #[arg(long, env = "IO360_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The largest upload forwarded to `POST /api/v1/admin/import`, in bytes (logic reads the
    /// same setting). Every other `/api` body is bounded at 256 KiB.
    #[arg(long, env = "IO360_IMPORT_MAX_BYTES", default_value_t = 4 << 30)]
    pub import_max_bytes: u64,

    /// The longest an import's request may take, upload and answer, in seconds; other `/api`
    /// requests get 30 s. An upload that sends nothing for 60 s is cut sooner.
    #[arg(long, env = "IO360_IMPORT_TIMEOUT_SECS", default_value_t = 4 * 3600)]
    pub import_timeout_secs: u64,

    /// Where audit events (this tier's start and stop) go.
    #[command(flatten)]
    pub audit: io360_logger::ShipperConfig,

    /// This tier's credential, presented to logic and the logger.
    #[command(flatten)]
    pub tier_auth: io360_common::auth::TierAuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            site_dir: None,
            logic_url: None,
            longpoll_url: None,
            snapshot_refresh_ms: 1000,
            snapshot_timeout_ms: 2000,
            status_interval_ms: 3000,
            max_static_in_flight: 8192,
            max_dynamic_in_flight: 32768,
            control_configmap: None,
            control_namespace: None,
            asset_max_age: 3600,
            threads: 0,
            max_connections_per_client: 256,
            max_requests_per_client: 64,
            page_reserve_fds: 0,
            trusted_proxies: Vec::new(),
            import_max_bytes: 4 << 30,
            import_timeout_secs: 4 * 3600,
            audit: io360_logger::ShipperConfig::default(),
            tier_auth: Default::default(),
        }
    }
}

/// Why the frontend could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not usable.
    #[error("invalid frontend configuration: {0}")]
    Config(String),
    /// The control ConfigMap could not be read at start.
    #[error(transparent)]
    Control(#[from] io360_control::Error),
    /// The site directory could not be loaded.
    #[error(transparent)]
    Site(#[from] LoadError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Where the site comes from.
#[derive(Debug, Clone)]
enum Source {
    Dir(PathBuf),
    Demo,
}

/// The running tier's state.
pub(crate) struct Frontend {
    source: Source,
    site: ArcSwap<Site>,
    snapshots: Arc<Snapshots>,
    suspension: Arc<Suspension>,
    widget: assets::Widget,
    not_found: site::Asset,
    api: proxy::Upstream,
    /// `POST /api/v1/admin/import`: streamed, under its own size and time bounds.
    import: proxy::Upstream,
    live: proxy::Upstream,
    clients: Arc<clients::Clients>,
    asset_max_age: u64,
    site_hit: Counter,
    site_miss: Counter,
    site_files: Gauge,
    reloads: Counter,
}

impl Frontend {
    /// Reads the site and swaps it in; warms the snapshots of its pages in the background.
    async fn load(self: &Arc<Self>) -> Result<usize, LoadError> {
        let this = self.clone();
        let site = tokio::task::spawn_blocking(move || {
            let raw = match &this.source {
                Source::Dir(d) => site::read_dir(d)?,
                Source::Demo => assets::demo_files(),
            };
            Ok::<_, LoadError>(Site::build(raw, &this.snapshots, this.asset_max_age))
        })
        .await
        .map_err(|e| LoadError::Read {
            path: PathBuf::from("."),
            source: std::io::Error::other(e),
        })??;
        let n = site.len;
        let slots: Vec<_> = site.pages().map(|p| p.slot.clone()).collect();
        self.site.store(Arc::new(site));
        self.site_files.set(n as i64);
        self.reloads.inc();
        let snapshots = self.snapshots.clone();
        tokio::spawn(async move { snapshots.warm(slots).await });
        Ok(n)
    }

    /// The answer for a site file. Only the headers in [`respond::READS`] matter.
    fn entry_response(
        &self,
        headers: &http::HeaderMap,
        head: bool,
        entry: &Entry,
        status: StatusCode,
    ) -> respond::Prepared {
        match entry {
            Entry::Asset(a) => respond::representation(headers, head, status, &a.meta, &a.encoded),
            Entry::Page(p) => {
                self.snapshots.touch(&p.slot);
                let snap = &self.snapshots.metrics;
                if p.slot.current.load().is_none() {
                    snap.served_absent.inc();
                } else if p.slot.is_stale() {
                    snap.served_stale.inc();
                } else {
                    snap.served_fresh.inc();
                }
                p.with_current(&self.suspension, |page| {
                    respond::representation(headers, head, status, &page.meta, &page.encoded)
                })
            }
        }
    }
}

async fn static_file(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    let path = match site::clean_path(req.uri().path()) {
        Ok(p) => p,
        Err(PathRefused::Escapes) => {
            front.site_miss.inc();
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "path-refused",
                "the path leaves the site (`..`, a backslash or a NUL byte)",
            )
            .with_field("path")
            .into_response();
        }
        Err(PathRefused::Hidden) => {
            front.site_miss.inc();
            return not_found(&front, &req, None);
        }
    };
    let site = front.site.load();
    match site.lookup(&path) {
        Lookup::Found(entry) => {
            front.site_hit.inc();
            let head = req.method() == Method::HEAD;
            respond::into_response(front.entry_response(
                req.headers(),
                head,
                &entry,
                StatusCode::OK,
            ))
        }
        Lookup::Redirect => {
            let location = directory_location(req.uri().path(), req.uri().query());
            let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        Lookup::NotFound(page) => {
            front.site_miss.inc();
            not_found(&front, &req, page)
        }
    }
}

/// Where a directory asked for without its slash lives. The path keeps one leading slash:
/// `//evil.example/x` would be read by a browser as another host.
fn directory_location(path: &str, query: Option<&str>) -> String {
    let mut location = format!("/{}/", path.trim_start_matches('/'));
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    location
}

fn not_found(front: &Frontend, req: &Request, page: Option<Arc<Entry>>) -> Response {
    let head = req.method() == Method::HEAD;
    respond::into_response(match page {
        Some(e) => front.entry_response(req.headers(), head, &e, StatusCode::NOT_FOUND),
        None => respond::representation(
            req.headers(),
            head,
            StatusCode::NOT_FOUND,
            &front.not_found.meta,
            &front.not_found.encoded,
        ),
    })
}

/// Site files and the widget are only read.
async fn method_not_allowed() -> Response {
    let mut res = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this path is only read: use GET or HEAD",
    )
    .into_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

async fn embed_js(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    front.widget.script(&req)
}

async fn embed_css(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    front.widget.style(&req)
}

async fn to_logic(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    forward(&front, &front.api, req).await
}

/// An import's upload: streamed to logic, under its own bounds.
async fn to_import(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    forward(&front, &front.import, req).await
}

async fn to_longpoll(State(front): State<Arc<Frontend>>, req: Request) -> Response {
    forward(&front, &front.live, req).await
}

/// Asks hyper to close the connection once `res` is sent.
fn close_after(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Forwards a dynamic request if its client may have one more open; it counts against the
/// client until its answer has been sent whole.
async fn forward(front: &Frontend, to: &proxy::Upstream, req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let held = match front.clients.admit_dynamic(ip) {
        Ok(h) => h,
        Err(p) => return close_after(p.into_response()),
    };
    let res = to.forward(req).await;
    // While descriptors are scarce no connection is kept for a next comment request.
    let res = if front.clients.scarce() {
        close_after(res)
    } else {
        res
    };
    res.map(|body| {
        axum::body::Body::from_stream(futures::StreamExt::map(
            body.into_data_stream(),
            move |chunk| {
                let _ = &held;
                chunk
            },
        ))
    })
}

fn check_url(name: &str, url: &Option<String>) -> Result<(), Error> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(Error::Config(
            format!("{name} must be an http:// or https:// URL, not `{u}`"),
        )),
        _ => Ok(()),
    }
}

/// Loads the site and serves it on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    check_url("IO360_LOGIC_URL", &config.logic_url)?;
    check_url("IO360_LONGPOLL_URL", &config.longpoll_url)?;
    config.audit.validate().map_err(Error::Config)?;
    let telemetry = Telemetry::new("frontend");
    shutdown.attach(&telemetry);
    let audit =
        io360_logger::Shipper::new("frontend", &config.audit, &config.tier_auth, &telemetry)
            .map_err(Error::Config)?;
    let credential = match config.logic_url {
        Some(_) => Some(
            config
                .tier_auth
                .credential("frontend")
                .map_err(Error::Config)?,
        ),
        None => None,
    };
    let logic = config
        .logic_url
        .as_deref()
        .zip(credential.clone())
        .map(|(u, c)| TierClient::new("logic", u, c));
    let snapshots = Arc::new(Snapshots::new(
        logic.clone(),
        Duration::from_millis(config.snapshot_refresh_ms.max(50)),
        Duration::from_millis(config.snapshot_timeout_ms.max(50)),
        SnapshotMetrics::new(&telemetry),
    ));
    let site_requests: Family<ResultLabel, Counter> = Family::default();
    telemetry.register(
        "frontend_site_requests",
        "Requests for site files, by result (hit: served from memory; miss: not in the site)",
        site_requests.clone(),
    );
    let site_files: Gauge = Gauge::default();
    telemetry.register(
        "frontend_site_files",
        "Files of the site held in memory",
        site_files.clone(),
    );
    let reloads: Counter = Counter::default();
    telemetry.register(
        "frontend_site_loads",
        "Times the site was (re)loaded",
        reloads.clone(),
    );
    let source = match &config.site_dir {
        Some(d) => Source::Dir(d.clone()),
        None => Source::Demo,
    };
    // Each handle is taken in its own statement: a `Family` guard held across a second
    // `get_or_create` deadlocks.
    let site_hit = site_requests
        .get_or_create(&ResultLabel { result: "hit" })
        .clone();
    let site_miss = site_requests
        .get_or_create(&ResultLabel { result: "miss" })
        .clone();
    let nofile = clients::open_file_limit();
    let reserve = match config.page_reserve_fds {
        0 => (nofile / 10).max(64),
        n => n,
    };
    let clients = Arc::new(clients::Clients::new(
        config.max_connections_per_client,
        config.max_requests_per_client,
        nofile,
        reserve,
    ));
    tokio::spawn(clients.clone().count_descriptors(shutdown.clone()));
    let front = Arc::new(Frontend {
        source: source.clone(),
        site: ArcSwap::from_pointee(Site::empty()),
        snapshots,
        suspension: Arc::new(Suspension::new()),
        widget: assets::Widget::new(),
        not_found: assets::not_found_page(),
        api: proxy::Upstream::new(
            "logic",
            config.logic_url.as_deref(),
            Some(Duration::from_secs(30)),
            io360_common::extract::MAX_API_BODY,
        )
        .presenting(credential.clone())
        .trusting(config.trusted_proxies.clone()),
        import: proxy::Upstream::new(
            "logic",
            config.logic_url.as_deref(),
            Some(Duration::from_secs(config.import_timeout_secs.max(1))),
            usize::try_from(config.import_max_bytes).unwrap_or(usize::MAX),
        )
        .streaming()
        .presenting(credential)
        .trusting(config.trusted_proxies.clone()),
        // Live updates take no bodies; a small one is sent on for longpoll to refuse.
        live: proxy::Upstream::new("longpoll", config.longpoll_url.as_deref(), None, 16 * 1024)
            .trusting(config.trusted_proxies.clone()),
        asset_max_age: config.asset_max_age,
        clients: clients.clone(),
        site_hit,
        site_miss,
        site_files,
        reloads,
    });
    let n = front.load().await?;
    tracing::info!(files = n, site = ?source, "site loaded");
    if let Source::Dir(dir) = source {
        tokio::spawn(watch::follow(front.clone(), dir, shutdown.clone()));
    }
    if let Some(name) = config
        .control_configmap
        .as_ref()
        .filter(|n| !n.trim().is_empty())
    {
        // Read before serving: a pod started while suspended starts suspended.
        let control = io360_control::start(io360_control::Target {
            namespace: config.control_namespace.clone(),
            name: name.clone(),
        })
        .await?;
        front
            .suspension
            .clone()
            .follow_control(control, shutdown.clone());
    }
    if let Some(logic) = logic {
        tokio::spawn(front.suspension.clone().follow_logic(
            logic,
            Duration::from_millis(config.status_interval_ms.max(100)),
            shutdown.clone(),
        ));
    }
    let admission = Arc::new(shed::Admission::new(
        config.max_static_in_flight,
        config.max_dynamic_in_flight,
        &telemetry,
    ));
    let router = Router::new()
        .route("/embed.js", get(embed_js))
        .route("/embed.css", get(embed_css))
        .route("/api/v1/admin/import", any(to_import))
        .route("/api", any(to_logic))
        .route("/api/{*rest}", any(to_logic))
        .route("/admin", any(to_logic))
        .route("/admin/{*rest}", any(to_logic))
        .route("/v1/{*rest}", any(to_longpoll))
        .route("/", get(static_file))
        .route("/{*path}", get(static_file))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(front.clone())
        .layer(middleware::from_fn_with_state(
            admission.clone(),
            shed::protect,
        ));
    let router = telemetry.instrument(router);
    let service = fast::FastStatic::new(front, admission, &telemetry, router);
    telemetry.ready.set(true);
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    audit
        .around(wire::serve(listener, service, clients, shutdown, threads))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::directory_location;

    #[test]
    fn a_directory_redirect_stays_on_this_host() {
        assert_eq!(directory_location("/posts/hello", None), "/posts/hello/");
        assert_eq!(directory_location("//posts/hello", None), "/posts/hello/");
        assert_eq!(
            directory_location("///evil.example/x", Some("a=1")),
            "/evil.example/x/?a=1"
        );
    }
}
