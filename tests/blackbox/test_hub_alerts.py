"""The hub watches its fleet and says so (issue 6, docs/monitoring.md).

A real moatd with its monitor: devices made silent raise device_offline,
which reaches a webhook receiver the test runs (signature checked with the
key file, as a receiver would) and a service subscribed to $moat/alerts/#;
the device's return clears it; a clean DISCONNECT and a lost connection are
told apart; refused handshakes from one address make a handshake_burst;
refused publishes reach the audit log (which still verifies); the heartbeat
arrives every N seconds and stops when the hub is killed; the telemetry
store failing raises store_failure while the hub keeps serving, and nothing
acknowledged is lost.
"""
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import mqttwire as mw

ALERT_WATCHER = ("allow connect\n"
                 "allow subscribe $moat/alerts/#\n"
                 "allow receive $moat/alerts/#\n")


# ---- a webhook receiver, as docs/monitoring.md shows ------------------------------

def verify(key, headers, body):
    """The receiver's check from docs/monitoring.md."""
    ts, sig = headers.get("X-Moat-Timestamp", ""), headers.get("X-Moat-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
        return False
    mac = hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + mac, sig)


class Receiver:
    """HTTP server on 127.0.0.1 recording every POST (headers, body, time)."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.got.append((self.path, dict(self.headers), body, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def posts(self, path=None):
        with self.lock:
            return [g for g in self.got if path is None or g[0] == path]

    def alerts(self):
        return [json.loads(b) for p, h, b, t in self.posts("/hook")]

    def wait_alert(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, h, b, t in self.posts("/hook"):
                a = json.loads(b)
                if pred(a):
                    return a, h, b
            time.sleep(0.05)
        raise AssertionError(f"no such alert; got {self.alerts()}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def watch(hub, receiver, heartbeat=None, **monitor):
    """Turn the hub's alerts toward `receiver`, with short timings."""
    key_path = os.path.join(hub.dir, "webhook.key")
    key_text = secrets.token_hex(32)
    with open(key_path, "w") as f:
        f.write(key_text + "\n")  # as `openssl rand -hex 32 > webhook.key` writes it
    os.chmod(key_path, 0o600)
    hub.set_config("alerts", "webhook", receiver.url("/hook"))
    hub.set_config("alerts", "webhook_key", "webhook.key")
    hub.set_config("alerts", "hub_name", "testhub")
    if heartbeat:
        hub.set_config("alerts", "heartbeat_url", receiver.url("/heartbeat"))
        hub.set_config("alerts", "heartbeat_interval", str(heartbeat))
    settings = {"offline_grace": 1, "lost_grace": 1, "registry_poll": 200, "audit_flush": 100}
    settings.update(monitor)
    for k, v in settings.items():
        hub.set_config("monitor", k, str(v))
    return key_text.encode()


def is_alert(kind, state, subject=None):
    return lambda a: (a["kind"] == kind and a["state"] == state and
                      (subject is None or a["subject"] == subject))


def watcher(hub, name="watcher"):
    svc = hub.add_service(name, ALERT_WATCHER)
    return svc


def subscribe_alerts(hub, svc):
    c = hub.paho(svc)
    r = c.subscribe("$moat/alerts/#", qos=1)
    assert r[0] == 0
    time.sleep(0.3)  # SUBACK
    return c


