"""Pipe and Connection on shared memory, and wait().

Drop-in replacements for ``multiprocessing.Pipe`` and
``multiprocessing.connection.Connection``: the same methods, exceptions and
end-of-stream behaviour, with messages moving through a ring in shared
memory instead of a socket.  Each end may be used by several threads and
processes at once; every message is written and read whole.
"""
from __future__ import annotations

import os
import selectors
import time
import weakref
from typing import Any, Iterable, List, Optional

from . import _aio, _core, naming
from . import serialization as _serialization  # noqa: F401  (installs the serializers)

__all__ = ["Pipe", "Connection", "wait"]

#: Bytes in each direction's base region; memory is only used as it fills.
DEFAULT_CAPACITY = 4 << 20

_live: "weakref.WeakSet[Connection]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for conn in list(_live):
        conn._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

# How each descriptor of a Connection is reopened in another process: the
# segment read-write; the notification pipes one way only, so that a holder
# of one end never counts as a holder of the other.
_REOPEN_FLAGS = [os.O_RDWR, os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK]


def _rebuild(shared: tuple, end: int, readable: bool, writable: bool, uid: int) -> "Connection":
    fd, rfd, wfd = naming.receive_fds(shared, _REOPEN_FLAGS)
    conn = Connection._make(fd, end, readable, writable, rfd, wfd)
    return naming.check_reference(conn, uid)


class Connection(_core.ConnectionCore):
    """One end of a :func:`Pipe`: ``multiprocessing.connection.Connection``'s
    API on shared memory.

    - ``send(obj)`` / ``recv()``: any picklable object, of any size.
    - ``send_bytes(buf, offset=0, size=None)`` / ``recv_bytes(maxlength=None)``
      / ``recv_bytes_into(buf, offset=0)``: raw messages.
    - ``poll(timeout=0.0)``, ``fileno()``, ``close()``, ``closed``,
      ``readable``, ``writable``, and use as a context manager.

    End of stream works as with an OS pipe: ``recv()`` raises ``EOFError``
    once the ring is empty and every process holding the other end has
    closed it or died (SIGKILL included), and ``send()`` raises
    ``BrokenPipeError`` once every process holding the other end has.  Under
    fork a child inherits both ends, so, as with OS pipes, close the end a
    process does not use.
    """

    @classmethod
    def _make(cls, fd: int, end: int, readable: bool, writable: bool, rfd: int, wfd: int,
              capacity: int = -1) -> "Connection":
        conn = _core.ConnectionCore.__new__(cls, fd, end, readable, writable, rfd, wfd, capacity)
        _live.add(conn)
        return conn

    def __new__(cls, *args: Any, **kwargs: Any):
        raise TypeError("Connections are made by interproc.Pipe()")

    def __reduce__(self):
        fd, rfd, wfd, end, readable, writable, uid = self._handles
        return (_rebuild, (naming.share_fds([fd, rfd, wfd]), end, bool(readable), bool(writable), uid))

    def close(self) -> None:
        """Close this end in this process (other holders keep theirs);
        coroutines awaiting it raise OSError."""
        _aio.forget(self)
        super().close()

    # ------------------------------------------------------------ asyncio

    async def recv_async(self) -> Any:
        """``recv()`` for a coroutine: await the next object.  EOFError
        once the other end is gone and nothing is left, as recv().  The loop
        runs meanwhile and nothing polls (docs/api.md, "asyncio").
        Cancelled, it has taken nothing."""
        return await self._recv_async(False, None)

    async def recv_bytes_async(self, maxlength: Optional[int] = None) -> bytes:
        """``recv_bytes(maxlength)`` for a coroutine."""
        return await self._recv_async(True, maxlength)

    async def poll_async(self, timeout: Optional[float] = None) -> bool:
        """Await readiness: True once ``recv()`` would not wait (a message,
        or the end of the stream), False when ``timeout`` seconds pass
        first (None, the default: wait as long as it takes)."""
        got = await _aio.wait_until(self, 0, lambda: True if self.poll(0) else _aio.NOTHING,
                                    timeout, self._hangup_fd)
        return got is not _aio.NOTHING

    async def _recv_async(self, as_bytes: bool, maxlength: Optional[int]) -> Any:
        def attempt() -> Any:
            got = self._recv_now(as_bytes, maxlength)
            return _aio.NOTHING if got is None else got[0]

        return await _aio.wait_until(self, 0, attempt, None, self._hangup_fd)

    def _hangup_fd(self) -> int:
        return self._handles[1]

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<interproc.Connection closed>"
        mode = "duplex" if self.readable and self.writable else "read-only" if self.readable else "write-only"
        return f"<interproc.Connection {mode}>"


