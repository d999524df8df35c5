"""lockbridge end-to-end benchmark: prints its figures, asserts nothing.

One run, one machine, the same broker for every figure:
  1. raw ceiling: a plain Paho QoS 1 publisher over the broker's mTLS listener,
     one event per message, window 100 (bench/raw_publisher.cpp);
  2. throughput: simulated locks -> CoAP/DTLS -> lockbridge -> LMDB -> MQTT ->
     subscriber, 1 event per CoAP request and per MQTT message;
  3. latency: the same path at half the throughput measured in 2, p50/p99 from
     a lock sending a batch to its acknowledgement;
  4. backlog drain: broker down, N events journalled, broker back; time until
     the subscriber has them all (several events per MQTT message).

Real processes only (mosquitto, lockbridge, lockbridge-locksim, lockbridge-checker),
on 127.0.0.1. Run with bench/run.sh; `--quick` shrinks every count.
"""

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/integration"))
from harness import BUILD, CHECKER, LOCKBRIDGE, LOCKSIM, Broker, Pki, Process, free_port, wait_for  # noqa: E402

RAW_PUBLISHER = os.path.join(BUILD, "bench/lockbridge-raw-publisher")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def log_time(line):
    """The Unix time of a lockbridge log line (its stamp is this machine's
    local time, to the ms: spdlog's default)."""
    stamp, _, _ = line.partition(" ")
    whole, _, ms = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="lockbridge-bench-")
        self.pki = Pki(os.path.join(self.dir, "pki"))
        self.server_cert, self.server_key = self.pki.issue("localhost", server=True)
        self.gw_cert, self.gw_key = self.pki.issue("gw-1")
        self.cloud_cert, self.cloud_key = self.pki.issue("cloud-checker")
        self.raw_cert, self.raw_key = self.pki.issue("raw-publisher")
        self.broker = Broker(self.dir, self.pki.ca, self.server_cert, self.server_key,
                             persistence=True)
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.psk_dir = os.path.join(self.dir, "psk")
        os.makedirs(self.psk_dir)
        self.lock_ids = [f"lock-{i:02d}" for i in range(1, args.locks + 1)]
        self.config = os.path.join(self.dir, "lockbridge.toml")
        for lock in self.lock_ids:
            self.secret(os.path.join(self.psk_dir, f"{lock}.psk"), secrets.token_hex(16))
        self.key_file = os.path.join(self.dir, "kek.key")
        self.secret(self.key_file, secrets.token_hex(32))
        self.lookup_key_file = os.path.join(self.dir, "lookup.key")
        self.secret(self.lookup_key_file, secrets.token_hex(32))
        self.gateway = None
        self.gateway_log = os.path.join(self.dir, "lockbridge.log")
        self.checker_count = 0

    @staticmethod
    def secret(path, text):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def close(self):
        self.stop_gateway()
        self.broker.stop()
        if os.environ.get("LOCKBRIDGE_KEEP_BENCH_DIR"):
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- processes -----------------------------------------------------------

    def start_gateway(self, max_events_per_message, locks_toml=None, env=None, coap_extra="",
                      keep_state=False):
        """`locks_toml`: the [[locks]] (and [ble]) part instead of this
        bench's CoAP locks; `env`: the daemon's environment; `coap_extra`:
        more [coap] keys."""
        state = os.path.join(self.dir, "state")
        if not keep_state:
            shutil.rmtree(state, ignore_errors=True)
        config = os.path.join(self.dir, "lockbridge.toml")
        locks = "".join(f'\n[[locks]]\nid = "{l}"\npsk_file = "{self.psk_dir}/{l}.psk"\n'
                        for l in self.lock_ids) if locks_toml is None else locks_toml
        with open(config, "w") as f:
            f.write(f"""[gateway]
site = "site-1"
id = "gw-1"
environment = "development"
log_level = "info"
status_socket = "{self.dir}/status.sock"

[security]
key_encryption_key_file = "{self.key_file}"

[credentials]
lookup_key_file = "{self.lookup_key_file}"

[store]
state_dir = "{state}"
journal_max_mb = 2048

[coap]
dtls_listen = ["127.0.0.1:{self.coap_port}"]
{coap_extra}

[mqtt]
broker = "{self.broker.uri}"
ca_file = "{self.pki.ca}"
cert_file = "{self.gw_cert}"
key_file = "{self.gw_key}"
inflight_window = 100
max_events_per_message = {max_events_per_message}
reconnect_min_ms = 200
reconnect_max_ms = 1000
status_interval_s = 5
{locks}""")
        self.ready_seen = self.gateway_log_count("lockbridge: ready")
        wrap = os.environ.get("LOCKBRIDGE_BENCH_WRAP", "").split()  # e.g. "perf record -o F --"
        self.gateway = Process(wrap + [LOCKBRIDGE, "run", "--config", config], self.gateway_log,
                               env=env)
        wait_for(lambda: self.gateway_log_count("lockbridge: ready") > self.ready_seen, 30,
                 "lockbridge to be ready")

    def gateway_log_count(self, text):
        try:
            with open(self.gateway_log, errors="replace") as f:
                return f.read().count(text)
        except FileNotFoundError:
            return 0

    def gateway_connected_after(self, since):
        """When lockbridge logged its reconnection to the broker (Unix time)."""
        with open(self.gateway_log, errors="replace") as f:
            for line in f:
                if "uplink: connected to" in line:
                    t = log_time(line)
                    if t >= since - 0.01:
                        return t
        raise AssertionError("lockbridge never logged its reconnection")

    def gateway_peak_rss_kib(self):
        """Peak resident memory. It counts the LMDB file pages the map touched
        (file-backed, reclaimable), so see also gateway_anon_kib."""
        return self.proc_status_kib("VmHWM:")

    def gateway_anon_kib(self):
        """Resident anonymous memory now: the heap, stacks; not the LMDB map."""
        return self.proc_status_kib("RssAnon:")

    def proc_status_kib(self, field):
        with open(f"/proc/{self.gateway.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
        return 0

    def gateway_cpu_s(self):
        return self.cpu_s(self.gateway.proc.pid)

    @staticmethod
    def cpu_s(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop_gateway(self):
        if self.gateway:
            self.gateway.kill(15)
            self.gateway = None

    def checker(self, expect, topic, timeout, session=None):
        self.checker_count += 1
        ready = os.path.join(self.dir, f"checker-{self.checker_count}.ready")
        cmd = [CHECKER, "--broker", self.broker.uri, "--ca", self.pki.ca, "--cert", self.cloud_cert,
               "--key", self.cloud_key, "--timeout", str(timeout), "--ready-file", ready,
               "--expect", str(expect), "--topic", topic]
        if session:
            cmd += ["--session", session]
        p = Process(cmd, os.path.join(self.dir, "checker.log"))
        wait_for(lambda: os.path.exists(ready), 15, "the checker to subscribe")
        return p

    def locksim(self, events_per_lock, rate, batch, duration):
        cmd = [LOCKSIM, "--gateway", f"127.0.0.1:{self.coap_port}", "--psk-dir", self.psk_dir,
               "--locks", str(len(self.lock_ids)), "--events", str(events_per_lock),
               "--rate", str(rate), "--batch", str(batch), "--duration", str(duration),
               "--timeout-ms", "3000", "--max-backoff-ms", "500"]
        return Process(cmd, os.path.join(self.dir, "locksim.log"))

    # -- the four measurements -----------------------------------------------

    def raw_ceiling(self, messages):
        log(f"raw ceiling: {messages} QoS 1 messages from a plain Paho publisher")
        chk = self.checker(messages, "lockbridge/v1/site-1/raw/events", timeout=300)
        out = subprocess.run([RAW_PUBLISHER, "--broker", self.broker.uri, "--ca", self.pki.ca,
                              "--cert", self.raw_cert, "--key", self.raw_key,
                              "--messages", str(messages), "--window", "100"],
                             check=True, capture_output=True, text=True, timeout=600)
        pub = json.loads(out.stdout)
        sub = json.loads(chk.output(timeout=300))
        assert sub["unique_events"] == messages, sub
        rate = sub["unique_events"] / max(sub["events_span_s"], 1e-9)
        return {"messages": messages, "publisher_per_s": pub["messages_per_s"],
                "subscriber_per_s": rate}

    def throughput(self, events_per_lock):
        total = events_per_lock * len(self.lock_ids)
        log(f"throughput: {len(self.lock_ids)} locks x {events_per_lock} events, 1 per request "
            "and per MQTT message")
        self.start_gateway(max_events_per_message=1)
        chk = self.checker(total, "lockbridge/v1/site-1/gw-1/events", timeout=600)
        cpu0, broker0 = self.gateway_cpu_s(), self.cpu_s(self.broker.proc.pid)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim = self.locksim(events_per_lock, rate=0, batch=1, duration=600)
        sim_report = json.loads(sim.output(timeout=700))
        sub = json.loads(chk.output(timeout=700))
        cpu = self.gateway_cpu_s() - cpu0
        anon = self.gateway_anon_kib()
        broker_cpu = self.cpu_s(self.broker.proc.pid) - broker0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        # locksim and the checker have exited and been waited for: their CPU is here.
        peers_cpu = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
        rss = self.gateway_peak_rss_kib()
        self.stop_gateway()
        assert sim_report["complete"], sim_report
        assert sub["unique_events"] == total and sub["gaps"] == 0, sub
        rate = total / max(sub["events_span_s"], 1e-9)
        return {"events": total, "per_s": rate, "messages": sub["messages"],
                "locks_elapsed_s": sim_report["elapsed_s"],
                "lock_latency_us": sim_report["latency_us"],
                "gateway_cpu_us_per_event": cpu / total * 1e6, "gateway_peak_rss_mib": rss / 1024,
                "gateway_anon_mib": anon / 1024,
                "broker_cpu_us_per_event": broker_cpu / total * 1e6,
                "locksim_checker_cpu_us_per_event": peers_cpu / total * 1e6}

    def latency(self, total_rate, seconds):
        per_lock = total_rate / len(self.lock_ids)
        events_per_lock = max(1, int(per_lock * seconds))
        log(f"latency: {total_rate:.0f} events/s in all ({per_lock:.1f}/s per lock) for "
            f"{seconds} s, 1 event per request")
        self.start_gateway(max_events_per_message=1)
        total = events_per_lock * len(self.lock_ids)
        chk = self.checker(total, "lockbridge/v1/site-1/gw-1/events", timeout=seconds * 4 + 60)
        sim = self.locksim(events_per_lock, rate=per_lock, batch=1, duration=seconds * 4 + 30)
        sim_report = json.loads(sim.output(timeout=seconds * 4 + 90))
        sub = json.loads(chk.output(timeout=seconds * 4 + 120))
        self.stop_gateway()
        assert sim_report["complete"], sim_report
        assert sub["unique_events"] == total, sub
        return {"offered_per_s": total_rate, "events": total,
                "requests": sim_report["requests_acked"],
                "latency_us": sim_report["latency_us"]}

    def backlog(self, total, max_per_message):
        per_lock = total // len(self.lock_ids)
        total = per_lock * len(self.lock_ids)
        log(f"backlog: broker down, {total} events journalled, then the broker comes back")
        # A persistent session keeps the subscriber's queue across the broker's restart,
        # so nothing the gateway publishes before the subscriber reconnects is missed.
        chk = self.checker(total, "lockbridge/v1/site-1/gw-1/events", timeout=1200,
                           session="bench-backlog")
        self.broker.stop()
        self.start_gateway(max_events_per_message=max_per_message)
        t0 = time.monotonic()
        sim = self.locksim(per_lock, rate=0, batch=64, duration=900)
        sim_report = json.loads(sim.output(timeout=1000))
        fill_s = time.monotonic() - t0
        assert sim_report["complete"], sim_report
        journal_bytes = sum(os.path.getsize(os.path.join(self.dir, "state", f))
                            for f in os.listdir(os.path.join(self.dir, "state")))
        log(f"backlog: {total} events journalled in {fill_s:.1f} s; starting the broker")
        broker_back = time.time()
        self.broker.start()
        sub = json.loads(chk.output(timeout=1200))
        connected = self.gateway_connected_after(broker_back)
        rss = self.gateway_peak_rss_kib()
        anon = self.gateway_anon_kib()
        self.stop_gateway()
        assert sub["unique_events"] == total and sub["gaps"] == 0, sub
        return {"events": total, "fill_s": fill_s, "fill_per_s": total / fill_s,
                "store_bytes": journal_bytes, "messages": sub["messages"],
                "drain_s": sub["last_event_unix"] - connected,
                "reconnect_s": connected - broker_back,
                "first_event_after_s": sub["first_event_unix"] - broker_back,
                "gateway_peak_rss_mib": rss / 1024, "gateway_anon_mib": anon / 1024}


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ["mosquitto", "libcoap3", "libpaho-mqttpp3-1", "liblmdb0", "libcaf-core0.17"]:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                             text=True)
        versions[pkg] = out.stdout or "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "packages": versions}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--locks", type=int, default=50, help="simulated locks (default 50)")
    ap.add_argument("--events", type=int, default=100000, help="events for throughput")
    ap.add_argument("--backlog", type=int, default=1000000, help="events for the backlog drain")
    ap.add_argument("--latency-seconds", type=int, default=15)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.events, args.backlog, args.latency_seconds = 10000, 50000, 5
    for tool in [LOCKBRIDGE, LOCKSIM, CHECKER, RAW_PUBLISHER]:
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool} is missing; build first (bench/run.sh does)")

    bench = Bench(args)
    figures = {"machine": machine(), "args": vars(args)}
    try:
        bench.broker.start()
        figures["raw"] = bench.raw_ceiling(args.events)
        figures["throughput"] = bench.throughput(args.events // args.locks)
        figures["latency"] = bench.latency(figures["throughput"]["per_s"] / 2, args.latency_seconds)
        figures["backlog"] = bench.backlog(args.backlog, 100)
    finally:
        bench.close()

    raw, thr, lat, bl = figures["raw"], figures["throughput"], figures["latency"], figures["backlog"]
    ratio = thr["per_s"] / raw["subscriber_per_s"]
    figures["ratio"] = ratio

    def verdict(ok):
        return "meets target" if ok else "MISSES target"

    m = figures["machine"]
    print(f"lockbridge end-to-end benchmark ({m['cpu']}, {m['cores']} cores, Linux {m['kernel']})")
    print(f"  raw ceiling   plain Paho QoS 1 publisher, mTLS, window 100: "
          f"{raw['subscriber_per_s']:,.0f} msg/s at the subscriber "
          f"({raw['publisher_per_s']:,.0f} msg/s acknowledged to the publisher), {raw['messages']:,} messages")
    print(f"  throughput    {args.locks} locks -> lockbridge -> subscriber, 1 event/request, 1 event/message: "
          f"{thr['per_s']:,.0f} events/s ({thr['events']:,} events); "
          f"CPU per event: gateway {thr['gateway_cpu_us_per_event']:.0f} us, broker "
          f"{thr['broker_cpu_us_per_event']:.0f} us, locks+subscriber {thr['locksim_checker_cpu_us_per_event']:.0f} us; "
          f"gateway peak RSS {thr['gateway_peak_rss_mib']:.1f} MiB")
    print(f"  ratio         {ratio:.2f}x the raw ceiling (target >= 0.70x: {verdict(ratio >= 0.7)})")
    print(f"  latency       at {lat['offered_per_s']:,.0f} events/s (half of the above), "
          f"{lat['requests']:,} requests: p50 {lat['latency_us']['p50'] / 1000:.2f} ms, "
          f"p99 {lat['latency_us']['p99'] / 1000:.2f} ms, max {lat['latency_us']['max'] / 1000:.2f} ms "
          f"(target p99 < 5 ms: {verdict(lat['latency_us']['p99'] < 5000)})")
    print(f"  backlog       {bl['events']:,} events journalled with the broker down in {bl['fill_s']:.1f} s "
          f"({bl['fill_per_s']:,.0f} events/s, store {bl['store_bytes'] / 2**20:.0f} MiB); "
          f"drained in {bl['drain_s']:.1f} s from the gateway's reconnection "
          f"({bl['reconnect_s']:.1f} s after the broker came back) in {bl['messages']:,} messages "
          f"(target < 20 s for 1,000,000: {verdict(bl['drain_s'] < 20 * bl['events'] / 1e6)}); "
          f"gateway peak RSS {bl['gateway_peak_rss_mib']:.0f} MiB (LMDB map pages included), "
          f"anonymous {bl['gateway_anon_mib']:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
