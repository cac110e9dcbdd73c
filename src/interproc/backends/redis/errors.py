"""The exceptions of the Redis backend.

Each one subclasses the built-in exception a caller of the shared-memory
objects would already catch, so code written for one backend handles the
other's failures too:

- :class:`AuthenticationError` (a ``PermissionError``): the server refused the
  credentials (wrong password, unknown or disabled user, ``NOAUTH``) or the
  ACL user may not run a command the backend needs (``NOPERM``).
- :class:`UnreachableError` (a ``ConnectionError``): no connection could be
  made: refused, unknown host, missing socket file, connect timeout, a server
  still loading its data set, a cluster that is down.  Nothing was sent, so
  the operation did not happen.
- :class:`ConnectionLostError` (a ``ConnectionError``): the connection broke
  after a command was sent and before its reply came back.  The command may or
  may not have taken effect; the backend does not resend it (a resent push
  could add an item twice), it reports it.
- :class:`ServerTimeoutError` (a ``TimeoutError``): the reply did not come
  within the ``socket_timeout`` given to the connection.  As with a lost
  connection, the command may or may not have taken effect.
- :class:`CorruptDataError` (a ``ValueError``, and an
  ``interproc.SegmentError`` as a damaged shared-memory segment is): bytes
  read from Redis are not what interproc stores there -- a malformed
  payload or metadata hash, a reference to an unknown kind of object or
  with arguments of the wrong shape, a Barrier action named by the store
  that this reader will not import.  Nothing named by the bytes was
  imported or called.
- :class:`SignatureError` (a ``CorruptDataError``): with an ``authkey``, a
  payload, metadata hash or Value/Array content read from Redis was
  unsigned, signed with another key, altered, or signed for another object
  or key (copied from elsewhere).
- :class:`LockNotOwnedError` (a ``RuntimeError`` and an ``AssertionError``):
  ``release()`` of a Lock or RLock by a thread that does not hold it.  A
  Redis lock is a lease owned by the thread that acquired it; unlike the
  shared-memory and multiprocessing ``Lock``, no other thread or process may
  release it, so that a holder whose lease ran out cannot release the lock
  of the one that took it over.
- :class:`ObjectGoneError` (a ``FileNotFoundError``): an operation through a
  handle whose object no longer exists: it was unlinked (and perhaps made
  again under its name: another incarnation), the manager that made it shut
  down, or the server lost its data (restarted without persistence, or a
  replica that had not received it took over).  The operation changed
  nothing; the handle cannot be used any more.
- :class:`LeaseLostError` (a ``LockNotOwnedError``): the calling thread
  acquired the lock, but its lease ran out before it released it (its
  process or the server stalled, or the connection was lost, for longer
  than the lease).  Raised by the first operation on the guarded object
  that follows, which the server refused and which did nothing, and by
  ``release()`` when another took the lock meanwhile.
- :class:`ReplicationError` (a ``RuntimeError``): with ``replicas=N``
  (``RedisManager``), a write was done by the master, but fewer than N of
  its replicas acknowledged it within ``replica_timeout``; a failover to
  one that lacks it would lose it.  Unlike the errors above, the
  operation *did* happen: it must not be repeated as if it had not.

All of them carry the server (``host:port`` or the socket path) in their
message, and never the password.
"""
from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "UnreachableError",
    "ConnectionLostError",
    "ServerTimeoutError",
    "CorruptDataError",
    "SignatureError",
    "LockNotOwnedError",
    "ObjectGoneError",
    "LeaseLostError",
    "ReplicationError",
]

from ...naming import SegmentError


class AuthenticationError(PermissionError):
    """The Redis server refused our credentials or our ACL permissions."""


class UnreachableError(ConnectionError):
    """No connection to the Redis server could be made; nothing was sent."""


class ConnectionLostError(ConnectionError):
    """The connection broke mid-command: it may or may not have taken effect."""


class ServerTimeoutError(TimeoutError):
    """No reply within ``socket_timeout``: the command may or may not have taken effect."""


class CorruptDataError(SegmentError):
    """Bytes read from Redis are damaged or forged; nothing they name was run."""


class SignatureError(CorruptDataError):
    """Stored bytes were unsigned, signed with another key or for another
    place, or altered."""


class LockNotOwnedError(RuntimeError, AssertionError):
    """release() of a Redis lock this thread does not hold.

    A RuntimeError (threading's error) and an AssertionError (what
    multiprocessing's RLock raises), so code written for either catches it.
    """


class ObjectGoneError(FileNotFoundError):
    """The object behind a handle was deleted, or lost by the server; the
    operation changed nothing."""


class LeaseLostError(LockNotOwnedError):
    """The calling thread's lease on a Redis lock ran out while it held it.

    What raised it did nothing: the server refuses every operation of a
    holder whose lease is gone, so nothing it does after that point can
    interleave with a later holder's work.  What it did before, under the
    lease, stays done.
    """


class ReplicationError(RuntimeError):
    """A write is done on the Redis master, but fewer replicas than asked
    (``replicas=N``) acknowledged it within ``replica_timeout`` (Redis
    ``WAIT``): it would be lost if the master failed before they receive
    it and one of them took over.

    A RuntimeError, not a ConnectionError or TimeoutError: those say that
    an operation may not have happened, and code that catches them to do
    the operation again would here do it twice (an item put twice, a
    semaphore released twice).  The write stays done; nothing is undone.

    Attributes: ``acknowledged`` (how many replicas did), ``replicas``
    (how many were asked for), ``server`` (the master, or the Cluster node
    that holds the object) and ``result`` (the operation's own reply, for
    the backend's callers that give back what they took: a lock acquired
    is released again before its acquire() raises this).
    """

    acknowledged = 0
    replicas = 0
    server = ""
    result = None
    op = None
