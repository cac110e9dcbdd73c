"""RedisDict, RedisList, RedisSet and RedisNamespace: the shared containers on Redis.

Same API and semantics as the shared-memory containers (docs/api.md,
"Shared containers"), with the data on a Redis server or cluster so that
processes on several machines share them.  Every operation is one Lua
script on the container's keys (one hash slot: ``ip:{<id>}:<part>``), so it
is atomic; ``with c.lock:`` makes several atomic together (see _guarded).

**dict** (and Namespace), parts after ``lock``:

- ``h``: hash, canonical key encoding (``interproc._core.encode_key``) ->
  the value's payload (the codec's bytes).  Keys therefore compare exactly
  as in a SharedDict, in every process, whatever its hash seed.
- ``k``: hash, encoding -> the payload of the *original* key, only for keys
  that the encoding does not give back as they were (``True`` and ``1.0``
  decode as ``1``, an ``IntEnum`` as its int, other objects are pickled);
  the first key stored is the one kept, as in a dict.
- ``o``: sorted set, encoding scored by the insertion counter: insertion
  order (O(log n) per insert or delete, about one more copy of the
  encodings in memory), LIFO ``popitem``, iteration by rank.
- ``ver``: counter bumped by every change of the key set; the insertion
  scores come from it.  Iteration compares it at each chunk and at the end
  and raises RuntimeError when it moved; changes made through this process's
  handles are noticed at the next item, as with a dict.

With an authkey, the payloads in ``h`` and ``k`` are signed for their
object, their part and their field (``codec.dumps(obj, part, field)``): a
value or original key copied to another field, or from ``k`` to ``h``, is
refused with SignatureError.  The fields themselves are not signed (an
exact key is its own encoding); a field whose decoding would unpickle is
refused instead.

**set**: a dict's parts (``h``, ``k``, ``o``, ``ver``) with the same
constant payload for every element, so that elements compare, keep their
first form and iterate exactly as a dict's keys do; the bulk updates
(``update``, ``-=``, ``&=``, ``^=``...) are one script each.  The constant
payload is never signed nor read; an element's original form in ``k`` is
signed for its field as a dict's key is.

**list**: ``l``, a Redis list of payloads (LINDEX/LSET/RPUSH/LRANGE; Lua for
insert, slices, pop at an index, reverse, ``*=``); ``ver``, bumped by every
change, lets ``sort()`` and ``remove()`` compute in Python and commit only if
nothing changed meanwhile (optimistic retry).  Payloads are signed for the
list only, not their index: every insert and deletion moves the others.

``increment`` reads the value, adds in Python, and stores it only if the
payload is still the one read (compare-and-set in Lua, retried): atomic
for any codec, signed or not, and for any number type.

Timeouts, peer death, lost connections and closed handles: as for every
object guarded by its own lock (``_guarded``).  An operation has no timeout
(it waits while another holds ``lock``); a holder that dies is taken over
when its lease runs out; a lost connection raises ConnectionLostError, the
operation having happened entirely or not at all; a closed handle raises
ValueError.
"""
from __future__ import annotations

import collections.abc
import operator
import sys
from typing import Any, Iterable, Iterator, Optional

from ... import _core
from ..._container_api import (CHUNK_FIRST, CHUNK_MAX, KEYS_ADD, KEYS_DISCARD, KEYS_RETAIN,
                                KEYS_TOGGLE, DictAPI, FromKeys, ListAPI, SetAPI, dict_pairs,
                                list_values, set_keys)
from ._base import creates, register
from .client import NO_WAIT, WAIT_QUIETLY
from ._guarded import GuardedObject, lua
from .synchronize import DEFAULT_LEASE, RLock, check_lease
from .codec import Codec
from .errors import SignatureError

__all__ = ["RedisDict", "RedisList", "RedisSet", "RedisNamespace"]

# Indexes handed to Lua (doubles) are clamped to this: no list is that long.
_INDEX_LIMIT = 1 << 50

# id -> number of key-set changes made through this process's handles:
# lets an iteration notice its own process's changes at the next item.
_local_changes: "dict[str, int]" = {}


# ------------------------------------------------------------------ keys

_EXACT = (int, str, bytes, type(None))


def _exact(key: Any) -> bool:
    """Whether decode_key(encode_key(key)) gives key back, type included."""
    t = type(key)
    if t in _EXACT:
        return True
    if t is float:
        return not (key == key and key not in (float("inf"), float("-inf")) and key == int(key))
    if t is tuple or t is frozenset:
        return all(_exact(e) for e in key)
    return False


def _pickle_free(data: bytes) -> bool:
    """Whether decoding this key encoding would unpickle nothing."""
    pos, todo, end = 0, 1, len(data)
    while todo:
        if pos >= end:
            return False
        tag = data[pos:pos + 1]
        todo -= 1
        if tag == b"n":
            pos += 1
        elif tag in (b"i", b"f"):
            pos += 9
        elif tag in (b"s", b"b", b"I"):
            pos += 5 + int.from_bytes(data[pos + 1:pos + 5], sys.byteorder)
        elif tag in (b"t", b"F"):
            todo += int.from_bytes(data[pos + 1:pos + 5], sys.byteorder)
            pos += 5
        else:
            return False
    return pos == end


