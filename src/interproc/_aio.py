"""How a coroutine waits on a shared-memory object: bells.

An asyncio event loop cannot sleep on a futex, and a thread per waiting
coroutine is what interproc's awaitable methods exist to avoid.  So each
event loop of a process has a *bell*: a Unix datagram socket bound in the
abstract namespace, named ``interproc-bell/<pid>/<nonce>``, that the loop
watches with ``add_reader``.  A coroutine that must wait registers the bell
on the object's event in shared memory (``_bell``, wait.c); a process that
signals the event while bells are registered sends each of them a
datagram holding the registration's token, and the loop wakes the
coroutines of that registration, which try again.  The name goes with the
socket when the process dies, so a signaller finds out that nobody listens
any more and frees the slot.

- One registration per (loop, object, event), whatever the number of
  coroutines waiting on it: they share its slot.  An event has
  ``SLOTS`` slots; a loop that finds them all taken looks again every
  ``OVERFLOW_POLL`` seconds instead (documented in docs/api.md).
- Nothing is taken while a coroutine waits: every try is a non-blocking
  call that either does the whole operation or nothing, and the awaits
  lie between tries.  So a cancelled wait has done nothing, and a wait
  that returned has done everything.
- A ring can be lost: its signaller killed between publishing and
  ringing, or a loop's receive buffer full.  Every ``SWEEP`` seconds a
  loop compares each registered event's signal count with the one it last
  saw, and wakes the waiters of those that moved: a lost ring costs at
  most that long, and a sweep reads one word per registration.
"""
from __future__ import annotations

import errno
import os
import secrets
import socket
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Set, Tuple

if TYPE_CHECKING:
    import asyncio

#: Bell slots per event in shared memory (IP_BELLS in interproc.h).
SLOTS = 6
#: How often a loop whose registration found no free slot looks again.
OVERFLOW_POLL = 0.05
#: How often a loop checks its registered events for a lost ring.
SWEEP = 1.0

_NONCE_BITS = 12
_TOKEN_BITS = 20
_NAME = "\0interproc-bell/{pid}/{nonce:03x}"


class _Registration:
    """One loop's bell on one event of one object."""

    __slots__ = ("bell", "handle", "which", "token", "word", "slot", "users", "waiters", "seq",
                 "timer", "hangup", "recheck")

    def __init__(self, bell: "_Bell", handle: Any, which: int, token: int) -> None:
        self.bell = bell
        self.handle = handle
        self.which = which
        self.token = token
        self.word = bell.prefix | token
        self.slot = -1
        self.users = 0
        self.waiters: Set[asyncio.Future] = set()
        self.seq = 0
        self.timer: Optional[asyncio.TimerHandle] = None
        # A descriptor of our own watched for a hang-up, or -1 (watch()).
        self.hangup = -1
        # Woken by every sweep, signalled or not: the waiters of a lock,
        # whose holder may die without a signal (their try takes over a
        # dead holder's lock, as a sync waiter's slices do).
        self.recheck = False

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def future(self) -> asyncio.Future:
        """A future resolved by the next ring (or poll, without a slot)."""
        fut = self.bell.loop.create_future()
        self.waiters.add(fut)
        if self.slot < 0 and self.timer is None:
            self.timer = self.bell.loop.call_later(OVERFLOW_POLL, self._poll)
        return fut

    def _poll(self) -> None:
        self.timer = None
        self.wake()

    def unslot(self) -> None:
        """Take the bell out of its slot in shared memory, if it has one."""
        if self.slot >= 0:
            try:
                self.handle._bell(self.which, self.slot, self.word)
            except Exception:
                pass  # the handle closed meanwhile: see _Bell.forget
            self.slot = -1

    def watch(self, fd: int) -> None:
        """Also wake on ``fd`` (a pipe's read side) hanging up: the end of
        a stream, which no signaller rings.  Watched through a duplicate,
        so that the program's own reader of that descriptor (a
        Connection's fileno()) is not displaced; once it fires, the
        waiters' tries see the end and the duplicate goes."""
        if self.hangup < 0:
            self.hangup = os.dup(fd)
            self.bell.loop.add_reader(self.hangup, self._hung_up)

    def _hung_up(self) -> None:
        self.unwatch()
        self.wake()

    def unwatch(self) -> None:
        if self.hangup >= 0:
            try:
                self.bell.loop.remove_reader(self.hangup)
            except Exception:
                pass  # a closed loop
            os.close(self.hangup)
            self.hangup = -1


