"""Real components for lockbridge's integration tests.

Everything here starts real processes on loopback: a mosquitto broker with
certificates made on the spot by openssl, the lockbridge daemon, the lock
simulator (libcoap), libcoap's own coap-client-openssl and the cloud-side
checker (Paho). Nothing is mocked. Tests use Debian's /usr/bin/python3.
"""

import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
import unittest

BUILD = os.environ.get("LOCKBRIDGE_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
BUILD = os.path.abspath(BUILD)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
LOCKBRIDGE = os.path.join(BUILD, "app/lockbridge")
LOCKSIM = os.path.join(BUILD, "tools/lockbridge-locksim")
CHECKER = os.path.join(BUILD, "tools/lockbridge-checker")
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def ephemeral_low():
    """The lowest port the kernel hands out to sockets that bind none."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind=socket.SOCK_STREAM):
    """A port free for both TCP and UDP on 127.0.0.1 right now, below the
    ephemeral range: a server the test stops and starts again (the gateway,
    the broker) must find its port free, and a client's new socket (a lock
    reconnecting while the gateway is down) could otherwise be given it.
    (kind: kept for the callers; both are checked.)"""
    import random
    high = max(ephemeral_low(), 12000)
    for _ in range(200):
        port = random.randrange(10000, high)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


# A sanitizer build runs the daemon several times slower (ThreadSanitizer:
# a 10,000-credential chunk takes ~30 s instead of ~1 s): tools/tsan.sh sets
# LOCKBRIDGE_TEST_TIME_SCALE so that waits for an outcome stretch with it.
TIME_SCALE = float(os.environ.get("LOCKBRIDGE_TEST_TIME_SCALE", "1"))


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Pki:
    """A CA with server and client certificates, made with openssl at test time."""

    def __init__(self, directory, name="ca", not_before=None, days=30):
        """`not_before` ("YYYY-MM-DD HH:MM:SS"): issue as if on that date (via libfaketime),
        valid for ten years from then, for tests that run the daemon at other dates."""
        self.dir = directory
        self.name = name
        self.days = str(days)
        self.env = None
        if not_before:
            self.days = "3650"
            self.env = dict(os.environ, LD_PRELOAD=FAKETIME_LIB, FAKETIME="@" + not_before)
        os.makedirs(directory, exist_ok=True)
        self.ca_key = self.path(f"{name}.key")
        self.ca = self.path(f"{name}.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", self.days,
             "-subj", f"/CN=lockbridge test {name}"], env=self.env)

    def path(self, f):
        return os.path.join(self.dir, f)

    def issue(self, cn, server=False, san="IP:127.0.0.1,DNS:localhost"):
        """Issues a certificate; returns (cert, key) paths. `san`: a server's names."""
        key = self.path(f"{self.name}-{cn}.key")
        csr = self.path(f"{self.name}-{cn}.csr")
        cert = self.path(f"{self.name}-{cn}.pem")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"], env=self.env)
        ext = self.path(f"{cn}.ext")
        with open(ext, "w") as f:
            if server:
                f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-out", cert, "-days", self.days, "-extfile", ext], env=self.env)
        os.chmod(key, 0o600)
        return cert, key


