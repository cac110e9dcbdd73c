"""Connections to Redis: one client per process and per connection options.

Interface
---------

``Connection.from_url(url, username=None, password=None, *, cluster=None, replicas=0, replica_timeout=1.0, **redis_kwargs)``
    The connection for ``url`` in this process.  Schemes: ``redis://host:port/db``,
    ``rediss://`` (TLS), ``unix:///path/to/socket?db=N`` and, for a master
    watched by Redis Sentinel, ``redis+sentinel://host:port[,host:port...]/service[/db]``
    (``rediss+sentinel://``: TLS to the master; the Sentinels are asked
    without credentials or TLS).  Credentials may
    be in the URL (``redis://user:secret@host``, or ``?password=`` on a unix
    URL) or given as ``username=``/``password=``; the arguments win over the
    URL.  ``cluster=None`` asks the server (``INFO cluster``) whether it is a
    Redis Cluster node, ``True``/``False`` skip the question.  Any other
    keyword goes to redis-py (``socket_timeout=``, ``ssl_ca_certs=``, ...);
    ``decode_responses`` is always False: the backend reads bytes.
    ``replicas``/``replica_timeout``: see "Replicas" below.

    Calls with equal options return the same object within one process; a
    forked child never gets its parent's object from this cache, and an
    object inherited through fork makes its own sockets on first use (the
    parent's are never read, written or shut down by the child).

``Connection.from_client(client, *, replicas=0, replica_timeout=1.0)``
    The same from an existing redis-py client (``redis.Redis``,
    ``redis.cluster.RedisCluster``, a Sentinel's ``master_for`` client) or
    connection pool: its address, database, credentials, TLS and socket
    timeouts are read off it, and this process and its children make their
    own sockets with them (a client's sockets cannot be pickled to another
    process, and its retry setting would resend commands).  TypeError for
    a client whose credentials come from a ``credential_provider``: there
    is no picklable way to hand that to children.

``Connection.from_options(options)``
    The same from ``conn.options``, a picklable dict (``url`` without
    credentials, ``username``, ``password``, ``cluster``, ``replicas`` and
    ``replica_timeout`` when replicas are waited for, and the redis-py
    keywords).  A ``Connection`` itself pickles as its options, so it can
    be handed to children under every start method and through queues,
    and a child waits for as many replicas as its parent.

Attributes and methods of a ``Connection``
    ``client``           the redis-py client of this thread: ``redis.Redis``
                         holding one connection of the process's pool for
                         the thread (given back when the thread's client is
                         dropped), or the process's
                         ``redis.cluster.RedisCluster`` for a cluster.
    ``bounded(key, seconds, build)``
                         the commands ``build(pipe)`` adds to a plain
                         pipeline, sent once on a connection of their own
                         to the server, or to the Cluster node that serves
                         ``key``'s slot, whose socket timeout is ``seconds``
                         + ``BLOCK_MARGIN`` (see "Bounded calls" below);
                         returns their replies.
    ``is_cluster``       whether the server is a Redis Cluster (asks it once).
    ``replicas``, ``replica_timeout``  the setting below.
    ``address``          ``host:port`` or the socket path, for messages.
    ``url``              the URL without credentials.
    ``script(source)``   a :class:`Script`: ``script(keys=(), args=())`` runs the
                         Lua source by ``EVALSHA``, loading it when the server
                         does not know it yet (``script.execute(client,
                         numkeys, *keys_and_args)``: the same on a given
                         client, with EVALSHA's own arguments).  All keys
                         must hash to one slot on a cluster (see ``keys.py``).
    ``errors(op)``       context manager translating redis-py errors, below.
    ``ping()``, ``close()``.

Errors
------

``translate(exc, server=None, op=None, *, cluster=False)`` returns the exception to raise in
place of a redis-py one (see ``errors.py``): refused credentials ->
``AuthenticationError``; no connection possible -> ``UnreachableError``
naming ``host:port`` or the socket; connection broken mid-command ->
``ConnectionLostError``; reply timeout -> ``ServerTimeoutError``;
``WRONGTYPE`` -> ``TypeError``; server out of memory -> ``MemoryError``;
read-only replica -> ``PermissionError``.  Other errors (a Lua script's own
``error_reply``, for instance) come back unchanged so that callers can
handle them.

Wrap every Redis call of an object in one of::

    with conn.errors("Queue.put"):
        conn.client.rpush(key, payload)

    @translated("Queue.put")          # takes the server from self._conn
    def put(self, obj, ...): ...

Retries
-------

Unless the caller passes its own ``retry=``, a command is never resent after
a connection error or timeout (redis-py resends up to three times by default).
A resent command may run twice -- an item pushed twice, a counter incremented
twice -- so the backend reports the failure instead and leaves the decision
to the caller.  A stale pooled socket (the server restarted between two
commands) is still replaced transparently: nothing had been sent on it.

On a Redis Cluster the same holds: the cluster client gets no retries
(``retry`` with none for redis-py 6 and later, ``cluster_error_retry_attempts
= 0`` for redis-py 5), and no redis-py ``ClusterPipeline`` is used, since it
resends the commands of a pipeline one by one after a connection error
whatever its retry setting (a resent DEL once deleted an item that the
first BLMOVE had moved).  Pipelines go through ``bounded()`` instead, as
plain pipelines on the slot's node.  Redirections are followed only when
they prove that nothing ran: a MOVED, ASK or TRYAGAIN reply comes before a
command runs, so a pipeline whose every reply is one is sent again (to the
node the refreshed slot table names); one that ran in part raises
ConnectionLostError.  A connection that could not be made sent nothing,
and is tried again once after a refresh of the slot table (a failover).

Replicas
--------

Replication is asynchronous: a master acknowledges a write before its
replicas have it, and a failover to one of them loses what it lacks.
With ``replicas=N`` (N > 0), a script is sent in one pipeline with ``WAIT N
replica_timeout_ms`` after it, on the same connection: to the server, the
master a Sentinel names, or the Cluster node that serves the script's
first key, through ``bounded()`` (WAIT answers for the writes of the
connection it is sent on, so it must go where the script ran).  WAIT's
reply is the number of replicas that acknowledged, and what is done with
it is the call's ``acks``:

- ``ACKS_RAISE`` (a script's default): ReplicationError (``errors.py``)
  when fewer than N did: the write is done on the master, and is not
  undone.  An error reply of the script comes first (it did nothing).
- ``ACKS_QUIET``: the reply however many did.  For operations that hand
  something to the caller (a queue's take, a dict's pop): raising after
  the item left the master would lose it for the caller, while a take that
  a failover loses only makes the item deliverable again.  Also for what a
  failover may lose without harm to anyone (a new object, whose loss
  every later operation reports as ObjectGoneError).
- ``ACKS_NONE``: no WAIT.  For scripts that write nothing, and for writes
  that must never wait on replicas: a lease's renewal (a frozen replica
  must not make live holders lose their locks) and waiters' registrations
  and wake-ups (a lost one costs a waiter at most one wait chunk).

A script states its own ``acks`` in its source with the Lua comment
``NO_WAIT`` or ``WAIT_QUIETLY`` (``acks_of``); a call may pass another.
``bounded()`` takes ``acks=`` too (ACKS_NONE by default).  The server may
take ``replica_timeout`` longer to answer such a call, and its socket
timeout is that much longer.  An operation that wrote nothing itself
still waits for the connection's earlier writes, since WAIT knows no
better: it raises only if one of those is not acknowledged either.
Without replicas nothing of this runs: ``Script`` tests one attribute.

Bounded calls
-------------

A blocking command (BLMOVE, BLPOP) waits on the server for as long as the
caller allows, so its socket cannot keep the connection's socket timeout:
``bounded()`` sets it, for that call, to the time the server may take plus
``BLOCK_MARGIN`` (and the connect timeout to no more than that), so that a
stalled or vanished server is noticed ``BLOCK_MARGIN`` after the caller's
time ran out (ServerTimeoutError), not a socket timeout later.  Callers with
a deadline send their non-blocking commands the same way.

redis-py is imported on first use, so ``import interproc`` works without it;
a missing redis-py raises ImportError saying ``pip install interproc[redis]``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .errors import (
    AuthenticationError,
    ConnectionLostError,
    ReplicationError,
    ServerTimeoutError,
    UnreachableError,
)

__all__ = ["Connection", "Script", "translate", "errors", "translated", "import_redis",
           "ACKS_RAISE", "ACKS_QUIET", "ACKS_NONE", "NO_WAIT", "WAIT_QUIETLY"]

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

#: How long a connect may take before UnreachableError, unless given.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: How long a reply may take before ServerTimeoutError, unless given: what
#: redis-py 6 and later apply by themselves.  redis-py 5 applies none, and a
#: stalled server (or a TLS handshake with a plain port) would hang a call
#: for ever, so it is given to every redis-py version alike.
DEFAULT_SOCKET_TIMEOUT = 5.0

#: How much longer than the server may take a bounded call waits for its
#: reply (``Connection.bounded``), in seconds: the round trip, and the
#: server's own lateness (it ends blocking commands on its ``hz`` timer,
#: up to 100 ms late at the default hz 10).
BLOCK_MARGIN = 1.0

#: How often a bounded pipeline whose every command was redirected (MOVED,
#: ASK, TRYAGAIN: nothing ran) is sent again after refreshing the slot table,
#: at least (a slot being migrated, below, may take more).
REDIRECT_ATTEMPTS = 5

#: While a Redis Cluster migrates a slot between nodes (resharding), it
#: refuses a command on several keys of that slot unless they all exist on
#: the node asked (TRYAGAIN, or ASK then TRYAGAIN), and an object's
#: operations name keys that may not exist yet.  Nothing ran, so the command
#: is sent again every this many seconds until the migration ends, within
#: the socket timeout (or the caller's time); then UnreachableError.
MIGRATION_RETRY_INTERVAL = 0.05

INSTALL_HINT = "pip install interproc[redis]"

#: How long a write waits for its replicas' acknowledgement (``WAIT``)
#: when ``replicas`` is given without ``replica_timeout``, in seconds.
DEFAULT_REPLICA_TIMEOUT = 1.0

#: What a call on a connection with ``replicas`` does about them (``acks=``,
#: see "Replicas" in the module docstring).
ACKS_RAISE = "raise"  # WAIT, then ReplicationError if too few acknowledged
ACKS_QUIET = "quiet"  # WAIT, then the reply however many acknowledged
ACKS_NONE = "none"    # no WAIT

#: Lua comments that give a script its ``acks`` when put in its body
#: (``ACKS_RAISE`` without either).  A comment, so that it stays in every
#: script made from the body: the backend prepends preludes and guards.
NO_WAIT = "--[[interproc: acks=none]]\n"
WAIT_QUIETLY = "--[[interproc: acks=quiet]]\n"


def acks_of(source: str) -> str:
    """The ``acks`` a Lua script asks for (``NO_WAIT``, ``WAIT_QUIETLY``)."""
    if NO_WAIT in source:
        return ACKS_NONE
    if WAIT_QUIETLY in source:
        return ACKS_QUIET
    return ACKS_RAISE


def check_replicas(replicas: Any, timeout: Any) -> Tuple[int, float]:
    """``(replicas, replica_timeout)`` checked: TypeError, ValueError."""
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise TypeError(f"replicas must be an int, not {type(replicas).__name__}")
    if replicas < 0:
        raise ValueError(f"replicas must be 0 (do not wait for replicas) or more, not {replicas}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"replica_timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"replica_timeout must be a positive, finite number of seconds, "
                         f"not {timeout!r}")
    return int(replicas), float(timeout)


def replication_error(server: str, acked: Any, wanted: int, timeout: float,
                      result: Any = None, op: Optional[str] = None) -> ReplicationError:
    """The ReplicationError of a write done on ``server`` that ``acked``
    replicas (a count, or WAIT's error reply) of ``wanted`` acknowledged."""
    if isinstance(acked, Exception):
        how = f"the server refused to wait for its replicas ({acked}), so none is known to have it"
        count = 0
    else:
        count = int(acked)
        how = (f"only {count} of the {wanted} replica{'s' if wanted > 1 else ''} asked for "
               f"acknowledged it within {timeout:g} s")
    during = f"{op}: " if op else ""
    exc = ReplicationError(
        f"{during}the write is done on the Redis master {server}, but {how}; it would be lost "
        "if the master failed before they receive it and a replica that lacks it took over. "
        "It stays done: do not do it again as if it had not happened")
    exc.acknowledged, exc.replicas, exc.server, exc.result, exc.op = (
        count, wanted, server, result, op)
    return exc


def import_redis():
    """redis-py, or an ImportError that says how to install it."""
    try:
        import redis
        import redis.cluster  # noqa: F401
        import redis.exceptions  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the Redis backend of interproc needs redis-py 5 or newer: {INSTALL_HINT}"
        ) from exc
    return redis


