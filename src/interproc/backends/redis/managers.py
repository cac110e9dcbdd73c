"""RedisManager: ``interproc.Manager("redis://host:6379/0")``.

The Manager API (docs/api.md, "Manager") with every object on a Redis server
or cluster, so that the processes sharing them may run on several machines.
There is no server process of ours: the manager is a factory that remembers
the anonymous objects it made, and ``shutdown()`` deletes their keys.

A process that is killed runs no ``shutdown()``, so the anonymous objects
also expire on the server: every key of them expires ``orphan_ttl``
seconds after it was last refreshed, and the process that made the manager
refreshes them from a background thread (``synchronize``'s renewer) every
third of that.  Keys an object makes afresh later (Redis deletes an
emptied list or hash) get the expiry in the script that makes them
(``_base.alive``).  So they live as long as the manager's process, as
multiprocessing's do, and at most about ``orphan_ttl`` longer.
"""
from __future__ import annotations

import inspect
import os
import sys
import threading
import weakref
from multiprocessing import ProcessError
from typing import Any, Optional

from . import _base
from .client import DEFAULT_REPLICA_TIMEOUT, Connection, check_replicas
from .codec import Codec

__all__ = ["RedisManager"]

_INITIAL, _STARTED, _SHUTDOWN = "initial", "started", "shutdown"

#: The shortest lock lease a manager accepts, in seconds.  A holder renews
#: its leases every third of the lease from a background thread, through a
#: round trip to the server; a shorter lease would run out under a loaded
#: machine's scheduling delays or one slow reply, and the lock change hands
#: while its holder is alive and well.
MIN_LEASE = 1.0

#: The shortest ``orphan_ttl`` a manager accepts, in seconds: its objects
#: are refreshed every third of it, and a shorter one would let them run
#: out under a loaded machine's scheduling delays or one slow reply.
MIN_ORPHAN_TTL = 3.0

#: The default ``orphan_ttl``, in seconds.
DEFAULT_ORPHAN_TTL = 60.0


def _check_orphan_ttl(ttl: Any) -> Optional[float]:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"orphan_ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if not MIN_ORPHAN_TTL <= ttl < float("inf"):
        raise ValueError(
            f"orphan_ttl must be at least {MIN_ORPHAN_TTL} s and finite (or None: never "
            f"expire), not {ttl!r}: the manager's process refreshes its objects every third "
            "of it, and a shorter one would run out under ordinary scheduling delays")
    return float(ttl)


def _destroy_all(pid: int, made: list, lock: threading.Lock) -> None:
    """Delete the keys of the anonymous objects in ``made`` (once, and only
    in the process that made them: a forked child's exit must not)."""
    if os.getpid() != pid:
        return
    with lock:
        objects, made[:] = list(made), []
    if objects:
        from .synchronize import let_expire
        # Refreshing what is being deleted would be wasted (it makes no
        # key), and a failed deletion should leave the rest to expire.
        for obj in objects:
            let_expire(obj)
    errors = []
    for obj in objects:
        try:
            obj._destroy()
        except FileNotFoundError:
            pass
        except (ConnectionError, TimeoutError) as exc:
            errors.append(exc)  # the server is gone for the others too
            break
        except Exception as exc:  # keep going: delete what can be deleted
            errors.append(exc)
    if errors:
        raise errors[0]


def _destroy_all_quietly(pid: int, made: list, lock: threading.Lock) -> None:
    """``_destroy_all`` for the manager's finalizer (garbage collection, or
    the interpreter's exit): there is nobody to raise to, and a traceback
    at exit helps nobody, so a failure is one line on stderr.  The first
    connection failure stops it: the server is gone for the other objects
    too, and each attempt could take a connect timeout."""
    if os.getpid() != pid:
        return
    with lock:
        left = len(made)
    try:
        _destroy_all(pid, made, lock)
    except BaseException as exc:  # noqa: BLE001 - reported in one line
        try:
            sys.stderr.write(f"interproc: could not delete the {left} anonymous Redis object(s) "
                             f"of a manager: {type(exc).__name__}: {exc}\n")
        except Exception:
            pass


