"""Lock commands (issue 5, item 1): cmd/lock from the cloud -> the gateway ->
CoAP POST /v1/commands on the lock's own DTLS session -> the lock's answer ->
cmd_result; refused commands reach no lock; a lock that does not answer ends
in a timeout; every command is audited.

Real components: mosquitto (mTLS), lockbridge, the project's lock simulator
(libcoap) answering on its DTLS session, python3-paho-mqtt as the cloud.
"""

import json
import os
import signal
import subprocess
import time
import unittest

from harness import LOCKBRIDGE, Site, schema_validator, wait_for

PREFIX = "lockbridge/v1/site-1/gw-1/"


def command(cid, lock="lock-01", op="unlock", expires_in_ms=30000, **extra):
    doc = {"schema": "lockbridge/lock-command/1", "id": cid, "lock": lock, "op": op,
           "expires_at": int(time.time() * 1000) + expires_in_ms}
    doc.update(extra)
    return doc


class LockCommands(Site):
    locks = 2

    def connected_lock(self, **kw):
        """lock-01 only, with its session kept open (it answers commands on it)."""
        sim = self.locksim(locks=1, events=1, rate=0, batch=1, extra=["--linger", "60", *kw.get("extra", [])])
        wait_for(lambda: "coap: lock lock-01 connected" in self.gateway_log_text(), 15,
                 "lock-01's session")
        time.sleep(0.5)
        return sim

    def stop(self, sim):
        sim.proc.send_signal(signal.SIGCONT)
        sim.proc.send_signal(signal.SIGTERM)
        return json.loads(sim.output(timeout=30))

    def test_unlock_round_trip_and_refused_commands_reach_no_lock(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=120, topics=[PREFIX + "audit", PREFIX + "locks/+/state"])
        sim = self.connected_lock()

        def states():
            return [json.loads(m["payload"]) for m in self.captured()
                    if m["topic"] == PREFIX + "locks/lock-01/state" and m["payload"]]
        # The gateway observes the lock's own state (CoAP Observe on GET /v1/state).
        wait_for(lambda: any("state" in s for s in states()), 15, "lock-01's observed state")
        first = next(s for s in states() if "state" in s)
        # (the simulator's one event, seq 1, is a door_open)
        self.assertEqual(first["state"], {"locked": True, "door_open": True, "battery": 95,
                                          "fw": "sim-1.0"})

        doc = command("unlock-1", duration=5)
        schema_validator("lock-command.schema.json").validate(doc)
        cloud.send("lock", doc)
        result = cloud.wait_result("unlock-1", timeout=30)
        schema_validator("cmd-result.schema.json").validate(result)
        self.assertEqual((result["status"], result["command"]), ("ok", "lock"), result)
        self.assertEqual(result["receipt"]["lock"], "lock-01")
        self.assertEqual(result["receipt"]["op"], "unlock")
        self.assertEqual(result["receipt"]["attempts"], 1)
        # The lock notifies its new state; the retained state follows.
        wait_for(lambda: states()[-1].get("state", {}).get("locked") is False, 15,
                 "the unlocked state")
        for s in states():
            schema_validator("lock-state.schema.json").validate(s)

        # Each of these is refused with the field named; none reaches a lock.
        cloud.send("lock", command("unlock-1"))  # replayed id
        cloud.send("lock", command("late-1", expires_in_ms=-5000))
        cloud.send("lock", command("far-1", expires_in_ms=3600 * 1000))
        cloud.send("lock", command("nobody-1", lock="lock-99"))
        cloud.send("lock", command("bad-op-1", op="explode"))
        cloud.send("lock", '{"schema": "lockbridge/lock-command/1", "id": "broken-1", ')
        cloud.send("lock", json.dumps(command("big-1", pad="x" * (1024 * 1024))))
        expected = {"late-1": "expires_at", "far-1": "expires_at", "nobody-1": "lock",
                    "bad-op-1": "op", "big-1": ""}
        for cid, field in expected.items():
            r = cloud.wait_result(cid, timeout=20)
            self.assertEqual((r["status"], r["error"]["field"]), ("error", field), r)
            self.assertIn("nothing was sent", r["detail"])
        replay = cloud.wait_result("unlock-1", skip=1, timeout=20)
        self.assertEqual((replay["status"], replay["error"]["field"]), ("error", "id"), replay)
        # Malformed JSON: the id is still read from its start, so the result names it.
        broken = cloud.wait_result("broken-1", timeout=20)
        self.assertEqual(broken["error"]["message"], "not valid JSON")
        self.assertIn("exceeds the limit", cloud.wait_result("big-1")["error"]["message"])

        # Another op and an answer from the lock that is not "done".
        report = self.stop(sim)
        self.assertEqual([(c["lock"], c["id"], c["op"]) for c in report["commands"]],
                         [("lock-01", "unlock-1", "unlock")])
        sim = self.connected_lock(extra=["--command-answer", "refused"])
        cloud.send("lock", command("lock-1", op="lock"))
        r = cloud.wait_result("lock-1", timeout=30)
        self.assertEqual(r["status"], "refused", r)
        report = self.stop(sim)
        self.assertEqual([c["op"] for c in report["commands"]], ["lock"])

        wait_for(lambda: len([r for m in self.captured() if m["topic"].endswith("/audit")
                              for r in json.loads(m["payload"])["records"]
                              if r["action"] == "lock_command"]) >= 9, 20,
                 "the audit records of the commands")
        records = [r for m in self.captured() if m["topic"].endswith("/audit")
                   for r in json.loads(m["payload"])["records"] if r["action"] == "lock_command"]
        outcomes = {}
        for r in records:
            outcomes.setdefault(r["detail"]["command"], []).append(r["detail"]["outcome"])
        self.assertEqual(outcomes["unlock-1"], ["ok", "refused"])  # done, then the replay
        self.assertEqual(outcomes["lock-1"], ["refused"])        # the lock said no
        self.assertEqual(outcomes["nobody-1"], ["refused"])      # the gateway said no
        checker.proc.send_signal(signal.SIGTERM)

    def test_a_lock_that_does_not_answer_times_out(self):
        self.start_gateway()
        cloud = self.cloud()
        sim = self.connected_lock()
        sim.proc.send_signal(signal.SIGSTOP)  # the lock hangs: no ACK, no answer
        cloud.send("lock", command("hang-1", expires_in_ms=6000))
        r = cloud.wait_result("hang-1", timeout=30)
        self.assertEqual(r["status"], "timeout", r)
        self.assertIn("no answer from lock lock-01", r["detail"])
        # When it wakes up, CoAP's retransmission reaches it late: it refuses
        # to act on an expired command.
        sim.proc.send_signal(signal.SIGCONT)
        time.sleep(3)
        report = self.stop(sim)
        for c in report["commands"]:
            self.assertEqual(c["result"], "refused", c)
        # lock-02 never connected: nothing can be sent to it before expiry.
        cloud.send("lock", command("absent-1", lock="lock-02", expires_in_ms=3000))
        r = cloud.wait_result("absent-1", timeout=30)
        self.assertEqual(r["status"], "timeout", r)
        self.assertIn("did not connect", r["detail"])
        self.assertIsNone(self.gateway.proc.poll())

    def test_mqtt5_request_response_carries_the_correlation_data(self):
        import threading
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.start_gateway()
        self.cloud()  # waits for the gateway's subscription to its commands
        sim = self.connected_lock()
        received = []
        arrived = threading.Condition()

        def on_message(client, userdata, msg):
            with arrived:
                corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
                received.append((msg.topic, json.loads(msg.payload), corr))
                arrived.notify_all()

        c = mqtt.Client(client_id="cloud-v5", protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=self.pki.ca, certfile=self.cloud_cert, keyfile=self.cloud_key)
        c.on_message = on_message
        c.connect("127.0.0.1", self.broker.port, keepalive=30, clean_start=True)
        c.loop_start()
        self.addCleanup(c.loop_stop)
        c.subscribe(PREFIX + "replies/#", qos=1)
        c.subscribe(PREFIX + "cmd_result", qos=1)
        time.sleep(0.5)

        def request(doc, response_topic, correlation):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation
            c.publish(PREFIX + "cmd/lock", json.dumps(doc), qos=1,
                      properties=props).wait_for_publish(5)

        request(command("v5-1"), PREFIX + "replies/abc", b"corr-\x00\x01")
        request(command("v5-2", lock="lock-99"), "elsewhere/replies", b"corr-2")
        with arrived:
            arrived.wait_for(lambda: {"v5-1", "v5-2"} <= {r[1]["id"] for r in received}, 30)
        by_id = {r[1]["id"]: r for r in received}
        if os.environ.get("LOCKBRIDGE_MQTT__PROTOCOL") == "3.1.1":
            # A 3.1.1 gateway gets no properties (the broker drops them on
            # the way): both results go to cmd_result, uncorrelated, found by
            # their id (docs/mqtt-api.md, "MQTT 3.1.1").
            for cid, status in (("v5-1", "ok"), ("v5-2", "error")):
                topic, doc, corr = by_id[cid]
                self.assertEqual((topic, doc["status"], corr), (PREFIX + "cmd_result", status, None))
            report = self.stop(sim)
            self.assertEqual([c["id"] for c in report["commands"]], ["v5-1"])
            return
        topic, doc, corr = by_id["v5-1"]
        self.assertEqual((topic, doc["status"], corr), (PREFIX + "replies/abc", "ok",
                                                        b"corr-\x00\x01"))
        # A response topic outside the gateway's own (which the broker would
        # not let it write): the result goes to cmd_result, still correlated.
        topic, doc, corr = by_id["v5-2"]
        self.assertEqual((topic, doc["status"], corr), (PREFIX + "cmd_result", "error", b"corr-2"))
        report = self.stop(sim)
        self.assertEqual([c["id"] for c in report["commands"]], ["v5-1"])

