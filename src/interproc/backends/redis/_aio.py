"""Awaiting Redis from an event loop: the awaitable forms' client and drivers.

The awaitable methods (``get_async``, ``acquire_async``, ``wait_async``...)
send the same Lua scripts and blocking commands as the blocking ones, with
the same arguments and reply handling (the objects build each call and read
each reply in methods both forms share; ``WaitingObject._wait_steps`` is the
one wait loop, which a blocking and an awaiting driver both run), through
redis-py's asyncio client instead of the thread's own:

- **One client per connection and event loop** (:func:`client`), made on
  first use in that loop: its own connection pool, so commands of one loop
  never wait for another's.  It is closed when the loop shuts down
  (``asyncio.run`` and ``asyncio.Runner`` close async generators then, and
  one of them closes it), forgotten when the loop is closed (at the next
  use of the connection from any loop) or garbage-collected, closed by
  ``Connection.close()``, and never used after a fork.
  Standalone servers (``redis://``, ``rediss://`` with the connection's
  TLS options, ``unix://``), a master watched by Sentinel (redis-py's
  ``redis.asyncio.sentinel``: each new connection asks the Sentinels for
  the master, so one dropped by a failover is replaced by one to the
  master they name then) and Redis Cluster (``redis.asyncio.RedisCluster``)
  are served.
- **Replicas** (``replicas=N``): a script, or a pipeline, whose ``acks``
  is not ``ACKS_NONE`` is sent with ``WAIT`` after it in one pipeline, on
  one connection, and its acknowledgements are judged as the blocking
  form's (``Connection._check_acked``: ReplicationError for
  ``ACKS_RAISE``).  On a Redis Cluster that connection is one to the
  node serving the key's slot, from a plain client per node
  (``redis.asyncio.RedisCluster``'s pipelines spread their commands over
  nodes, so a ``WAIT`` among them would answer for another connection's
  writes); a redirected pipeline is sent again as the blocking form's is
  (``client.Redirects``).
- **Bounded waits**: the client has no socket timeout of its own; each
  command's reply is awaited for as long as the blocking form's would be
  (``Connection.bounded``: its wait plus ``client.BLOCK_MARGIN``, or the
  socket timeout), after which it fails with ServerTimeoutError.
- **Cancellation**: a script that changes the object is never abandoned
  half-way: :func:`settle` lets it finish (one round trip; it never
  blocks in the server) and reports the cancellation afterwards, so that
  the caller can undo or account for what it did.  A blocking command
  (``BLPOP`` on a wake key, a queue's ``BLMOVE``) is abandoned: redis-py
  drops its connection, the server then ends it, and the caller cleans up
  (forgets its registration and passes a wake-up on; puts back what a
  take may have moved).
- **Close**: ``close()`` on a handle cancels its awaiting calls in every
  loop (:func:`watch`), which then clean up as above and raise ValueError.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import weakref
from typing import Any, Awaitable, Callable, List, Optional, Sequence, Tuple

from . import client as _client

__all__ = ["client", "settle", "bounded", "script", "pipeline", "watch", "task_token",
           "held_by_a_task_of"]

_task_tokens: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def task_token(create: bool = True) -> Optional[str]:
    """Who the running asyncio task is, for lock ownership (as
    ``_base.thread_token`` is for a thread): random, made on first use
    (``create``); None outside a task."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None
    if task is None:
        return None
    tok = _task_tokens.get(task)
    if tok is None and create:
        tok = _task_tokens[task] = f"{os.getpid()}:task:{secrets.token_hex(8)}"
    return tok


def held_by_a_task_of(loop: Any, key: str, claims: Callable[[str, str], bool]) -> bool:
    """Whether a live task of ``loop`` holds the lock whose owner key is
    ``key`` (``claims(key, token)``: as ``synchronize.claims_lock``)."""
    for task, tok in list(_task_tokens.items()):
        if not task.done() and task.get_loop() is loop and claims(key, tok):
            return True
    return False


