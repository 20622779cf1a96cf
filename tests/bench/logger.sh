#!/usr/bin/env bash
# Benchmark (not a test): the logger tier's durable ingest rate, and what shipping audit events
# costs the comment POST path.
#
#  1. Ingest: `io360 serve logger` alone; CONC clients post batches of BATCH events (and of 1
#     event) to /logger/v1/events for DURATION seconds; every answer comes after an fsync.
#     Reported as events per second.
#  2. Shipping cost: logic posting comments with IO360_LOGGER_URL unset (off) and set (on),
#     each run against a fresh `io360 serve store`, all against one fresh `io360 serve logger`
#     (not the one step 1 filled), in PAIRS pairs run back to back, off first in one pair and
#     on first in the next, so drift on the machine and a first-of-a-pair effect hit both
#     alike. Each run waits until store and logger are idle (their flushes and compactions
#     done), then CONC clients post for DURATION seconds. Reported as posts per second, each
#     pair's on/off ratio, their median and the ratio of the totals (the target: within 5%),
#     and each run's CPU per post in logic, store and logger. The store's CPU per post, the
#     same work either way, shows when the machine changed speed between a pair's two runs;
#     the median is also given over the pairs where it did not.
#
# Usage: bash tests/bench/logger.sh    (DURATION=8 CONC=64 BATCH=100 PAIRS=6 by default)
set -euo pipefail
# One load generator on one address stands for many readers: no per-address caps.
export IO360_MAX_CONNECTIONS_PER_CLIENT=0 IO360_MAX_REQUESTS_PER_CLIENT=0
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-8}
CONC=${CONC:-64}
BATCH=${BATCH:-100}
PAIRS=${PAIRS:-6}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "==> building io360 and the load generator (release)"
cargo build -q --release -p io360 -p io360-bench
bin="$CARGO_TARGET_DIR/release"
export IO360_LOG=warn

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }
wait_up() { for _ in $(seq 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up"; exit 1; }
load() { "$bin/io360-load" --concurrency "$CONC" --duration "$DURATION" "$@"; }
results="$work/results.jsonl"
run() { echo "   $1" >&2; shift; load "$@" | tee -a "$results" >&2; }

# The tiers know each other by credentials: a keyring, and one credential file per tier.
"$bin/io360" tier-keys --out "$work/keys" >/dev/null
export IO360_TIER_KEYS_FILE="$work/keys/keys"
AS_LOGIC="io360-tier: $(cat "$work/keys/logic.token")"
AS_FRONTEND="io360-tier: $(cat "$work/keys/frontend.token")"

LOGGER=127.0.0.1:18187
STORE=127.0.0.1:18184
LOGIC=127.0.0.1:18181

start_logger() {
  IO360_TIER_TOKEN_FILE="$work/keys/logger.token" \
    "$bin/io360" serve logger --addr $LOGGER --data-dir "$work/$1" >"$work/$1.log" 2>&1 &
  logger_pid=$!
  pids+=($logger_pid)
  wait_up "http://$LOGGER/readyz"
}
start_logger logger-ingest

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
event="{\"time\": \"$now\", \"kind\": \"comment.posted\", \"tier\": \"logic\", \"actor\": \"Bench {n}\", \"thread\": \"/bench/post\", \"comment\": 1, \"address\": \"203.0.113.7\", \"authorKey\": \"k{n}\"}"
# Every event of a batch differs (its comment number), so none is stored once for two: identical
# events (same time, same fields) are one record by design.
batch=$(python3 -c "import sys; e=sys.argv[1]; print('{\"events\": [' + ','.join(e.replace('\"comment\": 1', f'\"comment\": {i + 1}') for i in range(int(sys.argv[2]))) + ']}')" "$event" "$BATCH")

echo "==> logger ingest: $CONC clients, ${DURATION}s each"
run "batches of $BATCH" --label "ingest-batch-$BATCH" --method POST --expect 202 \
  --header 'content-type: application/json' --header "$AS_LOGIC" --url "http://$LOGGER/logger/v1/events" --body "$batch"
run "batches of 1" --label ingest-batch-1 --method POST --expect 202 \
  --header 'content-type: application/json' --header "$AS_LOGIC" --url "http://$LOGGER/logger/v1/events" \
  --body "{\"events\": [$event]}"

# The shipping runs get a logger of their own: the million events just ingested would
# otherwise still be compacting in the background while the first pairs run.
kill "$logger_pid"; wait "$logger_pid" 2>/dev/null || true
start_logger logger-shipping

# Waits (up to 30 s) until the store and the logger are idle: their background flushes and
# compactions from the previous run would otherwise land on whichever run comes next.
settle() {
  for _ in $(seq 60); do
    local a b
    a=$(awk '{s += $14 + $15} END {print s}' "/proc/$store_pid/stat" "/proc/$logger_pid/stat")
    sleep 0.5
    b=$(awk '{s += $14 + $15} END {print s}' "/proc/$store_pid/stat" "/proc/$logger_pid/stat")
    # Under 2% of one core over the half second (clock ticks are usually 100 per second).
    [ $((b - a)) -le 1 ] && return 0
  done
  echo "   (store or logger still busy after 30 s)" >&2
}

# Each run posts about 100,000 comments. With one store for all runs, its data would grow by
# that much per run and its big compactions would fall on whichever run crosses their
# threshold (always the same one of the twelve), whether shipping is on or off. So each run
# gets a fresh store; the logger lives on, since what it accumulates is part of shipping's cost.
logic() {
  local label=$1; shift
  IO360_TIER_TOKEN_FILE="$work/keys/store.token" \
    "$bin/io360" serve store --addr $STORE --data-dir "$work/store-$label" >"$work/store-$label.log" 2>&1 &
  store_pid=$!
  pids+=($store_pid)
  wait_up "http://$STORE/readyz"
  env "$@" IO360_STORE_URL="http://$STORE" IO360_ADMIN_TOKEN=bench-admin-token-0123456789 \
    IO360_NO_RATE_LIMITS=true IO360_TIER_TOKEN_FILE="$work/keys/logic.token" "$bin/io360" serve logic --addr $LOGIC >"$work/logic-$label.log" 2>&1 &
  local pid=$!
  wait_up "http://$LOGIC/readyz"
  settle
  local before="$(cpu "$pid") $(cpu "$store_pid") $(cpu "$logger_pid")"
  run "logic, logger $label" --label "post-$label" --method POST --expect 201 \
    --header 'content-type: application/json' --header "$AS_FRONTEND" \
    --url "http://$LOGIC/api/v1/comments?thread=/bench/post-{n}" \
    --body '{"text": "Benchmark comment {n} with *markdown*.", "author": "Bench"}'
  echo "$label $before $(cpu "$pid") $(cpu "$store_pid") $(cpu "$logger_pid")" >>"$work/cpu.txt"
  if [ "$label" != off ]; then
    curl -fs "http://$LOGIC/metrics" | grep -E '^io360_logger_events_(shipped|dropped)_total' >&2 || true
  fi
  kill "$pid" "$store_pid"; wait "$pid" "$store_pid" 2>/dev/null || true
  rm -rf "$work/store-$label"
}

echo "==> comment POSTs with shipping off and on: $CONC clients, ${DURATION}s each, $PAIRS pairs (order flipping)"
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then
    logic "off$i" -u IO360_LOGGER_URL
    logic "on$i" IO360_LOGGER_URL="http://$LOGGER"
  else
    logic "on$i" IO360_LOGGER_URL="http://$LOGGER"
    logic "off$i" -u IO360_LOGGER_URL
  fi
done

python3 - "$results" "$BATCH" "$PAIRS" "$work/cpu.txt" <<'PY'
import json, statistics, sys
r = {j["label"]: j for j in map(json.loads, open(sys.argv[1]))}
cpu = {}
for line in open(sys.argv[4]):
    label, *t = line.split()
    t = list(map(float, t))
    cpu[f"post-{label}"] = [t[i + 3] - t[i] for i in range(3)]
batch = int(sys.argv[2])
pairs = range(1, int(sys.argv[3]) + 1)
def rps(label): return r[label]["rps"]
print()
print(f"logger ingest, batches of {batch}: {rps(f'ingest-batch-{batch}') * batch:,.0f} events/s durable "
      f"({rps(f'ingest-batch-{batch}'):,.0f} batches/s, p50 {r[f'ingest-batch-{batch}']['p50_ms']} ms)")
print(f"logger ingest, batches of 1:   {rps('ingest-batch-1'):,.0f} events/s durable "
      f"(p50 {r['ingest-batch-1']['p50_ms']} ms)")
for i in pairs:
    for l in [f"post-off{i}", f"post-on{i}"]:
        j = r[l]
        us = [c / j["requests"] * 1e6 for c in cpu[l]]
        print(f"{l:10} {j['rps']:8,.0f} posts/s  p50 {j['p50_ms']:.2f} ms  p99 {j['p99_ms']:.2f} ms  errors {j.get('errors', 0)}"
              f"  CPU per post: logic {us[0]:.1f} µs, store {us[1]:.1f} µs, logger {us[2]:.1f} µs")
ratios = [rps(f"post-on{i}") / rps(f"post-off{i}") for i in pairs]
off = sum(rps(f"post-off{i}") for i in pairs)
on = sum(rps(f"post-on{i}") for i in pairs)
print("pair ratios, on / off: " + ", ".join(f"{x:.3f}" for x in ratios))
print(f"POST throughput, logger on / off: median pair {statistics.median(ratios):.3f}, "
      f"totals {on:,.0f} / {off:,.0f} = {on / off:.3f} (target >= 0.95)")
# The store does the same work for a post whether shipping is on or off, so its CPU per post
# tells how fast the machine was: when it differs by more than 3% between the two runs of a
# pair, the machine changed speed between them and the pair's ratio says more about that than
# about shipping.
def store_us(l): return cpu[l][1] / r[l]["requests"]
speed = [store_us(f"post-on{i}") / store_us(f"post-off{i}") for i in pairs]
print("store CPU per post, on / off: " + ", ".join(f"{x:.3f}" for x in speed))
# What shipping adds to the CPU a post costs logic and store, the logger's included. The load
# generator, which also uses the two cores, is not counted, so this overstates the share of
# the machine shipping takes; but it does not move when the machine gives all processes less
# time, which the throughput ratio does.
def cpu_post(l): return sum(cpu[l]) / r[l]["requests"]
cost = [cpu_post(f"post-on{i}") / cpu_post(f"post-off{i}") for i in pairs]
held = [i for i, s in enumerate(speed) if abs(s - 1) <= 0.03]
if held:
    h = [ratios[i] for i in held]
    c = [cost[i] for i in held]
    print(f"pairs where the machine held its speed (store within 3%): {len(held)} of {len(ratios)}, "
          f"throughput on / off {min(h):.3f}-{max(h):.3f}, median {statistics.median(h):.3f}; "
          f"CPU per post of logic, store and logger on / off {min(c):.3f}-{max(c):.3f}, "
          f"median {statistics.median(c):.3f}")
else:
    print("no pair where the machine held its speed (store within 3%)")
PY
