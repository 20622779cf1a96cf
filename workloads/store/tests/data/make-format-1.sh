#!/usr/bin/env bash
# Makes the format-1 fixtures: a store and a logger data directory as io360 wrote them before
# on-disk records carried a format version. Kept so every later version is tested against
# data its users already have; there is no need to run this again.
#
#   make-format-1.sh <io360 binary built from that version> <output directory>
#
# The fixtures in the repository (workloads/store/tests/data/format-1.tar.gz and
# workloads/logger/tests/data/format-1.tar.gz) were made with the io360 binary built from
# commit 810e433, whose store and logger are those of main at cd2e307.
#
# It runs `io360 up` on loopback (ports chosen by the kernel), makes one of each kind of record
# through the public API (comments published, held and approved, edited, voted on, deleted,
# replied to, posted with an Idempotency-Key; a thread closed and reopened; a suspension set
# and lifted; a ban; an author erased), stops it with SIGTERM, and packs `store/` and `logger/` as `format-1.tar.gz` in
# `<output directory>/store` and `<output directory>/logger` (tarballs, since fjall's empty
# directories matter and git keeps none).
set -euo pipefail
bin=$(realpath "$1")
out=$2
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
token=fixture-admin-token
IO360_MODERATION=first-time IO360_NO_RATE_LIMITS=true IO360_ADMIN_TOKEN=$token IO360_LOG_FORMAT=json \
  "$bin" up --addr 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q 'is up on' "$work/out" 2>/dev/null && break; sleep 0.2; done
base=$(sed -n 's/^io360 is up on \(http:[^ ]*\)\/$/\1/p' "$work/out")
api=$base/api/v1
for _ in $(seq 100); do curl -sf "$api/status" >/dev/null && break; sleep 0.2; done
json=(-H 'content-type: application/json')
admin=(-H "authorization: Bearer $token")
post() { curl -sf "${json[@]}" -X POST "$api/comments?thread=$1" -d "$2"; }
id() { sed -n 's/.*"comment":{"id":\([0-9]*\).*/\1/p'; }
etoken() { sed -n 's/.*"editToken":"\([^"]*\)".*/\1/p'; }

# Ann's first comment is held (first-time moderation), then approved; her next ones publish.
held=$(post /posts/hello/ '{"text":"Hello *world*","author":"Ann","email":"ann@example.org","website":"https://ann.example.org"}')
held_id=$(echo "$held" | id)
curl -sf "${admin[@]}" -X POST "$api/admin/comments/$held_id/approve" >/dev/null
second=$(curl -sf "${json[@]}" -H 'Idempotency-Key: fixture-key-1' -X POST "$api/comments?thread=/posts/hello/" \
  -d '{"text":"A second thought","author":"Ann","email":"ann@example.org"}')
second_id=$(echo "$second" | id)
curl -sf "${json[@]}" -X PATCH "$api/comments/$second_id" -H "authorization: Bearer $(echo "$second" | etoken)" \
  -d '{"text":"A second thought, edited"}' >/dev/null
reply=$(post /posts/hello/ "{\"text\":\"A reply\",\"author\":\"Ann\",\"email\":\"ann@example.org\",\"parent\":$held_id}")
curl -sf "${json[@]}" -X POST "$api/comments/$held_id/vote" -d '{"value":1}' >/dev/null
gone=$(post /posts/hello/ '{"text":"Soon gone","author":"Ann","email":"ann@example.org"}')
curl -sf -X DELETE "$api/comments/$(echo "$gone" | id)" -H "authorization: Bearer $(echo "$gone" | etoken)" >/dev/null
# Bob is held and stays held; Carol is approved, banned, then erased.
post /posts/other '{"text":"Bob waits","author":"Bob","email":"bob@example.org"}' >/dev/null
carol=$(post /posts/other '{"text":"Carol says hi","author":"Carol","email":"carol@example.org"}')
carol_id=$(echo "$carol" | id)
curl -sf "${admin[@]}" -X POST "$api/admin/comments/$carol_id/approve" >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X POST "$api/admin/bans" -d "{\"comment\":$carol_id}" >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X POST "$api/admin/bans" -d '{"range":"203.0.113.0/24"}' >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X POST "$api/admin/authors/erase" -d '{"email":"carol@example.org"}' >/dev/null
curl -sf "${admin[@]}" -X POST "$api/admin/threads/close?thread=/posts/closed" >/dev/null
curl -sf "${admin[@]}" -X POST "$api/admin/threads/close?thread=/posts/other" >/dev/null
curl -sf "${admin[@]}" -X POST "$api/admin/threads/reopen?thread=/posts/other" >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X PUT "$api/admin/suspension" -d '{"suspended":true,"reason":"fixture"}' >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X PUT "$api/admin/suspension" -d '{"suspended":false}' >/dev/null
curl -sf "${admin[@]}" "${json[@]}" -X PUT "$api/admin/suspension" -d '{"suspended":true,"reason":"kept in the fixture"}' >/dev/null
echo "held=$held_id second=$second_id reply=$(echo "$reply" | id) carol=$carol_id"
sleep 2 # the shippers flush their audit events
kill -TERM "$pid"
wait "$pid" || true
rm -f "$work/data/store/io360-store.lock" "$work/data/logger/"*.lock
for tier in store logger; do
  mkdir -p "$out/$tier"
  tar -C "$work/data" --sort=name --owner=0 --group=0 --numeric-owner --mtime=2026-12-06 \
    -czf "$out/$tier/format-1.tar.gz" "$tier"
done
