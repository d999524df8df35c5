"""The README's first command: tools/demo.sh runs the demo site (mosquitto
with TLS, lockbridge on the demo config, simulated CoAP locks and BLE locks on
the BlueZ mock) and events flow to the cloud side. Run briefly, on free ports.
"""

import json
import os
import re
import socket
import subprocess
import unittest

from harness import ROOT, free_port


class Demo(unittest.TestCase):
    def test_demo_site_runs_and_events_flow_from_coap_and_ble_locks(self):
        env = dict(os.environ, DEMO_DURATION="8", DEMO_MQTT_PORT=str(free_port()),
                   DEMO_COAP_PORT=str(free_port(socket.SOCK_DGRAM)))
        p = subprocess.run(["bash", os.path.join(ROOT, "tools/demo.sh")], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out[-3000:])
        self.assertIn("lockbridge.toml: OK (site demo-site, gateway gw-demo, 7 locks: 5 CoAP, 2 BLE on hci0)", out)
        locks = set(re.findall(r'"lock":"([a-z0-9-]+)"', out))
        self.assertTrue({"lock-01", "lock-05", "ble-01", "ble-02"} <= locks, locks)
        with open(os.path.join(ROOT, ".demo/locksim-report.json")) as f:
            report = json.load(f)
        self.assertTrue(report["complete"], report)
        self.assertEqual(sorted(report["locks"]), [f"lock-0{i}" for i in range(1, 6)])
        ble = json.loads(re.search(r"== BLE figures \(lockbridge status\): (\{.*\})", out).group(1))
        self.assertGreater(ble["connections"], 0, ble)
        self.assertEqual(ble["refused_forged"] + ble["refused_replayed"] + ble["refused_unconfigured"], 0)


if __name__ == "__main__":
    unittest.main()
