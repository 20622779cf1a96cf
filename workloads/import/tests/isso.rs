//! Isso's real database: Isso 0.14 itself (installed from PyPI by
//! `tests/import/isso-fixture.sh`) takes a nested thread, votes, an edit and deletions through
//! its own API; io360 reads what Isso wrote.

use std::path::Path;
use std::process::Command;

use io360_import::{Body, Format, Record, State, read_path};

#[test]
fn a_database_isso_wrote_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let made = Command::new("bash")
        .arg(repo.join("tests/import/isso-fixture.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "isso-fixture.sh failed: {}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let db = dir.path().join("comments.db");
    let records: Vec<Record> = read_path(Format::Isso, &db)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let threads: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Thread(t) => Some((t.source_id.as_str(), t.name(), t.title.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        threads,
        [
            ("1", "/posts/a/".to_owned(), Some("Post A".to_owned())),
            ("2", "/posts/b/".to_owned(), Some("Post B".to_owned()))
        ]
    );
    let comments: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Comment(c) => Some(c),
            _ => None,
        })
        .collect();
    // Bob's comment had no reply left (Isso keeps one level of nesting) and is gone.
    assert_eq!(
        comments
            .iter()
            .map(|c| c.source_id.as_str())
            .collect::<Vec<_>>(),
        ["1", "3", "4", "5"]
    );
    let ann = comments[0];
    assert_eq!(ann.body, Body::Markdown("First **comment**, edited".into()));
    assert_eq!(ann.author.as_deref(), Some("Ann"));
    assert_eq!(ann.email.as_deref(), Some("ann@example.org"));
    assert_eq!(ann.website.as_deref(), Some("https://ann.example.org"));
    assert_eq!((ann.likes, ann.dislikes), (3, 1));
    assert!(ann.modified.is_some_and(|m| m > ann.created));
    assert_eq!(
        ann.remote.as_deref(),
        Some("192.0.2.0"),
        "Isso keeps a truncated address"
    );
    assert_eq!(comments[1].parent.as_deref(), Some("1"));
    assert_eq!(comments[1].author, None);
    // Zoë's comment has a reply: its place stays, deleted.
    assert_eq!(comments[2].state, State::Deleted);
    assert_eq!(comments[3].parent.as_deref(), Some("4"));
    assert_eq!(comments[3].state, State::Approved);
    assert_eq!(comments[3].body, Body::Markdown("Answering Zoë".into()));
}
