//! The end-to-end cluster suite: the io360 operator, its Helm chart and a tier process against
//! a real control plane (see `io360_cluster_tests`).
//!
//! One control plane serves every test (starting one takes tens of seconds on two cores);
//! each test works in its own namespace. The chart is installed and the operator started once,
//! as the chart's ServiceAccount, before the first test. If that setup fails, every test fails
//! with its error: nothing is skipped.
//!
//! This binary has its own `main` (libtest-mimic) so the control plane is torn down after the
//! last test, passed or failed.

mod chart;
mod children;
mod degrade;
mod lifecycle;
mod restart;
mod support;
mod suspension;
mod tier;
mod tierkeys;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use support::{Suite, TestFn};

/// Every test: name, body, and whether it must run alone (it restarts the API server).
const TESTS: &[(&str, TestFn, bool)] = &[
    (
        "chart_installs_crd_with_docs_and_printer_columns",
        chart::crd_docs_and_printer_columns,
        false,
    ),
    (
        "operator_runs_as_the_chart_service_account",
        chart::operator_runs_as_chart_service_account,
        false,
    ),
    (
        "example_cluster_converges_to_ready",
        lifecycle::example_cluster_converges_to_ready,
        false,
    ),
    (
        "store_on_postgres_runs_as_a_deployment_of_replicas",
        lifecycle::store_on_postgres_runs_as_replicas,
        false,
    ),
    (
        "email_on_adds_the_notify_tier_and_off_removes_it",
        lifecycle::email_on_adds_notify_and_off_removes_it,
        false,
    ),
    (
        "manual_suspension_scales_longpoll_to_zero_and_back",
        suspension::manual_suspension_round_trip,
        false,
    ),
    (
        "overload_suspends_after_hold_and_recovers_after_cooldown",
        degrade::overload_suspends_and_recovers,
        false,
    ),
    (
        "logic_refuses_writes_within_5s_of_suspension",
        tier::logic_refuses_writes_when_suspended,
        false,
    ),
    (
        "tier_keys_are_owned_mounted_per_tier_and_rotate_on_request",
        tierkeys::tier_keys_are_owned_mounted_per_tier_and_rotate,
        false,
    ),
    (
        "deleted_children_come_back_and_gc_removes_all",
        children::children_are_restored_and_collected,
        false,
    ),
    (
        "invalid_specs_are_rejected_naming_the_field",
        children::invalid_specs_are_rejected,
        false,
    ),
    (
        "operator_recovers_from_apiserver_restart",
        restart::operator_recovers_from_apiserver_restart,
        true,
    ),
];

/// The suite, started by whichever test runs first; taken out and dropped after the last.
type SuiteCell = Arc<Mutex<Option<Result<Arc<Suite>, String>>>>;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // The tests mostly wait on the cluster; run several at once by default.
    if args.test_threads.is_none() {
        args.test_threads = Some(4);
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("building the tokio runtime"),
    );
    let cell: SuiteCell = Arc::new(Mutex::new(None));

    let trials = TESTS
        .iter()
        .map(|&(name, test, exclusive)| {
            let runtime = runtime.clone();
            let cell = cell.clone();
            Trial::test(name, move || {
                let suite = suite(&runtime, &cell).map_err(Failed::from)?;
                let result = runtime.block_on(async {
                    if exclusive {
                        let _alone = suite.restart_gate.write().await;
                        test(&suite).await
                    } else {
                        let _shared = suite.restart_gate.read().await;
                        test(&suite).await
                    }
                });
                result
                    .and_then(|()| suite.assert_no_rbac_denials())
                    .map_err(|e| Failed::from(suite.failure_report(name, &e)))
            })
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    let suite = cell.lock().expect("suite cell poisoned").take();
    // Stops the operator and tier processes, then the control plane, and removes their files;
    // on an existing cluster, removes what the suite created there.
    if let Some(Ok(suite)) = suite {
        if suite.cluster.mode() == io360_cluster_tests::ClusterMode::External {
            runtime.block_on(support::clean_external(&suite.cluster));
        }
        drop(suite);
    }
    conclusion.exit_code()
}

/// The shared suite, started on first use; a failed start is remembered and reported by every
/// test.
fn suite(runtime: &tokio::runtime::Runtime, cell: &SuiteCell) -> Result<Arc<Suite>, String> {
    let mut slot = cell.lock().expect("suite cell poisoned");
    if slot.is_none() {
        let started = runtime
            .block_on(Suite::start())
            .map(Arc::new)
            .map_err(|e| format!("suite setup failed: {e:?}"));
        *slot = Some(started);
    }
    slot.as_ref().expect("just set").clone()
}
