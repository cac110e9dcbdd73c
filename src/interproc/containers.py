"""SharedDict, SharedList, SharedSet and Namespace: containers stored once, in shared memory.

Every process reads and writes them directly: there is no server process
and no per-process replica.  They live in a *heap*, a shared-memory segment
with one lock, an allocator and an undo log (``_core/heap.c``):

- every operation holds the heap's lock, so single operations (``d[k] = v``,
  ``setdefault``, ``pop``, ``update``, ``append``, ``s |= other``...) are
  atomic;
- ``with d.lock:`` holds it across several operations, for compound
  updates; ``d.increment(k)`` is the atomic ``d[k] += 1``;
- a process killed in the middle of an operation leaves the container as it
  was before that operation: whoever takes the lock next rolls it back;
- the heap grows while memory lasts and reuses what is freed.

Anonymous containers made in one process share that process's heap (which
forked children inherit), so a container stored in another stays the same
container: reading it back anywhere gives a handle on it, not a copy.  A
named container (``name=...``) has a heap of its own, ``/dev/shm/interproc.<name>``,
that lives until :meth:`unlink`.

Keys behave as dict keys do, in every process, whatever its hash seed:
they are compared in a canonical encoding, in which ``1``, ``1.0`` and
``True`` are one key, for None, bool, int, float, str, bytes and tuples and
frozensets of these (subclasses such as IntEnum count as their base value).
Any other hashable key is compared by its pickle: two such keys are one key
when they pickle to the same bytes.  A SharedSet is a dict table whose
values are all None, so its elements compare the same way.
"""
from __future__ import annotations

import collections.abc
import threading
import weakref
from typing import Any, Iterable, Iterator, Optional

from . import _aio, _core, naming, serialization  # noqa: F401  (serialization configures _core)
from ._container_api import (CHUNK_FIRST, CHUNK_MAX, KEYS_ADD, DictAPI, FromKeys, ListAPI, SetAPI,
                             dict_pairs, list_values, set_keys)

__all__ = ["SharedDict", "SharedList", "SharedSet", "Namespace"]

# uid -> this process's view of that heap, so a reference to a heap that is
# already open reuses its mapping (and its in-heap references stay valid).
_heaps: "weakref.WeakValueDictionary[int, _core.HeapCore]" = weakref.WeakValueDictionary()
_heap_names: "dict[int, str]" = {}
_default: Optional[_core.HeapCore] = None
_default_lock = threading.Lock()


def _register(heap: _core.HeapCore, name: Optional[str]) -> _core.HeapCore:
    heap.factory = _class_of
    _heaps[heap.uid] = heap
    if name is not None:
        _heap_names[heap.uid] = name
    return heap


def _default_heap() -> _core.HeapCore:
    """The heap of this process's anonymous containers, made on first use.

    A forked child keeps its parent's; a spawned one adopts the first
    anonymous heap it receives a container from.
    """
    global _default
    heap = _default
    if heap is None:
        with _default_lock:
            if _default is None:
                fd, _ = naming.open_segment(None, True, 0o600)
                _default = _register(_core.HeapCore(fd, _core.KIND_HEAP, True), None)
            heap = _default
    return heap


def _class_of(obj_type: int) -> type:
    """The class of a handle on a container read back out of another: the
    core makes the handle itself (it has already counted it in)."""
    return {_core.OBJ_DICT: SharedDict, _core.OBJ_LIST: SharedList,
            _core.OBJ_NAMESPACE: Namespace, _core.OBJ_SET: SharedSet}[obj_type]


def _handle(cls: type, heap: _core.HeapCore, offset: int, oid: int,
            name: Optional[str] = None) -> Any:
    base = _core.ListCore if issubclass(cls, _core.ListCore) else _core.DictCore
    obj = base.__new__(cls, heap, offset, oid)
    if name is not None:
        object.__setattr__(obj, "_name", name)
    return obj


