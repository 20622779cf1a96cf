//! What every test of the suite shares: the cluster, the installed chart, the operator
//! process running as the chart's ServiceAccount, and helpers to drive and observe them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::future::BoxFuture;
use io360_cluster_tests::{Cluster, ClusterMode, Process, run, wait};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// A test of the suite.
pub type TestFn = for<'a> fn(&'a Suite) -> BoxFuture<'a, Result<()>>;

/// The namespace the chart is installed into.
pub const RELEASE_NAMESPACE: &str = "io360-system";
/// The Helm release name.
pub const RELEASE: &str = "io360-operator";
/// The label on every namespace the suite creates, so a run against an existing cluster can
/// remove what an earlier, interrupted run left.
pub const E2E_LABEL: &str = "io360.dev/e2e";
/// The identity the local operator uses for leader election.
pub const OPERATOR_IDENTITY: &str = "io360-e2e-local-operator";

/// The suite's shared state. Fields drop in order: processes before the cluster they talk to.
pub struct Suite {
    operator: Mutex<Process>,
    /// Byte ranges of the operator's log written while the API server was restarting; while
    /// its authorizer warms up it briefly refuses everyone, which is not an RBAC gap.
    outages: Mutex<Vec<(usize, usize)>>,
    /// Tests take this for reading; the API-server restart takes it for writing, so it runs
    /// alone.
    pub restart_gate: tokio::sync::RwLock<()>,
    /// Held by tests that run an HPA controller or play one by writing HPA status, so they do
    /// not fight over HPA status.
    pub hpa_gate: tokio::sync::Mutex<()>,
    /// The chart's ServiceAccount the operator runs as.
    pub operator_account: String,
    /// The kubeconfig authenticating as that ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    io360_binary: tokio::sync::OnceCell<PathBuf>,
    /// An admin client.
    pub client: kube::Client,
    /// The cluster (dropped last).
    pub cluster: Cluster,
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Builds a binary of a workspace package into the target directory this test binary came
/// from, and returns its path. Under `cargo test --workspace` it is usually up to date already.
pub async fn cargo_build(package: &str, bin: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<this test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test binary location {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("unexpected test binary location {}", exe.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "-p", package, "--bin", bin, "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    run(&mut cmd)
        .await
        .with_context(|| format!("building {bin} (package {package})"))?;
    let path = profile_dir.join(bin);
    if !path.is_file() {
        bail!(
            "cargo built {package} but {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Suite {
    /// Builds the operator, starts the cluster, installs the chart and starts the operator as
    /// the chart's ServiceAccount.
    pub async fn start() -> Result<Suite> {
        let operator_binary = cargo_build("io360-operator", "io360-operator").await?;
        let cluster = Cluster::start()
            .await
            .context("starting the test cluster")?;
        let client = cluster.client().await?;

        if cluster.mode() == ClusterMode::External {
            clean_external(&cluster).await;
        }
        let chart = repo_root().join("charts/io360-operator");
        run(cluster.helm().args(["install", RELEASE]).arg(&chart).args([
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
        ]))
        .await
        .context("helm install of charts/io360-operator")?;

        let manifest = run(cluster.helm().args([
            "get",
            "manifest",
            RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
        ]))
        .await
        .context("helm get manifest")?;
        let operator_account = chart_service_account(&manifest)?;
        let operator_kubeconfig = cluster
            .service_account_kubeconfig(RELEASE_NAMESPACE, &operator_account)
            .await?;

        let metrics_port = free_port()?;
        let log = cluster.scratch().join("operator.log");
        let operator = Process::start_with_env(
            "io360-operator",
            &operator_binary,
            vec!["run".into()],
            vec![
                (
                    "KUBECONFIG".into(),
                    operator_kubeconfig.display().to_string(),
                ),
                (
                    "IO360_OPERATOR_METRICS_ADDR".into(),
                    format!("127.0.0.1:{metrics_port}"),
                ),
                ("POD_NAMESPACE".into(), RELEASE_NAMESPACE.into()),
                ("POD_NAME".into(), OPERATOR_IDENTITY.into()),
                ("IO360_OPERATOR_DEGRADE_INTERVAL".into(), "1".into()),
                // A tier key rotation steps every 3 s here, not every few minutes.
                ("IO360_OPERATOR_TIER_KEYS_GRACE_SECS".into(), "3".into()),
                ("IO360_LOG".into(), "info".into()),
            ],
            log,
        )?;

        let suite = Suite {
            operator: Mutex::new(operator),
            outages: Mutex::new(Vec::new()),
            restart_gate: tokio::sync::RwLock::new(()),
            hpa_gate: tokio::sync::Mutex::new(()),
            operator_account,
            operator_kubeconfig,
            io360_binary: tokio::sync::OnceCell::new(),
            client,
            cluster,
        };
        let health = format!("http://127.0.0.1:{metrics_port}/healthz");
        suite
            .wait("the operator's /healthz", 60, || {
                let health = health.clone();
                async move {
                    match reqwest::get(&health).await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        Ok(suite)
    }

    /// The `io360` tier binary, built on first use.
    pub async fn io360_binary(&self) -> Result<&Path> {
        self.io360_binary
            .get_or_try_init(|| cargo_build("io360", "io360"))
            .await
            .map(PathBuf::as_path)
    }

    /// Does what the kubelet does for the operator's pod (restartPolicy Always): if the
    /// operator has exited cleanly, as a leader-elected controller does when it cannot renew
    /// its Lease, start it again. Returns whether it did. A crash (non-zero exit or a signal)
    /// is an error, not something to restart.
    pub fn restart_operator_if_stepped_down(&self) -> Result<bool> {
        let mut operator = self.operator.lock().expect("operator poisoned");
        match operator.exit_status() {
            None => Ok(false),
            Some(status) if status.success() => {
                operator.restart(Duration::from_secs(5))?;
                Ok(true)
            }
            Some(status) => bail!(
                "the operator crashed ({status}):\n{}",
                operator.log_tail(30)
            ),
        }
    }

    /// Fails if the operator or a control-plane component has exited.
    pub fn check_running(&self) -> Result<()> {
        self.operator
            .lock()
            .expect("operator poisoned")
            .check_running()?;
        self.cluster.check_running()?;
        Ok(())
    }

    /// The end of the operator's log.
    pub fn operator_log_tail(&self, lines: usize) -> String {
        self.operator
            .lock()
            .expect("operator poisoned")
            .log_tail(lines)
    }

    /// Fails if the API server refused the operator anything so far: with the chart's RBAC one
    /// verb short, a flow may still pass by luck or retries, but the refusal is in the log.
    pub fn assert_no_rbac_denials(&self) -> Result<()> {
        let log = std::fs::read_to_string(self.operator.lock().expect("operator poisoned").log())?;
        let outages = self.outages.lock().expect("outages poisoned").clone();
        let mut offset = 0;
        let mut denied = Vec::new();
        for line in log.split_inclusive('\n') {
            let during_outage = outages.iter().any(|&(a, b)| offset >= a && offset < b);
            if !during_outage && line.to_ascii_lowercase().contains("forbidden") {
                denied.push(line.trim_end());
            }
            offset += line.len();
        }
        if denied.is_empty() {
            Ok(())
        } else {
            denied.truncate(5);
            bail!(
                "the API server refused the operator (chart RBAC):\n{}",
                denied.join("\n")
            )
        }
    }

    /// The current length of the operator's log.
    pub fn operator_log_len(&self) -> usize {
        let operator = self.operator.lock().expect("operator poisoned");
        std::fs::metadata(operator.log()).map_or(0, |m| m.len() as usize)
    }

    /// Marks the operator's log from `start` to now as written during an API server outage.
    pub fn mark_outage(&self, start: usize) {
        let end = self.operator_log_len();
        self.outages
            .lock()
            .expect("outages poisoned")
            .push((start, end));
    }

    /// A failed test's error plus what the operator was doing.
    pub fn failure_report(&self, test: &str, error: &anyhow::Error) -> String {
        format!(
            "{test}: {error:?}\n--- operator log, last 40 lines ---\n{}",
            self.operator_log_tail(40)
        )
    }

    /// Polls `check` (every 250 ms, up to `secs`), failing at once if the operator or the
    /// control plane dies.
    pub async fn wait<T, F, Fut>(&self, what: &str, secs: u64, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        let alive = || {
            self.operator
                .lock()
                .expect("operator poisoned")
                .check_running()?;
            self.cluster.check_running()
        };
        let value = wait::until_alive(
            what,
            Duration::from_secs(secs),
            Duration::from_millis(250),
            alive,
            &mut check,
        )
        .await?;
        Ok(value)
    }

    /// Creates namespace `e2e-<name>` with the admin token Secret a CommentCluster refers to.
    pub async fn namespace(&self, name: &str) -> Result<String> {
        let ns = format!("e2e-{name}");
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": ns, "labels": {E2E_LABEL: "true"}}}),
                )?,
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "admin-token"},
                    "stringData": {"token": format!("e2e-admin-token-{name}")},
                }))?,
            )
            .await
            .context("creating the admin token Secret")?;
        Ok(ns)
    }

    /// `kubectl <args>` as admin; its stdout.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        Ok(run(self.cluster.kubectl().args(args)).await?)
    }

    /// `kubectl apply -f` of one object, as admin.
    pub async fn apply(&self, ns: &str, object: &Value) -> Result<String> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let path = self
            .cluster
            .scratch()
            .join(format!("{ns}-{name}-{}.json", unique()));
        std::fs::write(&path, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&["apply", "-n", ns, "-f", &path.display().to_string()])
            .await
    }

