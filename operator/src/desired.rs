//! Spec in, desired objects out: every child a CommentCluster should have, as a pure function
//! of the resource and its suspension. Nothing here talks to the API server, so the whole
//! shape of a deployment is tested from YAML fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretProjection, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, SleepAction, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, NetworkPolicy,
    NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::children::{ChildKind, ChildRef};
use crate::crd::{
    AutoscalingSpec, CommentCluster, DEFAULT_TARGET_HELD_CONNECTIONS,
    DEFAULT_TARGET_REQUESTS_IN_FLIGHT, PdbSpec, ScalingMetric, StatefulTierSpec, StoreSpec,
    TierSpec,
};
use crate::degrade::SuspensionReason;

/// The port every tier listens on, named `http`.
pub const HTTP_PORT: i32 = 8080;
/// The port of every tier's `/metrics`, `/healthz` and `/readyz`, named `metrics`: apart from
/// the API, so a NetworkPolicy can let a scraper in without opening the API to it.
pub const METRICS_PORT: i32 = 9090;
/// Seconds a tier keeps answering after SIGTERM (after the preStop sleep), closing each
/// connection after its answer.
pub const SHUTDOWN_DELAY_SECS: i64 = 2;
/// Where the database URL Secret is mounted in the pods of a store on PostgreSQL.
pub const DATABASE_URL_DIR: &str = "/var/run/secrets/io360/database";

/// Where the mail server's login (`username`, `password`) is mounted in notify pods.
pub const SMTP_CREDENTIALS_DIR: &str = "/var/run/secrets/io360/smtp";

/// Where a site's phrases for messages are mounted in notify pods.
pub const PHRASES_DIR: &str = "/etc/io360/phrases";
/// Store replicas on PostgreSQL when the spec sets neither replicas nor autoscaling: two, so
/// one pod's loss never stops writes.
pub const DEFAULT_POSTGRES_STORE_REPLICAS: i32 = 2;

/// Where logic sorts an uploaded import (`POST /api/v1/admin/import`): an emptyDir, as the
/// root filesystem is read-only.
pub const IMPORT_SCRATCH_DIR: &str = "/var/lib/io360/import";

/// Where the admin token Secret is mounted in logic pods.
pub const ADMIN_TOKEN_DIR: &str = "/var/run/secrets/io360/admin";

/// Where a tier's credential (`token`) and the keyring (`keys`) are mounted.
pub const TIER_KEYS_DIR: &str = "/var/run/secrets/io360/tier";

/// Which items of the tier keys Secret a tier gets: (its credential, the keyring). A tier
/// holds its credential when it calls another tier (every tier but the logger ships audit
/// events), and the keyring when other tiers call it.
pub fn tier_key_items(tier: Tier) -> (bool, bool) {
    match tier {
        Tier::Frontend | Tier::Longpoll => (true, false),
        Tier::Logic | Tier::Store | Tier::Sync | Tier::Notify => (true, true),
        Tier::Logger => (false, true),
    }
}
/// Replicas of a stateless tier with neither `replicas` nor `autoscaling` set.
pub const DEFAULT_REPLICAS: i32 = 2;
/// Label that marks every object the operator manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "io360-operator";
/// Label holding the CommentCluster's name on every child.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// Label holding the tier on pods and workloads.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Pod template annotation that changes when a tier's configuration does, rolling its pods.
pub const CONFIG_HASH: &str = "io360.dev/config-hash";

/// The tiers: six in every cluster, and notify in those with email.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Serves pages.
    Frontend,
    /// The comment API.
    Logic,
    /// Durable comments.
    Store,
    /// Change feed fan-out.
    Sync,
    /// Long-poll connections.
    Longpoll,
    /// Audit log.
    Logger,
    /// Email to readers and moderators (`spec.notifications`).
    Notify,
}

impl Tier {
    /// The tiers every cluster has, in a stable order.
    pub const ALL: [Tier; 6] = [
        Tier::Frontend,
        Tier::Logic,
        Tier::Store,
        Tier::Sync,
        Tier::Longpoll,
        Tier::Logger,
    ];

    /// The tier's name, as in `io360 serve <tier>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Frontend => "frontend",
            Tier::Logic => "logic",
            Tier::Store => "store",
            Tier::Sync => "sync",
            Tier::Longpoll => "longpoll",
            Tier::Logger => "logger",
            Tier::Notify => "notify",
        }
    }

    /// Every tier there is, whether or not a cluster runs it.
    pub const EVERY: [Tier; 7] = [
        Tier::Frontend,
        Tier::Logic,
        Tier::Store,
        Tier::Sync,
        Tier::Longpoll,
        Tier::Logger,
        Tier::Notify,
    ];

    /// The tiers `cc` runs: [`Tier::ALL`], and notify when `spec.notifications` is set.
    pub fn of(cc: &CommentCluster) -> Vec<Tier> {
        let mut tiers = Tier::ALL.to_vec();
        if cc.spec.notifications.is_some() {
            tiers.push(Tier::Notify);
        }
        tiers
    }

    /// The stateless tiers that scale out, with their spec.
    pub fn scalable(cc: &CommentCluster) -> [(Tier, &TierSpec); 4] {
        [
            (Tier::Frontend, &cc.spec.frontend),
            (Tier::Logic, &cc.spec.logic),
            (Tier::Sync, &cc.spec.sync),
            (Tier::Longpoll, &cc.spec.longpoll),
        ]
    }
}

/// Names of a CommentCluster's children, per docs/CONTRACTS.md.
pub mod names {
    use super::Tier;

