//! Just enough HTTP/1.1 to hold tens of thousands of polls in a few hundred bytes each.
//!
//! A general-purpose server keeps a task, an 8 KiB read buffer and a router future alive for
//! every open request; for a held poll that costs more than the event it waits for. Here a
//! request head is read into a small buffer that is dropped as soon as it is parsed, and a
//! held poll is parked as its bare socket (see [`crate::hub`]), so what a held poll costs is
//! the socket and a small record. The surface is small on purpose: `GET` and `OPTIONS`
//! without bodies, keep-alive, `Connection: close`, HTTP/1.0, and clear errors for the rest.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use io360_common::Problem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 32 * 1024;

/// How long an idle keep-alive connection may wait for its next request.
pub const IDLE: Duration = Duration::from_secs(75);

/// How long a request head may take to arrive once it has begun, so a client sending a byte
/// now and then cannot hold a connection for ever.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request head: only what longpoll looks at.
#[derive(Debug, Default)]
pub struct Request {
    /// `GET`, `OPTIONS`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (may be empty).
    pub query: String,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The `Last-Event-ID` header, raw.
    pub last_event_id: Option<String>,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (or went idle) between requests.
    Closed,
    /// The request is unacceptable; answer this problem and close.
    Bad(Problem),
}

fn bad(status: http::StatusCode, slug: &str, title: &str) -> ReadError {
    ReadError::Bad(Problem::new(status, slug, title))
}

/// Reads one request head from `stream`. The buffer lives only as long as this call.
pub async fn read_request(stream: &mut TcpStream, idle: Duration) -> Result<Request, ReadError> {
    let mut buf = BytesMut::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(bad(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request-too-large",
                "the request line and headers must fit in 32 KiB",
            ));
        }
        // Wait for bytes before allocating, so an idle connection holds no buffer.
        let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + idle);
        let readable = tokio::time::timeout_at(until, stream.readable()).await;
        match readable {
            Err(_) if deadline.is_some() => {
                return Err(bad(
                    http::StatusCode::REQUEST_TIMEOUT,
                    "head-timeout",
                    "the request head did not arrive within 10 s",
                ));
            }
            Err(_) | Ok(Err(_)) => return Err(ReadError::Closed),
            Ok(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(if buf.is_empty() { 1024 } else { buf.len() });
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(ReadError::Closed),
        }
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                if io360_common::head::has_bare_lf(&buf[..len]) {
                    return Err(bad(
                        http::StatusCode::BAD_REQUEST,
                        "malformed-request",
                        "every line of the request head must end with CRLF",
                    ));
                }
                if req
                    .path
                    .is_some_and(|p| p.len() > io360_common::head::MAX_TARGET)
                {
                    return Err(bad(
                        http::StatusCode::URI_TOO_LONG,
                        "uri-too-long",
                        "the request target must fit in 8 KiB",
                    ));
                }
                let pipelined = buf.len() > len;
                return interpret(&req, pipelined);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(bad(
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "too-many-headers",
                    "a request may carry at most 48 headers",
                ));
            }
            Err(e) => {
                return Err(ReadError::Bad(
                    Problem::new(
                        http::StatusCode::BAD_REQUEST,
                        "malformed-request",
                        "the request is not valid HTTP/1.1",
                    )
                    .with_detail(e.to_string()),
                ));
            }
        }
    }
}

fn interpret(req: &httparse::Request<'_, '_>, pipelined: bool) -> Result<Request, ReadError> {
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.to_owned(), String::new()),
    };
    let http10 = req.version == Some(0);
    let mut out = Request {
        method,
        path,
        query,
        keep_alive: !http10 && !pipelined,
        ..Request::default()
    };
    for h in req.headers.iter() {
        let name = h.name;
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("last-event-id") {
            out.last_event_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 && !pipelined {
                    out.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if value != "0" {
                return Err(bad(
                    http::StatusCode::BAD_REQUEST,
                    "body-not-allowed",
                    "live-update requests carry no body",
                ));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                http::StatusCode::BAD_REQUEST,
                "body-not-allowed",
                "live-update requests carry no body",
            ));
        }
    }
    Ok(out)
}

/// The CORS headers for a response: `Access-Control-Allow-Origin` and `Vary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cors<'a> {
    /// No CORS headers (no `Origin`, or an origin not allowed).
    None,
    /// Any origin (`*` configured).
    Any,
    /// This origin.
    Origin(&'a str),
}

/// A plain-text answer with no CORS headers (health checks).
pub fn plain(status: u16, reason: &str, keep_alive: bool, body: &[u8]) -> Vec<u8> {
    response(
        status,
        reason,
        Cors::None,
        keep_alive,
        Some("text/plain"),
        &[],
        body,
    )
}

