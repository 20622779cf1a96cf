//! The frontend's own HTTP/1.1 loop, in front of hyper.
//!
//! One single-threaded runtime per core accepts from the shared listening socket and serves
//! its connections start to finish, the way nginx runs one event loop per worker: a request
//! never moves between threads and no thread wakes another.
//!
//! A connection starts here. Each request head is parsed in place; a `GET` or `HEAD` of a
//! site file (what a page view is made of) is answered from memory with one vectored write:
//! the head written into a buffer the connection reuses, the body the prepared bytes
//! themselves. Everything else (the API, live updates, the widget, 404s, HTTP/1.0, HTTP/2,
//! bodies, upgrades, malformed or oversized heads) hands the connection, with the bytes
//! already read, to hyper and the router for the rest of its life, so the answers there are
//! exactly the router's. On a small page most of a request's cost was the general machinery,
//! not the page.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use io360_common::Problem;
use io360_common::serve::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::Service;

use crate::clients::{Clients, Held};
use crate::fast::FastStatic;
use crate::respond;

/// The largest request head accepted (as longpoll's); a longer one is refused with 431, or
/// 414 when the request line alone is longer.
const MAX_HEAD: usize = 32 * 1024;

/// How long a kept-alive connection may sit between two requests (nginx: 65 s).
const IDLE: Duration = Duration::from_secs(75);

/// How long a kept-alive connection may sit idle while descriptors are scarce.
const SCARCE_IDLE: Duration = Duration::from_secs(2);

/// How long a request head may take to arrive once it has begun (nginx: 60 s).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection served by hyper (the API, live updates) may wait for the next request
/// head, or take to send one.
const HYPER_IDLE: Duration = Duration::from_secs(30);

/// The answer to a connection over its address's share, written without waiting.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 149\r\n\r\n{\"type\":\"https://io360.dev/problems/too-many-connections\",\"title\":\"your address has too many connections open\",\"status\":429,\"retryAfter\":5}";

/// Serves `service` on `listener` with `threads` threads until `shutdown`, then lets every
/// connection finish what it is answering. Returns when every thread has stopped.
pub(crate) async fn serve(
    listener: TcpListener,
    service: FastStatic,
    clients: Arc<Clients>,
    shutdown: Shutdown,
    threads: usize,
) -> io::Result<()> {
    let listener = listener.into_std()?;
    let addr = listener.local_addr()?;
    let threads = threads.max(1);
    tracing::info!(tier = "frontend", %addr, threads, "listening");
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let share = Arc::new(Share {
        open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
        inboxes,
    });
    let mut done = Vec::new();
    for (i, inbox) in receivers.into_iter().enumerate() {
        let worker = Worker {
            me: i,
            share: share.clone(),
            service: service.clone(),
            clients: clients.clone(),
            shutdown: shutdown.clone(),
        };
        let listener = listener.try_clone()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("io360-frontend-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async move {
                            worker.run(TcpListener::from_std(listener)?, inbox).await
                        })
                    });
                let _ = tx.send(served);
            })?;
        done.push(rx);
    }
    drop(share);
    for rx in done {
        rx.await
            .map_err(|_| io::Error::other("a frontend serving thread panicked"))??;
    }
    Ok(())
}

/// What the serving threads share: how many connections each has open, and a way to hand
/// one a connection.
///
/// Every thread accepts from the one listening socket, and the kernel wakes whichever it
/// likes: left alone, a burst of new connections can all land on one thread while the other
/// idles (measured: 64 connections, all on one of two threads). So the thread that accepts a
/// connection gives it to the thread with the fewest open ones. A connection moves at most
/// once, when it is accepted; its requests never leave that thread.
struct Share {
    open: Vec<AtomicUsize>,
    inboxes: Vec<tokio::sync::mpsc::UnboundedSender<Handed>>,
}

impl Share {
    /// The thread that should take a new connection: the one with the fewest open, `me` on a
    /// tie. Counts it as open there.
    fn assign(&self, me: usize) -> usize {
        let load = |i: usize| self.open[i].load(Ordering::Relaxed);
        let mut best = me;
        for i in 0..self.open.len() {
            if load(i) < load(best) {
                best = i;
            }
        }
        self.open[best].fetch_add(1, Ordering::Relaxed);
        best
    }
}

/// A connection handed from the thread that accepted it to the one that serves it.
type Handed = (std::net::TcpStream, SocketAddr, Held);

/// One serving thread.
struct Worker {
    me: usize,
    share: Arc<Share>,
    service: FastStatic,
    clients: Arc<Clients>,
    shutdown: Shutdown,
}

