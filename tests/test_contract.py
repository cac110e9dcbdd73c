"""The behaviour every backend must show: one suite, run against each.

Each test gets a manager from the ``manager`` fixture, parametrized over the
backends: shared memory (``interproc.Manager()``) and Redis
(``interproc.Manager(url)`` on a real redis-server, skipped where none can
be started).  Tests only use what the contract in
``interproc.backends.contract`` names, so a backend that passes them can
replace another.
"""
import collections.abc
import queue
import threading
import time
import uuid

import pytest

import interproc
from interproc.backends import contract

import _contract_helpers as ch
from _helpers import join_ok

BACKENDS = ("shm", "redis", "redis-cluster")
_URL_FIXTURE = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}


@pytest.fixture(params=BACKENDS)
def manager(request):
    if request.param == "shm":
        m = interproc.Manager()
    else:
        try:
            url = request.getfixturevalue(_URL_FIXTURE[request.param])
        except pytest.FixtureLookupError:
            pytest.skip(f"no {_URL_FIXTURE[request.param]} fixture in this test suite")
        try:
            m = interproc.Manager(url)
        except TypeError:
            pytest.skip("this interproc has no Redis manager yet")
    with m:
        yield m


def test_manager_matches_the_contract(manager):
    assert contract.check_manager(manager) == []


# ------------------------------------------------------------- naming

# typeid -> positional arguments that make one object
_FACTORY_ARGS = {
    "dict": (), "list": (), "set": (), "Namespace": (), "Lock": (), "RLock": (), "Semaphore": (),
    "BoundedSemaphore": (), "Condition": (), "Event": (), "Barrier": (2,), "Queue": (),
    "JoinableQueue": (), "SimpleQueue": (), "Value": ("i", 0), "Array": ("i", [0, 0]),
}


def test_name_keywords_are_data_on_shm_and_names_on_redis(manager):
    """The one signature difference between the managers (see contract.py)."""
    if not contract.names_objects(manager):
        # multiprocessing's signatures: name= and create= are data
        d = manager.dict(name="jobs", create=True)
        assert d == {"name": "jobs", "create": True}
        ns = manager.Namespace(name="Bob")
        assert ns.name == "Bob"
        with pytest.raises(TypeError):
            manager.Lock(name="jobs")
        return
    d = manager.dict(name=f"t-{uuid.uuid4().hex}")
    try:
        assert len(d) == 0 and d.name is not None
    finally:
        d.unlink()


def _assert_same_object(typeid, made, opened, name):
    if typeid == "Namespace":  # its attributes are the shared data: name is one
        made.probe = name
        assert opened.probe == name
    else:
        assert made.name == opened.name == name


@pytest.mark.parametrize("typeid", sorted(_FACTORY_ARGS))
def test_every_factory_follows_the_open_create_rules(manager, typeid):
    if not contract.names_objects(manager):
        pytest.skip("this manager's factories do not name objects (see contract.py)")
    factory, args = getattr(manager, typeid), _FACTORY_ARGS[typeid]
    name = f"t-{typeid}-{uuid.uuid4().hex}"
    with pytest.raises(FileNotFoundError):
        factory(*args, name=name, create=False)
    with pytest.raises(ValueError):
        factory(*args, create=False)  # nothing to open without a name
    made = factory(*args, name=name, create=True)
    try:
        with pytest.raises(FileExistsError):
            factory(*args, name=name, create=True)
        _assert_same_object(typeid, made, factory(*args, name=name, create=False), name)
        _assert_same_object(typeid, made, factory(*args, name=name), name)  # create=None opens
        other = "Lock" if typeid not in ("Lock", "RLock") else "Event"
        with pytest.raises(TypeError):
            getattr(manager, other)(name=name)  # another kind under that name
        if typeid != "Namespace":
            assert factory(*args).name is None  # anonymous
    finally:
        made.unlink()
    with pytest.raises(FileNotFoundError):
        factory(*args, name=name, create=False)


# ----------------------------------------------------------------- dict

def test_dict_behaves_as_a_dict(manager):
    d = manager.dict({"a": 1}, b=2)
    d["c"] = [1, 2]
    d[(1, "x")] = None
    assert d == {"a": 1, "b": 2, "c": [1, 2], (1, "x"): None}
    assert len(d) == 4 and "a" in d and "z" not in d
    assert d.get("z", 5) == 5 and d.setdefault("a", 9) == 1 and d.setdefault("e", 3) == 3
    assert d.pop("e") == 3 and d.pop("e", None) is None
    assert list(d.keys()) == ["a", "b", "c", (1, "x")]
    assert list(d.values())[:2] == [1, 2]
    assert d.popitem() == ((1, "x"), None)
    d.update([("f", 6)], g=7)
    assert d.copy() == {"a": 1, "b": 2, "c": [1, 2], "f": 6, "g": 7}
    assert type(d.copy()) is dict
    del d["a"]
    d.clear()
    assert len(d) == 0 and d == {}


