#!/usr/bin/env bash
# Builds the Kubernetes control plane the cluster tests run on, from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd, kwok and helm. Nothing prebuilt is downloaded and nothing is committed.
#
# Binaries land in ${XDG_CACHE_HOME:-$HOME/.cache}/io360/k8s/<k8s version>/bin, the path the
# test harness (tests/cluster/src/tools.rs) looks in. Each binary is rebuilt only when it is
# missing or was built from other pins, so a warm run takes a second and prints one line.
#
# Usage: bash tests/cluster/install-tools.sh        (IO360_TOOLS_VERBOSE=1 for build logs)
set -euo pipefail

# The real node next to the fake ones also needs kubelet and kube-proxy (same module and
# release), CoreDNS, an OCI registry (CNCF distribution) and the pause binary (from the
# Kubernetes module's source); containerd, runc and the CNI plugins come from Debian.
# NetworkPolicies on the real node are enforced by kube-router's firewall alone (iptables and
# ipset, both from Debian). kube-network-policies would need nftables' `queue` expression,
# which kernels built without CONFIG_NFT_QUEUE (this machine's among them) refuse.
#
# Pins. The harness reads K8S_VERSION from this line; keep the format `K8S_VERSION=vX.Y.Z`.
K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
COREDNS_VERSION=v1.14.7
REGISTRY_VERSION=v3.1.2
KUBE_ROUTER_VERSION=v2.1.0
METRICS_SERVER_VERSION=v0.8.0

k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_patch=${K8S_VERSION##*.}
STAGING_VERSION="v0.${k8s_minor}.${k8s_patch}"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/io360/k8s/${K8S_VERSION}"
bin="${cache_root}/bin"
work="${cache_root}/build"
logs="${cache_root}/logs"
mkdir -p "$bin" "$work" "$logs"

if ! command -v go >/dev/null 2>&1; then
    echo "install-tools: go is not on PATH; Go >= 1.25 is needed to build the cluster tools" >&2
    exit 1
fi

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -trimpath"
verbose=${IO360_TOOLS_VERBOSE:-0}

# A stamp next to each binary records the pins it was built from.
stamp_ok() { [[ -x "$bin/$1" && -f "$bin/.$1.stamp" && "$(cat "$bin/.$1.stamp")" == "$2" ]]; }
stamp_write() { printf '%s' "$2" >"$bin/.$1.stamp"; }

# Runs a build step, its output to a log file (and the terminal when verbose); on failure the
# log's tail is shown so a broken build explains itself.
run_logged() {
    local name=$1
    shift
    local log="$logs/$name.log"
    local start=$SECONDS
    echo "install-tools: building $name (log: $log)" >&2
    if [[ "$verbose" == 1 ]]; then
        "$@" 2>&1 | tee "$log"
        local rc=${PIPESTATUS[0]}
    else
        local rc=0
        "$@" >"$log" 2>&1 || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        echo "install-tools: building $name failed (exit $rc); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    echo "install-tools: built $name in $((SECONDS - start)) s" >&2
}

# --- Kubernetes: a throwaway module that requires k8s.io/kubernetes and points every staging
# module at its published version, since k8s.io/kubernetes replaces them with local paths.
build_kubernetes() {
    local dir="$work/kubernetes"
    mkdir -p "$dir"
    local mod
    mod=$(curl -fsSL "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/${K8S_VERSION}.mod" 2>/dev/null) ||
        mod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" >/dev/null && cat "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${K8S_VERSION}.mod")
    local staging
    staging=$(printf '%s\n' "$mod" | sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p')
    if [[ -z "$staging" ]]; then
        echo "install-tools: found no staging replacements in k8s.io/kubernetes@${K8S_VERSION}'s go.mod" >&2
        exit 1
    fi
    {
        echo "module io360.dev/k8s-tools"
        echo
        echo "go 1.25.0"
        echo
        echo "require k8s.io/kubernetes ${K8S_VERSION}"
        echo
        echo "replace ("
        for m in $staging; do echo "	$m => $m ${STAGING_VERSION}"; done
        echo ")"
    } >"$dir/go.mod"
    rm -f "$dir/go.sum"

    local commit=""
    local v=k8s.io/component-base/version
    local cv=k8s.io/client-go/pkg/version
    local date
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local ldflags="-s -w"
    for pkg in $v $cv; do
        ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${k8s_minor}"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date} -X $pkg.gitCommit=${commit}"
    done
    (
        cd "$dir"
        go mod download k8s.io/kubernetes
        go build -ldflags "$ldflags" -o "$bin/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler \
            k8s.io/kubernetes/cmd/kubectl \
            k8s.io/kubernetes/cmd/kubelet \
            k8s.io/kubernetes/cmd/kube-proxy
    )
}

# --- etcd: its server module also replaces siblings with local paths, so it gets the same
# treatment, with a three-line main that calls etcdmain like etcd's own.
build_etcd() {
    local dir="$work/etcd"
    mkdir -p "$dir"
    cat >"$dir/go.mod" <<EOF
module io360.dev/etcd-tool

go 1.25.0

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 ${ETCD_VERSION}
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 ${ETCD_VERSION}
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 ${ETCD_VERSION}
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 ${ETCD_VERSION}
)
EOF
    cat >"$dir/main.go" <<'EOF'
// Command etcd starts etcd exactly as etcd's own binary does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    rm -f "$dir/go.sum"
    (cd "$dir" && go mod tidy && go build -ldflags "-s -w" -o "$bin/etcd" .)
}

# --- kwok, plus its own "fast" stages (nodes turn Ready and keep their lease; pods turn Running
# and Ready, complete, and go away when deleted) as the config file the harness hands it.
build_kwok() {
    GOBIN="$bin" go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
        "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
    local src
    src=$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    local stages="$src/kustomize/stage"
    local out="$cache_root/kwok-stages.yaml"
    : >"$out.tmp"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        { echo "---"; cat "$stages/$f"; } >>"$out.tmp"
    done
    mv "$out.tmp" "$out"
}

build_helm() {
    GOBIN="$bin" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
        "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
}

# --- CoreDNS with only the plugins the test cluster's Corefile uses, through a wrapper main, as
# CoreDNS documents for custom builds; the full plugin set would add minutes of compiling.
build_coredns() {
    local dir="$work/coredns"
    mkdir -p "$dir"
    cat >"$dir/go.mod" <<EOF
module io360.dev/coredns-tool

go 1.25.0

require github.com/coredns/coredns ${COREDNS_VERSION}
EOF
    cat >"$dir/main.go" <<'EOF'
// Command coredns is CoreDNS with the plugins a test cluster needs: cluster names from the
// API server, health and readiness, errors, a cache.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
EOF
    rm -f "$dir/go.sum"
    (cd "$dir" && go mod tidy && go build -ldflags "-s -w" -o "$bin/coredns" .)
}

build_registry() {
    GOBIN="$bin" go install -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=${REGISTRY_VERSION}" \
        "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}"
}

