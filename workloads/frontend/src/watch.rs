//! Reloading the site when its directory changes.
//!
//! A site is rebuilt whole and swapped in atomically, so a request sees either the old site or
//! the new one, never a mix. Changes arrive from the operating system's file events (inotify
//! on Linux); where those are not available the directory is polled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use io360_common::serve::Shutdown;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Frontend;

/// Quiet time after the last file event before reloading (an editor or `rsync` writes many
/// files in a burst).
const SETTLE: Duration = Duration::from_millis(200);

/// Reloads `front`'s site from `dir` whenever files change, until shutdown.
pub(crate) async fn follow(front: Arc<Frontend>, dir: PathBuf, shutdown: Shutdown) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
        {
            let _ = tx.try_send(());
        }
    };
    let watcher: Box<dyn Watcher + Send> = match notify::recommended_watcher(handler.clone()) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::Recursive) {
            Ok(()) => Box::new(w),
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; polling the site directory");
                poll_watcher(handler, &dir)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "file events unavailable; polling the site directory");
            poll_watcher(handler, &dir)
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        // Let the burst settle.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SETTLE) => break,
                got = rx.recv() => if got.is_none() { break },
            }
        }
        match front.load().await {
            Ok(n) => tracing::info!(files = n, "site reloaded"),
            Err(e) => tracing::warn!(error = %e, "site reload failed; serving the previous site"),
        }
    }
    drop(watcher);
}

fn poll_watcher<F>(handler: F, dir: &std::path::Path) -> Box<dyn Watcher + Send>
where
    F: notify::EventHandler,
{
    let config = notify::Config::default().with_poll_interval(Duration::from_secs(2));
    match notify::PollWatcher::new(handler, config) {
        Ok(mut w) => {
            if let Err(e) = w.watch(dir, RecursiveMode::Recursive) {
                tracing::warn!(error = %e, "cannot watch the site directory; it will not reload");
            }
            Box::new(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the site directory; it will not reload");
            Box::new(notify::NullWatcher)
        }
    }
}
