"""Black-box conformance of moatd for MQTT 5.0 features: message expiry,
topic aliases, subscription identifiers, no-local, shared subscriptions, flow
control (receive maximum), maximum packet size, request/response, user and
payload-format properties, reason codes.

Statements cited are from OASIS MQTT Version 5.0 (07 March 2019). Shared
helpers and the `env` fixture are in mqttwire.py; the 3.1.1-and-5.0 tests
are in test_hub_mqtt.py.
"""
import time

import paho.mqtt.client as mqtt

from mqttwire import (CONTENT_TYPE, CORRELATION_DATA, DISCONNECT, MAXIMUM_PACKET_SIZE,
                      MESSAGE_EXPIRY, PAYLOAD_FORMAT, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                      PUBREL, REASON_STRING, RECEIVE_MAXIMUM, REQUEST_PROBLEM_INFO,
                      RESPONSE_TOPIC, SESSION_EXPIRY,
                      SUBSCRIPTION_ID, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY,
                      PINGRESP, V311, barrier, paho_publish, paho_subscribe, sub_opts)
from mqttwire import env  # noqa: F401  (the fixture)


# ---- message expiry ----------------------------------------------------------------

def test_message_expiry(env):
    """A queued message whose Message Expiry Interval passes is not delivered;
    one still valid is delivered with the interval lowered by the time it
    waited; a live delivery carries it unchanged; a message without one gets
    none. Retained messages expire too.
    [MQTT-3.3.2-5], [MQTT-3.3.2-6], 3.3.2.3.3."""
    env.start()
    keep = [(SESSION_EXPIRY, 60)]
    off = env.raw("svc/off", clean=False, props=keep)
    off.subscribe([("t/me", 1)])
    off.disconnect()
    off.wait_closed()
    live = env.raw("svc/live")
    live.subscribe([("t/me", 1)])

    pub = env.raw("svc/pub")
    pub.publish_acked("t/me", b"short", qos=1, props=[(MESSAGE_EXPIRY, 1)])
    pub.publish_acked("t/me", b"long", qos=1, props=[(MESSAGE_EXPIRY, 30)])
    pub.publish_acked("t/me", b"forever", qos=1)
    pub.publish_acked("t/mer/a", b"r-short", qos=1, retain=True, props=[(MESSAGE_EXPIRY, 1)])
    pub.publish_acked("t/mer/b", b"r-long", qos=1, retain=True, props=[(MESSAGE_EXPIRY, 30)])
    t0 = time.monotonic()
    got = [live.receive() for _ in range(3)]
    assert [(p.payload, p.prop(MESSAGE_EXPIRY)) for p in got] == [
        (b"short", 1), (b"long", 30), (b"forever", None)]

    time.sleep(max(0.0, 1.25 - (time.monotonic() - t0)))
    off = env.raw("svc/off", clean=False, props=keep)
    assert off.connack.session_present == 1
    got = [off.receive(), off.receive()]
    assert [p.payload for p in got] == [b"long", b"forever"]
    assert 27 <= got[0].prop(MESSAGE_EXPIRY) <= 29, got[0]
    assert got[1].prop(MESSAGE_EXPIRY) is None
    barrier(pub, off, "t/me")

    late = env.raw("svc/late")
    late.subscribe([("t/mer/#", 1)])
    p = late.receive()
    assert (p.topic, p.payload, p.retain) == ("t/mer/b", b"r-long", 1)
    assert 27 <= p.prop(MESSAGE_EXPIRY) <= 29, p
    barrier(pub, late, "t/mer/x")


# ---- topic aliases -----------------------------------------------------------------

def test_topic_alias_client_to_server(env):
    """The client sets aliases up to the hub's Topic Alias Maximum (CONNACK),
    uses them with an empty topic, and remaps them.
    [MQTT-3.3.2-12], 3.3.2.3.4, 3.2.2.3.8."""
    env.start()
    sub = env.raw("svc/sub")
    sub.subscribe([("t/al/#", 1)])
    old = env.raw("svc/sub311", version=V311)
    old.subscribe([("t/al/#", 0)])
    c = env.raw("svc/al")
    top = c.connack.prop(TOPIC_ALIAS_MAXIMUM)
    assert top and top >= 2, c.connack

    c.publish("t/al/one", b"1", props=[(TOPIC_ALIAS, 1)])
    c.publish("", b"2", props=[(TOPIC_ALIAS, 1)])
    c.publish("t/al/max", b"3", props=[(TOPIC_ALIAS, top)])
    c.publish("", b"4", qos=1, pid=40, props=[(TOPIC_ALIAS, top)])
    ack = c.expect(PUBACK)
    assert (ack.packet_id, ack.reason) == (40, 0)
    c.publish("t/al/two", b"5", props=[(TOPIC_ALIAS, 1)])  # remap alias 1
    c.publish("", b"6", props=[(TOPIC_ALIAS, 1)])
    got = [sub.receive() for _ in range(6)]
    assert [(p.topic, p.payload) for p in got] == [
        ("t/al/one", b"1"), ("t/al/one", b"2"), ("t/al/max", b"3"), ("t/al/max", b"4"),
        ("t/al/two", b"5"), ("t/al/two", b"6")]
    assert all(p.prop(TOPIC_ALIAS) is None for p in got)  # sub asked for none
    assert [old.receive().topic for _ in range(6)] == [p.topic for p in got]  # MQTT 3.1.1