def _open(cls: type, kind: int, obj_type: int, name: Optional[str], create: Optional[bool],
          mode: int, fill: Any) -> Any:
    """Create or attach a container; ``fill(obj)`` gives a new one its content."""
    if name is None:
        if create is False:
            raise ValueError("create=False needs a name: there is nothing to attach to")
        heap = _default_heap()
        offset, oid = heap.new_object(obj_type)
        obj = _handle(cls, heap, offset, oid)
        fill(obj)
        return obj

    def make_new(fd: int) -> Any:
        heap = _register(_core.HeapCore(fd, kind, True), name)
        offset, oid = heap.root
        obj = _handle(cls, heap, offset, oid, name=name)
        fill(obj)
        return obj

    def attach_existing(fd: int) -> Any:
        heap = _register(_core.HeapCore(fd, kind, False), name)
        offset, oid = heap.root
        obj = _handle(cls, heap, offset, oid, name=name)
        if fill is not _nothing:
            obj.close()
            raise ValueError(f"{cls.__name__} {name!r} already exists; content can only be "
                             "given when it is created")
        return obj

    return naming.open_object(name, create, mode, make_new, attach_existing)


def _nothing(obj: Any) -> None:
    pass


def _heap_reference(heap: _core.HeapCore) -> tuple:
    name = _heap_names.get(heap.uid)
    if name is not None:
        return naming.name_reference(name, heap.uid)
    return ("fd", naming.share_fds([heap.fd]), heap.uid)


def _rebuild(cls: type, ref: tuple, kind: int, offset: int, oid: int) -> Any:
    global _default
    uid = ref[-1]
    heap = _heaps.get(uid)
    name = ref[1] if ref[0] == "name" else None
    if heap is None:
        fd, name = naming.open_reference(ref)
        heap = _core.HeapCore(fd, kind, False)
        if heap.uid != uid:
            raise RuntimeError(
                "the container that was sent is gone: its name or descriptor now belongs to "
                "another object")
        _register(heap, name)
        if name is None and kind == _core.KIND_HEAP:
            with _default_lock:
                if _default is None:
                    _default = heap
    return _handle(cls, heap, offset, oid, name=name)


