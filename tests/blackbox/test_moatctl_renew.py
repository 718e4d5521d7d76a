"""Black-box tests of `moatctl device renew` and `moatctl service renew`
against a running hub.

What a wrong build would get wrong: a renewed certificate the hub does not
accept, or one issued under another id; the old certificate cut off although
the operator did not ask (a fleet must be able to move over at its own
pace); --revoke-old that leaves the old certificate working, or leaves a live
connection that uses it open; a revoked or disabled principal given a fresh
certificate; a failed renewal that still records a certificate. The registry
is read with sqlite3 and the certificates with python3-cryptography,
independently of moatctl.
"""
import json
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from hubtools import Identity

REVOKED_ALERT = "SSLV3_ALERT_CERTIFICATE_REVOKED"


def make_csr(tmp_path, name):
    """A new key and its CSR, made as a device would (openssl req)."""
    key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                    "-subj", "/CN=ignored", "-out", str(csr)],
                   check=True, capture_output=True)
    return str(key), str(csr)


def cert_sha256(path):
    cert = x509.load_pem_x509_certificate(open(path, "rb").read())
    return cert.fingerprint(hashes.SHA256()).hex()


def certs_of(hub, principal):
    """{sha256 hex: revoked} for every certificate the registry holds."""
    con = sqlite3.connect(f"file:{hub.dir}/registry.db?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT hex(fingerprint), revoked FROM certificates"
                           " WHERE principal = ?", (principal,)).fetchall()
    finally:
        con.close()
    return {fp.lower(): bool(rev) for fp, rev in rows}


def audit_entries(hub, action):
    r = hub.moatctl("audit", "--limit", "0", "--format", "json")
    return [e for e in json.loads(r.stdout) if e["action"] == action]


def handshake_refusal(hub, who, wait=3.0):
    """The TLS alert with which the hub refuses who's certificate, or None
    if it accepts it. In TLS 1.3 the client's side of the handshake ends
    before the hub has judged the certificate, so the refusal is the first
    thing read; an accepted client hears nothing (the hub waits for
    CONNECT)."""
    raw = socket.create_connection(("127.0.0.1", hub.port), timeout=wait)
    try:
        s = hub.ssl_context(who).wrap_socket(raw, server_hostname="127.0.0.1")
    except ssl.SSLError as e:
        raw.close()
        return e.reason
    try:
        s.settimeout(wait)
        return "closed without an alert" if s.recv(1) == b"" else None
    except ssl.SSLError as e:
        return e.reason
    except (socket.timeout, TimeoutError):
        return None
    finally:
        s.close()


