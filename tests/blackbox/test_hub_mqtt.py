"""Black-box MQTT conformance of moatd: QoS flows, retained messages, wills,
sessions, keep alive, takeover and client identifiers, over mutual TLS, for
MQTT 3.1.1 and 5.0 (the MQTT 5-only features are in test_hub_mqtt5.py).

Each test names the OASIS normative statements it checks: [MQTT-x.y.z-n]
from MQTT Version 3.1.1 (tagged "3.1.1:") or MQTT Version 5.0 ("5.0:").
Real clients (Paho, mosquitto_pub/sub) where they can show the behaviour;
hand-made packets (mqttwire.RawClient) where the wire itself must be seen or a
client must misbehave.
"""
import signal
import struct
import time

import paho.mqtt.client as mqtt
import pytest

from mqttwire import (CONNACK, DISCONNECT, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                      PUBREL, V311, V5, ASSIGNED_CLIENT_ID, SESSION_EXPIRY,
                      WILL_DELAY, LineReader, barrier, frame, mqtt_str, paho_publish,
                      paho_subscribe)
from mqttwire import env  # noqa: F401  (the fixture)

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])
PAHO_VERSIONS = pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5],
                                        ids=["3.1.1", "5.0"])


def mosq_version(version):
    return "mqttv5" if version == V5 else "mqttv311"


# ---- QoS 0, 1, 2 ----------------------------------------------------------------

@VERSIONS
def test_qos_flows_on_the_wire(env, version):
    """Each QoS level end to end, both directions, as the packets show it.

    3.1.1: [MQTT-3.3.4-1] PUBACK for QoS 1, PUBREC for QoS 2, [MQTT-4.3.3-2]
    PUBCOMP answers PUBREL, [MQTT-2.3.1-6]/[MQTT-3.8.4-2] acknowledgements carry
    the request's packet id, [MQTT-3.3.1-2] DUP 0 for QoS 0, [MQTT-4.3.2-1]/
    [MQTT-4.3.3-1] first delivery with DUP 0 and a non-zero packet id,
    [MQTT-3.3.1-9] RETAIN 0 on an established subscription.
    5.0: [MQTT-3.3.4-1], [MQTT-2.2.1-4], [MQTT-2.2.1-5], [MQTT-4.3.1-1],
    [MQTT-4.3.2-2], [MQTT-4.3.3-2], [MQTT-4.3.3-4], [MQTT-4.3.3-8], [MQTT-4.3.3-11].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    assert sub.connack.reason == 0 and sub.connack.session_present == 0
    assert sub.subscribe([("t/q", 2)]).reasons == [2]
    pub = env.raw("svc/pub", version=version)

    pub.publish("t/q", b"zero", qos=0)
    p = sub.expect(PUBLISH)
    assert (p.topic, p.payload, p.qos, p.dup, p.retain) == ("t/q", b"zero", 0, 0, 0)

    pub.publish("t/q", b"one", qos=1, pid=10)
    ack = pub.expect(PUBACK)
    assert ack.packet_id == 10 and ack.reason == 0
    if version == V311:
        assert ack.body == b"\x00\x0a"  # exactly the packet id
    p = sub.expect(PUBLISH)
    assert (p.payload, p.qos, p.dup, p.retain) == (b"one", 1, 0, 0) and p.packet_id
    sub.ack(PUBACK, p.packet_id)

    pub.publish("t/q", b"two", qos=2, pid=11)
    rec = pub.expect(PUBREC)
    assert rec.packet_id == 11 and rec.reason == 0
    pub.ack(PUBREL, 11)
    comp = pub.expect(PUBCOMP)
    assert comp.packet_id == 11 and comp.reason == 0
    p = sub.expect(PUBLISH)
    assert (p.payload, p.qos, p.dup, p.retain) == (b"two", 2, 0, 0) and p.packet_id
    sub.ack(PUBREC, p.packet_id)
    rel = sub.expect(PUBREL)
    assert rel.packet_id == p.packet_id and rel.flags == 0x02  # [MQTT-3.6.1-1]
    sub.ack(PUBCOMP, p.packet_id)
    barrier(pub, sub, "t/q")
    pub.nothing(0.1)


@PAHO_VERSIONS
def test_paho_qos_levels_and_downgrade(env, protocol):
    """Paho subscribers at QoS 0, 1, 2 get each message at the minimum of its
    QoS and the granted QoS, once.

    3.1.1: [MQTT-3.8.4-5] one return code per filter, [MQTT-3.8.4-6] QoS is
    min(published, granted). 5.0: [MQTT-3.8.4-7], [MQTT-3.8.4-8], [MQTT-3.9.3-1].
    """
    env.start()
    subs = {}
    for q in (0, 1, 2):
        c = env.paho(f"svc/s{q}", protocol=protocol)
        assert paho_subscribe(c, "t/d", q) == [q]
        subs[q] = c
    pub = env.paho("svc/p", protocol=protocol)
    for pq in (0, 1, 2):
        paho_publish(pub, "t/d", f"m{pq}".encode(), qos=pq)
    for sq, c in subs.items():
        msgs = env.hub.wait_messages(c, 3)
        assert [(m.payload, m.qos) for m in msgs] == [
            (b"m0", 0), (b"m1", min(1, sq)), (b"m2", min(2, sq))]
    time.sleep(0.2)
    assert all(len(c.messages) == 3 for c in subs.values()), "a message came twice"


@VERSIONS
def test_mosquitto_clients_all_qos(env, version):
    """mosquitto_pub and mosquitto_sub over TLS at QoS 0, 1 and 2: each
    message arrives once, in order, at its QoS, RETAIN 0.

    3.1.1: [MQTT-3.3.4-1], [MQTT-3.8.4-6], [MQTT-4.6.0-5], [MQTT-4.6.0-6] (ordered).
    5.0: [MQTT-3.3.4-1], [MQTT-3.8.4-8], [MQTT-4.6.0-5], [MQTT-4.6.0-6].
    """
    env.start()
    hub = env.hub
    # A retained marker tells us when mosquitto_sub's subscription is live.
    r = hub.mosquitto_pub(env.svc, "t/m/ready", "ready", "-r", "-q", "1",
                          "-V", mosq_version(version), client_id="svc/marker")
    assert r.returncode == 0, r.stderr
    argv = ["mosquitto_sub"] + hub.tls_args(env.svc) + [
        "-i", "svc/msub", "-V", mosq_version(version), "-q", "2", "-t", "t/m/#",
        "-C", "4", "-W", "10", "-F", "%q %r %t %p"]
    proc = env.procs.start(argv)
    lines = LineReader(proc)
    assert lines.wait(1) == ["1 1 t/m/ready ready"]
    for q in (0, 1, 2):
        r = hub.mosquitto_pub(env.svc, "t/m/x", f"m{q}", "-q", str(q),
                              "-V", mosq_version(version), client_id="svc/mpub")
        assert r.returncode == 0, r.stderr
    assert lines.wait(4) == ["1 1 t/m/ready ready", "0 0 t/m/x m0", "1 0 t/m/x m1",
                             "2 0 t/m/x m2"]
    assert proc.wait(timeout=5) == 0


@VERSIONS
def test_qos2_resent_publish_before_pubrel_is_delivered_once(env, version):
    """A QoS 2 PUBLISH sent again (DUP=1) before PUBREL is acknowledged with
    PUBREC again and not delivered again; after PUBCOMP the same packet id is
    a new message.

    3.1.1: [MQTT-4.3.3-2] (receiver: PUBREC for every copy until PUBREL, no
    duplicate onward delivery; after PUBCOMP a new publication), [MQTT-3.3.1-3].
    5.0: [MQTT-4.3.3-10], [MQTT-4.3.3-11], [MQTT-4.3.3-12], [MQTT-3.3.1-3].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    sub.subscribe([("t/x2", 2)])
    pub = env.raw("svc/pub", version=version)

    pub.publish("t/x2", b"once", qos=2, pid=7)
    assert pub.expect(PUBREC).packet_id == 7
    for _ in range(2):
        pub.publish("t/x2", b"once", qos=2, pid=7, dup=True)
        assert pub.expect(PUBREC).packet_id == 7
    p = sub.receive()
    assert (p.payload, p.qos, p.dup) == (b"once", 2, 0)  # DUP not propagated
    barrier(pub, sub, "t/x2")

    pub.ack(PUBREL, 7)
    comp = pub.expect(PUBCOMP)
    assert comp.packet_id == 7 and comp.reason == 0
    barrier(pub, sub, "t/x2")

    pub.publish("t/x2", b"again", qos=2, pid=7)
    assert pub.expect(PUBREC).packet_id == 7
    assert sub.receive().payload == b"again"
    pub.ack(PUBREL, 7)
    assert pub.expect(PUBCOMP).packet_id == 7
    barrier(pub, sub, "t/x2")


