//! The frontend over real HTTP on loopback: static serving, conditional requests,
//! compression, traversal attempts, snapshots from a real logic and store, stale snapshots
//! while logic is down, and the suspension note.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use io360_common::serve::{Shutdown, ShutdownTrigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Running {
    url: String,
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}

async fn listener() -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// The keyring the tiers of this test process share.
static KEYS: std::sync::LazyLock<io360_common::auth::Keyring> =
    std::sync::LazyLock::new(io360_common::auth::Keyring::generate);

fn auth() -> io360_common::auth::TierAuthConfig {
    io360_common::auth::TierAuthConfig::in_memory(&KEYS)
}

/// A frontend serving the site in `dir`, with nothing behind it.
async fn start_site(dir: &std::path::Path) -> Result<Running> {
    start_frontend(io360_frontend::Config {
        site_dir: Some(dir.to_owned()),
        ..Default::default()
    })
    .await
}

async fn start_frontend(mut config: io360_frontend::Config) -> Result<Running> {
    config.tier_auth = auth();
    let (l, addr) = listener().await?;
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn(async move {
        if let Err(e) = io360_frontend::serve(config, l, shutdown).await {
            panic!("frontend failed: {e}");
        }
    });
    let url = format!("http://{addr}");
    wait_ready(&url).await?;
    Ok(Running {
        url,
        addr,
        trigger,
        task,
    })
}

async fn wait_ready(url: &str) -> Result<()> {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await
            && r.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} never became ready")
}

#[derive(Parser)]
struct LogicArgs {
    #[command(flatten)]
    config: io360_logic::Config,
}

const ADMIN: &str = "test-admin-token-0123456789";

/// Store and logic, in this process, on loopback.
async fn start_logic(data: &Path) -> Result<(Running, Running)> {
    let (sl, saddr) = listener().await?;
    let (strig, sshut) = Shutdown::new();
    let store = io360_store::Config {
        data_dir: data.to_owned(),
        group_commit_max: 64,
        audit: Default::default(),
        write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
        limits: Default::default(),
        tier_auth: auth(),
    };
    let stask = tokio::spawn(async move {
        let _ = io360_store::serve(store, sl, sshut).await;
    });
    let store_url = format!("http://{saddr}");
    wait_ready(&store_url).await?;
    let args = LogicArgs::try_parse_from([
        "logic",
        "--store-url",
        &store_url,
        "--admin-token",
        ADMIN,
        "--no-rate-limits",
    ])?;
    let mut config = args.config;
    config.tier_auth = auth();
    let (ll, laddr) = listener().await?;
    let (ltrig, lshut) = Shutdown::new();
    let ltask = tokio::spawn(async move {
        let _ = io360_logic::serve(config, ll, lshut).await;
    });
    let logic_url = format!("http://{laddr}");
    wait_ready(&logic_url).await?;
    Ok((
        Running {
            url: store_url,
            addr: saddr,
            trigger: strig,
            task: stask,
        },
        Running {
            url: logic_url,
            addr: laddr,
            trigger: ltrig,
            task: ltask,
        },
    ))
}

fn write(dir: &Path, rel: &str, body: &[u8]) -> Result<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(p, body)?;
    Ok(())
}

const CSS: &str = "body { color: #123456; margin: 0 auto; }\n";

fn site() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    write(
        root,
        "index.html",
        b"<!doctype html><title>home</title><h1>Home page</h1>",
    )?;
    write(root, "style.css", CSS.repeat(50).as_bytes())?;
    write(root, "logo.png", &[0x89, b'P', b'N', b'G', 0, 1, 2, 3])?;
    write(root, "fonts/a.woff2", b"wOF2....")?;
    write(root, "docs/index.html", b"<h1>Docs</h1>")?;
    write(root, "about.html", b"<h1>About</h1>")?;
    write(root, "404.html", b"<h1>Our own not found</h1>")?;
    write(root, ".env", b"SECRET=hunter2")?;
    write(
        root,
        "posts/hello/index.html",
        b"<html><body><h1>Hello</h1><section id=\"io360-thread\" data-thread=\"/posts/hello\"><noscript>Comments</noscript></section></body></html>",
    )?;
    Ok(dir)
}

/// Sends a raw request line (no client-side path normalization) and returns status and body.
async fn raw_get(addr: SocketAddr, target: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok((status, text))
}

