#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, as root, without Docker: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd (+runc), kubelet, a bridge
# CNI network and kube-proxy. Used by `make demo` and the end-to-end tests.
#
#   hack/cluster.sh build    build (or reuse) the Kubernetes and CNI binaries in the cache
#   hack/cluster.sh up       build, then bring the node up (idempotent: a running cluster is reused)
#   hack/cluster.sh down     tear everything down and leave the host as it was
#   hack/cluster.sh status   say whether the cluster runs; print the KUBECONFIG path
#   hack/cluster.sh env      print shell exports (KUBECONFIG, PATH with kubectl, CTR)
#   hack/cluster.sh import TAR...   import OCI image tarballs into the cluster's containerd
#   hack/cluster.sh logs     tail the component logs (kubelet, containerd, apiserver)
#
# Kubernetes is compiled from source through the Go module proxy (no other download is needed):
# a wrapper module requires k8s.io/kubernetes and replaces its ./staging modules with their
# published versions. Binaries are cached outside the repository, keyed by version:
#   ${SIDELANE_CACHE:-/var/cache/sidelane}/k8s-$K8S_VERSION/bin
#   ${SIDELANE_CACHE:-/var/cache/sidelane}/cni-plugins-$CNI_VERSION/bin
# A cold build takes 12+ minutes on 2 cores; progress is printed as packages compile.
# Cluster state (certificates, etcd data, containerd root, logs) lives in $SIDELANE_CLUSTER_DIR
# (default /var/tmp/sidelane-cluster) and is removed by `down`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=${K8S_VERSION:-v1.33.13}
# The CNI reference plugins come from the containernetworking/plugins version in go.mod.
CNI_VERSION=${CNI_VERSION:-$(awk '$1=="github.com/containernetworking/plugins"{print $2}' "$ROOT/go.mod")}
CACHE_BASE=${SIDELANE_CACHE:-/var/cache/sidelane}
K8S_CACHE=$CACHE_BASE/k8s-$K8S_VERSION
CNI_CACHE=$CACHE_BASE/cni-plugins-$CNI_VERSION
W=${SIDELANE_CLUSTER_DIR:-/var/tmp/sidelane-cluster}
# Addresses and names of the node.
HOSTIP=${HOSTIP:-$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="src") print $(i+1)}')}
NODE=${NODE:-$(hostname | tr 'A-Z' 'a-z')}
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
# The pause (sandbox) image: the demo app's "pause" mode, built by hack/images.sh.
PAUSE_IMAGE=${PAUSE_IMAGE:-sidelane/pause:dev}
COMPONENTS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)
KUBECTL=$K8S_CACHE/bin/kubectl
CTR="ctr --address $W/containerd/containerd.sock -n k8s.io"

log() { printf '%s cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# waitfor CMD SECONDS WHAT: poll CMD until it succeeds or the deadline passes.
waitfor() {
  local deadline=$(($(date +%s) + $2))
  until eval "$1" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after $2 s waiting for $3"; return 1; }
    sleep 0.3
  done
}

# go_build_progress LOG TOTAL ARGS...: go build -v, printing how many of TOTAL packages compiled.
go_build_progress() {
  local logf=$1 total=$2; shift 2
  : >"$logf"
  go build -v "$@" >>"$logf" 2>&1 &
  local pid=$! last=-1 n
  while kill -0 $pid 2>/dev/null; do
    n=$(grep -vc '^#' "$logf" || true)
    if [ "$n" != "$last" ]; then log "  compiled $n/$total packages ($(date +%H:%M:%S))"; last=$n; fi
    sleep 20
  done
  wait $pid || { tail -n 40 "$logf" >&2; return 1; }
}

build_k8s() {
  if [ -f "$K8S_CACHE/.complete" ]; then
    log "reusing Kubernetes $K8S_VERSION binaries from $K8S_CACHE/bin"
    return
  fi
  log "building Kubernetes $K8S_VERSION into $K8S_CACHE (cold build: 12+ minutes on 2 cores)"
  local src=$K8S_CACHE/src sv=v0.${K8S_VERSION#v1.}
  mkdir -p "$src" && cd "$src"
  local kmod
  kmod=$(GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -n "$kmod" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no go.mod"
  cp "$kmod" kubernetes.mod
  {
    echo "module local/k8sbuild"; echo
    echo "go $(awk '/^go /{print $2}' kubernetes.mod)"; echo
    echo "require k8s.io/kubernetes $K8S_VERSION"; echo
    echo "replace ("
    awk -v sv="$sv" '$2=="=>" && $3 ~ /^\.\/staging/ {print "\t"$1" => "$1" "sv}' kubernetes.mod
    echo ")"
  } >go.mod
  rm -f go.sum
  local minor ldf pk=()
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldf="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ldf="$ldf -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for c in "${COMPONENTS[@]}"; do pk+=("k8s.io/kubernetes/cmd/$c"); done
  export GOFLAGS="-buildvcs=false -mod=mod"
  log "  downloading modules"
  local total
  total=$(go list -deps "${pk[@]}" | wc -l) || die "go list of the Kubernetes commands failed"
  log "  compiling ${#pk[@]} commands ($total packages, one go build for shared work)"
  rm -rf "$K8S_CACHE/bin.tmp" && mkdir -p "$K8S_CACHE/bin.tmp"
  CGO_ENABLED=0 go_build_progress "$K8S_CACHE/build.log" "$total" -ldflags="$ldf" -o "$K8S_CACHE/bin.tmp/" "${pk[@]}"
  rm -rf "$K8S_CACHE/bin" && mv "$K8S_CACHE/bin.tmp" "$K8S_CACHE/bin"
  echo "$K8S_VERSION" >"$K8S_CACHE/.complete"
  log "Kubernetes $K8S_VERSION built: $(ls "$K8S_CACHE/bin" | tr '\n' ' ')"
}

build_cni() {
  if [ -f "$CNI_CACHE/.complete" ]; then
    log "reusing CNI plugins $CNI_VERSION from $CNI_CACHE/bin"
    return
  fi
  log "building CNI plugins $CNI_VERSION (bridge, host-local, loopback, portmap)"
  mkdir -p "$CNI_CACHE/src" && cd "$CNI_CACHE/src"
  printf 'module local/cnibuild\n\ngo 1.24.0\n\nrequire github.com/containernetworking/plugins %s\n' "$CNI_VERSION" >go.mod
  rm -rf "$CNI_CACHE/bin.tmp" && mkdir -p "$CNI_CACHE/bin.tmp"
  local p
  for p in main/bridge main/loopback ipam/host-local meta/portmap; do
    GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 go build -ldflags='-s -w' -o "$CNI_CACHE/bin.tmp/" \
      "github.com/containernetworking/plugins/plugins/$p"
  done
  rm -rf "$CNI_CACHE/bin" && mv "$CNI_CACHE/bin.tmp" "$CNI_CACHE/bin"
  echo "$CNI_VERSION" >"$CNI_CACHE/.complete"
}

build() {
  command -v go >/dev/null || die "go is required"
  for b in etcd containerd runc ctr iptables openssl; do
    command -v $b >/dev/null || die "$b is missing: run hack/install-deps.sh (apt: etcd-server containerd runc iptables openssl)"
  done
  build_cni
  build_k8s
}

case "${1:-}" in
build) build ;;
*)
  echo "usage: $0 build|up|down|status|env|import TAR...|logs" >&2
  exit 2
  ;;
esac
