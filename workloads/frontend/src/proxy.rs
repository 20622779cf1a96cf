//! Passing `/api` to logic and `/v1` to longpoll where the frontend is the only public face
//! (`io360 up`, or a cluster without an Ingress).
//!
//! Bodies stream both ways (long polls and Server-Sent Events pass through as they come).
//! When the other tier is not configured or cannot be reached, the browser gets a 503 problem
//! with `Retry-After`, never a hang or an HTML error page.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use io360_common::Problem;

/// Headers that describe one hop, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One tier the frontend forwards to.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    tier: &'static str,
    base: Option<String>,
    /// Longest time for the whole exchange; `None` for streams that may last.
    timeout: Option<Duration>,
    http: reqwest::Client,
}

impl Upstream {
    /// Forwards to `tier` at `base`, or answers 503 when `base` is `None`.
    pub fn new(tier: &'static str, base: Option<&str>, timeout: Option<Duration>) -> Upstream {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Upstream {
            tier,
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            timeout,
            http,
        }
    }

    fn unavailable(&self, why: &str) -> Response {
        let slug = if self.tier == "longpoll" {
            "live-unavailable"
        } else {
            "tier-unavailable"
        };
        Problem::unavailable(
            slug,
            format!("the {} tier {why}; try again shortly", self.tier),
            Duration::from_secs(5),
        )
        .into_response()
    }

    /// Forwards `req` and streams the answer back.
    pub async fn forward(&self, req: Request) -> Response {
        let Some(base) = &self.base else {
            return self.unavailable("is not configured here");
        };
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().copied();
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{base}{path}");
        let mut headers = strip_hop_by_hop(&parts.headers);
        headers.remove(header::HOST);
        if let Some(ConnectInfo(addr)) = peer {
            let ip = addr.ip().to_string();
            let xff = match parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                headers.insert("x-forwarded-for", v);
            }
        }
        if let Some(host) = parts.headers.get(header::HOST) {
            headers.insert("x-forwarded-host", host.clone());
        }
        headers
            .entry("x-forwarded-proto")
            .or_insert(HeaderValue::from_static("http"));
        let mut out = self
            .http
            .request(parts.method, &url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()));
        if let Some(t) = self.timeout {
            out = out.timeout(t);
        }
        let answer = match out.send().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(tier = self.tier, %url, error = %e, "forwarding failed");
                return self.unavailable("cannot be reached");
            }
        };
        let status = answer.status();
        let headers = strip_hop_by_hop(answer.headers());
        let mut res = Response::new(Body::from_stream(
            answer.bytes_stream().map_err(std::io::Error::other),
        ));
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        res
    }
}

fn strip_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    // Headers named by `Connection` are hop-by-hop too.
    if let Some(conn) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
    {
        for name in conn.split(',') {
            if let Ok(n) = HeaderName::from_bytes(name.trim().as_bytes()) {
                out.remove(n);
            }
        }
    }
    for h in &HOP_BY_HOP {
        out.remove(h);
    }
    out
}
