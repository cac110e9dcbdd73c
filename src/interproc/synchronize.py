"""Lock, RLock, Semaphore, BoundedSemaphore and Event in shared memory.

Drop-ins for multiprocessing's primitives that wait on futexes instead of
POSIX semaphores, can be opened by name from unrelated processes, and do
not deadlock when a holder dies: the next acquirer takes the lock over and
is told so (``owner_died``, and an :class:`OwnerDiedWarning`).
"""
from __future__ import annotations

import operator
import os
import sys
import time
import weakref
from typing import Any, Optional

from . import _aio, _core, naming

#: What ``Lock.release()`` raises when the lock is not held: a ValueError
#: (multiprocessing.Lock's) and a RuntimeError (threading.Lock's, and so a
#: multiprocessing manager's Lock proxy's).
UnlockedReleaseError = _core.UnlockedReleaseError

__all__ = [
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier",
    "OwnerDiedWarning",
]

OwnerDiedWarning = _core.OwnerDiedWarning

_live: "weakref.WeakSet[_SyncBase]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def wait_for(wait: Any, predicate: Any, timeout: Optional[float]) -> Any:
    """Condition.wait_for over ``wait(timeout)``, for every backend's
    Condition: wait until ``predicate()`` is true or ``timeout`` seconds
    pass, and return the predicate's last value."""
    steps = wait_for_steps(predicate, timeout)
    try:
        while True:
            wait(next(steps))
    except StopIteration as stop:
        return stop.value


def wait_for_steps(predicate: Any, timeout: Optional[float]) -> Any:
    """``wait_for``'s loop as a generator of the timeouts to wait with (for
    blocking and awaitable waits alike); it returns the predicate's last
    value."""
    endtime = None
    waittime = timeout
    result = predicate()
    while not result:
        if waittime is not None:
            if endtime is None:
                endtime = time.monotonic() + waittime
            else:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
        yield waittime
        result = predicate()
    return result


def _rebuild(cls: type, ref: tuple, kind: Optional[int] = None) -> "_SyncBase":
    fd, name = naming.open_reference(ref)
    return naming.check_reference(cls._attach_fd(fd, name, kind), ref[-1])


class _SyncBase(_core.SyncCore):
    _KIND = 0
    _name: Optional[str]

    @classmethod
    def _open(cls, name: Optional[str], create: Optional[bool], mode: int, value: int = 0,
              maxvalue: int = 0) -> Any:
        obj = naming.open_object(
            name,
            create,
            mode,
            lambda fd: _core.SyncCore.__new__(cls, fd, cls._KIND, value, maxvalue, True),
            lambda fd: _core.SyncCore.__new__(cls, fd, cls._KIND),
        )
        return obj._setup(name)

    @classmethod
    def _attach_fd(cls, fd: int, name: Optional[str], kind: Optional[int] = None) -> "_SyncBase":
        kind = cls._KIND if kind is None else kind
        return _core.SyncCore.__new__(cls, fd, kind)._setup(name, kind)

    def _setup(self, name: Optional[str], kind: Optional[int] = None) -> "_SyncBase":
        self._name = name
        # The segment's own kind: a Value's lock is an RLock living in the Value.
        self._segkind = self._KIND if kind is None else kind
        _live.add(self)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything happens in __new__, which attaches or creates

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous object."""
        return self._name

    def unlink(self) -> None:
        """Remove the name.  Open handles keep working.  Nothing for an anonymous object."""
        if self._name is not None:
            try:
                naming.unlink(self._name)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Release this handle; the object itself lives on in other handles.
        Coroutines awaiting this handle raise ValueError.  Buffers over a
        Value's data stay valid until released."""
        _aio.forget(self)
        super().close()

    def __reduce__(self):
        return (_rebuild, (type(self), naming.reference(self), self._segkind))

    def _where(self) -> str:
        return f"name={self._name!r}" if getattr(self, "_name", None) else "anonymous"


# The one event of a lock, semaphore, Event or Barrier that a coroutine
# awaits (SyncCore._bell).
_WAITERS = 0


class _AsyncAcquire:
    """``acquire_async`` and ``async with``, for the kinds whose acquire
    belongs to no thread: Lock, Semaphore, BoundedSemaphore."""

    __slots__ = ()

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """``acquire()`` for a coroutine: await the lock (or a unit of the
        semaphore); False when ``timeout`` seconds pass first (None: wait
        as long as it takes).  The loop runs meanwhile, and nothing polls:
        a process that releases rings the loop (docs/api.md, "asyncio").
        A lock whose holder dies is taken over within a second.  Cancelled,
        it holds nothing."""
        got = await _aio.wait_until(self, _WAITERS, self._try_acquire, timeout,
                                    recheck=self._KIND == _core.KIND_LOCK)
        return got is not _aio.NOTHING

    def _try_acquire(self) -> Any:
        return True if self._acquire(False) else _aio.NOTHING

    async def __aenter__(self) -> bool:
        return await self.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        self._release()


