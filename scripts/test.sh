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
# The Node test image is built once per run and shared by the files that use it; not kept after.
trap 'rm -rf "${TMPDIR:-/tmp}"/hangar-test-node-image-*' EXIT
node --disable-warning=ExperimentalWarning --test --test-concurrency=1 --test-timeout=300000 "${files[@]}"
