# shellcheck shell=bash
# Shared by the live-update benchmarks (bench.sh, bench-centrifugo.sh): sourced, not run.
# Expects WORK (the run's scratch directory) to be set. On exit, kills every process in PIDS
# and every process whose pid is in a file under WORK (so a restarted server's new process goes
# too), removes the cgroups cgroup_for made, and WORK unless KEEP_WORK is set.

CG_ROOT=/sys/fs/cgroup/memory
CGS=()
PIDS=()

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for f in "$WORK"/*.pid "$WORK"/*/*.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
  for c in "${CGS[@]}"; do rmdir "$c" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap bench_cleanup EXIT

# A fresh memory cgroup holding $1 and its children, named after $2; prints its path (empty if
# unavailable).
cgroup_for() {
  local name="$CG_ROOT/io360-bench-$$-$2"
  if mkdir "$name" 2>/dev/null; then
    echo "$1" >"$name/cgroup.procs" 2>/dev/null || { rmdir "$name"; return; }
    CGS+=("$name")
    echo "$name"
  fi
}

# Waits until $1 answers 200; with a pid as $2, gives up as soon as that process has exited.
wait_ready() {
  for _ in $(seq 200); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    if [ -n "${2:-}" ] && { [ ! -e "/proc/$2" ] || grep -q '^State:[[:space:]]*Z' "/proc/$2/status" 2>/dev/null; }; then
      return 1
    fi
    sleep 0.05
  done
  echo "not ready: $1" >&2
  return 1
}
