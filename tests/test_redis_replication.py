"""``RedisManager(url, replicas=N, replica_timeout=s)``: writes that wait for
their replicas (Redis ``WAIT``), on a real master with a real replica.

A replica "frozen" here is its process stopped with SIGSTOP: connected, but
acknowledging nothing, as a replica on a stalled VM or behind a cut network
would be until the master's ``repl-timeout`` drops it.
"""
import contextlib
import os
import pickle
import signal
import time
import uuid

import pytest

import _redis_helpers as helpers

redis = pytest.importorskip("redis")

from interproc.backends.redis import RedisManager, ReplicationError  # noqa: E402
from interproc.backends.redis import client as redis_client  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.keys import object_key  # noqa: E402

pytestmark = pytest.mark.timeout(30)

#: Short, so that a frozen replica costs little; long enough to tell a call
#: that waited for it from one that did not.
TIMEOUT = 0.5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A master and its replica, both standalone servers: ``(master, replica)``."""
    from interproc.backends.redis.local_server import RedisServer

    helpers.require_redis()
    master = RedisServer(str(tmp_path_factory.mktemp("repl-master"))).start()
    replica = RedisServer(str(tmp_path_factory.mktemp("repl-replica"))).start()
    try:
        replica.replicate(master)
        yield master, replica
    finally:
        replica.stop()
        master.stop()


@pytest.fixture
def manager(pair):
    master, _ = pair
    with RedisManager(master.url, replicas=1, replica_timeout=TIMEOUT) as m:
        yield m


@pytest.fixture
def raw(pair):
    """Plain redis-py clients of ``(master, replica)``, to look at what each holds."""
    clients = [redis.Redis(port=s.port, socket_timeout=5) for s in pair]
    yield clients
    for c in clients:
        c.close()


@contextlib.contextmanager
def frozen(server):
    """The server's process stopped (SIGSTOP) within the block, always continued after."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def name():
    return f"repl-{uuid.uuid4().hex[:10]}"


def test_writes_are_on_the_replica_when_they_return(manager, raw):
    _, replica = raw
    q = manager.Queue(name=name())
    d = manager.dict(name=name())
    lock = manager.Lock(name=name())
    sem = manager.Semaphore(2, name=name())
    for i in range(3):
        q.put(i)
        assert replica.llen(object_key(q.name, "items")) == i + 1
    d["k"] = "v"
    d.update(a=1)
    assert replica.hlen(object_key(d.name, "h")) == 2
    assert lock.acquire(timeout=2)
    assert replica.hget(object_key(lock.name, "owner"), "t") is not None
    lock.release()
    assert replica.exists(object_key(lock.name, "owner")) == 0
    assert sem.acquire(timeout=2)
    assert replica.hget(object_key(sem.name, "st"), "v") == b"1"
    # A take waits too: once it returns, the replica has the item gone.
    assert q.get(timeout=2) == 0
    assert replica.llen(object_key(q.name, "items")) == 2


def test_a_write_raises_when_the_replica_does_not_acknowledge(pair, manager, raw):
    master, replica_server = pair
    q = manager.Queue(name=name())
    d = manager.dict(name=name())
    with frozen(replica_server):
        start = time.monotonic()
        with pytest.raises(ReplicationError) as info:
            q.put("kept")
        took = time.monotonic() - start
        # It waited for the replica; the upper bound only says it did not hang.
        assert TIMEOUT * 0.9 <= took < TIMEOUT + 10
        exc = info.value
        assert (exc.acknowledged, exc.replicas, exc.server) == (0, 1, master.address)
        text = str(exc)
        assert "is done on the Redis master" in text and "0 of the 1 replica" in text
        assert "would be lost" in text and q.name in text
        # Done on the master all the same.
        assert raw[0].llen(object_key(q.name, "items")) == 1
        with pytest.raises(ReplicationError):
            d["k"] = "v"
        assert d["k"] == "v"
    # Not an error a retry loop catches as "may not have happened".
    assert not isinstance(exc, (ConnectionError, TimeoutError))
    assert pickle.loads(pickle.dumps(exc)).acknowledged == 0


def test_reads_do_not_wait_for_replicas(pair, manager):
    _, replica_server = pair
    q = manager.Queue(name=name())
    d = manager.dict(name=name(), k="v")
    lock = manager.Lock(name=name())
    sem = manager.Semaphore(3, name=name())
    master = redis.Redis(port=pair[0].port, socket_timeout=5)
    before = _waits_sent(master)
    with frozen(replica_server):
        assert q.qsize() == 0 and q.empty()
        assert d["k"] == "v" and len(d) == 1 and "k" in d and list(d.items()) == [("k", "v")]
        assert not lock.locked()
        assert sem.get_value() == 3
        assert lock.statistics()["locked"] is False
    # Counted by the server, not timed: a loaded machine cannot blur it.
    assert _waits_sent(master) == before
    master.close()


