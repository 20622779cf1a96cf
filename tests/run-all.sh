#!/usr/bin/env bash
# The one command that installs what io360's tests need and runs every test.
# README.md gives it as the test command, and .ci/run calls it.
#
# What it does, in order:
#   1. installs system packages the tests use (Debian: chromium for browser tests, nginx),
#   2. builds the Kubernetes control plane for the cluster tests (cached after the first run),
#   3. checks formatting and lints,
#   4. runs every Rust test in the workspace (unit, cross-tier, crash, cluster),
#   5. runs the browser suites (tests/*/package.json) in headless Chromium.
# Slow builds are cached under ${XDG_CACHE_HOME:-~/.cache}/io360, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
mkdir -p "$cache"
# Reuse compiled dependencies across fresh clones of the repository.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
if ls tests/*/package.json >/dev/null 2>&1; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v node >/dev/null || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ -f tests/cluster/install-tools.sh ]; then
  step "Kubernetes control plane binaries (cold: 15-25 min once; warm: seconds)"
  bash tests/cluster/install-tools.sh
fi

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
for pkg in tests/*/package.json; do
  [ -e "$pkg" ] || continue
  suite=$(dirname "$pkg")
  step "browser tests: $suite (headless Chromium)"
  (cd "$suite" && { [ -f package-lock.json ] && npm ci --no-audit --no-fund || npm install --no-audit --no-fund; } && npm test)
done

echo
echo "all tests passed"
