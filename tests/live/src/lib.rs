//! Harness for io360's live-update process tests: runs `io360 serve <tier>` as real processes
//! on loopback, kills and restarts them, posts comments through the store, and follows
//! threads through `/v1/poll` the way a browser does.
//!
//! Tests assert what a reader would notice: every acknowledged comment arrives, once, in
//! order, whatever tier failed meanwhile.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use io360_common::model::Status;
use io360_store::StoreClient;
use io360_store::api::{NewComment, WriteOp};
use serde_json::Value;

pub mod stream;

/// The `io360` binary under test: `$IO360_BIN`, else `target/debug/io360` of this workspace
/// (built on first use).
pub fn io360_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("IO360_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(t) => PathBuf::from(t),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    let bin = target.join("debug").join("io360");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "io360"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("building io360 failed: {status:?}");
        }
    });
    if !bin.exists() {
        bail!(
            "{} does not exist; build it with `cargo build -p io360`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free loopback address (bound and released; the tier binds it right after).
pub fn free_addr() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// One tier running as its own process.
pub struct Tier {
    name: &'static str,
    addr: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Tier {
    /// Starts `io360 serve <name>` on `addr` with extra flags and environment, and waits
    /// until `/readyz` says ready.
    pub async fn start(
        name: &'static str,
        addr: String,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Tier> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(tier_auth_env(log_dir, name)?);
        let mut t = Tier {
            name,
            addr,
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
        };
        t.spawn()?;
        t.wait_ready().await?;
        Ok(t)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(io360_bin()?)
            .arg("serve")
            .arg(self.name)
            .args(&self.args)
            .env("IO360_ADDR", &self.addr)
            .env("IO360_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the tier answers `/readyz` with 200.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "{} exited with {status} while starting; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} never became ready; log:\n{}",
            self.name,
            self.log_tail()
        )
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit, returning how long it took.
    pub fn terminate(&mut self) -> Result<Duration> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        let start = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait()?;
        Ok(start.elapsed())
    }

    /// Starts the same tier again on the same address.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_checked() {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.wait_ready().await
    }

    fn spawn_checked(&mut self) -> Result<()> {
        self.spawn()?;
        std::thread::sleep(Duration::from_millis(150));
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            bail!("{} exited with {status}", self.name);
        }
        Ok(())
    }

    /// The last lines of the tier's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The keyring the tiers started with `log_dir` share, made on first use and kept there as a
/// Kubernetes Secret would hand it over: a keyring file and one credential file per tier.
pub fn keyring(log_dir: &Path) -> Result<io360_common::auth::Keyring> {
    let path = log_dir.join("tier-keys");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(io360_common::auth::Keyring::parse(&text)?);
    }
    let k = io360_common::auth::Keyring::generate();
    std::fs::write(&path, k.to_text())?;
    Ok(k)
}

/// The variables that hand `tier` its credential and the keyring.
fn tier_auth_env(log_dir: &Path, tier: &str) -> Result<Vec<(String, String)>> {
    let k = keyring(log_dir)?;
    let token = log_dir.join(format!("{tier}.token"));
    std::fs::write(&token, k.credential(tier))?;
    Ok(vec![
        (
            "IO360_TIER_KEYS_FILE".into(),
            log_dir.join("tier-keys").to_string_lossy().into_owned(),
        ),
        (
            "IO360_TIER_TOKEN_FILE".into(),
            token.to_string_lossy().into_owned(),
        ),
    ])
}

/// Store, sync and longpoll instances on loopback.
pub struct Cluster {
    /// Temporary data and logs.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: Tier,
    /// Sync replicas.
    pub syncs: Vec<Tier>,
    /// Longpoll instances.
    pub longpolls: Vec<Tier>,
}

/// Knobs for a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sync replicas.
    pub syncs: usize,
    /// Longpoll instances.
    pub longpolls: usize,
    /// Extra flags for sync.
    pub sync_args: Vec<String>,
    /// Extra flags for longpoll.
    pub longpoll_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            syncs: 1,
            longpolls: 2,
            sync_args: Vec::new(),
            longpoll_args: vec!["--hold-secs".into(), "2".into()],
        }
    }
}