def test_dict_errors(manager):
    d = manager.dict()
    with pytest.raises(KeyError):
        d["missing"]
    with pytest.raises(KeyError):
        del d["missing"]
    with pytest.raises(TypeError):
        d[["unhashable"]] = 1
    with pytest.raises(Exception):
        d["x"] = threading.Lock()  # unpicklable
    assert len(d) == 0


def test_dict_keys_are_canonical(manager):
    d = manager.dict()
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1 and d[1] == "bool"
    assert list(d.keys()) == [1] and type(list(d.keys())[0]) is int
    d[(1, 2)] = "t"
    assert d[(1.0, 2)] == "t" and d[(True, 2.0)] == "t"
    d[frozenset({1, 2})] = "s"
    assert d[frozenset({2.0, 1})] == "s"


def test_dict_iteration_raises_when_the_size_changes(manager):
    d = manager.dict({i: i for i in range(10)})
    with pytest.raises(RuntimeError):
        for k in d:
            d[k + 100] = 1


def test_dict_increment_is_atomic_across_processes(manager, start_method):
    d = manager.dict()
    procs = [start_method.Process(target=ch.increment_many, args=(d, "n", 200)) for _ in range(3)]
    ch.run_all(procs)
    assert d["n"] == 600


def test_dict_lock_makes_a_compound_update_atomic(manager, start_method):
    d = manager.dict(total=0)
    procs = [start_method.Process(target=ch.locked_add, args=(d, 100)) for _ in range(3)]
    ch.run_all(procs)
    assert d["total"] == 300


def test_the_seed_program(manager, start_method):
    d, lst = manager.dict(), manager.list(range(5))
    procs = [start_method.Process(target=ch.seed_f, args=(d, lst)) for _ in range(10)]
    ch.run_all(procs)
    assert str(d) == "{1: '1', '2': 2}"
    assert str(lst) == "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"


def test_a_container_stored_in_another_stays_shared(manager, start_method):
    d = manager.dict()
    d["inner"] = manager.list()
    p = start_method.Process(target=ch.append_to_inner, args=(d, "x"))
    ch.run_all([p])
    assert list(d["inner"]) == ["x"]


# ----------------------------------------------------------------- list

def test_list_behaves_as_a_list(manager):
    lst = manager.list([3, 1, 2])
    lst.append(5)
    lst.extend([4])
    lst.insert(0, 0)
    assert lst == [0, 3, 1, 2, 5, 4] and len(lst) == 6
    assert lst[1] == 3 and lst[-1] == 4 and lst[1:3] == [3, 1] and lst[::2] == [0, 1, 5]
    lst[0] = 9
    lst[1:3] = ["a", "b", "c"]
    assert lst.copy() == [9, "a", "b", "c", 2, 5, 4]
    del lst[1:4]
    assert lst == [9, 2, 5, 4]
    lst.sort()
    assert lst == [2, 4, 5, 9]
    lst.reverse()
    assert lst == [9, 5, 4, 2] and lst.index(4) == 2 and lst.count(5) == 1 and 9 in lst
    assert lst.pop() == 2 and lst.pop(0) == 9
    lst.remove(5)
    lst += [7]
    lst *= 2
    assert lst == [4, 7, 4, 7]
    assert lst + [1] == [4, 7, 4, 7, 1] and type(lst.copy()) is list
    lst.clear()
    assert len(lst) == 0


def test_list_errors(manager):
    lst = manager.list([1])
    with pytest.raises(IndexError):
        lst[5]
    with pytest.raises(IndexError):
        manager.list().pop()
    with pytest.raises(ValueError):
        lst.remove(7)
    with pytest.raises(ValueError):
        lst.index(7)
    with pytest.raises(TypeError):
        lst["x"]


def test_list_appends_from_processes_lose_nothing(manager, start_method):
    lst = manager.list()
    procs = [start_method.Process(target=ch.append_many, args=(lst, i, 100)) for i in range(3)]
    ch.run_all(procs)
    assert sorted(lst) == sorted(i * 1000 + j for i in range(3) for j in range(100))


