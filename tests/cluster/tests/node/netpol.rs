//! The tiers' NetworkPolicies, enforced on the real node (kube-router's firewall) and tried
//! from inside pods: probe pods with busybox connect to the store's, sync's and logger's API
//! port by Service and by pod address, labelled as nothing, as a tier that calls them, or as
//! one that does not.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use serde_json::{Value, json};

use crate::flows::{pages_and_a_live_comment, start_cluster};
use crate::support::{Suite, TIER_PORT, toleration};
use io360_cluster_tests::REAL_NODE_LABEL;

/// Every tier's metrics port (`/healthz`, `/readyz`, `/metrics`), open to any source when
/// `spec.network.metricsScrapers` is empty.
const METRICS_PORT: u16 = 9090;

/// The tiers whose API only some tiers may call.
const GUARDED: [&str; 3] = ["store", "sync", "logger"];

/// The probe pods: a name, and the tier they claim to be (`None`: no io360 labels at all).
const PROBES: [(&str, Option<&str>); 4] = [
    ("probe-stranger", None),
    ("probe-frontend", Some("frontend")),
    ("probe-logic", Some("logic")),
    ("probe-longpoll", Some("longpoll")),
];

/// Whether a pod labelled as `caller` (`None`: unlabelled) may open `tier`'s API port: the
/// store serves logic (and sync), sync serves longpoll, the logger every tier.
fn may_call(caller: Option<&str>, tier: &str) -> bool {
    matches!(
        (caller, tier),
        (Some("logic"), "store") | (Some("longpoll"), "sync") | (Some(_), "logger")
    )
}

/// One address a probe tries.
struct Target {
    /// `<tier>-<pod|service>-<port>`, as the probe script prints it.
    key: String,
    tier: &'static str,
    addr: String,
    port: u16,
    /// The HTTP path asked for.
    path: &'static str,
}

/// What a probe saw at one target: whether the TCP connection opened, and the HTTP status
/// line of a GET, if one came back.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    open: bool,
    status: Option<String>,
}

impl Seen {
    fn answered(&self) -> bool {
        self.open
            && self
                .status
                .as_deref()
                .is_some_and(|s| s.starts_with("HTTP/1."))
    }
}

/// A probe pod on the real node that passes the `restricted` Pod Security Standard, runs
/// busybox's `sleep`, and is never Ready, so a probe labelled as a tier never joins that
/// tier's Service.
fn probe_pod(name: &str, image: &str, cluster: &str, tier: Option<&str>) -> Value {
    let labels = match tier {
        Some(tier) => json!({
            "app.kubernetes.io/name": "io360",
            "app.kubernetes.io/instance": cluster,
            "app.kubernetes.io/component": tier,
        }),
        None => json!({"io360.dev/probe": "stranger"}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": { REAL_NODE_LABEL.0: REAL_NODE_LABEL.1 },
            "tolerations": [toleration()],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "args": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
                "readinessProbe": {"exec": {"command": ["/busybox", "false"]}, "periodSeconds": 300},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    })
}

/// A shell script for busybox that tries every target at once: a TCP connect (3 s) and, when
/// it opens, an HTTP/1.0 GET (8 s: the node's two cores are busy) whose status line it
/// prints; one line per target. The request's sender stays open 2 s: a client that shuts
/// its side at once may see the tiers' HTTP server close without answering.
/// `<key> tcp=open|closed http=<status line>|none`.
fn probe_script(targets: &[Target]) -> String {
    let mut script = String::from(
        "probe() {\n\
         h=\n\
         if /busybox nc -w 3 \"$2\" \"$3\" -e /busybox true 2>/dev/null; then t=open\n\
         h=$( (printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' \"$4\" \"$2\"; /busybox sleep 2) | \
         /busybox timeout 8 /busybox nc -w 5 \"$2\" \"$3\" 2>/dev/null | /busybox head -n 1 | /busybox tr -d '\\r')\n\
         else t=closed; fi\n\
         echo \"$1 tcp=$t http=${h:-none}\"\n\
         }\n",
    );
    for t in targets {
        script.push_str(&format!(
            "probe {} {} {} {} &\n",
            t.key, t.addr, t.port, t.path
        ));
    }
    script.push_str("wait\n");
    script
}

fn parse_probe(output: &str) -> BTreeMap<String, Seen> {
    output
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(" tcp=")?;
            let (tcp, http) = rest.split_once(" http=")?;
            Some((
                key.to_string(),
                Seen {
                    open: tcp == "open",
                    status: (http != "none").then(|| http.to_string()),
                },
            ))
        })
        .collect()
}

/// The first pod of a tier: its name and address.
async fn tier_pod(s: &Suite, ns: &str, cluster: &str, tier: &str) -> Result<String> {
    let pods = s
        .pods(
            ns,
            &format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component={tier}"),
        )
        .await?;
    pods.iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty())
        })
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .with_context(|| format!("no {tier} pod with an address in {ns}"))
}

async fn cluster_ip(s: &Suite, ns: &str, name: &str) -> Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(s.client.clone(), ns);
    let service = services.get(name).await?;
    Ok(service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None"))
}

