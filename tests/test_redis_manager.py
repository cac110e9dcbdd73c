"""interproc.Manager(url) and RedisManager against real Redis servers."""
import multiprocessing
import os
import subprocess
import sys
import uuid

import pytest

pytest.importorskip("redis")

import _redis_data_helpers as helpers  # noqa: E402

import interproc  # noqa: E402
from interproc import _core, cli  # noqa: E402
from interproc.backends.redis import RedisManager, SignatureError  # noqa: E402
from interproc.managers import ManagerStateError, SyncManager  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _keys_of(client, obj_id):
    return {k.decode() for k in client.scan_iter(match=f"ip:{{{obj_id}}}*", count=1000)}


def _unique():
    return f"t-redis-mgr-{uuid.uuid4().hex[:10]}"


def test_manager_dispatch(redis_url):
    m = interproc.Manager()
    assert isinstance(m, SyncManager)
    m.shutdown()
    with pytest.raises(TypeError):
        interproc.Manager(authkey=b"x")
    r = interproc.Manager(redis_url)
    assert isinstance(r, RedisManager)
    with pytest.raises(multiprocessing.ProcessError):
        r.start()  # already started, as multiprocessing says
    r.shutdown()
    r.shutdown()
    with pytest.raises(ManagerStateError):
        r.dict()
    with pytest.raises(ValueError):
        interproc.Manager("http://localhost:6379")
    unstarted = RedisManager(redis_url)
    with pytest.raises(ManagerStateError):
        unstarted.list()
    with unstarted as m2:
        assert m2 is unstarted and m2.list([1]) == [1]


def test_seed_program(redis_url, start_method):
    # The tutorial's Manager example, with the URL as the only change.
    with interproc.Manager(redis_url) as manager:
        d = manager.dict()
        lst = manager.list(range(5))
        procs = [start_method.Process(target=helpers.seed_child, args=(d, lst)) for _ in range(10)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert str(d) == "{1: '1', '2': 2}"
        assert str(lst) == "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"


def test_seed_program_with_a_manager_each(redis_url):
    # The seed makes a Manager() per object and keeps none of them: the
    # objects keep their manager, so nothing is deleted under them.
    d = interproc.Manager(redis_url).dict()
    lst = interproc.Manager(redis_url).list(range(5))
    import gc
    gc.collect()
    d[1] = "1"
    lst.append(1)
    assert d == {1: "1"} and lst == [0, 1, 2, 3, 4, 1]
    d._manager.shutdown()
    lst._manager.shutdown()


def test_every_type(redis_url):
    with interproc.Manager(redis_url) as m:
        ns = m.Namespace(a=1, name=None)
        ns.b = 2
        assert repr(ns) == "Namespace(a=1, b=2)"
        assert m.dict({"a": 1}, b=2) == {"a": 1, "b": 2}
        assert m.dict(codec=1) == {"codec": 1}  # content keys are never options
        q = m.Queue()
        q.put(1)
        assert q.get() == 1
        q.task_done()
        q.join()
        jq = m.JoinableQueue(2)
        jq.put("x")
        sq = m.SimpleQueue()
        sq.put(2)
        assert sq.get() == 2
        for lock in (m.Lock(), m.RLock()):
            with lock:
                pass
        sem = m.Semaphore(2)
        assert sem.acquire() and sem.acquire() and not sem.acquire(timeout=0.05)
        bsem = m.BoundedSemaphore(1)
        with pytest.raises(ValueError):
            bsem.release()
        ev = m.Event()
        ev.set()
        assert ev.wait(1)
        cond = m.Condition()
        with cond:
            cond.notify_all()
        bar = m.Barrier(1)
        assert bar.wait(5) == 0
        v = m.Value("i", 7)
        with v.get_lock():
            v.value += 1
        assert v.value == 8
        a = m.Array("d", [1.0, 2.0])
        assert a[:] == [1.0, 2.0]


def test_shutdown_deletes_anonymous_keys_and_keeps_named(redis_url):
    name = _unique()
    m = interproc.Manager(redis_url)
    client = m.connection.client
    anon = [m.dict(a=1), m.list([1]), m.Namespace(x=1), m.Value("i", 1), m.Array("i", 2),
            m.Queue(), m.Lock(), m.Event(), m.Barrier(2), m.Semaphore()]
    named = m.dict({"k": 1}, name=name)
    with anon[0].lock:
        anon[0]["b"] = 2
    ids = [getattr(o, "_id", None) or getattr(o, "_ident") for o in anon]
    assert all(_keys_of(client, i) for i in ids)
    m.shutdown()
    leftovers = {i: _keys_of(client, i) for i in ids}
    assert not any(leftovers.values()), leftovers
    assert _keys_of(client, name)
    again = interproc.Manager(redis_url)
    assert again.dict(name=name, create=False) == {"k": 1}
    named.unlink()
    assert not _keys_of(client, name)
    with pytest.raises(FileNotFoundError):
        again.dict(name=name, create=False)
    again.shutdown()


def test_named_objects_from_an_unrelated_process(redis_url):
    names = {k: _unique() for k in ("dict", "list", "ns", "value", "array")}
    m = interproc.Manager(redis_url)
    try:
        d = m.dict({"parent": 1}, name=names["dict"])
        lst = m.list([0], name=names["list"])
        ns = m.Namespace(name=names["ns"])
        ns.parent = 41
        v = m.Value("i", 1, name=names["value"])
        a = m.Array("d", [1.5, 0.0], name=names["array"])
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import _redis_data_helpers as h; "
                "h.fill_named(sys.argv[2], eval(sys.argv[3]))")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([sys.executable, "-c", code, TESTS_DIR, redis_url, repr(names)],
                       check=True, timeout=60, env=env)
        assert d == {"parent": 1, "child": {"parent": 1}}
        assert lst == [0, 1, "child"]
        assert ns.child == 42
        assert v.value == 101
        assert a[:] == [1.5, 3.0]
    finally:
        for obj in (d, lst, ns, v, a):
            obj.unlink()
        m.shutdown()


