"""Hand-encoded MQTT over a raw (TLS or plain) socket, for black-box tests
that need to control every byte: withhold an acknowledgement, send a packet
Paho would refuse to send, bind the client's source address, or see exactly
what the hub answers (reason codes, DUP flags) before it closes.

    c = RawClient.open(hub, dev)                       # mutual TLS to the hub
    c.send(connect(dev.id, props=[(SESSION_EXPIRY, 300)]))
    ack = c.expect(CONNACK)
    c.send(publish("t/x", b"1", qos=1, pid=1))
    assert c.expect(PUBACK).reason == 0
    c.close()

Only what the tests need; the encoders are deliberately permissive (they
will happily build a malformed packet) and the decoder is strict enough to
notice a malformed answer from the hub.
"""
import socket
import ssl
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 property identifiers used by the tests, with their wire types.
PAYLOAD_FORMAT, MESSAGE_EXPIRY, CONTENT_TYPE, SUB_ID = 0x01, 0x02, 0x03, 0x0B
SESSION_EXPIRY, ASSIGNED_CLIENT_ID, SERVER_KEEP_ALIVE = 0x11, 0x12, 0x13
REASON_STRING, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS = 0x1F, 0x21, 0x22, 0x23
MAXIMUM_QOS, RETAIN_AVAILABLE, USER_PROPERTY, MAXIMUM_PACKET_SIZE = 0x24, 0x25, 0x26, 0x27
WILDCARD_SUB, SUB_ID_AVAILABLE, SHARED_SUB = 0x28, 0x29, 0x2A
_PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


class ProtocolError(AssertionError):
    pass


# ---- encoding ----------------------------------------------------------------

