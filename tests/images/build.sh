#!/usr/bin/env bash
# Builds io360's two container images from the repository's Dockerfile, without a daemon
# (buildah), for the cluster tests, which run this on every test run. Cold, it makes the base
# images and compiles a release build; warm, with nothing changed, it takes seconds.
#
#   tests/images/build.sh            build (or reuse) both images and write the archives
#   tests/images/build.sh --check    and then run them (tests/images/check.sh)
#
# Public bases cannot be pulled here, so it first makes equivalent ones from Debian packages
# and passes them as the Dockerfile's build args:
#   BUILDER_IMAGE  like rust:1.95-slim-bookworm: Debian bookworm minbase with ca-certificates,
#                  gcc and libc6-dev, and the Rust toolchain installed on this machine under
#                  /usr/local/rustup, with rustup's proxies in /usr/local/cargo/bin;
#   RUNTIME_IMAGE  like gcr.io/distroless/cc-debian12:nonroot: the files of a fixed list of
#                  Debian packages (libc, libgcc, libstdc++, libgomp, libssl, CA certificates,
#                  time zones), a `nonroot` user 65532, no shell, no package manager.
# Each base is tagged with a hash of what it was made from, and made only when that changes.
#
# Everything lives under ${XDG_CACHE_HOME:-$HOME/.cache}/io360/images ($cache): buildah's
# storage, its run state, its cache mounts (cargo's registry and target directory, through
# TMPDIR), the Debian packages, the logs. Nothing is written to /var/lib/containers, where only
# an empty directory is made, to mount the cache's own over it in this script's mount namespace.
#
# Output, read by the cluster tests:
#   $cache/out/io360.oci.tar           OCI archive of the tier image (ref io360:$VERSION)
#   $cache/out/io360-operator.oci.tar  OCI archive of the operator image (ref io360-operator:$VERSION)
#   $cache/out/images.env              VERSION, REVISION, IO360_ARCHIVE, OPERATOR_ARCHIVE,
#                                      IO360_SIZE, OPERATOR_SIZE (uncompressed bytes)
#
# Environment: IO360_IMAGES_REFRESH=1 re-reads the Debian package lists and remakes the bases.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360/images"
out="$cache/out"
logs="$cache/logs"
check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build.sh: runs as root (buildah with its own storage, mmdebstrap)" >&2; exit 1; }
# buildah and skopeo running as root keep a blob info cache in /var/lib/containers/cache, a path
# no option moves: in a mount namespace of this build's own, the cache's directory is there.
if [ -z "${IO360_IMAGES_NAMESPACE:-}" ]; then
  exec env IO360_IMAGES_NAMESPACE=1 unshare --mount --propagation private "$BASH" "$0" "$@"
fi
mkdir -p "$cache/containers-cache" /var/lib/containers/cache
mountpoint -q /var/lib/containers/cache || mount --bind "$cache/containers-cache" /var/lib/containers/cache

started=$(date +%s.%N)
mkdir -p "$cache"/{storage,run,tmp,apt,bases,logs,out}
# One build at a time per cache: test runs started together wait for each other.
exec 9>"$cache/lock"
flock 9

# buildah keeps its cache mounts ($TMPDIR/buildah-cache/<id>) and image copies in TMPDIR.
export TMPDIR="$cache/tmp"
export BUILDAH_ISOLATION=oci

# Fails loudly: the step, the command and the tail of its log.
run_logged() {
  local name="$1"
  shift
  local log="$logs/$name.log" rc
  # A subshell outside any condition, so that `set -e` holds inside the step's functions too.
  set +e
  (
    set -e
    "$@"
  ) >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    echo "build.sh: step '$name' failed (exit $rc): $*" >&2
    echo "---- last lines of $log ----" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

die() {
  echo "build.sh: $*" >&2
  exit 1
}

for tool in buildah mmdebstrap apt-get dpkg-deb sha256sum git jq; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian: apt-get install buildah mmdebstrap jq)"
done

# The storage driver: overlay where the kernel allows it here, else vfs (slower, copies layers).
# Chosen once per cache: storage made by one driver is not readable by the other.
if [ -d "$cache/storage/overlay" ]; then
  driver=overlay
elif [ -d "$cache/storage/vfs" ]; then
  driver=vfs
elif buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay images >/dev/null 2>&1; then
  driver=overlay
else
  rm -rf "${cache:?}/storage" "${cache:?}/run"
  mkdir -p "$cache/storage" "$cache/run"
  driver=vfs
