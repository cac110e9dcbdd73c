"""Waiting in Redis: the waiter registry every blocking Redis object uses.

A process that must wait (for an item, a lock, a unit, an event...) registers
a random waiter id in a sorted set (arrival order) together with an expiry
time, in the same Lua script that found it had to wait; it then blocks in
``BLPOP`` on its own wake key (through ``Connection.bounded``).  Whoever
changes the state in a way that lets waiters proceed pops live waiters from
the set and pushes a token onto their wake keys, in the script that made the
change: a wake-up is never lost between the check and the wait.

- **Timeout**: a wait gives up when its ``timeout`` (threading's reading:
  None waits for ever, a negative one does not wait) has passed, removing
  its registration in the script that makes the last check, so that no
  wake-up is spent on it.  It returns within ``SERVER_TIMER_SLACK`` plus a
  round trip of its timeout, not a server timer tick later.
- **Chunks**: waits are cut into server-side waits of at most
  :data:`WAIT_CHUNK` seconds, after which the waiter checks again and
  refreshes its registration.  So no command blocks longer than
  ``WAIT_CHUNK``, and a lost wake-up costs at most one chunk.
- **Peer death**: a waiter that died stops refreshing its registration; it
  is skipped once that has expired (``REGISTRATION_TTL_MS``), so a wake-up
  sent to it delays the others by at most one chunk.  Its wake key expires
  by itself (``WAKE_TTL_MS``, or sooner with an expiring object: see
  ``_base.alive``).  Expiry is judged on the registry's own
  clock, which a stall of the server (or a jump of its clock) advances by
  at most ``CLOCK_STEP_MS``: live waiters, which could not refresh while
  the server was stopped, are not taken for dead when it resumes.
- **Lost connection**: the blocked command raises ``ConnectionLostError``
  (or ``ServerTimeoutError`` if the server stalled or vanished without
  closing the socket: ``client.BLOCK_MARGIN`` after the command's own
  timeout, so at most one chunk plus that margin); the wait ends with that
  error and its registration expires like a dead waiter's.
- **Close**: a closed handle's waits raise ValueError before talking to Redis.

Every key of an object shares its ``{name}`` hash tag, so each script
touches a single Redis Cluster slot; the wake keys of other waiters are
derived inside the scripts, from the same tag.
"""
from __future__ import annotations

import math
import secrets
import time
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

from ._base import EXPIRY_CAPS, RedisObject, call
from .client import NO_WAIT
from .errors import ReplicationError
from .keys import object_key

#: Longest single server-side wait of a registered waiter, in seconds.  It
#: bounds how long a wake-up sent to a dead waiter can delay the others.
WAIT_CHUNK = 2.0
#: A waiter's registration lasts this long after its last refresh.
REGISTRATION_TTL_MS = 3 * int(WAIT_CHUNK * 1000)
#: Wake keys vanish after this long if nobody reads them (dead waiters).
WAKE_TTL_MS = 60_000
#: The last moments of a wait, in seconds, are waited locally: the server
#: ends a blocking command on its timer (10 times a second at the default
#: ``hz``), so a BLPOP of 50 ms can return after 100.  A blocking command
#: asks for the remaining time less this; the rest is slept, then the
#: state is checked once more.
SERVER_TIMER_SLACK = 0.1

#: The most a registry's clock advances between two of its readings that
#: are stored (every registration and refresh stores one), in ms.  Live
#: waiters refresh at least every WAIT_CHUNK, so while one waits the clock
#: keeps up with the server's; a longer gap is the server (or every waiter)
#: having stalled, and counts for no more than this.
CLOCK_STEP_MS = int(WAIT_CHUNK * 1000) + 500

LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The waiter registry: sorted set z (score: arrival order), hash e
-- (waiter id -> expiry on the registry's clock; field '#' numbers the
-- arrivals, '@' and '^' hold the clock), and one wake list per waiter,
-- named p .. id.
--
-- The registry's clock is the server's time, except that it advances by at
-- most __CLOCK_STEP__ ms from one stored reading to the next: a server
-- stopped for seconds (or whose clock jumped) must not make every waiter
-- look dead at once when it resumes, since none of them could refresh
-- meanwhile.  A waiter is judged dead only when the others' refreshes have
-- carried the clock past its expiry.
local function w_meta(field)
  return field == '#' or field == '@' or field == '^'
end
local function w_now(e)
  local real = now_ms()
  local c = redis.call('HMGET', e, '@', '^')
  local clock, seen = tonumber(c[1]), tonumber(c[2])
  if not clock or not seen then return real, real end
  local step = real - seen
  if step < 0 then step = 0 elseif step > __CLOCK_STEP__ then step = __CLOCK_STEP__ end
  return clock + step, real