@VERSIONS
def test_qos2_exactly_once_across_reconnect(env, version):
    """A publisher that lost its connection after PUBREC resends the PUBLISH
    with DUP=1 on its resumed session: the hub answers PUBREC and does not
    deliver it a second time.

    3.1.1: [MQTT-4.4.0-1], [MQTT-4.3.3-2], [MQTT-3.1.2-4]. 5.0: [MQTT-4.4.0-1],
    [MQTT-4.3.3-10], [MQTT-3.1.2-5].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    sub.subscribe([("t/xr", 2)])
    keep = [(SESSION_EXPIRY, 60)] if version == V5 else []
    pub = env.raw("svc/pub", version=version, clean=False, props=keep)
    pub.publish("t/xr", b"only-once", qos=2, pid=300)
    assert pub.expect(PUBREC).packet_id == 300
    pub.abort()
    assert sub.receive().payload == b"only-once"

    pub = env.raw("svc/pub", version=version, clean=False, props=keep)
    assert pub.connack.session_present == 1
    pub.publish("t/xr", b"only-once", qos=2, pid=300, dup=True)
    assert pub.expect(PUBREC).packet_id == 300
    pub.ack(PUBREL, 300)
    assert pub.expect(PUBCOMP).packet_id == 300
    barrier(pub, sub, "t/xr")


@VERSIONS
def test_overlapping_subscriptions_deliver_once_at_highest_qos(env, version):
    """Two of a client's filters match: one copy at the higher QoS.

    3.1.1: [MQTT-3.3.5-1]. 5.0: [MQTT-3.3.4-2].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    assert sub.subscribe([("t/ov/#", 0), ("t/ov/+", 2)]).reasons == [0, 2]
    pub = env.raw("svc/pub", version=version)
    pub.publish_acked("t/ov/a", b"x", qos=2)
    p = sub.receive()
    assert (p.topic, p.qos) == ("t/ov/a", 2)
    barrier(pub, sub, "t/ov/b")


