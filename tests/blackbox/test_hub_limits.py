"""The hub's limits ([limits] in moatd.conf, docs/operating.md) and its
behaviour on hostile or broken input, over real TLS connections.

Every test checks the limit itself, that the refusal costs only the offending
connection (or message), and that the hub then still serves a well-behaved
client: connect, subscribe, publish, receive.
"""
import glob
import itertools
import os
import queue
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import mqttwire as mw
from conftest import ROOT

SVC_POLICY = "allow connect\nallow all t/#\n"
_ctl_ids = itertools.count()


def assert_serving(hub, svc, source=None, version=5):
    """A well-behaved client (from source, if given) connects, subscribes,
    publishes QoS 1 to itself and receives the message."""
    assert hub.alive(), "the hub died"
    n = next(_ctl_ids)
    cid = f"{svc.id}/ctl-{n}"
    topic = f"t/ctl/{n}"
    c = mw.RawClient.open(hub, svc, source=source, version=version)
    try:
        c.connect(cid)
        c.send_subscribe([(topic, 1)], pid=1)
        assert c.expect(mw.SUBACK).reasons == [1]
        c.publish(topic, b"ok", qos=1, pid=2)
        got = {c.recv().type: None for _ in range(2)}
        assert set(got) == {mw.PUBACK, mw.PUBLISH}, got
        c.disconnect_and_wait()
    finally:
        c.close()


def refused(hub, who, source=None, timeout=3.0):
    """True when the hub drops the connection instead of answering CONNECT
    (it closes refused connections right at accept, before TLS)."""
    try:
        c = mw.RawClient.open(hub, who, source=source, timeout=timeout)
    except OSError:
        return True
    # TLS 1.3: the client may finish before the server has looked at it.
    try:
        c.send_connect(who.id)
        if c.recv(timeout) is None:
            return True
        c.disconnect_and_wait()  # frees its slot before the caller goes on
        return False
    except (OSError, mw.ProtocolError):
        return True
    finally:
        c.close()


def connected(hub, who, cid, source=None, version=5, **kw):
    c = mw.RawClient.open(hub, who, source=source, version=version)
    c.connect(cid, **kw)
    return c


# ---- packet size -------------------------------------------------------------------

@pytest.mark.parametrize("version", [5, 4])
def test_oversized_packet(hub, version):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_packet_size", "1024")
    hub.start()
    c = mw.RawClient.open(hub, svc, version=version)
    ack = c.connect("svc/big")
    if version == 5:
        assert ack.prop(mw.MAXIMUM_PACKET_SIZE) == 1024, ack.props
    # exactly at the limit: accepted
    head = mw.encode_publish("t/big", b"", qos=1, pid=1, version=version)
    fill = 1024 - len(head) - 1  # one more byte of remaining length
    at_limit = mw.encode_publish("t/big", b"x" * fill, qos=1, pid=1, version=version)
    assert len(at_limit) == 1024
    c.send(at_limit)
    assert c.expect(mw.PUBACK).packet_id == 1
    # one byte over: refused, connection closed
    over = mw.encode_publish("t/big", b"x" * (fill + 1), qos=1, pid=2, version=version)
    assert len(over) == 1025
    c.send(over)
    got = c.wait_closed(3)
    if version == 5:
        assert [(p.type, p.reason) for p in got] == [(mw.DISCONNECT, 0x95)]
    else:
        assert got == []
    c.close()
    hub.wait_log(r"0x95")
    assert_serving(hub, svc)


def test_pre_connect_packet_limit(hub):
    """An unauthenticated first packet larger than max_packet_before_connect
    is refused from its header: the hub closes before the rest is sent, even
    though the packet would be within max_packet_size."""
    dev = hub.add_device()
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_packet_before_connect", "1024")
    hub.start()
    total = 60_000  # below max_packet_size (262144), far above 1024
    will_payload = b"w" * (total - 200)
    full = mw.encode_connect(dev.id, will=dict(topic=f"moat/{dev.id}/up/will",
                                               payload=will_payload))
    c = mw.RawClient.open(hub, dev)
    c.send(full[:600])
    t0 = time.monotonic()
    assert c.wait_closed(3) == []
    assert time.monotonic() - t0 < 2
    # the rest cannot be delivered any more
    with pytest.raises(OSError):
        for i in range(600, len(full), 8192):
            c.sock.sendall(full[i:i + 8192])
            time.sleep(0.01)
    c.close()
    hub.wait_log(r"first packet refused: packet too large")
    # A CONNECT just within the pre-CONNECT limit is fine.
    c = mw.RawClient.open(hub, dev)
    small = mw.encode_connect(dev.id, will=dict(topic=f"moat/{dev.id}/up/will",
                                                payload=b"w" * 900))
    assert len(small) <= 1024
    c.send(small)
    assert c.expect(mw.CONNACK).reason == 0
    c.close()
    assert_serving(hub, svc)


