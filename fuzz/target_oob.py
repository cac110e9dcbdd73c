"""Fuzz target `oob`: the reader of out-of-band records, as a queue reaches it.

The whole input is the payload of one OOB record (type 7, see
`_core/module.c`): `u64 pickle_len, u64 nbufs, u64 buffer_len[nbufs]`, the
pickle, then each buffer at the next 64-byte boundary of the payload, the
last one ending the record.  The harness puts a bytes object of the same
length on a fresh anonymous queue, which writes a BYTES record at the start
of the ring's base region, checks that it finds that record there,
overwrites its type with OOB and its payload with the input through
/proc/self/fd, and calls `get_nowait()`.  A layout that does not add up must
raise SegmentError, and only such a layout (the harness reads the layout
itself: `_adds_up`); a pickle that does not load, UnpicklingError (see
common.safe_loads; this target also lets it rebuild NumPy arrays, the usual
cargo of such records).

A payload that decodes must also survive a round trip: putting the decoded
value on another queue and getting it back gives an equal value (compared
by pickle, so that types, dtypes, memory order and NaNs count, but not
which equal parts were one object).  A buffer that pickle hands back as it
came (a PickleBuffer sent alone: a memoryview over the received copy) is
compared by its bytes and read-only flag.
"""
from __future__ import annotations

import io
import pickle
import struct
import warnings
from typing import Any, Dict, List

from common import (REC, TRACE, Finding, SegmentFile, allow_numpy_arrays, documented_errors,
                    first_record, record_of, trace)

import interproc
from interproc import _core, serialization

_LAYOUT = _core._layout()
OOB = _LAYOUT["rec.OOB"]        # 7
BYTES = _LAYOUT["rec.BYTES"]    # 2
ALIGN = _LAYOUT["oob.align"]    # 64
assert REC.size == _LAYOUT["rec.size"], "harness out of date: the record header changed"
CAPACITY = 1 << 16           # room for the largest input, in the base region

ALLOWED = documented_errors()