@VERSIONS
def test_resubscribe_replaces_subscription(env, version):
    """The same filter subscribed again replaces the subscription: its new
    QoS applies and messages are not doubled.

    3.1.1: [MQTT-3.8.4-3]. 5.0: [MQTT-3.8.4-3].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    sub.subscribe([("t/rs", 0)])
    assert sub.subscribe([("t/rs", 1)]).reasons == [1]
    pub = env.raw("svc/pub", version=version)
    pub.publish_acked("t/rs", b"x", qos=1)
    p = sub.receive()
    assert (p.payload, p.qos) == (b"x", 1)
    barrier(pub, sub, "t/rs")


@VERSIONS
def test_suback_and_unsuback(env, version):
    """SUBACK: one code per filter in order, granted QoS or failure for a
    filter the policy does not allow; UNSUBACK even when nothing was
    subscribed (MQTT 5: 0x11 No subscription existed); unsubscribing stops
    delivery.

    3.1.1: [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-4], [MQTT-3.8.4-5]
    (0x80 for the refused filter), [MQTT-3.10.4-1], [MQTT-3.10.4-2],
    [MQTT-3.10.4-4], [MQTT-3.10.4-5], [MQTT-3.10.4-6].
    5.0: [MQTT-3.8.4-1], [MQTT-3.8.4-5], [MQTT-3.8.4-6], [MQTT-3.8.4-7],
    [MQTT-3.9.3-1], [MQTT-3.9.3-2], [MQTT-3.10.4-1], [MQTT-3.10.4-2],
    [MQTT-3.10.4-4], [MQTT-3.10.4-5], [MQTT-3.10.4-6], [MQTT-3.11.3-1], [MQTT-3.11.3-2].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    ack = sub.subscribe([("t/a", 0), ("t/b", 1), ("t/c", 2), ("secret/x", 1)])
    denied = 0x87 if version == V5 else 0x80
    assert ack.reasons == [0, 1, 2, denied]
    pub = env.raw("svc/pub", version=version)

    un = sub.unsubscribe(["t/a", "t/none", "t/c"])
    if version == V5:
        assert un.reasons == [0x00, 0x11, 0x00]
    else:
        assert un.body == struct.pack("!H", un.packet_id)  # no payload in 3.1.1
    for topic in ("t/a", "t/b", "t/c"):
        pub.publish_acked(topic, topic.encode(), qos=1)
    assert sub.receive().topic == "t/b"
    barrier(pub, sub, "t/b")


# ---- retained messages ------------------------------------------------------------

@VERSIONS
def test_retained_lifecycle(env, version):
    """Retained: stored with its QoS, sent to new subscriptions with RETAIN 1,
    replaced by the next retained message (also a QoS 0 one), not touched by a
    non-retained one, kept across a hub restart, and cleared by an empty
    retained message (which is itself delivered as normal).

    3.1.1: [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7], [MQTT-3.3.1-8],
    [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11], [MQTT-3.3.1-12].
    5.0: [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7], [MQTT-3.3.1-8],
    [MQTT-3.3.1-9], [MQTT-3.3.1-12], [MQTT-3.8.4-8].
    """
    env.start()
    pub = env.raw("svc/pub", version=version)
    pub.publish_acked("t/r", b"one", qos=1, retain=True)

    s1 = env.raw("svc/s1", version=version)
    s1.subscribe([("t/r", 2)])
    p = s1.receive()
    assert (p.topic, p.payload, p.retain, p.qos) == ("t/r", b"one", 1, 1)

    pub.publish_acked("t/r", b"two", qos=0, retain=True)
    p = s1.receive()
    assert (p.payload, p.retain, p.qos) == (b"two", 0, 0)  # established subscription
    pub.publish_acked("t/r", b"three", qos=1, retain=False)
    p = s1.receive()
    assert (p.payload, p.retain) == (b"three", 0)

    s2 = env.raw("svc/s2", version=version)
    s2.subscribe([("t/#", 0)])
    p = s2.receive()
    assert (p.topic, p.payload, p.retain, p.qos) == ("t/r", b"two", 1, 0)
    barrier(pub, s2, "t/x")

    # Stored: survives a restart of the hub.
    for c in (pub, s1, s2):
        c.close()
    env.hub.restart()
    s3 = env.raw("svc/s3", version=version)
    s3.subscribe([("t/r", 1)])
    p = s3.receive()
    assert (p.payload, p.retain, p.qos) == (b"two", 1, 0)  # its own QoS

    pub = env.raw("svc/pub", version=version)
    pub.publish_acked("t/r", b"", qos=0, retain=True)
    p = s3.receive()
    assert (p.topic, p.payload, p.retain) == ("t/r", b"", 0)

    s4 = env.raw("svc/s4", version=version)
    s4.subscribe([("t/r", 1), ("t/#", 1)])
    barrier(pub, s4, "t/x")


def test_retained_with_mosquitto_clients(env):
    """mosquitto_pub -r stores, mosquitto_sub sees the retain flag; -r with an
    empty message clears. 3.1.1: [MQTT-3.3.1-5], [MQTT-3.3.1-8], [MQTT-3.3.1-10]."""
    env.start()
    hub = env.hub
    r = hub.mosquitto_pub(env.svc, "t/mr", "kept", "-r", "-q", "2", client_id="svc/mp")
    assert r.returncode == 0, r.stderr
    out = hub.mosquitto_sub(env.svc, "t/mr", "-q", "2", "-F", "%r %q %p", count=1, wait=3,
                            client_id="svc/ms")
    assert out.stdout.splitlines() == ["1 2 kept"], out
    r = hub.mosquitto_pub(env.svc, "t/mr", "", "-r", client_id="svc/mp")
    assert r.returncode == 0, r.stderr
    # A new mosquitto_sub: the first message it prints must be a live one
    # (published until it arrives), not a retained one.
    argv = ["mosquitto_sub"] + hub.tls_args(env.svc) + [
        "-i", "svc/ms2", "-t", "t/mr", "-C", "1", "-W", "5", "-F", "%r %p"]
    proc = env.procs.start(argv)
    pub = env.raw("svc/live", version=V311)
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        pub.publish("t/mr", b"live")
        time.sleep(0.05)
    assert proc.wait(timeout=5) == 0
    assert proc.stdout.read().decode().splitlines() == ["0 live"]


# ---- wills ------------------------------------------------------------------------

