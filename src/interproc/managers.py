"""The Manager: ``multiprocessing.Manager()`` with its built-in types in shared memory.

:func:`Manager` returns a :class:`SyncManager`, a subclass of
``multiprocessing.managers.SyncManager`` that answers ``dict()``,
``list()``, ``set()``, ``Namespace()``, ``Lock()``, ``Queue()``,
``Value()`` and the other built-in typeids with interproc's shared-memory objects instead of
proxies to a server process.  Those objects are used directly by every
process that has them, so no operation goes through a socket and nothing is
lost if some process dies.

Everything else stays multiprocessing's, on ``multiprocessing.managers``'
own server: ``Pool()``, typeids registered with :meth:`SyncManager.register`
on a subclass, and remote managers (``address=``, ``authkey=``,
``connect()``, ``get_server()``).  The server process starts the first time
one of those is used (or at an explicit ``start()``), so a program that only
uses the built-in types never starts one.
"""
from __future__ import annotations

import inspect
import multiprocessing
import os
import threading
from multiprocessing import ProcessError
from multiprocessing import managers as _mp_managers
from multiprocessing.managers import State
from typing import Any

from . import queues, sharedctypes, synchronize

__all__ = ["SyncManager", "Manager", "ManagerStateError"]

# Held while a manager starts its server on first use, so that two threads
# asking at once start one server.  Starting is rare, so one lock for every
# manager is enough; a child forked while another thread held it gets a
# fresh one.
_server_start_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _server_start_lock
    _server_start_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


class ManagerStateError(ProcessError, AssertionError):
    """A manager that is not started, or has shut down, was asked for an object.

    Also an ``AssertionError``, which is what multiprocessing's manager
    raises in the same case.
    """


