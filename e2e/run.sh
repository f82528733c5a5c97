#!/usr/bin/env bash
# e2e/run.sh: the end-to-end suite against the cluster in $KUBECONFIG (the
# one e2e/up.sh printed, when unset). Needs the scc image loaded as
# scc:dev and scc:e2e-next (up.sh does that), node and the interop tests'
# npm packages (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/lib.sh
bash scripts/deps.sh
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_PATH}
# A kubectl of the server's minor version: the one up.sh built, else PATH's.
if [ -z "${KUBECTL:-}" ]; then
  if [ -x "$BIN/kubectl" ]; then KUBECTL=$BIN/kubectl; else KUBECTL=$(command -v kubectl); fi
fi
export KUBECTL
# The traffic check applies to our own node only.
if [ "$(cat "$DIR/mode" 2>/dev/null)" = node ] && [ -f "$DIR/uplink" ]; then
  export SCC_E2E_UPLINK=$(cat "$DIR/uplink") SCC_E2E_POD_CIDR=$POD_CIDR SCC_E2E_SVC_CIDR=$SVC_CIDR
fi
echo "e2e/run: suite against $KUBECONFIG ($("$KUBECTL" version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))" >&2
go test -tags e2e -count=1 -timeout 30m -v "$@" ./e2e/
