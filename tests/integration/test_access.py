"""Offline access decisions (issue 3): credential sync over MQTT, POST /v1/access
answered from LMDB with the broker down, decisions journalled and delivered,
sync errors refused with the field named, no raw identifier on disk or in logs.

Real components: mosquitto (mTLS), lockbridge, python3-paho-mqtt as the cloud,
libcoap's coap-client-openssl as the lock, the project's checker.
"""

import datetime
import json
import os
import time
import unittest
import zoneinfo

from harness import Site, schema_validator, snapshot_chunks, wait_for

# Raw identifiers used below: none may appear in the LMDB file or the log.
KNOWN, REVOKED, EXPIRED, FUTURE, OFF_DAY, UNKNOWN = (
    "04A1B2C3D4", "04DEAD0001", "04EXP00002", "04FUT00003", "04DAY00004", "04NONE0005")
PIN = "739164"


def cred(raw, **extra):
    doc = {"cred": raw, "subject": "sub-" + raw[-4:], "doors": ["door-01"]}
    doc.update(extra)
    return doc


class OfflineAccess(Site):
    locks = 2
    time_zone = "Europe/Rome"
    broker_persistence = True

    def snapshot(self, cloud, version, creds, snapshot_id="s1"):
        for doc in snapshot_chunks(snapshot_id, version, creds, per_chunk=1000):
            schema_validator("credentials-snapshot.schema.json").validate(doc)
            cloud.send("credentials/snapshot", doc)
        return cloud.wait_result(doc["id"], timeout=60)

    def test_decisions_with_the_broker_down_and_their_delivery_later(self):
        self.start_gateway()
        cloud = self.cloud()
        now_ms = int(time.time() * 1000)
        rome = zoneinfo.ZoneInfo("Europe/Rome")
        today = datetime.datetime.now(rome).weekday()  # Monday = 0
        other_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][(today + 3) % 7]
        result = self.snapshot(cloud, 1, [
            cred(KNOWN, valid_until=now_ms + 86400000),
            cred(REVOKED, revoked=True),
            cred(EXPIRED, valid_until=now_ms - 3600000),
            cred(FUTURE, valid_from=now_ms + 3600000),
            cred(OFF_DAY, schedule=[{"days": [other_day], "from": "00:00", "to": "24:00"}]),
            cred(PIN, doors=["*"]),
        ])
        self.assertEqual(result["status"], "ok", result)
        self.assertEqual(result["version"], 1)
        self.assertEqual(self.credentials_stats()["count"], 6)

        # The cloud side subscribes with a persistent session, then the broker goes away.
        checker = self.start_checker(expect=8, timeout=120, session="cloud-access",
                                     topics=["lockbridge/v1/site-1/gw-1/events"])
        time.sleep(0.5)
        self.broker.stop()

        expected = [
            (KNOWN, "door-01", True, "allowed"),
            (UNKNOWN, "door-01", False, "unknown_credential"),
            (REVOKED, "door-01", False, "revoked"),
            (EXPIRED, "door-01", False, "expired"),
            (FUTURE, "door-01", False, "not_yet_valid"),
            (OFF_DAY, "door-01", False, "outside_schedule"),
            (KNOWN, "door-02", False, "wrong_door"),
            (PIN, "door-02", True, "allowed"),
        ]
        for raw, door, allow, reason in expected:
            answer = self.access("lock-01", raw, door)
            self.assertEqual((answer["allow"], answer["reason"]), (allow, reason), raw)
            # "until" only when the permission ends (validity or schedule); PIN has neither.
            self.assertEqual("until" in answer, raw == KNOWN and allow, answer)
        # The allowed answer for KNOWN lasts to its validity end.
        self.assertEqual(self.access("lock-01", KNOWN, "door-01")["until"], now_ms + 86400000)

        self.broker.start()
        report = json.loads(checker.output(timeout=150))
        self.assertEqual(report["bad_messages"], 0)
        stream = report["locks"]["lock-01.access"]
        self.assertEqual(stream["unique"], 9, report)  # the eight above and the repeat
        self.assertEqual(report["gaps"], 0)
        events = [e for m in self.captured() if m["topic"].endswith("/events")
                  for e in json.loads(m["payload"])["events"]]
        by_seq = {e["seq"]: e for e in events if e["lock"] == "lock-01.access"}
        for seq, (raw, door, allow, reason) in enumerate(expected, start=1):
            e = by_seq[seq]
            self.assertEqual(e["detail"], reason)
            self.assertEqual(e["type"], "access_granted" if allow else "access_denied")
            self.assertEqual(e["door"], door)
            self.assertRegex(e["cred"], r"^p1\.1\.[A-Za-z0-9_-]{43}$")
        self.assertEqual(by_seq[1]["cred"], by_seq[7]["cred"])  # same card, same pseudonym

        # No raw card UID or PIN in the LMDB file, the log or what reached the cloud.
        self.gateway.kill(15)
        self.gateway = None
        with open(os.path.join(self.state_dir, "data.mdb"), "rb") as f:
            data = f.read()
        self.assertIn(b"credentials", data)  # the scan reads the real file (its table names)
        log = self.gateway_log_text()
        cloud_side = json.dumps(self.captured())
        for raw in [KNOWN, REVOKED, EXPIRED, FUTURE, OFF_DAY, UNKNOWN, PIN]:
            for secret in [raw, "sub-" + raw[-4:]]:  # the identifier and its subject
                self.assertFalse(secret.encode() in data, f"{secret} in data.mdb")
                self.assertFalse(secret in log, f"{secret} in the log")
                self.assertFalse(secret in cloud_side, f"{secret} sent to the cloud")

    def test_sync_errors_are_refused_naming_the_field_and_change_nothing(self):
        self.start_gateway()
        cloud = self.cloud()
        self.assertEqual(self.snapshot(cloud, 3, [cred(KNOWN)])["status"], "ok")

        # A delta against another version: refused, a snapshot requested.
        cloud.send("credentials/delta", {"schema": "lockbridge/credentials-delta/1", "id": "d-gap",
                                         "base_version": 2, "version": 4,
                                         "upsert": [cred(UNKNOWN)]})
        r = cloud.wait_result("d-gap")
        self.assertEqual((r["status"], r["error"]["field"], r["version"]), ("error", "base_version", 3))
        self.assertEqual(r["request"], "snapshot")

        # Personal fields: refused, naming the field.
        for field, value in [("name", "Maria"), ("surname", "Rossi"), ("email", "m@rossi.it"),
                             ("phone", "+39 06 000")]:
            cid = f"p-{field}"
            cloud.send("credentials/delta", {"schema": "lockbridge/credentials-delta/1", "id": cid,
                                             "base_version": 3, "version": 4,
                                             "upsert": [cred(UNKNOWN, **{field: value})]})
            r = cloud.wait_result(cid)
            self.assertEqual(r["status"], "error")
            self.assertEqual(r["error"]["field"], f"upsert[0].{field}")
            self.assertNotIn(value, json.dumps(r))
            self.assertNotIn(value, self.gateway_log_text())

        # A malformed chunk, and a chunk of another snapshot while one is received.
        cloud.send("credentials/snapshot", '{"schema": "lockbridge/credentials-snapshot/1", "id": "bad-1",')
        chunks = list(snapshot_chunks("s2", 4, [cred(UNKNOWN), cred(EXPIRED)], per_chunk=1))
        cloud.send("credentials/snapshot", chunks[0])
        self.assertEqual(cloud.wait_result(chunks[0]["id"])["status"], "pending")
        stray = list(snapshot_chunks("s3", 5, [cred(FUTURE), cred(REVOKED)], per_chunk=1))[1]
        cloud.send("credentials/snapshot", stray)
        r = cloud.wait_result(stray["id"])
        self.assertEqual((r["status"], r["error"]["field"]), ("error", "snapshot"))
        # A chunk carrying a personal field ends snapshot s2: never a mixture.
        bad = dict(chunks[1])
        bad["credentials"] = [cred(EXPIRED, email="x@y.z")]
        cloud.send("credentials/snapshot", bad)
        r = cloud.wait_result(bad["id"])
        self.assertEqual((r["status"], r["error"]["field"]), ("error", "credentials[0].email"))

        # Nothing changed: version 3 with its one credential.
        stats = self.credentials_stats()
        self.assertEqual((stats["version"], stats["count"]), (3, 1))
        self.assertEqual(self.access("lock-01", UNKNOWN, "door-01")["reason"], "unknown_credential")
        self.assertTrue(self.access("lock-01", KNOWN, "door-01")["allow"])

        # A delta on the right base applies, revocations included.
        cloud.send("credentials/delta", {"schema": "lockbridge/credentials-delta/1", "id": "d-ok",
                                         "base_version": 3, "version": 4, "revoke": [KNOWN],
                                         "upsert": [cred(UNKNOWN)]})
        r = cloud.wait_result("d-ok")
        self.assertEqual((r["status"], r["version"]), ("ok", 4), r)
        self.assertEqual(self.access("lock-01", KNOWN, "door-01")["reason"], "revoked")
        self.assertTrue(self.access("lock-01", UNKNOWN, "door-01")["allow"])

        # An unknown command gets an error result too.
        cloud.send("credentials/rotate", {"id": "x-1"})
        self.assertEqual(cloud.wait_result("x-1")["status"], "error")

        # Every result matches the documented schema; the deltas sent as valid match theirs.
        results = schema_validator("cmd-result.schema.json")
        for r in cloud.results:
            results.validate(r)
        schema_validator("credentials-delta.schema.json").validate(
            {"schema": "lockbridge/credentials-delta/1", "id": "d-ok", "base_version": 3,
             "version": 4, "revoke": [KNOWN], "upsert": [cred(UNKNOWN)]})


