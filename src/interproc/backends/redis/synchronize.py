"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier on Redis.

The semantics of interproc's shared-memory primitives (docs/api.md), for
processes on several machines.  Each object is a few keys sharing one hash
tag (one Redis Cluster slot); every change of state is one Lua script, and
every wait blocks in Redis (``BLPOP`` on the waiter's own wake key, see
``_waiters``), never in a polling loop.

Key layout of an object whose keys start with ``ip:{name}:``:

- Lock/RLock: ``owner`` (hash: token, re-entry count, pid; expires after the
  lease), ``state`` (hash: token of the last acquirer that has not released,
  owner deaths, the last fencing token given), waiters ``w``/``w.e`` and
  their wake keys ``wk:<id>``.
- Semaphore: ``st`` (hash: value), waiters ``w``/``w.e``, ``wk:<id>``.
- Event: ``st`` (hash: flag, generation), waiters ``w``/``w.e``, ``wk:<id>``.
- Condition: waiters ``cw``/``cw.e``, wake keys ``cwk:<id>``, and, unless a
  lock is given, its own RLock under ``lock.owner``, ``lock.state``...
- Barrier: ``bar`` (hash: arrived count, generation, broken), ``out`` (hash:
  generation -> how it ended), waiters ``w``/``w.e``, ``wk:<id>``; the
  party running the action stays registered in ``w`` while it does.

