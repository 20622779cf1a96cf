//! Notify logs in to the mail server with a user name and password read from files (how a
//! Kubernetes Secret reaches it), never from its environment.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

mod smtp;

use clap::Parser;
use io360_notify::Config;
use smtp::MailServer;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["notify"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("arguments parse").config
}

fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_login_comes_from_the_username_and_password_files() {
    let server = MailServer::start_with_login("comments@example.org", "s3cret pass").await;
    let dir = tempfile::tempdir().unwrap();
    // A Secret's key mounted as a file often ends with a newline: it is not the password's.
    let user = write(&dir, "username", "comments@example.org\n");
    let good = write(&dir, "password", "s3cret pass\n");
    let bad = write(&dir, "wrong", "guess");
    let url = server.url();

    let mailer = config(&[
        "--smtp-url",
        &url,
        "--smtp-username-file",
        &user,
        "--smtp-password-file",
        &good,
    ])
    .mailer()
    .expect("a mailer");
    assert!(
        mailer.test_connection().await.expect("the server answers"),
        "logged in with the files' user name and password"
    );

    let refused = config(&[
        "--smtp-url",
        &url,
        "--smtp-username-file",
        &user,
        "--smtp-password-file",
        &bad,
    ])
    .mailer()
    .expect("a mailer")
    .test_connection()
    .await;
    assert!(refused.is_err(), "a wrong password is refused: {refused:?}");
    assert_eq!(
        *server.logins.lock().unwrap(),
        vec![
            ("comments@example.org".to_owned(), true),
            ("comments@example.org".to_owned(), false)
        ]
    );
}

#[test]
fn a_user_name_without_a_password_or_an_unreadable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let user = write(&dir, "username", "someone");
    let err = config(&[
        "--smtp-url",
        "smtp://127.0.0.1:25",
        "--smtp-username-file",
        &user,
    ])
    .mailer()
    .expect_err("refused")
    .to_string();
    assert!(err.contains("set both or neither"), "{err}");

    let missing = dir.path().join("absent").to_str().unwrap().to_owned();
    let err = config(&[
        "--smtp-url",
        "smtp://127.0.0.1:25",
        "--smtp-username-file",
        &user,
        "--smtp-password-file",
        &missing,
    ])
    .mailer()
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("IO360_SMTP_PASSWORD_FILE") && err.contains("absent"),
        "{err}"
    );
}