class ContainerLock:
    """The lock of a container's heap: ``with d.lock:`` makes a compound
    update atomic with respect to every other process and thread.

    Re-entrant for the thread holding it, so the container's own operations
    work inside the ``with`` block.  It covers every container of the same
    heap.  A process killed while holding it releases it; the operations it
    had finished stay done, one it was in the middle of is undone.
    """

    __slots__ = ("_heap",)

    def __init__(self, heap: _core.HeapCore) -> None:
        self._heap = heap

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; False if ``block`` is false or ``timeout`` passed first."""
        return self._heap.acquire(block, timeout)

    def release(self) -> None:
        """Drop one hold taken by acquire(); RuntimeError if this thread holds
        none, or only holds that an operation in progress depends on (code a
        container operation calls, such as a sort key, ``__eq__`` or
        ``__index__``, cannot release the lock from under it)."""
        self._heap.release()

    def locked_by_me(self) -> bool:
        return self._heap._is_owned()

    async def acquire_async(self, timeout: Optional[float] = None) -> bool:
        """``acquire()`` for a coroutine: False when ``timeout`` seconds
        pass first.  The lock belongs to the task, as it would to a
        thread: the task's container operations and ``acquire``s enter
        it again, and it releases it with ``release()`` or at the end of
        ``async with``.  While the task holds it, another task of the same
        loop awaits it here; a plain container operation from that other
        task raises RuntimeError rather than wait for ever (the holder
        could not run to let go).  Nothing polls: letting go of the lock
        rings the loop, and a holder that dies is taken over (its
        unfinished operation undone) within a second.  Cancelled, it holds
        nothing more than before."""
        owner = _aio.task_owner()
        got = await _aio.wait_until(
            self._heap, 0, lambda: True if self._heap._acquire_as(owner) else _aio.NOTHING,
            timeout, recheck=True)
        return got is not _aio.NOTHING

    async def __aenter__(self) -> bool:
        return await self.acquire_async()

    async def __aexit__(self, *exc: Any) -> None:
        self._heap.release()

    def __enter__(self) -> bool:
        return self._heap.acquire()

    def __exit__(self, *exc: Any) -> None:
        self._heap.release()

    def __repr__(self) -> str:
        return f"<ContainerLock held={self._heap._is_owned()}>"


class _Guard:
    """Holds a heap's lock across one of this module's compound operations
    (remove, sort, slice assignment, increment...).  Re-entrant like
    ContainerLock, but the user code such an operation calls (a sort key,
    ``__eq__``, ``__index__``) cannot release it from under the operation."""

    __slots__ = ("_heap",)

    def __init__(self, heap: _core.HeapCore) -> None:
        self._heap = heap

    def __enter__(self) -> None:
        self._heap._guard_enter()

    def __exit__(self, *exc: Any) -> None:
        self._heap._guard_exit()


class _Container:
    """What the three containers share: names, the lock, pickling."""

    _KIND = 0
    _name: Optional[str] = None

    @property
    def name(self) -> Optional[str]:
        """The name, or None for an anonymous container."""
        return self._name

    @property
    def lock(self) -> ContainerLock:
        """The lock that makes compound updates atomic (see ContainerLock)."""
        return ContainerLock(self._heap)

    def unlink(self) -> None:
        """Remove the name.  Open handles keep working; the memory goes with the
        last of them.  Nothing happens for an anonymous container."""
        if self._name is not None:
            try:
                naming.unlink(self._name)
            except FileNotFoundError:
                pass

    def __reduce__(self) -> tuple:
        heap = self._heap
        return (_rebuild, (type(self), _heap_reference(heap), heap.kind, self._offset, self._oid))

    def __dir__(self) -> list:
        # object.__dir__ cannot read the instance dict of a handle whose
        # layout is the core's: the class's names are the API anyway.
        return dir(type(self))

    def __copy__(self) -> Any:
        return self.copy()

    def __deepcopy__(self, memo: dict) -> Any:
        # A deep copy is a private copy: plain types, not another handle on
        # the same shared memory (which is what pickling gives).
        import copy
        return copy.deepcopy(self.copy(), memo)

    # naming.object_info: what `interproc ls` shows
    def _unregister_pid(self) -> None:
        pass

    def _info(self) -> dict:
        info = self._heap.info()
        return {"kind": self._heap.kind, "capacity_bytes": info["size"] - _core.HEAP_START,
                "items": len(self),
                "bytes_used": info["live_bytes"], "pids": [], "maxsize": None,
                "file_size": info["file_size"]}

    @classmethod
    def _attach_fd(cls, fd: int, name: Optional[str], kind: Optional[int] = None) -> Any:
        heap = _register(_core.HeapCore(fd, cls._KIND, False), name)
        offset, oid = heap.root
        return _handle(cls, heap, offset, oid, name=name)


def _read_all(d: Any, what: int) -> list:
    """Every key, value or item of a dict or Namespace (what = 0, 1, 2), read
    under one hold of its heap's lock and unpickled after it."""
    return d._snapshot(what)


def _changed(d: Any, size: int, now: Optional[int] = None) -> None:
    noun = d._ITER_NOUN
    if now is None:
        now = d._state()[0]
    if now != size:
        raise RuntimeError(f"{noun} changed size during iteration")
    raise RuntimeError(f"{noun} keys changed during iteration")


def _iterate(d: Any, what: int) -> Iterator[Any]:
    """Iterate a dict or set like a dict: RuntimeError if its keys change
    (in any process) while it runs."""
    # Read now, not at the first next(): a dict's iterator counts a change
    # made between iter() and the first next() too.
    size, version = d._state()
    return _iterate_from(d, what, size, version)


def _iterate_from(d: Any, what: int, size: int, version: int) -> Iterator[Any]:
    pos, want = 0, CHUNK_FIRST
    while True:
        chunk, pos, ver = d._chunk(pos, want, what)
        if ver != version:
            _changed(d, size)
        if not chunk:
            return
        for x in chunk:
            yield x
            now_size, now_version = d._state()
            if now_version != version:
                _changed(d, size, now_size)
        want = min(want * 4, CHUNK_MAX)


