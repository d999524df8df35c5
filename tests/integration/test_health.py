"""Lock availability and gateway health (issue 5, items 2 and 3): a lock that
falls silent is published unavailable (retained) and available again when it
returns; the health figures in the status message and in `lockbridge status`
show the journal filling during a broker outage and draining after it.

Real components: mosquitto, lockbridge, the lock simulator over DTLS, the
checker as the cloud's subscriber.
"""

import json
import os
import signal
import time
import unittest

from harness import Site, schema_validator, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


class Health(Site):
    locks = 2
    broker_persistence = True  # the cloud's session outlives the outage

    def setUp(self):
        super().setUp()
        # A short silence so the test sees a lock become unavailable.
        os.environ["LOCKBRIDGE_COAP__LOCK_SILENCE_S"] = "3"
        self.addCleanup(os.environ.pop, "LOCKBRIDGE_COAP__LOCK_SILENCE_S", None)

    def states(self, lock):
        return [json.loads(m["payload"]) for m in self.captured()
                if m["topic"] == PREFIX + f"locks/{lock}/state" and m["payload"]]

    def availability(self, lock):
        """The lock's availability as published, repeats (state updates) folded."""
        out = []
        for s in self.states(lock):
            if not out or out[-1] != s["available"]:
                out.append(s["available"])
        return out

    def test_a_silent_lock_becomes_unavailable_and_available_again(self):
        checker = self.start_checker(timeout=120, topics=[PREFIX + "locks/+/state"])
        self.start_gateway()
        wait_for(lambda: len(self.states("lock-02")) >= 1, 15, "the first lock states")
        self.assertFalse(self.states("lock-01")[0]["available"])  # never heard from yet

        sim = self.locksim(locks=1, events=20, rate=10, batch=1)  # lock-01 only, 2 s
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        wait_for(lambda: self.availability("lock-01") == [False, True, False],
                 20, "lock-01 to come, then to fall silent")
        rc, status = self.status()
        self.assertEqual(status["health"]["locks_available"], 0)
        # The worker's longest stall of the last minute is reported (ms).
        self.assertIsInstance(status["health"]["worker_stall_ms"], int)
        self.assertGreaterEqual(status["health"]["worker_stall_ms"], 0)

        sim = self.locksim(locks=1, events=10, rate=5, batch=1, extra=["--start-seq", "21"])
        wait_for(lambda: self.availability("lock-01") == [False, True, False, True], 20,
                 "lock-01 to be available again")
        rc, status = self.status()
        self.assertEqual(status["health"]["locks_available"], 1)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        checker.proc.send_signal(signal.SIGTERM)
        checker.output(timeout=30)

        validator = schema_validator("lock-state.schema.json")
        for s in self.states("lock-01") + self.states("lock-02"):
            validator.validate(s)
        # lock-02 never spoke: unavailable throughout.
        self.assertEqual({s["available"] for s in self.states("lock-02")}, {False})
        self.assertGreater(self.states("lock-01")[1]["last_seen"], 0)
        self.assertIn("locks: lock-01 is UNAVAILABLE", self.gateway_log_text())
        self.assertIn("locks: lock-01 is available again", self.gateway_log_text())

    def test_health_shows_the_journal_filling_in_an_outage_and_draining_after(self):
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        checker = self.start_checker(timeout=120, session="cloud-health",
                                     topics=[PREFIX + "events", PREFIX + "status"])
        time.sleep(0.5)
        self.broker.stop()
        sim = self.locksim(events=400, rate=80, batch=5)  # 80/s per lock: 5 s
        depths = []
        for _ in range(3):
            time.sleep(1)
            rc, status = self.status()
            self.assertEqual(rc, 0, status)
            self.assertFalse(status["broker"]["connected"])
            depths.append(status["journal"]["depth"])
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        rc, status = self.status()
        self.assertEqual(status["journal"]["depth"], 800)
        self.assertTrue(depths[0] < depths[1] < depths[2] <= 800, depths)
        self.assertGreater(status["health"]["oldest_pending_age_s"], 0)
        self.assertGreater(status["health"]["events_per_s"]["in"], 0)

        self.broker.start()
        wait_for(lambda: self.status()[1]["journal"]["depth"] == 0, 60, "the backlog to drain")
        # The version in use: "auto" speaks MQTT 5 with mosquitto; 3.1.1 when set.
        broker = self.status()[1]["broker"]
        self.assertEqual(broker["protocol"],
                         "3.1.1" if os.environ.get("LOCKBRIDGE_MQTT__PROTOCOL") == "3.1.1" else "5")
        self.assertEqual(broker["uri"], self.broker.uri)
        self.assertEqual((broker["brokers"], broker["failovers"]), ([self.broker.uri], 0))
        time.sleep(2)  # a status message or two after the drain
        checker.proc.send_signal(signal.SIGTERM)
        report = json.loads(checker.output(timeout=30))
        self.assert_complete_delivery(report, {lock: 400 for lock in self.lock_ids})
        # The birth message after the outage still counts the backlog; later
        # ones show it gone.
        births = [json.loads(m["payload"]) for m in self.captured()
                  if m["topic"] == PREFIX + "status"
                  and json.loads(m["payload"]).get("state") == "online"
                  and json.loads(m["payload"])["journal"]["depth"] > 0]
        self.assertTrue(births, "no status message after the outage counted the backlog")
        self.assertGreater(births[0]["health"]["oldest_pending_age_s"], 0)
        checker = self.start_checker(timeout=30, topics=[PREFIX + "status"])
        time.sleep(3)
        checker.proc.send_signal(signal.SIGTERM)
        checker.output(timeout=30)
        online = [json.loads(m["payload"]) for m in self.captured()
                  if json.loads(m["payload"]).get("state") == "online"]
        self.assertTrue(online)
        validator = schema_validator("status.schema.json")
        for s in online:
            validator.validate(s)
            self.assertEqual(s["journal"]["depth"], 0)
            self.assertEqual(s["health"]["oldest_pending_age_s"], 0)
        rc, status = self.status()
        self.assertEqual(status["journal"]["depth"], 0)
        self.assertEqual(status["health"]["oldest_pending_age_s"], 0)


if __name__ == "__main__":
    unittest.main()
