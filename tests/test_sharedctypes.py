"""Value, Array, RawValue and RawArray in shared memory.

Where interproc is meant to behave like ``multiprocessing.sharedctypes``
the same test runs against both, so a divergence shows up as a failure of
the interproc half only.  Atomics, names, crash recovery and NumPy views are
interproc's own.
"""

import ctypes
import functools
import gc
import multiprocessing
import os
import random
import signal
import stat
import threading
import time
import warnings
from multiprocessing.sharedctypes import typecode_to_type

import pytest

import interproc

import _helpers
import _sharedctypes_helpers as sch
from _helpers import TIMEOUT, kill_and_reap, new_seed, owner_died_warnings, wait_until
from _sharedctypes_helpers import Point3

# How soon the lock of a dead holder must be taken over.
TAKEOVER = 1.0
HOLDER_KILLS = 150
FORK = multiprocessing.get_context("fork")

pytestmark = pytest.mark.timeout(120)

INTEGER_CODES = "bBhHiIlLqQ"


_started = []


def start(ctx, target, *args):
    """_helpers.start, and the process is killed after the test if it is
    still running (see kill_leftover_children)."""
    p = _helpers.start(ctx, target, *args)
    _started.append(p)
    return p


@pytest.fixture(autouse=True)
def kill_leftover_children():
    """A test that fails half-way may leave a child blocked for its whole
    CHILD_TIMEOUT; killing it keeps one failure from stalling the run."""
    yield
    while _started:
        p = _started.pop()
        if p.is_alive():
            p.kill()
        p.join(10)


join_ok = functools.partial(_helpers.join_ok, meanings=sch.EXIT_MEANINGS)


def int_range(ctype):
    bits = 8 * ctypes.sizeof(ctype)
    if ctype(-1).value < 0:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@pytest.fixture(params=["interproc", "multiprocessing"])
def impl(request):
    """The module under test: interproc, or multiprocessing as the reference."""
    return interproc if request.param == "interproc" else multiprocessing


# ================================================== drop-in semantics

VALUES = [
    ("c", b"x"), ("u", "\u00e9"), ("b", -5), ("B", 200), ("h", -300), ("H", 60000),
    ("i", -70000), ("I", 3_000_000_000), ("l", -(2**40)), ("L", 2**63), ("q", -(2**62)),
    ("Q", 2**64 - 1), ("f", 1.5), ("d", 2.25),
]


@pytest.mark.parametrize("typecode,initial", VALUES, ids=[v[0] for v in VALUES])
def test_value_of_each_typecode(impl, typecode, initial):
    ctype = typecode_to_type[typecode]
    v = impl.Value(typecode, initial)
    assert v.value == initial
    assert type(v.get_obj()) is ctype
    assert v.get_obj().value == initial
    zero = impl.Value(typecode)
    assert zero.value == ctype().value
    v.value = zero.value
    assert v.value == ctype().value


@pytest.mark.parametrize(
    "ctype,initial",
    [(ctypes.c_int16, -2), (ctypes.c_uint64, 2**64 - 2), (ctypes.c_double, -0.5),
     (ctypes.c_bool, True), (ctypes.c_char, b"z"), (ctypes.c_ubyte, 255)],
    ids=lambda x: getattr(x, "__name__", repr(x)),
)
def test_value_of_a_ctypes_type(impl, ctype, initial):
    v = impl.Value(ctype, initial)
    assert v.value == initial
    assert type(v.get_obj()) is ctype
    raw = impl.RawValue(ctype, initial)
    assert type(raw) is ctype and raw.value == initial


def test_value_of_a_structure(impl):
    v = impl.Value(Point3, 3, 1.5, b"ab")
    assert (v.x, v.y, v.tag) == (3, 1.5, b"ab")
    assert isinstance(v.get_obj(), Point3)
    with v.get_lock():
        v.x = -7
        v.y = 0.25
    assert (v.get_obj().x, v.get_obj().y) == (-7, 0.25)
    zero = impl.Value(Point3)
    assert (zero.x, zero.y, zero.tag) == (0, 0.0, b"")
    raw = impl.RawValue(Point3, 1, 2.0)
    assert type(raw) is Point3 and (raw.x, raw.y) == (1, 2.0)


def test_value_repr_matches(impl):
    assert repr(impl.Value("i", 5)) == "<Synchronized wrapper for c_int(5)>"


def test_default_lock_is_reentrant_and_guards_the_value(impl):
    v = impl.Value("i", 1)
    lock = v.get_lock()
    assert lock.acquire(timeout=1) is True
    assert lock.acquire(timeout=1) is True, "the default lock is an RLock"
    lock.release()
    lock.release()
    with v:  # the wrapper itself is a context manager over its lock
        v.value += 1
    assert v.value == 2
    assert v.get_lock() is lock
    for a in (impl.Array("i", 3), impl.Array("c", 3)):
        assert a.get_lock().acquire(timeout=1) and a.get_lock().acquire(timeout=1)
        a.get_lock().release()
        a.get_lock().release()


