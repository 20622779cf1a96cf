//! The `CommentCluster` custom resource: what a platform engineer writes, and the status the
//! operator reports back. Every doc comment on a field here becomes `kubectl explain` text.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::MetricSpec;
use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An io360 comment system on Kubernetes: every tier (frontend, logic, store, sync, longpoll,
/// logger, and notify when email is on) deployed and scaled on its own, with live comments
/// that can be suspended by hand or automatically under overload while pages keep being served.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "io360.dev",
    version = "v1alpha1",
    kind = "CommentCluster",
    namespaced,
    shortname = "cc",
    status = "CommentClusterStatus",
    derive = "PartialEq",
    doc = "An io360 comment system: every tier deployed and scaled on its own, with live comments that can be suspended by hand or automatically under overload.",
    printcolumn = r#"{"name":"Ready","type":"string","description":"Whether every tier has its desired replicas ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Comments","type":"string","description":"Live or Suspended","jsonPath":".status.comments"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why comments are suspended: Manual or Overload","jsonPath":".status.suspension.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 51").message("metadata.name must be at most 51 characters, so that `<name>-logger-data` is a valid name"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]')").message("metadata.name must start with a lowercase letter: Service names are derived from it")
)]
#[x_kube(validation = Rule::new("!self.autoDegrade.enabled || has(self.frontend.autoscaling)").message("automatic degrade reads the frontend autoscaler: set spec.frontend.autoscaling"))]
#[x_kube(validation = Rule::new("!self.autoDegrade.enabled || !has(self.frontend.autoscaling) || !has(self.frontend.autoscaling.metric) || self.frontend.autoscaling.metric == 'CPU'").message("automatic degrade reads the frontend's CPU utilization: with autoDegrade.enabled, spec.frontend.autoscaling.metric must be CPU"))]
#[x_kube(validation = Rule::new("(!has(self.frontend.autoscaling) || ((!has(self.frontend.autoscaling.metric) || self.frontend.autoscaling.metric != 'HeldConnections') && !has(self.frontend.autoscaling.targetHeldConnections))) && (!has(self.logic.autoscaling) || ((!has(self.logic.autoscaling.metric) || self.logic.autoscaling.metric != 'HeldConnections') && !has(self.logic.autoscaling.targetHeldConnections))) && (!has(self.sync.autoscaling) || ((!has(self.sync.autoscaling.metric) || self.sync.autoscaling.metric != 'HeldConnections') && !has(self.sync.autoscaling.targetHeldConnections)))").message("HeldConnections and targetHeldConnections are longpoll's alone: only longpoll pods report io360_longpoll_held_connections"))]
#[serde(rename_all = "camelCase")]
pub struct CommentClusterSpec {
    /// The io360 container image every tier runs (`io360 serve <tier>`).
    #[serde(default)]
    pub image: ImageSpec,

    /// The frontend tier: serves the site's pages and assets, with a read-only snapshot of
    /// each page's comments. Scales with page traffic; automatic degrade watches its HPA.
    #[serde(default)]
    pub frontend: TierSpec,

    /// The logic tier: the public comment API (post, list, votes, moderation).
    #[serde(default)]
    pub logic: TierSpec,

    /// The sync tier: tails the store's change feed and feeds every longpoll instance.
    #[serde(default)]
    pub sync: TierSpec,

    /// The longpoll tier: holds browsers' long-poll and SSE requests. Scaled to zero while
    /// comments are suspended.
    #[serde(default)]
    pub longpoll: TierSpec,

    /// The store tier: durable comments. By default on its own PersistentVolume (engine
    /// `Fjall`, one replica: the embedded engine is single-writer); with engine `Postgres`,
    /// on a PostgreSQL database, with several replicas.
    #[serde(default)]
    pub store: StoreSpec,

    /// The logger tier: the audit and event log, on its own PersistentVolume. Always one
    /// replica.
    #[serde(default)]
    pub logger: StatefulTierSpec,

    /// Where the site's static pages come from. Mounted read-only at /site in frontend pods.
    /// When unset, frontend serves the small demo site built into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteSource>,

