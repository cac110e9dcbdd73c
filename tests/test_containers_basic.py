"""SharedDict, SharedList and Namespace in one process: every operation of
the contract, checked against a plain dict or list doing the same.

Outcomes are compared by repr, which tells 1, 1.0, True, 0.0 and -0.0
apart, so the key object a dict keeps (the first one inserted) is checked
along with the values.
"""

import enum
import gc
import io
import itertools
import multiprocessing.managers
import os
import pickle
import random
import stat
import threading

import pytest

import interproc
from interproc import Namespace, SharedDict, SharedList

from _containers_helpers import outcome, plain
from _helpers import Point, shm_path

KiB = 1024
MiB = 1024 * KiB

PICKLING_ERRORS = (TypeError, AttributeError, pickle.PicklingError)


def canon(obj):
    """obj with every frozenset replaced by the sorted reprs of its items:
    the repr of a frozenset depends on the order its items were added in,
    which unpickling does not keep."""
    if isinstance(obj, frozenset):
        return ("frozenset", sorted(repr(canon(x)) for x in obj))
    if type(obj) is tuple:
        return tuple(canon(x) for x in obj)
    if type(obj) is list:
        return [canon(x) for x in obj]
    if type(obj) is dict:
        return [(canon(k), canon(v)) for k, v in obj.items()]
    return obj


def same_state(shared, reference):
    """Contents, order and the exact key objects."""
    assert repr(canon(plain(shared))) == repr(canon(reference))
    assert len(shared) == len(reference)
    if isinstance(reference, dict):
        assert repr(canon(list(shared))) == repr(canon(list(reference)))
        assert shared == reference


def check_op(make_shared, make_plain, op):
    shared, reference = make_shared(), make_plain()
    expected = outcome(lambda x: canon(plain(op(x))), reference)
    got = outcome(lambda x: canon(plain(op(x))), shared)
    assert got == expected
    same_state(shared, reference)


# ================================================================ SharedDict

INITIAL = {
    1: "one",
    "a": b"A",
    b"a": "bytes a",
    None: None,
    (1, "x"): [1, 2],
    2.5: {"n": 1},
    frozenset({1, 2}): "fs",
    -0.0: "zero",
    Point(1, 2): "point",
    10**20: "big",
}

DICT_OPS = {
    # lookups, including the keys that compare equal to stored ones
    "getitem": lambda d: d[1],
    "getitem-float": lambda d: d[1.0],
    "getitem-bool": lambda d: d[True],
    "getitem-zero-int": lambda d: d[0],
    "getitem-zero-false": lambda d: d[False],
    "getitem-bytes-not-str": lambda d: d[b"a"],
    "getitem-none": lambda d: d[None],
    "getitem-tuple-float": lambda d: d[(1.0, "x")],
    "getitem-tuple-bool": lambda d: d[(True, "x")],
    "getitem-frozenset-float": lambda d: d[frozenset({1.0, 2.0})],
    "getitem-point": lambda d: d[Point(1, 2)],
    "getitem-bigint-as-float": lambda d: d[1e20],
    "getitem-missing": lambda d: d["missing"],
    "getitem-missing-tuple": lambda d: d[(1, "y")],
    "getitem-missing-bytes": lambda d: d[b"missing"],
    "getitem-missing-point": lambda d: d[Point(2, 1)],
    "getitem-float-not-int": lambda d: d[2],
    "getitem-2**53+1": lambda d: d[2**53 + 1],
    "contains": lambda d: 1 in d,
    "contains-float": lambda d: 1.0 in d,
    "contains-missing": lambda d: "b" in d,
    "contains-str-vs-bytes": lambda d: "x" in d,
    "not-contains": lambda d: 3 not in d,
    "len": len,
    "get": lambda d: d.get("a"),
    "get-missing": lambda d: d.get("zz"),
    "get-missing-default": lambda d: d.get("zz", 42),
    "get-equal-key": lambda d: d.get(True, 42),
    # stores
    "setitem-new": lambda d: d.__setitem__("new", [1, {"x": (2, 3)}]),
    "setitem-existing": lambda d: d.__setitem__("a", "replaced"),
    "setitem-float-keeps-int-key": lambda d: d.__setitem__(1.0, "float"),
    "setitem-true-keeps-int-key": lambda d: d.__setitem__(True, "true"),
    "setitem-int-keeps-negzero-key": lambda d: d.__setitem__(0, "int zero"),
    "setitem-tuple-equal": lambda d: d.__setitem__((1.0, "x"), "t"),
    "setitem-frozenset-equal": lambda d: d.__setitem__(frozenset({2, True}), "f"),
    "setitem-new-float": lambda d: d.__setitem__(7.0, "seven"),
    "setitem-new-bool": lambda d: d.__setitem__(False, "no"),
    "setitem-new-2**53+1": lambda d: d.__setitem__(2**53 + 1, "odd"),
    "setitem-new-2**53-float": lambda d: d.__setitem__(float(2**53), "even"),
    "setitem-none-value": lambda d: d.__setitem__("n", None),
    "setitem-point": lambda d: d.__setitem__(Point(1, 2), "new point"),
    "setitem-nested-tuple": lambda d: d.__setitem__((1, (2.0, (b"3", None))), "deep"),
    "delitem": lambda d: d.__delitem__("a"),
    "delitem-float": lambda d: d.__delitem__(1.0),
    "delitem-missing": lambda d: d.__delitem__("missing"),
    "delitem-then-reinsert-moves-to-end": lambda d: (d.__delitem__(1), d.__setitem__(1.0, "back")),
    "setdefault-present": lambda d: d.setdefault(1.0, "x"),
    "setdefault-missing": lambda d: d.setdefault("sd", [1]),
    "setdefault-missing-none": lambda d: d.setdefault("sd"),
    "pop": lambda d: d.pop("a"),
    "pop-equal-key": lambda d: d.pop(True),
    "pop-missing": lambda d: d.pop("missing"),
    "pop-missing-default": lambda d: d.pop("missing", "dflt"),
    "pop-present-default": lambda d: d.pop(None, "dflt"),
    "popitem": lambda d: d.popitem(),
    "popitem-after-set": lambda d: (d.__setitem__("last", 1), d.popitem()),
    "popitem-all": lambda d: [d.popitem() for _ in range(len(INITIAL))],
    "popitem-empty": lambda d: [d.popitem() for _ in range(len(INITIAL) + 1)],
    "update-dict": lambda d: d.update({"u": 1, 1.0: "u1", "a": None}),
    "update-pairs": lambda d: d.update([("p", 1), ("p", 2), (True, "t")]),
    "update-generator": lambda d: d.update((k, k * 2) for k in range(5)),
    "update-kwargs": lambda d: d.update(x=1, y=2),
    "update-dict-and-kwargs": lambda d: d.update({"x": 0}, x=1, name=3, create=4, mode=5),
    "update-shared": lambda d: d.update(SharedDict({"s": 1, 1.0: "s1"})),
    "update-empty": lambda d: d.update(),
    "update-bad-pair": lambda d: d.update([("ok", 1, 2)]),
    "clear": lambda d: d.clear(),
    "clear-then-set": lambda d: (d.clear(), d.__setitem__(1.0, "after")),
    "copy": lambda d: d.copy(),
    "copy-type": lambda d: type(d.copy()).__name__,
    # views
    "keys": lambda d: list(d.keys()),
    "values": lambda d: list(d.values()),
    "items": lambda d: list(d.items()),
    "iter": lambda d: list(iter(d)),
    "keys-len": lambda d: len(d.keys()),
    "values-len": lambda d: len(d.values()),
    "items-len": lambda d: len(d.items()),
    "keys-contains": lambda d: 1.0 in d.keys(),
    "keys-not-contains": lambda d: "q" in d.keys(),
    "items-contains": lambda d: (1.0, "one") in d.items(),
    "items-contains-wrong-value": lambda d: (1, "two") in d.items(),
    "values-contains": lambda d: "fs" in d.values(),
    "keys-and": lambda d: d.keys() & {1, "q", b"a"},
    "keys-or": lambda d: d.keys() | {"q"},
    "keys-sub": lambda d: d.keys() - {1, None},
    "keys-xor": lambda d: d.keys() ^ {1, "q"},
    "keys-rand": lambda d: {1.0, "q"} & d.keys(),
    "keys-isdisjoint": lambda d: d.keys().isdisjoint({"q", "r"}),
    "keys-not-disjoint": lambda d: d.keys().isdisjoint({"q", True}),
    "keys-eq-set": lambda d: d.keys() == set(INITIAL),
    "items-and": lambda d: d.items() & {(1, "one"), ("a", "nope")},
    "items-sub": lambda d: d.items() - {(1, "one")},
    "view-is-live": lambda d: (lambda ks: (d.__setitem__("live", 1), len(ks), "live" in ks))(d.keys()),
    # comparisons and operators
    "eq-plain": lambda d: d == dict(INITIAL),
    "eq-plain-other-order": lambda d: d == dict(reversed(list(INITIAL.items()))),
    "eq-plain-different": lambda d: d == {**INITIAL, 1: "uno"},
    "ne-plain": lambda d: d != {},
    "eq-shared": lambda d: d == SharedDict(INITIAL),
    "ne-shared": lambda d: d != SharedDict({1: "one"}),
    "eq-list": lambda d: d == list(INITIAL.items()),
    "or": lambda d: d | {"o": 1, 1.0: "o1"},
    "ior": lambda d: d.__ior__({"o": 1, True: "o1"}),
    "ior-pairs": lambda d: d.__ior__([("o", 1)]),
    "bool": bool,
    "str": str,
    "unhashable-getitem": lambda d: d[[1]],
    "unhashable-setitem": lambda d: d.__setitem__({}, 1),
    "unhashable-in-tuple": lambda d: d.__setitem__((1, [2]), 1),
    "unhashable-contains": lambda d: [1] in d,
    "unhashable-get": lambda d: d.get({1}),
    "unhashable-delitem": lambda d: d.__delitem__([1]),
    "unhashable-pop": lambda d: d.pop([1], None),
    "unhashable-setdefault": lambda d: d.setdefault([1], 1),
}


