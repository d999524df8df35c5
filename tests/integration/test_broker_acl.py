"""Least privilege on the broker (issue 5, item 5): mosquitto maps each client
certificate's CN to its user name (`use_identity_as_username`) and applies the
shipped example ACL (config/mosquitto.acl.example). The gateway does all its
work with exactly those rights; another gateway can neither inject events
under gw-1's topics nor have its commands reach gw-1.

Real components: mosquitto with the ACL, lockbridge, the lock simulator, the
checker and python3-paho-mqtt clients with their own certificates.
"""

import json
import os
import signal
import time
import unittest

import paho.mqtt.client as mqtt

from harness import Site, snapshot_chunks, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


class BrokerAcl(Site):
    locks = 2
    broker_acl = True

    def client_as(self, cn):
        cert, key = self.pki.issue(cn)
        c = mqtt.Client(client_id=f"{cn}-{os.getpid()}", clean_session=True)
        c.tls_set(ca_certs=self.pki.ca, certfile=cert, keyfile=key)
        c.connect("127.0.0.1", self.broker.port, keepalive=30)
        c.loop_start()
        self.addCleanup(c.loop_stop)
        return c

    def test_the_gateway_works_with_its_own_rights_and_nobody_else_s_reach_it(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=120, topics=["lockbridge/v1/#"])
        # Events, status, audit and command results all flow under the ACL.
        sim = self.locksim(events=100, rate=0, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        for doc in snapshot_chunks("s1", 1, [{"cred": "04ACL00001", "subject": "sub-acl",
                                              "doors": ["*"]}], per_chunk=10):
            cloud.send("credentials/snapshot", doc)
        self.assertEqual(cloud.wait_result(doc["id"])["status"], "ok")

        # Another gateway tries to inject an event under gw-1's topic...
        intruder = self.client_as("gw-2")
        fake = {"schema": "lockbridge/events/1", "site": "site-1", "gateway": "gw-1",
                "events": [{"event_id": "gw-1/lock-01/999", "lock": "lock-01", "seq": 999,
                            "ts": 1, "type": "door_open", "door": "d", "received_at": 1}]}
        intruder.publish(PREFIX + "events", json.dumps(fake), qos=1).wait_for_publish(5)
        # ...and a command meant for gw-2 is published by the cloud.
        cloud.send("erase_subject",
                   {"schema": "lockbridge/erase-subject/1", "id": "for-gw-1", "subject": "sub-x"})
        cloud.client.publish("lockbridge/v1/site-1/gw-2/cmd/erase_subject",
                             json.dumps({"schema": "lockbridge/erase-subject/1", "id": "not-mine",
                                         "subject": "sub-acl"}), qos=1).wait_for_publish(5)
        self.assertEqual(cloud.wait_result("for-gw-1")["status"], "ok")
        time.sleep(3)  # for anything that should not arrive to arrive
        checker.proc.send_signal(signal.SIGTERM)
        report = json.loads(checker.output(timeout=30))
        self.assertEqual(report["locks"]["lock-01"]["unique"], 100, report)
        self.assertEqual(report["locks"]["lock-01"]["highest_seq"], 100)  # not 999
        self.assertEqual(report["locks"]["lock-02"]["unique"], 100, report)
        topics = {m["topic"] for m in self.captured()}
        for t in ["events", "status", "audit", "cmd_result"]:
            self.assertIn(PREFIX + t, topics)
        results = [json.loads(m["payload"]) for m in self.captured()
                   if m["topic"] == PREFIX + "cmd_result"]
        self.assertNotIn("not-mine", {r["id"] for r in results})
        self.assertEqual(self.credentials_stats()["count"], 1)  # sub-acl was not erased
        self.assertNotIn("not-mine", self.gateway_log_text())
        # The broker refused the intruder, and never had to refuse gw-1.
        log = self.broker.log_text()
        self.assertRegex(log, r"Denied PUBLISH from gw-2-\d+ .*lockbridge/v1/site-1/gw-1/events")
        self.assertNotIn("Denied PUBLISH from gw-1", log)
        self.assertNotIn("lockbridge-site-1-gw-1 not authorised", log)


if __name__ == "__main__":
    unittest.main()
