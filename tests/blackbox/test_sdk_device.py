"""libmoat against moatd: the example thermostat (examples/thermostat, only
the SDK's public API) and moat-sim as real devices, a back-end service as
the receiving side.

- readings arrive in order on moat/ID/up/temp as moat envelopes with the
  queue's sequence numbers;
- the hub is killed (SIGKILL) and restarted twice while the device publishes:
  every reading arrives, and after de-duplication by sequence number they
  are complete and in order (the device resends what was not acknowledged;
  the hub never loses what it acknowledged);
- readings taken while the hub is down are stored on the device and sent
  when it is back, also after the device itself restarts;
- a command signed with `moatctl command sign` is obeyed; the same envelope
  replayed and a tampered one are refused, and the refusals are reported on
  moat/ID/up/_rejected; a command sent while the device was away arrives when
  it reconnects (persistent session);
- moat-sim runs several devices from one process.
"""
import os
import shutil
import signal
import time

from sdktools import (Device, Recorder, command_keygen, command_sign, first_appearances,
                      thermostat_argv, write_policy_service)


def start_hub_with_recorder(hub):
    dev = hub.add_device()
    svc = write_policy_service(hub, "ingest")
    hub.start()
    rec = Recorder(hub.port, hub.ssl_context(svc), "ingest", f"moat/{dev.id}/up/#")
    return dev, svc, rec


def thermostat(procs, program, hub, dev, tmp_path, *extra):
    return Device(procs, thermostat_argv(program, hub.port, dev, tmp_path / "state", *extra))


def test_readings_arrive_in_order(hub, procs, tmp_path):
    from conftest import program
    dev, _svc, rec = start_hub_with_recorder(hub)
    try:
        d = thermostat(procs, program, hub, dev, tmp_path, "--interval", "50", "--count", "20",
                       "--exit-when-sent")
        assert d.wait_exit(30) == 0, d.stderr()
        rec.wait_seqs(20)
        assert rec.errors == []
        assert first_appearances(rec.seqs()) == list(range(1, 21))
        topics = {r[0] for r in rec.readings}
        assert topics == {f"moat/{dev.id}/up/temp"}
        for _t, stream, _s, payload in rec.readings:
            assert stream == "temp"
            float(payload)  # a temperature
        # The hub saw the device under its certificate's identity.
        assert f"connected as '{dev.id}'" in hub.log()
    finally:
        rec.close()


def test_hub_killed_mid_stream_loses_nothing(hub, procs, tmp_path):
    """kill -9 the hub twice while the device publishes every 20 ms, each
    time with records in flight (written to the hub, not acknowledged)."""
    from conftest import program
    total = 250
    dev, _svc, rec = start_hub_with_recorder(hub)
    try:
        d = thermostat(procs, program, hub, dev, tmp_path, "--interval", "20", "--count",
                       str(total), "--exit-when-sent", "--backoff-max", "400", "--keep-alive",
                       "5", "--quiet")
        for stop_at in (60, 150):
            d.wait_for(rf"^reading seq={stop_at} ", timeout=30)
            # Frozen first, so that records are written to the hub but never
            # acknowledged (in flight); then killed: only the device's resend
            # can deliver them.
            hub.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.4)
            hub.kill9()
            time.sleep(0.4)  # readings pile up in the device's queue meanwhile
            hub.start()
        assert d.wait_exit(60) == 0, d.stderr()
        rec.wait_seqs(total, timeout=30)
        seqs = rec.seqs()
        order = first_appearances(seqs)
        assert order == list(range(1, total + 1)), f"missing or out of order: {order}"
        # The device did reconnect (twice at least) and resent something.
        assert len(d.wait_for(r"^online ", count=3)) >= 3
        assert rec.errors == []
    finally:
        rec.close()


def test_offline_readings_survive_device_restart(hub, procs, tmp_path):
    """Readings stored while no hub is reachable survive the device's own
    restart (the queue is on disk) and are sent once the hub is up."""
    from conftest import program
    dev = hub.add_device()
    svc = write_policy_service(hub, "ingest")
    d = thermostat(procs, program, hub, dev, tmp_path, "--interval", "20", "--count", "10",
                   "--backoff-max", "300")
    d.wait_for(r"^reading seq=10 ")
    assert d.stop() == 0
    assert "online" not in d.text()
    hub.start()
    rec = Recorder(hub.port, hub.ssl_context(svc), "ingest", f"moat/{dev.id}/up/#")
    try:
        d2 = thermostat(procs, program, hub, dev, tmp_path, "--interval", "20", "--count", "5",
                        "--exit-when-sent")
        assert d2.wait_exit(30) == 0, d2.stderr()
        rec.wait_seqs(15)
        assert first_appearances(rec.seqs()) == list(range(1, 16))
    finally:
        rec.close()


