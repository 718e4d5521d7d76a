"""Shared fixtures for the black-box tests.

These tests run the project's real programs (and real peers: Mosquitto's
broker and clients, Paho) as separate processes on 127.0.0.1, on ports the
test picks, and stop every process they start, on failure too.
"""
import os
import shutil
import sys
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MOAT_BUILD", os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def program(name):
    """Path of a program built by the project; fails the test if missing."""
    for sub in ("tools", "src/ctl", "src/hub", "bench", "examples", ""):
        path = os.path.join(BUILD, sub, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    pytest.fail(f"{name} not built under {BUILD}; run make build")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10.0, proc=None):
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class Processes:
    """Starts processes and guarantees they are gone when the test ends."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream:
                    stream.close()


@pytest.fixture
def procs():
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()


@pytest.fixture
def mosquitto_broker(procs, tmp_path):
    """A plain-TCP Debian mosquitto on a free loopback port (for codec tests
    against a real peer). Returns the port."""
    if not shutil.which("mosquitto"):
        pytest.fail("mosquitto is not installed; run scripts/bootstrap")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\n"
    )
    proc = procs.start(["mosquitto", "-c", str(conf)])
    wait_for_port(port, proc=proc)
    return port


@pytest.fixture
def hub(procs, tmp_path):
    """A fresh hub data directory (moatctl init) and a moatd that the test
    starts with hub.start(). Stopped at the end of the test."""
    from hubtools import Hub

    h = Hub(procs, tmp_path, program, free_port, wait_for_port)
    try:
        yield h
    finally:
        if h.proc is not None and h.proc.poll() is None:
            h.stop()
