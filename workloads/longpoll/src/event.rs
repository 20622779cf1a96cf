//! The public shape of live-update events, rendered once per change.
//!
//! An event is `{"thread","seq","kind","comment"?}`, made from [`Change::public`] so a held
//! comment's content never leaves io360 while its sequence number still does. Each event is
//! serialized once when it arrives and shared by every answer that carries it. A reset is an
//! event of kind `reset` whose `seq` is the thread's head: the client reloads the thread from
//! the API and continues from there.

use bytes::Bytes;
use io360_common::model::{Change, ChangeKind, Comment, Seq};
use serde::Serialize;

/// One event, rendered.
#[derive(Debug, Clone)]
pub struct Event {
    /// The thread's sequence number of this event.
    pub seq: Seq,
    /// Its public JSON.
    pub json: Bytes,
    /// Whether this is a reset rather than a change.
    pub reset: bool,
}

#[derive(Serialize)]
struct Public<'a> {
    thread: &'a str,
    seq: Seq,
    kind: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a Comment>,
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

    #[test]
    fn held_comment_content_is_withheld_but_seq_advances() {
        let change = Change {
            pos: 9,
            thread: "/a".into(),
            seq: 3,
            kind: ChangeKind::Created,
            comment: Some(comment(Status::Pending)),
        };
        let e = Event::from_change(change);
        let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"thread": "/a", "seq": 3, "kind": "created"})
        );
    }

    #[test]
    fn approved_comment_is_carried_and_positions_stay_private() {
        let change = Change {
            pos: 9,
            thread: "/a".into(),
            seq: 3,
            kind: ChangeKind::Created,
            comment: Some(comment(Status::Approved)),
        };
        let e = Event::from_change(change);
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
}
