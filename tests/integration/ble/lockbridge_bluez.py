'''A python-dbusmock template: BlueZ (the stock bluez5 template) plus BLE
locks that speak lockbridge's protocol v1 over GATT.

Each lock is a Device1 under the adapter with the lock service (GattService1)
and its two characteristics (GattCharacteristic1): the gateway writes
fragments to "to lock" with WriteValue; the lock answers with Value changes
(PropertiesChanged) on "from lock" once the gateway called StartNotify. The
lock side of the protocol is written here, independently of the gateway's
C++: fragments, the hello exchange, HKDF session keys, AES-256-GCM sealing.

Parameters (JSON):
  {"adapter": "hci0",
   "locks": [{"address": "C0:FF:EE:00:00:01", "id": "ble-1", "psk": "<key file text>",
              "mtu": 185, "events": 400, "batch": 20, "rate": 0}, ...],
   "strangers": ["C0:FF:EE:00:00:99"]}   # devices no lock is configured for

Control (interface org.lockbridge.MockLocks on /):
  Stats() -> JSON per address; AddEvents(address, n); Access(address, cred,
  door); SetFault(address, fault); Inject(address) (a stranger speaks).
'''

import json
import os
import random
import sys
import time

import dbus
from gi.repository import GLib
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cbor_helper  # noqa: E402

from dbusmock import mockobject  # noqa: E402
from dbusmock.templates import bluez5  # noqa: E402
from dbusmock.templates.bluez5 import *  # noqa: E402,F401,F403  (the bluez5 methods)

BUS_NAME = 'org.bluez'
MAIN_OBJ = '/'
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

CONTROL_IFACE = 'org.lockbridge.MockLocks'
DEVICE_IFACE = 'org.bluez.Device1'
SERVICE_IFACE = 'org.bluez.GattService1'
CHAR_IFACE = 'org.bluez.GattCharacteristic1'
SERVICE_UUID = '6c6b6272-0001-4c42-9a7e-6c6f636b6272'
TO_LOCK_UUID = '6c6b6272-0002-4c42-9a7e-6c6f636b6272'
FROM_LOCK_UUID = '6c6b6272-0003-4c42-9a7e-6c6f636b6272'

K_HELLO, K_HELLO_ANSWER = 0x01, 0x02
K_EVENTS, K_ACCESS, K_TIME, K_STATE, K_CMD_ANSWER, K_IDLE = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16
K_EVENTS_ANSWER, K_ACCESS_ANSWER, K_TIME_ANSWER, K_COMMAND, K_STATE_REQUEST = 0x21, 0x22, 0x23, 0x24, 0x25

LOCKS = {}       # address -> MockLock
STRANGERS = {}   # address -> MockLock (never configured on the gateway)
CONNECTED = set()
PEAK = [0]
ADAPTER = ['hci0']


def hkdf(psk, salt, info):
    return HKDF(hashes.SHA256(), 32, salt, info.encode()).derive(psk)


