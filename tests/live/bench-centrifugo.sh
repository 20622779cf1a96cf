#!/usr/bin/env bash
# Live-delivery benchmark: io360 against Centrifugo, same machine, one run.
#
# Fan-out: N subscribers on one thread (io360) or channel (Centrifugo); one message per round;
# the time from the publish until each subscriber had it (p50, p99: by the kernel's arrival
# stamp, and by when the client read it), CPU per delivery of the process holding the
# subscribers, and its memory per subscriber (resident, and the cgroup's kernel and TCP
# memory). io360 publishes with a comment POST to its public face (frontend, logic, the store's
# fsync, sync, longpoll: end to end) and is followed over /v1/events (SSE) and, separately,
# /v1/poll; Centrifugo publishes through its HTTP API to a namespace that keeps history and is
# followed over its unidirectional SSE transport (uni_sse).
#
# The reconnect storm: STORM_N subscribers; STORM_EVENTS events published at STORM_RATE per
# second; a quarter of the way, every subscriber is cut at once by a restart (io360: the
# longpoll tier, then longpoll and sync; Centrifugo: its process). All reconnect after the same
# jittered backoff and resume from their last position (io360: Last-Event-ID; Centrifugo: its
# recovery with offset and epoch). Measured: the time from the cut until every subscriber had
# every event published so far (caught up), events lost and duplicated, and subscribers told
# to reload (io360's reset, Centrifugo's `recovered: false`; a reload counts as having every
# event published before it, as a client reads the thread again then).
#
#   tests/live/bench-centrifugo.sh                  # N = 10000 and 19000, 8 rounds, separate and
#                                                   # shared cores; storms at 10000
#   N_LIST=2000 ROUNDS=2 LAYOUTS=separate STORM_N=1000 tests/live/bench-centrifugo.sh
#   KEEP_WORK=1 tests/live/bench-centrifugo.sh      # keeps every server's log
#   N_LIST= LAYOUTS= tests/live/bench-centrifugo.sh  # the storms alone; STORM_N=0: no storms
#
# Layouts: "separate" puts every server process on core 1 and the load client on core 0;
# "shared" pins nothing. Centrifugo v6.9.1 is built from the Go module proxy on first use and
# cached in ~/.cache/io360/peers; its configuration is tests/live/centrifugo.json (the
# namespace `bench` keeps 1,000 publications for 10 minutes). Only 127.0.0.0/8 is used.
set -euo pipefail
# One load generator on one address stands for many readers: no per-address caps.
export IO360_MAX_CONNECTIONS_PER_CLIENT=0 IO360_MAX_REQUESTS_PER_CLIENT=0
N_LIST=${N_LIST-"10000 19000"}
ROUNDS=${ROUNDS:-8}
LAYOUTS=${LAYOUTS-"separate shared"}
STORM_N=${STORM_N:-10000}
STORM_EVENTS=${STORM_EVENTS:-200}
STORM_RATE=${STORM_RATE:-20}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/io360/peers
CF_VERSION=v6.9.1
CF_BIN=${CF_BIN:-$CACHE/centrifugo-$CF_VERSION/centrifugo}
CF_CONF=${CF_CONF:-$ROOT/tests/live/centrifugo.json}
[ -f "$CF_CONF" ] || { echo "bench-centrifugo.sh: no Centrifugo configuration at $CF_CONF (set CF_CONF)" >&2; exit 1; }

if [ ! -x "$CF_BIN" ]; then
  echo "building Centrifugo $CF_VERSION (once; cached in $CACHE)" >&2
  mkdir -p "$(dirname "$CF_BIN")"
  (cd /tmp && GOBIN=$(dirname "$CF_BIN") GOFLAGS=-mod=mod go install "github.com/centrifugal/centrifugo/v6@$CF_VERSION")
fi

cd "$ROOT"
cargo build -q --release -p io360-live-tests --bins
[ -n "${IO360_BIN:-}" ] || cargo build -q --release -p io360
LOAD="$TARGET/release/io360-loadclient"
BIN=${IO360_BIN:-$TARGET/release/io360}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/io360-bench-cf.XXXXXX)
# shellcheck source=tests/live/bench-lib.sh
source "$ROOT/tests/live/bench-lib.sh"

# Runs `$@` (a start function) again until it succeeds, as a supervisor restarts a process
# that exited: after a kill, the old process's half-closed connections (FIN-WAIT-2, waiting on
# clients still busy with the storm) can hold its port for a moment, and a listen then fails.
restart() {
  for _ in $(seq 300); do
    "$@" && return 0
    sleep 0.1
  done
  echo "could not restart: $*" >&2
  return 1
}

