//! Comment snapshots: a thread's approved comments as plain HTML, kept in memory.
//!
//! A page with a marked thread is served with that thread's comments already inside it, for
//! search engines and readers without JavaScript. Snapshots are read from logic in the
//! background, never on a page request: a request finds the last snapshot and, when it is
//! older than the refresh interval, starts a refresh that later requests benefit from. When
//! logic is slow or down the last snapshot stays (stale beats an error) and refreshes back off.
//! Refreshes ask logic only for what changed since the snapshot's head.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use io360_common::client::{ClientError, TierClient};
use io360_common::html::escape;
use io360_common::model::{Comment, Seq, Status, ThreadPage};
use io360_common::retry::Backoff;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Semaphore;

use crate::suspension::SuspensionState;

/// Comments asked for per call to logic (the most one answer holds).
const PAGE_LIMIT: usize = 1000;

/// Comments rendered into a page at most; the rest are behind a link the widget follows on
/// demand, so a thread of any length keeps its pages small.
pub(crate) const SHOWN_COMMENTS: usize = 200;

/// Longest wait between refreshes of a thread while logic keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One thread's snapshot as last read from logic.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Process-wide version, new on every change (0 is "no snapshot").
    pub version: u64,
    /// The thread's head sequence number when read.
    pub head: Seq,
    /// Whether the thread is closed.
    pub closed: bool,
    /// Every comment known, by id.
    comments: BTreeMap<u64, Comment>,
    /// The comments rendered as HTML (without the wrapper, which depends on suspension).
    pub html: String,
    /// When this content was first seen.
    pub changed_at: SystemTime,
}

/// Where one thread's snapshot lives; pages of that thread hold it directly.
#[derive(Debug)]
pub(crate) struct ThreadSlot {
    /// The thread's name.
    pub thread: String,
    /// The last snapshot, if any was ever read.
    pub current: ArcSwapOption<Snapshot>,
    refreshing: AtomicBool,
    /// Milliseconds since [`Snapshots::epoch`] before which no refresh starts.
    next_due_ms: AtomicU64,
    failures: AtomicU32,
}

