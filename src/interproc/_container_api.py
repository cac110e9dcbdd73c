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
  ``extend``.

Everything else here is computed from those, in the calling process.
"""
from __future__ import annotations

import collections.abc
from typing import Any, Iterable, Iterator

__all__ = ["DictAPI", "ListAPI", "dict_pairs", "list_values", "CHUNK_FIRST", "CHUNK_MAX"]

# Keys, values or items fetched per step while iterating: few at first, so
# that a loop which stops early reads little, then more.
CHUNK_FIRST = 32
CHUNK_MAX = 1024


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


class _KeysView(collections.abc.KeysView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(0)


class _ValuesView(collections.abc.ValuesView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(1)


class _ItemsView(collections.abc.ItemsView):
    def __iter__(self) -> Iterator[Any]:
        return self._mapping._iterate(2)


class DictAPI:
    """Views, iteration, update, copy, equality, ``|`` and text of a shared dict."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._iterate(0)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._all(0))

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
