"""Hostile input to the synchronization objects and shared values: segments
damaged or forged by another process (before and after attaching), bad
arguments to the constructors and to the private methods the Python layer
calls, and counters pushed to their limits.

Anything that may crash the interpreter runs in a child
(``subprocess.run([sys.executable, "-c", ...])``) whose exit status and
output the test checks, so a regression fails one test instead of killing
pytest.  The answer to every such input is an exception, never a signal,
a hang or a silent write outside the segment.
"""

import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import interproc
from interproc import _core

from _helpers import SHM_DIR, SHM_PREFIX, new_seed, wait_until
from _sync_helpers import barrier_outcome

pytestmark = pytest.mark.timeout(120)

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


def path_of(name):
    return os.path.join(SHM_DIR, SHM_PREFIX + name)


def poke(name, offset, fmt, value):
    with open(path_of(name), "r+b") as f:
        f.seek(offset)
        f.write(fmt.pack(value))


def peek(name, offset, fmt):
    with open(path_of(name), "rb") as f:
        f.seek(offset)
        return fmt.unpack(f.read(fmt.size))[0]


def value_offset(unique_name):
    """Where a synchronization header keeps its `value` word (and, 8 bytes
    on, `maxvalue`; 24 bytes before, the lock's `owner`): found by looking
    for a semaphore's value in its file, so no offset is written down here."""
    name = unique_name()
    marker = 0x1122334455667788
    sem = interproc.Semaphore(marker, name=name)
    with open(path_of(name), "rb") as f:
        data = f.read()
    sem.close()
    interproc.unlink(name)
    offset = data.find(U64.pack(marker))
    assert offset > 0 and data.find(U64.pack(marker), offset + 8) == offset + 8
    return offset


def meta_offset(name, meta):
    """Where a Value's type description starts: `meta_len` is the u32 just
    before it and `data_size` the u64 before that."""
    with open(path_of(name), "rb") as f:
        data = f.read(1 << 16)
    offset = data.find(meta)
    assert offset > 0
    assert U32.unpack_from(data, offset - 4)[0] == len(meta)
    return offset


