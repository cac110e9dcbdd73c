"""What the Redis containers and shared values have in common.

Every object lives under its own Redis Cluster hash tag, ``ip:{<id>}:<part>``
(``keys.object_key``), so that one Lua script may touch all of its keys, on a
standalone server or a cluster alike.  ``<id>`` is the user's name for a named
object and ``anon:<hex>`` for an anonymous one.  The parts used here:

- ``meta``: a hash, ``kind`` plus the creation options (typecode, length...).
  Opening a name checks the kind (``TypeError`` on a mismatch, as the
  shared-memory objects do).
- ``lock``: the object's lock, a string holding the holder's token (process
  and thread), with a lease (``PX``).  A live holder renews the lease from a
  background thread; a dead one loses the lock when the lease runs out.
- ``wake``: a list a releaser pushes one element on, for a waiter blocked in
  ``BLPOP`` to retry at once instead of at its next poll.

**Every operation is one Lua script** that first checks ``lock``: when another
thread or process holds it, the script changes nothing and answers
``IPLOCKED``; the caller then waits for the lock, takes it, and runs the
operation again while holding it.  So ``with obj.lock:`` (``get_lock()`` for a
Value or Array) makes a sequence of operations atomic with respect to every
other process and thread, as holding the shared-memory heap's lock does, and
an operation that finds the lock free costs one round trip.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from typing import Any, Optional, Sequence

import redis

from . import client as _client
from . import codec as _codec_module
from . import keys as _keys
from ._common import _reading  # the codec of the handle decoding a payload
from .codec import Codec as _Codec

__all__ = ["RedisObject", "LeaseLock", "open_object", "register"]

# ------------------------------------------------------------ thread tokens

_process_token = uuid.uuid4().hex


def _token() -> str:
    """Who the caller is, for the lock: this process and this thread."""
    return f"{_process_token}:{threading.get_ident()}"


# ---------------------------------------------------------------- scripts

_LOCK_CHECK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return redis.error_reply('IPLOCKED') end
"""


def lua(body: str) -> str:
    """A script whose KEYS[1] is the object's lock and ARGV[1] the caller's
    token: it refuses to run while another holds the lock."""
    return _LOCK_CHECK + body


_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# 1: released; 0: not held by the caller (its lease ran out).
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('RPUSH', KEYS[2], 1)
  redis.call('PEXPIRE', KEYS[2], 5000)
end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


def translate(exc: BaseException, conn: Any = None, op: Optional[str] = None) -> BaseException:
    """The backend's exception for a redis-py one (see client.translate)."""
    return _client.translate(exc, getattr(conn, "address", None), op)


# -------------------------------------------------------------- the lock

# lock key -> [thread ident, count, token, connection, lease in ms] for the
# locks this process holds; guarded by _held_mutex.
_held: "dict[str, list]" = {}
_held_mutex = threading.Lock()
_renewer: Optional[threading.Thread] = None
_renewer_wake = threading.Event()


def _after_fork_in_child() -> None:
    # A new process is a new holder: the parent's holds stay the parent's.
    global _process_token, _held_mutex, _renewer, _renewer_wake
    _process_token = uuid.uuid4().hex
    _held.clear()
    _held_mutex = threading.Lock()
    _renewer = None
    _renewer_wake = threading.Event()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _renew_loop() -> None:
    while True:
        with _held_mutex:
            held = [(key, entry[2], entry[3], entry[4]) for key, entry in _held.items()]
        if held:
            interval = min(lease for *_, lease in held) / 3000.0
        else:
            interval = 1.0
        _renewer_wake.wait(interval)
        _renewer_wake.clear()
        for key, token, conn, lease in held:
            with _held_mutex:
                if key not in _held:
                    continue
            try:
                conn.script(_RENEW)(keys=[key], args=[token, lease])
            except Exception:
                pass  # the next round tries again; release reports a lost lease


def _start_renewer() -> None:
    global _renewer
    if _renewer is None or not _renewer.is_alive():
        _renewer = threading.Thread(target=_renew_loop, name="interproc-redis-lease", daemon=True)
        _renewer.start()