WILL = dict(topic="t/will/w", payload=b"gone", qos=1)


@VERSIONS
def test_will_published_on_abrupt_disconnect(env, version):
    """The connection drops without DISCONNECT: the will is published, not
    retained, at its QoS.

    3.1.1: [MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.1.2-16].
    5.0: [MQTT-3.1.2-7], [MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.1.2-14].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    sub.subscribe([("t/will/#", 2)])
    w = env.raw("svc/w", version=version, will=WILL)
    w.abort()
    p = sub.receive()
    assert (p.topic, p.payload, p.qos, p.retain) == ("t/will/w", b"gone", 1, 0)
    pub = env.raw("svc/pub", version=version)
    barrier(pub, sub, "t/will/x")
    # Removed once published: a later subscriber does not get it.
    late = env.raw("svc/late", version=version)
    late.subscribe([("t/will/#", 2)])
    barrier(pub, late, "t/will/x")


@VERSIONS
def test_no_will_after_disconnect(env, version):
    """A DISCONNECT (MQTT 5: reason 0x00) deletes the will.

    3.1.1: [MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.14.4-3].
    5.0: [MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.14.4-3].
    """
    env.start()
    sub = env.raw("svc/sub", version=version)
    sub.subscribe([("t/will/#", 2)])
    w = env.raw("svc/w", version=version, will=WILL)
    w.disconnect()
    assert w.wait_closed() == []
    barrier(env.raw("svc/pub", version=version), sub, "t/will/x")


def test_will_published_on_disconnect_with_will_message_v5(env):
    """MQTT 5 DISCONNECT with reason 0x04 (Disconnect with Will Message)
    publishes the will. 5.0: [MQTT-3.1.2-8] (only reason 0x00 deletes it)."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", will=WILL)
    w.disconnect(reason=0x04)
    assert w.wait_closed() == []
    assert sub.receive().payload == b"gone"


@VERSIONS
def test_will_retain(env, version):
    """Will Retain 1: the will is published as a retained message.

    3.1.1: [MQTT-3.1.2-17]. 5.0: [MQTT-3.1.2-15].
    """
    env.start()
    w = env.raw("svc/w", version=version, will=dict(WILL, retain=True))
    w.abort()
    late = env.raw("svc/late", version=version)
    late.subscribe([("t/will/w", 1)])
    p = late.receive(timeout=3)
    assert (p.payload, p.retain, p.qos) == (b"gone", 1, 1)


@VERSIONS
def test_will_when_mosquitto_sub_is_killed(env, version):
    """A real client (mosquitto_sub --will-*) killed with SIGKILL: the hub
    publishes its will. 3.1.1: [MQTT-3.1.2-8]. 5.0: [MQTT-3.1.2-8]."""
    env.start()
    hub = env.hub
    watcher = env.paho("svc/watch", protocol=mqtt.MQTTv5)
    paho_subscribe(watcher, "t/will/#", 1)
    argv = ["mosquitto_sub"] + hub.tls_args(env.svc) + [
        "-i", "svc/victim", "-V", mosq_version(version), "-t", "t/nothing",
        "--will-topic", "t/will/m", "--will-payload", "bye", "--will-qos", "1"]
    proc = env.procs.start(argv)
    hub.wait_log(r"connected as 'svc/victim'")
    time.sleep(0.2)
    assert watcher.messages == []
    proc.send_signal(signal.SIGKILL)
    msgs = hub.wait_messages(watcher, 1)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("t/will/m", b"bye", 1)]


def test_will_delay_interval_v5(env):
    """Will Delay Interval 1 s: the will is published no earlier than 1 s
    after the connection drops. 5.0: [MQTT-3.1.2-8], 3.1.2.11.2/3.1.3.2.2."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", clean=False, props=[(SESSION_EXPIRY, 30)],
                will=dict(WILL, props=[(WILL_DELAY, 1)]))
    t0 = time.monotonic()
    w.abort()
    sub.nothing(0.7)
    p = sub.receive(timeout=3)
    assert p.payload == b"gone"
    assert time.monotonic() - t0 >= 0.95


def test_will_delay_cancelled_by_reconnect_v5(env):
    """The client comes back (Clean Start 0) within the will delay: no will.
    5.0: [MQTT-3.1.3-9], [MQTT-3.1.2-8]."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", clean=False, props=[(SESSION_EXPIRY, 30)],
                will=dict(WILL, props=[(WILL_DELAY, 1)]))
    w.abort()
    time.sleep(0.3)
    w2 = env.raw("svc/w", clean=False, props=[(SESSION_EXPIRY, 30)])
    assert w2.connack.session_present == 1
    sub.nothing(1.1)  # past the will delay
    w2.disconnect()
    w2.wait_closed()
    barrier(env.raw("svc/pub"), sub, "t/will/x")


def test_will_delay_ended_by_clean_start_v5(env):
    """Within the will delay the client comes back with Clean Start 1: that
    ends the old session, so its will goes out at once.
    5.0: [MQTT-3.1.2-4], [MQTT-3.1.2-8] ("... or the Session ends")."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", clean=False, props=[(SESSION_EXPIRY, 30)],
                will=dict(WILL, props=[(WILL_DELAY, 30)]))
    w.abort()
    w2 = env.raw("svc/w", clean=True, props=[(SESSION_EXPIRY, 30)])
    assert w2.connack.session_present == 0
    assert sub.receive(timeout=2).payload == b"gone"


def test_will_published_when_session_ends_before_delay_v5(env):
    """Session Expiry 1 s, Will Delay 30 s: the will goes when the session
    ends. 5.0: [MQTT-3.1.2-8] ("the Will Delay Interval has elapsed or the
    Session ends")."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", clean=False, props=[(SESSION_EXPIRY, 1)],
                will=dict(WILL, props=[(WILL_DELAY, 30)]))
    t0 = time.monotonic()
    w.abort()
    p = sub.receive(timeout=4)
    assert p.payload == b"gone"
    assert 0.9 <= time.monotonic() - t0 < 3.5


