//! The chart installs a CRD the server accepts, with field docs and
//! printer columns; the operator runs with exactly the chart's RBAC.

use anyhow::{Context, Result, bail, ensure};
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{Value, json};

use crate::support::{OPERATOR_IDENTITY, RELEASE_NAMESPACE, Suite, comment_cluster, condition};

/// Collapses whitespace, since `kubectl explain` re-wraps descriptions.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn crd_docs_and_printer_columns(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let status = s
            .kubectl(&["get", "crd", "commentclusters.io360.dev", "-o", "json"])
            .await
            .context("the chart must install the CommentCluster CRD")?;
        let crd: Value = serde_json::from_str(&status)?;
        ensure!(
            condition(&crd, "Established").is_some_and(|(s, _)| s == "True"),
            "CRD not Established: {}",
            crd["status"]
        );
        ensure!(
            condition(&crd, "NonStructuralSchema").is_none(),
            "the server finds the schema non-structural: {}",
            crd["status"]
        );

        // `kubectl explain` serves the field docs the server holds, from the CRD's schema.
        let version = &crd["spec"]["versions"][0];
        let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let explain = s.kubectl(&["explain", "commentcluster.spec"]).await?;
        let explained = words(&explain);
        let fields = spec_schema["properties"]
            .as_object()
            .context("spec has no properties in the CRD schema")?;
        ensure!(
            fields.contains_key("commentsSuspended"),
            "no spec.commentsSuspended field"
        );
        for (field, schema) in fields {
            ensure!(
                explained.contains(field.as_str()),
                "explain does not list spec.{field}:\n{explain}"
            );
            let doc = schema["description"].as_str().unwrap_or_default();
            ensure!(
                !doc.is_empty(),
                "spec.{field} has no description for kubectl explain"
            );
            ensure!(
                explained.contains(&words(doc)),
                "explain does not show the docs of spec.{field} ({doc:?}):\n{explain}"
            );
        }
        let suspended_doc = s
            .kubectl(&["explain", "commentcluster.spec.commentsSuspended"])
            .await?;
        ensure!(
            suspended_doc.contains("boolean"),
            "commentsSuspended explain: {suspended_doc}"
        );

        // `kubectl get cc` (the short name) shows the printer columns, filled in by status.
        let ns = s.namespace("chart").await?;
        s.apply(&ns, &comment_cluster("columns", json!({}))).await?;
        s.wait_ready(&ns, "columns", 120).await?;
        let columns: Vec<String> = version["additionalPrinterColumns"]
            .as_array()
            .context("the CRD has no printer columns")?
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_uppercase())
            .collect();
        for wanted in ["READY", "COMMENTS", "REASON", "AGE"] {
            ensure!(
                columns.iter().any(|c| c == wanted),
                "no {wanted} printer column: {columns:?}"
            );
        }
        let table = s
            .wait(
                "kubectl get cc to show the cluster live and ready",
                60,
                || async {
                    let table = s
                        .kubectl(&["get", "cc", "-n", &ns])
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut lines = table.lines();
                    let header: Vec<&str> = lines
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect();
                    let row: Vec<&str> = lines
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect();
                    let cell = |name: &str| {
                        header
                            .iter()
                            .position(|h| *h == name)
                            .and_then(|i| row.get(i).copied())
                    };
                    if header.first() == Some(&"NAME")
                        && row.first() == Some(&"columns")
                        && cell("READY") == Some("True")
                        && cell("COMMENTS") == Some("Live")
                    {
                        Ok(table)
                    } else {
                        Err(table)
                    }
                },
            )
            .await?;
        let header = table.lines().next().unwrap_or_default();
        for column in &columns {
            ensure!(
                header.contains(column.as_str()),
                "kubectl get cc header lacks {column}: {header}"
            );
        }

        let status = s
            .helm_status()
            .await
            .context("helm status of the release")?;
        ensure!(status == "deployed", "release status {status}");
        Ok(())
    })
}

pub fn operator_runs_as_chart_service_account(s: &Suite) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let kubeconfig = s.operator_kubeconfig.display().to_string();
        let whoami = s
            .kubectl(&["--kubeconfig", &kubeconfig, "auth", "whoami", "-o", "json"])
            .await?;
        let whoami: Value = serde_json::from_str(&whoami)?;
        let expected = format!(
            "system:serviceaccount:{RELEASE_NAMESPACE}:{}",
            s.operator_account
        );
        ensure!(
            whoami["status"]["userInfo"]["username"] == expected.as_str(),
            "the operator authenticates as {}, not {expected}",
            whoami["status"]["userInfo"]
        );

        // The account has what the chart grants and no more: no RBAC writes, no Secrets
        // cluster-wide, so a verb the chart forgot shows up as a failing flow.
        for (verb, resource) in [
            ("create", "clusterrolebindings"),
            ("create", "clusterroles"),
            ("delete", "nodes"),
            ("*", "*"),
        ] {
            let answer = s
                .cluster
                .kubectl()
                .args([
                    "--kubeconfig",
                    &kubeconfig,
                    "auth",
                    "can-i",
                    verb,
                    resource,
                    "--all-namespaces",
                ])
                .output()
                .await?;
            let said = String::from_utf8_lossy(&answer.stdout).trim().to_string();
            if said != "no" {
                bail!(
                    "the chart's ServiceAccount can {verb} {resource} ({said}); it should be scoped"
                );
            }
        }

        // The operator took its leader-election Lease under the chart's RBAC.
        let leases: Api<Lease> = Api::namespaced(s.client.clone(), RELEASE_NAMESPACE);
        s.wait(
            "the operator's Lease held by the local operator",
            60,
            || {
                let leases = leases.clone();
                async move {
                    let all = leases
                        .list(&Default::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let holders: Vec<String> = all
                        .items
                        .iter()
                        .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
                        .collect();
                    if holders.iter().any(|h| h == OPERATOR_IDENTITY) {
                        Ok(())
                    } else {
                        Err(format!("holders {holders:?}"))
                    }
                }
            },
        )
        .await?;

        s.assert_no_rbac_denials()?;
        Ok(())
    })
}
