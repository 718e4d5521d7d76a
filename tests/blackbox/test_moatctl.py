"""Black-box tests of moatctl, the operator's command line.

Each test runs the real program and checks what an attacker or a careless
build would get wrong: files and keys readable by others, a server certificate
that does not name the hub, a device id taken from the CSR instead of chosen
by the registry, a CSR accepted without proof that the requester holds the
private key, a revoked device that can be enabled again, a policy document
stored although the hub could not parse it, and an existing hub's keys
overwritten by a second `init`. Certificates are checked with `openssl` and
python3-cryptography, the registry with sqlite3, independently of moatctl.
"""
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import ROOT, program

ID_RE = re.compile(r"^[a-z2-7]{26}$")
DATA_FILES = {
    "ca.key": 0o600,
    "ca.crt": 0o644,
    "server.key": 0o600,
    "server.crt": 0o644,
    "master.key": 0o600,
    "audit.key": 0o600,
    "registry.db": 0o600,
    "moatd.conf": 0o644,
}


def moatctl(*args, data=None, input=None, umask=None, check=None):
    """Run moatctl; data sets MOAT_DIR. check=0/1/2 asserts the exit code."""
    env = dict(os.environ)
    env.pop("MOAT_DIR", None)
    if data is not None:
        env["MOAT_DIR"] = str(data)
    kw = {}
    if umask is not None:
        kw["preexec_fn"] = lambda: os.umask(umask)
    proc = subprocess.run(
        [program("moatctl"), *map(str, args)],
        input=input,
        capture_output=True,
        env=env,
        timeout=60,
        **kw,
    )
    if check is not None:
        assert proc.returncode == check, (
            f"moatctl {' '.join(map(str, args))}: exit {proc.returncode}, "
            f"stdout={proc.stdout!r} stderr={proc.stderr!r}"
        )
    return proc


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def load_cert(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def cn_of(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def pub_der(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def openssl_verify(ca, cert):
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True
    )


def make_csr(tmp_path, name, cn="device", key_args=("-newkey", "ec", "-pkeyopt",
                                                     "ec_paramgen_curve:P-256")):
    """A key and CSR made by `openssl req`, as a device's factory would."""
    key = tmp_path / f"{name}.key"
    csr = tmp_path / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", "-new", *key_args, "-nodes", "-keyout", str(key),
         "-subj", f"/CN={cn}", "-out", str(csr)],
        check=True, capture_output=True,
    )
    return key, csr


