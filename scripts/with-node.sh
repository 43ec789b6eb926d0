#!/usr/bin/env bash
# Runs a TypeScript entry point with the project's Node.js 24 (installed by scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
node="$root/.tools/node/bin/node"
if [ ! -x "$node" ]; then
  echo "hangar: Node.js 24 is not installed here; run scripts/setup.sh first" >&2
  exit 1
fi
exec "$node" --disable-warning=ExperimentalWarning "$@"
