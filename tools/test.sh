#!/usr/bin/env bash
# The whole test suite: installs what is missing from Debian, configures,
# builds and runs every test through ctest (unit and integration), then
# builds the libFuzzer targets (clang, ASan, UBSan) and runs each for 20 s.
#   tools/test.sh            everything
#   tools/test.sh -L unit    only the unit tests (any ctest arguments pass
#                            through; the fuzz targets run only without any)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
ctest --preset default "$@"
if [ $# -eq 0 ]; then
  cmake --preset fuzz -DLOCKBRIDGE_FUZZ_SECONDS=20 >/dev/null
  cmake --build --preset fuzz
  ctest --preset fuzz -j "$(nproc)"
fi