def test_topic_alias_errors(env):
    """An alias the client never set: DISCONNECT 0x82 (Protocol Error); one
    above the maximum: DISCONNECT 0x94 (Topic Alias invalid); 0: a protocol
    error too; aliases do not survive the connection.
    [MQTT-3.3.2-7], [MQTT-3.3.2-8], [MQTT-4.13.1-1], 3.3.2.3.4."""
    env.start()
    c = env.raw("svc/al")
    top = c.connack.prop(TOPIC_ALIAS_MAXIMUM)
    c.publish("", b"x", props=[(TOPIC_ALIAS, 1)])
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x82)]

    c = env.raw("svc/al")
    c.publish("t/al", b"x", props=[(TOPIC_ALIAS, top + 1)])
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x94)]

    c = env.raw("svc/al")
    c.publish("t/al", b"x", props=[(TOPIC_ALIAS, 0)])
    got = c.wait_closed()
    assert len(got) == 1 and got[0].type == DISCONNECT and got[0].reason in (0x82, 0x94)

    keep = [(SESSION_EXPIRY, 60)]
    c = env.raw("svc/al", clean=False, props=keep)
    c.publish("t/al", b"x", props=[(TOPIC_ALIAS, 1)])
    c.disconnect()
    c.wait_closed()
    c = env.raw("svc/al", clean=False, props=keep)
    assert c.connack.session_present == 1
    c.publish("", b"y", props=[(TOPIC_ALIAS, 1)])
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x82)]


class AliasResolver:
    """What a client does with the hub's topic aliases."""

    def __init__(self, maximum):
        self.maximum, self.map, self.used = maximum, {}, 0

    def topic(self, p):
        alias = p.prop(TOPIC_ALIAS)
        if alias is None:
            assert p.topic, p
            return p.topic
        assert 1 <= alias <= self.maximum, f"alias above the client's maximum: {p}"
        if p.topic:
            self.map[alias] = p.topic
            return p.topic
        assert alias in self.map, f"alias never set: {p}"
        self.used += 1
        return self.map[alias]


def test_topic_alias_server_to_client(env):
    """A subscriber that accepts 2 aliases gets aliases no higher than 2,
    repeated topics as an alias with an empty topic name, and fresh mappings
    on a new connection; a subscriber that accepts none gets none.
    [MQTT-3.1.2-26], [MQTT-3.1.2-27], [MQTT-3.3.2-7], [MQTT-3.3.2-8], [MQTT-3.3.2-11]."""
    env.start()
    s = env.raw("svc/sa", props=[(TOPIC_ALIAS_MAXIMUM, 2)])
    s.subscribe([("t/sa/#", 1)])
    plain = env.raw("svc/plain")
    plain.subscribe([("t/sa/#", 1)])
    pub = env.raw("svc/pub")
    seq = ["t/sa/a", "t/sa/a", "t/sa/b", "t/sa/c", "t/sa/b", "t/sa/a", "t/sa/c"]
    for i, topic in enumerate(seq):
        pub.publish_acked(topic, str(i).encode(), qos=1)
    res = AliasResolver(2)
    got = [s.receive() for _ in seq]
    assert [(res.topic(p), p.payload) for p in got] == [
        (t, str(i).encode()) for i, t in enumerate(seq)]
    assert got[1].topic == "" and got[1].prop(TOPIC_ALIAS) == got[0].prop(TOPIC_ALIAS)
    assert res.used >= 3
    plain_got = [plain.receive() for _ in seq]
    assert [p.topic for p in plain_got] == seq
    assert all(p.prop(TOPIC_ALIAS) is None for p in plain_got)

    s.disconnect()
    s = env.raw("svc/sa", props=[(TOPIC_ALIAS_MAXIMUM, 2)])
    s.subscribe([("t/sa/#", 1)])
    pub.publish_acked("t/sa/a", b"new-conn", qos=1)
    p = s.receive()
    assert (p.topic, p.payload) == ("t/sa/a", b"new-conn")  # not an old alias alone


# ---- subscription identifiers, no local, retain handling ---------------------------

