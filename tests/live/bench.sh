#!/usr/bin/env bash
# Long-poll benchmark: io360 (store + sync + longpoll) against Nchan, same machine, one run.
#
# For N held polls on one channel it measures the time from a publish until every poll has
# the message (p50, p99, max over all polls of all rounds): until the answer arrived in the
# client's socket (the kernel's receive stamp: what the server did) and until the client read
# it (which adds the client's own lag on the cores it shares with the server). It also
# measures the server's memory per held poll (resident memory, and the cgroup's kernel and
# TCP memory), then prints io360/Nchan ratios. io360's publish is an append to the store
# (fsync, change feed, sync, longpoll), so its times are end to end; Nchan's is a POST
# straight to the fan-out server.
#
#   tests/live/bench.sh                 # N = 10000 and 19000, 8 rounds each (after one warm-up
#                                       # round), on separate and on shared cores; E2E at 1000
#   N_LIST="2000" ROUNDS=2 LAYOUTS=separate tests/live/bench.sh
#   KEEP_WORK=1 tests/live/bench.sh      # keeps every tier's log in /tmp/io360-bench.*
#
# Needs: nginx-light and libnginx-mod-nchan (apt), taskset (util-linux) for the separate-cores
# layout, cgroup v1 memory controller writable for the kernel-memory figures (skipped
# otherwise). Only 127.0.0.0/8 is used.
set -euo pipefail
# One load generator on one address stands for many readers: no per-address caps.
export IO360_MAX_CONNECTIONS_PER_CLIENT=0 IO360_MAX_REQUESTS_PER_CLIENT=0

N_LIST=${N_LIST:-"10000 19000"}
ROUNDS=${ROUNDS:-8}
LAYOUTS=${LAYOUTS:-"separate shared"}
E2E_N=${E2E_N:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# The peers' configurations sit beside the repository, as for the Isso benchmark.
NCHAN_CONF=${NCHAN_CONF:-$ROOT/../shared/peers/nchan.nginx.conf}
[ -f "$NCHAN_CONF" ] || { echo "bench.sh: no Nchan configuration at $NCHAN_CONF (set NCHAN_CONF)" >&2; exit 1; }

cd "$ROOT"
cargo build -q --release -p io360-live-tests --bins
[ -n "${IO360_BIN:-}" ] || cargo build -q --release -p io360
LOAD="$TARGET/release/io360-loadclient"
BIN=${IO360_BIN:-$TARGET/release/io360}

WORK=$(mktemp -d /tmp/io360-bench.XXXXXX)
# shellcheck source=tests/live/bench-lib.sh
source "$ROOT/tests/live/bench-lib.sh"

# Where the servers and the load client run. "separate": every server process on core 1 (Nginx
# with one worker), the client on core 0, so neither takes CPU from the other and a fan-out's
# arrival times are the server's own work. "shared": no pinning, the layout of earlier runs.
SERVER_PIN=""
CLIENT_PIN=""
layout() {
  case $1 in
    separate) SERVER_PIN="taskset -c 1"; CLIENT_PIN="taskset -c 0" ;;
    shared) SERVER_PIN=""; CLIENT_PIN="" ;;
    *) echo "unknown layout: $1 (separate or shared)" >&2; exit 2 ;;
  esac
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
SRC=2