class SyncManager(_mp_managers.SyncManager):
    """``multiprocessing.managers.SyncManager`` with its built-in types in shared memory.

    **Shared memory, no server:** ``dict``, ``list``, ``set``, ``Namespace``,
    ``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``,
    ``Condition``, ``Event``, ``Barrier``, ``Queue``, ``JoinableQueue``,
    ``Value`` and ``Array`` return interproc's objects (``SharedDict``,
    ``SharedList``, ``SharedSet``, ``interproc.Lock``, ...), which pass to other processes
    like any interproc object and outlive the manager: ``shutdown()`` does
    not touch them.

    **Through the server:** ``Pool``, typeids registered with
    :meth:`register` on a subclass, and every typeid of a manager made
    with an explicit ``address`` or joined to one with :meth:`connect`
    (shared memory does not cross machines).  These are multiprocessing's
    proxies, served by ``multiprocessing.managers``' own server process,
    which starts the first time it is needed, at an explicit
    :meth:`start`, or when :attr:`address` is read.

    The constructor takes multiprocessing's arguments.  States and errors
    are multiprocessing's: ``start()`` on a started manager raises
    ``ProcessError``, and asking a manager that is not started or has shut
    down for an object raises :class:`ManagerStateError` (an
    ``AssertionError``, as in multiprocessing).
    """

    def __init__(self, *args: Any, **kwds: Any) -> None:
        super().__init__(*args, **kwds)
        # multiprocessing only sets this in start(); join() reads it.
        self._process = None
        # Started, but its server is to start on first use (see _start_lazily).
        self._lazy = False
        # A server runs (started here) or answers (connect()).
        self._server_ready = False
        # With an explicit address the built-in typeids are served too, as in
        # multiprocessing: the manager is meant to be reached from elsewhere.
        self._builtins_served = self._address is not None

    # The arguments are BaseManager's, which differ between Python versions
    # (shutdown_timeout is 3.11+); show the running version's.
    __init__.__signature__ = inspect.signature(_mp_managers.BaseManager.__init__)  # type: ignore[attr-defined]

    # ----------------------------------------------------------- life cycle

    def _start_lazily(self) -> None:
        """Move to the started state without a server process; the server
        starts the first time something needs it."""
        if self._state.value != State.INITIAL:
            # multiprocessing's own messages.
            if self._state.value == State.STARTED:
                raise ProcessError("Already started server")
            raise ProcessError("Manager has shut down")
        self._lazy = True
        self._state.value = State.STARTED

    def start(self, initializer: Any = None, initargs: Any = ()) -> None:
        """Start the server process now, as multiprocessing does.

        Only ``Pool``, registered typeids and managers with an explicit
        address use it.  ``initializer(*initargs)`` runs in the server
        process first.  ``ProcessError`` if the manager is already started
        or shut down.
        """
        super().start(initializer, initargs)
        self._server_ready = True

    def _ensure_server(self) -> None:
        """Start the server of a manager started without one (Manager(), or
        a with statement), the first time it is needed."""
        if self._server_ready or not self._lazy:
            return
        with _server_start_lock:
            # Another thread may have started it while this one waited, or
            # the manager shut down: then _create() says so.
            if self._server_ready or self._state.value != State.STARTED:
                return
            # BaseManager.start() only starts an INITIAL manager; _lazy keeps
            # the built-in typeids working for other threads meanwhile.
            self._state.value = State.INITIAL
            try:
                super().start()
            finally:
                if self._state.value == State.INITIAL:
                    self._state.value = State.STARTED
            self._server_ready = True

    def connect(self) -> None:
        """Connect to the server at ``address`` (a remote manager).

        Every typeid, the built-in ones included, is then served by that
        server, as in multiprocessing.
        """
        super().connect()
        self._server_ready = True
        self._builtins_served = True

    def shutdown(self) -> None:
        """Stop the server process, if it runs, and shut the manager down.

        Objects made from shared memory stay usable; proxies of served
        objects stop working, as in multiprocessing.  A second call does
        nothing.
        """
        # Once a server has started, multiprocessing's start() has put a
        # util.Finalize in the instance's ``shutdown`` attribute, which then
        # takes the place of this method: it stops the server and marks the
        # manager shut down.  This only runs when no server was started here.
        if self._state.value == State.STARTED:
            self._state.value = State.SHUTDOWN

    def __enter__(self) -> "SyncManager":
        # A manager of this process alone starts without a server; one with
        # an address starts its server, for others to connect to.
        if self._state.value == State.INITIAL and not self._builtins_served:
            self._start_lazily()
        return super().__enter__()

    @property
    def address(self) -> Any:
        """The server's address.  Reading it starts the server of a started
        manager that has none yet, since only then does it have one."""
        self._ensure_server()
        return self._address

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> Any:
        # Every served object is made here: the place to start the server.
        self._check_state()
        self._ensure_server()
        return super()._create(typeid, *args, **kwds)

    def _debug_info(self) -> Any:
        self._ensure_server()
        return super()._debug_info()

    def _number_of_objects(self) -> int:
        self._ensure_server()
        return super()._number_of_objects()

    def _check_state(self) -> None:
        value = self._state.value
        if value == State.STARTED or (value == State.INITIAL and self._lazy):
            return
        if value == State.SHUTDOWN:
            raise ManagerStateError("the manager has shut down")
        if self._builtins_served:
            raise ManagerStateError(
                "the manager is not started: call start() to serve at its address, "
                "or connect() to join the server there"
            )
        raise ManagerStateError(
            "the manager is not started: call start(), use it in a with statement, "
            "or make it with interproc.Manager()"
        )

    def _served(self) -> bool:
        """Whether the built-in typeids go to the server; raises if the
        manager may not make objects now."""
        self._check_state()
        return self._builtins_served

    # ------------------------------------------- built-in typeids: containers

    def dict(self, *args: Any, **kwds: Any) -> Any:
        """A ``SharedDict`` holding ``dict(*args, **kwds)``.

        Every keyword is a key, as with multiprocessing's: ``dict(name=1)``
        is ``{'name': 1}``.
        """
        if self._served():
            return super().dict(*args, **kwds)
        from .containers import SharedDict
        return SharedDict(dict(*args, **kwds))

    def list(self, sequence: Any = ()) -> Any:
        """A ``SharedList`` holding the items of ``sequence``."""
        if self._served():
            return super().list(sequence)
        from .containers import SharedList
        return SharedList(sequence)

    def set(self, iterable: Any = ()) -> Any:
        """A ``SharedSet`` holding the elements of ``iterable`` (the
        ``set()`` typeid multiprocessing added in Python 3.14).

        Served, it is multiprocessing's ``SetProxy``; before 3.14 this
        module registers the same typeid, so that remote managers have it
        on every Python interproc supports.
        """
        if self._served():
            return _served_set(self, iterable)
        from .containers import SharedSet
        return SharedSet(iterable)

    def Namespace(self, **kwds: Any) -> Any:
        """A shared ``Namespace`` with ``kwds`` as its attributes."""
        if self._served():
            return super().Namespace(**kwds)
        from .containers import Namespace
        namespace = Namespace()
        # Set one by one: name=, create= and mode= are attributes here, not
        # the options of the Namespace constructor.
        for key, value in kwds.items():
            setattr(namespace, key, value)
        return namespace

    # --------------------------------------- built-in typeids: synchronization

    def Lock(self) -> Any:
        """An ``interproc.Lock``."""
        if self._served():
            return super().Lock()
        return synchronize.Lock()

    def RLock(self) -> Any:
        """An ``interproc.RLock``."""
        if self._served():
            return super().RLock()
        return synchronize.RLock()

    def Semaphore(self, value: int = 1) -> Any:
        """An ``interproc.Semaphore`` starting at ``value``."""
        if self._served():
            return super().Semaphore(value)
        return synchronize.Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> Any:
        """An ``interproc.BoundedSemaphore`` starting at ``value``."""
        if self._served():
            return super().BoundedSemaphore(value)
        return synchronize.BoundedSemaphore(value)

    def Condition(self, lock: Any = None) -> Any:
        """An ``interproc.Condition`` over ``lock`` (a new RLock if None)."""
        if self._served():
            return super().Condition(lock)
        return synchronize.Condition(lock)

    def Event(self) -> Any:
        """An ``interproc.Event``."""
        if self._served():
            return super().Event()
        return synchronize.Event()

    def Barrier(self, parties: int, action: Any = None, timeout: Any = None) -> Any:
        """An ``interproc.Barrier`` for ``parties`` processes or threads."""
        if self._served():
            return super().Barrier(parties, action, timeout)
        return synchronize.Barrier(parties, action, timeout)

    # ------------------------------------------- built-in typeids: data

    def Queue(self, maxsize: int = 0) -> Any:
        """An ``interproc.JoinableQueue``: a Queue that also has
        ``task_done()`` and ``join()``, as the ``queue.Queue`` that
        multiprocessing's manager serves does."""
        if self._served():
            return super().Queue(maxsize)
        return queues.JoinableQueue(maxsize)

    def SimpleQueue(self) -> Any:
        """An ``interproc.SimpleQueue`` (not a typeid of multiprocessing's
        manager; here so that every interproc backend offers the same types)."""
        if self._served():
            raise ValueError("SimpleQueue() is not served by a multiprocessing manager server; "
                             "use Queue()")
        return queues.SimpleQueue()

    def JoinableQueue(self, maxsize: int = 0) -> Any:
        """An ``interproc.JoinableQueue``."""
        if self._served():
            return super().JoinableQueue(maxsize)
        return queues.JoinableQueue(maxsize)

    def Value(self, typecode: Any, value: Any, lock: Any = True) -> Any:
        """An ``interproc.Value(typecode, value, lock=lock)``: a ctypes value
        in shared memory, read and written through ``.value``.

        ``typecode`` must be a ctypes type or one of its codes (``'i'``,
        ``'d'``, ...), as for ``multiprocessing.Value``; a pointer type such
        as ``ctypes.c_char_p`` raises TypeError.
        """
        if self._served():
            return super().Value(typecode, value, lock)
        return sharedctypes.Value(typecode, value, lock=lock)

    def Array(self, typecode: Any, sequence: Any, lock: Any = True) -> Any:
        """An ``interproc.Array(typecode, sequence, lock=lock)``: a ctypes
        array in shared memory.  A pointer type raises TypeError, as for
        :meth:`Value`."""
        if self._served():
            return super().Array(typecode, sequence, lock)
        return sharedctypes.Array(typecode, sequence, lock=lock)