class SnapshotCrash(Site):
    locks = 1

    def test_sigkill_while_applying_a_100000_credential_snapshot_leaves_one_whole_set(self):
        self.start_gateway()
        cloud = self.cloud()
        old = [cred(f"A{i:08d}") for i in range(1000)]
        for doc in snapshot_chunks("old", 1, old, per_chunk=1000):
            cloud.send("credentials/snapshot", doc)
        self.assertEqual(cloud.wait_result(doc["id"])["status"], "ok")

        new = [cred(f"B{i:08d}") for i in range(100000)]
        chunks = list(snapshot_chunks("new", 2, new, per_chunk=10000))
        for doc in chunks[:-1]:
            cloud.send("credentials/snapshot", doc)
            self.assertEqual(cloud.wait_result(doc["id"], timeout=120)["status"], "pending")
        applying = "credentials: applying snapshot new"
        cloud.send("credentials/snapshot", chunks[-1])
        wait_for(lambda: applying in self.gateway_log_text(), 60, "the snapshot to be applied")
        self.gateway.kill()  # SIGKILL, mid-transaction if it has not committed yet
        finished = "snapshot new applied" in self.gateway_log_text()

        stats = self.credentials_stats()
        self.assertIn((stats["version"], stats["count"]), [(1, 1000), (2, 100000)], stats)
        self.restart_gateway()
        a, b = self.access("lock-01", "A00000500", "door-01"), self.access("lock-01", "B00099999", "door-01")
        if stats["version"] == 1:
            self.assertTrue(a["allow"])
            self.assertEqual(b["reason"], "unknown_credential")
        else:
            self.assertEqual(a["reason"], "unknown_credential")
            self.assertTrue(b["allow"])
        print(f"\nkilled {'after' if finished else 'before'} the commit was logged; "
              f"version {stats['version']} in force with {stats['count']} credentials")

        # The cloud sends the snapshot again: it applies whole.
        if stats["version"] == 1:
            cloud2 = self.cloud()
            for doc in chunks:
                cloud2.send("credentials/snapshot", doc)
            r = cloud2.wait_result(chunks[-1]["id"], status="ok", timeout=120)
            self.assertEqual(r["version"], 2)
            self.gateway.kill(15)
            self.gateway = None
            stats = self.credentials_stats()
            self.assertEqual((stats["version"], stats["count"]), (2, 100000))


