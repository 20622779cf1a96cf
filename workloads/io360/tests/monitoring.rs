//! The chart's dashboard and alert rules name only series the tiers really export: every
//! `io360_*` name in `charts/io360-operator/files/` (but the operator's own, checked in the
//! operator's chart tests) is in the `/metrics` of a real `io360 serve <tier>` process.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Proc, free_addr, wait_ready};

/// Every `io360_...` name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("io360_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not part of a longer word (e.g. a label value like `io360_x` inside another name).
        let before = rest[..i].chars().last();
        // `io360_*` in prose names no series.
        if end > "io360_".len() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Whether the series `name` belongs to one of the `families` a `/metrics` page declared.
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    std::iter::once(name)
        .chain(
            ["_total", "_bucket", "_sum", "_count", "_created"]
                .iter()
                .filter_map(|s| name.strip_suffix(s)),
        )
        .any(|n| families.contains(n))
}

#[tokio::test]
async fn every_series_the_dashboard_and_the_alerts_name_is_exported_by_a_tier() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/io360-operator/files");
    let mut wanted = BTreeSet::new();
    for file in ["alerts.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(chart.join(file)).unwrap();
        wanted.extend(
            names_in(&text)
                .into_iter()
                .filter(|n| !n.starts_with("io360_operator_")),
        );
    }
    assert!(
        wanted.len() > 8,
        "the files name the tiers' series: {wanted:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let addr = |_: &str| free_addr().to_string();
    let (store, logger, sync, longpoll, logic, frontend, frontend_metrics) = (
        addr("store"),
        addr("logger"),
        addr("sync"),
        addr("longpoll"),
        addr("logic"),
        addr("frontend"),
        addr("frontend metrics"),
    );
    let url = |a: &str| format!("http://{a}");
    let logger_url = url(&logger);
    let data = |d: &str| dir.path().join(d).to_string_lossy().into_owned();
    let (store_dir, logger_dir) = (data("store"), data("logger"));
    let with_logger = [("IO360_LOGGER_URL", logger_url.as_str())];
    let procs = [
        Proc::spawn(
            &[
                "serve",
                "logger",
                "--addr",
                &logger,
                "--data-dir",
                &logger_dir,
            ],
            &[],
        ),
        Proc::spawn(
            &["serve", "store", "--addr", &store, "--data-dir", &store_dir],
            &with_logger,
        ),
        Proc::spawn(
            &[
                "serve",
                "sync",
                "--addr",
                &sync,
                "--store-url",
                &url(&store),
            ],
            &with_logger,
        ),
        Proc::spawn(
            &[
                "serve",
                "longpoll",
                "--addr",
                &longpoll,
                "--sync-url",
                &url(&sync),
            ],
            &with_logger,
        ),
        Proc::spawn(
            &[
                "serve",
                "logic",
                "--addr",
                &logic,
                "--store-url",
                &url(&store),
            ],
            &with_logger,
        ),
        Proc::spawn(
            &[
                "serve",
                "frontend",
                "--addr",
                &frontend,
                "--metrics-addr",
                &frontend_metrics,
                "--logic-url",
                &url(&logic),
                "--longpoll-url",
                &url(&longpoll),
            ],
            &with_logger,
        ),
    ];
    let http = reqwest::Client::new();
    let mut families = BTreeSet::new();
    // The frontend's public port has no /metrics: its own listener for them has.
    for a in [&logger, &store, &sync, &longpoll, &logic, &frontend_metrics] {
        wait_ready(&http, &format!("{}/readyz", url(a))).await;
        let text = http
            .get(format!("{}/metrics", url(a)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        families.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned),
        );
    }
    drop(procs);
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported(n, &families)).collect();
    assert!(
        missing.is_empty(),
        "named in the chart but exported by no tier: {missing:?}\nexported: {families:?}"
    );
}
