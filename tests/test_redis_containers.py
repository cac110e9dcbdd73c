"""RedisDict, RedisList, RedisNamespace, Value and Array against real Redis servers.

The semantics are those of SharedDict, SharedList and Namespace (and of
multiprocessing's Value and Array): most checks run the same operations on
the Redis object and on a plain dict or list and compare.
"""
import ctypes
import enum
import pickle
import random
import threading
import time

import pytest

pytest.importorskip("redis")

import _redis_data_helpers as helpers  # noqa: E402

from interproc import _core  # noqa: E402
from interproc.backends.redis import SignatureError  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.codec import Codec  # noqa: E402
from interproc.backends.redis.containers import (  # noqa: E402
    RedisDict, RedisList, RedisNamespace, RedisSet)
from interproc.backends.redis.sharedctypes import Array, Value  # noqa: E402




@pytest.fixture
def mk(conn, made):
    """``mk(cls, *args, **kwargs)``: a new object on the standalone server."""
    def make(cls, *args, **kwargs):
        obj = cls(conn, *args, **kwargs)
        made.append(obj)
        return obj
    return make


class Color(enum.IntEnum):
    RED = 1


# ------------------------------------------------------------------- dict

# Signed: pop and popitem decode before they remove (another path).
@pytest.mark.parametrize("authkey", [None, b"api"], ids=["unsigned", "signed"])
def test_dict_basic_api_matches_dict(mk, authkey):
    d, ref = mk(RedisDict, {1: "a"}, b=2, codec=Codec(authkey=authkey)), {1: "a", "b": 2}
    for op in [
        lambda x: x.__setitem__(True, "t"),        # 1, True, 1.0 are one key
        lambda x: x.__setitem__(2.5, "f"),
        lambda x: x.__setitem__((1, "z", None), "tuple"),
        lambda x: x.__setitem__(frozenset({1, 2}), "fs"),
        lambda x: x.__setitem__(b"raw", "bytes"),
        lambda x: x.__setitem__(None, "none"),
        lambda x: x.__setitem__(2**70, "big"),
        lambda x: x.setdefault("sd", [1]),
        lambda x: x.setdefault("sd", [2]),
        lambda x: x.update({"u": 1}, v=2),
        lambda x: x.update([("w", 3)]),
        lambda x: x.pop("u"),
        lambda x: x.pop("missing", "dflt"),
        lambda x: x.__delitem__(2.5),
        lambda x: x.__setitem__(2.5, "again"),      # re-inserted: goes last
        lambda x: x.popitem(),
        lambda x: x.__setitem__((2, True), "a key kept in k"),
        lambda x: x.popitem(),
        lambda x: x.__ior__({"or": 1}),
    ]:
        got, expected = op(d), op(ref)
        if not isinstance(got, RedisDict):
            assert got == expected
        assert list(d.items()) == list(ref.items())
    assert len(d) == len(ref)
    assert d == ref and not (d != ref)
    assert str(d) == str(ref)
    assert repr(d) == f"RedisDict({ref!r})"
    assert d.copy() == ref and type(d.copy()) is dict
    assert list(reversed(d)) == list(reversed(ref))
    assert d | {"x": 1} == ref | {"x": 1}
    assert {"x": 1} | d == {"x": 1} | ref
    assert list(d.keys()) == list(ref.keys()) and list(d.values()) == list(ref.values())
    assert d.keys() & {1, "b"} == {1, "b"}
    assert (1, "t") in d.items()
    assert d.get("nope") is None and d.get("nope", 5) == 5
    assert 1.0 in d and "nope" not in d


def test_dict_keeps_the_first_key_object(mk):
    d = mk(RedisDict)
    d[True] = "a"
    d[1] = "b"
    d[1.0] = "c"
    d[Color.RED] = "d"
    d[0.0] = "z"
    d[-0.0] = "zz"
    keys = list(d)
    assert keys == [True, 0.0] and type(keys[0]) is bool and type(keys[1]) is float
    assert d[1] == "d"
    ref = {}
    ref[Color.RED] = 1
    d2 = mk(RedisDict)
    d2[Color.RED] = 1
    assert list(d2) == list(ref) and type(list(d2)[0]) is Color


