"""SharedDict, SharedList and Namespace shared between real processes under
fork, spawn and forkserver: every operation from a child, the ways of
handing a container over, atomic increments and locked compound updates,
concurrent appends, iteration against a concurrent writer, nested
containers, and opening by name from an unrelated process.
"""

import functools
import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

import interproc
from interproc import Namespace, SharedDict, SharedList

import _containers_helpers as ch
import _helpers
from _containers_helpers import run_script
from _helpers import TIMEOUT, start

pytestmark = pytest.mark.timeout(180)

join_ok = functools.partial(_helpers.join_ok, meanings=ch.EXIT_MEANINGS)


@pytest.fixture(params=["anonymous", "named"])
def make(request, unique_name):
    def make_(cls, *args, **kwargs):
        if request.param == "named":
            kwargs["name"] = unique_name()
        return cls(*args, **kwargs)

    return make_


# --------------------------------------------- every operation from a child

DICT_START = {1: "one", "a": b"A", b"a": "bytes", None: [1, 2], (1, "x"): 2.5, -0.0: "zero"}
DICT_SCRIPT = [
    ("__getitem__", 1.0),
    ("__getitem__", True),
    ("__getitem__", (1.0, "x")),
    ("__getitem__", 0),
    ("__getitem__", "missing"),
    ("__setitem__", 1.0, "uno"),
    ("__setitem__", "new", {"nested": [1, (2, 3)]}),
    ("__setitem__", frozenset({"p", "q", "r"}), "fs"),
    ("__getitem__", frozenset({"r", "q", "p"})),
    # (its repr depends on the hash seed, which differs between processes)
    ("pop", frozenset({"q", "r", "p"})),
    ("__setitem__", frozenset({7, 8.0}), "fs of numbers"),
    ("__getitem__", frozenset({7.0, 8})),
    ("__delitem__", "a"),
    ("__delitem__", "a"),
    ("contains", b"a"),
    ("contains", "a"),
    ("contains", 0.0),
    ("len",),
    ("get", "new"),
    ("get", "gone", "dflt"),
    ("setdefault", "new", "ignored"),
    ("setdefault", "sd", [1]),
    ("pop", None),
    ("pop", None, "dflt"),
    ("popitem",),
    ("update", {"u1": 1, "u2": 2, True: "true"}),
    ("update", [("p", 1), ("p", 2)]),
    ("ior", {"o": 1}),
    ("keys",),
    ("values",),
    ("items",),
    ("list",),
    ("eq", {1: "true"}),
    ("str",),
    ("copy",),
    ("increment", "counter"),
    ("increment", "counter", 5),
    ("increment", "counter2", 2, 40),
    ("__getitem__", [1]),
    ("popitem",),
    ("clear",),
    ("popitem",),
    ("__setitem__", 1, "after clear"),
    ("items",),
]

LIST_START = [5, 3.0, "a", None, (1, 2), 3]
LIST_SCRIPT = [
    ("__getitem__", 0),
    ("__getitem__", -1),
    ("__getitem__", 100),
    ("__getitem__", slice(1, 4)),
    ("__getitem__", slice(None, None, -2)),
    ("__setitem__", 0, "first"),
    ("__setitem__", slice(1, 3), ["x", "y", "z"]),
    ("__setitem__", slice(None, None, 2), ["e0", "e1", "e2", "e3"]),
    ("__setitem__", slice(None, None, 2), ["wrong length"]),
    ("__delitem__", 0),
    ("__delitem__", slice(0, 2)),
    ("__delitem__", slice(None, None, 3)),
    ("__delitem__", 50),
    ("append", {"k": [1]}),
    ("extend", [1, 2.0, True]),
    ("insert", 0, "head"),
    ("insert", -1, "before last"),
    ("insert", 99, "tail"),
    ("pop",),
    ("pop", 0),
    ("pop", 99),
    ("remove", 1.0),
    ("remove", "missing"),
    ("index", 2),
    ("index", "missing"),
    ("count", True),
    ("contains", 2.0),
    ("len",),
    ("list",),
    ("str",),
    ("copy",),
    ("iadd", [7, 8]),
    ("imul", 2),
    ("eq", [1]),
    ("reverse",),
    ("clear",),
    ("extend", [3, 1.0, 2, True, 0, -0.0]),
    ("sort",),
    ("sort_reverse",),
    ("list",),
    ("pop",),
]