/// The frontend's `/metrics` text.
async fn metrics(c: &reqwest::Client, base: &str) -> Result<String> {
    Ok(c.get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn static_files_types_caching_and_compression() -> Result<()> {
    let dir = site()?;
    let fe = start_site(dir.path()).await?;
    let c = client();

    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.png", "image/png"),
        ("/fonts/a.woff2", "font/woff2"),
        ("/embed.js", "text/javascript; charset=utf-8"),
        ("/embed.css", "text/css; charset=utf-8"),
    ] {
        let r = c.get(format!("{}{path}", fe.url)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ct, "{path}");
        assert!(r.headers().contains_key("etag"), "{path}");
        assert!(r.headers().contains_key("last-modified"), "{path}");
    }
    let home = c.get(format!("{}/", fe.url)).send().await?;
    assert_eq!(home.headers()["cache-control"], "no-cache");
    assert!(home.text().await?.contains("Home page"));
    let css = c.get(format!("{}/style.css", fe.url)).send().await?;
    assert_eq!(css.headers()["cache-control"], "public, max-age=3600");

    // Conditional requests.
    let etag = css.headers()["etag"].clone();
    let lm = css.headers()["last-modified"].clone();
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("if-none-match", etag.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag);
    assert!(r.bytes().await?.is_empty());
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("if-none-match", "\"other\", W/".to_owned() + etag.to_str()?)
        .send()
        .await?;
    assert_eq!(r.status(), 304, "weak comparison, lists");
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("if-none-match", "\"stale\"")
        .header("if-modified-since", lm.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 200, "If-None-Match wins over If-Modified-Since");
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("if-modified-since", lm)
        .send()
        .await?;
    assert_eq!(r.status(), 304);
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // Compression, chosen by Accept-Encoding, with its own entity tag.
    let full = CSS.repeat(50);
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    assert_ne!(r.headers()["etag"], etag);
    let gz = r.bytes().await?;
    assert!(gz.len() < full.len());
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut plain)?;
    assert_eq!(plain, full);
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("accept-encoding", "gzip, br")
        .send()
        .await?;
    assert_eq!(r.headers()["content-encoding"], "br");
    let br = r.bytes().await?;
    let mut plain = String::new();
    brotli::Decompressor::new(&br[..], 4096).read_to_string(&mut plain)?;
    assert_eq!(plain, full);
    let r = c
        .get(format!("{}/style.css", fe.url))
        .header("accept-encoding", "br;q=0, gzip;q=0")
        .send()
        .await?;
    assert!(r.headers().get("content-encoding").is_none());
    let r = c
        .get(format!("{}/logo.png", fe.url))
        .header("accept-encoding", "gzip, br")
        .send()
        .await?;
    assert!(
        r.headers().get("content-encoding").is_none(),
        "images are not recompressed"
    );

    // HEAD: the same headers, no body.
    let r = c.head(format!("{}/style.css", fe.url)).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        full.len().to_string().as_str()
    );
    assert!(r.bytes().await?.is_empty());

    // Index files, directories without slash, clean URLs, 404 pages.
    let r = c.get(format!("{}/docs", fe.url)).send().await?;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/docs/");
    assert!(
        c.get(format!("{}/docs/", fe.url))
            .send()
            .await?
            .text()
            .await?
            .contains("Docs")
    );
    assert!(
        c.get(format!("{}/about", fe.url))
            .send()
            .await?
            .text()
            .await?
            .contains("About")
    );
    let r = c.get(format!("{}/nope", fe.url)).send().await?;
    assert_eq!(r.status(), 404);
    assert!(r.text().await?.contains("Our own not found"));
    assert_eq!(c.post(format!("{}/", fe.url)).send().await?.status(), 405);

    // /api with no logic configured: a clean 503 problem.
    let r = c.get(format!("{}/api/v1/status", fe.url)).send().await?;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));

    let metrics = metrics(&c, &fe.url).await?;
    assert!(metrics.contains("io360_frontend_site_requests_total{result=\"hit\"}"));
    assert!(metrics.contains("io360_http_request_duration_seconds"));
    assert!(metrics.contains("io360_frontend_in_flight"));
    fe.stop().await;
    Ok(())
}

