//! A logic tier process, run locally with the credentials of the tiers'
//! ServiceAccount, watches its control ConfigMap and refuses writes within 5 s of the operator
//! suspending comments; reads keep working, and writes come back on resume. Both changes reach
//! the audit trail in the logger, done by `operator`, at the time the operator made them.
//! A longpoll process beside it, asking that logic, answers a poll held at the time with a
//! `suspended` event within 5 s of the operator suspending, and with `resumed` on resume.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::Process;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::support::{Suite, comment_cluster, free_port, secs};

const THREAD: &str = "/posts/e2e-suspension";

/// Posts a comment; the HTTP status, the Retry-After header and the body.
async fn post(http: &reqwest::Client, logic: &str, n: u32) -> Result<(u16, Option<String>, Value)> {
    let response = http
        .post(format!("{logic}/api/v1/comments"))
        .query(&[("thread", THREAD)])
        .json(
            &json!({"text": format!("comment number {n} from the cluster suite"), "author": "e2e"}),
        )
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, retry_after, body))
}

/// Starts `io360 serve <tier>` for a tier that keeps data (store, logger) on `addr`, with its
/// data and log under `dir`.
fn start_data_tier(
    io360: &std::path::Path,
    tier: &str,
    addr: &str,
    dir: &std::path::Path,
) -> Result<Process> {
    let mut env = vec![
        ("IO360_ADDR".into(), addr.into()),
        (
            "IO360_DATA_DIR".into(),
            dir.join(tier).display().to_string(),
        ),
        ("IO360_LOG".into(), "info".into()),
    ];
    env.extend(tier_key_env(dir, tier));
    Ok(Process::start_with_env(
        &format!("io360 serve {tier}"),
        io360,
        vec!["serve".into(), tier.into()],
        env,
        dir.join(format!("{tier}.log")),
    )?)
}

/// Writes the operator's tier keys Secret into `dir` as kubelet mounts it: the keyring and
/// each tier's credential, one file each.
fn write_tier_keys(
    dir: &std::path::Path,
    items: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    for (k, v) in items {
        std::fs::write(dir.join(k), v)?;
    }
    Ok(())
}

/// The variables that point `tier` at its credential and the keyring in `dir`.
fn tier_key_env(dir: &std::path::Path, tier: &str) -> Vec<(String, String)> {
    vec![
        (
            "IO360_TIER_KEYS_FILE".into(),
            dir.join("keys").display().to_string(),
        ),
        (
            "IO360_TIER_TOKEN_FILE".into(),
            dir.join(format!("{tier}.token")).display().to_string(),
        ),
    ]
}

