"""lockbridge cold-start benchmark (issue 15): prints figures, asserts nothing.

The gateway's state holds 1,000,000 credentials (a snapshot sent by a cloud
client) and 1,000,000 undelivered events (journalled by 50 simulated locks
while the broker is down); the gateway is then stopped and started again,
three times, with the broker still down. Printed: the time from starting the
process to its `lockbridge: ready` log line (median and each run), and its
anonymous RSS just after READY. A start with an empty state, in the same run,
is the baseline.

Run with bench/run.sh --coldstart (or /usr/bin/python3 bench/coldstart.py).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import Bench, log, log_time, machine  # noqa: E402
from harness import Cloud, snapshot_chunks, wait_for  # noqa: E402


def ready_after(bench, spawned_unix):
    """Seconds from `spawned_unix` to the newest READY line's timestamp."""
    ready = None
    with open(bench.gateway_log, errors="replace") as f:
        for line in f:
            if "lockbridge: ready" in line:
                ready = line
    return log_time(ready) - spawned_unix


def restart(bench, runs):
    out = []
    for _ in range(runs):
        bench.stop_gateway()
        spawned = time.time()
        bench.start_gateway(max_events_per_message=100, keep_state=True)
        ready_s, anon = ready_after(bench, spawned), bench.gateway_anon_kib()
        time.sleep(3)  # settled: the CoAP loop, the uplink's first tries, the first status
        out.append({"ready_s": ready_s, "anon_kib": anon, "anon_kib_3s": bench.gateway_anon_kib()})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--credentials", type=int, default=1000000)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 of each")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.credentials, args.events = 100000, 100000
    locks = 50
    bench = Bench(argparse.Namespace(locks=locks))
    figures = {"machine": machine(), "args": vars(args)}
    try:
        bench.broker.start()
        bench.start_gateway(max_events_per_message=100)
        log("baseline: restarts with an empty state")
        figures["empty"] = restart(bench, args.runs)
        wait_for(lambda: bench.gateway_log_count("uplink: receiving commands") > 0, 30,
                 "lockbridge to subscribe to its commands")
        cloud = Cloud(bench.broker, bench.pki.ca, bench.cloud_cert, bench.cloud_key,
                      "lockbridge/v1/site-1/gw-1/")
        log(f"snapshot: {args.credentials:,} credentials")
        creds = [{"cred": f"B{i:08d}", "subject": f"sub-{i % 50000}", "doors": ["door-01"]}
                 for i in range(args.credentials)]
        chunks = list(snapshot_chunks("cold", 1, creds, per_chunk=10000))
        del creds
        for doc in chunks:
            cloud.send("credentials/snapshot", json.dumps(doc))
        cloud.wait_result(chunks[-1]["id"], status="ok", timeout=900)
        cloud.close()
        log(f"backlog: {args.events:,} events with the broker down")
        bench.broker.stop()
        sim = bench.locksim(args.events // locks, rate=0, batch=64, duration=900)
        report = json.loads(sim.output(timeout=1000))
        figures["backlog_complete"] = report["complete"]
        state = os.path.join(bench.dir, "state", "data.mdb")
        figures["data_mdb_bytes"] = os.path.getsize(state)
        log("restarts with the full state, the broker still down")
        figures["full"] = restart(bench, args.runs)
    finally:
        bench.close()

    m = figures["machine"]
    print(f"lockbridge cold-start benchmark ({m['cpu']}, {m['cores']} cores, Linux {m['kernel']})")
    for name, label in (("empty", "empty state"),
                        ("full", f"{args.credentials:,} credentials + {args.events:,} events waiting "
                                 f"(data.mdb {figures['data_mdb_bytes'] / 2**20:.0f} MiB)")):
        runs = figures[name]
        med = statistics.median(r["ready_s"] for r in runs)
        print(f"  {label}: start to READY median {med * 1000:.0f} ms "
              f"(runs: {', '.join(str(round(r['ready_s'] * 1000)) for r in runs)} ms; "
              f"target < 300 ms with the full state); anonymous RSS after READY "
              f"{statistics.median(r['anon_kib'] for r in runs) / 1024:.1f} MiB, 3 s later "
              f"{statistics.median(r['anon_kib_3s'] for r in runs) / 1024:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