def test_default_lock_is_an_interproc_rlock_in_the_segment():
    v = interproc.Value("i", 1)
    assert isinstance(v.get_lock(), interproc.RLock)
    assert isinstance(interproc.Array("d", 2).get_lock(), interproc.RLock)
    # Each object has its own lock, not one shared by all of them.
    other = interproc.Value("i", 1)
    with v.get_lock():
        assert other.get_lock().statistics()["locked"] is False


@pytest.mark.parametrize("make", ["Value", "Array"])
def test_lock_false_returns_the_raw_object(impl, make):
    if make == "Value":
        v = impl.Value("i", 4, lock=False)
        assert type(v) is ctypes.c_int and v.value == 4
    else:
        v = impl.Array("i", [1, 2], lock=False)
        assert isinstance(v, ctypes.Array) and v._type_ is ctypes.c_int and v[:] == [1, 2]
    assert not hasattr(v, "get_lock")


@pytest.mark.parametrize("lock_kind", ["Lock", "RLock", "threading.Lock"])
@pytest.mark.parametrize("make", ["Value", "Array"])
def test_given_lock_is_used_and_returned(impl, make, lock_kind):
    lock = threading.Lock() if lock_kind == "threading.Lock" else getattr(impl, lock_kind)()
    v = impl.Value("i", 3, lock=lock) if make == "Value" else impl.Array("i", [3, 4], lock=lock)
    assert v.get_lock() is lock
    with v:
        if lock_kind != "RLock":
            # Entering the wrapper took exactly this lock.
            assert lock.acquire(False) is False
    assert lock.acquire(False) is True, "leaving the wrapper did not release the given lock"
    lock.release()


@pytest.mark.parametrize("make", ["Value", "Array"])
def test_lock_without_acquire_raises_attribute_error(impl, make):
    with pytest.raises(AttributeError):
        if make == "Value":
            impl.Value("i", 1, lock="x")
        else:
            impl.Array("i", 2, lock="x")


@pytest.mark.parametrize("typecode", ["i", "d", "B", "c", "q"])
def test_array_from_size_is_zeroed(impl, typecode):
    a = impl.Array(typecode, 6)
    zero = typecode_to_type[typecode]().value
    assert len(a) == 6
    assert [a[i] for i in range(6)] == [zero] * 6
    raw = impl.RawArray(typecode, 6)
    assert len(raw) == 6 and [raw[i] for i in range(6)] == [zero] * 6


def test_array_of_size_zero(impl):
    assert len(impl.Array("i", 0)) == 0
    assert impl.RawArray("d", 0)[:] == []


def test_array_indexing_and_slicing(impl):
    a = impl.Array("i", range(10))
    assert len(a) == 10
    assert a[0] == 0 and a[9] == 9 and a[-1] == 9 and a[-10] == 0
    assert a[:] == list(range(10))
    assert a[2:5] == [2, 3, 4]
    assert a[::3] == [0, 3, 6, 9]
    assert a[8:100] == [8, 9]
    assert list(a) == list(range(10))
    a[0] = -1
    a[-1] = 99
    a[2:5] = [20, 30, 40]
    a[5:10:2] = [50, 70, 90]
    assert a[:] == [-1, 1, 20, 30, 40, 50, 6, 70, 8, 90]
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(IndexError):
        a[-11] = 1
    with pytest.raises(ValueError):
        a[0:3] = [1, 2]


def test_array_from_initializer_of_each_kind(impl):
    assert impl.Array("d", [0.5, 1.5])[:] == [0.5, 1.5]
    assert impl.Array("i", (1, 2, 3))[:] == [1, 2, 3]
    assert impl.Array(ctypes.c_uint8, [255, 0])[:] == [255, 0]
    assert impl.RawArray("h", range(-2, 2))[:] == [-2, -1, 0, 1]
    pts = impl.Array(Point3, 2)
    pts[1] = Point3(5, 0.5, b"q")
    assert (pts[1].x, pts[1].y, pts[1].tag) == (5, 0.5, b"q")


def test_char_array_value_and_raw(impl):
    s = impl.Array("c", 8)
    assert s.value == b""
    assert s.raw == b"\0" * 8
    s.value = b"hello"
    assert s.value == b"hello"
    assert s.raw == b"hello\0\0\0"
    s.raw = b"abcdefgh"
    assert s.value == b"abcdefgh"
    assert s[0] == b"a" and s[1:3] == b"bc"
    assert len(s) == 8
    assert impl.Array("c", b"xyz").value == b"xyz"
    assert impl.RawArray("c", b"xyz").value == b"xyz"