    /// A CommentCluster as JSON (metadata, spec and status), or an error string for waits.
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

    /// The tier keys Secret of CommentCluster `cc`: its object, and its items as text.
    pub async fn tier_keys(
        &self,
        ns: &str,
        cc: &str,
    ) -> std::result::Result<(Secret, std::collections::BTreeMap<String, String>), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api
            .get(&format!("{cc}-tier-keys"))
            .await
            .map_err(|e| e.to_string())?;
        let items = secret
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        Ok((secret, items))
    }

    /// The control ConfigMap's data.
    pub async fn control_data(&self, ns: &str, cc: &str) -> std::result::Result<Value, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let cm = api
            .get(&format!("{cc}-control"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!(cm.data.unwrap_or_default()))
    }

    /// A Deployment's `spec.replicas` and ready replicas.
    pub async fn deployment_replicas(
        &self,
        ns: &str,
        name: &str,
    ) -> std::result::Result<(i32, i32), String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let d = api.get(name).await.map_err(|e| e.to_string())?;
        let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok((spec, ready))
    }

    /// Pods of a namespace with the given label selector.
    pub async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    /// Events about a CommentCluster with the given reason.
    pub async fn events(&self, ns: &str, cc: &str, reason: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let events = api
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=CommentCluster,involvedObject.name={cc},reason={reason}"
            )))
            .await?;
        Ok(events.items)
    }

    /// The Helm release's status (`deployed` when the install went through).
    pub async fn helm_status(&self) -> Result<String> {
        let out = run(self.cluster.helm().args([
            "status",
            RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
            "-o",
            "json",
        ]))
        .await?;
        let status: Value = serde_json::from_str(&out)?;
        Ok(status["info"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Sets `spec.commentsSuspended` with `kubectl patch`.
    pub async fn set_suspended(&self, ns: &str, cc: &str, suspended: bool) -> Result<()> {
        let patch = json!({"spec": {"commentsSuspended": suspended}}).to_string();
        self.kubectl(&[
            "patch",
            "commentcluster",
            cc,
            "-n",
            ns,
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
        Ok(())
    }
}

/// On an existing cluster, removes what the suite makes (its namespaces and the release), so
/// runs do not trip over each other's leftovers. Best effort: what is not there is fine.
pub async fn clean_external(cluster: &Cluster) {
    let selector = format!("{E2E_LABEL}=true");
    let _ = run(cluster.kubectl().args([
        "delete",
        "namespace",
        "-l",
        &selector,
        "--wait=true",
        "--timeout=180s",
    ]))
    .await;
    let _ = run(cluster.helm().args([
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
    ]))
    .await;
}

/// A CommentCluster named `name`: the admin token Secret from [`Suite::namespace`], fixed
/// replicas that keep the fake cluster small, and `spec` merged over that.
pub fn comment_cluster(name: &str, spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "io360.dev/v1alpha1",
        "kind": "CommentCluster",
        "metadata": {"name": name},
        "spec": {
            "image": {"repository": "registry.invalid/io360", "tag": "e2e"},
            "adminTokenSecret": {"name": "admin-token"},
            "frontend": {"replicas": 1},
            "logic": {"replicas": 1},
            "sync": {"replicas": 1},
            "longpoll": {"replicas": 1},
        },
    });
    merge(&mut base["spec"], spec);
    base
}

pub use io360_cluster_tests::merge_json as merge;

/// A condition's status and reason from a resource's `status.conditions`.
pub fn condition(object: &Value, type_: &str) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The name of the ServiceAccount in the chart's rendered manifest.
fn chart_service_account(manifest: &str) -> Result<String> {
    let mut accounts = Vec::new();
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let value: Value = match serde::Deserialize::deserialize(document) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if value["kind"] == "ServiceAccount"
            && let Some(name) = value["metadata"]["name"].as_str()
        {
            accounts.push(name.to_string());
        }
    }
    match accounts.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the chart renders no ServiceAccount"),
        many => bail!("the chart renders several ServiceAccounts: {many:?}"),
    }
}

/// A short unique suffix for file names.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Seconds since `start`, for messages.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
