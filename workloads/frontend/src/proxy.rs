//! Passing `/api` to logic and `/v1` to longpoll where the frontend is the only public face
//! (`io360 up`, or a cluster without an Ingress).
//!
//! Answers stream back (long polls and Server-Sent Events pass through as they come). A
//! request body is read here first, up to the API's limit and within a time limit, and sent
//! on whole: a body the other tier would refuse is refused here with 413 (sending it on
//! would race the other tier's early refusal and end as a 503), a body trickled in too slowly
//! gets 408, and a request without a body is sent without one (an empty chunked body is
//! still a body to longpoll). When the other tier is not configured or cannot be reached,
//! the browser gets a 503 problem with `Retry-After`, never a hang or an HTML error page.
//!
//! One route streams its body instead: an import's upload (`POST /api/v1/admin/import`),
//! which may be gigabytes. It is sent on as it arrives, bounded in size (413, as a whole
//! body is), by [`STALL`] without a byte (408), and by the route's own time limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use io360_common::Problem;
use io360_common::auth::{self, Credential};
use ipnet::IpNet;

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
    /// Largest request body sent on.
    max_body: usize,
    http: reqwest::Client,
    /// The frontend's credential, presented to the tier (logic); `None` for longpoll, whose
    /// routes are public.
    credential: Option<Credential>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted: Vec<IpNet>,
    /// Whether the request body is streamed through instead of read whole.
    streaming: bool,
}

impl Upstream {
    /// Forwards to `tier` at `base`, or answers 503 when `base` is `None`. Request bodies over
    /// `max_body` bytes are refused with 413.
    pub fn new(
        tier: &'static str,
        base: Option<&str>,
        timeout: Option<Duration>,
        max_body: usize,
    ) -> Upstream {
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
            max_body,
            http,
            credential: None,
            trusted: Vec::new(),
            streaming: false,
        }
    }

    /// Streams request bodies through as they arrive (still bounded by `max_body`).
    pub fn streaming(mut self) -> Upstream {
        self.streaming = true;
        self
    }

    /// Presents `credential` on every forwarded request.
    pub fn presenting(mut self, credential: Option<Credential>) -> Upstream {
        self.credential = credential;
        self
    }

    /// Believes `X-Forwarded-For` from these proxies only.
    pub fn trusting(mut self, trusted: Vec<IpNet>) -> Upstream {
        self.trusted = trusted;
        self
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
        // A client's own claims are never passed on: its address is the one found here, and
        // a tier credential it sends is dropped (the frontend's own goes in its place).
        headers.remove(FORWARDED_FOR);
        headers.remove(auth::HEADER);
        if let Some(ConnectInfo(addr)) = peer {
            let ip = client_address(&parts.headers, addr.ip(), &self.trusted);
            if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
                headers.insert(FORWARDED_FOR, v);
            }
        }
        if let Some(c) = &self.credential {
            headers.insert(auth::HEADER, c.header());
        }
        if let Some(host) = parts.headers.get(header::HOST) {
            headers.insert("x-forwarded-host", host.clone());
        }
        headers
            .entry("x-forwarded-proto")
            .or_insert(HeaderValue::from_static("http"));
        let mut out = if self.streaming {
            let cut = Arc::new(std::sync::Mutex::new(None));
            let body = match stream_body(&parts.headers, body, self.max_body, cut.clone()).await {
                Ok(b) => b,
                Err(p) => return p.into_response(),
            };
            // The length stays as the client declared it: the stream refuses a body over it.
            let mut out = self
                .http
                .request(parts.method, &url)
                .headers(headers)
                .body(body);
            if let Some(t) = self.timeout {
                out = out.timeout(t);
            }
            return match out.send().await {
                Ok(a) => self.answer(a),
                Err(e) => {
                    // A body refused on the way explains the failed exchange.
                    if let Some(p) = cut.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        return p.into_response();
                    }
                    tracing::warn!(tier = self.tier, %url, error = %e, "forwarding failed");
                    self.unavailable("cannot be reached")
                }
            };
        } else {
            let body = match read_body(&parts.headers, body, self.max_body).await {
                Ok(b) => b,
                Err(p) => return p.into_response(),
            };
            // The length is the one of the bytes read, whatever the request said.
            headers.remove(header::CONTENT_LENGTH);
            let mut out = self.http.request(parts.method, &url).headers(headers);
            if let Some(b) = body {
                out = out.body(b);
            }
            out
        };
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
        self.answer(answer)
    }

    /// The tier's answer, streamed back.
    fn answer(&self, answer: reqwest::Response) -> Response {
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

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How long a streamed upload may go without a byte.
pub(crate) const STALL: Duration = Duration::from_secs(60);

fn too_large(max: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than the {max} bytes this route accepts"),
    )
}

