"""Black-box tests of the audit log through moatctl.

Every change an operator makes with moatctl must appear in `moatctl audit`,
and `moatctl audit verify` must catch an attacker who edits registry.db with
the sqlite3 tool: an edited entry, a deleted last entry, a deleted middle
entry, a chain recomputed with plain SHA-256. A change whose entry cannot be
written is not made at all. The documented limit — a whole file put back
from an older copy verifies on its own — is shown, and so is the anchor
(`moatctl audit head` kept elsewhere) that catches it.
"""
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess

import pytest


def audit(hub, *args, check=True):
    return hub.moatctl("audit", *args, check=check)


def entries(hub):
    r = audit(hub, "--limit", "0", "--format", "json")
    return json.loads(r.stdout)


def sql(hub, statement):
    """The attacker's tool: the sqlite3 command line, triggers dropped first."""
    db = os.path.join(hub.dir, "registry.db")
    script = (
        "DROP TRIGGER IF EXISTS audit_log_no_update;"
        "DROP TRIGGER IF EXISTS audit_log_no_delete;"
        "DROP TRIGGER IF EXISTS audit_head_no_delete;" + statement
    )
    r = subprocess.run(["sqlite3", db, script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def verify_fails_at(hub, seq):
    r = audit(hub, "verify", check=False)
    assert r.returncode == 1, f"tampering not detected: {r.stdout} {r.stderr}"
    assert f"entry {seq}" in r.stderr, r.stderr
    return r.stderr


@pytest.fixture
def busy_hub(hub):
    """A hub on which an operator did a bit of everything."""
    dev = hub.add_device()
    hub.add_policy("readers", "allow connect\nallow subscribe moat/+/up/#\n")
    hub.moatctl("group", "add", "sensors", "--description", "floor 2")
    hub.moatctl("group", "attach", "readers", "sensors")
    hub.moatctl("group", "add-member", "sensors", dev.id)
    hub.moatctl("group", "set", "sensors", "report_interval", "60")
    hub.moatctl("device", "disable", dev.id)
    hub.moatctl("device", "enable", dev.id)
    hub.moatctl("device", "revoke", dev.id)
    hub.busy_device = dev.id
    return hub


def test_every_change_is_in_the_log(busy_hub):
    hub = busy_hub
    dev = hub.busy_device
    log = entries(hub)
    got = [(e["action"], e["subject"], e["outcome"]) for e in log]
    assert got == [
        ("hub.init", "", "ok"),
        ("device.add", dev, "ok"),
        ("policy.add", "readers", "ok"),
        ("group.add", "sensors", "ok"),
        ("group.attach", "sensors", "ok"),
        ("group.add-member", "sensors", "ok"),
        ("group.set", "sensors", "ok"),
        ("device.disable", dev, "ok"),
        ("device.enable", dev, "ok"),
        ("device.revoke", dev, "ok"),
    ]
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert all(e["actor"] == f"operator/{os.getuid()}" for e in log)
    assert log[4]["details"]["policy"] == "readers"
    assert log[5]["details"]["member"] == dev
    # The enrollment names the exact certificate the registry holds.
    db = sqlite3.connect(os.path.join(hub.dir, "registry.db"))
    fp = db.execute("SELECT hex(fingerprint) FROM certificates WHERE principal = ?",
                    (dev,)).fetchone()[0].lower()
    db.close()
    assert log[1]["details"]["sha256"] == fp
    policy = open(os.path.join(hub.keys, "readers.policy"), "rb").read()
    assert log[2]["details"]["sha256"] == hashlib.sha256(policy).hexdigest()
    r = audit(hub, "verify")
    assert f"verified: {len(log)} entries" in r.stdout
    # Text listing, --since and --limit.
    text = audit(hub).stdout.splitlines()
    assert len(text) == len(log) and "device.revoke" in text[-1]
    assert len(audit(hub, "--limit", "2").stdout.splitlines()) == 2
    assert audit(hub, "--since", "-1h", "--format", "json").stdout.count('"seq"') == len(log)
    assert json.loads(audit(hub, "--since", "2999-01-01", "--format", "json").stdout) == []


def test_deletes_and_services_are_logged(hub):
    hub.add_service("ingest", "allow connect\n")
    hub.moatctl("service", "delete", "ingest")
    hub.moatctl("policy", "delete", "ingest-policy")
    actions = [(e["action"], e["subject"]) for e in entries(hub)]
    assert ("service.add", "ingest") in actions
    assert ("service.delete", "ingest") in actions
    assert ("policy.delete", "ingest-policy") in actions
    audit(hub, "verify")


def test_failed_attempts_are_logged(busy_hub):
    hub = busy_hub
    r = hub.moatctl("device", "enable", hub.busy_device, check=False)
    assert r.returncode == 1
    last = entries(hub)[-1]
    assert (last["action"], last["outcome"]) == ("device.enable", "failed")
    assert last["details"]["error"]
    audit(hub, "verify")


def test_edited_entry_is_named(busy_hub):
    sql(busy_hub, "UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3;")
    verify_fails_at(busy_hub, 3)


def test_edited_outcome_is_named(busy_hub):
    # Hide that the revocation happened at all: make it read as failed.
    sql(busy_hub, "UPDATE audit_log SET outcome = 'failed' WHERE action = 'device.revoke';")
    verify_fails_at(busy_hub, 10)


def test_deleted_last_entry_is_detected(busy_hub):
    sql(busy_hub, "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log);")
    err = verify_fails_at(busy_hub, 10)
    assert "truncated" in err


def test_deleted_middle_entry_is_detected(busy_hub):
    sql(busy_hub, "DELETE FROM audit_log WHERE seq = 5;")
    verify_fails_at(busy_hub, 5)


def test_plain_sha256_chain_is_detected(busy_hub):
    """Recompute every tag and the head with SHA-256 (no key), as an attacker
    who knows the format but not audit.key would."""
    hub = busy_hub
    db = sqlite3.connect(os.path.join(hub.dir, "registry.db"))
    db.executescript("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_head_no_delete;")
    prev = b"\0" * 32
    rows = db.execute("SELECT seq, time, actor, action, subject, outcome, details"
                      " FROM audit_log ORDER BY seq").fetchall()
    for seq, t, actor, action, subject, outcome, details in rows:
        if seq == 10:
            outcome = "failed"
        h = hashlib.sha256(b"moat-audit-v1\0" + struct.pack(">q", seq) + prev
                           + struct.pack(">q", t))
        for f in (actor, action, subject, outcome, details):
            b = f.encode()
            h.update(struct.pack(">I", len(b)) + b)
        prev = h.digest()
        db.execute("UPDATE audit_log SET outcome = ?, tag = ? WHERE seq = ?", (outcome, prev, seq))
    head = hashlib.sha256(b"moat-audit-head-v1\0" + struct.pack(">q", 10) + prev).digest()
    db.execute("UPDATE audit_head SET seq = 10, tag = ?, mac = ?", (prev, head))
    db.commit()
    db.close()
    r = audit(hub, "verify", check=False)
    assert r.returncode == 1 and "FAILED" in r.stderr, r.stderr


def test_change_without_audit_is_not_made(hub):
    os.rename(os.path.join(hub.dir, "audit.key"), os.path.join(hub.dir, "audit.key.away"))
    r = hub.moatctl("group", "add", "ghost", check=False)
    assert r.returncode == 1
    assert "audit" in r.stderr
    os.rename(os.path.join(hub.dir, "audit.key.away"), os.path.join(hub.dir, "audit.key"))
    listed = hub.moatctl("group", "list", "--json").stdout
    assert "ghost" not in listed
    # And dropping the log's tables does not make a fresh, empty log.
    sql(hub, "DROP TABLE audit_log; DROP TABLE audit_head;")
    r = hub.moatctl("group", "add", "ghost", check=False)
    assert r.returncode == 1
    assert "ghost" not in hub.moatctl("group", "list", "--json").stdout
    r = audit(hub, "verify", check=False)
    assert r.returncode == 1 and "no audit log" in r.stderr


def test_casual_edit_is_refused(busy_hub):
    db = os.path.join(busy_hub.dir, "registry.db")
    r = subprocess.run(["sqlite3", db, "DELETE FROM audit_log WHERE seq = 10"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "append-only" in r.stderr
    audit(busy_hub, "verify")


def test_rollback_needs_an_anchor(busy_hub):
    hub = busy_hub
    db = os.path.join(hub.dir, "registry.db")
    shutil.copy(db, db + ".old")
    hub.moatctl("group", "delete", "sensors")
    anchor = audit(hub, "head").stdout.strip()
    assert anchor.startswith("11:")
    audit(hub, "verify", "--anchor", anchor)
    # The attacker puts the old file back: the deletion is gone.
    shutil.copy(db + ".old", db)
    audit(hub, "verify")  # the documented limit: an older log is a valid log
    r = audit(hub, "verify", "--anchor", anchor, check=False)
    assert r.returncode == 1 and "entry 11" in r.stderr
    r = audit(hub, "verify", "--anchor", "nonsense", check=False)
    assert r.returncode == 2


def test_alerts_without_a_hub(hub):
    r = hub.moatctl("alerts")
    assert r.stdout == ""
    assert json.loads(hub.moatctl("alerts", "--format", "json").stdout) == []
    assert hub.moatctl("alerts", "--kind", "nope", check=False).returncode == 2


def test_audit_init_for_older_directories(hub):
    # A data directory from before the audit log: no audit.key, no tables.
    sql(hub, "DROP TABLE audit_log; DROP TABLE audit_head;")
    os.unlink(os.path.join(hub.dir, "audit.key"))
    assert hub.moatctl("group", "add", "g1", check=False).returncode == 1
    hub.moatctl("audit", "init")
    assert os.stat(os.path.join(hub.dir, "audit.key")).st_mode & 0o777 == 0o600
    hub.moatctl("group", "add", "g1")
    assert [e["action"] for e in entries(hub)] == ["audit.init", "group.add"]
    assert hub.moatctl("audit", "init", check=False).returncode == 1  # one log only
    # Tables gone but the key still there: someone removed the log. Only an
    # explicit --restart starts a new one, and says so.
    sql(hub, "DROP TABLE audit_log; DROP TABLE audit_head;")
    r = hub.moatctl("audit", "init", check=False)
    assert r.returncode == 1 and "Find out why" in r.stderr
    hub.moatctl("audit", "init", "--restart")
    first = entries(hub)[0]
    assert first["action"] == "audit.init" and first["details"]["restart"] is True
    audit(hub, "verify")