def test_raw_value_and_raw_array(impl):
    rv = impl.RawValue("d", 1.5)
    assert type(rv) is ctypes.c_double and rv.value == 1.5
    rv.value = -3.0
    assert rv.value == -3.0
    assert impl.RawValue("q").value == 0
    ra = impl.RawArray("i", [1, 2, 3])
    assert isinstance(ra, ctypes.Array) and ra._type_ is ctypes.c_int and ra._length_ == 3
    ra[1:] = [20, 30]
    assert ra[:] == [1, 20, 30]
    for obj in (rv, ra):
        assert not hasattr(obj, "get_lock") and not hasattr(obj, "get_obj")


@pytest.mark.parametrize("bad", ["z", "", "ii", int, float, object()], ids=repr)
@pytest.mark.parametrize("factory", ["Value", "RawValue", "Array", "RawArray"])
def test_wrong_typecode_raises_type_error(impl, factory, bad):
    args = (bad,) if factory.endswith("Value") else (bad, 3)
    with pytest.raises(TypeError):
        getattr(impl, factory)(*args)


@pytest.mark.parametrize("factory", ["Array", "RawArray"])
def test_negative_size_raises_value_error(impl, factory):
    with pytest.raises(ValueError):
        getattr(impl, factory)("i", -1)


# ================================================== atomics

def test_atomic_methods_on_value_and_raw_value():
    for v in (interproc.Value("i", 10), interproc.RawValue("i", 10)):
        assert v.load() == 10
        assert v.store(-4) is None
        assert v.value == -4 and v.load() == -4
        assert v.fetch_add() == -4 and v.value == -3
        assert v.fetch_add(10) == -3 and v.value == 7
        assert v.fetch_add(3) == 7 and v.value == 10
        assert v.fetch_sub() == 10 and v.value == 9
        assert v.fetch_sub(20) == 9 and v.value == -11
        assert v.exchange(42) == -11 and v.value == 42
        assert v.compare_exchange(42, 43) == (True, 42)
        assert v.value == 43
        assert v.compare_exchange(42, 0) == (False, 43)
        assert v.value == 43
        # Plain writes and atomic reads look at the same memory.
        v.value = 100
        assert v.load() == 100
        obj = v.get_obj() if hasattr(v, "get_obj") else v
        assert obj.value == 100


def test_atomic_fetch_add_wraps_like_c():
    v = interproc.Value("b", 120)
    assert v.fetch_add(10) == 120
    assert v.value == -126
    u = interproc.Value("B", 250)
    assert u.fetch_add(10) == 250
    assert u.value == 4


@pytest.mark.parametrize("typecode", INTEGER_CODES)
def test_atomic_wrapping_at_each_width(typecode):
    ctype = typecode_to_type[typecode]
    lo, hi = int_range(ctype)
    span = hi - lo + 1
    for v in (interproc.Value(typecode, hi), interproc.RawValue(typecode, hi)):
        assert v.fetch_add() == hi
        assert v.load() == lo and v.value == lo
        assert v.fetch_sub() == lo
        assert v.load() == hi
        assert v.exchange(lo) == hi
        assert v.value == lo
        # A too-wide argument wraps as a ctypes assignment does.
        v.store(hi + 1)
        assert v.load() == ctype(hi + 1).value == lo
        v.store(0)
        assert v.fetch_add(span + 5) == 0 and v.load() == 5
        assert v.fetch_sub(span + 7) == 5 and v.load() == ctype(-2).value
        assert v.compare_exchange(ctype(-2).value, hi) == (True, ctype(-2).value)
        assert v.compare_exchange(lo, 0) == (False, hi)
        assert v.load() == hi


def test_signed_and_unsigned_differ():
    assert interproc.Value("b", 0).fetch_sub() == 0
    s, u = interproc.Value("b", 0), interproc.Value("B", 0)
    s.fetch_sub()
    u.fetch_sub()
    assert (s.value, u.value) == (-1, 255)
    s16, u16 = interproc.RawValue("h", 0), interproc.RawValue("H", 0)
    assert s16.fetch_sub(2) == 0 and u16.fetch_sub(2) == 0
    assert (s16.load(), u16.load()) == (-2, 65534)
    u32 = interproc.Value("I", 2**32 - 1)
    assert u32.compare_exchange(2**32 - 1, 0) == (True, 2**32 - 1)
    s64 = interproc.Value("q", -(2**63))
    assert s64.compare_exchange(-(2**63), 1) == (True, -(2**63))
    q = interproc.Value("Q", 0)
    assert q.fetch_sub() == 0 and q.load() == 2**64 - 1


