//! The Helm chart, checked with a real `helm` (built by `tests/cluster/install-tools.sh`):
//! lint, render, the values schema, and RBAC that covers every kind the operator manages and
//! nothing more. A missing helm binary fails these tests; it never skips them.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use io360_operator::desired;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/io360-operator")
}

/// The helm the cluster harness uses: `<cache>/io360/k8s/<K8S_VERSION>/bin/helm`.
fn helm_path() -> PathBuf {
    let script = std::fs::read_to_string(repo().join("tests/cluster/install-tools.sh"))
        .expect("tests/cluster/install-tools.sh pins the tool versions");
    let version = script
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("install-tools.sh has a K8S_VERSION= line")
        .trim()
        .to_string();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("XDG_CACHE_HOME or HOME is set");
    let path = cache.join(format!("io360/k8s/{version}/bin/helm"));
    assert!(
        path.is_file(),
        "helm not found at {}: run `bash tests/cluster/install-tools.sh`",
        path.display()
    );
    path
}

fn helm(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("io360-operator-helm-{}", std::process::id()));
    Command::new(helm_path())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "helm failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "io360-operator",
        chart.to_str().unwrap(),
        "--namespace",
        "io360-system",
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    let out = ok(helm(&args));
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn lints_strictly_with_every_option() {
    let chart = chart();
    let c = chart.to_str().unwrap();
    ok(helm(&["lint", c, "--strict"]));
    ok(helm(&[
        "lint",
        c,
        "--strict",
        "--set",
        "watchNamespace=sites",
        "--set",
        "example.enabled=true",
        "--set",
        "monitoring.podMonitors.enabled=true",
        "--set",
        "monitoring.rules.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
    ]));
}