class LeaseLock:
    """The lock of a Redis container or shared value.

    ``acquire(block=True, timeout=None) -> bool``, ``release()``, ``with``.
    Re-entrant for the thread holding it (as ``threading.RLock``, and as the
    shared-memory containers' lock), so the object's own operations work
    inside a ``with`` block.  Every operation on the object waits while
    another thread or process holds it.

    The lock is held under a lease (``lease`` seconds, renewed every third
    of it by a background thread while held): a holder that dies, or loses
    the server for longer than the lease, loses the lock.  ``release()``
    then warns (``RuntimeWarning``) that the operations done under it may
    have interleaved with others'.
    """

    __slots__ = ("_conn", "_key", "_wake", "_lease_ms", "__weakref__")

    def __init__(self, conn: Any, key: str, wake_key: str, lease: float) -> None:
        self._conn = conn
        self._key = key
        self._wake = wake_key
        self._lease_ms = max(1, int(lease * 1000))

    def _try(self, token: str) -> bool:
        try:
            return bool(self._conn.script(_ACQUIRE)(keys=[self._key], args=[token, self._lease_ms]))
        except redis.RedisError as exc:
            raise translate(exc, self._conn, "lock") from exc

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; False if ``block`` is false or ``timeout`` passed first."""
        ident = threading.get_ident()
        with _held_mutex:
            entry = _held.get(self._key)
            if entry is not None and entry[0] == ident:
                entry[1] += 1
                return True
        token = _token()
        if timeout is not None and timeout < 0:
            timeout = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._try(token):
                break
            if not block:
                return False
            wait = 0.2
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            # A releaser pushes on the wake list; the timeout bounds the
            # wait for a holder whose lease runs out instead.
            try:
                self._conn.client.blpop([self._wake], timeout=max(wait, 0.01))
            except redis.RedisError as exc:
                raise translate(exc, self._conn, "lock") from exc
        with _held_mutex:
            _held[self._key] = [ident, 1, token, self._conn, self._lease_ms]
            _start_renewer()
        return True

    def release(self) -> None:
        """Drop one hold; RuntimeError if this thread does not hold the lock."""
        ident = threading.get_ident()
        with _held_mutex:
            entry = _held.get(self._key)
            if entry is None or entry[0] != ident:
                raise RuntimeError("cannot release un-acquired lock")
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._key]
        try:
            released = self._conn.script(_RELEASE)(keys=[self._key, self._wake], args=[entry[2]])
        except redis.RedisError as exc:
            raise translate(exc, self._conn, "lock") from exc
        if not released:
            warnings.warn(
                f"the lock {self._key!r} had expired before release(): its lease ran out, "
                "so operations done under it may have interleaved with other processes'",
                RuntimeWarning, stacklevel=2)

    def locked_by_me(self) -> bool:
        """Whether the calling thread holds the lock."""
        with _held_mutex:
            entry = _held.get(self._key)
            return entry is not None and entry[0] == threading.get_ident()

    def locked(self) -> bool:
        """Whether anyone holds the lock."""
        try:
            return bool(self._conn.client.exists(self._key))
        except redis.RedisError as exc:
            raise translate(exc, self._conn, "lock") from exc

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<LeaseLock {self._key!r} held_by_me={self.locked_by_me()}>"


# ------------------------------------------------------------ the objects

def open_object(conn: Any, kind: str, name: Optional[str], create: Optional[bool],
                parts: Sequence[str], options: Optional[dict] = None,
                init: Optional[dict] = None) -> Any:
    """Create or open the object ``name`` (None: a new anonymous one) of ``kind``.

    ``keys.create_meta`` with the parts every object of this module has
    (``lock``, ``wake``) added; ``init`` fills a new object's data parts in
    the step that creates it, so that nobody sees it half made.  Returns the
    ``keys.Meta`` (``.name`` is the object's id, ``.created``).
    """
    if name is None:
        if create is False:
            raise ValueError("create=False needs a name: there is nothing to open")
        obj_id, create = _keys.anonymous_name(), True
    else:
        obj_id = _keys.check_name(name)
    return _keys.create_meta(conn, obj_id, kind, options or {}, create,
                             parts=("lock", "wake", *parts), init=init)


class RedisObject:
    """Base of the Redis containers and values: identity, lock, keys, pickling.

    Subclasses set ``_KIND`` (the ``kind`` in meta) and ``_PARTS`` (their
    data keys, after ``lock``; the scripts see them as KEYS[2:]).
    """

    _KIND = ""
    _PARTS: "tuple[str, ...]" = ()

    _conn: Any
    _codec: Any
    _id: str
    _name: Optional[str]
    _lease: float
    _keylist: list

    def _setup(self, conn: Any, codec: Any, obj_id: str, name: Optional[str], lease: float) -> None:
        d = object.__setattr__
        d(self, "_conn", conn)
        d(self, "_codec", codec)
        d(self, "_reader", codec.bind(conn))
        _codecs[id(conn)] = codec
        d(self, "_id", obj_id)
        d(self, "_name", name)
        d(self, "_lease", lease)
        d(self, "_closed", False)
        d(self, "_keylist", [_keys.object_key(obj_id, p) for p in ("lock", *self._PARTS)])
        d(self, "_lock", LeaseLock(conn, self._keylist[0], _keys.object_key(obj_id, "wake"), lease))

    # -------------------------------------------------------------- running

    def _run(self, source: str, *args: Any) -> Any:
        """Run the operation ``source`` (made with :func:`lua`) on this object's keys."""
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")
        script = self._conn.script(source)
        try:
            try:
                return script(keys=self._keylist, args=[_token(), *args])
            except redis.ResponseError as exc:
                if str(exc) != "IPLOCKED":
                    raise
            # Another holds the lock: wait for it, and run under it.
            with self._lock:
                return script(keys=self._keylist, args=[_token(), *args])
        except redis.RedisError as exc:
            raise translate(exc, self._conn, f"{type(self).__name__} operation") from exc

    # -------------------------------------------------------------- public

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous object."""
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """This handle can no longer be used (ValueError); the object stays."""
        object.__setattr__(self, "_closed", True)

    def unlink(self) -> None:
        """Delete a named object's keys: the object is gone for every handle.
        Nothing happens for an anonymous one (its manager deletes it)."""
        if self._name is not None:
            self._destroy()

    def _destroy(self) -> None:
        """Delete every key of the object (its manager does this for the
        anonymous ones it made, at shutdown)."""
        try:
            _keys.delete_object(self._conn, self._id, self._KIND)
        except FileNotFoundError:
            pass

    # ----------------------------------------------------- values, pickling

    def _dumps(self, value: Any) -> bytes:
        return self._codec.dumps(value)

    def _loads(self, payload: bytes) -> Any:
        # References to other objects read here open them with this
        # handle's codec (see _from_reference; the queues and locks read it
        # from the same place).
        previous = getattr(_reading, "codec", None)
        _reading.codec = self._codec
        try:
            return self._reader.loads(payload, self._id)
        finally:
            _reading.codec = previous

    def _extra(self) -> Any:
        """What else a handle needs to be rebuilt elsewhere (plain data; see _restore)."""
        return None

    def _restore(self, extra: Any) -> None:
        pass

    def __reduce__(self) -> tuple:
        # To another process (a child, a queue): everything, credentials and
        # authkey included, as the connection and codec pickle themselves.
        return (_rebuild, (type(self), self._conn.options, self._codec.options, self._id,
                           self._name, self._lease, self._extra()))

    def __interproc_redis_ref__(self) -> tuple:
        # Into a value stored on the server: only what names the object; the
        # reader supplies the connection and codec.
        return (self._KIND, self._id, self._name, self._lease, self._extra())


# The codec last used with each connection in this process: the codec for a
# reference decoded without a handle's (by Codec.loads called directly).
_codecs: "dict[int, Any]" = {}


def _from_reference(cls: type) -> Any:
    def factory(args: list, context: Any) -> Any:
        obj_id, name, lease, extra = args
        if context is None:
            raise ValueError(f"a reference to the {cls._KIND} {obj_id!r} was read without "
                             "a connection to open it with")
        codec = getattr(_reading, "codec", None) or _codecs.get(id(context)) or _Codec()
        obj = object.__new__(cls)
        obj._setup(context, codec, obj_id, name, lease)
        obj._restore(extra)
        return obj
    return factory


def register(cls: type) -> type:
    """Class decorator: instances read back out of values become handles."""
    _codec_module.register_ref(cls._KIND, _from_reference(cls))
    return cls


def _rebuild(cls: type, conn_options: dict, codec_options: dict, obj_id: str,
             name: Optional[str], lease: float, extra: Any) -> Any:
    obj = object.__new__(cls)
    conn = _client.Connection.from_options(conn_options)
    codec = _Codec(**codec_options)
    obj._setup(conn, codec, obj_id, name, lease)
    obj._restore(extra)
    return obj
