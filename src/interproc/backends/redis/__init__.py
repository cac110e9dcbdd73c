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
    # "RedisManager",  -- added with the manager (managers module of this package)
]

# The manager: `from .managers import RedisManager` goes here, and
# "RedisManager" into __all__, once it exists.  Import the modules that
# register reference factories (containers, queues, ...) here as well, so
# that decoding a reference never meets an unknown kind.
