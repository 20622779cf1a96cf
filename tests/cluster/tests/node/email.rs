//! Email on the real node: a CommentCluster with `spec.notifications` runs the notify pod,
//! which logs in to a mail server beside the cluster (at the node's address, through its
//! NetworkPolicy) with the login from a Secret, and mails a moderator about a held comment
//! and a reader the link that confirms their subscription.

use std::time::Duration;

use anyhow::{Result, ensure};
use futures::future::BoxFuture;
use io360_cluster_tests::isolate::NODE_IP;
use serde_json::json;

use crate::flows::start_cluster;
use crate::support::{Suite, merge, on_the_node_with_storage};
use smtp::{MailServer, Received};

// The mail server notify's own tests use, speaking SMTP with `AUTH PLAIN`.
#[allow(
    clippy::unwrap_used,
    reason = "a test server: a panic is the failure report"
)]
#[path = "../../../../workloads/notify/tests/smtp/mod.rs"]
mod smtp;

const USER: &str = "comments@mail.test";
const PASSWORD: &str = "node pass 1";

/// Waits up to `secs` for a message to `to`.
async fn mail_to(server: &MailServer, to: &str, secs: u64) -> Result<Received> {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(m) = server.to(to).into_iter().next() {
            return Ok(m);
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "no message to {to} within {secs} s; the server took: {:?}",
            server.messages()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn email_goes_out_through_the_notify_pod(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        // At the node's address, inside the run's network namespace, where pods reach it.
        let mail = MailServer::start_at(NODE_IP, USER, PASSWORD).await;
        let port = mail.port;

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
        let held = mail_to(&mail, "desk@mail.test", 90).await?;
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
        let confirm = mail_to(&mail, "reader@mail.test", 60).await?;
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
