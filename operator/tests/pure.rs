//! The pure half of the operator: CommentCluster YAML fixtures in, desired objects out
//! (snapshot tests), validation errors that name the field, and the checked-in CRD.
//!
//! Snapshots live in `tests/snapshots/`; after an intended change, regenerate them with
//! `IO360_UPDATE_SNAPSHOTS=1 cargo test -p io360-operator --test pure` and review the diff.

use std::path::{Path, PathBuf};

use io360_operator::crd::CommentCluster;
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

fn check_snapshot(name: &str, actual: &str) {
    let path = dir("tests/snapshots").join(format!("{name}.yaml"));
    if std::env::var_os("IO360_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with IO360_UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "snapshot {name} differs from line {}:\n expected: {:?}\n   actual: {:?}\n\
             (IO360_UPDATE_SNAPSHOTS=1 regenerates it)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
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
    assert!(routes.contains(&("/api".into(), "news-logic".into())));
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
