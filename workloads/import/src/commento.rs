//! Commento's JSON export: `{"version": 1, "comments": [...], "commenters": [...]}`. It is one
//! JSON document with the commenters after the comments, so it is read whole (Commento's
//! exports are small: a site's comments and no more); records then come out thread by thread.

use std::collections::HashMap;
use std::io::BufRead;

use serde::Deserialize;

use crate::text::{non_empty, rfc3339};
use crate::{Body, Comment, Format, ImportError, Record, Records, State, Thread};

#[derive(Deserialize)]
struct Export {
    version: Option<u32>,
    #[serde(default)]
    comments: Vec<C>,
    #[serde(default)]
    commenters: Vec<Commenter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct C {
    comment_hex: String,
    #[serde(default)]
    domain: String,
    path: String,
    #[serde(default)]
    commenter_hex: String,
    #[serde(default)]
    markdown: String,
    #[serde(default)]
    html: String,
    #[serde(default)]
    parent_hex: String,
    #[serde(default)]
    score: i64,
    #[serde(default)]
    state: String,
    creation_date: String,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commenter {
    commenter_hex: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    link: String,
}

fn fail(at: String, message: String, read: u64) -> ImportError {
    ImportError {
        format: Format::Commento,
        at,
        message,
        read,
    }
}

/// Reads the whole export, then yields its records.
pub fn read(input: Box<dyn BufRead + Send>) -> Records {
    match parse(input) {
        Ok(records) => Box::new(records.into_iter()),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

fn parse(input: Box<dyn BufRead + Send>) -> Result<Vec<Result<Record, ImportError>>, ImportError> {
    let export: Export = serde_json::from_reader(input).map_err(|e| {
        let at = format!("line {} column {}", e.line(), e.column());
        let message = if e.is_eof() {
            "the document ends early: the file is truncated".to_owned()
        } else {
            format!("not a Commento export ({e})")
        };
        fail(at, message, 0)
    })?;
    if export.version != Some(1) {
        return Err(fail(
            "the start".into(),
            format!(
                "the export's version is {:?}; io360 reads version 1",
                export.version
            ),
            0,
        ));
    }
    let people: HashMap<&str, &Commenter> = export
        .commenters
        .iter()
        .map(|c| (c.commenter_hex.as_str(), c))
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut by_thread: HashMap<String, Vec<&C>> = HashMap::new();
    for c in &export.comments {
        let key = format!("{}{}", c.domain, c.path);
        by_thread
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(c);
    }
    let mut out = Vec::new();
    for key in order {
        let comments = &by_thread[&key];
        out.push(Ok(Record::Thread(Thread {
            source_id: key.clone(),
            url: comments[0].path.clone(),
            title: None,
            closed: false,
        })));
        for (i, c) in comments.iter().enumerate() {
            match convert(c, &key, &people) {
                Ok(comment) => out.push(Ok(Record::Comment(comment))),
                Err(m) => {
                    let at = format!("comment {} ({} in its thread)", c.comment_hex, i + 1);
                    let read = out.len() as u64;
                    out.push(Err(fail(at, m, read)));
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn convert(c: &C, thread: &str, people: &HashMap<&str, &Commenter>) -> Result<Comment, String> {
    let created = rfc3339(&c.creation_date)?;
    let who = people.get(c.commenter_hex.as_str());
    let state = if c.deleted {
        State::Deleted
    } else {
        match c.state.as_str() {
            "approved" | "" => State::Approved,
            "unapproved" => State::Pending,
            "flagged" => State::Spam,
            other => {
                return Err(format!(
                    "state {other:?} is not approved, unapproved or flagged"
                ));
            }
        }
    };
    Ok(Comment {
        source_id: c.comment_hex.clone(),
        thread: thread.to_owned(),
        parent: non_empty(&c.parent_hex).filter(|p| p != "root"),
        author: who.and_then(|w| non_empty(&w.name)),
        email: who.and_then(|w| non_empty(&w.email)),
        website: who.and_then(|w| non_empty(&w.link)),
        remote: None,
        body: match non_empty(&c.markdown) {
            Some(md) => Body::Markdown(md),
            None => Body::Html(c.html.clone()),
        },
        created,
        modified: None,
        state,
        likes: c.score.max(0) as u32,
        dislikes: (-c.score).max(0) as u32,
    })
}
