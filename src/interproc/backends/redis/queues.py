"""Queue, JoinableQueue and SimpleQueue on Redis.

The API, exceptions and behaviour of interproc's shared-memory queues
(docs/api.md), for processes on several machines.  Keys of a queue whose
keys start with ``ip:{name}:``:

- ``items``: the list of serialized items (``RPUSH`` to put, pop on the left);
- ``tasks``: unfinished tasks of a JoinableQueue (put adds, task_done subtracts);
- ``pw``/``pw.e`` and ``pwk:<id>``: producers waiting for room in a bounded
  queue, woken by the consumer that takes items (see ``_waiters``);
- ``jw``/``jw.e`` and ``jwk:<id>``: processes waiting in ``join()``;
- ``proc:<id>:0``/``proc:<id>:1``: each consumer's two processing lists,
  used by turns and listed in the set ``procs``;
- ``shut``: absent while the queue is open; ``1`` after ``shutdown()``,
  ``2`` after ``shutdown(immediate=True)``.

**Shutdown.**  The script that sets ``shut`` also appends an end marker to
``items``: an empty string, which no codec writes (every payload starts with
the codec's header byte).  Every put script refuses to append once ``shut``
is set, so the marker stays last, behind whatever is left to drain.  A
consumer that takes it puts it back in the same script, and so the one
blocked ``BLMOVE`` after another wakes, each raising ShutDown: the marker
wakes consumers that wait in Redis the way an item would.  Each take script
that finds fewer items than it wanted puts back a marker that is missing
from a shut-down queue (taken by a consumer that died before its next
command), and so does the command before each blocking move (a take that
gets all it asked for reads nothing but the items, which keeps a get on a
busy queue as cheap as it was before shutdown existed): such a death delays the consumers already
blocked by at most one ``GET_CHUNK``, and the others not at all.  An immediate shutdown deletes the
items in the same script, lowers a JoinableQueue's unfinished tasks by as
many (never below 0), and wakes every ``join()``; items that were in flight
to a consumer whose connection broke are then discarded with them instead
of going back.  Producers waiting for room are woken by every shutdown.

A ``get`` first takes without waiting, in one Lua script (delete the
previous take's processing list, ``LMOVE items -> proc:<id>:<n mod 2>``,
set its expiry); only when the queue is empty does it wait in Redis:
``BLMOVE items -> proc:<id>:<n mod 2>`` with the remaining timeout.  The
item stays in that processing list until the consumer's next take, which
deletes it in the same round trip as it takes the next one into the other
list.  If the connection breaks while a take is in flight the caller gets
the error and the list that take was filling is moved back to the head of
the queue (at once, and again before the next take), so an item is never
lost between Redis and the caller: it is either returned or back in the
queue.  The previous take's list is only deleted then: what it holds was
delivered, even when the failed take never reached the server to delete
it.  (An item the server handed over whose reply never arrived may thus
be delivered again, to the next consumer: at-least-once across connection
failures, exactly-once otherwise.)  Processing lists expire after an hour of
disuse (an anonymous queue's that expires with its manager, after its
``orphan_ttl``), so an item whose recovery failed for longer than that is
lost.

- **Timeout**: ``get`` raises queue.Empty and ``put`` on a full bounded
  queue queue.Full when the timeout passes (``put_many``'s Full says in
  ``.count`` how many went in).  A waiting ``get`` is one ``BLMOVE`` of at
  most ``GET_CHUNK`` seconds after another, so items arrive at once.  A
  ``get`` with a timeout awaits each reply for at most its remaining time
  plus ``client.BLOCK_MARGIN`` (``Connection.bounded``): a server that does
  not answer by then (stalled, or gone without closing the connection)
  raises ServerTimeoutError, not Empty, since it may have moved an item
  for this consumer; the next take of any thread of the handle puts such
  an item back.  The last ``SERVER_TIMER_SLACK`` of a wait is slept here
  rather than in the server, which ends a ``BLMOVE`` on its timer.
- **Stale takes**: a take given up on may still run on the server later
  (a stalled server resumes).  The recovery of a failed take therefore
  also sets the consumer's ``void`` key and the thread takes into two new
  lists; every take script checks ``void`` first, so a late take of the
  old lists moves nothing, or puts back what its ``BLMOVE`` moved.
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
- **Replicas** (``replicas=N``, ``client.py``): ``put``, ``task_done`` and
  ``shutdown`` raise ReplicationError when fewer than N replicas
  acknowledged in time (what they did stays done); a put that added
  nothing (a full queue's wait, a shut-down queue) does not.  A take waits
  for them too but never raises: the item has left the master, and
  raising would lose it for the caller.  A take that a failover loses
  makes its items deliverable again: duplicates, never a loss.
- **Close**: ``close()`` ends this handle only; ``put``/``get`` then raise
  ValueError; the queue and other handles are unaffected.
"""
from __future__ import annotations

import operator
import os
import queue as _queue
import secrets
import threading
import time
from typing import Any, Generator, Iterable, List, Optional, Tuple

from . import _waiters
from . import client as _client
from ._base import alive, call, creates, is_gone, register
from .client import ACKS_QUIET, NO_WAIT, WAIT_QUIETLY
from .errors import ReplicationError
from ._waiters import Deadline, WaitingObject, lua
from .keys import object_key

from ... import _core
from ...queues import ShutDown

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "Full", "Empty", "ShutDown"]

Full = _queue.Full
Empty = _queue.Empty

