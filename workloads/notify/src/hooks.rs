//! The durable side of webhooks, in the notification database beside the outbox: the
//! endpoints a site registered, the deliveries waiting for each, and a short log of attempts.
//!
//! A delivery is queued in the same batch as the feed position past its change (see
//! [`Outbox::apply_for`]), so a crash either replays the change or finds the delivery, never
//! both. Its id is made of the endpoint and the feed position, so a replay would rewrite the
//! same row, and a resend after a crash carries the same id. A delivery leaves the queue only
//! after the receiver answered 2xx (or after its last attempt), in one persisted batch with
//! the log entry that says so.
//!
//! fjall calls block: callers run them on a blocking thread.

use std::collections::BTreeMap;

use io360_common::model::{Change, ChangeKind, Comment, Status};
use serde::{Deserialize, Serialize};

use crate::outbox::{Outbox, OutboxError, decode, encode};

/// Attempts kept in each endpoint's delivery log.
pub const LOG_SIZE: usize = 50;

/// What happened, as a webhook receiver is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A comment was published at once.
    #[serde(rename = "comment.created")]
    CommentCreated,
    /// A comment was held for moderation.
    #[serde(rename = "comment.held")]
    CommentHeld,
    /// A held comment was approved.
    #[serde(rename = "comment.approved")]
    CommentApproved,
    /// A comment's text was edited.
    #[serde(rename = "comment.edited")]
    CommentEdited,
    /// A comment was deleted (by its author or a moderator).
    #[serde(rename = "comment.deleted")]
    CommentDeleted,
    /// A thread was closed to new comments.
    #[serde(rename = "thread.closed")]
    ThreadClosed,
    /// A thread was reopened.
    #[serde(rename = "thread.reopened")]
    ThreadReopened,
}

impl EventKind {
    /// Every kind, in the order documentation lists them.
    pub const ALL: [EventKind; 7] = [
        EventKind::CommentCreated,
        EventKind::CommentHeld,
        EventKind::CommentApproved,
        EventKind::CommentEdited,
        EventKind::CommentDeleted,
        EventKind::ThreadClosed,
        EventKind::ThreadReopened,
    ];

    /// The kind's name on the wire, e.g. `comment.created`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::CommentCreated => "comment.created",
            EventKind::CommentHeld => "comment.held",
            EventKind::CommentApproved => "comment.approved",
            EventKind::CommentEdited => "comment.edited",
            EventKind::CommentDeleted => "comment.deleted",
            EventKind::ThreadClosed => "thread.closed",
            EventKind::ThreadReopened => "thread.reopened",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What a change of the feed is, for webhooks; votes are not sent.
    pub fn of(change: &Change) -> Option<EventKind> {
        Some(match change.kind {
            ChangeKind::Created => match change.comment.as_ref().map(|c| c.status) {
                Some(Status::Pending) => EventKind::CommentHeld,
                _ => EventKind::CommentCreated,
            },
            ChangeKind::Approved => EventKind::CommentApproved,
            ChangeKind::Edited => EventKind::CommentEdited,
            ChangeKind::Deleted => EventKind::CommentDeleted,
            ChangeKind::Closed => EventKind::ThreadClosed,
            ChangeKind::Reopened => EventKind::ThreadReopened,
            ChangeKind::Voted => return None,
        })
    }
}

/// A URL registered to receive events, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Record format.
    pub v: u8,
    /// Its id (`wh_` and 16 hex digits).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The kinds it receives.
    pub events: Vec<EventKind>,
    /// The key deliveries are signed with.
    pub secret: String,
    /// When it was registered, Unix seconds.
    pub created: i64,
}

/// The body of a delivery: what a receiver parses after checking the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The delivery's id, the same on every attempt: a receiver that has seen it drops it.
    pub id: String,
    /// The event's kind.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the event was queued, Unix seconds.
    pub created: i64,
    /// The thread.
    pub thread: String,
    /// The change's position in the site's change feed (increasing).
    pub pos: u64,
    /// The comment after the change; absent for thread events. A held comment's text is
    /// here: the receiver is the site's own system, holding the webhook secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
}

