//! Upgrades keep data: a data directory written by an earlier version opens with everything
//! in it, and one written by a newer version is refused, untouched.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::path::{Path, PathBuf};

use io360_common::model::{ChangeKind, Status};
use io360_store::api::{NewComment, WriteOp};
use io360_store::{Db, OpenError};

/// Unpacks a fixture tarball (made by `tests/data/make-format-1.sh`) into `into`.
fn unpack(fixture: &str, into: &Path) -> PathBuf {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(fixture);
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(into)
        .status()
        .expect("running tar");
    assert!(status.success(), "unpacking {}", tarball.display());
    into.join("store")
}

fn comment(text: &str) -> NewComment {
    NewComment {
        parent: None,
        author: Some("Dan".into()),
        email: None,
        website: None,
        text: text.into(),
        html: format!("<p>{text}</p>"),
        status: Status::Approved,
        remote: None,
        author_key: Some("dan".into()),
    }
}

#[tokio::test]
async fn a_directory_of_the_first_format_opens_with_everything_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpack("format-1.tar.gz", tmp.path());
    for round in 0..2 {
        // The second round reads the directory as this version left it (stamped).
        let db = Db::open(&dir, 64).unwrap();
        let page = db.page("/posts/hello/".into(), 0, 100).await.unwrap();
        assert_eq!((page.head, page.closed), (8 + round, false), "{page:?}");
        let texts: Vec<_> = page.comments.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts[..4],
            ["A second thought, edited", "A reply", "Hello *world*", ""],
            "round {round}"
        );
        let first = db.comment(1).await.unwrap().unwrap();
        assert_eq!(first.comment.status, Status::Approved);
        assert_eq!(first.comment.html, "<p>Hello <em>world</em></p>\n");
        assert_eq!(first.comment.votes.up, 1);
        assert_eq!(first.email.as_deref(), Some("ann@example.org"));
        assert_eq!(
            first.comment.website.as_deref(),
            Some("https://ann.example.org")
        );
        assert!(first.author_key.is_some());
        let edited = db.comment(2).await.unwrap().unwrap();
        assert!(edited.comment.modified.is_some());
        assert_eq!(
            db.comment(3).await.unwrap().unwrap().comment.parent,
            Some(1)
        );
        let gone = db.comment(4).await.unwrap().unwrap();
        assert_eq!((gone.comment.status, gone.email), (Status::Deleted, None));
        // Bob waits for a moderator; Carol was erased.
        let pending = db.pending(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].comment.text, "Bob waits");
        let carol = db.comment(6).await.unwrap().unwrap();
        assert_eq!(carol.comment.status, Status::Deleted);
        assert!(!carol.comment.has_content() && carol.author_key.is_none());
        assert!(db.meta("/posts/closed".into()).await.unwrap().closed);
        assert!(!db.meta("/posts/other".into()).await.unwrap().closed);
        assert_eq!(
            db.meta("/posts/hello/".into()).await.unwrap().count,
            3 + round
        );
        let sus = db.suspension().await.unwrap();
        assert!(sus.suspended);
        assert_eq!(sus.reason.as_deref(), Some("kept in the fixture"));
        let bans = db.bans().await.unwrap();
        assert_eq!(bans.authors.len(), 1);
        assert_eq!(bans.ranges[0].cidr, "203.0.113.0/24");
        assert_eq!(
            db.author_approved(first.author_key.clone().unwrap())
                .await
                .unwrap(),
            4,
            "Ann's four approved comments, the deleted one included"
        );
        // The feed reads whole, in order, with Carol's words scrubbed from it.
        let feed = db.feed(0, 1000).await.unwrap();
        let positions: Vec<u64> = feed.iter().map(|c| c.pos).collect();
        assert_eq!(positions, (1..=15 + round).collect::<Vec<_>>());
        assert_eq!(feed[0].kind, ChangeKind::Created);
        for ch in &feed {
            if let Some(c) = &ch.comment
                && c.id == 6
            {
                assert!(!c.has_content(), "{ch:?}");
            }
        }
        // Writing goes on where the old version stopped.
        let next = db
            .write(WriteOp::Append {
                thread: "/posts/hello/".into(),
                comment: comment(&format!("after the upgrade {round}")),
                idempotency: None,
            })
            .await
            .unwrap()
            .change;
        assert_eq!((next.pos, next.seq), (16 + round, 9 + round));
        assert_eq!(next.comment.unwrap().id, 7 + round);
    }
}

/// Sets the directory's format marker, as a newer version (or damage) would.
fn set_marker(dir: &Path, marker: &[u8]) {
    let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    meta.insert("format_version", marker).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test]
async fn a_directory_of_a_newer_format_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Db::open(tmp.path(), 64).unwrap();
        db.write(WriteOp::Append {
            thread: "/t".into(),
            comment: comment("kept"),
            idempotency: None,
        })
        .await
        .unwrap();
    }
    set_marker(tmp.path(), &2u64.to_be_bytes());
    let err = Db::open(tmp.path(), 64)
        .err()
        .expect("a newer format must be refused");
    assert!(
        matches!(
            err,
            OpenError::NewerFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("format 2") && msg.contains("newer io360 store"),
        "{msg}"
    );
    // Nothing was rewritten: put the marker back and the comment is still there.
    set_marker(tmp.path(), &1u64.to_be_bytes());
    let db = Db::open(tmp.path(), 64).unwrap();
    let page = db.page("/t".into(), 0, 10).await.unwrap();
    assert_eq!(page.comments[0].text, "kept");
}

#[tokio::test]
async fn a_damaged_format_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Db::open(tmp.path(), 64).unwrap());
    set_marker(tmp.path(), b"v1");
    let err = Db::open(tmp.path(), 64).err().expect("refused");
    assert!(matches!(err, OpenError::UnreadableFormat { .. }), "{err:?}");
}
