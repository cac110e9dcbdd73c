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


# ---------------------------------------------------------------------------
# Defect 10: the caller's timeout holds when the server stalls or vanishes


def _bound(timeout):
    """How long a call with ``timeout`` may take when the server never answers."""
    # 1 s: the documented margin (client.BLOCK_MARGIN)
    return timeout + getattr(rclient, "BLOCK_MARGIN", 1.0) + SLACK


def _assert_timed_out_within(getter, timeout):
    """The call of ``getter`` (a _Getter started with ``timeout``) raised
    ServerTimeoutError within ``_bound(timeout)``."""
    getter.join(60)
    assert getter.result is not None
    kind, value = getter.result
    assert kind == "error" and isinstance(value, ServerTimeoutError), getter.result
    assert getter.elapsed < _bound(timeout), getter.elapsed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["before", "while blocked"])
def test_get_timeout_holds_when_the_server_stalls(private_redis, when):
    """A server stopped with SIGSTOP (a frozen VM, say) answers nothing: a
    get(timeout=1) raises ServerTimeoutError within the timeout plus
    BLOCK_MARGIN, whether the server froze before the get or while it
    waited in BLMOVE; once the server runs again, nothing is lost."""
    server = private_redis()
    q = rq.Queue(Connection.from_url(server.url))
    try:
        q.put("warm-up")  # the consumer's lists registered, its sockets open
        assert q.get(timeout=5) == "warm-up"
        if when == "before":
            os.kill(server.pid, signal.SIGSTOP)
        getter = _Getter(lambda: q.get(timeout=1))
        getter.start()
        if when == "while blocked":
            _wait_until(lambda: _blocked_clients(server) == 1, "the get blocks in BLMOVE")
            os.kill(server.pid, signal.SIGSTOP)
        _assert_timed_out_within(getter, 1)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    q.put("after")
    assert q.get(timeout=5) == "after"
    assert q.qsize() == 0
    q._destroy()


@pytest.mark.timeout(60)
def test_get_timeout_holds_when_the_server_vanishes(proxy, redis_server):
    """The network drops every packet (a server gone without a reset): a
    get(timeout=2) that waits in BLMOVE raises ServerTimeoutError within the
    timeout plus BLOCK_MARGIN.  The item the server moved to the consumer
    meanwhile, whose reply vanished, is not lost: the next get returns it,
    once."""
    q = rq.Queue(Connection.from_url(proxy.url))
    try:
        q.put("warm-up")
        assert q.get(timeout=5) == "warm-up"
        getter = _Getter(lambda: q.get(timeout=2))
        getter.start()
        _wait_until(lambda: _blocked_clients(redis_server) >= 1, "the get blocks in BLMOVE")
        proxy.drop()
        redis_server.command("RPUSH", q._items, q._codec.dumps("moved, never delivered"))
        _wait_until(lambda: _llen(redis_server, q._items) == 0, "the server moved the item")
        _assert_timed_out_within(getter, 2)
        proxy.resume()
        assert q.get(timeout=5) == "moved, never delivered"
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
    finally:
        proxy.resume()
        q._destroy()


@pytest.mark.timeout(60)
def test_blocking_waits_of_other_objects_hold_their_timeout_when_the_network_drops(proxy):
    """A wait (an Event here; locks and semaphores wait the same way) raises
    ServerTimeoutError within its timeout plus BLOCK_MARGIN when the network
    drops while it waits, in its BLPOP or in the check between two."""
    from interproc.backends.redis.synchronize import Event

    ev = Event(Connection.from_url(proxy.url))
    try:
        assert ev.wait(0.05) is False  # sockets open
        getter = _Getter(lambda: ev.wait(1.5))
        getter.start()
        time.sleep(0.3)  # in BLPOP, or about to be: either way nothing answers
        proxy.drop()
        _assert_timed_out_within(getter, 1.5)
    finally:
        proxy.resume()
        ev._destroy()


def _blmove_calls(server) -> int:
    stats = server.command("INFO", "commandstats").decode()
    if "cmdstat_blmove:" not in stats:
        return 0
    return int(stats.split("cmdstat_blmove:calls=")[1].split(",")[0])


