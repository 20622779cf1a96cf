//! Drains the outbox to the mail server.
//!
//! A pass groups queued rows by (recipient, thread, scope). A confirmation goes at once; replies
//! wait until the oldest of their group has waited the digest window, then go as one message.
//! Rows a crash left "sending" go first, as the same message under the same `Message-ID`.
//! When the mail server refuses for a while (down, busy), the pass stops and the sender
//! waits with backoff: rows stay queued, nothing is dropped. A permanent refusal of one
//! recipient (unknown mailbox) is recorded and not retried.

use std::sync::Arc;
use std::time::Duration;

use io360_common::retry::Backoff;
use io360_common::serve::Shutdown;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::letter::Letters;
use crate::outbox::{Item, Outbox, OutboxError, Row, Scope};

/// The sender's counters.
#[derive(Debug, Clone, Default)]
pub struct SendMetrics {
    /// Rows waiting in the outbox after the last pass.
    pub queued: Gauge,
    /// Messages the mail server accepted.
    pub sent: Counter,
    /// Attempts the mail server refused for now (retried).
    pub retried: Counter,
    /// Messages refused for good (not retried).
    pub failed: Counter,
}

/// Sends what the outbox holds.
pub struct Sender {
    /// The durable outbox.
    pub outbox: Outbox,
    /// The mail server.
    pub mailer: AsyncSmtpTransport<Tokio1Executor>,
    /// How messages read.
    pub letters: Arc<Letters>,
    /// How long replies wait to be batched.
    pub digest: Duration,
    /// Counters.
    pub metrics: SendMetrics,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn group_key(row: &Row) -> (String, String, String) {
    let (kind, thread, scope) = match &row.item {
        Item::Confirm { thread, scope } => ("c", thread, scope),
        Item::Reply { thread, sub, .. } => ("r", thread, sub),
        Item::Held(h) => return ("h".into(), h.thread.clone(), h.comment.to_string()),
        Item::Summary(_) => return ("h".into(), String::new(), row.event.clone()),
    };
    let scope = match scope {
        Scope::Thread => "*".to_owned(),
        Scope::Replies(id) => id.to_string(),
    };
    (kind.to_owned(), thread.clone(), scope)
}

/// Splits one recipient's rows into messages due now: first every message a crash
/// interrupted (by `Message-ID`), then confirmations, then digests whose window has passed.
/// Also answers the soonest time a digest not yet due becomes due.
fn due(rows: Vec<Row>, now: i64, digest: i64) -> (Vec<Vec<Row>>, Option<i64>) {
    let mut interrupted: Vec<Vec<Row>> = Vec::new();
    let mut fresh: Vec<((String, String, String), Vec<Row>)> = Vec::new();
    for row in rows {
        if let Some(id) = &row.sending {
            match interrupted
                .iter_mut()
                .find(|g| g[0].sending.as_ref() == Some(id))
            {
                Some(g) => g.push(row),
                None => interrupted.push(vec![row]),
            }
            continue;
        }
        let key = group_key(&row);
        match fresh.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(row),
            None => fresh.push((key, vec![row])),
        }
    }
    let mut out = interrupted;
    let mut next = None;
    for (key, group) in fresh {
        if key.0 == "c" || key.0 == "h" {
            out.extend(group.into_iter().map(|r| vec![r]));
            continue;
        }
        let oldest = group.iter().map(|r| r.queued).min().unwrap_or(now);
        if oldest + digest <= now {
            out.push(group);
        } else {
            let at = oldest + digest;
            next = Some(next.map_or(at, |n: i64| n.min(at)));
        }
    }
    (out, next)
}

enum Outcome {
    Sent,
    Refused,
    Later,
}