ATOMIC_METHODS = ("load", "store", "fetch_add", "fetch_sub", "exchange", "compare_exchange")


@pytest.mark.parametrize("typecode", list(INTEGER_CODES) + [ctypes.c_int8, ctypes.c_uint32, ctypes.c_ssize_t],
                         ids=str)
def test_atomics_present_on_integer_values(typecode):
    for v in (interproc.Value(typecode), interproc.RawValue(typecode), interproc.Value(typecode, lock=False)):
        missing = [m for m in ATOMIC_METHODS if not callable(getattr(v, m, None))]
        assert not missing, f"{v!r} lacks {missing}"


@pytest.mark.parametrize(
    "make",
    [lambda: interproc.Value("d", 1.0), lambda: interproc.RawValue("f"), lambda: interproc.Value("c"),
     lambda: interproc.Value("u"), lambda: interproc.Value(Point3), lambda: interproc.Array("i", 3),
     lambda: interproc.RawArray("q", 3), lambda: interproc.Array("c", 3)],
    ids=["Value-d", "RawValue-f", "Value-c", "Value-u", "Value-Point3", "Array-i", "RawArray-q", "Array-c"],
)
def test_atomics_absent_on_non_integer_values(make):
    obj = make()
    present = [m for m in ATOMIC_METHODS if hasattr(obj, m)]
    assert not present, f"{obj!r} has {present}"


def test_atomic_argument_errors():
    v = interproc.Value("i", 1)
    with pytest.raises(TypeError):
        v.fetch_add(1.5)
    with pytest.raises(TypeError):
        v.store("3")
    with pytest.raises(TypeError):
        v.compare_exchange(1)
    with pytest.raises(TypeError):
        v.fetch_add(1, 2)
    assert v.value == 1


def test_atomics_act_on_shared_memory(unique_name):
    name = unique_name()
    a = interproc.Value("q", 0, name=name)
    b = interproc.RawValue("q", name=name)
    a.fetch_add(5)
    assert b.load() == 5
    assert b.exchange(9) == 5
    assert a.value == 9


@pytest.mark.timeout(90)
def test_concurrent_atomics_are_exact(start_method):
    n_procs, n = 3, 20000
    counter = interproc.Value("q", 0)
    cas_counter = interproc.RawValue("i", 0)
    # Wraps many times over: the total is only right modulo 2**16 if every
    # fetch_sub is applied whole.
    wrapping = interproc.RawValue("H", 7)
    ready, go = interproc.Queue(), interproc.Event()
    procs = [start(start_method, sch.atomic_increments, counter, cas_counter, wrapping, n, ready, go)
             for _ in range(n_procs)]
    for _ in procs:
        ready.get(timeout=TIMEOUT)
    go.set()
    join_ok(*procs)
    assert counter.value == n_procs * n
    assert cas_counter.value == n_procs * n
    assert wrapping.value == (7 - 3 * n_procs * n) % 2**16


# ================================================== several processes

def test_value_and_array_as_process_args(start_method):
    v = interproc.Value("d", 1.25)
    a = interproc.Array("i", [1, 2, 3])
    raw_v = interproc.RawValue("q", 21)
    raw_a = interproc.RawArray("h", [1, -2])
    point = interproc.Value(Point3, 3, 0.5, b"p")
    join_ok(start(start_method, sch.double_everything, v, a, raw_v, raw_a, point))
    assert v.value == 2.5
    assert a[:] == [10, 20, 30]
    assert raw_v.value == 42
    assert raw_a[:] == [2, -1]
    assert (point.x, point.y, point.tag) == (6, 1.0, b"kid")


@pytest.mark.parametrize("typecode", ["i", "d"])
def test_multiprocessing_values_of_the_same_type_do_not_break_pickling(typecode):
    """A program may use multiprocessing's shared ctypes next to
    interproc's; making one of the same ctypes type, before or after, must
    not take over how interproc's travel."""
    before = multiprocessing.RawValue(typecode)
    v = interproc.Value(typecode, 1)
    after = multiprocessing.Value(typecode)
    q = interproc.Queue()
    q.put(v)
    q.put(v.get_obj())
    w, raw = q.get(timeout=5), q.get(timeout=5)
    w.value = 2
    assert v.value == 2
    raw.value = 3
    assert v.value == 3
    del before, after