@pytest.mark.parametrize("op", DICT_OPS.values(), ids=DICT_OPS.keys())
def test_dict_op_matches_dict(op):
    check_op(lambda: SharedDict(INITIAL), lambda: dict(INITIAL), op)


def test_dict_op_matches_dict_named(unique_name):
    """A named dict behaves the same; a sample of operations."""
    name = unique_name()
    d = SharedDict(INITIAL, name=name)
    ref = dict(INITIAL)
    for op in ("setitem-float-keeps-int-key", "delitem", "update-pairs", "popitem", "setdefault-missing"):
        assert outcome(DICT_OPS[op], d) == outcome(DICT_OPS[op], ref), op
        same_state(d, ref)
    d.close()


@pytest.mark.parametrize(
    "make_args,kwargs",
    [
        (lambda: (), {}),
        (lambda: ({1: 2, 1.0: 3},), {}),
        (lambda: ([("a", 1), ("b", 2), ("a", 3)],), {}),
        (lambda: (((k, str(k)) for k in range(3)),), {}),
        (lambda: (), {"a": 1, "b": [2]}),
        (lambda: ({"a": 0, "c": 1},), {"a": 1, "b": 2}),
        (lambda: (SharedDict({True: "t", 2: "two"}),), {}),
    ],
    ids=["empty", "dict", "pairs", "generator", "kwargs", "dict-and-kwargs", "shared"],
)
def test_dict_constructor_like_dict(make_args, kwargs):
    same_state(SharedDict(*make_args(), **kwargs), dict(*make_args(), **kwargs))


def test_or_with_a_shared_dict():
    d = SharedDict({1: "a", "x": 1})
    got = d | SharedDict({1.0: "b", "y": 2})
    assert type(got) is dict
    assert repr(got) == repr({1: "a", "x": 1} | {1.0: "b", "y": 2})


@pytest.mark.parametrize(
    "args",
    [([[1]],), ([(1, 2, 3)],), ([([1], 2)],), (1,), (1, 2), ([1],)],
    ids=["short-pair", "long-pair", "unhashable", "int", "two-args", "not-pairs"],
)
def test_dict_constructor_errors_like_dict(args):
    assert outcome(lambda: SharedDict(*args)) == outcome(lambda: dict(*args))


@pytest.mark.parametrize("keys,value", [([1, 2.0, True], 0), ("abc", None), ([(1, 2), (1.0, 2.0)], [])])
def test_fromkeys(keys, value):
    d = SharedDict.fromkeys(keys, value)
    assert type(d) is SharedDict
    same_state(d, dict.fromkeys(keys, value))
    assert repr(plain(SharedDict.fromkeys(keys))) == repr(dict.fromkeys(keys))