    /// Origins (scheme://host[:port], no path) allowed to embed comments (CORS). Empty means
    /// only the site's own origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 262), regex(pattern = r"^https?://[^/?#]+$"))
    )]
    pub allowed_origins: Vec<String>,

    /// Which new comments wait for a moderator: `none`, `all`, or `first-time` (only from
    /// authors with no approved comment yet). Default `first-time`.
    ///
    /// Every value reads the same to every YAML reader, so it can be written unquoted. The
    /// value once called `off` is `none` now: kubectl and helm read YAML 1.1, where an
    /// unquoted `off` is the boolean false, not a mode.
    #[serde(default)]
    pub moderation: ModerationMode,

    /// The Secret holding the admin bearer token for the moderation API and /admin.
    pub admin_token_secret: SecretKeyRef,

    /// An optional Ingress routing `/` and `/api` to frontend (which passes `/api` on to
    /// logic) and `/v1` to longpoll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Suspend live comments by hand: longpoll scales to zero, logic refuses writes with 503,
    /// frontend keeps serving every page with the last comment snapshot. Always wins over
    /// automatic degrade.
    #[serde(default)]
    pub comments_suspended: bool,

    /// Suspend live comments automatically while frontend is overloaded, and resume when the
    /// load has stayed low for a cooldown.
    #[serde(default)]
    pub auto_degrade: AutoDegradeSpec,

    /// How the tiers' pods stop: how long a stopping pod keeps answering while its Service
    /// stops sending it requests, and how long Kubernetes waits before killing it.
    #[serde(default)]
    pub shutdown: ShutdownSpec,

    /// The tiers' NetworkPolicies: who may scrape metrics, and where the API server is.
    #[serde(default)]
    pub network: NetworkSpec,

    /// The keys the tiers prove who they are to each other with. The operator keeps them in
    /// the Secret `<name>-tier-keys` (never edit it by hand) and rotates them without
    /// downtime. To rotate at once (a key may have leaked), change the annotation
    /// `io360.dev/rotate-tier-keys` on this CommentCluster to any new value.
    #[serde(default)]
    pub tier_keys: TierKeysSpec,

    /// Email and webhooks: readers told of replies they subscribed to, moderators of comments
    /// held for them, and the site's own URLs of events they chose. Unset: no notify tier, and
    /// the comment API refuses subscriptions with `notifications-off`. Set: the notify tier, a
    /// Deployment of one replica on its own PersistentVolume (`<name>-notify-data`, holding
    /// the outbox, the subscriptions, the webhooks and the key links are signed with), which
    /// logic hands subscriptions and the admin API's webhook calls to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationsSpec>,
}

/// Email to readers and moderators, and webhooks, sent by the notify tier from a durable
/// outbox: a post never waits for a mail server or a receiver, and one that is down delays
/// what is sent, it does not drop it. Set `smtp` for email, `webhooks` for webhooks, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.smtp) || has(self.webhooks)").message("set smtp (email), webhooks, or both"))]
#[x_kube(validation = Rule::new("!has(self.smtp) || (has(self.from) && has(self.publicUrl))").message("email needs from (the sender) and publicUrl (where links in messages point)"))]
#[x_kube(validation = Rule::new("!self.dailySummary || (has(self.moderators) && size(self.moderators) > 0 && has(self.smtp))").message("dailySummary is emailed to moderators: set smtp and moderators"))]
pub struct NotificationsSpec {
    /// The mail server messages are handed to. Unset: no email (webhooks alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,

    /// The sender of every message, e.g. `Comments <comments@example.org>`. Needed with smtp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320), regex(pattern = r"^[^\r\n]*@[^\r\n]*$"))]
    pub from: Option<String>,

    /// The site's public base URL, e.g. `https://example.org`: the confirm, unsubscribe and
    /// moderation links in messages point under it. Needed with smtp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s?#]+$"))]
    pub public_url: Option<String>,

    /// Addresses emailed at once when a comment is held for moderation, with one-time approve
    /// and delete links that expire. Empty: no moderator email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 254), regex(pattern = r"^[^\s@,]+@[^\s@,]+$"))
    )]
    pub moderators: Vec<String>,

    /// Seconds replies wait to be batched into one message per reader and subscription, so a
    /// busy thread sends one digest, not fifty emails. Default 300.
    #[serde(default = "default_digest_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub digest_seconds: i64,

    /// Also email each moderator once a day the comments still waiting for them (none when
    /// nothing waits). Needs smtp and moderators.
    #[serde(default)]
    pub daily_summary: bool,

    /// A ConfigMap key holding the phrases messages are written in, a JSON object over the
    /// English defaults (e.g. `{"lang": "fr", "stop": "Ne plus recevoir ces messages"}`; the
    /// keys are in docs/CONTRACTS.md). Mounted into notify pods; change `revision` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrases: Option<PhrasesRef>,

    /// Webhooks: signed JSON POSTs of the events a site registered URLs for (through the
    /// admin API or the console), retried with backoff. Unset: notify's NetworkPolicy lets it
    /// reach no receiver, so registered webhooks are not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksSpec>,

    /// The notify pod's storage, resources and placement.
    #[serde(flatten)]
    pub tier: StatefulTierSpec,
}

