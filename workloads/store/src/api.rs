//! The store's wire types: what logic and sync send to and get from the store over HTTP.
//!
//! These are the store's outside face (the routes are listed in the HTTP layer). They are not
//! what is written to disk: the store keeps its own records, so a field renamed here never
//! changes how existing data reads.

use std::collections::BTreeMap;
use std::time::Duration;

use io360_common::model::{Change, Comment, FeedPos, Seq};
use serde::{Deserialize, Serialize};

/// Most items one read returns.
pub const MAX_LIMIT: usize = io360_common::rules::MAX_PAGE;

/// A comment to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewComment {
    /// The comment it replies to.
    pub parent: Option<u64>,
    /// Display name.
    pub author: Option<String>,
    /// Email (private).
    pub email: Option<String>,
    /// Website.
    pub website: Option<String>,
    /// Markdown source.
    pub text: String,
    /// Sanitized HTML.
    pub html: String,
    /// Approved, or pending when held for moderation.
    pub status: io360_common::model::Status,
    /// The client's address, truncated (private).
    pub remote: Option<String>,
    /// A stable key for the author, for first-time moderation (private).
    pub author_key: Option<String>,
}

/// One write. Each successful write is one [`Change`] with the thread's next sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum WriteOp {
    /// Appends a comment. A repeated idempotency key on the same thread with the same
    /// fingerprint returns the first result instead of a second comment.
    Append {
        /// The thread.
        thread: String,
        /// The comment.
        comment: NewComment,
        /// Makes retries return the first result (boxed: most appends have none).
        #[serde(default)]
        idempotency: Option<Box<Idempotency>>,
    },
    /// Replaces a comment's text.
    Edit {
        /// The comment.
        id: u64,
        /// New Markdown source.
        text: String,
        /// New sanitized HTML.
        html: String,
    },
    /// Deletes a comment: its text and private data are erased, a tombstone stays.
    Delete {
        /// The comment.
        id: u64,
    },
    /// Approves a held comment.
    Approve {
        /// The comment.
        id: u64,
    },
    /// Counts a vote, once per voter.
    Vote {
        /// The comment.
        id: u64,
        /// Who votes (an opaque key).
        voter: String,
        /// +1 or -1.
        value: i8,
    },
    /// Closes a thread to new comments.
    Close {
        /// The thread.
        thread: String,
    },
    /// Reopens a thread.
    Reopen {
        /// The thread.
        thread: String,
    },
}

/// What makes an append safe to retry.
///
/// The key is scoped by the caller to one client (logic hashes the client's address with the
/// key the client chose), so two clients that pick the same key never meet. The fingerprint
/// is a hash of the request: a retry must carry the same one, and the same key with another
/// fingerprint is refused (422 `idempotency-key-reused`) rather than answered with the first
/// result. A key is remembered for [`IDEMPOTENCY_WINDOW`]; after that it makes a new comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The scoped key.
    pub key: String,
    /// A hash of the request the key was first used with.
    pub fingerprint: String,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The committed change.
    pub change: Change,
    /// True when an idempotent retry returned an earlier result.
    #[serde(default)]
    pub replayed: bool,
}

/// A comment with its private fields, for logic's own use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredComment {
    /// The public comment.
    pub comment: Comment,
    /// Email, erased on delete.
    pub email: Option<String>,
    /// Truncated client address, erased on delete.
    pub remote: Option<String>,
    /// Author key for first-time moderation.
    pub author_key: Option<String>,
}

/// Which threads to count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsRequest {
    /// Thread names.
    pub threads: Vec<String>,
}

/// Approved comment counts per thread (0 for unknown threads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    /// Thread name → count.
    pub counts: BTreeMap<String, u64>,
}

/// A thread's changes after a sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadChanges {
    /// The thread.
    pub thread: String,
    /// Its head sequence number.
    pub head: Seq,
    /// Changes in sequence order.
    pub changes: Vec<Change>,
}

/// One line of the change feed: a change, or a heartbeat carrying the durable position.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeedLine {
    /// A committed change.
    Change(Box<Change>),
    /// Nothing new; the feed is durable up to `heartbeat`.
    Heartbeat {
        /// The durable feed position.
        heartbeat: FeedPos,
    },
}

/// The durable manual suspension (set by an admin where no operator runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Whether comments are suspended.
    pub suspended: bool,
    /// Why, in a sentence.
    #[serde(default)]
    pub reason: Option<String>,
    /// Since when, RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
}

/// Held comments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Oldest first.
    pub comments: Vec<StoredComment>,
}

/// An author's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Author {
    /// Approved comments so far.
    pub approved: u64,
}

/// A banned author: their comments are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BannedAuthor {
    /// The author's pseudonymous key.
    pub key: String,
    /// What the moderator saw (a display name and a comment id), for the ban list.
    pub label: String,
    /// When, RFC 3339.
    pub since: String,
}

