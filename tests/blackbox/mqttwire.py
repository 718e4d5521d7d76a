"""MQTT on the wire, by hand, for the black-box conformance tests
(test_hub_mqtt.py, test_hub_mqtt5.py).

Paho and the Mosquitto clients hide what the tests need to see (DUP and
RETAIN bits, packet identifiers, reason codes, topic aliases, properties in
order) and cannot misbehave on purpose (resend a QoS 2 PUBLISH before
PUBREL, never acknowledge, go silent). So: a tiny encoder, a framer and a
client over TLS built from Python's ssl module and struct, MQTT 3.1.1 and 5.0.

    r = Raw(hub, svc, "svc/a")                 # CONNECT, waits for CONNACK
    r.subscribe([("t/#", 1)])                  # returns the SUBACK
    r.publish("t/x", b"hi", qos=1, pid=7)
    p = r.expect(PUBLISH)                      # p.topic, p.qos, p.props ...

`env` is a pytest fixture: a service "svc" that may do anything under t/,
a started hub, and clients that are all closed when the test ends.
"""
import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt
import pytest

V311, V5 = 4, 5

(CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK,
 UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH) = range(1, 16)
NAMES = {v: k for k, v in dict(
    CONNECT=1, CONNACK=2, PUBLISH=3, PUBACK=4, PUBREC=5, PUBREL=6, PUBCOMP=7,
    SUBSCRIBE=8, SUBACK=9, UNSUBSCRIBE=10, UNSUBACK=11, PINGREQ=12, PINGRESP=13,
    DISCONNECT=14, AUTH=15).items()}

# ---- MQTT 5 properties ------------------------------------------------------

PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILL_DELAY = 0x18

_PTYPE = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