fn default_digest_seconds() -> i64 {
    300
}

/// A ConfigMap key with a site's phrases for messages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhrasesRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key inside the ConfigMap. Default `phrases.json`.
    #[serde(default = "default_phrases_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// Anything that changes when the phrases do: part of notify's config hash, so notify
    /// restarts with the new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revision: Option<String>,
}

fn default_phrases_key() -> String {
    "phrases.json".into()
}

/// Where notify may deliver webhooks, and their limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksSpec {
    /// Allow receivers on loopback, private and link-local addresses (in-cluster services,
    /// the cloud's metadata address). Off by default: a webhook URL is chosen by whoever
    /// holds the admin token, and must not reach inside the network.
    #[serde(default)]
    pub allow_private_addresses: bool,

    /// The receivers' ports, which notify's NetworkPolicy lets it reach. Default 443 and 80.
    #[serde(default = "default_webhook_ports")]
    #[schemars(length(min = 1, max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,

    /// Where receivers are, for notify's NetworkPolicy egress. Empty: any public address
    /// (every address but the private, loopback, link-local and shared ranges, unless
    /// allowPrivateAddresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<NetworkPolicyPeer>,

    /// The most webhooks a site may register. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_endpoints: Option<i32>,

    /// Attempts at one delivery before it is given up (and logged as failed). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<i32>,

    /// Seconds a receiver has to answer one attempt. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,
}

fn default_webhook_ports() -> Vec<i32> {
    vec![443, 80]
}

/// The mail server notify hands messages to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    /// Host name or address of the mail server.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9.:\[\]-]+$"))]
    pub host: String,

    /// The mail server's port, which notify's NetworkPolicy lets it reach. Default 587
    /// (submission, with STARTTLS).
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// How the connection is secured: `StartTLS` (default: upgrade to TLS, or fail),
    /// `StartTLSIfOffered` (upgrade when the server offers it), `ImplicitTLS` (TLS from the
    /// first byte, usually port 465) or `Plain` (no TLS: a relay on the same network only).
    #[serde(default)]
    pub tls: SmtpTls,

    /// A Secret with the user name and password to log in with, in the keys `username` and
    /// `password` (a `kubernetes.io/basic-auth` Secret). Mounted read-only into notify pods
    /// only; the operator never reads it. Unset: no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SmtpCredentials>,

    /// Where the mail server is, for notify's NetworkPolicy egress (an ipBlock, or a
    /// podSelector of a relay in the cluster). Empty: any address on `port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<NetworkPolicyPeer>,
}

fn default_smtp_port() -> i32 {
    587
}

/// The Secret holding the mail server's login.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpCredentials {
    /// Name of the Secret, with the keys `username` and `password`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Anything that changes when the Secret's content does. It is part of notify's config
    /// hash: after changing the Secret, change this too, and notify restarts with the new
    /// login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revision: Option<String>,
}

/// How notify's connection to the mail server is secured.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SmtpTls {
    /// STARTTLS, required: a server that does not offer it is not used.
    #[default]
    #[serde(rename = "StartTLS")]
    StartTls,
    /// STARTTLS when the server offers it, plain otherwise.
    #[serde(rename = "StartTLSIfOffered")]
    StartTlsIfOffered,
    /// TLS from the first byte (SMTPS, usually port 465).
    #[serde(rename = "ImplicitTLS")]
    ImplicitTls,
    /// No TLS: only for a relay on the same network.
    Plain,
}

impl SmtpSpec {
    /// The mail server as notify's `IO360_SMTP_URL` (without the login, which notify reads
    /// from files).
    pub fn url(&self) -> String {
        let s = self;
        match s.tls {
            SmtpTls::StartTls => format!("smtp://{}:{}?tls=required", s.host, s.port),
            SmtpTls::StartTlsIfOffered => {
                format!("smtp://{}:{}?tls=opportunistic", s.host, s.port)
            }
            SmtpTls::ImplicitTls => format!("smtps://{}:{}", s.host, s.port),
            SmtpTls::Plain => format!("smtp://{}:{}", s.host, s.port),
        }
    }
}

