"""Single-process semantics of Lock, RLock, Semaphore, BoundedSemaphore and
Event, and the open/create rules of named ones.

Wherever interproc means to behave as multiprocessing does, the test runs
against both: passing on multiprocessing's class proves the test, passing on
interproc's proves the drop-in.  Other threads stand in for other processes
here; test_sync_multiprocess.py has the real thing.
"""

import functools
import multiprocessing
import os
import re
import signal
import threading
import time
import warnings

import pytest

import interproc

import _helpers
from _helpers import TIMING_SLACK, assert_took, sigint_soon

# How soon a waiter must notice a release, a set() or a signal.  Generous:
# the machines are 2-core and noisy; a lost wake-up shows up as seconds.
PROMPT = 1.0

KINDS = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event"]


# Waiters here are threads of this process: seconds are plenty.
wait_until = functools.partial(_helpers.wait_until, timeout=5.0, interval=0.002)


def in_thread(fn, *args):
    """Run fn in another thread and return what it returned (or raise what
    it raised), so that ownership questions are asked by a non-owner."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"{fn} hung in another thread"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture(params=["interproc", "interproc-named", "multiprocessing"])
def make(request, unique_name):
    """make(kind, *args): one of interproc's primitives (anonymous or named)
    or multiprocessing's, so each test checks the drop-in claim."""

    def make_(kind, *args):
        if request.param == "multiprocessing":
            return getattr(multiprocessing, kind)(*args)
        kwargs = {"name": unique_name()} if request.param == "interproc-named" else {}
        return getattr(interproc, kind)(*args, **kwargs)

    return make_


@pytest.fixture(params=["anonymous", "named"])
def make_ip(request, unique_name):
    """make_ip(kind, *args): interproc only, for its extensions."""

    def make_(kind, *args):
        kwargs = {"name": unique_name()} if request.param == "named" else {}
        return getattr(interproc, kind)(*args, **kwargs)

    return make_


def test_public_names():
    for name in KINDS + ["OwnerDiedWarning"]:
        assert name in interproc.__all__, name
        assert getattr(interproc, name) is not None
    assert issubclass(interproc.OwnerDiedWarning, Warning)


# ------------------------------------------------------------------- Lock

def test_lock_acquire_release(make):
    lock = make("Lock")
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(timeout=0) is False
    lock.release()
    assert lock.acquire(block=False) is True
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_nonblocking_acquire_ignores_timeout(make, kind):
    """multiprocessing ignores the timeout when block is false."""
    lock = make(kind)
    in_thread(lock.acquire)
    t0 = time.monotonic()
    assert lock.acquire(False, 5.0) is False
    assert time.monotonic() - t0 < TIMING_SLACK


@pytest.mark.parametrize("timeout", [0.1, 0.25])
def test_lock_acquire_timeout_is_honoured(make, timeout):
    lock = make("Lock")
    lock.acquire()
    t0 = time.monotonic()
    assert lock.acquire(timeout=timeout) is False
    assert_took(time.monotonic() - t0, timeout)
    lock.release()


def test_lock_context_manager(make):
    lock = make("Lock")
    with lock:
        assert lock.acquire(False) is False
    assert lock.acquire(False) is True
    lock.release()
    with pytest.raises(ZeroDivisionError):
        with lock:
            1 / 0
    assert lock.acquire(False) is True, "an exception inside `with` left the lock held"
    lock.release()


def test_lock_released_by_another_thread(make):
    lock = make("Lock")
    lock.acquire()
    in_thread(lock.release)
    assert lock.acquire(False) is True
    lock.release()


def test_lock_is_not_reentrant(make):
    lock = make("Lock")
    lock.acquire()
    assert lock.acquire(timeout=0.05) is False
    lock.release()


