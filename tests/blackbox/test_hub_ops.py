"""Operations on a running hub: SIGHUP reloads the configuration (limits, the
TLS certificate), connections end when their certificate does or when
policies stop allowing them, and a refused client is told why (the TLS alert
reaches it instead of a reset).
"""
import datetime
import os
import signal
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mqttwire import CONNACK, PINGRESP, RawClient
from test_hub_security import _wait_disconnect, hub_ca, issue_cert, register_directly


def connect_v5(hub, who, client_id=None):
    raw = RawClient.open(hub, who, timeout=3.0, auto_ack=True)
    assert raw.connect(client_id or who.id, check=False).reason == 0
    return raw


def ping(raw):
    raw.pingreq()
    raw.expect(PINGRESP)
    return True


def test_connection_ends_when_its_certificate_expires(hub):
    dev = hub.add_device()
    short = issue_cert(hub, dev.id, tag="short",
                       not_after=datetime.datetime.now(datetime.timezone.utc)
                       + datetime.timedelta(seconds=3))
    register_directly(hub, short, dev.id)
    hub.start()
    raw = connect_v5(hub, short, dev.id)
    try:
        took, reason = _wait_disconnect(raw, timeout=8)
    finally:
        raw.close()
    assert reason == 0x87, reason
    assert took < 7
    hub.wait_log(r"certificate expired")
    # A long-lived certificate of the same device is unaffected.
    ok = connect_v5(hub, dev)
    ok.close()


def test_policy_without_connect_ends_live_connection(hub):
    svc = hub.add_service("svc", "allow connect\nallow all t/#\n")
    hub.start()
    raw = connect_v5(hub, svc)
    try:
        path = os.path.join(hub.keys, "svc-narrow.policy")
        with open(path, "w") as f:
            # `all` would still include connect: name the actions.
            f.write("allow publish t/#\nallow subscribe t/#\nallow receive t/#\n")
        hub.moatctl("policy", "add", "svc-policy", path, "--replace")
        took, reason = _wait_disconnect(raw, timeout=5)
    finally:
        raw.close()
    assert reason == 0x87, reason
    hub.wait_log(r"no longer allow connecting")


def _topic_accepted(hub, svc, topic):
    raw = connect_v5(hub, svc)
    try:
        return raw.publish_acked(topic, b"x", qos=1).reason
    finally:
        raw.close()


def test_sighup_reloads_limits(hub):
    svc = hub.add_service("svc", "allow connect\nallow all t/#\n")
    hub.start()
    long_topic = "t/" + "a" * 40
    assert _topic_accepted(hub, svc, long_topic) in (0x00, 0x10)
    hub.set_config("limits", "max_topic_length", "20")
    hub.proc.send_signal(signal.SIGHUP)
    hub.wait_log(r"configuration reloaded")
    assert _topic_accepted(hub, svc, long_topic) == 0x90
    assert _topic_accepted(hub, svc, "t/short") in (0x00, 0x10)


def test_sighup_with_a_bad_config_changes_nothing(hub):
    svc = hub.add_service("svc", "allow connect\nallow all t/#\n")
    hub.start()
    hub.set_config("limits", "max_topic_length", "20")
    hub.set_config("limits", "max_bananas", "3")
    hub.proc.send_signal(signal.SIGHUP)
    hub.wait_log(r"configuration not reloaded: .*max_bananas")
    assert hub.alive()
    assert _topic_accepted(hub, svc, "t/" + "a" * 40) in (0x00, 0x10)


