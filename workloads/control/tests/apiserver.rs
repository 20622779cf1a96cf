//! The control ConfigMap watch against a real API server (started on loopback by the
//! cluster-test harness, or the cluster `IO360_TEST_KUBECONFIG` names), authenticated as a
//! ServiceAccount that may only get, list and watch that one ConfigMap: exactly what the
//! operator grants the tiers.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use io360_cluster_tests::Cluster;
use io360_control::{ControlState, Reason, Target};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "control-test";
const CM: &str = "blog-control";

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value)?;
    api.create(&PostParams::default(), &obj).await?;
    Ok(())
}

async fn set_control(cms: &Api<ConfigMap>, suspended: bool, reason: &str) -> Result<()> {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CM},
        "data": {
            "commentsSuspended": suspended.to_string(),
            "reason": reason,
            "message": if suspended { "Comments are paused." } else { "Comments are live." },
            "since": "2026-01-02T03:04:05Z",
        },
    });
    cms.patch(
        CM,
        &PatchParams::apply("control-test").force(),
        &Patch::Apply(&cm),
    )
    .await?;
    Ok(())
}

async fn wait_for(
    rx: &mut watch::Receiver<ControlState>,
    what: &str,
    want: impl Fn(&ControlState) -> bool,
) -> Result<()> {
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| want(s)))
        .await
        .map(|r| r.map(|_| ()));
    match waited {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("waiting for {what}: state is {:?}", *rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_control_configmap_with_narrow_rbac() -> Result<()> {
    let cluster = Cluster::start()
        .await
        .context("starting the test cluster")?;
    let admin = cluster.client().await?;
    create(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await?;
    create(
        &Api::<ServiceAccount>::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": "tiers"}}),
    )
    .await?;
    create(
        &Api::<Role>::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": "tiers"}, "rules": [{
            "apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": [CM], "verbs": ["get", "list", "watch"],
        }]}),
    )
    .await?;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": "tiers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tiers"},
            "subjects": [{"kind": "ServiceAccount", "name": "tiers", "namespace": NS}]}),
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);

    // Start while suspended: the very first state must say so.
    set_control(&cms, true, "Manual").await?;
    let kubeconfig = cluster.service_account_kubeconfig(NS, "tiers").await?;
    // SAFETY: set before any other thread of this test process reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
    let control = io360_control::start(Target {
        namespace: None, // the kubeconfig's namespace, as a pod's would be
        name: CM.into(),
    })
    .await?;
    let first = control.current();
    ensure!(
        first.suspended && first.reason == Some(Reason::Manual),
        "a tier started while suspended must start suspended: {first:?}"
    );
    ensure!(first.since.is_some(), "since not read: {first:?}");

    let mut rx = control.receiver();
    set_control(&cms, false, "").await?;
    wait_for(&mut rx, "resume", |s| !s.suspended).await?;
    set_control(&cms, true, "Overload").await?;
    wait_for(&mut rx, "overload", |s| {
        s.suspended && s.reason == Some(Reason::Overload)
    })
    .await?;

    // Deleted: live (the operator puts it back; until then nothing is suspended).
    cms.delete(CM, &DeleteParams::default()).await?;
    wait_for(&mut rx, "live after delete", |s| !s.suspended).await?;
    set_control(&cms, true, "Manual").await?;
    wait_for(&mut rx, "suspended after re-create", |s| s.suspended).await?;

    // The lower-level loop, with a caller-owned sender.
    let (tx, mut rx2) = watch::channel(ControlState::default());
    let task = tokio::spawn(io360_control::watch(Some(NS.into()), CM.into(), tx));
    wait_for(&mut rx2, "watch() first state", |s| s.suspended).await?;
    set_control(&cms, false, "").await?;
    wait_for(&mut rx2, "watch() sees resume", |s| !s.suspended).await?;
    drop(rx2);
    let ended = tokio::time::timeout(Duration::from_secs(10), task).await??;
    ensure!(
        matches!(ended, Err(io360_control::Error::Closed)),
        "watch() should end once every receiver is gone: {ended:?}"
    );

    // Another ConfigMap is out of reach: the RBAC is as narrow as the operator makes it.
    let other = io360_control::start(Target {
        namespace: Some(NS.into()),
        name: "someone-else".into(),
    })
    .await;
    ensure!(
        other.is_err(),
        "reading another ConfigMap must be forbidden"
    );
    Ok(())
}
