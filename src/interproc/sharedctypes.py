"""Value, Array, RawValue and RawArray: ctypes objects in shared memory.

The semantics of ``multiprocessing.sharedctypes``, plus names, atomic
operations on integers, and a zero-copy NumPy view.  Each object is one
segment: its first page holds an RLock (the lock ``Value``/``Array`` use by
default, so it survives a holder's death like any interproc lock) and a
description of the ctypes type; the data follows.
"""
from __future__ import annotations

import ctypes
import pickle
from multiprocessing import sharedctypes as _mp_sharedctypes
from multiprocessing.reduction import ForkingPickler
from typing import Any, Optional

from . import _core, naming
from .synchronize import RLock

__all__ = ["Value", "Array", "RawValue", "RawArray", "SynchronizedInt", "as_ndarray", "typecode_to_type"]

typecode_to_type = _mp_sharedctypes.typecode_to_type

_INTEGERS = {
    ctypes.c_byte, ctypes.c_ubyte, ctypes.c_short, ctypes.c_ushort, ctypes.c_int, ctypes.c_uint,
    ctypes.c_long, ctypes.c_ulong, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_bool,
}
_ATOMIC_METHODS = ("load", "store", "fetch_add", "fetch_sub", "exchange", "compare_exchange")


def _ctype(typecode_or_type: Any) -> type:
    if isinstance(typecode_or_type, str):
        try:
            ctype = typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError(
                f"bad typecode {typecode_or_type!r}; use one of {''.join(typecode_to_type)} "
                "or a ctypes type"
            ) from None
    elif isinstance(typecode_or_type, type) and issubclass(typecode_or_type, ctypes._SimpleCData.__mro__[1]):
        ctype = typecode_or_type
    else:
        raise TypeError(f"{typecode_or_type!r} is neither a typecode nor a ctypes type")
    _refuse_pointer(ctype)
    return ctype


def _refuse_pointer(ctype: type) -> None:
    """A pointer in shared memory points into the memory of the process that
    stored it: reading it anywhere else (or from a copy) crashes."""
    if issubclass(ctype, ctypes._Pointer) or (
        issubclass(ctype, ctypes._SimpleCData) and getattr(ctype, "_type_", None) in ("z", "Z", "P")
    ):
        raise TypeError(
            f"a pointer type ({ctype.__name__}) cannot be shared: it points into one process's "
            "memory; use Array('c', ...) for bytes, or a SharedDict or Namespace for other objects"
        )


def _describe(base: type, length: Optional[int]) -> bytes:
    try:
        return pickle.dumps((base, length))
    except Exception as exc:  # a ctypes type defined where no one can import it
        raise TypeError(f"cannot share {base!r}: its type must be importable ({exc})") from None


def _open(base: type, length: Optional[int], name: Optional[str], create: Optional[bool],
          mode: int) -> "tuple[RLock, bool]":
    """The segment for a value of ``base`` (an array if ``length`` is not None)."""
    type_ = base if length is None else base * length
    kind = _core.KIND_VALUE if length is None else _core.KIND_ARRAY
    meta = _describe(base, length)
    created = []

    def make_new(fd: int) -> Any:
        created.append(True)
        return _core.SyncCore.__new__(RLock, fd, kind, 0, 0, True, ctypes.sizeof(type_), meta)

    segment = naming.open_object(name, create, mode, make_new,
                                 lambda fd: _core.SyncCore.__new__(RLock, fd, kind))
    segment._setup(name, kind)
    if segment._meta != meta:
        held = pickle.loads(segment._meta)
        segment.close()
        raise TypeError(f"{name!r} holds {_type_name(*held)}, not {_type_name(base, length)}")
    return segment, bool(created)


def _type_name(base: type, length: Optional[int]) -> str:
    return base.__name__ if length is None else f"{base.__name__} * {length}"