def test_blocked_acquire_is_woken_by_release_from_a_thread(make):
    lock = make("Lock")
    lock.acquire()
    timer = threading.Timer(0.1, lock.release)
    timer.start()
    try:
        t0 = time.monotonic()
        assert lock.acquire(timeout=10) is True
        assert time.monotonic() - t0 < PROMPT
    finally:
        timer.join()
    lock.release()


def test_release_of_unlocked_lock_is_also_runtime_error(make_ip):
    """threading.Lock raises RuntimeError there, and so does a
    multiprocessing manager's Lock proxy, which Manager().Lock() replaces."""
    lock = make_ip("Lock")
    with pytest.raises(RuntimeError):
        lock.release()
    assert isinstance(interproc.synchronize.UnlockedReleaseError(), ValueError)
    with interproc.Manager() as m:
        with pytest.raises(RuntimeError):
            m.Lock().release()


def test_release_of_unlocked_lock_is_value_error(make):
    lock = make("Lock")
    with pytest.raises(ValueError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    assert lock.acquire(False) is True, "a refused release changed the state"
    lock.release()


def test_lock_locked(make_ip):
    """locked() is interproc's (multiprocessing 3.11 has none)."""
    lock = make_ip("Lock")
    assert lock.locked() is False
    lock.acquire()
    assert lock.locked() is True
    lock.release()
    assert lock.locked() is False


def test_many_threads_contending(make):
    lock = make("Lock")
    counter = [0]
    errors = []

    def work():
        for _ in range(2000):
            if not lock.acquire(timeout=10):
                errors.append("timeout")
                return
            v = counter[0]
            if v % 64 == 0:
                time.sleep(0)  # give the GIL away inside the critical section
            counter[0] = v + 1
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert counter[0] == 8000


# ------------------------------------------------------------------ RLock

def test_rlock_is_reentrant(make):
    rlock = make("RLock")
    assert rlock.acquire() is True
    assert rlock.acquire() is True
    assert rlock.acquire(False) is True
    assert in_thread(rlock.acquire, False) is False
    rlock.release()
    rlock.release()
    assert in_thread(rlock.acquire, False) is False, "freed before the last release"
    rlock.release()

    def take_and_give_back():
        ok = rlock.acquire(False)
        if ok:
            rlock.release()
        return ok

    assert in_thread(take_and_give_back) is True


def test_rlock_release_by_non_owner_thread_is_assertion_error(make):
    rlock = make("RLock")
    rlock.acquire()
    with pytest.raises(AssertionError):
        in_thread(rlock.release)
    # The refused release must not have freed it.
    assert in_thread(rlock.acquire, False) is False
    rlock.release()


def test_rlock_release_when_unlocked_is_assertion_error(make):
    rlock = make("RLock")
    with pytest.raises(AssertionError):
        rlock.release()
    rlock.acquire()
    rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()


def test_rlock_nested_context_managers(make):
    rlock = make("RLock")
    with rlock:
        with rlock:
            assert in_thread(rlock.acquire, False) is False
        assert in_thread(rlock.acquire, False) is False
    assert rlock.acquire(False) is True
    rlock.release()


def test_rlock_timeout_is_honoured_for_a_non_owner(make):
    timeout = 0.1
    rlock = make("RLock")
    rlock.acquire()

    def timed():
        t0 = time.monotonic()
        ok = rlock.acquire(timeout=timeout)
        return ok, time.monotonic() - t0

    ok, elapsed = in_thread(timed)
    assert ok is False
    assert_took(elapsed, timeout)
    rlock.release()


def test_rlock_waiter_gets_it_after_the_last_release(make):
    rlock = make("RLock")
    rlock.acquire()
    rlock.acquire()
    got = []

    def waiter():
        ok = rlock.acquire(timeout=10)
        got.append(ok)
        if ok:
            rlock.release()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    rlock.release()
    time.sleep(0.05)
    assert not got, "the waiter got an RLock that was still held once"
    rlock.release()
    t.join(10)
    assert got == [True]


def test_rlock_of_a_finished_thread_is_not_inherited_by_a_thread_reusing_its_ident(make_ip):
    """A thread that ended holding an RLock keeps it held (its process
    lives on), even for a later thread that the system gives the same
    thread ident: ownership is by a per-thread number never reused."""
    rlock = make_ip("RLock")
    held_by = []

    def hold():
        rlock.acquire()
        held_by.append(threading.get_ident())

    t = threading.Thread(target=hold)
    t.start()
    t.join(10)
    for _ in range(100):
        got = []

        def probe():
            got.append((threading.get_ident(), rlock.acquire(timeout=0.01)))

        t = threading.Thread(target=probe)
        t.start()
        t.join(10)
        ident, ok = got[0]
        assert ok is False, "a new thread took over a finished thread's RLock as its own"
        if ident == held_by[0]:
            break
    else:
        pytest.skip("no new thread was given the finished thread's ident")
    assert rlock.statistics()["recursion"] == 1


# ------------------------------------------------------------ Semaphore

def test_semaphore_counts(make):
    sem = make("Semaphore", 3)
    assert sem.get_value() == 3
    assert [sem.acquire() for _ in range(3)] == [True, True, True]
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    assert sem.acquire(timeout=0) is False
    sem.release()
    assert sem.get_value() == 1
    sem.release()
    sem.release()
    sem.release()  # an unbounded semaphore may go above its initial value
    assert sem.get_value() == 4


def test_semaphore_default_value_is_one(make):
    sem = make("Semaphore")
    assert sem.get_value() == 1
    assert sem.acquire(False) is True
    assert sem.acquire(False) is False


def test_semaphore_zero(make):
    sem = make("Semaphore", 0)
    assert sem.get_value() == 0
    assert sem.acquire(False) is False


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_timeout_is_honoured(make, kind):
    sem = make(kind, 1)
    sem.acquire()
    t0 = time.monotonic()
    assert sem.acquire(timeout=0.1) is False
    assert_took(time.monotonic() - t0, 0.1)
    assert sem.get_value() == 0


def test_semaphore_context_manager(make):
    sem = make("Semaphore", 2)
    with sem:
        assert sem.get_value() == 1
        with sem:
            assert sem.get_value() == 0
    assert sem.get_value() == 2


def test_semaphore_woken_by_release_from_a_thread(make):
    sem = make("Semaphore", 0)
    timer = threading.Timer(0.1, sem.release)
    timer.start()
    try:
        t0 = time.monotonic()
        assert sem.acquire(timeout=10) is True
        assert time.monotonic() - t0 < PROMPT
    finally:
        timer.join()
    assert sem.get_value() == 0


def test_bounded_semaphore_over_release_is_value_error(make):
    sem = make("BoundedSemaphore", 2)
    with pytest.raises(ValueError):
        sem.release()
    assert sem.get_value() == 2
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    assert sem.get_value() == 2


def test_bounded_semaphore_of_zero(make):
    sem = make("BoundedSemaphore", 0)
    assert sem.acquire(False) is False
    with pytest.raises(ValueError):
        sem.release()
    assert sem.get_value() == 0


def test_multiprocessing_semaphore_has_no_release_n():
    """Why release(n) is tested on interproc only."""
    with pytest.raises(TypeError):
        multiprocessing.Semaphore(0).release(2)


def test_semaphore_release_n(make_ip):
    sem = make_ip("Semaphore", 0)
    sem.release(3)
    assert sem.get_value() == 3
    sem.release(n=2)
    assert sem.get_value() == 5
    sem.release(1)
    assert sem.get_value() == 6


def test_semaphore_release_n_wakes_n_waiters(make_ip):
    sem = make_ip("Semaphore", 0)
    results = []

    def waiter():
        results.append(sem.acquire(timeout=10))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: sem.statistics()["waiters"] == 3, what="3 waiters")
    t0 = time.monotonic()
    sem.release(3)
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < PROMPT, "release(3) did not wake all 3 waiters at once"
    assert results == [True, True, True]
    assert sem.get_value() == 0