# ---------------------------------------------------------------------------
# URLs and options


def split_url(url: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``(url without credentials, username, password)`` of a Redis URL.

    Raises ValueError for anything but ``redis://``, ``rediss://`` and
    ``unix://``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"not a Redis URL: {redact(url)!r}; expected redis://host:port/db, "
            "rediss://host:port/db (TLS), unix:///path/to/socket or "
            "redis+sentinel://host:port[,host:port...]/service[/db]"
        )
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    hostport = parts.netloc.rpartition("@")[2]
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = []
    for k, v in query:
        if k == "password":
            password = password or v or None
        elif k == "username":
            username = username or v or None
        else:
            kept.append((k, v))
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"a unix:// URL needs a socket path: {redact(url)!r}")
    elif parts.scheme in SENTINEL_SCHEMES:
        sentinel_parts(parts.scheme + "://" + hostport + parts.path)  # ValueError if malformed
    elif not parts.hostname:
        raise ValueError(f"a {parts.scheme}:// URL needs a host: {redact(url)!r}")
    return _join(parts.scheme, hostport, parts.path, urllib.parse.urlencode(kept)), username, password


def _join(scheme: str, netloc: str, path: str, query: str) -> str:
    # urlunsplit would drop the '//' of unix:///path, which redis-py needs.
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
        query = [
            (k, "***" if k == "password" else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
        return _join(parts.scheme, netloc, parts.path, urllib.parse.urlencode(query))
    except ValueError:
        return "<unparsable URL>"


def sentinel_parts(url: str) -> Tuple[List[Tuple[str, int]], str, int]:
    """``(sentinels, service name, db)`` of a ``redis+sentinel://`` URL:
    ``redis+sentinel://host:port[,host:port...]/service[/db]`` (the
    Sentinels to ask, and the name they monitor the master under;
    ``rediss+sentinel://`` speaks TLS to the master)."""
    parts = urllib.parse.urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Sentinel URL lists host:port pairs: {redact(url)!r}")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"a Sentinel URL names the service, then the database: "
                         f"redis+sentinel://host:port/service[/db], not {redact(url)!r}")
    return hosts, urllib.parse.unquote(path[0]), int(path[1]) if len(path) == 2 else 0


def url_address(url: str) -> str:
    """``host:port`` of a redis(s) URL, or the socket path of a unix one
    (for a Sentinel URL: the service and its Sentinels)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    if parts.scheme in SENTINEL_SCHEMES:
        hosts, service, _ = sentinel_parts(url)
        return f"{service!r} (Sentinel {', '.join(f'{h}:{p}' for h, p in hosts)})"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{host}:{port}"


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an option value, for the connection cache."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(v) for v in value)))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


# ---------------------------------------------------------------------------
# Error translation


# How servers word refused credentials, for errors that redis-py passes on
# as text only (a cluster client that could reach no node, say).
_AUTH_WORDS = (
    "WRONGPASS", "NOAUTH", "invalid username-password", "Authentication required",
    "HELLO must be called with the client already authenticated", "invalid password",
)


def translate(exc: BaseException, server: Optional[str] = None, op: Optional[str] = None,
              *, cluster: bool = False, node: bool = False) -> BaseException:
    """The exception to raise in place of the redis-py exception ``exc``.

    ``server`` (``host:port`` or a socket path; for a cluster, the node the
    connection was made through) and ``op`` (what was being done,
    "Queue.put" say) go into the message.  Exceptions that are not
    redis-py's, and redis-py errors with no better equivalent (a Lua
    script's ``error_reply`` among them), are returned unchanged.  ``node``:
    ``server`` is the cluster node that failed, not the one connected through.
    A ReplicationError (raised by the backend itself, where the operation
    is not known) comes back as itself, with ``op`` put in its message.
    """
    if isinstance(exc, ReplicationError):
        if op and exc.op is None and exc.args:
            exc.op = op
            exc.args = (f"{op}: {exc.args[0]}",)
        return exc
    rexc = sys.modules.get("redis.exceptions")
    if rexc is None or not isinstance(exc, (rexc.RedisError, rexc.RedisClusterException)):
        return exc
    if cluster and node:
        where = f"Redis Cluster node {server}"
    elif cluster:
        # the failing node is named in redis-py's own text, kept as the detail
        where = f"a node of the Redis Cluster at {server}" if server else "a Redis Cluster node"
    else:
        where = f"Redis server {server}" if server else "the Redis server"
    during = f" during {op}" if op else ""
    detail = str(exc) or type(exc).__name__

    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthenticationWrongNumberOfArgsError)):
        if "without any password configured" in detail or "wrong number of arguments" in detail:
            return AuthenticationError(
                f"{where} has no password set, but one was given ({detail})"
            )
        return AuthenticationError(f"{where} refused the credentials{during}: {detail}")
    if isinstance(exc, getattr(rexc, "AuthorizationError", ())) or isinstance(exc, rexc.NoPermissionError):
        return AuthenticationError(f"the user is not allowed to do this on {where}{during}: {detail}")
    if isinstance(exc, rexc.BusyLoadingError):
        return UnreachableError(f"{where} is loading its data set into memory; try again shortly ({detail})")
    tls = _tls_failure(exc)
    if tls is not None:
        return UnreachableError(f"cannot connect to {where}{during}: {tls} ({detail})")
    if isinstance(exc, rexc.ConnectionError):
        if _while_connecting(exc):
            return UnreachableError(f"cannot connect to {where}{during}: {detail}")
        return ConnectionLostError(
            f"lost the connection to {where}{during}; the command was sent and "
            f"may or may not have taken effect ({detail})"
        )
    if isinstance(exc, rexc.TimeoutError):
        if "connecting" in detail.lower():
            return UnreachableError(f"cannot connect to {where}{during}: timed out ({detail})")
        return ServerTimeoutError(
            f"no reply from {where}{during} within the socket timeout; the command "
            f"may or may not have taken effect ({detail})"
        )
    if _slot_migrating(exc):
        return UnreachableError(
            f"{where} kept redirecting or refusing the command{during}: its slot is being "
            "migrated between nodes (while it is, Redis refuses a command on several keys of "
            f"the slot), or the cluster is being reconfigured; nothing ran ({detail})")
    if isinstance(exc, rexc.ClusterDownError):  # MasterDownError included
        return UnreachableError(f"the Redis Cluster of {where} is down{during}: {detail}")
    if isinstance(exc, rexc.RedisClusterException):
        if any(w in detail for w in _AUTH_WORDS):
            return AuthenticationError(f"{where} refused the credentials{during}: {detail}")
        return UnreachableError(f"cannot use the Redis Cluster through {where}{during}: {detail}")
    if isinstance(exc, rexc.MovedError) or (isinstance(exc, rexc.ResponseError) and detail.startswith("MOVED")):
        return ValueError(
            f"{where} is a Redis Cluster node, but this connection was made for a single "
            f"server (cluster=False); connect with cluster=None or cluster=True ({detail})"
        )
    if isinstance(exc, rexc.ResponseError) and "SELECT is not allowed in cluster mode" in detail:
        return ValueError(f"{where} is a Redis Cluster node: a Redis Cluster has only database 0 ({detail})")
    if isinstance(exc, rexc.OutOfMemoryError):
        return MemoryError(f"{where} is out of memory (maxmemory reached){during}: {detail}")
    if isinstance(exc, rexc.ReadOnlyError):
        return PermissionError(f"{where} is a read-only replica{during}: {detail}")
    if isinstance(exc, rexc.ResponseError) and detail.startswith("WRONGTYPE"):
        return TypeError(f"a key{during} on {where} holds another type of Redis value: {detail}")
    return exc


def _causes(exc: BaseException):
    """``exc`` and the exceptions it was raised from, nearest first."""
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def _tls_failure(exc: BaseException) -> Optional[str]:
    """What a failed TLS handshake means, or None if ``exc`` is not one."""
    import ssl

    for e in _causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"the server's TLS certificate was refused: {e.verify_message or e}"
        text = str(e).lower()
        if isinstance(e, ssl.SSLError) or "handshake" in text:
            # A plain server answers a ClientHello with nothing (a handshake
            # timeout) or with an error text (a record the client cannot read).
            return ("the server does not speak TLS on this port (a rediss:// URL needs "
                    "the server's tls-port; use redis:// for its plain port)")
    return None


def _expects_tls(address: str, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake: asked after a plain
    connection was closed at once, which is how a TLS port answers one."""
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host.strip("[]")):
                return True
    except (OSError, ValueError):
        return False