@pytest.mark.parametrize(
    "keys",
    [
        [1, 1.0, True],
        [True, 1, 1.0],
        [1.0, True, 1],
        [0, 0.0, -0.0, False],
        [-0.0, 0, False],
        [False, 0.0],
        [(1, "a"), (1.0, "a"), (True, "a")],
        [(0.0, (1,)), (-0.0, (True,)), (0, (1.0,))],
        [frozenset({1, 2}), frozenset({1.0, 2.0}), frozenset({True, 2})],
        [frozenset(), frozenset()],
        [frozenset({"x", "y", "z", "w", "v"}), frozenset(["v", "w", "x", "y", "z"])],
        ["a", b"a"],
        ["", b"", None, (), 0],
        [None, None],
        [10**20, 1e20, 2**64, float(2**64), -(2**63), float(-(2**63))],
        [2**53, float(2**53), 2**53 + 1],
        [float("inf"), float("-inf"), 1e308, 5e-324],
        [Point(1, 2), Point(1, 2), (Point(3, 4), "p")],
        ["é", "e\u0301", "☃", "\x00", "a\x00b"],
    ],
    ids=[
        "int-float-bool", "bool-int-float", "float-bool-int", "zeros", "negzero-first",
        "false-first", "tuples", "nested-tuples", "frozensets", "empty-frozensets",
        "frozenset-order", "str-vs-bytes", "empties-and-none", "none-twice", "big-ints",
        "2**53", "extreme-floats", "points", "unicode",
    ],
)
def test_key_identity_like_dict(keys):
    """Equal keys share one slot; the first key object inserted is kept."""
    d, ref = SharedDict(), {}
    for i, k in enumerate(keys):
        d[k] = i
        ref[k] = i
        same_state(d, ref)
    for i, k in enumerate(keys):
        assert d[k] == ref[k]
        assert k in d
    for k in keys:
        assert outcome(lambda m: m.pop(k), d) == outcome(lambda m: m.pop(k), ref)
        same_state(d, ref)


def test_point_keys_match_by_pickled_form():
    """Keys of other types are matched by their pickled bytes: a Point equal
    to a stored one but pickled differently is another key (documented)."""
    d = SharedDict()
    d[Point(1, 2)] = "int"
    assert d[Point(1, 2)] == "int"
    assert Point(1, 2) in d
    d[Point(1.0, 2)] = "float"
    assert len(d) == 2
    assert d[Point(1, 2)] == "int"
    assert d[Point(1.0, 2)] == "float"


def test_str_and_repr():
    ref = {1: "1", "2": 2, (3.0, b"x"): None}
    d = SharedDict(ref)
    assert str(d) == repr(ref)
    assert repr(d) == f"SharedDict({ref!r})"
    assert str(SharedDict()) == "{}"
    assert repr(SharedDict()) == "SharedDict({})"
    out = io.StringIO()
    print(d, file=out)
    assert out.getvalue() == repr(ref) + "\n"


def test_values_round_trip_exactly():
    values = [
        0, -1, 2**200, 1.5, float("inf"), -0.0, 1 + 2j, "", "ünï☃", b"", b"\x00\xff", bytearray(b"ba"),
        None, True, False, [], [1, [2, [3]]], (), (1,), {1: {2: 3}}, {1, 2}, frozenset({3}), Point(1, 2),
        range(3), slice(1, 2), Ellipsis, ValueError("boom"),
    ]
    d = SharedDict()
    for i, v in enumerate(values):
        d[i] = v
    for i, v in enumerate(values):
        got = d[i]
        assert type(got) is type(v)
        assert repr(got) == repr(v)
    nan = float("nan")
    d["nan"] = nan
    assert d["nan"] != d["nan"]


def test_values_are_stored_copies():
    """Values are pickled in: changing what was read back changes nothing."""
    d = SharedDict()
    inner = [1]
    d["l"] = inner
    inner.append(2)
    assert d["l"] == [1]
    got = d["l"]
    got.append(3)
    assert d["l"] == [1]


# ------------------------------------------------------------ bad input

def _lock():
    return threading.Lock()


@pytest.fixture
def open_file(tmp_path):
    f = open(tmp_path / "f", "w")
    yield f
    f.close()


@pytest.fixture(params=["lambda", "file", "lock", "nested-lambda"])
def unpicklable(request, open_file):
    return {
        "lambda": lambda: lambda: 0,
        "file": lambda: open_file,
        "lock": _lock,
        "nested-lambda": lambda: [1, {"x": lambda: 0}],
    }[request.param]()


UNPICKLABLE_DICT_OPS = {
    "setitem-new": lambda d, v: d.__setitem__("new", v),
    "setitem-existing": lambda d, v: d.__setitem__("a", v),
    "setitem-equal-key": lambda d, v: d.__setitem__(1.0, v),
    "setdefault": lambda d, v: d.setdefault("new", v),
    "update": lambda d, v: d.update({"first": 1, "a": "changed", "bad": v, "last": 2}),
    "update-pairs": lambda d, v: d.update([("first", 1), ("bad", v), ("last", 2)]),
    "update-kwargs": lambda d, v: d.update(first=1, bad=v),
    "ior": lambda d, v: d.__ior__({"first": 1, "bad": v}),
    "unpicklable-key": lambda d, v: d.__setitem__(v if not isinstance(v, list) else (1, v[1]["x"]), 1),
}


@pytest.mark.parametrize("op", UNPICKLABLE_DICT_OPS.values(), ids=UNPICKLABLE_DICT_OPS.keys())
def test_unpicklable_value_leaves_dict_unchanged(op, unpicklable):
    d = SharedDict(INITIAL)
    with pytest.raises(PICKLING_ERRORS):
        op(d, unpicklable)
    same_state(d, dict(INITIAL))
    d["after"] = 1  # still usable
    assert d["after"] == 1


def test_unpicklable_value_in_constructor():
    with pytest.raises(PICKLING_ERRORS):
        SharedDict({"a": 1, "b": lambda: 0})
    with pytest.raises(PICKLING_ERRORS):
        SharedList([1, lambda: 0])


@pytest.mark.parametrize(
    "op",
    [
        lambda d: d.update([("new", 1), ([1], 2)]),
        lambda d: d.update([("new", 1), ((1, {2}), 2)]),
        lambda d: d.__ior__([("new", 1), ([1], 2)]),
    ],
    ids=["update", "update-tuple-with-set", "ior"],
)
def test_unhashable_key_in_update_changes_nothing(op):
    d = SharedDict(INITIAL)
    with pytest.raises(TypeError):
        op(d)
    same_state(d, dict(INITIAL))


