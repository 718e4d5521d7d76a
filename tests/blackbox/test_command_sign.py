"""Black-box tests of `moatctl command keygen` and `moatctl command sign`.

The envelope moatctl writes is parsed here from the layout in
docs/sdk-wire.md and its signature checked with python3-cryptography's
Ed25519, independently of libmoat's verifier: if the C code and the
documented format drift apart, or the signature does not cover what the
document says it covers, these tests fail. They also check what a careless
tool gets wrong: a secret key readable by others or overwritten, binary
output sprayed on a terminal, a counter that does not rise, an expiry that is
not the one asked for, and names that are not single topic levels.
"""
import os
import pty
import stat
import struct
import subprocess
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import program

DOMAIN = b"moat command v1\x00"
DEVICE = "3tq5bxkwhwvjtuf3oxvmy2hzmq"


def moatctl(*args, check=0, stdout=subprocess.PIPE, input=None):
    p = subprocess.run([program("moatctl"), *args], stdout=stdout, stderr=subprocess.PIPE,
                       input=input, timeout=30)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stderr)
    return p


def parse(env):
    """Split an envelope per docs/sdk-wire.md; every length is checked."""
    pos = 0

    def take(n):
        nonlocal pos
        if n > len(env) - pos:
            raise ValueError("envelope shorter than its fields")
        b = env[pos:pos + n]
        pos += n
        return b

    out = {"domain": take(16), "key_id": take(8)}
    out["counter"], out["expiry"] = struct.unpack(">QQ", take(16))
    out["device"] = take(take(1)[0]).decode()
    out["name"] = take(take(1)[0]).decode()
    out["body"] = take(struct.unpack(">I", take(4))[0])
    out["signed"] = env[:pos]
    out["sig"] = take(64)
    if pos != len(env):
        raise ValueError("bytes after the signature")
    return out


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "owner.cmdkey"
    p = moatctl("command", "keygen", str(path))
    pk_hex = p.stdout.decode().strip()
    return path, bytes.fromhex(pk_hex)


def verify(pk, env):
    f = parse(env)
    Ed25519PublicKey.from_public_bytes(pk).verify(f["sig"], f["signed"])
    return f


def test_keygen_file_and_public_key(key, tmp_path):
    path, pk = key
    assert len(pk) == 32
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b"moat-command-key-v1" and lines[2] == b"" and len(lines) == 3
    seed = bytes.fromhex(lines[1].decode())
    # The printed public key is the one of the stored seed.
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    assert derived == pk
    # A second keygen never overwrites a key.
    before = path.read_bytes()
    p = moatctl("command", "keygen", str(path), check=1)
    assert b"exists" in p.stderr
    assert path.read_bytes() == before
    # Two keys differ.
    other = moatctl("command", "keygen", str(tmp_path / "k2")).stdout.decode().strip()
    assert bytes.fromhex(other) != pk


def test_sign_defaults_match_the_documented_layout(key):
    path, pk = key
    t0 = time.time()
    env = moatctl("command", "sign", "--key", str(path), DEVICE, "set-target",
                  "--body", '{"celsius":21}').stdout
    t1 = time.time()
    f = verify(pk, env)
    assert f["domain"] == DOMAIN
    assert f["key_id"] == pk[:8]
    assert f["device"] == DEVICE and f["name"] == "set-target"
    assert f["body"] == b'{"celsius":21}'
    # Default counter: the time in ms; default expiry: 300 s from now.
    assert int(t0 * 1000) - 1000 <= f["counter"] <= int(t1 * 1000) + 1000
    assert int(t0) + 300 - 1 <= f["expiry"] <= int(t1) + 300 + 1
    assert len(env) == 16 + 8 + 8 + 8 + 1 + len(DEVICE) + 1 + 10 + 4 + 14 + 64


