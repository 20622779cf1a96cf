//! Publishing one message the way each server's users publish: io360 through a comment POST to
//! its public API (or, for the store-to-longpoll path alone, an append to the store), Nchan
//! through `POST /pub/<channel>`, Centrifugo through its HTTP API's `publish`.

use anyhow::{Context, Result, bail};
use io360_common::model::Status;
use io360_store::StoreClient;
use io360_store::api::{NewComment, WriteOp};

use crate::Target;

/// Where and how messages are published.
pub struct Publisher {
    /// Which server.
    pub target: Target,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The server's address (Nchan, Centrifugo).
    pub addr: String,
    /// io360's public face (`http://host:port`), for comment POSTs.
    pub api: Option<String>,
    /// io360's store, for appends straight to it.
    pub store: Option<StoreClient>,
    /// Centrifugo's HTTP API key.
    pub api_key: String,
    /// The channel (thread) name, without a leading slash.
    pub channel: String,
}

impl Publisher {
    /// Publishes `text`; for io360, answers the comment's sequence number (0 elsewhere).
    pub async fn publish(&self, text: &str) -> Result<u64> {
        match self.target {
            Target::Io360 | Target::Io360Sse => self.post_comment(text).await,
            Target::Nchan => {
                let r = self
                    .http
                    .post(format!("http://{}/pub/{}", self.addr, self.channel))
                    .body(text.to_owned())
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("publish answered {}", r.status());
                }
                Ok(0)
            }
            Target::Centrifugo => {
                let r = self
                    .http
                    .post(format!("http://{}/api/publish", self.addr))
                    .header("X-API-Key", &self.api_key)
                    .json(&serde_json::json!({
                        "channel": format!("bench:{}", self.channel),
                        "data": { "text": text },
                    }))
                    .send()
                    .await?;
                let status = r.status();
                let body: serde_json::Value = r.json().await?;
                if !status.is_success() || body.get("error").is_some() {
                    bail!("publish answered {status}: {body}");
                }
                Ok(0)
            }
        }
    }

    async fn post_comment(&self, text: &str) -> Result<u64> {
        if let Some(api) = &self.api {
            let r = self
                .http
                .post(format!(
                    "{api}/api/v1/comments?thread={}",
                    io360_live_tests::url_encode(&format!("/{}", self.channel))
                ))
                .json(&serde_json::json!({ "text": text, "author": "bench" }))
                .send()
                .await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if status != reqwest::StatusCode::CREATED {
                bail!("posting a comment answered {status}: {body}");
            }
            let seq = body["seq"].as_u64().or(body["comment"]["seq"].as_u64());
            return seq.context("the posted comment has no seq");
        }
        let store = self
            .store
            .as_ref()
            .context("io360 needs --api (its public face) or --store")?;
        let r = store
            .write(&WriteOp::Append {
                thread: format!("/{}", self.channel),
                comment: NewComment {
                    parent: None,
                    author: Some("bench".into()),
                    email: None,
                    website: None,
                    text: text.to_owned(),
                    html: format!("<p>{text}</p>"),
                    status: Status::Approved,
                    remote: None,
                    author_key: None,
                },
                idempotency: None,
            })
            .await?;
        Ok(r.change.seq)
    }
}
