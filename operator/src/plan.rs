//! The operator's decisions, as pure functions of what a pass observed: whether comments are
//! suspended and since when, which children to apply and which to delete, what longpoll
//! scales to, which Events to publish, and the status to write.
//!
//! [`crate::reconcile`] reads the world into an [`Observed`], asks [`plan`] what to do,
//! carries the [`Plan`] out, and hands what the API server answered to [`status`]. Nothing
//! here talks to the API server, so every decision is tested on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::core::ApiResource;
use serde_json::Value;

use crate::autoscaling::{self, MetricState};
use crate::children::{ChildKind, ChildRef, fingerprint, hash_json};
use crate::crd::{
    AutoscalingSpec, CommentCluster, CommentClusterStatus, ScalingMetric, SuspensionStatus,
    TierAutoscalingStatus, TierStatus,
};
use crate::degrade::{self, DegradeState, HpaReading, SuspensionReason};
use crate::desired::{self, Inputs, Suspension, Tier, names};
use crate::events::EventType;
use crate::health::TierProblem;
use crate::tierkeys::{self, KeyState};

/// What a pass read before deciding anything.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The cluster, with the status it last wrote.
    pub cc: &'a CommentCluster,
    /// When the pass began.
    pub now: Timestamp,
    /// Where automatic degrade stands (see [`crate::degrade`]).
    pub degrade: DegradeState,
    /// The tier keys Secret: `None` when there is none or it holds no usable keyring.
    pub tier_keys: Option<KeyState>,
    /// Whether that Secret names the cluster as its owner.
    pub tier_keys_owned: bool,
    /// How long each step of a key rotation waits for the tiers to re-read the Secret.
    pub tier_keys_grace: Duration,
    /// The cluster's children in the watch cache.
    pub children: HashMap<ChildRef, Value>,
    /// What the last successful apply of each child left behind (empty after a restart).
    pub applied: HashMap<ChildRef, AppliedChild>,
}

/// What one successful apply of a child left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedChild {
    /// The child's uid: when the next apply returns another, the child had been deleted.
    pub uid: String,
    /// [`hash_json`] of the desired object applied.
    pub desired: u64,
    /// [`fingerprint`] of the object the apply returned.
    pub observed: u64,
}

/// A child to apply with server-side apply.
#[derive(Clone, Debug)]
pub struct ToApply {
    /// Which child.
    pub child: ChildRef,
    /// Its API resource.
    pub resource: ApiResource,
    /// The object to apply.
    pub body: Value,
    /// [`hash_json`] of `body`.
    pub hash: u64,
}

/// What to do with longpoll's replicas while it has an autoscaler: an autoscaler leaves a
/// target at zero alone, so suspension scales it through the scale subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongpollScale {
    /// Replicas to set, when they differ from the current ones.
    pub scale_to: Option<i32>,
    /// What to remember as the replicas to come back to (status
    /// `longpollReplicasBeforeSuspension`).
    pub before: Option<i32>,
}

/// An Event the operator publishes on a CommentCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The children of a new generation of the spec were applied.
    Applied {
        /// How many objects the spec wants.
        objects: usize,
        /// The generation applied.
        generation: i64,
    },
    /// A child that had been deleted was made again.
    ChildRestored(ChildRef),
    /// A child the spec no longer wants was deleted.
    ChildDeleted(ChildRef),
    /// Comments were suspended.
    CommentsSuspended(SuspensionReason),
    /// Comments stay suspended, for another reason.
    SuspensionReasonChanged(SuspensionReason),
    /// Comments are live again.
    CommentsResumed,
    /// A step of a tier key rotation.
    TierKeys(tierkeys::Step),
    /// The spec cannot be applied.
    InvalidSpec(String),
    /// A pass failed.
    ReconcileFailed(String),
}

impl Event {
    /// Normal or Warning.
    pub fn type_(&self) -> EventType {
        match self {
            Event::InvalidSpec(_) | Event::ReconcileFailed(_) => EventType::Warning,
            _ => EventType::Normal,
        }
    }

    /// The Event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Event::Applied { .. } => "Applied",
            Event::ChildRestored(_) => "ChildRestored",
            Event::ChildDeleted(_) => "ChildDeleted",
            Event::CommentsSuspended(_) | Event::SuspensionReasonChanged(_) => "CommentsSuspended",
            Event::CommentsResumed => "CommentsResumed",
            Event::TierKeys(step) => step.event().0,
            Event::InvalidSpec(_) => "InvalidSpec",
            Event::ReconcileFailed(_) => "ReconcileFailed",
        }
    }

    /// What the operator did, in one machine-readable word.
    pub fn action(&self) -> &'static str {
        match self {
            Event::Applied { .. } | Event::ChildRestored(_) => "Apply",
            Event::ChildDeleted(_) => "Delete",
            Event::CommentsSuspended(_) | Event::SuspensionReasonChanged(_) => "Suspend",
            Event::CommentsResumed => "Resume",
            Event::InvalidSpec(_) => "Validate",
            Event::TierKeys(_) | Event::ReconcileFailed(_) => "Reconcile",
        }
    }

    /// The note people read.
    pub fn note(&self) -> String {
        match self {
            Event::Applied {
                objects,
                generation,
            } => format!("applied {objects} objects for generation {generation}"),
            Event::ChildRestored(child) => format!("recreated {child}, which had been deleted"),
            Event::ChildDeleted(child) => {
                format!("deleted {child}, no longer wanted by the spec")
            }
            Event::CommentsSuspended(reason) => format!(
                "comments suspended ({}): longpoll scaled to zero; {}",
                reason.as_str(),
                reason.message()
            ),
            Event::SuspensionReasonChanged(reason) => format!(
                "comments still suspended, now for reason {}",
                reason.as_str()
            ),
            Event::CommentsResumed => "comments are live again; longpoll scaled back".into(),
            Event::TierKeys(step) => step.event().1,
            Event::InvalidSpec(msg) | Event::ReconcileFailed(msg) => msg.clone(),
        }
    }
}

