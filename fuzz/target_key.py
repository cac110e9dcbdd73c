"""Fuzz target `key`: the shared dict's key decoder.

The whole input goes to `interproc._core.decode_key`, which turns a stored
key back into a Python object whenever a dict's keys are read (from shared
memory, so from bytes anyone with the segment can forge).  Bad bytes must
raise a documented exception.

A key that decodes must be canonical after one round: encoding it and
decoding that again gives the same encoding (a stored key that cannot be
found again would be a silent wrong result).
"""
from __future__ import annotations

import struct
import warnings
from typing import Dict

from common import Finding, documented_errors

from interproc import _core

ALLOWED = documented_errors() + (RecursionError,)


def TestOneInput(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            key = _core.decode_key(data)
        except ALLOWED:
            return
        try:
            enc = _core.encode_key(key)
        except TypeError:
            return  # a pickled key that unpickles to something unhashable
        again = _core.encode_key(_core.decode_key(enc))
        if again != enc:
            raise Finding(f"key {key!r} is not canonical: {enc!r} decodes and encodes to {again!r}")


def initialize() -> None:
    pass


SEED_KEYS = [
    None, 0, 1, -1, 2**63 - 1, -2**63, 2**64, -(2**100), 1.5, float("nan"), float("inf"), -0.5,
    "", "key", "\u20ac", "\ud800 lone surrogate", b"", b"\x00\xff", (), (1, "a"), ((1, 2), (3,)),
    frozenset(), frozenset({1, "a", (2, 3)}), (frozenset({1}), None), complex(1, 2),
]


def seeds() -> Dict[str, bytes]:
    out = {f"key{i:02d}": _core.encode_key(k) for i, k in enumerate(SEED_KEYS)}
    # Damage: a tuple count beyond its elements, a length beyond the end,
    # nesting past the limit, trailing bytes.
    out["tuple-count-beyond"] = b"t" + struct.pack("<I", 0xFFFFFFFF) + b"n"
    out["len-beyond"] = b"s" + struct.pack("<I", 1000) + b"abc"
    out["deep"] = (b"t" + struct.pack("<I", 1)) * 40 + b"n"
    out["trailing"] = b"n" + b"n"
    return out