def _while_connecting(exc: BaseException) -> bool:
    """Whether a redis-py ConnectionError happened before anything was sent."""
    text = str(exc)
    if " connecting to " in text or text.startswith("Error connecting to"):
        return True
    if type(exc).__name__ in ("MasterNotFoundError", "SlaveNotFoundError"):
        return True  # the Sentinels named no server to send it to
    ctx = exc.__cause__ or exc.__context__
    return isinstance(ctx, (ConnectionRefusedError, FileNotFoundError)) or type(ctx).__name__ == "gaierror"


class errors(contextlib.ContextDecorator):
    """Translate redis-py exceptions raised inside the block (see ``translate``).

    ``with errors(conn, "Queue.put"): ...`` or, on a function,
    ``@errors(conn, "op")``.  ``conn`` may be a Connection, an address string
    or None.  The original exception is kept as ``__cause__``.
    """

    __slots__ = ("_conn", "_op")

    def __init__(self, conn: "Connection | str | None" = None, op: Optional[str] = None):
        self._conn = conn
        self._op = op

    def __enter__(self) -> "errors":
        return self

    def __exit__(self, et, ev, tb) -> bool:
        if ev is None:
            return False
        new = _translate_for(ev, self._conn, self._op)
        if new is ev:
            return False
        raise new.with_traceback(None) from ev


