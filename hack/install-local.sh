#!/usr/bin/env bash
# Installs (or refreshes) Sidelane on the local cluster of hack/cluster.sh from
# deploy/overlays/local with freshly built images, and waits until it is ready.
# Used by hack/e2e.sh and hack/demo.sh; expects bin/ to hold the binaries (make build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
eval "$(hack/cluster.sh env)"
log() { printf '%s install: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

hack/images.sh build
hack/cluster.sh import bin/images/agent.tar bin/images/injector.tar bin/images/proxy.tar bin/images/demo-app.tar

existed=false
kubectl get ns sidelane-system >/dev/null 2>&1 && existed=true
log "kubectl apply -k deploy/overlays/local"
kubectl apply -k deploy/overlays/local >/dev/null
if $existed; then
  # Same tags (:dev), new image content: restart so that the new images run.
  kubectl -n sidelane-system rollout restart ds/sidelane-agent deploy/sidelane-injector >/dev/null
fi
kubectl -n sidelane-system rollout status ds/sidelane-agent --timeout=180s ||
  { kubectl -n sidelane-system describe pods -l app.kubernetes.io/name=sidelane-agent | tail -40; die "the agent did not become ready"; }
kubectl -n sidelane-system rollout status deploy/sidelane-injector --timeout=180s ||
  { kubectl -n sidelane-system describe pods -l app.kubernetes.io/name=sidelane-injector | tail -40; die "the injector did not become ready"; }
# The injector fills in the caBundle of its webhook configuration (--self-signed).
deadline=$((SECONDS + 120))
until [ -n "$(kubectl get mutatingwebhookconfiguration sidelane-injector -o jsonpath='{.webhooks[*].clientConfig.caBundle}')" ]; do
  [ $SECONDS -lt $deadline ] || die "the injector did not set the caBundle of MutatingWebhookConfiguration sidelane-injector"
  sleep 1
done
log "Sidelane is installed and ready"