def test_missing_key_error_carries_the_key():
    d = SharedDict({1: 1})
    for key in ["missing", (1, "x"), 2.5, None, b"k"]:
        with pytest.raises(KeyError) as info:
            d[key]
        assert info.value.args == (key,)
        with pytest.raises(KeyError) as info:
            del d[key]
        assert info.value.args == (key,)
        with pytest.raises(KeyError) as info:
            d.pop(key)
        assert info.value.args == (key,)


# ------------------------------------------------------------ iteration

MUTATIONS = {
    "insert": lambda d: d.__setitem__("new", 1),
    "delete": lambda d: d.__delitem__("a"),
    "pop": lambda d: d.pop(1),
    "popitem": lambda d: d.popitem(),
    "update-new": lambda d: d.update({"u": 1}),
    "setdefault-new": lambda d: d.setdefault("s", 1),
    "clear": lambda d: d.clear(),
}


@pytest.mark.parametrize("view", ["dict", "keys", "values", "items"])
@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_size_change_during_iteration_raises(view, mutation):
    for container in (dict(INITIAL), SharedDict(INITIAL)):
        it = iter(container if view == "dict" else getattr(container, view)())
        next(it)
        mutation(container)
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            next(it)


@pytest.mark.parametrize("view", ["dict", "keys", "values", "items"])
@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_size_change_before_the_first_next_raises(view, mutation):
    """As a dict's: the iterator is bound to the keys at iter(), not at the
    first next() (CPython's test_dict_iter clears between the two)."""
    for container in (dict(INITIAL), SharedDict(INITIAL)):
        it = iter(container if view == "dict" else getattr(container, view)())
        mutation(container)
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            next(it)


def test_value_change_during_iteration_is_fine():
    d = SharedDict({i: i for i in range(100)})
    seen = []
    for k in d:
        d[k] = -k
        d[float(k)] = -k - 1  # the same key
        d.setdefault(k, "ignored")
        seen.append(k)
    assert seen == list(range(100))
    assert list(d.values()) == [-k - 1 for k in range(100)]


def test_iteration_order_and_reversed():
    ref = {}
    d = SharedDict()
    for k in [5, "x", 3.5, (1,), 0, b"b"]:
        d[k] = ref[k] = str(k)
    del d["x"], ref["x"]
    d["x"] = ref["x"] = "again"
    assert repr(list(d)) == repr(list(ref))
    assert repr(list(d.items())) == repr(list(ref.items()))
    try:
        rev = list(reversed(d))
    except TypeError:
        pytest.skip("reversed() is optional in the contract")
    assert repr(rev) == repr(list(reversed(ref)))


# ================================================================ SharedList

LIST_INIT = [5, 3.0, 8, 1, True, 9, 2, 3, 7, -0.0, 0]
MIXED_INIT = ["a", b"b", None, (1, 2), Point(1, 2), [3], {"k": 1}, 1.0, "a"]

LIST_OPS = {
    "getitem": lambda s: s[0],
    "getitem-neg": lambda s: s[-1],
    "getitem-neg-first": lambda s: s[-len(s)],
    "getitem-bool-index": lambda s: s[True],
    "getitem-out": lambda s: s[len(s)],
    "getitem-neg-out": lambda s: s[-len(s) - 1],
    "getitem-huge": lambda s: s[2**70],
    "getitem-str": lambda s: s["1"],
    "getitem-float": lambda s: s[1.0],
    "getitem-none": lambda s: s[None],
    "slice": lambda s: s[2:5],
    "slice-step": lambda s: s[::2],
    "slice-reverse": lambda s: s[::-1],
    "slice-neg": lambda s: s[-3:],
    "slice-empty": lambda s: s[5:2],
    "slice-beyond": lambda s: s[100:],
    "slice-step3": lambda s: s[1:8:3],
    "slice-neg-step": lambda s: s[8:1:-2],
    "slice-step-zero": lambda s: s[::0],
    "slice-none": lambda s: s[None:None],
    "setitem": lambda s: s.__setitem__(0, "x"),
    "setitem-neg": lambda s: s.__setitem__(-2, [1]),
    "setitem-out": lambda s: s.__setitem__(len(s), 1),
    "setitem-neg-out": lambda s: s.__setitem__(-len(s) - 1, 1),
    "setitem-str": lambda s: s.__setitem__("0", 1),
    "setslice-grow": lambda s: s.__setitem__(slice(1, 3), ["a", "b", "c", "d"]),
    "setslice-shrink": lambda s: s.__setitem__(slice(1, 6), ["a"]),
    "setslice-empty": lambda s: s.__setitem__(slice(2, 5), []),
    "setslice-insert": lambda s: s.__setitem__(slice(3, 3), [10, 11]),
    "setslice-all": lambda s: s.__setitem__(slice(None), range(4)),
    "setslice-generator": lambda s: s.__setitem__(slice(0, 2), (x * 2 for x in range(3))),
    "setslice-str": lambda s: s.__setitem__(slice(0, 1), "xyz"),
    "setslice-beyond": lambda s: s.__setitem__(slice(50, 60), [1]),
    "setslice-neg": lambda s: s.__setitem__(slice(-3, None), [0]),
    "setslice-ext": lambda s: s.__setitem__(slice(None, None, 2), list(range(len(s[::2])))),
    "setslice-ext-rev": lambda s: s.__setitem__(slice(None, None, -3), ["r"] * len(s[::-3])),
    "setslice-ext-wrong-len": lambda s: s.__setitem__(slice(None, None, 2), [1]),
    "setslice-not-iterable": lambda s: s.__setitem__(slice(0, 2), 5),
    "setslice-self": lambda s: s.__setitem__(slice(1, 3), s),
    "delitem": lambda s: s.__delitem__(0),
    "delitem-neg": lambda s: s.__delitem__(-1),
    "delitem-out": lambda s: s.__delitem__(len(s)),
    "delslice": lambda s: s.__delitem__(slice(2, 6)),
    "delslice-all": lambda s: s.__delitem__(slice(None)),
    "delslice-ext": lambda s: s.__delitem__(slice(None, None, 2)),
    "delslice-ext-neg": lambda s: s.__delitem__(slice(-1, 2, -3)),
    "delslice-beyond": lambda s: s.__delitem__(slice(20, 30)),
    "append": lambda s: s.append({"new": [1]}),
    "append-self-copy": lambda s: s.append(list(s)),
    "extend": lambda s: s.extend([1, 2.0, "3"]),
    "extend-generator": lambda s: s.extend(x for x in "ab"),
    "extend-tuple": lambda s: s.extend((None,)),
    "extend-self": lambda s: s.extend(s),
    "extend-shared": lambda s: s.extend(SharedList([1, 2])),
    "extend-not-iterable": lambda s: s.extend(5),
    "insert-0": lambda s: s.insert(0, "first"),
    "insert-mid": lambda s: s.insert(3, "mid"),
    "insert-neg": lambda s: s.insert(-1, "neg"),
    "insert-beyond": lambda s: s.insert(100, "end"),
    "insert-neg-beyond": lambda s: s.insert(-100, "start"),
    "pop": lambda s: s.pop(),
    "pop-0": lambda s: s.pop(0),
    "pop-neg": lambda s: s.pop(-2),
    "pop-out": lambda s: s.pop(100),
    "pop-all": lambda s: [s.pop() for _ in range(len(s))],
    "pop-empty": lambda s: [s.pop() for _ in range(len(s) + 1)],
    "remove": lambda s: s.remove(3),
    "remove-equal-type": lambda s: s.remove(1.0),
    "remove-missing": lambda s: s.remove("missing"),
    "index": lambda s: s.index(3),
    "index-start": lambda s: s.index(3, 2),
    "index-start-stop": lambda s: s.index(1, 0, 5),
    "index-neg-start": lambda s: s.index(0, -3),
    "index-missing": lambda s: s.index("missing"),
    "index-missing-in-range": lambda s: s.index(5, 1, 3),
    "count": lambda s: s.count(3),
    "count-zero": lambda s: s.count(0),
    "count-missing": lambda s: s.count("x"),
    "contains": lambda s: 9.0 in s,
    "not-contains": lambda s: "x" in s,
    "len": len,
    "iter": lambda s: list(iter(s)),
    "reversed": lambda s: list(reversed(s)),
    "reverse": lambda s: s.reverse(),
    "clear": lambda s: s.clear(),
    "copy": lambda s: s.copy(),
    "copy-type": lambda s: type(s.copy()).__name__,
    "iadd": lambda s: s.__iadd__([1, 2]),
    "iadd-tuple": lambda s: s.__iadd__((1, 2)),
    "iadd-self": lambda s: s.__iadd__(s),
    "imul-2": lambda s: s.__imul__(2),
    "imul-0": lambda s: s.__imul__(0),
    "imul-neg": lambda s: s.__imul__(-1),
    "add": lambda s: s + [1, 2],
    "add-type": lambda s: type(s + []).__name__,
    "add-tuple": lambda s: s + (1,),
    "mul": lambda s: s * 2,
    "mul-0": lambda s: s * 0,
    "mul-type": lambda s: type(s * 1).__name__,
    "rmul": lambda s: 2 * s,
    "bool": bool,
    "str": str,
}