#[test]
fn values_schema_rejects_bad_values() {
    let chart = chart();
    let c = chart.to_str().unwrap();
    for (set, field) in [
        ("replicaCount=0", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("nonsense=1", "nonsense"),
    ] {
        let out = helm(&["template", "x", c, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains(field),
            "{set}: error does not name {field}: {err}"
        );
    }
}

#[test]
fn renders_the_operator_with_two_replicas_and_leader_election() {
    let docs = render(&[]);
    let deploy = of_kind(&docs, "Deployment");
    assert_eq!(deploy.len(), 1);
    let d = deploy[0];
    assert_eq!(d["spec"]["replicas"], 2);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--lease-name=io360-operator"), "{args:?}");
    let env: BTreeSet<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for var in ["POD_NAME", "POD_NAMESPACE", "IO360_LOG"] {
        assert!(env.contains(var), "{var} missing: {env:?}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The CRD ships in crds/ (installed first, kept on uninstall) and is the generated one.
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    let chart_crd =
        std::fs::read_to_string(chart().join("crds/commentclusters.io360.dev.yaml")).unwrap();
    assert!(
        chart_crd == io360_operator::crd_yaml(),
        "charts/io360-operator/crds is stale: run \
         `cargo run -p io360-operator -- crd > charts/io360-operator/crds/commentclusters.io360.dev.yaml`"
    );
    // No example unless asked for.
    assert!(of_kind(&docs, "CommentCluster").is_empty());
    let with_example = render(&["--set", "example.enabled=true"]);
    assert_eq!(of_kind(&with_example, "CommentCluster").len(), 1);
}

/// (apiGroup, resource) → verbs granted, from a rendered Role or ClusterRole.
fn grants(role: &Value) -> Vec<(String, String, BTreeSet<String>, bool)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_sequence().unwrap() {
        let verbs: BTreeSet<String> = rule["verbs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let named = rule.get("resourceNames").is_some();
        for g in rule["apiGroups"].as_sequence().unwrap() {
            for r in rule["resources"].as_sequence().unwrap() {
                out.push((
                    g.as_str().unwrap().to_string(),
                    r.as_str().unwrap().to_string(),
                    verbs.clone(),
                    named,
                ));
            }
        }
    }
    out
}

fn allowed(
    g: &[(String, String, BTreeSet<String>, bool)],
    group: &str,
    res: &str,
    verb: &str,
) -> bool {
    g.iter()
        .any(|(gg, r, v, _)| gg == group && r == res && v.contains(verb))
}

#[test]
fn rbac_covers_every_managed_kind_and_nothing_wider() {
    for (extra, kind) in [
        (vec![], "ClusterRole"),
        (vec!["--set", "watchNamespace=sites"], "Role"),
    ] {
        let docs = render(&extra);
        let roles: Vec<&Value> = of_kind(&docs, kind)
            .into_iter()
            .filter(|r| {
                !r["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("leader-election")
            })
            .collect();
        assert_eq!(roles.len(), 1, "{kind}");
        if kind == "Role" {
            assert_eq!(roles[0]["metadata"]["namespace"], "sites");
            assert!(
                of_kind(&docs, "ClusterRole").is_empty(),
                "namespaced mode needs no ClusterRole"
            );
        }
        let g = grants(roles[0]);
        for ar in desired::kinds() {
            for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(
                    allowed(&g, &ar.group, &ar.plural, verb),
                    "{kind} lacks {verb} on {}/{}",
                    ar.group,
                    ar.plural
                );
            }
        }
        for (group, res, verb) in [
            ("io360.dev", "commentclusters", "watch"),
            ("io360.dev", "commentclusters/status", "patch"),
            ("apps", "deployments/scale", "patch"),
            ("events.k8s.io", "events", "create"),
        ] {
            assert!(
                allowed(&g, group, res, verb),
                "{kind} lacks {verb} on {group}/{res}"
            );
        }
        for (_, res, verbs, _) in &g {
            assert!(res != "*" && !verbs.contains("*"), "wildcard in {kind}");
            if res == "secrets" {
                // Only the tier keys Secret, read by name: never listed or watched, so no
                // other Secret's contents reach the operator.
                let mut v: Vec<&str> = verbs.iter().map(String::as_str).collect();
                v.sort_unstable();
                assert_eq!(v, ["create", "get", "patch"], "Secrets in {kind}");
            }
            assert!(!res.starts_with("cluster"), "{res} in {kind}");
            assert!(!verbs.contains("escalate") && !verbs.contains("bind"));
        }
    }
    // The Lease: only the operator's own may be read or renewed.
    let docs = render(&[]);
    let lease_role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| {
            r["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("leader-election")
        })
        .expect("leader election Role");
    assert_eq!(lease_role["metadata"]["namespace"], "io360-system");
    let g = grants(lease_role);
    assert!(
        g.iter()
            .all(|(grp, res, verbs, named)| grp == "coordination.k8s.io"
                && res == "leases"
                && (*named || verbs.iter().all(|v| v == "create")))
    );
}

#[test]
fn the_operator_survives_a_node_drain_and_is_fenced_by_a_network_policy() {
    let docs = render(&[]);
    let d = of_kind(&docs, "Deployment")[0];
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["maxUnavailable"], 1);
    // One replica: a PDB would block every drain.
    assert!(of_kind(&render(&["--set", "replicaCount=1"]), "PodDisruptionBudget").is_empty());

    let np = of_kind(&docs, "NetworkPolicy");
    assert_eq!(np.len(), 1);
    let spec = &np[0]["spec"];
    assert_eq!(spec["policyTypes"][0], "Ingress");
    assert_eq!(spec["policyTypes"][1], "Egress");
    assert_eq!(spec["ingress"].as_sequence().unwrap().len(), 1);
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 8080);
    let egress_ports: BTreeSet<i64> = spec["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 443, 6443]));
    let narrowed = render(&["--set", "networkPolicy.apiServerCidrs[0]=10.0.0.1/32"]);
    let np = of_kind(&narrowed, "NetworkPolicy")[0];
    assert_eq!(
        np["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"],
        "10.0.0.1/32"
    );
}

#[test]
fn the_example_lands_where_the_operator_watches_with_a_kept_token() {
    let docs = render(&[
        "--set",
        "example.enabled=true",
        "--set",
        "watchNamespace=sites",
    ]);
    let cc = of_kind(&docs, "CommentCluster")[0];
    assert_eq!(cc["metadata"]["namespace"], "sites");
    let secret = of_kind(&docs, "Secret")[0];
    assert_eq!(secret["metadata"]["namespace"], "sites");
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // The chart's appVersion, which is the operator's own version.
    assert_eq!(cc["spec"]["image"]["tag"], env!("CARGO_PKG_VERSION"));
    assert!(
        cc["spec"]["adminTokenSecret"]["revision"]
            .as_str()
            .is_some()
    );
    let docs = render(&["--set", "example.enabled=true"]);
    assert_eq!(
        of_kind(&docs, "CommentCluster")[0]["metadata"]["namespace"],
        "io360-system"
    );
}

/// promtool, unpacked by `tests/lint/install-linters.sh`.
fn promtool() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("XDG_CACHE_HOME or HOME is set");
    let path = cache.join("io360/lint/bin/promtool");
    assert!(
        path.is_file(),
        "promtool not found at {}: run `bash tests/lint/install-linters.sh`",
        path.display()
    );
    path
}

const MONITORING_APIS: [&str; 4] = [
    "--api-versions",
    "monitoring.coreos.com/v1/PodMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
];

#[test]
fn monitoring_renders_only_when_asked_and_only_where_its_api_exists() {
    let all_on = [
        "--set",
        "monitoring.podMonitors.enabled=true",
        "--set",
        "monitoring.rules.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
    ];
    // Off by default, even where the Prometheus Operator runs.
    let docs = render(&MONITORING_APIS);
    assert!(of_kind(&docs, "PodMonitor").is_empty() && of_kind(&docs, "PrometheusRule").is_empty());
    // Asked for, in a cluster without the Prometheus Operator: only the dashboard ConfigMap.
    let docs = render(&all_on);
    assert!(of_kind(&docs, "PodMonitor").is_empty() && of_kind(&docs, "PrometheusRule").is_empty());
    let mut args = all_on.to_vec();
    args.extend_from_slice(&MONITORING_APIS);
    let docs = render(&args);
    let monitors = of_kind(&docs, "PodMonitor");
    assert_eq!(monitors.len(), 2, "the operator's and the tiers'");
    let tiers = monitors
        .iter()
        .find(|m| m["metadata"]["name"].as_str().unwrap().ends_with("-tiers"))
        .unwrap();
    assert_eq!(
        tiers["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        desired::MANAGER
    );
    assert_eq!(tiers["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(of_kind(&docs, "PrometheusRule").len(), 1);
    let dashboards: Vec<_> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(dashboards.len(), 1);
    let json: serde_json::Value =
        serde_json::from_str(dashboards[0]["data"]["io360.json"].as_str().unwrap()).unwrap();
    let ids: BTreeSet<u64> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        json["panels"].as_array().unwrap().len(),
        "panel ids are unique"
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let mut args = vec!["--set", "monitoring.rules.enabled=true"];
    args.extend_from_slice(&MONITORING_APIS);
    let docs = render(&args);
    let rule = of_kind(&docs, "PrometheusRule")[0];
    let dir = tempfile::tempdir().unwrap();
    // The groups as Prometheus reads a rule file (JSON is YAML).
    let groups = serde_json::to_string(&rule["spec"]).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), groups).unwrap();
    std::fs::copy(
        repo().join("tests/monitoring/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_operator_series_the_dashboard_and_the_alerts_name_exist() {
    let metrics = io360_operator::metrics::Metrics::new();
    metrics.set_cluster("blog", "comments", true, None);
    let families: BTreeSet<String> = metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for file in ["alerts.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(chart().join("files").join(file)).unwrap();
        for (i, _) in text.match_indices("io360_operator_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "io360_operator_" {
                continue; // `io360_operator_*` in prose
            }
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                families.contains(&name) || families.contains(base),
                "{file} names {name}, which the operator does not export: {families:?}"
            );
        }
    }
}