class RedisManager:
    """A manager whose objects live on Redis (see the module docstring).

    ``RedisManager(url, *, username=None, password=None, authkey=None,
    serializer="pickle", lease=10.0, replicas=0, replica_timeout=1.0,
    orphan_ttl=60.0, **redis_kwargs)``:

    - ``url``: ``redis://host:port/db``, ``rediss://`` (TLS),
      ``unix:///path`` or ``redis+sentinel://host:port[,host:port]/service[/db]``
      (the master that Redis Sentinel names); a Redis Cluster is
      recognized by itself.
    - ``client``: instead of ``url``, an existing redis-py client or
      connection pool (``redis.Redis``, ``RedisCluster``, a Sentinel's
      ``master_for`` client): its address, credentials, TLS and socket
      options are used, not its sockets (every process makes its own, so
      objects still pickle to children), nor its retries (a command is
      never resent).
      ``username``/``password`` override the URL's; ``redis_kwargs`` go to
      redis-py (``socket_timeout=``, ``ssl_ca_certs=``...).
    - ``authkey``: bytes; everything interproc stores is signed with
      HMAC-SHA256 for its object and place (values, object metadata, Value
      and Array contents), and bytes without a valid signature, or copied
      from another object, are refused (``SignatureError``) before they are
      decoded.  A dict's (and Namespace's) values and keys are bound to
      their key too, and a set's elements are kept as a dict's keys; an
      Array's items are bound to their index, list and queue items only to
      their object.  Every process must use the same key.
    - ``serializer``: ``"pickle"`` (any picklable value), ``"json"`` or
      ``"msgpack"`` (plain data only: TypeError for anything else).
      **pickle runs code when it loads**: with the default
      (``serializer="pickle"``, no ``authkey``), whoever can write to the
      Redis server can make every process reading these objects run code
      of their choosing; the server's own access control (password, ACL
      user, TLS, network) is then the only guard.  Give an ``authkey``
      (only payloads signed with it are unpickled) or use json/msgpack
      (nothing read is ever imported, called or unpickled) when others may
      write to the server.
    - ``lease``: seconds a lock stays held by a process that stops renewing
      it (it died, or lost the server); at least ``MIN_LEASE`` (1 s), since
      holders renew every third of it (ValueError at once otherwise).
    - ``replicas``: how many of the master's replicas must acknowledge a
      write before it returns (0, the default: none are waited for, and
      nothing of this costs anything).  Redis replicates asynchronously, so
      a failover to a replica may lose writes its master acknowledged
      (docs/api.md, "What the Redis server must keep").  With ``replicas=N``
      every operation that writes sends ``WAIT N`` in the same round trip,
      on the same connection (to the Cluster node of the object's slot),
      and returns once N replicas have it.  When fewer acknowledge within
      ``replica_timeout`` seconds (a positive number, 1 s by default), it
      raises :class:`~.errors.ReplicationError`: the write *is* done on the
      master, and would be lost if the master failed before they receive
      it.  Exceptions, so that nothing is lost for the caller:

      - takes (``Queue.get``/``get_many``, ``dict.pop``/``popitem``,
        ``list.pop``, ``set.pop``) never raise it: they return what they
        took, and a take that a failover loses makes the item deliverable
        again (a duplicate, never a loss); so do a lock's ``release()``
        (lost, the lock stays held until its lease runs out) and the
        creation of an object (lost, the next operation raises
        ObjectGoneError);
      - a Lock, RLock or Semaphore ``acquire()`` that too few acknowledged
        is given back before it raises: the caller does not hold it;
      - reads, lease renewals and waiters' registrations and wake-ups do
        not wait for replicas at all.

      Operations may take up to ``replica_timeout`` longer than their own
      timeout when replicas lag.  WAIT does not make Redis strongly
      consistent: see docs/api.md.  The setting goes with the objects to
      child processes.
    - ``orphan_ttl``: seconds the anonymous objects outlive the process
      that made the manager when it dies without ``shutdown()`` (SIGKILL,
      a crash, the host lost): each of their keys expires that long after
      its last refresh, and that process refreshes them every third of it
      from a background thread.  At least ``MIN_ORPHAN_TTL`` (3 s) and
      finite (ValueError; TypeError for a non-number); ``None``: they
      never expire, and a killed manager's objects stay until
      ``interproc rm --url``.  The cost: each operation on such an object
      checks the expiry of the keys it touched, one cheap server-side call
      per key (named objects never expire and pay nothing).  The same
      expiry strikes a live manager whose process is frozen, or cut off
      from the server, for longer than ``orphan_ttl``: its objects are
      then gone (``ObjectGoneError``), as a lease runs out.  A forked child
      keeps none of them alive; the keys of a lock held when its holder
      died expire after the lease, and the wake keys of waiters after at
      most ``orphan_ttl``.

    Methods return the Redis objects, with multiprocessing's signatures plus
    the keywords ``name=`` and ``create=`` (the rules of every named
    interproc object: ``create=None`` opens or creates, ``True`` must
    create, ``False`` must open).  Anonymous objects (no ``name``) are
    deleted by :meth:`shutdown`, or when the process that made the manager
    exits, and expire ``orphan_ttl`` after it is killed; named ones stay
    until ``unlink()``.  Objects pass to other
    processes (any start method, queues, other containers) by reference.
    """

    def __init__(self, url: Optional[str] = None, *, username: Optional[str] = None,
                 password: Optional[str] = None, authkey: Optional[bytes] = None,
                 serializer: str = "pickle", lease: float = 10.0, client: Any = None,
                 replicas: int = 0, replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
                 orphan_ttl: Optional[float] = DEFAULT_ORPHAN_TTL,
                 **redis_kwargs: Any) -> None:
        if isinstance(lease, bool) or not isinstance(lease, (int, float)):
            raise TypeError(f"lease must be a number of seconds, not {type(lease).__name__}")
        if not lease >= MIN_LEASE or lease == float("inf"):
            raise ValueError(
                f"lease must be at least {MIN_LEASE} s (and finite), not {lease!r}: a holder "
                "renews its locks every third of the lease, and a shorter one would run out "
                "under ordinary scheduling delays")
        orphan_ttl = _check_orphan_ttl(orphan_ttl)
        if (url is None) == (client is None):
            raise TypeError("RedisManager needs a url or a client=, and not both")
        check_replicas(replicas, replica_timeout)  # before any connection is made
        self._codec = Codec(serializer, authkey)
        if client is not None:
            if username is not None or password is not None or redis_kwargs:
                raise TypeError("client= carries its own connection options; give no "
                                "username=, password= or redis-py keywords with it")
            self._conn = Connection.from_client(client, replicas=replicas,
                                                replica_timeout=replica_timeout)
        else:
            self._conn = Connection.from_url(url, username, password, replicas=replicas,
                                             replica_timeout=replica_timeout, **redis_kwargs)
        self._lease = float(lease)
        self._orphan_ttl = orphan_ttl
        self._expire_ms = None if orphan_ttl is None else int(orphan_ttl * 1000)
        self._state = _INITIAL
        self._made: list = []
        self._made_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _destroy_all_quietly, os.getpid(), self._made,
                                           self._made_lock)

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Check that the server answers (the translated error if not) and
        start making objects.  ProcessError if started or shut down already."""
        if self._state == _STARTED:
            raise ProcessError("Already started server")
        if self._state == _SHUTDOWN:
            raise ProcessError("Manager has shut down")
        self._conn.ping()
        self._state = _STARTED

    def connect(self) -> None:
        """Nothing to do: every process talks to Redis directly.  Accepted
        so that code written for a remote multiprocessing manager runs."""
        if self._state == _INITIAL:
            self.start()

    def shutdown(self) -> None:
        """Delete the keys of every anonymous object this manager made, and
        refuse to make more.  Named objects stay.  A second call does nothing."""
        if self._state != _SHUTDOWN:
            self._state = _SHUTDOWN
            # Called here, errors reach the caller; the finalizer's quiet
            # version is for garbage collection and exit.
            args = self._finalizer.detach()
            if args is not None:
                _destroy_all(*args[2])

    def join(self, timeout: Optional[float] = None) -> None:
        """Nothing to wait for: there is no server process."""

    def __enter__(self) -> "RedisManager":
        if self._state == _INITIAL:
            self.start()
        elif self._state == _SHUTDOWN:
            from ...managers import ManagerStateError
            raise ManagerStateError("the manager has shut down")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def orphan_ttl(self) -> Optional[float]:
        """Seconds the anonymous objects outlive this manager's process if
        it is killed (None: for ever, until removed by hand)."""
        return self._orphan_ttl

    @property
    def address(self) -> str:
        """The server: ``host:port`` or the socket path."""
        return self._conn.address

    @property
    def url(self) -> str:
        """The server's URL, without credentials."""
        return self._conn.url

    @property
    def replicas(self) -> int:
        """How many replicas must acknowledge each write (0: none)."""
        return self._conn.replicas

    @property
    def replica_timeout(self) -> float:
        """How long a write waits for them, in seconds."""
        return self._conn.replica_timeout

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def codec(self) -> Codec:
        return self._codec

    def __repr__(self) -> str:
        return f"<RedisManager {self._conn.url} {self._state}>"

    # --------------------------------------------------------------- objects

    def _check_state(self) -> None:
        if self._state == _STARTED:
            return
        from ...managers import ManagerStateError
        if self._state == _SHUTDOWN:
            raise ManagerStateError("the manager has shut down")
        raise ManagerStateError("the manager is not started: call start() or use it in a "
                                "with statement, or make it with interproc.Manager(url)")

    def _make(self, cls: Any, *args: Any, name: Optional[str] = None,
              create: Optional[bool] = None, **kwargs: Any) -> Any:
        self._check_state()
        kwargs["codec"] = self._codec
        if _accepts(cls, "lease"):
            kwargs["lease"] = self._lease
        if name is None and self._expire_ms is not None:
            with _base.expiring(self._expire_ms):
                obj = cls(self._conn, *args, name=name, create=create, **kwargs)
        else:
            obj = cls(self._conn, *args, name=name, create=create, **kwargs)
        if name is None:
            with self._made_lock:
                self._made.append(obj)
            from .synchronize import keep_alive
            keep_alive(obj)
            # As a multiprocessing proxy keeps its manager: a manager dropped
            # at once (Manager(url).dict()) must not delete what it made.
            try:
                object.__setattr__(obj, "_manager", self)
            except (AttributeError, TypeError):
                pass
        return obj

    def dict(self, *args: Any, name: Optional[str] = None, create: Optional[bool] = None,
             **kwds: Any) -> Any:
        """A ``RedisDict`` holding ``dict(*args, **kwds)``.

        ``name`` and ``create`` are the naming keywords here (as for
        ``SharedDict``), not keys: pass a dict to store keys of those names.
        """
        from .containers import RedisDict
        content = dict(*args, **kwds)  # so that no key is taken for an option
        return self._make(RedisDict, *((content,) if content else ()), name=name, create=create)

    def list(self, sequence: Any = (), *, name: Optional[str] = None,
             create: Optional[bool] = None) -> Any:
        """A ``RedisList`` holding the items of ``sequence``."""
        from .containers import RedisList
        return self._make(RedisList, sequence, name=name, create=create)

    def set(self, iterable: Any = (), *, name: Optional[str] = None,
            create: Optional[bool] = None) -> Any:
        """A ``RedisSet`` holding the elements of ``iterable``."""
        from .containers import RedisSet
        return self._make(RedisSet, iterable, name=name, create=create)

    def Namespace(self, *, name: Optional[str] = None, create: Optional[bool] = None,
                  **kwds: Any) -> Any:
        """A ``RedisNamespace`` with ``kwds`` as its attributes (``name`` and
        ``create`` name it; set attributes of those names afterwards)."""
        from .containers import RedisNamespace
        return self._make(RedisNamespace, name=name, create=create, _attrs=kwds)

    def Value(self, typecode: Any, value: Any, lock: Any = True, *, name: Optional[str] = None,
              create: Optional[bool] = None) -> Any:
        """A Redis ``Value(typecode, value, lock=lock)``: ``.value``, ``get_lock()``."""
        from . import sharedctypes
        return self._make(sharedctypes.Value, typecode, value, lock=lock, name=name,
                          create=create)

    def Array(self, typecode: Any, sequence: Any, lock: Any = True, *,
              name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        """A Redis ``Array(typecode, sequence, lock=lock)``."""
        from . import sharedctypes
        return self._make(sharedctypes.Array, typecode, sequence, lock=lock, name=name,
                          create=create)

    # ---------------------------------------------------- queues and locks

    def Queue(self, maxsize: int = 0, *, name: Optional[str] = None,
              create: Optional[bool] = None) -> Any:
        """A Redis ``JoinableQueue``: the manager's ``queue.Queue`` has
        ``task_done()`` and ``join()``, as with the shared-memory manager."""
        from . import queues
        return self._make(queues.JoinableQueue, maxsize, name=name, create=create)

    def JoinableQueue(self, maxsize: int = 0, *, name: Optional[str] = None,
                      create: Optional[bool] = None) -> Any:
        from . import queues
        return self._make(queues.JoinableQueue, maxsize, name=name, create=create)

    def SimpleQueue(self, *, name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        from . import queues
        return self._make(queues.SimpleQueue, name=name, create=create)

    def Lock(self, *, name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.Lock, name=name, create=create)

    def RLock(self, *, name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.RLock, name=name, create=create)

    def Semaphore(self, value: int = 1, *, name: Optional[str] = None,
                  create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.Semaphore, value, name=name, create=create)

    def BoundedSemaphore(self, value: int = 1, *, name: Optional[str] = None,
                         create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.BoundedSemaphore, value, name=name, create=create)

    def Condition(self, lock: Any = None, *, name: Optional[str] = None,
                  create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.Condition, lock, name=name, create=create)

    def Event(self, *, name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.Event, name=name, create=create)

    def Barrier(self, parties: int, action: Any = None, timeout: Any = None, *,
                name: Optional[str] = None, create: Optional[bool] = None) -> Any:
        from . import synchronize
        return self._make(synchronize.Barrier, parties, action, timeout, name=name,
                          create=create)


def _accepts(cls: Any, keyword: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
