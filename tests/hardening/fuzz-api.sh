#!/usr/bin/env bash
# Property-based fuzzing of io360's public API from its OpenAPI document (schemathesis, from
# PyPI), against `io360 up` on loopback: no answer is a 5xx, and every 4xx is a problem body.
# Bounded in time: IO360_FUZZ_SECONDS (default 300) for the whole run.
#
# Usage: tests/hardening/fuzz-api.sh   (IO360_BIN: the io360 binary; default target/debug)
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
# schemathesis and everything it pulls in, at versions that are known to work (a new release
# of a dependency is taken on purpose, not by a fresh machine); the virtualenv is named by
# the list, so a change to it makes a new one.
reqs=tests/hardening/fuzz-requirements.txt
venv="$cache/schemathesis-$(sha256sum "$reqs" | cut -c1-12)"
if [ ! -x "$venv/bin/schemathesis" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps -r "$reqs"
fi

bin="${IO360_BIN:-${CARGO_TARGET_DIR:-target}/debug/io360}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d)
IO360_LOG=error IO360_NO_RATE_LIMITS=true IO360_LONGPOLL_HOLD_SECS=1 \
  "$bin" up --addr "127.0.0.1:$port" --data-dir "$data/data" >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 200); do
  curl -fsS "$base/api/v1/status" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(cat "$data/data/admin-token")

# The admin token opens the admin API to the fuzzer too, except the suspension switch (a
# suspended site answers writes with 503 on purpose). The event stream never ends, so it is
# left to the cross-tier tests.
# Run from the scratch directory: schemathesis keeps state in the current directory.
hooks="$PWD/tests/hardening"
cd "$data"
SCHEMATHESIS_HOOKS=fuzz_checks PYTHONPATH="$hooks" \
  "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --checks not_a_server_error,problem_bodies \
  --exclude-path /v1/events \
  --exclude-path /api/v1/admin/suspension \
  --header "Authorization: Bearer $token" \
  --max-time "${IO360_FUZZ_SECONDS:-300}" \
  --max-examples "${IO360_FUZZ_EXAMPLES:-100}" \
  --request-timeout 10 \
  --workers 2 \
  --seed "${IO360_FUZZ_SEED:-360}" \
  --generation-database none \
  --no-color
