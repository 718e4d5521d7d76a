"""The hub's protections, each as an attack that must fail.

Every test performs the attack against a real moatd and asserts the specific
refusal (the TLS alert, the CONNACK/SUBACK/PUBACK reason code, the closed
connection, or the absence of a message at a subscriber that a positive
control in the same test shows to be working), so that each one fails on a
hub that lacks the protection. Refusals are also checked in the hub's log,
with the principal and the reason.

The attacker's side uses the hand-driven client (mqttwire.RawClient): Paho
1.6.1 does not report PUBACK reason codes, and a refused CONNECT should not
trigger a library's reconnect logic. Legitimate subscribers use Paho.
"""
import datetime
import hashlib
import json
import select
import os
import re
import sqlite3
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubtools import Identity
from mqttwire import DISCONNECT, PUBACK, PUBLISH, PUBREC, V311, V5, Closed, RawClient

# Alerts as Python's ssl module names them (SSLError.reason).
ALERT_CERT_REQUIRED = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
ALERT_UNKNOWN_CA = "TLSV1_ALERT_UNKNOWN_CA"
ALERT_BAD_CERT = "SSLV3_ALERT_BAD_CERTIFICATE"
ALERT_REVOKED = "SSLV3_ALERT_CERTIFICATE_REVOKED"
ALERT_EXPIRED = "SSLV3_ALERT_CERTIFICATE_EXPIRED"
ALERT_PROTOCOL_VERSION = "TLSV1_ALERT_PROTOCOL_VERSION"
ALERT_HANDSHAKE_FAILURE = "SSLV3_ALERT_HANDSHAKE_FAILURE"


