"""`make run` prints mosquitto commands that work: run scripts/dev-hub on a
fresh data directory, then execute exactly the commands it printed.

This keeps the README's first command honest: if the script, the defaults or
the policies drift, the printed commands stop working and this test fails.
"""
import os
import re
import shlex
import subprocess
import time

from conftest import BUILD, ROOT, free_port, wait_for_port


def printed_commands(out):
    return [line.strip() for line in out.splitlines()
            if line.strip().startswith(("mosquitto_pub ", "mosquitto_sub "))]


def test_dev_hub_prints_working_commands(procs, tmp_path):
    port = free_port()
    env = dict(os.environ, MOAT_PORT=str(port))
    log = open(tmp_path / "dev-hub.log", "w")
    proc = procs.start([os.path.join(ROOT, "scripts", "dev-hub"), BUILD, str(tmp_path / "dev")],
                       cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, proc=proc)
    out = open(tmp_path / "dev-hub.log").read()
    cmds = printed_commands(out)
    assert len(cmds) == 5, out
    watch, publish, listen, command, refused = [shlex.split(c) for c in cmds]

    def run(argv, *extra, timeout=10):
        return subprocess.run(argv + list(extra), cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout)

    # The console sees the device's reading.
    sub = procs.start(watch + ["-C", "1", "-W", "8"], cwd=tmp_path)
    time.sleep(0.5)
    assert run(publish).returncode == 0
    got, err = sub.communicate(timeout=10)
    assert re.search(rb"moat/[a-z2-7]{26}/up/temperature 21\.5", got), (got, err)

    # The device receives the console's command.
    dev = procs.start(listen + ["-C", "1", "-W", "8"], cwd=tmp_path)
    time.sleep(0.5)
    assert run(command).returncode == 0
    got, err = dev.communicate(timeout=10)
    assert re.search(rb"moat/[a-z2-7]{26}/down/led on", got), (got, err)

    # And '#' is refused, as the text says.
    r = run(refused + ["-C", "1", "-W", "3"])
    assert "denied" in (r.stdout + r.stderr), r
