"""The Manager: built-in types in shared memory without a server process,
and multiprocessing's server for Pool, registered typeids and remote use.

Multi-process tests run under fork, spawn and forkserver.  The tests of
dict, list and Namespace need interproc.containers.
"""

import ctypes
import inspect
import multiprocessing
import multiprocessing.managers
import queue

import pytest

import interproc
from interproc.managers import ManagerStateError, SyncManager

import _manager_helpers as mh
from _helpers import TIMEOUT, join_ok

AUTHKEY = b"interproc manager tests"

pytestmark = pytest.mark.timeout(120)

SYNC_TYPES = {
    "Lock": interproc.Lock,
    "RLock": interproc.RLock,
    "Semaphore": interproc.Semaphore,
    "BoundedSemaphore": interproc.BoundedSemaphore,
    "Condition": interproc.Condition,
    "Event": interproc.Event,
    "Queue": interproc.JoinableQueue,
    "JoinableQueue": interproc.JoinableQueue,
}


def make_every_builtin(m):
    """One of each built-in typeid that does not need the containers."""
    return {
        "Lock": m.Lock(),
        "RLock": m.RLock(),
        "Semaphore": m.Semaphore(2),
        "BoundedSemaphore": m.BoundedSemaphore(),
        "Condition": m.Condition(),
        "Event": m.Event(),
        "Barrier": m.Barrier(2),
        "Queue": m.Queue(),
        "JoinableQueue": m.JoinableQueue(4),
        "Value": m.Value("i", 5),
        "Array": m.Array("d", [1.0, 2.0]),
    }


def assert_no_server(m):
    assert m._process is None
    assert multiprocessing.active_children() == []


# ------------------------------------------------------------ no server


def test_manager_starts_no_server_process():
    m = interproc.Manager()
    assert isinstance(m, SyncManager)
    assert isinstance(m, multiprocessing.managers.SyncManager)
    make_every_builtin(m)
    assert_no_server(m)
    m.shutdown()
    m.join()
    assert_no_server(m)


def test_with_statement_starts_no_server_process():
    with interproc.Manager() as m:
        make_every_builtin(m)
        assert_no_server(m)
    with SyncManager() as m:
        make_every_builtin(m)
        assert_no_server(m)
    assert_no_server(m)


def test_builtin_typeids_return_interproc_objects():
    m = interproc.Manager()
    made = make_every_builtin(m)
    for typeid, cls in SYNC_TYPES.items():
        assert type(made[typeid]) is cls, typeid
    assert type(made["Barrier"]) is interproc.Barrier
    assert made["Semaphore"].get_value() == 2
    for typeid in ("Value", "Array"):
        assert type(made[typeid]).__module__ == "interproc.sharedctypes", typeid
    assert made["Value"].value == 5
    assert made["Array"][:] == [1.0, 2.0]
    assert made["Barrier"].parties == 2
    with pytest.raises(queue.Empty):
        made["Queue"].get(timeout=0)
    lock = m.Lock()
    with m.Condition(lock):
        assert lock.locked()
    assert m.Value("d", 1.5, lock=False).value == 1.5
    assert_no_server(m)


@pytest.mark.parametrize("typecode, first, second", [("i", 1, 2), ("d", 1.5, -2.5), ("c", b"x", b"y")])
def test_value_answers_get_and_set_as_the_proxy_does(typecode, first, second):
    """multiprocessing's ValueProxy has get() and set(); CPython's
    TestSyncManagerTypes.test_value uses them."""
    with interproc.Manager() as m:
        v = m.Value(typecode, first)
        assert v.get() == first
        v.set(second)
        assert v.value == second and v.get() == second


def test_value_and_array_refuse_pointers():
    m = interproc.Manager()
    for ctype in (ctypes.c_char_p, ctypes.c_wchar_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)):
        with pytest.raises(TypeError, match="pointer"):
            m.Value(ctype, None)
        with pytest.raises(TypeError, match="pointer"):
            m.Array(ctype, 2)
    with pytest.raises(TypeError):
        m.Value("not a typecode", 1)


