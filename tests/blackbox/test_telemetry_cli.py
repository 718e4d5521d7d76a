"""Black-box tests of the telemetry store through its operator commands.

Readings are written with moat-tstore-load (the store library without a
hub), then read back with `moatctl telemetry` in CSV and JSON. The attacks:
the database file, its write-ahead log and shared-memory file searched for a
known payload, stream name and device id while the log is live (nothing may
be found); `moatctl device delete` checked to remove the readings and their
ciphertext bytes from the files; ciphertexts swapped between rows in the raw
SQLite file (refused, nothing printed); a master key with one bit changed
(refused with a clear message); key rotation and re-encryption keeping every
reading readable; retention by age, by size and for unknown devices.
"""
import base64
import csv
import io
import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import program

T0 = 1700000000000  # ms, 2023-11-14T22:13:20Z


def run(name, *args, data=None, input=None, check=None):
    env = dict(os.environ)
    env.pop("MOAT_DIR", None)
    if data is not None:
        env["MOAT_DIR"] = str(data)
    proc = subprocess.run(
        [program(name), *map(str, args)],
        input=input,
        capture_output=True,
        env=env,
        timeout=120,
    )
    if check is not None:
        assert proc.returncode == check, (
            f"{name} {' '.join(map(str, args))}: exit {proc.returncode}, "
            f"stdout={proc.stdout!r} stderr={proc.stderr!r}"
        )
    return proc


def moatctl(*args, data, check=0):
    return run("moatctl", *args, data=data, check=check)


def load(data, rows):
    """rows: (device, stream, received_ms, device_time_ms|None, seq|None, payload bytes)."""
    lines = []
    for dev, stream, rx, dt, seq, payload in rows:
        lines.append(
            "\t".join(
                [
                    dev,
                    stream,
                    str(rx),
                    "-" if dt is None else str(dt),
                    "-" if seq is None else str(seq),
                    payload.hex(),
                ]
            )
        )
    out = run(
        "moat-tstore-load", "--dir", data, "--batch", "7",
        input=("\n".join(lines) + "\n").encode(), check=0,
    )
    return out.stdout.decode()


@pytest.fixture
def hubdir(tmp_path):
    data = tmp_path / "hub"
    moatctl("init", data, data=None)
    return data


def new_device(data, tmp_path):
    out = moatctl("device", "add", "--out", tmp_path / "certs", data=data)
    return out.stdout.decode().splitlines()[0].strip()


def db_files(data):
    return [data / n for n in ("telemetry.db", "telemetry.db-wal", "telemetry.db-shm")]


def file_bytes(data):
    blobs = {}
    for p in db_files(data):
        if p.exists():
            blobs[p.name] = p.read_bytes()
    return blobs


SECRET = b"SECRET-kitchen-light-on"
STREAM = "living-room-motion"


def sample(dev):
    rows = []
    for i in range(30):
        rows.append((dev, STREAM, T0 + i * 1000, T0 + i * 1000 - 3 if i % 2 else None,
                     i + 1, SECRET + b"-%d" % i))
    rows.append((dev, "temperature", T0 + 40000, None, 100, b'21.5,"C"\nok'))
    rows.append((dev, "blob", T0 + 41000, None, None, bytes([0, 255, 16, 27, 0x9b])))
    return rows


def query(data, dev, *args, fmt="csv"):
    out = moatctl("telemetry", dev, "--format", fmt, *args, data=data)
    text = out.stdout.decode()
    if fmt == "json":
        return json.loads(text), out.stderr.decode()
    return list(csv.DictReader(io.StringIO(text, newline=""))), out.stderr.decode()


