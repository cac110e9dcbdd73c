"""Queue, SimpleQueue and JoinableQueue on shared memory.

Drop-in replacements for multiprocessing's queues.  Items are pickled in the
caller and copied into a ring in shared memory; there is no feeder thread, no
pipe and no server process.  The ring is crash-safe: a process killed at any
instant inside put or get leaves it consistent for the others (see
docs/design.md).
"""
from __future__ import annotations

import operator
import os
import queue as _queue
import weakref
from typing import Any, Iterable, List, Optional

from . import _aio, _core, naming
from .views import ItemView
from . import serialization as _serialization  # noqa: F401  (installs the serializers)

__all__ = ["Queue", "SimpleQueue", "JoinableQueue", "Full", "Empty", "ShutDown"]

#: What any call on a closed handle raises: a ValueError ("Queue ... is
#: closed"), as multiprocessing's put() and get() raise, and an OSError, as
#: its empty() raises on a closed queue.
QueueClosedError = _core.QueueClosedError

Full = _queue.Full
Empty = _queue.Empty

if hasattr(_queue, "ShutDown"):
    #: Raised by a queue after ``shutdown()``.  From Python 3.13 on it is
    #: ``queue.ShutDown`` itself, so code written for ``queue.Queue`` catches it.
    ShutDown = _queue.ShutDown
else:

    class ShutDown(Exception):
        """Raised by put() on a queue that was shut down, and by get() once
        such a queue is empty: Python 3.13's queue.ShutDown, for 3.11 and
        3.12.  Both backends raise this one class."""

    ShutDown.__module__ = "interproc"

# The core raises the very class this module exports.
_core._configure_shutdown(ShutDown)

#: Bytes in the ring's base region unless capacity_bytes says otherwise.  Its
#: memory is only touched as it fills, so an idle queue costs a few pages.
DEFAULT_CAPACITY = 8 << 20
MAX_CAPACITY = 1 << 40
#: The largest item limit: what the core keeps in a signed 64-bit word.
MAX_MAXSIZE = (1 << 63) - 1

_live: "weakref.WeakSet[_QueueBase]" = weakref.WeakSet()

# The events of a queue that a coroutine awaits (QueueCore._bell).
_ITEMS, _ROOM, _TASKS_DONE = 0, 1, 2


def _after_fork_in_child() -> None:
    for q in list(_live):
        if not q._closed:
            q._register_pid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_maxsize(maxsize: Any) -> int:
    maxsize = operator.index(maxsize)  # TypeError for a non-integer
    if maxsize > MAX_MAXSIZE:
        raise OverflowError(f"maxsize must be at most {MAX_MAXSIZE}, not {maxsize}")
    # As in multiprocessing, maxsize <= 0 means unbounded.
    return max(maxsize, 0)


def _check_capacity(capacity_bytes: Optional[int]) -> int:
    if capacity_bytes is None:
        return DEFAULT_CAPACITY
    if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
        raise TypeError(f"capacity_bytes must be an int, not {type(capacity_bytes).__name__}")
    if not 1 <= capacity_bytes <= MAX_CAPACITY:
        raise ValueError(f"capacity_bytes must be between 1 and {MAX_CAPACITY}, not {capacity_bytes}")
    return capacity_bytes


def _rebuild(cls: type, ref: tuple) -> "_QueueBase":
    fd, name = naming.open_reference(ref)
    return naming.check_reference(cls._attach_fd(fd, name), ref[-1])