end
local function w_add(z, e, wid, ttl)
  if not redis.call('ZSCORE', z, wid) then
    redis.call('ZADD', z, redis.call('HINCRBY', e, '#', 1), wid)
  end
  local clock, real = w_now(e)
  redis.call('HSET', e, wid, clock + ttl, '@', clock, '^', real)
end
local function w_done(z, e, p, wid)
  if wid ~= '' then
    redis.call('ZREM', z, wid)
    redis.call('HDEL', e, wid)
    redis.call('DEL', p .. wid)
    if redis.call('ZCARD', z) == 0 then redis.call('DEL', e) end
  end
end
-- Wakes up to n live waiters (all of them when n < 0), oldest first;
-- expired registrations (dead waiters) are dropped on the way.
local function w_wake(z, e, p, n)
  local now = w_now(e)
  local woken = 0
  while n < 0 or woken < n do
    local first = redis.call('ZRANGE', z, 0, 0)
    if #first == 0 then break end
    local wid = first[1]
    local exp = tonumber(redis.call('HGET', e, wid) or '0') or 0
    redis.call('ZREM', z, wid)
    redis.call('HDEL', e, wid)
    if exp >= now then
      redis.call('RPUSH', p .. wid, '1')
      redis.call('PEXPIRE', p .. wid, __WAKE_TTL__)
      woken = woken + 1
    end
  end
  if redis.call('ZCARD', z) == 0 then redis.call('DEL', e) end
  return woken
end
-- Live registered waiters.
local function w_count(e)
  local now = w_now(e)
  local n = 0
  local all = redis.call('HGETALL', e)
  for i = 1, #all, 2 do
    if not w_meta(all[i]) and (tonumber(all[i + 1]) or 0) >= now then n = n + 1 end
  end
  return n
end
-- After a failed attempt: mode 0 is a try without waiting, 1 registers (or
-- refreshes) the waiter, 2 gives up and unregisters it.
local function w_fail(z, e, p, wid, mode, ttl)
  if mode == 1 then w_add(z, e, wid, ttl) elseif mode == 2 then w_done(z, e, p, wid) end
end
""".replace("__WAKE_TTL__", str(WAKE_TTL_MS)).replace("__CLOCK_STEP__", str(CLOCK_STEP_MS))


# An expiring object's wake keys must not outlive it (``_base.alive``).
_WAKE_EXPIRY = f"redis.call('PEXPIRE', p .. wid, {WAKE_TTL_MS})"
if _WAKE_EXPIRY not in LUA_PRELUDE:
    raise ImportError("the waiter registry's script no longer sets wake keys' expiry as expected")
EXPIRY_CAPS.append((_WAKE_EXPIRY,
                    f"redis.call('PEXPIRE', p .. wid, math.min({WAKE_TTL_MS}, tonumber(_ttl)))"))


#: The steps of a wait (``WaitingObject._wait_steps``).
TRY, BLOCK, SLEEP = "try", "block", "sleep"
Step = Tuple[Any, ...]


def run_steps(steps: Generator[Step, Any, Any], handlers: Dict[Any, Callable[..., Any]]) -> Any:
    """Run a generator of steps ``(kind, *args)``, answering each with
    ``handlers[kind](*args)``; what the generator returns."""
    reply = None
    try:
        while True:
            step = steps.send(reply)
            reply = handlers[step[0]](*step[1:])
    except StopIteration as stop:
        return stop.value


def lua(body: str) -> str:
    """A script: the waiter registry's functions, then ``body``."""
    return LUA_PRELUDE + body


# A waiter that gave up between its attempts (cancelled): unregister it,
# and wake the next waiter in its place, since a wake-up sent to it may
# have been spent by a BLPOP it abandoned (a spurious one costs an attempt).
# KEYS z, e.  ARGV wake prefix, wid.
_FORGET_LUA = lua(NO_WAIT + """
w_done(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
w_wake(KEYS[1], KEYS[2], ARGV[1], 1)
return 0
""")


