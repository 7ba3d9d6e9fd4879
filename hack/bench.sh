#!/usr/bin/env bash
# Runs every Sidelane benchmark in one go (`make bench`) and prints one side-by-side table;
# raw numbers go to bench/results/*.json and the latency chart to bench/results/latency.png.
# Needs root (network namespaces, nftables, iptables). Extra flags pass through, e.g.
# `hack/bench.sh -only proxy` or `-quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces and rules)" >&2; exit 1; }
mkdir -p bench/results
go build -o bin/sidelane-bench ./bench
exec bin/sidelane-bench -bin bin -out bench/results "$@"
