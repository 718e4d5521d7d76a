#!/usr/bin/python3
"""Write the seed corpus of the codec fuzz targets: tests/fuzz/corpus/<target>/.

Run from anywhere with Debian's interpreter (stdlib only):

    /usr/bin/python3 tests/fuzz/make_corpus.py           # (re)write the seeds
    /usr/bin/python3 tests/fuzz/make_corpus.py --check   # exit 1 if stale

Every packet below is encoded by hand from the MQTT 3.1.1 / 5.0 specs, not by
the codec under test: each packet type in both versions, with and without
properties, a few sessions (CONNECT followed by the packets of that version),
and some malformed packets for the decoder. If tests/fixtures/wire/*.hex
exists (packets captured from mosquitto by tests/fixtures/capture.py) those
are added to the fuzz_decode and fuzz_roundtrip seeds too.

A seed file is named by the SHA-1 of its content, as libFuzzer names the
inputs it adds, so the names are deterministic and a re-run only changes what
changed. Files named regress-* (inputs that once found a bug) are kept; every
other file in a corpus directory is replaced by this script's output.

The first byte of a fuzz_decode / fuzz_roundtrip input is a choice byte (see
fuzz_choice in tests/fuzz/fuzz_common.h): bits 0-1 the session version
(0: before CONNECT, 1: 3.1.1, 2: 5), bit 2 the sender (1: server), bits 3-4 a
maximum packet size (0: none). The first byte of a fuzz_topic input splits the
rest in two strings: it is the length of the first modulo (rest + 1).
"""

import argparse
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
WIRE = os.path.join(HERE, "..", "fixtures", "wire")
TARGETS = ("fuzz_decode", "fuzz_roundtrip", "fuzz_props", "fuzz_topic")

# --------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------