def test_subscription_identifiers(env):
    """Deliveries carry the identifier of the matching subscription; with
    overlapping subscriptions one copy carries both; retained messages sent on
    subscribing carry it; subscribing again replaces it.
    [MQTT-3.3.4-2], [MQTT-3.3.4-3], [MQTT-3.3.4-4], [MQTT-3.8.4-3], 3.8.2.1.2."""
    env.start()
    pub = env.raw("svc/pub")
    pub.publish_acked("t/si/r", b"kept", qos=1, retain=True)
    keep = [(SESSION_EXPIRY, 60)]
    s = env.raw("svc/si", clean=False, props=keep)
    s.subscribe([("t/si/#", 1)], props=[(SUBSCRIPTION_ID, 5)])
    p = s.receive()
    assert (p.payload, p.retain, p.props_all(SUBSCRIPTION_ID)) == (b"kept", 1, [5])
    s.subscribe([("t/si/+/x", 2)], props=[(SUBSCRIPTION_ID, 268435455)])
    s.subscribe([("t/si/plain", 0)])

    pub.publish_acked("t/si/a/x", b"both", qos=2)
    p = s.receive()
    assert (p.payload, p.qos) == (b"both", 2)
    assert sorted(p.props_all(SUBSCRIPTION_ID)) == [5, 268435455]
    pub.publish_acked("t/si/b", b"one", qos=1)
    assert s.receive().props_all(SUBSCRIPTION_ID) == [5]
    pub.publish_acked("t/si/plain", b"two", qos=1)
    assert s.receive().props_all(SUBSCRIPTION_ID) == [5]  # t/si/plain has none

    s.subscribe([("t/si/#", 1)], props=[(SUBSCRIPTION_ID, 6)])
    assert s.receive().props_all(SUBSCRIPTION_ID) == [6]  # the retained again
    s.subscribe([("t/si/+/x", 2)])  # no identifier now
    pub.publish_acked("t/si/a/x", b"again", qos=1)
    p = s.receive()
    assert (p.payload, p.props_all(SUBSCRIPTION_ID)) == (b"again", [6])
    barrier(pub, s, "t/si/b")

    # Kept with the session, across a restart of the hub too.
    s.disconnect()
    s.wait_closed()
    pub.close()
    env.hub.restart()
    pub = env.raw("svc/pub")
    pub.publish_acked("t/si/a/x", b"stored", qos=1)
    s = env.raw("svc/si", clean=False, props=keep)
    assert s.connack.session_present == 1
    p = s.receive()
    assert (p.payload, p.props_all(SUBSCRIPTION_ID)) == (b"stored", [6])


def test_no_local(env):
    """No Local: the client's own messages are not sent back to it on that
    subscription; other clients' messages are, and another client id of the
    same service counts as another client. Without No Local they come back.
    [MQTT-3.8.3-3]."""
    env.start()
    c = env.raw("svc/nl")
    c.subscribe([("t/nl", sub_opts(1, no_local=True)), ("t/echo", 1)])
    other = env.raw("svc/other")
    c.publish_acked("t/nl", b"mine", qos=1)
    c.publish_acked("t/echo", b"echo", qos=1)
    p = c.receive()
    assert (p.topic, p.payload) == ("t/echo", b"echo")
    other.publish_acked("t/nl", b"theirs", qos=1)
    p = c.receive()
    assert (p.topic, p.payload) == ("t/nl", b"theirs")
    barrier(other, c, "t/echo")


def test_no_local_on_shared_subscription_is_a_protocol_error(env):
    """[MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error:
    DISCONNECT 0x82 and the connection is closed ([MQTT-4.13.1-1])."""
    env.start()
    c = env.raw("svc/nls")
    c.send_subscribe([("$share/g/t/x", sub_opts(1, no_local=True))])
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x82)]


def test_retain_handling(env):
    """Retain Handling 0: retained messages on every SUBSCRIBE (also when the
    subscription existed); 1: only when it is new; 2: never.
    [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11], [MQTT-3.8.4-4]."""
    env.start()
    pub = env.raw("svc/pub")
    pub.publish_acked("t/rh/a", b"r", qos=1, retain=True)
    s = env.raw("svc/rh")
    for _ in range(2):
        s.subscribe([("t/rh/#", sub_opts(1, rh=0))])
        p = s.receive()
        assert (p.topic, p.retain) == ("t/rh/a", 1)
    s.subscribe([("t/rh/+", sub_opts(1, rh=1))])
    p = s.receive()
    assert (p.topic, p.retain) == ("t/rh/a", 1)
    s.subscribe([("t/rh/+", sub_opts(1, rh=1))])
    s.subscribe([("t/rh/a", sub_opts(1, rh=2))])
    barrier(pub, s, "t/rh/zz")  # t/rh/zz matches t/rh/# and t/rh/+: one copy


