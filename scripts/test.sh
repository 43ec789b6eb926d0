#!/usr/bin/env bash
# The whole test suite: set up (idempotent), type-check, then the end-to-end tests with real crun,
# overlay mounts and a local registry. Tests run one file at a time because they share the host's
# mount table and cgroups; each file cleans up what it made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.tools/node/bin:$PATH"
echo "==> type-checking"
node node_modules/typescript/bin/tsc --noEmit -p .
echo "==> running tests"
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(find src test -name '*.test.ts' | sort)
# The Node test image is built once per run and shared by the files that use it, and so is Node's
# compile cache (the test files, daemons and CLI calls all load the same sources); not kept after.
export NODE_COMPILE_CACHE="${TMPDIR:-/tmp}/hangar-test-compile-cache"
trap 'rm -rf "${TMPDIR:-/tmp}"/hangar-test-node-image-* "$NODE_COMPILE_CACHE"' EXIT
node --disable-warning=ExperimentalWarning --test --test-concurrency=1 --test-timeout=300000 "${files[@]}"