def vbi(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack(">H", len(b)) + b


def props(pairs):
    """A property block (length first) from [(id, value), ...]."""
    body = bytearray()
    for pid, value in pairs or ():
        kind = _PROP_TYPES[pid]
        body += vbi(pid)
        if kind == "byte":
            body.append(value)
        elif kind == "u16":
            body += struct.pack(">H", value)
        elif kind == "u32":
            body += struct.pack(">I", value)
        elif kind == "vbi":
            body += vbi(value)
        elif kind in ("str", "bin"):
            body += string(value)
        elif kind == "pair":
            body += string(value[0]) + string(value[1])
    return vbi(len(body)) + bytes(body)


def packet(first_byte, body):
    return bytes([first_byte]) + vbi(len(body)) + bytes(body)


def connect(client_id, version=5, clean=True, keepalive=60, properties=None, will=None,
            username=None):
    """CONNECT. will: (topic, payload, qos, retain[, will_properties])."""
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if username is not None:
        flags |= 0x80
    body = string("MQTT") + bytes([version, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        body += props(properties)
    body += string(client_id)
    if will:
        if version == 5:
            body += props(will[4] if len(will) > 4 else None)
        body += string(will[0]) + string(will[1])
    if username is not None:
        body += string(username)
    return packet(0x10, body)


def publish(topic, payload=b"", qos=0, pid=None, retain=False, dup=False, version=5,
            properties=None):
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic)
    if qos:
        body += struct.pack(">H", pid)
    if version == 5:
        body += props(properties)
    body += payload.encode() if isinstance(payload, str) else bytes(payload)
    return packet(first, body)


def subscribe(pid, filters, version=5, properties=None):
    """filters: [(filter, options_byte), ...]; options_byte is the QoS for 3.1.1."""
    body = struct.pack(">H", pid)
    if version == 5:
        body += props(properties)
    for f, opts in filters:
        body += string(f) + bytes([opts])
    return packet(0x82, body)


def unsubscribe(pid, filters, version=5):
    body = struct.pack(">H", pid) + (props(None) if version == 5 else b"")
    for f in filters:
        body += string(f)
    return packet(0xA2, body)


def ack(ptype, pid, reason=0, version=5):
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP."""
    first = (ptype << 4) | (0x02 if ptype == PUBREL else 0)
    body = struct.pack(">H", pid)
    if version == 5 and reason:
        body += bytes([reason])
    return packet(first, body)


def disconnect(reason=0, version=5, properties=None):
    if version != 5:
        return b"\xe0\x00"
    if not reason and not properties:
        return b"\xe0\x00"
    return packet(0xE0, bytes([reason]) + props(properties))


PINGREQ_BYTES = b"\xc0\x00"


# ---- decoding ----------------------------------------------------------------

class Packet:
    """A decoded packet from the hub. Fields by type: CONNACK session_present,
    reason, props; PUBLISH dup, qos, retain, topic, pid, props, payload;
    PUBACK..PUBCOMP pid, reason, props; SUBACK/UNSUBACK pid, reasons, props;
    DISCONNECT reason, props."""

    def __init__(self, raw, version):
        self.raw = raw
        self.type = raw[0] >> 4
        self.flags = raw[0] & 0x0F
        i = 1
        while raw[i] & 0x80:
            i += 1
        body = raw[i + 1:]
        self.props = {}
        self.reason = 0
        self.pid = None
        t = self.type
        if t == CONNACK:
            self.session_present = bool(body[0] & 1)
            self.reason = body[1]
            if version == 5 and len(body) > 2:
                self.props, _ = parse_props(body, 2)
        elif t == PUBLISH:
            self.dup = bool(self.flags & 0x08)
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 1)
            n = struct.unpack(">H", body[:2])[0]
            self.topic = body[2:2 + n].decode()
            j = 2 + n
            if self.qos:
                self.pid = struct.unpack(">H", body[j:j + 2])[0]
                j += 2
            if version == 5:
                self.props, j = parse_props(body, j)
            self.payload = bytes(body[j:])
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = struct.unpack(">H", body[:2])[0]
            if len(body) > 2:
                self.reason = body[2]
            if len(body) > 3:
                self.props, _ = parse_props(body, 3)
        elif t in (SUBACK, UNSUBACK):
            self.pid = struct.unpack(">H", body[:2])[0]
            j = 2
            if version == 5:
                self.props, j = parse_props(body, j)
            self.reasons = list(body[j:])
        elif t == DISCONNECT:
            if body:
                self.reason = body[0]
            if len(body) > 1:
                self.props, _ = parse_props(body, 1)

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = (f" {self.topic!r} q{self.qos} dup={self.dup} pid={self.pid}"
                     f" {self.payload[:40]!r}")
        elif self.type in (SUBACK, UNSUBACK):
            extra = f" pid={self.pid} {self.reasons}"
        else:
            extra = f" pid={self.pid} reason=0x{self.reason:02x}"
        return f"<{NAMES.get(self.type, self.type)}{extra}>"


def parse_props(body, i):
    length, i = _read_vbi(body, i)
    end = i + length
    out = {}
    while i < end:
        pid, i = _read_vbi(body, i)
        kind = _PROP_TYPES.get(pid)
        if kind == "byte":
            v = body[i]
            i += 1
        elif kind == "u16":
            v = struct.unpack(">H", body[i:i + 2])[0]
            i += 2
        elif kind == "u32":
            v = struct.unpack(">I", body[i:i + 4])[0]
            i += 4
        elif kind == "vbi":
            v, i = _read_vbi(body, i)
        elif kind in ("str", "bin"):
            n = struct.unpack(">H", body[i:i + 2])[0]
            v = bytes(body[i + 2:i + 2 + n])
            v = v.decode() if kind == "str" else v
            i += 2 + n
        elif kind == "pair":
            n = struct.unpack(">H", body[i:i + 2])[0]
            k = bytes(body[i + 2:i + 2 + n]).decode()
            i += 2 + n
            n = struct.unpack(">H", body[i:i + 2])[0]
            v = (k, bytes(body[i + 2:i + 2 + n]).decode())
            i += 2 + n
        else:
            raise ProtocolError(f"unknown property 0x{pid:02x} from the hub")
        if pid in (USER_PROPERTY, SUB_ID):
            out.setdefault(pid, []).append(v)
        else:
            out[pid] = v
    if i != end:
        raise ProtocolError("property block length mismatch")
    return out, end


def _read_vbi(b, i):
    n, mult = 0, 1
    for k in range(4):
        byte = b[i]
        i += 1
        n += (byte & 0x7F) * mult
        if not byte & 0x80:
            return n, i
        mult *= 128
    raise ProtocolError("bad variable byte integer")


def split_packets(data):
    """Whole packets at the start of data, and the bytes left over."""
    out = []
    i = 0
    while True:
        if len(data) - i < 2:
            break
        j, n, mult, ok = i + 1, 0, 1, False
        while j < len(data) and j - i <= 4:
            n += (data[j] & 0x7F) * mult
            mult *= 128
            j += 1
            if not data[j - 1] & 0x80:
                ok = True
                break
        if not ok or len(data) - j < n:
            break
        out.append(bytes(data[i:j + n]))
        i = j + n
    return out, bytes(data[i:])


# ---- the client ---------------------------------------------------------------

CLOSED_ERRORS = (ConnectionError, ssl.SSLError, BrokenPipeError)


class RawClient:
    """One connection to the hub. open() makes the TCP (and TLS) connection;
    nothing MQTT is sent until the test sends it."""

    def __init__(self, sock, version=5):
        self.sock = sock
        self.version = version
        self.buf = b""
        self.eof = False

    @classmethod
    def open(cls, hub, who, tls=True, port=None, source=None, version=5, timeout=5.0):
        sock = tcp(port or hub.port, source=source, timeout=timeout)
        if tls:
            try:
                sock = hub.ssl_context(who).wrap_socket(sock, server_hostname="127.0.0.1")
            except BaseException:
                sock.close()
                raise
        return cls(sock, version)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet from the hub in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError("no packet from the hub in time") from None
        except ssl.SSLWantReadError:
            return True
        except CLOSED_ERRORS:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def recv(self, timeout=5.0):
        """The next packet, or None when the hub closed the connection.
        Raises TimeoutError when nothing came in time."""
        deadline = time.monotonic() + timeout
        while True:
            pkts, rest = split_packets(self.buf)
            if pkts:
                self.buf = self.buf[len(pkts[0]):]
                return Packet(pkts[0], self.version)
            if not self._fill(deadline):
                if self.buf:
                    raise ProtocolError(f"hub closed inside a packet: {self.buf[:32].hex()}")
                return None

    def expect(self, ptype, timeout=5.0):
        p = self.recv(timeout)
        if p is None:
            raise ProtocolError(f"hub closed the connection; expected {NAMES[ptype]}")
        if p.type != ptype:
            raise ProtocolError(f"expected {NAMES[ptype]}, got {p!r}")
        return p

    def until_closed(self, timeout=5.0):
        """Every packet until the hub closes; TimeoutError if it does not."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            p = self.recv(max(0.0, deadline - time.monotonic()) or 0.001)
            if p is None:
                return got
            got.append(p)

    def quiet(self, timeout=0.5):
        """Packets received within timeout, without requiring a close."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self.recv(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                return got
            if p is None:
                return got
            got.append(p)

    def mqtt_connect(self, client_id, clean=True, expiry=None, keepalive=60, properties=None,
                     timeout=5.0):
        """CONNECT and CONNACK (checked to be a success)."""
        pr = list(properties or [])
        if expiry is not None and self.version == 5:
            pr.append((SESSION_EXPIRY, expiry))
        self.send(connect(client_id, version=self.version, clean=clean, keepalive=keepalive,
                          properties=pr))
        ack = self.expect(CONNACK, timeout)
        if ack.reason != 0:
            raise ProtocolError(f"CONNACK refused: 0x{ack.reason:02x}")
        return ack

    def disconnect(self, timeout=3.0):
        """A clean DISCONNECT, then wait for the hub to close: once this
        returns, the hub has let go of the connection (and its slot)."""
        try:
            self.send(disconnect(version=self.version))
            self.until_closed(timeout)
        except CLOSED_ERRORS:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tcp(port, source=None, timeout=5.0, host="127.0.0.1"):
    """A TCP connection to host:port, optionally from a chosen source address."""
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
