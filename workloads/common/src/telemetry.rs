//! JSON logs, Prometheus metrics and the health endpoints every tier serves.
//!
//! A tier builds a [`Telemetry`], registers its own metrics in [`Telemetry::registry`], then
//! wraps its router with [`Telemetry::instrument`], which adds `/metrics`, `/healthz`,
//! `/readyz` and per-route request metrics (`io360_http_requests_total`,
//! `io360_http_request_duration_seconds`, `io360_http_requests_in_flight`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The log filter when `IO360_LOG` is unset: `info`, except the storage engine's routine work
/// (a database created, a memtable flushed), which is not news to whoever reads a tier's log;
/// its warnings and errors are.
pub const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Readable lines, for a person at a terminal.
    Text,
}

impl LogFormat {
    /// The format `IO360_LOG_FORMAT` asks for (`json` or `text`); unset or empty, readable lines
    /// on a terminal and JSON otherwise. An unknown value is an error naming the choices.
    pub fn choose(setting: Option<&str>, terminal: bool) -> Result<LogFormat, String> {
        match setting.map(str::trim) {
            None | Some("") => Ok(if terminal {
                LogFormat::Text
            } else {
                LogFormat::Json
            }),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            Some(v) => Err(format!(
                "IO360_LOG_FORMAT is {v:?}; it takes json or text (unset: text on a terminal, json otherwise)"
            )),
        }
    }
}

/// Starts logging to stdout, filtered by `IO360_LOG` (default [`DEFAULT_LOG`]), in the format
/// `IO360_LOG_FORMAT` asks for ([`LogFormat::choose`]). An unknown format is reported in the
/// log, which is then JSON. Calling it twice (as `io360 up` does for every tier) is harmless.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("IO360_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let terminal = std::io::stdout().is_terminal();
    let setting = std::env::var("IO360_LOG_FORMAT").ok();
    let (format, error) = match LogFormat::choose(setting.as_deref(), terminal) {
        Ok(f) => (f, None),
        Err(e) => (LogFormat::Json, Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
    if let Some(e) = error {
        tracing::warn!("{e}");
    }
}

/// Whether a tier is ready to take traffic (`/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadyFlags>);

#[derive(Debug, Default)]
struct ReadyFlags {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Marks the tier ready or not.
    pub fn set(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the tier is ready: it says so, and it is not draining.
    pub fn get(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed) && !self.0.draining.load(Ordering::Relaxed)
    }

    /// Marks the tier as draining: unready from now on, whatever it says after.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    tier: String,
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierRoute {
    tier: String,
    route: String,
}

#[derive(Clone)]
struct HttpMetrics {
    tier: &'static str,
    requests: Family<RouteLabels, Counter>,
    duration: Family<TierRoute, Histogram>,
    in_flight: Gauge,
}

/// A tier's metrics registry, readiness flag and HTTP instrumentation.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    http: HttpMetrics,
    /// The tier's readiness.
    pub ready: Readiness,
}

impl Telemetry {
    /// New telemetry for the named tier.
    pub fn new(tier: &'static str) -> Self {
        let mut registry = Registry::with_prefix("io360");
        let http = HttpMetrics {
            tier,
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.5, 14))
            }),
            in_flight: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            http.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered now",
            http.in_flight.clone(),
        );
        Telemetry {
            registry: Arc::new(Mutex::new(registry)),
            http,
            ready: Readiness::default(),
        }
    }

    /// Registers a metric (its name gets the `io360_` prefix).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// Records requests answered outside the router (a tier's fast path) under `route`, into
    /// the same request metrics the router's requests go to. The usual outcomes' counters
    /// are looked up once here, so recording one costs no allocation.
    pub fn route_recorder(&self, route: &str) -> RouteRecorder {
        let m = &self.http;
        let counter = |method: &str, status: u16| {
            m.requests
                .get_or_create(&RouteLabels {
                    tier: m.tier.to_owned(),
                    route: route.to_owned(),
                    method: method.to_owned(),
                    status,
                })
                .clone()
        };
        RouteRecorder {
            get_ok: counter("GET", 200),
            get_not_modified: counter("GET", 304),
            head_ok: counter("HEAD", 200),
            duration: m
                .duration
                .get_or_create(&TierRoute {
                    tier: m.tier.to_owned(),
                    route: route.to_owned(),
                })
                .clone(),
            route: route.to_owned(),
            http: m.clone(),
        }
    }

    /// Adds `/metrics`, `/healthz`, `/readyz` and request metrics to a tier's router.
    pub fn instrument(&self, router: Router) -> Router {
        let ops = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone());
        router
            .layer(middleware::from_fn_with_state(self.http.clone(), record))
            .merge(ops)
    }
}

/// Request metrics for one route, kept by a fast path (see [`Telemetry::route_recorder`]).
#[derive(Clone)]
pub struct RouteRecorder {
    get_ok: Counter,
    get_not_modified: Counter,
    head_ok: Counter,
    duration: Histogram,
    route: String,
    http: HttpMetrics,
}

impl RouteRecorder {
    /// Counts a request in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.http.in_flight.inc();
        InFlight(self.http.in_flight.clone())
    }

    /// Records an answered request.
    pub fn record(&self, method: &http::Method, status: StatusCode, started: Instant) {
        self.duration.observe(started.elapsed().as_secs_f64());
        match (method, status.as_u16()) {
            (&http::Method::GET, 200) => self.get_ok.inc(),
            (&http::Method::GET, 304) => self.get_not_modified.inc(),
            (&http::Method::HEAD, 200) => self.head_ok.inc(),
            (method, status) => self
                .http
                .requests
                .get_or_create(&RouteLabels {
                    tier: self.http.tier.to_owned(),
                    route: self.route.clone(),
                    method: method.to_string(),
                    status,
                })
                .inc(),
        };
    }
}

/// A request in flight; see [`RouteRecorder::in_flight`].
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn metrics(State(t): State<Telemetry>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
        .into_response()
}

async fn readyz(State(t): State<Telemetry>) -> Response {
    if t.ready.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn record(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    m.in_flight.inc();
    let start = Instant::now();
    let res = next.run(req).await;
    m.in_flight.dec();
    m.duration
        .get_or_create(&TierRoute {
            tier: m.tier.to_owned(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RouteLabels {
            tier: m.tier.to_owned(),
            route,
            method,
            status: res.status().as_u16(),
        })
        .inc();
    res
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn readable_lines_on_a_terminal_and_json_elsewhere_unless_asked() {
        assert_eq!(LogFormat::choose(None, true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::choose(None, false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::choose(Some(""), true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::choose(Some("json"), true), Ok(LogFormat::Json));
        assert_eq!(LogFormat::choose(Some("TEXT"), false), Ok(LogFormat::Text));
        let e = LogFormat::choose(Some("yaml"), true).unwrap_err();
        assert!(e.contains("\"yaml\"") && e.contains("json or text"), "{e}");
    }
}
