//! Each format read from a file written by the generator (the formats' documented structure,
//! with their awkward parts), and each kind of bad input refused with the place and the reason.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::io::Write;
use std::path::{Path, PathBuf};

use io360_import::generate::{self, MISSING_PARENT, comment_id};
use io360_import::{Body, Comment, Format, ImportError, Record, State, Thread, read_path};

type Writer = fn(&mut std::fs::File, usize, usize) -> std::io::Result<()>;

fn file(dir: &tempfile::TempDir, name: &str, write: Writer, threads: usize, per: usize) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    write(&mut f, threads, per).unwrap();
    f.flush().unwrap();
    path
}

fn all(format: Format, path: &Path) -> (Vec<Thread>, Vec<Comment>) {
    let (mut threads, mut comments) = (Vec::new(), Vec::new());
    for r in read_path(format, path).unwrap() {
        match r.unwrap() {
            Record::Thread(t) => {
                // Every comment comes after its thread.
                threads.push(t);
            }
            Record::Comment(c) => {
                assert!(
                    threads.iter().any(|t| t.source_id == c.thread),
                    "{c:?} before its thread"
                );
                comments.push(c);
            }
        }
    }
    (threads, comments)
}

fn find<'a>(comments: &'a [Comment], id: &str) -> &'a Comment {
    comments
        .iter()
        .find(|c| c.source_id == id)
        .unwrap_or_else(|| panic!("no comment {id}"))
}

fn html(c: &Comment) -> &str {
    match &c.body {
        Body::Html(h) => h,
        Body::Markdown(m) => m,
        Body::Rendered { html, .. } => html,
    }
}

#[test]
fn disqus_threads_posts_and_their_awkward_parts() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "disqus.xml", generate::disqus, 3, 10);
    let (threads, comments) = all(Format::Disqus, &path);
    assert_eq!(threads.len(), 3);
    assert_eq!(threads[0].name(), "/posts/0/");
    assert_eq!(threads[0].title.as_deref(), Some("Café & post 0"));
    assert!(threads[1].closed && !threads[0].closed);
    // 30 posts, and in each thread one of them twice: the reader passes duplicates on;
    // writing keeps one.
    assert_eq!(comments.len(), 33);
    let first = find(&comments, &comment_id(0, 0).to_string());
    // CDATA kept as HTML, the `]]>` inside it whole, the entities for the sanitizer to read.
    assert_eq!(html(first), generate::message_html(0, 0));
    assert!(html(first).contains("a]]>b"));
    assert_eq!(first.author.as_deref(), Some("Reader <0>"));
    assert_eq!(first.email.as_deref(), Some("reader0@example.org"));
    assert_eq!(first.created.unix_timestamp(), 1_577_836_800);
    let reply = find(&comments, &comment_id(0, 1).to_string());
    assert_eq!(reply.parent, Some(comment_id(0, 0).to_string()));
    let orphan = find(&comments, &comment_id(0, 2).to_string());
    assert_eq!(orphan.parent, Some(MISSING_PARENT.to_string()));
    assert_eq!(
        find(&comments, &comment_id(0, 4).to_string()).state,
        State::Deleted
    );
    assert_eq!(
        find(&comments, &comment_id(0, 5).to_string()).state,
        State::Spam
    );
    let anonymous = find(&comments, &comment_id(0, 6).to_string());
    assert_eq!(
        (anonymous.author.as_deref(), anonymous.email.as_deref()),
        (None, None)
    );
    assert_eq!(find(&comments, &comment_id(2, 9).to_string()).thread, "3");
}

#[test]
fn wordpress_posts_comments_states_and_no_pingbacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "wp.xml", generate::wordpress, 2, 10);
    let (threads, comments) = all(Format::Wordpress, &path);
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[1].source_id, "101");
    assert_eq!(threads[1].name(), "/1/hello/");
    assert_eq!(threads[0].title.as_deref(), Some("Café & post 0"));
    assert!(threads[1].closed);
    assert_eq!(comments.len(), 20, "pingbacks are not comments");
    let first = find(&comments, &comment_id(1, 0).to_string());
    // The GMT time wins over the local one written beside it.
    assert_eq!(first.created.unix_timestamp(), 1_577_836_800 + 86_400);
    assert_eq!(
        first.website.as_deref(),
        Some("https://reader0.example.org/")
    );
    assert_eq!(first.remote.as_deref(), Some("2001:db8::0"));
    assert_eq!(
        find(&comments, &comment_id(1, 1).to_string()).parent,
        Some(comment_id(1, 0).to_string())
    );
    assert_eq!(find(&comments, &comment_id(1, 3).to_string()).parent, None);
    assert_eq!(
        find(&comments, &comment_id(1, 4).to_string()).state,
        State::Deleted
    );
    assert_eq!(
        find(&comments, &comment_id(1, 5).to_string()).state,
        State::Spam
    );
    assert_eq!(
        find(&comments, &comment_id(1, 8).to_string()).state,
        State::Pending
    );
    assert_eq!(find(&comments, &comment_id(1, 6).to_string()).author, None);
}

#[test]
fn remark42_lines_votes_zones_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "remark42.json", generate::remark42, 2, 8);
    let (threads, comments) = all(Format::Remark42, &path);
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[0].name(), "/r/0");
    assert_eq!(threads[0].title.as_deref(), Some("Post 0 & more"));
    assert_eq!(comments.len(), 16);
    let c0 = find(&comments, &comment_id(0, 0).to_string());
    assert_eq!(
        c0.body,
        Body::Markdown("comment 0 of thread 0, *in Markdown*".into())
    );
    // Written at +02:00, read as the same instant.
    assert_eq!(c0.created.unix_timestamp(), 1_577_836_800);
    let c3 = find(&comments, &comment_id(0, 3).to_string());
    assert_eq!((c3.likes, c3.dislikes), (2, 1));
    assert!(matches!(&c3.body, Body::Html(h) if h.contains("<script>")));
    assert_eq!(
        find(&comments, &comment_id(0, 4).to_string()).state,
        State::Deleted
    );
    assert_eq!(find(&comments, &comment_id(0, 6).to_string()).author, None);
}

