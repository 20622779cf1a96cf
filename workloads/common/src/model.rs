//! The comment model as it travels between tiers and to browsers.
//!
//! Every change to a thread (a post, an edit, a vote, a moderation decision) is a [`Change`]
//! with the thread's next sequence number [`Seq`] and the next global position in the change
//! feed. A [`Comment`] carries the sequence number of the last change that touched it, so a
//! thread listed "after SEQ" returns exactly the comments that changed since SEQ.

use serde::{Deserialize, Serialize};

/// A per-thread sequence number: gap-free, starting at 1, in commit order.
pub type Seq = u64;

/// A position in the global change feed: gap-free, starting at 1, in commit order.
pub type FeedPos = u64;

/// Longest thread name accepted, in bytes.
pub const MAX_THREAD_BYTES: usize = 512;

/// Checks a thread name: 1..=512 bytes, no control characters, no bidirectional overrides,
/// in Unicode normalization form C (so a name typed on one system and its decomposed twin
/// from another are not two threads: clients normalize, see [`normalize_thread`]).
pub fn validate_thread(thread: &str) -> Result<(), &'static str> {
    if thread.is_empty() {
        return Err("must not be empty");
    }
    if thread.len() > MAX_THREAD_BYTES {
        return Err("must be at most 512 bytes");
    }
    if thread.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if thread.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional override or isolate characters");
    }
    if !icu_normalizer::ComposingNormalizerBorrowed::new_nfc().is_normalized(thread) {
        return Err("must be in Unicode normalization form C (NFC)");
    }
    Ok(())
}

/// A thread name in the form [`validate_thread`] accepts (NFC), for names read from pages.
pub fn normalize_thread(thread: &str) -> String {
    icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
        .normalize(thread)
        .into_owned()
}

/// Characters that reorder the text around them (the "Trojan Source" overrides and isolates):
/// in a name or a comment they can make what a reader sees differ from what was written.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks free text (a comment): no NUL or other control characters but tab and line breaks,
/// no bidirectional overrides. Answers the rule broken.
pub fn check_text_chars(text: &str) -> Result<(), &'static str> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err("must not contain control characters other than tabs and line breaks");
    }
    if text.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional override or isolate characters");
    }
    Ok(())
}

/// Checks a one-line value (a name, an address): no control characters at all, no
/// bidirectional overrides. Answers the rule broken.
pub fn check_line_chars(value: &str) -> Result<(), &'static str> {
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if value.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional override or isolate characters");
    }
    Ok(())
}

/// Whether others may see a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Visible to everyone.
    Approved,
    /// Held for moderation: visible to moderators only.
    Pending,
    /// Removed by its author or a moderator; kept as a tombstone so replies keep their place.
    Deleted,
}

/// Up and down votes on a comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votes {
    /// Number of +1 votes.
    pub up: u32,
    /// Number of -1 votes.
    pub down: u32,
}

/// A comment as others see it. Private data (email, address) never appears here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Globally unique, increasing with creation.
    pub id: u64,
    /// The thread it belongs to.
    pub thread: String,
    /// Sequence number of the last change that touched this comment.
    pub seq: Seq,
    /// The comment it replies to, in the same thread.
    pub parent: Option<u64>,
    /// Display name, when given.
    pub author: Option<String>,
    /// The author's website, when given.
    pub website: Option<String>,
    /// The Markdown source as written (empty once deleted).
    pub text: String,
    /// Sanitized HTML rendered from `text` at write time.
    pub html: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Last edit time, RFC 3339.
    pub modified: Option<String>,
    /// Visibility.
    pub status: Status,
    /// Votes so far.
    pub votes: Votes,
}

impl Comment {
    /// Whether this copy still carries what a deletion erases: text, name or website.
    pub fn has_content(&self) -> bool {
        !self.text.is_empty() || self.author.is_some() || self.website.is_some()
    }

    /// Erases what a deletion erases from this copy (text, rendered HTML, name, website),
    /// leaving the structure (id, thread, parent, times) that keeps a thread's shape.
    pub fn scrub(&mut self) {
        self.text.clear();
        self.html.clear();
        self.author = None;
        self.website = None;
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A new comment.
    Created,
    /// The text changed.
    Edited,
    /// The comment was removed.
    Deleted,
    /// A held comment was approved.
    Approved,
    /// A vote was counted.
    Voted,
    /// The thread was closed to new comments.
    Closed,
    /// The thread was reopened.
    Reopened,
}

/// One committed change: the unit of the change feed and of live updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the global change feed.
    pub pos: FeedPos,
    /// The thread changed.
    pub thread: String,
    /// The thread's sequence number for this change.
    pub seq: Seq,
    /// What happened.
    pub kind: ChangeKind,
    /// The comment after the change (absent for thread-level changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
}

impl Change {
    /// The change as the public may see it: a held comment's content is withheld until a
    /// moderator approves it (the sequence number still advances, so no gap appears).
    pub fn public(mut self) -> Change {
        if let Some(c) = &self.comment
            && c.status == Status::Pending
        {
            self.comment = None;
        }
        self
    }
}

/// A thread's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadMeta {
    /// The thread's name.
    pub thread: String,
    /// The last sequence number assigned (0 when nothing happened yet).
    pub head: Seq,
    /// Number of approved, not deleted comments.
    pub count: u64,
    /// Whether new comments are refused.
    pub closed: bool,
    /// The page's title, when an import brought one (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A page of a thread's comments, in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPage {
    /// The thread.
    pub thread: String,
    /// The thread's head sequence number at the time of reading.
    pub head: Seq,
    /// Whether the thread is closed.
    #[serde(default)]
    pub closed: bool,
    /// The comments whose last change is after the requested sequence number.
    pub comments: Vec<Comment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names() {
        assert!(validate_thread("/posts/hello").is_ok());
        assert!(validate_thread("").is_err());
        assert!(validate_thread(&"a".repeat(513)).is_err());
        assert!(validate_thread("a\nb").is_err());
        // NFC only: the decomposed é is refused, and normalizing makes it the composed one.
        assert!(validate_thread("/caf\u{e9}").is_ok());
        assert!(validate_thread("/cafe\u{301}").is_err());
        assert_eq!(normalize_thread("/cafe\u{301}"), "/caf\u{e9}");
        assert!(validate_thread("/a\u{202E}b").is_err());
    }

    #[test]
    fn text_rules() {
        assert!(check_text_chars("line one\n\tline two\r\n").is_ok());
        assert!(check_text_chars("nul \0 here").is_err());
        assert!(check_text_chars("evil \u{202E}txt.exe").is_err());
        assert!(check_text_chars("\u{2067}isolate").is_err());
        // Marks that only set direction are fine (right-to-left writers need them).
        assert!(check_text_chars("\u{200F}\u{5e9}\u{5dc}\u{5d5}\u{5dd}").is_ok());
        assert!(check_line_chars("Ann").is_ok());
        assert!(check_line_chars("A\tnn").is_err());
        assert!(check_line_chars("Ann\u{202D}").is_err());
    }

    #[test]
    fn public_change_hides_pending_comment() {
        let c = Comment {
            id: 1,
            thread: "t".into(),
            seq: 1,
            parent: None,
            author: None,
            website: None,
            text: "secret".into(),
            html: "<p>secret</p>".into(),
            created: "2026-01-01T00:00:00Z".into(),
            modified: None,
            status: Status::Pending,
            votes: Votes::default(),
        };
        let ch = Change {
            pos: 1,
            thread: "t".into(),
            seq: 1,
            kind: ChangeKind::Created,
            comment: Some(c),
        };
        assert!(ch.public().comment.is_none());
    }
}
