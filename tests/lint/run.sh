#!/usr/bin/env bash
# Lints io360's manifests the way a platform team does before it lets an operator into a
# cluster: `helm lint --strict` (operator/tests/chart.rs), then kubeconform (strict, against
# schemas made offline from the Kubernetes OpenAPI document and the CommentCluster CRD) and
# kube-score over the chart with default and example values, every CommentCluster fixture and
# the children the operator builds for each (operator/tests/lint.rs). Any finding not in
# tests/lint/exceptions.txt, with its reason, fails the run; the counts per input are printed.
#
# Usage: bash tests/lint/run.sh    (helm comes from tests/cluster/install-tools.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/lint/install-linters.sh
cargo test --locked -p io360-operator --test chart --test lint -- --nocapture
