"""Value and Array on Redis: multiprocessing's shared ctypes, across machines.

``Value(conn, typecode_or_type, *args, lock=True, name=None, create=None)``
and ``Array(conn, typecode_or_type, size_or_initializer, *, lock=True, ...)``
take multiprocessing's typecodes (``'i'``, ``'d'``, ``'c'``...) or simple
ctypes types (``ctypes.c_int``...); Structures and pointer types raise
TypeError.  Values wrap and convert exactly as the ctypes type does
(``Value('i', 2**31).value == -2**31``; a float for ``'i'`` is a TypeError).

Layout (one hash slot, ``ip:{<id>}:<part>``): ``meta`` holds ``typecode``
(and ``length`` for an Array); a Value's ``v`` is a string and an Array's
``a`` a Redis list with one element per item, each the item's plain text
(decimal for integers, ``repr`` for floats, the byte or character itself
for ``'c'``/``'u'``).  They are parsed, never unpickled, whatever the codec.
Every read or write is one Lua script, so single reads and writes are atomic.

``lock=True`` (the default) gives the object's own RLock (see
_guarded): ``get_lock()`` returns it, and every read and write waits while
another process or thread holds it, so ``with v.get_lock(): v.value += 1``
is atomic, as with multiprocessing.  ``lock=False`` returns the object
without ``get_lock()``; any other object with ``acquire`` is taken around
every read and write, as multiprocessing does, and returned by
``get_lock()``.

Timeouts, peer death, lost connections and closed handles: as for every
object guarded by its own lock (``_guarded``): a read or write waits while
another holds the lock, a dead holder is taken over when its lease runs out
(OwnerDiedWarning), a lost connection raises ConnectionLostError, a closed
handle ValueError.
"""
from __future__ import annotations

import ctypes
import operator
from multiprocessing.sharedctypes import typecode_to_type
from typing import Any, Optional

from ._base import register
from ._guarded import GuardedObject, lua
from .synchronize import DEFAULT_LEASE, check_lease

__all__ = ["Value", "Array", "RedisValue", "RedisArray"]

# ctypes type -> its code; c_bool has no multiprocessing code, '?' (struct's).
_CODES = {t: c for c, t in typecode_to_type.items()}
_CODES.setdefault(ctypes.c_bool, "?")
_TYPES = {c: t for t, c in _CODES.items()}


def _typecode(typecode_or_type: Any) -> str:
    if isinstance(typecode_or_type, str):
        if typecode_or_type not in _TYPES:
            raise TypeError(f"bad typecode {typecode_or_type!r}; use one of "
                            f"{''.join(typecode_to_type)} or a ctypes type")
        return typecode_or_type
    if isinstance(typecode_or_type, type):
        code = _CODES.get(typecode_or_type)
        if code is not None:
            return code
        if issubclass(typecode_or_type, (ctypes._Pointer, ctypes.c_char_p, ctypes.c_wchar_p,
                                         ctypes.c_void_p)):
            raise TypeError(f"a pointer type ({typecode_or_type.__name__}) cannot be shared: "
                            "it points into one process's memory")
        raise TypeError(f"{typecode_or_type.__name__} cannot be stored on Redis: use a simple "
                        "ctypes type or typecode, or a dict or Namespace for other objects")
    raise TypeError(f"{typecode_or_type!r} is neither a typecode nor a ctypes type")


def _encode(ctype: type, value: Any) -> bytes:
    """The stored text of ``value`` as ``ctype`` holds it (wrapped, converted)."""
    v = ctype(value).value
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    if isinstance(v, bool):
        return b"1" if v else b"0"
    if isinstance(v, float):
        return repr(v).encode()
    return str(v).encode()


def _decode(ctype: type, data: Optional[bytes]) -> Any:
    if data is None:
        return ctype().value
    if ctype is ctypes.c_char:
        return data
    if ctype is ctypes.c_wchar:
        return data.decode("utf-8", "surrogatepass")
    if ctype is ctypes.c_bool:
        return data == b"1"
    if ctype in (ctypes.c_float, ctypes.c_double):
        return float(data)
    return int(data)


V_GET = lua("return redis.call('GET', KEYS[2])")
V_SET = lua("redis.call('SET', KEYS[2], ARGV[2]) return 1")
A_RANGE = lua("return redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])")
A_GET = lua("return redis.call('LINDEX', KEYS[2], ARGV[2])")
# ARGV: 2.. index, text pairs.
A_SET = lua("""
for i = 2, #ARGV, 2 do redis.call('LSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
""")


