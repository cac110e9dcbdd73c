"""Value, Array, RawValue and RawArray: ctypes objects in shared memory.

The semantics of ``multiprocessing.sharedctypes``, plus names, atomic
operations on integers, and a zero-copy NumPy view.  Each object is one
segment: its first page holds an RLock (the lock ``Value``/``Array`` use by
default, so it survives a holder's death like any interproc lock) and a
description of the ctypes type; the data follows.

The description is plain data (compact JSON), never a pickle: opening or
listing a segment that someone else wrote must not run their code.  It
names simple types (``c_int``, ...), gives arrays with their length and
Structures/Unions as their fields, recursively; ``attach`` rebuilds an
equivalent ctypes type from it with nothing imported.
"""
from __future__ import annotations

import copyreg
import ctypes
import json
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


# ---------------------------------------------------------------------------
# Type descriptions: plain data that says what a ctypes type is.
#
#   simple       "c_int", or {"s": "c_int", "o": "be"|"le", "n": subclass name}
#   array        {"e": <element>, "len": n}
#   Structure    {"k": "struct"|"union", "n": class name, "o": "be"|"le",
#                 "base": <parent Structure>, "pack": int, "align": int,
#                 "layout": str, "anon": [field, ...],
#                 "f": [[field, <type>], [field, <type>, bits], ...]}
#
# A Structure's keys other than "k" and "n" appear only when its class sets
# them itself ("o" only on one derived from a byte-order root, "base" only on
# one derived from another Structure), so that rebuilding the class the same
# way gives ctypes the same inputs and so the same layout.

# Every simple type that holds plain data, by typecode.  Pointer types
# ("z", "Z", "P") and py_object ("O") are not here: what they hold is an
# address in one process's memory, meaningless, and deadly, in any other.
_SIMPLE_BY_CODE = {
    t._type_: t for t in (
        ctypes.c_bool, ctypes.c_char, ctypes.c_wchar, ctypes.c_byte, ctypes.c_ubyte,
        ctypes.c_short, ctypes.c_ushort, ctypes.c_int, ctypes.c_uint, ctypes.c_long,
        ctypes.c_ulong, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_float, ctypes.c_double,
        ctypes.c_longdouble,
    )
}
_SIMPLE_BY_NAME = {t.__name__: t for t in _SIMPLE_BY_CODE.values()}
_ORDERS = {"be": "__ctype_be__", "le": "__ctype_le__"}

# The classes a Structure or Union derives from directly, by (kind, order);
# on a little-endian machine LittleEndianStructure *is* Structure.
_ROOTS: "dict[tuple[str, Optional[str]], type]" = {("struct", None): ctypes.Structure,
                                                   ("union", None): ctypes.Union}
for _order, _prefix in (("be", "BigEndian"), ("le", "LittleEndian")):
    for _kind, _plain in (("struct", ctypes.Structure), ("union", ctypes.Union)):
        _root = getattr(ctypes, _prefix + _plain.__name__, None)
        if _root is not None and _root is not _plain:
            _ROOTS[(_kind, _order)] = _root
_ROOT_KEYS = {root: key for key, root in _ROOTS.items()}

#: How deep types may nest (arrays of arrays, structures in structures).
_MAX_DEPTH = 32
#: Bytes the segment keeps for a description (IP_SYNC_META_MAX in the core).
META_MAX = 2048
# A Structure's own settings that shape its layout: description key -> class attribute.
_LAYOUT_ATTRS = (("pack", "_pack_"), ("align", "_align_"), ("layout", "_layout_"))
_BIG = 1 << 48  # beyond any sane length, pack or alignment


def _plain_name(name: Any) -> bool:
    """A class or field name a description may carry: an identifier that is
    not one of Python's or ctypes' own (``__x__``, ``_fields_``)."""
    return (isinstance(name, str) and name.isidentifier() and len(name) <= 200
            and not (len(name) > 1 and name.startswith("_") and name.endswith("_")))


