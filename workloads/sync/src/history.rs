//! Recent history: the last changes of the feed, indexed by position and by thread.
//!
//! Sync keeps a window of the change feed in memory so that longpoll instances can catch up
//! and fill gaps without touching the store. The window is bounded by a count and a byte
//! budget; each thread's slice of it is bounded by a count too, so one busy thread cannot
//! crowd out the others' gap fills. What falls out of the window is still in the store, which
//! [`crate::api`] falls back to.
//!
//! The window is only ever extended at the head, one position at a time, so it is always a
//! contiguous run of feed positions, and each thread's slice is a contiguous run of that
//! thread's sequence numbers. The history's `epoch` is drawn at random when the process starts:
//! a consumer that sees a new epoch knows the history it was reading is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use io360_common::model::{Change, ChangeKind, FeedPos, Seq};
use parking_lot::RwLock;
use tokio::sync::watch;

/// Bounds of the history.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most changes kept in all.
    pub max_changes: usize,
    /// Most bytes (estimated) kept in all.
    pub max_bytes: usize,
    /// Most changes kept per thread.
    pub per_thread: usize,
}

/// One thread's recent changes: `changes` holds sequence numbers `lo + 1 ..= head`.
#[derive(Debug)]
struct ThreadSlice {
    lo: Seq,
    changes: VecDeque<Arc<Change>>,
}

impl ThreadSlice {
    fn head(&self) -> Seq {
        self.lo + self.changes.len() as Seq
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Contiguous feed positions `head - ring.len() + 1 ..= head`.
    ring: VecDeque<Arc<Change>>,
    bytes: usize,
    head: FeedPos,
    threads: HashMap<String, ThreadSlice>,
}

impl Window {
    /// The last position no longer (or never) held: positions after it are in the ring.
    fn floor(&self) -> FeedPos {
        self.head - self.ring.len() as FeedPos
    }

    /// A comment was deleted at `deleted_at`: earlier copies of it held here (its creation,
    /// edits, votes) lose what the deletion erased, so history never replays the text, name
    /// or website of a deleted comment (nor of an author erased on request, which deletes
    /// every comment of theirs). The store scrubs its own feed the same way on erase.
    fn scrub(&mut self, thread: &str, comment: u64, deleted_at: FeedPos) {
        let floor = self.floor();
        let Window {
            ring,
            threads,
            bytes,
            ..
        } = self;
        let Some(slice) = threads.get_mut(thread) else {
            return;
        };
        for held in slice.changes.iter_mut() {
            let Some(c) = &held.comment else { continue };
            if held.pos == deleted_at || c.id != comment || !c.has_content() {
                continue;
            }
            let mut copy = Change::clone(held);
            if let Some(c) = &mut copy.comment {
                c.scrub();
            }
            let copy = Arc::new(copy);
            *bytes = bytes.saturating_sub(weight(held)) + weight(&copy);
            if let Some(slot) = held
                .pos
                .checked_sub(floor + 1)
                .and_then(|i| ring.get_mut(i as usize))
                && slot.pos == held.pos
            {
                *slot = copy.clone();
            }
            *held = copy;
        }
    }
}

/// What a range request can learn from history.
#[derive(Debug)]
pub enum Range {
    /// The history covers the request: these are the thread's changes after the asked
    /// sequence number (at most the limit), and the thread's head.
    Covered {
        /// The thread's last sequence number known to history.
        head: Seq,
        /// Changes in sequence order.
        changes: Vec<Change>,
    },
    /// The history does not reach back far enough (or not far enough forward): ask the store.
    NotCovered,
}

/// Where a stream reader stands against the history.
#[derive(Debug)]
pub enum Read {
    /// Changes after the asked position, in order.
    Changes(Vec<Arc<Change>>),
    /// Nothing after the asked position yet.
    Caught,
    /// The asked position fell out of the window (`floor` is the first position held, minus
    /// one): read it from the store.
    Evicted {
        /// Positions after this one are in the window.
        floor: FeedPos,
    },
}

/// The history shared by the tail task and the API.
#[derive(Debug)]
pub struct History {
    epoch: u64,
    limits: Limits,
    window: RwLock<Window>,
    head_tx: watch::Sender<FeedPos>,
}

/// A rough size of a change in memory, for the byte budget.
fn weight(c: &Change) -> usize {
    let comment = c.comment.as_ref().map_or(0, |c| {
        c.text.len()
            + c.html.len()
            + c.thread.len()
            + c.author.as_ref().map_or(0, String::len)
            + c.website.as_ref().map_or(0, String::len)
            + c.created.len()
            + 160
    });
    std::mem::size_of::<Change>() + c.thread.len() * 2 + comment + 64
}

impl History {
    /// An empty history with a fresh epoch.
    pub fn new(limits: Limits) -> Self {
        let mut epoch = fastrand::u64(1..u64::MAX >> 11);
        if epoch == 0 {
            epoch = 1;
        }
        History {
            epoch,
            limits,
            window: RwLock::new(Window::default()),
            head_tx: watch::channel(0).0,
        }
    }