def test_round_trip_through_a_queue_in_one_process():
    """An interproc queue carries them outside of spawning too, where
    multiprocessing's own wrappers refuse to be pickled."""
    q = interproc.Queue()
    v, a = interproc.Value("i", 1), interproc.Array("d", [0.5, 1.5])
    rv, ra = interproc.RawValue("Q", 2), interproc.RawArray("c", b"ab")
    point = interproc.Value(Point3, 1, 2.0)
    for obj in (v, a, rv, ra, point):
        q.put(obj)
    v2, a2, rv2, ra2, point2 = (q.get(timeout=5) for _ in range(5))
    v2.value = 9
    assert v.value == 9
    assert v2.fetch_add(1) == 9 and v.value == 10
    a2[1] = 7.0
    assert a[:] == [0.5, 7.0]
    rv2.value = 3
    assert rv.value == 3 and rv2.load() == 3
    ra2.value = b"zz"
    assert ra.value == b"zz"
    point2.x = 11
    assert point.x == 11
    assert isinstance(v2.get_lock(), interproc.RLock)


def test_through_a_queue_to_a_running_child(start_method):
    n = 200
    q, out = interproc.Queue(), interproc.Queue()
    p = start(start_method, sch.from_queue_add, q, out, n)
    try:
        v, a = interproc.Value("q", 100), interproc.Array("i", [1, 2, 3])
        # Sent after start-up, so not while spawning.
        q.put(v)
        q.put(a)
        assert out.get(timeout=TIMEOUT) == ("done", 100 + n, [3, 6, 9])
        assert v.value == 100 + n
        assert a[:] == [3, 6, 9]
        v2, a2 = out.get(timeout=TIMEOUT)
        v2.value = -1
        a2[0] = 0
        assert v.value == -1 and a[:] == [0, 6, 9]
    finally:
        q.put("ack")
    join_ok(p)


@pytest.mark.timeout(90)
def test_locked_increments_by_several_processes_are_exact(start_method):
    n_procs, n = 3, 3000
    v = interproc.Value("i", 0)
    a = interproc.Array("i", [0, 0])
    ready, go = interproc.Queue(), interproc.Event()
    procs = [start(start_method, sch.locked_increments, v, a, n, ready, go) for _ in range(n_procs)]
    for _ in procs:
        ready.get(timeout=TIMEOUT)
    go.set()
    join_ok(*procs)
    assert v.value == n_procs * n
    assert a[:] == [n_procs * n, -n_procs * n]


@pytest.mark.parametrize("lock_kind", ["default", "interproc.Lock"])
def test_get_lock_is_shared_across_processes(start_method, lock_kind):
    if lock_kind == "default":
        v = interproc.Value("q", 0)
    else:
        v = interproc.Value("q", 0, lock=interproc.Lock())
    out, release = interproc.Queue(), interproc.Queue()
    lock = v.get_lock()
    assert lock.acquire(timeout=1)
    p = start(start_method, sch.probe_lock, v, out, release)
    try:
        assert out.get(timeout=TIMEOUT) == ("while-held", False), "the child took a lock the parent holds"
    finally:
        lock.release()
        release.put(1)
    assert out.get(timeout=TIMEOUT) == ("after-release", True)
    join_ok(p)
    assert v.value == p.pid


# ================================================== names

@pytest.mark.parametrize("factory", ["Value", "RawValue", "Array", "RawArray"])
def test_create_and_open_rules(unique_name, factory):
    make = getattr(interproc, factory)
    args = ("i", 5) if factory.endswith("Value") else ("i", [5, 6])
    name = unique_name()
    first = make(*args, name=name, create=True)
    assert os.path.exists(_helpers.shm_path(name))
    with pytest.raises(FileExistsError):
        make(*args, name=name, create=True)
    opened = make(*args, name=name, create=False)
    also = make(*args, name=name)
    for obj in (opened, also):
        if factory.endswith("Value"):
            obj.value = 8
            assert first.value == 8
        else:
            obj[1] = 8
            assert first[:] == [5, 8]
    missing = unique_name()
    with pytest.raises(FileNotFoundError):
        make(*args, name=missing, create=False)
    assert not os.path.exists(_helpers.shm_path(missing))
    created = make(*args, name=missing)  # create=None makes what is missing
    assert os.path.exists(_helpers.shm_path(missing))
    if factory.endswith("Value"):
        assert created.value == 5
    else:
        assert created[:] == [5, 6]


def test_opening_keeps_the_value_and_ignores_initial_args(unique_name):
    nv, na, nc, np_ = unique_name(), unique_name(), unique_name(), unique_name()
    v = interproc.Value("q", 5, name=nv)
    v.value = 6
    assert interproc.Value("q", 99, name=nv).value == 6
    assert interproc.Value("q", name=nv).value == 6
    assert interproc.RawValue("q", 1, name=nv).value == 6
    a = interproc.Array("i", [1, 2, 3], name=na)
    assert interproc.Array("i", [9, 9, 9], name=na)[:] == [1, 2, 3]
    assert interproc.RawArray("i", 3, name=na)[:] == [1, 2, 3]
    interproc.RawArray("c", b"abc", name=nc)
    assert interproc.Array("c", b"xyz", name=nc).value == b"abc"
    interproc.Value(Point3, 4, 0.5, name=np_)
    reopened = interproc.Value(Point3, 1, 1.0, b"no", name=np_)
    assert (reopened.x, reopened.y, reopened.tag) == (4, 0.5, b"")
    assert v.value == 6 and a[:] == [1, 2, 3]


