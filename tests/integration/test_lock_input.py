"""Spine: what locks send, from libcoap's own coap-client-openssl.

Real components: lockbridge, mosquitto, the checker, and coap-client-openssl
(a CoAP/DTLS client the project did not write).
"""

import json
import os
import unittest

import cbor_helper
from harness import Site


class LockInput(Site):
    locks = 2

    def post(self, name, payload, identity="lock-01", key=None):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(payload)
        return self.coap_client(identity, key or self.psk_of(identity), path)

    def test_coap_client_posts_a_batch_and_bad_input_changes_nothing(self):
        checker = self.start_checker(timeout=30, idle_exit=3,
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        self.start_gateway()
        ev = lambda seq: {"seq": seq, "ts": 1700000000000 + seq, "type": "door_open", "door": "d1"}
        enc = cbor_helper.encode

        # Wrong PSK and unknown identity: no handshake, nothing stored.
        rc, out, err = self.post("wrong-psk.cbor", enc({"events": [ev(100)]}),
                                 key="0123456789abcdef0123456789abcdef")
        self.assertNotIn(b"acked_seq", out)
        rc, out, err = self.post("unknown.cbor", enc({"events": [ev(100)]}),
                                 identity="lock-99", key="0123456789abcdef0123456789abcdef")
        self.assertNotIn(b"acked_seq", out)

        # Malformed, wrongly typed, incomplete, oversized, backwards: 4.xx with a diagnostic.
        bad = {
            "malformed.cbor": (b"\xa1\x66events\x81\xa1\x63se", "malformed CBOR"),
            "wrong-type.cbor": (enc({"events": [dict(ev(1), seq="one")]}), "events[0].seq"),
            "missing.cbor": (enc({"events": [{"seq": 1, "ts": 5, "type": "x"}]}), "events[0].door"),
            "oversized.cbor": (enc({"events": [ev(i) for i in range(1, 66)]}), "exceeds the limit"),
            "backwards.cbor": (enc({"events": [ev(5), ev(3)]}), "strictly rising"),
            "personal.cbor": (enc({"events": [dict(ev(1), name="Alice")]}), "events[0].name"),
        }
        for name, (payload, diagnostic) in bad.items():
            rc, out, err = self.post(name, payload)
            text = out.decode(errors="replace") + err
            self.assertIn(diagnostic, text, f"{name}: {text}")
            self.assertNotIn("acked_seq", text)
            self.assertRegex(text, r"4\.(00|13)", name)

        # A valid batch from libcoap's own client is acknowledged once durable.
        rc, out, err = self.post("valid.cbor", enc({"events": [ev(1), ev(2), ev(3)]}))
        self.assertEqual(rc, 0, err)
        self.assertEqual(cbor_helper.decode(out), {"acked_seq": 3})
        # Repeated: acknowledged again, not stored twice.
        rc, out, err = self.post("valid.cbor", enc({"events": [ev(1), ev(2), ev(3)]}))
        self.assertEqual(cbor_helper.decode(out), {"acked_seq": 3})
        # The other lock is served throughout.
        rc, out, err = self.post("lock2.cbor", enc({"events": [ev(1)]}), identity="lock-02")
        self.assertEqual(cbor_helper.decode(out), {"acked_seq": 1})

        report = json.loads(checker.output(timeout=60))
        self.assertEqual(report["locks"]["lock-01"]["unique"], 3, report)
        self.assertEqual(report["locks"]["lock-01"]["highest_seq"], 3)
        self.assertEqual(report["locks"]["lock-02"]["unique"], 1)
        self.assertEqual(report["duplicates"], 0)
        log = self.gateway_log_text()
        self.assertIn('unknown PSK identity "lock-99"', log)
        # Six bad batches from one lock within seconds: the first is logged with
        # its diagnostic, the rest are held back (at most one warning per 10 s).
        self.assertEqual(log.count("lock lock-01 sent a bad event batch"), 1, log)
        self.assertIsNone(self.gateway.proc.poll(), "lockbridge died")

    def test_a_state_claiming_a_huge_array_is_logged_and_every_lock_still_served(self):
        """A lock's state notification whose CBOR array header claims 2^64-1
        items once threw out of libcoap's thread and ended the gateway. Each
        lock here sends three such states (the answer to the gateway's
        observation and the first notifications), then valid ones."""
        prefix = "lockbridge/v1/site-1/gw-1/"
        checker = self.start_checker(timeout=60, idle_exit=6,
                                     topics=[prefix + "events", prefix + "locks/+/state"])
        self.start_gateway()
        sim = self.locksim(locks=2, events=40, rate=10, batch=5, duration=60,
                           extra=["--hostile-states", "3"])
        sim_report = json.loads(sim.output(timeout=90))
        self.assertTrue(sim_report["complete"], sim_report)
        report = json.loads(checker.output(timeout=90))
        for lock in ("lock-01", "lock-02"):
            self.assertEqual(report["locks"][lock]["unique"], 40, report)
        log = self.gateway_log_text()
        self.assertIn("sent a state that is not valid", log)
        self.assertIn("cannot fit", log)
        # Valid states after the hostile ones are taken and published.
        states = {}
        for m in self.captured():
            if m["topic"].startswith(prefix + "locks/") and m["payload"]:
                states[m["topic"]] = json.loads(m["payload"])
        for lock in ("lock-01", "lock-02"):
            self.assertEqual(states[prefix + f"locks/{lock}/state"]["state"]["fw"], "sim-1.0",
                             states)
        self.assertIsNone(self.gateway.proc.poll(), "lockbridge died")
        rc, doc = self.status()
        self.assertEqual(rc, 0, doc)

    def test_time_resource(self):
        self.start_gateway()
        rc, out, err = self.coap_client("lock-01", self.psk_of("lock-01"), None, path="v1/time",
                                        method="get")
        self.assertEqual(rc, 0, err)
        self.assertIn("now", cbor_helper.decode(out))


if __name__ == "__main__":
    unittest.main()
