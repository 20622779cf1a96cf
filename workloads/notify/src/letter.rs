//! The messages themselves: a confirmation request, a digest of replies, a moderator's
//! notice and summary. Plain text and HTML, in the site's words ([`Phrases`]), every
//! subscriber's message with a signed one-click unsubscribe (RFC 8058 headers and a link in
//! the body that works without JavaScript).

use io360_common::html::escape;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::link::{Action, Claim, Signer};
use crate::outbox::{Item, Row, Scope};
use crate::phrases::Phrases;

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
    /// The words of the messages.
    pub phrases: Phrases,
}

/// Why a message could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the message to {to}: {reason}")]
pub struct LetterError {
    to: String,
    reason: String,
}

impl Letters {
    /// A message's HTML body in a document of the site's language.
    fn html(&self, body: &str) -> String {
        format!(
            "<!doctype html><html lang=\"{}\"><body>{body}</body></html>",
            escape(self.phrases.get("lang"))
        )
    }

    /// "Each link works once, for 3 days."
    fn link_once(&self) -> String {
        let days = (MODERATE_TTL_SECS / 86400).to_string();
        self.phrases.fill("linkOnce", &[("days", &days)])
    }

    /// The start of every message: sender, recipient, id and the site's language.
    fn builder(&self, to: Mailbox, message_id: &str) -> lettre::message::MessageBuilder {
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(message_id.to_owned()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Content-Language"),
                self.phrases.get("lang").to_owned(),
            ))
    }

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
        let p = &self.phrases;
        let who = h.author.as_deref().unwrap_or(p.get("someone"));
        let (approve_word, delete_word, once) =
            (p.get("approve"), p.get("delete"), self.link_once());
        let text = format!(
            "{}\n\n  {}\n\n{approve_word}: {approve}\n{delete_word}: {delete}\n\n{once}\n",
            p.fill("heldWrote", &[("who", who), ("thread", &h.thread)]),
            h.excerpt,
        );
        let html = self.html(&format!(
            "<p>{}</p><blockquote>{}</blockquote>\
             <p><a href=\"{}\">{}</a> &middot; <a href=\"{}\">{}</a></p><p>{}</p>",
            p.fill_html(
                "heldWrote",
                &[
                    ("who", &format!("<b>{}</b>", escape(who))),
                    ("thread", &escape(&h.thread))
                ]
            ),
            escape(&h.excerpt),
            escape(&approve),
            escape(approve_word),
            escape(&delete),
            escape(delete_word),
            escape(&once),
        ));
        self.builder(to, message_id)
            .subject(p.fill("heldSubject", &[("thread", &h.thread)]))
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
        let p = &self.phrases;
        let waiting = match sum.count {
            1 => p.get("summaryOne").to_owned(),
            n => p.fill("summaryMany", &[("n", &n.to_string())]),
        };
        let (approve_word, delete_word) = (p.get("approve"), p.get("delete"));
        let mut text = format!("{waiting}.\n\n");
        let mut html = format!("<p>{}.</p><ul>", escape(&waiting));
        for h in &sum.comments {
            let on = Scope::Replies(h.comment);
            let approve = self.link(Action::Approve, email, &h.thread, &on, now);
            let delete = self.link(Action::Delete, email, &h.thread, &on, now);
            let who = h.author.as_deref().unwrap_or(p.get("someone"));
            text.push_str(&format!(
                "{}\n  {}\n  {approve_word}: {approve}\n  {delete_word}: {delete}\n\n",
                p.fill("summaryOn", &[("who", who), ("thread", &h.thread)]),
                h.excerpt
            ));
            html.push_str(&format!(
                "<li><p>{}</p><blockquote>{}</blockquote>\
                 <p><a href=\"{}\">{}</a> &middot; <a href=\"{}\">{}</a></p></li>",
                p.fill_html(
                    "summaryOn",
                    &[
                        ("who", &format!("<b>{}</b>", escape(who))),
                        ("thread", &escape(&h.thread))
                    ]
                ),
                escape(&h.excerpt),
                escape(&approve),
                escape(approve_word),
                escape(&delete),
                escape(delete_word),
            ));
        }
        html.push_str("</ul>");
        let more = sum.count.saturating_sub(sum.comments.len());
        if more > 0 {
            let console = format!("{}/admin", self.public_url);
            let line = p.fill(
                "summaryMore",
                &[("n", &more.to_string()), ("console", &console)],
            );
            text.push_str(&line);
            text.push_str("\n\n");
            html.push_str(&format!("<p>{}</p>", escape(&line)));
        }
        let ttl = self.link_once();
        text.push_str(&ttl);
        text.push('\n');
        html.push_str(&format!("<p>{}</p>", escape(&ttl)));
        self.builder(to, message_id)
            .subject(p.fill("summarySubject", &[("waiting", &waiting)]))
            .multipart(MultiPart::alternative_plain_html(text, self.html(&html)))
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
        let p = &self.phrases;
        let what = match scope {
            Scope::Thread => p.fill("whatThread", &[("thread", thread)]),
            Scope::Replies(id) => p.fill(
                "whatReplies",
                &[("comment", &id.to_string()), ("thread", thread)],
            ),
        };
        let (subject, text, html) = match &first.item {
            Item::Confirm { .. } => {
                let confirm = self.link(Action::Confirm, &first.email, thread, scope, now);
                let asked = p.fill("confirmAsked", &[("what", &what)]);
                let ignore = p.get("confirmIgnore");
                (
                    p.fill("confirmSubject", &[("what", &what)]),
                    format!(
                        "{asked}\n\n{}\n{confirm}\n\n{ignore}\n",
                        p.get("confirmOpen")
                    ),
                    format!(
                        "<p>{}</p><p><a href=\"{}\">{}</a></p><p>{}</p>",
                        escape(&asked),
                        escape(&confirm),
                        escape(p.get("confirmButton")),
                        escape(ignore)
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
                        let who = author.as_deref().unwrap_or(p.get("someone"));
                        let at = format!("{}{thread}#comment-{comment}", self.public_url);
                        text.push_str(&format!(
                            "{}\n  {excerpt}\n  {at}\n\n",
                            p.fill("replyWrote", &[("who", who)])
                        ));
                        html.push_str(&format!(
                            "<p>{}</p><blockquote>{}</blockquote><p><a href=\"{}\">{}</a></p>",
                            p.fill_html(
                                "replyWrote",
                                &[("who", &format!("<b>{}</b>", escape(who)))]
                            ),
                            escape(excerpt),
                            escape(&at),
                            escape(p.get("replyRead"))
                        ));
                    }
                }
                let n = rows.len();
                let subject = if n == 1 {
                    p.fill("replySubjectOne", &[("thread", thread)])
                } else {
                    p.fill(
                        "replySubjectMany",
                        &[("n", &n.to_string()), ("thread", thread)],
                    )
                };
                (subject, text, html)
            }
        };
        let stop = p.get("stop");
        let text = format!("{text}--\n{stop}: {unsubscribe}\n");
        let html = self.html(&format!(
            "{html}<hr><p><a href=\"{}\">{}</a></p>",
            escape(&unsubscribe),
            escape(stop)
        ));
        let mut builder = self.builder(to, message_id).subject(subject);
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
