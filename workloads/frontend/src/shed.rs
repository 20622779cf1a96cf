//! Load protection: caps on requests in flight, dynamic routes shed first.
//!
//! Pages must stay up when comments cannot. So a request for `/api`, `/v1` or `/admin` is
//! refused with a fast 503 as soon as the dynamic routes hit their own cap *or* static
//! requests are under pressure (half their cap in use), while a static request is refused
//! only when static requests alone fill their cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use io360_common::Problem;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// The admission state shared by every request.
#[derive(Debug)]
pub(crate) struct Admission {
    static_in_flight: AtomicUsize,
    dynamic_in_flight: AtomicUsize,
    max_static: usize,
    max_dynamic: usize,
    shed_static: Counter,
    shed_dynamic: Counter,
    gauge_static: Gauge,
    gauge_dynamic: Gauge,
}

impl Admission {
    pub fn new(
        max_static: usize,
        max_dynamic: usize,
        telemetry: &io360_common::telemetry::Telemetry,
    ) -> Admission {
        let shed: Family<ClassLabel, Counter> = Family::default();
        let gauge: Family<ClassLabel, Gauge> = Family::default();
        telemetry.register(
            "frontend_shed",
            "Requests refused by load protection, by class (static, dynamic)",
            shed.clone(),
        );
        telemetry.register(
            "frontend_in_flight",
            "Requests being answered, by class (static, dynamic)",
            gauge.clone(),
        );
        // One statement per handle: a `Family` guard held across another `get_or_create`
        // deadlocks.
        let shed_static = shed.get_or_create(&ClassLabel { class: "static" }).clone();
        let shed_dynamic = shed.get_or_create(&ClassLabel { class: "dynamic" }).clone();
        let gauge_static = gauge.get_or_create(&ClassLabel { class: "static" }).clone();
        let gauge_dynamic = gauge
            .get_or_create(&ClassLabel { class: "dynamic" })
            .clone();
        Admission {
            static_in_flight: AtomicUsize::new(0),
            dynamic_in_flight: AtomicUsize::new(0),
            max_static: max_static.max(1),
            max_dynamic: max_dynamic.max(1),
            shed_static,
            shed_dynamic,
            gauge_static,
            gauge_dynamic,
        }
    }

    pub(crate) fn admit(self: &Arc<Self>, dynamic: bool) -> Option<Ticket> {
        let statics = self.static_in_flight.load(Ordering::Relaxed);
        let (counter, cap) = if dynamic {
            if statics >= self.max_static / 2 {
                self.shed_dynamic.inc();
                return None;
            }
            (&self.dynamic_in_flight, self.max_dynamic)
        } else {
            (&self.static_in_flight, self.max_static)
        };
        if counter.fetch_add(1, Ordering::AcqRel) >= cap {
            counter.fetch_sub(1, Ordering::AcqRel);
            if dynamic {
                self.shed_dynamic.inc();
            } else {
                self.shed_static.inc();
            }
            return None;
        }
        if dynamic {
            self.gauge_dynamic.inc();
        } else {
            self.gauge_static.inc();
        }
        Some(Ticket {
            admission: self.clone(),
            dynamic,
        })
    }
}

/// A request's place in flight, given back when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    dynamic: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.dynamic {
            self.admission
                .dynamic_in_flight
                .fetch_sub(1, Ordering::AcqRel);
            self.admission.gauge_dynamic.dec();
        } else {
            self.admission
                .static_in_flight
                .fetch_sub(1, Ordering::AcqRel);
            self.admission.gauge_static.dec();
        }
    }
}

/// Whether a path belongs to the dynamic tiers.
pub(crate) fn is_dynamic(path: &str) -> bool {
    ["/api", "/v1", "/admin"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The middleware: admit or refuse.
pub(crate) async fn protect(
    State(admission): State<Arc<Admission>>,
    req: Request,
    next: Next,
) -> Response {
    let dynamic = is_dynamic(req.uri().path());
    match admission.admit(dynamic) {
        Some(_ticket) => next.run(req).await,
        None => Problem::unavailable(
            "overloaded",
            if dynamic {
                "io360 is busy; comments will be back in a moment"
            } else {
                "io360 is busy; try again in a moment"
            },
            Duration::from_secs(if dynamic { 5 } else { 1 }),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_prefixes() {
        assert!(is_dynamic("/api/v1/comments"));
        assert!(is_dynamic("/v1/poll"));
        assert!(is_dynamic("/admin"));
        assert!(!is_dynamic("/apiary.html"));
        assert!(!is_dynamic("/"));
    }

    #[test]
    fn dynamic_is_shed_before_static() {
        let t = io360_common::telemetry::Telemetry::new("frontend");
        let a = Arc::new(Admission::new(4, 100, &t));
        let s1 = a.admit(false).unwrap();
        let d1 = a.admit(true);
        assert!(d1.is_some(), "one static request is no pressure");
        let s2 = a.admit(false).unwrap();
        assert!(
            a.admit(true).is_none(),
            "half the static cap in use sheds dynamic"
        );
        let s3 = a.admit(false).unwrap();
        let s4 = a.admit(false).unwrap();
        assert!(a.admit(false).is_none(), "static cap reached");
        drop((s1, s2, s3, s4));
        assert!(a.admit(true).is_some());
    }
}
