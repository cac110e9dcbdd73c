"""The Redis backend: interproc's queue and dict on a Redis server against the
same operations written by hand with redis-py, and batched queue operations
against single ones.

Each case runs on a throw-away ``redis-server`` that it starts on a free
port of 127.0.0.1 (``interproc.backends.redis.local_server``) and stops
once its trials are done, or on the server given with ``--redis-url``.
Every contender talks to it over TCP, the usual deployment.

Each trial runs in one forked child that makes its own connection, its own
object (an anonymous object of a fresh ``interproc.Manager(url)``, or a key
of its own for redis-py) and removes it afterwards, so a server given with
``--redis-url`` is left as it was.  One operation of each kind runs before
the clock starts: it opens the connection and, for interproc, loads the
Lua scripts into the server.

The redis-py loops are what a program would write by hand for the same
job, with the same values pickled the same way (``pickle.dumps`` with
interproc's protocol, ``pickle.loads``) and one round trip per operation:
``RPUSH`` then ``BLPOP`` for the queue, ``HSET``/``HGET`` with pickled keys
and values for the dict.  What interproc adds on top (a processing list
per consumer so that no item is lost with a connection, task counting,
a lock check and insertion order for the dict) is what the ratio measures.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import secrets
import shutil
import subprocess
import tempfile
import time
from typing import Any, Iterator

from . import adapters
from .runner import Sample, Settings, TrialError, run_processes
from .throughput import OBJECT

__all__ = [
    "BATCH", "INSTALL_HINT", "describe", "dict_set_get", "queue_batches", "queue_put_get",
    "server",
]

#: Items per put_many/get_many in the batch case.
BATCH = 100
#: The pickle protocol of interproc's codec (codec.PICKLE_PROTOCOL), used by
#: the redis-py loops too, so that both pickle the same bytes.
PICKLE_PROTOCOL = 5

INSTALL_HINT = (
    "redis-server not found: install Redis (Debian/Ubuntu: apt-get install redis-server), "
    "or give a server with --redis-url"
)


class InterprocRedisAdapter(adapters.Implementation):
    key = "interproc_redis"
    label = "interproc Manager(url)"
    module = "interproc.backends.redis"

    def load(self) -> None:
        import redis  # noqa: F401  (the backend needs redis-py)

        from interproc.backends.redis import containers, queues  # noqa: F401


class RedisPyAdapter(adapters.Implementation):
    key = "redis_py"
    label = "redis-py"
    module = "redis"

    def load(self) -> None:
        import redis  # noqa: F401


for _cls in (InterprocRedisAdapter, RedisPyAdapter):
    adapters.register(_cls)


# --- the server -----------------------------------------------------------------------------

@contextlib.contextmanager
def server(settings: Settings) -> Iterator[Settings]:
    """``settings`` with the URL of the server to use: the one given with
    ``--redis-url``, or a new ``redis-server`` on loopback, stopped (and its
    directory removed) on exit.

    Raises `adapters.Unavailable` when there is no server to use, and
    `TrialError` when one does not start or answer.
    """
    if settings.redis_url:
        _ping(settings.redis_url)
        yield settings
        return
    from interproc.backends.redis import local_server

    if local_server.missing_binaries():
        raise adapters.Unavailable(INSTALL_HINT)
    workdir = tempfile.mkdtemp(prefix="interproc-bench-redis-")
    try:
        local = local_server.RedisServer(workdir)
        try:
            local.start()
        except RuntimeError as exc:
            raise TrialError(str(exc)) from None
        try:
            yield dataclasses.replace(settings, redis_url=local.url)
        finally:
            local.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ping(url: str) -> None:
    try:
        import redis
    except ImportError as exc:
        raise adapters.Unavailable(f"redis-py: {exc}") from None
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise TrialError(f"the server at --redis-url does not answer: "
                         f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()


def describe(settings: Settings) -> str:
    """One line for the report: which server, which redis-py."""
    try:
        import redis

        client_version = f"redis-py {redis.__version__}"
    except ImportError:
        client_version = "redis-py not installed"
    if settings.redis_url:
        where = "the server given with --redis-url"
    else:
        try:
            out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.split()
            version = next((w[2:] for w in out if w.startswith("v=")), "unknown version")
            where = f"a local redis-server {version} per case, over TCP on 127.0.0.1"
        except (OSError, subprocess.SubprocessError):
            where = "a local redis-server per case (not found)"
    return f"Redis cases: {where}; {client_version}"


# --- trials ---------------------------------------------------------------------------------

def _run(job: Any, args: tuple, settings: Settings) -> Sample:
    if not settings.redis_url:
        raise TrialError("no Redis server: the case was not run inside redis.server()")
    ops, elapsed = run_processes([(job, (settings.redis_url, *args))], settings.timeout)[0]
    return Sample(value=ops / elapsed, elapsed=elapsed)


def _own_key(kind: str) -> str:
    return f"ipbench:{kind}:{os.getpid()}:{secrets.token_hex(4)}"


def queue_put_get(who: str, n: int, settings: Settings) -> Sample:
    """Operations per second of one process doing ``put(x)`` then ``get()``,
    ``n`` times over (2n operations): interproc's ``Manager(url).Queue()``
    (``who="interproc"``) or RPUSH and BLPOP by hand (``who="redis_py"``)."""
    job = _interproc_queue if who == "interproc" else _redis_py_queue
    return _run(job, (n,), settings)


def _interproc_queue(url: str, n: int) -> tuple[int, float]:
    import interproc

    with interproc.Manager(url) as manager:
        q = manager.Queue()
        put, get = q.put, q.get
        put(OBJECT)
        get()
        start = time.perf_counter()
        for _ in range(n):
            put(OBJECT)
            item = get()
        elapsed = time.perf_counter() - start
        # Outside the clock: a fast queue that loses or mangles data fails.
        if item != OBJECT or q.qsize() != 0:
            raise TrialError(f"last item {item!r:.80}, {q.qsize()} left in the queue")
    return 2 * n, elapsed


def _redis_py_queue(url: str, n: int) -> tuple[int, float]:
    import redis

    client = redis.Redis.from_url(url)
    key = _own_key("queue")
    dumps, loads, protocol = pickle.dumps, pickle.loads, PICKLE_PROTOCOL
    rpush, blpop = client.rpush, client.blpop
    try:
        rpush(key, dumps(OBJECT, protocol))
        loads(blpop([key])[1])
        start = time.perf_counter()
        for _ in range(n):
            rpush(key, dumps(OBJECT, protocol))
            item = loads(blpop([key])[1])
        elapsed = time.perf_counter() - start
        left = client.llen(key)
        if item != OBJECT or left != 0:
            raise TrialError(f"last item {item!r:.80}, {left} left in the list")
    finally:
        client.delete(key)
        client.close()
    return 2 * n, elapsed


def dict_set_get(who: str, n: int, settings: Settings) -> Sample:
    """Operations per second of one process doing ``d[i] = i`` for ``i`` in
    ``range(n)``, then ``d[i]`` for the same keys (2n operations):
    interproc's ``Manager(url).dict()`` or HSET/HGET of pickled keys and
    values by hand."""
    job = _interproc_dict if who == "interproc" else _redis_py_dict
    return _run(job, (n,), settings)


def _interproc_dict(url: str, n: int) -> tuple[int, float]:
    import interproc

    with interproc.Manager(url) as manager:
        d = manager.dict()
        d[-1] = -1
        d[-1]
        start = time.perf_counter()
        for i in range(n):
            d[i] = i
        for i in range(n):
            d[i]
        elapsed = time.perf_counter() - start
        if len(d) != n + 1 or d[n - 1] != n - 1:
            raise TrialError(f"after {n} sets: len {len(d)}, last value {d.get(n - 1)!r}")
    return 2 * n, elapsed


def _redis_py_dict(url: str, n: int) -> tuple[int, float]:
    import redis

    client = redis.Redis.from_url(url)
    key = _own_key("dict")
    dumps, loads, protocol = pickle.dumps, pickle.loads, PICKLE_PROTOCOL
    hset, hget = client.hset, client.hget
    try:
        hset(key, dumps(-1, protocol), dumps(-1, protocol))
        loads(hget(key, dumps(-1, protocol)))
        start = time.perf_counter()
        for i in range(n):
            hset(key, dumps(i, protocol), dumps(i, protocol))
        for i in range(n):
            loads(hget(key, dumps(i, protocol)))
        elapsed = time.perf_counter() - start
        size = client.hlen(key)
        last = client.hget(key, dumps(n - 1, protocol))
        last = None if last is None else loads(last)
        if size != n + 1 or last != n - 1:
            raise TrialError(f"after {n} sets: len {size}, last value {last!r}")
    finally:
        client.delete(key)
        client.close()
    return 2 * n, elapsed


def queue_batches(n: int, settings: Settings) -> Sample:
    """Operations per second of one process moving ``n`` items through
    interproc's ``Manager(url).Queue()`` with ``put_many`` of ``BATCH`` items,
    then ``get_many`` until all of them are back (each item counts as a put
    and a get: 2n operations, as in `queue_put_get`)."""
    return _run(_interproc_batches, (n,), settings)


def _interproc_batches(url: str, n: int) -> tuple[int, float]:
    import interproc

    with interproc.Manager(url) as manager:
        q = manager.Queue()
        put_many, get_many = q.put_many, q.get_many
        chunk = [OBJECT] * BATCH
        full, rest = divmod(n, BATCH)
        sizes = [BATCH] * full + ([rest] if rest else [])
        put_many(chunk)
        _get_all(get_many, BATCH)
        start = time.perf_counter()
        for size in sizes:
            put_many(chunk if size == BATCH else chunk[:size])
            got = 0
            while got < size:
                items = get_many(size - got)
                got += len(items)
        elapsed = time.perf_counter() - start
        if items[-1] != OBJECT or q.qsize() != 0:
            raise TrialError(f"last item {items[-1]!r:.80}, {q.qsize()} left in the queue")
    return 2 * n, elapsed


def _get_all(get_many: Any, size: int) -> None:
    got = 0
    while got < size:
        got += len(get_many(size - got))
