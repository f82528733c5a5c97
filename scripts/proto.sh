#!/usr/bin/env bash
# Regenerates proto/sccv1 from proto/scc/v1/*.proto with pinned tools:
# Debian's protoc and the Go plugins at the versions below, installed into
# a cache outside the clone. `scripts/proto.sh --check` fails when the
# committed code differs from what regeneration produces.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
TOOLS=${SCC_TOOLS:-$HOME/.cache/scc-tools}/bin
mkdir -p "$TOOLS"
if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
  else sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null; fi
fi
if [ ! -x "$TOOLS/protoc-gen-go-$PROTOC_GEN_GO" ]; then
  d=$(mktemp -d); GOBIN=$d go install google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO
  mv "$d/protoc-gen-go" "$TOOLS/protoc-gen-go-$PROTOC_GEN_GO"; rm -rf "$d"
fi
if [ ! -x "$TOOLS/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC" ]; then
  d=$(mktemp -d); GOBIN=$d go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC
  mv "$d/protoc-gen-go-grpc" "$TOOLS/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC"; rm -rf "$d"
fi
out=proto/sccv1
if [ "${1:-}" = --check ]; then out=$(mktemp -d); fi
mkdir -p "$out"
protoc -I proto \
  --plugin=protoc-gen-go="$TOOLS/protoc-gen-go-$PROTOC_GEN_GO" \
  --plugin=protoc-gen-go-grpc="$TOOLS/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC" \
  --go_out="$out" --go_opt=paths=source_relative,Mscc/v1/cluster.proto=github.com/scc-k8s/scc/proto/sccv1 \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative,Mscc/v1/cluster.proto=github.com/scc-k8s/scc/proto/sccv1 \
  scc/v1/cluster.proto
# paths=source_relative writes into $out/scc/v1/; flatten.
mv "$out"/scc/v1/*.go "$out"/ && rm -rf "$out/scc"
if [ "${1:-}" = --check ]; then
  if ! diff -r "$out" proto/sccv1 >/dev/null; then
    echo "proto/sccv1 is stale: run scripts/proto.sh and commit the result"; diff -r "$out" proto/sccv1 | head -40; rm -rf "$out"; exit 1
  fi
  rm -rf "$out"; echo "proto: generated code is up to date"
fi
