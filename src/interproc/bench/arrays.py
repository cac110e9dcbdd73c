"""Large numpy arrays, one producer to one consumer: the transfer curve.

Each case moves float64 arrays of one size, from 1 KiB to 1 GiB, through a
queue or a one-way pipe.  The queues and pipes get the array object itself
(``put``/``send``) and pickle it however they do.  Beside them run two
figures that need no queue: the pattern programs write by hand today (a
``multiprocessing.shared_memory`` block, copied into and out of with numpy,
and a semaphore handshake), and one ``numpy.copyto`` into a warm buffer in a
single process, the floor no transfer between processes can beat.

numpy is imported only where an array is built or checked, so the other
cases run without it; without it these cases are skipped with a note.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

from . import adapters, throughput
from .adapters import Sizing
from .runner import CTX, Sample, Settings, TrialError, run_processes

__all__ = [
    "GIB", "KINDS", "KIB", "QUICK_CAP", "SIZES", "VIEW_SIZES", "ArrayPayload", "case_name",
    "copyto_floor", "curve_point", "needs_numpy", "receive_only", "shared_memory_stream",
    "size_text", "sized",
]

KIB = 1 << 10
MIB = throughput.MIB
GIB = 1 << 30

#: The item sizes, by the suffix of their cases' names.
SIZES = {"1k": KIB, "64k": 64 * KIB, "1m": MIB, "16m": 16 * MIB, "100m": 100 * MIB, "1g": GIB}
#: The two families: one case per size through a Queue, one over a Pipe.
KINDS = ("queue", "pipe")
#: The sizes of the receive-alone cases (``array-view-*``): get_view's time
#: should not grow with them.
VIEW_SIZES = {"1m": MIB, "16m": 16 * MIB, "100m": 100 * MIB, "1g": GIB}
#: With --quick every case moves arrays of at most this size: a smoke check
#: of the code, not of the machine's memory.
QUICK_CAP = MIB

_FLOAT64 = 8
# What every queue may hold at least, as in the 1 MiB cases.
_BUDGET = 16 * MIB
# Room per item for the pickle's header and each queue's own framing, so
# that a queue sized for k items really holds k.
_FRAMING = 512
# Above this, a queue may hold 2 items rather than 4: at 1 GiB that keeps a
# case's largest contender (faster_fifo: its ring, a pickle on each side, an
# array on each side) near 6.5 GiB.
_FEW_ITEMS_ABOVE = 256 * MIB
# The hand-written pattern's blocks: the producer fills one while the
# consumer empties the other.
_SLOTS = 2


def case_name(kind: str, tag: str) -> str:
    return f"array-{kind}-{tag}"


_POINTS = {case_name(kind, tag): (kind, nbytes) for kind in KINDS for tag, nbytes in SIZES.items()}


def curve_point(name: str) -> tuple[str, int] | None:
    """``(kind, item size)`` of the array case called ``name``; None for other cases."""
    return _POINTS.get(name)


def size_text(nbytes: int) -> str:
    """``1 KiB``, ``100 MiB``, ``1 GiB``."""
    for unit, suffix in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if nbytes >= unit:
            return f"{nbytes / unit:g} {suffix}"
    return f"{nbytes} B"


def sized(nbytes: int, settings: Settings) -> int:
    """The item size a case of ``nbytes`` moves under ``settings``."""
    return min(nbytes, QUICK_CAP) if settings.quick else nbytes


@dataclass(frozen=True)
class ArrayPayload(throughput.Recipe):
    """``numpy.arange(1, count + 1)`` as float64, ``nbytes`` bytes of it.

    Built in each producing process: a 1 GiB array made in the parent would
    be inherited by every process of every trial.
    """

    nbytes: int

    @property
    def count(self) -> int:
        return self.nbytes // _FLOAT64

    def build(self) -> Any:
        import numpy

        return numpy.arange(1, self.count + 1, dtype=numpy.float64)

    def check(self, last: Any) -> None:
        """The shape and dtype, and the first and last elements, of what was sent."""
        import numpy

        if not (isinstance(last, numpy.ndarray) and last.dtype == numpy.float64
                and last.shape == (self.count,) and last[0] == 1 and last[-1] == self.count):
            shown = (f"{type(last).__name__} {getattr(last, 'dtype', '')} "
                     f"{getattr(last, 'shape', '')}")
            raise TrialError(f"last item is not the float64 array of {self.count:,} "
                             f"elements that was sent: {shown:.80}")

    @property
    def warmup(self) -> int:
        """Items received before the clock starts: twice as many as a queue
        holds, and two more, so that what is timed is the stream.  A fresh
        ring, or a fresh buffer, is faulted in page by page on its first
        lap, and a ring of power-of-two regions takes more than one queue's
        worth of items to go round once: interproc's, with four 16 MiB
        items allowed in flight, spreads its first lap over nine items."""
        sizing = self.sizing()
        return 2 * (sizing.in_flight_bytes // sizing.item_bytes) + 2

    def sizing(self) -> Sizing:
        """16 MiB in flight, as in the 1 MiB cases, but never less than 4 items
        (2 above 256 MiB): a bounded ``interproc.Queue`` gets that many as its
        ``maxsize``, faster_fifo a ring of that many bytes."""
        item = self.nbytes + _FRAMING
        items = 2 if self.nbytes > _FEW_ITEMS_ABOVE else 4
        return Sizing(item_bytes=item, in_flight_bytes=max(_BUDGET, items * item))


@contextlib.contextmanager
def needs_numpy(settings: Settings) -> Iterator[Settings]:
    """The array cases' ``around``: every contender is skipped without numpy."""
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        raise adapters.Unavailable(f"numpy: {exc}") from None
    yield settings


