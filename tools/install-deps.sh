#!/usr/bin/env bash
# Installs from Debian's archive whatever lockbridge needs to build, test and
# run its demo, and nothing that is already there. Run as root (or with sudo).
set -euo pipefail

packages=(
  # build (clang-tidy: the function-size check, tools/function_sizes.py)
  cmake ninja-build ccache g++ pkg-config dpkg-dev clang-tidy
  # the package: its checker and the manual pages' reader
  lintian man-db
  # libraries (DESIGN.md's stack table)
  libcaf-dev libpaho-mqttpp-dev libpaho-mqtt-dev libcoap3-dev liblmdb-dev libssl-dev
  doctest-dev nlohmann-json3-dev libtomlplusplus-dev libhowardhinnant-date-dev
  libspdlog-dev libfmt-dev libcli11-dev libsystemd-dev libmicrohttpd-dev
  # real peers and tools for tests and the demo
  mosquitto mosquitto-clients libcoap3-bin openssl lmdb-utils tzdata faketime systemd
  python3 python3-jsonschema python3-paho-mqtt python3-lmdb python3-prometheus-client
  # the lock simulator runs under valgrind where a crash must be caught (test_failures)
  valgrind util-linux
  # the BLE tests: a private D-Bus with a mock of BlueZ (no radio needed)
  dbus python3-dbus python3-dbusmock python3-gi
  # the fuzz targets: libFuzzer with ASan and UBSan from Debian's clang
  clang libclang-rt-dev
  # a real clustered broker speaking MQTT 3.1.1 (tests start their own nodes)
  rabbitmq-server
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "lockbridge: installing from Debian: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
# The packages' own services (mosquitto, rabbitmq-server) are not started:
# the tests and the demo start theirs, on ports of their own. policy-rc.d
# (Debian's switch for that) is set for the install only, if none is there.
guard=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod 755 /usr/sbin/policy-rc.d
  guard=1
fi
status=0
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
if [ "$guard" = 1 ]; then
  "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi
exit "$status"
