"""What the Redis queues and synchronization primitives share.

- :class:`RedisObject`: keys, open/create rules, ``name``, ``unlink()``,
  ``close()`` and pickling as a reference (connection options, codec, key,
  kind and creation options), so that an object passes to children under
  every start method and through queues.
- The *waiter registry*, a few Lua functions included in the scripts of the
  blocking objects.  A process that must wait registers a random waiter id
  in a sorted set (arrival order) together with an expiry time, in the same
  script that found it had to wait; it then blocks in ``BLPOP`` on its own
  wake key.  Whoever changes the state in a way that lets waiters proceed
  pops live waiters from the set and pushes a token onto their wake keys.
  Waits are cut into chunks of at most :data:`WAIT_CHUNK` seconds after which
  the waiter checks again and refreshes its registration; a waiter that
  died is skipped once its registration has expired, so a wake-up sent to it
  is not lost for the others for longer than one chunk.

Every key of an object shares the ``{name}`` hash tag, so each script
touches a single Redis Cluster slot; the wake keys of other waiters are
derived inside the scripts, from the same tag.
"""
from __future__ import annotations

import math
import os
import secrets
import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from . import client as _client
from . import codec as _codec
from . import keys as _keys

#: Longest single server-side wait of a registered waiter, in seconds.  It
#: bounds how long a wake-up sent to a dead waiter can delay the others.
WAIT_CHUNK = 2.0
#: A waiter's registration lasts this long after its last refresh.
REGISTRATION_TTL_MS = 3 * int(WAIT_CHUNK * 1000)
#: Wake keys vanish after this long if nobody reads them (dead waiters).
WAKE_TTL_MS = 60_000

LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The waiter registry: sorted set z (score: arrival order), hash e
-- (waiter id -> expiry in ms; field '#' numbers the arrivals), and one wake
-- list per waiter, named p .. id.
local function w_add(z, e, wid, ttl)
  if not redis.call('ZSCORE', z, wid) then
    redis.call('ZADD', z, redis.call('HINCRBY', e, '#', 1), wid)
  end
  redis.call('HSET', e, wid, now_ms() + ttl)
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
  local now = now_ms()
  local woken = 0
  while n < 0 or woken < n do
    local first = redis.call('ZRANGE', z, 0, 0)
    if #first == 0 then break end
    local wid = first[1]
    local exp = tonumber(redis.call('HGET', e, wid) or '0')
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
  local now = now_ms()
  local n = 0
  local all = redis.call('HGETALL', e)
  for i = 1, #all, 2 do
    if all[i] ~= '#' and tonumber(all[i + 1]) >= now then n = n + 1 end
  end
  return n
end
-- After a failed attempt: mode 0 is a try without waiting, 1 registers (or
-- refreshes) the waiter, 2 gives up and unregisters it.
local function w_fail(z, e, p, wid, mode, ttl)
  if mode == 1 then w_add(z, e, wid, ttl) elseif mode == 2 then w_done(z, e, p, wid) end
end
""".replace("__WAKE_TTL__", str(WAKE_TTL_MS))


def lua(body: str) -> str:
    """A script: the waiter registry's functions, then ``body``."""
    return LUA_PRELUDE + body


_local = threading.local()


def thread_token() -> str:
    """A random token for this thread of this process (new after a fork)."""
    pid = os.getpid()
    tok = getattr(_local, "token", None)
    if tok is None or tok[0] != pid:
        tok = (pid, f"{pid}:{threading.get_ident()}:{secrets.token_hex(8)}")
        _local.token = tok
    return tok[1]


