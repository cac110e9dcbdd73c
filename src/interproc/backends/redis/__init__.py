"""interproc on Redis: the same objects, shared between machines.

``interproc.Manager("redis://host:6379/0")`` returns a :class:`RedisManager`
whose dict, list, set, Namespace, queues, locks, Value and Array live in a Redis
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
- ``_base``        :class:`~._base.RedisObject`, the base of every object:
                   open/create rules, name, close/unlink, pickling and
                   references;
- ``_waiters``     the waiter registry: how every blocking call waits in
                   Redis (timeouts, dead waiters, lost connections);
- ``_guarded``     the objects whose every operation honours their own lock
                   (containers, Value, Array);
- ``synchronize``  Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier;
- ``queues``       Queue, JoinableQueue, SimpleQueue;
- ``containers``, ``sharedctypes``: dict, list, set, Namespace; Value, Array;
- ``listing``      :func:`list_objects` and :func:`unlink`: the objects on a
                   server, as ``interproc ls --url`` and ``rm --url`` see them.

redis-py is needed (``pip install interproc[redis]``), but only once a
connection is made: importing this package does not import it.
"""
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    CorruptDataError,
    LeaseLostError,
    LockNotOwnedError,
    ObjectGoneError,
    ReplicationError,
    ServerTimeoutError,
    SignatureError,
    UnreachableError,
)

__all__ = [
    "AuthenticationError",
    "ConnectionLostError",
    "CorruptDataError",
    "LeaseLostError",
    "LockNotOwnedError",
    "ObjectGoneError",
    "ReplicationError",
    "ServerTimeoutError",
    "SignatureError",
    "UnreachableError",
    "RedisManager",
    "list_objects",
    "unlink",
]

from . import codec as _codec
from .listing import list_objects, unlink
from .managers import RedisManager


def _register_lazily(kind: str, module: str) -> None:
    """Make references of ``kind`` decodable from the start, without
    importing ``module`` (and redis-py) before one is met: importing it
    registers the real factory, which then takes over.  ``module`` is one
    of this package's, fixed here: a reference read from Redis chooses
    among these factories by its tag, never a module to import."""

    def factory(args, codec):
        import importlib

        importlib.import_module(f"{__name__}.{module}")
        real = _codec._REF_FACTORIES.get(kind)
        if real is None or real is factory:
            raise ValueError(f"{__name__}.{module} defines no reference factory for {kind!r}")
        return real(args, codec)

    _codec.register_ref(kind, factory)


# Objects stored in other objects (a list in a dict, a queue sent through a
# queue) come back as references (see codec), in any process.
for _module, _kinds in (
    ("containers", ("dict", "list", "set", "Namespace")),
    ("sharedctypes", ("Value", "Array")),
    ("queues", ("Queue", "SimpleQueue", "JoinableQueue")),
    ("synchronize", ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition",
                     "Barrier")),
):
    for _kind in _kinds:
        _register_lazily(_kind, _module)
del _module, _kinds, _kind
