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
#   hack/cluster.sh restart COMPONENT...   SIGKILL kube-apiserver, containerd and/or kubelet and
#                            start them again with the same flags (the e2e fault tests)
#   hack/cluster.sh reboot   power loss and boot of the node (the e2e fault tests; see reboot_node)
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
  # Scoped to this function: -mod=mod must never reach builds of the project itself.
  local -x GOFLAGS="-buildvcs=false -mod=mod"
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


# ---------------------------------------------------------------------------------------------
# up

certs() {
  local P=$W/pki
  mkdir -p "$P" && cd "$P"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=sidelane-local-ca 2>/dev/null
  sign() { # name subject san extendedKeyUsage
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    { echo "extendedKeyUsage=$4"; [ -z "$3" ] || echo "subjectAltName=$3"; } >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 30 -extfile "$1.ext" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:10.0.0.1,IP:$HOSTIP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
  sign admin "/O=system:masters/CN=admin" "" clientAuth
  sign kubelet "/O=system:nodes/CN=system:node:$NODE" "" clientAuth
  sign kubelet-serving "/CN=$NODE" "IP:127.0.0.1,IP:$HOSTIP,DNS:$NODE" serverAuth
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  local u
  for u in admin kubelet; do
    cat >"$u.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: sidelane-local, cluster: {server: "https://127.0.0.1:6443", certificate-authority: $P/ca.crt}}]
users: [{name: $u, user: {client-certificate: $P/$u.crt, client-key: $P/$u.key}}]
contexts: [{name: sidelane-local, context: {cluster: sidelane-local, user: $u}}]
current-context: sidelane-local
KC
  done
}

# bg NAME CMD...: start a component in the background, logging to $W/logs/NAME.log.
bg() {
  local name=$1; shift
  nohup "$@" >"$W/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$W/run/$name.pid"
}

alive() { [ -f "$W/run/$1.pid" ] && kill -0 "$(cat "$W/run/$1.pid")" 2>/dev/null; }

apiserver_ready() {
  curl -sf --max-time 5 --cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key" \
    https://127.0.0.1:6443/readyz >/dev/null 2>&1
}

running() {
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    alive $c || return 1
  done
  apiserver_ready
}

# Sysctls the kubelet, kube-proxy and the bridge plugin change; saved at up, restored at down.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.conf.all.route_localnet net.ipv4.ip_forward net.ipv6.conf.all.forwarding
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

save_host_state() {
  local k
  : >"$W/run/sysctls"
  for k in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) && echo "$k=$v" >>"$W/run/sysctls"
  done
  { [ -r /proc/modules ] && awk '{print $1}' /proc/modules; } | sort >"$W/run/modules" || true
  ls /run/netns 2>/dev/null | sort >"$W/run/netns" || true
  { nft list tables 2>/dev/null || true; } >"$W/run/nft-tables"
  local d
  : >"$W/run/created-dirs"
  for d in /var/run/sidelane /var/lib/sidelane /var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers /run/containerd /run/mount; do
    [ -e "$d" ] || echo "$d" >>"$W/run/created-dirs"
  done
}

# start_component NAME: start one component with its flags (used by up and restart).
start_component() {
  local P=$W/pki
  case $1 in
  kube-apiserver)
    bg kube-apiserver "$K8S_CACHE/bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
      --audit-policy-file="$W/audit-policy.yaml" --audit-log-path="$W/logs/audit.log" --audit-log-maxsize=100 --audit-log-maxbackup=1 \
      --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$HOSTIP" \
      --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
      --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" \
      --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=InternalIP \
      --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range=$SERVICE_CIDR --authorization-mode=Node,RBAC --allow-privileged=true
    ;;
  containerd)
    bg containerd containerd --config "$W/containerd/config.toml"
    ;;
  kubelet)
    bg kubelet "$K8S_CACHE/bin/kubelet" --config="$W/kubelet/config.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
      --root-dir="$W/kubelet/root" --hostname-override="$NODE" --node-ip="$HOSTIP"
    ;;
  *) die "start_component: unknown component $1" ;;
  esac
}

