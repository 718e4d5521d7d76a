#!/usr/bin/python3
"""Write the seed corpus of fuzz_broker: tests/fuzz/corpus/fuzz_broker/.

Run from anywhere with Debian's interpreter (stdlib only):

    /usr/bin/python3 tests/fuzz/make_broker_corpus.py           # (re)write
    /usr/bin/python3 tests/fuzz/make_broker_corpus.py --check   # exit 1 if stale

Each seed is a short script in the input language of tests/fuzz/fuzz_broker.c
(see the comment at its top): a session scenario that libFuzzer can mutate
from, instead of having to discover a CONNECT, a subscription that a policy
allows and a matching publish by itself. Files are named by the SHA-1 of their
content; regress-* files are kept, every other file is replaced.
"""

import argparse
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_broker")


def setup(conns, store=1, limits=0, rate=0):
    return [(conns - 1) | store << 2 | limits << 4 | rate << 6]


def init(principal, v5, connect=True):
    """principal: 0 d0, 1 d1, 2 svc, 3 ops."""
    return [principal | (4 if v5 else 0) | (8 if connect else 0)]


PASS = [0x05]  # end of the pass, close what the broker listed


def connect(slot, a, b, p=0, will=None):
    s = [0x06 | slot << 4, a, b]
    if a & 1:
        s.append(p)
    if a & 0x20:
        s += will
    return s


def subscribe(slot, a, entries):
    s = [0x07 | slot << 4, a]
    for options, topic in entries:
        s += [options] + topic
    return s


def publish(slot, a, b, topic):
    return [0x08 | slot << 4, a, b] + topic


def ack(slot, a):
    return [0x09 | slot << 4, a]


def disconnect(slot, a):
    return [0x0A | slot << 4, a]


def opens(principal):
    return [0x0B, principal << 1]


def tick(t):
    return [0x0C, t]


def reauthorize(a):
    return [0x0D, a]


def store(a):
    return [0x0E, a]


def raw(slot, data):
    return [0x00 | slot << 4, len(data)] + list(data)


# Topics (make_topic in fuzz_broker.c): two bytes.
D0_UP = [0x03, 0x00]          # moat/d0/up/a
D0_DOWN = [0x23, 0x00]        # moat/d0/down/a
D0_DOWN_ALL = [0xE3, 0x00]    # moat/d0/down/#
D0_DOWN_PLUS = [0xA3, 0x00]   # moat/d0/down/+
ALL_UP = [0xDB, 0x00]         # moat/+/up/#
SHARED_UP = [0xDB, 0xC0]      # $share/g0/moat/+/up/#


