"""SharedSet on shared memory: random operations against a plain set,
names, pickling, crash safety of its bulk updates, and hostile elements
whose pickling runs code (never under the heap's lock, and a failure
changes nothing).

The behaviour both backends share is in test_contract.py.
"""

import copy
import multiprocessing
import os
import pickle
import random
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interproc
from interproc import SharedDict, SharedSet

import _helpers
from _helpers import KillDelay, kill_and_reap, more_rounds, new_seed, start

FORK = multiprocessing.get_context("fork")

pytestmark = [
    pytest.mark.timeout(180),
    # A writer killed inside an operation leaves its lock to be taken over.
    pytest.mark.filterwarnings("ignore::interproc.OwnerDiedWarning"),
]

# ------------------------------------------------- random operations

ELEMENTS = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c", b"a", 1.0, True, None,
                                                          (1, "a"), frozenset({1, 2})]))
SMALL = st.lists(ELEMENTS, max_size=6)
OPS = st.one_of(
    st.tuples(st.sampled_from(["add", "discard"]), ELEMENTS),
    st.tuples(st.sampled_from(["update", "difference_update", "intersection_update",
                               "symmetric_difference_update"]), SMALL),
    st.tuples(st.sampled_from(["ior", "isub", "iand", "ixor"]), SMALL),
    st.tuples(st.just("remove"), ELEMENTS),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("clear"), st.none()),
)


def apply(s, op, arg):
    try:
        if op in ("ior", "isub", "iand", "ixor"):
            getattr(s, f"__{op}__")(set(arg))
            return "ok"
        if op in ("pop", "clear"):
            out = getattr(s, op)()
            return ("ok", out) if op == "clear" else "popped"
        getattr(s, op)(arg)
        return "ok"
    except KeyError:
        return "KeyError"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start_with=SMALL, ops=st.lists(OPS, max_size=25))
def test_random_operations_match_a_set(start_with, ops):
    s, ref = SharedSet(start_with), set(start_with)
    for op, arg in ops:
        before = set(s)
        got, want = apply(s, op, arg), apply(ref, op, arg)
        assert got == want, (op, arg)
        if op == "pop" and got == "popped":
            # Which element a set pops is its own business: pop the same from ref.
            (gone,) = before - set(s)
            ref = before - {gone}
        # (Equal, not identical: which of 1, 1.0 and True a set keeps after
        # an intersection is CPython's implementation detail.)
        assert s == ref and len(s) == len(ref), (op, arg, set(s), ref)
    assert s.union() == ref and s.intersection(ref) == ref and s.difference(ref) == set()
    assert s.isdisjoint(set()) and s.issubset(ref) and s.issuperset(ref)
    assert s <= ref and s >= ref and not s < ref and not s > ref and s == ref and not s != ref


# ---------------------------------------------------------- by name

def add_to_named(name, values):
    s = SharedSet(name=name, create=False)
    s.update(values)
    s.close()


def test_named_set_opens_from_another_process(unique_name, start_method):
    name = unique_name()
    s = SharedSet(["a"], name=name)
    assert s.name == name
    with pytest.raises(FileExistsError):
        SharedSet(name=name, create=True)
    with pytest.raises(ValueError):
        SharedSet(["b"], name=name)  # content only when created
    with pytest.raises(TypeError):
        SharedDict(name=name)  # another kind
    p = start(start_method, add_to_named, name, ["b", "c"])
    _helpers.join_ok(p)
    assert s == {"a", "b", "c"}
    again = interproc.attach(name)
    assert type(again) is SharedSet and again == s
    kinds = {info.name: info.kind for info in interproc.list_objects()}
    assert kinds.get(name) == "SharedSet"
    again.close()


def test_set_pickles_as_a_handle_not_a_copy():
    s = SharedSet([1])
    back = pickle.loads(pickle.dumps(s))
    back.add(2)
    assert s == {1, 2}
    d = SharedDict(s=s)
    d["s"].add(3)
    assert type(d["s"]) is SharedSet and s == {1, 2, 3}
    assert type(s.copy()) is set and type(copy.copy(s)) is set


# -------------------------------------------------------- crash safety

def toggle_then_exit(s, both):
    """One ``^=`` on an argument the parent built (fork: no copying), so
    that the child's short life is mostly that operation."""
    s ^= both
    os._exit(0)


