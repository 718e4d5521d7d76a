"""libmoat against a plain MQTT broker: Debian's mosquitto configured for
client-certificate authentication (require_certificate,
use_identity_as_username, TLS 1.3 only), no moat hub involved. The
certificates come from a moat hub directory (`moatctl init` makes a CA and a
server certificate for 127.0.0.1; `device add` makes device certificates),
but mosquitto knows nothing of moat.

- the thermostat's readings arrive in order, over MQTT 5 and 3.1.1;
- mosquitto is restarted mid-stream (it saves its persistent sessions on
  SIGTERM): every reading still arrives, in order after de-duplication;
- a signed command published by an ordinary client reaches the device and
  is obeyed; a client without a certificate cannot connect at all.
"""
import getpass
import os
import shutil
import signal
import subprocess
import time

import pytest

from sdktools import Device, Recorder, command_keygen, command_sign, first_appearances, \
    thermostat_argv


class Mosquitto:
    def __init__(self, procs, tmp_path, hub):
        from conftest import free_port, wait_for_port
        if not shutil.which("mosquitto"):
            pytest.fail("mosquitto is not installed; run scripts/bootstrap")
        self.procs = procs
        self.wait_for_port = wait_for_port
        self.port = free_port()
        self.dir = tmp_path / "mosq"
        self.dir.mkdir()
        for name in ("ca.crt", "server.crt", "server.key"):
            shutil.copy(os.path.join(hub.dir, name), self.dir / name)
        os.chmod(self.dir / "server.key", 0o600)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.dir}/ca.crt\n"
            f"certfile {self.dir}/server.crt\n"
            f"keyfile {self.dir}/server.key\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            "tls_version tlsv1.3\n"
            "allow_anonymous false\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 10000\n"
            "log_dest stderr\n"
            "log_type all\n")
        self.log_path = self.dir / "mosquitto.log"
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = self.procs.start(["mosquitto", "-c", str(self.conf)], stdout=self.log,
                                     stderr=self.log)
        self.wait_for_port(self.port, proc=self.proc)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def mosq(hub, procs, tmp_path):
    m = Mosquitto(procs, tmp_path, hub)
    yield m
    if m.proc.poll() is None:
        m.stop()


def run_device(procs, mosq, dev, tmp_path, *extra):
    from conftest import program
    return Device(procs, thermostat_argv(program, mosq.port, dev, tmp_path / "state", *extra))


@pytest.mark.parametrize("version", [5, 311])
def test_thermostat_against_mosquitto(hub, mosq, procs, tmp_path, version):
    dev, watcher = hub.add_device(), hub.add_device()
    rec = Recorder(mosq.port, hub.ssl_context(watcher), watcher.id, f"moat/{dev.id}/up/#",
                   version=5 if version == 5 else 311)
    try:
        extra = ["--mqtt311"] if version == 311 else []
        d = run_device(procs, mosq, dev, tmp_path, "--interval", "30", "--count", "30",
                       "--exit-when-sent", *extra)
        assert d.wait_exit(30) == 0, d.stderr()
        rec.wait_seqs(30)
        assert first_appearances(rec.seqs()) == list(range(1, 31))
        assert {r[0] for r in rec.readings} == {f"moat/{dev.id}/up/temp"}
        log = mosq.log_path.read_text()
        # mosquitto took the identity from the certificate.
        assert f"u'{dev.id}'" in log or dev.id in log
    finally:
        rec.close()


def test_mosquitto_restarted_mid_stream(hub, mosq, procs, tmp_path):
    dev, watcher = hub.add_device(), hub.add_device()
    rec = Recorder(mosq.port, hub.ssl_context(watcher), watcher.id, f"moat/{dev.id}/up/#")
    try:
        d = run_device(procs, mosq, dev, tmp_path, "--interval", "20", "--count", "150",
                       "--exit-when-sent", "--backoff-max", "400", "--quiet")
        d.wait_for(r"^reading seq=60 ", timeout=30)
        mosq.stop()
        time.sleep(0.5)
        mosq.start()
        assert d.wait_exit(60) == 0, d.stderr()
        rec.wait_seqs(150, timeout=30)
        assert first_appearances(rec.seqs()) == list(range(1, 151))
        assert len(d.wait_for(r"^online ", count=2)) >= 2
    finally:
        rec.close()


def test_command_through_mosquitto(hub, mosq, procs, tmp_path):
    dev, owner = hub.add_device(), hub.add_device()
    key = os.path.join(hub.keys, "owner.cmdkey")
    pk = command_keygen(hub, key)
    d = run_device(procs, mosq, dev, tmp_path, "--interval", "1000", "--trust", pk)
    d.wait_for(r"^online ")
    time.sleep(0.3)
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=owner.id, protocol=mqtt.MQTTv5)
    c.tls_set_context(hub.ssl_context(owner))
    c.connect("127.0.0.1", mosq.port)
    c.loop_start()
    try:
        env = command_sign(hub, key, dev.id, "setpoint", "22.0")
        c.publish(f"moat/{dev.id}/down/setpoint", env, qos=1).wait_for_publish(5)
        d.wait_for(r"^setpoint 22\.0 ")
        c.publish(f"moat/{dev.id}/down/setpoint", env, qos=1).wait_for_publish(5)
        d.wait_for(r"^rejected replayed counter ")
    finally:
        c.disconnect()
        c.loop_stop()


def test_mosquitto_refuses_a_client_without_certificate(hub, mosq):
    """The broker setup the SDK is tested against really requires a client
    certificate (so the tests above did use mutual TLS)."""
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosq.port), "--cafile",
                        os.path.join(hub.dir, "ca.crt"), "-t", "x", "-m", "y", "-q", "1"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
