//! The store answers a broken request rule with the same problem logic does: the rule is
//! written once, in `io360_common::rules`.

use io360_common::Problem;
use io360_common::serve::Shutdown;

#[tokio::test]
async fn broken_rules_get_the_problems_every_tier_gives() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = Shutdown::new();
    let config = io360_store::Config {
        data_dir: dir.path().join("store"),
        group_commit_max: 64,
        write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
        limits: Default::default(),
        audit: Default::default(),
    };
    let served = tokio::spawn(io360_store::serve(config, listener, shutdown));
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let expected = [
        (
            "/store/v1/comments?thread=/a&limit=0",
            io360_common::rules::limit(Some(0), 1),
        ),
        (
            "/store/v1/changes?thread=/a&limit=1001",
            io360_common::rules::limit(Some(1001), 1),
        ),
        (
            "/store/v1/search?limit=0",
            io360_common::rules::limit(Some(0), 1),
        ),
    ];
    for (path, rule) in expected {
        let want = Problem::from(rule.unwrap_err());
        let got: Problem = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got, want, "{path}");
        assert_eq!(got.title, "`limit` must be between 1 and 1000");
    }
    let got: Problem = http
        .get(format!("{base}/store/v1/comment/abc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got,
        Problem::from(io360_common::rules::comment_id("abc").unwrap_err())
    );
    let got: Problem = http
        .post(format!("{base}/store/v1/write"))
        .json(&serde_json::json!({"op": "vote", "id": 1, "voter": "v", "value": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got,
        Problem::from(io360_common::rules::vote(3).unwrap_err())
    );
    trigger.trigger();
    served.await.unwrap().unwrap();
}
