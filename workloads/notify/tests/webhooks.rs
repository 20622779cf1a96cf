//! Webhooks against a receiver on loopback that checks what it gets as a site's receiver
//! should: signed deliveries of the kinds an endpoint asked for, retries with growing delays
//! until the receiver takes them, a bounded queue, a delivery given up after its last attempt,
//! and a log of every attempt. The receiver is on 127.0.0.1, so these run with private
//! addresses allowed, as a deployment would only for a receiver inside its own network.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod receiver;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderMap;
use io360_common::model::{Change, ChangeKind, Comment, Status, Votes};
use io360_common::serve::Shutdown;
use io360_notify::hooks::{Endpoint, EventKind};
use io360_notify::webhook::{HookMetrics, WebhookConfig};
use io360_notify::{Deliverer, Outbox};
use receiver::Receiver;

const SECRET: &str = "whsec_a-test-secret-of-enough-bytes";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn change(pos: u64, kind: ChangeKind, status: Status) -> Change {
    Change {
        pos,
        thread: "/post".into(),
        seq: pos,
        kind,
        comment: Some(Comment {
            id: pos,
            thread: "/post".into(),
            seq: pos,
            parent: None,
            author: Some("Ada".into()),
            website: None,
            text: format!("comment {pos}"),
            html: format!("<p>comment {pos}</p>"),
            created: "2026-01-01T00:00:00Z".into(),
            modified: None,
            status,
            votes: Votes::default(),
        }),
    }
}

fn config(retry_ms: u64, max_attempts: u32) -> WebhookConfig {
    WebhookConfig {
        enabled: true,
        allow_private: true,
        max_endpoints: 5,
        queue: 100,
        max_attempts,
        retry_ms,
        retry_max_secs: 60,
        timeout_secs: 2,
    }
}

fn endpoint(id: &str, url: &str, events: &[EventKind]) -> Endpoint {
    Endpoint {
        v: 1,
        id: id.into(),
        url: url.into(),
        events: events.to_vec(),
        secret: SECRET.into(),
        created: now(),
    }
}

fn start(
    outbox: &Outbox,
    config: WebhookConfig,
) -> (
    io360_common::serve::ShutdownTrigger,
    Arc<tokio::sync::Notify>,
    HookMetrics,
) {
    let (trigger, shutdown) = Shutdown::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let metrics = HookMetrics::default();
    tokio::spawn(
        Deliverer::new(outbox.clone(), config, metrics.clone()).run(wake.clone(), shutdown),
    );
    (trigger, wake, metrics)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_of_the_kinds_asked_for_reach_a_verifying_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let rx = Receiver::start(SECRET).await;
    outbox
        .register(
            &endpoint(
                "wh_00000000000000a1",
                &rx.url(),
                &[EventKind::CommentCreated, EventKind::CommentHeld],
            ),
            5,
        )
        .unwrap();
    let (_stop, wake, metrics) = start(&outbox, config(100, 5));

    outbox
        .apply_all(
            &change(1, ChangeKind::Created, Status::Approved),
            now(),
            &[],
        )
        .unwrap();
    outbox
        .apply_all(&change(2, ChangeKind::Created, Status::Pending), now(), &[])
        .unwrap();
    // Not asked for: an edit and a vote.
    outbox
        .apply_all(&change(3, ChangeKind::Edited, Status::Approved), now(), &[])
        .unwrap();
    outbox
        .apply_all(&change(4, ChangeKind::Voted, Status::Approved), now(), &[])
        .unwrap();
    // Replayed after a crash, a change queues the same delivery, not a second one.
    outbox
        .apply_all(
            &change(1, ChangeKind::Created, Status::Approved),
            now(),
            &[],
        )
        .unwrap();
    wake.notify_one();

    wait_for("two deliveries", 10, || rx.accepted().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.arrivals();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|a| a.refused.is_none()), "{got:?}");
    assert_eq!(got[0].body["type"], "comment.created");
    assert_eq!(got[0].body["comment"]["text"], "comment 1");
    assert_eq!(got[0].body["thread"], "/post");
    assert_eq!(got[1].body["type"], "comment.held");
    assert_ne!(got[0].id, got[1].id);
    assert_eq!(metrics.sent.get(), 2);
    assert_eq!(outbox.deliveries_waiting().unwrap(), 0);

    let log = outbox.attempts("wh_00000000000000a1").unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|a| a.outcome == "sent" && a.status == Some(204))
    );
    assert_eq!(log[0].event, EventKind::CommentHeld, "newest first");
}

