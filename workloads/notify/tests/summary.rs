//! The moderators' summary in the notification database: the held set follows the feed, a
//! summary is queued once a period and only when something waits, and reopening the database
//! (a restart) neither repeats nor skips one.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use io360_common::model::{Change, ChangeKind, Comment, Status, Votes};
use io360_notify::Outbox;
use io360_notify::outbox::Item;

fn change(pos: u64, id: u64, kind: ChangeKind, status: Status) -> Change {
    Change {
        pos,
        thread: "/t".into(),
        seq: pos,
        kind,
        comment: Some(Comment {
            id,
            thread: "/t".into(),
            seq: pos,
            parent: None,
            author: None,
            website: None,
            text: format!("comment {id}"),
            html: String::new(),
            created: "2026-01-01T00:00:00Z".into(),
            modified: None,
            status,
            votes: Votes::default(),
        }),
    }
}

fn summaries(o: &Outbox) -> Vec<(usize, Vec<u64>)> {
    o.rows_of("mod@x.org")
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.item {
            Item::Summary(s) => Some((s.count, s.comments.iter().map(|h| h.comment).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn one_summary_a_period_of_what_waits_and_none_when_nothing_does() {
    let dir = tempfile::tempdir().unwrap();
    let mods = ["mod@x.org".to_owned()];
    let o = Outbox::open(dir.path()).unwrap();
    // The first call starts the first period.
    assert_eq!(o.queue_summary(&mods, 1000, 100, 2).unwrap(), None);
    // Nothing waits when it falls due: nothing queued, the next period starts.
    assert_eq!(o.queue_summary(&mods, 1100, 100, 2).unwrap(), Some(0));
    for (pos, id) in [(1, 11), (2, 12), (3, 13)] {
        o.apply_all(
            &change(pos, id, ChangeKind::Created, Status::Pending),
            1100,
            &[],
        )
        .unwrap();
    }
    o.apply_all(
        &change(4, 12, ChangeKind::Approved, Status::Approved),
        1100,
        &[],
    )
    .unwrap();
    assert_eq!(
        o.queue_summary(&mods, 1150, 100, 2).unwrap(),
        None,
        "not due"
    );
    assert_eq!(o.queue_summary(&mods, 1200, 100, 2).unwrap(), Some(1));
    assert_eq!(summaries(&o), [(2, vec![11, 13])]);
    drop(o);

    // Reopened (a restart) just after: the period is kept, nothing twice.
    let o = Outbox::open(dir.path()).unwrap();
    assert_eq!(o.queue_summary(&mods, 1201, 100, 2).unwrap(), None);
    assert_eq!(o.summary_due_in(1201, 100).unwrap(), 99);
    o.apply_all(
        &change(5, 11, ChangeKind::Deleted, Status::Deleted),
        1250,
        &[],
    )
    .unwrap();
    assert_eq!(o.queue_summary(&mods, 1300, 100, 1).unwrap(), Some(1));
    assert_eq!(summaries(&o).len(), 2);
    assert!(summaries(&o).contains(&(1, vec![13])));
}