# ---- sessions ---------------------------------------------------------------------

def test_clean_session_311_with_paho(env):
    """MQTT 3.1.1 CleanSession 0: the session outlives the connection, keeps
    its subscription and queues QoS 1/2 messages (not QoS 0) while the client
    is away; CleanSession 1 discards it.

    3.1.1: [MQTT-3.1.2-4], [MQTT-3.1.2-5], [MQTT-3.1.2-6], [MQTT-3.2.2-1],
    [MQTT-3.2.2-2], [MQTT-3.2.2-3], [MQTT-3.8.4-6], [MQTT-4.6.0-6].
    """
    env.start()
    pub = env.paho("svc/pub", protocol=mqtt.MQTTv5)
    c = env.paho("svc/p311", protocol=mqtt.MQTTv311, clean=False)
    assert c.connack[0]["session present"] == 0
    assert paho_subscribe(c, "t/s311", 2) == [2]
    c.disconnect()
    c.loop_stop()

    paho_publish(pub, "t/s311", b"a", qos=1)
    paho_publish(pub, "t/s311", b"b", qos=2)
    paho_publish(pub, "t/s311", b"c", qos=0)

    c = env.paho("svc/p311", protocol=mqtt.MQTTv311, clean=False)
    assert c.connack[0]["session present"] == 1
    msgs = env.hub.wait_messages(c, 2)
    assert [(m.payload, m.qos) for m in msgs] == [(b"a", 1), (b"b", 2)]
    paho_publish(pub, "t/s311", b"live0", qos=0)  # subscription still there
    assert [m.payload for m in env.hub.wait_messages(c, 3)][2:] == [b"live0"]
    c.disconnect()
    c.loop_stop()

    c = env.paho("svc/p311", protocol=mqtt.MQTTv311, clean=True)
    assert c.connack[0]["session present"] == 0
    paho_subscribe(c, "t/probe", 1)
    paho_publish(pub, "t/s311", b"d", qos=1)
    paho_publish(pub, "t/probe", b"probe", qos=1)
    # the subscription went with the old session: only the probe arrives
    assert [m.payload for m in env.hub.wait_messages(c, 1)] == [b"probe"]
    c.disconnect()
    c.loop_stop()

    c = env.paho("svc/p311", protocol=mqtt.MQTTv311, clean=False)
    assert c.connack[0]["session present"] == 0  # a clean session ends with its connection


def test_session_resumed_v5_with_paho(env):
    """MQTT 5 Clean Start 0 with a Session Expiry Interval: the session and
    its subscriptions outlive the connection; QoS 1 and 2 messages are queued
    for it, QoS 0 are not.

    5.0: [MQTT-3.1.2-5], [MQTT-3.1.2-6], [MQTT-3.1.2-23], [MQTT-3.2.2-3],
    [MQTT-4.1.0-1], [MQTT-4.5.0-1].
    """
    env.start()
    hub = env.hub
    keep = hub.props("CONNECT", SessionExpiryInterval=60)
    pub = env.paho("svc/pub")
    c = env.paho("svc/p5", clean=False, properties=keep)
    assert c.connack[0]["session present"] == 0
    paho_subscribe(c, "t/s5", 2)
    c.disconnect()
    c.loop_stop()

    for q, payload in ((1, b"q1"), (0, b"q0"), (2, b"q2")):
        paho_publish(pub, "t/s5", payload, qos=q)

    c = env.paho("svc/p5", clean=False, properties=keep)
    assert c.connack[0]["session present"] == 1
    paho_publish(pub, "t/s5", b"live", qos=0)
    msgs = hub.wait_messages(c, 3)
    # (Paho hands a QoS 2 message over at PUBREL, so "live" may overtake q2.)
    assert sorted((m.payload, m.qos) for m in msgs) == [(b"live", 0), (b"q1", 1), (b"q2", 2)]
    c.disconnect()
    c.loop_stop()

    c = env.paho("svc/p5", clean=True, properties=keep)
    assert c.connack[0]["session present"] == 0  # [MQTT-3.1.2-4], [MQTT-3.2.2-2]
    paho_subscribe(c, "t/probe", 1)
    paho_publish(pub, "t/s5", b"after-clean", qos=1)
    paho_publish(pub, "t/probe", b"probe", qos=1)
    assert [m.payload for m in hub.wait_messages(c, 1)] == [b"probe"]


def test_session_without_expiry_ends_with_connection_v5(env):
    """MQTT 5, Clean Start 0 but no Session Expiry Interval: the session ends
    with the connection (3.1.2.11.2: absent means 0). 5.0: [MQTT-3.2.2-3]."""
    env.start()
    c = env.raw("svc/se0", clean=False)
    assert c.connack.session_present == 0
    c.subscribe([("t/se0", 1)])
    c.disconnect()
    c.wait_closed()
    c = env.raw("svc/se0", clean=False)
    assert c.connack.session_present == 0
    c.subscribe([("t/probe", 0)])
    pub = env.raw("svc/pub")
    pub.publish_acked("t/se0", b"x", qos=1)
    barrier(pub, c, "t/probe")