_MISSING = object()


class _FromKeys(FromKeys):
    """``SharedDict.fromkeys(iterable, value=None)`` makes a new anonymous
    SharedDict."""

    def on_class(self, cls: type) -> Any:
        def fromkeys(iterable: Iterable[Any], value: Any = None) -> Any:
            return cls([(k, value) for k in iterable])
        fromkeys.__doc__ = "A new anonymous SharedDict with keys from iterable, each set to value."
        return fromkeys


class SharedDict(_Container, DictAPI, _core.DictCore):
    """A dict in shared memory, shared by every process that has a handle on it.

    ``SharedDict(*args, name=None, create=None, mode=0o600, **kwargs)`` takes
    its content as ``dict(*args, **kwargs)`` does; ``name``, ``create`` and
    ``mode`` are the usual interproc naming arguments (to store a key called
    ``name``, pass a dict).  Content is only accepted when the dict is
    created, not when an existing name is attached.

    It has the whole dict API.  Keys are any hashable objects (see the
    module's notes on how they compare), values any picklable objects; a
    SharedDict, SharedList or Namespace stored as a value stays shared.
    ``str(d)`` is the plain dict's text; ``copy()`` returns a plain dict.
    Iterating while the keys change, in any process, raises RuntimeError as
    a dict does.  Single operations are atomic; ``with d.lock:`` makes a
    sequence of them atomic; ``d.increment(k)`` is an atomic ``d[k] += 1``.
    """

    _KIND = _core.KIND_DICT
    _ITER_NOUN = "dictionary"

    def __new__(cls, *args: Any, name: Optional[str] = None, create: Optional[bool] = None,
                mode: int = 0o600, **kwargs: Any) -> "SharedDict":
        if args or kwargs:
            pairs = dict_pairs(args, kwargs)  # bad content fails before anything is made
            fill = lambda obj: obj._update_pairs(pairs)  # noqa: E731
        else:
            fill = _nothing
        return _open(cls, cls._KIND, _core.OBJ_DICT, name, create, mode, fill)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything happens in __new__

    fromkeys = _FromKeys()

    def _all(self, what: int) -> list:
        return _read_all(self, what)

    def _iterate(self, what: int) -> Iterator[Any]:
        return _iterate(self, what)

    def increment(self, key: Any, delta: Any = 1, default: Any = 0) -> Any:
        """Atomically ``d[key] = d.get(key, default) + delta``; returns the new value."""
        with _Guard(self._heap):
            value = self.get(key, default) + delta
            self[key] = value
            return value


collections.abc.MutableMapping.register(SharedDict)


