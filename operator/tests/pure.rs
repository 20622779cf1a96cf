//! The pure half of the operator: CommentCluster YAML fixtures in, desired objects out
//! (snapshot tests), validation errors that name the field, and the checked-in CRD.
//!
//! Snapshots (insta) live in `tests/snapshots/`; after an intended change, review and accept
//! the new ones with `cargo insta review`, or write them all with
//! `INSTA_UPDATE=always cargo test -p io360-operator --test pure` and review the diff.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use std::path::{Path, PathBuf};

use io360_operator::crd::{CommentCluster, ScalingMetric};
use io360_operator::degrade::SuspensionReason;
use io360_operator::desired::{self, Inputs, Suspension};
use io360_operator::validate::validate;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(sub)
}

fn load(path: &Path) -> CommentCluster {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn render(cc: &CommentCluster, inputs: &Inputs) -> String {
    desired::build(cc, inputs)
        .iter()
        .map(|d| serde_yaml::to_string(&d.object).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Compares `actual` with the snapshot `tests/snapshots/<name>.snap` (insta).
fn check_snapshot(name: &str, actual: &str) {
    insta::with_settings!({
        snapshot_path => dir("tests/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, actual);
    });
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "fixtures went missing");
    v
}

#[test]
fn desired_objects_match_snapshots() {
    for path in fixtures() {
        let cc = load(&path);
        validate(&cc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        check_snapshot(&stem, &render(&cc, &Inputs::default()));
        let suspended = Inputs {
            suspension: Some(Suspension {
                reason: SuspensionReason::Manual,
                since: "2026-01-02T04:00:00Z".into(),
            }),
            live_since: None,
        };
        check_snapshot(&format!("{stem}.suspended"), &render(&cc, &suspended));
    }
}

#[test]
fn every_child_is_owned_and_labelled() {
    for path in fixtures() {
        let cc = load(&path);
        for d in desired::build(&cc, &Inputs::default()) {
            let owners = d
                .object
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            assert_eq!(owners.len(), 1, "{}", d.key());
            assert_eq!(owners[0].uid, cc.metadata.uid.clone().unwrap());
            assert_eq!(owners[0].controller, Some(true));
            let labels = d.object.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(desired::INSTANCE).map(String::as_str),
                cc.metadata.name.as_deref(),
                "{}",
                d.key()
            );
        }
    }
}

fn find<'a>(objs: &'a [desired::DesiredObject], key: &str) -> Option<&'a desired::DesiredObject> {
    objs.iter().find(|d| d.key() == key)
}

#[test]
fn suspension_scales_fixed_longpoll_to_zero_and_leaves_hpa_tiers_alone() {
    let fixed = load(&dir("tests/fixtures/site-configmap.yaml"));
    let inputs = Inputs {
        suspension: Some(Suspension {
            reason: SuspensionReason::Overload,
            since: "2026-01-02T04:00:00Z".into(),
        }),
        live_since: None,
    };
    let objs = desired::build(&fixed, &inputs);
    let lp = find(&objs, "Deployment/docs-longpoll").unwrap();
    assert_eq!(lp.object.data["spec"]["replicas"], 0);
    let fe = find(&objs, "Deployment/docs-frontend").unwrap();
    assert_eq!(fe.object.data["spec"]["replicas"], 3);
    let control = find(&objs, "ConfigMap/docs-control").unwrap();
    assert_eq!(control.object.data["data"]["commentsSuspended"], "true");
    assert_eq!(control.object.data["data"]["reason"], "Overload");
    assert_eq!(control.object.data["data"]["since"], "2026-01-02T04:00:00Z");

    // Autoscaled longpoll: replicas are never in the applied object (the HPA owns them);
    // the reconciler scales through the scale subresource instead.
    let auto = load(&dir("tests/fixtures/autoscaled.yaml"));
    let objs = desired::build(&auto, &inputs);
    let lp = find(&objs, "Deployment/news-longpoll").unwrap();
    assert!(lp.object.data["spec"].get("replicas").is_none());
    assert!(find(&objs, "HorizontalPodAutoscaler/news-longpoll").is_some());
}

#[test]
fn config_hash_rolls_pods_on_config_change_only() {
    let a = load(&dir("tests/fixtures/site-configmap.yaml"));
    let hash = |cc: &CommentCluster, inputs: &Inputs, key: &str| {
        let objs = desired::build(cc, inputs);
        find(&objs, key).unwrap().object.data["spec"]["template"]["metadata"]["annotations"]
            [desired::CONFIG_HASH]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base = hash(&a, &Inputs::default(), "Deployment/docs-logic");
    let mut b = a.clone();
    b.spec.moderation = io360_operator::crd::ModerationMode::All;
    assert_ne!(base, hash(&b, &Inputs::default(), "Deployment/docs-logic"));
    // Suspension travels through the control ConfigMap: no pod restarts.
    let suspended = Inputs {
        suspension: Some(Suspension {
            reason: SuspensionReason::Manual,
            since: "x".into(),
        }),
        live_since: None,
    };
    assert_eq!(base, hash(&a, &suspended, "Deployment/docs-logic"));
}

#[test]
fn ingress_and_hpa_follow_the_spec() {
    let auto = load(&dir("tests/fixtures/autoscaled.yaml"));
    let objs = desired::build(&auto, &Inputs::default());
    let ing = find(&objs, "Ingress/news").expect("ingress requested");
    let paths = &ing.object.data["spec"]["rules"][0]["http"]["paths"];
    let routes: Vec<(String, String)> = paths
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["backend"]["service"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert!(routes.contains(&("/".into(), "news-frontend".into())));
    // Logic answers only the frontend, so `/api` goes through it.
    assert!(routes.contains(&("/api".into(), "news-frontend".into())));
    assert!(routes.contains(&("/v1".into(), "news-longpoll".into())));
    assert!(find(&objs, "HorizontalPodAutoscaler/news-sync").is_none());
    assert!(find(&objs, "PodDisruptionBudget/news-sync").is_none());

    let minimal = load(&dir("tests/fixtures/minimal.yaml"));
    let objs = desired::build(&minimal, &Inputs::default());
    assert!(objs.iter().all(|d| d.resource.kind != "Ingress"));
    assert!(
        objs.iter()
            .all(|d| d.resource.kind != "HorizontalPodAutoscaler")
    );
}

/// The metrics of the autoscaler of `tier` in `cc`.
fn hpa_metrics(cc: &CommentCluster, tier: &str) -> Vec<serde_json::Value> {
    let objs = desired::build(cc, &Inputs::default());
    let hpa = find(
        &objs,
        &format!(
            "HorizontalPodAutoscaler/{}-{tier}",
            cc.metadata.name.as_deref().unwrap()
        ),
    )
    .unwrap_or_else(|| panic!("{tier} has an autoscaler"));
    hpa.object.data["spec"]["metrics"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn each_tier_scales_on_its_own_metric() {
    use serde_json::json;
    let mut cc = load(&dir("tests/fixtures/autoscaled.yaml"));
    // Defaults: longpoll on held connections per pod, frontend on CPU.
    assert_eq!(
        hpa_metrics(&cc, "longpoll"),
        vec![json!({"type": "Pods", "pods": {
            "metric": {"name": "io360_longpoll_held_connections"},
            "target": {"type": "AverageValue", "averageValue": "5000"}}})]
    );
    assert_eq!(
        hpa_metrics(&cc, "frontend"),
        vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}})]
    );
    // logic on CPU, with the spec's further metrics after it.
    let logic = hpa_metrics(&cc, "logic");
    assert_eq!(logic[0]["resource"]["name"], "cpu");
    assert_eq!(
        logic[1]["pods"]["metric"]["name"],
        "http_requests_per_second"
    );

    // Chosen in the spec: logic on requests in flight, longpoll with its own target.
    fn auto(tier: &mut io360_operator::crd::TierSpec) -> &mut io360_operator::crd::AutoscalingSpec {
        tier.autoscaling.as_mut().unwrap()
    }
    auto(&mut cc.spec.logic).metric = Some(ScalingMetric::RequestsInFlight);
    auto(&mut cc.spec.logic).target_requests_in_flight = Some(30);
    auto(&mut cc.spec.longpoll).target_held_connections = Some(1200);
    validate(&cc).expect("a valid choice");
    let logic = hpa_metrics(&cc, "logic");
    assert_eq!(
        logic[0],
        json!({"type": "Pods", "pods": {
            "metric": {"name": "io360_http_requests_in_flight"},
            "target": {"type": "AverageValue", "averageValue": "30"}}})
    );
    assert_eq!(logic.len(), 2, "the spec's further metrics are kept");
    assert_eq!(
        hpa_metrics(&cc, "longpoll")[0]["pods"]["target"]["averageValue"],
        "1200"
    );
    // Requests in flight with no target of its own: the default.
    auto(&mut cc.spec.logic).target_requests_in_flight = None;
    assert_eq!(
        hpa_metrics(&cc, "logic")[0]["pods"]["target"]["averageValue"],
        "50"
    );
    // longpoll may go back to CPU.
    auto(&mut cc.spec.longpoll).metric = Some(ScalingMetric::Cpu);
    auto(&mut cc.spec.longpoll).target_held_connections = None;
    validate(&cc).expect("a valid choice");
    assert_eq!(hpa_metrics(&cc, "longpoll")[0]["resource"]["name"], "cpu");
}

#[test]
fn invalid_specs_name_the_field() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir("tests/fixtures/invalid")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
            .trim()
            .to_string();
        let cc: CommentCluster = serde_yaml::from_str(&text).unwrap();
        let err = validate(&cc).expect_err(&format!("{} should be invalid", path.display()));
        assert!(
            err.0.iter().any(|e| e.field == expect),
            "{}: expected an error on {expect}, got {err}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 8, "invalid fixtures went missing");
}

#[test]
fn checked_in_crd_is_fresh() {
    let path = dir("../crds/commentclusters.io360.dev.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == io360_operator::crd_yaml(),
        "{} is stale: run `cargo run -p io360-operator -- crd > crds/commentclusters.io360.dev.yaml`",
        path.display()
    );
}

fn pod_specs(objs: &[desired::DesiredObject]) -> Vec<(String, serde_json::Value)> {
    objs.iter()
        .filter(|d| matches!(d.resource.kind.as_str(), "Deployment" | "StatefulSet"))
        .map(|d| (d.key(), d.object.data["spec"]["template"]["spec"].clone()))
        .collect()
}

#[test]
fn startup_budget_scales_with_the_data_and_liveness_waits_for_it() {
    let auto = load(&dir("tests/fixtures/autoscaled.yaml"));
    let objs = desired::build(&auto, &Inputs::default());
    let probe = |key: &str, which: &str| {
        find(&objs, key).unwrap().object.data["spec"]["template"]["spec"]["containers"][0][which]
            .clone()
    };
    // store: 20Gi → 120 s + 30 s × 20 = 720 s, in 5 s periods.
    let store = probe("StatefulSet/news-store", "startupProbe");
    assert_eq!(store["periodSeconds"], 5);
    assert_eq!(store["failureThreshold"], 144);
    // logger: 5Gi → 270 s.
    assert_eq!(
        probe("Deployment/news-logger", "startupProbe")["failureThreshold"],
        54
    );
    for (key, spec) in pod_specs(&objs) {
        let c = &spec["containers"][0];
        assert!(c["startupProbe"].is_object(), "{key} has no startup probe");
        assert!(
            c["livenessProbe"].get("initialDelaySeconds").is_none(),
            "{key}: the startup probe, not a delay, holds liveness back"
        );
        assert!(c["livenessProbe"]["timeoutSeconds"].as_i64().unwrap() >= 3);
    }
    // An explicit budget wins; a huge volume is capped at an hour.
    let mut big = auto.clone();
    big.spec.store.tier.startup_seconds = Some(1800);
    big.spec.logger.storage.size = "2Ti".into();
    let objs = desired::build(&big, &Inputs::default());
    let threshold = |key: &str| {
        find(&objs, key).unwrap().object.data["spec"]["template"]["spec"]["containers"][0]
            ["startupProbe"]["failureThreshold"]
            .clone()
    };
    assert_eq!(threshold("StatefulSet/news-store"), 360);
    assert_eq!(threshold("Deployment/news-logger"), 720);
}

#[test]
fn every_pod_drains_before_sigterm_within_the_grace_period() {
    let mut cc = load(&dir("tests/fixtures/minimal.yaml"));
    let objs = desired::build(&cc, &Inputs::default());
    let specs = pod_specs(&objs);
    assert_eq!(specs.len(), 6);
    for (key, spec) in &specs {
        assert_eq!(spec["terminationGracePeriodSeconds"], 30, "{key}");
        assert_eq!(
            spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"], 5,
            "{key}"
        );
    }
    cc.spec.shutdown.drain_seconds = 15;
    cc.spec.shutdown.termination_grace_period_seconds = 60;
    for (key, spec) in pod_specs(&desired::build(&cc, &Inputs::default())) {
        assert_eq!(spec["terminationGracePeriodSeconds"], 60, "{key}");
        assert_eq!(
            spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"], 15,
            "{key}"
        );
    }
    let delay = |spec: &serde_json::Value| {
        spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "IO360_SHUTDOWN_DELAY_SECS")
            .map(|e| e["value"].clone())
    };
    for (key, spec) in pod_specs(&desired::build(&cc, &Inputs::default())) {
        assert_eq!(
            delay(&spec),
            Some("2".into()),
            "{key}: answers on after SIGTERM"
        );
    }
    cc.spec.shutdown.drain_seconds = 0;
    for (key, spec) in pod_specs(&desired::build(&cc, &Inputs::default())) {
        assert!(spec["containers"][0].get("lifecycle").is_none(), "{key}");
        assert_eq!(delay(&spec), None, "{key}");
    }
}