# ---------------------------------------------------------------- scripts

# KEYS: 1 lock, 2 h, 3 k, 4 o, 5 ver.  ARGV[1]: the caller's token.
_D = """
local function put(f, p, ok)
  if redis.call('HSET', KEYS[2], f, p) == 1 then
    local ver = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[4], ver, f)
    if ok ~= '' and redis.call('HSET', KEYS[3], f, ok) == 1 and _ttl
        and redis.call('HLEN', KEYS[3]) == 1 then
      redis.call('PEXPIRE', KEYS[3], _ttl)  -- made afresh with this key
    end
    if _ttl then
      -- An expiring object's keys made afresh get its expiry: h and o are
      -- emptied, and so made again, together; ver only once.
      if redis.call('PTTL', KEYS[2]) == -1 then
        redis.call('PEXPIRE', KEYS[2], _ttl)
        redis.call('PEXPIRE', KEYS[4], _ttl)
      end
      if ver == 1 then redis.call('PEXPIRE', KEYS[5], _ttl) end
    end
    return 1
  end
  return 0
end
local function drop(f)
  if redis.call('HDEL', KEYS[2], f) == 0 then return 0 end
  redis.call('HDEL', KEYS[3], f)
  redis.call('ZREM', KEYS[4], f)
  redis.call('INCR', KEYS[5])
  return 1
end
local function mget(key, fs)
  local out = {}
  for i = 1, #fs, 1000 do
    local part = redis.call('HMGET', key, unpack(fs, i, math.min(i + 999, #fs)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
"""
# The commonest operations say which keys they may make afresh without an
# expiry (creates): none, since put() gives an expiring object's keys
# theirs; an expiring object's form of them then checks nothing more.
D_GET = lua(NO_WAIT + creates() + "return redis.call('HGET', KEYS[2], ARGV[2])")
D_CONTAINS = lua(NO_WAIT + creates() + "return redis.call('HEXISTS', KEYS[2], ARGV[2])")
D_LEN = lua(NO_WAIT + creates() + "return redis.call('HLEN', KEYS[2])")
D_STATE = lua(NO_WAIT + creates() + "return {tonumber(redis.call('GET', KEYS[5]) or '0'), redis.call('HLEN', KEYS[2])}")
D_SET = lua(_D + creates() + "return put(ARGV[2], ARGV[3], ARGV[4])")
D_SETDEFAULT = lua(_D + """
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then return cur end
put(ARGV[2], ARGV[3], ARGV[4])
return false
""")
D_DEL = lua(_D + "return drop(ARGV[2])")
D_POP = lua(_D + WAIT_QUIETLY + """
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then drop(ARGV[2]) end
return cur
""")
D_POPITEM = lua(_D + WAIT_QUIETLY + """
local last = redis.call('ZREVRANGE', KEYS[4], 0, 0)
if #last == 0 then return false end
local f = last[1]
local out = {f, redis.call('HGET', KEYS[2], f), redis.call('HGET', KEYS[3], f)}
drop(f)
return out
""")
D_UPDATE = lua(_D + """
local added = 0
for i = 2, #ARGV, 3 do added = added + put(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return added
""")
D_CLEAR = lua("""
if redis.call('HLEN', KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('INCR', KEYS[5])
return 1
""")
# ARGV: 2 first rank, 3 count (-1: all), 4 what (0 keys, 1 values, 2 items).
D_CHUNK = lua(_D + NO_WAIT + """
local first = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local last = -1
if n >= 0 then last = first + n - 1 end
local fs = redis.call('ZRANGE', KEYS[4], first, last)
local oks, ps = {}, {}
if #fs > 0 then
  if ARGV[4] ~= '1' then oks = mget(KEYS[3], fs) end
  if ARGV[4] ~= '0' then ps = mget(KEYS[2], fs) end
end
return {tonumber(redis.call('GET', KEYS[5]) or '0'), redis.call('HLEN', KEYS[2]), fs, oks, ps}
""")
# The last inserted entry, left in place: {field, payload, original key}.
D_LAST = lua("""
local last = redis.call('ZREVRANGE', KEYS[4], 0, 0)
if #last == 0 then return false end
local f = last[1]
return {f, redis.call('HGET', KEYS[2], f), redis.call('HGET', KEYS[3], f)}
""")
# Remove an entry read (and decoded) before, if it is still as read.
# ARGV: 2 field, 3 its payload, 4 '1' if it must still be the last inserted,
# 5 (optional) its original key ('' for none).  1 removed, 0 changed meanwhile.
D_TAKE_IF = lua(_D + """
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
if ARGV[4] == '1' and redis.call('ZREVRANGE', KEYS[4], 0, 0)[1] ~= ARGV[2] then return 0 end
if ARGV[5] and (redis.call('HGET', KEYS[3], ARGV[2]) or '') ~= ARGV[5] then return 0 end
return drop(ARGV[2])
""")
# ARGV: 2 field, 3 the payload read ('' if absent), 4 new payload, 5 original key.
D_CAS = lua(_D + """
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if ARGV[3] == '' then
  if cur then return -1 end
elseif cur ~= ARGV[3] then
  return -1
end
return put(ARGV[2], ARGV[4], ARGV[5])
""")


