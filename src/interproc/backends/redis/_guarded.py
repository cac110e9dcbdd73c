"""Objects whose every operation honours their own lock: dict, list, Namespace, Value, Array.

Each such object has an RLock living with it (``synchronize.RLock``, under
the parts ``lock.owner``, ``lock.state`` and its waiter registry, see
``synchronize.EMBEDDED_PARTS``): ``d.lock`` for a container, ``get_lock()``
for a Value or Array.  **Every operation is one Lua script** (made with
:func:`lua`) that first looks at the lock's owner: when another thread or
process holds it, the script changes nothing and answers ``IPLOCKED``; the
caller then acquires the lock (waiting as any acquirer does), runs the
operation again under it, and releases it.  So ``with d.lock:`` makes a
sequence of operations atomic with respect to every other process and
thread, as holding the shared-memory heap's lock does, and an operation
that finds the lock free costs one round trip.

- **Timeout**: an operation has none; it waits as long as another holds
  the lock.  ``lock.acquire(timeout=...)`` is the way to bound a wait.
- **Peer death**: the lock is leased (``lease`` seconds, renewed by the
  holder's process while held); a holder that dies, or loses the server for
  longer than the lease, loses the lock, and the next acquirer (an explicit
  one or an operation) takes it over with ``OwnerDiedWarning``, since
  operations done under the dead holder's lock may be half done.
- **Lease lost by a live holder** (frozen, or cut off, past its lease): a
  caller that acquired the lock marks its token, and the script then runs
  only if the lock's owner is still that token; otherwise it does nothing
  and the caller gets ``LeaseLostError`` at once (server-side fencing), so
  a stale holder never acts beside the next one.
- **Lost connection**: ``ConnectionLostError``/``ServerTimeoutError`` from
  the operation; a single operation is one script, so it happened entirely
  or not at all, but the caller cannot tell which.
- **Close**: a closed handle's operations raise ValueError.
- **Tasks**: a lock taken by an asyncio task (``async with d.lock``,
  ``acquire_async``) belongs to the task, and that task's operations run
  as its holder's, and so does its blocking ``with d.lock:`` (a re-entry).
  A plain operation, ``with d.lock:`` or ``d.lock.acquire()`` from another
  task of the same event loop while a task holds the lock raises
  RuntimeError instead of waiting:
  waiting would block the loop, so the holder could never run to release
  it.  Other threads and processes wait for it as usual.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Dict, Tuple

import redis

from . import _aio
from ._base import alive, thread_token
from ._waiters import WaitingObject
from .synchronize import (
    DEFAULT_LEASE,
    EMBEDDED_OWNER,
    EMBEDDED_PARTS,
    EMBEDDED_PREFIX,
    EMBEDDED_REGISTRIES,
    RLock,
    check_lease,
    claims_lock,
    lease_lost_error,
)

__all__ = ["GuardedObject", "lua"]

# ARGV[1] is the caller's token, preceded by "!" when the caller believes it
# holds the lock: then only its own lease, still running, lets the operation
# run (server-side fencing: a holder whose lease ran out while it was frozen
# must not act on what the next holder sees).  Otherwise the operation runs
# unless another holds the lock.
_GUARD = """
local holder = redis.call('HGET', KEYS[1], 't')
if string.byte(ARGV[1]) == 33 then  -- '!' 
  if holder ~= string.sub(ARGV[1], 2) then return redis.error_reply('IPLEASELOST') end