def run_child(code, timeout=60):
    """Run ``code`` in a fresh interpreter; its stdout, after asserting it
    exited 0 (a signal shows as a negative code)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"child exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def open_fds():
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------- sizes re-read after attach

def test_meta_len_forged_after_attach_is_not_reread(unique_name):
    """A handle keeps the type description it validated; a new handle
    refuses the damaged header."""
    name = unique_name()
    out = run_child(f"""
        import pickle, struct, interproc
        name = {name!r}
        v = interproc.Value("i", 5, name=name)
        other = interproc.attach(name)
        meta = v.get_lock()._meta
        with open("/dev/shm/interproc." + name, "r+b") as f:
            data = f.read(1 << 16)
            at = data.find(meta)
            f.seek(at - 4)
            f.write(struct.pack("<I", 0xFFFFFFFF))
        assert v.get_lock()._meta == meta
        assert other.get_lock()._meta == meta
        assert other.value == 5
        try:
            interproc.attach(name)
        except interproc.SegmentError as exc:
            print("refused:", exc)
        else:
            print("attached a header with a 4 GiB type description")
    """)
    assert "refused:" in out, out


def test_data_size_forged_after_attach_does_not_widen_atomic_access(unique_name):
    name = unique_name()
    out = run_child(f"""
        import struct, interproc
        from interproc import _core
        name = {name!r}
        v = interproc.Value("q", 1, name=name)
        seg = v.get_lock()
        meta = seg._meta
        with open("/dev/shm/interproc." + name, "r+b") as f:
            data = f.read(1 << 16)
            at = data.find(meta)
            f.seek(at - 12)
            f.write(struct.pack("<Q", 1 << 50))
        try:
            cell = _core.AtomicCell(seg, 1 << 40, 8, True)
        except ValueError as exc:
            print("refused:", exc)
        else:
            cell.store(1)
            print("wrote 1 TiB past the data")
        assert seg._data_size == 8
        v.value = 7
        assert v.value == 7
    """)
    assert "refused:" in out, out


@pytest.mark.parametrize("offset", [2**64 - 8, 2**64 - 4096, 2**63])
def test_atomic_cell_offset_that_wraps_around_is_refused(offset):
    v = interproc.RawValue("q", 3)
    seg = v._interproc_segment[0]
    with pytest.raises(ValueError):
        _core.AtomicCell(seg, offset, 8, True)
    assert v.value == 3


def test_barrier_parties_forged_after_attach(unique_name):
    name = unique_name()
    at = value_offset(unique_name) + 8  # maxvalue: the parties
    barrier = interproc.Barrier(2, name=name)
    other = interproc.Barrier(2, name=name, create=False)
    poke(name, at, U64, 10**9)
    assert barrier.parties == 2 and other.parties == 2
    t = threading.Thread(target=other.wait, args=(30,))
    t.start()
    assert barrier.wait(30) in (0, 1)
    t.join(30)
    assert not t.is_alive()
    for forged in (0, 2**31, 2**64 - 1):
        poke(name, at, U64, forged)
        with pytest.raises(interproc.SegmentError, match="parties"):
            interproc.attach(name)


def test_a_forged_full_barrier_count_holds_nobody_past_their_timeout(unique_name):
    """A timeout that expires once the last party is in waits for the
    generation to pass, as threading's does, but only while live parties
    back the count up: a forged one cannot hold anyone."""
    at = value_offset(unique_name)
    name = unique_name()
    barrier = interproc.Barrier(3, name=name)
    out = []
    t = threading.Thread(target=lambda: out.append(barrier_outcome(barrier, 0.3)))
    t.start()
    wait_until(lambda: barrier.n_waiting == 1, what="the party to arrive")
    poke(name, at, U64, (peek(name, at, U64) & ~0x7FFFFFFF) | 3)  # "all 3 are in"
    t.join(30)
    assert not t.is_alive() and out == ["broken"]
    barrier.reset()
    poke(name, at, U64, (peek(name, at, U64) & ~0x7FFFFFFF) | 3)
    assert barrier_outcome(barrier, 0.3) == "broken"  # arriving: waits for room, then gives up


def test_condition_tickets_wrapping_around_keep_waiters_in_order(unique_name):
    """Registration tickets are compared by their difference, so the 64-bit
    counter may wrap (or be forged to wrap) without reordering waiters."""
    probe = unique_name()
    value = interproc.Value("i", name=probe)
    # The ticket counter is the first word of the Condition part, which
    # starts on the cache line after the type description's room (2048 bytes).
    meta_at = meta_offset(probe, value.get_lock()._meta)
    tickets_at = (meta_at + 2048 + 63) // 64 * 64
    name = unique_name()
    cond = interproc.Condition(name=name)
    poke(name, tickets_at, U64, 2**64 - 3)
    arrived, out = interproc.RawValue("q", 0), interproc.Queue()
    threads = []

    def wait_once(i):
        with cond:
            arrived.fetch_add(1)
            out.put((i, cond.wait(60)))

    for i in range(6):
        threads.append(threading.Thread(target=wait_once, args=(i,)))
        threads[-1].start()
        wait_until(lambda: arrived.load() == i + 1, what="the waiter to arrive")
        with cond:  # it let the lock go: it waits
            pass
    assert peek(name, tickets_at, U64) == 3, "the ticket counter is not where the test looks"
    order = []
    for _ in range(6):
        with cond:
            cond.notify()
        order.append(out.get(timeout=60))
    for t in threads:
        t.join(60)
    assert order == [(i, True) for i in range(6)]


# ------------------------------------------------------ counter limits

def test_semaphore_release_that_would_overflow_is_refused():
    top = 2**63 - 1
    sem = interproc.Semaphore(top)
    with pytest.raises(OverflowError):
        sem.release()
    assert sem.get_value() == top
    sem = interproc.Semaphore(top - 5)
    with pytest.raises(OverflowError):
        sem.release(6)
    assert sem.get_value() == top - 5
    sem.release(5)
    assert sem.get_value() == top


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_value_forged_near_the_top_does_not_wrap(unique_name, kind):
    at = value_offset(unique_name)
    name = unique_name()
    sem = getattr(interproc, kind)(1, name=name)
    poke(name, at, U64, 2**64 - 1)
    with pytest.raises((OverflowError, ValueError)):
        sem.release()
    assert peek(name, at, U64) == 2**64 - 1


def test_lock_owner_forged_out_of_key_range_is_taken_over(unique_name):
    at = value_offset(unique_name) - 24  # owner
    for forged in (2**64 - 1, 2**63, 1 << 48, 12345):
        name = unique_name()
        lock = interproc.Lock(name=name)
        poke(name, at, U64, forged)
        assert lock.locked()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=10) is True
        assert lock.owner_died is True
        assert any(issubclass(w.category, interproc.OwnerDiedWarning) for w in caught)
        lock.release()
        assert not lock.locked()


# ------------------------------------------ private methods, bad arguments

def test_barrier_slot_indices_from_the_caller_are_range_checked():
    out = run_child("""
        import threading, interproc
        b = interproc.Barrier(2)
        for args in [(0, 10**6), (0, -5), (0, 2**31 - 1), (2**40, 64)]:
            for call in (b._barrier_release, b._barrier_abort):
                try:
                    call(*args)
                except (threading.BrokenBarrierError, OverflowError, ValueError):
                    pass
            b.reset()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_cond_wait_refuses_what_is_not_an_interproc_lock():
    cond = interproc.Condition()
    with cond:
        for bad in (None, threading.Lock(), interproc.Semaphore(1), interproc.Event(), 3):
            with pytest.raises(TypeError):
                cond._cond_wait(bad, 0.01)
        with pytest.raises(TypeError):
            cond._cond_wait(cond)


