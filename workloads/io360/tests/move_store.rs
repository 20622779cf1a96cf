//! `io360 move-store` with the real binary and a real PostgreSQL: a fjall store with several
//! threads, nested replies, votes, an edit, deleted, held and approved comments, a closed
//! thread, imported comments, an idempotency key, the suspension and the bans moves into
//! PostgreSQL, where `io360 serve store` answers every read as it did on fjall; then back into a
//! fresh data directory, with the same answers again. A non-empty target is refused, and a
//! connection string that leads nowhere is named as such.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

#[path = "../../store/tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Output};

use common::{Proc, free_addr, wait_ready};
use serde_json::{Value, json};

fn comment(text: &str, parent: Option<u64>, status: &str, key: Option<&str>) -> Value {
    json!({
        "parent": parent, "author": format!("author of {text}"),
        "email": key.map(|k| format!("{k}@example.org")), "website": null,
        "text": text, "html": format!("<p>{text}</p>"), "status": status,
        "remote": "127.0.0.0", "author_key": key
    })
}

/// A store served by `io360 serve store` on one engine, spoken to as logic and as sync.
struct Store {
    base: String,
    logic: reqwest::Client,
    sync: reqwest::Client,
    _proc: Proc,
}

impl Store {
    async fn start(store_dir: &Path, env: &[(&str, &str)]) -> Store {
        let addr = free_addr().to_string();
        let proc = Proc::spawn(
            &[
                "serve",
                "store",
                "--addr",
                &addr,
                "--data-dir",
                store_dir.to_str().unwrap(),
            ],
            env,
        );
        let logic = common::as_tier("logic");
        wait_ready(&logic, &format!("http://{addr}/readyz")).await;
        Store {
            base: format!("http://{addr}"),
            logic,
            sync: common::as_tier("sync"),
            _proc: proc,
        }
    }

    async fn fjall(store_dir: &Path) -> Store {
        Store::start(store_dir, &[]).await
    }

    async fn postgres(dsn_file: &Path, unused_dir: &Path) -> Store {
        Store::start(
            unused_dir,
            &[
                ("IO360_STORE_ENGINE", "postgres"),
                ("IO360_DATABASE_URL_FILE", dsn_file.to_str().unwrap()),
            ],
        )
        .await
    }

    async fn write(&self, op: Value) -> Value {
        let r = self
            .logic
            .post(format!("{}/store/v1/write", self.base))
            .json(&op)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{op} answered {body}");
        body
    }

