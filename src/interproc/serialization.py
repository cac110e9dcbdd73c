"""How interproc turns objects into bytes and back.

Objects travel as pickles made with multiprocessing's ``ForkingPickler``, so
whatever a ``multiprocessing.Queue`` can carry (including objects whose
reducers are registered with ``ForkingPickler.register``, such as sockets,
Connections and torch tensors), an interproc queue carries too.

The C core pickles exact builtin values (and flat tuples, lists and dicts
of them) with plain ``pickle.dumps``: for those the pickler never consults a
reducer, so the bytes are the same and the call is about six times cheaper.
``bytes`` objects travel raw, without pickling at all.
"""
from __future__ import annotations

import io
import multiprocessing
import pickle
import queue

from multiprocessing.reduction import ForkingPickler

from . import _core

__all__ = ["PROTOCOL", "dumps", "loads"]

#: Protocol 5 is the fastest for large buffers and is understood by every
#: Python interproc supports.
PROTOCOL = 5


def dumps(obj: object) -> bytes:
    """Pickle ``obj`` with multiprocessing's reductions."""
    buf = io.BytesIO()
    ForkingPickler(buf, PROTOCOL).dump(obj)
    return buf.getvalue()


loads = pickle.loads

_core._configure(
    pickle.dumps, pickle.loads, dumps, PROTOCOL, queue.Full, queue.Empty, multiprocessing.BufferTooShort
)