def test_wait_on_a_lock_held_by_someone_else_is_refused():
    cond = interproc.Condition()
    with pytest.raises(RuntimeError):
        cond._cond_wait(cond, 0.01)
    cond.acquire()
    try:
        t = threading.Thread(target=lambda: pytest.raises(RuntimeError, cond._cond_wait, cond, 0.01))
        t.start()
        t.join(30)
    finally:
        cond.release()


# ------------------------------------------------------------- fd leaks

@pytest.mark.parametrize("args", [
    (interproc.Semaphore._KIND, 2**70),
    (interproc.Semaphore._KIND, 1, 2**70),
    (interproc.Lock._KIND, 0, 0, True, 2**70),
    (interproc.Lock._KIND, 0, 0, True, 0, "not bytes"),
    ("not a kind",),
    (interproc.Lock._KIND, 0, 0, True, 0, b"x" * 5000),
    (999, 0, 0, True),
])
def test_syncore_owns_its_fd_even_when_its_arguments_are_bad(args):
    fd = os.memfd_create("probe", os.MFD_CLOEXEC)
    before = open_fds()
    with pytest.raises((OverflowError, TypeError, ValueError)):
        _core.SyncCore.__new__(interproc.Lock, fd, *args)
    assert open_fds() == before - 1, "the descriptor was leaked"
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize("make", [
    lambda name: interproc.Semaphore(2**64, name=name),
    lambda name: interproc.BoundedSemaphore(2**70, name=name),
    lambda name: interproc.Barrier(2**40, name=name),
])
def test_constructors_failing_on_a_bad_argument_leave_nothing_open(unique_name, make):
    name = unique_name()
    before = open_fds()
    with pytest.raises((OverflowError, ValueError)):
        make(name)
    assert open_fds() == before, "a descriptor was leaked"
    assert not os.path.exists(path_of(name)), "the new name was left behind"