def _waits_sent(client):
    return client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def test_takes_return_what_they_took(pair, manager, raw):
    """A take must not raise after the item left the master: it would be lost."""
    _, replica_server = pair
    q = manager.Queue(name=name())
    d = manager.dict(name=name(), a=1)
    q.put_many(list(range(5)))
    with frozen(replica_server):
        got = [q.get()]                     # the plain take, a script
        got.append(q.get(timeout=3))        # with a deadline: a bounded pipeline
        got += q.get_many(timeout=3)        # the rest at once
        assert d.pop("a") == 1
    assert got == list(range(5))
    assert raw[0].llen(object_key(q.name, "items")) == 0


def test_a_waiting_take_returns_what_it_took(pair, manager):
    """The blocking take (a pipeline ending in BLMOVE and a script) too."""
    import threading

    _, replica_server = pair
    q = manager.Queue(name=name())
    assert q.empty()

    def late_put():
        time.sleep(0.2)
        with contextlib.suppress(ReplicationError):
            q.put("late")

    with frozen(replica_server):
        t = threading.Thread(target=late_put)
        t.start()
        try:
            assert q.get(timeout=4) == "late"
        finally:
            t.join(5)
    assert q.qsize() == 0


def test_an_acquire_that_is_not_acknowledged_is_given_back(pair, manager):
    _, replica_server = pair
    lock = manager.Lock(name=name())
    sem = manager.Semaphore(1, name=name())
    with frozen(replica_server):
        with pytest.raises(ReplicationError, match="given back"):
            lock.acquire(timeout=2)
        assert not lock.locked()
        assert lock.fencing_token is None
        with pytest.raises(ReplicationError, match="given back"):
            sem.acquire(timeout=2)
        assert sem.get_value() == 1
    # Held by nobody: another acquire works at once, once the replica is back.
    assert lock.acquire(timeout=2)
    lock.release()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_the_setting_goes_to_children(pair, manager, method):
    import multiprocessing

    _, replica_server = pair
    ctx = multiprocessing.get_context(method)
    q = manager.Queue(name=name())
    out = ctx.Queue()
    with frozen(replica_server):
        p = ctx.Process(target=helpers.child_puts_replicated, args=(q, "from child", out))
        p.start()
        try:
            reply = out.get(timeout=20)
        finally:
            p.join(10)
    assert reply == ("ok", 1, TIMEOUT, "ReplicationError")
    assert q.get(timeout=2) == "from child"


def test_arguments_are_checked(pair):
    master, _ = pair
    for bad in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match="replicas"):
            RedisManager(master.url, replicas=bad)
    with pytest.raises(ValueError, match="replicas"):
        RedisManager(master.url, replicas=-1)
    for bad in ("1", True, None):
        with pytest.raises(TypeError, match="replica_timeout"):
            RedisManager(master.url, replicas=1, replica_timeout=bad)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="replica_timeout"):
            RedisManager(master.url, replicas=1, replica_timeout=bad)
    with pytest.raises(ValueError, match="replicas"):
        Connection.from_options({"url": master.url, "replicas": -2})


def test_off_by_default_and_through_client(pair):
    master, _ = pair
    plain = RedisManager(master.url)
    assert plain.replicas == 0
    assert "replicas" not in plain.connection.options
    # Without replicas, a script never goes the WAIT way.
    assert not plain.connection.script("return 1")._waits
    assert RedisManager(master.url, replicas=0).connection is plain.connection
    client = redis.Redis(port=master.port)
    try:
        m = RedisManager(client=client, replicas=1, replica_timeout=2)
        assert (m.replicas, m.replica_timeout) == (1, 2.0)
        assert Connection.from_options(m.connection.options) is m.connection
    finally:
        client.close()


def test_scripts_say_what_they_wait_for():
    """The markers survive the preludes and guards put before a body."""
    from interproc.backends.redis import _base, containers, queues, synchronize

    acks = redis_client.acks_of
    assert acks(_base.alive(queues._QSIZE_LUA)) == redis_client.ACKS_NONE
    assert acks(_base.alive(queues._TAKE_ONE_LUA)) == redis_client.ACKS_QUIET
    assert acks(_base.alive(queues._PUT_UNBOUNDED_LUA)) == redis_client.ACKS_RAISE
    assert acks(_base.alive(containers.D_POP)) == redis_client.ACKS_QUIET
    assert acks(_base.alive(containers.D_SET)) == redis_client.ACKS_RAISE
    assert acks(synchronize._RENEW_LUA) == redis_client.ACKS_NONE
    # A prelude shared by writing scripts must carry no marker.
    from interproc.backends.redis import _guarded, _waiters
    for prelude in (_waiters.LUA_PRELUDE, queues._QUEUE_PRELUDE, containers._D, containers._L,
                    synchronize._BARRIER_LUA, _guarded._GUARD, _base._ALIVE_GUARD):
        assert acks(prelude) == redis_client.ACKS_RAISE


