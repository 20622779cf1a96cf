//! The store answers a broken request rule with the same problem logic does: the rule is
//! written once, in `io360_common::rules`.

mod support;

use io360_common::Problem;

#[tokio::test]
async fn broken_rules_get_the_problems_every_tier_gives() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::start(support::config(dir.path())).await;
    let base = store.base.clone();
    let http = support::as_logic();
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
        // A thread's changes are sync's to read; the rest is logic's.
        let caller = if path.starts_with("/store/v1/changes") {
            support::as_tier("sync")
        } else {
            http.clone()
        };
        let got: Problem = caller
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
    store.stop().await;
}