class _Shared(GuardedObject):
    """The lock handling of Value and Array."""

    _ctype: type
    _code: str
    _user_lock: Any

    def _setup(self) -> None:
        super()._setup()
        self._code = self._opts["typecode"]
        self._ctype = _TYPES[self._code]

    def _handle_state(self) -> Any:
        return (self._lease, self._user_lock)

    def _set_handle_state(self, state: Any) -> None:
        self._lease, self._user_lock = state

    def _do(self, source: str, *args: Any) -> Any:
        lock = self._user_lock
        if lock is True or lock is False:
            return self._run(source, *args)
        with lock:
            return self._run(source, *args)

    def get_lock(self) -> Any:
        """The lock taken around every read and write (see the module's notes)."""
        if self._user_lock is False:
            raise AttributeError(f"{self._ctype.__name__!r} object has no attribute 'get_lock'")
        return self._lock if self._user_lock is True else self._user_lock

    def get_obj(self) -> Any:
        """The object without its lock: reads and writes that take no lock
        (multiprocessing's raw ctypes object)."""
        return self._handle(self._conn, self._codec, self._ident, self._anonymous, self._opts,
                            (self._lease, False), self._uid)

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self.get_lock().acquire(*args, **kwargs)

    def release(self) -> None:
        self.get_lock().release()

    def __enter__(self) -> Any:
        return self.get_lock().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.get_lock().__exit__(*exc)


def _check_lock(lock: Any) -> Any:
    if lock is None:
        return True
    if lock is not True and lock is not False and not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return lock


def _open(cls: type, conn: Any, code: str, length: Optional[int], name: Optional[str],
          create: Optional[bool], codec: Any, lease: float, lock: Any, init: dict) -> Any:
    options: dict = {"typecode": code}
    if length is not None:
        options["length"] = length
    obj = cls.__new__(cls)
    obj._set_handle_state((check_lease(lease), lock))
    meta = obj._open(conn, name, create, codec, options, init)
    if not meta.created and (meta.get("typecode"), meta.get("length")) != (code, length):
        def show(c: Any, n: Optional[int]) -> str:
            t = _TYPES.get(c)
            base = t.__name__ if t is not None else repr(c)
            return base if n is None else f"{base} * {n}"
        raise TypeError(f"{name!r} holds {show(meta.get('typecode'), meta.get('length'))}, "
                        f"not {show(code, length)}")
    return obj


@register
class RedisValue(_Shared):
    """multiprocessing's synchronized Value on Redis: ``.value``, ``get_lock()``."""

    _KIND = "Value"
    _PARTS = ("v",)

    @property
    def value(self) -> Any:
        return _decode(self._ctype, self._do(V_GET))

    @value.setter
    def value(self, v: Any) -> None:
        self._do(V_SET, _encode(self._ctype, v))

    # A multiprocessing manager's Value proxy reads and writes through these.
    def get(self) -> Any:
        """``value``, as a multiprocessing manager's ValueProxy has it."""
        return self.value

    def set(self, v: Any) -> None:
        """``value = v``, as a multiprocessing manager's ValueProxy has it."""
        self.value = v

    def __repr__(self) -> str:
        inner = f"{self._ctype.__name__}({self.value!r})"
        if self._user_lock is False:
            return inner
        return f"<Synchronized wrapper for {inner}>"