#: Longest single BLMOVE of a waiting get, in seconds.  Items arrive at once; this only bounds how long one
#: command stays on the server.
GET_CHUNK = 10.0
#: The steps of a take besides SLEEP (``_QueueBase._take_steps``).
_NOW, _PIPE = "now", "pipe"
#: A waiting get's last moments are waited locally (``_waiters.SERVER_TIMER_SLACK``).
SERVER_TIMER_SLACK = _waiters.SERVER_TIMER_SLACK
#: A consumer's processing list expires this long after its last take.
PROC_TTL_MS = 3_600_000

# The payloads of a put, ARGV from `first` on.  A payload of pieces (an
# item with out-of-band buffers: Codec.dumps_message) comes as '+k' and its
# k pieces, and is joined here, so that its sender sends the buffers from
# its objects and never joins them itself (_payload_args).  '+' is never a
# payload's first byte.
_JOINED_LUA = """
local function q_joined(first)
  local out, i, last = {}, first, #ARGV
  while i <= last do
    local a = ARGV[i]
    if string.byte(a, 1) == 43 then
      local k = tonumber(string.sub(a, 2))
      out[#out + 1] = table.concat(ARGV, '', i + 1, i + k)
      i = i + 1 + k
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out
end
"""

# KEYS items, tasks, z, e, shut.  ARGV maxsize, joinable, wid, mode, ttl,
# prefix, payloads...  Appends as many payloads as fit; returns how many,
# or -1 (and unregisters the waiter) once the queue is shut down.
_PUT_LUA = lua(_JOINED_LUA + """
local items, tasks, z, e = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local maxsize, wid, mode, p = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4]), ARGV[6]
if redis.call('EXISTS', KEYS[5]) == 1 then
  w_done(z, e, p, wid)
  return -1
end
local payloads = q_joined(7)
local n = #payloads
local room = n
if maxsize > 0 then
  -- The end marker of a shut-down queue is never there: puts stop first.
  room = math.max(math.min(n, maxsize - redis.call('LLEN', items)), 0)
end
for i = 1, room, 1000 do
  redis.call('RPUSH', items, unpack(payloads, i, math.min(i + 999, room)))
end
if room > 0 and ARGV[2] == '1' then redis.call('INCRBY', tasks, room) end
if room == n then w_done(z, e, p, wid) else w_fail(z, e, p, wid, mode, tonumber(ARGV[5])) end
return room
""")

# An unbounded queue's put: it never waits, so there is no waiter to
# register, forget or wake.  KEYS items, tasks, shut.  ARGV joinable,
# payloads...  Returns how many went in, or -1 once the queue is shut down.
_PUT_UNBOUNDED_LUA = creates() + _JOINED_LUA + """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local payloads = q_joined(2)
local n, len = #payloads, 0
for i = 1, n, 1000 do
  len = redis.call('RPUSH', KEYS[1], unpack(payloads, i, math.min(i + 999, n)))
end
-- An expiring queue's items list or count made afresh gets its expiry.
if _ttl and len == n then redis.call('PEXPIRE', KEYS[1], _ttl) end
if ARGV[1] == '1' and redis.call('INCRBY', KEYS[2], n) == n and _ttl then
  redis.call('PEXPIRE', KEYS[2], _ttl)
end
return n
"""

# What every take script shares: the end marker of a shut-down queue.
_QUEUE_PRELUDE = """
-- Keeps one end marker at the tail of a shut-down queue's items; st is
-- the queue's shut key as read in this script.
local function q_settle(items, st)
  if st and redis.call('LINDEX', items, -1) ~= '' then
    redis.call('RPUSH', items, '')
  end
end
-- Whether items holds nothing but (at most) the end marker.
local function q_drained(items)
  local n = redis.call('LLEN', items)
  return n == 0 or (n == 1 and redis.call('LINDEX', items, 0) == '')
end
-- Appends the items of list `all` to res, skipping end markers (they go
-- back with q_settle; in an open queue one is forged, and dropped).
local function q_keep(res, all)
  for _, v in ipairs(all) do
    if v ~= '' then res[#res + 1] = v end
  end
end
-- res[1]: 0 while there are items to take; 1 (2) when a shut-down
-- (immediately shut-down) queue has none left for this consumer.
local function q_flag(res, st, items)
  if st and #res == 1 and (st == '2' or q_drained(items)) then
    res[1] = st == '2' and 2 or 1
  end
  return res
end
local function q_hold(proc, res, ttl)
  redis.call('DEL', proc)
  for i = 2, #res, 1000 do
    redis.call('RPUSH', proc, unpack(res, i, math.min(i + 999, #res)))
  end
  if #res > 1 then redis.call('PEXPIRE', proc, ttl) end
end
"""

# After a BLMOVE (or LMOVE) moved at most one item into the processing
# list: take up to ARGV[1] more, wake as many waiting producers (bounded
# queue), and return {flag, items...} (flag: see q_flag).  An end marker
# the move took goes back to the tail for the next waiter.  A take of a
# consumer that gave its lists up (void set: a stale command, run after its
# sender stopped waiting for it) puts back what its move took, and returns
# nothing.  KEYS items, proc, z, e, shut, void.  ARGV more, maxsize, prefix, ttl.
_TAKE_MORE_LUA = lua(_QUEUE_PRELUDE + WAIT_QUIETLY + """
local items, proc, z, e, shut = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', KEYS[6]) == 1 then
  local back = redis.call('LRANGE', proc, 0, -1)
  for i = #back, 1, -1 do
    if back[i] ~= '' then redis.call('LPUSH', items, back[i]) end
  end
  redis.call('DEL', proc)
  q_settle(items, redis.call('GET', shut))
  return {0}
end
local st = redis.call('GET', shut)
local res = {0}
q_keep(res, redis.call('LRANGE', proc, 0, -1))
local more = tonumber(ARGV[1])
-- After an immediate shutdown only what was moved before it is delivered.
if #res > 1 and more > 0 and st ~= '2' then
  local extra = redis.call('LPOP', items, more)
  if extra then q_keep(res, extra) end
end
q_hold(proc, res, ARGV[4])
q_settle(items, st)
if #res > 1 and tonumber(ARGV[2]) > 0 then w_wake(z, e, ARGV[3], #res - 1) end
return q_flag(res, st, items)
""")