def db_rows(data, sql, *params):
    con = sqlite3.connect(f"file:{data}/registry.db?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture
def hub(tmp_path):
    """An initialised data directory."""
    data = tmp_path / "hub"
    moatctl("init", data, "--host", "hub.example.com", "--ip", "192.0.2.10", check=0)
    return data


def test_init_creates_exactly_the_files_with_safe_modes(tmp_path):
    data = tmp_path / "hub"
    # A permissive umask must not make any secret readable.
    moatctl("init", data, umask=0, check=0)
    assert mode(data) == 0o700
    assert set(os.listdir(data)) == set(DATA_FILES)
    for name, want in DATA_FILES.items():
        assert mode(data / name) == want, name
    master = (data / "master.key").read_bytes()
    assert len(master) == 32 and master != bytes(32)
    # Keys are real PEM private keys, unencrypted, P-256.
    for name in ("ca.key", "server.key"):
        key = serialization.load_pem_private_key((data / name).read_bytes(), None)
        assert key.curve.name == "secp256r1"
    # Another hub gets another master key and CA: nothing is shared or default.
    other = tmp_path / "other"
    moatctl("init", other, check=0)
    assert (other / "master.key").read_bytes() != master
    assert (other / "ca.key").read_bytes() != (data / "ca.key").read_bytes()
    assert (other / "ca.crt").read_bytes() != (data / "ca.crt").read_bytes()


def test_init_ca_and_server_certificate(hub):
    ca = load_cert(hub / "ca.crt")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ca.serial_number.bit_length() > 64  # random 128-bit serial

    r = openssl_verify(hub / "ca.crt", hub / "server.crt")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    server = load_cert(hub / "server.crt")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {"hub.example.com", "localhost"} <= dns
    assert {"192.0.2.10", "127.0.0.1", "::1"} <= ips
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in eku
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    life = server.not_valid_after - server.not_valid_before
    assert life.days <= 826
    conf = (hub / "moatd.conf").read_text()
    for key in ("listen = 127.0.0.1:8883", "min_version = 1.3", "max_packet_size = 262144",
                "max_session_expiry = 604800", "handshakes_per_second_per_ip = 50"):
        assert key in conf
    assert "password" not in conf.lower()


def test_init_twice_refused_and_keys_kept(hub):
    before = {n: (hub / n).read_bytes() for n in DATA_FILES if n != "registry.db"}
    r = moatctl("init", hub, check=1)
    assert b"refusing to overwrite" in r.stderr
    after = {n: (hub / n).read_bytes() for n in before}
    assert before == after


def test_init_refuses_bad_names_and_leaves_nothing(tmp_path):
    data = tmp_path / "hub"
    r = moatctl("init", data, "--host", "evil.com,DNS:other.com", check=1)
    assert b"invalid host name" in r.stderr
    assert not data.exists()
    r = moatctl("init", data, "--ip", "999.1.1.1", check=1)
    assert b"999.1.1.1" in r.stderr
    assert not data.exists()


def test_device_add(hub, tmp_path):
    out = tmp_path / "out"
    ids = []
    for _ in range(2):
        r = moatctl("device", "add", "--out", out, data=hub, umask=0, check=0)
        dev_id = r.stdout.decode().splitlines()[0]
        assert ID_RE.match(dev_id), dev_id
        ids.append(dev_id)
        crt = out / f"{dev_id}.crt"
        key = out / f"{dev_id}.key"
        assert mode(key) == 0o600
        assert mode(out) == 0o700
        cert = load_cert(crt)
        assert cn_of(cert) == dev_id
        v = openssl_verify(hub / "ca.crt", crt)
        assert v.returncode == 0, v.stdout + v.stderr
        v = openssl_verify(out / "ca.crt", crt)
        assert v.returncode == 0
        priv = serialization.load_pem_private_key(key.read_bytes(), None)
        assert pub_der(priv.public_key()) == pub_der(cert.public_key())
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # The registry holds exactly this certificate's fingerprint.
        fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
        rows = db_rows(hub, "SELECT principal, revoked FROM certificates WHERE fingerprint=?", fp)
        assert rows == [(dev_id, 0)]
    assert ids[0] != ids[1]


def test_device_add_unknown_group_leaves_nothing(hub, tmp_path):
    out = tmp_path / "out"
    r = moatctl("device", "add", "--group", "nosuch", "--out", out, data=hub, check=1)
    assert b"group 'nosuch' does not exist" in r.stderr
    assert not out.exists() or os.listdir(out) == []
    assert db_rows(hub, "SELECT count(*) FROM principals") == [(0,)]


def test_enroll_takes_only_the_public_key(hub, tmp_path):
    key, csr = make_csr(tmp_path, "dev")
    r = moatctl("device", "enroll", "--csr", csr, data=hub, check=0)
    lines = r.stdout.decode()
    dev_id = lines.splitlines()[0]
    assert ID_RE.match(dev_id)
    cert = x509.load_pem_x509_certificate(lines[lines.index("-----BEGIN"):].encode())
    assert cn_of(cert) == dev_id  # not "device", what the CSR asked for
    req = x509.load_pem_x509_csr(csr.read_bytes())
    assert pub_der(cert.public_key()) == pub_der(req.public_key())
    (tmp_path / "dev.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert openssl_verify(hub / "ca.crt", tmp_path / "dev.crt").returncode == 0

    # The hub never saw the private key: not in any file it keeps, not in
    # its output.
    priv = serialization.load_pem_private_key(key.read_bytes(), None)
    secret = priv.private_numbers().private_value.to_bytes(32, "big")
    key_der = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    for name in os.listdir(hub):
        blob = (hub / name).read_bytes()
        assert secret not in blob and key_der not in blob, name
    assert secret not in r.stdout and key.read_bytes().strip() not in r.stdout


def test_enroll_cannot_choose_another_devices_id(hub, tmp_path):
    _, csr = make_csr(tmp_path, "victim")
    victim = moatctl("device", "enroll", "--csr", csr, "--out", tmp_path / "victim.crt",
                     data=hub, check=0).stdout.decode().splitlines()[0]
    # An attacker's CSR asks for the victim's id as its subject.
    _, evil = make_csr(tmp_path, "evil", cn=victim)
    r = moatctl("device", "enroll", "--csr", evil, "--out", tmp_path / "evil.crt", data=hub,
                check=0)
    got = r.stdout.decode().splitlines()[0]
    assert ID_RE.match(got) and got != victim
    assert cn_of(load_cert(tmp_path / "evil.crt")) == got
    assert r.stdout.decode().strip() == got  # --out: the certificate is not printed


def test_enroll_other_key_types(hub, tmp_path):
    _, csr = make_csr(tmp_path, "ed", key_args=("-newkey", "ed25519"))
    moatctl("device", "enroll", "--csr", csr, data=hub, check=0)
    _, csr = make_csr(tmp_path, "rsa", key_args=("-newkey", "rsa:2048"))
    moatctl("device", "enroll", "--csr", csr, data=hub, check=0)
    _, csr = make_csr(tmp_path, "weak", key_args=("-newkey", "rsa:1024"))
    r = moatctl("device", "enroll", "--csr", csr, data=hub, check=1)
    assert b"RSA key of 1024 bits is not accepted" in r.stderr
    assert b"EC P-256, Ed25519, RSA 2048-8192" in r.stderr
    _, csr = make_csr(tmp_path, "p384", key_args=("-newkey", "ec", "-pkeyopt",
                                                  "ec_paramgen_curve:P-384"))
    r = moatctl("device", "enroll", "--csr", csr, data=hub, check=1)
    assert b"secp384r1 is not accepted" in r.stderr
    assert db_rows(hub, "SELECT count(*) FROM principals") == [(2,)]


def test_enroll_refuses_garbage_and_broken_signature(hub, tmp_path):
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n"
                        b"-----END CERTIFICATE REQUEST-----\n")
    r = moatctl("device", "enroll", "--csr", garbage, data=hub, check=1)
    assert b"not a certificate signing request" in r.stderr
    assert r.stdout == b""

    # Flip one bit of the signature: the CSR no longer proves possession of
    # the key, so it must be refused.
    _, csr = make_csr(tmp_path, "dev")
    der = bytearray(x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(
        serialization.Encoding.DER))
    der[-4] ^= 0x01
    broken = tmp_path / "broken.csr"
    broken.write_bytes(bytes(der))
    r = moatctl("device", "enroll", "--csr", broken, data=hub, check=1)
    assert b"signature does not verify" in r.stderr
    assert r.stdout == b""
    # Same through standard input.
    r = moatctl("device", "enroll", "--csr", "-", data=hub, input=bytes(der), check=1)
    assert b"signature does not verify" in r.stderr
    assert db_rows(hub, "SELECT count(*) FROM principals") == [(0,)]
    assert db_rows(hub, "SELECT count(*) FROM certificates") == [(0,)]


def status_of(hub, dev_id):
    r = moatctl("device", "show", dev_id, "--json", data=hub, check=0)
    return json.loads(r.stdout)


def test_list_show_disable_enable_revoke(hub, tmp_path):
    out = tmp_path / "out"
    a = moatctl("device", "add", "--out", out, data=hub, check=0).stdout.decode().split()[0]
    b = moatctl("device", "add", "--out", out, data=hub, check=0).stdout.decode().split()[0]
    listed = json.loads(moatctl("device", "list", "--json", data=hub, check=0).stdout)
    assert sorted(d["id"] for d in listed) == sorted([a, b])
    assert all(d["status"] == "active" and d["kind"] == "device" for d in listed)
    text = moatctl("device", "list", data=hub, check=0).stdout.decode()
    assert a in text and b in text

    shown = status_of(hub, a)
    assert shown["groups"] == ["devices"]
    assert len(shown["certificates"]) == 1 and not shown["certificates"][0]["revoked"]
    fp = hashlib.sha256(load_cert(out / f"{a}.crt").public_bytes(
        serialization.Encoding.DER)).hexdigest()
    assert shown["certificates"][0]["sha256"] == fp

    moatctl("device", "disable", a, data=hub, check=0)
    assert status_of(hub, a)["status"] == "disabled"
    assert status_of(hub, b)["status"] == "active"
    moatctl("device", "enable", a, data=hub, check=0)
    assert status_of(hub, a)["status"] == "active"

    moatctl("device", "revoke", a, data=hub, check=0)
    shown = status_of(hub, a)
    assert shown["status"] == "revoked"
    assert all(c["revoked"] for c in shown["certificates"])
    assert db_rows(hub, "SELECT revoked FROM certificates WHERE principal=?", a) == [(1,)]
    r = moatctl("device", "enable", a, data=hub, check=1)
    assert b"revocation is permanent" in r.stderr
    assert status_of(hub, a)["status"] == "revoked"
    moatctl("device", "disable", a, data=hub, check=1)

    # A service command does not reach a device.
    moatctl("service", "disable", b, data=hub, check=1)
    moatctl("device", "delete", b, data=hub, check=0)
    assert db_rows(hub, "SELECT count(*) FROM certificates WHERE principal=?", b) == [(0,)]
    r = moatctl("device", "show", b, data=hub, check=1)
    assert b"no device" in r.stderr
    r = moatctl("device", "show", "nosuchdevice", data=hub, check=1)


def test_service_policy_and_groups(hub, tmp_path):
    policy = tmp_path / "ingest.policy"
    policy.write_text("allow connect\nallow subscribe moat/+/up/#\nallow receive moat/+/up/#\n")
    moatctl("policy", "add", "ingest", policy, data=hub, check=0)
    r = moatctl("service", "add", "ingest", "--policy", "ingest", "--out", tmp_path / "svc",
                data=hub, check=0)
    assert r.stdout.decode().splitlines()[0] == "ingest"
    assert mode(tmp_path / "svc" / "ingest.key") == 0o600
    assert cn_of(load_cert(tmp_path / "svc" / "ingest.crt")) == "ingest"
    assert db_rows(hub, "SELECT grp, policy FROM group_policies WHERE grp='service-ingest'") == [
        ("service-ingest", "ingest")]
    assert db_rows(hub, "SELECT grp FROM group_members WHERE principal='ingest'") == [
        ("service-ingest",)]
    # A service name shaped like a device id is refused.
    moatctl("service", "add", "a" * 26, "--out", tmp_path / "svc", data=hub, check=2)
    # A policy in use cannot be deleted.
    r = moatctl("policy", "delete", "ingest", data=hub, check=1)
    assert b"attached" in r.stderr
    # Groups: add, attach, members; only devices in `devices`.
    moatctl("group", "add", "sensors", "--description", "floor 2", data=hub, check=0)
    moatctl("group", "attach", "ingest", "sensors", data=hub, check=0)
    dev = moatctl("device", "add", "--group", "sensors", "--out", tmp_path / "d", data=hub,
                  check=0).stdout.decode().split()[0]
    shown = json.loads(moatctl("group", "show", "sensors", "--json", data=hub, check=0).stdout)
    assert shown == {"name": "sensors", "description": "floor 2", "policies": ["ingest"],
                     "members": [dev], "settings": {}}
    moatctl("group", "add-member", "devices", "ingest", data=hub, check=1)
    moatctl("group", "remove-member", "devices", dev, data=hub, check=1)
    moatctl("group", "remove-member", "sensors", dev, data=hub, check=0)
    moatctl("group", "detach", "ingest", "sensors", data=hub, check=0)
    moatctl("group", "delete", "devices", data=hub, check=1)
    groups = json.loads(moatctl("group", "list", "--json", data=hub, check=0).stdout)
    assert [g["name"] for g in groups] == ["devices", "sensors", "service-ingest"]
    # Deleting the service removes its own group; then the policy may go.
    moatctl("service", "delete", "ingest", data=hub, check=0)
    moatctl("policy", "delete", "ingest", data=hub, check=0)
    policies = json.loads(moatctl("policy", "list", "--json", data=hub, check=0).stdout)
    assert policies == [{"name": "device-default", "groups": ["devices"]}]


def test_policy_add_refuses_bad_document_with_line_number(hub, tmp_path):
    bad = tmp_path / "bad.policy"
    bad.write_text("# comment\nallow connect\nallow publsh moat/x/up\n")
    r = moatctl("policy", "add", "bad", bad, data=hub, check=1)
    assert b"line 3" in r.stderr
    assert db_rows(hub, "SELECT count(*) FROM policies WHERE name='bad'") == [(0,)]
    good = tmp_path / "good.policy"
    good.write_text("allow publish moat/${device}/up/#\n")
    moatctl("policy", "add", "good", good, data=hub, check=0)
    assert moatctl("policy", "show", "good", data=hub, check=0).stdout == good.read_bytes()
    moatctl("policy", "add", "good", good, data=hub, check=1)  # exists
    # --replace also validates.
    r = moatctl("policy", "add", "good", bad, "--replace", data=hub, check=1)
    assert b"line 3" in r.stderr
    assert moatctl("policy", "show", "good", data=hub, check=0).stdout == good.read_bytes()
    shown = moatctl("policy", "show", "device-default", data=hub, check=0).stdout.decode()
    assert "allow publish moat/${device}/up/#" in shown


@pytest.mark.parametrize("group,commands", [
    (None, ["init", "device", "service", "group", "policy"]),
    ("init", ["--host", "--ip"]),
    ("device", ["add", "enroll", "renew", "list", "show", "disable", "enable", "revoke", "delete",
                "--revoke-old"]),
    ("service", ["add", "enroll", "renew", "list", "show", "disable", "enable", "revoke", "delete",
                 "--revoke-old"]),
    ("group", ["add", "list", "delete", "attach", "detach", "add-member", "remove-member"]),
    ("policy", ["add", "show", "list", "delete"]),
])
def test_help(group, commands):
    args = ["--help"] if group is None else [group, "--help"]
    r = moatctl(*args, check=0)
    text = r.stdout.decode()
    for section in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS"):
        assert section in text, section
    for cmd in commands:
        assert re.search(rf"(^|\s){re.escape(cmd)}(\s|$|\|)", text), cmd


def test_usage_errors(hub):
    assert moatctl("device", "list", check=2).stderr.startswith(b"moatctl: no data directory")
    moatctl(check=2)
    moatctl("frobnicate", data=hub, check=2)
    moatctl("device", "list", "--grup", "x", data=hub, check=2)
    moatctl("device", "add", data=hub, check=2)  # --out missing
    moatctl("device", "add", "--out", "x", "--days", "9999", data=hub, check=2)
    moatctl("device", "enroll", data=hub, check=2)  # --csr missing
    # --dir works as well as MOAT_DIR, and a non-initialised directory is an error.
    moatctl("--dir", hub, "device", "list", check=0)
    r = moatctl("device", "list", "--dir", hub.parent, check=1)
    assert b"not a moat data directory" in r.stderr


def test_ca_key_readable_by_others_is_refused(hub, tmp_path):
    os.chmod(hub / "ca.key", 0o644)
    r = moatctl("device", "add", "--out", tmp_path / "out", data=hub, check=1)
    assert b"chmod 600" in r.stderr
    assert db_rows(hub, "SELECT count(*) FROM principals") == [(0,)]


# ---- the man page: docs/man/moatctl.1 must keep up with the program ------------

MAN_PAGE = os.path.join(ROOT, "docs", "man", "moatctl.1")
WORD = r"(?<![\w-]){}(?![\w-])"


def _help(*args):
    return moatctl(*args, check=0).stdout.decode()


def _section(text, title):
    """The lines of a help page's section (between its title and the next)."""
    m = re.search(rf"^{title}\n(.*?)(?=^\S|\Z)", text, re.S | re.M)
    return m.group(1).splitlines() if m else []


def help_inventory():
    """What `moatctl --help` and each `moatctl help CMD` name: {command:
    (subcommands, long options)}."""
    main = _help("--help")
    commands = [ln.split()[0] for ln in _section(main, "COMMANDS")
                if re.match(r"^    [a-z]", ln)]
    inv = {c: (set(), set()) for c in commands}
    # The overview's synopsis: `moatctl device  add|enroll|...`, continued
    # on indented lines.
    current = None
    for ln in _section(main, "SYNOPSIS"):
        words = ln.split()
        if words and words[0] == "moatctl" and len(words) > 2 and words[1] in inv:
            current, rest = words[1], words[2]
        elif current and words and not words[0].startswith("moatctl"):
            rest = words[0]
        else:
            current = None
            continue
        inv[current][0].update(w for w in rest.strip("[]").split("|")
                               if re.fullmatch(r"[a-z][a-z-]*", w))
    for c in commands:
        if c == "help":
            continue
        page = _help("help", c)
        for ln in _section(page, "SYNOPSIS"):
            words = ln.split()
            if len(words) > 2 and words[:2] == ["moatctl", c]:
                inv[c][0].update(w for w in words[2].strip("[]").split("|")
                                 if re.fullmatch(r"[a-z][a-z-]*", w))
        inv[c][1].update(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", page))
    inv.setdefault("help", (set(), set()))
    inv["(global)"] = (set(), set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", main)))
    return inv


def man_words(roff):
    """The page as a reader sees its words: roff's escapes for '-', fonts
    and zero-width marks undone."""
    text = re.sub(r"\\f[BIRP]", "", roff)
    for esc, plain in (("\\-", "-"), ("\\%", ""), ("\\&", ""), ("\\e", "\\")):
        text = text.replace(esc, plain)
    return text


def man_missing(roff, inv):
    """What the help names and the page does not: each command has a
    subsection (.SS) naming all its subcommands and options; --dir, --help
    and the global options appear somewhere."""
    text = man_words(roff)
    sections = dict(re.findall(r"^\.SS (\S+)\n(.*?)(?=^\.S[SH] |\Z)", text, re.S | re.M))
    synopsis = re.search(r"^\.SH SYNOPSIS\n(.*?)^\.SH ", text, re.S | re.M).group(1)
    missing = []
    for cmd, (subs, opts) in inv.items():
        if cmd == "(global)":
            missing += [o for o in opts if not re.search(WORD.format(re.escape(o)), text)]
            continue
        if cmd not in sections:
            missing.append(f".SS {cmd}")
            continue
        if not re.search(r"moatctl\s+" + re.escape(cmd) + r"\b", synopsis):
            missing.append(f"SYNOPSIS: moatctl {cmd}")
        for w in sorted(subs | (opts - {"--dir", "--help"})):
            if not re.search(WORD.format(re.escape(w)), sections[cmd]):
                missing.append(f"{cmd}: {w}")
        for o in opts & {"--dir", "--help"}:
            if not re.search(WORD.format(re.escape(o)), text):
                missing.append(o)
    return missing


def test_man_page_names_every_command_and_option():
    roff = open(MAN_PAGE, encoding="ascii").read()  # ASCII: no preconv needed
    inv = help_inventory()
    # The inventory itself is real: it found the commands and their parts.
    assert {"init", "device", "service", "group", "policy", "telemetry", "key", "command",
            "audit", "alerts", "help"} <= set(inv)
    assert {"renew", "enroll", "revoke"} <= inv["device"][0]
    assert {"--revoke-old", "--csr"} <= inv["service"][1]
    assert {"purge", "stats"} <= inv["telemetry"][0] and "--newest-first" in inv["telemetry"][1]
    assert man_missing(roff, inv) == []
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "FILES", "EXIT STATUS",
                    "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^\.SH {section}$", roff, re.M), section
    # The check notices a page that fell behind.
    behind = roff.replace("\\-\\-revoke\\-old", "\\-\\-keep").replace(".SS alerts", ".SS other")
    assert {"device: --revoke-old", "service: --revoke-old", ".SS alerts"} <= \
        set(man_missing(behind, inv))


def test_man_page_formats_without_warnings(tmp_path):
    if not shutil.which("groff"):
        pytest.fail("groff is not installed (Debian groff-base); run scripts/bootstrap")
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", MAN_PAGE], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "moatctl device renew" in re.sub(r".\x08", "", r.stdout)
    # The linter is seen to complain about a broken page.
    bad = tmp_path / "bad.1"
    bad.write_text(open(MAN_PAGE).read() + ".BX no such macro\n")
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert "warning" in r.stderr
