//! The outbox and the sender against a real SMTP conversation on loopback: double opt-in, a
//! digest per thread, unsubscribe honoured, a mail server down for a while, a send a crash
//! interrupted.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod smtp;

use std::sync::Arc;
use std::time::Duration;

use io360_common::model::{Change, ChangeKind, Comment, Status, Votes};
use io360_common::serve::Shutdown;
use io360_notify::link::{Action, Signer};
use io360_notify::outbox::{Scope, Subscription};
use io360_notify::sender::SendMetrics;
use io360_notify::{Letters, Outbox, Phrases, Sender};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use smtp::MailServer;

const SECRET: &[u8] = b"a test secret of enough bytes";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn change(pos: u64, thread: &str, id: u64, parent: Option<u64>, status: Status) -> Change {
    Change {
        pos,
        thread: thread.into(),
        seq: pos,
        kind: ChangeKind::Created,
        comment: Some(Comment {
            id,
            thread: thread.into(),
            seq: pos,
            parent,
            author: Some(format!("Author {id}")),
            website: None,
            text: format!("comment number {id}"),
            html: String::new(),
            created: "2026-01-01T00:00:00Z".into(),
            modified: None,
            status,
            votes: Votes::default(),
        }),
    }
}

fn sub(email: &str, thread: &str, scope: Scope) -> Subscription {
    Subscription {
        v: 1,
        email: email.into(),
        thread: thread.into(),
        scope,
        confirmed: false,
        created: now(),
    }
}

