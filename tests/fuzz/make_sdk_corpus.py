#!/usr/bin/python3
"""Write the seed corpora of fuzz_record and fuzz_command (libmoat's trust
part) into tests/fuzz/corpus/. The layouts are written here from
docs/sdk-wire.md, independently of the C encoder, so that the seeds also say
what the format is. Run from anywhere; existing seed-* files are replaced,
regress-* files are left alone."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

MAGIC = b"\x00mtb"
DOMAIN = b"moat command v1\x00"
KEY1 = b"MoatKey1"  # key ids of the two keys fuzz_command trusts
KEY2 = b"MoatKey2"
NOW = 1700000000


def record(stream, t, payload):
    return bytes([len(stream)]) + stream + struct.pack(">QH", t, len(payload)) + payload


def batch(entries, pad_to=0):
    body = b"".join(struct.pack(">Q", seq) + rec for seq, rec in entries)
    out = MAGIC + bytes([1, 1]) + struct.pack(">H", len(entries)) + body
    return out + b"\x00" * max(0, pad_to - len(out))


def cover(size):
    return MAGIC + bytes([1, 2, 0, 0]) + b"\x00" * (size - 8)


def envelope(counter, expiry, device=b"dev-1", name=b"set", body=b"{}", key=KEY1, sig0=1):
    signed = (DOMAIN + key + struct.pack(">QQ", counter, expiry) + bytes([len(device)]) + device
              + bytes([len(name)]) + name + struct.pack(">I", len(body)) + body)
    return signed + bytes([sig0]) + b"\x00" * 63


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as fh:
            fh.write(data)


def main():
    r1 = record(b"temp", 1700000000123, b"21.5")
    r2 = record(b"light", 1700000000456, b"on")
    r3 = record(b"door", 0, b"")
    write("fuzz_record", {
        "batch-one": batch([(1, r1)]),
        "batch-three": batch([(7, r1), (8, r2), (10, r3)]),
        "batch-padded": batch([(7, r1), (8, r2)], 256),
        "cover-64": cover(64),
        "cover-min": cover(8),
        "record": r1,
        "record-empty": r3,
        "plain-json": b'{"celsius": 21.5}',
        "bad-padding": batch([(1, r1)], 40)[:-1] + b"\x01",
        "bad-seq": batch([(9, r1), (9, r2)]),
    })
    topic = b"moat/dev-1/down/set"
    write("fuzz_command", {
        "ok": b"\x00" + envelope(2000, NOW + 300),
        "ok-key2": b"\x00" + envelope(2000, NOW + 300, key=KEY2, body=b"x" * 40),
        "ok-over-preset": b"\x08" + envelope(1001, NOW + 1),
        "replay-preset": b"\x08" + envelope(1000, NOW + 300),
        "big-counter": b"\x18" + envelope(2 ** 64 - 1, 2 ** 64 - 1),
        "expired": b"\x00" + envelope(2000, NOW),
        "clock-unknown": b"\x01" + envelope(2000, NOW + 300),
        "storage-fails": b"\x02" + envelope(2000, NOW + 300),
        "bad-signature": b"\x00" + envelope(2000, NOW + 300, sig0=2),
        "unknown-key": b"\x00" + envelope(2000, NOW + 300, key=b"NotOurs!"),
        "wrong-device": b"\x00" + envelope(2000, NOW + 300, device=b"dev-2"),
        "topic-given": b"\x04" + bytes([len(topic)]) + topic + envelope(2000, NOW + 300),
        "topic-wrong": b"\x04" + bytes([len(topic) - 1]) + topic[:-1] + envelope(2000, NOW + 300),
        "truncated": b"\x00" + envelope(2000, NOW + 300)[:-1],
    })


if __name__ == "__main__":
    main()
