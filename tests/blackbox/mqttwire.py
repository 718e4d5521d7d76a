"""MQTT on the wire, by hand, for the black-box tests.

Paho and the Mosquitto clients hide what the tests need to see (DUP and
RETAIN bits, packet identifiers, reason codes, topic aliases, properties in
order, the TLS alert that refused a client) and cannot misbehave on purpose
(resend a QoS 2 PUBLISH before PUBREL, withhold an acknowledgement, send a
packet the spec forbids or stop half way through one, go silent, connect
from a chosen source address). So: a codec and one client over TLS (or plain
TCP) built from Python's socket, ssl and struct, MQTT 3.1.1 and 5.0.

The encoders are permissive on purpose: they build whatever they are given,
malformed packets included. The decoder is strict: anything malformed from
the hub fails the test (ProtocolError), even where the test did not look.

    c = RawClient.open(hub, svc)               # TCP and mutual TLS, no MQTT yet
    c.connect("svc/a", expiry=300)             # and the CONNACK, which must be 0
    c.subscribe([("t/#", 1)])                  # returns the SUBACK
    ack = c.publish_acked("t/x", b"hi")        # QoS 1; PUBLISHes meanwhile are kept
    p = c.expect(PUBLISH)                      # p.topic, p.qos, p.prop(...) ...
    c.ack(PUBACK, p.packet_id)                 # or not: nothing is automatic
    c.send(encode_publish("t/+", b"x"))        # anything at all

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

# What a server may send, by protocol version (3.1.1 has no DISCONNECT or
# AUTH from the server).
_FROM_SERVER = {
    V311: {CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP},
}
_FROM_SERVER[V5] = _FROM_SERVER[V311] | {DISCONNECT, AUTH}

PINGREQ_BYTES = b"\xc0\x00"

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
WILL_DELAY = 0x18
REQUEST_PROBLEM_INFO = 0x17
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27

_PTYPE = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}
# The only properties that may appear more than once in a packet.
_REPEATABLE = {USER_PROPERTY, SUBSCRIPTION_ID}


class ProtocolError(AssertionError):
    """The hub sent something malformed, or not what the test expected."""


class Closed(ProtocolError):
    """The hub closed the connection (EOF or reset) where a packet was due."""


def _check(cond, what):
    if not cond:
        raise ProtocolError(what)


# ---- encoding ------------------------------------------------------------------

def vbi(n):
    """A variable byte integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    """A UTF-8 string or binary data: two bytes of length, then the bytes."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def encode_props(props):
    """A property block, its length first. props: (id, value) pairs in the
    order they go on the wire (USER_PROPERTY values are (name, value))."""
    body = bytearray()
    for pid, val in props or ():
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


def frame(first, body):
    """A whole packet: the first byte, the remaining length, the body."""
    return bytes([first]) + vbi(len(body)) + bytes(body)


def _payload(data):
    return data.encode() if isinstance(data, str) else bytes(data)


def encode_connect(client_id, version=V5, clean=True, keepalive=60, props=(), will=None):
    """CONNECT. will: dict(topic=, payload=b"", qos=0, retain=False, props=[])."""
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    body = mqtt_str("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == V5:
        body += encode_props(props)
    body += mqtt_str(client_id)
    if will:
        if version == V5:
            body += encode_props(will.get("props"))
        body += mqtt_str(will["topic"]) + mqtt_str(_payload(will.get("payload", b"")))
    return frame(0x10, body)


def encode_publish(topic, payload=b"", qos=0, pid=None, retain=False, dup=False, version=V5,
                   props=()):
    """PUBLISH; pid is required for QoS 1 and 2."""
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == V5:
        body += encode_props(props)
    body += _payload(payload)
    return frame(0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0), body)


def encode_subscribe(pid, entries, version=V5, props=()):
    """entries: (filter, options byte) pairs; for 3.1.1 the byte is the QoS."""
    body = struct.pack("!H", pid)
    if version == V5:
        body += encode_props(props)
    for flt, opts in entries:
        body += mqtt_str(flt) + bytes([opts])
    return frame(0x82, body)


def encode_unsubscribe(pid, filters, version=V5, props=()):
    body = struct.pack("!H", pid)
    if version == V5:
        body += encode_props(props)
    for flt in filters:
        body += mqtt_str(flt)
    return frame(0xA2, body)


def encode_ack(ptype, pid, reason=0, version=V5):
    """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP; a reason only when
    it is not 0 (MQTT 5 lets it be left out then)."""
    body = struct.pack("!H", pid)
    if version == V5 and reason:
        body += bytes([reason])
    return frame((ptype << 4) | (0x02 if ptype == PUBREL else 0), body)


def encode_disconnect(reason=0, version=V5, props=()):
    if version == V5 and (reason or props):
        return frame(0xE0, bytes([reason]) + encode_props(props))
    return b"\xe0\x00"


def sub_opts(qos=0, no_local=False, rap=False, rh=0):
    """An MQTT 5 subscription options byte."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