# ---- malformed input -----------------------------------------------------------------

def bad_utf8_topic_publish():
    body = struct.pack(">H", 2) + b"\xff\xfe" + b"\x00" + b"x"
    return mw.frame(0x30, body)


def hand_made(dev_id):
    """(name, connect_first, version, keepalive, bytes, allowed answers).
    Allowed answers: list of acceptable [(type, reason), ...] sequences the
    hub may send before closing."""
    up = f"moat/{dev_id}/up/x"
    no_answer = [[]]
    C = mw.CONNACK
    D = mw.DISCONNECT

    def connack(*codes):
        return [[(C, code)] for code in codes]

    def disc(*codes):
        return [[(D, code)] for code in codes]

    cases = [
        # before CONNECT
        ("publish before connect", False, 5, 60, mw.encode_publish(up, b"x"), no_answer),
        ("pingreq before connect", False, 5, 60, mw.PINGREQ_BYTES, no_answer),
        ("type 0 packet", False, 5, 60, b"\x00\x00", no_answer),
        ("connect with flags 0x1", False, 5, 60, b"\x11" + mw.encode_connect(dev_id)[1:],
         no_answer),
        ("connect 5-byte remaining length", False, 5, 60, b"\x10\xff\xff\xff\xff\x7f", no_answer),
        ("connect non-minimal remaining length", False, 5, 60,
         b"\x10\x80\x00", no_answer + connack(0x81)),
        ("connect reserved flag bit", False, 5, 60,
         mw.frame(0x10, mw.mqtt_str("MQTT") + b"\x05\x03\x00\x3c\x00" + mw.mqtt_str(dev_id)),
         connack(0x81)),
        ("connect will qos 3", False, 5, 60,
         mw.frame(0x10, mw.mqtt_str("MQTT") + b"\x05\x1e\x00\x3c\x00" + mw.mqtt_str(dev_id)
                  + b"\x00" + mw.mqtt_str(up) + mw.mqtt_str(b"w")), connack(0x81)),
        ("connect bad utf-8 client id", False, 5, 60,
         mw.frame(0x10, mw.mqtt_str("MQTT") + b"\x05\x02\x00\x3c\x00" + mw.mqtt_str(b"\xc3\x28")),
         connack(0x81)),
        ("connect with a PUBLISH-only property", False, 5, 60,
         mw.encode_connect(dev_id, props=[(mw.TOPIC_ALIAS, 1)]), connack(0x81, 0x82)),
        ("connect with trailing garbage", False, 5, 60,
         mw.frame(0x10, mw.encode_connect(dev_id)[2:] + b"zz"), connack(0x81)),
        ("connect bad protocol name", False, 5, 60,
         mw.frame(0x10, mw.mqtt_str("MQTX") + mw.encode_connect(dev_id)[8:]),
         connack(0x84) + no_answer),
        ("connect truncated", False, 5, 60, mw.encode_connect(dev_id)[:12], no_answer),
        ("connect 3.1.1 password without username", False, 4, 60,
         mw.frame(0x10, mw.mqtt_str("MQTT") + b"\x04\x42\x00\x3c" + mw.mqtt_str(dev_id)
                  + mw.mqtt_str("pw")), no_answer),
        ("connect 3.1.1 will qos without will flag", False, 4, 60,
         mw.frame(0x10, mw.mqtt_str("MQTT") + b"\x04\x0a\x00\x3c" + mw.mqtt_str(dev_id)),
         no_answer),
        # after a successful CONNECT (MQTT 5)
        ("second connect", True, 5, 60, mw.encode_connect(dev_id), disc(0x82)),
        ("publish qos 3", True, 5, 60, b"\x36" + mw.encode_publish(up, b"x", qos=1, pid=1)[1:],
         disc(0x81)),
        ("publish qos 0 with dup", True, 5, 60, b"\x38" + mw.encode_publish(up, b"x")[1:],
         disc(0x81, 0x82)),
        ("subscribe with flags 0", True, 5, 60,
         b"\x80" + mw.encode_subscribe(1, [(f"moat/{dev_id}/down/#", 1)])[1:], disc(0x81)),
        ("unsubscribe with flags 0", True, 5, 60,
         b"\xa0" + mw.encode_unsubscribe(1, [f"moat/{dev_id}/down/#"])[1:], disc(0x81)),
        ("pubrel with flags 0", True, 5, 60, b"\x60\x02\x00\x01", disc(0x81)),
        ("5-byte remaining length", True, 5, 60, b"\x30\xff\xff\xff\xff\x7f", disc(0x81)),
        ("bad utf-8 topic", True, 5, 60, bad_utf8_topic_publish(), disc(0x81)),
        ("nul in topic", True, 5, 60, mw.encode_publish(f"moat/{dev_id}/up/a\x00b", b"x"),
         disc(0x81)),
        ("wildcard in topic name", True, 5, 60, mw.encode_publish(f"moat/{dev_id}/up/#", b"x"),
         disc(0x82, 0x90)),
        ("publish qos 1 packet id 0", True, 5, 60, mw.encode_publish(up, b"x", qos=1, pid=0),
         disc(0x81, 0x82)),
        ("publish with subscription identifier", True, 5, 60,
         mw.encode_publish(up, b"x", props=[(mw.SUBSCRIPTION_ID, 3)]), disc(0x81, 0x82)),
        ("publish with session expiry property", True, 5, 60,
         mw.encode_publish(up, b"x", props=[(mw.SESSION_EXPIRY, 3)]), disc(0x81, 0x82)),
        ("publish with property length past the end", True, 5, 60,
         mw.frame(0x30, mw.mqtt_str(up) + b"\x20\x01"), disc(0x81)),
        ("topic alias 0", True, 5, 60, mw.encode_publish(up, b"x", props=[(mw.TOPIC_ALIAS, 0)]),
         disc(0x82, 0x94)),
        ("unknown topic alias, empty topic", True, 5, 60,
         mw.encode_publish("", b"x", props=[(mw.TOPIC_ALIAS, 5)]), disc(0x82, 0x94)),
        ("subscribe without filters", True, 5, 60, mw.encode_subscribe(1, []), disc(0x81, 0x82)),
        ("subscribe with reserved option bits", True, 5, 60,
         mw.encode_subscribe(1, [(f"moat/{dev_id}/down/#", 0xC1)]), disc(0x81)),
        ("auth without method", True, 5, 60, b"\xf0\x00", disc(0x81, 0x82)),
        ("disconnect with invalid reason", True, 5, 60, b"\xe0\x01\xff", no_answer + disc(0x81)),
        ("connack from client", True, 5, 60, b"\x20\x03\x00\x00\x00", disc(0x81, 0x82)),
        # truncated after CONNECT: the keep-alive (1 s) ends it
        ("truncated publish", True, 5, 1, mw.encode_publish(up, b"x" * 100)[:20], disc(0x8D)),
        # MQTT 3.1.1 has no DISCONNECT from the server: just closed
        ("3.1.1 publish qos 3", True, 4, 60,
         b"\x36" + mw.encode_publish(up, b"x", qos=1, pid=1, version=4)[1:], no_answer),
        ("3.1.1 second connect", True, 4, 60, mw.encode_connect(dev_id, version=4), no_answer),
        ("3.1.1 subscribe with v5 options", True, 4, 60,
         mw.encode_subscribe(1, [(f"moat/{dev_id}/down/#", 0x04)], version=4), no_answer),
        ("3.1.1 auth packet", True, 4, 60, b"\xf0\x00", no_answer),
    ]
    return cases


