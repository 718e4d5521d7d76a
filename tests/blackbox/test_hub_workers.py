"""Several workers: one event loop per thread, connections placed by principal.

docs/hub.md ("Several cores"): after the TLS handshake a connection moves to
the worker that owns its principal (FNV-1a of the id, modulo the worker
count); messages cross between workers in batches; worker 0 is the retained
authority; a PUBACK waits until every worker that took a copy has committed
it; each worker has its own store file. These tests run the hub with more
workers than the machine has cores (4), pick principals that land on chosen
workers, and check each promise across worker boundaries, including after
kill -9 and after a restart with a different worker count.
"""
import sqlite3

import pytest

import mqttwire as mw
from hubtools import owner_worker

POLICY = "allow connect\nallow all t/#\n"
WORKERS = 4


def services_on(hub, workers, wanted):
    """Add one service per entry of `wanted` (a worker index each), named so
    that it lands on that worker."""
    out = []
    n = 0
    for w in wanted:
        while True:
            name = f"svc{n}"
            n += 1
            if owner_worker(name, workers) == w:
                out.append(hub.add_service(name, POLICY))
                break
    return out


@pytest.fixture
def hub4(hub):
    hub.set_config("hub", "workers", str(WORKERS))
    return hub


def connect(hub, who, cid=None, clean=True, expiry=None):
    c = mw.RawClient.open(hub, who)
    c.connect(cid or who.id, clean=clean, expiry=expiry)
    return c


def test_hub_starts_the_configured_workers(hub4):
    hub4.start()
    assert hub4.workers() == WORKERS
    hub4.set_config("hub", "workers", "1")
    hub4.restart()
    assert hub4.workers() == 1


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_cross_workers(hub4, qos):
    pub_svc, sub_svc = services_on(hub4, WORKERS, [1, 2])
    hub4.start()
    sub = connect(hub4, sub_svc)
    sub.send_subscribe([("t/x/#", 2)], pid=1)
    assert sub.expect(mw.SUBACK).reasons == [2]
    pub = connect(hub4, pub_svc)
    for i in range(20):
        pub.publish(f"t/x/{i}", b"m%d" % i, qos=qos, pid=i + 1 if qos else None)
        if qos == 1:
            assert pub.expect(mw.PUBACK).reason == 0x00  # a subscriber exists, elsewhere
        elif qos == 2:
            assert pub.expect(mw.PUBREC).reason == 0x00
            pub.ack(mw.PUBREL, i + 1)
            pub.expect(mw.PUBCOMP)
    got = []
    while len(got) < 20:
        p = sub.recv()
        assert p is not None, "the hub closed the subscriber"
        if p.type == mw.PUBREL:
            sub.ack(mw.PUBCOMP, p.packet_id)
            continue
        assert p.type == mw.PUBLISH, p
        got.append(p.payload)
        if p.qos == 1:
            sub.ack(mw.PUBACK, p.packet_id)
        elif p.qos == 2:
            sub.ack(mw.PUBREC, p.packet_id)
    assert got == [b"m%d" % i for i in range(20)]  # in order across the boundary
    sub.close()
    pub.close()


