//! The live-delivery load client behind `tests/live/bench.sh` and
//! `tests/live/bench-centrifugo.sh` (a benchmark, not a test).
//!
//! Holds N subscribers on one channel: long polls of io360 (`/v1/poll`) or Nchan
//! (`/sub/<channel>`), or event streams of io360 (`/v1/events`) or Centrifugo (its
//! unidirectional SSE). Then either:
//!
//! - **fan-out rounds**: publishes one message per round (io360: a comment POST to its public
//!   face, or an append to the store; Nchan: `POST /pub/<channel>`; Centrifugo: its HTTP API)
//!   and measures for each subscriber the time from just before the publish until the message
//!   arrived in the client's socket (the kernel's receive time stamp), and until the client
//!   read it. The first is what the server did; the second adds the client's own lag in
//!   getting to the socket. Warm-up rounds come first and are not counted. It also reports the
//!   server's memory per subscriber: resident memory of the given processes and, when given,
//!   the kernel and TCP memory of their cgroup, before the subscribers connected and once all
//!   were held;
//! - **a reconnect storm** (`--storm-events`): see [`storm`].

mod net;
mod publish;
mod storm;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use io360_store::StoreClient;

use crate::net::{epoch_ns, own_cpu_us, procs_cpu_us};
use crate::publish::Publisher;
use crate::subscribe::{Dial, Position, Shared, subscribe};

/// Which server, and which of its transports the subscribers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// io360's long polls (`/v1/poll`).
    Io360,
    /// io360's Server-Sent Events (`/v1/events`).
    Io360Sse,
    /// Nchan's long polls.
    Nchan,
    /// Centrifugo's unidirectional Server-Sent Events.
    Centrifugo,
}

#[derive(Parser, Debug)]
struct Args {
    /// Which server and transport.
    #[arg(long, value_enum)]
    target: Target,
    /// The address subscribers connect to (io360's longpoll, Nginx, Centrifugo).
    #[arg(long)]
    addr: String,
    /// io360's public face (`http://host:port`): messages are comment POSTs there.
    #[arg(long)]
    api: Option<String>,
    /// io360's store base URL: messages are appends to the store (without --api).
    #[arg(long, default_value = "")]
    store: String,
    /// A file holding logic's credential, which the store asks of writers (`io360 tier-keys`
    /// writes one as `logic.token`).
    #[arg(long, env = "IO360_TIER_TOKEN_FILE")]
    tier_token_file: Option<std::path::PathBuf>,
    /// Centrifugo's HTTP API key.
    #[arg(long, default_value = "")]
    api_key: String,
    /// Centrifugo's connection token (a JWT naming the channel in its `channels` claim).
    #[arg(long, default_value = "")]
    token: String,
    /// Subscribers.
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
    /// Server process ids whose resident memory and CPU are counted (comma-separated).
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
    /// Runs a reconnect storm of this many events instead of fan-out rounds.
    #[arg(long, default_value_t = 0)]
    storm_events: usize,
    /// The storm's events per second.
    #[arg(long, default_value_t = 20.0)]
    storm_rate: f64,
    /// The storm's cut comes before this event (default: a quarter of the way).
    #[arg(long)]
    cut_after: Option<usize>,
    /// The shell command that cuts every subscriber (restarts the server) during the storm.
    #[arg(long, default_value = "")]
    cut: String,
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

/// Subscribers held now, as the server counts them.
async fn held(http: &reqwest::Client, args: &Args) -> Result<usize> {
    let (path, key) = match args.target {
        Target::Io360 | Target::Io360Sse => ("metrics", "io360_longpoll_held_connections "),
        Target::Nchan => ("nchan_status", "subscribers: "),
        Target::Centrifugo => ("metrics", "centrifugo_node_num_clients "),
    };
    let text = http
        .get(format!("http://{}/{path}", args.addr))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize))
}