STREAM = "stream"  # a corpus stream replayed inside an accepted session


def corpus_cases():
    """Each corpus file twice: as the first bytes of a connection (where the
    hub must find a CONNECT), and replayed after a CONNECT the hub accepted,
    in the protocol version the fuzzer's choice byte names (5 if none), so
    the broker itself sees the decoded packets."""
    pre, post = [], []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/fuzz/corpus/fuzz_decode/*"))):
        raw = open(path, "rb").read()
        data = raw[1:]  # the first byte is the fuzzer's choice
        if not data:
            continue
        name = os.path.basename(path)[:12]
        version = {1: 4, 2: 5}.get(raw[0] & 3, 5)
        pre.append((f"corpus {name}", False, 5, 60, data, None))
        post.append((f"corpus {name} in session", True, version, 1,
                     data + mw.PINGREQ_BYTES, STREAM))
    return pre + post


def run_case(hub, who, cid, case):
    """Returns (packets received, closed by the hub, CONNACK accepted,
    PINGRESP seen)."""
    name, connect_first, version, keepalive, data, allowed = case
    c = mw.RawClient.open(hub, who, version=version)
    try:
        if connect_first:
            c.connect(cid, keepalive=keepalive)
        try:
            c.send(data)
        except OSError:
            pass  # the hub may close before it has read everything
        got = []
        accepted = False
        deadline = time.monotonic() + 4.0
        while True:
            try:
                p = c.recv(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                return got, False, accepted, False
            if p is None:
                return got, True, accepted, False
            got.append(p)
            if p.type == mw.PINGRESP and allowed == STREAM:
                return got, False, accepted, True  # the hub got through it all
            if p.type == mw.CONNACK and p.reason == 0:
                accepted = True
                # a CONNECT in the corpus that the hub accepts: a real
                # session, not an error; give the rest a moment, then stop
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        c.close()


def test_malformed_corpus(hub):
    """The codec's fuzz corpus and hand-made malformed packets, each on its own
    TLS connection: each refusal closes only that connection, the hub stays
    up, a connection opened before keeps working, and a control client is
    served afterwards."""
    svc = hub.add_service("svc", SVC_POLICY)
    fz = hub.add_service("fz", "allow connect\nallow all #\n")
    workers = 12
    devices = queue.Queue()
    dev_list = [hub.add_device() for _ in range(workers)]
    for d in dev_list:
        devices.put(d)
    hub.set_config("limits", "connect_timeout", "1")
    hub.set_config("limits", "handshakes_per_second_per_ip", "10000")
    hub.start()

    keeper = connected(hub, svc, "svc/keeper", keepalive=60)
    keeper.send_subscribe([("t/keeper", 1)], pid=1)
    assert keeper.expect(mw.SUBACK).reasons == [1]

    # Hand-made cases name the device they run as: built when run.
    hand = [("hand", i) for i in range(len(hand_made("x" * 26)))]
    corpus = corpus_cases()
    assert len(corpus) >= 80, "the fuzz corpus is missing"
    jobs = hand + [("corpus", i) for i in range(len(corpus))]

    def run(job):
        dev = devices.get()
        try:
            if job[0] == "hand":
                case = hand_made(dev.id)[job[1]]
                return (case,) + run_case(hub, dev, dev.id, case)
            case = corpus[job[1]]
            if case[5] == STREAM:  # a permissive service, so the broker routes it
                return (case,) + run_case(hub, fz, f"fz/c{job[1]}", case)
            return (case,) + run_case(hub, dev, dev.id, case)
        finally:
            devices.put(dev)

    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))
    for case, got, closed, accepted, pong in results:
        name, _, version, _, _, allowed = case
        seq = [(p.type, p.reason) for p in got]
        if allowed == STREAM:
            # Either the whole stream was taken (PINGRESP), or the hub closed
            # the connection, in MQTT 5 after a DISCONNECT with an error.
            if not (pong or closed):
                failures.append(f"{name}: neither answered nor closed (got {got})")
            discs = [p for p in got if p.type == mw.DISCONNECT]
            if discs and (discs[-1] is not got[-1] or discs[-1].reason < 0x80):
                failures.append(f"{name}: unexpected DISCONNECT in {got}")
            continue
        if allowed is not None:
            if not closed:
                failures.append(f"{name}: not closed by the hub (got {got})")
            elif seq not in [list(x) for x in allowed]:
                failures.append(f"{name}: got {got}, expected one of {allowed}")
            continue
        # corpus: anything but a refusal only after the hub accepted a CONNECT
        if accepted:
            continue
        if not closed:
            failures.append(f"{name}: not closed by the hub (got {got})")
        # a refusal: CONNACK with any failure code (3.1.1 codes are 1..5), or
        # an MQTT 5 DISCONNECT with an error reason
        bad = [p for p in got if not ((p.type == mw.CONNACK and p.reason != 0) or
                                      (p.type == mw.DISCONNECT and p.reason >= 0x80))]
        if bad:
            failures.append(f"{name}: unexpected answers {got}")
    assert not failures, "\n".join(failures)

    assert hub.alive()
    # the connection that was there all along is untouched
    keeper.pingreq()
    assert keeper.expect(mw.PINGRESP)
    keeper.publish("t/keeper", b"still", qos=1, pid=9)
    got = {p.type: p for p in (keeper.recv(), keeper.recv())}
    assert got[mw.PUBLISH].payload == b"still" and got[mw.PUBACK].packet_id == 9
    keeper.close()
    assert_serving(hub, svc)
    assert_serving(hub, svc, version=4)


# ---- slow clients --------------------------------------------------------------------

def test_handshake_timeout(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "handshake_timeout", "1")
    hub.start()
    silent = mw.tcp(hub.port, timeout=5)
    # a slow loris: the first bytes of a ClientHello, then nothing
    partial = mw.tcp(hub.port, timeout=5)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    t0 = time.monotonic()
    assert_serving(hub, svc)  # others are served meanwhile
    for s in (silent, partial):
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"", data
        s.close()
    took = time.monotonic() - t0
    assert 0.5 < took < 2.5, took
    hub.wait_log(r"no TLS handshake within 1 s: dropped")
    assert_serving(hub, svc)


def test_connect_timeout(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "connect_timeout", "1")
    hub.start()
    t0 = time.monotonic()
    silent = mw.RawClient.open(hub, svc)
    partial = mw.RawClient.open(hub, svc)
    partial.send(mw.encode_connect("svc/partial")[:6])  # a CONNECT that never ends
    assert_serving(hub, svc)
    for c in (silent, partial):
        assert c.wait_closed(3) == []
        c.close()
    took = time.monotonic() - t0
    assert 0.8 < took < 2.5, took
    hub.wait_log(r"no CONNECT within 1000 ms")
    assert_serving(hub, svc)


# ---- connection limits ----------------------------------------------------------------

def test_connections_per_address(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_connections_per_ip", "5")
    hub.start()
    held = [connected(hub, svc, f"svc/h{i}") for i in range(5)]
    assert refused(hub, svc)
    assert refused(hub, svc)
    hub.wait_log(r"127\.0\.0\.1: 5 connections from this address: refused")
    # another address is not affected
    assert_serving(hub, svc, source="127.0.0.2")
    # the held ones are untouched
    for c in held:
        c.pingreq()
        c.expect(mw.PINGRESP)
    # a slot frees when one goes
    held.pop().disconnect_and_wait()
    assert not refused(hub, svc)
    for c in held:
        c.disconnect_and_wait()
    assert_serving(hub, svc)


def test_handshake_rate_per_address(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "handshakes_per_second_per_ip", "3")
    hub.start()
    source = "127.0.0.3"  # a fresh bucket (hub.start's probe used 127.0.0.1's)
    socks = [mw.tcp(hub.port, source=source) for _ in range(10)]
    ok = 0
    ctx = hub.ssl_context(svc)
    for s in socks:
        try:
            t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
            c = mw.RawClient(t)
            c.connect(f"svc/b{ok}", timeout=3)
            ok += 1
            c.close()
        except (OSError, mw.ProtocolError):
            s.close()
    assert 3 <= ok <= 4, f"{ok} of 10 handshakes succeeded"
    hub.wait_log(r"127\.0\.0\.3: more than 3 handshakes per second: refused")
    assert_serving(hub, svc, source="127.0.0.2")
    # the bucket refills
    time.sleep(1.0)
    assert_serving(hub, svc, source=source)


def test_max_connections_total(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_connections", "3")
    hub.start()
    held = [connected(hub, svc, f"svc/h{i}", source=f"127.0.0.{i + 2}") for i in range(3)]
    assert refused(hub, svc)
    assert refused(hub, svc, source="127.0.0.9")
    hub.wait_log(r"3 connections is the limit: refused")
    for c in held:
        c.pingreq()
        c.expect(mw.PINGRESP)
    held.pop().disconnect_and_wait()
    assert not refused(hub, svc)
    for c in held:
        c.disconnect_and_wait()
    assert_serving(hub, svc)


# ---- per-session limits ---------------------------------------------------------------

def test_topic_length_and_levels(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_topic_length", "32")
    hub.set_config("limits", "max_topic_levels", "4")
    hub.start()
    c = connected(hub, svc, "svc/topics")
    long_ok = "t/" + "x" * 30        # 32 bytes
    long_bad = "t/" + "x" * 31       # 33 bytes
    deep_ok, deep_bad = "t/a/b/c", "t/a/b/c/d"
    for pid, (topic, want) in enumerate([(long_ok, (0x00, 0x10)), (long_bad, (0x90,)),
                                         (deep_ok, (0x00, 0x10)), (deep_bad, (0x90,))], 1):
        c.publish(topic, b"x", qos=1, pid=pid)
        ack = c.expect(mw.PUBACK)
        assert ack.packet_id == pid and ack.reason in want, (topic, ack)
    c.send_subscribe([(long_bad, 1), ("t/a/b/c/#", 1), ("t/" + "y" * 30, 1), ("t/a/b/#", 1)],
                     pid=10)
    assert c.expect(mw.SUBACK).reasons == [0x8F, 0x8F, 1, 1]
    # still connected and working
    c.publish("t/a/b/z", b"fine", qos=1, pid=11)
    got = {p.type: p for p in (c.recv(), c.recv())}
    assert got[mw.PUBLISH].payload == b"fine" and got[mw.PUBACK].reason == 0
    c.close()
    hub.wait_log(r"longer or deeper than the limit")
    # MQTT 3.1.1: SUBACK 0x80; a refused PUBLISH closes (no way to say no)
    c = connected(hub, svc, "svc/topics311", version=4)
    c.send_subscribe([(deep_bad, 1), (deep_ok, 1)], pid=1)
    assert c.expect(mw.SUBACK).reasons == [0x80, 1]
    c.publish(long_bad, b"x", qos=1, pid=2)
    assert c.wait_closed(3) == []
    c.close()
    assert_serving(hub, svc)


def test_max_subscriptions(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_subscriptions", "3")
    hub.start()
    c = connected(hub, svc, "svc/subs")
    for i in range(3):
        c.send_subscribe([(f"t/s{i}", 1)], pid=i + 1)
        assert c.expect(mw.SUBACK).reasons == [1]
    c.send_subscribe([("t/s3", 1)], pid=4)
    assert c.expect(mw.SUBACK).reasons == [0x97]
    # the same filter again replaces, it does not count twice
    c.send_subscribe([("t/s0", 0), ("t/s4", 0)], pid=5)
    assert c.expect(mw.SUBACK).reasons == [0, 0x97]
    hub.wait_log(r"3 subscriptions is the limit")
    # after an UNSUBSCRIBE there is room again
    c.send_unsubscribe(["t/s1"], pid=6)
    assert c.expect(mw.UNSUBACK).reasons == [0]
    c.send_subscribe([("t/s5", 1)], pid=7)
    assert c.expect(mw.SUBACK).reasons == [1]
    c.close()
    assert_serving(hub, svc)


def test_max_queued_offline(hub):
    """An offline session holds at most max_queued messages: the hub keeps the
    oldest and drops newer ones (logged)."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_queued", "5")
    hub.start()
    sub = connected(hub, svc, "svc/q", clean=True, expiry=300)
    sub.send_subscribe([("t/q", 1)], pid=1)
    assert sub.expect(mw.SUBACK).reasons == [1]
    sub.disconnect()
    assert sub.wait_closed(3) == []
    sub.close()

    pub = connected(hub, svc, "svc/pub")
    for i in range(10):
        pub.publish("t/q", str(i), qos=1, pid=i + 1)
    acks = [pub.expect(mw.PUBACK) for _ in range(10)]
    assert [a.packet_id for a in acks] == list(range(1, 11))
    hub.wait_log(r"queue of 'svc/q' full \(5 messages\): message to 't/q' dropped")
    # One line, with the count; more drops within 10 s are counted, not logged
    # (a line per drop would let overload turn into a logging storm).
    assert hub.log().count("queue of 'svc/q' full") == 1

    sub = mw.RawClient.open(hub, svc)
    assert sub.connect("svc/q", clean=False, expiry=300).session_present
    got = []
    for p in sub.quiet(0.6):
        assert p.type == mw.PUBLISH
        got.append(p.payload.decode())
        sub.ack(mw.PUBACK, p.packet_id)
    assert got == ["0", "1", "2", "3", "4"]
    # once drained, the queue takes messages again
    pub.publish("t/q", "10", qos=1, pid=11)
    assert pub.expect(mw.PUBACK).reason == 0
    assert sub.expect(mw.PUBLISH).payload == b"10"
    sub.close()
    pub.close()
    assert_serving(hub, svc)


def test_publish_rate_per_device(hub):
    dev = hub.add_device()
    svc = hub.add_service("svc", SVC_POLICY + "allow subscribe moat/+/up/#\n"
                                              "allow receive moat/+/up/#\n")
    hub.set_config("limits", "max_publish_rate", "5")
    hub.start()
    watch = connected(hub, svc, "svc/watch")
    watch.send_subscribe([("moat/+/up/#", 0)], pid=1)
    assert watch.expect(mw.SUBACK).reasons == [0]

    d = connected(hub, dev, dev.id)
    burst = b"".join(mw.encode_publish(f"moat/{dev.id}/up/r", str(i)) for i in range(50))
    d.send(burst)
    got = d.wait_closed(3)
    assert [(p.type, p.reason) for p in got] == [(mw.DISCONNECT, 0x96)]
    d.close()
    seen = watch.quiet(0.5)
    assert 5 <= len(seen) <= 6, f"{len(seen)} of the burst got through"
    hub.wait_log(r"publish rate above 5/s")

    # a service is not rate limited
    burst = b"".join(mw.encode_publish("t/rate", str(i), qos=1, pid=i + 1) for i in range(50))
    s = connected(hub, svc, "svc/fast")
    s.send_subscribe([("t/rate", 1)], pid=100)
    assert s.expect(mw.SUBACK).reasons == [1]
    s.send(burst)
    acks, msgs = 0, 0
    deadline = time.monotonic() + 5
    while (acks < 50 or msgs < 50) and time.monotonic() < deadline:
        p = s.recv(5)
        assert p is not None, "service disconnected"
        if p.type == mw.PUBACK:
            assert p.reason == 0
            acks += 1
        elif p.type == mw.PUBLISH:
            msgs += 1
            s.ack(mw.PUBACK, p.packet_id)
    assert (acks, msgs) == (50, 50)
    s.close()
    watch.close()
    # the device may come back and publish at a modest pace
    d = connected(hub, dev, dev.id)
    d.publish(f"moat/{dev.id}/up/r", "again", qos=1, pid=1)
    assert d.expect(mw.PUBACK).packet_id == 1
    d.close()
    assert_serving(hub, svc)


def test_max_inflight_qos2_inbound(hub):
    """max_inflight is the Receive Maximum the hub announces: a client with
    more unreleased QoS 2 messages than that is disconnected (0x93)."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.set_config("limits", "max_inflight", "2")
    hub.start()
    c = mw.RawClient.open(hub, svc)
    ack = c.connect("svc/q2")
    assert ack.prop(mw.RECEIVE_MAXIMUM) == 2, ack.props
    # within the window, releasing as it goes: any number is fine
    for pid in range(1, 6):
        c.publish("t/q2", b"x", qos=2, pid=pid)
        assert c.expect(mw.PUBREC).packet_id == pid
        c.ack(mw.PUBREL, pid)
        assert c.expect(mw.PUBCOMP).packet_id == pid
    # two unreleased: still fine; a third: too many
    for pid in (10, 11):
        c.publish("t/q2", b"x", qos=2, pid=pid)
        assert c.expect(mw.PUBREC).packet_id == pid
    c.publish("t/q2", b"x", qos=2, pid=12)
    assert [(p.type, p.reason) for p in c.wait_closed(3)] == [(mw.DISCONNECT, 0x93)]
    c.close()
    hub.wait_log(r"receive maximum exceeded")
    assert_serving(hub, svc)
