//! Remark42's backup (`remark42 backup`): a first line describing the site, then one JSON
//! comment per line, each naming its page (`locator.url`) and title. Read a line at a time;
//! a page's thread is emitted before its first comment.

use std::collections::HashSet;
use std::io::BufRead;

use serde::Deserialize;

use crate::text::{non_empty, rfc3339};
use crate::{Body, Comment, Format, ImportError, Record, State, Thread};

#[derive(Deserialize)]
struct Line {
    id: Option<String>,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    orig: String,
    #[serde(default)]
    user: User,
    locator: Option<Locator>,
    #[serde(default)]
    votes: std::collections::BTreeMap<String, bool>,
    time: Option<String>,
    edit: Option<Edit>,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    title: String,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Locator {
    url: String,
}

#[derive(Deserialize)]
struct Edit {
    time: Option<String>,
}

/// The Remark42 reader.
pub struct Reader {
    input: Box<dyn BufRead + Send>,
    line: u64,
    read: u64,
    threads: HashSet<String>,
    pending: Option<Record>,
    done: bool,
}

impl Reader {
    /// Reads `input`.
    pub fn new(input: Box<dyn BufRead + Send>) -> Self {
        Reader {
            input,
            line: 0,
            read: 0,
            threads: HashSet::new(),
            pending: None,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Record>, String> {
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = self
                .input
                .read_line(&mut buf)
                .map_err(|e| format!("the file cannot be read ({e})"))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !buf.ends_with('\n') && serde_json::from_str::<serde_json::Value>(&buf).is_err() {
                return Err("the last line is cut short: the file is truncated".into());
            }
            let text = buf.trim();
            if text.is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("not a JSON document ({e})"))?;
            if self.line == 1 && v.get("locator").is_none() {
                // The site's description: its users and posts, which the comments repeat.
                if v.get("version").is_none() {
                    return Err("the first line is neither a backup header nor a comment".into());
                }
                continue;
            }
            let c: Line =
                serde_json::from_value(v).map_err(|e| format!("not a Remark42 comment ({e})"))?;
            return self.comment(c).map(Some);
        }
    }

    fn comment(&mut self, c: Line) -> Result<Record, String> {
        let id =
            c.id.as_deref()
                .and_then(non_empty)
                .ok_or("a comment has no id")?;
        let url = c
            .locator
            .map(|l| l.url)
            .and_then(|u| non_empty(&u))
            .ok_or_else(|| format!("comment {id} has no locator.url"))?;
        let created =
            rfc3339(c.time.as_deref().unwrap_or("")).map_err(|m| format!("comment {id}: {m}"))?;
        let modified = match c.edit.and_then(|e| e.time) {
            Some(t) => Some(rfc3339(&t).map_err(|m| format!("comment {id}: {m}"))?),
            None => None,
        };
        let likes = c.votes.values().filter(|&&up| up).count() as u32;
        let dislikes = c.votes.len() as u32 - likes;
        let comment = Record::Comment(Comment {
            source_id: id,
            thread: url.clone(),
            parent: non_empty(&c.pid),
            author: non_empty(&c.user.name),
            // Remark42 keeps no email with a comment and only a hash of the address.
            email: None,
            website: None,
            remote: None,
            body: match non_empty(&c.orig) {
                Some(md) => Body::Markdown(md),
                None => Body::Html(c.text),
            },
            created,
            modified,
            state: if c.delete {
                State::Deleted
            } else {
                State::Approved
            },
            likes,
            dislikes,
        });
        if self.threads.insert(url.clone()) {
            self.pending = Some(comment);
            return Ok(Record::Thread(Thread {
                source_id: url.clone(),
                url,
                title: non_empty(&c.title),
                closed: false,
            }));
        }
        Ok(comment)
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(c) = self.pending.take() {
            self.read += 1;
            return Some(Ok(c));
        }
        let step = match self.step() {
            Ok(None) if self.read == 0 => Err("the file has no comments".to_owned()),
            other => other,
        };
        let line = self.line;
        crate::advance(
            Format::Remark42,
            &mut self.done,
            &mut self.read,
            step,
            || format!("line {line}"),
        )
    }
}