class _LockBase(_SyncBase):
    acquire = _core.SyncCore._acquire
    release = _core.SyncCore._release
    __enter__ = _core.SyncCore._acquire
    __exit__ = _core.SyncCore._exit

    def __new__(cls, *, name: Optional[str] = None, create: Optional[bool] = None,
                mode: int = 0o600):
        return cls._open(name, create, mode)

    def locked(self) -> bool:
        """Whether some thread or process holds the lock."""
        return self._locked()

    def _named(self, text: str) -> str:
        # A named lock adds its name after multiprocessing's shape.
        name = getattr(self, "_name", None)
        return f"<{text} name={name!r}>" if name else f"<{text}>"


def _owner_name(lock: Any) -> str:
    """Who holds ``lock`` (a Lock, an RLock or a Condition's own lock), in
    the words of multiprocessing's repr."""
    try:
        state = lock._owner_state()
    except ValueError:  # closed
        return "unknown"
    if state == 0:
        return "None"
    if state == 1:
        import multiprocessing
        import threading

        name = multiprocessing.current_process().name
        thread = threading.current_thread().name
        if thread != "MainThread":
            name += "|" + thread
        return name
    return "SomeOtherThread" if state == 2 else "SomeOtherProcess"


def _rlock_text(lock: Any) -> str:
    """multiprocessing's "RLock(MainProcess, 2)": the holder and its depth,
    which only the holding thread knows for sure."""
    owner = _owner_name(lock)
    if owner == "None":
        return "RLock(None, 0)"
    if owner == "unknown":
        return "RLock(unknown, unknown)"
    if owner in ("SomeOtherThread", "SomeOtherProcess"):
        return f"RLock({owner}, nonzero)"
    try:
        return f"RLock({owner}, {lock.statistics()['recursion']})"
    except ValueError:  # closed meanwhile
        return "RLock(unknown, unknown)"


class Lock(_AsyncAcquire, _LockBase):
    """A non-recursive lock in shared memory: ``multiprocessing.Lock``.

    ``acquire(block=True, timeout=None)`` returns whether it got the lock
    (False on timeout); ``release()`` raises ValueError if it is not held
    (:data:`UnlockedReleaseError`, also a RuntimeError as threading.Lock
    raises there), and may be called from any thread or process, as with
    multiprocessing's.  If the holder dies (SIGKILL included), the next
    acquirer gets the lock, finds ``owner_died`` true and an
    :class:`OwnerDiedWarning` is emitted.  A holder is judged alive by an
    OS lock it keeps on the segment's file, not by its pid, so a holder in
    another PID namespace keeps the lock; closing the holder's last handle
    of the lock counts as its death.  After ``close()`` every method raises
    ValueError.
    """

    _KIND = _core.KIND_LOCK

    def __repr__(self) -> str:
        # multiprocessing's shape, "<Lock(owner=MainProcess)>", which
        # programs and CPython's own tests match on.
        return self._named(f"Lock(owner={_owner_name(self)})")


class RLock(_LockBase):
    """A re-entrant lock in shared memory: ``multiprocessing.RLock``.

    The thread that holds it may acquire it again; it is free once released
    as many times.  ``release()`` from a thread that does not hold it raises
    AssertionError, as multiprocessing's does.  A thread is known by a
    number never given to a later thread, so a thread that reuses the
    ident of one that ended holding the lock does not own it.  Owner death
    is handled as for :class:`Lock`.
    """

    _KIND = _core.KIND_RLOCK

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """``acquire()`` for a coroutine: False when ``timeout`` seconds
        pass first.  The lock belongs to the task, as it would to a thread:
        the same task may take it again, other tasks of the loop wait, and
        the task releases it with ``release()`` or ``async with``.
        Cancelled, it holds nothing more than before."""
        owner = _aio.task_owner()
        got = await _aio.wait_until(self, _WAITERS,
                                    lambda: True if self._acquire_as(owner) else _aio.NOTHING,
                                    timeout, recheck=True)
        return got is not _aio.NOTHING

    async def __aenter__(self) -> bool:
        return await self.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        self._release_as(_aio.task_owner())

    def __repr__(self) -> str:
        return self._named(_rlock_text(self))


