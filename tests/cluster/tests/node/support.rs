//! What the real-node tests share: the cluster with its real node, io360's images pushed to
//! the node's registry, the operator installed with Helm, and helpers to make namespaces and
//! CommentClusters that run on the real node and to reach their Services.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::future::BoxFuture;
use io360_cluster_tests::isolate::{NODE_IP, RunNamespace};
use io360_cluster_tests::{
    Cluster, LOCAL_STORAGE_CLASS, REAL_NODE_LABEL, REAL_NODE_TAINT, run, wait,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

/// A test of the suite.
pub type TestFn = for<'a> fn(&'a Suite) -> BoxFuture<'a, Result<()>>;

/// Where the chart is installed.
pub const RELEASE_NAMESPACE: &str = "io360-system";
/// The Helm release.
pub const RELEASE: &str = "io360";
/// The two tags the io360 image is pushed under (the same image), so a test can roll a
/// cluster from one to the other.
pub const TAGS: [&str; 2] = ["node-a", "node-b"];
/// The port every tier's Service listens on.
pub const TIER_PORT: u16 = 8080;

/// The images `tests/images/build.sh` built, as its `images.env` lists them.
#[derive(Debug)]
pub struct Images {
    /// `<registry>/io360`, pushed under each of [`TAGS`].
    pub io360: String,
    /// `<registry>/io360-operator:<version>`.
    pub operator_repository: String,
    /// The operator image's tag: the workspace version.
    pub operator_tag: String,
    /// Each image's uncompressed size, for the measurements printed at the end.
    pub sizes: Vec<(String, String)>,
}

/// The suite's shared state; the cluster drops last.
pub struct Suite {
    /// An admin client.
    pub client: kube::Client,
    /// A client for the pods' and Services' addresses, which exist only in this namespace.
    pub http: reqwest::Client,
    /// The images in the node's registry.
    pub images: Images,
    measurements: Mutex<Vec<String>>,
    /// The cluster, its real node and control plane.
    pub cluster: Cluster,
}

/// The file `tests/images/build.sh` writes after building the images.
fn images_env() -> Result<BTreeMap<String, String>> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    let path = cache.join("io360/images/out/images.env");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: build the images first with `bash tests/images/build.sh`",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

