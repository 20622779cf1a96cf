//! The messages themselves: a confirmation request, a digest of replies. Plain text and
//! HTML, every one with a signed one-click unsubscribe (RFC 8058 headers and a link in the
//! body that works without JavaScript).

use io360_common::html::escape;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::link::{Action, Claim, Signer};
use crate::outbox::{Item, Row, Scope};

/// How long a confirmation link stays valid.
pub const CONFIRM_TTL_SECS: i64 = 7 * 24 * 3600;
/// How long a moderator's approve or delete link stays valid.
pub const MODERATE_TTL_SECS: i64 = 3 * 24 * 3600;

/// What every message shares: who sends it, where links point, how they are signed.
#[derive(Debug, Clone)]
pub struct Letters {
    /// The sender.
    pub from: Mailbox,
    /// The site's public base URL, without a trailing slash.
    pub public_url: String,
    /// Signs links.
    pub signer: Signer,
}

/// Why a message could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the message to {to}: {reason}")]
pub struct LetterError {
    to: String,
    reason: String,
}

impl Letters {
    fn link(&self, action: Action, email: &str, thread: &str, scope: &Scope, now: i64) -> String {
        let claim = Claim {
            a: action,
            e: email.to_owned(),
            t: thread.to_owned(),
            s: scope.clone(),
            x: match action {
                Action::Confirm => Some(now + CONFIRM_TTL_SECS),
                Action::Unsubscribe => None,
                Action::Approve | Action::Delete => Some(now + MODERATE_TTL_SECS),
            },
        };
        let path = match action {
            Action::Confirm => "confirm",
            Action::Unsubscribe => "unsubscribe",
            Action::Approve | Action::Delete => "moderate",
        };
        format!(
            "{}/api/v1/notifications/{path}?token={}",
            self.public_url,
            self.signer.sign(&claim)
        )
    }

