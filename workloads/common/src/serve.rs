//! The serving loop every tier uses: bind, serve with graceful shutdown, stop on a signal.
//!
//! Stopping has two phases. Draining comes first: the tier keeps accepting and answering,
//! but `/readyz` says it is not ready and every answer closes its connection, so load
//! balancers and clients holding keep-alive connections move to other instances. Then
//! shutdown: listeners close, held polls are answered, in-flight requests finish.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::telemetry::Telemetry;

/// A shutdown signal shared by every task of a process. Cloned freely; `wait` resolves once
/// shutdown has begun.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    lifecycle: Arc<Lifecycle>,
}

/// The side that triggers [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
    lifecycle: Arc<Lifecycle>,
}

/// What the process's tiers share about their life: whether they are draining, and the
/// telemetry of each, for the metrics listener and for marking them unready.
#[derive(Default)]
struct Lifecycle {
    /// Read on every answer, so a plain flag rather than a lock.
    draining: AtomicBool,
    attached: Mutex<Vec<Telemetry>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        let lifecycle = Arc::new(Lifecycle::default());
        (
            ShutdownTrigger {
                tx,
                lifecycle: lifecycle.clone(),
            },
            Shutdown { rx, lifecycle },
        )
    }

    /// Resolves once shutdown has begun (immediately if it already has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Whether the process is draining (or already shutting down): still answering, but no
    /// longer ready, and closing each connection after its answer.
    pub fn is_draining(&self) -> bool {
        self.lifecycle.draining.load(Ordering::Relaxed)
    }

    /// Tells the process's lifecycle about a tier's telemetry: the tier turns unready when
    /// draining begins, and its metrics are served on the metrics listener ([`serve_metrics`]).
    pub fn attach(&self, telemetry: &Telemetry) {
        if self.is_draining() {
            telemetry.ready.drain();
        }
        if let Ok(mut all) = self.lifecycle.attached.lock() {
            all.push(telemetry.clone());
        }
    }

    fn attached(&self) -> Vec<Telemetry> {
        self.lifecycle
            .attached
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default()
    }
}

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        self.begin_drain();
        let _ = self.tx.send(true);
    }

    /// Begins draining: every attached tier turns unready and closes connections after their
    /// answers, while still accepting and answering.
    pub fn begin_drain(&self) {
        self.lifecycle.draining.store(true, Ordering::Relaxed);
        if let Ok(all) = self.lifecycle.attached.lock() {
            for t in all.iter() {
                t.ready.drain();
            }
        }
    }

    /// Waits for SIGINT or SIGTERM, then begins shutdown.
    pub async fn on_signals(&self) {
        self.on_signals_after(Duration::ZERO).await;
    }

    /// Waits for SIGINT or SIGTERM, drains for `delay` (cut short by a second signal), then
    /// begins shutdown. The delay covers the time a load balancer or Kubernetes takes to stop
    /// sending new requests here after the signal.
    pub async fn on_signals_after(&self, delay: Duration) {
        let mut signals = Signals::new();
        signals.next().await;
        if delay.is_zero() {
            tracing::info!("shutting down");
        } else {
            tracing::info!(
                delay_secs = delay.as_secs_f64(),
                "draining, then shutting down"
            );
            self.begin_drain();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signals.next() => tracing::info!("second signal: shutting down now"),
            }
        }
        self.trigger();
    }
}

/// SIGINT and SIGTERM, as a stream of "a signal came".
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` of every tier attached to `shutdown` on a
/// listener of their own, so that scraping can be allowed where the API is not.
pub async fn serve_metrics(listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics listening");
    let router = Router::new()
        .route("/metrics", get(all_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(all_ready))
        .with_state(shutdown.clone());
    serve_until(listener, router, shutdown).await
}

async fn all_metrics(State(shutdown): State<Shutdown>) -> Response {
    let mut out = String::new();
    for t in shutdown.attached() {
        let text = t.encode();
        out.push_str(text.strip_suffix("# EOF\n").unwrap_or(&text));
    }
    out.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn all_ready(State(shutdown): State<Shutdown>) -> Response {
    let all = shutdown.attached();
    if !all.is_empty() && all.iter().all(|t| t.ready.get()) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    tier: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(tier, %addr, "listening");
    serve_until(listener, router, shutdown).await
}

/// The serving loop itself, on the current runtime.
async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    // Answers go out as soon as they are written: without TCP_NODELAY a response written in
    // two pieces (head, then a body) can wait for the client's delayed ACK (Nagle).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // While draining, every answer closes its connection: a client on a keep-alive
    // connection opens a new one, which the load balancer sends to another instance.
    let draining = shutdown.clone();
    let router = router.layer(axum::middleware::map_response(move |mut res: Response| {
        let close = draining.is_draining();
        async move {
            if close {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
    }));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}