# ------------------------------------------ dict and list: 3.13 to 3.15

def test_dict_or_reversed_and_fromkeys_as_a_dict_proxy_has_them(manager):
    d = manager.dict(foo=5)
    d |= {"bar": 6}
    assert d == {"foo": 5, "bar": 6}
    x = reversed(d)
    assert isinstance(x, type(iter([]))) and list(x) == ["bar", "foo"]
    assert type({"baz": 7} | d) is dict and {"bar": 7, "baz": 7} | d == {"foo": 5, "bar": 6, "baz": 7}
    assert type(d | {"baz": 7}) is dict and d | {"bar": 7, "baz": 7} == {"foo": 5, "bar": 7, "baz": 7}
    assert d | manager.dict(q=1) == {"foo": 5, "bar": 6, "q": 1}
    x = d.fromkeys(["bar"], 6)
    assert type(x) is dict and x == {"bar": 6}
    assert d.fromkeys("ab") == {"a": None, "b": None}
    with pytest.raises(TypeError):
        d | [("x", 1)]
    d |= [("seq", 1)]  # as dict's |=, which takes what update() takes
    assert d["seq"] == 1 and d == {"foo": 5, "bar": 6, "seq": 1}


def test_dict_additions_seen_across_processes(manager, start_method):
    d = manager.dict(foo=5)
    ch.run_all([start_method.Process(target=ch.dict_ops_in_child, args=(d,))])
    assert d == {"foo": 5, "bar": 6, "later": 1}


def test_dict_or_assign_is_atomic(manager, start_method):
    """Every ``|=`` writes its round into all the keys at once: a reader
    never sees two rounds in one copy()."""
    keys = [f"k{i}" for i in range(50)]
    d = manager.dict({k: -1 for k in keys})
    out = manager.Queue()
    writer = start_method.Process(target=ch.or_batches_into_dict, args=(d, keys, 200))
    reader = start_method.Process(target=ch.read_dict_snapshots, args=(d, 200, out))
    ch.run_all([writer, reader])
    assert out.get(timeout=10) == []
    assert set(d.values()) == {199}


def test_list_clear_and_copy_across_processes(manager, start_method):
    lst = manager.list([5, 7])
    ch.run_all([start_method.Process(target=ch.list_ops_in_child, args=(lst,))])
    assert lst == ["after clear"] and lst.copy() == ["after clear"]
    assert type(lst.copy()) is list


def test_containers_are_generic_in_annotations(manager):
    for obj in (manager.dict(), manager.list(), manager.set()):
        alias = type(obj)[int]
        assert alias.__origin__ is type(obj) and alias.__args__ == (int,)


# ------------------------------------------------------------------ set

def test_set_behaves_as_a_set(manager):
    s = manager.set(["a", "b"])
    ref = {"a", "b"}
    assert s == ref and len(s) == 2 and "a" in s and "z" not in s
    assert manager.set({"x": 1, "y": 2}) == {"x", "y"}  # a dict gives its keys, as to set()
    assert manager.set() == set() and not manager.set()
    steps = [
        lambda x: x.add("c"),
        lambda x: x.add("a"),
        lambda x: x.discard("b"),
        lambda x: x.discard("nope"),
        lambda x: x.update(["d", "e"], ("f",)),
        lambda x: x.__ior__({"g"}),
        lambda x: x.__isub__({"g", "zz"}),
        lambda x: x.difference_update(["f"], {"e"}),
        lambda x: x.__iand__({"a", "c", "d", "q"}),
        lambda x: x.intersection_update({"a", "c", "d"}, ["a", "d", "w"]),
        lambda x: x.__ixor__({"d", "m"}),
        lambda x: x.symmetric_difference_update(["m", "n", "n"]),
        lambda x: x.remove("a"),
    ]
    for step in steps:
        step(s)
        step(ref)
        assert s == ref and len(s) == len(ref) and sorted(s) == sorted(ref)
    assert s == {"n"}
    assert s.pop() == "n" and len(s) == 0
    s.update(range(5))
    assert sorted(s) == [0, 1, 2, 3, 4]
    s.clear()
    assert len(s) == 0 and s == set()
    s.add(1)
    s.add(1.0)
    s.add(True)
    assert len(s) == 1 and type(list(s)[0]) is int  # one element, the first kept
    s.add((1, "x"))
    assert (1.0, "x") in s and frozenset({1, 2}) not in s