# --- kube-router, for its NetworkPolicy firewall only (the node runs it with routing, service
# proxying and CNI turned off).
build_kube_router() {
    GOBIN="$bin" go install -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=${KUBE_ROUTER_VERSION}" \
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@${KUBE_ROUTER_VERSION}"
}

# --- metrics-server: the resource metrics API (`metrics.k8s.io`) that autoscalers and
# `kubectl top` read, scraping the real node's kubelet.
build_metrics_server() {
    GOBIN="$bin" go install -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=${METRICS_SERVER_VERSION}" \
        "sigs.k8s.io/metrics-server/cmd/metrics-server@${METRICS_SERVER_VERSION}"
}

# --- Prometheus, for the per-tier metrics custom autoscalers read: from Debian's package,
# unpacked, not installed (no service is set up on this machine). Debian builds it without
# Kubernetes service discovery, so the harness hands it the node's pods as a file.
build_prometheus() {
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download prometheus) || {
        apt-get update
        (cd "$tmp" && apt-get download prometheus)
    }
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    cp "$tmp/x/usr/bin/prometheus" "$bin/prometheus"
    rm -rf "$tmp"
}

# --- the custom metrics adapter (tests/cluster/metrics-adapter): serves
# custom.metrics.k8s.io from that Prometheus, as prometheus-adapter would in a cluster.
adapter_src="$(cd "$(dirname "$0")" && pwd)/metrics-adapter"
build_metrics_adapter() {
    (cd "$adapter_src" && go build -ldflags "-s -w" -o "$bin/io360-metrics-adapter" .)
}