/// Rotation of the keys behind the tiers' credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.rotationDays >= 1 && self.rotationDays <= 365").message("rotationDays must be from 1 to 365"))]
pub struct TierKeysSpec {
    /// Days between automatic rotations of the tiers' key, from 1 to 365. A rotation adds a
    /// new key, switches every tier's credential to it, then retires the old key, a few
    /// minutes apart, with no restart and no refused request. Default 30.
    #[serde(default = "default_rotation_days")]
    #[schemars(range(min = 1, max = 365))]
    pub rotation_days: i64,
}

impl Default for TierKeysSpec {
    fn default() -> Self {
        Self {
            rotation_days: default_rotation_days(),
        }
    }
}

fn default_rotation_days() -> i64 {
    30
}

/// How pods of every tier stop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.drainSeconds < self.terminationGracePeriodSeconds").message("drainSeconds must be below terminationGracePeriodSeconds, which includes it"))]
pub struct ShutdownSpec {
    /// Seconds a stopping pod keeps answering before it is sent SIGTERM (a preStop sleep):
    /// the time the endpoints take to drop it, so no request is sent to a closed port. After
    /// SIGTERM the tier answers 2 s more, unready, closing each connection after its answer
    /// (clients on keep-alive connections move to other pods), then answers held polls,
    /// finishes in-flight requests and exits. 0 turns both off. Default 5.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub drain_seconds: i64,

    /// The pods' terminationGracePeriodSeconds: the whole time from the start of the drain to
    /// a forced kill. Must be above drainSeconds, with room for held polls to be answered
    /// (longpoll spreads its answers over 5 s). Default 30.
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: i64,
}

impl Default for ShutdownSpec {
    fn default() -> Self {
        Self {
            drain_seconds: default_drain_seconds(),
            termination_grace_period_seconds: default_grace_seconds(),
        }
    }
}

fn default_drain_seconds() -> i64 {
    5
}

fn default_grace_seconds() -> i64 {
    30
}

/// What the tiers' NetworkPolicies let through besides the tiers themselves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Who may reach every tier's metrics port (9090: /metrics, /healthz, /readyz), as
    /// NetworkPolicy peers, e.g. `[{namespaceSelector: {matchLabels:
    /// {kubernetes.io/metadata.name: monitoring}}}]`. Empty: any source may reach the metrics
    /// port (and only it; the API port stays closed to what does not call it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub metrics_scrapers: Vec<NetworkPolicyPeer>,

    /// CIDRs of the Kubernetes API server, for the egress of the tiers that watch their
    /// control ConfigMap (frontend and logic). Empty: those two may reach any address on TCP
    /// 443 and 6443 (the API server's address is not known in advance; Service NAT may show
    /// either port to the policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 43)))]
    pub api_server_cidrs: Vec<String>,

    /// CIDRs of the proxies in front of the frontend (the Ingress controller's pods, a load
    /// balancer, a CDN), e.g. `10.0.0.0/8`. The frontend believes the `X-Forwarded-For` these
    /// send and takes the client to be the rightmost address in it that is not a trusted
    /// proxy, so per-reader limits apply to readers rather than to the proxy. Empty: the
    /// header a client sends is replaced by the connection's address, so no reader can claim
    /// another's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 43), regex(pattern = r"^[0-9a-fA-F.:]+/[0-9]{1,3}$"))
    )]
    pub trusted_proxies: Vec<String>,
}

/// The container image of the io360 tiers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, without tag, e.g. `ghcr.io/example/io360`.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1, max = 255))]
    pub repository: String,

    /// Image tag. Default: the operator's own version, so every node runs the same build.
    #[serde(default = "default_tag")]
    #[schemars(length(min = 1, max = 128))]
    pub tag: String,

    /// The image's digest (`sha256:` and 64 hex digits). When set, pods run exactly that
    /// build (`repository:tag@digest`), whatever the tag points to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[a-f0-9]{64}$"))]
    pub digest: Option<String>,

    /// When the kubelet pulls the image: `IfNotPresent` (default), `Always` or `Never`.
    #[serde(default)]
    pub pull_policy: PullPolicy,

    /// Secrets used to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<LocalObjectReference>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: default_tag(),
            digest: None,
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

fn default_repository() -> String {
    "io360".into()
}