    /// `<cc>-<tier>`: the tier's Service and workload.
    pub fn tier(cc: &str, tier: Tier) -> String {
        format!("{cc}-{}", tier.as_str())
    }
    /// `<cc>-control`: the control ConfigMap.
    pub fn control(cc: &str) -> String {
        format!("{cc}-control")
    }
    /// `<cc>-tiers`: the tiers' ServiceAccount, Role and RoleBinding.
    pub fn tiers_account(cc: &str) -> String {
        format!("{cc}-tiers")
    }
    /// `<cc>-logger-data`: logger's PersistentVolumeClaim.
    pub fn logger_data(cc: &str) -> String {
        format!("{cc}-logger-data")
    }
    /// `<cc>-notify-data`: notify's PersistentVolumeClaim.
    pub fn notify_data(cc: &str) -> String {
        format!("{cc}-notify-data")
    }
}

/// The suspension in force, as decided by the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspension {
    /// Why.
    pub reason: SuspensionReason,
    /// Since when (RFC 3339).
    pub since: String,
}

/// Everything besides the spec that shapes the children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The suspension in force, if any.
    pub suspension: Option<Suspension>,
    /// When comments last came back (RFC 3339); the control ConfigMap's `since` while live.
    pub live_since: Option<String>,
}

/// One child as it will be applied: its API resource and the object.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// Group, version, kind and plural of the object.
    pub resource: ApiResource,
    /// The object, with apiVersion, kind, metadata and owner reference set.
    pub object: DynamicObject,
}

impl DesiredObject {
    fn new<K>(obj: K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let mut value = serde_json::to_value(&obj).expect("k8s-openapi objects serialize");
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = resource.kind.clone().into();
        let object = serde_json::from_value(value).expect("a serialized object is a DynamicObject");
        Self { resource, object }
    }

    /// `Kind/name`, for logs and events.
    pub fn key(&self) -> String {
        self.child().to_string()
    }

    /// Which child this is.
    pub fn child(&self) -> ChildRef {
        let kind = ChildKind::of(&self.resource.kind)
            .expect("desired objects are of the kinds the operator makes");
        ChildRef::new(kind, self.object.name_any())
    }
}

/// The kinds the operator creates, in apply order: what pods need (config, identity) first.
pub fn kinds() -> Vec<ApiResource> {
    ChildKind::ALL
        .into_iter()
        .map(ChildKind::resource)
        .collect()
}

/// The labels every child of `cc` carries.
pub fn instance_labels(cc: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "io360".to_string()),
        (INSTANCE.to_string(), cc.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

fn selector_labels(cc: &str, tier: Tier) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "io360".to_string()),
        (INSTANCE.to_string(), cc.to_string()),
        (COMPONENT.to_string(), tier.as_str().to_string()),
    ])
}

struct Ctx<'a> {
    cc: &'a CommentCluster,
    name: String,
    namespace: Option<String>,
    owner: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

impl Ctx<'_> {
    fn meta(&self, name: String, tier: Option<Tier>) -> ObjectMeta {
        let mut labels = instance_labels(&self.name);
        if let Some(t) = tier {
            labels.insert(COMPONENT.into(), t.as_str().into());
        }
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(self.owner.clone()),
            ..Default::default()
        }
    }

    fn url(&self, tier: Tier) -> String {
        format!("http://{}:{HTTP_PORT}", names::tier(&self.name, tier))
    }
}

/// Builds every child `cc` should have. `cc` must carry a name and uid (it came from the API
/// server) and should have passed [`crate::validate::validate`].
pub fn build(cc: &CommentCluster, inputs: &Inputs) -> Vec<DesiredObject> {
    let name = cc.name_any();
    let owner = cc.controller_owner_ref(&()).into_iter().collect();
    let ctx = Ctx {
        cc,
        name,
        namespace: cc.namespace(),
        owner,
    };
    let mut out = vec![
        DesiredObject::new(control_configmap(&ctx, inputs)),
        DesiredObject::new(service_account(&ctx)),
        DesiredObject::new(role(&ctx)),
        DesiredObject::new(role_binding(&ctx)),
        DesiredObject::new(logger_claim(&ctx)),
    ];
    if let Some(claim) = notify_claim(&ctx) {
        out.push(DesiredObject::new(claim));
    }
    let tiers = Tier::of(cc);
    for tier in tiers.iter().copied() {
        out.push(DesiredObject::new(service(&ctx, tier)));
    }
    let store = store_as_tier(&cc.spec.store);
    match &store {
        Some(spec) => out.push(DesiredObject::new(tier_deployment(
            &ctx,
            Tier::Store,
            spec,
            spec.autoscaling
                .is_none()
                .then(|| spec.replicas.unwrap_or(DEFAULT_POSTGRES_STORE_REPLICAS)),
        ))),
        None => out.push(DesiredObject::new(store_statefulset(&ctx))),
    }
    let suspended = inputs.suspension.is_some();
    for (tier, spec) in Tier::scalable(cc) {
        let replicas = match (&spec.autoscaling, tier, suspended) {
            (Some(_), _, _) => None,
            (None, Tier::Longpoll, true) => Some(0),
            (None, _, _) => Some(spec.replicas.unwrap_or(DEFAULT_REPLICAS)),
        };
        out.push(DesiredObject::new(tier_deployment(
            &ctx, tier, spec, replicas,
        )));
    }
    out.push(DesiredObject::new(single_writer_deployment(
        &ctx,
        Tier::Logger,
        &cc.spec.logger,
    )));
    if let Some(notifications) = &cc.spec.notifications {
        out.push(DesiredObject::new(single_writer_deployment(
            &ctx,
            Tier::Notify,
            &notifications.tier,
        )));
    }
    let replicated = Tier::scalable(cc)
        .into_iter()
        .chain(store.as_ref().map(|spec| (Tier::Store, spec)));
    for (tier, spec) in replicated.clone() {
        if let Some(hpa) = hpa(&ctx, tier, spec) {
            out.push(DesiredObject::new(hpa));
        }
    }
    for (tier, spec) in replicated {
        if let Some(pdb) = pdb(&ctx, tier, spec.pod_disruption_budget.as_ref()) {
            out.push(DesiredObject::new(pdb));
        }
    }
    for tier in tiers {
        out.push(DesiredObject::new(network_policy(&ctx, tier)));
    }
    if let Some(ing) = ingress(&ctx) {
        out.push(DesiredObject::new(ing));
    }
    out
}