def _server_serial(hub, who):
    with hub.ssl_context(who).wrap_socket(
            __import__("socket").create_connection(("127.0.0.1", hub.port), timeout=3),
            server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_rotates_the_server_certificate(hub):
    dev = hub.add_device()
    hub.start()
    before = _server_serial(hub, dev)
    ca_cert, ca_key = hub_ca(hub)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotated")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    key_path = os.path.join(hub.dir, "server.key")
    os.chmod(key_path, 0o600)
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(hub.dir, "server.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    live = connect_v5(hub, dev)          # made with the old certificate
    hub.proc.send_signal(signal.SIGHUP)
    hub.wait_log(r"configuration reloaded")
    assert _server_serial(hub, dev) == cert.serial_number != before
    assert ping(live), "a connection made before the reload keeps working"
    live.close()


def test_refused_client_is_told_why(hub):
    """Clients send CONNECT right after the TLS 1.3 handshake, before the hub's
    verdict arrives; without the hub's lingering close that CONNECT meets a
    closed socket, the kernel answers with a reset and the client sees
    "connection lost" instead of the alert that says why."""
    dev = hub.add_device()
    hub.start()
    hub.moatctl("device", "revoke", dev.id)
    r = hub.mosquitto_pub(dev, f"moat/{dev.id}/up/t", "x", "-d")
    assert r.returncode != 0
    assert "alert certificate revoked" in (r.stdout + r.stderr), r.stdout + r.stderr

    sock = __import__("socket").create_connection(("127.0.0.1", hub.port), timeout=5)
    s = hub.ssl_context(dev).wrap_socket(sock, server_hostname="127.0.0.1")
    try:
        s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        try:
            s.recv(100)
            raise AssertionError("a revoked device was answered")
        except ssl.SSLError as e:
            assert "CERTIFICATE_REVOKED" in str(e), e
    finally:
        s.close()


def test_unsupported_protocol_level_gets_connack(hub):
    """[MQTT-3.1.2-2]: an unsupported level is answered with CONNACK 0x01
    (MQTT 3.1's "MQIsdp" level 3, and levels above 5 named "MQTT")."""
    dev = hub.add_device()
    hub.start()
    for name, level in ((b"MQIsdp", 3), (b"MQTT", 6)):
        body = len(name).to_bytes(2, "big") + name + bytes([level, 0x02, 0, 60]) + b"\x00\x00"
        raw = RawClient.open(hub, dev, timeout=3.0)
        try:
            raw.send(bytes([0x10, len(body)]) + body)
            p = raw.recv(3.0)
            assert (p.type, p.body) == (CONNACK, b"\x00\x01"), p
        finally:
            raw.close()


def test_large_user_properties_are_forwarded(hub):
    """Properties are bounded by the packet size limits only: a 20 KB user
    property on a PUBLISH and a 6 KB one on a will reach subscribers intact
    (fixed 8 KiB / 4 KiB buffers once refused the first and dropped the will)."""
    import paho.mqtt.client as mqtt
    svc = hub.add_service("svc", "allow connect\nallow all t/#\n")
    hub.start()
    big = "v" * 20000
    sub = hub.paho(svc, client_id="svc/sub")
    sub.subscribe("t/#", qos=1)
    time.sleep(0.3)
    props = hub.props("PUBLISH", UserProperty=[("k", big)])
    pub = hub.paho(svc, client_id="svc/pub")
    pub.publish("t/x", b"1", qos=1, properties=props).wait_for_publish(5)

    # A will travels in CONNECT, under max_packet_before_connect (8 KiB), but
    # above the 4 KiB the old buffer held.
    will_big = "w" * 6000
    will_props = hub.props("WILLMESSAGE", UserProperty=[("w", will_big)])
    dying = mqtt.Client(client_id="svc/dying", protocol=mqtt.MQTTv5)
    dying.tls_set_context(hub.ssl_context(svc))
    dying.will_set("t/will", b"gone", qos=1, properties=will_props)
    dying.connect("127.0.0.1", hub.port, keepalive=30)
    dying.loop_start()
    time.sleep(0.5)
    sock = dying.socket()
    dying.loop_stop()
    sock.close()  # abrupt: no DISCONNECT, so the will is published

    msgs = hub.wait_messages(sub, 2, timeout=8)
    got = {m.topic: m for m in msgs}
    assert set(got) == {"t/x", "t/will"}, [m.topic for m in msgs]
    assert got["t/x"].properties.UserProperty == [("k", big)]
    assert got["t/will"].properties.UserProperty == [("w", will_big)]
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