- **Timeout**: ``acquire``/``wait`` return False when their timeout passes
  (threading's reading: None waits for ever, a negative one not at all);
  ``Barrier.wait`` breaks the barrier and raises BrokenBarrierError.
- **Peer death**: locks are leases: the holder's process renews them from a
  background thread (every third of the lease), so a holder that dies, or
  whose host vanishes, loses the lock at most ``lease`` seconds later; the
  next acquirer gets it with ``owner_died`` set and an
  :class:`~interproc.OwnerDiedWarning`.  Semaphore units taken by a process
  that dies are not given back (they have no owner).  A dead waiter is
  skipped by wake-ups once its registration expires (``_waiters``); a dead
  waiter at a Barrier breaks it, and so does a party that dies while it
  runs the Barrier's action.
- **Lease lost by a live holder** (it stalled or lost the server for longer
  than the lease): the server refuses its operations on a guarded object
  (``_guarded``) and an RLock re-entry, with
  :class:`~.errors.LeaseLostError`; if another took the lock meanwhile,
  ``release()`` raises it too, otherwise it releases.
- **Fencing tokens**: every acquisition is numbered, one more than the
  last (``fencing_token``), for other systems to refuse a stale holder.
- **Release by another thread**: only the thread that acquired a Lock may
  release it (LockNotOwnedError), unlike multiprocessing's and the
  shared-memory Lock, so that a holder whose lease ran out can never release
  the next holder's lock (docs/api.md, "Manager on Redis").
- **Lost connection**: the call raises ConnectionLostError (it may or may not
  have happened: an ``acquire`` may hold the lock, whose lease then runs out
  unless released); ``ServerTimeoutError`` likewise.
- **Replicas** (``replicas=N``, ``client.py``): an ``acquire`` that fewer
  than N replicas acknowledged gives the lock or unit back at once, then
  raises ReplicationError (a failover could hand it to another too);
  ``Semaphore.release``, ``Event.set``/``clear`` and ``Barrier.reset``
  raise it with their change done; a Lock's ``release`` waits for them
  but never raises (a lost release only leaves the lock to its lease).
  Lease renewals, waiters' registrations and wake-ups never wait: a
  stalled replica must not cost a live holder its lease.
- **Close**: a closed handle raises ValueError; a lock held by the thread
  stays held (and renewed) until that thread releases it through another
  handle, or its process exits.
"""
from __future__ import annotations

import operator
import os
import socket
import sys
import threading
import time
import warnings
from threading import BrokenBarrierError
from typing import Any, Dict, List, Optional, Tuple

from ...synchronize import OwnerDiedWarning, wait_for, wait_for_async
import secrets

from . import _waiters
from . import codec as _codec
from ._base import register, thread_token
from .client import ACKS_NONE, NO_WAIT, WAIT_QUIETLY
from ._waiters import Deadline, WaitingObject, lua
from .errors import CorruptDataError, LeaseLostError, LockNotOwnedError, ReplicationError

__all__ = [
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier",
    "LockNotOwnedError", "LeaseLostError", "OwnerDiedWarning", "DEFAULT_LEASE",
]

#: Seconds a lock stays held after its holder stops renewing it.
DEFAULT_LEASE = 10.0



# ------------------------------------------------------------------ leases

# KEYS: the lock's owner key, its object's metadata.  A lock whose object
# is gone (it expired with a killed manager: see keep_alive) is not renewed,
# or a holder would keep its owner key alone on the server while it lives.
_RENEW_LUA = NO_WAIT + """
if redis.call('HGET', KEYS[1], 't') == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


# Keeps an expiring object alive: every key given (its metadata first) is
# set back to the full expiry in one script, so that they all run out at
# the same moment once nobody keeps them alive any more.  A key that does
# not exist is not made.  0 once the object is gone (or is another
# incarnation).  ARGV: uid, expiry in ms.  It never waits for replicas, as
# a lease's renewal does not: a stalled replica must not stall the keeper.
_KEEP_ALIVE_LUA = NO_WAIT + """
if redis.call('HGET', KEYS[1], 'uid') ~= ARGV[1] then return 0 end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
"""


class _Renewer:
    """One daemon thread per process renewing the leases of the locks that
    this process's threads hold, and keeping alive the expiring objects
    that this process's managers made (``keep``).

    The thread starts with the first lock taken or object kept, and a fork
    made while the process holds no Redis lock stops it first
    (``stop_if_idle``): forking a process that has threads is what Python
    3.12 and later warn about, and the thread has nothing urgent to do
    then; the parent starts it again after the fork (``resume``), the
    child starts afresh, keeping nothing alive: it is not the process that
    made those objects.  A fork made while a lock is held keeps the thread,
    and gets that warning: the lease must go on being renewed."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        # (owner key, token) -> [conn, lease, due, fencing token, renewal,
        # re-entry depth, metadata key]
        self._held: Dict[Tuple[str, str], list] = {}
        # Leases found lost by a renewal, until their holder releases:
        # (owner key, token) -> [fencing token, re-entry depth].
        self._lost: Dict[Tuple[str, str], list] = {}
        # Objects kept alive: metadata key -> [conn, period, due, keys,
        # script arguments].
        self._kept: Dict[str, list] = {}
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def _start(self) -> None:
        # Called with self._cv held.
        self._thread = threading.Thread(target=self._run, name="interproc-lease-renewer", daemon=True)
        self._thread.start()

    def add(self, conn: Any, key: str, token: str, lease: float, fence: int,
            renew: Optional[Any] = None, count: int = 1, meta: str = "") -> None:
        """Renew ``key`` every third of ``lease`` while held: with the lock
        renewal script while its object's metadata key ``meta`` exists, or
        by calling ``renew()`` (which answers whether the claim still
        stands), for a Barrier's running action.  ``count`` re-entries are
        added to those of the same acquisition (``fence``)."""
        with self._cv:
            old = self._held.get((key, token))
            depth = count + (old[5] if old is not None and old[3] == fence else 0)
            self._held[(key, token)] = [conn, lease, time.monotonic() + lease / 3.0, fence,
                                        renew, depth, meta]
            self._lost.pop((key, token), None)
            # While stop_if_idle is stopping the thread, it restarts one
            # itself once the old one is gone.
            if self._thread is None:
                self._start()
            self._cv.notify()

    def keep(self, conn: Any, keys: List[str], uid: str, expire_ms: int) -> None:
        """Keep the expiring object whose keys are ``keys`` (metadata first)
        alive, every third of ``expire_ms``, until ``let_expire`` or this
        process ends."""
        period = expire_ms / 3000.0
        with self._cv:
            self._kept[keys[0]] = [conn, period, time.monotonic() + period, list(keys),
                                   [uid, expire_ms]]
            if self._thread is None:
                self._start()
            self._cv.notify()

    def let_expire(self, meta_key: str) -> None:
        """Keep the object whose metadata key is ``meta_key`` alive no more."""
        with self._cv:
            self._kept.pop(meta_key, None)

    def resume(self) -> None:
        """Start the thread again if it has work (after a fork, in the parent)."""
        with self._cv:
            if self._thread is None and not self._stopping and (self._held or self._kept):
                self._start()

    def stop_if_idle(self) -> None:
        with self._cv:
            thread = self._thread
            if thread is None or self._held or self._stopping:
                return
            self._stopping = True
            self._cv.notify()
        thread.join()
        with self._cv:
            self._stopping = False
            self._thread = None
            if self._held:  # another thread took a lock meanwhile
                self._start()

    def remove(self, key: str, token: str) -> bool:
        """Forget a lock; whether this thread was holding it (its lease may
        have been found lost since)."""
        with self._cv:
            held = self._held.pop((key, token), None) is not None
            lost = self._lost.pop((key, token), None) is not None
            return held or lost

    def claims(self, key: str, token: str) -> bool:
        """Whether this thread acquired the lock and has not released it,
        whether or not its lease is still good.  Lock-free: it is asked
        before every operation on a guarded object, and a dict lookup is
        atomic."""
        return (key, token) in self._held or (key, token) in self._lost

    def fence(self, key: str, token: str) -> Optional[int]:
        """The fencing token of this thread's acquisition, None if it does
        not claim the lock."""
        entry = self._held.get((key, token))
        if entry is not None:
            return entry[3]
        lost = self._lost.get((key, token))
        return None if lost is None else lost[0]

    def nested(self, key: str, token: str) -> bool:
        """Whether this thread holds an RLock more than once."""
        with self._cv:
            entry = self._held.get((key, token))
            if entry is not None:
                return entry[5] > 1
            lost = self._lost.get((key, token))
            return lost is not None and lost[1] > 1

    def unnest(self, key: str, token: str) -> None:
        """One re-entry of this thread's hold was released."""
        with self._cv:
            entry = self._held.get((key, token))
            if entry is not None:
                entry[5] -= 1
            lost = self._lost.get((key, token))
            if lost is not None:
                lost[1] -= 1

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopping:
                    return
                now = time.monotonic()
                due = [(k, v) for k, v in self._held.items() if v[2] <= now]
                kept = [(k, v) for k, v in self._kept.items() if v[2] <= now]
                if not due and not kept:
                    nxt = min([v[2] for v in self._held.values()]
                              + [v[2] for v in self._kept.values()], default=now + 60.0)
                    self._cv.wait(max(nxt - now, 0.001))
                    continue
                for _, v in due:
                    v[2] = now + v[1] / 3.0
                for _, v in kept:
                    v[2] = now + v[1]
            if kept:
                self._keep_alive(kept)
            for (key, token), (conn, lease, _, _, renew, _, meta) in due:
                try:
                    if renew is not None:
                        ok = renew()
                    else:
                        ok = conn.script(_RENEW_LUA)(keys=[key, meta],
                                                     args=[token, int(lease * 1000)])
                except Exception:
                    # Try again soon: the lease is not lost until it runs out.
                    with self._cv:
                        entry = self._held.get((key, token))
                        if entry is not None:
                            entry[2] = time.monotonic() + min(entry[1] / 10.0, 0.5)
                    continue
                if not ok:
                    with self._cv:
                        entry = self._held.pop((key, token), None)
                        if entry is not None:
                            self._lost[(key, token)] = [entry[3], entry[5]]

    def _keep_alive(self, kept: List[Tuple[str, list]]) -> None:
        # A server that fails one refresh is not asked for the others of
        # this round: each attempt could wait for a connect timeout.  They
        # are all tried again soon, well before their keys run out (a third
        # of the expiry is left), and nothing is printed: the objects'
        # users get the server's errors themselves.
        failed: List[Any] = []
        for meta_key, entry in kept:
            conn, period, _, keys, args = entry
            if self._stopping:
                # A fork waits for this thread: the rest go first once it
                # is back.
                with self._cv:
                    entry[2] = 0.0
                continue
            if not any(conn is f for f in failed):
                try:
                    ok = conn.script(_KEEP_ALIVE_LUA)(keys, args)
                except Exception:
                    failed.append(conn)
                else:
                    if not ok:  # deleted: nothing to keep alive
                        with self._cv:
                            if self._kept.get(meta_key) is entry:
                                del self._kept[meta_key]
                    continue
            with self._cv:
                entry[2] = time.monotonic() + min(period / 3.0, 1.0)


_renewer = _Renewer()


def keep_alive(obj: Any) -> None:
    """Keep the expiring object ``obj`` (see ``RedisManager``'s
    ``orphan_ttl``) alive from this process until :func:`let_expire` or the
    process's end; nothing for an object that does not expire.  A child
    forked from this process does not keep it alive."""
    life = obj._lifetime()
    if life is not None:
        conn, keys, uid, expire_ms = life
        _renewer.keep(conn, keys, uid, expire_ms)


def let_expire(obj: Any) -> None:
    """Stop keeping ``obj`` alive (``keep_alive``): its keys expire unless
    deleted first."""
    life = obj._lifetime()
    if life is not None:
        _renewer.let_expire(life[1][0])


def claims_lock(owner_key: str, token: str) -> bool:
    """Whether the thread ``token`` acquired the lock whose owner key is
    ``owner_key`` and has not released it (its lease may be lost): the
    guarded objects then ask the server to check that the lease is still
    good (``_guarded``)."""
    return _renewer.claims(owner_key, token)


def _renewer_after_fork() -> None:
    # The child holds none of its parent's locks (its thread tokens differ).
    global _renewer
    _renewer = _Renewer()


def _renewer_before_fork() -> None:
    _renewer.stop_if_idle()


def _renewer_after_fork_in_parent() -> None:
    _renewer.resume()


os.register_at_fork(before=_renewer_before_fork, after_in_parent=_renewer_after_fork_in_parent,
                    after_in_child=_renewer_after_fork)

_HOST = socket.gethostname()


# ------------------------------------------------------------------ locks

# ARGV: token, lease ms, reentrant, waiter id, mode, registration ttl, wake
# prefix, count, owner's name, whether the caller believes it holds the lock.
# Returns {1, owner died, fencing token} when taken, {0, holder's pttl} when
# not, {-1, 0} when the caller believed it held the lock but its lease is
# gone (another holds it, or nobody does).
_ACQUIRE_LUA = lua("""
local owner, state, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, wid, mode, p = ARGV[1], ARGV[4], tonumber(ARGV[5]), ARGV[7]
local cur = redis.call('HGET', owner, 't')
if ARGV[10] == '1' and cur ~= token then
  w_done(z, e, p, wid)
  return {-1, 0}
end
if not cur then
  redis.call('HSET', owner, 't', token, 'n', ARGV[8], 'pid', ARGV[9])
  redis.call('PEXPIRE', owner, ARGV[2])
  local died = 0
  if redis.call('HGET', state, 'holder') then
    died = 1
    redis.call('HINCRBY', state, 'deaths', 1)
  end
  redis.call('HSET', state, 'holder', token)
  -- The fencing token: one more at every acquisition, kept in the state
  -- hash, which outlives holders and goes only with the lock's other keys.
  local fence = redis.call('HINCRBY', state, 'fence', 1)
  w_done(z, e, p, wid)
  return {1, died, fence}
end
if cur == token and ARGV[3] == '1' then
  redis.call('HINCRBY', owner, 'n', tonumber(ARGV[8]))
  redis.call('PEXPIRE', owner, ARGV[2])
  w_done(z, e, p, wid)
  return {1, 0, tonumber(redis.call('HGET', state, 'fence') or '0') or 0}
end
w_fail(z, e, p, wid, mode, tonumber(ARGV[6]))
return {0, redis.call('PTTL', owner)}
""")

# ARGV: token, reentrant, wake prefix, full, whether the caller holds it
# more than once.  Returns {status, depth}: 0 released (depth: the re-entry
# count it had), 1 still held (re-entered), -1 not locked, -2 held by another
# owner, -3 the caller's lease ran out and it leaves an inner re-entry.
_RELEASE_LUA = lua(WAIT_QUIETLY + """
local owner, state, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, p = ARGV[1], ARGV[3]
local cur = redis.call('HGET', owner, 't')
if cur ~= token then
  if redis.call('HGET', state, 'holder') == token then
    -- Our lease ran out and nobody took the lock since.  Leaving an inner
    -- re-entry (ARGV[5]) must not end the hold the outer code still counts
    -- on, so it is refused; leaving the outermost one is an ordinary
    -- release: the lock was never shared.
    if ARGV[5] == '1' then return {-3, 0} end
    redis.call('HDEL', state, 'holder')
    w_wake(z, e, p, 1)
    return {0, 1}
  end
  if not cur then return {-1, 0} end
  return {-2, 0}
end
local depth = tonumber(redis.call('HGET', owner, 'n') or '1')
if ARGV[2] == '1' and ARGV[4] ~= '1' and depth > 1 then
  redis.call('HINCRBY', owner, 'n', -1)
  return {1, depth - 1}
end
redis.call('DEL', owner)
redis.call('HDEL', state, 'holder')
w_wake(z, e, p, 1)
return {0, depth}
""")

_LOCK_STATS_LUA = lua(NO_WAIT + """
local o = redis.call('HMGET', KEYS[1], 't', 'n', 'pid')
local deaths = redis.call('HGET', KEYS[2], 'deaths') or '0'
return {o[1] or '', o[2] or '0', o[3] or '', deaths, w_count(KEYS[4])}
""")


def lease_lost_error(lock: Any, what: str) -> LeaseLostError:
    """The error for ``what`` (a call, an operation) refused because the
    calling thread's lease on ``lock`` ran out."""
    return LeaseLostError(
        f"{what}: this thread's lease on {lock!r} ran out (it was not renewed for "
        f"{lock.lease} s: the process or the server stalled, or the connection was "
        "lost) and the lock may have been taken by another since")


def _taken_back(exc: ReplicationError, what: str, given_back: bool, otherwise: str) -> ReplicationError:
    """``exc``, for an acquisition that too few replicas acknowledged and
    that was given back (``given_back``) so that its caller does not hold
    what a failover could hand to another too; ``otherwise`` says what
    became of it when giving it back failed."""
    fate = ("it was given back at once, and the caller does not hold it" if given_back
            else f"giving it back failed, and {otherwise}")
    exc.args = (
        f"{exc.op + ': ' if exc.op else ''}{what} on the Redis master {exc.server}, but only "
        f"{exc.acknowledged} of the {exc.replicas} replica{'s' if exc.replicas > 1 else ''} "
        "asked for acknowledged it in time, "
        f"so that after a failover to one that lacks it another could take it too; {fate}",)
    return exc


def check_lease(lease: Any) -> float:
    """A lock's lease in seconds, checked: TypeError, ValueError."""
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise TypeError(f"lease must be a number of seconds, not {type(lease).__name__}")
    if not 0.05 <= lease <= 86400:
        raise ValueError(f"lease must be between 0.05 and 86400 seconds, not {lease}")
    return float(lease)


class _LockBase(WaitingObject):
    _REENTRANT = False
    _prefix = ""

    def __init__(self, conn: Any, *, name: Optional[str] = None, create: Optional[bool] = None,
                 codec: Any = None, lease: float = DEFAULT_LEASE) -> None:
        self._lease = check_lease(lease)
        self._open(conn, name, create, codec, {})


    def _setup(self) -> None:
        self.owner_died = False
        p = self._prefix
        self._keys = [self._key(p + "owner"), self._key(p + "state"), self._key(p + "w"),
                      self._key(p + "w.e")]
        self._wake_prefix = self._key(p + "wk:")

    _PARTS = ("owner", "state")
    _REGISTRIES = {"w": "wk:"}
    _OWN_EXPIRY_PARTS = ("owner",)  # the lease

    def _handle_state(self) -> Any:
        return (self._lease, self._prefix)

    def _set_handle_state(self, state: Any) -> None:
        self._lease, self._prefix = state

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        # Read from Redis: a lease and the prefix of the lock's parts, one
        # of the two a lock may have, nothing else.
        if type(state) is not list or len(state) != 2 or state[1] not in ("", EMBEDDED_PREFIX):
            raise ValueError("malformed lock state")
        return (check_lease(state[0]), state[1])

    def _destroy(self) -> None:
        if self._prefix:
            return  # a lock living with another object goes with it
        super()._destroy()

    @classmethod
    def _embedded(cls, owner: WaitingObject, prefix: str, lease: float) -> "_LockBase":
        """The lock living with ``owner`` under its parts ``prefix + "owner"``...
        (see :func:`embedded_parts`): a Condition's own lock, a container's."""
        return cls._handle(owner._conn, owner._codec, owner._ident, owner._anonymous,
                           owner._expiry_options(), (lease, prefix), owner._uid)

    @property
    def lease(self) -> float:
        """Seconds the lock stays held after its holder stops renewing it."""
        return self._lease

    def _try(self, token: str, count: int, wid: str, mode: int) -> Tuple[bool, Any, Optional[float]]:
        claimed = _renewer.claims(self._keys[0], token)
        try:
            res = self._script(*self._acquire_call(token, count, claimed, wid, mode))
        except ReplicationError as exc:
            res = exc.result
            if int(res[0]) == 1 and not claimed:
                # Held by this thread on the master only: after a failover
                # another could take it too.  Raising while holding it
                # would leave it held, unrenewed, by a caller that does
                # not know; so it is released, and acquire() raises.
                raise self._unacked(exc, self._give_back(token)) from None
            # Not taken: the attempt wrote at most a waiter's registration.
            # A re-entry: the thread held the lock already.
        return self._acquired(res)

    def _acquire_call(self, token: str, count: int, claimed: bool, wid: str,
                      mode: int) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of one attempt to take the lock
        (``_try``, ``acquire_async``)."""
        return _ACQUIRE_LUA, self._keys, [
            token, int(self._lease * 1000), "1" if self._REENTRANT else "0", wid, mode,
            _waiters.REGISTRATION_TTL_MS, self._wake_prefix, count, f"{_HOST}:{os.getpid()}",
            "1" if claimed else "0"]

    def _acquired(self, res: Any) -> Tuple[bool, Any, Optional[float]]:
        """What the reply of ``_acquire_call``'s script means, for ``_wait``."""
        status = int(res[0])
        if status == 1:
            return True, (int(res[1]), int(res[2])), None
        if status == -1:
            # Taking it afresh would hide from the code under the outer
            # acquisition that the lock was not held all along.
            raise lease_lost_error(self, "acquire()")
        pttl = int(res[1])
        # Wake up when the holder's lease would run out, to take over.
        return False, 0, (pttl / 1000.0 + 0.005) if pttl > 0 else 0.005

    def _unacked(self, exc: ReplicationError, given_back: bool) -> ReplicationError:
        """``exc`` for an acquisition too few replicas acknowledged."""
        return _taken_back(exc, f"acquire() took {self!r}", given_back,
                           f"the lock stays held until its lease ({self._lease:g} s) runs out")

    def _give_back(self, token: str) -> bool:
        """Release an acquisition that is not to be kept, without waiting
        for replicas (a failover that loses the release leaves the lock
        to its lease); whether that worked."""
        try:
            self._script(*self._release_call(token, True, False), ACKS_NONE)
            return True
        except Exception:
            return False

    def _release_call(self, token: str, full: bool, nested: bool) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of a release by ``token``."""
        return _RELEASE_LUA, self._keys, [token, "1" if self._REENTRANT else "0", self._wake_prefix,
                                          "1" if full else "0", "1" if nested else "0"]

    def _acquire_count(self, block: bool, timeout: Any, count: int) -> bool:
        # The running task's token when it holds the lock already
        # (``async with d.lock``, then ``with d.lock``): it re-enters.
        token = self._token()
        if self._prefix and token == thread_token():
            self._check_no_task_of_this_loop_holds()
        ok, taken = self._wait(lambda wid, mode: self._try(token, count, wid, mode),
                               Deadline(block, timeout), self._prefix + "wk:")
        return ok and self._took(token, count, taken)

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """Awaitable ``acquire()``: take the lock without blocking the event
        loop; False after ``timeout`` seconds (never earlier).  The lock
        then belongs to the running task, not the thread: the same task
        may take an RLock again, and releases it with ``release()`` (or at
        the end of ``async with``); other tasks and threads wait.
        Cancelled, it holds nothing: an acquisition on its way when the
        cancellation came is given back.  ValueError if the handle is (or
        gets) closed."""
        from ._aio import task_token

        self._check()
        return await self._acquire_count_async(task_token(), 1, timeout)

    async def _acquire_count_async(self, token: str, count: int, timeout: Any) -> bool:
        """``_acquire_count`` from an event loop, for ``token``."""
        claimed = _renewer.claims(self._keys[0], token)
        try:
            ok, taken = await self._wait_async(
                lambda wid, mode: self._acquire_call(token, count, claimed, wid, mode),
                self._acquired, Deadline(True, timeout), self._prefix + "wk:",
                # Given back without waiting for replicas, as _give_back does.
                lambda _: self._script_async(*self._release_call(token, not claimed, claimed),
                                             acks=ACKS_NONE), claimed)
        except ReplicationError as exc:
            if not hasattr(exc, "given_back"):
                raise
            raise self._unacked(exc, exc.given_back) from None
        return ok and self._took(token, count, taken)

    async def __aenter__(self) -> bool:
        return await self.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        await self._release_async(False)

    async def _release_async(self, full: bool) -> Tuple[str, int]:
        """``_release`` from an event loop; the releasing token and depth."""
        from ._aio import watch

        token, key, nested = self._release_start(full)
        with watch(self):
            status, depth = await self._script_async(*self._release_call(token, full, nested))
        return token, self._release_end(token, key, nested, int(status), int(depth))

    def _took(self, token: str, count: int, taken: Any) -> bool:
        """Keep an acquisition by ``token``: its lease renewed, ``owner_died``
        and OwnerDiedWarning as the script said.  True."""
        died, fence = taken
        _renewer.add(self._conn, self._keys[0], token, self._lease, fence, count=count,
                     meta=self._meta)
        self.owner_died = bool(died)
        if died:
            warnings.warn(OwnerDiedWarning(
                f"the previous holder of {self!r} died (or lost its lease) while holding it; "
                "the data it protected may be inconsistent"), stacklevel=4)
        return True

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; return whether it was taken (False after ``timeout``
        seconds, or at once if ``block`` is false)."""
        return self._acquire_count(block, timeout, 1)

    def _release(self, full: bool) -> int:
        token, key, nested = self._release_start(full)
        status, depth = (int(x) for x in self._script(*self._release_call(token, full, nested)))
        return self._release_end(token, key, nested, status, depth)

    def _release_start(self, full: bool) -> Tuple[str, str, bool]:
        """Who releases (``_token``), the owner key, and whether the hold is nested."""
        token = self._token()
        key = self._keys[0]
        return token, key, self._REENTRANT and not full and _renewer.nested(key, token)

    def _check_no_task_of_this_loop_holds(self) -> None:
        """RuntimeError if a task of the event loop running in this thread
        holds this lock (a container's or a Condition's own): waiting for
        it here would block the loop, so that the holder could never run
        to release it."""
        if "asyncio" not in sys.modules:
            return
        import asyncio

        from ._aio import held_by_a_task_of

        loop = asyncio._get_running_loop()
        if loop is not None and held_by_a_task_of(loop, self._keys[0], claims_lock):
            raise RuntimeError(
                "the lock is held by another task of this event loop (async with "
                "d.lock); await it with acquire_async() instead of waiting for it here")

    def _token(self) -> str:
        """Who holds the lock when the caller does: the running asyncio
        task if it took it with ``acquire_async``, else the thread."""
        if "asyncio" in sys.modules:
            from ._aio import task_token

            tok = task_token(False)
            if tok is not None and _renewer.claims(self._keys[0], tok):
                return tok
        return thread_token()

    def _release_end(self, token: str, key: str, nested: bool, status: int, depth: int) -> int:
        """What the release script's reply means: the depth released, or
        the error to raise."""
        if status == 0:
            _renewer.remove(key, token)
            return depth
        if status == 1:
            _renewer.unnest(key, token)
            return depth
        if nested:
            # The lease is gone, but the outer acquisitions are still to be
            # left: keep this thread's claim so that what they do is
            # refused too, and the outermost release ends it.
            _renewer.unnest(key, token)
            raise lease_lost_error(self, "release()")
        lost = _renewer.remove(key, token)
        if lost:
            raise lease_lost_error(self, "release()")
        if self._REENTRANT:
            raise LockNotOwnedError("attempt to release recursive lock not owned by thread")
        if status == -1:
            raise ValueError("semaphore or lock released too many times")
        raise LockNotOwnedError(
            f"{self!r} is held by another thread or process, and a Redis Lock may only be "
            "released by the thread that acquired it (unlike multiprocessing's and the "
            "shared-memory Lock): its lease belongs to its holder")

    @property
    def fencing_token(self) -> Optional[int]:
        """The fencing token of the calling thread's acquisition, or None if
        this thread has not acquired the lock.

        Every acquisition of the lock (not a re-entry) is numbered, one more
        than the last, by the script that takes it.  Pass the number along
        with what is done under the lock to any other system (a database, a
        storage service) that can remember the largest number it has seen
        and refuse a smaller one: a holder whose lease ran out while it was
        frozen then cannot overwrite what a later holder did there.  The
        number stays the same until ``release()``, even if the lease is
        lost meanwhile: that is what lets the other system refuse it.  It
        is read from this process's memory, without a round trip."""
        self._check()
        return _renewer.fence(self._keys[0], self._token())

    def release(self) -> None:
        """Release the lock (once, for an RLock).  Only the thread that holds
        it may: see the class documentation."""
        self._release(False)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether some thread or process holds the lock."""
        self._check()
        return bool(self._command("EXISTS", self._keys[0]))

    def locked_by_me(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._is_owned()

    def _is_owned(self) -> bool:
        self._check()
        return self._command("HGET", self._keys[0], "t") == self._token().encode()

    def _release_save(self) -> int:
        return self._release(True)

    def _acquire_restore(self, depth: int) -> None:
        self._acquire_count(True, None, depth)

    def statistics(self) -> Dict[str, Any]:
        t, n, pid, deaths, waiters = self._script(_LOCK_STATS_LUA, self._keys, [])
        owner = pid.decode() if t else None
        stats = {"locked": bool(t), "owner_pid": None, "owner": owner,
                 "waiters": int(waiters), "owner_deaths": int(deaths)}
        if owner is not None:
            host, _, p = owner.rpartition(":")
            stats["owner_pid"] = int(p) if host == _HOST else None
        if self._REENTRANT:
            stats["recursion"] = int(n) if t else 0
        return stats

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.{type(self).__name__} {self._where()} closed>"
        return f"<interproc.redis.{type(self).__name__} {self._where()}>"


#: The parts of a lock that lives with another object (a Condition's own
#: RLock, a container's): the owner declares them (``_PARTS``,
#: ``_REGISTRIES``) and makes the lock with ``RLock._embedded(self,
#: EMBEDDED_PREFIX, lease)``.
EMBEDDED_PREFIX = "lock."
EMBEDDED_PARTS = tuple(EMBEDDED_PREFIX + p for p in _LockBase._PARTS)
EMBEDDED_OWNER = EMBEDDED_PREFIX + "owner"
EMBEDDED_REGISTRIES = {EMBEDDED_PREFIX + z: EMBEDDED_PREFIX + p
                       for z, p in _LockBase._REGISTRIES.items()}


@register
class Lock(_LockBase):
    """A non-recursive lock in Redis: ``multiprocessing.Lock``'s API.

    ``Lock(conn, *, name=None, create=None, codec=None, lease=10.0)``

    Unlike multiprocessing's (and the shared-memory) Lock, only the thread
    that acquired it may release it: a lease belongs to its holder.
    ``release()`` of an unlocked Lock raises ValueError; of a Lock held by
    someone else, :class:`LockNotOwnedError` (a RuntimeError); of a Lock
    whose lease ran out and that another took meanwhile,
    :class:`LeaseLostError`.  ``fencing_token`` numbers the holder's
    acquisition.
    """

    _KIND = "Lock"


@register
class RLock(_LockBase):
    """A re-entrant lock in Redis: ``multiprocessing.RLock``'s API.

    ``release()`` by a thread that does not hold it raises
    :class:`LockNotOwnedError` (a RuntimeError and an AssertionError).
    """

    _KIND = "RLock"
    _REENTRANT = True


# ------------------------------------------------------------------ semaphores

_SEM_ACQUIRE_LUA = lua("""
local st, z, e = KEYS[1], KEYS[2], KEYS[3]
local wid, mode, p = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local v = tonumber(redis.call('HGET', st, 'v') or ARGV[5])
if v > 0 then
  redis.call('HSET', st, 'v', v - 1)
  w_done(z, e, p, wid)
  return 1
end
w_fail(z, e, p, wid, mode, tonumber(ARGV[3]))
return 0
""")

_SEM_RELEASE_LUA = lua("""
local st, z, e = KEYS[1], KEYS[2], KEYS[3]
local n, maxv, p = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local v = tonumber(redis.call('HGET', st, 'v') or ARGV[3])
if maxv >= 0 and v + n > maxv then return -1 end
redis.call('HSET', st, 'v', v + n)
w_wake(z, e, p, n)
return v + n
""")

_SEM_STATS_LUA = lua(NO_WAIT + """
return {redis.call('HGET', KEYS[1], 'v') or ARGV[1], w_count(KEYS[3])}
""")


def _sem_acquired(reply: Any) -> Tuple[bool, Any, Optional[float]]:
    return bool(reply), None, None


def _released(reply: Any) -> None:
    if int(reply) < 0:
        raise ValueError("semaphore or lock released too many times")


@register
class Semaphore(WaitingObject):
    """A counting semaphore in Redis: ``multiprocessing.Semaphore``.

    ``Semaphore(conn, value=1, *, name=None, create=None, codec=None)``.
    Semaphores have no owner: units taken by a process that dies are not
    given back.
    """

    _KIND = "Semaphore"
    _BOUNDED = False
    _PARTS = ("st",)
    _REGISTRIES = {"w": "wk:"}

    def __init__(self, conn: Any, value: int = 1, *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None) -> None:
        value = operator.index(value)
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._open(conn, name, create, codec, {"value": value}, init={"st": {"v": value}})

    def _setup(self) -> None:
        self._initial = int(self._opts["value"])
        self._keys = [self._key("st"), self._key("w"), self._key("w.e")]
        self._wake_prefix = self._key("wk:")

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Take one unit; return whether it was taken."""
        def attempt(wid: str, mode: int) -> Tuple[bool, Any, Optional[float]]:
            try:
                ok = self._script(*self._acquire_call(wid, mode))
            except ReplicationError as exc:
                ok = exc.result
                if ok:
                    # As for a lock (_LockBase._try): the unit goes back.
                    raise self._unacked(exc, self._give_back()) from None
            return _sem_acquired(ok)
        return self._wait(attempt, Deadline(block, timeout), "wk:")[0]

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """Awaitable ``acquire()``: take one unit without blocking the event
        loop; False after ``timeout`` seconds (never earlier).  Cancelled,
        it holds nothing: a unit taken on the way is given back.
        ValueError if the handle is (or gets) closed."""
        self._check()
        try:
            return (await self._wait_async(
                self._acquire_call, _sem_acquired, Deadline(True, timeout), "wk:",
                lambda _: self._script_async(*self._release_call(1), acks=ACKS_NONE)))[0]
        except ReplicationError as exc:
            if not hasattr(exc, "given_back"):
                raise
            raise self._unacked(exc, exc.given_back) from None

    async def __aenter__(self) -> bool:
        return await self.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        from ._aio import watch

        with watch(self):
            _released(await self._script_async(*self._release_call(1)))

    def _acquire_call(self, wid: str, mode: int) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of one attempt to take a unit."""
        return _SEM_ACQUIRE_LUA, self._keys, [
            wid, mode, _waiters.REGISTRATION_TTL_MS, self._wake_prefix, self._initial]

    def _release_call(self, n: int) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments that give back ``n`` units."""
        return _SEM_RELEASE_LUA, self._keys, [
            n, self._initial if self._BOUNDED else -1, self._initial, self._wake_prefix]

    def _unacked(self, exc: ReplicationError, given_back: bool) -> ReplicationError:
        """``exc`` for a unit taken that too few replicas acknowledged."""
        return _taken_back(exc, f"acquire() took a unit of {self!r}", given_back,
                           "the unit is lost")

    def _give_back(self) -> bool:
        """Release a unit whose acquisition is not to be kept, without
        waiting for replicas; whether that worked."""
        try:
            self._script(*self._release_call(1), ACKS_NONE)
            return True
        except Exception:
            return False

    def release(self, n: int = 1) -> None:
        """Give back ``n`` units, waking up to ``n`` waiters."""
        n = operator.index(n)
        if n < 1:
            raise ValueError("n must be one or more")
        try:
            res = self._script(*self._release_call(n))
        except ReplicationError as exc:
            if int(exc.result) >= 0:
                raise
            res = exc.result  # refused: nothing written to wait for
        _released(res)

    def get_value(self) -> int:
        self._check()
        v = self._command("HGET", self._keys[0], "v")
        return self._initial if v is None else int(v)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def statistics(self) -> Dict[str, Any]:
        v, waiters = self._script(_SEM_STATS_LUA, self._keys, [self._initial])
        return {"value": int(v), "waiters": int(waiters)}

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.{type(self).__name__} {self._where()} closed>"
        extra = f", maxvalue={self._initial}" if self._BOUNDED else ""
        return f"<interproc.redis.{type(self).__name__} {self._where()} value={self.get_value()}{extra}>"


@register
class BoundedSemaphore(Semaphore):
    """A semaphore that refuses (ValueError) to be released above its
    initial value: ``multiprocessing.BoundedSemaphore``."""

    _KIND = "BoundedSemaphore"
    _BOUNDED = True


# ------------------------------------------------------------------ event

_EVENT_WAIT_LUA = lua(NO_WAIT + """
local st, z, e = KEYS[1], KEYS[2], KEYS[3]
local wid, mode, p = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local f = redis.call('HGET', st, 'f')
local g = redis.call('HGET', st, 'g') or '0'
if f == '1' or (ARGV[5] ~= '' and g ~= ARGV[5]) then
  w_done(z, e, p, wid)
  return {1, g}
end
w_fail(z, e, p, wid, mode, tonumber(ARGV[3]))
return {0, g}
""")

_EVENT_SET_LUA = lua("""
redis.call('HSET', KEYS[1], 'f', '1')
redis.call('HINCRBY', KEYS[1], 'g', 1)
return w_wake(KEYS[2], KEYS[3], ARGV[1], -1)
""")

_EVENT_STATS_LUA = lua(NO_WAIT + """
return {redis.call('HGET', KEYS[1], 'f') or '0', w_count(KEYS[3])}
""")


@register
class Event(WaitingObject):
    """An event flag in Redis: ``multiprocessing.Event``.

    ``set()`` wakes every waiter; a waiter woken by a ``set()`` returns True
    even if the flag was cleared again before it looked (threading's rule).
    """

    _KIND = "Event"
    _PARTS = ("st",)
    _REGISTRIES = {"w": "wk:"}

    def __init__(self, conn: Any, *, name: Optional[str] = None, create: Optional[bool] = None,
                 codec: Any = None) -> None:
        self._open(conn, name, create, codec, {})

    def _setup(self) -> None:
        self._keys = [self._key("st"), self._key("w"), self._key("w.e")]
        self._wake_prefix = self._key("wk:")

    def is_set(self) -> bool:
        self._check()
        return self._command("HGET", self._keys[0], "f") == b"1"

    def set(self) -> None:
        self._script(_EVENT_SET_LUA, self._keys, [self._wake_prefix])

    def clear(self) -> None:
        self._check()
        self._command("HSET", self._keys[0], "f", "0")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the flag is set, or ``timeout`` seconds pass; return
        True, or False on timeout."""
        return self._wait(self._attempt(*self._wait_pieces()), Deadline(True, timeout), "wk:")[0]

    async def wait_async(self, timeout: Optional[float] = None) -> bool:
        """Awaitable ``wait()``: True once the flag is set (or was set while
        waiting), False after ``timeout`` seconds (never earlier), without
        blocking the event loop.  ValueError if the handle is (or gets)
        closed."""
        self._check()
        return (await self._wait_async(*self._wait_pieces(), Deadline(True, timeout), "wk:"))[0]

    def _wait_pieces(self) -> Tuple[Any, Any]:
        """One wait's attempt: its script call and what the reply means
        (the generation of the flag seen first is remembered: a ``set()``
        after it wakes the waiter even if the flag was cleared since)."""
        seen = [""]

        def build(wid: str, mode: int) -> Tuple[str, List[Any], List[Any]]:
            return _EVENT_WAIT_LUA, self._keys, [
                wid, mode, _waiters.REGISTRATION_TTL_MS, self._wake_prefix, seen[0]]

        def interpret(reply: Any) -> Tuple[bool, Any, Optional[float]]:
            ok, gen = reply
            if not seen[0]:
                seen[0] = gen.decode() if isinstance(gen, bytes) else str(gen)
            return bool(ok), None, None

        return build, interpret

    def statistics(self) -> Dict[str, Any]:
        f, waiters = self._script(_EVENT_STATS_LUA, self._keys, [])
        return {"set": f == b"1", "waiters": int(waiters)}

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.Event {self._where()} closed>"
        return f"<interproc.redis.Event {self._where()} {'set' if self.is_set() else 'unset'}>"


# ------------------------------------------------------------------ condition

_COND_REGISTER_LUA = lua(NO_WAIT + """
w_add(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
return 1
""")

# Whether the waiter is still registered (then refresh it: mode 1, or drop
# it: mode 2); 1 means it was notified.
_COND_CHECK_LUA = lua(NO_WAIT + """
local z, e, wid, mode, p = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[4]
if redis.call('ZSCORE', z, wid) then
  w_fail(z, e, p, wid, mode, tonumber(ARGV[3]))
  return 0
end
redis.call('DEL', p .. wid)
return 1
""")

_COND_NOTIFY_LUA = lua(NO_WAIT + """
return w_wake(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
""")


@register
class Condition(WaitingObject):
    """A condition variable in Redis: ``multiprocessing.Condition``.

    ``Condition(conn, lock=None, *, name=None, create=None, codec=None,
    lease=10.0)`` uses an RLock living with the condition (with that
    lease), or the Redis Lock/RLock given (which may live in another hash
    slot: no script spans both).  Waiters may wake spuriously; use
    ``wait_for`` or a loop.
    """

    _KIND = "Condition"
    # Its own RLock's keys are declared here, with the prefix "lock.".
    _REGISTRIES = {"cw": "cwk:", **EMBEDDED_REGISTRIES}
    _PARTS = EMBEDDED_PARTS
    _OWN_EXPIRY_PARTS = (EMBEDDED_OWNER,)
    _lock: Any = None

    def __init__(self, conn: Any, lock: Any = None, *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None,
                 lease: float = DEFAULT_LEASE) -> None:
        if lock is not None and not isinstance(lock, _LockBase):
            raise TypeError(f"lock must be a Redis Lock or RLock, not {type(lock).__name__}")
        self._given_lock = lock
        self._own_lease = check_lease(lease)  # of its own RLock
        self._open(conn, name, create, codec, {})

    def _setup(self) -> None:
        self._keys = [self._key("cw"), self._key("cw.e")]
        self._wake_prefix = self._key("cwk:")
        lock = self._given_lock
        if lock is None:
            lock = RLock._embedded(self, EMBEDDED_PREFIX, self._own_lease)
        self._lock = lock

    def _handle_state(self) -> Any:
        return (self._given_lock, self._lock._lease)

    def _set_handle_state(self, state: Any) -> None:
        self._given_lock, self._own_lease = state

    def _ref_state(self) -> Any:
        given = self._given_lock
        return [None if given is None else list(given.__interproc_redis_ref__()), self._lock._lease]

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        ref, lease = state
        lease = check_lease(lease)
        if ref is None:
            return (None, lease)
        if type(ref) is not list or not ref:
            raise ValueError("malformed reference to a Condition's lock")
        return (_codec.read_ref(ref[0], ref[1:], codec), lease)

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        self._lock.release()

    @property
    def fencing_token(self) -> Optional[int]:
        """The fencing token of the calling thread's hold on the condition's
        lock (see ``Lock.fencing_token``); ``wait()`` takes the lock afresh,
        so it returns with a new one."""
        return self._lock.fencing_token

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def _cond_check(self, wid: str, mode: int) -> bool:
        return bool(self._script(*self._cond_check_call(wid, mode)))

    def _cond_check_call(self, wid: str, mode: int) -> Tuple[str, List[Any], List[Any]]:
        """Whether ``wid`` was notified; mode 1 refreshes its registration,
        2 drops it."""
        return _COND_CHECK_LUA, self._keys, [wid, mode, _waiters.REGISTRATION_TTL_MS,
                                             self._wake_prefix]

    def _cond_register_call(self, wid: str) -> Tuple[str, List[Any], List[Any]]:
        return _COND_REGISTER_LUA, self._keys, [wid, _waiters.REGISTRATION_TTL_MS]

    def _cond_steps(self, wid: str, deadline: Deadline) -> Any:
        """A registered wait's steps until notified or timed out:
        ``(TRY, mode)`` (its reply: whether notified) and ``(BLOCK, wake
        key, seconds)`` (its reply: BLPOP's); it returns whether notified."""
        wake = self._wake_prefix + wid
        while True:
            left = deadline.remaining()
            if left is not None and left <= 0:
                return bool((yield (_waiters.TRY, 2)))
            chunk = _waiters.WAIT_CHUNK if left is None else min(_waiters.WAIT_CHUNK, left)
            if (yield (_waiters.BLOCK, wake, chunk)) is not None:
                return True
            if (yield (_waiters.TRY, 1)):
                return True

    def _unowned(self, exc: BaseException) -> BaseException:
        """What a wait on a lock the caller does not hold raises."""
        if isinstance(exc, LeaseLostError):
            return exc
        return RuntimeError("cannot wait on un-acquired lock")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Release the lock, wait until notified or ``timeout`` seconds pass,
        take the lock back; return False on timeout."""
        deadline = Deadline(True, timeout)
        wid = secrets.token_hex(8)
        self._script(*self._cond_register_call(wid))
        try:
            depth = self._lock._release_save()
        except (LeaseLostError, LockNotOwnedError, ValueError) as exc:
            self._cond_check(wid, 2)
            raise self._unowned(exc) from None
        try:
            return _waiters.run_steps(self._cond_steps(wid, deadline), {
                _waiters.TRY: lambda mode: self._cond_check(wid, mode),
                _waiters.BLOCK: self._blpop})
        finally:
            self._lock._acquire_restore(depth)

    async def wait_async(self, timeout: Optional[float] = None) -> bool:
        """Awaitable ``wait()``: release the lock (taken with
        ``acquire_async`` or ``async with``), wait without blocking the event
        loop until notified or ``timeout`` seconds pass (never earlier), take
        the lock back; False on timeout.  The lock is taken back even when
        the wait is cancelled (as asyncio.Condition does), then the
        CancelledError goes on; a notification the cancelled wait had
        received is passed on (``notify(1)`` once it holds the lock again,
        as asyncio.Condition does from Python 3.13), so a cancellation
        never swallows a notify (the next waiter may wake spuriously)."""
        import asyncio

        from . import _aio

        deadline = Deadline(True, timeout)
        wid = secrets.token_hex(8)
        lock = self._lock
        with _aio.watch(self):
            aclient = _aio.client(self._conn)
            await self._script_async(*self._cond_register_call(wid))
            try:
                token, depth = await lock._release_async(True)
            except (LeaseLostError, LockNotOwnedError, ValueError) as exc:
                await self._script_async(*self._cond_check_call(wid, 2))
                raise self._unowned(exc) from None
            notified = was_cancelled = False
            try:
                steps = self._cond_steps(wid, deadline)
                reply = None
                while True:
                    step = steps.send(reply)
                    if step[0] is _waiters.TRY:
                        reply = await self._script_async(*self._cond_check_call(wid, step[1]))
                    else:
                        reply = await _aio.bounded(self._conn, aclient.blpop(
                            [step[1]], _waiters.server_seconds(step[2])), step[2])
            except StopIteration as stop:
                notified = bool(stop.value)
                return stop.value
            except asyncio.CancelledError:
                was_cancelled = True
                # Unregistered; 1 if a notify had taken the registration.
                reply, _, _ = await _aio.settle(
                    self._script_async(*self._cond_check_call(wid, 2)))
                notified = bool(reply)
                raise
            finally:
                _, exc, cancelled = await _aio.settle(
                    lock._acquire_count_async(token, depth, None))
                if exc is not None:
                    raise exc
                if notified and (was_cancelled or cancelled):
                    # The notification goes to the next waiter, under the lock.
                    await _aio.settle(self._script_async(*self._notify_call(1)))
                if cancelled:
                    raise asyncio.CancelledError

    def wait_for(self, predicate: Any, timeout: Optional[float] = None) -> Any:
        """Wait until ``predicate()`` is true, or ``timeout`` seconds pass;
        return the predicate's last value."""
        return wait_for(self.wait, predicate, timeout)

    async def wait_for_async(self, predicate: Any, timeout: Optional[float] = None) -> Any:
        """Awaitable ``wait_for()``: ``wait_async`` until ``predicate()`` is
        true, or ``timeout`` seconds pass; the predicate's last value."""
        return await wait_for_async(self.wait_async, predicate, timeout)

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """Await the condition's lock, as its ``acquire_async`` does."""
        return await self._lock.acquire_async(timeout)

    async def __aenter__(self) -> bool:
        return await self._lock.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        await self._lock._release_async(False)

    def _check_owned(self, what: str) -> None:
        lock = self._lock
        if lock._is_owned():
            return
        if claims_lock(lock._keys[0], lock._token()):
            raise lease_lost_error(lock, what)
        raise RuntimeError("cannot notify on un-acquired lock")

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` of the processes and threads waiting."""
        self._check_owned("notify()")
        self._script(*self._notify_call(operator.index(n)))

    def notify_all(self) -> None:
        """Wake every process and thread waiting."""
        self._check_owned("notify_all()")
        self._script(*self._notify_call(-1))

    def _notify_call(self, n: int) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments that wake ``n`` waiters (-1: all)."""
        return _COND_NOTIFY_LUA, self._keys, [self._wake_prefix, n]

    def statistics(self) -> Dict[str, Any]:
        stats = self._lock.statistics()
        stats["condition_waiters"] = int(self._command("ZCARD", self._keys[0]))
        return stats

    def close(self) -> None:
        super().close()
        if self._given_lock is None:
            self._lock.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.Condition {self._where()} closed>"
        lock = "own RLock" if self._given_lock is None else repr(self._lock)
        return f"<interproc.redis.Condition {self._where()} lock={lock}>"


# ------------------------------------------------------------------ barrier

_BARRIER_LUA = """
local function break_barrier(bar, out, z, e, p, g)
  redis.call('HSET', bar, 'b', '1')
  redis.call('HSET', out, g, 'broken')
  w_wake(z, e, p, -1)
end
"""

# Arrival.  Returns {index, generation}; index -1: broken, -2: the previous
# round is still finishing (wait for the next generation, then arrive again).
_ARRIVE_LUA = lua(_BARRIER_LUA + WAIT_QUIETLY + """
local bar, out, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local parties, wid, mode, ttl, p = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local g = redis.call('HGET', bar, 'g') or '0'
if redis.call('HGET', bar, 'b') == '1' then
  w_done(z, e, p, wid)
  return {-1, g}
end
local c = tonumber(redis.call('HGET', bar, 'c') or '0')
if c >= parties then
  w_fail(z, e, p, wid, mode, ttl)
  return {-2, g}
end
c = c + 1
redis.call('HSET', bar, 'c', c)
-- The last party stays registered while it runs the action (ARGV[6]), its
-- process renewing that: if it dies there, the others see its registration
-- expire and break the barrier, as they do for a dead waiter.
if c < parties or ARGV[6] == '1' then w_add(z, e, wid, ttl) else w_done(z, e, p, wid) end
return {c - 1, g}
""")

# A waiter's check: 1 passed, -1 broken, 0 keep waiting (mode 1) - or, when
# giving up (mode 2), break the barrier.  A waiter whose registration expired
# (it died) breaks it too.
_BARRIER_CHECK_LUA = lua(_BARRIER_LUA + NO_WAIT + """
local bar, out, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mine, wid, mode, ttl, p = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local g = redis.call('HGET', bar, 'g') or '0'
if g ~= mine then
  w_done(z, e, p, wid)
  if redis.call('HGET', out, mine) == 'ok' then return 1 end
  return -1
end
if redis.call('HGET', bar, 'b') == '1' then
  w_done(z, e, p, wid)
  return -1
end
local now = w_now(e)
local dead = false
local all = redis.call('HGETALL', e)
for i = 1, #all, 2 do
  if not w_meta(all[i]) and all[i] ~= wid and (tonumber(all[i + 1]) or 0) < now then dead = true end
end
if dead or mode == 2 then
  w_done(z, e, p, wid)
  break_barrier(bar, out, z, e, p, g)
  return -1
end
w_add(z, e, wid, ttl)
return 0
""")

# ARGV: the generation, the wake prefix, the action runner's waiter id.
_BARRIER_RELEASE_LUA = lua(_BARRIER_LUA + WAIT_QUIETLY + """
local bar, out, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
w_done(z, e, ARGV[2], ARGV[3])
local g = redis.call('HGET', bar, 'g') or '0'
if g ~= ARGV[1] or redis.call('HGET', bar, 'b') == '1' then return -1 end
redis.call('HSET', out, g, 'ok')
redis.call('HDEL', out, tostring(tonumber(g) - 64))
redis.call('HSET', bar, 'g', tonumber(g) + 1, 'c', 0)
w_wake(z, e, ARGV[2], -1)
return 1
""")

# ARGV: the wake prefix, and the action runner's waiter id when its action failed.
_BARRIER_ABORT_LUA = lua(_BARRIER_LUA + WAIT_QUIETLY + """
w_done(KEYS[3], KEYS[4], ARGV[1], ARGV[2] or '')
local g = redis.call('HGET', KEYS[1], 'g') or '0'
break_barrier(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], g)
return 1
""")

# The action runner's renewal: refreshes its registration while its round
# is still on (ARGV: generation, waiter id, registration ttl).
_BARRIER_KEEP_LUA = lua(NO_WAIT + """
local bar, z, e = KEYS[1], KEYS[3], KEYS[4]
if (redis.call('HGET', bar, 'g') or '0') ~= ARGV[1] or redis.call('HGET', bar, 'b') == '1'
    or not redis.call('ZSCORE', z, ARGV[2]) then
  return 0
end
w_add(z, e, ARGV[2], tonumber(ARGV[3]))
return 1
""")

_BARRIER_RESET_LUA = lua(_BARRIER_LUA + """
local bar, out, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local g = redis.call('HGET', bar, 'g') or '0'
if redis.call('HGET', bar, 'b') ~= '1' then
  if tonumber(redis.call('HGET', bar, 'c') or '0') > 0 then
    redis.call('HSET', out, g, 'broken')
  end
end
redis.call('HDEL', out, tostring(tonumber(g) - 64))
redis.call('HSET', bar, 'g', tonumber(g) + 1, 'c', 0, 'b', '0')
w_wake(z, e, ARGV[1], -1)
return 1
""")

_BARRIER_STATE_LUA = lua(NO_WAIT + """
local s = redis.call('HMGET', KEYS[1], 'c', 'b')
return {s[1] or '0', s[2] or '0', w_count(KEYS[4])}
""")


# The actions of the Barriers this process opened with one, by object id: a
# reference read from Redis may name an action only by pointing at one of
# these, unless its payload was signed (see _barrier_state_from_ref).
_actions_opened_here: Dict[str, Any] = {}


def _action_name(action: Any) -> Optional[str]:
    module, qualname = getattr(action, "__module__", None), getattr(action, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _barrier_state_from_ref(state: Any, codec: Any) -> Any:
    """A Barrier's (action, timeout) from a reference read from Redis.

    The action travels as ``"module:qualname"``.  Importing a module and
    calling what a stored name says is running code chosen by whoever can
    write to Redis, so the name is imported only from a payload signed
    with the authkey under pickle (its writer holds the key and could make
    the reader unpickle anything anyway).  Otherwise -- json, msgpack, or
    pickle without an authkey -- the name is only compared with the action
    of a Barrier this process opened itself on the same object: a match
    gives that action, anything else raises CorruptDataError, so a Barrier
    never silently loses its action either.
    """
    if type(state) is not list or len(state) != 2:
        raise CorruptDataError("a reference to a Barrier has malformed state")
    name, timeout = state
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        raise CorruptDataError(f"a reference to a Barrier has a bad timeout: {timeout!r}")
    if name is None:
        return (None, timeout)
    if type(name) is not str or name.count(":") != 1:
        raise CorruptDataError("a reference to a Barrier has a malformed action name")
    module, qualname = name.split(":")
    parts = qualname.split(".")
    if not all(p.isidentifier() for p in module.split(".")) \
            or not all(p.isidentifier() for p in parts):
        raise CorruptDataError("a reference to a Barrier has a malformed action name")
    if codec.serializer == "pickle" and codec.authkey is not None:
        import importlib
        try:
            action: Any = importlib.import_module(module)
            for attr in parts:
                action = getattr(action, attr)
        except (ImportError, AttributeError) as exc:
            raise CorruptDataError(f"a Barrier's action {name!r} cannot be found here: "
                                   f"{exc}") from None
        if not callable(action):
            raise CorruptDataError(f"a Barrier's action {name!r} is not callable")
        return (action, timeout)
    return (_ActionName(name), timeout)


class _ActionName(str):
    """An action name read from unsigned data, resolved by ``Barrier._setup``
    against the actions opened here (the object id is known only there)."""

    def resolve(self, ident: str) -> Any:
        action = _actions_opened_here.get(ident)
        if action is not None and _action_name(action) == self:
            return action
        raise CorruptDataError(
            f"a reference to the Barrier {ident!r} names its action {str(self)!r}, which this "
            "process does not import from unsigned or plain data: open the Barrier with its "
            "action in this process first (Barrier(parties, action, name=...)), or use "
            "serializer='pickle' with an authkey"
        )


#: The steps of a Barrier's passage besides BLOCK (``Barrier._barrier_steps``).
_SCRIPT, _ACTION = "script", "action"


class _Passage:
    """How far one passage through a Barrier got."""

    __slots__ = ("wid", "gen", "last", "releasing")

    def __init__(self) -> None:
        self.wid = secrets.token_hex(8)
        self.gen: Optional[str] = None  # the round it arrived in
        self.last = False  # the last party of its round
        self.releasing = False  # the round's release was sent


@register
class Barrier(WaitingObject):
    """A barrier in Redis: ``multiprocessing.Barrier``.

    ``Barrier(conn, parties, action=None, timeout=None, *, name=None,
    create=None, codec=None)``.  ``wait(timeout=None)`` returns the arrival
    index; the last to arrive runs ``action`` first.  A wait that times out,
    ``abort()``, a failing action, or a waiting process that dies (noticed
    once its registration expires, within about
    ``3 * WAIT_CHUNK`` seconds) breaks the barrier: waiters get
    ``threading.BrokenBarrierError`` until ``reset()``.  The party running
    ``action`` stays registered while it does (its process's lease renewer
    refreshes that), so its death breaks the barrier the same way.
    Registrations expire on the registry's clock, which a stalled server
    advances by one step only (``_waiters``): a stall breaks nothing.
    """

    _KIND = "Barrier"
    _PARTS = ("bar", "out")
    _REGISTRIES = {"w": "wk:"}
    _action: Any = None
    _timeout: Optional[float] = None

    def __init__(self, conn: Any, parties: int, action: Any = None, timeout: Optional[float] = None,
                 *, name: Optional[str] = None, create: Optional[bool] = None,
                 codec: Any = None) -> None:
        parties = operator.index(parties)
        if parties < 1:
            raise ValueError(f"parties must be at least 1, not {parties}")
        if action is not None and not callable(action):
            raise TypeError("action must be callable")
        self._action = action
        self._timeout = timeout
        self._open(conn, name, create, codec, {"parties": parties})

    def _setup(self) -> None:
        if isinstance(self._action, _ActionName):
            self._action = self._action.resolve(self._ident)
        elif self._action is not None:
            _actions_opened_here[self._ident] = self._action
        self._parties = int(self._opts["parties"])
        self._keys = [self._key("bar"), self._key("out"), self._key("w"), self._key("w.e")]
        self._wake_prefix = self._key("wk:")

    def _handle_state(self) -> Any:
        return (self._action, self._timeout)

    def _set_handle_state(self, state: Any) -> None:
        self._action, self._timeout = state

    def _ref_state(self) -> Any:
        # A reference holds plain data: the action travels by its name.
        action = self._action
        if action is None:
            return [None, self._timeout]
        module, qualname = getattr(action, "__module__", None), getattr(action, "__qualname__", "")
        if not module or "<" in qualname:
            raise TypeError(f"a Barrier's action must be importable by name to travel by "
                            f"reference, not {action!r}")
        return [f"{module}:{qualname}", self._timeout]

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        return _barrier_state_from_ref(state, codec)

    @property
    def parties(self) -> int:
        return self._parties

    def _state(self) -> Tuple[int, bool, int]:
        c, b, w = self._script(_BARRIER_STATE_LUA, self._keys, [])
        return int(c), b == b"1", int(w)

    @property
    def n_waiting(self) -> int:
        c, broken, _ = self._state()
        return 0 if broken else min(c, self._parties)

    @property
    def broken(self) -> bool:
        return self._state()[1]

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for all parties; return this one's arrival index."""
        return _waiters.run_steps(self._barrier_steps(self._deadline(timeout), _Passage()), {
            _SCRIPT: self._script, _waiters.BLOCK: self._blpop, _ACTION: self._run_action_or_abort})

    def _deadline(self, timeout: Optional[float]) -> Deadline:
        return Deadline(True, self._timeout if timeout is None else timeout)

    def _barrier_steps(self, deadline: Deadline, p: "_Passage") -> Any:
        """One passage's steps, for ``wait`` and ``wait_async``: ``(_SCRIPT,
        source, keys, args)`` (its reply), ``(BLOCK, wake key, seconds)`` and
        ``(_ACTION, gen, wid)``; it returns the arrival index.  ``p`` keeps
        how far it got, for a cancelled ``wait_async`` to clean up."""
        ttl = _waiters.REGISTRATION_TTL_MS
        wid = p.wid
        wake = self._wake_prefix + wid
        limit = _waiters.WAIT_CHUNK

        def chunk() -> Optional[float]:
            left = deadline.remaining()
            return limit if left is None else min(limit, left)

        # Arrive; while the previous round is still finishing (its last
        # party running the action), wait for it to end.
        while True:
            index, gen = yield (_SCRIPT, _ARRIVE_LUA, self._keys, [
                self._parties, wid, 1, ttl, self._wake_prefix,
                "0" if self._action is None else "1"])
            index, gen = int(index), gen.decode() if isinstance(gen, bytes) else str(gen)
            if index == -1:
                raise BrokenBarrierError
            if index >= 0:
                break
            wait = chunk()
            if wait <= 0:
                # A wait that times out breaks the barrier, as in threading.
                yield (_SCRIPT, _BARRIER_CHECK_LUA, self._keys, [gen, wid, 2, ttl, self._wake_prefix])
                raise BrokenBarrierError
            yield (_waiters.BLOCK, wake, wait)
        p.gen, p.last = gen, index + 1 == self._parties
        if p.last:
            runner = ""
            if self._action is not None:
                runner = wid
                yield (_ACTION, gen, wid)
            p.releasing = True
            if int((yield (_SCRIPT, _BARRIER_RELEASE_LUA, self._keys,
                           [gen, self._wake_prefix, runner]))) < 0:
                raise BrokenBarrierError
            return index
        while True:
            wait = chunk()
            if wait <= 0:
                mode = 2
            else:
                yield (_waiters.BLOCK, wake, wait)
                mode = 1
            res = int((yield (_SCRIPT, _BARRIER_CHECK_LUA, self._keys,
                              [gen, wid, mode, ttl, self._wake_prefix])))
            if res == 1:
                return index
            if res == -1:
                raise BrokenBarrierError

    def _run_action_or_abort(self, gen: str, wid: str) -> None:
        """Run the action; if it fails, break the barrier for the others."""
        try:
            self._run_action(gen, wid)
        except BaseException:
            self._script(*self._abort_call(wid))
            raise

    def _abort_call(self, wid: str) -> Tuple[str, List[Any], List[Any]]:
        return _BARRIER_ABORT_LUA, self._keys, [self._wake_prefix, wid]

    async def wait_async(self, timeout: Optional[float] = None) -> int:
        """Awaitable ``wait()``: wait without blocking the event loop for all
        parties; this one's arrival index.  BrokenBarrierError as ``wait()``
        (a timeout breaks the barrier).  The action, if any, runs in the
        loop's thread in the last party to arrive.  Cancelled, the wait
        breaks the barrier for the others of its round, as a timeout
        does, unless the round had passed already."""
        import asyncio

        from . import _aio

        p = _Passage()
        deadline = self._deadline(timeout)
        with _aio.watch(self):
            aclient = _aio.client(self._conn)
            steps = self._barrier_steps(deadline, p)
            reply = None
            try:
                while True:
                    step = steps.send(reply)
                    if step[0] is _SCRIPT:
                        reply, exc, cancelled = await _aio.settle(
                            self._script_async(*step[1:], seconds=deadline.remaining()))
                        if exc is None and step[1] is _ARRIVE_LUA and int(reply[0]) >= 0:
                            p.gen = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
                            p.last = int(reply[0]) + 1 == self._parties
                        if cancelled:
                            raise asyncio.CancelledError
                        if exc is not None:
                            raise exc
                    elif step[0] is _waiters.BLOCK:
                        reply = await _aio.bounded(self._conn, aclient.blpop(
                            [step[1]], _waiters.server_seconds(step[2])), step[2], False)
                    else:
                        reply = None
                        try:
                            self._run_action(*step[1:])
                        except BaseException:
                            await _aio.settle(self._script_async(*self._abort_call(p.wid)))
                            raise
            except StopIteration as stop:
                return stop.value
            except asyncio.CancelledError:
                if p.gen is not None and not p.releasing:
                    # Arrived, the round not passed: break it, as a timeout would.
                    await _aio.settle(self._script_async(*self._abort_call(p.wid)) if p.last else
                                      self._script_async(_BARRIER_CHECK_LUA, self._keys, [
                                          p.gen, p.wid, 2, _waiters.REGISTRATION_TTL_MS,
                                          self._wake_prefix]))
                raise

    def _run_action(self, gen: str, wid: str) -> None:
        """Run the action while this process's lease renewer refreshes the
        registration the arrival made for it: the other parties tell a
        long action from a dead runner by it."""
        ttl = _waiters.REGISTRATION_TTL_MS
        conn, keys = self._conn, self._keys

        def keep() -> bool:
            return bool(conn.script(_BARRIER_KEEP_LUA)(keys=keys, args=[gen, wid, ttl]))

        key = self._keys[3]
        _renewer.add(conn, key, wid, ttl / 1000.0, 0, renew=keep)
        try:
            self._action()
        finally:
            _renewer.remove(key, wid)

    def abort(self) -> None:
        """Break the barrier: every wait, now and later, raises
        BrokenBarrierError until reset()."""
        self._script(_BARRIER_ABORT_LUA, self._keys, [self._wake_prefix, ""])

    def reset(self) -> None:
        """Back to the empty state; processes waiting now get BrokenBarrierError."""
        self._script(_BARRIER_RESET_LUA, self._keys, [self._wake_prefix])

    def statistics(self) -> Dict[str, Any]:
        c, broken, w = self._state()
        return {"parties": self._parties, "n_waiting": 0 if broken else min(c, self._parties),
                "broken": broken, "waiters": w}

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.Barrier {self._where()} closed>"
        c, broken, _ = self._state()
        return (f"<interproc.redis.Barrier {self._where()} waiters={c}/{self._parties}"
                f"{' broken' if broken else ''}>")