/// What a pass does, decided before it does any of it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The suspension in force after this pass.
    pub suspension: Option<Suspension>,
    /// When comments last came back (status `resumedAt`).
    pub live_since: Option<String>,
    /// The tier keys as the Secret should hold them, and the step taken.
    pub tier_keys: tierkeys::Plan,
    /// Whether the tier keys Secret is written (a step was taken, or it is not the
    /// cluster's yet).
    pub write_tier_keys: bool,
    /// How many children the spec wants.
    pub wanted: usize,
    /// Children whose desired object changed or whose cached copy was edited or is gone.
    pub apply: Vec<ToApply>,
    /// Children that need no apply, as cached.
    pub unchanged: Vec<(ChildRef, Value)>,
    /// Every child the spec wants.
    pub keep: BTreeSet<ChildRef>,
    /// Children of pruned kinds the spec no longer wants.
    pub prune: Vec<ChildRef>,
    /// longpoll's replicas, when it has an autoscaler.
    pub longpoll: LongpollScale,
    /// Events about the decisions (suspension, a new generation applied).
    pub events: Vec<Event>,
}

/// Decides one pass.
pub fn plan(o: &Observed) -> Plan {
    let cc = o.cc;
    let old = cc.status.clone().unwrap_or_default();
    let suspension = suspension(cc.spec.comments_suspended, &o.degrade, &old, &o.now);
    let live_since = live_since(&old, suspension.as_ref(), &o.now);

    let trigger = cc
        .annotations()
        .get(tierkeys::ROTATE_ANNOTATION)
        .map(String::as_str);
    let days = cc.spec.tier_keys.rotation_days.clamp(1, 365) as u64;
    let tier_keys = tierkeys::plan(
        o.tier_keys.clone(),
        o.now,
        Duration::from_secs(days * 86_400),
        trigger,
        o.tier_keys_grace,
    );
    let write_tier_keys = tier_keys.step.is_some() || !o.tier_keys_owned;

    let wanted = desired::build(
        cc,
        &Inputs {
            suspension: suspension.clone(),
            live_since: live_since.clone(),
        },
    );
    let mut apply = Vec::new();
    let mut unchanged = Vec::new();
    for d in &wanted {
        let child = d.child();
        let body = serde_json::to_value(&d.object).expect("a desired object serializes");
        let hash = hash_json(&body);
        let cached = o.children.get(&child);
        if needs_apply(o.applied.get(&child), cached, &body, hash) {
            apply.push(ToApply {
                child,
                resource: d.resource.clone(),
                body,
                hash,
            });
        } else if let Some(object) = cached {
            unchanged.push((child, object.clone()));
        }
    }
    let keep: BTreeSet<ChildRef> = wanted.iter().map(|d| d.child()).collect();
    // A tier the spec no longer runs (notify without `spec.notifications`) loses its
    // workload, Service and NetworkPolicy; its volume claim stays (the subscriptions and the
    // outbox), as a StatefulSet's claims do.
    let running = Tier::of(o.cc);
    let gone: Vec<String> = Tier::EVERY
        .into_iter()
        .filter(|t| !running.contains(t))
        .map(|t| names::tier(&o.cc.name_any(), t))
        .collect();
    let mut prune: Vec<ChildRef> = o
        .children
        .keys()
        .filter(|c| {
            let optional = c.kind.pruned()
                || (gone.contains(&c.name)
                    && matches!(
                        c.kind,
                        ChildKind::Deployment | ChildKind::Service | ChildKind::NetworkPolicy
                    ));
            optional && !keep.contains(c)
        })
        .cloned()
        .collect();
    prune.sort();

    let longpoll_now = o
        .children
        .get(&ChildRef::new(
            ChildKind::Deployment,
            names::tier(&cc.name_any(), Tier::Longpoll),
        ))
        .map(|d| replicas(d).0)
        .unwrap_or(1);
    let longpoll = longpoll_scale(
        cc.spec.longpoll.autoscaling.as_ref(),
        suspension.is_some(),
        longpoll_now,
        old.longpoll_replicas_before_suspension,
    );

    let mut events = suspension_events(
        old.suspension.as_ref().map(|s| s.reason.as_str()),
        suspension.as_ref(),
    );
    if old.observed_generation != cc.metadata.generation {
        events.push(Event::Applied {
            objects: wanted.len(),
            generation: cc.metadata.generation.unwrap_or_default(),
        });
    }

    Plan {
        suspension,
        live_since,
        tier_keys,
        write_tier_keys,
        wanted: wanted.len(),
        apply,
        unchanged,
        keep,
        prune,
        longpoll,
        events,
    }
}

/// The suspension the cluster should have: manual wins, then overload. Its `since` is kept
/// while the reason stays the same, so status does not change on every pass.
pub fn suspension(
    manual: bool,
    degrade: &DegradeState,
    old: &CommentClusterStatus,
    now: &Timestamp,
) -> Option<Suspension> {
    degrade::decide(manual, degrade).map(|reason| {
        let since = old
            .suspension
            .as_ref()
            .filter(|s| s.reason == reason.as_str())
            .map(|s| s.since.clone())
            .unwrap_or_else(|| now.to_string());
        Suspension { reason, since }
    })
}

/// When comments last came back: now if this pass lifts a suspension, else as before.
pub fn live_since(
    old: &CommentClusterStatus,
    suspension: Option<&Suspension>,
    now: &Timestamp,
) -> Option<String> {
    match (suspension, &old.suspension) {
        (None, Some(_)) => Some(now.to_string()),
        _ => old.resumed_at.clone(),
    }
}

/// Whether a child needs an apply: unless it is wanted as last applied and the cache still
/// shows what that apply left in the fields the operator sets, applying again would change
/// something.
pub fn needs_apply(
    last: Option<&AppliedChild>,
    cached: Option<&Value>,
    desired: &Value,
    desired_hash: u64,
) -> bool {
    match (last, cached) {
        (Some(last), Some(object)) => {
            last.desired != desired_hash || last.observed != fingerprint(object, desired)
        }
        _ => true,
    }
}

/// longpoll's replicas under an autoscaler: zero while suspended, remembering what it ran;
/// back to what it ran (within the autoscaler's bounds) when comments come back; otherwise
/// left to the autoscaler.
pub fn longpoll_scale(
    autoscaling: Option<&AutoscalingSpec>,
    suspended: bool,
    current: i32,
    before: Option<i32>,
) -> LongpollScale {
    let Some(auto) = autoscaling else {
        return LongpollScale {
            scale_to: None,
            before: None,
        };
    };
    let (target, before) = if suspended {
        (0, if current > 0 { Some(current) } else { before })
    } else if current == 0 {
        let back = before
            .unwrap_or(auto.min_replicas)
            .clamp(auto.min_replicas, auto.max_replicas);
        (back, None)
    } else {
        (current, None)
    };
    LongpollScale {
        scale_to: (target != current).then_some(target),
        before,
    }
}

