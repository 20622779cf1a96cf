#!/usr/bin/env bash
# The import benchmark (a script, not a timed test): generates a Disqus export of about
# SIZE_MIB MiB, imports it with `io360 import` into an empty data directory, and prints the
# time, throughput and peak RSS (target: under 200 MiB), then imports it again (everything
# skipped) and exports the result.
#
#   bash tests/import/bench.sh [SIZE_MIB]      # default 1024
#
# Uses release builds from $CARGO_TARGET_DIR (default ./target).
set -euo pipefail
size=${1:-1024}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --release -q -p io360 --bin io360 && cargo build --release -q -p io360-import --example generate)
bin=$target/release/io360
gen=$target/release/examples/generate
work=$(mktemp -d "${TMPDIR:-/tmp}/io360-import-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# About 40 KiB per thread of 100 posts.
threads=$(( size * 1024 / 40 ))
t0=$(date +%s.%N)
"$gen" disqus "$threads" 100 >"$work/disqus.xml"
t1=$(date +%s.%N)
bytes=$(stat -c %s "$work/disqus.xml")
printf 'generated %s threads x 100 posts: %.1f MiB in %.1f s\n' "$threads" \
  "$(echo "$bytes / 1048576" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"

run() { # label, then the command; prints wall time and peak RSS
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    cat "$work/err"; exit 1; }
  read -r secs kib <"$work/time"
  printf '%-10s %8.1f s  peak RSS %6.1f MiB  %6.1f MiB/s of export\n' "$label" "$secs" \
    "$(echo "$kib / 1024" | bc -l)" "$(echo "$bytes / 1048576 / $secs" | bc -l)"
  grep -v '^$' "$work/out" | head -2 | sed 's/^/           /'
}
run import "$bin" import --from disqus "$work/disqus.xml" --data-dir "$work/data"
run again "$bin" import --from disqus "$work/disqus.xml" --data-dir "$work/data"
/usr/bin/time -f '%e %M' -o "$work/time" "$bin" export --data-dir "$work/data" >"$work/site.ndjson"
read -r secs kib <"$work/time"
printf '%-10s %8.1f s  peak RSS %6.1f MiB  %s lines\n' export "$secs" \
  "$(echo "$kib / 1024" | bc -l)" "$(wc -l <"$work/site.ndjson")"
du -sh "$work/data/store" | sed 's/^/store on disk: /'