def _changed(size: int, now: int, noun: str = "dictionary") -> None:
    if now != size:
        raise RuntimeError(f"{noun} changed size during iteration")
    raise RuntimeError(f"{noun} keys changed during iteration")


_MISSING = object()


class _HashBase(GuardedObject):
    """The dict machinery RedisDict and RedisNamespace share."""

    _PARTS = ("h", "k", "o", "ver")
    _ITER_NOUN = "dictionary"

    # ---------------------------------------------------------- encoding

    def _field(self, key: Any) -> bytes:
        return _core.encode_key(key)

    # Values and original keys stay at their field, so their signatures
    # are bound to it (and to their part): a signed payload copied to
    # another field, or from 'k' to 'h', is refused.  Without an authkey
    # the codec ignores the place.

    def _dump_value(self, value: Any, field: bytes) -> bytes:
        return self._codec.dumps(value, "h", field)

    def _load_value(self, payload: bytes, field: bytes) -> Any:
        return self._codec.loads(payload, self._ident, "h", field)

    def _okey(self, key: Any, field: bytes) -> bytes:
        return b"" if _exact(key) else self._codec.dumps(key, "k", field)

    def _key_of(self, field: bytes, okey: Optional[bytes]) -> Any:
        if okey is not None:
            return self._codec.loads(okey, self._ident, "k", field)
        if self._untrusted_keys() and not _pickle_free(field):
            raise _signature_error(f"a key of {self._ident!r} is not one this codec stored")
        return _core.decode_key(field)

    def _untrusted_keys(self) -> bool:
        codec = self._codec
        return bool(getattr(codec, "authkey", None)) or getattr(codec, "serializer", "pickle") != "pickle"

    def _changed_keys(self, n: int = 1) -> None:
        if n:
            _local_changes[self._ident] = _local_changes.get(self._ident, 0) + n

    def _decodes_before_removing(self) -> bool:
        """Whether pop and popitem decode an entry before they remove it.
        With an authkey they do, so that one refused (SignatureError) stays
        where it was, as any other read leaves it: a second round trip.
        Without one a payload is removed and then decoded, in one, as a
        queue's item is."""
        return self._codec.authkey is not None

    def _pop_last_checked(self, with_value: bool) -> Any:
        """popitem (``(key, value)``) or set.pop (the key) for a codec that
        decodes before removing; _MISSING if empty."""
        while True:
            reply = self._run(D_LAST)
            if reply is None:
                return _MISSING
            field, payload, okey = reply
            key = self._key_of(field, okey)
            entry = (key, self._load_value(payload, field)) if with_value else key
            if self._run(D_TAKE_IF, field, payload, 1, b"" if okey is None else okey):
                self._changed_keys()
                return entry

    # ---------------------------------------------------------- operations

    def _get(self, key: Any) -> Any:
        field = self._field(key)
        payload = self._run(D_GET, field)
        if payload is None:
            raise KeyError(key)
        return self._load_value(payload, field)

    def _set(self, key: Any, value: Any) -> None:
        field = self._field(key)
        payload = self._dump_value(value, field)
        self._changed_keys(self._run(D_SET, field, payload, self._okey(key, field)))

    def _del(self, key: Any) -> None:
        if not self._run(D_DEL, self._field(key)):
            raise KeyError(key)
        self._changed_keys()

    def _update_pairs(self, pairs: list) -> None:
        if not pairs:
            return
        args: list = []
        for key, value in pairs:
            field = self._field(key)
            args += [field, self._dump_value(value, field), self._okey(key, field)]
        self._changed_keys(self._run(D_UPDATE, *args))

    def _state(self) -> "tuple[int, int]":
        ver, size = self._run(D_STATE)
        return int(ver), int(size)

    def _decode(self, what: int, fields: list, okeys: list, payloads: list) -> list:
        if what == 0:
            return [self._key_of(f, o) for f, o in zip(fields, okeys)]
        if what == 1:
            return [self._load_value(p, f) for f, p in zip(fields, payloads)]
        return [(self._key_of(f, o), self._load_value(p, f))
                for f, o, p in zip(fields, okeys, payloads)]

    def _all(self, what: int) -> list:
        """Every key, value or item (what = 0, 1, 2), read atomically."""
        _, _, fields, okeys, payloads = self._run(D_CHUNK, 0, -1, what)
        return self._decode(what, fields, okeys, payloads)

    def _iterate(self, what: int) -> Iterator[Any]:
        """Iterate like a dict: RuntimeError if the keys change meanwhile."""
        # The first chunk, and with it the version the iteration is bound
        # to, is read at iter(), not at the first next(): a dict's iterator
        # counts a change made between the two too.
        local = _local_changes.get(self._ident, 0)
        first = self._run(D_CHUNK, 0, CHUNK_FIRST, what)
        return self._iterate_from(what, local, first)

    def _iterate_from(self, what: int, local: int, first: tuple) -> Iterator[Any]:
        pos, want = 0, CHUNK_FIRST
        version, size = first[0], first[1]
        chunk = first
        while True:
            ver, n, fields, okeys, payloads = chunk
            if ver != version:
                _changed(size, n, self._ITER_NOUN)
            if not fields:
                return
            for x in self._decode(what, fields, okeys, payloads):
                if _local_changes.get(self._ident, 0) != local:
                    ver, n = self._state()
                    if ver != version:
                        _changed(size, n, self._ITER_NOUN)
                yield x
            pos += len(fields)
            want = min(want * 4, CHUNK_MAX)
            chunk = self._run(D_CHUNK, pos, want, what)


