//! The reconnect storm: every subscriber is cut at once (a command restarts the server) while
//! events keep being published; all reconnect and resume from their last position. Measured:
//! the time from the cut until every subscriber is caught up (has every event published so
//! far), the events lost and duplicated, and the subscribers told to reload.
//!
//! "Caught up" at time T: every event published before T has reached every subscriber by T.
//! The recovery time is the first such T once the restarted server is ready, minus the cut's
//! time. A subscriber told
//! to reload counts as having, at its reload, every event published before it (a real client
//! reads the thread again then); what it misses after that is counted as lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::publish::Publisher;
use crate::subscribe::{Conn, Shared};

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
    // When each event's publish was acknowledged (ns since the subscribers' clock started).
    let mut published = Vec::with_capacity(storm.events);
    for k in 0..storm.events {
        if k == storm.cut_after {
            cut_at = shared.start.elapsed().as_nanos() as u64;
            let cmd = storm.cut.clone();
            let shared = shared.clone();
            cut = Some(tokio::spawn(async move {
                let status = tokio::process::Command::new("sh")
                    .args(["-c", &cmd])
                    .status()
                    .await;
                (status, shared.start.elapsed().as_nanos() as u64)
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
        published.push(shared.start.elapsed().as_nanos() as u64);
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
    // When the server was back (the cut command restarts it and waits until it is ready).
    let back_at = match cut.await? {
        (Ok(s), at) if s.success() => at,
        (other, _) => bail!("the cut command failed: {other:?}"),
    };
    // When subscriber `c` had event `k`: its arrival, or its reload if it was told to reload
    // after the event was published.
    let had = |c: &Conn, k: usize| -> Option<u64> {
        let got = c.got[k].load(Ordering::SeqCst);
        let reloaded = c.reloaded_at.load(Ordering::SeqCst);
        let arrival = (got > 0).then(|| got - 1);
        let by_reload = (reloaded >= published[k]).then_some(reloaded);
        match (arrival, by_reload) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    };
    let settled = |s: &Shared| {
        s.conns
            .iter()
            .all(|c| (0..storm.events).all(|k| had(c, k).is_some()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !settled(&shared) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.reconnect.store(false, Ordering::SeqCst);

    // The last subscriber's time for each event, then the first moment after the cut when
    // everything published so far had reached everyone.
    let mut lost = 0u64;
    let last: Vec<u64> = (0..storm.events)
        .map(|k| {
            shared
                .conns
                .iter()
                .map(|c| {
                    had(c, k).unwrap_or_else(|| {
                        lost += 1;
                        0
                    })
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut caught_up = None;
    let mut running = 0u64;
    for (k, &t) in last.iter().enumerate() {
        running = running.max(t);
        let next = published.get(k + 1).copied().unwrap_or(u64::MAX);
        // Caught up once the server is back: until then the old process may still be sending
        // what it had, to connections it is about to lose.
        if k + 1 >= storm.cut_after && running >= back_at && running <= next {
            caught_up = Some(running);
            break;
        }
    }
    let recovered_ms = caught_up.map(|t| t.saturating_sub(cut_at) as f64 / 1e6);
    let n = shared.conns.len();
    let told = shared
        .conns
        .iter()
        .filter(|c| c.reloads.load(Ordering::SeqCst) > 0)
        .count();
    let complete = shared
        .conns
        .iter()
        .filter(|c| c.missing.load(Ordering::SeqCst) == 0)
        .count();
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
        // From the cut until everything published so far had reached every subscriber (none
        // if that never happened before the end).
        "recovered_ms": recovered_ms,
        // From the cut until the restarted server was ready.
        "restart_ms": back_at.saturating_sub(cut_at) as f64 / 1e6,
        "subscribers": n,
        // Subscribers that got every event over their stream, none by a reload.
        "complete": complete,
        "told_to_reload": told,
        // Events a subscriber never got, over its stream or by a reload after them.
        "lost": lost,
        "duplicated": duplicated,
        "reconnects": reconnects,
        "publish_retries": retries,
        "longest_publish_ms": longest.as_secs_f64() * 1e3,
    }))
}
