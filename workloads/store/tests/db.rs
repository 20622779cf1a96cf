//! The store's guarantees, exercised on both engines: a real fjall directory and a real
//! PostgreSQL server.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use io360_common::model::{ChangeKind, Status};
use io360_store::StoreError;
use io360_store::api::{Idempotency, NewComment, WriteOp};
use support::engines::{self, Kind, on_both};

fn new_comment(text: &str) -> NewComment {
    NewComment {
        parent: None,
        author: Some("ann".into()),
        email: Some("ann@example.org".into()),
        website: None,
        text: text.into(),
        html: format!("<p>{text}</p>"),
        status: Status::Approved,
        remote: Some("127.0.0.0".into()),
        author_key: Some("ann".into()),
    }
}

/// An append; with a key, its fingerprint is the text, as if logic hashed the request.
fn append(thread: &str, text: &str, key: Option<&str>) -> WriteOp {
    WriteOp::Append {
        thread: thread.into(),
        comment: new_comment(text),
        idempotency: key.map(|k| {
            Box::new(Idempotency {
                key: k.to_owned(),
                fingerprint: text.to_owned(),
            })
        }),
    }
}

on_both!(
    concurrent_appends_get_gap_free_sequences_and_feed_positions,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn concurrent_appends_get_gap_free_sequences_and_feed_positions(kind: Kind) {
    let db = Arc::new(engines::open(kind, 64).await);
    let mut tasks = Vec::new();
    for w in 0..32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20 {
                let thread = format!("/t/{}", (w + i) % 3);
                let r = db
                    .write(append(&thread, &format!("c {w} {i}"), None))
                    .await
                    .unwrap();
                out.push(r.change);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 640);
    let positions: BTreeSet<u64> = all.iter().map(|c| c.pos).collect();
    assert_eq!(positions, (1..=640).collect());
    for n in 0..3 {
        let thread = format!("/t/{n}");
        let seqs: BTreeSet<u64> = all
            .iter()
            .filter(|c| c.thread == thread)
            .map(|c| c.seq)
            .collect();
        let count = seqs.len() as u64;
        assert_eq!(seqs, (1..=count).collect(), "thread {thread} has a gap");
        let meta = db.meta(thread.clone()).await.unwrap();
        assert_eq!(meta.head, count);
        assert_eq!(meta.count, count);
    }
    // The feed returns everything in position order.
    let mut pos = 0;
    let mut seen = 0;
    loop {
        let batch = db.feed(pos, 100).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for c in batch {
            assert_eq!(c.pos, pos + 1);
            pos = c.pos;
            seen += 1;
        }
    }
    assert_eq!(seen, 640);
}

on_both!(idempotent_retry_returns_the_first_result);
async fn idempotent_retry_returns_the_first_result(kind: Kind) {
    let db = engines::open(kind, 64).await;
    let a = db.write(append("/p", "hello", Some("k1"))).await.unwrap();
    let b = db.write(append("/p", "hello", Some("k1"))).await.unwrap();
    assert!(!a.replayed);
    assert!(b.replayed);
    assert_eq!(a.change, b.change);
    // The same key with another request is refused, not answered with the first result.
    let e = db
        .write(append("/p", "hello again", Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::IdempotencyKeyReused), "{e:?}");
    let page = db.page("/p".into(), 0, 100).await.unwrap();
    assert_eq!(page.comments.len(), 1);
    // The same key on another thread is another request.
    let c = db.write(append("/q", "hello", Some("k1"))).await.unwrap();
    assert!(!c.replayed);
}

on_both!(updates_are_changes_with_new_sequence_numbers);
async fn updates_are_changes_with_new_sequence_numbers(kind: Kind) {
    let db = engines::open(kind, 64).await;
    let a = db.write(append("/p", "one", None)).await.unwrap().change;
    let b = db.write(append("/p", "two", None)).await.unwrap().change;
    let id = a.comment.unwrap().id;
    let e = db
        .write(WriteOp::Edit {
            id,
            text: "uno".into(),
            html: "<p>uno</p>".into(),
        })
        .await
        .unwrap()
        .change;
    assert_eq!((e.seq, e.kind), (3, ChangeKind::Edited));
    let v = db
        .write(WriteOp::Vote {
            id,
            voter: "x".into(),
            value: 1,
        })
        .await
        .unwrap()
        .change;
    assert_eq!(v.comment.unwrap().votes.up, 1);
    let again = db
        .write(WriteOp::Vote {
            id,
            voter: "x".into(),
            value: -1,
        })
        .await;
    assert!(matches!(again, Err(StoreError::AlreadyVoted(i)) if i == id));
    // After seq 2 only the edited (and voted) comment changed.
    let page = db.page("/p".into(), 2, 100).await.unwrap();
    assert_eq!(page.head, 4);
    assert_eq!(page.comments.len(), 1);
    assert_eq!(page.comments[0].id, id);
    assert_eq!(page.comments[0].seq, 4);
    let d = db.write(WriteOp::Delete { id }).await.unwrap().change;
    let dc = d.comment.unwrap();
    assert_eq!(dc.status, Status::Deleted);
    assert!(dc.text.is_empty());
    assert_eq!(db.comment(id).await.unwrap().unwrap().email, None);
    assert_eq!(db.meta("/p".into()).await.unwrap().count, 1);
    assert!(matches!(
        db.write(WriteOp::Delete { id }).await,
        Err(StoreError::Deleted(i)) if i == id
    ));
    // Replies must name a comment of the same thread.
    let other = db.write(append("/q", "q", None)).await.unwrap().change;
    let mut reply = new_comment("re");
    reply.parent = other.comment.map(|c| c.id);
    let err = db
        .write(WriteOp::Append {
            thread: "/p".into(),
            comment: reply,
            idempotency: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(i) if i.field == "parent"),
        "{err:?}"
    );
    let _ = b;
}

on_both!(closed_threads_refuse_comments_and_pending_ones_queue);
async fn closed_threads_refuse_comments_and_pending_ones_queue(kind: Kind) {
    let db = engines::open(kind, 64).await;
    db.write(WriteOp::Close {
        thread: "/c".into(),
    })
    .await
    .unwrap();
    let err = db.write(append("/c", "x", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::ThreadClosed), "{err:?}");
    db.write(WriteOp::Reopen {
        thread: "/c".into(),
    })
    .await
    .unwrap();
    let mut held = new_comment("held");
    held.status = Status::Pending;
    let r = db
        .write(WriteOp::Append {
            thread: "/c".into(),
            comment: held,
            idempotency: None,
        })
        .await
        .unwrap();
    let id = r.change.comment.unwrap().id;
    assert_eq!(db.meta("/c".into()).await.unwrap().count, 0);
    assert_eq!(db.pending(10).await.unwrap().len(), 1);
    db.write(WriteOp::Approve { id }).await.unwrap();
    assert!(db.pending(10).await.unwrap().is_empty());
    assert_eq!(db.meta("/c".into()).await.unwrap().count, 1);
    assert_eq!(db.author_approved("ann".into()).await.unwrap(), 1);
}

on_both!(data_survives_reopen_and_a_second_process_is_refused);
async fn data_survives_reopen_and_a_second_process_is_refused(kind: Kind) {
    let db = engines::open(kind, 64).await;
    for i in 0..10 {
        db.write(append("/r", &format!("{i}"), None)).await.unwrap();
    }
    match kind {
        // One process at a time on a data directory.
        Kind::Fjall => {
            let second = db.second().await;
            let msg = second.err().expect("a second open must fail").to_string();
            assert!(msg.contains("in use"), "{msg}");
        }
        // Replicas share a database: a second one reads what the first wrote.
        Kind::Postgres => {
            let second = db.second().await.unwrap();
            let page = second.page("/r".into(), 0, 100).await.unwrap();
            assert_eq!(page.comments.len(), 10);
        }
    }
    let db = db.reopen().await;
    let page = db.page("/r".into(), 0, 100).await.unwrap();
    assert_eq!(page.comments.len(), 10);
    let next = db.write(append("/r", "after", None)).await.unwrap().change;
    assert_eq!((next.seq, next.pos), (11, 11));
}

on_both!(
    erasing_an_author_deletes_their_comments_and_scrubs_the_feed,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn erasing_an_author_deletes_their_comments_and_scrubs_the_feed(kind: Kind) {
    let db = engines::open(kind, 64).await;
    db.write(append("/erase", "ann's first", None))
        .await
        .unwrap();
    let mut other = new_comment("bob's words");
    other.author = Some("bob".into());
    other.author_key = Some("bob".into());
    db.write(WriteOp::Append {
        thread: "/erase".into(),
        comment: other,
        idempotency: None,
    })
    .await
    .unwrap();
    db.write(append("/erase", "ann's second", None))
        .await
        .unwrap();

    let changes = db.erase_author("ann".into()).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Deleted));
    assert!(db.author_comments("ann".into()).await.unwrap().is_empty());
    let feed = db.feed(0, 100).await.unwrap();
    for ch in &feed {
        let c = ch.comment.as_ref().unwrap();
        if c.author.as_deref() == Some("bob") {
            assert_eq!(c.text, "bob's words");
        } else {
            assert!(c.text.is_empty() && c.author.is_none(), "{ch:?}");
        }
    }
    assert_eq!(db.author_approved("ann".into()).await.unwrap(), 0);
    assert_eq!(db.author_approved("bob".into()).await.unwrap(), 1);
    // Erasing again finds nothing left.
    assert!(db.erase_author("ann".into()).await.unwrap().is_empty());
}
