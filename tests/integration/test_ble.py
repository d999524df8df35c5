"""BLE locks through BlueZ (issue 7): lockbridge's real BLE transport (sd-bus)
talks over a private D-Bus daemon to python3-dbusmock's BlueZ template,
extended with lock devices that play protocol v1 over GATT (fragments, hello,
sealed messages). Real mosquitto (mTLS), real LMDB, the real daemon; only the
radio is mocked.
"""

import json
import os
import secrets
import subprocess
import time
import unittest

from harness import LOCKBRIDGE, BlueZ, Site, schema_validator, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


def address(i):
    return f"C0:FF:EE:00:00:{i:02X}"


class BleSite(Site):
    locks = 0
    ble_count = 5
    ble_events = 0
    ble_batch = 20
    ble_section = "max_connections = 2\nidle_release_ms = 300\nmax_hold_ms = 1500\n" \
                  "poll_interval_s = 150\nfragment_timeout_ms = 800\nconnect_timeout_ms = 3000"
    strangers = ()

    def setUp(self):
        self.ble_locks = [(f"ble-{i}", address(i)) for i in range(1, self.ble_count + 1)]
        super().setUp()
        specs = []
        for i, (lock, addr) in enumerate(self.ble_locks):
            specs.append({"address": addr, "id": lock, "psk": self.psk_of(lock),
                          "mtu": 23 if i == 0 else 185, "events": self.ble_events,
                          "batch": self.ble_batch})
        self.bluez = BlueZ(self.dir, specs, self.strangers)

    def events_of(self, lock):
        out = []
        for m in self.captured():
            if m["topic"] == PREFIX + "events" and m["payload"]:
                for ev in json.loads(m["payload"])["events"]:
                    if ev["lock"] == lock:
                        out.append(ev)
        return out


class ManyLocksOneAdapter(BleSite):
    ble_events = 200

    def test_five_locks_two_connections_2000_events_once_in_order(self):
        checker = self.start_checker(expect=2000, timeout=90,
                                     topics=[PREFIX + "events", PREFIX + "status"])
        self.start_gateway()

        def drained():
            st = self.bluez.stats()["locks"]
            return all(st[a]["acked"] == 200 for _, a in self.ble_locks)
        wait_for(drained, 60, "the first 1,000 events")
        # More to say once released: each lock advertises, waits its turn, is
        # connected again and released after.
        wait_for(lambda: not self.bluez.stats()["connected"], 20, "every lock released")
        for _, addr in self.ble_locks:
            self.bluez.control.AddEvents(addr, 200)
        report = json.loads(checker.output(timeout=120))
        self.assert_complete_delivery(report, {l: 400 for l, _ in self.ble_locks})
        self.assertEqual(report["duplicates"], 0, report)
        stats = self.bluez.stats()
        # The adapter limit held, and was used.
        self.assertEqual(stats["peak_connected"], 2, stats)
        for lock, addr in self.ble_locks:
            s = stats["locks"][addr]
            self.assertEqual((s["pending"], s["acked"]), (0, 400), s)
            self.assertGreaterEqual(s["connections"], 2, f"{lock}: {s}")
            self.assertGreaterEqual(s["state_requests"], s["connections"], s)
        log = self.gateway_log_text()
        self.assertIn("ble: adapter hci0 found; serving 5 BLE locks, at most 2 connected at once", log)
        out = subprocess.run([LOCKBRIDGE, "check-config", self.config], capture_output=True, text=True)
        self.assertIn("5 locks: 0 CoAP, 5 BLE on hci0)", out.stdout)
        # The status report counts the BLE side too: the retained status
        # message (checked against its schema) and `lockbridge status`.
        wait_for(lambda: "ble" in (self.last_status() or {}), 10, "BLE figures in the status message")
        st = self.last_status()
        schema_validator("status.schema.json").validate(st)
        self.assertEqual(st["ble"]["refused_forged"], 0, st)
        rc, doc = self.status()
        self.assertEqual(rc, 0, doc)
        ble = doc["ble"]
        self.assertGreaterEqual(ble["connections"], 10, ble)
        self.assertEqual(ble["peak_connected"], 2, ble)
        self.assertEqual(ble["refused_forged"] + ble["refused_replayed"] + ble["refused_unconfigured"], 0, ble)


