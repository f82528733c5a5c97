#!/usr/bin/env bash
# What a proxy in front of the workers costs: the same clustered worker
# (state, one broker, one worker) loaded directly, through our gateway,
# through nginx and through HAProxy (Debian's packages, configured as
# WebSocket reverse proxies the way their documentation says). The server
# side (every cluster process and the proxy) is pinned to core 0, the load
# tool to core 1; the paths alternate for RUNS rounds. Writes the
# "Through a proxy" section of docs/benchmarks.md. Loopback only, bounded.
#
#   bash bench/proxies.sh                 # RUNS=3 DURATION=5s
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
# fanout: as fast as it goes; fanout-rate: latency at 40 publishes/s to
# 1,000 subscribers; equal: 10 publishes/s to 1,000 subscribers, the same
# load on every path, for CPU per delivered message (low enough that the
# one server core is never full: at 40/s a worker and a proxy together
# fill it, each delivery costing a write in the worker and a read and a
# write in the proxy).
# equal-js: the same load from the official JS client (bench/proxy-load.mjs),
# a load tool that is not ours, as a cross-check of the equal figures.
SCENARIOS=${SCENARIOS:-fanout,fanout-rate,equal,equal-js}
EQUAL_RATE=${EQUAL_RATE:-10}
PATHS=${PATHS:-direct gateway gateway-sockets nginx haproxy}
CACHE=${SCC_PEERS_CACHE:-$HOME/.cache/scc-peers}
OUT=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d)
mkdir -p "$CACHE/bin" "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v taskset >/dev/null || { echo "taskset (util-linux) is required"; exit 1; }
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
  echo "installing nginx-light and haproxy (Debian packages)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light haproxy >/dev/null
  else sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light haproxy >/dev/null; fi
fi
go build -o "$CACHE/bin/scc" ./cmd/scc
SCC=$CACHE/bin/scc
TOKEN=bench-token
WORKER=127.0.0.1:18052

# nginx: one worker process, the WebSocket proxying of nginx.org/en/docs/http/websocket.html.
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $WORK/nginx/nginx.pid;
error_log stderr error;
events { worker_connections $(( $(ulimit -n) / 2 )); }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream workers { server $WORKER; }
  server {
    listen 127.0.0.1:18060;
    location / {
      proxy_pass http://workers;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_read_timeout 1h;
    }
  }
}
CONF
# HAProxy: one thread, mode http (it handles the upgrade itself), the
# tunnel timeout its documentation asks for WebSocket.
# (maxconn within the open-file limit: HAProxy refuses to start otherwise.)
MAXCONN=$(( ($(ulimit -n) - 200) / 2 ))
cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn $MAXCONN
  nbthread 1
defaults
  mode http
  option forwardfor
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend clients
  bind 127.0.0.1:18061
  default_backend workers
backend workers
  server worker1 $WORKER
CONF

PIDS=()
cleanup() { # a benchmark's servers need no graceful drain: a broker's would wait for state
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting the cluster (state, broker, worker), the gateway, nginx and HAProxy on core 0"
taskset -c 0 "$SCC" state --listen 127.0.0.1:18050 --http-listen "" --settle-window 0 --cluster-token $TOKEN --log-level error & PIDS+=($!); STATE=$!
taskset -c 0 "$SCC" broker --listen 127.0.0.1:18051 --http-listen "" --state 127.0.0.1:18050 --cluster-token $TOKEN --log-level error & PIDS+=($!); BROKER=$!
taskset -c 0 "$SCC" worker --listen $WORKER --state 127.0.0.1:18050 --cluster-token $TOKEN --socket-channel-limit -1 \
  --trusted-proxies 127.0.0.1 --log-level error & PIDS+=($!); WPID=$!
taskset -c 0 "$SCC" gateway --listen 127.0.0.1:18062 --state 127.0.0.1:18050 --cluster-token $TOKEN --log-level error & PIDS+=($!); GW=$!
taskset -c 0 "$SCC" gateway --listen 127.0.0.1:18063 --state 127.0.0.1:18050 --cluster-token $TOKEN --tunnels=false \
  --log-level error & PIDS+=($!); GWS=$!
taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & PIDS+=($!); NGINX=$!
taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" & PIDS+=($!); HAPROXY=$!
ready=""
for i in $(seq 1 100); do
  if curl -sf http://127.0.0.1:18062/readyz >/dev/null 2>&1 && curl -sf http://127.0.0.1:18063/readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "the gateway did not become ready (is a port of 18050-18063 taken?)"; exit 1; }
NGINX_WORKERS=$(pgrep -P "$NGINX" | paste -sd, -)
PIDS+=(${NGINX_WORKERS//,/ }) # killed outright, nginx's master leaves them behind
echo "pids: state $STATE broker $BROKER worker $WPID gateways $GW $GWS nginx $NGINX (workers $NGINX_WORKERS) haproxy $HAPROXY"

for run in $(seq 1 "$RUNS"); do
  for p in $PATHS; do
    case $p in
      direct)  URL=ws://$WORKER/socketcluster/; PROXY="" ;;
      gateway) URL=ws://127.0.0.1:18062/socketcluster/; PROXY=$GW ;;
      gateway-sockets) URL=ws://127.0.0.1:18063/socketcluster/; PROXY=$GWS ;;
      nginx)   URL=ws://127.0.0.1:18060/socketcluster/; PROXY=$NGINX,$NGINX_WORKERS ;;
      haproxy) URL=ws://127.0.0.1:18061/socketcluster/; PROXY=$HAPROXY ;;
    esac
    for sc in $(echo "$SCENARIOS" | tr ',' ' '); do
      echo "== run $run/$RUNS: $p, $sc"
      if [ "$sc" = equal-js ]; then
        SCC_URL=$URL SCC_CLIENTS=1000 SCC_RATE=$EQUAL_RATE SCC_SECONDS=${DURATION%s} SCC_SERVER_PIDS="$STATE,$BROKER,$WPID" \
          SCC_PROXY_PIDS="$PROXY" taskset -c 1 timeout 300 node bench/proxy-load.mjs > "$OUT/$p-$run-$sc.json" \
          || echo "!! $p run $run $sc failed"
        cat "$OUT/$p-$run-$sc.json"; echo
        sleep 0.5
        continue
      fi
      args=(--scenario "$sc")
      if [ "$sc" = equal ]; then args=(--scenario fanout-rate --rate "$EQUAL_RATE"); fi
      taskset -c 1 timeout 300 "$SCC" bench --url "$URL" --server-pid "$STATE,$BROKER,$WPID" --proxy-pid "$PROXY" \
        "${args[@]}" --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/$p-$run-$sc.json" || echo "!! $p run $run $sc failed"
      sleep 0.5
    done
  done
done
go run ./bench/report -proxies -in "$OUT" -out docs/benchmarks.md -equal-rate "$EQUAL_RATE" \
  -command "RUNS=$RUNS DURATION=$DURATION bash bench/proxies.sh"
echo "results in $OUT; the proxy section of docs/benchmarks.md written"