def test_dict_errors(mk):
    d = mk(RedisDict, a=1)
    with pytest.raises(KeyError) as info:
        d["missing"]
    assert info.value.args == ("missing",)
    with pytest.raises(KeyError):
        del d["missing"]
    with pytest.raises(TypeError):
        d[[1]] = 1
    with pytest.raises(TypeError):
        [1] in d
    with pytest.raises(KeyError, match="empty"):
        mk(RedisDict).popitem()
    # An unpicklable value raises and changes nothing, in update too.
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        d["lock"] = threading.Lock()
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        d.update({"b": 2, "lock": threading.Lock()})
    assert d == {"a": 1}
    with pytest.raises(TypeError):
        d.update(1, 2)
    with pytest.raises(ValueError):
        d.update([(1, 2, 3)])


def test_dict_iteration_detects_changes(mk):
    d = mk(RedisDict, {i: i for i in range(100)})
    with pytest.raises(RuntimeError, match="changed size"):
        for k in d:
            d["new"] = 1
    del d["new"]
    with pytest.raises(RuntimeError, match="keys changed"):
        for k in d:
            if k == 0:
                del d[0]
                d["other"] = 0
    # Changing values is fine.
    for k in d:
        d[k] = "v"
    assert set(d.values()) == {"v"}


@pytest.mark.parametrize("view", ["dict", "keys", "values", "items"])
def test_dict_iteration_detects_a_change_before_the_first_next(mk, view):
    """As a dict's iterator: bound to the keys at iter() (CPython's
    test_dict_iter clears the dict between iter() and next())."""
    d = mk(RedisDict, {i: i for i in range(5)})
    it = iter(d if view == "dict" else getattr(d, view)())
    d.clear()
    with pytest.raises(RuntimeError, match="changed size"):
        next(it)


