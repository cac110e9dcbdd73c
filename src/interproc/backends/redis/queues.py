"""Queue, JoinableQueue and SimpleQueue on Redis.

The API, exceptions and behaviour of interproc's shared-memory queues
(docs/api.md), for processes on several machines.  Keys of a queue whose
keys start with ``ip:{name}:``:

- ``items``: the list of serialized items (``RPUSH`` to put, pop on the left);
- ``tasks``: unfinished tasks of a JoinableQueue (put adds, task_done subtracts);
- ``pw``/``pw.e`` and ``pwk:<id>``: producers waiting for room in a bounded
  queue, woken by the consumer that takes items (see ``_waiters``);
- ``jw``/``jw.e`` and ``jwk:<id>``: processes waiting in ``join()``;
- ``proc:<id>``: each consumer's processing list, listed in the set ``procs``.

A ``get`` first takes without waiting, in one Lua script (delete the
processing list, ``LMOVE items -> proc:<id>``, set its expiry); only when
the queue is empty does it wait in Redis: ``BLMOVE items -> proc:<id>`` with
the remaining timeout.  The item stays in the consumer's processing list until
that consumer's next call, which deletes it in the same round trip as it
takes the next one.  If the connection breaks while a take is in flight the
caller gets the error and the processing list is moved back to the head of
the queue (at once, and again before the next take), so an item is never
lost between Redis and the caller: it is either returned or back in the
queue.  (An item the server handed over whose reply never arrived may thus
be delivered again, to the next consumer: at-least-once across connection
failures, exactly-once otherwise.)  Processing lists expire after an hour of
disuse, so an item whose recovery failed for longer than that is lost.

- **Timeout**: ``get`` raises queue.Empty and ``put`` on a full bounded
  queue queue.Full when the timeout passes (``put_many``'s Full says in
  ``.count`` how many went in).  A waiting ``get`` is one ``BLMOVE`` of at
  most ``GET_CHUNK`` seconds after another, so items arrive at once.
- **Peer death**: a consumer that dies holds nothing back but what it took:
  items returned to it were its own (as with multiprocessing), and one the
  server moved to its processing list while it died is lost with it when
  that list expires.
  A producer waiting for room that dies is skipped by wake-ups once its
  registration expires (``_waiters``).  Unfinished tasks of a
  JoinableQueue are counted in Redis, so ``join()`` waits for the
  ``task_done()`` of whoever takes over.
- **Lost connection**: see above; ``put`` raises ConnectionLostError and the
  item may or may not be in the queue (it is never pushed twice).
- **Close**: ``close()`` ends this handle only; ``put``/``get`` then raise
  ValueError; the queue and other handles are unaffected.
"""
from __future__ import annotations

import operator
import os
import queue as _queue
import secrets
import threading
from typing import Any, Iterable, List, Optional, Tuple

from . import _waiters
from . import client as _client
from ._base import call, register
from ._waiters import Deadline, WaitingObject, lua

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "Full", "Empty"]

Full = _queue.Full
Empty = _queue.Empty

#: Longest single BLMOVE of a waiting get, in seconds (at most
#: client.MAX_BLOCK).  Items arrive at once; this only bounds how long one
#: command stays on the server.
GET_CHUNK = 10.0
#: A consumer's processing list expires this long after its last take.
PROC_TTL_MS = 3_600_000

# KEYS items, tasks, z, e.  ARGV maxsize, joinable, wid, mode, ttl, prefix,
# payloads...  Appends as many payloads as fit; returns how many.
_PUT_LUA = lua("""
local items, tasks, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local maxsize, wid, mode, p = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4]), ARGV[6]
local n = #ARGV - 6
local room = n
if maxsize > 0 then
  room = math.max(math.min(n, maxsize - redis.call('LLEN', items)), 0)
end
for i = 7, 6 + room, 1000 do
  redis.call('RPUSH', items, unpack(ARGV, i, math.min(i + 999, 6 + room)))
end
if room > 0 and ARGV[2] == '1' then redis.call('INCRBY', tasks, room) end
if room == n then w_done(z, e, p, wid) else w_fail(z, e, p, wid, mode, tonumber(ARGV[5])) end
return room
""")

# An unbounded JoinableQueue's put: it never waits, so there is no waiter
# to register, forget or wake.  KEYS items, tasks.  ARGV payloads.
_PUT_UNBOUNDED_LUA = """
for i = 1, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return redis.call('INCRBY', KEYS[2], #ARGV)
"""