impl Cluster {
    /// Starts the store, then sync, then longpoll.
    pub async fn start(opts: Options) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("store");
        let data = data.to_string_lossy().to_string();
        let store = Tier::start(
            "store",
            free_addr()?,
            &[],
            &[("IO360_DATA_DIR", &data)],
            dir.path(),
        )
        .await?;
        let mut syncs = Vec::new();
        for i in 0..opts.syncs {
            let args: Vec<&str> = opts.sync_args.iter().map(String::as_str).collect();
            let mut t = Tier::start(
                "sync",
                free_addr()?,
                &args,
                &[("IO360_STORE_URL", &store.url())],
                dir.path(),
            )
            .await?;
            t.log = dir.path().join(format!("sync-{i}.log"));
            syncs.push(t);
        }
        let sync_urls = syncs.iter().map(Tier::url).collect::<Vec<_>>().join(",");
        let mut longpolls = Vec::new();
        for i in 0..opts.longpolls {
            let args: Vec<&str> = opts.longpoll_args.iter().map(String::as_str).collect();
            let mut t = Tier::start(
                "longpoll",
                free_addr()?,
                &args,
                &[
                    ("IO360_SYNC_URL", &sync_urls),
                    ("IO360_ALLOWED_ORIGINS", "https://site.example"),
                ],
                dir.path(),
            )
            .await?;
            t.log = dir.path().join(format!("longpoll-{i}.log"));
            longpolls.push(t);
        }
        Ok(Cluster {
            dir,
            store,
            syncs,
            longpolls,
        })
    }

    /// The longpoll instances' base URLs.
    pub fn longpoll_urls(&self) -> Vec<String> {
        self.longpolls.iter().map(Tier::url).collect()
    }

    /// A client for the store, presenting logic's credential (the store takes writes from
    /// logic only).
    pub fn store_client(&self) -> StoreClient {
        let k = keyring(self.dir.path()).expect("the cluster's keyring");
        StoreClient::new(
            &self.store.url(),
            io360_common::auth::Credential::of("logic", &k),
        )
    }
}

/// An acknowledged post: which thread, which sequence number, which comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number.
    pub seq: u64,
    /// Comment id.
    pub id: u64,
}

/// Posts one comment, retrying (with the same idempotency key) until the store acknowledges
/// it or `deadline` passes.
pub async fn post(store: &StoreClient, thread: &str, key: &str, deadline: Instant) -> Result<Ack> {
    let op = WriteOp::Append {
        thread: thread.to_owned(),
        comment: NewComment {
            parent: None,
            author: Some("tester".into()),
            email: None,
            website: None,
            text: format!("comment {key}"),
            html: format!("<p>comment {key}</p>"),
            status: Status::Approved,
            remote: None,
            author_key: None,
        },
        idempotency: Some(Box::new(io360_store::api::Idempotency {
            key: key.to_owned(),
            fingerprint: key.to_owned(),
        })),
    };
    loop {
        match store.write(&op).await {
            Ok(r) => {
                let id = r.change.comment.as_ref().map(|c| c.id).unwrap_or(0);
                return Ok(Ack {
                    seq: r.change.seq,
                    id,
                });
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("post to {thread} never acknowledged: {e}"),
        }
    }
}

/// What one follower saw of one thread.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Sequence numbers, in arrival order.
    pub seqs: Vec<u64>,
    /// Comment ids by sequence number.
    pub ids: BTreeMap<u64, u64>,
    /// Resets received (head sequence numbers).
    pub resets: Vec<u64>,
}

/// Follows threads through `/v1/poll` like a browser: one poll covering all its threads,
/// `since` per thread, moving to the next instance when one fails.
pub struct Follower {
    http: reqwest::Client,
    urls: Vec<String>,
    current: usize,
    /// Per thread: the last sequence number seen and everything seen.
    pub threads: BTreeMap<String, (u64, Seen)>,
    /// Requests that failed (connection refused, 5xx) and were retried.
    pub retries: u64,
}

impl Follower {
    /// A follower of `threads`, starting at sequence 0, polling `urls` (first one first).
    pub fn new(urls: Vec<String>, threads: &[String]) -> Follower {
        Follower {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            urls,
            current: 0,
            threads: threads
                .iter()
                .map(|t| (t.clone(), (0, Seen::default())))
                .collect(),
            retries: 0,
        }
    }

    /// Starts every thread after `since` instead of 0.
    pub fn since(mut self, since: u64) -> Follower {
        for (s, _) in self.threads.values_mut() {
            *s = since;
        }
        self
    }

    fn query(&self) -> String {
        let mut q = String::new();
        for (t, (since, _)) in &self.threads {
            let t: String = url_encode(t);
            q.push_str(&format!("thread={t}&since={since}&"));
        }
        q
    }

