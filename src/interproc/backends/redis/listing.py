"""The objects stored on a Redis server, as ``interproc ls --url`` and
``interproc rm --url`` see them.

``list_objects(url, *, anonymous=False, **connect)``
    An :class:`interproc.ObjectInfo` for every object on the server (or
    every node of a Cluster), sorted by name: ``name``, ``kind``,
    ``maxsize``, ``items`` (queued items, or the elements of a container)
    and ``bytes_used`` (what the server reports for the object's keys);
    ``state`` is ``"ttl <n>s"`` for an anonymous object that expires unless
    its manager's process keeps it alive (``orphan_ttl``).
    Anonymous objects (``anon:<hex>``, made without a name) are left out
    unless ``anonymous`` is true.  An object whose metadata is damaged is
    listed with ``error`` set.  Nothing stored is decoded: the metadata is
    JSON read as data, the counts come from the server.
``unlink(url, name, **connect)``
    Delete the object ``name`` (anonymous ones included: those of a
    manager that was killed expire ``orphan_ttl`` later, or never with
    ``orphan_ttl=None``) and every key of it.
    FileNotFoundError if there is none.

``connect`` is what ``Manager(url, ...)`` takes for the connection
(``username``, ``password``, redis-py's keywords).
"""
from __future__ import annotations

import errno
import os
import re
from typing import Any, List, Optional

from ...naming import ObjectInfo, SegmentError
from . import _base
from . import keys as _keys
from .client import Connection

__all__ = ["list_objects", "unlink"]

_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")

# The part whose length is the object's item count, by kind.
_COUNTED = {
    "Queue": "items", "JoinableQueue": "items", "SimpleQueue": "items",
    "dict": "h", "set": "h", "Namespace": "h", "list": "l",
}


def _connect(url: str, connect: Any) -> Connection:
    return Connection.from_url(url, **connect)


def list_objects(url: str, *, anonymous: bool = False, **connect: Any) -> List[ObjectInfo]:
    """Describe every object on the server at ``url`` (see the module docstring)."""
    conn = _connect(url, connect)
    names = _keys.list_names(conn)
    if not anonymous:
        names = [n for n in names if not n.startswith(_keys.ANON)]
    return [_describe(conn, name) for name in names]


def unlink(url: str, name: str, **connect: Any) -> None:
    """Delete the object ``name`` on the server at ``url``, with all its keys."""
    # Every kind registers its class with _base when its module is imported.
    from . import containers, queues, sharedctypes, synchronize  # noqa: F401

    conn = _connect(url, connect)
    try:
        kind = _keys.read_meta(conn, name).kind
    except SegmentError:
        kind = None
    cls = _base.KINDS.get(kind) if kind is not None else None
    if cls is None:
        # Damaged metadata, or a kind this version does not know: nothing
        # in it can be trusted to name the keys, so every key carrying the
        # object's hash tag goes.
        _delete_by_tag(conn, name)
    else:
        cls._destroy_keys(conn, name)


def _delete_by_tag(conn: Connection, name: str) -> None:
    pattern = _keys.object_key(_GLOB_SPECIAL.sub(r"\\\g<0>", name), "*")
    with conn.errors(f"unlinking {name!r}"):
        found = [key for key in conn.client.scan_iter(match=pattern, count=1000)]
        for key in found:
            conn.client.delete(key)
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _describe(conn: Connection, name: str) -> ObjectInfo:
    try:
        meta = _keys.read_meta(conn, name)
    except FileNotFoundError:
        return ObjectInfo(name=name, error="deleted while being listed")
    except ValueError as exc:  # a damaged metadata hash (SegmentError)
        return ObjectInfo(name=name, error=str(exc))
    maxsize = meta.get("maxsize")
    info = ObjectInfo(name=name, kind=meta.kind,
                      maxsize=maxsize if type(maxsize) is int and maxsize > 0 else None)
    client = conn.client
    part = _COUNTED.get(meta.kind)
    if part in meta.parts:
        key = _keys.object_key(name, part)
        with conn.errors(f"counting the items of {name!r}"):
            kind = _keys._text(client.type(key))
            count = {"list": client.llen, "hash": client.hlen}.get(kind)
            info.items = int(count(key)) if count is not None else 0
    info.bytes_used = _bytes_used(conn, name, meta.parts)
    if _keys.EXPIRY_OPTION in meta and name.startswith(_keys.ANON):
        # Refreshed by its manager's process: a count that goes on falling
        # is an object whose manager is gone.
        with conn.errors(f"reading the expiry of {name!r}"):
            left = client.pttl(_keys.meta_key(name))
        if left is not None and left >= 0:
            info.state = f"ttl {(left + 999) // 1000}s"
    return info


def _bytes_used(conn: Connection, name: str, parts: Any) -> Optional[int]:
    total = 0
    for key in [_keys.meta_key(name)] + [_keys.object_key(name, p) for p in parts]:
        with conn.errors(f"measuring {name!r}"):
            used = conn.client.memory_usage(key)
        total += int(used or 0)
    return total