def fragments(msg_id, message, mtu):
    chunk = mtu - 3 - 4
    count = max(1, (len(message) + chunk - 1) // chunk)
    return [msg_id.to_bytes(2, 'big') + bytes([i, count]) + message[i * chunk:(i + 1) * chunk]
            for i in range(count)]


class MockLock:
    def __init__(self, spec, device_path):
        self.address = spec['address']
        self.id = spec.get('id', 'stranger')
        self.psk = spec.get('psk', 'stranger-key-0000').encode()  # the PSK file's bytes
        self.mtu = int(spec.get('mtu', 185))
        self.batch = int(spec.get('batch', 20))
        self.path = device_path
        self.from_path = device_path + '/service0010/char0013'
        self.to_path = device_path + '/service0010/char0011'
        self.seq = 0
        self.pending = []        # events not yet acknowledged, oldest first
        self.acked = 0
        self.access_queue = []   # (cred, door)
        self.want_time = False
        self.hold_until = 0.0    # told the journal is full: no events before this
        self.faults = []         # one-shot faults, in order
        self.notifying = False
        self.session = None
        self.msg_id = random.randrange(1, 60000)
        self.partial = {}
        self.in_flight = None    # (kind, counter, bytes) awaiting an answer
        self.retry_source = None
        self.advert = 0
        self.state = {'locked': True, 'door_open': False, 'battery': 87, 'fw': 'mock-1.0'}
        self.stats = {'connections': 0, 'events_acked': 0, 'refused_full': 0, 'answers': [], 'commands': [],
                      'times': 0, 'state_requests': 0, 'resent': 0, 'faults_done': [],
                      'refused': []}
        self.add_events(int(spec.get('events', 0)))
        rate = float(spec.get('rate', 0))  # events/s, generated as time goes by (the demo)
        if rate > 0:
            GLib.timeout_add(max(10, int(1000 / rate)), lambda: self.add_events(1) or True)

    # ---- what the lock has to say --------------------------------------

    def add_events(self, n):
        now = int(time.time() * 1000)
        for _ in range(n):
            self.seq += 1
            self.pending.append({'seq': self.seq, 'ts': now, 'type': 'door_opened',
                                 'door': 'door-' + self.id})
        if self.session is not None and self.in_flight is None:
            GLib.idle_add(lambda: self.next_step() and False)  # connected: says it now
        self.advertise()

    def advertise(self):
        waiting = self.pending and time.monotonic() >= self.hold_until
        if self.address in CONNECTED or not (waiting or self.access_queue or self.want_time):
            return
        self.advertise_flags((1 if self.pending or self.want_time else 0) | (2 if self.access_queue else 0))

    def advertise_flags(self, flags):
        self.advert = (self.advert + 1) % 256
        dev = mockobject.objects[self.path]
        value = dbus.Dictionary({SERVICE_UUID: dbus.Array([dbus.Byte(flags), dbus.Byte(self.advert)],
                                                          signature='y', variant_level=1)},
                                signature='sv', variant_level=1)
        dev.props[DEVICE_IFACE]['ServiceData'] = value
        dev.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                       [DEVICE_IFACE, {'ServiceData': value}, []])

    # ---- link ------------------------------------------------------------

    def connected(self):
        self.stats['connections'] += 1
        self.session = None
        self.partial = {}
        self.in_flight = None

    def disconnected(self):
        self.session = None
        self.notifying = False
        self.in_flight = None
        self.partial = {}
        if self.retry_source is not None:
            GLib.source_remove(self.retry_source)
            self.retry_source = None
        GLib.timeout_add(50, lambda: self.advertise() and False)

    def notify_value(self, value):
        char = mockobject.objects[self.from_path]
        v = dbus.Array([dbus.Byte(b) for b in value], signature='y', variant_level=1)
        char.props[CHAR_IFACE]['Value'] = v
        char.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                        [CHAR_IFACE, {'Value': v}, []])

    def send_raw(self, message, kind=None):
        '''Fragments a message, with this lock's next fault applied. The
        fragment faults wait for an events message: the tests expect the
        batch to be sent again (a state message that lost a fragment is
        asked for again only on the next connection, so which message came
        first would decide the outcome).'''
        self.msg_id = (self.msg_id + 1) % 65536
        parts = fragments(self.msg_id, message, self.mtu)
        fault = self.faults[0] if self.faults and len(parts) > 2 and kind == K_EVENTS else None
        if fault == 'drop_fragment':
            self.faults.pop(0)
            self.stats['faults_done'].append(fault)
            parts = parts[:1] + parts[2:]
        elif fault == 'duplicate_fragment':
            self.faults.pop(0)
            self.stats['faults_done'].append(fault)
            parts = parts[:2] + [parts[1]] + parts[2:]
        elif fault == 'disconnect_mid_fragment':
            self.faults.pop(0)
            self.stats['faults_done'].append(fault)
            for p in parts[:len(parts) // 2]:
                self.notify_value(p)
            drop_connection(self)
            return
        for p in parts:
            if not self.notifying:
                return
            self.notify_value(p)

    def seal(self, kind, body):
        s = self.session
        s['send'] += 1
        header = bytes([1, kind]) + s['send'].to_bytes(8, 'big')
        iv = bytes(4) + s['send'].to_bytes(8, 'big')
        return header + AESGCM(s['from_lock']).encrypt(iv, body, header)

    def send(self, kind, body, expects_answer=False):
        message = self.seal(kind, body)
        if expects_answer:
            self.in_flight = (kind, self.session['send'], message)
            self.arm_retry()
        self.send_raw(message, kind)
        if self.faults and self.faults[0] == 'replay' and kind == K_ACCESS:
            # An attacker (or a confused radio) sends the same message again.
            self.faults.pop(0)
            self.stats['faults_done'].append('replay')
            self.send_raw(message)
        return message

    def arm_retry(self):
        if self.retry_source is not None:
            GLib.source_remove(self.retry_source)
        self.retry_source = GLib.timeout_add(1500, self.retry)

    def retry(self):
        self.retry_source = None
        if self.in_flight is None or self.session is None:
            return False
        # No answer (a fragment was lost): the same body under a new counter.
        kind, _, message = self.in_flight
        body = AESGCM(self.session['from_lock']).decrypt(bytes(4) + message[2:10], message[10:], message[:10])
        self.stats['resent'] += 1
        self.send(kind, body, expects_answer=True)
        return False

    def next_step(self):
        '''Says the next thing it has to say, or that it is done.'''
        if self.session is None or self.in_flight is not None:
            return
        if self.faults and self.faults[0] == 'forge':
            self.faults.pop(0)
            self.stats['faults_done'].append('forge')
            # Sealed under a key derived from a wrong PSK: must not authenticate.
            wrong = hkdf(os.urandom(16), self.session['salt'], 'lockbridge-ble-v1 L ' + self.id)
            self.session['send'] += 1
            header = bytes([1, K_EVENTS]) + self.session['send'].to_bytes(8, 'big')
            body = cbor_helper.encode({'events': [{'seq': self.seq + 1000, 'ts': 1, 'type': 'forged',
                                                   'door': 'door-forged'}]})
            self.send_raw(header + AESGCM(wrong).encrypt(bytes(4) + header[2:], body, header))
        if self.faults and self.faults[0] == 'bad_events':
            # Authentic (sealed with the right key) but not a valid batch.
            self.faults.pop(0)
            self.stats['faults_done'].append('bad_events')
            self.send(K_EVENTS, cbor_helper.encode({'events': [{'ts': 1, 'type': 'x', 'door': 'd'}]}),
                      expects_answer=True)
            return
        if self.want_time:
            self.want_time = False
            self.send(K_TIME, b'', expects_answer=True)
            return
        if self.access_queue:
            cred, door = self.access_queue[0]
            body = cbor_helper.encode({'cred': cred, 'door': door, 'ts': int(time.time() * 1000)})
            self.send(K_ACCESS, body, expects_answer=True)
            return
        if self.pending and time.monotonic() >= self.hold_until:
            batch = self.pending[:self.batch]
            self.send(K_EVENTS, cbor_helper.encode({'events': batch}), expects_answer=True)
            return
        # (with the last gateway counter it has seen: an idle older than the
        # gateway's latest request does not end the link)
        self.send(K_IDLE, self.session['recv'].to_bytes(8, 'big'))

    # ---- what the gateway wrote ------------------------------------------

    def written(self, value):
        value = bytes(value)
        if len(value) < 4:
            return
        mid, index, count = int.from_bytes(value[:2], 'big'), value[2], value[3]
        if count == 1:
            self.message(value[4:])
            return
        parts = self.partial.setdefault(mid, {})
        parts[index] = value[4:]
        if len(parts) == count:
            del self.partial[mid]
            self.message(b''.join(parts[i] for i in range(count)))

    def message(self, m):
        if len(m) < 2 or m[0] != 1:
            return
        kind = m[1]
        if kind == K_HELLO:
            # A new session (the gateway may have restarted while the link
            # stayed up): what was in flight is asked again from scratch.
            self.in_flight = None
            if self.retry_source is not None:
                GLib.source_remove(self.retry_source)
                self.retry_source = None
            gw_nonce, lock_nonce = m[2:18], os.urandom(16)
            salt = gw_nonce + lock_nonce
            self.session = {'salt': salt, 'send': 0, 'recv': 0,
                            'to_lock': hkdf(self.psk, salt, 'lockbridge-ble-v1 G ' + self.id),
                            'from_lock': hkdf(self.psk, salt, 'lockbridge-ble-v1 L ' + self.id)}
            self.send_raw(bytes([1, K_HELLO_ANSWER]) + lock_nonce)
            GLib.idle_add(lambda: self.next_step() and False)
            return
        if self.session is None:
            return
        counter = int.from_bytes(m[2:10], 'big')
        try:
            body = AESGCM(self.session['to_lock']).decrypt(bytes(4) + m[2:10], m[10:], m[:10])
        except Exception:  # noqa: BLE001  (InvalidTag)
            self.stats['refused'].append('forged gateway message')
            return
        if counter <= self.session['recv']:
            self.stats['refused'].append('replayed gateway message')
            return
        self.session['recv'] = counter
        if kind == K_STATE_REQUEST:
            self.stats['state_requests'] += 1
            if 'huge_state' in self.faults:  # an array header claiming 2**64-1 items
                self.faults.remove('huge_state')
                self.stats['faults_done'].append('huge_state')
                self.send(K_STATE, b'\x9b' + b'\xff' * 8)
                return
            self.send(K_STATE, cbor_helper.encode(self.state))
            return
        if kind == K_COMMAND:
            if 'mute' in self.faults:  # receives, never answers
                self.stats['faults_done'].append('mute')
                return
            cmd = cbor_helper.decode(body)
            self.stats['commands'].append(cmd)
            if cmd.get('op') == 'unlock':
                self.state['locked'] = False
            elif cmd.get('op') == 'lock':
                self.state['locked'] = True
            answer = cbor_helper.encode({'id': cmd['id'], 'result': 'done'})
            self.send(K_CMD_ANSWER, counter.to_bytes(8, 'big') + (204).to_bytes(2, 'big') + answer)
            self.send(K_STATE, cbor_helper.encode(self.state))
            GLib.idle_add(lambda: self.next_step() and False)  # then idle, or what else it has
            return
        if kind in (K_EVENTS_ANSWER, K_ACCESS_ANSWER, K_TIME_ANSWER):
            re, code, payload = int.from_bytes(body[:8], 'big'), int.from_bytes(body[8:10], 'big'), body[10:]
            if self.in_flight is None or re != self.in_flight[1]:
                return  # the answer to an attempt already given up
            self.in_flight = None
            if self.retry_source is not None:
                GLib.source_remove(self.retry_source)
                self.retry_source = None
            if kind == K_EVENTS_ANSWER and code == 204:
                acked = cbor_helper.decode(payload)['acked_seq']
                before = len(self.pending)
                self.pending = [e for e in self.pending if e['seq'] > acked]
                self.stats['events_acked'] += before - len(self.pending)
                self.acked = max(self.acked, acked)
            elif kind == K_EVENTS_ANSWER and code == 503:
                # The journal is full: keep the events, come back later.
                self.stats['refused_full'] += 1
                self.hold_until = time.monotonic() + cbor_helper.decode(payload)['retry_after_s']
                GLib.timeout_add(int(1000 * (self.hold_until - time.monotonic())) + 10,
                                 lambda: self.advertise() and False)
            elif kind == K_EVENTS_ANSWER:
                self.stats['answers'].append({'code': code, 'text': payload.decode(errors='replace')})
            elif kind == K_TIME_ANSWER:
                self.stats['times'] += 1
                self.stats['time'] = cbor_helper.decode(payload)
            elif kind == K_ACCESS_ANSWER:
                self.access_queue.pop(0)
                self.stats['answers'].append({'code': code, 'decision': cbor_helper.decode(payload)
                                              if code == 205 else payload.decode(errors='replace')})
            GLib.idle_add(lambda: self.next_step() and False)


def drop_connection(lock):
    '''The lock (or the radio) drops the link.'''
    dev = mockobject.objects[lock.path]
    if lock.address in CONNECTED:
        CONNECTED.discard(lock.address)
        dev.connected = False
        dev.props[DEVICE_IFACE]['Connected'] = dbus.Boolean(False, variant_level=1)
        dev.props[DEVICE_IFACE]['ServicesResolved'] = dbus.Boolean(False, variant_level=1)
        dev.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                       [DEVICE_IFACE, {'Connected': dbus.Boolean(False, variant_level=1),
                                       'ServicesResolved': dbus.Boolean(False, variant_level=1)}, []])
    lock.disconnected()


