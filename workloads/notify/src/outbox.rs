//! The durable side of notifications: subscriptions, the outbox, the sent log and the feed
//! cursor, in one fjall database.
//!
//! Nothing is lost and nothing is sent twice because of three rules:
//!
//! 1. The rows a feed change produces and the cursor past that change are written in one
//!    batch, persisted (fsync) before the follower reads on. A crash before the fsync replays
//!    the change; a crash after it finds the rows.
//! 2. An outbox row is keyed by (recipient, event). A replayed change finds its row (still
//!    queued) or its entry in the sent log (already delivered) and queues nothing.
//! 3. Before a message goes to the mail server, its rows are marked "sending" with the
//!    message's `Message-ID`, persisted. After the server accepts it, the rows move to the
//!    sent log, persisted. A crash between the two resends the same rows under the same
//!    `Message-ID`: the one window in which a recipient can get a message twice, and then
//!    with an identifier that lets their mail system drop the copy.
//!
//! fjall calls block: callers run them on a blocking thread.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database failed.
    #[error("notification database: {0}")]
    Fjall(#[from] fjall::Error),
    /// A record could not be read back.
    #[error("notification database holds an unreadable {what}: {source}")]
    Decode {
        /// Which kind of record.
        what: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// What a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "comment")]
pub enum Scope {
    /// Every new comment in the thread.
    Thread,
    /// Replies to one comment.
    Replies(u64),
}

impl Scope {
    fn key_part(&self) -> String {
        match self {
            Scope::Thread => "*".into(),
            Scope::Replies(id) => id.to_string(),
        }
    }
}

/// One reader's wish to hear of new comments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Record format.
    pub v: u8,
    /// Where the mail goes.
    pub email: String,
    /// The thread.
    pub thread: String,
    /// Which comments in it.
    pub scope: Scope,
    /// Whether the address owner followed the confirmation link (double opt-in).
    pub confirmed: bool,
    /// When it was asked for, Unix seconds.
    pub created: i64,
}

impl Subscription {
    /// This subscription's key.
    pub fn key(&self) -> Vec<u8> {
        sub_key(&self.thread, &self.scope, &self.email)
    }
}

fn sub_key(thread: &str, scope: &Scope, email: &str) -> Vec<u8> {
    format!(
        "t\0{thread}\0{}\0{}",
        scope.key_part(),
        email.to_ascii_lowercase()
    )
    .into_bytes()
}

/// What a queued message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Item {
    /// Asks the address owner to confirm a subscription; sent at once, never batched.
    Confirm {
        /// The thread.
        thread: String,
        /// The subscription's scope.
        scope: Scope,
    },
    /// A new comment the recipient subscribed to; batched into a digest.
    Reply {
        /// The thread.
        thread: String,
        /// The new comment.
        comment: u64,
        /// Its author's display name.
        author: Option<String>,
        /// The start of its text.
        excerpt: String,
        /// The subscription it was queued for, so an unsubscribe stops it.
        sub: Scope,
    },
    /// A comment was held for moderation; sent at once to each moderator, with one-time
    /// approve and delete links.
    Held(Held),
    /// The moderators' summary of comments waiting for moderation; sent at once.
    Summary(Summary),
}

/// What waits for moderation, for a moderator's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// How many comments wait.
    pub count: usize,
    /// The oldest of them, with what an approve link needs.
    pub comments: Vec<Held>,
}

/// A comment held for moderation, for a moderator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The thread.
    pub thread: String,
    /// The held comment.
    pub comment: u64,
    /// Its author's display name.
    pub author: Option<String>,
    /// The start of its text.
    pub excerpt: String,
}

/// One queued message part for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Record format.
    pub v: u8,
    /// The recipient.
    pub email: String,
    /// Identifies the event this row came from; with `email`, the row's identity.
    pub event: String,
    /// When it was queued, Unix seconds.
    pub queued: i64,
    /// The `Message-ID` of the message it is being sent in, once a send has started.
    pub sending: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// What it says.
    pub item: Item,
}

