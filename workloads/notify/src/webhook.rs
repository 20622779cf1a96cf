//! Delivers queued webhook events: a signed JSON POST per event, retried with backoff.
//!
//! Every request carries `IO360-Webhook-Id` (the delivery's id, also in the body, the same on
//! every attempt), `IO360-Webhook-Timestamp` (Unix seconds when this attempt was signed) and
//! `IO360-Webhook-Signature: v1=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>` under the
//! endpoint's secret. A receiver recomputes it, compares in constant time, refuses a
//! timestamp more than five minutes away from its clock, and refuses an id it has seen: a
//! forged body fails the MAC, a replayed request is either too old or a repeated id.
//!
//! Deliveries to one endpoint go in feed order, one at a time; a failure stops that endpoint's
//! turn until the delivery's next attempt falls due, so a receiver that is down is not
//! hammered, and other endpoints are not held up by it. Delays double from the first one up
//! to a ceiling, each shortened by up to a quarter at random, so receivers that fail together
//! are not retried in lockstep. After the last attempt a delivery is logged as failed and
//! dropped.
//!
//! Server-side request forgery: a URL whose host is, or resolves to, a loopback, private,
//! link-local or otherwise non-public address is refused, at registration and again at each
//! connection (made to the address just checked), unless the operator allows private
//! addresses. Redirects are not followed, and no proxy is used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hmac::{Hmac, Mac};
use io360_common::serve::Shutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::Sha256;

use crate::hooks::{Attempt, Delivery, Endpoint};
use crate::outbox::{Outbox, OutboxError};

/// The header carrying a delivery's id.
pub const ID_HEADER: &str = "IO360-Webhook-Id";
/// The header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "IO360-Webhook-Timestamp";
/// The header carrying the signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "IO360-Webhook-Signature";
/// The header carrying the event's kind.
pub const EVENT_HEADER: &str = "IO360-Webhook-Event";

/// Webhook settings of the notify tier.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    /// Run the notify tier for webhooks even without a mail server (`io360 up` starts notify
    /// when this or `IO360_SMTP_URL` is set).
    #[arg(long = "webhooks", env = "IO360_WEBHOOKS", default_value_t = false)]
    pub enabled: bool,

    /// Allow webhook URLs on loopback, private and link-local addresses (a receiver inside
    /// the cluster, or a test on 127.0.0.1). Off: such URLs are refused, also when a name
    /// resolves to such an address later.
    #[arg(
        long = "webhook-allow-private",
        env = "IO360_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false
    )]
    pub allow_private: bool,

    /// Endpoints a site may register.
    #[arg(
        long = "webhook-max-endpoints",
        env = "IO360_WEBHOOK_MAX_ENDPOINTS",
        default_value_t = 20
    )]
    pub max_endpoints: usize,

    /// Deliveries one endpoint may have waiting; events past it are dropped and logged.
    #[arg(
        long = "webhook-queue",
        env = "IO360_WEBHOOK_QUEUE",
        default_value_t = 1000
    )]
    pub queue: usize,

    /// Attempts per delivery before it is given up (logged as failed).
    #[arg(
        long = "webhook-max-attempts",
        env = "IO360_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 10
    )]
    pub max_attempts: u32,

    /// The delay before the second attempt, milliseconds; it doubles after each failure.
    #[arg(
        long = "webhook-retry-ms",
        env = "IO360_WEBHOOK_RETRY_MS",
        default_value_t = 10_000
    )]
    pub retry_ms: u64,

    /// The longest delay between two attempts, seconds.
    #[arg(
        long = "webhook-retry-max-secs",
        env = "IO360_WEBHOOK_RETRY_MAX_SECS",
        default_value_t = 3600
    )]
    pub retry_max_secs: u64,

    /// How long one attempt may take (connect, send, answer), seconds.
    #[arg(
        long = "webhook-timeout-secs",
        env = "IO360_WEBHOOK_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub timeout_secs: u64,
}

