#!/usr/bin/env bash
# Static serving: io360's frontend against nginx, side by side on the same site files, in one
# run, on this machine. Also: a page carrying a 200-comment snapshot against the same page
# without one. A benchmark, not a test: it prints figures and ratios.
#
# The first table gives wrk and the server a core each; the next runs the servers with their
# defaults on the cores wrk shares. Both run saturated and along the load curve.
#
#   bash tests/browser/bench-static.sh            # 5 s per measurement, 4 pairs of each
#   DURATION=10 REPEAT=6 bash tests/browser/bench-static.sh
#
# Each comparison runs REPEAT pairs, nginx and io360 back to back, the order flipping from one
# pair to the next; it reports medians, and as the ratio the median of the pairs' ratios:
# on a shared 2-core machine one run against the next drifts by 20% or more.
#
# Needs: nginx (apt-get install nginx-light), wrk (apt-get install wrk), gzip, a release
# build of io360 (built here with cargo unless IO360_BIN is set), taskset (util-linux). Only
# 127.0.0.1 is dialled.
set -euo pipefail
# One load generator on one address stands for many readers: no per-address caps.
export IO360_MAX_CONNECTIONS_PER_CLIENT=0 IO360_MAX_REQUESTS_PER_CLIENT=0
cd "$(dirname "$0")/../.."

DURATION="${DURATION:-5}"
[ "$DURATION" -ge 3 ] || { echo "DURATION must be at least 3 (seconds)" >&2; exit 1; }
REPEAT="${REPEAT:-4}"
THREADS="${THREADS:-2}"
command -v nginx >/dev/null || { echo "nginx missing: apt-get install nginx-light" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset missing: apt-get install util-linux" >&2; exit 1; }
if [ -z "${IO360_BIN:-}" ]; then
  cargo build -q --release -p io360
  IO360_BIN="${CARGO_TARGET_DIR:-target}/release/io360"
fi

work="$(mktemp -d)"
chmod 755 "$work"  # nginx workers run as another user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 never answered" >&2
  tail -n 5 "$work"/*.log >&2 || true
  exit 1
}

# The site: the demo plus a typical article page and its stylesheet and script.
site="$work/site"
cp -r workloads/frontend/demo "$site"
python3 - "$site" <<'EOF'
import sys, random
root = sys.argv[1]
random.seed(7)
words = "comment page static server fast always up spike traffic reader thread live snapshot".split()
para = lambda n: " ".join(random.choice(words) for _ in range(n))
body = "".join(f"<h2>{para(4)}</h2><p>{para(120)}</p>" for _ in range(8))
html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{para(5)}</title>
<link rel="stylesheet" href="/style.css"><link rel="stylesheet" href="/embed.css"></head>
<body><main><article><h1>{para(6)}</h1>{body}</article>%s</main><script src="/embed.js" defer></script></body></html>"""
open(f"{root}/article.html", "w").write(html % "")
open(f"{root}/commented.html", "w").write(html % '<section id="io360-thread" data-thread="/bench"></section>')
open(f"{root}/app.css", "w").write("".join(f".c{i} {{ margin: {i}px; color: #{i:06x}; }}\n" for i in range(800)))
EOF
# Precompressed siblings: nginx's gzip_static uses them, and so does io360.
chmod -R a+rX "$site"
for f in "$site"/article.html "$site"/app.css "$site"/style.css; do gzip -9 -k -f "$f"; done

nginx_port="$(free_port)"
cat > "$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  open_file_cache max=1000 inactive=60s;
  etag on;
  gzip on;
  gzip_static on;
  gzip_vary on;
  gzip_comp_level 6;
  gzip_types text/css application/javascript text/javascript image/svg+xml application/json;
  server {
    listen 127.0.0.1:$nginx_port;
    root $site;
    index index.html;
    location / { try_files \$uri \$uri/ =404; }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"
wait_up "http://127.0.0.1:$nginx_port/article.html"

fe_port="$(free_port)"
# In a session of its own, as nginx is once it has daemonized: with the kernel's autogroups
# (sched_autogroup_enabled) a session is a scheduling group, and a server sharing wrk's group
# would be scheduled unlike nginx.
IO360_LOG=warn setsid "$IO360_BIN" serve frontend --addr "127.0.0.1:$fe_port" --site-dir "$site" >"$work/frontend.log" 2>&1 </dev/null &
pids+=($!)
wait_up "http://127.0.0.1:$fe_port/article.html"

# A saturated run (wrk sending each next request the moment an answer arrives) measures
# throughput, but its p99 is partly wrk's own whenever wrk, not the server, is what limits the
# rate:
#  - On cores of its own: against nginx, wrk ran 85% of the time and nginx 100%. Against
#    io360, which answers faster, wrk ran 99%, so answers queued in wrk. The "busy" column is
#    that share.
#  - On shared cores it is worse. Against nginx, wrk keeps running out of answers and sleeps.
#    Each answer nginx writes then wakes wrk, and the woken wrk takes the core at once
#    (measured: 7,000-9,800 times a second). Against io360, answers are always waiting, so wrk
#    never sleeps and gets a core only when a scheduler slice ends, while answers sit unread.
#    The "wrk wait" column is wrk's wait before each turn on a core, in ms: about 0.05 against
#    nginx, 0.2-0.55 against io360.
#
# Paced runs trace the load curve below saturation and past it, with wrk sleeping between
# requests as real clients do: after every k-th answer a connection pauses 1 ms before its
# next request (wrk's delay hook). With a pause after every answer the offered load is well
# below what either server can serve; with one after every 8th it is past nginx's saturation.
# There wrk is not the bottleneck, and the p99 is the server's.
for every in 1 8; do
  printf 'local n = 0\nfunction delay()\n  n = n + 1\n  if n %% %s == 0 then return 1 end\n  return 0\nend\n' \
    "$every" >"$work/pause-$every.lua"
done

# How long wrk's threads have waited for a core so far (ns), how many turns on one they have
# had, and how long they have run (ns), from schedstat; then the clock (ns).
wrk_sched() { # pid
  cat /proc/"$1"/task/*/schedstat 2>/dev/null |
    awk -v now="$(date +%s%N)" '{ run += $1; wait += $2; turns += $3 } END { printf "%.0f %.0f %.0f %s\n", wait, turns, run, now }'
}

