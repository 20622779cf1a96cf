//! Reading other comment systems' exports as one stream of threads and comments.
//!
//! A site moving to io360 brings years of comments from Isso, Disqus, WordPress, Remark42 or
//! Commento. Each format has a reader here that turns its export into [`Record`]s: a
//! [`Thread`] before any of its comments, then [`Comment`]s that keep the source's ids (so a
//! link like `#isso-12` or `#comment-34` can still be resolved), their nesting, authors, times,
//! votes and states. Readers stream: memory stays bounded by the largest single record, not
//! the file (Commento's export, one JSON document, is the exception and says so).
//!
//! Bad input stops the stream with an [`ImportError`] that names the place (line, or record)
//! and what was wrong, and how many records were read before it, so a fixed file can be
//! imported again: writing is idempotent on the source's ids.

use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

mod commento;
mod disqus;
pub mod generate;
pub mod io360;
mod isso;
pub mod load;
mod remark42;
mod text;
mod wordpress;
mod xml;

/// The formats io360 imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Isso's SQLite database (`comments.db`).
    Isso,
    /// Disqus's XML export.
    Disqus,
    /// WordPress's WXR export (Tools → Export).
    Wordpress,
    /// Remark42's backup (`remark42 backup`, one JSON document per line).
    Remark42,
    /// Commento's JSON export.
    Commento,
    /// io360's own export (`io360 export`), versioned NDJSON.
    Io360,
}

impl Format {
    /// Every format, as spelled on the command line.
    pub const ALL: [Format; 6] = [
        Format::Isso,
        Format::Disqus,
        Format::Wordpress,
        Format::Remark42,
        Format::Commento,
        Format::Io360,
    ];

    /// The name used on the command line and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Format::Isso => "isso",
            Format::Disqus => "disqus",
            Format::Wordpress => "wordpress",
            Format::Remark42 => "remark42",
            Format::Commento => "commento",
            Format::Io360 => "io360",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "{s:?} is not a format io360 imports; it imports {}",
                    names.join(", ")
                )
            })
    }
}

/// A page's comment thread as the source knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// The source's id for the thread (Disqus's `dsq:id`, WordPress's post id, Isso's thread
    /// id, or the page URL where the source has no id).
    pub source_id: String,
    /// The page's URL or path, as the source stored it.
    pub url: String,
    /// The page's title, if the source kept one.
    pub title: Option<String>,
    /// Whether the source closed the thread to new comments.
    pub closed: bool,
}

impl Thread {
    /// The io360 thread name for this page: the URL's path (`https://example.org/a/?x=1#c`
    /// is `/a/`), as io360's widget names a page by default.
    pub fn name(&self) -> String {
        text::url_path(&self.url)
    }
}

/// What a comment's text is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Markdown (or plain text), which io360 renders as it renders a posted comment.
    Markdown(String),
    /// HTML, which io360 sanitizes as it sanitizes its own rendering.
    Html(String),
    /// Already rendered by io360 (its own export): the text is kept, the HTML sanitized again.
    Rendered {
        /// The source text.
        text: String,
        /// The HTML io360 rendered from it.
        html: String,
    },
}

/// Where a comment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Published.
    Approved,
    /// Waiting for a moderator.
    Pending,
    /// Deleted (its place in the thread is kept, as io360 keeps a deleted comment's).
    Deleted,
    /// Marked as spam by the source: imported as pending, for a moderator to decide.
    Spam,
}

/// One comment as the source knew it.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// The source's id for the comment.
    pub source_id: String,
    /// The source id of its thread.
    pub thread: String,
    /// The source id of the comment it replies to, if any.
    pub parent: Option<String>,
    /// The author's name (`None`: anonymous).
    pub author: Option<String>,
    /// The author's email, if the source kept it in the clear.
    pub email: Option<String>,
    /// The author's website.
    pub website: Option<String>,
    /// The client address, as the source kept it (some sources keep only a hash).
    pub remote: Option<String>,
    /// The text.
    pub body: Body,
    /// When it was posted.
    pub created: OffsetDateTime,
    /// When it was last edited, if the source knows.
    pub modified: Option<OffsetDateTime>,
    /// Published, pending, deleted or spam.
    pub state: State,
    /// Upvotes (likes) the source counted.
    pub likes: u32,
    /// Downvotes the source counted.
    pub dislikes: u32,
}

/// One thing read from an export.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A thread; it comes before its comments.
    Thread(Thread),
    /// A comment.
    Comment(Comment),
}

/// Why an import stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} import stopped at {at}: {message} ({read} records read before it)")]
pub struct ImportError {
    /// The format being read.
    pub format: Format,
    /// Where: `line 120`, `record 7`, `comment 34`.
    pub at: String,
    /// What was wrong, in a sentence.
    pub message: String,
    /// Records read before the error.
    pub read: u64,
}