def test_query_csv_and_json(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    other = new_device(hubdir, tmp_path)
    assert load(hubdir, sample(dev) + sample(other)[:3]).strip() == "stored 35 duplicates 0"
    # The same readings again: every one with a seq is a duplicate.
    assert load(hubdir, sample(dev)[:5]).strip() == "stored 0 duplicates 5"

    rows, err = query(hubdir, dev, "--limit", "0")
    assert len(rows) == 32 and err == ""
    first = rows[0]
    assert first["received"] == "2023-11-14T22:13:20.000Z"
    assert first["device_time"] == "" and first["seq"] == "1"
    assert first["stream"] == STREAM and first["encoding"] == "text"
    assert first["payload"] == (SECRET + b"-0").decode()
    assert rows[1]["device_time"] == "2023-11-14T22:13:20.997Z"
    temp = [r for r in rows if r["stream"] == "temperature"][0]
    assert temp["payload"] == '21.5,"C"\nok' and temp["encoding"] == "text"
    blob = [r for r in rows if r["stream"] == "blob"][0]
    # Control bytes (and a C1 CSI) never reach the terminal as text.
    assert blob["encoding"] == "hex" and blob["payload"] == "00ff101b9b" and blob["seq"] == ""

    js, _ = query(hubdir, dev, "--limit", "0", fmt="json")
    assert len(js) == 32
    assert js[0]["received_ms"] == T0 and js[0]["seq"] == 1 and js[0]["device_time"] is None
    assert js[1]["device_time_ms"] == T0 + 997
    jb = [r for r in js if r["stream"] == "blob"][0]
    assert jb["encoding"] == "base64" and base64.b64decode(jb["payload"]) == bytes(
        [0, 255, 16, 27, 0x9b])
    assert jb["seq"] is None

    # Filters: stream, time window (RFC 3339 and unix seconds), order, limit.
    rows, _ = query(hubdir, dev, "--stream", "temperature")
    assert [r["payload"] for r in rows] == ['21.5,"C"\nok']
    rows, _ = query(hubdir, dev, "--since", "2023-11-14T22:13:25Z", "--until", str(T0 // 1000 + 8))
    assert [r["seq"] for r in rows] == ["6", "7", "8"]
    rows, _ = query(hubdir, dev, "--since", "2023-11-14T23:13:25+01:00", "--until",
                    "1700000008.5")
    assert [r["seq"] for r in rows] == ["6", "7", "8", "9"]
    rows, err = query(hubdir, dev, "--limit", "2", "--newest-first")
    assert [r["stream"] for r in rows] == ["blob", "temperature"]
    assert "more match" in err
    rows, _ = query(hubdir, other)
    assert len(rows) == 3
    # Relative times: readings received now.
    now = int(time.time() * 1000)
    load(hubdir, [(dev, "fresh", now - 10 * 60 * 1000, None, 500, b"ten minutes ago"),
                  (dev, "fresh", now - 3 * 3600 * 1000, None, 501, b"three hours ago")])
    rows, _ = query(hubdir, dev, "--since", "-1h")
    assert [r["payload"] for r in rows] == ["ten minutes ago"]
    rows, _ = query(hubdir, dev, "--since", "-4h", "--until", "-2h")
    assert [r["payload"] for r in rows] == ["three hours ago"]

    bad = moatctl("telemetry", dev, "--since", "yesterday", data=hubdir, check=2)
    assert b"not a time" in bad.stderr
    moatctl("telemetry", dev, "--format", "xml", data=hubdir, check=2)
    stats = json.loads(moatctl("telemetry", "stats", "--json", data=hubdir).stdout)
    assert stats["devices"] == 2 and stats["readings"] == 37 and stats["data_keys"] == 1


def test_files_hold_no_plaintext(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    load(hubdir, sample(dev)[:1])
    # Hold a connection open so the write-ahead log outlives the loader and
    # what it wrote is still in -wal when we look.
    keep = sqlite3.connect(str(hubdir / "telemetry.db"))
    keep.execute("BEGIN")
    keep.execute("SELECT count(*) FROM readings").fetchone()
    try:
        load(hubdir, sample(dev)[1:])
        files = file_bytes(hubdir)
        assert len(files.get("telemetry.db-wal", b"")) > 0, "the log should hold the new rows"
        everything = b"".join(files.values())
        # The search works: plaintext schema text is there.
        assert b"readings_dev" in everything
        for needle in (SECRET, b"kitchen", STREAM.encode(), b"temperature", dev.encode(),
                       b'21.5,"C"'):
            for name, blob in files.items():
                assert needle not in blob, f"{needle!r} found in {name}"
    finally:
        keep.close()


def test_device_delete_erases_readings(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    other = new_device(hubdir, tmp_path)
    load(hubdir, sample(dev) + sample(other))
    con = sqlite3.connect(str(hubdir / "telemetry.db"))
    # Ciphertexts of every row; the device's are those that go away.
    before = {r[0]: bytes(r[1]) for r in con.execute("SELECT id, ct FROM readings")}
    con.close()
    out = moatctl("device", "delete", dev, data=hubdir)
    assert out.stdout.decode().strip() == f"device {dev}: deleted; 32 stored readings erased"
    rows, _ = query(hubdir, dev, "--limit", "0")
    assert rows == []
    assert len(query(hubdir, other, "--limit", "0")[0]) == 32
    con = sqlite3.connect(str(hubdir / "telemetry.db"))
    after = {r[0]: bytes(r[1]) for r in con.execute("SELECT id, ct FROM readings")}
    con.close()
    gone = [ct for rid, ct in before.items() if rid not in after]
    assert len(gone) == 32
    everything = b"".join(file_bytes(hubdir).values())
    for ct in gone:
        assert ct[:48] not in everything, "a deleted reading's bytes are still in the files"
    # The survivors are still there, so the search would have seen them.
    assert all(ct[:48] in everything for ct in after.values())
    # A device unknown to the store: nothing to erase, not an error.
    third = new_device(hubdir, tmp_path)
    out = moatctl("device", "delete", third, data=hubdir)
    assert b"0 stored readings erased" in out.stdout


def test_key_rotate_and_reencrypt(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    load(hubdir, sample(dev))
    want, _ = query(hubdir, dev, "--limit", "0")
    key_before = (hubdir / "master.key").read_bytes()
    out = moatctl("key", "rotate", data=hubdir)
    assert b"1 data key re-wrapped" in out.stdout
    key_after = (hubdir / "master.key").read_bytes()
    assert len(key_after) == 32 and key_after != key_before
    assert os.stat(hubdir / "master.key").st_mode & 0o777 == 0o600
    assert not (hubdir / "master.key.new").exists()
    assert query(hubdir, dev, "--limit", "0")[0] == want
    # The old key no longer opens it.
    (hubdir / "master.key").write_bytes(key_before)
    bad = moatctl("telemetry", dev, data=hubdir, check=1)
    assert b"not the master key" in bad.stderr
    (hubdir / "master.key").write_bytes(key_after)

    out = moatctl("key", "reencrypt", "--batch", "5", data=hubdir)
    assert b"re-encrypted 32 readings; 1 old data key deleted" in out.stdout
    stats = json.loads(moatctl("telemetry", "stats", "--json", data=hubdir).stdout)
    assert stats["data_keys"] == 1 and stats["current_key"] == 2
    assert not stats["reencrypt_pending"]
    assert query(hubdir, dev, "--limit", "0")[0] == want
    con = sqlite3.connect(str(hubdir / "telemetry.db"))
    assert con.execute("SELECT count(*) FROM readings WHERE key_id != 2").fetchone()[0] == 0
    con.close()


def test_tampered_master_key_refused(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    load(hubdir, sample(dev))
    key = bytearray((hubdir / "master.key").read_bytes())
    key[0] ^= 0x01
    (hubdir / "master.key").write_bytes(bytes(key))
    out = moatctl("telemetry", dev, data=hubdir, check=1)
    assert b"not the master key" in out.stderr
    assert SECRET not in out.stdout
    # Writing is refused too: nothing is stored under a key that is not the store's.
    proc = run("moat-tstore-load", "--dir", hubdir, input=b"", check=1)
    assert b"not the master key" in proc.stderr


def test_swapped_ciphertexts_refused(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    load(hubdir, sample(dev)[:2])
    con = sqlite3.connect(str(hubdir / "telemetry.db"))
    (a, ca), (b, cb) = con.execute("SELECT id, ct FROM readings ORDER BY id").fetchall()
    con.execute("UPDATE readings SET ct = ? WHERE id = ?", (cb, a))
    con.execute("UPDATE readings SET ct = ? WHERE id = ?", (ca, b))
    con.commit()
    con.close()
    out = moatctl("telemetry", dev, data=hubdir, check=1)
    assert b"does not authenticate" in out.stderr
    assert SECRET not in out.stdout


def test_retention_purge(hubdir, tmp_path):
    dev = new_device(hubdir, tmp_path)
    big = new_device(hubdir, tmp_path)
    gone = "zzzzzzzzzzzzzzzzzzzzzzzzzq"  # never in the registry
    now = int(time.time() * 1000)
    day = 86400 * 1000
    rows = [(dev, "t", now - 3 * day + i, None, i + 1, b"old") for i in range(10)]
    rows += [(dev, "t", now - 3600 * 1000 + i, None, 100 + i, b"new") for i in range(5)]
    rows += [(big, "b", now - 1000 + i, None, i + 1, bytes(10000)) for i in range(200)]
    rows += [(gone, "x", now, None, 1, b"orphan")]
    load(hubdir, rows)
    moatctl("group", "add", "short", data=hubdir)
    moatctl("group", "add-member", "short", dev, data=hubdir)
    moatctl("group", "set", "short", "retention_days", "2", data=hubdir)
    moatctl("group", "set", "devices", "retention_max_mb", "1", data=hubdir)
    moatctl("group", "set", "devices", "retention_days", "0", data=hubdir, check=1)
    show = moatctl("group", "show", "short", "--json", data=hubdir).stdout
    assert json.loads(show)["settings"] == {"retention_days": "2"}
    out = moatctl("telemetry", "purge", "--batch", "17", data=hubdir)
    assert b"readings deleted" in out.stdout
    rows, _ = query(hubdir, dev, "--limit", "0")
    assert [r["payload"] for r in rows] == ["new"] * 5
    stats = json.loads(moatctl("telemetry", "stats", big, "--json", data=hubdir).stdout)
    assert 0 < stats["bytes"] <= 1048576 and stats["readings"] < 200
    kept, _ = query(hubdir, big, "--limit", "0")
    # The newest were kept.
    assert kept[-1]["received"] == query(hubdir, big, "--newest-first", "--limit", "1")[0][0][
        "received"]
    assert query(hubdir, gone, "--limit", "0")[0] == []
    total = json.loads(moatctl("telemetry", "stats", "--json", data=hubdir).stdout)
    assert total["devices"] == 2
