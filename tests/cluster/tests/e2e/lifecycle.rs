//! `kubectl apply` of an example CommentCluster converges: every child exists
//! and is owned by the CommentCluster, Deployments get Ready pods on the fake nodes, and the
//! status turns Ready with the right replica counts.

use anyhow::{Context, Result, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};

use crate::support::{Suite, comment_cluster};

/// The tiers and the replicas the example asks for (store and logger always run one).
pub const EXAMPLE_REPLICAS: [(&str, i64); 6] = [
    ("frontend", 2),
    ("logic", 2),
    ("sync", 1),
    ("longpoll", 3),
    ("store", 1),
    ("logger", 1),
];

/// The example: fixed replicas per tier, moderation and origins set, one autoscaled tier
/// would make replica counts the autoscaler's choice, so none here.
pub fn example(name: &str) -> Value {
    comment_cluster(
        name,
        json!({
            "frontend": {"replicas": 2},
            "logic": {"replicas": 2},
            "sync": {"replicas": 1},
            "longpoll": {"replicas": 3},
            "moderation": "first-time",
            "allowedOrigins": ["https://blog.example.com"],
        }),
    )
}

/// Kinds the operator makes children of (group, version, kind).
pub const CHILD_KINDS: [(&str, &str, &str); 11] = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "PersistentVolumeClaim"),
    ("rbac.authorization.k8s.io", "v1", "Role"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("policy", "v1", "PodDisruptionBudget"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
];

/// Every object of [`CHILD_KINDS`] in the namespace, as (kind, name, owner uids).
pub async fn objects(s: &Suite, ns: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let mut out = Vec::new();
    for (group, version, kind) in CHILD_KINDS {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), ns, &resource);
        for object in api.list(&ListParams::default()).await?.items {
            let owners = object
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o.kind == "CommentCluster" && o.controller == Some(true))
                .map(|o| o.uid)
                .collect();
            out.push((
                kind.to_string(),
                object.metadata.name.unwrap_or_default(),
                owners,
            ));
        }
    }
    Ok(out)
}

/// Objects in a namespace the suite or Kubernetes made, not the operator.
pub fn made_by_others(kind: &str, name: &str) -> bool {
    matches!(
        (kind, name),
        ("ConfigMap", "kube-root-ca.crt") | ("ServiceAccount", "default")
    ) || (kind == "PersistentVolumeClaim" && name.contains("-store-"))
}

pub fn example_cluster_converges_to_ready(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("lifecycle").await?;
        let name = "example";
        s.apply(&ns, &example(name)).await?;
        let cc = s.wait_ready(&ns, name, 120).await?;
        let uid = cc["metadata"]["uid"]
            .as_str()
            .context("no uid")?
            .to_string();

        // The children the contracts name, each owned (as controller) by the CommentCluster.
        let children = objects(s, &ns).await?;
        let mut expected: Vec<(String, String)> = vec![
            ("ConfigMap".into(), format!("{name}-control")),
            ("ServiceAccount".into(), format!("{name}-tiers")),
            ("StatefulSet".into(), format!("{name}-store")),
        ];
        for tier in ["frontend", "logic", "sync", "longpoll", "logger"] {
            expected.push(("Deployment".into(), format!("{name}-{tier}")));
        }
        for (tier, _) in EXAMPLE_REPLICAS {
            expected.push(("Service".into(), format!("{name}-{tier}")));
        }
        for (kind, wanted) in &expected {
            ensure!(
                children.iter().any(|(k, n, _)| k == kind && n == wanted),
                "no {kind} {wanted}; children: {children:?}"
            );
        }
        for kind in [
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ] {
            ensure!(
                children.iter().any(|(k, _, _)| k == kind),
                "no {kind} among {children:?}"
            );
        }
        for (kind, child, owners) in &children {
            if made_by_others(kind, child) {
                continue;
            }
            ensure!(
                owners == &vec![uid.clone()],
                "{kind} {child} is not controlled by CommentCluster {name} ({uid}): owners {owners:?}"
            );
        }

        // Every Deployment's pods are Ready on fake nodes; store runs its one pod.
        let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &ns);
        for d in deployments.list(&ListParams::default()).await?.items {
            let dname = d.metadata.name.clone().unwrap_or_default();
            let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            ensure!(ready == spec, "Deployment {dname}: {ready} of {spec} ready");
        }
        let sets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &ns);
        let store = sets.get(&format!("{name}-store")).await?;
        ensure!(
            store.status.as_ref().and_then(|s| s.ready_replicas) == Some(1),
            "store not ready: {:?}",
            store.status
        );
        let pods = s.pods(&ns, "").await?;
        ensure!(!pods.is_empty(), "no pods in {ns}");
        for pod in &pods {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            ensure!(
                phase == "Running",
                "pod {:?} is {phase} on {node:?}",
                pod.metadata.name
            );
            if s.cluster.mode() == io360_cluster_tests::ClusterMode::Owned {
                ensure!(
                    node.starts_with("kwok-node-"),
                    "pod {:?} on {node:?}",
                    pod.metadata.name
                );
            }
        }

        // Status: desired and ready replicas per tier, comments live.
        for (tier, replicas) in EXAMPLE_REPLICAS {
            let t = &cc["status"]["tiers"][tier];
            ensure!(
                t["desiredReplicas"] == replicas && t["readyReplicas"] == replicas,
                "status.tiers.{tier} = {t}, wanted {replicas} desired and ready"
            );
        }
        ensure!(
            cc["status"]["comments"] == "Live",
            "status.comments = {}",
            cc["status"]["comments"]
        );
        let control = s
            .control_data(&ns, name)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            control["commentsSuspended"] == "false",
            "control ConfigMap: {control}"
        );
        Ok(())
    })
}

