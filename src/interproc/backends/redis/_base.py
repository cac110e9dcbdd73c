"""What every object of the Redis backend is: a name, its keys, a connection and a codec.

:class:`RedisObject` is the base of every kind (queues, synchronization
primitives, containers, Value and Array).  It holds:

- **Keys**: every key of an object is ``ip:{<id>}:<part>`` (``keys.object_key``),
  one Redis Cluster hash slot per object, so that one Lua script may touch
  them all.  ``<id>`` is the user's name for a named object and
  ``anon:<hex>`` for an anonymous one.  Subclasses declare their parts in
  ``_PARTS``; ``meta`` (kind and creation options) is ``keys``' own.
- **Open/create rules** (:meth:`RedisObject._open`): ``name=None`` makes a
  new anonymous object (``create=False`` is then a ValueError: there is
  nothing to open); with a name, ``create=None`` opens or creates, ``True``
  must create (FileExistsError), ``False`` must open (FileNotFoundError),
  and opening a name that holds another kind raises TypeError -- the rules
  of the shared-memory objects.  An opener gets the creator's options.
- **Pickling**: to another process (a child under any start method), a
  handle pickles as the connection options (credentials included), the
  codec options (authkey included), the id and the per-handle state
  (:meth:`_handle_state`).  Inside a stored value (an object put in a queue or a
  dict) it is a *reference* (``codec.REF_METHOD``), plain data naming the
  object; the codec that reads it back hands itself to the factory
  registered by :func:`register`, and the object opens on that codec's
  connection (``codec.context``).  A reference read back is data: the
  factory checks its exact shape (CorruptDataError otherwise).
- **Codec**: each handle's codec is bound to its connection and to the
  object's id (``codec.bind``), so that with an authkey every signature it
  makes or accepts belongs to this object: a value copied in from another
  object is refused (SignatureError).
- **Life**: ``close()`` ends this handle only (its operations then raise
  ValueError; the object and other handles are unaffected); ``unlink()``
  deletes a named object's keys for every handle (nothing for an anonymous
  one); ``_destroy()`` deletes every key of the object (the manager's
  ``shutdown()`` does this for the anonymous objects it made).  An
  anonymous object made inside :func:`expiring` (by a manager with an
  ``orphan_ttl``) has every key expiring unless its maker keeps it alive
  (``synchronize.keep_alive``); its scripts give the keys they make afresh
  the same expiry (:func:`alive`).

Errors: every Redis call goes through :meth:`_call` or :meth:`_script`, which
raise the backend's exceptions (``client.translate``): a server that cannot
be reached -> ``UnreachableError`` (nothing happened); a connection lost
mid-command -> ``ConnectionLostError`` and a reply that did not come within
the socket timeout -> ``ServerTimeoutError`` (both: the operation may or may
not have happened; nothing is resent); with ``replicas``, a write too few
replicas acknowledged -> ``ReplicationError`` (it did happen; see
"Replicas" in ``client.py`` for which scripts wait, and how one says so:
``_command`` waits unless its command only reads).  Timeouts of blocking operations and
the death of other processes are the subclasses' business
(``_waiters``, ``_guarded``).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
import secrets
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import client as _client
from . import codec as _codec
from . import keys as _keys
from .errors import CorruptDataError, ObjectGoneError

__all__ = ["RedisObject", "register", "thread_token", "call", "alive", "expiring"]

_local = threading.local()

#: Every registered class, by kind (``register`` fills it).
KINDS: Dict[str, type] = {}


def thread_token() -> str:
    """Who the caller is, for lock ownership: this thread of this process
    (random, so never reused; a new one after a fork)."""
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
    except BaseException as exc:
        raise_translated(exc, conn, op)


def raise_translated(exc: BaseException, conn: Any, op: Optional[str]) -> None:
    """Raise what ``client.translate`` makes of ``exc`` (the original as
    ``__cause__``), or ``exc`` itself; call it in the ``except`` clause."""
    new = _client._translate_for(exc, conn, op)
    if new is exc:
        raise exc
    raise new.with_traceback(None) from exc


def _rebuild(cls: type, conn_options: Dict[str, Any], codec_options: Dict[str, Any], ident: str,
             anonymous: bool, opts: Dict[str, Any], state: Any, uid: str) -> "RedisObject":
    return cls._handle(_client.Connection.from_options(conn_options),
                       _codec.Codec(**codec_options), ident, anonymous, opts, state, uid)


# Every operation's script starts with this: the last key is the object's
# metadata and the last argument the incarnation its handle opened.  When
# they differ (the object was deleted: unlinked, its manager shut down, or
# the server lost its data), the operation changes nothing and the caller
# raises ObjectGoneError, instead of making the object afresh from nothing.
# Both are taken off KEYS and ARGV, so the body sees only its own.
# _ttl: the expiry of an expiring object's keys (see _EXPIRING_GUARD), false
# here; a body may give keys it makes afresh that expiry itself, and say so
# with ``creates``, which spares the generic check after it.
_ALIVE_GUARD = """
local _uid = table.remove(ARGV)
local _ttl = false
if redis.call('HGET', table.remove(KEYS), 'uid') ~= _uid then
  return redis.error_reply('IPGONE')