/// The control ConfigMap's data for a suspension state (docs/CONTRACTS.md).
pub fn control_data(inputs: &Inputs, created: Option<String>) -> BTreeMap<String, String> {
    let (suspended, reason, message, since) = match &inputs.suspension {
        Some(s) => (
            "true",
            s.reason.as_str(),
            s.reason.message(),
            s.since.clone(),
        ),
        None => (
            "false",
            "",
            "Comments are live.",
            inputs.live_since.clone().or(created).unwrap_or_default(),
        ),
    };
    BTreeMap::from([
        ("commentsSuspended".to_string(), suspended.to_string()),
        ("reason".to_string(), reason.to_string()),
        ("message".to_string(), message.to_string()),
        ("since".to_string(), since),
    ])
}

fn control_configmap(ctx: &Ctx, inputs: &Inputs) -> ConfigMap {
    let created = ctx
        .cc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    ConfigMap {
        metadata: ctx.meta(names::control(&ctx.name), None),
        data: Some(control_data(inputs, created)),
        ..Default::default()
    }
}

fn service_account(ctx: &Ctx) -> ServiceAccount {
    ServiceAccount {
        metadata: ctx.meta(names::tiers_account(&ctx.name), None),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// The tiers may read and watch their own control ConfigMap, and nothing else.
fn role(ctx: &Ctx) -> Role {
    Role {
        metadata: ctx.meta(names::tiers_account(&ctx.name), None),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![names::control(&ctx.name)]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    }
}

fn role_binding(ctx: &Ctx) -> RoleBinding {
    let account = names::tiers_account(&ctx.name);
    RoleBinding {
        metadata: ctx.meta(account.clone(), None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: account.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account,
            namespace: ctx.namespace.clone(),
            ..Default::default()
        }]),
    }
}

fn claim_spec(storage: &crate::crd::StorageSpec) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: storage.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(storage.size.clone()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn logger_claim(ctx: &Ctx) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ctx.meta(names::logger_data(&ctx.name), Some(Tier::Logger)),
        spec: Some(claim_spec(&ctx.cc.spec.logger.storage)),
        ..Default::default()
    }
}

fn notify_claim(ctx: &Ctx) -> Option<PersistentVolumeClaim> {
    let notifications = ctx.cc.spec.notifications.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: ctx.meta(names::notify_data(&ctx.name), Some(Tier::Notify)),
        spec: Some(claim_spec(&notifications.tier.storage)),
        ..Default::default()
    })
}