def shared_memory_stream(adapter: Any, n: int, settings: Settings, *,
                         payload: ArrayPayload) -> Sample:
    """GB/s of the hand-written pattern: copy into shared memory, copy out
    (timed after the same warm-up items as the queues).

    One ``SharedMemory`` of two blocks, each viewed as a numpy array.  The
    producer waits for a free block, ``numpy.copyto``-s its array into it
    and signals; the consumer waits for a full block, copies it into an
    array of its own (``view.copy()``: a new array per item, as a queue
    gives) and frees the block.  Two semaphores are the handshake.  Timed
    as the queues are, from a barrier to the last item in the consumer.
    """
    from multiprocessing.shared_memory import SharedMemory

    block = SharedMemory(create=True, size=_SLOTS * payload.nbytes)
    try:
        free, full = CTX.Semaphore(_SLOTS), CTX.Semaphore(0)
        barrier = CTX.Barrier(2)
        jobs: list = [
            (_copy_out, (block, free, full, barrier, n, payload)),
            (_copy_in, (block, free, full, barrier, n + payload.warmup, payload)),
        ]
        elapsed = run_processes(jobs, settings.timeout)[0]
    finally:
        block.close()
        block.unlink()
    return throughput.gigabytes_per_second(n, payload.nbytes, elapsed)


def _views(block: Any, payload: ArrayPayload) -> list:
    import numpy

    return [numpy.ndarray((payload.count,), numpy.float64, block.buf, slot * payload.nbytes)
            for slot in range(_SLOTS)]


def _copy_in(block: Any, free: Any, full: Any, barrier: Any, n: int,
             payload: ArrayPayload) -> None:
    import numpy

    item = payload.build()
    views = _views(block, payload)
    copyto, acquire, release = numpy.copyto, free.acquire, full.release
    barrier.wait()
    for i in range(n):
        acquire()
        copyto(views[i % _SLOTS], item)
        release()


def _copy_out(block: Any, free: Any, full: Any, barrier: Any, n: int,
              payload: ArrayPayload) -> float:
    views = _views(block, payload)
    acquire, release = full.acquire, free.release
    barrier.wait()
    for i in range(payload.warmup):  # as the queues' first lap (ArrayPayload.warmup)
        acquire()
        views[i % _SLOTS].copy()
        release()
    start = time.perf_counter()
    for i in range(payload.warmup, payload.warmup + n):
        acquire()
        last = views[i % _SLOTS].copy()
        release()
    elapsed = time.perf_counter() - start
    payload.check(last)
    return elapsed


def copyto_floor(adapter: Any, n: int, settings: Settings, *, payload: ArrayPayload) -> Sample:
    """GB/s of ``numpy.copyto`` from the array into a warm buffer, in one fresh process."""
    elapsed = run_processes([(_copies, (n, payload))], settings.timeout)[0]
    return throughput.gigabytes_per_second(n, payload.nbytes, elapsed)


def _copies(n: int, payload: ArrayPayload) -> float:
    import numpy

    source = payload.build()
    target = numpy.empty_like(source)
    copyto = numpy.copyto
    copyto(target, source)  # fault the target in before the clock starts
    start = time.perf_counter()
    for _ in range(n):
        copyto(target, source)
    elapsed = time.perf_counter() - start
    payload.check(target)
    return elapsed


def receive_only(adapter: Any, n: int, settings: Settings, *, payload: ArrayPayload,
                 in_place: bool) -> Sample:
    """GB/s of receiving alone from an ``interproc.Queue``: ``get_view()``
    (the array read in place, its first and last elements read, the view
    released) or ``get()`` (copied out).  The consumer times each call
    from a moment the item is already there, waiting between calls
    without the clock, so the producer's copy in does not count."""
    import interproc

    q = interproc.Queue(maxsize=2)
    try:
        jobs: list = [(_receive, (q, n, payload, in_place)), (_put_all, (q, n, payload))]
        elapsed = run_processes(jobs, settings.timeout)[0]
    finally:
        q.close()
    return throughput.gigabytes_per_second(n, payload.nbytes, elapsed)


def _put_all(q: Any, n: int, payload: ArrayPayload) -> None:
    item = payload.build()
    for _ in range(n):
        q.put(item)


def _receive(q: Any, n: int, payload: ArrayPayload, in_place: bool) -> float:
    clock, pause, qsize = time.perf_counter, time.sleep, q.qsize
    elapsed = 0.0
    for i in range(n):
        while qsize() == 0:
            pause(0.0002)
        start = clock()
        if in_place:
            view = q.get_view()
            a = view.value
            a[0] + a[-1]
            if i == n - 1:
                payload.check(a)
            del a
            view.release()
        else:
            a = q.get()
        elapsed += clock() - start
    if not in_place:
        payload.check(a)
    return elapsed