class ResultsSurviveRestart(Site):
    """Nothing the cloud must receive lives only in memory (issue 14): an
    erasure receipt and lock command results are kept in LMDB until the
    broker acknowledges them, and a lock command accepted before a SIGKILL
    gets exactly one definite result after it."""
    locks = 2
    broker_persistence = True

    def results(self):
        return [json.loads(m["payload"]) for m in self.captured()
                if m["topic"] == PREFIX + "cmd_result" and m["payload"]]

    def test_receipt_and_results_arrive_after_a_sigkill_with_the_broker_down(self):
        self.start_gateway()
        cloud = self.cloud()
        checker = self.start_checker(timeout=240, session="cloud-results",
                                     topics=[PREFIX + "cmd_result"])
        # Accepted while no lock is connected: one lives long enough to be sent
        # after the restart, the other expires while the gateway is down.
        cloud.send("lock", command("later-1", lock="lock-01", expires_in_ms=120000))
        cloud.send("lock", command("soon-1", lock="lock-02", op="lock", expires_in_ms=5000))
        wait_for(lambda: "(soon-1), expires in" in self.gateway_log_text()
                 and "(later-1), expires in" in self.gateway_log_text(), 15, "both accepted")
        self.broker.stop()
        out = subprocess.run([LOCKBRIDGE, "erase-subject", "--subject", "sub-GONE", "--id",
                              "erase-1", "--json", "--config", self.config],
                             capture_output=True, text=True, timeout=90)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        rc, doc = self.status()
        self.assertEqual(doc["broker"]["results_waiting"], 1, doc)  # the receipt, on disk

        self.gateway.kill()  # SIGKILL
        self.gateway.proc.wait(timeout=10)
        time.sleep(6)  # soon-1 expires meanwhile
        self.restart_gateway()
        wait_for(lambda: "command soon-1 to lock lock-02: the gateway restarted"
                 in self.gateway_log_text(), 15, "soon-1 answered at start")
        sim = self.locksim(locks=1, events=1, rate=0, batch=1, extra=["--linger", "30"])
        wait_for(lambda: "(later-1) accepted before the restart: sent again"
                 in self.gateway_log_text(), 20, "later-1 sent again")
        wait_for(lambda: "lock-01 (later-1): ok" in self.gateway_log_text(), 20,
                 "lock-01's answer")
        rc, doc = self.status()
        self.assertEqual(doc["broker"]["results_waiting"], 3, doc)

        self.broker.start()
        wait_for(lambda: {"later-1", "soon-1", "erase-1"} <= {r["id"] for r in self.results()},
                 60, "the three results")
        time.sleep(2)  # a second result would have arrived by now
        checker.kill(signal.SIGTERM)
        results = self.results()
        ids = [r["id"] for r in results]
        for cid in ("later-1", "soon-1", "erase-1"):
            self.assertEqual(ids.count(cid), 1, results)
        by_id = {r["id"]: r for r in results}
        for r in results:
            schema_validator("cmd-result.schema.json").validate(r)
        self.assertEqual(by_id["later-1"]["status"], "ok", by_id)
        self.assertEqual(by_id["soon-1"]["status"], "failed", by_id)
        self.assertIn("expired before it could be sent again", by_id["soon-1"]["detail"])
        self.assertEqual(by_id["erase-1"]["status"], "ok", by_id)
        report = self.stop_sim(sim)
        self.assertEqual([c["id"] for c in report["commands"]], ["later-1"])
        wait_for(lambda: self.status()[1]["broker"]["results_waiting"] == 0, 20,
                 "the outbox emptied by the acknowledgements")

    def stop_sim(self, sim):
        sim.proc.send_signal(signal.SIGTERM)
        return json.loads(sim.output(timeout=30))


if __name__ == "__main__":
    unittest.main()