def _view(segment: RLock, base: type, length: Optional[int]) -> Any:
    """The ctypes object over the segment's data, with what it needs to travel.

    It lies over the segment's own mapping (the segment exports its data
    area as a buffer), so a view costs no mapping or descriptor of its own.
    The view keeps that mapping alive: closing the segment's handles does
    not unmap memory a view still uses.
    """
    type_ = base if length is None else base * length
    if segment._data_size < ctypes.sizeof(type_):
        raise naming.SegmentError(
            f"the shared data holds {segment._data_size} bytes, too few for {type_.__name__} "
            f"({ctypes.sizeof(type_)} bytes)")
    obj = type_.from_buffer(segment)
    obj._interproc_segment = (segment, base, length)
    _register(type_)
    if base in _INTEGERS and length is None:
        cell = _core.AtomicCell(segment, 0, ctypes.sizeof(base), base(-1).value < 0)
        for method in _ATOMIC_METHODS:
            setattr(obj, method, getattr(cell, method))
    return obj


# ForkingPickler keeps one reducer per type, and multiprocessing registers
# its own for a plain ctypes type (c_int, ...) each time it makes a shared
# value of it, so the two libraries' objects of one type need one reducer.
# multiprocessing looks its reducer up by name when it registers, so putting
# ours there makes both registrations install the same function, which
# hands multiprocessing's objects to multiprocessing's original.
_mp_reduce_ctype = getattr(_mp_sharedctypes.reduce_ctype, "_original", _mp_sharedctypes.reduce_ctype)


def _reduce_ctype(obj: Any):
    shared = getattr(obj, "_interproc_segment", None)
    if shared is not None:
        return (_view, shared)
    return _mp_reduce_ctype(obj)


_reduce_ctype._original = _mp_reduce_ctype  # type: ignore[attr-defined]
_mp_sharedctypes.reduce_ctype = _reduce_ctype
_registered: "set[type]" = set()


def _register(type_: type) -> None:
    if type_ not in _registered:
        ForkingPickler.register(type_, _reduce_ctype)
        _registered.add(type_)


def RawValue(typecode_or_type: Any, *args: Any, name: Optional[str] = None,
             create: Optional[bool] = None, mode: int = 0o600) -> Any:
    """A ctypes object in shared memory, without a lock: ``multiprocessing.RawValue``.

    ``name``/``create``/``mode`` follow the rules of every named interproc
    object; opening an existing name keeps its value (``args`` only
    initialize a new one) and checks its type.  Integer values also have
    lock-free ``load``, ``store``, ``fetch_add``, ``fetch_sub``,
    ``exchange`` and ``compare_exchange`` methods (sequentially consistent).
    """
    return _construct(_ctype(typecode_or_type), None, args, name, create, mode)


def RawArray(typecode_or_type: Any, size_or_initializer: Any, *, name: Optional[str] = None,
             create: Optional[bool] = None, mode: int = 0o600) -> Any:
    """A ctypes array in shared memory, without a lock: ``multiprocessing.RawArray``.

    ``size_or_initializer`` is a length (the array starts zeroed) or a
    sequence to copy in.
    """
    base = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
        if size_or_initializer < 0:
            raise ValueError(f"array size must be >= 0, not {size_or_initializer}")
        length, init = size_or_initializer, None
    else:
        init = list(size_or_initializer)
        length = len(init)
    return _construct(base, length, init, name, create, mode)


def _construct(base: type, length: Optional[int], init: Any, name: Optional[str],
          create: Optional[bool], mode: int) -> Any:
    """Open or create the segment and lay the ctypes object over it,
    filling a new one with ``init``.  If that fails (a bad initializer),
    the descriptor is given back now and a name it created is taken back,
    so that nothing is left behind."""
    segment, created = _open(base, length, name, create, mode)
    try:
        obj = _view(segment, base, length)
        if created and init:
            obj.__init__(*init)
    except BaseException:
        segment.close()
        if created and name is not None:
            try:
                naming.unlink(name)
            except FileNotFoundError:
                pass
        raise
    return obj


class SynchronizedInt(_core.AtomicCell):
    """What ``Value`` returns for an integer type: multiprocessing's
    Synchronized wrapper (``value``, ``get_lock()``, ``get_obj()``,
    ``acquire()``, ``release()``, ``with``), with the atomic methods.

    Each read or write of ``value`` is one atomic operation on the shared
    integer, so it is never torn, without taking the lock; as with
    multiprocessing, hold ``get_lock()`` around a read-modify-write such as
    ``value += 1`` (or use ``fetch_add``).
    """

    def __new__(cls, obj: Any, lock: Any) -> "SynchronizedInt":
        segment, base, _ = obj._interproc_segment
        self = super().__new__(cls, segment, 0, ctypes.sizeof(base), base(-1).value < 0)
        self._obj = obj
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        return self

    def get_lock(self) -> Any:
        return self._lock

    def get_obj(self) -> Any:
        return self._obj

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *args: Any) -> Any:
        return self._lock.__exit__(*args)

    def __reduce__(self):
        return (_rewrap, (self._obj, self._lock))

    def __repr__(self) -> str:
        return f"<Synchronized wrapper for {self._obj!r}>"