def test_retain_as_published(env):
    """Retain As Published 1: forwarded with the RETAIN flag as published;
    0: RETAIN 0. [MQTT-3.3.1-12], [MQTT-3.3.1-13]."""
    env.start()
    s = env.raw("svc/rap")
    s.subscribe([("t/rap/keep", sub_opts(1, rap=True)), ("t/rap/drop", sub_opts(1))])
    pub = env.raw("svc/pub")
    pub.publish_acked("t/rap/keep", b"1", qos=1, retain=True)
    pub.publish_acked("t/rap/keep", b"2", qos=1, retain=False)
    pub.publish_acked("t/rap/drop", b"3", qos=1, retain=True)
    got = [s.receive() for _ in range(3)]
    assert [(p.payload, p.retain) for p in got] == [(b"1", 1), (b"2", 0), (b"3", 0)]


# ---- shared subscriptions ----------------------------------------------------------

def test_shared_subscriptions(env):
    """$share/g/filter: each message goes to exactly one member of the group,
    two online members split the load; another group gets its own copy at its
    granted QoS; a plain subscription gets every message; no retained
    messages on subscribing to a shared subscription.
    [MQTT-4.8.2-1], [MQTT-4.8.2-2], [MQTT-4.8.2-3], 4.8.2, 3.3.1.3."""
    env.start()
    pub = env.raw("svc/pub")
    pub.publish_acked("t/sh/r", b"retained", qos=1, retain=True)
    a, b, other, plain = (env.raw(f"svc/{n}") for n in ("a", "b", "o", "p"))
    assert a.subscribe([("$share/g/t/sh/#", 1)]).reasons == [1]
    assert b.subscribe([("$share/g/t/sh/#", 2)]).reasons == [2]
    assert other.subscribe([("$share/h/t/sh/+", 0)]).reasons == [0]
    assert plain.subscribe([("t/sh/+", 1)]).reasons == [1]
    assert plain.receive().payload == b"retained"
    bad = plain.subscribe([("$share/g+/t/sh", 1), ("$share//t/sh", 1), ("$share/g", 1)])
    assert all(r >= 0x80 for r in bad.reasons), bad

    n = 10
    for i in range(n):
        pub.publish_acked("t/sh/x", str(i).encode(), qos=1)
    assert [plain.receive().payload for _ in range(n)] == [str(i).encode() for i in range(n)]
    from_other = [other.receive() for _ in range(n)]
    assert [p.payload for p in from_other] == [str(i).encode() for i in range(n)]
    assert all(p.qos == 0 for p in from_other)
    got_a, got_b = [], []
    deadline = time.monotonic() + 5
    while len(got_a) + len(got_b) < n and time.monotonic() < deadline:
        for c, got in ((a, got_a), (b, got_b)):
            try:
                p = c.recv(0.05)
            except TimeoutError:
                continue
            if p is not None:
                assert p.type == PUBLISH and p.qos == 1 and p.retain == 0, p
                c.ack(PUBACK, p.packet_id)
                got.append(p.payload)
    everything = sorted(got_a + got_b, key=int)
    assert everything == [str(i).encode() for i in range(n)], (got_a, got_b)
    assert got_a and got_b and abs(len(got_a) - len(got_b)) <= 1, (got_a, got_b)
    a.nothing(0.1)
    b.nothing(0.1)


# ---- flow control and packet sizes --------------------------------------------------

def test_receive_maximum_limits_unacknowledged_deliveries(env):
    """A client with Receive Maximum 2 that does not acknowledge gets at most
    2 QoS 1 PUBLISHes in flight; each PUBACK lets exactly one more through;
    other packets (PINGRESP) are not held back.
    [MQTT-3.3.4-9], [MQTT-3.3.4-10], [MQTT-4.9.0-1], [MQTT-4.9.0-2], [MQTT-4.9.0-3]."""
    env.start()
    s = env.raw("svc/rm", props=[(RECEIVE_MAXIMUM, 2)])
    s.subscribe([("t/rm", 1)])
    pub = env.raw("svc/pub")
    for i in range(5):
        pub.publish_acked("t/rm", str(i).encode(), qos=1)
    first = [s.expect(PUBLISH), s.expect(PUBLISH)]
    assert [p.payload for p in first] == [b"0", b"1"]
    s.nothing(0.3)
    s.pingreq()
    assert s.expect(PINGRESP).type == PINGRESP
    s.ack(PUBACK, first[0].packet_id)
    p = s.expect(PUBLISH)
    assert p.payload == b"2"
    s.nothing(0.3)
    s.ack(PUBACK, first[1].packet_id)
    s.ack(PUBACK, p.packet_id)
    rest = [s.expect(PUBLISH), s.expect(PUBLISH)]
    assert [p.payload for p in rest] == [b"3", b"4"]
    for p in rest:
        s.ack(PUBACK, p.packet_id)
    barrier(pub, s, "t/rm")