def test_bounded_semaphore_release_n_over_bound_changes_nothing(make_ip):
    """As threading.BoundedSemaphore.release(n): all or nothing."""
    sem = make_ip("BoundedSemaphore", 3)
    sem.acquire()
    sem.acquire()
    with pytest.raises(ValueError):
        sem.release(3)
    assert sem.get_value() == 1
    sem.release(2)
    assert sem.get_value() == 3
    with pytest.raises(ValueError):
        sem.release(1)


# ------------------------------------------------------------------ Event

def test_event_set_clear_is_set(make):
    ev = make("Event")
    assert ev.is_set() is False
    ev.set()
    assert ev.is_set() is True
    ev.set()
    assert ev.is_set() is True
    ev.clear()
    assert ev.is_set() is False
    ev.clear()
    assert ev.is_set() is False


@pytest.mark.parametrize("timeout", [0.1, 0.25])
def test_event_wait_times_out_with_false(make, timeout):
    ev = make("Event")
    t0 = time.monotonic()
    assert ev.wait(timeout) is False
    assert_took(time.monotonic() - t0, timeout)
    t0 = time.monotonic()
    assert ev.wait(timeout=0) is False
    assert time.monotonic() - t0 < TIMING_SLACK


def test_event_wait_when_set_returns_true_at_once(make):
    ev = make("Event")
    ev.set()
    t0 = time.monotonic()
    assert ev.wait() is True
    assert ev.wait(0) is True
    assert ev.wait(timeout=5) is True
    assert time.monotonic() - t0 < TIMING_SLACK