impl Suite {
    /// Starts the cluster with its real node, pushes the images, and installs the chart with
    /// the operator image from the node's registry, placed on the real node.
    pub async fn start(run: &RunNamespace) -> Result<Suite> {
        let env = images_env()?;
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| anyhow!("images.env has no {k}"))
        };
        let started = Instant::now();
        let cluster = Cluster::start_with_real_node(run)
            .await
            .context("starting the control plane and the real node")?;
        let mut measurements = vec![format!(
            "control plane and real node up in {:.1} s",
            started.elapsed().as_secs_f64()
        )];
        let node = cluster.real_node().expect("started with a real node");

        let pushed = Instant::now();
        let io360_archive = PathBuf::from(var("IO360_ARCHIVE")?);
        let mut io360 = String::new();
        for tag in TAGS {
            let reference = node.push_archive(&io360_archive, "io360", tag)?;
            io360 = reference
                .rsplit_once(':')
                .map(|(repo, _)| repo.to_string())
                .unwrap_or(reference);
        }
        let version = var("VERSION")?;
        let operator_ref = node.push_archive(
            &PathBuf::from(var("OPERATOR_ARCHIVE")?),
            "io360-operator",
            &version,
        )?;
        measurements.push(format!(
            "images pushed to the node's registry in {:.1} s",
            pushed.elapsed().as_secs_f64()
        ));
        let sizes = env
            .iter()
            .filter(|(k, _)| k.ends_with("_SIZE") || k.ends_with("_BYTES"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let images = Images {
            io360,
            operator_repository: operator_ref
                .rsplit_once(':')
                .map(|(repo, _)| repo.to_string())
                .unwrap_or_default(),
            operator_tag: version,
            sizes,
        };

        let client = cluster.client().await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()?;
        let suite = Suite {
            client,
            http,
            images,
            measurements: Mutex::new(measurements),
            cluster,
        };
        let installed = Instant::now();
        suite.helm_install().await?;
        suite.measure(format!(
            "helm install --wait of the operator (two pods Ready) in {:.1} s",
            installed.elapsed().as_secs_f64()
        ));
        Ok(suite)
    }

    async fn helm_install(&self) -> Result<()> {
        let chart = repo_root().join("charts/io360-operator");
        let selector = json!({ REAL_NODE_LABEL.0: REAL_NODE_LABEL.1 }).to_string();
        let tolerations = json!([toleration()]).to_string();
        run(self
            .cluster
            .helm()
            .args(["install", RELEASE])
            .arg(&chart)
            .args([
                "--namespace",
                RELEASE_NAMESPACE,
                "--create-namespace",
                "--wait",
                "--timeout",
                "4m",
                "--set",
                &format!("image.repository={}", self.images.operator_repository),
                "--set",
                &format!("image.tag={}", self.images.operator_tag),
                "--set",
                "degradeIntervalSeconds=2",
                "--set-json",
                &format!("nodeSelector={selector}"),
                "--set-json",
                &format!("tolerations={tolerations}"),
            ]))
        .await
        .context("helm install of charts/io360-operator with the image from the node's registry")?;
        Ok(())
    }

    /// Notes a figure for the summary printed after the last test.
    pub fn measure(&self, line: String) {
        eprintln!("measured: {line}");
        self.measurements.lock().expect("poisoned").push(line);
    }

    /// Prints every figure noted during the run, and the images' sizes.
    pub async fn print_measurements(&self) {
        println!("\n--- real-node measurements ---");
        for (k, v) in &self.images.sizes {
            println!("{k} = {v}");
        }
        for line in self.measurements.lock().expect("poisoned").iter() {
            println!("{line}");
        }
    }

    /// Polls `check` every 500 ms up to `secs`, failing at once if a node or control-plane
    /// component died.
    pub async fn wait<T, F, Fut>(&self, what: &str, secs: u64, check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        Ok(wait::until_alive(
            what,
            Duration::from_secs(secs),
            Duration::from_millis(500),
            || self.cluster.check_running(),
            check,
        )
        .await?)
    }

    /// `kubectl <args>` as admin; its stdout.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        Ok(run(self.cluster.kubectl().args(args)).await?)
    }

    /// Creates namespace `node-<name>`, enforcing the `restricted` Pod Security Standard, with
    /// the admin token Secret and a ConfigMap holding a one-page site whose thread is `/`.
    pub async fn namespace(&self, name: &str) -> Result<String> {
        let ns = format!("node-{name}");
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {
                    "name": ns,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                }}))?,
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        let page = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                    <title>A real node</title></head>\n<body><h1>io360 on a real node</h1>\n\
                    <section id=\"io360-thread\" data-thread=\"/\"></section>\n\
                    <script src=\"/embed.js\" defer></script></body></html>\n";
        for object in [
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "admin-token"},
                "stringData": {"token": format!("node-admin-token-{name}")},
            }),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "site"},
                "data": {"index.html": page},
            }),
        ] {
            self.apply(&ns, &object).await?;
        }
        Ok(ns)
    }

    /// `kubectl apply -f` of one object.
    pub async fn apply(&self, ns: &str, object: &Value) -> Result<String> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let kind = object["kind"].as_str().unwrap_or("object");
        let path = self
            .cluster
            .scratch()
            .join(format!("{ns}-{kind}-{name}-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&[
            "apply",
            "--server-side",
            "-n",
            ns,
            "-f",
            &path.display().to_string(),
        ])
        .await
    }

    /// Deletes a namespace and waits until it is gone, so its pods free the node.
    pub async fn delete_namespace(&self, ns: &str) -> Result<()> {
        self.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"])
            .await?;
        Ok(())
    }

    /// The CommentCluster API of a namespace, untyped.
    pub fn comment_clusters(&self, ns: &str) -> Api<DynamicObject> {
        io360_cluster_tests::cc::api(&self.client, ns)
    }

    /// A CommentCluster as JSON, or an error string for waits.
    pub async fn cc(&self, ns: &str, name: &str) -> std::result::Result<Value, String> {
        io360_cluster_tests::cc::get(&self.client, ns, name).await
    }

    /// Waits until the CommentCluster is Ready for its current generation.
    pub async fn wait_ready(&self, ns: &str, name: &str, secs: u64) -> Result<Value> {
        self.wait(
            &format!("CommentCluster {ns}/{name} Ready"),
            secs,
            || async move {
                let cc = self.cc(ns, name).await?;
                io360_cluster_tests::cc::ready_for_generation(&cc).map(|()| cc)
            },
        )
        .await
    }

    /// `http://<ClusterIP>:8080` of a tier's Service (`<cc>-<tier>`).
    pub async fn service_url(&self, ns: &str, cc: &str, tier: &str) -> Result<String> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let name = format!("{cc}-{tier}");
        let service = services
            .get(&name)
            .await
            .with_context(|| format!("reading Service {ns}/{name}"))?;
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| anyhow!("Service {ns}/{name} has no ClusterIP"))?;
        Ok(format!("http://{ip}:{TIER_PORT}"))
    }

    /// Pods of a namespace matching a label selector.
    pub async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    /// A failed test's error, with what the cluster showed: pods and their states, recent
    /// events, the operator's log and the kubelet's.
    pub async fn failure_report(&self, test: &str, error: &anyhow::Error) -> String {
        let pods = self
            .kubectl(&["get", "pods", "-A", "-o", "wide"])
            .await
            .unwrap_or_else(|e| e.to_string());
        let events = self
            .kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
            .await
            .map(|e| tail(&e, 30))
            .unwrap_or_else(|e| e.to_string());
        let operator = self
            .kubectl(&[
                "logs",
                "-n",
                RELEASE_NAMESPACE,
                "-l",
                "app.kubernetes.io/name=io360-operator",
                "--tail=30",
                "--prefix",
            ])
            .await
            .unwrap_or_else(|e| e.to_string());
        let kubelet = self
            .cluster
            .real_node()
            .map(|n| io360_cluster_tests::log_tail(&n.log("kubelet"), 20))
            .unwrap_or_default();
        format!(
            "{test}: {error:#}\n--- pods ---\n{pods}\n--- events ---\n{events}\n\
             --- operator ---\n{operator}\n--- kubelet ---\n{kubelet}"
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The toleration of the real node's taint.
pub fn toleration() -> Value {
    json!({
        "key": REAL_NODE_TAINT.0,
        "operator": "Equal",
        "value": REAL_NODE_TAINT.1,
        "effect": "NoSchedule",
    })
}

/// Where a tier's pods go in these tests: the real node, with little CPU asked for.
pub fn on_the_node() -> Value {
    json!({
        "nodeSelector": { REAL_NODE_LABEL.0: REAL_NODE_LABEL.1 },
        "tolerations": [toleration()],
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"memory": "256Mi"},
        },
    })
}