SORTABLE_OPS = {
    "sort": lambda s: s.sort(),
    "sort-reverse": lambda s: s.sort(reverse=True),
    "sort-key": lambda s: s.sort(key=lambda x: -x),
    "sort-key-str": lambda s: s.sort(key=str),
    "sort-key-reverse-stable": lambda s: s.sort(key=lambda x: x % 2, reverse=True),
    "sort-bad-key": lambda s: s.sort(key=lambda x: 1 / 0),
    "sort-then-index": lambda s: (s.sort(), s.index(3)),
}

COMPARISONS = {
    "eq": lambda s: s == list(s),
    "eq-other": lambda s: s == [1],
    "ne": lambda s: s != [1],
    "eq-shared": lambda s: s == SharedList(list(s)),
    "ne-shared": lambda s: s != SharedList([]),
    "eq-tuple": lambda s: s == tuple(s),
    "lt": lambda s: s < [6],
    "le": lambda s: s <= list(s),
    "gt": lambda s: s > [5, 3.0, 8, 0],
    "ge": lambda s: s >= list(s) + [1],
    "lt-shared": lambda s: s < SharedList([9]),
    "gt-shared": lambda s: s > SharedList([1, 2]),
    "lt-tuple": lambda s: s < (1,),
}


@pytest.mark.parametrize("op", LIST_OPS.values(), ids=LIST_OPS.keys())
@pytest.mark.parametrize("init", [LIST_INIT, MIXED_INIT], ids=["numbers", "mixed"])
def test_list_op_matches_list(op, init):
    check_op(lambda: SharedList(init), lambda: list(init), op)


@pytest.mark.parametrize("op", {**SORTABLE_OPS, **COMPARISONS}.values(),
                         ids={**SORTABLE_OPS, **COMPARISONS}.keys())
def test_sort_and_compare_match_list(op):
    check_op(lambda: SharedList(LIST_INIT), lambda: list(LIST_INIT), op)


def test_sort_of_unorderable_raises_type_error():
    s = SharedList(MIXED_INIT)
    with pytest.raises(TypeError):
        s.sort()
    assert sorted(map(repr, s)) == sorted(map(repr, MIXED_INIT))  # nothing lost


def test_list_on_empty():
    for op in ("pop", "getitem", "remove", "index", "count", "reverse", "clear", "copy", "str", "len"):
        assert outcome(LIST_OPS[op], SharedList()) == outcome(LIST_OPS[op], []), op


def test_list_error_messages():
    s = SharedList([1, 2])
    with pytest.raises(IndexError, match="list index out of range"):
        s[2]
    with pytest.raises(IndexError, match="list assignment index out of range"):
        s[5] = 1
    with pytest.raises(IndexError):
        SharedList().pop()
    with pytest.raises(ValueError):
        s.remove(3)
    with pytest.raises(ValueError):
        s.index(3)
    with pytest.raises(TypeError):
        s["x"]
    for huge in (2**64, -(2**64)):  # beyond a C index: the same error as a list's
        with pytest.raises(IndexError, match="cannot fit 'int' into an index-sized integer"):
            s[huge]
    assert s[True] == 2 and s[-1] == 2  # a bool and a negative index


@pytest.mark.parametrize(
    "make", [lambda: (), lambda: [1, 2], lambda: (1, 2), lambda: "abc", lambda: range(5),
             lambda: (x for x in [1, 2]), lambda: {"a": 1, "b": 2}, lambda: SharedList([3])],
    ids=["empty", "list", "tuple", "str", "range", "generator", "dict", "shared"],
)
def test_list_constructor_like_list(make):
    same_state(SharedList(make()), list(make()))


def test_list_str_and_repr():
    ref = [1, "2", (3.0, b"x"), None]
    s = SharedList(ref)
    assert str(s) == repr(ref)
    assert repr(s) == f"SharedList({ref!r})"
    assert repr(SharedList()) == "SharedList([])"


