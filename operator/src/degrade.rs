//! Automatic degrade: when to suspend live comments under frontend overload and when to bring
//! them back, as a pure function of time and the frontend autoscaler's readings.
//!
//! Overload is "frontend at its maxReplicas and at or over the utilization threshold", held
//! for `hold`. Recovery is "utilization under the lower recovery threshold", held for
//! `cooldown`. The gap between the two thresholds and the two hold times is what keeps the
//! decision from flapping: after a switch, the other switch needs a full hold of its own
//! evidence, so two switches are always at least `hold` or `cooldown` apart. A reading that is
//! missing (no HPA yet, no metrics, or an autoscaler that reports it cannot read CPU; see
//! [`crate::autoscaling::reading`]) is not evidence either way: it restarts the running timer.
//!
//! A manual suspension (`spec.commentsSuspended`) always wins: [`decide`] reports `Manual`
//! whatever the machine says, and the machine keeps tracking load underneath so that lifting
//! the manual suspension during an overload lands on the right answer.

use std::time::Duration;

use jiff::Timestamp;

/// Why comments are suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuspensionReason {
    /// `spec.commentsSuspended` is true.
    Manual,
    /// Automatic degrade found the frontend overloaded.
    Overload,
}

impl SuspensionReason {
    /// The condition reason and control ConfigMap value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "Manual",
            Self::Overload => "Overload",
        }
    }

    /// The sentence readers see while comments are suspended for this reason.
    pub fn message(self) -> &'static str {
        match self {
            Self::Manual => {
                "Comments are paused by the site's operators. Pages stay available; please try again later."
            }
            Self::Overload => {
                "Comments are paused while the site is under heavy load. Pages stay available; comments will be back shortly."
            }
        }
    }
}

/// The automatic degrade thresholds, from `spec.autoDegrade`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Utilization (percent) at or above which, at max replicas, frontend is overloaded.
    pub overload: i32,
    /// How long overload must hold before suspending.
    pub hold: Duration,
    /// Utilization (percent) under which load counts as recovered.
    pub recovery: i32,
    /// How long recovery must hold before resuming.
    pub cooldown: Duration,
}

/// One look at the frontend HorizontalPodAutoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpaReading {
    /// `status.currentReplicas`.
    pub current_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
    /// The current average CPU utilization in percent, when the HPA reports one.
    pub utilization: Option<i32>,
}

/// The state of the machine for one CommentCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DegradeState {
    /// Comments live as far as load goes; `over_since` is when the current run of overload
    /// readings began.
    Normal {
        /// Start of the current run of overloaded readings.
        over_since: Option<Timestamp>,
    },
    /// Suspended for overload since `since`; `under_since` is when the current run of
    /// recovered readings began.
    Overloaded {
        /// When the suspension began.
        since: Timestamp,
        /// Start of the current run of recovered readings.
        under_since: Option<Timestamp>,
    },
}

impl Default for DegradeState {
    fn default() -> Self {
        Self::Normal { over_since: None }
    }
}

impl DegradeState {
    /// Whether this state suspends comments.
    pub fn overloaded(&self) -> bool {
        matches!(self, Self::Overloaded { .. })
    }
}

fn held(from: Timestamp, now: Timestamp, span: Duration) -> bool {
    now >= from && now.duration_since(from).unsigned_abs() >= span
}

/// Advances the machine by one reading taken at `now`.
pub fn step(
    state: DegradeState,
    now: Timestamp,
    reading: Option<HpaReading>,
    t: &Thresholds,
) -> DegradeState {
    match state {
        DegradeState::Normal { over_since } => {
            let over = reading.is_some_and(|r| {
                r.current_replicas >= r.max_replicas
                    && r.utilization.is_some_and(|u| u >= t.overload)
            });
            if !over {
                return DegradeState::Normal { over_since: None };
            }
            let start = over_since.unwrap_or(now);
            if held(start, now, t.hold) {
                DegradeState::Overloaded {
                    since: now,
                    under_since: None,
                }
            } else {
                DegradeState::Normal {
                    over_since: Some(start),
                }
            }
        }
        DegradeState::Overloaded { since, under_since } => {
            let under = reading.is_some_and(|r| r.utilization.is_some_and(|u| u < t.recovery));
            if !under {
                return DegradeState::Overloaded {
                    since,
                    under_since: None,
                };
            }
            let start = under_since.unwrap_or(now);
            if held(start, now, t.cooldown) {
                DegradeState::Normal { over_since: None }
            } else {
                DegradeState::Overloaded {
                    since,
                    under_since: Some(start),
                }
            }
        }
    }
}