async fn wait_held(http: &reqwest::Client, args: &Args, n: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let h = held(http, args).await?;
        if h >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {h} of {n} subscribers held");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let publisher = Publisher {
        target: args.target,
        http: http.clone(),
        addr: args.addr.clone(),
        api: args.api.clone(),
        store,
        api_key: args.api_key.clone(),
        channel: args.channel.clone(),
    };
    let addr: std::net::SocketAddr = args.addr.parse()?;
    let sources: Vec<std::net::IpAddr> = args
        .sources
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    // A first message, so every subscriber starts from a known position.
    let since = publisher.publish("round-0-end").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = memory(&args);
    let shared = Arc::new(Shared::new(args.n, args.storm_events));
    for i in 0..args.n {
        let dial = Dial {
            target: args.target,
            addr,
            source: sources[i % sources.len()],
            channel: args.channel.clone(),
            token: args.token.clone(),
        };
        let pos = Position {
            seq: since,
            ..Position::default()
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = subscribe(shared, i, dial, pos).await {
                eprintln!("subscriber {i}: {e}");
            }
        });
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    wait_held(&http, &args, args.n, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory(&args);
    let n = args.n as f64;
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n;
    let mut out = serde_json::json!({
        "label": args.label,
        "target": format!("{:?}", args.target).to_lowercase(),
        "n": args.n,
        "rss_per_poll_bytes": per(after.rss, before.rss),
        "cgroup_per_poll_bytes": per(after.cg_total, before.cg_total),
        "kmem_per_poll_bytes": per(after.cg_kmem, before.cg_kmem),
        "tcp_per_poll_bytes": per(after.cg_tcp, before.cg_tcp),
    });

    if args.storm_events > 0 {
        let storm = storm::Storm {
            events: args.storm_events,
            rate: args.storm_rate,
            cut_after: args.cut_after.unwrap_or(args.storm_events / 4),
            cut: args.cut.clone(),
        };
        let figures = storm::run(shared, &publisher, &storm).await?;
        merge(&mut out, figures);
        println!("{out}");
        std::process::exit(0);
    }

    let mut all = Vec::new();
    // The same, by when each answer arrived in its socket rather than when it was read.
    let mut arrivals = Vec::new();
    let mut unstamped = 0usize;
    // Each counted round's own arrival p99: how much one publish differs from the next.
    let mut round_p99s = Vec::new();
    // Per round, the first delivery (the publish path plus one write) and every delivery's
    // time after that first one (the fan-out itself), for every server alike.
    let mut firsts = Vec::new();
    let mut spread = Vec::new();
    let (mut client_cpu, mut server_cpu) = (0u64, 0u64);
    for round in 1..=(args.warmup + args.rounds) as u64 {
        let counted = round > args.warmup as u64;
        wait_held(&http, &args, args.n, Duration::from_secs(60)).await?;
        let (c0, s0) = (own_cpu_us(), procs_cpu_us(&args.pids));
        let t0 = shared.start.elapsed().as_nanos() as u64;
        let t0_epoch = epoch_ns();
        publisher.publish(&format!("round-{round}-end")).await?;
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
                bail!("round {round}: {missing} subscribers never got the message");
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
    merge(
        &mut out,
        serde_json::json!({
            "rounds": args.rounds,
            "p50_ms": pct(&all, 0.5),
            "p99_ms": pct(&all, 0.99),
            "max_ms": all.last().copied().unwrap_or(f64::NAN),
            "first_ms": pct(&firsts, 0.5),
            "spread_p50_ms": pct(&spread, 0.5),
            "spread_p99_ms": pct(&spread, 0.99),
            // When the answers arrived in the client's sockets (the kernel's stamps), and how
            // many answers came without a stamp (left out of these two).
            "arrived_p50_ms": pct(&arrivals, 0.5),
            "arrived_p99_ms": pct(&arrivals, 0.99),
            "unstamped": unstamped,
            "round_arrived_p99_ms": round_p99s,
            // CPU per delivery while rounds ran: the load client's own, and the server's.
            "client_cpu_us_per_delivery": client_cpu as f64 / (n * args.rounds as f64),
            "server_cpu_us_per_delivery": server_cpu as f64 / (n * args.rounds as f64),
        }),
    );
    println!("{out}");
    std::process::exit(0);
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}
