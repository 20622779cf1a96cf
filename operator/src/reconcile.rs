//! The part that talks to the API server: one pass of validate → decide suspension → build →
//! server-side apply → prune → scale longpoll → status, plus the error policy.
//!
//! A pass applies only the children whose desired object changed or whose cached copy shows
//! a change in a field the operator sets (see [`crate::children`]): every change of a child
//! (a Deployment's ready replicas, say) triggers a pass, and re-applying all of a cluster's
//! children on each would keep the API server busy with no-op applies.
//!
//! Status is a function of what was observed, with transition times kept when a condition's
//! status does not change, and it is only written when it differs from what is stored, so a
//! reconcile does not trigger the next one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::children::{Children, fingerprint, hash_json};
use crate::crd::{CommentCluster, CommentClusterStatus, SuspensionStatus, TierStatus};
use crate::degrade::{self, DegradeState, HpaReading, SuspensionReason, Thresholds};
use crate::desired::{self, DesiredObject, Inputs, Suspension, Tier, names};
use crate::events::{EventType, Recorder};
use crate::health::{self, TierProblem};
use crate::metrics::Metrics;
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
    /// The last successful apply of each child, by `Kind/name`.
    children: HashMap<String, AppliedChild>,
    failures: u32,
    suspended: bool,
}

/// What one successful apply of a child left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppliedChild {
    /// The child's uid: when the next apply returns another, the child had been deleted.
    uid: String,
    /// [`hash_json`] of the desired object applied.
    desired: u64,
    /// [`fingerprint`] of the object the apply returned.
    observed: u64,
}

/// One child at the end of [`apply_all`].
struct ChildState {
    /// `Kind/name`.
    key: String,
    /// The object as the apply returned it, or as cached when it needed no apply.
    object: Value,
    /// What to remember when it was applied in this pass.
    applied: Option<AppliedChild>,
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

