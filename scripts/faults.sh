#!/usr/bin/env bash
# The fault suite, long version: the cluster as processes on loopback
# under Go and official-client load, one fault at a time (test/faults),
# with a broker paused for 30 s and the network faults held longer. Writes
# its table into docs/reliability.md. Needs root for the network faults
# (iptables picks out one worker by its user id); about 4 minutes.
# scripts/test.sh runs the short version.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
SCC_FAULTS_LONG=1 SCC_FAULTS_DOC="$PWD/docs/reliability.md" \
  go test -count=1 -timeout 20m -v -run TestFaults ./test/faults/ "$@" \
  | grep -E '^(=== RUN|--- |\s+--- |PASS|FAIL|ok)|faults_test.go'
