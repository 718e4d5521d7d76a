"""Live black-box test of the MQTT codec against real peers.

The fixtures in tests/fixtures/wire pin single packets; this test checks that
the codec keeps up with whole conversations as real software produces them
today.  It starts Debian's mosquitto broker on a free loopback port, puts a
recording TCP proxy in front of it (the one tests/fixtures/capture.py uses),
and runs a varied set of mosquitto_pub / mosquitto_sub sessions through the
proxy in MQTT 3.1.1 and 5.0: QoS 0, 1 and 2 both ways, retained messages and
their removal, wills (one of them published by the broker), MQTT 5 properties
on CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE and DISCONNECT, subscription
identifiers, topic aliases, several filters per SUBSCRIBE, UNSUBSCRIBE,
persistent sessions with queued messages, a refused CONNECT, keep-alive pings
and a payload big enough for a three-byte remaining length.  Then every
recorded direction of every connection goes through moat-mqtt-dump, which
must exit 0 and print one line per packet the proxy saw, naming the packet
types in wire order.  A negative test checks that a truncated or corrupted
stream makes moat-mqtt-dump stop with exit status 1 and "error at byte N" at
the offset of the packet it refused.
"""
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, program

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import capture  # noqa: E402  (the recording proxy and a packet splitter)

CLIENT_TIMEOUT = 10.0
VERSIONS = [("v311", "mqttv311", 4), ("v5", "mqttv5", 5)]
ERROR_RE = re.compile(r"^error at byte (\d+): ")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class Session:
    """The broker's proxy plus the clients started through it."""

    def __init__(self, procs, proxy, tmp_path):
        self.procs = procs
        self.proxy = proxy
        self.tmp_path = tmp_path

    def argv(self, tool, vflag, cid, *rest):
        return [tool, "-h", "127.0.0.1", "-p", str(self.proxy.port), "-V", vflag,
                "-i", cid] + list(rest)

    def start(self, argv):
        # stdout is not read: a subscriber printing a big message to a full
        # pipe would stall
        proc = self.procs.start(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        proc.argv = argv
        return proc

    @staticmethod
    def wait(proc, ok=(0,), timeout=CLIENT_TIMEOUT):
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("timed out: %s" % " ".join(proc.argv))
        if ok is not None and proc.returncode not in ok:
            pytest.fail("exit %d (want %s): %s\n%s" % (
                proc.returncode, ok, " ".join(proc.argv), err.decode(errors="replace")))

    def run(self, argv, ok=(0,)):
        return self.wait(self.start(argv), ok)

    def wait_packet(self, cid, level, direction, ptype, timeout=CLIENT_TIMEOUT):
        """Wait until the proxy has seen a packet of this type on the first
        connection of client cid."""
        want = capture.PTYPE_NUM[ptype]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = self.proxy.find(cid, level)
            if conn is not None and any(p[0] >> 4 == want for p in conn.packets(direction)):
                return
            time.sleep(0.01)
        pytest.fail("no %s %s seen for %s" % (direction, ptype, cid))


def stop_proxy(proxy):
    """Unblock the pump threads (shutdown wakes a blocked recv, close does
    not), then close everything."""
    with proxy.lock:
        conns = list(proxy.conns)
    for conn in conns:
        for s in conn.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    proxy.stop()


def dump(stream, sender, version=None):
    argv = [program("moat-mqtt-dump"), "--from", sender]
    if version is not None:
        argv += ["--version", str(version)]
    res = subprocess.run(argv, input=stream, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=10)
    return res.returncode, res.stdout.decode("utf-8", "replace").splitlines(), \
        res.stderr.decode("utf-8", "replace")


def packet_offsets(stream):
    """Split a stream into packets; returns [(offset, packet bytes)] and
    requires that nothing is left over."""
    packets, rest = capture.split_packets(stream)
    assert rest == b"", "stream ends inside a packet: %s" % rest.hex()
    out, off = [], 0
    for p in packets:
        out.append((off, p))
        off += len(p)
    return out


def type_names(packets):
    return [capture.PTYPES[p[0] >> 4] for _, p in packets]


def fixture_bytes(name):
    with open(os.path.join(ROOT, "tests", "fixtures", "wire", name)) as fh:
        return bytes.fromhex("".join(l for l in fh.read().splitlines()
                                     if l and not l.startswith("#")))


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------

def start_background(s, ver, vflag, level):
    """Long-running clients: a subscriber that collects the messages of the
    foreground publishers, and one that waits for a keep-alive ping."""
    T = "moat/live/%s" % ver
    extra = []
    if level == 5:
        extra = ["-D", "subscribe", "subscription-identifier", "3",
                 "-D", "connect", "session-expiry-interval", "0"]
    # q/zero, q/one, q/two, x/plus, q/big; in MQTT 5 also the will of the
    # "-W" client below (its DISCONNECT 0x04 asks the broker to publish it).
    count = 6 if level == 5 else 5
    collector = s.start(s.argv("mosquitto_sub", vflag, "live-collect-" + ver, "-k", "30",
                               "-q", "2", "-t", T + "/q/#", "-t", T + "/+/plus",
                               "-C", str(count), "-W", "15", *extra))
    pinger = s.start(s.argv("mosquitto_sub", vflag, "live-ping-" + ver, "-k", "5",
                            "-q", "1", "-t", T + "/ping", "-C", "1", "-W", "15"))
    # Session takeover: a second connection with this client id makes the
    # broker close this one (mosquitto 2.0.11 sends no DISCONNECT first), and
    # mosquitto_sub connects and subscribes again.
    taken = s.start(s.argv("mosquitto_sub", vflag, "live-takeover-" + ver, "-k", "30",
                           "-t", T + "/takeover", "-W", "3"))
    return collector, pinger, taken


def start_short(s, ver, vflag, level):
    """Clients that end on their own -W 1 timeout: a will and an UNSUBSCRIBE."""
    T = "moat/live/%s" % ver
    will = ["--will-topic", T + "/q/will", "--will-payload", "gone", "--will-qos", "1"]
    if level == 5:
        will += ["-D", "will", "content-type", "text/plain",
                 "-D", "will", "user-property", "wk", "wv"]
    unsub = []
    if level == 5:
        unsub = ["-D", "unsubscribe", "user-property", "uk", "uv"]
    return [
        s.start(s.argv("mosquitto_sub", vflag, "live-will-" + ver, "-k", "30", *will,
                       "-t", T + "/nothing", "-W", "1")),
        s.start(s.argv("mosquitto_sub", vflag, "live-unsub-" + ver, "-k", "30", "-q", "1",
                       "-t", T + "/u1", "-t", T + "/u2", "-t", T + "/u3/#",
                       "-U", T + "/u1", "-U", T + "/u3/#", "-W", "1", *unsub)),
    ]


def run_foreground(s, ver, vflag, level, big_file):
    T = "moat/live/%s" % ver
    v5 = level == 5

    def pub(cid, *rest):
        s.run(s.argv("mosquitto_pub", vflag, cid, "-k", "30", *rest))

    def sub(cid, *rest):
        s.run(s.argv("mosquitto_sub", vflag, cid, "-k", "30", *rest))

    # Messages for the collector: QoS 0, 1 and 2, one through the "+" filter,
    # one with MQTT 5 properties, one of 70000 bytes.
    connect_props = []
    if v5:
        connect_props = ["-D", "connect", "session-expiry-interval", "3600",
                         "-D", "connect", "receive-maximum", "20",
                         "-D", "connect", "maximum-packet-size", "1000000",
                         "-D", "connect", "topic-alias-maximum", "5",
                         "-D", "connect", "user-property", "k", "v",
                         "-D", "disconnect", "session-expiry-interval", "0",
                         "-D", "disconnect", "user-property", "bye", "now"]
    pub("live-q0-" + ver, "-q", "0", "-t", T + "/q/zero", "-m", "zero", *connect_props)
    pub("live-q1-" + ver, "-q", "1", "-u", "alice", "-P", "s3cret",
        "-t", T + "/q/one", "-m", "one")
    msg_props = []
    if v5:
        msg_props = ["-D", "publish", "payload-format-indicator", "1",
                     "-D", "publish", "message-expiry-interval", "60",
                     "-D", "publish", "content-type", "text/plain",
                     "-D", "publish", "response-topic", T + "/reply",
                     "-D", "publish", "correlation-data", "c0rr",
                     "-D", "publish", "user-property", "a", "b",
                     "-D", "publish", "user-property", "a", "c"]
    pub("live-q2-" + ver, "-q", "2", "-t", T + "/q/two", "-m", "two", *msg_props)
    pub("live-plus-" + ver, "-q", "1", "-t", T + "/x/plus", "-m", "plus")
    pub("live-big-" + ver, "-q", "1", "-t", T + "/q/big", "-f", big_file)

    # A QoS 1 message nobody subscribed to, and a will that is not used.
    pub("live-lonely-" + ver, "-q", "1", "-t", T + "/nobody", "-m", "x",
        "--will-topic", T + "/w", "--will-payload", "w", "--will-retain")

    # Retained: set, read back by a new subscriber (retain flag set), clear.
    pub("live-retain-" + ver, "-q", "1", "-r", "-t", T + "/retained", "-m", "keep")
    sub("live-retain-sub-" + ver, "-q", "1", "-t", T + "/retained", "-C", "1")
    pub("live-retain-clear-" + ver, "-q", "1", "-r", "-n", "-t", T + "/retained")

    # Several filters in one SUBSCRIBE; MQTT 5 options and properties. The
    # broker may send its retained $SYS message before the client leaves.
    opts = ["--retain-as-published", "-D", "subscribe", "user-property", "sk", "sv"] if v5 else []
    sub("live-multi-" + ver, "-q", "2", "-t", T + "/a", "-t", T + "/+/b", "-t", T + "/c/#",
        "-t", "$SYS/broker/uptime", *opts, "-E")

    # Persistent session: subscribe and leave, a QoS 1 message is queued,
    # the second connection gets session-present and the queued message.
    sub("live-persist-" + ver, "-c", "-q", "1", "-t", T + "/persist", "-E")
    pub("live-persist-pub-" + ver, "-q", "1", "-t", T + "/persist", "-m", "queued")
    sub("live-persist-" + ver, "-c", "-q", "1", "-t", T + "/persist", "-C", "1")

    if v5:
        # Topic alias: the second PUBLISH has an empty topic.
        pub("live-alias-" + ver, "-D", "publish", "topic-alias", "1",
            "-t", T + "/alias", "-m", "al", "--repeat", "3")
        # A topic alias above the broker's topic-alias-maximum (10): the
        # broker answers with its own DISCONNECT, reason 0x94. Whether the
        # client notices before it ends does not matter here.
        s.run(s.argv("mosquitto_pub", vflag, "live-badalias-" + ver, "-k", "30",
                     "-D", "publish", "topic-alias", "11", "-t", T + "/alias", "-m", "x"),
              ok=None)
        # Asking for response and problem information; -x sets the session
        # expiry interval.
        pub("live-request-" + ver, "-x", "120",
            "-D", "connect", "request-response-information", "1",
            "-D", "connect", "request-problem-information", "0",
            "-t", T + "/req", "-m", "x")
        # Refused CONNECT: the broker has no authentication-method plugin
        # and answers CONNACK 0x8C; the client exits with that code.
        s.run(s.argv("mosquitto_pub", vflag, "live-badauth-" + ver, "-k", "30",
                     "-D", "connect", "authentication-method", "x-none",
                     "-t", T + "/ba", "-m", "x"), ok=(0x8C,))


def finish_background(s, ver, vflag, level, collector, pinger, taken, short):
    T = "moat/live/%s" % ver
    for proc in short + [taken]:
        s.wait(proc, ok=(27,))  # 27: mosquitto_sub's -W timeout expired
    s.wait(collector)
    s.wait_packet("live-ping-" + ver, level, "s2c", "PINGRESP", timeout=12)
    s.run(s.argv("mosquitto_pub", vflag, "live-ping-release-" + ver, "-k", "30", "-q", "1",
                 "-t", T + "/ping", "-m", "done"))
    s.wait(pinger)


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------

@pytest.fixture
def session(procs, mosquitto_broker, tmp_path):
    proxy = capture.Proxy(mosquitto_broker)
    try:
        yield Session(procs, proxy, tmp_path)
    finally:
        procs.stop_all()
        stop_proxy(proxy)


def test_dump_decodes_live_mosquitto_traffic(session, tmp_path):
    s = session
    t0 = time.monotonic()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes((i * 7 + 3) & 0xFF for i in range(70000)))

    background = {}
    for ver, vflag, level in VERSIONS:
        background[ver] = start_background(s, ver, vflag, level)
    for ver, vflag, level in VERSIONS:
        s.wait_packet("live-collect-" + ver, level, "s2c", "SUBACK")
    for ver, vflag, level in VERSIONS:
        s.wait_packet("live-takeover-" + ver, level, "s2c", "SUBACK")
        # (any exit status: should the old client reconnect first, it takes
        # this connection over in turn)
        s.run(s.argv("mosquitto_pub", vflag, "live-takeover-" + ver, "-k", "30",
                     "-t", "moat/live/%s/takeover" % ver, "-m", "mine now"), ok=None)
    short = {ver: start_short(s, ver, vflag, level) for ver, vflag, level in VERSIONS}
    for ver, vflag, level in VERSIONS:
        run_foreground(s, ver, vflag, level, str(big))
    for ver, vflag, level in VERSIONS:
        finish_background(s, ver, vflag, level, *background[ver], short[ver])
    assert s.proxy.wait_idle(5), "proxy connections still open after every client ended"

    seen = {4: set(), 5: set()}
    seen_from_server = {4: set(), 5: set()}
    checked = 0
    for conn in s.proxy.conns:
        hello = conn.hello()
        assert hello is not None, "connection %d does not start with CONNECT" % conn.idx
        cid, level = hello
        for direction in ("c2s", "s2c"):
            stream = conn.snapshot(direction)
            packets = packet_offsets(stream)
            if direction == "c2s":
                rc, lines, err = dump(stream, "client")
            else:
                rc, lines, err = dump(stream, "server", level)
            where = "%s %s (%d packets, %d bytes)" % (cid, direction, len(packets), len(stream))
            assert rc == 0, "%s: moat-mqtt-dump exit %d\n%s\n%s" % (
                where, rc, "\n".join(lines), err)
            assert err == "", "%s: unexpected stderr: %s" % (where, err)
            assert len(lines) == len(packets), "%s: %d lines for %d packets:\n%s" % (
                where, len(lines), len(packets), "\n".join(lines))
            got = [line.split(" ", 1)[0] for line in lines]
            assert got == type_names(packets), "%s:\n%s" % (where, "\n".join(lines))
            seen[level].update(got)
            seen_from_server[level].update(got if direction == "s2c" else [])
            checked += len(packets)

            if direction == "s2c" and "live-collect-v5" == cid:
                # the subscription identifier rides on every forwarded PUBLISH
                pubs = [l for l in lines if l.startswith("PUBLISH")]
                assert pubs and all("0x0b=3" in l for l in pubs), "\n".join(pubs)
                # The same real stream cut inside the 70000-byte PUBLISH, and
                # with QoS 3 in its first PUBLISH: refused at their offsets.
                k = max(range(len(packets)), key=lambda i: len(packets[i][1]))
                off, big_pkt = packets[k]
                assert len(big_pkt) > 70000
                dump_fails_at(stream[:off + len(big_pkt) // 2], "server", off, k, 5)
                first = got.index("PUBLISH")
                bad = bytearray(stream)
                bad[packets[first][0]] |= 0x06
                dump_fails_at(bytes(bad), "server", packets[first][0], first, 5)
            if "live-big-" in cid and direction == "c2s":
                assert any("(70000 bytes)" in l for l in lines), "\n".join(lines)

    every = {"CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
             "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP",
             "DISCONNECT"}
    for level in (4, 5):
        assert every <= seen[level], "level %d never saw %s" % (level, every - seen[level])
    assert "DISCONNECT" in seen_from_server[5], "the broker's DISCONNECT 0x94 was not seen"
    assert checked > 150
    assert time.monotonic() - t0 < 25


def dump_fails_at(stream, sender, offset, good, version=None):
    rc, lines, err = dump(stream, sender, version)
    assert rc == 1, "exit %d, want 1:\n%s\n%s" % (rc, "\n".join(lines), err)
    assert len(lines) == good + 1, "\n".join(lines)
    m = ERROR_RE.match(lines[-1])
    assert m, "last line is not an error: %r" % lines[-1]
    assert int(m.group(1)) == offset, lines[-1]
    return lines[-1]


def test_dump_refuses_truncated_and_corrupted_streams():
    client = [fixture_bytes(n) for n in (
        "v5_connect_props.hex", "v5_subscribe_subid.hex", "v5_publish_qos2_props.hex",
        "v5_pubrel_c2s.hex", "v5_unsubscribe.hex", "v5_disconnect_props.hex")]
    server = [fixture_bytes(n) for n in (
        "v5_connack.hex", "v5_suback.hex", "v5_publish_qos2_props_s2c.hex",
        "v5_pubcomp_s2c.hex", "v5_unsuback.hex")]
    for packets, sender, version in ((client, "client", None), (server, "server", 5)):
        stream = b"".join(packets)
        rc, lines, _ = dump(stream, sender, version)
        assert rc == 0 and len(lines) == len(packets), "\n".join(lines)
        starts = [sum(len(p) for p in packets[:i]) for i in range(len(packets))]

        # Truncated: inside the third packet's body, inside its remaining
        # length (first byte only), and one byte short at the very end.
        third = starts[2]
        line = dump_fails_at(stream[:third + 10], sender, third, 2, version)
        assert "incomplete" in line
        dump_fails_at(stream[:third + 1], sender, third, 2, version)
        dump_fails_at(stream[:-1], sender, starts[-1], len(packets) - 1, version)

        # Corrupted: reserved header flags on the second packet.
        bad = bytearray(stream)
        bad[starts[1]] ^= 0x01
        line = dump_fails_at(bytes(bad), sender, starts[1], 1, version)
        assert "malformed" in line
        # Corrupted: an unknown property identifier (0x7f) in the third
        # packet's first property (PUBLISH: after topic and packet id).
        bad = bytearray(stream)
        pkt = packets[2]
        topic_len = (pkt[2] << 8) | pkt[3]
        first_prop = 2 + 2 + topic_len + 2 + 1  # header, length, topic, id, props length
        assert pkt[first_prop] in (0x01, 0x0B)
        bad[third + first_prop] = 0x7F
        line = dump_fails_at(bytes(bad), sender, third, 2, version)
        assert "malformed" in line
        # Corrupted: a remaining length longer than what follows makes the
        # last packet incomplete; a five-byte one is malformed at once.
        bad = bytearray(stream)
        bad[starts[-1] + 1] += 1
        dump_fails_at(bytes(bad), sender, starts[-1], len(packets) - 1, version)
        bad = stream + bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        line = dump_fails_at(bad, sender, len(stream), len(packets), version)
        assert "malformed" in line
