#!/usr/bin/env bash
# Runs the images tests/images/build.sh made, with runc, the way the operator's pods run them:
# as the image's own user (which must be 65532), with a read-only root filesystem, no
# capabilities, and a writable volume on /data. The containers share the host's network
# namespace and listen on 127.0.0.1 only, so nothing but loopback is ever dialled.
#
#   io360           `io360 serve store` (found on the image's PATH, as the pods' command is):
#                   /healthz and /readyz answer 200, the store's files are in /data; the time
#                   from container start to ready is printed
#   io360-operator  `--version` names the workspace version; `crd` prints the CRD checked in
#                   under crds/
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
for tool in runc skopeo umoci jq curl python3; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian: apt-get install runc skopeo umoci jq curl)"
done
[ "$(id -u)" = 0 ] || die "runs as root (runc)"
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
}

# The pods' settings on top of the image's own: read-only root, no capabilities, no new
# privileges, the host's network namespace, no terminal, these arguments.
harden() {
  local bundle="$1"
  shift
  local args
  args=$(printf '%s\n' "$@" | jq -R . | jq -s .)
  jq --argjson args "$args" '
    .root.readonly = true
    | .process.terminal = false
    | .process.args = $args
    | .process.noNewPrivileges = true
    | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}
    | .linux.namespaces |= map(select(.type != "network"))
  ' "$bundle/config.json" >"$bundle/config.json.new"
  mv "$bundle/config.json.new" "$bundle/config.json"
}

expect_user() {
  local bundle="$1" image="$2" uid gid
  uid=$(jq -r '.process.user.uid' "$bundle/config.json")
  gid=$(jq -r '.process.user.gid' "$bundle/config.json")
  [ "$uid:$gid" = "65532:65532" ] || die "$image runs as $uid:$gid, not 65532:65532"
}

# Runs a container to completion (runc then deletes it); prints its output.
run_once() {
  local bundle="$1" id="$2"
  runc --root "$state" run --bundle "$bundle" "$id" </dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- io360 ------------------------------------------------------------------------------------
unpack io360 "$IO360_ARCHIVE"
bundle="$work/io360"
expect_user "$bundle" io360
# The pods' command is bare `io360`: the image's PATH must find it.
jq -e '.process.env | index("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")' \
  "$bundle/config.json" >/dev/null || die "io360's PATH does not hold /usr/local/bin"
for shell in sh bash dash ash busybox; do
  for dir in bin usr/bin sbin usr/sbin; do
    [ ! -e "$bundle/rootfs/$dir/$shell" ] || die "io360 has a shell: /$dir/$shell"
  done
done

harden "$bundle" io360 --version
got=$(run_once "$bundle" "io360-version-$$") || die "io360 --version failed: $got"
[ "$got" = "io360 $VERSION" ] || die "io360 --version says '$got', want 'io360 $VERSION'"

data="$work/data"
install -d -m 0700 -o 65532 -g 65532 "$data"
port=$(free_port)
harden "$bundle" io360 serve store --addr "127.0.0.1:$port"
jq --arg src "$data" '.mounts += [{destination: "/data", type: "bind", source: $src, options: ["rbind", "rw"]}]' \
  "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

id="io360-store-$$"
containers+=("$id")
log="$work/store.log"
start=$(date +%s%N)
runc --root "$state" run --detach --bundle "$bundle" "$id" </dev/null >"$log" 2>&1 ||
  die "the store did not start: $(tail -n 20 "$log")"
ready=""
for i in $(seq 1 1500); do
  if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null; then
    ready=$(date +%s%N)
    break
  fi
  if [ $((i % 20)) = 0 ]; then
    status=$(runc --root "$state" state "$id" 2>/dev/null | jq -r .status || echo gone)
    [ "$status" = running ] || die "the store stopped ($status) before it was ready: $(tail -n 20 "$log")"
  fi
  sleep 0.01
done
[ -n "$ready" ] || die "the store was not ready within 15 s: $(tail -n 20 "$log")"
curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz" ||
  die "/healthz did not answer 200: $(tail -n 20 "$log")"
metrics=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/metrics") ||
  die "/metrics did not answer 200"
grep -q '^io360_' <<<"$metrics" || die "/metrics has no io360_ series"
# The store keeps everything on the volume, owned by the image's user.
[ -e "$data/io360-store.lock" ] || die "the store wrote no lock file in /data: $(ls -la "$data")"
owner=$(stat -c %u:%g "$data/io360-store.lock")
[ "$owner" = 65532:65532 ] || die "the store's files in /data belong to $owner"
runc --root "$state" kill "$id" TERM
for _ in $(seq 1 500); do
  status=$(runc --root "$state" state "$id" 2>/dev/null | jq -r .status || echo gone)
  [ "$status" = running ] || break
  sleep 0.02
done
[ "$status" != running ] || die "the store did not stop within 10 s of SIGTERM"
runc --root "$state" delete --force "$id" >/dev/null 2>&1 || true
ready_ms=$(((ready - start) / 1000000))
echo "io360: serve store, read-only root as 65532:65532, /data a volume: /readyz 200 ${ready_ms} ms after start; /healthz 200"

# ---- io360-operator ---------------------------------------------------------------------------
unpack io360-operator "$OPERATOR_ARCHIVE"
bundle="$work/io360-operator"
expect_user "$bundle" io360-operator
jq -e '.process.args[0] == "/usr/local/bin/io360-operator"' "$bundle/config.json" >/dev/null ||
  die "io360-operator's entrypoint is $(jq -c .process.args "$bundle/config.json")"
entry=$(jq -r '.process.args[0]' "$bundle/config.json")

harden "$bundle" "$entry" --version
got=$(run_once "$bundle" "operator-version-$$") || die "io360-operator --version failed: $got"
[ "$got" = "io360-operator $VERSION" ] || die "io360-operator --version says '$got'"

harden "$bundle" "$entry" crd
run_once "$bundle" "operator-crd-$$" >"$work/crd.yaml" || die "io360-operator crd failed: $(tail "$work/crd.yaml")"
cmp -s "$work/crd.yaml" "$repo/crds/commentclusters.io360.dev.yaml" ||
  die "io360-operator crd differs from crds/commentclusters.io360.dev.yaml"
echo "io360-operator: --version and crd, read-only root as 65532:65532: ok"

awk -v a="$IO360_SIZE" -v b="$OPERATOR_SIZE" -v ms="$ready_ms" 'BEGIN {
  printf "sizes: io360 %.1f MiB, io360-operator %.1f MiB; store ready %d ms after container start\n",
    a / 1048576, b / 1048576, ms }'