fn ports_of(rule: &serde_json::Value) -> Vec<(i64, String)> {
    rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn components(rule: &serde_json::Value, key: &str) -> Vec<String> {
    rule[key]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| {
                    p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                        .as_str()
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_tier_has_a_network_policy_in_and_out_with_metrics_apart() {
    let mut cc = load(&dir("tests/fixtures/minimal.yaml"));
    let objs = desired::build(&cc, &Inputs::default());
    let policies: Vec<_> = objs
        .iter()
        .filter(|d| d.resource.kind == "NetworkPolicy")
        .collect();
    assert_eq!(policies.len(), 6, "one per tier");
    for np in &policies {
        let spec = &np.object.data["spec"];
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        let ingress = spec["ingress"].as_array().unwrap();
        // Metrics on a port of their own, open to scrapers (anyone, as none are named).
        let metrics = ingress
            .iter()
            .find(|r| ports_of(r) == [(9090, "TCP".to_string())])
            .unwrap_or_else(|| panic!("{}: no metrics rule", np.key()));
        assert!(metrics.get("from").is_none());
        // DNS out, for every tier.
        let egress = spec["egress"].as_array().unwrap();
        assert!(
            egress
                .iter()
                .any(|r| ports_of(r).contains(&(53, "UDP".to_string()))),
            "{}: no DNS",
            np.key()
        );
    }
    let np = |tier: &str| {
        &policies
            .iter()
            .find(|d| d.key() == format!("NetworkPolicy/blog-{tier}"))
            .unwrap()
            .object
            .data["spec"]
    };
    let api_in = |tier: &str| {
        np(tier)["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| ports_of(r) == [(8080, "TCP".to_string())])
            .unwrap()
            .clone()
    };
    let mut store_from = components(&api_in("store"), "from");
    store_from.sort();
    assert_eq!(store_from, ["logic", "sync"]);
    assert_eq!(components(&api_in("sync"), "from"), ["longpoll"]);
    assert!(api_in("frontend").get("from").is_none(), "public");
    let calls = |tier: &str| {
        let mut out: Vec<String> = np(tier)["egress"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| ports_of(r) == [(8080, "TCP".to_string())])
            .flat_map(|r| components(r, "to"))
            .collect();
        out.sort();
        out
    };
    assert_eq!(calls("frontend"), ["logger", "logic", "longpoll"]);
    assert_eq!(calls("logic"), ["logger", "store"]);
    assert_eq!(calls("longpoll"), ["logger", "logic", "sync"]);
    assert_eq!(calls("store"), ["logger"]);
    assert!(calls("logger").is_empty());
    let api_server = |tier: &str| {
        np(tier)["egress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| ports_of(r).contains(&(6443, "TCP".to_string())))
            .cloned()
    };
    for tier in ["frontend", "logic"] {
        assert!(api_server(tier).is_some(), "{tier} watches its ConfigMap");
    }
    for tier in ["store", "sync", "longpoll", "logger"] {
        assert!(api_server(tier).is_none(), "{tier} has no business there");
    }

    // Named scrapers and API server addresses narrow the rules.
    cc.spec.network = serde_json::from_value(serde_json::json!({
        "metricsScrapers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "apiServerCidrs": ["10.0.0.1/32"],
    }))
    .unwrap();
    let objs = desired::build(&cc, &Inputs::default());
    let logic = &find(&objs, "NetworkPolicy/blog-logic").unwrap().object.data["spec"];
    let metrics = logic["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| ports_of(r) == [(9090, "TCP".to_string())])
        .unwrap();
    assert_eq!(
        metrics["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let api = logic["egress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| ports_of(r).contains(&(443, "TCP".to_string())))
        .unwrap();
    assert_eq!(api["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
}

#[test]
fn the_admin_token_is_a_file_in_logic_only_and_its_revision_rolls_logic() {
    let cc = load(&dir("tests/fixtures/site-configmap.yaml"));
    let objs = desired::build(&cc, &Inputs::default());
    for (key, spec) in pod_specs(&objs) {
        let env = spec["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.iter()
                .all(|e| e["valueFrom"].get("secretKeyRef").is_none()),
            "{key}: a Secret in an environment variable"
        );
        let mounts_token = spec["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["secret"]["secretName"] == "docs-admin"));
        assert_eq!(mounts_token, key == "Deployment/docs-logic", "{key}");
    }
    let logic = pod_specs(&objs)
        .into_iter()
        .find(|(k, _)| k == "Deployment/docs-logic")
        .unwrap()
        .1;
    let env = logic["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "IO360_ADMIN_TOKEN_FILE"
        && e["value"] == "/var/run/secrets/io360/admin/token"));

    let hash = |cc: &CommentCluster, key: &str| {
        find(&desired::build(cc, &Inputs::default()), key)
            .unwrap()
            .object
            .data["spec"]["template"]["metadata"]["annotations"][desired::CONFIG_HASH]
            .clone()
    };
    let mut rotated = cc.clone();
    rotated.spec.admin_token_secret.revision = Some("2".into());
    assert_ne!(
        hash(&cc, "Deployment/docs-logic"),
        hash(&rotated, "Deployment/docs-logic")
    );
    assert_eq!(
        hash(&cc, "Deployment/docs-frontend"),
        hash(&rotated, "Deployment/docs-frontend")
    );
}

#[test]
fn each_tier_mounts_only_its_own_items_of_the_tier_keys_secret() {
    let cc = load(&dir("tests/fixtures/minimal.yaml"));
    let name = cc.metadata.name.clone().unwrap();
    let objs = desired::build(&cc, &Inputs::default());
    let specs = pod_specs(&objs);
    assert_eq!(specs.len(), 6);
    for (key, spec) in specs {
        let tier = key.rsplit('-').next().unwrap();
        let vol = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tier-keys")
            .unwrap_or_else(|| panic!("{key}: no tier-keys volume"));
        assert_eq!(vol["secret"]["secretName"], format!("{name}-tier-keys"));
        assert_eq!(vol["secret"]["defaultMode"], 0o440, "{key}");
        let items: Vec<(String, String)> = vol["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().to_owned(),
                    i["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let token = (format!("{tier}.token"), "token".to_owned());
        let keys = ("keys".to_owned(), "keys".to_owned());
        let want = match tier {
            "frontend" | "longpoll" => vec![token],
            "logic" | "store" | "sync" => vec![token, keys],
            "logger" => vec![keys],
            other => panic!("unknown tier {other}"),
        };
        assert_eq!(items, want, "{key}");
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "tier-keys")
            .unwrap();
        assert_eq!(mount["mountPath"], "/var/run/secrets/io360/tier");
        assert_eq!(mount["readOnly"], true);
        assert!(mount.get("subPath").is_none(), "a subPath is never updated");
        let env = spec["containers"][0]["env"].as_array().unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e["name"] == n)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            var("IO360_TIER_TOKEN_FILE").is_some(),
            tier != "logger",
            "{key}"
        );
        assert_eq!(
            var("IO360_TIER_KEYS_FILE").is_some(),
            matches!(tier, "logic" | "store" | "sync" | "logger"),
            "{key}"
        );
    }
}

#[test]
fn store_has_a_headless_governing_service_and_images_are_pinned() {
    let cc = load(&dir("tests/fixtures/minimal.yaml"));
    let objs = desired::build(&cc, &Inputs::default());
    let svc = find(&objs, "Service/blog-store").unwrap();
    assert_eq!(svc.object.data["spec"]["clusterIP"], "None");
    let sts = find(&objs, "StatefulSet/blog-store").unwrap();
    assert_eq!(sts.object.data["spec"]["serviceName"], "blog-store");
    assert!(
        find(&objs, "Service/blog-logic").unwrap().object.data["spec"]
            .get("clusterIP")
            .is_none()
    );
    for (key, spec) in pod_specs(&objs) {
        assert_eq!(
            spec["containers"][0]["image"],
            format!("io360:{}", env!("CARGO_PKG_VERSION")),
            "{key}: the default tag is the operator's own version"
        );
    }
    let mut pinned = cc.clone();
    let digest = format!("sha256:{}", "ab".repeat(32));
    pinned.spec.image.digest = Some(digest.clone());
    for (key, spec) in pod_specs(&desired::build(&pinned, &Inputs::default())) {
        assert_eq!(
            spec["containers"][0]["image"],
            format!("io360:{}@{digest}", env!("CARGO_PKG_VERSION")),
            "{key}"
        );
    }
}

#[test]
fn email_adds_the_notify_tier_rolls_only_logic_and_keeps_the_login_in_notify() {
    let plain = load(&dir("tests/fixtures/minimal.yaml"));
    let with_email = load(&dir("tests/fixtures/notifications.yaml"));
    let name = plain.metadata.name.clone().unwrap();
    let mut on = plain.clone();
    on.spec.notifications = with_email.spec.notifications.clone();
    let before = desired::build(&plain, &Inputs::default());
    let after = desired::build(&on, &Inputs::default());
    let hash = |objs: &[desired::DesiredObject], key: &str| {
        find(objs, key).unwrap().object.data["spec"]["template"]["metadata"]["annotations"]
            [desired::CONFIG_HASH]
            .clone()
    };
    // Without email there is no notify object at all.
    assert!(before.iter().all(|d| !d.key().contains("notify")));
    for (key, _) in pod_specs(&before) {
        if key.ends_with("-logic") {
            assert_ne!(hash(&before, &key), hash(&after, &key), "{key}");
        } else {
            assert_eq!(hash(&before, &key), hash(&after, &key), "{key} rolled");
        }
    }
    for key in [
        format!("Deployment/{name}-notify"),
        format!("Service/{name}-notify"),
        format!("NetworkPolicy/{name}-notify"),
        format!("PersistentVolumeClaim/{name}-notify-data"),
    ] {
        assert!(find(&after, &key).is_some(), "{key} missing");
    }
    let env_of = |objs: &[desired::DesiredObject], key: &str| -> Vec<(String, String)> {
        find(objs, key).unwrap().object.data["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let logic = env_of(&after, &format!("Deployment/{name}-logic"));
    assert!(logic.contains(&(
        "IO360_NOTIFY_URL".into(),
        format!("http://{name}-notify:8080")
    )));
    // The login is a file in notify pods only; the URL in the environment holds no password.
    for (key, spec) in pod_specs(&after) {
        let mounts_login = spec["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["secret"]["secretName"] == "forum-smtp"));
        assert_eq!(mounts_login, key.ends_with("-notify"), "{key}");
    }
    let notify = env_of(&after, &format!("Deployment/{name}-notify"));
    assert!(notify.contains(&(
        "IO360_SMTP_URL".into(),
        "smtp://smtp.example.org:587?tls=required".into()
    )));
    // Notify may call store (the feed) and logger, is called by logic only, and reaches the
    // mail server on its port; store and logger let notify in.
    let np = |tier: &str| {
        find(&after, &format!("NetworkPolicy/{name}-{tier}"))
            .unwrap()
            .object
            .data["spec"]
            .clone()
    };
    let notify_np = np("notify");
    assert_eq!(
        components(&notify_np["ingress"][0], "from"),
        vec!["logic".to_string()]
    );
    assert_eq!(
        components(&notify_np["egress"][1], "to"),
        vec!["store".to_string(), "logger".to_string()]
    );
    assert_eq!(
        ports_of(&notify_np["egress"][2]),
        vec![(587, "TCP".to_string())]
    );
    for tier in ["store", "logger"] {
        assert!(
            components(&np(tier)["ingress"][0], "from").contains(&"notify".to_string()),
            "{tier} lets notify in"
        );
    }
    assert!(components(&np("logic")["egress"][1], "to").contains(&"notify".to_string()));

    // A new login revision restarts notify, and nothing else.
    let mut rotated = on.clone();
    if let Some(n) = rotated.spec.notifications.as_mut() {
        n.smtp
            .as_mut()
            .unwrap()
            .credentials_secret
            .as_mut()
            .unwrap()
            .revision = Some("2026-02".into());
    }
    let rolled = desired::build(&rotated, &Inputs::default());
    for (key, _) in pod_specs(&after) {
        assert_eq!(
            hash(&after, &key) != hash(&rolled, &key),
            key.ends_with("-notify"),
            "{key}"
        );
    }
}

#[test]
fn webhooks_reach_public_addresses_only_unless_the_spec_says_where() {
    let email = load(&dir("tests/fixtures/notifications.yaml"));
    let objs = desired::build(&email, &Inputs::default());
    let np = find(&objs, "NetworkPolicy/forum-notify")
        .unwrap()
        .object
        .data["spec"]
        .clone();
    // DNS, the tiers, the mail server, then the webhook receivers.
    let hooks = &np["egress"][3];
    assert_eq!(
        ports_of(hooks),
        vec![(443, "TCP".to_string()), (80, "TCP".to_string())]
    );
    let v4 = &hooks["to"][0]["ipBlock"];
    assert_eq!(v4["cidr"], "0.0.0.0/0");
    for private in [
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "192.168.0.0/16",
    ] {
        assert!(
            v4["except"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == private),
            "{private} reachable"
        );
    }
    assert_eq!(hooks["to"][1]["ipBlock"]["cidr"], "::/0");

    let alone = load(&dir("tests/fixtures/webhooks-only.yaml"));
    let objs = desired::build(&alone, &Inputs::default());
    let env_of = |key: &str| -> Vec<(String, String)> {
        find(&objs, key).unwrap().object.data["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let notify = env_of("Deployment/hooks-notify");
    assert!(notify.contains(&("IO360_WEBHOOKS".into(), "true".into())));
    assert!(notify.contains(&("IO360_WEBHOOK_ALLOW_PRIVATE".into(), "true".into())));
    assert!(!notify.iter().any(|(k, _)| k == "IO360_SMTP_URL"));
    let logic = env_of("Deployment/hooks-logic");
    assert!(logic.contains(&("IO360_NOTIFY_EMAIL".into(), "false".into())));
    let np = find(&objs, "NetworkPolicy/hooks-notify")
        .unwrap()
        .object
        .data["spec"]
        .clone();
    let egress = np["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3, "DNS, the tiers, the receivers: {egress:?}");
    assert_eq!(ports_of(&egress[2]), vec![(8443, "TCP".to_string())]);
    assert!(egress[2]["to"][0]["namespaceSelector"].is_object());
}

#[test]
fn the_database_ca_is_mounted_beside_the_url_and_its_revision_rolls_only_the_store() {
    let with_ca = load(&dir("tests/fixtures/store-postgres.yaml"));
    let volume = |cc: &CommentCluster| {
        let objs = desired::build(cc, &Inputs::default());
        let spec =
            find(&objs, "Deployment/shop-store").unwrap().object.data["spec"]["template"]["spec"]
                .clone();
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "database-url")
            .unwrap()
            .clone()
    };
    let v = volume(&with_ca);
    let sources = v["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["secret"]["name"], "comments-db-app");
    assert_eq!(sources[0]["secret"]["items"][0]["path"], "url");
    assert_eq!(sources[1]["secret"]["name"], "comments-db-ca");
    assert_eq!(sources[1]["secret"]["items"][0]["key"], "ca.crt");
    assert_eq!(sources[1]["secret"]["items"][0]["path"], "ca.crt");

    // Without a CA, the Secret volume it always was.
    let mut without = with_ca.clone();
    without.spec.store.postgres.as_mut().unwrap().ca_secret = None;
    let v = volume(&without);
    assert_eq!(v["secret"]["secretName"], "comments-db-app");
    assert!(v.get("projected").is_none());

    let hash = |cc: &CommentCluster, key: &str| {
        find(&desired::build(cc, &Inputs::default()), key)
            .unwrap()
            .object
            .data["spec"]["template"]["metadata"]["annotations"][desired::CONFIG_HASH]
            .clone()
    };
    let mut rotated = with_ca.clone();
    rotated
        .spec
        .store
        .postgres
        .as_mut()
        .unwrap()
        .ca_secret
        .as_mut()
        .unwrap()
        .revision = Some("2027".into());
    for (key, _) in pod_specs(&desired::build(&with_ca, &Inputs::default())) {
        assert_eq!(
            hash(&with_ca, &key) != hash(&rotated, &key),
            key == "Deployment/shop-store",
            "{key}"
        );
    }
}
