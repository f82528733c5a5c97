# e2e/lib.sh: the settings up.sh, run.sh and down.sh share. Sourced, not run.
K8S_VERSION=${K8S_VERSION:-v1.34.4}
COREDNS_VERSION=v1.15.0
DIR=${SCC_E2E_DIR:-/tmp/scc-e2e}
CACHE=${SCC_E2E_CACHE:-/var/cache/scc-e2e}
BIN=$CACHE/k8s-$K8S_VERSION
PKI=$DIR/pki
RUN=$DIR/run
CONF=$DIR/conf
LOGS=$DIR/logs
KUBECONFIG_PATH=$DIR/kubeconfig
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
# RFC 2544 benchmarking space: no host our machines can reach uses it.
SVC_CIDR=198.18.0.0/24
SVC_API_IP=198.18.0.1
SVC_DNS_IP=198.18.0.10
POD_CIDR=198.19.0.0/16
NODE_POD_CIDR=198.19.0.0/24
PAUSE_IMAGE=registry.k8s.io/pause:3.10
COREDNS_IMAGE=scc-e2e.local/coredns:$COREDNS_VERSION
GUARD_TAG=scc-e2e-guard

# guard_rule <table> <chain> <match and target...>: inserts the rule once,
# tagged so that down.sh removes exactly these.
guard_rule() {
  local table=$1 chain=$2; shift 2
  # The comment match goes before the target.
  local match=() target=()
  while [ $# -gt 0 ]; do
    if [ "$1" = -j ]; then target=("$@"); break; fi
    match+=("$1"); shift
  done
  local rule=("${match[@]}" -m comment --comment "$GUARD_TAG" "${target[@]}")
  iptables -t "$table" -C "$chain" "${rule[@]}" 2>/dev/null || iptables -t "$table" -I "$chain" "${rule[@]}"
}

mkdir -p "$DIR"