end
"""
_GONE_REPLY = "IPGONE"
_ONE_COMMAND = "return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))"
_ONE_READ = _client.NO_WAIT + _ONE_COMMAND
#: The commands ``_command`` runs without waiting for replicas.
_READ_COMMANDS = frozenset({"EXISTS", "GET", "HGET", "HMGET", "HLEN", "LLEN", "ZCARD", "SCARD",
                            "PTTL"})
_alive_sources: Dict[Tuple[str, bool], str] = {}

# The guard of an anonymous object that expires with its manager
# (``keys.create_meta``'s ``expire_ms``): the same check, then the body (as
# a function: _EXPIRING_WRAP), then every key of KEYS the body left without
# an expiry -- made afresh: Redis deletes an emptied list, hash or set, and SET drops an
# expiry -- gets the object's.  Otherwise a key refilled just before the
# manager died would outlive it for ever.  The expiry (ms) is the argument
# before the uid.
_EXPIRING_GUARD = """
local _uid = table.remove(ARGV)
local _ttl = table.remove(ARGV)
if redis.call('HGET', table.remove(KEYS), 'uid') ~= _uid then
  return redis.error_reply('IPGONE')
end
"""
_EXPIRING_WRAP = """local _reply = (function()
"""
_EXPIRING_END = """
end)()
for _, _key in ipairs(%s) do
  if redis.call('PTTL', _key) == -1 then redis.call('PEXPIRE', _key, _ttl) end
end
return _reply
"""
_CREATES = re.compile(r"-- ip:creates ([0-9,]*)\n")


def creates(*indices: int) -> str:
    """A marker for a script's source: the only KEYS (1-based) that its body
    may make afresh without an expiry, so that the expiring form of the
    script (``alive``) checks those alone, each check a server-side call on
    every operation.  ``creates()``: none (a read, or a script that gives
    what it makes an expiry itself).  Without a marker every key is
    checked."""
    return f"-- ip:creates {','.join(str(i) for i in indices)}\n"


def _expiring_end(body: str) -> str:
    marked = _CREATES.search(body)
    if marked is None:
        return _EXPIRING_END % "KEYS"
    listed = [f"KEYS[{i}]" for i in sorted({int(i) for i in marked.group(1).split(",") if i})]
    if not listed:
        return ""
    # A key past those passed (a guarded script gets only the keys it
    # names) is nil, which ends ipairs: listed in increasing order, the
    # ones passed come first.
    return _EXPIRING_END % ("{" + ", ".join(listed) + "}")


#: (text, replacement) pairs applied to the scripts of expiring objects:
#: keys a script derives instead of finding them in KEYS (waiters' wake
#: keys) carry an expiry of their own, which must not be longer than the
#: object's (``_ttl`` in Lua).  Filled by the modules that write such keys.
EXPIRY_CAPS: List[Tuple[str, str]] = []


def is_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is a script's answer that its object is gone
    (``_ALIVE_GUARD``)."""
    return isinstance(exc, Exception) and str(exc) == _GONE_REPLY


def alive(source: str, expiring: bool = False) -> str:
    """``source`` run only on the incarnation of an object its handle opened
    (see ``_ALIVE_GUARD``): pass the metadata key last in KEYS and the uid
    last in ARGV.  ``expiring``: the form for an object whose keys expire
    (``_EXPIRING_GUARD``), with the expiry in ms before the uid; a handle
    passes ``RedisObject._expiring`` and ends ARGV with ``_tail``."""
    guarded = _alive_sources.get((source, expiring))
    if guarded is None:
        if expiring:
            body = source
            for text, capped in EXPIRY_CAPS:
                body = body.replace(text, capped)
            end = _expiring_end(body)
            # With nothing to check after it, the body runs unwrapped,
            # sparing the hottest scripts a closure made on every call.
            guarded = (_EXPIRING_GUARD + _EXPIRING_WRAP + body + end if end
                       else _EXPIRING_GUARD + body)
        else:
            guarded = _ALIVE_GUARD + source
        _alive_sources[(source, expiring)] = guarded
    return guarded