/// Counts one step of a streaming reader: a record, the end, or the error at `at` (after
/// which the stream is done).
fn advance(
    format: Format,
    done: &mut bool,
    read: &mut u64,
    step: Result<Option<Record>, String>,
    at: impl FnOnce() -> String,
) -> Option<Result<Record, ImportError>> {
    match step {
        Ok(Some(r)) => {
            *read += 1;
            Some(Ok(r))
        }
        Ok(None) => {
            *done = true;
            None
        }
        Err(message) => {
            *done = true;
            Some(Err(ImportError {
                format,
                at: at(),
                message,
                read: *read,
            }))
        }
    }
}

/// A stream of records, ending at the first error.
pub type Records = Box<dyn Iterator<Item = Result<Record, ImportError>> + Send>;

/// Reads a streamable export (every format but Isso, which is a database file: see
/// [`read_path`]).
pub fn read(format: Format, input: Box<dyn BufRead + Send>) -> Records {
    match format {
        Format::Disqus => Box::new(disqus::Reader::new(input)),
        Format::Wordpress => Box::new(wordpress::Reader::new(input)),
        Format::Remark42 => Box::new(remark42::Reader::new(input)),
        Format::Commento => commento::read(input),
        Format::Io360 => Box::new(io360::Reader::new(input)),
        Format::Isso => Box::new(std::iter::once(Err(ImportError {
            format,
            at: "the start".into(),
            message: "an Isso export is its SQLite database file: read it by path".into(),
            read: 0,
        }))),
    }
}

/// Reads an export from a file, checking first that the file looks like the format named (a
/// Disqus file named as WordPress is refused with a sentence saying what it looks like).
pub fn read_path(format: Format, path: &Path) -> Result<Records, ImportError> {
    read_path_counting(format, path, Arc::default())
}

/// A reader that adds what it reads to a shared count (for progress reports).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// As [`read_path`], adding the bytes read to `count` as the stream is read (Isso's
/// database, read by SQLite, counts nothing).
pub fn read_path_counting(
    format: Format,
    path: &Path,
    count: Arc<AtomicU64>,
) -> Result<Records, ImportError> {
    let fail = |message: String| ImportError {
        format,
        at: "the start".into(),
        message,
        read: 0,
    };
    let mut head = vec![0u8; HEAD_BYTES];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .map_err(|e| fail(format!("{} cannot be opened: {e}", path.display())))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(fail(format!("{} cannot be read: {e}", path.display()))),
            }
        }
        n
    };
    head.truncate(n);
    check_head(format, &head).map_err(|m| fail(format!("{} {m}", path.display())))?;
    if format == Format::Isso {
        return isso::read(path);
    }
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("{} cannot be opened: {e}", path.display())))?;
    let file = Counting { inner: file, count };
    Ok(read(
        format,
        Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
    ))
}

/// Checks that an export's first bytes (up to [`HEAD_BYTES`]) look like `format`; if not,
/// answers why, as the end of a sentence whose subject is the file ("looks like a disqus
/// export, not wordpress; name the format it is").
pub fn check_head(format: Format, head: &[u8]) -> Result<(), String> {
    match sniff(head) {
        Some(found) if found != format => Err(format!(
            "looks like a {found} export, not {format}; name the format it is"
        )),
        None if head.is_empty() => Err("is empty".into()),
        None => Err(format!(
            "is not a {format} export (nor any format io360 knows)"
        )),
        Some(_) => Ok(()),
    }
}

/// How many of an export's first bytes [`check_head`] wants to see.
pub const HEAD_BYTES: usize = 4096;

/// Which format a file's first bytes look like.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"SQLite format 3\0") {
        return Some(Format::Isso);
    }
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('<') {
        if t.contains("<disqus") {
            return Some(Format::Disqus);
        }
        if t.contains("wordpress.org/export") || t.contains("<wp:") {
            return Some(Format::Wordpress);
        }
        return None;
    }
    if t.starts_with('{') {
        let first = t.lines().next().unwrap_or("");
        if first.contains(io360::FORMAT_NAME) {
            return Some(Format::Io360);
        }
        if first.contains("\"commentHex\"") || t.contains("\"commenters\"") {
            return Some(Format::Commento);
        }
        if first.contains("\"locator\"")
            || first.contains("\"users\"")
            || first.contains("\"posts\"")
        {
            return Some(Format::Remark42);
        }
        if t.contains("\"comments\"") && t.contains("\"version\"") {
            return Some(Format::Commento);
        }
    }
    None
}