class SharedList(_Container, ListAPI, _core.ListCore):
    """A list in shared memory, shared by every process that has a handle on it.

    ``SharedList(iterable=(), *, name=None, create=None, mode=0o600)``.  It
    has the whole list API, with list's errors; ``+`` and ``*`` and
    ``copy()`` give plain lists, ``+=`` and ``*=`` change it in place.
    Values are any picklable objects; a shared container stored in it stays
    shared.  Single operations are atomic (``append``, ``insert``, ``pop``,
    slice assignment, ``sort``...); ``with l.lock:`` makes a sequence of
    them atomic.
    """

    _KIND = _core.KIND_LIST

    def __new__(cls, iterable: Iterable[Any] = (), *, name: Optional[str] = None,
                create: Optional[bool] = None, mode: int = 0o600) -> "SharedList":
        values = list_values(iterable)
        fill = (lambda obj: obj._replace(None, None, values)) if values else _nothing
        return _open(cls, cls._KIND, _core.OBJ_LIST, name, create, mode, fill)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def index(self, value: Any, start: int = 0, stop: int = 2**63 - 1) -> int:
        """The first index of value in [start, stop); ValueError if absent."""
        try:
            return self[:].index(value, start, stop)
        except ValueError:
            raise ValueError(f"{value!r} is not in list") from None

    def count(self, value: Any) -> int:
        return self[:].count(value)

    def extend(self, iterable: Iterable[Any]) -> None:
        """Append every value of iterable, in one atomic step."""
        self._replace(None, None, list_values(iterable))

    def remove(self, value: Any) -> None:
        """Remove the first occurrence of value, atomically; ValueError if absent."""
        with _Guard(self._heap):
            try:
                i = self[:].index(value)
            except ValueError:
                raise ValueError("list.remove(x): x not in list") from None
            del self[i]

    def clear(self) -> None:
        self._replace(0, None, [])

    def copy(self) -> list:
        """A plain list with the same content, read atomically."""
        return self[:]

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        """Sort in place, stably, atomically.  Values are moved, not rewritten."""
        with _Guard(self._heap):
            values = self[:]
            keyed = values if key is None else [key(v) for v in values]
            order = sorted(range(len(values)), key=keyed.__getitem__, reverse=reverse)
            self._select(order)

    def reverse(self) -> None:
        with _Guard(self._heap):
            self._select(range(len(self) - 1, -1, -1))

    def _assign_slice(self, slc: slice, value: Any) -> None:
        values = list_values(value, "can only assign an iterable")
        with _Guard(self._heap):
            start, stop, step = slc.indices(len(self))
            if step == 1:
                self._replace(start, max(start, stop), values)
                return
            indices = range(start, stop, step)
            if len(values) != len(indices):
                raise ValueError(f"attempt to assign sequence of size {len(values)} to extended "
                                 f"slice of size {len(indices)}")
            for i, v in zip(indices, values):
                self[i] = v

    def _delete_slice(self, slc: slice) -> None:
        with _Guard(self._heap):
            n = len(self)
            start, stop, step = slc.indices(n)
            if step == 1:
                self._replace(start, max(start, stop), [])
                return
            gone = set(range(start, stop, step))
            if gone:
                self._select([i for i in range(n) if i not in gone])

    def __imul__(self, n: int) -> "SharedList":
        if not hasattr(n, "__index__"):
            return NotImplemented
        with _Guard(self._heap):
            values = self[:]
            if n <= 0:
                self.clear()
            elif values:
                self._replace(None, None, values * (n - 1))
        return self


collections.abc.MutableSequence.register(SharedList)


_DICT_ONLY = frozenset({"get", "setdefault", "popitem"})


