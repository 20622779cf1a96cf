//! Synthetic exports in each format, written from the formats' documented structure, for
//! io360's import tests and its import benchmark (a Disqus file of any size, streamed).
//!
//! Every file has the awkward parts real exports have: HTML entities and CDATA (with a `]]>`
//! inside a message, split as XML requires), a reply whose parent is not in the file, a
//! comment that appears twice with one id, an author with no name, times in other zones than
//! UTC, and deleted, pending and spam comments. Comment `k` of thread `t` has the source id
//! `t * 1_000_000 + k + 1` and the text `comment k of thread t`; in each thread, comment 1
//! replies to comment 0 and comment 2 replies to a comment that does not exist.

use std::io::{self, Write};

/// The id of comment `k` in thread `t`.
pub fn comment_id(t: usize, k: usize) -> u64 {
    (t * 1_000_000 + k + 1) as u64
}

/// The id given to the missing parent of comment 2 in every thread.
pub const MISSING_PARENT: u64 = 999_999_999;

/// Seconds after 2020-01-01T00:00:00Z of comment `k` in thread `t`.
fn secs(t: usize, k: usize) -> u64 {
    1_577_836_800 + (t as u64) * 86_400 + (k as u64) * 60
}

fn utc(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The same instant written in UTC+02:00.
fn plus_two(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64 + 7200)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+02:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn parent_of(t: usize, k: usize) -> Option<u64> {
    match k {
        1 => Some(comment_id(t, 0)),
        2 => Some(MISSING_PARENT),
        _ => None,
    }
}

/// What comment `k` says, as HTML: entities, a `]]>` and a script for the sanitizer.
pub fn message_html(t: usize, k: usize) -> String {
    match k {
        0 => format!("<p>comment {k} of thread {t}: caf&eacute; &amp; cr&#232;me, a]]>b</p>"),
        3 => format!("<p>comment {k} of thread {t}</p><script>alert(1)</script>"),
        _ => format!("<p>comment {k} of thread {t}</p>"),
    }
}

/// CDATA holding `s`, split where `s` has `]]>`.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// A Disqus export of `threads` threads of `per_thread` comments each.
pub fn disqus(w: &mut impl Write, threads: usize, per_thread: usize) -> io::Result<()> {
    writeln!(w, r#"<?xml version="1.0" encoding="utf-8"?>"#)?;
    writeln!(
        w,
        r#"<disqus xmlns="http://disqus.com" xmlns:dsq="http://disqus.com/disqus-internals" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#
    )?;
    writeln!(
        w,
        r#"  <category dsq:id="1"><forum>example</forum><title>General</title><isDefault>true</isDefault></category>"#
    )?;
    for t in 0..threads {
        writeln!(
            w,
            r#"  <thread dsq:id="{}"><id>post-{t}</id><forum>example</forum><category dsq:id="1"/><link>https://example.org/posts/{t}/?utm_source=x#comments</link><title>Caf&#233; &amp; post {t}</title><message/><createdAt>{}</createdAt><author><name>Site</name><isAnonymous>false</isAnonymous></author><isClosed>{}</isClosed><isDeleted>false</isDeleted></thread>"#,
            t + 1,
            utc(secs(t, 0)),
            t == 1
        )?;
    }
    for t in 0..threads {
        for k in 0..per_thread {
            let id = comment_id(t, k);
            let parent =
                parent_of(t, k).map_or(String::new(), |p| format!(r#"<parent dsq:id="{p}"/>"#));
            let (deleted, spam) = (k == 4, k == 5);
            let author = if k == 6 {
                "<author><email></email><name></name><isAnonymous>true</isAnonymous></author>"
                    .to_owned()
            } else {
                format!(
                    "<author><email>reader{k}@example.org</email><name>Reader &lt;{k}&gt;</name><isAnonymous>false</isAnonymous><username>reader{k}</username></author>"
                )
            };
            let post = format!(
                r#"  <post dsq:id="{id}"><id/><message>{}</message><createdAt>{}</createdAt><isDeleted>{deleted}</isDeleted><isSpam>{spam}</isSpam>{author}<ipAddress>192.0.2.{}</ipAddress><thread dsq:id="{}"/>{parent}</post>"#,
                cdata(&message_html(t, k)),
                utc(secs(t, k)),
                k % 250,
                t + 1
            );
            writeln!(w, "{post}")?;
            // The same post twice, as exports merged from two downloads have it.
            if k == 7 {
                writeln!(w, "{post}")?;
            }
        }
    }
    writeln!(w, "</disqus>")
}

/// A WordPress WXR export of `threads` posts of `per_thread` comments each (and a pingback).
pub fn wordpress(w: &mut impl Write, threads: usize, per_thread: usize) -> io::Result<()> {
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8" ?>"#)?;
    writeln!(
        w,
        r#"<rss version="2.0" xmlns:excerpt="http://wordpress.org/export/1.2/excerpt/" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:wfw="http://wellformedweb.org/CommentAPI/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:wp="http://wordpress.org/export/1.2/">"#
    )?;
    writeln!(
        w,
        "<channel><title>Example</title><link>https://example.org</link><wp:wxr_version>1.2</wp:wxr_version>"
    )?;
    for t in 0..threads {
        writeln!(
            w,
            "<item><title>Caf&#233; &amp; post {t}</title><link>https://example.org/{t}/hello/</link><dc:creator>{}</dc:creator><content:encoded>{}</content:encoded><wp:post_id>{}</wp:post_id><wp:comment_status>{}</wp:comment_status><wp:post_type>post</wp:post_type>",
            cdata("admin"),
            cdata("<p>The post.</p>"),
            t + 100,
            if t == 1 { "closed" } else { "open" }
        )?;
        for k in 0..per_thread {
            let approved = match k {
                4 => "trash",
                5 => "spam",
                8 => "0",
                _ => "1",
            };
            let s = secs(t, k);
            let gmt = utc(s).replace('T', " ").replace('Z', "");
            let local = utc(s + 7200).replace('T', " ").replace('Z', "");
            let author = if k == 6 {
                String::new()
            } else {
                format!("Reader {k}")
            };
            writeln!(
                w,
                "<wp:comment><wp:comment_id>{}</wp:comment_id><wp:comment_author>{}</wp:comment_author><wp:comment_author_email>reader{k}@example.org</wp:comment_author_email><wp:comment_author_url>https://reader{k}.example.org/</wp:comment_author_url><wp:comment_author_IP>2001:db8::{k:x}</wp:comment_author_IP><wp:comment_date>{local}</wp:comment_date><wp:comment_date_gmt>{gmt}</wp:comment_date_gmt><wp:comment_content>{}</wp:comment_content><wp:comment_approved>{approved}</wp:comment_approved><wp:comment_type>comment</wp:comment_type><wp:comment_parent>{}</wp:comment_parent><wp:comment_user_id>0</wp:comment_user_id></wp:comment>",
                comment_id(t, k),
                cdata(&author),
                cdata(&message_html(t, k)),
                parent_of(t, k).unwrap_or(0)
            )?;
        }
        writeln!(
            w,
            "<wp:comment><wp:comment_id>{}</wp:comment_id><wp:comment_author>Other blog</wp:comment_author><wp:comment_date_gmt>2020-01-01 00:00:00</wp:comment_date_gmt><wp:comment_content>pingback</wp:comment_content><wp:comment_approved>1</wp:comment_approved><wp:comment_type>pingback</wp:comment_type><wp:comment_parent>0</wp:comment_parent></wp:comment>",
            comment_id(t, per_thread) + 500_000
        )?;
        writeln!(w, "</item>")?;
    }
    writeln!(w, "</channel></rss>")
}

/// A Remark42 backup: a header line, then one comment per line.
pub fn remark42(w: &mut impl Write, threads: usize, per_thread: usize) -> io::Result<()> {
    let posts: Vec<serde_json::Value> = (0..threads)
        .map(|t| serde_json::json!({ "url": format!("https://example.org/r/{t}"), "count": per_thread }))
        .collect();
    writeln!(
        w,
        "{}",
        serde_json::json!({ "version": 1, "users": [], "posts": posts })
    )?;
    for t in 0..threads {
        for k in 0..per_thread {
            let mut votes = serde_json::Map::new();
            for v in 0..(k % 4) {
                votes.insert(format!("user{v}"), serde_json::Value::Bool(v != 2));
            }
            let c = serde_json::json!({
                "id": comment_id(t, k).to_string(),
                "pid": parent_of(t, k).map_or(String::new(), |p| p.to_string()),
                "text": message_html(t, k),
                "orig": if k % 2 == 0 { format!("comment {k} of thread {t}, *in Markdown*") } else { String::new() },
                "user": { "name": if k == 6 { String::new() } else { format!("Reader {k}") }, "id": format!("github_{k}"), "ip": "8f14e45fceea167a5a36dedd4bea2543", "admin": false },
                "locator": { "site": "example", "url": format!("https://example.org/r/{t}") },
                "score": 0,
                "votes": votes,
                "time": plus_two(secs(t, k)),
                "delete": k == 4,
                "title": format!("Post {t} & more"),
            });
            writeln!(w, "{c}")?;
        }
    }
    Ok(())
}

/// A Commento export (one JSON document, commenters after comments).
pub fn commento(w: &mut impl Write, threads: usize, per_thread: usize) -> io::Result<()> {
    let mut comments = Vec::new();
    for t in 0..threads {
        for k in 0..per_thread {
            comments.push(serde_json::json!({
                "commentHex": format!("{:064x}", comment_id(t, k)),
                "domain": "example.org",
                "path": format!("/c/{t}/"),
                "commenterHex": if k == 6 { "anonymous".to_owned() } else { format!("{:064x}", k + 1) },
                "markdown": format!("comment {k} of thread {t}, **bold**"),
                "html": message_html(t, k),
                "parentHex": parent_of(t, k).map_or("root".to_owned(), |p| format!("{p:064x}")),
                "score": k as i64 - 3,
                "state": match k { 5 => "flagged", 8 => "unapproved", _ => "approved" },
                "creationDate": plus_two(secs(t, k)),
                "direction": 0,
                "deleted": k == 4,
            }));
        }
    }
    let commenters: Vec<serde_json::Value> = (0..per_thread)
        .filter(|k| *k != 6)
        .map(|k| {
            serde_json::json!({
                "commenterHex": format!("{:064x}", k + 1),
                "email": format!("reader{k}@example.org"),
                "name": format!("Reader {k}"),
                "link": format!("https://reader{k}.example.org"),
                "photo": "undefined",
                "provider": "commento",
                "joinDate": "2019-06-01T00:00:00Z",
                "isModerator": false,
            })
        })
        .collect();
    writeln!(
        w,
        "{}",
        serde_json::json!({ "version": 1, "comments": comments, "commenters": commenters })
    )
}
