//! The typed client other tiers use to call the store.

use futures::{Stream, StreamExt};
use io360_common::client::{ClientError, TierClient};
use io360_common::model::{Change, FeedPos, Seq, ThreadMeta, ThreadPage};

use crate::api::{
    Author, Bans, Counts, CountsRequest, EraseAuthor, ErasedComments, ExportItem, FeedLine, Found,
    Pending, Search, StoredComment, Suspension, ThreadChanges, WriteOp, WriteResult,
};

/// A client for the store tier.
#[derive(Debug, Clone)]
pub struct StoreClient {
    inner: TierClient,
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl StoreClient {
    /// A client for the store at `base` (e.g. `http://127.0.0.1:8084`), presenting the calling
    /// tier's `credential`.
    pub fn new(base: &str, credential: io360_common::auth::Credential) -> Self {
        StoreClient {
            inner: TierClient::new("store", base, credential),
        }
    }

    /// The store's base URL.
    pub fn base(&self) -> &str {
        self.inner.base()
    }

    /// Applies a write; returns once it is durable.
    pub async fn write(&self, op: &WriteOp) -> Result<WriteResult, ClientError> {
        self.inner.post("/store/v1/write", op).await
    }

    /// A thread's comments changed after `after`.
    pub async fn page(
        &self,
        thread: &str,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadPage, ClientError> {
        self.inner
            .get(&format!(
                "/store/v1/comments?thread={}&after={after}&limit={limit}",
                q(thread)
            ))
            .await
    }

    /// A thread's metadata.
    pub async fn meta(&self, thread: &str) -> Result<ThreadMeta, ClientError> {
        self.inner
            .get(&format!("/store/v1/thread?thread={}", q(thread)))
            .await
    }

    /// Approved counts for many threads.
    pub async fn counts(&self, threads: Vec<String>) -> Result<Counts, ClientError> {
        self.inner
            .post("/store/v1/counts", &CountsRequest { threads })
            .await
    }

    /// One comment with its private fields; `None` when it does not exist.
    pub async fn comment(&self, id: u64) -> Result<Option<StoredComment>, ClientError> {
        match self.inner.get(&format!("/store/v1/comment/{id}")).await {
            Ok(c) => Ok(Some(c)),
            Err(ClientError::Problem(p)) if p.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A thread's changes after `after`.
    pub async fn changes(
        &self,
        thread: &str,
        after: Seq,
        limit: usize,
    ) -> Result<ThreadChanges, ClientError> {
        self.inner
            .get(&format!(
                "/store/v1/changes?thread={}&after={after}&limit={limit}",
                q(thread)
            ))
            .await
    }

    /// The last durable change-feed position.
    pub async fn position(&self) -> Result<FeedPos, ClientError> {
        let p: crate::api::Position = self.inner.get("/store/v1/position").await?;
        Ok(p.position)
    }

    /// Held comments, oldest first.
    pub async fn pending(&self, limit: usize) -> Result<Pending, ClientError> {
        self.inner
            .get(&format!("/store/v1/pending?limit={limit}"))
            .await
    }

    /// How many approved comments an author has.
    pub async fn author_approved(&self, key: &str) -> Result<u64, ClientError> {
        let a: Author = self
            .inner
            .get(&format!("/store/v1/author?key={}", q(key)))
            .await?;
        Ok(a.approved)
    }

    /// Writes a batch of imported comments (see `POST /store/v1/import`); returns once durable.
    pub async fn import(
        &self,
        batch: &[crate::api::ImportedComment],
    ) -> Result<crate::api::Imported, ClientError> {
        self.inner.post("/store/v1/import", batch).await
    }

    /// Keeps page titles for their threads (see `POST /store/v1/titles`); returns once durable.
    pub async fn set_titles(
        &self,
        titles: &[crate::api::ThreadTitle],
    ) -> Result<crate::api::TitlesSet, ClientError> {
        self.inner.post("/store/v1/titles", titles).await
    }

    /// The id of the comment imported under `source` (`disqus:12`), if any.
    pub async fn by_source(&self, source: &str) -> Result<Option<u64>, ClientError> {
        let m: crate::api::SourceMatch = self
            .inner
            .get(&format!("/store/v1/source?source={}", q(source)))
            .await?;
        Ok(m.id)
    }

    /// The durable manual suspension.
    pub async fn suspension(&self) -> Result<Suspension, ClientError> {
        self.inner.get("/store/v1/suspension").await
    }

    /// Sets the durable manual suspension.
    pub async fn set_suspension(&self, s: &Suspension) -> Result<Suspension, ClientError> {
        self.inner
            .send_json(reqwest::Method::PUT, "/store/v1/suspension", s)
            .await
    }

    /// The durable list of bans.
    pub async fn bans(&self) -> Result<Bans, ClientError> {
        self.inner.get("/store/v1/bans").await
    }

    /// Replaces the durable list of bans.
    pub async fn set_bans(&self, b: &Bans) -> Result<Bans, ClientError> {
        self.inner
            .send_json(reqwest::Method::PUT, "/store/v1/bans", b)
            .await
    }

    /// Comments matching a moderator's search, newest first.
    pub async fn search(&self, s: &Search) -> Result<Found, ClientError> {
        // The serializer is not `Send`: finish it before awaiting.
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("thread", &s.thread),
                ("author", &s.author),
                ("text", &s.text),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            if let Some(st) = s.status {
                let name = serde_json::to_value(st)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                q.append_pair("status", &name);
            }
            if let Some(b) = s.before {
                q.append_pair("before", &b.to_string());
            }
            q.append_pair("limit", &s.limit.to_string());
            q.finish()
        };
        self.inner.get(&format!("/store/v1/search?{query}")).await
    }

    /// Every comment of the author with this key.
    pub async fn author_comments(&self, key: &str) -> Result<Found, ClientError> {
        self.inner
            .get(&format!("/store/v1/author/comments?key={}", q(key)))
            .await
    }

    /// Deletes and scrubs every comment of the author with this key.
    pub async fn erase_author(&self, key: &str) -> Result<ErasedComments, ClientError> {
        self.inner
            .post(
                "/store/v1/author/erase",
                &EraseAuthor {
                    author_key: key.to_owned(),
                },
            )
            .await
    }

    /// Follows the change feed from `after`: every committed change in order, then new ones as
    /// they commit. The stream ends when the connection drops (callers reconnect from the last
    /// position they saw); heartbeats are yielded as `Ok(None)` so callers can tell a quiet
    /// feed from a dead one.
    pub async fn feed(
        &self,
        after: FeedPos,
    ) -> Result<impl Stream<Item = Result<Option<Change>, ClientError>> + use<>, ClientError> {
        let url = self.inner.url(&format!("/store/v1/feed?after={after}"));
        let res = self
            .inner
            .request(reqwest::Method::GET, &url)
            .send()
            .await
            .map_err(|e| unavailable(&url, e))?;
        if !res.status().is_success() {
            return Err(unavailable(&url, format!("feed answered {}", res.status())));
        }
        let state = (res.bytes_stream().boxed(), Vec::<u8>::new(), url);
        Ok(futures::stream::unfold(
            state,
            |(mut bytes, mut buf, url)| async move {
                loop {
                    if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let item = match serde_json::from_slice::<FeedLine>(&line) {
                            Ok(FeedLine::Change(c)) => Ok(Some(*c)),
                            Ok(FeedLine::Heartbeat { .. }) => Ok(None),
                            Err(e) => Err(unavailable(&url, format!("bad feed line: {e}"))),
                        };
                        return Some((item, (bytes, buf, url)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let e = unavailable(&url, e);
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
}

impl StoreClient {
    /// Every thread, then every comment with its private fields and source ids, from one
    /// snapshot, as a stream (see `GET /store/v1/export`).
    pub async fn export(
        &self,
    ) -> Result<impl Stream<Item = Result<ExportItem, ClientError>> + use<>, ClientError> {
        let url = self.inner.url("/store/v1/export");
        let res = self
            .inner
            .request(reqwest::Method::GET, &url)
            .send()
            .await
            .map_err(|e| unavailable(&url, e))?;
        if !res.status().is_success() {
            return Err(unavailable(
                &url,
                format!("export answered {}", res.status()),
            ));
        }
        let state = (res.bytes_stream().boxed(), Vec::<u8>::new(), url, false);
        Ok(futures::stream::unfold(
            state,
            |(mut bytes, mut buf, url, done)| async move {
                loop {
                    if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let item = serde_json::from_slice::<ExportItem>(&line)
                            .map_err(|e| unavailable(&url, format!("bad export line: {e}")));
                        return Some((item, (bytes, buf, url, done)));
                    }
                    if done {
                        return None;
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let e = unavailable(&url, e);
                            return Some((
                                Err(e),
                                (futures::stream::empty().boxed(), Vec::new(), url, true),
                            ));
                        }
                        None => return None,
                    }
                }
            },
        ))
    }
}

fn unavailable(url: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable {
        tier: "store",
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}
