#!/usr/bin/env bash
# The demo site: a local mosquitto with TLS and client certificates made on the
# spot, lockbridge on the demo config, and simulated locks sending events over
# CoAP/DTLS and over BLE (BLE locks through the test suite's BlueZ mock on a
# private D-Bus: no radio needed). What reaches the cloud side is printed live.
#   tools/demo.sh                    runs until Ctrl-C (30 s when not on a terminal)
#   DEMO_DURATION=120 tools/demo.sh  runs for 120 s
#   DEMO_LOCKS=10 DEMO_RATE=2 ...    10 CoAP locks, 2 events/s each
#   DEMO_BLE_LOCKS=0 ...             no BLE locks (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash tools/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default

locks=${DEMO_LOCKS:-5}
ble_locks=${DEMO_BLE_LOCKS:-2}
rate=${DEMO_RATE:-1}
mqtt_port=${DEMO_MQTT_PORT:-18883}
coap_port=${DEMO_COAP_PORT:-15684}
if [ -t 0 ]; then duration=${DEMO_DURATION:-3600}; else duration=${DEMO_DURATION:-30}; fi

demo="$root/.demo"
rm -rf "$demo"
mkdir -p "$demo"/{pki,secrets,locks,state}
cd "$demo"
umask 077

echo "== making a CA, a broker certificate and client certificates (openssl)"
cert() { # name cn ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "pki/$1.key" \
    -out "pki/$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "pki/$1.ext"
  openssl x509 -req -in "pki/$1.csr" -CA pki/ca.pem -CAkey pki/ca.key -CAcreateserial \
    -out "pki/$1.pem" -days 7 -extfile "pki/$1.ext" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout pki/ca.key \
  -out pki/ca.pem -days 7 -subj "/CN=lockbridge demo CA" 2>/dev/null
cert broker localhost "subjectAltName=IP:127.0.0.1,DNS:localhost"
cert gateway gw-demo "extendedKeyUsage=clientAuth"
cert cloud demo-cloud "extendedKeyUsage=clientAuth"
chmod 644 pki/*.pem

echo "== generating the key-encryption and lookup keys and one random PSK per lock"
(umask 077 && openssl rand -hex 32 > secrets/kek.key)
openssl rand -hex 32 > secrets/lookup.key
lock_tables=""
for i in $(seq 1 "$locks"); do
  id=$(printf 'lock-%02d' "$i")
  openssl rand -hex 16 > "locks/$id.psk"
  lock_tables+=$'\n'"[[locks]]"$'\n'"id = \"$id\""$'\n'"psk_file = \"locks/$id.psk\""$'\n'
done
ble_specs="["
for i in $(seq 1 "$ble_locks"); do
  id=$(printf 'ble-%02d' "$i")
  address=$(printf 'C0:FF:EE:00:00:%02X' "$i")
  openssl rand -hex 16 > "locks/$id.psk"
  lock_tables+=$'\n'"[[locks]]"$'\n'"id = \"$id\""$'\n'"psk_file = \"locks/$id.psk\""$'\n'
  lock_tables+="transport = \"ble\""$'\n'"ble_address = \"$address\""$'\n'
  [ "$i" -gt 1 ] && ble_specs+=","
  ble_specs+="{\"address\":\"$address\",\"id\":\"$id\",\"psk\":\"$(cat "locks/$id.psk")\",\"rate\":$rate}"
done
ble_specs+="]"
python3 - "$root/config/demo.toml" lockbridge.toml "$coap_port" "$mqtt_port" "$lock_tables" <<'PY'
import sys
src, dst, coap, mqtt, locks = sys.argv[1:]
text = open(src).read().replace("@COAP_PORT@", coap).replace("@MQTT_PORT@", mqtt).replace("@LOCKS@", locks)
open(dst, "w").write(text)
PY

cat > mosquitto.conf <<CONF
per_listener_settings false
user root
persistence false
log_dest file $demo/mosquitto.log
allow_anonymous false
listener $mqtt_port 127.0.0.1
cafile $demo/pki/ca.pem
certfile $demo/pki/broker.pem
keyfile $demo/pki/broker.key
require_certificate true
use_identity_as_username true
CONF

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "== demo files (config, keys, logs, LMDB state) are in $demo"
}
trap cleanup INT TERM EXIT

build="$root/build"
"$build/app/lockbridge" check-config lockbridge.toml
mosquitto -c mosquitto.conf & pids+=($!)
sleep 0.5
echo "== cloud side: every message lockbridge publishes, as it arrives"
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" --cafile pki/ca.pem --cert pki/cloud.pem \
  --key pki/cloud.key -t 'lockbridge/v1/demo-site/gw-demo/#' -v -q 1 & pids+=($!)
if [ "$ble_locks" -gt 0 ]; then
  echo "== a private D-Bus with a BlueZ mock and $ble_locks BLE locks ($rate events/s each)"
  dbus-daemon --session --nofork --print-address=1 --address="unix:path=$demo/system_bus_socket" \
    > bus.address 2> dbus-daemon.log & pids+=($!)
  for _ in $(seq 1 50); do [ -s bus.address ] && break; sleep 0.1; done
  export DBUS_SYSTEM_BUS_ADDRESS=$(head -1 bus.address)
  /usr/bin/python3 -m dbusmock --template "$root/tests/integration/ble/lockbridge_bluez.py" \
    -l bluez-mock-calls.log -p "{\"adapter\":\"hci0\",\"locks\":$ble_specs}" \
    2> bluez-mock.log & pids+=($!)
  /usr/bin/python3 - <<'PY'
import json, time, dbus, os
bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
for _ in range(100):
    try:
        mock = dbus.Interface(bus.get_object("org.bluez", "/"), "org.lockbridge.MockLocks")
        if json.loads(str(mock.Stats()))["ready"]:
            break
    except dbus.exceptions.DBusException:
        pass
    time.sleep(0.1)
PY
fi
"$build/app/lockbridge" run --config lockbridge.toml 2> lockbridge.log & pids+=($!)
for _ in $(seq 1 50); do grep -q "lockbridge: ready" lockbridge.log 2>/dev/null && break; sleep 0.1; done
echo "== $locks simulated locks, $rate events/s each, for ${duration} s (lockbridge log: $demo/lockbridge.log)"
"$build/tools/lockbridge-locksim" --gateway "127.0.0.1:$coap_port" --psk-dir locks \
  --locks "$locks" --rate "$rate" --events $((rate * duration)) --duration "$duration" \
  --batch 5 > locksim-report.json 2> >(sed -u 's/^/  /' >&2) || true
echo "== lock simulator report: $(cat locksim-report.json | head -c 400)"
if [ "$ble_locks" -gt 0 ]; then
  echo "== BLE figures (lockbridge status): $("$build/app/lockbridge" status --config lockbridge.toml --json \
    | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin).get("ble")))')"
fi