class TwentyLocks(BleSite):
    """Twenty BLE locks on one adapter holding two links: all served in turns."""
    ble_count = 20
    ble_events = 50

    def test_twenty_locks_on_one_adapter(self):
        checker = self.start_checker(expect=1000, timeout=90)
        self.start_gateway()
        report = json.loads(checker.output(timeout=120))
        self.assert_complete_delivery(report, {l: 50 for l, _ in self.ble_locks})
        self.assertEqual(report["duplicates"], 0, report)
        stats = self.bluez.stats()
        self.assertEqual(stats["peak_connected"], 2, stats)
        self.assertTrue(all(s["connections"] >= 1 and s["state_requests"] >= 1
                            for s in stats["locks"].values()), stats)


class Faults(BleSite):
    """A lock's link misbehaves mid-message; events are retried, none is lost
    or stored twice."""
    ble_count = 3
    ble_events = 120
    ble_batch = 30  # ~1.3 KB: 7 fragments at MTU 185, 90 at MTU 23

    def run_with_fault(self, fault, lock_index):
        lock, addr = self.ble_locks[lock_index]
        self.bluez.control.SetFault(addr, fault)
        checker = self.start_checker(expect=3 * 120, timeout=60)
        self.start_gateway()
        report = json.loads(checker.output(timeout=90))
        self.assert_complete_delivery(report, {l: 120 for l, _ in self.ble_locks})
        self.assertEqual(report["duplicates"], 0, report)
        s = self.bluez.stats()["locks"][addr]
        self.assertEqual(s["faults_done"], [fault], s)
        return s, self.gateway_log_text()

    def test_disconnect_mid_fragmented_message(self):
        s, log = self.run_with_fault("disconnect_mid_fragment", 1)
        self.assertGreaterEqual(s["connections"], 2, s)
        self.assertIn("lock ble-2: BLE connection lost mid-exchange", log)

    def test_lost_fragment(self):
        s, log = self.run_with_fault("drop_fragment", 0)  # the MTU-23 lock
        # The batch went again: on the lock's own retry, or on its next
        # connection if the gateway released the quiet link first.
        self.assertGreaterEqual(s["resent"] + s["connections"] - 1, 1, s)
        self.assertRegex(log, r"lock ble-1: 1 BLE message\(s\) missing fragments after 800 ms; dropped")

    def test_duplicated_fragment(self):
        s, log = self.run_with_fault("duplicate_fragment", 2)
        self.assertEqual(s["resent"], 0, s)
        self.assertNotIn("missing fragments", log)


class AccessAndCommands(BleSite):
    ble_count = 2
    ble_events = 0
    extra_credentials = ""

    def test_access_decisions_and_unlock_over_ble(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=60, topics=[PREFIX + "#"])
        lock, addr = self.ble_locks[0]
        # A credential for door-ble-1 (the cloud's snapshot), then two taps.
        from harness import snapshot_chunks
        for doc in snapshot_chunks("snap-ble", 1, [{"cred": "CARD-7", "subject": "s-7",
                                                   "doors": ["door-ble-1"]}], 10):
            cloud.send("credentials/snapshot", doc)
        r = cloud.wait_result(doc["id"], timeout=30)
        self.assertEqual(r["status"], "ok", r)
        self.bluez.control.Access(addr, "CARD-7", "door-ble-1")
        self.bluez.control.Access(addr, "CARD-UNKNOWN", "door-ble-1")
        wait_for(lambda: len(self.bluez.stats()["locks"][addr]["answers"]) == 2, 20,
                 "two access answers over BLE")
        answers = self.bluez.stats()["locks"][addr]["answers"]
        self.assertEqual([a["code"] for a in answers], [205, 205], answers)
        self.assertTrue(answers[0]["decision"]["allow"], answers)
        self.assertFalse(answers[1]["decision"]["allow"], answers)
        self.assertEqual(answers[1]["decision"]["reason"], "unknown_credential", answers)
        # The decisions are journalled and relayed, pseudonymised.
        wait_for(lambda: len(self.events_of(lock + ".access")) == 2, 20, "the two access events")
        evs = self.events_of(lock + ".access")
        self.assertEqual([e["type"] for e in evs], ["access_granted", "access_denied"])
        self.assertTrue(all(e["cred"].startswith("p1.") for e in evs), evs)
        relayed = "".join(m["payload"] for m in self.captured() if "/cmd/" not in m["topic"])
        self.assertNotIn("CARD-7", relayed)

        # An unlock command from the cloud, over BLE, with its result.
        doc = {"schema": "lockbridge/lock-command/1", "id": "ble-unlock-1", "lock": lock,
               "op": "unlock", "duration": 5, "expires_at": int(time.time() * 1000) + 30000}
        cloud.send("lock", doc)
        result = cloud.wait_result("ble-unlock-1", timeout=30)
        self.assertEqual(result["status"], "ok", result)
        s = self.bluez.stats()["locks"][addr]
        self.assertEqual([c["id"] for c in s["commands"]], ["ble-unlock-1"], s)
        self.assertEqual(s["commands"][0]["op"], "unlock")
        self.assertFalse(s["state"]["locked"])
        # The lock's state after the unlock, as it reported it over BLE.
        def unlocked_state():
            for m in self.captured():
                if m["topic"] == PREFIX + f"locks/{lock}/state" and m["payload"]:
                    st = json.loads(m["payload"]).get("state")
                    if st and st["locked"] is False:
                        return True
            return False
        wait_for(unlocked_state, 15, "the unlocked state on locks/ble-1/state")
        # A command for a lock that does not answer within its life: a timeout.
        self.bluez.control.SetFault(self.ble_locks[1][1], "mute")
        doc = dict(doc, id="ble-unlock-2", lock=self.ble_locks[1][0],
                   expires_at=int(time.time() * 1000) + 4000)
        cloud.send("lock", doc)
        result = cloud.wait_result("ble-unlock-2", timeout=30)
        self.assertEqual(result["status"], "timeout", result)


