#!/usr/bin/env bash
# The helm CLI at the version pinned in hack/chart/go.mod (helm.sh/helm/v4), built from the Go
# module proxy into bin/.tools/helm on first use and when hack/chart/go.sum changes.
#
#   hack/helm.sh build        build (or reuse) it and print its path
#   hack/helm.sh ARGS…        run it: hack/helm.sh install sidelane deploy/helm/sidelane …
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELM=$ROOT/bin/.tools/helm
STAMP=$HELM.gosum

build() {
  if [ -x "$HELM" ] && [ -f "$STAMP" ] && cmp -s "$STAMP" "$ROOT/hack/chart/go.sum"; then return; fi
  mkdir -p "$(dirname "$HELM")"
  printf '%s helm: go build helm.sh/helm/v4/cmd/helm (version from hack/chart/go.mod)\n' "$(date +%H:%M:%S)" >&2
  (cd "$ROOT/hack/chart" && CGO_ENABLED=0 go build -o "$HELM.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$HELM.tmp" "$HELM"
  cp "$ROOT/hack/chart/go.sum" "$STAMP"
}

build
if [ "${1:-}" = build ]; then echo "$HELM"; exit 0; fi
exec "$HELM" "$@"