# The methods multiprocessing's SetProxy (Python 3.14) exposes.
_SET_EXPOSED = (
    "__and__", "__contains__", "__iand__", "__ior__", "__isub__", "__iter__", "__ixor__",
    "__len__", "__or__", "__rand__", "__ror__", "__rsub__", "__rxor__", "__sub__", "__xor__",
    "__ge__", "__gt__", "__le__", "__lt__", "add", "clear", "copy", "difference",
    "difference_update", "discard", "intersection", "intersection_update", "isdisjoint",
    "issubset", "issuperset", "pop", "remove", "symmetric_difference",
    "symmetric_difference_update", "union", "update",
)

if not hasattr(_mp_managers, "SetProxy"):
    # Before 3.14: the same proxy, defined here so that a registry naming
    # it pickles (a spawned server process imports it from this module).
    _BaseSetProxy = _mp_managers.MakeProxyType("_BaseSetProxy", _SET_EXPOSED)
    _BaseSetProxy.__module__ = __name__

    class _SetProxy(_BaseSetProxy):  # type: ignore[valid-type,misc]
        # The server changes its set; the proxy stays the name for it.
        def __ior__(self, value: Any) -> Any:
            self._callmethod("__ior__", (value,))
            return self

        def __iand__(self, value: Any) -> Any:
            self._callmethod("__iand__", (value,))
            return self

        def __ixor__(self, value: Any) -> Any:
            self._callmethod("__ixor__", (value,))
            return self

        def __isub__(self, value: Any) -> Any:
            self._callmethod("__isub__", (value,))
            return self