def test_receive_maximum_of_the_hub(env):
    """The hub announces Receive Maximum (max_inflight); a client that has
    more QoS 2 PUBLISHes than that unacknowledged (no PUBREL) gets DISCONNECT
    0x93 (Receive Maximum exceeded). 3.3.4 / 3.2.2.3.3."""
    env.start(max_inflight=2)
    c = env.raw("svc/rx")
    assert c.connack.prop(RECEIVE_MAXIMUM) == 2
    for pid in (1, 2):
        c.publish("t/rx", b"x", qos=2, pid=pid)
        assert c.expect(PUBREC).packet_id == pid
    c.publish("t/rx", b"x", qos=2, pid=3)
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x93)]


def test_client_maximum_packet_size(env):
    """The hub never sends a packet larger than the client's Maximum Packet
    Size: such a message is dropped as if delivered (it does not use up the
    client's Receive Maximum), later ones still arrive.
    [MQTT-3.1.2-24], [MQTT-3.1.2-25]."""
    env.start()
    s = env.raw("svc/mps", props=[(MAXIMUM_PACKET_SIZE, 100), (RECEIVE_MAXIMUM, 1)])
    s.subscribe([("t/mps", 1)])
    pub = env.raw("svc/pub")
    pub.publish_acked("t/mps", b"x" * 200, qos=1)
    pub.publish_acked("t/mps", b"y" * 200, qos=0)
    pub.publish_acked("t/mps", b"small", qos=1)
    p = s.expect(PUBLISH)
    assert p.payload == b"small"
    assert len(p.body) + 2 <= 100
    s.ack(PUBACK, p.packet_id)
    barrier(pub, s, "t/mps")


def test_hub_maximum_packet_size(env):
    """The hub announces its Maximum Packet Size in CONNACK; a PUBLISH within
    it is accepted, a bigger one gets DISCONNECT 0x95 (Packet too large).
    [MQTT-3.2.2-15] (the client's duty the hub enforces), 3.2.2.3.6, 4.13."""
    env.start(max_packet_size=1024)
    c = env.raw("svc/big")
    assert c.connack.prop(MAXIMUM_PACKET_SIZE) == 1024
    # fixed header 3 + topic 2+5 + packet id 2 + properties 1 + payload
    ack = c.publish_acked("t/big", b"x" * (1024 - 13), qos=1)
    assert ack.reason in (0x00, 0x10)
    c.publish("t/big", b"x" * 1100, qos=1)
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x95)]


# ---- properties passed through ---------------------------------------------------------

def test_request_response_with_paho(env):
    """Response Topic and Correlation Data reach the responder unaltered, and
    its answer (published to the Response Topic with the same Correlation
    Data) reaches the requester. [MQTT-3.3.2-15], [MQTT-3.3.2-16], 4.10."""
    env.start()
    hub = env.hub
    requester = env.paho("svc/requester")
    responder = env.paho("svc/responder")
    paho_subscribe(requester, "t/rr/resp/requester", 1)
    paho_subscribe(responder, "t/rr/req", 1)
    corr = b"\x00\x01corr\xff"
    paho_publish(requester, "t/rr/req", b"what time is it", qos=1,
                 properties=hub.props("PUBLISH", ResponseTopic="t/rr/resp/requester",
                                      CorrelationData=corr))
    req = hub.wait_messages(responder, 1)[0]
    assert req.properties.ResponseTopic == "t/rr/resp/requester"
    assert req.properties.CorrelationData == corr
    paho_publish(responder, req.properties.ResponseTopic, b"noon", qos=1,
                 properties=hub.props("PUBLISH", CorrelationData=req.properties.CorrelationData))
    resp = hub.wait_messages(requester, 1)[0]
    assert (resp.topic, resp.payload, resp.properties.CorrelationData) == (
        "t/rr/resp/requester", b"noon", corr)


def test_user_properties_forwarded_in_order(env):
    """User Properties, names repeated and non-ASCII, arrive unaltered and in
    order, for a Paho and a raw subscriber. [MQTT-3.3.2-17], [MQTT-3.3.2-18]."""
    env.start()
    hub = env.hub
    raw = env.raw("svc/raw")
    raw.subscribe([("t/up", 1)])
    psub = env.paho("svc/psub")
    paho_subscribe(psub, "t/up", 1)
    pairs = [("b", "1"), ("a", "2"), ("b", "3"), ("a", "1"), ("ünï", "çødé"), ("", "")]
    paho_publish(env.paho("svc/ppub"), "t/up", b"x", qos=1,
                 properties=hub.props("PUBLISH", UserProperty=pairs))
    assert raw.receive().props_all(USER_PROPERTY) == pairs
    assert hub.wait_messages(psub, 1)[0].properties.UserProperty == pairs


