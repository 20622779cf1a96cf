//! One retry with backoff for every loop that reconnects or retries: longpoll following sync,
//! sync tailing the store, logic's cache following the feed, the audit shipper, and the
//! frontend's snapshot refresh. The delays come from `backon`'s exponential backoff: the
//! first delay, doubling after each failure up to a ceiling, and back to the first after a
//! success.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between attempts: `first`, then doubling up to `max`; [`Backoff::reset`] after a
/// success starts again from `first`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling, up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// After a success: the next delay is the first again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The delay before the next attempt, moving the schedule on.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the schedule never ends; the ceiling is the fallback.
        // The ceiling also holds for a first delay set above it.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Waits the next delay, unless `stop` resolves first. Answers whether the whole delay
    /// passed (false: stop, so the caller should give up).
    pub async fn wait(&mut self, stop: impl Future) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop => false,
        }
    }

    /// The delay after `failures` failures in a row (1: `first`), for callers that keep the
    /// count themselves.
    pub fn after(first: Duration, max: Duration, failures: u32) -> Duration {
        let mut b = Backoff::new(first, max);
        // The ceiling is reached long before 64 doublings.
        (0..failures.clamp(1, 64) - 1).for_each(|_| {
            b.next_delay();
        });
        b.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_to_the_ceiling_and_start_over_after_a_reset() {
        let mut b = Backoff::new(50 * MS, 2000 * MS);
        // backon multiplies in f32: equal to the microsecond.
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().as_micros()).collect();
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1600, 2000, 2000].map(|n| n * 1000)
        );
        b.reset();
        assert_eq!(b.next_delay(), 50 * MS);
    }

    #[test]
    fn the_delay_after_n_failures_follows_the_same_schedule() {
        assert_eq!(Backoff::after(2 * MS, 32 * MS, 1), 2 * MS);
        assert_eq!(Backoff::after(2 * MS, 32 * MS, 3).as_micros(), 8000);
        assert_eq!(Backoff::after(2 * MS, 32 * MS, 5), 32 * MS);
        assert_eq!(Backoff::after(2 * MS, 32 * MS, u32::MAX), 32 * MS);
        assert_eq!(Backoff::after(2 * MS, 32 * MS, 0), 2 * MS);
        assert_eq!(Backoff::after(40 * MS, 30 * MS, 1), 30 * MS);
    }

    #[tokio::test]
    async fn waiting_stops_early_when_told_to() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!b.wait(std::future::ready(())).await);
        let mut b = Backoff::new(MS, MS);
        assert!(b.wait(std::future::pending::<()>()).await);
    }
}
