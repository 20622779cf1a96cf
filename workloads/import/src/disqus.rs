//! Disqus's XML export: `<thread dsq:id>` elements (link, title, closed), then `<post dsq:id>`
//! elements (HTML message in CDATA, author, time, deleted and spam flags, the thread and the
//! parent they belong to). Read one element at a time.

use std::collections::HashSet;
use std::io::BufRead;

use crate::text::{non_empty, rfc3339};
use crate::xml::{Element, Stream};
use crate::{Body, Comment, Format, ImportError, Record, State, Thread};

/// The Disqus reader.
pub struct Reader {
    stream: Stream<Box<dyn BufRead + Send>>,
    read: u64,
    threads: HashSet<String>,
    done: bool,
}

impl Reader {
    /// Reads `input`.
    pub fn new(input: Box<dyn BufRead + Send>) -> Self {
        Reader {
            stream: Stream::new(input),
            read: 0,
            threads: HashSet::new(),
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Record>, String> {
        loop {
            let Some(start) = self.stream.next_start()? else {
                if self.read == 0 {
                    return Err("the file has no <disqus> threads or posts".into());
                }
                return Ok(None);
            };
            if start.depth == 0 {
                if start.element.name != "disqus" {
                    return Err(format!(
                        "the document is <{}>, not a Disqus export's <disqus>",
                        start.element.name
                    ));
                }
                continue;
            }
            if start.depth != 1 {
                continue;
            }
            let name = start.element.name.clone();
            let e = self.stream.collect(start)?;
            match name.as_str() {
                "thread" => return self.thread(&e).map(Some),
                "post" => return self.post(&e).map(Some),
                // Categories and anything newer Disqus adds: nothing io360 keeps.
                _ => {}
            }
        }
    }

    fn thread(&mut self, e: &Element) -> Result<Record, String> {
        let id = e
            .attr("id")
            .and_then(non_empty)
            .ok_or("a <thread> has no dsq:id")?;
        let link = e.text_of("link");
        if link.is_empty() {
            return Err(format!("thread {id} has no <link>"));
        }
        self.threads.insert(id.clone());
        Ok(Record::Thread(Thread {
            url: link.to_owned(),
            title: non_empty(e.text_of("title")),
            closed: e.text_of("isClosed") == "true",
            source_id: id,
        }))
    }

    fn post(&mut self, e: &Element) -> Result<Record, String> {
        let id = e
            .attr("id")
            .and_then(non_empty)
            .ok_or("a <post> has no dsq:id")?;
        let thread = e
            .child("thread")
            .and_then(|t| t.attr("id"))
            .and_then(non_empty)
            .ok_or_else(|| format!("post {id} names no thread"))?;
        if !self.threads.contains(&thread) {
            return Err(format!(
                "post {id} belongs to thread {thread}, which the file does not have (before it)"
            ));
        }
        let created = rfc3339(e.text_of("createdAt")).map_err(|m| format!("post {id}: {m}"))?;
        let flag = |n: &str| e.text_of(n) == "true";
        let state = if flag("isDeleted") {
            State::Deleted
        } else if flag("isSpam") {
            State::Spam
        } else if e.child("isApproved").is_some() && !flag("isApproved") {
            State::Pending
        } else {
            State::Approved
        };
        let author = e.child("author");
        let anonymous = author.is_some_and(|a| a.text_of("isAnonymous") == "true");
        let text_of = |n: &str| author.map_or("", |a| a.text_of(n));
        let name = non_empty(text_of("name")).or_else(|| non_empty(text_of("username")));
        Ok(Record::Comment(Comment {
            source_id: id,
            thread,
            parent: e
                .child("parent")
                .and_then(|p| p.attr("id"))
                .and_then(non_empty),
            author: name,
            email: if anonymous {
                None
            } else {
                non_empty(text_of("email"))
            },
            website: non_empty(text_of("link")),
            remote: non_empty(e.text_of("ipAddress")),
            body: Body::Html(e.text_of("message").to_owned()),
            created,
            modified: None,
            state,
            likes: 0,
            dislikes: 0,
        }))
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.step();
        let line = self.stream.line();
        crate::advance(Format::Disqus, &mut self.done, &mut self.read, step, || {
            format!("line {line}")
        })
    }
}
