//! Crash safety: `kill -9` the store while many clients post; after a restart, every comment
//! that was acknowledged with a 201 is there, and every thread's sequence is gap-free.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN, Proc, free_addr, logic_config, wait_ready};
use io360_common::serve::Shutdown;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_comments_survive_kill_9_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap().to_owned();
    let store_addr = free_addr().to_string();
    let store_url = format!("http://{store_addr}");
    let start_store = || {
        Proc::spawn(
            &["serve", "store", "--addr", &store_addr, "--data-dir", &data],
            &[],
        )
    };
    let mut store = start_store();
    // The test posts as the frontend does, and reads the store's changes as sync does.
    let http = common::as_tier("frontend");
    let as_sync = common::as_tier("sync");
    wait_ready(&http, &format!("{store_url}/readyz")).await;

    let (trigger, shutdown) = Shutdown::new();
    let logic = logic_config(&[
        "--admin-token",
        ADMIN,
        "--store-url",
        &store_url,
        "--no-rate-limits",
    ]);
    let logic_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", logic_l.local_addr().unwrap());
    tokio::spawn(async move { io360_logic::serve(logic, logic_l, shutdown).await.unwrap() });
    wait_ready(&http, &format!("{api}/readyz")).await;

    // 16 clients post as fast as they can; each remembers what got a 201.
    let acked: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (http, api, acked, stop) = (http.clone(), api.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let thread = format!("/crash/{}", c % 4);
                let res = http
                    .post(format!("{api}/api/v1/comments"))
                    .query(&[("thread", &thread)])
                    .json(&json!({"text": format!("client {c} comment {n}")}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                n += 1;
                if let Ok(r) = res
                    && r.status() == 201
                {
                    let v: Value = r.json().await.unwrap();
                    let id = v["comment"]["id"].as_u64().unwrap();
                    let seq = v["comment"]["seq"].as_u64().unwrap();
                    acked.lock().unwrap().push((thread, id, seq));
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Let writes flow, then kill the store mid-write, with no chance to flush.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acked.lock().unwrap().len();
    assert!(
        before_kill > 0,
        "no comment was acknowledged before the kill"
    );
    store.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Writes fail cleanly while the store is down, then it comes back on the same directory.
    let mut store = start_store();
    wait_ready(&http, &format!("{store_url}/readyz")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > before_kill,
        "no comment was acknowledged after the restart"
    );

    // Kill it once more and restart, then check everything straight from the store.
    store.kill9();
    let _store = start_store();
    wait_ready(&http, &format!("{store_url}/readyz")).await;
    let mut by_thread: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (thread, id, _) in &acked {
        by_thread.entry(thread.clone()).or_default().insert(*id);
    }
    for (thread, ids) in by_thread {
        let page: Value = as_sync
            .get(format!("{store_url}/store/v1/changes"))
            .query(&[
                ("thread", thread.as_str()),
                ("after", "0"),
                ("limit", "1000"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut all = page["changes"].as_array().unwrap().clone();
        let mut after = all.last().map(|c| c["seq"].as_u64().unwrap()).unwrap_or(0);
        while after < page["head"].as_u64().unwrap() {
            let more: Value = as_sync
                .get(format!("{store_url}/store/v1/changes"))
                .query(&[
                    ("thread", thread.as_str()),
                    ("after", &after.to_string()),
                    ("limit", "1000"),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let more = more["changes"].as_array().unwrap().clone();
            after = more.last().map(|c| c["seq"].as_u64().unwrap()).unwrap();
            all.extend(more);
        }
        let seqs: Vec<u64> = all.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "{thread}: sequence numbers have a gap or a repeat"
        );
        let stored: BTreeSet<u64> = all
            .iter()
            .map(|c| c["comment"]["id"].as_u64().unwrap())
            .collect();
        let missing: Vec<_> = ids.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{thread}: acknowledged comments lost: {missing:?}"
        );
    }
    trigger.trigger();
}
