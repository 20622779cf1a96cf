//! The logger's records on disk, as this version writes them.
//!
//! Private to the logger and apart from the wire type [`Event`] that tiers ship: renaming or
//! adding a field on the wire never changes how a stored event reads. The JSON written here
//! is also what an event's key hashes (see `db`), so an event retried after an upgrade is
//! still recognised as stored. A change to this record is a new format version with its
//! migration in [`crate::format`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::event::{Event, Kind};

/// Encodes a record.
pub(crate) fn encode<R: Serialize>(record: &R) -> Vec<u8> {
    // Strings, numbers and enums only: serializing cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record.
pub(crate) fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, LogError> {
    serde_json::from_slice(bytes).map_err(|e| LogError::Corrupt(e.to_string()))
}

/// `events`: one event, without its id (the id is its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    time: String,
    kind: KindRecord,
    tier: String,
    actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(rename = "authorKey", default, skip_serializing_if = "Option::is_none")]
    author_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

impl EventRecord {
    /// Whether the event concerns the author with this key.
    pub fn concerns(&self, author_key: &str) -> bool {
        self.author_key.as_deref() == Some(author_key)
    }

    /// Removes what says who the author was; the record of what happened stays.
    pub fn erase_author(&mut self) {
        if !self.actor.starts_with("admin") && self.actor != "system" {
            self.actor = "erased".to_owned();
        }
        self.address = None;
        self.author_key = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum KindRecord {
    #[serde(rename = "comment.posted")]
    CommentPosted,
    #[serde(rename = "comment.edited")]
    CommentEdited,
    #[serde(rename = "comment.deleted")]
    CommentDeleted,
    #[serde(rename = "comment.held")]
    CommentHeld,
    #[serde(rename = "comment.approved")]
    CommentApproved,
    #[serde(rename = "comment.rejected")]
    CommentRejected,
    #[serde(rename = "comment.voted")]
    CommentVoted,
    #[serde(rename = "thread.closed")]
    ThreadClosed,
    #[serde(rename = "thread.reopened")]
    ThreadReopened,
    #[serde(rename = "comments.suspended")]
    CommentsSuspended,
    #[serde(rename = "comments.resumed")]
    CommentsResumed,
    #[serde(rename = "ratelimit.rejected")]
    RateLimitRejected,
    #[serde(rename = "spam.rejected")]
    SpamRejected,
    #[serde(rename = "author.banned")]
    AuthorBanned,
    #[serde(rename = "address.banned")]
    AddressBanned,
    #[serde(rename = "ban.lifted")]
    BanLifted,
    #[serde(rename = "author.erased")]
    AuthorErased,
    #[serde(rename = "author.exported")]
    AuthorExported,
    // Added in format 2 without a new version: new kinds only add records older data never
    // holds.
    #[serde(rename = "site.imported")]
    SiteImported,
    #[serde(rename = "site.exported")]
    SiteExported,
    #[serde(rename = "tier.started")]
    TierStarted,
    #[serde(rename = "tier.stopped")]
    TierStopped,
}

/// One table for both directions, so a kind added to one side and not the other fails to
/// compile.
macro_rules! kinds {
    ($($k:ident),* $(,)?) => {
        impl From<Kind> for KindRecord {
            fn from(k: Kind) -> Self {
                match k {
                    $(Kind::$k => KindRecord::$k,)*
                }
            }
        }
        impl From<KindRecord> for Kind {
            fn from(k: KindRecord) -> Self {
                match k {
                    $(KindRecord::$k => Kind::$k,)*
                }
            }
        }
    };
}

kinds!(
    CommentPosted,
    CommentEdited,
    CommentDeleted,
    CommentHeld,
    CommentApproved,
    CommentRejected,
    CommentVoted,
    ThreadClosed,
    ThreadReopened,
    CommentsSuspended,
    CommentsResumed,
    RateLimitRejected,
    SpamRejected,
    AuthorBanned,
    AddressBanned,
    BanLifted,
    AuthorErased,
    AuthorExported,
    SiteImported,
    SiteExported,
    TierStarted,
    TierStopped,
);

impl From<&Event> for EventRecord {
    fn from(e: &Event) -> Self {
        EventRecord {
            time: e.time.clone(),
            kind: e.kind.into(),
            tier: e.tier.clone(),
            actor: e.actor.clone(),
            thread: e.thread.clone(),
            comment: e.comment,
            address: e.address.clone(),
            author_key: e.author_key.clone(),
            reason: e.reason.clone(),
            detail: e.detail.clone(),
            count: e.count,
        }
    }
}

impl EventRecord {
    /// The event, with the id it is known by.
    pub fn into_event(self, id: Option<String>) -> Event {
        Event {
            id,
            time: self.time,
            kind: self.kind.into(),
            tier: self.tier,
            actor: self.actor,
            thread: self.thread,
            comment: self.comment,
            address: self.address,
            author_key: self.author_key,
            reason: self.reason,
            detail: self.detail,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as the first format wrote it; it must keep reading, and writing, the same,
    /// since its key hashes these bytes.
    const V1: &str = r#"{"time":"2026-12-06T12:09:00.5Z","kind":"comment.posted","tier":"logic","actor":"Ann","thread":"/p/","comment":3,"address":"127.0.0.0","authorKey":"k"}"#;

    #[test]
    fn an_event_record_reads_and_writes_the_first_format() {
        let r: EventRecord = decode(V1.as_bytes()).unwrap();
        let e = r.clone().into_event(None);
        assert_eq!((e.kind, e.comment), (Kind::CommentPosted, Some(3)));
        assert_eq!(e.author_key.as_deref(), Some("k"));
        assert_eq!(
            String::from_utf8(encode(&EventRecord::from(&e))).unwrap(),
            V1
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            V1,
            "wire and disk agree today"
        );
    }

    #[test]
    fn every_kind_is_stored_under_its_wire_name() {
        let mut e = Event::now(Kind::CommentPosted, "logic", "x");
        for k in [
            Kind::CommentPosted,
            Kind::TierStopped,
            Kind::RateLimitRejected,
        ] {
            e.kind = k;
            let v: serde_json::Value =
                serde_json::from_slice(&encode(&EventRecord::from(&e))).unwrap();
            assert_eq!(v["kind"], k.as_str());
        }
    }
}