def test_opening_in_another_process_keeps_the_value(start_method, unique_name):
    name = unique_name()
    v = interproc.Value("q", 40, name=name)
    join_ok(start(start_method, sch.open_by_name_and_set, name, 2))
    assert v.value == 42


@pytest.mark.parametrize(
    "first,second,words",
    [
        (lambda n: interproc.Value("i", name=n), lambda n: interproc.Value("d", name=n),
         ["c_int", "c_double"]),
        (lambda n: interproc.RawValue("q", name=n), lambda n: interproc.Value("Q", name=n),
         ["c_long", "c_ulong"]),
        (lambda n: interproc.Array("i", 3, name=n), lambda n: interproc.Array("i", 4, name=n),
         ["c_int * 3", "c_int * 4"]),
        (lambda n: interproc.Array("i", 3, name=n), lambda n: interproc.RawArray("b", 3, name=n),
         ["c_int * 3", "c_byte * 3"]),
        (lambda n: interproc.Value(Point3, name=n), lambda n: interproc.Value("i", name=n),
         ["Point3", "c_int"]),
        (lambda n: interproc.Value("i", name=n), lambda n: interproc.Array("i", 1, name=n),
         ["Value", "Array"]),
        (lambda n: interproc.Array("i", 1, name=n), lambda n: interproc.Value("i", name=n),
         ["Value", "Array"]),
    ],
    ids=["int-vs-double", "q-vs-Q", "length", "element", "struct-vs-int", "value-as-array",
         "array-as-value"],
)
def test_opening_as_another_type_raises_type_error_naming_both(unique_name, first, second, words):
    name = unique_name()
    original = first(name)
    with pytest.raises(TypeError) as info:
        second(name)
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{message!r} does not name {missing}"
    # The failed open must leave the object as it was.
    assert os.path.exists(_helpers.shm_path(name))
    again = first(name)
    assert type(again) is type(original)


@pytest.mark.parametrize("other", ["Queue", "Lock", "Event"])
def test_other_kinds_and_values_refuse_each_other(unique_name, other):
    name = unique_name()
    interproc.Value("i", name=name)
    with pytest.raises(TypeError):
        getattr(interproc, other)(name=name)
    name2 = unique_name()
    getattr(interproc, other)(name=name2)
    with pytest.raises(TypeError):
        interproc.Value("i", name=name2)
    with pytest.raises(TypeError):
        interproc.Array("i", 1, name=name2)


def test_attach_returns_a_working_synchronized_value(unique_name):
    name = unique_name()
    v = interproc.Value("q", 7, name=name)
    w = interproc.attach(name)
    assert w.value == 7
    assert isinstance(w.get_lock(), interproc.RLock)
    with w.get_lock():
        w.value += 1
    assert v.value == 8
    assert w.fetch_add(2) == 8 and v.value == 10
    assert w.get_obj().value == 10
    # The attached lock is the value's own lock, not a new one.
    with v.get_lock():
        assert w.get_lock().statistics()["locked"] is True


def test_attach_returns_working_arrays_and_structures(unique_name):
    na, nc, np_ = unique_name(), unique_name(), unique_name()
    a = interproc.Array("d", [0.5, 1.5, 2.5], name=na)
    b = interproc.attach(na)
    assert len(b) == 3 and b[:] == [0.5, 1.5, 2.5]
    b[1:] = [5.0, 6.0]
    assert a[:] == [0.5, 5.0, 6.0]
    assert isinstance(b.get_lock(), interproc.RLock)
    s = interproc.RawArray("c", b"hey", name=nc)
    t = interproc.attach(nc)
    assert t.value == b"hey" and t.raw == b"hey"
    t.value = b"yo"
    assert s.value == b"yo"
    interproc.Value(Point3, 2, 0.25, name=np_)
    p = interproc.attach(np_)
    assert (p.x, p.y) == (2, 0.25)


def test_attach_by_name_in_other_processes(start_method, unique_name):
    nv, na = unique_name(), unique_name()
    v = interproc.Value("i", 0, name=nv)
    a = interproc.Array("q", 3, name=na)
    n = 500
    procs = [start(start_method, sch.attach_and_increment, nv, n, None),
             start(start_method, sch.attach_and_increment, nv, n, None),
             start(start_method, sch.attach_and_increment, na, n, 3)]
    join_ok(*procs)
    assert v.value == 2 * n
    assert a[:] == [n, 0, 0]


