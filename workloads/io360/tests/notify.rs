//! Reply notifications under `io360 up`, against a mail server on loopback that the test
//! reads: a subscription is confirmed before anything is sent, replies arrive as one digest,
//! one-click unsubscribe is honoured, bad input is refused with nothing sent, a mail server
//! that is down delays and loses nothing, and `kill -9` in the middle of a send loses nothing
//! and delivers nothing twice (a message the server took just before the kill is sent again
//! under the same `Message-ID`, which is how a receiver drops the copy).

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;
#[path = "../../notify/tests/smtp/mod.rs"]
mod smtp;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use smtp::MailServer;

struct Up(Child);

impl Up {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn up(addr: &str, data: &Path, mail: &MailServer) -> Up {
    up_with(addr, data, mail, &[]).await
}

async fn up_with(addr: &str, data: &Path, mail: &MailServer, env: &[(&str, &str)]) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", addr, "--data-dir"])
        .arg(data)
        .env("IO360_LOG", "warn")
        .env("IO360_SMTP_URL", mail.url())
        .env("IO360_NOTIFY_FROM", "Comments <comments@site.test>")
        .env("IO360_NOTIFY_DIGEST_SECS", "3")
        .env("IO360_NO_RATE_LIMITS", "true")
        .env("IO360_LONGPOLL_HOLD_SECS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    common::wait_ready(
        &reqwest::Client::new(),
        &format!("http://{addr}/api/v1/status"),
    )
    .await;
    Up(child)
}

