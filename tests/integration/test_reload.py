"""Hot reload (issue 6): SIGHUP adds and removes locks in the middle of a
stream without touching the other locks; a broken config on SIGHUP leaves the
running one in force.

Real components: mosquitto, lockbridge, two lock simulators, the checker.
"""

import json
import os
import shutil
import signal
import time
import unittest

import subprocess

from harness import LOCKBRIDGE, Site, wait_for


class Reload(Site):
    locks = 4  # PSKs for lock-01..lock-04; the first config lists 01..03

    def test_sighup_adds_and_removes_locks_mid_stream(self):
        self.write_config(lock_ids=["lock-01", "lock-02", "lock-03"])
        # lock-03 sends an unknown number before its removal: stop on silence.
        checker = self.start_checker(timeout=120, idle_exit=5,
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        self.start_gateway()
        # lock-01 and lock-02 stream for ~20 s and must lose nothing;
        # lock-03 streams too, and is removed under it.
        steady = self.locksim(locks=2, events=600, rate=30, batch=5, duration=120)
        doomed = self.locksim(locks=1, events=600, rate=30, batch=5, duration=20,
                              extra=["--first-lock", "3"])
        time.sleep(4)

        self.write_config(lock_ids=["lock-01", "lock-02", "lock-04"])
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: 3 locks now; added: lock-04; removed: lock-03"
                 in self.gateway_log_text(), 15, "the reload to apply")
        added = self.locksim(locks=1, events=200, rate=40, batch=5, duration=60,
                             extra=["--first-lock", "4"])
        time.sleep(2)

        # A broken config: refused, logged, the running one stays.
        with open(self.config, "a") as f:
            f.write("\n[mqtt.nonsense]\nx = 1\n")
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "the running configuration stays in force" in self.gateway_log_text(),
                 15, "the broken reload to be refused")

        steady_report = json.loads(steady.output(timeout=150))
        added_report = json.loads(added.output(timeout=90))
        doomed_report = json.loads(doomed.output(timeout=60))
        report = json.loads(checker.output(timeout=150))
        self.assertIsNone(self.gateway.proc.poll(), "lockbridge died")

        # Untouched locks: everything, in order, and they never had to reconnect.
        self.assertTrue(steady_report["complete"], steady_report)
        self.assertEqual(steady_report["sessions_opened"], 2, steady_report)
        for lock in ["lock-01", "lock-02"]:
            self.assertEqual(steady_report["locks"][lock]["retries"], 0, steady_report)
            self.assertEqual(report["locks"][lock]["unique"], 600, report)
            self.assertEqual(report["locks"][lock]["highest_seq"], 600)
        self.assertEqual(report["gaps"], 0, report)
        self.assertEqual(report["order_violations"], 0, report)
        # The added lock is served; the removed one is refused after the reload.
        self.assertTrue(added_report["complete"], added_report)
        self.assertEqual(report["locks"]["lock-04"]["unique"], 200)
        self.assertFalse(doomed_report["complete"], doomed_report)
        self.assertLess(report["locks"].get("lock-03", {"unique": 0})["unique"], 600)
        log = self.gateway_log_text()
        # The broken file's error names file, line and key; lock-04 (from the good
        # reload) kept working through it.
        self.assertRegex(log, r"reload: \S+lockbridge.toml:\d+:\d+: mqtt.nonsense: unknown key")


class ReloadRules(Site):
    """Every config key is declared once as applied on a reload or needing a
    restart (config/keys.cpp): each reloadable key takes effect, checked in
    status or behaviour; a changed restart-only key is named."""
    locks = 1
    extra_mqtt = "cert_warning_days = 7"

    def health(self):
        rc, doc = self.status()
        self.assertEqual(rc, 0, doc)
        return doc

    def test_each_reloadable_key_applies_and_a_restart_only_key_is_named(self):
        self.start_gateway()
        sim = self.locksim(locks=1, events=5, rate=0, batch=5, extra=["--linger", "90"])
        wait_for(lambda: self.health()["health"]["locks_available"] == 1, 20, "lock-01 heard")
        self.assertFalse(self.health()["tls"]["expiring_soon"])  # 29 days left, warning at 7
        # At info, the status published each second is not logged.
        time.sleep(1.5)
        self.assertNotIn(" debug uplink: status published", self.gateway_log_text())

        with open(self.config) as f:
            text = f.read()
        text = text.replace('log_level = "info"', 'log_level = "debug"')
        text = text.replace("cert_warning_days = 7", "cert_warning_days = 60\nkeepalive_s = 17")
        text = text.replace("[coap]\n", "[coap]\nlock_silence_s = 2\n")
        with open(self.config, "w") as f:
            f.write(text)
        out = subprocess.run([LOCKBRIDGE, "reload", "--config", self.config],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("applied: coap.lock_silence_s, gateway.log_level, mqtt.cert_warning_days",
                      out.stdout)
        self.assertIn("only after a restart (systemctl restart lockbridge): mqtt.keepalive_s",
                      out.stdout)
        # coap.lock_silence_s: the lingering, silent lock counts as unavailable within 2 s.
        wait_for(lambda: self.health()["health"]["locks_available"] == 0, 20,
                 "lock-01 to count as silent")
        # mqtt.cert_warning_days: 29 days left is now within the warning.
        self.assertTrue(self.health()["tls"]["expiring_soon"])
        # gateway.log_level: now it is.
        wait_for(lambda: " debug uplink: status published" in self.gateway_log_text(), 10,
                 "a debug line")

        # A restart-only key by SIGHUP: named (with the one still pending), not applied.
        old_config = os.path.join(self.dir, "old.toml")
        shutil.copy(self.config, old_config)
        with open(self.config, "w") as f:
            f.write(text.replace("status.sock", "other.sock"))
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "restart (systemctl restart lockbridge): gateway.status_socket, "
                         "mqtt.keepalive_s; the running values stay" in self.gateway_log_text(),
                 15, "the restart-only keys to be named")
        # The daemon still answers where it listened (the old socket).
        out = subprocess.run([LOCKBRIDGE, "status", "--config", old_config, "--json"],
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "other.sock")))
        self.assertIsNone(self.gateway.proc.poll(), "lockbridge died")
        sim.kill(signal.SIGTERM)