def _tree(v: Any) -> bytes:
    """v's pickle without the memo: the same whether or not equal parts are
    one object (a pickle can share a str twice; the plain codec, which
    carries such values on the way back, makes two)."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, 5)
    p.fast = True
    p.dump(v)
    return buf.getvalue()


def _same(a: Any, b: Any) -> bool:
    if pickle.dumps(a, 5) == pickle.dumps(b, 5):
        return True
    try:
        return _tree(a) == _tree(b)
    except ValueError:  # a cycle: the memo was needed
        return False


def _show(value: Any) -> str:
    try:
        return repr(value)[:200]
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to show"


def _adds_up(data: bytes) -> bool:
    """Whether the input is a sound OOB layout, read as the docstring says:
    at least one buffer (a message without any travels as a PICKLE record),
    the pickle and every buffer inside the record, and nothing after the
    last buffer."""
    if len(data) < 16:
        return False
    plen, n = struct.unpack_from("<QQ", data, 0)
    if n == 0 or 16 + 8 * n + plen > len(data):
        return False
    off = 16 + 8 * n + plen
    for (blen,) in struct.iter_unpack("<Q", data[16:16 + 8 * n]):
        off += -off % ALIGN
        off += blen
        if off > len(data):
            return False
    return off == len(data)


def _round_trip(value: Any) -> None:
    if isinstance(value, memoryview):
        # pickle gives a lone out-of-band buffer back as the buffer itself;
        # a memoryview cannot be pickled, but the PickleBuffer it came from can.
        sent: Any = pickle.PickleBuffer(value)
    else:
        try:
            pickle.dumps(value, 5)
        except (TypeError, RecursionError):
            # It holds a memoryview (an out-of-band buffer, as it came), or
            # is nested deeper than pickle goes: pickle cannot send it.
            return
        sent = value
    q2 = interproc.Queue(capacity_bytes=CAPACITY)
    try:
        q2.put(sent)
        back = q2.get_nowait()
    finally:
        q2.close()
    if isinstance(value, memoryview):
        if bytes(back) != value.tobytes() or memoryview(back).readonly != value.readonly:
            raise Finding(f"round trip changed a buffer {value.tobytes()!r:.200} "
                          f"(readonly={value.readonly}) into {_show(back)}")
    elif not _same(value, back):
        raise Finding(f"round trip changed {_show(value)} into {_show(back)}")


def TestOneInput(data: bytes) -> None:
    if len(data) > CAPACITY // 2:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = interproc.Queue(capacity_bytes=CAPACITY)
        try:
            q.put(bytes(len(data)))  # a BYTES record of exactly len(data) bytes
            seg = SegmentFile.of_fd(q._fd)
            try:
                at, rtype, rlen = first_record(seg)
                if rtype != BYTES or rlen != len(data):
                    raise RuntimeError(f"harness out of date: expected a BYTES record of {len(data)} "
                                       f"bytes at the start of the ring, found type {rtype}, "
                                       f"length {rlen}")
                seg.write(at, REC.pack(OOB, 0, len(data)))
                seg.write(at + REC.size, data)
            finally:
                seg.close()
            sound = _adds_up(data)
            try:
                value = q.get_nowait()
            except ALLOWED as exc:
                trace("get ->", type(exc).__name__, str(exc)[:120])
                if sound == isinstance(exc, interproc.SegmentError):
                    raise Finding(f"{'a sound' if sound else 'an unsound'} layout raised "
                                  f"{type(exc).__name__}: {exc}") from exc
                return
            if TRACE:
                trace("get ->", _show(value))
            if not sound:
                raise Finding(f"a layout that does not add up decoded, as {_show(value)}")
        finally:
            q.close()
        # The value came from shared memory: it must travel unchanged.
        _round_trip(value)


def initialize() -> None:
    allow_numpy_arrays()


# ---------------------------------------------------------------------------
# Seeds: real OOB records, captured from a queue's ring with every buffer
# sent out of band, and a few damaged ones.

def _seed_values() -> Dict[str, Any]:
    values: Dict[str, Any] = {
        "pb-bytearray": pickle.PickleBuffer(bytearray(b"a writable buffer\x00\xff" * 3)),
        "pb-bytes": pickle.PickleBuffer(b"a read-only buffer"),
        "pb-empty": pickle.PickleBuffer(b""),
        "pb-list": [pickle.PickleBuffer(bytearray(b"x" * 70)), "between",
                    pickle.PickleBuffer(b"y" * 3), pickle.PickleBuffer(bytearray())],
        "bytearray-in-tuple": (bytearray(b"in band"), pickle.PickleBuffer(bytearray(b"out" * 30))),
    }
    try:
        import numpy as np
    except ImportError:  # the NumPy seeds are optional
        return values
    values.update({
        "np-f8": np.arange(10.0),
        "np-f8-nan": np.array([np.nan, -0.0, np.inf, 1e-310]),
        "np-i4-fortran": np.asfortranarray(np.arange(12, dtype="<i4").reshape(3, 4)),
        "np-u1-3d": np.arange(60, dtype=np.uint8).reshape(3, 4, 5),
        "np-i2-big-endian": np.arange(7, dtype=">i2"),
        "np-c16": np.array([1 + 2j, -3.5j]),
        "np-bool": np.array([True, False, True]),
        "np-f4-permuted": np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(1, 0, 2),
        "np-unicode": np.array(["ab", "\u20ac"], dtype="<U3"),
        "np-structured": np.array([(1, (2.5, -1.0)), (3, (4.0, 0.5))],
                                  dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "np-structured-aligned": np.zeros(3, dtype=np.dtype([("c", "u1"), ("d", "<u8")], align=True)),
        "np-0d": np.array(7),
        "np-empty": np.zeros((0, 3)),
        "np-empty-structured": np.zeros(0, dtype=[("x", "<f4")]),
        "dict-two-arrays-bytearray": {"first": np.arange(5, dtype="<i8"),
                                      "second": np.ones((2, 2), order="F"),
                                      "raw": bytearray(b"kept beside them")},
        "np-readonly": np.frombuffer(b"\x01\x02\x03\x04", dtype="<u2"),
    })
    return values


def _encoding(value: Any) -> bytes:
    rec = record_of(value, CAPACITY, OOB)
    # The writer lays records out as this module's docstring says.
    plen, n, lens = _fields(rec)
    parts, off = [], 16 + 8 * n + plen
    for blen in lens:
        off += -off % ALIGN
        parts.append(rec[off:off + blen])
        off += blen
    assert _build(rec[16 + 8 * n:16 + 8 * n + plen], parts) == rec, f"{value!r}: unexpected layout"
    return rec


def _fields(rec: bytes):
    plen, n = struct.unpack_from("<QQ", rec, 0)
    lens = list(struct.unpack_from(f"<{n}Q", rec, 16))
    return plen, n, lens


def _with(rec: bytes, plen: int, n: int, lens: List[int]) -> bytes:
    head = struct.pack("<QQ", plen % (1 << 64), n % (1 << 64))
    head += b"".join(struct.pack("<Q", v % (1 << 64)) for v in lens)
    return head + rec[16 + 8 * len(lens):]


def _build(pickled: bytes, bufs: List[bytes]) -> bytes:
    """An OOB payload laid out from its parts, as the writer does."""
    out = bytearray(struct.pack(f"<QQ{len(bufs)}Q", len(pickled), len(bufs), *map(len, bufs)))
    out += pickled
    for b in bufs:
        out += bytes(-len(out) % ALIGN) + b
    return bytes(out)


def _damaged(rec: bytes) -> Dict[str, bytes]:
    """The ways a record's layout can fail to add up, from one good record."""
    plen, n, lens = _fields(rec)
    out = {
        "truncated": rec[:-1],
        "truncated-head": rec[:16 + 8 * n - 3],
        "trailing-byte": rec + b"\x00",
        "pickle-len-plus1": _with(rec, plen + 1, n, lens),
        "pickle-len-minus1": _with(rec, plen - 1, n, lens),
        "pickle-len-huge": _with(rec, 1 << 63, n, lens),
        "nbufs-plus1": _with(rec, plen, n + 1, lens),
        "nbufs-zero": _with(rec, plen, 0, lens),
        "nbufs-huge": _with(rec, plen, (1 << 61) + 1, lens),
        "buf-len-plus1": _with(rec, plen, n, lens[:-1] + [lens[-1] + 1]),
        "buf-len-minus1": _with(rec, plen, n, lens[:-1] + [lens[-1] - 1]),
        "buf-len-wraps": _with(rec, plen, n, [(1 << 64) - 64] + lens[1:]),
    }
    # The buffers moved down to the end of the pickle, without the padding.
    start = 16 + 8 * n + plen
    pad = -start % ALIGN
    if pad:
        out["unpadded"] = rec[:start] + rec[start + pad:]
    return out


def seeds() -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    saved = serialization.OUT_OF_BAND_MIN
    serialization.OUT_OF_BAND_MIN = 0  # every buffer out of band, however small
    try:
        for name, value in _seed_values().items():
            out[name] = _encoding(value)
    finally:
        serialization.OUT_OF_BAND_MIN = saved
    for base in ("pb-list", "dict-two-arrays-bytearray"):
        if base in out:
            for what, data in _damaged(out[base]).items():
                out[f"{base}-{what}"] = data
    # Well laid out, but with buffers the pickle does not use, or fewer than
    # it asks for.
    out["unused-buffer"] = _build(pickle.dumps(None, 5), [b""])
    two = pickle.dumps([pickle.PickleBuffer(b"a"), pickle.PickleBuffer(b"b")], 5,
                       buffer_callback=lambda b: False)
    out["too-few-buffers"] = _build(two, [b"a"])
    out["two-buffers"] = _build(two, [b"a", bytes(65)])
    return out
