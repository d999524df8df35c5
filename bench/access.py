"""lockbridge access-decision benchmark (issue 3): prints figures, asserts nothing.

In one run, on 127.0.0.1 with real processes:
  1. a snapshot of N credentials (default 1,000,000) sent by a cloud client
     (python3-paho-mqtt) in chunks of 10,000: time to apply, rate, LMDB size;
  2. baseline: access decisions over DTLS CoAP (10 simulated locks, 1,000/s in
     all) with nothing else going on: p50/p99 latency;
  3. the same while 50 other locks stream 5,000 events/s (one per request)
     through the same gateway: p50/p99 of both.

Run with bench/run.sh --access (or directly: /usr/bin/python3 bench/access.py).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import Bench, log, machine  # noqa: E402
from harness import LOCKSIM, Cloud, snapshot_chunks  # noqa: E402


def access_sim(bench, locks, first, rate, seconds, creds):
    per_lock = rate / locks
    events = max(1, int(per_lock * seconds))
    cmd = [LOCKSIM, "--gateway", f"127.0.0.1:{bench.coap_port}", "--psk-dir", bench.psk_dir,
           "--locks", str(locks), "--first-lock", str(first), "--events", str(events),
           "--rate", str(per_lock), "--duration", str(seconds * 4 + 30), "--timeout-ms", "3000",
           "--access-creds", str(creds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def event_sim(bench, locks, rate, seconds):
    per_lock = rate / locks
    events = max(1, int(per_lock * seconds))
    cmd = [LOCKSIM, "--gateway", f"127.0.0.1:{bench.coap_port}", "--psk-dir", bench.psk_dir,
           "--locks", str(locks), "--events", str(events), "--rate", str(per_lock),
           "--batch", "1", "--duration", str(seconds * 4 + 30), "--timeout-ms", "3000"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def report_of(proc, timeout):
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--credentials", type=int, default=1000000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="100,000 credentials, 5 s per phase")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.credentials, args.seconds = 100000, 5
    event_locks, access_locks = 50, 10
    bench = Bench(argparse.Namespace(locks=event_locks + access_locks))
    figures = {"machine": machine(), "args": vars(args)}
    try:
        bench.broker.start()
        bench.start_gateway(max_events_per_message=1)
        from harness import wait_for
        wait_for(lambda: bench.gateway_log_count("uplink: receiving commands") > 0, 30,
                 "lockbridge to subscribe to its commands")
        cloud = Cloud(bench.broker, bench.pki.ca, bench.cloud_cert, bench.cloud_key,
                      "lockbridge/v1/site-1/gw-1/")

        log(f"snapshot: {args.credentials:,} credentials in chunks of 10,000")
        creds = [{"cred": f"B{i:08d}", "subject": f"sub-{i % 50000}", "doors": ["door-01"]}
                 for i in range(args.credentials)]
        chunks = list(snapshot_chunks("bench", 1, creds, per_chunk=10000))
        del creds
        payloads = [json.dumps(c) for c in chunks]
        started = time.monotonic()
        for doc, payload in zip(chunks, payloads):
            cloud.send("credentials/snapshot", payload)
        result = cloud.wait_result(chunks[-1]["id"], status="ok", timeout=900)
        total_s = time.monotonic() - started
        applied_line = [l for l in open(bench.gateway_log, errors="replace")
                        if "snapshot bench applied" in l][-1]
        apply_s = float(applied_line.rsplit("(", 1)[1].split(" s)")[0])
        state = os.path.join(bench.dir, "state", "data.mdb")
        st = os.stat(state)
        figures["snapshot"] = {"credentials": args.credentials, "total_s": total_s,
                               "apply_s": apply_s, "rate_per_s": args.credentials / total_s,
                               "file_bytes": st.st_size, "disk_bytes": st.st_blocks * 512,
                               "version": result["version"]}
        cloud.close()

        log(f"baseline: 1,000 access decisions/s for {args.seconds} s, nothing else")
        acc = access_sim(bench, access_locks, event_locks + 1, 1000, args.seconds, args.credentials)
        figures["baseline"] = report_of(acc, args.seconds * 5 + 60)

        log(f"loaded: 1,000 access decisions/s with 5,000 events/s for {args.seconds} s")
        chk = bench.checker(int(5000 * args.seconds), "lockbridge/v1/site-1/gw-1/events",
                            timeout=args.seconds * 5 + 60)
        ev = event_sim(bench, event_locks, 5000, args.seconds)
        acc = access_sim(bench, access_locks, event_locks + 1, 1000, args.seconds, args.credentials)
        figures["loaded"] = report_of(acc, args.seconds * 5 + 60)
        figures["loaded_events"] = report_of(ev, args.seconds * 5 + 60)
        sub = json.loads(chk.output(timeout=args.seconds * 5 + 120))
        figures["loaded_events_delivered"] = sub["unique_events"]
    finally:
        bench.close()

    m, sn = figures["machine"], figures["snapshot"]
    base, loaded, lev = figures["baseline"], figures["loaded"], figures["loaded_events"]

    def ms(r, p):
        return r["latency_us"][p] / 1000

    print(f"lockbridge access-decision benchmark ({m['cpu']}, {m['cores']} cores, Linux {m['kernel']})")
    print(f"  snapshot      {sn['credentials']:,} credentials in {sn['total_s']:.1f} s from the first chunk "
          f"sent to the result ({sn['rate_per_s']:,.0f} credentials/s); the LMDB transaction itself "
          f"{sn['apply_s']:.2f} s; data.mdb {sn['file_bytes'] / 2**20:.0f} MiB "
          f"({sn['disk_bytes'] / 2**20:.0f} MiB on disk)")
    print(f"  baseline      1,000 decisions/s alone: {base['requests_acked']:,} answered "
          f"({base['access']['allowed']:,} allowed), p50 {ms(base, 'p50'):.2f} ms, "
          f"p99 {ms(base, 'p99'):.2f} ms, max {ms(base, 'max'):.2f} ms")
    ok = ms(loaded, "p99") < 1.0
    print(f"  loaded        1,000 decisions/s with 5,000 events/s: p50 {ms(loaded, 'p50'):.2f} ms, "
          f"p99 {ms(loaded, 'p99'):.2f} ms, max {ms(loaded, 'max'):.2f} ms "
          f"(target p99 < 1 ms: {'meets target' if ok else 'MISSES target'}); events meanwhile: "
          f"p50 {ms(lev, 'p50'):.2f} ms, p99 {ms(lev, 'p99'):.2f} ms, "
          f"{figures['loaded_events_delivered']:,} delivered")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