impl Worker {
    /// Accepts connections and serves those assigned to this thread.
    async fn run(
        self,
        listener: TcpListener,
        mut inbox: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    ) -> io::Result<()> {
        let mut connections = JoinSet::new();
        let mut stop = pin!(self.shutdown.wait());
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Some(held) = self.clients.connect(peer.ip()) else {
                            // Over its address's share: say so if the socket takes it at once,
                            // and close.
                            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                            continue;
                        };
                        // Answers go out as soon as they are written (no Nagle wait on a head
                        // written apart from its body).
                        let _ = stream.set_nodelay(true);
                        let to = self.share.assign(self.me);
                        if to == self.me {
                            self.spawn(&mut connections, stream, peer, held);
                        } else {
                            let handed = stream
                                .into_std()
                                .map_err(|e| e.to_string())
                                .and_then(|s| {
                                    self.share.inboxes[to].send((s, peer, held)).map_err(|e| e.to_string())
                                });
                            if let Err(e) = handed {
                                self.share.open[to].fetch_sub(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "could not hand a connection to another thread");
                            }
                        }
                    }
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine. Pause so a full table is not spun on.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some((stream, peer, held)) = inbox.recv() => match TcpStream::from_std(stream) {
                    Ok(stream) => self.spawn(&mut connections, stream, peer, held),
                    Err(e) => {
                        self.share.open[self.me].fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not take a connection from another thread");
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut stop => break,
            }
        }
        drop(listener);
        // Connections handed over but not yet taken are closed unanswered, like a backlog.
        inbox.close();
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    /// Serves `stream` on this thread; it counts as open here, and against its client, until
    /// it closes.
    fn spawn(&self, set: &mut JoinSet<()>, stream: TcpStream, peer: SocketAddr, held: Held) {
        let share = self.share.clone();
        let me = self.me;
        let served = connection(
            stream,
            peer,
            self.service.clone(),
            self.clients.clone(),
            self.shutdown.clone(),
        );
        set.spawn(async move {
            served.await;
            drop(held);
            share.open[me].fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What to do after looking at the buffered bytes.
enum Step {
    /// A site file was answered; drop this many bytes and look again.
    Answered { consumed: usize, close: bool },
    /// The head is not complete yet.
    Read,
    /// Hand the connection to hyper.
    Hyper,
    /// Answer this problem and close: the head is malformed or too large.
    Refuse(Problem),
}

/// Serves one connection: site files here, the rest through hyper.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: FastStatic,
    clients: Arc<Clients>,
    shutdown: Shutdown,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut head = Vec::with_capacity(512);
    let mut stop = pin!(shutdown.wait());
    let idle_for = || if clients.scarce() { SCARCE_IDLE } else { IDLE };
    // One timer: the wait for a request between requests, then the time its head may take.
    let idle = tokio::time::sleep(idle_for());
    let mut idle = pin!(idle);
    loop {
        let step = match parse(&buf) {
            Parsed::Site(site, len) => {
                match service.serve(&site.method, site.path, &site.headers) {
                    Some(res) => {
                        // While draining, every answer closes its connection, so a client on
                        // a keep-alive connection comes back through the load balancer, to
                        // another instance.
                        let close = site.close || shutdown.is_draining();
                        write_head(&mut head, &res, close);
                        if write(&mut stream, &head, res.body()).await.is_err() {
                            return;
                        }
                        Step::Answered {
                            consumed: len,
                            close,
                        }
                    }
                    None => Step::Hyper,
                }
            }
            Parsed::Read => Step::Read,
            Parsed::Hyper => Step::Hyper,
            Parsed::Refuse(p) => Step::Refuse(p),
        };
        match step {
            Step::Answered { consumed, close } => {
                buf.advance(consumed);
                if close || shutdown.is_triggered() {
                    let _ = stream.shutdown().await;
                    return;
                }
                if buf.is_empty() {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + idle_for());
                }
                continue;
            }
            Step::Hyper => {
                return hand_to_hyper(
                    stream,
                    buf.freeze(),
                    peer,
                    service,
                    shutdown.clone(),
                    stop.as_mut(),
                )
                .await;
            }
            Step::Refuse(p) => return refuse(stream, &p).await,
            Step::Read => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let room = buf.capacity() - buf.len();
        let waiting = buf.is_empty();
        tokio::select! {
            read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf) => match read {
                Ok(0) | Err(_) => return,
                // A read that left room took everything the socket had: mark it drained, so
                // the next read waits for the kernel's next readiness event instead of asking
                // the socket first and hearing "would block" (nginx does the same). One system
                // call less per request. Bytes that arrive meanwhile raise a new event.
                Ok(n) if n < room => {
                    let _ = stream.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
                Ok(_) => {}
            },
            () = &mut idle => {
                if !waiting {
                    // A head begun and never finished.
                    return refuse(stream, &Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "head-timeout",
                        format!("the request head did not arrive within {} s", HEAD_TIMEOUT.as_secs()),
                    ))
                    .await;
                }
                return;
            }
            // Between requests: nothing is lost by closing now.
            () = &mut stop, if buf.is_empty() => return,
        }
        if waiting && !buf.is_empty() {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + HEAD_TIMEOUT);
        }
    }
}

/// What the bytes read so far on a connection are.
enum Parsed<'a> {
    /// A request for this loop, with the length of its head.
    Site(SiteRequest<'a>, usize),
    /// Not a whole head yet.
    Read,
    /// A request for hyper and the router.
    Hyper,
    /// A head to refuse.
    Refuse(Problem),
}

/// Looks at the bytes read so far: the one place a request head is judged.
fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Parsed::Refuse(too_large(buf)),
        Ok(httparse::Status::Complete(len)) => match refusal(&req, &buf[..len]) {
            Some(p) => Parsed::Refuse(p),
            None => match site_request(&req) {
                Some(site) => Parsed::Site(site, len),
                None => Parsed::Hyper,
            },
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Read,
        Ok(httparse::Status::Partial) => Parsed::Refuse(too_large(buf)),
        // More headers than parsed here: hyper takes up to 100.
        Err(httparse::Error::TooManyHeaders) => Parsed::Hyper,
        // HTTP/2 with prior knowledge.
        Err(httparse::Error::Version) if buf.starts_with(b"PRI * HTTP/2.0") => Parsed::Hyper,
        Err(e) => Parsed::Refuse(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "the request is not valid HTTP/1.1",
            )
            .with_detail(e.to_string()),
        ),
    }
}

