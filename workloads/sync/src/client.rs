//! The typed client longpoll uses to call sync, over one or more interchangeable replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use io360_common::client::{ClientError, TierClient};
use io360_common::model::{FeedPos, Seq};

use crate::api::{RangeAnswer, StreamLine};

/// A client for the sync tier. Given several base URLs, it moves on to the next replica
/// when one is unavailable; any replica can answer any call.
#[derive(Debug, Clone)]
pub struct SyncClient {
    replicas: Arc<Vec<TierClient>>,
    current: Arc<AtomicUsize>,
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl SyncClient {
    /// A client for the sync replicas at `bases` (comma-separated base URLs are split).
    /// Each call presents the calling tier's `credential`.
    pub fn new<S: AsRef<str>>(bases: &[S], credential: io360_common::auth::Credential) -> Self {
        let replicas: Vec<TierClient> = bases
            .iter()
            .flat_map(|b| b.as_ref().split(','))
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| TierClient::new("sync", b, credential.clone()))
            .collect();
        SyncClient {
            replicas: Arc::new(replicas),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn replica(&self, offset: usize) -> Option<&TierClient> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        self.replicas
            .get((self.current.load(Ordering::Relaxed) + offset) % n)
    }

    fn advance(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    fn none() -> ClientError {
        ClientError::Unavailable {
            tier: "sync",
            url: String::new(),
            reason: "no sync URL is configured".into(),
        }
    }

    /// Thread `thread`'s changes after `after` (at most `limit`), at least as fresh as feed
    /// position `at`. Tries each replica once.
    pub async fn changes(
        &self,
        thread: &str,
        after: Seq,
        limit: usize,
        at: FeedPos,
    ) -> Result<RangeAnswer, ClientError> {
        let path = format!(
            "/sync/v1/changes?thread={}&after={after}&limit={limit}&at={at}",
            q(thread)
        );
        let mut last = Self::none();
        for offset in 0..self.replicas.len() {
            let Some(r) = self.replica(offset) else { break };
            match r.get::<RangeAnswer>(&path).await {
                Ok(a) => return Ok(a),
                Err(e @ ClientError::Problem(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        self.advance();
        Err(last)
    }

    /// Opens the change stream after `after` (the replica's head when `None`) on the current
    /// replica; on failure the next call uses the next replica. Yields lines until the
    /// connection ends.
    pub async fn stream(
        &self,
        after: Option<FeedPos>,
    ) -> Result<impl Stream<Item = Result<StreamLine, ClientError>> + use<>, ClientError> {
        let Some(r) = self.replica(0) else {
            return Err(Self::none());
        };
        let url = match after {
            Some(a) => r.url(&format!("/sync/v1/stream?after={a}")),
            None => r.url("/sync/v1/stream"),
        };
        let unavailable = |reason: String, url: &str| ClientError::Unavailable {
            tier: "sync",
            url: url.to_owned(),
            reason,
        };
        let res = match r.request(reqwest::Method::GET, &url).send().await {
            Ok(res) if res.status().is_success() => res,
            Ok(res) => {
                self.advance();
                return Err(unavailable(
                    format!("stream answered {}", res.status()),
                    &url,
                ));
            }
            Err(e) => {
                self.advance();
                return Err(unavailable(e.to_string(), &url));
            }
        };
        let state = (res.bytes_stream().boxed(), Vec::<u8>::new(), url);
        Ok(futures::stream::unfold(
            state,
            move |(mut bytes, mut buf, url)| async move {
                loop {
                    if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let item = serde_json::from_slice::<StreamLine>(&line).map_err(|e| {
                            ClientError::Unavailable {
                                tier: "sync",
                                url: url.clone(),
                                reason: format!("bad stream line: {e}"),
                            }
                        });
                        let failed = item.is_err();
                        let next = if failed {
                            (futures::stream::empty().boxed(), Vec::new(), url)
                        } else {
                            (bytes, buf, url)
                        };
                        return Some((item, next));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let e = ClientError::Unavailable {
                                tier: "sync",
                                url: url.clone(),
                                reason: e.to_string(),
                            };
                            return Some((
                                Err(e),
                                (futures::stream::empty().boxed(), Vec::new(), url),
                            ));
                        }
                        None => return None,
                    }
                }
            },
        ))
    }

    /// Moves on to the next replica (after a stream broke).
    pub fn next_replica(&self) {
        if self.replicas.len() > 1 {
            self.advance();
        }
    }
}
