"""The parts of the dict and list APIs that follow from a few primitives.

Both backends' containers (shared memory: ``containers.py``; Redis:
``backends/redis/containers.py``) get them here, so that they cannot drift
apart.  A backend supplies the primitives, atomically:

- a dict (:class:`DictAPI`): ``_all(what)``, every key, value or
  ``(key, value)`` pair (``what`` = 0, 1, 2) read in one step;
  ``_iterate(what)``, the same as an iterator that raises RuntimeError when
  the keys change meanwhile, as a dict's does; ``_update_pairs(pairs)``,
  store ``(key, value)`` pairs in one step;
- a list (:class:`ListAPI`): ``self[i:j]``, a slice read in one step, and
  ``extend``;
- a set (:class:`SetAPI`): ``_all(0)`` and ``_iterate(0)`` as a dict's,
  and ``_keys_apply(how, keys)``, one atomic bulk update (``how``: one of
  :data:`KEYS_ADD`, :data:`KEYS_DISCARD`, :data:`KEYS_TOGGLE`,
  :data:`KEYS_RETAIN`) that returns how many keys it added or removed.

Everything else here is computed from those, in the calling process.
"""
from __future__ import annotations

import collections.abc
import types
from typing import Any, Iterable, Iterator

from . import _core

__all__ = ["DictAPI", "ListAPI", "SetAPI", "dict_pairs", "list_values", "set_keys",
           "CHUNK_FIRST", "CHUNK_MAX", "KEYS_ADD", "KEYS_DISCARD", "KEYS_TOGGLE", "KEYS_RETAIN"]

# Keys, values or items fetched per step while iterating: few at first, so
# that a loop which stops early reads little, then more.
CHUNK_FIRST = 32
CHUNK_MAX = 1024

# _keys_apply(how, keys): add the keys, discard them, toggle each distinct
# one, or keep only them (the numbers the shared-memory core uses).
KEYS_ADD, KEYS_DISCARD, KEYS_TOGGLE, KEYS_RETAIN = 0, 1, 2, 3


def dict_pairs(args: tuple, kwargs: dict) -> list:
    """What ``dict.update(*args, **kwargs)`` would store, as (key, value) pairs,
    with dict's errors for bad input."""
    if len(args) > 1:
        raise TypeError(f"update expected at most 1 argument, got {len(args)}")
    pairs: list = []
    if args:
        src = args[0]
        if isinstance(src, DictAPI):
            pairs = src._all(2)
        elif isinstance(src, dict):
            pairs = list(src.items())
        elif hasattr(src, "keys"):
            pairs = [(k, src[k]) for k in src.keys()]
        else:
            for i, item in enumerate(src):
                try:
                    pair = tuple(item)
                except TypeError:
                    raise TypeError(f"cannot convert dictionary update sequence element #{i} "
                                    "to a sequence") from None
                if len(pair) != 2:
                    raise ValueError(f"dictionary update sequence element #{i} has length "
                                     f"{len(pair)}; 2 is required")
                pairs.append(pair)
    if kwargs:
        pairs.extend(kwargs.items())
    return pairs


def list_values(iterable: Any, message: str = "") -> list:
    """The values of ``iterable`` as a plain list, taken before any change is
    made (so ``l.extend(l)`` reads ``l`` once); a shared list is read in one
    step.  ``message`` replaces the TypeError text for a non-iterable."""
    if isinstance(iterable, ListAPI):
        return iterable[:]
    try:
        return list(iterable)
    except TypeError:
        if message:
            raise TypeError(message) from None
        raise


def set_keys(iterable: Any) -> list:
    """The elements of ``iterable`` as a plain list, read before any change
    is made (so ``s.update(s)`` reads ``s`` once); a shared set, or a
    shared dict's keys, in one step."""
    if isinstance(iterable, (SetAPI, DictAPI)):
        return iterable._all(0)
    return list(iterable)