def params(func):
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def test_builtin_methods_take_the_server_callables_arguments():
    # multiprocessing's methods are (*args, **kwds) passed to these callables.
    registry = multiprocessing.managers.SyncManager._registry
    for typeid in ("Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier",
                   "Queue", "JoinableQueue", "Value", "Array", "Namespace"):
        assert params(getattr(SyncManager, typeid))[1:] == params(registry[typeid][0]), typeid
    for typeid in ("Lock", "RLock"):
        assert params(getattr(SyncManager, typeid)) == params(lambda self: None)
    assert params(SyncManager.dict) == params(lambda self, *args, **kwds: None)
    assert params(SyncManager.list) == params(lambda self, sequence=(): None)
    assert inspect.signature(SyncManager) == inspect.signature(multiprocessing.managers.SyncManager)


def test_builtins_work_across_processes(start_method):
    m = interproc.Manager()
    lock, event, q, jq = m.Lock(), m.Event(), m.Queue(), m.JoinableQueue()
    value, array, barrier = m.Value("i", 0), m.Array("i", 4), m.Barrier(2)
    sem, cond, flag = m.Semaphore(1), m.Condition(), m.Value("i", 0)
    out = m.Queue()
    child = start_method.Process(
        target=mh.use_builtins,
        args=(lock, event, q, jq, value, array, barrier, sem, cond, flag, out),
    )
    child.start()
    assert barrier.wait(timeout=TIMEOUT) in (0, 1)
    assert event.wait(timeout=TIMEOUT)
    assert q.get(timeout=TIMEOUT) == "from child"
    assert jq.get(timeout=TIMEOUT) == "task"
    jq.task_done()
    jq.join()
    with cond:
        assert cond.wait_for(lambda: flag.value == 1, timeout=TIMEOUT)
    assert out.get(timeout=TIMEOUT)[0] == "barrier index"
    join_ok(child)
    assert value.value == 1
    assert array[:] == [0, 7, 0, 0]
    assert not sem.acquire(timeout=0)
    assert_no_server(m)


# ----------------------------------------------------- states and errors


def state_errors(make, start_first):
    """What a manager does through start, use and shutdown: one entry per
    step, the exception type and message or 'ok'."""
    m = make()
    steps = []

    def step(call):
        try:
            call()
        except Exception as exc:
            steps.append((type(exc).__name__, str(exc)))
        else:
            steps.append("ok")

    if start_first:
        step(m.start)
    step(m.start)                     # a second start
    step(m.get_server)
    step(m.__enter__)
    step(m.shutdown)
    step(m.shutdown)                  # a second shutdown
    step(m.join)
    step(m.start)                     # start after shutdown
    step(m.__enter__)
    step(m.get_server)
    return steps


@pytest.mark.parametrize("start_first", [False, True])
def test_states_and_errors_are_multiprocessings(start_first):
    if start_first:
        ours = state_errors(SyncManager, True)
        theirs = state_errors(multiprocessing.managers.SyncManager, True)
    else:
        ours = state_errors(interproc.Manager, False)
        theirs = state_errors(multiprocessing.Manager, False)
    assert ours == theirs
    assert multiprocessing.active_children() == []


def test_objects_cannot_be_made_before_start_or_after_shutdown():
    m = SyncManager()
    with pytest.raises(ManagerStateError, match="not started"):
        m.Lock()
    # Where multiprocessing's manager fails an assertion.
    with pytest.raises(AssertionError):
        m.Queue()
    with pytest.raises(AssertionError):
        m.Pool()
    remote = SyncManager(address=("127.0.0.1", 0), authkey=AUTHKEY)
    with pytest.raises(ManagerStateError, match="connect"):
        remote.dict()
    m = interproc.Manager()
    lock = m.Lock()
    m.shutdown()
    with pytest.raises(ManagerStateError, match="shut down"):
        m.Event()
    with pytest.raises(ManagerStateError, match="shut down"):
        m.Pool()
    # What was made before stays usable: it lives in shared memory.
    assert lock.acquire(timeout=1)
    lock.release()
    with pytest.raises(multiprocessing.ProcessError, match="shut down"):
        with m:
            pass