@pytest.mark.timeout(150)
def test_bulk_update_killed_midway_is_all_or_nothing():
    """``s ^= old | new`` moving 20 000 elements from one generation to the
    next, killed at a random point: the set holds one whole generation."""
    seed = new_seed()
    rng = random.Random(seed)
    n = 20_000

    def gen(r):
        return {(r, i) for i in range(n)}

    s = SharedSet(gen(0))
    t0 = time.monotonic()
    p = start(FORK, toggle_then_exit, s, gen(0) | gen(-1))
    _helpers.join_ok(p)
    delay = KillDelay(rng, time.monotonic() - t0)
    cur, r, interrupted = -1, 0, 0
    while more_rounds(r, 30, interrupted, 10):
        r += 1
        p = start(FORK, toggle_then_exit, s, gen(cur) | gen(r))
        delay.sleep()
        code = kill_and_reap(p)
        assert code in (0, -signal.SIGKILL), f"seed={seed} round {r}: exit code {code}"
        delay.outcome(code == 0)
        interrupted += code != 0
        assert s.lock.acquire(timeout=5.0), f"seed={seed} round {r}: lock not had"
        try:
            snap, size = s.copy(), len(s)
        finally:
            s.lock.release()
        gens = {g for g, _ in snap}
        assert len(gens) == 1 and size == len(snap) == n, (
            f"seed={seed} round {r}: torn: generations {sorted(gens)[:5]}, {size} elements")
        (g,) = gens
        assert g in (cur, r) and (code != 0 or g == r), f"seed={seed} round {r}: generation {g}"
        cur = g
    print(f"seed={seed}: {interrupted} of {r} interrupted")
    assert interrupted >= 10, f"seed={seed}: only {interrupted} of {r} operations were interrupted"


# --------------------------------------------------- hostile elements

_WATCH = []
_SEEN = []


def _rebuild_probe(tag):
    _SEEN.append(any(c._heap._is_owned() for c in _WATCH))
    return Probe(tag)


class Probe:
    """An element whose pickling and unpickling record whether a watched
    heap's lock is held."""

    def __init__(self, tag):
        self.tag = tag

    def __reduce__(self):
        _SEEN.append(any(c._heap._is_owned() for c in _WATCH))
        return (_rebuild_probe, (self.tag,))

    def __eq__(self, other):
        return isinstance(other, Probe) and other.tag == self.tag

    def __hash__(self):
        return hash(self.tag)


OPERATIONS = {
    "add": lambda s: s.add(Probe(9)),
    "discard": lambda s: s.discard(Probe(1)),
    "remove": lambda s: s.remove(Probe(1)),
    "in": lambda s: Probe(1) in s,
    "update": lambda s: s.update([Probe(7), Probe(8)]),
    "ior": lambda s: s.__ior__({Probe(7)}),
    "isub": lambda s: s.__isub__({Probe(1)}),
    "iand": lambda s: s.__iand__({Probe(1)}),
    "iand-many": lambda s: s.intersection_update({Probe(1), Probe(2)}, [Probe(2)]),
    "ixor": lambda s: s.__ixor__({Probe(1), Probe(5)}),
    "pop": lambda s: s.pop(),
    "copy": lambda s: s.copy(),
    "iterate": lambda s: list(s),
    "eq": lambda s: s == {Probe(1), Probe(2)},
    "or": lambda s: s | {Probe(3)},
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_element_code_never_runs_under_the_lock(op):
    s = SharedSet([Probe(1), Probe(2)])
    _WATCH[:] = [s]
    _SEEN.clear()
    try:
        OPERATIONS[op](s)
    finally:
        _WATCH.clear()
    assert _SEEN, "the probe was never pickled or unpickled"
    assert not any(_SEEN), f"{op}: user code ran while the heap's lock was held"


class Refuses:
    def __reduce__(self):
        raise RuntimeError("not today")

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return self is other


class UsesTheSet:
    """Changes the set while its pickle is being made: outside the lock,
    so that works, and the operation it is part of still happens whole."""

    target = None

    def __reduce__(self):
        UsesTheSet.target.add("from reduce")
        return (str, ("user",))

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return self is other


@pytest.mark.parametrize("how", ["update", "ior", "ixor", "difference_update", "iand"])
def test_element_that_fails_to_pickle_changes_nothing(how):
    s = SharedSet(["a", "b"])
    bad = ["c", Refuses()]
    with pytest.raises(RuntimeError, match="not today"):
        if how.startswith("i") and how != "iand":
            getattr(s, f"__{how}__")(set(bad))
        elif how == "iand":
            s.intersection_update(bad)
        else:
            getattr(s, how)(bad)
    assert s == {"a", "b"}


def test_element_whose_pickling_uses_the_set():
    s = SharedSet(["a"])
    UsesTheSet.target = s
    try:
        s.update(["b", UsesTheSet()])
        s ^= {UsesTheSet()}
    finally:
        UsesTheSet.target = None
    assert "from reduce" in s and "b" in s and "a" in s