# One wrk run: prints "rps p99_ms wait_ms busy", over the middle of the run:
#  - wait_ms: how long a wrk thread waited for a core, on average, before each of its turns on
#    one. Answers that arrive meanwhile sit unread, and that wait is in wrk's p99.
#  - busy: the share of the time a wrk thread was running (%). Near 100, wrk itself is the
#    bottleneck: answers queue in wrk, not in the server, and that queue is in its p99.
measure() { # url conns gzip(0/1) [wrk script]
  local hdr=() pin=() out="$work/wrk.out" pid w1 t1 r1 c1 w2 t2 r2 c2
  [ "$3" = 1 ] && hdr=(-H "Accept-Encoding: gzip")
  [ -n "${4:-}" ] && hdr+=(-s "$4")
  # WRK_CPU (a core list for taskset) and WRK_THREADS, when set, pin wrk and size it.
  [ -n "${WRK_CPU:-}" ] && pin=(taskset -c "$WRK_CPU")
  "${pin[@]}" wrk -t"${WRK_THREADS:-$THREADS}" -c"$2" -d"${DURATION}s" --latency "${hdr[@]}" "$1" >"$out" &
  pid=$!
  sleep 1
  read -r w1 t1 r1 c1 < <(wrk_sched "$pid")
  sleep $((DURATION - 2))
  read -r w2 t2 r2 c2 < <(wrk_sched "$pid")
  wait "$pid"
  awk -v waited=$((w2 - w1)) -v turns=$((t2 - t1)) -v ran=$((r2 - r1)) -v span=$((c2 - c1)) \
    -v threads="${WRK_THREADS:-$THREADS}" '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 } p99 = v }
    END {
      per = (turns > 0) ? waited / turns / 1e6 : 0
      busy = (span > 0) ? 100 * ran / span / threads : 0
      printf "%.0f %.2f %.3f %.0f\n", rps, p99, per, busy
    }' "$out"
}