def seeds():
    # d0 (MQTT 5, session expiry, a will) and svc: QoS 1 and 2 both ways,
    # then d0 goes with messages in flight and comes back.
    a = setup(2) + init(0, True, False) + init(2, True) + PASS
    a += connect(0, 0x01 | 0x20 | 0x40, 0x28, 0x01, D0_UP)
    a += subscribe(1, 0x20, [(0x01, ALL_UP)])
    a += subscribe(0, 0x01, [(0x02, D0_DOWN_ALL), (0x01, D0_DOWN_PLUS)])
    a += publish(1, 0x01, 0x05, D0_DOWN) + publish(1, 0x02, 0x25, D0_DOWN)
    a += publish(0, 0x02, 0x05, D0_UP) + PASS
    a += ack(0, 0x00) + ack(0, 0x01) + ack(1, 0x00) + ack(0, 0x02) + PASS
    a += publish(1, 0x01, 0x45, D0_DOWN) + PASS + [0x0B, 0x01] + PASS
    a += publish(1, 0x02, 0x65, D0_DOWN) + PASS + opens(0) + connect(0, 0x01, 0x28, 0x01) + PASS
    a += ack(0, 0x00) + ack(0, 0x04) + ack(0, 0x01) + PASS
    yield a
    # Shared subscriptions and topic aliases.
    b = setup(4) + init(2, True, False) + init(2, True, False) + init(0, True) + init(3, True)
    b += PASS + connect(0, 0x11, 0x00, 0x08 | 0x30) + connect(1, 0x11, 0x01, 0x08 | 0x10)
    b += subscribe(0, 0x00, [(0x00, SHARED_UP)]) + subscribe(1, 0x00, [(0x01, SHARED_UP)])
    b += subscribe(1, 0x00, [(0x00, ALL_UP)])
    for i in range(4):
        b += publish(2, 0x10 | (0x20 * (i & 1)), 0x03 + (0x10 if i >= 2 else 0), D0_UP)
    b += PASS + publish(3, 0x11, 0x13, D0_DOWN) + PASS
    yield b
    # The store fails (commit, begin, a write) while d0 is offline.
    c = setup(3, 2) + init(0, False) + init(2, True) + init(1, True) + PASS
    c += subscribe(0, 0x00, [(0x01, D0_DOWN_ALL)]) + disconnect(0, 0x00) + PASS
    c += store(0x02) + publish(1, 0x01, 0x05, D0_DOWN) + PASS
    c += store(0x01) + publish(1, 0x01, 0x25, D0_DOWN) + PASS
    c += store(0x04) + publish(2, 0x05, 0x05, D0_DOWN) + PASS + store(0) + PASS
    c += opens(0) + connect(0, 0x00, 0x00) + PASS
    yield c
    # A CONNECT a byte at a time, a raw PUBLISH, garbage elsewhere.
    conn5 = [0x10, 0x10, 0x00, 0x04] + list(b"MQTT") + [0x05, 0x02, 0x00, 0x3C, 0x00, 0x00,
                                                        0x03] + list(b"svc")
    d = setup(2, 0) + init(2, True, False) + init(0, False, False)
    for byte in conn5:
        d += raw(0, [byte])
    d += PASS + raw(0, [0x30, 0x0A, 0x00, 0x04] + list(b"moat") + [0x00] + list(b"xyz"))
    d += raw(1, [0x00, 0x00]) + PASS
    yield d
    # Timers (keep alive, will delay, session expiry, CONNECT timeout), the
    # registry, shutdown and restart.
    e = setup(3) + init(0, True, False) + init(2, True) + init(1, False, False) + PASS
    e += subscribe(1, 0x00, [(0x01, ALL_UP)])
    e += connect(0, 0x01 | 0x04 | 0x20, 0x8A, 0x01, D0_UP) + PASS + tick(0x10)
    e += [0x0B, 0x01] + PASS + tick(0x20) + tick(0x40) + reauthorize(0x02 | 0x40) + PASS
    e += reauthorize(0x80 | 0x20) + PASS + tick(0xFF) + [0x1F] + PASS + [0x0F] + PASS
    yield e
    # Small queues: an offline queue overflows, some messages expire in it.
    f = setup(2, 1, 1) + init(0, True, False) + init(3, True) + PASS
    f += connect(0, 0x01, 0x80, 0x01) + subscribe(0, 0x00, [(0x01, D0_DOWN_ALL)])
    f += disconnect(0, 0x04 | (20 << 3)) + PASS
    for i in range(6):
        f += publish(1, 0x82, ((i * 3) & 7) | (i << 5), D0_DOWN)
    f += PASS + tick(0x14) + opens(0) + connect(0, 0x01, 0x80, 0x01 | 0x04) + PASS
    f += ack(0, 0x00) + PASS
    yield f


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the corpus is stale")
    args = ap.parse_args()
    want = {}
    for s in seeds():
        data = bytes(s)
        want[hashlib.sha1(data).hexdigest()] = data
    have = set()
    if os.path.isdir(OUT):
        have = {n for n in os.listdir(OUT) if not n.startswith("regress-")}
    if args.check:
        stale = have != set(want) or any(
            open(os.path.join(OUT, n), "rb").read() != d for n, d in want.items())
        if stale:
            print("tests/fuzz/corpus/fuzz_broker is stale: run make_broker_corpus.py")
        return 1 if stale else 0
    os.makedirs(OUT, exist_ok=True)
    for name in have - set(want):
        os.remove(os.path.join(OUT, name))
    for name, data in want.items():
        with open(os.path.join(OUT, name), "wb") as fh:
            fh.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
