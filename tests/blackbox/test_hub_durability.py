"""Durability of the hub across restarts and crashes.

The promise (docs/hub.md, "Durability"): retained messages, persistent
sessions with their subscriptions, queued messages and QoS 1/2 in-flight
state are in the workers' store files (DATA_DIR/hub.db, hub-K.db), and a
QoS 1/2 PUBLISH is acknowledged only
after the transaction that stored it has committed. So whatever a client saw
acknowledged must still be there after `kill -9`, not only after a clean stop.
"""
import os
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import mqttwire as mw

SVC_POLICY = "allow connect\nallow all t/#\n"


def stop(hub, how):
    if how == "kill9":
        hub.kill9()
    else:
        assert hub.stop() == 0


def v5_persistent(hub, expiry=300):
    return hub.props("CONNECT", SessionExpiryInterval=expiry)


def paho_persistent(hub, who, cid, version, expiry=300):
    """A subscriber with a persistent session (MQTT 5 session expiry, or
    3.1.1 clean session false), resumed if it exists."""
    if version == 5:
        return hub.paho(who, client_id=cid, clean=False, properties=v5_persistent(hub, expiry))
    return hub.paho(who, client_id=cid, protocol=mqtt.MQTTv311, clean=False)


def close_paho(c):
    c.disconnect()
    c.loop_stop()


def abandon_paho(c):
    """Stop a Paho client whose hub is gone. Its network thread may be in a
    one-second reconnect sleep: let it finish in the background."""
    c.disconnect()
    threading.Thread(target=c.loop_stop, daemon=True).start()


def wait_subscribed(c, filt, qos=1, timeout=5.0):
    done = []
    c.on_subscribe = lambda *a: done.append(a)
    r, mid = c.subscribe(filt, qos=qos)
    assert r == mqtt.MQTT_ERR_SUCCESS
    deadline = time.monotonic() + timeout
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done, f"no SUBACK for {filt}"
    granted = done[0][3]
    codes = [getattr(g, "value", g) for g in granted]
    assert all(code < 0x80 for code in codes), codes


