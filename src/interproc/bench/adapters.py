"""One small surface over every queue, and another over every pipe, the benchmarks compare.

Each adapter knows how to build its queue or pipe and which callables to hand
to the hot loops.  Those callables are the implementations' own bound methods
(or a ``functools.partial`` paid once per batch), so the adapter adds no
per-item cost and every implementation runs the very same loop.
"""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from .runner import CTX

__all__ = [
    "Adapter", "Endpoint", "Implementation", "PipeAdapter", "PipeEnd", "Sizing", "Unavailable",
    "label", "load", "register",
]


@dataclass(frozen=True)
class Sizing:
    """How much a queue should hold before producers wait.

    Every implementation gets the same byte budget, so none wins by buffering
    more of the producer's lead.
    """

    item_bytes: int
    in_flight_bytes: int


class Endpoint(NamedTuple):
    put: Callable[[Any], Any]
    get: Callable[[], Any]
    put_many: Callable[[list], Any] | None
    get_many: Callable[[], list] | None


class PipeEnd(NamedTuple):
    """One end of a pipe, as a process that uses it sees it."""

    send: Callable[[Any], Any]
    recv: Callable[[], Any]
    send_bytes: Callable[[Any], Any]
    recv_bytes: Callable[[], bytes]
    close: Callable[[], Any]


class Unavailable(Exception):
    """The implementation cannot be imported here; its cases are skipped."""


class Implementation:
    key = ""
    label = ""
    module = ""

    def load(self) -> None:
        """Import the implementation; any failure means it is skipped."""


class Adapter(Implementation):
    """A queue: one object that every producer and consumer shares."""

    def make(self, sizing: Sizing | None) -> Any:
        """A new queue; ``None`` asks for the constructor's defaults."""
        raise NotImplementedError

    def endpoint(self, q: Any, batch: int = 0) -> Endpoint:
        return Endpoint(q.put, q.get, None, None)

    def destroy(self, q: Any) -> None:
        """Release what outlives the parent's handle (names, pipes)."""