# multiprocessing.reduction.send_handle/recv_handle pass a descriptor as
# SCM_RIGHTS over the socket behind conn.fileno().  An interproc end's
# fileno() is a readiness pipe, where that fails with a bare "Socket
# operation on non-socket"; wrapped, they say why and what to use instead.
# Any other connection goes to multiprocessing's own functions unchanged.
_NOT_A_SOCKET = (
    "interproc Connections are shared memory, not sockets, and cannot carry file descriptors: "
    "pass descriptors over a multiprocessing.Pipe() or socket.socketpair(), where "
    "multiprocessing.reduction.send_handle/recv_handle work; interproc objects themselves "
    "(Pipe ends, queues, locks...) are sent as they are: conn.send(obj)"
)


def _refusing_interproc(original: Any) -> Any:
    def wrapper(conn: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(conn, Connection):
            raise TypeError(_NOT_A_SOCKET)
        return original(conn, *args, **kwargs)

    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original
    return wrapper


def _wrap_handle_passing() -> None:
    from multiprocessing import reduction

    for name in ("send_handle", "recv_handle"):
        original = getattr(reduction, name, None)
        if original is not None and not hasattr(original, "__wrapped__"):
            setattr(reduction, name, _refusing_interproc(original))


_wrap_handle_passing()


def Pipe(duplex: bool = True, *, capacity_bytes: Optional[int] = None) -> "tuple[Connection, Connection]":
    """Return two connected :class:`Connection` ends, as ``multiprocessing.Pipe``.

    With ``duplex`` true (the default) both ends send and receive; otherwise
    the first end only receives and the second only sends.
    ``capacity_bytes`` sizes each direction's ring (rounded up to a power of
    two, default 4 MiB); it grows past that when it must, so ``send`` never
    blocks.
    """
    from .queues import _check_capacity

    capacity = DEFAULT_CAPACITY if capacity_bytes is None else _check_capacity(capacity_bytes)
    duplex = bool(duplex)
    seg0, _ = naming.open_segment(None, True, 0o600)
    fds = [seg0]
    try:
        fds.append(os.dup(seg0))
        # pipes[k] notifies end k: end k keeps its read side, the other end its write side.
        pipes = [os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)]
        if duplex:
            pipes.append(os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        fds += [fd for pair in pipes for fd in pair]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    r0, w0 = pipes[0]
    r1, w1 = pipes[1] if duplex else (-1, -1)
    try:
        first = Connection._make(seg0, 0, True, duplex, r0, w1, capacity)
    except BaseException:
        for fd in (fds[1], w0, r1):  # the others went to the failed end, which closed them
            if fd >= 0:
                os.close(fd)
        raise
    second = Connection._make(fds[1], 1, duplex, True, r1, w0)
    return first, second


def wait(object_list: Iterable[Any], timeout: Optional[float] = None) -> List[Any]:
    """Wait until any of ``object_list`` is ready; return the ready ones.

    Accepts interproc Connections and Queues (ready when ``recv``/``get``
    would not block) and anything ``multiprocessing.connection.wait``
    accepts (its Connections, sockets, objects with ``fileno()``, raw
    descriptors).  Returns an empty list when ``timeout`` seconds pass.

    Connections and other descriptors are watched by the kernel; Queues have
    no descriptor, so while any is in the list the wait looks at them
    between short sleeps growing to 10 ms: they cost next to no CPU, but add
    up to 10 ms of latency.
    """
    from .queues import _QueueBase

    objects = list(object_list)
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    queues = [o for o in objects if isinstance(o, _QueueBase)]
    with selectors.DefaultSelector() as selector:
        for obj in objects:
            if not isinstance(obj, _QueueBase):
                selector.register(obj, selectors.EVENT_READ, obj)
        pause = 0.0001
        while True:
            ready = {id(q) for q in queues if not q.empty()}
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if ready:
                remaining = 0.0
            elif queues:
                remaining = pause if remaining is None else min(pause, remaining)
            for key, _ in selector.select(remaining):
                # A Connection's descriptor may run a moment ahead of its
                # ring; poll() is the truth.
                if not isinstance(key.data, Connection) or key.data.poll(0):
                    ready.add(id(key.data))
            if ready:
                return [o for o in objects if id(o) in ready]
            if deadline is not None and time.monotonic() >= deadline:
                return []
            pause = min(pause * 2, 0.01)
