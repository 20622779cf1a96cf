//! The store on PostgreSQL as a highly available store runs it: several store replicas on one
//! database, and a database that restarts or crashes under them.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use io360_common::model::{Change, Status};
use io360_store::api::{FeedLine, Idempotency, NewComment, WriteOp, WriteResult};
use io360_store::{Engine, PgDb};
use support::pg::Postgres;
use tokio::sync::mpsc;

/// An append with an idempotency key, as logic sends it.
fn append(thread: &str, text: &str) -> WriteOp {
    WriteOp::Append {
        thread: thread.into(),
        comment: NewComment {
            parent: None,
            author: Some("reader".into()),
            email: None,
            website: None,
            text: text.into(),
            html: format!("<p>{text}</p>"),
            status: Status::Approved,
            remote: None,
            author_key: None,
        },
        idempotency: Some(Box::new(Idempotency {
            key: format!("key {text}"),
            fingerprint: text.into(),
        })),
    }
}

/// Posts `op` to the store at `base` until it is acknowledged, as logic's retries would: a 503
/// must carry `Retry-After`. Counts the refusals it meets in `refused`.
async fn post_until_acknowledged(
    http: &reqwest::Client,
    base: &str,
    op: &WriteOp,
    refused: &AtomicU64,
) -> WriteResult {
    loop {
        match http
            .post(format!("{base}/store/v1/write"))
            .json(op)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => return r.json().await.unwrap(),
            Ok(r) if r.status() == 503 => {
                assert!(
                    r.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => panic!(
                "unexpected answer {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            // The store itself stays up: only its database goes away.
            Err(e) => panic!("the store did not answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows the change feed of the store at `base` from the start, reconnecting after `after`
/// the last change seen when the stream ends, and checks every change is the one after the
/// last: none lost, none twice, none out of order. Sends each change on.
fn follow(base: String) -> mpsc::UnboundedReceiver<Change> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let http = support::as_tier("sync");
        let mut last = 0;
        loop {
            let Ok(r) = http
                .get(format!("{base}/store/v1/feed?after={last}"))
                .send()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if r.status() != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut body = r.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(n) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=n).collect();
                    match serde_json::from_slice::<FeedLine>(&line).unwrap() {
                        FeedLine::Change(c) => {
                            assert_eq!(c.pos, last + 1, "the feed skipped or repeated a change");
                            last = c.pos;
                            if tx.send(*c).is_err() {
                                return;
                            }
                        }
                        FeedLine::Heartbeat { .. } => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    rx
}

/// Receives `n` changes from a follower, within a minute.
async fn receive(rx: &mut mpsc::UnboundedReceiver<Change>, n: usize) -> Vec<Change> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => out.push(c),
            _ => panic!("the follower saw {} changes of {n}", out.len()),
        }
    }
    out
}

/// Checks what the database holds against what was acknowledged: every acknowledged comment
/// once, each thread's sequence numbers gap-free.
async fn check_stored(db: &Engine, acked: &[WriteResult], threads: &[String]) -> u64 {
    let mut head_total = 0;
    let mut ids = BTreeSet::new();
    let mut texts = BTreeSet::new();
    for t in threads {
        // Page by page: a fast machine posts more than one page's worth to a thread.
        let (mut comments, mut head, mut after) = (Vec::new(), 0, 0);
        loop {
            let page = db.page(t.clone(), after, 1000).await.unwrap();
            head = head.max(page.head);
            let Some(last) = page.comments.last() else {
                break;
            };
            after = last.seq;
            comments.extend(page.comments);
        }
        let seqs: Vec<u64> = comments.iter().map(|c| c.seq).collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "{t}: sequence numbers with a gap"
        );
        head_total += head;
        for c in comments {
            assert!(ids.insert(c.id), "comment {} stored twice", c.id);
            assert!(texts.insert(c.text.clone()), "{:?} stored twice", c.text);
        }
    }
    for a in acked {
        let c = a.change.comment.as_ref().unwrap();
        assert!(ids.contains(&c.id), "acknowledged comment {} is lost", c.id);
        assert!(texts.contains(&c.text), "acknowledged {:?} is lost", c.text);
    }
    head_total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_database_number_every_change_once_in_commit_order() {
    let pg = Postgres::start().await;
    let engine = support::postgres(pg.url());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = support::start_on(support::config(dir_a.path()), engine.clone()).await;
    let b = support::start_on(support::config(dir_b.path()), engine).await;
    // One follower on each replica: each must see the other's writes too.
    let mut follow_a = follow(a.base.clone());
    let mut follow_b = follow(b.base.clone());

    const CLIENTS: usize = 32;
    const POSTS: usize = 25;
    let threads: Vec<String> = (0..4).map(|t| format!("/replicas/{t}")).collect();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let bases = [a.base.clone(), b.base.clone()];
        let threads = threads.clone();
        tasks.push(tokio::spawn(async move {
            let http = support::as_logic();
            let mut acked = Vec::new();
            for i in 0..POSTS {
                // Each client posts to both replicas in turn.
                let base = &bases[(client + i) % 2];
                let op = append(&threads[(client + i) % 4], &format!("c{client} p{i}"));
                let r = post_until_acknowledged(&http, base, &op, &AtomicU64::new(0)).await;
                assert!(!r.replayed);
                acked.push(r);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let n = CLIENTS * POSTS;
    assert_eq!(acked.len(), n);
    let positions: BTreeSet<u64> = acked.iter().map(|r| r.change.pos).collect();
    assert_eq!(
        positions,
        (1..=n as u64).collect(),
        "feed positions are not 1..={n}"
    );
    // Per thread, the acknowledged sequence numbers are 1..=count, in position order.
    let mut per_thread: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for r in &acked {
        per_thread
            .entry(r.change.thread.as_str())
            .or_default()
            .push((r.change.pos, r.change.seq));
    }
    for (t, mut v) in per_thread {
        v.sort();
        let seqs: Vec<u64> = v.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            seqs,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "{t}: sequence numbers out of commit order"
        );
    }

    let db = Engine::Postgres(
        PgDb::connect(support::engines::pg_options(pg.url(), 64))
            .await
            .unwrap(),
    );
    assert_eq!(check_stored(&db, &acked, &threads).await, n as u64);
    for follower in [&mut follow_a, &mut follow_b] {
        let seen = receive(follower, n).await;
        let by_pos: BTreeMap<u64, &Change> =
            acked.iter().map(|r| (r.change.pos, &r.change)).collect();
        for c in &seen {
            assert_eq!(
                Some(c),
                by_pos.get(&c.pos).copied(),
                "the feed's change differs"
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restarted_or_killed_mid_posting_loses_nothing_acknowledged() {
    let mut pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = support::start_on(support::config(dir.path()), support::postgres(pg.url())).await;
    let mut follower = follow(store.base.clone());
    let threads: Vec<String> = (0..3).map(|t| format!("/outage/{t}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..8 {
        let (base, threads, stop, refused) = (
            store.base.clone(),
            threads.clone(),
            stop.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = support::as_logic();
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let op = append(&threads[(client + i) % 3], &format!("c{client} p{i}"));
                let r = post_until_acknowledged(&http, &base, &op, &refused).await;
                acked.push(r);
                i += 1;
            }
            acked
        }));
    }
    let wait = |secs| tokio::time::sleep(Duration::from_secs(secs));
    wait(2).await;
    // A restart: the server ends its sessions and stops; posts meet 503s until it is back.
    pg.stop();
    let before = refused.load(Ordering::Relaxed);
    wait(2).await;
    assert!(
        refused.load(Ordering::Relaxed) > before,
        "no write was refused while the database was down"
    );
    pg.restart().await;
    wait(2).await;
    // A crash: the postmaster killed, recovery from the WAL at the next start.
    pg.kill();
    let before = refused.load(Ordering::Relaxed);
    wait(2).await;
    assert!(
        refused.load(Ordering::Relaxed) > before,
        "no write was refused while the database was killed"
    );
    pg.restart().await;
    wait(2).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    eprintln!(
        "{} posts acknowledged, {} refusals met",
        acked.len(),
        refused.load(Ordering::Relaxed)
    );
    assert!(acked.len() > 50, "too few posts went through to tell");

    let db = Engine::Postgres(
        PgDb::connect(support::engines::pg_options(pg.url(), 64))
            .await
            .unwrap(),
    );
    let total = check_stored(&db, &acked, &threads).await;
    // The feed resumed without a gap: the follower saw every change once, in order (checked
    // as it read), up to the last one committed.
    let seen = receive(&mut follower, total as usize).await;
    assert_eq!(seen.last().unwrap().pos, total);
    let seen_pos: BTreeSet<u64> = seen.iter().map(|c| c.pos).collect();
    for r in &acked {
        assert!(seen_pos.contains(&r.change.pos));
    }
    store.stop().await;
}

#[tokio::test]
async fn a_connection_string_asking_for_tls_never_falls_back_to_plain_text() {
    // The test's server has no certificate: a store told `sslmode=require` must refuse it.
    let pg = Postgres::start().await;
    let refused = PgDb::connect(support::engines::pg_options(
        format!("{}&sslmode=require", pg.url()),
        64,
    ))
    .await;
    let err = refused
        .err()
        .expect("a plain-text server was accepted under sslmode=require");
    assert!(
        err.to_string().contains("cannot reach the database"),
        "{err}"
    );
    // The same server without the demand is used.
    PgDb::connect(support::engines::pg_options(pg.url(), 64))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_store_is_refused() {
    let pg = Postgres::start().await;
    // The first start makes the schema; a second finds it current.
    drop(
        PgDb::connect(support::engines::pg_options(pg.url(), 64))
            .await
            .unwrap(),
    );
    PgDb::connect(support::engines::pg_options(pg.url(), 64))
        .await
        .unwrap();
    // A newer store applied a migration this one does not know.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    let err = PgDb::connect(support::engines::pg_options(pg.url(), 64))
        .await
        .err()
        .expect("a schema from a newer store was used");
    let err = err.to_string();
    assert!(
        err.contains("newer io360 store") && err.contains("99"),
        "{err}"
    );
}