/// Why a complete head is refused, if it is: a bare LF in it, or a target too long.
fn refusal(req: &httparse::Request<'_, '_>, head: &[u8]) -> Option<Problem> {
    if io360_common::head::has_bare_lf(head) {
        return Some(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "every line of the request head must end with CRLF",
        ));
    }
    if req
        .path
        .is_some_and(|p| p.len() > io360_common::head::MAX_TARGET)
    {
        return Some(uri_too_long());
    }
    None
}

fn uri_too_long() -> Problem {
    Problem::new(
        StatusCode::URI_TOO_LONG,
        "uri-too-long",
        "the request target must fit in 8 KiB",
    )
}

/// The refusal of a head that outgrew [`MAX_HEAD`]: 414 when the request line is not even
/// complete, else 431.
fn too_large(buf: &[u8]) -> Problem {
    if !buf.windows(2).any(|w| w == b"\r\n") {
        return uri_too_long();
    }
    Problem::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request-too-large",
        "the request line and headers must fit in 32 KiB",
    )
}

/// Answers `p` and closes the connection.
async fn refuse(mut stream: TcpStream, p: &Problem) {
    let body = serde_json::to_vec(p).unwrap_or_default();
    let status = p.status_code();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Unknown"),
        body.len()
    );
    if write(&mut stream, head.as_bytes(), &body).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// A request this loop answers itself, if it is one.
struct SiteRequest<'a> {
    method: Method,
    path: &'a str,
    /// Only the headers the answer depends on ([`respond::READS`]).
    headers: HeaderMap,
    close: bool,
}

/// Whether `req` is a plain HTTP/1.1 `GET` or `HEAD` without a body or an upgrade, and if so
/// what the answer depends on. Anything unusual is left to hyper.
fn site_request<'a>(req: &httparse::Request<'_, 'a>) -> Option<SiteRequest<'a>> {
    if req.version != Some(1) {
        return None;
    }
    let method = match req.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    // An origin-form target of visible ASCII; the query plays no part in a site file.
    let target = req.path?;
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut headers = HeaderMap::new();
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in std::str::from_utf8(h.value).ok()?.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        } else if let Some(read) = respond::READS
            .iter()
            .find(|r| name.eq_ignore_ascii_case(r.as_str()))
        {
            headers.append(read.clone(), HeaderValue::from_bytes(h.value).ok()?);
        }
    }
    Some(SiteRequest {
        method,
        path,
        headers,
        close,
    })
}

