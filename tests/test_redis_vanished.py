"""An object whose keys vanished under a live handle -- unlinked, its
manager shut down, the server's data lost -- raises ObjectGoneError from
every operation, and nothing is made afresh from nothing."""
import multiprocessing
import uuid

import pytest

pytest.importorskip("redis")

import interproc  # noqa: E402
from interproc.backends.redis import ObjectGoneError  # noqa: E402


def _unique():
    return f"t-redis-gone-{uuid.uuid4().hex[:10]}"


def _keys_of(client, ident):
    return {k.decode() for k in client.scan_iter(match=f"ip:{{{ident}}}*", count=1000)}


# Operations of each kind that read or write its state (not blocking waits).
OPERATIONS = {
    "dict": (lambda m: m.dict({"a": 1}), [lambda d: d.__setitem__("b", 2), lambda d: d["a"], len]),
    "list": (lambda m: m.list([1]), [lambda lst: lst.append(2), lambda lst: lst[0], len]),
    "set": (lambda m: m.set({1}), [lambda s: s.add(2), lambda s: 1 in s, len]),
    "Namespace": (lambda m: m.Namespace(x=1), [lambda ns: setattr(ns, "y", 2), lambda ns: ns.x]),
    "Queue": (lambda m: m.Queue(), [lambda q: q.put(1), lambda q: q.qsize(),
                                    lambda q: q.is_shutdown, lambda q: q.shutdown()]),
    "JoinableQueue": (lambda m: m.JoinableQueue(), [lambda q: q.put(1), lambda q: q.join()]),
    "SimpleQueue": (lambda m: m.SimpleQueue(), [lambda q: q.put(1), lambda q: q.empty()]),
    "Lock": (lambda m: m.Lock(), [lambda lk: lk.acquire(timeout=1), lambda lk: lk.locked()]),
    "RLock": (lambda m: m.RLock(), [lambda lk: lk.acquire(timeout=1), lambda lk: lk.locked()]),
    "Semaphore": (lambda m: m.Semaphore(2), [lambda s: s.release(), lambda s: s.get_value()]),
    "BoundedSemaphore": (lambda m: m.BoundedSemaphore(2), [lambda s: s.acquire(timeout=1)]),
    "Condition": (lambda m: m.Condition(), [lambda c: c.acquire(timeout=1), lambda c: c.notify_all()]),
    "Event": (lambda m: m.Event(), [lambda e: e.set(), lambda e: e.clear(), lambda e: e.is_set(),
                                    lambda e: e.wait(1)]),
    "Barrier": (lambda m: m.Barrier(2), [lambda b: b.n_waiting, lambda b: b.reset(), lambda b: b.abort()]),
    "Value": (lambda m: m.Value("i", 1), [lambda v: setattr(v, "value", 2), lambda v: v.value,
                                          lambda v: v.get_obj().value, lambda v: v.fetch_add(1)]),
    "Array": (lambda m: m.Array("i", [1, 2]), [lambda a: a.__setitem__(0, 5), lambda a: a[:]]),
}


@pytest.mark.parametrize("kind", sorted(OPERATIONS))
def test_every_kind_raises_after_its_data_is_lost(private_redis, kind):
    """The server lost everything (as a restart without persistence does):
    every operation says so, and makes no key."""
    import redis

    server = private_redis()
    client = redis.Redis.from_url(server.url)
    make, operations = OPERATIONS[kind]
    with interproc.Manager(server.url) as m:
        obj = make(m)
        assert client.dbsize() > 0
        client.flushall()
        for i, operate in enumerate(operations):
            with pytest.raises(ObjectGoneError, match="no longer exists"):
                operate(obj)
            assert client.dbsize() == 0, f"operation {i} made keys afresh"


def test_handles_raise_after_their_manager_shut_down_in_every_process(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    m = interproc.Manager(redis_url)
    d, q = m.dict({"a": 1}), m.Queue()
    ids = [d._ident, q._ident]
    m.shutdown()
    assert not any(_keys_of(client, i) for i in ids)
    with pytest.raises(ObjectGoneError):
        d["b"] = 2
    with pytest.raises(ObjectGoneError):
        q.put(1)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_use_after_shutdown, (d, q)) == ["ObjectGoneError", "ObjectGoneError"]
    assert not any(_keys_of(client, i) for i in ids), "a key was made again after shutdown"


