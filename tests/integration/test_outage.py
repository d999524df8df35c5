"""Spine: the broker goes away and comes back; storage fills and drains.

Real components: mosquitto (stopped and restarted, persistent sessions for the
cloud-side subscriber), lockbridge, the lock simulator, the checker.
"""

import json
import os
import signal
import time
import unittest

from harness import Broker, Site, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


class BrokerOutage(Site):
    locks = 5
    broker_persistence = True

    def test_broker_stopped_and_restarted_mid_stream_loses_nothing(self):
        checker = self.start_checker(expect=2000, timeout=120, session="cloud-outage",
                                     topics=["lockbridge/v1/site-1/gw-1/#"])
        self.start_gateway()
        sim = self.locksim(events=400, rate=40, batch=10)
        time.sleep(2.5)
        self.broker.stop()
        time.sleep(4)
        self.broker.start()
        sim_report = json.loads(sim.output(timeout=120))
        self.assertTrue(sim_report["complete"], sim_report)
        report = json.loads(checker.output(timeout=150))
        self.assert_complete_delivery(report, {l: 400 for l in self.lock_ids})
        log = self.gateway_log_text()
        self.assertTrue("events stay in the journal" in log, "outage not logged")
        self.assertTrue("connected to" in log)


class StorageFull(Site):
    locks = 5
    extra_store = "journal_max_mb = 1"
    broker_persistence = True

    def test_full_journal_refuses_with_503_then_drains_everything(self):
        self.broker.stop()
        self.start_gateway()
        # 20,000 events of ~120 bytes do not fit in 1 MiB: locks must be told to wait.
        sim = self.locksim(events=4000, rate=0, batch=20, duration=180)
        deadline = time.monotonic() + 60
        while "journal: full" not in self.gateway_log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue("journal: full" in self.gateway_log_text(), "the journal never filled")
        # Beside the running daemon, `journal stats` shows the backlog near its bound.
        stats = self.journal_stats()
        self.assertGreater(stats["depth"], 1000, stats)
        self.assertLessEqual(stats["bytes"], stats["limit_bytes"])
        self.assertGreater(stats["bytes"], stats["limit_bytes"] * 0.9, stats)
        self.broker.start()
        checker = self.start_checker(expect=20000, timeout=150, session="cloud-full",
                                     topics=["lockbridge/v1/site-1/gw-1/#"])
        sim_report = json.loads(sim.output(timeout=200))
        self.assertTrue(sim_report["complete"], sim_report)
        refused = sum(l["refused_full"] for l in sim_report["locks"].values())
        self.assertGreater(refused, 0, "no lock was ever told the journal is full")
        report = json.loads(checker.output(timeout=200))
        self.assert_complete_delivery(report, {l: 4000 for l in self.lock_ids})
        time.sleep(1.5)


class BrokerFailover(Site):
    """`mqtt.brokers`: the broker in use goes away mid-stream; the gateway
    moves to the next one and nothing acknowledged is lost, in order per
    lock at the cloud (which listens on both); the first comes back and
    nothing changes for the gateway."""

    locks = 4

    def setUp(self):
        super().setUp()
        os.makedirs(os.path.join(self.dir, "second"))
        self.second = Broker(os.path.join(self.dir, "second"), self.pki.ca, self.server_cert,
                             self.server_key)
        self.second.start()
        self.addCleanup(self.second.stop)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace(f'broker = "{self.broker.uri}"',
                                 f'brokers = ["{self.broker.uri}", "{self.second.uri}"]'))

    @staticmethod
    def events(capture):
        out = []
        with open(capture) as f:
            for line in f:
                if not line.strip():
                    continue
                m = json.loads(line)
                if m["topic"] == PREFIX + "events" and m["payload"]:
                    out += [(e["lock"], e["seq"], e["event_id"])
                            for e in json.loads(m["payload"])["events"]]
        return out

    def test_the_broker_in_use_stops_and_the_gateway_moves_to_the_next(self):
        first = self.start_checker(timeout=180, topics=[PREFIX + "events"])
        second = self.start_checker(timeout=180, topics=[PREFIX + "events"], broker=self.second)
        self.start_gateway()
        sim = self.locksim(events=1000, rate=100, batch=10, duration=150)
        wait_for(lambda: len(self.events(first.capture)) >= 800, 60,
                 "events on the first broker")
        self.broker.stop()
        report = json.loads(sim.output(timeout=150))
        self.assertTrue(report["complete"], report)
        wait_for(lambda: self.status()[1]["journal"]["depth"] == 0, 60, "the journal to drain")
        rc, status = self.status()
        self.assertEqual(status["broker"]["uri"], self.second.uri)
        self.assertTrue(status["broker"]["connected"])
        self.assertEqual(status["broker"]["failovers"], 1)
        time.sleep(1)  # the last publishes reach the cloud's subscriber

        # Every event of every lock at the cloud, across the two brokers;
        # each broker's stream in seq order per lock; repeats only of events
        # not acknowledged before the first went away, with their event_id.
        on_first, on_second = self.events(first.capture), self.events(second.capture)
        self.assertTrue(on_first and on_second, (len(on_first), len(on_second)))
        for stream in (on_first, on_second):
            last = {}
            for lock, seq, _ in stream:
                self.assertGreater(seq, last.get(lock, 0) - 1, f"{lock} out of order")
                last[lock] = max(seq, last.get(lock, 0))
        ids = {}
        for lock, seq, event_id in on_first + on_second:
            self.assertEqual(ids.setdefault((lock, seq), event_id), event_id)
        for lock in self.lock_ids:
            seqs = {seq for l, seq, _ in on_first + on_second if l == lock}
            self.assertEqual(seqs, set(range(1, 1001)), lock)
        repeats = len(on_first) + len(on_second) - 4000
        self.assertLessEqual(repeats, 1000, "repeats beyond what was in flight at the stop")
        log = self.gateway_log_text()
        self.assertIn(f"the next connect goes to {self.second.uri}", log)

        # The first broker comes back: the gateway stays where it is.
        self.broker.start()
        time.sleep(3)
        rc, status = self.status()
        self.assertEqual((status["broker"]["uri"], status["broker"]["failovers"]),
                         (self.second.uri, 1))
        self.assertTrue(status["broker"]["connected"])
        for c in (first, second):
            c.proc.send_signal(signal.SIGTERM)


if __name__ == "__main__":
    unittest.main()