def test_event_set_from_a_thread_wakes_wait(make):
    ev = make("Event")
    timer = threading.Timer(0.1, ev.set)
    timer.start()
    try:
        t0 = time.monotonic()
        assert ev.wait(10) is True
        assert time.monotonic() - t0 < PROMPT
    finally:
        timer.join()


def test_event_set_wakes_every_waiting_thread(make):
    ev = make("Event")
    results = []
    threads = [threading.Thread(target=lambda: results.append(ev.wait(10))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    ev.set()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < PROMPT
    assert results == [True] * 4


def test_event_cleared_again_is_waited_on_again(make):
    ev = make("Event")
    ev.set()
    ev.clear()
    t0 = time.monotonic()
    assert ev.wait(0.1) is False
    assert_took(time.monotonic() - t0, 0.1)


# ---------------------------------------------------------- repr, stats

@pytest.mark.parametrize("kind", KINDS)
def test_repr_does_not_crash(make, kind):
    obj = make(kind)
    assert kind in repr(obj)
    if kind == "Event":
        obj.set()
    else:
        obj.acquire()
    assert kind in repr(obj)
    if kind == "RLock":
        obj.acquire()
        assert kind in repr(obj)


def _hold_until_set(lock, held, go):
    lock.acquire()
    held.set()
    go.wait(30)
    lock.release()


def _lock_reprs(lock, ctx, recursive):
    """The reprs of ``lock`` through the cases multiprocessing names: free,
    held here, held by another thread (seen there and here), held by
    another process."""
    seen = [repr(lock)]
    lock.acquire()
    seen.append(repr(lock))
    if recursive:
        lock.acquire()
        seen.append(repr(lock))
        lock.release()
    lock.release()
    held, go, inside = threading.Event(), threading.Event(), []

    def in_thread():
        lock.acquire()
        inside.append(repr(lock))
        held.set()
        go.wait(30)
        lock.release()

    t = threading.Thread(target=in_thread, name="T1")
    t.start()
    assert held.wait(30)
    seen += inside + [repr(lock)]
    go.set()
    t.join()
    held, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_until_set, args=(lock, held, go))
    p.start()
    assert held.wait(30)
    seen.append(repr(lock))
    go.set()
    p.join(30)
    seen.append(repr(lock))
    return seen


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_repr_is_multiprocessings(kind):
    """Programs and CPython's own tests match on these reprs:
    "<Lock(owner=MainProcess|T1)>", "<RLock(SomeOtherProcess, nonzero)>"."""
    ctx = multiprocessing.get_context("fork")
    ours = _lock_reprs(getattr(interproc, kind)(), ctx, kind == "RLock")
    theirs = _lock_reprs(getattr(ctx, kind)(), ctx, kind == "RLock")
    assert ours == theirs
    assert "SomeOtherProcess" in ours[-2] and "SomeOtherThread" in ours[-3]


def test_named_lock_repr_adds_its_name_and_a_closed_one_says_unknown(unique_name):
    name = unique_name()
    lock = interproc.RLock(name=name)
    try:
        assert repr(lock) == f"<RLock(None, 0) name='{name}'>"
    finally:
        lock.close()
        interproc.unlink(name)
    assert repr(lock) == f"<RLock(unknown, unknown) name='{name}'>"
    lock = interproc.Lock()
    lock.close()
    assert repr(lock) == "<Lock(owner=unknown)>"


def test_event_repr_has_multiprocessing_shape(make):
    ev = make("Event")
    shape = r"<Event at 0x[0-9a-f]+( name='[^']+')? {}>"
    assert re.fullmatch(shape.format("unset"), repr(ev))
    ev.set()
    assert re.fullmatch(shape.format("set"), repr(ev))
    ev.clear()
    assert re.fullmatch(shape.format("unset"), repr(ev))


def test_named_event_repr_shows_its_name(unique_name):
    name = unique_name()
    ev = interproc.Event(name=name)
    try:
        assert re.fullmatch(rf"<Event at 0x[0-9a-f]+ name='{name}' unset>", repr(ev))
    finally:
        ev.close()
        interproc.unlink(name)
    assert re.fullmatch(rf"<Event at 0x[0-9a-f]+ name='{name}' closed>", repr(ev))


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_statistics(make_ip, kind):
    lock = make_ip(kind)
    stats = lock.statistics()
    assert isinstance(stats, dict)
    expected = {"locked", "owner_pid", "waiters"} | ({"recursion"} if kind == "RLock" else set())
    assert expected <= set(stats), stats
    assert stats["locked"] is False
    assert stats["owner_pid"] is None
    assert stats["waiters"] == 0
    if kind == "RLock":
        assert stats["recursion"] == 0

    lock.acquire()
    stats = lock.statistics()
    assert stats["locked"] is True
    assert stats["owner_pid"] == os.getpid()
    if kind == "RLock":
        assert stats["recursion"] == 1
        lock.acquire()
        assert lock.statistics()["recursion"] == 2
        lock.release()
        assert lock.statistics()["recursion"] == 1

    t = threading.Thread(target=lambda: lock.acquire(timeout=10) and lock.release())
    t.start()
    wait_until(lambda: lock.statistics()["waiters"] == 1, what="one waiter")
    lock.release()
    t.join(10)
    assert not t.is_alive()
    stats = lock.statistics()
    assert stats["waiters"] == 0
    assert stats["locked"] is False
    assert stats["owner_pid"] is None


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_statistics(make_ip, kind):
    sem = make_ip(kind, 2)
    stats = sem.statistics()
    assert {"value", "waiters"} <= set(stats), stats
    assert stats["value"] == 2
    assert stats["waiters"] == 0
    sem.acquire()
    sem.acquire()
    assert sem.statistics()["value"] == 0
    t = threading.Thread(target=lambda: sem.acquire(timeout=10))
    t.start()
    wait_until(lambda: sem.statistics()["waiters"] == 1, what="one waiter")
    sem.release()
    t.join(10)
    assert not t.is_alive()
    stats = sem.statistics()
    assert stats["value"] == 0
    assert stats["waiters"] == 0


def test_event_statistics(make_ip):
    ev = make_ip("Event")
    stats = ev.statistics()
    assert {"set", "waiters"} <= set(stats), stats
    assert stats["set"] is False
    assert stats["waiters"] == 0
    t = threading.Thread(target=lambda: ev.wait(10))
    t.start()
    wait_until(lambda: ev.statistics()["waiters"] == 1, what="one waiter")
    ev.set()
    t.join(10)
    stats = ev.statistics()
    assert stats["set"] is True
    assert stats["waiters"] == 0


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_owner_died_is_false_after_a_normal_acquisition(make_ip, kind):
    lock = make_ip(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error", interproc.OwnerDiedWarning)
        assert lock.owner_died is False
        lock.acquire()
        assert lock.owner_died is False
        lock.release()
        assert lock.acquire(timeout=1) is True
        assert lock.owner_died is False
        lock.release()


# ------------------------------------------------------------- Ctrl-C

def _blocked_call(kind, obj, timed):
    """The call that blocks on ``obj``, and what unblocks it: the backstop
    that ends the wait should SIGINT go unnoticed (instead of a hang), and
    afterwards the proof that the interrupted wait broke nothing."""
    timeout = 5 if timed else None
    if kind == "Event":
        return (lambda: obj.wait(timeout)), obj.set
    if kind == "RLock":
        # An RLock's owner would just re-enter: another thread must hold it.
        holder_done = threading.Event()
        got = threading.Event()

        def hold():
            obj.acquire()
            got.set()
            holder_done.wait(10)
            obj.release()

        threading.Thread(target=hold, daemon=True).start()
        assert got.wait(5)
        return (lambda: obj.acquire(timeout=timeout)), holder_done.set
    if kind == "Lock":
        obj.acquire()
    return (lambda: obj.acquire(timeout=timeout)), obj.release


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "Event"])
def test_keyboard_interrupt_breaks_a_blocked_wait(default_sigint, make_ip, kind, timed):
    obj = make_ip(kind, 0) if kind == "Semaphore" else make_ip(kind)
    call, unblock = _blocked_call(kind, obj, timed)
    unblocked = []

    def backstop_fn():
        unblocked.append(1)
        unblock()

    backstop = threading.Timer(3.0, backstop_fn)
    backstop.start()
    timer = sigint_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
        backstop.cancel()
        backstop.join()
    assert elapsed < PROMPT, f"{kind} took {elapsed:.2f}s to notice SIGINT"
    # The interrupted waiter must be gone from the books, and the object
    # must still work.
    wait_until(lambda: obj.statistics()["waiters"] == 0, timeout=2, what="waiters back to 0")
    if not unblocked:
        unblock()
    if kind == "Event":
        assert obj.wait(1) is True
    else:
        assert obj.acquire(timeout=2) is True
        obj.release()