@pytest.mark.timeout(30)
def test_short_get_timeout_does_not_wait_for_the_server_timer(private_redis):
    """The server ends a BLMOVE on its timer, up to 100 ms late (hz 10): a
    get whose timeout is within SERVER_TIMER_SLACK waits locally and looks
    once more, so it never sends a BLMOVE at all; a longer one asks the
    server for its timeout less that slack."""
    server = private_redis()
    q = rq.Queue(Connection.from_url(server.url))
    try:
        with pytest.raises(queue.Empty):
            q.get(timeout=0.05)
        assert _blmove_calls(server) == 0
        with pytest.raises(queue.Empty):
            q.get(timeout=0.3)
        assert _blmove_calls(server) == 1
        q.put("x")
        assert q.get(timeout=0.05) == "x"
    finally:
        q._destroy()


# ---------------------------------------------------------------------------
# Defect 2: an item comes again only if the get that took it raised


@pytest.mark.timeout(60)
def test_join_waits_for_the_work_left_after_an_outage(proxy):
    """An outage after a get returned: the delivered item is not put back,
    and join() returns only once the items left are taken and done."""
    q = rq.JoinableQueue(Connection.from_url(proxy.url))
    try:
        q.put_many(["item-1", "item-2", "item-3"])
        assert q.get(timeout=5) == "item-1"
        q.task_done()
        proxy.refuse()
        with pytest.raises(ConnectionError):
            q.get(timeout=5)
        proxy.accept()
        joiner = _Getter(q.join)
        joiner.start()
        joiner.join(0.5)
        assert joiner.is_alive(), "join() returned while two items were queued"
        got = [q.get(timeout=5), q.get(timeout=5)]
        assert got == ["item-2", "item-3"]
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        q.task_done()
        assert joiner.is_alive()
        q.task_done()
        joiner.join(10)
        assert joiner.result == ("ok", None)
    finally:
        proxy.accept()
        q._destroy()


