"""How interproc turns objects into bytes and back.

Objects travel as pickles made with multiprocessing's ``ForkingPickler``, so
whatever a ``multiprocessing.Queue`` can carry (including objects whose
reducers are registered with ``ForkingPickler.register``, such as sockets,
Connections and torch tensors), an interproc queue carries too.

The C core pickles exact builtin values (and flat tuples, lists and dicts
of them) with plain ``pickle.dumps``: for those the pickler never consults a
reducer, so the bytes are the same and the call is about six times cheaper.
``bytes`` objects travel raw, without pickling at all.

A message through a queue or pipe keeps its large contiguous buffers (NumPy
arrays and the like) out of the pickle (``dumps_message``): the C core
copies them straight into shared memory, and the receiver rebuilds the
object over its copy of them.
"""
from __future__ import annotations

import io
import multiprocessing
import pickle
import queue
from typing import Callable, List, Tuple, Union

from multiprocessing.reduction import ForkingPickler

from . import _core

__all__ = ["OUT_OF_BAND_MIN", "PROTOCOL", "dumps", "dumps_message", "loads", "out_of_band_collector"]

#: Protocol 5 is the fastest for large buffers and is understood by every
#: Python interproc supports.
PROTOCOL = 5

#: Contiguous buffers at least this large travel out of band.  Below it,
#: copying them into the pickle costs less than keeping them apart.
OUT_OF_BAND_MIN = 32 * 1024


def dumps(obj: object) -> bytes:
    """Pickle ``obj`` with multiprocessing's reductions."""
    buf = io.BytesIO()
    ForkingPickler(buf, PROTOCOL).dump(obj)
    return buf.getvalue()


def out_of_band_collector() -> Tuple[Callable[[pickle.PickleBuffer], bool], List[memoryview]]:
    """A pickler's ``buffer_callback`` and the list it fills: the flat
    memoryviews of the contiguous buffers of at least ``OUT_OF_BAND_MIN``
    bytes, which stay out of band.  Smaller and non-contiguous buffers go
    in band."""
    bufs: List[memoryview] = []

    def keep_apart(pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        bufs.append(raw)
        return False

    return keep_apart, bufs


def dumps_message(obj: object) -> Union[bytes, Tuple[bytes, Tuple[memoryview, ...]]]:
    """``dumps`` for a message through a queue or pipe: the pickle alone,
    or, when ``obj`` holds large contiguous buffers that pickle protocol 5
    can keep out of band (NumPy arrays, ``PickleBuffer``...),
    the pickle and those buffers as flat memoryviews, which the C core
    copies once, straight into shared memory (``loads(pickle,
    buffers=...)`` rebuilds the object)."""
    keep_apart, bufs = out_of_band_collector()
    buf = io.BytesIO()
    # Positionally: ForkingPickler passes on positional arguments only, and
    # the C pickler takes buffer_callback as the fourth.
    ForkingPickler(buf, PROTOCOL, True, keep_apart).dump(obj)
    if bufs:
        return buf.getvalue(), tuple(bufs)
    return buf.getvalue()


loads = pickle.loads

_core._configure(
    pickle.dumps, pickle.loads, dumps, PROTOCOL, queue.Full, queue.Empty, multiprocessing.BufferTooShort
)
_core._configure_messages(dumps_message)