# The expiry (ms) that the objects made in this context get: set by a
# manager that keeps its anonymous objects alive (``expiring``).
_creation_expiry: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar(
    "interproc_redis_creation_expiry", default=None)


@contextlib.contextmanager
def expiring(ms: Optional[int]) -> Iterator[None]:
    """Anonymous objects made inside get every key expiring after ``ms``
    (None: never), to be kept alive by their maker (see ``RedisManager``'s
    ``orphan_ttl``)."""
    token = _creation_expiry.set(ms)
    try:
        yield
    finally:
        _creation_expiry.reset(token)


def register(cls: type) -> type:
    """Class decorator: references to instances, read back out of stored
    values, become handles opened with the reading codec.

    The arguments of a reference are data read from Redis, so they are
    checked for exactly the shape ``__interproc_redis_ref__`` gives them
    (an object id, its anonymity, its options as a str-keyed dict, and the
    kind's per-handle state, checked by ``_state_from_ref``); anything else
    is a CorruptDataError, and nothing in them is imported or called."""
    def factory(args: List[Any], codec: Any) -> Any:
        what = f"a reference to a {cls._KIND}"
        if type(args) is not list or len(args) != 5:
            raise CorruptDataError(f"{what} has malformed arguments")
        ident, anonymous, opts, state, uid = args
        if type(anonymous) is not bool or type(opts) is not dict or type(uid) is not str \
                or not all(type(k) is str for k in opts):
            raise CorruptDataError(f"{what} has malformed arguments")
        try:
            ident = _keys._check_any_name(ident)
        except (TypeError, ValueError):
            raise CorruptDataError(f"{what} names no valid object") from None
        if anonymous != ident.startswith(_keys.ANON):
            raise CorruptDataError(f"{what} ({ident!r}) is malformed")
        if codec.context is None:
            raise ValueError(f"{what} ({ident!r}) was read by a codec without a connection "
                             "to open it with")
        try:
            state = cls._state_from_ref(state, codec)
            return cls._handle(codec.context, codec, ident, anonymous, opts, state, uid)
        except CorruptDataError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError,
                OverflowError) as exc:
            raise CorruptDataError(f"{what} ({ident!r}) is malformed: {exc}") from None

    _codec.register_ref(cls._KIND, factory)
    KINDS[cls._KIND] = cls
    return cls


