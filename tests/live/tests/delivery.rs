//! Live updates across real store, sync and longpoll processes on loopback: every
//! acknowledged comment reaches every client once and in order, through reconnects, kills
//! and restarts; eviction is an explicit reset; bad input is a clear 4xx.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use io360_live_tests::{
    Ack, Cluster, Follower, Options, assert_complete, post, read_answer, url_encode,
};
use io360_store::StoreClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

type Acks = Arc<Mutex<BTreeMap<String, Vec<Ack>>>>;

/// A bad request: path and query, headers, the status expected, the field named.
type BadCase = (
    String,
    Vec<(&'static str, &'static str)>,
    u16,
    Option<&'static str>,
);

fn threads(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/{prefix}/post-{i}")).collect()
}

/// Starts `posters` tasks that post `each` comments to random threads of `threads`, with a
/// pause between posts; acknowledgements land in `acks`.
fn start_posters(
    store: StoreClient,
    threads: &[String],
    posters: usize,
    each: usize,
    pause: Duration,
    acks: Acks,
    tag: &str,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    (0..posters)
        .map(|p| {
            let store = store.clone();
            let threads = threads.to_vec();
            let acks = acks.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                for i in 0..each {
                    let thread = &threads[fastrand_index(p * 7919 + i, threads.len())];
                    let key = format!("{tag}-{p}-{i}");
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let ack = post(&store, thread, &key, deadline).await?;
                    acks.lock()
                        .await
                        .entry(thread.clone())
                        .or_default()
                        .push(ack);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Ok(())
            })
        })
        .collect()
}

/// A cheap, deterministic spread of posts over threads.
fn fastrand_index(n: usize, len: usize) -> usize {
    let mut x = n as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % len as u64) as usize
}

async fn heads_of(acks: &Acks, threads: &[String]) -> BTreeMap<String, u64> {
    let acks = acks.lock().await;
    threads
        .iter()
        .map(|t| {
            let head = acks
                .get(t)
                .map(|a| a.iter().map(|a| a.seq).max().unwrap_or(0))
                .unwrap_or(0);
            (t.clone(), head)
        })
        .collect()
}

async fn finish_posters(handles: Vec<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    for h in handles {
        h.await??;
    }
    Ok(())
}

/// Runs followers while posters post, then checks every follower saw everything.
async fn followers_see_everything(
    followers: Vec<Follower>,
    acks: Acks,
    posters: Vec<tokio::task::JoinHandle<Result<()>>>,
    all_threads: &[String],
    during: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(Mutex::new(BTreeMap::new()));
    let deadline = Instant::now() + Duration::from_secs(240);
    let tasks: Vec<_> = followers
        .into_iter()
        .map(|mut f| {
            let stop = stop.clone();
            let heads = heads.clone();
            tokio::spawn(async move {
                let r = f.follow(stop, heads, deadline).await;
                (f, r)
            })
        })
        .collect();
    during.await?;
    finish_posters(posters).await?;
    *heads.lock().await = heads_of(&acks, all_threads).await;
    stop.store(true, Ordering::SeqCst);
    let acks = acks.lock().await.clone();
    for (i, t) in tasks.into_iter().enumerate() {
        let (f, r) = t.await?;
        r.with_context(|| format!("follower {i}"))?;
        let mine: BTreeMap<String, Vec<Ack>> = acks
            .iter()
            .filter(|(t, _)| f.threads.contains_key(*t))
            .map(|(t, a)| (t.clone(), a.clone()))
            .collect();
        assert_complete(&format!("follower {i}"), &f, 0, &mine)?;
    }
    Ok(())
}