def test_session_expiry_elapses_v5(env):
    """A Session Expiry Interval above max_session_expiry (1 s) is lowered,
    and CONNACK says so; after it the session, its subscription and its queued
    message are gone. 5.0: [MQTT-4.1.0-2], [MQTT-3.1.2-5], [MQTT-3.1.2-6],
    3.2.2.3.2 (CONNACK Session Expiry Interval)."""
    env.start(max_session_expiry=1)
    keep = [(SESSION_EXPIRY, 60)]
    c = env.raw("svc/se1", clean=False, props=keep)
    assert c.connack.prop(SESSION_EXPIRY) == 1
    c.subscribe([("t/se1", 1)])
    c.disconnect()
    c.wait_closed()
    pub = env.raw("svc/pub")
    pub.publish_acked("t/se1", b"queued", qos=1)
    # Within the interval the session is there ...
    c = env.raw("svc/se1", clean=False, props=keep)
    assert c.connack.session_present == 1
    assert c.receive().payload == b"queued"
    c.disconnect()
    c.wait_closed()
    pub.publish_acked("t/se1", b"queued-2", qos=1)
    time.sleep(1.2)
    # ... after it, not.
    c = env.raw("svc/se1", clean=False, props=keep)
    assert c.connack.session_present == 0
    c.subscribe([("t/probe", 0)])
    pub.publish_acked("t/se1", b"late", qos=1)
    barrier(pub, c, "t/probe")


def test_disconnect_can_change_session_expiry_v5(env):
    """DISCONNECT with a Session Expiry Interval of 0 ends a session that was
    to be kept (3.14.2.2.2). 5.0: [MQTT-3.2.2-3] (no session: present 0)."""
    env.start()
    c = env.raw("svc/sd", clean=False, props=[(SESSION_EXPIRY, 60)])
    c.subscribe([("t/sd", 1)])
    c.disconnect(props=[(SESSION_EXPIRY, 0)])
    c.wait_closed()
    c = env.raw("svc/sd", clean=False, props=[(SESSION_EXPIRY, 60)])
    assert c.connack.session_present == 0


@VERSIONS
def test_unacknowledged_messages_resent_on_resume(env, version):
    """On resuming a session the hub resends unacknowledged QoS 1/2 PUBLISHes
    with DUP=1 and their original packet ids, and a PUBREL (not the PUBLISH)
    for a QoS 2 message already PUBRECed.

    3.1.1: [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-4.3.3-1] (no PUBLISH after PUBREL).
    5.0: [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-4.3.3-6].
    """
    env.start()
    keep = [(SESSION_EXPIRY, 60)] if version == V5 else []
    c = env.raw("svc/rs", version=version, clean=False, props=keep)
    c.subscribe([("t/rs/#", 2)])
    pub = env.raw("svc/pub", version=version)
    pub.publish_acked("t/rs/1", b"q1", qos=1)
    pub.publish_acked("t/rs/2", b"q2", qos=2)
    pub.publish_acked("t/rs/3", b"q2b", qos=2)
    p1 = c.expect(PUBLISH)
    p2 = c.expect(PUBLISH)
    p3 = c.expect(PUBLISH)
    assert [p.payload for p in (p1, p2, p3)] == [b"q1", b"q2", b"q2b"]
    c.ack(PUBREC, p3.packet_id)           # third: PUBREC sent, PUBREL arrives
    assert c.expect(PUBREL).packet_id == p3.packet_id
    c.abort()                             # nothing else acknowledged

    c = env.raw("svc/rs", version=version, clean=False, props=keep)
    assert c.connack.session_present == 1
    r1 = c.expect(PUBLISH)
    r2 = c.expect(PUBLISH)
    assert (r1.packet_id, r1.dup, r1.qos, r1.payload) == (p1.packet_id, 1, 1, b"q1")
    assert (r2.packet_id, r2.dup, r2.qos, r2.payload) == (p2.packet_id, 1, 2, b"q2")
    rel = c.expect(PUBREL)
    assert rel.packet_id == p3.packet_id
    c.ack(PUBACK, r1.packet_id)
    c.ack(PUBREC, r2.packet_id)
    assert c.expect(PUBREL).packet_id == r2.packet_id
    c.ack(PUBCOMP, r2.packet_id)
    c.ack(PUBCOMP, p3.packet_id)
    barrier(pub, c, "t/rs/x")


# ---- keep alive ---------------------------------------------------------------------

@VERSIONS
def test_keep_alive(env, version):
    """Keep Alive 1 s. A client that goes silent is closed after 1.5 s (not
    before), as if the network had failed, so its will goes out (MQTT 5 may
    first say why: DISCONNECT 0x8D, Keep Alive timeout). A client that sends
    PINGREQ gets PINGRESP each time and keeps its connection.

    3.1.1: [MQTT-3.1.2-24], [MQTT-3.1.2-8], [MQTT-3.12.4-1].
    5.0: [MQTT-3.1.2-22], [MQTT-3.2.2-22] (no Server Keep Alive: the client's
    value is used), [MQTT-3.1.2-8], [MQTT-3.12.4-1].
    """
    env.start()
    sub = env.raw("svc/sub", version=version, keepalive=0)
    sub.subscribe([("t/will/#", 1)])
    pinger = env.raw("svc/ping", version=version, keepalive=1)
    t0 = time.monotonic()
    silent = env.raw("svc/ka", version=version, keepalive=1, will=WILL)
    assert silent.connack.prop(0x13) is None
    got, closed_after = [], None
    while closed_after is None or time.monotonic() - t0 < 2.2:
        assert time.monotonic() - t0 < 4, "the silent client was never disconnected"
        pinger.pingreq()
        assert pinger.expect(PINGRESP, timeout=1).body == b""
        if closed_after is not None:
            time.sleep(0.35)
            continue
        try:
            p = silent.recv(0.35)
        except TimeoutError:
            continue
        if p is not None:
            got.append(p)
        elif silent.eof:
            closed_after = time.monotonic() - t0
    assert 1.45 <= closed_after < 2.6, closed_after
    if version == V5:
        assert [(p.type, p.reason) for p in got] in ([], [(DISCONNECT, 0x8D)])
    else:
        assert got == []
    assert sub.receive().payload == b"gone"
    assert not pinger.eof


