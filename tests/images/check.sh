#!/usr/bin/env bash
# Runs the images tests/images/build.sh made, with runc, the way the operator's pods run them:
# as the image's own user (which must be 65532), with a read-only root filesystem, no
# capabilities, and a writable volume on /data. The containers share the host's network
# namespace and listen on 127.0.0.1 only, so nothing but loopback is ever dialled.
#
#   io360           `io360 serve store` (found on the image's PATH, as the pods' command is):
#                   /healthz and /readyz answer 200, the store's files are in /data; the time
#                   from container start to ready is printed. Then the default command,
#                   `io360 up`: the demo site built into the binary, a comment posted and read
#                   back, its data in /data.
#   io360-operator  the entrypoint is the operator (the chart gives only args); `--version`
#                   names the workspace version; `crd` prints the CRD checked in under crds/
# Both: user 65532:65532, no shell, the OCI labels build.sh passed (version, revision, ...).
#
# Reads ${XDG_CACHE_HOME:-$HOME/.cache}/io360/images/out/images.env. Needs root, runc, skopeo,
# umoci, jq and curl. Leaves no container, runc state or unpacked image behind.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360/images"
env_file="$cache/out/images.env"

die() {
  echo "check.sh: FAIL: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || die "runs as root (runc)"
if ! command -v umoci >/dev/null && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq umoci >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq umoci >/dev/null; } ||
    die "cannot install umoci"
fi
for tool in runc skopeo umoci jq curl python3; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian: apt-get install runc skopeo umoci jq curl)"
done
# skopeo running as root keeps a blob info cache in /var/lib/containers/cache; as in build.sh,
# a mount namespace of our own puts the images' cache directory there instead.
if [ -z "${IO360_IMAGES_NAMESPACE:-}" ]; then
  exec env IO360_IMAGES_NAMESPACE=1 unshare --mount --propagation private "$BASH" "$0" "$@"
fi
mkdir -p "$cache/containers-cache" /var/lib/containers/cache
mountpoint -q /var/lib/containers/cache || mount --bind "$cache/containers-cache" /var/lib/containers/cache
[ -s "$env_file" ] || die "no $env_file: run tests/images/build.sh first"
# shellcheck source=/dev/null
. "$env_file"

mkdir -p "$cache/tmp"
work=$(mktemp -d "$cache/tmp/check.XXXXXX")
state="$work/runc"
containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do
    runc --root "$state" kill "$c" KILL >/dev/null 2>&1 || true
    runc --root "$state" delete --force "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# An OCI runtime bundle of the archive's image, as umoci makes it from the image's config.
unpack() {
  local name="$1" archive="$2"
  skopeo copy --quiet "oci-archive:$archive" "oci:$work/layout:$name" ||
    die "cannot read $archive"
  umoci unpack --image "$work/layout:$name" "$work/$name" >/dev/null ||
    die "cannot unpack $name"
  cp "$work/$name/config.json" "$work/$name/config.image.json"
}

# Writes the bundle's config.json: the image's own, plus what the operator's pods set (read-only
# root, no capabilities, no new privileges), the host's network namespace, no terminal, these
# arguments and, when DATA is not empty, DATA bound read-write on /data.
prepare() {
  local bundle="$1" data="$2"
  shift 2
  local args
  args=$(printf '%s\n' "$@" | jq -R . | jq -s .)
  jq --argjson args "$args" --arg data "$data" '
    .root.readonly = true
    | .process.terminal = false
    | .process.args = $args
    | .process.noNewPrivileges = true
    | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}
    | .linux.namespaces |= map(select(.type != "network"))
    | if $data == "" then . else
        .mounts += [{destination: "/data", type: "bind", source: $data, options: ["rbind", "rw"]}]
      end
  ' "$bundle/config.image.json" >"$bundle/config.json"
}

image_args() { jq -r '.process.args[]' "$1/config.image.json"; }

expect_user() {
  local bundle="$1" image="$2" uid gid
  uid=$(jq -r '.process.user.uid' "$bundle/config.image.json")
  gid=$(jq -r '.process.user.gid' "$bundle/config.image.json")
  [ "$uid:$gid" = "65532:65532" ] || die "$image runs as $uid:$gid, not 65532:65532"
}