fi
bah() {
  buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver "$driver" "$@"
}
has_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Debian packages, through an apt of our own pointed at bookworm (whatever the host runs).
debian_mirror=http://deb.debian.org/debian
debian_security=http://deb.debian.org/debian-security
apt_dir="$cache/apt"
mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,debs}
cat >"$apt_dir/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $debian_mirror bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $debian_mirror bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $debian_security bookworm-security main
EOF
: >"$apt_dir/state/status"
apt_get() {
  apt-get -q -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State="$apt_dir/state" -o Dir::State::status="$apt_dir/state/status" \
    -o Dir::Cache="$apt_dir/cache" -o APT::Architecture=amd64 -o APT::Sandbox::User=root \
    -o Debug::NoLocking=true "$@"
}
apt_cache() {
  apt-cache -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State="$apt_dir/state" -o Dir::State::status="$apt_dir/state/status" \
    -o Dir::Cache="$apt_dir/cache" -o APT::Architecture=amd64 "$@"
}
if [ "${IO360_IMAGES_REFRESH:-0}" = 1 ] || ! ls "$apt_dir"/state/lists/*_Packages* >/dev/null 2>&1; then
  run_logged apt-update apt_get update
fi

# ---------------------------------------------------------------------------------------------
# The runtime base: what distroless cc-debian12 ships, from the same Debian packages.
runtime_packages=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 gcc-12-base libgomp1 libstdc++6 libssl3)
runtime_versions=$(apt_cache show --no-all-versions "${runtime_packages[@]}" 2>/dev/null |
  awk '/^Package: / { p = $2 } /^Version: / { printf "%s=%s ", p, $2 }')
for p in "${runtime_packages[@]}"; do
  [[ " $runtime_versions" == *" $p="* ]] || die "no Debian package $p in the bookworm lists under $apt_dir"
done
runtime_recipe_version=3
runtime_key=$(printf '%s\n' "runtime $runtime_recipe_version" "$runtime_versions" | sha256sum | cut -c1-16)
runtime_image="localhost/io360-runtime-base:$runtime_key"

make_runtime_base() {
  local work="$cache/bases/runtime-$runtime_key"
  rm -rf "$work"
  mkdir -p "$work/debs" "$work/rootfs"
  local pinned
  read -ra pinned <<<"$runtime_versions"
  (cd "$work/debs" && apt_get download "${pinned[@]}") || return 1
  local root="$work/rootfs"
  for deb in "$work"/debs/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$root" || return 1
  done
  # Files, not tools: no maintainer scripts ran, no package database, no docs but copyrights.
  rm -rf "$root"/usr/share/{man,info,lintian,gdb,gcc,bug,locale} "$root"/usr/sbin/update-ca-certificates
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  # What update-ca-certificates would have made: one bundle of every certificate.
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | while read -r crt; do
    # shellcheck disable=SC1003 # sed's `a\`: a newline after a last line that lacks one
    sed -e '$a\' "$crt"
  done >"$root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || return 1
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
nogroup:x:65534:
nonroot:x:65532:
EOF
  cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
EOF
  install -d -m 0700 "$root/root"
  install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
  install -d -m 1777 "$root/tmp"
  for shell in sh bash dash; do
    if [ -e "$root/bin/$shell" ] || [ -e "$root/usr/bin/$shell" ]; then
      echo "the runtime base has a shell ($shell)" >&2
      return 1
    fi
  done
  import_rootfs "$root" "$runtime_image" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --user 65532:65532 --workingdir /home/nonroot \
    --label io360.base.packages="${runtime_versions% }" || return 1
  rm -rf "$work"
}

# Makes an image of one layer from a directory, with the given `buildah config` options.
import_rootfs() {
  local root="$1" image="$2"
  shift 2
  local ctr mnt
  ctr=$(bah from --pull=never scratch) || return 1
  mnt=$(bah mount "$ctr") || return 1
  tar -C "$root" -c . | tar -C "$mnt" -x --numeric-owner || return 1
  bah umount "$ctr" >/dev/null || return 1
  bah config "$@" "$ctr" || return 1
  bah commit --rm "$ctr" "$image" || return 1
}

# ---------------------------------------------------------------------------------------------
# The builder base: rust:1.95-slim-bookworm's recipe, with this machine's toolchain.
rust_version=1.95
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
toolchain=""
for tc in "$rustup_home/toolchains/$rust_version".*-x86_64-unknown-linux-gnu \
  "$rustup_home/toolchains/stable-x86_64-unknown-linux-gnu"; do
  if [ -x "$tc/bin/rustc" ] && "$tc/bin/rustc" -V | grep -q "^rustc $rust_version\."; then
    toolchain="$tc"
    break
  fi
done
[ -n "$toolchain" ] || die "needs the Rust $rust_version toolchain under $rustup_home/toolchains (rustup toolchain install $rust_version)"
[ -x "$cargo_bin/rustup" ] || die "needs rustup in $cargo_bin"
rustc_full=$("$toolchain/bin/rustc" -V | cut -d' ' -f2)
builder_packages="ca-certificates,gcc,libc6-dev"
builder_recipe_version=1
builder_key=$({
  echo "builder $builder_recipe_version bookworm minbase $builder_packages"
  "$toolchain/bin/rustc" -vV
  "$toolchain/bin/cargo" -V
  sha256sum <"$cargo_bin/rustup"
} | sha256sum | cut -c1-16)
builder_image="localhost/io360-builder-base:$builder_key"

make_builder_base() {
  local work="$cache/bases/builder-$builder_key"
  local name="$rustc_full-x86_64-unknown-linux-gnu"
  rm -rf "$work"
  mkdir -p "$work"
  # debian:bookworm-slim is minbase without docs; rust:*-slim adds these three packages.
  # shellcheck disable=SC2016 # "$1" in the hook is the root mmdebstrap gives it
  mmdebstrap --variant=minbase --include="$builder_packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs" \
    "deb $debian_mirror bookworm main" "deb $debian_mirror bookworm-updates main" \
    "deb $debian_security bookworm-security main" || return 1
  local root="$work/rootfs"
  local tc="$root/usr/local/rustup/toolchains/$name"
  mkdir -p "$tc" "$root/usr/local/cargo/bin"
  cp -a "$toolchain"/{bin,lib,libexec} "$tc/" || return 1
  cp "$cargo_bin/rustup" "$root/usr/local/cargo/bin/rustup"
  for proxy in cargo cargo-clippy cargo-fmt clippy-driver rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
    ln "$root/usr/local/cargo/bin/rustup" "$root/usr/local/cargo/bin/$proxy"
  done
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n\n[overrides]\n' \
    "$name" >"$root/usr/local/rustup/settings.toml"
  chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo"
  import_rootfs "$root" "$builder_image" \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$rustc_full" --workingdir / --cmd bash \
    --label io360.base.toolchain="$rustc_full" || return 1
  rm -rf "$work"
}

if [ "${IO360_IMAGES_REFRESH:-0}" = 1 ] || ! has_image "$runtime_image"; then
  echo "making the runtime base $runtime_image"
  run_logged runtime-base make_runtime_base
fi
if [ "${IO360_IMAGES_REFRESH:-0}" = 1 ] || ! has_image "$builder_image"; then
  echo "making the builder base $builder_image (Rust $rustc_full)"
  run_logged builder-base make_builder_base
fi

# ---------------------------------------------------------------------------------------------
# The images, from the Dockerfile the users build.
version=$(awk '/^\[/ { s = ($0 == "[workspace.package]") }
  s && /^version *=/ { gsub(/^[^"]*"|".*$/, ""); print; exit }' "$repo/Cargo.toml")
[ -n "$version" ] || die "no version under [workspace.package] in $repo/Cargo.toml"
revision=unknown
source_url=https://io360.dev
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git -C "$repo" rev-parse --short HEAD)
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    revision="$revision-dirty"
  fi
  source_url=$(git -C "$repo" remote get-url origin 2>/dev/null || echo "$source_url")
fi

# The build's RUN steps trust what this machine trusts: where a proxy re-signs TLS, its CA is in
# the host's bundle, not in Debian's. A bind mount, so it changes no layer.
trust=()
host_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -s "$host_bundle" ]; then
  trust=(--volume "$host_bundle:$host_bundle:ro")
fi

# Each target of the Dockerfile, as localhost/io360-build/<target>:<version>.
build_target() {
  local target="$1"
  nice -n 10 buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver "$driver" \
    build --layers --force-rm --pull=never --network host "${trust[@]}" \
    --build-arg BUILDER_IMAGE="$builder_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg SOURCE="$source_url" \
    --target "$target" -t "localhost/io360-build/$target:$version" -f "$repo/Dockerfile" "$repo"
}

# The labels made from build args are set again, on top: buildah 1.28's layer cache does not key
# on build-arg values, so a LABEL step would keep the revision of the build that first made it
# (BuildKit has no such problem). A FROM-only file adds them as metadata, without a layer.
label_target() {
  local target="$1"
  mkdir -p "$cache/empty-context"
  printf 'FROM localhost/io360-build/%s:%s\n' "$target" "$version" |
    bah build --layers --force-rm --pull=never \
      --label org.opencontainers.image.version="$version" \
      --label org.opencontainers.image.revision="$revision" \
      --label org.opencontainers.image.source="$source_url" \
      -t "localhost/$target:$version" -f - "$cache/empty-context"
}

# Uncompressed size of an OCI archive's image: its layers as the runtime unpacks them.
uncompressed_size() {
  local a="$1" manifest digest media
  manifest=$(tar -xOf "$a" index.json | jq -r '.manifests[0].digest | sub(":"; "/")')
  tar -xOf "$a" "blobs/$manifest" | jq -r '.layers[] | .digest + " " + .mediaType' |
    while read -r digest media; do
      case "$media" in
        *+gzip) tar -xOf "$a" "blobs/${digest/://}" | gzip -dc | wc -c ;;
        *+zstd) tar -xOf "$a" "blobs/${digest/://}" | zstd -dc | wc -c ;;
        *) tar -xOf "$a" "blobs/${digest/://}" | wc -c ;;
      esac
    done | awk '{ s += $1 } END { print s + 0 }'
}

declare -A archive size image_id
# Whether an image changed: only then can earlier layers be left to remove.
changed=0
# The build stage gets a name of its own, so that removing unnamed images below keeps it.
run_logged build-stage build_target build
for target in io360 io360-operator; do
  run_logged "build-$target" build_target "$target"
  run_logged "label-$target" label_target "$target"
  archive[$target]="$out/$target.oci.tar"
  image_id[$target]=$(bah inspect --type image --format '{{.FromImageID}}' "localhost/$target:$version")
  # The archive is written again only when the image changed: the stamp holds its id and size.
  stamp="$out/.$target.stamp"
  if [ -s "${archive[$target]}" ] && [ -s "$stamp" ] && read -r stamped_id stamped_size <"$stamp" &&
    [ "$stamped_id" = "${image_id[$target]}" ] && [ -n "$stamped_size" ]; then
    size[$target]=$stamped_size
    continue
  fi
  changed=1
  rm -f "${archive[$target]}" "$stamp"
  run_logged "push-$target" bah push --quiet "localhost/$target:$version" \
    "oci-archive:${archive[$target]}:$target:$version"
  size[$target]=$(uncompressed_size "${archive[$target]}")
  [ "${size[$target]}" -gt 0 ] || die "cannot read the layers of ${archive[$target]}"
  echo "${image_id[$target]} ${size[$target]}" >"$stamp"
done

cat >"$out/images.env.tmp" <<EOF
VERSION=$version
REVISION=$revision
IO360_ARCHIVE=${archive[io360]}
OPERATOR_ARCHIVE=${archive[io360-operator]}
IO360_SIZE=${size[io360]}
OPERATOR_SIZE=${size[io360-operator]}
EOF
mv "$out/images.env.tmp" "$out/images.env"

# What earlier builds left: working containers of builds that were stopped, the unnamed layers of
# images since rebuilt, and bases made from other inputs that no image uses any more (another
# checkout sharing this cache may still use one). Every image in use is named, so its layers
# stay. The storage is this script's own, and locked. A failure here fails no build.
prune() {
  local name
  bah rm --all
  bah rmi --prune
  bah images --format '{{.Name}}:{{.Tag}}' | while read -r name; do
    case "$name" in
      "$runtime_image" | "$builder_image") ;;
      localhost/io360-runtime-base:* | localhost/io360-builder-base:*)
        bah rmi "$name" || echo "kept $name: an image still uses it" ;;
    esac
  done
  bah rmi --prune
}
if [ "$changed" = 1 ] && ! prune >"$logs/prune.log" 2>&1; then
  echo "build.sh: warning: could not remove old images (see $logs/prune.log)" >&2
fi

took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
for target in io360 io360-operator; do
  awk -v n="$target:$version" -v s="${size[$target]}" -v r="$revision" \
    'BEGIN { printf "image %-22s %6.1f MiB  revision %s\n", n, s / 1048576, r }'
done
echo "images built in ${took}s (storage: $driver; archives and images.env in $out)"

if [ "$check" = 1 ]; then
  exec 9>&-
  exec "$repo/tests/images/check.sh"
fi