def client(conn: Any) -> Any:
    """The asyncio client of ``conn`` in the running loop (made on first use)."""
    loop = asyncio.get_running_loop()
    conn._check_pid()
    per_loop = conn.__dict__.get("_aio_clients")
    if per_loop is None or per_loop[0] != os.getpid():
        per_loop = conn._aio_clients = (os.getpid(), weakref.WeakKeyDictionary())
    clients = per_loop[1]
    made = clients.get(loop)
    if made is None:
        for other in [lp for lp in list(clients) if lp.is_closed()]:
            clients.pop(other, None)  # its sockets went with the closed loop
        c = _make_client(conn)
        # An async generator that the loop closes when it shuts down
        # (``asyncio.run`` and ``Runner`` call ``shutdown_asyncgens``), and
        # that closes the client then: run to its yield, it is registered
        # with the running loop.
        closer = _close_with_loop(c)
        try:
            closer.__anext__().send(None)
        except StopIteration:
            pass
        made = clients[loop] = (c, closer)
    return made[0]


async def _close_with_loop(c: Any) -> Any:
    try:
        yield
    finally:
        await c.aclose()


def forget_clients(conn: Any) -> List[Tuple[Any, Any]]:
    """Drop every asyncio client of ``conn``; (loop, client) pairs, for
    closing in their loops (``Connection.close``)."""
    per_loop = conn.__dict__.pop("_aio_clients", None)
    if per_loop is None or per_loop[0] != os.getpid():
        return []
    return [(loop, made[0]) for loop, made in list(per_loop[1].items())]


def _make_client(conn: Any) -> Any:
    _client.import_redis()
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kw = conn._client_kwargs(retry=Retry(NoBackoff(), 0), socket_timeout=None)
    if conn.is_sentinel:
        from redis.asyncio.sentinel import Sentinel

        hosts, sentinel_kw, kw = conn.sentinel_arguments(kw)
        # The Sentinels' answers are awaited the connection's socket timeout.
        sentinel_kw["socket_timeout"] = conn._client_kwargs()["socket_timeout"]
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kw, **kw)
        return sentinel.master_for(conn._sentinel_service()[0], redis_class=_sentinel_master_class(),
                                   **kw)
    cluster = conn._cluster if conn._cluster is not None else conn.is_cluster
    if cluster:
        kw.pop("db", None)
        return _cluster_class().from_url(conn.url, **kw)
    return aredis.Redis.from_url(conn.url, **kw)


_SentinelMaster: Any = None


def _sentinel_master_class() -> type:
    """``redis.asyncio.Redis`` whose ``aclose()`` also closes the clients of
    the Sentinels it asks (made by ``master_for``)."""
    global _SentinelMaster
    if _SentinelMaster is None:
        import redis.asyncio as aredis

        class SentinelMaster(aredis.Redis):
            async def aclose(self, close_connection_pool: Optional[bool] = None) -> None:
                """Close the master's connections, then the Sentinels'."""
                await super().aclose(close_connection_pool)
                manager = getattr(self.connection_pool, "sentinel_manager", None)
                for s in getattr(manager, "sentinels", ()):
                    with contextlib.suppress(Exception):
                        await s.aclose()

        _SentinelMaster = SentinelMaster
    return _SentinelMaster


_Cluster: Any = None


def _cluster_class() -> type:
    """``redis.asyncio.RedisCluster`` that also keeps a plain client per
    node, for a pipeline that must stay on one connection (``WAIT``), and
    closes them with itself."""
    global _Cluster
    if _Cluster is None:
        import redis.asyncio as aredis

        class Cluster(aredis.RedisCluster):
            node_clients: Optional[dict] = None
            slots_stale = False

            async def node_client(self, conn: Any, key: str) -> Tuple[str, Any]:
                """The ``host:port`` of the node serving ``key``'s slot,
                and a plain client of that node (made on first use)."""
                if self.slots_stale:
                    self.slots_stale = False
                    await self.nodes_manager.initialize()
                else:
                    await self.initialize()
                node = self.get_node_from_key(key)
                address = f"{node.host}:{node.port}"
                clients = self.node_clients
                if clients is None:
                    clients = self.node_clients = {}
                made = clients.get(address)
                if made is None:
                    from redis.asyncio.retry import Retry
                    from redis.backoff import NoBackoff

                    kw = conn._client_kwargs(retry=Retry(NoBackoff(), 0), socket_timeout=None)
                    kw.pop("db", None)
                    scheme = "rediss" if conn.url.startswith("rediss") else "redis"
                    made = clients[address] = aredis.Redis.from_url(
                        f"{scheme}://{address}/0", **kw)
                return address, made

            async def aclose(self, *args: Any, **kwargs: Any) -> None:
                """Close the cluster's connections, then the nodes' clients."""
                await super().aclose(*args, **kwargs)
                for c in list((self.node_clients or {}).values()):
                    with contextlib.suppress(Exception):
                        await c.aclose()
                self.node_clients = None

        _Cluster = Cluster
    return _Cluster