@pytest.mark.timeout(30)
def test_harmless_signals_do_not_cut_a_timed_acquire_short(make_ip):
    """A handler that returns normally must not end the wait early: the
    wait resumes against the same absolute deadline."""
    lock = make_ip("Lock")
    lock.acquire()
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    timers = [threading.Timer(d, os.kill, (os.getpid(), signal.SIGUSR1)) for d in (0.05, 0.1, 0.15)]
    try:
        for t in timers:
            t.start()
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.3) is False
        elapsed = time.monotonic() - t0
    finally:
        for t in timers:
            t.join()
        signal.signal(signal.SIGUSR1, old)
    assert len(hits) == 3
    assert_took(elapsed, 0.3)


# ------------------------------------------------------------------ named

@pytest.mark.parametrize("kind", KINDS)
def test_create_none_opens_or_creates(unique_name, kind):
    cls = getattr(interproc, kind)
    name = unique_name()
    assert not os.path.exists(_helpers.shm_path(name))
    a = cls(name=name)
    assert os.path.exists(_helpers.shm_path(name))
    b = cls(name=name)
    if kind == "Event":
        a.set()
        assert b.is_set()
    else:
        assert a.acquire(False) is True
        # From another thread: this one would re-enter an RLock.
        assert in_thread(b.acquire, False) is False, "two handles on one name do not share state"