class _DictOnly:
    """A DictCore method a SharedSet hides: reading it raises AttributeError,
    so ``hasattr(s, 'get')`` is False, as for a set."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, cls: type) -> Any:
        raise AttributeError(f"'{cls.__name__}' object has no attribute '{self._name}'")


class SharedSet(_Container, SetAPI, _core.DictCore):
    """A set in shared memory, shared by every process that has a handle on it.

    ``SharedSet(iterable=(), *, name=None, create=None, mode=0o600)``.  It
    has the whole set API, with set's errors.  Elements are any hashable
    objects, compared as a SharedDict's keys are (``1``, ``1.0`` and
    ``True`` are one element, in every process, whatever its hash seed).
    Single operations are atomic, the in-place ones (``update``, ``|=``,
    ``-=``, ``&=``, ``^=``...) included; ``with s.lock:`` makes a sequence
    of them atomic.  Operators and methods that make a new set (``|``,
    ``union()``, ``copy()``...) give plain sets.  ``pop()`` removes the
    element added last.  Iterating while the elements change, in any
    process, raises RuntimeError as a set does.
    """

    _KIND = _core.KIND_SET
    _ITER_NOUN = "Set"

    def __new__(cls, iterable: Iterable[Any] = (), *, name: Optional[str] = None,
                create: Optional[bool] = None, mode: int = 0o600) -> "SharedSet":
        keys = set_keys(iterable)
        fill = (lambda obj: obj._keys_apply(KEYS_ADD, keys)) if keys else _nothing
        return _open(cls, cls._KIND, _core.OBJ_SET, name, create, mode, fill)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add(self, element: Any) -> None:
        """Add element; nothing happens if an equal one is there already."""
        _dict_setdefault(self, element, None)

    def discard(self, element: Any) -> None:
        """Remove element if it is there."""
        _dict_pop(self, element, None)

    def remove(self, element: Any) -> None:
        """Remove element; KeyError if it is not there."""
        _dict_del(self, element)

    def pop(self) -> Any:
        """Remove and return the element added last; KeyError if empty."""
        try:
            return _dict_popitem(self)[0]
        except KeyError:
            raise KeyError("pop from an empty set") from None

    def _all(self, what: int) -> list:
        return _read_all(self, what)

    def _iterate(self, what: int) -> Iterator[Any]:
        return _iterate(self, what)

    # The dict machinery underneath is not part of a set's API.
    def __getitem__(self, key: Any) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not subscriptable")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError(f"'{type(self).__name__}' object does not support item assignment")

    def __delitem__(self, key: Any) -> None:
        raise TypeError(f"'{type(self).__name__}' object doesn't support item deletion")

    get = _DictOnly()
    setdefault = _DictOnly()
    popitem = _DictOnly()

    def __dir__(self) -> list:
        return [n for n in dir(type(self)) if n not in _DICT_ONLY]


collections.abc.MutableSet.register(SharedSet)


_dict_get = _core.DictCore.__getitem__
_dict_set = _core.DictCore.__setitem__
_dict_del = _core.DictCore.__delitem__
_dict_setdefault = _core.DictCore.setdefault
_dict_pop = _core.DictCore.pop
_dict_popitem = _core.DictCore.popitem


class Namespace(_Container, _core.DictCore):
    """Attributes in shared memory: multiprocessing's Manager().Namespace().

    ``Namespace(*, name=None, create=None, mode=0o600, **attrs)``.  Setting,
    reading and deleting an attribute are atomic operations on shared
    memory; attributes whose names start with ``_`` stay local to the
    handle, as with multiprocessing's namespace proxy.  (An attribute called
    ``name`` is set after creation: ``ns.name = 'Bob'``.)
    """

    _KIND = _core.KIND_NAMESPACE

    def __new__(cls, *, name: Optional[str] = None, create: Optional[bool] = None,
                mode: int = 0o600, **attrs: Any) -> "Namespace":
        pairs = list(attrs.items())
        fill = (lambda obj: obj._update_pairs(pairs)) if pairs else _nothing
        return _open(cls, cls._KIND, _core.OBJ_NAMESPACE, name, create, mode, fill)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattribute__(self, key: str) -> Any:
        if key[:1] == "_" or key in _NAMESPACE_OWN:
            return object.__getattribute__(self, key)
        try:
            return _dict_get(self, key)
        except KeyError:
            raise AttributeError(f"'Namespace' object has no attribute {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key[:1] == "_":
            object.__setattr__(self, key, value)
        else:
            _dict_set(self, key, value)

    def __delattr__(self, key: str) -> None:
        if key[:1] == "_":
            object.__delattr__(self, key)
            return
        try:
            _dict_del(self, key)
        except KeyError:
            raise AttributeError(key) from None

    def _attrs(self) -> list:
        return _read_all(self, 2)

    def __repr__(self) -> str:
        if object.__getattribute__(self, "closed"):
            return "<Namespace (closed)>"
        shown = sorted(f"{k}={v!r}" for k, v in self._attrs() if not str(k).startswith("_"))
        return f"Namespace({', '.join(shown)})"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Namespace):
            return dict(self._attrs()) == dict(other._attrs())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __dir__(self) -> list:
        return sorted(k for k, _ in self._attrs())

    def __copy__(self) -> Any:
        from multiprocessing.managers import Namespace as LocalNamespace
        return LocalNamespace(**dict(self._attrs()))

    def __deepcopy__(self, memo: dict) -> Any:
        import copy
        return copy.deepcopy(self.__copy__(), memo)


# What a Namespace keeps as ordinary attributes (not shared ones).
_NAMESPACE_OWN = frozenset({"closed", "close", "unlink"})

naming.register_kind(_core.KIND_DICT, SharedDict)
naming.register_kind(_core.KIND_LIST, SharedList)
naming.register_kind(_core.KIND_NAMESPACE, Namespace)
naming.register_kind(_core.KIND_SET, SharedSet)
