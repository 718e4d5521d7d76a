"""The hub keeps what devices publish (issue 6, docs/telemetry.md).

Real devices (certificates from moatctl, raw MQTT over mutual TLS) publish
under moat/{id}/up/...; `moatctl telemetry` reads the store back. What is
checked: plain payloads and SDK envelopes (docs/sdk-wire.md) are stored
with their streams, sequence numbers and device times; duplicates by
sequence number are dropped; cover records and padding leave nothing; an
envelope that does not decode is refused (PUBACK 0x99), not stored; a
service's publish is not a device reading; every reading the hub
acknowledged survives kill -9; the database files hold no plaintext; the
telemetry store can be switched off.
"""
import glob
import json
import struct

import pytest

import mqttwire as mw

MAGIC = b"\x00mtb"


def record(stream, payload, device_time=0):
    s = stream.encode()
    return bytes([len(s)]) + s + struct.pack(">QH", device_time, len(payload)) + payload


def batch(entries, pad_to=0):
    """entries: (seq, stream, payload, device_time)."""
    body = MAGIC + bytes([1, 1]) + struct.pack(">H", len(entries))
    for seq, stream, payload, dt in entries:
        body += struct.pack(">Q", seq) + record(stream, payload, dt)
    return body + b"\x00" * max(0, pad_to - len(body))


def cover(size):
    return MAGIC + bytes([1, 2, 0, 0]) + b"\x00" * (size - 8)


def readings(hub, dev, *extra):
    r = hub.moatctl("telemetry", dev.id, "--format", "json", *extra)
    return json.loads(r.stdout)


def device_client(hub, dev):
    c = mw.RawClient.open(hub, dev)
    c.connect(dev.id)
    return c


def test_plain_readings_are_stored_and_queried_back(hub):
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    for i, (stream, value) in enumerate([("temp", b"21.5"), ("temp", b"21.7"), ("door", b"open")]):
        c.publish(f"moat/{dev.id}/up/{stream}", value, qos=1, pid=i + 1)
        assert c.expect(mw.PUBACK).reason in (0x00, 0x10)
    c.close()
    got = readings(hub, dev)
    assert [(r["stream"], r["payload"]) for r in got] == \
        [("temp", "21.5"), ("temp", "21.7"), ("door", "open")]
    assert all(r["seq"] is None for r in got)
    assert [r["payload"] for r in readings(hub, dev, "--stream", "door")] == ["open"]


def test_envelopes_are_unpacked_and_duplicates_dropped(hub):
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    t = 1700000000123
    first = batch([(1, "temp", b"20.0", t), (2, "hum", b"40", t + 1)], pad_to=256)
    again = batch([(2, "hum", b"40", t + 1), (3, "temp", b"20.5", 0)], pad_to=256)
    for pid, payload in enumerate([first, again, first, cover(256)], start=1):
        c.publish(f"moat/{dev.id}/up/_shaped", payload, qos=1, pid=pid)
        assert c.expect(mw.PUBACK).reason in (0x00, 0x10)
    c.close()
    got = readings(hub, dev)
    assert [(r["seq"], r["stream"], r["payload"]) for r in got] == \
        [(1, "temp", "20.0"), (2, "hum", "40"), (3, "temp", "20.5")]
    assert got[0]["device_time_ms"] == t and got[2]["device_time_ms"] is None


@pytest.mark.parametrize("bad", [
    MAGIC,                                           # truncated header
    MAGIC + bytes([9, 1, 0, 1]),                     # unknown version
    batch([(5, "temp", b"1", 0), (4, "temp", b"2", 0)]),  # sequence numbers go down
    batch([(1, "temp", b"1", 0)]) + b"\x00\x01",     # padding that is not zeros
])
def test_an_envelope_that_does_not_decode_is_refused(hub, bad):
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    c.publish(f"moat/{dev.id}/up/_shaped", bad, qos=1, pid=1)
    assert c.expect(mw.PUBACK).reason == 0x99
    c.close()
    assert readings(hub, dev) == []