impl WebhookConfig {
    /// Checks the settings at start.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err(
                "--webhook-max-attempts (IO360_WEBHOOK_MAX_ATTEMPTS) must be at least 1".into(),
            );
        }
        if self.queue == 0 {
            return Err("--webhook-queue (IO360_WEBHOOK_QUEUE) must be at least 1".into());
        }
        if self.retry_ms == 0 || self.retry_max_secs == 0 || self.timeout_secs == 0 {
            return Err("webhook delays and timeouts must be above zero".into());
        }
        Ok(())
    }
}

/// The HMAC-SHA256 of `<timestamp>.<body>` under `secret`, as the signature header carries it
/// (`v1=` and lowercase hex).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether an address is one a webhook may reach without the private-address setting: not
/// loopback, private, link-local, shared (CGNAT), unique-local, unspecified, multicast,
/// broadcast or documentation.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0064 && s[1] == 0xff9b))
        }
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute http(s) URL.
    #[error(
        "must be an absolute http:// or https:// URL (at most 2048 bytes, no user or password)"
    )]
    Malformed,
    /// Its host is or resolves to a non-public address.
    #[error(
        "resolves to {0}, a loopback, private or link-local address; such URLs are refused unless the operator sets IO360_WEBHOOK_ALLOW_PRIVATE"
    )]
    Private(IpAddr),
    /// Its host name does not resolve.
    #[error("its host name does not resolve: {0}")]
    Unresolvable(String),
}

/// Parses a webhook URL: http or https, a host, no credentials.
pub fn parse_url(raw: &str) -> Result<url::Url, UrlError> {
    if raw.len() > 2048 {
        return Err(UrlError::Malformed);
    }
    let url = url::Url::parse(raw).map_err(|_| UrlError::Malformed)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(UrlError::Malformed);
    }
    Ok(url)
}

/// Checks that `url` reaches only public addresses (unless `allow_private`), resolving its
/// host name.
pub async fn check_reachable(url: &url::Url, allow_private: bool) -> Result<(), UrlError> {
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![ip.into()],
        Some(url::Host::Ipv6(ip)) => vec![ip.into()],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| UrlError::Unresolvable(e.to_string()))?
            .map(|a| a.ip())
            .collect(),
        None => return Err(UrlError::Malformed),
    };
    match addrs.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(UrlError::Private(ip)),
        None => Ok(()),
    }
}

/// Posts one delivery over a connection of its own, made to an address checked just before:
/// the name is resolved once, non-public addresses are dropped (unless allowed), and the
/// connection goes to what is left, so a name that resolves differently at delivery time
/// than at registration (DNS rebinding) still cannot reach inside. No proxy, no redirects.
struct Poster {
    tls: tokio_rustls::TlsConnector,
    allow_private: bool,
    timeout: Duration,
}

impl Poster {
    fn new(config: &WebhookConfig) -> Poster {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!("no trusted root certificates found: https webhooks will fail");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Poster {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            allow_private: config.allow_private,
            timeout: Duration::from_secs(config.timeout_secs),
        }
    }