    /// This history's epoch: it changes whenever history is lost (a restart).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last feed position applied.
    pub fn head(&self) -> FeedPos {
        self.window.read().head
    }

    /// Follows the head position.
    pub fn watch_head(&self) -> watch::Receiver<FeedPos> {
        self.head_tx.subscribe()
    }

    /// The first feed position still held, minus one.
    #[cfg(test)]
    pub fn floor(&self) -> FeedPos {
        self.window.read().floor()
    }

    /// (changes, bytes, threads) held now.
    pub fn size(&self) -> (usize, usize, usize) {
        let w = self.window.read();
        (w.ring.len(), w.bytes, w.threads.len())
    }

    /// Appends a change read from the store's feed. Changes at or before the head are
    /// repeats and ignored. Returns false when the change does not follow the head (a gap in
    /// the feed, which the store never produces): the caller must re-read from the head.
    pub fn apply(&self, change: Change) -> bool {
        let mut w = self.window.write();
        if change.pos <= w.head {
            return true;
        }
        if change.pos != w.head + 1 {
            return false;
        }
        let change = Arc::new(change);
        let pos = change.pos;
        w.head = pos;
        w.bytes += weight(&change);
        w.ring.push_back(change.clone());
        let per_thread = self.limits.per_thread;
        match w.threads.get_mut(&change.thread) {
            Some(slice) if slice.head() + 1 == change.seq => {
                slice.changes.push_back(change.clone());
                while slice.changes.len() > per_thread {
                    if let Some(old) = slice.changes.pop_front() {
                        slice.lo = old.seq;
                    }
                }
            }
            Some(slice) if change.seq <= slice.head() => {
                // The store never repeats a sequence number at a new position; keep what we
                // have rather than guess.
                tracing::warn!(thread = %change.thread, seq = change.seq, "repeated sequence number in the feed");
            }
            _ => {
                // First change of this thread in the window (or, impossibly, a gap): the slice
                // starts here, and earlier changes are the store's to give.
                w.threads.insert(
                    change.thread.clone(),
                    ThreadSlice {
                        lo: change.seq - 1,
                        changes: VecDeque::from([change.clone()]),
                    },
                );
            }
        }
        if change.kind == ChangeKind::Deleted
            && let Some(c) = &change.comment
        {
            w.scrub(&change.thread, c.id, pos);
        }
        while w.ring.len() > self.limits.max_changes
            || (w.bytes > self.limits.max_bytes && w.ring.len() > 1)
        {
            let Some(old) = w.ring.pop_front() else { break };
            w.bytes = w.bytes.saturating_sub(weight(&old));
            let mut emptied = false;
            if let Some(slice) = w.threads.get_mut(&old.thread)
                && slice.changes.front().is_some_and(|c| Arc::ptr_eq(c, &old))
            {
                slice.changes.pop_front();
                slice.lo = old.seq;
                emptied = slice.changes.is_empty();
            }
            if emptied {
                w.threads.remove(&old.thread);
            }
        }
        drop(w);
        self.head_tx.send_replace(pos);
        true
    }

    /// The thread's changes after `after` (at most `limit`), when history covers them and has
    /// read the feed at least up to `at`.
    pub fn range(&self, thread: &str, after: Seq, limit: usize, at: FeedPos) -> Range {
        let w = self.window.read();
        if w.head < at {
            return Range::NotCovered;
        }
        let Some(slice) = w.threads.get(thread) else {
            return Range::NotCovered;
        };
        if after < slice.lo {
            return Range::NotCovered;
        }
        let head = slice.head();
        let skip = (after - slice.lo).min(slice.changes.len() as u64) as usize;
        let changes = slice
            .changes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|c| Change::clone(c))
            .collect();
        Range::Covered { head, changes }
    }