run_io360() {
  local n=$1 rounds=$2 label=$3
  local d="$WORK/io360-$label"
  mkdir -p "$d"
  # The tiers know each other by credentials: a keyring and one credential file per tier.
  "$BIN" tier-keys --out "$d/keys" >/dev/null
  export IO360_TIER_KEYS_FILE="$d/keys/keys"
  IO360_TIER_TOKEN_FILE="$d/keys/store.token" \
  IO360_ADDR=127.0.0.1:18084 IO360_DATA_DIR="$d/store" IO360_LOG=warn $SERVER_PIN "$BIN" serve store >"$d/store.log" 2>&1 &
  local store=$!; PIDS+=("$store")
  wait_ready http://127.0.0.1:18084/readyz
  IO360_TIER_TOKEN_FILE="$d/keys/sync.token" \
  IO360_ADDR=127.0.0.1:18085 IO360_STORE_URL=http://127.0.0.1:18084 IO360_LOG=warn $SERVER_PIN "$BIN" serve sync >"$d/sync.log" 2>&1 &
  local sync=$!; PIDS+=("$sync")
  wait_ready http://127.0.0.1:18085/readyz
  # Started in the cgroup's place: moved into a fresh cgroup before any poll arrives.
  IO360_TIER_TOKEN_FILE="$d/keys/longpoll.token" \
  IO360_ADDR=127.0.0.1:18086 IO360_SYNC_URL=http://127.0.0.1:18085 IO360_LOG=warn \
    $SERVER_PIN "$BIN" serve longpoll --hold-secs 30 >"$d/longpoll.log" 2>&1 &
  local lp=$!; PIDS+=("$lp")
  wait_ready http://127.0.0.1:18086/readyz
  local cg; cg=$(cgroup_for "$lp" "lp-$label")
  $CLIENT_PIN "$LOAD" --target io360 --addr 127.0.0.1:18086 --store http://127.0.0.1:18084 --n "$n" \
    --tier-token-file "$d/keys/logic.token" \
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
  [ -z "$SERVER_PIN" ] || sed -i 's/^worker_processes .*/worker_processes 1;/' "$d/nginx.conf"
  $SERVER_PIN nginx -p "$d" -c "$d/nginx.conf" &
  local master=$!; PIDS+=("$master")
  wait_ready http://127.0.0.1:18090/nchan_status
  local cg; cg=$(cgroup_for "$master" "nchan-$label")
  # Workers forked before the move stay in the old cgroup: move them too.
  local workers; workers=$(ps -o pid= --ppid "$master" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
  if [ -n "$cg" ]; then
    for w in ${workers//,/ }; do echo "$w" >"$cg/cgroup.procs"; done
  fi
  $CLIENT_PIN "$LOAD" --target nchan --addr 127.0.0.1:18090 --n "$n" --rounds "$rounds" \
    --sources "127.0.0.$SRC,127.0.0.$((SRC + 1))" --pids "$master,$workers" \
    ${cg:+--cgroup "$cg"} --label "nchan-$label" >>"$RESULTS"
  SRC=$((SRC + 2))
  kill -9 "$master" $(echo "${workers//,/ }") 2>/dev/null || true
  wait "$master" 2>/dev/null || true
}

for l in $LAYOUTS; do
  layout "$l"
  for n in $N_LIST; do
    run_io360 "$n" "$ROUNDS" "$n-$l"
    run_nchan "$n" "$ROUNDS" "$n-$l"
  done
done
layout shared
run_io360 "$E2E_N" 10 "e2e-$E2E_N"

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
def kb(x): return f"{x/1024:8.2f}"
# "arrived": when each answer reached the client's socket (the kernel's receive stamp), which
# is the server's fan-out; "read": when the client read it, which adds the client's own lag.
# "round p99": each publish's own arrival p99, lowest / median / highest over the rounds.
print(f"{'run':<24}{'N':>7}{'arrived p50':>12}{'arrived p99':>12}{'round p99 lo/med/hi':>22}{'read p50':>10}{'read p99':>10}{'RSS KiB/poll':>14}{'kmem KiB/poll':>15}")
for r in rows:
    rp = r["round_arrived_p99_ms"]
    spread = f"{min(rp):.0f}/{statistics.median(rp):.0f}/{max(rp):.0f}" if rp else "-"
    print(f"{r['label']:<24}{r['n']:>7}{r['arrived_p50_ms']:>12.1f}{r['arrived_p99_ms']:>12.1f}{spread:>22}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{kb(r['rss_per_poll_bytes']):>14}{kb(r['kmem_per_poll_bytes']):>15}")
    if r["unstamped"]:
        print(f"  ({r['unstamped']} answers came without an arrival stamp and are left out of 'arrived')")
print()
# The first delivery of a round (publish path and one write; for io360 a store append with
# fsync, the feed, sync and longpoll) and each read's time after that first one.
# CPU per delivery while the rounds ran: the load client's (the same program for both) and
# the fan-out server's (longpoll; Nginx's master and workers).
print(f"{'run':<24}{'first ms':>10}{'after-first p99':>17}{'client µs/delivery':>20}{'server µs/delivery':>20}")
for r in rows:
    print(f"{r['label']:<24}{r['first_ms']:>10.1f}{r['spread_p99_ms']:>17.1f}"
          f"{r['client_cpu_us_per_delivery']:>20.1f}{r['server_cpu_us_per_delivery']:>20.1f}")
print()
def ratio(a, b): return a / b if b else float("nan")
for label, r in by.items():
    if not label.startswith("io360-") or label.startswith("io360-e2e"):
        continue
    case = label.split("-", 1)[1]
    p = by.get(f"nchan-{case}")
    if not p:
        continue
    med = lambda x: statistics.median(x["round_arrived_p99_ms"])
    print(f"{case}: io360/Nchan  arrived p99 {ratio(r['arrived_p99_ms'], p['arrived_p99_ms']):.2f}x "
          f"(median round {ratio(med(r), med(p)):.2f}x)  arrived p50 {ratio(r['arrived_p50_ms'], p['arrived_p50_ms']):.2f}x  "
          f"read p99 {ratio(r['p99_ms'], p['p99_ms']):.2f}x  "
          f"RSS/poll {ratio(r['rss_per_poll_bytes'], p['rss_per_poll_bytes']):.2f}x  "
          f"RSS+kmem/poll {ratio(r['rss_per_poll_bytes'] + r['kmem_per_poll_bytes'], p['rss_per_poll_bytes'] + p['kmem_per_poll_bytes']):.2f}x")
PY
