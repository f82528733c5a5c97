#!/usr/bin/env bash
# 100,000 connections on one machine (test/edge TestManyConnections):
# state, 2 brokers and 7 workers as processes, the clients in 7 helper
# processes dialing from their own loopback addresses; memory per
# connection, CPU for pings, and a fan-out every client must receive in
# full. Writes its table into docs/reliability.md; about 2 minutes.
# scripts/test.sh runs the same with 12,000 connections.
set -euo pipefail
cd "$(dirname "$0")/.."
SCC_CONNECTIONS=${SCC_CONNECTIONS:-100000} SCC_CONNECTIONS_DOC="$PWD/docs/reliability.md" \
  go test -count=1 -timeout 20m -v -run TestManyConnections ./test/edge/ "$@" \
  | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|_test.go:'
