//! The inter-tier HTTP client: JSON in, JSON out, problems passed through.
//!
//! A tier talks to another through a [`TierClient`] bound to its base URL. A problem body from
//! the other tier comes back as [`ClientError::Problem`], so a 4xx raised deep in store reaches
//! the browser unchanged; anything else (refused connection, timeout, garbage) is
//! [`ClientError::Unavailable`], which callers turn into a 503. Every call carries the
//! calling tier's [`Credential`].

use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;
use crate::auth::{Credential, HEADER};

/// Why a call to another tier failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The other tier answered with a problem.
    #[error("{0}")]
    Problem(Problem),
    /// The other tier could not be reached or answered nonsense.
    #[error("{tier} at {url} is unavailable: {reason}")]
    Unavailable {
        /// Which tier.
        tier: &'static str,
        /// The URL called.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl ClientError {
    /// The problem to answer a client with: the other tier's own problem, or a 503.
    pub fn into_problem(self) -> Problem {
        match self {
            ClientError::Problem(p) => p,
            ClientError::Unavailable { tier, reason, .. } => {
                tracing::warn!(tier, %reason, "tier unavailable");
                Problem::unavailable(
                    "tier-unavailable",
                    format!("the {tier} tier is unavailable; try again shortly"),
                    Duration::from_secs(2),
                )
            }
        }
    }
}

impl From<ClientError> for Problem {
    fn from(e: ClientError) -> Problem {
        e.into_problem()
    }
}

/// A client for one tier at one base URL.
#[derive(Debug, Clone)]
pub struct TierClient {
    tier: &'static str,
    base: String,
    http: reqwest::Client,
    credential: Credential,
}

impl TierClient {
    /// A client for `tier` at `base` (e.g. `http://127.0.0.1:8084`) that presents
    /// `credential` on every call.
    pub fn new(tier: &'static str, base: &str, credential: Credential) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("building an HTTP client");
        TierClient {
            tier,
            base: base.trim_end_matches('/').to_owned(),
            http,
            credential,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `url` that carries this tier's credential, for streaming calls.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(HEADER, self.credential.header())
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn unavailable(&self, url: &str, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unavailable {
            tier: self.tier,
            url: url.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// GET `path` (with its query) and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .request(reqwest::Method::GET, &url)
            .timeout(Duration::from_secs(10));
        self.send(&url, req).await
    }

    /// Sends `body` as JSON with `method` to `path` and decodes the JSON answer.
    pub async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .request(method, &url)
            .timeout(Duration::from_secs(10))
            .json(body);
        self.send(&url, req).await
    }

    /// POST `body` as JSON to `path` and decode the JSON answer.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// POST `body`, already JSON, to `path` and decode the JSON answer. For a caller that
    /// encodes into a buffer of its own (and so reuses it from one call to the next).
    pub async fn post_encoded<T: DeserializeOwned>(
        &self,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .request(reqwest::Method::POST, &url)
            .timeout(Duration::from_secs(10))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(&url, req).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let res = req.send().await.map_err(|e| self.unavailable(url, e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.unavailable(url, e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| self.unavailable(url, e));
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) if status != StatusCode::INTERNAL_SERVER_ERROR => Err(ClientError::Problem(p)),
            _ => Err(self.unavailable(url, format!("answered {status}"))),
        }
    }
}