/// One event waiting to be delivered to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Record format.
    pub v: u8,
    /// Its id, sent in the body and the `IO360-Webhook-Id` header.
    pub id: String,
    /// The endpoint.
    pub endpoint: String,
    /// The event's kind.
    pub kind: EventKind,
    /// The JSON body, fixed when queued so every attempt sends the same bytes.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be tried before this, Unix milliseconds.
    pub next: i64,
}

/// One line of an endpoint's delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt ended, Unix milliseconds.
    pub at: i64,
    /// The delivery.
    pub delivery: String,
    /// The event's kind.
    pub event: EventKind,
    /// Which attempt of the delivery this was (1 for the first).
    pub attempt: u32,
    /// `sent` (2xx), `retrying`, `failed` (no attempt left) or `dropped` (the endpoint's
    /// queue was full).
    pub outcome: String,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the attempt took, milliseconds.
    pub latency_ms: u64,
    /// What went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Deliveries due, by endpoint id, each endpoint's in queue order.
pub type Due = BTreeMap<String, Vec<Delivery>>;

fn delivery_key(endpoint: &str, pos: u64) -> Vec<u8> {
    format!("{endpoint}\0{pos:020}").into_bytes()
}

fn prefix(endpoint: &str) -> String {
    format!("{endpoint}\0")
}

/// Why an endpoint could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The site has as many endpoints as it may.
    #[error("this site has {0} webhooks already, as many as it may")]
    TooMany(usize),
    /// The database failed.
    #[error("{0}")]
    Outbox(#[from] OutboxError),
}