/// A sender running on `outbox` towards `mail`; stops with the returned trigger.
fn start_sender(
    outbox: &Outbox,
    mail: &MailServer,
    digest: Duration,
) -> (
    io360_common::serve::ShutdownTrigger,
    Arc<tokio::sync::Notify>,
    SendMetrics,
    tokio::task::JoinHandle<()>,
) {
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::from_url(&mail.url())
        .unwrap()
        .timeout(Some(Duration::from_secs(5)))
        .build();
    let metrics = SendMetrics::default();
    let sender = Sender {
        outbox: outbox.clone(),
        mailer,
        letters: Arc::new(Letters {
            from: "io360 <comments@site.test>".parse().unwrap(),
            public_url: "http://127.0.0.1:9".into(),
            signer: Signer::new(SECRET),
            phrases: Phrases::default(),
        }),
        digest,
        metrics: metrics.clone(),
    };
    let (trigger, shutdown) = Shutdown::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(sender.run(wake.clone(), shutdown));
    (trigger, wake, metrics, task)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The token of the first link to `path` in a message.
fn token_in(text: &str, path: &str) -> String {
    let at = text
        .find(&format!("/api/v1/notifications/{path}?token="))
        .unwrap_or_else(|| panic!("no {path} link in:\n{text}"));
    let rest = &text[at..];
    let t = &rest[rest.find("token=").unwrap() + 6..];
    t.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_then_one_digest_per_thread_then_unsubscribe_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let mail = MailServer::start().await;
    let (_stop, wake, metrics, _task) = start_sender(&outbox, &mail, Duration::from_secs(1));
    let signer = Signer::new(SECRET);

    assert!(
        outbox
            .subscribe(sub("reader@site.test", "/t", Scope::Thread), now())
            .unwrap()
    );
    // Asking twice sends one confirmation.
    assert!(
        !outbox
            .subscribe(sub("reader@site.test", "/t", Scope::Thread), now())
            .unwrap()
    );
    wake.notify_one();
    wait_for("the confirmation", || {
        mail.to("reader@site.test").len() == 1
    })
    .await;
    let confirmation = mail.to("reader@site.test").remove(0);
    assert!(
        confirmation
            .header("Subject")
            .unwrap()
            .starts_with("Confirm")
    );

    // Unconfirmed: a new comment queues nothing.
    assert_eq!(
        outbox
            .apply(&change(1, "/t", 1, None, Status::Approved), now())
            .unwrap(),
        0
    );

    let claim = signer
        .verify(&token_in(&confirmation.body(), "confirm"), now())
        .unwrap();
    assert_eq!(claim.a, Action::Confirm);
    assert!(outbox.confirm(&claim.t, &claim.s, &claim.e).unwrap());

    // Three comments in the window, one of them held (it does not notify until approved),
    // one in another thread: one digest of two.
    let batch = [
        change(2, "/t", 2, Some(1), Status::Approved),
        change(3, "/t", 3, None, Status::Pending),
        change(4, "/other", 4, None, Status::Approved),
        change(5, "/t", 5, Some(2), Status::Approved),
    ];
    let mut queued = 0;
    for c in &batch {
        queued += outbox.apply(c, now()).unwrap();
    }
    assert_eq!(queued, 2);
    // The feed replayed (a crash before the cursor moved, a reconnect) queues nothing again.
    for c in &batch {
        assert_eq!(outbox.apply(c, now()).unwrap(), 0);
    }
    assert_eq!(outbox.cursor().unwrap(), 5);
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mail.to("reader@site.test").len(),
        1,
        "the digest waits for its window"
    );
    wait_for("the digest", || mail.to("reader@site.test").len() == 2).await;
    let digest = mail.to("reader@site.test").remove(1);
    assert_eq!(digest.header("Subject").unwrap(), "2 new comments on /t");
    let body = digest.body();
    assert!(
        body.contains("comment number 2") && body.contains("comment number 5"),
        "{body}"
    );
    assert!(
        !body.contains("comment number 3"),
        "a held comment leaked: {body}"
    );
    assert_eq!(
        digest.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let header = digest.header("List-Unsubscribe").unwrap();
    let claim = signer
        .verify(&token_in(&header, "unsubscribe"), now())
        .unwrap();
    assert_eq!(claim.a, Action::Unsubscribe);
    assert_eq!(
        token_in(&header, "unsubscribe"),
        token_in(&body, "unsubscribe")
    );
    // Approving the held comment notifies once, later; re-approving does not.
    let mut approved = change(6, "/t", 3, None, Status::Approved);
    approved.kind = ChangeKind::Approved;
    assert_eq!(outbox.apply(&approved, now()).unwrap(), 1);
    assert_eq!(outbox.apply(&approved, now()).unwrap(), 0);

    // Unsubscribing drops what was queued and stops what comes.
    outbox.unsubscribe(&claim.t, &claim.s, &claim.e).unwrap();
    assert_eq!(
        outbox
            .apply(&change(7, "/t", 7, None, Status::Approved), now())
            .unwrap(),
        0
    );
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mail.to("reader@site.test").len(),
        2,
        "{:?}",
        mail.messages()
    );
    assert_eq!(metrics.sent.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_down_for_a_while_delays_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let mut mail = MailServer::start().await;
    for who in ["a@site.test", "b@site.test"] {
        outbox
            .subscribe(sub(who, "/t", Scope::Replies(1)), now())
            .unwrap();
        outbox.confirm("/t", &Scope::Replies(1), who).unwrap();
    }
    mail.down().await;
    let (_stop, wake, metrics, _task) = start_sender(&outbox, &mail, Duration::from_secs(0));
    for id in 2..5 {
        outbox
            .apply(&change(id, "/t", id, Some(1), Status::Approved), now())
            .unwrap();
        wake.notify_one();
    }
    wait_for("retries", || metrics.retried.get() >= 2).await;
    assert!(mail.messages().is_empty());
    mail.up().await;
    // The text part carries each comment on a line of its own.
    wait_for("everything queued", || {
        ["a@site.test", "b@site.test"].iter().all(|who| {
            let bodies: String = mail.to(who).iter().map(|m| m.body()).collect();
            (2..5).all(|id| bodies.contains(&format!("comment number {id}\r\n")))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Each comment reached each reader once (a message may carry several).
    for who in ["a@site.test", "b@site.test"] {
        let bodies: String = mail.to(who).iter().map(|m| m.body()).collect();
        for id in 2..5 {
            assert_eq!(
                bodies.matches(&format!("comment number {id}\r\n")).count(),
                1,
                "{bodies}"
            );
        }
    }
    assert_eq!(outbox.queued().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_interrupted_by_a_crash_goes_again_under_the_same_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let mail = MailServer::start().await;
    {
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .subscribe(sub("c@site.test", "/t", Scope::Thread), now())
            .unwrap();
        outbox.confirm("/t", &Scope::Thread, "c@site.test").unwrap();
        outbox
            .apply(&change(1, "/t", 1, None, Status::Approved), now())
            .unwrap();
        // The state a crash leaves after "sending" was persisted and before "sent" was: the
        // server may or may not have the message.
        let mut rows = outbox.rows_of("c@site.test").unwrap();
        rows.retain(|r| r.event == "comment:1");
        outbox
            .mark_sending(&mut rows, &[], "<interrupted.1@site.test>")
            .unwrap();
    }
    let outbox = Outbox::open(dir.path()).unwrap();
    let (_stop, _wake, _metrics, _task) = start_sender(&outbox, &mail, Duration::from_secs(3600));
    wait_for("the resend", || {
        mail.to("c@site.test")
            .iter()
            .any(|m| m.body().contains("comment number 1"))
    })
    .await;
    let resent: Vec<_> = mail
        .to("c@site.test")
        .into_iter()
        .filter(|m| m.body().contains("comment number 1"))
        .collect();
    assert_eq!(resent.len(), 1);
    assert_eq!(
        resent[0].header("Message-ID").as_deref(),
        Some("<interrupted.1@site.test>")
    );
    // Sent is recorded: the same change replayed queues nothing.
    wait_for("the sent mark", || {
        outbox.rows_of("c@site.test").unwrap().is_empty()
    })
    .await;
    assert_eq!(
        outbox
            .apply(&change(1, "/t", 1, None, Status::Approved), now())
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_address_keeps_nothing_and_is_mailed_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    outbox
        .subscribe(sub("e@site.test", "/t", Scope::Thread), now())
        .unwrap();
    outbox
        .subscribe(sub("e@site.test", "/u", Scope::Replies(3)), now())
        .unwrap();
    outbox.confirm("/t", &Scope::Thread, "e@site.test").unwrap();
    outbox
        .apply(&change(1, "/t", 1, None, Status::Approved), now())
        .unwrap();
    let kept = outbox.subscriptions_of("E@site.test").unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(outbox.erase("e@site.test").unwrap(), 2);
    assert!(outbox.subscriptions_of("e@site.test").unwrap().is_empty());
    assert!(outbox.rows_of("e@site.test").unwrap().is_empty());
    assert_eq!(
        outbox
            .apply(&change(2, "/t", 2, None, Status::Approved), now())
            .unwrap(),
        0
    );
}