    async fn append(&self, thread: &str, c: Value, idempotency: Option<&str>) -> u64 {
        let op = json!({
            "op": "append", "thread": thread, "comment": c,
            "idempotency": idempotency.map(|k| json!({"key": k, "fingerprint": format!("fp {k}")})),
        });
        self.write(op).await["change"]["comment"]["id"]
            .as_u64()
            .unwrap()
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> Value {
        let r = client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        json!({"status": status, "body": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))})
    }

    /// Every answer a reader of the store gets, in one value.
    async fn answers(&self, threads: &[&str], last_id: u64) -> Value {
        let mut all = serde_json::Map::new();
        for t in threads {
            let q = format!("thread={}", urlencode(t));
            for (name, client, path) in [
                (
                    "comments",
                    &self.logic,
                    format!("/store/v1/comments?{q}&limit=500"),
                ),
                ("thread", &self.logic, format!("/store/v1/thread?{q}")),
                (
                    "changes",
                    &self.sync,
                    format!("/store/v1/changes?{q}&limit=500"),
                ),
                (
                    "changes after 2",
                    &self.sync,
                    format!("/store/v1/changes?{q}&after=2&limit=500"),
                ),
            ] {
                all.insert(format!("{name} {t}"), self.get(client, &path).await);
            }
        }
        for id in 1..=last_id + 1 {
            all.insert(
                format!("comment {id}"),
                self.get(&self.logic, &format!("/store/v1/comment/{id}"))
                    .await,
            );
        }
        for (name, path) in [
            ("pending", "/store/v1/pending?limit=100".to_owned()),
            ("suspension", "/store/v1/suspension".to_owned()),
            ("bans", "/store/v1/bans".to_owned()),
            ("author ak1", "/store/v1/author?key=ak1".to_owned()),
            (
                "author ak1 comments",
                "/store/v1/author/comments?key=ak1".to_owned(),
            ),
            ("author ak2", "/store/v1/author?key=ak2".to_owned()),
            ("source isso:2", "/store/v1/source?source=isso:2".to_owned()),
            ("position", "/store/v1/position".to_owned()),
        ] {
            all.insert(name.to_owned(), self.get(&self.logic, &path).await);
        }
        let mut names: Vec<&str> = threads.to_vec();
        names.push("/never-written");
        let counts: Value = self
            .logic
            .post(format!("{}/store/v1/counts", self.base))
            .json(&json!({"threads": names}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.insert("counts".into(), counts);
        let export = self
            .logic
            .get(format!("{}/store/v1/export", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        all.insert("export".into(), Value::String(export));
        Value::Object(all)
    }
}

fn urlencode(s: &str) -> String {
    s.replace('/', "%2F")
}

fn move_store(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_io360"))
        .arg("move-store")
        .args(args)
        .env_remove("IO360_DATABASE_URL")
        .env_remove("IO360_DATABASE_URL_FILE")
        .env_remove("IO360_DATA_DIR")
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

/// Asserts two sets of answers are equal, naming the first that differs.
fn same(what: &str, a: &Value, b: &Value) {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, v) in a {
        assert_eq!(v, &b[k], "{what}: the answer to {k:?} differs");
    }
}

const THREADS: [&str; 4] = ["/a/", "/b/", "/c/", "/imported/"];

/// Fills a fjall store with one of everything; answers the last comment id.
async fn fill(s: &Store) -> u64 {
    let c1 = s
        .append("/a/", comment("first", None, "approved", Some("ak1")), None)
        .await;
    let c2 = s
        .append("/a/", comment("reply", Some(c1), "approved", None), None)
        .await;
    let c3 = s
        .append(
            "/a/",
            comment("reply to the reply", Some(c2), "approved", Some("ak1")),
            None,
        )
        .await;
    s.write(json!({"op": "vote", "id": c1, "voter": "v1", "value": 1}))
        .await;
    s.write(json!({"op": "vote", "id": c1, "voter": "v2", "value": -1}))
        .await;
    s.write(json!({"op": "vote", "id": c2, "voter": "v1", "value": 1}))
        .await;
    s.write(
        json!({"op": "edit", "id": c2, "text": "reply, edited", "html": "<p>reply, edited</p>"}),
    )
    .await;
    s.write(json!({"op": "delete", "id": c3})).await;
    s.append("/b/", comment("held", None, "pending", Some("ak2")), None)
        .await;
    let c5 = s
        .append(
            "/b/",
            comment("held, then approved", None, "pending", None),
            None,
        )
        .await;
    s.write(json!({"op": "approve", "id": c5})).await;
    s.append(
        "/b/",
        comment("sent twice", None, "approved", Some("ak2")),
        Some("key-6"),
    )
    .await;
    s.append(
        "/c/",
        comment("before closing", None, "approved", None),
        None,
    )
    .await;
    s.write(json!({"op": "close", "thread": "/c/"})).await;
    let imported = json!([
        {"thread": "/imported/", "source": "isso:1", "parentSource": null, "author": "old",
         "email": null, "website": null, "remote": null, "text": "from isso", "html": "<p>from isso</p>",
         "created": "2020-01-01T00:00:00Z", "modified": null, "status": "approved",
         "votes": {"up": 3, "down": 1}, "authorKey": null},
        {"thread": "/imported/", "source": "isso:2", "parentSource": "isso:1", "author": "older",
         "email": null, "website": null, "remote": null, "text": "a reply from isso", "html": "<p>a reply from isso</p>",
         "created": "2020-01-02T00:00:00Z", "modified": null, "status": "approved",
         "votes": {"up": 0, "down": 0}, "authorKey": null}
    ]);
    let r = s
        .logic
        .post(format!("{}/store/v1/import", s.base))
        .json(&imported)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for (path, body) in [
        (
            "/store/v1/suspension",
            json!({"suspended": true, "reason": "moving house", "since": "2026-01-01T00:00:00Z"}),
        ),
        (
            "/store/v1/bans",
            json!({"authors": [{"key": "ak9", "label": "spam", "since": "2026-01-01T00:00:00Z"}],
                   "ranges": [{"cidr": "192.0.2.0/24", "since": "2026-01-01T00:00:00Z"}]}),
        ),
    ] {
        let r = s
            .logic
            .put(format!("{}{path}", s.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    }
    c5 + 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_into_postgres_and_back_with_the_same_answers() {
    let pg = pg::Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, format!("{}\n", pg.database("site").await)).unwrap();
    let data = dir.path().join("data");

    let fjall = Store::fjall(&data.join("store")).await;
    let last_id = fill(&fjall).await;
    let before = fjall.answers(&THREADS, last_id).await;
    assert_eq!(before["comment 8"]["body"]["comment"]["text"], "from isso");
    assert_eq!(
        before["author ak1"]["body"]["approved"], 2,
        "{}",
        before["author ak1"]
    );
    drop(fjall);

    // Into PostgreSQL.
    let o = move_store(&[
        "--to",
        "postgres",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url-file",
        dsn.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "the move failed: {}", text(&o));
    let said = text(&o);
    eprintln!("{said}");
    assert!(
        said.contains("4 threads, 9 comments (7 approved, 1 held)"),
        "{said}"
    );
    assert!(
        said.contains("3 votes, 1 idempotency keys, 2 author counts, 2 source ids, 2 settings"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "feed position {}",
            before["position"]["body"]["position"]
        )),
        "{said}"
    );

    let on_pg = Store::postgres(&dsn, &dir.path().join("unused")).await;
    let after = on_pg.answers(&THREADS, last_id).await;
    same("PostgreSQL against fjall", &before, &after);
    // The idempotency key came along: the retry answers the first comment.
    let again = on_pg
        .write(json!({
            "op": "append", "thread": "/b/", "comment": comment("sent twice", None, "approved", Some("ak2")),
            "idempotency": {"key": "key-6", "fingerprint": "fp key-6"},
        }))
        .await;
    assert_eq!(again["replayed"], true, "{again}");
    // So did the votes: a second vote by v1 is refused.
    let r = on_pg
        .logic
        .post(format!("{}/store/v1/write", on_pg.base))
        .json(&json!({"op": "vote", "id": 1, "voter": "v1", "value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    drop(on_pg);

    // A database that holds a store is refused as a target, and left as it was.
    let o = move_store(&[
        "--to",
        "postgres",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url-file",
        dsn.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the database is not empty"),
        "{}",
        text(&o)
    );
    // So is a data directory that holds a store.
    let o = move_store(&[
        "--to",
        "fjall",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url-file",
        dsn.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not empty"), "{}", text(&o));

    // Back into a fresh data directory.
    let back = dir.path().join("back");
    let o = move_store(&[
        "--to",
        "fjall",
        "--data-dir",
        back.to_str().unwrap(),
        "--database-url-file",
        dsn.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "the move back failed: {}", text(&o));
    assert!(text(&o).contains("into "), "{}", text(&o));
    let fjall = Store::fjall(&back.join("store")).await;
    let returned = fjall.answers(&THREADS, last_id).await;
    same(
        "fjall after the round trip against fjall",
        &before,
        &returned,
    );
    // Writing goes on where the site left off: the next id, sequence number and position.
    let next = fjall
        .write(json!({"op": "append", "thread": "/a/", "comment": comment("after the move", None, "approved", None)}))
        .await;
    assert_eq!(next["change"]["comment"]["id"], last_id + 1, "{next}");
    assert_eq!(
        next["change"]["seq"],
        before["thread /a/"]["body"]["head"].as_u64().unwrap() + 1
    );
    assert_eq!(
        next["change"]["pos"],
        before["position"]["body"]["position"].as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn a_connection_string_that_leads_nowhere_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/site?connect_timeout=2",
        free_addr().port()
    );
    let o = move_store(&[
        "--to",
        "fjall",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &nowhere,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot reach the database"),
        "{}",
        text(&o)
    );
    let o = move_store(&[
        "--to",
        "fjall",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        "mysql://nothing",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("is not a PostgreSQL connection string"),
        "{}",
        text(&o)
    );
    // No store in the data directory: said before any database is asked.
    let o = move_store(&[
        "--to",
        "postgres",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &nowhere,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("holds no io360 store"), "{}", text(&o));
}
