"""The soak suite (issue 14): long runs of faults against the real daemon.
Not part of the test suite; run with bench/soak.sh (docs/reliability.md has
the latest figures).

  1. SIGKILLs of the gateway at random moments while 20 CoAP locks and 5 BLE
     locks (the BlueZ mock) stream events and a lock asks access queries;
  2. SIGKILLs of the broker;
  3. a 24-hour broker outage with the gateway's clock sped up by libfaketime
     (events at a realistic rate; retention not yet due);
  4. the journal filled to its bound, twice, then drained.

It prints: events acknowledged to the locks against events delivered to the
cloud (missing must be 0), duplicates, restart-to-READY p50/p99, peak RSS,
and any process that ended unexpectedly. Every loop is bounded in count and
time; every peer is on 127.0.0.1 or a private D-Bus.

Parameters (environment): SOAK_KILLS (100), SOAK_BROKER_KILLS (10),
SOAK_OUTAGE_HOURS (24), SOAK_SPEED (1000: fake seconds per real second),
SOAK_FILLS (2).
"""

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import (FAKETIME_LIB, LOCKBRIDGE, BlueZ, Process, Site,  # noqa: E402
                     wait_for)

KILLS = int(os.environ.get("SOAK_KILLS", "100"))
BROKER_KILLS = int(os.environ.get("SOAK_BROKER_KILLS", "10"))
OUTAGE_HOURS = float(os.environ.get("SOAK_OUTAGE_HOURS", "24"))
SPEED = int(os.environ.get("SOAK_SPEED", "1000"))
FILLS = int(os.environ.get("SOAK_FILLS", "2"))
COAP_LOCKS = 20
BLE_LOCKS = 5
PREFIX = "lockbridge/v1/site-1/gw-1/"


def address(i):
    return f"C0:FF:EE:00:01:{i:02X}"


def percentile(values, p):
    values = sorted(values)
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