def test_payload_format_and_content_type_forwarded(env):
    """Payload Format Indicator (1 and 0) and Content Type are forwarded
    unaltered. [MQTT-3.3.2-4], [MQTT-3.3.2-20]."""
    env.start()
    s = env.raw("svc/pf")
    s.subscribe([("t/pf", 1)])
    pub = env.raw("svc/pub")
    ct = "application/json; charset=utf-8"
    pub.publish_acked("t/pf", '{"ü": 1}'.encode(), qos=1,
                      props=[(PAYLOAD_FORMAT, 1), (CONTENT_TYPE, ct)])
    pub.publish_acked("t/pf", b"\xff\x00", qos=1, props=[(PAYLOAD_FORMAT, 0)])
    a, b = s.receive(), s.receive()
    assert (a.prop(PAYLOAD_FORMAT), a.prop(CONTENT_TYPE), a.payload) == (1, ct, '{"ü": 1}'.encode())
    assert (b.prop(PAYLOAD_FORMAT), b.prop(CONTENT_TYPE), b.payload) == (0, None, b"\xff\x00")
    # A retained message keeps them (and its user properties) for later subscribers.
    users = [("k", "v2"), ("k", "v1")]
    pub.publish_acked("t/pf/r", b"{}", qos=1, retain=True,
                      props=[(PAYLOAD_FORMAT, 1), (CONTENT_TYPE, ct)] + [(USER_PROPERTY, u) for u in users])
    late = env.raw("svc/late")
    late.subscribe([("t/pf/r", 1)])
    r = late.receive()
    assert (r.retain, r.prop(PAYLOAD_FORMAT), r.prop(CONTENT_TYPE)) == (1, 1, ct)
    assert r.props_all(USER_PROPERTY) == users


def test_invalid_utf8_with_payload_format_1(env):
    """Payload Format Indicator 1 with a payload that is not UTF-8: PUBACK /
    PUBREC 0x99 (Payload format invalid), nothing delivered; after a PUBREC of
    0x80 or more the packet id is free for a new message.
    3.3.2.3.2, [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-4.3.3-9]."""
    env.start()
    s = env.raw("svc/sub")
    s.subscribe([("t/u8", 2)])
    pub = env.raw("svc/pub")
    bad = [(PAYLOAD_FORMAT, 1)]
    pub.publish("t/u8", b"\xc3\x28", qos=1, pid=5, props=bad)
    ack = pub.expect(PUBACK)
    assert (ack.packet_id, ack.reason) == (5, 0x99)
    pub.publish("t/u8", b"ok\xed\xa0\x80", qos=2, pid=6, props=bad)  # a surrogate
    rec = pub.expect(PUBREC)
    assert (rec.packet_id, rec.reason) == (6, 0x99)
    pub.publish("t/u8", b"\xff", qos=0, props=bad)
    pub.publish("t/u8", "grüß".encode(), qos=2, pid=6, props=bad)
    rec = pub.expect(PUBREC)
    assert (rec.packet_id, rec.reason) == (6, 0)
    pub.ack(PUBREL, 6)
    assert pub.expect(PUBCOMP).reason == 0
    p = s.receive()
    assert (p.payload, p.prop(PAYLOAD_FORMAT)) == ("grüß".encode(), 1)
    barrier(pub, s, "t/u8")


def test_no_matching_subscribers_reason_code(env):
    """PUBACK / PUBREC 0x10 (No matching subscribers) when nobody subscribes,
    0x00 when someone does; the QoS 2 flow still completes. 3.4.2.1, 3.5.2.1,
    [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-4.3.3-4]."""
    env.start()
    pub = env.raw("svc/pub")
    assert pub.publish_acked("t/nobody", b"x", qos=1).reason == 0x10
    assert pub.publish_acked("t/nobody", b"x", qos=2).reason == 0x10
    s = env.raw("svc/sub")
    s.subscribe([("t/somebody", 0)])
    assert pub.publish_acked("t/somebody", b"x", qos=1).reason == 0x00
    assert pub.publish_acked("t/somebody", b"x", qos=2).reason == 0x00


