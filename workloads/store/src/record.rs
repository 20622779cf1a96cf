//! The store's records on disk: what each keyspace holds, as this version writes it.
//!
//! These types are private to the store and apart from the wire types in [`crate::api`] that
//! logic and sync see: renaming or adding a field on the wire never changes how data already
//! on disk reads. Each record converts to and from its wire or domain counterpart here, and
//! nowhere else. The whole directory carries one format version (see [`crate::format`]); a
//! change to any record below is a new version with a migration there.
//!
//! Records are JSON. Fields that may be absent are `#[serde(default)]`, so a record written
//! without an optional field still reads.

use io360_common::model::{Change, ChangeKind, Comment, FeedPos, Seq, Status, Votes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{BannedAuthor, BannedRange, Bans, StoredComment, Suspension};
use crate::error::StoreError;

/// Encodes a record.
pub(crate) fn encode<R: Serialize>(record: &R) -> Vec<u8> {
    // Records hold strings, numbers and enums only: serializing them cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record of the kind `what` (named in the error when the bytes are not one).
pub(crate) fn decode<R: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<R, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// `threads`: a thread's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThreadRecord {
    /// The thread's numeric id, the prefix of its keys in `log`, `latest` and `idem`.
    pub id: u64,
    /// The last sequence number assigned.
    pub head: Seq,
    /// Approved, not deleted comments.
    pub count: u64,
    /// Whether new comments are refused.
    pub closed: bool,
}

/// `comments`: a comment with its private fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommentRecord {
    comment: CommentBody,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    author_key: Option<String>,
}

/// A comment's public part, in `comments` and in the copies `feed` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CommentBody {
    id: u64,
    thread: String,
    seq: Seq,
    #[serde(default)]
    parent: Option<u64>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    website: Option<String>,
    text: String,
    html: String,
    created: String,
    #[serde(default)]
    modified: Option<String>,
    status: StatusRecord,
    #[serde(default)]
    votes: VotesRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StatusRecord {
    Approved,
    Pending,
    Deleted,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct VotesRecord {
    up: u32,
    down: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindRecord {
    Created,
    Edited,
    Deleted,
    Approved,
    Voted,
    Closed,
    Reopened,
}

/// `feed`: one committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChangeRecord {
    pos: FeedPos,
    thread: String,
    seq: Seq,
    kind: KindRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<CommentBody>,
}

/// `idem`: what the store remembers of an idempotent append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdemRecord {
    /// Feed position of the first result.
    pub pos: FeedPos,
    /// Hash of the first request.
    pub fingerprint: String,
    /// When it was first used (Unix seconds).
    pub at: i64,
}

impl IdemRecord {
    /// Reads a record; one written before records had fingerprints (a bare feed position)
    /// reads as expired, since nothing proves who sent it.
    pub fn parse(bytes: &[u8]) -> IdemRecord {
        decode("idempotency", bytes).unwrap_or(IdemRecord {
            pos: 0,
            fingerprint: String::new(),
            at: i64::MIN,
        })
    }
}

/// `meta["suspension"]`: the durable manual suspension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SuspensionRecord {
    suspended: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

