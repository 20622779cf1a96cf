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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One CommentCluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// One CommentCluster and one reason comments can be suspended for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuspendedLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `Manual` or `Overload`.
    pub reason: String,
}

/// The reasons comments can be suspended for, each a series of its own.
pub const SUSPENSION_REASONS: [&str; 2] = ["Manual", "Overload"];

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
    /// Per CommentCluster: 1 while its Ready condition is true.
    pub cluster_ready: Family<ClusterLabels, Gauge>,
    /// Per CommentCluster and reason: 1 while comments are suspended for that reason.
    pub cluster_suspended: Family<SuspendedLabels, Gauge>,
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
        let cluster_ready = Family::<ClusterLabels, Gauge>::default();
        let cluster_suspended = Family::<SuspendedLabels, Gauge>::default();
        registry.register(
            "cluster_ready",
            "1 while the CommentCluster's Ready condition is true",
            cluster_ready.clone(),
        );
        registry.register(
            "cluster_suspended",
            "1 while the CommentCluster's comments are suspended for this reason (Manual or Overload)",
            cluster_suspended.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            suspended_clusters,
            leader,
            cluster_ready,
            cluster_suspended,
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

    /// Records what one CommentCluster's status says: ready or not, suspended for which reason.
    pub fn set_cluster(&self, namespace: &str, name: &str, ready: bool, suspended: Option<&str>) {
        let cluster = ClusterLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.cluster_ready
            .get_or_create(&cluster)
            .set(i64::from(ready));
        for reason in SUSPENSION_REASONS {
            self.cluster_suspended
                .get_or_create(&SuspendedLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    reason: reason.to_owned(),
                })
                .set(i64::from(suspended == Some(reason)));
        }
    }

    /// Drops a deleted CommentCluster's series.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        self.cluster_ready.remove(&ClusterLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        for reason in SUSPENSION_REASONS {
            self.cluster_suspended.remove(&SuspendedLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                reason: reason.to_owned(),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn each_cluster_says_whether_it_is_ready_and_why_it_is_suspended() {
        let m = Metrics::new();
        m.set_cluster("blog", "comments", false, Some("Overload"));
        let text = m.render();
        assert!(
            text.contains(r#"io360_operator_cluster_ready{namespace="blog",name="comments"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"io360_operator_cluster_suspended{namespace="blog",name="comments",reason="Overload"} 1"#), "{text}");
        assert!(text.contains(r#"io360_operator_cluster_suspended{namespace="blog",name="comments",reason="Manual"} 0"#), "{text}");
        m.set_cluster("blog", "comments", true, None);
        let text = m.render();
        assert!(
            text.contains(r#"io360_operator_cluster_ready{namespace="blog",name="comments"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="Overload"} 0"#), "{text}");
        m.forget_cluster("blog", "comments");
        assert!(!m.render().contains(r#"name="comments""#));
    }
}
