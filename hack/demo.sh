#!/usr/bin/env bash
# make demo / make demo-down: a local single-node cluster with Sidelane and a captured workload.
#
#   hack/demo.sh up     cluster up (hack/cluster.sh), Sidelane installed from deploy/overlays/local,
#                       the demo workload (deploy/demo) deployed, one request shown going through
#                       both proxies (access logs and metric deltas), the server pod's rules printed
#   hack/demo.sh down   tear the cluster down and leave the host clean
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NS=sidelane-demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }

# metric POD DIRECTION NAME: the sum of a proxy counter for one direction, read from the pod's
# Prometheus port (the host reaches pod IPs over the cluster bridge).
metric() {
  local ip
  ip=$(kubectl -n $NS get pod "$1" -o jsonpath='{.status.podIP}')
  curl -sf --max-time 5 "http://$ip:15090/stats/prometheus" |
    awk -v n="$3" -v d="direction=\"$2\"" '{split($1, a, "{")} a[1] == n && index($1, d) {s += $2} END {printf "%d\n", s}'
}

up() {
  [ "$(id -u)" = 0 ] || die "the demo runs a real kubelet and containerd: run it as root"
  hack/cluster.sh up
  for b in sidelane-agent sidelane-cni sidelane-injector sidelane-proxy kubectl-sidelane; do
    [ -x bin/$b ] || die "bin/$b is missing: run make build (make demo does)"
  done
  hack/install-local.sh
  eval "$(hack/cluster.sh env)"

  say "Deploying the demo workload (namespace $NS: sidelane.io/inject=enabled, Pod Security 'restricted')"
  kubectl apply -k deploy/demo
  kubectl -n $NS rollout status deploy/server --timeout=180s
  kubectl -n $NS rollout status deploy/client --timeout=180s
  local server client
  server=$(kubectl -n $NS get pod -l app=server -o jsonpath='{.items[0].metadata.name}')
  client=$(kubectl -n $NS get pod -l app=client -o jsonpath='{.items[0].metadata.name}')
  kubectl -n $NS get pods -o wide

  say "The pods carry the injected proxy and ask for no capability"
  kubectl -n $NS get pod "$server" "$client" \
    -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name,INIT:.spec.initContainers[*].name,CAPS_ADDED:.spec.containers[*].securityContext.capabilities.add'

  say "One request from the client to the server, through both proxies"
  local cout sin
  cout=$(metric "$client" outbound sidelane_proxy_requests_total)
  sin=$(metric "$server" inbound sidelane_proxy_requests_total)
  
  local svc
  svc=$(kubectl -n $NS get svc server -o jsonpath='{.spec.clusterIP}')
  echo "+ kubectl -n $NS exec $client -c app -- demo-app get http://$svc:8080/demo"
  kubectl -n $NS exec "$client" -c app -- demo-app get "http://$svc:8080/demo"
  echo
  echo "(the server saw the request coming from 127.0.0.6: its own proxy forwarded it)"
  sleep 1
  echo "(the counters also include the calls the client makes every 5 s on its own)"
  echo "client proxy: sidelane_proxy_requests_total{direction=outbound} $cout -> $(metric "$client" outbound sidelane_proxy_requests_total)"
  echo "server proxy: sidelane_proxy_requests_total{direction=inbound}  $sin -> $(metric "$server" inbound sidelane_proxy_requests_total)"

  say "Access log lines (client proxy, outbound; server proxy, inbound)"
  kubectl -n $NS logs "$client" -c sidelane-proxy --tail=200 | grep '/demo' | tail -n 1
  kubectl -n $NS logs "$server" -c sidelane-proxy --tail=200 | grep '/demo' | tail -n 1

  say "kubectl sidelane rules $server -n $NS"
  kubectl-sidelane rules "$server" -n $NS

  say "Look around"
  echo "  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):$ROOT/bin:\$PATH"
  local line
  for line in \
    "kubectl -n $NS get pods|the demo workload" \
    "kubectl -n $NS logs deploy/client -c app -f|the client's calls (every 5 s)" \
    "kubectl -n $NS logs deploy/server -c sidelane-proxy|the server proxy's access log" \
    "kubectl sidelane pods|every pod the node agent has seen" \
    "kubectl sidelane rules $server -n $NS|expected vs live rules of a pod" \
    "kubectl sidelane check|verify every captured pod" \
    "kubectl -n sidelane-system get all|Sidelane itself" \
    "tail -f $SIDELANE_CLUSTER_DIR/logs/kubelet.log|the node" \
    "make demo-down|tear it all down, host left clean"; do
    printf '  %-62s # %s\n' "${line%%|*}" "${line#*|}"
  done
}

case "${1:-up}" in
up) up ;;
down) hack/cluster.sh down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