/// Writes the status line and headers of `res` into `out`.
fn write_head(out: &mut Vec<u8>, res: &respond::Prepared, close: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(res.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        res.status()
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    date(out);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the current time as an HTTP date, formatted at most once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes `head` then `body`, with as few system calls as the socket allows.
async fn write(stream: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

/// Serves the rest of a connection with hyper and the router, starting with `read`, the bytes
/// already taken from the socket.
async fn hand_to_hyper(
    stream: TcpStream,
    read: Bytes,
    peer: SocketAddr,
    service: FastStatic,
    shutdown: Shutdown,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) {
    let io = TokioIo::new(Rewind { read, stream });
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut service = service.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut res = service.call(req).await.unwrap_or_else(|e| match e {});
            if shutdown.is_draining() {
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(res)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper never times a connection out: one that made a request and went
    // quiet would be held for ever. The head timeout runs while waiting for the next request
    // too, so it bounds idle keep-alive as well.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HYPER_IDLE);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = &mut stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What [`parse`] decided, without borrows.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Site(String, usize, bool),
        Read,
        Hyper,
        Refuse(u16),
    }

    fn seen(buf: &[u8]) -> Seen {
        match parse(buf) {
            Parsed::Site(s, len) => Seen::Site(s.path.to_owned(), len, s.close),
            Parsed::Read => Seen::Read,
            Parsed::Hyper => Seen::Hyper,
            Parsed::Refuse(p) => Seen::Refuse(p.status),
        }
    }

    /// A plain page request: a path, maybe a query, some ordinary headers.
    fn page_request() -> impl Strategy<Value = (String, String, Vec<(String, String)>)> {
        (
            "/[a-zA-Z0-9._~/%-]{0,60}",
            proptest::option::of("[a-z0-9=&]{0,20}"),
            proptest::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,40}"), 0..8),
        )
            .prop_map(|(path, query, headers)| {
                let target = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let headers = headers
                    .into_iter()
                    .map(|(n, v)| (n, v.trim().to_owned()))
                    .collect();
                (path, target, headers)
            })
    }

    fn head(target: &str, headers: &[(String, String)], extra: &str) -> String {
        let mut h = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
        for (n, v) in headers {
            h.push_str(&format!("{n}: {v}\r\n"));
        }
        h.push_str(extra);
        h.push_str("\r\n");
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_are_judged_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = seen(&bytes);
        }

        #[test]
        fn page_requests_are_answered_here((path, target, headers) in page_request()) {
            let h = head(&target, &headers, "");
            prop_assert_eq!(seen(h.as_bytes()), Seen::Site(path, h.len(), false));
            // Cut anywhere before its end, it is not complete yet.
            let cut = h.len() / 2;
            prop_assert_eq!(seen(&h.as_bytes()[..cut]), Seen::Read);
        }

        #[test]
        fn a_bare_line_feed_anywhere_in_the_head_is_refused(
            (_, target, headers) in page_request(),
            at in any::<prop::sample::Index>(),
        ) {
            let h = head(&target, &headers, "");
            // Replace one CRLF of a header line (not the last blank line) by a bare LF.
            let crlfs: Vec<usize> = h.match_indices("\r\n").map(|(i, _)| i).collect();
            let i = crlfs[at.index(crlfs.len() - 1)];
            let mut bytes = h.into_bytes();
            bytes.remove(i);
            prop_assert_eq!(seen(&bytes), Seen::Refuse(400));
        }

        #[test]
        fn bodies_and_upgrades_go_to_hyper(
            (_, target, headers) in page_request(),
            len in 1u32..100_000,
            which in 0..3usize,
        ) {
            let extra = match which {
                0 => format!("Content-Length: {len}\r\n"),
                1 => "Transfer-Encoding: chunked\r\n".to_owned(),
                _ => "Connection: upgrade\r\nUpgrade: websocket\r\n".to_owned(),
            };
            let h = head(&target, &headers, &extra);
            prop_assert_eq!(seen(h.as_bytes()), Seen::Hyper);
        }

        #[test]
        fn long_targets_and_heads_are_refused(extra in 0usize..4096) {
            let target = format!("/{}", "a".repeat(io360_common::head::MAX_TARGET + extra));
            let h = head(&target, &[], "");
            prop_assert_eq!(seen(h.as_bytes()), Seen::Refuse(414));
            let big = vec![("x-big".to_owned(), "b".repeat(MAX_HEAD + extra))];
            let h = head("/", &big, "");
            prop_assert_eq!(seen(h.as_bytes()), Seen::Refuse(431));
        }
    }
}