/// The operator's own version: every node runs the same build of the tiers, the one this
/// operator was released with.
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").into()
}

/// Image pull policy, as in a Pod spec.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    /// Pull only when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Pull on every container start.
    Always,
    /// Never pull; the image must already be on the node.
    Never,
}

impl PullPolicy {
    /// The value Kubernetes expects in a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfNotPresent => "IfNotPresent",
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }
}

/// How one stateless tier runs: a fixed replica count or an autoscaler, and where its pods go.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both"))]
pub struct TierSpec {
    /// A fixed number of replicas. Ignored when `autoscaling` is set. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Scale this tier with a HorizontalPodAutoscaler; the operator then leaves the replica
    /// count to the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// CPU and memory requests and limits of the tier's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the tier's pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the tier's pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod affinity of the tier's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the tier's pods spread over zones and nodes. When unset, pods of the tier prefer
    /// different nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// The tier's PodDisruptionBudget. Default: enabled with maxUnavailable 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PdbSpec>,
}

/// A HorizontalPodAutoscaler for one tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.targetHeldConnections) || !has(self.metric) || self.metric == 'HeldConnections'").message("targetHeldConnections applies only when metric is HeldConnections (longpoll's default)"))]
#[x_kube(validation = Rule::new("!has(self.targetRequestsInFlight) || (has(self.metric) && self.metric == 'RequestsInFlight')").message("targetRequestsInFlight applies only when metric is RequestsInFlight"))]
pub struct AutoscalingSpec {
    /// The fewest replicas the autoscaler keeps.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// The most replicas the autoscaler may create. Automatic degrade treats "at
    /// maxReplicas and over the threshold" as overload.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// What the autoscaler scales this tier on; unset, the tier's default (see
    /// [`ScalingMetric`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<ScalingMetric>,

    /// Target average CPU utilization, in percent of the CPU request, when the tier scales
    /// on `CPU`. Default 70.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,

    /// longpoll, scaling on `HeldConnections`: the average number of polls and event
    /// streams held open per pod that the autoscaler keeps (Pods metric
    /// `io360_longpoll_held_connections`, AverageValue target). Default 5000: half of the
    /// 10,000 a longpoll pod holds at most when it cannot read its open-file limit, so pods
    /// are added well before one refuses polls. A pod's own limit is its open-file limit less
    /// 256 (its `io360_longpoll_held_limit` gauge); where pods run with a low open-file limit,
    /// set this to about half of that gauge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub target_held_connections: Option<i32>,

    /// Scaling on `RequestsInFlight`: the average number of requests being answered per pod
    /// that the autoscaler keeps (Pods metric `io360_http_requests_in_flight`, AverageValue
    /// target). Default 50: a pod answering in about 10 ms holds about 50 requests at 5,000
    /// requests a second, far below the 4,096 in flight at which a tier refuses requests
    /// with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_requests_in_flight: Option<i32>,

    /// Further metrics for the autoscaler (autoscaling/v2 MetricSpec), added to the one
    /// `metric` chooses, e.g. requests per second from a custom metrics adapter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
}

/// What the autoscaler scales this tier on. Unset, each tier scales on what limits it.
///
/// longpoll scales on `HeldConnections`: a longpoll pod mostly waits; its cost is the polls
/// and event streams it holds open, not CPU, and it refuses new ones at its held-connection
/// limit long before its CPU is busy.
///
/// frontend, logic and sync scale on `CPU`: frontend serves pages from memory and logic
/// renders and checks comments, both CPU-bound. Automatic degrade reads the frontend's CPU
/// utilization, so with `autoDegrade.enabled` frontend must scale on `CPU`.
///
/// `RequestsInFlight` suits logic when its requests wait on the store more than they
/// use CPU.
///
/// `CPU` is read from the resource metrics API (metrics-server). `HeldConnections` and
/// `RequestsInFlight` are per-pod metrics read from the custom metrics API
/// (custom.metrics.k8s.io), which an adapter such as prometheus-adapter serves under the
/// Prometheus series' names `io360_longpoll_held_connections` and
/// `io360_http_requests_in_flight`. An autoscaler that cannot read its metric does not scale;
/// status condition `AutoscalingHealthy` and `status.tiers.<tier>.autoscaling` say so.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScalingMetric {
    /// Average CPU utilization against `targetCpuUtilization` (Resource metric `cpu`).
    #[serde(rename = "CPU")]
    Cpu,
    /// longpoll only: polls and event streams held open per pod, against
    /// `targetHeldConnections` (Pods metric `io360_longpoll_held_connections`).
    HeldConnections,
    /// Requests being answered per pod, against `targetRequestsInFlight` (Pods metric
    /// `io360_http_requests_in_flight`).
    RequestsInFlight,
}