def _type_desc(t: Any, depth: int = 0) -> Any:
    """The description of ctypes type ``t``; TypeError for one that cannot be shared."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"cannot share a type nested more than {_MAX_DEPTH} levels deep")
    if not isinstance(t, type):
        raise TypeError(f"{t!r} is not a ctypes type")
    canon = _SIMPLE_BY_CODE.get(getattr(t, "_type_", None)) if issubclass(t, ctypes._SimpleCData) else None
    if issubclass(t, (ctypes._SimpleCData, ctypes._Pointer, ctypes._CFuncPtr)) and canon is None:
        raise TypeError(
            f"cannot share {t.__name__}: a pointer or object type holds an address in one "
            "process's memory; use Array('c', ...) for bytes, or a SharedDict or Namespace "
            "for other objects")
    if canon is not None:
        desc: "dict[str, Any]" = {"s": canon.__name__}
        plain = canon
        for order, attr in _ORDERS.items():
            swapped = getattr(canon, attr, canon)
            if swapped is not canon and issubclass(t, swapped):
                desc["o"], plain = order, swapped
        if t is not plain:
            desc["n"] = _class_name(t)
        return desc["s"] if len(desc) == 1 else desc
    if issubclass(t, ctypes.Array):
        return {"e": _type_desc(t._type_, depth + 1), "len": t._length_}
    if issubclass(t, (ctypes.Structure, ctypes.Union)):
        return _struct_desc(t, depth)
    raise TypeError(f"cannot share {t.__name__}: only simple ctypes types, arrays, Structures and "
                    "Unions can be shared")


def _class_name(t: type) -> str:
    if not _plain_name(t.__name__):
        raise TypeError(f"cannot share {t.__name__!r}: its class name must be a plain identifier")
    return t.__name__


def _struct_desc(t: type, depth: int) -> "dict[str, Any]":
    if len(t.__bases__) != 1:
        raise TypeError(f"cannot share {t.__name__}: a Structure with several bases")
    parent = t.__bases__[0]
    desc: "dict[str, Any]" = {"k": "union" if issubclass(t, ctypes.Union) else "struct",
                              "n": _class_name(t)}
    if parent in _ROOT_KEYS:
        order = _ROOT_KEYS[parent][1]
        if order is not None:
            desc["o"] = order
    else:
        desc["base"] = _type_desc(parent, depth + 1)
    own = vars(t)
    for key, attr in _LAYOUT_ATTRS:
        if attr in own:
            desc[key] = own[attr]
    if "_anonymous_" in own:
        desc["anon"] = list(own["_anonymous_"])
    if "_fields_" in own:
        fields = []
        for field in own["_fields_"]:
            if not _plain_name(field[0]):
                raise TypeError(f"cannot share {t.__name__}: its field name {field[0]!r} is not a "
                                "plain identifier")
            fields.append([field[0], _type_desc(field[1], depth + 1), *field[2:]])
        desc["f"] = fields
    return desc


def _describe(base: type, length: Optional[int]) -> bytes:
    """What the segment of a value of ``base`` (an array if ``length`` is
    not None) stores about its type."""
    desc = _type_desc(base)
    if length is not None:
        desc = {"e": desc, "len": length}
    meta = json.dumps(desc, separators=(",", ":")).encode()
    if len(meta) > META_MAX:
        raise ValueError(
            f"the description of {_desc_text(desc)} takes {len(meta)} bytes, and a shared value "
            f"keeps at most {META_MAX}: use fewer or shorter fields or names")
    return meta


class _BadDescription(Exception):
    pass


def _parse(meta: bytes) -> Any:
    """The description stored in a segment, as data; _BadDescription if it is not one."""
    try:
        return json.loads(meta.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _BadDescription(
            f"its type description is not readable ({type(exc).__name__}); it was damaged, or "
            "written by something else than this interproc") from None


def _build(desc: Any, depth: int = 0) -> type:
    """The ctypes type a description describes, made from ctypes' own
    classes alone; _BadDescription (or whatever ctypes raises) if it makes
    no sense."""
    if depth > _MAX_DEPTH:
        raise _BadDescription(f"types nested more than {_MAX_DEPTH} levels deep")
    if isinstance(desc, str):
        desc = {"s": desc}
    if not isinstance(desc, dict):
        raise _BadDescription(f"a {type(desc).__name__} where a type belongs")
    if "s" in desc:
        return _build_simple(desc)
    if "e" in desc:
        _keys(desc, {"e", "len"})
        length = _number(desc.get("len"), "length")
        return _build(desc["e"], depth + 1) * length
    if "k" in desc:
        return _build_struct(desc, depth)
    raise _BadDescription("a type of unknown form")


def _keys(desc: dict, allowed: "set[str]") -> None:
    unknown = set(desc) - allowed
    if unknown:
        raise _BadDescription(f"unknown keys {sorted(unknown)!r}")


def _number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _BIG:
        raise _BadDescription(f"bad {what} {value!r}")
    return value


def _name_of(desc: dict) -> str:
    name = desc.get("n")
    if not _plain_name(name):
        raise _BadDescription(f"bad class name {name!r}")
    return name


def _build_simple(desc: dict) -> type:
    _keys(desc, {"s", "o", "n"})
    cls = _SIMPLE_BY_NAME.get(desc["s"]) if isinstance(desc["s"], str) else None
    if cls is None:
        raise _BadDescription(f"unknown simple type {desc['s']!r}")
    if "o" in desc:
        if desc["o"] not in _ORDERS:
            raise _BadDescription(f"unknown byte order {desc['o']!r}")
        cls = getattr(cls, _ORDERS[desc["o"]])
    if "n" in desc:
        cls = _make(_name_of(desc), cls, {}, desc)
    return cls


def _build_struct(desc: dict, depth: int) -> type:
    _keys(desc, {"k", "n", "o", "base"} | {key for key, _ in _LAYOUT_ATTRS} | {"anon", "f"})
    kind = desc["k"]
    if kind not in ("struct", "union"):
        raise _BadDescription(f"unknown aggregate {kind!r}")
    if "base" in desc:
        if "o" in desc:
            raise _BadDescription("a byte order beside a base")
        parent = _build(desc["base"], depth + 1)
        if not issubclass(parent, ctypes.Union if kind == "union" else ctypes.Structure):
            raise _BadDescription(f"a {kind} derived from {parent.__name__}")
    else:
        parent = _ROOTS.get((kind, desc.get("o")))
        if parent is None:
            raise _BadDescription(f"unknown byte order {desc.get('o')!r}")
    namespace: "dict[str, Any]" = {}
    for key, attr in _LAYOUT_ATTRS[:2]:
        if key in desc:
            namespace[attr] = _number(desc[key], key)
    if "layout" in desc:
        if desc["layout"] not in ("ms", "gcc-sysv"):
            raise _BadDescription(f"unknown layout {desc['layout']!r}")
        namespace["_layout_"] = desc["layout"]
    fields = []
    for field in desc.get("f", []):
        if not isinstance(field, list) or len(field) not in (2, 3) or not _plain_name(field[0]):
            raise _BadDescription(f"bad field {field!r:.100}")
        built = [field[0], _build(field[1], depth + 1)]
        if len(field) == 3:
            built.append(_number(field[2], "bit width"))
        fields.append(tuple(built))
    anonymous = desc.get("anon", [])
    if not isinstance(anonymous, list) or not all(a in {f[0] for f in fields} for a in anonymous):
        raise _BadDescription("anonymous fields that are not fields")
    if anonymous:
        namespace["_anonymous_"] = tuple(anonymous)
    if "f" in desc:
        namespace["_fields_"] = fields
    return _make(_name_of(desc), parent, namespace, desc)


def _rebuild(meta: bytes, kind: int, data_size: int, name: Optional[str]) -> "tuple[type, Optional[int]]":
    """``(base, length)`` from a segment's description: what attach uses.
    SegmentError for a description that is not one, describes a type this
    interproc cannot make, or a type larger than the segment's data."""
    try:
        base, length = _built(bytes(meta), kind)
    except _BadDescription as exc:
        raise naming.SegmentError(f"{name!r}: {exc}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError,
            MemoryError) as exc:
        raise naming.SegmentError(f"{name!r}: cannot rebuild its type from its description ({exc})"
                                  ) from None
    size = ctypes.sizeof(base) * (1 if length is None else length)
    if size > data_size:
        raise naming.SegmentError(f"{name!r}: its type takes {size} bytes, more than the "
                                  f"{data_size} its segment holds")
    return base, length