def published(hub, who, watcher, text):
    """who connects, publishes text with QoS 1, and watcher receives it."""
    c = hub.paho(who)
    try:
        assert c.connack[1] == 0, c.connack
        c.publish(f"moat/{who.id}/up/t", text.encode(), qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(m.topic == f"moat/{who.id}/up/t" and m.payload == text.encode()
               for m in watcher.messages):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def watcher_of(hub):
    """A service subscribed to every device's up topics (started hub)."""
    clients = []

    def make():
        svc = hub.add_service("watcher", "allow connect\nallow subscribe moat/+/up/#\n"
                                         "allow receive moat/+/up/#\n")
        hub.start()
        w = hub.paho(svc)
        w.subscribe("moat/+/up/#", qos=1)
        time.sleep(0.2)
        clients.append(w)
        return w

    yield make
    for c in clients:
        c.disconnect()
        c.loop_stop()


def test_renew_from_csr_keeps_the_old_certificate_valid(hub, tmp_path, watcher_of):
    dev = hub.add_device()
    old_fp = cert_sha256(dev.cert)
    watcher = watcher_of()
    assert published(hub, dev, watcher, "old before")

    key, csr = make_csr(tmp_path, "next")
    out = str(tmp_path / "next.crt")
    r = hub.moatctl("device", "renew", dev.id, "--csr", csr, "--out", out, "--days", "30")
    assert r.stdout.splitlines() == [dev.id]
    assert "older certificate stays valid" in r.stderr

    # The new certificate: the same id, the CSR's key, the days asked for,
    # signed by the hub CA.
    cert = x509.load_pem_x509_certificate(open(out, "rb").read())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == dev.id
    pub = serialization.load_pem_private_key(open(key, "rb").read(), None).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        pub.public_bytes(serialization.Encoding.DER, spki)
    days = (cert.not_valid_after - cert.not_valid_before).days
    assert 29 <= days <= 31
    assert subprocess.run(["openssl", "verify", "-CAfile", dev.ca, out],
                          capture_output=True).returncode == 0
    new_fp = cert_sha256(out)
    assert certs_of(hub, dev.id) == {old_fp: False, new_fp: False}

    # Both certificates work, one after the other, as the same device.
    fresh = Identity(dev.id, out, key, dev.ca)
    assert published(hub, fresh, watcher, "new")
    assert published(hub, dev, watcher, "old after")

    # Recorded in the audit log, naming the new certificate.
    (entry,) = audit_entries(hub, "device.renew")
    assert entry["subject"] == dev.id and entry["outcome"] == "ok"
    assert entry["details"]["sha256"] == new_fp
    assert entry["details"]["revoked_old"] == []


def test_renew_revoke_old_cuts_off_the_old_certificate(hub, tmp_path, watcher_of):
    dev = hub.add_device()
    old_fp = cert_sha256(dev.cert)
    watcher = watcher_of()
    live = hub.paho(dev)
    assert live.connack[1] == 0

    key, csr = make_csr(tmp_path, "next")
    out = str(tmp_path / "next.crt")
    hub.moatctl("device", "renew", dev.id, "--csr", csr, "--out", out, "--revoke-old")
    t0 = time.monotonic()
    try:
        # The live connection made with the old certificate is closed
        # within a second of the renewal...
        assert live.disconnected.wait(1.0), "old certificate still connected after 1 s"
        took = time.monotonic() - t0
    finally:
        live.loop_stop()  # Paho would keep trying to reconnect
    assert took < 1.0
    # ...and a new handshake with it is refused, while the new one works.
    assert handshake_refusal(hub, dev) == REVOKED_ALERT
    fresh = Identity(dev.id, out, key, dev.ca)
    assert handshake_refusal(hub, fresh) is None
    assert published(hub, fresh, watcher, "renewed")

    new_fp = cert_sha256(out)
    assert certs_of(hub, dev.id) == {old_fp: True, new_fp: False}
    shown = json.loads(hub.moatctl("device", "show", dev.id, "--json").stdout)
    assert shown["status"] == "active"
    (entry,) = audit_entries(hub, "device.renew")
    assert entry["details"]["revoked_old"] == [old_fp]


def test_service_renew_with_a_key_made_here(hub, tmp_path):
    svc = hub.add_service("ingest", "allow connect\n")
    old_fp = cert_sha256(svc.cert)
    hub.start()
    # The files in use are never overwritten: nothing is issued then.
    r = hub.moatctl("service", "renew", "ingest", "--out", hub.keys, check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    assert certs_of(hub, "ingest") == {old_fp: False}
    assert cert_sha256(svc.cert) == old_fp

    keys2 = tmp_path / "keys2"
    r = hub.moatctl("service", "renew", "ingest", "--out", str(keys2), "--revoke-old")
    assert r.stdout.splitlines() == ["ingest"]
    assert oct((keys2 / "ingest.key").stat().st_mode & 0o777) == "0o600"
    assert (keys2 / "ingest.key").read_bytes() != open(svc.key, "rb").read()
    fresh = Identity("ingest", str(keys2 / "ingest.crt"), str(keys2 / "ingest.key"),
                     str(keys2 / "ca.crt"), kind="service")
    assert certs_of(hub, "ingest") == {old_fp: True, cert_sha256(fresh.cert): False}
    assert handshake_refusal(hub, fresh) is None
    assert handshake_refusal(hub, svc) == REVOKED_ALERT
    (entry,) = audit_entries(hub, "service.renew")
    assert entry["details"]["key"] == "made by moatctl"


def test_renew_refused_for_revoked_disabled_and_unknown(hub, tmp_path):
    gone, paused = hub.add_device(), hub.add_device()
    _, csr = make_csr(tmp_path, "next")
    hub.moatctl("device", "revoke", gone.id)
    hub.moatctl("device", "disable", paused.id)
    before = {d.id: certs_of(hub, d.id) for d in (gone, paused)}

    out = tmp_path / "gone.crt"
    r = hub.moatctl("device", "renew", gone.id, "--csr", csr, "--out", str(out), check=False)
    assert r.returncode == 1
    assert f"device {gone.id} is revoked: it cannot be renewed" in r.stderr
    assert r.stdout == "" and not out.exists()

    r = hub.moatctl("device", "renew", paused.id, "--csr", csr, check=False)
    assert r.returncode == 1
    assert f"device {paused.id} is disabled: enable it before renewing" in r.stderr
    assert r.stdout == ""
    # The development path is refused the same way, and writes no key.
    r = hub.moatctl("device", "renew", gone.id, "--out", str(tmp_path / "k"), check=False)
    assert r.returncode == 1 and "revoked" in r.stderr
    assert not (tmp_path / "k" / f"{gone.id}.key").exists()
    assert {d.id: certs_of(hub, d.id) for d in (gone, paused)} == before

    # Each refusal is in the audit log as a failed attempt.
    failed = [e for e in audit_entries(hub, "device.renew") if e["outcome"] == "failed"]
    assert [e["subject"] for e in failed] == [gone.id, paused.id, gone.id]
    assert "revoked" in failed[0]["details"]["error"]

    # Enabled again, the same device can be renewed.
    hub.moatctl("device", "enable", paused.id)
    hub.moatctl("device", "renew", paused.id, "--csr", csr)
    assert len(certs_of(hub, paused.id)) == 2

    # Unknown ids, and a device's id given as a service, are failures (1);
    # a renewal that says neither --csr nor --out is a usage error (2).
    r = hub.moatctl("device", "renew", "a" * 26, "--csr", csr, check=False)
    assert r.returncode == 1 and "no device" in r.stderr
    r = hub.moatctl("service", "renew", paused.id, "--csr", csr, check=False)
    assert r.returncode == 1
    r = hub.moatctl("device", "renew", paused.id, check=False)
    assert r.returncode == 2 and "--csr" in r.stderr


def test_failed_renewal_records_nothing(hub, tmp_path):
    """The certificate file cannot be written (it exists): the transaction
    rolls back, so the registry holds no certificate nobody received."""
    dev = hub.add_device()
    _, csr = make_csr(tmp_path, "next")
    taken = tmp_path / "taken.crt"
    taken.write_text("someone else's file\n")
    before = certs_of(hub, dev.id)
    r = hub.moatctl("device", "renew", dev.id, "--csr", csr, "--out", str(taken),
                    "--revoke-old", check=False)
    assert r.returncode == 1
    assert taken.read_text() == "someone else's file\n"
    assert certs_of(hub, dev.id) == before  # nothing added, nothing revoked
