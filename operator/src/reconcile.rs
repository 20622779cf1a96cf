//! The part that talks to the API server. One pass is validate → observe → plan → carry out
//! → status (`reconcile_inner` reads in one screen); every decision is in [`crate::plan`],
//! a pure function of what the pass observed, and this module only reads and writes.
//!
//! A pass applies only the children whose desired object changed or whose cached copy shows
//! a change in a field the operator sets (see [`crate::children`]): every change of a child
//! (a Deployment's ready replicas, say) triggers a pass, and re-applying all of a cluster's
//! children on each would keep the API server busy with no-op applies.
//!
//! Status is a function of what was observed, with transition times kept when a condition's
//! status does not change, and it is only written when it differs from what is stored, so a
//! reconcile does not trigger the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::autoscaling;
use crate::children::{ChildRef, Children, fingerprint};
use crate::crd::{CommentCluster, CommentClusterStatus};
use crate::degrade::{self, DegradeState, SuspensionReason, Thresholds};
use crate::desired::{self, Tier, names};
use crate::events::Recorder;
use crate::health::{self, TierProblem};
use crate::metrics::Metrics;
use crate::plan::{self, AppliedChild, Event, Observed, Plan, Tiers, ToApply};
use crate::tierkeys;
use crate::validate::{InvalidSpec, validate};

/// The longest one reconcile pass may take before it is abandoned and retried.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(30);

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "io360-operator";

/// What went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A pass took too long (an API request hung, e.g. across an API server restart).
    #[error("reconcile did not finish within {0:?}")]
    Timeout(Duration),
    /// The resource lacks a name, namespace or uid (it did not come from the API server).
    #[error("CommentCluster has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Whether the API server refused a write because the cluster's namespace is being
    /// deleted: the cluster goes with it, so this is the end of its story, not a failure.
    pub fn namespace_terminating(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. }
            if s.code == 403 && s.message.contains("because it is being terminated"))
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Shared state of the controller.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on CommentClusters.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The cached children of every cluster.
    pub children: Children,
    /// How long each step of a tier key rotation waits for kubelet to update the mounted
    /// Secret and the tiers to re-read it.
    pub tier_keys_grace: Duration,
    state: Mutex<HashMap<String, ClusterMemory>>,
}

/// What the operator remembers between passes about one cluster (by uid). Losing it (a
/// restart, a new leader) is safe: degrade timers restart and the overload state itself is
/// read back from status.
#[derive(Default)]
struct ClusterMemory {
    degrade: Option<DegradeState>,
    /// The last successful apply of each child.
    children: HashMap<ChildRef, AppliedChild>,
    failures: u32,
    suspended: bool,
}

impl Context {
    /// A context for `client`, reading children from `children`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        children: Children,
        tier_keys_grace: Duration,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            children,
            tier_keys_grace,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn with_memory<R>(&self, uid: &str, f: impl FnOnce(&mut ClusterMemory) -> R) -> R {
        let mut map = self.state.lock().expect("cluster memory lock poisoned");
        f(map.entry(uid.to_string()).or_default())
    }

    fn update_suspended_gauge(&self) {
        let map = self.state.lock().expect("cluster memory lock poisoned");
        let n = map.values().filter(|m| m.suspended).count();
        self.metrics.suspended_clusters.set(n as i64);
    }

