#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/) for a long time: the test suite
# runs each for 20 s; this is the command for hours.
#   tools/fuzz.sh                 each target 3600 s, as many at once as cores
#   tools/fuzz.sh 600 -R config   600 s, only the targets matching "config"
# New inputs collect in build-fuzz/tests/fuzz/corpus/<target>/ (worth merging
# into tests/fuzz/corpus/ when they add coverage: <target> -merge=1 NEW OLD);
# a crash is saved in build-fuzz/tests/fuzz/artifacts/ and becomes a unit
# test with its bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
shift || true
bash tools/install-deps.sh
cmake --preset fuzz -DLOCKBRIDGE_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build --preset fuzz
ctest --preset fuzz -j "$(nproc)" "$@"