def test_explicit_start_starts_the_server_and_shutdown_stops_it():
    m = SyncManager()
    m.start()
    proc = m._process
    assert proc.is_alive()
    assert m.address is not None
    # Still shared memory: the manager was made without an address.
    assert type(m.Lock()) is interproc.Lock
    with pytest.raises(multiprocessing.ProcessError, match="Already started"):
        m.start()
    m.shutdown()
    assert not proc.is_alive()
    m.join()
    assert m._process is None


def test_reading_the_address_starts_the_server():
    with interproc.Manager() as m:
        assert m._process is None
        address = m.address
        assert address is not None
        assert m._process.is_alive()
        proc = m._process
    assert not proc.is_alive()


def test_initializer_runs_in_the_server():
    m = SyncManager()
    with pytest.raises(TypeError):
        m.start(initializer=42)
    m.start(initializer=mh.square, initargs=(3,))
    m.shutdown()


# --------------------------------------------------------- the server


def test_pool_through_the_manager(start_method):
    with SyncManager(ctx=start_method) as m:
        assert m._process is None
        with m.Pool(2) as pool:
            assert pool.map(mh.square, range(10)) == [n * n for n in range(10)]
            result = pool.apply_async(mh.square, (7,))
            assert result.get(timeout=TIMEOUT) == 49
        proc = m._process
        assert proc.is_alive()
        assert proc.name.startswith("SyncManager-")
    assert not proc.is_alive()
    assert multiprocessing.active_children() == []


def test_registered_typeid_used_from_children(start_method):
    with mh.CounterManager(ctx=start_method) as m:
        assert m._process is None
        counter = m.Counter(5)
        assert isinstance(counter, mh.CounterProxy)
        assert m._process.is_alive()
        children = [start_method.Process(target=mh.bump_counter, args=(counter, 10)) for _ in range(2)]
        for child in children:
            child.start()
        join_ok(*children)
        assert counter.get() == 25
        # The subclass keeps the built-in types in shared memory.
        assert type(m.Event()) is interproc.Event
    assert multiprocessing.active_children() == []