fn show_logs_on_error(cluster: &Cluster, r: Result<()>) -> Result<()> {
    if r.is_err() {
        for t in cluster.syncs.iter().chain(&cluster.longpolls) {
            eprintln!("{}", t.log_tail());
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connected_clients_get_every_event_once_in_order() -> Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let urls = cluster.longpoll_urls();
    let all = threads("steady", 30);
    let acks: Acks = Arc::default();
    let mut followers = vec![
        // One poll covering every thread, on each instance.
        Follower::new(vec![urls[0].clone()], &all),
        Follower::new(vec![urls[1].clone()], &all),
    ];
    // And one browser per thread, spread over both instances.
    for (i, t) in all.iter().enumerate() {
        followers.push(Follower::new(
            vec![urls[i % 2].clone()],
            std::slice::from_ref(t),
        ));
    }
    let posters = start_posters(
        cluster.store_client(),
        &all,
        8,
        250,
        Duration::ZERO,
        acks.clone(),
        "steady",
    );
    let r =
        followers_see_everything(followers, acks.clone(), posters, &all, async { Ok(()) }).await;
    show_logs_on_error(&cluster, r)?;
    let total: usize = acks.lock().await.values().map(Vec::len).sum();
    assert_eq!(total, 2000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_comes_back_elsewhere_gets_exactly_what_it_missed() -> Result<()> {
    let cluster = Cluster::start(Options {
        syncs: 2,
        ..Options::default()
    })
    .await?;
    let urls = cluster.longpoll_urls();
    let all = threads("away", 5);
    let store = cluster.store_client();
    let acks: Acks = Arc::default();
    for t in &all {
        for i in 0..20 {
            let a = post(
                &store,
                t,
                &format!("{t}-first-{i}"),
                Instant::now() + Duration::from_secs(30),
            )
            .await?;
            acks.lock().await.entry(t.clone()).or_default().push(a);
        }
    }
    let mut first = Follower::new(vec![urls[0].clone()], &all);
    first
        .until(
            &heads_of(&acks, &all).await,
            Instant::now() + Duration::from_secs(30),
        )
        .await?;
    assert!(first.positions().values().all(|p| *p == 20));
    // Gone: 100 more comments per thread land while the client is away.
    let posters = start_posters(
        store.clone(),
        &all,
        5,
        100,
        Duration::ZERO,
        acks.clone(),
        "away",
    );
    finish_posters(posters).await?;
    let mut back = Follower::new(vec![urls[1].clone()], &all).since(20);
    back.until(
        &heads_of(&acks, &all).await,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    let acks = acks.lock().await.clone();
    assert_complete("returning client", &back, 20, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kills_and_restarts_lose_and_repeat_nothing() -> Result<()> {
    let mut cluster = Cluster::start(Options {
        syncs: 2,
        ..Options::default()
    })
    .await?;
    let urls = cluster.longpoll_urls();
    let all = threads("crash", 10);
    let acks: Acks = Arc::default();
    let followers = vec![
        Follower::new(vec![urls[0].clone(), urls[1].clone()], &all),
        Follower::new(vec![urls[0].clone(), urls[1].clone()], &all),
        Follower::new(vec![urls[1].clone(), urls[0].clone()], &all),
        Follower::new(vec![urls[1].clone(), urls[0].clone()], &all[..3]),
    ];
    let posters = start_posters(
        cluster.store_client(),
        &all,
        4,
        150,
        Duration::from_millis(10),
        acks.clone(),
        "crash",
    );
    let count = {
        let acks = acks.clone();
        move || {
            let acks = acks.clone();
            async move { acks.lock().await.values().map(Vec::len).sum::<usize>() }
        }
    };
    let script = async {
        let wait_for = |n: usize| {
            let count = count.clone();
            async move {
                while count().await < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        wait_for(100).await;
        cluster.longpolls[0].kill9();
        wait_for(150).await;
        cluster.longpolls[0].restart().await?;
        wait_for(220).await;
        cluster.syncs[0].kill9();
        wait_for(280).await;
        cluster.syncs[0].restart().await?;
        cluster.syncs[1].kill9();
        wait_for(340).await;
        cluster.syncs[1].restart().await?;
        wait_for(400).await;
        cluster.store.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.store.restart().await?;
        wait_for(480).await;
        cluster.longpolls[1].kill9();
        cluster.longpolls[1].restart().await?;
        Ok(())
    };
    let r = followers_see_everything(followers, acks.clone(), posters, &all, script).await;
    show_logs_on_error(&cluster, r)?;
    let total: usize = acks.lock().await.values().map(Vec::len).sum();
    assert_eq!(total, 600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_is_an_explicit_reset_never_a_skip() -> Result<()> {
    let cluster = Cluster::start(Options {
        syncs: 1,
        longpolls: 1,
        sync_args: ["--history-per-thread", "8", "--history-changes", "16"]
            .map(String::from)
            .to_vec(),
        longpoll_args: [
            "--hold-secs",
            "1",
            "--history-per-thread",
            "4",
            "--max-catch-up",
            "20",
        ]
        .map(String::from)
        .to_vec(),
    })
    .await?;
    let url = cluster.longpoll_urls()[0].clone();
    let thread = "/evict/me".to_owned();
    let store = cluster.store_client();
    let mut acks = Vec::new();
    for i in 0..60 {
        acks.push(
            post(
                &store,
                &thread,
                &format!("evict-{i}"),
                Instant::now() + Duration::from_secs(30),
            )
            .await?,
        );
    }
    let heads = BTreeMap::from([(thread.clone(), 60)]);
    let deadline = Instant::now() + Duration::from_secs(30);

    // 60 behind with a catch-up window of 20: a reset to the head, and no events.
    let mut far = Follower::new(vec![url.clone()], std::slice::from_ref(&thread));
    far.until(&heads, deadline).await?;
    let (_, seen) = &far.threads[&thread];
    assert_eq!(seen.resets, vec![60]);
    assert!(
        seen.seqs.is_empty(),
        "a reset carries no events: {:?}",
        seen.seqs
    );

    // 15 behind: older than both histories, still inside the window: filled exactly.
    let mut near = Follower::new(vec![url.clone()], std::slice::from_ref(&thread)).since(45);
    near.until(&heads, deadline).await?;
    let by_thread = BTreeMap::from([(thread.clone(), acks.clone())]);
    assert_complete("near", &near, 45, &by_thread)?;

    // Event streams say the same: a reset message whose id is the head.
    let http = reqwest::Client::new();
    let mut res = http
        .get(format!("{url}/v1/events?thread={}", url_encode(&thread)))
        .header("Last-Event-ID", "10")
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    while !text.contains("\n\n") || !text.contains("id: ") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await?
            .context("stream ended")?
            .context("stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("id: 60\ndata: "), "{text}");
    assert!(text.contains(r#""kind":"reset""#), "{text}");

    // And an SSE client inside the window gets the missing events, ids in order.
    let mut res = http
        .get(format!("{url}/v1/events?thread={}", url_encode(&thread)))
        .header("Last-Event-ID", "50")
        .send()
        .await?;
    let mut text = String::new();
    while !text.contains("id: 60\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await?
            .context("stream ended")?
            .context("stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    assert_eq!(ids, (51..=60).collect::<Vec<_>>());

    let metrics = metrics(&http, &url).await?;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("io360_longpoll_resets_total") >= 2.0, "{metrics}");
    assert!(value("io360_longpoll_gap_fills_total") >= 2.0, "{metrics}");
    Ok(())
}

async fn raw(addr: &str, request: &[u8]) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_4xx_and_breaks_nothing() -> Result<()> {
    let cluster = Cluster::start(Options {
        longpolls: 1,
        ..Options::default()
    })
    .await?;
    let url = cluster.longpoll_urls()[0].clone();
    let http = reqwest::Client::new();
    let long_thread = "a".repeat(600);
    // One thread more than a poll may name, in a target well under the 8 KiB limit.
    let too_many: String = (0..101).map(|i| format!("thread=t{i}&")).collect();
    // A target over 8 KiB, whatever it names.
    let too_long: String = (0..1000).map(|i| format!("thread=t{i}&")).collect();
    let cases: Vec<BadCase> = vec![
        ("/v1/poll".into(), vec![], 400, Some("thread")),
        ("/v1/poll?thread=".into(), vec![], 400, Some("thread")),
        (
            format!("/v1/poll?thread={long_thread}"),
            vec![],
            400,
            Some("thread"),
        ),
        ("/v1/poll?thread=a%00b".into(), vec![], 400, Some("thread")),
        (
            "/v1/poll?thread=a&since=-1".into(),
            vec![],
            400,
            Some("since"),
        ),
        (
            "/v1/poll?thread=a&since=1e3".into(),
            vec![],
            400,
            Some("since"),
        ),
        (
            "/v1/poll?thread=a&since=18446744073709551616".into(),
            vec![],
            400,
            Some("since"),
        ),
        (
            "/v1/poll?thread=a&since=9007199254740992".into(),
            vec![],
            400,
            Some("since"),
        ),
        (
            "/v1/poll?thread=a&thread=a".into(),
            vec![],
            400,
            Some("thread"),
        ),
        (
            "/v1/poll?thread=a&since=1&since=2".into(),
            vec![],
            400,
            Some("since"),
        ),
        (
            "/v1/poll?thread=a&after=2".into(),
            vec![],
            400,
            Some("after"),
        ),
        (format!("/v1/poll?{too_many}"), vec![], 400, Some("thread")),
        (format!("/v1/poll?{too_long}"), vec![], 414, None),
        ("/v1/events".into(), vec![], 400, Some("thread")),
        (
            "/v1/events?thread=a&thread=b".into(),
            vec![],
            400,
            Some("thread"),
        ),
        (
            "/v1/events?thread=a".into(),
            vec![("Last-Event-ID", "abc")],
            400,
            Some("Last-Event-ID"),
        ),
        (
            "/v1/events?thread=a".into(),
            vec![("Last-Event-ID", "-4")],
            400,
            Some("Last-Event-ID"),
        ),
        (
            "/v1/events?thread=a".into(),
            vec![("Last-Event-ID", "99999999999999999999999")],
            400,
            Some("Last-Event-ID"),
        ),
        ("/v1/nothing".into(), vec![], 404, None),
    ];
    for (path, headers, status, field) in &cases {
        let mut req = http.get(format!("{url}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await?;
        let got = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let shown: String = path.chars().take(60).collect();
        assert_eq!(got, *status, "{shown}: {body}");
        assert_eq!(ct, "application/problem+json", "{shown}");
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{shown}: {body}"
        );
        if let Some(f) = field {
            assert_eq!(body["field"].as_str(), Some(*f), "{shown}: {body}");
        }
    }
    // A POST, a request too large for any thread list, and bytes that are not HTTP.
    let res = http.post(format!("{url}/v1/poll?thread=a")).send().await?;
    assert_eq!(res.status(), 405);
    let huge: String = (0..5000).map(|i| format!("thread=t{i}&")).collect();
    let res = http.get(format!("{url}/v1/poll?{huge}")).send().await?;
    assert_eq!(res.status(), 431);
    let addr = url.trim_start_matches("http://");
    let answer = raw(addr, b"NOT HTTP AT ALL\r\n\r\n").await?;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = raw(
        addr,
        b"GET /v1/poll?thread=a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    // A valid thread nobody wrote to is an empty thread: nothing to say until the hold ends,
    // and a client claiming to be ahead of it is told to reset to 0.
    let res = http
        .get(format!("{url}/v1/poll?thread=%2Fnew&since=0"))
        .send()
        .await?;
    assert_eq!(res.status(), 204);
    let res: serde_json::Value = http
        .get(format!("{url}/v1/poll?thread=%2Fnew&since=7"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        res["events"][0],
        serde_json::json!({"thread": "/new", "seq": 0, "kind": "reset"})
    );

    // Nothing died: the instance still delivers, with CORS for the allowed origin.
    let store = cluster.store_client();
    let ack = post(
        &store,
        "/alive",
        "alive-1",
        Instant::now() + Duration::from_secs(10),
    )
    .await?;
    let res = http
        .get(format!("{url}/v1/poll?thread=%2Falive&since=0"))
        .header("Origin", "https://site.example")
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://site.example")
    );
    let body: serde_json::Value = res.json().await?;
    assert_eq!(body["events"][0]["seq"], ack.seq);
    assert_eq!(body["events"][0]["comment"]["id"], ack.id);
    let res = http
        .get(format!("{url}/v1/poll?thread=%2Falive&since=0"))
        .header("Origin", "https://evil.example")
        .send()
        .await?;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let metrics = metrics(&http, &url).await?;
    assert!(
        metrics.contains("io360_longpoll_held_connections 0"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_held_polls_and_exits() -> Result<()> {
    let mut cluster = Cluster::start(Options {
        longpolls: 1,
        longpoll_args: ["--hold-secs", "60", "--drain-secs", "1"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
    .await?;
    let url = cluster.longpoll_urls()[0].clone();
    let http = reqwest::Client::new();
    let polls: Vec<_> = (0..50)
        .map(|i| {
            let http = http.clone();
            let url = format!("{url}/v1/poll?thread=%2Fquiet-{i}&since=0");
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    wait_held(&http, &url, 50, Duration::from_secs(20)).await?;
    cluster.longpolls[0].terminate()?;
    for p in polls {
        assert_eq!(p.await??, 204);
    }
    Ok(())
}

/// Thousands of polls on one thread, more than one fan-out task answers (so the work is
/// split), each on a connection of its own kept alive: every poll gets the event, and every
/// connection then carries the client's next poll, which gets the event after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_reaches_thousands_of_held_polls() -> Result<()> {
    let n = 5000;
    // Exactly as many as may be held: each answered poll must be let go before its
    // connection's next poll counts, or the next polls are turned away.
    let cluster = Cluster::start(Options {
        longpolls: 1,
        longpoll_args: ["--hold-secs", "120", "--max-held", &n.to_string()]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
    .await?;
    let url = cluster.longpoll_urls()[0].clone();
    let addr = url.trim_start_matches("http://").to_string();
    let store = cluster.store_client();
    let deadline = || Instant::now() + Duration::from_secs(10);
    let first = post(&store, "/crowd", "crowd-0", deadline()).await?;
    let http = reqwest::Client::new();
    let since = first.seq;
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let polls: Vec<_> = (0..n)
        .map(|_| {
            let addr = addr.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await?;
                let (status, body) = poll_on(&mut s, "/crowd", since).await?;
                answered.fetch_add(1, Ordering::SeqCst);
                let seq = body["events"][0]["seq"].as_u64().unwrap_or(since);
                let next = poll_on(&mut s, "/crowd", seq).await?;
                anyhow::Ok(((status, body), next))
            })
        })
        .collect();
    wait_held(&http, &url, n, Duration::from_secs(60)).await?;
    let second = post(&store, "/crowd", "crowd-1", deadline()).await?;
    let limit = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < n {
        if Instant::now() > limit {
            bail!(
                "only {} of {n} polls got the event",
                answered.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Held again only if every answered connection went back to reading.
    wait_held(&http, &url, n, Duration::from_secs(60)).await?;
    let third = post(&store, "/crowd", "crowd-2", deadline()).await?;
    for p in polls {
        let (first_answer, next_answer) = p.await??;
        for ((status, body), ack) in [(first_answer, &second), (next_answer, &third)] {
            assert_eq!(status, 200);
            assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
            assert_eq!(body["events"][0]["seq"], ack.seq);
            assert_eq!(body["events"][0]["comment"]["id"], ack.id);
        }
    }
    Ok(())
}

/// One `GET /v1/poll` on a kept-alive connection: the answer's status and JSON body.
async fn poll_on(
    s: &mut tokio::net::TcpStream,
    thread: &str,
    since: u64,
) -> Result<(u16, serde_json::Value)> {
    let req = format!(
        "GET /v1/poll?thread={}&since={since} HTTP/1.1\r\nHost: longpoll\r\n\r\n",
        url_encode(thread)
    );
    s.write_all(req.as_bytes()).await?;
    let a = read_answer(s, &mut Vec::with_capacity(1024)).await?;
    Ok((
        a.status,
        serde_json::from_slice(&a.body).unwrap_or_default(),
    ))
}

/// A tier's `/metrics` text.
async fn metrics(http: &reqwest::Client, url: &str) -> Result<String> {
    Ok(http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// Waits until the longpoll instance at `url` holds exactly `n` polls.
async fn wait_held(http: &reqwest::Client, url: &str, n: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let m = metrics(http, url).await?;
        if m.contains(&format!("io360_longpoll_held_connections {n}\n")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("polls were never all held: {m}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A poll of `thread` from the start on `longpoll`, as raw text.
async fn everything(http: &reqwest::Client, longpoll: &str, thread: &str) -> Result<String> {
    let url = format!("{longpoll}/v1/poll?thread={}&since=0", url_encode(thread));
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_never_replays_a_deleted_comments_content() -> Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let store = cluster.store_client();
    let http = reqwest::Client::new();
    let thread = "/posts/regretted";
    let deadline = Instant::now() + Duration::from_secs(30);
    let ack = post(&store, thread, "secret-words", deadline).await?;
    store
        .write(&io360_store::api::WriteOp::Edit {
            id: ack.id,
            text: "secret-words, edited".into(),
            html: "<p>secret-words, edited</p>".into(),
        })
        .await?;
    let urls = cluster.longpoll_urls();
    // Both instances have the comment in their history before it is deleted.
    for url in &urls {
        let seen = everything(&http, url, thread).await?;
        anyhow::ensure!(
            seen.contains("secret-words"),
            "{url} did not have it: {seen}"
        );
    }
    store
        .write(&io360_store::api::WriteOp::Delete { id: ack.id })
        .await?;

    // Each instance's history, once it has seen the deletion.
    for url in &urls {
        let mut seen = String::new();
        while Instant::now() < deadline && !seen.contains("\"deleted\"") {
            seen = everything(&http, url, thread).await?;
        }
        anyhow::ensure!(seen.contains("\"kind\":\"deleted\""), "{url}: {seen}");
        anyhow::ensure!(
            !seen.contains("secret-words") && !seen.contains("tester"),
            "{url} replays the deleted comment's content: {seen}"
        );
        anyhow::ensure!(seen.matches("\"seq\":").count() >= 3, "{url}: {seen}");
    }

    // An instance that starts afresh fills the thread from sync's history.
    cluster.longpolls[1].restart().await?;
    let url = cluster.longpolls[1].url();
    let seen = everything(&http, &url, thread).await?;
    anyhow::ensure!(seen.contains("\"kind\":\"created\""), "{url}: {seen}");
    anyhow::ensure!(
        !seen.contains("secret-words") && !seen.contains("tester"),
        "sync's history replays the deleted comment's content: {seen}"
    );
    Ok(())
}

/// After a longpoll restart every client comes back at once from the same few positions, all
/// older than the fresh instance's history: each distinct gap is asked of sync once and shared,
/// not once per client (which ran the instance out of descriptors in the reconnect storm).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_clients_behind_a_fresh_longpoll_shares_its_gap_fills() -> Result<()> {
    let n = 1000;
    let mut cluster = Cluster::start(Options {
        longpolls: 1,
        longpoll_args: ["--hold-secs", "120"].map(String::from).to_vec(),
        ..Options::default()
    })
    .await?;
    let url = cluster.longpoll_urls()[0].clone();
    let addr = url.trim_start_matches("http://").to_string();
    let store = cluster.store_client();
    let deadline = || Instant::now() + Duration::from_secs(10);
    let first = post(&store, "/herd", "herd-0", deadline()).await?;
    let mut last = first;
    for i in 1..20 {
        last = post(&store, "/herd", &format!("herd-{i}"), deadline()).await?;
    }
    // A fresh instance: its history starts after these comments.
    cluster.longpolls[0].restart().await?;
    let http = reqwest::Client::new();
    let fills_before = counter(
        &metrics(&http, &url).await?,
        "io360_longpoll_gap_fills_total",
    );
    // Every client connects first, then all ask at once, as a reconnect storm does.
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(tokio::net::TcpStream::connect(&addr).await?);
    }
    let polls: Vec<_> = conns
        .into_iter()
        .map(|mut s| tokio::spawn(async move { poll_on(&mut s, "/herd", first.seq).await }))
        .collect();
    for p in polls {
        let (status, body) = p.await??;
        assert_eq!(status, 200);
        let seqs: Vec<u64> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, ((first.seq + 1)..=last.seq).collect::<Vec<_>>());
    }
    let fills = counter(
        &metrics(&http, &url).await?,
        "io360_longpoll_gap_fills_total",
    ) - fills_before;
    assert!(fills >= 1, "the history was filled from sync");
    assert!(
        fills <= (n / 20) as u64,
        "{n} clients caused {fills} gap fills"
    );
    Ok(())
}

/// A counter's value in a `/metrics` text (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}
