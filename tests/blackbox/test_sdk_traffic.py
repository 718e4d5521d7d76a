"""The traffic test of issue 5 ("leak no routine", seed 000): can an observer
of a device's encrypted traffic tell when its light was switched?

A device (tests/unit/sdk_traffic_device.c, libmoat's public API) talks to
moatd through a TCP forwarder the test owns (sdktools.Forwarder), which
notes the size and arrival time of every TLS record in both directions:
what an eavesdropper on the network sees. Two devices run side by side for
the same measurement window of SLOTS shaper intervals, one switching its
light SWITCHES times at random moments, the other never. Compared over the
window, device to hub:

- sizes: the multiset of TLS record lengths must be identical;
- timing: a two-sample Kolmogorov-Smirnov test on the gaps between
  consecutive records must not tell the runs apart at ALPHA (plain Python
  below: python3-scipy is not a dependency).

With the shaper on, both must hold, and the hub must still have received
every switch (the routine is carried, only hidden). With the shaper off, the
same checks must fail on both counts (so the test can fail), and an observer
finds nearly every switch as a record right after it. Both runs use TLS
record padding (the Linux port's default) and a 1 s keep-alive, so the
quiet device is not silent without the shaper either: padding alone does not
hide the routine.

The numbers of a run are printed (pytest -s) and quoted in docs/sdk-wire.md.
"""
import collections
import math
import os
import time

import pytest

from sdktools import Device, Forwarder, Recorder, write_policy_service

INTERVAL_MS = 200  # shaper interval
SLOTS = 30  # the window is this many intervals
WINDOW_MS = INTERVAL_MS * SLOTS
SWITCHES = 30
RECORD = 256  # shaped record size
# KS significance level: a false alarm (identical timing judged different)
# in one run of 500; the unshaped control stays well below it.
ALPHA = 0.002
SEED = int(os.environ.get("MOAT_TRAFFIC_SEED", "7"))


# ---- statistics -----------------------------------------------------------

def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov D: the largest distance between the two
    empirical distribution functions."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] <= x:
            i += 1
        while j < len(b) and b[j] <= x:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def ks_pvalue(d, n, m):
    """P(D >= d) for samples of n and m under the null hypothesis: the
    asymptotic Kolmogorov distribution with Stephens' small-sample correction
    of the effective size."""
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.05:
        return 1.0
    q = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, q))


def ks_2samp(a, b):
    """(D, p); p = 0 when a sample has fewer than two values (nothing to
    compare is a difference in itself: the other run had traffic)."""
    if len(a) < 2 or len(b) < 2:
        return 1.0, 0.0
    d = ks_statistic(a, b)
    return d, ks_pvalue(d, len(a), len(b))


def test_ks_implementation():
    """The test statistic itself, on samples with known answers."""
    import random
    rnd = random.Random(5)
    same = [rnd.gauss(0, 1) for _ in range(200)]
    assert ks_2samp(same, list(same)) == (0.0, 1.0)
    assert ks_statistic([1, 2, 3], [4, 5, 6]) == 1.0
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    # Disjoint samples of 30: p far below any threshold.
    assert ks_2samp(list(range(30)), list(range(100, 130)))[1] < 1e-10
    # Two draws from one distribution are mostly accepted, a shifted one is not.
    accepted = sum(ks_2samp([rnd.gauss(0, 1) for _ in range(30)],
                            [rnd.gauss(0, 1) for _ in range(30)])[1] >= ALPHA
                   for _ in range(200))
    assert accepted >= 190  # 99.8% expected
    rejected = sum(ks_2samp([rnd.gauss(0, 1) for _ in range(30)],
                            [rnd.gauss(2.5, 1) for _ in range(30)])[1] < ALPHA
                   for _ in range(200))
    assert rejected >= 190


# ---- runs -----------------------------------------------------------------

class Run:
    """One device run through its own forwarder; after finish(), the device
    to hub records inside its window: sizes, gaps, times."""

    def __init__(self, procs, hub, dev, tmp_path, name, switches, shaped):
        from conftest import BUILD
        self.name, self.switches_wanted, self.shaped = name, switches, shaped
        self.fwd = Forwarder("127.0.0.1", hub.port)
        self.dev = dev
        exe = os.path.join(BUILD, "tests", "unit", "sdk_traffic_device")
        if not os.access(exe, os.X_OK):
            pytest.fail(f"{exe} not built; run make build")
        argv = [exe, "--hub", f"127.0.0.1:{self.fwd.port}", "--ca", dev.ca, "--cert", dev.cert,
                "--key", dev.key, "--state", str(tmp_path / f"state-{name}"), "--window",
                str(WINDOW_MS), "--switches", str(switches), "--seed", str(SEED),
                "--keep-alive", "1"]
        if shaped:
            argv += ["--shaper", f"{INTERVAL_MS}:{RECORD}"]
        self.device = Device(procs, argv)

    def finish(self):
        try:
            assert self.device.wait_exit(WINDOW_MS / 1000 + 30) == 0, self.device.stderr()
        finally:
            time.sleep(0.2)
            self.fwd.close()
        w = self.device.wait_for(r"^window start=(\d+) end=(\d+)")[0]
        self.t0, self.t1 = int(w.group(1)) / 1000, int(w.group(2)) / 1000
        self.switch_times = [int(m.group(1)) / 1000 for m in
                             (self.device.wait_for(r"^switch seq=\d+ at=(\d+)",
                                                   count=self.switches_wanted)
                              if self.switches_wanted else [])]
        st = self.device.wait_for(r"^stats shaped=(\d+) cover=(\d+) sent=(\d+) queued=(\d+) "
                                  r"publishes=(\d+)")[0]
        self.stats = dict(zip(("shaped", "cover", "sent", "queued", "publishes"),
                              map(int, st.groups())))
        inside = [r for r in self.fwd.timed("client") if self.t0 <= r[0] < self.t1]
        self.times = [t for t, _typ, _n in inside]
        self.sizes = [n for _t, _typ, n in inside]
        self.gaps = [b - a for a, b in zip(self.times, self.times[1:])]
        self.server = [r for r in self.fwd.timed("server") if self.t0 <= r[0] < self.t1]
        return self

    def found(self, switch_times, within=0.05):
        """How many of switch_times an observer finds as a device record
        starting within `within` seconds after them."""
        return sum(any(0 <= t - s <= within for t in self.times) for s in switch_times)

    def ack_delays(self):
        """For each device record, how long until the hub's next record (its
        PUBACK): what the hub's side of the traffic shows."""
        out = []
        for t in self.times:
            later = [s for s, _typ, _n in self.server if s >= t]
            if later:
                out.append(later[0] - t)
        return out