impl Outbox {
    /// Every registered endpoint, by id.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, OutboxError> {
        let mut out = Vec::new();
        for kv in self.endpoints.iter() {
            let (_, v) = kv.into_inner()?;
            out.push(decode("webhook endpoint", &v)?);
        }
        Ok(out)
    }

    /// The endpoint `id`, if registered.
    pub fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, OutboxError> {
        self.endpoints
            .get(id)?
            .map(|v| decode("webhook endpoint", &v))
            .transpose()
    }

    /// Registers an endpoint, durably, unless `max` are registered already.
    pub fn register(&self, endpoint: &Endpoint, max: usize) -> Result<(), RegisterError> {
        let _one_at_a_time = self
            .registering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = self.endpoints.len().map_err(OutboxError::from)?;
        if n >= max {
            return Err(RegisterError::TooMany(n));
        }
        self.endpoints
            .insert(&endpoint.id, encode(endpoint))
            .map_err(OutboxError::from)?;
        self.sync()?;
        Ok(())
    }

    /// Removes an endpoint with its queue and its log. Answers whether it existed.
    pub fn unregister(&self, id: &str) -> Result<bool, OutboxError> {
        if !self.endpoints.contains_key(id)? {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        batch.remove(&self.endpoints, id);
        let p = prefix(id);
        for kv in self.deliveries.prefix(p.as_bytes()) {
            batch.remove(&self.deliveries, kv.key()?.to_vec());
        }
        for kv in self.hook_log.prefix(p.as_bytes()) {
            batch.remove(&self.hook_log, kv.key()?.to_vec());
        }
        batch.commit()?;
        self.sync()?;
        Ok(true)
    }

    /// Deliveries waiting for an endpoint (at most `upto` counted).
    pub fn waiting(&self, endpoint: &str, upto: usize) -> usize {
        self.deliveries
            .prefix(prefix(endpoint).as_bytes())
            .take(upto)
            .count()
    }

    /// The endpoint's delivery log, newest first.
    pub fn attempts(&self, endpoint: &str) -> Result<Vec<Attempt>, OutboxError> {
        let mut out = Vec::new();
        for kv in self.hook_log.prefix(prefix(endpoint).as_bytes()).rev() {
            let (_, v) = kv.into_inner()?;
            out.push(decode("webhook attempt", &v)?);
        }
        Ok(out)
    }

    /// Queues the change for every endpoint that wants its kind, into `batch`. Answers how
    /// many were queued and how many were dropped because an endpoint's queue was full.
    pub(crate) fn queue_hooks(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        change: &Change,
        now: i64,
    ) -> Result<(usize, usize), OutboxError> {
        let Some(kind) = EventKind::of(change) else {
            return Ok((0, 0));
        };
        let (mut queued, mut dropped) = (0, 0);
        for ep in self.endpoints()? {
            if !ep.events.contains(&kind) {
                continue;
            }
            let id = format!("{}-{}", ep.id, change.pos);
            if self.waiting(&ep.id, self.hook_queue) >= self.hook_queue {
                let line = Attempt {
                    at: now * 1000,
                    delivery: id,
                    event: kind,
                    attempt: 0,
                    outcome: "dropped".into(),
                    status: None,
                    latency_ms: 0,
                    error: Some(format!(
                        "{} deliveries were waiting already, as many as IO360_WEBHOOK_QUEUE allows",
                        self.hook_queue
                    )),
                };
                self.log_into(batch, &ep.id, &line)?;
                dropped += 1;
                continue;
            }
            let body = serde_json::to_string(&Payload {
                id: id.clone(),
                kind,
                created: now,
                thread: change.thread.clone(),
                pos: change.pos,
                comment: change.comment.clone(),
            })
            .expect("payloads serialize");
            let d = Delivery {
                v: 1,
                id,
                endpoint: ep.id.clone(),
                kind,
                body,
                attempts: 0,
                next: 0,
            };
            batch.insert(
                &self.deliveries,
                delivery_key(&ep.id, change.pos),
                encode(&d),
            );
            queued += 1;
        }
        Ok((queued, dropped))
    }

    /// Every delivery due by `now_ms`, by endpoint in queue order, and when the soonest one
    /// not yet due falls due.
    pub fn due(&self, now_ms: i64) -> Result<(Due, Option<i64>), OutboxError> {
        let mut due = Due::new();
        let mut next: Option<i64> = None;
        for kv in self.deliveries.iter() {
            let (_, v) = kv.into_inner()?;
            let d: Delivery = decode("webhook delivery", &v)?;
            if d.next <= now_ms {
                due.entry(d.endpoint.clone()).or_default().push(d);
            } else {
                next = Some(next.map_or(d.next, |n: i64| n.min(d.next)));
            }
        }
        Ok((due, next))
    }

    /// Every delivery waiting, all endpoints together.
    pub fn deliveries_waiting(&self) -> Result<usize, OutboxError> {
        Ok(self.deliveries.len()?)
    }

    fn log_into(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        endpoint: &str,
        line: &Attempt,
    ) -> Result<(), OutboxError> {
        let mut key = prefix(endpoint).into_bytes();
        // Unique and ordered even for two lines in one millisecond.
        let n = self
            .log_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        key.extend_from_slice(&line.at.to_be_bytes());
        key.extend_from_slice(&n.to_be_bytes());
        batch.insert(&self.hook_log, key, encode(line));
        let p = prefix(endpoint);
        let kept = self.hook_log.prefix(p.as_bytes()).count();
        // The batch adds one: trim the oldest past the log's size.
        for kv in self
            .hook_log
            .prefix(p.as_bytes())
            .take((kept + 1).saturating_sub(LOG_SIZE))
        {
            batch.remove(&self.hook_log, kv.key()?.to_vec());
        }
        Ok(())
    }

    /// Records an attempt of `delivery`: it leaves the queue when `done` (sent, or no attempt
    /// left), else it waits until its `next`. Durable before this returns.
    pub fn record_attempt(
        &self,
        delivery: &Delivery,
        line: &Attempt,
        done: bool,
    ) -> Result<(), OutboxError> {
        let pos = delivery
            .id
            .rsplit('-')
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or_default();
        let key = delivery_key(&delivery.endpoint, pos);
        // An endpoint removed while its delivery was on the wire keeps nothing.
        if !self.endpoints.contains_key(&delivery.endpoint)? {
            return Ok(());
        }
        let mut batch = self.db.batch();
        if done {
            batch.remove(&self.deliveries, key);
        } else {
            batch.insert(&self.deliveries, key, encode(delivery));
        }
        self.log_into(&mut batch, &delivery.endpoint, line)?;
        batch.commit()?;
        self.sync()
    }
}
