//! The admin token from a file (a mounted Secret, as the operator gives it to logic pods),
//! not an environment variable: the token in the file opens the admin API, a trailing newline
//! is not part of it, and an unreadable file stops logic at start with the file named.

mod common;

use common::{ADMIN, logic_config, start_store, wait_ready};
use io360_common::serve::Shutdown;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_read_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let store = start_store(dir.path(), shutdown.clone()).await;

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let logic = logic_config(&[
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--store-url",
        &store,
    ]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", l.local_addr().unwrap());
    let s = shutdown.clone();
    tokio::spawn(async move { io360_logic::serve(logic, l, s).await.unwrap() });
    let http = common::as_tier("frontend");
    wait_ready(&http, &format!("{api}/readyz")).await;

    let queue = format!("{api}/api/v1/admin/queue");
    let with = |token: &str| http.get(&queue).bearer_auth(token.to_string()).send();
    assert_eq!(with(ADMIN).await.unwrap().status(), 200);
    assert_eq!(
        with("not-the-token-0123456789").await.unwrap().status(),
        403
    );

    let missing = logic_config(&[
        "--admin-token-file",
        "/nonexistent/io360/token",
        "--store-url",
        &store,
    ]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = io360_logic::serve(missing, l, shutdown.clone())
        .await
        .expect_err("an unreadable token file must stop logic");
    assert!(
        err.to_string().contains("/nonexistent/io360/token"),
        "{err}"
    );
    trigger.trigger();
}

/// `io360 serve <tier>` without the credential or keyring it needs stops at once, naming the
/// variable to set, instead of serving routes anyone could call.
#[test]
fn a_tier_without_its_credential_files_refuses_to_start_and_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (tier, var) in [
        ("store", "IO360_TIER_KEYS_FILE"),
        ("logger", "IO360_TIER_KEYS_FILE"),
        ("sync", "IO360_TIER_TOKEN_FILE"),
        ("longpoll", "IO360_TIER_TOKEN_FILE"),
        ("logic", "IO360_TIER_TOKEN_FILE"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_io360"))
            .args(["serve", tier, "--addr", "127.0.0.1:0"])
            .env("IO360_DATA_DIR", &data)
            .env_remove("IO360_TIER_KEYS_FILE")
            .env_remove("IO360_TIER_TOKEN_FILE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{tier} started without credentials");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{tier}: {err}");
    }
}