#[test]
fn commento_comments_grouped_by_page_with_their_commenters() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "commento.json", generate::commento, 2, 9);
    let (threads, comments) = all(Format::Commento, &path);
    assert_eq!(
        threads.iter().map(|t| t.name()).collect::<Vec<_>>(),
        ["/c/0/", "/c/1/"]
    );
    assert_eq!(comments.len(), 18);
    let c0 = find(&comments, &format!("{:064x}", comment_id(0, 0)));
    assert_eq!(c0.author.as_deref(), Some("Reader 0"));
    assert_eq!(c0.email.as_deref(), Some("reader0@example.org"));
    assert_eq!((c0.likes, c0.dislikes), (0, 3));
    let c1 = find(&comments, &format!("{:064x}", comment_id(0, 1)));
    assert_eq!(c1.parent, Some(format!("{:064x}", comment_id(0, 0))));
    assert_eq!(
        find(&comments, &format!("{:064x}", comment_id(0, 5))).state,
        State::Spam
    );
    assert_eq!(
        find(&comments, &format!("{:064x}", comment_id(0, 8))).state,
        State::Pending
    );
    assert_eq!(
        find(&comments, &format!("{:064x}", comment_id(0, 6))).author,
        None
    );
}

/// The records before an error, and the error.
fn until_error(format: Format, path: &Path) -> (usize, ImportError) {
    let mut n = 0;
    for r in read_path(format, path).unwrap() {
        match r {
            Ok(_) => n += 1,
            Err(e) => return (n, e),
        }
    }
    panic!("{format} read {path:?} to the end without an error");
}

#[test]
fn a_truncated_file_stops_with_its_line_and_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    for (format, write) in [
        (Format::Disqus, generate::disqus as Writer),
        (Format::Wordpress, generate::wordpress as Writer),
        (Format::Remark42, generate::remark42 as Writer),
        (Format::Commento, generate::commento as Writer),
    ] {
        let whole = file(&dir, "whole", write, 4, 10);
        let bytes = std::fs::read(&whole).unwrap();
        let cut = dir.path().join(format!("{format}-cut"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let (n, e) = until_error(format, &cut);
        assert_eq!(e.format, format);
        assert!(
            e.to_string().contains("truncated") || e.to_string().contains("malformed"),
            "{e}"
        );
        assert!(e.at.starts_with("line "), "{e}");
        // Streaming formats hand over what came before the cut; Commento's single document
        // has nothing whole before its end.
        if format != Format::Commento {
            assert!(n > 10, "{format}: {n} records before {e}");
            assert_eq!(e.read, n as u64);
        }
    }
}

#[test]
fn malformed_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        r#"<?xml version="1.0"?>
<disqus xmlns:dsq="http://disqus.com/disqus-internals">
<thread dsq:id="1"><link>https://example.org/a</link></thread>
<post dsq:id="5"><message>hi</message><createdAt>last tuesday</createdAt><thread dsq:id="1"/></post>
</disqus>
"#,
    )
    .unwrap();
    let (n, e) = until_error(Format::Disqus, &bad);
    assert_eq!(n, 1);
    assert_eq!(e.at, "line 4", "the post's line");
    assert!(
        e.message.contains("post 5") && e.message.contains("RFC 3339"),
        "{e}"
    );

    std::fs::write(
        &bad,
        r#"<disqus xmlns:dsq="x"><thread dsq:id="1"><link>/a</link></thread><post dsq:id="5"><createdAt>2020-01-01T00:00:00Z</createdAt><thread dsq:id="9"/></post></disqus>"#,
    )
    .unwrap();
    let (_, e) = until_error(Format::Disqus, &bad);
    assert!(e.message.contains("thread 9"), "{e}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"version\":1,\"users\":[]}\n{\"id\":\"1\",\"locator\":{\"url\":\"/a\"},\"time\":\"2020-01-01T00:00:00Z\"}\nnot json\n").unwrap();
    let (n, e) = until_error(Format::Remark42, &bad);
    assert_eq!((n, e.at.as_str()), (2, "line 3"));
    assert!(e.message.contains("not a JSON document"), "{e}");
}

#[test]
fn a_file_of_another_format_or_an_unknown_one_is_refused_with_what_it_looks_like() {
    let dir = tempfile::tempdir().unwrap();
    let disqus = file(&dir, "export.xml", generate::disqus, 1, 3);
    let Err(e) = read_path(Format::Wordpress, &disqus) else {
        panic!("a Disqus file read as WordPress");
    };
    assert!(
        e.message
            .contains("looks like a disqus export, not wordpress"),
        "{e}"
    );
    let csv = dir.path().join("comments.csv");
    std::fs::write(&csv, "id,author,text\n1,ann,hello\n").unwrap();
    let Err(e) = read_path(Format::Remark42, &csv) else {
        panic!("a CSV file read as Remark42");
    };
    assert!(e.message.contains("not a remark42 export"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    assert!(
        read_path(Format::Commento, &empty)
            .err()
            .unwrap()
            .message
            .contains("is empty")
    );
    let e = "livefyre".parse::<Format>().unwrap_err();
    assert!(
        e.contains("isso, disqus, wordpress, remark42, commento"),
        "{e}"
    );
}
