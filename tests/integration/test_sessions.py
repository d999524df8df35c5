"""Lock sessions at the edges of size (issue 15): a lock beyond
coap.max_sessions is refused and counted while the others go on; an idle
session released by the gateway costs the lock nothing but a new handshake.
Real processes: mosquitto, lockbridge, the lock simulator over CoAP/DTLS-PSK."""

import json
import unittest

from harness import Site, wait_for


class SessionLimit(Site):
    """Two locks are served; a third and a fourth are refused at their
    handshake with a log line and a counter, and the two served locks'
    events all go through meanwhile."""

    locks = 4
    extra_coap = "max_sessions = 2"

    def test_locks_beyond_the_maximum_are_refused_and_the_others_unaffected(self):
        checker = self.start_checker(expect=2 * 60, timeout=120)
        self.start_gateway()
        served = self.locksim(locks=2, events=60, rate=4, batch=1, duration=60)

        def coap(key):
            rc, status = self.status()
            return status["coap"][key] if rc == 0 else None
        wait_for(lambda: coap("sessions") == 2, 20, "two locks with a session")
        refused = self.locksim(locks=2, events=5, rate=0, batch=1, duration=8,
                               extra=["--first-lock", "3"])
        refused_report = json.loads(refused.output(timeout=60))
        report = json.loads(served.output(timeout=90))
        self.assertTrue(report["complete"], report)
        self.assertFalse(refused_report["complete"])
        self.assertEqual(refused_report["locks_served"], 0, refused_report)
        for lock in ("lock-03", "lock-04"):
            self.assertEqual(refused_report["locks"][lock]["acked_seq"], 0)
        delivered = json.loads(checker.output(timeout=120))
        self.assertEqual(delivered["unique_events"], 2 * 60, delivered)
        rc, status = self.status()
        self.assertEqual(rc, 0)
        self.assertGreaterEqual(status["coap"]["session_refusals"], 2, status["coap"])
        self.assertEqual(status["coap"]["max_sessions"], 2)
        self.assertLessEqual(status["coap"]["peak_sessions"], 2)
        log = self.gateway_log_text()
        self.assertIn("as lock lock-03 refused: 2 locks are served already (coap.max_sessions)",
                      log.replace("lock-04", "lock-03"))
        # One line per 10 s at most, however often the refused locks retry.
        self.assertLessEqual(log.count("(coap.max_sessions)"), 3, log)


class IdleRelease(Site):
    """With coap.idle_release_s, a lock quiet for longer loses its session on
    the gateway; its next request makes a new one and is acknowledged."""

    locks = 2
    extra_coap = "idle_release_s = 10"

    def test_an_idle_session_is_released_and_the_lock_comes_back(self):
        checker = self.start_checker(expect=2 * 3, timeout=120)
        self.start_gateway()
        # One event every 16 s: each lock is quiet for longer than the bound
        # twice.
        sim = self.locksim(events=3, rate=1 / 16, batch=1, duration=80)
        report = json.loads(sim.output(timeout=120))
        self.assertTrue(report["complete"], report)
        # Every lock opened a new session after each release.
        self.assertGreaterEqual(report["sessions_opened"], 2 * 3, report)
        delivered = json.loads(checker.output(timeout=60))
        self.assertEqual(delivered["unique_events"], 2 * 3, delivered)
        self.assertEqual(delivered["gaps"], 0, delivered)
        rc, status = self.status()
        self.assertEqual(rc, 0)
        self.assertGreaterEqual(status["coap"]["sessions_released"], 2 * 2, status["coap"])
        for lock in self.lock_ids:
            self.assertEqual(report["locks"][lock]["acked_seq"], 3)


if __name__ == "__main__":
    unittest.main()