    async fn event(&self, cc: &CommentCluster, event: &Event) {
        let regarding = cc.object_ref(&());
        let reason = event.reason();
        if let Err(e) = self
            .recorder
            .publish(
                &regarding,
                event.type_(),
                reason,
                event.action(),
                &event.note(),
            )
            .await
        {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// Reconciles one CommentCluster; the controller calls it on every change of the resource or
/// its children, and periodically.
pub async fn reconcile(cc: Arc<CommentCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let uid = cc.uid().ok_or(Error::MissingMetadata("uid"))?;
    // Bound every pass: a request that hangs (a connection half-open across an API server
    // restart) would otherwise hold this cluster's reconcile for the client's 295 s read
    // timeout, and the controller never runs two passes of one object at once.
    let result =
        match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_inner(&cc, &ctx, &uid)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(RECONCILE_TIMEOUT)),
        };
    ctx.metrics.observe(start.elapsed(), result.is_ok());
    match result {
        Ok(action) => {
            ctx.with_memory(&uid, |m| m.failures = 0);
            Ok(action)
        }
        Err(e) if e.namespace_terminating() => {
            info!(
                cluster = %cc.name_any(),
                namespace = ?cc.namespace(),
                "the namespace is being deleted, and the cluster with it; nothing more to apply"
            );
            ctx.with_memory(&uid, |m| m.failures = 0);
            Ok(Action::await_change())
        }
        Err(e) => {
            warn!(cluster = %cc.name_any(), namespace = ?cc.namespace(), error = %e, "reconcile failed");
            ctx.event(&cc, &Event::ReconcileFailed(e.to_string())).await;
            // Best effort: make the failure visible in status too.
            let status = plan::failed_status(&cc, &Timestamp::now(), &e.to_string());
            if Some(&status) != cc.status.as_ref()
                && let Err(e2) = write_status(&ctx.client, &cc, &status).await
            {
                warn!(error = %e2, "could not write failure status");
            }
            Err(e)
        }
    }
}

/// Backs off exponentially per cluster (1 s doubling up to 5 min) after a failed reconcile.
pub fn error_policy(cc: Arc<CommentCluster>, _err: &Error, ctx: Arc<Context>) -> Action {
    let uid = cc.uid().unwrap_or_default();
    let failures = ctx.with_memory(&uid, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let secs = 2u64
        .saturating_pow(failures.saturating_sub(1).min(9))
        .min(300);
    Action::requeue(Duration::from_secs(secs))
}

async fn reconcile_inner(cc: &CommentCluster, ctx: &Context, uid: &str) -> Result<Action, Error> {
    if cc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove every child.
        forget(ctx, cc, uid);
        return Ok(Action::await_change());
    }
    let ns = cc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if let Err(invalid) = validate(cc) {
        return invalid_spec(cc, ctx, invalid).await;
    }
    let observed = observe(ctx, cc, &ns, uid).await?;
    let plan = plan::plan(&observed);
    let tiers = carry_out(ctx, cc, &ns, uid, &plan).await?;
    let status = plan::status(&observed, &plan, &tiers);
    if Some(&status) != cc.status.as_ref() {
        write_status(&ctx.client, cc, &status).await?;
    }
    report(ctx, cc, &ns, uid, &plan, &status).await;
    // Automatic degrade is evaluated on its own cadence (see [`evaluate_degrade_all`]),
    // which triggers a reconcile only when its decision flips.
    Ok(Action::requeue(plan::requeue_after(
        &status,
        plan.tier_keys.recheck,
    )))
}

/// Drops what the operator remembers of a deleted cluster.
fn forget(ctx: &Context, cc: &CommentCluster, uid: &str) {
    ctx.state
        .lock()
        .expect("cluster memory lock poisoned")
        .remove(uid);
    ctx.update_suspended_gauge();
    if let Some(ns) = cc.namespace() {
        ctx.metrics.forget_cluster(&ns, &cc.name_any());
    }
}

/// Reads what a pass decides from: the degrade state, the tier keys Secret (by name, never
/// listed or watched; its contents are never logged), the cached children and what the last
/// applies left behind.
async fn observe<'a>(
    ctx: &Context,
    cc: &'a CommentCluster,
    ns: &str,
    uid: &str,
) -> Result<Observed<'a>, Error> {
    let secret_name = tierkeys::secret_name(&cc.name_any());
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&secret_name)
        .await
        .map_err(kube_err(format!("read Secret/{secret_name}")))?;
    Ok(Observed {
        cc,
        now: Timestamp::now(),
        degrade: degrade_state(ctx, cc, uid),
        tier_keys: secret.as_ref().and_then(tierkeys::read),
        tier_keys_owned: secret.as_ref().is_some_and(|s| {
            s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == cc.metadata.uid.as_ref())
        }),
        tier_keys_grace: ctx.tier_keys_grace,
        children: ctx.children.all_owned_by(ns, uid),
        applied: ctx.with_memory(uid, |m| m.children.clone()),
    })
}

/// Carries a plan out: the tier keys first (the tiers' pods mount them), then the children,
/// the deletions and longpoll's scale; returns the tiers as they now stand.
async fn carry_out(
    ctx: &Context,
    cc: &CommentCluster,
    ns: &str,
    uid: &str,
    plan: &Plan,
) -> Result<Tiers, Error> {
    let name = cc.name_any();
    if plan.write_tier_keys {
        apply_tier_keys(ctx, cc, ns, &plan.tier_keys.state).await?;
    }
    if let Some(step) = &plan.tier_keys.step {
        ctx.event(cc, &Event::TierKeys(step.clone())).await;
    }

    let applied = apply_all(ctx, ns, &plan.apply).await?;
    debug!(cluster = %name, applied = applied.len(), of = plan.wanted, "children applied");
    let records: Vec<(ChildRef, AppliedChild)> = applied
        .iter()
        .map(|(child, _, record)| (child.clone(), record.clone()))
        .collect();
    let restored = ctx.with_memory(uid, |m| {
        let restored = plan::restored(&m.children, &records);
        m.children.extend(records);
        m.children.retain(|child, _| plan.keep.contains(child));
        restored
    });
    for child in restored {
        info!(cluster = %name, %child, "recreated a child that was deleted");
        ctx.event(cc, &Event::ChildRestored(child)).await;
    }
    for child in &plan.prune {
        if delete(ctx, ns, child).await? {
            info!(cluster = %name, %child, "deleted a child no longer wanted");
            ctx.event(cc, &Event::ChildDeleted(child.clone())).await;
        }
    }
    if let Some(target) = plan.longpoll.scale_to {
        Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .patch_scale(
                &names::tier(&name, Tier::Longpoll),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({"spec": {"replicas": target}})),
            )
            .await
            .map_err(kube_err("scale longpoll"))?;
    }

    let children: Vec<(&ChildRef, &Value)> = plan
        .unchanged
        .iter()
        .map(|(child, object)| (child, object))
        .chain(applied.iter().map(|(child, object, _)| (child, object)))
        .collect();
    let replicas = plan::tier_replicas(&name, children.iter().copied(), &plan.longpoll);
    let problems = tier_problems(ctx, ns, &name, &replicas).await?;
    Ok(Tiers {
        replicas,
        problems,
        autoscalers: plan::autoscalers(cc, children),
    })
}