class Broker:
    """A real mosquitto on 127.0.0.1 with TLS and required client certificates."""

    def __init__(self, directory, ca, cert, key, port=None, persistence=False, acl_file=None):
        self.dir = directory
        self.port = port or free_port()
        self.log = os.path.join(directory, "mosquitto.log")
        self.conf = os.path.join(directory, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"""per_listener_settings false
user root
persistence {"true" if persistence else "false"}
persistence_location {directory}/
log_dest file {self.log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
allow_anonymous false
max_queued_messages 2000000
max_inflight_messages 100
listener {self.port} 127.0.0.1
cafile {ca}
certfile {cert}
keyfile {key}
require_certificate true
use_identity_as_username true
""")
            if acl_file:
                # Debug logging names every publish the ACL denies.
                f.write(f"acl_file {acl_file}\nlog_type debug\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(listening, 10, "mosquitto to listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @property
    def uri(self):
        return f"ssl://127.0.0.1:{self.port}"


class RabbitMQ:
    """Real RabbitMQ nodes (Debian's rabbitmq-server with rabbitmq_mqtt) on
    127.0.0.1: an MQTT listener over TLS that requires a client certificate
    and takes its CN as the user (ssl_cert_login), node names, ports and an
    epmd of the test's own, started and stopped by the test by PID. With
    nodes=2 the second joins the first's cluster."""

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

    @classmethod
    def missing(cls):
        """Why RabbitMQ cannot run here, or None."""
        if not os.path.exists(cls.SERVER):
            return "rabbitmq-server is not installed (tools/install-deps.sh installs it)"
        if not glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_mqtt-*"):
            return "RabbitMQ's MQTT plugin is missing"
        return None

    def __init__(self, directory, ca, cert, key, nodes=1):
        self.dir = directory
        self.home = os.path.join(directory, "home")
        os.makedirs(self.home, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(secrets.token_hex(20))
        os.chmod(cookie, 0o400)
        self.epmd_port = free_port()
        self.tag = secrets.token_hex(3)
        self.nodes = []
        for i in range(nodes):
            node_dir = os.path.join(directory, f"node{i + 1}")
            os.makedirs(node_dir)
            node = {"name": f"lbtest{self.tag}n{i + 1}@localhost", "dir": node_dir,
                    "amqp": free_port(), "mqtts": free_port(), "dist": free_port(),
                    "proc": None}
            with open(os.path.join(node_dir, "rabbitmq.conf"), "w") as f:
                f.write(f"""listeners.tcp.default = 127.0.0.1:{node["amqp"]}
mqtt.listeners.tcp = none
mqtt.listeners.ssl.default = 127.0.0.1:{node["mqtts"]}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
mqtt.ssl_cert_login = true
ssl_cert_login_from = common_name
mqtt.allow_anonymous = false
loopback_users = none
""")
            with open(os.path.join(node_dir, "enabled_plugins"), "w") as f:
                f.write("[rabbitmq_mqtt].\n")
            self.nodes.append(node)

    def env(self, node):
        return dict(os.environ, HOME=self.home, ERL_EPMD_PORT=str(self.epmd_port),
                    RABBITMQ_NODENAME=node["name"], RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                    RABBITMQ_NODE_PORT=str(node["amqp"]), RABBITMQ_DIST_PORT=str(node["dist"]),
                    RABBITMQ_CONFIG_FILE=os.path.join(node["dir"], "rabbitmq.conf"),
                    RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(node["dir"], "enabled_plugins"),
                    RABBITMQ_MNESIA_BASE=os.path.join(node["dir"], "mnesia"),
                    RABBITMQ_LOG_BASE=os.path.join(node["dir"], "log"),
                    RABBITMQ_PID_FILE=os.path.join(node["dir"], "pid"))

    def uri(self, i=0):
        return f"ssl://127.0.0.1:{self.nodes[i]['mqtts']}"

    def broker(self, i=0):
        """Node i as Site.start_checker's `broker`."""
        return types.SimpleNamespace(uri=self.uri(i))

    def start(self, i=0, timeout=120):
        node = self.nodes[i]
        log = os.path.join(node["dir"], "server.log")
        with open(log, "ab") as out:
            node["proc"] = subprocess.Popen([self.SERVER], stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=self.env(node))

        def started():
            if node["proc"].poll() is not None:
                with open(log, errors="replace") as f:
                    raise AssertionError(f"RabbitMQ node {i + 1} exited:\n{f.read()[-3000:]}")
            with open(log, errors="replace") as f:
                return "Starting broker... completed" in f.read()
        wait_for(started, timeout, f"RabbitMQ node {i + 1} to start")

    def ctl(self, *args, node=0):
        n = self.nodes[node]
        out = subprocess.run([self.CTL, "-n", n["name"], *args], capture_output=True, text=True,
                             env=self.env(n), timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def join(self, i):
        """Node i joins node 0's cluster."""
        self.ctl("stop_app", node=i)
        self.ctl("join_cluster", self.nodes[0]["name"], node=i)
        self.ctl("start_app", node=i)

    def add_user(self, name, topics=None):
        """A user for a certificate's CN; `topics`: the MQTT topic prefix it may
        write and read (RabbitMQ sees "/" as "."), else every topic."""
        self.ctl("add_user", name, secrets.token_hex(16))
        self.ctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        if topics:
            pattern = "^" + re.escape(topics.replace("/", "."))
            self.ctl("set_topic_permissions", "-p", "/", name, "amq.topic", pattern, pattern)

    def stop(self, i=None):
        for k in ([i] if i is not None else range(len(self.nodes))):
            p = self.nodes[k]["proc"]
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.nodes[k]["proc"] = None
        if i is None:
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True,
                           env=dict(os.environ, ERL_EPMD_PORT=str(self.epmd_port)))


def schema_validator(name):
    """A validator for docs/schemas/<name>, with the other schemas resolvable by $id."""
    import jsonschema
    store = {}
    for f in os.listdir(os.path.join(SOURCE, "docs/schemas")):
        with open(os.path.join(SOURCE, "docs/schemas", f)) as fh:
            doc = json.load(fh)
        store[doc["$id"]] = doc
    with open(os.path.join(SOURCE, "docs/schemas", name)) as fh:
        schema = json.load(fh)
    resolver = jsonschema.RefResolver(schema["$id"], schema, store=store)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


class Cloud:
    """The cloud side of commands: publishes on a gateway's cmd/ topics over
    mutual TLS (python3-paho-mqtt, not the project's code) and collects what
    comes back on cmd_result."""

    def __init__(self, broker, ca, cert, key, prefix):
        import paho.mqtt.client as mqtt
        self.prefix = prefix
        self.results = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(client_id=f"cloud-{os.getpid()}-{secrets.token_hex(3)}",
                                  clean_session=True)
        self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(prefix + "cmd_result", qos=1)
        if not subscribed.wait(10):
            raise AssertionError("the cloud client could not subscribe to cmd_result")

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.results.append(json.loads(msg.payload))
            self.cond.notify_all()

    def send(self, name, doc):
        payload = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
        info = self.client.publish(self.prefix + "cmd/" + name, payload, qos=1)
        info.wait_for_publish()

    def wait_result(self, command_id, status=None, timeout=60, skip=0):
        """The first result for `command_id` (with `status`, if given) after `skip` of them."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        with self.cond:
            while True:
                matches = [r for r in self.results
                           if r.get("id") == command_id and (status is None or r["status"] == status)]
                if len(matches) > skip:
                    return matches[skip]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no result for {command_id} ({status}) within {timeout} s; "
                                         f"got {self.results[-5:]}")
                self.cond.wait(left)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def snapshot_chunks(snapshot_id, version, credentials, per_chunk, command_prefix="snap"):
    """Splits a credential list into snapshot chunk documents."""
    chunks = max(1, (len(credentials) + per_chunk - 1) // per_chunk)
    for i in range(chunks):
        yield {"schema": "lockbridge/credentials-snapshot/1",
               "id": f"{command_prefix}-{snapshot_id}-{i + 1}", "snapshot": snapshot_id,
               "version": version, "chunk": i + 1, "chunks": chunks,
               "credentials": credentials[i * per_chunk:(i + 1) * per_chunk]}


class Process:
    """A background process whose output goes to a file."""

    def __init__(self, cmd, log_path, env=None):
        self.cmd = cmd
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log_file, env=env)

    def output(self, timeout):
        out, _ = self.proc.communicate(timeout=timeout)
        self.log_file.close()
        return out.decode()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(15)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


class BlueZ:
    """A private D-Bus daemon with a mock of BlueZ (python3-dbusmock's bluez5
    template extended with lock devices that speak protocol v1 over GATT:
    tests/integration/ble/lockbridge_bluez.py). This machine has no radio;
    lockbridge's BLE code talks to this over D-Bus as it would to bluetoothd."""

    TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ble/lockbridge_bluez.py")

    def __init__(self, directory, locks, strangers=()):
        self.dir = directory
        socket_path = os.path.join(directory, "system_bus_socket")
        self.daemon = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1",
             f"--address=unix:path={socket_path}"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(directory, "dbus-daemon.log"), "w"),
            text=True)
        self.address = self.daemon.stdout.readline().strip()
        if not self.address:
            raise AssertionError("dbus-daemon did not start")
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address)
        params = json.dumps({"adapter": "hci0", "locks": locks, "strangers": list(strangers)})
        # (-l: dbusmock logs every call; to a file, not to a pipe nobody reads)
        self.mock = Process(["/usr/bin/python3", "-m", "dbusmock", "--template", self.TEMPLATE,
                             "-l", os.path.join(directory, "bluez-mock-calls.log"), "-p", params],
                            os.path.join(directory, "bluez-mock.log"), env=self.env)
        import dbus
        self.bus = dbus.bus.BusConnection(self.address)
        wait_for(lambda: self.bus.name_has_owner("org.bluez"), 20, "the BlueZ mock on the bus")
        self.control = dbus.Interface(self.bus.get_object("org.bluez", "/"),
                                      "org.lockbridge.MockLocks")

        def ready():
            if self.mock.proc.poll() is not None:
                raise AssertionError(f"the BlueZ mock exited:\n{self.mock.log()}")
            try:
                return self.stats()["ready"]
            except dbus.exceptions.DBusException:
                return False
        wait_for(ready, 20, "the BlueZ mock's adapter and locks")

    def stats(self):
        return json.loads(str(self.control.Stats()))

    def stop(self):
        for p in (self.mock.proc, self.daemon):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()