def _make_served_set() -> Any:
    """The method that asks the server for a ``set``: multiprocessing's
    own from Python 3.14; before, the one registering the typeid makes."""
    own = getattr(_mp_managers.SyncManager, "set", None)
    if own is not None:
        return own
    ours = SyncManager.__dict__["set"]
    SyncManager.register("set", set, _SetProxy)  # also sets SyncManager.set: put ours back
    made = SyncManager.__dict__["set"]
    SyncManager.set = ours  # type: ignore[method-assign]
    return made


_served_set = _make_served_set()


def Manager(url: Any = None, **kwargs: Any) -> Any:
    """A started manager.

    Without ``url``: a :class:`SyncManager`, ``multiprocessing.Manager()``.
    No server process is started: the built-in types (``dict``, ``list``,
    ``set``, ``Namespace``, ``Lock``, ``Queue``, ``Value``, ...) are made in shared
    memory, and the server starts only if ``Pool()`` or another served
    typeid is used.  Usable as ``with Manager() as m:``, like
    multiprocessing's.

    With a Redis URL (``redis://host:6379/0``, ``rediss://...``,
    ``unix:///path``): a started
    :class:`interproc.backends.redis.RedisManager`, whose objects live on
    that server or cluster so that processes on several machines share
    them.  ``kwargs`` are its options (``username``, ``password``,
    ``authkey``, ``serializer``, ``lease``, ``replicas``,
    ``replica_timeout`` and redis-py's keywords).  The
    default serializer is pickle, which runs code when it loads: without
    an ``authkey``, whoever can write to the Redis server can make the
    readers run code of their choosing.  Pass ``authkey=`` (only signed
    payloads are unpickled) or ``serializer="json"``/``"msgpack"`` (plain
    data, never run) unless only trusted parties can write to the server.
    """
    if url is None:
        if kwargs:
            raise TypeError(f"Manager() without a url takes no keyword arguments, got "
                            f"{', '.join(sorted(kwargs))}")
        manager = SyncManager(ctx=multiprocessing.get_context())
        manager._start_lazily()
        return manager
    from .backends.redis import RedisManager

    redis_manager = RedisManager(url, **kwargs)
    redis_manager.start()
    return redis_manager