def test_server_keep_alive_v5(env):
    """max_keep_alive = 1: a client asking for 0 (none) or more is told
    Server Keep Alive 1 in CONNACK and held to it; a client asking for no
    more gets no Server Keep Alive. 5.0: [MQTT-3.2.2-21], [MQTT-3.2.2-22],
    [MQTT-3.1.2-22]."""
    env.start(max_keep_alive=1)
    a = env.raw("svc/k60", keepalive=60)
    assert a.connack.prop(0x13) == 1
    b = env.raw("svc/k1", keepalive=1)
    assert b.connack.prop(0x13) is None
    t0 = time.monotonic()
    c = env.raw("svc/k0", keepalive=0)
    assert c.connack.prop(0x13) == 1
    got = c.wait_closed(timeout=4)
    assert 1.4 <= time.monotonic() - t0 < 2.8
    assert [(p.type, p.reason) for p in got] in ([], [(DISCONNECT, 0x8D)])


# ---- takeover ------------------------------------------------------------------------

def test_session_takeover_v5(env):
    """A second connection with the same client id takes the session over:
    the first gets DISCONNECT 0x8E and is closed; its will (delay 0) is
    published; subscriptions carry over with Clean Start 0.

    5.0: [MQTT-3.1.4-3], [MQTT-3.1.4-4], [MQTT-3.2.2-3], [MQTT-3.1.2-8].
    """
    env.start()
    watch = env.raw("svc/watch")
    watch.subscribe([("t/will/#", 1)])
    first = env.raw("svc/dup", clean=False, props=[(SESSION_EXPIRY, 60)], will=WILL)
    first.subscribe([("t/tk", 1)])
    second = env.raw("svc/dup", clean=False, props=[(SESSION_EXPIRY, 60)])
    assert second.connack.session_present == 1
    got = first.wait_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x8E)]
    assert watch.receive().payload == b"gone"
    env.raw("svc/pub").publish_acked("t/tk", b"to-second", qos=1)
    assert second.receive().payload == b"to-second"


def test_session_takeover_311_with_paho(env):
    """MQTT 3.1.1: the existing client is disconnected (the network
    connection closed, no packet) and the newcomer works.
    3.1.1: [MQTT-3.1.4-2], [MQTT-3.2.2-2]."""
    env.start()
    first = env.raw("svc/dup", version=V311, clean=False)
    first.subscribe([("t/tk", 1)])
    second = env.paho("svc/dup", protocol=mqtt.MQTTv311, clean=False)
    assert second.connack[0]["session present"] == 1
    assert first.wait_closed() == []
    paho_publish(env.paho("svc/pub"), "t/tk", b"hello", qos=1)
    assert [m.payload for m in env.hub.wait_messages(second, 1)] == [b"hello"]


# ---- client identifiers ---------------------------------------------------------------

def test_empty_client_id_device_gets_its_own_id_v5(hub, env):
    """A device connecting with an empty client id is given its device id
    (Assigned Client Identifier) and acts as that device: its own topics work.
    5.0: [MQTT-3.1.3-6], [MQTT-3.1.3-7]."""
    dev = hub.add_device()
    env.start()
    c = env.raw("", who=dev)
    assert c.connack.reason == 0
    assert c.connack.prop(ASSIGNED_CLIENT_ID) == dev.id
    assert c.subscribe([(f"moat/{dev.id}/down/#", 1)]).reasons == [1]
    assert c.publish_acked(f"moat/{dev.id}/up/x", b"hi", qos=1).reason < 0x80


def test_empty_client_id_service_is_unique_v5(env):
    """A service connecting with an empty client id gets an Assigned Client
    Identifier no other session uses, so it does not take over the service's
    live connection. 5.0: [MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.2.2-16]."""
    env.start()
    a = env.raw("svc")
    a.subscribe([("t/u", 1)])
    b = env.raw("")
    assert b.connack.reason == 0
    assigned = b.connack.prop(ASSIGNED_CLIENT_ID)
    assert assigned and assigned != "svc" and assigned.startswith("svc/")
    c = env.raw("")
    assert c.connack.prop(ASSIGNED_CLIENT_ID) not in (None, "svc", assigned)
    a.nothing(0.3)  # still connected: no takeover
    b.publish_acked("t/u", b"from-b", qos=1)
    assert a.receive().payload == b"from-b"


def test_empty_client_id_with_persistent_session_refused_311(env):
    """3.1.1: a zero-byte client id with CleanSession 0 gets CONNACK 0x02
    (identifier rejected) and the connection is closed. [MQTT-3.1.3-8]."""
    env.start()
    c = env.raw("", version=V311, clean=False, connect=False)
    c.send_connect("", clean=False)
    ack = c.expect(CONNACK)
    assert (ack.session_present, ack.reason) == (0, 0x02)
    assert c.wait_closed() == []


@VERSIONS
def test_client_id_of_another_identity_refused(env, version):
    """A client id that is not the certificate's identity is refused: CONNACK
    0x85 (3.1.1: 0x02 identifier rejected) and close.
    3.1.1: [MQTT-3.1.3-9], [MQTT-3.2.2-4], [MQTT-3.2.2-5].
    5.0: [MQTT-3.1.3-8], [MQTT-3.2.2-6], [MQTT-3.2.2-7]."""
    env.start()
    c = env.raw("other", version=version, connect=False)
    c.send_connect("other")
    ack = c.expect(CONNACK)
    assert (ack.session_present, ack.reason) == (0, 0x85 if version == V5 else 0x02)
    assert c.wait_closed() == []


