//! Erasing an author does not stop the store: writes keep flowing while the erase of a large
//! store runs, and their latency stays near what it is when the store is idle.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use io360_common::model::Status;
use io360_store::Engine;
use io360_store::api::{NewComment, WriteOp};
use support::engines::{self, Kind, on_both};

/// Comments in the store when the erase starts.
const COMMENTS: usize = 100_000;
/// One comment in this many is by the author who asks to be erased.
const THEIRS_EVERY: usize = 10;

fn append(i: usize, author: &str) -> WriteOp {
    WriteOp::Append {
        thread: format!("/t/{}", i % 100),
        comment: NewComment {
            parent: None,
            author: Some(author.into()),
            email: Some(format!("{author}@example.org")),
            website: None,
            text: format!("comment {i}"),
            html: format!("<p>comment {i}</p>"),
            status: Status::Approved,
            remote: None,
            author_key: Some(author.into()),
        },
        idempotency: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One write at a time, as a single reader posting would; answers each one's latency.
async fn timed_write(db: &Engine, i: usize) -> Duration {
    let start = Instant::now();
    db.write(append(i, "bystander")).await.unwrap();
    start.elapsed()
}

on_both!(
    writes_keep_flowing_while_an_author_is_erased,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn writes_keep_flowing_while_an_author_is_erased(kind: Kind) {
    let db = Arc::new(engines::open(kind, 512).await);
    // Fill the store with concurrent writers, so group commit makes it quick.
    let started = Instant::now();
    let mut fill = Vec::new();
    for w in 0..256 {
        let db = db.clone();
        fill.push(tokio::spawn(async move {
            for i in (w..COMMENTS).step_by(256) {
                let author = if i % THEIRS_EVERY == 0 {
                    "erased"
                } else {
                    "kept"
                };
                db.write(append(i, author)).await.unwrap();
            }
        }));
    }
    for f in fill {
        f.await.unwrap();
    }
    eprintln!("filled {COMMENTS} comments in {:?}", started.elapsed());

    let mut idle = Vec::new();
    for i in 0..100 {
        idle.push(timed_write(&db, i).await);
    }

    let erase = tokio::spawn({
        let db = db.clone();
        async move {
            let start = Instant::now();
            let changes = db.erase_author("erased".into()).await.unwrap();
            (changes.len(), start.elapsed())
        }
    });
    // The author writes once more while the erase runs: that comment goes too.
    db.write(append(COMMENTS, "erased")).await.unwrap();
    let mut during = Vec::new();
    let mut i = 0;
    while !erase.is_finished() {
        during.push(timed_write(&db, i).await);
        i += 1;
    }
    let (erased, took) = erase.await.unwrap();
    // Idle latency is sampled before and after the erase: the machine's own load moves it.
    for i in 0..100 {
        idle.push(timed_write(&db, i).await);
    }
    let idle = median(idle);
    assert_eq!(erased, COMMENTS / THEIRS_EVERY + 1);
    eprintln!(
        "erase took {took:?}; {} writes during it, median {:?}, slowest {:?}; idle median {idle:?}",
        during.len(),
        median(during.clone()),
        during.iter().max()
    );
    assert!(
        during.len() >= 20,
        "only {} writes went through during an erase of {took:?}",
        during.len()
    );
    let during = median(during);
    assert!(
        during <= idle * 2,
        "write latency during the erase, median {during:?}, is over twice the idle {idle:?}"
    );
    assert!(
        db.author_comments("erased".into())
            .await
            .unwrap()
            .is_empty()
    );
    // No copy in the feed still carries their words.
    let mut after = 0;
    loop {
        let batch = db.feed(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.pos;
        for ch in &batch {
            if let Some(c) = &ch.comment {
                assert!(c.author.as_deref() != Some("erased"), "{ch:?}");
            }
        }
    }
}