@pytest.mark.parametrize("make", [
    lambda name: interproc.RawValue("i", "not an int", name=name),
    lambda name: interproc.Value("d", 1, 2, name=name),
    lambda name: interproc.RawArray("i", [1, "two"], name=name),
    lambda name: interproc.Array("h", [None], name=name),
])
def test_values_failing_on_a_bad_initializer_leave_nothing_behind(unique_name, make):
    name = unique_name()
    before = open_fds()
    with pytest.raises(TypeError):
        make(name)
    assert open_fds() == before, "a descriptor was leaked"
    assert not os.path.exists(path_of(name)), "the new name was left behind, zeroed"


# ------------------------------------------ garbage, before and meanwhile

GARBAGE_CHILD = """
import os, random, sys, threading, time, warnings
import interproc
warnings.simplefilter("ignore")
seed, name, start = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
path = "/dev/shm/interproc." + name
objs = {
    "Lock": lambda: interproc.Lock(name=name),
    "RLock": lambda: interproc.RLock(name=name),
    "Semaphore": lambda: interproc.Semaphore(2, name=name),
    "BoundedSemaphore": lambda: interproc.BoundedSemaphore(2, name=name),
    "Event": lambda: interproc.Event(name=name),
    "Condition": lambda: interproc.Condition(name=name),
    "Barrier": lambda: interproc.Barrier(2, name=name),
    "Value": lambda: interproc.Value("q", 1, name=name),
}


def scribble(size, stop):
    fd = os.open(path, os.O_RDWR)
    try:
        while not stop.is_set():
            os.pwrite(fd, rng.randbytes(8), rng.randrange(start, size - 8) & ~7)
    finally:
        os.close(fd)


def exercise(kind, obj):
    def attempt(fn, *args):
        try:
            fn(*args)
        except (ValueError, RuntimeError, OverflowError, AssertionError, threading.BrokenBarrierError):
            pass
    for _ in range(30):
        if kind in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
            attempt(obj.acquire, True, 0.01)
            attempt(obj.release)
            attempt(obj.statistics)
            attempt(repr, obj)
        elif kind == "Event":
            attempt(obj.wait, 0.01)
            attempt(obj.set)
            attempt(obj.clear)
            attempt(obj.statistics)
        elif kind == "Condition":
            if obj.acquire(timeout=0.05):
                attempt(obj.wait, 0.01)
                attempt(obj.notify)
                attempt(obj.notify, 3)
                attempt(obj.notify_all)
                attempt(obj.release)
            attempt(obj.statistics)
        elif kind == "Barrier":
            attempt(obj.wait, 0.01)
            attempt(obj.reset)
            attempt(obj.statistics)
            attempt(repr, obj)
        else:
            attempt(setattr, obj, "value", 3)
            attempt(obj.fetch_add, 2)
            attempt(lambda: obj.value)
            if obj.get_lock().acquire(timeout=0.05):
                attempt(obj.get_lock().release)


for kind, make in objs.items():
    obj = make()
    size = os.path.getsize(path)
    header = min(size, 16384)
    # Garbage before attaching: the attach refuses or the object works.
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(rng.randbytes(header - start))
    try:
        exercise(kind, objs[kind]())
    except (ValueError, TypeError):
        pass
    # Garbage while in use.
    stop = threading.Event()
    t = threading.Thread(target=scribble, args=(header, stop))
    t.start()
    try:
        exercise(kind, obj)
    finally:
        stop.set()
        t.join()
    interproc.unlink(name)
    print(kind, "ok", flush=True)
"""


@pytest.mark.parametrize("round_", range(3))
def test_garbage_in_the_header_never_crashes_or_hangs(unique_name, round_):
    """Every byte after the segment header: random before attaching, and
    overwritten at random all the while the object is used."""
    seed = new_seed()
    start = value_offset(unique_name) - 24  # the first word after the segment header
    name = unique_name()
    r = subprocess.run([sys.executable, "-c", GARBAGE_CHILD, str(seed), name, str(start)],
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, f"seed={seed}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.split().count("ok") == 8, f"seed={seed}: {r.stdout}"