def _translate_for(exc: BaseException, conn: "Connection | str | None", op: Optional[str]) -> BaseException:
    if isinstance(conn, Connection):
        new = _translate_for_connection(exc, conn, op)
        if (isinstance(new, ConnectionLostError) and conn.url.startswith("redis:")
                and not conn._tls_checked and not conn._answered
                and any(isinstance(e, (ConnectionResetError, BrokenPipeError)) or "closed by server" in str(e)
                        for e in _causes(exc))):
            # A TLS port closes a plain connection at its first command.  The
            # check runs once per connection object, and only before the
            # server ever answered (its first INFO or PING): a server that
            # later drops connections is not asked.
            conn._tls_checked = True
            if _expects_tls(failed_node(exc) or conn.address):
                return UnreachableError(
                    f"cannot connect to Redis server {failed_node(exc) or conn.address}"
                    f"{f' during {op}' if op else ''}: the server expects TLS on this port "
                    f"(use a rediss:// URL); nothing was done ({exc})")
        return new
    return translate(exc, conn, op)


def _translate_for_connection(exc: BaseException, conn: "Connection", op: Optional[str]) -> BaseException:
    if True:
        node = failed_node(exc)
        if node is not None and conn._cluster and node != conn.address:
            return translate(exc, f"{node} (of the Redis Cluster at {conn.address})", op,
                             cluster=True, node=True)
        return translate(exc, node or conn.address, op, cluster=bool(conn._cluster),
                         node=node is not None)


