"""A real moat hub for black-box tests: a data directory made by moatctl,
moatd on a free loopback port, identities, and clients that talk to it.

Used through the `hub` fixture in conftest.py:

    def test_x(hub):
        dev = hub.add_device()
        hub.start()
        c = hub.paho(dev)                 # connected Paho client, MQTT 5
        c.publish(f"moat/{dev.id}/up/t", b"1", qos=1).wait_for_publish(5)
        out = hub.mosquitto_sub(dev, f"moat/{dev.id}/down/#", count=1)
"""
import glob
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def owner_worker(principal, workers):
    """The worker that owns a principal: FNV-1a of its id, modulo the count."""
    h = 2166136261
    for byte in principal.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h % workers


@dataclass
class Identity:
    id: str
    cert: str
    key: str
    ca: str
    kind: str = "device"


class Hub:
    def __init__(self, procs, tmp_path, program, free_port, wait_for_port):
        self._procs = procs
        self._program = program
        self._free_port = free_port
        self._wait_for_port = wait_for_port
        self.dir = str(tmp_path / "hub")
        self.keys = str(tmp_path / "keys")
        os.makedirs(self.keys, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.log_path = str(tmp_path / "moatd.log")
        self._log = None
        self.moatctl("init", self.dir, top=True)

    # ---- operator side -------------------------------------------------
    def moatctl(self, *args, top=False, check=True, input=None):
        argv = [self._program("moatctl")] + ([] if top else ["--dir", self.dir]) + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"moatctl {' '.join(args)} failed: {r.stderr}")
        return r

    def add_device(self, *groups):
        args = ["device", "add", "--out", self.keys]
        for g in groups:
            args += ["--group", g]
        dev_id = self.moatctl(*args).stdout.split()[0]
        return Identity(dev_id, f"{self.keys}/{dev_id}.crt", f"{self.keys}/{dev_id}.key",
                        f"{self.keys}/ca.crt")

    def add_policy(self, name, text):
        path = os.path.join(self.keys, f"{name}.policy")
        with open(path, "w") as f:
            f.write(text)
        self.moatctl("policy", "add", name, path)

    def add_service(self, name, policy_text=None):
        args = ["service", "add", name, "--out", self.keys]
        if policy_text is not None:
            self.add_policy(f"{name}-policy", policy_text)
            args += ["--policy", f"{name}-policy"]
        self.moatctl(*args)
        return Identity(name, f"{self.keys}/{name}.crt", f"{self.keys}/{name}.key",
                        f"{self.keys}/ca.crt", kind="service")

    def set_config(self, section, key, value):
        """Set [section] key = value in moatd.conf (takes effect at start)."""
        path = os.path.join(self.dir, "moatd.conf")
        text = open(path).read()
        lines = text.split("\n")
        out, current, done = [], None, False
        for line in lines:
            m = re.match(r"\s*\[(\w+)\]", line)
            if m:
                if current == section and not done:
                    out.append(f"{key} = {value}")
                    done = True
                current = m.group(1)
            elif current == section and re.match(rf"\s*{key}\s*=", line):
                line = f"{key} = {value}"
                done = True
            out.append(line)
        if not done:
            if current != section:
                out.append(f"[{section}]")
            out.append(f"{key} = {value}")
        with open(path, "w") as f:
            f.write("\n".join(out))

    # ---- the daemon ----------------------------------------------------
    def start(self, *extra, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "hub already running"
        self._log = open(self.log_path, "a")
        argv = [self._program("moatd"), "--dir", self.dir,
                "--listen", f"127.0.0.1:{self.port}"] + list(extra)
        self.proc = self._procs.start(argv, stdout=self._log, stderr=self._log)
        if wait:
            self._wait_for_port(self.port, proc=self.proc)
        return self.proc

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else None
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self, *extra):
        self.stop()
        self.start(*extra)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, pattern, timeout=5.0):
        """Wait until the hub's log matches a regular expression."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return True
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()[-3000:]}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- workers and their store files -----------------------------------
    def workers(self):
        """How many worker threads the running (or last) hub started."""
        found = re.findall(r"listening on \S+ \(mutual TLS [^,]*, (\d+) workers?\)", self.log())
        assert found, "the hub has not logged its listening line yet"
        return int(found[-1])

    def store_path(self, principal, workers=None):
        """The store file of the worker that owns a principal (docs/hub.md)."""
        k = owner_worker(principal, workers or self.workers())
        return os.path.join(self.dir, "hub.db" if k == 0 else f"hub-{k}.db")

    def store_paths(self):
        return sorted(glob.glob(os.path.join(self.dir, "hub*.db")))

    # ---- clients -------------------------------------------------------
    def ssl_context(self, who, minimum=ssl.TLSVersion.TLSv1_3, maximum=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(who.ca if who else f"{self.dir}/ca.crt")
        if who:
            ctx.load_cert_chain(who.cert, who.key)
        ctx.minimum_version = minimum
        if maximum:
            ctx.maximum_version = maximum
        return ctx

    def tls_args(self, who):
        return ["-h", "127.0.0.1", "-p", str(self.port), "--cafile", who.ca,
                "--cert", who.cert, "--key", who.key]

    def mosquitto_pub(self, who, topic, message, *extra, client_id=None, timeout=10):
        argv = ["mosquitto_pub"] + self.tls_args(who) + ["-i", client_id or who.id,
                                                         "-t", topic, "-m", message] + list(extra)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def mosquitto_sub(self, who, topic, *extra, count=1, wait=5, client_id=None, timeout=15):
        argv = ["mosquitto_sub"] + self.tls_args(who) + ["-i", client_id or who.id, "-t", topic,
                                                         "-C", str(count), "-W", str(wait)]
        return subprocess.run(argv + list(extra), capture_output=True, text=True,
                              timeout=timeout)

    def paho(self, who, client_id=None, protocol=mqtt.MQTTv5, clean=True, connect=True,
             keepalive=30, properties=None, will=None, timeout=5.0):
        """A Paho client over mutual TLS, connected (CONNACK received) unless
        connect=False. Messages land in client.messages (a list), CONNACK
        results in client.connack."""
        cid = client_id if client_id is not None else who.id
        if protocol == mqtt.MQTTv5:
            c = mqtt.Client(client_id=cid, protocol=protocol)
        else:
            c = mqtt.Client(client_id=cid, protocol=protocol, clean_session=clean)
        c.tls_set_context(self.ssl_context(who))
        c.messages = []
        c.connack = None
        c.disconnected = threading.Event()
        c.connected = threading.Event()
        lock = threading.Lock()

        def on_message(client, userdata, msg):
            with lock:
                c.messages.append(msg)

        def on_connect(client, userdata, flags, rc, props=None):
            c.connack = (flags, rc, props)
            c.connected.set()

        def on_disconnect(client, userdata, rc, props=None):
            c.disconnect_rc = rc
            c.disconnected.set()

        c.on_message = on_message
        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        if will:
            c.will_set(*will)
        if connect:
            kw = {"keepalive": keepalive}
            if protocol == mqtt.MQTTv5:
                kw["clean_start"] = clean
                if properties is not None:
                    kw["properties"] = properties
            c.connect("127.0.0.1", self.port, **kw)
            c.loop_start()
            if not c.connected.wait(timeout):
                c.loop_stop()
                raise AssertionError("no CONNACK")
        return c

    @staticmethod
    def wait_messages(client, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(client.messages) < n:
            time.sleep(0.02)
        return client.messages

    @staticmethod
    def props(packet_type, **values):
        p = Properties(getattr(PacketTypes, packet_type))
        for k, v in values.items():
            setattr(p, k, v)
        return p