def test_two_threads_using_a_new_manager_start_one_server():
    import threading

    m = mh.CounterManager()
    m.__enter__()
    counters = []
    threads = [threading.Thread(target=lambda: counters.append(m.Counter())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(counters) == 4
    assert len(multiprocessing.active_children()) == 1
    m.shutdown()


def test_remote_manager_served_by_get_server_in_a_child(start_method):
    addresses = interproc.Queue()
    server = start_method.Process(target=mh.serve_counter_manager, args=(AUTHKEY, addresses))
    server.start()
    try:
        host, port = addresses.get(timeout=TIMEOUT)
        assert (host, port) != ("127.0.0.1", 0)
        client = mh.CounterManager(address=(host, port), authkey=AUTHKEY)
        client.connect()
        counter = client.Counter()
        d = client.dict()
        # Shared memory does not cross machines: a remote manager serves
        # the built-in types too, as multiprocessing's does.
        assert isinstance(d, multiprocessing.managers.DictProxy)
        assert not isinstance(client.Lock(), interproc.Lock)
        d["parent"] = True
        worker = start_method.Process(target=mh.use_remote_objects, args=(counter, d, 3))
        worker.start()
        join_ok(worker)
        assert counter.get() == 3
        assert d.copy() == {"parent": True, "k0": 0, "k1": 1, "k2": 2}

        other = mh.CounterManager(address=(host, port), authkey=AUTHKEY)
        other.connect()
        assert other.Counter(7).increment() == 8

        stranger = mh.CounterManager(address=(host, port), authkey=b"wrong key")
        with pytest.raises(multiprocessing.AuthenticationError):
            stranger.connect()
    finally:
        server.terminate()
        server.join(TIMEOUT)


def test_remote_manager_started_with_start():
    m = mh.CounterManager(address=("127.0.0.1", 0), authkey=AUTHKEY)
    m.start()
    try:
        host, port = m.address
        assert port != 0
        assert isinstance(m.dict(a=1), multiprocessing.managers.DictProxy)
        assert not isinstance(m.Queue(), interproc.Queue)
        client = mh.CounterManager(address=m.address, authkey=AUTHKEY)
        client.connect()
        shared = client.list([1, 2])
        shared.append(3)
        assert shared[:] == [1, 2, 3]
        assert client.Counter(1).get() == 1
        with pytest.raises(multiprocessing.AuthenticationError):
            mh.CounterManager(address=m.address, authkey=b"wrong key").connect()
    finally:
        m.shutdown()
    with pytest.raises(ManagerStateError, match="shut down"):
        m.dict()


def test_remote_manager_in_a_with_statement_starts_its_server():
    with SyncManager(address=("127.0.0.1", 0), authkey=AUTHKEY) as m:
        assert m._process.is_alive()
        assert m.address[1] != 0
        event = m.Event()
        assert not isinstance(event, interproc.Event)
        event.set()
        assert event.is_set()
    assert multiprocessing.active_children() == []


# --------------------------------------------- containers (dict, list, Namespace)


def test_containers_are_shared_memory_objects():
    from interproc.containers import Namespace, SharedDict, SharedList

    m = interproc.Manager()
    d = m.dict({"a": 1}, b=2)
    assert type(d) is SharedDict
    assert d == {"a": 1, "b": 2}
    # Every keyword is a key, as with multiprocessing's manager.
    assert m.dict(name="x", create=True, mode=1) == {"name": "x", "create": True, "mode": 1}
    assert m.dict() == {}
    lst = m.list(range(3))
    assert type(lst) is SharedList
    assert lst == [0, 1, 2]
    assert m.list() == []
    ns = m.Namespace(x=1, y="a")
    assert isinstance(ns, Namespace)
    assert (ns.x, ns.y) == (1, "a")
    assert repr(ns) == repr(multiprocessing.managers.Namespace(x=1, y="a"))
    # As with multiprocessing's, every keyword is an attribute.
    ns = m.Namespace(name="n", create=False, mode=1)
    assert (ns.name, ns.create, ns.mode) == ("n", False, 1)
    assert_no_server(m)


def test_containers_across_processes(start_method):
    m = interproc.Manager()
    d, lst, ns, out = m.dict(parent=0), m.list([0]), m.Namespace(x=41), m.Queue()
    child = start_method.Process(target=mh.use_containers, args=(d, lst, ns, out))
    child.start()
    join_ok(child)
    assert out.get(timeout=TIMEOUT) == ["child", "parent"]
    assert d == {"parent": 0, "child": [1, 2]}
    assert lst == [0, "a", "b"]
    assert ns.seen == 42
    assert_no_server(m)


def test_the_seed_program(start_method):
    d = interproc.Manager().dict()
    lst = interproc.Manager().list(range(5))
    procs = [start_method.Process(target=mh.seed_worker, args=(d, lst)) for _ in range(10)]
    for p in procs:
        p.start()
    join_ok(*procs)
    assert str(d) == "{1: '1', '2': 2}"
    assert str(lst) == "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"
    assert multiprocessing.active_children() == []


def test_containers_before_start_or_after_shutdown():
    m = SyncManager()
    with pytest.raises(ManagerStateError):
        m.dict()
    with m:
        m.list()
    with pytest.raises(ManagerStateError):
        m.Namespace()


def test_manager_queue_has_task_done_and_join():
    # multiprocessing's manager serves a queue.Queue, which has both.
    q = interproc.Manager().Queue()
    q.put(1)
    assert q.get(timeout=5) == 1
    q.task_done()
    q.join()


def test_set_is_shared_memory_unless_served(start_method):
    with interproc.Manager() as m:
        s = m.set("ab")
        assert isinstance(s, interproc.SharedSet) and s == {"a", "b"}
    # A manager with an address serves set() too, on every Python: the
    # typeid multiprocessing registers from 3.14 is registered here before.
    m = SyncManager(address=("127.0.0.1", 0), authkey=AUTHKEY)
    m.start()
    try:
        client = SyncManager(address=m.address, authkey=AUTHKEY)
        client.connect()
        s = client.set(["x"])
        assert not isinstance(s, interproc.SharedSet)
        worker = start_method.Process(target=mh.use_served_set, args=(s, 3))
        worker.start()
        join_ok(worker)
        assert s.copy() == {"x", 1, 2, "or"} and len(s) == 4 and "x" in s
        s &= {"x", 1}
        assert s.copy() == {"x", 1}
        assert s | {"y"} == {"x", 1, "y"}
    finally:
        m.shutdown()