pub fn logic_refuses_writes_when_suspended(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let io360 = s.io360_binary().await?.to_path_buf();
        let ns = s.namespace("tier").await?;
        let name = "tiered";
        s.apply(&ns, &comment_cluster(name, json!({}))).await?;
        s.wait_ready(&ns, name, 120).await?;

        // The tiers' own ServiceAccount: logic must manage with the RBAC the operator gave it.
        let kubeconfig = s
            .cluster
            .service_account_kubeconfig(&ns, &format!("{name}-tiers"))
            .await?;
        let dir = s
            .cluster
            .scratch()
            .join(format!("tier-{}", crate::support::unique()));
        std::fs::create_dir_all(&dir)?;
        // The tiers authenticate each other with the keys the operator made for this cluster.
        let (_, items) = s.tier_keys(&ns, name).await.map_err(anyhow::Error::msg)?;
        write_tier_keys(&dir, &items)?;
        let store_addr = format!("127.0.0.1:{}", free_port()?);
        let logic_addr = format!("127.0.0.1:{}", free_port()?);
        let logger_addr = format!("127.0.0.1:{}", free_port()?);
        let _logger = start_data_tier(&io360, "logger", &logger_addr, &dir)?;
        let logger = format!("http://{logger_addr}");
        let _store = start_data_tier(&io360, "store", &store_addr, &dir)?;
        let logic_process = Process::start_with_env(
            "io360 serve logic",
            &io360,
            vec!["serve".into(), "logic".into()],
            [
                ("IO360_ADDR".into(), logic_addr.clone()),
                ("IO360_STORE_URL".into(), format!("http://{store_addr}")),
                ("IO360_CONTROL_CONFIGMAP".into(), format!("{name}-control")),
                ("IO360_CONTROL_NAMESPACE".into(), ns.clone()),
                ("IO360_ADMIN_TOKEN".into(), "e2e-admin-token-tier".into()),
                ("IO360_NO_RATE_LIMITS".into(), "true".into()),
                ("IO360_LOGGER_URL".into(), logger.clone()),
                ("KUBECONFIG".into(), kubeconfig.display().to_string()),
                ("IO360_LOG".into(), "info".into()),
            ]
            .into_iter()
            .chain(tier_key_env(&dir, "logic"))
            .collect(),
            dir.join("logic.log"),
        )?;
        let logic = format!("http://{logic_addr}");
        // The test stands where the frontend stands: logic answers only it.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "io360-tier",
            reqwest::header::HeaderValue::from_str(items["frontend.token"].trim())?,
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()?;

        let ready = s
            .wait("logic /readyz", 60, || async {
                match http.get(format!("{logic}/readyz")).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        ready.with_context(|| format!("logic log:\n{}", logic_process.log_tail(30)))?;

        // Sync and longpoll, as on the cluster: longpoll asks logic whether comments are
        // suspended and tells the polls it holds.
        let sync_addr = format!("127.0.0.1:{}", free_port()?);
        let longpoll_addr = format!("127.0.0.1:{}", free_port()?);
        let _sync = Process::start_with_env(
            "io360 serve sync",
            &io360,
            vec!["serve".into(), "sync".into()],
            [
                ("IO360_ADDR".into(), sync_addr.clone()),
                ("IO360_STORE_URL".into(), format!("http://{store_addr}")),
                ("IO360_LOGGER_URL".into(), logger.clone()),
                ("IO360_LOG".into(), "info".into()),
            ]
            .into_iter()
            .chain(tier_key_env(&dir, "sync"))
            .collect(),
            dir.join("sync.log"),
        )?;
        let longpoll_process = Process::start_with_env(
            "io360 serve longpoll",
            &io360,
            vec!["serve".into(), "longpoll".into()],
            [
                ("IO360_ADDR".into(), longpoll_addr.clone()),
                ("IO360_SYNC_URL".into(), format!("http://{sync_addr}")),
                ("IO360_LOGIC_URL".into(), logic.clone()),
                ("IO360_LOGGER_URL".into(), logger.clone()),
                ("IO360_LOG".into(), "info".into()),
            ]
            .into_iter()
            .chain(tier_key_env(&dir, "longpoll"))
            .collect(),
            dir.join("longpoll.log"),
        )?;
        let longpoll = format!("http://{longpoll_addr}");
        let browser = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let ready = s
            .wait("longpoll /readyz", 60, || async {
                match browser.get(format!("{longpoll}/readyz")).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        ready.with_context(|| format!("longpoll log:\n{}", longpoll_process.log_tail(30)))?;
        // A page's poll, as a browser makes it: held until something happens.
        let hold = |believes: u8| {
            let browser = browser.clone();
            let url = format!("{longpoll}/v1/poll?thread=%2Fquiet&since=0&suspended={believes}");
            tokio::spawn(async move {
                let r = browser.get(url).send().await?;
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                anyhow::Ok((status, body, Instant::now()))
            })
        };
        // Longpoll has asked logic at least once (it asks every second).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = hold(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        ensure!(
            !held.is_finished(),
            "a poll was answered with nothing to tell"
        );

        let mut n = 0;
        let (status, _, body) = post(&http, &logic, n).await?;
        ensure!(
            status == 201,
            "a write while live answered {status}: {body}\nlogic log:\n{}",
            logic_process.log_tail(30)
        );

        // Suspend; then time from the moment the operator suspended (the control ConfigMap's
        // `since`, stamped before the ConfigMap is written) to logic's first 503.
        s.set_suspended(&ns, name, true).await?;
        let patched = Instant::now();
        let refused = loop {
            ensure!(
                patched.elapsed() < Duration::from_secs(60),
                "logic still accepts writes 60 s after the suspension patch (control ConfigMap: {})\nlogic log:\n{}",
                s.control_data(&ns, name).await.unwrap_or_default(),
                logic_process.log_tail(30)
            );
            n += 1;
            let (status, retry_after, body) = post(&http, &logic, n).await?;
            match status {
                201 => {}
                503 => break (retry_after, body),
                other => anyhow::bail!("write during suspension answered {other}: {body}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let refused_at = Timestamp::now();
        let control = s
            .control_data(&ns, name)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            control["commentsSuspended"] == "true" && control["reason"] == "Manual",
            "logic refused writes but the control ConfigMap says {control}"
        );
        let since: Timestamp = control["since"]
            .as_str()
            .context("no `since` in the control ConfigMap")?
            .parse()
            .with_context(|| format!("`since` is not RFC 3339: {}", control["since"]))?;
        let lag = refused_at.duration_since(since).as_secs_f64();
        ensure!(
            lag <= 5.0,
            "logic refused writes {lag:.1} s after the operator suspended (limit 5 s)"
        );
        eprintln!(
            "logic refused writes at most {lag:.2} s after the operator suspended ({:.2} s after the patch)",
            secs(patched)
        );
        // The poll held when the operator suspended carries the news.
        let (status, body, told_at) = tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .context("the held poll was not answered within 10 s of the suspension")???;
        let told = told_at.duration_since(patched).as_secs_f64();
        ensure!(
            status == 200 && body["events"][0]["kind"] == "suspended",
            "the held poll was answered {status}: {body}\nlongpoll log:\n{}",
            longpoll_process.log_tail(30)
        );
        ensure!(
            told <= 5.0,
            "the held poll learned of the suspension {told:.1} s after the patch (limit 5 s)"
        );
        eprintln!("a held poll learned of the suspension {told:.2} s after the patch");
        let (retry_after, problem) = refused;
        ensure!(retry_after.is_some(), "503 without Retry-After");
        ensure!(
            problem["type"].is_string() && problem["title"].is_string(),
            "503 body is not a problem document: {problem}"
        );

        // Reads keep working while suspended.
        let list = http
            .get(format!("{logic}/api/v1/comments"))
            .query(&[("thread", THREAD)])
            .send()
            .await?;
        ensure!(
            list.status().as_u16() == 200,
            "read while suspended answered {}",
            list.status()
        );
        let list: Value = list.json().await?;
        ensure!(
            list["comments"].as_array().is_some_and(|c| !c.is_empty()),
            "the comment written while live is not listed: {list}"
        );

        let suspended_since = control["since"].clone();
        // A paused page's poll is held while comments stay suspended.
        let paused = hold(1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(
            !paused.is_finished(),
            "a paused page's poll was answered while still paused"
        );
        s.set_suspended(&ns, name, false).await?;
        let unpatched = Instant::now();
        let (status, body, told_at) = tokio::time::timeout(Duration::from_secs(10), paused)
            .await
            .context("a paused page's poll was not answered within 10 s of the resumption")???;
        let told = told_at.duration_since(unpatched).as_secs_f64();
        ensure!(
            status == 200 && body["events"][0]["kind"] == "resumed" && told <= 5.0,
            "a paused page's poll was answered {status} {told:.1} s after the resumption: {body}"
        );
        s.wait("logic accepting writes again", 30, || {
            n += 1;
            let n = n;
            let http = http.clone();
            let logic = logic.clone();
            async move {
                match post(&http, &logic, n).await {
                    Ok((201, _, _)) => Ok(()),
                    Ok((status, _, body)) => Err(format!("{status}: {body}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;

        // The audit trail: both changes, by the operator, stamped when it made them.
        let resumed_since = s
            .control_data(&ns, name)
            .await
            .map_err(anyhow::Error::msg)?["since"]
            .clone();
        // The trail is logic's to read.
        let as_logic = items["logic.token"].trim().to_owned();
        let trail: Value = s
            .wait("the suspension in the audit trail", 30, || {
                let http = http.clone();
                let logger = logger.clone();
                let token = as_logic.clone();
                async move {
                    let page: Value = http
                        .get(format!(
                            "{logger}/logger/v1/events?kind=comments.suspended,comments.resumed"
                        ))
                        .header("io360-tier", token)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    match page["events"].as_array() {
                        Some(e) if e.len() >= 2 => Ok(page),
                        _ => Err(format!("trail so far: {page}")),
                    }
                }
            })
            .await?;
        let events = trail["events"].as_array().context("no events")?;
        let (resumed, suspended) = (&events[0], &events[1]);
        let at = |v: &Value| v.as_str().and_then(|t| t.parse::<Timestamp>().ok());
        ensure!(
            events.len() == 2
                && suspended["kind"] == "comments.suspended"
                && suspended["actor"] == "operator"
                && suspended["reason"] == "manual"
                && at(&suspended["time"]).is_some()
                && at(&suspended["time"]) == at(&suspended_since)
                && resumed["kind"] == "comments.resumed"
                && resumed["actor"] == "operator"
                && at(&resumed["time"]) == at(&resumed_since),
            "the audit trail does not tell the suspension as the operator made it \
             (suspended since {suspended_since}, resumed since {resumed_since}): {trail}"
        );
        Ok(())
    })
}
