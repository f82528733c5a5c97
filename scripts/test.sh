#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/deps.sh,
# scripts/envtest.sh), checks formatting, vet and the generated code (gRPC,
# the operator's CRD, RBAC and deep copies), then runs every Go test with
# the race detector, including the operator's tests on a real API server
# (envtest), the interop tests that drive the worker with the official
# SocketCluster JavaScript clients and the demo page in headless Chromium,
# and the seed corpora of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
# The operator's tests run on envtest: a real etcd and kube-apiserver.
KUBEBUILDER_ASSETS=$(bash scripts/envtest.sh)
export KUBEBUILDER_ASSETS

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/interop/node_modules/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go vet -tags gorillaws ./services/worker # the build benchmarks compare against
go vet -tags e2e ./e2e                     # the end-to-end suite (e2e/test.sh runs it)
bash scripts/proto.sh --check
bash scripts/operator-gen.sh --check
go test -race -count=1 -timeout 15m "$@" ./...
# The cluster's correctness under full load (20,000 msgs/s) and the drains
# of 3,000 clients: the race detector slows the suite too much for that,
# so these run once more without it, one package at a time.
if [ $# -eq 0 ]; then
  go test -count=1 -timeout 5m -v \
    -run 'TestNoLossWhileBrokersChange|TestBrokerCrash|TestStateRestart|TestDrainWithLaggingWorker|TestMembersJoinWhenStateComesLate|TestLastBrokerReplaced' ./test/cluster/ \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|checked:|crash:|restart:|stable after|lagging worker:|joined and stable|acknowledged again|never reached|[0-9]+ (duplicates|lost)'
  # Worker drains under load: 3,000 Go clients in-process, and 3,000
  # official clients against the cluster as processes.
  go test -count=1 -timeout 5m -v -run 'TestWorkerDrainLosesNothing' ./test/gateway/ \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|drain:'
  go test -count=1 -timeout 5m -v -run 'TestDrainUnderLoad' ./test/interop/ \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|drain:'
  # Mass events: 20,000 sockets leaving at once, 5,000 arriving, a
  # million channels abandoned (200,000 here); 12,000 connections held and
  # fanned out to (scripts/connections.sh holds 100,000).
  go test -count=1 -timeout 8m -v -run 'TestMassDisconnect|TestConnectionFlood|TestAbandonedChannels|TestManyConnections' ./test/edge/ \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|storm:|flood:|abandoned:|connections: [^0-9]|connections: [0-9]+ subscribed'
  # The soak, 60 s (scripts/soak.sh runs 10 minutes).
  go test -count=1 -timeout 5m -v -run 'TestSoak' ./test/soak/ \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|soak:'
  # The fault suite, short version (scripts/faults.sh runs the long one).
  go test -count=1 -timeout 10m -v -run 'TestFaults' ./test/faults/ \
    | grep -E '^(=== RUN|--- |\s+--- |PASS|FAIL|ok)|faults_test.go'
fi