class Soak(Site):
    locks = COAP_LOCKS + 1  # the last one asks access queries
    broker_persistence = True
    ble_section = ("max_connections = 2\nidle_release_ms = 300\nmax_hold_ms = 1500\n"
                   "poll_interval_s = 150\nfragment_timeout_ms = 800\nconnect_timeout_ms = 3000")

    def setUp(self):
        self.ble_locks = [(f"ble-{i}", address(i)) for i in range(1, BLE_LOCKS + 1)]
        super().setUp()
        self.extra_store = "journal_max_mb = 4"
        self.write_config()
        # The broker saves its state every second (not only at a clean stop),
        # so that a SIGKILLed broker comes back with the cloud's session: what
        # the gateway publishes before the checker reconnects is queued for it.
        self.broker.stop()
        with open(self.broker.conf, "a") as f:
            f.write("autosave_interval 1\n")
        self.broker.start()
        specs = [{"address": a, "id": l, "psk": self.psk_of(l), "mtu": 185, "events": 0,
                  "batch": 20} for l, a in self.ble_locks]
        self.bluez = BlueZ(self.dir, specs)
        self.crashes = []
        self.ready_times = []
        self.peak_rss_kb = 0

    # -- helpers --------------------------------------------------------------

    def sample_rss(self):
        if self.gateway is None or self.gateway.proc.poll() is not None:
            return
        try:
            with open(f"/proc/{self.gateway.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
        except FileNotFoundError:
            pass

    def timed_start(self, faketime=None):
        """Starts the gateway and returns seconds from exec to READY."""
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        started = time.monotonic()
        env = None
        if faketime:
            env = dict(os.environ, LD_PRELOAD=FAKETIME_LIB, FAKETIME=faketime,
                       DONT_FAKE_MONOTONIC="1")
        env = dict(env or os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bluez.address)
        self.gateway = Process([LOCKBRIDGE, "run", "--config", self.config], self.gateway_log,
                               env=env)
        wait_for(lambda: self.gateway_ready(), 60, "lockbridge to be ready", interval=0.005)
        return time.monotonic() - started

    def check_peers(self, *procs):
        for name, p in procs:
            if p is not None and p.proc.poll() is not None and p.proc.returncode not in (0, -15):
                self.crashes.append(f"{name} exited with {p.proc.returncode}")
        if self.bluez.mock.proc.poll() is not None:
            self.crashes.append("the BlueZ mock exited")

    def stop_gateway(self):
        self.sample_rss()
        self.gateway.proc.send_signal(signal.SIGTERM)
        rc = self.gateway.proc.wait(30)
        if rc != 0:
            self.crashes.append(f"lockbridge exited with {rc} on SIGTERM")

    def ble_acked(self):
        return {l: self.bluez.stats()["locks"][a]["acked"] for l, a in self.ble_locks}

    def add_ble_events(self, n):
        for _, a in self.ble_locks:
            self.bluez.control.AddEvents(a, n)

    # -- the run --------------------------------------------------------------

    def run_sim(self, events, rate, start_seq, duration, batch=5, extra=()):
        """A lock simulator for the 20 CoAP locks, continuing their seqs."""
        sim = self.locksim(locks=COAP_LOCKS, events=events, rate=rate, batch=batch,
                           duration=duration, extra=["--start-seq", str(start_seq), *extra])
        sim.start_seq = start_seq
        return sim

    def finish_sim(self, sim, timeout):
        out = sim.output(timeout=timeout)
        try:
            report = json.loads(out)
        except json.JSONDecodeError:
            self.crashes.append(f"a lock simulator ended with {sim.proc.returncode} and no report")
            return None
        if not report["complete"]:
            self.crashes.append(f"a lock simulator did not complete: {report.get('locks')}")
        for lock, l in report["locks"].items():
            self.acked[lock] = max(self.acked.get(lock, 0), l["acked_seq"])
            if l["acked_seq"] >= sim.start_seq:
                self.ranges.setdefault(lock, []).append((sim.start_seq, l["acked_seq"]))
        return report

    def test_soak(self):
        t0 = time.monotonic()
        self.acked = {}
        self.ranges = {}  # lock -> [(first, last)] of the seqs its locks saw acknowledged
        checker = self.start_checker(timeout=7200, session="soak", idle_exit=0,
                                     topics=[PREFIX + "events"], capture=False)
        self.ready_times.append(self.timed_start())
        rng = random.Random(14)
        seq = 1

        # 1. Kills of the gateway at random moments while the locks stream
        #    (5 events/s each) and a lock asks access queries.
        per_lock = int(5 * (KILLS * 1.6 + 10))
        sim = self.run_sim(per_lock, 5, seq, duration=KILLS * 10 + 300,
                           extra=["--acked-file", os.path.join(self.dir, "acked-phase1.json")])
        for i in range(KILLS):
            self.add_ble_events(5)
            if i % 5 == 0:
                self.locksim_access()
            time.sleep(rng.uniform(0.3, 2.5))
            self.sample_rss()
            self.gateway.kill(signal.SIGKILL)
            self.check_peers(("lock simulator", sim), ("checker", checker))
            self.ready_times.append(self.timed_start())
            if i % 10 == 9:
                print(f"soak: {i + 1} gateway kills, {time.monotonic() - t0:.0f} s", flush=True)
        if self.finish_sim(sim, timeout=KILLS * 10 + 300) is None:
            # The simulator died: what its locks had seen acknowledged is in its file.
            with open(os.path.join(self.dir, "acked-phase1.json")) as f:
                for lock, n in json.load(f).items():
                    self.acked[lock] = max(self.acked.get(lock, 0), n)
                    if n >= seq:
                        self.ranges.setdefault(lock, []).append((seq, n))
        seq += per_lock
        print(f"soak: gateway kills done ({KILLS})", flush=True)

        # 2. Kills of the broker. Each kill comes once the journal is drained;
        #    the locks then send while the broker is dead, and the backlog goes
        #    out when it is back. (mosquitto saves its persistence
        #    periodically: killed with messages it acknowledged but neither
        #    delivered nor saved, it loses them. That is outside the gateway's
        #    promise, at least once up to the broker's PUBACK, so no kill lands
        #    on messages of ours in the broker's hands.)
        for i in range(BROKER_KILLS):
            wait_for(lambda: self.journal_depth() == 0, 120, "the journal to drain")
            time.sleep(2.0)  # delivered to the checker, and the session saved
            self.broker.proc.send_signal(signal.SIGKILL)
            self.broker.proc.wait(10)
            sim = self.run_sim(20, 0, seq, duration=120)
            self.add_ble_events(4)
            self.finish_sim(sim, timeout=150)
            seq += 20
            self.start_broker_for(checker)
        wait_for(lambda: self.journal_depth() == 0, 120, "the journal to drain")
        print(f"soak: broker kills done ({BROKER_KILLS})", flush=True)

        # 3. A long broker outage, the gateway's clock sped up by libfaketime;
        #    the locks keep a realistic real-time rate (1 event/s each: one
        #    every 1000 s of the gateway's day).
        time.sleep(2)  # the checker has everything before the broker goes
        self.stop_gateway()
        self.broker.stop()
        start_fake = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self.ready_times.append(self.timed_start(faketime=f"@{start_fake} x{SPEED}"))
        outage_real_s = OUTAGE_HOURS * 3600 / SPEED
        per_lock = max(1, int(outage_real_s))
        sim = self.run_sim(per_lock, 1, seq, duration=outage_real_s + 120, batch=1)
        deadline = time.monotonic() + outage_real_s
        while time.monotonic() < deadline:
            time.sleep(min(5, max(0.1, deadline - time.monotonic())))
            self.add_ble_events(1)
            self.sample_rss()
        self.finish_sim(sim, timeout=300)
        seq += per_lock
        waited = self.journal_depth()
        self.start_broker_for(checker)
        wait_for(lambda: self.journal_depth() == 0, 300, "the outage's backlog to drain")
        print(f"soak: {OUTAGE_HOURS:.0f} h outage (x{SPEED}) done; {waited} events waited",
              flush=True)
        self.stop_gateway()
        self.ready_times.append(self.timed_start())

        # 4. The journal filled to its bound (4 MiB), twice, and drained.
        fills = []
        for n in range(FILLS):
            wait_for(lambda: self.journal_depth() == 0, 300, "the journal to drain")
            time.sleep(2)
            self.broker.stop()
            refused_before = self.refused_full()
            per_lock = 2000
            sim = self.run_sim(per_lock, 0, seq, duration=900, batch=20)
            wait_for(lambda: self.refused_full() > refused_before, 600, "the journal to fill")
            fills.append(self.journal_depth())
            self.start_broker_for(checker)
            self.finish_sim(sim, timeout=900)
            seq += per_lock
        wait_for(lambda: self.journal_depth() == 0, 300, "the journal to drain")
        print(f"soak: journal filled {FILLS} times (events held when full: {fills})", flush=True)

        # Let the BLE locks finish, then count.
        wait_for(lambda: all(l["pending"] == 0 for l in self.ble_stats().values()), 300,
                 "the BLE locks to deliver")
        wait_for(lambda: self.journal_depth() == 0, 300, "the journal to empty")
        time.sleep(3)
        checker.proc.send_signal(signal.SIGTERM)
        report = json.loads(checker.output(timeout=120))
        self.sample_rss()
        self.stop_gateway()
        self.acked.update(self.ble_acked())
        self.report(report, time.monotonic() - t0, fills)

    # -- pieces ----------------------------------------------------------------

    def locksim_access(self):
        """The last lock asks 20 access queries (an empty credential set: each
        is denied and journalled as the gateway's own event)."""
        return self.locksim(locks=1, events=20, rate=0, batch=1, duration=30,
                            extra=["--access-creds", "50", "--first-lock", str(COAP_LOCKS + 1)])

    def start_broker_for(self, checker):
        """Starts the broker and waits for the checker's session to be back
        (its reconnection backoff grows while the broker is away; counting
        before it is back would report what is queued for it as missing)."""
        before = len(self.broker.log_text())
        self.broker.start()

        def reconnected():
            text = self.broker.log_text()
            return " as soak " in (text[before:] if len(text) > before else text)
        wait_for(reconnected, 60, "the checker to reconnect")
        self.check_peers(("checker", checker))

    def journal_depth(self):
        rc, doc = self.status()
        return doc["journal"]["depth"] if rc == 0 else -1

    def refused_full(self):
        rc, doc = self.status()
        return doc["journal"]["refused_full"] if rc == 0 else 0

    def ble_stats(self):
        return {l: self.bluez.stats()["locks"][a] for l, a in self.ble_locks}

    def report(self, report, seconds, fills):
        # Acknowledged: the seq ranges each lock saw acknowledged (a simulator
        # that died loses what it had not: never acknowledged, never promised;
        # those seqs show as gaps at the checker, and are not counted missing).
        for l, a in self.ble_locks:
            self.ranges[l] = [(1, self.acked.get(l, 0))] if self.acked.get(l, 0) else []
        acknowledged = sum(last - first + 1 for r in self.ranges.values() for first, last in r)
        missing = 0
        for lock, ranges in self.ranges.items():
            got = report["locks"].get(lock, {"highest_seq": 0, "gap_ranges": []})
            for first, last in ranges:
                missing += max(0, last - max(first - 1, got["highest_seq"]))
                for g0, g1 in got.get("gap_ranges", []):
                    missing += max(0, min(last, g1) - max(first, g0) + 1)
        out = {
            "gateway_kills": KILLS,
            "broker_kills": BROKER_KILLS,
            "outage_hours": OUTAGE_HOURS,
            "journal_fills": FILLS,
            "events_held_when_full": fills,
            "locks": {"coap": COAP_LOCKS, "ble": BLE_LOCKS},
            "acknowledged": acknowledged,
            "delivered_unique": sum(l["unique"] for k, l in report["locks"].items()
                                    if not k.endswith(".access")),
            "access_decisions_delivered": sum(l["unique"] for k, l in report["locks"].items()
                                              if k.endswith(".access")),
            "missing": missing,
            "gaps_never_acknowledged": report["gaps"],
            "duplicates": report["duplicates"],
            "restart_to_ready_s": {"p50": round(statistics.median(self.ready_times), 3),
                                   "p99": round(percentile(self.ready_times, 99), 3),
                                   "max": round(max(self.ready_times), 3),
                                   "n": len(self.ready_times)},
            "peak_rss_mib": round(self.peak_rss_kb / 1024, 1),
            "crashes": self.crashes,
            "seconds": round(seconds),
        }
        print(json.dumps(out, indent=2), flush=True)
        self.assertEqual(missing, 0, out)
        self.assertEqual(self.crashes, [], out)


if __name__ == "__main__":
    import unittest
    unittest.main(argv=[sys.argv[0], "-v"])