@pytest.mark.parametrize("kind", KINDS)
def test_create_true_refuses_existing(unique_name, kind):
    cls = getattr(interproc, kind)
    name = unique_name()
    a = cls(name=name, create=True)
    with pytest.raises(FileExistsError):
        cls(name=name, create=True)
    if kind == "Event":
        assert a.is_set() is False
    else:
        assert a.acquire(False) is True  # the failed attempt left it alone


@pytest.mark.parametrize("kind", KINDS)
def test_create_false_requires_existing(unique_name, kind):
    cls = getattr(interproc, kind)
    name = unique_name()
    with pytest.raises(FileNotFoundError):
        cls(name=name, create=False)
    assert not os.path.exists(_helpers.shm_path(name))
    cls(name=name, create=True)
    cls(name=name, create=False)


@pytest.mark.parametrize("kind", KINDS)
def test_attach_returns_the_right_class(unique_name, kind):
    cls = getattr(interproc, kind)
    name = unique_name()
    obj = cls(name=name)
    other = interproc.attach(name)
    assert type(other) is cls
    if kind == "Event":
        other.set()
        assert obj.is_set()
    elif kind in ("Lock", "RLock"):
        other.acquire()
        assert obj.statistics()["locked"] is True
    else:
        other.acquire()
        assert obj.get_value() == 0


