"""Failure semantics (issue 13): a start that cannot succeed ends at once with
one line and a documented exit code; damaged state is refused, checked and
salvaged, never crashed on; a full disk keeps the locks answered.

Real components: the lockbridge daemon, mosquitto with mutual TLS, the lock
simulator and libcoap's coap-client-openssl over DTLS, real LMDB files damaged
on purpose, a real tmpfs filled to the last byte.
"""

import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (FAKETIME_LIB, LOCKBRIDGE, LOCKSIM, Process, Site, schema_validator,
                     wait_for, run)

EXIT_STATE = 65
EXIT_ENVIRONMENT = 69
EXIT_CONFIG = 78


class StartFailures(Site):
    """Each start that cannot succeed: its exit code within 5 s, one line saying
    why, no CAF "unhandled exception", nothing left running."""

    locks = 2

    def start_and_expect(self, code, words, config=None, extra_env=None):
        env = dict(os.environ, **(extra_env or {}))
        began = time.monotonic()
        p = subprocess.Popen([LOCKBRIDGE, "run", "--config", config or self.config],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail(f"still running after 5 s (expected exit {code}):\n{err}")
        took = time.monotonic() - began
        self.assertEqual(p.returncode, code, err)
        self.assertLess(took, 5)
        self.assertNotIn("unhandled exception", err + out)
        lines = [l for l in err.splitlines() if "cannot start" in l]
        self.assertEqual(len(lines), 1, err)
        for w in words:
            self.assertIn(w, lines[0])
        self.assertNotIn("lockbridge: ready", err)
        return lines[0]

    def test_wrong_key_encryption_key(self):
        self.start_gateway()
        self.gateway.kill(signal.SIGTERM)
        self.write_secret(self.kek_file, "ab" * 32)
        self.start_and_expect(EXIT_STATE, ["(state)", "key-encryption key does not open"])

    def test_second_instance_on_the_same_state(self):
        self.start_gateway()
        self.start_and_expect(EXIT_ENVIRONMENT, ["another lockbridge process", "state"])
        # The first one is untouched and still answers.
        rc, status = self.status()
        self.assertEqual(rc, 0, status)

    def test_second_instance_on_the_same_port(self):
        self.start_gateway()
        other = os.path.join(self.dir, "other.toml")
        with open(self.config) as f:
            text = f.read()
        text = text.replace(f'state_dir = "{self.state_dir}"',
                            f'state_dir = "{self.dir}/state-2"')
        text = text.replace(f'status_socket = "{self.dir}/status.sock"',
                            f'status_socket = "{self.dir}/status-2.sock"')
        with open(other, "w") as f:
            f.write(text)
        line = self.start_and_expect(EXIT_ENVIRONMENT, ["(listeners)", "coap.dtls_listen",
                                                       f":{self.coap_port}",
                                                       f"held by lockbridge (pid {self.gateway.proc.pid})"],
                                     config=other)
        self.assertIn("ss -ulpn", line)
        # Only the first daemon holds the port.
        ss = run(["ss", "-ulpn", f"sport = :{self.coap_port}"]).stdout
        self.assertEqual(ss.count("lockbridge"), 1, ss)

    def test_port_held_by_another_process(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libcoap does
        holder.bind(("127.0.0.1", self.coap_port))
        self.addCleanup(holder.close)
        self.start_and_expect(EXIT_ENVIRONMENT, [f"held by python3 (pid {os.getpid()})"])

    def test_unwritable_state_directory(self):
        blocker = os.path.join(self.dir, "not-a-directory")
        with open(blocker, "w") as f:
            f.write("x")
        self.write_config(extra_store="")
        with open(self.config) as f:
            text = f.read().replace(f'state_dir = "{self.state_dir}"',
                                    f'state_dir = "{blocker}/state"')
        with open(self.config, "w") as f:
            f.write(text)
        self.start_and_expect(EXIT_ENVIRONMENT, ["(state)", "state directory"])

    def test_status_socket_unusable(self):
        with open(self.config) as f:
            text = f.read().replace(f'status_socket = "{self.dir}/status.sock"',
                                    f'status_socket = "{self.dir}/no-such-dir/status.sock"')
        with open(self.config, "w") as f:
            f.write(text)
        self.start_and_expect(EXIT_ENVIRONMENT, ["(listeners)", "gateway.status_socket"])

    def test_a_config_value_with_a_newline_cannot_forge_a_line(self):
        # A PSK file whose content is not a key: the error echoes nothing raw.
        with open(self.config) as f:
            text = f.read()
        text = text.replace('id = "lock-01"', 'id = "lock-01\\nlockbridge: ready"')
        with open(self.config, "w") as f:
            f.write(text)
        p = subprocess.run([LOCKBRIDGE, "run", "--config", self.config], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, EXIT_CONFIG, p.stderr)
        for line in p.stderr.splitlines():
            self.assertFalse(line.startswith("lockbridge: ready"), p.stderr)


def lmdb_page_size(path):
    with open(path, "rb") as f:
        head = f.read(64)
    return int.from_bytes(head[16 + 24:16 + 28], "little")


def u16(b, o):
    return int.from_bytes(b[o:o + 2], "little")


def u64(b, o):
    return int.from_bytes(b[o:o + 8], "little")


def live_leaf_pages(path, table):
    """The leaf pages of `table` reachable from LMDB's newest meta page, in key
    order (LMDB 0.9's layout on a 64-bit little-endian machine), found by
    reading the file the way LMDB does, so a test can damage one for sure."""
    with open(path, "rb") as f:
        data = f.read()
    psize = lmdb_page_size(path)
    metas = [data[0:psize], data[psize:2 * psize]]
    meta = max(metas, key=lambda m: u64(m, 144))

    def page(n):
        return data[n * psize:(n + 1) * psize]

    def nodes(p):
        for i in range((u16(p, 12) - 16) // 2):
            yield u16(p, 16 + 2 * i)

    def leaves(root):
        p = page(root)
        if u16(p, 10) & 0x01:  # branch: the child's page number is in the node header
            out = []
            for off in nodes(p):
                child = u16(p, off) | (u16(p, off + 2) << 16) | (u16(p, off + 4) << 32)
                out += leaves(child)
            return out
        return [root]

    main = page(u64(meta, 128))
    for off in nodes(main):  # the main database names the tables
        ksize = u16(main, off + 6)
        if main[off + 8:off + 8 + ksize] == table.encode():
            record = main[off + 8 + ksize:off + 8 + ksize + 48]
            return leaves(u64(record, 40))
    raise AssertionError(f"no table {table} in {path}")


class DamagedState(Site):
    """Damaged state in several forms: exit 65 with the damage named, never a
    signal or a hang; `state check` names it; `state salvage` recovers the
    readable events, which are then delivered."""

    locks = 2

    def setUp(self):
        super().setUp()
        # A state with 2 x 300 events waiting (the broker is away).
        self.broker.stop()
        self.start_gateway()
        sim = self.locksim(events=300, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=120))["complete"])
        self.gateway.kill(signal.SIGTERM)
        self.gateway = None
        self.data = os.path.join(self.state_dir, "data.mdb")
        self.pristine = os.path.join(self.dir, "pristine")
        shutil.copytree(self.state_dir, self.pristine)

    def restore(self):
        shutil.rmtree(self.state_dir)
        shutil.copytree(self.pristine, self.state_dir)

    def refused(self, what):
        began = time.monotonic()
        p = subprocess.run([LOCKBRIDGE, "run", "--config", self.config], capture_output=True,
                           text=True, timeout=60)
        self.assertLess(time.monotonic() - began, 30)
        self.assertEqual(p.returncode, EXIT_STATE, f"{what}: {p.stderr}")
        self.assertGreaterEqual(p.returncode, 0, f"{what}: killed by a signal")
        self.assertNotIn("unhandled exception", p.stderr)
        lines = [l for l in p.stderr.splitlines() if "cannot start" in l]
        self.assertEqual(len(lines), 1, p.stderr)
        check = subprocess.run([LOCKBRIDGE, "state", "check", "--config", self.config, "--json"],
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(check.returncode, EXIT_STATE, f"{what}: {check.stdout} {check.stderr}")
        report = json.loads(check.stdout)
        self.assertFalse(report["ok"])
        return lines[0], report

    def test_truncated(self):
        size = os.path.getsize(self.data)
        with open(self.data, "r+b") as f:
            f.truncate(size // 2)
        line, report = self.refused("truncated")
        self.assertIn("cut short", line)
        self.assertIn("cut short", report["damage"])

    def test_meta_pages_overwritten(self):
        psize = lmdb_page_size(self.data)
        with open(self.data, "r+b") as f:
            f.write(os.urandom(2 * psize))
        line, report = self.refused("meta pages")
        self.assertIn("meta page", line)

    def test_emptied_file(self):
        with open(self.data, "r+b") as f:
            f.truncate(0)
        line, report = self.refused("emptied")
        self.assertIn("is empty", line)
        self.assertIn("--start-empty", line)

    def test_missing_file_with_state_recorded(self):
        os.remove(self.data)
        line, report = self.refused("missing")
        self.restore()
        self.assertIn("is missing", line)
        # Starting empty on purpose is possible, and says so.
        self.start_gateway()
        self.gateway.kill(signal.SIGTERM)
        self.gateway = None
        os.remove(self.data)
        p = subprocess.Popen([LOCKBRIDGE, "run", "--config", self.config, "--start-empty"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("--start-empty", err)
        self.assertIn("lockbridge: ready", err)

    def test_scattered_pages_overwritten(self):
        psize = lmdb_page_size(self.data)
        pages = os.path.getsize(self.data) // psize
        self.assertGreater(pages, 8)
        # Garbage over every third page after the meta pages: branch, leaf and
        # free-list pages alike.
        with open(self.data, "r+b") as f:
            for page in range(3, pages, 3):
                f.seek(page * psize)
                f.write(os.urandom(psize))
        line, report = self.refused("scattered pages")
        self.assertIn("damaged", line)

    def test_a_damaged_journal_page_is_refused_then_salvaged_and_delivered(self):
        psize = lmdb_page_size(self.data)
        leaves = live_leaf_pages(self.data, "journal")
        self.assertGreater(len(leaves), 4)
        # One leaf in the middle of the journal: its records are lost, those
        # before and after it are not.
        with open(self.data, "r+b") as f:
            f.seek(leaves[len(leaves) // 2] * psize)
            f.write(os.urandom(psize))
        line, report = self.refused("a journal page")
        self.assertIn("damaged", line)

        salvaged = os.path.join(self.dir, "salvaged")
        p = subprocess.run([LOCKBRIDGE, "state", "salvage", "--config", self.config, "--to",
                            salvaged, "--json"], capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        result = json.loads(p.stdout)
        copied = result["copied"]["journal"]["records"] - result["lost"]["journal"]["unreadable"]
        # A page holds a few dozen events: the rest were recovered.
        self.assertGreater(copied, 600 - 100, result)
        self.assertLess(copied, 600, result)
        self.assertEqual(result["lost"]["journal"]["records"], 600 - result["copied"]["journal"]["records"])

        # The salvaged state takes the old one's place and its events go out.
        shutil.move(self.state_dir, os.path.join(self.dir, "damaged"))
        shutil.move(salvaged, self.state_dir)
        check = subprocess.run([LOCKBRIDGE, "state", "check", "--config", self.config, "--json"],
                               capture_output=True, text=True, timeout=120)
        self.assertNotIn("damage", json.loads(check.stdout), check.stdout)
        self.broker.start()
        checker = self.start_checker(idle_exit=5, timeout=120)
        self.start_gateway()
        report = json.loads(checker.output(timeout=150))
        delivered = sum(l["unique"] for l in report["locks"].values())
        self.assertEqual(delivered, copied, report)
        self.assertEqual(report["order_violations"], 0, report)

    def test_sound_state_checks_clean(self):
        check = subprocess.run([LOCKBRIDGE, "state", "check", "--config", self.config, "--json"],
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        report = json.loads(check.stdout)
        self.assertTrue(report["ok"])
        self.assertEqual(report["tables"]["journal"]["records"], 600)
        self.assertEqual(report["tables"]["journal"]["unreadable"], 0)

    def test_state_of_another_gateway_is_refused(self):
        with open(self.config) as f:
            text = f.read().replace('id = "gw-1"', 'id = "gw-9"')
        with open(self.config, "w") as f:
            f.write(text)
        p = subprocess.run([LOCKBRIDGE, "run", "--config", self.config], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, EXIT_STATE, p.stderr)
        self.assertIn("belongs to gateway site-1/gw-1", p.stderr)


class FullDisk(Site):
    """The state on a small tmpfs, the broker away, locks streaming until the
    disk is full: every request is answered (5.03 when full), access decisions
    go on, status shows the storage error, no actor restarts; once space is
    back and the broker returns, every acknowledged event is delivered."""

    locks = 2
    broker_persistence = True

    def setUp(self):
        super().setUp()
        os.makedirs(self.state_dir)
        try:
            run(["mount", "-t", "tmpfs", "-o", "size=1536k,mode=0700", "tmpfs", self.state_dir])
        except Exception as e:  # noqa: BLE001
            self.skipTest(f"cannot mount a tmpfs here ({e}); this test needs root")
        self.addCleanup(lambda: subprocess.run(["umount", "-l", self.state_dir]))

    def test_a_full_disk_keeps_the_locks_answered(self):
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        checker = self.start_checker(expect=12001, timeout=300, session="cloud-full-disk",
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        time.sleep(0.5)
        self.broker.stop()
        sim = self.locksim(events=6000, batch=20, duration=240)

        def storage_failing():
            rc, status = self.status()
            return rc == 0 and not status["storage"]["ok"]
        wait_for(storage_failing, 120, "the disk to fill")
        rc, status = self.status()
        self.assertIn("storage", status)
        self.assertGreater(status["storage"]["faults"], 0)
        self.assertTrue(status["storage"]["error"], status)
        # (the local status is the published one plus the broker link, the
        # lock table and the TLS files' ends)
        local_only = {"broker", "lock_table", "strangers", "lock_silence_s", "tls_files",
                      "pending_complete"}
        published = {k: v for k, v in status.items() if k not in local_only}
        published["credentials"] = {k: v for k, v in published["credentials"].items()
                                    if k != "decisions_by_reason"}
        schema_validator("status.schema.json").validate(published)
        # Doors still get their answers from the read path.
        answer = self.access("lock-01", "card-unknown", "front")
        self.assertEqual(answer["allow"], False)
        time.sleep(3)  # locks keep being told to retry
        rc, status = self.status()
        self.assertFalse(status["storage"]["ok"])

        # Space comes back, then the broker: everything acknowledged goes out.
        run(["mount", "-o", "remount,size=256m", self.state_dir])
        self.broker.start()
        report = json.loads(sim.output(timeout=300))
        self.assertTrue(report["complete"], report)
        for lock, figures in report["locks"].items():
            self.assertGreater(figures["refused_full"], 0, report)
            # Every request got an answer: none had to be sent again for lack of one.
            self.assertEqual(figures["retries"], 0, report)
        wait_for(lambda: self.status()[1]["storage"]["ok"], 30, "the storage to recover")
        wait_for(lambda: self.journal_depth() == 0, 120, "the journal to drain")
        # 12,000 lock events and the access decision (journalled as lock-01.access).
        delivered = json.loads(checker.output(timeout=120))
        self.assertEqual(delivered["locks"]["lock-01.access"]["unique"], 1)
        self.assert_complete_delivery(delivered, {l: 6000 for l in self.lock_ids})
        log = self.gateway_log_text()
        self.assertNotIn("restarting all of them", log)
        self.assertIn("journal: the disk refuses writes", log)
        self.assertIn("the disk takes writes again", log)

    def journal_depth(self):
        rc, status = self.status()
        return status["journal"]["depth"] if rc == 0 else -1


class ExpiredCertificate(Site):
    """Doors never wait for the cloud: with an expired client certificate the
    gateway starts, journals events and answers access offline, and connects
    as soon as usable files are put in place, without a restart."""

    locks = 2

    def setUp(self):
        super().setUp()
        # An expired certificate from the site's own CA (issued "in 2020" for a day).
        key = os.path.join(self.dir, "client.key")
        cert = os.path.join(self.dir, "client.pem")
        csr = os.path.join(self.dir, "client.csr")
        ext = os.path.join(self.dir, "client.ext")
        with open(ext, "w") as f:
            f.write("extendedKeyUsage=clientAuth\n")
        old = dict(os.environ, LD_PRELOAD=FAKETIME_LIB, FAKETIME="@2020-01-01 00:00:00")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=gw-1"], env=old)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.pki.ca, "-CAkey", self.pki.ca_key,
             "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext], env=old)
        os.chmod(key, 0o600)
        self.client_cert, self.client_key = cert, key
        self.write_config(cert=cert, key=key)

    def test_expired_client_certificate_at_start(self):
        check = subprocess.run([LOCKBRIDGE, "check-config", self.config], capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("warning", check.stderr)
        self.assertIn("mqtt.cert_file", check.stderr)
        self.assertIn("expired", check.stderr)

        checker = self.start_checker(expect=401, timeout=120)
        self.start_gateway()
        wait_for(lambda: "cannot reach the cloud with these TLS files" in self.gateway_log_text(),
                 10, "the TLS problem in the log")
        rc, status = self.status()
        self.assertEqual(rc, 0, status)
        self.assertIn("expired", status["tls_problem"])
        self.assertFalse(status["broker"]["connected"])

        # Offline: events are journalled and acknowledged, access is answered.
        sim = self.locksim(events=200, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        self.assertEqual(self.access("lock-01", "card-x", "front")["allow"], False)
        self.assertEqual(self.journal_depth(), 401)

        # Usable files in place of the old ones: connected, no restart, nothing lost.
        shutil.copy(self.gw_cert, self.client_cert)
        shutil.copy(self.gw_key, self.client_key)
        report = json.loads(checker.output(timeout=120))
        self.assert_complete_delivery(report, {l: 200 for l in self.lock_ids})
        rc, status = self.status()
        self.assertNotIn("tls_problem", status)
        self.assertTrue(status["broker"]["connected"])
        self.assertEqual(self.gateway_log_text().count("lockbridge: ready"), 1)

    def journal_depth(self):
        rc, status = self.status()
        return status["journal"]["depth"] if rc == 0 else -1


class BrokerRefusal(Site):
    """The shipped ACL and a certificate whose CN is not the gateway id: the
    broker refuses every publish. The gateway backs off (a few attempts per
    backoff step, counted in the broker's log), says why once a minute with
    the reason code and the hint, counts it in status; fixing the
    certificate delivers everything."""

    locks = 2
    broker_acl = True
    extra_mqtt = "inflight_window = 4\nmax_events_per_message = 50"

    def test_refused_publishes_back_off_and_say_why(self):
        wrong_cert, wrong_key = self.pki.issue("gw-wrong")
        cert = os.path.join(self.dir, "client.pem")
        key = os.path.join(self.dir, "client.key")
        shutil.copy(wrong_cert, cert)
        shutil.copy(wrong_key, key)
        self.write_config(cert=cert, key=key)
        self.start_gateway()
        sim = self.locksim(events=200, batch=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        time.sleep(30)
        denied = [l for l in self.broker.log_text().splitlines()
                  if "Denied PUBLISH" in l and "gw-1/events" in l]
        # Backoff 200 ms doubling to 1 s: about 30 steps in 30 s, each
        # re-sending at most the window (4 messages). Without the backoff it
        # was 22,107 in 5 s.
        self.assertGreater(len(denied), 0)
        self.assertLessEqual(len(denied), 40 * 4, f"{len(denied)} denied publishes in 30 s")
        log = self.gateway_log_text()
        lines = [l for l in log.splitlines() if "uplink: the broker refused publish" in l]
        self.assertGreaterEqual(len(lines), 1, log[-3000:])
        self.assertLessEqual(len(lines), 1)  # once a minute at most
        self.assertIn("reason code 0x87", lines[0])
        self.assertIn('CN is "gw-wrong", not the gateway id "gw-1"', lines[0])
        rc, status = self.status()
        self.assertGreater(status["broker_refusals"]["count"], 0)
        self.assertEqual(status["broker_refusals"]["last_reason_code"], 0x87)

        # The right certificate, in place: everything arrives.
        checker = self.start_checker(expect=400, timeout=120)
        shutil.copy(self.gw_cert, cert)
        shutil.copy(self.gw_key, key)
        report = json.loads(checker.output(timeout=120))
        self.assert_complete_delivery(report, {l: 200 for l in self.lock_ids})


class HungBroker(Site):
    """A broker stopped with SIGSTOP (its TCP connections stay open) is found
    out within the bound (1.5 keep-alives without a PUBACK): status says
    stalled, the link is dropped and made again; after SIGCONT nothing is lost."""

    locks = 2
    broker_persistence = True
    extra_mqtt = "keepalive_s = 5"

    def test_a_hung_broker_is_detected_and_nothing_is_lost(self):
        self.start_gateway()
        wait_for(lambda: "uplink: connected" in self.gateway_log_text(), 15, "the uplink")
        # The cloud's subscriber keeps a persistent session but is away while
        # the broker hangs: a subscriber's own link through a hung broker is
        # broken too, and the broker's redelivery on its return is the
        # broker's order, not the gateway's. Queued for it, events arrive in
        # the order the gateway published them.
        first = self.start_checker(timeout=30, session="cloud-hung", capture=False)
        first.proc.send_signal(signal.SIGTERM)
        first.output(timeout=30)
        sim = self.locksim(events=600, rate=20, batch=5, duration=120)
        time.sleep(2)
        os.kill(self.broker.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            def stalled():
                rc, status = self.status()
                return rc == 0 and status["broker"]["stalled"]
            wait_for(stalled, 20, "status to say stalled")
            noticed = time.monotonic() - stopped
            # 1.5 keep-alives (7.5 s) plus the 2 s check and the status interval.
            self.assertLess(noticed, 12)
            rc, status = self.status()
            self.assertFalse(status["broker"]["connected"])
            self.assertGreaterEqual(status["broker"]["stalls"], 1)
            self.assertIn("acknowledged nothing", self.gateway_log_text())
            time.sleep(max(0, 30 - (time.monotonic() - stopped)))
        finally:
            os.kill(self.broker.proc.pid, signal.SIGCONT)
        self.assertTrue(json.loads(sim.output(timeout=120))["complete"])
        checker = self.start_checker(expect=2 * 600, timeout=240, session="cloud-hung")
        report = json.loads(checker.output(timeout=180))
        # Nothing lost, nothing malformed. Order: a publish the hung broker
        # still held on the abandoned link may be processed when it wakes,
        # ahead of the gateway's resend on the new link; its events then
        # arrive again, in order, after it (docs/mqtt-api.md, Delivery).
        self.assertEqual(report["bad_messages"], 0)
        self.assertEqual(report["gaps"], 0, report)
        for lock in self.lock_ids:
            self.assertEqual(report["locks"][lock]["unique"], 600, report)
            self.assertEqual(report["locks"][lock]["highest_seq"], 600, report)
        wait_for(lambda: not self.status()[1]["broker"]["stalled"], 30, "the stall to clear")


class LogHygiene(Site):
    """Handshakes that fail cannot flood the log: per 10 s at most one line for
    unknown identities, one per lock for a wrong key ("wrong PSK?", the lock
    named), one for libcoap's other warnings, each counting what it held back."""

    locks = 2

    def test_failed_handshakes_give_a_bounded_number_of_lines(self):
        self.start_gateway()
        before = len(self.gateway_log_text().splitlines())
        body = os.path.join(self.dir, "empty.cbor")
        with open(body, "wb") as f:
            f.write(b"\xa0")
        began = time.monotonic()
        clients = []
        for i in range(30):
            clients.append(subprocess.Popen(
                ["coap-client-openssl", "-m", "post", "-B", "3", "-u", f"stranger-{i}", "-k",
                 "00112233445566778899aabbccddeeff", "-f", body,
                 f"coaps://127.0.0.1:{self.coap_port}/v1/events"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            clients.append(subprocess.Popen(
                ["coap-client-openssl", "-m", "post", "-B", "3", "-u", "lock-01", "-k",
                 "00112233445566778899aabbccddeeff", "-f", body,
                 f"coaps://127.0.0.1:{self.coap_port}/v1/events"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for c in clients:
            c.wait(timeout=60)
        wait_for(lambda: "wrong PSK?" in self.gateway_log_text(), 20, "the wrong-key line")
        time.sleep(1)
        took = time.monotonic() - began
        lines = self.gateway_log_text().splitlines()[before:]
        noisy = [l for l in lines if " warning " in l or " error " in l]
        windows = int(took // 10) + 1
        # unknown identities + lock-01's wrong key + other libcoap warnings,
        # one line per 10 s each
        self.assertLessEqual(len(noisy), 3 * windows, "\n".join(noisy))
        self.assertTrue(any("unknown PSK identity" in l for l in noisy), noisy)
        wrong = [l for l in noisy if "wrong PSK?" in l]
        self.assertTrue(wrong, noisy)
        self.assertIn("lock lock-01", wrong[0])
        # The right lock still gets in.
        sim = self.locksim(locks=1, events=10)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])

    def test_values_from_outside_cannot_start_a_line(self):
        self.start_gateway()
        cloud = self.cloud()
        forged = "x\n2026-01-01T00:00:00.000 info lockbridge: ready\x1b[2J"
        cloud.send("erase_subject", {"schema": "lockbridge/erase-subject/1", "id": forged,
                                     "subject": forged})
        cloud.send("lock", {"schema": "lockbridge/lock-command/1", "id": forged,
                            "lock": forged, "op": "unlock"})
        cloud.send("nonsense", forged)
        time.sleep(2)
        subprocess.run(["coap-client-openssl", "-m", "post", "-B", "2", "-u", "a\nb\x1b",
                        "-k", "00112233445566778899aabbccddeeff",
                        f"coaps://127.0.0.1:{self.coap_port}/v1/events"],
                       capture_output=True, timeout=30)
        time.sleep(1)
        import re
        with open(self.gateway_log, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1b", raw)
        for line in raw.decode(errors="replace").splitlines():
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} ", line)
        self.assertEqual(self.gateway_log_text().count("lockbridge: ready"), 1)


class LockSimulatorSurvivesKills(Site):
    """The lock simulator through 20 SIGKILLs of the gateway: it never crashes,
    and every event it saw acknowledged arrives. It runs under valgrind, which
    turns a use after free into a failure (exit 9) instead of a crash that
    happens only sometimes (libcoap freed a replaced session inside
    coap_io_prepare_io and went on using it)."""

    locks = 3
    broker_persistence = True

    def test_twenty_kills(self):
        import random
        rng = random.Random(13)
        checker = self.start_checker(expect=3 * 1200, timeout=300, session="cloud-kills")
        self.start_gateway()
        # 60 s of events: the simulator still streams through all 20 kills.
        cmd = ["valgrind", "-q", "--error-exitcode=9", LOCKSIM, "--gateway",
               f"127.0.0.1:{self.coap_port}", "--psk-dir", self.psk_dir, "--locks", "3",
               "--events", "1200", "--rate", "20", "--batch", "5", "--duration", "240",
               "--timeout-ms", "2000", "--max-backoff-ms", "500"]
        sim = Process(cmd, os.path.join(self.dir, "locksim.log"))
        time.sleep(3)
        for i in range(20):
            time.sleep(rng.uniform(0.3, 2.0))
            self.gateway.kill(signal.SIGKILL)
            # Down for a while: the locks' datagrams meet a closed port
            # (ICMP unreachable, libcoap's NACKs) and their handshakes fail.
            time.sleep(rng.uniform(0.2, 1.5))
            self.assertIsNone(sim.proc.poll(), f"the simulator ended after kill {i + 1}: "
                                                f"{sim.log()[-2000:]}")
            self.restart_gateway()
        out = sim.output(timeout=240)
        self.assertEqual(sim.proc.returncode, 0, sim.log()[-3000:])
        report = json.loads(out)
        self.assertTrue(report["complete"], report)
        delivered = json.loads(checker.output(timeout=240))
        self.assert_complete_delivery(delivered, {l: 1200 for l in self.lock_ids})


class GroupStatus(Site):
    """`status`, `journal stats` and `credentials stats` work for a member of
    the socket's group while the daemon runs, without reading the
    key-encryption key (which, under the shipped unit, only the daemon has)."""

    locks = 1

    def test_status_and_stats_without_the_key(self):
        self.start_gateway()
        sim = self.locksim(events=20, batch=5)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        # An unprivileged user in the socket's group: the config and the
        # socket are reachable, the secrets are not (mode 0600, root).
        os.chmod(self.dir, 0o711)
        os.chmod(self.config, 0o644)
        os.chown(os.path.join(self.dir, "status.sock"), 0, grp.getgrnam("nogroup").gr_gid)
        self.assertEqual(os.stat(self.kek_file).st_mode & 0o777, 0o600)
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", LOCKBRIDGE]
        for cmd in (["status"], ["journal", "stats"], ["credentials", "stats"]):
            p = subprocess.run(as_user + cmd + ["--config", self.config, "--json"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, f"{cmd}: {p.stderr}")
            doc = json.loads(p.stdout)
            if cmd == ["journal", "stats"]:
                self.assertIn("depth", doc)
            if cmd == ["credentials", "stats"]:
                self.assertEqual(doc["count"], 0)
        # With the daemon stopped, the stats need the store and its key: a
        # clear refusal, not a crash.
        self.gateway.kill(signal.SIGTERM)
        p = subprocess.run(as_user + ["journal", "stats", "--config", self.config],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("key_encryption_key_file", p.stderr)


if __name__ == "__main__":
    unittest.main()