class Refusals(BleSite):
    ble_count = 1
    ble_events = 10
    strangers = ("C0:FF:EE:00:00:99",)

    def test_forged_replayed_and_unconfigured_messages_are_refused(self):
        lock, addr = self.ble_locks[0]
        self.bluez.control.SetFault(addr, "forge")
        checker = self.start_checker(timeout=40, idle_exit=8)
        self.start_gateway()
        cloud = self.cloud()
        wait_for(lambda: self.bluez.stats()["locks"][addr]["acked"] == 10, 20, "the 10 real events")
        # A replay: the lock's access request is sent twice with the same counter.
        self.bluez.control.SetFault(addr, "replay")
        self.bluez.control.Access(addr, "CARD-1", "door-ble-1")
        wait_for(lambda: self.bluez.stats()["locks"][addr]["answers"], 20, "the access answer")
        # Authentic but malformed: answered 400 naming the field, nothing stored.
        self.bluez.control.SetFault(addr, "bad_events")
        self.bluez.control.AskTime(addr)
        wait_for(lambda: self.bluez.stats()["locks"][addr]["times"] == 1, 20, "the time answer")
        s = self.bluez.stats()["locks"][addr]
        bad = [a for a in s["answers"] if a["code"] == 400]
        self.assertEqual(len(bad), 1, s)
        self.assertIn("events[0].seq", bad[0]["text"])
        self.assertLessEqual(abs(s["time"]["now"] - time.time() * 1000), 5000, s)
        # Other services' notifications (battery level), from the lock and
        # from the stranger, are ignored: neither refused nor counted.
        self.bluez.control.Battery(addr)
        self.bluez.control.Battery("C0:FF:EE:00:00:99")
        # A device no lock is configured for speaks up.
        self.bluez.control.Inject("C0:FF:EE:00:00:99")
        wait_for(lambda: "C0:FF:EE:00:00:99, which is no configured lock" in self.gateway_log_text(),
                 10, "the stranger refused")
        report = json.loads(checker.output(timeout=60))
        log = self.gateway_log_text()
        self.assertIn("lock ble-1: a BLE events message that does not authenticate under the lock's "
                      "key (forged or corrupted); refused, nothing stored", log)
        self.assertRegex(log, r"lock ble-1: a replayed BLE access message \(counter \d+, last \d+\)")
        # Nothing of theirs was stored: the real 10 events and one access decision only.
        self.assertEqual(report["locks"][lock]["unique"], 10, report)
        self.assertEqual(report["locks"][lock]["highest_seq"], 10, report)  # not the forged 1010
        self.assertEqual(report["locks"][lock]["duplicates"], 0, report)
        self.assertEqual(report["locks"][lock + ".access"]["unique"], 1, report)
        self.assertEqual(set(report["locks"]), {lock, lock + ".access"}, report)
        text = open(self.capture).read()
        self.assertNotIn("forged", text)
        self.assertNotIn("stranger", text)
        stats = self.journal_stats()
        rc, doc = self.status()
        ble = doc["ble"]
        self.assertEqual((ble["refused_forged"], ble["refused_replayed"], ble["refused_unconfigured"]),
                         (1, 1, 1), ble)
        self.assertEqual(ble["bad_messages"], 1, ble)
        # The lock table says the same per lock, and names the stranger.
        table = {r["id"]: r for r in doc["lock_table"]}
        self.assertEqual(table[lock]["transport"], "ble")
        self.assertEqual(table[lock]["last_refusal"]["reason"], "replayed")
        self.assertEqual(table[lock]["last_refusal"]["count"], 2)  # forged, then replayed
        self.assertEqual(table[lock]["last_refusal"]["peer"], addr)
        self.assertEqual([s["identity"] for s in doc["strangers"]], ["C0:FF:EE:00:00:99"])
        del cloud, stats