/// Why tiers are not ready, when their pods say: an image that cannot be pulled, a crash
/// loop, a pod nowhere to place. Read only for tiers that lag, so a ready cluster costs no
/// pod list.
async fn tier_problems(
    ctx: &Context,
    ns: &str,
    name: &str,
    replicas: &BTreeMap<String, (i32, i32)>,
) -> Result<BTreeMap<String, TierProblem>, Error> {
    let mut problems = BTreeMap::new();
    for (tier, (desired, ready)) in replicas {
        if ready >= desired {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let selector = format!("{}={name},{}={tier}", desired::INSTANCE, desired::COMPONENT);
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list a tier's pods"))?;
        if let Some(problem) = health::tier_problem(&listed.items) {
            problems.insert(tier.clone(), problem);
        }
    }
    Ok(problems)
}

/// Publishes the plan's Events and updates the cluster's metrics.
async fn report(
    ctx: &Context,
    cc: &CommentCluster,
    ns: &str,
    uid: &str,
    plan: &Plan,
    status: &CommentClusterStatus,
) {
    let name = cc.name_any();
    let reason = plan.suspension.as_ref().map(|s| s.reason.as_str());
    ctx.with_memory(uid, |m| m.suspended = reason.is_some());
    ctx.update_suspended_gauge();
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ctx.metrics.set_cluster(ns, &name, ready, reason);
    for event in &plan.events {
        match event {
            Event::CommentsSuspended(r) => {
                info!(cluster = %name, reason = r.as_str(), "comments suspended")
            }
            Event::CommentsResumed => info!(cluster = %name, "comments resumed"),
            _ => {}
        }
        ctx.event(cc, event).await;
    }
}

/// Writes the tier keys Secret (see [`crate::tierkeys`]).
async fn apply_tier_keys(
    ctx: &Context,
    cc: &CommentCluster,
    ns: &str,
    state: &tierkeys::KeyState,
) -> Result<(), Error> {
    let name = cc.name_any();
    let secret_name = tierkeys::secret_name(&name);
    let owner = cc.controller_owner_ref(&()).into_iter().collect();
    let obj = tierkeys::secret(
        secret_name.clone(),
        Some(ns.to_owned()),
        desired::instance_labels(&name),
        owner,
        state,
    );
    Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .patch(
            &secret_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(kube_err(format!("apply Secret/{secret_name}")))?;
    Ok(())
}

async fn invalid_spec(
    cc: &CommentCluster,
    ctx: &Context,
    invalid: InvalidSpec,
) -> Result<Action, Error> {
    let msg = invalid.to_string();
    let status = plan::invalid_status(cc, &Timestamp::now(), &msg);
    if Some(&status) != cc.status.as_ref() {
        warn!(cluster = %cc.name_any(), error = %msg, "invalid spec");
        ctx.event(cc, &Event::InvalidSpec(msg)).await;
        write_status(&ctx.client, cc, &status).await?;
    }
    // Only a change of the spec can fix it.
    Ok(Action::await_change())
}

/// The degrade state of a cluster: what the evaluator last computed, or, after a restart or
/// a change of leader, what its status says (an overload suspension survives; timers restart).
fn degrade_state(ctx: &Context, cc: &CommentCluster, uid: &str) -> DegradeState {
    if !cc.spec.auto_degrade.enabled {
        ctx.with_memory(uid, |m| m.degrade = None);
        return DegradeState::default();
    }
    let old = cc.status.clone().unwrap_or_default();
    ctx.with_memory(uid, |m| {
        *m.degrade.get_or_insert_with(|| match &old.suspension {
            Some(s) if s.reason == SuspensionReason::Overload.as_str() => {
                DegradeState::Overloaded {
                    since: s.since.parse().unwrap_or_else(|_| Timestamp::now()),
                    under_since: None,
                }
            }
            _ => DegradeState::default(),
        })
    })
}

fn thresholds(cc: &CommentCluster) -> Thresholds {
    let ad = &cc.spec.auto_degrade;
    Thresholds {
        overload: ad.utilization_threshold,
        hold: Duration::from_secs(ad.hold_seconds.max(0) as u64),
        recovery: ad.recovery_threshold,
        cooldown: Duration::from_secs(ad.cooldown_seconds.max(0) as u64),
    }
}

/// One round of automatic degrade over every cluster that has it enabled: reads each
/// frontend autoscaler from the watch cache (no API calls), advances its degrade machine, and
/// returns the clusters whose decision flipped, to be reconciled now.
pub fn evaluate_degrade_all(
    ctx: &Context,
    clusters: &Store<CommentCluster>,
    hpas: &Store<HorizontalPodAutoscaler>,
    now: Timestamp,
) -> Vec<ObjectRef<CommentCluster>> {
    let mut flipped = Vec::new();
    for cc in clusters.state() {
        if !cc.spec.auto_degrade.enabled || cc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(uid), Some(ns)) = (cc.uid(), cc.namespace()) else {
            continue;
        };
        let before = degrade_state(ctx, &cc, &uid);
        let key = ObjectRef::new(&names::tier(&cc.name_any(), Tier::Frontend)).within(&ns);
        let reading = hpas.get(&key).as_deref().and_then(autoscaling::reading);
        let after = degrade::step(before, now, reading, &thresholds(&cc));
        ctx.with_memory(&uid, |m| m.degrade = Some(after));
        if after.overloaded() != before.overloaded() {
            info!(
                cluster = %cc.name_any(),
                namespace = %ns,
                overloaded = after.overloaded(),
                ?reading,
                "automatic degrade decision changed"
            );
            flipped.push(ObjectRef::from_obj(&*cc));
        }
    }
    flipped
}

/// Applies `children` with server-side apply and returns each as the API server answered,
/// with what to remember of the apply.
async fn apply_all(
    ctx: &Context,
    ns: &str,
    children: &[ToApply],
) -> Result<Vec<(ChildRef, Value, AppliedChild)>, Error> {
    // Within a stage every apply runs to completion even when one fails, so a fast failure
    // cannot cancel a slower apply that a later pass depends on.
    let (first, rest): (Vec<ToApply>, Vec<ToApply>) = children
        .iter()
        .cloned()
        .partition(|c| c.child.kind.applied_first());
    let mut out = Vec::with_capacity(children.len());
    for (stage, width) in [(first, 4), (rest, 8)] {
        let results: Vec<Result<_, Error>> = stream::iter(stage)
            .map(|c| apply_one(ctx, ns, c))
            .buffer_unordered(width)
            .collect()
            .await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(child) => out.push(child),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(out)
}

/// Applies one child; returns it as the API server answered and what to remember of it.
async fn apply_one(
    ctx: &Context,
    ns: &str,
    c: ToApply,
) -> Result<(ChildRef, Value, AppliedChild), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &c.resource);
    let applied = api
        .patch(
            &c.child.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&c.body),
        )
        .await
        .map_err(kube_err(format!("apply {}", c.child)))?;
    let object = serde_json::to_value(&applied).expect("an API object serializes");
    let record = AppliedChild {
        uid: applied.uid().unwrap_or_default(),
        desired: c.hash,
        observed: fingerprint(&object, &c.body),
    };
    Ok((c.child, object, record))
}