NS_START = {"a": 1, "b": "x"}
NS_SCRIPT = [
    ("getattr", "a"),
    ("getattr", "missing"),
    ("setattr", "c", [1, 2]),
    ("setattr", "a", 2),
    ("delattr", "b"),
    ("delattr", "b"),
    ("getattr", "b"),
    ("repr",),
    ("getattr", "c"),
]

KINDS = {
    "dict": (SharedDict, lambda: SharedDict(DICT_START), lambda: dict(DICT_START), DICT_SCRIPT),
    "list": (SharedList, lambda: SharedList(LIST_START), lambda: list(LIST_START), LIST_SCRIPT),
    "namespace": (
        Namespace, lambda: Namespace(**NS_START),
        lambda: __import__("multiprocessing.managers").managers.Namespace(**NS_START), NS_SCRIPT,
    ),
}


def increment(d, key, delta=1, default=0):
    """What SharedDict.increment does, on a plain dict."""
    d[key] = d.get(key, default) + delta
    return d[key]


def reference_results(kind):
    """The final state and the outcomes of the script on a plain object."""
    _, _, make_plain, script = KINDS[kind]
    ref = make_plain()
    results = []
    for step in script:
        if step[0] == "increment":
            results.append(ch.outcome(increment, ref, *step[1:]))
        else:
            results.extend(run_script(ref, [step]))
    return ref, results


def final_state(obj):
    return repr(obj) if isinstance(obj, Namespace) else repr(ch.plain(obj))


def shared_for(kind, name):
    kwargs = {"name": name} if name else {}
    if kind == "dict":
        return SharedDict(DICT_START, **kwargs)
    if kind == "list":
        return SharedList(LIST_START, **kwargs)
    return Namespace(**kwargs, **NS_START)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["process-arg", "queue", "pool", "named-process-arg"])
def test_every_operation_from_a_child(start_method, unique_name, kind, how):
    obj = shared_for(kind, unique_name() if how.startswith("named") else None)
    script = KINDS[kind][3]
    if how in ("process-arg", "named-process-arg"):
        out = interproc.Queue()
        join_ok(start(start_method, ch.run_script_to_queue, obj, script, out))
        got = out.get(timeout=TIMEOUT)
    elif how == "queue":
        inbox, out = interproc.Queue(), interproc.Queue()
        p = start(start_method, ch.run_script_from_queue, inbox, script, out)
        inbox.put(obj)
        got = out.get(timeout=TIMEOUT)
        join_ok(p)
    else:
        with start_method.Pool(1) as pool:
            got = pool.apply_async(ch.run_script_pool, (obj, script)).get(TIMEOUT)
    ref, expected = reference_results(kind)
    for step, g, e in zip(script, got, expected):
        assert g == e, f"{step}: child got {g}, a plain {kind} gives {e}"
    assert len(got) == len(expected)
    assert final_state(obj) == repr(ref)


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_pool_map_over_one_container(start_method, kind):
    if kind == "dict":
        d = SharedDict()
        with start_method.Pool(2) as pool:
            assert pool.starmap(ch.pool_increment, [(d, i) for i in range(40)]) == list(range(40))
        assert d["pool"] == 40
        assert sorted(k[1] for k in d if isinstance(k, tuple)) == list(range(40))
    else:
        lst = SharedList()
        with start_method.Pool(2) as pool:
            pool.starmap(ch.pool_append, [(lst, i) for i in range(40)])
        assert sorted(lst) == list(range(40))


def test_child_sends_back_a_dict_it_made(start_method):
    outer, ack = interproc.Queue(), interproc.Queue()
    p = start(start_method, ch.send_new_dict_back, outer, ack)
    d = outer.get(timeout=TIMEOUT)
    assert d == {"made": "by child"}
    d["parent"] = 1
    ack.put("done")
    join_ok(p)
    assert d == {"made": "by child", "parent": 1, "seen": True}


# ------------------------------------------------------------ atomicity

