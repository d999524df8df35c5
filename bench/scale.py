"""lockbridge scale benchmark (issue 15): prints figures, asserts only that
every event was delivered.

For each size (default 1,000 locks, then 5,000), on 127.0.0.1 with real
processes (mosquitto, lockbridge, lockbridge-locksim, lockbridge-checker) and
one lock simulator process playing every lock:
  idle    the gateway with no lock: CPU (% of a core), anonymous RSS;
  storm   every lock connects at once (a site's power coming back) and sends
          its first event: handshakes/s, time until every lock is served,
          acknowledgement p50/p99/max, RSS after;
  steady  each lock sends one event per 10 s (ten times a busy site's peak),
          and 20 more locks ask one access query per lock per minute in all
          (N/60 queries/s): ack and access p50/p99, gateway CPU per event,
          journal commits/s;
  quiet   every session kept, nothing sent: idle CPU (% of a core), RSS in
          all and per lock;
  burst   every lock sends 20 events at once: time until all are
          acknowledged, ack p50/p99/max, commits/s.
The uplink's retained queue (status `broker.retained_waiting`, its peak) and
the publishes Paho refused (log lines; must be 0) are counted throughout.

Run with bench/run.sh --scale (or /usr/bin/python3 bench/scale.py --sizes 1000).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import Bench, log, machine  # noqa: E402
from harness import CHECKER, LOCKBRIDGE, LOCKSIM, Cloud, snapshot_chunks, wait_for  # noqa: E402

ACCESS_LOCKS = 20
# Locks already served that ask 100 access decisions a second in all from 3 s
# before the storm, for 15 s: what a storm costs the locks it does not concern.
PROBE_LOCKS, PROBE_RATE, PROBE_SECONDS = 10, 100, 15
CREDENTIALS = 10000


class Sampler(threading.Thread):
    """Every half second: the gateway's CPU seconds and anonymous RSS; every
    two seconds its local status (lockbridge status --json)."""

    def __init__(self, bench):
        super().__init__(daemon=True)
        self.bench = bench
        self.samples = []   # (t, cpu_s, anon_kib)
        self.statuses = []  # (t, doc)
        self.stop = threading.Event()

    def run(self):
        last_status = 0.0
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.samples.append((t, self.bench.gateway_cpu_s(), self.bench.gateway_anon_kib()))
            except OSError:
                pass
            if t - last_status >= 2:
                last_status = t
                out = subprocess.run([LOCKBRIDGE, "status", "--config", self.bench.config, "--json"],
                                     capture_output=True, text=True, timeout=30)
                if out.returncode == 0:
                    try:
                        self.statuses.append((t, json.loads(out.stdout)))
                    except json.JSONDecodeError:
                        pass
            self.stop.wait(0.5)

    def at(self, t):
        """The sample nearest to t."""
        return min(self.samples, key=lambda s: abs(s[0] - t))

    def cpu_between(self, a, b):
        """CPU seconds and the span they were measured over: from the last
        sample at or before a to the first at or after b (the window is
        widened, never narrowed, when a status query delayed the samples)."""
        before = [s for s in self.samples if s[0] <= a] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= b] or self.samples[-1:]
        sa, sb = before[-1], after[0]
        return sb[1] - sa[1], max(sb[0] - sa[0], 1e-9)

    def status_at(self, t):
        return min(self.statuses, key=lambda s: abs(s[0] - t))[1]

    def peak_retained_waiting(self):
        return max((d.get("broker", {}).get("retained_waiting", 0) for _, d in self.statuses),
                   default=0)


def percentiles(values):
    if not values:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)
    pick = lambda p: v[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
    return {"n": len(v), "p50": pick(0.5), "p99": pick(0.99), "max": v[-1]}


def read_latencies(path):
    out = []
    with open(path) as f:
        for line in f:
            sent, lat = line.split()
            out.append((float(sent), float(lat)))
    return out


def run_size(n, args):
    # A storm of 5,000 handshakes lasts about a minute here: the steady
    # phase is lengthened with the size so that some of it comes after.
    steady_s = max(args.steady_seconds, n // 40 // 10 * 10)
    quiet_s, burst = args.quiet_seconds, 20
    regular = max(1, steady_s // 10)  # the last lock's last event near steady_s (--spread)
    bench = Bench(argparse.Namespace(locks=n + ACCESS_LOCKS + PROBE_LOCKS))
    fig = {"locks": n}
    try:
        bench.broker.start()
        bench.start_gateway(max_events_per_message=100,
                            coap_extra=f"max_sessions = {n + ACCESS_LOCKS + PROBE_LOCKS + 10}")
        wait_for(lambda: bench.gateway_log_count("uplink: receiving commands") > 0, 30,
                 "lockbridge to subscribe to its commands")
        cloud = Cloud(bench.broker, bench.pki.ca, bench.cloud_cert, bench.cloud_key,
                      "lockbridge/v1/site-1/gw-1/")
        creds = [{"cred": f"B{i:08d}", "subject": f"sub-{i}", "doors": ["door-01"]}
                 for i in range(CREDENTIALS)]
        chunks = list(snapshot_chunks("scale", 1, creds, per_chunk=10000))
        for doc in chunks:
            cloud.send("credentials/snapshot", json.dumps(doc))
        cloud.wait_result(chunks[-1]["id"], status="ok", timeout=300)
        cloud.close()

        sampler = Sampler(bench)
        sampler.start()
        log(f"{n} locks: idle gateway for 10 s")
        idle_from = time.monotonic()
        time.sleep(10)
        cpu, span = sampler.cpu_between(idle_from + 0.5, time.monotonic())
        fig["idle"] = {"cpu_pct": cpu / span * 100, "anon_kib": sampler.samples[-1][2]}

        total = n * (regular + burst)
        # The access locks connect first and ask throughout the storm and the
        # steady phase: their answers during the storm show what a storm
        # costs the locks already served.
        access_lead = 3
        access_rate = n / 60
        per_lock = access_rate / ACCESS_LOCKS
        access_seconds = access_lead + steady_s - 5
        access_each = max(1, int(per_lock * access_seconds))
        probe_each = PROBE_RATE * PROBE_SECONDS // PROBE_LOCKS
        chk = bench.checker(total + ACCESS_LOCKS * access_each + PROBE_LOCKS * probe_each,
                            "lockbridge/v1/site-1/gw-1/events",
                            timeout=steady_s + quiet_s + 600)
        lat_file = os.path.join(bench.dir, "latency.txt")
        acc_lat_file = os.path.join(bench.dir, "access-latency.txt")
        probe_lat_file = os.path.join(bench.dir, "probe-latency.txt")
        acc_t0 = time.monotonic()
        probe = subprocess.Popen(
            [LOCKSIM, "--gateway", f"127.0.0.1:{bench.coap_port}", "--psk-dir", bench.psk_dir,
             "--locks", str(PROBE_LOCKS), "--first-lock", str(n + ACCESS_LOCKS + 1),
             "--events", str(probe_each), "--rate", str(PROBE_RATE / PROBE_LOCKS),
             "--duration", str(PROBE_SECONDS * 4 + 30), "--timeout-ms", "3000",
             "--access-creds", str(CREDENTIALS), "--spread", "--latency-file", probe_lat_file],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        acc = subprocess.Popen(
            [LOCKSIM, "--gateway", f"127.0.0.1:{bench.coap_port}", "--psk-dir", bench.psk_dir,
             "--locks", str(ACCESS_LOCKS), "--first-lock", str(n + 1),
             "--events", str(access_each), "--rate", str(per_lock),
             "--duration", str(access_seconds * 3 + 30), "--timeout-ms", "3000",
             "--access-creds", str(CREDENTIALS), "--spread", "--latency-file", acc_lat_file],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(access_lead)
        log(f"{n} locks: storm, then {steady_s} s steady, {quiet_s} s quiet, a burst of {burst}")
        t0 = time.monotonic()
        sim = subprocess.Popen(
            [LOCKSIM, "--gateway", f"127.0.0.1:{bench.coap_port}", "--psk-dir", bench.psk_dir,
             "--locks", str(n), "--events", str(regular), "--rate", "0.1", "--batch", "10",
             "--burst-at", str(steady_s + quiet_s), "--burst", str(burst), "--quiet-states", "--spread",
             "--latency-file", lat_file, "--timeout-ms", "20000", "--max-backoff-ms", "500",
             "--duration", str(steady_s + quiet_s + 300)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        acc_out, _ = acc.communicate(timeout=access_seconds * 4 + 60)
        probe.communicate(timeout=PROBE_SECONDS * 4 + 60)
        sim_out, _ = sim.communicate(timeout=steady_s + quiet_s + 400)
        t_end = time.monotonic()
        report, acc_report = json.loads(sim_out), json.loads(acc_out)
        sub = json.loads(chk.output(timeout=600))
        time.sleep(3)  # a last status sample
        sampler.stop.set()
        sampler.join()

        lat = read_latencies(lat_file)
        # the access simulator's clock started access_lead s (and a spawn) before t0
        acc_lat = [(sent - (t0 - acc_t0), us) for sent, us in read_latencies(acc_lat_file)]
        probe_lat = [(sent - (t0 - acc_t0), us) for sent, us in read_latencies(probe_lat_file)]
        served = report["all_served_s"]
        # (after the probe locks, whose decisions would count as events)
        steady_a, steady_b = max(served + 2, PROBE_SECONDS - access_lead + 1), steady_s
        quiet_a, quiet_b = steady_s + 5, steady_s + quiet_s - 2
        burst_a = steady_s + quiet_s
        burst_lat = [x for s, x in lat if s >= burst_a - 0.5]
        burst_done = max((s + x / 1e6 for s, x in lat if s >= burst_a - 0.5), default=burst_a)

        def status_delta(a, b, *keys):
            da, db = sampler.status_at(t0 + a), sampler.status_at(t0 + b)
            va, vb = da, db
            for k in keys:
                va, vb = va[k], vb[k]
            return vb - va

        storm_cpu, storm_span = sampler.cpu_between(t0, t0 + max(served, 0.5))
        fig["storm"] = {
            "served_s": served, "locks_served": report["locks_served"],
            "handshakes_per_s": n / max(served, 1e-9),
            "ack_us": percentiles([x for s, x in lat if s <= served]),
            "cpu_pct": storm_cpu / storm_span * 100,
            "anon_kib_after": sampler.at(t0 + served + 1)[2],
            # the locks already served, asking for access decisions meanwhile
            "access_us": percentiles([us for sent, us in probe_lat if 0 <= sent <= served]),
            "access_before_us": percentiles([us for sent, us in probe_lat if -access_lead + 1 <= sent < 0])}
        steady_ok = steady_b - steady_a >= 10  # else the storm outlasted the steady phase
        steady_cpu, steady_span = sampler.cpu_between(t0 + steady_a, t0 + max(steady_b, steady_a + 1))
        steady_events = status_delta(steady_a, max(steady_b, steady_a + 1), "events", "in")
        fig["steady"] = None if not steady_ok else {
            "ack_us": percentiles([x for s, x in lat if steady_a <= s <= steady_b]),
            "access_us": percentiles([us for sent, us in acc_lat if steady_a <= sent <= steady_b]),
            "access_answered": sum(1 for sent, _ in acc_lat if steady_a <= sent <= steady_b),
            "access_per_s": access_rate,
            "events": steady_events,
            "cpu_us_per_event": steady_cpu / max(steady_events, 1) * 1e6,
            "cpu_pct": steady_cpu / steady_span * 100,
            "commits_per_s": status_delta(steady_a, steady_b, "journal", "commits") / steady_span}
        quiet_cpu, quiet_span = sampler.cpu_between(t0 + quiet_a, t0 + quiet_b)
        quiet_anon = sampler.at(t0 + quiet_b)[2]
        fig["quiet"] = {"cpu_pct": quiet_cpu / quiet_span * 100, "anon_kib": quiet_anon,
                        "anon_kib_per_lock": (quiet_anon - fig["idle"]["anon_kib"]) / n,
                        "sessions": sampler.status_at(t0 + quiet_b).get("coap", {}).get("sessions")}
        # (CPU samples every 0.5 s, status every 2 s: the windows are widened.)
        burst_cpu, _ = sampler.cpu_between(t0 + burst_a - 0.5, t0 + burst_done + 1)
        fig["burst"] = {"events": n * burst, "done_s": burst_done - burst_a,
                        "per_s": n * burst / max(burst_done - burst_a, 1e-9),
                        "ack_us": percentiles(burst_lat),
                        "cpu_s": burst_cpu,
                        "commits": (sampler.statuses[-1][1]["journal"]["commits"]
                                    - sampler.status_at(t0 + burst_a - 1)["journal"]["commits"])}
        # Access decisions are journalled and delivered as events too.
        fig["steady_from_s"], fig["steady_to_s"] = steady_a, steady_b
        fig["delivered"] = sub["unique_events"]
        fig["expected"] = total + acc_report["requests_acked"] + PROBE_LOCKS * probe_each
        fig["complete"] = report["complete"]
        fig["sessions_opened"] = report["sessions_opened"]
        fig["retained_waiting_peak"] = sampler.peak_retained_waiting()
        refused_text = ("publish failed", "No more messages can be buffered", "not taken now")
        fig["publishes_refused_by_paho"] = sum(bench.gateway_log_count(t) for t in refused_text)
        last = sampler.statuses[-1][1] if sampler.statuses else {}
        fig["status"] = {k: last.get(k) for k in ("coap", "health", "broker", "journal")}
        fig["peak_anon_kib"] = max(s[2] for s in sampler.samples)
    finally:
        bench.close()
    return fig


def ms(us):
    return us / 1000


def show(f):
    n = f["locks"]
    st, sd, q, b = f["storm"], f["steady"], f["quiet"], f["burst"]

    def verdict(ok):
        return "meets target" if ok else "MISSES target"

    print(f"  {n:,} locks (one simulator process; events delivered {f['delivered']:,} of "
          f"{f['expected']:,}; every lock's simulator done: {f['complete']})")
    print(f"    idle      no lock: CPU {f['idle']['cpu_pct']:.2f} % of a core, anonymous RSS "
          f"{f['idle']['anon_kib'] / 1024:.1f} MiB")
    print(f"    storm     {st['locks_served']:,} locks served in {st['served_s']:.1f} s "
          f"({st['handshakes_per_s']:,.0f} handshakes/s); ack p50 {ms(st['ack_us']['p50']):.1f} ms, "
          f"p99 {ms(st['ack_us']['p99']):.0f} ms, max {ms(st['ack_us']['max']):.0f} ms; gateway CPU "
          f"{st['cpu_pct']:.0f} %; anonymous RSS after {st['anon_kib_after'] / 1024:.1f} MiB")
    print(f"              meanwhile {PROBE_LOCKS} locks already served, {PROBE_RATE} access decisions/s: p50 "
          f"{ms(st['access_us']['p50']):.2f} ms, p99 {ms(st['access_us']['p99']):.2f} ms, max "
          f"{ms(st['access_us']['max']):.1f} ms ({st['access_us']['n']} answered; before the storm "
          f"p50 {ms(st['access_before_us']['p50']):.2f} ms, p99 {ms(st['access_before_us']['p99']):.2f} ms)")
    if sd is None:
        print(f"    steady    none: less than 10 s of it after the storm ({st['served_s']:.0f} s) and the probe locks")
    else:
        print(f"    steady    {sd['events']:,} events at {n / 10:,.0f}/s from {f['steady_from_s']:.0f} s to "
          f"{f['steady_to_s']:.0f} s: ack p50 {ms(sd['ack_us']['p50']):.2f} ms, "
          f"p99 {ms(sd['ack_us']['p99']):.2f} ms, max {ms(sd['ack_us']['max']):.1f} ms "
          f"(target p99 < 5 ms: {verdict(sd['ack_us']['p99'] < 5000)}); access at {sd['access_per_s']:.0f}/s "
          f"({sd['access_answered']:,} answered): p50 {ms(sd['access_us']['p50']):.2f} ms, "
          f"p99 {ms(sd['access_us']['p99']):.2f} ms (target p99 < 1 ms: "
          f"{verdict(sd['access_us']['p99'] < 1000)}); gateway CPU {sd['cpu_us_per_event']:.0f} us/event, "
          f"{sd['cpu_pct']:.1f} % of a core; {sd['commits_per_s']:.1f} journal commits/s")
    print(f"    quiet     {q['sessions']} sessions kept, nothing sent: CPU {q['cpu_pct']:.2f} % of a core "
          f"(target < 2 %: {verdict(q['cpu_pct'] < 2)}); anonymous RSS {q['anon_kib'] / 1024:.1f} MiB, "
          f"{q['anon_kib_per_lock']:.1f} KiB per lock above idle")
    print(f"    burst     {b['events']:,} events at once: all acknowledged in {b['done_s']:.1f} s; ack p50 "
          f"{ms(b['ack_us']['p50']):.1f} ms, p99 {ms(b['ack_us']['p99']):.0f} ms, max "
          f"{ms(b['ack_us']['max']):.0f} ms ({b['per_s']:,.0f} events/s); {b['commits']:,} journal commits; "
          f"gateway CPU {b['cpu_s']:.2f} s")
    print(f"    uplink    retained messages queued at most {f['retained_waiting_peak']} (status "
          f"broker.retained_waiting); publishes refused by Paho: {f['publishes_refused_by_paho']} "
          f"(must be 0); peak anonymous RSS {f['peak_anon_kib'] / 1024:.1f} MiB")
    print(f"    status    coap {json.dumps(f['status']['coap'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000", help="lock counts (default 1000,5000)")
    ap.add_argument("--steady-seconds", type=int, default=60)
    ap.add_argument("--quiet-seconds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="200 locks, short phases (a smoke run)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.steady_seconds, args.quiet_seconds = "200", 30, 15
    for tool in [LOCKBRIDGE, LOCKSIM, CHECKER]:
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool} is missing; build first (bench/run.sh does)")
    figures = {"machine": machine(), "args": vars(args), "sizes": []}
    m = figures["machine"]
    print(f"lockbridge scale benchmark ({m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; "
          f"every party on this machine)", flush=True)
    for n in [int(x) for x in args.sizes.split(",")]:
        figures["sizes"].append(run_size(n, args))
        show(figures["sizes"][-1])
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
