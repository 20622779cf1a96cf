#!/usr/bin/env bash
# The one command that installs what io360's tests need and runs every test.
# README.md gives it as the test command, and .ci/run calls it.
#
# What it does, in order:
#   1. installs system packages the tests use (Debian: chromium for browser tests, nginx),
#   2. builds, side by side, the Kubernetes control plane and the real node's tools for the
#      cluster tests, the manifest linters (kubeconform, kube-score), and io360's container
#      images from the repository's Dockerfile, daemonless (all cached),
#   3. checks formatting and lints,
#   4. runs every Rust test in the workspace (unit, cross-tier, crash, cluster),
#   5. fuzzes the public API from its OpenAPI document (schemathesis, two minutes),
#   6. runs the browser suites (tests/*/package.json) in headless Chromium.
# Slow builds are cached under ${XDG_CACHE_HOME:-~/.cache}/io360, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
mkdir -p "$cache"
# Reuse compiled dependencies across fresh clones of the repository.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_TERM_COLOR=never
# A run builds the workspace's own crates once: incremental state (gigabytes per clone, as
# each clone's path differs) would only fill the disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
if ls tests/*/package.json >/dev/null 2>&1; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v node >/dev/null || need_apt+=(nodejs npm)
fi
# The cluster suite's real node and the image build: containerd, runc and the CNI plugins run
# pods; buildah, mmdebstrap, skopeo and umoci build, move and unpack images without a daemon;
# iptables is kube-proxy's, iptables and ipset kube-router's (the NetworkPolicy firewall).
for tool in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    buildah:buildah mmdebstrap:mmdebstrap skopeo:skopeo umoci:umoci iptables:iptables ip:iproute2 \
    ipset:ipset; do
    bin=${tool%%:*}
    if [[ $bin == /* ]]; then [ -e "$bin" ] || need_apt+=("${tool#*:}"); else command -v "$bin" >/dev/null || need_apt+=("${tool#*:}"); fi
done
# The NetworkPolicy probe pods run a static busybox (wget, nc).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_apt+=(busybox-static)
# The API fuzzer (schemathesis) lives in a virtualenv.
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Three builds that do not depend on each other run side by side, each logging to its own file
# (a failure prints that file's end): the cluster tools (Go), the manifest linters (Go) and the
# container images (a release build inside buildah). Cold, on two cores, together they take
# about as long as the longest; warm, seconds.
step "cluster tools, manifest linters and container images (cold: 20-30 min once; warm: a minute)"
logs="$cache/run-logs"
mkdir -p "$logs"
pids=()
names=()
start_build() { # name command...
  local name=$1
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
start_build cluster-tools bash tests/cluster/install-tools.sh
start_build linters bash tests/lint/install-linters.sh
start_build images bash tests/images/build.sh
failed=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "${names[$i]}: done ($(tail -n 1 "$logs/${names[$i]}.log"))"
  else
    echo "${names[$i]} failed; the end of $logs/${names[$i]}.log:" >&2
    tail -n 40 "$logs/${names[$i]}.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ]

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked --no-fail-fast

# Browser suites (headless Chromium, driven by playwright-core): each tests/<suite>/ with a
# package.json runs `npm test` against an `io360` binary built above.
export IO360_BIN="${IO360_BIN:-$CARGO_TARGET_DIR/debug/io360}"
cargo build --locked -p io360
step "API fuzzing from the OpenAPI document (schemathesis, bounded: IO360_FUZZ_SECONDS, here 120)"
IO360_FUZZ_SECONDS="${IO360_FUZZ_SECONDS:-120}" bash tests/hardening/fuzz-api.sh

for pkg in tests/*/package.json; do
  [ -e "$pkg" ] || continue
  suite=$(dirname "$pkg")
  step "browser tests: $suite (headless Chromium)"
  (cd "$suite" && { [ -f package-lock.json ] && npm ci --no-audit --no-fund || npm install --no-audit --no-fund; } && npm test)
done

echo
echo "all tests passed"
