//! Starting the controller: client, leader election, watches, metrics server, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use io360_operator::children::Children;
use io360_operator::crd::CommentCluster;
use io360_operator::desired::{MANAGED_BY, MANAGER};
use io360_operator::events::Recorder;
use io360_operator::leader::Election;
use io360_operator::metrics::{self, Metrics};
use io360_operator::reconcile::{self, Context};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How many clusters are reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 16;

/// How long the API server holds one watch request before the watcher renews it.
const WATCH_TIMEOUT_SECS: u32 = 45;

/// Options of `io360-operator run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Watch CommentClusters in this namespace only (default: every namespace).
    #[arg(long, env = "IO360_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Address of /metrics and /healthz.
    #[arg(
        long,
        env = "IO360_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,

    /// Elect a leader on a Lease before reconciling (run two replicas, one active).
    #[arg(long, env = "IO360_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, default_value = "io360-operator")]
    lease_name: String,

    /// This replica's identity in the Lease and in Events (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// How often automatic degrade re-reads each frontend autoscaler, in seconds.
    #[arg(long, env = "IO360_OPERATOR_DEGRADE_INTERVAL", default_value_t = 5)]
    degrade_interval: u64,

    /// Seconds each step of a tier key rotation waits: longer than kubelet takes to update a
    /// mounted Secret (its sync period, about a minute by default) plus the tiers' 5 s reload.
    #[arg(
        long,
        env = "IO360_OPERATOR_TIER_KEYS_GRACE_SECS",
        default_value_t = 300
    )]
    tier_keys_grace_secs: u64,

    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "IO360_LOG", default_value = "info")]
    log: String,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches the children of kind `K`: a change of one triggers its owner's reconcile, and
/// every one is cached in `children` (without its managed fields, which nothing reads) for
/// reconciles to tell whether it needs an apply. Returns the cache too.
fn owns<K>(
    c: Controller<CommentCluster>,
    children: &mut Children,
    client: &Client,
    ns: Option<&str>,
    wc: &watcher::Config,
) -> (Controller<CommentCluster>, Store<K>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    children.insert(store.clone());
    let events = reflector(
        writer,
        watcher(api::<K>(client, ns), wc.clone()).modify(|o| o.managed_fields_mut().clear()),
    )
    // Each watch backs off on its own: an error in one (say, right after an API server
    // restart, while its authorizer warms up) must not pause every other trigger.
    .default_backoff()
    .touched_objects();
    (c.owns_stream(events), store)
}

/// The pause of the merged trigger stream after an error. Watches back off individually
/// (see [`owns`]); the merged stream only needs a short breath, or one failing watch would
/// hold up the triggers of all the others for up to half a minute per error.
struct TriggerPause;

impl Iterator for TriggerPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(250))
    }
}

impl kube::runtime::utils::Backoff for TriggerPause {
    fn reset(&mut self) {}
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Evaluates automatic degrade every `every` until `stop`, waking the controller for the
/// clusters whose decision flipped.
async fn degrade_loop(
    ctx: Arc<Context>,
    clusters: Store<CommentCluster>,
    hpas: Store<HorizontalPodAutoscaler>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<CommentCluster>>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let now = jiff::Timestamp::now();
        for obj in reconcile::evaluate_degrade_all(&ctx, &clusters, &hpas, now) {
            if wake.unbounded_send(obj).is_err() {
                return;
            }
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .init();

    let mut config = kube::Config::infer()
        .await
        .context("no Kubernetes config: set KUBECONFIG or run in a pod")?;
    // Watches end server-side after WATCH_TIMEOUT_SECS and are renewed, so no read is idle for
    // longer than this; a connection left half-open by an API server restart is given up
    // within a minute instead of the default five.
    config.read_timeout = Some(Duration::from_secs(60));
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = Arc::new(Metrics::new());

    // Shutdown: a signal, or losing the leader Lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutting down");
            let _ = stop_tx.send(true);
        });
    }
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        stopped(),
    ));
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("io360-operator-{}", std::process::id()));
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let election = if args.leader_election {
        let ns = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let election = Election {
            name: args.lease_name.clone(),
            namespace: ns.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(15),
            renew: Duration::from_secs(3),
        };
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        tokio::select! {
            _ = election.acquire(&leases) => {}
            _ = stopped() => {
                server.await??;
                return Ok(());
            }
        }
        metrics.leader.set(1);
        let (e, l, tx, lost) = (
            election.clone(),
            leases.clone(),
            stop_tx.clone(),
            lost.clone(),
        );
        tokio::spawn(async move {
            e.hold(&l).await;
            error!("leadership lost; stopping");
            lost.store(true, Ordering::Relaxed);
            let _ = tx.send(true);
        });
        Some((election, leases))
    } else {
        None
    };

    let ns = args.namespace.as_deref();
    let wc = watcher::Config::default()
        .labels(&format!("{MANAGED_BY}={MANAGER}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let mut controller = Controller::new(
        api::<CommentCluster>(&client, ns),
        watcher::Config::default().timeout(WATCH_TIMEOUT_SECS),
    )
    .trigger_backoff(TriggerPause)
    // A bounded number of passes at once: 200 clusters created together then converge in a
    // steady stream instead of all crawling past their timeout together.
    .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY));
    let mut children = Children::default();
    controller = owns::<ConfigMap>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<ServiceAccount>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<Role>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<RoleBinding>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<PersistentVolumeClaim>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<Service>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<StatefulSet>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<Deployment>(controller, &mut children, &client, ns, &wc).0;
    // Automatic degrade reads the autoscalers from their cache, not the API.
    let (c, hpas) = owns::<HorizontalPodAutoscaler>(controller, &mut children, &client, ns, &wc);
    controller = owns::<PodDisruptionBudget>(c, &mut children, &client, ns, &wc).0;
    controller = owns::<NetworkPolicy>(controller, &mut children, &client, ns, &wc).0;
    controller = owns::<Ingress>(controller, &mut children, &client, ns, &wc).0;

    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), "io360-operator", &identity),
        metrics.clone(),
        children,
        Duration::from_secs(args.tier_keys_grace_secs.max(1)),
    ));
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    controller = controller.reconcile_on(wake_rx);
    tokio::spawn(degrade_loop(
        ctx.clone(),
        controller.store(),
        hpas,
        wake_tx,
        Duration::from_secs(args.degrade_interval.max(1)),
        stopped(),
    ));
    info!(namespace = ?ns, "controller starting");
    let running = controller
        .graceful_shutdown_on(stopped())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    // Already logged by the reconciler.
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                    // A trigger for an object deleted meanwhile: nothing to do.
                    kube::runtime::controller::Error::ObjectNotFound(obj) => {
                        tracing::debug!(object = %obj, "object gone before its reconcile")
                    }
                    other => warn!(error = %other, "controller"),
                }
            }
        });
    // Once told to stop, in-flight reconciles get a bounded time to finish.
    let deadline = {
        let stopped = stopped();
        async move {
            stopped.await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    };
    tokio::select! {
        _ = running => {}
        _ = deadline => warn!("reconciles did not finish within 20 s of the stop; leaving them"),
    }

    metrics.alive.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    if let Some((election, leases)) = election
        && let Err(e) = election.release(&leases).await
    {
        warn!(error = %e, "could not release the lease");
    }
    let _ = stop_tx.send(true);
    server.await??;
    if lost.load(Ordering::Relaxed) {
        anyhow::bail!("lost the leader Lease to another replica");
    }
    info!("stopped");
    Ok(())
}
