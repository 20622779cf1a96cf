//! `io360-load`: a closed-loop HTTP load generator for io360's benchmarks.
//!
//! `--concurrency` clients each send one request, wait for the answer, and send the next, for
//! `--duration`. `{n}` in the URL or body becomes a number unique to each request, so posted
//! comments never repeat. With `--url` given more than once, the clients take the URLs in
//! turn (client i the URL i mod n), as a Service would spread them over replicas. It prints one JSON line: requests per second, latency percentiles
//! and how many answers were not the expected status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Closed-loop HTTP load: N clients, one request at a time each")]
struct Args {
    /// The URL; `{n}` becomes a unique number. Given more than once, clients take them in turn.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// GET or POST.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body for POST; `{n}` becomes a unique number.
    #[arg(long)]
    body: Option<String>,
    /// Extra headers, `Name: value`.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The status every answer should have.
    #[arg(long, default_value_t = 200)]
    expect: u16,
    /// A label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let method = reqwest::Method::from_bytes(args.method.as_bytes()).context("method")?;
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').context("headers are `Name: value`")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            v.trim().parse()?,
        );
    }
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let args = Arc::new(args);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..args.concurrency {
        let url = args.urls[i % args.urls.len()].clone();
        let (client, method, headers) = (client.clone(), method.clone(), headers.clone());
        let (counter, errors, args) = (counter.clone(), errors.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed).to_string();
                let mut req = client
                    .request(method.clone(), url.replace("{n}", &n))
                    .headers(headers.clone())
                    .timeout(Duration::from_secs(30));
                if let Some(b) = &args.body {
                    req = req.body(b.replace("{n}", &n));
                }
                let t = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let _ = r.bytes().await;
                        st == args.expect
                    }
                    Err(_) => false,
                };
                lat.push(t.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i].as_secs_f64() * 1000.0
    };
    let out = serde_json::json!({
        "label": args.label,
        "requests": all.len(),
        "errors": errors.load(Ordering::Relaxed),
        "rps": all.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    });
    println!("{out}");
    Ok(())
}
