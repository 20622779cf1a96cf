//! The public shape of live-update events, rendered once per change.
//!
//! An event is `{"thread","seq","kind","comment"?}`, made from [`Change::public`] so a held
//! comment's content never leaves io360 while its sequence number still does. Each event is
//! serialized once when it arrives and shared by every answer that carries it. A reset is an
//! event of kind `reset` whose `seq` is the thread's head: the client reloads the thread from
//! the API and continues from there.

use bytes::Bytes;
use io360_common::model::{Change, ChangeKind, Comment, Seq};
use serde::{Deserialize, Serialize};

/// One event, rendered.
#[derive(Debug, Clone)]
pub struct Event {
    /// The thread's sequence number of this event.
    pub seq: Seq,
    /// Its public JSON.
    pub json: Bytes,
    /// Whether this is a reset rather than a change.
    pub reset: bool,
    /// The comment whose content the JSON carries, if any (see [`Event::scrubbed`]).
    pub comment: Option<u64>,
}

#[derive(Serialize)]
struct Public<'a> {
    thread: &'a str,
    seq: Seq,
    kind: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a Comment>,
}

/// [`Public`] read back, to scrub a rendered event.
#[derive(Deserialize)]
struct Rendered {
    thread: String,
    seq: Seq,
    kind: ChangeKind,
    comment: Option<Comment>,
}

#[derive(Serialize)]
struct Reset<'a> {
    thread: &'a str,
    seq: Seq,
    kind: &'static str,
}

impl Event {
    /// Renders a committed change as the public may see it.
    pub fn from_change(change: Change) -> Event {
        let change = change.public();
        let comment = change
            .comment
            .as_ref()
            .filter(|c| c.has_content())
            .map(|c| c.id);
        let json = serde_json::to_vec(&Public {
            thread: &change.thread,
            seq: change.seq,
            kind: change.kind,
            comment: change.comment.as_ref(),
        })
        .unwrap_or_default();
        Event {
            seq: change.seq,
            json: Bytes::from(json),
            reset: false,
            comment,
        }
    }

    /// This event with its comment's text, name and website erased: what history keeps of a
    /// comment once it is deleted, so a client catching up never receives a deleted
    /// comment's content (the store scrubs its feed the same way when an author is erased).
    pub fn scrubbed(&self) -> Event {
        let Ok(mut r) = serde_json::from_slice::<Rendered>(&self.json) else {
            return self.clone();
        };
        if let Some(c) = &mut r.comment {
            c.scrub();
        }
        let json = serde_json::to_vec(&Public {
            thread: &r.thread,
            seq: r.seq,
            kind: r.kind,
            comment: r.comment.as_ref(),
        })
        .unwrap_or_default();
        Event {
            seq: self.seq,
            json: Bytes::from(json),
            reset: self.reset,
            comment: None,
        }
    }

    /// A reset: history cannot cover the client's position; reload the thread, then continue
    /// after `head`.
    pub fn reset(thread: &str, head: Seq) -> Event {
        let json = serde_json::to_vec(&Reset {
            thread,
            seq: head,
            kind: "reset",
        })
        .unwrap_or_default();
        Event {
            seq: head,
            json: Bytes::from(json),
            reset: true,
            comment: None,
        }
    }
}

/// The body of a poll answer: `{"events":[...]}`.
pub fn poll_body<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    for e in events {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&e.json);
    }
    out.extend_from_slice(b"]}");
    out
}

#[derive(Serialize)]
struct StateEvent<'a> {
    thread: &'a str,
    seq: Seq,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// The event that tells a page comments were suspended (with the sentence readers see) or
/// resumed. It is no change of the thread: its `seq` is the client's own position, so a client
/// that does not know the kind skips it as seen and polls again from where it was.
pub fn state_json(thread: &str, since: Seq, suspended: bool, message: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&StateEvent {
        thread,
        seq: since,
        kind: if suspended { "suspended" } else { "resumed" },
        message: message.filter(|_| suspended),
    })
    .unwrap_or_default()
}

/// A poll's answer made of one state event per thread it waits on.
pub fn state_body<'a>(
    threads: impl IntoIterator<Item = &'a (std::sync::Arc<str>, Seq)>,
    suspended: bool,
    message: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"events\":[");
    for (i, (thread, since)) in threads.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&state_json(thread, *since, suspended, message));
    }
    out.extend_from_slice(b"]}");
    out
}

/// One Server-Sent Events message.
pub fn sse_message(out: &mut Vec<u8>, e: &Event) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(itoa::Buffer::new().format(e.seq).as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&e.json);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_event_is_at_the_clients_own_position() {
        let threads: Vec<(std::sync::Arc<str>, Seq)> = vec![("/a".into(), 7), ("/b".into(), 0)];
        let body: serde_json::Value =
            serde_json::from_slice(&state_body(&threads, true, Some("launch day"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"events": [
                {"thread": "/a", "seq": 7, "kind": "suspended", "message": "launch day"},
                {"thread": "/b", "seq": 0, "kind": "suspended", "message": "launch day"},
            ]})
        );
        let back: serde_json::Value =
            serde_json::from_slice(&state_json("/a", 7, false, Some("ignored"))).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"thread": "/a", "seq": 7, "kind": "resumed"})
        );
    }
    use io360_common::model::{Status, Votes};

    fn comment(status: Status) -> Comment {
        Comment {
            id: 7,
            thread: "/a".into(),
            seq: 3,
            parent: None,
            author: Some("ann".into()),
            website: None,
            text: "hello".into(),
            html: "<p>hello</p>".into(),
            created: "2026-01-01T00:00:00Z".into(),
            modified: None,
            status,
            votes: Votes::default(),
        }
    }

    /// The change that created comment 7 as sequence number 3 of `/a`.
    fn created(status: Status) -> Change {
        Change {
            pos: 9,
            thread: "/a".into(),
            seq: 3,
            kind: ChangeKind::Created,
            comment: Some(comment(status)),
        }
    }

    #[test]
    fn held_comment_content_is_withheld_but_seq_advances() {
        let e = Event::from_change(created(Status::Pending));
        let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"thread": "/a", "seq": 3, "kind": "created"})
        );
    }

    #[test]
    fn approved_comment_is_carried_and_positions_stay_private() {
        let e = Event::from_change(created(Status::Approved));
        let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(v["comment"]["html"], "<p>hello</p>");
        assert!(v.get("pos").is_none());
        let body = poll_body([&e, &Event::reset("/a", 40)]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["events"][1],
            serde_json::json!({"thread": "/a", "seq": 40, "kind": "reset"})
        );
    }

    #[test]
    fn a_scrubbed_event_keeps_its_shape_and_loses_the_content() {
        let e = Event::from_change(created(Status::Approved));
        assert_eq!(e.comment, Some(7));
        let s = e.scrubbed();
        assert_eq!((s.seq, s.comment, s.reset), (3, None, false));
        let v: serde_json::Value = serde_json::from_slice(&s.json).unwrap();
        assert_eq!(v["kind"], "created");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["comment"]["id"], 7);
        assert_eq!(v["comment"]["text"], "");
        assert_eq!(v["comment"]["html"], "");
        assert!(v["comment"]["author"].is_null());
        assert!(!String::from_utf8_lossy(&s.json).contains("hello"));
    }
}
