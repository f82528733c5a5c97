#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian's chromium (for
# the demo page test) and the npm packages of test/interop (from its
# package-lock.json). A second run finds everything in place and returns at
# once.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=""
command -v chromium >/dev/null 2>&1 || need_apt="$need_apt chromium"
command -v node >/dev/null 2>&1 || need_apt="$need_apt nodejs npm"
if [ -n "$need_apt" ]; then
  echo "deps: installing Debian packages:$need_apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need_apt >/dev/null
fi

# npm ci only when package-lock.json changed since the last install.
lock_sum=$(sha256sum test/interop/package-lock.json | cut -d' ' -f1)
stamp=test/interop/node_modules/.scc-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "deps: npm ci in test/interop"
  (cd test/interop && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$stamp"
fi