def _built(meta: bytes, kind: int) -> "tuple[type, Optional[int]]":
    if kind != _core.KIND_ARRAY:
        return _described_type(meta), None
    desc = _parse(meta)
    if not isinstance(desc, dict) or "e" not in desc:
        raise _BadDescription("an Array whose type is not an array")
    _keys(desc, {"e", "len"})
    length = _number(desc.get("len"), "length")
    return _described_type(json.dumps(desc["e"], separators=(",", ":")).encode()), length


# Description -> the type made from it: attaching a name twice gives objects
# of one type, and listing again and again makes (and registers with the
# pickler) no new classes.  It grows with the distinct types a process
# attaches, as the pickler's own registry does.
_types: "dict[bytes, type]" = {}


def _described_type(meta: bytes) -> type:
    """The type a stored description describes; also how pickle remakes one."""
    t = _types.get(meta)
    if t is None:
        t = _types[meta] = _build(_parse(meta))
    return t


# A class made from a description cannot be pickled by name, as the
# creator's class is: nothing importable holds it.  It is made by a
# subclass of its ctypes metaclass, one that pickles it as its description,
# so an attached value travels to other processes like any other.
_metaclasses: "dict[type, type]" = {}
_meta_classes_made: "set[type]" = set()
_meta_of: "dict[type, bytes]" = {}