class ClockSetBack(Site):
    locks = 1
    # Certificates valid a month back, so that the daemon a day behind accepts them
    # (check-config refuses a certificate that is not yet valid).
    pki_not_before = (datetime.datetime.utcnow() - datetime.timedelta(days=30)).strftime(
        "%Y-%m-%d %H:%M:%S")

    def test_a_clock_set_back_a_day_does_not_reopen_an_expired_credential(self):
        self.start_gateway()
        cloud = self.cloud()
        now_ms = int(time.time() * 1000)
        creds = [cred(EXPIRED, valid_until=now_ms - 3600000),  # expired an hour ago
                 cred(KNOWN)]
        for doc in snapshot_chunks("s1", 1, creds, per_chunk=10):
            cloud.send("credentials/snapshot", doc)
        self.assertEqual(cloud.wait_result(doc["id"])["status"], "ok")
        self.assertEqual(self.access("lock-01", EXPIRED, "door-01")["reason"], "expired")
        self.gateway.kill(15)  # a clean stop saves the clock's high-water mark too

        # The box comes back with its clock a day behind (no RTC, NTP not yet synced).
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(faketime="-1d")
        answer = self.access("lock-01", EXPIRED, "door-01")
        self.assertEqual(answer["reason"], "expired", answer)
        self.assertTrue(self.access("lock-01", KNOWN, "door-01")["allow"])
        # GET /v1/time answers the guarded clock, not the day-old one.
        rc, out, err = self.coap_client("lock-01", self.psk_of("lock-01"), None, path="v1/time",
                                        method="get")
        import cbor_helper
        self.assertGreater(cbor_helper.decode(out)["now"], now_ms)
        log = self.gateway_log_text()
        self.assertIn("system clock is 86", log)  # "... is 86399 s behind ..." or so
        self.assertIn("behind the latest time this gateway", log)


