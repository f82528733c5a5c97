#!/usr/bin/env bash
# Prepares the operator tests' envtest assets, idempotently, and prints
# their directory (for KUBEBUILDER_ASSETS): kube-apiserver and
# kube-controller-manager (its garbage collector deletes what a deleted
# SocketCluster owned) built from source like the e2e node's (e2e/lib.sh,
# cached by version under $SCC_E2E_CACHE), and Debian's etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/lib.sh
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v etcd >/dev/null 2>&1; then
  echo "envtest: installing Debian's etcd-server" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
build_k8s kube-apiserver kube-controller-manager
assets=$CACHE/envtest-$K8S_VERSION
mkdir -p "$assets"
ln -sf "$(command -v etcd)" "$assets/etcd"
ln -sf "$BIN/kube-apiserver" "$assets/kube-apiserver"
ln -sf "$BIN/kube-controller-manager" "$assets/kube-controller-manager"
echo "$assets"