def lock_of(obj):
    path = obj.path if hasattr(obj, 'path') else str(obj)
    for table in (LOCKS, STRANGERS):
        for lock in table.values():
            if path == lock.path or path.startswith(lock.path + '/'):
                return lock
    raise dbus.exceptions.DBusException('no such lock', name='org.bluez.Error.DoesNotExist')


def lock_connect(device):
    lock = lock_of(device)
    if 'unreachable' in lock.faults:  # out of range, or its battery is flat
        lock.stats['faults_done'].append('unreachable')
        raise dbus.exceptions.DBusException('le-connection-abort-by-local', name='org.bluez.Error.Failed')
    if lock.address in CONNECTED:
        raise dbus.exceptions.DBusException('Already Connected', name='org.bluez.Error.AlreadyConnected')
    CONNECTED.add(lock.address)
    PEAK[0] = max(PEAK[0], len(CONNECTED))
    device.connected = True
    lock.connected()
    for name in ('Connected', 'ServicesResolved'):
        device.props[DEVICE_IFACE][name] = dbus.Boolean(True, variant_level=1)
    device.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                      [DEVICE_IFACE, {'Connected': dbus.Boolean(True, variant_level=1),
                                      'ServicesResolved': dbus.Boolean(True, variant_level=1)}, []])


