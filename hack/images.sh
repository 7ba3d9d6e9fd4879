#!/usr/bin/env bash
# Sidelane's container images, built without Docker (internal/ociimage via hack/mkimage):
# one layer of static binaries on an empty base, written as OCI archives into bin/images/.
#
#   hack/images.sh build             bin/images/{agent,injector,proxy,demo-app,pause}.tar (needs make build)
#   hack/images.sh pause OUT.tar     only the pause (sandbox) image, for the local cluster
#   hack/images.sh push REGISTRY     push every archive to REGISTRY/<name>:$TAG (e.g. registry.example/sidelane)
#   hack/images.sh list              the image names
#
# Images are named sidelane/<name>:$TAG (TAG defaults to dev), with no registry host: the local
# cluster imports them with `ctr -n k8s.io images import` under the name the kubelet looks up.
# Each image also has a Dockerfile, deploy/images/<name>.Dockerfile, for people who build with Docker.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TAG=${TAG:-dev}
OUT=${IMAGES_DIR:-$ROOT/bin/images}
MKIMAGE=$ROOT/bin/.tools/mkimage
export CGO_ENABLED=0

log() { printf '%s images: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

tools() {
  mkdir -p "$(dirname "$MKIMAGE")" "$ROOT/bin"
  go build -trimpath -o "$MKIMAGE" ./hack/mkimage
  go build -trimpath -ldflags '-s -w' -o "$ROOT/bin/demo-app" ./demo-app
}

need() { [ -x "$ROOT/bin/$1" ] || die "bin/$1 is missing: run make build first"; }

# image NAME USER ENTRYPOINT ARG... -- FILE=SRC...
image() {
  local name=$1 user=$2 entry=$3; shift 3
  local args=() files=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=(-arg "$1"); shift; done
  shift
  for f in "$@"; do files+=(-file "$f"); done
  "$MKIMAGE" build -ref "sidelane/$name:$TAG" -out "$OUT/$name.tar" -user "$user" -entrypoint "$entry" \
    "${args[@]}" "${files[@]}" >/dev/null
  log "$OUT/$name.tar  sidelane/$name:$TAG"
}

pause_image() {
  local out=$1
  tools
  "$MKIMAGE" build -ref "sidelane/pause:$TAG" -out "$out" -user 65535:65535 \
    -entrypoint /usr/local/bin/demo-app -arg pause -file /usr/local/bin/demo-app="$ROOT/bin/demo-app"
}

build() {
  for b in sidelane-agent sidelane-cni sidelane-injector sidelane-proxy; do need $b; done
  tools
  mkdir -p "$OUT"
  # The agent image carries the plugin binary that the agent installs on the node.
  image agent 0:0 /usr/local/bin/sidelane-agent run -- \
    /usr/local/bin/sidelane-agent="$ROOT/bin/sidelane-agent" /usr/local/bin/sidelane-cni="$ROOT/bin/sidelane-cni"
  image injector 65532:65532 /usr/local/bin/sidelane-injector -- /usr/local/bin/sidelane-injector="$ROOT/bin/sidelane-injector"
  image proxy 1337:1337 /usr/local/bin/sidelane-proxy -- /usr/local/bin/sidelane-proxy="$ROOT/bin/sidelane-proxy"
  image demo-app 65532:65532 /usr/local/bin/demo-app serve -- /usr/local/bin/demo-app="$ROOT/bin/demo-app"
  image pause 65535:65535 /usr/local/bin/demo-app pause -- /usr/local/bin/demo-app="$ROOT/bin/demo-app"
}

push() {
  local registry=${1:-}
  [ -n "$registry" ] || die "usage: make push REGISTRY=registry.example/sidelane"
  [ -x "$MKIMAGE" ] || tools
  local n
  for n in agent injector proxy demo-app; do
    [ -f "$OUT/$n.tar" ] || die "$OUT/$n.tar is missing: run make images"
    "$MKIMAGE" push -archive "$OUT/$n.tar" -dst "${registry%/}/$n:$TAG"
  done
}

case "${1:-}" in
build) build ;;
pause) pause_image "${2:?usage: $0 pause OUT.tar}" ;;
push) push "${2:-}" ;;
list) for n in agent injector proxy demo-app pause; do echo "sidelane/$n:$TAG"; done ;;
*) echo "usage: $0 build|pause OUT.tar|push REGISTRY|list" >&2; exit 2 ;;
esac
