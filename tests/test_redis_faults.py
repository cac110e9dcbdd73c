"""The Redis backend's queues and blocking calls under network and server
faults, with real redis-server processes: connections cut, stalled or
dropped by a proxy (tests/_fault_proxy.py), servers stopped with SIGSTOP,
killed and restarted, and Cluster masters killed while a replica takes
over.  What each test checks is a guarantee of docs/api.md ("Manager on
Redis"): nothing lost, nothing duplicated, and the caller's timeout kept
within ``client.BLOCK_MARGIN``."""

import os
import queue
import signal
import threading
import time

import pytest

pytest.importorskip("redis")

from interproc.backends.redis import client as rclient  # noqa: E402
from interproc.backends.redis import queues as rq  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.errors import (  # noqa: E402
    ConnectionLostError,
    ServerTimeoutError,
)

from _fault_proxy import FaultProxy  # noqa: E402

#: Scheduling noise of a loaded 2-core machine, on top of any bound checked.
SLACK = 2.5


def _wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def _blocked_clients(server) -> int:
    info = server.command("INFO", "clients").decode()
    return int(info.split("blocked_clients:")[1].split()[0])


def _llen(server, key) -> int:
    return int(server.command("LLEN", key)[1:].strip())


class _Getter(threading.Thread):
    """Runs ``fn()`` once; ``.result`` is ("ok", value) or ("error", exc),
    ``.elapsed`` how long it took."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.elapsed = None

    def run(self):
        start = time.monotonic()
        try:
            self.result = ("ok", self.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.result = ("error", exc)
        self.elapsed = time.monotonic() - start


@pytest.fixture
def proxy(redis_server):
    p = FaultProxy(redis_server.port)
    yield p
    p.close()


# ---------------------------------------------------------------------------
# Defect 1: a command is never resent, on a Cluster either


@pytest.mark.timeout(60)
def test_cluster_take_whose_reply_is_lost_is_not_resent(proxied_cluster):
    """A blocking get on a Cluster: the server moves an item into the
    consumer's processing list, the reply is lost and the connection then
    breaks.  Resending the pipeline (as redis-py's ClusterPipeline does)
    would delete that list, and the item with it.  The get must raise, and
    the item must come back to the next get."""
    cluster, proxies = proxied_cluster
    conn = Connection.from_url(next(iter(proxies.values())).url)
    assert conn.is_cluster
    q = rq.Queue(conn)
    try:
        node = cluster.server_for_slot(cluster.slot(q._items))
        proxy = proxies[node.port]
        getter = _Getter(lambda: q.get(timeout=20))
        getter.start()
        _wait_until(lambda: _blocked_clients(node) == 1, "the get blocks in BLMOVE")
        proxy.drop()  # the reply will vanish
        node.command("RPUSH", q._items, q._codec.dumps("the item"))
        _wait_until(lambda: _llen(node, q._items) == 0, "the server moved the item")
        proxy.resume()
        proxy.cut()
        getter.join(20 + SLACK)
        assert getter.result is not None, "the get did not return"
        kind, value = getter.result
        assert kind == "error" and isinstance(value, ConnectionLostError), getter.result
        assert q.get(timeout=5) == "the item"
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
    finally:
        q._destroy()