/// Builds a whole response. `extra` are complete header lines without the CRLF.
pub fn response(
    status: u16,
    reason: &str,
    cors: Cors<'_>,
    keep_alive: bool,
    content_type: Option<&str>,
    extra: &[&str],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    head(
        &mut out,
        status,
        reason,
        cors,
        keep_alive,
        content_type,
        extra,
    );
    if status != 204 && status != 304 {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Writes a status line and headers, without the final CRLF and without a length.
pub fn head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    cors: Cors<'_>,
    keep_alive: bool,
    content_type: Option<&str>,
    extra: &[&str],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nCache-Control: no-store\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match cors {
        Cors::None => {}
        Cors::Any => out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n"),
        Cors::Origin(o) => {
            out.extend_from_slice(b"Access-Control-Allow-Origin: ");
            out.extend_from_slice(o.as_bytes());
            out.extend_from_slice(b"\r\nVary: Origin\r\n");
        }
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for h in extra {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A problem as a complete response.
pub fn problem(p: &Problem, cors: Cors<'_>, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::to_vec(p).unwrap_or_default();
    let retry;
    let mut extra: Vec<&str> = Vec::new();
    if let Some(secs) = p.retry_after {
        retry = format!("Retry-After: {secs}");
        extra.push(&retry);
    }
    let status = p.status_code();
    response(
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        cors,
        keep_alive,
        Some("application/problem+json"),
        &extra,
        &body,
    )
}

/// Writes all of `bytes`, giving up after `limit`.
pub async fn write_all(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow")),
    }
}

/// Drains and discards what the client sends until it closes, briefly, so a final answer is
/// not lost to a reset when the client still had bytes in flight.
pub async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The origins allowed to read live updates from a browser (`IO360_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    list: Vec<String>,
}

impl Origins {
    /// From a comma-separated list; `*` allows any origin.
    pub fn parse(spec: &str) -> Origins {
        let mut o = Origins::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                o.any = true;
            } else {
                o.list.push(item.trim_end_matches('/').to_owned());
            }
        }
        o
    }

    /// A small index for a request's `Origin`: 0 for none (or not allowed), 1 for any.
    pub fn index(&self, origin: Option<&str>) -> u16 {
        let Some(origin) = origin else { return 0 };
        if let Some(i) = self.list.iter().position(|o| o == origin) {
            return (i + 2).min(u16::MAX as usize) as u16;
        }
        if self.any { 1 } else { 0 }
    }

    /// The CORS answer for an index from [`Origins::index`].
    pub fn cors(&self, index: u16) -> Cors<'_> {
        match index {
            0 => Cors::None,
            1 => Cors::Any,
            i => self
                .list
                .get(i as usize - 2)
                .map_or(Cors::None, |o| Cors::Origin(o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly() {
        let o = Origins::parse("https://a.example, https://b.example/");
        assert_eq!(
            o.cors(o.index(Some("https://b.example"))),
            Cors::Origin("https://b.example")
        );
        assert_eq!(o.cors(o.index(Some("https://evil.example"))), Cors::None);
        assert_eq!(o.cors(o.index(None)), Cors::None);
        let any = Origins::parse("*");
        assert_eq!(any.cors(any.index(Some("https://x.example"))), Cors::Any);
    }

    /// Reads one request from `bytes` sent on a real socket.
    async fn read_from(bytes: &'static [u8]) -> Result<Request, ReadError> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(bytes).await.unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        let _c = client.await.unwrap();
        read_request(&mut s, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn heads_with_bare_line_feeds_or_long_targets_are_refused() {
        let ok = read_from(b"GET /v1/poll?thread=a HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.is_ok());
        let status = |r: Result<Request, ReadError>| match r {
            Err(ReadError::Bad(p)) => p.status,
            _ => 0,
        };
        let lf = read_from(b"GET /v1/poll?thread=a HTTP/1.1\r\nX: a\nHost: x\r\n\r\n").await;
        assert_eq!(status(lf), 400);
        let long: &'static [u8] = Box::leak(
            format!("GET /v1/poll?thread={} HTTP/1.1\r\n\r\n", "a".repeat(9000))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert_eq!(status(read_from(long).await), 414);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response(
            200,
            "OK",
            Cors::Any,
            false,
            Some("application/json"),
            &[],
            b"{}",
        );
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn parsed(bytes: &[u8]) -> Option<Result<Request, ReadError>> {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(bytes) {
                Ok(httparse::Status::Complete(_)) => Some(interpret(&req, false)),
                _ => None,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_head_is_a_request_or_a_problem(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
                if let Some(Err(ReadError::Bad(p))) = parsed(&bytes) {
                    prop_assert!(p.status >= 400 && p.status < 500);
                }
            }

            #[test]
            fn requests_with_bodies_are_refused(len in 1u64..u64::MAX, chunked in any::<bool>()) {
                let head = if chunked {
                    "GET /v1/poll?thread=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
                } else {
                    format!("GET /v1/poll?thread=a HTTP/1.1\r\nContent-Length: {len}\r\n\r\n")
                };
                let status = match parsed(head.as_bytes()) {
                    Some(Err(ReadError::Bad(p))) => p.status,
                    _ => 0,
                };
                prop_assert_eq!(status, 400);
            }

            #[test]
            fn origin_and_resume_point_are_read_as_sent(
                origin in "https://[a-z]{1,20}\\.example",
                id in 0u64..1_000_000,
                close in any::<bool>(),
            ) {
                let head = format!(
                    "GET /v1/events?thread=a HTTP/1.1\r\nOrigin: {origin}\r\nLast-Event-ID: {id}\r\n{}\r\n",
                    if close { "Connection: close\r\n" } else { "" }
                );
                let Some(Ok(req)) = parsed(head.as_bytes()) else {
                    return Err(TestCaseError::fail("not parsed"));
                };
                prop_assert_eq!(req.origin.as_deref(), Some(origin.as_str()));
                prop_assert_eq!(req.last_event_id, Some(id.to_string()));
                prop_assert_eq!(req.keep_alive, !close);
                prop_assert_eq!(req.path, "/v1/events");
            }
        }
    }
}
