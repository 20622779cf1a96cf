//! What longpoll reports on `/metrics`.

use io360_common::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Longpoll's own metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Polls and event streams held open now.
    pub held: Gauge,
    /// Events written to clients.
    pub delivered: Counter,
    /// Time from an event's arrival from sync until every poll waiting on it was answered.
    pub fanout: Histogram,
    /// Resets sent (history could not cover a client's position).
    pub resets: Counter,
    /// Gaps filled from sync.
    pub gap_fills: Counter,
    /// Gap fills that failed (sync unavailable).
    pub gap_fill_failures: Counter,
    /// Polls refused because the instance holds as many as it may.
    pub rejected: Counter,
    /// The last change-feed position applied.
    pub feed_position: Gauge,
    /// Times the stream from sync was reopened.
    pub stream_reconnects: Counter,
    /// Polls and event streams this instance holds at most (more are refused with 503).
    pub held_limit: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            held: Gauge::default(),
            delivered: Counter::default(),
            fanout: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            resets: Counter::default(),
            gap_fills: Counter::default(),
            gap_fill_failures: Counter::default(),
            rejected: Counter::default(),
            feed_position: Gauge::default(),
            stream_reconnects: Counter::default(),
            held_limit: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric with the tier's registry.
    pub fn register(&self, t: &Telemetry) {
        t.register(
            "longpoll_held_connections",
            "Polls and event streams held open now",
            self.held.clone(),
        );
        t.register(
            "longpoll_held_limit",
            "Polls and event streams this instance holds at most; past it, 503",
            self.held_limit.clone(),
        );
        t.register(
            "longpoll_events_delivered",
            "Events written to clients",
            self.delivered.clone(),
        );
        t.register(
            "longpoll_fanout_seconds",
            "Time from an event's arrival until every poll waiting on it was answered",
            self.fanout.clone(),
        );
        t.register(
            "longpoll_resets",
            "Resets sent because history could not cover a client's position",
            self.resets.clone(),
        );
        t.register(
            "longpoll_gap_fills",
            "Gaps filled from sync",
            self.gap_fills.clone(),
        );
        t.register(
            "longpoll_gap_fill_failures",
            "Gap fills that failed because sync was unavailable",
            self.gap_fill_failures.clone(),
        );
        t.register(
            "longpoll_rejected",
            "Polls refused with 503 because the instance was full",
            self.rejected.clone(),
        );
        t.register(
            "longpoll_feed_position",
            "Last change-feed position applied",
            self.feed_position.clone(),
        );
        t.register(
            "longpoll_stream_reconnects",
            "Times the stream from sync was reopened",
            self.stream_reconnects.clone(),
        );
    }
}