impl Sender {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || f(&outbox))
            .await
            .expect("outbox task does not panic")
    }

    /// Sends one message's rows; answers what became of it.
    async fn send_one(&self, rows: Vec<Row>) -> Result<Outcome, OutboxError> {
        let (mut keep, dropped) = {
            let rs = rows.clone();
            self.blocking(move |o| {
                let mut keep = Vec::new();
                let mut dropped = Vec::new();
                for r in rs {
                    // A message already started keeps its rows: it goes out as it was.
                    if r.sending.is_some() || o.still_wanted(&r)? {
                        keep.push(r);
                    } else {
                        dropped.push(r);
                    }
                }
                Ok((keep, dropped))
            })
            .await?
        };
        if keep.is_empty() {
            self.blocking(move |o| o.mark_sending(&mut [], &dropped, ""))
                .await?;
            return Ok(Outcome::Sent);
        }
        let message_id = keep[0]
            .sending
            .clone()
            .unwrap_or_else(|| self.letters.message_id());
        let message = match self.letters.build(&keep, &message_id, now()) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "a queued notification cannot be built; dropped");
                self.metrics.failed.inc();
                let id = format!("unbuildable:{message_id}");
                self.blocking(move |o| o.mark_sent(&keep, &id)).await?;
                return Ok(Outcome::Refused);
            }
        };
        if keep[0].sending.is_none() {
            let id = message_id.clone();
            keep = self
                .blocking(move |o| {
                    o.mark_sending(&mut keep, &dropped, &id)?;
                    Ok(keep)
                })
                .await?;
        }
        match self.mailer.send(message).await {
            Ok(_) => {
                self.blocking(move |o| o.mark_sent(&keep, &message_id))
                    .await?;
                self.metrics.sent.inc();
                Ok(Outcome::Sent)
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(error = %e, "the mail server refused a notification for good");
                let id = format!("refused:{message_id}");
                self.blocking(move |o| o.mark_sent(&keep, &id)).await?;
                self.metrics.failed.inc();
                Ok(Outcome::Refused)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the mail server is not taking notifications; retrying later");
                self.blocking(move |o| o.mark_failed(&mut keep)).await?;
                self.metrics.retried.inc();
                Ok(Outcome::Later)
            }
        }
    }

    /// One pass over the outbox. Answers whether the mail server refused for now, and when
    /// the next digest falls due.
    async fn pass(&self) -> Result<(bool, Option<i64>), OutboxError> {
        let groups = self.blocking(|o| o.queued()).await?;
        self.metrics
            .queued
            .set(groups.iter().map(Vec::len).sum::<usize>() as i64);
        let digest = self.digest.as_secs() as i64;
        let now = now();
        let mut next: Option<i64> = None;
        for rows in groups {
            let (messages, at) = due(rows, now, digest);
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            for m in messages {
                if let Outcome::Later = self.send_one(m).await? {
                    return Ok((true, next));
                }
            }
        }
        Ok((false, next))
    }

    /// Runs until shutdown. `wake` is notified when rows are queued.
    pub async fn run(self, wake: Arc<tokio::sync::Notify>, shutdown: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(60));
        loop {
            let pause = match self.pass().await {
                Ok((false, next)) => {
                    backoff.reset();
                    let wait = next.map_or(3600, |at| (at - now()).max(0) as u64);
                    Duration::from_secs(wait.clamp(1, 3600))
                }
                Ok((true, _)) => backoff.next_delay(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the notification outbox");
                    backoff.next_delay()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(email: &str, event: &str, queued: i64, item: Item, sending: Option<&str>) -> Row {
        Row {
            v: 1,
            email: email.into(),
            event: event.into(),
            queued,
            sending: sending.map(Into::into),
            attempts: 0,
            item,
        }
    }

    fn reply(thread: &str, comment: u64) -> Item {
        Item::Reply {
            thread: thread.into(),
            comment,
            author: None,
            excerpt: "hi".into(),
            sub: Scope::Thread,
        }
    }

    #[test]
    fn replies_wait_for_the_window_then_go_as_one_and_interrupted_messages_go_first() {
        let rows = vec![
            row("a@x.org", "comment:1", 100, reply("/t", 1), None),
            row("a@x.org", "comment:2", 150, reply("/t", 2), None),
            row("a@x.org", "comment:3", 160, reply("/u", 3), None),
        ];
        let (now, next) = due(rows.clone(), 200, 300);
        assert!(now.is_empty());
        assert_eq!(next, Some(400));
        let (now, _) = due(rows.clone(), 400, 300);
        assert_eq!(now.len(), 1, "only /t's window has passed");
        assert_eq!(now[0].len(), 2);
        let mut interrupted = rows;
        interrupted.push(row(
            "a@x.org",
            "comment:4",
            190,
            reply("/t", 4),
            Some("<m@x>"),
        ));
        let (now, _) = due(interrupted, 200, 300);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0][0].sending.as_deref(), Some("<m@x>"));
    }
}
