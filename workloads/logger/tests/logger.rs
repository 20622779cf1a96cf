//! The logger tier over real HTTP on loopback, with a real fjall directory.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::time::Duration;

use io360_common::serve::{Shutdown, ShutdownTrigger};
use io360_common::telemetry::Telemetry;
use io360_logger::{Config, Event, Kind, Shipper, ShipperConfig};
use serde_json::{Value, json};

struct Logger {
    url: String,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl Logger {
    async fn start(config: Config, addr: Option<std::net::SocketAddr>) -> Logger {
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(async move {
            io360_logger::serve(config, listener, shutdown)
                .await
                .unwrap()
        });
        let http = reqwest::Client::builder().build().unwrap();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await
                && r.status().is_success()
            {
                return Logger { url, trigger, task };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("logger never became ready");
    }

    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap();
    }
}

/// The keyring the tiers of this test process share.
static KEYS: std::sync::LazyLock<io360_common::auth::Keyring> =
    std::sync::LazyLock::new(io360_common::auth::Keyring::generate);

fn auth() -> io360_common::auth::TierAuthConfig {
    io360_common::auth::TierAuthConfig::in_memory(&KEYS)
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        tier_auth: auth(),
        ..Config::in_dir(dir.to_owned())
    }
}

/// A client that presents `tier`'s credential.
fn as_tier(tier: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        io360_common::auth::HEADER,
        io360_common::auth::Credential::of(tier, &KEYS).header(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A client that calls the logger as logic does: it may send events and read them.
fn client() -> reqwest::Client {
    as_tier("logic")
}

fn ev(kind: &str, actor: &str, thread: &str, time: &str) -> Value {
    json!({"time": time, "kind": kind, "tier": "logic", "actor": actor, "thread": thread})
}

fn now() -> String {
    io360_logger::event::now_rfc3339()
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let res = client()
        .post(format!("{url}/logger/v1/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn query(url: &str, q: &str) -> Value {
    let res = client()
        .get(format!("{url}/logger/v1/events?{q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn kinds(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_durable_and_queried_newest_first_by_kind_thread_actor_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    // Yesterday (well inside the retention limit), before the logger's own start event.
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let at = |minutes: i64| {
        (t0 + time::Duration::minutes(minutes))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let batch = json!({"events": [
        ev("comment.posted", "Ann", "/a", &at(0)),
        ev("comment.approved", "admin:Bo", "/a", &at(5)),
        ev("comment.posted", "Cy", "/b", &at(10)),
        ev("comments.suspended", "admin:Bo", "/b", &at(242)),
        ev("comments.resumed", "admin:Bo", "/b", &at(271)),
    ]});
    let until = format!("until={}", at(600).replace(':', "%3A").replace('+', "%2B"));
    let since_4h = format!("since={}", at(240).replace(':', "%3A").replace('+', "%2B"));
    let (status, body) = post(&logger.url, batch).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["stored"], 5);

    let all = query(&logger.url, &until).await;
    assert_eq!(
        kinds(&all),
        [
            "comments.resumed",
            "comments.suspended",
            "comment.posted",
            "comment.approved",
            "comment.posted"
        ]
    );
    let posted = query(&logger.url, "kind=comment.posted&thread=%2Fa").await;
    assert_eq!(posted["events"].as_array().unwrap().len(), 1);
    assert_eq!(posted["events"][0]["actor"], "Ann");
    let by_bo = query(&logger.url, &format!("actor=admin%3ABo&{since_4h}")).await;
    assert_eq!(kinds(&by_bo), ["comments.resumed", "comments.suspended"]);

    // Paging: two at a time, each page older than the last, until there is no `next`.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("{until}&limit=2");
        if let Some(c) = &cursor {
            q.push_str(&format!("&before={c}"));
        }
        let page = query(&logger.url, &q).await;
        seen.extend(kinds(&page));
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, kinds(&all));

    // Durable: a restart on the same directory finds everything.
    logger.stop().await;
    let logger = Logger::start(config(dir.path()), None).await;
    let again = query(&logger.url, &until).await;
    assert_eq!(kinds(&again), kinds(&all));
    // The logger records its own starts and stops.
    let own = query(&logger.url, "kind=tier.started,tier.stopped").await;
    assert_eq!(
        kinds(&own),
        ["tier.started", "tier.stopped", "tier.started"]
    );
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_4xx_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let http = client();
    let url = format!("{}/logger/v1/events", logger.url);

    let res = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"events\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let (status, p) = post(
        &logger.url,
        json!({"events": [ev("comment.posted", "a", "/t", &now()), ev("comment.exploded", "a", "/t", &now())]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p["field"], "events[1].kind", "{p}");

    let mut late = ev("comment.posted", "a", "/t", &now());
    late["time"] = json!("last tuesday");
    let (status, p) = post(
        &logger.url,
        json!({"events": [ev("comment.posted", "a", "/t", &now()), late]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p["field"], "events[1].time", "{p}");

    let mut bad_addr = ev("comment.posted", "a", "/t", &now());
    bad_addr["address"] = json!("not-an-address");
    let (status, p) = post(&logger.url, json!({"events": [bad_addr]})).await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("events[0].address"))
    );

    let (status, p) = post(&logger.url, json!({"events": [{"kind": "comment.posted"}]})).await;
    assert_eq!(status, 400, "{p}");
    let (status, _) = post(&logger.url, json!({"events": []})).await;
    assert_eq!(status, 400);
    let (status, p) = post(
        &logger.url,
        json!({"events": [ev("comment.posted", "a", "/t", &now())], "extra": 1}),
    )
    .await;
    assert_eq!(status, 400, "{p}");

    let many: Vec<Value> = (0..1001)
        .map(|_| ev("comment.posted", "a", "/t", &now()))
        .collect();
    let (status, p) = post(&logger.url, json!({"events": many})).await;
    assert_eq!(status, 413);
    assert_eq!(p["field"], "events");

    let mut huge = ev("comment.posted", "a", "/t", &now());
    huge["detail"] = json!("x".repeat(3 * 1024 * 1024));
    let (status, _) = post(&logger.url, json!({"events": [huge]})).await;
    assert_eq!(status, 413);

    let res = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);

    let page = query(&logger.url, "kind=comment.posted").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0, "{page}");

    // Bad queries are 400s too.
    for q in ["kind=nope", "limit=0", "since=yesterday", "before=zz"] {
        let res = client()
            .get(format!("{}/logger/v1/events?{q}", logger.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{q}");
    }
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_deletes_old_events_and_keeps_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention_secs = 3600;
    cfg.sweep_ms = 50;
    let logger = Logger::start(cfg, None).await;
    let old = (time::OffsetDateTime::now_utc() - time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, _) = post(
        &logger.url,
        json!({"events": [
            ev("comment.posted", "old", "/r", &old),
            ev("comment.posted", "new", "/r", &now()),
        ]}),
    )
    .await;
    assert_eq!(status, 202);
    let mut actors = Vec::new();
    for _ in 0..200 {
        let page = query(&logger.url, "thread=%2Fr").await;
        actors = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect();
        if actors == ["new"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(actors, ["new"]);
    let metrics = client()
        .get(format!("{}/metrics", logger.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("io360_logger_events_expired_total 1"),
        "{metrics}"
    );
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_keeps_the_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention_bytes = 8192;
    let logger = Logger::start(cfg, None).await;
    for i in 0..20 {
        let events: Vec<Value> = (0..10)
            .map(|j| ev("comment.posted", &format!("a{}", i * 10 + j), "/s", &now()))
            .collect();
        let (status, _) = post(&logger.url, json!({"events": events})).await;
        assert_eq!(status, 202);
    }
    let page = query(&logger.url, "thread=%2Fs&limit=1000").await;
    let events = page["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.len() < 100,
        "kept {} of 200 events",
        events.len()
    );
    assert_eq!(events[0]["actor"], "a199", "the newest is kept");
    assert!(
        events.iter().all(|e| e["actor"] != "a0"),
        "the oldest is gone"
    );
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_truncated_and_an_author_can_be_exported_and_erased() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let mut mine = ev("comment.posted", "Ann", "/e", &now());
    mine["authorKey"] = json!("key-ann");
    mine["address"] = json!("203.0.113.77");
    mine["comment"] = json!(7);
    let mut approved = ev("comment.approved", "admin", "/e", &now());
    approved["authorKey"] = json!("key-ann");
    approved["comment"] = json!(7);
    let mut theirs = ev("comment.posted", "Bob", "/e", &now());
    theirs["authorKey"] = json!("key-bob");
    theirs["address"] = json!("2001:db8:1:2::5");
    // Ann's key as a longer key's start, and as another field's text: neither is hers.
    let mut longer = ev("comment.posted", "Anna", "/e", &now());
    longer["authorKey"] = json!("key-anna");
    let named = ev("comment.posted", "key-ann", "/e", &now());
    let (status, _) = post(
        &logger.url,
        json!({"events": [mine, approved, theirs, longer, named]}),
    )
    .await;
    assert_eq!(status, 202);

    let page = query(&logger.url, "thread=%2Fe").await;
    let addrs: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(addrs, ["2001:db8:1::", "203.0.113.0"]);

    let export: Value = client()
        .get(format!("{}/logger/v1/export?author=key-ann", logger.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kinds(&export), ["comment.posted", "comment.approved"]);

    let res = client()
        .post(format!("{}/logger/v1/erase", logger.url))
        .json(&json!({"authorKey": "key-ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let erased: Value = res.json().await.unwrap();
    assert_eq!(erased["erased"], 2);

    let page = query(&logger.url, "thread=%2Fe").await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "the record of what happened stays");
    let ann = events
        .iter()
        .find(|e| e["kind"] == "comment.posted" && e["comment"] == 7)
        .unwrap();
    assert_eq!(ann["actor"], "erased");
    assert!(
        ann.get("address").is_none() && ann.get("authorKey").is_none(),
        "{ann}"
    );
    let approval = events
        .iter()
        .find(|e| e["kind"] == "comment.approved")
        .unwrap();
    assert_eq!(approval["actor"], "admin", "moderators are not the author");
    assert!(
        events
            .iter()
            .any(|e| e["actor"] == "Bob" && e["authorKey"] == "key-bob")
    );
    assert!(
        events
            .iter()
            .any(|e| e["actor"] == "Anna" && e["authorKey"] == "key-anna")
    );
    assert!(events.iter().any(|e| e["actor"] == "key-ann"));
    let export: Value = client()
        .get(format!("{}/logger/v1/export?author=key-ann", logger.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["events"].as_array().unwrap().len(), 0);
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_streams_new_events_as_they_become_durable() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let res = client()
        .get(format!(
            "{}/logger/v1/tail?kind=comment.deleted",
            logger.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let (status, _) = post(
        &logger.url,
        json!({"events": [ev("comment.posted", "x", "/t", &now()), ev("comment.deleted", "admin", "/t", &now())]}),
    )
    .await;
    assert_eq!(status, 202);
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("comment.deleted") && text.contains("\"actor\":\"admin\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "{text}");
    assert!(
        !text.contains("comment.posted"),
        "the kind filter holds: {text}"
    );
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipper_never_blocks_drops_and_counts_when_full_and_resumes_when_the_logger_returns() {
    // Nothing listens at this address yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let telemetry = Telemetry::new("test");
    let shipper = Shipper::new(
        "logic",
        &ShipperConfig {
            logger_url: Some(format!("http://{addr}")),
            logger_buffer: 10,
            logger_batch: 5,
            logger_flush_ms: 50,
            logger_linger_ms: 10,
        },
        &auth(),
        &telemetry,
    )
    .unwrap();
    shipper.start();
    // `emit` is a try_send: it returns at once whether or not anything is listening.
    for i in 0..40 {
        shipper.emit(Event::now(Kind::CommentPosted, "test", format!("r{i}")).thread("/ship"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let dropped = shipper.dropped();
    assert!(
        (25..=30).contains(&dropped),
        "buffer 10 + one held batch of 5 fit; the rest is dropped: {dropped}"
    );
    assert!(
        telemetry
            .encode()
            .contains(&format!("io360_logger_events_dropped_total {dropped}"))
    );

    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), Some(addr)).await;
    let want = 40 - dropped as usize;
    let mut got = 0;
    for _ in 0..400 {
        got = query(&logger.url, "thread=%2Fship&limit=1000").await["events"]
            .as_array()
            .unwrap()
            .len();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        got, want,
        "everything not dropped arrives after the logger returns"
    );
    // And new events flow again.
    shipper.emit(Event::now(Kind::CommentPosted, "test", "after").thread("/ship"));
    shipper.stop(Duration::from_secs(5)).await;
    let page = query(&logger.url, "thread=%2Fship&actor=after").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_event_is_stored_once_so_retries_and_replicas_do_not_double() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let at = now();
    let suspended = json!({"time": at, "kind": "comments.suspended", "tier": "logic",
        "actor": "operator", "reason": "overload", "detail": "Comments are paused."});
    let batch = json!({"events": [suspended, ev("comment.posted", "Ann", "/a", &at)]});
    let (status, body) = post(&logger.url, batch.clone()).await;
    assert_eq!((status, &body["stored"]), (202, &json!(2)), "{body}");
    // The same batch again (a retry whose first answer was lost): nothing new.
    let (status, body) = post(&logger.url, batch.clone()).await;
    assert_eq!((status, &body["stored"]), (202, &json!(0)), "{body}");
    // Two replicas report the same suspension in one batch; a different event at the same
    // instant is still its own event.
    let twice = json!({"events": [suspended, suspended, ev("comment.posted", "Bo", "/a", &at)]});
    let (status, body) = post(&logger.url, twice).await;
    assert_eq!((status, &body["stored"]), (202, &json!(1)), "{body}");
    let page = query(&logger.url, "kind=comments.suspended,comment.posted").await;
    let mut stored = kinds(&page);
    stored.sort();
    assert_eq!(
        stored,
        ["comment.posted", "comment.posted", "comments.suspended"]
    );
    // A retry that comes after a restart is still nothing new. Its event is dated a minute
    // ahead, after the logger's own start event, so it is the newest the log holds.
    let ahead = (time::OffsetDateTime::now_utc() + Duration::from_secs(60))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let batch = json!({"events": [ev("comment.posted", "Cy", "/a", &ahead)]});
    let (status, body) = post(&logger.url, batch.clone()).await;
    assert_eq!((status, &body["stored"]), (202, &json!(1)), "{body}");
    logger.stop().await;
    let logger = Logger::start(config(dir.path()), None).await;
    let (status, body) = post(&logger.url, batch).await;
    assert_eq!((status, &body["stored"]), (202, &json!(0)), "{body}");
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_loggers_byte_limit_is_shipped_in_halves_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let telemetry = Telemetry::new("test");
    let shipper = Shipper::new(
        "logic",
        &ShipperConfig {
            logger_url: Some(logger.url.clone()),
            logger_buffer: 2000,
            logger_batch: 1000,
            logger_flush_ms: 1000,
            logger_linger_ms: 200,
        },
        &auth(),
        &telemetry,
    )
    .unwrap();
    shipper.start();
    // Quotes are escaped in JSON, so each event takes over 2.5 KB on the wire and a full
    // batch of 1,000 is over the logger's 2 MiB.
    let quotes = "\"".repeat(1000);
    for i in 0..1000 {
        shipper.emit(
            Event::now(Kind::CommentPosted, "test", format!("big{i}"))
                .thread("/big")
                .reason("\"".repeat(200))
                .detail(quotes.clone()),
        );
    }
    shipper.stop(Duration::from_secs(10)).await;
    assert_eq!(shipper.dropped(), 0);
    let page = query(&logger.url, "thread=%2Fbig&limit=1000").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1000);
    logger.stop().await;
}

#[test]
fn a_batch_size_over_the_loggers_limit_is_refused_at_start() {
    let config = ShipperConfig {
        logger_url: Some("http://127.0.0.1:1".into()),
        logger_buffer: 10_000,
        logger_batch: 5000,
        logger_flush_ms: 1000,
        logger_linger_ms: 100,
    };
    let err = config.validate().unwrap_err();
    assert!(
        err.contains("IO360_LOGGER_BATCH is 5000") && err.contains("at most 1000"),
        "{err}"
    );
    assert!(ShipperConfig::default().validate().is_ok());
}

/// Opens a request whose body never finishes arriving: it holds its place in flight until
/// the logger gives up on it. Answers the raw connection, to read that answer from.
async fn hold_a_request(url: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /logger/v1/events HTTP/1.1\r\nhost: logger\r\n{}: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        io360_common::auth::HEADER,
        KEYS.credential("logic"),
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_or_the_time_limit_get_503() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_in_flight = 1;
    cfg.limits.request_timeout_secs = 1.0;
    let logger = Logger::start(cfg, None).await;
    let mut held = hold_a_request(&logger.url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = as_tier("logic")
        .get(format!("{}/logger/v1/events", logger.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let p: io360_common::Problem = res.json().await.unwrap();
    assert_eq!(p.slug(), "overloaded");
    // The held request is answered when its time is up, and its place is free again.
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut answer))
        .await
        .expect("the held request was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    let res = as_tier("logic")
        .get(format!("{}/logger/v1/events", logger.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_io360_tiers_may_send_events_and_only_logic_may_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Logger::start(config(dir.path()), None).await;
    let url = format!("{}/logger/v1/events", logger.url);
    let forged = json!({"events": [ev("comment.deleted", "admin", "/forged", &now())]});

    // A process that can reach the port but holds no credential.
    let res = reqwest::Client::new()
        .post(&url)
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Io360-Tier");
    let p: Value = res.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://io360.dev/problems/tier-credential-required"
    );
    // A credential made with another keyring, and one cut short.
    let other = io360_common::auth::Keyring::generate().credential("logic");
    let mine = KEYS.credential("logic");
    for bad in [other.as_str(), &mine[..mine.len() - 2]] {
        let res = reqwest::Client::new()
            .post(&url)
            .header(io360_common::auth::HEADER, bad)
            .json(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // Reads, erase and export are logic's only.
    for path in ["events", "export?author=a", "tail"] {
        let res = as_tier("store")
            .get(format!("{}/logger/v1/{path}", logger.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let res = reqwest::get(format!("{}/logger/v1/{path}", logger.url))
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    // Nothing forged was kept; a tier's own event is.
    assert_eq!(
        query(&logger.url, "thread=%2Fforged").await["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let res = as_tier("store")
        .post(&url)
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(
        query(&logger.url, "thread=%2Fforged").await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    logger.stop().await;
}