# Waits until process $1 has exited (a zombie counts as gone: its sockets are closed).
wait_gone() {
  while [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; do
    sleep 0.02
  done
}

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
sources() { echo "127.0.0.$SRC,127.0.0.$((SRC + 1)),127.0.0.$((SRC + 2))"; SRC=$((SRC + 3)); }

# Starts one io360 tier in $1 (the run's directory) as its own process: `start_tier dir name
# addr [VAR=value...]`; its pid goes to dir/name.pid. Used again by the storm's restarts.
start_tier() {
  local d=$1 name=$2 addr=$3
  shift 3
  env IO360_ADDR="$addr" IO360_LOG=warn IO360_TIER_KEYS_FILE="$d/keys/keys" \
    IO360_TIER_TOKEN_FILE="$d/keys/$name.token" "$@" setsid $SERVER_PIN "$BIN" serve "$name" \
    >>"$d/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$d/$name.pid"
  disown
  wait_ready "http://$addr/readyz" "$pid"
}
store_env() { echo "IO360_DATA_DIR=$1/store"; }
sync_env() { echo "IO360_STORE_URL=http://127.0.0.1:18084"; }
longpoll_env() { echo "IO360_SYNC_URL=http://127.0.0.1:18085 IO360_LONGPOLL_HOLD_SECS=30"; }

# Store, sync, longpoll, logic and the frontend, each its own process, on the server cores.
start_io360() {
  local d=$1
  mkdir -p "$d"
  # The tiers know each other by credentials: a keyring, and one credential file per tier.
  "$BIN" tier-keys --out "$d/keys" >/dev/null
  start_tier "$d" store 127.0.0.1:18084 $(store_env "$d")
  start_tier "$d" sync 127.0.0.1:18085 $(sync_env)
  start_tier "$d" longpoll 127.0.0.1:18086 $(longpoll_env)
  start_tier "$d" logic 127.0.0.1:18087 IO360_STORE_URL=http://127.0.0.1:18084 \
    IO360_MODERATION=none IO360_NO_RATE_LIMITS=true
  start_tier "$d" frontend 127.0.0.1:18088 IO360_LOGIC_URL=http://127.0.0.1:18087 \
    IO360_LONGPOLL_URL=http://127.0.0.1:18086
}

stop_io360() {
  local d=$1
  for t in frontend logic longpoll sync store; do
    kill -9 "$(cat "$d/$t.pid")" 2>/dev/null || true
  done
  sleep 0.3
}

start_centrifugo() {
  local d=$1
  mkdir -p "$d"
  setsid $SERVER_PIN "$CF_BIN" -c "$CF_CONF" >>"$d/centrifugo.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$d/centrifugo.pid"
  disown
  wait_ready "http://127.0.0.1:18100/health" "$pid"
}

# A connection token for the `bench:bench` channel, signed with the configuration's secret.
cf_token() {
  python3 - "$CF_CONF" <<'PY'
import base64, hashlib, hmac, json, sys, time
conf = json.load(open(sys.argv[1]))
secret = conf["client"]["token"]["hmac_secret_key"].encode()
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400, "channels": ["bench:bench"]}).encode())
sig = b(hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest())
print(f"{head}.{claims}.{sig}")
PY
}
CF_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http_api"]["key"])' "$CF_CONF")
CF_TOKEN=$(cf_token)

fanout_io360() {
  local n=$1 label=$2 target=$3
  local d="$WORK/$label"
  start_io360 "$d"
  local lp; lp=$(cat "$d/longpoll.pid")
  local cg; cg=$(cgroup_for "$lp" "$label")
  $CLIENT_PIN "$LOAD" --target "$target" --addr 127.0.0.1:18086 --api http://127.0.0.1:18088 \
    --n "$n" --rounds "$ROUNDS" --sources "$(sources)" --pids "$lp" ${cg:+--cgroup "$cg"} \
    --label "$label" >>"$RESULTS"
  stop_io360 "$d"
}

fanout_centrifugo() {
  local n=$1 label=$2
  local d="$WORK/$label"
  start_centrifugo "$d"
  local pid; pid=$(cat "$d/centrifugo.pid")
  local cg; cg=$(cgroup_for "$pid" "$label")
  $CLIENT_PIN "$LOAD" --target centrifugo --addr 127.0.0.1:18100 --api-key "$CF_KEY" \
    --token "$CF_TOKEN" --n "$n" --rounds "$ROUNDS" --sources "$(sources)" --pids "$pid" \
    ${cg:+--cgroup "$cg"} --label "$label" >>"$RESULTS"
  kill -9 "$pid" 2>/dev/null || true
  sleep 0.3
}

# The storm's cut, as a script the load client runs: kill -9 the named io360 tiers at once,
# then start them again on the same addresses, sync first.
io360_cut_script() {
  local d=$1
  shift
  {
    echo "set -e"
    declare -f start_tier wait_ready wait_gone restart
    echo "SERVER_PIN='$SERVER_PIN' BIN='$BIN'"
    # Killed at once; each is started again only once it is gone (closing thousands of
    # connections takes the kernel a moment, and the old listener holds the port till then).
    for t in "$@"; do echo "kill -9 \$(cat '$d/$t.pid') 2>/dev/null || true"; done
    for t in "$@"; do echo "wait_gone \$(cat '$d/$t.pid')"; done
    for t in sync longpoll; do
      case " $* " in *" $t "*) ;; *) continue ;; esac
      case $t in
        sync) echo "restart start_tier '$d' sync 127.0.0.1:18085 $(sync_env)" ;;
        longpoll) echo "restart start_tier '$d' longpoll 127.0.0.1:18086 $(longpoll_env)" ;;
      esac
    done
  } >"$d/cut.sh"
}