def vbi(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_vbi(data, pos):
    """(value, next position), or (None, pos) when data ends inside it."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(data):
            return None, pos
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos + i + 1
    raise AssertionError("malformed variable byte integer from the hub")


def mqtt_str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def encode_props(props):
    """props: a list of (id, value) in the order they go on the wire."""
    body = bytearray()
    for pid, val in props:
        t = _PTYPE[pid]
        body += vbi(pid)
        if t == "byte":
            body.append(val)
        elif t == "u16":
            body += struct.pack("!H", val)
        elif t == "u32":
            body += struct.pack("!I", val)
        elif t == "vbi":
            body += vbi(val)
        elif t in ("str", "bin"):
            body += mqtt_str(val)
        else:
            body += mqtt_str(val[0]) + mqtt_str(val[1])
    return vbi(len(body)) + bytes(body)


def decode_props(data, pos):
    n, pos = read_vbi(data, pos)
    end, out = pos + n, []
    while pos < end:
        pid, pos = read_vbi(data, pos)
        t = _PTYPE[pid]
        if t == "byte":
            val, pos = data[pos], pos + 1
        elif t == "u16":
            val, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif t == "u32":
            val, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif t == "vbi":
            val, pos = read_vbi(data, pos)
        else:
            items = []
            for _ in range(2 if t == "pair" else 1):
                ln = struct.unpack_from("!H", data, pos)[0]
                raw = bytes(data[pos + 2:pos + 2 + ln])
                items.append(raw if t == "bin" else raw.decode())
                pos += 2 + ln
            val = tuple(items) if t == "pair" else items[0]
        out.append((pid, val))
    assert pos == end, "property block length does not match its contents"
    return out, end


class Packet:
    """One packet the hub sent, decoded."""

    def __init__(self, first, body, version):
        self.type, self.flags = first >> 4, first & 0x0F
        self.body = bytes(body)
        self.props = []
        self.reason = 0
        self.packet_id = None
        v5 = version == V5
        t, b = self.type, self.body
        if t == CONNACK:
            self.session_present, self.reason = b[0] & 1, b[1]
            if v5 and len(b) > 2:
                self.props, _ = decode_props(b, 2)
        elif t == PUBLISH:
            self.dup, self.qos, self.retain = (self.flags >> 3) & 1, (self.flags >> 1) & 3, self.flags & 1
            ln = struct.unpack_from("!H", b, 0)[0]
            self.topic = b[2:2 + ln].decode()
            pos = 2 + ln
            if self.qos:
                self.packet_id = struct.unpack_from("!H", b, pos)[0]
                pos += 2
            if v5:
                self.props, pos = decode_props(b, pos)
            self.payload = b[pos:]
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.packet_id = struct.unpack_from("!H", b, 0)[0]
            if v5 and len(b) > 2:
                self.reason = b[2]
            if v5 and len(b) > 3:
                self.props, _ = decode_props(b, 3)
        elif t in (SUBACK, UNSUBACK):
            self.packet_id = struct.unpack_from("!H", b, 0)[0]
            pos = 2
            if v5:
                self.props, pos = decode_props(b, pos)
            self.reasons = list(b[pos:])
        elif t == DISCONNECT:
            if b:
                self.reason = b[0]
            if len(b) > 1:
                self.props, _ = decode_props(b, 1)

    def prop(self, pid, default=None):
        for k, v in self.props:
            if k == pid:
                return v
        return default

    def props_all(self, pid):
        return [v for k, v in self.props if k == pid]

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = (f" topic={self.topic!r} qos={self.qos} dup={self.dup} retain={self.retain}"
                     f" id={self.packet_id} payload={self.payload[:40]!r}")
        elif self.type in (CONNACK, DISCONNECT, PUBACK, PUBREC, PUBREL, PUBCOMP):
            extra = f" reason=0x{self.reason:02x} id={self.packet_id}"
        elif self.type in (SUBACK, UNSUBACK):
            extra = f" id={self.packet_id} reasons={[hex(r) for r in self.reasons]}"
        return f"<{NAMES.get(self.type, self.type)}{extra} props={self.props}>"


def frame(first, body):
    return bytes([first]) + vbi(len(body)) + bytes(body)


class Raw:
    """A hand-driven MQTT client over mutual TLS."""

    def __init__(self, hub, who, client_id, version=V5, clean=True, keepalive=60, props=(),
                 will=None, connect=True):
        self.version = version
        ctx = hub.ssl_context(who)
        sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        self.sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        self.buf = bytearray()
        self.pending = []
        self.eof = False
        self.next_pid = 1
        self.connack = None
        if connect:
            self.send_connect(client_id, clean=clean, keepalive=keepalive, props=props, will=will)
            self.connack = self.expect(CONNACK)

    # ---- sending ---------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def pid(self):
        p = self.next_pid
        self.next_pid = self.next_pid % 65535 + 1
        return p

    def send_connect(self, client_id, clean=True, keepalive=60, props=(), will=None):
        """will: dict(topic=, payload=, qos=0, retain=False, props=[])"""
        flags = 0x02 if clean else 0
        if will:
            flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        vh = mqtt_str("MQTT") + bytes([self.version, flags]) + struct.pack("!H", keepalive)
        if self.version == V5:
            vh += encode_props(props)
        pl = mqtt_str(client_id)
        if will:
            if self.version == V5:
                pl += encode_props(will.get("props", []))
            pl += mqtt_str(will["topic"]) + mqtt_str(will.get("payload", b""))
        self.send(frame(0x10, vh + pl))

    def publish(self, topic, payload=b"", qos=0, pid=None, retain=False, dup=False, props=()):
        """Send a PUBLISH; returns its packet identifier (None for QoS 0)."""
        if qos and pid is None:
            pid = self.pid()
        body = mqtt_str(topic)
        if qos:
            body += struct.pack("!H", pid)
        if self.version == V5:
            body += encode_props(props)
        body += payload.encode() if isinstance(payload, str) else bytes(payload)
        self.send(frame(0x30 | (dup << 3) | (qos << 1) | int(retain), body))
        return pid

    def ack(self, ptype, pid, reason=0):
        body = struct.pack("!H", pid)
        if self.version == V5 and reason:
            body += bytes([reason])
        self.send(frame((ptype << 4) | (0x02 if ptype == PUBREL else 0), body))

    def send_subscribe(self, entries, props=(), pid=None):
        """entries: (filter, options byte) pairs; returns the packet id."""
        pid = pid or self.pid()
        body = struct.pack("!H", pid)
        if self.version == V5:
            body += encode_props(props)
        for flt, opts in entries:
            body += mqtt_str(flt) + bytes([opts])
        self.send(frame(0x82, body))
        return pid

    def subscribe(self, entries, props=(), timeout=5.0):
        """SUBSCRIBE and wait for its SUBACK (PUBLISHes that come first are
        kept for the next recv)."""
        pid = self.send_subscribe(entries, props)
        ack = self.expect(SUBACK, timeout=timeout, skip=(PUBLISH,))
        assert ack.packet_id == pid, f"SUBACK for {ack.packet_id}, sent {pid} [MQTT-3.8.4-2]"
        assert len(ack.reasons) == len(entries), ack
        return ack

    def unsubscribe(self, filters, timeout=5.0):
        pid = self.pid()
        body = struct.pack("!H", pid)
        if self.version == V5:
            body += encode_props([])
        for flt in filters:
            body += mqtt_str(flt)
        self.send(frame(0xA2, body))
        ack = self.expect(UNSUBACK, timeout=timeout, skip=(PUBLISH,))
        assert ack.packet_id == pid, f"UNSUBACK for {ack.packet_id}, sent {pid}"
        return ack

    def pingreq(self):
        self.send(b"\xc0\x00")

    def disconnect(self, reason=0, props=()):
        if self.version == V5 and (reason or props):
            self.send(frame(0xE0, bytes([reason]) + encode_props(props)))
        else:
            self.send(b"\xe0\x00")

    def abort(self):
        """Drop the connection without DISCONNECT (no TLS close_notify
        either): to the hub, the network failed."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()
        self.eof = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- receiving -------------------------------------------------------
    def _parse(self):
        if len(self.buf) < 2:
            return None
        rl, pos = read_vbi(self.buf, 1)
        if rl is None or len(self.buf) < pos + rl:
            return None
        first, body = self.buf[0], self.buf[pos:pos + rl]
        del self.buf[:pos + rl]
        return Packet(first, body, self.version)

    def recv(self, timeout=5.0):
        """The next packet, or None when nothing came in time or the hub
        closed the connection (then self.eof is True)."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
            else:
                self.buf += data

    def expect(self, ptype, timeout=5.0, skip=()):
        """The next packet, which must be of this type. Packets of the types
        in skip that come first are kept for later."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                p = self.recv(max(0.0, deadline - time.monotonic()))
                assert p is not None, (f"expected {NAMES[ptype]}, got "
                                       f"{'end of connection' if self.eof else 'nothing'}")
                if p.type in skip and p.type != ptype:
                    kept.append(p)
                    continue
                assert p.type == ptype, f"expected {NAMES[ptype]}, got {p}"
                return p
        finally:
            self.pending[:0] = kept

    def nothing(self, timeout=0.5):
        """Assert that no packet arrives within timeout (and the connection
        stays open)."""
        p = self.recv(timeout)
        assert p is None, f"unexpected {p}"
        assert not self.eof, "the hub closed the connection"

    def wait_closed(self, timeout=5.0):
        """Read until the hub closes the connection; returns what came first."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            p = self.recv(max(0.0, deadline - time.monotonic()))
            if p is not None:
                got.append(p)
                continue
            assert self.eof, f"connection still open after {timeout}s; got {got}"
            return got

    def receive(self, timeout=5.0):
        """The next PUBLISH, acknowledged as its QoS asks (QoS 2 to the end:
        PUBREC, the hub's PUBREL, PUBCOMP)."""
        p = self.expect(PUBLISH, timeout=timeout)
        if p.qos == 1:
            self.ack(PUBACK, p.packet_id)
        elif p.qos == 2:
            self.ack(PUBREC, p.packet_id)
            rel = self.expect(PUBREL, timeout=timeout, skip=(PUBLISH,))
            assert rel.packet_id == p.packet_id, rel
            self.ack(PUBCOMP, p.packet_id)
        return p

    def receive_n(self, n, timeout=5.0):
        return [self.receive(timeout) for _ in range(n)]

    def publish_acked(self, topic, payload=b"", qos=1, retain=False, props=(), timeout=5.0):
        """Publish and finish the flow; returns the PUBACK or PUBREC."""
        pid = self.publish(topic, payload, qos=qos, retain=retain, props=props)
        if qos == 0:
            return None
        ack = self.expect(PUBACK if qos == 1 else PUBREC, timeout=timeout, skip=(PUBLISH,))
        assert ack.packet_id == pid, ack
        if qos == 2 and ack.reason < 0x80:
            self.ack(PUBREL, pid)
            comp = self.expect(PUBCOMP, timeout=timeout, skip=(PUBLISH,))
            assert comp.packet_id == pid and comp.reason == 0, comp
        return ack


def barrier(pub, sub, topic):
    """Publish a marker (QoS 0) and require it to be the next packet sub gets:
    proves nothing else was on its way to sub before it (the hub handles a
    client's packets in order and each session's queue in order)."""
    pub.publish(topic, b"barrier", qos=0)
    p = sub.expect(PUBLISH)
    assert (p.topic, p.payload) == (topic, b"barrier"), f"unexpected {p}"


def sub_opts(qos=0, no_local=False, rap=False, rh=0):
    """An MQTT 5 subscription options byte."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


# ---- Paho helpers -------------------------------------------------------------

def paho_subscribe(c, topic, qos=0, options=None, properties=None, timeout=5.0):
    """Subscribe with a connected hub.paho() client and wait for the SUBACK;
    returns the granted QoS / reason codes."""
    results = getattr(c, "_subacks", None)
    if results is None:
        results = c._subacks = {}

        def on_subscribe(client, userdata, mid, granted, props=None):
            results[mid] = granted
        c.on_subscribe = on_subscribe
    if options is not None:
        rc, mid = c.subscribe(topic, options=options, properties=properties)
    else:
        rc, mid = c.subscribe(topic, qos, properties=properties)
    assert rc == mqtt.MQTT_ERR_SUCCESS, rc
    deadline = time.monotonic() + timeout
    while mid not in results:
        assert time.monotonic() < deadline, "no SUBACK"
        time.sleep(0.01)
    granted = results.pop(mid)
    return [getattr(g, "value", g) for g in granted]


def paho_publish(c, topic, payload, qos=0, retain=False, properties=None, timeout=5.0):
    info = c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
    info.wait_for_publish(timeout)
    assert info.is_published(), f"publish to {topic} not acknowledged"


# ---- the env fixture ----------------------------------------------------------

PERMISSIVE = "allow connect\nallow all t/#\n"


class Env:
    """A hub with one service `svc` allowed everything under t/, and clients
    that are closed at the end of the test."""

    def __init__(self, hub, procs):
        self.hub = hub
        self.procs = procs
        self.svc = None
        self._pahos, self._raws = [], []

    def start(self, **limits):
        """Register svc, set [limits] keys, start the hub."""
        self.svc = self.hub.add_service("svc", PERMISSIVE)
        for k, v in limits.items():
            self.hub.set_config("limits", k, v)
        self.hub.start()
        return self

    def raw(self, client_id, who=None, **kw):
        r = Raw(self.hub, who or self.svc, client_id, **kw)
        self._raws.append(r)
        return r

    def paho(self, client_id, who=None, **kw):
        c = self.hub.paho(who or self.svc, client_id=client_id, **kw)
        self._pahos.append(c)
        return c

    def close(self):
        for c in self._pahos:
            try:
                c.disconnect()
            except Exception:
                pass
            c.loop_stop()
        for r in self._raws:
            r.close()


@pytest.fixture
def env(hub, procs):
    e = Env(hub, procs)
    try:
        yield e
    finally:
        e.close()


class LineReader:
    """Lines of a child process's stdout, read by a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append(line.decode().rstrip("\n"))

    def wait(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.lines)