def test_will_properties_forwarded(env):
    """The will message carries the will properties (payload format, content
    type, response topic, correlation data, user properties in order, message
    expiry). [MQTT-3.1.2-8], 3.1.3.2, [MQTT-3.3.2-4], [MQTT-3.3.2-15..18], [MQTT-3.3.2-20]."""
    env.start()
    s = env.raw("svc/sub")
    s.subscribe([("t/will/#", 1)])
    users = [("z", "1"), ("a", "2"), ("z", "3")]
    wprops = [(PAYLOAD_FORMAT, 1), (MESSAGE_EXPIRY, 60), (CONTENT_TYPE, "text/plain"),
              (RESPONSE_TOPIC, "t/will/reply"), (CORRELATION_DATA, b"\x01\x02")] + [
        (USER_PROPERTY, u) for u in users]
    w = env.raw("svc/w", will=dict(topic="t/will/p", payload="adieu", qos=1, props=wprops))
    w.abort()
    p = s.receive()
    assert (p.topic, p.payload) == ("t/will/p", b"adieu")
    assert p.prop(PAYLOAD_FORMAT) == 1
    assert p.prop(CONTENT_TYPE) == "text/plain"
    assert p.prop(RESPONSE_TOPIC) == "t/will/reply"
    assert p.prop(CORRELATION_DATA) == b"\x01\x02"
    assert p.props_all(USER_PROPERTY) == users
    assert 59 <= p.prop(MESSAGE_EXPIRY) <= 60


def test_session_expiry_on_disconnect_after_zero_is_a_protocol_error(env):
    """Session Expiry 0 at CONNECT and non-zero at DISCONNECT: Protocol Error,
    DISCONNECT 0x82 from the hub. 3.14.2.2.2, [MQTT-4.13.1-1]."""
    env.start()
    c = env.raw("svc/sx")
    c.disconnect(props=[(SESSION_EXPIRY, 30)])
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(DISCONNECT, 0x82)]


def test_paho_v5_connack_properties(env):
    """What a Paho MQTT 5 client learns at CONNACK: the hub's Receive
    Maximum, Maximum Packet Size and Topic Alias Maximum as configured, and no
    Maximum QoS (all QoS levels supported) or Retain Available 0.
    3.2.2.3, [MQTT-3.2.2-9]."""
    env.start(max_inflight=7, max_packet_size=4096, topic_alias_maximum=3)
    c = env.paho("svc/props", protocol=mqtt.MQTTv5)
    flags, rc, props = c.connack
    assert rc == 0
    assert props.ReceiveMaximum == 7
    assert props.MaximumPacketSize == 4096
    assert props.TopicAliasMaximum == 3
    assert not hasattr(props, "MaximumQoS")
    assert getattr(props, "RetainAvailable", 1) == 1


def test_resent_messages_respect_new_receive_maximum(env):
    """On resuming a session, the unacknowledged messages are resent (DUP 1,
    same packet ids), but never more in flight than the Receive Maximum of
    the new connection; each PUBACK lets the next one go.
    [MQTT-4.4.0-1], [MQTT-3.3.4-9], [MQTT-4.9.0-1], [MQTT-4.9.0-2]."""
    env.start()
    keep = [(SESSION_EXPIRY, 60)]
    s = env.raw("svc/rr", clean=False, props=keep + [(RECEIVE_MAXIMUM, 10)])
    s.subscribe([("t/rr", 1)])
    pub = env.raw("svc/pub")
    for i in range(4):
        pub.publish_acked("t/rr", str(i).encode(), qos=1)
    first = [s.expect(PUBLISH) for _ in range(4)]
    s.abort()
    s = env.raw("svc/rr", clean=False, props=keep + [(RECEIVE_MAXIMUM, 2)])
    assert s.connack.session_present == 1
    got = [s.expect(PUBLISH), s.expect(PUBLISH)]
    s.nothing(0.3)
    s.ack(PUBACK, got[0].packet_id)
    got.append(s.expect(PUBLISH))
    s.nothing(0.3)
    s.ack(PUBACK, got[1].packet_id)
    s.ack(PUBACK, got[2].packet_id)
    got.append(s.expect(PUBLISH))
    s.ack(PUBACK, got[3].packet_id)
    assert [(p.payload, p.packet_id, p.dup) for p in got] == [
        (p.payload, p.packet_id, 1) for p in first]
    barrier(pub, s, "t/rr")


def test_pubrel_for_unknown_packet_id(env):
    """A PUBREL for a packet id the hub does not hold is still answered with
    PUBCOMP, reason 0x92 (Packet Identifier not found). [MQTT-4.3.3-11], 3.7.2.1."""
    env.start()
    c = env.raw("svc/rel")
    c.ack(PUBREL, 999)
    comp = c.expect(PUBCOMP)
    assert (comp.packet_id, comp.reason) == (999, 0x92)


def test_qos2_in_flight_until_pubcomp(env):
    """With Receive Maximum 1, a QoS 2 delivery holds the quota until its
    PUBCOMP: the next message is not sent after PUBREC, only after PUBCOMP.
    [MQTT-3.3.4-9], [MQTT-4.9.0-2], [MQTT-4.3.3-4], [MQTT-4.3.3-5]."""
    env.start()
    s = env.raw("svc/q2", props=[(RECEIVE_MAXIMUM, 1)])
    s.subscribe([("t/q2", 2)])
    pub = env.raw("svc/pub")
    pub.publish_acked("t/q2", b"a", qos=2)
    pub.publish_acked("t/q2", b"b", qos=2)
    p = s.expect(PUBLISH)
    assert p.payload == b"a"
    s.ack(PUBREC, p.packet_id)
    assert s.expect(PUBREL).packet_id == p.packet_id
    s.nothing(0.3)
    s.ack(PUBCOMP, p.packet_id)
    assert s.receive().payload == b"b"