def test_on_a_cluster_wait_goes_to_the_node_of_the_slot(failover_cluster):
    """WAIT answers for the writes of its own connection, so it must follow
    the object's slot: a frozen replica of that node's fails the write, a
    frozen replica of another node's does not."""
    cluster = failover_cluster
    with RedisManager(cluster.url, replicas=1, replica_timeout=TIMEOUT) as m:
        q = m.Queue(name=name())
        master = cluster.server_for_slot(cluster.slot(object_key(q.name, "items")))
        table = cluster.nodes_table()
        master_id = next(r["id"] for r in table if r["port"] == master.port)
        by_port = {s.port: s for s in cluster.servers}
        its = next(by_port[r["port"]] for r in table if r["master"] == master_id)
        other = next(by_port[r["port"]] for r in table
                     if r["master"] not in ("-", master_id))
        with frozen(other):
            q.put("fine")
        with frozen(its):
            with pytest.raises(ReplicationError) as info:
                q.put("on the master only")
        assert info.value.server == master.address
        assert q.get(timeout=5) == "fine" and q.get(timeout=5) == "on the master only"


# ------------------------------------------------------- the awaitable forms


def test_awaited_writes_wait_for_the_replica_as_blocking_ones_do(pair, manager, raw):
    """``put_async``, ``acquire_async``... send WAIT after their scripts:
    what they did is on the replica when they return; takes return what
    they took even unacknowledged; an acquisition that is not
    acknowledged is given back and raises, as ``acquire()`` does."""
    import asyncio

    _, replica_server = pair
    _, replica = raw
    q = manager.Queue(name=name())
    lock = manager.Lock(name=name())
    sem = manager.Semaphore(1, name=name())

    async def main():
        for i in range(3):
            await q.put_async(i)
            assert replica.llen(object_key(q.name, "items")) == i + 1
        async with lock:
            assert replica.hget(object_key(lock.name, "owner"), "t") is not None
        assert replica.exists(object_key(lock.name, "owner")) == 0
        assert await q.get_async(timeout=2) == 0
        assert replica.llen(object_key(q.name, "items")) == 2
        with frozen(replica_server):
            start = time.monotonic()
            with pytest.raises(ReplicationError, match="0 of the 1 replica") as info:
                await q.put_async("kept")
            assert time.monotonic() - start >= TIMEOUT * 0.9
            assert info.value.acknowledged == 0
            # Takes return what they took: raising would lose it.
            assert await q.get_many_async(timeout=3) == [1, 2, "kept"]
            with pytest.raises(ReplicationError, match="given back"):
                await lock.acquire_async(timeout=2)
            assert not lock.locked()
            with pytest.raises(ReplicationError, match="given back"):
                await sem.acquire_async(timeout=2)
            assert sem.get_value() == 1
        assert await lock.acquire_async(timeout=2)
        lock.release()

    asyncio.run(main())


def _replicas_of(cluster, key):
    """``(master, its replica, another master's replica)`` of ``key``'s slot."""
    master = cluster.server_for_slot(cluster.slot(key))
    table = cluster.nodes_table()
    master_id = next(r["id"] for r in table if r["port"] == master.port)
    by_port = {s.port: s for s in cluster.servers}
    its = next(by_port[r["port"]] for r in table if r["master"] == master_id)
    other = next(by_port[r["port"]] for r in table if r["master"] not in ("-", master_id))
    return master, its, other


@pytest.mark.timeout(60)
def test_on_a_cluster_awaited_writes_wait_on_the_node_of_the_slot(failover_cluster):
    """The awaitable forms send WAIT to the node serving the object's slot,
    on the connection that wrote: a frozen replica of that node's fails the
    write (ReplicationError naming the node), one of another node's does
    not; takes and acquisitions behave as on a single master; and a write
    whose slot moves to another node meanwhile (a resharding) follows it
    and is acknowledged by the new node's replica."""
    import asyncio

    from test_redis_faults import _SlotMigration

    cluster = failover_cluster
    with RedisManager(cluster.url, replicas=1, replica_timeout=TIMEOUT) as m:
        q = m.Queue(name=name())
        lock = m.Lock(name=name())
        master, its, other = _replicas_of(cluster, object_key(q.name, "items"))

        async def main():
            with frozen(other):
                await q.put_async("fine")
            with frozen(its):
                with pytest.raises(ReplicationError) as info:
                    await q.put_async("on the master only")
                assert info.value.server == master.address
                # A take returns what it took, acknowledged or not.
                assert await q.get_async(timeout=5) == "fine"
            assert await q.get_async(timeout=5) == "on the master only"
            async with lock:
                assert lock.locked()
            assert not lock.locked()
            await q.put_async("before")
            migration = _SlotMigration(cluster.url, q._meta)
            try:
                migration.start()
                migration.move_keys()
                asyncio.get_running_loop().call_later(1.0, migration.finish)
                await q.put_async("during")  # refused (TRYAGAIN) until the slot moved
                assert migration.finished
                assert await q.get_async(timeout=5) == "before"
                assert await q.get_async(timeout=5) == "during"
                # The slot's new node waits for its own replica.
                _, new_its, _ = _replicas_of(cluster, object_key(q.name, "items"))
                with frozen(new_its):
                    with pytest.raises(ReplicationError):
                        await q.put_async("unacknowledged")
                assert await q.get_async(timeout=5) == "unacknowledged"
            finally:
                migration.close()

        asyncio.run(main())