/// The Events a change of suspension calls for.
pub fn suspension_events(was: Option<&str>, now: Option<&Suspension>) -> Vec<Event> {
    match (was, now) {
        (None, Some(s)) => vec![Event::CommentsSuspended(s.reason)],
        (Some(_), None) => vec![Event::CommentsResumed],
        (Some(old), Some(s)) if old != s.reason.as_str() => {
            vec![Event::SuspensionReasonChanged(s.reason)]
        }
        _ => Vec::new(),
    }
}

/// Children whose apply returned another uid than the one remembered: they had been deleted
/// and the apply made them again. Nothing counts as restored on a first pass (nothing is
/// remembered after a restart).
pub fn restored(
    remembered: &HashMap<ChildRef, AppliedChild>,
    applied: &[(ChildRef, AppliedChild)],
) -> Vec<ChildRef> {
    if remembered.is_empty() {
        return Vec::new();
    }
    applied
        .iter()
        .filter(|(child, now)| remembered.get(child).is_some_and(|old| old.uid != now.uid))
        .map(|(child, _)| child.clone())
        .collect()
}

/// A workload's desired and ready replicas, as its object says.
pub fn replicas(object: &Value) -> (i32, i32) {
    let desired = object["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let ready = object["status"]["readyReplicas"].as_i64().unwrap_or(0) as i32;
    (desired, ready)
}

/// Each tier's desired and ready replicas, from its workload as the pass left it and what
/// longpoll was scaled to.
pub fn tier_replicas<'a>(
    cc: &str,
    children: impl IntoIterator<Item = (&'a ChildRef, &'a Value)>,
    longpoll: &LongpollScale,
) -> BTreeMap<String, (i32, i32)> {
    let mut out = BTreeMap::new();
    for (child, object) in children {
        if !child.kind.workload() {
            continue;
        }
        if let Some(tier) = Tier::EVERY
            .into_iter()
            .find(|t| child.name == names::tier(cc, *t))
        {
            out.insert(tier.as_str().to_string(), replicas(object));
        }
    }
    if let Some(target) = longpoll.scale_to {
        let (_, ready) = out.get(Tier::Longpoll.as_str()).copied().unwrap_or((1, 0));
        out.insert(
            Tier::Longpoll.as_str().to_string(),
            (target, ready.min(target)),
        );
    }
    out
}

/// When to look again: soon while tiers lag (a pod's waiting reason changes no Deployment),
/// else in five minutes, and never later than the tier keys need.
pub fn requeue_after(status: &CommentClusterStatus, tier_keys_recheck: Duration) -> Duration {
    let settled = status
        .tiers
        .values()
        .all(|t| t.ready_replicas >= t.desired_replicas);
    let next = Duration::from_secs(if settled { 300 } else { 15 });
    next.min(tier_keys_recheck.max(Duration::from_secs(1)))
}

/// Sets condition `type_` to True or False, keeping its transition time when its status does
/// not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    now: &Timestamp,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    set_condition_to(conditions, generation, now, type_, status, reason, message);
}

/// Sets condition `type_` to `status` (True, False or Unknown), keeping its transition time
/// when its status does not change.
pub fn set_condition_to(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    now: &Timestamp,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
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

/// The status of a spec that cannot be applied: not ready, not progressing, and why.
pub fn invalid_status(cc: &CommentCluster, now: &Timestamp, msg: &str) -> CommentClusterStatus {
    let mut status = cc.status.clone().unwrap_or_default();
    status.observed_generation = cc.metadata.generation;
    for type_ in ["Ready", "Progressing"] {
        set_condition(
            &mut status.conditions,
            cc.metadata.generation,
            now,
            type_,
            false,
            "InvalidSpec",
            msg,
        );
    }
    status
}

/// The status after a failed pass: as before, with `Ready` false and the error.
pub fn failed_status(cc: &CommentCluster, now: &Timestamp, error: &str) -> CommentClusterStatus {
    let mut status = cc.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        cc.metadata.generation,
        now,
        "Ready",
        false,
        "ReconcileFailed",
        error,
    );
    status
}

/// What a pass saw of the tiers once it applied everything: each one's desired and ready
/// replicas, why the ones that lag do, where their pods say, and what their autoscalers read.
#[derive(Clone, Debug, Default)]
pub struct Tiers {
    /// Desired and ready replicas by tier name.
    pub replicas: BTreeMap<String, (i32, i32)>,
    /// What keeps a lagging tier's pods from being ready, by tier name.
    pub problems: BTreeMap<String, TierProblem>,
    /// The autoscaled tiers' autoscalers, by tier name.
    pub autoscalers: BTreeMap<String, Autoscaler>,
}

/// One tier's autoscaler as the pass found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autoscaler {
    /// What it scales on.
    pub metric: ScalingMetric,
    /// Whether it reads it.
    pub state: MetricState,
    /// Its reading for automatic degrade (the frontend's).
    pub reading: Option<HpaReading>,
}

/// The autoscalers of the tiers the spec autoscales, read from their HPAs among `children`
/// (pending where the HPA is not there yet).
pub fn autoscalers<'a>(
    cc: &CommentCluster,
    children: impl IntoIterator<Item = (&'a ChildRef, &'a Value)>,
) -> BTreeMap<String, Autoscaler> {
    let name = cc.name_any();
    let hpas: HashMap<&str, &Value> = children
        .into_iter()
        .filter(|(c, _)| c.kind == ChildKind::HorizontalPodAutoscaler)
        .map(|(c, v)| (c.name.as_str(), v))
        .collect();
    let store = desired::store_as_tier(&cc.spec.store);
    Tier::scalable(cc)
        .into_iter()
        .chain(store.as_ref().map(|spec| (Tier::Store, spec)))
        .filter_map(|(tier, spec)| {
            let auto = spec.autoscaling.as_ref()?;
            let hpa: Option<HorizontalPodAutoscaler> = hpas
                .get(names::tier(&name, tier).as_str())
                .and_then(|v| serde_json::from_value((*v).clone()).ok());
            let autoscaler = Autoscaler {
                metric: desired::scaling_metric(tier, auto),
                state: hpa
                    .as_ref()
                    .map(autoscaling::metric_state)
                    .unwrap_or(MetricState::Pending),
                reading: hpa.as_ref().and_then(autoscaling::reading),
            };
            Some((tier.as_str().to_string(), autoscaler))
        })
        .collect()
}

