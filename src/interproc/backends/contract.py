"""The contract every backend answers to.

interproc has two backends: shared memory (``interproc.Manager()``, the
default) and Redis (``interproc.Manager("redis://...")``).  Both managers
make the same objects, with the same names, signatures and behaviour, so a
program moves from one to the other by changing one line.  This module
writes that contract down:

- :data:`MANAGER_METHODS`: what a manager offers and the parameters each
  factory takes (multiprocessing's, so seed programs run unchanged);
- :data:`OBJECT_METHODS`: the public methods and properties every object of
  each type has, whichever backend made it;
- :func:`check_manager`: compares a manager (and one object of each type it
  makes) with the contract and returns what differs.

The behaviour side of the contract is the test suite ``tests/test_contract.py``,
which runs unchanged against every backend.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["MANAGER_METHODS", "OBJECT_METHODS", "check_manager", "parameters", "names_objects"]

_P = inspect.Parameter
_EMPTY = _P.empty


def _sig(*params: Tuple[str, Any, Any]) -> inspect.Signature:
    return inspect.Signature([_P(name, kind, default=default) for name, kind, default in params])


_POS = _P.POSITIONAL_OR_KEYWORD

#: typeid -> the factory's parameters (``self`` left out).
MANAGER_METHODS: Dict[str, inspect.Signature] = {
    "dict": _sig(("args", _P.VAR_POSITIONAL, _EMPTY), ("kwds", _P.VAR_KEYWORD, _EMPTY)),
    "list": _sig(("sequence", _POS, ())),
    "set": _sig(("iterable", _POS, ())),
    "Namespace": _sig(("kwds", _P.VAR_KEYWORD, _EMPTY)),
    "Lock": _sig(),
    "RLock": _sig(),
    "Semaphore": _sig(("value", _POS, 1)),
    "BoundedSemaphore": _sig(("value", _POS, 1)),
    "Condition": _sig(("lock", _POS, None)),
    "Event": _sig(),
    "Barrier": _sig(("parties", _POS, _EMPTY), ("action", _POS, None), ("timeout", _POS, None)),
    "Queue": _sig(("maxsize", _POS, 0)),
    "JoinableQueue": _sig(("maxsize", _POS, 0)),
    "SimpleQueue": _sig(),
    "Value": _sig(("typecode", _POS, _EMPTY), ("value", _POS, _EMPTY), ("lock", _POS, True)),
    "Array": _sig(("typecode", _POS, _EMPTY), ("sequence", _POS, _EMPTY), ("lock", _POS, True)),
}

#: Lifecycle methods every manager has.
MANAGER_LIFECYCLE = ("start", "shutdown", "__enter__", "__exit__")

#: ``shutdown``/``is_shutdown``: queue.Queue's (Python 3.13), across processes.
_SHUTDOWN = ("shutdown", "is_shutdown")
# The awaitable forms (docs/api.md, "asyncio").
_QUEUE_ASYNC = ("get_async", "put_async", "get_many_async", "put_many_async")
_QUEUE = ("put", "get", "put_nowait", "get_nowait", "put_many", "get_many", "qsize", "empty",
          "full", "close", "join_thread", "cancel_join_thread") + _SHUTDOWN + _QUEUE_ASYNC
_LOCK = ("acquire", "release", "__enter__", "__exit__", "acquire_async", "__aenter__",
         "__aexit__")

#: typeid -> public methods and properties its objects have.
OBJECT_METHODS: Dict[str, Tuple[str, ...]] = {
    "dict": ("__getitem__", "__setitem__", "__delitem__", "__contains__", "__len__", "__iter__",
             "get", "setdefault", "pop", "popitem", "update", "clear", "copy", "keys", "values",
             "items", "increment", "fromkeys", "__or__", "__ror__", "__ior__", "__reversed__",
             "lock"),
    "list": ("__getitem__", "__setitem__", "__delitem__", "__contains__", "__len__", "__iter__",
             "append", "extend", "insert", "pop", "remove", "index", "count", "sort", "reverse",
             "clear", "copy", "__iadd__", "__imul__", "lock"),
    "set": ("__contains__", "__len__", "__iter__", "__or__", "__ror__", "__ior__", "__and__",
            "__rand__", "__iand__", "__sub__", "__rsub__", "__isub__", "__xor__", "__rxor__",
            "__ixor__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "add", "discard",
            "remove", "pop", "clear", "copy", "update", "difference_update",
            "intersection_update", "symmetric_difference_update", "union", "intersection",
            "difference", "symmetric_difference", "isdisjoint", "issubset", "issuperset",
            "lock"),
    "Namespace": (),  # attributes: the behaviour tests cover them
    "Lock": _LOCK,
    "RLock": _LOCK,
    "Semaphore": _LOCK + ("get_value",),
    "BoundedSemaphore": _LOCK + ("get_value",),
    "Condition": _LOCK + ("wait", "wait_for", "notify", "notify_all", "wait_async",
                          "wait_for_async"),
    "Event": ("set", "clear", "is_set", "wait", "wait_async"),
    "Barrier": ("wait", "reset", "abort", "parties", "n_waiting", "broken", "wait_async"),
    "Queue": _QUEUE,
    "JoinableQueue": _QUEUE + ("task_done", "join", "join_async"),
    "SimpleQueue": ("put", "get", "empty", "close") + _SHUTDOWN + _QUEUE_ASYNC,
    "Value": ("value", "get", "set", "get_lock", "get_obj"),
    "Array": ("__getitem__", "__setitem__", "__len__", "get_lock", "get_obj"),
}

#: Arguments that make one object of each type, for check_manager.
SAMPLE_ARGS: Dict[str, Tuple[tuple, dict]] = {
    "Barrier": ((2,), {}),
    "Value": (("i", 0), {}),
    "Array": (("i", [0, 0]), {}),
}


#: Where the backends differ by design, so the behaviour suite checks each
#: side explicitly:
#:
#: - **Naming keywords.**  The shared-memory manager keeps multiprocessing's
#:   signatures exactly: ``m.dict(name=...)`` stores a key called ``name``,
#:   ``m.Namespace(name=...)`` sets an attribute, and the other factories
#:   take no ``name=`` at all (TypeError); named shared-memory objects are
#:   made with ``interproc.SharedDict(name=...)``, ``interproc.Lock(name=...)``...
#:   The Redis manager's factories take keyword-only ``name=`` and
#:   ``create=``, which name the object (the open/create rules of every named
#:   interproc object), ``dict`` and ``Namespace`` included.
#:   :func:`names_objects` tells which a manager does.
#: - **Lock release.**  Any thread or process may release a shared-memory
#:   Lock (as multiprocessing's); a Redis Lock is a lease owned by the thread
#:   that acquired it, and only that thread may release it
#:   (``LockNotOwnedError``, a RuntimeError).
NAMING_KEYWORDS = ("name", "create")


def names_objects(manager: Any) -> bool:
    """Whether ``manager``'s factories take ``name=``/``create=`` as the
    object's name (keyword-only, on every factory), rather than as data."""
    for typeid in MANAGER_METHODS:
        params = inspect.signature(getattr(manager, typeid)).parameters
        if any(params.get(k) is None or params[k].kind is not _P.KEYWORD_ONLY
               for k in NAMING_KEYWORDS):
            return False
    return True