def utc_ms(text):
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)
               .timestamp() * 1000)


class DaylightSaving(Site):
    """The real daemon, its clock set by libfaketime to just before a schedule or
    validity boundary on a DST change day; certificates issued as of 2026-01-01 so
    that both the broker (real time) and the daemon (fake time) accept them."""
    locks = 1
    pki_not_before = "2026-01-01 00:00:00"
    extra_credentials = "max_age_hours = 8760"

    def start_at(self, zone, utc_start):
        self.time_zone = zone
        self.write_config()
        self.ready_seen = self.gateway_log_text().count("lockbridge: ready")
        self.start_gateway(faketime="@" + utc_start)

    def gateway_now(self):
        """The daemon's clock by GET /v1/time. coap-client writes the body
        first and then its own log lines (libcoap logs warnings to stdout):
        on a busy machine an exchange can time out and leave only those, so
        a failed reading is taken again (at most 5 times)."""
        import cbor_helper
        for _ in range(5):
            rc, out, err = self.coap_client("lock-01", self.psk_of("lock-01"), None,
                                            path="v1/time", method="get")
            try:
                doc = cbor_helper.decode_first(out)
                if isinstance(doc, dict) and "now" in doc:
                    return doc["now"]
            except (ValueError, KeyError, IndexError):
                pass
            print(f"GET /v1/time gave no time (rc={rc}): {out[:200]!r} {err[:200]}")
        raise AssertionError("GET /v1/time gave no time 5 times running")

    def cross(self, boundary_utc):
        """Waits until the daemon's clock is past the boundary."""
        boundary = utc_ms(boundary_utc)
        self.assertLess(self.gateway_now(), boundary, "too slow: the boundary passed already")
        wait_for(lambda: self.gateway_now() > boundary + 300, 30, f"the daemon's clock to pass {boundary_utc}")

    def stop(self):
        self.gateway.kill(15)
        self.gateway = None

    def test_schedules_and_local_midnight_across_dst_changes(self):
        sched, midnight = "04SCHED0001", "04MIDN0002"
        # New York, 2026-03-08: clocks went 02:00 -> 03:00 (EST -> EDT, UTC-4).
        self.start_at("America/New_York", "2026-03-08 11:59:50")  # 07:59:50 EDT
        cloud = self.cloud()
        creds = [cred(sched, doors=["*"], schedule=[{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                    "from": "08:00", "to": "18:00"}]),
                 cred(midnight, doors=["*"], valid_until="2026-03-29T00:00")]
        for doc in snapshot_chunks("dst", 1, creds, per_chunk=10):
            cloud.send("credentials/snapshot", doc)
        self.assertEqual(cloud.wait_result(doc["id"])["status"], "ok")
        self.assertEqual(self.access("lock-01", sched, "door-01")["reason"], "outside_schedule")
        self.cross("2026-03-08 12:00:00")  # 08:00 EDT
        answer = self.access("lock-01", sched, "door-01")
        self.assertEqual((answer["allow"], answer["until"]), (True, utc_ms("2026-03-08 22:00:00")))
        self.stop()

        # Rome, the night before 2026-03-29: midnight local is 23:00 UTC (still CET).
        self.start_at("Europe/Rome", "2026-03-28 22:59:54")
        answer = self.access("lock-01", midnight, "door-01")
        self.assertEqual((answer["allow"], answer["until"]), (True, utc_ms("2026-03-28 23:00:00")))
        self.cross("2026-03-28 23:00:00")
        self.assertEqual(self.access("lock-01", midnight, "door-01")["reason"], "expired")
        self.stop()

        # Rome, 2026-03-29 after the change to CEST (UTC+2): 08:00 local is 06:00 UTC.
        self.start_at("Europe/Rome", "2026-03-29 05:59:54")
        self.assertEqual(self.access("lock-01", sched, "door-01")["reason"], "outside_schedule")
        self.cross("2026-03-29 06:00:00")
        answer = self.access("lock-01", sched, "door-01")
        self.assertEqual((answer["allow"], answer["until"]), (True, utc_ms("2026-03-29 16:00:00")))
        self.stop()

        # Rome, 2026-10-25 after the change back to CET (UTC+1): 08:00 local is 07:00 UTC.
        self.start_at("Europe/Rome", "2026-10-25 06:59:54")
        self.assertEqual(self.access("lock-01", sched, "door-01")["reason"], "outside_schedule")
        self.cross("2026-10-25 07:00:00")
        answer = self.access("lock-01", sched, "door-01")
        self.assertEqual((answer["allow"], answer["until"]), (True, utc_ms("2026-10-25 17:00:00")))


class StaleStore(Site):
    locks = 1
    extra_credentials = 'max_age_hours = 1\noffline_policy = "fail_secure"'
    doors = '[[doors]]\nid = "lobby"\noffline_policy = "keep_last_known"\n'

    def test_doors_follow_their_policy_when_the_set_is_stale(self):
        self.start_gateway()
        # Never synced: stale. A fail_secure door denies; a keep_last_known door answers
        # from the (empty) set.
        self.assertEqual(self.access("lock-01", KNOWN, "door-01")["reason"], "stale_store")
        self.assertEqual(self.access("lock-01", KNOWN, "lobby")["reason"], "unknown_credential")
        cloud = self.cloud()
        for doc in snapshot_chunks("s1", 1, [cred(KNOWN, doors=["*"])], per_chunk=10):
            cloud.send("credentials/snapshot", doc)
        self.assertEqual(cloud.wait_result(doc["id"])["status"], "ok")
        self.assertTrue(self.access("lock-01", KNOWN, "door-01")["allow"])
        self.assertIn("credential set is stale", self.gateway_log_text())


if __name__ == "__main__":
    unittest.main()