class Site(unittest.TestCase):
    """A test site: PKI, broker, config and helpers. Subclasses are test cases."""

    locks = 3
    extra_store = ""
    extra_mqtt = ""
    extra_coap = ""
    time_zone = "UTC"
    pki_not_before = None
    broker_acl = False  # True: mosquitto with config/mosquitto.acl.example filled in
    extra_credentials = ""
    extra_security = ""
    doors = ""
    environment = "development"
    broker_persistence = False
    ble_locks = ()  # (id, address) pairs configured with transport = "ble"
    ble_section = ""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lockbridge-it-")
        self.pki = Pki(os.path.join(self.dir, "pki"), not_before=self.pki_not_before)
        self.server_cert, self.server_key = self.pki.issue("localhost", server=True)
        self.gw_cert, self.gw_key = self.pki.issue("gw-1")
        self.cloud_cert, self.cloud_key = self.pki.issue("cloud-checker")
        acl = None
        if self.broker_acl:
            # The shipped example ACL, filled in: gw-1 and gw-2 of site-1, the cloud.
            with open(os.path.join(ROOT, "config/mosquitto.acl.example")) as f:
                template = f.read()
            header, block = template.split("\nuser @GATEWAY@", 1)
            gateway_block, cloud_block = ("user @GATEWAY@" + block).split("\nuser @CLOUD@", 1)
            text = header
            for gw in ["gw-1", "gw-2"]:
                text += "\n" + gateway_block.replace("@SITE@", "site-1").replace("@GATEWAY@", gw)
            text += "\nuser cloud-checker" + cloud_block
            acl = os.path.join(self.dir, "mosquitto.acl")
            with open(acl, "w") as f:
                f.write(text)
        self.broker = Broker(self.dir, self.pki.ca, self.server_cert, self.server_key,
                             persistence=self.broker_persistence, acl_file=acl)
        self.broker.start()
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.psk_dir = os.path.join(self.dir, "psk")
        os.makedirs(self.psk_dir)
        self.lock_ids = [f"lock-{i:02d}" for i in range(1, self.locks + 1)]
        for lock in self.lock_ids + [i for i, _ in self.ble_locks]:
            self.write_secret(os.path.join(self.psk_dir, f"{lock}.psk"), secrets.token_hex(16))
        self.kek_file = os.path.join(self.dir, "kek.key")
        self.write_secret(self.kek_file, secrets.token_hex(32))
        self.lookup_key_file = os.path.join(self.dir, "lookup.key")
        self.write_secret(self.lookup_key_file, secrets.token_hex(32))
        self.state_dir = os.path.join(self.dir, "state")
        self.config = os.path.join(self.dir, "lockbridge.toml")
        self.write_config()
        self.gateway = None
        self.gateway_log = os.path.join(self.dir, "lockbridge.log")
        self.background = []

    def tearDown(self):
        for p in self.background:
            try:
                p.kill(signal.SIGTERM)
            except Exception:
                pass
        if self.gateway:
            self.gateway.kill()
        if getattr(self, "bluez", None) is not None:
            self.bluez.stop()
        self.broker.stop()
        if os.environ.get("LOCKBRIDGE_KEEP_TEST_DIRS"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def write_secret(path, text):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def write_config(self, ca=None, cert=None, key=None, lock_ids=None, extra_store=None,
                     extra_mqtt=None):
        lock_ids = self.lock_ids if lock_ids is None else lock_ids
        locks = "".join(f'\n[[locks]]\nid = "{l}"\npsk_file = "{self.psk_dir}/{l}.psk"\n'
                        for l in lock_ids)
        locks += "".join(f'\n[[locks]]\nid = "{l}"\npsk_file = "{self.psk_dir}/{l}.psk"\n'
                         f'transport = "ble"\nble_address = "{a}"\n' for l, a in self.ble_locks)
        if self.ble_section:
            locks = f"\n[ble]\n{self.ble_section}\n" + locks
        with open(self.config, "w") as f:
            f.write(f"""[gateway]
site = "site-1"
id = "gw-1"
environment = "{self.environment}"
log_level = "info"
time_zone = "{self.time_zone}"
status_socket = "{self.dir}/status.sock"

[security]
key_encryption_key_file = "{self.kek_file}"
{self.extra_security}

[credentials]
lookup_key_file = "{self.lookup_key_file}"
{self.extra_credentials}

[store]
state_dir = "{self.state_dir}"
{self.extra_store if extra_store is None else extra_store}

[coap]
dtls_listen = ["127.0.0.1:{self.coap_port}"]
{self.extra_coap}

[mqtt]
broker = "{self.broker.uri}"
ca_file = "{ca or self.pki.ca}"
cert_file = "{cert or self.gw_cert}"
key_file = "{key or self.gw_key}"
reconnect_min_ms = 200
reconnect_max_ms = 1000
status_interval_s = 1
{self.extra_mqtt if extra_mqtt is None else extra_mqtt}
{self.doors}
{locks}""")

    # -- lockbridge ---------------------------------------------------------

    def start_gateway(self, wait_ready=True, faketime=None, wrap=()):
        """`faketime`: run the daemon with its clock set by libfaketime (e.g. "@2026-03-29 07:59:50");
        `wrap`: a command the daemon's is appended to (e.g. prlimit's)."""
        env = None
        if faketime:
            # (ASAN_OPTIONS: the sanitizer build tolerates the preloaded libfaketime.)
            env = dict(os.environ, LD_PRELOAD=FAKETIME_LIB, FAKETIME=faketime,
                       DONT_FAKE_MONOTONIC="1", ASAN_OPTIONS="verify_asan_link_order=0")
        if getattr(self, "bluez", None) is not None:
            env = dict(env or os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bluez.address)
        if os.environ.get("LOCKBRIDGE_GATEWAY_TSAN_OPTIONS"):
            # tools/tsan.sh: the daemon's ThreadSanitizer reports go to files;
            # the test's own tools report nothing.
            env = dict(env or os.environ, TSAN_OPTIONS=os.environ["LOCKBRIDGE_GATEWAY_TSAN_OPTIONS"])
        self.gateway = Process(list(wrap) + [LOCKBRIDGE, "run", "--config", self.config],
                               self.gateway_log, env=env)
        if wait_ready:
            wait_for(lambda: self.gateway_ready(), 15, "lockbridge to be ready")
        return self.gateway

    def gateway_ready(self):
        if self.gateway.proc.poll() is not None:
            raise AssertionError(f"lockbridge exited early:\n{self.gateway.log()}")
        return self.gateway.log().count("lockbridge: ready") > self.ready_seen

    ready_seen = 0

    def restart_gateway(self):
        self.ready_seen = self.gateway.log().count("lockbridge: ready")
        self.start_gateway()

    def gateway_log_text(self):
        try:
            with open(self.gateway_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- peers --------------------------------------------------------------

    def start_checker(self, expect=0, timeout=120, topics=None, idle_exit=0, capture=True,
                      session=None, broker=None):
        """`broker`: another Broker than the site's own."""
        ready = os.path.join(self.dir, f"checker-{len(self.background)}.ready")
        cmd = [CHECKER, "--broker", (broker or self.broker).uri, "--ca", self.pki.ca,
               "--cert", self.cloud_cert,
               "--key", self.cloud_key, "--timeout", str(timeout), "--ready-file", ready]
        if expect:
            cmd += ["--expect", str(expect)]
        if idle_exit:
            cmd += ["--idle-exit", str(idle_exit)]
        if session:
            cmd += ["--session", session]
        for t in topics or []:
            cmd += ["--topic", t]
        self.capture = os.path.join(self.dir, f"capture-{len(self.background)}.jsonl")
        if capture:
            cmd += ["--capture", self.capture]
        p = Process(cmd, os.path.join(self.dir, "checker.log"))
        p.capture = self.capture
        self.background.append(p)
        wait_for(lambda: os.path.exists(ready), 15, "the checker to subscribe")
        return p

    def locksim(self, locks=None, events=100, rate=0, batch=10, duration=120, extra=None):
        cmd = [LOCKSIM, "--gateway", f"127.0.0.1:{self.coap_port}", "--psk-dir", self.psk_dir,
               "--locks", str(locks or self.locks), "--events", str(events), "--rate", str(rate),
               "--batch", str(batch), "--duration", str(duration), "--timeout-ms", "2000",
               "--max-backoff-ms", "500"]
        cmd += extra or []
        return Process(cmd, os.path.join(self.dir, "locksim.log"))

    def coap_client(self, identity, key, payload_path, path="v1/events", method="post"):
        """libcoap's own client: returns (exit code, stdout, stderr)."""
        cmd = ["coap-client-openssl", "-m", method, "-B", "5", "-u", identity, "-k", key]
        if payload_path:
            cmd += ["-t", "60", "-f", payload_path]
        out_path = os.path.join(self.dir, "coap-client.out")
        if os.path.exists(out_path):
            os.remove(out_path)
        cmd += ["-o", out_path, f"coaps://127.0.0.1:{self.coap_port}/{path}"]
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        body = b""
        if os.path.exists(out_path):
            with open(out_path, "rb") as f:
                body = f.read()
        return p.returncode, body + p.stdout, p.stderr.decode(errors="replace")

    def cloud(self):
        """The cloud's command client, once the gateway listens for commands."""
        def subscribed():  # since the gateway's latest start
            log = self.gateway_log_text()
            return log.count("uplink: receiving commands") >= log.count("lockbridge: ready")
        wait_for(subscribed, 30, "lockbridge to subscribe to its commands")
        c = Cloud(self.broker, self.pki.ca, self.cloud_cert, self.cloud_key,
                  "lockbridge/v1/site-1/gw-1/")
        self.addCleanup(c.close)
        return c

    def access(self, lock, cred, door, ts=None):
        """Asks the gateway for an access decision with libcoap's own client."""
        import cbor_helper
        body = cbor_helper.encode({"cred": cred, "door": door,
                                   "ts": ts or int(time.time() * 1000)})
        path = os.path.join(self.dir, "access.cbor")
        with open(path, "wb") as f:
            f.write(body)
        rc, out, err = self.coap_client(lock, self.psk_of(lock), path, path="v1/access")
        if rc != 0 or not out:
            raise AssertionError(f"access query failed: rc={rc} out={out!r} err={err}")
        try:
            return cbor_helper.decode(out)
        except Exception:
            raise AssertionError(f"access answer is not CBOR: {out!r} {err}")

    def status(self):
        """`lockbridge status --json`: (exit code, parsed document or stderr)."""
        out = subprocess.run([LOCKBRIDGE, "status", "--config", self.config, "--json"],
                             capture_output=True, text=True, timeout=20)
        return out.returncode, (json.loads(out.stdout) if out.returncode == 0 else out.stderr)

    def journal_stats(self):
        out = run([LOCKBRIDGE, "journal", "stats", "--config", self.config, "--json"])
        return json.loads(out.stdout)

    def credentials_stats(self):
        out = run([LOCKBRIDGE, "credentials", "stats", "--config", self.config, "--json"])
        return json.loads(out.stdout)

    def psk_of(self, lock):
        with open(os.path.join(self.psk_dir, f"{lock}.psk")) as f:
            return f.read().strip()

    def captured(self):
        with open(self.capture) as f:
            return [json.loads(line) for line in f if line.strip()]

    def assert_complete_delivery(self, report, expected_per_lock):
        """Every event of every lock arrived, in seq order, duplicates only as repeats."""
        self.assertEqual(report["bad_messages"], 0)
        self.assertEqual(report["gaps"], 0, report)
        self.assertEqual(report["order_violations"], 0, report)
        for lock, n in expected_per_lock.items():
            self.assertIn(lock, report["locks"], f"nothing from {lock}")
            self.assertEqual(report["locks"][lock]["unique"], n, f"{lock}: {report['locks'][lock]}")
            self.assertEqual(report["locks"][lock]["highest_seq"], n)

    def last_status(self):
        """The last online status message captured by the checker."""
        last = None
        for m in self.captured():
            if m["topic"].endswith("/status"):
                doc = json.loads(m["payload"])
                if doc.get("state") == "online":
                    last = doc
        return last
