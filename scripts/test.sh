#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/deps.sh), checks
# formatting and vet, then runs every Go test with the race detector,
# including the interop tests that drive the worker with the official
# SocketCluster JavaScript clients and the demo page in headless Chromium,
# and the seed corpora of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/interop/node_modules/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 -timeout 15m "$@" ./...