@pytest.mark.parametrize("op", [
    lambda s, v: s.append(v),
    lambda s, v: s.extend([1, v]),
    lambda s, v: s.insert(0, v),
    lambda s, v: s.__setitem__(0, v),
    lambda s, v: s.__setitem__(slice(0, 2), [1, v]),
    lambda s, v: s.__iadd__([1, v]),
], ids=["append", "extend", "insert", "setitem", "setslice", "iadd"])
def test_unpicklable_value_leaves_list_unchanged(op, unpicklable):
    s = SharedList(LIST_INIT)
    with pytest.raises(PICKLING_ERRORS):
        op(s, unpicklable)
    same_state(s, list(LIST_INIT))


# ================================================================ Namespace

def test_namespace_attributes():
    ns = Namespace(a=1, b="x")
    assert ns.a == 1 and ns.b == "x"
    ns.c = [1, 2]
    ns.a = 2
    assert ns.c == [1, 2] and ns.a == 2
    del ns.b
    with pytest.raises(AttributeError):
        ns.b
    with pytest.raises(AttributeError):
        del ns.b
    with pytest.raises(AttributeError):
        ns.never
    assert not hasattr(ns, "never")
    assert getattr(ns, "never", "dflt") == "dflt"


def test_namespace_repr_like_multiprocessing():
    attrs = {"b": "x", "a": 1, "_hidden": 3, "c": (1.0, None)}
    ns = Namespace(**attrs)
    ref = multiprocessing.managers.Namespace(**attrs)
    assert repr(ns) == repr(ref)
    assert repr(Namespace()) == repr(multiprocessing.managers.Namespace()) == "Namespace()"
    ns.z = 1
    ref.z = 1
    assert repr(ns) == repr(ref)


def test_namespace_underscore_attributes_are_local_to_the_handle(unique_name):
    name = unique_name()
    ns = Namespace(name=name, a=1)
    other = Namespace(name=name, create=False)
    copy = pickle.loads(pickle.dumps(ns))
    ns._local = "mine"
    assert ns._local == "mine"
    for h in (other, copy):
        with pytest.raises(AttributeError):
            h._local
        assert h.a == 1
    ns.shared = "yes"
    assert other.shared == "yes" and copy.shared == "yes"
    assert "_local" not in repr(ns)
    for h in (ns, other, copy):
        close(h)


def test_namespace_unpicklable_value():
    ns = Namespace(a=1)
    with pytest.raises(PICKLING_ERRORS):
        ns.a = lambda: 0
    assert ns.a == 1


# ============================================================ nested containers

@pytest.mark.parametrize("outer", ["dict", "list", "namespace"])
@pytest.mark.parametrize("inner", ["dict", "list", "namespace"])
def test_nested_container_read_back_is_the_same_container(outer, inner):
    make_inner = {
        "dict": lambda: SharedDict({"x": 1}),
        "list": lambda: SharedList([1]),
        "namespace": lambda: Namespace(x=1),
    }[inner]
    store, load = {
        "dict": (lambda o, v: o.__setitem__("k", v), lambda o: o["k"]),
        "list": (lambda o, v: o.append(v), lambda o: o[0]),
        "namespace": (lambda o, v: setattr(o, "k", v), lambda o: o.k),
    }[outer]
    o = {"dict": SharedDict, "list": SharedList, "namespace": Namespace}[outer]()
    original = make_inner()
    store(o, original)
    back = load(o)
    assert type(back) is type(original)
    if inner == "dict":
        back["y"] = 2
        assert original == {"x": 1, "y": 2}
        original.increment("n")
        assert load(o)["n"] == 1
    elif inner == "list":
        back.append(2)
        assert original == [1, 2]
        original.append(3)
        assert load(o) == [1, 2, 3]
    else:
        back.y = 2
        assert original.y == 2
        original.z = 3
        assert load(o).z == 3


@pytest.mark.parametrize("outer", ["anonymous", "named"])
def test_nested_container_without_other_reference_survives(unique_name, outer):
    named = outer == "named"

    def make(cls, *args, **kwargs):
        return cls(*args, name=unique_name(), **kwargs) if named else cls(*args, **kwargs)

    d = make(SharedDict)
    d["l"] = make(SharedList, [1])
    d["d"] = make(SharedDict, {"a": 1})
    d["ns"] = make(Namespace, a=1)
    gc.collect()
    d["l"].append(2)
    d["d"]["b"] = 2
    d["ns"].b = 2
    gc.collect()
    assert d["l"] == [1, 2]
    assert d["d"] == {"a": 1, "b": 2}
    assert d["ns"].b == 2
    assert str(d["l"]) == "[1, 2]"


@pytest.mark.parametrize("cls", [SharedList, SharedDict, Namespace])
def test_an_anonymous_container_cannot_go_into_a_named_one(unique_name, cls):
    # It would be freed with its last handle and leave a dangling reference.
    d = SharedDict({"k": 1}, name=unique_name())
    lst = SharedList([SharedDict()])
    with pytest.raises(ValueError, match="name="):
        d["x"] = cls()
    with pytest.raises(ValueError, match="name="):
        d.update(x=cls())
    named_list = SharedList(name=unique_name())
    with pytest.raises(ValueError, match="name="):
        named_list.append(cls())
    assert d == {"k": 1} and len(named_list) == 0 and len(lst) == 1


def test_nested_deeply():
    d = SharedDict({"level": 0})
    cur = d
    for i in range(1, 6):
        cur["next"] = SharedDict({"level": i})
        cur = cur["next"]
    cur["leaf"] = SharedList(["deep"])
    cur = d
    for _ in range(5):
        cur = cur["next"]
    cur["leaf"].append("er")
    assert d["next"]["next"]["next"]["next"]["next"]["leaf"] == ["deep", "er"]


def test_nested_survives_overwrite_of_another_handle():
    d = SharedDict()
    lst = SharedList([1])
    d["a"] = lst
    d["b"] = lst
    del d["a"]
    gc.collect()
    d["b"].append(2)
    assert lst == [1, 2]


# ================================================================== naming

CLASSES = {"SharedDict": SharedDict, "SharedList": SharedList, "Namespace": Namespace}


def close(obj):
    """Namespace attributes are the namespace's own, so a Namespace is
    closed by dropping it; the others have close()."""
    if not isinstance(obj, Namespace):
        obj.close()


def write_something(obj, value):
    if isinstance(obj, SharedDict):
        obj["k"] = value
    elif isinstance(obj, SharedList):
        obj.append(value)
    else:
        obj.k = value


def read_something(obj):
    if isinstance(obj, SharedDict):
        return obj["k"]
    if isinstance(obj, SharedList):
        return obj[-1]
    return obj.k


