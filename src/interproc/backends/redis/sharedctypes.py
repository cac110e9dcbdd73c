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
(decimal for integers -- for ``'?'`` the byte, 0 to 255 --, ``repr`` for
floats, the byte or character itself for ``'c'``/``'u'``).  They are
parsed, never unpickled, whatever the codec, and text that is not what
this module writes (a non-number, an integer outside the type's range)
raises CorruptDataError.  With an ``authkey`` (the codec's), each text is
stored signed (``codec.sign``) for its object and place: ``v`` for a
Value, ``a:<index>`` for an Array item, so an item copied to another index
or object is refused (SignatureError).  Every read or write is one Lua
script, so single reads and writes are atomic.

Integer Values (every integer typecode and ``'?'``) have the atomics of the
shared-memory Value, on the synchronized object and on ``get_obj()``:
``load()``, ``store(v)``, ``fetch_add(delta=1)``, ``fetch_sub(delta=1)``,
``exchange(v)`` and ``compare_exchange(expected, desired) -> (ok, seen)``.
They take ints only (bools are ints; TypeError otherwise), wrap around as
the C type does, and never take the lock, as on shared memory.  Each is one
script on the stored bytes: ``store``/``exchange``/``compare_exchange`` one
round trip; ``fetch_add``/``fetch_sub`` a compare-and-set on the bytes last
seen, retried with the bytes the server returns when another process got
there first (a read-compute-CAS loop, because a script cannot sign the new
contents: it does not have the authkey, and Lua numbers are doubles that
cannot wrap 64-bit integers exactly).

``lock=True`` (the default) gives the object's own RLock (see
_guarded): ``get_lock()`` returns it, and every read and write waits while
another process or thread holds it, so ``with v.get_lock(): v.value += 1``
is atomic, as with multiprocessing.  ``lock=False`` returns the object
without ``get_lock()``, whose reads and writes never wait for the lock
(multiprocessing's raw ctypes object; ``get_obj()`` returns the same);
any other object with ``acquire`` is taken around
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
import re
import types
from multiprocessing.sharedctypes import typecode_to_type
from typing import Any, Optional, Tuple

from ._base import register
from .client import NO_WAIT
from ._guarded import GuardedObject, lua
from .errors import CorruptDataError
from .synchronize import DEFAULT_LEASE, check_lease

__all__ = ["Value", "Array", "RedisValue", "RedisArray"]

# Every multiprocessing typecode, and '?' (struct's) for c_bool, which has
# none.  Where two codes name one type ('l' and 'q' when long is 64 bits,
# ctypes making c_longlong the same class as c_long), both are accepted and
# a type given as a class is stored under the first.
_TYPES = dict(typecode_to_type)
_TYPES.setdefault("?", ctypes.c_bool)
_CODES: dict = {}
for _code, _type in _TYPES.items():
    _CODES.setdefault(_type, _code)
del _code, _type


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


_INTEGER_TYPES = {
    ctypes.c_byte, ctypes.c_ubyte, ctypes.c_short, ctypes.c_ushort, ctypes.c_int, ctypes.c_uint,
    ctypes.c_long, ctypes.c_ulong, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_bool,
}


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


_DECIMAL = re.compile(rb"-?[0-9]{1,20}")


def _stored_int(ctype: type, data: bytes) -> int:
    """The integer a stored text holds, checked to be one this module
    writes for ``ctype``; the C bits for ``'?'`` (0 to 255)."""
    if _DECIMAL.fullmatch(data) is None:
        raise CorruptDataError(f"a stored {ctype.__name__} is not a decimal integer: {data[:40]!r}")
    n = int(data)
    if ctype is ctypes.c_bool:
        ok = 0 <= n <= 255
    else:
        ok = ctype(n).value == n
    if not ok:
        raise CorruptDataError(f"a stored {ctype.__name__} is out of its range: {n}")
    return n


def _decode(ctype: type, data: Optional[bytes]) -> Any:
    """The value of stored text (already stripped of its signature)."""
    if data is None:
        return ctype().value
    if ctype is ctypes.c_char:
        if len(data) != 1:
            raise CorruptDataError(f"a stored c_char is {len(data)} bytes long")
        return data
    if ctype is ctypes.c_wchar:
        try:
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            text = ""
        if len(text) != 1:
            raise CorruptDataError("a stored c_wchar is not one character")
        return text
    if ctype is ctypes.c_bool:
        return _stored_int(ctype, data) != 0
    if ctype in (ctypes.c_float, ctypes.c_double):
        try:
            return float(data)
        except ValueError:
            raise CorruptDataError(f"a stored {ctype.__name__} is not a number: "
                                   f"{data[:40]!r}") from None
    return _stored_int(ctype, data)


class _Op:
    """One operation in its two forms: ``guarded`` (made with ``lua``:
    refuses to run while another holds the object's lock) for the
    synchronized object, ``raw`` (the same body, never waits) for
    ``get_obj()``/``lock=False`` and the atomics.  Both see KEYS[1] the
    lock owner, KEYS[2] the data, ARGV[1] the caller's token."""

    __slots__ = ("guarded", "raw")

    def __init__(self, body: str):
        self.guarded = lua(body)
        self.raw = body


V_GET = _Op(NO_WAIT + "return redis.call('GET', KEYS[2])")
V_SET = _Op("redis.call('SET', KEYS[2], ARGV[2]) return 1")
A_RANGE = _Op(NO_WAIT + "return redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])")
A_GET = _Op(NO_WAIT + "return redis.call('LINDEX', KEYS[2], ARGV[2])")
# ARGV: 2.. index, text pairs.
A_SET = _Op("""
for i = 2, #ARGV, 2 do redis.call('LSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
""")
# The atomics compare and set the stored bytes (signed, with an authkey:
# signing is deterministic, so equal values are equal bytes).  A missing
# key reads as ARGV[last], the stored form of the type's zero.
# ARGV: 2 new bytes, 3 zero's bytes.  Returns the bytes before.
V_EXCHANGE = """
local cur = redis.call('GET', KEYS[2]) or ARGV[3]
redis.call('SET', KEYS[2], ARGV[2])
return cur
"""
# ARGV: 2 expected bytes, 3 desired bytes, 4 zero's bytes.  Returns
# {1 if set else 0, the bytes seen}.
V_CAS = """
local cur = redis.call('GET', KEYS[2]) or ARGV[4]
if cur == ARGV[2] then
  redis.call('SET', KEYS[2], ARGV[3])
  return {1, cur}
end
return {0, cur}
"""


class _integers_only:
    """A method that only integer Values have, as on shared memory: for
    other types even looking it up is an AttributeError (``hasattr`` says
    False)."""

    def __init__(self, method: Any):
        self._method = method
        self.__doc__ = method.__doc__
        self.__name__ = method.__name__

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        if obj._ctype not in _INTEGER_TYPES:
            raise AttributeError(f"{obj._ctype.__name__} Value has no attribute "
                                 f"{self.__name__!r}: atomic operations are for integer types")
        return types.MethodType(self._method, obj)


class _Shared(GuardedObject):
    """The lock handling of Value and Array."""

    _ctype: type
    _code: str
    _user_lock: Any

    def _setup(self) -> None:
        super()._setup()
        code = self._opts.get("typecode")
        if type(code) is not str or code not in _TYPES:
            raise CorruptDataError(f"{self._KIND} {self._where()} has a bad typecode: {code!r}")
        self._code = code
        self._ctype = _TYPES[code]

    def _handle_state(self) -> Any:
        return (self._lease, self._user_lock)

    def _set_handle_state(self, state: Any) -> None:
        self._lease, self._user_lock = state

    @classmethod
    def _state_from_ref(cls, state: Any, codec: Any) -> Any:
        # Read from Redis: a lease and whether the object has its own lock
        # (a reference never carries another lock object).
        if type(state) is not list or len(state) != 2 or type(state[1]) is not bool:
            raise CorruptDataError(f"a reference to a {cls._KIND} has malformed state")
        return (check_lease(state[0]), state[1])

    def _do(self, op: _Op, *args: Any) -> Any:
        lock = self._user_lock
        if lock is True:
            return self._run(op.guarded, *args)
        if lock is False:
            return self._raw(op.raw, *args)
        with lock:
            return self._run(op.guarded, *args)

    def _raw(self, source: str, *args: Any) -> Any:
        """Run ``source`` without regard to the lock: one script, atomic by
        itself, that never waits (fenced if the caller holds the lock)."""
        return self._run_raw(source, *args)

    def _sign(self, text: bytes, part: str) -> bytes:
        return self._codec.sign(text, part)

    def _unsign(self, stored: Optional[bytes], part: str) -> Optional[bytes]:
        if stored is None:
            return None
        return self._codec.verify(stored, part, self._key(part.split(":")[0]))

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
          create: Optional[bool], codec: Any, lease: float, lock: Any, init: Any) -> Any:
    options: dict = {"typecode": code}
    if length is not None:
        options["length"] = length
    obj = cls.__new__(cls)
    obj._set_handle_state((check_lease(lease), lock))
    meta = obj._open(conn, name, create, codec, options, init)
    if not meta.created and (_TYPES.get(meta.get("typecode")), meta.get("length")) \
            != (_TYPES[code], length):
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

    def _setup(self) -> None:
        super()._setup()
        ctype = self._ctype
        if ctype in _INTEGER_TYPES:
            self._bits = 8 * ctypes.sizeof(ctype)
            self._signed = ctype is not ctypes.c_bool and ctype(-1).value < 0
            self._zero = self._sign(b"0", "v")
        # The stored bytes this handle last saw: fetch_add's first guess.
        self._seen: Optional[bytes] = None

    @property
    def value(self) -> Any:
        return _decode(self._ctype, self._unsign(self._do(V_GET), "v"))

    @value.setter
    def value(self, v: Any) -> None:
        self._do(V_SET, self._sign(_encode(self._ctype, v), "v"))

    # -- the atomics of the shared-memory Value (integer types only)


    def _wrap(self, n: Any) -> int:
        """``n`` as the C integer holds it (wrapped); TypeError for a non-int."""
        if not isinstance(n, int):
            raise TypeError(f"an int is required, not {type(n).__name__}")
        bits = self._bits
        n &= (1 << bits) - 1
        if self._signed and n >> (bits - 1):
            n -= 1 << bits
        return n

    def _stored(self, n: int) -> bytes:
        return self._sign(str(n).encode(), "v")

    def _int_of(self, stored: bytes) -> int:
        return _stored_int(self._ctype, self._unsign(stored, "v"))

    @_integers_only
    def load(self) -> int:
        """The current value (for ``'?'``, the byte: 0 or 1, or what
        ``store`` put there); never waits for the lock."""
        stored = self._raw(V_GET.raw)
        return 0 if stored is None else self._int_of(stored)

    @_integers_only
    def store(self, value: int) -> None:
        """Set the value (wrapped as the C type does); never waits for the lock."""
        self._raw(V_SET.raw, self._stored(self._wrap(value)))

    @_integers_only
    def exchange(self, value: int) -> int:
        """Set the value and return the one before, in one step."""
        return self._int_of(self._raw(V_EXCHANGE, self._stored(self._wrap(value)), self._zero))

    @_integers_only
    def compare_exchange(self, expected: int, desired: int) -> Tuple[bool, int]:
        """If the value is ``expected``, set it to ``desired``, in one step.
        Returns ``(succeeded, value seen)``."""
        ok, seen = self._raw(V_CAS, self._stored(self._wrap(expected)),
                             self._stored(self._wrap(desired)), self._zero)
        return bool(ok), self._int_of(seen)

    def _fetch_apply(self, delta: int) -> int:
        # The stored bytes cannot be changed by a script (it would have to
        # sign them), so: compute here, compare-and-set the bytes the value
        # was computed from, and on a miss start again from the bytes the
        # server answered with.  Someone's set succeeds at every miss.
        stored = self._seen
        if stored is None:
            stored = self._raw(V_GET.raw)
            if stored is None:
                stored = self._zero
        while True:
            old = self._int_of(stored)
            new = self._stored(self._wrap(old + delta))
            ok, seen = self._raw(V_CAS, stored, new, self._zero)
            if ok:
                self._seen = new
                return old
            stored = seen

    @_integers_only
    def fetch_add(self, delta: int = 1) -> int:
        """Add ``delta`` (wrapping as the C type does) and return the value
        before, in one atomic step; never waits for the lock."""
        return self._fetch_apply(self._wrap(delta))

    @_integers_only
    def fetch_sub(self, delta: int = 1) -> int:
        """Subtract ``delta`` and return the value before, in one atomic step."""
        return self._fetch_apply(-self._wrap(delta))

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
        length = self._opts.get("length")
        if type(length) is not int or length < 0:
            raise CorruptDataError(f"{self._KIND} {self._where()} has a bad length: {length!r}")
        self._length = length

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
            if len(span) != hi - lo + 1:
                raise CorruptDataError(f"{self._KIND} {self._where()} holds {len(span)} items "
                                       f"in a range of {hi - lo + 1}")
            items = [_decode(ctype, self._unsign(span[j - lo], f"a:{j}")) for j in indexes]
            if ctype is ctypes.c_char:
                return b"".join(items)
            if ctype is ctypes.c_wchar:
                return "".join(items)
            return items
        i = self._index(i)
        return _decode(ctype, self._unsign(self._do(A_GET, i), f"a:{i}"))

    def __setitem__(self, i: Any, value: Any) -> None:
        ctype = self._ctype
        if isinstance(i, slice):
            indexes = range(*i.indices(self._length))
            values = list(value)
            if len(values) != len(indexes):
                raise ValueError("Can only assign sequence of same size")
            args: list = []
            for j, v in zip(indexes, values):
                args += [j, self._sign(_encode(ctype, v), f"a:{j}")]
            if args:
                self._do(A_SET, *args)
            return
        i = self._index(i)
        self._do(A_SET, i, self._sign(_encode(ctype, value), f"a:{i}"))

    def __iter__(self) -> Any:
        return iter(self[:])

    def _all(self) -> list:
        return [_decode(self._ctype, self._unsign(t, f"a:{i}"))
                for i, t in enumerate(self._do(A_RANGE, 0, -1))]

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
    (TypeError naming both).  Values are stored as plain text (see the
    module), never pickled; ``codec`` matters for its ``authkey``, which
    signs the stored text.  Integer types have the atomics ``load``,
    ``store``, ``fetch_add``, ``fetch_sub``, ``exchange`` and
    ``compare_exchange`` (see the module).
    """
    code = _typecode(typecode_or_type)
    ctype = _TYPES[code]
    lock = _check_lock(lock)
    initial = _encode(ctype, ctype(*args).value)
    return _open(RedisValue, conn, code, None, name, create, codec, lease, lock,
                 lambda bound: {"v": bound.sign(initial, "v")})


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
                 lambda bound: {"a": [bound.sign(t, f"a:{i}") for i, t in enumerate(items)]})