def test_signature_covers_every_byte(key):
    path, pk = key
    env = moatctl("command", "sign", "--key", str(path), DEVICE, "open", "--body", "x").stdout
    verify(pk, env)
    for i in range(len(env) - 64):
        bad = bytearray(env)
        bad[i] ^= 0x01
        try:
            verify(pk, bytes(bad))
        except (InvalidSignature, ValueError):  # UnicodeDecodeError is a ValueError
            continue
        pytest.fail(f"a flipped bit at byte {i} still verifies")


def test_counter_rises_and_options(key, tmp_path):
    path, pk = key
    a = verify(pk, moatctl("command", "sign", "--key", str(path), DEVICE, "x").stdout)
    time.sleep(0.01)
    b = verify(pk, moatctl("command", "sign", "--key", str(path), DEVICE, "x").stdout)
    assert b["counter"] > a["counter"]

    body = bytes(range(256)) * 4
    (tmp_path / "body").write_bytes(body)
    out = tmp_path / "cmd.bin"
    t0 = int(time.time())
    moatctl("command", "sign", "--key", str(path), DEVICE, "fw", "--body-file",
            str(tmp_path / "body"), "--counter", "42", "--expires", "60", "-o", str(out))
    f = verify(pk, out.read_bytes())
    assert f["counter"] == 42 and f["body"] == body
    assert t0 + 60 - 1 <= f["expiry"] <= int(time.time()) + 60 + 1
    # --out is the long form; stdin as the body; an empty body.
    moatctl("command", "sign", "--key", str(path), DEVICE, "fw", "--body-file", "-",
            "--out", str(out), input=b"from stdin")
    assert verify(pk, out.read_bytes())["body"] == b"from stdin"
    f = verify(pk, moatctl("command", "sign", "--key", str(path), DEVICE, "ping").stdout)
    assert f["body"] == b""


def test_refuses_terminal_output(key):
    path, _ = key
    master, slave = pty.openpty()
    try:
        p = moatctl("command", "sign", "--key", str(path), DEVICE, "x", stdout=slave, check=2)
        assert b"-o FILE" in p.stderr
    finally:
        os.close(master)
        os.close(slave)


def test_refuses_unsafe_or_bad_key(key, tmp_path):
    path, _ = key
    os.chmod(path, 0o644)
    p = moatctl("command", "sign", "--key", str(path), DEVICE, "x", check=1)
    assert b"chmod 600" in p.stderr
    os.chmod(path, 0o600)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"moat-command-key-v1\n" + b"zz" * 32 + b"\n")
    os.chmod(bad, 0o600)
    moatctl("command", "sign", "--key", str(bad), DEVICE, "x", check=1)
    bad.write_bytes(path.read_bytes() + b"extra")
    moatctl("command", "sign", "--key", str(bad), DEVICE, "x", check=1)
    moatctl("command", "sign", "--key", str(tmp_path / "missing"), DEVICE, "x", check=1)


@pytest.mark.parametrize("args", [
    [DEVICE],                                  # no NAME
    [DEVICE, "a/b"], [DEVICE, "a#"], [DEVICE, "a+"], [DEVICE, "a b"], [DEVICE, ""],
    ["dev/ice", "x"], ["x" * 65, "x"],
    [DEVICE, "x", "--body", "a", "--body-file", "-"],
    [DEVICE, "x", "--expires", "0"], [DEVICE, "x", "--expires", "31622401"],
    [DEVICE, "x", "--expires", "5s"], [DEVICE, "x", "--counter", "0"],
    [DEVICE, "x", "--counter", "-1"], [DEVICE, "x", "--frobnicate"],
])
def test_usage_errors(key, args):
    path, _ = key
    p = moatctl("command", "sign", "--key", str(path), *args, check=2)
    assert p.stdout == b""


def test_sign_needs_key_and_help():
    moatctl("command", "sign", DEVICE, "x", check=2)
    moatctl("command", check=2)
    moatctl("command", "frob", check=2)
    p = moatctl("command", "--help")
    assert b"moatctl command keygen FILE" in p.stdout
    assert b"command" in moatctl("--help").stdout
