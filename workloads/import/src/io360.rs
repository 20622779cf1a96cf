//! io360's own export: a versioned NDJSON file that holds everything a data directory knows
//! of its comments, and reads back with `--from io360` with nothing lost.
//!
//! ```text
//! {"format":"io360-export","version":1}
//! {"type":"thread","thread":"/a/","closed":false,"title":"A page"}
//! {"type":"comment","source":"disqus:12","parentSource":null,"id":3,"thread":"/a/",...}
//! ```
//!
//! The first line names the format and its version; a reader refuses a newer version. Every
//! thread comes before the comments; a comment's `source` is the id it was imported under
//! (`disqus:12`), or `io360:<id>` for a comment posted on this site, and `parentSource` is its
//! parent's. Importing keys on `source`, so an export imported twice, or into the site it came
//! from, adds nothing. `id`, `parent` and `seq` are this directory's own numbers: an import
//! gives new ones. A thread's `title` (its page's title) is optional: exports written before
//! titles were kept have none, and read as they always did.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::text::rfc3339;
use crate::{Body, Comment, Format, ImportError, Record, State, Thread};

/// The name on an export's first line.
pub const FORMAT_NAME: &str = "io360-export";

/// The version this io360 writes and the newest it reads.
pub const VERSION: u64 = 1;

/// An export's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format's version.
    pub version: u64,
}

impl Header {
    /// The header this version writes.
    pub fn current() -> Header {
        Header {
            format: FORMAT_NAME.to_owned(),
            version: VERSION,
        }
    }
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// A thread.
    Thread(ThreadLine),
    /// A comment.
    Comment(Box<CommentLine>),
}

/// A thread's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadLine {
    /// Its name.
    pub thread: String,
    /// Closed to new comments.
    pub closed: bool,
    /// Its page's title, if one is kept (absent from older exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl From<io360_store::api::ExportedThread> for ThreadLine {
    fn from(t: io360_store::api::ExportedThread) -> Self {
        ThreadLine {
            thread: t.thread,
            closed: t.closed,
            title: t.title,
        }
    }
}

/// A comment's line: everything the store keeps of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentLine {
    /// The id it was imported under, or `io360:<id>`.
    pub source: String,
    /// Its parent's `source`.
    pub parent_source: Option<String>,
    /// This directory's id (a new one on import).
    pub id: u64,
    /// This directory's id of its parent.
    pub parent: Option<u64>,
    /// The sequence number of its last change in this directory.
    pub seq: u64,
    /// The thread.
    pub thread: String,
    /// Display name.
    pub author: Option<String>,
    /// Email (personal data: keep exports private).
    pub email: Option<String>,
    /// Website.
    pub website: Option<String>,
    /// The truncated client address (personal data).
    pub remote: Option<String>,
    /// The source text (Markdown, or the source's HTML for imported HTML).
    pub text: String,
    /// The sanitized HTML shown.
    pub html: String,
    /// Posted, RFC 3339.
    pub created: String,
    /// Last edited, RFC 3339.
    pub modified: Option<String>,
    /// `approved`, `pending` or `deleted`.
    pub status: io360_common::model::Status,
    /// Votes.
    pub votes: io360_common::model::Votes,
}

/// Writes one line of JSON.
pub fn write_line<T: Serialize>(out: &mut impl Write, line: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// The reader of an io360 export.
pub struct Reader {
    input: Box<dyn BufRead + Send>,
    line: u64,
    read: u64,
    buf: String,
    done: bool,
}

impl Reader {
    /// Reads from `input`.
    pub fn new(input: Box<dyn BufRead + Send>) -> Reader {
        Reader {
            input,
            line: 0,
            read: 0,
            buf: String::new(),
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Record>, String> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_line(&mut self.buf)
                .map_err(|e| format!("cannot be read: {e}"))?;
            if n == 0 {
                if self.line == 0 {
                    return Err("the file is empty".into());
                }
                return Ok(None);
            }
            self.line += 1;
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            if self.line == 1 {
                let h: Header = serde_json::from_str(text)
                    .map_err(|e| format!("the first line is not an io360 export header ({e})"))?;
                if h.format != FORMAT_NAME {
                    return Err(format!(
                        "the header names format {:?}, not {FORMAT_NAME:?}",
                        h.format
                    ));
                }
                if h.version > VERSION {
                    return Err(format!(
                        "the export is version {}, written by a newer io360; this one reads versions up to {VERSION}",
                        h.version
                    ));
                }
                continue;
            }
            let line: Line =
                serde_json::from_str(text).map_err(|e| format!("not an export line ({e})"))?;
            return match line {
                Line::Thread(t) => Ok(Some(Record::Thread(Thread {
                    source_id: t.thread.clone(),
                    url: t.thread,
                    title: t.title,
                    closed: t.closed,
                }))),
                Line::Comment(c) => Ok(Some(Record::Comment(comment(*c)?))),
            };
        }
    }
}

fn comment(c: CommentLine) -> Result<Comment, String> {
    use io360_common::model::Status;
    Ok(Comment {
        created: rfc3339(&c.created)?,
        modified: c.modified.as_deref().map(rfc3339).transpose()?,
        source_id: c.source,
        thread: c.thread,
        parent: c.parent_source,
        author: c.author,
        email: c.email,
        website: c.website,
        remote: c.remote,
        body: Body::Rendered {
            text: c.text,
            html: c.html,
        },
        state: match c.status {
            Status::Approved => State::Approved,
            Status::Pending => State::Pending,
            Status::Deleted => State::Deleted,
        },
        likes: c.votes.up,
        dislikes: c.votes.down,
    })
}

impl Iterator for Reader {
    type Item = Result<Record, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.step();
        let line = self.line;
        crate::advance(Format::Io360, &mut self.done, &mut self.read, step, || {
            format!("line {line}")
        })
    }
}

impl From<io360_store::api::ExportedComment> for CommentLine {
    fn from(e: io360_store::api::ExportedComment) -> Self {
        let c = e.stored.comment;
        CommentLine {
            source: e.source.unwrap_or_else(|| format!("io360:{}", c.id)),
            parent_source: c
                .parent
                .map(|p| e.parent_source.unwrap_or_else(|| format!("io360:{p}"))),
            id: c.id,
            parent: c.parent,
            seq: c.seq,
            thread: c.thread,
            author: c.author,
            email: e.stored.email,
            website: c.website,
            remote: e.stored.remote,
            text: c.text,
            html: c.html,
            created: c.created,
            modified: c.modified,
            status: c.status,
            votes: c.votes,
        }
    }
}

/// Writes an export of everything in `db` to `out`: the header, every thread, then every
/// comment, one snapshot, a line at a time. Blocking: run it off the async workers.
pub fn export(db: &io360_store::Db, out: &mut impl Write) -> Result<(), io360_store::StoreError> {
    let io = |e: std::io::Error| {
        io360_store::StoreError::Internal(format!("writing the export failed: {e}"))
    };
    write_line(out, &Header::current()).map_err(io)?;
    db.export_blocking(|item| {
        let line = match item {
            io360_store::api::ExportItem::Thread(t) => Line::Thread(t.into()),
            io360_store::api::ExportItem::Comment(c) => Line::Comment(Box::new((*c).into())),
        };
        write_line(out, &line).map_err(io)
    })?;
    out.flush().map_err(io)
}
