#!/usr/bin/env bash
# e2e/up.sh: brings up a real single-node Kubernetes for the end-to-end suite,
# loads the scc image into it (as scc:dev and scc:e2e-next, the second for
# the rolling-update test) and prints the kubeconfig's path.
#
# With a working Docker daemon and kind on PATH it creates a kind cluster.
# Otherwise (no Docker here, nor in CI) it runs the node itself, as root:
# Kubernetes built from source through the Go module proxy (cached by
# version under $SCC_E2E_CACHE, so only the first run pays ~5-15 minutes),
# etcd, containerd, runc and the CNI plugins from Debian, CoreDNS built the
# same way, and images written without a container engine.
#
# Traffic stays on this machine: the Service range 198.18.0.0/24 and the pod
# range 198.19.0.0/16 are benchmarking space (RFC 2544), and iptables rules
# tagged "scc-e2e-guard" refuse, at the uplink, every packet from a pod or to
# a pod or Service address, so a pod that dials a Service kube-proxy has not
# programmed yet is refused instead of routed out. CoreDNS has no upstream.
#
#   bash e2e/up.sh            # then: KUBECONFIG=<printed path> bash e2e/run.sh
#   bash e2e/down.sh          # removes everything the node left behind
#
# Environment: SCC_E2E_DIR (node state, default /tmp/scc-e2e), SCC_E2E_CACHE
# (built binaries, default /var/cache/scc-e2e), SCC_E2E_KIND=0 to skip kind,
# K8S_VERSION (default v1.34.4; stay on 1.34 on cgroup v1 hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source e2e/lib.sh

T0=$(date +%s)
stamp() { echo "e2e/up: [$(( $(date +%s) - T0 ))s] $*" >&2; }
waitfor() { # waitfor <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  stamp "$what not ready after ${secs}s"; return 1
}
mkdir -p "$DIR/images"
trap 'stamp "failed (line $LINENO); logs: $LOGS; bash e2e/down.sh cleans up"' ERR

# The scc image, two tags of one build.
build_images() {
  stamp "building the scc image"
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$DIR/images/scc" ./cmd/scc
  go run ./cmd/scc-image -binary "$DIR/images/scc" -o "$DIR/images/scc.tar" -name scc -tag dev >/dev/null
  go run ./cmd/scc-image -binary "$DIR/images/scc" -o "$DIR/images/scc-next.tar" -name scc -tag e2e-next >/dev/null
}

# ------------------------------------------------------------------ kind
if [ "${SCC_E2E_KIND:-auto}" != 0 ] && command -v kind >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  stamp "Docker and kind found: creating kind cluster scc-e2e"
  kind get clusters 2>/dev/null | grep -qx scc-e2e || kind create cluster --name scc-e2e --kubeconfig "$KUBECONFIG_PATH" >&2
  kind get kubeconfig --name scc-e2e > "$KUBECONFIG_PATH"
  build_images
  kind load image-archive --name scc-e2e "$DIR/images/scc.tar" >&2
  kind load image-archive --name scc-e2e "$DIR/images/scc-next.tar" >&2
  echo kind > "$DIR/mode"
  stamp "ready"
  echo "$KUBECONFIG_PATH"
  exit 0
fi

# ------------------------------------------------------------------ our own node
[ "$(id -u)" = 0 ] || { echo "e2e/up: the node needs root (or Docker and kind)" >&2; exit 1; }
if [ -f "$RUN/kubelet.pid" ] && kill -0 "$(cat "$RUN/kubelet.pid")" 2>/dev/null; then
  echo "e2e/up: a node from an earlier run is still up; bash e2e/down.sh first" >&2; exit 1
fi
echo node > "$DIR/mode"
mkdir -p "$BIN" "$PKI" "$RUN" "$CONF" "$DIR/cni/net.d"

# 1. Debian packages.
pkgs="etcd-server containerd runc containernetworking-plugins iptables conntrack openssl iproute2 curl"
missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$missing" ]; then
  stamp "installing Debian packages: $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Kubernetes from source (e2e/lib.sh).
build_k8s kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
if [ ! -x "$BIN/coredns" ]; then
  stamp "building CoreDNS $COREDNS_VERSION from source (about 2 minutes cold)"
  GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
fi
if [ ! -x "$BIN/pause" ]; then
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/pause" ./e2e/pause
fi

# 3. Images: pause (the pod sandbox), CoreDNS, scc.
go run ./cmd/scc-image -binary "$BIN/pause" -path /pause -o "$DIR/images/pause.tar" -name "${PAUSE_IMAGE%:*}" -tag "${PAUSE_IMAGE##*:}" >/dev/null
go run ./cmd/scc-image -binary "$BIN/coredns" -path /coredns -o "$DIR/images/coredns.tar" -name "${COREDNS_IMAGE%:*}" -tag "${COREDNS_IMAGE##*:}" >/dev/null
build_images

# 4. Certificates and the admin kubeconfig.
HOSTIP=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i == "src") print $(i + 1)}' | head -1)
HOSTIP=${HOSTIP:-127.0.0.1}
if [ ! -f "$PKI/admin.crt" ] || [ "$(cat "$PKI/hostip" 2>/dev/null)" != "$HOSTIP" ]; then
  stamp "writing certificates"
  rm -rf "$PKI"; mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=scc-e2e-ca 2>/dev/null
    cat > ext.cnf <<EOT
