"""Helpers for the libmoat black-box tests (test_sdk_*.py): the up-link
envelope decoded in Python (the layout of docs/sdk-wire.md, written again
from the spec so that the test does not trust the C decoder it checks), a
running example device whose output lines can be waited for, a subscriber
that records every reading it receives across broker restarts, and a TCP
forwarder that can watch TLS record sizes.
"""
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MAGIC = b"\x00mtb"
KIND_READINGS = 1
KIND_COVER = 2


class WireError(ValueError):
    pass


def decode_batch(data):
    """A moat envelope -> (kind, [(stream, seq, device_time_ms, payload)]).
    Raises WireError for anything that is not a well-formed envelope."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireError("no envelope magic")
    version, kind, count = data[4], data[5], struct.unpack(">H", data[6:8])[0]
    if version != 1 or kind not in (KIND_READINGS, KIND_COVER):
        raise WireError(f"version {version} kind {kind}")
    pos, out = 8, []
    for _ in range(count):
        if pos + 9 > len(data):
            raise WireError("truncated entry")
        seq = struct.unpack(">Q", data[pos:pos + 8])[0]
        slen = data[pos + 8]
        pos += 9
        if pos + slen + 10 > len(data):
            raise WireError("truncated record")
        stream = data[pos:pos + slen].decode("ascii")
        pos += slen
        dtime, plen = struct.unpack(">QH", data[pos:pos + 10])
        pos += 10
        if pos + plen > len(data):
            raise WireError("truncated payload")
        out.append((stream, seq, dtime, bytes(data[pos:pos + plen])))
        pos += plen
    if any(data[pos:]):
        raise WireError("non-zero padding")
    if kind == KIND_COVER and count:
        raise WireError("cover with readings")
    return kind, out


class Device:
    """The example thermostat (or any program printing lines), running."""

    def __init__(self, procs, argv, env=None):
        self.argv = argv
        self.lines = []
        self.err = []
        self._lock = threading.Lock()
        self.proc = procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, into):
        for raw in iter(stream.readline, b""):
            with self._lock:
                into.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self):
        with self._lock:
            return "\n".join(self.lines)

    def stderr(self):
        with self._lock:
            return "\n".join(self.err)

    def wait_for(self, pattern, timeout=15.0, count=1):
        """Wait until `count` output lines match the regular expression."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hits = [m for m in (rx.search(l) for l in self.lines) if m]
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the pumps drain
                with self._lock:
                    hits = [m for m in (rx.search(l) for l in self.lines) if m]
                if len(hits) >= count:
                    return hits
                break
            time.sleep(0.02)
        raise AssertionError(f"no {count} lines matching {pattern!r}; rc={self.proc.poll()}\n"
                             f"stdout:\n{self.text()[-3000:]}\nstderr:\n{self.stderr()[-3000:]}")

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s\nstdout:\n{self.text()[-3000:]}"
                                 f"\nstderr:\n{self.stderr()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(10)


def thermostat_argv(program, port, who, state, *extra, host="127.0.0.1"):
    return [program("thermostat"), "--hub", f"{host}:{port}", "--ca", who.ca, "--cert", who.cert,
            "--key", who.key, "--state", str(state)] + list(extra)


class Recorder:
    """A subscriber with a persistent session (it survives broker restarts:
    the broker keeps what arrives while it is away) that decodes every moat
    envelope it receives. `readings` is a list of (topic, stream, seq,
    payload) in arrival order; `raw` keeps (topic, payload) of everything."""

    def __init__(self, port, ssl_ctx, client_id, topic, version=5):
        self.readings, self.raw, self.errors = [], [], []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.version = version
        proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kw = {"client_id": client_id, "protocol": proto}
        if version != 5:
            kw["clean_session"] = False
        c = mqtt.Client(**kw)
        c.tls_set_context(ssl_ctx)
        c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self.subscribed.set()
        self.client = c
        if version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            c.connect("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        else:
            c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError("the recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc == 0:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.raw.append((msg.topic, bytes(msg.payload)))
            try:
                kind, items = decode_batch(msg.payload)
            except WireError as e:
                self.errors.append((msg.topic, str(e)))
                return
            for stream, seq, _t, payload in items:
                self.readings.append((msg.topic, stream, seq, payload))

    def seqs(self, stream=None):
        with self._lock:
            return [r[2] for r in self.readings if stream is None or r[1] == stream]

    def wait_seqs(self, n, timeout=30.0, stream=None):
        """Wait until n distinct sequence numbers have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(set(self.seqs(stream))) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"{len(set(self.seqs(stream)))} of {n} readings arrived")

    def snapshot(self):
        """The readings so far: a list of (topic, stream, seq, payload)."""
        with self._lock:
            return list(self.readings)

    def messages_on(self, topic):
        with self._lock:
            return [p for t, p in self.raw if t == topic]

    def close(self):
        self.client.disconnect()
        threading.Thread(target=self.client.loop_stop, daemon=True).start()


def first_appearances(seqs):
    """The order in which sequence numbers were first seen (de-duplicated)."""
    seen, order = set(), []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            order.append(s)
    return order


class Forwarder:
    """A TCP forwarder listen_host:port -> 127.0.0.1:target that also parses
    the TLS record headers flowing both ways, so a test can check the record
    sizes the client produced and, with timed(), when each record passed
    (time.monotonic() when its last byte arrived: what an observer on the
    path sees)."""

    def __init__(self, listen_host, target_port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.target = target_port
        self.client_records = []  # (content type, length)
        self.timed_records = {"client": [], "server": []}  # (time, content type, length)
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._pipe, args=(c,), daemon=True).start()

    def _pipe(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return
        pending = {"client": b"", "server": b""}
        socks = [c, u]
        try:
            while not self._stop:
                r, _, _ = select.select(socks, [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    now = time.monotonic()
                    side = "client" if s is c else "server"
                    buf = pending[side] + data
                    while len(buf) >= 5:
                        typ, _ver, length = struct.unpack(">BHH", buf[:5])
                        if len(buf) < 5 + length:
                            break
                        with self._lock:
                            if side == "client":
                                self.client_records.append((typ, length))
                            self.timed_records[side].append((now, typ, length))
                        buf = buf[5 + length:]
                    pending[side] = buf
                    (u if s is c else c).sendall(data)
        except OSError:
            return
        finally:
            c.close()
            u.close()

    def records(self):
        with self._lock:
            return list(self.client_records)

    def timed(self, side="client"):
        """[(time, content type, length)] of the records from "client" or
        "server", in the order they passed."""
        with self._lock:
            return list(self.timed_records[side])

    def close(self):
        self._stop = True
        self.sock.close()
        self._thread.join(2)


def write_policy_service(hub, name):
    """A back-end service that may read every device's up-link and send
    commands to every device."""
    return hub.add_service(name, "allow connect\n"
                                 "allow subscribe moat/+/up/#\n"
                                 "allow receive moat/+/up/#\n"
                                 "allow publish moat/+/down/#\n")


def command_keygen(hub, path):
    """`moatctl command keygen FILE`: the public key (hex) it prints."""
    r = hub.moatctl("command", "keygen", path)
    return r.stdout.strip().split()[-1]


def command_sign(hub, key, device, name, body, *extra):
    """`moatctl command sign`: the envelope bytes."""
    out = os.path.join(hub.keys, f"cmd-{time.monotonic_ns()}.bin")
    hub.moatctl("command", "sign", "--key", key, "--body", body, "-o", out, *extra, device, name)
    with open(out, "rb") as f:
        return f.read()