def test_list_objects_shows_values_and_arrays(unique_name):
    nv, na, nr = unique_name(), unique_name(), unique_name()
    interproc.Value("i", name=nv)
    interproc.Array("d", 4, name=na)
    interproc.RawArray("c", 2, name=nr)
    kinds = {o.name: o.kind for o in interproc.list_objects()}
    assert kinds.get(nv) == "Value"
    assert kinds.get(na) == "Array"
    assert kinds.get(nr) == "Array"


def test_unlink(unique_name):
    name = unique_name()
    v = interproc.Value("i", 7, name=name)
    interproc.unlink(name)
    assert not os.path.exists(_helpers.shm_path(name))
    assert name not in {o.name for o in interproc.list_objects()}
    # Handles already open keep working on the old memory.
    v.value = 8
    with v.get_lock():
        assert v.fetch_add() == 8
    with pytest.raises(FileNotFoundError):
        interproc.Value("i", name=name, create=False)
    with pytest.raises(FileNotFoundError):
        interproc.attach(name)
    with pytest.raises(FileNotFoundError):
        interproc.unlink(name)
    fresh = interproc.Value("i", 1, name=name)
    assert fresh.value == 1 and v.value == 9


def test_mode(unique_name):
    old = os.umask(0o022)
    try:
        default, wide = unique_name(), unique_name()
        interproc.Value("i", name=default)
        interproc.Array("i", 2, name=wide, mode=0o640)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(_helpers.shm_path(default)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(_helpers.shm_path(wide)).st_mode) == 0o640


# ================================================== holders killed

@pytest.mark.timeout(90)
def test_value_lock_holder_killed_many_times():
    """A child takes the value's lock, changes the value and is SIGKILLed,
    before or while the parent waits; the parent's ``with`` must get in at
    once, told that the holder died, and see what the holder wrote."""
    seed = new_seed()
    rng = random.Random(seed)
    v = interproc.Value("q", 0)
    lock = v.get_lock()
    held = FORK.RawValue("b", 0)
    for i in range(HOLDER_KILLS):
        waiting = i % 2 == 1
        depth = rng.randint(1, 3)
        ctx = f"seed={seed} kill #{i} waiting={waiting} depth={depth}"
        held.value = 0
        victim = start(FORK, sch.hold_until_killed, v, depth, held)
        wait_until(lambda: held.value or victim.exitcode is not None, 10, f"{ctx}: the child to hold")
        assert held.value, f"{ctx}: child {sch.describe_exit(victim.exitcode)}"
        killed_at = []

        def kill():
            killed_at.append(time.monotonic())
            os.kill(victim.pid, signal.SIGKILL)

        if waiting:
            timer = threading.Timer(rng.uniform(0.002, 0.02), kill)
        else:
            time.sleep(rng.uniform(0, 0.003))
            assert kill_and_reap(victim) == -signal.SIGKILL, ctx
            killed_at.append(time.monotonic())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if waiting:
                timer.start()
            with v.get_lock():
                took = time.monotonic() - killed_at[0]
                died = lock.owner_died
                seen = v.value
            if waiting:
                timer.join()
                assert kill_and_reap(victim) == -signal.SIGKILL, ctx
        assert took < TAKEOVER, f"{ctx}: took {took:.3f}s to take over a dead holder's lock"
        assert died is True, f"{ctx}: owner_died is not set after a takeover"
        assert len(owner_died_warnings(caught)) == 1, f"{ctx}: warnings {[str(w) for w in caught]}"
        assert seen == i + 1, ctx
        assert lock.statistics()["locked"] is False, f"{ctx}: one release did not free it"
        with warnings.catch_warnings():
            warnings.simplefilter("error", interproc.OwnerDiedWarning)
            with v:
                assert lock.owner_died is False, f"{ctx}: owner_died stuck after a normal acquisition"


# ================================================== NumPy views

def test_as_ndarray_shares_memory():
    np = pytest.importorskip("numpy")
    a = interproc.Array("d", 4)
    arr = interproc.as_ndarray(a)
    assert arr.dtype == np.float64 and arr.shape == (4,)
    arr[1] = 2.5
    assert a[1] == 2.5
    a[2] = -1.0
    assert arr[2] == -1.0
    assert np.shares_memory(arr, interproc.as_ndarray(a))

    raw = interproc.RawArray("i", [1, 2, 3])
    rarr = interproc.as_ndarray(raw)
    assert rarr.dtype == np.dtype(ctypes.c_int) and rarr.tolist() == [1, 2, 3]
    rarr += 10
    assert raw[:] == [11, 12, 13]

    v = interproc.Value("h", 3)
    varr = interproc.as_ndarray(v)
    assert varr.shape == () and varr.dtype == np.int16 and int(varr) == 3
    varr[()] = -9
    assert v.value == -9
    v.value = 4
    assert int(varr) == 4