/// The suspension the cluster should have: manual wins, then overload, else none.
pub fn decide(manual: bool, state: &DegradeState) -> Option<SuspensionReason> {
    if manual {
        Some(SuspensionReason::Manual)
    } else if state.overloaded() {
        Some(SuspensionReason::Overload)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            overload: 90,
            hold: Duration::from_secs(60),
            recovery: 60,
            cooldown: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn reading(cur: i32, max: i32, util: i32) -> Option<HpaReading> {
        Some(HpaReading {
            current_replicas: cur,
            max_replicas: max,
            utilization: Some(util),
        })
    }

    #[test]
    fn suspends_only_after_overload_holds_at_max_replicas() {
        let t = thresholds();
        let mut s = DegradeState::default();
        s = step(s, at(0), reading(10, 10, 95), &t);
        assert!(!s.overloaded());
        s = step(s, at(59), reading(10, 10, 95), &t);
        assert!(!s.overloaded(), "59 s of a 60 s hold is not enough");
        s = step(s, at(60), reading(10, 10, 95), &t);
        assert_eq!(
            s,
            DegradeState::Overloaded {
                since: at(60),
                under_since: None
            }
        );
    }

    #[test]
    fn high_utilization_below_max_replicas_is_not_overload() {
        let t = thresholds();
        let mut s = DegradeState::default();
        for i in 0..100 {
            s = step(s, at(i * 10), reading(9, 10, 200), &t);
        }
        assert!(!s.overloaded(), "the HPA can still scale out");
    }

    #[test]
    fn a_dip_restarts_the_hold() {
        let t = thresholds();
        let mut s = DegradeState::default();
        s = step(s, at(0), reading(10, 10, 95), &t);
        s = step(s, at(50), reading(10, 10, 80), &t);
        s = step(s, at(55), reading(10, 10, 95), &t);
        s = step(s, at(100), reading(10, 10, 95), &t);
        assert!(!s.overloaded());
        s = step(s, at(115), reading(10, 10, 95), &t);
        assert!(s.overloaded());
    }

    #[test]
    fn recovers_after_cooldown_under_the_lower_threshold() {
        let t = thresholds();
        let mut s = DegradeState::Overloaded {
            since: at(0),
            under_since: None,
        };
        // Between the thresholds: neither overloaded nor recovered, stays suspended.
        s = step(s, at(10), reading(10, 10, 70), &t);
        s = step(s, at(1000), reading(10, 10, 70), &t);
        assert!(s.overloaded());
        s = step(s, at(1010), reading(3, 10, 30), &t);
        s = step(s, at(1309), reading(3, 10, 30), &t);
        assert!(s.overloaded());
        s = step(s, at(1310), reading(3, 10, 30), &t);
        assert_eq!(s, DegradeState::Normal { over_since: None });
    }

    #[test]
    fn missing_readings_are_no_evidence() {
        let t = thresholds();
        let mut s = DegradeState::default();
        s = step(s, at(0), reading(10, 10, 95), &t);
        s = step(s, at(30), None, &t);
        s = step(s, at(61), reading(10, 10, 95), &t);
        assert!(!s.overloaded());
        let mut s = DegradeState::Overloaded {
            since: at(0),
            under_since: None,
        };
        for i in 1..100 {
            s = step(s, at(i * 60), None, &t);
        }
        assert!(s.overloaded(), "no metrics must not end a suspension");
    }

    #[test]
    fn manual_wins() {
        assert_eq!(
            decide(true, &DegradeState::default()),
            Some(SuspensionReason::Manual)
        );
        let over = DegradeState::Overloaded {
            since: at(0),
            under_since: None,
        };
        assert_eq!(decide(true, &over), Some(SuspensionReason::Manual));
        assert_eq!(decide(false, &over), Some(SuspensionReason::Overload));
        assert_eq!(decide(false, &DegradeState::default()), None);
    }

    fn arb_reading() -> impl Strategy<Value = Option<HpaReading>> {
        prop_oneof![
            1 => Just(None),
            8 => (1..=10i32, proptest::option::weighted(0.9, 0..=150i32)).prop_map(|(cur, util)| {
                Some(HpaReading { current_replicas: cur, max_replicas: 10, utilization: util })
            }),
        ]
    }

    fn arb_thresholds() -> impl Strategy<Value = Thresholds> {
        (50..=120i32, 0..=49i32, 0..=600u64, 0..=600u64).prop_map(|(over, gap, hold, cool)| {
            Thresholds {
                overload: over,
                hold: Duration::from_secs(hold),
                recovery: over - 1 - gap,
                cooldown: Duration::from_secs(cool),
            }
        })
    }

    proptest! {
        /// Two switches are never closer than the hold (into suspension) or the cooldown
        /// (out of it), whatever the readings and however irregular the evaluations.
        #[test]
        fn never_flaps(
            t in arb_thresholds(),
            steps in proptest::collection::vec((1..=120i64, arb_reading()), 1..300),
        ) {
            let mut s = DegradeState::default();
            let mut now = 0;
            let mut last_switch: Option<i64> = None;
            for (dt, r) in steps {
                now += dt;
                let next = step(s, at(now), r, &t);
                if next.overloaded() != s.overloaded() {
                    if let Some(prev) = last_switch {
                        let need = if next.overloaded() { t.hold } else { t.cooldown };
                        prop_assert!((now - prev) as u64 >= need.as_secs(),
                            "switched after {} s, needs {:?}", now - prev, need);
                    }
                    last_switch = Some(now);
                }
                s = next;
            }
        }

        /// Every suspension is backed by a full hold of overloaded readings at max replicas,
        /// and every resume by a full cooldown of readings under the recovery threshold.
        #[test]
        fn switches_only_on_held_evidence(
            t in arb_thresholds(),
            steps in proptest::collection::vec((1..=120i64, arb_reading()), 1..300),
        ) {
            let mut s = DegradeState::default();
            let mut now = 0;
            let mut history: Vec<(i64, Option<HpaReading>)> = Vec::new();
            for (dt, r) in steps {
                now += dt;
                history.push((now, r));
                let next = step(s, at(now), r, &t);
                if next.overloaded() != s.overloaded() {
                    let good = |r: &Option<HpaReading>| match (next.overloaded(), r) {
                        (true, Some(r)) => r.current_replicas >= r.max_replicas
                            && r.utilization.is_some_and(|u| u >= t.overload),
                        (false, Some(r)) => r.utilization.is_some_and(|u| u < t.recovery),
                        (_, None) => false,
                    };
                    let need = if next.overloaded() { t.hold } else { t.cooldown };
                    // The run of good readings ending now must span the hold time.
                    let run_start = history.iter().rev().take_while(|(_, r)| good(r)).last();
                    let (start, _) = run_start.expect("a switch needs at least this reading");
                    prop_assert!((now - start) as u64 >= need.as_secs());
                }
                s = next;
            }
        }

        /// A manual suspension always holds, with reason Manual, whatever the load does.
        #[test]
        fn manual_always_wins(
            t in arb_thresholds(),
            steps in proptest::collection::vec((1..=120i64, arb_reading(), any::<bool>()), 1..200),
        ) {
            let mut s = DegradeState::default();
            let mut now = 0;
            for (dt, r, manual) in steps {
                now += dt;
                s = step(s, at(now), r, &t);
                let d = decide(manual, &s);
                if manual {
                    prop_assert_eq!(d, Some(SuspensionReason::Manual));
                } else {
                    prop_assert_eq!(d.is_some(), s.overloaded());
                }
            }
        }
    }
}