def vbi(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u8(n):
    return bytes([n])


def u16(n):
    return n.to_bytes(2, "big")


def u32(n):
    return n.to_bytes(4, "big")


def s(text):
    """UTF-8 string or binary data with its two-byte length."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    return u16(len(b)) + b


# Property identifiers and their value encoders.
P = {
    "payload_format": (0x01, u8),
    "message_expiry": (0x02, u32),
    "content_type": (0x03, s),
    "response_topic": (0x08, s),
    "correlation_data": (0x09, s),
    "sub_id": (0x0B, vbi),
    "session_expiry": (0x11, u32),
    "assigned_client_id": (0x12, s),
    "server_keep_alive": (0x13, u16),
    "auth_method": (0x15, s),
    "auth_data": (0x16, s),
    "request_problem_info": (0x17, u8),
    "will_delay": (0x18, u32),
    "request_response_info": (0x19, u8),
    "response_info": (0x1A, s),
    "server_reference": (0x1C, s),
    "reason_string": (0x1F, s),
    "receive_maximum": (0x21, u16),
    "topic_alias_maximum": (0x22, u16),
    "topic_alias": (0x23, u16),
    "maximum_qos": (0x24, u8),
    "retain_available": (0x25, u8),
    "user": (0x26, lambda kv: s(kv[0]) + s(kv[1])),
    "maximum_packet_size": (0x27, u32),
    "wildcard_sub_available": (0x28, u8),
    "sub_id_available": (0x29, u8),
    "shared_sub_available": (0x2A, u8),
}


def block(*props):
    """Property block body: (name, value) pairs, in the order given."""
    out = bytearray()
    for name, value in props:
        pid, enc = P[name]
        out += vbi(pid) + enc(value)
    return bytes(out)


def props(*pairs):
    """Property block with its length, as it sits in a packet."""
    b = block(*pairs)
    return vbi(len(b)) + b


NO_PROPS = b"\x00"


def packet(ptype, flags, body):
    return bytes([ptype << 4 | flags]) + vbi(len(body)) + body


def choice(version, server=False, max_idx=0):
    v = {0: 0, 4: 1, 5: 2}[version]
    return bytes([v | (4 if server else 0) | max_idx << 3])


CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

# --------------------------------------------------------------------------
# Packets
# --------------------------------------------------------------------------


def connect(level, client_id="moat-1", clean=True, keep_alive=60, prop=b"",
            will=None, user=None, password=None):
    """will: (topic, payload, qos, retain, will_props_block_with_length)."""
    flags = 0x02 if clean else 0
    tail = s(client_id)
    if will:
        topic, payload, qos, retain, wprops = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        tail += (wprops if level == 5 else b"") + s(topic) + s(payload)
    if user is not None:
        flags |= 0x80
        tail += s(user)
    if password is not None:
        flags |= 0x40
        tail += s(password)
    body = s("MQTT") + u8(level) + u8(flags) + u16(keep_alive)
    if level == 5:
        body += prop or NO_PROPS
    return packet(CONNECT, 0, body + tail)


def connack(level, reason=0, session_present=False, prop=b""):
    body = u8(1 if session_present else 0) + u8(reason)
    if level == 5:
        body += prop or NO_PROPS
    return packet(CONNACK, 0, body)


def publish(level, topic, payload, qos=0, pid=0, dup=False, retain=False, prop=b""):
    flags = (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body = s(topic) + (u16(pid) if qos else b"")
    if level == 5:
        body += prop or NO_PROPS
    return packet(PUBLISH, flags, body + payload)


def ack(ptype, pid, reason=None, prop=None):
    body = u16(pid)
    if reason is not None:
        body += u8(reason)
        if prop is not None:
            body += prop
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def subscribe(level, pid, entries, prop=b""):
    body = u16(pid)
    if level == 5:
        body += prop or NO_PROPS
    for topic_filter, opts in entries:
        body += s(topic_filter) + u8(opts)
    return packet(SUBSCRIBE, 2, body)


def suback(level, ptype, pid, reasons, prop=b""):
    body = u16(pid)
    if level == 5:
        body += prop or NO_PROPS
    return packet(ptype, 0, body + bytes(reasons))


def unsubscribe(level, pid, filters, prop=b""):
    body = u16(pid)
    if level == 5:
        body += prop or NO_PROPS
    for topic_filter in filters:
        body += s(topic_filter)
    return packet(UNSUBSCRIBE, 2, body)


def tail(ptype, reason=None, prop=None):
    """DISCONNECT / AUTH: reason and properties, each optional in MQTT 5."""
    body = b""
    if reason is not None:
        body += u8(reason)
        if prop is not None:
            body += prop
    return packet(ptype, 0, body)


PINGREQ_PKT = packet(PINGREQ, 0, b"")
PINGRESP_PKT = packet(PINGRESP, 0, b"")

WILL_PROPS = props(("will_delay", 30), ("payload_format", 1), ("message_expiry", 3600),
                   ("content_type", "text/plain"), ("response_topic", "reply/here"),
                   ("correlation_data", b"\x01\x02"), ("user", ("k", "v")))


# In the lists below S(packet) is also a seed of its own, Q(packet) is only
# part of its session (the corpus must stay small: most packets appear in a
# session only, and every packet type of MQTT 5 at least once on its own).
def S(pkt):
    return (pkt, True)


def Q(pkt):
    return (pkt, False)


def client_packets_v311():
    return [
        Q(connect(4)),
        Q(connect(4, client_id="", clean=True, keep_alive=0,
                  will=("status/dev1", b"offline", 1, True, b""),
                  user="alice", password=b"s3cret")),
        Q(publish(4, "sensors/t1", b"21.5")),
        Q(publish(4, "sensors/t1", b"\x00\xff", qos=1, pid=1, dup=True, retain=True)),
        Q(publish(4, "a/b/c", b"", qos=2, pid=65535)),
        Q(ack(PUBACK, 1)),
        Q(ack(PUBREC, 2)),
        Q(ack(PUBREL, 2)),
        Q(ack(PUBCOMP, 2)),
        Q(subscribe(4, 10, [("sport/tennis/+", 0), ("sport/#", 1), ("$SYS/broker/+", 2)])),
        Q(unsubscribe(4, 11, ["sport/tennis/+", "sport/#"])),
        Q(PINGREQ_PKT),
        Q(tail(DISCONNECT)),
    ]


def server_packets_v311():
    return [
        Q(connack(4)),
        Q(connack(4, reason=5)),
        Q(connack(4, session_present=True)),
        Q(publish(4, "sport/tennis/player1", b"score", qos=1, pid=7)),
        Q(ack(PUBACK, 7)),
        Q(suback(4, SUBACK, 10, [0, 1, 2, 0x80])),
        Q(suback(4, UNSUBACK, 11, [])),
        Q(PINGRESP_PKT),
    ]


def client_packets_v5():
    return [
        Q(connect(5)),
        Q(connect(5, client_id="dev-\u00fc", keep_alive=30,
                  prop=props(("session_expiry", 120), ("receive_maximum", 20),
                             ("maximum_packet_size", 4096), ("topic_alias_maximum", 10),
                             ("request_response_info", 1), ("request_problem_info", 0),
                             ("user", ("region", "eu")), ("auth_method", "SCRAM-SHA-1"),
                             ("auth_data", b"\x00\x01")),
                  will=("status/dev1", b"offline", 2, False, WILL_PROPS),
                  user="bob", password=b"pw")),
        Q(connect(5, client_id="nouser", password=b"token-only")),
        Q(publish(5, "sensors/t1", b"21.5")),
        S(publish(5, "sensors/t1", b"{}", qos=1, pid=3,
                  prop=props(("payload_format", 1), ("message_expiry", 60),
                             ("topic_alias", 1), ("response_topic", "reply/dev1"),
                             ("correlation_data", b"id-1"), ("content_type", "json"),
                             ("user", ("a", "1")), ("user", ("a", "2"))))),
        S(publish(5, "", b"aliased", qos=2, pid=4, prop=props(("topic_alias", 1)))),
        Q(ack(PUBACK, 3)),
        S(ack(PUBACK, 3, reason=0x10, prop=props(("reason_string", "no subscribers"),
                                                 ("user", ("x", "y"))))),
        S(ack(PUBREC, 4, reason=0x80)),
        S(ack(PUBREL, 4, reason=0x92, prop=NO_PROPS)),
        S(ack(PUBCOMP, 4, reason=0, prop=props(("user", ("t", "1"))))),
        Q(subscribe(5, 12, [("a/+", 0x00)])),
        S(subscribe(5, 13, [("sport/#", 0x2D), ("$share/grp/jobs/+", 0x02), ("x", 0x1A)],
                    prop=props(("sub_id", 268435455), ("user", ("k", "v"))))),
        Q(unsubscribe(5, 14, ["sport/#"])),
        S(unsubscribe(5, 15, ["a/+", "$share/grp/jobs/+"], prop=props(("user", ("k", "v"))))),
        Q(PINGREQ_PKT),
        Q(tail(DISCONNECT)),
        S(tail(DISCONNECT, 0x04, props(("session_expiry", 0), ("reason_string", "bye"),
                                       ("user", ("k", "v"))))),
        S(tail(AUTH, 0x19, props(("auth_method", "SCRAM-SHA-1"), ("auth_data", b"nonce")))),
    ]


def server_packets_v5():
    return [
        Q(connack(5)),
        S(connack(5, session_present=True,
                  prop=props(("session_expiry", 0), ("receive_maximum", 100),
                             ("maximum_qos", 1), ("retain_available", 0),
                             ("maximum_packet_size", 65536),
                             ("assigned_client_id", "auto-7f3a"), ("topic_alias_maximum", 5),
                             ("reason_string", "welcome"), ("wildcard_sub_available", 1),
                             ("sub_id_available", 1), ("shared_sub_available", 0),
                             ("server_keep_alive", 30), ("response_info", "resp/"),
                             ("server_reference", "other:1883"), ("auth_method", "m"),
                             ("auth_data", b"d"), ("user", ("k", "v"))))),
        S(connack(5, reason=0x87, prop=props(("reason_string", "not authorized")))),
        S(publish(5, "sport/tennis/player1", b"score", qos=1, pid=9,
                  prop=props(("sub_id", 1), ("sub_id", 200), ("user", ("k", "v"))))),
        Q(ack(PUBACK, 9, reason=0x00)),
        S(suback(5, SUBACK, 13, [0x00, 0x02, 0x8F], prop=props(("reason_string", "partial")))),
        Q(suback(5, SUBACK, 12, [0x01])),
        S(suback(5, UNSUBACK, 14, [0x00, 0x11], prop=props(("user", ("k", "v"))))),
        Q(suback(5, UNSUBACK, 15, [0x00])),
        Q(PINGRESP_PKT),
        S(tail(DISCONNECT, 0x8E, props(("server_reference", "b:1883"),
                                       ("reason_string", "taken over")))),
        S(tail(AUTH, 0x18, props(("auth_method", "SCRAM-SHA-1"), ("auth_data", b"proof")))),
    ]


def packet_seeds():
    """(choice byte + packet stream) seeds for fuzz_decode and fuzz_roundtrip:
    per version, a client session (the first CONNECT, then every other client
    packet), each further CONNECT on its own, a server stream, and the S()
    packets on their own."""
    seeds = []
    for level, client, server in ((4, client_packets_v311(), server_packets_v311()),
                                  (5, client_packets_v5(), server_packets_v5())):
        connects = [p for p, _ in client if p[0] >> 4 == CONNECT]
        others = [(p, single) for p, single in client if p[0] >> 4 != CONNECT]
        seeds.append(choice(0) + connects[0] + b"".join(p for p, _ in others))
        seeds += [choice(0) + p for p in connects[1:]]
        seeds += [choice(level) + p for p, single in others if single]
        seeds.append(choice(level, server=True) + b"".join(p for p, _ in server))
        seeds += [choice(level, server=True) + p for p, single in server if single]
    # Size limits: a PUBLISH of exactly 16 bytes at max 16, one over 128 at 128.
    seeds.append(choice(4, max_idx=1) + publish(4, "a/b", b"012345789"))
    seeds.append(choice(5, max_idx=2) + publish(5, "t", b"x" * 200))
    return seeds


def malformed_seeds():
    """Broken packets: only for fuzz_decode."""
    c5 = connect(5)
    return [
        choice(0) + b"\x10",                                      # header only
        choice(0) + b"\x10\xff\xff\xff\xff\x7f",                  # 5-byte length
        choice(4) + b"\x30\x80\x00",                              # non-minimal length
        choice(4) + b"\x82\x05\x00\x01\x00\x01\x61",              # truncated SUBSCRIBE
        choice(4) + b"\x31\x06\x00\x02\x61\xc0\xaf\x00",          # overlong in topic
        choice(0) + packet(CONNECT, 0, s("MQIsdp") + b"\x03\x02\x00\x3c" + s("old")),
        choice(0) + c5[:-1],                                      # CONNECT cut short
        choice(5) + packet(PUBLISH, 0, s("t") + b"\x03\x2a\x00\x01"),  # bad property id
        choice(5) + packet(PUBLISH, 0, s("t") + props(("topic_alias", 1), ("topic_alias", 2))),
        choice(5, server=True) + packet(SUBACK, 0, u16(1) + b"\x00\x05"),  # bad reason
        choice(4) + packet(PINGREQ, 0, b"\x00"),                  # trailing byte
    ]


def props_seeds():
    return [
        b"",
        block(("payload_format", 1), ("message_expiry", 60), ("content_type", "json"),
              ("response_topic", "r/t"), ("correlation_data", b"\x00\x01"),
              ("topic_alias", 3), ("user", ("k", "v"))),
        block(("sub_id", 1), ("sub_id", 16384), ("sub_id", 268435455), ("user", ("a", ""))),
        block(("session_expiry", 300), ("receive_maximum", 10), ("maximum_packet_size", 1024),
              ("topic_alias_maximum", 4), ("request_response_info", 1),
              ("request_problem_info", 0), ("auth_method", "PLAIN"), ("auth_data", b"x")),
        block(("assigned_client_id", "id"), ("server_keep_alive", 10), ("maximum_qos", 0),
              ("retain_available", 1), ("wildcard_sub_available", 1),
              ("sub_id_available", 0), ("shared_sub_available", 1),
              ("response_info", "ri"), ("server_reference", "srv")),
        block(("reason_string", "why"), ("user", ("x", "y")), ("user", ("x", "y"))),
        block(("will_delay", 5), ("payload_format", 0)),
        block(("auth_data", b"no method")),                       # data without a method
        block(("topic_alias", 1), ("topic_alias", 1)),            # duplicate
        block(("maximum_qos", 2)),                                # out of range
        b"\x26\x00\x01\x6b\x00\x05\x76",                          # truncated user property
        b"\x80\x00\x01",                                          # non-minimal identifier
        b"\x0b\x80\x80\x80\x80\x01",                              # 5-byte VBI value
        b"\x03\x00\x03\xed\xa0\x80",                              # surrogate in a string
    ]


def topic_seeds():
    pairs = [
        ("sport/tennis/+", "sport/tennis/player1"),
        ("sport/#", "sport"),
        ("#", "a/b/c"),
        ("+/+", "/finance"),
        ("+", "$SYS"),
        ("$SYS/#", "$SYS/broker/load"),
        ("$share/grp/a/#", "a/b"),
        ("$share/grp", "$share/grp/"),
        ("a/b/c", "a/b/c"),
        ("/", "//"),
        ("a/#/b", "a+b"),
        ("ü/+/€", "ü/ß/€"),
        ("\U0001F600/#", "\U0001F600"),
    ]
    seeds = []
    for f, t in pairs:
        fb, tb = f.encode(), t.encode()
        seeds.append(bytes([len(fb)]) + fb + tb)
    # Invalid UTF-8: overlong '/', surrogate, above U+10FFFF, U+0000, cut short.
    for bad in (b"a\xc0\xafb", b"x/\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\x00b",
                b"abcdefgh\xe2\x82"):
        seeds.append(bytes([len(bad)]) + bad + b"abcdefghijklmnop/x")
    return seeds


# --------------------------------------------------------------------------
# Wire captures
# --------------------------------------------------------------------------


def wire_seeds():
    """Seeds from tests/fixtures/wire/<version>_<name>.hex. Each CONNECT is a
    seed of its own (only one CONNECT per session); the other packets are
    grouped per version and direction into one stream each."""
    if not os.path.isdir(WIRE):
        return []
    streams = {}
    seeds = []
    for name in sorted(os.listdir(WIRE)):
        if not name.endswith(".hex"):
            continue
        level = 5 if name.startswith("v5_") else 4 if name.startswith("v311_") else None
        if level is None:
            continue
        with open(os.path.join(WIRE, name)) as fh:
            lines = fh.read().splitlines()
        comment = next((ln for ln in lines if ln.startswith("#")), "")
        hexes = "".join(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))
        pkt = bytes.fromhex(hexes)
        if not pkt:
            continue
        server = comment.split()[1:2] == ["s2c"]
        if pkt[0] >> 4 == CONNECT:
            seeds.append(choice(0) + pkt)
        else:
            streams.setdefault((level, server), []).append(pkt)
    for (level, server), pkts in sorted(streams.items()):
        seeds.append(choice(level, server=server) + b"".join(pkts))
    return seeds


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def corpus():
    packets = packet_seeds()
    wire = wire_seeds()
    return {
        "fuzz_decode": packets + malformed_seeds() + wire,
        "fuzz_roundtrip": packets + wire,
        "fuzz_props": props_seeds(),
        "fuzz_topic": topic_seeds(),
    }


def generated_names(directory):
    if not os.path.isdir(directory):
        return set()
    return {n for n in os.listdir(directory) if not n.startswith("regress-")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only compare with the committed corpus; exit 1 if it differs")
    args = ap.parse_args()

    stale = []
    for target, seeds in corpus().items():
        directory = os.path.join(CORPUS, target)
        want = {hashlib.sha1(seed).hexdigest(): seed for seed in seeds}
        have = generated_names(directory)
        if args.check:
            if have != set(want):
                stale.append(target)
            continue
        os.makedirs(directory, exist_ok=True)
        for name in sorted(have - set(want)):
            os.remove(os.path.join(directory, name))
        for name, seed in sorted(want.items()):
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                with open(path, "wb") as fh:
                    fh.write(seed)
        print("%-15s %3d seeds, %6d bytes" % (target, len(want),
                                             sum(len(v) for v in want.values())))
    if stale:
        print("corpus out of date for: %s; run /usr/bin/python3 tests/fuzz/make_corpus.py"
              % " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