/// A store on PostgreSQL: the operator runs it as a Deployment of the replicas the spec asks
/// for, behind a ClusterIP Service, with no StatefulSet or volume claim, a
/// PodDisruptionBudget, and a NetworkPolicy letting it out to the database's port; the
/// status counts its replicas, and an autoscaler replaces the fixed count when asked.
pub fn store_on_postgres_runs_as_replicas(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("store-pg").await?;
        let name = "shop";
        let database = json!({
            "engine": "Postgres",
            "postgres": {"urlSecret": {"name": "shop-db", "key": "uri"}, "port": 6432},
            "replicas": 3,
        });
        s.apply(&ns, &comment_cluster(name, json!({"store": database})))
            .await?;
        let cc = s.wait_ready(&ns, name, 120).await?;
        let store = &cc["status"]["tiers"]["store"];
        ensure!(
            store["desiredReplicas"] == 3 && store["readyReplicas"] == 3,
            "status.tiers.store = {store}, wanted 3 desired and ready"
        );
        let children = objects(s, &ns).await?;
        let has = |kind: &str, n: &str| children.iter().any(|(k, c, _)| k == kind && c == n);
        let store_name = format!("{name}-store");
        ensure!(
            has("Deployment", &store_name) && !has("StatefulSet", &store_name),
            "store is not a Deployment alone: {children:?}"
        );
        ensure!(
            !children
                .iter()
                .any(|(k, c, _)| k == "PersistentVolumeClaim" && c.contains("-store")),
            "a store on PostgreSQL got a volume claim: {children:?}"
        );
        ensure!(
            has("PodDisruptionBudget", &store_name),
            "no PodDisruptionBudget for the store: {children:?}"
        );
        let deployment: Api<Deployment> = Api::namespaced(s.client.clone(), &ns);
        let pod = serde_json::to_value(deployment.get(&store_name).await?)?;
        let container = &pod["spec"]["template"]["spec"]["containers"][0];
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for wanted in [
            ("IO360_STORE_ENGINE", "postgres"),
            (
                "IO360_DATABASE_URL_FILE",
                "/var/run/secrets/io360/database/url",
            ),
        ] {
            ensure!(
                env.iter().any(|(k, v)| k == wanted.0 && v == wanted.1),
                "store env lacks {wanted:?}: {env:?}"
            );
        }
        ensure!(
            !env.iter().any(|(k, _)| k == "IO360_DATA_DIR"),
            "a store on PostgreSQL was given a data directory: {env:?}"
        );
        let service = s
            .kubectl(&["get", "service", &store_name, "-n", &ns, "-o", "json"])
            .await?;
        let service: Value = serde_json::from_str(&service)?;
        ensure!(
            service["spec"]["clusterIP"] != "None",
            "the store's Service is headless: {}",
            service["spec"]
        );
        let policy = s
            .kubectl(&["get", "networkpolicy", &store_name, "-n", &ns, "-o", "json"])
            .await?;
        ensure!(
            policy.contains("6432"),
            "the store's NetworkPolicy does not let it reach the database's port: {policy}"
        );

        // An autoscaler instead of a fixed count.
        let mut autoscaled = database.clone();
        autoscaled["replicas"] = Value::Null;
        autoscaled["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 5});
        s.apply(&ns, &comment_cluster(name, json!({"store": autoscaled})))
            .await?;
        s.wait("the store's HorizontalPodAutoscaler", 60, || async {
            let children = objects(s, &ns).await.map_err(|e| e.to_string())?;
            if children
                .iter()
                .any(|(k, c, _)| k == "HorizontalPodAutoscaler" && c == &store_name)
            {
                Ok(())
            } else {
                Err(format!("{children:?}"))
            }
        })
        .await?;
        Ok(())
    })
}