def _signature_error(message: str) -> Exception:
    return SignatureError(message)


def _given_too_late(kind: str, name: Optional[str], what: str = "content") -> ValueError:
    """The error for content given to a constructor that opened an existing
    object: the content would be lost, or mixed into another's."""
    return ValueError(f"{kind} {name!r} already exists; {what} can only be given "
                      "when it is created")


class _FromKeys(FromKeys):
    """``RedisDict.fromkeys(conn, iterable, value=None, **options)`` makes a
    new anonymous RedisDict (it needs the connection first)."""

    def on_class(self, cls: type) -> Any:
        def fromkeys(conn: Any, iterable: Iterable[Any], value: Any = None, **options: Any) -> Any:
            return cls(conn, [(k, value) for k in iterable], **options)
        fromkeys.__doc__ = "A new anonymous RedisDict with keys from iterable, each set to value."
        return fromkeys


@register
class RedisDict(DictAPI, _HashBase):
    """A dict on Redis, shared by every process (on any machine) with a handle on it.

    ``RedisDict(conn, *args, name=None, create=None, codec=None, lease=10.0,
    **kwargs)``: ``conn`` is a ``client.Connection``; the content is given
    as to ``dict()``; ``name``/``create`` follow the rules of every interproc
    object; ``codec`` turns values into bytes (``codec.Codec``); ``lease``
    is the lock's lease in seconds.  The API and semantics are SharedDict's.
    """

    _KIND = "dict"

    def __init__(self, conn: Any, *args: Any, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None, lease: float = DEFAULT_LEASE,
                 **kwargs: Any) -> None:
        pairs = dict_pairs(args, kwargs) if (args or kwargs) else []
        self._lease = check_lease(lease)
        meta = self._open(conn, name, create, codec, {})
        if (args or kwargs) and not meta.created:
            raise _given_too_late("RedisDict", name)
        if pairs:
            self._update_pairs(pairs)

    fromkeys = _FromKeys()

    @property
    def lock(self) -> RLock:
        """The lock that makes compound updates atomic: a Redis RLock (see _guarded)."""
        return self._lock

    # --------------------------------------------------------- mapping API

    def __getitem__(self, key: Any) -> Any:
        return self._get(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._set(key, value)

    def __delitem__(self, key: Any) -> None:
        self._del(key)

    def __contains__(self, key: Any) -> bool:
        try:
            field = self._field(key)
        except TypeError:
            raise
        return bool(self._run(D_CONTAINS, field))

    def __len__(self) -> int:
        return int(self._run(D_LEN))

    def get(self, key: Any, default: Any = None) -> Any:
        field = self._field(key)
        payload = self._run(D_GET, field)
        return default if payload is None else self._load_value(payload, field)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``d[key]`` if present, else store ``default`` and return it; atomic."""
        field = self._field(key)
        payload = self._run(D_SETDEFAULT, field, self._dump_value(default, field),
                            self._okey(key, field))
        if payload is None:
            self._changed_keys()
            return default
        return self._load_value(payload, field)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        field = self._field(key)
        if self._decodes_before_removing():
            while True:
                payload = self._run(D_GET, field)
                if payload is None:
                    break
                value = self._load_value(payload, field)
                if self._run(D_TAKE_IF, field, payload, 0):
                    self._changed_keys()
                    return value
        else:
            payload = self._run(D_POP, field)
            if payload is not None:
                self._changed_keys()
                return self._load_value(payload, field)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple:
        """Remove and return the last inserted (key, value) pair; KeyError if empty."""
        if self._decodes_before_removing():
            item = self._pop_last_checked(True)
            if item is _MISSING:
                raise KeyError("popitem(): dictionary is empty")
            return item
        reply = self._run(D_POPITEM)
        if reply is None:
            raise KeyError("popitem(): dictionary is empty")
        self._changed_keys()
        field, payload, okey = reply
        return self._key_of(field, okey), self._load_value(payload, field)

    def clear(self) -> None:
        self._changed_keys(self._run(D_CLEAR))

    def increment(self, key: Any, delta: Any = 1, default: Any = 0) -> Any:
        """Atomically ``d[key] = d.get(key, default) + delta``; returns the new value."""
        field = self._field(key)
        okey = self._okey(key, field)
        while True:
            seen = self._run(D_GET, field)
            value = (default if seen is None else self._load_value(seen, field)) + delta
            done = self._run(D_CAS, field, b"" if seen is None else seen,
                             self._dump_value(value, field), okey)
            if done >= 0:
                self._changed_keys(done)
                return value

    def __copy__(self) -> dict:
        return self.copy()


collections.abc.MutableMapping.register(RedisDict)


# ------------------------------------------------------------------- set

# Every element's payload is '1': never decoded, there only because a set
# is a dict's hash with nothing to say about values.  KEYS as _D.  ARGV: 2.. (field, original key) pairs.
S_ADD = lua(_D + """
local added = 0
for i = 2, #ARGV, 2 do added = added + put(ARGV[i], '1', ARGV[i + 1]) end
return added
""")
# ARGV: 2.. fields.
S_DISCARD = lua(_D + """
local gone = 0
for i = 2, #ARGV do gone = gone + drop(ARGV[i]) end
return gone
""")
# ARGV: 2.. (field, original key) pairs, each field once.
S_TOGGLE = lua(_D + """
local n = 0
for i = 2, #ARGV, 2 do
  if drop(ARGV[i]) == 0 then put(ARGV[i], '1', ARGV[i + 1]) end
  n = n + 1
end
return n
""")
# ARGV: 2.. the fields to keep.
S_RETAIN = lua(_D + """
local keep = {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
local gone = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not keep[f] then gone = gone + drop(f) end
end
return gone
""")
S_POP = lua(_D + WAIT_QUIETLY + """
local last = redis.call('ZREVRANGE', KEYS[4], 0, 0)
if #last == 0 then return false end
local f = last[1]
local out = {f, redis.call('HGET', KEYS[3], f)}
drop(f)
return out
""")


@register
class RedisSet(SetAPI, _HashBase):
    """A set on Redis, shared by every process (on any machine) with a handle on it.

    ``RedisSet(conn, iterable=(), *, name=None, create=None, codec=None,
    lease=10.0)``.  The API and semantics are SharedSet's: elements compare
    as a RedisDict's keys, every single operation is atomic (the in-place
    ones included), ``with s.lock:`` makes several atomic together, and
    operations that make a new set give plain sets.
    """

    _KIND = "set"
    _ITER_NOUN = "Set"

    def __init__(self, conn: Any, iterable: Iterable[Any] = (), *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None,
                 lease: float = DEFAULT_LEASE) -> None:
        keys = set_keys(iterable)
        self._lease = check_lease(lease)
        meta = self._open(conn, name, create, codec, {})
        if keys and not meta.created:
            raise _given_too_late("RedisSet", name)
        if keys:
            self._keys_apply(KEYS_ADD, keys)

    @property
    def lock(self) -> RLock:
        """The lock that makes compound updates atomic: a Redis RLock (see _guarded)."""
        return self._lock

    def _keys_apply(self, how: int, keys: list) -> int:
        """The bulk update SetAPI builds on (see _container_api)."""
        if how == KEYS_DISCARD or how == KEYS_RETAIN:
            args: list = [self._field(k) for k in keys]
            if how == KEYS_RETAIN:
                done = self._run(S_RETAIN, *args)
            else:
                done = self._run(S_DISCARD, *args) if args else 0
        else:
            fields: dict = {}
            for k in keys:
                field = self._field(k)
                if field not in fields:  # the first of equal elements is the one stored
                    fields[field] = self._okey(k, field)
            args = [x for pair in fields.items() for x in pair]
            script = {KEYS_ADD: S_ADD, KEYS_TOGGLE: S_TOGGLE}[how]
            done = self._run(script, *args) if args else 0
        self._changed_keys(int(done))
        return int(done)

    def __contains__(self, element: Any) -> bool:
        return bool(self._run(D_CONTAINS, self._field(element)))

    def __len__(self) -> int:
        return int(self._run(D_LEN))

    def add(self, element: Any) -> None:
        """Add element; nothing happens if an equal one is there already."""
        field = self._field(element)
        self._changed_keys(self._run(S_ADD, field, self._okey(element, field)))

    def discard(self, element: Any) -> None:
        """Remove element if it is there."""
        self._changed_keys(self._run(D_DEL, self._field(element)))

    def remove(self, element: Any) -> None:
        """Remove element; KeyError if it is not there."""
        self._del(element)

    def pop(self) -> Any:
        """Remove and return the element added last; KeyError if empty."""
        if self._decodes_before_removing():
            element = self._pop_last_checked(False)
            if element is _MISSING:
                raise KeyError("pop from an empty set")
            return element
        reply = self._run(S_POP)
        if reply is None:
            raise KeyError("pop from an empty set")
        self._changed_keys()
        field, okey = reply
        return self._key_of(field, okey)

    def clear(self) -> None:
        self._changed_keys(self._run(D_CLEAR))


collections.abc.MutableSet.register(RedisSet)


# ------------------------------------------------------------- Namespace

_ns_get = object.__getattribute__
_NAMESPACE_OWN = frozenset({"closed", "close", "unlink"})


@register
class RedisNamespace(_HashBase):
    """multiprocessing's ``Manager().Namespace()`` on Redis, in a hash.

    ``RedisNamespace(conn, *, name=None, create=None, codec=None,
    lease=10.0, **attrs)``.  Reading, setting and deleting an attribute are
    atomic operations on the server; attributes starting with ``_`` stay
    local to the handle, as with multiprocessing's namespace proxy.
    """

    _KIND = "Namespace"

    def __init__(self, conn: Any, *, name: Optional[str] = None, create: Optional[bool] = None,
                 codec: Any = None, lease: float = DEFAULT_LEASE, _attrs: Optional[dict] = None,
                 **attrs: Any) -> None:
        if _attrs:
            attrs = {**_attrs, **attrs}  # attributes called codec, lease...
        self._lease = check_lease(lease)
        meta = self._open(conn, name, create, codec, {})
        if attrs and not meta.created:
            raise _given_too_late("Namespace", name, "attributes")
        if attrs:
            self._update_pairs(list(attrs.items()))

    def __getattribute__(self, key: str) -> Any:
        if key[:1] == "_" or key in _NAMESPACE_OWN:
            return _ns_get(self, key)
        try:
            return _ns_get(self, "_get")(key)
        except KeyError:
            raise AttributeError(f"'Namespace' object has no attribute {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key[:1] == "_":
            object.__setattr__(self, key, value)
        else:
            self._set(key, value)

    def __delattr__(self, key: str) -> None:
        if key[:1] == "_":
            object.__delattr__(self, key)
            return
        try:
            self._del(key)
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        if self._closed:
            return "<Namespace (closed)>"
        shown = sorted(f"{k}={v!r}" for k, v in self._all(2) if not str(k).startswith("_"))
        return f"Namespace({', '.join(shown)})"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, RedisNamespace):
            return dict(self._all(2)) == dict(other._all(2))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __dir__(self) -> list:
        return sorted(k for k in self._all(0))


# ------------------------------------------------------------------ list

# KEYS: 1 lock, 2 l, 3 ver.
_L = """
local function changed() redis.call('INCR', KEYS[3]) end
local function push(key, items, first, last)
  for i = first, last, 1000 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 999, last)))
  end