/// Deletes `child`; false when it was already gone (the cache had not caught up yet).
async fn delete(ctx: &Context, ns: &str, child: &ChildRef) -> Result<bool, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &child.kind.resource());
    match api.delete(&child.name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(kube_err(format!("delete {child}"))(e)),
    }
}

/// Writes the whole status with server-side apply, so fields that are gone (a lifted
/// suspension) are removed rather than left behind.
async fn write_status(
    client: &Client,
    cc: &CommentCluster,
    status: &CommentClusterStatus,
) -> Result<(), Error> {
    let ns = cc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<CommentCluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": CommentCluster::api_version(&()),
        "kind": CommentCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &cc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("write status"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Error;

    fn refused(code: u16, message: &str) -> Error {
        Error::Kube {
            action: "applying Deployment news-frontend".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_write_refused_in_a_terminating_namespace_is_told_apart() {
        let terminating = "deployments.apps \"news-frontend\" is forbidden: unable to create new content in namespace prod because it is being terminated";
        assert!(refused(403, terminating).namespace_terminating());
        assert!(
            !refused(403, "forbidden: the operator may not patch secrets").namespace_terminating()
        );
        assert!(!refused(409, terminating).namespace_terminating());
        assert!(!Error::MissingMetadata("uid").namespace_terminating());
    }
}