    /// Changes after feed position `after`, at most `limit`.
    pub fn read(&self, after: FeedPos, limit: usize) -> Read {
        let w = self.window.read();
        if after >= w.head {
            return Read::Caught;
        }
        let floor = w.floor();
        if after < floor {
            return Read::Evicted { floor };
        }
        let skip = (after - floor) as usize;
        Read::Changes(w.ring.iter().skip(skip).take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io360_common::model::{Comment, Status, Votes};

    fn change(pos: FeedPos, thread: &str, seq: Seq) -> Change {
        Change {
            pos,
            thread: thread.into(),
            seq,
            kind: ChangeKind::Closed,
            comment: None,
        }
    }

    fn limits(max_changes: usize, per_thread: usize) -> Limits {
        Limits {
            max_changes,
            max_bytes: usize::MAX,
            per_thread,
        }
    }

    fn seqs(r: Range) -> Option<(Seq, Vec<Seq>)> {
        match r {
            Range::Covered { head, changes } => {
                Some((head, changes.into_iter().map(|c| c.seq).collect()))
            }
            Range::NotCovered => None,
        }
    }

    #[test]
    fn range_covers_only_what_was_seen() {
        let h = History::new(limits(100, 3));
        for pos in 1..=10 {
            assert!(h.apply(change(pos, "other", pos)));
        }
        assert!(h.apply(change(11, "a", 5)));
        assert!(h.apply(change(12, "b", 1)));
        assert!(h.apply(change(13, "a", 6)));
        // `a` was first seen at seq 5: asking after 4 is covered, after 3 is not.
        assert_eq!(seqs(h.range("a", 4, 10, 0)), Some((6, vec![5, 6])));
        assert_eq!(seqs(h.range("a", 6, 10, 0)), Some((6, vec![])));
        assert!(seqs(h.range("a", 3, 10, 0)).is_none());
        assert!(seqs(h.range("zzz", 0, 10, 0)).is_none());
        // Not yet read up to position 14: the store must answer.
        assert!(seqs(h.range("a", 4, 10, 14)).is_none());
        // Per-thread bound: after seq 9 only 7, 8, 9 remain.
        for (i, seq) in (7..=9).enumerate() {
            assert!(h.apply(change(14 + i as u64, "a", seq)));
        }
        assert_eq!(seqs(h.range("a", 6, 10, 0)), Some((9, vec![7, 8, 9])));
        assert!(seqs(h.range("a", 5, 10, 0)).is_none());
    }

    #[test]
    fn window_evicts_oldest_and_reports_it() {
        let h = History::new(limits(3, 10));
        for pos in 1..=5 {
            assert!(h.apply(change(pos, "t", pos)));
        }
        assert_eq!(h.floor(), 2);
        match h.read(0, 10) {
            Read::Evicted { floor } => assert_eq!(floor, 2),
            other => panic!("expected eviction, got {other:?}"),
        }
        match h.read(3, 10) {
            Read::Changes(c) => assert_eq!(c.iter().map(|c| c.pos).collect::<Vec<_>>(), [4, 5]),
            other => panic!("expected changes, got {other:?}"),
        }
        assert!(matches!(h.read(5, 10), Read::Caught));
        assert!(seqs(h.range("t", 1, 10, 0)).is_none());
        assert_eq!(seqs(h.range("t", 2, 10, 0)), Some((5, vec![3, 4, 5])));
    }

    #[test]
    fn repeats_are_ignored_and_gaps_refused() {
        let h = History::new(limits(10, 10));
        assert!(h.apply(change(1, "t", 1)));
        assert!(h.apply(change(1, "t", 1)));
        assert!(!h.apply(change(3, "t", 2)));
        assert_eq!(h.head(), 1);
    }

    fn comment_change(pos: FeedPos, seq: Seq, kind: ChangeKind, text: &str) -> Change {
        Change {
            pos,
            thread: "t".into(),
            seq,
            kind,
            comment: Some(Comment {
                id: 42,
                thread: "t".into(),
                seq,
                parent: None,
                author: (!text.is_empty()).then(|| "ann".into()),
                website: None,
                text: text.into(),
                html: text.into(),
                created: "2026-01-01T00:00:00Z".into(),
                modified: None,
                status: if kind == ChangeKind::Deleted {
                    Status::Deleted
                } else {
                    Status::Approved
                },
                votes: Votes::default(),
            }),
        }
    }

    #[test]
    fn a_deletion_scrubs_earlier_copies_in_ranges_and_the_stream() {
        let h = History::new(limits(100, 100));
        assert!(h.apply(comment_change(1, 1, ChangeKind::Created, "secret")));
        assert!(h.apply(change(2, "t", 2)));
        assert!(h.apply(comment_change(3, 3, ChangeKind::Edited, "secret v2")));
        let (_, before, _) = h.size();
        assert!(h.apply(comment_change(4, 4, ChangeKind::Deleted, "")));
        let Range::Covered { changes, .. } = h.range("t", 0, 10, 0) else {
            panic!("history should cover the thread");
        };
        assert_eq!(changes.len(), 4);
        let Read::Changes(stream) = h.read(0, 10) else {
            panic!("history should hold the stream");
        };
        for c in changes.iter().chain(stream.iter().map(|c| &**c)) {
            if let Some(c) = &c.comment {
                assert!(!c.has_content(), "a copy kept content: {c:?}");
            }
        }
        // Kinds and sequence numbers are untouched: the stream keeps its shape.
        assert_eq!(stream[0].kind, ChangeKind::Created);
        assert_eq!(stream[2].seq, 3);
        let (_, after, _) = h.size();
        let deleted = weight(&comment_change(4, 4, ChangeKind::Deleted, ""));
        let erased = 2 * "secret".len() + 2 * "secret v2".len() + 2 * "ann".len();
        assert_eq!(
            after,
            before + deleted - erased,
            "the byte budget follows the copies"
        );
    }
}