impl ScalingMetric {
    /// The value as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "CPU",
            Self::HeldConnections => "HeldConnections",
            Self::RequestsInFlight => "RequestsInFlight",
        }
    }

    /// The metric the autoscaler reads: `cpu` or the Prometheus series' name.
    pub fn metric_name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::HeldConnections => "io360_longpoll_held_connections",
            Self::RequestsInFlight => "io360_http_requests_in_flight",
        }
    }
}

/// Default `targetHeldConnections`: half of longpoll's 10,000 fallback held-connection limit.
pub const DEFAULT_TARGET_HELD_CONNECTIONS: i32 = 5000;

/// Default `targetRequestsInFlight`.
pub const DEFAULT_TARGET_REQUESTS_IN_FLIGHT: i32 = 50;

fn default_min_replicas() -> i32 {
    1
}

fn default_cpu_target() -> i32 {
    70
}

/// A PodDisruptionBudget for one tier. Set at most one of minAvailable and maxUnavailable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("set at most one of minAvailable and maxUnavailable"))]
pub struct PdbSpec {
    /// Create the PodDisruptionBudget. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Pods that must stay available during voluntary disruptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_available: Option<i32>,

    /// Pods that may be unavailable during voluntary disruptions. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_unavailable: Option<i32>,
}

fn default_true() -> bool {
    true
}

/// How a single-replica tier with its own PersistentVolume runs (store, logger).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulTierSpec {
    /// The tier's PersistentVolume.
    #[serde(default)]
    pub storage: StorageSpec,

    /// How long the tier may take to open its data (the storage engine replays its journal
    /// before it answers) before Kubernetes restarts it: the budget of its startup probe. The
    /// liveness probe starts only once the tier has started, so a slow open is never killed
    /// inside this budget. Default: 120 s plus 30 s per GiB of storage.size, at most 3600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub startup_seconds: Option<i32>,

    /// CPU and memory requests and limits of the tier's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the tier's pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the tier's pod tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod affinity of the tier's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// How the store tier runs. Engine `Fjall` (the default): comments in the embedded engine
/// on the tier's own PersistentVolume, a StatefulSet of exactly one replica. Engine
/// `Postgres`: comments in a PostgreSQL database the site already runs (highly available by
/// its own means: streaming replicas, a managed service, CloudNativePG), and the store a
/// Deployment of several replicas, scaled by `replicas` or `autoscaling`, any of which may
/// fail without stopping writes. The engine is chosen once: moving a site from one engine to
/// the other is a data move (see the README), not a spec change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.engine == 'Postgres') == has(self.postgres)").message("engine Postgres needs store.postgres, and store.postgres needs engine Postgres"))]
#[x_kube(validation = Rule::new("self.engine == 'Postgres' || (!has(self.replicas) && !has(self.autoscaling) && !has(self.podDisruptionBudget))").message("replicas, autoscaling and podDisruptionBudget apply to engine Postgres only: the Fjall store is always one replica"))]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || ((!has(self.autoscaling.metric) || self.autoscaling.metric != 'HeldConnections') && !has(self.autoscaling.targetHeldConnections))").message("HeldConnections and targetHeldConnections are longpoll's alone: only longpoll pods report io360_longpoll_held_connections"))]
#[x_kube(validation = Rule::new("self.engine == oldSelf.engine").message("the store's engine cannot change: a site changes engine by moving its data into a new CommentCluster"))]
pub struct StoreSpec {
    /// Where comments are kept: `Fjall` (default) or `Postgres`.
    #[serde(default)]
    pub engine: StoreEngine,

    /// The database, with engine `Postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,

    /// Engine `Postgres`: a fixed number of store replicas. Default 2, so one pod's loss
    /// never stops writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,

    /// Engine `Postgres`: scale the store with a HorizontalPodAutoscaler (on `CPU` by
    /// default, or `RequestsInFlight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Engine `Postgres`: the store's PodDisruptionBudget. Default: enabled with
    /// maxUnavailable 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PdbSpec>,