fn row_key(email: &str, event: &str) -> Vec<u8> {
    format!("{}\0{event}", email.to_ascii_lowercase()).into_bytes()
}

fn address_key(email: &str, sub: &[u8]) -> Vec<u8> {
    let mut k = format!("{}\0", email.to_ascii_lowercase()).into_bytes();
    k.extend_from_slice(sub);
    k
}

fn sent_key(event: &str, email: &str) -> Vec<u8> {
    format!("{event}\0{}", email.to_ascii_lowercase()).into_bytes()
}

/// The notification database.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) db: Database,
    subs: Keyspace,
    rows: Keyspace,
    sent: Keyspace,
    meta: Keyspace,
    /// Moderator links already used (their MAC), so each works once.
    used: Keyspace,
    redeeming: std::sync::Arc<std::sync::Mutex<()>>,
    /// Address → the keys of its subscriptions, for the per-address cap, export and erase.
    addresses: Keyspace,
    /// Webhook endpoints by id.
    pub(crate) endpoints: Keyspace,
    /// Webhook deliveries waiting, by endpoint and feed position.
    pub(crate) deliveries: Keyspace,
    /// The last attempts of each endpoint.
    pub(crate) hook_log: Keyspace,
    /// Comments held for moderation, by id, as the feed says: for the moderators' summary.
    held: Keyspace,
    pub(crate) registering: std::sync::Arc<std::sync::Mutex<()>>,
    pub(crate) log_seq: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Deliveries one endpoint may have waiting; past it, new events are dropped and logged.
    pub(crate) hook_queue: usize,
}

const CURSOR: &[u8] = b"cursor";
/// When the last moderators' summary was made, Unix seconds.
const SUMMARY: &[u8] = b"summary-last";

/// What one change of the feed queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Outbox rows (emails).
    pub emails: usize,
    /// Webhook deliveries.
    pub hooks: usize,
    /// Webhook deliveries dropped because their endpoint's queue was full.
    pub dropped: usize,
}