def test_authkey(redis_url, start_method):
    field = _core.encode_key("a")
    with interproc.Manager(redis_url, authkey=b"secret") as m:
        d = m.dict()
        d["a"] = [1, {"b": 2}]
        assert d["a"] == [1, {"b": 2}]
        # Handles passed to children keep the key.
        lst = m.list(range(5))
        p = start_method.Process(target=helpers.seed_child, args=(d, lst))
        p.start()
        p.join(60)
        assert p.exitcode == 0 and d[1] == "1" and lst[-1] == 1
        client = m.connection.client
        # A payload signed with another key, or not signed, is refused.
        with interproc.Manager(redis_url, authkey=b"other") as other:
            elsewhere = other.dict(a="forged")
            client.hset(d._keylist[1], field, client.hget(elsewhere._keylist[1], field))
        with pytest.raises(SignatureError):
            d["a"]
        with interproc.Manager(redis_url) as nokey:
            plain = nokey.list(["unsigned"])
            client.lset(lst._keylist[1], 0, client.lindex(plain._keylist[1], 0))
        with pytest.raises(SignatureError):
            lst[0]


def test_json_serializer(redis_url):
    with interproc.Manager(redis_url, serializer="json") as m:
        d = m.dict()
        d["plain"] = {"a": [1, 2.5, None, True, "s"]}
        assert d["plain"] == {"a": [1, 2.5, None, True, "s"]}
        with pytest.raises(TypeError):
            d["tuple"] = (1, 2)
        with pytest.raises(TypeError):
            d["set"] = {1}
        q = m.Queue()
        with pytest.raises(TypeError):
            q.put(object())
        lst = m.list()
        d["nested"] = lst  # a shared object is a reference in any serializer
        d["nested"].append(1)
        assert lst == [1]


def test_cluster_manager_smoke(redis_cluster_url):
    with interproc.Manager(redis_cluster_url) as m:
        assert m.connection.is_cluster
        d = m.dict(a=1)
        lst = m.list(range(3))
        ns = m.Namespace(x=1)
        v = m.Value("i", 0)
        a = m.Array("i", 2)
        q = m.Queue()
        lock = m.Lock()
        d["l"] = lst
        d["l"].append(3)
        with lock:
            v.value += 1
        a[0] = 5
        q.put(d)
        assert q.get() == {"a": 1, "l": [0, 1, 2, 3]}
        assert (ns.x, v.value, a[:]) == (1, 1, [5, 0])
        ids = [o._ident for o in (d, lst, ns, v, a)]
        client = m.connection.client
    assert not any(_keys_of(client, i) for i in ids)


def test_cli_demo_url(redis_url, capsys):
    assert cli.main(["demo", "manager", "--url", redis_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["== Manager ==", "{1: '1', '2': 2}",
                   "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    assert cli.main(["demo", "--help"]) == 0
    assert "--url" in capsys.readouterr().out
    assert cli.main(["demo", "manager", "--url", "redis://127.0.0.1:1/0"]) == 1
    assert "cannot use the Redis server" in capsys.readouterr().err