def publish_all_acked(pub, topic, n, qos=1, retain=False, prefix=""):
    infos = [pub.publish(topic, f"{prefix}{i}".encode(), qos=qos, retain=retain)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published(), "a PUBLISH was never acknowledged"


# ---- retained ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_retained_survive_restart(hub, how):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/ret/a", 1, retain=True, prefix="a")
    publish_all_acked(pub, "t/ret/b", 1, retain=True, prefix="b")
    publish_all_acked(pub, "t/ret/c", 1, retain=True, prefix="c")
    # replace one, clear another: the store must hold the latest state
    publish_all_acked(pub, "t/ret/a", 1, retain=True, prefix="a-new")
    pub.publish("t/ret/b", b"", qos=1, retain=True).wait_for_publish(5)
    stop(hub, how)
    abandon_paho(pub)

    hub.start()
    sub = hub.paho(svc, client_id="svc/sub")
    wait_subscribed(sub, "t/ret/#")
    msgs = hub.wait_messages(sub, 2)
    time.sleep(0.2)  # nothing more may come
    got = sorted((m.topic, m.payload, m.retain) for m in sub.messages)
    assert got == [("t/ret/a", b"a-new0", True), ("t/ret/c", b"c0", True)], msgs
    close_paho(sub)


# ---- persistent sessions: the core promise ----------------------------------------

@pytest.mark.parametrize("version,how", [(5, "kill9"), (311, "kill9"), (5, "sigterm"),
                                         (311, "sigterm")])
def test_acknowledged_messages_survive(hub, version, how):
    """N QoS 1 messages published while the subscriber is offline, every
    PUBACK received, then the hub dies: all N are delivered, in order."""
    n = 200
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    sub = paho_persistent(hub, svc, "svc/sub", version)
    wait_subscribed(sub, "t/dur/#", qos=1)
    close_paho(sub)

    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/dur/x", n)
    stop(hub, how)  # kill -9 right after the last PUBACK
    abandon_paho(pub)

    hub.start()
    sub = paho_persistent(hub, svc, "svc/sub", version)
    flags = sub.connack[0]
    assert flags.get("session present") == 1, flags
    msgs = hub.wait_messages(sub, n, timeout=10)
    payloads = [m.payload.decode() for m in msgs]
    assert payloads == [str(i) for i in range(n)], (
        f"{len(payloads)} of {n} delivered; missing "
        f"{sorted(set(map(str, range(n))) - set(payloads), key=int)[:10]}")
    assert all(m.qos == 1 for m in msgs)

    # The subscription itself was restored, not only the queue.
    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/dur/y", 1, prefix="after")
    msgs = hub.wait_messages(sub, n + 1)
    assert msgs[-1].payload == b"after0" and len(msgs) == n + 1
    close_paho(pub)
    close_paho(sub)


def test_subscriptions_survive_kill9_with_nothing_queued(hub):
    """A persistent session with subscriptions and an empty queue: after a
    crash the subscriber resumes (session present) and its subscriptions
    route without subscribing again."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    sub = paho_persistent(hub, svc, "svc/sub", 5)
    wait_subscribed(sub, "t/a/+", qos=1)
    wait_subscribed(sub, "t/b/#", qos=0)
    close_paho(sub)
    hub.kill9()

    hub.start()
    sub = paho_persistent(hub, svc, "svc/sub", 5)
    assert sub.connack[0].get("session present") == 1
    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/a/1", 1, prefix="a")
    publish_all_acked(pub, "t/b/2/3", 1, prefix="b")
    publish_all_acked(pub, "t/c", 1, prefix="c")  # not subscribed
    hub.wait_messages(sub, 2)
    time.sleep(0.2)
    got = [(m.topic, m.payload, m.qos) for m in sub.messages]
    assert got == [("t/a/1", b"a0", 1), ("t/b/2/3", b"b0", 0)]
    close_paho(pub)
    close_paho(sub)


# ---- QoS 2 in flight across a crash ------------------------------------------------

def test_qos2_outbound_inflight_resent_after_kill9(hub):
    """Hub -> subscriber: a QoS 2 PUBLISH sent but not acknowledged is resent
    with DUP and the same packet id after a crash; one that got PUBREC has its
    PUBREL resent. Once completed, nothing is resent after another restart."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    sub = mw.RawClient.open(hub, svc)
    sub.connect("svc/q2", clean=True, expiry=300)
    sub.send_subscribe([("t/q2/#", 2)], pid=1)
    assert sub.expect(mw.SUBACK).reasons == [2]

    pub = mw.RawClient.open(hub, svc)
    pub.connect("svc/pub")
    for pid, payload in ((1, b"m1"), (2, b"m2")):
        pub.publish("t/q2/a", payload, qos=2, pid=pid)
        assert pub.expect(mw.PUBREC).packet_id == pid
        pub.ack(mw.PUBREL, pid)
        assert pub.expect(mw.PUBCOMP).packet_id == pid

    first = sub.expect(mw.PUBLISH)
    second = sub.expect(mw.PUBLISH)
    assert (first.payload, first.qos, first.dup) == (b"m1", 2, False)
    assert (second.payload, second.qos, second.dup) == (b"m2", 2, False)
    # m1: no acknowledgement at all. m2: PUBREC, PUBREL received, no PUBCOMP.
    sub.ack(mw.PUBREC, second.packet_id)
    assert sub.expect(mw.PUBREL).packet_id == second.packet_id
    # The PUBREL above already means the new state was committed; a ping
    # round trip makes sure nothing else from this client is pending.
    sub.pingreq()
    sub.expect(mw.PINGRESP)

    hub.kill9()
    sub.close()
    pub.close()
    hub.start()

    sub = mw.RawClient.open(hub, svc)
    ack = sub.connect("svc/q2", clean=False, expiry=300)
    assert ack.session_present
    again = sub.expect(mw.PUBLISH)
    assert (again.topic, again.payload, again.qos, again.dup, again.packet_id) == (
        "t/q2/a", b"m1", 2, True, first.packet_id)
    rel = sub.expect(mw.PUBREL)
    assert rel.packet_id == second.packet_id
    # complete both flows
    sub.ack(mw.PUBREC, first.packet_id)
    assert sub.expect(mw.PUBREL).packet_id == first.packet_id
    sub.ack(mw.PUBCOMP, first.packet_id)
    sub.ack(mw.PUBCOMP, second.packet_id)
    sub.pingreq()
    sub.expect(mw.PINGRESP)
    assert sub.quiet(0.3) == []

    hub.kill9()
    sub.close()
    hub.start()
    sub = mw.RawClient.open(hub, svc)
    assert sub.connect("svc/q2", clean=False, expiry=300).session_present
    assert sub.quiet(0.5) == [], "a completed QoS 2 flow was resent after a restart"
    sub.close()


def test_qos2_inbound_not_duplicated_after_kill9(hub):
    """Publisher -> hub: a QoS 2 PUBLISH that got PUBREC but no PUBREL yet.
    After a crash the publisher resends it (DUP); the hub must recognise the
    packet id from its store, answer PUBREC and not deliver it a second
    time (exactly once)."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    sub = mw.RawClient.open(hub, svc)
    sub.connect("svc/sub", clean=True, expiry=300)
    sub.send_subscribe([("t/x", 1)], pid=1)
    assert sub.expect(mw.SUBACK).reasons == [1]

    pub = mw.RawClient.open(hub, svc)
    pub.connect("svc/pub", clean=True, expiry=300)
    pub.publish("t/x", b"once", qos=2, pid=7)
    assert pub.expect(mw.PUBREC).packet_id == 7
    m = sub.expect(mw.PUBLISH)
    assert m.payload == b"once"
    sub.ack(mw.PUBACK, m.packet_id)
    sub.pingreq()
    sub.expect(mw.PINGRESP)

    hub.kill9()
    sub.close()
    pub.close()
    hub.start()

    sub = mw.RawClient.open(hub, svc)
    assert sub.connect("svc/sub", clean=False, expiry=300).session_present
    pub = mw.RawClient.open(hub, svc)
    assert pub.connect("svc/pub", clean=False, expiry=300).session_present
    pub.publish("t/x", b"once", qos=2, pid=7, dup=True)
    assert pub.expect(mw.PUBREC).packet_id == 7
    pub.ack(mw.PUBREL, 7)
    comp = pub.expect(mw.PUBCOMP)
    assert (comp.packet_id, comp.reason) == (7, 0)
    assert sub.quiet(0.4) == [], "QoS 2 message delivered twice across a crash"
    sub.close()
    pub.close()


# ---- expiry while the hub is down ---------------------------------------------------

def hub_db_client_ids(hub, table="sessions"):
    """Client ids of the rows of a table (sessions, wills) in every worker's
    store file."""
    found = set()
    for path in hub.store_paths():
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found |= {bytes(r[0]).decode() for r in db.execute(f"SELECT client_id FROM {table}")}
        finally:
            db.close()
    return found


def test_session_expired_while_down_is_gone(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    short = paho_persistent(hub, svc, "svc/short", 5, expiry=1)
    wait_subscribed(short, "t/exp/#", qos=1)
    close_paho(short)
    long = paho_persistent(hub, svc, "svc/long", 5, expiry=300)
    wait_subscribed(long, "t/exp/#", qos=1)
    close_paho(long)
    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/exp/1", 1, prefix="queued")
    close_paho(pub)
    assert hub.stop() == 0
    assert {"svc/short", "svc/long"} <= hub_db_client_ids(hub)
    time.sleep(1.3)  # the short session's expiry passes while the hub is down

    hub.start()
    short = paho_persistent(hub, svc, "svc/short", 5, expiry=1)
    assert short.connack[0].get("session present") == 0
    long = paho_persistent(hub, svc, "svc/long", 5, expiry=300)
    assert long.connack[0].get("session present") == 1
    assert [m.payload for m in hub.wait_messages(long, 1)] == [b"queued0"]
    pub = hub.paho(svc, client_id="svc/pub")
    publish_all_acked(pub, "t/exp/2", 1, prefix="new")
    assert [m.payload for m in hub.wait_messages(long, 2)] == [b"queued0", b"new0"]
    time.sleep(0.2)
    assert short.messages == [], "the expired session's queue or subscription survived"
    for c in (short, long, pub):
        close_paho(c)
    assert hub.stop() == 0
    # svc/short is back only as the new session it just made (expiry 1 s,
    # stored while it was connected); the old one's queue row is gone.
    db = sqlite3.connect(f"file:{hub.store_path('svc')}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT count(*) FROM queue WHERE client_id = ?",
                          (b"svc/short",)).fetchone()[0]
    finally:
        db.close()
    assert rows == 0


def test_session_online_at_a_crash_expires_after_restart(hub):
    """Sessions whose clients were connected when the hub died: the crash
    ended those connections, so each expiry interval runs from the restart.
    The short one must end then, not live on until its client returns."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    short = paho_persistent(hub, svc, "svc/short", 5, expiry=1)
    wait_subscribed(short, "t/exp/#", qos=1)
    long = paho_persistent(hub, svc, "svc/long", 5, expiry=300)
    wait_subscribed(long, "t/exp/#", qos=1)
    hub.kill9()  # both still connected
    abandon_paho(short)
    abandon_paho(long)

    hub.start()
    time.sleep(2.5)  # well past the short session's second, counted from the start
    short = paho_persistent(hub, svc, "svc/short", 5, expiry=1)
    assert short.connack[0].get("session present") == 0, \
        "a session online at the crash outlived its expiry interval after the restart"
    long = paho_persistent(hub, svc, "svc/long", 5, expiry=300)
    assert long.connack[0].get("session present") == 1
    for c in (short, long):
        close_paho(c)


# ---- the store cannot be written ---------------------------------------------------

def test_no_ack_when_the_store_is_locked(hub):
    """Another process holds the store's write lock (an operator's sqlite3 shell
    in a transaction) while a QoS 1 message for an offline persistent session
    comes in. The hub cannot store it, so it must not acknowledge it: the
    publisher is closed without a PUBACK and sends it again later."""
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    sub = mw.RawClient.open(hub, svc)
    sub.connect("svc/sub", clean=True, expiry=300)
    sub.send_subscribe([("t/lock", 1)], pid=1)
    assert sub.expect(mw.SUBACK).reasons == [1]
    sub.disconnect_and_wait()
    pub = mw.RawClient.open(hub, svc)
    pub.connect("svc/pub")

    # The file of the worker that owns 'svc' (the subscriber's session).
    lock = sqlite3.connect(hub.store_path("svc"), isolation_level=None, timeout=1)
    try:
        lock.execute("BEGIN IMMEDIATE")
        pub.publish("t/lock", b"m", qos=1, pid=1)
        # the hub waits for the lock (its 5 s busy timeout), then gives up
        hub.wait_log(r"store: cannot begin a transaction", timeout=8)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    got = pub.wait_closed(8)
    assert not [p for p in got if p.type == mw.PUBACK], \
        f"acknowledged a message it could not store: {got}"
    pub.close()

    # The lock is gone: the retry is stored and acknowledged, and survives.
    pub = mw.RawClient.open(hub, svc)
    pub.connect("svc/pub")
    pub.publish("t/lock", b"m", qos=1, pid=1, dup=True)
    assert pub.expect(mw.PUBACK).reason == 0
    hub.kill9()
    pub.close()
    hub.start()
    sub = mw.RawClient.open(hub, svc)
    assert sub.connect("svc/sub", clean=False, expiry=300).session_present
    m = sub.expect(mw.PUBLISH)
    assert m.payload == b"m"
    sub.close()


# ---- wills ------------------------------------------------------------------------

def test_wills_of_connections_open_at_a_crash_are_published_after_restart(hub):
    """A device's will (here the usual retained "offline" on its status topic)
    is not lost when the hub dies with the device connected: the restarted
    hub publishes it, once. A device that disconnected normally leaves none."""
    watcher_svc = hub.add_service("watcher", "allow connect\nallow all moat/#\n")
    crashed, left = hub.add_device(), hub.add_device()
    hub.start()
    devices = {}
    for dev in (crashed, left):
        c = mw.RawClient.open(hub, dev)
        c.connect(dev.id, will=dict(topic=f"moat/{dev.id}/up/status", payload=b"offline",
                                    qos=1, retain=True))
        devices[dev.id] = c
    devices[left.id].disconnect()
    devices[left.id].wait_closed()

    def retained_status():
        w = mw.RawClient.open(hub, watcher_svc)
        w.connect("watcher")
        w.subscribe([("moat/+/up/status", 1)])
        got = {p.topic: p.payload for p in w.quiet(1.0) if p.type == mw.PUBLISH}
        w.close()
        return got

    assert retained_status() == {}
    assert hub_db_client_ids(hub, "wills") == {crashed.id}, "the open connection's will is stored"
    hub.kill9()  # `crashed` is still connected
    devices[crashed.id].abort()

    hub.start()
    assert retained_status() == {f"moat/{crashed.id}/up/status": b"offline"}
    # Published: its row is gone, so another restart does not publish it again.
    assert hub_db_client_ids(hub, "wills") == set()