pub(crate) fn decode<T: for<'a> Deserialize<'a>>(
    what: &'static str,
    v: &[u8],
) -> Result<T, OutboxError> {
    serde_json::from_slice(v).map_err(|source| OutboxError::Decode { what, source })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl Outbox {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        let db = Database::builder(dir.join("notify"))
            .manual_journal_persist(true)
            .open()?;
        let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Outbox {
            subs: ks("subscriptions")?,
            rows: ks("outbox")?,
            sent: ks("sent")?,
            meta: ks("meta")?,
            addresses: ks("addresses")?,
            used: ks("used-links")?,
            redeeming: Default::default(),
            endpoints: ks("webhooks")?,
            deliveries: ks("webhook-deliveries")?,
            hook_log: ks("webhook-log")?,
            held: ks("held")?,
            registering: Default::default(),
            log_seq: Default::default(),
            hook_queue: 1000,
            db,
        })
    }

    /// Sets how many deliveries one webhook endpoint may have waiting (at least 1).
    pub fn with_webhook_queue(mut self, n: usize) -> Outbox {
        self.hook_queue = n.max(1);
        self
    }

    pub(crate) fn sync(&self) -> Result<(), OutboxError> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }

    /// The feed position every change up to which has been turned into rows.
    pub fn cursor(&self) -> Result<u64, OutboxError> {
        Ok(match self.meta.get(CURSOR)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            _ => 0,
        })
    }

    /// The subscription with this key, if any.
    pub fn subscription(
        &self,
        thread: &str,
        scope: &Scope,
        email: &str,
    ) -> Result<Option<Subscription>, OutboxError> {
        self.subs
            .get(sub_key(thread, scope, email))?
            .map(|v| decode("subscription", &v))
            .transpose()
    }

    /// Records an unconfirmed subscription and queues its confirmation message, durably.
    /// Asking again for a subscription that is already confirmed changes nothing and sends
    /// nothing; asking again for a pending one sends no second confirmation while the first
    /// is still queued. Answers whether a confirmation was queued.
    pub fn subscribe(&self, sub: Subscription, now: i64) -> Result<bool, OutboxError> {
        if let Some(old) = self.subscription(&sub.thread, &sub.scope, &sub.email)?
            && old.confirmed
        {
            return Ok(false);
        }
        let event = format!("confirm:{}:{}", sub.thread, sub.scope.key_part());
        if self.rows.contains_key(row_key(&sub.email, &event))? {
            return Ok(false);
        }
        let row = Row {
            v: 1,
            email: sub.email.clone(),
            event: event.clone(),
            queued: now,
            sending: None,
            attempts: 0,
            item: Item::Confirm {
                thread: sub.thread.clone(),
                scope: sub.scope.clone(),
            },
        };
        let mut batch = self.db.batch();
        batch.insert(&self.addresses, address_key(&sub.email, &sub.key()), b"");
        batch.insert(
            &self.subs,
            sub.key(),
            encode(&Subscription {
                confirmed: false,
                ..sub
            }),
        );
        batch.insert(&self.rows, row_key(&row.email, &event), encode(&row));
        // A confirmation may be asked for again later (after an unsubscribe, say): it is
        // not a feed event, so the sent log must not stop it.
        batch.remove(&self.sent, sent_key(&event, &row.email));
        batch.commit()?;
        self.sync()?;
        Ok(true)
    }

    /// Records a one-time link as used, durably. Answers false when it was used before.
    pub fn redeem(&self, token: &str) -> Result<bool, OutboxError> {
        let mac = token.rsplit('.').next().unwrap_or(token);
        let _one_at_a_time = self
            .redeeming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.used.contains_key(mac)? {
            return Ok(false);
        }
        self.used.insert(
            mac,
            time::OffsetDateTime::now_utc()
                .unix_timestamp()
                .to_be_bytes(),
        )?;
        self.sync()?;
        Ok(true)
    }

    /// Every subscription of one address.
    pub fn subscriptions_of(&self, email: &str) -> Result<Vec<Subscription>, OutboxError> {
        let prefix = format!("{}\0", email.to_ascii_lowercase());
        let mut out = Vec::new();
        for kv in self.addresses.prefix(prefix.as_bytes()) {
            let (k, _) = kv.into_inner()?;
            if let Some(v) = self.subs.get(&k[prefix.len()..])? {
                out.push(decode("subscription", &v)?);
            }
        }
        Ok(out)
    }

    /// Erases everything kept about an address: its subscriptions, its queued rows (even
    /// those being sent: an erased address is mailed nothing more) and its entries in the
    /// sent log. Answers how many subscriptions there were.
    pub fn erase(&self, email: &str) -> Result<usize, OutboxError> {
        let subs = self.subscriptions_of(email)?;
        let mut batch = self.db.batch();
        for sub in &subs {
            batch.remove(&self.subs, sub.key());
            batch.remove(&self.addresses, address_key(email, &sub.key()));
        }
        for row in self.rows_of(email)? {
            batch.remove(&self.rows, row_key(&row.email, &row.event));
        }
        let suffix = format!("\0{}", email.to_ascii_lowercase());
        for kv in self.sent.iter() {
            let k = kv.key()?;
            if k.ends_with(suffix.as_bytes()) {
                batch.remove(&self.sent, k.to_vec());
            }
        }
        batch.commit()?;
        self.sync()?;
        Ok(subs.len())
    }

    /// Marks a subscription confirmed. Answers false when there is no such subscription
    /// (it was withdrawn, or the address was erased).
    pub fn confirm(&self, thread: &str, scope: &Scope, email: &str) -> Result<bool, OutboxError> {
        let Some(mut sub) = self.subscription(thread, scope, email)? else {
            return Ok(false);
        };
        if !sub.confirmed {
            sub.confirmed = true;
            self.subs.insert(sub.key(), encode(&sub))?;
            self.sync()?;
        }
        Ok(true)
    }

    /// Withdraws a subscription and drops what it queued and has not started sending.
    pub fn unsubscribe(&self, thread: &str, scope: &Scope, email: &str) -> Result<(), OutboxError> {
        let mut batch = self.db.batch();
        batch.remove(&self.subs, sub_key(thread, scope, email));
        batch.remove(
            &self.addresses,
            address_key(email, &sub_key(thread, scope, email)),
        );
        for row in self.rows_of(email)? {
            let ours = match &row.item {
                Item::Reply { thread: t, sub, .. } => t == thread && sub == scope,
                Item::Confirm {
                    thread: t,
                    scope: s,
                } => t == thread && s == scope,
                Item::Held(_) | Item::Summary(_) => false,
            };
            if ours && row.sending.is_none() {
                batch.remove(&self.rows, row_key(&row.email, &row.event));
            }
        }
        batch.commit()?;
        self.sync()
    }

    /// Every confirmed subscription that a new comment in `thread` replying to `parent`
    /// reaches: the thread's, and the parent's.
    fn reached(&self, thread: &str, parent: Option<u64>) -> Result<Vec<Subscription>, OutboxError> {
        let mut scopes = vec![Scope::Thread];
        scopes.extend(parent.map(Scope::Replies));
        let mut out: Vec<Subscription> = Vec::new();
        for scope in scopes {
            let prefix = format!("t\0{thread}\0{}\0", scope.key_part());
            for kv in self.subs.prefix(prefix.as_bytes()) {
                let (_, v) = kv.into_inner()?;
                let sub: Subscription = decode("subscription", &v)?;
                // One message per comment and recipient, whichever subscriptions reach them.
                if sub.confirmed && !out.iter().any(|o| o.email.eq_ignore_ascii_case(&sub.email)) {
                    out.push(sub);
                }
            }
        }
        Ok(out)
    }

    /// Turns one change of the feed into rows, and moves the cursor past it, in one durable
    /// batch. A change already turned into rows (the feed replayed after a crash) queues
    /// nothing again. Answers how many rows were queued.
    pub fn apply(
        &self,
        change: &io360_common::model::Change,
        now: i64,
    ) -> Result<usize, OutboxError> {
        self.apply_for(change, now, &[])
    }

    /// As [`Outbox::apply`], also queueing a message to each of `moderators` for a comment
    /// held for moderation.
    pub fn apply_for(
        &self,
        change: &io360_common::model::Change,
        now: i64,
        moderators: &[String],
    ) -> Result<usize, OutboxError> {
        Ok(self.apply_all(change, now, moderators)?.emails)
    }

    /// As [`Outbox::apply_for`], also queueing a delivery to every webhook endpoint that
    /// wants the change's kind, in the same durable batch.
    pub fn apply_all(
        &self,
        change: &io360_common::model::Change,
        now: i64,
        moderators: &[String],
    ) -> Result<Applied, OutboxError> {
        use io360_common::model::{ChangeKind, Status};
        let mut batch = self.db.batch();
        let mut queued = 0;
        if let Some(c) = &change.comment
            && c.status == Status::Approved
            && matches!(change.kind, ChangeKind::Created | ChangeKind::Approved)
        {
            // A held comment notifies when approved; the event is the comment, not the
            // change, so created-then-approved cannot notify twice.
            let event = format!("comment:{}", c.id);
            for sub in self.reached(&change.thread, c.parent)? {
                let key = row_key(&sub.email, &event);
                if self.rows.contains_key(&key)?
                    || self.sent.contains_key(sent_key(&event, &sub.email))?
                {
                    continue;
                }
                let row = Row {
                    v: 1,
                    email: sub.email.clone(),
                    event: event.clone(),
                    queued: now,
                    sending: None,
                    attempts: 0,
                    item: Item::Reply {
                        thread: change.thread.clone(),
                        comment: c.id,
                        author: c.author.clone(),
                        excerpt: excerpt(&c.text),
                        sub: sub.scope.clone(),
                    },
                };
                batch.insert(&self.rows, key, encode(&row));
                queued += 1;
            }
        }
        if let Some(c) = &change.comment
            && c.status == Status::Pending
            && change.kind == ChangeKind::Created
        {
            let event = format!("held:{}", c.id);
            for m in moderators {
                let key = row_key(m, &event);
                if self.rows.contains_key(&key)? || self.sent.contains_key(sent_key(&event, m))? {
                    continue;
                }
                let row = Row {
                    v: 1,
                    email: m.clone(),
                    event: event.clone(),
                    queued: now,
                    sending: None,
                    attempts: 0,
                    item: Item::Held(Held {
                        thread: change.thread.clone(),
                        comment: c.id,
                        author: c.author.clone(),
                        excerpt: excerpt(&c.text),
                    }),
                };
                batch.insert(&self.rows, key, encode(&row));
                queued += 1;
            }
        }
        if let Some(c) = &change.comment {
            match change.kind {
                ChangeKind::Created if c.status == Status::Pending => batch.insert(
                    &self.held,
                    c.id.to_be_bytes(),
                    encode(&Held {
                        thread: change.thread.clone(),
                        comment: c.id,
                        author: c.author.clone(),
                        excerpt: excerpt(&c.text),
                    }),
                ),
                ChangeKind::Approved | ChangeKind::Deleted => {
                    batch.remove(&self.held, c.id.to_be_bytes())
                }
                _ => {}
            }
        }
        let (hooks, dropped) = self.queue_hooks(&mut batch, change, now)?;
        if change.pos > self.cursor()? {
            batch.insert(&self.meta, CURSOR, change.pos.to_be_bytes());
        }
        batch.commit()?;
        // Rows are made durable before the feed moves on. A change that queued nothing need
        // not be: replayed after a crash, it queues nothing again.
        if queued + hooks + dropped > 0 {
            self.sync()?;
        }
        Ok(Applied {
            emails: queued,
            hooks,
            dropped,
        })
    }

    /// Queues the moderators' summary when one is due: `period` seconds after the last one
    /// (the first period starts at the first call). Nothing is sent when nothing waits. The
    /// rows and the time of this summary are written in one durable batch, so a restart
    /// neither skips a summary nor sends one twice. Answers how many rows were queued, or
    /// `None` when no summary was due.
    pub fn queue_summary(
        &self,
        moderators: &[String],
        now: i64,
        period: i64,
        list: usize,
    ) -> Result<Option<usize>, OutboxError> {
        let last = match self.meta.get(SUMMARY)? {
            Some(v) if v.len() == 8 => i64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            _ => {
                self.meta.insert(SUMMARY, now.to_be_bytes())?;
                self.sync()?;
                return Ok(None);
            }
        };
        if now < last + period {
            return Ok(None);
        }
        let count = self.held.len()?;
        let mut comments = Vec::new();
        for kv in self.held.iter().take(list) {
            let (_, v) = kv.into_inner()?;
            comments.push(decode("held comment", &v)?);
        }
        let mut batch = self.db.batch();
        let mut queued = 0;
        if count > 0 {
            let event = format!("summary:{now}");
            for m in moderators {
                let row = Row {
                    v: 1,
                    email: m.clone(),
                    event: event.clone(),
                    queued: now,
                    sending: None,
                    attempts: 0,
                    item: Item::Summary(Summary {
                        count,
                        comments: comments.clone(),
                    }),
                };
                batch.insert(&self.rows, row_key(m, &event), encode(&row));
                queued += 1;
            }
        }
        batch.insert(&self.meta, SUMMARY, now.to_be_bytes());
        batch.commit()?;
        self.sync()?;
        Ok(Some(queued))
    }

    /// Seconds until the next summary falls due (0: due now).
    pub fn summary_due_in(&self, now: i64, period: i64) -> Result<i64, OutboxError> {
        Ok(match self.meta.get(SUMMARY)? {
            Some(v) if v.len() == 8 => {
                (i64::from_be_bytes(v[..8].try_into().expect("8 bytes")) + period - now).max(0)
            }
            _ => 0,
        })
    }

    /// Every queued row for one recipient.
    pub fn rows_of(&self, email: &str) -> Result<Vec<Row>, OutboxError> {
        let prefix = format!("{}\0", email.to_ascii_lowercase());
        let mut out = Vec::new();
        for kv in self.rows.prefix(prefix.as_bytes()) {
            let (_, v) = kv.into_inner()?;
            out.push(decode("outbox row", &v)?);
        }
        Ok(out)
    }

    /// Every queued row, grouped by recipient, in key order.
    pub fn queued(&self) -> Result<Vec<Vec<Row>>, OutboxError> {
        let mut groups: Vec<Vec<Row>> = Vec::new();
        for kv in self.rows.iter() {
            let (_, v) = kv.into_inner()?;
            let row: Row = decode("outbox row", &v)?;
            match groups.last_mut() {
                Some(g) if g[0].email.eq_ignore_ascii_case(&row.email) => g.push(row),
                _ => groups.push(vec![row]),
            }
        }
        Ok(groups)
    }

    /// Whether `row` is still wanted: its subscription exists (confirmed, for replies).
    pub fn still_wanted(&self, row: &Row) -> Result<bool, OutboxError> {
        Ok(match &row.item {
            Item::Confirm { thread, scope } => self
                .subscription(thread, scope, &row.email)?
                .is_some_and(|s| !s.confirmed),
            Item::Reply { thread, sub, .. } => self
                .subscription(thread, sub, &row.email)?
                .is_some_and(|s| s.confirmed),
            Item::Held(_) | Item::Summary(_) => true,
        })
    }

    /// Marks rows as being sent in the message `message_id`, durably, before the message
    /// leaves; rows no longer wanted are dropped in the same batch.
    pub fn mark_sending(
        &self,
        rows: &mut [Row],
        dropped: &[Row],
        message_id: &str,
    ) -> Result<(), OutboxError> {
        let mut batch = self.db.batch();
        for row in rows.iter_mut() {
            row.sending = Some(message_id.to_owned());
            batch.insert(&self.rows, row_key(&row.email, &row.event), encode(&*row));
        }
        for row in dropped {
            batch.remove(&self.rows, row_key(&row.email, &row.event));
        }
        batch.commit()?;
        self.sync()
    }

    /// Records a failed attempt on rows (they stay queued, with their `Message-ID`).
    pub fn mark_failed(&self, rows: &mut [Row]) -> Result<(), OutboxError> {
        let mut batch = self.db.batch();
        for row in rows.iter_mut() {
            row.attempts += 1;
            batch.insert(&self.rows, row_key(&row.email, &row.event), encode(&*row));
        }
        batch.commit()?;
        self.sync()
    }

    /// Moves rows the mail server accepted to the sent log, durably.
    pub fn mark_sent(&self, rows: &[Row], message_id: &str) -> Result<(), OutboxError> {
        let mut batch = self.db.batch();
        for row in rows {
            batch.remove(&self.rows, row_key(&row.email, &row.event));
            batch.insert(
                &self.sent,
                sent_key(&row.event, &row.email),
                message_id.as_bytes(),
            );
        }
        batch.commit()?;
        self.sync()
    }
}

/// The first 280 characters of a comment's text, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(280).collect();
    if out.len() < one_line.len() {
        out.push('…');
    }
    out
}