def lock_disconnect(device):
    lock = lock_of(device)
    if lock.address not in CONNECTED:
        raise dbus.exceptions.DBusException('Not Connected', name='org.bluez.Error.NotConnected')
    drop_connection(lock)


def write_value(char, value, _options):
    lock = lock_of(char)
    if lock.address not in CONNECTED:
        raise dbus.exceptions.DBusException('Not connected', name='org.bluez.Error.Failed')
    lock.written(value)


def start_notify(char):
    lock = lock_of(char)
    if lock.address not in CONNECTED:
        raise dbus.exceptions.DBusException('Not connected', name='org.bluez.Error.Failed')
    lock.notifying = True


def stop_notify(char):
    lock_of(char).notifying = False


def add_lock(mock, spec, table):
    adapter = ADAPTER[0]
    address = spec['address']
    path = mock.AddDevice(adapter, address, spec.get('id', 'stranger'))
    dev = mockobject.objects[path]
    lock = MockLock(spec, path)
    table[address] = lock
    dev.AddMethods(DEVICE_IFACE, [('Connect', '', '', lambda self: lock_connect(self)),
                                  ('Disconnect', '', '', lambda self: lock_disconnect(self))])
    service = path + '/service0010'
    dev.AddObject(service, SERVICE_IFACE,
                  {'UUID': dbus.String(SERVICE_UUID), 'Device': dbus.ObjectPath(path),
                   'Primary': dbus.Boolean(True)}, [])
    dev.AddObject(lock.to_path, CHAR_IFACE,
                  {'UUID': dbus.String(TO_LOCK_UUID), 'Service': dbus.ObjectPath(service),
                   'Flags': dbus.Array(['write', 'write-without-response'], signature='s'),
                   'MTU': dbus.UInt16(lock.mtu), 'Value': dbus.Array([], signature='y')},
                  [('WriteValue', 'aya{sv}', '', lambda self, v, o: write_value(self, v, o))])
    dev.AddObject(lock.from_path, CHAR_IFACE,
                  {'UUID': dbus.String(FROM_LOCK_UUID), 'Service': dbus.ObjectPath(service),
                   'Flags': dbus.Array(['notify'], signature='s'),
                   'MTU': dbus.UInt16(lock.mtu), 'Notifying': dbus.Boolean(False),
                   'Value': dbus.Array([], signature='y')},
                  [('StartNotify', '', '', lambda self: start_notify(self)),
                   ('StopNotify', '', '', lambda self: stop_notify(self))])
    # And a service that is not the lock's (the Battery Service): its
    # notifications are none of the gateway's business.
    dev.AddObject(path + '/service0020', SERVICE_IFACE,
                  {'UUID': dbus.String('0000180f-0000-1000-8000-00805f9b34fb'),
                   'Device': dbus.ObjectPath(path), 'Primary': dbus.Boolean(True)}, [])
    dev.AddObject(path + '/service0020/char0021', CHAR_IFACE,
                  {'UUID': dbus.String('00002a19-0000-1000-8000-00805f9b34fb'),
                   'Service': dbus.ObjectPath(path + '/service0020'),
                   'Flags': dbus.Array(['read', 'notify'], signature='s'),
                   'Value': dbus.Array([dbus.Byte(87)], signature='y')}, [])
    return lock