/// A tier's Service: its API and its metrics port. A Fjall store's is headless (the governing
/// Service of its StatefulSet): its name resolves to the one store pod. A Postgres store's
/// spreads requests over its replicas like the other tiers'.
fn service(ctx: &Ctx, tier: Tier) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(ServiceSpec {
            cluster_ip: (tier == Tier::Store && !ctx.cc.spec.store.on_postgres())
                .then(|| "None".into()),
            selector: Some(selector_labels(&ctx.name, tier)),
            ports: Some(vec![port("http", HTTP_PORT), port("metrics", METRICS_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The environment of a tier's container, per docs/CONTRACTS.md.
fn tier_env(ctx: &Ctx, tier: Tier) -> Vec<EnvVar> {
    let spec = &ctx.cc.spec;
    let mut vars = vec![
        env("IO360_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        env("IO360_METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
        env("IO360_LOG", "info"),
    ];
    if spec.shutdown.drain_seconds > 0 {
        // After the preStop sleep, a little more answering with every connection closed after
        // its answer, so clients still on a keep-alive connection leave it for another pod.
        vars.push(env(
            "IO360_SHUTDOWN_DELAY_SECS",
            SHUTDOWN_DELAY_SECS.to_string(),
        ));
    }
    if tier != Tier::Logger {
        vars.push(env("IO360_LOGGER_URL", ctx.url(Tier::Logger)));
    }
    match tier {
        Tier::Store if ctx.cc.spec.store.on_postgres() => {
            vars.push(env("IO360_STORE_ENGINE", "postgres"));
            vars.push(env(
                "IO360_DATABASE_URL_FILE",
                format!("{DATABASE_URL_DIR}/url"),
            ));
        }
        Tier::Store | Tier::Logger => vars.push(env("IO360_DATA_DIR", "/data")),
        Tier::Notify => {
            let n = spec
                .notifications
                .as_ref()
                .expect("notify runs only with spec.notifications");
            vars.push(env("IO360_DATA_DIR", "/data"));
            vars.push(env("IO360_STORE_URL", ctx.url(Tier::Store)));
            if let Some(smtp) = &n.smtp {
                vars.push(env("IO360_SMTP_URL", smtp.url()));
                if smtp.credentials_secret.is_some() {
                    vars.push(env(
                        "IO360_SMTP_USERNAME_FILE",
                        format!("{SMTP_CREDENTIALS_DIR}/username"),
                    ));
                    vars.push(env(
                        "IO360_SMTP_PASSWORD_FILE",
                        format!("{SMTP_CREDENTIALS_DIR}/password"),
                    ));
                }
            }
            if let Some(from) = &n.from {
                vars.push(env("IO360_NOTIFY_FROM", from.clone()));
            }
            if let Some(url) = &n.public_url {
                vars.push(env("IO360_PUBLIC_URL", url.clone()));
            }
            if !n.moderators.is_empty() {
                vars.push(env("IO360_NOTIFY_MODERATORS", n.moderators.join(",")));
            }
            vars.push(env(
                "IO360_NOTIFY_DIGEST_SECS",
                n.digest_seconds.to_string(),
            ));
            if n.daily_summary {
                vars.push(env("IO360_NOTIFY_DAILY_SUMMARY", "true"));
            }
            if n.phrases.is_some() {
                vars.push(env(
                    "IO360_NOTIFY_STRINGS_FILE",
                    format!("{PHRASES_DIR}/phrases.json"),
                ));
            }
            if let Some(hooks) = &n.webhooks {
                vars.push(env("IO360_WEBHOOKS", "true"));
                if hooks.allow_private_addresses {
                    vars.push(env("IO360_WEBHOOK_ALLOW_PRIVATE", "true"));
                }
                for (name, value) in [
                    ("IO360_WEBHOOK_MAX_ENDPOINTS", hooks.max_endpoints),
                    ("IO360_WEBHOOK_MAX_ATTEMPTS", hooks.max_attempts),
                    ("IO360_WEBHOOK_TIMEOUT_SECS", hooks.timeout_seconds),
                ] {
                    if let Some(v) = value {
                        vars.push(env(name, v.to_string()));
                    }
                }
            }
        }
        Tier::Logic | Tier::Sync => vars.push(env("IO360_STORE_URL", ctx.url(Tier::Store))),
        Tier::Longpoll => {
            vars.push(env("IO360_SYNC_URL", ctx.url(Tier::Sync)));
            // Where it learns of a suspension, to tell every held poll and stream at once.
            vars.push(env("IO360_LOGIC_URL", ctx.url(Tier::Logic)));
        }
        Tier::Frontend => {
            // The frontend passes `/api` to logic (always: logic answers only the frontend)
            // and, without an Ingress, `/v1` to longpoll, so live updates work through it too.
            vars.push(env("IO360_LOGIC_URL", ctx.url(Tier::Logic)));
            vars.push(env("IO360_LONGPOLL_URL", ctx.url(Tier::Longpoll)));
            // Behind a Service, and an Ingress or load balancer, one peer address carries
            // many readers: a cap per address would throttle the whole site at its busiest.
            // Per-client limits belong to the edge in front; logic still rate-limits writes.
            vars.push(env("IO360_MAX_CONNECTIONS_PER_CLIENT", "0"));
            vars.push(env("IO360_MAX_REQUESTS_PER_CLIENT", "0"));
            if spec.site.is_some() {
                vars.push(env("IO360_SITE_DIR", "/site"));
            }
            if !spec.network.trusted_proxies.is_empty() {
                vars.push(env(
                    "IO360_TRUSTED_PROXIES",
                    spec.network.trusted_proxies.join(","),
                ));
            }
        }
    }
    if tier == Tier::Logic {
        vars.push(env(
            "IO360_ADMIN_TOKEN_FILE",
            format!("{ADMIN_TOKEN_DIR}/token"),
        ));
        // Logic answers only the frontend, which replaces a client's `X-Forwarded-For` with
        // the address it saw (or the one its trusted proxies report).
        vars.push(env("IO360_TRUSTED_PROXY_HEADER", "x-forwarded-for"));
        vars.push(env("IO360_IMPORT_SCRATCH_DIR", IMPORT_SCRATCH_DIR));
    }
    let (token, keys) = tier_key_items(tier);
    if token {
        vars.push(env(
            "IO360_TIER_TOKEN_FILE",
            format!("{TIER_KEYS_DIR}/token"),
        ));
    }
    if keys {
        vars.push(env("IO360_TIER_KEYS_FILE", format!("{TIER_KEYS_DIR}/keys")));
    }
    if matches!(tier, Tier::Logic | Tier::Frontend) {
        vars.push(env("IO360_CONTROL_CONFIGMAP", names::control(&ctx.name)));
        vars.push(EnvVar {
            name: "IO360_CONTROL_NAMESPACE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if tier == Tier::Logic {
        vars.push(env("IO360_MODERATION", spec.moderation.as_str()));
        // Only with email on, so that turning it on is what rolls logic, and nothing else.
        if let Some(n) = &spec.notifications {
            vars.push(env("IO360_NOTIFY_URL", ctx.url(Tier::Notify)));
            if let Some(url) = &n.public_url {
                vars.push(env("IO360_PUBLIC_URL", url.clone()));
            }
            if n.smtp.is_none() {
                // Webhooks alone: the widget offers no "Email me".
                vars.push(env("IO360_NOTIFY_EMAIL", "false"));
            }
        }
    }
    if matches!(tier, Tier::Logic | Tier::Longpoll) && !spec.allowed_origins.is_empty() {
        vars.push(env("IO360_ALLOWED_ORIGINS", spec.allowed_origins.join(",")));
    }
    vars
}

/// Requests and limits when the spec gives none. No CPU limit: a CFS quota throttles a tier in
/// the middle of a burst, which is when it needs the CPU; the request reserves its share and
/// drives the autoscaler. No ephemeral storage: the root filesystem is read-only and data lives
/// on volumes, so only the logs count, which the kubelet rotates; and a request would leave
/// pods unschedulable on nodes that report no ephemeral storage (virtual kubelets).
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("512Mi".into()),
        )])),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Period of the startup probe, in seconds.
const STARTUP_PERIOD: i32 = 5;
/// Startup budget of a tier without data of its own (frontend loads the site into memory).
const STATELESS_STARTUP_SECONDS: i32 = 120;

/// How long a tier with data may take to open it: `startupSeconds`, or 120 s plus 30 s per
/// GiB of its volume, at most an hour.
pub fn startup_budget(spec: &StatefulTierSpec) -> i32 {
    if let Some(s) = spec.startup_seconds {
        return s;
    }
    let gib = quantity_gib(&spec.storage.size).unwrap_or(1.0);
    (120.0 + 30.0 * gib).min(3600.0).ceil() as i32
}

/// A storage quantity (`10Gi`, `500M`, `1.5Ti`) in GiB.
fn quantity_gib(q: &str) -> Option<f64> {
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let bytes = n * match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    Some(bytes / 1024f64.powi(3))
}

/// The three probes of a tier. The startup probe gives the tier `budget` seconds to start;
/// liveness and readiness begin only after it passes, so a tier still opening its data is
/// never restarted for being slow.
fn probes(budget: i32) -> (Probe, Probe, Probe) {
    let startup = probe(
        "/healthz",
        STARTUP_PERIOD,
        (budget + STARTUP_PERIOD - 1) / STARTUP_PERIOD,
    );
    (startup, probe("/healthz", 10, 3), probe("/readyz", 5, 2))
}

/// Where a pod of a tier runs.
struct Placement<'a> {
    resources: Option<&'a ResourceRequirements>,
    node_selector: Option<&'a BTreeMap<String, String>>,
    tolerations: Option<&'a Vec<k8s_openapi::api::core::v1::Toleration>>,
    affinity: Option<Affinity>,
    spread: Option<Vec<TopologySpreadConstraint>>,
    startup_seconds: i32,
}

impl<'a> Placement<'a> {
    fn of_tier(ctx: &Ctx, tier: Tier, spec: &'a TierSpec) -> Self {
        let spread = spec.topology_spread_constraints.clone().or_else(|| {
            Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(&ctx.name, tier)),
                    ..Default::default()
                }),
                ..Default::default()
            }])
        });
        // When unset, replicas also prefer different nodes by pod anti-affinity, which
        // schedulers and linters that do not read spread constraints understand.
        let affinity = spec.affinity.clone().unwrap_or_else(|| Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            topology_key: "kubernetes.io/hostname".into(),
                            label_selector: Some(LabelSelector {
                                match_labels: Some(selector_labels(&ctx.name, tier)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        Self {
            resources: spec.resources.as_ref(),
            node_selector: spec.node_selector.as_ref(),
            tolerations: spec.tolerations.as_ref(),
            affinity: Some(affinity),
            spread,
            // A store on PostgreSQL reaches its database and applies migrations at start.
            startup_seconds: match tier {
                Tier::Store => ctx
                    .cc
                    .spec
                    .store
                    .tier
                    .startup_seconds
                    .unwrap_or(STATELESS_STARTUP_SECONDS),
                _ => STATELESS_STARTUP_SECONDS,
            },
        }
    }

    fn of_stateful(spec: &'a StatefulTierSpec) -> Self {
        Self {
            resources: spec.resources.as_ref(),
            node_selector: spec.node_selector.as_ref(),
            tolerations: spec.tolerations.as_ref(),
            affinity: spec.affinity.clone(),
            spread: None,
            startup_seconds: startup_budget(spec),
        }
    }
}

/// 64-bit FNV-1a: small, stable across Rust releases (unlike `DefaultHasher`), and enough to
/// tell one configuration from another.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn pod_template(
    ctx: &Ctx,
    tier: Tier,
    place: Placement,
    mut volumes: Vec<(Volume, VolumeMount)>,
) -> PodTemplateSpec {
    let spec = &ctx.cc.spec;
    let shutdown = &spec.shutdown;
    let env = tier_env(ctx, tier);
    let (startup, liveness, readiness) = probes(place.startup_seconds);
    // The data volume of a Fjall store comes from the StatefulSet's claim template.
    let claim = match tier {
        Tier::Logger => Some(names::logger_data(&ctx.name)),
        Tier::Notify => Some(names::notify_data(&ctx.name)),
        _ => None,
    };
    if let Some(claim_name) = claim {
        volumes.push((
            Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name,
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
        ));
    }
    if tier == Tier::Notify
        && let Some(login) = spec
            .notifications
            .as_ref()
            .and_then(|n| n.smtp.as_ref())
            .and_then(|smtp| smtp.credentials_secret.as_ref())
    {
        // The mail server's login, as `username` and `password`.
        volumes.push(secret_volume(
            "smtp-credentials",
            &login.name,
            &[("username", "username"), ("password", "password")],
            SMTP_CREDENTIALS_DIR,
        ));
    }
    if tier == Tier::Notify
        && let Some(phrases) = spec.notifications.as_ref().and_then(|n| n.phrases.as_ref())
    {
        volumes.push((
            Volume {
                name: "phrases".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: phrases.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: phrases.key.clone(),
                        path: "phrases.json".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeMount {
                name: "phrases".into(),
                mount_path: PHRASES_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ));
    }
    if tier == Tier::Logic {
        // An import's on-disk sort: about the size of the upload at most, gone with the pod.
        volumes.push((
            Volume {
                name: "import-scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            VolumeMount {
                name: "import-scratch".into(),
                mount_path: IMPORT_SCRATCH_DIR.into(),
                ..Default::default()
            },
        ));
        let secret = &spec.admin_token_secret;
        volumes.push(secret_volume(
            "admin-token",
            &secret.name,
            &[(&secret.key, "token")],
            ADMIN_TOKEN_DIR,
        ));
    }
    volumes.push(tier_keys_volume(ctx, tier));
    let (vols, mut mounts): (Vec<Volume>, Vec<VolumeMount>) = volumes.into_iter().unzip();
    if tier == Tier::Store && !ctx.cc.spec.store.on_postgres() {
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        });
    }
    let container = Container {
        name: "io360".into(),
        image: Some(match &spec.image.digest {
            Some(digest) => format!("{}:{}@{digest}", spec.image.repository, spec.image.tag),
            None => format!("{}:{}", spec.image.repository, spec.image.tag),
        }),
        image_pull_policy: Some(spec.image.pull_policy.as_str().into()),
        command: Some(vec!["io360".into()]),
        args: Some(vec!["serve".into(), tier.as_str().into()]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        startup_probe: Some(startup),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        // Keeps answering while the endpoints drop this pod; SIGTERM comes after.
        lifecycle: (shutdown.drain_seconds > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: shutdown.drain_seconds,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(place.resources.cloned().unwrap_or_else(default_resources)),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The hash covers what a tier reads at start and would not see change otherwise: the
    // admin token's revision only for logic, the one tier that reads the token.
    let mut hashed = serde_json::json!({
        "env": container.env,
        "volumes": vols,
        "image": container.image,
        "secret": (tier == Tier::Logic).then_some(&spec.admin_token_secret),
    });
    // A store on PostgreSQL rolls when the database URL's revision changes (only then, so
    // that no other pod's hash moved when this was added).
    if let (Tier::Store, Some(pg)) = (tier, &spec.store.postgres) {
        hashed["database"] = serde_json::json!(pg.url_secret);
        if let Some(ca) = &pg.ca_secret {
            hashed["databaseCa"] = serde_json::json!(ca);
        }
    }
    if let (Tier::Notify, Some(n)) = (tier, &spec.notifications) {
        hashed["smtp"] = serde_json::json!(n.smtp.as_ref().map(|s| &s.credentials_secret));
        if let Some(phrases) = &n.phrases {
            hashed["phrases"] = serde_json::json!(phrases);
        }
    }
    let hash = format!("{:016x}", fnv1a(hashed.to_string().as_bytes()));
    let pull_secrets =
        (!spec.image.pull_secrets.is_empty()).then(|| spec.image.pull_secrets.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some({
                let mut l = selector_labels(&ctx.name, tier);
                l.insert(MANAGED_BY.into(), MANAGER.into());
                l
            }),
            annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), hash)])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            service_account_name: Some(names::tiers_account(&ctx.name)),
            // Only the tiers that watch the control ConfigMap get an API token.
            automount_service_account_token: Some(matches!(tier, Tier::Logic | Tier::Frontend)),
            image_pull_secrets: pull_secrets,
            node_selector: place.node_selector.cloned(),
            tolerations: place.tolerations.cloned(),
            affinity: place.affinity,
            topology_spread_constraints: place.spread,
            volumes: (!vols.is_empty()).then_some(vols),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(shutdown.termination_grace_period_seconds),
            ..Default::default()
        }),
    }
}