class _Bell:
    """A loop's socket, and the registrations it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)
        for _ in range(64):
            nonce = secrets.randbelow(1 << _NONCE_BITS)
            try:
                self.sock.bind(_NAME.format(pid=self.pid, nonce=nonce))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    self.sock.close()
                    raise
        else:
            self.sock.close()
            raise OSError(errno.EADDRINUSE, "no free bell name for this process")
        self.prefix = (self.pid << 32) | (nonce << _TOKEN_BITS)
        self.regs: Dict[Tuple[int, int], _Registration] = {}
        self.by_token: Dict[int, _Registration] = {}
        self.next_token = 1
        self.sweeper: Optional[asyncio.TimerHandle] = None
        loop.add_reader(self.sock.fileno(), self._on_ring)

    def _on_ring(self) -> None:
        recv = self.sock.recv
        while True:
            try:
                msg = recv(16)
            except OSError:  # drained (BlockingIOError), or closed
                return
            if len(msg) != 4:
                continue  # not from a signaller: anyone may send here
            reg = self.by_token.get(int.from_bytes(msg, "little"))
            if reg is not None:
                reg.wake()

    def _sweep(self) -> None:
        self.sweeper = None
        for reg in list(self.regs.values()):
            try:
                seq = reg.handle._bell(reg.which)
            except Exception:
                reg.wake()  # a closed handle: its waiters find out on their try
                continue
            if seq != reg.seq or reg.recheck:
                reg.seq = seq
                reg.wake()
        if self.regs:
            self.sweeper = self.loop.call_later(SWEEP, self._sweep)

    def register(self, handle: Any, which: int) -> _Registration:
        key = (id(handle), which)
        reg = self.regs.get(key)
        if reg is None:
            token = self._token()
            reg = _Registration(self, handle, which, token)
            reg.seq = handle._bell(which)
            reg.slot = handle._bell(which, reg.word)
            self.regs[key] = reg
            self.by_token[token] = reg
            if self.sweeper is None:
                self.sweeper = self.loop.call_later(SWEEP, self._sweep)
        reg.users += 1
        return reg

    def release(self, reg: _Registration) -> None:
        reg.users -= 1
        if reg.users > 0:
            return
        self.regs.pop((id(reg.handle), reg.which), None)
        self.by_token.pop(reg.token, None)
        if reg.timer is not None:
            reg.timer.cancel()
            reg.timer = None
        reg.unwatch()
        reg.unslot()

    def forget(self, handle: Any) -> None:
        """Before ``handle`` closes: take its registrations out of shared
        memory and wake their waiters, whose next try raises the closed
        handle's error."""
        for reg in list(self.regs.values()):
            if reg.handle is handle:
                reg.unslot()
                reg.wake()

    def _token(self) -> int:
        for _ in range(1 << _TOKEN_BITS):
            token = self.next_token
            self.next_token = token + 1 if token + 1 < (1 << _TOKEN_BITS) else 1
            if token not in self.by_token:
                return token
        raise RuntimeError("more than a million objects awaited by one event loop")


_bells: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bell]" = weakref.WeakKeyDictionary()


def _bell_of(loop: asyncio.AbstractEventLoop) -> _Bell:
    bell = _bells.get(loop)
    if bell is None or bell.pid != os.getpid():
        # A forked child's copy belongs to its parent: the child's loop
        # needs a socket, and registrations, of its own.
        bell = _bells[loop] = _Bell(loop)
        weakref.finalize(loop, bell.sock.close)
    return bell


def forget(handle: Any) -> None:
    """Call before closing ``handle``: see ``_Bell.forget``."""
    pid = os.getpid()
    for bell in list(_bells.values()):
        if bell.pid == pid:
            bell.forget(handle)


_task_owners: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_next_owner = 0


def task_owner(create: bool = True) -> int:
    """The running task's owner number for an RLock (the top bit set, so
    that no thread's number is one), made on first use (``create``); 0
    outside a task."""
    global _next_owner
    if "asyncio" not in sys.modules:
        return 0
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return 0
    if task is None:
        return 0
    owner = _task_owners.get(task, 0)
    if not owner and create:
        _next_owner += 1
        owner = _task_owners[task] = (1 << 63) | _next_owner
    return owner


#: What an attempt returns when it must wait, and wait_until when the
#: timeout passed.
NOTHING = object()


async def wait_until(handle: Any, which: int, attempt: Callable[[], Any],
                     timeout: Optional[float], hangup: Optional[Callable[[], int]] = None,
                     recheck: bool = False) -> Any:
    """Await ``attempt()`` until it returns something other than
    ``NOTHING``: tried at once, then again each time event ``which`` of
    ``handle`` is signalled (or, with ``hangup``, when the descriptor it
    returns hangs up).  Returns ``NOTHING`` when ``timeout`` (seconds,
    None: none) passes first.  What ``attempt`` raises goes to the caller.
    Cancelling the wait leaves nothing done.  ``recheck``: also try at
    every sweep, signalled or not (a lock whose holder may die)."""
    got = attempt()
    if got is not NOTHING:
        return got
    # Imported here, not with interproc: a program that never awaits does
    # not pay for asyncio's import.
    import asyncio

    if timeout is not None:
        if timeout != timeout:
            raise ValueError("timeout must be a number, not NaN")
        if timeout <= 0:
            return NOTHING
    loop = asyncio.get_running_loop()
    # The deadline on the monotonic clock, not loop.time(): uvloop's is
    # kept in whole milliseconds and read at the start of an iteration, so
    # a deadline from it could end a wait early.
    end = None if timeout is None else time.monotonic() + timeout
    bell = _bell_of(loop)
    reg = bell.register(handle, which)
    try:
        reg.recheck = reg.recheck or recheck
        if hangup is not None:
            reg.watch(hangup())
        while True:
            # Made before the try: a ring between the try and the await
            # resolves it, and the await returns at once.
            fut = reg.future()
            got = attempt()
            if got is not NOTHING:
                return got
            if end is None:
                await fut
                continue
            left = end - time.monotonic()
            if left <= 0:
                return NOTHING
            timer = loop.call_later(left, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()
    finally:
        bell.release(reg)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)