# REPEAT pairs of runs of two URLs, the order flipping from one pair to the next (AB, BA, ...)
# so that a drift of the machine or a first-run effect hits both alike. Prints the medians
# "a_rps a_p99 b_rps b_p99", the median of the pairs' own ratios "rps_x p99_x" (b / a), which
# cancel the drift between pairs, the median wrk wait per turn (ms) "a_wait b_wait", and how
# busy wrk was (%) "a_busy b_busy".
compare() { # url_a url_b conns gzip [wrk script]
  local runs="" a b i
  for i in $(seq 1 "$REPEAT"); do
    if [ $((i % 2)) = 1 ]; then
      a="$(measure "$1" "$3" "$4" "${5:-}")"
      b="$(measure "$2" "$3" "$4" "${5:-}")"
    else
      b="$(measure "$2" "$3" "$4" "${5:-}")"
      a="$(measure "$1" "$3" "$4" "${5:-}")"
    fi
    runs+="$a $b"$'\n'
  done
  python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
med = [statistics.median(r[i] for r in rows) for i in range(8)]
rps_x = statistics.median(r[4] / r[0] for r in rows)
p99_x = statistics.median(r[5] / r[1] for r in rows)
print(f"{med[0]:.0f} {med[1]:.2f} {med[4]:.0f} {med[5]:.2f} {rps_x:.2f} {p99_x:.2f} {med[2]:.3f} {med[6]:.3f} {med[3]:.0f} {med[7]:.0f}")' <<<"$runs"
}

# A table of nginx (port $1) against io360 (port $2): 64 and 256 connections, plain and gzip,
# and for each k in $3 ("-" for none) a 1 ms pause after every k-th answer.
table() { # nginx_port io360_port "k..."
  local conns gz k script n_rps n_p99 f_rps f_p99 rps_x p99_x n_wait f_wait n_busy f_busy
  local row='%-6s %-5s %-3s | %10s %7s %8s %5s | %10s %7s %8s %5s | %6s %6s\n'
  # shellcheck disable=SC2059
  printf "$row" conns gzip k "nginx rps" "p99 ms" "wrk wait" busy "io360 rps" "p99 ms" "wrk wait" busy "rps x" "p99 x"
  for conns in 64 256; do
    for gz in 0 1; do
      for k in $3; do
        script=""
        [ "$k" != - ] && script="$work/pause-$k.lua"
        read -r n_rps n_p99 f_rps f_p99 rps_x p99_x n_wait f_wait n_busy f_busy < <(compare \
          "http://127.0.0.1:$1/article.html" "http://127.0.0.1:$2/article.html" "$conns" "$gz" "$script")
        # shellcheck disable=SC2059
        printf "$row" "$conns" "$([ $gz = 1 ] && echo yes || echo no)" "$k" \
          "$n_rps" "$n_p99" "$n_wait" "$n_busy" "$f_rps" "$f_p99" "$f_wait" "$f_busy" "$rps_x" "$p99_x"
      done
    done
  done
}

printf '\nStatic page %s (%s bytes), %s pairs of %s s runs, order flipping, medians (x: median ratio of a pair)\n' \
  /article.html "$(stat -c %s "$site/article.html")" "$REPEAT" "$DURATION"

# Starts nginx with one worker and io360 with one serving thread, both on core $2 when one is
# given, and sets loop_nginx and loop_fe to their ports.
one_loop_each() { # name [core]
  local pin=()
  [ -n "${2:-}" ] && pin=(taskset -c "$2")
  loop_nginx="$(free_port)"
  sed -e 's/^worker_processes auto;/worker_processes 1;/' -e "s/127.0.0.1:$nginx_port/127.0.0.1:$loop_nginx/" \
    -e "s|pid $work/nginx.pid|pid $work/nginx-$1.pid|" "$work/nginx.conf" >"$work/nginx-$1.conf"
  "${pin[@]}" nginx -c "$work/nginx-$1.conf" -p "$work"
  wait_up "http://127.0.0.1:$loop_nginx/article.html"
  pids+=("$(cat "$work/nginx-$1.pid")")
  loop_fe="$(free_port)"
  IO360_FRONTEND_THREADS=1 IO360_LOG=warn "${pin[@]}" setsid "$IO360_BIN" serve frontend --addr "127.0.0.1:$loop_fe" \
    --site-dir "$site" >"$work/frontend-$1.log" 2>&1 </dev/null &
  pids+=($!)
  wait_up "http://127.0.0.1:$loop_fe/article.html"
}