/// A banned address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BannedRange {
    /// The range in CIDR notation, e.g. `203.0.113.0/24`.
    pub cidr: String,
    /// When, RFC 3339.
    pub since: String,
}

/// Who may not comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bans {
    /// Banned authors.
    #[serde(default)]
    pub authors: Vec<BannedAuthor>,
    /// Banned address ranges.
    #[serde(default)]
    pub ranges: Vec<BannedRange>,
}

/// A moderator's comment search. Every filter is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Only this thread.
    pub thread: Option<String>,
    /// Display name containing this (case-insensitive), or this exact email.
    pub author: Option<String>,
    /// Text containing this (case-insensitive).
    pub text: Option<String>,
    /// Only this status.
    pub status: Option<io360_common::model::Status>,
    /// Only comments with a smaller id (paging: the last id of the previous page).
    pub before: Option<u64>,
    /// At most this many (default 50, at most 1000).
    #[serde(default = "default_search_limit")]
    pub limit: usize,
}

fn default_search_limit() -> usize {
    50
}

/// Comments, with private fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    /// The comments.
    pub comments: Vec<StoredComment>,
}

/// Whose comments to erase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseAuthor {
    /// The author's pseudonymous key.
    pub author_key: String,
}

/// What an erase changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasedComments {
    /// One deletion per comment that was still visible or held.
    pub changes: Vec<Change>,
}

/// The last durable change-feed position.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Position {
    /// The position.
    pub position: FeedPos,
}

/// A comment brought in from another comment system (or from an io360 export).
///
/// Unlike an append, it keeps its own times, state and votes, and names its source: the
/// store keeps a permanent map from `source` to the io360 id it was given, so writing the same
/// source comment twice adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportedComment {
    /// The io360 thread.
    pub thread: String,
    /// The source's id, qualified by its format: `disqus:12345`, `isso:12`.
    pub source: String,
    /// The source id of the comment it replies to; when the store has no comment of that
    /// source id in this thread, the comment is written at the top level (and counted as
    /// orphaned).
    #[serde(default)]
    pub parent_source: Option<String>,
    /// Display name.
    #[serde(default)]
    pub author: Option<String>,
    /// Email (private).
    #[serde(default)]
    pub email: Option<String>,
    /// Website.
    #[serde(default)]
    pub website: Option<String>,
    /// The client's address as the source kept it (private).
    #[serde(default)]
    pub remote: Option<String>,
    /// The source text.
    pub text: String,
    /// Sanitized HTML.
    pub html: String,
    /// When it was posted, RFC 3339.
    pub created: String,
    /// When it was last edited, RFC 3339.
    #[serde(default)]
    pub modified: Option<String>,
    /// Approved, pending or deleted (a deleted comment is written as a tombstone).
    pub status: io360_common::model::Status,
    /// Votes the source counted.
    #[serde(default)]
    pub votes: io360_common::model::Votes,
    /// The author's key, as logic derives it from an email, so an erase finds the comment.
    #[serde(default)]
    pub author_key: Option<String>,
}

/// What writing a batch of imported comments did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// Comments written now.
    pub created: u64,
    /// Comments whose source id was imported before: nothing was written for them.
    pub skipped: u64,
    /// Source ids of comments written at the top level because their parent was missing.
    pub orphans: Vec<String>,
}

/// A comment as the store keeps it, with where it was imported from: one item of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedComment {
    /// The comment and its private fields.
    pub stored: StoredComment,
    /// The source id it was imported under, if it was imported.
    pub source: Option<String>,
    /// The source id its parent was imported under, if it has a parent that was imported.
    pub parent_source: Option<String>,
}

/// A thread as the store keeps it: one item of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedThread {
    /// The thread's name.
    pub thread: String,
    /// Whether it is closed to new comments.
    pub closed: bool,
    /// Its page's title, if one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The longest page title the store keeps, in bytes (an importer cuts a longer one).
pub const MAX_TITLE_BYTES: usize = 1024;

/// A page's title, kept for its thread (set by an import: the title the source had).
///
/// A title is kept by thread name, whether or not the thread has comments yet, and moves with
/// the thread when it is renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadTitle {
    /// The thread.
    pub thread: String,
    /// The page's title: plain text, not empty, at most [`MAX_TITLE_BYTES`] bytes.
    pub title: String,
}

/// What setting titles changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitlesSet {
    /// Titles written now: new, or different from the one kept (the same title again is not
    /// written).
    pub changed: u64,
}

/// One item of an export: every thread comes before every comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportItem {
    /// A thread.
    Thread(ExportedThread),
    /// A comment.
    Comment(Box<ExportedComment>),
}

/// A thread a remap renames (or would rename, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    /// Its name now.
    pub from: String,
    /// Its new name.
    pub to: String,
    /// Comments it holds (of every state).
    pub comments: u64,
    /// Its page's title, if one was kept (it moves with the thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The comment imported under a source id, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMatch {
    /// Its io360 id.
    pub id: Option<u64>,
}
