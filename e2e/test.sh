#!/usr/bin/env bash
# e2e/test.sh: the whole end-to-end run, as CI does it: bring up the node
# (e2e/up.sh), run the suite (e2e/run.sh), and always tear the node down
# (e2e/down.sh). Needs root (or Docker and kind).
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'bash e2e/down.sh' EXIT
kubeconfig=$(bash e2e/up.sh)
KUBECONFIG=$kubeconfig bash e2e/run.sh "$@"
