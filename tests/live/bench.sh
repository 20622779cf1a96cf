#!/usr/bin/env bash
# Long-poll benchmark: io360 (store + sync + longpoll) against Nchan, same machine, one run.
#
# For N held polls on one channel it measures the time from a publish until every poll has
# the message (p50, p99, max over all polls of all rounds) and the server's memory per held
# poll (resident memory, and the cgroup's kernel and TCP memory), then prints io360/Nchan
# ratios. io360's publish is an append to the store (fsync, change feed, sync, longpoll), so
# its times are end to end; Nchan's is a POST straight to the fan-out server.
#
#   tests/live/bench.sh                 # N = 10000 and 19000, 3 rounds each, plus E2E at 1000
#   N_LIST="2000" ROUNDS=2 tests/live/bench.sh
#
# Needs: nginx-light and libnginx-mod-nchan (apt), cgroup v1 memory controller writable for
# the kernel-memory figures (skipped otherwise). Only 127.0.0.0/8 is used.
set -euo pipefail

N_LIST=${N_LIST:-"10000 19000"}
ROUNDS=${ROUNDS:-3}
E2E_N=${E2E_N:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
NCHAN_CONF=${NCHAN_CONF:-/work/shared/peers/nchan.nginx.conf}
[ -f "$NCHAN_CONF" ] || NCHAN_CONF="$ROOT/tests/live/nchan.nginx.conf"

cd "$ROOT"
cargo build -q --release -p io360-live-tests --bins
[ -n "${IO360_BIN:-}" ] || cargo build -q --release -p io360
LOAD="$TARGET/release/io360-loadclient"
BIN=${IO360_BIN:-$TARGET/release/io360}

WORK=$(mktemp -d /tmp/io360-bench.XXXXXX)
CG_ROOT=/sys/fs/cgroup/memory
PIDS=()
CGS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  sleep 0.5
  for c in "${CGS[@]}"; do rmdir "$c" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A fresh memory cgroup holding $1 and its children; prints its path (empty if unavailable).
cgroup_for() {
  local name="$CG_ROOT/io360-bench-$$-$2"
  if mkdir "$name" 2>/dev/null; then
    echo "$1" >"$name/cgroup.procs" 2>/dev/null || { rmdir "$name"; return; }
    CGS+=("$name")
    echo "$name"
  fi
}

wait_ready() {
  for _ in $(seq 200); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not ready: $1" >&2
  return 1
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
SRC=2

run_io360() {
  local n=$1 rounds=$2 label=$3
  local d="$WORK/io360-$label"
  mkdir -p "$d"
  IO360_ADDR=127.0.0.1:18084 IO360_DATA_DIR="$d/store" IO360_LOG=warn "$BIN" serve store >"$d/store.log" 2>&1 &
  local store=$!; PIDS+=("$store")
  wait_ready http://127.0.0.1:18084/readyz
  IO360_ADDR=127.0.0.1:18085 IO360_STORE_URL=http://127.0.0.1:18084 IO360_LOG=warn "$BIN" serve sync >"$d/sync.log" 2>&1 &
  local sync=$!; PIDS+=("$sync")
  wait_ready http://127.0.0.1:18085/readyz
  # Started in the cgroup's place: moved into a fresh cgroup before any poll arrives.
  IO360_ADDR=127.0.0.1:18086 IO360_SYNC_URL=http://127.0.0.1:18085 IO360_LOG=warn \
    "$BIN" serve longpoll --hold-secs 30 >"$d/longpoll.log" 2>&1 &
  local lp=$!; PIDS+=("$lp")
  wait_ready http://127.0.0.1:18086/readyz
  local cg; cg=$(cgroup_for "$lp" "lp-$label")
  "$LOAD" --target io360 --addr 127.0.0.1:18086 --store http://127.0.0.1:18084 --n "$n" \
    --rounds "$rounds" --sources "127.0.0.$SRC,127.0.0.$((SRC + 1))" --pids "$lp" \
    ${cg:+--cgroup "$cg"} --label "io360-$label" >>"$RESULTS"
  SRC=$((SRC + 2))
  kill -9 "$lp" "$sync" "$store" 2>/dev/null || true
  wait "$lp" "$sync" "$store" 2>/dev/null || true
}

run_nchan() {
  local n=$1 rounds=$2 label=$3
  local d="$WORK/nchan-$label"
  mkdir -p "$d/logs" "$d/body"
  sed "s|DATA_DIR|$d|g" "$NCHAN_CONF" >"$d/nginx.conf"
  nginx -p "$d" -c "$d/nginx.conf" &
  local master=$!; PIDS+=("$master")
  wait_ready http://127.0.0.1:18090/nchan_status
  local cg; cg=$(cgroup_for "$master" "nchan-$label")
  # Workers forked before the move stay in the old cgroup: move them too.
  local workers; workers=$(ps -o pid= --ppid "$master" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
  if [ -n "$cg" ]; then
    for w in ${workers//,/ }; do echo "$w" >"$cg/cgroup.procs"; done
  fi
  "$LOAD" --target nchan --addr 127.0.0.1:18090 --n "$n" --rounds "$rounds" \
    --sources "127.0.0.$SRC,127.0.0.$((SRC + 1))" --pids "$master,$workers" \
    ${cg:+--cgroup "$cg"} --label "nchan-$label" >>"$RESULTS"
  SRC=$((SRC + 2))
  kill -9 "$master" $(echo "${workers//,/ }") 2>/dev/null || true
  wait "$master" 2>/dev/null || true
}

for n in $N_LIST; do
  run_io360 "$n" "$ROUNDS" "$n"
  run_nchan "$n" "$ROUNDS" "$n"
done
run_io360 "$E2E_N" 10 "e2e-$E2E_N"

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
def kb(x): return f"{x/1024:8.2f}"
print(f"{'run':<16}{'N':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'RSS KiB/poll':>14}{'kmem KiB/poll':>15}{'tcp KiB/poll':>14}")
for r in rows:
    print(f"{r['label']:<16}{r['n']:>7}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{kb(r['rss_per_poll_bytes']):>14}{kb(r['kmem_per_poll_bytes']):>15}{kb(r['tcp_per_poll_bytes']):>14}")
print()
# The same times split in two: the first delivery of a round (publish path and one write;
# for io360 a store append with fsync, the feed, sync and longpoll) and each delivery's time
# after that first one (the fan-out proper).
# CPU per delivery while the rounds ran: the load client's (the same program for both) and
# the fan-out server's (longpoll; Nginx's master and workers). On a machine with few cores
# the two share the CPUs, so a client that needs more per answer slows the measured times.
print(f"{'run':<16}{'first ms':>10}{'after-first p50':>17}{'after-first p99':>17}{'client µs/delivery':>20}{'server µs/delivery':>20}")
for r in rows:
    print(f"{r['label']:<16}{r['first_ms']:>10.1f}{r['spread_p50_ms']:>17.1f}{r['spread_p99_ms']:>17.1f}"
          f"{r['client_cpu_us_per_delivery']:>20.1f}{r['server_cpu_us_per_delivery']:>20.1f}")
print()
for label, r in by.items():
    if not label.startswith("io360-") or label.startswith("io360-e2e"):
        continue
    n = label.split("-", 1)[1]
    p = by.get(f"nchan-{n}")
    if not p:
        continue
    def ratio(a, b): return a / b if b else float("nan")
    print(f"N={n}: io360/Nchan  p50 {ratio(r['p50_ms'], p['p50_ms']):.2f}x  p99 {ratio(r['p99_ms'], p['p99_ms']):.2f}x  "
          f"after-first p99 {ratio(r['spread_p99_ms'], p['spread_p99_ms']):.2f}x  "
          f"RSS/poll {ratio(r['rss_per_poll_bytes'], p['rss_per_poll_bytes']):.2f}x  "
          f"RSS+kmem/poll {ratio(r['rss_per_poll_bytes'] + r['kmem_per_poll_bytes'], p['rss_per_poll_bytes'] + p['kmem_per_poll_bytes']):.2f}x")
PY