def battery(address):
    '''A battery level notification (not the lock service).'''
    lock = LOCKS.get(address) or STRANGERS[address]
    char = mockobject.objects[lock.path + '/service0020/char0021']
    v = dbus.Array([dbus.Byte(86)], signature='y', variant_level=1)
    char.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as', [CHAR_IFACE, {'Value': v}, []])


READY = [False]
HIDDEN = {}  # address -> (mock, spec)


def populate(mock, parameters):
    '''The adapter and the locks, once the mock's objects are registered.'''
    ADAPTER[0] = parameters.get('adapter', 'hci0')
    mock.AddAdapter(ADAPTER[0], 'lockbridge-test')
    for spec in parameters.get('locks', []):
        if spec.get('hidden'):  # not discovered yet: no Device1 until Appear()
            HIDDEN[spec['address']] = (mock, dict(spec))
        else:
            add_lock(mock, dict(spec), LOCKS)
    for address in parameters.get('strangers', []):
        add_lock(mock, {'address': address, 'id': 'stranger', 'events': 0}, STRANGERS)
    READY[0] = True
    return False


def load(mock, parameters):
    bluez5.load(mock, parameters)
    GLib.idle_add(populate, mock, parameters)
    mock.AddMethods(CONTROL_IFACE, [
        ('Stats', '', 's', lambda self: json.dumps(
            {'ready': READY[0], 'peak_connected': PEAK[0], 'connected': sorted(CONNECTED),
             'hidden': sorted(HIDDEN),
             'locks': {a: dict(l.stats, pending=len(l.pending), acked=l.acked, seq=l.seq,
                               state=l.state) for a, l in LOCKS.items()}})),
        ('AddEvents', 'su', '', lambda self, a, n: LOCKS[str(a)].add_events(int(n))),
        ('Access', 'sss', '', lambda self, a, c, d: access(str(a), str(c), str(d))),
        ('SetFault', 'ss', '', lambda self, a, f: set_fault(str(a), str(f))),
        ('Inject', 's', '', lambda self, a: inject(str(a))),
        ('AskTime', 's', '', lambda self, a: ask_time(str(a))),
        ('Battery', 's', '', lambda self, a: battery(str(a))),
        ('ClearFaults', 's', '', lambda self, a: LOCKS[str(a)].faults.clear()),
        ('Appear', 's', '', lambda self, a: add_lock(*HIDDEN.pop(str(a)), LOCKS) and None),
    ])


def access(address, cred, door):
    lock = LOCKS[address]
    lock.access_queue.append((cred, door))
    if lock.session is not None:
        GLib.idle_add(lambda: lock.next_step() and False)
    else:
        lock.advertise()


def ask_time(address):
    lock = LOCKS[address]
    lock.want_time = True
    if lock.session is not None:
        GLib.idle_add(lambda: lock.next_step() and False)
    else:
        lock.advertise()


def set_fault(address, fault):
    LOCKS[address].faults.append(fault)


def inject(address):
    '''A device nobody configured notifies a well-formed sealed events message.'''
    lock = STRANGERS[address]
    key = hkdf(lock.psk, bytes(32), 'lockbridge-ble-v1 L stranger')
    header = bytes([1, K_EVENTS]) + (1).to_bytes(8, 'big')
    body = cbor_helper.encode({'events': [{'seq': 1, 'ts': 1, 'type': 'stranger', 'door': 'door-x'}]})
    message = header + AESGCM(key).encrypt(bytes(4) + header[2:], body, header)
    for p in fragments(7, message, lock.mtu):
        lock.notify_value(p)