/// [`on_the_node`], for a tier with a volume of its own on the node's local storage.
pub fn on_the_node_with_storage() -> Value {
    let mut tier = on_the_node();
    tier["storage"] = json!({"size": "1Gi", "storageClassName": LOCAL_STORAGE_CLASS});
    tier
}

/// A CommentCluster on the real node: every tier tolerates the node's taint and selects it,
/// asks for little CPU (seven pods per cluster share two cores), keeps its data on the node's
/// local volumes, and serves the site from ConfigMap `site`. `spec` is merged over that.
pub fn comment_cluster(suite: &Suite, name: &str, tag: &str, spec: Value) -> Value {
    let place = on_the_node();
    let data_tier = on_the_node_with_storage();
    let mut scaled = place.clone();
    scaled["replicas"] = json!(1);
    let mut base = json!({
        "apiVersion": "io360.dev/v1alpha1",
        "kind": "CommentCluster",
        "metadata": {"name": name},
        "spec": {
            "image": {"repository": suite.images.io360, "tag": tag},
            "adminTokenSecret": {"name": "admin-token"},
            "site": {"configMap": {"name": "site"}},
            // Every comment shows at once; moderation has its own tests.
            "moderation": "none",
            "frontend": scaled,
            "logic": scaled,
            "sync": scaled,
            "longpoll": scaled,
            "store": data_tier,
            "logger": data_tier,
            // The node enforces NetworkPolicies: frontend and logic may reach the API server
            // at the node's address (port 6443), not every address on 443 and 6443.
            "network": {"apiServerCidrs": [format!("{NODE_IP}/32")]},
        },
    });
    merge(&mut base["spec"], spec);
    base
}

pub use io360_cluster_tests::merge_json as merge;

/// A condition's status, reason and message from `status.conditions`.
pub use io360_cluster_tests::cc::condition;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Fails unless every pod of the selector is Ready, naming the ones that are not.
pub fn all_ready(pods: &[Pod]) -> std::result::Result<(), String> {
    if pods.is_empty() {
        return Err("no pods".into());
    }
    let not_ready: Vec<String> = pods
        .iter()
        .filter(|p| !pod_ready(p))
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("not Ready: {not_ready:?}"))
    }
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Seconds from a pod's container start to its Ready condition, if both happened.
pub fn start_to_ready(pod: &Pod) -> Option<f64> {
    let status = pod.status.as_ref()?;
    let started = status
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()?
        .0;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0;
    let millis = ready.as_millisecond() - started.as_millisecond();
    Some((millis as f64 / 1000.0).max(0.0))
}
