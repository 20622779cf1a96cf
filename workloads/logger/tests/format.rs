//! Upgrades keep data: a log written by an earlier version opens with every event in it, and
//! one written by a newer version is refused, untouched.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use io360_logger::{Event, EventLog, Filter, Kind, OpenError, Retention};

fn retention() -> Retention {
    Retention {
        // The fixture's events must not age out while this test reads them.
        max_age: Duration::from_secs(100 * 365 * 24 * 3600),
        max_bytes: 1 << 30,
    }
}

/// Unpacks the fixture made by `workloads/store/tests/data/make-format-1.sh`.
fn unpack(into: &Path) -> PathBuf {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-1.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(into)
        .status()
        .expect("running tar");
    assert!(status.success(), "unpacking {}", tarball.display());
    into.join("logger")
}

async fn all(log: &EventLog) -> Vec<Event> {
    log.query(Filter {
        limit: 10_000,
        ..Filter::default()
    })
    .await
    .unwrap()
    .events
}

#[tokio::test]
async fn a_log_of_the_first_format_opens_with_every_event_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpack(tmp.path());
    let mut first_read = None;
    for round in 0..2 {
        let log = EventLog::open(&dir, retention()).unwrap();
        let events = all(&log).await;
        let kinds: BTreeSet<Kind> = events.iter().map(|e| e.kind).collect();
        for k in [
            Kind::TierStarted,
            Kind::TierStopped,
            Kind::CommentPosted,
            Kind::CommentHeld,
            Kind::CommentApproved,
            Kind::CommentEdited,
            Kind::CommentDeleted,
            Kind::CommentVoted,
            Kind::ThreadClosed,
            Kind::ThreadReopened,
            Kind::CommentsSuspended,
            Kind::CommentsResumed,
            Kind::AuthorBanned,
            Kind::AddressBanned,
            Kind::AuthorErased,
        ] {
            assert!(kinds.contains(&k), "round {round}: no {k} in {kinds:?}");
        }
        assert!(events.iter().all(|e| e.id.is_some()));
        // Events still say who did what, and an author's key still finds their events.
        assert!(
            events
                .iter()
                .any(|e| e.actor == "Ann" && e.author_key.is_some())
        );
        // Export finds Ann by her key, erase removes her.
        let ann = events
            .iter()
            .find_map(|e| (e.actor == "Ann").then(|| e.author_key.clone()).flatten())
            .unwrap();
        let hers = log.author_events(ann.clone()).await.unwrap();
        assert!(!hers.is_empty());
        match first_read.take() {
            None => first_read = Some(events.clone()),
            Some(before) => {
                // Reopened as this version left it: the same events, plus its own start and
                // stop.
                let ids: BTreeSet<_> = events.iter().map(|e| e.id.clone()).collect();
                let old: Vec<Event> = before;
                assert!(old.iter().all(|e| ids.contains(&e.id)));
                assert_eq!(
                    log.erase_author(ann.clone()).await.unwrap(),
                    hers.len() as u64
                );
                assert!(log.author_events(ann).await.unwrap().is_empty());
            }
        }
        // The same event retried after the upgrade is recognised as stored.
        let mut again = events[0].clone();
        let nanos = again.validate("event", true).unwrap();
        assert_eq!(log.append(vec![(nanos, again)]).await.unwrap(), 0);
        let mut new = Event::now(Kind::TierStarted, "logger", "system");
        new.detail = Some(format!("round {round}"));
        let nanos = new.validate("event", true).unwrap();
        assert_eq!(log.append(vec![(nanos, new)]).await.unwrap(), 1);
        log.close();
    }
}

#[tokio::test]
async fn a_log_of_a_newer_format_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(tmp.path(), retention()).unwrap();
        let mut e = Event::now(Kind::TierStarted, "logger", "system");
        let nanos = e.validate("event", true).unwrap();
        log.append(vec![(nanos, e)]).await.unwrap();
        log.close();
    }
    let stamp = |v: &[u8]| {
        let db = fjall::Database::builder(tmp.path().join("fjall"))
            .open()
            .unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert("format_version", v).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    };
    stamp(&99u64.to_be_bytes());
    let err = EventLog::open(tmp.path(), retention())
        .err()
        .expect("a newer format must be refused");
    assert!(
        matches!(err, OpenError::NewerFormat { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer io360 logger"), "{err}");
    stamp(b"?");
    assert!(matches!(
        EventLog::open(tmp.path(), retention()),
        Err(OpenError::UnreadableFormat { .. })
    ));
    stamp(&2u64.to_be_bytes());
    let log = EventLog::open(tmp.path(), retention()).unwrap();
    assert_eq!(all(&log).await.len(), 1);
}