class Doctor(BleSite):
    """`lockbridge doctor` with BLE locks: BlueZ and the adapter found on the
    bus (the mock's), an adapter that is not there named."""
    ble_count = 1

    def ble_findings(self):
        p = subprocess.run([LOCKBRIDGE, "doctor", "--config", self.config, "--json"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bluez.address))
        return [f for f in json.loads(p.stdout)["findings"] if f["check"] == "ble"]

    def test_bluez_and_its_adapter_are_checked(self):
        [f] = self.ble_findings()
        self.assertEqual(f["level"], "OK", f)
        self.assertIn("BlueZ adapter hci0 present and powered for 1 BLE locks", f["message"])
        self.ble_section = self.ble_section + '\nadapter = "hci9"'
        self.write_config()
        [f] = self.ble_findings()
        self.assertEqual(f["level"], "ERROR", f)
        self.assertIn("BlueZ has no adapter hci9", f["message"])
        self.assertIn("bluetoothctl list", f["fix"])
        self.bluez.stop()
        [f] = self.ble_findings()
        self.assertEqual(f["level"], "ERROR", f)


class GatewayKilled(BleSite):
    """The gateway SIGKILLed twice while BLE locks stream: every event the
    locks saw acknowledged survives, none is lost, repeats only by event_id."""
    ble_count = 3
    ble_events = 300
    ble_batch = 10

    def test_sigkill_during_ble_stream_loses_nothing(self):
        import signal
        checker = self.start_checker(expect=900, timeout=150)
        self.start_gateway()
        acked_at_kill = []
        for _ in range(2):
            wait_for(lambda: sum(s["acked"] for s in self.bluez.stats()["locks"].values())
                     > 150 * (len(acked_at_kill) + 1), 60, "some events acknowledged")
            self.gateway.kill(signal.SIGKILL)
            acked_at_kill.append({a: s["acked"] for a, s in self.bluez.stats()["locks"].items()})
            time.sleep(0.5)
            self.restart_gateway()
        self.assertLess(sum(acked_at_kill[0].values()), 900, "the first kill came after the stream")
        report = json.loads(checker.output(timeout=180))
        self.assert_complete_delivery(report, {l: 300 for l, _ in self.ble_locks})
        for snapshot in acked_at_kill:
            for lock, addr in self.ble_locks:
                self.assertGreaterEqual(report["locks"][lock]["highest_seq"], snapshot[addr])
        stats = self.bluez.stats()
        self.assertTrue(all(s["pending"] == 0 for s in stats["locks"].values()), stats)
        # Links left up by the killed gateway were closed, not added to.
        self.assertLessEqual(stats["peak_connected"], 2, stats)
        self.assertIn("a BLE connection left from before; closing it", self.gateway_log_text())