def run_pair(procs, hub, tmp_path, shaped):
    """The light run and the quiet run side by side (same machine load),
    with a recorder that decodes what reaches the hub."""
    devs = [hub.add_device(), hub.add_device()]
    svc = write_policy_service(hub, "ingest")
    hub.start()
    rec = Recorder(hub.port, hub.ssl_context(svc), "ingest", "moat/+/up/#")
    try:
        light = Run(procs, hub, devs[0], tmp_path, "light", SWITCHES, shaped)
        quiet = Run(procs, hub, devs[1], tmp_path, "quiet", 0, shaped)
        light.finish()
        quiet.finish()
        time.sleep(0.3)  # the last acknowledged batch reaches the recorder
        return light, quiet, rec.snapshot()
    finally:
        rec.close()


def summary(label, light, quiet):
    d, p = ks_2samp(light.gaps, quiet.gaps)
    ad, ap = ks_2samp(light.ack_delays(), quiet.ack_delays())

    def ms(xs):
        xs = sorted(xs)
        return (f"median {1000 * xs[len(xs) // 2]:.1f} ms, range "
                f"{1000 * xs[0]:.1f}-{1000 * xs[-1]:.1f} ms" if xs else "none")
    print(f"\n[{label}] window {WINDOW_MS} ms, {SWITCHES} switches, seed {SEED}\n"
          f"  light: {len(light.sizes)} records, sizes {dict(collections.Counter(light.sizes))}, "
          f"gaps {ms(light.gaps)}; stats {light.stats}\n"
          f"  quiet: {len(quiet.sizes)} records, sizes {dict(collections.Counter(quiet.sizes))}, "
          f"gaps {ms(quiet.gaps)}; stats {quiet.stats}\n"
          f"  gaps KS D={d:.3f} p={p:.3g}; switches found within 50 ms: light "
          f"{light.found(light.switch_times)}/{len(light.switch_times)}, quiet (same moments) "
          f"{quiet.found(light.switch_times)}/{len(light.switch_times)}\n"
          f"  hub acknowledgement delay: light {ms(light.ack_delays())}, quiet "
          f"{ms(quiet.ack_delays())}, KS D={ad:.3f} p={ap:.3g}")
    return d, p


# ---- the tests --------------------------------------------------------------

def test_shaped_traffic_hides_the_light_switch(hub, procs, tmp_path):
    light, quiet, readings = run_pair(procs, hub, tmp_path, shaped=True)
    d, p = summary("shaper on", light, quiet)

    # The routine happened and was carried: every switch reached the hub,
    # inside shaped records; the quiet device sent only cover.
    assert len(light.switch_times) == SWITCHES
    assert light.stats["sent"] == SWITCHES and light.stats["queued"] == 0, light.stats
    assert quiet.stats["sent"] == 0 and quiet.stats["cover"] == quiet.stats["shaped"]
    got = [r for r in readings if r[0] == f"moat/{light.dev.id}/up/_shaped"]
    assert sorted({r[2] for r in got}) == list(range(1, SWITCHES + 1))
    assert {r[1] for r in got} == {"light"}
    assert all(f"/{quiet.dev.id}/" not in r[0] for r in readings)

    # One record per slot in each run (a stalled slot would show here).
    assert SLOTS - 2 <= len(light.sizes) <= SLOTS, light.times
    # Sizes: the very same records.
    assert collections.Counter(light.sizes) == collections.Counter(quiet.sizes), \
        (light.sizes, quiet.sizes)
    # Timing: the gaps do not tell the runs apart.
    assert p >= ALPHA, f"KS D={d:.3f} p={p:.3g}: the timing differs"


def test_unshaped_traffic_shows_the_light_switch(hub, procs, tmp_path):
    """The control: the same runs without the shaper are told apart by both
    checks, so the test above can fail."""
    light, quiet, readings = run_pair(procs, hub, tmp_path, shaped=False)
    d, p = summary("shaper off", light, quiet)
    assert light.stats["sent"] == SWITCHES, light.stats
    assert collections.Counter(light.sizes) != collections.Counter(quiet.sizes)
    assert p < ALPHA, f"KS D={d:.3f} p={p:.3g}"
    # An observer recovers the moments of the switches from the capture.
    assert light.found(light.switch_times) >= 0.9 * SWITCHES
