#!/usr/bin/env bash
# Runs Sidelane's tests. `hack/test.sh unit` checks gofmt and go vet, runs unit and privileged tests (root needed for the
# latter; under CI=true a privileged test that would skip fails instead) and the Helm chart's
# tests (its own module, hack/chart), `e2e` runs the
# end-to-end tests on a local single-node cluster, `all` runs both.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
export GOFLAGS=${GOFLAGS:-}

unit() {
  local pkgs
  pkgs=$(go list ./... | grep -v /test/e2e)
  echo "== gofmt and go vet"
  local unformatted
  unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
  if [ -n "$unformatted" ]; then
    echo "gofmt would change:" >&2
    echo "$unformatted" >&2
    return 1
  fi
  go vet ./...
  echo "== compiling the tests (all cores)"
  local tmp
  tmp=$(mktemp -d)
  go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' $pkgs |
    xargs -P "$(nproc)" -I{} sh -c 'go test -c -o "$1/$(echo "$2" | tr / _).test" "$2"' _ "$tmp" {}
  rm -rf "$tmp"
  echo "== unit and privileged tests"
  # -p 1 between packages: privileged tests create many network namespaces and processes and the
  # machines are small; inside a package tests still run in parallel where they say so. The
  # compile above filled the build cache, so -p 1 only serialises the runs.
  go test -count=1 -p 1 -timeout 20m $pkgs
  echo "== the Helm chart: deploy/base is its rendering, helm lint, values and schema (hack/chart)"
  (cd hack/chart && go vet ./... && go test -count=1 ./...)
}

e2e() {
  echo "== end-to-end tests on a local cluster"
  hack/e2e.sh
}

case "$what" in
  unit) unit ;;
  e2e) e2e ;;
  all) unit; e2e ;;
  *) echo "usage: $0 unit|e2e|all" >&2; exit 2 ;;
esac