# ---- decoding ------------------------------------------------------------------

def read_vbi(data, pos):
    """(value, next position), or (None, pos) when data ends inside it."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return None, pos
        b = data[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            # [MQTT-1.5.5-1]: the fewest bytes that hold the value
            _check(i == 0 or b, "variable byte integer not in its shortest form")
            return value, pos + i + 1
    raise ProtocolError("variable byte integer longer than 4 bytes")


def _read_str(data, pos, binary=False):
    _check(pos + 2 <= len(data), "string length past the end of the packet")
    n = struct.unpack_from("!H", data, pos)[0]
    end = pos + 2 + n
    _check(end <= len(data), "string past the end of the packet")
    raw = bytes(data[pos + 2:end])
    if binary:
        return raw, end
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"ill-formed UTF-8 string {raw!r}") from None
    _check("\x00" not in text, f"U+0000 in a string: {raw!r}")  # [MQTT-1.5.4-2]
    return text, end


def _read_packet_id(body, name):
    _check(len(body) >= 2, f"{name} shorter than 2 bytes")
    pid = struct.unpack_from("!H", body, 0)[0]
    _check(pid != 0, f"{name} with packet identifier 0")  # [MQTT-2.3.1-1]
    return pid


def _fixed(data, pos, size, fmt):
    _check(pos + size <= len(data), "property value past the end of the packet")
    return struct.unpack_from(fmt, data, pos)[0], pos + size


def decode_props(data, pos):
    """(list of (id, value) in wire order, position after the block)."""
    n, pos = read_vbi(data, pos)
    _check(n is not None, "property length past the end of the packet")
    end, out, seen = pos + n, [], set()
    _check(end <= len(data), "property block past the end of the packet")
    block = bytes(data[:end])
    while pos < end:
        pid, pos = read_vbi(block, pos)
        _check(pid is not None, "property identifier past the end of its block")
        t = _PTYPE.get(pid)
        _check(t is not None, f"unknown property 0x{pid:02x}")
        _check(pid in _REPEATABLE or pid not in seen, f"property 0x{pid:02x} twice")
        seen.add(pid)
        if t == "byte":
            val, pos = _fixed(block, pos, 1, "!B")
        elif t == "u16":
            val, pos = _fixed(block, pos, 2, "!H")
        elif t == "u32":
            val, pos = _fixed(block, pos, 4, "!I")
        elif t == "vbi":
            val, pos = read_vbi(block, pos)
            _check(val is not None, "property value past the end of its block")
        elif t == "pair":
            name, pos = _read_str(block, pos)
            value, pos = _read_str(block, pos)
            val = (name, value)
        else:
            val, pos = _read_str(block, pos, binary=(t == "bin"))
        out.append((pid, val))
    return out, end


class Packet:
    """One packet the hub sent, decoded and checked. Fields by type: CONNACK
    session_present, reason; PUBLISH dup, qos, retain, topic, packet_id,
    payload; PUBACK..PUBCOMP packet_id, reason; SUBACK and UNSUBACK
    packet_id, reasons; DISCONNECT and AUTH reason. All have type, flags,
    body (after the fixed header) and props (MQTT 5, in wire order)."""

    def __init__(self, first, body, version):
        self.type, self.flags = first >> 4, first & 0x0F
        self.body = b = bytes(body)
        self.props = []
        self.reason = 0
        self.packet_id = None
        v5 = version == V5
        t = self.type
        name = NAMES.get(t, f"packet type {t}")
        _check(t in _FROM_SERVER[version],
               f"{name} from the hub (MQTT {'5.0' if v5 else '3.1.1'})")
        if t == PUBLISH:
            self.dup = bool(self.flags & 0x08)
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 0x01)
            _check(self.qos != 3, "PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
            _check(self.qos or not self.dup, "QoS 0 PUBLISH with DUP 1")  # [MQTT-3.3.1-2]
        else:
            # [MQTT-2.2.2-1], [MQTT-2.2.2-2]: reserved flags as the table has them
            _check(self.flags == (0x02 if t == PUBREL else 0),
                   f"{name} with fixed header flags {self.flags:04b}")
        if t == CONNACK:
            # A CONNACK without properties is taken in MQTT 5 too: it is how
            # the hub answers a CONNECT whose protocol level it does not know.
            _check(len(b) >= 2, "CONNACK shorter than 2 bytes")
            _check(b[0] & 0xFE == 0, "CONNACK acknowledge flags reserved bits set")
            self.session_present, self.reason = bool(b[0] & 1), b[1]
            _check(not (self.session_present and self.reason),
                   "refusing CONNACK with session present")
            if v5 and len(b) > 2:
                self.props, end = decode_props(b, 2)
                _check(end == len(b), "bytes after the CONNACK properties")
            else:
                _check(len(b) == 2, "CONNACK longer than 2 bytes")
        elif t == PUBLISH:
            self.topic, pos = _read_str(b, 0)
            _check(not set(self.topic) & {"+", "#"}, f"wildcard in topic name {self.topic!r}")
            if self.qos:
                _check(pos + 2 <= len(b), "PUBLISH ends inside its packet identifier")
                self.packet_id = struct.unpack_from("!H", b, pos)[0]
                _check(self.packet_id != 0, "PUBLISH with packet identifier 0")
                pos += 2
            if v5:
                self.props, pos = decode_props(b, pos)
            _check(self.topic or (v5 and self.prop(TOPIC_ALIAS) is not None),
                   "PUBLISH with an empty topic and no topic alias")
            self.payload = b[pos:]
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.packet_id = _read_packet_id(b, name)
            if v5 and len(b) > 2:
                self.reason = b[2]
                if len(b) > 3:
                    self.props, end = decode_props(b, 3)
                    _check(end == len(b), f"bytes after the {name} properties")
            else:
                _check(len(b) == 2, f"{name} longer than 2 bytes")
        elif t in (SUBACK, UNSUBACK):
            self.packet_id = _read_packet_id(b, name)
            pos = 2
            if v5:
                self.props, pos = decode_props(b, pos)
            self.reasons = list(b[pos:])
            if t == SUBACK and not v5:
                _check(set(self.reasons) <= {0, 1, 2, 0x80}, f"SUBACK codes {self.reasons}")
            if t == UNSUBACK and not v5:
                _check(not self.reasons, "UNSUBACK with a payload in MQTT 3.1.1")
            else:
                _check(self.reasons, f"{name} without reason codes")
        elif t == PINGRESP:
            _check(not b, "PINGRESP with a body")
        elif t in (DISCONNECT, AUTH):
            if b:
                self.reason = b[0]
            if len(b) > 1:
                self.props, end = decode_props(b, 1)
                _check(end == len(b), f"bytes after the {name} properties")

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
            extra = (f" topic={self.topic!r} qos={self.qos} dup={int(self.dup)}"
                     f" retain={int(self.retain)} id={self.packet_id}"
                     f" payload={self.payload[:40]!r}")
        elif self.type in (CONNACK, DISCONNECT, AUTH, PUBACK, PUBREC, PUBREL, PUBCOMP):
            extra = f" reason=0x{self.reason:02x} id={self.packet_id}"
        elif self.type in (SUBACK, UNSUBACK):
            extra = f" id={self.packet_id} reasons={[hex(r) for r in self.reasons]}"
        return f"<{NAMES.get(self.type, self.type)}{extra} props={self.props}>"


def parse_packet(data, version):
    """(Packet, bytes used) for the packet at the start of data, or
    (None, 0) when data does not hold a whole one yet."""
    if len(data) < 2:
        return None, 0
    n, pos = read_vbi(data, 1)
    if n is None or len(data) < pos + n:
        return None, 0
    return Packet(data[0], data[pos:pos + n], version), pos + n


# ---- the client -------------------------------------------------------------------

def tcp(port, source=None, timeout=5.0, host="127.0.0.1"):
    """A TCP connection to host:port, from a chosen source address if given."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def _is_alert(e):
    return bool(e.reason) and "ALERT" in e.reason