# After a take moved one item into the processing list: take up to
# ARGV[1] more, wake as many waiting producers (bounded queue), return the
# processing list.  KEYS items, proc, z, e.
_TAKE_MORE_LUA = lua("""
local items, proc, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('LLEN', proc) == 0 then return {} end
local more = tonumber(ARGV[1])
if more > 0 then
  local extra = redis.call('LPOP', items, more)
  if extra then
    for i = 1, #extra, 1000 do
      redis.call('RPUSH', proc, unpack(extra, i, math.min(i + 999, #extra)))
    end
  end
end
redis.call('PEXPIRE', proc, ARGV[4])
local all = redis.call('LRANGE', proc, 0, -1)
if tonumber(ARGV[2]) > 0 then w_wake(z, e, ARGV[3], #all) end
return all
""")

# A take that does not wait: delete the processing list (what it held was
# delivered by the previous call), move the first item into it, and return
# that item, or nil when the queue is empty.  KEYS items, proc.  ARGV ttl.
_TAKE_ONE_LUA = """
redis.call('DEL', KEYS[2])
local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if item then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return item
"""

# The same for up to ARGV[1] items, waking as many waiting producers of a
# bounded queue (ARGV[2] > 0).  KEYS items, proc, z, e.  ARGV count,
# maxsize, prefix, ttl.  Returns the items taken (none: the queue is empty).
_TAKE_NOW_LUA = lua("""
local items, proc, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
redis.call('DEL', proc)
local all = redis.call('LPOP', items, tonumber(ARGV[1]))
if not all then return {} end
for i = 1, #all, 1000 do
  redis.call('RPUSH', proc, unpack(all, i, math.min(i + 999, #all)))
end
redis.call('PEXPIRE', proc, ARGV[4])
if tonumber(ARGV[2]) > 0 then w_wake(z, e, ARGV[3], #all) end
return all
""")

# Puts a consumer's processing list back at the head of the queue, in order.
_RECOVER_LUA = """
local all = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #all, 1, -1 do redis.call('LPUSH', KEYS[2], all[i]) end
redis.call('DEL', KEYS[1])
return #all
"""

# Registers a consumer's processing list, and forgets up to ten that have
# expired, so the set follows the live consumers.
_REGISTER_CONSUMER_LUA = """
for _, k in ipairs(redis.call('SRANDMEMBER', KEYS[1], 10)) do
  if redis.call('EXISTS', k) == 0 then redis.call('SREM', KEYS[1], k) end
end
redis.call('SADD', KEYS[1], KEYS[2])
return 1
"""

_TASK_DONE_LUA = lua("""
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
left = redis.call('DECR', KEYS[1])
if left <= 0 then w_wake(KEYS[2], KEYS[3], ARGV[1], -1) end
return left
""")

_JOIN_LUA = lua("""
local z, e, wid, mode, p = KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]), ARGV[4]
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then
  w_done(z, e, p, wid)
  return 1
end
w_fail(z, e, p, wid, mode, tonumber(ARGV[3]))
return 0
""")

_DESTROY_PROCS_LUA = """
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('DEL', k) end
return n + redis.call('DEL', KEYS[1])
"""


class _Consumer:
    """What one thread of one process needs to take items."""

    __slots__ = ("pid", "proc", "registered", "recover")

    def __init__(self, proc: str) -> None:
        self.pid = os.getpid()
        self.proc = proc
        self.registered = False
        self.recover = False