#[test]
fn a_forged_stale_or_tampered_delivery_is_one_a_receiver_rejects() {
    let body = r#"{"id":"wh_1-1","type":"comment.created"}"#;
    let ts = now();
    let headers = |ts: i64, sig: String| {
        let mut h = HeaderMap::new();
        h.insert("io360-webhook-id", "wh_1-1".parse().unwrap());
        h.insert("io360-webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("io360-webhook-signature", sig.parse().unwrap());
        h
    };
    let good = io360_notify::webhook::sign(SECRET, ts, body);
    assert_eq!(
        receiver::verify(SECRET, &headers(ts, good.clone()), body.as_bytes(), ts),
        Ok("wh_1-1".into())
    );
    // Signed with another secret.
    let forged = io360_notify::webhook::sign("whsec_someone-elses-secret", ts, body);
    assert!(receiver::verify(SECRET, &headers(ts, forged), body.as_bytes(), ts).is_err());
    // The body changed in transit.
    let tampered = body.replace("created", "deleted");
    assert!(receiver::verify(SECRET, &headers(ts, good.clone()), tampered.as_bytes(), ts).is_err());
    // A captured request replayed later: its timestamp cannot be moved without the secret.
    assert!(
        receiver::verify(
            SECRET,
            &headers(ts, good.clone()),
            body.as_bytes(),
            ts + 301
        )
        .is_err()
    );
    assert!(receiver::verify(SECRET, &headers(ts + 400, good), body.as_bytes(), ts + 400).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_with_growing_delays_then_the_delivery_once() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let rx = Receiver::start(SECRET).await;
    rx.fail_next.store(3, Ordering::SeqCst);
    let id = "wh_00000000000000b2";
    outbox
        .register(&endpoint(id, &rx.url(), &[EventKind::CommentCreated]), 5)
        .unwrap();
    let (_stop, wake, metrics) = start(&outbox, config(300, 6));
    outbox
        .apply_all(
            &change(7, ChangeKind::Created, Status::Approved),
            now(),
            &[],
        )
        .unwrap();
    wake.notify_one();

    wait_for("the delivery", 20, || !rx.accepted().is_empty()).await;
    let got = rx.arrivals();
    assert_eq!(got.len(), 4, "three failures then a success: {got:?}");
    assert!(
        got.iter().all(|a| a.id == got[0].id),
        "one delivery id on every attempt"
    );
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 300 ms, 600 ms, 1200 ms, each shortened by up to a quarter.
    for (n, gap) in gaps.iter().enumerate() {
        let full = Duration::from_millis(300 << n);
        assert!(
            *gap >= full.mul_f64(0.74),
            "gap {n} is {gap:?}, under {full:?} less a quarter"
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "delays grow: {gaps:?}"
    );
    assert_eq!(metrics.retried.get(), 3);
    assert_eq!(metrics.sent.get(), 1);
    let log = outbox.attempts(id).unwrap();
    let outcomes: Vec<(u32, &str, Option<u16>)> = log
        .iter()
        .rev()
        .map(|a| (a.attempt, a.outcome.as_str(), a.status))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "retrying", Some(500)),
            (2, "retrying", Some(500)),
            (3, "retrying", Some(500)),
            (4, "sent", Some(204)),
        ]
    );
    assert!(log[1].error.as_deref().unwrap().contains("500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_is_given_up_after_the_last_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let id = "wh_00000000000000c3";
    outbox
        .register(&endpoint(id, &url, &[EventKind::CommentCreated]), 5)
        .unwrap();
    let (_stop, wake, metrics) = start(&outbox, config(50, 3));
    outbox
        .apply_all(
            &change(1, ChangeKind::Created, Status::Approved),
            now(),
            &[],
        )
        .unwrap();
    wake.notify_one();
    wait_for("the delivery to be given up", 10, || {
        metrics.failed.get() == 1
    })
    .await;
    assert_eq!(metrics.retried.get(), 2);
    assert_eq!(outbox.deliveries_waiting().unwrap(), 0);
    let log = outbox.attempts(id).unwrap();
    assert_eq!(log[0].outcome, "failed");
    assert_eq!(log[0].attempt, 3);
    assert_eq!(log[0].status, None);
    assert!(log[0].error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_queue_is_bounded_and_what_overflows_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap().with_webhook_queue(2);
    let id = "wh_00000000000000d4";
    outbox
        .register(
            &endpoint(id, "http://127.0.0.1:9/hook", &[EventKind::CommentCreated]),
            5,
        )
        .unwrap();
    let mut dropped = 0;
    for pos in 1..=5 {
        dropped += outbox
            .apply_all(
                &change(pos, ChangeKind::Created, Status::Approved),
                now(),
                &[],
            )
            .unwrap()
            .dropped;
    }
    assert_eq!(dropped, 3);
    assert_eq!(outbox.waiting(id, 100), 2);
    let log = outbox.attempts(id).unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|a| a.outcome == "dropped"));
    // Only the last attempts are kept.
    for pos in 6..200 {
        outbox
            .apply_all(
                &change(pos, ChangeKind::Created, Status::Approved),
                now(),
                &[],
            )
            .unwrap();
    }
    assert_eq!(
        outbox.attempts(id).unwrap().len(),
        io360_notify::hooks::LOG_SIZE
    );
    // A removed endpoint takes its queue and log with it.
    assert!(outbox.unregister(id).unwrap());
    assert_eq!(outbox.deliveries_waiting().unwrap(), 0);
    assert!(outbox.attempts(id).unwrap().is_empty());
}

#[test]
fn registering_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    for n in 0..3 {
        outbox
            .register(
                &endpoint(
                    &format!("wh_000000000000000{n}"),
                    "http://127.0.0.1:9/",
                    &[EventKind::CommentCreated],
                ),
                3,
            )
            .unwrap();
    }
    assert!(matches!(
        outbox.register(
            &endpoint(
                "wh_0000000000000009",
                "http://127.0.0.1:9/",
                &[EventKind::CommentCreated]
            ),
            3
        ),
        Err(io360_notify::hooks::RegisterError::TooMany(3))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_a_delivery_never_connects_to_a_private_address() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let rx = Receiver::start(SECRET).await;
    // Registered while allowed (or resolving elsewhere then); the setting is off now.
    let id = "wh_00000000000000e5";
    for (n, url) in [
        rx.url(),
        format!("http://localhost:{}/hook", rx.addr.port()),
    ]
    .iter()
    .enumerate()
    {
        outbox
            .register(
                &endpoint(
                    &format!("{}{n}", &id[..18]),
                    url,
                    &[EventKind::CommentCreated],
                ),
                5,
            )
            .unwrap();
    }
    let mut c = config(50, 2);
    c.allow_private = false;
    let (_stop, wake, metrics) = start(&outbox, c);
    outbox
        .apply_all(
            &change(1, ChangeKind::Created, Status::Approved),
            now(),
            &[],
        )
        .unwrap();
    wake.notify_one();
    wait_for("both deliveries to be given up", 10, || {
        metrics.failed.get() == 2
    })
    .await;
    assert!(rx.arrivals().is_empty(), "nothing reached the receiver");
    for n in 0..2 {
        let log = outbox.attempts(&format!("{}{n}", &id[..18])).unwrap();
        let e = log[0].error.as_deref().unwrap();
        assert!(e.contains("IO360_WEBHOOK_ALLOW_PRIVATE"), "{e}");
    }
}