class InterprocAdapter(Adapter):
    key = "interproc"
    label = "interproc.Queue"
    module = "interproc"

    def load(self) -> None:
        from interproc import Queue

        self._queue = Queue

    def make(self, sizing: Sizing | None) -> Any:
        if sizing is None:
            return self._queue()
        # Unbounded, the ring grows to hold however far a producer runs ahead;
        # a bound keeps memory flat on a shared machine, and it can only slow
        # interproc down, never flatter it.
        maxsize = max(1, sizing.in_flight_bytes // sizing.item_bytes)
        return self._queue(maxsize, capacity_bytes=sizing.in_flight_bytes)

    def endpoint(self, q: Any, batch: int = 0) -> Endpoint:
        get_many = functools.partial(q.get_many, batch) if batch else None
        return Endpoint(q.put, q.get, q.put_many if batch else None, get_many)

    def destroy(self, q: Any) -> None:
        q.close()


class MultiprocessingAdapter(Adapter):
    key = "mp"
    label = "mp.Queue"
    module = "multiprocessing"

    def make(self, sizing: Sizing | None) -> Any:
        # Left unbounded whatever the sizing: a maxsize would add a semaphore
        # round per put and make the baseline look slower than it is.
        return CTX.Queue()

    def destroy(self, q: Any) -> None:
        q.close()


class FasterFifoAdapter(Adapter):
    key = "faster_fifo"
    label = "faster_fifo.Queue"
    module = "faster_fifo"

    def load(self) -> None:
        import faster_fifo

        self._queue = faster_fifo.Queue

    def make(self, sizing: Sizing | None) -> Any:
        if sizing is None:
            return self._queue()
        return self._queue(max_size_bytes=sizing.in_flight_bytes)

    def endpoint(self, q: Any, batch: int = 0) -> Endpoint:
        if not batch:
            return Endpoint(q.put, q.get, None, None)
        get_many = functools.partial(q.get_many, max_messages_to_get=batch)
        return Endpoint(q.put, q.get, q.put_many, get_many)


class HyperQAdapter(Adapter):
    key = "hyperq"
    label = "hyperq.HyperQ"
    module = "hyperq"
    class_name = "HyperQ"
    # hyperq requires a name and limits it to 28 characters.
    _names = itertools.count()

    def load(self) -> None:
        import hyperq

        self._queue = getattr(hyperq, self.class_name)

    def make(self, sizing: Sizing | None) -> Any:
        if sizing is None:
            raise ValueError("hyperq has no default capacity")
        name = f"ipb{os.getpid()}_{next(self._names)}"
        # A message must fit with its 8-byte length; larger ones block forever.
        capacity = max(sizing.in_flight_bytes, 4 * (sizing.item_bytes + 8))
        return self._queue(capacity, name=name)

    def destroy(self, q: Any) -> None:
        # Forked children inherit the mapping without taking a reference, so
        # the reference count hyperq keeps cannot be trusted to remove the
        # names; a child that was killed would leave them behind for good.
        for name in (q.shm_name, "b_" + q.shm_name):
            try:
                os.unlink(os.path.join("/dev/shm", name.lstrip("/")))
            except FileNotFoundError:
                pass


class BytesHyperQAdapter(HyperQAdapter):
    key = "hyperq_bytes"
    label = "hyperq.BytesHyperQ"
    class_name = "BytesHyperQ"


class PipeAdapter(Implementation):
    """A pipe with two ends, each used by one process.

    The parent makes the pipe before forking; each child then opens its side
    with `open`, so an implementation whose handles must not cross a fork
    (pyzmq's contexts) can build them in the child instead.
    """

    def make(self, duplex: bool) -> Any:
        """A new pipe; with ``duplex=False`` side 0 only receives and side 1 only sends."""
        raise NotImplementedError

    def open(self, pipe: Any, side: int) -> PipeEnd:
        """Side 0 or 1 of ``pipe``, called in the process that will use it."""
        end = pipe[side]
        return PipeEnd(end.send, end.recv, end.send_bytes, end.recv_bytes, _nothing)

    def destroy(self, pipe: Any) -> None:
        """Close the parent's handles once the children are gone."""
        for end in pipe:
            end.close()


def _nothing() -> None:
    # A pipe end inherited over fork is released when the child exits;
    # there is nothing a child must do first.
    pass


class InterprocPipeAdapter(PipeAdapter):
    key = "interproc_pipe"
    label = "interproc.Pipe"
    module = "interproc"

    def load(self) -> None:
        from interproc import Pipe

        self._pipe = Pipe

    def make(self, duplex: bool) -> Any:
        return self._pipe(duplex)


class MultiprocessingPipeAdapter(PipeAdapter):
    key = "mp_pipe"
    label = "mp.Pipe"
    module = "multiprocessing"

    def make(self, duplex: bool) -> Any:
        # duplex=False is an OS pipe, duplex=True a socket pair: each case
        # asks for the form a program moving data that way would use.
        return CTX.Pipe(duplex)


class _ZmqAddress(NamedTuple):
    directory: str
    address: str


class ZmqAdapter(PipeAdapter):
    """pyzmq REQ/REP over ``ipc://``: strict request/reply, so round trips only.

    Side 0 is the REQ socket, side 1 the REP socket that binds.  Objects go
    through ``send_pyobj``/``recv_pyobj``, pickling as the pipes do.
    """

    key = "pyzmq"
    label = "pyzmq REQ/REP"
    module = "zmq"

    def load(self) -> None:
        import zmq

        self._zmq = zmq

    def make(self, duplex: bool) -> Any:
        if not duplex:
            raise ValueError("REQ/REP is a round-trip pattern; there is no one-way form")
        # A private directory keeps the socket path short (sun_path holds
        # 107 bytes) and lets destroy() remove whatever the REP socket left.
        directory = tempfile.mkdtemp(prefix="interproc-bench-")
        return _ZmqAddress(directory, "ipc://" + os.path.join(directory, "rr.sock"))

    def open(self, pipe: Any, side: int) -> PipeEnd:
        zmq = self._zmq
        # Contexts do not survive fork, so each child makes its own.
        context = zmq.Context()
        sock = context.socket(zmq.REP if side else zmq.REQ)
        if side:
            sock.bind(pipe.address)
        else:
            sock.connect(pipe.address)
        # Linger rather than drop: the echo's last reply may still be queued
        # when it closes, and the pinger waits for it.
        close = functools.partial(context.destroy, linger=1000)
        return PipeEnd(sock.send_pyobj, sock.recv_pyobj, sock.send, sock.recv, close)

    def destroy(self, pipe: Any) -> None:
        shutil.rmtree(pipe.directory, ignore_errors=True)


_ADAPTERS: dict[str, type[Implementation]] = {
    cls.key: cls
    for cls in (
        InterprocAdapter,
        MultiprocessingAdapter,
        FasterFifoAdapter,
        HyperQAdapter,
        BytesHyperQAdapter,
        InterprocPipeAdapter,
        MultiprocessingPipeAdapter,
        ZmqAdapter,
    )
}
_loaded: dict[str, Implementation | Unavailable] = {}


def register(cls: type[Implementation]) -> None:
    """Make ``cls`` loadable by its key (for implementations defined beside their cases)."""
    if _ADAPTERS.setdefault(cls.key, cls) is not cls:
        raise ValueError(f"two implementations share the key {cls.key!r}")


def label(key: str) -> str:
    return _ADAPTERS[key].label


def load(key: str) -> Any:
    """The adapter for ``key``, imported once; raises `Unavailable`."""
    if key not in _loaded:
        adapter = _ADAPTERS[key]()
        try:
            adapter.load()
        except Exception as exc:  # a broken build must not stop the other cases
            _loaded[key] = Unavailable(f"{adapter.label}: {type(exc).__name__}: {exc}")
        else:
            _loaded[key] = adapter
    found = _loaded[key]
    if isinstance(found, Unavailable):
        raise found
    return found
