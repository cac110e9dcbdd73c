"""Items read in place: ``Queue.get_view()``.

A large item's out-of-band buffers (a NumPy array's data) can be read
where they lie in the queue's shared memory instead of being copied out.
The memory then stays reserved for the reader: no producer writes over it
and it is not reused, for exactly as long as anything can still read it.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ItemView"]

_RELEASED = object()


class ItemView:
    """An item taken from a queue by ``get_view()``, whose large buffers
    are read in place in shared memory, read-only.

    ``view.value`` is the item.  An array in it lies over the queue's
    memory, which stays reserved for as long as the view or any object
    rebuilt from it (the array, a slice of it) is referenced: the shared
    memory is given back when the last of them goes, by ``release()``,
    the end of a ``with`` block, ``del`` or garbage collection, whichever
    drops the last reference.  Keep what you need as a copy
    (``value.copy()``) to let the memory go at once.

    ``with q.get_view() as item:`` gives the item and releases the view at
    the end of the block.  After ``release()``, ``value`` raises
    ValueError.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    @property
    def value(self) -> Any:
        """The item (ValueError once released)."""
        if self._value is _RELEASED:
            raise ValueError("the item view was released")
        return self._value

    @property
    def released(self) -> bool:
        """Whether ``release()`` was called."""
        return self._value is _RELEASED

    def release(self) -> None:
        """Drop the view's reference to the item: its shared memory is
        given back once nothing else references it."""
        self._value = _RELEASED

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        if self._value is _RELEASED:
            return "<interproc.ItemView released>"
        return f"<interproc.ItemView of {type(self._value).__name__}>"