@register
class RedisArray(_Shared):
    """multiprocessing's synchronized Array on Redis: indexes, slices, ``len()``."""

    _KIND = "Array"
    _PARTS = ("a",)
    _length: int

    def _setup(self) -> None:
        super()._setup()
        self._length = int(self._opts["length"])

    def __len__(self) -> int:
        return self._length

    def _index(self, i: Any) -> int:
        i = operator.index(i)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError("invalid index")
        return i

    def __getitem__(self, i: Any) -> Any:
        ctype = self._ctype
        if isinstance(i, slice):
            indexes = range(*i.indices(self._length))
            if not indexes:
                return b"" if ctype is ctypes.c_char else "" if ctype is ctypes.c_wchar else []
            lo, hi = min(indexes[0], indexes[-1]), max(indexes[0], indexes[-1])
            span = self._do(A_RANGE, lo, hi)
            items = [_decode(ctype, span[j - lo]) for j in indexes]
            if ctype is ctypes.c_char:
                return b"".join(items)
            if ctype is ctypes.c_wchar:
                return "".join(items)
            return items
        return _decode(ctype, self._do(A_GET, self._index(i)))

    def __setitem__(self, i: Any, value: Any) -> None:
        ctype = self._ctype
        if isinstance(i, slice):
            indexes = range(*i.indices(self._length))
            values = list(value)
            if len(values) != len(indexes):
                raise ValueError("Can only assign sequence of same size")
            args: list = []
            for j, v in zip(indexes, values):
                args += [j, _encode(ctype, v)]
            if args:
                self._do(A_SET, *args)
            return
        self._do(A_SET, self._index(i), _encode(ctype, value))

    def __iter__(self) -> Any:
        return iter(self[:])

    def _all(self) -> list:
        return [_decode(self._ctype, t) for t in self._do(A_RANGE, 0, -1)]

    # Array('c', n): the bytes up to the first NUL, and all of them.
    @property
    def value(self) -> Any:
        if self._ctype not in (ctypes.c_char, ctypes.c_wchar):
            raise AttributeError(f"{self._ctype.__name__} array has no attribute 'value'")
        text = self[:]
        end = text.find(b"\0" if self._ctype is ctypes.c_char else "\0")
        return text if end < 0 else text[:end]

    @value.setter
    def value(self, v: Any) -> None:
        if self._ctype not in (ctypes.c_char, ctypes.c_wchar):
            raise AttributeError(f"{self._ctype.__name__} array has no attribute 'value'")
        check = (self._ctype * self._length)()
        check.value = v  # ctypes' own checks and errors
        items = list(v) if self._ctype is ctypes.c_wchar else [bytes([b]) for b in v]
        if len(items) < self._length:
            items.append(b"\0" if self._ctype is ctypes.c_char else "\0")
        self[:len(items)] = items

    @property
    def raw(self) -> bytes:
        if self._ctype is not ctypes.c_char:
            raise AttributeError(f"{self._ctype.__name__} array has no attribute 'raw'")
        return self[:]

    @raw.setter
    def raw(self, v: bytes) -> None:
        if self._ctype is not ctypes.c_char:
            raise AttributeError(f"{self._ctype.__name__} array has no attribute 'raw'")
        check = (ctypes.c_char * self._length)()
        check.raw = v
        self[:len(v)] = [bytes([b]) for b in v]

    def __repr__(self) -> str:
        inner = f"<{self._ctype.__name__}_Array_{self._length}: {self[:]!r}>"
        if self._user_lock is False:
            return inner
        return f"<SynchronizedArray wrapper for {inner}>"


def Value(conn: Any, typecode_or_type: Any, *args: Any, lock: Any = True,
          name: Optional[str] = None, create: Optional[bool] = None, codec: Any = None,
          lease: float = DEFAULT_LEASE) -> RedisValue:
    """multiprocessing's ``Value(typecode_or_type, *args, lock=True)`` on Redis.

    ``name``/``create`` as for every named object: opening an existing name
    keeps its value (``args`` only fill a new one) and checks its type
    (TypeError naming both).  ``codec`` is accepted for symmetry with the
    other objects; values are stored as plain text (see the module).
    """
    code = _typecode(typecode_or_type)
    ctype = _TYPES[code]
    lock = _check_lock(lock)
    initial = _encode(ctype, ctype(*args).value)
    return _open(RedisValue, conn, code, None, name, create, codec, lease, lock, {"v": initial})


def Array(conn: Any, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True,
          name: Optional[str] = None, create: Optional[bool] = None, codec: Any = None,
          lease: float = DEFAULT_LEASE) -> RedisArray:
    """multiprocessing's ``Array(typecode_or_type, size_or_initializer, lock=True)`` on Redis.

    ``size_or_initializer`` is a length (zeros) or a sequence to copy in.
    """
    code = _typecode(typecode_or_type)
    ctype = _TYPES[code]
    lock = _check_lock(lock)
    if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
        if size_or_initializer < 0:
            raise ValueError(f"array size must be >= 0, not {size_or_initializer}")
        items = [_encode(ctype, ctype().value)] * size_or_initializer
    else:
        values = list(size_or_initializer)
        if ctype is ctypes.c_char and isinstance(size_or_initializer, bytes):
            values = [bytes([b]) for b in size_or_initializer]
        items = [_encode(ctype, v) for v in values]
    return _open(RedisArray, conn, code, len(items), name, create, codec, lease, lock,
                 {"a": items})