def test_set_errors(manager):
    s = manager.set(["a"])
    with pytest.raises(KeyError):
        s.remove("missing")
    with pytest.raises(TypeError):
        s.add(["unhashable"])
    with pytest.raises(TypeError):
        ["unhashable"] in s
    with pytest.raises(TypeError):
        s | ["a"]
    with pytest.raises(TypeError):
        s |= ["a"]
    with pytest.raises(TypeError):
        s < ["a"]
    with pytest.raises(TypeError):
        manager.set(1234)
    with pytest.raises(TypeError):
        s.update(["b", ["unhashable"]])
    assert s == {"a"}  # a bad element changes nothing
    s.clear()
    with pytest.raises(KeyError):
        s.pop()


def test_set_iteration_raises_when_the_size_changes(manager):
    s = manager.set(range(10))
    with pytest.raises(RuntimeError, match="Set changed size during iteration"):
        for x in s:
            s.add(x + 100)


def test_set_has_what_the_set_proxy_exposes(manager):
    s = manager.set()
    exposed = {
        "__and__", "__class_getitem__", "__contains__", "__iand__", "__ior__", "__isub__",
        "__iter__", "__ixor__", "__len__", "__or__", "__rand__", "__ror__", "__rsub__",
        "__rxor__", "__sub__", "__xor__", "__ge__", "__gt__", "__le__", "__lt__", "add",
        "clear", "copy", "difference", "difference_update", "discard", "intersection",
        "intersection_update", "isdisjoint", "issubset", "issuperset", "pop", "remove",
        "symmetric_difference", "symmetric_difference_update", "union", "update",
    }
    assert exposed <= set(dir(s))
    assert isinstance(s, collections.abc.MutableSet)
    assert not hasattr(s, "get") and not hasattr(s, "popitem")
    with pytest.raises(TypeError):
        s["a"]


def test_set_operations_seen_across_processes(manager, start_method):
    s = manager.set()
    ch.run_all([start_method.Process(target=ch.set_ops_in_child, args=(s,))])
    assert s == {"f", "g", "h"}


def test_set_stored_in_another_container_stays_shared(manager, start_method):
    d = manager.dict()
    d["s"] = manager.set(["x"])
    ch.run_all([start_method.Process(target=ch.add_to_inner_set, args=(d, "y"))])
    inner = d["s"]
    assert type(inner) is type(manager.set()) and inner == {"x", "y"}
    inner.add("z")
    assert d["s"] == {"x", "y", "z"}


def test_set_adds_from_processes_lose_nothing(manager, start_method):
    s = manager.set()
    procs = [start_method.Process(target=ch.add_many_to_set, args=(s, i, 60)) for i in range(3)]
    ch.run_all(procs)
    want = {(i, j) for i in range(3) for j in range(60)}
    want |= {(i, tag, j) for i in range(3) for tag in ("u", "o") for j in range(60)}
    assert s == want and len(s) == len(want)


def test_set_in_place_operations_are_atomic(manager, start_method):
    """``^=`` moves the set from one batch to the next in one step: a reader
    in another process sees one whole batch or another, never a mix."""
    batches = [[(b, i) for i in range(40)] for b in range(3)]
    s = manager.set(batches[0])
    out = manager.Queue()
    rounds = 150  # a multiple of len(batches): ends where it started
    writer = start_method.Process(target=ch.toggle_batches, args=(s, batches, rounds))
    reader = start_method.Process(target=ch.read_set_snapshots, args=(s, batches, 200, out))
    ch.run_all([writer, reader])
    assert out.get(timeout=10) == []
    assert s == set(batches[0])


# ------------------------------------------------------------ Namespace

def test_namespace(manager, start_method):
    ns = manager.Namespace(x=1)
    ns.name = "Bob"
    assert ns.x == 1 and ns.name == "Bob"
    assert repr(ns) == "Namespace(name='Bob', x=1)"
    with pytest.raises(AttributeError):
        ns.missing
    del ns.x
    with pytest.raises(AttributeError):
        ns.x
    ch.run_all([start_method.Process(target=ch.set_attr, args=(ns, "y", 42))])
    assert ns.y == 42


# ----------------------------------------------------------------- queues

