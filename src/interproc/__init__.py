"""interproc: fast, crash-safe inter-process communication.

A drop-in for multiprocessing's queues, pipes, shared values and locks on shared memory, with a C core,
futex waits, no feeder thread and no server process: queues, pipes, shared values, locks,
and dicts, lists and namespaces stored once in shared memory.  See docs/api.md.
"""
from .connection import Connection, Pipe, wait
from .containers import Namespace, SharedDict, SharedList
from .naming import ObjectInfo, SegmentError, attach, list_objects, unlink
from .queues import Empty, Full, JoinableQueue, Queue, SimpleQueue
from .sharedctypes import Array, RawArray, RawValue, Value, as_ndarray
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
    "OwnerDiedWarning",
    "Value",
    "Array",
    "RawValue",
    "RawArray",
    "as_ndarray",
    "SharedDict",
    "SharedList",
    "Namespace",
    "Full",
    "Empty",
    "attach",
    "unlink",
    "list_objects",
    "ObjectInfo",
    "SegmentError",
]

__version__ = "0.1.0"