/// The tier's own items of the tier keys Secret, and nothing else: another tier's
/// credential never reaches this pod. Mounted as a directory (not `subPath`), so kubelet's
/// updates during a rotation reach the running tier, which re-reads the files.
fn tier_keys_volume(ctx: &Ctx, tier: Tier) -> (Volume, VolumeMount) {
    let (token, keys) = tier_key_items(tier);
    let mut items = Vec::new();
    if token {
        items.push(KeyToPath {
            key: crate::tierkeys::token_item(tier.as_str()),
            path: "token".into(),
            ..Default::default()
        });
    }
    if keys {
        items.push(KeyToPath {
            key: crate::tierkeys::KEYS_ITEM.into(),
            path: "keys".into(),
            ..Default::default()
        });
    }
    (
        Volume {
            name: "tier-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(crate::tierkeys::secret_name(&ctx.name)),
                items: Some(items),
                // Readable by the pod's group (fsGroup 65532), as the admin token is.
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "tier-keys".into(),
            mount_path: TIER_KEYS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

fn site_volume(ctx: &Ctx) -> Vec<(Volume, VolumeMount)> {
    let Some(site) = &ctx.cc.spec.site else {
        return Vec::new();
    };
    let mut volume = Volume {
        name: "site".into(),
        ..Default::default()
    };
    if let Some(cm) = &site.config_map {
        volume.config_map = Some(ConfigMapVolumeSource {
            name: cm.name.clone(),
            ..Default::default()
        });
    } else if let Some(pvc) = &site.persistent_volume_claim {
        volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
            claim_name: pvc.claim_name.clone(),
            read_only: Some(true),
        });
    }
    vec![(
        volume,
        VolumeMount {
            name: "site".into(),
            mount_path: "/site".into(),
            read_only: Some(true),
            ..Default::default()
        },
    )]
}

/// A store on PostgreSQL, as the replicated tier it then is; `None` for a Fjall store.
pub fn store_as_tier(store: &StoreSpec) -> Option<TierSpec> {
    store.on_postgres().then(|| TierSpec {
        replicas: store.replicas,
        autoscaling: store.autoscaling.clone(),
        resources: store.tier.resources.clone(),
        node_selector: store.tier.node_selector.clone(),
        tolerations: store.tier.tolerations.clone(),
        affinity: store.tier.affinity.clone(),
        topology_spread_constraints: None,
        pod_disruption_budget: store.pod_disruption_budget.clone(),
    })
}

/// The Secret key holding the database URL, as `url` in [`DATABASE_URL_DIR`], and with a CA,
/// that as `ca.crt` beside it (one projected volume, so the directory holds both).
fn database_url_volume(ctx: &Ctx) -> Vec<(Volume, VolumeMount)> {
    let Some(pg) = &ctx.cc.spec.store.postgres else {
        return Vec::new();
    };
    let url = (pg.url_secret.key.as_str(), "url");
    // Without a CA, the plain Secret volume it always was: no store pod rolls for this.
    let Some(ca) = &pg.ca_secret else {
        return vec![secret_volume(
            "database-url",
            &pg.url_secret.name,
            &[url],
            DATABASE_URL_DIR,
        )];
    };
    let source = |secret: &crate::crd::SecretKeyRef, path: &str| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.name.clone(),
            items: Some(vec![KeyToPath {
                key: secret.key.clone(),
                path: path.into(),
                ..Default::default()
            }]),
            optional: Some(false),
        }),
        ..Default::default()
    };
    vec![(
        Volume {
            name: "database-url".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![source(&pg.url_secret, "url"), source(ca, "ca.crt")]),
                default_mode: Some(0o440),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "database-url".into(),
            mount_path: DATABASE_URL_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )]
}