def test_queue_fifo_maxsize_and_timeouts(manager):
    q = manager.Queue(2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.get() == 1 and q.get_nowait() == 2 and q.empty()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - started >= 0.09
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_queue_batches(manager):
    q = manager.Queue()
    q.put_many(list(range(10)))
    assert q.get_many(4) == [0, 1, 2, 3]
    assert q.get_many(100) == [4, 5, 6, 7, 8, 9]


def test_queue_between_processes(manager, start_method):
    q = manager.Queue()
    procs = [start_method.Process(target=ch.produce, args=(q, i, 50)) for i in range(2)]
    ch.run_all(procs)
    got = [q.get(timeout=10) for _ in range(100)]
    for i in range(2):
        mine = [x for x in got if x // 1000 == i]
        assert mine == sorted(mine)  # each producer's items in order


def test_joinable_queue(manager, start_method):
    q = manager.JoinableQueue()
    for i in range(5):
        q.put(i)
    p = start_method.Process(target=ch.consume_and_ack, args=(q, 5))
    p.start()
    q.join()
    join_ok(p)
    with pytest.raises(ValueError):
        q.task_done()


def test_simple_queue(manager):
    q = manager.SimpleQueue()
    assert q.empty()
    q.put("x")
    assert not q.empty() and q.get() == "x"


# ---------------------------------------------------------- sync primitives

def test_lock_excludes_across_processes(manager, start_method):
    lock, d = manager.Lock(), manager.dict(n=0)
    procs = [start_method.Process(target=ch.lock_guarded_add, args=(lock, d, 100)) for _ in range(3)]
    ch.run_all(procs)
    assert d["n"] == 300


def test_lock_and_rlock_rules(manager):
    lock = manager.Lock()
    assert lock.acquire() and not lock.acquire(False) and not lock.acquire(timeout=0.05)
    lock.release()
    with pytest.raises((ValueError, RuntimeError)):
        lock.release()
    rlock = manager.RLock()
    with rlock:
        with rlock:
            pass
    with pytest.raises((AssertionError, RuntimeError)):
        rlock.release()


def test_semaphores(manager):
    s = manager.Semaphore(2)
    assert s.acquire() and s.acquire() and not s.acquire(timeout=0.05)
    s.release()
    s.release()
    b = manager.BoundedSemaphore(1)
    b.acquire()
    b.release()
    with pytest.raises(ValueError):
        b.release()


def test_event_wakes_other_processes(manager, start_method):
    ev, out = manager.Event(), manager.Queue()
    p = start_method.Process(target=ch.wait_event, args=(ev, out))
    p.start()
    assert not ev.is_set() and not ev.wait(0.05)
    ev.set()
    assert out.get(timeout=10) is True
    join_ok(p)
    ev.clear()
    assert not ev.is_set()


def test_condition_notify(manager, start_method):
    cond, out = manager.Condition(), manager.Queue()
    p = start_method.Process(target=ch.wait_condition, args=(cond, out))
    p.start()
    assert out.get(timeout=10) == "waiting"
    with cond:
        cond.notify_all()
    assert out.get(timeout=10) is True
    join_ok(p)


def test_barrier(manager, start_method):
    b = manager.Barrier(2)
    p = start_method.Process(target=ch.barrier_rounds, args=(b, 3))
    p.start()
    for _ in range(3):
        b.wait(timeout=10)
    join_ok(p)
    assert b.parties == 2 and not b.broken
    b.abort()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(timeout=1)


# ---------------------------------------------------------- Value and Array

def test_value_and_array(manager, start_method):
    v, a = manager.Value("i", 0), manager.Array("d", [0.0, 0.0])
    procs = [start_method.Process(target=ch.bump_value_and_array, args=(v, a, 100)) for _ in range(2)]
    ch.run_all(procs)
    assert v.value == 200
    assert a[0] == 200.0 and list(a[:]) == [200.0, 0.0] and len(a) == 2


# --------------------------------------------------------- queue shutdown

QUEUE_KINDS = ("Queue", "JoinableQueue", "SimpleQueue")


def _waiting(manager, start_method, target, *args):
    """A child running target(*args, ready, ...) and the moment it is about
    to block: the parent then gives it time to get there.  Whether it has
    or not, the outcome asked of shutdown is the same; the pause only makes
    the blocked path the one usually taken."""
    ready = manager.Queue()
    p = start_method.Process(target=target, args=args[:1] + (ready,) + args[1:])
    p.start()
    assert ready.get(timeout=ch.TIMEOUT) == "ready"
    time.sleep(0.3)
    return p


def test_shutdown_exception_is_one_class():
    assert interproc.ShutDown is interproc.queues.ShutDown
    assert issubclass(interproc.ShutDown, Exception)
    if hasattr(queue, "ShutDown"):
        assert interproc.ShutDown is queue.ShutDown


@pytest.mark.parametrize("kind", QUEUE_KINDS)
def test_queue_shutdown_refuses_puts_in_other_processes(manager, start_method, kind):
    q = getattr(manager, kind)()
    assert not q.is_shutdown
    q.put("kept")
    q.shutdown()
    assert q.is_shutdown
    ch.run_all([start_method.Process(target=ch.puts_after_shutdown,
                                     args=(q, kind == "SimpleQueue"))])
    assert q.get() == "kept"


@pytest.mark.parametrize("kind", QUEUE_KINDS)
def test_queue_shutdown_drains_then_raises_in_other_processes(manager, start_method, kind):
    q, out = getattr(manager, kind)(), manager.Queue()
    for i in range(3):
        q.put(i)
    q.shutdown()
    ch.run_all([start_method.Process(target=ch.drain_after_shutdown,
                                     args=(q, 3, out, kind == "SimpleQueue"))])
    assert out.get(timeout=ch.TIMEOUT) == [0, 1, 2]
    with pytest.raises(interproc.ShutDown):
        q.get()


def test_queue_shutdown_wakes_blocked_gets_in_other_processes(manager, start_method):
    q, out = manager.Queue(), manager.Queue()
    # One waiter is SIGKILLed while it blocks: it must not hold the others back.
    victim = _waiting(manager, start_method, ch.blocked_forever, q, "get")
    victim.kill()
    victim.join(ch.TIMEOUT)
    waiters = [_waiting(manager, start_method, ch.blocked_get, q, out) for _ in range(2)]
    q.shutdown()
    assert [out.get(timeout=ch.TIMEOUT) for _ in waiters] == ["ShutDown", "ShutDown"]
    join_ok(*waiters)


def test_queue_shutdown_wakes_a_blocked_put(manager, start_method):
    q, out = manager.Queue(1), manager.Queue()
    q.put("first")
    victim = _waiting(manager, start_method, ch.blocked_forever, q, "put")
    victim.kill()
    victim.join(ch.TIMEOUT)
    p = _waiting(manager, start_method, ch.blocked_put, q, out)
    q.shutdown()
    assert out.get(timeout=ch.TIMEOUT) == "ShutDown"
    join_ok(p)
    assert q.get() == "first"  # drained after the shutdown
    with pytest.raises(interproc.ShutDown):
        q.get(timeout=ch.TIMEOUT)


def test_immediate_shutdown_discards_and_releases_join(manager, start_method):
    q, out = manager.JoinableQueue(), manager.Queue()
    q.put_many(list(range(5)))
    assert q.get() == 0  # taken before the shutdown: its task is still to finish
    victim = _waiting(manager, start_method, ch.blocked_forever, q, "join")
    victim.kill()
    victim.join(ch.TIMEOUT)
    p = _waiting(manager, start_method, ch.blocked_join, q, out)
    q.shutdown(immediate=True)
    assert q.is_shutdown and q.qsize() == 0
    with pytest.raises(interproc.ShutDown):
        q.get(timeout=ch.TIMEOUT)  # at once, not after the timeout
    with pytest.raises(queue.Empty):
        out.get(timeout=0.2)  # one task is unfinished yet
    q.task_done()
    assert out.get(timeout=ch.TIMEOUT) == "joined"
    join_ok(p)
    with pytest.raises(ValueError):
        q.task_done()  # the discarded items counted as done
    q.join()


def test_immediate_shutdown_of_untaken_items_ends_join_at_once(manager):
    q = manager.JoinableQueue()
    q.put_many(list(range(3)))
    q.shutdown(immediate=True)
    q.join()


def test_shutdown_twice_and_upgrade_to_immediate(manager):
    q = manager.Queue()
    q.put_many([1, 2, 3])
    q.shutdown()
    q.shutdown()
    assert q.get() == 1 and q.qsize() == 2
    q.shutdown(immediate=True)
    assert q.is_shutdown and q.qsize() == 0
    with pytest.raises(interproc.ShutDown):
        q.get_nowait()
    q.shutdown()  # a plain shutdown after an immediate one changes nothing
    with pytest.raises(interproc.ShutDown):
        q.get_many(timeout=ch.TIMEOUT)


def test_put_many_stopped_by_shutdown_says_how_many_went_in(manager):
    q = manager.Queue()
    q.shutdown()
    with pytest.raises(interproc.ShutDown) as info:
        q.put_many([1, 2])
    assert info.value.count == 0