class Semaphore(_AsyncAcquire, _SyncBase):
    """A counting semaphore in shared memory: ``multiprocessing.Semaphore``.

    Semaphores have no owner: units taken by a process that dies are not
    given back, since nothing says which units it meant to return.
    """

    _KIND = _core.KIND_SEMAPHORE
    acquire = _core.SyncCore._acquire
    release = _core.SyncCore._release
    __enter__ = _core.SyncCore._acquire
    __exit__ = _core.SyncCore._exit
    get_value = _core.SyncCore._get_value

    def __new__(cls, value: int = 1, *, name: Optional[str] = None,
                create: Optional[bool] = None, mode: int = 0o600):
        value = operator.index(value)
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        return cls._open(name, create, mode, value, value)

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.{type(self).__name__} {self._where()} closed>"
        extra = f", maxvalue={self._maxvalue}" if self._KIND == _core.KIND_BOUNDED_SEMAPHORE else ""
        return f"<interproc.{type(self).__name__} {self._where()} value={self.get_value()}{extra}>"


class BoundedSemaphore(Semaphore):
    """A semaphore that refuses (ValueError) to be released above its initial
    value: ``multiprocessing.BoundedSemaphore``."""

    _KIND = _core.KIND_BOUNDED_SEMAPHORE


class Event(_SyncBase):
    """An event flag in shared memory: ``multiprocessing.Event``.

    ``set()`` wakes every waiter; ``wait(timeout=None)`` returns the flag,
    False on timeout.  A process that dies cannot leave an Event stuck: it
    holds nothing.
    """

    _KIND = _core.KIND_EVENT
    set = _core.SyncCore._set
    clear = _core.SyncCore._clear
    is_set = _core.SyncCore._is_set
    wait = _core.SyncCore._wait

    def __new__(cls, *, name: Optional[str] = None, create: Optional[bool] = None,
                mode: int = 0o600):
        return cls._open(name, create, mode)

    async def wait_async(self, timeout: Optional[float] = None) -> bool:
        """``wait()`` for a coroutine: await the flag; True once it is set,
        False when ``timeout`` seconds pass first (None: wait as long as
        it takes; a negative timeout counts as 0, as wait() has it)."""
        if timeout is not None and timeout < 0:
            timeout = 0
        got = await _aio.wait_until(self, _WAITERS,
                                    lambda: True if self._is_set() else _aio.NOTHING, timeout)
        return got is not _aio.NOTHING

    def __repr__(self) -> str:
        # multiprocessing's shape, "<Event at 0x... unset>", which programs
        # and CPython's own tests match on; a named Event adds its name.
        name = f" name={self._name!r}" if getattr(self, "_name", None) else ""
        state = "closed" if self._closed else "set" if self.is_set() else "unset"
        return f"<Event at {id(self):#x}{name} {state}>"


for _cls in (Lock, RLock, Semaphore, BoundedSemaphore, Event):
    naming.register_kind(_cls._KIND, _cls)

# release() of an RLock that a task holds asks which task is running.
_core.SyncCore._set_task_owner_hook(lambda: _aio.task_owner(False))