def mqtt_alert(client, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in list(client.messages):
            a = json.loads(m.payload)
            if pred(a):
                return m, a
        time.sleep(0.05)
    raise AssertionError(f"no such alert over MQTT: {[m.topic for m in client.messages]}")


def device(hub, dev):
    c = mw.RawClient.open(hub, dev)
    c.connect(dev.id)
    return c


# ---- liveness --------------------------------------------------------------------

def test_a_silent_device_raises_an_alert_that_reaches_webhook_and_service(hub, receiver):
    key = watch(hub, receiver)
    dev = hub.add_device()
    svc = watcher(hub)
    hub.moatctl("group", "set", "devices", "report_interval", "2")
    hub.start()
    ops = subscribe_alerts(hub, svc)
    d = device(hub, dev)
    d.publish(f"moat/{dev.id}/up/temp", b"20", qos=1, pid=1)
    d.expect(mw.PUBACK)
    t0 = time.monotonic()
    # ... and then it says nothing (still connected: it just stopped publishing).
    subject = f"device:{dev.id}"
    a, headers, body = receiver.wait_alert(is_alert("device_offline", "raise", subject))
    waited = time.monotonic() - t0
    assert 2.5 <= waited <= 8, f"raised after {waited:.1f} s (interval 2 + grace 1)"
    assert a["details"]["cause"] == "silent" and a["details"]["interval_s"] == 2
    assert a["hub"] == "testhub" and a["severity"] == "warning"
    assert headers["X-Moat-Event"] == "alert"
    # The signature holds under the shared key, and only under it.
    assert verify(key, headers, body)
    assert not verify(b"another key of sixteen bytes or more", headers, body)
    assert not verify(key, headers, body.replace(b"raise", b"clear"))
    # The same news over MQTT, to the service allowed to receive it.
    m, via_mqtt = mqtt_alert(ops, is_alert("device_offline", "raise", subject))
    assert m.topic == f"$moat/alerts/device_offline/device:{dev.id}"
    assert via_mqtt["details"]["cause"] == "silent"
    # Raised once, not once per second of silence.
    time.sleep(1.5)
    assert len([x for x in receiver.alerts() if is_alert("device_offline", "raise")(x)]) == 1

    # Its return clears it, on both paths.
    d.publish(f"moat/{dev.id}/up/temp", b"21", qos=1, pid=2)
    d.expect(mw.PUBACK)
    a, headers, body = receiver.wait_alert(is_alert("device_offline", "clear", subject))
    assert verify(key, headers, body) and a["details"].get("back") is True
    mqtt_alert(ops, is_alert("device_offline", "clear", subject))
    listed = json.loads(hub.moatctl("alerts", "--kind", "device_offline", "--format",
                                    "json").stdout)
    assert any(r["subject"] == subject for r in listed), listed
    d.close()
    ops.disconnect()


def test_a_device_cannot_subscribe_to_alerts(hub):
    dev = hub.add_device()
    hub.start()
    d = device(hub, dev)
    d.send_subscribe([("$moat/alerts/#", 1)], pid=1)
    assert d.expect(mw.SUBACK).reasons == [0x87]
    d.close()


def test_clean_disconnect_and_lost_connection_are_told_apart(hub, receiver):
    watch(hub, receiver, lost_grace=1, offline_grace=1)
    clean, lost = hub.add_device(), hub.add_device()
    hub.moatctl("group", "set", "devices", "report_interval", "4")
    hub.start()
    a = device(hub, clean)
    b = device(hub, lost)
    for c, d in ((a, clean), (b, lost)):
        c.publish(f"moat/{d.id}/up/temp", b"1", qos=1, pid=1)
        c.expect(mw.PUBACK)
    t0 = time.monotonic()
    a.disconnect_and_wait()  # MQTT DISCONNECT: it said goodbye
    b.close()       # the socket just goes: no DISCONNECT, the will would be published
    got_lost, _, _ = receiver.wait_alert(is_alert("device_offline", "raise", f"device:{lost.id}"))
    t_lost = time.monotonic() - t0
    got_clean, _, _ = receiver.wait_alert(is_alert("device_offline", "raise",
                                                   f"device:{clean.id}"))
    t_clean = time.monotonic() - t0
    assert got_lost["details"]["cause"] == "connection_lost"
    assert got_clean["details"]["cause"] == "clean_disconnect"
    # Lost: news within lost_grace; a goodbye waits for the whole interval.
    assert t_lost < 3.5 <= t_clean, (t_lost, t_clean)


def test_the_alert_state_survives_a_restart(hub, receiver):
    """An offline device stays offline across a restart (no second raise);
    its return after the restart clears it."""
    watch(hub, receiver)
    dev = hub.add_device()
    hub.moatctl("group", "set", "devices", "report_interval", "1")
    hub.start()
    d = device(hub, dev)
    d.close()
    receiver.wait_alert(is_alert("device_offline", "raise", f"device:{dev.id}"))
    hub.restart()
    time.sleep(3.5)
    raises = [a for a in receiver.alerts() if is_alert("device_offline", "raise")(a)]
    assert len(raises) == 1, raises
    d = device(hub, dev)
    receiver.wait_alert(is_alert("device_offline", "clear", f"device:{dev.id}"))
    d.close()


# ---- refusals ------------------------------------------------------------------------

def other_ca_identity(tmp_path, name="intruder"):
    """A CA the hub never heard of, and a client certificate from it."""
    d = tmp_path / "evil"
    d.mkdir()

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=not the moat CA", "-days", "2")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "c.key", "-out", "c.csr", "-subj", f"/CN={name}")
    run("x509", "-req", "-in", "c.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "c.crt", "-days", "2")
    return str(d / "c.crt"), str(d / "c.key")


def test_a_burst_of_refused_handshakes_raises_handshake_burst(hub, receiver, tmp_path):
    import ssl
    key = watch(hub, receiver, handshake_burst=5)
    cert, ckey = other_ca_identity(tmp_path)
    hub.start()
    refused = 0
    for _ in range(7):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(f"{hub.dir}/ca.crt")
        ctx.load_cert_chain(cert, ckey)
        s = mw.tcp(hub.port)
        try:
            t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
            # TLS 1.3: the client learns of the refusal on its first read.
            t.settimeout(3)
            t.sendall(mw.encode_connect("intruder"))
            data = t.recv(100)
            assert not data
        except (ssl.SSLError, ConnectionError, OSError):
            refused += 1
        finally:
            s.close()
    assert refused == 7
    a, headers, body = receiver.wait_alert(is_alert("handshake_burst", "event",
                                                    "address:127.0.0.1"))
    assert verify(key, headers, body)
    assert a["details"]["count"] >= 5 and a["details"]["reason"] == "certificate"
    listed = json.loads(hub.moatctl("alerts", "--kind", "handshake_burst", "--format",
                                    "json").stdout)
    assert [r["subject"] for r in listed] == ["address:127.0.0.1"]
    # The refusals are in the audit log, grouped (the first at once).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = json.loads(hub.moatctl("audit", "--format", "json").stdout)
        hs = [e for e in log if e["action"] == "refused.handshake"]
        if hs:
            break
        time.sleep(0.1)
    assert hs and hs[0]["actor"] == "address:127.0.0.1" and hs[0]["outcome"] == "refused"
    hub.moatctl("audit", "verify")


def test_refused_publishes_are_audited_and_the_log_still_verifies(hub, receiver):
    watch(hub, receiver, refused_publish_burst=4)
    dev, other = hub.add_device(), hub.add_device()
    hub.start()
    d = device(hub, dev)
    for pid in range(1, 6):  # another device's topic: refused by the default policy
        d.publish(f"moat/{other.id}/up/temp", b"forged", qos=1, pid=pid)
        assert d.expect(mw.PUBACK).reason == 0x87
    a, _, _ = receiver.wait_alert(is_alert("refused_publish_burst", "event",
                                           f"device:{dev.id}"))
    assert a["details"]["count"] >= 4
    d.close()
    hub.stop()  # closes the refusal windows: the summary with the count is written
    log = json.loads(hub.moatctl("audit", "--format", "json").stdout)
    mine = [e for e in log if e["action"] == "refused.publish" and
            e["actor"] == f"device:{dev.id}"]
    assert mine, log
    assert mine[0]["subject"] == f"moat/{other.id}/up/temp"
    assert sum(e["details"].get("count", 1) for e in mine) == 5
    assert hub.moatctl("audit", "verify").returncode == 0
    # ... and an edit of a hub-written entry is caught.
    db = sqlite3.connect(os.path.join(hub.dir, "registry.db"))
    db.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f'DROP TRIGGER "{name}"')
    db.execute("UPDATE audit_log SET outcome='ok' WHERE action='refused.publish'")
    db.commit()
    db.close()
    assert hub.moatctl("audit", "verify", check=False).returncode != 0


# ---- the heartbeat ---------------------------------------------------------------

def test_heartbeat_every_n_seconds_and_silence_when_the_hub_dies(hub, receiver):
    key = watch(hub, receiver, heartbeat=1)
    hub.start()
    time.sleep(3.6)
    beats = receiver.posts("/heartbeat")
    assert 3 <= len(beats) <= 6, len(beats)
    bodies = [json.loads(b) for p, h, b, t in beats]
    assert all(verify(key, h, b) for p, h, b, t in beats)
    assert all(h["X-Moat-Event"] == "heartbeat" for p, h, b, t in beats)
    assert all(x["status"] == "alive" and x["hub"] == "testhub" for x in bodies)
    seqs = [x["seq"] for x in bodies]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    gaps = [b[3] - a[3] for a, b in zip(beats, beats[1:])]
    assert all(0.5 < g < 2.0 for g in gaps), gaps
    assert "seq" in bodies[-1]["audit_head"]
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait(5)
    n = len(receiver.posts("/heartbeat"))
    time.sleep(2.5)
    assert len(receiver.posts("/heartbeat")) == n, "a dead hub kept beating"


def test_a_clean_stop_says_stopping(hub, receiver):
    watch(hub, receiver, heartbeat=30)
    hub.start()
    deadline = time.monotonic() + 5
    while not receiver.posts("/heartbeat") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.stop() == 0
    last = json.loads(receiver.posts("/heartbeat")[-1][2])
    assert last["status"] == "stopping"


# ---- the store failing -----------------------------------------------------------

def readings(hub, dev):
    return json.loads(hub.moatctl("telemetry", dev.id, "--format", "json", "--limit",
                                  "1000").stdout)


def test_telemetry_store_failure_alerts_and_the_hub_keeps_serving(hub, receiver):
    """Another process holds telemetry.db's write lock past the store's busy
    timeout (5 s): the commit fails. The hub raises store_failure (webhook and
    MQTT) and logs it loudly, does not acknowledge the reading, keeps relaying
    other traffic, and stores the reading once the device sends it again."""
    key = watch(hub, receiver)
    dev = hub.add_device()
    ops = watcher(hub)
    talker = hub.add_service("talker", "allow connect\nallow publish ops/#\n")
    listener = hub.add_service("listener", "allow connect\nallow subscribe ops/#\n"
                                           "allow receive ops/#\n")
    hub.start()
    sub = subscribe_alerts(hub, ops)
    d = device(hub, dev)
    d.publish(f"moat/{dev.id}/up/temp", b"before", qos=1, pid=1)
    d.expect(mw.PUBACK)
    lock = sqlite3.connect(f"{hub.dir}/telemetry.db", isolation_level=None, timeout=1)
    try:
        lock.execute("BEGIN IMMEDIATE")
        d.publish(f"moat/{dev.id}/up/temp", b"during", qos=1, pid=2)
        a, headers, body = receiver.wait_alert(is_alert("store_failure", "raise", "hub"),
                                               timeout=12)
        assert verify(key, headers, body) and a["severity"] == "critical"
        assert "telemetry" in a["details"]["error"]
        mqtt_alert(sub, is_alert("store_failure", "raise", "hub"))
        hub.wait_log(r"TELEMETRY STORE FAILED: .*telemetry\.db")
        # Not acknowledged: the publisher is closed without a PUBACK.
        assert [p for p in d.wait_closed(5) if p.type == mw.PUBACK] == []
        # Other traffic still flows while the store is down.
        t = hub.paho(talker)
        probe = hub.paho(listener)
        probe.subscribe("ops/ping", qos=1)
        time.sleep(0.3)
        t.publish("ops/ping", b"still here", qos=1).wait_for_publish(5)
        got = hub.wait_messages(probe, 1)
        assert [m.payload for m in got] == [b"still here"]
        t.disconnect()
        probe.disconnect()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # The device sends it again; now it is stored and acknowledged, and the
    # alert clears.
    d = device(hub, dev)
    d.publish(f"moat/{dev.id}/up/temp", b"during", qos=1, pid=2)
    assert d.expect(mw.PUBACK, timeout=10).packet_id == 2
    receiver.wait_alert(is_alert("store_failure", "clear", "hub"))
    d.close()
    assert [r["payload"] for r in readings(hub, dev)] == ["before", "during"]
    listed = json.loads(hub.moatctl("alerts", "--kind", "store_failure", "--format",
                                    "json").stdout)
    assert [r["state"] for r in listed] == ["cleared"], listed
    sub.disconnect()


def test_disk_full_alerts_keeps_serving_and_loses_nothing_acknowledged(hub, receiver, tmp_path):
    """The data directory on a small tmpfs the test mounts, filled up: the
    telemetry commit fails with "disk full"; store_failure goes out (the alert
    store may be full too: webhooks and MQTT still carry it), the publisher
    gets no PUBACK, other traffic flows, and after space is freed the
    reading is stored; every reading acknowledged before is intact."""
    import shutil
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    key = watch(hub, receiver)
    dev = hub.add_device()
    ops = watcher(hub)
    talker = hub.add_service("talker", "allow connect\nallow publish ops/#\n")
    listener = hub.add_service("listener", "allow connect\nallow subscribe ops/#\n"
                                           "allow receive ops/#\n")
    saved = str(tmp_path / "saved")
    shutil.copytree(hub.dir, saved)
    used = sum(os.path.getsize(os.path.join(saved, f)) for f in os.listdir(saved))
    size_kib = used // 1024 + 4096
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs",
                        hub.dir], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        for f in os.listdir(saved):
            shutil.copy2(os.path.join(saved, f), hub.dir)
        hub.start()
        sub = subscribe_alerts(hub, ops)
        d = device(hub, dev)
        acked = []
        for i in range(20):
            d.publish(f"moat/{dev.id}/up/temp", b"%d" % i + b"x" * 2000, qos=1, pid=i + 1)
            assert d.expect(mw.PUBACK).packet_id == i + 1
            acked.append(i)
        # Fill the file system to the last byte.
        filler = os.path.join(hub.dir, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        big = b"B" * 200000
        d.publish(f"moat/{dev.id}/up/temp", big, qos=1, pid=100)
        a, headers, body = receiver.wait_alert(is_alert("store_failure", "raise", "hub"),
                                               timeout=10)
        assert verify(key, headers, body)
        assert "full" in a["details"]["error"].lower(), a
        mqtt_alert(sub, is_alert("store_failure", "raise", "hub"))
        hub.wait_log(r"TELEMETRY STORE FAILED: .*full")
        assert [p for p in d.wait_closed(5) if p.type == mw.PUBACK] == []
        # Still serving.
        t, probe = hub.paho(talker), hub.paho(listener)
        probe.subscribe("ops/ping", qos=1)
        time.sleep(0.3)
        t.publish("ops/ping", b"disk is full", qos=1).wait_for_publish(5)
        assert [m.payload for m in hub.wait_messages(probe, 1)] == [b"disk is full"]
        t.disconnect()
        probe.disconnect()
        assert hub.alive()
        # Space comes back: the device sends again and it is kept.
        os.unlink(filler)
        d = device(hub, dev)
        d.publish(f"moat/{dev.id}/up/temp", big, qos=1, pid=100)
        assert d.expect(mw.PUBACK, timeout=10).packet_id == 100
        d.close()
        sub.disconnect()
        got = readings(hub, dev)
        assert [r["payload"][:3] for r in got[:20]] == [("%dxx" % i)[:3] for i in acked]
        assert len(got) == 21 and len(got[20]["payload"]) == len(big)
    finally:
        hub.stop()
        subprocess.run(["umount", "-l", hub.dir], capture_output=True)