def failed_node(exc: BaseException) -> Optional[str]:
    """``host:port`` of the server a redis-py exception came from, when it
    says: ``bounded()`` marks its own; redis-py's cluster client leaves the
    connection (or node) on the exception."""
    node = getattr(exc, "interproc_node", None)
    if node is not None:
        return node
    where = getattr(exc, "connection", None)
    host, port = getattr(where, "host", None), getattr(where, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None


def translated(op: Optional[str] = None) -> Callable:
    """Decorator for methods of objects that keep their Connection in
    ``self._conn``: translate redis-py errors raised by the method."""

    def deco(fn: Callable) -> Callable:
        name = op or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except BaseException as exc:
                new = _translate_for(exc, getattr(self, "_conn", None), name)
                if new is exc:
                    raise
                raise new from exc

        return wrapper

    return deco


# ---------------------------------------------------------------------------
# Lua scripts


_NoScriptError: Any = None


def _no_script_error() -> type:
    global _NoScriptError
    if _NoScriptError is None:
        _NoScriptError = import_redis().exceptions.NoScriptError
    return _NoScriptError


class Script:
    """A Lua script bound to a Connection; ``script(keys=(), args=())`` runs it.

    Runs by ``EVALSHA``; a server that does not have the script yet (new,
    restarted, flushed, or another cluster node) gets it through ``EVAL``,
    which also caches it there.  Errors are returned untranslated: callers
    wrap the call in ``conn.errors(...)`` with the operation's name.

    On a connection with ``replicas``, a script whose ``acks`` (its own,
    from its source: ``acks_of``, or the call's ``acks=``) is not
    ``ACKS_NONE`` is sent with ``WAIT`` through ``Connection.bounded``
    (the server, or the Cluster node that serves its first key), not on
    ``client``; see "Replicas" in the module docstring.
    """

    __slots__ = ("_conn", "source", "sha", "_sha", "acks", "_waits", "_loaded")

    def __init__(self, conn: "Connection", source: str):
        self._conn = conn
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        self._sha = self.sha.encode()
        self.acks = acks_of(source)
        # Read once: without replicas, the hot path tests this and nothing more.
        self._waits = conn._replicas > 0
        # The servers that ran it with WAIT: a NOSCRIPT there would cost a
        # WAIT for nothing, which a replica that lags makes a long one.
        self._loaded: set = set()

    def __call__(self, keys: Iterable[Any] = (), args: Iterable[Any] = (), client: Any = None,
                 acks: Optional[str] = None) -> Any:
        if type(keys) is not list:
            keys = list(keys)
        if type(args) is not list:
            args = list(args)
        if self._waits and (acks or self.acks) != ACKS_NONE:
            return self._conn._run_acked(self, len(keys), [*keys, *args], acks or self.acks)
        return self._run(self._conn.client if client is None else client, len(keys), *keys, *args)

    def execute(self, client: Any, numkeys: int, *keys_and_args: Any, acks: Optional[str] = None) -> Any:
        """Run on ``client`` with ``numkeys`` keys first in ``keys_and_args``
        (the arguments of ``EVALSHA``, without the sha)."""
        if self._waits and (acks or self.acks) != ACKS_NONE:
            return self._conn._run_acked(self, numkeys, keys_and_args, acks or self.acks)
        return self._run(client, numkeys, *keys_and_args)

    def _run(self, client: Any, numkeys: int, *keys_and_args: Any) -> Any:
        # On a Cluster, a run refused because the keys' slot is being
        # migrated is tried again until the migration ends
        # (MIGRATION_RETRY_INTERVAL); the first try costs nothing more.
        deadline = None
        while True:
            try:
                return self._send(client, numkeys, keys_and_args)
            except Exception as exc:
                if not _slot_migrating(exc):
                    raise
                if deadline is None:
                    deadline = time.monotonic() + _migration_patience(self._conn._options)
                elif time.monotonic() >= deadline:
                    raise
            time.sleep(MIGRATION_RETRY_INTERVAL)

    def _send(self, client: Any, numkeys: int, keys_and_args: tuple) -> Any:
        try:
            if type(client) is _ThreadClient:
                return client.interproc_script((b"EVALSHA", self._sha, numkeys, *keys_and_args))
            return client.evalsha(self.sha, numkeys, *keys_and_args)
        except Exception as exc:
            if not isinstance(exc, _no_script_error()):
                raise
        return client.eval(self.source, numkeys, *keys_and_args)

    def __repr__(self) -> str:
        return f"<Script {self.sha[:12]} on {self._conn!r}>"


# ---------------------------------------------------------------------------
# Connections

# What Connection.from_client keeps of a redis-py client's connection
# options: where and how to connect; not its retries (a command is never
# resent) nor its decoding (the backend reads bytes).
_CLIENT_OPTIONS = (
    "username", "password", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "client_name", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_ca_path", "ssl_ca_data", "ssl_check_hostname", "ssl_password", "ssl_min_version",
    "ssl_ciphers",
)


_cache: Dict[Any, "Connection"] = {}
_cache_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The lock may have been held by another thread of the parent at fork
    # time; the cache holds the parent's objects, which the child must not use.
    global _cache_lock
    _cache_lock = threading.Lock()
    _cache.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _ThreadState(threading.local):
    """What a Connection keeps per thread; read on every command, so the
    defaults are class attributes (a missing attribute of a
    ``threading.local`` costs an exception)."""

    #: The thread's own client (``Connection.client``).
    client: Any = None
    #: The ``time.monotonic()`` its commands' replies are awaited until
    #: (``Connection.deadline``), or None.
    deadline: Optional[float] = None


_ThreadClient: Any = None


def _thread_client_class() -> type:
    """``redis.Redis`` for a client that keeps one connection: before each
    command it checks that connection as the pool checks one it hands out,
    so that a socket gone stale between commands (a server restarted or
    killed meanwhile) is replaced, or fails to connect, before anything is
    sent on it."""
    global _ThreadClient
    if _ThreadClient is None:
        redis = import_redis()
        stale = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        # redis-py 7 and later: a connection told of a server's maintenance.
        reconnects = hasattr(getattr(redis.connection, "AbstractConnection", None), "should_reconnect")
        try:
            from hiredis import pack_command as pack
        except ImportError:
            def pack(args: Any) -> Any:
                raise TypeError("no hiredis")

        class ThreadClient(redis.Redis):
            # The Connection it serves (for its deadline), and whether its
            # socket has a deadline's timeout rather than its own.
            interproc_owner: Any = None
            interproc_bounded = False

            def _ready(self, conn: Any) -> None:
                if conn._sock is not None:
                    try:
                        if conn.can_read():
                            raise redis.exceptions.ConnectionError("Connection has data")
                    except stale:
                        conn.disconnect()
                if conn._sock is None:
                    # Through connect(), which a Sentinel's connection
                    # overrides to ask for the master first: redis-py 6 and
                    # later reconnect a command's socket without it, to the
                    # address of the master before a failover.
                    conn.connect()
                owner = self.interproc_owner
                end = owner._threads.deadline if owner is not None else None
                if end is not None or self.interproc_bounded:
                    _bound_socket(conn, None if end is None else max(end - time.monotonic(), 0.0),
                                  owner._options)
                    self.interproc_bounded = end is not None

            # Both send straight on the connection: what redis-py's
            # execute_command adds around that (a retry loop, which
            # interproc disables since a command is never resent, and
            # metrics hooks) cost a third of the client's time per command.
            # The connection drops its socket itself when sending or
            # reading fails.

            def execute_command(self, *args: Any, **options: Any) -> Any:
                conn = self.connection
                if conn is None:
                    return super().execute_command(*args, **options)
                self._ready(conn)
                try:
                    conn.send_command(*args, **options)
                    return self.parse_response(conn, args[0], **options)
                finally:
                    if reconnects and conn.should_reconnect():
                        # A server that announced maintenance (RESP3).
                        conn.disconnect()

            def interproc_script(self, args: Tuple[Any, ...]) -> Any:
                """The reply to ``EVALSHA``/``EVAL`` with ``args`` (the
                command's name as bytes first), which redis-py does not
                parse further; packed by hiredis when it can."""
                conn = self.connection
                if conn is None:  # closed meanwhile by another thread
                    return super().execute_command(*args)
                self._ready(conn)
                try:
                    try:
                        packed = [pack(args)]
                    except TypeError:
                        # What hiredis does not take (a memoryview), or
                        # refuses (None, a bool: redis-py's DataError).
                        packed = conn.pack_command(*args)
                    conn.send_packed_command(packed)
                    return conn.read_response()
                finally:
                    if reconnects and conn.should_reconnect():
                        conn.disconnect()

        _ThreadClient = ThreadClient
    return _ThreadClient


class Connection:
    """The way to one Redis server or cluster, for one process (see the module docstring)."""

    def __init__(self, options: Dict[str, Any]):
        # Use from_url/from_options, which share one object per process.
        self._options = dict(options)
        self.url: str = options["url"]
        self.address: str = url_address(self.url)
        self._cluster: Optional[bool] = options.get("cluster")
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._client: Any = None
        self._threads = _ThreadState()
        self._scripts: Dict[str, Script] = {}
        self._node_pools: Dict[str, Any] = {}
        self._pool_clients: Dict[str, Tuple[Any, Any]] = {}  # address -> (pool, client)
        self._slots_stale = False
        self._tls_checked = False
        self._sentinel_obj: Any = None
        self._sentinel_address: Optional[str] = None
        self._answered = False  # set by the first INFO or PING that got a reply
        self._replicas: int = options.get("replicas", 0)
        self._replica_timeout: float = options.get("replica_timeout", DEFAULT_REPLICA_TIMEOUT)

    # -- construction

    @classmethod
    def from_url(
        cls,
        url: str,
        username: Optional[str] = None,
        password: Optional[str] = None,
        *,
        cluster: Optional[bool] = None,
        replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        **redis_kwargs: Any,
    ) -> "Connection":
        clean, url_user, url_password = split_url(url)
        if cluster is not None and not isinstance(cluster, bool):
            raise TypeError(f"cluster must be None, True or False, not {cluster!r}")
        if redis_kwargs.pop("decode_responses", False):
            raise ValueError("decode_responses=True is not supported: the Redis backend reads bytes")
        for k in ("url", "host", "port", "path", "unix_socket_path", "connection_pool"):
            if k in redis_kwargs:
                raise TypeError(f"{k}= cannot be combined with a URL; put it into the URL")
        options: Dict[str, Any] = {
            "url": clean,
            "username": username if username is not None else url_user,
            "password": password if password is not None else url_password,
            "cluster": cluster,
        }
        options.update(redis_kwargs)
        options["replicas"], options["replica_timeout"] = replicas, replica_timeout
        return cls.from_options(options)

    @classmethod
    def from_client(cls, client: Any, *, replicas: int = 0,
                    replica_timeout: float = DEFAULT_REPLICA_TIMEOUT) -> "Connection":
        redis = import_redis()
        from redis.sentinel import SentinelConnectionPool

        if isinstance(client, redis.cluster.RedisCluster):
            node = client.get_default_node()
            kwargs = dict(client.nodes_manager.connection_kwargs)
            kwargs.setdefault("host", node.host)
            kwargs.setdefault("port", node.port)
            cluster: Optional[bool] = True
            pool = None
        else:
            pool = client if isinstance(client, redis.ConnectionPool) else getattr(
                client, "connection_pool", None)
            if pool is None:
                raise TypeError(f"not a redis-py client or connection pool: {type(client).__name__}")
            kwargs = dict(pool.connection_kwargs)
            cluster = False
        if kwargs.get("credential_provider") is not None:
            raise TypeError("a redis-py client with a credential_provider cannot be used: its "
                            "credentials could not be handed to child processes; pass "
                            "username= and password= instead")
        tls = (bool(kwargs.get("ssl")) or "SSL" in getattr(
            getattr(pool, "connection_class", None), "__name__", ""))
        options: Dict[str, Any] = {k: kwargs[k] for k in _CLIENT_OPTIONS
                                   if kwargs.get(k) is not None}
        if not tls:
            options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
        username, password = options.pop("username", None), options.pop("password", None)
        db = int(kwargs.get("db") or 0)
        if isinstance(pool, SentinelConnectionPool):
            hosts = ",".join(f"{s.connection_pool.connection_kwargs['host']}:"
                             f"{s.connection_pool.connection_kwargs['port']}"
                             for s in pool.sentinel_manager.sentinels)
            scheme = "rediss+sentinel" if tls else "redis+sentinel"
            url = f"{scheme}://{hosts}/{urllib.parse.quote(pool.service_name, safe='')}/{db}"
        elif kwargs.get("path"):
            url = f"unix://{kwargs['path']}?db={db}"
        else:
            host = kwargs.get("host") or "localhost"
            host = f"[{host}]" if ":" in host else host
            url = f"{'rediss' if tls else 'redis'}://{host}:{kwargs.get('port') or 6379}/{db}"
        return cls.from_url(url, username, password, cluster=cluster, replicas=replicas,
                            replica_timeout=replica_timeout, **options)

    @classmethod
    def from_options(cls, options: Dict[str, Any]) -> "Connection":
        if "url" not in options:
            raise TypeError("connection options need a 'url'")
        options = dict(options)
        replicas, timeout = check_replicas(options.pop("replicas", 0),
                                           options.pop("replica_timeout", DEFAULT_REPLICA_TIMEOUT))
        if replicas:
            # Only then: a connection without replicas has the options (and
            # is the cached object) it had before the setting existed.
            options["replicas"], options["replica_timeout"] = replicas, timeout
        key = (os.getpid(), _freeze(options))
        with _cache_lock:
            conn = _cache.get(key)
            if conn is None:
                conn = _cache[key] = cls(options)
            return conn

    @property
    def options(self) -> Dict[str, Any]:
        """Picklable options; ``Connection.from_options`` makes the same connection."""
        opts = dict(self._options)
        if opts.get("cluster") is None and self._cluster is not None:
            opts["cluster"] = self._cluster  # spare the receiver the question
        return opts

    def __reduce__(self):
        return (Connection.from_options, (self.options,))

    def __repr__(self) -> str:
        kind = " cluster" if self._cluster else ""
        return f"<interproc Redis{kind} connection {self.url}>"

    # -- clients

    def _check_pid(self) -> None:
        # Inherited through fork: the parent's sockets stay the parent's.
        # redis-py only shuts a socket down in the process that opened it, so
        # dropping the references here does not disturb the parent.
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._client = None
            self._threads = _ThreadState()
            self._node_pools = {}
            self._pool_clients = {}
            self._sentinel_obj = None

    @property
    def client(self) -> Any:
        self._check_pid()
        c = self._threads.client
        if c is None:
            c = self._thread_client()
        return c

    def _thread_client(self) -> Any:
        # Each thread has a client of its own that keeps one connection of
        # the shared pool for itself (redis-py's single_connection_client),
        # which spares every command taking a connection from the pool and
        # giving it back.  The connection returns to the pool when the
        # thread's client is dropped (the thread ended, or close()).  A
        # cluster client has no such mode: the shared one serves every thread.
        shared = self._shared_client()
        if self._cluster:
            c = shared
        else:
            c = _thread_client_class()(connection_pool=shared.connection_pool,
                                       single_connection_client=True)
            c.interproc_owner = self
        self._threads.client = c
        return c

    def _shared_client(self) -> Any:
        self._check_pid()
        c = self._client
        if c is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
                c = self._client
        return c

    @property
    def replicas(self) -> int:
        """How many replicas must acknowledge a write (0: none are waited for)."""
        return self._replicas

    @property
    def replica_timeout(self) -> float:
        """How long a write waits for them, in seconds."""
        return self._replica_timeout

    @property
    def is_cluster(self) -> bool:
        if self._cluster is None:
            self._shared_client()  # asks the server
        return bool(self._cluster)

    def _client_kwargs(self, **override: Any) -> Dict[str, Any]:
        kw = {k: v for k, v in self._options.items()
              if k not in ("url", "cluster", "replicas", "replica_timeout")}
        if kw.get("username") is None:
            kw.pop("username", None)
        if kw.get("password") is None:
            kw.pop("password", None)
        if "retry" not in kw:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kw["retry"] = Retry(NoBackoff(), 0)
        kw.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        kw.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        kw["decode_responses"] = False
        kw.update(override)
        return kw

    def _make_client(self, **override: Any) -> Any:
        redis = import_redis()
        kw = self._client_kwargs(**override)
        with errors(self, "connecting"):
            if self.is_sentinel:
                self._cluster = False  # Sentinel serves single servers only
                return self._sentinel().master_for(self._sentinel_service()[0], **kw)
            if self._cluster is None:
                plain = redis.Redis.from_url(self.url, **kw)
                try:
                    info = plain.info("cluster")
                except redis.exceptions.NoPermissionError:
                    info = {}  # INFO not allowed: assume a single server
                self._answered = True
                self._cluster = bool(int(info.get("cluster_enabled", 0) or 0))
                if not self._cluster:
                    return plain
                plain.close()
            if not self._cluster:
                return redis.Redis.from_url(self.url, **kw)
            if self.url.startswith("unix:"):
                raise ValueError(f"{self.url}: Redis Cluster needs a redis:// or rediss:// URL")
            parts = urllib.parse.urlsplit(self.url)
            dbs = {parts.path.strip("/") or "0", str(kw.get("db", 0))}
            dbs.update(v for k, v in urllib.parse.parse_qsl(parts.query) if k == "db")
            if dbs != {"0"}:
                raise ValueError(f"{self.url}: a Redis Cluster has only database 0")
            cluster = redis.cluster.RedisCluster.from_url(self.url, **kw)
            # redis-py 5 retries a cluster command after a connection error
            # this many times, whatever ``retry`` says; later versions read
            # ``retry`` (given above) and ignore this attribute.
            cluster.cluster_error_retry_attempts = 0
            return cluster


    @contextlib.contextmanager
    def deadline(self, end: Optional[float]):
        """Within the block, this thread's commands on ``client`` wait for a
        reply until ``end`` (``time.monotonic()``) plus ``BLOCK_MARGIN`` at
        most, rather than the socket timeout; None changes nothing.  (A
        Cluster's shared client keeps its socket timeout.)"""
        self._check_pid()
        before = self._threads.deadline
        self._threads.deadline = end
        try:
            yield
        finally:
            self._threads.deadline = before

    # -- Sentinel

    @property
    def is_sentinel(self) -> bool:
        return self.url.split(":", 1)[0] in SENTINEL_SCHEMES

    def _sentinel_service(self) -> Tuple[str, int]:
        _, service, db = sentinel_parts(self.url)
        return service, db

    def _sentinel(self) -> Any:
        """The redis-py Sentinel of this process (made once)."""
        s = self._sentinel_obj
        if s is None:
            redis = import_redis()
            from redis.sentinel import Sentinel

            hosts, sentinel_kw, kw = self.sentinel_arguments(self._client_kwargs())
            s = self._sentinel_obj = Sentinel(hosts, sentinel_kwargs=sentinel_kw, **kw)
            del redis
        return s

    def sentinel_arguments(self, kw: Dict[str, Any]) -> Tuple[List[Tuple[str, int]], Dict[str, Any],
                                                              Dict[str, Any]]:
        """``(sentinels, sentinel_kwargs, connection kwargs)`` for a redis-py
        Sentinel (blocking or asyncio) of this connection, from the master's
        client kwargs ``kw``: the Sentinels themselves are asked plainly,
        without the master's credentials, and the master is spoken to over
        TLS for ``rediss+sentinel://``."""
        hosts, _, _ = sentinel_parts(self.url)
        kw = dict(kw)
        sentinel_kw = {k: v for k, v in kw.items() if k.startswith("socket_")}
        sentinel_kw["retry"] = kw["retry"]
        kw["ssl"] = self.url.startswith("rediss+")
        return hosts, sentinel_kw, kw

    def _sentinel_master(self) -> str:
        """``host:port`` of the master the Sentinels name now."""
        with errors(self, "asking the Sentinels for the master"):
            host, port = self._sentinel().discover_master(self._sentinel_service()[0])
        return f"{host}:{port}"

    # -- bounded calls (see "Bounded calls" in the module docstring)

    def bounded(self, key: str, seconds: Optional[float], build: Callable[[Any], None],
                caller_deadline: bool = True, acks: str = ACKS_NONE) -> List[Any]:
        """Send what ``build(pipe)`` adds to a plain pipeline, once, and
        return the replies (error replies as exception objects, for the
        caller to judge).  ``seconds``: how long the server may take (a
        blocking command's own timeout, or the caller's remaining time);
        None keeps the connection's socket timeout.  ``caller_deadline``:
        the caller has a deadline, so the reply is awaited ``BLOCK_MARGIN``
        beyond ``seconds``; without one (a wait for ever, cut into chunks)
        it is awaited the connection's socket timeout beyond them, which
        is how long the user chose to bear a silent server.  Raises
        redis-py's exceptions, marked with the node (``failed_node``).
        ``acks``: with ``replicas``, ``WAIT`` goes last in the pipeline
        (its reply is not returned), and ``ACKS_RAISE`` raises
        ReplicationError (``result``: the replies) when too few
        acknowledged and no reply is an error."""
        wait = self._replicas > 0 and acks != ACKS_NONE
        replies, acked, node = self._bounded(key, seconds, build, caller_deadline, wait)
        if wait and acks == ACKS_RAISE:
            self._check_acked(acked, node, replies, replies)
        return replies

    def _run_acked(self, script: "Script", numkeys: int, keys_and_args: Any, acks: str) -> Any:
        """Run ``script`` and ``WAIT`` in one round trip (``Script``); its
        reply, its error reply raised."""
        # The thread's deadline (``deadline()``) bounds it as it bounds the
        # thread's client.
        end = self._threads.deadline
        seconds = None if end is None else max(end - time.monotonic(), 0.0)
        key = keys_and_args[0] if numkeys else ""

        def run(command: str, body: str) -> Tuple[List[Any], Any, str]:
            return self._bounded(key, seconds, lambda pipe: pipe.execute_command(
                command, body, numkeys, *keys_and_args), end is not None, True)

        loaded = self._pool_for(key)[0] in script._loaded
        if loaded:
            replies, acked, node = run("EVALSHA", script.sha)
        if not loaded or isinstance(replies[0], _no_script_error()):
            # Nothing ran: load it by running it in full.
            replies, acked, node = run("EVAL", script.source)
            script._loaded.add(node)
        reply = replies[0]
        if isinstance(reply, Exception):
            raise reply
        if acks == ACKS_RAISE:
            self._check_acked(acked, node, [reply], reply)
        return reply

    def _check_acked(self, acked: Any, node: str, replies: List[Any], result: Any) -> None:
        """ReplicationError if fewer than ``replicas`` acknowledged, unless
        a command failed (it did nothing, and its error says so)."""
        if isinstance(acked, int) and acked >= self._replicas:
            return
        if any(isinstance(r, Exception) for r in replies):
            return
        raise replication_error(node, acked, self._replicas, self._replica_timeout, result)

    def _bounded(self, key: str, seconds: Optional[float], build: Callable[[Any], None],
                 caller_deadline: bool, wait: bool) -> Tuple[List[Any], Any, str]:
        """``bounded()``'s work: the replies, WAIT's reply (None without
        ``wait``) and the node's ``host:port``."""
        if wait:
            # WAIT may take replica_timeout beyond what the commands take.
            if seconds is None:
                seconds, caller_deadline = self._replica_timeout, False
            else:
                seconds += self._replica_timeout
            wait_args = ("WAIT", self._replicas, max(math.ceil(self._replica_timeout * 1000), 1))
        redis = import_redis()
        redirects = Redirects(key, seconds, caller_deadline, self._options)
        reconnects = 1
        while True:
            address, pool = self._pool_for(key)
            # One client per pool: making a redis-py client builds its table
            # of reply callbacks, which costs as much as the round trip.
            cached = self._pool_clients.get(address)
            if cached is None or cached[0] is not pool:
                cached = self._pool_clients[address] = (pool, redis.Redis(connection_pool=pool))
            client = cached[1]
            pipe = client.pipeline(transaction=False)
            build(pipe)
            if wait:
                # On the connection that sent the commands: WAIT waits for
                # the replication offset of that connection's last write.
                pipe.execute_command(*wait_args)
            try:
                pipe.connection = _get_connection(pool)  # execute() gives it back
                _bound_socket(pipe.connection, seconds, self._options, caller_deadline)
                replies = pipe.execute(raise_on_error=False)
            except BaseException as exc:
                pipe.reset()
                exc.interproc_node = address  # type: ignore[attr-defined]
                if (self._cluster or self.is_sentinel) and isinstance(
                        exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                    self._slots_stale = True
                    if (reconnects and _while_connecting(exc)
                            and not isinstance(exc, redis.exceptions.TimeoutError)):
                        # Refused: nothing was sent, and the node may be gone
                        # (a failover).  A connect that timed out is not
                        # tried again: that would double the caller's wait.
                        reconnects -= 1
                        continue
                raise
            acked = replies.pop() if wait else None
            if not self._cluster:
                return replies, acked, address
            pause = redirects.pause(replies, address)
            if pause is None:
                return replies, acked, address
            self._slots_stale = True
            time.sleep(pause)

    def _pool_for(self, key: str) -> Tuple[str, Any]:
        """The connection pool of the server, or of the node serving
        ``key``'s slot, with its ``host:port``."""
        self._check_pid()
        redis = import_redis()
        if self.is_sentinel:
            # Asked again after a connection failure: a failover may have
            # named another master.
            address = self._sentinel_address
            if address is None or self._slots_stale:
                self._slots_stale = False
                address = self._sentinel_address = self._sentinel_master()
            scheme = "rediss" if self.url.startswith("rediss+") else "redis"
            url = f"{scheme}://{address}/{self._sentinel_service()[1]}"
        elif not self.is_cluster:
            address, url = self.address, self.url
        else:
            cluster = self._shared_client()
            manager = cluster.nodes_manager
            if self._slots_stale:
                self._slots_stale = False
                with errors(self, "refreshing the slot table"):
                    manager.initialize()
            with errors(self, "finding the node of a slot"):
                node = manager.get_node_from_slot(cluster.keyslot(key))
            address = f"{node.host}:{node.port}"
            scheme = urllib.parse.urlsplit(self.url).scheme
            url = f"{scheme}://{address}/0"
        pool = self._node_pools.get(address)
        if pool is None:
            with self._lock:
                pool = self._node_pools.get(address)
                if pool is None:
                    pool = self._node_pools[address] = redis.ConnectionPool.from_url(
                        url, **self._client_kwargs())
        return address, pool

    # -- helpers

    def script(self, source: str) -> Script:
        """The :class:`Script` for this Lua source (one object per source)."""
        s = self._scripts.get(source)
        if s is None:
            s = self._scripts[source] = Script(self, source)
        return s

    def errors(self, op: Optional[str] = None) -> errors:
        """``with conn.errors("Queue.put"): ...`` translates redis-py errors."""
        return errors(self, op)

    def ping(self) -> bool:
        """Round trip to the server; raises the translated error if there is none."""
        with self.errors("ping"):
            ok = bool(self.client.ping())
        self._answered = True
        return ok

    def close(self) -> None:
        """Close this process's sockets; the next use opens new ones."""
        self._check_pid()
        with self._lock:
            mine = self._threads.client
            clients = [c for c in (mine, self._client) if c is not None]
            clients += list(self._node_pools.values())  # pools close with disconnect()
            self._node_pools = {}
            self._pool_clients = {}
            self._client = None
            # Other threads' clients hold connections of the pool closed
            # below; they make new clients on their next use.
            self._threads = _ThreadState()
        for c in clients:
            try:
                c.close() if hasattr(c, "close") else c.disconnect()
            except Exception:
                pass
        from ._aio import forget_clients

        for loop, c in forget_clients(self):
            # Closed in their own loops (their sockets belong there).
            try:
                loop.call_soon_threadsafe(_close_async_client, c)
            except RuntimeError:
                pass  # that loop is closed: its sockets went with it


def _close_async_client(c: Any) -> None:
    import asyncio

    task = asyncio.ensure_future(c.aclose())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


class Redirects:
    """What the replies of a pipeline sent to the node serving ``key``'s
    slot say about sending it again, attempt after attempt (one instance
    per call): ``pause(replies, address)`` is None when they are final
    (no redirection), else the seconds to wait before sending it again to
    the node the refreshed slot table names.  Raises ConnectionLostError
    when only part of the pipeline was redirected (the rest ran), and
    UnreachableError when the slot kept moving or migrating past the
    caller's patience (nothing ran)."""

    __slots__ = ("key", "seconds", "caller_deadline", "options", "attempt", "migration_deadline")

    def __init__(self, key: str, seconds: Optional[float], caller_deadline: bool,
                 options: Dict[str, Any]) -> None:
        self.key = key
        self.seconds = seconds
        self.caller_deadline = caller_deadline
        self.options = options
        self.attempt = 0
        self.migration_deadline: Optional[float] = None

    def pause(self, replies: List[Any], address: str) -> Optional[float]:
        redis = import_redis()
        moved = [r for r in replies if _redirection(r, (
            redis.exceptions.MovedError, redis.exceptions.AskError,
            redis.exceptions.TryAgainError))]
        if not moved:
            return None
        if len(moved) < len(replies):
            raise ConnectionLostError(
                f"the slot of {self.key!r} moved to another Redis Cluster node while "
                f"{address} ran part of a pipeline; it may or may not have taken "
                f"effect ({moved[0]})")
        if all(_slot_migrating(r) for r in moved):
            if self.migration_deadline is None:
                patience = (self.seconds if self.caller_deadline and self.seconds is not None
                            else _migration_patience(self.options))
                self.migration_deadline = time.monotonic() + patience
            if time.monotonic() < self.migration_deadline:
                return MIGRATION_RETRY_INTERVAL
            self.attempt = REDIRECT_ATTEMPTS
        self.attempt += 1
        if self.attempt >= REDIRECT_ATTEMPTS:
            exc = moved[0]
            exc.interproc_node = address  # type: ignore[attr-defined]
            raise UnreachableError(
                f"Redis Cluster node {address} kept redirecting or refusing the slot of "
                f"{self.key!r}: it is being migrated between nodes (while it is, Redis refuses "
                "a command on several keys of the slot), or the cluster is being "
                f"reconfigured; nothing ran ({exc})") from exc
        return 0.0


def _slot_migrating(exc: Any) -> bool:
    """Whether an error (raised, or a pipeline's reply) says that the
    command's slot is being migrated (ASK, TRYAGAIN; redis-py 5 parses them
    into their classes only on its cluster connections), or that redis-py's
    cluster client gave up on a command its slot's nodes kept redirecting
    or refusing: nothing ran."""
    rexc = sys.modules.get("redis.exceptions")
    if rexc is None or not isinstance(exc, Exception):
        return False
    if isinstance(exc, rexc.MovedError):  # redis-py derives it from AskError
        return False
    return (isinstance(exc, (rexc.TryAgainError, rexc.AskError))
            or (isinstance(exc, rexc.ClusterError) and "TTL exhausted" in str(exc))
            or str(exc).startswith(("ASK ", "TRYAGAIN")))


def _migration_patience(options: Dict[str, Any]) -> float:
    """How long an operation waits for its slot's migration to end, when
    the caller gave no time: the socket timeout."""
    return _own_socket_timeout(options) or DEFAULT_SOCKET_TIMEOUT


def _redirection(reply: Any, classes: tuple) -> bool:
    """Whether a pipeline reply is a redirection (nothing ran).  redis-py 5
    parses MOVED, ASK and TRYAGAIN into their classes only on its cluster
    connections, so the reply's text is read too."""
    if isinstance(reply, classes):
        return True
    return isinstance(reply, Exception) and str(reply).startswith(("MOVED ", "ASK ", "TRYAGAIN"))


def _get_connection(pool: Any) -> Any:
    # redis-py 5 wants a command name here; later versions warn about one.
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("_")


def _own_socket_timeout(options: Dict[str, Any]) -> Optional[float]:
    # None when the caller asked for no timeout at all.
    return options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)


def _bound_socket(conn: Any, seconds: Optional[float], options: Dict[str, Any],
                  caller_deadline: bool = True) -> None:
    """Give a pooled connection the socket timeout of a call in which the
    server may take ``seconds`` (None: the connection's own); see
    ``Connection.bounded`` for ``caller_deadline``."""
    own = _own_socket_timeout(options)
    if seconds is None:
        timeout = own
        connect = options.get("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    else:
        margin = BLOCK_MARGIN if caller_deadline or own is None else max(own, BLOCK_MARGIN)
        timeout = max(seconds, 0.0) + margin
        connect = min(options.get("socket_connect_timeout") or DEFAULT_CONNECT_TIMEOUT, timeout)
    conn.socket_connect_timeout = connect
    conn.socket_timeout = timeout
    # Always, even when the value looks unchanged: redis-py's parsers put
    # back the timeout the socket had when it connected after each health
    # check (pool.get_connection does one), and the parser's copy too.
    parser = getattr(conn, "_parser", None)
    if parser is not None and hasattr(parser, "_socket_timeout"):
        parser._socket_timeout = timeout
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        sock.settimeout(timeout)
