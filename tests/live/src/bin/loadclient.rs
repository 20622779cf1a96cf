//! The long-poll load client behind `tests/live/bench.sh` (a benchmark, not a test).
//!
//! Holds N long polls on one channel of io360 (`/v1/poll`) or Nchan (`/sub/<channel>`),
//! publishes one message per round (io360: an append to the store, so the time includes the
//! fsync and the sync hop; Nchan: `POST /pub/<channel>`), and measures for each held poll the
//! time from just before the publish until its answer arrived in the client's socket (the
//! kernel's receive time stamp), and until the client read it. The first is what the server
//! did; the second adds the client's own lag in getting to the socket, which on a machine the
//! client shares with the server is the client's work as much as the server's. Warm-up
//! rounds come first and are not counted.
//!
//! It also reports the server's memory per held poll: resident memory of the given processes
//! and, when given, the kernel and TCP memory of their cgroup, before the polls were opened
//! and once all were held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use io360_common::model::Status;
use io360_live_tests::{RawAnswer, take_answer};
use io360_store::StoreClient;
use io360_store::api::{NewComment, WriteOp};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Io360,
    Nchan,
}

#[derive(Parser, Debug)]
struct Args {
    /// Which server.
    #[arg(long, value_enum)]
    target: Target,
    /// The server's address (longpoll or nginx).
    #[arg(long)]
    addr: String,
    /// The store's base URL (io360: where comments are published).
    #[arg(long, default_value = "")]
    store: String,
    /// A file holding logic's credential, which the store asks of writers (`io360 tier-keys`
    /// writes one as `logic.token`).
    #[arg(long, env = "IO360_TIER_TOKEN_FILE")]
    tier_token_file: Option<std::path::PathBuf>,
    /// Held polls.
    #[arg(long)]
    n: usize,
    /// Publish rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rounds published first and left out of the figures: a connection's first answer
    /// also pays for the kernel charging its socket memory, on either server.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Loopback source addresses to spread connections over (comma-separated).
    #[arg(long, default_value = "127.0.0.1")]
    sources: String,
    /// Server process ids whose resident memory is counted (comma-separated).
    #[arg(long, default_value = "")]
    pids: String,
    /// The server's memory cgroup directory (cgroup v1), for kernel and TCP memory.
    #[arg(long)]
    cgroup: Option<String>,
    /// Channel / thread name.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    label: String,
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: u64,
    cg_total: u64,
    cg_kmem: u64,
    cg_tcp: u64,
}

fn memory(args: &Args) -> Memory {
    let rss = args
        .pids
        .split(',')
        .filter(|p| !p.is_empty())
        .map(rss_kib)
        .sum::<u64>()
        * 1024;
    let read = |f: &str| -> u64 {
        args.cgroup
            .as_ref()
            .and_then(|d| std::fs::read_to_string(format!("{d}/{f}")).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss,
        cg_total: read("memory.usage_in_bytes"),
        cg_kmem: read("memory.kmem.usage_in_bytes"),
        cg_tcp: read("memory.kmem.tcp.usage_in_bytes"),
    }
}

/// Lets the kernel pick the source port at `connect` instead of at `bind`: binding tens of
/// thousands of sockets to one address with port 0 otherwise scans every bound port each time.
fn bind_without_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    // Without it binding is only slower.
    let _ = switch_on(
        sock.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
    );
}