    /// The message to a moderator about a held comment: its text and one-time links.
    fn held(
        &self,
        h: &crate::outbox::Held,
        to: Mailbox,
        email: &str,
        message_id: &str,
        now: i64,
    ) -> Result<Message, String> {
        let on = Scope::Replies(h.comment);
        let approve = self.link(Action::Approve, email, &h.thread, &on, now);
        let delete = self.link(Action::Delete, email, &h.thread, &on, now);
        let who = h.author.as_deref().unwrap_or("Someone");
        let text = format!(
            "{who} wrote on {}:\n\n  {}\n\nApprove: {approve}\nDelete: {delete}\n\n\
             Each link works once, for {} days.\n",
            h.thread,
            h.excerpt,
            MODERATE_TTL_SECS / 86400
        );
        let html = format!(
            "<!doctype html><html><body><p><b>{}</b> wrote on {}:</p><blockquote>{}</blockquote>\
             <p><a href=\"{}\">Approve</a> &middot; <a href=\"{}\">Delete</a></p>\
             <p>Each link works once, for {} days.</p></body></html>",
            escape(who),
            escape(&h.thread),
            escape(&h.excerpt),
            escape(&approve),
            escape(&delete),
            MODERATE_TTL_SECS / 86400
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Held for moderation on {}", h.thread))
            .message_id(Some(message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| e.to_string())
    }

    /// The moderators' summary: how many comments wait, and the oldest with one-time links.
    fn summary(
        &self,
        sum: &crate::outbox::Summary,
        to: Mailbox,
        email: &str,
        message_id: &str,
        now: i64,
    ) -> Result<Message, String> {
        let waiting = match sum.count {
            1 => "1 comment is waiting for moderation".to_owned(),
            n => format!("{n} comments are waiting for moderation"),
        };
        let mut text = format!("{waiting}.\n\n");
        let mut html = format!(
            "<!doctype html><html><body><p>{}.</p><ul>",
            escape(&waiting)
        );
        for h in &sum.comments {
            let on = Scope::Replies(h.comment);
            let approve = self.link(Action::Approve, email, &h.thread, &on, now);
            let delete = self.link(Action::Delete, email, &h.thread, &on, now);
            let who = h.author.as_deref().unwrap_or("Someone");
            text.push_str(&format!(
                "{who} on {}:\n  {}\n  Approve: {approve}\n  Delete: {delete}\n\n",
                h.thread, h.excerpt
            ));
            html.push_str(&format!(
                "<li><p><b>{}</b> on {}:</p><blockquote>{}</blockquote>\
                 <p><a href=\"{}\">Approve</a> &middot; <a href=\"{}\">Delete</a></p></li>",
                escape(who),
                escape(&h.thread),
                escape(&h.excerpt),
                escape(&approve),
                escape(&delete)
            ));
        }
        html.push_str("</ul>");
        let more = sum.count.saturating_sub(sum.comments.len());
        if more > 0 {
            let line = format!(
                "{more} more in the moderation console: {}/admin",
                self.public_url
            );
            text.push_str(&line);
            text.push_str("\n\n");
            html.push_str(&format!("<p>{}</p>", escape(&line)));
        }
        let ttl = format!(
            "Each link works once, for {} days.",
            MODERATE_TTL_SECS / 86400
        );
        text.push_str(&ttl);
        text.push('\n');
        html.push_str(&format!("<p>{ttl}</p></body></html>"));
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Moderation: {waiting}"))
            .message_id(Some(message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| e.to_string())
    }

    /// A fresh `Message-ID` under the sender's domain.
    pub fn message_id(&self) -> String {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        format!(
            "<{nanos:x}.{:016x}@{}>",
            fastrand::u64(..),
            self.from.email.domain()
        )
    }

    /// The message carrying `rows` (all for one recipient, one thread and one scope).
    pub fn build(&self, rows: &[Row], message_id: &str, now: i64) -> Result<Message, LetterError> {
        let first = &rows[0];
        let err = |reason: String| LetterError {
            to: first.email.clone(),
            reason,
        };
        let to: Mailbox = first
            .email
            .parse()
            .map_err(|e| err(format!("address: {e}")))?;
        let (thread, scope) = match &first.item {
            Item::Confirm { thread, scope } => (thread, scope),
            Item::Reply { thread, sub, .. } => (thread, sub),
            Item::Held(h) => return self.held(h, to, &first.email, message_id, now).map_err(err),
            Item::Summary(sum) => {
                return self
                    .summary(sum, to, &first.email, message_id, now)
                    .map_err(err);
            }
        };
        let unsubscribe = self.link(Action::Unsubscribe, &first.email, thread, scope, now);
        let what = match scope {
            Scope::Thread => format!("new comments on {thread}"),
            Scope::Replies(id) => format!("replies to comment {id} on {thread}"),
        };
        let (subject, text, html) = match &first.item {
            Item::Confirm { .. } => {
                let confirm = self.link(Action::Confirm, &first.email, thread, scope, now);
                (
                    format!("Confirm: email me {what}"),
                    format!(
                        "Someone (we hope you) asked to be told of {what} at this address.\n\n\
                         To confirm, open:\n{confirm}\n\n\
                         If it was not you, ignore this message: nothing will be sent.\n"
                    ),
                    format!(
                        "<p>Someone (we hope you) asked to be told of {} at this address.</p>\
                         <p><a href=\"{}\">Confirm</a></p>\
                         <p>If it was not you, ignore this message: nothing will be sent.</p>",
                        escape(&what),
                        escape(&confirm)
                    ),
                )
            }
            Item::Reply { .. } | Item::Held(_) | Item::Summary(_) => {
                let mut text = String::new();
                let mut html = String::new();
                for row in rows {
                    if let Item::Reply {
                        comment,
                        author,
                        excerpt,
                        ..
                    } = &row.item
                    {
                        let who = author.as_deref().unwrap_or("Someone");
                        let at = format!("{}{thread}#comment-{comment}", self.public_url);
                        text.push_str(&format!("{who} wrote:\n  {excerpt}\n  {at}\n\n"));
                        html.push_str(&format!(
                            "<p><b>{}</b> wrote:</p><blockquote>{}</blockquote><p><a href=\"{}\">Read it</a></p>",
                            escape(who),
                            escape(excerpt),
                            escape(&at)
                        ));
                    }
                }
                let n = rows.len();
                let subject = if n == 1 {
                    format!("A new comment on {thread}")
                } else {
                    format!("{n} new comments on {thread}")
                };
                (subject, text, html)
            }
        };
        let text = format!("{text}--\nStop these emails: {unsubscribe}\n");
        let html = format!(
            "<!doctype html><html><body>{html}<hr><p><a href=\"{}\">Stop these emails</a></p></body></html>",
            escape(&unsubscribe)
        );
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()));
        if !matches!(first.item, Item::Confirm { .. }) {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{unsubscribe}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| err(e.to_string()))
    }
}