/// Condition `AutoscalingHealthy`: False naming every tier whose autoscaler cannot read its
/// metric, Unknown while some have not reported, else True.
fn autoscaling_condition(
    autoscalers: &BTreeMap<String, Autoscaler>,
) -> (&'static str, &'static str, String) {
    let failing: Vec<String> = autoscalers
        .iter()
        .filter(|(_, a)| matches!(a.state, MetricState::Unavailable { .. }))
        .map(|(tier, a)| {
            format!(
                "{tier} ({}): {}",
                a.metric.metric_name(),
                a.state.message().unwrap_or_default()
            )
        })
        .collect();
    let pending: Vec<&str> = autoscalers
        .iter()
        .filter(|(_, a)| a.state == MetricState::Pending)
        .map(|(tier, _)| tier.as_str())
        .collect();
    if !failing.is_empty() {
        (
            "False",
            "MetricsUnavailable",
            format!(
                "autoscalers cannot read their metrics and leave these tiers' replicas as they are: {}",
                failing.join("; ")
            ),
        )
    } else if !pending.is_empty() {
        (
            "Unknown",
            "AwaitingAutoscalers",
            format!("autoscalers have not reported yet: {}", pending.join(", ")),
        )
    } else if autoscalers.is_empty() {
        ("True", "NoAutoscalers", "no tier has an autoscaler".into())
    } else {
        (
            "True",
            "MetricsAvailable",
            "every autoscaler reads its metrics".into(),
        )
    }
}

/// Condition `AutoDegrade`, with automatic degrade enabled: whether it has a reading of the
/// frontend to decide from, and if not, why.
fn degrade_condition(frontend: Option<&Autoscaler>) -> (&'static str, &'static str, String) {
    if frontend
        .and_then(|a| a.reading)
        .is_some_and(|r| r.utilization.is_some())
    {
        return (
            "True",
            "Reading",
            "automatic degrade reads the frontend autoscaler's CPU utilization".into(),
        );
    }
    let why = match frontend.map(|a| &a.state) {
        Some(s @ MetricState::Unavailable { .. }) => format!(
            "the frontend autoscaler cannot read its metrics ({})",
            s.message().unwrap_or_default()
        ),
        _ => "the frontend autoscaler has not reported CPU utilization yet".into(),
    };
    (
        "False",
        "NoReading",
        format!(
            "automatic degrade is not deciding: {why}; comments stay as they are until it reads again"
        ),
    )
}

