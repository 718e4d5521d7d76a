"""`make footprint` keeps working: scripts/footprint compiles the SDK core
for x86_64 and Cortex-M4, links the whole-client program and prints its
tables and a total. The sizes themselves are not asserted (they change with
the code and the compiler); docs/sdk-footprint.md records them.
"""
import glob
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_footprint_prints_its_tables_and_a_total():
    r = subprocess.run([os.path.join(ROOT, "scripts", "footprint")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # Every object of the core has its row, on both targets.
    for src in glob.glob(os.path.join(ROOT, "src", "sdk", "*.c")):
        name = os.path.splitext(os.path.basename(src))[0]
        assert re.search(rf"^\| sdk/{name}\.o \|( \d+ \|){{7}}$", out, re.M), name
    for struct in ("moat_client", "moat_config", "moat_shaper", "moat_command_verifier"):
        assert re.search(rf"^\| `{struct}` \| \d+ \| \d+ \|", out, re.M), struct
    assert re.search(r"^\| `moat_poll` \| \d+ \|", out, re.M)
    m = re.search(r"^total: (\d+) bytes of Cortex-M4 code for the whole client "
                  r"\(libmoat \+ codec (\d+), C library helpers (\d+)\); RAM (\d+) bytes", out,
                  re.M)
    assert m, out[-2000:]
    total, core, helpers, ram = map(int, m.groups())
    assert total > 0 and core > 0 and ram > 0
    assert core + helpers <= total
