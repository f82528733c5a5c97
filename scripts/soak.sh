#!/usr/bin/env bash
# The soak, long version: the cluster as processes under churn for
# ${SCC_SOAK_DURATION:-10m} (test/soak); every component's heap, goroutines
# and open files must end flat. Plots the samples into docs/soak.svg.
# scripts/test.sh runs 60 s of it.
set -euo pipefail
cd "$(dirname "$0")/.."
SCC_SOAK_DURATION=${SCC_SOAK_DURATION:-10m} SCC_SOAK_SVG="$PWD/docs/soak.svg" \
  go test -count=1 -timeout 30m -v -run TestSoak ./test/soak/ "$@" \
  | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|soak_test.go'