def test_concurrent_increment_is_exact(start_method, make):
    d = make(SharedDict)
    n_procs, n = 4, 1000
    go = start_method.Event()
    procs = [start(start_method, ch.increment_many, d, "total", n, go) for _ in range(n_procs)]
    go.set()
    join_ok(*procs)
    assert d["total"] == n_procs * n
    per = {k: v for k, v in d.items() if isinstance(k, tuple)}
    assert sorted(per) == sorted(("per", p.pid) for p in procs)
    assert set(per.values()) == {n}


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_locked_read_modify_write_is_exact(start_method, make, kind):
    obj = make(SharedDict, {"n": 0}) if kind == "dict" else make(SharedList, [0, "other"])
    key = "n" if kind == "dict" else 0
    n_procs, n = 4, 400
    go = start_method.Event()
    procs = [start(start_method, ch.locked_read_modify_write, obj, key, n, go) for _ in range(n_procs)]
    go.set()
    join_ok(*procs)
    assert obj[key] == n_procs * n


def test_locked_compound_update_is_exact(start_method, make):
    d = make(SharedDict, a=0, b=0, log=[])
    n_procs, n = 3, 150
    go = start_method.Event()
    procs = [start(start_method, ch.locked_compound_dict, d, n, go) for _ in range(n_procs)]
    go.set()
    join_ok(*procs)
    assert (d["a"], d["b"]) == (n_procs * n, -n_procs * n)
    log = d["log"]
    assert len(log) == n_procs * n
    assert sorted(set(log)) == sorted(p.pid for p in procs)


def test_concurrent_appends_lose_nothing(start_method, make):
    lst = make(SharedList)
    n_procs, n = 4, 1000
    go = start_method.Event()
    procs = [start(start_method, ch.append_many, lst, tag, n, go) for tag in range(n_procs)]
    go.set()
    join_ok(*procs)
    items = lst.copy()
    assert len(lst) == len(items) == n_procs * n
    for tag in range(n_procs):
        # each process's own appends stay in its order
        assert [i for t, i in items if t == tag] == list(range(n))


def test_concurrent_inserts_of_distinct_keys_lose_nothing(start_method, make):
    d = make(SharedDict)
    n_procs, n = 4, 2000  # enough to resize the table several times meanwhile
    go = start_method.Event()
    procs = [start(start_method, ch.set_many, d, tag, n, go) for tag in range(n_procs)]
    go.set()
    join_ok(*procs)
    assert len(d) == n_procs * n
    assert d == {(tag, i): i for tag in range(n_procs) for i in range(n)}


def test_setdefault_race_has_one_winner_per_key(start_method):
    d = SharedDict()
    out = interproc.Queue()
    go = start_method.Event()
    procs = [start(start_method, ch.setdefault_race, d, tag, out, go) for tag in range(4)]
    go.set()
    results = dict(out.get(timeout=TIMEOUT) for _ in procs)
    join_ok(*procs)
    for i in range(200):
        winner = d[("race", i)]
        assert all(got[i] == winner for got in results.values()), f"key {i}: {[g[i] for g in results.values()]}"


# ------------------------------------------------------------ iteration

@pytest.mark.parametrize(
    "change,raises",
    [
        (("__setitem__", "new", 1), True),
        (("__delitem__", 5), True),
        (("popitem",), True),
        (("update", {"x": 1, "y": 2}), True),
        (("clear",), True),
        (("__setitem__", 5, "same key, new value"), False),
        (("__setitem__", 5.0, "an equal key"), False),
    ],
    ids=["insert", "delete", "popitem", "update", "clear", "overwrite", "overwrite-equal-key"],
)
@pytest.mark.parametrize("view", ["dict", "items"])
def test_iteration_while_another_process_changes_size(start_method, change, raises, view):
    d = SharedDict({i: i for i in range(20)})
    requests, acks = interproc.Queue(), interproc.Queue()
    p = start(start_method, ch.mutate_on_request, d, requests, acks)
    try:
        it = iter(d if view == "dict" else getattr(d, view)())
        first = [next(it), next(it)]
        requests.put(change)
        assert acks.get(timeout=TIMEOUT) == change
        if raises:
            with pytest.raises(RuntimeError, match="changed size during iteration"):
                next(it)
        else:
            rest = list(it)
            assert len(first) + len(rest) == 20
    finally:
        requests.put(None)
    join_ok(p)


# ------------------------------------------------------------ nested