class RawClient:
    """One hand-driven connection to the hub. Nothing is acknowledged unless
    the test does it (or auto_ack is set: then every QoS 1 PUBLISH is
    acknowledged as it is read), so a test can withhold any acknowledgement.

    Reading: recv() gives the next packet, None once the hub has closed the
    connection, TimeoutError when nothing came. A TLS alert is raised as the
    ssl.SSLError it is (its reason names the refusal); a reset or an EOF is a
    close."""

    def __init__(self, sock, version=V5, auto_ack=False):
        self.sock = sock
        self.version = version
        self.auto_ack = auto_ack
        self.buf = bytearray()
        self.pending = []    # set aside by expect(skip=...), read again first
        self.received = []   # (topic, payload) of every PUBLISH read, in order
        self.eof = False
        self.next_pid = 1
        self.connack = None

    @classmethod
    def open(cls, hub, who=None, *, ctx=None, tls=True, port=None, source=None, version=V5,
             timeout=5.0, auto_ack=False):
        """TCP (from source, if given) and the TLS handshake with `who`'s
        certificate, or with ctx; nothing MQTT is sent yet."""
        sock = tcp(port or hub.port, source=source, timeout=timeout)
        if tls:
            try:
                ctx = ctx if ctx is not None else hub.ssl_context(who)
                sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            except BaseException:
                sock.close()
                raise
        return cls(sock, version, auto_ack)

    # ---- sending ---------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def pid(self):
        p = self.next_pid
        self.next_pid = self.next_pid % 65535 + 1
        return p

    def send_connect(self, client_id, clean=True, keepalive=60, props=(), will=None,
                     expiry=None):
        """will: dict(topic=, payload=, qos=0, retain=False, props=[]);
        expiry: a Session Expiry Interval, added to props."""
        if expiry is not None:
            props = list(props) + [(SESSION_EXPIRY, expiry)]
        self.send(encode_connect(client_id, self.version, clean=clean, keepalive=keepalive,
                                 props=props, will=will))

    def connect(self, client_id, check=True, timeout=5.0, **kw):
        """CONNECT and its CONNACK (kept as self.connack, and returned); with
        check, a refusal fails the test."""
        self.send_connect(client_id, **kw)
        self.connack = self.expect(CONNACK, timeout=timeout)
        if check and self.connack.reason:
            raise ProtocolError(f"CONNECT as {client_id!r} refused: {self.connack}")
        return self.connack

    def publish(self, topic, payload=b"", qos=0, pid=None, retain=False, dup=False, props=()):
        """Send a PUBLISH; returns its packet identifier (None for QoS 0)."""
        if qos and pid is None:
            pid = self.pid()
        self.send(encode_publish(topic, payload, qos=qos, pid=pid, retain=retain, dup=dup,
                                 version=self.version, props=props))
        return pid

    def ack(self, ptype, pid, reason=0):
        self.send(encode_ack(ptype, pid, reason, self.version))

    def send_subscribe(self, entries, props=(), pid=None):
        """entries: (filter, options byte) pairs; returns the packet id."""
        pid = pid or self.pid()
        self.send(encode_subscribe(pid, entries, self.version, props))
        return pid

    def subscribe(self, entries, props=(), timeout=5.0):
        """SUBSCRIBE and wait for its SUBACK (PUBLISHes that come first are
        kept for the next recv)."""
        pid = self.send_subscribe(entries, props)
        ack = self.expect(SUBACK, timeout=timeout, skip=(PUBLISH,))
        assert ack.packet_id == pid, f"SUBACK for {ack.packet_id}, sent {pid} [MQTT-3.8.4-2]"
        assert len(ack.reasons) == len(entries), ack
        return ack

    def send_unsubscribe(self, filters, pid=None):
        pid = pid or self.pid()
        self.send(encode_unsubscribe(pid, filters, self.version))
        return pid

    def unsubscribe(self, filters, timeout=5.0):
        pid = self.send_unsubscribe(filters)
        ack = self.expect(UNSUBACK, timeout=timeout, skip=(PUBLISH,))
        assert ack.packet_id == pid, f"UNSUBACK for {ack.packet_id}, sent {pid}"
        return ack

    def pingreq(self):
        self.send(PINGREQ_BYTES)

    def disconnect(self, reason=0, props=()):
        self.send(encode_disconnect(reason, self.version, props))

    def disconnect_and_wait(self, timeout=3.0):
        """A clean DISCONNECT, then wait for the hub to close, then close:
        once this returns, the hub has let go of the connection (and its
        slot)."""
        try:
            self.disconnect()
            self.wait_closed(timeout)
        except (ConnectionError, ssl.SSLError):
            pass
        self.close()

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
        p, used = parse_packet(self.buf, self.version)
        if p is None:
            return None
        del self.buf[:used]
        if p.type == PUBLISH:
            self.received.append((p.topic, p.payload))
            if self.auto_ack and p.qos == 1:
                try:
                    self.ack(PUBACK, p.packet_id)
                except OSError:
                    pass  # the hub may be closing: it will resend on the session
        return p

    def recv(self, timeout=5.0):
        """The next packet; None when the hub closed the connection (then
        self.eof is True). TimeoutError when nothing came in time."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.eof:
                _check(not self.buf,
                       f"the hub closed inside a packet: {bytes(self.buf[:32]).hex()}")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no packet from the hub within {timeout} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise TimeoutError(f"no packet from the hub within {timeout} s") from None
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as e:
                if _is_alert(e):
                    self.eof = True
                    raise  # a refusal with a name: pass it on as it is
                data = b""
            except ConnectionError:
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
                try:
                    p = self.recv(max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise ProtocolError(f"expected {NAMES[ptype]}, got nothing "
                                        f"in {timeout} s") from None
                if p is None:
                    raise Closed(f"expected {NAMES[ptype]}, the hub closed the connection")
                if p.type in skip and p.type != ptype:
                    kept.append(p)
                    continue
                _check(p.type == ptype, f"expected {NAMES[ptype]}, got {p}")
                return p
        finally:
            self.pending[:0] = kept

    def quiet(self, timeout=0.5):
        """The packets that come within timeout (until the hub closes, if it
        does)."""
        return self._until_closed(timeout)[1]

    def nothing(self, timeout=0.5):
        """Assert that no packet arrives within timeout (and the connection
        stays open)."""
        got = self.quiet(timeout)
        assert got == [], f"unexpected {got}"
        assert not self.eof, "the hub closed the connection"

    def _until_closed(self, timeout):
        """(whether the hub closed within timeout, the packets before)."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self.recv(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False, got
            except ssl.SSLError:
                return True, got  # an alert ends the connection too
            if p is None:
                return True, got
            got.append(p)

    def closed_within(self, timeout):
        """The packets that came before the hub closed the connection, or
        None when it is still open after timeout."""
        closed, got = self._until_closed(timeout)
        return got if closed else None

    def wait_closed(self, timeout=5.0):
        """Read until the hub closes the connection; returns what came first."""
        closed, got = self._until_closed(timeout)
        assert closed, f"connection still open after {timeout}s; got {got}"
        return got

    def receive(self, timeout=5.0):
        """The next PUBLISH, acknowledged as its QoS asks (QoS 2 to the end:
        PUBREC, the hub's PUBREL, PUBCOMP)."""
        p = self.expect(PUBLISH, timeout=timeout)
        if p.qos == 1 and not self.auto_ack:
            self.ack(PUBACK, p.packet_id)
        elif p.qos == 2:
            self.ack(PUBREC, p.packet_id)
            rel = self.expect(PUBREL, timeout=timeout, skip=(PUBLISH,))
            assert rel.packet_id == p.packet_id, rel
            self.ack(PUBCOMP, p.packet_id)
        return p

    def publish_acked(self, topic, payload=b"", qos=1, pid=None, retain=False, props=(),
                      timeout=5.0):
        """Publish and finish the flow; returns the PUBACK or PUBREC (None
        for QoS 0). A QoS 2 flow the hub refused ends at its PUBREC."""
        pid = self.publish(topic, payload, qos=qos, pid=pid, retain=retain, props=props)
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

    def raw(self, client_id, who=None, version=V5, connect=True, **kw):
        """A RawClient as who (default svc); unless connect is False, CONNECT
        (kw: send_connect's) has been sent and the CONNACK is in r.connack."""
        r = RawClient.open(self.hub, who or self.svc, version=version)
        self._raws.append(r)
        if connect:
            r.connect(client_id, check=False, **kw)
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