# A take that does not wait: empty the previous take's processing list
# (what it held was delivered), move up to ARGV[1] items into this one's,
# wake as many waiting producers of a bounded queue (ARGV[2] > 0), and
# return {flag, items...} as above; nothing for a consumer that gave its
# lists up (void).  KEYS items, proc, z, e, shut, prev, void.  ARGV count,
# maxsize, prefix, ttl.
_TAKE_NOW_LUA = lua(_QUEUE_PRELUDE + WAIT_QUIETLY + """
local items, proc, z, e, shut = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', KEYS[7]) == 1 then return {0} end
redis.call('DEL', KEYS[6])
local want = tonumber(ARGV[1])
local res = {0}
local all = redis.call('LPOP', items, want)
if all then q_keep(res, all) end
-- As many items as asked for, none of them the end marker: whatever the
-- queue's state, the marker (if any) is still behind them, and there is
-- no flag to set, so the shut key need not be read.  Otherwise: after an
-- immediate shutdown the items are gone and the pop can only have taken
-- the marker, which q_settle puts back.
local st = nil
if #res - 1 < want then
  st = redis.call('GET', shut)
  q_settle(items, st)
end
q_hold(proc, res, ARGV[4])
if #res > 1 and tonumber(ARGV[2]) > 0 then w_wake(z, e, ARGV[3], #res - 1) end
return q_flag(res, st, items)
""")

# take_now's commonest case, a get() from an unbounded queue, in as few
# commands as it took before queues could be shut down: one item moved
# straight into the processing list.  Only when that finds no item, or the
# end marker, does it read the shut key; it then does what q_settle and
# q_flag do, written out, since defining the prelude's functions on every
# call costs a busy queue's get a few percent.  KEYS items, proc, shut,
# prev, void.  ARGV ttl.  Returns {flag, item} or {flag} as take_now does.
_TAKE_ONE_LUA = WAIT_QUIETLY + creates() + """
local items, proc = KEYS[1], KEYS[2]
if redis.call('EXISTS', KEYS[5]) == 1 then return {0} end
redis.call('DEL', KEYS[4])
local item = redis.call('LMOVE', items, proc, 'LEFT', 'RIGHT')
if item and item ~= '' then
  redis.call('PEXPIRE', proc, ARGV[1])
  return {0, item}
end
redis.call('DEL', proc)
local st = redis.call('GET', KEYS[3])
if not st then return {0} end
if redis.call('LINDEX', items, -1) ~= '' and redis.call('RPUSH', items, '') == 1 and _ttl then
  redis.call('PEXPIRE', items, _ttl)
end
if st == '2' then return {2} end
if redis.call('LLEN', items) == 1 then return {1} end
return {0}
"""

# After a failed take: puts the processing list it filled back at the head
# of the queue, in order, and empties the previous take's (delivered);
# after an immediate shutdown, discards it as the shutdown discarded the rest
# (a JoinableQueue's tasks with it, waking join()).  The consumer then gives
# its two lists up (void), and takes into new ones: a take of its that is
# still on the way, run later, moves nothing into the old ones, or puts back
# what its move took (_TAKE_MORE_LUA), where no recovery would look.  KEYS
# proc, items, shut, tasks, jw z, jw e, prev, void, procs (where void is
# listed, to be deleted with the queue).  ARGV joinable, jw prefix, ttl.
_RECOVER_LUA = lua(_QUEUE_PRELUDE + WAIT_QUIETLY + """
local proc, items, shut, tasks = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
redis.call('SET', KEYS[8], '1', 'PX', ARGV[3])
redis.call('SADD', KEYS[9], KEYS[8])
redis.call('DEL', KEYS[7])
local res = {0}
q_keep(res, redis.call('LRANGE', proc, 0, -1))
redis.call('DEL', proc)
local n = #res - 1
local st = redis.call('GET', shut)
if st == '2' then
  if ARGV[1] == '1' and n > 0 then
    local left = tonumber(redis.call('GET', tasks) or '0')
    redis.call('SET', tasks, math.max(left - n, 0))
    w_wake(KEYS[5], KEYS[6], ARGV[2], -1)
  end
else
  for i = #res, 2, -1 do redis.call('LPUSH', items, res[i]) end
end
q_settle(items, st)
return n
""")

# Sets shut (it only rises: '1' -> '2'), leaves the end marker, wakes the
# producers waiting for room; immediate ('2'): deletes the items, lowers a
# JoinableQueue's tasks by as many and wakes join().  Returns how many items
# were discarded.  KEYS items, tasks, shut, pw z, pw e, jw z, jw e.  ARGV
# immediate, joinable, pw prefix, jw prefix.
_SHUTDOWN_LUA = lua(_QUEUE_PRELUDE + """
local items, tasks, shut = KEYS[1], KEYS[2], KEYS[3]
local st = redis.call('GET', shut)
if ARGV[1] == '1' then
  redis.call('SET', shut, '2')
elseif not st then
  redis.call('SET', shut, '1')
end
st = redis.call('GET', shut)
local n = 0
if st == '2' then
  n = redis.call('LLEN', items)
  if n > 0 and redis.call('LINDEX', items, -1) == '' then n = n - 1 end
  redis.call('DEL', items)
  if ARGV[2] == '1' then
    local left = tonumber(redis.call('GET', tasks) or '0')
    if n > 0 and left > 0 then redis.call('SET', tasks, math.max(left - n, 0)) end
    w_wake(KEYS[6], KEYS[7], ARGV[4], -1)
  end
end
q_settle(items, st)
w_wake(KEYS[4], KEYS[5], ARGV[3], -1)
return n
""")

