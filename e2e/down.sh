#!/usr/bin/env bash
# e2e/down.sh: removes everything e2e/up.sh's node left behind: its pods and
# containers, its processes (by pid file, never by name), kube-proxy's and
# kubelet's iptables rules, the guard rules, mounts, network namespaces, the
# cni0 bridge, cgroups and $SCC_E2E_DIR. The build cache stays. A kind
# cluster is deleted. Safe to run twice.
set -uo pipefail
cd "$(dirname "$0")/.."
source e2e/lib.sh
say() { echo "e2e/down: $*" >&2; }

if [ "$(cat "$DIR/mode" 2>/dev/null)" = kind ]; then
  kind delete cluster --name scc-e2e >&2
  rm -rf "$DIR"
  exit 0
fi
[ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
stop() { # stop <name>: SIGTERM, 5 s, SIGKILL
  alive "$1" || { rm -f "$RUN/$1.pid"; return 0; }
  local pid; pid=$(cat "$RUN/$1.pid")
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null && say "killed $1 ($pid)" || say "stopped $1 ($pid)"
  rm -f "$RUN/$1.pid"
}

# Pods first, through kubelet, so that their sandboxes' networks are torn
# down by the CNI plugins.
if alive kubelet && alive apiserver; then
  export KUBECONFIG=$KUBECONFIG_PATH
  "$BIN/kubectl" delete deploy,rs,sts,ds,job,pod --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1
  for _ in $(seq 60); do
    [ -z "$("$BIN/kubectl" get pods -A --no-headers 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
for c in kube-proxy kubelet scheduler controller-manager apiserver etcd; do stop $c; done
if alive containerd; then
  ctr() { command ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
  for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 1
  for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks rm -f "$t" >/dev/null 2>&1; done
  for c in $(ctr containers ls -q 2>/dev/null); do ctr containers rm "$c" >/dev/null 2>&1; done
  stop containerd
fi
[ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
# Mounts under our directory, deepest first, and the pods' network
# namespaces (named cni-<uuid> by containerd's CRI).
grep " $DIR" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
if [ -f "$DIR/mode" ]; then
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] || continue
    umount -l "$ns" 2>/dev/null; rm -f "$ns"
  done
fi
ip link del cni0 2>/dev/null
# kube-proxy's and kubelet's chains (KUBE-*), our guard, and the bridge
# plugin's masquerading of each pod (CNI-<hash> chains and the rules that
# jump to them, commented with our network's name): pods whose sandboxes
# were never torn down (the node stopped first) leave theirs, and every
# rule left behind puts loopback connections through conntrack and NAT.
ours='name: \"scc-e2e\"'
for t in iptables ip6tables; do
  command -v "$t-save" >/dev/null || continue
  rules=$("$t-save")
  grep -q -F -e 'KUBE-' -e "$GUARD_TAG" -e "$ours" <<<"$rules" || continue
  drop=$(mktemp)
  printf '%s\n' KUBE- "$GUARD_TAG" "$ours" >"$drop"
  grep -F -e "$ours" <<<"$rules" | grep -oE -e '-(A|j) CNI-[0-9a-f]+' | awk '{print $2}' | sort -u |
    while read -r c; do printf ':%s \n-A %s \n' "$c" "$c"; done >>"$drop"
  grep -v -F -f "$drop" <<<"$rules" | "$t-restore"
  rm -f "$drop"
done
for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
done
command -v conntrack >/dev/null && { conntrack -D -s "$POD_CIDR" >/dev/null 2>&1; conntrack -D -d "$SVC_CIDR" >/dev/null 2>&1; }
rm -rf "$DIR"
say "done"
