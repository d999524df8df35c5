"""Spine: the broker goes away and comes back; storage fills and drains.

Real components: mosquitto (stopped and restarted, persistent sessions for the
cloud-side subscriber), lockbridge, the lock simulator, the checker.
"""

import json
import time
import unittest

from harness import Site


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


if __name__ == "__main__":
    unittest.main()