# Before a blocking move: empties the previous take's processing list (what
# it held was delivered) and this one's, and puts back a shut-down queue's
# end marker if a consumer that died took it, so that the move does not
# wait for what will never come.  KEYS items, proc, shut, prev.
_BEFORE_MOVE_LUA = _QUEUE_PRELUDE + WAIT_QUIETLY + """
redis.call('DEL', KEYS[2], KEYS[4])
q_settle(KEYS[1], redis.call('GET', KEYS[3]))
return 0
"""

# qsize: the items, less the end marker of a shut-down queue.  KEYS items.
_QSIZE_LUA = NO_WAIT + """
local n = redis.call('LLEN', KEYS[1])
if n > 0 and redis.call('LINDEX', KEYS[1], -1) == '' then n = n - 1 end
return n
"""

# Registers a consumer's two processing lists, and forgets up to ten that
# have expired, so the set follows the live consumers.
_REGISTER_CONSUMER_LUA = WAIT_QUIETLY + """
for _, k in ipairs(redis.call('SRANDMEMBER', KEYS[1], 10)) do
  if redis.call('EXISTS', k) == 0 then redis.call('SREM', KEYS[1], k) end
end
redis.call('SADD', KEYS[1], KEYS[2], KEYS[3])
return 1
"""

_TASK_DONE_LUA = lua("""
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
left = redis.call('DECR', KEYS[1])
if left <= 0 then w_wake(KEYS[2], KEYS[3], ARGV[1], -1) end
return left
""")

_JOIN_LUA = lua(NO_WAIT + """
local z, e, wid, mode, p = KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]), ARGV[4]
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then
  w_done(z, e, p, wid)
  return 1
end
w_fail(z, e, p, wid, mode, tonumber(ARGV[3]))
return 0
""")

_DESTROY_PROCS_LUA = NO_WAIT + """
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('DEL', k) end
return n + redis.call('DEL', KEYS[1])
"""


def _shut_down(count: int, batch: bool) -> None:
    exc = ShutDown("queue is shut down")
    if batch:
        exc.count = count  # type: ignore[attr-defined]
    raise exc


def _raise_error_reply(replies: List[Any]) -> None:
    """Raise the first error reply of a pipeline (``client.bounded``)."""
    for r in replies:
        if isinstance(r, Exception):
            raise r


def _payload_args(payloads: List[Any]) -> List[Any]:
    """The script arguments of ``payloads``: one of pieces as ``+k`` and
    its ``k`` pieces, for the script to join (``q_joined``).  Without
    such a payload (the usual put), ``payloads`` themselves."""
    if not any(type(p) is list for p in payloads):
        return payloads
    args: List[Any] = []
    for p in payloads:
        if type(p) is list:
            args.append(b"+%d" % len(p))
            args.extend(p)
        else:
            args.append(p)
    return args


def _got(raw: List[bytes]) -> List[bytes]:
    """A take's payloads; queue.Empty for none (its time ran out)."""
    if not raw:
        raise Empty
    return raw


def _taken(res: Any) -> List[bytes]:
    """The payloads of a take script's reply; ShutDown for its end flag."""
    if int(res[0]) and len(res) == 1:
        raise ShutDown("queue is shut down")
    return list(res[1:])


class _Put:
    """One put into a bounded queue, for ``_wait`` and ``_wait_async``: the
    attempt's script call (``build``), what its reply means
    (``interpret``), and the put's end (``outcome``)."""

    __slots__ = ("q", "payloads", "done", "shut")

    def __init__(self, q: "_QueueBase", payloads: List[bytes]) -> None:
        self.q = q
        self.payloads = payloads
        self.done = 0
        self.shut = False

    def build(self, wid: str, mode: int) -> Tuple[str, List[Any], List[Any]]:
        q = self.q
        return _PUT_LUA, [q._items, q._tasks] + q._pw + [q._shut], [
            q._maxsize, "1" if q._JOINABLE else "0", wid, mode,
            _waiters.REGISTRATION_TTL_MS, q._pw_prefix, *_payload_args(self.payloads[self.done:])]

    def interpret(self, n: Any) -> Tuple[bool, Any, Optional[float]]:
        n = int(n)
        if n < 0:
            self.shut = True
            return True, None, None
        self.done += n
        return self.done == len(self.payloads), None, None

    def outcome(self, ok: bool, batch: bool) -> None:
        """Raise ShutDown or Full as the put ended."""
        if self.shut:
            _shut_down(self.done, batch)
        if not ok:
            if batch:
                exc = Full("queue is full")
                exc.count = self.done  # type: ignore[attr-defined]
                raise exc
            raise Full


class _Consumer:
    """What one thread of one process needs to take items."""

    __slots__ = ("pid", "lists", "void", "n", "registered", "recover", "retired")

    def __init__(self, base: str) -> None:
        self.pid = os.getpid()
        # Two processing lists, used by turns: take n fills one and, first,
        # empties the other, which holds what take n - 1 delivered.  So a
        # take that fails before it reaches the server leaves the items of
        # the previous one (delivered) apart from its own (maybe moved,
        # never delivered), and recovery puts back only the latter.
        self.lists = (base + ":0", base + ":1")
        # Set by the recovery after a failed take, when this consumer gives
        # its lists up for new ones: takes of its that the server runs
        # later (stale commands from a connection given up on) see it and
        # keep nothing in these lists.
        self.void = base + ":void"
        self.n = 0
        self.registered = False
        self.recover = False
        # Its lists were given up (void set): the thread takes into new ones.
        self.retired = False

    @property
    def proc(self) -> str:
        """The list this take fills."""
        return self.lists[self.n & 1]

    @property
    def prev(self) -> str:
        """The list the previous take filled: delivered, to be emptied."""
        return self.lists[~self.n & 1]