# Separate cores: wrk on core 0, and each server, with one event loop, alone on core 1. Nothing
# is shared but the machine, so wrk never waits for a core the server holds.
if [ "$(nproc)" -ge 2 ]; then
  one_loop_each pinned 1
  printf 'Separate cores: wrk -t1 on core 0; nginx (worker_processes 1) and io360 (IO360_FRONTEND_THREADS=1) alone on core 1\n'
  WRK_CPU=0 WRK_THREADS=1 table "$loop_nginx" "$loop_fe" "- 8"
  kill "${pids[-2]}" "${pids[-1]}" 2>/dev/null || true
else
  printf '\nSeparate cores: skipped, this machine has one core\n'
fi

printf '\nShared cores: the servers with their defaults (a worker or thread per core) and wrk -t%s, all on the same 2 cores\n' "$THREADS"
table "$nginx_port" "$fe_port" "- 1 8"

# One event loop each: nginx with one worker, io360 with one serving thread. With their
# defaults (a worker or a thread per core) the two spread connections differently: io360
# evenly over its threads, nginx unevenly (about 53 and 11 of 64 here, as its workers race
# to accept). With one loop each the spread is the same, and what differs is the servers.
one_loop_each shared
printf '\nThe same page with one event loop each (nginx worker_processes 1, io360 IO360_FRONTEND_THREADS=1)\n'
table "$loop_nginx" "$loop_fe" "-"

# The snapshot's cost: the same page with and without a 200-comment thread, in `io360 up`.
up_port="$(free_port)"
IO360_LOG=warn setsid "$IO360_BIN" up --addr "127.0.0.1:$up_port" --data-dir "$work/data" --site "$site" --no-rate-limits >"$work/up.log" 2>&1 </dev/null &
pids+=($!)
wait_up "http://127.0.0.1:$up_port/readyz"
for i in $(seq 1 200); do
  curl -fs -o /dev/null -H 'content-type: application/json' \
    -d "{\"text\":\"Comment number $i with *some* Markdown and a [link](https://example.org/$i).\",\"author\":\"Reader $i\"}" \
    "http://127.0.0.1:$up_port/api/v1/comments?thread=%2Fbench"
done
for _ in $(seq 1 100); do
  n="$(curl -fs "http://127.0.0.1:$up_port/commented.html" | grep -o 'class="io360-comment' | wc -l || true)"
  [ "$n" -ge 200 ] && break
  sleep 0.2
done
# The same bytes as a plain file (marker renamed, so no snapshot is spliced in): the
# snapshot's cost is what remains once the size is the same.
curl -fs "http://127.0.0.1:$up_port/commented.html" | sed 's/id="io360-thread"/id="io360-copy01"/' > "$site/copy.html"
gzip -9 -k -f "$site/copy.html"
wait_up "http://127.0.0.1:$up_port/copy.html"
printf '\nSnapshot: /commented.html carries %s comments (%s bytes); /copy.html is the same bytes as a plain file; io360 up, 64 conns\n' \
  "$n" "$(stat -c %s "$site/copy.html")"
printf '%-5s | %12s %9s | %12s %9s | %7s\n' gzip "file rps" "p99 ms" "snapshot rps" "p99 ms" "rps x"
for gz in 0 1; do
  read -r a_rps a_p99 s_rps s_p99 rps_x _ < <(compare "http://127.0.0.1:$up_port/copy.html" \
    "http://127.0.0.1:$up_port/commented.html" 64 "$gz")
  printf '%-5s | %12s %9s | %12s %9s | %7s\n' "$([ $gz = 1 ] && echo yes || echo no)" "$a_rps" "$a_p99" "$s_rps" "$s_p99" "$rps_x"
done
