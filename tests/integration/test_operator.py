"""What an operator sees on the box (issue 17, items 3 and 4): `lockbridge
status` and `lockbridge locks` with a lock table against a running gateway
with locks in different states (one available with events waiting, one never
seen, one refused for a wrong key, and an identity no lock has), the log
level changed at run time through the local socket (audited, back after
--for), and the metrics endpoint scraped over HTTP.

Real components: mosquitto, lockbridge, the lock simulator and libcoap's own
client over DTLS.
"""

import grp
import json
import os
import pwd
import secrets
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus_text

from harness import LOCKBRIDGE, Broker, Site, free_port, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


class Operator(Site):
    locks = 3

    def setUp(self):
        super().setUp()
        self.metrics_port = free_port()
        os.environ["LOCKBRIDGE_METRICS__LISTEN"] = f"127.0.0.1:{self.metrics_port}"
        self.addCleanup(os.environ.pop, "LOCKBRIDGE_METRICS__LISTEN", None)

    def scrape(self, path="/metrics", accept="application/openmetrics-text; version=1.0.0",
               method="GET", body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}{path}",
                                     headers={"Accept": accept}, method=method, data=body)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read().decode()

    def cli(self, *args, check=True):
        p = subprocess.run([LOCKBRIDGE, *args, "--config", self.config], capture_output=True,
                           text=True, timeout=30)
        if check and p.returncode != 0:
            raise AssertionError(f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def locks_json(self):
        return json.loads(self.cli("locks", "--json").stdout)

    def make_site_states(self):
        """lock-01 sends 20 events while the broker is away (they wait);
        lock-02 is never heard from; lock-03 tries with a wrong key; someone
        tries an identity no lock has."""
        self.broker.stop()
        sim = self.locksim(locks=1, events=20, batch=5)
        self.assertTrue(json.loads(sim.output(60))["complete"], sim.log())
        body = os.path.join(self.dir, "empty.cbor")
        with open(body, "wb") as f:
            f.write(b"\x80")
        self.coap_client("lock-03", secrets.token_hex(16), body)  # cannot complete
        self.coap_client("lock-99", secrets.token_hex(16), body)

        def refused():
            rows = {r["id"]: r for r in self.locks_json()["locks"]}
            return "last_refusal" in rows["lock-03"]
        wait_for(refused, 30, "lock-03's refusal in the lock table")

    def test_lock_table_shows_each_lock_state_with_a_hint(self):
        self.start_gateway()
        self.make_site_states()
        doc = self.locks_json()
        rows = {r["id"]: r for r in doc["locks"]}
        self.assertEqual(sorted(rows), ["lock-01", "lock-02", "lock-03"])
        self.assertTrue(doc["pending_complete"])

        one, two, three = rows["lock-01"], rows["lock-02"], rows["lock-03"]
        self.assertTrue(one["available"])
        self.assertGreater(one["last_seen"], 0)
        self.assertEqual(one["pending"], 20)  # the broker is away: all 20 wait
        self.assertEqual(one["transport"], "coap")
        self.assertNotIn("last_refusal", one)

        self.assertFalse(two["available"])
        self.assertEqual(two["last_seen"], 0)
        self.assertEqual(two["pending"], 0)

        self.assertFalse(three["available"])
        self.assertEqual(three["last_refusal"]["reason"], "wrong_key")
        self.assertTrue(three["last_refusal"]["peer"].startswith("127.0.0.1:"))
        self.assertGreaterEqual(three["last_refusal"]["count"], 1)
        self.assertEqual([s["identity"] for s in doc["strangers"]], ["lock-99"])

        # The same, for a person.
        text = self.cli("locks").stdout
        lines = {l.split()[0]: l for l in text.splitlines() if l.startswith("lock-")}
        self.assertRegex(lines["lock-01"], r"lock-01\s+coap\s+yes\s+(just now|\d+ s ago)\s+20\s+-")
        self.assertRegex(lines["lock-02"], r"lock-02\s+coap\s+never seen\s+never\s+0\s+-")
        self.assertIn("wrong_key", lines["lock-03"])
        self.assertIn("wrong PSK?", lines["lock-03"])
        self.assertIn('"lock-99" from 127.0.0.1:', text)

        # `status` has the table too, the TLS files' ends and human units.
        status = self.cli("status").stdout
        self.assertIn("lock-03", status)
        self.assertRegex(status, r"certificate .* expires in \d+ d")
        self.assertRegex(status, r"journal: +20 events waiting, [\d.]+ (B|KiB) of 512\.0 MiB \(<0\.1 %\)")
        self.assertNotRegex(status, r"\d\.\d{4,}")  # no figures with noise digits
        full = self.status()[1]
        self.assertGreater(full["tls_files"]["cert"]["expires_at"], time.time() * 1000)
        self.assertEqual(full["locks"]["configured"], 3)  # the MQTT status's fields stay
        self.assertEqual([r["id"] for r in full["lock_table"]], ["lock-01", "lock-02", "lock-03"])
        self.assertIn("decisions_by_reason", full["credentials"])

    def test_metrics_endpoint_is_scraped_with_every_status_figure(self):
        self.start_gateway()
        self.make_site_states()
        code, ctype, text = self.scrape()
        self.assertEqual(code, 200, text)
        self.assertTrue(ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype)
        # A real OpenMetrics parser (python3-prometheus-client) reads all of it.
        families = {f.name: f for f in openmetrics(text)}
        samples = {}
        for f in families.values():
            for smp in f.samples:
                samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value

        def value(name, **labels):
            return samples[(name, tuple(sorted(labels.items())))]

        self.assertEqual(families["lockbridge_events_received"].type, "counter")
        self.assertEqual(value("lockbridge_journal_events"), 20)
        self.assertGreater(value("lockbridge_journal_bytes"), 0)
        self.assertEqual(value("lockbridge_journal_limit_bytes"), 512 * 1024 * 1024)
        self.assertGreaterEqual(value("lockbridge_journal_oldest_pending_age_seconds"), 0)
        self.assertEqual(value("lockbridge_events_received_total"), 20)
        self.assertEqual(value("lockbridge_events_delivered_total"), 0)
        self.assertGreaterEqual(value("lockbridge_lock_refusals_total", transport="coap",
                                      reason="wrong_key"), 1)
        self.assertGreaterEqual(value("lockbridge_lock_refusals_total", transport="coap",
                                      reason="unknown_identity"), 1)
        self.assertEqual(value("lockbridge_access_decisions_total", reason="allowed"), 0)
        self.assertEqual(value("lockbridge_dtls_sessions"), 0)  # the simulator closed its own
        self.assertEqual(value("lockbridge_dtls_sessions_max"), 1000)
        self.assertEqual(value("lockbridge_uplink_connected"), 0)  # the broker is away
        self.assertIn(value("lockbridge_certificate_days_left", file="cert"), (29, 30))
        self.assertEqual(value("lockbridge_storage_ok"), 1)
        self.assertEqual(value("lockbridge_locks_configured"), 3)
        self.assertEqual(value("lockbridge_lock_available", lock="lock-01", transport="coap"), 1)
        self.assertEqual(value("lockbridge_lock_available", lock="lock-02", transport="coap"), 0)
        self.assertEqual(value("lockbridge_lock_available", lock="lock-03", transport="coap"), 0)
        self.assertEqual(value("lockbridge_info", site="site-1", gateway="gw-1",
                               version=self.status()[1]["version"]), 1)

        # Every metric the endpoint serves is documented in operations.md.
        with open(os.path.join(os.path.dirname(__file__), "../../docs/operations.md")) as f:
            ops = f.read()
        for name in families:
            self.assertIn(f"`{name}`", ops, f"{name} is not documented in docs/operations.md")

        # A scraper that does not ask for OpenMetrics gets Prometheus' text format.
        code, ctype, text = self.scrape(accept="text/plain")
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        names = {f.name for f in prometheus_text(text)}
        self.assertIn("lockbridge_journal_events", names)

        # Anything else is refused, and the daemon carries on.
        self.assertEqual(self.scrape("/")[0], 404)
        self.assertEqual(self.scrape(method="POST")[0], 405)
        self.assertEqual(self.scrape(method="POST", body=b"x" * 100_000)[0], 405)
        with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            s.recv(1024)
        self.assertEqual(self.scrape()[0], 200)

    def test_a_metrics_port_held_by_another_process_ends_the_start(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", self.metrics_port))
        holder.listen()
        self.addCleanup(holder.close)
        gw = self.start_gateway(wait_ready=False)
        gw.proc.wait(30)
        self.assertEqual(gw.proc.returncode, 69, gw.log())
        self.assertIn(f"metrics.listen 127.0.0.1:{self.metrics_port}: the TCP port is held by "
                      f"python3 (pid {os.getpid()})", gw.log())

    def test_log_level_changes_at_run_time_audited_and_goes_back(self):
        self.start_checker(timeout=120, topics=[PREFIX + "audit"])
        self.start_gateway()
        self.assertNotIn(" debug ", self.gateway.log())  # none at info
        p = self.cli("log-level", "debug", "--for", "3s")
        self.assertIn("log level debug (was info); back to info in 3 s", p.stdout)
        sim = self.locksim(locks=1, events=5, batch=5)
        self.assertTrue(json.loads(sim.output(60))["complete"], sim.log())
        wait_for(lambda: " debug " in self.gateway.log(), 15, "debug lines")
        wait_for(lambda: "log level back to info" in self.gateway.log(), 15,
                 "the level to go back")
        before = self.gateway.log().count(" debug ")
        sim = self.locksim(locks=1, events=10, batch=5, extra=["--start-seq", "6"])
        self.assertTrue(json.loads(sim.output(60))["complete"], sim.log())
        self.assertEqual(self.gateway.log().count(" debug "), before)

        # Bad requests change nothing and say what was expected.
        bad = self.cli("log-level", "loud", check=False)
        self.assertEqual(bad.returncode, 64)
        self.assertIn("trace", bad.stderr)
        bad = self.cli("log-level", "debug", "--for", "9d", check=False)
        self.assertEqual(bad.returncode, 64)
        self.assertIn("at most 7d", bad.stderr)
        self.assertEqual(self.gateway.log().count(" debug "), before)

        # Both changes are in the audit trail, as the cloud receives it.
        def audited():
            actions = [r["action"] for doc in self.captured() if doc["topic"].endswith("/audit")
                       for r in json.loads(doc["payload"])["records"]]
            return "log_level_changed" in actions and "log_level_restored" in actions
        wait_for(audited, 30, "the audit records of the change and its end")
        changed = [r for doc in self.captured() if doc["topic"].endswith("/audit")
                   for r in json.loads(doc["payload"])["records"]
                   if r["action"] == "log_level_changed"]
        self.assertEqual(changed[0]["detail"], {"level": "debug", "previous": "info", "for_s": 3,
                                                "by": "local socket"})


class Doctor(Site):
    """`lockbridge doctor` as root for the service user (here `nobody`): a good
    set-up, then three broken ones, each with the right finding."""

    locks = 2
    extra_mqtt = "cert_warning_days = 7"  # the test certificates last 30 days

    def setUp(self):
        super().setUp()
        # What the package's convention gives the service: directories it can
        # search, secrets readable by its group, its own state directory.
        service = pwd.getpwnam("nobody")
        group = grp.getgrnam("nogroup").gr_gid
        for d in (self.dir, self.psk_dir, self.pki.dir):
            os.chmod(d, 0o711)
        os.chown(self.dir, service.pw_uid, group)  # the status socket is made here
        secrets_ = [self.lookup_key_file, self.gw_key, self.config] + [
            os.path.join(self.psk_dir, f"{l}.psk") for l in self.lock_ids]
        for f in secrets_:
            os.chown(f, 0, group)
            os.chmod(f, 0o640)
        for f in (self.pki.ca, self.gw_cert):
            os.chmod(f, 0o644)
        # The key-encryption key stays root's: as under the shipped unit, it is
        # named in the file here, so the service must read it; give the group.
        os.chown(self.kek_file, 0, group)
        os.chmod(self.kek_file, 0o640)
        os.makedirs(self.state_dir)
        os.chown(self.state_dir, service.pw_uid, group)

    def doctor(self):
        p = subprocess.run([LOCKBRIDGE, "doctor", "--config", self.config, "--user", "nobody",
                            "--json"], capture_output=True, text=True, timeout=60)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["worst"], {0: "OK", 1: "WARNING", 2: "ERROR"}[p.returncode], doc)
        return p.returncode, doc["findings"]

    def problems(self, findings):
        return [f for f in findings if f["level"] != "OK"]

    def test_a_good_set_up_is_all_ok(self):
        rc, findings = self.doctor()
        self.assertEqual(rc, 0, self.problems(findings))
        checks = {f["check"] for f in findings}
        for check in ("config", "files", "ports", "broker", "tls", "clock", "disk", "daemon"):
            self.assertIn(check, checks)
        # Also with the daemon running: its port is its own, its clock compared.
        self.start_gateway()
        rc, findings = self.doctor()
        self.assertEqual(rc, 0, self.problems(findings))
        ports = [f["message"] for f in findings if f["check"] == "ports"]
        self.assertIn(f"held by the running daemon, lockbridge (pid {self.gateway.proc.pid})",
                      ports[0])
        text = subprocess.run([LOCKBRIDGE, "doctor", "--config", self.config, "--user", "nobody"],
                              capture_output=True, text=True, timeout=60).stdout
        self.assertRegex(text, r"\n0 error\(s\), 0 warning\(s\), \d+ OK\n")

    def test_a_key_the_service_user_cannot_read(self):
        os.chown(self.lookup_key_file, 0, 0)
        os.chmod(self.lookup_key_file, 0o600)
        rc, findings = self.doctor()
        self.assertEqual(rc, 2)
        [bad] = self.problems(findings)
        self.assertEqual(bad["check"], "files")
        self.assertIn(f"credentials.lookup_key_file {self.lookup_key_file}: the service user "
                      "nobody cannot read it (Permission denied; owner root:root, mode 0600)",
                      bad["message"])
        self.assertIn(f"chgrp nogroup {self.lookup_key_file} && chmod 0640", bad["fix"])

    def test_the_dtls_port_held_by_another_process(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", self.coap_port))
        self.addCleanup(holder.close)
        rc, findings = self.doctor()
        self.assertEqual(rc, 2)
        [bad] = self.problems(findings)
        self.assertEqual(bad["check"], "ports")
        self.assertIn(f"coap.dtls_listen[0] 127.0.0.1:{self.coap_port}: the UDP port is held by "
                      f"python3 (pid {os.getpid()})", bad["message"])
        self.assertIn(f"ss -ulpn 'sport = :{self.coap_port}'", bad["fix"])

    def test_a_broker_certificate_for_another_name(self):
        cert, key = self.pki.issue("broker.example", server=True, san="DNS:broker.example")
        os.makedirs(os.path.join(self.dir, "other-broker"))
        other = Broker(os.path.join(self.dir, "other-broker"), self.pki.ca, cert, key)
        other.start()
        self.addCleanup(other.stop)
        self.write_config(extra_mqtt=self.extra_mqtt)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace(self.broker.uri, other.uri))
        rc, findings = self.doctor()
        self.assertEqual(rc, 2)
        [bad] = self.problems(findings)
        self.assertEqual(bad["check"], "broker")
        self.assertIn(other.uri, bad["message"])
        self.assertIn("mismatch", bad["message"])
        self.assertIn("check mqtt.ca_file", bad["message"])


if __name__ == "__main__":
    unittest.main()
