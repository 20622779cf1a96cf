//! The reconnect storm: every subscriber is cut at once (a command restarts the server) while
//! events keep being published; all reconnect and resume from their last position. Measured:
//! the time from the cut until every subscriber had every event, the events lost and
//! duplicated, and the subscribers told to reload.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::publish::Publisher;
use crate::subscribe::Shared;

/// How the storm runs.
pub struct Storm {
    /// Events published in all.
    pub events: usize,
    /// Events per second.
    pub rate: f64,
    /// The cut comes just before this event is published.
    pub cut_after: usize,
    /// The shell command that cuts every subscriber (restarts the server).
    pub cut: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the storm over subscribers already holding their connections; answers the figures.
pub async fn run(
    shared: Arc<Shared>,
    publisher: &Publisher,
    storm: &Storm,
) -> Result<serde_json::Value> {
    shared.reconnect.store(true, Ordering::SeqCst);
    let interval = Duration::from_secs_f64(1.0 / storm.rate);
    let mut next = Instant::now();
    let mut cut = None;
    let mut cut_at = 0u64;
    let (mut retries, mut longest) = (0u64, Duration::ZERO);
    for k in 0..storm.events {
        if k == storm.cut_after {
            cut_at = shared.start.elapsed().as_nanos() as u64;
            let cmd = storm.cut.clone();
            cut = Some(tokio::spawn(async move {
                tokio::process::Command::new("sh")
                    .args(["-c", &cmd])
                    .status()
                    .await
            }));
        }
        // A publish the server cannot take now (it is restarting) is tried again until it is
        // taken: the storm's events are all published, late if need be.
        let began = Instant::now();
        loop {
            match publisher.publish(&format!("storm-{k}-end")).await {
                Ok(_) => break,
                Err(e) if began.elapsed() < Duration::from_secs(60) => {
                    retries += 1;
                    if retries == 1 {
                        eprintln!("storm: publishing event {k} failed ({e}); trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("storm: event {k} could not be published for 60 s: {e}"),
            }
        }
        longest = longest.max(began.elapsed());
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    let Some(cut) = cut else {
        bail!(
            "the cut comes after event {} of {}",
            storm.cut_after,
            storm.events
        );
    };
    match cut.await? {
        Ok(s) if s.success() => {}
        other => bail!("the cut command failed: {other:?}"),
    }
    // Every subscriber has every event, or was told to reload and has the last one since.
    let last = storm.events - 1;
    let settled = |s: &Shared| {
        s.conns.iter().all(|c| {
            c.missing.load(Ordering::SeqCst) == 0
                || (c.reloads.load(Ordering::SeqCst) > 0 && c.got[last].load(Ordering::SeqCst) > 0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !settled(&shared) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.reconnect.store(false, Ordering::SeqCst);

    let n = shared.conns.len();
    let mut complete: Vec<f64> = shared
        .conns
        .iter()
        .filter(|c| c.missing.load(Ordering::SeqCst) == 0)
        .map(|c| c.complete_at.load(Ordering::SeqCst).saturating_sub(cut_at) as f64 / 1e6)
        .collect();
    complete.sort_by(|a, b| a.total_cmp(b));
    let reloaded = |c: &&crate::subscribe::Conn| c.reloads.load(Ordering::SeqCst) > 0;
    let missing = |c: &crate::subscribe::Conn| u64::from(c.missing.load(Ordering::SeqCst));
    let told = shared.conns.iter().filter(reloaded).count();
    let lost: u64 = shared
        .conns
        .iter()
        .filter(|c| !reloaded(c))
        .map(missing)
        .sum();
    let missed_by_reloaded: u64 = shared.conns.iter().filter(reloaded).map(missing).sum();
    let duplicated: u64 = shared
        .conns
        .iter()
        .map(|c| u64::from(c.dups.load(Ordering::SeqCst)))
        .sum();
    let reconnects: u64 = shared
        .conns
        .iter()
        .map(|c| u64::from(c.reconnects.load(Ordering::SeqCst)))
        .sum();
    Ok(json!({
        "events": storm.events,
        "rate": storm.rate,
        "cut_after": storm.cut_after,
        // From the cut until every subscriber had every event (none if some never did).
        "all_complete_ms": (complete.len() == n).then(|| complete.last().copied()).flatten(),
        "complete_p50_ms": pct(&complete, 0.5),
        "complete_p99_ms": pct(&complete, 0.99),
        "complete": complete.len(),
        "told_to_reload": told,
        // Events a subscriber never got and was not told to reload for.
        "lost": lost,
        // Events the subscribers told to reload never got over their stream.
        "missed_by_reloaded": missed_by_reloaded,
        "duplicated": duplicated,
        "reconnects": reconnects,
        "publish_retries": retries,
        "longest_publish_ms": longest.as_secs_f64() * 1e3,
    }))
}