expect_no_shell() {
  local bundle="$1" image="$2" shell dir
  for shell in sh bash dash ash busybox; do
    for dir in bin usr/bin sbin usr/sbin usr/local/bin; do
      [ ! -e "$bundle/rootfs/$dir/$shell" ] || die "$image has a shell: /$dir/$shell"
    done
  done
}

# The OCI labels build.sh passed through the Dockerfile's build args.
expect_labels() {
  local archive="$1" title="$2" labels key want
  labels=$(skopeo inspect "oci-archive:$archive" | jq -c .Labels)
  for key in title:"$title" version:"$VERSION" revision:"$REVISION" licenses:Apache-2.0; do
    want="${key#*:}"
    [ "$(jq -r --arg k "org.opencontainers.image.${key%%:*}" '.[$k]' <<<"$labels")" = "$want" ] ||
      die "$title's label org.opencontainers.image.${key%%:*} is not '$want': $labels"
  done
  [ "$(jq -r '.["org.opencontainers.image.source"] // ""' <<<"$labels")" != "" ] ||
    die "$title has no org.opencontainers.image.source label"
}

# Runs a container to completion (runc then deletes it); prints its output.
run_once() {
  local bundle="$1" id="$2"
  runc --root "$state" run --bundle "$bundle" "$id" </dev/null 2>&1
}

# Starts a container in the background, its output in $work/ID.log.
start() {
  local bundle="$1" id="$2"
  containers+=("$id")
  runc --root "$state" run --detach --bundle "$bundle" "$id" </dev/null >"$work/$id.log" 2>&1 ||
    die "$id did not start: $(tail -n 20 "$work/$id.log")"
}

status() { runc --root "$state" state "$1" 2>/dev/null | jq -r .status || echo gone; }

# Waits (15 s at most) for URL to answer 200 while container ID runs.
wait_ok() {
  local id="$1" url="$2" i
  for i in $(seq 1 1500); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    if [ $((i % 20)) = 0 ] && [ "$(status "$id")" != running ]; then
      die "$id stopped before $url answered: $(tail -n 20 "$work/$id.log")"
    fi
    sleep 0.01
  done
  die "$url did not answer 200 within 15 s: $(tail -n 20 "$work/$id.log")"
}

