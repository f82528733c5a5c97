#!/usr/bin/env bash
# The connection flood (test/edge's TestConnectionFlood) measured with a
# client that is not ours: 4 Node processes of the official
# socketcluster-client each open 1,250 connections at once to one
# clustered worker (state, a broker, the worker, as in the test), and
# the worker's own CPU is read from its /metrics. Loopback only, bounded;
# RUNS rounds (default 3).
#
#   bash bench/flood-official.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
bash scripts/deps.sh >/dev/null
WORK=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
echo "flood-official: building scc" >&2
go build -o "$WORK/scc" ./cmd/scc
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metric() { curl -s "http://127.0.0.1:$WPORT/metrics" | awk -v m="$1" '$1==m{print $2}'; }
for run in $(seq 1 "$RUNS"); do
  export SCC_CLUSTER_TOKEN=flood-official SCC_LOG_LEVEL=error
  SPORT=$(free_port); BPORT=$(free_port); WPORT=$(free_port)
  "$WORK/scc" state --listen "127.0.0.1:$SPORT" --http-listen "" --settle-window 0 & pids+=($!)
  "$WORK/scc" broker --listen "127.0.0.1:$BPORT" --http-listen "" --state "127.0.0.1:$SPORT" & pids+=($!)
  "$WORK/scc" worker --listen "127.0.0.1:$WPORT" --state "127.0.0.1:$SPORT" --auth-key k & pids+=($!)
  until curl -sf "http://127.0.0.1:$WPORT/readyz" >/dev/null; do sleep 0.2; done
  rm -f "$WORK"/out* "$WORK"/go*
  for i in 1 2 3 4; do
    mkfifo "$WORK/go$i"
    node bench/flood-official.mjs "$WPORT" 1250 <"$WORK/go$i" >"$WORK/out$i" & pids+=($!)
  done
  sleep 2 # the Node processes loaded
  cpu0=$(metric process_cpu_seconds_total)
  for i in 1 2 3 4; do echo go >"$WORK/go$i" & done
  until [ "$(cat "$WORK"/out* 2>/dev/null | wc -l)" -ge 4 ]; do sleep 0.05; done
  sleep 0.5
  cpu1=$(metric process_cpu_seconds_total)
  held=$(metric scc_worker_connections)
  cat "$WORK"/out* | python3 -c "
import sys, json
r = [json.loads(l) for l in sys.stdin]
took = (max(x['end'] for x in r) - min(x['start'] for x in r)) / 1000
w = $cpu1 - $cpu0
print('flood-official: run $run: 5000 connections in %.2f s (%d failed); the worker holds %s, used %.2f CPU-s (%.0f us per connection); the clients %.2f CPU-s'
      % (took, sum(x['failed'] for x in r), '$held', w, w / 5000 * 1e6, sum(x['cpu'] for x in r)))"
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()
done