/// Runs the probe script in `pod` until every target its labels may reach has answered HTTP
/// (in any try), failing at once if one it must not reach opens in any try. The firewall
/// learns of a new pod's address from the API server, so what it must let through may take
/// a moment to open; what it must refuse never opens. Returns how many tries it took.
async fn probe_until_settled(
    s: &Suite,
    ns: &str,
    pod: &str,
    tier: Option<&str>,
    targets: &[Target],
    script: &str,
) -> Result<u32> {
    let mut answered = std::collections::BTreeSet::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let output = s
            .kubectl(&["exec", "-n", ns, pod, "--", "/busybox", "sh", "-c", script])
            .await?;
        let seen = parse_probe(&output);
        let mut waiting = Vec::new();
        for t in targets {
            let got = seen
                .get(&t.key)
                .with_context(|| format!("{pod} printed nothing for {}:\n{output}", t.key))?;
            let metrics = t.port == METRICS_PORT;
            if metrics && tier.is_some() {
                // A tier's own egress policy decides these; not what this test is about.
                continue;
            }
            if metrics || may_call(tier, t.tier) {
                if got.answered() {
                    if metrics && !got.status.as_deref().is_some_and(|st| st.contains(" 200")) {
                        bail!("{pod}: {} answered {:?}, not 200", t.key, got.status);
                    }
                    answered.insert(t.key.clone());
                } else if !answered.contains(&t.key) {
                    waiting.push(format!("{} ({}:{}) {got:?}", t.key, t.addr, t.port));
                }
            } else if got.open || got.status.is_some() {
                bail!(
                    "{pod} (labelled as {tier:?}) reached {} at {}:{} ({got:?}); its \
                     NetworkPolicy lets only the tiers that call it in",
                    t.key,
                    t.addr,
                    t.port
                );
            }
        }
        if waiting.is_empty() {
            return Ok(attempt);
        }
        eprintln!("{pod}, try {attempt}: not yet answered: {waiting:?}");
        if attempt == 8 {
            bail!(
                "{pod} (labelled as {tier:?}) could not reach what its tier may call: \
                 {waiting:?}\n{output}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// NetworkPolicies hold on the real node: from inside pods, the store's, sync's and logger's
/// API port opens (and answers HTTP) only to pods labelled as a tier that calls it; an
/// unlabelled pod and a pod labelled as a tier that does not call it find it closed, by
/// Service and by pod address, while the same unlabelled pod gets `/healthz` from every
/// one of them on the metrics port, which the policies leave open. The cluster still serves
/// pages and live comments.
pub fn network_policies_hold_on_the_node(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let ns = s.namespace("policy").await?;
        let name = "guarded";
        start_cluster(s, &ns, name, json!({})).await?;
        let policies = s
            .kubectl(&["get", "networkpolicies", "-n", &ns, "-o", "name"])
            .await?;
        ensure!(
            policies.lines().count() == 6,
            "expected a NetworkPolicy per tier, found:\n{policies}"
        );

        let node = s.cluster.real_node().context("no real node")?;
        let image = node.push_probe()?;
        for (pod, tier) in PROBES {
            s.apply(&ns, &probe_pod(pod, &image, name, tier)).await?;
        }

        let mut targets = Vec::new();
        for tier in GUARDED {
            let pod_ip = tier_pod(s, &ns, name, tier).await?;
            targets.push(Target {
                key: format!("{tier}-pod-{TIER_PORT}"),
                tier,
                addr: pod_ip.clone(),
                port: TIER_PORT,
                path: "/",
            });
            targets.push(Target {
                key: format!("{tier}-pod-{METRICS_PORT}"),
                tier,
                addr: pod_ip,
                port: METRICS_PORT,
                path: "/healthz",
            });
            // The store's Service is headless: its name resolves to the pod's address.
            if let Some(ip) = cluster_ip(s, &ns, &format!("{name}-{tier}")).await? {
                targets.push(Target {
                    key: format!("{tier}-service-{TIER_PORT}"),
                    tier,
                    addr: ip,
                    port: TIER_PORT,
                    path: "/",
                });
            }
        }
        let script = probe_script(&targets);

        let pods: Api<Pod> = Api::namespaced(s.client.clone(), &ns);
        s.wait("the probe pods running", 60, || async {
            for (pod, _) in PROBES {
                let p = pods.get(pod).await.map_err(|e| e.to_string())?;
                let phase = p.status.as_ref().and_then(|st| st.phase.clone());
                if phase.as_deref() != Some("Running") {
                    return Err(format!("{pod} is {phase:?}"));
                }
            }
            Ok(())
        })
        .await?;

        let probing = Instant::now();
        // One pod at a time, every target at once: the node has two cores.
        let mut attempts = Vec::new();
        for (pod, tier) in PROBES {
            attempts.push(probe_until_settled(s, &ns, pod, tier, &targets, &script).await?);
        }
        s.measure(format!(
            "{} probe pods x {} targets, tried from each pod: {:.1} s \
             (tries per pod until what may open had opened: {attempts:?})",
            PROBES.len(),
            targets.len(),
            probing.elapsed().as_secs_f64()
        ));

        pages_and_a_live_comment(s, &ns, name, "Posted behind NetworkPolicies").await?;
        s.delete_namespace(&ns).await
    })
}
