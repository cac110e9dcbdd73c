"""Fuzz target `plain`: the plain codec's decoder, as a queue reaches it.

The whole input is the payload of one PLAIN record (type 5, see
`_core/plain.c`).  The harness puts a plain str of the same encoded length
on a fresh anonymous queue, which writes a PLAIN record at the start of the
ring's base region, checks that it finds that record there, overwrites its
payload (and, below six bytes, its length) through /proc/self/fd, and calls
`get_nowait()`.  A corrupt payload must raise SegmentError.

A payload that decodes must also survive a round trip: putting the decoded
value on another queue and getting it back gives an equal value (compared
by pickle, so that the types, -0.0 and NaNs count).
"""
from __future__ import annotations

import pickle
import struct
import warnings
from typing import Dict

from common import REC, Finding, SegmentFile, documented_errors, first_record, record_of

import interproc

PLAIN = 5
CAPACITY = 1 << 16           # room for the largest plain payload, in the base region

ALLOWED = documented_errors()


def _same(a, b) -> bool:
    return pickle.dumps(a, 5) == pickle.dumps(b, 5)


def TestOneInput(data: bytes) -> None:
    if len(data) > CAPACITY // 2:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = interproc.Queue(capacity_bytes=CAPACITY)
        try:
            q.put("x" * max(len(data) - 6, 0))  # 's', kind, u32 n, n bytes: a PLAIN record
            seg = SegmentFile.of_fd(q._fd)
            try:
                at, rtype, rlen = first_record(seg)
                if rtype != PLAIN or rlen != max(len(data), 6):
                    raise RuntimeError(f"harness out of date: expected a PLAIN record of {len(data)} "
                                       f"bytes at the start of the ring, found type {rtype}, "
                                       f"length {rlen}")
                seg.write(at + REC.size, data)
                if len(data) < 6:
                    seg.write(at, REC.pack(PLAIN, 0, len(data)))
            finally:
                seg.close()
            try:
                value = q.get_nowait()
            except ALLOWED:
                return
        finally:
            q.close()
        # The value came from shared memory: it must travel unchanged.
        q2 = interproc.Queue(capacity_bytes=CAPACITY)
        try:
            q2.put(value)
            back = q2.get_nowait()
        finally:
            q2.close()
        if not _same(value, back):
            raise Finding(f"round trip changed {value!r} into {back!r}")


def initialize() -> None:
    pass


# ---------------------------------------------------------------------------
# Seeds: real encodings of every tag, captured from a queue's ring, and a
# few damaged ones.

SEED_VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -2**63, 1.5, float("nan"), -0.0, "", "ascii",
    "latin-1 \xe9", "\u20ac uses two bytes", "\U0001F600 four", b"", b"bytes\x00\xff",
    (), (1, "a", None, 2.5, b"x"), [1, 2, 3], ["mixed", True, -7], {}, {"k": 1, 2: "v", None: b""},
    {1.5: (), "t": False}, tuple(range(40)), ["s" * 100] * 3,
]


def _encoding(value) -> bytes:
    return record_of(value, CAPACITY, PLAIN)


def seeds() -> Dict[str, bytes]:
    out = {}
    for i, v in enumerate(SEED_VALUES):
        try:
            out[f"value{i:02d}"] = _encoding(v)
        except AssertionError:
            continue
    # Damage: a count beyond the items, a bad string kind, a truncated int.
    out["count-beyond"] = b"t" + struct.pack("<I", 300) + b"N"
    out["bad-kind"] = b"s\x03" + struct.pack("<I", 1) + b"abc"
    out["short-int"] = b"i\x01\x02"
    out["dict-unhashable"] = b"d" + struct.pack("<I", 1) + b"N" + b"N"
    return out