def test_only_a_devices_own_up_topics_are_readings(hub):
    dev = hub.add_device()
    svc = hub.add_service("ops", "allow connect\nallow all moat/#\n")
    hub.start()
    s = mw.RawClient.open(hub, svc)
    s.connect("ops")
    s.publish(f"moat/{dev.id}/up/temp", b"forged", qos=1, pid=1)
    s.expect(mw.PUBACK)
    s.close()
    c = device_client(hub, dev)
    c.publish(f"moat/{dev.id}/down/x", b"not up", qos=1, pid=1)
    c.expect(mw.PUBACK)  # refused by policy (0x87) or not: either way not stored
    c.close()
    assert readings(hub, dev) == []


def test_acknowledged_readings_survive_kill9(hub):
    """Every reading the hub acknowledged is in the store after kill -9: the
    PUBACK waits for the telemetry writer's commit."""
    hub.set_config("limits", "max_publish_rate", "0")  # a burst, on purpose
    devs = [hub.add_device() for _ in range(3)]
    hub.start()
    clients = [device_client(hub, d) for d in devs]
    n = 150
    for i in range(n):
        for d, c in zip(devs, clients):
            c.publish(f"moat/{d.id}/up/count", b"%d" % i, qos=1, pid=i + 1)
    acked = []
    for c in clients:
        acked.append(sorted(c.expect(mw.PUBACK).packet_id for _ in range(n)))
    hub.kill9()
    for c in clients:
        c.close()
    for d, pids in zip(devs, acked):
        stored = [int(r["payload"]) for r in readings(hub, d, "--limit", "1000")]
        assert stored == list(range(n)), "an acknowledged reading was lost"
        assert pids == list(range(1, n + 1))


def test_the_database_holds_no_plaintext(hub):
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    marker = b"kitchen-window-open-7f3a9c"
    stream = "secretstream"
    c.publish(f"moat/{dev.id}/up/{stream}", marker, qos=1, pid=1)
    c.expect(mw.PUBACK)
    c.publish(f"moat/{dev.id}/up/_shaped", batch([(9, stream, marker, 0)]), qos=1, pid=2)
    c.expect(mw.PUBACK)
    c.close()
    assert len(readings(hub, dev)) == 2  # control: they are stored
    files = glob.glob(f"{hub.dir}/telemetry.db*")
    assert files
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        for secret in (marker, stream.encode(), dev.id.encode()):
            assert secret not in data, f"{secret!r} in plaintext in {path}"


def test_telemetry_store_can_be_switched_off(hub):
    hub.set_config("telemetry", "store", "no")
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    c.publish(f"moat/{dev.id}/up/temp", b"1", qos=1, pid=1)
    c.expect(mw.PUBACK)
    c.close()
    assert not glob.glob(f"{hub.dir}/telemetry.db")


def test_puback_waits_for_the_telemetry_commit(hub):
    """The barrier made visible: while another process holds telemetry.db's
    write lock the reading cannot be stored, so it must not be
    acknowledged; once the lock is gone it is stored, then acknowledged."""
    import sqlite3
    dev = hub.add_device()
    hub.start()
    c = device_client(hub, dev)
    c.publish(f"moat/{dev.id}/up/warmup", b"0", qos=1, pid=1)
    c.expect(mw.PUBACK)  # the store exists and is in WAL mode
    lock = sqlite3.connect(f"{hub.dir}/telemetry.db", isolation_level=None, timeout=1)
    try:
        lock.execute("BEGIN IMMEDIATE")
        c.publish(f"moat/{dev.id}/up/temp", b"held", qos=1, pid=2)
        assert c.quiet(1.5) == [], "acknowledged before the reading was stored"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert c.expect(mw.PUBACK, timeout=10).packet_id == 2
    c.close()
    assert [r["payload"] for r in readings(hub, dev, "--stream", "temp")] == ["held"]
