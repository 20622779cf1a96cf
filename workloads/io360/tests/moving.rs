//! Moving in and out with the real binary: `io360 import` of each format's files (generated
//! from the formats' documented structure, and a real Isso database), then `io360 up` on the
//! data directory shows them through the API; `io360 export` round-trips through
//! `io360 import --from io360`.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use io360_import::generate;
use serde_json::Value;

fn io360(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("IO360_ADMIN_TOKEN")
        .env_remove("IO360_SIGNING_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs an import that must succeed; answers its summary line.
fn import(format: &str, file: &Path, data: &Path) -> String {
    let o = io360(&["import", "--from", format, file.to_str().unwrap()], data);
    assert!(o.status.success(), "import failed: {}", text(&o));
    text(&o)
}

fn write(
    dir: &Path,
    name: &str,
    f: fn(&mut Vec<u8>, usize, usize) -> std::io::Result<()>,
) -> PathBuf {
    let mut buf = Vec::new();
    f(&mut buf, 3, 10).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, buf).unwrap();
    path
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn up(data: &Path) -> (Up, String) {
    up_with(data, &[]).await
}

async fn up_with(data: &Path, env: &[(&str, &str)]) -> (Up, String) {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", &addr, "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .env_remove("IO360_ADMIN_TOKEN")
        .env_remove("IO360_SIGNING_KEY")
        .env("IO360_NO_RATE_LIMITS", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Up(child);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/api/v1/status")).send().await
            && r.status().is_success()
        {
            return (guard, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("io360 up never answered");
}

async fn list(base: &str, thread: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/comments"))
        .query(&[("thread", thread), ("limit", "100")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An admin GET answered as JSON.
async fn admin_get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Export lines without the fields an import renumbers (documented in docs/CONTRACTS.md),
/// sorted.
fn comparable(export: &[u8]) -> (String, Vec<String>) {
    let mut lines = std::str::from_utf8(export).unwrap().lines();
    let header = lines.next().unwrap().to_owned();
    let mut rest: Vec<String> = lines
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            for k in ["id", "parent", "seq"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v.to_string()
        })
        .collect();
    rest.sort();
    (header, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disqus_import_shows_through_up_with_its_nesting_order_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "disqus.xml", generate::disqus);
    let data = dir.path().join("data");
    let first = import("disqus", &file, &data);
    // Each thread has one comment twice in the file: written once.
    assert!(
        first.contains("33 comments, 30 imported, 3 already imported"),
        "{first}"
    );
    assert!(first.contains("3 without their parent"), "{first}");
    let again = import("disqus", &file, &data);
    assert!(again.contains("0 imported, 33 already imported"), "{again}");

    let offline = io360(&["export"], &data);
    assert!(offline.status.success(), "{}", text(&offline));

    let (_up, base) = up(&data).await;
    let page = list(&base, "/posts/0/").await;
    let comments = page["comments"].as_array().unwrap();
    // The spam one (5) is held, so not listed; the deleted one stays as a tombstone.
    let ids: Vec<u64> = comments.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(comments.len(), 9, "{page}");
    let created: Vec<&str> = comments
        .iter()
        .map(|c| c["created"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted, "in time order");
    assert_eq!(created[0], "2020-01-01T00:00:00Z", "the original time");
    assert_eq!(
        comments[1]["parent"].as_u64(),
        Some(ids[0]),
        "a reply keeps its parent"
    );
    assert_eq!(
        comments[2]["parent"],
        Value::Null,
        "a missing parent makes a top-level comment"
    );
    assert!(
        comments[0]["html"]
            .as_str()
            .unwrap()
            .contains("café &amp; crème")
    );
    let html3 = comments[3]["html"].as_str().unwrap();
    assert!(
        html3.contains("comment 3 of thread 0") && !html3.contains("script"),
        "{html3}"
    );
    assert_eq!(comments[4]["status"], "deleted");
    assert_eq!(comments[4]["html"], "");
    // Thread 1 was closed in Disqus.
    let closed = list(&base, "/posts/1/").await;
    assert_eq!(closed["closed"], true, "{closed}");

    // The moderation queue has the spam.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let http = reqwest::Client::new();
    let queue: Value = admin_get(&http, &format!("{base}/api/v1/admin/queue"), token.trim()).await;
    let held = queue.to_string();
    assert!(held.contains("comment 5 of thread 0"), "{held}");

    // The admin export streams what `io360 export` wrote offline, byte for byte.
    let url = format!("{base}/api/v1/admin/export");
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let online = http
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(online.status(), 200);
    let online = online.bytes().await.unwrap();
    assert_eq!(
        std::str::from_utf8(&online).unwrap(),
        std::str::from_utf8(&offline.stdout).unwrap()
    );

    // An old link's source id leads to its io360 comment.
    let found: Value = http
        .get(format!("{base}/api/v1/admin/sources"))
        .query(&[("source", "disqus:2")])
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["comment"]["id"].as_u64(), Some(ids[1]), "{found}");
    assert_eq!(found["comment"]["thread"], "/posts/0/");
    let unknown = http
        .get(format!("{base}/api/v1/admin/sources"))
        .query(&[("source", "disqus:424242")])
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // An erase by email reaches imported comments: the key was derived with the site's key.
    let erased = http
        .post(format!("{base}/api/v1/admin/authors/erase"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({ "email": "Reader1@example.org" }))
        .send()
        .await
        .unwrap();
    assert!(
        erased.status().is_success(),
        "{}",
        erased.text().await.unwrap()
    );
    let page = list(&base, "/posts/0/").await;
    let reply = page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == ids[1])
        .unwrap();
    assert_eq!(reply["status"], "deleted", "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_imports_once_and_round_trips_through_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = [
        (
            "wordpress",
            write(dir.path(), "wp.xml", generate::wordpress),
        ),
        (
            "remark42",
            write(dir.path(), "remark42.json", generate::remark42),
        ),
        (
            "commento",
            write(dir.path(), "commento.json", generate::commento),
        ),
    ];
    for (format, file) in &files {
        let out = import(format, file, &data);
        assert!(!out.contains(" 0 imported"), "{format}: {out}");
        let again = import(format, file, &data);
        assert!(again.contains(" 0 imported"), "{format} twice: {again}");
    }
    let first = io360(&["export"], &data);
    assert!(first.status.success(), "{}", text(&first));
    let path = dir.path().join("site.ndjson");
    std::fs::write(&path, &first.stdout).unwrap();

    let data2 = dir.path().join("data2");
    import("io360", &path, &data2);
    let second = io360(&["export"], &data2);
    assert!(second.status.success(), "{}", text(&second));
    let (a, b) = (comparable(&first.stdout), comparable(&second.stdout));
    assert!(a.1.len() > 60, "{} lines", a.1.len());
    // Page titles come along: WordPress's post titles and Remark42's (Commento's export has
    // none), entities decoded.
    let titled =
        a.1.iter()
            .filter(|l| l.contains(r#""type":"thread""#) && l.contains(r#""title":"#))
            .count();
    assert_eq!(titled, 6, "{:#?}", a.1);
    assert!(
        a.1.iter().any(|l| l.contains(r#""title":"Café & post 0""#)),
        "{:#?}",
        a.1
    );
    assert_eq!(a, b, "the round trip lost or changed something");
    // Importing the export into the directory it came from adds nothing.
    let same = import("io360", &path, &data);
    assert!(same.contains(" 0 imported"), "{same}");
}

#[test]
fn a_later_import_with_another_page_title_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = write(dir.path(), "disqus.xml", generate::disqus);
    let out = import("disqus", &file, &data);
    assert!(out.contains("3 page titles kept"), "{out}");
    let again = import("disqus", &file, &data);
    assert!(
        again.contains(" 0 imported") && again.contains("0 page titles kept"),
        "the same file again changes nothing: {again}"
    );
    let xml = std::fs::read_to_string(&file).unwrap();
    let renamed = xml.replace("Caf&#233; &amp; post 1<", "The first\n   post, renamed<");
    assert_ne!(xml, renamed);
    let file2 = dir.path().join("disqus-renamed.xml");
    std::fs::write(&file2, renamed).unwrap();
    let later = import("disqus", &file2, &data);
    assert!(
        later.contains(" 0 imported") && later.contains("1 page titles kept"),
        "{later}"
    );
    let export = io360(&["export"], &data);
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(
        export.contains(r#""thread":"/posts/1/","closed":true,"title":"The first post, renamed""#),
        "the new title, on one line: {export}"
    );
    assert!(
        export.contains(r#""thread":"/posts/0/","closed":false,"title":"Café & post 0""#),
        "{export}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_out_of_time_order_is_numbered_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    generate::remark42(&mut buf, 1, 10).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    let path = dir.path().join("reversed.json");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let data = dir.path().join("data");
    import("remark42", &path, &data);
    let (_up, base) = up(&data).await;
    let page = list(&base, "/r/0").await;
    let comments = page["comments"].as_array().unwrap();
    let created: Vec<&str> = comments
        .iter()
        .map(|c| c["created"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted, "{page}");
    let seqs: Vec<u64> = comments
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The reply found its parent although the file had it first.
    assert_eq!(comments[1]["parent"], comments[0]["id"], "{page}");
}

#[test]
fn bad_input_names_the_place_and_a_fixed_file_continues_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut buf = Vec::new();
    generate::remark42(&mut buf, 2, 10).unwrap();
    let good = String::from_utf8(buf).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[15] = "{\"id\": \"broken".to_owned();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let o = io360(
        &["import", "--from", "remark42", bad.to_str().unwrap()],
        &data,
    );
    assert!(!o.status.success());
    let said = text(&o);
    assert!(
        said.contains("line 16") && said.contains("records read before it"),
        "{said}"
    );

    // A Disqus file named as WordPress is refused before anything is written.
    let disqus = write(dir.path(), "d.xml", generate::disqus);
    let o = io360(
        &["import", "--from", "wordpress", disqus.to_str().unwrap()],
        &data,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("looks like a disqus export"),
        "{}",
        text(&o)
    );

    // An unknown format is named with the ones there are.
    let o = io360(
        &["import", "--from", "livefyre", bad.to_str().unwrap()],
        &data,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("isso, disqus, wordpress, remark42, commento, io360"),
        "{}",
        text(&o)
    );

    let fixed = dir.path().join("fixed.json");
    std::fs::write(&fixed, &good).unwrap();
    let out = import("remark42", &fixed, &data);
    assert!(out.contains("20 comments, 20 imported"), "{out}");
    let again = import("remark42", &fixed, &data);
    assert!(again.contains("0 imported, 20 already imported"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_real_isso_wrote_imports_and_shows() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let made = Command::new("bash")
        .arg(repo.join("tests/import/isso-fixture.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "isso-fixture.sh failed: {}",
        text(&made)
    );
    let data = dir.path().join("data");
    let out = import("isso", &dir.path().join("comments.db"), &data);
    assert!(out.contains("0 already imported"), "{out}");
    assert!(out.contains("2 page titles kept"), "{out}");
    let export = io360(&["export"], &data);
    assert!(export.status.success(), "{}", text(&export));
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(
        export
            .contains(r#"{"type":"thread","thread":"/posts/a/","closed":false,"title":"Post A"}"#),
        "Isso's thread title is kept: {export}"
    );
    let again = import("isso", &dir.path().join("comments.db"), &data);
    assert!(again.contains(" 0 imported"), "{again}");
    let (_up, base) = up(&data).await;
    let page = list(&base, "/posts/a/").await;
    let comments = page["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 2, "{page}");
    let first = &comments[0];
    assert!(
        first["html"]
            .as_str()
            .unwrap()
            .contains("<strong>comment</strong>"),
        "Isso's Markdown rendered as io360 renders it: {first}"
    );
    assert_eq!(first["votes"]["up"], 3, "Isso's votes kept: {first}");
    assert!(
        comments.iter().any(|c| c["parent"] == first["id"]),
        "a reply keeps its parent: {page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remap_lists_then_moves_threads_and_up_shows_them_at_their_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "disqus.xml", generate::disqus);
    let data = dir.path().join("data");
    import("disqus", &file, &data);
    let dry = io360(
        &["remap", "--from", "/posts/", "--to", "/blog/", "--dry-run"],
        &data,
    );
    assert!(dry.status.success(), "{}", text(&dry));
    let said = text(&dry);
    assert!(
        said.contains("/posts/0/ -> /blog/0/ (10 comments): Café & post 0"),
        "the listing names each page by its title: {said}"
    );
    assert!(
        said.contains("would rename 3 threads (30 comments)"),
        "{said}"
    );
    let done = io360(&["remap", "--from", "/posts/", "--to", "/blog/"], &data);
    assert!(done.status.success(), "{}", text(&done));
    let again = io360(&["remap", "--from", "/posts/", "--to", "/blog/"], &data);
    assert!(
        text(&again).contains("renamed 0 threads"),
        "{}",
        text(&again)
    );

    let (_up, base) = up(&data).await;
    let page = list(&base, "/blog/0/").await;
    assert_eq!(page["comments"].as_array().unwrap().len(), 9, "{page}");
    assert_eq!(page["comments"][1]["parent"], page["comments"][0]["id"]);
    assert_eq!(
        list(&base, "/posts/0/").await["comments"],
        serde_json::json!([])
    );
    assert_eq!(list(&base, "/blog/1/").await["closed"], true);
}

/// A problem body's status, type and title.
async fn problem(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(ct, "application/problem+json", "{body}");
    (
        status,
        body["type"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned(),
        body["title"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_imports_into_a_running_site_once_and_refuses_what_it_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = write(dir.path(), "disqus.xml", generate::disqus);
    let bytes = std::fs::read(&file).unwrap();
    let (_up, base) = up_with(&data, &[("IO360_IMPORT_MAX_BYTES", "1048576")]).await;
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = token.trim();
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/admin/import?from=disqus");

    // Without the admin token nothing is read.
    let r = http.post(&url).body(bytes.clone()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 401);

    // The file, streamed from disk as a chunked upload.
    let upload = |path: PathBuf| {
        let url = url.clone();
        async move {
            let f = tokio::fs::File::open(path).await.unwrap();
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("x-io360-actor", "mover")
                .body(reqwest::Body::from(f))
                .send()
                .await
                .unwrap()
        }
    };
    let r = upload(file.clone()).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["comments"], 33, "{first}");
    assert_eq!(first["imported"], 30, "{first}");
    assert_eq!(
        first["skipped"], 3,
        "the same post twice in a thread: {first}"
    );
    assert_eq!(first["orphans"], 3, "{first}");
    assert_eq!(first["closed"], 1, "{first}");
    assert_eq!(first["bytes"], bytes.len(), "{first}");
    let page = list(&base, "/posts/0/").await;
    assert_eq!(page["comments"].as_array().unwrap().len(), 9, "{page}");

    // The thread's metadata, read by an administrator, shows the page title the export had.
    let meta_url = format!("{base}/api/v1/admin/threads?thread=%2Fposts%2F0%2F");
    let meta: Value = admin_get(&http, &meta_url, token).await;
    assert_eq!(meta["thread"], "/posts/0/", "{meta}");
    assert_eq!(meta["title"], "Café & post 0", "{meta}");
    assert_eq!(meta["closed"], false, "{meta}");
    assert!(meta["head"].as_u64().unwrap() >= 9, "{meta}");
    let r = http.get(&meta_url).send().await.unwrap();
    assert_eq!(
        problem(r).await.0,
        401,
        "the metadata needs the admin token"
    );
    let r = http
        .get(format!("{base}/api/v1/admin/threads?thread="))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 400, "an empty thread name is refused");

    // Again: nothing new.
    let r = upload(file.clone()).await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["skipped"], 33, "{again}");
    let page = list(&base, "/posts/0/").await;
    assert_eq!(page["comments"].as_array().unwrap().len(), 9, "{page}");

    // The last import is shown, with who ran it.
    let status: Value = admin_get(&http, &url, token).await;
    assert_eq!(status["import"]["running"], false, "{status}");
    assert_eq!(status["import"]["actor"], "admin:mover", "{status}");
    assert_eq!(status["import"]["summary"]["skipped"], 33, "{status}");

    // A bad line is named, with the records read before it, and nothing of it is written.
    let mut buf = Vec::new();
    generate::remark42(&mut buf, 2, 10).unwrap();
    let good = String::from_utf8(buf).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[15] = "{\"id\": \"broken".to_owned();
    let r = http
        .post(format!("{base}/api/v1/admin/import?from=remark42"))
        .bearer_auth(token)
        .body(lines.join("\n") + "\n")
        .send()
        .await
        .unwrap();
    let (status, kind, title) = problem(r).await;
    assert_eq!((status, kind.as_str()), (400, "import-invalid"), "{title}");
    assert!(
        title.contains("line 16") && title.contains("records read before it"),
        "{title}"
    );
    let page = list(&base, "/r/0").await;
    assert_eq!(page["comments"].as_array().map(Vec::len), Some(0), "{page}");
    // Fixed, it imports.
    let r = http
        .post(format!("{base}/api/v1/admin/import?from=remark42"))
        .bearer_auth(token)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fixed: Value = r.json().await.unwrap();
    assert_eq!(fixed["imported"], 20, "{fixed}");
    let page = list(&base, "/r/0").await;
    assert_eq!(
        page["comments"].as_array().map(Vec::len),
        Some(10),
        "{page}"
    );

    // A file of another format than named.
    let r = http
        .post(format!("{base}/api/v1/admin/import?from=wordpress"))
        .bearer_auth(token)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, kind, title) = problem(r).await;
    assert_eq!((status, kind.as_str()), (415, "wrong-format"), "{title}");
    assert!(title.contains("looks like a disqus export"), "{title}");

    // Over the bound: 413, declared or not.
    let mut big = bytes.clone();
    big.resize(1536 * 1024, b' ');
    let r = http
        .post(&url)
        .bearer_auth(token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = http
        .post(&url)
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 413);

    // One import at a time: while one is being uploaded, another is refused, and the running
    // one shows in the progress. (The upload cut at the bound above ends first.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = admin_get(&http, &url, token).await;
        if s["import"]["running"] == false {
            assert!(s["import"]["error"].is_string(), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the cut upload never ended: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let held = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        let token = token.to_owned();
        async move {
            http.post(&url)
                .bearer_auth(token)
                .header("x-io360-actor", "holder")
                .body(reqwest::Body::wrap_stream(rx))
                .send()
                .await
                .unwrap()
        }
    });
    use futures::SinkExt;
    tx.send(Ok(bytes[..5000].to_vec())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = admin_get(&http, &url, token).await;
        if s["import"]["running"] == true && s["import"]["actor"] == "admin:holder" {
            assert!(s["import"]["received"].as_u64().unwrap() >= 5000, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never showed as running: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(&url)
        .bearer_auth(token)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, kind, _) = problem(r).await;
    assert_eq!((status, kind.as_str()), (409, "import-running"));
    tx.send(Ok(bytes[5000..].to_vec())).await.unwrap();
    drop(tx);
    let r = held.await.unwrap();
    assert_eq!(r.status(), 200);
    let third: Value = r.json().await.unwrap();
    assert_eq!(third["skipped"], 33, "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_an_export_are_in_the_audit_trail_with_who_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = write(dir.path(), "disqus.xml", generate::disqus);
    let (_up, base) = up(&data).await;
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = token.trim();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/admin/import?from=disqus"))
        .bearer_auth(token)
        .header("x-io360-actor", "mover")
        .body(std::fs::read(&file).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/api/v1/admin/import?from=remark42"))
        .bearer_auth(token)
        .body("{\"version\": 1, \"users\": [], \"posts\": []}\n{\"id\": \"broken\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let export = http
        .get(format!("{base}/api/v1/admin/export"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(!export.is_empty());

    // The trail is read back through the logger's read API.
    let events = |kind: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let url = format!("{base}/api/v1/admin/events?kind={kind}");
            let v = admin_get(&http, &url, token).await;
            v["events"].as_array().cloned().unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (imported, exported) = loop {
        let (i, e) = (events("site.imported").await, events("site.exported").await);
        if i.len() >= 2 && !e.is_empty() {
            break (i, e);
        }
        assert!(Instant::now() < deadline, "{i:?} {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let good = imported
        .iter()
        .find(|e| e["reason"] == "disqus")
        .unwrap_or_else(|| panic!("{imported:?}"));
    assert_eq!(good["actor"], "admin:mover", "{good}");
    let detail = good["detail"].as_str().unwrap();
    assert!(
        detail.contains("33 comments, 30 imported, 3 already imported"),
        "{detail}"
    );
    let bad = imported
        .iter()
        .find(|e| e["reason"] == "remark42")
        .unwrap_or_else(|| panic!("{imported:?}"));
    assert_eq!(bad["actor"], "admin", "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("line 2"), "{bad}");
    let detail = exported[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 threads, 30 comments, sent whole"),
        "{detail}"
    );
}
