//! Isso's SQLite database: `threads` (id, uri, title) and `comments` (thread, id, parent,
//! times as Unix seconds, mode 1 published / 2 waiting / 4 deleted, address, Markdown text,
//! author, email, website, likes, dislikes). Opened read-only; comments are read a thread at
//! a time.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::text::{non_empty, unix_seconds};
use crate::{Body, Comment, Format, ImportError, Record, Records, State, Thread};

fn fail(at: String, message: String, read: u64) -> ImportError {
    ImportError {
        format: Format::Isso,
        at,
        message,
        read,
    }
}

/// Opens Isso's database at `path`.
pub fn read(path: &Path) -> Result<Records, ImportError> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
        fail(
            "the start".into(),
            format!("not an SQLite database ({e})"),
            0,
        )
    })?;
    let threads = (|| -> rusqlite::Result<Vec<(i64, String, Option<String>)>> {
        let mut q = db.prepare("SELECT id, uri, title FROM threads ORDER BY id")?;
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })()
    .map_err(|e| {
        fail(
            "the threads table".into(),
            format!("not an Isso database ({e})"),
            0,
        )
    })?;
    Ok(Box::new(Reader {
        db: std::sync::Mutex::new(db),
        threads: threads.into_iter(),
        queue: Vec::new().into_iter(),
        read: 0,
        done: false,
    }))
}

struct Reader {
    db: std::sync::Mutex<Connection>,
    threads: std::vec::IntoIter<(i64, String, Option<String>)>,
    queue: std::vec::IntoIter<Result<Record, ImportError>>,
    read: u64,
    done: bool,
}

impl Reader {
    /// A thread and its comments, in id order.
    fn load(
        &self,
        tid: i64,
        uri: String,
        title: Option<String>,
    ) -> Vec<Result<Record, ImportError>> {
        let mut out = vec![Ok(Record::Thread(Thread {
            source_id: tid.to_string(),
            url: uri,
            title: title.and_then(|t| non_empty(&t)),
            closed: false,
        }))];
        let db = match self.db.lock() {
            Ok(db) => db,
            Err(p) => p.into_inner(),
        };
        let rows = (|| -> rusqlite::Result<Vec<Row>> {
            let mut q = db.prepare(
                "SELECT id, parent, created, modified, mode, remote_addr, text, author, email, \
                 website, likes, dislikes FROM comments WHERE tid = ?1 ORDER BY id",
            )?;
            q.query_map([tid], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    parent: r.get(1)?,
                    created: r.get(2)?,
                    modified: r.get(3)?,
                    mode: r.get(4)?,
                    remote: r.get(5)?,
                    text: r.get(6)?,
                    author: r.get(7)?,
                    email: r.get(8)?,
                    website: r.get(9)?,
                    likes: r.get(10)?,
                    dislikes: r.get(11)?,
                })
            })?
            .collect()
        })();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                out.push(Err(fail(
                    format!("the comments of thread {tid}"),
                    format!("not an Isso comments table ({e})"),
                    self.read,
                )));
                return out;
            }
        };
        for row in rows {
            match row.comment(tid) {
                Ok(c) => out.push(Ok(Record::Comment(c))),
                Err(m) => {
                    let read = self.read + out.len() as u64;
                    out.push(Err(fail(format!("comment {}", row.id), m, read)));
                    break;
                }
            }
        }
        out
    }
}

struct Row {
    id: i64,
    parent: Option<i64>,
    created: f64,
    modified: Option<f64>,
    mode: i64,
    remote: Option<String>,
    text: Option<String>,
    author: Option<String>,
    email: Option<String>,
    website: Option<String>,
    likes: Option<i64>,
    dislikes: Option<i64>,
}

impl Row {
    fn comment(&self, tid: i64) -> Result<Comment, String> {
        let state = match self.mode {
            1 => State::Approved,
            2 => State::Pending,
            4 => State::Deleted,
            m => {
                return Err(format!(
                    "mode {m} is not 1 (published), 2 (waiting) or 4 (deleted)"
                ));
            }
        };
        let opt = |s: &Option<String>| s.as_deref().and_then(non_empty);
        Ok(Comment {
            source_id: self.id.to_string(),
            thread: tid.to_string(),
            parent: self.parent.map(|p| p.to_string()),
            author: opt(&self.author),
            email: opt(&self.email),
            website: opt(&self.website),
            remote: opt(&self.remote),
            body: Body::Markdown(self.text.clone().unwrap_or_default()),
            created: unix_seconds(self.created)?,
            modified: self.modified.map(unix_seconds).transpose()?,
            state,
            likes: self.likes.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            dislikes: self.dislikes.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
        })
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(r) = self.queue.next() {
                match &r {
                    Ok(_) => self.read += 1,
                    Err(_) => self.done = true,
                }
                return Some(r);
            }
            let (tid, uri, title) = self.threads.next()?;
            self.queue = self.load(tid, uri, title).into_iter();
        }
    }
}