class Reload(BleSite):
    """BLE locks added and removed by a reload (SIGHUP), the others untouched."""
    ble_count = 3
    ble_events = 20

    def test_reload_adds_and_removes_ble_locks(self):
        import signal
        everyone = list(self.ble_locks)
        self.ble_locks = everyone[:2]
        self.write_config()
        checker = self.start_checker(timeout=40, idle_exit=6)
        self.start_gateway()
        wait_for(lambda: all(self.bluez.stats()["locks"][a]["acked"] == 20 for _, a in everyone[:2]),
                 20, "ble-1 and ble-2 served")
        # ble-3 advertised all along: no lock is configured at its address.
        self.assertEqual(self.bluez.stats()["locks"][everyone[2][1]]["connections"], 0)
        self.ble_locks = [everyone[0], everyone[2]]
        self.write_config()
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: 2 locks now; added: ble-3; removed: ble-2" in self.gateway_log_text(),
                 10, "the reload")
        self.bluez.control.AddEvents(everyone[0][1], 5)
        self.bluez.control.AddEvents(everyone[1][1], 5)  # removed: never fetched
        wait_for(lambda: self.bluez.stats()["locks"][everyone[2][1]]["acked"] == 20, 20, "ble-3 served")
        report = json.loads(checker.output(timeout=60))
        self.assertEqual(report["locks"]["ble-1"]["unique"], 25, report)
        self.assertEqual(report["locks"]["ble-2"]["unique"], 20, report)
        self.assertEqual(report["locks"]["ble-3"]["unique"], 20, report)
        self.assertEqual(self.bluez.stats()["locks"][everyone[1][1]]["pending"], 5)


class Availability(BleSite):
    """A quiet BLE lock is visited on its poll interval and stays available;
    one that cannot be reached is retried with backoff and reported
    unavailable after the silence, then available again once reached."""
    ble_count = 1
    ble_section = "poll_interval_s = 1\nidle_release_ms = 200\nconnect_timeout_ms = 2000"

    def test_polls_keep_a_quiet_lock_available_and_an_unreachable_one_is_reported(self):
        import os
        from unittest import mock
        lock, addr = self.ble_locks[0]
        checker = self.start_checker(timeout=60, topics=[PREFIX + f"locks/{lock}/state"])
        with mock.patch.dict(os.environ, {"LOCKBRIDGE_COAP__LOCK_SILENCE_S": "4"}):
            self.start_gateway()

        def states():
            return [json.loads(m["payload"]) for m in self.captured() if m["payload"]]
        wait_for(lambda: self.bluez.stats()["locks"][addr]["connections"] >= 4, 20,
                 "four visits of the quiet lock")
        self.assertTrue(all(s["available"] for s in states()), states())
        self.assertTrue(any(s.get("state", {}).get("battery") == 87 for s in states()), states())
        self.bluez.control.SetFault(addr, "unreachable")
        wait_for(lambda: any(not s["available"] for s in states()), 20, "the lock reported unavailable")
        log = self.gateway_log_text()
        self.assertRegex(log, r"ble: lock ble-1 \(C0:FF:EE:00:00:01\): BLE connection failed while "
                              r"connecting: Connect: le-connection-abort-by-local; retry in \d+ ms")
        failures = self.bluez.stats()["locks"][addr]["faults_done"].count("unreachable")
        self.assertGreaterEqual(failures, 2)
        self.bluez.control.ClearFaults(addr)
        n = len(states())
        wait_for(lambda: any(s["available"] for s in states()[n:]), 40, "available again")
        rc, doc = self.status()
        self.assertGreaterEqual(doc["ble"]["connect_failures"], 2, doc["ble"])
        checker.kill()


class DeviceAppears(BleSite):
    """A configured lock BlueZ has not discovered yet (no Device1 object) is
    served as soon as it appears (InterfacesAdded)."""
    ble_count = 2
    ble_events = 20

    def setUp(self):
        super().setUp()
        self.bluez.stop()
        specs = [{"address": a, "id": l, "psk": self.psk_of(l), "events": 20, "hidden": l == "ble-2"}
                 for l, a in self.ble_locks]
        self.bluez = BlueZ(self.dir, specs)

    def test_a_lock_discovered_later_is_served(self):
        checker = self.start_checker(expect=40, timeout=40)
        self.start_gateway()
        wait_for(lambda: self.bluez.stats()["locks"][self.ble_locks[0][1]]["acked"] == 20, 20,
                 "ble-1 served")
        self.assertEqual(self.bluez.stats()["hidden"], [self.ble_locks[1][1]])
        self.bluez.control.Appear(self.ble_locks[1][1])
        report = json.loads(checker.output(timeout=60))
        self.assert_complete_delivery(report, {"ble-1": 20, "ble-2": 20})


