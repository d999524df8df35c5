"""lockbridge BLE benchmark (issue 7): prints figures, asserts nothing.

20 BLE locks, each with E events (default 500, batches of 20), served through
lockbridge's real BLE transport over a private D-Bus by the BlueZ mock of the
tests (tests/integration/ble/lockbridge_bluez.py, python3-dbusmock), to a real
mosquitto and the cloud-side checker. The same run is made with the adapter
limited to 1, 2 and 4 simultaneous connections; 1 is the baseline.

Figures: events/s end to end, sessions (connect, hello, state, exchange,
release) per second, the gateway's CPU per event. The mock lock side is
Python: its own CPU is printed too, as it is the ceiling here, not the radio.

Run with bench/run.sh --ble (or /usr/bin/python3 bench/ble.py [--quick]).
"""

import argparse
import json
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import Bench, log, machine  # noqa: E402
from harness import BlueZ  # noqa: E402


def run(bench, locks, events, limit):
    specs = []
    toml = f"""
[ble]
max_connections = {limit}
idle_release_ms = 200
poll_interval_s = 150
"""
    for i in range(1, locks + 1):
        lock, address = f"ble-{i:02d}", f"C0:FF:EE:00:01:{i:02X}"
        psk = os.path.join(bench.psk_dir, f"{lock}.psk")
        if not os.path.exists(psk):
            bench.secret(psk, secrets.token_hex(16))
        with open(psk) as f:
            key = f.read().strip()
        specs.append({"address": address, "id": lock, "psk": key, "mtu": 185,
                      "events": events, "batch": 20})
        toml += (f'\n[[locks]]\nid = "{lock}"\npsk_file = "{psk}"\ntransport = "ble"\n'
                 f'ble_address = "{address}"\n')
    busdir = os.path.join(bench.dir, f"bus-{limit}")
    os.makedirs(busdir, exist_ok=True)
    bluez = BlueZ(busdir, [dict(s, events=0) for s in specs])
    try:
        total = locks * events
        chk = bench.checker(total, "lockbridge/v1/site-1/gw-1/events", timeout=600,
                            session=f"ble-{limit}")
        bench.start_gateway(100, locks_toml=toml,
                            env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bluez.address))
        time.sleep(1.0)  # the first polls (nothing to say yet) are over
        cpu0, mock0, t0 = bench.gateway_cpu_s(), bench.cpu_s(bluez.mock.proc.pid), time.monotonic()
        sessions0 = sum(s["connections"] for s in bluez.stats()["locks"].values())
        for s in specs:
            bluez.control.AddEvents(s["address"], events)
        report = json.loads(chk.output(timeout=900))
        elapsed = time.monotonic() - t0
        cpu, mock = bench.gateway_cpu_s() - cpu0, bench.cpu_s(bluez.mock.proc.pid) - mock0
        stats = bluez.stats()
        sessions = sum(s["connections"] for s in stats["locks"].values()) - sessions0
        bench.stop_gateway()
        return {"limit": limit, "events": report.get("unique_events", 0), "elapsed_s": elapsed,
                "events_per_s": report.get("unique_events", 0) / elapsed,
                "sessions": sessions, "sessions_per_s": sessions / elapsed,
                "gateway_cpu_us_per_event": 1e6 * cpu / max(1, total),
                "mock_cpu_share": mock / elapsed, "peak_connected": stats["peak_connected"],
                "duplicates": report.get("duplicates"), "gaps": report.get("gaps")}
    finally:
        bench.stop_gateway()
        bluez.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--locks", type=int, default=20)
    ap.add_argument("--events", type=int, default=500, help="per lock")
    ap.add_argument("--quick", action="store_true", help="100 events per lock")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.events = 100
    bench = Bench(argparse.Namespace(locks=0))
    bench.broker.start()
    rows = []
    try:
        for limit in (1, 2, 4):
            log(f"{args.locks} BLE locks x {args.events} events, adapter limit {limit}")
            rows.append(run(bench, args.locks, args.events, limit))
    finally:
        bench.close()
    base = rows[0]["events_per_s"]
    print(f"\nlockbridge BLE benchmark ({machine()})")
    print(f"{args.locks} locks x {args.events} events, batches of 20, ATT MTU 185, BlueZ mock (Python)")
    print(f"{'limit':>5} {'events/s':>9} {'x':>5} {'sessions/s':>10} {'gw CPU us/ev':>12} "
          f"{'mock CPU':>8} {'peak':>4} {'dup':>3} {'gaps':>4}")
    for r in rows:
        print(f"{r['limit']:>5} {r['events_per_s']:>9.0f} {r['events_per_s'] / base:>5.2f} "
              f"{r['sessions_per_s']:>10.1f} {r['gateway_cpu_us_per_event']:>12.0f} "
              f"{r['mock_cpu_share']:>7.0%} {r['peak_connected']:>4} {r['duplicates']:>3} {r['gaps']:>4}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