def _use_after_shutdown(d, q):
    seen = []
    for op in (lambda: d.__setitem__("c", 3), lambda: q.put(2)):
        try:
            op()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            seen.append(type(exc).__name__)
        else:
            seen.append("no error")
    return seen


def test_a_name_unlinked_and_made_again_is_another_object(redis_url):
    name = _unique()
    with interproc.Manager(redis_url) as m:
        old = m.dict({"a": 1}, name=name)
        other = m.dict(name=name)
        assert other["a"] == 1
        old.unlink()
        with pytest.raises(ObjectGoneError):
            other["a"]
        again = m.dict({"b": 2}, name=name)
        # The old handles opened the first incarnation: they do not
        # silently carry on with the second.
        with pytest.raises(ObjectGoneError):
            other["b"]
        with pytest.raises(ObjectGoneError):
            old["b"] = 3
        assert dict(again) == {"b": 2}
        again.unlink()


def test_a_handle_passed_by_reference_or_pickle_keeps_its_incarnation(redis_url):
    name = _unique()
    with interproc.Manager(redis_url) as m:
        q = m.Queue(name=name)
        box = m.list([q])
        via_ref = box[0]
        via_ref.put("x")
        assert q.get(timeout=5) == "x"
        q.unlink()
        m.Queue(name=name)  # another incarnation under the name
        with pytest.raises(ObjectGoneError):
            via_ref.put("y")
        import pickle

        with pytest.raises(ObjectGoneError):
            pickle.loads(pickle.dumps(q)).put("z")
        m.Queue(name=name).unlink()


@pytest.mark.parametrize("how", ["get", "get-timeout", "get_nowait", "get_many", "bounded-get",
                                 "fresh-handle-get"])
def test_taking_from_a_queue_that_is_gone_raises(private_redis, how):
    """Every way of taking: the one-script take of a consumer that took
    before, the blocking pipeline of one that did not, with and without a
    timeout."""
    import redis

    server = private_redis()
    client = redis.Redis.from_url(server.url)
    with interproc.Manager(server.url) as m:
        q = m.Queue(maxsize=5 if how == "bounded-get" else 0, name=_unique())
        q.put("first")
        if how != "fresh-handle-get":
            assert q.get(timeout=5) == "first"  # the consumer is registered
        other = m.Queue(name=q.name) if how == "fresh-handle-get" else q
        client.flushall()
        take = {
            "get": lambda: other.get(),
            "get-timeout": lambda: other.get(timeout=30),
            "get_nowait": other.get_nowait,
            "get_many": lambda: other.get_many(10, timeout=30),
            "bounded-get": lambda: other.get(timeout=30),
            "fresh-handle-get": lambda: other.get(timeout=30),
        }[how]
        with pytest.raises(ObjectGoneError):
            take()
        assert client.dbsize() == 0, "the take made keys afresh"


@pytest.mark.timeout(60)
def test_a_server_restarted_without_persistence_is_detected(private_redis):
    """The issue's case: a restart that lost everything.  Producers and
    consumers learn it at their next operation instead of carrying on with
    an empty queue, a free lock and a semaphore back at its start."""
    server = private_redis(persistent=False)
    m = interproc.Manager(server.url, socket_timeout=10)
    q, lock, sem = m.Queue(), m.Lock(), m.Semaphore(3)
    for i in range(100):
        q.put(i)
    assert lock.acquire(timeout=5) and sem.acquire(timeout=5)
    server.stop()
    server.start()
    for op in (lambda: q.put("after"), lambda: q.get(timeout=5), lambda: sem.acquire(timeout=1),
               lambda: sem.release(), lambda: lock.locked()):
        with pytest.raises(ObjectGoneError):
            op()
    with pytest.raises(ObjectGoneError):
        lock.release()
    m.shutdown()


@pytest.mark.timeout(60)
def test_a_server_restarted_with_persistence_keeps_every_object(private_redis):
    """With `appendfsync always` every acknowledged write comes back, and
    the handles go on as if nothing happened."""
    server = private_redis(persistent=True)
    m = interproc.Manager(server.url, socket_timeout=10)
    q, d = m.Queue(), m.dict()
    for i in range(100):
        q.put(i)
        d[i] = -i
    server.stop()
    server.start()
    assert [q.get(timeout=5) for _ in range(100)] == list(range(100))
    assert dict(d) == {i: -i for i in range(100)}
    q.put("after")
    assert q.get(timeout=5) == "after"
    m.shutdown()