class Condition(_SyncBase):
    """A condition variable in shared memory: ``multiprocessing.Condition``.

    ``Condition(lock=None)`` uses an RLock that lives with the condition, or
    the interproc Lock/RLock given.  ``wait``/``wait_for``/``notify``/
    ``notify_all`` as in threading; calling them without holding the lock
    raises RuntimeError.  Each waiter has a slot of its own (128 per
    condition); notify wakes the oldest waiters registered before it.
    Beyond 128 simultaneous waiters, the extra ones may wake spuriously,
    so wait in a loop or use ``wait_for``.  A waiter that dies is passed
    over; a lock holder that dies is handled as for :class:`RLock`.
    """

    _KIND = _core.KIND_CONDITION
    _lock: Any = None  # None: the RLock in this condition's own segment

    def __new__(cls, lock: Any = None, *, name: Optional[str] = None,
                create: Optional[bool] = None, mode: int = 0o600):
        if lock is not None and not isinstance(lock, _LockBase):
            raise TypeError(f"lock must be an interproc Lock or RLock, not {type(lock).__name__}")
        self = cls._open(name, create, mode)
        self._lock = lock
        return self

    def _owner(self) -> Any:
        return self if self._lock is None else self._lock

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        owner = self._owner()
        return owner._acquire(block, timeout) if owner is self else owner.acquire(block, timeout)

    def release(self) -> None:
        owner = self._owner()
        owner._release() if owner is self else owner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Release the lock, wait until notified or ``timeout`` seconds pass,
        take the lock back; return False on timeout.

        Only a notify made after this call registered can wake it, so a
        thread that notifies and then waits does not take back its own
        notification.  A wait that times out just as it is notified
        returns True: the notification is not lost.  Ctrl-C (or another
        exception) ends the wait with the lock taken back, as in threading;
        a notification it had received is then spent.
        """
        return self._cond_wait(self._owner(), _wait_timeout(timeout))

    def wait_for(self, predicate: Any, timeout: Optional[float] = None) -> Any:
        """Wait until ``predicate()`` is true, or ``timeout`` seconds pass;
        return the predicate's last value."""
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` of the processes and threads waiting, the
        longest-waiting first; a waiter whose process died is passed over.
        Waiters beyond the 128 that fit in the condition's slots are woken
        together by any notify that reaches them (a spurious wake-up for
        some of them)."""
        if not self._owner()._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        n = operator.index(n)
        if n > 0:  # as multiprocessing: n <= 0 wakes nobody
            self._cond_notify(min(n, sys.maxsize))

    def notify_all(self) -> None:
        """Wake every process and thread waiting."""
        if not self._owner()._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._cond_notify(-1)

    def __reduce__(self):
        return (_rebuild_condition, (naming.reference(self), self._lock))

    def __repr__(self) -> str:
        # multiprocessing's shape, "<Condition(<lock>, waiters)>"; the lock
        # that lives in the condition's own segment is shown as an RLock.
        if self._closed:
            return f"<Condition {self._where()} closed>"
        stats = self.statistics()
        lock = repr(self._lock) if self._lock is not None else f"<{_rlock_text(self)}>"
        return f"<Condition({lock}, {stats['condition_waiters']})>"


def _wait_timeout(timeout: Any) -> Optional[float]:
    """threading's reading of a wait's timeout: None waits for ever, and a
    negative one means no wait at all."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    return max(float(timeout), 0.0)


def _rebuild_condition(ref: tuple, lock: Any) -> Condition:
    cond = _rebuild(Condition, ref)
    cond._lock = lock
    return cond


class Barrier(_SyncBase):
    """A barrier in shared memory: ``multiprocessing.Barrier``.

    ``wait(timeout=None)`` blocks until ``parties`` processes or threads
    wait, then returns each its arrival index; the last to arrive runs
    ``action`` first.  A wait that times out (before the last party
    arrived), an ``abort()``, a failing action, Ctrl-C in a waiter, or the
    death of a waiting process (SIGKILL included, in any PID namespace)
    breaks the barrier: every waiter of that generation, the last party
    included, gets ``threading.BrokenBarrierError`` instead of hanging,
    until ``reset()``.  ``parties`` is 1 to 2**31 - 1.
    """

    _KIND = _core.KIND_BARRIER
    _action: Any = None
    _timeout: Optional[float] = None

    def __new__(cls, parties: int, action: Any = None, timeout: Optional[float] = None, *,
                name: Optional[str] = None, create: Optional[bool] = None, mode: int = 0o600):
        parties = operator.index(parties)
        if parties < 1:
            raise ValueError(f"parties must be at least 1, not {parties}")
        if action is not None and not callable(action):
            raise TypeError("action must be callable")
        self = cls._open(name, create, mode, 0, parties)
        self._action = action
        self._timeout = timeout
        return self

    @property
    def parties(self) -> int:
        return self._maxvalue

    @property
    def n_waiting(self) -> int:
        return self._barrier_state()[0]

    @property
    def broken(self) -> bool:
        return self._barrier_state()[1]

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for every party; return this one's arrival index.

        As in threading: a timeout breaks the barrier, unless the last
        party has already arrived (the generation then passes for all);
        a party arriving while the last one finishes a generation waits
        for the next.  Either every party of a generation passes or every
        one gets BrokenBarrierError, including the last, whose action has
        run, when the barrier broke meanwhile.
        """
        timeout = _wait_timeout(self._timeout if timeout is None else timeout)
        index, generation, slot, last = self._barrier_wait(timeout)
        if last:
            try:
                if self._action is not None:
                    self._action()
            except BaseException:
                self._barrier_abort(generation, slot)
                raise
            self._barrier_release(generation, slot)
        return index

    def reset(self) -> None:
        """Back to the empty state; processes waiting now get BrokenBarrierError."""
        self._barrier_reset()

    def abort(self) -> None:
        """Break the barrier: every wait, now and later, raises BrokenBarrierError until reset()."""
        self._barrier_abort()

    def __reduce__(self):
        return (_rebuild_barrier, (naming.reference(self), self._action, self._timeout))

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.Barrier {self._where()} closed>"
        return (f"<interproc.Barrier {self._where()} waiters={self.n_waiting}/{self.parties}"
                f"{' broken' if self.broken else ''}>")


def _rebuild_barrier(ref: tuple, action: Any, timeout: Optional[float]) -> Barrier:
    barrier = _rebuild(Barrier, ref)
    barrier._action = action
    barrier._timeout = timeout
    return barrier


naming.register_kind(Condition._KIND, Condition)
naming.register_kind(Barrier._KIND, Barrier)