class _QueueBase(WaitingObject):
    _KIND = "Queue"
    _JOINABLE = False
    _PARTS = ("items", "tasks")
    _REGISTRIES = {"pw": "pwk:", "jw": "jwk:"}

    def __init__(self, conn: Any, maxsize: int = 0, *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None) -> None:
        maxsize = operator.index(maxsize)  # TypeError for a non-integer
        # As in multiprocessing, maxsize <= 0 means unbounded.
        self._open(conn, name, create, codec, {"maxsize": max(maxsize, 0)})

    def _setup(self) -> None:
        self._maxsize = int(self._opts["maxsize"])
        self._items = self._key("items")
        self._tasks = self._key("tasks")
        self._procs = self._key("procs")
        self._pw = [self._key("pw"), self._key("pw.e")]
        self._pw_prefix = self._key("pwk:")
        self._jw = [self._key("jw"), self._key("jw.e")]
        self._jw_prefix = self._key("jwk:")
        self._local = threading.local()
        self._pending: List[bytes] = []

    @property
    def maxsize(self) -> int:
        """The item limit (0: unbounded)."""
        return self._maxsize

    @property
    def capacity_bytes(self) -> None:
        """None: a Redis queue has no ring to size."""
        return None

    # ------------------------------------------------------------ put

    def _put_payloads(self, payloads: List[bytes], block: bool, timeout: Any, batch: bool) -> None:
        self._check()
        if not payloads:
            return
        if self._maxsize == 0:
            # Unbounded: one round trip, and no waiter id (block and timeout
            # cannot matter).
            if self._JOINABLE:
                self._script(_PUT_UNBOUNDED_LUA, [self._items, self._tasks], payloads)
            else:
                self._call(self._client.rpush, self._items, *payloads)
            return
        keys = [self._items, self._tasks] + self._pw
        done = [0]

        def attempt(wid: str, mode: int) -> Tuple[bool, Any, Optional[float]]:
            n = self._script(_PUT_LUA, keys, [
                self._maxsize, "1" if self._JOINABLE else "0", wid, mode,
                _waiters.REGISTRATION_TTL_MS, self._pw_prefix, *payloads[done[0]:]])
            done[0] += int(n)
            return done[0] == len(payloads), None, None

        ok, _ = self._wait(attempt, Deadline(block, timeout), "pwk:")
        if not ok:
            if batch:
                exc = Full("queue is full")
                exc.count = done[0]  # type: ignore[attr-defined]
                raise exc
            raise Full

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Serialize ``obj`` here and append it; blocks only while a bounded
        queue is full (queue.Full when it gives up)."""
        self._check()
        self._put_payloads([self._codec.dumps(obj)], block, timeout, False)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: Optional[float] = None) -> None:
        """Put every item, in order, in one round trip when they fit.  Every
        item is serialized before any is put.  If it gives up on a full
        queue, queue.Full's ``.count`` says how many leading items went in."""
        self._check()
        payloads = [self._codec.dumps(obj) for obj in items]
        self._put_payloads(payloads, block, timeout, True)

    # ------------------------------------------------------------ get

    def _consumer(self) -> _Consumer:
        c = getattr(self._local, "c", None)
        if c is None or c.pid != os.getpid():
            c = _Consumer(self._key("proc:" + secrets.token_hex(8)))
            self._local.c = c
        return c

    def _recover(self, c: _Consumer) -> None:
        call(self._conn, self._op(), self._conn.script(_RECOVER_LUA), [c.proc, self._items], [])
        c.recover = False

    def _take(self, max_items: int, deadline: Deadline) -> List[bytes]:
        c = self._consumer()
        if c.recover:
            self._recover(c)
        more = max_items - 1
        extra = more > 0 or self._maxsize > 0
        if c.registered:
            # First without waiting: one script, one round trip.  Only an
            # empty queue makes the blocking take below necessary.
            try:
                if extra:
                    got = self._conn.script(_TAKE_NOW_LUA).execute(
                        self._conn.client, 4, self._items, c.proc, *self._pw,
                        max_items, self._maxsize, self._pw_prefix, PROC_TTL_MS)
                else:
                    got = self._conn.script(_TAKE_ONE_LUA).execute(
                        self._conn.client, 2, self._items, c.proc, PROC_TTL_MS)
                    got = [] if got is None else [got]
            except BaseException as exc:
                self._take_failed(c, exc)
            if got or not deadline.waits or deadline.remaining() == 0:
                return list(got)
        limit = GET_CHUNK
        while True:
            pipe = self._conn.blocking_client.pipeline(transaction=False)
            if not c.registered:
                pipe.execute_command("EVAL", _REGISTER_CONSUMER_LUA, 2, self._procs, c.proc)
            pipe.delete(c.proc)
            left = deadline.remaining()
            blocking = deadline.waits and (left is None or left > 0)
            if blocking:
                wait = limit if left is None else min(limit, left)
                pipe.blmove(self._items, c.proc, _waiters.server_seconds(wait), "LEFT", "RIGHT")
            else:
                pipe.lmove(self._items, c.proc, "LEFT", "RIGHT")
            if extra:
                pipe.execute_command("EVAL", _TAKE_MORE_LUA, 4, self._items, c.proc, *self._pw,
                                     more, self._maxsize, self._pw_prefix, PROC_TTL_MS)
            else:
                pipe.pexpire(c.proc, PROC_TTL_MS)
            try:
                res = pipe.execute()
            except BaseException as exc:
                self._take_failed(c, exc)
            c.registered = True
            got = res[-1] if extra else ([res[-2]] if res[-2] is not None else [])
            if got or not blocking:
                return list(got)
            if deadline.remaining() == 0:
                return []

    def _take_failed(self, c: _Consumer, exc: BaseException) -> None:
        """Raise for a take that failed: the server may have moved items
        into our processing list before the failure, so they are put back,
        now if we can, and in any case before this consumer's next take."""
        c.recover = True
        try:
            self._recover(c)
        except BaseException:
            pass
        new = _client.translate(exc, self._conn.address, self._op())
        if new is exc:
            raise exc
        raise new from exc

    def _decode(self, raw: List[bytes], as_list: bool) -> Any:
        out = []
        for i, payload in enumerate(raw):
            try:
                obj = self._loads(payload, self._items)
            except BaseException:
                # This one is lost, as it would be in multiprocessing; the
                # ones after it wait for the next call.
                self._pending = list(raw[i + 1:]) + self._pending
                if as_list and out:
                    return out
                raise
            if not as_list:
                self._pending = list(raw[1:]) + self._pending
                return obj
            out.append(obj)
        return out

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the oldest item; queue.Empty when it gives up."""
        self._check()
        if self._pending:
            raw = [self._pending.pop(0)]
        else:
            raw = self._take(1, Deadline(block, timeout))
            if not raw:
                raise Empty
        return self._decode(raw, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def get_many(self, max_items: Optional[int] = None, block: bool = True,
                 timeout: Optional[float] = None) -> List[Any]:
        """Wait, as get() does, for at least one item, then return every item
        present, at most ``max_items``, in one round trip."""
        self._check()
        if max_items is None:
            n = 1 << 30
        else:
            n = operator.index(max_items)
            if n < 1:
                raise ValueError(f"max_items must be at least 1, not {n}")
        if self._pending:
            raw, self._pending = self._pending[:n], self._pending[n:]
        else:
            raw = self._take(n, Deadline(block, timeout))
            if not raw:
                raise Empty
        return self._decode(raw, True)

    # ------------------------------------------------------------ sizes

    def qsize(self) -> int:
        """The number of items in the queue (exact)."""
        self._check()
        return int(self._call(self._client.llen, self._items)) + len(self._pending)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    # ------------------------------------------------------------ life

    def join_thread(self) -> None:
        """Accepted for compatibility: there is no feeder thread to join."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Accepted for compatibility: there is no feeder thread."""

    def _destroy(self) -> None:
        call(self._conn, self._op(), self._conn.script(_DESTROY_PROCS_LUA), [self._procs], [])
        super()._destroy()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<interproc.redis.{type(self).__name__} {self._where()} closed>"
        return f"<interproc.redis.{type(self).__name__} {self._where()} maxsize={self._maxsize}>"