/// A streamed request body, bounded: a declared length over `max` is refused at once (after
/// reading and dropping up to [`DRAIN_MAX`] of it, so the client reads the answer); an
/// undeclared one is cut at `max`, and one that stalls for [`STALL`] is cut, with the reason
/// left in `cut` for the answer.
async fn stream_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    cut: Arc<std::sync::Mutex<Option<Problem>>>,
) -> Result<reqwest::Body, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > max as u64
    {
        if n <= (max + DRAIN_MAX) as u64 {
            let mut stream = body.into_data_stream();
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = tokio::time::timeout(STALL, drain).await;
        }
        return Err(too_large(max));
    }
    let state = (body.into_data_stream(), 0usize, cut);
    let stream = futures::stream::unfold(state, move |(mut body, seen, cut)| async move {
        let fail = |p: Problem, cut: &Arc<std::sync::Mutex<Option<Problem>>>| {
            let title = p.title.clone();
            *cut.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
            std::io::Error::other(title)
        };
        match tokio::time::timeout(STALL, body.next()).await {
            Err(_) => {
                let p = Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-stalled",
                    format!(
                        "no byte of the request body arrived for {} s",
                        STALL.as_secs()
                    ),
                );
                Some((Err(fail(p, &cut)), (body, seen, cut)))
            }
            Ok(None) => None,
            Ok(Some(Err(_))) => {
                let p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "the request body could not be read",
                );
                Some((Err(fail(p, &cut)), (body, seen, cut)))
            }
            Ok(Some(Ok(chunk))) => {
                let seen = seen + chunk.len();
                if seen > max {
                    return Some((Err(fail(too_large(max), &cut)), (body, seen, cut)));
                }
                Some((Ok(chunk), (body, seen, cut)))
            }
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// The client's address: the connection's, unless it comes from a trusted proxy; then the
/// rightmost address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
/// appends the address it saw, so only the part written by trusted proxies can be believed).
pub(crate) fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                // Past a malformed entry nothing is believed.
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return client;
            }
        }
    }
    client
}

/// The most bytes of a too-large body read and dropped before answering 413; a larger one is
/// answered at once and its connection closed.
const DRAIN_MAX: usize = 8 << 20;

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The request body, read whole: `None` when the request has none.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Option<bytes::Bytes>, Problem> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Problem::invalid("Content-Length", "must be a number of bytes"))?,
        ),
    };
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if !chunked && declared.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the request body is larger than the {max} bytes this API accepts"),
        )
    };
    let read = async {
        let mut stream = body.into_data_stream();
        if declared.is_some_and(|n| n > DRAIN_MAX as u64) {
            return Err(too_large());
        }
        let mut buf = bytes::BytesMut::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "the request body could not be read",
                )
            })?;
            seen += chunk.len();
            if seen > DRAIN_MAX {
                return Err(too_large());
            }
            // Past the limit the rest is read and dropped, so the client, still sending,
            // reads the 413 instead of a reset.
            if seen <= max {
                buf.extend_from_slice(&chunk);
            }
        }
        if seen > max {
            return Err(too_large());
        }
        Ok(Some(buf.freeze()))
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_client_claim_is_ignored_unless_it_comes_through_a_trusted_proxy() {
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let spoofed = xff(&["198.51.100.1"]);
        // No proxy configured: the connection's address, whatever the header says.
        assert_eq!(client_address(&spoofed, client, &[]), client);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A client not in the list cannot claim another address either.
        assert_eq!(client_address(&spoofed, client, &trusted), client);
        // Through the load balancer: the rightmost address it did not write itself.
        let through = xff(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(client_address(&through, lb, &trusted), client);
        let two_hops = xff(&["198.51.100.1", "203.0.113.9, 10.0.0.7"]);
        assert_eq!(client_address(&two_hops, lb, &trusted), client);
        // Garbage stops the walk at the last address believed.
        let junk = xff(&["junk, 10.0.0.7"]);
        assert_eq!(
            client_address(&junk, lb, &trusted),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(&HeaderMap::new(), lb, &trusted), lb);
    }
}