    /// The pod's storage, resources and placement (with engine `Postgres`, `storage` is
    /// unused and `startupSeconds` is the budget to reach the database and apply migrations,
    /// default 120).
    #[serde(flatten)]
    pub tier: StatefulTierSpec,
}

impl StoreSpec {
    /// Whether the store runs on PostgreSQL: a Deployment of replicas rather than a
    /// StatefulSet of one on its own volume.
    pub fn on_postgres(&self) -> bool {
        self.engine == StoreEngine::Postgres && self.postgres.is_some()
    }
}

/// The store's engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum StoreEngine {
    /// The embedded engine, on the store's own PersistentVolume: the fastest path, one
    /// replica.
    #[default]
    Fjall,
    /// A PostgreSQL database (`store.postgres`): several store replicas, and the database's
    /// own high availability.
    Postgres,
}

/// The PostgreSQL database of a store with engine `Postgres`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// The Secret key holding the connection URL,
    /// `postgres://USER:PASSWORD@HOST:5432/DATABASE?sslmode=verify-full` (libpq's URL form, read
    /// as libpq reads it: `require` encrypts, `verify-ca` also checks the CA, `verify-full`
    /// also the host name; see caSecret). Mounted read-only into store pods
    /// only; the operator never reads it. Key default `token`: set `key` to the Secret's key,
    /// e.g. `uri` for a CloudNativePG application Secret.
    pub url_secret: SecretKeyRef,

    /// The database's port, which the store's NetworkPolicy lets it reach. Default 5432.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Where the database is, for the store's NetworkPolicy egress (e.g. a podSelector of
    /// the database's pods, or an ipBlock). Empty: any address on `port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<NetworkPolicyPeer>,

    /// A Secret key holding the CA certificate (PEM) the database's certificate is checked
    /// against, mounted beside the URL as `/var/run/secrets/io360/database/ca.crt`: write
    /// `sslmode=verify-full&sslrootcert=/var/run/secrets/io360/database/ca.crt` in the URL.
    /// For a CloudNativePG cluster: the Secret `<cluster>-ca`, key `ca.crt`. Unset: the
    /// system's CAs (a managed service with a public certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

fn default_postgres_port() -> i32 {
    5432
}

/// A PersistentVolumeClaim's size and class. Both are fixed once the claim exists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storageClassName is immutable"))]
#[x_kube(validation = Rule::new("self.size == oldSelf.size").message("size is immutable: expand the PersistentVolumeClaim itself"))]
pub struct StorageSpec {
    /// Requested size, as a Kubernetes quantity (e.g. `10Gi`). Default 1Gi.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,

    /// The StorageClass of the claim. When unset, the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// Where the site's static files come from: exactly one of configMap or persistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.persistentVolumeClaim)").message("set exactly one of configMap and persistentVolumeClaim"))]
pub struct SiteSource {
    /// A ConfigMap whose keys are the site's files (small sites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<LocalObjectReference>,

    /// A PersistentVolumeClaim holding the site's files, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimRef>,
}

/// A PersistentVolumeClaim in the CommentCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// A key of a Secret in the CommentCluster's namespace. It is mounted as a file into the pods
/// of logic (the only tier that checks it), never passed in an environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key inside the Secret. Default `token`.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// Anything that changes when the Secret's content does (a hash of the token, a date).
    /// It is part of the pods' config hash: after changing the Secret, change this too, and
    /// the pods that read the token roll, so every replica holds the same one. The operator
    /// itself never reads Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revision: Option<String>,
}

fn default_secret_key() -> String {
    "token".into()
}

/// Moderation mode of new comments. Written with words that mean the same to YAML 1.1 and
/// 1.2 readers (no `on`, `off`, `yes`, `no`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ModerationMode {
    /// Every comment is published at once. Objects stored with the earlier spelling `off`
    /// (sent as a quoted string by a JSON client) still read as this mode.
    #[serde(rename = "none", alias = "off")]
    None,
    /// Every comment waits for a moderator.
    #[serde(rename = "all")]
    All,
    /// Comments from authors with no approved comment yet wait for a moderator.
    #[default]
    #[serde(rename = "first-time")]
    FirstTime,
}

impl ModerationMode {
    /// The value of `IO360_MODERATION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::All => "all",
            Self::FirstTime => "first-time",
        }
    }
}

/// An Ingress in front of the comment system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The public host name, e.g. `blog.example.com` (no scheme, port or path).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[^/:]+$"))]
    pub host: String,

    /// The IngressClass to use. When unset, the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,

    /// Serve HTTPS with the certificate in this Secret (type kubernetes.io/tls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
}