def _limit(conn: Any, seconds: Optional[float], caller_deadline: bool) -> Optional[float]:
    """How long a reply is awaited (``client._bound_socket``'s reading)."""
    own = _client._own_socket_timeout(conn._options)
    if seconds is None:
        return own
    margin = (_client.BLOCK_MARGIN if caller_deadline or own is None
              else max(own, _client.BLOCK_MARGIN))
    return max(seconds, 0.0) + margin


async def bounded(conn: Any, aw: Awaitable[Any], seconds: Optional[float],
                  caller_deadline: bool = True) -> Any:
    """Await a redis-py call whose server side may take ``seconds``; redis-py's
    TimeoutError (ServerTimeoutError once translated) if no reply came within
    the time ``Connection.bounded`` would allow."""
    limit = _limit(conn, seconds, caller_deadline)
    if limit is None:
        return await aw
    try:
        async with asyncio.timeout(limit):
            return await aw
    except TimeoutError:
        raise _client.import_redis().exceptions.TimeoutError(
            f"no reply within {limit:g} s") from None


async def script(conn: Any, aclient: Any, source: str, keys: Sequence[Any],
                 args: Sequence[Any], seconds: Optional[float] = None,
                 acks: Optional[str] = None) -> Any:
    """Run a Lua script (EVALSHA, then EVAL if the server lacks it) on the
    asyncio client, its reply awaited as ``bounded`` says; untranslated errors.
    With ``replicas``, a script whose ``acks`` (the call's, or its source's)
    is not ``ACKS_NONE`` is followed by ``WAIT`` (``Script``'s reading)."""
    s = conn.script(source)
    n = len(keys)
    acks = acks or s.acks
    if conn.replicas and acks != _client.ACKS_NONE:
        return await _acked_script(conn, aclient, s, keys, args, seconds, acks)
    try:
        return await bounded(conn, aclient.evalsha(s.sha, n, *keys, *args), seconds)
    except Exception as exc:
        if not isinstance(exc, _client._no_script_error()):
            raise
    return await bounded(conn, aclient.eval(s.source, n, *keys, *args), seconds)


async def _acked_script(conn: Any, aclient: Any, s: Any, keys: Sequence[Any],
                        args: Sequence[Any], seconds: Optional[float], acks: str) -> Any:
    """``script`` and ``WAIT`` in one pipeline (``Connection._run_acked``)."""
    n = len(keys)
    for command, body in (("EVALSHA", s.sha), ("EVAL", s.source)):
        replies, acked, node = await _pipeline_acked(
            conn, aclient, keys[0] if n else "",
            lambda pipe: pipe.execute_command(command, body, n, *keys, *args),
            seconds, seconds is not None, True)
        if not isinstance(replies[0], _client._no_script_error()):
            break  # EVAL only when the server lacked it: nothing ran then
    reply = replies[0]
    if isinstance(reply, Exception):
        raise reply
    if acks == _client.ACKS_RAISE:
        conn._check_acked(acked, node, [reply], reply)
    return reply


async def pipeline(conn: Any, aclient: Any, key: str, build: Callable[[Any], None],
                   seconds: Optional[float], caller_deadline: bool,
                   acks: str = _client.ACKS_NONE) -> List[Any]:
    """What ``build(pipe)`` adds to a plain pipeline on ``key``'s slot, sent
    once; the replies, error replies as exception objects
    (``Connection.bounded``'s reading, ``acks`` included: with
    ``replicas``, ``WAIT`` goes last, and ``ACKS_RAISE`` raises
    ReplicationError when too few acknowledged)."""
    wait = bool(conn.replicas) and acks != _client.ACKS_NONE
    replies, acked, node = await _pipeline_acked(conn, aclient, key, build, seconds,
                                                 caller_deadline, wait)
    if wait and acks == _client.ACKS_RAISE:
        conn._check_acked(acked, node, replies, replies)
    return replies