class HostileState(BleSite):
    """A BLE lock answers the gateway's state request with a CBOR array
    header claiming 2^64-1 items (authentic, sealed with its key). That once
    threw on the BLE thread and ended the gateway."""
    ble_count = 2
    ble_events = 20

    def test_a_state_claiming_a_huge_array_is_logged_and_the_lock_still_served(self):
        lock, addr = self.ble_locks[0]
        self.bluez.control.SetFault(addr, "huge_state")
        checker = self.start_checker(expect=50, timeout=60)
        self.start_gateway()
        wait_for(lambda: all(self.bluez.stats()["locks"][a]["acked"] == 20
                             for _, a in self.ble_locks), 30, "both locks' first events")
        wait_for(lambda: "bad state over BLE" in self.gateway_log_text(), 10, "the state refused")
        self.assertEqual(self.bluez.stats()["locks"][addr]["faults_done"], ["huge_state"])
        # The same lock is served afterwards, on a later visit too.
        self.bluez.control.AddEvents(addr, 10)
        report = json.loads(checker.output(timeout=60))
        self.assert_complete_delivery(report, {"ble-1": 30, "ble-2": 20})
        log = self.gateway_log_text()
        self.assertIn("cannot fit", log)
        self.assertIsNone(self.gateway.proc.poll(), "lockbridge died")
        rc, doc = self.status()
        self.assertGreaterEqual(doc["ble"]["bad_messages"], 1, doc)


class StorageFull(BleSite):
    """The journal fills while the broker is away: BLE locks are told 503
    with a retry time, keep their events, and everything arrives once the
    broker is back (the guarantee CoAP locks have, over BLE)."""
    ble_count = 5
    ble_events = 4000
    extra_store = "journal_max_mb = 1"
    broker_persistence = True

    def test_full_journal_answers_503_and_ble_locks_keep_their_events(self):
        import os
        from unittest import mock
        self.broker.stop()
        with mock.patch.dict(os.environ, {"LOCKBRIDGE_COAP__FULL_RETRY_AFTER_S": "1"}):
            self.start_gateway()
        # 20,000 events of ~120 bytes do not fit in 1 MiB.
        wait_for(lambda: "journal: full" in self.gateway_log_text(), 60, "the journal to fill")
        wait_for(lambda: sum(s["refused_full"] for s in self.bluez.stats()["locks"].values()) > 0,
                 20, "a BLE lock told the journal is full")
        self.broker.start()
        checker = self.start_checker(expect=20000, timeout=150, session="cloud-full")
        report = json.loads(checker.output(timeout=200))
        self.assert_complete_delivery(report, {l: 4000 for l, _ in self.ble_locks})
        stats = self.bluez.stats()["locks"]
        self.assertTrue(all(s["pending"] == 0 and s["acked"] == 4000 for s in stats.values()), stats)


class LateBlueZ(BleSite):
    """No D-Bus or BlueZ when the gateway starts: its CoAP locks are served
    regardless, and the BLE lock as soon as BlueZ appears."""
    locks = 1
    ble_count = 1
    ble_events = 50

    def setUp(self):
        self.ble_locks = [(f"ble-{i}", address(i)) for i in range(1, self.ble_count + 1)]
        Site.setUp(self)
        self.bluez = None

    def test_coap_locks_work_without_bluez_and_ble_locks_once_it_appears(self):
        import os
        from unittest import mock
        bus = os.path.join(self.dir, "system_bus_socket")
        checker = self.start_checker(expect=100, timeout=60)
        with mock.patch.dict(os.environ, {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}"}):
            self.start_gateway()
        sim = self.locksim(locks=1, events=50, batch=10)
        sim.output(timeout=60)
        wait_for(lambda: "ble: cannot connect to the D-Bus system bus" in self.gateway_log_text(),
                 10, "the missing bus reported")
        from harness import BlueZ
        lock, addr = self.ble_locks[0]
        self.bluez = BlueZ(self.dir, [{"address": addr, "id": lock, "psk": self.psk_of(lock),
                                       "events": 50}])
        report = json.loads(checker.output(timeout=90))
        self.assert_complete_delivery(report, {"lock-01": 50, lock: 50})
        self.assertIn("ble: connected to the D-Bus system bus", self.gateway_log_text())


if __name__ == "__main__":
    unittest.main()