impl ThreadSlot {
    /// Whether the last refresh failed (so the snapshot may be stale).
    pub fn is_stale(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Counters about snapshots.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotMetrics {
    /// Pages served with a fresh snapshot.
    pub served_fresh: Counter,
    /// Pages served with a snapshot logic could not refresh.
    pub served_stale: Counter,
    /// Pages served with no snapshot at all.
    pub served_absent: Counter,
    refresh_ok: Counter,
    refresh_error: Counter,
}

impl SnapshotMetrics {
    pub fn new(telemetry: &io360_common::telemetry::Telemetry) -> SnapshotMetrics {
        let served: Family<ResultLabel, Counter> = Family::default();
        let refreshes: Family<ResultLabel, Counter> = Family::default();
        telemetry.register(
            "frontend_snapshot_pages",
            "Pages served with a thread, by snapshot state (fresh, stale, absent)",
            served.clone(),
        );
        telemetry.register(
            "frontend_snapshot_refreshes",
            "Snapshot refreshes from logic, by result",
            refreshes.clone(),
        );
        let c = |f: &Family<ResultLabel, Counter>, result| {
            f.get_or_create(&ResultLabel { result }).clone()
        };
        SnapshotMetrics {
            served_fresh: c(&served, "fresh"),
            served_stale: c(&served, "stale"),
            served_absent: c(&served, "absent"),
            refresh_ok: c(&refreshes, "ok"),
            refresh_error: c(&refreshes, "error"),
        }
    }
}

/// Every thread's snapshot and the machinery that refreshes them.
pub(crate) struct Snapshots {
    logic: Option<TierClient>,
    slots: Mutex<HashMap<String, Arc<ThreadSlot>>>,
    ttl: Duration,
    timeout: Duration,
    epoch: Instant,
    versions: AtomicU64,
    permits: Semaphore,
    pub metrics: SnapshotMetrics,
}

impl Snapshots {
    /// Snapshots read from `logic` (none when `None`), refreshed every `ttl`, each read given
    /// at most `timeout`.
    pub fn new(
        logic: Option<TierClient>,
        ttl: Duration,
        timeout: Duration,
        metrics: SnapshotMetrics,
    ) -> Snapshots {
        Snapshots {
            logic,
            slots: Mutex::new(HashMap::new()),
            ttl,
            timeout,
            epoch: Instant::now(),
            versions: AtomicU64::new(0),
            permits: Semaphore::new(4),
            metrics,
        }
    }

    /// The slot of `thread`, made on first use.
    pub fn slot(&self, thread: &str) -> Arc<ThreadSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(thread.to_owned())
            .or_insert_with(|| {
                Arc::new(ThreadSlot {
                    thread: thread.to_owned(),
                    current: ArcSwapOption::empty(),
                    refreshing: AtomicBool::new(false),
                    next_due_ms: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                })
            })
            .clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Starts a background refresh of `slot` when one is due. Never waits.
    pub fn touch(self: &Arc<Self>, slot: &Arc<ThreadSlot>) {
        if self.logic.is_none() || self.now_ms() < slot.next_due_ms.load(Ordering::Relaxed) {
            return;
        }
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move { this.refresh(&slot).await });
    }

    /// Refreshes `slot` now (waits for a free refresh permit first).
    pub async fn refresh(&self, slot: &ThreadSlot) {
        let Some(logic) = &self.logic else { return };
        let _permit = self.permits.acquire().await;
        let prev = slot.current.load_full();
        let fetched = tokio::time::timeout(self.timeout, fetch(logic, slot, prev.as_deref())).await;
        match fetched {
            Ok(Ok(update)) => {
                if let Some((head, closed, comments)) = update {
                    let html = render_comments(&slot.thread, &comments);
                    let changed = prev
                        .as_ref()
                        .is_none_or(|p| p.html != html || p.closed != closed || p.head != head);
                    if changed {
                        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
                        slot.current.store(Some(Arc::new(Snapshot {
                            version,
                            head,
                            closed,
                            comments,
                            html,
                            changed_at: SystemTime::now(),
                        })));
                    }
                }
                slot.failures.store(0, Ordering::Relaxed);
                slot.next_due_ms.store(
                    self.now_ms() + self.ttl.as_millis() as u64,
                    Ordering::Relaxed,
                );
                self.metrics.refresh_ok.inc();
            }
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                };
                let n = slot.failures.fetch_add(1, Ordering::Relaxed) + 1;
                // Twice the refresh interval, doubling with each failure in a row, up to 32
                // intervals or MAX_BACKOFF.
                let backoff = Backoff::after(
                    self.ttl.saturating_mul(2),
                    self.ttl.saturating_mul(32).min(MAX_BACKOFF),
                    n,
                );
                slot.next_due_ms.store(
                    self.now_ms() + backoff.as_millis() as u64,
                    Ordering::Relaxed,
                );
                self.metrics.refresh_error.inc();
                tracing::warn!(thread = %slot.thread, failures = n, %reason, "snapshot refresh failed; serving the last one");
            }
        }
        slot.refreshing.store(false, Ordering::Release);
    }

    /// Refreshes every slot in `slots`, a few at a time (used after a site load).
    pub async fn warm(self: &Arc<Self>, slots: Vec<Arc<ThreadSlot>>) {
        if self.logic.is_none() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for slot in slots {
            if slot.refreshing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move { this.refresh(&slot).await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

type Update = Option<(Seq, bool, BTreeMap<u64, Comment>)>;

/// Reads what changed in a thread since `prev`; `None` when nothing did.
async fn fetch(
    logic: &TierClient,
    slot: &ThreadSlot,
    prev: Option<&Snapshot>,
) -> Result<Update, ClientError> {
    let thread: String =
        percent_encoding::utf8_percent_encode(&slot.thread, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let (mut after, mut comments) = match prev {
        Some(p) => (p.head, p.comments.clone()),
        None => (0, BTreeMap::new()),
    };
    let mut restarted = false;
    let mut first = true;
    loop {
        let page: ThreadPage = logic
            .get(&format!(
                "/api/v1/comments?thread={thread}&after={after}&limit={PAGE_LIMIT}"
            ))
            .await?;
        if page.head < after && !restarted {
            // The thread went backwards (its store was replaced): start over.
            restarted = true;
            after = 0;
            comments.clear();
            continue;
        }
        if first
            && let Some(p) = prev
            && page.comments.is_empty()
            && page.head == p.head
            && page.closed == p.closed
        {
            return Ok(None);
        }
        first = false;
        let last = page.comments.last().map(|c| c.seq);
        for c in page.comments {
            comments.insert(c.id, c);
        }
        match last {
            Some(seq) if seq < page.head && seq > after => after = seq,
            _ => return Ok(Some((page.head, page.closed, comments))),
        }
    }
}

/// Renders the visible comments of a thread as nested lists. Held comments never appear;
/// deleted ones appear as tombstones only when a visible reply hangs below them. A thread
/// longer than [`SHOWN_COMMENTS`] shows its oldest ones, the count of all, and a link to the
/// rest.
fn render_comments(thread: &str, comments: &BTreeMap<u64, Comment>) -> String {
    let shown: BTreeMap<u64, &Comment> = comments
        .iter()
        .filter(|(_, c)| c.status != Status::Pending)
        .take(SHOWN_COMMENTS)
        .map(|(id, c)| (*id, c))
        .collect();
    let mut children: BTreeMap<Option<u64>, Vec<&Comment>> = BTreeMap::new();
    for c in shown.values() {
        let parent = c.parent.filter(|p| shown.contains_key(p));
        children.entry(parent).or_default().push(c);
    }
    let approved = comments
        .values()
        .filter(|c| c.status == Status::Approved)
        .count();
    let rest = comments
        .values()
        .filter(|c| c.status != Status::Pending)
        .count()
        - shown.len();
    let mut out = String::with_capacity(256 + shown.len() * 512);
    let _ = write!(
        out,
        "<h2 class=\"io360-count\" data-count=\"{approved}\">{}</h2><ol class=\"io360-list\">",
        count_label(approved)
    );
    if let Some(top) = children.get(&None) {
        for c in top {
            render_one(&mut out, c, &children);
        }
    }
    out.push_str("</ol>");
    if rest > 0 {
        let q = percent_encoding::utf8_percent_encode(thread, percent_encoding::NON_ALPHANUMERIC);
        let _ = write!(
            out,
            "<p class=\"io360-more\"><a href=\"/api/v1/comments?thread={q}\" data-rest=\"{rest}\">Show {rest} more {}</a></p>",
            if rest == 1 { "comment" } else { "comments" },
        );
    }
    out
}

fn count_label(n: usize) -> String {
    match n {
        0 => "No comments yet".to_owned(),
        1 => "1 comment".to_owned(),
        n => format!("{n} comments"),
    }
}

fn visible(c: &Comment, children: &BTreeMap<Option<u64>, Vec<&Comment>>) -> bool {
    match c.status {
        Status::Approved => true,
        Status::Pending => false,
        Status::Deleted => children
            .get(&Some(c.id))
            .is_some_and(|kids| kids.iter().any(|k| visible(k, children))),
    }
}

fn render_one(out: &mut String, c: &Comment, children: &BTreeMap<Option<u64>, Vec<&Comment>>) {
    if !visible(c, children) {
        return;
    }
    let deleted = c.status == Status::Deleted;
    let _ = write!(
        out,
        "<li class=\"io360-comment{}\" id=\"io360-c-{id}\" data-id=\"{id}\" data-seq=\"{seq}\" data-parent=\"{parent}\"><article class=\"io360-card\"><header class=\"io360-meta\">",
        if deleted { " io360-deleted" } else { "" },
        id = c.id,
        seq = c.seq,
        parent = c.parent.map(|p| p.to_string()).unwrap_or_default(),
    );
    if deleted {
        out.push_str("<span class=\"io360-author io360-anonymous\">deleted</span>");
    } else {
        let name = c.author.as_deref().filter(|a| !a.trim().is_empty());
        let class = if name.is_some() {
            "io360-author"
        } else {
            "io360-author io360-anonymous"
        };
        let name = escape(name.unwrap_or("Anonymous"));
        match c.website.as_deref().filter(|w| safe_url(w)) {
            Some(site) => {
                let _ = write!(
                    out,
                    "<a class=\"{class}\" href=\"{}\" rel=\"nofollow ugc noopener\">{name}</a>",
                    escape(site)
                );
            }
            None => {
                let _ = write!(out, "<span class=\"{class}\">{name}</span>");
            }
        }
    }
    let _ = write!(
        out,
        " <a class=\"io360-permalink\" href=\"#io360-c-{}\"><time datetime=\"{}\">{}</time></a></header>",
        c.id,
        escape(&c.created),
        escape(c.created.get(..10).unwrap_or(&c.created)),
    );
    if deleted {
        out.push_str("<div class=\"io360-body\"><p><em>This comment was deleted.</em></p></div>");
    } else {
        // Logic sanitized this HTML when the comment was written.
        let _ = write!(out, "<div class=\"io360-body\">{}</div>", c.html);
        let _ = write!(
            out,
            "<footer class=\"io360-actions\"><span class=\"io360-votes\" data-up=\"{up}\" data-down=\"{down}\">\u{25b2} {up} \u{25bc} {down}</span></footer>",
            up = c.votes.up,
            down = c.votes.down,
        );
    }
    out.push_str("</article>");
    if let Some(kids) = children.get(&Some(c.id))
        && kids.iter().any(|k| visible(k, children))
    {
        out.push_str("<ol class=\"io360-replies\">");
        for k in kids {
            render_one(out, k, children);
        }
        out.push_str("</ol>");
    }
    out.push_str("</li>");
}

/// The snapshot's wrapper and notes around its comments, as inserted into a page.
pub(crate) fn fragment(
    thread: &str,
    snapshot: Option<&Snapshot>,
    suspension: &SuspensionState,
) -> String {
    let mut out = String::with_capacity(snapshot.map(|s| s.html.len()).unwrap_or(0) + 512);
    let _ = write!(
        out,
        "<div class=\"io360-snapshot\" data-thread=\"{}\" data-suspended=\"{}\"",
        escape(thread),
        suspension.suspended
    );
    match snapshot {
        Some(s) => {
            let _ = write!(
                out,
                " data-state=\"ready\" data-head=\"{}\" data-closed=\"{}\">",
                s.head, s.closed
            );
        }
        None => out.push_str(" data-state=\"absent\">"),
    }
    if suspension.suspended {
        let _ = write!(
            out,
            "<p class=\"io360-paused\" role=\"status\">{}</p>",
            escape(suspension.note())
        );
    }
    if let Some(s) = snapshot {
        if s.closed {
            out.push_str("<p class=\"io360-closed\">Comments are closed.</p>");
        }
        out.push_str(&s.html);
    }
    out.push_str("</div>");
    out
}

/// Only web links become `href`s (no `javascript:`).
fn safe_url(u: &str) -> bool {
    let l = u.trim_start().to_ascii_lowercase();
    l.starts_with("https://") || l.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use io360_common::model::Votes;

    fn comment(id: u64, parent: Option<u64>, status: Status, author: &str) -> Comment {
        Comment {
            id,
            thread: "/t".into(),
            seq: id,
            parent,
            author: Some(author.into()),
            website: None,
            text: "x".into(),
            html: format!("<p>body {id}</p>"),
            created: "2026-01-02T03:04:05Z".into(),
            modified: None,
            status,
            votes: Votes { up: 2, down: 1 },
        }
    }

    #[test]
    fn renders_a_tree_escaping_authors() {
        let mut m = BTreeMap::new();
        m.insert(1, comment(1, None, Status::Approved, "<b>ann</b>"));
        m.insert(2, comment(2, Some(1), Status::Approved, "bob"));
        m.insert(3, comment(3, None, Status::Pending, "held"));
        let html = render_comments("/t", &m);
        assert!(html.contains("2 comments"));
        assert!(html.contains("&lt;b&gt;ann&lt;/b&gt;"));
        assert!(!html.contains("<b>ann"));
        assert!(!html.contains("held"));
        let outer = html.find("io360-c-1").unwrap();
        let replies = html.find("io360-replies").unwrap();
        let inner = html.find("io360-c-2").unwrap();
        assert!(outer < replies && replies < inner);
    }

    #[test]
    fn tombstones_only_above_visible_replies() {
        let mut m = BTreeMap::new();
        m.insert(1, comment(1, None, Status::Deleted, "a"));
        m.insert(2, comment(2, None, Status::Deleted, "b"));
        m.insert(3, comment(3, Some(1), Status::Approved, "c"));
        let html = render_comments("/t", &m);
        assert!(html.contains("io360-c-1"));
        assert!(!html.contains("io360-c-2"));
        assert!(html.contains("This comment was deleted"));
    }

    #[test]
    fn websites_must_be_web_links() {
        let mut m = BTreeMap::new();
        let mut c = comment(1, None, Status::Approved, "a");
        c.website = Some("javascript:alert(1)".into());
        m.insert(1, c);
        assert!(!render_comments("/t", &m).contains("javascript:"));
    }

    #[test]
    fn a_long_thread_shows_its_first_comments_its_count_and_a_link_to_the_rest() {
        let mut m = BTreeMap::new();
        for id in 1..=50_000 {
            m.insert(id, comment(id, None, Status::Approved, "a"));
        }
        let html = render_comments("/posts/a b", &m);
        assert!(html.contains("50000 comments"));
        assert!(html.contains("data-count=\"50000\""));
        assert_eq!(html.matches("<li ").count(), SHOWN_COMMENTS);
        assert!(html.contains("io360-c-1\""));
        assert!(!html.contains(&format!("io360-c-{}\"", SHOWN_COMMENTS + 1)));
        assert!(html.contains("href=\"/api/v1/comments?thread=%2Fposts%2Fa%20b\""));
        assert!(html.contains("data-rest=\"49800\""));
        assert!(html.len() < 200_000, "{} bytes", html.len());
        let short = render_comments("/t", &m.into_iter().take(3).collect());
        assert!(!short.contains("io360-more"));
    }

    #[test]
    fn fragment_says_paused() {
        let s = SuspensionState {
            suspended: true,
            message: Some("Back soon".into()),
            ..Default::default()
        };
        let f = fragment("/t", None, &s);
        assert!(f.contains("data-suspended=\"true\""));
        assert!(f.contains("Back soon"));
        assert!(f.contains("data-state=\"absent\""));
    }
}