class _QueueBase(WaitingObject):
    _KIND = "Queue"
    _JOINABLE = False
    _PARTS = ("items", "tasks", "shut")
    _REGISTRIES = {"pw": "pwk:", "jw": "jwk:"}
    # Undeclared, deleted with the queue by _DESTROY_PROCS_LUA first.
    _KEPT_PARTS = ("procs",)

    def __init__(self, conn: Any, maxsize: int = 0, *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None) -> None:
        maxsize = operator.index(maxsize)  # TypeError for a non-integer
        # As in multiprocessing, maxsize <= 0 means unbounded.
        self._open(conn, name, create, codec, {"maxsize": max(maxsize, 0)})

    def _setup(self) -> None:
        self._maxsize = int(self._opts["maxsize"])
        self._items = self._key("items")
        self._tasks = self._key("tasks")
        self._shut = self._key("shut")
        self._procs = self._key("procs")
        # An expiring queue's processing lists must not outlive it: they
        # expire as the queue does after their last take, so an item whose
        # recovery failed for that long is lost.
        self._proc_ttl = min(PROC_TTL_MS, self._tail[0]) if self._expiring else PROC_TTL_MS
        self._pw = [self._key("pw"), self._key("pw.e")]
        self._pw_prefix = self._key("pwk:")
        self._jw = [self._key("jw"), self._key("jw.e")]
        self._jw_prefix = self._key("jwk:")
        self._local = threading.local()
        self._pending: List[bytes] = []
        # Consumers (of any thread of this handle) whose failed take is not
        # recovered yet: the next take of any thread recovers them.
        self._unrecovered: List[_Consumer] = []
        self._unrecovered_lock = threading.Lock()
        # Consumers of the awaitable takes that no take is using (one per
        # take in progress: a loop's tasks take concurrently).
        self._aio_idle: List[_Consumer] = []

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
            if self._count(*self._put_unbounded_call(payloads)) < 0:
                _shut_down(0, batch)
            return
        put = _Put(self, payloads)
        ok, _ = self._wait(lambda wid, mode: put.interpret(self._count(*put.build(wid, mode))),
                           Deadline(block, timeout), "pwk:")
        put.outcome(ok, batch)

    def _put_unbounded_call(self, payloads: List[bytes]) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of an unbounded queue's put."""
        return (_PUT_UNBOUNDED_LUA, [self._items, self._tasks, self._shut],
                ["1" if self._JOINABLE else "0", *_payload_args(payloads)])

    async def _put_payloads_async(self, payloads: List[bytes], timeout: Any, batch: bool) -> None:
        """``_put_payloads`` from an event loop (``_wait_async``).  Cancelled,
        it has put nothing, or (for a batch) says how many items went in,
        in the CancelledError's ``.count``."""
        import asyncio

        from . import _aio

        self._check()
        if not payloads:
            return
        put = _Put(self, payloads)
        try:
            if self._maxsize == 0:
                with _aio.watch(self):
                    n, exc, cancelled = await _aio.settle(
                        self._script_async(*self._put_unbounded_call(payloads)))
                    if exc is None and n >= 0:
                        put.done = int(n)
                    if cancelled:
                        raise asyncio.CancelledError
                    if exc is not None:
                        raise exc
                if int(n) < 0:
                    _shut_down(0, batch)
                return
            ok, _ = await self._wait_async(put.build, put.interpret, Deadline(True, timeout), "pwk:")
        except asyncio.CancelledError as exc:
            if batch:
                exc.count = put.done  # type: ignore[attr-defined]
            raise
        put.outcome(ok, batch)

    def _count(self, source: str, keys: List[str], args: List[Any], done: int = 1) -> int:
        """The number a script answers, at least ``done`` when it changed
        the queue; with ``replicas``, ReplicationError only then: a put
        that added nothing (a full or shut-down queue) or a refused
        task_done wrote nothing that a failover could lose, or at most a
        waiter's registration."""
        try:
            return int(self._script(source, keys, args))
        except ReplicationError as exc:
            if int(exc.result) >= done:
                raise
            return int(exc.result)

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Serialize ``obj`` here and append it; blocks only while a bounded
        queue is full (queue.Full when it gives up).  ShutDown once the queue
        is shut down, also for a put waiting for room."""
        self._check()
        self._put_payloads([self._codec.dumps_message(obj)], block, timeout, False)

    async def put_async(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Awaitable ``put()``: serialize ``obj`` now and append it, awaiting
        room in a full bounded queue without blocking the event loop
        (queue.Full after ``timeout`` seconds, never earlier; ShutDown as
        ``put()``).  Cancelled, it has put nothing, or had put the item
        when the cancellation came (a put already on its way to the server
        is let finish)."""
        self._check()
        await self._put_payloads_async([self._codec.dumps_message(obj)], timeout, False)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: Optional[float] = None) -> None:
        """Put every item, in order, in one round trip when they fit.  Every
        item is serialized before any is put.  If it gives up on a full
        queue, queue.Full's ``.count`` says how many leading items went in;
        stopped by a shutdown, ShutDown's ``.count`` does."""
        self._check()
        payloads = [self._codec.dumps_message(obj) for obj in items]
        self._put_payloads(payloads, block, timeout, True)

    async def put_many_async(self, items: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Awaitable ``put_many()``: every item is serialized first, then put
        in order as room allows.  queue.Full (after ``timeout``), ShutDown
        and a CancelledError say in ``.count`` how many leading items went
        in."""
        self._check()
        payloads = [self._codec.dumps_message(obj) for obj in items]
        await self._put_payloads_async(payloads, timeout, True)

    # ------------------------------------------------------------ get

    def _consumer(self) -> _Consumer:
        c = getattr(self._local, "c", None)
        if c is None or c.retired or c.pid != os.getpid():
            c = _Consumer(self._key("proc:" + secrets.token_hex(8)))
            self._local.c = c
        return c

    def _recover(self, c: _Consumer, seconds: Optional[float] = None) -> None:
        """Put back what the failed take may have moved (``_RECOVER_LUA``);
        ``seconds`` bounds the wait for the server's reply."""
        # A queue that is gone gets nothing back: that would make it afresh.
        source, keys, args = self._guarded(*self._recover_call(c))
        script = self._conn.script(source)
        if seconds is None:
            call(self._conn, self._op(), script, keys, args)
        else:
            res = call(self._conn, self._op(), self._conn.bounded, self._items, seconds,
                       lambda pipe: pipe.execute_command("EVAL", script.source, len(keys),
                                                         *keys, *args), True, ACKS_QUIET)
            _raise_error_reply(res)
        self._recovered(c)

    def _recover_call(self, c: _Consumer) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of ``_recover`` (before ``_guarded``)."""
        return (_RECOVER_LUA, [c.proc, self._items, self._shut, self._tasks] + self._jw + [
            c.prev, c.void, self._procs], ["1" if self._JOINABLE else "0", self._jw_prefix,
                                            self._proc_ttl])

    def _recovered(self, c: _Consumer) -> None:
        c.recover = False
        c.retired = True
        with self._unrecovered_lock:
            if c in self._unrecovered:
                self._unrecovered.remove(c)

    def _register_call(self, c: _Consumer) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments of ``_register`` (before ``_guarded``)."""
        return _REGISTER_CONSUMER_LUA, [self._procs, *c.lists], []

    def _register(self, c: _Consumer, seconds: Optional[float]) -> None:
        """List the consumer's processing lists in ``procs`` (what recovers
        them if it dies); ``seconds`` bounds the wait for the reply, the
        connecting of a thread's first client included."""
        source, keys, args = self._guarded(*self._register_call(c))
        try:
            if seconds is None:
                self._conn.script(source)(keys, args)
            else:
                _raise_error_reply(self._conn.bounded(self._items, seconds, lambda pipe: (
                    pipe.execute_command("EVAL", source, len(keys), *keys, *args)),
                    acks=ACKS_QUIET))
        except BaseException as exc:
            self._raise(exc)
        c.registered = True

    def _take(self, max_items: int, deadline: Deadline) -> List[bytes]:
        """Up to ``max_items`` payloads, waiting until ``deadline`` for the
        first; [] when it passes.  ShutDown when the queue is shut down and
        has nothing left for this call.  With a timeout, every command's
        reply is awaited for at most the remaining time plus
        ``client.BLOCK_MARGIN`` (ServerTimeoutError after that)."""
        if self._unrecovered:
            # Takes of other threads that failed without recovery: their
            # threads may never take again.
            with self._unrecovered_lock:
                others = list(self._unrecovered)
            for other in others:
                self._recover(other, deadline.remaining())
        c = self._consumer()
        if c.recover:
            self._recover(c, deadline.remaining())
            c = self._consumer()
        c.n += 1
        more = max_items - 1
        bounded = deadline.end is not None and deadline.waits
        if not c.registered:
            # Once per consumer, on its own: were it the head of the
            # blocking pipeline below, a queue that is gone would still
            # cost that pipeline's wait before its error came back.
            self._register(c, deadline.remaining() if bounded else None)
        steps = self._take_steps(c, max_items, deadline)
        step = next(steps)
        while True:
            try:
                if step[0] is _NOW:
                    source, keys_args, seconds = step[1:]
                    if seconds is not None:
                        reply = self._take_now_bounded(source, keys_args, seconds)
                    else:
                        reply = self._conn.script(source).execute(self._conn.client, *keys_args)
                elif step[0] is _waiters.SLEEP:
                    reply = time.sleep(step[1])
                else:
                    # About to wait: the memory kept for the next large
                    # item goes back once it has been idle a while.
                    _core.trim_receive_buffers()
                    # One plain pipeline on the slot's node, never resent (client.bounded).
                    reply = self._conn.bounded(self._items, step[2], step[1], step[3], ACKS_QUIET)
                    _raise_error_reply(reply)
            except BaseException as exc:
                self._take_failed(c, exc, deadline)
            try:
                step = steps.send(reply)
            except StopIteration as stop:
                return stop.value

    def _take_steps(self, c: _Consumer, max_items: int,
                    deadline: Deadline) -> Generator[Tuple[Any, ...], Any, List[bytes]]:
        """A take's steps, for ``_take`` and ``_take_async`` to run:
        ``(_NOW, source, numkeys-keys-args, seconds)`` (the take without
        waiting; its reply), ``(SLEEP, seconds)``, and ``(_PIPE, build,
        seconds, bounded)`` (a plain pipeline: its replies); it returns
        the payloads taken."""
        more = max_items - 1
        bounded = deadline.end is not None and deadline.waits
        # First without waiting: one script, one round trip.  Only an
        # empty queue makes the blocking take below necessary.
        source, keys_args = self._take_now(c, max_items)
        res = yield (_NOW, source, keys_args, deadline.remaining() if bounded else None)
        got = _taken(res)
        if got or not deadline.waits or deadline.remaining() == 0:
            return got
        expiring, tail = self._expiring, self._tail
        while True:
            left = deadline.remaining()
            blocking = deadline.waits and (left is None or left > 0)
            if blocking and left is not None and left <= SERVER_TIMER_SLACK:
                # The server ends a blocking command on its timer, up to
                # 100 ms late: the last moments are waited here, then the
                # queue is looked at once more without blocking.
                yield from deadline.sleep_out()
                blocking = False
            wait = 0.0
            if blocking:
                wait = GET_CHUNK if left is None else min(GET_CHUNK, left - SERVER_TIMER_SLACK)

            def build(pipe: Any) -> None:
                pipe.execute_command("EVAL", alive(_BEFORE_MOVE_LUA, expiring), 5, self._items,
                                     c.proc, self._shut, c.prev, self._meta, *tail)
                if blocking:
                    pipe.blmove(self._items, c.proc, _waiters.server_seconds(wait), "LEFT", "RIGHT")
                else:
                    pipe.lmove(self._items, c.proc, "LEFT", "RIGHT")
                # Always a script after the move: the item moved may be the end
                # marker, which must go back before another consumer waits.
                pipe.execute_command("EVAL", alive(_TAKE_MORE_LUA, expiring), 7, self._items,
                                     c.proc, *self._pw, self._shut, c.void, self._meta, more,
                                     self._maxsize, self._pw_prefix, self._proc_ttl, *tail)

            res = yield (_PIPE, build, wait if blocking else
                         deadline.remaining() if bounded else None, bounded)
            got = _taken(res[-1])
            if got or not blocking:
                return got
            if deadline.remaining() == 0:
                return []

    async def _take_async(self, max_items: int, deadline: Deadline) -> List[bytes]:
        """``_take`` from an event loop: the same steps (``_take_steps``)
        through the loop's asyncio client, by a consumer of its own.  A take
        that fails or is cancelled puts back what it may have moved before
        the error (or the CancelledError) goes on: its item is either
        returned or back at the head of the queue."""
        import asyncio

        from . import _aio

        with _aio.watch(self):
            conn = self._conn
            aclient = _aio.client(conn)
            with self._unrecovered_lock:
                others = list(self._unrecovered)
            for other in others:
                await self._recover_async(other)
            c = self._idle_consumer()
            try:
                if not c.registered:
                    await self._script_async(*self._register_call(c), seconds=deadline.remaining())
                    c.registered = True
            except BaseException:
                self._aio_idle.append(c)
                raise
            c.n += 1
            steps = self._take_steps(c, max_items, deadline)
            try:
                step = next(steps)
                while True:
                    if step[0] is _NOW:
                        source, keys_args, seconds = step[1:]
                        n = keys_args[0]
                        reply = await _aio.script(conn, aclient, source, keys_args[1:n + 1],
                                                  keys_args[n + 1:], seconds)
                    elif step[0] is _waiters.SLEEP:
                        reply = await asyncio.sleep(step[1])
                    else:
                        _core.trim_receive_buffers()  # about to wait, as in _take
                        reply = await _aio.pipeline(conn, aclient, self._items, step[1],
                                                    step[2], step[3], ACKS_QUIET)
                        _raise_error_reply(reply)
                    try:
                        step = steps.send(reply)
                    except StopIteration as stop:
                        self._aio_idle.append(c)
                        return stop.value
            except ShutDown:
                self._aio_idle.append(c)
                raise
            except BaseException as exc:
                c.recover = True
                if not isinstance(exc, _client.import_redis().exceptions.TimeoutError):
                    # A server that did not answer would not answer this either.
                    await _aio.settle(self._recover_async(c))
                if c.recover:
                    with self._unrecovered_lock:
                        self._unrecovered.append(c)
                raise

    def _idle_consumer(self) -> _Consumer:
        pid = os.getpid()
        while self._aio_idle:
            c = self._aio_idle.pop()
            if c.pid == pid and not c.retired:
                return c
        return _Consumer(self._key("proc:" + secrets.token_hex(8)))

    async def _recover_async(self, c: _Consumer) -> None:
        """``_recover`` through the running loop's asyncio client."""
        await self._script_async(*self._recover_call(c))
        self._recovered(c)

    def _take_now(self, c: _Consumer, max_items: int) -> Tuple[str, List[Any]]:
        """The script of the take without waiting, and its number of keys,
        keys and arguments (the one-item form for an unbounded queue)."""
        expiring = self._expiring
        if max_items == 1 and self._maxsize == 0:
            return alive(_TAKE_ONE_LUA, expiring), [6, self._items, c.proc, self._shut, c.prev,
                                                    c.void, self._meta, self._proc_ttl, *self._tail]
        return alive(_TAKE_NOW_LUA, expiring), [8, self._items, c.proc, *self._pw, self._shut,
                                                c.prev, c.void, self._meta, max_items,
                                                self._maxsize, self._pw_prefix, self._proc_ttl,
                                                *self._tail]

    def _take_now_bounded(self, source: str, keys_args: List[Any], seconds: Optional[float]) -> Any:
        """The take without waiting of ``_take`` (``_take_now``), its reply
        awaited for at most ``seconds`` + ``client.BLOCK_MARGIN``."""
        script = self._conn.script(source)

        def build(pipe: Any) -> None:
            pipe.execute_command("EVALSHA", script.sha, *keys_args)

        res = self._conn.bounded(self._items, seconds, build, acks=ACKS_QUIET)[0]
        if isinstance(res, _client.import_redis().exceptions.NoScriptError):
            # Nothing ran: load it by running it in full.
            res = self._conn.bounded(self._items, seconds, lambda pipe: pipe.execute_command(
                "EVAL", source, *keys_args), acks=ACKS_QUIET)[0]
        _raise_error_reply([res])
        return res

    def _take_failed(self, c: _Consumer, exc: BaseException, deadline: Optional[Deadline] = None) -> None:
        """Raise for a take that failed: the server may have moved items
        into our processing list before the failure, so they are put back,
        now if the caller's time allows, and in any case before this
        consumer's next take."""
        if is_gone(exc):
            raise self._gone() from None
        c.recover = True
        left = None if deadline is None else deadline.remaining()
        timed_out = isinstance(exc, _client.import_redis().exceptions.TimeoutError)
        # A server that did not answer in time would not answer the recovery
        # either: it waits for the next take rather than the caller.
        if not timed_out and (left is None or left > 0):
            try:
                self._recover(c, left)
            except BaseException:
                pass
        if c.recover:
            with self._unrecovered_lock:
                self._unrecovered.append(c)
        new = _client._translate_for(exc, self._conn, self._op())
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
        """Remove and return the oldest item; queue.Empty when it gives up.
        ShutDown once the queue is shut down and empty (at once after an
        immediate shutdown), also for a get that was waiting."""
        self._check()
        if self._pending:
            return self._decode([self._pending.pop(0)], False)
        return self._decode(_got(self._take(1, Deadline(block, timeout))), False)

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """Awaitable ``get()``: remove and return the oldest item, waiting
        without blocking the event loop; queue.Empty after ``timeout``
        seconds (never earlier), ShutDown as ``get()``.  Cancelled, it has
        taken nothing: an item on its way is put back at the head of the
        queue.  ValueError if the handle is (or gets) closed."""
        self._check()
        if self._pending:
            return self._decode([self._pending.pop(0)], False)
        return self._decode(_got(await self._take_async(1, Deadline(True, timeout))), False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def get_many(self, max_items: Optional[int] = None, block: bool = True,
                 timeout: Optional[float] = None) -> List[Any]:
        """Wait, as get() does, for at least one item, then return every item
        present, at most ``max_items``, in one round trip."""
        n = self._many(max_items)
        if self._pending:
            raw, self._pending = self._pending[:n], self._pending[n:]
            return self._decode(raw, True)
        return self._decode(_got(self._take(n, Deadline(block, timeout))), True)

    async def get_many_async(self, max_items: Optional[int] = None,
                             timeout: Optional[float] = None) -> List[Any]:
        """Awaitable ``get_many()``: await at least one item (queue.Empty
        after ``timeout`` seconds), then return every item present, at most
        ``max_items``.  Cancelled, it has taken nothing."""
        n = self._many(max_items)
        if self._pending:
            raw, self._pending = self._pending[:n], self._pending[n:]
            return self._decode(raw, True)
        return self._decode(_got(await self._take_async(n, Deadline(True, timeout))), True)

    def _many(self, max_items: Optional[int]) -> int:
        """Check the handle and ``max_items``; how many to take at most."""
        self._check()
        if max_items is None:
            return 1 << 30
        n = operator.index(max_items)
        if n < 1:
            raise ValueError(f"max_items must be at least 1, not {n}")
        return n

    # ------------------------------------------------------------ sizes

    def qsize(self) -> int:
        """The number of items in the queue (exact)."""
        self._check()
        return int(self._script(_QSIZE_LUA, [self._items], [])) + len(self._pending)

    # ------------------------------------------------------------ shutdown

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down for every process and machine that uses it
        (``queue.Queue.shutdown``): puts raise ShutDown from now on, and gets
        once the queue is empty; every blocked put, get and join wakes.
        ``immediate``: the items left are discarded (and counted as done by
        a JoinableQueue, whose ``join()`` then returns once the items taken
        before are done), and gets raise ShutDown at once.  Calling it again
        is harmless; ``immediate=True`` after a plain shutdown discards what
        is left.  One script: a lost connection leaves the queue either as
        it was or shut down."""
        self._check()
        self._script(_SHUTDOWN_LUA,
                     [self._items, self._tasks, self._shut] + self._pw + self._jw,
                     ["1" if immediate else "0", "1" if self._JOINABLE else "0",
                      self._pw_prefix, self._jw_prefix])

    @property
    def is_shutdown(self) -> bool:
        """True once ``shutdown()`` was called on this queue, from anywhere."""
        self._check()
        return bool(self._command("EXISTS", self._shut))

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

    @classmethod
    def _destroy_keys(cls, conn: Any, ident: str) -> None:
        call(conn, f"{cls._KIND} {ident!r}", conn.script(_DESTROY_PROCS_LUA), [object_key(ident, "procs")], [])
        super()._destroy_keys(conn, ident)

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
        if self._count(_TASK_DONE_LUA, [self._tasks] + self._jw, [self._jw_prefix], 0) < 0:
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        """Block until every item put so far has been marked done."""
        self._wait(self._attempt(self._join_call, _joined), Deadline(True, None), "jwk:")

    async def join_async(self) -> None:
        """Awaitable ``join()``: wait, without blocking the event loop, until
        every item put so far has been marked done.  ValueError if the
        handle is (or gets) closed."""
        await self._wait_async(self._join_call, _joined, Deadline(True, None), "jwk:")

    def _join_call(self, wid: str, mode: int) -> Tuple[str, List[Any], List[Any]]:
        return _JOIN_LUA, [self._tasks] + self._jw, [
            wid, mode, _waiters.REGISTRATION_TTL_MS, self._jw_prefix]


def _joined(reply: Any) -> Tuple[bool, Any, Optional[float]]:
    return bool(reply), None, None
