#!/usr/bin/env bash
# Benchmark: io360's comment API over HTTP with the store on fjall, on PostgreSQL with one store
# replica, and on PostgreSQL with two store replicas on one database, against Isso 0.14; side by
# side on this machine, in one run.
#
# Each io360 setup is real processes wired as on Kubernetes: two `io360 serve logic` replicas
# (the load's clients take them in turn, as a Service spreads them) in front of the store tier.
# With one store replica both logic replicas use it; with two, each logic replica has its own
# store replica and both stores write to the same database. The load generator stands where the
# frontend stands (it presents the frontend's tier credential).
#
# Same load for every setup: CONC concurrent clients, closed loop, DURATION seconds each:
#   - posts per second, durable (fjall fsyncs before answering; PostgreSQL commits with fsync
#     and synchronous_commit on; Isso commits to SQLite),
#   - reads per second of a 50-comment thread.
# PostgreSQL runs from Debian's packages with a data directory of its own (shared_buffers 128MB),
# as user nobody when run as root. Isso runs under gunicorn with 2 workers, guard and moderation
# off. Prints a table and the ratios.
#
# Usage: bash tests/bench/store-engines.sh    (DURATION=10, CONC=64 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
CONC=${CONC:-64}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
work=$(mktemp -d)
chmod 755 "$work"
pids=()
# Stops the processes of one setup (a bare `wait` would wait for PostgreSQL too).
stop_all() {
  [ ${#pids[@]} -eq 0 ] && return 0
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
pg_pid=""
cleanup() {
  stop_all
  if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> installing Isso 0.14 (cached in $cache/isso-venv)"
if [ ! -x "$cache/isso-venv/bin/gunicorn" ] || ! "$cache/isso-venv/bin/python" -c 'import isso' 2>/dev/null; then
  python3 -m venv "$cache/isso-venv"
  "$cache/isso-venv/bin/pip" install -q isso==0.14.0 gunicorn
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pgbin" ]; then
  echo "==> installing PostgreSQL from Debian"
  apt-get install -y -q postgresql >/dev/null
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

echo "==> building io360 and the load generator (release)"
cargo build -q --release -p io360 -p io360-bench
bin="$CARGO_TARGET_DIR/release"

as_nobody=()
if [ "$(id -u)" = 0 ]; then as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --); fi
PG_PORT=18432
echo "==> PostgreSQL $(basename "$(dirname "$pgbin")") on 127.0.0.1:$PG_PORT (fsync on)"
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown 65534:65534 "$work/pg"
"${as_nobody[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
"${as_nobody[@]}" "$pgbin/postgres" -D "$work/pg/data" -p $PG_PORT -k "$work/pg" \
  -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB \
  -c fsync=on -c synchronous_commit=on >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 300); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p $PG_PORT && break; sleep 0.1; done
for db in one two; do "$pgbin/createdb" -h 127.0.0.1 -p $PG_PORT -U postgres "$db"; done

"$bin/io360" tier-keys --out "$work/keys" >/dev/null
frontend_token=$(cat "$work/keys/frontend.token")
export IO360_TIER_KEYS_FILE="$work/keys/keys" IO360_NO_RATE_LIMITS=true \
  IO360_ADMIN_TOKEN=bench-admin-token-0123456789

wait_up() { for _ in $(seq 600); do curl -fs -o /dev/null "$@" && return 0; sleep 0.1; done; echo "$* did not come up"; exit 1; }

# store <port> <data dir> [env...]: an `io360 serve store`.
store() {
  local port=$1 dir=$2; shift 2
  env IO360_TIER_TOKEN_FILE="$work/keys/store.token" "$@" \
    "$bin/io360" serve store --addr 127.0.0.1:$port --data-dir "$dir" >"$work/store-$port.log" 2>&1 &
  pids+=($!)
  wait_up "http://127.0.0.1:$port/readyz"
}
# logic <port> <store url>: an `io360 serve logic`.
logic() {
  IO360_TIER_TOKEN_FILE="$work/keys/logic.token" \
    "$bin/io360" serve logic --addr 127.0.0.1:$1 --store-url "$2" >"$work/logic-$1.log" 2>&1 &
  pids+=($!)
  wait_up -H "io360-tier: $frontend_token" "http://127.0.0.1:$1/api/v1/status"
}

load() { "$bin/io360-load" --concurrency "$CONC" --duration "$DURATION" "$@"; }
results="$work/results.jsonl"
run() { echo "   $1" >&2; shift; load "$@" | tee -a "$results" >&2; }
seed_text() { echo "Seed comment number $1, with *some* markdown and a bit more text to read."; }

# measure <label> <logic url>...: seeds a 50-comment thread, then posts and reads.
measure() {
  local label=$1; shift
  local urls=() u
  for u in "$@"; do urls+=(--url "$u/api/v1/comments?thread=/bench/read"); done
  for i in $(seq 50); do
    curl -fs -o /dev/null -X POST "$1/api/v1/comments?thread=/bench/read" -H "io360-tier: $frontend_token" \
      -H 'content-type: application/json' -d "{\"text\": \"$(seed_text "$i")\", \"author\": \"Reader $i\"}"
  done
  local posts=()
  for u in "$@"; do posts+=(--url "$u/api/v1/comments?thread=/bench/post"); done
  run "$label post" --label "$label-post" --method POST --expect 201 \
    --header 'content-type: application/json' --header "io360-tier: $frontend_token" \
    "${posts[@]}" --body '{"text": "Benchmark comment {n} with *markdown*.", "author": "Bench"}'
  run "$label read" --label "$label-read" --header "io360-tier: $frontend_token" "${urls[@]}"
}

echo "==> load: $CONC clients, ${DURATION}s each"
echo "==> io360, the store on fjall"
store 18184 "$work/fjall"
logic 18101 http://127.0.0.1:18184
logic 18102 http://127.0.0.1:18184
measure fjall http://127.0.0.1:18101 http://127.0.0.1:18102
stop_all

pg_env() { echo IO360_STORE_ENGINE=postgres "IO360_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$1"; }
echo "==> io360, the store on PostgreSQL, one store replica"
# shellcheck disable=SC2046
store 18184 "$work/unused" $(pg_env one)
logic 18101 http://127.0.0.1:18184
logic 18102 http://127.0.0.1:18184
measure pg1 http://127.0.0.1:18101 http://127.0.0.1:18102
stop_all

echo "==> io360, the store on PostgreSQL, two store replicas on one database"
# shellcheck disable=SC2046
store 18184 "$work/unused" $(pg_env two)
# shellcheck disable=SC2046
store 18185 "$work/unused" $(pg_env two)
logic 18101 http://127.0.0.1:18184
logic 18102 http://127.0.0.1:18185
measure pg2 http://127.0.0.1:18101 http://127.0.0.1:18102
stop_all

echo "==> Isso"
ISSO_PORT=18080
sed "s#DATA_DIR#$work/isso#" ../shared/peers/isso.cfg > "$work/isso.cfg"
mkdir -p "$work/isso"
ISSO_SETTINGS="$work/isso.cfg" "$cache/isso-venv/bin/gunicorn" -w 2 --preload \
  -b 127.0.0.1:$ISSO_PORT isso.run >"$work/isso.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$ISSO_PORT/info"
for i in $(seq 50); do
  curl -fs -o /dev/null -X POST "http://127.0.0.1:$ISSO_PORT/new?uri=/bench/read" \
    -H 'content-type: application/json' \
    -d "{\"text\": \"$(seed_text "$i")\", \"author\": \"Reader $i\", \"title\": \"Bench\"}"
done
run "isso post" --label isso-post --method POST --expect 201 --header 'content-type: application/json' \
  --url "http://127.0.0.1:$ISSO_PORT/new?uri=/bench/post" \
  --body '{"text": "Benchmark comment {n} with *markdown*.", "author": "Bench", "title": "Bench"}'
run "isso read" --label isso-read --url "http://127.0.0.1:$ISSO_PORT/?uri=/bench/read"
stop_all

python3 - "$results" <<'PY'
import json, sys
r = {j["label"]: j for j in map(json.loads, open(sys.argv[1]))}
setups = [("fjall", "io360, fjall"), ("pg1", "io360, PostgreSQL, 1 store"), ("pg2", "io360, PostgreSQL, 2 stores"), ("isso", "Isso 0.14")]
print()
print(f"{'setup':<30} {'posts/s':>9} {'p50/p99 ms':>15} {'reads/s':>9} {'p50/p99 ms':>15}  errors")
for key, name in setups:
    p, g = r[f"{key}-post"], r[f"{key}-read"]
    print(f"{name:<30} {p['rps']:>9.0f} {p['p50_ms']:>6.1f}/{p['p99_ms']:<8.1f} {g['rps']:>9.0f} {g['p50_ms']:>6.1f}/{g['p99_ms']:<8.1f}  {p['errors']}/{g['errors']}")
print()
def ratio(a, b, op):
    x, y = r[f"{a}-{op}"]["rps"], r[f"{b}-{op}"]["rps"]
    return x / y if y else float("inf")
for a, b in [("pg1", "fjall"), ("pg2", "fjall"), ("pg2", "pg1"), ("fjall", "isso"), ("pg1", "isso"), ("pg2", "isso")]:
    print(f"{a} / {b}: posts {ratio(a, b, 'post'):.2f}x, reads {ratio(a, b, 'read'):.2f}x")
PY