def _make(name: str, parent: type, namespace: "dict[str, Any]", desc: dict) -> type:
    plain_meta = type(parent)
    meta_cls = plain_meta if plain_meta in _meta_classes_made else _metaclasses.get(plain_meta)
    if meta_cls is None:
        meta_cls = _metaclasses[plain_meta] = type(plain_meta.__name__, (plain_meta,), {})
        copyreg.pickle(meta_cls, _reduce_described)
        _meta_classes_made.add(meta_cls)
    cls = meta_cls(name, (parent,), namespace)
    _meta_of[cls] = json.dumps(desc, separators=(",", ":")).encode()
    return cls


def _reduce_described(cls: type) -> tuple:
    return (_described_type, (_meta_of[cls],))


def _desc_text(desc: Any, depth: int = 0) -> str:
    """A description in words, for messages; never fails."""
    try:
        if depth > _MAX_DEPTH:
            return "..."
        if isinstance(desc, str):
            return desc
        if "e" in desc:
            return f"{_desc_text(desc['e'], depth + 1)} * {int(desc['len'])}"
        text = str(desc.get("n") or desc.get("s"))
        if desc.get("o") in _ORDERS:
            text += f" ({'big' if desc['o'] == 'be' else 'little'}-endian)"
        return text
    except Exception:  # noqa: BLE001 - words for a message, from any data
        return "an unreadable type"


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
    held = segment._meta
    if held != meta:
        try:
            # Only a description that makes sense is another type; any other
            # is damage, and says so (SegmentError).
            _rebuild(held, kind, segment._data_size, name)
        finally:
            segment.close()
        raise TypeError(f"{name!r} holds {_desc_text(_parse(held))}, not "
                        f"{_desc_text(json.loads(meta))}")
    return segment, bool(created)


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

    def get(self) -> Any:
        """``value``, as a multiprocessing manager's ValueProxy has it."""
        return self.value

    def set(self, v: Any) -> None:
        """``value = v``, as a multiprocessing manager's ValueProxy has it."""
        self.value = v

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
        attrs = {
            "__reduce__": lambda self: (_rewrap, (self._obj, self._lock)),
            # Python 3.12+ lets a class export a buffer: numpy.frombuffer(arr).
            "__buffer__": lambda self, flags: memoryview(self._obj),
            "__module__": __name__,
        }
        if cls is _mp_sharedctypes.Synchronized:
            # A Value also answers as a multiprocessing manager's ValueProxy,
            # since Manager().Value() returns one.
            attrs["get"] = lambda self: self.value
            attrs["set"] = lambda self, v: setattr(self, "value", v)
        sub = type(cls.__name__, (cls,), attrs)
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
    rebuilt, with its lock, from the plain type description stored with it,
    so with an equivalent ctypes type rather than the creator's class."""

    def attach_fd(fd: int, name: Optional[str]) -> Any:
        segment = _core.SyncCore.__new__(RLock, fd, kind)._setup(name, kind)
        try:
            base, length = _rebuild(segment._meta, kind, segment._data_size, name)
        except BaseException:
            segment.close()
            raise
        return _wrap(_view(segment, base, length), True)

    return type(kind_name, (), {"_attach_fd": staticmethod(attach_fd)})


naming.register_kind(_core.KIND_VALUE, _attacher(_core.KIND_VALUE, "Value"))
naming.register_kind(_core.KIND_ARRAY, _attacher(_core.KIND_ARRAY, "Array"))
