#!/usr/bin/env bash
# Regenerates the operator's generated files from the markers in operator/
# with controller-gen, pinned in go.mod (`go tool controller-gen`):
# operator/api/v1alpha1/zz_generated.deepcopy.go, the CRD and the RBAC
# ClusterRole under deploy/kubernetes/operator/. `--check` fails when the
# committed files differ from what regeneration produces.
set -euo pipefail
cd "$(dirname "$0")/.."
gen() { # gen <deepcopy dir> <crd dir> <rbac dir>
  go tool controller-gen object paths=./operator/api/... output:object:dir="$1"
  go tool controller-gen crd paths=./operator/api/... output:crd:dir="$2"
  go tool controller-gen rbac:roleName=scc-operator paths=./operator/ output:rbac:dir="$3"
}
if [ "${1:-}" != --check ]; then
  gen operator/api/v1alpha1 deploy/kubernetes/operator/crd deploy/kubernetes/operator/rbac
  exit 0
fi
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/obj" "$t/crd" "$t/rbac"
gen "$t/obj" "$t/crd" "$t/rbac"
stale=0
diff -q "$t/obj/zz_generated.deepcopy.go" operator/api/v1alpha1/zz_generated.deepcopy.go >/dev/null || stale=1
diff -rq "$t/crd" deploy/kubernetes/operator/crd >/dev/null || stale=1
diff -rq "$t/rbac" deploy/kubernetes/operator/rbac >/dev/null || stale=1
if [ $stale = 1 ]; then
  echo "operator: generated files are stale: run scripts/operator-gen.sh and commit the result"; exit 1
fi
echo "operator: generated files are up to date"