async fn post(http: &reqwest::Client, base: &str, thread: &str, body: Value) -> Value {
    for _ in 0..100 {
        let r = http
            .post(format!("{base}/api/v1/comments?thread={thread}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            return r.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the post was never accepted");
}

async fn subscribe(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/api/v1/notifications/subscribe"))
        .json(&body)
        .send()
        .await
        .unwrap();
    common::status_json(r).await
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    for _ in 0..secs * 20 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The first link to `/api/v1/notifications/{action}` in a text, as a path and query.
fn link(text: &str, action: &str) -> String {
    let needle = format!("/api/v1/notifications/{action}?token=");
    let at = text
        .find(&needle)
        .unwrap_or_else(|| panic!("no {action} link in:\n{text}"));
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '?' | '='))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_digest_and_one_click_unsubscribe_under_io360_up() {
    let dir = tempfile::tempdir().unwrap();
    let mail = MailServer::start().await;
    let addr = common::free_addr().to_string();
    let _up = up(&addr, &dir.path().join("data"), &mail).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let root = post(
        &http,
        &base,
        "/post",
        json!({"text": "the root", "author": "Ann"}),
    )
    .await;
    let root_id = root["comment"]["id"].as_u64().unwrap();

    // Bad input: a clear 4xx, and nothing sent.
    for (email, field) in [
        ("not-an-address", "email"),
        ("a@site.test\r\nBcc: victim@else.test", "email"),
        ("a@site.test", "thread"),
    ] {
        let thread = if field == "thread" { "" } else { "/post" };
        let (status, body) =
            subscribe(&http, &base, json!({"email": email, "thread": thread})).await;
        assert_eq!(status, 400, "{email:?}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }

    let (status, body) = subscribe(
        &http,
        &base,
        json!({"email": "reader@site.test", "thread": "/post", "comment": root_id}),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("pending")),
        "{body}"
    );
    wait_for("the confirmation", 10, || {
        mail.to("reader@site.test").len() == 1
    })
    .await;
    let confirmation = mail.to("reader@site.test").remove(0);
    let confirm = link(&confirmation.body(), "confirm");

    // Not yet confirmed: a reply sends nothing.
    post(
        &http,
        &base,
        "/post",
        json!({"text": "early reply", "parent": root_id}),
    )
    .await;
    // Opening the link (as a mail scanner would) shows a form and confirms nothing.
    let page = http.get(format!("{base}{confirm}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\""), "{html}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        mail.to("reader@site.test").len(),
        1,
        "{:?}",
        mail.messages()
    );

    let r = http.post(format!("{base}{confirm}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A flood of subscriptions in someone else's name: a few confirmations, then 429.
    let mut refused = 0;
    for i in 0..8 {
        let (status, _) = subscribe(
            &http,
            &base,
            json!({"email": "victim@site.test", "thread": format!("/flood/{i}")}),
        )
        .await;
        if status == 429 {
            refused += 1;
        } else {
            assert_eq!(status, 202);
        }
    }
    assert_eq!(refused, 3);

    // Asking when posting: a confirmation to the poster's address; a post that asks without
    // an address is refused whole.
    let r = http
        .post(format!("{base}/api/v1/comments?thread=/post"))
        .json(&json!({"text": "no address", "notify": "replies"}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::status_json(r).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("notify")),
        "{body}"
    );
    post(
        &http,
        &base,
        "/other",
        json!({"text": "tell me", "email": "poster@site.test", "notify": "replies"}),
    )
    .await;
    wait_for("the poster's confirmation", 10, || {
        mail.to("poster@site.test").len() == 1
    })
    .await;
    assert!(
        mail.to("poster@site.test")[0]
            .body()
            .contains("replies to comment")
    );

    // Three replies in the window: one digest.
    for n in 1..=3 {
        post(
            &http,
            &base,
            "/post",
            json!({"text": format!("reply number {n}"), "author": "Bob", "parent": root_id}),
        )
        .await;
    }
    // A comment that is not a reply to the root: not for this subscription.
    post(&http, &base, "/post", json!({"text": "unrelated"})).await;
    wait_for("the digest", 15, || mail.to("reader@site.test").len() == 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let messages = mail.to("reader@site.test");
    assert_eq!(messages.len(), 2, "one digest, not three emails");
    let digest = &messages[1];
    let body = digest.body();
    for n in 1..=3 {
        assert!(body.contains(&format!("reply number {n}")), "{body}");
    }
    assert!(
        !body.contains("early reply") && !body.contains("unrelated"),
        "{body}"
    );
    assert_eq!(
        digest.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = link(&digest.header("List-Unsubscribe").unwrap(), "unsubscribe");

    // What a mail client's one-click unsubscribe sends (RFC 8058).
    let r = http
        .post(format!("{base}{unsubscribe}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    post(
        &http,
        &base,
        "/post",
        json!({"text": "after", "parent": root_id}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        mail.to("reader@site.test").len(),
        2,
        "{:?}",
        mail.messages()
    );
    // An altered link is refused.
    let r = http
        .post(format!("{base}{}x", unsubscribe))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The flood's victim got five confirmations, nothing else.
    assert_eq!(mail.to("victim@site.test").len(), 5);

    // An address is personal data: an author's export and erase cover its subscriptions.
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let admin = |path: &str| {
        http.post(format!("{base}/api/v1/admin/authors/{path}"))
            .bearer_auth(token.trim())
            .json(&json!({"email": "Victim@site.test"}))
    };
    let (status, body) = common::status_json(admin("export").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptions"].as_array().unwrap().len(), 5, "{body}");
    let (status, body) = common::status_json(admin("erase").send().await.unwrap()).await;
    assert_eq!(
        (status, body["subscriptions"].as_u64()),
        (200, Some(5)),
        "{body}"
    );
    let (_, body) = common::status_json(admin("export").send().await.unwrap()).await;
    assert_eq!(body["subscriptions"], json!([]), "{body}");
    // Notify reports its start to the audit trail, as every tier does.
    let mut started = false;
    for _ in 0..100 {
        let r = http
            .get(format!(
                "{base}/api/v1/admin/events?kind=tier.started&limit=100"
            ))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        if r.status() == 200 && r.text().await.unwrap().contains("\"tier\":\"notify\"") {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "notify's start is not in the audit trail");
    // Erased, the address may ask again: it is a new subscription, not a sixth pending one.
    let (status, _) = subscribe(
        &http,
        &base,
        json!({"email": "victim@site.test", "thread": "/again"}),
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_server_down_then_kill_9_mid_send_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut mail = MailServer::start().await;
    let addr = common::free_addr().to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let mut io360 = up(&addr, &data, &mail).await;

    let readers = ["one@site.test", "two@site.test"];
    for r in readers {
        let (status, _) = subscribe(&http, &base, json!({"email": r, "thread": "/busy"})).await;
        assert_eq!(status, 202);
    }
    wait_for("confirmations", 10, || {
        readers.iter().all(|r| mail.to(r).len() == 1)
    })
    .await;
    for r in readers {
        let c = link(&mail.to(r)[0].body(), "confirm");
        let res = http.post(format!("{base}{c}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    // The mail server goes away; comments keep coming and are accepted at once.
    mail.down().await;
    for n in 0..6 {
        let started = std::time::Instant::now();
        post(
            &http,
            &base,
            "/busy",
            json!({"text": format!("busy comment {n}")}),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a post waited for mail"
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // It comes back, but takes a message and dies before saying so; io360 is killed -9
    // while it waits for the answer.
    mail.stall.store(true, Ordering::SeqCst);
    mail.up().await;
    wait_for("a message in flight", 30, || {
        mail.messages().len() > readers.len()
    })
    .await;
    io360.kill9();
    mail.down().await;
    mail.stall.store(false, Ordering::SeqCst);
    mail.up().await;

    // Restarted: everything queued arrives.
    let _io360 = up(&addr, &data, &mail).await;
    let all_there = || {
        readers.iter().all(|r| {
            let bodies: String = mail.to(r).iter().map(|m| m.body()).collect();
            (0..6).all(|n| bodies.contains(&format!("busy comment {n}\r\n")))
        })
    };
    wait_for("every comment to every reader", 60, all_there).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;

    // The message the server took before the kill went again, under its own Message-ID.
    let copies: usize = readers
        .iter()
        .map(|r| {
            let ids: Vec<String> = mail
                .to(r)
                .iter()
                .filter(|m| m.body().contains("busy comment"))
                .map(|m| m.header("Message-ID").unwrap())
                .collect();
            ids.len() - ids.iter().collect::<BTreeSet<_>>().len()
        })
        .sum();
    assert_eq!(copies, 1, "{:?}", mail.messages());
    for r in readers {
        let digests: Vec<_> = mail
            .to(r)
            .into_iter()
            .filter(|m| m.body().contains("busy comment"))
            .collect();
        // A comment appears in two messages only as the same message sent again.
        let ids: BTreeSet<String> = digests
            .iter()
            .map(|m| m.header("Message-ID").unwrap())
            .collect();
        for n in 0..6 {
            let carrying: BTreeSet<String> = digests
                .iter()
                .filter(|m| m.body().contains(&format!("busy comment {n}\r\n")))
                .map(|m| m.header("Message-ID").unwrap())
                .collect();
            assert_eq!(
                carrying.len(),
                1,
                "{r}: comment {n} in messages {carrying:?}"
            );
        }
        assert!(!ids.is_empty());
    }
}

/// Every link to `/api/v1/notifications/{action}` in a text, in order.
fn links(text: &str, action: &str) -> Vec<String> {
    let needle = format!("/api/v1/notifications/{action}?token=");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        out.push(link(&rest[at..], action));
        rest = &rest[at + needle.len()..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_approves_or_deletes_a_held_comment_from_the_email_once() {
    let dir = tempfile::tempdir().unwrap();
    let mail = MailServer::start().await;
    let addr = common::free_addr().to_string();
    let env = [
        ("IO360_MODERATION", "all"),
        ("IO360_NOTIFY_MODERATORS", "mod@site.test, second@site.test"),
    ];
    let _up = up_with(&addr, &dir.path().join("data"), &mail, &env).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let a = post(
        &http,
        &base,
        "/held",
        json!({"text": "held one", "author": "Cy"}),
    )
    .await;
    let b = post(&http, &base, "/held", json!({"text": "held two"})).await;
    let (a, b) = (
        a["comment"]["id"].as_u64().unwrap(),
        b["comment"]["id"].as_u64().unwrap(),
    );
    wait_for("both moderators told of both", 10, || {
        mail.to("mod@site.test").len() == 2 && mail.to("second@site.test").len() == 2
    })
    .await;
    let about = |id: u64, text: &str| {
        mail.to("mod@site.test")
            .into_iter()
            .find(|m| m.body().contains(text))
            .unwrap_or_else(|| panic!("no message about comment {id}"))
    };
    let for_a = about(a, "held one");
    assert!(
        for_a
            .header("Subject")
            .unwrap()
            .starts_with("Held for moderation")
    );
    let a_links = links(&for_a.body(), "moderate");
    let b_links = links(&about(b, "held two").body(), "moderate");
    let (approve_a, delete_b) = (&a_links[0], &b_links[1]);
    assert_ne!(a_links[0], a_links[1]);

    let visible = |http: reqwest::Client, base: String| async move {
        let r: Value = http
            .get(format!("{base}/api/v1/comments?thread=/held"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["comments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] != "deleted")
            .map(|c| c["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    // Opening the link (a mail scanner) does nothing.
    let page = http.get(format!("{base}{approve_a}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(visible(http.clone(), base.clone()).await.is_empty());

    let r = http
        .post(format!("{base}{approve_a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(visible(http.clone(), base.clone()).await, vec![a]);
    // Once only.
    let (status, body) = common::status_json(
        http.post(format!("{base}{approve_a}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("link-used"),
        "{body}"
    );

    let r = http.post(format!("{base}{delete_b}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let b_now: Value = http
        .get(format!("{base}/api/v1/comments?thread=/held"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        b_now["comments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == b && c["status"] == "deleted"),
        "{b_now}"
    );
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let queue: Value = http
        .get(format!("{base}/api/v1/admin/queue"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!queue.to_string().contains("held two"), "{queue}");
    assert_eq!(visible(http.clone(), base.clone()).await, vec![a]);

    // An altered link, or a reader's unsubscribe link used as a moderation link: 400.
    let r = http
        .post(format!("{base}{}A", b_links[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_get_one_summary_a_period_of_what_waits_and_none_when_nothing_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mail = MailServer::start().await;
    let addr = common::free_addr().to_string();
    // A "day" of 4 seconds, and one comment listed.
    let env = [
        ("IO360_MODERATION", "all"),
        ("IO360_NOTIFY_MODERATORS", "mod@site.test"),
        ("IO360_NOTIFY_DAILY_SUMMARY", "true"),
        ("IO360_NOTIFY_SUMMARY_SECS", "4"),
        ("IO360_NOTIFY_SUMMARY_LIST", "1"),
    ];
    let mut io360 = up_with(&addr, &data, &mail, &env).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let summaries = || {
        mail.to("mod@site.test")
            .into_iter()
            .filter(|m| m.header("Subject").unwrap().starts_with("Moderation:"))
            .collect::<Vec<_>>()
    };

    // A period passes with nothing waiting: no summary.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(summaries().is_empty(), "{:?}", summaries());

    post(
        &http,
        &base,
        "/held",
        json!({"text": "held one", "author": "Cy"}),
    )
    .await;
    post(&http, &base, "/held", json!({"text": "held two"})).await;
    wait_for("the first summary", 15, || summaries().len() == 1).await;
    let first_at = std::time::Instant::now();
    let first = &summaries()[0];
    assert_eq!(
        first.header("Subject").unwrap(),
        "Moderation: 2 comments are waiting for moderation"
    );
    let body = first.body();
    assert!(body.contains("held one"), "{body}");
    assert!(!body.contains("held two"), "one listed: {body}");
    assert!(body.contains("1 more in the moderation console"), "{body}");
    let approve = &links(&body, "moderate")[0];
    let r = http.post(format!("{base}{approve}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Killed and restarted at once: the next summary keeps its time, one period after the last.
    io360.kill9();
    let _io360 = up_with(&addr, &data, &mail, &env).await;
    wait_for("the second summary", 15, || summaries().len() == 2).await;
    assert!(
        first_at.elapsed() >= Duration::from_secs(3),
        "a second summary {:?} after the first",
        first_at.elapsed()
    );
    let second = summaries()
        .into_iter()
        .find(|m| !m.body().contains("held one"))
        .unwrap();
    assert_eq!(
        second.header("Subject").unwrap(),
        "Moderation: 1 comment is waiting for moderation"
    );
    let delete = &links(&second.body(), "moderate")[1];
    let r = http.post(format!("{base}{delete}")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Nothing waits any more: two periods pass without a summary.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(summaries().len(), 2, "{:?}", summaries());
}