def test_as_ndarray_of_a_named_array_across_handles(unique_name):
    np = pytest.importorskip("numpy")
    name = unique_name()
    a = interproc.Array("q", 5, name=name)
    b = interproc.attach(name)
    interproc.as_ndarray(a)[:] = np.arange(5)
    assert b[:] == [0, 1, 2, 3, 4]
    assert interproc.as_ndarray(b).tolist() == [0, 1, 2, 3, 4]


def test_as_ndarray_writes_in_a_child_are_seen(start_method):
    np = pytest.importorskip("numpy")
    a = interproc.Array("d", [1.0, 2.0, 3.0])
    arr = interproc.as_ndarray(a)
    join_ok(start(start_method, sch.scale_ndarray, a, 3))
    assert a[:] == [3.0, 6.0, 9.0]
    assert np.array_equal(arr, [3.0, 6.0, 9.0])


# ================================================== leaks

def _memfd_state():
    return len(_helpers.memfd_fds()), len(_helpers.memfd_maps())


def test_anonymous_objects_leave_nothing_behind():
    gc.collect()
    before_entries = _helpers.shm_entries()
    before_memfds = _memfd_state()
    q = interproc.Queue()
    baseline_with_queue = _memfd_state()
    for i in range(40):
        objs = [interproc.Value("i", i), interproc.Array("d", 8), interproc.RawValue("q", i),
                interproc.RawArray("c", b"xyz"), interproc.Value(Point3, i),
                interproc.Value("i", lock=False)]
        objs[0].fetch_add()
        with objs[1].get_lock():
            objs[1][0] = 1.0
        for obj in objs[:2]:
            q.put(obj)
            q.get(timeout=5)
        del objs, obj
    gc.collect()
    assert _memfd_state() == baseline_with_queue, "anonymous objects kept their memory after deletion"
    del q
    gc.collect()
    assert _memfd_state() == before_memfds
    assert _helpers.new_shm_entries(before_entries) == set(), "anonymous objects made a named segment"


def test_a_view_needs_no_mapping_or_descriptor_of_its_own():
    """The ctypes object lies over the segment's own mapping."""
    gc.collect()
    fds0, maps0 = _memfd_state()
    objs = [interproc.RawValue("q", i) for i in range(10)] + [interproc.Array("d", 3) for _ in range(5)]
    fds1, maps1 = _memfd_state()
    assert (fds1 - fds0, maps1 - maps0) == (15, 15)
    del objs
    gc.collect()
    assert _memfd_state() == (fds0, maps0)


def test_closing_the_segment_keeps_the_view_working_until_it_goes():
    """close() gives the descriptor back at once; the memory stays mapped
    for the views over it, and goes with the last of them."""
    gc.collect()
    raw = interproc.RawArray("q", 4)
    segment = raw._interproc_segment[0]
    fds0, maps0 = _memfd_state()
    segment.close()
    assert _memfd_state() == (fds0 - 1, maps0)
    raw[:] = [1, 2, 3, 4]
    assert raw[:] == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        memoryview(segment)  # no new views of a closed segment
    del raw
    gc.collect()
    assert _memfd_state() == (fds0 - 1, maps0 - 1)


def test_an_attached_value_survives_its_lock_handle_being_closed(unique_name):
    """What `interproc ls` does: attach, look at the lock, close it."""
    name = unique_name()
    a = interproc.Array("i", [1, 2, 3], name=name)
    b = interproc.attach(name)
    b.get_lock().close()
    assert b.get_obj()[:] == [1, 2, 3]
    a[0] = 9
    assert b.get_obj()[0] == 9


def test_anonymous_objects_used_by_children_leave_nothing_behind(start_method):
    before = _helpers.shm_entries()
    v, a = interproc.Value("d", 1.0), interproc.Array("i", [1, 2, 3])
    join_ok(start(start_method, sch.double_everything, v, a, interproc.RawValue("q"),
                  interproc.RawArray("h", 2), interproc.Value(Point3)))
    assert v.value == 2.0
    del v, a
    gc.collect()
    assert _helpers.new_shm_entries(before) == set()


@pytest.mark.parametrize("ctype", [ctypes.c_char_p, ctypes.c_wchar_p, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_int)])
def test_pointer_types_are_refused(ctype):
    # A pointer stored in shared memory points into one process's memory:
    # following it from anywhere else crashes.
    for make in (lambda: interproc.Value(ctype), lambda: interproc.RawValue(ctype),
                 lambda: interproc.Array(ctype, 2), lambda: interproc.RawArray(ctype, 2)):
        with pytest.raises(TypeError, match="pointer"):
            make()
