#!/usr/bin/python3
"""Write the seed corpus of fuzz_queue: tests/fuzz/corpus/fuzz_queue/.

Run from anywhere with Debian's interpreter (stdlib only):

    /usr/bin/python3 tests/fuzz/make_queue_corpus.py           # (re)write the seeds
    /usr/bin/python3 tests/fuzz/make_queue_corpus.py --check   # exit 1 if stale

The area images are built here from the byte layout in docs/sdk-queue.md,
not by src/sdk/queue.c, so the seeds also check that the document and the
code agree: a valid queue, one that wraps, one with a damaged record in the
middle, one with a torn last record, two header copies, a blank area, an
erased (0xFF) one. Each image is followed by a script of operations (see
tests/fuzz/fuzz_queue.c): pushes, pops, peeks, reopens and planned power
losses.

An input is: 2 bytes (little-endian) whose value modulo 2048 is the area
size minus 80, the area image (that many bytes), then the script.

Seeds are named seed-<what>; files named regress-* (inputs that once found
a bug) are kept; every other file in the directory is replaced.
"""

import argparse
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_queue")

HEADER = 64
OVERHEAD = 16
MIN_AREA = HEADER + OVERHEAD


def header_copy(salt, gen, head_seq):
    body = struct.pack("<4sIIIQ", b"MTQ1", salt, gen, 0, head_seq)
    return body + struct.pack("<I", zlib.crc32(body)) + b"\0" * 4


def record(salt, seq, payload):
    head = b"Mq" + struct.pack("<HQ", len(payload), seq)
    crc = zlib.crc32(head + payload, salt)  # CRC-32 with register ~salt
    rec = head + struct.pack("<I", crc) + payload
    return rec + b"\0" * (-len(rec) % 4)


class Image:
    def __init__(self, size, fill=0, salt=0x5EED1234):
        self.b = bytearray([fill]) * size
        self.salt = salt

    def put(self, off, data):
        self.b[off:off + len(data)] = data
        return off + len(data)

    def headers(self, head_seq, gen=0, other=None):
        """The newest copy (generation gen, in copy gen % 2); other: the
        older copy's head_seq, or None for an invalid older copy."""
        self.put((gen % 2) * 32, header_copy(self.salt, gen, head_seq))
        if other is not None and gen > 0:
            self.put(((gen - 1) % 2) * 32, header_copy(self.salt, gen - 1, other))


def script(*ops):
    return bytes(ops)


# op codes of fuzz_queue.c (op % 8) and their argument byte
PUSH, POP, PEEK, BADPOP, REOPEN, CUT = 0, 3, 4, 5, 6, 7
LOSE = 0x40  # on the op that dies: unsynced writes are lost


def busy():
    return script(PUSH, 10, PUSH, 40, PEEK, 0, POP, 0, PUSH, 3, PEEK, 1,
                  BADPOP, 0, REOPEN, 0, PUSH, 60, POP, 0, POP, 0, REOPEN, 1,
                  PUSH, 90, PUSH, 90, PUSH, 90, PUSH, 90)


def cuts():
    return script(PUSH, 20, CUT, 30, PUSH, 20, PUSH, 20, POP, 0,
                  CUT, 5, POP | LOSE, 0, PUSH, 7, CUT, 90, PUSH, 50, PUSH, 50,
                  PUSH, 50, REOPEN, 0, POP, 0)


def seed(size, image, ops):
    return struct.pack("<H", size - MIN_AREA) + bytes(image.b) + ops


def seeds():
    out = {}

    img = Image(256)
    out["blank"] = seed(256, img, busy() + cuts())

    img = Image(1024, fill=0xFF)
    out["erased"] = seed(1024, img, cuts() + busy())

    # A valid queue: records 7, 8, 9 from the start of the ring.
    img = Image(256)
    img.headers(head_seq=7, gen=3, other=6)
    off = HEADER
    for seq in (7, 8, 9):
        off = img.put(off, record(img.salt, seq, bytes([seq]) * (seq * 3)))
    out["valid"] = seed(256, img, busy())

    # Wrapped: 20 and 21 at the end of the ring, 22 and 23 from its start,
    # stale records (smaller numbers) in between.
    img = Image(400)
    img.headers(head_seq=20, gen=8, other=19)
    off = img.put(HEADER, record(img.salt, 22, b"twenty-two"))
    off = img.put(off, record(img.salt, 23, b"twenty-three" * 3))
    off = img.put(off, record(img.salt, 5, b"stale"))
    img.put(off, record(img.salt, 6, b"stale too"))
    off = img.put(260, record(img.salt, 20, b"twenty" * 8))
    img.put(off, record(img.salt, 21, b"twenty-one" * 3))
    out["wrapped"] = seed(400, img, cuts())

    # A damaged record in the middle (skipped and counted) and a torn one
    # at the end (dropped).
    img = Image(300)
    img.headers(head_seq=100, gen=1, other=99)
    off = HEADER
    for seq in range(100, 105):
        start = off
        off = img.put(off, record(img.salt, seq, bytes(range(seq - 90))))
        if seq == 102:
            img.b[start + 20] ^= 0x55
    torn = record(img.salt, 105, b"x" * 30)
    img.put(off, torn[:25])
    out["damaged"] = seed(300, img, busy())

    # Only the older header copy is valid (the newer one torn): the record
    # its pop removed comes back once.
    img = Image(200)
    img.headers(head_seq=41, gen=5, other=40)
    img.b[5 * 32 % 64 + 10] ^= 1
    off = img.put(HEADER, record(img.salt, 40, b"popped"))
    img.put(off, record(img.salt, 41, b"kept"))
    out["torn-header"] = seed(200, img, busy())

    # A tiny ring: one record fits.
    img = Image(MIN_AREA + 20)
    img.headers(head_seq=1, gen=0)
    out["tiny"] = seed(MIN_AREA + 20, img, script(PUSH, 0, PUSH, 0, PUSH, 4, CUT, 20,
                                                   PUSH, 0, POP, 0, PUSH, 0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the corpus is stale")
    args = ap.parse_args()
    want = {"seed-" + k: v for k, v in seeds().items()}
    os.makedirs(OUT, exist_ok=True)
    have = {n for n in os.listdir(OUT) if not n.startswith("regress-")}
    stale = have != set(want) or any(
        open(os.path.join(OUT, n), "rb").read() != v for n, v in want.items() if n in have)
    if args.check:
        sys.exit(1 if stale else 0)
    for n in have - set(want):
        os.remove(os.path.join(OUT, n))
    for n, v in want.items():
        with open(os.path.join(OUT, n), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    main()