# SIGTERM, as the kubelet sends; the container must be gone within 10 s.
stop() {
  local id="$1" i
  runc --root "$state" kill "$id" TERM
  for i in $(seq 1 500); do
    [ "$(status "$id")" = running ] || break
    sleep 0.02
  done
  [ "$(status "$id")" != running ] || die "$id did not stop within 10 s of SIGTERM"
  runc --root "$state" delete --force "$id" >/dev/null 2>&1 || true
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

new_volume() {
  install -d -m 0700 -o 65532 -g 65532 "$work/$1"
  echo "$work/$1"
}

# ---- io360 ------------------------------------------------------------------------------------
unpack io360 "$IO360_ARCHIVE"
bundle="$work/io360"
expect_user "$bundle" io360
expect_no_shell "$bundle" io360
expect_labels "$IO360_ARCHIVE" io360
# The pods' command is a bare `io360`: the image's PATH must find it.
jq -e '.process.env | index("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")' \
  "$bundle/config.image.json" >/dev/null || die "io360's PATH does not hold /usr/local/bin"
[ "$(stat -c %u:%g "$bundle/rootfs/data")" = 65532:65532 ] ||
  die "io360's /data belongs to $(stat -c %u:%g "$bundle/rootfs/data"), not 65532:65532"

prepare "$bundle" "" io360 --version
got=$(run_once "$bundle" "io360-version-$$") || die "io360 --version failed: $got"
[ "$got" = "io360 $VERSION" ] || die "io360 --version says '$got', want 'io360 $VERSION'"

# `io360 serve store`, as the store's pod runs it, with the tiers' keyring and its credential
# (made by the image's own `io360 tier-keys`, as files the way a mounted Secret hands them over).
data=$(new_volume store-data)
port=$(free_port)
prepare "$bundle" "$data" io360 tier-keys --out /data/tier-keys
got=$(run_once "$bundle" "io360-keys-$$") || die "io360 tier-keys failed: $got"
prepare "$bundle" "$data" io360 serve store --addr "127.0.0.1:$port" \
  --tier-keys-file /data/tier-keys/keys --tier-token-file /data/tier-keys/store.token
id="io360-store-$$"
begin=$(date +%s%N)
start "$bundle" "$id"
wait_ok "$id" "http://127.0.0.1:$port/readyz"
ready_ms=$((($(date +%s%N) - begin) / 1000000))
curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz" ||
  die "the store's /healthz did not answer 200: $(tail -n 20 "$work/$id.log")"
curl -fsS --max-time 2 "http://127.0.0.1:$port/metrics" | grep -q '^io360_' ||
  die "the store's /metrics has no io360_ series"
# The store keeps everything on the volume, as the image's user.
[ -e "$data/io360-store.lock" ] || die "the store wrote nothing in /data: $(ls -la "$data")"
owner=$(stat -c %u:%g "$data/io360-store.lock")
[ "$owner" = 65532:65532 ] || die "the store's files in /data belong to $owner"
stop "$id"
echo "io360: serve store, read-only root, 65532:65532, /data a volume: /readyz 200 ${ready_ms} ms after start; /healthz 200"

# The image's default command (`io360 up`): the demo site built into the binary, a comment
# posted and read back, everything kept in /data.
mapfile -t default_args < <(image_args "$bundle")
[ "${default_args[*]}" = "/usr/local/bin/io360 up" ] ||
  die "io360's default command is '${default_args[*]}', not '/usr/local/bin/io360 up'"
data=$(new_volume up-data)
port=$(free_port)
prepare "$bundle" "$data" "${default_args[@]}" --addr "127.0.0.1:$port"
id="io360-up-$$"
start "$bundle" "$id"
base="http://127.0.0.1:$port"
wait_ok "$id" "$base/"
curl -fsS --max-time 2 "$base/" | grep -q '<title>io360 demo</title>' ||
  die "io360 up does not serve the demo site at /"
curl -fsS -o /dev/null --max-time 2 "$base/embed.js" || die "io360 up does not serve /embed.js"
thread="/check/$$"
curl -fsS -o /dev/null --max-time 5 -H 'content-type: application/json' \
  --data '{"text": "posted inside the io360 image"}' "$base/api/v1/comments?thread=$thread" ||
  die "a comment could not be posted: $(tail -n 20 "$work/$id.log")"
curl -fsS --max-time 5 "$base/api/v1/comments?thread=$thread" | grep -q 'posted inside the io360 image' ||
  die "the posted comment is not listed"
for kept in admin-token store logger; do
  [ -e "$data/$kept" ] || die "io360 up kept no $kept in /data: $(ls -la "$data")"
done
stop "$id"
echo "io360: up (the default command): demo site, a comment posted and listed, data in /data"

# ---- io360-operator ---------------------------------------------------------------------------
unpack io360-operator "$OPERATOR_ARCHIVE"
bundle="$work/io360-operator"
expect_user "$bundle" io360-operator
expect_no_shell "$bundle" io360-operator
expect_labels "$OPERATOR_ARCHIVE" io360-operator
mapfile -t default_args < <(image_args "$bundle")
# The chart gives only args (`run ...`): the entrypoint must be the operator.
[ "${default_args[*]}" = "/usr/local/bin/io360-operator run" ] ||
  die "io360-operator's default command is '${default_args[*]}'"
entry="${default_args[0]}"

prepare "$bundle" "" "$entry" --version
got=$(run_once "$bundle" "operator-version-$$") || die "io360-operator --version failed: $got"
[ "$got" = "io360-operator $VERSION" ] || die "io360-operator --version says '$got'"

prepare "$bundle" "" "$entry" crd
run_once "$bundle" "operator-crd-$$" >"$work/crd.yaml" || die "io360-operator crd failed: $(tail "$work/crd.yaml")"
cmp -s "$work/crd.yaml" "$repo/crds/commentclusters.io360.dev.yaml" ||
  die "io360-operator crd differs from crds/commentclusters.io360.dev.yaml"
echo "io360-operator: --version and crd (equal to crds/), read-only root, 65532:65532: ok"

awk -v a="$IO360_SIZE" -v b="$OPERATOR_SIZE" -v ms="$ready_ms" 'BEGIN {
  printf "sizes: io360 %.1f MiB, io360-operator %.1f MiB; store ready %d ms after container start\n",
    a / 1048576, b / 1048576, ms }'
