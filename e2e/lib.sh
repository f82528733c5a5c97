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

# build_k8s <command...>: builds the Kubernetes commands missing from $BIN
# from source. `go install` refuses k8s.io/kubernetes (it has replace
# directives), so a wrapper module requires it and pins each staging
# module (v0.0.0 in Kubernetes' go.mod) to the matching v0.x.y.
build_k8s() {
  local need="" c
  for c in "$@"; do [ -x "$BIN/$c" ] || need="$need $c"; done
  [ -z "$need" ] && return 0
  echo "e2e: building Kubernetes $K8S_VERSION from source:$need (cold: 3-15 minutes on 2 cores; cached in $BIN)" >&2
  mkdir -p "$BIN"
  local w="$CACHE/build-$K8S_VERSION" gomod staging minor ld p
  mkdir -p "$w"
  gomod=$(cd / && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=v0.${K8S_VERSION#v1.}
  {
    printf 'module scc-e2e/k8sbuild\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    grep -E '^\s+k8s.io/[a-z0-9-]+ v0.0.0$' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    printf ')\n'
  } > "$w/go.mod"
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"
    done
    printf ')\n'; } > "$w/tools.go"
  (cd "$w" && go mod tidy)
  # Wrong version stamps make every component panic at start.
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  # One at a time: on 2 cores faster than one combined build.
  for c in $need; do
    local t0=$SECONDS
    (cd "$w" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$BIN/$c.tmp" "$BIN/$c"
    echo "e2e: built $c ($((SECONDS - t0))s)" >&2
  done
}

