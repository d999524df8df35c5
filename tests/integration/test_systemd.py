"""The systemd side (issue 6): the shipped unit's exposure score, and the
daemon speaking systemd's notify protocol (READY, WATCHDOG, STOPPING) to a
real notify socket, the way systemd would receive it.

systemd itself is not PID 1 on the test machines, so the unit is checked with
`systemd-analyze security --offline=true` and the protocol with a socket of
our own; running the daemon under the unit's sandbox needs a booted systemd.
"""

import json
import os
import re
import shutil
import tempfile
import signal
import socket
import subprocess
import time
import unittest

from harness import LOCKBRIDGE, SOURCE, Site, wait_for

UNIT = os.path.join(SOURCE, "systemd/lockbridge.service")


class Unit(unittest.TestCase):
    def test_exposure_of_the_shipped_unit_is_at_most_1_5(self):
        out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT],
                             capture_output=True, text=True)
        m = re.search(r"Overall exposure level for lockbridge.service: ([0-9.]+)", out.stdout)
        self.assertIsNotNone(m, out.stdout + out.stderr)
        self.assertLessEqual(float(m.group(1)), 1.5, out.stdout)


    def unit_settings(self):
        settings = {}
        with open(UNIT) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    settings.setdefault(key, []).append(value)
        return settings

    def test_systemd_analyze_verify_is_clean(self):
        # The unit as installed, with the binary this build made in its place.
        with open(UNIT) as f:
            text = f.read().replace("/usr/bin/lockbridge", LOCKBRIDGE)
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        unit = os.path.join(d, "lockbridge.service")
        with open(unit, "w") as f:
            f.write(text)
        out = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(out.stderr.strip(), "", out.stderr)

    def test_restart_policy_stops_on_what_a_restart_cannot_mend(self):
        s = self.unit_settings()
        self.assertEqual(s["Restart"], ["on-failure"])
        # 65 (damaged or foreign state) and 78 (configuration) are never restarted over.
        self.assertEqual(set(s["RestartPreventExitStatus"][0].split()), {"65", "78"})
        # An explicit start limit ends a crash loop.
        self.assertEqual(s["StartLimitBurst"], ["5"])
        self.assertEqual(s["StartLimitIntervalSec"], ["10min"])
        # A reload is validated and its refusal is visible.
        self.assertTrue(s["ExecReload"][0].startswith("/usr/bin/lockbridge reload"), s["ExecReload"])


class Reload(Site):
    locks = 1

    def test_a_refused_reload_fails_visibly_and_changes_nothing(self):
        self.start_gateway()
        ok = subprocess.run([LOCKBRIDGE, "reload", "--config", self.config], capture_output=True,
                            text=True, timeout=30)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("reloaded", ok.stdout)
        # The daemon's file breaks (the client finds the socket through an
        # intact copy); the client gets 78 and the daemon keeps its config.
        intact = os.path.join(self.dir, "intact.toml")
        shutil.copy(self.config, intact)
        with open(self.config, "a") as f:
            f.write("\n[[locks]]\nid = \"lock 99\"\n")
        out = subprocess.run([LOCKBRIDGE, "reload", "--config", intact], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 78, out.stdout + out.stderr)
        self.assertIn("refused", out.stderr)
        wait_for(lambda: "the running configuration stays in force" in self.gateway_log_text(), 10,
                 "the refusal in the daemon's log")
        status = json.loads(subprocess.run([LOCKBRIDGE, "status", "--config", intact, "--json"],
                                           capture_output=True, text=True, timeout=30).stdout)
        self.assertEqual(status["locks"]["configured"], 1)
        # No daemon: exit 3.
        self.gateway.kill(signal.SIGTERM)
        out = subprocess.run([LOCKBRIDGE, "reload", "--config", intact], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 3, out.stderr)