@VERSIONS
def test_second_connect_is_a_protocol_error(env, version):
    """A second CONNECT on a connection: Protocol Error, the connection is
    closed (MQTT 5: DISCONNECT 0x82 first).
    3.1.1: [MQTT-3.1.0-2]. 5.0: [MQTT-3.1.0-2], [MQTT-4.13.1-1]."""
    env.start()
    c = env.raw("svc/twice", version=version)
    c.send_connect("svc/twice")
    expected = [(DISCONNECT, 0x82)] if version == V5 else []
    assert [(p.type, p.reason) for p in c.wait_closed()] == expected


@VERSIONS
def test_topic_wildcards(env, version):
    """"#" also matches the parent level and "+" an empty level; neither
    matches across levels it should not; matching is exact (no case folding).
    3.1.1: [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-4]? (no normalisation),
    [MQTT-3.3.2-3]? 5.0: [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-4], [MQTT-3.3.2-3]."""
    env.start()
    s = env.raw("svc/wc", version=version)
    s.subscribe([("t/w/#", 1), ("t/p/+/x", 1), ("t/c/Ab", 1)])
    pub = env.raw("svc/pub", version=version)
    for topic in ("t/w", "t/w/", "t/w/a/b/c", "t/p//x", "t/p/a/x", "t/p/a/b/x",
                  "t/p/a", "t/c/ab", "t/c/Ab", "t/wx"):
        pub.publish_acked(topic, topic.encode(), qos=1)
    pub.publish_acked("t/w/end", b"end", qos=1)
    got = []
    while not got or got[-1] != "t/w/end":
        got.append(s.receive().topic)
    assert got == ["t/w", "t/w/", "t/w/a/b/c", "t/p//x", "t/p/a/x", "t/c/Ab", "t/w/end"]


def test_dollar_topics_not_matched_by_leading_wildcards(hub, env):
    """Topics starting with $ are not matched by filters starting with a
    wildcard; a filter naming the $ level matches. 3.1.1 and 5.0: [MQTT-4.7.2-1]."""
    root = hub.add_service("root", "allow connect\nallow all #\nallow all $x/#\n")
    env.start()
    wild = env.raw("root/wild", who=root)
    assert wild.subscribe([("#", 1), ("+/a", 1)]).reasons == [1, 1]
    named = env.raw("root/named", who=root)
    named.subscribe([("$x/#", 1)])
    pub = env.raw("root/pub", who=root)
    pub.publish_acked("$x/a", b"d", qos=1)
    p = named.receive()
    assert (p.topic, p.payload) == ("$x/a", b"d")
    barrier(pub, wild, "x/a")


def _sub_body(version, flt, opts):
    props = b"\x00" if version == V5 else b""
    return struct.pack("!H", 1) + props + mqtt_str(flt) + bytes([opts])


def _pub_body(version, topic, pid=None):
    props = b"\x00" if version == V5 else b""
    return mqtt_str(topic) + (struct.pack("!H", pid) if pid is not None else b"") + props + b"x"


@VERSIONS
def test_malformed_and_invalid_packets_close_the_connection(env, version):
    """Packets the spec calls malformed or a protocol error close the
    connection; MQTT 5 gets a DISCONNECT with the reason first (0x81 Malformed
    Packet, 0x82 Protocol Error, 0x90 Topic Name invalid).

    3.1.1: [MQTT-3.8.1-1], [MQTT-3.3.1-4], [MQTT-3-8.3-4], [MQTT-3.3.2-2],
    [MQTT-1.5.3-1], [MQTT-1.5.3-2], [MQTT-4.7.3-1], [MQTT-2.3.1-1], [MQTT-3.8.3-3],
    [MQTT-3.10.3-2], [MQTT-4.8.0-1].
    5.0: [MQTT-3.8.1-1], [MQTT-3.3.1-4], [MQTT-3.8.3-5], 3.8.3.1 (QoS 3),
    [MQTT-3.3.2-2], [MQTT-1.5.4-1], [MQTT-1.5.4-2], 3.3.2.1 (empty topic, no
    alias), [MQTT-2.2.1-3], [MQTT-3.8.3-2], [MQTT-3.10.3-2], [MQTT-4.13.1-1].
    """
    v = version
    cases = [
        ("SUBSCRIBE fixed-header flags 0000", frame(0x80, _sub_body(v, "t/a", 1)), 0x81),
        ("PUBLISH QoS 3", frame(0x36, _pub_body(v, "t/a", 1)), 0x81),
        ("SUBSCRIBE reserved option bits", frame(0x82, _sub_body(v, "t/a", 0xC1 if v == V5 else 0x05)), 0x81),
        ("SUBSCRIBE QoS 3", frame(0x82, _sub_body(v, "t/a", 3)), 0x82),
        ("wildcard in a topic name", frame(0x30, _pub_body(v, "t/+")), 0x90),
        ("U+0000 in a topic name", frame(0x30, _pub_body(v, "t/\x00")), 0x81),
        ("ill-formed UTF-8 topic", frame(0x30, _pub_body(v, b"t/\xc3\x28")), 0x81),
        ("empty topic, no alias", frame(0x30, _pub_body(v, "")), 0x82),
        ("QoS 1 with packet id 0", frame(0x32, _pub_body(v, "t/a", 0)), 0x82),
        ("SUBSCRIBE without filters", frame(0x82, _sub_body(v, "", 0)[:2 + (v == V5)]), 0x82),
        ("UNSUBSCRIBE without filters", frame(0xA2, _sub_body(v, "", 0)[:2 + (v == V5)]), 0x82),
    ]
    env.start()
    for name, data, reason in cases:
        c = env.raw("svc/bad", version=v)
        c.send(data)
        got = [(p.type, p.reason) for p in c.wait_closed(timeout=3)]
        assert got == ([(DISCONNECT, reason)] if v == V5 else []), name
