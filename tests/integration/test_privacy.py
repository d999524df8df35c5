"""Data protection (issue 4): sealed values at rest, quarantine, key rotation
while events stream, erasure of a subject with the broker down, pseudonym
epochs and the destruction of old epoch keys, the hash-chained audit trail,
and a byte scan of everything the gateway wrote or sent.

Real components: mosquitto (mTLS), lockbridge, python3-paho-mqtt as the cloud,
libcoap's coap-client-openssl and the project's lock simulator as the locks,
the checker as the cloud's subscriber, python3-lmdb as an attacker with the
state file, libfaketime for the clock.
"""

import datetime
import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
import unittest

import lmdb

from harness import LOCKBRIDGE, Site, schema_validator, snapshot_chunks, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"
# Identifiers used below: none may appear in the state file, the log or any
# MQTT message (with the lock simulator's CARD-<lock>-<n>).
ALICE_1, ALICE_2, BOB, PIN = "04A11CE001", "04A11CE002", "04B0B00001", "582913"
SUBJECTS = {ALICE_1: "sub-ALICE", ALICE_2: "sub-ALICE", BOB: "sub-BOB", PIN: "sub-CAROL"}


def cred(raw, **extra):
    doc = {"cred": raw, "subject": SUBJECTS[raw], "doors": ["*"]}
    doc.update(extra)
    return doc


