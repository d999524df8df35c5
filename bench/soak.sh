#!/usr/bin/env bash
# The soak suite (bench/soak.py; docs/reliability.md): 100 SIGKILLs of the
# gateway while 20 CoAP and 5 BLE locks stream, 10 broker kills, a 24-hour
# broker outage on a sped-up clock, the journal filled twice. About 15
# minutes on 2 cores. Not part of tools/test.sh.
#   bench/soak.sh                       everything
#   SOAK_KILLS=10 SOAK_FILLS=1 bench/soak.sh   a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default
LOCKBRIDGE_BUILD="$PWD/build" exec /usr/bin/python3 -W ignore bench/soak.py