def test_no_matching_subscribers_is_known_across_workers(hub4):
    """0x10 only when no worker has a subscriber: the answer comes back with
    the other workers' tickets."""
    pub_svc, sub_svc = services_on(hub4, WORKERS, [3, 0])
    hub4.start()
    pub = connect(hub4, pub_svc)
    pub.publish("t/none", b"x", qos=1, pid=1)
    assert pub.expect(mw.PUBACK).reason == 0x10
    sub = connect(hub4, sub_svc)
    sub.send_subscribe([("t/none", 1)], pid=1)
    sub.expect(mw.SUBACK)
    pub.publish("t/none", b"x", qos=1, pid=2)
    assert pub.expect(mw.PUBACK).reason == 0x00
    sub.close()
    pub.close()


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_acknowledged_means_stored_on_the_other_worker(hub4, how):
    """The persistent session is on another worker than the publisher: every
    message PUBACKed must survive kill -9, so that worker must have
    committed it before the PUBACK left."""
    pub_svc, sub_svc = services_on(hub4, WORKERS, [1, 3])
    hub4.start()
    sub = connect(hub4, sub_svc, clean=True, expiry=600)
    sub.send_subscribe([("t/d/#", 1)], pid=1)
    sub.expect(mw.SUBACK)
    sub.disconnect_and_wait()
    pub = connect(hub4, pub_svc)
    n = 200
    for i in range(n):
        pub.publish(f"t/d/{i}", b"%d" % i, qos=1, pid=i + 1)
    acked = {pub.expect(mw.PUBACK).packet_id for _ in range(n)}
    assert acked == set(range(1, n + 1))
    if how == "kill9":
        hub4.kill9()
    else:
        assert hub4.stop() == 0
    pub.close()
    # The rows are in the subscriber's worker's file, not the publisher's.
    db = sqlite3.connect(f"file:{hub4.store_path(sub_svc.id, WORKERS)}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == n
    finally:
        db.close()
    hub4.start()
    sub = connect(hub4, sub_svc, clean=False, expiry=600)
    got = []
    for _ in range(n):
        p = sub.expect(mw.PUBLISH)
        got.append(int(p.payload))
        sub.ack(mw.PUBACK, p.packet_id)
    assert got == list(range(n))
    sub.close()


def test_retained_messages_are_the_same_on_every_worker(hub4):
    a, b, c = services_on(hub4, WORKERS, [2, 0, 3])
    hub4.start()
    pa = connect(hub4, a)
    pa.publish("t/r/1", b"one", qos=1, pid=1, retain=True)
    pa.expect(mw.PUBACK)
    # Set on worker 2, seen from worker 0 and worker 3 (and 2 itself).
    for who in (a, b, c):
        s = connect(hub4, who, cid=f"{who.id}/r")
        s.send_subscribe([("t/r/#", 1)], pid=1)
        s.expect(mw.SUBACK)
        p = s.expect(mw.PUBLISH)
        assert (p.topic, p.payload, p.retain) == ("t/r/1", b"one", True)
        s.close()
    # Replaced from worker 3, then survives a kill -9 (worker 0 stored it).
    pc = connect(hub4, c)
    pc.publish("t/r/1", b"two", qos=1, pid=1, retain=True)
    pc.expect(mw.PUBACK)
    pc.close()
    pa.close()
    hub4.kill9()
    hub4.start()
    for who in (a, c):
        s = connect(hub4, who, cid=f"{who.id}/r2")
        s.send_subscribe([("t/r/#", 1)], pid=1)
        s.expect(mw.SUBACK)
        assert s.expect(mw.PUBLISH).payload == b"two"
        s.close()
    # Cleared from worker 2: gone everywhere.
    pa = connect(hub4, a)
    pa.publish("t/r/1", b"", qos=1, pid=2, retain=True)
    pa.expect(mw.PUBACK)
    pa.close()
    for who in (b, c):
        s = connect(hub4, who, cid=f"{who.id}/r3")
        s.send_subscribe([("t/r/#", 1)], pid=1)
        s.expect(mw.SUBACK)
        assert s.quiet(0.5) == [], "a cleared retained message came back"
        s.close()


def test_shared_subscription_spanning_workers_delivers_each_message_once(hub4):
    m1, m2, pub_svc = services_on(hub4, WORKERS, [1, 2, 3])
    hub4.start()
    members = []
    for who in (m1, m2):
        s = connect(hub4, who)
        s.send_subscribe([("$share/g/t/s/#", 1)], pid=1)
        s.expect(mw.SUBACK)
        members.append(s)
    pub = connect(hub4, pub_svc)
    n = 60
    for i in range(n):
        pub.publish(f"t/s/{i}", b"%d" % i, qos=1, pid=i + 1)
        assert pub.expect(mw.PUBACK).reason == 0x00
    got = []
    for s in members:
        mine = []
        for p in s.quiet(1.5):
            if p.type == mw.PUBLISH:
                mine.append(int(p.payload))
                s.ack(mw.PUBACK, p.packet_id)
        got.append(mine)
    assert sorted(got[0] + got[1]) == list(range(n)), "each message to exactly one member"
    assert got[0] and got[1], "both workers' members served some"
    for s in members + [pub]:
        s.close()


def test_shared_member_ending_hands_its_messages_to_a_member_on_another_worker(hub4):
    """A member's session ends with messages it never acknowledged: the
    member on the other worker gets them (MQTT 5 4.8.2, a SHOULD). The one it
    acknowledged is not sent again."""
    m1, m2, pub_svc = services_on(hub4, WORKERS, [1, 2, 3])
    hub4.start()
    ending = connect(hub4, m1)
    ending.send_subscribe([("$share/g/t/s/#", 1)], pid=1)
    ending.expect(mw.SUBACK)
    pub = connect(hub4, pub_svc)
    for i in range(3):
        pub.publish(f"t/s/{i}", b"%d" % i, qos=1, pid=i + 1)
        assert pub.expect(mw.PUBACK).reason == 0x00
    got = [ending.expect(mw.PUBLISH) for _ in range(3)]
    assert [p.payload for p in got] == [b"0", b"1", b"2"]
    ending.ack(mw.PUBACK, got[1].packet_id)
    other = connect(hub4, m2)
    other.send_subscribe([("$share/g/t/s/#", 1)], pid=1)
    other.expect(mw.SUBACK)
    ending.pingreq()  # answered after the PUBACK of "1" was taken in
    ending.expect(mw.PINGRESP)
    ending.abort()  # a clean session: it ends with the connection
    taken = sorted(p.payload for p in other.quiet(1.5) if p.type == mw.PUBLISH)
    assert taken == [b"0", b"2"], taken
    for c in (other, pub):
        c.close()


def test_sessions_follow_their_owner_when_the_worker_count_changes(hub4):
    subs = services_on(hub4, WORKERS, [0, 1, 2, 3])
    pub_svc = subs[0]
    hub4.start()
    for who in subs:
        s = connect(hub4, who, cid=f"{who.id}/q", clean=True, expiry=600)
        s.send_subscribe([("t/m/#", 1)], pid=1)
        s.expect(mw.SUBACK)
        s.disconnect_and_wait()
    pub = connect(hub4, pub_svc)
    for i in range(5):
        pub.publish(f"t/m/{i}", b"%d" % i, qos=1, pid=i + 1)
        pub.expect(mw.PUBACK)
    pub.close()
    assert hub4.stop() == 0
    for workers in (1, 3):
        hub4.set_config("hub", "workers", str(workers))
        hub4.start()
        assert hub4.workers() == workers
        for who in subs:
            s = connect(hub4, who, cid=f"{who.id}/q", clean=False, expiry=600)
            if workers == 1:
                # Every queued message is still there, on the new owner.
                got = []
                for _ in range(5):
                    p = s.expect(mw.PUBLISH)
                    got.append(int(p.payload))
                    s.ack(mw.PUBACK, p.packet_id)
                assert got == list(range(5))
            s.disconnect_and_wait()
        if workers == 1:
            # Queue acknowledged; publish again for the next round.
            pub = connect(hub4, pub_svc)
            pub.publish("t/m/x", b"again", qos=1, pid=1)
            pub.expect(mw.PUBACK)
            pub.close()
        else:
            pass
        assert hub4.stop() == 0
    # Under 3 workers each session was moved again and still has "again".
    hub4.start()
    for who in subs:
        s = connect(hub4, who, cid=f"{who.id}/q", clean=False, expiry=600)
        assert s.expect(mw.PUBLISH).payload == b"again"
        s.close()
    assert "moved to the store of their worker" in hub4.log()


def test_puback_waits_for_the_other_workers_commit(hub4):
    """The barrier itself, made visible: the worker holding the persistent
    session cannot commit (its store file is write-locked by another
    process), so the publisher's worker must not acknowledge. Without the
    barrier the PUBACK would leave at once, and a crash would then lose an
    acknowledged message. When the lock outlasts the store's busy timeout,
    the message is lost on that worker and the publisher is closed
    unacknowledged, so that it publishes again."""
    pub_svc, sub_svc = services_on(hub4, WORKERS, [1, 2])
    hub4.start()
    sub = connect(hub4, sub_svc, clean=True, expiry=600)
    sub.send_subscribe([("t/b/#", 1)], pid=1)
    sub.expect(mw.SUBACK)
    sub.disconnect_and_wait()
    pub = connect(hub4, pub_svc)
    lock = sqlite3.connect(hub4.store_path(sub_svc.id, WORKERS), isolation_level=None, timeout=1)
    try:
        lock.execute("BEGIN IMMEDIATE")
        pub.publish("t/b/1", b"held", qos=1, pid=1)
        assert pub.quiet(1.5) == [], "acknowledged before the other worker stored it"
    finally:
        lock.execute("ROLLBACK")
    assert pub.expect(mw.PUBACK, timeout=8).packet_id == 1  # stored now, then acknowledged

    try:
        lock.execute("BEGIN IMMEDIATE")
        pub.publish("t/b/2", b"lost", qos=1, pid=2)
        hub4.wait_log(r"store: cannot begin a transaction", timeout=9)
        got = pub.wait_closed(8)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert not [p for p in got if p.type == mw.PUBACK], f"acknowledged a lost message: {got}"
    pub.close()
    hub4.kill9()
    hub4.start()
    sub = connect(hub4, sub_svc, clean=False, expiry=600)
    assert sub.expect(mw.PUBLISH).payload == b"held"
    assert [p for p in sub.quiet(0.5) if p.type == mw.PUBLISH] == []
    sub.close()