def verify_chain(records):
    """The cloud's check of audit records: each hash covers the record's
    canonical JSON (sorted keys, no spaces) and the next one names it."""
    prev = None
    for r in records:
        body = {k: v for k, v in r.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if hashlib.sha256(canonical.encode()).hexdigest() != r["hash"]:
            return f"record {r['seq']}: hash does not match its content"
        if prev is not None and (r["seq"] != prev["seq"] + 1 or r["prev"] != prev["hash"]):
            return f"record {r['seq']}: does not follow record {prev['seq']}"
        prev = r
    return None


class Privacy(Site):
    locks = 2
    broker_persistence = True

    # -- helpers ------------------------------------------------------------

    def cli(self, *args, env=None):
        return subprocess.run([LOCKBRIDGE, *args, "--config", self.config], capture_output=True,
                              text=True, timeout=90, env=env)

    def snapshot(self, cloud, version, creds):
        for doc in snapshot_chunks("s1", version, creds, per_chunk=1000):
            cloud.send("credentials/snapshot", doc)
        result = cloud.wait_result(doc["id"], timeout=60)
        self.assertEqual(result["status"], "ok", result)

    def captured_on(self, suffix):
        return [json.loads(m["payload"]) for m in self.captured() if m["topic"].endswith(suffix)]

    def events_of(self, stream):
        return [e for doc in self.captured_on("/events") for e in doc["events"]
                if e["lock"] == stream]

    def audit_records(self):
        return [r for doc in self.captured_on("/audit") for r in doc["records"]]

    def stop_gateway(self):
        self.gateway.kill(signal.SIGTERM)
        self.gateway.proc.wait(timeout=20)
        self.gateway = None

    def restart(self, faketime=None):
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(faketime=faketime)

    def privacy_status(self):
        rc, status = self.status()
        self.assertEqual(rc, 0, status)
        return status["privacy"]

    def assert_nothing_leaks(self, extra=()):
        """The byte scan: the state file, the log and every captured MQTT message."""
        with open(os.path.join(self.state_dir, "data.mdb"), "rb") as f:
            data = f.read()
        self.assertIn(b"journal", data)  # the scan reads the real file (its table names)
        log = self.gateway_log_text()
        with open(self.capture) as f:
            mqtt_side = f.read()
        self.assertIn("lockbridge/v1/", mqtt_side)
        secrets_used = [ALICE_1, ALICE_2, BOB, PIN, *set(SUBJECTS.values()), "CARD-", *extra]
        for s in secrets_used:
            self.assertFalse(s.encode() in data, f"{s} in data.mdb")
            self.assertFalse(s in log, f"{s} in the log")
            self.assertFalse(s in mqtt_side, f"{s} in an MQTT message")

    # -- tests --------------------------------------------------------------

    def test_erase_subject_with_the_broker_down_then_the_receipt(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=240, session="cloud-privacy",
                                     topics=[PREFIX + "events", PREFIX + "cmd_result",
                                             PREFIX + "audit"])
        self.snapshot(cloud, 1, [cred(ALICE_1), cred(ALICE_2), cred(BOB), cred(PIN)])
        # One decision while connected: the cloud learns Alice's card's pseudonym.
        self.assertTrue(self.access("lock-01", ALICE_1, "door-01")["allow"])
        wait_for(lambda: len(self.events_of("lock-01.access")) == 1, 20, "the first decision")
        alice_pseudonym = self.events_of("lock-01.access")[0]["cred"]
        self.assertRegex(alice_pseudonym, r"^p1\.1\.[A-Za-z0-9_-]{43}$")

        self.broker.stop()
        for raw, n in [(ALICE_1, 3), (ALICE_2, 2), (BOB, 3), (PIN, 1)]:
            for _ in range(n):
                self.assertTrue(self.access("lock-01", raw, "door-01")["allow"], raw)
        self.assertEqual(self.journal_stats()["depth"], 9)

        # The operator on site erases Alice with the cloud unreachable.
        out = self.cli("erase-subject", "--subject", "sub-ALICE", "--id", "erase-1", "--json")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        local = json.loads(out.stdout)
        self.assertEqual(local["status"], "ok", local)
        receipt = local["receipt"]
        self.assertEqual(receipt["credentials_removed"], 2)
        self.assertEqual(receipt["pending_events_removed"], 5)
        self.assertRegex(receipt["subject"], r"^p1\.\d+\.[A-Za-z0-9_-]{43}$")
        self.assertEqual(self.journal_stats()["depth"], 4)  # Bob's three and the PIN
        self.assertEqual(self.credentials_stats()["count"], 2)
        # Erasing again finds nothing: the subject is gone.
        again = json.loads(self.cli("erase-subject", "--subject", "sub-ALICE", "--id",
                                    "erase-2", "--json").stdout)
        self.assertEqual(again["receipt"]["credentials_removed"], 0)
        self.assertEqual(again["receipt"]["pending_events_removed"], 0)

        # The broker is back: the receipt arrives, and the other events.
        self.broker.start()
        wait_for(lambda: len(self.events_of("lock-01.access")) >= 5
                 and "erase-1" in {r["id"] for r in self.captured_on("/cmd_result")}
                 and len([r for r in self.audit_records() if r["action"] == "erase_subject"]) == 2,
                 60, "the receipt, the events and the audit records")
        time.sleep(2)  # anything else would have arrived by now
        checker.kill(signal.SIGTERM)
        results = {r["id"]: r for r in self.captured_on("/cmd_result")}
        self.assertIn("erase-1", results)
        self.assertEqual(results["erase-1"]["receipt"], receipt)
        schema_validator("cmd-result.schema.json").validate(results["erase-1"])
        delivered = self.events_of("lock-01.access")
        self.assertEqual(len(delivered), 5)  # the first one, then Bob x3 and the PIN
        self.assertEqual([e["cred"] for e in delivered].count(alice_pseudonym), 1)

        # The audit trail names Alice only by pseudonym and verifies end to end.
        records = self.audit_records()
        for doc in self.captured_on("/audit"):
            schema_validator("audit.schema.json").validate(doc)
        erasures = [r for r in records if r["action"] == "erase_subject"]
        self.assertEqual(len(erasures), 2)
        self.assertEqual(erasures[0]["detail"]["subject"], receipt["subject"])
        self.assertIsNone(verify_chain(records))
        self.assertEqual(records[0]["seq"], 1)
        out = self.cli("audit", "verify", "--json")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertTrue(json.loads(out.stdout)["ok"])

        # After the erasure the card is unknown (a new, unlinked decision).
        answer = self.access("lock-01", ALICE_1, "door-01")
        self.assertEqual((answer["allow"], answer["reason"]), (False, "unknown_credential"))
        self.stop_gateway()
        self.assert_nothing_leaks()

    def test_the_cloud_command_erases_and_unknown_fields_are_refused(self):
        self.start_gateway()
        cloud = self.cloud()
        self.snapshot(cloud, 1, [cred(BOB), cred(PIN)])
        cloud.send("erase_subject", {"schema": "lockbridge/erase-subject/1", "id": "e-1",
                                     "subject": "sub-BOB", "name": "Bob Smith"})
        refused = cloud.wait_result("e-1")
        self.assertEqual((refused["status"], refused["error"]["field"]), ("error", "name"))
        self.assertEqual(self.credentials_stats()["count"], 2)  # nothing changed
        cloud.send("erase_subject", {"schema": "lockbridge/erase-subject/1", "id": "e-2",
                                     "subject": "sub-BOB"})
        done = cloud.wait_result("e-2")
        self.assertEqual(done["status"], "ok", done)
        self.assertEqual(done["receipt"]["credentials_removed"], 1)
        self.assertEqual(self.credentials_stats()["count"], 1)
        self.assertEqual(self.access("lock-01", BOB, "door-01")["reason"], "unknown_credential")
        self.assertTrue(self.access("lock-01", PIN, "door-01")["allow"])

    def test_a_flipped_bit_and_swapped_values_are_quarantined_and_the_daemon_serves_on(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=150, idle_exit=8, session="cloud-quarantine",
                                     topics=[PREFIX + "events", PREFIX + "audit"])
        self.snapshot(cloud, 1, [cred(ALICE_1), cred(BOB), cred(PIN)])
        self.broker.stop()
        sim = self.locksim(events=20, rate=0, batch=5)
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        self.assertEqual(self.journal_stats()["depth"], 40)
        self.stop_gateway()

        # An attacker (or a failing disk) with the file: one bit flipped in an
        # event, two events swapped between their keys, one credential flipped.
        env = lmdb.open(self.state_dir, max_dbs=16, subdir=True)
        journal = env.open_db(b"journal", create=False)
        creds = env.open_db(b"credentials", create=False)
        with env.begin(write=True) as txn:
            items = list(txn.cursor(db=journal))
            self.assertEqual(len(items), 40)
            (k1, v1) = items[5]
            # Two other events whose sealed values have the same length.
            (k2, v2), (k3, v3) = next((a, b) for i, a in enumerate(items[6:], 6)
                                      for b in items[i + 1:] if len(a[1]) == len(b[1]))
            flipped = bytearray(v1)
            flipped[-20] ^= 0x08
            txn.put(k1, bytes(flipped), db=journal)
            txn.put(k2, v3, db=journal)
            txn.put(k3, v2, db=journal)
            ck, cv = next(iter(txn.cursor(db=creds)))
            flipped = bytearray(cv)
            flipped[-1] ^= 0x01
            txn.put(ck, bytes(flipped), db=creds)
        env.close()

        self.restart()
        # Access goes on: two of the three cards open, the damaged one does not.
        answers = {raw: self.access("lock-01", raw, "door-01") for raw in [ALICE_1, BOB, PIN]}
        allowed = [raw for raw, a in answers.items() if a["allow"]]
        denied = [a["reason"] for a in answers.values() if not a["allow"]]
        self.assertEqual(len(allowed), 2, answers)
        self.assertEqual(denied, ["unknown_credential"])
        wait_for(lambda: self.privacy_status()["quarantined"] == 1, 10, "the credential's quarantine")

        self.broker.start()
        report = json.loads(checker.output(timeout=150))
        self.assertEqual(report["bad_messages"], 0)
        unique = sum(report["locks"][lock]["unique"] for lock in self.lock_ids)
        self.assertEqual(unique, 37)  # 40 less the three damaged ones, each sent at most once
        p = self.privacy_status()
        self.assertEqual(p["quarantined"], 4)
        self.assertEqual(p["quarantined_since_start"], 4)
        self.assertIn("does not open (altered or moved)", self.gateway_log_text())
        quarantines = [r for r in self.audit_records() if r["action"] == "quarantine"]
        self.assertEqual(sorted(r["detail"]["table"] for r in quarantines),
                         ["credentials", "journal"])
        self.assertEqual(sum(r["detail"].get("entries", 1) for r in quarantines), 4)
        # Still serving after all that, and new events flow.
        sim = self.locksim(events=5, rate=0, batch=5, extra=["--start-seq", "21"])
        self.assertTrue(json.loads(sim.output(timeout=60))["complete"])
        self.assertEqual(self.gateway.proc.poll(), None)

    def test_a_damaged_result_in_the_outbox_is_quarantined_and_the_others_go_out(self):
        self.start_gateway()
        checker = self.start_checker(timeout=150, session="cloud-outbox",
                                     topics=[PREFIX + "cmd_result", PREFIX + "audit"])
        self.broker.stop()
        for i in (1, 2, 3):
            out = self.cli("erase-subject", "--subject", f"sub-nobody-{i}", "--id", f"erase-{i}",
                           "--json")
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(self.status()[1]["broker"]["results_waiting"], 3)
        self.stop_gateway()

        # The second receipt's sealed value gets one bit flipped.
        env = lmdb.open(self.state_dir, max_dbs=16, subdir=True)
        outbox = env.open_db(b"outbox", create=False)
        with env.begin(write=True) as txn:
            items = list(txn.cursor(db=outbox))
            self.assertEqual(len(items), 3)
            k, v = items[1]
            flipped = bytearray(v)
            flipped[-20] ^= 0x08
            txn.put(k, bytes(flipped), db=outbox)
        env.close()

        self.restart()
        self.broker.start()
        wait_for(lambda: {"erase-1", "erase-3"} <= {r["id"] for r in self.captured_on("/cmd_result")}
                 and any(r["action"] == "quarantine" for r in self.audit_records()),
                 60, "the two intact receipts and the quarantine's audit record")
        wait_for(lambda: self.status()[1]["broker"]["results_waiting"] == 0, 20,
                 "the outbox to empty")
        time.sleep(2)  # a duplicate would have arrived by now
        checker.kill(signal.SIGTERM)
        ids = [r["id"] for r in self.captured_on("/cmd_result")]
        self.assertEqual(sorted(set(ids)), ["erase-1", "erase-3"])
        p = self.privacy_status()
        self.assertEqual((p["quarantined"], p["quarantined_since_start"]), (1, 1))
        quarantines = [r["detail"] for r in self.audit_records() if r["action"] == "quarantine"]
        self.assertEqual([(q["table"], q["entries"]) for q in quarantines], [("outbox", 1)])
        self.assertIn("in the outbox does not open (altered or moved)", self.gateway_log_text())

    def test_key_rotations_while_events_stream_lose_nothing(self):
        self.start_gateway()
        cloud = self.cloud()
        self.snapshot(cloud, 1, [cred(ALICE_1), cred(BOB), cred(PIN)])
        per_lock = 3000
        # Every event of the two locks and the four access decisions below.
        checker = self.start_checker(expect=per_lock * self.locks + 4, timeout=240)
        sim = self.locksim(events=per_lock, rate=400, batch=10, duration=200)
        time.sleep(1.5)

        # Key-encryption key rotated in place, then a reload: the data keys are re-wrapped.
        old_kek = open(self.kek_file).read()
        self.write_secret(self.kek_file, secrets.token_hex(32))
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "data keys re-wrapped under the new key-encryption key"
                 in self.gateway_log_text(), 15, "the re-wrap")
        self.assertTrue(self.access("lock-01", BOB, "door-01")["allow"])

        # Data key rotated by the cloud: values are re-sealed in the background.
        cloud.send("rotate_keys", {"schema": "lockbridge/rotate-keys/1", "id": "rot-1",
                                   "data_key": True})
        pending = cloud.wait_result("rot-1", status="pending")
        self.assertEqual(pending["receipt"]["data_key"], 2)
        for raw in [ALICE_1, BOB, PIN]:  # decisions meanwhile
            self.assertTrue(self.access("lock-02", raw, "door-01")["allow"], raw)
        done = cloud.wait_result("rot-1", status="ok", timeout=120)
        self.assertEqual(done["receipt"]["retired"], [1])

        self.assertTrue(json.loads(sim.output(timeout=200))["complete"])
        report = json.loads(checker.output(timeout=200))
        self.assert_complete_delivery(report, {lock: per_lock for lock in self.lock_ids})
        self.assertEqual(report["locks"]["lock-01.access"]["unique"], 1)
        self.assertEqual(report["locks"]["lock-02.access"]["unique"], 3)
        p = self.privacy_status()
        self.assertEqual((p["data_key"], p["data_keys_live"], p["resealing"]), (2, 1, False))

        # A restart with only the new key-encryption key reads everything.
        self.stop_gateway()
        self.assertNotEqual(open(self.kek_file).read(), old_kek)
        self.restart()
        for raw in [ALICE_1, BOB, PIN]:
            self.assertTrue(self.access("lock-01", raw, "door-01")["allow"], raw)
        self.assertEqual(self.credentials_stats()["count"], 3)
        out = self.cli("audit", "verify")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        # The old key no longer opens the state: a clear refusal, nothing changed.
        self.stop_gateway()
        self.write_secret(self.kek_file, old_kek)
        out = self.cli("journal", "stats")
        self.assertEqual(out.returncode, 1)
        self.assertIn("does not open the data keys", out.stderr)