class _KeysView(collections.abc.KeysView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(0)


class _ValuesView(collections.abc.ValuesView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(1)


class _ItemsView(collections.abc.ItemsView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(2)


class FromKeys:
    """A shared dict class's ``fromkeys``.  Called on a dict,
    ``d.fromkeys(iterable, value=None)`` gives a plain dict, as a manager's
    dict proxy does (it runs dict.fromkeys where the dict is); called on the
    class, a new anonymous shared dict, made as the backend's ``on_class``
    says."""

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            return self.on_class(cls)

        def fromkeys(iterable: Iterable[Any], value: Any = None) -> Any:
            return dict.fromkeys(iterable, value)
        fromkeys.__doc__ = "A plain dict with keys from iterable, each set to value."
        return fromkeys

    def on_class(self, cls: type) -> Any:
        raise NotImplementedError


class DictAPI:
    """Views, iteration, update, copy, equality, ``|`` and text of a shared dict."""

    __slots__ = ()

    # ``SharedDict[str, int]`` in annotations, as for dict and DictProxy.
    __class_getitem__ = classmethod(types.GenericAlias)

    def __iter__(self) -> Iterator[Any]:
        return self._iterate(0)

    def __reversed__(self) -> Iterator[Any]:
        # The keys as read at this moment, last first: a list iterator, as
        # the one a manager's dict proxy gives back.
        keys = self._all(0)
        keys.reverse()
        return iter(keys)

    def keys(self) -> _KeysView:
        return _KeysView(self)

    def values(self) -> _ValuesView:
        return _ValuesView(self)

    def items(self) -> _ItemsView:
        return _ItemsView(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Store every pair of ``dict(*args, **kwargs)`` in one atomic step."""
        self._update_pairs(dict_pairs(args, kwargs))

    def copy(self) -> dict:
        """A plain dict with the same content, read atomically."""
        return dict(self._all(2))

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, DictAPI):
            return self.copy() == other.copy()
        if isinstance(other, dict):
            return self.copy() == other
        return NotImplemented

    def __ne__(self, other: Any) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict:
        if not isinstance(other, (dict, DictAPI)):
            return NotImplemented
        out = self.copy()
        out.update(other.copy() if isinstance(other, DictAPI) else other)
        return out

    def __ror__(self, other: Any) -> dict:
        if not isinstance(other, dict):
            return NotImplemented
        out = dict(other)
        out.update(self.copy())
        return out

    def __ior__(self, other: Any) -> Any:
        self.update(other)
        return self

    def __str__(self) -> str:
        return repr(self.copy())

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} (closed)>"
        return f"{type(self).__name__}({self.copy()!r})"


class ListAPI:
    """Iteration, containment, ``+``, ``*``, comparisons and text of a shared list."""

    __slots__ = ()

    __class_getitem__ = classmethod(types.GenericAlias)

    def __iter__(self) -> Iterator[Any]:
        pos, want = 0, CHUNK_FIRST
        while True:
            chunk = self[pos:pos + want]
            if not chunk:
                return
            yield from chunk
            pos += len(chunk)
            want = min(want * 4, CHUNK_MAX)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self[:])

    def __contains__(self, value: Any) -> bool:
        return value in self[:]

    def __iadd__(self, other: Iterable[Any]) -> Any:
        self.extend(other)
        return self

    def __add__(self, other: Any) -> list:
        if isinstance(other, ListAPI):
            return self[:] + other[:]
        if isinstance(other, list):
            return self[:] + other
        return NotImplemented

    def __radd__(self, other: Any) -> list:
        if isinstance(other, list):
            return other + self[:]
        return NotImplemented

    def __mul__(self, n: Any) -> list:
        if not hasattr(n, "__index__"):
            return NotImplemented
        return self[:] * n

    __rmul__ = __mul__

    def _cmp_value(self, other: Any) -> Any:
        if isinstance(other, ListAPI):
            return other[:]
        if isinstance(other, list):
            return other
        return NotImplemented

    def __eq__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] == o

    def __ne__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] != o

    def __lt__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] < o

    def __le__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] <= o

    def __gt__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] > o

    def __ge__(self, other: Any) -> bool:
        o = self._cmp_value(other)
        return o if o is NotImplemented else self[:] >= o

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return repr(self[:])

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} (closed)>"
        return f"{type(self).__name__}({self[:]!r})"



def _set_like(other: Any) -> bool:
    """What a set's operators accept, as set's own: sets, frozensets and
    shared sets (``s | [1]`` is a TypeError; ``s.union([1])`` is not)."""
    return isinstance(other, (set, frozenset, SetAPI))


def _plain(other: Any) -> Any:
    return other.copy() if isinstance(other, SetAPI) else other


class SetAPI:
    """Everything of a shared set beyond add, discard, remove, pop, clear,
    ``in`` and ``len``.

    Updates in place (``update``, ``|=``, ``-=``, ``&=``, ``^=`` and their
    named forms) are one atomic step each, whatever their arguments: those
    are read first, outside any lock, and the set is changed by
    ``_keys_apply``, which compares keys in the canonical encoding as every
    operation of the set does.  Operations that build a new set (``|``,
    ``union()``, ``copy()``...) return a plain ``set`` computed here from
    one atomic read, as a manager's set proxy returns one.
    """

    __slots__ = ()

    __class_getitem__ = classmethod(types.GenericAlias)

    def __iter__(self) -> Iterator[Any]:
        return self._iterate(0)

    def copy(self) -> set:
        """A plain set with the same elements, read atomically."""
        return set(self._all(0))

    # --------------------------------------------------------- in place

    def update(self, *others: Iterable[Any]) -> None:
        """Add the elements of every iterable, in one atomic step."""
        keys = [k for other in others for k in set_keys(other)]
        if keys:
            self._keys_apply(KEYS_ADD, keys)

    def difference_update(self, *others: Iterable[Any]) -> None:
        """Remove the elements of every iterable, in one atomic step."""
        keys = [k for other in others for k in set_keys(other)]
        if keys:
            self._keys_apply(KEYS_DISCARD, keys)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        """Keep only the elements found in every iterable, in one atomic step."""
        if not others:
            return
        keep = set_keys(others[0])
        for other in others[1:]:
            # Compared as the set compares its keys: by canonical encoding.
            there = {_core.encode_key(k) for k in set_keys(other)}
            keep = [k for k in keep if _core.encode_key(k) in there]
        self._keys_apply(KEYS_RETAIN, keep)

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        """Remove the elements also in ``other`` and add the others, in one
        atomic step (each distinct element of ``other`` counts once)."""
        keys = set_keys(other)
        if keys:
            self._keys_apply(KEYS_TOGGLE, keys)

    def __ior__(self, other: Any) -> Any:
        if not _set_like(other):
            return NotImplemented
        self.update(other)
        return self

    def __isub__(self, other: Any) -> Any:
        if not _set_like(other):
            return NotImplemented
        self.difference_update(other)
        return self

    def __iand__(self, other: Any) -> Any:
        if not _set_like(other):
            return NotImplemented
        self.intersection_update(other)
        return self

    def __ixor__(self, other: Any) -> Any:
        if not _set_like(other):
            return NotImplemented
        self.symmetric_difference_update(other)
        return self

    # ------------------------------------------------- new plain sets

    def union(self, *others: Iterable[Any]) -> set:
        return self.copy().union(*map(_plain, others))

    def intersection(self, *others: Iterable[Any]) -> set:
        return self.copy().intersection(*map(_plain, others))

    def difference(self, *others: Iterable[Any]) -> set:
        return self.copy().difference(*map(_plain, others))

    def symmetric_difference(self, other: Iterable[Any]) -> set:
        return self.copy().symmetric_difference(_plain(other))

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        return self.copy().isdisjoint(_plain(other))

    def issubset(self, other: Iterable[Any]) -> bool:
        return self.copy().issubset(_plain(other))

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self.copy().issuperset(_plain(other))

    def __or__(self, other: Any) -> set:
        return self.copy() | _plain(other) if _set_like(other) else NotImplemented

    def __ror__(self, other: Any) -> set:
        return _plain(other) | self.copy() if _set_like(other) else NotImplemented

    def __and__(self, other: Any) -> set:
        return self.copy() & _plain(other) if _set_like(other) else NotImplemented

    def __rand__(self, other: Any) -> set:
        return _plain(other) & self.copy() if _set_like(other) else NotImplemented

    def __sub__(self, other: Any) -> set:
        return self.copy() - _plain(other) if _set_like(other) else NotImplemented

    def __rsub__(self, other: Any) -> set:
        return _plain(other) - self.copy() if _set_like(other) else NotImplemented

    def __xor__(self, other: Any) -> set:
        return self.copy() ^ _plain(other) if _set_like(other) else NotImplemented

    def __rxor__(self, other: Any) -> set:
        return _plain(other) ^ self.copy() if _set_like(other) else NotImplemented

    # ------------------------------------------------------ comparisons

    def __eq__(self, other: Any) -> bool:
        return self.copy() == _plain(other) if _set_like(other) else NotImplemented

    def __ne__(self, other: Any) -> bool:
        return self.copy() != _plain(other) if _set_like(other) else NotImplemented

    def __lt__(self, other: Any) -> bool:
        return self.copy() < _plain(other) if _set_like(other) else NotImplemented

    def __le__(self, other: Any) -> bool:
        return self.copy() <= _plain(other) if _set_like(other) else NotImplemented

    def __gt__(self, other: Any) -> bool:
        return self.copy() > _plain(other) if _set_like(other) else NotImplemented

    def __ge__(self, other: Any) -> bool:
        return self.copy() >= _plain(other) if _set_like(other) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -------------------------------------------------------------- text

    def __str__(self) -> str:
        return repr(self.copy())

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} (closed)>"
        elements = self.copy()
        return f"{type(self).__name__}({elements!r})" if elements else f"{type(self).__name__}()"

    def __copy__(self) -> set:
        return self.copy()