def _wrap(obj: Any, lock: Any) -> Any:
    if lock is False:
        return obj
    segment, base, length = obj._interproc_segment
    if lock in (True, None):
        lock = segment
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    if base in _INTEGERS and length is None:
        return SynchronizedInt(obj, lock)
    wrapper = _mp_sharedctypes.synchronized(obj, lock)
    wrapper.__class__ = _traveling(type(wrapper))
    return wrapper


_traveling_classes: "dict[type, type]" = {}


def _traveling(cls: type) -> type:
    """multiprocessing's wrapper class, made to pickle anywhere, not only
    while a child is spawned: the object and its lock both travel by
    reference."""
    sub = _traveling_classes.get(cls)
    if sub is None:
        sub = type(cls.__name__, (cls,), {
            "__reduce__": lambda self: (_rewrap, (self._obj, self._lock)),
            # Python 3.12+ lets a class export a buffer: numpy.frombuffer(arr).
            "__buffer__": lambda self, flags: memoryview(self._obj),
            "__module__": __name__,
        })
        _traveling_classes[cls] = sub
    return sub


def _rewrap(obj: Any, lock: Any) -> Any:
    return _wrap(obj, lock)


def Value(typecode_or_type: Any, *args: Any, lock: Any = True, name: Optional[str] = None,
          create: Optional[bool] = None, mode: int = 0o600) -> Any:
    """A ctypes object in shared memory, with a lock: ``multiprocessing.Value``.

    ``lock=True`` (the default) uses the RLock that lives with the value,
    ``lock=False`` returns the raw object, and any object with ``acquire``
    is used as given (``get_lock()`` returns it).  ``.value``,
    ``get_lock()`` and ``get_obj()`` as in multiprocessing; integer values
    also have the atomic methods of :func:`RawValue`.
    """
    return _wrap(RawValue(typecode_or_type, *args, name=name, create=create, mode=mode), lock)


def Array(typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True,
          name: Optional[str] = None, create: Optional[bool] = None, mode: int = 0o600) -> Any:
    """A ctypes array in shared memory, with a lock: ``multiprocessing.Array``.

    Indexing, slicing and ``len()`` take the lock, as in multiprocessing;
    ``Array('c', n)`` has ``.value`` and ``.raw``.
    """
    raw = RawArray(typecode_or_type, size_or_initializer, name=name, create=create, mode=mode)
    return _wrap(raw, lock)


def as_ndarray(obj: Any) -> Any:
    """A NumPy array over the shared memory of a Value or Array (no copy),
    with the dtype and shape of its ctypes type.  Writes through it are
    seen by every process; they do not take the lock."""
    import numpy

    raw = obj.get_obj() if hasattr(obj, "get_obj") else obj
    return numpy.ctypeslib.as_array(raw)


def _attacher(kind: int, kind_name: str) -> type:
    """What ``interproc.attach`` uses for a name holding a Value or Array:
    rebuilt from the type description stored with it, with its lock."""

    def attach_fd(fd: int, name: Optional[str]) -> Any:
        segment = _core.SyncCore.__new__(RLock, fd, kind)._setup(name, kind)
        try:
            base, length = pickle.loads(segment._meta)
        except Exception as exc:
            segment.close()
            raise naming.SegmentError(f"{name!r}: cannot rebuild its type ({exc})") from None
        return _wrap(_view(segment, base, length), True)

    return type(kind_name, (), {"_attach_fd": staticmethod(attach_fd)})


naming.register_kind(_core.KIND_VALUE, _attacher(_core.KIND_VALUE, "Value"))
naming.register_kind(_core.KIND_ARRAY, _attacher(_core.KIND_ARRAY, "Array"))