@pytest.mark.parametrize("kind", CLASSES)
def test_create_none_opens_or_creates(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    assert not os.path.exists(shm_path(name))
    a = cls(name=name)
    assert os.path.exists(shm_path(name))
    b = cls(name=name)
    if kind != "Namespace":
        assert a.name == b.name == name
    write_something(a, "from a")
    assert read_something(b) == "from a"
    close(a)
    close(b)


@pytest.mark.parametrize("kind", CLASSES)
def test_create_true_refuses_existing(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    a = cls(name=name, create=True)
    write_something(a, 1)
    with pytest.raises(FileExistsError):
        cls(name=name, create=True)
    assert read_something(a) == 1
    close(a)


@pytest.mark.parametrize("kind", CLASSES)
def test_create_false_requires_existing(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    with pytest.raises(FileNotFoundError):
        cls(name=name, create=False)
    assert not os.path.exists(shm_path(name))
    a = cls(name=name, create=True)
    b = cls(name=name, create=False)
    write_something(a, "x")
    assert read_something(b) == "x"
    close(a)
    close(b)


@pytest.mark.parametrize("kind", CLASSES)
def test_attach_returns_the_right_class(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    a = cls(name=name)
    write_something(a, "hello")
    other = interproc.attach(name)
    assert type(other) is cls
    if kind != "Namespace":
        assert other.name == name
    assert read_something(other) == "hello"
    close(a)
    close(other)


@pytest.mark.parametrize("kind", CLASSES)
def test_named_content_and_persistence(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    a = {"SharedDict": lambda: SharedDict({"a": 1}, name=name, b=2),
         "SharedList": lambda: SharedList([1, 2], name=name),
         "Namespace": lambda: Namespace(name=name, a=1, b=2)}[kind]()
    close(a)
    del a
    gc.collect()
    b = cls(name=name, create=False)
    if kind == "SharedDict":
        assert b == {"a": 1, "b": 2}
    elif kind == "SharedList":
        assert b == [1, 2]
    else:
        assert (b.a, b.b) == (1, 2)
    close(b)


def test_reserved_keywords_are_not_keys(unique_name):
    name = unique_name()
    d = SharedDict(name=name, mode=0o600, create=True, other=1)
    assert d == {"other": 1}
    assert d.name == name
    d2 = SharedDict({"name": 1, "create": 2, "mode": 3})
    assert d2 == {"name": 1, "create": 2, "mode": 3}
    assert d2.name is None
    d.close()


@pytest.mark.parametrize("kind", ["SharedDict", "SharedList"])
def test_anonymous_has_no_name(kind):
    obj = CLASSES[kind]()
    assert obj.name is None
    obj.unlink()  # a no-op
    write_something(obj, 1)
    assert read_something(obj) == 1


@pytest.mark.parametrize("kind", ["SharedDict", "SharedList"])
def test_unlink_method(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    a = cls(name=name)
    b = cls(name=name, create=False)
    write_something(a, "kept")
    a.unlink()
    assert not os.path.exists(shm_path(name))
    with pytest.raises(FileNotFoundError):
        cls(name=name, create=False)
    assert read_something(b) == "kept"
    write_something(a, "still")
    assert read_something(b) == "still"
    close(a)
    close(b)


@pytest.mark.parametrize("kind", CLASSES)
def test_unlink_function_and_reuse(unique_name, kind):
    cls = CLASSES[kind]
    name = unique_name()
    old = cls(name=name)
    write_something(old, "old")
    interproc.unlink(name)
    assert not os.path.exists(shm_path(name))
    with pytest.raises(FileNotFoundError):
        interproc.unlink(name)
    new = cls(name=name, create=True)
    write_something(new, "new")
    assert read_something(old) == "old"
    close(old)
    close(new)


@pytest.mark.parametrize(
    "kind,other",
    [(k, o) for k, o in itertools.product(CLASSES, [*CLASSES, "Queue"]) if k != o],
)
def test_opening_another_kind_is_type_error(unique_name, kind, other):
    name = unique_name()
    a = CLASSES[kind](name=name)
    opener = CLASSES.get(other) or interproc.Queue
    with pytest.raises(TypeError):
        opener(name=name, create=False)
    with pytest.raises(TypeError):
        opener(name=name)
    close(a)
    q = interproc.Queue(name=unique_name())
    with pytest.raises(TypeError):
        CLASSES[kind](name=q.name)
    q.close()


@pytest.mark.parametrize("kind", CLASSES)
def test_default_mode_is_0600(unique_name, umask_022, kind):
    name = unique_name()
    obj = CLASSES[kind](name=name)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o600
    close(obj)


@pytest.mark.parametrize("kind", CLASSES)
def test_mode_widens_permissions(unique_name, umask_022, kind):
    name = unique_name()
    obj = CLASSES[kind](name=name, mode=0o644)
    assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == 0o644
    close(obj)


@pytest.mark.parametrize("kind", CLASSES)
@pytest.mark.parametrize("bad", ["", "a/b", "x" * 201, "nul\0byte"], ids=["empty", "slash", "201", "nul"])
def test_invalid_names(kind, bad):
    with pytest.raises(ValueError):
        CLASSES[kind](name=bad)


@pytest.mark.parametrize("kind", CLASSES)
def test_bad_create_and_mode(unique_name, kind):
    cls = CLASSES[kind]
    with pytest.raises(TypeError):
        cls(name=unique_name(), create="yes")
    with pytest.raises((TypeError, ValueError)):
        cls(name=unique_name(), mode=0o7777)
    with pytest.raises(TypeError):
        cls(name=123)


def test_list_objects_knows_the_kinds(unique_name):
    names = {kind: unique_name() for kind in CLASSES}
    objs = {kind: CLASSES[kind](name=names[kind]) for kind in CLASSES}
    listed = {o.name: o.kind for o in interproc.list_objects()}
    for kind, obj in objs.items():
        assert listed.get(names[kind]) == kind
        close(obj)


# =================================================================== lock

@pytest.mark.parametrize("kind", ["SharedDict", "SharedList"])
def test_lock_is_reentrant_and_operations_work_under_it(kind):
    obj = CLASSES[kind]()
    with obj.lock:
        with obj.lock:
            write_something(obj, 1)
            assert read_something(obj) == 1
            if kind == "SharedDict":
                obj.update({"x": 1})
                obj.increment("n")
                list(obj.items())
            else:
                obj.extend([1, 2])
                obj.sort()
                list(obj)
        assert obj.lock.acquire(block=False) is True
        obj.lock.release()
    assert obj.lock.acquire(True, None) is True
    assert obj.lock.acquire(timeout=0.1) is True
    obj.lock.release()
    obj.lock.release()


@pytest.mark.parametrize("kind", ["SharedDict", "SharedList"])
def test_lock_excludes_other_threads(kind):
    obj = CLASSES[kind]()
    results = []
    obj.lock.acquire()
    t = threading.Thread(target=lambda: results.append(obj.lock.acquire(timeout=0.2)))
    t.start()
    t.join(10)
    assert results == [False]
    # A thread blocked on the lock gets it when it is released.
    got = threading.Event()

    def waiter():
        with obj.lock:
            write_something(obj, "thread")
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert not got.wait(0.1)
    obj.lock.release()
    assert got.wait(10)
    t.join(10)
    assert read_something(obj) == "thread"


def test_lock_release_unheld_raises():
    d = SharedDict()
    with pytest.raises((RuntimeError, AssertionError, ValueError)):
        d.lock.release()


# ============================================================== increment

@pytest.mark.parametrize(
    "start,args,kwargs",
    [
        ({}, ("k",), {}),
        ({"k": 5}, ("k",), {}),
        ({"k": 5}, ("k", 10), {}),
        ({"k": 5}, ("k", -7), {}),
        ({}, ("k", 2), {"default": 40}),
        ({}, ("k",), {"delta": 3, "default": 1}),
        ({"k": 1.5}, ("k", 0.25), {}),
        ({}, ("k", 0.5), {}),
        ({1: 1}, (1.0,), {}),
        ({1: 1}, (True, 2**70), {}),
        ({}, (("t", 1),), {}),
    ],
    ids=["missing", "present", "delta", "negative", "default", "kwargs", "float", "float-missing",
         "equal-key", "bigint", "tuple-key"],
)
def test_increment(start, args, kwargs):
    d, ref = SharedDict(start), dict(start)
    key = args[0]
    delta = args[1] if len(args) > 1 else kwargs.get("delta", 1)
    default = kwargs.get("default", 0)
    ref[key] = ref.get(key, default) + delta
    assert d.increment(*args, **kwargs) == ref[key]
    same_state(d, ref)


def test_increment_errors():
    d = SharedDict({"s": "text"})
    with pytest.raises(TypeError):
        d.increment("s")
    assert d["s"] == "text"
    with pytest.raises(TypeError):
        d.increment([1])
    assert len(d) == 1


# ================================================================== pickle

@pytest.mark.parametrize("kind", CLASSES)
def test_pickles_as_a_reference(kind):
    obj = CLASSES[kind]()
    copy = pickle.loads(pickle.dumps(obj))
    assert type(copy) is type(obj)
    write_something(copy, "via copy")
    assert read_something(obj) == "via copy"


# ============================================================ large content

@pytest.mark.timeout(120)
def test_dict_100k_entries_grow_shrink_reuse():
    d = SharedDict()
    for round_ in range(3):
        ref = {i: f"{round_}-{i}" for i in range(100_000)}
        for start in range(0, 100_000, 10_000):
            d.update({i: ref[i] for i in range(start, start + 10_000)})
        assert len(d) == 100_000
        assert d[0] == ref[0] and d[99_999] == ref[99_999] and d[50_000.0] == ref[50_000]
        assert d.copy() == ref
        assert list(d) == list(ref)
        for i in range(0, 100_000, 2):
            del d[i]
        assert len(d) == 50_000
        assert all(d[i] == ref[i] for i in range(1, 100_000, 1000))
        d.clear()
        assert len(d) == 0 and d == {}
    d["after"] = 1
    assert d == {"after": 1}


@pytest.mark.timeout(120)
def test_list_100k_entries_grow_shrink_reuse():
    s = SharedList()
    for round_ in range(3):
        ref = [(round_, i) for i in range(100_000)]
        for start in range(0, 100_000, 10_000):
            s.extend(ref[start:start + 10_000])
        assert len(s) == 100_000
        assert s[-1] == ref[-1] and s[12345] == ref[12345]
        assert s.copy() == ref
        del s[::2]
        del ref[::2]
        assert s == ref
        s.clear()
        assert len(s) == 0
    s.append("after")
    assert s == ["after"]


@pytest.mark.timeout(120)
def test_big_values():
    rng = random.Random(1234)
    d = SharedDict()
    s = SharedList()
    for round_ in range(4):
        sizes = [0, 1, 4 * KiB, 100 * KiB, 1 * MiB, 4 * MiB]
        values = {sz: rng.randbytes(sz) for sz in sizes}
        for sz, v in values.items():
            d[sz] = v
            s.append(v)
        for sz, v in values.items():
            assert d[sz] == v
        assert s[-len(sizes):] == list(values.values())
        # Replace big with small and small with big.
        for sz in sizes:
            d[sz] = b"small"
        d["big-in-a-tuple"] = ("x", rng.randbytes(3 * MiB))
        assert len(d["big-in-a-tuple"][1]) == 3 * MiB
        d.clear()
        s.clear()
    d["after"] = b"y" * MiB
    assert d["after"] == b"y" * MiB


# ====================================================== documented details

def test_content_for_an_existing_name_is_value_error(unique_name):
    name = unique_name()
    d = SharedDict({"a": 1}, name=name)
    with pytest.raises(ValueError):
        SharedDict({"b": 2}, name=name)
    with pytest.raises(ValueError):
        SharedDict(name=name, create=False, b=2)
    assert d == {"a": 1}
    lname = unique_name()
    lst = SharedList([1], name=lname)
    with pytest.raises(ValueError):
        SharedList([2], name=lname)
    assert lst == [1]
    d.close()
    lst.close()


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


@pytest.mark.parametrize(
    "keys", [(1, Color.RED, 2.0, Color.BLUE), (Color.RED, 1.0, True, Color.BLUE, 2)], ids=["value-first", "enum-first"]
)
def test_int_enum_keys_count_as_their_value(keys):
    d, ref = SharedDict(), {}
    for k in keys:
        d[k] = ref[k] = repr(k)
        same_state(d, ref)
    assert d[Color.RED] == d[1] == ref[1]


def test_keys_changed_at_the_same_size_during_iteration_raises():
    d = SharedDict({i: i for i in range(10)})
    it = iter(d)
    next(it)
    del d[5]
    d["new"] = 1
    with pytest.raises(RuntimeError, match="changed"):
        next(it)


def test_or_with_a_plain_dict_on_the_left():
    got = {1.0: "p", "x": 0} | SharedDict({1: "s", "y": 2})
    assert type(got) is dict
    assert repr(got) == repr({1.0: "p", "x": 0} | {1: "s", "y": 2})
