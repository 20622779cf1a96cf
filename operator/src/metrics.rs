//! The operator's own `/metrics` (Prometheus text) and `/healthz`, on one small HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and gauges of the controller.
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes, successful or not.
    pub reconciles: Counter,
    /// Reconcile passes that failed.
    pub errors: Counter,
    /// How long a reconcile pass takes.
    pub duration: Histogram,
    /// CommentClusters whose comments are suspended now.
    pub suspended_clusters: Gauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// False once the controller has stopped; `/healthz` then fails.
    pub alive: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `io360_operator_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("io360_operator");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let suspended_clusters = Gauge::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass",
            duration.clone(),
        );
        registry.register(
            "suspended_clusters",
            "CommentClusters whose comments are suspended",
            suspended_clusters.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            suspended_clusters,
            leader,
            alive: AtomicBool::new(true),
        }
    }

    /// Records one reconcile pass.
    pub fn observe(&self, took: Duration, ok: bool) {
        self.reconciles.inc();
        if !ok {
            self.errors.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

async fn render_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped")
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(healthz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