#[tokio::test]
async fn traversal_and_hidden_files_are_refused() -> Result<()> {
    let outer = tempfile::tempdir()?;
    write(outer.path(), "secret.txt", b"TOP-SECRET")?;
    let dir = site()?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), dir.path().join("link.txt"))?;
    let fe = start_site(dir.path()).await?;
    let secret = outer.path().join("secret.txt");
    let rel_up = format!("/../..{}", secret.display());
    for target in [
        rel_up.as_str(),
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/docs/..%5c..%5cetc%5cpasswd",
        "/docs/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/index.html%00.png",
    ] {
        let (status, text) = raw_get(fe.addr, target).await?;
        assert_eq!(status, 400, "{target}");
        assert!(
            !text.contains("TOP-SECRET") && !text.contains("root:"),
            "{target}"
        );
    }
    for target in ["/.env", "/%2eenv", "/link.txt"] {
        let (status, text) = raw_get(fe.addr, target).await?;
        assert_eq!(status, 404, "{target}");
        assert!(
            !text.contains("hunter2") && !text.contains("TOP-SECRET"),
            "{target}"
        );
    }
    fe.stop().await;
    Ok(())
}

#[tokio::test]
async fn site_reloads_when_files_change() -> Result<()> {
    let dir = site()?;
    let fe = start_site(dir.path()).await?;
    let c = client();
    assert_eq!(
        c.get(format!("{}/new.html", fe.url)).send().await?.status(),
        404
    );
    write(dir.path(), "new.html", b"<p>fresh</p>")?;
    write(dir.path(), "index.html", b"<h1>Home, edited</h1>")?;
    let mut ok = false;
    for _ in 0..100 {
        let r = c.get(format!("{}/new.html", fe.url)).send().await?;
        if r.status() == 200 && r.text().await?.contains("fresh") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a new file is served after the directory changes");
    let home = c.get(format!("{}/", fe.url)).send().await?.text().await?;
    assert!(home.contains("Home, edited"));
    fe.stop().await;
    Ok(())
}

async fn page_until(c: &reqwest::Client, url: &str, needle: &str) -> Result<String> {
    let mut last = String::new();
    for _ in 0..100 {
        last = c.get(url).send().await?.text().await?;
        if last.contains(needle) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("`{needle}` never appeared in {url}; last page:\n{last}")
}

#[tokio::test]
async fn snapshots_from_logic_stale_while_down_and_suspension_note() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (store, logic) = start_logic(data.path()).await?;
    let dir = site()?;
    let fe = start_frontend(io360_frontend::Config {
        site_dir: Some(dir.path().to_owned()),
        logic_url: Some(logic.url.clone()),
        snapshot_refresh_ms: 100,
        snapshot_timeout_ms: 500,
        status_interval_ms: 100,
        ..Default::default()
    })
    .await?;
    let c = client();
    let page = format!("{}/posts/hello/", fe.url);

    // An empty thread: the snapshot says so, and the page's own content stays.
    let html = page_until(&c, &page, "data-state=\"ready\"").await?;
    assert!(html.contains("No comments yet"));
    assert!(html.contains("<noscript>Comments</noscript>"));

    // Comments posted through the frontend's /api reach logic, then the snapshot.
    let posted: serde_json::Value = c
        .post(format!(
            "{}/api/v1/comments?thread=%2Fposts%2Fhello",
            fe.url
        ))
        .json(&serde_json::json!({"text": "First **post**", "author": "<b>Ann</b>"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = posted["comment"]["id"].as_u64().context("comment id")?;
    c.post(format!(
        "{}/api/v1/comments?thread=%2Fposts%2Fhello",
        fe.url
    ))
    .json(&serde_json::json!({"text": "A reply", "parent": id}))
    .send()
    .await?
    .error_for_status()?;
    let html = page_until(&c, &page, "A reply").await?;
    let section = html
        .split("id=\"io360-thread\"")
        .nth(1)
        .context("the marked section")?;
    assert!(section.contains("<strong>post</strong>"));
    assert!(
        section.contains("&lt;b&gt;Ann&lt;/b&gt;"),
        "authors are escaped"
    );
    assert!(!section.contains("<b>Ann</b>"));
    assert!(section.contains("io360-replies"));
    assert!(section.contains("2 comments"));
    assert!(html.ends_with("</section></body></html>"));

    // The assembled page has its own validators and compressed forms.
    let r = c
        .get(&page)
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let etag = r.headers()["etag"].clone();
    let r = c
        .get(&page)
        .header("accept-encoding", "gzip")
        .header("if-none-match", etag.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 304);

    // Suspension shows in the page.
    c.put(format!("{}/api/v1/admin/suspension", logic.url))
        .header(
            io360_common::auth::HEADER,
            io360_common::auth::Credential::of("frontend", &KEYS).header(),
        )
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"suspended": true, "reason": "maintenance tonight"}))
        .send()
        .await?
        .error_for_status()?;
    let html = page_until(&c, &page, "data-suspended=\"true\"").await?;
    assert!(html.contains("class=\"io360-paused\""));
    assert!(html.contains("maintenance tonight"));
    assert!(
        html.contains("A reply"),
        "comments stay readable while paused"
    );
    let r = c
        .get(&page)
        .header("if-none-match", etag)
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(r.status(), 200, "a changed page is not 304");
    c.put(format!("{}/api/v1/admin/suspension", logic.url))
        .header(
            io360_common::auth::HEADER,
            io360_common::auth::Credential::of("frontend", &KEYS).header(),
        )
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"suspended": false}))
        .send()
        .await?
        .error_for_status()?;
    page_until(&c, &page, "data-suspended=\"false\"").await?;

    // Logic goes down: pages keep coming, with the last snapshot.
    logic.stop().await;
    let r = c.get(format!("{}/api/v1/status", fe.url)).send().await?;
    assert_eq!(r.status(), 503, "forwarding to a dead logic is a 503");
    for _ in 0..10 {
        let r = c.get(&page).send().await?;
        assert_eq!(r.status(), 200);
        assert!(r.text().await?.contains("A reply"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = metrics(&c, &fe.url).await?;
    let stale_line = metrics
        .lines()
        .find(|l| l.starts_with("io360_frontend_snapshot_pages_total{result=\"stale\"}"))
        .context("stale counter")?;
    let stale: f64 = stale_line.rsplit(' ').next().context("value")?.parse()?;
    assert!(stale > 0.0, "stale snapshots were served and counted");
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("io360_frontend_snapshot_refreshes_total{result=\"error\"}"))
        .context("error counter")?;
    assert!(!errors.ends_with(" 0"));
    fe.stop().await;
    store.stop().await;
    Ok(())
}

#[tokio::test]
async fn pages_without_logic_have_no_snapshot_but_load() -> Result<()> {
    let dir = site()?;
    // A logic URL nothing listens on.
    let (l, addr) = listener().await?;
    drop(l);
    let fe = start_frontend(io360_frontend::Config {
        site_dir: Some(dir.path().to_owned()),
        logic_url: Some(format!("http://{addr}")),
        ..Default::default()
    })
    .await?;
    let r = client()
        .get(format!("{}/posts/hello/", fe.url))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let html = r.text().await?;
    assert!(html.contains("data-state=\"absent\""));
    assert!(html.contains("<h1>Hello</h1>"));
    fe.stop().await;
    Ok(())
}

#[tokio::test]
async fn demo_site_is_built_in() -> Result<()> {
    let fe = start_frontend(io360_frontend::Config::default()).await?;
    let c = client();
    let home = c.get(format!("{}/", fe.url)).send().await?.text().await?;
    assert!(home.contains("io360 demo"));
    let post = c
        .get(format!("{}/posts/hello/", fe.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(post.contains("id=\"io360-thread\""));
    assert!(post.contains("/embed.js"));
    fe.stop().await;
    Ok(())
}

#[tokio::test]
async fn site_files_are_counted_and_never_shadow_the_widget_or_the_api() -> Result<()> {
    let dir = site()?;
    // A site that happens to hold files where io360 answers itself.
    write(dir.path(), "embed.js", b"site's own script")?;
    write(dir.path(), "metrics", b"site's own metrics")?;
    write(dir.path(), "api/v1/comments", b"site's own comments")?;
    let fe = start_site(dir.path()).await?;
    let c = client();
    let widget = c.get(format!("{}/embed.js", fe.url)).send().await?;
    assert!(!widget.text().await?.contains("site's own"));
    let comments = c.get(format!("{}/api/v1/comments", fe.url)).send().await?;
    assert_eq!(
        comments.status(),
        503,
        "no logic here: /api is never a file"
    );

    for _ in 0..3 {
        let r = c.get(format!("{}/style.css", fe.url)).send().await?;
        assert_eq!(r.status(), 200);
    }
    let r = c.head(format!("{}/", fe.url)).send().await?;
    assert_eq!(r.status(), 200);
    let metrics = metrics(&c, &fe.url).await?;
    assert!(!metrics.contains("site's own"));
    let count = |labels: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("io360_http_requests_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        count(r#"tier="frontend",route="/{*path}",method="GET",status="200""#),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        count(r#"tier="frontend",route="/",method="HEAD",status="200""#),
        1.0
    );
    assert!(metrics.contains("io360_frontend_site_requests_total{result=\"hit\"} 4"));
    fe.stop().await;
    Ok(())
}

/// Reads from `s` until `n` complete answers (status line, headers, `content-length` bytes of
/// body, none for `HEAD`) have arrived; returns each one's head and body.
async fn read_answers(s: &mut TcpStream, heads: &[bool]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for &head_only in heads {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let body_len = if head_only || head.contains(" 304 ") {
                    0
                } else {
                    len
                };
                if buf.len() >= end + 4 + body_len {
                    let body = buf[end + 4..end + 4 + body_len].to_vec();
                    buf.drain(..end + 4 + body_len);
                    out.push((head, body));
                    break;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .context("no answer within 5 s")??;
            if n == 0 {
                bail!("closed after {} answers", out.len());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(out)
}

/// The frontend's own HTTP/1.1 loop answers site files; everything else on the same connection
/// must still get the router's answers, and a request in pieces, pipelined requests, `HEAD`,
/// `Connection: close` and broken heads must all come out right.
#[tokio::test]
async fn one_connection_carries_site_files_and_everything_else() -> Result<()> {
    let dir = site()?;
    let fe = start_site(dir.path()).await?;
    let mut s = TcpStream::connect(fe.addr).await?;

    // A head that arrives in three pieces.
    for piece in [
        "GET /style",
        ".css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gz",
        "ip\r\n\r\n",
    ] {
        s.write_all(piece.as_bytes()).await?;
        s.flush().await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let a = read_answers(&mut s, &[false]).await?;
    assert!(a[0].0.starts_with("HTTP/1.1 200 OK"), "{}", a[0].0);
    assert!(a[0].0.contains("content-encoding: gzip"), "{}", a[0].0);
    assert!(a[0].0.contains("date: "), "{}", a[0].0);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&a[0].1[..]).read_to_string(&mut plain)?;
    assert_eq!(plain, CSS.repeat(50));

    // Three pipelined in one write: a file, its HEAD, and a conditional GET.
    let etag = a[0]
        .0
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .context("no etag")?
        .to_owned();
    s.write_all(
        format!(
            "GET /about.html?x=1 HTTP/1.1\r\nHost: x\r\n\r\n\
             HEAD /about.html HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /style.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let a = read_answers(&mut s, &[false, true, false]).await?;
    assert!(a[0].0.starts_with("HTTP/1.1 200 OK"), "{}", a[0].0);
    assert_eq!(a[0].1, b"<h1>About</h1>");
    assert!(a[1].0.starts_with("HTTP/1.1 200 OK"), "{}", a[1].0);
    assert!(a[1].0.contains("content-length: 14"), "{}", a[1].0);
    assert!(
        a[2].0.starts_with("HTTP/1.1 304 Not Modified"),
        "{}",
        a[2].0
    );

    // On the same connection, what only the router answers: a 404 page, the API (no logic
    // here: 503 problem), a POST with a body, and then a site file again.
    s.write_all(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let a = read_answers(&mut s, &[false]).await?;
    assert!(a[0].0.starts_with("HTTP/1.1 404"), "{}", a[0].0);
    assert_eq!(a[0].1, b"<h1>Our own not found</h1>");
    s.write_all(
        b"POST /api/v1/comments?thread=%2Fx HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"text\":\"hi\"}",
    )
    .await?;
    let a = read_answers(&mut s, &[false]).await?;
    assert!(a[0].0.starts_with("HTTP/1.1 503"), "{}", a[0].0);
    assert!(a[0].0.contains("application/problem+json"), "{}", a[0].0);
    s.write_all(b"GET /about.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let a = read_answers(&mut s, &[false]).await?;
    assert_eq!(a[0].1, b"<h1>About</h1>");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    assert!(
        rest.is_empty(),
        "the connection closes after Connection: close"
    );

    // Connection: close on the fast path: answered, then closed.
    let mut s = TcpStream::connect(fe.addr).await?;
    s.write_all(b"GET /about.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with("<h1>About</h1>"), "{text}");

    // HTTP/1.0 gets an HTTP/1.0 answer.
    let mut s = TcpStream::connect(fe.addr).await?;
    s.write_all(b"GET /about.html HTTP/1.0\r\n\r\n").await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");

    // Broken and oversized heads get hyper's 4xx, not a silent close.
    let mut s = TcpStream::connect(fe.addr).await?;
    s.write_all(b"GET /about.html HTTP/1.1\r\nBad Header\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 400"));
    let mut s = TcpStream::connect(fe.addr).await?;
    let long = format!(
        "GET /about.html HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(500 * 1024)
    );
    let _ = s.write_all(long.as_bytes()).await;
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all).await;
    assert!(
        String::from_utf8_lossy(&all).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&all[..all.len().min(200)])
    );

    fe.stop().await;
    Ok(())
}
