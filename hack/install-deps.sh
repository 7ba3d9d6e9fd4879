#!/usr/bin/env bash
# Installs what Sidelane's build, tests, demo and benchmarks need on a Debian machine (as root):
# apt packages (after apt-get update) and the Go modules. Quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(make git iptables nftables iproute2 ethtool conntrack procps psmisc curl openssl ca-certificates
      etcd-server containerd runc haproxy wrk python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go 1.26 is required (go not on PATH)" >&2; exit 1; }
go mod download