def test_negative_acknowledgement_ends_the_flow(env):
    """A PUBACK or PUBREC with a reason of 0x80 or more ends the delivery: no
    PUBREL, no resend on the resumed session, and the quota is free again.
    [MQTT-4.4.0-2], [MQTT-4.3.3-4], [MQTT-4.9.0-2]."""
    env.start()
    keep = [(SESSION_EXPIRY, 60)]
    s = env.raw("svc/neg", clean=False, props=keep + [(RECEIVE_MAXIMUM, 1)])
    s.subscribe([("t/neg", 2)])
    pub = env.raw("svc/pub")
    pub.publish_acked("t/neg", b"refused-1", qos=1)
    pub.publish_acked("t/neg", b"refused-2", qos=2)
    pub.publish_acked("t/neg", b"taken", qos=1)
    p = s.expect(PUBLISH)
    assert (p.payload, p.qos) == (b"refused-1", 1)
    s.ack(PUBACK, p.packet_id, reason=0x80)
    p = s.expect(PUBLISH)
    assert (p.payload, p.qos) == (b"refused-2", 2)
    s.ack(PUBREC, p.packet_id, reason=0x83)
    p = s.expect(PUBLISH)  # not a PUBREL
    assert p.payload == b"taken"
    s.abort()
    s = env.raw("svc/neg", clean=False, props=keep)
    assert s.connack.session_present == 1
    p = s.expect(PUBLISH)
    assert (p.payload, p.dup) == (b"taken", 1)
    s.ack(PUBACK, p.packet_id)
    barrier(pub, s, "t/neg")


def test_will_message_expiry_counts_from_publication(env):
    """The will's Message Expiry Interval is its lifetime from when the hub
    publishes it (3.1.3.2.4: "sent as the Publication Expiry Interval when the
    Server publishes the Will Message"), not from CONNECT: a client connected
    for longer than it still leaves its will. [MQTT-3.1.2-8], [MQTT-3.3.2-6]."""
    env.start()
    s = env.raw("svc/sub")
    s.subscribe([("t/will/#", 1)])
    w = env.raw("svc/w", will=dict(topic="t/will/e", payload=b"late", qos=1,
                                   props=[(MESSAGE_EXPIRY, 1)]))
    time.sleep(1.3)
    w.abort()
    p = s.receive()
    assert (p.topic, p.payload, p.prop(MESSAGE_EXPIRY)) == ("t/will/e", b"late", 1)


# ---- reason strings ----------------------------------------------------------------

def test_reason_strings(env):
    """A refusal says why in a Reason String: CONNACK, PUBACK, SUBACK and the
    hub's DISCONNECT. With Request Problem Information 0 the client gets none
    on PUBACK or SUBACK, but still on DISCONNECT; none makes a packet larger
    than the client's Maximum Packet Size.
    3.1.2.11.7, [MQTT-3.1.2-29], [MQTT-3.1.2-25], 3.4.2.2.2, 3.9.2.1.2, 3.14.2.2.3."""
    env.start()
    c = env.raw("someone-else")
    assert c.connack.reason == 0x85
    assert c.connack.prop(REASON_STRING) == "client identifier not valid for this identity"

    def refusals(**kw):
        r = env.raw("svc/why", **kw)
        ack = r.publish_acked("u/elsewhere", b"x", qos=1)
        assert ack.reason == 0x87, ack
        sub = r.subscribe([("u/#", 1), ("t/ok", 1)])
        assert list(sub.reasons) == [0x87, 1], sub
        r.publish("", b"y", props=[(TOPIC_ALIAS, 1)])  # an alias never set
        bye = r.wait_closed()
        assert [(p.type, p.reason) for p in bye] == [(DISCONNECT, 0x82)], bye
        return ack.prop(REASON_STRING), sub.prop(REASON_STRING), bye[0].prop(REASON_STRING)

    assert refusals() == ("not authorized by policy", "not authorized by policy",
                          "unknown topic alias")
    assert refusals(props=[(REQUEST_PROBLEM_INFO, 0)]) == (None, None, "unknown topic alias")
    assert refusals(props=[(MAXIMUM_PACKET_SIZE, 16)]) == (None, None, None)

    # What Paho shows its application.
    p = env.paho("not-svc", protocol=mqtt.MQTTv5)
    flags, rc, props = p.connack
    assert rc == 0x85, rc
    assert props.ReasonString == "client identifier not valid for this identity"