end
local function bounds(n, a, b, step)
  -- Python's slice.indices(n); a or b is nil for an omitted bound.
  local start, stop
  if step > 0 then
    if a == nil then start = 0 elseif a < 0 then start = math.max(a + n, 0) else start = math.min(a, n) end
    if b == nil then stop = n elseif b < 0 then stop = math.max(b + n, 0) else stop = math.min(b, n) end
    if start < stop then return start, stop, math.floor((stop - start - 1) / step) + 1 end
  else
    if a == nil then start = n - 1 elseif a < 0 then start = math.max(a + n, -1) else start = math.min(a, n - 1) end
    if b == nil then stop = -1 elseif b < 0 then stop = math.max(b + n, -1) else stop = math.min(b, n - 1) end
    if stop < start then return start, stop, math.floor((start - stop - 1) / -step) + 1 end
  end
  return start, stop, 0
end
local function opt(s) if s == '' then return nil end return tonumber(s) end
local TOMB = '\\0ip:gone\\0'
local function remove_at(indexes)
  for _, i in ipairs(indexes) do redis.call('LSET', KEYS[2], i, TOMB) end
  redis.call('LREM', KEYS[2], 0, TOMB)
end
"""
L_LEN = lua(NO_WAIT + "return redis.call('LLEN', KEYS[2])")
L_GET = lua(NO_WAIT + "return redis.call('LINDEX', KEYS[2], ARGV[2])")
# 1 done, 0 out of range.
L_SET = lua(_L + """
local n = redis.call('LLEN', KEYS[2])
local i = tonumber(ARGV[2])
if i < 0 then i = i + n end
if i < 0 or i >= n then return 0 end
redis.call('LSET', KEYS[2], i, ARGV[3])
changed()
return 1
""")
# ARGV: 2 index or '' for the last.  {status, payload}: 1 done, 0 out of range, -1 empty.
L_POP = lua(_L + WAIT_QUIETLY + """
local n = redis.call('LLEN', KEYS[2])
if n == 0 then return {-1} end
local i = n - 1
if ARGV[2] ~= '' then i = tonumber(ARGV[2]) if i < 0 then i = i + n end end
if i < 0 or i >= n then return {0} end
local v
if i == n - 1 then v = redis.call('RPOP', KEYS[2])
elseif i == 0 then v = redis.call('LPOP', KEYS[2])
else v = redis.call('LINDEX', KEYS[2], i) remove_at({i}) end
changed()
return {1, v}
""")
L_EXTEND = lua(_L + """
if #ARGV < 2 then return redis.call('LLEN', KEYS[2]) end
push(KEYS[2], ARGV, 2, #ARGV)
changed()
return redis.call('LLEN', KEYS[2])
""")
L_INSERT = lua(_L + """
local n = redis.call('LLEN', KEYS[2])
local i = tonumber(ARGV[2])
if i < 0 then i = math.max(i + n, 0) end
if i >= n then redis.call('RPUSH', KEYS[2], ARGV[3])
elseif i == 0 then redis.call('LPUSH', KEYS[2], ARGV[3])
else
  local old = redis.call('LINDEX', KEYS[2], i)
  redis.call('LSET', KEYS[2], i, TOMB)
  redis.call('LINSERT', KEYS[2], 'BEFORE', TOMB, ARGV[3])
  redis.call('LSET', KEYS[2], i + 1, old)
end
changed()
return 1
""")
# ARGV: 2 start, 3 stop ('' = omitted), 4 step.
L_GETSLICE = lua(_L + NO_WAIT + """
local step = tonumber(ARGV[4])
local start, stop, len = bounds(redis.call('LLEN', KEYS[2]), opt(ARGV[2]), opt(ARGV[3]), step)
if len == 0 then return {} end
if step == 1 then return redis.call('LRANGE', KEYS[2], start, start + len - 1) end
local last = start + (len - 1) * step
local lo, hi = math.min(start, last), math.max(start, last)
local span = redis.call('LRANGE', KEYS[2], lo, hi)
local out = {}
for j = 0, len - 1 do out[#out + 1] = span[start + j * step - lo + 1] end
return out
""")
# ARGV: 2 start, 3 stop, 4 step, 5.. payloads.  {1} done; {0, slice length} size mismatch.
L_SETSLICE = lua(_L + """
local step = tonumber(ARGV[4])
local n = redis.call('LLEN', KEYS[2])
local start, stop, len = bounds(n, opt(ARGV[2]), opt(ARGV[3]), step)
local count = #ARGV - 4
if step == 1 then
  if stop < start then stop = start end
  local tail = redis.call('LRANGE', KEYS[2], stop, -1)
  if start == 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, start - 1) end
  if count > 0 then push(KEYS[2], ARGV, 5, #ARGV) end
  if #tail > 0 then push(KEYS[2], tail, 1, #tail) end
else
  if count ~= len then return {0, len} end
  for j = 0, len - 1 do redis.call('LSET', KEYS[2], start + j * step, ARGV[5 + j]) end
end
changed()
return {1}
""")
L_DELSLICE = lua(_L + """
local step = tonumber(ARGV[4])
local start, stop, len = bounds(redis.call('LLEN', KEYS[2]), opt(ARGV[2]), opt(ARGV[3]), step)
if len == 0 then return 0 end
if step == 1 then
  local tail = redis.call('LRANGE', KEYS[2], stop, -1)
  if start == 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, start - 1) end
  if #tail > 0 then push(KEYS[2], tail, 1, #tail) end
else
  local gone = {}
  for j = 0, len - 1 do gone[#gone + 1] = start + j * step end
  remove_at(gone)
end
changed()
return len
""")
L_SNAPSHOT = lua(NO_WAIT + "return {tonumber(redis.call('GET', KEYS[3]) or '0'), "
                 "redis.call('LRANGE', KEYS[2], 0, -1)}")
# ARGV: 2 the version read, 3.. the new content.  1 done, 0 changed meanwhile.
L_REPLACE_IF = lua(_L + """
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
if #ARGV >= 3 then push(KEYS[2], ARGV, 3, #ARGV) end
changed()
return 1
""")
# ARGV: 2 the version read, 3 index.  1 done, 0 changed meanwhile.
L_DEL_IF = lua(_L + """
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[2]) then return 0 end
remove_at({tonumber(ARGV[3])})
changed()
return 1
""")
L_REVERSE = lua(_L + """
local all = redis.call('LRANGE', KEYS[2], 0, -1)
if #all < 2 then return 0 end
local rev = {}
for j = #all, 1, -1 do rev[#rev + 1] = all[j] end
redis.call('DEL', KEYS[2])
push(KEYS[2], rev, 1, #rev)
changed()
return 1
""")
L_IMUL = lua(_L + """
local times = tonumber(ARGV[2])
local all = redis.call('LRANGE', KEYS[2], 0, -1)
if #all == 0 then return 0 end
if times <= 0 then redis.call('DEL', KEYS[2]) changed() return 1 end
for t = 2, times do push(KEYS[2], all, 1, #all) end
if times > 1 then changed() end
return 1
""")
L_CLEAR = lua(_L + """
if redis.call('DEL', KEYS[2]) == 1 then changed() end
return 1
""")


def _clamp(i: int) -> int:
    return max(-_INDEX_LIMIT, min(_INDEX_LIMIT, i))


def _slice_args(slc: slice) -> "tuple[Any, Any, int]":
    step = 1 if slc.step is None else operator.index(slc.step)
    if step == 0:
        raise ValueError("slice step cannot be zero")
    start = "" if slc.start is None else _clamp(operator.index(slc.start))
    stop = "" if slc.stop is None else _clamp(operator.index(slc.stop))
    return start, stop, _clamp(step)


def _index(i: Any) -> int:
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError(f"list indices must be integers or slices, not {type(i).__name__}") from None


@register
class RedisList(ListAPI, GuardedObject):
    """A list on Redis, shared by every process (on any machine) with a handle on it.

    ``RedisList(conn, iterable=(), *, name=None, create=None, codec=None,
    lease=10.0)``.  The API and semantics are SharedList's: every single
    operation is atomic, ``with l.lock:`` makes several atomic together.
    """

    _KIND = "list"
    _PARTS = ("l", "ver")

    def __init__(self, conn: Any, iterable: Iterable[Any] = (), *, name: Optional[str] = None,
                 create: Optional[bool] = None, codec: Any = None,
                 lease: float = DEFAULT_LEASE) -> None:
        values = list_values(iterable)
        if codec is None:
            codec = Codec()
        self._lease = check_lease(lease)
        # A new list gets its content in the step that creates it, signed
        # (with an authkey) for the list's own id.
        meta = self._open(conn, name, create, codec, {},
                          init=lambda bound: {"l": [bound.dumps(v) for v in values]})
        if values and not meta.created:
            raise _given_too_late("RedisList", name)

    @property
    def lock(self) -> RLock:
        """The lock that makes compound updates atomic: a Redis RLock (see _guarded)."""
        return self._lock

    # ------------------------------------------------------------ indexing

    def __len__(self) -> int:
        return int(self._run(L_LEN))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._loads(p) for p in self._run(L_GETSLICE, *_slice_args(i))]
        i = _index(i)
        payload = self._run(L_GET, _clamp(i)) if -_INDEX_LIMIT <= i <= _INDEX_LIMIT else None
        if payload is None:
            raise IndexError("list index out of range")
        return self._loads(payload)

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            values = list_values(value, "can only assign an iterable")
            payloads = [self._dumps(v) for v in values]
            start, stop, step = _slice_args(i)
            status = self._run(L_SETSLICE, start, stop, step, *payloads)
            if status[0] == 0:
                raise ValueError(f"attempt to assign sequence of size {len(values)} to extended "
                                 f"slice of size {status[1]}")
            return
        i = _index(i)
        payload = self._dumps(value)
        if not (-_INDEX_LIMIT <= i <= _INDEX_LIMIT) or not self._run(L_SET, i, payload):
            raise IndexError("list assignment index out of range")

    def __delitem__(self, i: Any) -> None:
        if isinstance(i, slice):
            self._run(L_DELSLICE, *_slice_args(i))
            return
        i = _index(i)
        if not (-_INDEX_LIMIT <= i <= _INDEX_LIMIT) or self._run(L_POP, i)[0] != 1:
            raise IndexError("list assignment index out of range")

    # ------------------------------------------------------------ methods

    def append(self, value: Any) -> None:
        self._run(L_EXTEND, self._dumps(value))

    def extend(self, iterable: Iterable[Any]) -> None:
        """Append every value of iterable, in one atomic step."""
        payloads = [self._dumps(v) for v in list_values(iterable)]
        if payloads:
            self._run(L_EXTEND, *payloads)

    def insert(self, i: Any, value: Any) -> None:
        self._run(L_INSERT, _clamp(_index(i)), self._dumps(value))

    def pop(self, i: Any = -1) -> Any:
        i = _index(i)
        reply = self._run(L_POP, _clamp(i))
        if reply[0] == -1:
            raise IndexError("pop from empty list")
        if reply[0] == 0:
            raise IndexError("pop index out of range")
        return self._loads(reply[1])

    def _snapshot(self) -> "tuple[int, list]":
        ver, payloads = self._run(L_SNAPSHOT)
        return ver, payloads

    def remove(self, value: Any) -> None:
        """Remove the first occurrence of value, atomically; ValueError if absent."""
        while True:
            ver, payloads = self._snapshot()
            for i, p in enumerate(payloads):
                if self._loads(p) == value:
                    break
            else:
                raise ValueError("list.remove(x): x not in list")
            if self._run(L_DEL_IF, ver, i):
                return

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        """The first index of value in [start, stop); ValueError if absent."""
        try:
            return self[:].index(value, start, stop)
        except ValueError:
            raise ValueError(f"{value!r} is not in list") from None

    def count(self, value: Any) -> int:
        return self[:].count(value)

    def clear(self) -> None:
        self._run(L_CLEAR)

    def copy(self) -> list:
        """A plain list with the same content, read atomically."""
        return self[:]

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        """Sort in place, stably, atomically: computed here, committed only if
        the list did not change meanwhile (else done again)."""
        while True:
            ver, payloads = self._snapshot()
            values = [self._loads(p) for p in payloads]
            keyed = values if key is None else [key(v) for v in values]
            order = sorted(range(len(values)), key=keyed.__getitem__, reverse=reverse)
            if self._run(L_REPLACE_IF, ver, *[payloads[j] for j in order]):
                return

    def reverse(self) -> None:
        self._run(L_REVERSE)

    # ------------------------------------------------------------ protocol

    def __imul__(self, n: Any) -> "RedisList":
        if not hasattr(n, "__index__"):
            return NotImplemented
        self._run(L_IMUL, _clamp(operator.index(n)))
        return self

    def __copy__(self) -> list:
        return self.copy()


collections.abc.MutableSequence.register(RedisList)
