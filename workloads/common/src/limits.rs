//! How much an internal tier takes on at once, and how long it gives one request.
//!
//! Every tier behind the public face (store, sync, logger, logic) refuses work it cannot do
//! rather than queueing it without bound: a request over the in-flight limit is answered at
//! once with 503 and `Retry-After`, and a request still unanswered after the timeout is
//! answered the same way, so callers retry elsewhere or later instead of piling up. A
//! streamed answer (the store's change feed, the logger's tail) counts only until its
//! headers are sent.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::Problem;

/// A tier's request limits.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Most requests handled at once; more are answered 503 with `Retry-After`.
    #[arg(long, env = "IO360_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Seconds a request may take before it is answered 503 with `Retry-After`.
    #[arg(long, env = "IO360_REQUEST_TIMEOUT_SECS", default_value_t = 30.0)]
    pub request_timeout_secs: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 4096,
            request_timeout_secs: 30.0,
        }
    }
}

impl Limits {
    /// Checks the values; answers a sentence naming the setting at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 {
            return Err("--max-in-flight (IO360_MAX_IN_FLIGHT) must be at least 1".into());
        }
        if !(self.request_timeout_secs.is_finite() && self.request_timeout_secs > 0.0) {
            return Err(format!(
                "--request-timeout-secs (IO360_REQUEST_TIMEOUT_SECS) must be a positive number of seconds, not {}",
                self.request_timeout_secs
            ));
        }
        Ok(())
    }

    /// `router` with the limits on every route it has so far (routes added later, such as
    /// health and metrics, are not limited). `tier` names the tier in refusals.
    pub fn apply(&self, tier: &'static str, router: Router) -> Router {
        let gate = Arc::new(Gate {
            tier,
            permits: Arc::new(Semaphore::new(self.max_in_flight.max(1))),
            timeout: Duration::from_secs_f64(self.request_timeout_secs.max(0.001)),
        });
        router.layer(middleware::from_fn_with_state(gate, limit))
    }
}

struct Gate {
    tier: &'static str,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

async fn limit(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = gate.permits.clone().try_acquire_owned() else {
        return Problem::unavailable(
            "overloaded",
            format!(
                "the {} tier is handling as many requests as it takes at once; try again shortly",
                gate.tier
            ),
            Duration::from_secs(1),
        )
        .into_response();
    };
    match tokio::time::timeout(gate.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable(
            "request-timeout",
            format!(
                "the {} tier gave up on this request after {} s; try again shortly",
                gate.tier,
                gate.timeout.as_secs_f64()
            ),
            Duration::from_secs(1),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn slow_router(limits: &Limits, hold: Arc<tokio::sync::Notify>) -> Router {
        let r = Router::new().route(
            "/slow",
            get(move || {
                let hold = hold.clone();
                async move {
                    hold.notified().await;
                    "done"
                }
            }),
        );
        limits.apply("test", r)
    }

    async fn call(router: &Router) -> Response {
        router
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn requests_over_the_limit_are_refused_with_retry_after() {
        let limits = Limits {
            max_in_flight: 2,
            request_timeout_secs: 30.0,
        };
        let hold = Arc::new(tokio::sync::Notify::new());
        let router = slow_router(&limits, hold.clone());
        let first = tokio::spawn({
            let r = router.clone();
            async move { call(&r).await }
        });
        let second = tokio::spawn({
            let r = router.clone();
            async move { call(&r).await }
        });
        // Let both take their permits.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = call(&router).await;
        assert_eq!(third.status(), 503);
        assert_eq!(third.headers()["retry-after"], "1");
        hold.notify_waiters();
        assert_eq!(first.await.unwrap().status(), 200);
        assert_eq!(second.await.unwrap().status(), 200);
        // Permits come back once answers are out.
        let again = tokio::spawn({
            let r = router.clone();
            async move { call(&r).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        hold.notify_waiters();
        assert_eq!(again.await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_answered_503() {
        let limits = Limits {
            max_in_flight: 4,
            request_timeout_secs: 0.1,
        };
        let router = slow_router(&limits, Arc::new(tokio::sync::Notify::new()));
        let r = call(&router).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }

    #[test]
    fn nonsense_limits_are_refused_at_start() {
        let zero = Limits {
            max_in_flight: 0,
            ..Limits::default()
        };
        assert!(zero.validate().unwrap_err().contains("IO360_MAX_IN_FLIGHT"));
        let never = Limits {
            request_timeout_secs: f64::NAN,
            ..Limits::default()
        };
        assert!(never.validate().is_err());
        assert!(Limits::default().validate().is_ok());
    }
}