class _QueueBase(_core.QueueCore):
    """What the three queue kinds share."""

    _KIND = 0
    _name: Optional[str]

    def __new__(
        cls,
        maxsize: int = 0,
        *,
        name: Optional[str] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
        capacity_bytes: Optional[int] = None,
    ):
        # Every argument is checked before anything is opened or created, so
        # a bad one leaves no descriptor and no name behind.
        maxsize = _check_maxsize(maxsize)
        capacity = _check_capacity(capacity_bytes)
        self = naming.open_object(
            name,
            create,
            mode,
            lambda fd: _core.QueueCore.__new__(cls, fd, cls._KIND, maxsize, capacity),
            lambda fd: _core.QueueCore.__new__(cls, fd, cls._KIND),
        )
        return self._setup(name)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything happens in __new__, which attaches or creates

    @classmethod
    def _attach_fd(cls, fd: int, name: Optional[str]) -> "_QueueBase":
        return _core.QueueCore.__new__(cls, fd, cls._KIND)._setup(name)

    def _setup(self, name: Optional[str]) -> "_QueueBase":
        self._name = name
        _live.add(self)
        return self

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous queue."""
        return self._name

    def unlink(self) -> None:
        """Remove the queue's name.  Open handles keep working; the memory is
        freed when the last of them closes.  Does nothing for an anonymous queue."""
        if self._name is not None:
            try:
                naming.unlink(self._name)
            except FileNotFoundError:
                pass

    def join_thread(self) -> None:
        """Accepted for compatibility: there is no feeder thread to join."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Accepted for compatibility: there is no feeder thread."""

    def close(self) -> None:
        """Release this handle: later calls on it raise ValueError.  The
        queue itself, and other handles to it, are unaffected; coroutines
        awaiting this handle raise that ValueError."""
        _aio.forget(self)
        super().close()

    def get_view(self, block: bool = True, timeout: Optional[float] = None) -> ItemView:
        """``get()``, with the item's large buffers read in place: an
        :class:`~interproc.ItemView` whose ``value`` is the item, its NumPy
        arrays (and other objects rebuilt over out-of-band buffers)
        read-only views of the queue's shared memory, with no copy.  The
        memory stays reserved until the view and everything rebuilt from
        it are gone (``with``, ``release()``, ``del``); meanwhile the queue
        goes on working, producers writing elsewhere (docs/api.md, "Large
        arrays").  An item without such buffers is copied, as by ``get``.
        Same blocking, timeout and exceptions as ``get``."""
        return ItemView(self._get_view(block, timeout))

    # ------------------------------------------------------------ asyncio

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """``get()`` for a coroutine: await the oldest item; queue.Empty
        when ``timeout`` seconds pass first (None: wait as long as it
        takes).  The loop goes on running meanwhile, and nothing polls: a
        process that puts rings the loop (docs/api.md, "asyncio").
        Cancelled, it has taken nothing: the item stays for others."""
        try:  # an item present costs no coroutine of wait_until's
            return self.get(False)
        except Empty:
            pass
        got = await _aio.wait_until(self, _ITEMS, self._try_get, timeout)
        if got is _aio.NOTHING:
            raise Empty
        return got

    async def get_view_async(self, timeout: Optional[float] = None) -> ItemView:
        """``get_view()`` for a coroutine: await the oldest item, as
        ``get_async`` does, and read its large buffers in place.  Cancelled,
        it has taken nothing and pins nothing."""

        def attempt() -> Any:
            try:
                return self._get_view(False)
            except Empty:
                return _aio.NOTHING

        got = attempt()  # an item present costs no coroutine of wait_until's
        if got is _aio.NOTHING:
            got = await _aio.wait_until(self, _ITEMS, attempt, timeout)
            if got is _aio.NOTHING:
                raise Empty
        return ItemView(got)

    async def get_many_async(self, max_items: Optional[int] = None,
                             timeout: Optional[float] = None) -> List[Any]:
        """``get_many()`` for a coroutine: await at least one item, then
        take every item present, at most ``max_items``, as one call."""

        def attempt() -> Any:
            try:
                return self.get_many(max_items, False)
            except Empty:
                return _aio.NOTHING

        got = await _aio.wait_until(self, _ITEMS, attempt, timeout)
        if got is _aio.NOTHING:
            raise Empty
        return got

    async def put_async(self, obj: Any, timeout: Optional[float] = None) -> None:
        """``put()`` for a coroutine: on a full bounded queue, await room;
        queue.Full when ``timeout`` seconds pass first.  ``obj`` is pickled
        once, at the call.  Cancelled, it has put nothing."""
        prepared = self._put_or_prepare(obj)  # room: in at once, no coroutine of wait_until's
        if prepared is not None:
            await self._put_prepared_async(prepared, 1, timeout, False)

    async def put_many_async(self, items: Iterable[Any], timeout: Optional[float] = None) -> None:
        """``put_many()`` for a coroutine: every item, in order, awaiting
        room as needed.  Every item is pickled at the call, before any goes
        in.  queue.Full (when ``timeout`` passes), ShutDown, and
        ``asyncio.CancelledError`` when it is cancelled after some went
        in, say in ``.count`` how many leading items did."""
        try:
            items = tuple(items)
        except TypeError:
            raise TypeError("put_many_async() needs an iterable of items") from None
        await self._put_prepared_async(self._prepare(items), len(items), timeout, True)

    async def _put_prepared_async(self, prepared: Any, total: int, timeout: Optional[float],
                                  batch: bool) -> None:
        import asyncio

        done = 0

        def attempt() -> Any:
            nonlocal done
            done += self._put_prepared(prepared, done)
            return None if done == total else _aio.NOTHING

        try:
            got = await _aio.wait_until(self, _ROOM, attempt, timeout)
        except asyncio.CancelledError as exc:
            if batch and done:
                exc.count = done  # type: ignore[attr-defined]
            raise
        if got is _aio.NOTHING:
            if batch:
                full = Full("queue is full")
                full.count = done  # type: ignore[attr-defined]
                raise full
            raise Full

    def _try_get(self) -> Any:
        try:
            return self.get(False)
        except Empty:
            return _aio.NOTHING

    def __reduce__(self):
        return (_rebuild, (type(self), naming.reference(self)))

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"name={self._name!r}" if getattr(self, "_name", None) else "anonymous"
        if self._closed:
            return f"<interproc.{type(self).__name__} {where} closed>"
        return f"<interproc.{type(self).__name__} {where} maxsize={self.maxsize} qsize={self.qsize()}>"

    # Typed signatures of the C methods, for readers and type checkers.
    if False:  # pragma: no cover
        def shutdown(self, immediate: bool = False) -> None: ...
        @property
        def is_shutdown(self) -> bool: ...
        def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None: ...
        def get(self, block: bool = True, timeout: Optional[float] = None) -> Any: ...
        def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> None: ...
        def get_many(self, max_items: Optional[int] = None, block: bool = True, timeout: Optional[float] = None) -> List[Any]: ...