# --- pause: the sandbox process of every pod, from the Kubernetes module's own source,
# linked statically so it runs in an image with nothing else in it.
build_pause() {
    local src
    src=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    cc -Os -Wall -Werror -static -DVERSION="${K8S_VERSION}-io360" -o "$bin/pause" "$src/build/pause/linux/pause.c"
    strip "$bin/pause"
}

total_start=$SECONDS
built=0
k8s_pin="kubernetes ${K8S_VERSION} staging ${STAGING_VERSION}"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    if ! stamp_ok "$b" "$k8s_pin"; then
        run_logged kubernetes build_kubernetes
        for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do stamp_write "$c" "$k8s_pin"; done
        built=1
        break
    fi
done
if ! stamp_ok etcd "etcd ${ETCD_VERSION}"; then
    run_logged etcd build_etcd
    stamp_write etcd "etcd ${ETCD_VERSION}"
    built=1
fi
if ! stamp_ok kwok "kwok ${KWOK_VERSION}" || [[ ! -s "$cache_root/kwok-stages.yaml" ]]; then
    run_logged kwok build_kwok
    stamp_write kwok "kwok ${KWOK_VERSION}"
    built=1
fi
if ! stamp_ok coredns "coredns ${COREDNS_VERSION}"; then
    run_logged coredns build_coredns
    stamp_write coredns "coredns ${COREDNS_VERSION}"
    built=1
fi
if ! stamp_ok registry "registry ${REGISTRY_VERSION}"; then
    run_logged registry build_registry
    stamp_write registry "registry ${REGISTRY_VERSION}"
    built=1
fi
if ! stamp_ok pause "pause ${K8S_VERSION}"; then
    run_logged pause build_pause
    stamp_write pause "pause ${K8S_VERSION}"
    built=1
fi
if ! stamp_ok kube-router "kube-router ${KUBE_ROUTER_VERSION}"; then
    run_logged kube-router build_kube_router
    stamp_write kube-router "kube-router ${KUBE_ROUTER_VERSION}"
    built=1
fi
if ! stamp_ok metrics-server "metrics-server ${METRICS_SERVER_VERSION}"; then
    run_logged metrics-server build_metrics_server
    stamp_write metrics-server "metrics-server ${METRICS_SERVER_VERSION}"
    built=1
fi
if ! stamp_ok prometheus "prometheus debian"; then
    run_logged prometheus build_prometheus
    stamp_write prometheus "prometheus debian"
    built=1
fi
adapter_pin="metrics-adapter $(cat "$adapter_src/go.mod" "$adapter_src/go.sum" "$adapter_src/main.go" | sha256sum | cut -c1-16)"
if ! stamp_ok io360-metrics-adapter "$adapter_pin"; then
    run_logged metrics-adapter build_metrics_adapter
    stamp_write io360-metrics-adapter "$adapter_pin"
    built=1
fi
if ! stamp_ok helm "helm ${HELM_VERSION}"; then
    run_logged helm build_helm
    stamp_write helm "helm ${HELM_VERSION}"
    built=1
fi

# Prove each binary runs before declaring success.
for check in "kube-apiserver --version" "kube-controller-manager --version" "kube-scheduler --version" \
    "kubectl version --client" "kubelet --version" "kube-proxy --version" "etcd --version" \
    "coredns -version" "registry --version" "pause -v" "kube-router --version" "metrics-server --version" \
    "prometheus --version" "io360-metrics-adapter --help" \
    "kwok --version" "helm version --short"; do
    read -r b args <<<"$check"
    # shellcheck disable=SC2086 # args is a word list on purpose
    if ! "$bin/$b" $args >/dev/null 2>&1; then
        echo "install-tools: $bin/$b does not run ($check failed)" >&2
        exit 1
    fi
done
got=$("$bin/kube-apiserver" --version)
if [[ "$got" != "Kubernetes ${K8S_VERSION}" ]]; then
    echo "install-tools: kube-apiserver reports '$got', expected 'Kubernetes ${K8S_VERSION}'" >&2
    exit 1
fi

if [[ $built == 1 ]]; then
    echo "install-tools: done in $((SECONDS - total_start)) s" >&2
fi
echo "$bin"