class CertificateRotation(Site):
    locks = 3

    def test_sighup_reconnects_with_a_rotated_client_certificate_losing_nothing(self):
        checker = self.start_checker(expect=900, timeout=120,
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        sim = self.locksim(events=300, rate=30, batch=5, duration=120)
        time.sleep(3)

        # The installer puts a newly issued certificate and key in place, same paths.
        cert, key = self.pki.issue("gw-1-rotated")
        shutil.copy(cert, self.gw_cert)
        shutil.copy(key, self.gw_key)
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "the TLS files changed; reconnecting" in self.gateway_log_text(), 15,
                 "the uplink to notice the new files")
        wait_for(lambda: self.gateway_log_text().count("uplink: connected") >= 2, 15,
                 "the uplink to reconnect")
        wait_for(lambda: "gw-1-rotated" in self.broker.log_text(), 10,
                 "the broker to see the new certificate")

        # A broken key on the next reload: the uplink refuses the new files
        # (since issue 13 a TLS problem is a warning of the config check, not
        # an error: the doors never wait for the cloud), the connection stays.
        with open(self.gw_key, "w") as f:
            f.write("not a key\n")
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "the new TLS files are not usable" in self.gateway_log_text(), 15,
                 "the broken key to be refused")
        self.assertIn("mqtt.key_file: is not an unencrypted PEM private key", self.gateway_log_text())

        self.assertTrue(json.loads(sim.output(timeout=120))["complete"])
        report = json.loads(checker.output(timeout=120))
        self.assert_complete_delivery(report, {l: 300 for l in self.lock_ids})
        self.assertEqual(self.gateway_log_text().count("uplink: connected"), 2)
        self.assertIsNone(self.gateway.proc.poll())


    def test_renewed_files_dropped_in_place_are_used_without_a_signal(self):
        """Issue 5: rotation in the middle of a 10,000-event stream, noticed by
        the uplink's watch of the files (no SIGHUP); the broker sees the new
        certificate (its CN, via use_identity_as_username) and every event
        arrives."""
        per_lock = 3334  # 10,002 events from three locks
        checker = self.start_checker(expect=per_lock * self.locks, timeout=180,
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        sim = self.locksim(events=per_lock, rate=700, batch=5, duration=170)
        time.sleep(3)
        cert, key = self.pki.issue("gw-1-renewed")
        # As a renewal tool would: new files beside the old, renamed into place.
        for src, dst in [(cert, self.gw_cert), (key, self.gw_key)]:
            shutil.copy(src, dst + ".new")
            os.rename(dst + ".new", dst)
        wait_for(lambda: "the TLS files changed; reconnecting" in self.gateway_log_text(), 15,
                 "the uplink to notice the renewed files")
        wait_for(lambda: "u'gw-1-renewed'" in self.broker.log_text(), 15,
                 "the broker to see the renewed certificate")
        self.assertTrue(json.loads(sim.output(timeout=170))["complete"])
        report = json.loads(checker.output(timeout=170))
        self.assert_complete_delivery(report, {l: per_lock for l in self.lock_ids})
        rc, status = self.status()
        self.assertEqual(rc, 0, status)
        # The test CA issues for 30 days: 29 whole days left, under the warning's 30.
        self.assertEqual(status["tls"]["client_cert_days_left"], 29)
        self.assertTrue(status["tls"]["expiring_soon"])
        self.assertIn("expires in 29 days", self.gateway_log_text())


if __name__ == "__main__":
    unittest.main()