def test_named_lock_released_through_another_handle(unique_name):
    name = unique_name()
    a = interproc.Lock(name=name)
    b = interproc.Lock(name=name, create=False)
    a.acquire()
    b.release()  # any holder of a handle may release a Lock
    assert a.locked() is False


def test_opening_a_semaphore_keeps_the_creators_value_and_bound(unique_name):
    """As with a queue's maxsize: the value given when opening an existing
    name is not applied to it."""
    name = unique_name()
    a = interproc.BoundedSemaphore(2, name=name)
    a.acquire()
    b = interproc.BoundedSemaphore(5, name=name)
    assert b.get_value() == 1
    b.release()
    with pytest.raises(ValueError):
        b.release()
    assert a.get_value() == 2
    sname = unique_name()
    interproc.Semaphore(3, name=sname)
    assert interproc.Semaphore(name=sname).get_value() == 3


SYNC_AND_QUEUE = KINDS + ["Queue"]
MISMATCHES = [(a, b) for a in SYNC_AND_QUEUE for b in SYNC_AND_QUEUE if a != b]


@pytest.mark.parametrize("created,opened", MISMATCHES)
def test_opening_another_kind_raises_type_error(unique_name, created, opened):
    name = unique_name()
    obj = getattr(interproc, created)(name=name)
    opener = getattr(interproc, opened)
    with pytest.raises(TypeError):
        opener(name=name, create=False)
    with pytest.raises(TypeError):
        opener(name=name)
    with pytest.raises(FileExistsError):
        opener(name=name, create=True)
    assert type(interproc.attach(name)) is type(obj)
    if created == "Queue":
        obj.close()


def test_list_objects_shows_named_primitives(unique_name):
    names = {kind: unique_name() for kind in KINDS}
    objs = [getattr(interproc, kind)(name=name) for kind, name in names.items()]
    listed = {o.name: o for o in interproc.list_objects()}
    for kind, name in names.items():
        assert name in listed, name
        assert listed[name].error is None, listed[name]
        assert listed[name].kind == kind
    del objs


def test_unlink_of_a_named_primitive(unique_name):
    name = unique_name()
    lock = interproc.Lock(name=name)
    interproc.unlink(name)
    assert not os.path.exists(_helpers.shm_path(name))
    with pytest.raises(FileNotFoundError):
        interproc.Lock(name=name, create=False)
    assert lock.acquire(False) is True  # the open handle keeps working
    lock.release()
