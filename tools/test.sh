#!/usr/bin/env bash
# The whole test suite: installs what is missing from Debian, configures,
# builds and runs every test through ctest (unit and integration).
#   tools/test.sh            everything
#   tools/test.sh -L unit    only the unit tests (any ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
ctest --preset default "$@"