/// Asks the kernel to stamp what this socket receives with the time it arrived.
fn stamp_arrivals(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    switch_on(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Sets a socket option that takes an int to 1.
fn switch_on(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a socket descriptor and a c_int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `recvmsg` into `buf`'s spare room: the bytes read and the arrival time stamp of the
/// last segment among them (ns since the Unix epoch), if the kernel gave one.
fn recv_stamped_once(fd: libc::c_int, buf: &mut Vec<u8>) -> std::io::Result<(usize, Option<u64>)> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for a few control messages, aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes the spare room of `buf` and `control`, both valid for writes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `n` bytes into the spare room.
    unsafe { buf.set_len(buf.len() + n as usize) };
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// Reads the next answer from `s`, with the time its last bytes arrived in the socket (ns
/// since the Unix epoch; 0 if the kernel gave no stamp).
async fn read_stamped(s: &TcpStream, buf: &mut Vec<u8>) -> Result<(RawAnswer, u64)> {
    use std::os::fd::AsRawFd;
    let mut arrived = 0;
    loop {
        if let Some(a) = take_answer(buf)? {
            return Ok((a, arrived));
        }
        s.readable().await?;
        match s.try_io(Interest::READABLE, || recv_stamped_once(s.as_raw_fd(), buf)) {
            Ok((0, _)) => bail!("the connection closed before a whole answer"),
            Ok((_, stamp)) => arrived = stamp.unwrap_or(arrived),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Now on the kernel's clock for receive stamps (ns since the Unix epoch).
fn epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU time (user and system) this process has used, in microseconds.
fn own_cpu_us() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// CPU time (user and system) of the given processes, in microseconds (clock-tick grained).
fn procs_cpu_us(pids: &str) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    pids.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|s| {
            // Fields after the command name, which ends at the last ')'.
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (ticks(11) + ticks(12)) * 1_000_000 / hz
        })
        .sum()
}

/// Per connection: the last round whose message it read, when it read it (ns since `start`)
/// and when that answer arrived in its socket (ns since the Unix epoch, the kernel's clock).
struct Conn {
    round: AtomicU64,
    at: AtomicU64,
    arrived: AtomicU64,
}

struct Shared {
    start: Instant,
    conns: Vec<Conn>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The sequence number of the last event in a poll answer: the first `"seq":` after the last
/// `{"thread":`, which only ever opens an event (a comment object opens with its `id`). Read
/// without parsing the JSON, so the client spends per answer what it spends on Nchan's: the
/// measurement is the servers', not the client's.
fn last_seq(body: &[u8]) -> Option<u64> {
    let start = find_last(body, b"{\"thread\":")?;
    let key = b"\"seq\":";
    let at = start + find(&body[start..], key)? + key.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The round number in a message body (`round-<n>-end`).
fn round_of(body: &[u8]) -> Option<u64> {
    let i = find(body, b"round-")? + 6;
    let rest = &body[i..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn hold(
    shared: Arc<Shared>,
    i: usize,
    target: Target,
    addr: std::net::SocketAddr,
    source: std::net::IpAddr,
    channel: String,
    since: u64,
) -> Result<()> {
    let sock = TcpSocket::new_v4()?;
    bind_without_port(&sock);
    sock.bind(std::net::SocketAddr::new(source, 0))?;
    let mut s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    stamp_arrivals(&s)?;
    let mut since = since;
    let mut lm: Option<String> = None;
    let mut etag: Option<String> = None;
    let mut buf = Vec::with_capacity(2048);
    loop {
        let req = match target {
            Target::Io360 => format!(
                "GET /v1/poll?thread=%2F{channel}&since={since} HTTP/1.1\r\nHost: bench\r\n\r\n"
            ),
            Target::Nchan => {
                let mut r = format!("GET /sub/{channel} HTTP/1.1\r\nHost: bench\r\n");
                if let Some(v) = &lm {
                    r.push_str(&format!("If-Modified-Since: {v}\r\n"));
                }
                if let Some(v) = &etag {
                    r.push_str(&format!("If-None-Match: {v}\r\n"));
                }
                r.push_str("\r\n");
                r
            }
        };
        s.write_all(req.as_bytes()).await?;
        let (a, arrived) = read_stamped(&s, &mut buf).await?;
        let now = shared.start.elapsed().as_nanos() as u64;
        if a.status == 200 {
            if let Some(r) = round_of(&a.body) {
                shared.conns[i].at.store(now, Ordering::SeqCst);
                shared.conns[i].arrived.store(arrived, Ordering::SeqCst);
                shared.conns[i].round.store(r, Ordering::SeqCst);
            }
            match target {
                Target::Io360 => since = last_seq(&a.body).unwrap_or(since),
                Target::Nchan => {
                    lm = a.header("last-modified").map(str::to_owned).or(lm);
                    etag = a.header("etag").map(str::to_owned).or(etag);
                }
            }
        } else if a.status >= 500 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn held(http: &reqwest::Client, args: &Args) -> Result<usize> {
    let text = match args.target {
        Target::Io360 => {
            http.get(format!("http://{}/metrics", args.addr))
                .send()
                .await?
                .text()
                .await?
        }
        Target::Nchan => {
            http.get(format!("http://{}/nchan_status", args.addr))
                .send()
                .await?
                .text()
                .await?
        }
    };
    let key = match args.target {
        Target::Io360 => "io360_longpoll_held_connections ",
        Target::Nchan => "subscribers: ",
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

async fn wait_held(http: &reqwest::Client, args: &Args, n: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let h = held(http, args).await?;
        if h >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {h} of {n} polls held");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(
    http: &reqwest::Client,
    store: &Option<StoreClient>,
    args: &Args,
    round: u64,
) -> Result<u64> {
    let text = format!("round-{round}-end");
    match args.target {
        Target::Io360 => {
            let store = store.as_ref().context("--store is required for io360")?;
            let r = store
                .write(&WriteOp::Append {
                    thread: format!("/{}", args.channel),
                    comment: NewComment {
                        parent: None,
                        author: Some("bench".into()),
                        email: None,
                        website: None,
                        text: text.clone(),
                        html: format!("<p>{text}</p>"),
                        status: Status::Approved,
                        remote: None,
                        author_key: None,
                    },
                    idempotency: None,
                })
                .await?;
            Ok(r.change.seq)
        }
        Target::Nchan => {
            let r = http
                .post(format!("http://{}/pub/{}", args.addr, args.channel))
                .body(text)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("publish answered {}", r.status());
            }
            Ok(0)
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let store = if args.store.is_empty() {
        None
    } else {
        let path = args
            .tier_token_file
            .as_deref()
            .context("--tier-token-file is required with --store")?;
        let credential = io360_common::auth::Credential::from_file("--tier-token-file", path)
            .map_err(anyhow::Error::msg)?;
        Some(StoreClient::new(&args.store, credential))
    };
    let addr: std::net::SocketAddr = args.addr.parse()?;
    let sources: Vec<std::net::IpAddr> = args
        .sources
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    // A first message, so every poll starts from a known position.
    let since = publish(&http, &store, &args, 0).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = memory(&args);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        conns: (0..args.n)
            .map(|_| Conn {
                round: AtomicU64::new(0),
                at: AtomicU64::new(0),
                arrived: AtomicU64::new(0),
            })
            .collect(),
    });
    for i in 0..args.n {
        let shared = shared.clone();
        let source = sources[i % sources.len()];
        let channel = args.channel.clone();
        let target = args.target;
        tokio::spawn(async move {
            if let Err(e) = hold(shared, i, target, addr, source, channel, since).await {
                eprintln!("poll {i}: {e}");
            }
        });
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    wait_held(&http, &args, args.n, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory(&args);

    let mut all = Vec::new();
    // The same, by when each answer arrived in its socket rather than when it was read.
    let mut arrivals = Vec::new();
    let mut unstamped = 0usize;
    // Each counted round's own arrival p99: how much one publish differs from the next.
    let mut round_p99s = Vec::new();
    // Per round, the first delivery (the publish path plus one write) and every delivery's
    // time after that first one (the fan-out itself), for both servers alike.
    let mut firsts = Vec::new();
    let mut spread = Vec::new();
    let (mut client_cpu, mut server_cpu) = (0u64, 0u64);
    for round in 1..=(args.warmup + args.rounds) as u64 {
        let counted = round > args.warmup as u64;
        wait_held(&http, &args, args.n, Duration::from_secs(60)).await?;
        let (c0, s0) = (own_cpu_us(), procs_cpu_us(&args.pids));
        let t0 = shared.start.elapsed().as_nanos() as u64;
        let t0_epoch = epoch_ns();
        publish(&http, &store, &args, round).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared
            .conns
            .iter()
            .any(|c| c.round.load(Ordering::SeqCst) < round)
        {
            if Instant::now() > deadline {
                let missing = shared
                    .conns
                    .iter()
                    .filter(|c| c.round.load(Ordering::SeqCst) < round)
                    .count();
                bail!("round {round}: {missing} polls never got the message");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (c1, s1) = (own_cpu_us(), procs_cpu_us(&args.pids));
        let mut ms: Vec<f64> = shared
            .conns
            .iter()
            .map(|c| c.at.load(Ordering::SeqCst).saturating_sub(t0) as f64 / 1e6)
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let mut arr: Vec<f64> = shared
            .conns
            .iter()
            .map(|c| c.arrived.load(Ordering::SeqCst))
            .filter(|&a| a != 0)
            .map(|a| a.saturating_sub(t0_epoch) as f64 / 1e6)
            .collect();
        arr.sort_by(|a, b| a.total_cmp(b));
        let first = ms.first().copied().unwrap_or(f64::NAN);
        eprintln!(
            "{} round {round}{}: read: first {first:.1} ms p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
             arrived: p50 {:.1} ms p99 {:.1} ms",
            args.label,
            if counted {
                ""
            } else {
                " (warm-up, not counted)"
            },
            pct(&ms, 0.5),
            pct(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
            pct(&arr, 0.5),
            pct(&arr, 0.99),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !counted {
            continue;
        }
        client_cpu += c1 - c0;
        server_cpu += s1.saturating_sub(s0);
        unstamped += args.n - arr.len();
        round_p99s.push(pct(&arr, 0.99));
        arrivals.extend(arr);
        firsts.push(first);
        spread.extend(ms.iter().map(|m| m - first));
        all.extend(ms);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    arrivals.sort_by(|a, b| a.total_cmp(b));
    firsts.sort_by(|a, b| a.total_cmp(b));
    spread.sort_by(|a, b| a.total_cmp(b));
    let n = args.n as f64;
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n;
    let out = serde_json::json!({
        "label": args.label,
        "target": format!("{:?}", args.target).to_lowercase(),
        "n": args.n,
        "rounds": args.rounds,
        "p50_ms": pct(&all, 0.5),
        "p99_ms": pct(&all, 0.99),
        "max_ms": all.last().copied().unwrap_or(f64::NAN),
        "first_ms": pct(&firsts, 0.5),
        "spread_p50_ms": pct(&spread, 0.5),
        "spread_p99_ms": pct(&spread, 0.99),
        // When the answers arrived in the client's sockets (the kernel's stamps), and how many
        // answers came without a stamp (left out of these two).
        "arrived_p50_ms": pct(&arrivals, 0.5),
        "arrived_p99_ms": pct(&arrivals, 0.99),
        "unstamped": unstamped,
        "round_arrived_p99_ms": round_p99s,
        // CPU per delivery while rounds ran: the load client's own, and the server's.
        "client_cpu_us_per_delivery": client_cpu as f64 / (n * args.rounds as f64),
        "server_cpu_us_per_delivery": server_cpu as f64 / (n * args.rounds as f64),
        "rss_per_poll_bytes": per(after.rss, before.rss),
        "cgroup_per_poll_bytes": per(after.cg_total, before.cg_total),
        "kmem_per_poll_bytes": per(after.cg_kmem, before.cg_kmem),
        "tcp_per_poll_bytes": per(after.cg_tcp, before.cg_tcp),
    });
    println!("{out}");
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::{epoch_ns, last_seq, read_stamped, stamp_arrivals};
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn an_answer_is_stamped_with_when_its_last_bytes_arrived() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        stamp_arrivals(&client).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // The head now, the body 50 ms later: the stamp is the body's.
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let before = epoch_ns();
            server.write_all(b"hello").unwrap();
            (before, server)
        });
        let mut buf = Vec::new();
        let (answer, arrived) = read_stamped(&client, &mut buf).await.unwrap();
        let read = epoch_ns();
        let (body_sent, _server) = writer.join().unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"hello");
        assert!(
            (body_sent..=read).contains(&arrived),
            "stamp {arrived} outside [{body_sent}, {read}]"
        );
    }

    #[test]
    fn the_last_events_seq_is_read_without_parsing() {
        let body = br#"{"events":[{"thread":"/b","seq":7,"kind":"created","comment":{"id":3,"thread":"/b","seq":7}},{"thread":"/b","seq":8,"kind":"deleted","comment":{"id":3,"thread":"/b","seq":99}}]}"#;
        assert_eq!(last_seq(body), Some(8));
        assert_eq!(last_seq(br#"{"events":[]}"#), None);
    }
}