def wait_timeout(timeout: Any) -> Optional[float]:
    """threading's reading of a timeout: None waits for ever, a negative one
    does not wait at all."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    return max(float(timeout), 0.0)


def server_seconds(seconds: float) -> float:
    """A blocking command's timeout: Redis reads it in whole milliseconds and
    takes 0 to mean for ever, so it is rounded up, never down to 0."""
    return max(math.ceil(seconds * 1000.0), 1) / 1000.0


def _raise(exc: BaseException) -> None:
    raise exc


class Deadline:
    """When a blocking call gives up: never (None), at once, or at a time."""

    __slots__ = ("end",)

    def __init__(self, block: bool, timeout: Any) -> None:
        timeout = wait_timeout(timeout)
        if not block or timeout == 0.0:
            self.end: Optional[float] = 0.0
        elif timeout is None:
            self.end = None
        else:
            self.end = time.monotonic() + timeout

    @property
    def waits(self) -> bool:
        return self.end != 0.0

    def remaining(self) -> Optional[float]:
        if self.end is None:
            return None
        return max(self.end - time.monotonic(), 0.0)

    def sleep_out(self) -> Generator[Step, Any, None]:
        """``(SLEEP, seconds)`` steps until the deadline has passed by
        ``time.monotonic``: an event loop's timer may end a sleep a little
        early (uvloop's counts whole milliseconds), and a timeout must
        never end before its time."""
        left = self.remaining()
        while left:
            yield (SLEEP, left)
            left = self.remaining()


class WaitingObject(RedisObject):
    """A Redis object with waiter registries (see the module docstring).

    ``_REGISTRIES`` maps each registry's sorted-set part to the prefix part
    of its wake keys; the registry's hash is the part plus ``.e``.  Both are
    declared parts of the object; wake keys are deleted with it.
    """

    _REGISTRIES: Dict[str, str] = {}

    @classmethod
    def _declared_parts(cls) -> Tuple[str, ...]:
        parts = super()._declared_parts()
        for z in cls._REGISTRIES:
            parts += (z, z + ".e")
        return parts

    def _blpop(self, key: str, seconds: float, caller_deadline: bool = False) -> Any:
        """Block on a wake key for at most ``seconds`` (at most WAIT_CHUNK);
        ServerTimeoutError if the server has not answered ``client.BLOCK_MARGIN``
        later, or the socket timeout later for a wait without a deadline
        (``Connection.bounded``)."""
        reply = self._call(self._conn.bounded, key, seconds,
                           lambda pipe: pipe.blpop([key], server_seconds(seconds)),
                           caller_deadline)[0]
        if isinstance(reply, Exception):
            self._call(_raise, reply)
        return reply

    def _wait(self, attempt: Callable[[str, int], Tuple[bool, Any, Optional[float]]],
              deadline: Deadline, wake_part: str) -> Tuple[bool, Any]:
        """Run ``attempt(wid, mode)`` until it succeeds or ``deadline`` passes.

        ``attempt`` runs one script that tries, and on failure registers
        (mode 1) or unregisters (mode 2) the waiter ``wid``; it returns
        ``(ok, value, bound)``, where ``bound`` (seconds or None) caps the
        next wait, e.g. by the remaining lease of a lock's holder.  Between
        attempts the caller blocks in Redis on its wake key.
        """
        if not deadline.waits:
            ok, value, _ = attempt("", 0)
            return ok, value
        # The checks, too, wait for the server no longer than the caller.
        with self._conn.deadline(deadline.end):
            return self._wait_registered(attempt, deadline, wake_part)

    def _wait_steps(self, deadline: Deadline, wake_part: str) -> Generator[Step, Any, Tuple[bool, Any]]:
        """The wait loop, as the steps it takes: ``(TRY, wid, mode)`` (its
        reply: the attempt's ``(ok, value, bound)``), ``(BLOCK, wake key,
        seconds)`` and ``(SLEEP, seconds)``; it returns ``(ok, value)``.
        The blocking driver (:meth:`_wait_registered`) and the awaiting one
        (:meth:`_wait_async`) both run it."""
        if not deadline.waits:
            ok, value, _ = yield (TRY, "", 0)
            return ok, value
        wid = secrets.token_hex(8)
        wake = self._key(wake_part + wid)
        ok, value, bound = yield (TRY, wid, 1)
        while not ok:
            chunk = WAIT_CHUNK if bound is None else min(WAIT_CHUNK, bound)
            left = deadline.remaining()
            if left is not None:
                if left <= SERVER_TIMER_SLACK:
                    yield from deadline.sleep_out()
                    ok, value, _ = yield (TRY, wid, 2)
                    break
                chunk = min(chunk, left - SERVER_TIMER_SLACK)
            yield (BLOCK, wake, chunk)
            ok, value, bound = yield (TRY, wid, 1)
        return ok, value

    def _wait_registered(self, attempt: Callable[[str, int], Tuple[bool, Any, Optional[float]]],
                         deadline: Deadline, wake_part: str) -> Tuple[bool, Any]:
        return run_steps(self._wait_steps(deadline, wake_part), {
            TRY: attempt, SLEEP: time.sleep,
            BLOCK: lambda key, seconds: self._blpop(key, seconds, deadline.end is not None)})

    def _attempt(self, build: Callable[[str, int], Tuple[str, List[Any], List[Any]]],
                 interpret: Callable[[Any], Tuple[bool, Any, Optional[float]]]
                 ) -> Callable[[str, int], Tuple[bool, Any, Optional[float]]]:
        """The blocking attempt of ``_wait`` made of ``build(wid, mode)``
        (the script, keys and arguments) and ``interpret(reply)`` (the
        attempt's result), the pieces :meth:`_wait_async` runs too."""
        return lambda wid, mode: interpret(self._script(*build(wid, mode)))

    async def _wait_async(self, build: Callable[[str, int], Tuple[str, List[Any], List[Any]]],
                          interpret: Callable[[Any], Tuple[bool, Any, Optional[float]]],
                          deadline: Deadline, wake_part: str,
                          undo: Optional[Callable[[Any], Any]] = None,
                          keep_unacked: bool = False) -> Tuple[bool, Any]:
        """``_wait`` from an event loop: the same steps (:meth:`_wait_steps`)
        and scripts, through the loop's asyncio client (``_aio``).

        With ``replicas``, an attempt that too few replicas acknowledged
        (ReplicationError) goes on waiting if it obtained nothing (it
        wrote at most a registration); if it obtained something, that is
        given back (``undo``; ``exc.given_back`` says whether that
        worked) and the error raised, unless ``keep_unacked`` (a
        re-entry: the caller held it already).

        Cancelled, it lets an attempt that was on its way finish, then
        gives back what that attempt obtained (``undo(value)``, awaited:
        say, a lock taken) and forgets its registration, passing on any
        wake-up it may have spent, before the CancelledError goes on."""
        import asyncio

        from . import _aio

        with _aio.watch(self):
            conn = self._conn
            aclient = _aio.client(conn)
            bounded = deadline.end is not None

            async def attempt(wid: str, mode: int) -> Tuple[bool, Any, Optional[float]]:
                try:
                    return interpret(await self._script_async(*build(wid, mode),
                                                              seconds=deadline.remaining()))
                except ReplicationError as exc:
                    # With ``replicas``: as the blocking forms do, an
                    # attempt that obtained nothing wrote at most a
                    # registration, and goes on; one that obtained
                    # something gives it back (``undo``) and raises.
                    got = interpret(exc.result)
                    if not got[0] or keep_unacked:
                        return got
                    if undo is not None:
                        _, failed, _ = await _aio.settle(undo(got[1]))
                        exc.given_back = failed is None  # type: ignore[attr-defined]
                    raise

            steps = self._wait_steps(deadline, wake_part)
            step = next(steps)
            registered = ""
            try:
                while True:
                    reply = None
                    if step[0] is TRY:
                        reply, exc, cancelled = await _aio.settle(attempt(step[1], step[2]))
                        registered = step[1] if exc is None and not reply[0] and step[2] == 1 else ""
                        if cancelled and exc is None and reply[0] and undo is not None:
                            await _aio.settle(undo(reply[1]))
                        if cancelled:
                            raise asyncio.CancelledError
                        if exc is not None:
                            raise exc
                    elif step[0] is SLEEP:
                        await asyncio.sleep(step[1])
                    else:
                        await _aio.bounded(conn, aclient.blpop([step[1]], server_seconds(step[2])),
                                           step[2], bounded)
                    step = steps.send(reply)
            except StopIteration as stop:
                return stop.value
            except asyncio.CancelledError:
                if registered:
                    await _aio.settle(self._forget_async(aclient, wake_part, registered))
                raise

    async def _script_async(self, source: str, keys: List[Any], args: List[Any],
                            seconds: Optional[float] = None, acks: Optional[str] = None) -> Any:
        """:meth:`_script` through the running loop's asyncio client; its
        errors untranslated (``_aio.watch`` translates them)."""
        from . import _aio

        source, keys, args = self._guarded(source, keys, args)
        return await _aio.script(self._conn, _aio.client(self._conn), source, keys, args, seconds,
                                 acks)

    async def _forget_async(self, aclient: Any, wake_part: str, wid: str) -> None:
        """Unregister a cancelled waiter and wake the next (``_FORGET_LUA``)."""
        if not wake_part.endswith("k:"):
            raise ValueError(f"not a wake key prefix: {wake_part!r}")
        z = wake_part[:-2]
        await self._script_async(_FORGET_LUA, [self._key(z), self._key(z + ".e")],
                                 [self._key(wake_part), wid])

    # Deletes the wake keys of the waiters still registered (ARGV: one
    # prefix per registry, KEYS: its sorted set).
    _WAKE_KEYS_LUA = NO_WAIT + """
local n = 0
for i = 1, #KEYS do
  for _, wid in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    n = n + redis.call('DEL', ARGV[i] .. wid)
  end
end
return n
"""

    @classmethod
    def _destroy_keys(cls, conn: Any, ident: str) -> None:
        """Delete every key of the object: the wake keys of registered
        waiters, then the declared parts and metadata.  Wake keys of waiters
        that are gone expire on their own."""
        regs = cls._REGISTRIES
        if regs:
            call(conn, f"{cls._KIND} {ident!r}", conn.script(cls._WAKE_KEYS_LUA),
                 [object_key(ident, z) for z in regs], [object_key(ident, p) for p in regs.values()])
        super()._destroy_keys(conn, ident)
