#!/usr/bin/env bash
# Runs every bench scenario against scc's worker and the peers it is measured
# with: socketcluster-server 20.x and 14.x (from npm, bench/peers) and
# Centrifugo v6 (built from the Go module proxy). Servers run pinned to core
# 0, the load tool to core 1; the servers alternate (A B C D, A B C D, ...)
# for RUNS rounds, each on a fresh process; then bench/report writes
# docs/benchmarks.md and docs/benchmarks.png. Loopback only, bounded in time.
#
#   bash bench/compare.sh                 # RUNS=3 DURATION=5s
#   RUNS=1 DURATION=2s SCENARIOS=fanout,hot bash bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
SCENARIOS=${SCENARIOS:-fanout,fanout-rate,channels,churn,hot,idle,storm}
SERVERS=${SERVERS:-scc sc20 sc14 centrifugo scc-dev scc-cluster scc-gorilla}
CACHE=${SCC_PEERS_CACHE:-$HOME/.cache/scc-peers}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$CACHE/bin" "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

command -v taskset >/dev/null || { echo "taskset (util-linux) is required"; exit 1; }
(cd bench/peers && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)
[ -x "$CACHE/bin/centrifugo" ] || GOBIN="$CACHE/bin" go install github.com/centrifugal/centrifugo/v6@v6.9.1
go build -o "$CACHE/bin/scc" ./cmd/scc
# The worker on gorilla/websocket instead of internal/ws: what our own
# WebSocket layer is for, measured in every comparison.
go build -tags gorillaws -o "$CACHE/bin/scc-gorilla" ./cmd/scc
go build -o "$CACHE/bin/floor" ./bench/floor
cat > "$CACHE/centrifugo.json" <<'JSON'
{"client": {"insecure": true, "allowed_origins": ["*"]}, "http_server": {"port": "18030", "address": "127.0.0.1"}, "log": {"level": "error"}}
JSON

start_server() { # name -> sets PID (comma-separated) URL MORE PROTO TARGET SCEN
  PROTO=2; TARGET=sc; MORE=""; SCEN=$SCENARIOS
  case $1 in
    scc-cluster) # state, one broker, two workers over loopback gRPC; fan-out across both workers
      local log=error tok=bench-token
      taskset -c 0 "$CACHE/bin/scc" state --listen 127.0.0.1:18040 --http-listen "" --settle-window 0 --cluster-token $tok --log-level $log & local p1=$!
      taskset -c 0 "$CACHE/bin/scc" broker --listen 127.0.0.1:18041 --http-listen "" --state 127.0.0.1:18040 --cluster-token $tok --log-level $log & local p2=$!
      taskset -c 0 "$CACHE/bin/scc" worker --listen 127.0.0.1:18042 --state 127.0.0.1:18040 --cluster-token $tok --socket-channel-limit -1 --log-level $log & local p3=$!
      taskset -c 0 "$CACHE/bin/scc" worker --listen 127.0.0.1:18043 --state 127.0.0.1:18040 --cluster-token $tok --socket-channel-limit -1 --log-level $log & local p4=$!
      PID="$p1,$p2,$p3,$p4"; URL=ws://127.0.0.1:18042/socketcluster/; MORE=ws://127.0.0.1:18043/socketcluster/
      SCEN=${CLUSTER_SCENARIOS:-$SCENARIOS} ;;
    scc-dev) taskset -c 0 "$CACHE/bin/scc" dev --listen 127.0.0.1:18014 --socket-channel-limit -1 --log-level error & PID=$!
         URL=ws://127.0.0.1:18014/socketcluster/ ;;
    scc-gorilla) taskset -c 0 "$CACHE/bin/scc-gorilla" worker --listen 127.0.0.1:18013 --socket-channel-limit -1 --log-level error & PID=$!
         URL=ws://127.0.0.1:18013/socketcluster/; SCEN=${GORILLA_SCENARIOS:-fanout,idle} ;;
    scc) taskset -c 0 "$CACHE/bin/scc" worker --listen 127.0.0.1:18010 --socket-channel-limit -1 --log-level error & PID=$!
         URL=ws://127.0.0.1:18010/socketcluster/ ;;
    sc20) (cd bench/peers && exec taskset -c 0 node sc20.js 18011) & PID=$!; URL=ws://127.0.0.1:18011/socketcluster/ ;;
    sc14) (cd bench/peers && exec taskset -c 0 node sc14.js 18012) & PID=$!; URL=ws://127.0.0.1:18012/socketcluster/; PROTO=1 ;;
    centrifugo) taskset -c 0 "$CACHE/bin/centrifugo" --config "$CACHE/centrifugo.json" & PID=$!
         URL=ws://127.0.0.1:18030/connection/websocket; TARGET=centrifugo ;;
  esac
  sleep 1.5
}

# What a loopback write costs here, with nothing of ours in it: the floor
# under fan-out throughput (2,000-byte batches) and latency (one frame).
# Measured in every round: these machines' speed drifts within minutes.
floor() { # run
  for size in 100 2000; do
    taskset -c 0 "$CACHE/bin/floor" -size "$size" -json "$OUT/floor-$size-$1.json" & local fp=$!
    taskset -c 1 "$CACHE/bin/floor" -client
    wait "$fp" || echo "!! floor $size failed"
  done
}

stop_server() {
  for p in ${PID//,/ }; do kill "$p" 2>/dev/null || true; done
  for p in ${PID//,/ }; do wait "$p" 2>/dev/null || true; done
}

bench() { # file scenarios
  taskset -c 1 timeout 600 "$CACHE/bin/scc" bench --url "$URL" --more-urls "$MORE" --target "$TARGET" --protocol-version "$PROTO" \
    --server-pid "$PID" --scenario "$2" --duration "$DURATION" --warmup "$WARMUP" --json "$1"
}

for run in $(seq 1 "$RUNS"); do
  floor "$run"
  for s in $SERVERS; do
    start_server "$s"
    echo "== run $run: $s (pid $PID)"
    # Every scenario gets a fresh load tool (one scenario's leftovers in
    # the tool slowed the next: churn after channels ran at half speed);
    # idle also gets a fresh server: memory the other scenarios left
    # behind would hide its growth.
    for sc in $(echo "$SCEN" | tr ',' ' '); do
      if [ "$sc" = idle ]; then continue; fi
      bench "$OUT/$s-$run-$sc.json" "$sc" || echo "!! $s run $run $sc failed"
    done
    stop_server
    if echo "$SCEN" | tr ',' '\n' | grep -qx idle; then
      start_server "$s"
      bench "$OUT/$s-$run-idle.json" idle || echo "!! $s run $run idle failed"
      stop_server
    fi
  done
done
go run ./bench/report -in "$OUT" -servers "$SERVERS" -out docs/benchmarks.md -png docs/benchmarks.png \
  -command "RUNS=$RUNS DURATION=$DURATION SCENARIOS=$SCENARIOS bash bench/compare.sh"
echo "results in $OUT; docs/benchmarks.md written"
