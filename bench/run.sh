#!/usr/bin/env bash
# lockbridge's benchmarks (not part of ctest): installs what is missing,
# builds the release preset, then prints the figures of the codec
# micro-benchmark and of the end-to-end benchmark (bench/e2e.py).
#   bench/run.sh              full run (about 3 minutes on 2 cores)
#   bench/run.sh --quick      small counts, a smoke run
#   bench/run.sh --json F     also write the figures to F
#   bench/run.sh --access     the access-decision benchmark (bench/access.py) instead
#   bench/run.sh --ble        the BLE benchmark (bench/ble.py) instead
#   bench/run.sh --scale      the scale benchmark (bench/scale.py): 1,000 then 5,000 locks
#   bench/run.sh --coldstart  start to READY with 1,000,000 credentials and events (bench/coldstart.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
if [ "${1:-}" = "--ble" ]; then
  shift
  exec /usr/bin/python3 bench/ble.py "$@"
fi
if [ "${1:-}" = "--coldstart" ]; then
  shift
  exec /usr/bin/python3 bench/coldstart.py "$@"
fi
if [ "${1:-}" = "--scale" ]; then
  shift
  exec /usr/bin/python3 bench/scale.py "$@"
fi
if [ "${1:-}" = "--access" ]; then
  shift
  exec /usr/bin/python3 bench/access.py "$@"
fi
build/bench/lockbridge-codec-bench
echo
exec /usr/bin/python3 bench/e2e.py "$@"