/// Email on: the notify tier joins (a Deployment of one on its own claim, a Service, a
/// NetworkPolicy), logic learns where it is, and the status waits for it. Email off: notify's
/// workload, Service and NetworkPolicy go; its claim (subscriptions, outbox) stays.
pub fn email_on_adds_notify_and_off_removes_it(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("email").await?;
        let name = "forum";
        let email = json!({"notifications": {
            "smtp": {"host": "smtp.example.org", "port": 2525, "tls": "StartTLS",
                     "credentialsSecret": {"name": "forum-smtp"}},
            "from": "Comments <comments@example.org>",
            "publicUrl": "https://forum.example.org",
            "moderators": ["desk@example.org"],
        }});
        s.apply(&ns, &comment_cluster(name, email)).await?;
        let cc = s.wait_ready(&ns, name, 120).await?;
        let notify = &cc["status"]["tiers"]["notify"];
        ensure!(
            notify["desiredReplicas"] == 1 && notify["readyReplicas"] == 1,
            "status.tiers.notify = {notify}, wanted 1 desired and ready"
        );
        let notify_name = format!("{name}-notify");
        let children = objects(s, &ns).await?;
        let has = |children: &[(String, String, Vec<String>)], kind: &str, n: &str| {
            children.iter().any(|(k, c, _)| k == kind && c == n)
        };
        let claim = format!("{name}-notify-data");
        for (kind, n) in [
            ("Deployment", notify_name.as_str()),
            ("Service", notify_name.as_str()),
            ("NetworkPolicy", notify_name.as_str()),
            ("PersistentVolumeClaim", claim.as_str()),
        ] {
            ensure!(has(&children, kind, n), "no {kind}/{n}: {children:?}");
        }
        let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &ns);
        let env_of = |d: &Deployment| -> Vec<(String, String)> {
            d.spec
                .iter()
                .flat_map(|s| s.template.spec.iter())
                .flat_map(|p| p.containers[0].env.clone().unwrap_or_default())
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect()
        };
        let logic = env_of(&deployments.get(&format!("{name}-logic")).await?);
        ensure!(
            logic
                .iter()
                .any(|(k, v)| k == "IO360_NOTIFY_URL" && v == &format!("http://{notify_name}:8080")),
            "logic does not know where notify is: {logic:?}"
        );
        let notify_env = env_of(&deployments.get(&notify_name).await?);
        ensure!(
            notify_env
                .iter()
                .any(|(k, v)| k == "IO360_SMTP_URL"
                    && v == "smtp://smtp.example.org:2525?tls=required"),
            "notify's mail server: {notify_env:?}"
        );
        let policy = s
            .kubectl(&[
                "get",
                "networkpolicy",
                &notify_name,
                "-n",
                &ns,
                "-o",
                "json",
            ])
            .await?;
        ensure!(
            policy.contains("2525"),
            "notify's NetworkPolicy does not let it reach the mail server's port: {policy}"
        );

        // Email off.
        s.apply(&ns, &comment_cluster(name, json!({}))).await?;
        s.wait(
            "notify's workload, Service and NetworkPolicy gone",
            60,
            || async {
                let children = objects(s, &ns).await.map_err(|e| e.to_string())?;
                let left: Vec<_> = children
                    .iter()
                    .filter(|(_, c, _)| c == &notify_name)
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still there: {left:?}"))
                }
            },
        )
        .await?;
        let children = objects(s, &ns).await?;
        ensure!(
            has(&children, "PersistentVolumeClaim", &claim),
            "notify's claim was deleted with email off: {children:?}"
        );
        let logic = env_of(&deployments.get(&format!("{name}-logic")).await?);
        ensure!(
            !logic.iter().any(|(k, _)| k == "IO360_NOTIFY_URL"),
            "logic still points at notify: {logic:?}"
        );
        let cc = s.wait_ready(&ns, name, 120).await?;
        ensure!(
            cc["status"]["tiers"].get("notify").is_none(),
            "status still lists notify: {}",
            cc["status"]["tiers"]
        );
        Ok(())
    })
}
