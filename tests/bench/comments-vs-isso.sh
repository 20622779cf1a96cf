#!/usr/bin/env bash
# Benchmark: io360's comment API against Isso 0.14, side by side on this machine, one run.
#
# Same load for both: 64 concurrent clients, closed loop, for DURATION seconds each:
#   - posts per second (durable: io360 fsyncs before answering; Isso commits to SQLite),
#   - reads per second of a 50-comment thread,
#   - counts for 20 threads per request.
# Isso runs under gunicorn with 2 workers (the 2-core machine's best setting for it), guard and
# moderation off; io360 runs `io360 up` with rate limits off. Prints a table and the ratios.
#
# Usage: bash tests/bench/comments-vs-isso.sh    (DURATION=10 by default)
set -euo pipefail
# One load generator on one address stands for many readers: no per-address caps.
export IO360_MAX_CONNECTIONS_PER_CLIENT=0 IO360_MAX_REQUESTS_PER_CLIENT=0
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
CONC=${CONC:-64}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "==> installing Isso 0.14 (cached in $cache/isso-venv)"
if [ ! -x "$cache/isso-venv/bin/gunicorn" ] || ! "$cache/isso-venv/bin/python" -c 'import isso' 2>/dev/null; then
  python3 -m venv "$cache/isso-venv"
  "$cache/isso-venv/bin/pip" install -q isso==0.14.0 gunicorn
fi

echo "==> building io360 and the load generator (release)"
cargo build -q --release -p io360 -p io360-bench
bin="$CARGO_TARGET_DIR/release"

ISSO_PORT=18080
IO360_PORT=18090
sed "s#DATA_DIR#$work/isso#" ../shared/peers/isso.cfg > "$work/isso.cfg"
mkdir -p "$work/isso"
ISSO_SETTINGS="$work/isso.cfg" "$cache/isso-venv/bin/gunicorn" -w 2 --preload \
  -b 127.0.0.1:$ISSO_PORT isso.run >"$work/isso.log" 2>&1 &
pids+=($!)
"$bin/io360" up --addr 127.0.0.1:$IO360_PORT --data-dir "$work/io360" --no-rate-limits \
  >"$work/io360.log" 2>&1 &
pids+=($!)

wait_up() { for _ in $(seq 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up"; exit 1; }
wait_up "http://127.0.0.1:$ISSO_PORT/info"
wait_up "http://127.0.0.1:$IO360_PORT/api/v1/status"

echo "==> seeding a 50-comment thread in each"
for i in $(seq 50); do
  curl -fs -o /dev/null -X POST "http://127.0.0.1:$ISSO_PORT/new?uri=/bench/read" \
    -H 'content-type: application/json' \
    -d "{\"text\": \"Seed comment number $i, with *some* markdown and a bit more text to read.\", \"author\": \"Reader $i\", \"title\": \"Bench\"}"
  curl -fs -o /dev/null -X POST "http://127.0.0.1:$IO360_PORT/api/v1/comments?thread=/bench/read" \
    -H 'content-type: application/json' \
    -d "{\"text\": \"Seed comment number $i, with *some* markdown and a bit more text to read.\", \"author\": \"Reader $i\"}"
done
threads=$(printf '"/bench/t%d",' $(seq 19))'"/bench/read"'

load() { "$bin/io360-load" --concurrency "$CONC" --duration "$DURATION" "$@"; }
results="$work/results.jsonl"
run() { echo "   $1" >&2; shift; load "$@" | tee -a "$results" >&2; }

echo "==> load: $CONC clients, ${DURATION}s each"
run "isso post"  --label isso-post --method POST --expect 201 --header 'content-type: application/json' \
  --url "http://127.0.0.1:$ISSO_PORT/new?uri=/bench/post" \
  --body '{"text": "Benchmark comment {n} with *markdown*.", "author": "Bench", "title": "Bench"}'
run "io360 post" --label io360-post --method POST --expect 201 --header 'content-type: application/json' \
  --url "http://127.0.0.1:$IO360_PORT/api/v1/comments?thread=/bench/post" \
  --body '{"text": "Benchmark comment {n} with *markdown*.", "author": "Bench"}'
run "isso read"  --label isso-read --url "http://127.0.0.1:$ISSO_PORT/?uri=/bench/read"
run "io360 read" --label io360-read --url "http://127.0.0.1:$IO360_PORT/api/v1/comments?thread=/bench/read"
run "isso count" --label isso-count --method POST --header 'content-type: application/json' \
  --url "http://127.0.0.1:$ISSO_PORT/count" --body "[$threads]"
run "io360 count" --label io360-count --method POST --header 'content-type: application/json' \
  --url "http://127.0.0.1:$IO360_PORT/api/v1/counts" --body "{\"threads\": [$threads]}"

python3 - "$results" <<'PY'
import json, sys
r = {j["label"]: j for j in map(json.loads, open(sys.argv[1]))}
print()
print(f"{'operation':<10} {'isso rps':>10} {'io360 rps':>10} {'ratio':>7}   {'isso p50/p99 ms':>17} {'io360 p50/p99 ms':>17}  errors isso/io360")
for op in ["post", "read", "count"]:
    i, o = r[f"isso-{op}"], r[f"io360-{op}"]
    ratio = o["rps"] / i["rps"] if i["rps"] else float("inf")
    print(f"{op:<10} {i['rps']:>10.0f} {o['rps']:>10.0f} {ratio:>6.1f}x   {i['p50_ms']:>7.1f}/{i['p99_ms']:<8.1f} {o['p50_ms']:>7.1f}/{o['p99_ms']:<8.1f}  {i['errors']}/{o['errors']}")
PY