def test_signed_commands_accepted_replays_and_tampering_rejected(hub, procs, tmp_path):
    from conftest import program
    dev, svc, rec = start_hub_with_recorder(hub)
    sender = hub.paho(svc, client_id="ingest/sender")
    try:
        key = os.path.join(hub.keys, "owner.cmdkey")
        pk = command_keygen(hub, key)
        d = thermostat(procs, program, hub, dev, tmp_path, "--interval", "1000", "--trust", pk)
        d.wait_for(r"^online ")
        time.sleep(0.3)  # the subscription is in place
        topic = f"moat/{dev.id}/down/setpoint"
        env = command_sign(hub, key, dev.id, "setpoint", "23.5")
        sender.publish(topic, env, qos=1).wait_for_publish(5)
        d.wait_for(r"^setpoint 23\.5 counter=\d+")

        # The very same envelope again: a replay.
        sender.publish(topic, env, qos=1).wait_for_publish(5)
        d.wait_for(r"^rejected replayed counter " + topic)

        # A fresh envelope with one byte of its body changed.
        env2 = bytearray(command_sign(hub, key, dev.id, "setpoint", "24.0"))
        at = env2.find(b"24.0")
        env2[at] = ord("9")
        sender.publish(topic, bytes(env2), qos=1).wait_for_publish(5)
        d.wait_for(r"^rejected bad signature " + topic)

        # Signed by a key the device does not trust.
        other = os.path.join(hub.keys, "other.cmdkey")
        command_keygen(hub, other)
        sender.publish(topic, command_sign(hub, other, dev.id, "setpoint", "30"),
                       qos=1).wait_for_publish(5)
        d.wait_for(r"^rejected unknown key " + topic)
        assert len(d.wait_for(r"^setpoint ")) == 1  # only the authentic one acted

        # Every refusal was reported to the hub.
        deadline = time.monotonic() + 5
        reports = []
        while time.monotonic() < deadline and len(reports) < 3:
            reports = rec.messages_on(f"moat/{dev.id}/up/_rejected")
            time.sleep(0.05)
        text = b"\n".join(reports)
        assert b"replayed counter" in text and b"bad signature" in text, text
        assert b"unknown key" in text

        # A command sent while the device is away arrives when it returns.
        assert d.stop() == 0
        away = command_sign(hub, key, dev.id, "setpoint", "19.5")
        sender.publish(topic, away, qos=1).wait_for_publish(5)
        d2 = thermostat(procs, program, hub, dev, tmp_path, "--interval", "1000", "--trust", pk)
        d2.wait_for(r"^online session_present=1")
        d2.wait_for(r"^setpoint 19\.5 ")
    finally:
        sender.disconnect()
        sender.loop_stop()
        rec.close()


def test_moat_sim_runs_several_devices(hub, procs, tmp_path):
    from conftest import program
    devs = [hub.add_device() for _ in range(3)]
    svc = write_policy_service(hub, "ingest")
    certs = tmp_path / "fleet"
    certs.mkdir(mode=0o700)
    shutil.copy(devs[0].ca, certs / "ca.crt")
    for d in devs:
        shutil.copy(d.cert, certs / f"{d.id}.crt")
        shutil.copy(d.key, certs / f"{d.id}.key")
        os.chmod(certs / f"{d.id}.key", 0o600)
    hub.start()
    rec = Recorder(hub.port, hub.ssl_context(svc), "ingest", "moat/+/up/#")
    try:
        sim = Device(procs, [program("moat-sim"), "--certs", str(certs), "--hub",
                             f"127.0.0.1:{hub.port}", "--state", str(tmp_path / "simstate"),
                             "--interval", "100", "--duration", "3", "--stats", "1"])
        assert sim.wait_exit(20) == 0, sim.stderr()
        summary = sim.wait_for(r"^summary: .*online=(\d+)/3 stored=(\d+) acked=(\d+)")[0]
        assert int(summary.group(2)) >= 3 * 20
        assert int(summary.group(3)) >= 3 * 15
        time.sleep(0.5)
        senders = {r[0].split("/")[1] for r in rec.readings}
        assert senders == {d.id for d in devs}
        for d in devs:
            per = [r[2] for r in rec.readings if r[0].split("/")[1] == d.id]
            assert first_appearances(per) == list(range(1, len(set(per)) + 1))
    finally:
        rec.close()


def test_moat_sim_help_is_a_manual():
    import subprocess
    from conftest import program
    r = subprocess.run([program("moat-sim"), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS"):
        assert section in r.stdout
    r = subprocess.run([program("moat-sim")], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
