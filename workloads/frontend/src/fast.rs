//! The fast path for site files.
//!
//! A request for a file of the site (GET or HEAD, the file found in memory) is answered here,
//! before the router: no route matching, no middleware futures, metrics recorded through
//! handles looked up once. The answer is the one the router's `static_file` gives; everything
//! else (the API, live updates, the widget, redirects, 404s, refused paths, and a request
//! the load shedder would refuse) goes to the router unchanged. On a small page most of a
//! request's cost was this machinery, not the page.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use futures::future::Either;
use http::{HeaderMap, Method, StatusCode};
use io360_common::telemetry::{RouteRecorder, Telemetry};
use tower::Service;

use crate::shed::{self, Admission};
use crate::site::{self, Lookup};
use crate::{Frontend, respond};

/// Paths the router answers itself even when the site has a file there.
const RESERVED: [&str; 5] = ["/embed.js", "/embed.css", "/metrics", "/healthz", "/readyz"];

/// Serves site files directly and hands everything else to `router`. Cloned for every
/// request, so it is one `Arc`.
#[derive(Clone)]
pub(crate) struct FastStatic(Arc<Inner>);

struct Inner {
    front: Arc<Frontend>,
    admission: Arc<Admission>,
    /// The metrics of the router's `/` and `/{*path}` routes.
    root: RouteRecorder,
    files: RouteRecorder,
    router: Router,
}

impl FastStatic {
    pub(crate) fn new(
        front: Arc<Frontend>,
        admission: Arc<Admission>,
        telemetry: &Telemetry,
        router: Router,
    ) -> Self {
        FastStatic(Arc::new(Inner {
            front,
            admission,
            root: telemetry.route_recorder("/"),
            files: telemetry.route_recorder("/{*path}"),
            router,
        }))
    }
}

impl FastStatic {
    /// The answer for a site file, or `None` for the router to decide. `headers` need hold
    /// only those in [`respond::READS`].
    pub(crate) fn serve(
        &self,
        method: &Method,
        raw: &str,
        headers: &HeaderMap,
    ) -> Option<respond::Prepared> {
        let started = Instant::now();
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if shed::is_dynamic(raw) || RESERVED.contains(&raw) {
            return None;
        }
        let path = site::clean_path(raw).ok()?;
        let inner = &*self.0;
        let Lookup::Found(entry) = inner.front.site.load().lookup(&path) else {
            return None;
        };
        let _ticket = inner.admission.admit(false)?;
        let recorder = if raw == "/" {
            &inner.root
        } else {
            &inner.files
        };
        let _in_flight = recorder.in_flight();
        inner.front.site_hit.inc();
        let res = inner
            .front
            .entry_response(headers, head, &entry, StatusCode::OK);
        recorder.record(method, res.status(), started);
        Some(res)
    }
}

impl Service<Request> for FastStatic {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.serve(req.method(), req.uri().path(), req.headers()) {
            Some(res) => Either::Left(ready(Ok(respond::into_response(res)))),
            None => Either::Right(self.0.router.clone().call(req)),
        }
    }
}
