//! io360's real images on a real node: the operator installed with Helm runs as two pods, a
//! CommentCluster's tiers run as `restricted` pods that pull from a registry, talk over
//! Services and keep the store's data on a real claim; pods are killed, comments suspended,
//! images rolled, and a broken image reported; NetworkPolicies are enforced and tried from
//! inside pods; a page spike is autoscaled on the pods' real CPU and comments are suspended
//! and resumed by the operator on its own.
//!
//! The process first moves into a network and mount namespace of its own
//! ([`io360_cluster_tests::isolate`]): the control plane, containerd, the kubelet and this
//! suite's HTTP clients all live there, so every pod and Service address it dials exists only
//! inside it. The tests run one at a time: each starts a CommentCluster of seven real pods on a
//! two-core machine.

mod email;
mod flows;
mod held;
mod netpol;
mod postgres;
mod spike;
mod support;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use support::{Suite, TestFn};

/// Every test, in the order they run.
const TESTS: &[(&str, TestFn)] = &[
    (
        "operator_runs_as_two_real_pods_from_the_local_registry",
        flows::operator_runs_in_real_pods,
    ),
    (
        "metrics_server_reports_real_cpu_and_memory_of_io360_pods",
        spike::resource_metrics_of_real_pods,
    ),
    (
        "cluster_serves_pages_and_live_comments_through_services",
        flows::pages_and_live_comments_through_services,
    ),
    (
        "network_policies_let_only_calling_tiers_reach_store_sync_and_logger",
        netpol::network_policies_hold_on_the_node,
    ),
    (
        "store_comes_back_on_its_claim_with_every_acknowledged_comment",
        flows::store_restarts_on_its_claim,
    ),
    (
        "suspension_stops_longpoll_and_writes_while_pages_keep_flowing",
        flows::suspension_on_real_pods,
    ),
    (
        "store_on_postgres_keeps_every_write_through_a_store_pod_loss",
        postgres::store_on_postgres_survives_a_pod_loss,
    ),
    (
        "email_goes_out_through_the_notify_pod_logged_in_from_a_secret",
        email::email_goes_out_through_the_notify_pod,
    ),
    (
        "new_image_tag_rolls_every_tier_without_a_failed_request",
        flows::rolling_update_under_load,
    ),
    (
        "spike_on_real_metrics_suspends_and_resumes_comments",
        spike::spike_on_real_metrics,
    ),
    (
        "spike_without_metrics_holds_replicas_and_never_suspends",
        spike::spike_without_metrics,
    ),
    (
        "longpoll_scales_on_held_connections_read_from_prometheus",
        held::longpoll_scales_on_held_connections,
    ),
    (
        "missing_image_and_crash_loop_are_named_in_status",
        flows::broken_tiers_are_named_in_status,
    ),
];

type SuiteCell = Arc<Mutex<Option<Result<Arc<Suite>, String>>>>;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    // Before any thread exists: threads inherit the namespace of the thread that made them.
    let run = match (!args.list)
        .then(io360_cluster_tests::isolate::enter)
        .transpose()
    {
        Ok(run) => run,
        Err(e) => {
            eprintln!("cannot make the run's namespaces for the real node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = run.map(Arc::new);
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building the tokio runtime"),
    );
    let cell: SuiteCell = Arc::new(Mutex::new(None));

    let trials = TESTS
        .iter()
        .map(|&(name, test)| {
            let runtime = runtime.clone();
            let cell = cell.clone();
            let run = run.clone();
            Trial::test(name, move || {
                let run = run.as_deref().expect("namespaces are made unless listing");
                let suite = suite(&runtime, &cell, run).map_err(Failed::from)?;
                runtime
                    .block_on(test(&suite))
                    .map_err(|e| Failed::from(runtime.block_on(suite.failure_report(name, &e))))
            })
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    let suite = cell.lock().expect("suite cell poisoned").take();
    if let Some(Ok(suite)) = suite {
        runtime.block_on(suite.print_measurements());
        drop(suite);
    }
    drop(runtime);
    // The run's namespaces: leftover containers, shims and cgroups go, mounts come down.
    drop(run);
    conclusion.exit_code()
}

fn suite(
    runtime: &tokio::runtime::Runtime,
    cell: &SuiteCell,
    run: &io360_cluster_tests::isolate::RunNamespace,
) -> Result<Arc<Suite>, String> {
    let mut slot = cell.lock().expect("suite cell poisoned");
    if slot.is_none() {
        let started = runtime
            .block_on(Suite::start(run))
            .map(Arc::new)
            .map_err(|e| format!("suite setup failed: {e:?}"));
        *slot = Some(started);
    }
    slot.as_ref().expect("just set").clone()
}
