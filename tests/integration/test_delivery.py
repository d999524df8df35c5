"""Spine: 20 simulated locks send 10,000 events through lockbridge.

Real components: mosquitto (TLS, client certificates required), lockbridge,
the lock simulator over CoAP/DTLS-PSK, the checker over mutual TLS.
"""

import json
import os
import unittest

import jsonschema

from harness import SOURCE, Site


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


if __name__ == "__main__":
    unittest.main()