@register
class Queue(_QueueBase):
    """A FIFO queue in Redis: ``multiprocessing.Queue``'s API.

    ``Queue(conn, maxsize=0, *, name=None, create=None, codec=None)``
    """

    _KIND = "Queue"


@register
class SimpleQueue(_QueueBase):
    """``multiprocessing.SimpleQueue`` in Redis: an unbounded queue.

    ``SimpleQueue(conn, *, name=None, create=None, codec=None)``
    """

    _KIND = "SimpleQueue"

    def __init__(self, conn: Any, *, name: Optional[str] = None, create: Optional[bool] = None,
                 codec: Any = None) -> None:
        super().__init__(conn, 0, name=name, create=create, codec=codec)


@register
class JoinableQueue(_QueueBase):
    """``multiprocessing.JoinableQueue`` in Redis: a Queue that counts
    unfinished tasks (in Redis, so the count survives any process)."""

    _KIND = "JoinableQueue"
    _JOINABLE = True

    def task_done(self) -> None:
        """Mark one task finished.  ValueError if called more times than items were put."""
        if int(self._script(_TASK_DONE_LUA, [self._tasks] + self._jw, [self._jw_prefix])) < 0:
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        """Block until every item put so far has been marked done."""
        def attempt(wid: str, mode: int) -> Tuple[bool, Any, Optional[float]]:
            ok = self._script(_JOIN_LUA, [self._tasks] + self._jw, [
                wid, mode, _waiters.REGISTRATION_TTL_MS, self._jw_prefix])
            return bool(ok), None, None
        self._wait(attempt, Deadline(True, None), "jwk:")
