"""Spine: mutual TLS refusals on the cloud link.

Real components: mosquitto requiring client certificates, lockbridge, the lock
simulator, the checker; certificates from a second CA made with openssl.
"""

import json
import os
import time
import unittest

from harness import Pki, Site


class Tls(Site):
    locks = 2

    def test_client_certificate_from_another_ca_is_refused_and_events_wait(self):
        rogue = Pki(os.path.join(self.dir, "rogue"), name="rogue")
        cert, key = rogue.issue("gw-1")
        self.write_config(cert=cert, key=key)
        self.start_gateway()
        sim = self.locksim(events=50, rate=0, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        time.sleep(1.5)
        log = self.gateway_log_text()
        self.assertTrue("unavailable" in log and "events stay in the journal" in log, log[-2000:])
        self.assertTrue("connected to" not in log)
        self.assertTrue("uplink: TLS: broker refused our client certificate" in log, log[-2000:])
        # The events stayed in the journal: with the right certificate they all arrive.
        self.gateway.kill()
        self.write_config()
        checker = self.start_checker(expect=100, timeout=60)
        self.restart_gateway()
        report = json.loads(checker.output(timeout=90))
        self.assert_complete_delivery(report, {l: 50 for l in self.lock_ids})

    def test_broker_certificate_not_signed_by_the_gateways_ca_is_refused(self):
        other = Pki(os.path.join(self.dir, "other"), name="other")
        self.write_config(ca=other.ca)
        self.start_gateway()
        sim = self.locksim(events=20, rate=0, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        time.sleep(1.5)
        log = self.gateway_log_text()
        self.assertTrue("uplink: TLS:" in log, log[-2000:])
        self.assertTrue("uplink: TLS: broker certificate not trusted (certificate verify failed:"
                        in log, log[-2000:])
        self.assertTrue("connected to" not in log)


if __name__ == "__main__":
    unittest.main()
