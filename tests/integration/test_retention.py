"""Retention (issues 2 and 4): undelivered events older than the retention
window are purged, counted, logged and reported, even though the broker never
acknowledged them. The clock is moved with libfaketime.

Real components: mosquitto, lockbridge (restarted 91 days later), the lock
simulator, the checker, `lockbridge status` and `journal stats`.
"""

import datetime
import json
import unittest

from harness import Site, wait_for


class Retention(Site):
    locks = 3
    # Certificates valid from a month ago for ten years: the daemon 91 days
    # ahead still accepts them (check-config refuses expired ones).
    pki_not_before = (datetime.datetime.utcnow() - datetime.timedelta(days=30)).strftime(
        "%Y-%m-%d %H:%M:%S")

    def test_events_older_than_90_days_are_purged_counted_and_reported(self):
        self.broker.stop()
        self.start_gateway()
        sim = self.locksim(events=100, rate=0, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        self.assertEqual(self.journal_stats()["depth"], 300)
        self.gateway.kill(15)
        self.gateway = None

        # 91 days later, with the broker back: the 300 events are past retention.
        self.broker.start()
        checker = self.start_checker(timeout=60, idle_exit=5,
                                     topics=["lockbridge/v1/site-1/gw-1/events",
                                             "lockbridge/v1/site-1/gw-1/audit"])
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(faketime="+91d")
        wait_for(lambda: "retention purged 300 undelivered events older than 90 days"
                 in self.gateway_log_text(), 15, "the retention purge")
        rc, status = self.status()
        self.assertEqual(rc, 0, status)
        self.assertEqual(status["journal"]["purged_retention"], 300)
        self.assertEqual(status["privacy"]["purged"]["journal"], 300)
        self.assertEqual(status["journal"]["depth"], 0)
        # The journal keeps working: new events (seq 101..) are delivered.
        sim = self.locksim(events=20, rate=0, batch=10, extra=["--start-seq", "101"])
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        report = json.loads(checker.output(timeout=90))
        for lock in self.lock_ids:
            seen = report["locks"][lock]
            self.assertEqual(seen["unique"], 20, report)  # only the new ones
            self.assertEqual(seen["highest_seq"], 120)
        # The purge is in the audit trail the cloud received.
        purges = [r for m in self.captured() if m["topic"].endswith("/audit")
                  for r in json.loads(m["payload"])["records"] if r["action"] == "retention_purge"]
        self.assertEqual([(r["detail"]["table"], r["detail"]["records"]) for r in purges],
                         [("journal", 300)])


if __name__ == "__main__":
    unittest.main()
