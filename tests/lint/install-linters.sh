#!/usr/bin/env bash
# Builds the manifest linters the lint test (operator/tests/lint.rs, run by tests/lint/run.sh)
# uses, from the Go module proxy: kubeconform (schema validation) and kube-score (reliability
# and security checks). Also fetches the Kubernetes module of the release the cluster tests run
# (the pin in tests/cluster/install-tools.sh) for its OpenAPI document, from which the test
# makes kubeconform's schemas offline, and unpacks promtool from Debian's prometheus package.
# Nothing else prebuilt is downloaded and nothing is committed.
#
# Everything lands in ${XDG_CACHE_HOME:-$HOME/.cache}/io360/lint: bin/ and openapi/. Each is
# rebuilt only when it is missing or came from another pin, so a warm run takes a second.
#
# Usage: bash tests/lint/install-linters.sh
set -euo pipefail

# Pins (the proxy's @latest answers 404 here; see https://proxy.golang.org/<module>/@v/list).
KUBECONFORM_VERSION=v0.8.0
KUBE_SCORE_VERSION=v1.20.0

root="${XDG_CACHE_HOME:-$HOME/.cache}/io360/lint"
bin="$root/bin"
mkdir -p "$bin" "$root/logs"

if ! command -v go >/dev/null 2>&1; then
    echo "install-linters: go is not on PATH; Go >= 1.24 is needed to build the linters" >&2
    exit 1
fi
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -trimpath"

build() { # name module@version
    local name=$1 pkg=$2 stamp="$bin/.$1.stamp"
    if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$pkg" ]]; then
        return
    fi
    echo "install-linters: building $pkg"
    if ! GOBIN="$bin" nice go install "$pkg" >"$root/logs/$name.log" 2>&1; then
        echo "install-linters: building $pkg failed; log: $root/logs/$name.log" >&2
        tail -20 "$root/logs/$name.log" >&2
        exit 1
    fi
    echo "$pkg" >"$stamp"
}

build kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}"
build kube-score "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}"

# promtool, to check and unit-test the chart's alert rules: from Debian's prometheus package,
# unpacked (not installed, so no Prometheus service is set up on this machine).
if [[ ! -x "$bin/promtool" || ! -f "$bin/.promtool.stamp" ]]; then
    echo "install-linters: unpacking promtool from Debian's prometheus package"
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download prometheus >"$root/logs/promtool.log" 2>&1); then
        apt-get update >>"$root/logs/promtool.log" 2>&1
        (cd "$tmp" && apt-get download prometheus >>"$root/logs/promtool.log" 2>&1) || {
            echo "install-linters: apt-get download prometheus failed; log: $root/logs/promtool.log" >&2
            exit 1
        }
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    cp "$tmp/x/usr/bin/promtool" "$bin/promtool"
    basename "$tmp"/prometheus_*.deb >"$bin/.promtool.stamp"
    rm -rf "$tmp"
fi

# The API's OpenAPI (v2) document, from the Kubernetes module of the cluster tests' release.
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version=$(sed -n 's/^K8S_VERSION=//p' "$here/../cluster/install-tools.sh")
openapi="$root/openapi/swagger-${k8s_version}.json"
if [[ ! -s "$openapi" ]]; then
    mkdir -p "$root/openapi"
    echo "install-linters: fetching k8s.io/kubernetes@${k8s_version} for its OpenAPI document"
    dir=$(cd "$root" && go mod download -json "k8s.io/kubernetes@${k8s_version}" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    cp "$dir/api/openapi-spec/swagger.json" "$openapi.tmp"
    mv "$openapi.tmp" "$openapi"
fi
echo "install-linters: kubeconform ${KUBECONFORM_VERSION}, kube-score ${KUBE_SCORE_VERSION}, promtool ($(cat "$bin/.promtool.stamp")) and the Kubernetes ${k8s_version} OpenAPI in $root"