    /// One poll. Returns the HTTP status (0 when the request failed).
    pub async fn poll_once(&mut self) -> Result<u16> {
        let url = format!("{}/v1/poll?{}", self.urls[self.current], self.query());
        let res = match self.http.get(&url).send().await {
            Ok(r) => r,
            Err(_) => {
                self.fail_over();
                return Ok(0);
            }
        };
        let status = res.status().as_u16();
        match status {
            200 => {
                let body: Value = match res.json().await {
                    Ok(b) => b,
                    Err(_) => {
                        self.fail_over();
                        return Ok(0);
                    }
                };
                let events = body["events"]
                    .as_array()
                    .context("a poll answer has `events`")?;
                for e in events {
                    self.take(e)?;
                }
            }
            204 => {}
            _ if status >= 500 => {
                self.fail_over();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => bail!(
                "poll answered {status}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
        Ok(status)
    }

    fn fail_over(&mut self) {
        self.retries += 1;
        self.current = (self.current + 1) % self.urls.len();
    }

    fn take(&mut self, e: &Value) -> Result<()> {
        let thread = e["thread"].as_str().context("event has a thread")?;
        let seq = e["seq"].as_u64().context("event has a seq")?;
        let kind = e["kind"].as_str().context("event has a kind")?;
        let (since, seen) = self
            .threads
            .get_mut(thread)
            .with_context(|| format!("event for a thread not asked for: {thread}"))?;
        if kind == "reset" {
            seen.resets.push(seq);
            *since = seq;
            return Ok(());
        }
        seen.seqs.push(seq);
        if let Some(id) = e["comment"]["id"].as_u64() {
            seen.ids.insert(seq, id);
        }
        *since = seq;
        Ok(())
    }

    /// Polls until every thread reaches its target head, or `deadline`.
    pub async fn until(&mut self, heads: &BTreeMap<String, u64>, deadline: Instant) -> Result<()> {
        while Instant::now() < deadline {
            if heads
                .iter()
                .filter_map(|(t, h)| self.threads.get(t).map(|(s, _)| (s, h)))
                .all(|(s, h)| s >= h)
            {
                return Ok(());
            }
            self.poll_once().await?;
        }
        // Say what a fresh connection gets now, to tell a stuck connection from lost events.
        let mut probes = Vec::new();
        for u in &self.urls {
            let url = format!("{u}/v1/poll?{}", self.query());
            let probe = match reqwest::Client::new().get(&url).send().await {
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            probes.push(probe.chars().take(300).collect::<String>());
        }
        bail!(
            "threads did not reach their heads in time: at {:?}, want {:?}, retries {}; fresh polls: {probes:?}",
            self.positions(),
            heads,
            self.retries
        )
    }

    /// Polls until `stop` is set and then until every thread reaches its head in `heads`.
    pub async fn follow(
        &mut self,
        stop: Arc<AtomicBool>,
        heads: Arc<tokio::sync::Mutex<BTreeMap<String, u64>>>,
        deadline: Instant,
    ) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                bail!("posting never finished");
            }
            self.poll_once().await?;
        }
        let heads = heads.lock().await.clone();
        self.until(&heads, deadline).await
    }

    /// The last sequence number per thread.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        self.threads
            .iter()
            .map(|(t, (s, _))| (t.clone(), *s))
            .collect()
    }
}

/// One HTTP/1.1 answer read off a raw connection: its status, its headers (names in lower
/// case) and its body (by `Content-Length`).
pub struct RawAnswer {
    /// The status code.
    pub status: u16,
    /// Every header, name in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Takes the first complete answer out of `buf`, if it holds one; what follows it stays.
pub fn take_answer(buf: &mut Vec<u8>) -> Result<Option<RawAnswer>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = res.parse(buf)? else {
        return Ok(None);
    };
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let status = res.code.unwrap_or(0);
    let clen: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < len + clen {
        return Ok(None);
    }
    let body = buf[len..len + clen].to_vec();
    buf.drain(..len + clen);
    Ok(Some(RawAnswer {
        status,
        headers,
        body,
    }))
}

/// Reads the next answer from `s`. `buf` carries bytes across calls: what follows the answer
/// stays in it for the next one.
pub async fn read_answer(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<RawAnswer> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(a) = take_answer(buf)? {
            return Ok(a);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await? == 0 {
            bail!("the connection closed before a whole answer");
        }
    }
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks that a follower saw, for each thread, exactly `from+1 ..= head` in order, and the
/// acknowledged comment at each acknowledged sequence number.
pub fn assert_complete(
    who: &str,
    f: &Follower,
    from: u64,
    acks: &BTreeMap<String, Vec<Ack>>,
) -> Result<()> {
    for (thread, acked) in acks {
        let (_, seen) = f
            .threads
            .get(thread)
            .with_context(|| format!("{who} does not follow {thread}"))?;
        if !seen.resets.is_empty() {
            bail!("{who}: {thread} got resets {:?}", seen.resets);
        }
        let head = acked.iter().map(|a| a.seq).max().unwrap_or(0);
        let want: Vec<u64> = (from + 1..=head).collect();
        if seen.seqs != want {
            let dups = seen.seqs.len() as i64 - want.len() as i64;
            bail!(
                "{who}: {thread} saw {} events (want {}, difference {dups}); first divergence at index {:?}",
                seen.seqs.len(),
                want.len(),
                seen.seqs.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
        for a in acked.iter().filter(|a| a.seq > from) {
            match seen.ids.get(&a.seq) {
                Some(id) if *id == a.id => {}
                other => bail!(
                    "{who}: {thread} seq {} carried comment {other:?}, acknowledged as {}",
                    a.seq,
                    a.id
                ),
            }
        }
    }
    Ok(())
}