[server]
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SVC_API_IP,IP:$HOSTIP
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
[client]
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile ext.cnf -extensions server 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile ext.cnf -extensions client 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    echo "$HOSTIP" > hostip
  )
fi
cat > "$KUBECONFIG_PATH" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: scc-e2e
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$PKI/admin.crt", client-key: "$PKI/admin.key"}
contexts:
- name: scc-e2e
  context: {cluster: scc-e2e, user: admin}
current-context: scc-e2e
EOF2
export KUBECONFIG=$KUBECONFIG_PATH
kubectl() { "$BIN/kubectl" "$@"; }

# 5. Configuration of the node's parts.
cat > "$CONF/containerd.toml" <<EOF2
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE in these sandboxes: a negative oom_score_adj
  # would fail every pod sandbox.
  restrict_oom_score_adj = true
  # CoreDNS binds port 53 as a non-root user.
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF2
cat > "$DIR/cni/net.d/10-scc-e2e.conflist" <<EOF2
{"cniVersion": "0.4.0", "name": "scc-e2e", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$RUN/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF2
cat > "$CONF/kubelet.yaml" <<EOF2
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: $RUN/pod-logs
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: ["$SVC_DNS_IP"]
resolvConf: /etc/resolv.conf
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusUpdateFrequency: 5s
EOF2
cat > "$CONF/kube-proxy.yaml" <<EOF2
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
EOF2

# 6. The guard, before anything can route a pod's packet.
sysctl -qw net.ipv4.ip_forward=1
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
uplink=$(ip -4 route show default | awk '{print $5; exit}')
if [ -n "$uplink" ]; then
  guard_rule filter FORWARD -s "$POD_CIDR" -o "$uplink" -j REJECT
  guard_rule filter FORWARD -d "$POD_CIDR" -o "$uplink" -j REJECT
  guard_rule filter FORWARD -d "$SVC_CIDR" -o "$uplink" -j REJECT
  # In OUTPUT the interface is the one routed to before kube-proxy's
  # rewrite: match only the Service range there (the host's own traffic
  # to a programmed Service is rewritten and goes to a pod).
  guard_rule filter OUTPUT -d "$SVC_CIDR" -o "$uplink" -j REJECT
  # The last net: where the interface is the real one.
  guard_rule mangle POSTROUTING -s "$POD_CIDR" -o "$uplink" -j DROP
  guard_rule mangle POSTROUTING -d "$POD_CIDR" -o "$uplink" -j DROP
  guard_rule mangle POSTROUTING -d "$SVC_CIDR" -o "$uplink" -j DROP
  echo "$uplink" > "$DIR/uplink"
  stamp "guard: $SVC_CIDR and $POD_CIDR stay on this machine (uplink $uplink)"
else
  stamp "no default route: no uplink to guard"
fi

# 7. Start the parts, each a background process with a pid file and a log.
start() { # start <name> <command...>
  local name=$1; shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}
mkdir -p "$LOGS"
rm -rf "$RUN/etcd"
start etcd etcd --name scc-e2e --data-dir "$RUN/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster scc-e2e=http://127.0.0.1:2380 --unsafe-no-fsync=true
waitfor etcd 30 curl -sf http://127.0.0.1:2379/health
start apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 \
  --advertise-address="$HOSTIP" --secure-port=6443 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range="$SVC_CIDR" \
  --authorization-mode=Node,RBAC --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
  --profiling=false
waitfor kube-apiserver 60 curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" https://127.0.0.1:6443/readyz
stamp "kube-apiserver ready"
for c in controller-manager scheduler; do
  extra=()
  [ $c = controller-manager ] && extra=(--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt"
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --use-service-account-credentials=false
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 --service-cluster-ip-range="$SVC_CIDR")
  start $c "$BIN/kube-$c" --kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH" \
    --authorization-kubeconfig="$KUBECONFIG_PATH" --bind-address=127.0.0.1 --leader-elect=false --profiling=false "${extra[@]}"
done
waitfor kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
waitfor kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
mkdir -p "$RUN/containerd"
start containerd containerd --config "$CONF/containerd.toml"
waitfor containerd 30 ctr --address "$CONTAINERD_SOCK" version
for i in pause coredns scc scc-next; do
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$DIR/images/$i.tar" >/dev/null
done
stamp "images imported: $PAUSE_IMAGE $COREDNS_IMAGE scc:dev scc:e2e-next"
NODE=$(hostname)
start kubelet "$BIN/kubelet" --config="$CONF/kubelet.yaml" --kubeconfig="$KUBECONFIG_PATH" --root-dir="$RUN/kubelet" \
  --hostname-override="$NODE" --node-ip="$HOSTIP"
start kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --hostname-override="$NODE"
waitfor kubelet 60 curl -sf http://127.0.0.1:10248/healthz
waitfor kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
waitfor "node $NODE" 60 kubectl wait --for=condition=Ready "node/$NODE" --timeout=1s
stamp "node $NODE ready"

# 8. Cluster DNS, with no upstream: pods resolve cluster names only.
sed -e "s#@IMAGE@#$COREDNS_IMAGE#" -e "s#@DNS_IP@#$SVC_DNS_IP#" e2e/coredns.yaml | kubectl apply -f - >/dev/null
kubectl -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null
stamp "CoreDNS ready at $SVC_DNS_IP; kubeconfig:"
echo "$KUBECONFIG_PATH"