async def _pipeline_acked(conn: Any, aclient: Any, key: str, build: Callable[[Any], None],
                          seconds: Optional[float], caller_deadline: bool,
                          wait: bool) -> Tuple[List[Any], Any, str]:
    """``pipeline``'s work: the replies, WAIT's reply (None without
    ``wait``) and the ``host:port`` of the server that answered."""
    if wait:
        # On the pipeline's one connection: WAIT answers for its writes.
        timeout = conn.replica_timeout
        wait_args = ("WAIT", conn.replicas, max(math.ceil(timeout * 1000), 1))
        if seconds is None:
            seconds, caller_deadline = timeout, False
        else:
            seconds += timeout
    if not (wait and isinstance(aclient, _cluster_class())):
        pipe = aclient.pipeline(transaction=False)
        build(pipe)
        if wait:
            pipe.execute_command(*wait_args)
        replies = await bounded(conn, pipe.execute(raise_on_error=False), seconds,
                                caller_deadline)
        return replies, (replies.pop() if wait else None), _client.url_address(conn.url)
    # A cluster's pipeline may use a connection per command: this one goes
    # to the slot's node, on one connection of its own.
    redirects = _client.Redirects(key, seconds, caller_deadline, conn._options)
    rexc = _client.import_redis().exceptions
    reconnects = 1
    while True:
        address, node = await aclient.node_client(conn, key)
        pipe = node.pipeline(transaction=False)
        build(pipe)
        pipe.execute_command(*wait_args)
        try:
            replies = await bounded(conn, pipe.execute(raise_on_error=False), seconds,
                                    caller_deadline)
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            exc.interproc_node = address  # type: ignore[attr-defined]
            aclient.slots_stale = True  # the node may be gone (a failover)
            if (reconnects and _client._while_connecting(exc)
                    and not isinstance(exc, rexc.TimeoutError)):
                reconnects -= 1  # refused: nothing was sent (as client._bounded)
                continue
            raise
        acked = replies.pop()
        pause = redirects.pause(replies, address)
        if pause is None:
            return replies, acked, address
        aclient.slots_stale = True
        await asyncio.sleep(pause)


async def settle(aw: Awaitable[Any]) -> Tuple[Any, Optional[BaseException], bool]:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile:
    ``(result, exception, cancelled)``; the caller re-raises the
    cancellation (``asyncio.CancelledError``) once it has dealt with the
    result."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            return result, None, cancelled
        except asyncio.CancelledError:
            if task.done():
                if task.cancelled():
                    return None, asyncio.CancelledError(), True
                exc = task.exception()
                # Finished as the cancellation came: its outcome is known.
                return (task.result() if exc is None else None), exc, True
            cancelled = True
        except BaseException as exc:
            return None, exc, cancelled


class watch:
    """``with watch(obj):`` around an awaitable method: ``close()`` on the
    handle cancels it (``closed_by_handle()``), and an error raised in the
    block is translated as the blocking form's would be."""

    __slots__ = ("obj", "task", "loop", "closing", "active")

    def __init__(self, obj: Any) -> None:
        obj._check()
        self.obj = obj
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.active = False

    def __enter__(self) -> "watch":
        waiters = self.obj.__dict__.get("_aio_waiters")
        if waiters is None:
            waiters = self.obj._aio_waiters = set()
        waiters.add(self)
        self.active = True
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        self.active = False
        self.obj._aio_waiters.discard(self)
        if ev is None:
            return False
        if self.closing and isinstance(ev, asyncio.CancelledError):
            if self.task is not None and hasattr(self.task, "uncancel"):
                self.task.uncancel()
            self.obj._check()  # ValueError: closed
        if isinstance(ev, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            return False
        if is_gone_or_redis(ev):
            self.obj._raise(ev)
        return False

    def cancel(self) -> None:
        """Called by ``close()``, from any thread."""
        self.closing = True
        if self.task is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        # In the loop: only a call still awaiting is cancelled (one that
        # ended meanwhile has nothing left to end).
        if self.active:
            self.task.cancel()


def is_gone_or_redis(exc: BaseException) -> bool:
    """Whether ``exc`` is one that ``RedisObject._raise`` translates."""
    from ._base import is_gone

    if is_gone(exc):
        return True
    rexc = _client.import_redis().exceptions
    return isinstance(exc, (rexc.RedisError, rexc.RedisClusterException))


def close_waiters(obj: Any) -> None:
    """End the awaiting calls of a handle being closed (ValueError)."""
    for w in list(obj.__dict__.get("_aio_waiters", ())):
        w.cancel()