fn tier_deployment(ctx: &Ctx, tier: Tier, spec: &TierSpec, replicas: Option<i32>) -> Deployment {
    let volumes = match tier {
        Tier::Frontend => site_volume(ctx),
        Tier::Store => database_url_volume(ctx),
        _ => Vec::new(),
    };
    Deployment {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(&ctx.name, tier)),
                ..Default::default()
            },
            template: pod_template(ctx, tier, Placement::of_tier(ctx, tier, spec), volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Keys of Secret `secret` as files (`(key, path)`), read-only by the pod's group, in `dir`.
fn secret_volume(
    name: &str,
    secret: &str,
    items: &[(&str, &str)],
    dir: &str,
) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(
                    items
                        .iter()
                        .map(|(key, path)| KeyToPath {
                            key: (*key).into(),
                            path: (*path).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// A tier of one writer on its own volume (logger, notify): one replica, replaced by
/// stopping the old pod first.
fn single_writer_deployment(ctx: &Ctx, tier: Tier, spec: &StatefulTierSpec) -> Deployment {
    Deployment {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One writer on a ReadWriteOnce volume: the old pod must stop first.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&ctx.name, tier)),
                ..Default::default()
            },
            template: pod_template(ctx, tier, Placement::of_stateful(spec), Vec::new()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn store_statefulset(ctx: &Ctx) -> StatefulSet {
    let tier = Tier::Store;
    let store = &ctx.cc.spec.store.tier;
    StatefulSet {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(StatefulSetSpec {
            // The storage engine is single-writer: exactly one replica, always.
            replicas: Some(1),
            service_name: Some(names::tier(&ctx.name, tier)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&ctx.name, tier)),
                ..Default::default()
            },
            template: pod_template(ctx, tier, Placement::of_stateful(store), Vec::new()),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(selector_labels(&ctx.name, tier)),
                    ..Default::default()
                },
                spec: Some(claim_spec(&store.storage)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What `tier` scales on under `auto`: the spec's choice, or the tier's default (see
/// `AutoscalingSpec.metric`).
pub fn scaling_metric(tier: Tier, auto: &AutoscalingSpec) -> ScalingMetric {
    auto.metric.unwrap_or(match tier {
        Tier::Longpoll => ScalingMetric::HeldConnections,
        _ => ScalingMetric::Cpu,
    })
}

/// The autoscaler's metric for `tier`: CPU utilization, or a per-pod average of an io360
/// gauge served by a custom metrics adapter under the Prometheus series' name.
fn primary_metric(tier: Tier, auto: &AutoscalingSpec) -> MetricSpec {
    let pods = |name: &str, average: i32| MetricSpec {
        type_: "Pods".into(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: name.into(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".into(),
                average_value: Some(Quantity(average.to_string())),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let metric = scaling_metric(tier, auto);
    match metric {
        ScalingMetric::Cpu => MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(auto.target_cpu_utilization),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        ScalingMetric::HeldConnections => pods(
            metric.metric_name(),
            auto.target_held_connections
                .unwrap_or(DEFAULT_TARGET_HELD_CONNECTIONS),
        ),
        ScalingMetric::RequestsInFlight => pods(
            metric.metric_name(),
            auto.target_requests_in_flight
                .unwrap_or(DEFAULT_TARGET_REQUESTS_IN_FLIGHT),
        ),
    }
}

fn hpa(ctx: &Ctx, tier: Tier, spec: &TierSpec) -> Option<HorizontalPodAutoscaler> {
    let auto = spec.autoscaling.as_ref()?;
    let mut metrics = vec![primary_metric(tier, auto)];
    metrics.extend(auto.metrics.iter().cloned());
    Some(HorizontalPodAutoscaler {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: names::tier(&ctx.name, tier),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(metrics),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn pdb(ctx: &Ctx, tier: Tier, spec: Option<&PdbSpec>) -> Option<PodDisruptionBudget> {
    let (min, max) = match spec {
        Some(p) if !p.enabled => return None,
        Some(p) if p.min_available.is_some() => (p.min_available, None),
        Some(p) => (None, Some(p.max_unavailable.unwrap_or(1))),
        None => (None, Some(1)),
    };
    Some(PodDisruptionBudget {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&ctx.name, tier)),
                ..Default::default()
            }),
            min_available: min.map(IntOrString::Int),
            max_unavailable: max.map(IntOrString::Int),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Who of the cluster's `tiers` may call a tier's API port. `None`: anyone (the tiers an
/// Ingress routes to).
fn callers(tier: Tier, tiers: &[Tier]) -> Option<Vec<Tier>> {
    let wanted: &[Tier] = match tier {
        Tier::Frontend | Tier::Logic | Tier::Longpoll => return None,
        // Notify follows the change feed.
        Tier::Store => &[Tier::Logic, Tier::Sync, Tier::Notify],
        Tier::Sync => &[Tier::Longpoll],
        // Every tier sends audit events.
        Tier::Logger => &Tier::EVERY,
        // Logic hands it subscriptions and moderators' clicks.
        Tier::Notify => &[Tier::Logic],
    };
    Some(
        wanted
            .iter()
            .copied()
            .filter(|t| tiers.contains(t))
            .collect(),
    )
}

/// The tiers of the cluster's `tiers` whose API a tier calls.
fn callees(tier: Tier, tiers: &[Tier]) -> Vec<Tier> {
    tiers
        .iter()
        .copied()
        .filter(|t| *t != tier && callers(*t, tiers).is_some_and(|c| c.contains(&tier)))
        .chain(match tier {
            Tier::Frontend => vec![Tier::Logic, Tier::Longpoll],
            // The comments' status, for the suspension events it sends to open pages.
            Tier::Longpoll => vec![Tier::Logic],
            _ => Vec::new(),
        })
        .collect()
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn pods_of(ctx: &Ctx, tier: Tier) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&ctx.name, tier)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tier's NetworkPolicy, ingress and egress. In: its API port from the tiers that call it
/// (from anywhere for the three an Ingress routes to), its metrics port from the scrapers
/// `spec.network.metricsScrapers` names (anyone when none are named). Out: DNS, the API
/// ports of the tiers it calls and, for frontend and logic, which watch their control
/// ConfigMap, the API server (`spec.network.apiServerCidrs`, or any address on TCP 443 and
/// 6443 when unset).
fn network_policy(ctx: &Ctx, tier: Tier) -> NetworkPolicy {
    let network = &ctx.cc.spec.network;
    let tiers = Tier::of(ctx.cc);
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: callers(tier, &tiers).map(|from| from.iter().map(|t| pods_of(ctx, *t)).collect()),
        ports: Some(vec![tcp(HTTP_PORT)]),
    }];
    ingress.push(NetworkPolicyIngressRule {
        from: (!network.metrics_scrapers.is_empty()).then(|| network.metrics_scrapers.clone()),
        ports: Some(vec![tcp(METRICS_PORT)]),
    });
    let mut egress = vec![NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            tcp(53),
        ]),
    }];
    let callees = callees(tier, &tiers);
    if !callees.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(callees.iter().map(|t| pods_of(ctx, *t)).collect()),
            ports: Some(vec![tcp(HTTP_PORT)]),
        });
    }
    if let (Tier::Store, Some(pg)) = (tier, &ctx.cc.spec.store.postgres) {
        egress.push(NetworkPolicyEgressRule {
            to: (!pg.peers.is_empty()).then(|| pg.peers.clone()),
            ports: Some(vec![tcp(pg.port)]),
        });
    }
    if let (Tier::Notify, Some(n)) = (tier, &ctx.cc.spec.notifications) {
        if let Some(smtp) = &n.smtp {
            egress.push(NetworkPolicyEgressRule {
                to: (!smtp.peers.is_empty()).then(|| smtp.peers.clone()),
                ports: Some(vec![tcp(smtp.port)]),
            });
        }
        if let Some(hooks) = &n.webhooks {
            egress.push(NetworkPolicyEgressRule {
                to: Some(webhook_receivers(hooks)),
                ports: Some(hooks.ports.iter().map(|p| tcp(*p)).collect()),
            });
        }
    }
    if matches!(tier, Tier::Frontend | Tier::Logic) {
        egress.push(NetworkPolicyEgressRule {
            to: (!network.api_server_cidrs.is_empty()).then(|| {
                network
                    .api_server_cidrs
                    .iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.clone(),
                            except: None,
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            ports: Some(vec![tcp(443), tcp(6443)]),
        });
    }
    NetworkPolicy {
        metadata: ctx.meta(names::tier(&ctx.name, tier), Some(tier)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&ctx.name, tier)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// Ranges a webhook may not reach unless private addresses are allowed: this network, private,
/// shared (carrier-grade NAT), loopback and link-local (the cloud's metadata address).
const PRIVATE_V4: [&str; 7] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];
/// The same for IPv6: loopback, unique local and link-local.
const PRIVATE_V6: [&str; 3] = ["::1/128", "fc00::/7", "fe80::/10"];

/// Where notify may deliver webhooks: the spec's peers, or every public address (every address
/// with private addresses allowed). Notify refuses private receivers itself too; this is the
/// network's word on it.
fn webhook_receivers(hooks: &crate::crd::WebhooksSpec) -> Vec<NetworkPolicyPeer> {
    if !hooks.peers.is_empty() {
        return hooks.peers.clone();
    }
    let block = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    };
    if hooks.allow_private_addresses {
        vec![block("0.0.0.0/0", &[]), block("::/0", &[])]
    } else {
        vec![block("0.0.0.0/0", &PRIVATE_V4), block("::/0", &PRIVATE_V6)]
    }
}

fn ingress(ctx: &Ctx) -> Option<Ingress> {
    let spec = ctx.cc.spec.ingress.as_ref()?;
    let path = |p: &str, tier: Tier| HTTPIngressPath {
        path: Some(p.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: names::tier(&ctx.name, tier),
                port: Some(ServiceBackendPort {
                    name: Some("http".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        },
    };
    Some(Ingress {
        metadata: ctx.meta(ctx.name.clone(), None),
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![
                        // `/api` goes through the frontend: logic answers only it.
                        path("/api", Tier::Frontend),
                        path("/v1", Tier::Longpoll),
                        path("/", Tier::Frontend),
                    ],
                }),
            }]),
            tls: spec.tls.as_ref().map(|t| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(t.secret_name.clone()),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
