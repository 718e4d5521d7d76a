"""The Linux port's transport and enrollment, attacked.

Each test performs the attack against the example device and checks that
it fails (and that the same setup without the attack works, so that the
failure is the defence and not a broken setup):

- a hub whose certificate comes from another CA is refused (the device
  trusts only the CA it was given, never the system store);
- a valid hub certificate reached under a name it does not carry is refused
  (the host/IP check), through a forwarder on 127.0.0.2;
- a server that offers only TLS 1.2 is refused (TLS 1.3 only);
- a private key file readable by others is refused before any connection;
- TLS records from the device are padded to 256-byte blocks (and are not
  with padding turned off);
- enrollment: the key is made on the device (0600, never overwritten), the
  hub signs the CSR, the device installs only a certificate for its own key
  from its own hub CA, and connects with it.
"""
import os
import ssl
import socket
import threading
import time

from sdktools import Device, Forwarder, thermostat_argv


def run(procs, program, port, who, tmp_path, *extra, host="127.0.0.1"):
    return Device(procs, thermostat_argv(program, port, who, tmp_path / "state", "--interval",
                                         "100", "--backoff-max", "300", *extra, host=host))


def test_hub_from_another_ca_is_refused(hub, procs, tmp_path):
    from conftest import program
    from hubtools import Hub
    from conftest import free_port, wait_for_port
    other = Hub(procs, tmp_path / "other", program, free_port, wait_for_port)
    dev = hub.add_device()
    other.start()
    # The device knows its own hub's CA; "other" presents a certificate for
    # 127.0.0.1 from a different CA.
    d = run(procs, program, other.port, dev, tmp_path)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "not trusted" not in d.stderr():
        time.sleep(0.05)
    assert "not trusted" in d.stderr(), d.stderr()
    assert "online" not in d.text()
    d.stop()
    # Control: the same device reaches its own hub.
    hub.start()
    d = run(procs, program, hub.port, dev, tmp_path)
    d.wait_for(r"^online ")


def test_hub_name_is_checked(hub, procs, tmp_path):
    from conftest import program
    dev = hub.add_device()
    hub.start()
    # 127.0.0.2 is loopback too, but the hub's certificate does not name it.
    wrong = Forwarder("127.0.0.2", hub.port)
    right = Forwarder("127.0.0.1", hub.port)
    try:
        d = run(procs, program, wrong.port, dev, tmp_path, host="127.0.0.2")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "not trusted" not in d.stderr():
            time.sleep(0.05)
        assert "not trusted" in d.stderr(), d.stderr()
        assert "online" not in d.text()
        d.stop()
        d = run(procs, program, right.port, dev, tmp_path)
        d.wait_for(r"^online ")
    finally:
        wrong.close()
        right.close()


def test_tls12_only_server_is_refused(hub, procs, tmp_path):
    from conftest import program
    dev = hub.add_device()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(hub.dir, "server.crt"), os.path.join(hub.dir, "server.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    results = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(c, server_side=True) as s:
                    results.append(("ok", s.version()))
            except (ssl.SSLError, OSError) as e:
                results.append(("fail", str(e)))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        d = run(procs, program, srv.getsockname()[1], dev, tmp_path)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not results:
            time.sleep(0.05)
        time.sleep(0.3)
        assert results and all(r[0] == "fail" for r in results), results
        assert "online" not in d.text()
        d.stop()
    finally:
        stop.set()
        t.join(2)
        srv.close()


def test_key_readable_by_others_is_refused(hub, procs, tmp_path):
    from conftest import program
    dev = hub.add_device()
    hub.start()
    os.chmod(dev.key, 0o644)
    d = run(procs, program, hub.port, dev, tmp_path)
    assert d.wait_exit(10) == 1
    assert "chmod 600" in d.stderr()
    assert f"connected as '{dev.id}'" not in hub.log()
    os.chmod(dev.key, 0o600)
    d = run(procs, program, hub.port, dev, tmp_path)
    d.wait_for(r"^online ")


def _app_records(fwd, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [length for typ, length in fwd.records() if typ == 23]
        if len(recs) >= 6:
            return recs
        time.sleep(0.05)
    return [length for typ, length in fwd.records() if typ == 23]


def test_tls_records_are_padded(hub, procs, tmp_path):
    from conftest import program
    dev = hub.add_device()
    hub.start()
    fwd = Forwarder("127.0.0.1", hub.port)
    try:
        d = run(procs, program, fwd.port, dev, tmp_path, "--count", "5", "--interval", "50")
        d.wait_for(r"^sent seq=5")
        recs = _app_records(fwd)
        assert len(recs) >= 6
        # TLS 1.3: inner plaintext padded to a multiple of 256, plus the
        # 16-byte AEAD tag.
        assert all(n % 256 == 16 for n in recs), recs
        d.stop()
    finally:
        fwd.close()
    fwd = Forwarder("127.0.0.1", hub.port)
    try:
        d = run(procs, program, fwd.port, dev, tmp_path, "--count", "5", "--interval", "50",
                "--padding", "1")
        d.wait_for(r"^online ")
        time.sleep(0.5)
        recs = _app_records(fwd)
        assert any(n % 256 != 16 for n in recs), recs
        d.stop()
    finally:
        fwd.close()


def test_enrollment_key_on_device(hub, procs, tmp_path):
    from conftest import program
    import subprocess
    enroll = program("moat-enroll")
    devdir = tmp_path / "device"
    devdir.mkdir(mode=0o700)
    key, csr = devdir / "device.key", devdir / "device.csr"
    r = subprocess.run([enroll, "request", "--key", str(key), "--csr", str(csr)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in csr.read_bytes()
    # An existing key is never replaced.
    before = key.read_bytes()
    r = subprocess.run([enroll, "request", "--key", str(key), "--csr", str(csr)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "never replaced" in r.stderr
    assert key.read_bytes() == before

    # The operator's side.
    crt = tmp_path / "from-hub.crt"
    out = hub.moatctl("device", "enroll", "--csr", str(csr), "--out", str(crt))
    dev_id = out.stdout.split()[0]
    ca = os.path.join(hub.dir, "ca.crt")

    # A certificate for another key is not installed.
    other = hub.add_device()
    r = subprocess.run([enroll, "install", "--cert", other.cert, "--key", str(key), "--ca", ca,
                        "--out", str(devdir / "device.crt")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "not for the key" in r.stderr
    assert not (devdir / "device.crt").exists()
    # Nor one from another CA.
    from hubtools import Hub
    from conftest import free_port, wait_for_port
    stranger = Hub(procs, tmp_path / "stranger", program, free_port, wait_for_port)
    r = subprocess.run([enroll, "install", "--cert", str(crt), "--key", str(key), "--ca",
                        os.path.join(stranger.dir, "ca.crt"), "--out",
                        str(devdir / "device.crt")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "does not verify" in r.stderr

    r = subprocess.run([enroll, "install", "--cert", str(crt), "--key", str(key), "--ca", ca,
                        "--out", str(devdir / "device.crt")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == dev_id

    # The enrolled device connects under the id the hub chose.
    hub.start()
    from hubtools import Identity
    me = Identity(dev_id, str(devdir / "device.crt"), str(key), ca)
    d = run(procs, program, hub.port, me, tmp_path, "--count", "2", "--exit-when-sent")
    assert d.wait_exit(20) == 0, d.stderr()
    assert f"connected as '{dev_id}'" in hub.log()