class Epochs(Site):
    locks = 1
    broker_persistence = True  # the cloud's session survives the broker's restart
    # Certificates valid from a month ago for ten years: the daemon 91 days
    # ahead still accepts them.
    pki_not_before = (datetime.datetime.utcnow() - datetime.timedelta(days=30)).strftime(
        "%Y-%m-%d %H:%M:%S")

    def pseudonyms(self, card="04CAFE0042"):
        """Asks for a decision (an unknown card: denied, journalled, pseudonymised)."""
        self.access("lock-01", card, "door-01")

    def delivered(self):
        return [e["cred"] for m in self.captured() if m["topic"].endswith("/events")
                for e in json.loads(m["payload"])["events"]]

    def test_epochs_rotate_and_old_keys_are_destroyed_after_the_retention_window(self):
        self.start_gateway()
        checker = self.start_checker(timeout=300, idle_exit=0, session="cloud-epochs",
                                     topics=[PREFIX + "events", PREFIX + "audit"])
        self.pseudonyms()
        self.pseudonyms()
        out = subprocess.run([LOCKBRIDGE, "keys", "rotate", "--pseudonym-epoch", "--config",
                              self.config], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.pseudonyms()
        wait_for(lambda: len(self.delivered()) == 3, 20, "three decisions")
        first, same, second = self.delivered()
        self.assertEqual(first, same)  # the same card within one epoch
        self.assertTrue(first.startswith("p1.1."), first)
        self.assertTrue(second.startswith("p1.2."), second)
        self.assertNotEqual(first, second)  # and not across epochs
        rc, status = self.status()
        self.assertEqual(status["privacy"]["pseudonym_epochs_live"], 2)

        # Records that never reach the broker: retention must remove them too.
        self.broker.stop()
        out = subprocess.run([LOCKBRIDGE, "keys", "rotate", "--data-key", "--config",
                              self.config], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        wait_for(lambda: "re-sealing done" in self.gateway_log_text(), 30, "the re-sealing")
        self.gateway.kill(signal.SIGTERM)
        self.gateway.proc.wait(timeout=20)
        self.gateway = None

        # 91 days later: epoch 2 is older than 30 days, so epoch 3 begins;
        # epoch 1 ended 91 days ago, past retention: its key is destroyed.
        self.broker.start()
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(faketime="+91d")
        wait_for(lambda: "its key is destroyed" in self.gateway_log_text(), 20, "the destruction")
        rc, status = self.status()
        p = status["privacy"]
        self.assertEqual((p["pseudonym_epoch"], p["pseudonym_epochs_live"], p["epochs_destroyed"]),
                         (3, 2, 1), p)
        self.assertGreaterEqual(p["purged"]["audit"], 2)  # the data-key records, never delivered
        self.pseudonyms()
        wait_for(lambda: len(self.delivered()) == 4, 30, "the decision in epoch 3")
        self.assertTrue(self.delivered()[3].startswith("p1.3."))
        wait_for(lambda: any(r["action"] == "pseudonym_epoch_destroyed"
                             for m in self.captured() if m["topic"].endswith("/audit")
                             for r in json.loads(m["payload"])["records"]), 20,
                 "the audit record of the destruction")

        # The key of epoch 1 is gone from the database itself.
        self.gateway.kill(signal.SIGTERM)
        self.gateway.proc.wait(timeout=20)
        self.gateway = None
        env = lmdb.open(self.state_dir, max_dbs=16, subdir=True, readonly=True)
        epochs = env.open_db(b"epochs", create=False)
        with env.begin() as txn:
            held = sorted(int.from_bytes(k, "big") for k, _ in txn.cursor(db=epochs))
        env.close()
        self.assertEqual(held, [2, 3])
        checker.kill(signal.SIGTERM)


if __name__ == "__main__":
    unittest.main()