def test_nested_containers_made_in_parent_usable_in_child(start_method, make):
    # A named container holds named ones (an anonymous one cannot go in it:
    # see test_containers_basic); anonymous ones nest in the process's heap.
    d = make(SharedDict)
    d["l"] = make(SharedList, ["parent"])
    d["d"] = make(SharedDict)
    d["ns"] = make(Namespace, who="parent")
    d["l2"] = make(SharedDict, {"inner": make(SharedList)})
    gc.collect()
    join_ok(start(start_method, ch.use_nested, d))
    assert d["l"] == ["parent", "child", 1, 2]
    assert d["d"]["n"] == 1 and len(d["d"]) == 2
    assert d["ns"].who == "child"
    assert d["l2"]["inner"] == ["deep"]


def test_nested_containers_made_in_a_child_outlive_it(start_method):
    d = SharedDict()
    join_ok(start(start_method, ch.make_nested_and_exit, d))
    gc.collect()
    lst = d["from_child_list"]
    assert lst == ["made", "in", "child"]
    lst.append("parent")
    assert d["from_child_list"] == ["made", "in", "child", "parent"]
    assert d["from_child_dict"] == {"k": "v"}
    assert d["from_child_ns"].x == 1


# ------------------------------------------------------------ by name

UNRELATED = textwrap.dedent(
    """
    import json, sys
    import interproc
    name = sys.argv[1]
    d = interproc.attach(name)
    report = {
        "type": type(d).__name__,
        # (a frozenset's repr depends on the hash seed)
        "keys": repr([k for k in d if not isinstance(k, frozenset)]),
        "values": [d[frozenset({"x", "y", "z"})], d[("a", 1.0)], d[2.0], d["text"], d[b"bytes"]],
        "lookups": [k in d for k in ("x", frozenset({"z", "y", "x"}), ("a", True), 2)],
    }
    d[frozenset({"from", "unrelated"})] = "hello"
    d.increment("counter", 5)
    print(json.dumps(report))
    """
)


def named_dict_with_hashed_keys(name):
    d = SharedDict(name=name)
    d[frozenset({"x", "y", "z"})] = "fs"
    d[("a", 1)] = "tuple"
    d[2] = "two"
    d["text"] = "str"
    d[b"bytes"] = "bytes"
    d["counter"] = 1
    for i in range(200):  # enough entries that a wrong hash finds another slot
        d[f"filler-{i}"] = i
    return d


@pytest.mark.parametrize("hashseed", ["0", "12345", "random"])
def test_unrelated_process_opens_by_name(unique_name, hashseed):
    """A separate interpreter, with another str hash seed, finds every key."""
    name = unique_name()
    d = named_dict_with_hashed_keys(name)
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", UNRELATED, name], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["type"] == "SharedDict"
    assert report["keys"] == repr([k for k in d if not isinstance(k, frozenset)])
    assert report["values"] == ["fs", "tuple", "two", "str", "bytes"]
    assert report["lookups"] == [False, True, True, True]
    assert d[frozenset({"unrelated", "from"})] == "hello"
    assert d["counter"] == 6
    d.close()


def test_spawned_process_given_only_the_name(unique_name):
    import multiprocessing

    name = unique_name()
    d = named_dict_with_hashed_keys(name)
    expected_items = repr([(k, v) for k, v in d.items() if not isinstance(k, frozenset)])
    out = interproc.Queue()
    ctx = multiprocessing.get_context("spawn")
    p = start(ctx, ch.open_by_name_and_use, name, out)
    report = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert report["type"] == "SharedDict"
    assert report["items"] == expected_items
    assert (report["frozen"], report["tuple"], report["float"]) == ("fs", "tuple", "two")
    assert d["from_unrelated"] == p.pid
    assert d["counter"] == 6
    d.close()


def test_named_containers_stored_by_a_child_outlive_it(start_method, make, unique_name):
    d = make(SharedDict)
    join_ok(start(start_method, ch.make_named_nested_and_exit, d, unique_name(), unique_name()))
    gc.collect()
    assert d["named_list"] == ["named", "in", "child"]
    d["named_list"].append("parent")
    assert d["named_list"] == ["named", "in", "child", "parent"]
    assert d["named_dict"] == {"k": "v"}