    /// The addresses `url` may be reached at.
    async fn addresses(&self, url: &url::Url) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().unwrap_or(80);
        let all: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| UrlError::Unresolvable(e.to_string()).to_string())?
                .collect(),
            None => return Err(UrlError::Malformed.to_string()),
        };
        if self.allow_private {
            return Ok(all);
        }
        let public: Vec<SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip())).collect();
        match (public.is_empty(), all.first()) {
            (true, Some(a)) => Err(UrlError::Private(a.ip()).to_string()),
            (true, None) => Err(UrlError::Unresolvable("no address".into()).to_string()),
            (false, _) => Ok(public),
        }
    }

    /// POSTs `body` with `headers`; answers the receiver's status.
    async fn post(
        &self,
        url: &url::Url,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, String> {
        tokio::time::timeout(self.timeout, self.post_now(url, headers, body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    async fn post_now(
        &self,
        url: &url::Url,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, String> {
        let host = url
            .host_str()
            .ok_or_else(|| UrlError::Malformed.to_string())?;
        let mut tcp = None;
        let mut last = String::from("no address");
        for addr in self.addresses(url).await? {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut req = http::Request::post(path).header(http::header::HOST, authority);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        if url.scheme() == "https" {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| e.to_string())?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {}", error_chain(&e)))?;
            send(tls, req).await
        } else {
            send(tcp, req).await
        }
    }
}

async fn send<S>(
    io: S,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| error_chain(&e))?;
    let conn = tokio::spawn(conn);
    let answer = sender
        .send_request(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| error_chain(&e));
    // The answer's body is not read: one request per connection.
    conn.abort();
    answer
}

/// The webhook counters.
#[derive(Debug, Clone, Default)]
pub struct HookMetrics {
    /// Deliveries waiting after the last pass.
    pub queued: Gauge,
    /// Deliveries a receiver acknowledged (2xx).
    pub sent: Counter,
    /// Attempts that failed and will be tried again.
    pub retried: Counter,
    /// Deliveries given up after their last attempt, or dropped from a full queue.
    pub failed: Counter,
}

/// Sends what the webhook queue holds.
pub struct Deliverer {
    outbox: Outbox,
    poster: Poster,
    config: WebhookConfig,
    metrics: HookMetrics,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The delay after `failures` failed attempts (1: the first delay), before jitter.
pub fn delay_after(config: &WebhookConfig, failures: u32) -> Duration {
    io360_common::retry::Backoff::after(
        Duration::from_millis(config.retry_ms),
        Duration::from_secs(config.retry_max_secs),
        failures,
    )
}

/// Takes up to a quarter off `d` at random: successive delays still grow (the shortest next
/// one is 1.5 times the longest previous one), yet receivers that failed together are not
/// retried together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 - fastrand::f64() * 0.25)
}

enum Outcome {
    Sent,
    Again,
}

impl Deliverer {
    /// A deliverer for `outbox`'s webhook queue.
    pub fn new(outbox: Outbox, config: WebhookConfig, metrics: HookMetrics) -> Deliverer {
        Deliverer {
            outbox,
            poster: Poster::new(&config),
            config,
            metrics,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || f(&outbox))
            .await
            .expect("outbox task does not panic")
    }

    /// One attempt of one delivery.
    async fn attempt(&self, ep: &Endpoint, mut d: Delivery) -> Result<Outcome, OutboxError> {
        let started = Instant::now();
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let result = match parse_url(&ep.url) {
            Err(e) => Err(e.to_string()),
            Ok(url) => {
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("user-agent", "io360-webhooks/1".to_owned()),
                    (ID_HEADER, d.id.clone()),
                    (TIMESTAMP_HEADER, ts.to_string()),
                    (SIGNATURE_HEADER, sign(&ep.secret, ts, &d.body)),
                    (EVENT_HEADER, d.kind.name().to_owned()),
                ];
                self.poster.post(&url, &headers, d.body.clone()).await
            }
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let attempt = d.attempts + 1;
        let (status, error) = match result {
            Ok(s) if (200..300).contains(&s) => (Some(s), None),
            Ok(s) => (Some(s), Some(format!("the receiver answered {s}"))),
            Err(e) => (None, Some(e)),
        };
        let sent = error.is_none();
        let last = attempt >= self.config.max_attempts;
        let outcome = match (sent, last) {
            (true, _) => "sent",
            (false, true) => "failed",
            (false, false) => "retrying",
        };
        let line = Attempt {
            at: now_ms(),
            delivery: d.id.clone(),
            event: d.kind,
            attempt,
            outcome: outcome.into(),
            status,
            latency_ms,
            error,
        };
        if !sent && !last {
            d.attempts = attempt;
            d.next = now_ms() + jitter(delay_after(&self.config, attempt)).as_millis() as i64;
        }
        let done = sent || last;
        let record = d.clone();
        self.blocking(move |o| o.record_attempt(&record, &line, done))
            .await?;
        Ok(match (sent, last) {
            (true, _) => {
                self.metrics.sent.inc();
                Outcome::Sent
            }
            (false, true) => {
                tracing::warn!(endpoint = %ep.id, delivery = %d.id, "a webhook delivery failed for good");
                self.metrics.failed.inc();
                Outcome::Again
            }
            (false, false) => {
                self.metrics.retried.inc();
                Outcome::Again
            }
        })
    }

    /// One pass: every endpoint's due deliveries, endpoints side by side. Answers when the
    /// next delivery not yet due falls due.
    async fn pass(&self) -> Result<Option<i64>, OutboxError> {
        let (due, mut next) = self.blocking(|o| o.due(now_ms())).await?;
        let endpoints = self.blocking(|o| o.endpoints()).await?;
        let turns = due.into_iter().filter_map(|(id, ds)| {
            let ep = endpoints.iter().find(|e| e.id == id)?.clone();
            Some((ep, ds))
        });
        let results: Vec<Result<Option<i64>, OutboxError>> = futures::stream::iter(turns)
            .map(|(ep, ds)| async move {
                for d in ds {
                    if let Outcome::Again = self.attempt(&ep, d).await? {
                        // The rest wait their turn behind the failed one.
                        return Ok(Some(now_ms() + 1));
                    }
                }
                Ok(None)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for r in results {
            if r?.is_some() {
                // Re-read the queue for the failed delivery's new time.
                let (_, n) = self.blocking(|o| o.due(i64::MIN)).await?;
                next = match (next, n) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let waiting = self.blocking(|o| o.deliveries_waiting()).await?;
        self.metrics.queued.set(waiting as i64);
        Ok(next)
    }

    /// Runs until shutdown. `wake` is notified when deliveries are queued.
    pub async fn run(self, wake: Arc<tokio::sync::Notify>, shutdown: Shutdown) {
        loop {
            let pause = match self.pass().await {
                Ok(next) => next.map_or(Duration::from_secs(60), |at| {
                    Duration::from_millis((at - now_ms()).clamp(1, 60_000) as u64)
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook queue");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// An error with its causes, on one line (hyper's own message is only the outer layer).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_http_and_https_urls_without_credentials_are_taken() {
        assert!(parse_url("https://hooks.example.org/in").is_ok());
        assert!(parse_url("http://hooks.example.org:8080/in").is_ok());
        for bad in [
            "ftp://example.org/x",
            "file:///etc/passwd",
            "gopher://example.org",
            "example.org/in",
            "https://user:pw@example.org/in",
            "javascript:alert(1)",
        ] {
            assert_eq!(parse_url(bad), Err(UrlError::Malformed), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_literal_private_address_is_refused_unless_allowed() {
        let url = parse_url("http://127.0.0.1:9/hook").unwrap();
        assert!(matches!(
            check_reachable(&url, false).await,
            Err(UrlError::Private(_))
        ));
        assert_eq!(check_reachable(&url, true).await, Ok(()));
        let url = parse_url("http://[::1]:9/hook").unwrap();
        assert!(check_reachable(&url, false).await.is_err());
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn delays_grow_even_with_jitter() {
        let c = WebhookConfig {
            enabled: true,
            allow_private: false,
            max_endpoints: 1,
            queue: 1,
            max_attempts: 10,
            retry_ms: 100,
            retry_max_secs: 3600,
            timeout_secs: 1,
        };
        for n in 1..8 {
            let longest = delay_after(&c, n);
            for _ in 0..50 {
                assert!(jitter(delay_after(&c, n + 1)) > longest);
            }
        }
    }
}