def parameters(func: Callable[..., Any]) -> inspect.Signature:
    """A bound method's signature as the contract writes it (no self, no
    annotations)."""
    sig = inspect.signature(func)
    return sig.replace(parameters=[p.replace(annotation=_EMPTY) for p in sig.parameters.values()],
                       return_annotation=inspect.Signature.empty)


def _same(got: inspect.Signature, want: inspect.Signature) -> bool:
    """Equal, ignoring keyword-only extras a backend adds (name=, create=...)."""
    core = [p for p in got.parameters.values() if p.kind is not _P.KEYWORD_ONLY]
    return [(p.name, p.kind, p.default) for p in core] == [
        (p.name, p.kind, p.default) for p in want.parameters.values()]


def check_manager(manager: Any, make_objects: bool = True) -> List[str]:
    """What ``manager`` lacks or does differently from the contract: an empty
    list when it conforms.  With ``make_objects``, it also makes one object
    of each type and checks its methods."""
    problems: List[str] = []
    for name in MANAGER_LIFECYCLE:
        if not callable(getattr(manager, name, None)):
            problems.append(f"manager has no {name}()")
    for typeid, want in MANAGER_METHODS.items():
        factory = getattr(manager, typeid, None)
        if not callable(factory):
            problems.append(f"manager has no {typeid}()")
            continue
        got = parameters(factory)
        if not _same(got, want):
            problems.append(f"{typeid}{got} differs from the contract's {typeid}{want}")
        if not make_objects:
            continue
        args, kwds = SAMPLE_ARGS.get(typeid, ((), {}))
        obj = factory(*args, **kwds)
        try:
            for attr in OBJECT_METHODS[typeid]:
                if attr.startswith("__") and attr.endswith("__"):
                    present = hasattr(type(obj), attr)
                else:
                    present = hasattr(obj, attr) if typeid != "Namespace" else True
                if not present:
                    problems.append(f"{typeid} object {type(obj).__name__} has no {attr}")
        finally:
            close = getattr(obj, "close", None)
            if callable(close) and typeid not in ("Namespace",):
                try:
                    close()
                except Exception:  # closing is best effort here
                    pass
    return problems
