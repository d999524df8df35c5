"""Spine: lockbridge killed with SIGKILL several times during a stream.

Every event a lock received an acknowledgement for must reach the cloud.
Real components: mosquitto, lockbridge (killed and restarted), the lock
simulator, the checker.
"""

import json
import os
import signal
import time
import unittest

from harness import Site


class Crash(Site):
    locks = 5

    def test_sigkill_during_stream_loses_no_acknowledged_event(self):
        checker = self.start_checker(expect=3000, timeout=150)
        self.start_gateway()
        acked_file = os.path.join(self.dir, "acked.json")
        sim = self.locksim(events=600, rate=40, batch=10, duration=140,
                           extra=["--acked-file", acked_file])
        snapshots = []
        for _ in range(3):
            time.sleep(3)
            self.gateway.kill(signal.SIGKILL)
            # What locks know as acknowledged at the moment of the kill.
            with open(acked_file) as f:
                snapshots.append(json.load(f))
            time.sleep(0.5)
            self.restart_gateway()
        sim_report = json.loads(sim.output(timeout=150))
        self.assertTrue(sim_report["complete"], sim_report)
        report = json.loads(checker.output(timeout=150))
        self.assert_complete_delivery(report, {l: 600 for l in self.lock_ids})
        for snap in snapshots:
            for lock, acked in snap.items():
                self.assertGreaterEqual(report["locks"][lock]["highest_seq"], acked)
        self.assertGreater(sum(snapshots[0].values()), 0, "nothing was acknowledged before the kill")
        retries = sum(l["retries"] for l in sim_report["locks"].values())
        self.assertGreater(retries, 0, "the kills did not interrupt any request")


if __name__ == "__main__":
    unittest.main()
