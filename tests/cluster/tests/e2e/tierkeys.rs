//! The tier keys Secret: the operator makes `<name>-tier-keys`, owned by the CommentCluster,
//! mounts into each tier's pods only that tier's items, and rotates the keys in three steps
//! when the annotation `io360.dev/rotate-tier-keys` changes (the suite's operator waits 3 s
//! between steps), with an Event per step. No key or credential reaches the operator's log or
//! an Event.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use serde_json::{Value, json};

use crate::support::{Suite, comment_cluster};

/// The items a tier's pods mount, as (Secret key, file name).
fn expected_items(tier: &str) -> Vec<(String, String)> {
    let token = (format!("{tier}.token"), "token".to_owned());
    let keys = ("keys".to_owned(), "keys".to_owned());
    match tier {
        "frontend" | "longpoll" => vec![token],
        "logger" => vec![keys],
        _ => vec![token, keys],
    }
}

fn mounted_items(template: &Value) -> Vec<(String, String)> {
    template["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == "tier-keys")
        .flat_map(|v| v["secret"]["items"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            (
                i["key"].as_str().unwrap_or_default().to_owned(),
                i["path"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn phase(secret: &k8s_openapi::api::core::v1::Secret) -> String {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("io360.dev/tier-keys-phase").cloned())
        .unwrap_or_default()
}

fn key_ids(items: &BTreeMap<String, String>) -> Vec<String> {
    items["keys"]
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

pub fn tier_keys_are_owned_mounted_per_tier_and_rotate(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("tierkeys").await?;
        let name = "keyed";
        s.apply(&ns, &comment_cluster(name, json!({}))).await?;
        let cc = s.wait_ready(&ns, name, 120).await?;
        let uid = cc["metadata"]["uid"].as_str().context("no uid")?.to_owned();

        let (secret, items) = s.tier_keys(&ns, name).await.map_err(anyhow::Error::msg)?;
        let owner = secret.metadata.owner_references.clone().unwrap_or_default();
        ensure!(
            owner
                .iter()
                .any(|o| o.uid == uid && o.kind == "CommentCluster" && o.controller == Some(true)),
            "the Secret is not owned by its CommentCluster: {owner:?}"
        );
        ensure!(
            secret.metadata.labels.clone().unwrap_or_default()["app.kubernetes.io/instance"]
                == name,
            "labels {:?}",
            secret.metadata.labels
        );
        ensure!(phase(&secret) == "Stable", "phase {}", phase(&secret));
        for tier in ["frontend", "logic", "store", "sync", "longpoll", "logger"] {
            let token = &items[&format!("{tier}.token")];
            ensure!(
                token.starts_with(&format!("io360.{tier}.k1.")),
                "{tier}'s credential"
            );
        }
        ensure!(key_ids(&items) == ["k1"], "keyring {:?}", key_ids(&items));
        ensure!(
            !s.events(&ns, name, "TierKeysCreated").await?.is_empty(),
            "no TierKeysCreated Event"
        );

        // Each tier's pod template mounts its own items and nothing else.
        let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &ns);
        for tier in ["frontend", "logic", "sync", "longpoll", "logger"] {
            let d = deployments.get(&format!("{name}-{tier}")).await?;
            let template = serde_json::to_value(d.spec.context("no spec")?.template)?;
            ensure!(
                mounted_items(&template) == expected_items(tier),
                "{tier} mounts {:?}",
                mounted_items(&template)
            );
        }
        let sts: Api<StatefulSet> = Api::namespaced(s.client.clone(), &ns);
        let store = sts.get(&format!("{name}-store")).await?;
        let template = serde_json::to_value(store.spec.context("no spec")?.template)?;
        ensure!(
            mounted_items(&template) == expected_items("store"),
            "store mounts {:?}",
            mounted_items(&template)
        );

        // A rotation asked for by the annotation goes through its three steps.
        let before = items.clone();
        let patch = json!({"metadata": {"annotations": {"io360.dev/rotate-tier-keys": "e2e-1"}}})
            .to_string();
        s.kubectl(&[
            "patch",
            "commentcluster",
            name,
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
        let added = s
            .wait("a new key in the keyring", 60, || async {
                let (secret, items) = s.tier_keys(&ns, name).await?;
                match key_ids(&items).len() {
                    2 => Ok((phase(&secret), items)),
                    _ => Err(format!(
                        "phase {} keys {:?}",
                        phase(&secret),
                        key_ids(&items)
                    )),
                }
            })
            .await?;
        // While both keys are in the keyring, a credential is either the old one or the new.
        if added.0 == "KeyAdded" {
            ensure!(
                added.1["logic.token"] == before["logic.token"],
                "credentials switched before the grace period"
            );
        }
        let after = s
            .wait("the rotation finished", 90, || async {
                let (secret, items) = s.tier_keys(&ns, name).await?;
                match (phase(&secret).as_str(), key_ids(&items).as_slice()) {
                    ("Stable", [only]) if only == "k2" => Ok(items),
                    (p, ids) => Err(format!("phase {p} keys {ids:?}")),
                }
            })
            .await?;
        for tier in ["frontend", "logic", "store", "sync", "longpoll", "logger"] {
            let key = format!("{tier}.token");
            ensure!(
                after[&key].starts_with(&format!("io360.{tier}.k2."))
                    && after[&key] != before[&key],
                "{tier}'s credential was not switched"
            );
        }
        for reason in ["TierKeyAdded", "TierCredentialsSwitched", "TierKeyRetired"] {
            let events = s.events(&ns, name, reason).await?;
            ensure!(!events.is_empty(), "no {reason} Event");
            for e in &events {
                let note = e.message.clone().unwrap_or_default();
                ensure!(
                    !note.contains("io360."),
                    "{reason} names a credential: {note}"
                );
            }
        }
        // The annotation, unchanged, asks for nothing more.
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        let (_, still) = s.tier_keys(&ns, name).await.map_err(anyhow::Error::msg)?;
        ensure!(
            still == after,
            "the keys changed again without a new request"
        );

        // Nothing secret in the operator's log.
        let log = s.operator_log_tail(100_000);
        for (k, v) in before.iter().chain(after.iter()) {
            let secret_part = v.rsplit(['.', ' ']).next().unwrap_or(v).trim();
            ensure!(
                secret_part.len() < 16 || !log.contains(secret_part),
                "{k} appears in the operator's log"
            );
        }
        Ok(())
    })
}
