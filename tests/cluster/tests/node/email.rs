//! Email on the real node: a CommentCluster with `spec.notifications` runs the notify pod,
//! which logs in to a mail server beside the cluster (at the node's address, through its
//! NetworkPolicy) with the login from a Secret, and mails a moderator about a held comment
//! and a reader the link that confirms their subscription.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::isolate::NODE_IP;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::flows::start_cluster;
use crate::support::{Suite, merge, on_the_node_with_storage};

const USER: &str = "comments@mail.test";
const PASSWORD: &str = "node pass 1";

/// One message a mail server beside the cluster took: envelope recipients and the text.
#[derive(Clone, Debug)]
struct Mail {
    rcpt: Vec<String>,
    data: String,
}

/// A small SMTP server (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) that takes mail only after
/// the expected login, and keeps what it took.
async fn mail_server(listener: TcpListener, mails: Arc<Mutex<Vec<Mail>>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let mails = mails.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            let _ = w.write_all(b"220 mail.test ESMTP\r\n").await;
            let (mut logged_in, mut rcpt, mut line) = (false, Vec::new(), String::new());
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let text = line.trim_end().to_owned();
                let cmd = text.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") {
                    b"250-mail.test\r\n250 AUTH PLAIN\r\n"
                } else if let Some(arg) = text.get("AUTH PLAIN ".len()..)
                    && cmd.starts_with("AUTH PLAIN ")
                {
                    use base64::Engine as _;
                    let want = format!("\0{USER}\0{PASSWORD}");
                    logged_in = base64::engine::general_purpose::STANDARD
                        .decode(arg)
                        .is_ok_and(|got| got == want.as_bytes());
                    if logged_in {
                        b"235 accepted\r\n"
                    } else {
                        b"535 bad login\r\n"
                    }
                } else if cmd.starts_with("MAIL FROM") {
                    if logged_in {
                        b"250 OK\r\n"
                    } else {
                        b"530 log in first\r\n"
                    }
                } else if cmd.starts_with("RCPT TO") {
                    rcpt.push(text[8..].trim().trim_matches(['<', '>']).to_owned());
                    b"250 OK\r\n"
                } else if cmd == "DATA" {
                    let _ = w.write_all(b"354 go ahead\r\n").await;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    if let Ok(mut m) = mails.lock() {
                        m.push(Mail {
                            rcpt: std::mem::take(&mut rcpt),
                            data,
                        });
                    }
                    b"250 queued\r\n"
                } else if cmd.starts_with("QUIT") {
                    let _ = w.write_all(b"221 bye\r\n").await;
                    return;
                } else {
                    b"250 OK\r\n"
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Waits up to `secs` for a message to `to`.
async fn mail_to(mails: &Arc<Mutex<Vec<Mail>>>, to: &str, secs: u64) -> Result<Mail> {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let found = mails
            .lock()
            .ok()
            .and_then(|m| m.iter().find(|m| m.rcpt.iter().any(|r| r == to)).cloned());
        if let Some(m) = found {
            return Ok(m);
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "no message to {to} within {secs} s; the server took: {:?}",
            mails.lock().map(|m| m.clone()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn email_goes_out_through_the_notify_pod(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let listener = TcpListener::bind((NODE_IP, 0))
            .await
            .context("the mail server's port at the node's address")?;
        let port = listener.local_addr()?.port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(mail_server(listener, mails.clone()));
        let _stop = abort_on_drop(server);

        let ns = s.namespace("email").await?;
        let name = "mail";
        s.apply(
            &ns,
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "smtp"},
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": USER, "password": PASSWORD},
            }),
        )
        .await?;
        // The notify pod goes where the other tiers do, with a volume on the node.
        let mut notifications = on_the_node_with_storage();
        merge(
            &mut notifications,
            json!({
                "smtp": {
                    "host": NODE_IP.to_string(),
                    "port": port,
                    "tls": "Plain",
                    "credentialsSecret": {"name": "smtp"},
                    "peers": [{"ipBlock": {"cidr": format!("{NODE_IP}/32")}}],
                },
                "from": "Comments <comments@mail.test>",
                "publicUrl": "https://blog.mail.test",
                "moderators": ["desk@mail.test"],
                "digestSeconds": 1,
            }),
        );
        start_cluster(
            s,
            &ns,
            name,
            json!({
                "moderation": "all",
                "notifications": notifications,
                "network": {"apiServerCidrs": [format!("{NODE_IP}/32")]},
            }),
        )
        .await?;
        let frontend = s.service_url(&ns, name, "frontend").await?;

        // A comment held for moderation: the moderator is mailed with its approve link.
        let response = s
            .http
            .post(format!("{frontend}/api/v1/comments?thread=/"))
            .json(&json!({"text": "First, and held", "author": "Node"}))
            .send()
            .await?;
        ensure!(
            response.status().as_u16() == 201,
            "post: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let held = mail_to(&mails, "desk@mail.test", 90).await?;
        ensure!(
            held.data.contains("https://blog.mail.test/"),
            "the moderator's message has no link under the public URL: {}",
            held.data
        );

        // A reader subscribes through the public API: logic hands it to notify, which mails
        // the confirmation link.
        let response = s
            .http
            .post(format!("{frontend}/api/v1/notifications/subscribe"))
            .json(&json!({"email": "reader@mail.test", "thread": "/"}))
            .send()
            .await?;
        ensure!(
            response.status().as_u16() == 202,
            "subscribe: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let confirm = mail_to(&mails, "reader@mail.test", 60).await?;
        ensure!(
            confirm.data.contains("https://blog.mail.test/"),
            "the confirmation has no link under the public URL: {}",
            confirm.data
        );
        s.measure(format!(
            "{ns}: the notify pod mailed the moderator and the reader through the mail server at {NODE_IP}:{port}, logged in from the Secret"
        ));
        Ok(())
    })
}

/// Aborts the mail server's task when the test ends, passed or failed.
fn abort_on_drop(task: tokio::task::JoinHandle<()>) -> impl Drop {
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Abort(task)
}