/// TLS of the Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// The Secret holding the certificate and key.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// When and how comments are suspended automatically under frontend overload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.recoveryThreshold < self.utilizationThreshold").message("recoveryThreshold must be below utilizationThreshold"))]
pub struct AutoDegradeSpec {
    /// Turn automatic degrade on. Needs frontend autoscaling.
    #[serde(default)]
    pub enabled: bool,

    /// Frontend CPU utilization (percent, as the frontend HPA reports it) at or above which,
    /// with frontend at its maxReplicas, the cluster counts as overloaded. Default 90.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub utilization_threshold: i32,

    /// How long overload must hold before comments are suspended, in seconds. Default 60.
    #[serde(default = "default_hold")]
    #[schemars(range(min = 0, max = 86400))]
    pub hold_seconds: i64,

    /// Frontend utilization (percent) under which load counts as recovered. Must be below
    /// utilizationThreshold. Default 60.
    #[serde(default = "default_recovery")]
    #[schemars(range(min = 0, max = 1000))]
    pub recovery_threshold: i32,

    /// How long load must stay under recoveryThreshold before comments resume, in seconds.
    /// Default 300.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_seconds: i64,
}

impl Default for AutoDegradeSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            utilization_threshold: default_threshold(),
            hold_seconds: default_hold(),
            recovery_threshold: default_recovery(),
            cooldown_seconds: default_cooldown(),
        }
    }
}

fn default_threshold() -> i32 {
    90
}
fn default_hold() -> i64 {
    60
}
fn default_recovery() -> i32 {
    60
}
fn default_cooldown() -> i64 {
    300
}

/// What the operator last saw and did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing`, `CommentsSuspended` (reason `Manual` or `Overload`),
    /// `AutoscalingHealthy` (False naming each tier whose autoscaler cannot read its metric)
    /// and, with automatic degrade enabled, `AutoDegrade` (False while it has no reading of
    /// the frontend and so does not decide); one of each type at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// `Live` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,

    /// Desired and ready replicas of each tier, by tier name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, TierStatus>,

    /// The current suspension of live comments, when suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<SuspensionStatus>,

    /// When comments last went live again (RFC 3339), after a suspension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,

    /// longpoll's replica count just before it was scaled to zero, restored on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longpoll_replicas_before_suspension: Option<i32>,
}

/// Replicas of one tier, and whether its autoscaler can read what it scales on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Replicas the tier should have now (the autoscaler's choice when one manages it).
    pub desired_replicas: i32,
    /// Replicas passing their readiness probe.
    pub ready_replicas: i32,
    /// The tier's autoscaler, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<TierAutoscalingStatus>,
}

/// What a tier's autoscaler scales on and whether it can read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierAutoscalingStatus {
    /// The metric it scales on: `cpu`, `io360_longpoll_held_connections` or
    /// `io360_http_requests_in_flight`.
    pub metric: String,
    /// `True` when the autoscaler reads its metrics. `False` when it reports it cannot
    /// (condition ScalingActive False, e.g. FailedGetPodsMetric): it then leaves the tier's
    /// replicas as they are, so check the metrics pipeline (metrics-server for cpu, a custom
    /// metrics adapter for the io360_ series). `Unknown` before it has reported, or while
    /// scaling is disabled because the tier is at zero replicas (longpoll while comments are
    /// suspended).
    pub metrics_available: String,
    /// The autoscaler's reason and message when its metrics are not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why and since when comments are suspended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspensionStatus {
    /// `Manual` (spec.commentsSuspended) or `Overload` (automatic degrade).
    pub reason: String,
    /// The sentence shown to readers.
    pub message: String,
    /// When the suspension began (RFC 3339).
    pub since: String,
}

#[cfg(test)]
mod tests {
    use super::ModerationMode;

    #[test]
    fn moderation_is_written_none_and_the_old_spelling_still_reads() {
        let mode: ModerationMode = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(mode, ModerationMode::None);
        assert_eq!(serde_json::to_string(&mode).unwrap(), "\"none\"");
        // Stored by a JSON client before the rename: read, and written back as `none`.
        let old: ModerationMode = serde_json::from_str("\"off\"").unwrap();
        assert_eq!(old, ModerationMode::None);
        assert_eq!(ModerationMode::None.as_str(), "none");
    }
}
