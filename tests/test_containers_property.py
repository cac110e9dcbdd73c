"""Random operations on a SharedDict (SharedList) and on a plain dict (list),
alternating between this process and a long-lived child: after each step
the outcome and the whole content must be the same.

The child runs _containers_helpers.op_server under fork, and is sent each
new container over a multiprocessing Pipe, then the operations it applies.
"""

import multiprocessing

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from interproc import SharedDict, SharedList

import _containers_helpers as ch

FORK = multiprocessing.get_context("fork")
TIMEOUT = 30

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Child:
    """One child process for the whole module, serving operations."""

    def __init__(self):
        self.conn, child_conn = FORK.Pipe()
        self.proc = FORK.Process(target=ch.op_server, args=(child_conn,), daemon=True)
        self.proc.start()
        child_conn.close()

    def ask(self, msg):
        self.conn.send(msg)
        assert self.conn.poll(TIMEOUT), "the child did not answer"
        return self.conn.recv()

    def use(self, obj):
        assert self.ask(("use", obj)) == ("ok", None)

    def apply(self, op, *args):
        return self.ask(("op", (op, *args)))

    def stop(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(TIMEOUT)
        self.conn.close()


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.stop()


# Keys: ints and floats and bools that collide, str and bytes that do not,
# tuples of them, None.
scalar_keys = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.5, -1.0]),
    st.booleans(),
    st.sampled_from(["", "a", "b", "é"]),
    st.sampled_from([b"", b"a", b"b"]),
    st.none(),
)
keys = st.one_of(scalar_keys, st.tuples(scalar_keys), st.tuples(scalar_keys, scalar_keys),
                 st.frozensets(st.integers(0, 3) | st.sampled_from([1.0, 2.0]), max_size=3))
values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=16),
    st.lists(st.integers(-5, 5), max_size=4),
    st.none(),
)
wheres = st.sampled_from(["parent", "child"])


class Machine(RuleBasedStateMachine):
    """Steps are applied here or in the child, and to the plain reference here."""

    child = None  # set by the test

    def step(self, where, op, *args):
        expected = ch.outcome(ch.apply_op, self.ref, op, *args)
        if where == "child":
            got = self.child.apply(op, *args)
        else:
            got = ch.outcome(ch.apply_op, self.shared, op, *args)
        assert got == expected, f"{op}{args!r} in the {where}: got {got}, a plain one gives {expected}"

    def teardown(self):
        self.child.ask(("drop", None))


class DictMachine(Machine):
    @initialize(content=st.lists(st.tuples(keys, values), max_size=6))
    def start(self, content):
        self.shared = SharedDict(content)
        self.ref = dict(content)
        self.child.use(self.shared)

    @rule(where=wheres, k=keys, v=values)
    def set(self, where, k, v):
        self.step(where, "__setitem__", k, v)

    @rule(where=wheres, k=keys)
    def get(self, where, k):
        self.step(where, "__getitem__", k)

    @rule(where=wheres, k=keys, v=values)
    def get_default(self, where, k, v):
        self.step(where, "get", k, v)

    @rule(where=wheres, k=keys)
    def delete(self, where, k):
        self.step(where, "__delitem__", k)

    @rule(where=wheres, k=keys)
    def contains(self, where, k):
        self.step(where, "contains", k)

    @rule(where=wheres, k=keys)
    def pop(self, where, k):
        self.step(where, "pop", k)

    @rule(where=wheres, k=keys, v=values)
    def pop_default(self, where, k, v):
        self.step(where, "pop", k, v)

    @rule(where=wheres)
    def popitem(self, where):
        self.step(where, "popitem")

    @rule(where=wheres, k=keys, v=values)
    def setdefault(self, where, k, v):
        self.step(where, "setdefault", k, v)

    @rule(where=wheres, pairs=st.lists(st.tuples(keys, values), max_size=8))
    def update(self, where, pairs):
        self.step(where, "update", pairs)

    @rule(where=wheres, pairs=st.dictionaries(keys, values, max_size=8))
    def update_dict(self, where, pairs):
        self.step(where, "update", pairs)

    @rule(where=wheres)
    def clear(self, where):
        self.step(where, "clear")

    @rule(where=wheres)
    def items(self, where):
        self.step(where, "items")

    @invariant()
    def same_content(self):
        if not hasattr(self, "shared"):
            return
        # repr tells 1, 1.0 and True apart: the first key inserted is kept
        assert repr(list(self.shared.items())) == repr(list(self.ref.items()))
        assert len(self.shared) == len(self.ref)
        assert self.shared == self.ref


small = st.one_of(st.integers(-4, 4), st.sampled_from([0.0, -0.0, 1.0, 2.5, True, False]))
indexes = st.integers(-8, 8)
slices = st.builds(slice, st.none() | indexes, st.none() | indexes, st.none() | st.sampled_from([1, 2, -1, -2, 3]))


class ListMachine(Machine):
    @initialize(content=st.lists(small, max_size=8))
    def start(self, content):
        self.shared = SharedList(content)
        self.ref = list(content)
        self.child.use(self.shared)

    @rule(where=wheres, v=small)
    def append(self, where, v):
        self.step(where, "append", v)

    @rule(where=wheres, i=indexes, v=small)
    def insert(self, where, i, v):
        self.step(where, "insert", i, v)

    @rule(where=wheres)
    def pop(self, where):
        self.step(where, "pop")

    @rule(where=wheres, i=indexes)
    def pop_at(self, where, i):
        self.step(where, "pop", i)

    @rule(where=wheres, i=indexes | slices)
    def get(self, where, i):
        self.step(where, "__getitem__", i)

    @rule(where=wheres, i=indexes | slices)
    def delete(self, where, i):
        self.step(where, "__delitem__", i)

    @rule(where=wheres, s=slices, vs=st.lists(small, max_size=6))
    def set_slice(self, where, s, vs):
        self.step(where, "__setitem__", s, vs)

    @rule(where=wheres, i=indexes, v=small)
    def set_item(self, where, i, v):
        self.step(where, "__setitem__", i, v)

    @rule(where=wheres)
    def sort(self, where):
        self.step(where, "sort")

    @rule(where=wheres)
    def sort_reverse(self, where):
        self.step(where, "sort_reverse")

    @rule(where=wheres)
    def reverse(self, where):
        self.step(where, "reverse")

    @rule(where=wheres, vs=st.lists(small, max_size=6))
    def extend(self, where, vs):
        self.step(where, "extend", vs)

    @rule(where=wheres, v=small)
    def remove(self, where, v):
        self.step(where, "remove", v)

    @rule(where=wheres, v=small)
    def index_count(self, where, v):
        self.step(where, "index", v)
        self.step(where, "count", v)

    @invariant()
    def same_content(self):
        if not hasattr(self, "shared"):
            return
        assert repr(self.shared.copy()) == repr(self.ref)
        assert len(self.shared) == len(self.ref)
        assert self.shared == self.ref


@pytest.mark.parametrize("machine", [DictMachine, ListMachine], ids=["dict", "list"])
def test_shared_matches_plain_across_two_processes(child, machine):
    machine.child = child
    try:
        run_state_machine_as_test(machine, settings=SETTINGS)
    finally:
        machine.child = None
