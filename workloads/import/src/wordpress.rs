//! WordPress's WXR export (RSS with the `wp:` namespace): each `<item>` is a post or page with
//! its link, title and id, and its `<wp:comment>` elements (author, email, URL, address, GMT
//! time, HTML content, approval, parent). Pingbacks and trackbacks are not comments and are
//! left out. Read one comment at a time.

use std::io::BufRead;

use crate::text::{naive_utc, non_empty};
use crate::xml::{Element, Stream};
use crate::{Body, Comment, Format, ImportError, Record, State, Thread};

/// The WordPress reader.
pub struct Reader {
    stream: Stream<Box<dyn BufRead + Send>>,
    read: u64,
    item: Option<Item>,
    /// A comment read while its thread went out first.
    pending: Option<Record>,
    done: bool,
    seen_root: bool,
}

/// The post being read: its thread, emitted before its first comment.
#[derive(Default)]
struct Item {
    id: String,
    link: String,
    title: Option<String>,
    closed: bool,
    emitted: bool,
    depth: usize,
}

impl Reader {
    /// Reads `input`.
    pub fn new(input: Box<dyn BufRead + Send>) -> Self {
        Reader {
            stream: Stream::new(input),
            read: 0,
            item: None,
            pending: None,
            done: false,
            seen_root: false,
        }
    }

    fn step(&mut self) -> Result<Option<Record>, String> {
        loop {
            let Some(start) = self.stream.next_start()? else {
                if !self.seen_root {
                    return Err("the file has no <rss> document".into());
                }
                return Ok(None);
            };
            // An element at the item's depth or above means the item ended.
            if self.item.as_ref().is_some_and(|i| start.depth <= i.depth) {
                self.item = None;
            }
            if start.depth == 0 {
                if start.element.name != "rss" {
                    return Err(format!(
                        "the document is <{}>, not a WordPress export's <rss>",
                        start.element.name
                    ));
                }
                self.seen_root = true;
                continue;
            }
            if start.element.name == "item" && self.item.is_none() && !start.empty {
                self.item = Some(Item {
                    depth: start.depth,
                    ..Item::default()
                });
                continue;
            }
            let Some(item) = self.item.as_mut() else {
                continue;
            };
            if start.depth != item.depth + 1 {
                continue;
            }
            let e = self.stream.collect(start)?;
            match e.name.as_str() {
                "link" => item.link = e.text.trim().to_owned(),
                "title" => item.title = non_empty(&e.text),
                "post_id" => item.id = e.text.trim().to_owned(),
                "comment_status" => item.closed = e.text.trim() == "closed",
                "comment" => {
                    if let Some(r) = self.comment(&e)? {
                        return Ok(Some(r));
                    }
                }
                _ => {}
            }
        }
    }

    /// The item's thread first (once), then the comment; `None` for a pingback.
    fn comment(&mut self, e: &Element) -> Result<Option<Record>, String> {
        let kind = e.text_of("comment_type");
        if kind == "pingback" || kind == "trackback" {
            return Ok(None);
        }
        let Some(item) = self.item.as_mut() else {
            return Ok(None);
        };
        let id = non_empty(e.text_of("comment_id")).ok_or("a <wp:comment> has no comment_id")?;
        if item.id.is_empty() || item.link.is_empty() {
            return Err(format!(
                "comment {id} comes before its post's <wp:post_id> and <link>"
            ));
        }
        let comment = parse_comment(e, &id, &item.id)?;
        if !item.emitted {
            item.emitted = true;
            // The comment is read again next time: the thread goes first.
            self.pending = Some(comment);
            return Ok(Some(Record::Thread(Thread {
                source_id: item.id.clone(),
                url: item.link.clone(),
                title: item.title.clone(),
                closed: item.closed,
            })));
        }
        Ok(Some(comment))
    }
}

fn parse_comment(e: &Element, id: &str, thread: &str) -> Result<Record, String> {
    // WordPress writes the GMT time apart; an all-zero one (drafts, some importers) falls
    // back to the local time, read as UTC.
    let gmt = e.text_of("comment_date_gmt");
    let created = match naive_utc(gmt) {
        Ok(t) => t,
        Err(_) => naive_utc(e.text_of("comment_date")).map_err(|m| format!("comment {id}: {m}"))?,
    };
    let state = match e.text_of("comment_approved") {
        "1" | "approve" | "approved" => State::Approved,
        "0" | "hold" | "" => State::Pending,
        "spam" => State::Spam,
        "trash" | "post-trashed" => State::Deleted,
        other => {
            return Err(format!(
                "comment {id} has comment_approved {other:?}, which is not 1, 0, spam or trash"
            ));
        }
    };
    let parent = non_empty(e.text_of("comment_parent")).filter(|p| p != "0");
    Ok(Record::Comment(Comment {
        source_id: id.to_owned(),
        thread: thread.to_owned(),
        parent,
        author: non_empty(e.text_of("comment_author")),
        email: non_empty(e.text_of("comment_author_email")),
        website: non_empty(e.text_of("comment_author_url")),
        remote: non_empty(e.text_of("comment_author_IP")),
        body: Body::Html(e.text_of("comment_content").to_owned()),
        created,
        modified: None,
        state,
        likes: 0,
        dislikes: 0,
    }))
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
        let step = self.step();
        let line = self.stream.line();
        crate::advance(
            Format::Wordpress,
            &mut self.done,
            &mut self.read,
            step,
            || format!("line {line}"),
        )
    }
}
