#!/usr/bin/env bash
# End-to-end tests on a real single-node cluster (hack/cluster.sh): builds or reuses the cached
# Kubernetes binaries, brings the cluster up (or reuses a running one), installs Sidelane from
# deploy/overlays/local with freshly built images, then runs `go test -tags e2e ./test/e2e/...`.
#
# A cluster that this script started is torn down at the end (host left clean) unless
# SIDELANE_E2E_KEEP=1; a cluster that was already running is left running.
# Extra `go test` flags: E2E_FLAGS (e.g. E2E_FLAGS='-run Repair').
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '%s e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "the end-to-end tests need root (a real kubelet, containerd, network namespaces)"; [ "${CI:-}" != true ] || exit 1; exit 0; }

t0=$SECONDS
started=false
hack/cluster.sh status >/dev/null 2>&1 || started=true
teardown() {
  rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED: component logs follow"
    hack/cluster.sh logs || true
  fi
  if $started && [ "${SIDELANE_E2E_KEEP:-0}" != 1 ]; then hack/cluster.sh down || true; fi
  log "total $((SECONDS - t0)) s"
  exit $rc
}
trap teardown EXIT

hack/cluster.sh up
log "cluster ready after $((SECONDS - t0)) s"
for b in sidelane-agent sidelane-cni sidelane-injector sidelane-proxy kubectl-sidelane; do
  [ -x bin/$b ] || { log "bin/$b missing: building"; make build >/dev/null; break; }
done
hack/install-local.sh
# The helm CLI of the Helm test (the version pinned in hack/chart/go.mod).
SIDELANE_HELM=$(hack/helm.sh build)
export SIDELANE_HELM
log "Sidelane installed after $((SECONDS - t0)) s; running the tests"
eval "$(hack/cluster.sh env)"
export SIDELANE_ROOT=$ROOT SIDELANE_KUBECTL=$(command -v kubectl)
t1=$SECONDS
mkdir -p bin
set +e
go test -tags e2e -count=1 -p 1 -timeout 20m -v ${E2E_FLAGS:-} ./test/e2e/... 2>&1 | tee bin/e2e.log
rc=${PIPESTATUS[0]}
set -e
log "go test took $((SECONDS - t1)) s (output also in bin/e2e.log)"
exit $rc