storm_io360() {
  local label=$1
  shift
  local d="$WORK/$label"
  start_io360 "$d"
  io360_cut_script "$d" "$@"
  $CLIENT_PIN "$LOAD" --target io360-sse --addr 127.0.0.1:18086 --api http://127.0.0.1:18088 \
    --n "$STORM_N" --sources "$(sources)" --storm-events "$STORM_EVENTS" --storm-rate "$STORM_RATE" \
    --cut "bash $d/cut.sh" --label "$label" >>"$RESULTS"
  stop_io360 "$d"
}

storm_centrifugo() {
  local label=$1
  local d="$WORK/$label"
  start_centrifugo "$d"
  {
    echo "set -e"
    declare -f start_centrifugo wait_ready wait_gone restart
    echo "SERVER_PIN='$SERVER_PIN' CF_BIN='$CF_BIN' CF_CONF='$CF_CONF'"
    echo "kill -9 \$(cat '$d/centrifugo.pid') 2>/dev/null || true"
    echo "wait_gone \$(cat '$d/centrifugo.pid')"
    echo "restart start_centrifugo '$d'"
  } >"$d/cut.sh"
  $CLIENT_PIN "$LOAD" --target centrifugo --addr 127.0.0.1:18100 --api-key "$CF_KEY" \
    --token "$CF_TOKEN" --n "$STORM_N" --sources "$(sources)" --storm-events "$STORM_EVENTS" \
    --storm-rate "$STORM_RATE" --cut "bash $d/cut.sh" --label "$label" >>"$RESULTS"
  kill -9 "$(cat "$d/centrifugo.pid")" 2>/dev/null || true
  sleep 0.3
}

for l in $LAYOUTS; do
  layout "$l"
  for n in $N_LIST; do
    fanout_io360 "$n" "io360-sse-$n-$l" io360-sse
    fanout_io360 "$n" "io360-poll-$n-$l" io360
    fanout_centrifugo "$n" "centrifugo-$n-$l"
  done
done
if [ "$STORM_N" -gt 0 ]; then
  layout separate
  storm_io360 "storm-io360-longpoll" longpoll
  storm_io360 "storm-io360-longpoll+sync" longpoll sync
  storm_centrifugo "storm-centrifugo"
fi

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fan = [r for r in rows if "rounds" in r]
storms = [r for r in rows if "events" in r]
by = {r["label"]: r for r in rows}
kb = lambda x: f"{x/1024:8.2f}"
print(f"{'run':<30}{'N':>7}{'arrived p50':>12}{'arrived p99':>12}{'read p50':>10}{'read p99':>10}{'server µs/dlv':>14}{'RSS KiB/conn':>14}{'+kmem KiB':>11}")
for r in fan:
    print(f"{r['label']:<30}{r['n']:>7}{r['arrived_p50_ms']:>12.1f}{r['arrived_p99_ms']:>12.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
          f"{r['server_cpu_us_per_delivery']:>14.1f}{kb(r['rss_per_poll_bytes']):>14}{kb(r['rss_per_poll_bytes'] + r['kmem_per_poll_bytes']):>11}")
print()
ratio = lambda a, b: a / b if b else float("nan")
for r in fan:
    if not r["label"].startswith("io360-"):
        continue
    kind, rest = r["label"][len("io360-"):].split("-", 1)
    p = by.get(f"centrifugo-{rest}")
    if not p:
        continue
    print(f"{kind} {rest}: io360/Centrifugo  arrived p99 {ratio(r['arrived_p99_ms'], p['arrived_p99_ms']):.2f}x  "
          f"arrived p50 {ratio(r['arrived_p50_ms'], p['arrived_p50_ms']):.2f}x  read p99 {ratio(r['p99_ms'], p['p99_ms']):.2f}x  "
          f"server CPU/delivery {ratio(r['server_cpu_us_per_delivery'], p['server_cpu_us_per_delivery']):.2f}x  "
          f"RSS/conn {ratio(r['rss_per_poll_bytes'], p['rss_per_poll_bytes']):.2f}x  "
          f"RSS+kmem/conn {ratio(r['rss_per_poll_bytes'] + r['kmem_per_poll_bytes'], p['rss_per_poll_bytes'] + p['kmem_per_poll_bytes']):.2f}x")
print()
print(f"{'storm':<30}{'N':>7}{'events':>8}{'restart (ms)':>14}{'caught up after (ms)':>22}{'lost':>7}{'dup':>6}{'told to reload':>16}{'complete':>10}{'reconnects':>12}")
for r in storms:
    rec = "never" if r["recovered_ms"] is None else f"{r['recovered_ms']:.0f}"
    print(f"{r['label']:<30}{r['n']:>7}{r['events']:>8}{r['restart_ms']:>14.0f}{rec:>22}{r['lost']:>7}{r['duplicated']:>6}"
          f"{r['told_to_reload']:>16}{r['complete']:>10}{r['reconnects']:>12}")
PY