/// `meta["bans"]`: who may not comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BansRecord {
    #[serde(default)]
    authors: Vec<BannedAuthorRecord>,
    #[serde(default)]
    ranges: Vec<BannedRangeRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BannedAuthorRecord {
    key: String,
    label: String,
    since: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BannedRangeRecord {
    cidr: String,
    since: String,
}

impl From<Status> for StatusRecord {
    fn from(s: Status) -> Self {
        match s {
            Status::Approved => StatusRecord::Approved,
            Status::Pending => StatusRecord::Pending,
            Status::Deleted => StatusRecord::Deleted,
        }
    }
}

impl From<StatusRecord> for Status {
    fn from(s: StatusRecord) -> Self {
        match s {
            StatusRecord::Approved => Status::Approved,
            StatusRecord::Pending => Status::Pending,
            StatusRecord::Deleted => Status::Deleted,
        }
    }
}

impl From<ChangeKind> for KindRecord {
    fn from(k: ChangeKind) -> Self {
        match k {
            ChangeKind::Created => KindRecord::Created,
            ChangeKind::Edited => KindRecord::Edited,
            ChangeKind::Deleted => KindRecord::Deleted,
            ChangeKind::Approved => KindRecord::Approved,
            ChangeKind::Voted => KindRecord::Voted,
            ChangeKind::Closed => KindRecord::Closed,
            ChangeKind::Reopened => KindRecord::Reopened,
        }
    }
}

impl From<KindRecord> for ChangeKind {
    fn from(k: KindRecord) -> Self {
        match k {
            KindRecord::Created => ChangeKind::Created,
            KindRecord::Edited => ChangeKind::Edited,
            KindRecord::Deleted => ChangeKind::Deleted,
            KindRecord::Approved => ChangeKind::Approved,
            KindRecord::Voted => ChangeKind::Voted,
            KindRecord::Closed => ChangeKind::Closed,
            KindRecord::Reopened => ChangeKind::Reopened,
        }
    }
}

impl From<&Comment> for CommentBody {
    fn from(c: &Comment) -> Self {
        CommentBody {
            id: c.id,
            thread: c.thread.clone(),
            seq: c.seq,
            parent: c.parent,
            author: c.author.clone(),
            website: c.website.clone(),
            text: c.text.clone(),
            html: c.html.clone(),
            created: c.created.clone(),
            modified: c.modified.clone(),
            status: c.status.into(),
            votes: VotesRecord {
                up: c.votes.up,
                down: c.votes.down,
            },
        }
    }
}

impl From<CommentBody> for Comment {
    fn from(c: CommentBody) -> Self {
        Comment {
            id: c.id,
            thread: c.thread,
            seq: c.seq,
            parent: c.parent,
            author: c.author,
            website: c.website,
            text: c.text,
            html: c.html,
            created: c.created,
            modified: c.modified,
            status: c.status.into(),
            votes: Votes {
                up: c.votes.up,
                down: c.votes.down,
            },
        }
    }
}

impl From<&StoredComment> for CommentRecord {
    fn from(c: &StoredComment) -> Self {
        CommentRecord {
            comment: (&c.comment).into(),
            email: c.email.clone(),
            remote: c.remote.clone(),
            author_key: c.author_key.clone(),
        }
    }
}

impl From<CommentRecord> for StoredComment {
    fn from(r: CommentRecord) -> Self {
        StoredComment {
            comment: r.comment.into(),
            email: r.email,
            remote: r.remote,
            author_key: r.author_key,
        }
    }
}

impl From<&Change> for ChangeRecord {
    fn from(c: &Change) -> Self {
        ChangeRecord {
            pos: c.pos,
            thread: c.thread.clone(),
            seq: c.seq,
            kind: c.kind.into(),
            comment: c.comment.as_ref().map(CommentBody::from),
        }
    }
}

impl From<ChangeRecord> for Change {
    fn from(r: ChangeRecord) -> Self {
        Change {
            pos: r.pos,
            thread: r.thread,
            seq: r.seq,
            kind: r.kind.into(),
            comment: r.comment.map(Comment::from),
        }
    }
}

impl From<&Suspension> for SuspensionRecord {
    fn from(s: &Suspension) -> Self {
        SuspensionRecord {
            suspended: s.suspended,
            reason: s.reason.clone(),
            since: s.since.clone(),
        }
    }
}

impl From<SuspensionRecord> for Suspension {
    fn from(r: SuspensionRecord) -> Self {
        Suspension {
            suspended: r.suspended,
            reason: r.reason,
            since: r.since,
        }
    }
}

impl From<&Bans> for BansRecord {
    fn from(b: &Bans) -> Self {
        BansRecord {
            authors: b
                .authors
                .iter()
                .map(|a| BannedAuthorRecord {
                    key: a.key.clone(),
                    label: a.label.clone(),
                    since: a.since.clone(),
                })
                .collect(),
            ranges: b
                .ranges
                .iter()
                .map(|r| BannedRangeRecord {
                    cidr: r.cidr.clone(),
                    since: r.since.clone(),
                })
                .collect(),
        }
    }
}

impl From<BansRecord> for Bans {
    fn from(r: BansRecord) -> Self {
        Bans {
            authors: r
                .authors
                .into_iter()
                .map(|a| BannedAuthor {
                    key: a.key,
                    label: a.label,
                    since: a.since,
                })
                .collect(),
            ranges: r
                .ranges
                .into_iter()
                .map(|r| BannedRange {
                    cidr: r.cidr,
                    since: r.since,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the first format wrote for a comment; they must keep reading the same.
    const COMMENT_V1: &str = r#"{"comment":{"id":3,"thread":"/p/","seq":4,"parent":1,"author":"Ann","website":null,"text":"hi","html":"<p>hi</p>","created":"2026-01-01T00:00:00Z","modified":null,"status":"approved","votes":{"up":2,"down":1}},"email":"ann@example.org","remote":"127.0.0.0","author_key":"k"}"#;

    #[test]
    fn a_comment_record_reads_and_writes_the_first_format() {
        let r: CommentRecord = decode("comment", COMMENT_V1.as_bytes()).unwrap();
        let c = StoredComment::from(r.clone());
        assert_eq!(c.comment.parent, Some(1));
        assert_eq!(c.comment.votes.up, 2);
        assert_eq!(c.author_key.as_deref(), Some("k"));
        assert_eq!(
            String::from_utf8(encode(&CommentRecord::from(&c))).unwrap(),
            COMMENT_V1
        );
    }

    #[test]
    fn a_change_record_without_a_comment_omits_it() {
        let change = Change {
            pos: 9,
            thread: "/t".into(),
            seq: 2,
            kind: ChangeKind::Closed,
            comment: None,
        };
        let bytes = encode(&ChangeRecord::from(&change));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"pos":9,"thread":"/t","seq":2,"kind":"closed"}"#
        );
        let back: ChangeRecord = decode("change", &bytes).unwrap();
        assert_eq!(Change::from(back), change);
    }

    #[test]
    fn bytes_that_are_no_record_are_named_corrupt() {
        let e = decode::<ThreadRecord>("thread", b"{\"id\":").unwrap_err();
        assert!(e.to_string().contains("thread"), "{e}");
    }
}