# restart NAME...: stop components with SIGKILL (as a crash or power loss does) and start them
# again with the same flags, waiting until each answers. Containers keep running across a
# containerd restart (their shims outlive it).
restart() {
  running || die "the cluster is not running"
  local c
  for c in "$@"; do
    case $c in kube-apiserver | containerd | kubelet) ;; *) die "restart: $c is not one of kube-apiserver, containerd, kubelet" ;; esac
    local pid
    pid=$(cat "$W/run/$c.pid")
    kill_pidfile "$c"
    waitfor "! kill -0 $pid" 30 "$c (pid $pid) to exit" || die "$c did not exit after SIGKILL"
  done
  for c in "$@"; do
    start_component "$c"
    case $c in
    kube-apiserver) waitfor apiserver_ready 180 "kube-apiserver /readyz" || fail_up kube-apiserver ;;
    containerd) waitfor "$CTR version" 60 "containerd" || fail_up containerd ;;
    esac
    log "restarted $c"
  done
}

# reboot: stop the node the way a power loss does, then boot it again in a real order. Stop:
# SIGKILL the kubelet, containerd, its shims and every process of every pod (kubepods cgroups),
# then drop what does not survive a reboot: the pods' network namespaces, the runtime's state
# (its /run part) and the agent's socket dir (/var/run/sidelane). etcd, the API server, the
# controller manager, the scheduler and kube-proxy keep running (the control plane is elsewhere).
# Boot: the primary CNI writes its conflist again from scratch (its own bytes, nothing chained
# in) before containerd and the kubelet start; the Sidelane agent comes back as a pod.
reboot_node() {
  running || die "the cluster is not running"
  local kpid cpid pid pids i ns m
  kpid=$(cat "$W/run/kubelet.pid")
  cpid=$(cat "$W/run/containerd.pid")
  log "power loss: SIGKILL kubelet, containerd, its shims and every pod process"
  kill_pidfile kubelet
  kill_pidfile containerd
  for pid in $(pgrep -f -- "-address $W/containerd/containerd.sock" || true); do kill -9 "$pid" 2>/dev/null || true; done
  for i in $(seq 1 100); do
    # cgroup v1 (pids controller) or v2: whichever exists.
    pids=$({ find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | sort -u | tr '\n' ' ')
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.1
  done
  [ -z "${pids// /}" ] || die "pod processes survive SIGKILL: $pids"
  waitfor "! kill -0 $kpid && ! kill -0 $cpid" 30 "the kubelet and containerd to exit" || die "kubelet or containerd survived SIGKILL"
  for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
    grep -qx "$ns" "$W/run/netns" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
  done
  for m in $(awk -v w="$W/containerd/state/" 'index($5, w)==1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$W/containerd/state"
  [ -d /var/run/sidelane ] && find /var/run/sidelane -mindepth 1 -delete
  log "boot: the primary CNI writes its conflist from scratch, then containerd and the kubelet start"
  cp "$W/run/primary.conflist.orig" "$W/cni/net.d/.10-sidelane-local.conflist.boot"
  mv "$W/cni/net.d/.10-sidelane-local.conflist.boot" "$W/cni/net.d/10-sidelane-local.conflist"
  start_component containerd
  waitfor "$CTR version" 60 "containerd" || fail_up containerd
  start_component kubelet
  log "node booted"
}

up() {
  [ "$(id -u)" = 0 ] || die "the local cluster needs root"
  [ -n "$HOSTIP" ] || die "cannot find this host's IPv4 address (set HOSTIP)"
  build
  if running; then
    log "cluster already running (KUBECONFIG=$W/pki/admin.kubeconfig)"
    return
  fi
  if [ -d "$W/run" ] && ls "$W"/run/*.pid >/dev/null 2>&1; then
    log "a previous cluster is partly running or was not torn down: tearing it down first"
    down
  fi
  for port in 2379 6443 10250 10257 10259; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is in use: another cluster runs here? (ss -ltnp 'sport = :$port')"; fi
  done
  local t0=$SECONDS
  mkdir -p "$W"/{logs,run,cni/bin,cni/net.d,cni/ipam,containerd,kubelet/root,images}
  save_host_state
  # The agent mounts /var/run/netns with HostToContainer propagation (to see the namespaces of
  # pods created after it started); that needs a shared mount, which `ip netns add` would make
  # too. A host whose / is private (no systemd) has none.
  [ -d /run/netns ] || { mkdir -p /run/netns && touch "$W/run/made-netns-dir"; }
  if ! findmnt -n /run/netns >/dev/null 2>&1; then
    mount --bind /run/netns /run/netns
    echo /run/netns >"$W/run/made-netns-mount"
  fi
  mount --make-shared /run/netns
  certs
  local P=$W/pki AK=$W/pki/admin.kubeconfig
  # The pause image: the demo app in pause mode (built here so that `up` needs nothing else).
  "$ROOT/hack/images.sh" pause "$W/images/pause.tar" >/dev/null
  cp "$CNI_CACHE"/bin/* "$W/cni/bin/"

  log "starting etcd"
  bg etcd etcd --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  waitfor "curl -sf http://127.0.0.1:2379/health" 60 "etcd" || fail_up etcd

  log "starting kube-apiserver"
  # Audit only pod GETs (metadata: who read which pod): the e2e tests show that the CNI plugin's
  # path reads no pod from the API server (test/e2e TestNoPodGetOnCacheHit).
  cat >"$W/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [get]
    resources: [{group: "", resources: [pods]}]
  - level: None
POLICY
  start_component kube-apiserver
  waitfor apiserver_ready 180 "kube-apiserver /readyz" || fail_up kube-apiserver

  log "starting kube-controller-manager and kube-scheduler"
  bg kube-controller-manager "$K8S_CACHE/bin/kube-controller-manager" --kubeconfig="$AK" --authentication-kubeconfig="$AK" \
    --authorization-kubeconfig="$AK" --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --flex-volume-plugin-dir="$W/kcm-flex" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --controllers='*,-cloud-node-lifecycle'
  bg kube-scheduler "$K8S_CACHE/bin/kube-scheduler" --kubeconfig="$AK" --authentication-kubeconfig="$AK" \
    --authorization-kubeconfig="$AK" --bind-address=127.0.0.1 --leader-elect=false

  log "starting containerd"
  # Private root, state and socket; our pause image and CNI directories.
  # restrict_oom_score_adj=true is REQUIRED where CAP_SYS_RESOURCE is missing from the bounding
  # set (else every sandbox fails: "runc create failed: ... can't get final child's PID from pipe: EOF").
  containerd config default | sed -e "s#^root = .*#root = \"$W/containerd/root\"#" \
    -e "s#^state = .*#state = \"$W/containerd/state\"#" \
    -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$W/containerd/containerd.sock\"#" \
    -e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" \
    -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"$W/cni/bin\"#" -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$W/cni/net.d\"#" \
    -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" >"$W/containerd/config.toml"
  grep -q "restrict_oom_score_adj = true" "$W/containerd/config.toml" || die "containerd config: restrict_oom_score_adj not set"
  start_component containerd
  waitfor "$CTR version" 60 "containerd" || fail_up containerd
  $CTR images import "$W/images/pause.tar" >/dev/null

  # The primary CNI network: bridge + host-local + portmap. Sidelane chains itself in here.
  cat >"$W/cni/net.d/10-sidelane-local.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "sidelane-local",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$W/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  cp "$W/cni/net.d/10-sidelane-local.conflist" "$W/run/primary.conflist.orig"

  log "starting kubelet and kube-proxy"
  cat >"$W/kubelet/config.yaml" <<KC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: $P/ca.crt}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$W/containerd/containerd.sock
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
address: 0.0.0.0
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
failSwapOn: false
oomScoreAdj: 0
podLogsDir: $W/kubelet/pod-logs
volumePluginDir: $W/kubelet/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
maxPods: 60
KC
  start_component kubelet
  bg kube-proxy "$K8S_CACHE/bin/kube-proxy" --kubeconfig="$AK" --hostname-override="$NODE" --cluster-cidr=10.244.0.0/16 \
    --proxy-mode=iptables --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  export KUBECONFIG=$AK
  waitfor "$KUBECTL get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True" 180 "node $NODE Ready" || fail_up kubelet
  waitfor "$KUBECTL get sa default -n default" 120 "the default ServiceAccount" || fail_up kube-controller-manager
  waitfor "$KUBECTL get configmap kube-root-ca.crt -n default" 120 "the kube-root-ca.crt ConfigMap" || fail_up kube-controller-manager
  echo "$NODE" >"$W/run/node"
  log "cluster up in $((SECONDS - t0)) s: KUBECONFIG=$AK node=$NODE"
}

fail_up() {
  log "$1 did not come up; last lines of $W/logs/$1.log:"
  tail -n 30 "$W/logs/$1.log" >&2 || true
  exit 1
}

# ---------------------------------------------------------------------------------------------
# down

kill_pidfile() {
  local f=$W/run/$1.pid
  [ -f "$f" ] || return 0
  kill -9 "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
}

down() {
  [ "$(id -u)" = 0 ] || die "the local cluster needs root"
  [ -d "$W/run" ] || { log "no cluster state in $W: nothing to tear down"; return 0; }
  export KUBECONFIG=$W/pki/admin.kubeconfig
  local t0=$SECONDS
  if apiserver_ready && alive kubelet; then
    # 1) Let the kubelet tear the pods down itself (CNI DEL, unmounts, netns removal).
    log "deleting workloads and pods"
    $KUBECTL delete mutatingwebhookconfigurations -l app.kubernetes.io/part-of=sidelane --wait=false >/dev/null 2>&1 || true
    $KUBECTL delete ds,deploy,rs,sts,job --all -A --wait=false >/dev/null 2>&1 || true
    $KUBECTL delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
    waitfor "[ -z \"\$($CTR tasks ls -q 2>/dev/null)\" ]" 90 "the pods to stop" || true
  fi
  # 2) Stop the components (SIGKILL: a graceful apiserver shutdown was seen to hang).
  log "stopping components"
  local n
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do kill_pidfile $n; done
  if [ -S "$W/containerd/containerd.sock" ] && alive containerd; then
    for c in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $($CTR containers ls -q 2>/dev/null); do $CTR containers rm "$c" >/dev/null 2>&1 || true; done
  fi
  if [ -f "$W/run/containerd.pid" ]; then
    kill "$(cat "$W/run/containerd.pid")" 2>/dev/null || true
    waitfor "! kill -0 $(cat "$W/run/containerd.pid")" 20 "containerd to exit" || true
    kill_pidfile containerd
  fi
  # Shims of our containerd (they outlive it): matched by our own socket path, killed by PID.
  local pid
  for pid in $(pgrep -f -- "-address $W/containerd/containerd.sock" || true); do kill -9 "$pid" 2>/dev/null || true; done

  # 3) Host leftovers: iptables chains (kube-proxy, kubelet, bridge ipMasq, portmap), netns,
  #    the bridge, mounts, cgroups, host directories, sysctls, kernel modules.
  log "cleaning the host"
  [ -x "$K8S_CACHE/bin/kube-proxy" ] && "$K8S_CACHE/bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local cmd t c r
  for cmd in iptables ip6tables; do
    command -v $cmd >/dev/null || continue
    $cmd -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
    $cmd -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
    for t in nat filter mangle; do
      # Rules in built-in chains that jump to our chains, then the chains themselves.
      { $cmd-save -t $t 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*-j (KUBE|CNI)-' | sed 's/^-A/-D/' |
        while read -r r; do eval "$cmd -t $t $r" 2>/dev/null || true; done; } || true
      for c in $($cmd-save -t $t 2>/dev/null | awk '/^:(KUBE|CNI)-/{print substr($1,2)}'); do $cmd -t $t -F "$c" 2>/dev/null || true; done
      for c in $($cmd-save -t $t 2>/dev/null | awk '/^:(KUBE|CNI)-/{print substr($1,2)}'); do $cmd -t $t -X "$c" 2>/dev/null || true; done
    done
  done
  # kube-proxy also creates nftables tables of its own (kube-proxy, ip and ip6) since 1.29.
  for fam in ip ip6; do nft delete table $fam kube-proxy 2>/dev/null || true; done
  # iptables-nft tables that the cluster brought into being and that are now empty.
  if [ -f "$W/run/nft-tables" ] && command -v nft >/dev/null; then
    local tbl
    while read -r tbl; do
      grep -qxF "$tbl" "$W/run/nft-tables" && continue
      # shellcheck disable=SC2086
      if ! nft list $tbl 2>/dev/null | grep -qE '^\s+(ip|ip6|meta|counter|jump|goto|tcp|udp|ct|mark|fib|iif|oif|log|drop|accept|reject|return)\b'; then
        nft delete $tbl 2>/dev/null || true
      fi
    done < <(nft list tables 2>/dev/null | grep -E '^table (ip|ip6) ' || true)
  fi
  # Network namespaces the runtime created (not those that existed before up).
  local ns
  for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
    grep -qx "$ns" "$W/run/netns" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
  done
  ip link del cni0 2>/dev/null || true
  # The shared /run/netns mount made at up, unless someone else's namespaces live there now.
  if [ -f "$W/run/made-netns-mount" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount /run/netns 2>/dev/null || true
  fi
  [ -f "$W/run/made-netns-dir" ] && rmdir /run/netns 2>/dev/null || true
  local m
  for m in $(awk -v w="$W/" 'index($5, w)==1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ -f "$W/run/created-dirs" ]; then
    while read -r d; do [ -n "$d" ] && rm -rf "$d"; done <"$W/run/created-dirs"
  fi
  if [ -f "$W/run/sysctls" ]; then
    while IFS== read -r k v; do sysctl -qw "$k=$v" 2>/dev/null || true; done <"$W/run/sysctls"
  fi
  if [ -f "$W/run/modules" ]; then
    for mod in br_netfilter; do
      if [ -r /proc/modules ] && awk '{print $1}' /proc/modules | grep -qx $mod && ! grep -qx $mod "$W/run/modules"; then modprobe -r $mod 2>/dev/null || true; fi
    done
  fi
  rm -rf "$W"
  log "cluster down in $((SECONDS - t0)) s; host cleaned"
}

status() {
  if running; then
    echo "running: KUBECONFIG=$W/pki/admin.kubeconfig node=$(cat "$W/run/node" 2>/dev/null)"
  else
    echo "not running"
    return 1
  fi
}

env_() {
  echo "export KUBECONFIG=$W/pki/admin.kubeconfig"
  echo "export PATH=$K8S_CACHE/bin:$ROOT/bin:\$PATH"
  echo "export SIDELANE_CLUSTER_DIR=$W"
  echo "export SIDELANE_CNI_CONF_DIR=$W/cni/net.d SIDELANE_CNI_BIN_DIR=$W/cni/bin"
  echo "export CTR='$CTR'"
}

import_images() {
  running || die "the cluster is not running (hack/cluster.sh up)"
  local tar
  for tar in "$@"; do
    [ -f "$tar" ] || die "no image archive $tar (run make images)"
    $CTR images import "$tar" >/dev/null || die "ctr images import $tar failed"
    log "imported $tar"
  done
}

logs_() {
  local c
  for c in containerd kubelet kube-apiserver; do
    echo "===== $c (last 40 lines of $W/logs/$c.log)"
    tail -n 40 "$W/logs/$c.log" 2>/dev/null || true
  done
}

case "${1:-}" in
build) build ;;
up) up ;;
down) down ;;
status) status ;;
env) env_ ;;
import) shift; import_images "$@" ;;
logs) logs_ ;;
restart) shift; restart "$@" ;;
reboot) reboot_node ;;
*)
  echo "usage: $0 build|up|down|status|env|import TAR...|logs|restart COMPONENT...|reboot" >&2
  exit 2
  ;;
esac