class Queue(_QueueBase):
    """A process-safe FIFO queue in shared memory: ``multiprocessing.Queue``'s
    API, exceptions and behaviour, with ``put_many``/``get_many`` and names.

    ``Queue(maxsize=0, *, name=None, create=None, mode=0o600, capacity_bytes=None)``

    - ``maxsize``: the item limit; ``put`` blocks while it is reached.  0 (or
      less) means unbounded, and then ``put`` never blocks: the shared ring
      grows beyond ``capacity_bytes`` when it must.
    - ``name``: open the queue of that name, or create it (see ``create``).
      Anonymous queues vanish with the last process that uses them.
    - ``create``: None opens or creates; True demands a new queue
      (FileExistsError); False demands an existing one (FileNotFoundError).
    - ``mode``: permissions of a new named queue.
    - ``capacity_bytes``: size of the ring's base region, rounded up to a
      power of two (default 8 MiB; memory is only used as it fills).

    A process killed inside ``put`` or ``get`` leaves the queue consistent:
    the others neither hang nor see a torn item.

    ``shutdown(immediate=False)`` and ``is_shutdown`` are ``queue.Queue``'s
    (Python 3.13), for every process at once: after it, ``put`` raises
    ``ShutDown``, and ``get`` returns what is left (nothing, if immediate)
    and then raises ``ShutDown``; blocked callers everywhere wake.
    """

    _KIND = _core.KIND_QUEUE


class SimpleQueue(_QueueBase):
    """``multiprocessing.SimpleQueue`` on shared memory: an unbounded queue.

    ``SimpleQueue(*, name=None, create=None, mode=0o600, capacity_bytes=None)``
    """

    _KIND = _core.KIND_SIMPLE_QUEUE

    def __new__(
        cls,
        *,
        name: Optional[str] = None,
        create: Optional[bool] = None,
        mode: int = 0o600,
        capacity_bytes: Optional[int] = None,
    ):
        return super().__new__(cls, 0, name=name, create=create, mode=mode, capacity_bytes=capacity_bytes)


class JoinableQueue(_QueueBase):
    """``multiprocessing.JoinableQueue`` on shared memory: a Queue that counts
    unfinished tasks.

    Every ``put`` adds a task; ``task_done()`` finishes one; ``join()`` blocks
    until all are finished.  The count lives in shared memory with the items,
    so it survives the death of any process.  A consumer killed after ``get``
    and before ``task_done`` leaves its task unfinished for ever, as in
    multiprocessing.

    ``shutdown(immediate=True)`` counts every item it discards as done, as
    ``queue.Queue`` does, and wakes ``join()`` in every process: it then
    waits only for the items taken before.
    """

    _KIND = _core.KIND_JOINABLE_QUEUE

    def task_done(self) -> None:
        """Mark one task finished.  ValueError if called more times than items were put."""
        self._task_done()

    def join(self) -> None:
        """Block until every item put so far has been marked done."""
        self._join()

    async def join_async(self) -> None:
        """``join()`` for a coroutine: await the last ``task_done()``."""
        await _aio.wait_until(self, _TASKS_DONE,
                              lambda: None if self._join_ready() else _aio.NOTHING, None)


for _cls in (Queue, SimpleQueue, JoinableQueue):
    naming.register_kind(_cls._KIND, _cls)
