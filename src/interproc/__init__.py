"""interproc: fast, crash-safe inter-process communication.

A drop-in for multiprocessing's queues, pipes, shared values and locks on shared memory, with a C core,
futex waits, no feeder thread and no server process: queues, pipes, shared values, locks,
and dicts, lists and namespaces stored once in shared memory.  See docs/api.md.
"""
import sysconfig as _sysconfig
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# The C core's per-process state is written on the assumption that the GIL
# serializes this process's threads.  A free-threaded build would re-enable
# the GIL for the core with a warning, but no such build can be tested here:
# refuse plainly rather than claim support.
if _sysconfig.get_config_var("Py_GIL_DISABLED"):
    raise ImportError(
        "interproc does not support free-threaded CPython builds (3.13t, 3.14t) yet: "
        "its C core relies on the GIL. Use a standard build of CPython 3.11 to 3.15."
    )

from .connection import Connection, Pipe, wait
from .containers import Namespace, SharedDict, SharedList, SharedSet
from .naming import ObjectInfo, SegmentError, attach, list_objects, unlink
from .queues import Empty, Full, JoinableQueue, Queue, ShutDown, SimpleQueue
from .sharedctypes import Array, RawArray, RawValue, Value, as_ndarray
from .views import ItemView
from .synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    OwnerDiedWarning,
    RLock,
    Semaphore,
)

if _TYPE_CHECKING:
    from .backends.redis import RedisManager
    from .managers import SyncManager


def Manager(url: "str | None" = None, **kwargs: _Any) -> "SyncManager | RedisManager":
    """A started manager: ``multiprocessing.Manager()`` with its built-in types in shared memory.

    ``dict()``, ``list()``, ``Namespace()``, ``Lock()``, ``Queue()``,
    ``Value()`` and the other built-in typeids return interproc's
    shared-memory objects and start no server process; ``Pool()``,
    registered typeids and remote use go through multiprocessing's server,
    started when first needed.  See :mod:`interproc.managers`.

    ``Manager("redis://host:6379/0", **options)`` returns a started
    ``interproc.backends.redis.RedisManager`` instead: the same objects on
    a Redis server or cluster, shared between machines.
    """
    # Imported here: multiprocessing.managers costs a quarter of
    # interproc's own import time, and most programs never use it.
    from .managers import Manager as make_manager

    return make_manager(url, **kwargs)


__all__ = [
    "Queue",
    "SimpleQueue",
    "JoinableQueue",
    "Pipe",
    "Connection",
    "wait",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Barrier",
    "Manager",
    "OwnerDiedWarning",
    "Value",
    "Array",
    "RawValue",
    "RawArray",
    "as_ndarray",
    "SharedDict",
    "SharedList",
    "SharedSet",
    "Namespace",
    "Full",
    "Empty",
    "ShutDown",
    "ItemView",
    "attach",
    "unlink",
    "list_objects",
    "ObjectInfo",
    "SegmentError",
]

__version__ = "0.1.0"
