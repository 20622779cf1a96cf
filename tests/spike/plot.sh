#!/usr/bin/env bash
# Draws the spike test's time series (tests/cluster/tests/node/spike.rs writes it as CSV) as a
# PNG: page traffic and p99, replicas per tier, the frontend autoscaler's CPU reading against
# the degrade thresholds, and when comments were suspended.
#
# Usage: bash tests/spike/plot.sh [spike.csv] [out.png]
#   defaults: ${CARGO_TARGET_DIR:-target}/io360-spike/spike.csv and tests/spike/spike.png
# matplotlib comes from PyPI into a virtualenv cached under ${XDG_CACHE_HOME:-~/.cache}/io360.
set -euo pipefail
cd "$(dirname "$0")/../.."

MATPLOTLIB_VERSION=3.11.2
csv=${1:-${CARGO_TARGET_DIR:-target}/io360-spike/spike.csv}
out=${2:-tests/spike/spike.png}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/io360/plot-venv"

if [[ ! -f "$csv" ]]; then
    echo "plot: no $csv; run the spike first:" >&2
    echo "  cargo test -p io360-cluster-tests --test node -- spike" >&2
    exit 1
fi
if ! "$venv/bin/python" -c "import matplotlib; assert matplotlib.__version__ == '$MATPLOTLIB_VERSION'" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "matplotlib==$MATPLOTLIB_VERSION"
fi
"$venv/bin/python" tests/spike/plot.py "$csv" "$out"
echo "$out"
