"""interproc on Redis: the same objects, shared between machines.

``interproc.Manager("redis://host:6379/0")`` returns a :class:`RedisManager`
whose dict, list, Namespace, queues, locks, Value and Array live in a Redis
server or Redis Cluster, with the semantics of the shared-memory objects.

Modules
-------
- ``errors``       the exceptions below;
- ``client``       :class:`~.client.Connection`: one redis-py client per
                   process and connection options, cluster detection, error
                   translation (``conn.errors(op)``), Lua scripts;
- ``codec``        :class:`~.codec.Codec`: pickle, json or msgpack, optional
                   HMAC signing, references to other Redis objects;
- ``keys``         key names (one cluster slot per object) and the metadata
                   hash behind open/create/attach (``create_meta``);
- ``synchronize``  Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier;
- ``queues``       Queue, JoinableQueue, SimpleQueue;
- ``containers``, ``sharedctypes``: dict, list, Namespace; Value, Array.

redis-py is needed (``pip install interproc[redis]``), but only once a
connection is made: importing this package does not import it.
"""
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    ServerTimeoutError,
    SignatureError,
    UnreachableError,
)

__all__ = [
    "AuthenticationError",
    "ConnectionLostError",
    "ServerTimeoutError",
    "SignatureError",
    "UnreachableError",
    "RedisManager",
]

from . import codec as _codec
from .managers import RedisManager


def _register_lazily(kind: str, module: str, cls: str) -> None:
    """Make references of ``kind`` decodable from the start, without
    importing ``module`` (and redis-py) before one is met."""

    def factory(args, context):
        import importlib

        from . import _objects

        target = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
        return _objects._from_reference(target)(args, context)

    _codec.register_ref(kind, factory)


# Containers and values stored in other objects come back as references
# (see codec); importing their modules replaces these with the real ones.
for _kind, _module, _cls in (
    ("dict", "containers", "RedisDict"),
    ("list", "containers", "RedisList"),
    ("Namespace", "containers", "RedisNamespace"),
    ("Value", "sharedctypes", "RedisValue"),
    ("Array", "sharedctypes", "RedisArray"),
):
    _register_lazily(_kind, _module, _cls)
del _kind, _module, _cls