/// The status a pass writes: a function of what it observed and decided, with transition
/// times kept while a condition's status does not change.
pub fn status(o: &Observed, plan: &Plan, tiers: &Tiers) -> CommentClusterStatus {
    let cc = o.cc;
    let now = &o.now;
    let old = cc.status.clone().unwrap_or_default();
    let generation = cc.metadata.generation;
    let suspension = plan.suspension.as_ref();
    let Tiers {
        replicas,
        problems,
        autoscalers,
    } = tiers;
    let tiers: BTreeMap<String, TierStatus> = replicas
        .iter()
        .map(|(t, (desired, ready))| {
            (
                t.clone(),
                TierStatus {
                    desired_replicas: *desired,
                    ready_replicas: *ready,
                    autoscaling: autoscalers.get(t).map(|a| TierAutoscalingStatus {
                        metric: a.metric.metric_name().into(),
                        metrics_available: a.state.as_status().into(),
                        message: a.state.message(),
                    }),
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
    let (health, health_reason, health_message) = autoscaling_condition(autoscalers);
    set_condition_to(
        &mut conditions,
        generation,
        now,
        "AutoscalingHealthy",
        health,
        health_reason,
        &health_message,
    );
    if cc.spec.auto_degrade.enabled {
        let (deciding, reason, message) =
            degrade_condition(autoscalers.get(Tier::Frontend.as_str()));
        set_condition_to(
            &mut conditions,
            generation,
            now,
            "AutoDegrade",
            deciding,
            reason,
            &message,
        );
    } else {
        conditions.retain(|c| c.type_ != "AutoDegrade");
    }
    let mut set = |type_: &str, status: bool, reason: &str, message: &str| {
        set_condition(
            &mut conditions,
            generation,
            now,
            type_,
            status,
            reason,
            message,
        )
    };
    let ready = lagging.is_empty() && Tier::of(cc).iter().all(|t| tiers.contains_key(t.as_str()));
    if ready {
        set(
            "Ready",
            true,
            "AllTiersReady",
            "every tier has its desired replicas ready",
        );
        set(
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
        set("Ready", false, &first.reason, &msg);
        set("Progressing", false, "TiersFailing", &msg);
    } else {
        let msg = format!("waiting for ready replicas: {}", lagging.join(", "));
        set("Ready", false, "TiersNotReady", &msg);
        set("Progressing", true, "RollingOut", &msg);
    }
    match suspension {
        Some(s) => set(
            "CommentsSuspended",
            true,
            s.reason.as_str(),
            s.reason.message(),
        ),
        None => set("CommentsSuspended", false, "Live", "comments are live"),
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
        resumed_at: plan.live_since.clone(),
        longpoll_replicas_before_suspension: plan.longpoll.before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(yaml: &str, generation: i64) -> CommentCluster {
        let mut cc: CommentCluster = serde_yaml::from_str(yaml).unwrap();
        cc.metadata.generation = Some(generation);
        cc
    }

    fn autoscaled() -> CommentCluster {
        cluster(include_str!("../tests/fixtures/autoscaled.yaml"), 3)
    }

    fn minimal() -> CommentCluster {
        cluster(include_str!("../tests/fixtures/minimal.yaml"), 1)
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn observed(cc: &CommentCluster, now: Timestamp) -> Observed<'_> {
        Observed {
            cc,
            now,
            degrade: DegradeState::default(),
            tier_keys: None,
            tier_keys_owned: false,
            tier_keys_grace: Duration::from_secs(60),
            children: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    fn suspended_since(reason: &str, since: &str) -> CommentClusterStatus {
        CommentClusterStatus {
            suspension: Some(SuspensionStatus {
                reason: reason.into(),
                message: String::new(),
                since: since.into(),
            }),
            ..Default::default()
        }
    }

    fn overloaded() -> DegradeState {
        DegradeState::Overloaded {
            since: at(0),
            under_since: None,
        }
    }

    #[test]
    fn a_suspension_keeps_its_start_while_its_reason_holds() {
        let now = at(100);
        let live = CommentClusterStatus::default();
        let normal = DegradeState::default();
        assert_eq!(suspension(false, &normal, &live, &now), None);

        let fresh = suspension(true, &normal, &live, &now).unwrap();
        assert_eq!(fresh.reason, SuspensionReason::Manual);
        assert_eq!(fresh.since, now.to_string());

        let old = suspended_since("Manual", "2026-01-01T00:00:00Z");
        let kept = suspension(true, &normal, &old, &now).unwrap();
        assert_eq!(kept.since, "2026-01-01T00:00:00Z");

        // Manual lifted during an overload: the overload suspension starts now.
        let switched = suspension(false, &overloaded(), &old, &now).unwrap();
        assert_eq!(switched.reason, SuspensionReason::Overload);
        assert_eq!(switched.since, now.to_string());
        // Manual wins over overload.
        let manual = suspension(true, &overloaded(), &live, &now).unwrap();
        assert_eq!(manual.reason, SuspensionReason::Manual);
    }

    #[test]
    fn comments_come_back_at_the_pass_that_lifts_the_suspension() {
        let now = at(5);
        let old = CommentClusterStatus {
            resumed_at: Some("earlier".into()),
            ..suspended_since("Manual", "x")
        };
        assert_eq!(live_since(&old, None, &now), Some(now.to_string()));
        let still = Suspension {
            reason: SuspensionReason::Manual,
            since: "x".into(),
        };
        assert_eq!(live_since(&old, Some(&still), &now), Some("earlier".into()));
        let live = CommentClusterStatus {
            resumed_at: Some("earlier".into()),
            ..Default::default()
        };
        assert_eq!(live_since(&live, None, &now), Some("earlier".into()));
    }

    fn auto(min: i32, max: i32) -> AutoscalingSpec {
        serde_json::from_value(json!({"minReplicas": min, "maxReplicas": max})).unwrap()
    }

    #[test]
    fn longpoll_goes_to_zero_while_suspended_and_remembers_what_it_ran() {
        let a = auto(2, 10);
        assert_eq!(
            longpoll_scale(Some(&a), true, 6, None),
            LongpollScale {
                scale_to: Some(0),
                before: Some(6)
            }
        );
        // Already at zero: nothing to do, and what it ran is not forgotten.
        assert_eq!(
            longpoll_scale(Some(&a), true, 0, Some(6)),
            LongpollScale {
                scale_to: None,
                before: Some(6)
            }
        );
    }

    #[test]
    fn longpoll_comes_back_to_what_it_ran_within_its_bounds() {
        let a = auto(2, 10);
        let back = |before| longpoll_scale(Some(&a), false, 0, before).scale_to;
        assert_eq!(back(Some(6)), Some(6));
        assert_eq!(back(Some(40)), Some(10), "clamped to maxReplicas");
        assert_eq!(back(Some(1)), Some(2), "clamped to minReplicas");
        assert_eq!(back(None), Some(2), "nothing remembered: minReplicas");
        assert_eq!(longpoll_scale(Some(&a), false, 0, Some(6)).before, None);
        // Live and running: the autoscaler's business.
        assert_eq!(
            longpoll_scale(Some(&a), false, 4, Some(6)),
            LongpollScale {
                scale_to: None,
                before: None
            }
        );
        // No autoscaler: replicas are in the Deployment the operator applies.
        assert_eq!(
            longpoll_scale(None, true, 4, Some(6)),
            LongpollScale {
                scale_to: None,
                before: None
            }
        );
    }

    #[test]
    fn a_child_is_applied_unless_it_stands_as_last_applied() {
        let desired = json!({"metadata": {"name": "a"}, "spec": {"replicas": 2}});
        let cached = json!({"metadata": {"name": "a", "uid": "u1"}, "spec": {"replicas": 2},
                            "status": {"readyReplicas": 1}});
        let hash = hash_json(&desired);
        let last = AppliedChild {
            uid: "u1".into(),
            desired: hash,
            observed: fingerprint(&cached, &desired),
        };
        assert!(!needs_apply(Some(&last), Some(&cached), &desired, hash));
        assert!(
            needs_apply(None, Some(&cached), &desired, hash),
            "not applied by this process yet"
        );
        assert!(
            needs_apply(Some(&last), None, &desired, hash),
            "gone from the cache"
        );
        let changed = json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}});
        assert!(needs_apply(
            Some(&last),
            Some(&cached),
            &changed,
            hash_json(&changed)
        ));
        let mut edited = cached.clone();
        edited["spec"]["replicas"] = 5.into();
        assert!(
            needs_apply(Some(&last), Some(&edited), &desired, hash),
            "edited by hand"
        );
    }

    #[test]
    fn a_child_with_a_new_uid_was_recreated() {
        let child = ChildRef::new(ChildKind::Service, "blog-logic");
        let other = ChildRef::new(ChildKind::Deployment, "blog-logic");
        let rec = |uid: &str| AppliedChild {
            uid: uid.into(),
            desired: 1,
            observed: 2,
        };
        let remembered = HashMap::from([(child.clone(), rec("u1")), (other.clone(), rec("u2"))]);
        let applied = vec![(child.clone(), rec("u9")), (other.clone(), rec("u2"))];
        assert_eq!(restored(&remembered, &applied), vec![child.clone()]);
        // After a restart nothing is remembered, and nothing was recreated.
        assert!(restored(&HashMap::new(), &applied).is_empty());
        // A child applied for the first time was made, not recreated.
        let new = ChildRef::new(ChildKind::Ingress, "blog");
        assert!(restored(&remembered, &[(new, rec("u3"))]).is_empty());
    }

    #[test]
    fn events_follow_the_change_of_suspension() {
        let s = |reason| Suspension {
            reason,
            since: "t".into(),
        };
        let manual = s(SuspensionReason::Manual);
        let overload = s(SuspensionReason::Overload);
        assert_eq!(
            suspension_events(None, Some(&manual)),
            vec![Event::CommentsSuspended(SuspensionReason::Manual)]
        );
        assert_eq!(
            suspension_events(Some("Overload"), None),
            vec![Event::CommentsResumed]
        );
        assert_eq!(
            suspension_events(Some("Manual"), Some(&overload)),
            vec![Event::SuspensionReasonChanged(SuspensionReason::Overload)]
        );
        assert!(suspension_events(Some("Manual"), Some(&manual)).is_empty());
        assert!(suspension_events(None, None).is_empty());
    }

    #[test]
    fn each_event_has_its_reason_action_and_type() {
        let child = ChildRef::new(ChildKind::HorizontalPodAutoscaler, "blog-logic");
        let cases = [
            (Event::ChildDeleted(child.clone()), "ChildDeleted", "Delete"),
            (
                Event::ChildRestored(child.clone()),
                "ChildRestored",
                "Apply",
            ),
            (
                Event::Applied {
                    objects: 3,
                    generation: 2,
                },
                "Applied",
                "Apply",
            ),
            (
                Event::CommentsSuspended(SuspensionReason::Overload),
                "CommentsSuspended",
                "Suspend",
            ),
            (
                Event::SuspensionReasonChanged(SuspensionReason::Manual),
                "CommentsSuspended",
                "Suspend",
            ),
            (Event::CommentsResumed, "CommentsResumed", "Resume"),
            (Event::InvalidSpec("x".into()), "InvalidSpec", "Validate"),
            (
                Event::ReconcileFailed("x".into()),
                "ReconcileFailed",
                "Reconcile",
            ),
            (
                Event::TierKeys(tierkeys::Step::Created { key: "k1".into() }),
                "TierKeysCreated",
                "Reconcile",
            ),
        ];
        for (event, reason, action) in cases {
            assert_eq!(
                (event.reason(), event.action()),
                (reason, action),
                "{event:?}"
            );
            let warning = matches!(event, Event::InvalidSpec(_) | Event::ReconcileFailed(_));
            assert_eq!(event.type_() == EventType::Warning, warning, "{event:?}");
        }
        assert_eq!(
            Event::ChildDeleted(child).note(),
            "deleted HorizontalPodAutoscaler/blog-logic, no longer wanted by the spec"
        );
        assert!(
            Event::CommentsSuspended(SuspensionReason::Manual)
                .note()
                .contains("longpoll scaled to zero")
        );
    }

    #[test]
    fn a_first_pass_applies_every_child_and_makes_the_keys() {
        let cc = autoscaled();
        let p = plan(&observed(&cc, at(0)));
        let wanted = desired::build(&cc, &Inputs::default());
        assert_eq!(p.wanted, wanted.len());
        assert_eq!(p.apply.len(), wanted.len());
        assert!(p.unchanged.is_empty() && p.prune.is_empty());
        assert!(p.write_tier_keys);
        assert!(matches!(
            p.tier_keys.step,
            Some(tierkeys::Step::Created { .. })
        ));
        assert_eq!(
            p.events,
            vec![Event::Applied {
                objects: wanted.len(),
                generation: 3
            }]
        );
        // What pods read at start is applied first.
        assert!(
            p.apply
                .iter()
                .any(|c| c.child == ChildRef::new(ChildKind::ConfigMap, "news-control"))
        );
    }

    #[test]
    fn a_settled_pass_applies_nothing_and_prunes_what_is_no_longer_wanted() {
        let cc = autoscaled();
        let mut o = observed(&cc, at(0));
        for d in desired::build(&cc, &Inputs::default()) {
            let mut object = serde_json::to_value(&d.object).unwrap();
            object["metadata"]["uid"] = format!("uid-{}", d.key()).into();
            let body = serde_json::to_value(&d.object).unwrap();
            o.applied.insert(
                d.child(),
                AppliedChild {
                    uid: format!("uid-{}", d.key()),
                    desired: hash_json(&body),
                    observed: fingerprint(&object, &body),
                },
            );
            o.children.insert(d.child(), object);
        }
        let stale_hpa = ChildRef::new(ChildKind::HorizontalPodAutoscaler, "news-sync");
        let stale_cm = ChildRef::new(ChildKind::ConfigMap, "news-old");
        o.children.insert(stale_hpa.clone(), json!({}));
        o.children.insert(stale_cm, json!({}));
        let p = plan(&o);
        assert!(
            p.apply.is_empty(),
            "{:?}",
            p.apply.iter().map(|c| &c.child).collect::<Vec<_>>()
        );
        assert_eq!(p.unchanged.len(), p.wanted);
        // Only kinds that come and go with the spec are deleted.
        assert_eq!(p.prune, vec![stale_hpa]);
    }

    #[test]
    fn turning_email_off_deletes_notify_but_keeps_its_volume() {
        let mut cc = autoscaled();
        let email = cluster(include_str!("../tests/fixtures/notifications.yaml"), 1);
        cc.spec.notifications = email.spec.notifications;
        let mut o = observed(&cc, at(0));
        for d in desired::build(&cc, &Inputs::default()) {
            o.children
                .insert(d.child(), serde_json::to_value(&d.object).unwrap());
        }
        assert!(plan(&o).prune.is_empty());
        let mut off = cc.clone();
        off.spec.notifications = None;
        let mut o2 = observed(&off, at(1));
        o2.children = o.children.clone();
        let p = plan(&o2);
        assert_eq!(
            p.prune,
            vec![
                ChildRef::new(ChildKind::Service, "news-notify"),
                ChildRef::new(ChildKind::Deployment, "news-notify"),
                ChildRef::new(ChildKind::NetworkPolicy, "news-notify"),
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_suspended_pass_scales_longpoll_from_what_the_cache_shows() {
        let mut cc = autoscaled();
        cc.spec.comments_suspended = true;
        let mut o = observed(&cc, at(10));
        o.children.insert(
            ChildRef::new(ChildKind::Deployment, "news-longpoll"),
            json!({"spec": {"replicas": 7}, "status": {"readyReplicas": 7}}),
        );
        let p = plan(&o);
        assert_eq!(p.suspension.as_ref().unwrap().since, at(10).to_string());
        assert_eq!(
            p.longpoll,
            LongpollScale {
                scale_to: Some(0),
                before: Some(7)
            }
        );
        assert!(
            p.events
                .contains(&Event::CommentsSuspended(SuspensionReason::Manual))
        );
        // The control ConfigMap carries the suspension.
        let control = p
            .apply
            .iter()
            .find(|c| c.child == ChildRef::new(ChildKind::ConfigMap, "news-control"))
            .unwrap();
        assert_eq!(control.body["data"]["commentsSuspended"], "true");
    }

    #[test]
    fn workloads_give_tier_replicas_and_the_longpoll_scale_overrides() {
        let children = [
            (
                ChildRef::new(ChildKind::Deployment, "blog-logic"),
                json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}),
            ),
            (
                ChildRef::new(ChildKind::StatefulSet, "blog-store"),
                json!({"spec": {"replicas": 1}, "status": {}}),
            ),
            (
                ChildRef::new(ChildKind::Service, "blog-frontend"),
                json!({"spec": {}}),
            ),
            (
                ChildRef::new(ChildKind::Deployment, "blog-longpoll"),
                json!({"spec": {"replicas": 4}, "status": {"readyReplicas": 4}}),
            ),
        ];
        let none = LongpollScale {
            scale_to: None,
            before: None,
        };
        let got = tier_replicas("blog", children.iter().map(|(c, v)| (c, v)), &none);
        assert_eq!(
            got,
            BTreeMap::from([
                ("logic".to_string(), (3, 2)),
                ("store".to_string(), (1, 0)),
                ("longpoll".to_string(), (4, 4)),
            ])
        );
        let scaled = LongpollScale {
            scale_to: Some(0),
            before: Some(4),
        };
        let got = tier_replicas("blog", children.iter().map(|(c, v)| (c, v)), &scaled);
        assert_eq!(got["longpoll"], (0, 0));
    }

    fn all_ready() -> Tiers {
        Tiers {
            replicas: Tier::ALL
                .iter()
                .map(|t| (t.as_str().to_string(), (2, 2)))
                .collect(),
            ..Default::default()
        }
    }

    fn condition<'a>(s: &'a CommentClusterStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn status_is_ready_when_every_tier_is_and_records_the_generation() {
        let cc = minimal();
        let o = observed(&cc, at(0));
        let p = plan(&o);
        let s = status(&o, &p, &all_ready());
        assert_eq!(s.observed_generation, Some(1));
        let ready = condition(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllTiersReady")
        );
        assert_eq!(ready.observed_generation, Some(1));
        assert_eq!(condition(&s, "Progressing").status, "False");
        assert_eq!(condition(&s, "CommentsSuspended").reason, "Live");
        assert_eq!(s.comments.as_deref(), Some("Live"));
        assert_eq!(s.tiers.len(), 6);
    }

    #[test]
    fn status_is_stable_so_a_pass_does_not_trigger_the_next() {
        let mut cc = minimal();
        let o = observed(&cc, at(0));
        let first = status(&o, &plan(&o), &all_ready());
        cc.status = Some(first.clone());
        let o = observed(&cc, at(500));
        let again = status(&o, &plan(&o), &all_ready());
        assert_eq!(
            again, first,
            "a later pass with nothing changed writes nothing"
        );
        assert_eq!(condition(&again, "Ready").last_transition_time, Time(at(0)));
        // A change of a condition's status moves its transition time; the others keep theirs.
        let mut lagging = all_ready();
        lagging.replicas.insert("logic".into(), (3, 1));
        let changed = status(&o, &plan(&o), &lagging);
        let ready = condition(&changed, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "TiersNotReady")
        );
        assert_eq!(ready.message, "waiting for ready replicas: logic 1/3");
        assert_eq!(ready.last_transition_time, Time(at(500)));
        assert_eq!(condition(&changed, "Progressing").reason, "RollingOut");
        assert_eq!(
            condition(&changed, "CommentsSuspended").last_transition_time,
            Time(at(0))
        );
    }

    #[test]
    fn status_names_failing_tiers_and_a_missing_one_keeps_it_unready() {
        let cc = minimal();
        let o = observed(&cc, at(0));
        let p = plan(&o);
        let mut tiers = all_ready();
        tiers.replicas.insert("store".into(), (1, 0));
        tiers.replicas.insert("logic".into(), (2, 0));
        let problem = |reason: &str| TierProblem {
            reason: reason.into(),
            message: "m".into(),
        };
        tiers
            .problems
            .insert("store".into(), problem("CrashLoopBackOff"));
        tiers
            .problems
            .insert("logic".into(), problem("ImagePullBackOff"));
        let s = status(&o, &p, &tiers);
        let ready = condition(&s, "Ready");
        // Tiers are named in order; the first one's reason is the condition's.
        assert_eq!(ready.reason, "ImagePullBackOff");
        assert!(ready.message.starts_with(
            "tiers failing: logic: ImagePullBackOff (m); store: CrashLoopBackOff (m)"
        ));
        assert_eq!(condition(&s, "Progressing").reason, "TiersFailing");

        let mut five = all_ready();
        five.replicas.remove("logger");
        assert_eq!(condition(&status(&o, &p, &five), "Ready").status, "False");
    }

    #[test]
    fn with_email_on_the_cluster_is_ready_only_with_notify_ready_too() {
        let mut cc = minimal();
        let email = cluster(include_str!("../tests/fixtures/notifications.yaml"), 1);
        cc.spec.notifications = email.spec.notifications;
        let o = observed(&cc, at(0));
        let p = plan(&o);
        let six = all_ready();
        let s = status(&o, &p, &six);
        assert_eq!(condition(&s, "Ready").status, "False", "notify is missing");
        let mut seven = all_ready();
        seven.replicas.insert("notify".into(), (1, 0));
        let s = status(&o, &p, &seven);
        assert_eq!(
            condition(&s, "Ready").message,
            "waiting for ready replicas: notify 0/1"
        );
        seven.replicas.insert("notify".into(), (1, 1));
        let s = status(&o, &p, &seven);
        assert_eq!(condition(&s, "Ready").status, "True");
        assert_eq!(s.tiers.len(), 7);
    }

    #[test]
    fn status_says_why_comments_are_suspended_and_what_longpoll_ran() {
        let mut cc = autoscaled();
        cc.spec.comments_suspended = true;
        let mut o = observed(&cc, at(7));
        o.children.insert(
            ChildRef::new(ChildKind::Deployment, "news-longpoll"),
            json!({"spec": {"replicas": 5}}),
        );
        let p = plan(&o);
        let s = status(&o, &p, &all_ready());
        let c = condition(&s, "CommentsSuspended");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Manual"));
        assert_eq!(s.comments.as_deref(), Some("Suspended"));
        assert_eq!(s.suspension.as_ref().unwrap().since, at(7).to_string());
        assert_eq!(s.longpoll_replicas_before_suspension, Some(5));
    }

    #[test]
    fn an_invalid_spec_is_neither_ready_nor_progressing() {
        let cc = minimal();
        let s = invalid_status(&cc, &at(0), "spec.x: bad");
        assert_eq!(s.observed_generation, Some(1));
        for type_ in ["Ready", "Progressing"] {
            let c = condition(&s, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                ("False", "InvalidSpec", "spec.x: bad")
            );
        }
        let f = failed_status(&cc, &at(0), "apply x: boom");
        assert_eq!(condition(&f, "Ready").reason, "ReconcileFailed");
        assert_eq!(f.observed_generation, None, "a failed pass applied nothing");
    }

    fn hpa_child(name: &str, status: Value) -> (ChildRef, Value) {
        (
            ChildRef::new(ChildKind::HorizontalPodAutoscaler, name),
            json!({
                "metadata": {"name": name},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name}, "maxReplicas": 20},
                "status": status,
            }),
        )
    }

    fn reading_cpu(utilization: i32) -> Value {
        json!({
            "currentReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": utilization}}}],
            "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}],
        })
    }

    fn failing(reason: &str, message: &str) -> Value {
        json!({
            "currentReplicas": 2,
            "conditions": [{"type": "ScalingActive", "status": "False", "reason": reason,
                            "message": message}],
        })
    }

    fn with_autoscalers(cc: &CommentCluster, children: &[(ChildRef, Value)]) -> Tiers {
        Tiers {
            autoscalers: autoscalers(cc, children.iter().map(|(c, v)| (c, v))),
            ..all_ready()
        }
    }

    #[test]
    fn each_autoscaled_tier_reports_its_metric_and_whether_it_reads_it() {
        let cc = autoscaled();
        let children = [
            hpa_child("news-frontend", reading_cpu(40)),
            hpa_child(
                "news-longpoll",
                failing(
                    "FailedGetPodsMetric",
                    "unable to get metric io360_longpoll_held_connections",
                ),
            ),
        ];
        let o = observed(&cc, at(0));
        let s = status(&o, &plan(&o), &with_autoscalers(&cc, &children));
        let tier = |t: &str| s.tiers[t].autoscaling.clone().unwrap();
        assert_eq!(tier("frontend").metric, "cpu");
        assert_eq!(tier("frontend").metrics_available, "True");
        assert_eq!(tier("longpoll").metric, "io360_longpoll_held_connections");
        assert_eq!(tier("longpoll").metrics_available, "False");
        assert_eq!(
            tier("longpoll").message.as_deref(),
            Some("FailedGetPodsMetric: unable to get metric io360_longpoll_held_connections")
        );
        // logic's HPA is not there yet: unknown, not failing. sync has no autoscaler.
        assert_eq!(tier("logic").metrics_available, "Unknown");
        assert_eq!(s.tiers["sync"].autoscaling, None);

        let c = condition(&s, "AutoscalingHealthy");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "MetricsUnavailable")
        );
        assert!(
            c.message.contains(
                "longpoll (io360_longpoll_held_connections): FailedGetPodsMetric: unable to get metric"
            ),
            "{}",
            c.message
        );
        assert!(!c.message.contains("frontend"), "{}", c.message);
        // The frontend reads CPU: automatic degrade decides.
        let d = condition(&s, "AutoDegrade");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "Reading"));
    }

    #[test]
    fn autoscalers_not_reported_yet_are_unknown_and_all_reading_is_healthy() {
        let cc = autoscaled();
        let o = observed(&cc, at(0));
        let p = plan(&o);
        let s = status(&o, &p, &with_autoscalers(&cc, &[]));
        let c = condition(&s, "AutoscalingHealthy");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "AwaitingAutoscalers")
        );
        assert_eq!(
            c.message,
            "autoscalers have not reported yet: frontend, logic, longpoll"
        );

        let children =
            ["news-frontend", "news-logic", "news-longpoll"].map(|n| hpa_child(n, reading_cpu(30)));
        let s = status(&o, &p, &with_autoscalers(&cc, &children));
        let c = condition(&s, "AutoscalingHealthy");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "MetricsAvailable")
        );

        // A cluster with no autoscaler is healthy as far as autoscaling goes.
        let m = minimal();
        let o = observed(&m, at(0));
        let s = status(&o, &plan(&o), &with_autoscalers(&m, &[]));
        assert_eq!(condition(&s, "AutoscalingHealthy").reason, "NoAutoscalers");
    }

    #[test]
    fn automatic_degrade_says_why_it_is_not_deciding() {
        let cc = autoscaled();
        let o = observed(&cc, at(0));
        let p = plan(&o);
        let children = [hpa_child(
            "news-frontend",
            failing(
                "FailedGetResourceMetric",
                "failed to get cpu utilization: no metrics returned from resource metrics API",
            ),
        )];
        let s = status(&o, &p, &with_autoscalers(&cc, &children));
        let d = condition(&s, "AutoDegrade");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("False", "NoReading")
        );
        assert!(
            d.message.starts_with(
                "automatic degrade is not deciding: the frontend autoscaler cannot read its metrics (FailedGetResourceMetric: failed to get cpu"
            ),
            "{}",
            d.message
        );
        let s = status(&o, &p, &with_autoscalers(&cc, &[]));
        assert!(
            condition(&s, "AutoDegrade")
                .message
                .contains("has not reported CPU utilization yet")
        );

        // Disabled: the condition goes away.
        let mut off = autoscaled();
        off.status = Some(s);
        off.spec.auto_degrade.enabled = false;
        let o = observed(&off, at(1));
        let s = status(&o, &plan(&o), &with_autoscalers(&off, &[]));
        assert!(s.conditions.iter().all(|c| c.type_ != "AutoDegrade"));
    }

    #[test]
    fn a_longpoll_at_zero_while_suspended_is_not_an_autoscaling_failure() {
        let cc = autoscaled();
        let children = [
            hpa_child("news-frontend", reading_cpu(40)),
            hpa_child("news-logic", reading_cpu(40)),
            hpa_child(
                "news-longpoll",
                failing(
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero",
                ),
            ),
        ];
        let o = observed(&cc, at(0));
        let s = status(&o, &plan(&o), &with_autoscalers(&cc, &children));
        assert_eq!(condition(&s, "AutoscalingHealthy").status, "True");
        assert_eq!(
            s.tiers["longpoll"]
                .autoscaling
                .as_ref()
                .unwrap()
                .metrics_available,
            "Unknown"
        );
    }

    #[test]
    fn a_pass_looks_again_soon_while_tiers_lag() {
        let mut s = CommentClusterStatus::default();
        let day = Duration::from_secs(86_400);
        assert_eq!(requeue_after(&s, day), Duration::from_secs(300));
        s.tiers.insert(
            "logic".into(),
            TierStatus {
                desired_replicas: 2,
                ready_replicas: 1,
                autoscaling: None,
            },
        );
        assert_eq!(requeue_after(&s, day), Duration::from_secs(15));
        assert_eq!(
            requeue_after(&s, Duration::from_secs(4)),
            Duration::from_secs(4)
        );
        assert_eq!(requeue_after(&s, Duration::ZERO), Duration::from_secs(1));
    }
}