# ---- certificates made with python3-cryptography ------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write_pem(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def hub_ca(hub):
    """The hub's CA certificate and private key (DIR/ca.key, 0600 PEM)."""
    with open(os.path.join(hub.dir, "ca.crt"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(hub.dir, "ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def make_ca(cn, subject=None):
    """A throwaway CA (self-signed, EC P-256). subject: copy another CA's name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = subject if subject is not None else _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_cert(hub, cn, *, ca=None, key_path=None, not_before=None, not_after=None, tag=None,
               aki_key=None):
    """A client certificate for CN signed by `ca` (default: the hub's own CA,
    with its key from DIR/ca.key), shaped like the ones moatctl issues. The key
    is new unless key_path names an existing PEM key; aki_key: the public key
    named in the authority key identifier (default: the signer's). Returns an
    Identity whose `ca` is the hub CA certificate (to verify the hub)."""
    ca_cert, ca_key = ca if ca is not None else hub_ca(hub)
    if key_path:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    nb = not_before or _now() - datetime.timedelta(minutes=5)
    na = not_after or _now() + datetime.timedelta(days=30)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb).not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            aki_key or ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    base = os.path.join(hub.keys, f"forged-{tag or cn}-{cert.serial_number:x}"[:200])
    if not key_path:
        key_path = base + ".key"
        _write_pem(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write_pem(base + ".crt", cert.public_bytes(serialization.Encoding.PEM))
    return Identity(cn, base + ".crt", key_path, os.path.join(hub.dir, "ca.crt"))


def register_directly(hub, who, principal):
    """Record a certificate in registry.db behind moatctl's back (moatctl only
    issues certificates itself, so this is the only way to register one with
    chosen dates): the row moatctl would write, with the certificate's own
    fingerprint, serial and expiry."""
    with open(who.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    db = sqlite3.connect(os.path.join(hub.dir, "registry.db"))
    try:
        with db:
            db.execute("INSERT INTO certificates(fingerprint, principal, serial, not_after, revoked)"
                       " VALUES(?, ?, ?, ?, 0)",
                       (fp, principal, f"{cert.serial_number:032x}",
                        int(cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())))
    finally:
        db.close()


def tls_attempt(hub, ctx, client_id, version=V5, listen_first=0.0):
    """Try to connect with this TLS context and send CONNECT. Returns
    ("alert", reason) when the TLS layer refused, ("closed", why) for a
    close without an alert, or ("connack", code).

    In TLS 1.3 the client finishes its side of the handshake before the hub
    has judged its certificate; the hub's alert follows. A client that sends
    right away makes the hub's kernel answer with a TCP reset, which destroys
    the alert before it is read. So when a refusal is expected, listen first
    (up to listen_first seconds: a working hub answers in milliseconds, and a
    hub that accepts says nothing, so the CONNECT then goes out and is
    answered)."""
    c = None
    try:
        c = RawClient.open(hub, ctx=ctx, version=version, timeout=3.0)
        if listen_first and select.select([c.sock], [], [], listen_first)[0]:
            if c.recv(3.0) is None:  # the alert (raised) or the close
                raise Closed("EOF")
        return ("connack", c.connect(client_id, check=False).reason)
    except ssl.SSLError as e:
        return ("alert", e.reason or repr(e))
    except (Closed, ConnectionResetError, BrokenPipeError) as e:
        return ("closed", repr(e))
    finally:
        if c:
            c.close()


def refusal(hub, who, client_id=None, version=V5, ctx=None):
    """How the hub refuses this identity at the TLS layer (see tls_attempt)."""
    ctx = ctx or hub.ssl_context(who)
    cid = client_id if client_id is not None else (who.id if who else "x")
    return tls_attempt(hub, ctx, cid, version, listen_first=3.0)


# ---- fixtures and small helpers ----------------------------------------------

class Clients:
    """Paho and raw clients made by a test, all closed at its end."""

    def __init__(self, hub):
        self.hub = hub
        self.made = []

    def paho(self, who, **kw):
        c = self.hub.paho(who, **kw)
        self.made.append(c)
        c.subacks = {}
        c.subacked = threading.Event()
        c.disconnects = []   # (monotonic time, reason) of every disconnect
        c.connects = 0
        inner_connect = c.on_connect

        def on_subscribe(client, userdata, mid, codes, props=None):
            c.subacks[mid] = [getattr(x, "value", x) for x in codes]
            c.subacked.set()

        def on_disconnect(client, userdata, rc, props=None):
            c.disconnects.append((time.monotonic(), getattr(rc, "value", rc)))
            c.disconnected.set()

        def on_connect(client, userdata, flags, rc, props=None):
            c.connects += 1
            inner_connect(client, userdata, flags, rc, props)

        c.on_subscribe = on_subscribe
        c.on_disconnect = on_disconnect
        c.on_connect = on_connect
        if c.connack is not None:
            c.connects = 1
        return c

    def subscribe(self, c, topic, qos=1, timeout=5.0):
        """Subscribe and wait for the SUBACK; asserts the filter was granted."""
        rc, mid = c.subscribe(topic, qos=qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + timeout
        while mid not in c.subacks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mid in c.subacks, f"no SUBACK for {topic}"
        assert c.subacks[mid] == [qos], f"{topic} not granted: {c.subacks[mid]}"

    def raw(self, who, version=V5, client_id=None, **ctx_kw):
        c = RawClient.open(self.hub, ctx=self.hub.ssl_context(who, **ctx_kw), version=version,
                           timeout=3.0, auto_ack=True)
        self.made.append(c)
        code = c.connect(who.id if client_id is None else client_id, check=False).reason
        assert code == 0, f"{who.id}: CONNACK {code:#x}"
        return c

    def close_all(self):
        for c in self.made:
            if isinstance(c, RawClient):
                c.close()
            else:
                try:
                    c.disconnect()  # first: lets the loop thread end at once
                except Exception:
                    pass
                c.loop_stop()


@pytest.fixture
def clients(hub):
    cl = Clients(hub)
    try:
        yield cl
    finally:
        cl.close_all()


def wait_until(cond, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def topics(client):
    """(topic, payload) of what a Paho client received so far."""
    return [(m.topic, m.payload) for m in list(client.messages)]


def connack_ok(hub, who, version=V5):
    """The positive control: this identity connects (CONNACK 0)."""
    assert tls_attempt(hub, hub.ssl_context(who), who.id, version) == ("connack", 0)


def log_has(hub, pattern, timeout=3.0):
    """True once the hub logged a line matching pattern (a regex, searched
    per line); fails with the log's tail otherwise."""
    rx = re.compile(pattern)
    if wait_until(lambda: any(rx.search(line) for line in hub.log().splitlines()), timeout):
        return True
    raise AssertionError(f"log never matched {pattern!r}:\n{hub.log()[-3000:]}")


def sender(hub, name="sender"):
    """A service that may publish anywhere under moat/ (to drive deliveries)."""
    return hub.add_service(name, "allow connect\nallow publish moat/#\n")


# ---- 1-4: who may complete the TLS handshake ---------------------------------

def test_no_client_certificate_is_refused_in_the_handshake(hub):
    dev = hub.add_device()
    hub.start()
    connack_ok(hub, dev)
    # hub.ssl_context(None) verifies the hub and presents no certificate.
    assert refusal(hub, None, dev.id) == ("alert", ALERT_CERT_REQUIRED)
    assert log_has(hub, r"moatd warning: 127\.0\.0\.1:\d+: TLS handshake failed: .*"
                        r"peer did not return a certificate")


def test_certificate_from_another_ca_is_refused(hub):
    dev = hub.add_device()
    hub.start()
    connack_ok(hub, dev)
    # A stranger's CA issues a certificate naming a real device (and even
    # reusing its key: only the signature differs).
    rogue = issue_cert(hub, dev.id, ca=make_ca("rogue CA"), key_path=dev.key, tag="rogue")
    assert refusal(hub, rogue) == ("alert", ALERT_UNKNOWN_CA)
    assert log_has(hub, r"127\.0\.0\.1:\d+: client certificate refused: "
                        r"unable to get local issuer certificate")
    # A look-alike CA with the hub CA's name, its certificate naming the hub
    # CA's key identifier, so the chain is built to the hub CA: the
    # signature does not verify (alert decrypt_error).
    ca_cert, _ = hub_ca(hub)
    twin = issue_cert(hub, dev.id, ca=make_ca("", subject=ca_cert.subject), tag="twin",
                      aki_key=ca_cert.public_key())
    assert refusal(hub, twin) == ("alert", "TLSV1_ALERT_DECRYPT_ERROR")
    assert log_has(hub, r"127\.0\.0\.1:\d+: client certificate refused: "
                        r"certificate signature failure")


def test_hub_ca_certificate_not_recorded_by_moatctl_is_refused(hub):
    dev = hub.add_device()
    hub.start()
    connack_ok(hub, dev)
    # Minted with the hub's own CA key, for the device's own id and key:
    # everything TLS checks is right, only the registry has never seen it.
    forged = issue_cert(hub, dev.id, key_path=dev.key, tag="unrecorded")
    assert refusal(hub, forged) == ("alert", ALERT_BAD_CERT)
    assert log_has(hub, r"127\.0\.0\.1:\d+: certificate not registered with this hub: refused")
    # Control: the same certificate, once recorded, is accepted, so the
    # refusal above was the registry lookup and nothing else.
    register_directly(hub, forged, dev.id)
    assert tls_attempt(hub, hub.ssl_context(forged), dev.id) == ("connack", 0)


def test_expired_certificate_is_refused_even_when_registered(hub):
    dev = hub.add_device()
    hub.start()
    now = _now()
    expired = issue_cert(hub, dev.id, not_before=now - datetime.timedelta(days=10),
                         not_after=now - datetime.timedelta(days=1), tag="expired")
    early = issue_cert(hub, dev.id, not_before=now + datetime.timedelta(days=1),
                       not_after=now + datetime.timedelta(days=10), tag="early")
    fresh = issue_cert(hub, dev.id, tag="fresh")
    # moatctl cannot issue a certificate with past dates, so all three are
    # recorded directly; `fresh` shows that such a record is accepted.
    for who in (expired, early, fresh):
        register_directly(hub, who, dev.id)
    assert tls_attempt(hub, hub.ssl_context(fresh), dev.id) == ("connack", 0)
    assert refusal(hub, expired) == ("alert", ALERT_EXPIRED)
    assert log_has(hub, r"client certificate refused: certificate has expired")
    assert refusal(hub, early) == ("alert", ALERT_BAD_CERT)
    assert log_has(hub, r"client certificate refused: certificate is not yet valid")


# ---- 5-6: revocation and disabling --------------------------------------------

def test_revoked_and_disabled_devices_are_refused_at_the_handshake(hub):
    gone, paused = hub.add_device(), hub.add_device()
    hub.start()
    connack_ok(hub, gone)
    connack_ok(hub, paused)

    hub.moatctl("device", "revoke", gone.id)
    assert refusal(hub, gone) == ("alert", ALERT_REVOKED)
    assert log_has(hub, rf"moatd warning: {gone.id}: 127\.0\.0\.1:\d+: identity revoked "
                        r"\(certificate revoked\): refused")
    r = hub.moatctl("device", "enable", gone.id, check=False)
    assert r.returncode == 1, "a revoked device must not be enabled again"
    assert refusal(hub, gone) == ("alert", ALERT_REVOKED)

    hub.moatctl("device", "disable", paused.id)
    assert refusal(hub, paused) == ("alert", ALERT_REVOKED)
    assert log_has(hub, rf"{paused.id}: 127\.0\.0\.1:\d+: identity disabled "
                        r"\(certificate valid\): refused")
    hub.moatctl("device", "enable", paused.id)
    connack_ok(hub, paused)


def _wait_disconnect(raw, timeout):
    """Read until the hub closes; returns (seconds it took, DISCONNECT
    reason or None when it closed without one)."""
    t0 = time.monotonic()
    got = raw.closed_within(timeout)
    if got is None:
        raise AssertionError(f"still connected after {timeout} s")
    reasons = [p.reason for p in got if p.type == DISCONNECT]
    return time.monotonic() - t0, (reasons[-1] if reasons else None)


def test_revoked_while_connected_is_disconnected(hub, clients):
    victim, bystander, doomed = hub.add_device(), hub.add_device(), hub.add_device()
    svc = hub.add_service("watcher", "allow connect\nallow subscribe moat/+/up/#\n"
                                     "allow receive moat/+/up/#\n")
    hub.start()
    # Raw client for the victim: Paho 1.6.1 drops a DISCONNECT's reason code
    # when the packet carries no properties.
    v = clients.raw(victim)
    b = clients.paho(bystander)
    s = clients.paho(svc)
    clients.subscribe(s, "moat/+/up/#")
    # Positive control before: the victim's session works.
    assert v.publish_acked(f"moat/{victim.id}/up/t", b"before").reason == 0x00
    assert wait_until(lambda: (f"moat/{victim.id}/up/t", b"before") in topics(s))

    t0 = time.monotonic()
    hub.moatctl("device", "revoke", victim.id)
    _, reason = _wait_disconnect(v, 3.0)
    assert time.monotonic() - t0 < 3.0
    assert reason == 0x98, reason  # MQTT 5 DISCONNECT: administrative action
    assert log_has(hub, rf"{victim.id}: identity revoked or disabled: connection closed")
    # Only the revoked identity was cut off, and it cannot come back.
    assert refusal(hub, victim) == ("alert", ALERT_REVOKED)
    assert not b.disconnected.is_set() and not s.disconnected.is_set()
    b.publish(f"moat/{bystander.id}/up/t", b"still here", qos=1).wait_for_publish(5)
    assert wait_until(lambda: (f"moat/{bystander.id}/up/t", b"still here") in topics(s))

    # Deleting a live device works the same way: its certificate is unknown now.
    d = clients.raw(doomed)
    hub.moatctl("device", "delete", doomed.id)
    took, reason = _wait_disconnect(d, 3.0)
    assert reason == 0x98 and took < 3.0
    assert refusal(hub, doomed) == ("alert", ALERT_BAD_CERT)

    # Disabling a live service works the same way (Paho sees the close).
    t0 = time.monotonic()
    hub.moatctl("service", "disable", svc.id)
    assert s.disconnected.wait(3.0), "disabled service still connected after 3 s"
    assert s.disconnects[0][0] - t0 < 3.0
    s.loop_stop()  # Paho would keep retrying (and be refused by TLS)
    assert log_has(hub, r"watcher: identity revoked or disabled: connection closed")
    assert not b.disconnected.is_set()


# ---- 7, 12: client identifiers ------------------------------------------------

def test_device_cannot_use_another_devices_client_id(hub, clients):
    """The MiSafes attack: A's certificate, B's client id."""
    a, b = hub.add_device(), hub.add_device()
    cmd = sender(hub)
    hub.start()
    victim = clients.paho(b)
    clients.subscribe(victim, f"moat/{b.id}/down/#")
    ctx = hub.ssl_context(a)
    assert tls_attempt(hub, ctx, b.id, V5) == ("connack", 0x85)
    assert tls_attempt(hub, ctx, b.id, V311) == ("connack", 0x02)
    # Nor B's id with a suffix (only services may use NAME/suffix).
    assert tls_attempt(hub, ctx, b.id + "/x", V5) == ("connack", 0x85)
    assert log_has(hub, rf"moatd warning: {a.id}: client identifier '{b.id}' does not "
                        r"belong to this certificate")
    assert log_has(hub, rf"{a.id}: CONNECT refused: client identifier not valid")
    # B's session was not taken over: still connected, still receiving.
    s = clients.raw(cmd)
    assert s.publish_acked(f"moat/{b.id}/down/cmd", b"for B", qos=1).reason == 0x00
    assert wait_until(lambda: (f"moat/{b.id}/down/cmd", b"for B") in topics(victim))
    assert not victim.disconnected.is_set(), victim.disconnects
    assert victim.connects == 1
    # Control: A's own id (and the empty id, replaced by it) are accepted.
    assert tls_attempt(hub, ctx, a.id, V5) == ("connack", 0)
    assert tls_attempt(hub, ctx, "", V5) == ("connack", 0)


def test_service_client_ids_are_its_name_or_name_slash_suffix(hub, clients):
    ingest = hub.add_service("ingest", "allow connect\n")
    other = hub.add_service("other", "allow connect\nallow subscribe moat/+/up/#\n"
                                     "allow receive moat/+/up/#\n")
    dev = hub.add_device()
    hub.start()
    o = clients.paho(other)
    clients.subscribe(o, "moat/+/up/#")
    ctx = hub.ssl_context(ingest)
    # Allowed: NAME and NAME/anything.
    assert tls_attempt(hub, ctx, "ingest", V5) == ("connack", 0)
    assert tls_attempt(hub, ctx, "ingest/worker-1", V5) == ("connack", 0)
    assert tls_attempt(hub, ctx, "ingest/worker-1", V311) == ("connack", 0)
    # Refused: another service's name, with or without a suffix, a name that
    # only starts like its own, and a device's id.
    for cid in ("other", "other/x", "ingest-2", "ingestx/y", dev.id):
        assert tls_attempt(hub, ctx, cid, V5) == ("connack", 0x85), cid
    assert tls_attempt(hub, ctx, "other", V311) == ("connack", 0x02)
    assert log_has(hub, r"moatd warning: ingest: client identifier 'other' does not belong "
                        r"to this certificate")
    # The other service kept its session.
    d = clients.raw(dev)
    assert d.publish_acked(f"moat/{dev.id}/up/t", b"x", qos=1).reason == 0x00
    assert wait_until(lambda: (f"moat/{dev.id}/up/t", b"x") in topics(o))
    assert not o.disconnected.is_set() and o.connects == 1


# ---- 8: subscriptions outside the device's namespace --------------------------

def _forbidden_filters(other):
    return ["#", "moat/#", "moat/+/up/#", "+/+/down/#", f"moat/{other}/down/#",
            f"moat/{other}/up/#", f"$share/g/moat/{other}/down/#", "$share/g/#"]


@pytest.mark.parametrize("version,refused", [(V5, 0x87), (V311, 0x80)], ids=["mqtt5", "mqtt311"])
def test_device_cannot_subscribe_outside_its_namespace(hub, clients, version, refused):
    a, b = hub.add_device(), hub.add_device()
    cmd = sender(hub)
    hub.start()
    att = clients.raw(a, version)
    bad = _forbidden_filters(b.id)
    codes = att.subscribe([(f, 1) for f in bad + [f"moat/{a.id}/down/#"]]).reasons
    assert codes == [refused] * len(bad) + [1], [hex(c) for c in codes]
    assert log_has(hub, rf"{a.id}: SUBSCRIBE 'moat/\+/up/#' refused: not authorized by policy")
    assert log_has(hub, rf"{a.id}: SUBSCRIBE '\$share/g/moat/{b.id}/down/#' refused")
    # Nothing of B's reaches A; A's own subscription works (the control,
    # sent last, so everything before it has been routed).
    victim = clients.raw(b)
    # 0x10: no subscribers
    assert victim.publish_acked(f"moat/{b.id}/up/secret", b"B up", qos=1).reason == 0x10
    s = clients.raw(cmd)
    assert s.publish_acked(f"moat/{b.id}/down/secret", b"B down", qos=1).reason == 0x10
    assert s.publish_acked(f"moat/{a.id}/down/ok", b"A down", qos=1).reason == 0x00
    p = att.expect(PUBLISH, timeout=3.0)
    assert (p.topic, p.payload) == (f"moat/{a.id}/down/ok", b"A down")
    assert att.received == [(f"moat/{a.id}/down/ok", b"A down")]


# ---- 9: publishing outside the device's namespace -----------------------------

def _publish_setup(hub, clients):
    a, b = hub.add_device(), hub.add_device()
    ingest = hub.add_service("ingest", "allow connect\nallow subscribe moat/#\n"
                                       "allow receive moat/#\n")
    cmd = sender(hub)
    hub.start()
    s = clients.paho(ingest)
    clients.subscribe(s, "moat/+/up/#")
    clients.subscribe(s, "moat/+/down/#")
    victim = clients.paho(b)
    clients.subscribe(victim, f"moat/{b.id}/down/#")
    forged = [f"moat/{b.id}/up/x", f"moat/{b.id}/down/x", f"moat/{a.id}/down/x"]
    return a, b, cmd, s, victim, forged


def _nothing_forged_arrived(clients, att, a, b, cmd, s, victim):
    """Positive controls, sent after the forgeries (one broker, one order):
    A's legitimate message (on A's connection att, when given) reaches the
    service and a command reaches B; once they are there, the forged ones
    would have been too."""
    if att is not None:
        assert att.publish_acked(f"moat/{a.id}/up/x", b"legit", qos=1, pid=99).reason == 0x00
    c = clients.raw(cmd)
    assert c.publish_acked(f"moat/{b.id}/down/ok", b"cmd", qos=1).reason == 0x00
    assert wait_until(lambda: (f"moat/{b.id}/down/ok", b"cmd") in topics(s))
    assert wait_until(lambda: (f"moat/{b.id}/down/ok", b"cmd") in topics(victim))
    time.sleep(0.1)
    assert all(p != b"forged" for _, p in topics(s) + topics(victim)), topics(s)
    assert topics(victim) == [(f"moat/{b.id}/down/ok", b"cmd")]


def test_device_cannot_publish_outside_its_namespace_mqtt5(hub, clients):
    a, b, cmd, s, victim, forged = _publish_setup(hub, clients)
    att = clients.raw(a)
    pid = 1
    for topic in forged:
        assert att.publish_acked(topic, b"forged", qos=1, pid=pid).reason == 0x87, topic
        assert att.publish_acked(topic, b"forged", qos=2, pid=pid + 1).reason == 0x87, topic
        att.publish(topic, b"forged", qos=0)  # no answer possible: must just vanish
        pid += 2
    assert log_has(hub, rf"{a.id}: PUBLISH to 'moat/{b.id}/up/x' refused: not authorized")
    assert log_has(hub, rf"{a.id}: PUBLISH to 'moat/{a.id}/down/x' refused: not authorized")
    # The connection stays usable (MQTT 5 reports refusals per message).
    _nothing_forged_arrived(clients, att, a, b, cmd, s, victim)
    assert (f"moat/{a.id}/up/x", b"legit") in topics(s)


def test_device_cannot_publish_outside_its_namespace_mqtt311(hub, clients):
    """MQTT 3.1.1 has no way to report a refused PUBLISH: the hub must close
    the connection instead of acknowledging a message it dropped."""
    a, b, cmd, s, victim, forged = _publish_setup(hub, clients)
    for topic in forged:
        for qos in (1, 0):
            att = clients.raw(a, V311)
            # No PUBACK is awaited: closed_within collects any that comes.
            att.publish(topic, b"forged", qos=qos, pid=7 if qos else None)
            got = att.closed_within(3.0)
            assert got is not None, f"{topic} QoS {qos}: connection left open"
            acks = [p for p in got if p.type in (PUBACK, PUBREC)]
            assert acks == [], f"{topic}: forged message acknowledged"
    assert log_has(hub, rf"{a.id}: PUBLISH to 'moat/{b.id}/down/x' refused")
    legit = clients.raw(a, V311)
    _nothing_forged_arrived(clients, legit, a, b, cmd, s, victim)
    assert (f"moat/{a.id}/up/x", b"legit") in topics(s)


def test_will_message_outside_namespace_is_refused_at_connect(hub, clients):
    a, b, cmd, s, victim, forged = _publish_setup(hub, clients)
    for version, code in ((V5, 0x87), (V311, 0x05)):
        for topic in forged:
            c = RawClient.open(hub, a, version=version, timeout=3.0)
            clients.made.append(c)
            will = dict(topic=topic, payload=b"forged")
            assert c.connect(a.id, will=will, check=False).reason == code, topic
            c.close()  # without DISCONNECT: a will, had it been accepted, would go now
    assert log_has(hub, rf"{a.id}: CONNECT refused: will topic not allowed")
    _nothing_forged_arrived(clients, None, a, b, cmd, s, victim)


# ---- 10: TLS versions and cipher suites --------------------------------------

def _tls_ctx(hub, who, version, ciphers=None):
    ctx = hub.ssl_context(who, minimum=version, maximum=version)
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def test_tls12_is_refused_when_only_tls13_is_allowed(hub):
    dev = hub.add_device()
    hub.start()
    connack_ok(hub, dev)
    ctx = _tls_ctx(hub, dev, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert refusal(hub, dev, ctx=ctx) == ("alert", ALERT_PROTOCOL_VERSION)
    assert log_has(hub, r"127\.0\.0\.1:\d+: TLS handshake failed: .*unsupported protocol")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls11_is_refused(hub):
    dev = hub.add_device()
    # The client must be able to offer TLS 1.1 at all (Debian's OpenSSL
    # will not at its default security level): SECLEVEL=0.
    ctx = _tls_ctx(hub, dev, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
    hub.start()
    connack_ok(hub, dev)
    assert refusal(hub, dev, ctx=ctx) == ("alert", ALERT_PROTOCOL_VERSION)
    hub.stop()
    hub.set_config("tls", "min_version", "1.2")  # and with 1.2 allowed, still not 1.1
    hub.start()
    connack_ok(hub, dev)
    assert refusal(hub, dev, ctx=ctx) == ("alert", ALERT_PROTOCOL_VERSION)


def test_tls12_when_allowed_takes_only_ecdhe_aead_suites(hub, clients):
    hub.set_config("tls", "min_version", "1.2")
    dev = hub.add_device()
    hub.start()
    for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        c = RawClient.open(hub, ctx=_tls_ctx(hub, dev, ssl.TLSVersion.TLSv1_2, suite),
                           timeout=3.0)
        clients.made.append(c)
        assert c.sock.version() == "TLSv1.2" and c.sock.cipher()[0] == suite
        assert c.connect(dev.id, check=False).reason == 0
    for suite in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                  "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"):
        ctx = _tls_ctx(hub, dev, ssl.TLSVersion.TLSv1_2, suite)
        assert refusal(hub, dev, ctx=ctx) == ("alert", ALERT_HANDSHAKE_FAILURE), suite
    assert log_has(hub, r"TLS handshake failed: .*no shared cipher")
    # TLS 1.3 still works with 1.2 allowed.
    c = RawClient.open(hub, dev, timeout=3.0)
    clients.made.append(c)
    assert c.sock.version() == "TLSv1.3" and c.connect(dev.id, check=False).reason == 0


# ---- 11: policy changes reach live sessions -----------------------------------

def _live_policy_setup(hub, clients):
    a, b = hub.add_device(), hub.add_device()
    svc = hub.add_service("ingest", f"allow connect\nallow subscribe moat/{b.id}/up/#\n"
                                    f"allow receive moat/{b.id}/up/#\n")
    hub.add_policy("wide", "allow subscribe moat/+/up/#\nallow receive moat/+/up/#\n")
    hub.moatctl("group", "add", "wide")
    hub.moatctl("group", "attach", "wide", "wide")
    hub.moatctl("group", "add-member", "wide", "ingest")
    hub.start()
    s = clients.paho(svc)
    clients.subscribe(s, "moat/+/up/#")
    clients.subscribe(s, f"moat/{b.id}/up/#")
    da, db = clients.raw(a), clients.raw(b)
    # Control: the wide subscription delivers A's messages.
    assert da.publish_acked(f"moat/{a.id}/up/t", b"before", pid=1).reason == 0x00
    assert wait_until(lambda: (f"moat/{a.id}/up/t", b"before") in topics(s))
    return a, b, s, da, db


def _wide_subscription_goes(hub, a, b, s, da, db, change):
    t0 = time.monotonic()
    hub.moatctl(*change)
    # While the wide subscription exists, A's QoS 1 messages match a
    # subscriber (PUBACK 0x00); once it is removed, none (0x10).
    pid, reason = 2, 0x00
    while reason != 0x10 and time.monotonic() - t0 < 3.0:
        reason = da.publish_acked(f"moat/{a.id}/up/t", b"probe", pid=pid).reason
        pid += 1
        time.sleep(0.05)
    assert reason == 0x10, "subscription still matching 3 s after the policy change"
    assert time.monotonic() - t0 < 3.0
    assert log_has(hub, r"ingest: subscription 'moat/\+/up/#' removed: no longer allowed by policy")
    before = len(topics(s))
    assert da.publish_acked(f"moat/{a.id}/up/t", b"after", pid=pid).reason == 0x10
    # The narrower, still allowed subscription keeps working (control), on
    # the same connection: no reconnect happened.
    assert db.publish_acked(f"moat/{b.id}/up/t", b"b after", pid=1).reason == 0x00
    assert wait_until(lambda: (f"moat/{b.id}/up/t", b"b after") in topics(s))
    time.sleep(0.1)
    assert (f"moat/{a.id}/up/t", b"after") not in topics(s)
    assert all(t.startswith(f"moat/{b.id}/") for t, _ in topics(s)[before:])
    assert s.connects == 1 and not s.disconnected.is_set()


def test_policy_replaced_removes_live_subscription(hub, clients, tmp_path):
    a, b, s, da, db = _live_policy_setup(hub, clients)
    narrowed = tmp_path / "wide-narrowed.policy"
    narrowed.write_text(f"allow subscribe moat/{b.id}/up/#\nallow receive moat/{b.id}/up/#\n")
    _wide_subscription_goes(hub, a, b, s, da, db,
                            ("policy", "add", "wide", str(narrowed), "--replace"))


@pytest.mark.parametrize("change", [("group", "detach", "wide", "wide"),
                                    ("group", "remove-member", "wide", "ingest")],
                         ids=["detach", "remove-member"])
def test_policy_detached_removes_live_subscription(hub, clients, change):
    a, b, s, da, db = _live_policy_setup(hub, clients)
    _wide_subscription_goes(hub, a, b, s, da, db, change)


def test_policy_change_applies_to_the_next_connection_at_once(hub, clients, tmp_path):
    """A worker shares one policy set among the sessions of a principal. A
    policy change must reach the next connection of that principal at once,
    not at the next registry poll (made a minute here): the shared set is
    dropped as soon as the registry moves."""
    svc = hub.add_service("pool", "allow connect\nallow publish pool/old/#\n")
    hub.set_config("limits", "registry_poll_ms", "60000")
    hub.start()
    first = clients.raw(svc, client_id="pool/1")
    assert first.publish_acked("pool/old/t", b"x", pid=1).reason in (0x00, 0x10)
    # the set is now shared
    assert first.publish_acked("pool/new/t", b"x", pid=2).reason == 0x87
    changed = tmp_path / "pool-changed.policy"
    changed.write_text("allow connect\nallow publish pool/new/#\n")
    hub.moatctl("policy", "add", "pool-policy", str(changed), "--replace")
    second = clients.raw(svc, client_id="pool/2")
    assert second.publish_acked("pool/old/t", b"x", pid=1).reason == 0x87
    assert second.publish_acked("pool/new/t", b"x", pid=2).reason in (0x00, 0x10)


# ---- 13: refusals are logged with the principal and the reason ---------------

def test_refusals_are_logged_with_principal_and_reason(hub, clients):
    a, b = hub.add_device(), hub.add_device()
    hub.set_config("hub", "log_format", "json")
    hub.start()
    assert refusal(hub, issue_cert(hub, a.id, tag="stray")) == ("alert", ALERT_BAD_CERT)
    assert tls_attempt(hub, hub.ssl_context(a), b.id) == ("connack", 0x85)
    att = clients.raw(a)
    assert att.subscribe([(f"moat/{b.id}/up/#", 1)]).reasons == [0x87]
    assert att.publish_acked(f"moat/{b.id}/down/x", b"forged").reason == 0x87
    hub.moatctl("device", "disable", b.id)
    assert refusal(hub, b) == ("alert", ALERT_REVOKED)

    def entries():
        return [json.loads(l) for l in hub.log().splitlines() if l.startswith("{")]

    def logged(principal, *words):
        return any(e["principal"] == principal and e["level"] == "warning" and
                   all(w in e["msg"] for w in words) for e in entries())

    assert wait_until(lambda: logged("", "127.0.0.1:", "not registered"))
    assert logged(a.id, f"client identifier '{b.id}'", "does not belong")
    assert logged(a.id, f"SUBSCRIBE 'moat/{b.id}/up/#' refused", "not authorized")
    assert logged(a.id, f"PUBLISH to 'moat/{b.id}/down/x' refused", "not authorized")
    assert logged(b.id, "identity disabled", "refused")


def test_policy_narrowed_while_hub_down_applies_to_stored_subscriptions(hub, clients, tmp_path):
    """A persistent session's subscriptions come back from hub.db at start;
    they must be judged by the policy in force then, as live ones are."""
    a, b = hub.add_device(), hub.add_device()
    svc = hub.add_service("ingest", "allow connect\nallow subscribe moat/+/up/#\n"
                                    "allow receive moat/+/up/#\n")
    hub.start()
    keep = hub.props("CONNECT", SessionExpiryInterval=600)
    s = clients.paho(svc, clean=False, properties=keep)
    clients.subscribe(s, "moat/+/up/#")
    s.disconnect()
    s.loop_stop()
    hub.stop()
    # Narrowed while the hub is down: subscribe only to B's topics. (receive
    # stays wide, so a subscription that survives shows up as deliveries.)
    narrowed = tmp_path / "narrowed.policy"
    narrowed.write_text(f"allow connect\nallow subscribe moat/{b.id}/up/#\n"
                        "allow receive moat/+/up/#\n")
    hub.moatctl("policy", "add", "ingest-policy", str(narrowed), "--replace")
    hub.start()
    s2 = clients.paho(svc, clean=False, properties=keep)
    assert s2.connack[0]["session present"] == 1  # control: the session was restored
    assert log_has(hub, r"ingest: subscription 'moat/\+/up/#' removed: no longer allowed")
    da = clients.raw(a)
    assert da.publish_acked(f"moat/{a.id}/up/t", b"after restart").reason == 0x10
    clients.subscribe(s2, f"moat/{b.id}/up/#")
    assert clients.raw(b).publish_acked(f"moat/{b.id}/up/t", b"b").reason == 0x00
    assert wait_until(lambda: (f"moat/{b.id}/up/t", b"b") in topics(s2))
    assert (f"moat/{a.id}/up/t", b"after restart") not in topics(s2)