def call(conn: Any, op: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run a redis-py call, raising the backend's exceptions (client.translate)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        new = _client.translate(exc, getattr(conn, "address", None), op)
        if new is exc:
            raise
        raise new from exc


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


# The codec of the handle decoding a payload, for the references found in it.
_reading = threading.local()


def decode(codec: Any, conn: Any, payload: bytes, key: str) -> Any:
    """``codec.loads``, with ``conn`` as the context of the references found
    in the payload, which are opened with ``codec``."""
    previous = getattr(_reading, "codec", None)
    _reading.codec = codec
    try:
        return codec.bind(conn).loads(payload, key)
    finally:
        _reading.codec = previous


def _rebuild(cls: type, options: Dict[str, Any], codec_options: Dict[str, Any], ident: str,
             anonymous: bool, opts: Dict[str, Any], extra: Any) -> "RedisObject":
    self = cls.__new__(cls)
    self._attach(_client.Connection.from_options(options), _codec.Codec(**codec_options),
                 ident, anonymous, opts)
    self._unpickled(extra)
    return self


def _from_reference(cls: type) -> Callable[[list, Any], Any]:
    def factory(args: list, context: Any) -> Any:
        ident, anonymous, opts, extra = args
        if context is None:
            raise ValueError(f"a reference to the {cls._KIND} {ident!r} was read without "
                             "a connection to open it with")
        self = cls.__new__(cls)
        self._attach(context, getattr(_reading, "codec", None) or _codec.Codec(), ident,
                     bool(anonymous), dict(opts))
        self._unpickled(self._extra_from_ref(extra))
        return self
    return factory


def register(cls: type) -> type:
    """Class decorator: references to instances read back out of payloads
    (an object sent through a queue) become handles."""
    _codec.register_ref(cls._KIND, _from_reference(cls))
    return cls


class RedisObject:
    """Base of every queue and synchronization object of the Redis backend.

    Subclasses set ``_KIND`` (the kind in the metadata), ``_PARTS`` (their
    fixed data keys) and ``_REGISTRIES`` (waiter registries: sorted-set part
    -> wake-key prefix part; the registry's hash is the part plus ``.e``).
    """

    _KIND = "object"
    _PARTS: Tuple[str, ...] = ()
    _REGISTRIES: Dict[str, str] = {}
    _closed = False
    _CLOSED_MESSAGE = "the synchronization object is closed"

    @classmethod
    def _declared_parts(cls) -> Tuple[str, ...]:
        parts = tuple(cls._PARTS)
        for z in cls._REGISTRIES:
            parts += (z, z + ".e")
        return parts

    def _open(self, conn: Any, name: Optional[str], create: Optional[bool], codec: Any,
              options: Dict[str, Any], init: Optional[Dict[str, Any]] = None) -> None:
        if codec is None:
            codec = _codec.Codec()
        if name is None:
            if create is False:
                raise ValueError("create=False needs a name: there is nothing to open")
            ident, anonymous, create = _keys.anonymous_name(), True, True
        else:
            ident, anonymous = _keys.check_name(name), False
        meta = _keys.create_meta(conn, ident, self._KIND, options, create,
                                 parts=self._declared_parts(), init=init)
        self._attach(conn, codec, ident, anonymous, dict(meta))

    def _attach(self, conn: Any, codec: Any, ident: str, anonymous: bool,
                opts: Dict[str, Any]) -> None:
        self._conn = conn
        self._codec = codec
        self._ident = ident
        self._anonymous = anonymous
        self._opts = dict(opts)
        self._setup()

    def _setup(self) -> None:
        """Subclasses read their creation options (self._opts) here."""

    def _pickle_extra(self) -> Any:
        """What else travels with a pickled handle."""
        return None

    def _unpickled(self, extra: Any) -> None:
        """Restore what _pickle_extra gave."""

    def _ref_extra(self) -> Any:
        """What else travels with a reference (plain data only)."""
        return self._pickle_extra()

    def _extra_from_ref(self, extra: Any) -> Any:
        return extra

    def _key(self, part: str) -> str:
        return _keys.object_key(self._ident, part)

    def _check(self) -> None:
        if self._closed:
            raise ValueError(self._CLOSED_MESSAGE)

    def _op(self) -> str:
        return f"{self._KIND} {self._ident!r}"

    def _call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return call(self._conn, self._op(), fn, *args, **kwargs)

    def _script(self, source: str, keys: Iterable[str], args: Iterable[Any]) -> Any:
        self._check()
        return call(self._conn, self._op(), self._conn.script(source), list(keys), list(args))

    @property
    def _client(self) -> Any:
        return self._conn.client

    def _blpop(self, key: str, seconds: float) -> Any:
        return self._call(self._conn.blocking_client.blpop, [key], server_seconds(seconds))

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
        wid = secrets.token_hex(8)
        wake = self._key(wake_part + wid)
        limit = WAIT_CHUNK
        ok, value, bound = attempt(wid, 1)
        while not ok:
            chunk = limit if bound is None else min(limit, bound)
            left = deadline.remaining()
            if left is not None:
                if left <= 0:
                    ok, value, _ = attempt(wid, 2)
                    break
                chunk = min(chunk, left)
            self._blpop(wake, chunk)
            ok, value, bound = attempt(wid, 1)
        return ok, value

    # ------------------------------------------------------------ public

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous object."""
        return None if self._anonymous else self._ident

    @property
    def closed(self) -> bool:
        return self._closed

    def unlink(self) -> None:
        """Delete a named object's keys from Redis: the object is gone for
        every handle.  Nothing for an anonymous one (whoever made it, the
        manager, deletes those with :meth:`_destroy`)."""
        if not self._anonymous:
            self._destroy()

    # Deletes the wake keys of the waiters still registered (ARGV: one
    # prefix per registry, KEYS: its sorted set).
    _WAKE_KEYS_LUA = """
local n = 0
for i = 1, #KEYS do
  for _, wid in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    n = n + redis.call('DEL', ARGV[i] .. wid)
  end
end
return n
"""

    def _destroy(self) -> None:
        """Delete every key of the object: the declared parts and metadata
        (keys.delete_object), and the wake keys of registered waiters.  Wake
        keys of waiters that are gone expire on their own."""
        regs = self._REGISTRIES
        if regs:
            call(self._conn, self._op(), self._conn.script(self._WAKE_KEYS_LUA),
                 [self._key(z) for z in regs], [self._key(p) for p in regs.values()])
        try:
            _keys.delete_object(self._conn, self._ident, self._KIND)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """This handle can no longer be used; the object itself stays."""
        self._closed = True

    def __reduce__(self):
        # To another process (a child): everything, credentials and authkey
        # included, as the connection and codec pickle themselves.
        return (_rebuild, (type(self), self._conn.options, self._codec.options, self._ident,
                           self._anonymous, self._opts, self._pickle_extra()))

    def __interproc_redis_ref__(self) -> tuple:
        # Inside a payload (an object sent through a queue): only what names
        # the object; the reader supplies the connection and codec.
        return (self._KIND, self._ident, self._anonymous, self._opts, self._ref_extra())

    def _where(self) -> str:
        return "anonymous" if self._anonymous else f"name={self._ident!r}"