class RedisObject:
    """Base of every Redis object (see the module docstring).

    Subclasses set ``_KIND`` (the kind in the metadata, and the reference
    tag) and ``_PARTS`` (their data keys), set their per-handle state
    before calling :meth:`_open`, and read their keys and options in
    :meth:`_setup`.
    """

    _KIND = "object"
    _PARTS: Tuple[str, ...] = ()
    #: Declared parts with an expiry of their own (a lock's lease), which
    #: keeping an expiring object alive must not lengthen.
    _OWN_EXPIRY_PARTS: Tuple[str, ...] = ()
    #: Undeclared parts to keep alive with the object (a queue's ``procs``).
    _KEPT_PARTS: Tuple[str, ...] = ()
    _closed = False
    #: Whether the object's keys expire unless kept alive (see ``alive``).
    _expiring = False

    _conn: Any
    _codec: Any
    _ident: str
    _anonymous: bool
    _opts: Dict[str, Any]

    # ------------------------------------------------------------ opening

    @classmethod
    def _declared_parts(cls) -> Tuple[str, ...]:
        """Every part the object may ever have (``keys.create_meta``)."""
        return tuple(cls._PARTS)

    def _open(self, conn: Any, name: Optional[str], create: Optional[bool], codec: Any,
              options: Dict[str, Any], init: Optional[Dict[str, Any]] = None) -> Any:
        """Create or open the object (the rules in the module docstring) and
        attach this handle to it; returns the ``keys.Meta`` (``.created``).

        ``init`` may be a function of the codec bound to the new object,
        for initial payloads: their signatures are bound to the object's id,
        which an anonymous object only gets here.  An anonymous object made
        inside ``expiring(ms)`` expires unless kept alive."""
        expire_ms = None
        if name is None:
            if create is False:
                raise ValueError("create=False needs a name: there is nothing to open")
            ident, anonymous, create = _keys.anonymous_name(), True, True
            expire_ms = _creation_expiry.get()
        else:
            ident, anonymous = _keys.check_name(name), False
        bound = (codec if codec is not None else _codec.Codec()).bind(conn, ident)
        if callable(init):
            init = init(bound)
        meta = _keys.create_meta(conn, ident, self._KIND, options, create,
                                 parts=self._declared_parts(), init=init, codec=bound,
                                 expire_ms=expire_ms)
        try:
            self._attach(conn, bound, ident, anonymous, dict(meta), meta.uid)
        except CorruptDataError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            if meta.created:
                raise
            # Options read back from the server that this kind cannot use
            # (a maxsize that is not a number...): damaged or forged.
            raise CorruptDataError(f"the metadata of {self._KIND} {ident!r} is damaged or "
                                   f"forged: {exc!r}") from None
        return meta

    def _attach(self, conn: Any, codec: Any, ident: str, anonymous: bool,
                opts: Dict[str, Any], uid: str) -> None:
        if type(uid) is not str:
            raise TypeError(f"an object's incarnation id must be a str, not {type(uid).__name__}")
        self._conn = conn
        # Bound to the connection (references read with it open there) and
        # to the object (its signatures are refused anywhere else).
        self._codec = (codec if codec is not None else _codec.Codec()).bind(conn, ident)
        self._ident = ident
        self._anonymous = anonymous
        self._opts = dict(opts)
        self._uid = uid
        # Only an anonymous object expires: in a named one's options (a
        # forged reference) it is ignored.
        expire_ms = self._opts.get(_keys.EXPIRY_OPTION) if anonymous else None
        if expire_ms is not None and (type(expire_ms) is not int or expire_ms < 1):
            raise ValueError(f"an object's expiry must be a positive int of ms, not {expire_ms!r}")
        self._expiring = expire_ms is not None
        # What ends ARGV of every guarded script (see ``alive``).
        self._tail: Tuple[Any, ...] = (uid,) if expire_ms is None else (expire_ms, uid)
        self._meta = _keys.meta_key(ident)
        self._opname = f"{self._KIND} {ident!r}"
        self._setup()

    def _setup(self) -> None:
        """Subclasses compute their keys and read their options (``self._opts``) here."""

    @classmethod
    def _handle(cls, conn: Any, codec: Any, ident: str, anonymous: bool,
                opts: Dict[str, Any], state: Any, uid: str) -> "RedisObject":
        """Another handle on the incarnation ``uid`` of an existing object,
        with per-handle ``state``."""
        self = cls.__new__(cls)
        self._set_handle_state(state)
        self._attach(conn, codec, ident, anonymous, opts, uid)
        return self

    # ------------------------------------------------- per-handle state

    def _handle_state(self) -> Any:
        """What else a pickled handle carries (a lock's lease, a Barrier's action...)."""
        return None

    def _set_handle_state(self, state: Any) -> None:
        """Restore :meth:`_handle_state`; runs before :meth:`_setup`."""

    def _ref_state(self) -> Any:
        """:meth:`_handle_state` as plain data, for a reference."""
        return self._handle_state()

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        """The inverse of :meth:`_ref_state`, on data read from Redis: a
        kind with per-handle state checks its exact shape here
        (CorruptDataError, TypeError or ValueError otherwise)."""
        if state is not None:
            raise CorruptDataError(f"a reference to a {cls._KIND} carries unexpected state")
        return state

    def __reduce__(self):
        # To another process (a child): everything, credentials and authkey
        # included, as the connection and codec pickle themselves.
        return (_rebuild, (type(self), self._conn.options, self._codec.options, self._ident,
                           self._anonymous, self._opts, self._handle_state(), self._uid))

    def __interproc_redis_ref__(self) -> tuple:
        # Inside a stored value: only what names the object; the reader
        # supplies the connection and codec.
        return (self._KIND, self._ident, self._anonymous, self._opts, self._ref_state(), self._uid)

    # ------------------------------------------------------------ running

    def _key(self, part: str) -> str:
        return _keys.object_key(self._ident, part)

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"{self._KIND} {self._where()} is closed")

    def _op(self) -> str:
        return self._opname

    def _call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, a redis-py call, on an open handle."""
        if self._closed:
            self._check()
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            raise_translated(exc, self._conn, self._opname)

    def _script(self, source: str, keys: Iterable[str], args: Iterable[Any],
                acks: Optional[str] = None) -> Any:
        """Run the Lua ``source`` on an open handle, on the incarnation of
        the object it opened (ObjectGoneError if that was deleted).
        ``acks``: what to do about replicas, if not what the source says
        (``client.acks_of``)."""
        if self._closed:
            self._check()
        source, keys, args = self._guarded(source, keys, args)
        try:
            return self._conn.script(source)(keys, args, None, acks)
        except BaseException as exc:
            self._raise(exc)

    def _guarded(self, source: str, keys: Iterable[str],
                 args: Iterable[Any]) -> Tuple[str, List[Any], List[Any]]:
        """The script, keys and arguments that run ``source`` on this
        handle's incarnation of the object (``alive``): what
        :meth:`_script` sends, and the awaitable forms too."""
        return alive(source, self._expiring), [*keys, self._meta], [*args, *self._tail]

    def _command(self, command: str, key: str, *args: Any) -> Any:
        """One Redis command on one key of this object, run as a script so
        that it too is refused once the object is gone (a plain HSET would
        make the key afresh).  Replicas are waited for unless it only reads."""
        return self._script(_ONE_READ if command in _READ_COMMANDS else _ONE_COMMAND,
                            [key], [command, *args])

    def _raise(self, exc: BaseException) -> None:
        """Raise what a failed operation of this handle means; call it in
        the ``except`` clause."""
        if is_gone(exc):
            raise self._gone() from None
        raise_translated(exc, self._conn, self._opname)

    def _gone(self) -> ObjectGoneError:
        return ObjectGoneError(
            f"the {self._KIND} {self._where()} no longer exists on the server: it was unlinked, "
            "the manager that made it shut down, or the server lost its data (restarted without "
            "persistence, or failed over to a replica that had not received it); this handle "
            "cannot be used any more"
        )

    @property
    def _client(self) -> Any:
        return self._conn.client

    def _dumps(self, value: Any) -> bytes:
        return self._codec.dumps(value)

    def _loads(self, payload: bytes, key: Optional[str] = None) -> Any:
        """Decode a payload read from this object; references in it open
        with this handle's connection and codec."""
        return self._codec.loads(payload, self._ident if key is None else key)

    # ------------------------------------------------------------ public

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous object."""
        return None if self._anonymous else self._ident

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """This handle can no longer be used (ValueError); the object and
        other handles stay."""
        self._closed = True
        if self.__dict__.get("_aio_waiters"):
            from ._aio import close_waiters

            close_waiters(self)  # its awaiting calls raise ValueError

    def unlink(self) -> None:
        """Delete a named object's keys from Redis: the object is gone for
        every handle.  Nothing for an anonymous one (whoever made it, the
        manager, deletes those with :meth:`_destroy`)."""
        if not self._anonymous:
            self._destroy()

    def _destroy(self) -> None:
        """Delete every key of the object (:meth:`_destroy_keys`); nothing
        if it is gone already."""
        try:
            self._destroy_keys(self._conn, self._ident)
        except FileNotFoundError:
            pass

    @classmethod
    def _destroy_keys(cls, conn: Any, ident: str) -> None:
        """Delete every key of the object ``ident``, of this kind: the
        declared parts and the metadata (``keys.delete_object``).  Kinds
        with keys their parts do not name (a queue's consumers, waiters'
        wake keys) delete those first, then call this.  A classmethod, so
        that an object can be deleted by name without a handle
        (``interproc rm --url``).  FileNotFoundError if there is none."""
        _keys.delete_object(conn, ident, cls._KIND)

    def _lifetime(self) -> Optional[Tuple[Any, List[str], str, int]]:
        """For an expiring object, what keeping it alive takes: the
        connection, the keys (the metadata first, then every part that has
        no expiry of its own), the incarnation and the expiry in ms; None
        for any other object."""
        if not self._expiring:
            return None
        parts = [p for p in self._declared_parts() if p not in self._OWN_EXPIRY_PARTS]
        keys = [self._meta] + [self._key(p) for p in parts + list(self._KEPT_PARTS)]
        return self._conn, keys, self._uid, int(self._tail[0])

    def _expiry_options(self) -> Dict[str, Any]:
        """The options that make another handle on this object's keys (a
        lock living with it) expire as it does."""
        return {_keys.EXPIRY_OPTION: self._tail[0]} if self._expiring else {}

    def _where(self) -> str:
        return "anonymous" if self._anonymous else f"name={self._ident!r}"