@pytest.mark.timeout(120)
def test_stream_across_cuts_and_outages_loses_and_duplicates_nothing(proxy, redis_server):
    """A consumer behind a proxy that cuts its connections (between gets,
    and while a get waits in BLMOVE for an item a producer puts) and refuses
    new ones for a while: every item put arrives once, and none twice."""
    n = 300
    name = f"stream-{os.getpid()}-{time.monotonic_ns()}"
    producer = rq.Queue(Connection.from_url(redis_server.url), name=name)
    consumer = rq.Queue(Connection.from_url(proxy.url), name=name, create=False)
    try:
        producer.put_many(range(n // 2))
        got, failures, empty = [], 0, 0
        step = 0
        second_half = False
        while len(got) < n and empty < 3:
            step += 1
            fault = step % 23
            if fault == 0:
                proxy.cut()
            elif fault == 7:
                proxy.refuse()
            elif fault == 9:
                proxy.accept()
            if not second_half and len(got) >= n // 2:
                # The queue ran dry: a get waits in BLMOVE and is cut while
                # it waits; then the rest is put.
                second_half = True
                proxy.accept()
                getter = _Getter(lambda: consumer.get_many(10, timeout=30))
                getter.start()
                _wait_until(lambda: _blocked_clients(redis_server) >= 1, "the get blocks")
                proxy.cut()
                getter.join(30 + SLACK)
                kind, value = getter.result
                assert kind == "error" and isinstance(value, ConnectionError), getter.result
                failures += 1
                producer.put_many(range(n // 2, n))
                continue
            try:
                if step % 3:
                    got.append(consumer.get(timeout=2))
                else:
                    got += consumer.get_many(7, timeout=2)
                empty = 0
            except ConnectionError:
                failures += 1
            except queue.Empty:
                empty += 1
        proxy.accept()
        assert failures > 0
        assert sorted(got) == list(range(n)), (
            len(got), sorted(set(range(n)) - set(got)), [i for i in set(got) if got.count(i) > 1],
            failures)
        with pytest.raises(queue.Empty):
            consumer.get(timeout=0.2)
    finally:
        proxy.accept()
        producer._destroy()


# ---------------------------------------------------------------------------
# A Cluster master killed, its replica taking over


def _replicated(master) -> None:
    """Wait until the master's replica acknowledged every write so far
    (replication is asynchronous: what it has not acknowledged may be lost
    in a failover, which is Redis's guarantee, not the one checked here).
    WAIT would not do: it waits for the writes of its own connection."""

    def caught_up():
        info = master.command("INFO", "replication").decode()
        mine = int(info.split("master_repl_offset:")[1].split()[0])
        acked = [int(part.split("offset=")[1].split(",")[0])
                 for part in info.split() if part.startswith("slave") and "offset=" in part]
        return bool(acked) and min(acked) >= mine

    _wait_until(caught_up, "the replica acknowledged every write")


@pytest.mark.timeout(120)
def test_cluster_failover_loses_and_duplicates_nothing_acknowledged(failover_cluster):
    """A master killed between gets: once a replica took its slots over,
    the gets go on from the new master, and every item arrives once."""
    cluster = failover_cluster
    conn = Connection.from_url(cluster.url)
    # A queue whose master is not the node the connection was made through.
    for i in range(100):
        q = rq.Queue(conn, name=f"failover-{i}-{os.getpid()}-{time.monotonic_ns()}")
        if cluster.server_for_slot(cluster.slot(q._items)) is not cluster.servers[0]:
            break
        q._destroy()
    try:
        master = cluster.server_for_slot(cluster.slot(q._items))
        # A second process's handle, whose slot table is not refreshed by
        # the first one's failures: it meets the old master again later,
        # back as a replica, and is redirected (MOVED).
        late = rq.Queue(Connection.from_url(cluster.url, socket_timeout=4.0), name=q.name,
                        create=False)
        q.put_many(range(21))
        got = [late.get(timeout=5)] + [q.get(timeout=5) for _ in range(9)]
        _replicated(master)
        dead = cluster.kill_master(q._items)
        assert dead is master
        cluster.wait_failover(q._items, dead)
        failures = []
        while len(got) < 20 and len(failures) < 20:
            try:
                got.append(q.get(timeout=5))
            except (ConnectionError, TimeoutError, queue.Empty) as exc:
                failures.append(repr(exc))
                if isinstance(exc, queue.Empty):
                    break
        assert got == list(range(20)), (got, failures)
        dead.start()  # it rejoins as a replica of the new master
        _wait_until(lambda: b"role:slave" in dead.command("INFO", "replication"),
                    "the old master rejoins as a replica", timeout=30)
        assert late.get(timeout=10) == 20
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
    finally:
        try:
            q._destroy()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# The manager: its arguments, and its exit when the server is gone


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lease", [0.01, 0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_manager_refuses_a_lease_too_short_to_renew_at_once(redis_url, lease):
    from interproc.backends.redis.managers import RedisManager

    with pytest.raises(ValueError, match="lease must be at least"):
        RedisManager(redis_url, lease=lease)
    with pytest.raises(TypeError):
        RedisManager(redis_url, lease="10")
    RedisManager(redis_url, lease=1.0).shutdown()


_EXIT_SCRIPT = r"""
import os, signal, sys
from interproc.backends.redis.managers import RedisManager
m = RedisManager(sys.argv[1])
m.start()
q = m.Queue()
d = m.dict()
q.put(1)
d["a"] = 1
os.kill(int(sys.argv[2]), signal.SIGKILL)  # the server is gone
print("exiting", flush=True)
"""


@pytest.mark.timeout(60)
def test_manager_exit_with_the_server_gone_prints_no_traceback(private_redis):
    """A manager whose anonymous objects cannot be deleted at exit (the
    server died) says so in one line on stderr, without a traceback, and
    the exit does not wait on every object in turn."""
    import subprocess
    import sys

    server = private_redis()
    out = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, server.url, str(server.pid)],
                         capture_output=True, text=True, timeout=50)
    assert out.stdout.strip() == "exiting"
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 1, out.stderr
    if lines:
        assert "could not delete the 2 anonymous Redis object(s)" in lines[0]


# ---------------------------------------------------------------------------
# A Cluster slot migrated between nodes (resharding)


class _SlotMigration:
    """The slot of ``key`` moved from its master to another the way
    ``redis-cli --cluster reshard`` does it: marked migrating and importing,
    its keys moved with MIGRATE, then handed over (``finish``), which the
    test's end does in any case."""

    def __init__(self, cluster_url, key):
        import redis

        self.client = redis.RedisCluster.from_url(cluster_url)
        self.slot = self.client.keyslot(key)
        source = self.client.nodes_manager.get_node_from_slot(self.slot)
        target = next(n for n in self.client.get_primaries() if n.name != source.name)
        self.source = redis.Redis(host=source.host, port=source.port)
        self.target = redis.Redis(host=target.host, port=target.port)
        self.target_address = (target.host, target.port)
        self.target_id = self.target.execute_command("CLUSTER MYID")
        self.finished = False

    def start(self):
        source_id = self.source.execute_command("CLUSTER MYID")
        self.target.execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", source_id)
        self.source.execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", self.target_id)

    def move_keys(self):
        keys = self.source.execute_command("CLUSTER GETKEYSINSLOT", self.slot, 1000)
        if keys:
            self.source.execute_command("MIGRATE", *self.target_address, "", 0, 5000, "KEYS", *keys)

    def finish(self):
        if self.finished:
            return
        self.finished = True
        self.move_keys()
        for node in (self.target, self.source, *(
                self.client.get_redis_connection(n) for n in self.client.get_primaries())):
            node.execute_command("CLUSTER SETSLOT", self.slot, "NODE", self.target_id)

    def close(self):
        self.finish()
        self.client.close()


@pytest.mark.timeout(60)
def test_objects_wait_out_a_slot_migration(redis_cluster_url):
    """While a slot migrates, Redis refuses a command on several keys of it
    unless all exist on the node asked (TRYAGAIN, or ASK then TRYAGAIN),
    and an object's operations name keys that may not exist yet: nothing
    ran, so they are sent again until the migration ends, and then work on
    the new node.  Before, the first refusal raised redis-py's own
    ClusterError("TTL exhausted.") (puts) or an UnreachableError (gets)."""
    from interproc.backends.redis.managers import RedisManager

    m = RedisManager(redis_cluster_url)
    m.start()
    q, d = m.Queue(), m.dict()
    q.put("before")
    migration = _SlotMigration(redis_cluster_url, q._meta)
    try:
        migration.start()
        migration.move_keys()
        threading.Timer(1.0, migration.finish).start()
        start = time.monotonic()
        q.put("during")
        assert q.get(timeout=10) == "before"
        assert q.get(timeout=10) == "during"
        assert 0.5 < time.monotonic() - start < 1.0 + rclient.DEFAULT_SOCKET_TIMEOUT + SLACK
        # A blocking get that starts waiting on the new node.
        getter = _Getter(lambda: q.get(timeout=10))
        getter.start()
        time.sleep(0.3)
        q.put("after")
        getter.join(15)
        assert getter.result == ("ok", "after")
        d["k"] = 1
        assert d["k"] == 1 and q.qsize() == 0
    finally:
        migration.close()
        m.shutdown()


@pytest.mark.timeout(60)
def test_a_slot_migration_that_does_not_end_is_a_clear_error(redis_cluster_url):
    """A migration that outlasts the socket timeout (or a get's own
    timeout) is an UnreachableError that says so, with nothing done: the
    items are all there once it ends."""
    from interproc.backends.redis.errors import UnreachableError
    from interproc.backends.redis.managers import RedisManager

    m = RedisManager(redis_cluster_url, socket_timeout=1.5)
    m.start()
    q = m.Queue()
    q.put("kept")
    migration = _SlotMigration(redis_cluster_url, q._meta)
    try:
        migration.start()
        migration.move_keys()
        for op, bound in ((lambda: q.put("refused"), 1.5), (lambda: q.get(timeout=1.0), 1.0),
                          (q.get_nowait, 1.5)):
            start = time.monotonic()
            with pytest.raises(UnreachableError, match="being migrated between nodes"):
                op()
            assert time.monotonic() - start < bound + SLACK
        migration.finish()
        assert q.get(timeout=5) == "kept"
        with pytest.raises(queue.Empty):
            q.get_nowait()
    finally:
        migration.close()
        m.shutdown()


# ---------------------------------------------------------------------------
# Errors say what failed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cluster", [None, False])
def test_tls_mismatch_is_named(redis_tls_server, cluster):
    """A plain URL to a TLS port, or a TLS URL to a plain port, is an
    UnreachableError that says which, not "may or may not have taken
    effect"."""
    from interproc.backends.redis.errors import UnreachableError

    plain_to_tls = Connection.from_url(f"redis://127.0.0.1:{redis_tls_server.tls_port}/0",
                                       cluster=cluster, socket_connect_timeout=3)
    with pytest.raises(UnreachableError, match="the server expects TLS"):
        plain_to_tls.ping()
    # A plain server never answers a TLS handshake: the socket timeout ends it.
    tls_to_plain = Connection.from_url(f"rediss://127.0.0.1:{redis_tls_server.port}/0",
                                       cluster=cluster, socket_connect_timeout=2, socket_timeout=1,
                                       ssl_ca_certs=redis_tls_server.tls_files["ca"])
    with pytest.raises(UnreachableError, match="the server does not speak TLS"):
        tls_to_plain.ping()


# ---------------------------------------------------------------------------
# Redis Sentinel


@pytest.mark.timeout(60)
def test_sentinel_url_finds_the_master(private_redis, tmp_path):
    """``redis+sentinel://host:port/service/db``: the Sentinel names the
    master, and queues (blocking gets included) and managers work on it."""
    from interproc.backends.redis import local_server
    from interproc.backends.redis.managers import RedisManager

    server = private_redis()
    with local_server.RedisSentinel(str(tmp_path / "sentinel"), server) as sentinel:
        m = RedisManager(sentinel.url)
        m.start()
        try:
            q = m.Queue()
            q.put("through the sentinel")
            assert q.get(timeout=5) == "through the sentinel"
            with pytest.raises(queue.Empty):
                q.get(timeout=0.3)
            assert server.address in str(m.connection._sentinel_master())
        finally:
            m.shutdown()
    with pytest.raises(ValueError, match="names the service"):
        Connection.from_url("redis+sentinel://127.0.0.1:26379")


@pytest.mark.timeout(90)
def test_sentinel_failover_keeps_every_replicated_write(private_redis, tmp_path):
    """A master killed under a ``redis+sentinel://`` manager: once Sentinel
    promotes the replica, the same handles go on against it, and with
    ``replicas=1`` every write that returned (queue items, a dict, a lock
    held) is there; a write that needs a replica now raises
    ReplicationError, and one that does not goes through."""
    from interproc.backends.redis import local_server
    from interproc.backends.redis.errors import (
        ConnectionLostError as Lost,
        ReplicationError,
        UnreachableError,
    )
    from interproc.backends.redis.managers import RedisManager

    master, replica = private_redis(), private_redis()
    replica.replicate(master)
    # Started after the replica is attached: its first look at the master finds it.
    with local_server.RedisSentinel(str(tmp_path / "sentinel"), master) as sentinel:
        # Every write waits for the replica (and, once it is the master and
        # has none, for replica_timeout: keep it short).
        m = RedisManager(sentinel.url, replicas=1, replica_timeout=1.0)
        m.start()
        q, d, lock = m.Queue(), m.dict(), m.Lock()
        for i in range(20):
            q.put(i)
        d.update(a=1, b=2)
        assert lock.acquire(timeout=5)
        master.kill()

        def promoted():
            reply = local_server._commands(("127.0.0.1", sentinel.port), (
                "SENTINEL", "get-master-addr-by-name", sentinel.service), timeout=1.0)[0]
            return str(replica.port).encode() in reply

        _wait_until(promoted, "Sentinel promoted the replica", timeout=30)
        deadline = time.monotonic() + 15
        while True:  # the first calls may still reach for the dead master
            try:
                first = q.get(timeout=2)
                break
            except (Lost, UnreachableError, ServerTimeoutError):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert [first] + q.get_many(timeout=5) == list(range(20))
        assert dict(d.items()) == {"a": 1, "b": 2}
        assert not lock.acquire(block=False)  # still held: the holder renews on the new master
        with pytest.raises(ReplicationError, match="only 0 of the 1 replica"):
            d["c"] = 3
        assert d["c"] == 3  # done on the new master, as the error says
        lock.release()
        plain = RedisManager(sentinel.url)
        plain.start()
        q2 = plain.Queue()
        q2.put("after the failover")
        assert q2.get(timeout=5) == "after the failover"
        plain.shutdown()
        try:
            m.shutdown()
        except ReplicationError:
            pass


@pytest.mark.timeout(60)
def test_manager_from_an_existing_client_or_pool(redis_server, redis_cluster, private_redis,
                                                 tmp_path):
    """``RedisManager(client=...)`` takes a redis-py client's or pool's
    options (address, database, credentials), not its sockets: its objects
    pickle to children as any other's."""
    import pickle

    import redis

    from interproc.backends.redis import local_server
    from interproc.backends.redis.managers import RedisManager

    secured = private_redis(password="s3cret")
    clients = [
        redis.Redis(host="127.0.0.1", port=redis_server.port, db=3),
        redis.ConnectionPool(host="127.0.0.1", port=secured.port, password="s3cret"),
        redis.cluster.RedisCluster.from_url(redis_cluster.url),
    ]
    with local_server.RedisSentinel(str(tmp_path / "sentinel"), redis_server) as sentinel:
        from redis.sentinel import Sentinel

        clients.append(Sentinel([("127.0.0.1", sentinel.port)]).master_for(sentinel.service))
        for client in clients:
            m = RedisManager(client=client)
            m.start()
            try:
                q = m.Queue()
                q.put("x")
                again = pickle.loads(pickle.dumps(q))
                assert again.get(timeout=5) == "x"
            finally:
                m.shutdown()
    assert Connection.from_client(clients[0]).url.endswith("/3")
    with pytest.raises(TypeError, match="url or a client"):
        RedisManager()
    with pytest.raises(TypeError, match="not a redis-py client"):
        RedisManager(client=object())