elseif holder and holder ~= ARGV[1] then return redis.error_reply('IPLOCKED') end
"""


# How many of the object's keys each operation uses: KEYS[1] up to the
# highest KEYS[n] its source names.  Only those are sent.
_NKEYS: Dict[str, int] = {}
_KEY_REF = re.compile(r"KEYS\[(\d+)\]")


def lua(body: str) -> str:
    """An operation: KEYS[1] is the object's lock owner, KEYS[2:] its data
    parts (``_PARTS``, in order), ARGV[1] the caller's token; it refuses to
    run while another holds the lock.  It must name its keys literally
    (``KEYS[3]``, not ``KEYS[i]``): the keys after the highest one it names
    are not passed to it."""
    source = _GUARD + body
    if "#KEYS" in source or re.search(r"KEYS\[[^\]0-9]", source):
        raise ValueError("an operation must name its keys as KEYS[<number>]")
    _NKEYS[source] = max(int(n) for n in _KEY_REF.findall(source))
    return source


class GuardedObject(WaitingObject):
    """Base of the Redis containers, Value and Array (see the module docstring).

    Subclasses set ``_PARTS`` (their data keys; the scripts see them as
    KEYS[2:]) and ``_lease`` before :meth:`_open`.
    """

    _REGISTRIES = EMBEDDED_REGISTRIES
    _OWN_EXPIRY_PARTS = (EMBEDDED_OWNER,)
    _lease: float = DEFAULT_LEASE

    @classmethod
    def _declared_parts(cls) -> Tuple[str, ...]:
        return EMBEDDED_PARTS + super()._declared_parts()

    def _setup(self) -> None:
        self._keylist = [self._key(EMBEDDED_PARTS[0])] + [self._key(p) for p in self._PARTS]
        self._lock = RLock._embedded(self, EMBEDDED_PREFIX, self._lease)

    def _handle_state(self) -> Any:
        return self._lease

    def _set_handle_state(self, state: Any) -> None:
        self._lease = state

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        return check_lease(state)

    def _run(self, source: str, *args: Any) -> Any:
        """Run the operation ``source`` (made with :func:`lua`) on this object's keys."""
        if self._closed:
            self._check()
        n = _NKEYS[source]
        token, holds = self._caller()
        if holds:
            return self._execute(source, n, _HOLDER + token, args)
        try:
            return self._execute(source, n, token, args)
        except _Locked:
            pass
        # Another holds the lock: wait for it, and run under it (RuntimeError
        # if that other is a task of this thread's event loop).
        with self._lock:
            return self._execute(source, n, _HOLDER + token, args)

    def _caller(self) -> Tuple[str, bool]:
        """The caller's token and whether it holds the lock: the running
        asyncio task's when the task acquired it (``async with d.lock``),
        otherwise the thread's."""
        key = self._keylist[0]
        token = thread_token()
        if claims_lock(key, token):
            return token, True
        if asyncio._get_running_loop() is not None:
            task = _aio.task_token(create=False)
            if task is not None and claims_lock(key, task):
                return task, True
        return token, False

    def _run_raw(self, source: str, *args: Any) -> Any:
        """Run ``source``, a script that ignores the object's lock (KEYS[1]
        the lock owner, KEYS[2] the data, ARGV[1] the caller's token),
        except for a caller that acquired the lock: it is fenced as in every
        operation, so that a holder whose lease ran out cannot act through
        the raw object either."""
        token, holds = self._caller()
        if holds:
            fenced = _FENCED_RAW.get(source)
            if fenced is None:
                fenced = _FENCED_RAW[source] = lua(source)
            return self._execute(fenced, _NKEYS[fenced], _HOLDER + token, args)
        return self._script(source, self._keylist[:2], (token, *args))

    def _execute(self, source: str, n: int, token: str, args: Tuple[Any, ...]) -> Any:
        # On the incarnation of the object this handle opened (``alive``):
        # the metadata key goes last in KEYS, the uid last in ARGV.
        conn = self._conn
        try:
            return conn.script(alive(source, self._expiring)).execute(
                conn.client, n + 1, *self._keylist[:n], self._meta, token, *args, *self._tail)
        except redis.ResponseError as exc:
            reason = str(exc)
            if reason == "IPLOCKED":
                raise _Locked from None
            if reason == "IPLEASELOST":
                raise lease_lost_error(
                    self._lock, f"an operation on {self._opname}, refused by the server and not done") from None
            self._raise(exc)
        except BaseException as exc:
            self._raise(exc)


class _Locked(Exception):
    """The operation found the lock held by another, and did nothing."""


#: Marks the token of a caller that holds the lock (see _GUARD).
_HOLDER = "!"

#: The fenced forms of the raw scripts, made on first use by a holder.
_FENCED_RAW: Dict[str, str] = {}