class Notify(Site):
    locks = 1

    def test_ready_watchdog_and_stopping_reach_the_notify_socket(self):
        path = os.path.join(self.dir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        self.addCleanup(sock.close)
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        from harness import LOCKBRIDGE, Process
        self.gateway = Process([LOCKBRIDGE, "run", "--config", self.config], self.gateway_log, env=env)
        messages = []

        def receive(until, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    messages.append((time.monotonic(), sock.recv(4096).decode()))
                except socket.timeout:
                    pass
                if until():
                    return
            raise AssertionError(f"notify messages so far: {[m for _, m in messages]}")

        receive(lambda: any("READY=1" in m for _, m in messages), 15)
        receive(lambda: sum("WATCHDOG=1" in m for _, m in messages) >= 4, 10)
        beats = [t for t, m in messages if "WATCHDOG=1" in m]
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        self.assertTrue(all(g < 0.9 for g in gaps), gaps)  # half of WATCHDOG_USEC
        self.gateway.proc.send_signal(signal.SIGTERM)
        receive(lambda: any("STOPPING=1" in m for _, m in messages), 15)
        self.assertEqual(self.gateway.proc.wait(15), 0)
        self.gateway = None


class Status(Site):
    locks = 2

    def test_status_answers_while_running_and_says_so_when_not(self):
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        sim = self.locksim(events=50, rate=0, batch=10)
        json_report = sim.output(timeout=60)
        self.assertIn('"complete":true', json_report.replace(" ", ""))
        rc, doc = self.status()
        self.assertEqual(rc, 0, doc)
        self.assertEqual(doc["state"], "online")
        self.assertEqual(doc["locks"]["configured"], 2)
        self.assertEqual(doc["events"]["in"], 100)
        self.assertTrue(doc["broker"]["connected"])
        self.assertEqual(doc["credentials"]["version"], 0)
        # The test certificates last 30 days: reported, and warned about.
        self.assertIn(doc["tls"]["client_cert_days_left"], (28, 29, 30))
        self.assertIn("the client certificate", self.gateway_log_text())
        self.assertIn("expires in 29 days", self.gateway_log_text())
        self.assertEqual(stat_mode(os.path.join(self.dir, "status.sock")), 0o660)
        # The broker away: status still answers, and says so.
        self.broker.stop()
        wait_for(lambda: not self.status()[1]["broker"]["connected"], 15, "the broker to be seen gone")
        human = subprocess.run([LOCKBRIDGE, "status", "--config", self.config], capture_output=True,
                               text=True, timeout=20)
        self.assertEqual(human.returncode, 0, human.stderr)
        self.assertIn("NOT connected", human.stdout)
        # The daemon down: exit 3, promptly, no hang.
        self.gateway.kill(signal.SIGTERM)
        self.gateway = None
        started = time.monotonic()
        rc, err = self.status()
        self.assertEqual(rc, 3, err)
        self.assertIn("not running", err)
        self.assertLess(time.monotonic() - started, 10)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "status.sock")))


class Priorities(Site):
    """The threads locks wait on (CoAP's, the journal's) ask for nice -10;
    without the right to it the daemon runs on at the process's priority.
    The unit gives that right by LimitNICE= alone (RLIMIT_NICE), never a
    capability. (Raising RLIMIT_NICE needs CAP_SYS_RESOURCE, which the test
    machines' containers lack, so that path is left to the kernel's rule.)"""
    locks = 1

    def thread_nices(self):
        pid = self.gateway.proc.pid
        out = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            out.append((name, int(stat.rsplit(")", 1)[1].split()[16])))
        return out

    def nices_of_a_run(self, wrap=()):
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(wrap=wrap)
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        nices = self.thread_nices()
        self.gateway.kill(signal.SIGTERM)
        self.gateway = None
        return nices

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root (to have CAP_SYS_NICE, then drop it) and setpriv")
    def test_lock_facing_threads_get_nice_minus_10_when_allowed_and_run_on_when_not(self):
        self.assertEqual(Unit.unit_settings(self).get("LimitNICE"), ["-10"])
        nices = self.nices_of_a_run()
        self.assertIn(("lockbridge.coap", -10), nices, nices)
        # the journal's thread (a detached CAF actor) too, and nothing else
        self.assertEqual(sum(1 for _, n in nices if n == -10), 2, nices)
        self.assertTrue(all(n in (0, -10) for _, n in nices), nices)
        # root keeps after exec only what the bounding set allows
        nices = self.nices_of_a_run(["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"])
        self.assertTrue(all(n == 0 for _, n in nices), nices)


def stat_mode(path):
    import stat
    return stat.S_IMODE(os.stat(path).st_mode)


if __name__ == "__main__":
    unittest.main()
