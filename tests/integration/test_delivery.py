"""Spine: 20 simulated locks send 10,000 events through lockbridge.

Real components: mosquitto (TLS, client certificates required), lockbridge,
the lock simulator over CoAP/DTLS-PSK, the checker over mutual TLS.
"""

import json
import os
import signal
import time
import unittest

import jsonschema

from harness import SOURCE, Site, wait_for


def schema(name):
    with open(os.path.join(SOURCE, "docs/schemas", name)) as f:
        return json.load(f)


class Delivery(Site):
    locks = 20

    def test_10000_events_from_20_locks_arrive_in_order(self):
        checker = self.start_checker(expect=10000, timeout=180,
                                     topics=["lockbridge/v1/site-1/gw-1/#"])
        self.start_gateway()
        sim = self.locksim(events=500, rate=100, batch=10)
        sim_report = json.loads(sim.output(timeout=240))
        self.assertTrue(sim_report["complete"], sim_report)
        report = json.loads(checker.output(timeout=240))
        self.assert_complete_delivery(report, {l: 500 for l in self.lock_ids})
        self.assertEqual(report["unique_events"], 10000)

        # Every message validates against the published JSON Schemas.
        events_schema = schema("events.schema.json")
        status_schema = schema("status.schema.json")
        messages = self.captured()
        kinds = set()
        for m in messages:
            doc = json.loads(m["payload"])
            if m["topic"].endswith("/events"):
                jsonschema.validate(doc, events_schema)
                for ev in doc["events"]:
                    self.assertEqual(ev["event_id"], f"gw-1/{ev['lock']}/{ev['seq']}")
                kinds.add("events")
            elif m["topic"].endswith("/status"):
                jsonschema.validate(doc, status_schema)
                kinds.add("status")
        self.assertEqual(kinds, {"events", "status"})

        # Raw credential identifiers never reach the cloud, the disk or the log.
        raw = b"CARD-lock-"
        for m in messages:
            self.assertNotIn("CARD-", m["payload"])
        with open(os.path.join(self.state_dir, "data.mdb"), "rb") as f:
            self.assertNotIn(raw, f.read())
        self.assertNotIn("CARD-", self.gateway_log_text())
        creds = [ev["cred"] for m in messages if m["topic"].endswith("/events")
                 for ev in json.loads(m["payload"])["events"] if "cred" in ev]
        self.assertGreater(len(creds), 1000)
        # The same card gives the same pseudonym (50 distinct cards per lock).
        self.assertLessEqual(len(set(creds)), 20 * 50)


class ManyLocks(Site):
    """Three hundred locks heard from at once: each lock's retained state is
    published, none dropped for lack of room in Paho's buffer. The smallest
    events window makes that buffer small (before, 2 x window + 20 = 22
    messages, and such a burst lost most of the states; the 1,000-lock run of
    issue 15 lost 533 with the default window)."""
    locks = 300
    extra_mqtt = "inflight_window = 1"

    def test_every_lock_gets_its_retained_state_when_300_speak_at_once(self):
        checker = self.start_checker(timeout=240, topics=[PREFIX_STATE + "+/state"])
        self.start_gateway()
        # The locks stay up after their events, so that the gateway can
        # observe every one's state.
        sim = self.locksim(events=2, rate=0, batch=2, duration=180, extra=["--linger", "25"])

        def settled():
            rc, status = self.status()
            return (rc == 0 and status["health"]["locks_available"] == 300
                    and status["broker"]["retained_waiting"] == 0)
        wait_for(settled, 60, "every lock available and its retained state published")
        # A state notified within a second of the last publish for its lock
        # waits for the next tick (every 2 s), then goes the same way.
        time.sleep(3)
        wait_for(settled, 30, "the coalesced states published")
        time.sleep(1)  # the last PUBACKs' messages reach the checker
        checker.kill(signal.SIGTERM)
        self.assertTrue(json.loads(sim.output(timeout=240))["complete"])
        states = {}
        for m in self.captured():
            doc = json.loads(m["payload"])
            states[doc["lock"]] = doc
        self.assertEqual(sorted(states), sorted(self.lock_ids))
        self.assertTrue(all(d["available"] for d in states.values()))
        self.assertTrue(all("state" in d for d in states.values()))
        log = self.gateway_log_text()
        self.assertNotIn("publish failed", log)
        self.assertNotIn("buffered", log)


PREFIX_STATE = "lockbridge/v1/site-1/gw-1/locks/"


if __name__ == "__main__":
    unittest.main()
