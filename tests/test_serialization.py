"""What goes in comes out: values, exact types and identities.

Small builtin values travel in interproc's own compact encoding, bytes travel
raw, and everything else is pickled with multiprocessing's ForkingPickler.
These tests check that the choice of path never shows.
"""

import enum
import math
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiprocessing.reduction import ForkingPickler

import interproc

from _helpers import Point


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


class Registered:
    """A class whose reducer is registered with ForkingPickler only."""

    def __init__(self, value):
        self.value = value


def _rebuild_registered(value):
    return Registered(value + "!")


ForkingPickler.register(Registered, lambda obj: (_rebuild_registered, (obj.value,)))


@pytest.fixture
def q():
    queue = interproc.Queue()
    yield queue
    queue.close()


def roundtrip(q, value):
    q.put(value)
    return q.get(timeout=5)


ATOMS = [
    None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**100,
    0.0, -0.0, 1.5, float("inf"), float("-inf"), "", "ascii", "é" * 7, "漢字", "😀 mixed ©",
    b"", b"\x00\xff" * 10, bytearray(b"ba"),
]


@pytest.mark.parametrize("value", ATOMS, ids=repr)
def test_atoms_keep_value_and_exact_type(q, value):
    got = roundtrip(q, value)
    assert type(got) is type(value)
    assert got == value
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)  # -0.0 stays negative


def test_nan(q):
    assert math.isnan(roundtrip(q, float("nan")))


@pytest.mark.parametrize(
    "value",
    [
        (), [], {}, (1, "a", b"b", None, 2.5, True), [1, 2, 3], {"a": 1, 2: "b", None: False},
        tuple(range(256)), list(range(257)), {i: str(i) for i in range(300)},
        ("x" * 5000,), [[1], (2,)], {(1, 2): [3]}, {1, 2}, frozenset({"a"}),
    ],
    ids=lambda v: type(v).__name__ + str(len(v)),
)
def test_containers_keep_value_type_and_order(q, value):
    got = roundtrip(q, value)
    assert type(got) is type(value)
    assert got == value
    if isinstance(value, dict):
        assert list(got) == list(value)


def test_subclasses_keep_their_type(q):
    assert type(roundtrip(q, Color.RED)) is Color
    assert type(roundtrip(q, Text("t"))) is Text
    assert type(roundtrip(q, (Color.RED,))[0]) is Color


def test_shared_references_inside_a_message_stay_shared(q):
    inner = [1, 2]
    got = roundtrip(q, [inner, inner])
    assert got[0] is got[1]


def test_custom_objects_and_registered_reducers(q):
    assert roundtrip(q, Point(1, 2)) == Point(1, 2)
    # ForkingPickler's registry is honoured, as in multiprocessing.Queue.
    assert roundtrip(q, Registered("v")).value == "v!"
    assert roundtrip(q, [Registered("w")])[0].value == "w!"


def test_a_socket_travels_through_forking_pickler(q):
    a, b = socket.socketpair()
    with a, b:
        q.put(b)
        b2 = q.get(timeout=5)
        with b2:
            a.sendall(b"ping")
            assert b2.recv(4) == b"ping"


def test_batches_mix_every_path(q):
    items = [1, (2, "x"), b"raw", Point(3, 4), {"k": [1]}, "s", None]
    q.put_many(items)
    assert q.get_many() == items


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=5) | st.tuples(children) |
    st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5),
    max_leaves=20,
)


def same_shape(a, b):
    """Equal, and of the same exact type all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_shape(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(plain)
def test_any_builtin_value_roundtrips(value):
    with interproc.Queue() as q:
        got = roundtrip(q, value)
    assert same_shape(got, value)


def test_a_corrupt_plain_message_raises_instead_of_crashing(q):
    # Forge a record by hand: a plain tuple claiming more bytes than exist.
    q.put((1, 2))
    # The first record sits at the start of the base region, after the header page.
    base = 4096
    with open(f"/proc/self/fd/{q._fd}", "r+b") as f:
        f.seek(base)
        rec_type, _, _ = struct.unpack("<IIQ", f.read(16))
        assert rec_type == 5  # the plain codec
        f.seek(base + 16 + 1)
        f.write(struct.pack("<I", 200))  # a count beyond the limit
    with pytest.raises(interproc.SegmentError, match="corrupt"):
        q.get(timeout=5)
    q.put("still works")
    assert q.get(timeout=5) == "still works"
