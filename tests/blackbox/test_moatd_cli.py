"""moatd's command line, configuration errors, logs, signals and the insecure
test listener, as an operator (or a conformance tool) meets them."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

import mqttwire as mw
from conftest import free_port, program, wait_for_port

SVC_POLICY = "allow connect\nallow all t/#\n"


def moatd(*args, env_extra=None, drop_env=("MOAT_DIR",), timeout=10):
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update(env_extra or {})
    return subprocess.run([program("moatd")] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---- usage -------------------------------------------------------------------------

def test_help_mentions_every_option():
    r = moatd("--help")
    assert r.returncode == 0, r.stderr
    for opt in ("-d, --dir", "-c, --config", "-l, --listen", "--log-format",
                "--insecure-test-listener", "--as-service", "-h, --help", "--version",
                "SIGTERM", "SIGHUP", "EXIT STATUS"):
        assert opt in r.stdout, f"--help does not mention {opt}"
    assert moatd("-h").stdout == r.stdout
    v = moatd("--version")
    assert v.returncode == 0 and re.match(r"moatd \d+\.\d+", v.stdout), v.stdout


@pytest.mark.parametrize("argv", [
    ["--bogus"],
    ["--dir"],                       # option without its value
    ["-x", "--dir", "/tmp"],
    ["--dir", "/tmp", "extra-argument"],
])
def test_usage_errors_exit_2(argv):
    r = moatd(*argv)
    assert r.returncode == 2, (argv, r.returncode, r.stderr)
    assert "moatd:" in r.stderr and r.stdout == ""


def test_bad_option_values_exit_2(hub):
    for argv, word in ((["--log-format", "xml"], "log-format"),
                       (["--listen", "nowhere"], "listen"),
                       (["--insecure-test-listener", "99999", "--as-service", "svc"], "port"),
                       (["--insecure-test-listener", "1234"], "as-service")):
        r = moatd("--dir", hub.dir, *argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert word in r.stderr, (argv, r.stderr)


def test_no_dir_exit_2():
    r = moatd()
    assert r.returncode == 2
    assert "--dir" in r.stderr and "MOAT_DIR" in r.stderr


def test_dir_from_environment(hub):
    """Without --dir, $MOAT_DIR names the data directory."""
    port = hub.port
    proc = subprocess.Popen([program("moatd"), "--listen", f"127.0.0.1:{port}"],
                            env={**os.environ, "MOAT_DIR": hub.dir}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0, out
    assert "listening on 127.0.0.1" in out


def test_missing_data_dir_exit_1(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    r = moatd("--dir", missing)
    assert r.returncode == 1, r.stderr
    assert missing in r.stderr


# ---- configuration errors ------------------------------------------------------------

def append_conf(hub, text):
    path = os.path.join(hub.dir, "moatd.conf")
    with open(path) as f:
        before = f.read()
    if not before.endswith("\n"):
        before += "\n"
    with open(path, "w") as f:
        f.write(before + text)
    return before.count("\n") + 1  # line number of the first appended line


@pytest.mark.parametrize("text,words", [
    ("[limits]\nmax_bananas = 3\n", ["unknown setting", "max_bananas"]),
    ("[limits]\nmax_queued = 12abc\n", ["max_queued", "12abc"]),
    ("[limits]\nmax_packet_size = 10\n", ["max_packet_size", "10"]),
    ("[limits]\nmax_connections = -1\n", ["max_connections"]),
    ("[limits]\nhandshake_timeout = 99999999999999999999999\n", ["handshake_timeout"]),
    ("[hub]\nlog_format = xml\n", ["log_format", "xml"]),
    ("[tls]\nmin_version = 1.1\n", ["min_version"]),
    ("[nonsense]\nkey = 1\n", ["unknown setting", "nonsense"]),
])
def test_config_error_names_the_line(hub, text, words):
    first = append_conf(hub, text)
    bad_line = first + text.count("\n") - 1  # the key is the last line appended
    r = moatd("--dir", hub.dir, "--listen", f"127.0.0.1:{hub.port}")
    assert r.returncode == 1, r.stderr
    assert f"moatd.conf:{bad_line}:" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_config_first_error_is_reported_with_its_own_line(hub):
    """With several mistakes, the line named and the message describe the
    same (first) one."""
    first = append_conf(hub, "[limits]\nmax_bananas = 3\nmax_queued = 12abc\n")
    r = moatd("--dir", hub.dir)
    assert r.returncode == 1
    assert f"moatd.conf:{first + 1}: unknown setting [limits] max_bananas" in r.stderr, r.stderr
    assert "12abc" not in r.stderr, r.stderr


def test_config_syntax_error_before_a_bad_key(hub):
    first = append_conf(hub, "this is not a setting\n[limits]\nmax_queued = 12abc\n")
    r = moatd("--dir", hub.dir)
    assert r.returncode == 1
    assert f"moatd.conf:{first}: syntax error" in r.stderr, r.stderr


def test_config_file_option(hub, tmp_path):
    conf = tmp_path / "other.conf"
    conf.write_text("[limits]\nmax_queued = nope\n")
    r = moatd("--dir", hub.dir, "--config", str(conf))
    assert r.returncode == 1
    assert f"{conf}:2:" in r.stderr and "max_queued" in r.stderr
    r = moatd("--dir", hub.dir, "--config", str(tmp_path / "missing.conf"))
    assert r.returncode == 1 and "missing.conf" in r.stderr


# ---- logs -----------------------------------------------------------------------------

def test_json_log_lines(hub):
    dev = hub.add_device()
    hub.start("--log-format", "json")
    c = hub.paho(dev)
    c.publish("not/allowed", b"x", qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    hub.wait_log(r"refused")
    assert hub.stop() == 0
    lines = [ln for ln in hub.log().splitlines() if ln.strip()]
    assert len(lines) >= 4
    for ln in lines:
        obj = json.loads(ln)
        assert {"time", "level", "msg"} <= set(obj), obj
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", obj["time"]), obj
        assert obj["level"] in ("debug", "info", "warning", "error"), obj
    msgs = [json.loads(ln) for ln in lines]
    assert any("listening on" in m["msg"] for m in msgs)
    assert any("refused" in m["msg"] and m["level"] == "warning" for m in msgs)
    assert msgs[-1]["msg"] == "stopped"


def test_json_log_from_config(hub):
    hub.set_config("hub", "log_format", "json")
    hub.start()
    assert hub.stop() == 0
    for ln in hub.log().splitlines():
        json.loads(ln)


# ---- signals ----------------------------------------------------------------------------

def test_sigterm_with_clients_connected(hub):
    svc = hub.add_service("svc", SVC_POLICY)
    hub.start()
    v5 = mw.RawClient.open(hub, svc)
    v5.connect("svc/a")
    v311 = mw.RawClient.open(hub, svc, version=4)
    v311.connect("svc/b")
    no_connect = mw.RawClient.open(hub, svc)   # TLS done, no CONNECT yet
    no_tls = mw.tcp(hub.port)                  # TCP only, handshake pending

    t0 = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    assert [(p.type, p.reason) for p in v5.wait_closed(2)] == [(mw.DISCONNECT, 0x8B)]
    assert v311.wait_closed(2) == []
    assert no_connect.wait_closed(2) == []
    hub.proc.wait(timeout=2)
    took = time.monotonic() - t0
    assert hub.proc.returncode == 0
    assert took < 2, took
    log = hub.log()
    assert re.search(r"SIGTERM: stopping: closing \d+ connections", log), log
    assert log.rstrip().endswith("stopped"), log[-500:]
    for c in (v5, v311, no_connect):
        c.close()
    no_tls.close()
    hub.stop()


def test_sigint_stops_cleanly(hub):
    hub.start()
    assert hub.stop(sig=signal.SIGINT) == 0
    assert "SIGINT: stopping" in hub.log()


def test_sighup_rereads_registry_and_keeps_running(hub):
    dev = hub.add_device()
    svc = hub.add_service("svc", SVC_POLICY)
    # No polling to speak of: only SIGHUP makes the hub look at the registry.
    hub.set_config("limits", "registry_poll_ms", "60000")
    hub.start()
    keep = mw.RawClient.open(hub, svc)
    keep.connect("svc/keep")
    d = mw.RawClient.open(hub, dev)
    d.connect(dev.id)

    hub.proc.send_signal(signal.SIGHUP)
    hub.wait_log(r"SIGHUP: re-reading the configuration and the registry")
    hub.wait_log(r"SIGHUP: configuration reloaded")
    assert hub.alive()
    for c in (keep, d):
        c.pingreq()
        c.expect(mw.PINGRESP)

    hub.moatctl("device", "revoke", dev.id)
    hub.proc.send_signal(signal.SIGHUP)
    got = d.wait_closed(3)
    assert [(p.type, p.reason) for p in got] == [(mw.DISCONNECT, 0x98)]
    d.close()
    assert hub.alive()
    keep.pingreq()
    keep.expect(mw.PINGRESP)
    keep.close()
    # the revoked certificate is refused from now on
    with pytest.raises((OSError, mw.ProtocolError)):
        c = mw.RawClient.open(hub, dev)
        c.send_connect(dev.id)
        if c.recv(3) is None:
            raise mw.ProtocolError("closed")
    assert hub.stop() == 0


# ---- the insecure test listener -----------------------------------------------------------

def plain_pub(port, cid, topic, message, *extra):
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-i", cid, "-t", topic,
            "-m", message] + list(extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


def test_insecure_test_listener(hub):
    hub.add_service("svc", "allow connect\nallow publish t/#\nallow subscribe t/#\n"
                           "allow receive t/#\n")
    watcher = hub.add_service("watcher", "allow connect\nallow subscribe #\nallow receive #\n")
    tport = free_port()
    hub.start("--insecure-test-listener", str(tport), "--as-service", "svc")
    wait_for_port(tport, proc=hub.proc)
    hub.wait_log(r"warning: .*INSECURE TEST LISTENER on 127\.0\.0\.1:%d" % tport)
    assert "Never use this in production" in hub.log()

    # bound to 127.0.0.1 only
    with pytest.raises(ConnectionRefusedError):
        mw.tcp(tport, host="127.0.0.2").close()

    w = mw.RawClient.open(hub, watcher)
    w.connect("watcher")
    w.send_subscribe([("#", 1)], pid=1)
    assert w.expect(mw.SUBACK).reasons == [1]

    # plain MQTT without TLS works and acts as the service
    r = plain_pub(tport, "svc/plain", "t/hello", "hi", "-q", "1", "-V", "mqttv5")
    assert r.returncode == 0, r.stderr
    m = w.expect(mw.PUBLISH)
    assert (m.topic, m.payload) == ("t/hello", b"hi")
    w.ack(mw.PUBACK, m.packet_id)

    # the service's policy applies: outside t/# is refused
    r = plain_pub(tport, "svc/plain", "other/x", "no", "-q", "1", "-V", "mqttv5")
    hub.wait_log(r"svc: PUBLISH to 'other/x' refused: not authorized by policy")
    r = plain_pub(tport, "svc", "other/y", "no", "-q", "1")  # 3.1.1: closed
    hub.wait_log(r"svc: PUBLISH to 'other/y' refused")
    assert w.quiet(0.3) == [], "a refused message was delivered"

    # and its identity: only the service's client ids
    r = plain_pub(tport, "intruder", "t/hello", "x", "-q", "1", "-V", "mqttv5")
    assert r.returncode != 0
    hub.wait_log(r"client identifier 'intruder' does not belong")

    # the TLS listener still wants a certificate
    with pytest.raises(OSError):
        s = mw.tcp(hub.port)
        try:
            ctx = hub.ssl_context(None)
            t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
            t.sendall(mw.encode_connect("svc"))
            if not t.recv(10):
                raise ConnectionResetError("closed")
        finally:
            s.close()

    # a disabled service is refused on the test listener too
    hub.moatctl("service", "disable", "svc")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r = plain_pub(tport, "svc/plain", "t/hello", "late", "-q", "1", "-V", "mqttv5")
        if r.returncode != 0:
            break
        time.sleep(0.1)
    assert r.returncode != 0, "a disabled service still publishes on the test listener"
    hub.wait_log(r"test service 'svc' is not active: refused")
    w.close()
    assert hub.stop() == 0


def test_insecure_test_listener_unknown_service(hub):
    tport = free_port()
    proc = hub.start("--insecure-test-listener", str(tport), "--as-service", "nosuch",
                     wait=False)
    assert proc.wait(timeout=5) == 1
    hub.stop()
    log = hub.log()
    assert "nosuch" in log and "cannot start" in log, log
    with pytest.raises(ConnectionRefusedError):
        mw.tcp(tport).close()
