//! The audit trail across tiers: every action through logic reaches the logger with its actor;
//! the logger can die without costing a single comment; erase reaches store and logger.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use std::time::Duration;

use common::{ADMIN, Proc, Stack, free_addr, status_json, wait_ready};
use io360_common::serve::{Shutdown, ShutdownTrigger};
use serde_json::{Value, json};

/// Store, optionally logger, and logic in this process (the shared [`Stack`]); stops when
/// dropped.
struct Tiers {
    stack: Stack,
    http: reqwest::Client,
    _logger: Option<Logger>,
}

/// An in-process logger with its own data directory; stops when dropped.
struct Logger {
    url: String,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

impl Logger {
    async fn start() -> Logger {
        let dir = tempfile::tempdir().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let cfg = io360_logger::Config {
            tier_auth: common::auth(),
            ..io360_logger::Config::in_dir(dir.path().join("logger"))
        };
        tokio::spawn(async move { io360_logger::serve(cfg, l, shutdown).await.unwrap() });
        wait_ready(&reqwest::Client::new(), &format!("{url}/readyz")).await;
        Logger {
            url,
            trigger,
            _dir: dir,
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

impl Tiers {
    /// `logger`: `Some(None)` starts one here, `Some(Some(url))` uses that one, `None` has none.
    async fn start(logger: Option<Option<String>>, flags: &[&str]) -> Tiers {
        let own = match logger {
            Some(None) => Some(Logger::start().await),
            _ => None,
        };
        let logger_url = match (&own, logger) {
            (Some(l), _) => Some(l.url.clone()),
            (None, Some(Some(url))) => Some(url),
            _ => None,
        };
        let mut all = vec!["--logger-flush-ms", "100"];
        if let Some(u) = &logger_url {
            all.extend(["--logger-url", u.as_str()]);
        }
        all.extend_from_slice(flags);
        let stack = Stack::start(&all).await;
        Tiers {
            http: stack.http.clone(),
            stack,
            _logger: own,
        }
    }

    fn url(&self, path: &str) -> String {
        self.stack.url(path)
    }

    async fn post(&self, thread: &str, body: Value) -> (u16, Value) {
        self.stack.post(thread, body).await
    }

    /// An admin call, as moderator `who` when given.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        who: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(w) = who {
            req = req.header("X-IO360-Actor", w);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        status_json(req.send().await.unwrap()).await
    }

    /// The audit trail through logic's admin API.
    async fn events(&self, query: &str) -> (u16, Value) {
        self.admin(
            reqwest::Method::GET,
            &format!("/api/v1/admin/events?{query}"),
            None,
            None,
        )
        .await
    }

    /// Waits until `query` returns at least `n` events; returns them.
    async fn wait_events(&self, query: &str, n: usize) -> Vec<Value> {
        let mut last = Value::Null;
        for _ in 0..400 {
            let (status, body) = self.events(query).await;
            if status == 200 && body["events"].as_array().unwrap().len() >= n {
                return body["events"].as_array().unwrap().clone();
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} events for {query}: {last}");
    }

    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

fn find<'a>(events: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind && pred(e))
        .unwrap_or_else(|| panic!("no {kind} event matching in {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_action_produces_its_audit_event_with_the_actor() {
    use reqwest::Method;
    let t = Tiers::start(
        Some(None),
        &[
            "--moderation",
            "all",
            "--writes-per-minute",
            "10000",
            "--writes-burst",
            "1000",
            "--reads-per-minute",
            "2",
        ],
    )
    .await;
    let th = "/audit/post";
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let (status, body) = t
            .post(th, json!({"text": format!("comment {i}"), "author": "Ann", "email": "ann@example.org"}))
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["comment"]["id"].as_u64().unwrap());
        tokens.push(body["editToken"].as_str().unwrap().to_owned());
    }
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    let mona = Some("Mona");
    let ok = |(s, b): (u16, Value)| assert!((200..300).contains(&s), "{s} {b}");
    ok(t.admin(
        Method::POST,
        &format!("/api/v1/admin/comments/{a}/approve"),
        None,
        mona,
    )
    .await);
    ok(t.admin(
        Method::POST,
        &format!("/api/v1/admin/comments/{b}/reject"),
        None,
        mona,
    )
    .await);
    ok(t.admin(
        Method::DELETE,
        &format!("/api/v1/admin/comments/{c}"),
        None,
        None,
    )
    .await);
    // Rejecting what is not held is a conflict, and leaves no event.
    let (status, _) = t
        .admin(
            Method::POST,
            &format!("/api/v1/admin/comments/{a}/reject"),
            None,
            mona,
        )
        .await;
    assert_eq!(status, 409);
    // The author edits their approved comment, votes happen, the author deletes another.
    let res = t
        .http
        .patch(t.url(&format!("/api/v1/comments/{a}")))
        .bearer_auth(&tokens[0])
        .json(&json!({"text": "comment 0, edited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = t
        .http
        .post(t.url(&format!("/api/v1/comments/{a}/vote")))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = t
        .http
        .delete(t.url(&format!("/api/v1/comments/{d}")))
        .bearer_auth(&tokens[3])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    ok(t.admin(
        Method::POST,
        "/api/v1/admin/threads/close?thread=%2Faudit%2Fpost",
        None,
        mona,
    )
    .await);
    ok(t.admin(
        Method::POST,
        "/api/v1/admin/threads/reopen?thread=%2Faudit%2Fpost",
        None,
        mona,
    )
    .await);
    ok(t.admin(
        Method::PUT,
        "/api/v1/admin/suspension",
        Some(json!({"suspended": true, "reason": "maintenance"})),
        mona,
    )
    .await);
    ok(t.admin(
        Method::PUT,
        "/api/v1/admin/suspension",
        Some(json!({"suspended": false})),
        mona,
    )
    .await);
    // Bans: the address range, then the author; both refuse posts and are counted as spam.
    ok(t.admin(
        Method::POST,
        "/api/v1/admin/bans",
        Some(json!({"range": "127.0.0.0/8"})),
        mona,
    )
    .await);
    let (status, p) = t.post(th, json!({"text": "from a banned range"})).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (403, Some("https://io360.dev/problems/banned"))
    );
    ok(t.admin(
        Method::DELETE,
        "/api/v1/admin/bans?range=127.0.0.0%2F8",
        None,
        mona,
    )
    .await);
    ok(t.admin(
        Method::POST,
        "/api/v1/admin/bans",
        Some(json!({"comment": a})),
        mona,
    )
    .await);
    let (status, _) = t
        .post(
            th,
            json!({"text": "banned author", "email": "ann@example.org"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = t
        .post(th, json!({"text": "someone else", "author": "Cy"}))
        .await;
    assert_eq!(status, 201, "a ban on one author leaves others alone");
    // Spam (the honeypot) and the read rate limit are aggregated.
    let (status, _) = t
        .post(
            th,
            json!({"text": "buy now", "homepage": "http://spam.example"}),
        )
        .await;
    assert_eq!(status, 422);
    let mut limited = 0;
    for _ in 0..6 {
        let res = t
            .http
            .get(t.url("/api/v1/comments?thread=%2Faudit%2Fpost"))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 3, "{limited}");

    let events = t
        .wait_events("limit=1000&since=2000-01-01T00:00:00Z", 24)
        .await;
    let on = |id: u64| move |e: &Value| e["comment"] == id;
    let posted = find(&events, "comment.posted", on(a));
    assert_eq!(posted["actor"], "Ann");
    assert_eq!(posted["thread"], th);
    assert_eq!(posted["address"], "127.0.0.0", "addresses are truncated");
    assert!(posted["authorKey"].is_string());
    assert_eq!(find(&events, "comment.held", on(a))["reason"], "moderation");
    assert_eq!(
        find(&events, "comment.approved", on(a))["actor"],
        "admin:Mona"
    );
    assert_eq!(
        find(&events, "comment.rejected", on(b))["actor"],
        "admin:Mona"
    );
    assert_eq!(find(&events, "comment.deleted", on(c))["actor"], "admin");
    assert_eq!(find(&events, "comment.edited", on(a))["actor"], "Ann");
    assert_eq!(find(&events, "comment.voted", on(a))["detail"], "+1");
    let own_delete = find(&events, "comment.deleted", on(d));
    assert_eq!(own_delete["actor"], "author");
    assert_eq!(own_delete["authorKey"], posted["authorKey"]);
    assert_eq!(
        find(&events, "thread.closed", |e| e["thread"] == th)["actor"],
        "admin:Mona"
    );
    assert_eq!(
        find(&events, "thread.reopened", |e| e["thread"] == th)["actor"],
        "admin:Mona"
    );
    let sus = find(&events, "comments.suspended", |_| true);
    assert_eq!(
        (
            sus["actor"].as_str(),
            sus["reason"].as_str(),
            sus["detail"].as_str()
        ),
        (Some("admin:Mona"), Some("manual"), Some("maintenance"))
    );
    assert_eq!(
        find(&events, "comments.resumed", |_| true)["actor"],
        "admin:Mona"
    );
    assert_eq!(
        find(&events, "address.banned", |_| true)["detail"],
        "127.0.0.0/8"
    );
    assert_eq!(
        find(&events, "ban.lifted", |_| true)["detail"],
        "127.0.0.0/8"
    );
    assert_eq!(find(&events, "author.banned", on(a))["actor"], "admin:Mona");
    find(&events, "tier.started", |e| e["tier"] == "logic");
    // Aggregated: one event per address and reason, with a count.
    let spam = t.wait_events("kind=spam.rejected&limit=100", 3).await;
    for reason in ["honeypot", "banned-address", "banned-author"] {
        let e = find(&spam, "spam.rejected", |e| e["reason"] == reason);
        assert_eq!(e["count"], 1, "{e}");
        assert_eq!(e["actor"], "system");
    }
    // Aggregates are shipped once per flush interval: wait until every window has arrived.
    let mut limits = Vec::new();
    let mut total = 0;
    for _ in 0..200 {
        limits = t.wait_events("kind=ratelimit.rejected", 1).await;
        total = limits
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>();
        if total >= limited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        total, limited,
        "every refused read is counted, in few events"
    );
    assert!(limits.len() <= limited as usize);
    // The trail filters by actor for scripts.
    let by_mona = t.wait_events("actor=admin%3AMona&limit=1000", 1).await;
    assert!(by_mona.iter().all(|e| e["actor"] == "admin:Mona"));
    assert_eq!(by_mona.len(), 9, "{by_mona:#?}");
    // A bad filter is a 400 naming the parameter.
    let (status, p) = t.events("kind=comment.exploded").await;
    assert_eq!((status, p["field"].as_str()), (400, Some("kind")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_logger_the_trail_is_503_and_moderation_still_works() {
    let t = Tiers::start(None, &["--moderation", "all", "--no-rate-limits"]).await;
    let (status, body) = t.post("/quiet", json!({"text": "held"})).await;
    assert_eq!(status, 201);
    let id = body["comment"]["id"].as_u64().unwrap();
    let (status, p) = t.events("").await;
    assert_eq!(status, 503);
    assert_eq!(p["type"], "https://io360.dev/problems/audit-unavailable");
    let (status, _) = t
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/admin/comments/{id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    // The console page is served by logic, so the frontend's /admin forwarding reaches it.
    let res = t.http.get(t.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("io360 moderation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_logger_loses_no_comment_counts_the_drops_and_shipping_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("logger");
    let data = data.to_str().unwrap().to_owned();
    let addr = free_addr().to_string();
    let logger_url = format!("http://{addr}");
    let start_logger = || {
        Proc::spawn(
            &["serve", "logger", "--addr", &addr, "--data-dir", &data],
            &[],
        )
    };
    let mut logger = start_logger();
    wait_ready(&reqwest::Client::new(), &format!("{logger_url}/readyz")).await;
    let t = Tiers::start(
        Some(Some(logger_url.clone())),
        &[
            "--no-rate-limits",
            "--logger-buffer",
            "20",
            "--logger-batch",
            "5",
        ],
    )
    .await;

    let post_all = |range: std::ops::Range<usize>, who: &'static str| {
        let t = &t;
        async move {
            for i in range {
                let (status, body) = t
                    .post(
                        "/kill",
                        json!({"text": format!("comment {i}"), "author": who}),
                    )
                    .await;
                assert_eq!(status, 201, "post {i}: {body}");
            }
        }
    };
    post_all(0..10, "before").await;
    t.wait_events("kind=comment.posted&thread=%2Fkill", 10)
        .await;
    assert_eq!(t.metric("io360_logger_events_dropped_total").await, 0);

    logger.kill9();
    // Every post still succeeds while the logger is gone.
    post_all(10..70, "during").await;
    let dropped = t.metric("io360_logger_events_dropped_total").await;
    assert!(
        dropped >= 60 - 20 - 5,
        "a buffer of 20 and one held batch of 5 cannot hold 60 events; dropped {dropped}"
    );
    let (status, p) = t.events("").await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(p["type"], "https://io360.dev/problems/audit-unavailable");
    let (status, _) = t
        .admin(reqwest::Method::GET, "/api/v1/admin/queue", None, None)
        .await;
    assert_eq!(status, 200, "moderation works without the logger");

    let _logger = start_logger();
    wait_ready(&reqwest::Client::new(), &format!("{logger_url}/readyz")).await;
    // The held backlog arrives first: exactly the comments posted so far minus those dropped.
    assert_eq!(
        posted_comments(&t, 70 - dropped as usize).await,
        70 - dropped as usize,
        "70 posted, {dropped} dropped"
    );
    post_all(70..75, "after").await;
    let after = t
        .wait_events("kind=comment.posted&thread=%2Fkill&actor=after", 5)
        .await;
    assert_eq!(after.len(), 5);
    // Nothing lost silently: every comment not counted as dropped is in the trail.
    assert_eq!(
        posted_comments(&t, 75 - dropped as usize).await,
        75 - dropped as usize,
        "75 posted, {dropped} dropped"
    );
}

/// How many distinct comments have a `comment.posted` event on `/kill`, once that reaches
/// `want` (or after a few seconds). Delivery is at least once: a batch the logger stored just
/// before dying unanswered is sent again, so events are counted by comment.
async fn posted_comments(t: &Tiers, want: usize) -> usize {
    let mut got = 0;
    for _ in 0..400 {
        let (_, page) = t
            .events("kind=comment.posted&thread=%2Fkill&limit=1000")
            .await;
        let ids: std::collections::BTreeSet<u64> = page["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["comment"].as_u64()).collect())
            .unwrap_or_default();
        got = ids.len();
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erase_removes_an_author_from_store_and_logger_and_export_finds_them_first() {
    use reqwest::Method;
    let t = Tiers::start(Some(None), &["--no-rate-limits"]).await;
    let th = "/erase";
    let mut token = String::new();
    for i in 0..2 {
        let (status, body) = t
            .post(th, json!({"text": format!("ann says {i}"), "author": "Ann", "email": "Ann@Example.org"}))
            .await;
        assert_eq!(status, 201);
        token = body["editToken"].as_str().unwrap().to_owned();
    }
    let (status, bob) = t
        .post(
            th,
            json!({"text": "bob says", "author": "Bob", "email": "bob@example.org"}),
        )
        .await;
    assert_eq!(status, 201);
    t.wait_events("kind=comment.posted&thread=%2Ferase", 3)
        .await;

    let (status, export) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/export",
            Some(json!({"email": "ann@example.org"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["comments"].as_array().unwrap().len(), 2);
    assert_eq!(export["comments"][0]["email"], "Ann@Example.org");
    assert_eq!(export["events"].as_array().unwrap().len(), 2);
    // The edit token of any of her comments identifies her too.
    let (status, by_token) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/export",
            Some(json!({"editToken": token})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_token["comments"], export["comments"]);

    let (status, erased) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/erase",
            Some(json!({"email": "ann@example.org"})),
            Some("Dpo"),
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["comments"], 2);
    assert_eq!(erased["events"], 2);

    let (status, page) = t
        .admin(Method::GET, "/api/v1/comments?thread=%2Ferase", None, None)
        .await;
    assert_eq!(status, 200);
    for c in page["comments"].as_array().unwrap() {
        if c["id"] == bob["comment"]["id"] {
            assert_eq!(c["text"], "bob says");
        } else {
            assert_eq!(c["status"], "deleted");
            assert_eq!(c["text"], "");
            assert!(c["author"].is_null());
        }
    }
    let (_, after) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/export",
            Some(json!({"email": "ann@example.org"})),
            None,
        )
        .await;
    assert_eq!(after["comments"].as_array().unwrap().len(), 0, "{after}");
    assert_eq!(after["events"].as_array().unwrap().len(), 0, "{after}");
    let posted = t
        .wait_events("kind=comment.posted&thread=%2Ferase", 3)
        .await;
    let names: Vec<&str> = posted
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bob", "erased", "erased"]);
    assert!(
        posted
            .iter()
            .filter(|e| e["actor"] == "erased")
            .all(|e| e.get("address").is_none())
    );
    let erasure = t.wait_events("kind=author.erased", 1).await;
    assert_eq!(erasure[0]["actor"], "admin:Dpo");

    // Bad requests name the field.
    let (status, p) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/erase",
            Some(json!({"editToken": "1.2.forged"})),
            None,
        )
        .await;
    assert_eq!((status, p["field"].as_str()), (400, Some("editToken")));
    let (status, _) = t
        .admin(
            Method::POST,
            "/api/v1/admin/authors/erase",
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_audit_event_sent_straight_to_the_logger_is_refused_and_never_shown() {
    let t = Tiers::start(Some(None), &[]).await;
    let logger = t._logger.as_ref().unwrap().url.clone();
    let forged = json!({"events": [{
        "time": io360_logger::event::now_rfc3339(),
        "kind": "comment.deleted",
        "tier": "logic",
        "actor": "the-site-owner",
        "thread": "/forged",
    }]});
    let res = reqwest::Client::new()
        .post(format!("{logger}/logger/v1/events"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A real action goes through, so the trail is being written while the forged one is not.
    let (status, body) = t.post("/forged", json!({"text": "a real comment"})).await;
    assert_eq!(status, 201, "{body}");
    let events = t.wait_events("thread=%2Fforged", 1).await;
    assert!(
        events.iter().all(|e| e["actor"] != "the-site-owner"),
        "the forged event is in the trail: {events:?}"
    );
    assert_eq!(events.len(), 1, "{events:?}");
}
