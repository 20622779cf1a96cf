//! Imported comments: kept times, states and votes, idempotent on their source ids.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod support;

use io360_common::model::{ChangeKind, Status, Votes};
use io360_store::api::{ExportItem, ImportedComment, ThreadTitle};
use support::engines::{self, Kind, on_both};

fn imported(source: &str, parent: Option<&str>, created: &str, status: Status) -> ImportedComment {
    ImportedComment {
        thread: "/moved/".into(),
        source: source.into(),
        parent_source: parent.map(Into::into),
        author: Some("Ann".into()),
        email: Some("ann@example.org".into()),
        website: None,
        remote: None,
        text: format!("text of {source}"),
        html: format!("<p>text of {source}</p>"),
        created: created.into(),
        modified: None,
        status,
        votes: Votes { up: 3, down: 1 },
        author_key: Some("ann-key".into()),
    }
}

on_both!(imports_keep_their_history_and_a_second_run_adds_nothing);
async fn imports_keep_their_history_and_a_second_run_adds_nothing(kind: Kind) {
    let db = engines::open(kind, 64).await;
    let batch = vec![
        imported("disqus:1", None, "2015-03-01T10:00:00Z", Status::Approved),
        imported(
            "disqus:2",
            Some("disqus:1"),
            "2015-03-02T10:00:00Z",
            Status::Pending,
        ),
        imported(
            "disqus:3",
            Some("disqus:99"),
            "2015-03-03T10:00:00Z",
            Status::Approved,
        ),
        imported("disqus:4", None, "2015-03-04T10:00:00Z", Status::Deleted),
    ];
    let first = db.import(batch.clone()).await.unwrap();
    assert_eq!(first.created, 4);
    assert_eq!(first.skipped, 0);
    assert_eq!(first.orphans, vec!["disqus:3".to_owned()]);

    let again = db.import(batch).await.unwrap();
    assert_eq!(again.created, 0);
    assert_eq!(again.skipped, 4);

    let page = db.page("/moved/".into(), 0, 100).await.unwrap();
    assert_eq!(
        page.head, 4,
        "one change per imported comment, none for the re-run"
    );
    let c = &page.comments;
    assert_eq!(c.len(), 4);
    assert_eq!(c[0].created, "2015-03-01T10:00:00Z");
    assert_eq!(c[0].votes, Votes { up: 3, down: 1 });
    assert_eq!(c[1].parent, Some(c[0].id));
    assert_eq!(c[1].status, Status::Pending);
    assert_eq!(
        c[2].parent, None,
        "a missing parent makes a top-level comment"
    );
    assert_eq!(c[3].status, Status::Deleted);
    assert!(c[3].text.is_empty() && c[3].author.is_none(), "a tombstone");

    let meta = db.meta("/moved/".into()).await.unwrap();
    assert_eq!(meta.count, 2, "approved comments only");
    let queue = db.pending(10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].email.as_deref(), Some("ann@example.org"));
    assert_eq!(
        db.by_source("disqus:2".into()).await.unwrap(),
        Some(c[1].id)
    );
    assert_eq!(db.by_source("disqus:5".into()).await.unwrap(), None);
    assert_eq!(db.author_approved("ann-key".into()).await.unwrap(), 2);

    // The change feed carries them, as it carries posted comments.
    let feed = db.feed(0, 100).await.unwrap();
    assert_eq!(feed.len(), 4);
    assert!(feed.iter().all(|ch| ch.kind == ChangeKind::Created));

    // An erase by author key reaches imported comments.
    db.erase_author("ann-key".into()).await.unwrap();
    let page = db.page("/moved/".into(), 0, 100).await.unwrap();
    assert!(page.comments.iter().all(|c| c.status == Status::Deleted));
    let mut emails = 0;
    db.export_blocking(|item| {
        if let ExportItem::Comment(c) = item {
            emails += usize::from(c.stored.email.is_some());
            assert!(c.source.is_some());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(emails, 0, "an erase leaves no imported email behind");
}

on_both!(the_source_map_survives_a_reopen);
async fn the_source_map_survives_a_reopen(kind: Kind) {
    let db = engines::open(kind, 64).await;
    let one = vec![imported(
        "isso:7",
        None,
        "2020-01-01T00:00:00Z",
        Status::Approved,
    )];
    assert_eq!(db.import(one).await.unwrap().created, 1);
    let db = db.reopen().await;
    let one = vec![imported(
        "isso:7",
        None,
        "2020-01-01T00:00:00Z",
        Status::Approved,
    )];
    let r = db.import(one).await.unwrap();
    assert_eq!((r.created, r.skipped), (0, 1));
}

on_both!(a_remap_moves_threads_with_their_comments_and_history);
async fn a_remap_moves_threads_with_their_comments_and_history(kind: Kind) {
    let db = engines::open(kind, 64).await;
    let mut batch = vec![
        imported("wp:1", None, "2015-03-01T10:00:00Z", Status::Approved),
        imported(
            "wp:2",
            Some("wp:1"),
            "2015-03-02T10:00:00Z",
            Status::Approved,
        ),
    ];
    batch[0].thread = "https://old.example/a/".into();
    batch[1].thread = "https://old.example/a/".into();
    let mut other = imported("wp:3", None, "2015-03-03T10:00:00Z", Status::Approved);
    other.thread = "/b/".into();
    batch.push(other);
    db.import(batch).await.unwrap();

    let dry = db
        .remap("https://old.example/".into(), "/".into(), true)
        .await
        .unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!((dry[0].to.as_str(), dry[0].comments), ("/a/", 2));
    assert_eq!(
        db.page("/a/".into(), 0, 10).await.unwrap().comments.len(),
        0,
        "a dry run changes nothing"
    );

    // A new name a thread already has refuses the whole remap.
    let clash = db
        .remap("/b/".into(), "https://old.example/a/".into(), false)
        .await;
    assert!(
        clash.is_err_and(|e| e.to_string().contains("is a thread already")),
        "a clash refuses"
    );
    assert_eq!(
        db.page("/b/".into(), 0, 10).await.unwrap().comments.len(),
        1
    );
    db.remap("/b/".into(), "/z/".into(), false).await.unwrap();

    db.remap("https://old.example/".into(), "/".into(), false)
        .await
        .unwrap();
    let page = db.page("/a/".into(), 0, 10).await.unwrap();
    assert_eq!(page.head, 2);
    assert_eq!(page.comments.len(), 2);
    assert!(page.comments.iter().all(|c| c.thread == "/a/"));
    assert_eq!(page.comments[1].parent, Some(page.comments[0].id));
    assert_eq!(db.meta("/a/".into()).await.unwrap().count, 2);
    assert_eq!(
        db.meta("https://old.example/a/".into()).await.unwrap().head,
        0
    );
    let changes = db.changes("/a/".into(), 0, 10).await.unwrap();
    assert!(changes.changes.iter().all(|c| c.thread == "/a/"));
    assert_eq!(
        db.page("/z/".into(), 0, 10).await.unwrap().comments.len(),
        1
    );
    // Posting to the moved thread continues its numbering.
    let more = vec![imported(
        "wp:4",
        Some("wp:2"),
        "2015-03-05T10:00:00Z",
        Status::Approved,
    )];
    let mut more = more;
    more[0].thread = "/a/".into();
    db.import(more).await.unwrap();
    let page = db.page("/a/".into(), 0, 10).await.unwrap();
    assert_eq!(page.head, 3);
    assert_eq!(page.comments[2].parent, Some(page.comments[1].id));
}

fn title(thread: &str, title: &str) -> ThreadTitle {
    ThreadTitle {
        thread: thread.into(),
        title: title.into(),
    }
}

/// The threads of an export, with their titles, in the order given.
fn exported_threads(db: &support::engines::Opened) -> Vec<(String, bool, Option<String>)> {
    let mut out = Vec::new();
    db.export_blocking(|item| {
        if let ExportItem::Thread(t) = item {
            out.push((t.thread, t.closed, t.title));
        }
        Ok(())
    })
    .unwrap();
    out
}

on_both!(page_titles_are_kept_replaced_exported_and_moved);
async fn page_titles_are_kept_replaced_exported_and_moved(kind: Kind) {
    let db = engines::open(kind, 64).await;
    db.import(vec![imported(
        "disqus:1",
        None,
        "2015-03-01T10:00:00Z",
        Status::Approved,
    )])
    .await
    .unwrap();
    assert_eq!(db.title("/moved/".into()).await.unwrap(), None);

    // A thread with comments, and a page with none yet: both keep their titles.
    let set = db
        .set_titles(vec![
            title("/moved/", "Café & crème"),
            title("/quiet/", "Nobody wrote here"),
        ])
        .await
        .unwrap();
    assert_eq!(set.changed, 2);
    assert_eq!(
        db.title("/moved/".into()).await.unwrap().as_deref(),
        Some("Café & crème")
    );
    // The same titles again write nothing; a different one replaces the old.
    let again = db
        .set_titles(vec![
            title("/moved/", "Café & crème"),
            title("/quiet/", "Nobody wrote here"),
        ])
        .await
        .unwrap();
    assert_eq!(again.changed, 0, "the same title twice is written once");
    let changed = db
        .set_titles(vec![title("/quiet/", "Still nobody")])
        .await
        .unwrap();
    assert_eq!(changed.changed, 1);
    assert_eq!(
        db.title("/quiet/".into()).await.unwrap().as_deref(),
        Some("Still nobody")
    );
    // The thread's metadata carries its title; a page nobody wrote on has it too.
    let meta = db.meta("/moved/".into()).await.unwrap();
    assert_eq!(meta.title.as_deref(), Some("Café & crème"));
    assert_eq!(
        db.meta("/quiet/".into()).await.unwrap().title.as_deref(),
        Some("Still nobody")
    );
    assert_eq!(db.meta("/nowhere/".into()).await.unwrap().title, None);
    // Titles are no change of a thread: its numbering and the feed are untouched.
    assert_eq!(meta.head, 1);
    assert_eq!(db.feed(0, 100).await.unwrap().len(), 1);

    // Titles break the rules as a batch: nothing of it is kept.
    for bad in [
        title("/moved/", "   "),
        title(
            "/moved/",
            &"x".repeat(io360_store::api::MAX_TITLE_BYTES + 1),
        ),
        title("/moved/", "two\nlines"),
        title("", "no thread"),
    ] {
        let r = db
            .set_titles(vec![title("/other/", "fine"), bad.clone()])
            .await;
        assert!(
            matches!(r, Err(io360_store::StoreError::Invalid(_))),
            "{bad:?} is refused: {r:?}"
        );
    }
    assert_eq!(db.title("/other/".into()).await.unwrap(), None);

    // The export carries them: threads first, then pages known only by their title.
    assert_eq!(
        exported_threads(&db),
        vec![
            ("/moved/".into(), false, Some("Café & crème".into())),
            ("/quiet/".into(), false, Some("Still nobody".into())),
        ]
    );

    // They survive a restart, and a remap moves them with their threads.
    let db = db.reopen().await;
    let dry = db.remap("/".into(), "/blog/".into(), true).await.unwrap();
    let listed: Vec<(&str, &str, u64, Option<&str>)> = dry
        .iter()
        .map(|r| {
            (
                r.from.as_str(),
                r.to.as_str(),
                r.comments,
                r.title.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("/moved/", "/blog/moved/", 1, Some("Café & crème")),
            ("/quiet/", "/blog/quiet/", 0, Some("Still nobody")),
        ]
    );
    assert_eq!(
        db.title("/moved/".into()).await.unwrap().as_deref(),
        Some("Café & crème"),
        "a dry run moves nothing"
    );
    db.remap("/".into(), "/blog/".into(), false).await.unwrap();
    assert_eq!(db.title("/moved/".into()).await.unwrap(), None);
    assert_eq!(db.title("/quiet/".into()).await.unwrap(), None);
    assert_eq!(
        db.title("/blog/moved/".into()).await.unwrap().as_deref(),
        Some("Café & crème")
    );
    assert_eq!(
        exported_threads(&db),
        vec![
            ("/blog/moved/".into(), false, Some("Café & crème".into())),
            ("/blog/quiet/".into(), false, Some("Still nobody".into())),
        ]
    );
}
