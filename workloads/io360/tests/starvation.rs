//! No client can starve the pages: `io360 up` with a small descriptor table, one client
//! address opening more idle, kept-alive and held connections than it may, then several
//! addresses together filling what dynamic requests may use, while a reader at another
//! address keeps loading a page.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The descriptor limit `io360 up` runs with.
const NOFILE: usize = 1024;

struct Up {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start() -> Up {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_io360"))
        .args(["up", "--addr", &addr.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("IO360_LOG", "error")
        .env("IO360_NO_RATE_LIMITS", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting io360 up");
    let http = reqwest::Client::new();
    common::wait_ready(&http, &format!("http://{addr}/api/v1/status")).await;
    Up {
        addr,
        child,
        _dir: dir,
    }
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    s.connect(to).await
}

/// Sends `req` and reads until the end of the answer's head; `None` when refused or closed.
async fn request_head(s: &mut TcpStream, req: &[u8]) -> Option<String> {
    s.write_all(req).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// What an attacking address holds: connections that made one API request and stay open,
/// connections that never send anything, and held long polls.
async fn attack(
    from: &'static str,
    to: SocketAddr,
    kept: usize,
    idle: usize,
    polls: usize,
) -> Vec<TcpStream> {
    let mut held = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..kept + idle + polls {
        tasks.spawn(async move {
            let mut s = connect_from(from, to).await.ok()?;
            if i < kept {
                request_head(&mut s, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await?;
            } else if i >= kept + idle {
                let req = format!(
                    "GET /v1/poll?thread=/held-{from}-{i}&since=0 HTTP/1.1\r\nHost: x\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.ok()?;
            }
            Some(s)
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(s)) = r {
            held.push(s);
        }
    }
    held
}

/// Page loads from one reader: how long each took, and how many failed.
struct Loads {
    times: Vec<Duration>,
    failed: usize,
}

impl Loads {
    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }

    fn slowest(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }
}

/// Loads the page from `from` on a new connection each time, for `how_long`.
async fn read_pages(from: &'static str, to: SocketAddr, how_long: Duration) -> Loads {
    let until = Instant::now() + how_long;
    let mut loads = Loads {
        times: Vec::new(),
        failed: 0,
    };
    while Instant::now() < until {
        let start = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = connect_from(from, to).await.ok()?;
            let head = request_head(
                &mut s,
                b"GET /posts/hello/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await?;
            head.starts_with("HTTP/1.1 200").then_some(())
        })
        .await
        .ok()
        .flatten()
        .is_some();
        loads.times.push(start.elapsed());
        if !ok {
            loads.failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loads
}

/// Checks what a reader saw while others attacked.
fn check(what: &str, normal: Duration, l: &Loads) {
    eprintln!(
        "{what}: {} page loads, {} failed, median {:?}, slowest {:?} (normal {normal:?})",
        l.times.len(),
        l.failed,
        l.median(),
        l.slowest()
    );
    assert_eq!(l.failed, 0, "{what}: page loads failed");
    // The machine is shared with the attack itself: the typical load stays as fast as it
    // was alone, and none waits anywhere near a timeout.
    assert!(
        l.median() <= (normal * 5).max(Duration::from_millis(50)),
        "{what}: median page load {:?}, normal {normal:?}",
        l.median()
    );
    assert!(
        l.slowest() <= Duration::from_secs(2),
        "{what}: a page load took {:?}",
        l.slowest()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_can_starve_the_pages() {
    let up = start().await;
    let to = up.addr;
    // The reader's normal latency, before anything else happens.
    let alone = read_pages("127.0.0.3", to, Duration::from_secs(1)).await;
    assert_eq!(alone.failed, 0);
    let normal = alone.median();

    // One address tries to hold far more than its share, and more than the whole table.
    let reader = tokio::spawn(read_pages("127.0.0.3", to, Duration::from_secs(6)));
    let one = attack("127.0.0.2", to, 700, 400, 300).await;
    check("one address", normal, &reader.await.unwrap());
    drop(one);

    // Several addresses, each within its share, together more than dynamic requests may use.
    let reader = tokio::spawn(read_pages("127.0.0.3", to, Duration::from_secs(6)));
    let mut many = Vec::new();
    for from in [
        "127.0.0.10",
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
        "127.0.0.14",
        "127.0.0.15",
    ] {
        many.extend(attack(from, to, 60, 0, 64).await);
    }
    check("six addresses", normal, &reader.await.unwrap());
    // And the API still answers someone new, or says it is busy with a problem, never hangs.
    let mut s = connect_from("127.0.0.4", to).await.unwrap();
    let head = tokio::time::timeout(
        Duration::from_secs(5),
        request_head(
            &mut s,
            b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("the API answered")
    .expect("an answer");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 503"),
        "{head}"
    );
    drop(many);
}