    async fn event(&self, cc: &CommentCluster, type_: EventType, reason: &str, note: String) {
        let action = match reason {
            "Applied" | "ChildRestored" => "Apply",
            "ChildDeleted" => "Delete",
            "CommentsSuspended" => "Suspend",
            "CommentsResumed" => "Resume",
            "InvalidSpec" => "Validate",
            _ => "Reconcile",
        };
        let regarding = cc.object_ref(&());
        if let Err(e) = self
            .recorder
            .publish(&regarding, type_, reason, action, &note)
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
        Err(e) => {
            warn!(cluster = %cc.name_any(), namespace = ?cc.namespace(), error = %e, "reconcile failed");
            ctx.event(&cc, EventType::Warning, "ReconcileFailed", e.to_string())
                .await;
            // Best effort: make the failure visible in status too.
            let mut status = cc.status.clone().unwrap_or_default();
            let now = Timestamp::now();
            set_condition(
                &mut status.conditions,
                cc.metadata.generation,
                &now,
                "Ready",
                false,
                "ReconcileFailed",
                &e.to_string(),
            );
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
        ctx.state
            .lock()
            .expect("cluster memory lock poisoned")
            .remove(uid);
        ctx.update_suspended_gauge();
        if let Some(ns) = cc.namespace() {
            ctx.metrics.forget_cluster(&ns, &cc.name_any());
        }
        return Ok(Action::await_change());
    }
    let ns = cc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = cc.name_any();
    let now = Timestamp::now();
    let old_status = cc.status.clone().unwrap_or_default();

    if let Err(invalid) = validate(cc) {
        return invalid_spec(cc, ctx, &old_status, &now, invalid).await;
    }

    // Decide the suspension.
    let overload = degrade_state(ctx, cc, uid);
    let decision = degrade::decide(cc.spec.comments_suspended, &overload);
    let suspension = decision.map(|reason| {
        let since = old_status
            .suspension
            .as_ref()
            .filter(|s| s.reason == reason.as_str())
            .map(|s| s.since.clone())
            .unwrap_or_else(|| now.to_string());
        Suspension { reason, since }
    });
    let was = old_status.suspension.as_ref().map(|s| s.reason.clone());
    let live_since = match (&suspension, &was) {
        (None, Some(_)) => Some(now.to_string()),
        _ => old_status.resumed_at.clone(),
    };
    let inputs = Inputs {
        suspension: suspension.clone(),
        live_since: live_since.clone(),
    };

    // The tiers' keys first: their pods mount the Secret.
    let keys_recheck = tier_keys(ctx, cc, &ns, &name).await?;

    // Build and apply.
    let wanted = desired::build(cc, &inputs);
    let children = apply_all(ctx, &ns, uid, &wanted).await?;
    debug!(
        cluster = %name,
        applied = children.iter().filter(|c| c.applied.is_some()).count(),
        of = children.len(),
        "children applied"
    );
    let restored = ctx.with_memory(uid, |m| {
        let first = m.children.is_empty();
        let mut restored = Vec::new();
        for child in &children {
            let Some(applied) = &child.applied else {
                continue;
            };
            if let Some(old) = m.children.insert(child.key.clone(), applied.clone())
                && old.uid != applied.uid
                && !first
            {
                restored.push(child.key.clone());
            }
        }
        restored
    });
    for key in restored {
        info!(cluster = %name, child = %key, "recreated a child that was deleted");
        ctx.event(
            cc,
            EventType::Normal,
            "ChildRestored",
            format!("recreated {key}, which had been deleted"),
        )
        .await;
    }
    let keep: HashSet<String> = wanted.iter().map(DesiredObject::key).collect();
    let pruned = prune(ctx, &ns, &name, uid, &keep).await?;
    ctx.with_memory(uid, |m| m.children.retain(|key, _| keep.contains(key)));
    for key in &pruned {
        ctx.event(
            cc,
            EventType::Normal,
            "ChildDeleted",
            format!("deleted {key}, no longer wanted by the spec"),
        )
        .await;
    }

    // longpoll under an autoscaler is scaled through its scale subresource: to zero while
    // suspended (an HPA leaves a target at zero alone), back when live.
    let mut longpoll_before = old_status.longpoll_replicas_before_suspension;
    let mut replicas_now: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for ChildState { key, object, .. } in &children {
        if let Some(tier) = tier_of(key, &name) {
            let desired = object["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
            let ready = object["status"]["readyReplicas"].as_i64().unwrap_or(0) as i32;
            replicas_now.insert(tier.to_string(), (desired, ready));
        }
    }
    if let Some(auto) = &cc.spec.longpoll.autoscaling {
        let lp = Tier::Longpoll.as_str().to_string();
        let (current, ready) = replicas_now.get(&lp).copied().unwrap_or((1, 0));
        let target = if suspension.is_some() {
            if current > 0 {
                longpoll_before = Some(current);
            }
            0
        } else if current == 0 {
            let t = longpoll_before
                .unwrap_or(auto.min_replicas)
                .clamp(auto.min_replicas, auto.max_replicas);
            longpoll_before = None;
            t
        } else {
            longpoll_before = None;
            current
        };
        if target != current {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch_scale(
                &names::tier(&name, Tier::Longpoll),
                &pp,
                &Patch::Merge(json!({"spec": {"replicas": target}})),
            )
            .await
            .map_err(kube_err("scale longpoll"))?;
            replicas_now.insert(lp, (target, ready.min(target)));
        }
    } else {
        longpoll_before = None;
    }

    // Why tiers are not ready, when their pods say: an image that cannot be pulled, a crash
    // loop, a pod nowhere to place. Read only for tiers that lag, so a ready cluster costs no
    // pod list.
    let mut problems = BTreeMap::new();
    for (tier, (desired, ready)) in &replicas_now {
        if ready >= desired {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let selector = format!("{}={name},{}={tier}", desired::INSTANCE, desired::COMPONENT);
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list a tier's pods"))?;
        if let Some(problem) = health::tier_problem(&listed.items) {
            problems.insert(tier.clone(), problem);
        }
    }

    // Status.
    let status = compute_status(
        cc,
        &old_status,
        &now,
        &Observed {
            replicas: replicas_now,
            problems,
        },
        suspension.as_ref(),
        live_since,
        longpoll_before,
    );
    if status != old_status {
        write_status(&ctx.client, cc, &status).await?;
    }

    // Events for what changed.
    let is_suspended = suspension.is_some();
    ctx.with_memory(uid, |m| m.suspended = is_suspended);
    ctx.update_suspended_gauge();
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ctx.metrics.set_cluster(
        &ns,
        &name,
        ready,
        suspension.as_ref().map(|s| s.reason.as_str()),
    );
    match (&was, &suspension) {
        (None, Some(s)) => {
            info!(cluster = %name, reason = s.reason.as_str(), "comments suspended");
            ctx.event(
                cc,
                EventType::Normal,
                "CommentsSuspended",
                format!(
                    "comments suspended ({}): longpoll scaled to zero; {}",
                    s.reason.as_str(),
                    s.reason.message()
                ),
            )
            .await;
        }
        (Some(_), None) => {
            info!(cluster = %name, "comments resumed");
            ctx.event(
                cc,
                EventType::Normal,
                "CommentsResumed",
                "comments are live again; longpoll scaled back".into(),
            )
            .await;
        }
        (Some(old), Some(s)) if old != s.reason.as_str() => {
            ctx.event(
                cc,
                EventType::Normal,
                "CommentsSuspended",
                format!(
                    "comments still suspended, now for reason {}",
                    s.reason.as_str()
                ),
            )
            .await;
        }
        _ => {}
    }
    if old_status.observed_generation != cc.metadata.generation {
        ctx.event(
            cc,
            EventType::Normal,
            "Applied",
            format!(
                "applied {} objects for generation {}",
                wanted.len(),
                cc.metadata.generation.unwrap_or_default()
            ),
        )
        .await;
    }

    // Automatic degrade is evaluated on its own cadence (see [`evaluate_degrade_all`]),
    // which triggers a reconcile only when its decision flips. A pod's waiting reason changes
    // no Deployment, so while tiers lag the pass comes back soon to follow them.
    let settled = status
        .tiers
        .values()
        .all(|t| t.ready_replicas >= t.desired_replicas);
    let next = Duration::from_secs(if settled { 300 } else { 15 });
    Ok(Action::requeue(
        next.min(keys_recheck.max(Duration::from_secs(1))),
    ))
}

/// Creates the tier keys Secret, or takes the next step of a rotation when one is due (see
/// [`crate::tierkeys`]). Returns when to look again. The Secret is read by name, never
/// listed or watched, and its contents are never logged.
async fn tier_keys(
    ctx: &Context,
    cc: &CommentCluster,
    ns: &str,
    name: &str,
) -> Result<Duration, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = tierkeys::secret_name(name);
    let existing = api
        .get_opt(&secret_name)
        .await
        .map_err(kube_err(format!("read Secret/{secret_name}")))?;
    let current = existing.as_ref().and_then(tierkeys::read);
    let trigger = cc
        .annotations()
        .get(tierkeys::ROTATE_ANNOTATION)
        .map(String::as_str);
    let days = cc.spec.tier_keys.rotation_days.clamp(1, 365) as u64;
    let plan = tierkeys::plan(
        current,
        Timestamp::now(),
        Duration::from_secs(days * 86_400),
        trigger,
        ctx.tier_keys_grace,
    );
    let owned = existing.as_ref().is_some_and(|s| {
        s.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == cc.metadata.uid.as_ref())
    });
    if plan.step.is_some() || !owned {
        let owner = cc.controller_owner_ref(&()).into_iter().collect();
        let obj = tierkeys::secret(
            secret_name.clone(),
            Some(ns.to_owned()),
            desired::instance_labels(name),
            owner,
            &plan.state,
        );
        api.patch(
            &secret_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(kube_err(format!("apply Secret/{secret_name}")))?;
    }
    if let Some(step) = &plan.step {
        let (reason, note) = step.event();
        info!(cluster = %name, reason, "tier keys: {note}");
        ctx.event(cc, EventType::Normal, reason, note).await;
    }
    Ok(plan.recheck)
}

fn tier_of<'a>(key: &str, cc: &str) -> Option<&'a str> {
    let (kind, name) = key.split_once('/')?;
    if kind != "Deployment" && kind != "StatefulSet" {
        return None;
    }
    Tier::ALL
        .iter()
        .find(|t| name == names::tier(cc, **t))
        .map(|t| t.as_str())
}

async fn invalid_spec(
    cc: &CommentCluster,
    ctx: &Context,
    old: &CommentClusterStatus,
    now: &Timestamp,
    invalid: InvalidSpec,
) -> Result<Action, Error> {
    let mut status = old.clone();
    status.observed_generation = cc.metadata.generation;
    let msg = invalid.to_string();
    set_condition(
        &mut status.conditions,
        cc.metadata.generation,
        now,
        "Ready",
        false,
        "InvalidSpec",
        &msg,
    );
    set_condition(
        &mut status.conditions,
        cc.metadata.generation,
        now,
        "Progressing",
        false,
        "InvalidSpec",
        &msg,
    );
    if &status != old {
        warn!(cluster = %cc.name_any(), error = %msg, "invalid spec");
        ctx.event(cc, EventType::Warning, "InvalidSpec", msg).await;
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
        let reading = hpas.get(&key).as_deref().and_then(hpa_reading);
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

/// The degrade machine's view of an autoscaler: replicas against the maximum, and the CPU
/// utilization it reports.
pub fn hpa_reading(hpa: &HorizontalPodAutoscaler) -> Option<HpaReading> {
    let spec = hpa.spec.as_ref()?;
    let status = hpa.status.as_ref()?;
    let utilization = status.current_metrics.iter().flatten().find_map(|m| {
        m.resource
            .as_ref()
            .filter(|r| r.name == "cpu")
            .and_then(|r| r.current.average_utilization)
    });
    Some(HpaReading {
        current_replicas: status.current_replicas.unwrap_or(0),
        max_replicas: spec.max_replicas,
        utilization,
    })
}

/// Applies the children of `wanted` that need it (see [`crate::children`]) and returns
/// every child as it now stands.
async fn apply_all(
    ctx: &Context,
    ns: &str,
    uid: &str,
    wanted: &[DesiredObject],
) -> Result<Vec<ChildState>, Error> {
    let remembered = ctx.with_memory(uid, |m| m.children.clone());
    let mut out = Vec::with_capacity(wanted.len());
    let mut pending = Vec::new();
    for d in wanted {
        let key = d.key();
        let desired = serde_json::to_value(&d.object).expect("a desired object serializes");
        let desired_hash = hash_json(&desired);
        let cached = ctx.children.get(&d.resource.kind, ns, &d.object.name_any());
        match (remembered.get(&key), cached) {
            // Wanted as last applied, and the cache still shows what that apply left in the
            // fields the operator sets: applying again would change nothing.
            (Some(last), Some(object))
                if last.desired == desired_hash
                    && last.observed == fingerprint(&object, &desired) =>
            {
                out.push(ChildState {
                    key,
                    object,
                    applied: None,
                });
            }
            _ => pending.push((d, desired, desired_hash)),
        }
    }

    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let apply = |(d, desired, desired_hash): (&DesiredObject, Value, u64)| {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &d.resource);
        let pp = pp.clone();
        let key = d.key();
        let name = d.object.name_any();
        async move {
            let applied = api
                .patch(&name, &pp, &Patch::Apply(&desired))
                .await
                .map_err(kube_err(format!("apply {key}")))?;
            let object = serde_json::to_value(&applied).expect("an API object serializes");
            let applied = AppliedChild {
                uid: applied.uid().unwrap_or_default(),
                desired: desired_hash,
                observed: fingerprint(&object, &desired),
            };
            Ok::<_, Error>(ChildState {
                key,
                object,
                applied: Some(applied),
            })
        }
    };
    // What pods read at start (control ConfigMap, identity) goes first, and a Role before
    // its RoleBinding: the API server checks a binding against the Role it names. Within a
    // stage every apply runs to completion even when one fails, so a fast failure cannot
    // cancel a slower apply that a later pass depends on.
    let (first, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(d, ..)| {
        matches!(
            d.resource.kind.as_str(),
            "ConfigMap" | "ServiceAccount" | "Role"
        )
    });
    for (stage, width) in [(first, 4), (rest, 8)] {
        let results: Vec<Result<ChildState, Error>> = stream::iter(stage.into_iter().map(apply))
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

/// Deletes children of kinds that come and go with the spec (autoscalers, disruption budgets,
/// the Ingress) when they are not in `keep`. Returns what was deleted.
///
/// It reads the cache: a child created moments ago and not cached yet is deleted by the pass
/// its creation triggers.
async fn prune(
    ctx: &Context,
    ns: &str,
    name: &str,
    uid: &str,
    keep: &HashSet<String>,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for ar in [
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<Ingress>(&()),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        for child in ctx.children.owned_by(&ar.kind, ns, uid) {
            let key = format!("{}/{child}", ar.kind);
            if keep.contains(&key) {
                continue;
            }
            match api.delete(&child, &DeleteParams::background()).await {
                Ok(_) => {}
                // Already gone: the cache had not caught up yet.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(kube_err(format!("delete {key}"))(e)),
            }
            info!(cluster = %name, child = %key, "deleted a child no longer wanted");
            deleted.push(key);
        }
    }
    Ok(deleted)
}

/// Sets condition `type_`, keeping its transition time when its status does not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    now: &Timestamp,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(*now));
    let cond = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = cond,
        None => conditions.push(cond),
    }
}

/// What a pass saw of the tiers: each one's desired and ready replicas, and why the ones that
/// lag do, where their pods say.
struct Observed {
    replicas: BTreeMap<String, (i32, i32)>,
    problems: BTreeMap<String, TierProblem>,
}

fn compute_status(
    cc: &CommentCluster,
    old: &CommentClusterStatus,
    now: &Timestamp,
    observed: &Observed,
    suspension: Option<&Suspension>,
    resumed_at: Option<String>,
    longpoll_before: Option<i32>,
) -> CommentClusterStatus {
    let generation = cc.metadata.generation;
    let Observed { replicas, problems } = observed;
    let tiers: BTreeMap<String, TierStatus> = replicas
        .iter()
        .map(|(t, (desired, ready))| {
            (
                t.clone(),
                TierStatus {
                    desired_replicas: *desired,
                    ready_replicas: *ready,
                },
            )
        })
        .collect();
    let lagging: Vec<String> = tiers
        .iter()
        .filter(|(_, s)| s.ready_replicas < s.desired_replicas)
        .map(|(t, s)| format!("{t} {}/{}", s.ready_replicas, s.desired_replicas))
        .collect();
    let mut conditions = old.conditions.clone();
    let ready = lagging.is_empty() && tiers.len() == Tier::ALL.len();
    if ready {
        set_condition(
            &mut conditions,
            generation,
            now,
            "Ready",
            true,
            "AllTiersReady",
            "every tier has its desired replicas ready",
        );
        set_condition(
            &mut conditions,
            generation,
            now,
            "Progressing",
            false,
            "Complete",
            "every child is applied and ready",
        );
    } else if let Some((_, first)) = problems.iter().next() {
        // Name every failing tier; the first one's reason is the condition's.
        let said: Vec<String> = problems
            .iter()
            .map(|(tier, p)| format!("{tier}: {} ({})", p.reason, p.message))
            .collect();
        let msg = format!(
            "tiers failing: {}; waiting for ready replicas: {}",
            said.join("; "),
            lagging.join(", ")
        );
        set_condition(
            &mut conditions,
            generation,
            now,
            "Ready",
            false,
            &first.reason,
            &msg,
        );
        set_condition(
            &mut conditions,
            generation,
            now,
            "Progressing",
            false,
            "TiersFailing",
            &msg,
        );
    } else {
        let msg = format!("waiting for ready replicas: {}", lagging.join(", "));
        set_condition(
            &mut conditions,
            generation,
            now,
            "Ready",
            false,
            "TiersNotReady",
            &msg,
        );
        set_condition(
            &mut conditions,
            generation,
            now,
            "Progressing",
            true,
            "RollingOut",
            &msg,
        );
    }
    match suspension {
        Some(s) => set_condition(
            &mut conditions,
            generation,
            now,
            "CommentsSuspended",
            true,
            s.reason.as_str(),
            s.reason.message(),
        ),
        None => set_condition(
            &mut conditions,
            generation,
            now,
            "CommentsSuspended",
            false,
            "Live",
            "comments are live",
        ),
    }
    CommentClusterStatus {
        observed_generation: generation,
        conditions,
        comments: Some(
            if suspension.is_some() {
                "Suspended"
            } else {
                "Live"
            }
            .into(),
        ),
        tiers,
        suspension: suspension.map(|s| SuspensionStatus {
            reason: s.reason.as_str().into(),
            message: s.reason.message().into(),
            since: s.since.clone(),
        }),
        resumed_at,
        longpoll_replicas_before_suspension: longpoll_before,
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
