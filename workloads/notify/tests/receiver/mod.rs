//! A webhook receiver on loopback for tests, written as a site's receiver should be: it checks
//! the signature over `<timestamp>.<body>` with its own HMAC, refuses a timestamp more than
//! five minutes off and an id it has acknowledged before, and records what it accepted.
//! It can be told to fail the next requests, or to take a request and never answer it (a
//! receiver that got the delivery while its sender is killed).

#![allow(dead_code, reason = "each test uses part of it")]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request that reached the receiver.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// `IO360-Webhook-Id`.
    pub id: String,
    /// The body, parsed.
    pub body: serde_json::Value,
    /// What the receiver answered (0: nothing, it stalled).
    pub answered: u16,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
}

#[derive(Default)]
struct Inner {
    arrivals: Mutex<Vec<Arrival>>,
    seen: Mutex<HashSet<String>>,
}

/// The receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    secret: Arc<String>,
    inner: Arc<Inner>,
    /// Requests still to answer with 500.
    pub fail_next: Arc<AtomicU32>,
    /// While set, a request is recorded and never answered.
    pub stall: Arc<AtomicBool>,
}

/// Checks a delivery as a receiver must: answers the id, or why it is refused.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("no {n} header"))
    };
    let ts: i64 = h("io360-webhook-timestamp")?
        .parse()
        .map_err(|_| "a timestamp that is not a number".to_owned())?;
    if (now - ts).abs() > 300 {
        return Err("a timestamp more than five minutes off".into());
    }
    let sig = h("io360-webhook-signature")?;
    let given = sig
        .strip_prefix("v1=")
        .ok_or_else(|| "no v1 signature".to_owned())?;
    let given: Vec<u8> = (0..given.len() / 2)
        .map(|i| u8::from_str_radix(&given[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "a signature that is not hex".to_owned())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| "a signature that does not match".to_owned())?;
    let id = h("io360-webhook-id")?;
    let parsed: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "a body that is not JSON".to_owned())?;
    if parsed["id"] != id.as_str() {
        return Err("a header id unlike the signed body's".into());
    }
    Ok(id)
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verdict = verify(&r.secret, &headers, &body, now);
    let id = headers
        .get("io360-webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let mut arrival = Arrival {
        at: Instant::now(),
        id: id.clone(),
        body: parsed,
        answered: 0,
        refused: None,
    };
    if r.stall.load(Ordering::SeqCst) {
        r.inner.arrivals.lock().unwrap().push(arrival.clone());
        std::future::pending::<()>().await;
    }
    let status = match verdict {
        Err(why) => {
            arrival.refused = Some(why);
            StatusCode::BAD_REQUEST
        }
        Ok(_) if r.fail_next.load(Ordering::SeqCst) > 0 => {
            r.fail_next.fetch_sub(1, Ordering::SeqCst);
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Ok(id) => {
            // A repeated id is acknowledged (so the sender stops) but not acted on again.
            if !r.inner.seen.lock().unwrap().insert(id) {
                arrival.refused = Some("a repeated id".into());
            }
            StatusCode::NO_CONTENT
        }
    };
    arrival.answered = status.as_u16();
    r.inner.arrivals.lock().unwrap().push(arrival);
    status
}

impl Receiver {
    /// Starts a receiver checking signatures with `secret`.
    pub async fn start(secret: &str) -> Receiver {
        Receiver::start_on("127.0.0.1:0", secret).await
    }

    /// Starts a receiver on `addr` (to come back on the same port).
    pub async fn start_on(addr: &str, secret: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            secret: Arc::new(secret.to_owned()),
            inner: Arc::default(),
            fail_next: Arc::default(),
            stall: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.arrivals.lock().unwrap().clone()
    }

    /// Requests it acknowledged and acted on: signed, fresh, new.
    pub fn accepted(&self) -> Vec<Arrival> {
        self.arrivals()
            .into_iter()
            .filter(|a| (200..300).contains(&a.answered) && a.refused.is_none())
            .collect()
    }
}