def test_dict_iteration_detects_other_process(mk, start_method):
    d = mk(RedisDict, {i: i for i in range(10)})
    p = start_method.Process(target=helpers.grow_dict, args=(d, 200))
    p.start()
    try:
        with pytest.raises(RuntimeError, match="changed"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for _ in d:
                    time.sleep(0.01)
    finally:
        p.join(30)
    assert p.exitcode == 0


def test_dict_large_iteration_and_copy(mk):
    ref = {f"k{i}": i for i in range(3000)}
    d = mk(RedisDict, ref)
    assert list(d) == list(ref)
    assert d.copy() == ref
    assert len(d) == 3000


def test_dict_increment(mk):
    d = mk(RedisDict)
    assert d.increment("n") == 1
    assert d.increment("n", 5) == 6
    assert d.increment("f", 0.5, default=1.0) == 1.5
    assert d.increment(("t",), delta=[1], default=[]) == [1]
    assert d == {"n": 6, "f": 1.5, ("t",): [1]}


def test_dict_increment_is_atomic_across_processes(mk, start_method):
    d = mk(RedisDict)
    procs = [start_method.Process(target=helpers.increment_many, args=(d, "n", 30))
             for _ in range(3)]
    for p in procs:
        p.start()
    helpers.increment_many(d, "n", 30)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert d["n"] == 120


def test_lock_makes_compound_updates_atomic(mk, start_method):
    d = mk(RedisDict)
    procs = [start_method.Process(target=helpers.locked_increments, args=(d, "n", 25))
             for _ in range(2)]
    for p in procs:
        p.start()
    helpers.locked_increments(d, "n", 25)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert d["n"] == 75


def test_lock_holds_back_other_processes_operations(mk, conn):
    import multiprocessing

    d = mk(RedisDict)
    out = mk(RedisDict)
    ctx = multiprocessing.get_context("fork")
    with d.lock:
        with d.lock:  # re-entrant
            d["mine"] = 1
        p = ctx.Process(target=helpers.timed_set, args=(d, "theirs", 2, out))
        p.start()
        time.sleep(0.5)
        assert "theirs" not in d  # the child's d[...] = ... waits
        released = time.monotonic()
    p.join(30)
    assert p.exitcode == 0
    assert out["theirs"] >= released
    assert d == {"mine": 1, "theirs": 2}
    assert d.lock.acquire(timeout=1)
    d.lock.release()
    with pytest.raises(RuntimeError):
        d.lock.release()


def test_lock_lease_expires_for_a_dead_holder(conn, made):
    d = RedisDict(conn, lease=0.5)
    made.append(d)
    key = d._keylist[0]  # the lock's owner
    conn.client.hset(key, mapping={"t": "someone-dead", "n": 1, "pid": "elsewhere:1"})
    conn.client.pexpire(key, 500)  # a holder that stopped renewing
    start = time.monotonic()
    d["k"] = 1  # waits for the lease to run out
    assert 0.2 < time.monotonic() - start < 5
    assert d["k"] == 1


def test_a_dead_holder_is_taken_over_with_a_warning(conn, made):
    from interproc import OwnerDiedWarning

    d = RedisDict(conn, lease=0.5)
    made.append(d)
    # what a holder leaves when it dies holding the lock
    conn.client.hset(d._keylist[0], mapping={"t": "someone-dead", "n": 1, "pid": "elsewhere:1"})
    conn.client.pexpire(d._keylist[0], 300)
    conn.client.hset(d._key("lock.state"), "holder", "someone-dead")
    with pytest.warns(OwnerDiedWarning):
        d["k"] = 1
    assert d["k"] == 1 and d.lock.owner_died


def test_the_lock_travels_with_its_container(mk, conn):
    from interproc.backends.redis.queues import Queue

    d = mk(RedisDict)
    q = mk(Queue)
    q.put(d.lock)
    for lock in (pickle.loads(pickle.dumps(d.lock)), q.get(timeout=10)):
        done = []
        with lock:
            assert d.lock.locked() and d.lock.locked_by_me()
            t = threading.Thread(target=lambda: done.append(d.setdefault("x", 1)))
            t.start()
            time.sleep(0.3)
            assert not done  # the other thread's operation waits for the lock
        t.join(10)
        assert done == [1]


def test_nested_containers_stay_shared(mk, start_method):
    d = mk(RedisDict)
    inner = mk(RedisList, [1])
    d["inner"] = inner
    d["deep"] = {"x": [inner]}
    got = d["inner"]
    assert isinstance(got, RedisList)
    got.append(2)
    assert inner == [1, 2] and d["deep"]["x"][0] == [1, 2]
    out = mk(RedisDict)
    p = start_method.Process(target=helpers.read_nested, args=(d, out))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert out["type"] == "RedisList"
    assert inner == [1, 2, "from child"]


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_plain_serializers(conn, made, serializer):
    codec = Codec(serializer)
    d = RedisDict(conn, {"a": [1, 2.5, None, True, {"s": "t"}]}, codec=codec)
    lst = RedisList(conn, [1, "x"], codec=codec)
    made += [d, lst]
    d[1] = "int key"
    d[(1, 2)] = "tuple key"
    d["l"] = lst
    assert d["a"] == [1, 2.5, None, True, {"s": "t"}]
    assert list(d) == ["a", 1, (1, 2), "l"]
    assert d["l"] == [1, "x"]
    with pytest.raises(TypeError, match="plain data"):
        d["t"] = (1, 2)
    with pytest.raises(TypeError):
        lst.append(object())
    assert "t" not in d and len(lst) == 2


def test_authkey_round_trip_and_forgery(conn, made):
    codec = Codec("pickle", b"secret")
    d = RedisDict(conn, codec=codec)
    made.append(d)
    d["a"] = {"v": 1}
    d[(1, True)] = 2
    assert d["a"] == {"v": 1} and list(d) == ["a", (1, True)]
    # Another process without the key, or with another one, cannot read it.
    assert pickle.loads(pickle.dumps(d))["a"] == {"v": 1}
    with pytest.raises(SignatureError):
        Codec("pickle", b"other").loads(conn.client.hget(d._keylist[1], _core.encode_key("a")))
    # A payload written behind its back is refused before unpickling.
    field = _core.encode_key("a")
    conn.client.hset(d._keylist[1], field, b"p" + pickle.dumps("forged"))
    with pytest.raises(SignatureError):
        d["a"]
    # So is a key whose encoding would unpickle something.
    forged = b"p\x05\x00\x00\x00" + pickle.dumps(1)[:5]
    conn.client.hset(d._keylist[1], forged, codec.dumps(1))
    conn.client.zadd(d._keylist[3], {forged: 10**9})
    with pytest.raises(SignatureError):
        list(d)


# ------------------------------------------------------------------- list

def test_list_matches_list(mk):
    rnd = random.Random(6)
    lst, ref = mk(RedisList, range(10)), list(range(10))
    for _ in range(300):
        op = rnd.randrange(12)
        n = len(ref)
        i = rnd.randint(-n - 2, n + 2)
        j = rnd.randint(-n - 2, n + 2)
        step = rnd.choice([None, 1, 2, 3, -1, -2])
        sl = slice(rnd.choice([None, i]), rnd.choice([None, j]), step)
        args = {0: ("append", rnd.random()), 1: ("insert", i, rnd.randrange(100)),
                2: ("pop", i), 3: ("getitem", i), 4: ("setitem", i, "s"),
                5: ("delitem", i), 6: ("getslice", sl), 7: ("delslice", sl),
                8: ("setslice", sl), 9: ("extend", [1, 2]), 10: ("reverse",),
                11: ("sort",)}[op]
        results = []
        for target in (lst, ref):
            try:
                if args[0] == "getitem":
                    r = target[args[1]]
                elif args[0] == "setitem":
                    target[args[1]] = args[2]
                    r = None
                elif args[0] == "delitem":
                    del target[args[1]]
                    r = None
                elif args[0] == "getslice":
                    r = target[args[1]]
                elif args[0] == "delslice":
                    del target[args[1]]
                    r = None
                elif args[0] == "setslice":
                    s = args[1]
                    size = len(range(*s.indices(len(target))))
                    values = ["x"] * (size if s.step not in (None, 1) else 2)
                    target[s] = values
                    r = None
                elif args[0] == "sort":
                    target.sort(key=str, reverse=True)
                    r = None
                else:
                    r = getattr(target, args[0])(*args[1:])
                results.append(("ok", r))
            except Exception as exc:
                results.append(("err", type(exc), str(exc)))
        assert results[0] == results[1], args
        assert lst == ref, args


def test_list_api(mk):
    lst = mk(RedisList, [3, 1, 2])
    assert str(lst) == "[3, 1, 2]" and repr(lst) == "RedisList([3, 1, 2])"
    lst += [1]
    assert lst.count(1) == 2 and lst.index(1) == 1 and lst.index(1, 2) == 3
    lst.remove(1)
    assert lst == [3, 2, 1]
    with pytest.raises(ValueError):
        lst.remove(9)
    with pytest.raises(ValueError):
        lst.index(9)
    lst *= 2
    assert lst == [3, 2, 1, 3, 2, 1]
    assert lst + [0] == [3, 2, 1, 3, 2, 1, 0] and [0] + lst == [0, 3, 2, 1, 3, 2, 1]
    assert lst * 2 == [3, 2, 1] * 4 and type(lst * 2) is list
    lst.sort()
    assert lst == [1, 1, 2, 2, 3, 3] and lst < [2] and lst >= [1]
    assert 2 in lst and 7 not in lst
    assert list(reversed(lst)) == [3, 3, 2, 2, 1, 1]
    assert lst.copy() == [1, 1, 2, 2, 3, 3]
    lst.clear()
    assert lst == [] and len(lst) == 0
    with pytest.raises(IndexError, match="pop from empty list"):
        lst.pop()
    with pytest.raises(TypeError):
        lst["a"]
    with pytest.raises(ValueError):
        lst[::0]
    big = mk(RedisList, range(2500))
    assert list(big) == list(range(2500)) and big[-1] == 2499
    lst *= 0
    assert lst == []


def test_list_appends_from_processes(mk, start_method):
    lst = mk(RedisList)
    procs = [start_method.Process(target=helpers.append_many, args=(lst, k * 100, 40))
             for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(lst) == sorted(i for k in range(3) for i in range(k * 100, k * 100 + 40))


# -------------------------------------------------------------- Namespace

def test_namespace(mk):
    ns = mk(RedisNamespace, a=1, codec=None)
    ns.b = "x"
    ns._local = "mine"
    assert ns.a == 1 and ns.b == "x" and repr(ns) == "Namespace(a=1, b='x')"
    del ns.a
    with pytest.raises(AttributeError):
        ns.a
    with pytest.raises(AttributeError):
        del ns.a
    ns.name = "an attribute"
    assert ns.name == "an attribute"
    other = pickle.loads(pickle.dumps(ns))
    assert other.b == "x" and other == ns
    with pytest.raises(AttributeError):
        other._local


# --------------------------------------------------------- names, handles

def test_named_open_create_rules(conn, made):
    name = f"t-redis-data-{random.getrandbits(40):x}"
    d = RedisDict(conn, {"k": 1}, name=name, create=True)
    made.append(d)
    assert d.name == name
    with pytest.raises(FileExistsError):
        RedisDict(conn, name=name, create=True)
    with pytest.raises(TypeError):
        RedisList(conn, name=name)
    with pytest.raises(ValueError):
        RedisDict(conn, {"k": 2}, name=name)
    again = RedisDict(conn, name=name, create=False)
    assert again == {"k": 1}
    d.unlink()
    with pytest.raises(FileNotFoundError):
        RedisDict(conn, name=name, create=False)
    with pytest.raises(ValueError):
        RedisDict(conn, name="bad/name")


def test_closed_handle(mk):
    d = mk(RedisDict, a=1)
    d.close()
    with pytest.raises(ValueError):
        d["a"]


# -------------------------------------------------------------------- set

@pytest.mark.parametrize("authkey", [None, b"api"], ids=["unsigned", "signed"])
def test_set_matches_set_and_keeps_the_first_element(mk, authkey):
    s, ref = mk(RedisSet, [1, "a"], codec=Codec(authkey=authkey)), {1, "a"}
    s.add(1.0)
    s.add(True)
    assert s == ref and type([x for x in s if x == 1][0]) is int
    s.update([Color.RED, (1, 2)], {(1.0, 2.0)})
    assert len(s) == 3 and (1, 2) in s and type([x for x in s if x == (1, 2)][0][0]) is int
    s.symmetric_difference_update([(1, 2), (1.0, 2), "z", "z"])
    assert s == {1, "a", "z"}
    s.intersection_update([1.0, "z", "q"])
    assert s == {1, "z"}
    s.difference_update([True])
    assert s == {"z"} and s.pop() == "z" and not s
    big = set(range(5000))
    s |= big
    assert s == big
    s &= set(range(0, 5000, 2))
    assert len(s) == 2500
    s -= set(range(0, 5000, 4))
    assert s == set(range(2, 5000, 4))


def test_set_named_and_signed(conn, made):
    name = f"t-redis-set-{random.getrandbits(40):x}"
    codec = Codec("pickle", b"secret")
    s = RedisSet(conn, ["k", (1, True)], name=name, create=True, codec=codec)
    made.append(s)
    with pytest.raises(TypeError):
        RedisDict(conn, name=name)
    with pytest.raises(ValueError):
        RedisSet(conn, ["x"], name=name, codec=codec)
    again = RedisSet(conn, name=name, create=False, codec=codec)
    again ^= {"k", "n"}
    assert s == {(1, True), "n"} and pickle.loads(pickle.dumps(s)) == s
    # An element whose encoding would unpickle, written behind its back, is refused.
    forged = b"p\x05\x00\x00\x00" + pickle.dumps(1)[:5]
    conn.client.hset(s._keylist[1], forged, b"1")
    conn.client.zadd(s._keylist[3], {forged: 10**9})
    with pytest.raises(SignatureError):
        list(s)


def test_set_operations_inside_its_lock(mk):
    s = mk(RedisSet)
    with s.lock:
        s.add(1)
        s |= {2}
    assert s == {1, 2}


# ---------------------------------------------------------- Value, Array

def test_value(mk, conn, made):
    v = Value(conn, "i", 5)
    made.append(v)
    assert v.value == 5 and repr(v) == "<Synchronized wrapper for c_int(5)>"
    v.value = 2**31  # wraps like the C int
    assert v.value == -(2**31)
    with pytest.raises(TypeError):
        v.value = 1.5
    with v.get_lock():
        v.value += 1
    d = Value(conn, ctypes.c_double, 0.25)
    c = Value(conn, "c", b"x")
    raw = Value(conn, "H", 7, lock=False)
    made += [d, c, raw]
    assert d.value == 0.25 and c.value == b"x" and raw.value == 7
    with pytest.raises(AttributeError):
        raw.get_lock()
    with pytest.raises(TypeError):
        Value(conn, ctypes.c_char_p)
    with pytest.raises(TypeError):
        Value(conn, "z")
    assert pickle.loads(pickle.dumps(v)).value == v.value


def test_value_locked_increments_across_processes(conn, made, start_method):
    v = Value(conn, "i", 0)
    made.append(v)
    procs = [start_method.Process(target=helpers.value_locked_increments, args=(v, 25))
             for _ in range(2)]
    for p in procs:
        p.start()
    helpers.value_locked_increments(v, 25)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert v.value == 75


# The shared-memory Value's atomics, on Redis: the same calls give the same
# results (wraparound included), with and without signed contents.
_ATOMIC_SCRIPT = [
    ("fetch_add", ()), ("fetch_add", (2**40 + 3,)), ("load", ()), ("fetch_sub", ()),
    ("fetch_sub", (-7,)), ("exchange", (-1,)), ("compare_exchange", (5, 9)),
    ("compare_exchange", (-1, 2**70 + 1)), ("store", (True,)), ("load", ()),
    ("fetch_add", (255,)), ("exchange", (0,)), ("fetch_sub", (1,)), ("load", ()),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("authkey", [None, b"atomics"], ids=["unsigned", "signed"])
@pytest.mark.parametrize("typecode", ["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q",
                                      ctypes.c_bool])
def test_value_atomics_match_shared_memory(conn, made, typecode, authkey):
    import interproc

    mine = Value(conn, typecode, 1, codec=Codec(authkey=authkey))
    made.append(mine)
    theirs = interproc.Value(typecode, 1)
    # The atomics see a c_bool's byte; its value is that byte as a bool, as
    # a ctypes c_bool over the same memory reads it.
    as_value = bool if typecode is ctypes.c_bool else int
    for method, args in _ATOMIC_SCRIPT:
        for target in (mine, mine.get_obj()):
            expected = getattr(theirs, method)(*args)
            assert getattr(target, method)(*args) == expected, (method, args)
            assert target.value == mine.value == as_value(theirs.load()), (method, args)
    with pytest.raises(TypeError):
        mine.fetch_add(1.0)
    with pytest.raises(TypeError):
        mine.compare_exchange("1", 2)
    real = Value(conn, "d", 1.0)
    made.append(real)
    assert not hasattr(real, "fetch_add")  # atomics are for integers, as on shared memory


@pytest.mark.timeout(120)
@pytest.mark.parametrize("authkey", [None, b"atomics"], ids=["unsigned", "signed"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_value_fetch_add_across_processes_ends_at_the_exact_sum(conn, made, method, authkey):
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    v = Value(conn, "i", 0, codec=Codec(authkey=authkey))
    made.append(v)
    procs = [ctx.Process(target=helpers.value_fetch_adds, args=(v, 40, 3)) for _ in range(3)]
    for p in procs:
        p.start()
    helpers.value_fetch_adds(v.get_obj(), 40, 3)
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    assert v.load() == v.value == 4 * 40 * 3


_LOCK_FREE_READS = {
    "raw": lambda v: [v.get_obj().value, setattr(v.get_obj(), "value", 5), v.get_obj().value],
    "atomics": lambda v: [v.load(), v.fetch_add(1), v.exchange(7), v.compare_exchange(7, 4)],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reads", sorted(_LOCK_FREE_READS))
def test_raw_value_and_atomics_do_not_wait_for_the_lock(conn, made, reads):
    v = Value(conn, "i", 4)
    made.append(v)
    held, release = threading.Event(), threading.Event()

    def holder():
        with v.get_lock():
            held.set()
            release.wait(20)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        seen = []
        # In a thread of their own, so that a wait shows as a reader that
        # has not finished, while the holder still holds the lock.
        reader = threading.Thread(target=lambda: seen.extend(_LOCK_FREE_READS[reads](v)))
        reader.start()
        reader.join(10)
        done = not reader.is_alive()
    finally:
        release.set()
        t.join(10)
    reader.join(10)
    assert done, "a read without the lock waited for the lock's holder"
    assert seen == {"raw": [4, None, 5], "atomics": [4, 4, 5, (True, 7)]}[reads]


def test_array(conn, made):
    a = Array(conn, "i", range(5))
    z = Array(conn, "d", 3)
    s = Array(conn, "c", b"hello")
    made += [a, z, s]
    assert a[:] == [0, 1, 2, 3, 4] and len(a) == 5 and a[-1] == 4 and a[::-2] == [4, 2, 0]
    a[1:3] = [9, 8]
    a[-1] = 7
    assert list(a) == [0, 9, 8, 3, 7]
    with pytest.raises(IndexError):
        a[5]
    with pytest.raises(ValueError):
        a[0:2] = [1]
    with pytest.raises(TypeError):
        a[0] = "x"
    assert z[:] == [0.0, 0.0, 0.0]
    assert s.value == b"hello" and s.raw == b"hello"
    s.value = b"hi"
    assert s.value == b"hi" and s.raw == b"hi\x00lo"
    with pytest.raises(ValueError):
        s.value = b"too long!"


def test_named_value_keeps_contents_and_checks_type(conn):
    name = f"t-redis-data-{random.getrandbits(40):x}"
    v = Value(conn, "i", 3, name=name)
    try:
        assert Value(conn, "i", 99, name=name).value == 3
        with pytest.raises(TypeError, match="c_int"):
            Value(conn, "d", 1.0, name=name)
        with pytest.raises(TypeError):
            Array(conn, "i", 1, name=name)
    finally:
        v.unlink()


# ---------------------------------------------------------------- cluster

def test_cluster_smoke(redis_cluster_url):
    conn = Connection.from_url(redis_cluster_url)
    assert conn.is_cluster
    objs = []
    try:
        d = RedisDict(conn, {"a": 1})
        lst = RedisList(conn, [1, 2, 3])
        ns = RedisNamespace(conn, x=1)
        v = Value(conn, "i", 1)
        a = Array(conn, "i", [1, 2])
        st = RedisSet(conn, [1, 2])
        objs += [d, lst, ns, v, a, st]
        st ^= {2, 3}
        d["s"] = st
        assert d["s"] == {1, 3} and st.pop() == 3
        d["l"] = lst
        d.update(b=2)
        assert d.increment("a") == 2
        for _ in d:
            pass
        lst[1:2] = [7, 8]
        lst.insert(1, 0)
        lst.sort()
        assert d["l"] == [0, 1, 3, 7, 8] and d.popitem() == ("b", 2)
        with d.lock:
            d["c"] = 3
        ns.y = 2
        assert repr(ns) == "Namespace(x=1, y=2)"
        with v.get_lock():
            v.value += 1
        a[1] = 5
        assert (v.value, a[:]) == (2, [1, 5])
    finally:
        for obj in objs:
            obj._destroy()
