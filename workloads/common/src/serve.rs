//! The serving loop every tier uses: bind, serve with graceful shutdown, stop on a signal.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A shutdown signal shared by every task of a process. Cloned freely; `wait` resolves once
/// shutdown has begun.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that triggers [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
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
}

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// Waits for SIGINT or SIGTERM, then begins shutdown.
    pub async fn on_signals(&self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        self.trigger();
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
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}

/// Like [`serve`], but on `threads` single-threaded runtimes of its own, each accepting from
/// the same listening socket and serving its connections start to finish, the way nginx runs
/// one event loop per worker. A request never moves between threads and no thread wakes
/// another, which is what a small, hot request (a static file from memory) needs: on a
/// work-stealing runtime the wake-ups and context switches cost more than the request.
/// Returns when every thread has stopped after `shutdown`.
pub async fn serve_per_thread(
    tier: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    threads: usize,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let addr = listener.local_addr()?;
    tracing::info!(tier, %addr, threads, "listening");
    let mut done = Vec::new();
    for i in 0..threads.max(1) {
        let listener = listener.try_clone()?;
        let router = router.clone();
        let shutdown = shutdown.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("io360-{tier}-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async move {
                            serve_until(TcpListener::from_std(listener)?, router, shutdown).await
                        })
                    });
                let _ = tx.send(served);
            })?;
        done.push(rx);
    }
    for rx in done {
        rx.await
            .map_err(|_| std::io::Error::other(format!("a {tier} serving thread panicked")))??;
    }
    Ok(())
}
