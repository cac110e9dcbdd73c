"""Condition and Barrier: the behaviour of multiprocessing's (run side by
side with it wherever the two should agree), between threads and between
real processes, by name, passed around, interrupted by Ctrl-C, idle CPU,
and parties or lock holders SIGKILLed.

The kill and idle-CPU tests use fork only: what they check does not depend
on how the child was started, and spawn would spend the time budget on
interpreter start-up instead.
"""

import functools
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import interproc

import _cb_helpers as cb
import _helpers
from _helpers import (
    TIMEOUT,
    collect,
    kill_and_reap,
    new_seed,
    owner_died_warnings,
    start,
    wait_until,
)

# How soon a waiter must notice a notify, a break or a reset.  Futex
# wake-ups take microseconds; this leaves room for a loaded machine while
# still catching a waiter that only polls.
PROMPT = 0.25
# How late a timed wait may return.
LATE = 0.05
# A timed wait returning earlier than this before its deadline is early
# (clock reads on either side of the call are not simultaneous).
EARLY = 0.002
# The contract promises about 50 ms; a second is the "never hangs" bound.
DEATH_NOTICED = 1.0
FORK = multiprocessing.get_context("fork")
LIBS = ("interproc", "multiprocessing")
BrokenBarrierError = threading.BrokenBarrierError

pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------- helpers

join_ok = functools.partial(_helpers.join_ok, meanings=cb.EXIT_MEANINGS)


def start_thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def join_threads(*threads, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout}s"


def counter():
    """An atomic counter every process can see, independent of the lib
    under test."""
    return interproc.RawValue("q", 0)


def make(lib, kind, *args, ctx=None, **kwargs):
    """``kind`` from interproc, or from multiprocessing (from ``ctx`` when
    children of that start method will use it)."""
    if lib == "interproc":
        return getattr(interproc, kind)(*args, **kwargs)
    return getattr(ctx or multiprocessing, kind)(*args, **kwargs)


@pytest.fixture(params=LIBS)
def lib(request):
    return request.param


def all_in_wait(cond, arrived, n):
    """Return once ``n`` waiters counted themselves in and then let the
    lock go, which they only do inside wait()."""
    wait_until(lambda: arrived.load() >= n, what=f"{n} waiters to count in")
    assert cond.acquire(timeout=TIMEOUT)
    cond.release()


def drain_for(out, seconds):
    """Everything that arrives on ``out`` within ``seconds``."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        try:
            got.append(out.get(timeout=left))
        except interproc.Empty:
            return got


# =============================================================== Condition

# ------------------------------------------------- wait/notify and timeouts

@pytest.mark.parametrize("where", ["threads", "fork"])
def test_notify_n_wakes_exactly_n_and_notify_all_the_rest(lib, where):
    n_waiters, n = 5, 2
    cond = make(lib, "Condition", ctx=FORK)
    arrived, out = counter(), interproc.Queue()
    if where == "threads":
        workers = [start_thread(cb.cond_wait_once, cond, arrived, out, TIMEOUT, i) for i in range(n_waiters)]
    else:
        workers = [start(FORK, cb.cond_wait_once, cond, arrived, out, TIMEOUT, i) for i in range(n_waiters)]
    try:
        all_in_wait(cond, arrived, n_waiters)
        with cond:
            cond.notify(n)
        woken = collect(out, n)
        # Anyone else waking now was not asked to.
        extra = drain_for(out, 0.3)
        assert extra == [], f"notify({n}) woke {n + len(extra)} waiters"
        assert all(ok is True for _, ok, _ in woken), woken
        t_notify = time.monotonic()
        with cond:
            cond.notify_all()
        rest = collect(out, n_waiters - n)
    finally:
        with cond:
            cond.notify_all()
    if where == "threads":
        join_threads(*workers)
    else:
        join_ok(*workers)
    assert all(ok is True for _, ok, _ in rest), rest
    assert sorted(tag for tag, _, _ in woken + rest) == list(range(n_waiters))
    lag = max(t for _, _, t in rest) - t_notify
    assert lag < PROMPT, f"notify_all() woke the last waiter after {lag:.3f}s"


def test_wait_notify_between_processes(start_method, lib):
    n_waiters = 2
    cond = make(lib, "Condition", ctx=start_method)
    arrived, out = counter(), interproc.Queue()
    procs = [start(start_method, cb.cond_wait_once, cond, arrived, out, TIMEOUT, i) for i in range(n_waiters)]
    try:
        all_in_wait(cond, arrived, n_waiters)
        with cond:
            t_notify = time.monotonic()
            cond.notify_all()
        results = collect(out, n_waiters)
    finally:
        with cond:
            cond.notify_all()
    join_ok(*procs)
    assert all(ok is True for _, ok, _ in results), results
    lags = [t - t_notify for _, _, t in results]
    assert max(lags) < PROMPT, f"waiters woke {lags} s after notify_all()"


def test_notify_with_nobody_waiting_is_not_kept_for_later(lib):
    """A notification wakes those waiting now, not a later waiter."""
    cond = make(lib, "Condition")
    with cond:
        cond.notify()
        cond.notify_all()
        cond.notify(3)
        assert cond.wait(0.05) is False


def test_wait_that_raises_leaves_no_stale_wakeup(lib):
    """A wait() refused for its argument must not stay counted as a
    waiter: a notify() with nobody waiting would otherwise be kept, and
    wake the next waiter for nothing."""
    cond = make(lib, "Condition")
    with cond:
        with pytest.raises(TypeError):
            cond.wait("soon")
        cond.notify()  # the lock is held again, and nobody waits
        t0 = time.monotonic()
        assert cond.wait(0.1) is False, "a later wait() was woken by a notify() that came before it"
        assert time.monotonic() - t0 >= 0.1 - EARLY


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_wait_timeout_returns_false_on_time(lib, timeout):
    cond = make(lib, "Condition")
    overshoots = []
    with cond:
        for _ in range(3):
            t0 = time.monotonic()
            ok = cond.wait(timeout)
            elapsed = time.monotonic() - t0
            assert ok is False
            assert elapsed >= timeout - EARLY, f"wait({timeout}) returned after {elapsed:.4f}s: early"
            overshoots.append(elapsed - timeout)
        # The lock is held again after a timed-out wait.
        cond.notify()
    # Best of three: one late return on a busy machine is noise; a wait
    # that always overshoots is polling.
    assert min(overshoots) < LATE, f"wait({timeout}) overshot by {overshoots}"


def test_wait_zero_and_negative_timeout_do_not_block(lib):
    cond = make(lib, "Condition")
    with cond:
        for timeout in (0, -1):
            t0 = time.monotonic()
            assert cond.wait(timeout) is False
            assert time.monotonic() - t0 < PROMPT


def test_wait_returns_true_when_notified_by_a_thread(lib):
    cond = make(lib, "Condition")
    notified_at = []

    def notifier():
        time.sleep(0.1)
        with cond:
            notified_at.append(time.monotonic())
            cond.notify()

    with cond:
        t = start_thread(notifier)
        ok = cond.wait(TIMEOUT)
        woke = time.monotonic()
    join_threads(t)
    assert ok is True
    assert woke - notified_at[0] < PROMPT


# ---------------------------------------------------------------- wait_for

def test_wait_for_true_at_once_does_not_wait(lib):
    cond = make(lib, "Condition")
    calls = []

    def predicate():
        calls.append(1)
        return "ready"

    with cond:
        t0 = time.monotonic()
        assert cond.wait_for(predicate, 5) == "ready"
        assert cond.wait_for(predicate) == "ready"
        assert time.monotonic() - t0 < PROMPT
    assert len(calls) == 2


def test_wait_for_times_out_with_the_last_value(lib):
    cond = make(lib, "Condition")
    calls = []

    def predicate():
        calls.append(1)
        return 0

    with cond:
        t0 = time.monotonic()
        assert cond.wait_for(predicate, 0.2) == 0
        elapsed = time.monotonic() - t0
        cond.notify()  # held again
    assert 0.2 - EARLY <= elapsed < 0.2 + PROMPT, f"wait_for(.., 0.2) took {elapsed:.3f}s"
    assert len(calls) >= 2, "the predicate was not checked again at the deadline"


def test_wait_for_rechecks_after_each_notify_in_threads(lib):
    cond = make(lib, "Condition")
    value = counter()
    t = start_thread(cb.cond_bump, cond, value, 5, 0.01)
    with cond:
        result = cond.wait_for(lambda: value.load() >= 5 and value.load(), TIMEOUT)
    join_threads(t)
    assert result == 5


@pytest.mark.parametrize("parent", ["waits", "bumps"])
def test_wait_for_across_processes(start_method, lib, parent):
    cond = make(lib, "Condition", ctx=start_method)
    value, out = counter(), interproc.Queue()
    if parent == "waits":
        p = start(start_method, cb.cond_bump, cond, value, 5, 0.01)
        with cond:
            result = cond.wait_for(lambda: value.load() >= 5 and value.load(), TIMEOUT)
        done = time.monotonic()
        join_ok(p)
    else:
        # The child holds the lock when it sets `holding`, and lets it go only
        # inside wait_for: the bumps, which take the lock, all find it waiting.
        # With sleeps of 600 s, interproc's child returns within TIMEOUT only
        # if the notifications woke it (no timing of a loaded machine).
        holding = interproc.Event()
        slices = 600 if lib == "interproc" else None
        p = start(start_method, cb.cond_wait_for_value, cond, value, 5, TIMEOUT, out, holding,
                  slices)
        assert holding.wait(TIMEOUT)
        cb.cond_bump(cond, value, 5, 0.01)
        result, _ = out.get(timeout=TIMEOUT)
        join_ok(p)
    assert result == 5


def test_wait_for_timeout_in_another_process(lib):
    cond = make(lib, "Condition", ctx=FORK)
    value, out = counter(), interproc.Queue()
    t0 = time.monotonic()
    p = start(FORK, cb.cond_wait_for_value, cond, value, 1, 0.3, out)
    result, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert result is False
    assert t - t0 >= 0.3 - EARLY


# ------------------------------------------------------------ lock misuse

@pytest.mark.parametrize("impl", ["interproc", "threading"])
@pytest.mark.parametrize("lock_kind", [None, "Lock", "RLock"])
def test_wait_and_notify_without_the_lock_raise_runtime_error(impl, lock_kind):
    """RuntimeError, as threading.Condition (multiprocessing's raises
    AssertionError, which vanishes under -O: the contract follows threading)."""
    mod = interproc if impl == "interproc" else threading
    lock = None if lock_kind is None else getattr(mod, lock_kind)()
    cond = mod.Condition(lock)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)
    with pytest.raises(RuntimeError):
        cond.wait_for(lambda: False, 0.01)
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify(2)
    with pytest.raises(RuntimeError):
        cond.notify_all()


def test_wait_while_another_thread_holds_the_rlock_raises():
    cond = interproc.Condition()
    held, done = threading.Event(), threading.Event()

    def holder():
        with cond:
            held.set()
            done.wait(TIMEOUT)

    t = start_thread(holder)
    try:
        assert held.wait(TIMEOUT)
        with pytest.raises(RuntimeError):
            cond.wait(0.01)
        with pytest.raises(RuntimeError):
            cond.notify()
    finally:
        done.set()
    join_threads(t)


def test_condition_refuses_a_foreign_lock():
    with pytest.raises(TypeError):
        interproc.Condition(threading.Lock())
    with pytest.raises(TypeError):
        interproc.Condition(multiprocessing.Lock())


# --------------------------------------------------------- the lock given

def _lock_is_taken_elsewhere(lock):
    """Whether another thread finds ``lock`` taken (an RLock would just
    re-enter in this one)."""
    got = []

    def probe():
        got.append(lock.acquire(False))
        if got[0]:
            lock.release()

    join_threads(start_thread(probe))
    return not got[0]


@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_condition_on_a_given_lock(lib, lock_kind):
    lock = make(lib, lock_kind)
    cond = make(lib, "Condition", lock)
    with cond:
        assert _lock_is_taken_elsewhere(lock), "holding the condition did not hold its lock"
    assert not _lock_is_taken_elsewhere(lock)
    # Holding the lock is holding the condition.
    with lock:
        cond.notify()
    notified = []

    def notifier():
        time.sleep(0.05)
        with lock:
            notified.append(1)
            cond.notify()

    with cond:
        t = start_thread(notifier)
        assert cond.wait(TIMEOUT) is True
        assert notified == [1]
        assert _lock_is_taken_elsewhere(lock), "wait() did not take the lock back"
    join_threads(t)
    assert not _lock_is_taken_elsewhere(lock)


@pytest.mark.parametrize("lock_kind", [None, "Lock", "RLock"])
def test_condition_on_each_lock_kind_across_processes(start_method, lock_kind):
    lock = None if lock_kind is None else getattr(interproc, lock_kind)()
    cond = interproc.Condition(lock)
    arrived, out = counter(), interproc.Queue()
    p = start(start_method, cb.cond_wait_once, cond, arrived, out, TIMEOUT, "child")
    try:
        all_in_wait(cond, arrived, 1)
        with cond:
            cond.notify()
        _, ok, _ = out.get(timeout=TIMEOUT)
    finally:
        with cond:
            cond.notify_all()
    join_ok(p)
    assert ok is True


@pytest.mark.parametrize("notified", [True, False], ids=["notified", "timed-out"])
@pytest.mark.parametrize("lock_kind", [None, "RLock"])
def test_recursive_rlock_is_restored_to_the_same_depth(lib, lock_kind, notified):
    depth = 3
    lock = None if lock_kind is None else make(lib, "RLock")
    cond = make(lib, "Condition", lock)
    owner = cond if lock is None else lock
    entered = []

    def notifier():
        # Only possible if wait() let go of every level.
        with cond:
            entered.append(1)
            cond.notify()

    for _ in range(depth):
        owner.acquire()
    try:
        if notified:
            t = start_thread(notifier)
            assert cond.wait(TIMEOUT) is True
            join_threads(t)
            assert entered == [1]
        else:
            assert cond.wait(0.05) is False
        for level in range(depth - 1, 0, -1):
            owner.release()
            assert _lock_is_taken_elsewhere(owner), f"free with {level} levels still held"
        owner.release()
    except BaseException:
        while True:
            try:
                owner.release()
            except (AssertionError, RuntimeError, ValueError):
                break
        raise
    assert not _lock_is_taken_elsewhere(owner), "still held after as many releases as acquires"
    with pytest.raises(AssertionError):
        owner.release()


def test_recursion_is_reported_back_after_wait():
    cond = interproc.Condition()
    for _ in range(3):
        cond.acquire()
    assert cond.wait(0.01) is False
    stats = cond.statistics()
    assert stats["recursion"] == 3 and stats["owner_pid"] == os.getpid(), stats
    for _ in range(3):
        cond.release()
    assert cond.statistics()["locked"] is False


# --------------------------------------------------------- passed around

def test_condition_with_its_lock_through_a_queue(start_method):
    lock = interproc.Lock()
    conds = [interproc.Condition(), interproc.Condition(lock)]
    q, arrived, out = interproc.Queue(), counter(), interproc.Queue()
    procs = [start(start_method, cb.cond_from_queue_wait_once, q, arrived, out, i) for i in range(2)]
    for cond in conds:
        q.put(cond)
    try:
        for cond in conds:
            # Either child may have taken either condition.
            wait_until(lambda: arrived.load() >= 2, what="both children to count in")
            assert cond.acquire(timeout=TIMEOUT)
            cond.release()
        # Holding the condition's lock here excludes the child's handle of it.
        with lock:
            conds[1].notify()
        with conds[0]:
            conds[0].notify()
        results = collect(out, 2)
    finally:
        for cond in conds:
            with cond:
                cond.notify_all()
    join_ok(*procs)
    assert [ok for _, ok, _ in results] == [True, True], results


def test_named_condition_opened_by_name(unique_name):
    ctx = multiprocessing.get_context("spawn")
    name = unique_name()
    cond = interproc.Condition(name=name, create=True)
    assert cond.name == name
    with pytest.raises(FileExistsError):
        interproc.Condition(name=name, create=True)
    with pytest.raises(FileNotFoundError):
        interproc.Condition(name=unique_name(), create=False)
    assert type(interproc.attach(name)).__name__ == "Condition"
    arrived, out, probe = counter(), interproc.Queue(), interproc.Queue()
    cond.acquire()
    try:
        p = start(ctx, cb.cond_named_wait_once, name, arrived, out, probe)
        assert probe.get(timeout=TIMEOUT) is False, "the named condition's lock is not shared"
    finally:
        cond.release()
    try:
        all_in_wait(cond, arrived, 1)
        # A second handle by name is the same condition.
        other = interproc.Condition(name=name, create=False)
        with other:
            other.notify()
        _, ok, _ = out.get(timeout=TIMEOUT)
    finally:
        with cond:
            cond.notify_all()
    join_ok(p)
    assert ok is True


def test_repr_has_multiprocessing_shape():
    """"<Condition(<lock>, waiters)>", as multiprocessing's."""
    for cond in (interproc.Condition(), interproc.Condition(interproc.Lock()),
                 interproc.Condition(interproc.RLock()), multiprocessing.Condition()):
        assert re.fullmatch(r"<Condition\(<.*>, 0\)>", repr(cond)), repr(cond)
    cond = interproc.Condition()
    with cond:
        assert repr(cond) == "<Condition(<RLock(MainProcess, 1)>, 0)>", repr(cond)
    cond.close()
    assert "closed" in repr(cond)


# ----------------------------------------------------------------- Ctrl-C

@pytest.mark.timeout(30)
@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
def test_keyboard_interrupt_breaks_a_condition_wait(default_sigint, timed):
    cond = interproc.Condition()
    backstopped = []

    def backstop():
        # Ends the wait should SIGINT go unnoticed, so the test fails
        # instead of hanging.
        backstopped.append(1)
        with cond:
            cond.notify_all()

    backstop_timer = threading.Timer(3.0, backstop)
    sigint = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    cond.acquire()
    backstop_timer.start()
    sigint.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            cond.wait(5 if timed else None)
        elapsed = time.monotonic() - t0
        # As threading: the lock is held again when the exception leaves wait().
        cond.notify()
    finally:
        sigint.join()
        backstop_timer.cancel()
        backstop_timer.join()
        cond.release()
    assert not backstopped, "SIGINT did not interrupt the wait"
    assert elapsed < 0.2 + PROMPT, f"took {elapsed:.2f}s to notice SIGINT"
    # The interrupted waiter left nothing behind: a later notify reaches a
    # later waiter, and no stale wake-up is handed to it.
    with cond:
        assert cond.wait(0.05) is False
    t = threading.Timer(0.05, lambda: (cond.acquire(), cond.notify(), cond.release()))
    with cond:
        t.start()
        assert cond.wait(TIMEOUT) is True
    t.join()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
def test_keyboard_interrupt_breaks_a_barrier_wait(default_sigint, timed):
    """As threading: an exception out of wait() breaks the barrier, so the
    other parties are not left waiting for one that has gone."""
    barrier = interproc.Barrier(3)
    out = interproc.Queue()
    other = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "other")
    wait_until(lambda: barrier.n_waiting == 1, 10, "the other party")
    backstop_timer = threading.Timer(3.0, barrier.abort)
    sigint = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    backstop_timer.start()
    sigint.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            barrier.wait(5 if timed else None)
        elapsed = time.monotonic() - t0
    finally:
        sigint.join()
        backstop_timer.cancel()
        backstop_timer.join()
    assert elapsed < 0.2 + PROMPT, f"took {elapsed:.2f}s to notice SIGINT"
    _, what, _, _ = out.get(timeout=TIMEOUT)
    join_threads(other)
    assert what == "BrokenBarrierError"
    assert barrier.broken is True


# ========================================================================
# Barrier
# ========================================================================

def test_barrier_indices_are_distinct_in_threads(lib):
    parties = 5
    barrier = make(lib, "Barrier", parties)
    out = interproc.Queue()
    threads = [start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, i) for i in range(parties)]
    results = collect(out, parties)
    join_threads(*threads)
    assert all(r[1] == "ok" for r in results), results
    assert sorted(r[2] for r in results) == list(range(parties))
    assert barrier.n_waiting == 0 and barrier.broken is False


def test_barrier_rounds_across_processes(start_method, lib, tmp_path):
    """Several rounds in a row: each gives out 0..parties-1, and the action
    runs exactly once per round, in one of the parties, before anyone is let
    through."""
    n_procs, rounds = 3, 40
    log = str(tmp_path / "action.log")
    barrier = make(lib, "Barrier", n_procs + 1, cb.AppendPid(log), ctx=start_method)
    out = interproc.Queue()
    procs = [start(start_method, cb.barrier_rounds, barrier, rounds, out, i, log) for i in range(n_procs)]
    try:
        cb.barrier_rounds(barrier, rounds, out, "parent", log)
    except BrokenBarrierError:
        pytest.fail(f"the barrier broke; children: {[cb.describe_exit(p.exitcode) for p in procs]}")
    results = collect(out, n_procs + 1)
    join_ok(*procs)
    for r in range(rounds):
        assert sorted(res[1][r] for res in results) == list(range(n_procs + 1)), f"round {r}: {results}"
    assert all(all(res[2]) for res in results), "a party was let through before the action ran"
    pids = cb.action_lines(log)
    assert len(pids) == rounds, f"the action ran {len(pids)} times in {rounds} rounds"
    assert set(pids) <= {str(p.pid) for p in procs} | {str(os.getpid())}
    assert barrier.broken is False and barrier.n_waiting == 0


def test_action_runs_in_the_last_party_to_arrive(lib, tmp_path):
    log = str(tmp_path / "action.log")
    barrier = make(lib, "Barrier", 2, cb.AppendPid(log), ctx=FORK)
    out = interproc.Queue()
    p = start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, "child")
    wait_until(lambda: barrier.n_waiting == 1, what="the child to arrive")
    assert barrier.wait(TIMEOUT) == 1
    assert out.get(timeout=TIMEOUT)[1:3] == ("ok", 0)
    join_ok(p)
    assert cb.action_lines(log) == [str(os.getpid())]


def test_parties_and_n_waiting(lib):
    parties = 3
    barrier = make(lib, "Barrier", parties)
    assert barrier.parties == parties
    assert barrier.n_waiting == 0 and barrier.broken is False
    out = interproc.Queue()
    threads = []
    for i in range(parties - 1):
        threads.append(start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, i))
        wait_until(lambda: barrier.n_waiting == i + 1, 10, f"{i + 1} waiting")
    assert barrier.wait(TIMEOUT) == parties - 1
    results = collect(out, parties - 1)
    join_threads(*threads)
    assert sorted(r[2] for r in results) == list(range(parties - 1))
    assert barrier.n_waiting == 0 and barrier.parties == parties


def test_single_party_barrier_never_blocks(lib, tmp_path):
    log = str(tmp_path / "action.log")
    barrier = make(lib, "Barrier", 1, cb.AppendPid(log))
    assert [barrier.wait(1) for _ in range(3)] == [0, 0, 0]
    assert len(cb.action_lines(log)) == 3


@pytest.mark.parametrize("parties", [0, -1, -100])
def test_barrier_with_no_parties_is_value_error(parties):
    with pytest.raises(ValueError):
        interproc.Barrier(parties)


def test_barrier_bad_arguments():
    with pytest.raises(TypeError):
        interproc.Barrier(2.5)
    with pytest.raises(TypeError):
        interproc.Barrier(2, action="not callable")


# ---------------------------------------------------------- breaking it

@pytest.mark.parametrize("how", ["wait(timeout)", "Barrier(timeout=)"])
def test_timeout_breaks_the_barrier_for_everyone(lib, how):
    timeout = 0.2
    if how == "wait(timeout)":
        barrier = make(lib, "Barrier", 3, ctx=FORK)
        wait_timeout = timeout
    else:
        barrier = make(lib, "Barrier", 3, None, timeout, ctx=FORK)
        wait_timeout = None
    out = interproc.Queue()
    p = start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, "child")
    wait_until(lambda: barrier.n_waiting == 1, what="the child to arrive")
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        barrier.wait(wait_timeout)
    elapsed = time.monotonic() - t0
    tag, what, _, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert timeout - EARLY <= elapsed < timeout + PROMPT, f"gave up after {elapsed:.3f}s"
    assert what == "BrokenBarrierError"
    assert t - t0 < timeout + PROMPT
    assert barrier.broken is True
    with pytest.raises(BrokenBarrierError):
        barrier.wait(1)


@pytest.mark.parametrize("timeout", [0, -1])
def test_barrier_wait_with_no_time_left_breaks_it(lib, timeout):
    """As threading: a wait with no time left breaks the barrier, and
    leaves no arrival behind."""
    barrier = make(lib, "Barrier", 3)
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        barrier.wait(timeout)
    assert time.monotonic() - t0 < PROMPT
    assert barrier.broken is True
    barrier.reset()
    assert barrier.n_waiting == 0 and barrier.broken is False


def two_waiting(barrier, out, what="two to arrive"):
    """Two fork children waiting at ``barrier`` (reporting to ``out`` with
    barrier_wait_report), returned once both have arrived."""
    waiters = [start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, i) for i in range(2)]
    wait_until(lambda: barrier.n_waiting == 2, what=what)
    return waiters


def test_abort_breaks_waiters_and_later_calls(lib):
    barrier = make(lib, "Barrier", 3, ctx=FORK)
    out = interproc.Queue()
    waiters = two_waiting(barrier, out)
    t_abort = time.monotonic()
    barrier.abort()
    results = collect(out, 2)
    join_ok(*waiters)
    assert [r[1] for r in results] == ["BrokenBarrierError"] * 2
    assert max(r[3] for r in results) - t_abort < PROMPT
    assert barrier.broken is True
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        barrier.wait(5)
    assert time.monotonic() - t0 < PROMPT, "a wait on a broken barrier blocked"
    p = start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, "late")
    assert out.get(timeout=TIMEOUT)[1] == "BrokenBarrierError"
    join_ok(p)


def test_reset_breaks_waiters_then_the_barrier_works(lib):
    barrier = make(lib, "Barrier", 3, ctx=FORK)
    out = interproc.Queue()
    waiters = two_waiting(barrier, out)
    t_reset = time.monotonic()
    barrier.reset()
    results = collect(out, 2)
    join_ok(*waiters)
    assert [r[1] for r in results] == ["BrokenBarrierError"] * 2
    assert max(r[3] for r in results) - t_reset < PROMPT
    assert barrier.broken is False and barrier.n_waiting == 0
    # Usable again, for a full round.
    parties = two_waiting(barrier, out, what="two to arrive again")
    index = barrier.wait(TIMEOUT)
    results = collect(out, 2)
    join_ok(*parties)
    assert [r[1] for r in results] == ["ok", "ok"]
    assert sorted([index] + [r[2] for r in results]) == [0, 1, 2]


def test_reset_repairs_an_aborted_barrier(lib):
    barrier = make(lib, "Barrier", 2)
    barrier.abort()
    assert barrier.broken is True
    barrier.reset()
    assert barrier.broken is False
    out = interproc.Queue()
    t = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "t")
    index = barrier.wait(TIMEOUT)
    _, what, other, _ = out.get(timeout=TIMEOUT)
    join_threads(t)
    assert what == "ok" and sorted([index, other]) == [0, 1]


def test_action_that_raises_breaks_the_barrier(lib):
    barrier = make(lib, "Barrier", 3, cb.raise_action_failed, ctx=FORK)
    out = interproc.Queue()
    waiters = two_waiting(barrier, out)
    # The last to arrive runs the action, and gets its exception.
    with pytest.raises(cb.ActionFailed):
        barrier.wait(TIMEOUT)
    results = collect(out, 2)
    join_ok(*waiters)
    assert [r[1] for r in results] == ["BrokenBarrierError"] * 2
    assert barrier.broken is True
    with pytest.raises(BrokenBarrierError):
        barrier.wait(1)


def test_named_barrier_opened_by_name(unique_name):
    name = unique_name()
    barrier = interproc.Barrier(2, name=name, create=True)
    with pytest.raises(FileExistsError):
        interproc.Barrier(2, name=name, create=True)
    other = interproc.Barrier(2, name=name, create=False)
    assert other.parties == 2
    out = interproc.Queue()
    t = start_thread(cb.barrier_wait_report, other, out, TIMEOUT, "other")
    index = barrier.wait(TIMEOUT)
    _, what, other_index, _ = out.get(timeout=TIMEOUT)
    join_threads(t)
    assert what == "ok" and sorted([index, other_index]) == [0, 1]


def test_barrier_through_a_queue():
    barrier = interproc.Barrier(2)
    q, out = interproc.Queue(), interproc.Queue()
    q.put(barrier)
    received = q.get(timeout=TIMEOUT)
    p = start(FORK, cb.barrier_wait_report, received, out, TIMEOUT, "child")
    index = barrier.wait(TIMEOUT)
    _, what, other, _ = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert what == "ok" and sorted([index, other]) == [0, 1]


# ========================================================================
# Robustness: processes SIGKILLed (fork only, see the module docstring)
# ========================================================================

BARRIER_KILLS = 60


@pytest.mark.timeout(90)
def test_party_killed_while_waiting_breaks_the_barrier():
    """Each round: a victim and a survivor wait, the parent arrives, and the
    victim is killed at a random moment of its wait.  The survivor and the
    parent get BrokenBarrierError within about a second; after reset() the
    same barrier serves the next round, and finally a round with no deaths."""
    seed = new_seed()
    rng = random.Random(seed)
    barrier = interproc.Barrier(4)
    ready, out = interproc.Queue(), interproc.Queue()
    for i in range(BARRIER_KILLS):
        ctx = f"seed={seed} round {i}"
        victim = start(FORK, cb.barrier_wait_until_killed, barrier, ready)
        ready.get(timeout=TIMEOUT)
        survivor = start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, "survivor")
        wait_until(lambda: barrier.n_waiting == 2, 10, f"{ctx}: two to arrive")
        killed_at = []

        def kill():
            killed_at.append(time.monotonic())
            os.kill(victim.pid, signal.SIGKILL)

        # Killed before the parent arrives, or while it is waiting too.
        timer = threading.Timer(rng.uniform(0, 0.03), kill)
        timer.start()
        time.sleep(rng.uniform(0, 0.03))
        try:
            barrier.wait(DEATH_NOTICED * 5)
        except BrokenBarrierError:
            broke_for_parent = time.monotonic()
        else:
            pytest.fail(f"{ctx}: the barrier tripped with a party dead")
        timer.join()
        assert kill_and_reap(victim) == -signal.SIGKILL, ctx
        tag, what, _, t = out.get(timeout=TIMEOUT)
        join_ok(survivor)
        assert what == "BrokenBarrierError", f"{ctx}: survivor got {what}"
        lags = (broke_for_parent - killed_at[0], t - killed_at[0])
        assert max(lags) < DEATH_NOTICED, f"{ctx}: broke {lags} s after the kill"
        assert barrier.broken is True, ctx
        barrier.reset()
        assert barrier.broken is False and barrier.n_waiting == 0, ctx

    # New parties on the same barrier, none of them dying.
    parties = [start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, j) for j in range(3)]
    index = barrier.wait(TIMEOUT)
    results = collect(out, 3)
    join_ok(*parties)
    assert [r[1] for r in results] == ["ok"] * 3, f"seed={seed}: {results}"
    assert sorted([index] + [r[2] for r in results]) == [0, 1, 2, 3]
    assert barrier.broken is False


ACTION_KILLS = 8


@pytest.mark.timeout(60)
def test_last_party_killed_inside_the_action_breaks_the_barrier():
    """The last to arrive runs the action; killed there, it never releases
    the round, and the parties already waiting must not hang."""
    victim_pid, started = counter(), counter()
    barrier = interproc.Barrier(3, cb.HangOnce(victim_pid, started))
    out = interproc.Queue()
    for i in range(ACTION_KILLS):
        ctx = f"round {i}"
        victim_pid.store(0)
        started.store(0)
        survivors = [start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, j) for j in range(2)]
        wait_until(lambda: barrier.n_waiting == 2, 10, f"{ctx}: two to arrive")
        victim = start(FORK, cb.barrier_arrive_last, barrier, victim_pid)
        wait_until(lambda: started.load() or victim.exitcode is not None, 10, f"{ctx}: the action")
        assert started.load(), f"{ctx}: victim {cb.describe_exit(victim.exitcode)}"
        t_kill = time.monotonic()
        assert kill_and_reap(victim) == -signal.SIGKILL, ctx
        results = collect(out, 2, timeout=10)
        join_ok(*survivors)
        assert [r[1] for r in results] == ["BrokenBarrierError"] * 2, f"{ctx}: {results}"
        lag = max(r[3] for r in results) - t_kill
        assert lag < DEATH_NOTICED, f"{ctx}: broke {lag:.3f}s after the kill"
        assert barrier.broken is True, ctx
        barrier.reset()
    victim_pid.store(0)
    t = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "thread")
    p = start(FORK, cb.barrier_wait_report, barrier, out, TIMEOUT, "child")
    index = barrier.wait(TIMEOUT)
    results = collect(out, 2)
    join_threads(t)
    join_ok(p)
    assert sorted([index] + [r[2] for r in results]) == [0, 1, 2], results


def test_party_killed_after_passing_is_not_a_death_at_the_barrier():
    """A process that passed the barrier and died elsewhere breaks nothing:
    what it left at the barrier went with its pass."""
    barrier = interproc.Barrier(2)
    held, out = counter(), interproc.Queue()
    for i in range(5):
        victim = start(FORK, cb.barrier_pass_then_hang, barrier, held)
        assert barrier.wait(TIMEOUT) in (0, 1), f"round {i}"
        wait_until(lambda: held.load() or victim.exitcode is not None, 10, "the victim to pass")
        assert kill_and_reap(victim) == -signal.SIGKILL, f"round {i}"
        held.store(0)
    t = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "thread")
    assert barrier.wait(TIMEOUT) in (0, 1)
    assert out.get(timeout=TIMEOUT)[1] == "ok"
    join_threads(t)
    assert barrier.broken is False


COND_KILLS = 8


@pytest.mark.timeout(90)
def test_condition_lock_holder_killed_then_notify_wakes_the_waiters():
    """Waiters sit in wait(); another process takes the lock (recursively,
    sometimes) and is killed holding it.  The next acquire takes the lock
    over, flagged, and a notify_all still wakes every live waiter."""
    seed = new_seed()
    rng = random.Random(seed)
    cond = interproc.Condition()
    n_waiters = 2
    for i in range(COND_KILLS):
        depth = rng.randint(1, 3)
        ctx = f"seed={seed} kill #{i} depth={depth}"
        arrived, held, out = counter(), counter(), interproc.Queue()
        waiters = [start(FORK, cb.cond_wait_report_takeover, cond, arrived, out) for _ in range(n_waiters)]
        all_in_wait(cond, arrived, n_waiters)
        victim = start(FORK, cb.cond_hold_until_killed, cond, depth, held, False)
        wait_until(lambda: held.load() or victim.exitcode is not None, 10, f"{ctx}: the holder")
        assert held.load(), f"{ctx}: holder {cb.describe_exit(victim.exitcode)}"
        time.sleep(rng.uniform(0, 0.01))
        assert kill_and_reap(victim) == -signal.SIGKILL, ctx
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.monotonic()
            assert cond.acquire(timeout=5) is True, f"{ctx}: the dead holder's lock was not taken over"
            took = time.monotonic() - t0
        try:
            assert took < DEATH_NOTICED, f"{ctx}: took {took:.3f}s to take over"
            assert cond.owner_died is True, ctx
            assert len(owner_died_warnings(caught)) == 1, f"{ctx}: {[str(w) for w in caught]}"
            stats = cond.statistics()
            # The dead holder's recursion is not inherited.
            assert stats["recursion"] == 1 and stats["owner_pid"] == os.getpid(), f"{ctx}: {stats}"
            t_notify = time.monotonic()
            cond.notify_all()
        finally:
            cond.release()
        results = collect(out, n_waiters)
        join_ok(*waiters)
        assert all(ok is True for _, ok, _, _ in results), f"{ctx}: {results}"
        # The parent took the lock over; the waiters got it back normally.
        assert all((died, warned) == (False, 0) for _, _, died, warned in results), f"{ctx}: {results}"
        assert time.monotonic() - t_notify < 5, ctx
        with warnings.catch_warnings():
            warnings.simplefilter("error", interproc.OwnerDiedWarning)
            assert cond.acquire(timeout=1) is True, ctx
            assert cond.owner_died is False, ctx
            cond.release()


@pytest.mark.timeout(60)
def test_notifier_killed_holding_the_lock_does_not_strand_the_waiters():
    """The process that notifies dies before it releases the lock: the
    woken waiters still get the lock back, one of them by taking it over
    (and being told so)."""
    cond = interproc.Condition()
    n_waiters = 3
    arrived, held, out = counter(), counter(), interproc.Queue()
    waiters = [start(FORK, cb.cond_wait_report_takeover, cond, arrived, out) for _ in range(n_waiters)]
    all_in_wait(cond, arrived, n_waiters)
    victim = start(FORK, cb.cond_hold_until_killed, cond, 2, held, True)
    wait_until(lambda: held.load() or victim.exitcode is not None, 10, "the notifier to hold")
    assert held.load(), cb.describe_exit(victim.exitcode)
    time.sleep(0.05)
    t_kill = time.monotonic()
    assert kill_and_reap(victim) == -signal.SIGKILL
    results = collect(out, n_waiters, timeout=10)
    done = time.monotonic()
    join_ok(*waiters)
    assert all(ok is True for _, ok, _, _ in results), results
    takeovers = [(died, warned) for _, _, died, warned in results if died or warned]
    assert takeovers == [(True, 1)], f"expected exactly one flagged takeover: {results}"
    assert done - t_kill < DEATH_NOTICED * 2, f"waiters finished {done - t_kill:.3f}s after the kill"


@pytest.mark.timeout(60)
def test_waiter_killed_in_wait_does_not_swallow_a_notify():
    cond = interproc.Condition()
    arrived, out = counter(), interproc.Queue()
    victims = [start(FORK, cb.cond_wait_until_killed, cond, arrived) for _ in range(2)]
    all_in_wait(cond, arrived, 2)
    for v in victims:
        assert kill_and_reap(v) == -signal.SIGKILL
    live_arrived = counter()
    live = start(FORK, cb.cond_wait_once, cond, live_arrived, out, TIMEOUT, "live")
    all_in_wait(cond, live_arrived, 1)
    with cond:
        t_notify = time.monotonic()
        cond.notify()
    _, ok, t = out.get(timeout=10)
    join_ok(live)
    assert ok is True
    assert t - t_notify < PROMPT, f"the live waiter woke {t - t_notify:.3f}s after notify()"
    # The dead waiters' lock is not held by anyone: nothing to take over.
    with warnings.catch_warnings():
        warnings.simplefilter("error", interproc.OwnerDiedWarning)
        assert cond.acquire(timeout=1) is True
        cond.release()


# ========================================================================
# Idle CPU (fork only, see the module docstring)
# ========================================================================

def test_blocked_in_wait_does_not_burn_cpu():
    """A process blocked ~2 s in Condition.wait() or Barrier.wait() uses
    less than 2% of a core."""
    cond, barrier = interproc.Condition(), interproc.Barrier(2)
    arrived, ready, out = counter(), interproc.Queue(), interproc.Queue()
    procs = [
        start(FORK, cb.idle_in_cond_wait, cond, arrived, out),
        start(FORK, cb.idle_in_barrier_wait, barrier, ready, out),
    ]
    try:
        all_in_wait(cond, arrived, 1)
        ready.get(timeout=TIMEOUT)
        wait_until(lambda: barrier.n_waiting == 1, what="the barrier waiter")
        time.sleep(2.0)
    finally:
        with cond:
            cond.notify_all()
        barrier.wait(TIMEOUT)
    results = {r[0]: r[1:] for r in collect(out, 2)}
    join_ok(*procs)
    for kind, (ok, cpu, wall) in results.items():
        assert ok is True, kind
        assert wall >= 1.9, f"{kind}: the wait ended after {wall:.2f}s, before anything woke it"
        assert cpu < 0.02 * wall, f"{kind}: {cpu * 1000:.1f} ms of CPU in {wall:.2f}s blocked"


# ========================================================================
# A notify reaches only the waiters registered before it
# ========================================================================

SLOTS = 128  # waiters that fit in a Condition's slots (IP_COND_SLOTS)


def ping_pong_in_threads(cond, rounds):
    """Two threads play cb.cond_ping_pong on ``cond``: their exit codes."""
    turn = interproc.RawValue("i", 0)
    results = []

    def side(me):
        try:
            cb.cond_ping_pong(cond, turn, me, rounds, 5.0)
            results.append(0)
        except SystemExit as exc:
            results.append(exc.code)

    join_threads(start_thread(side, 0), start_thread(side, 1))
    return results


def test_two_thread_ping_pong_with_notify(lib):
    """Each side notifies, then waits for its turn: a notifier that could
    take back its own notification would leave the other side asleep."""
    results = ping_pong_in_threads(make(lib, "Condition"), 200)
    assert results == [0, 0], [cb.describe_exit(c) for c in results]


def test_ping_pong_between_processes(start_method, lib):
    cond = make(lib, "Condition", ctx=start_method)
    turn = make(lib, "RawValue", "i", 0, ctx=start_method)
    p = start(start_method, cb.cond_ping_pong, cond, turn, 1, 100, 10.0)
    try:
        cb.cond_ping_pong(cond, turn, 0, 100, 10.0)
    except SystemExit as exc:
        pytest.fail(f"the parent's side: {cb.describe_exit(exc.code)}")
    finally:
        join_ok(p)


@pytest.mark.parametrize("factory", ["Condition", "Manager().Condition"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_cpython_test_waitfor(method, factory):
    """CPython's _TestCondition.test_waitfor (Lib/test/_test_multiprocessing.py),
    with timeouts where it has none."""
    ctx = multiprocessing.get_context(method)
    if factory == "Condition":
        cond = interproc.Condition()
    else:
        with interproc.Manager() as manager:
            cond = manager.Condition()
    state = interproc.Value("i", -1)
    p = start(ctx, cb.cpython_waitfor_child, cond, state)
    with cond:
        assert cond.wait_for(lambda: state.value == 0, TIMEOUT), "the child's notify never arrived"
        assert state.value == 0
    for _ in range(4):
        time.sleep(0.01)
        with cond:
            state.value += 1
            cond.notify()
    join_ok(p)


def test_a_notifier_that_then_waits_does_not_take_its_own_notification(lib):
    cond = make(lib, "Condition")
    arrived, out = counter(), interproc.Queue()
    t = start_thread(cb.cond_wait_once, cond, arrived, out, TIMEOUT, "waiter")
    all_in_wait(cond, arrived, 1)
    with cond:
        cond.notify()
        assert cond.wait(0.3) is False, "the notifier was woken by its own notification"
    tag, ok, _ = out.get(timeout=TIMEOUT)
    join_threads(t)
    assert (tag, ok) == ("waiter", True)


@pytest.mark.parametrize("impl", ["interproc", "threading"])
def test_notify_wakes_the_longest_waiting_first(impl):
    """FIFO, as threading.Condition."""
    cond = interproc.Condition() if impl == "interproc" else threading.Condition()
    arrived, out = counter(), interproc.Queue()
    threads = []
    for i in range(6):
        threads.append(start_thread(cb.cond_wait_once, cond, arrived, out, TIMEOUT, i))
        all_in_wait(cond, arrived, i + 1)
    order = []
    for _ in range(6):
        with cond:
            cond.notify()
        order.append(out.get(timeout=TIMEOUT)[0])
    join_threads(*threads)
    assert order == list(range(6))


def test_a_wait_timing_out_as_it_is_notified_loses_no_notification():
    """notify(1) with two waiters, the older timing out about then: either
    the older reports True (it had the notification), or the younger is
    woken; never neither, never both."""
    seed = new_seed()
    rng = random.Random(seed)
    cond = interproc.Condition()
    for i in range(100):
        ctx = f"seed={seed} round {i}"
        a_timed, a_untimed, out = counter(), counter(), interproc.Queue()
        timed = start_thread(cb.cond_wait_once, cond, a_timed, out, rng.uniform(0, 0.002), "timed")
        all_in_wait(cond, a_timed, 1)
        untimed = start_thread(cb.cond_wait_once, cond, a_untimed, out, 10.0, "untimed")
        all_in_wait(cond, a_untimed, 1)
        time.sleep(rng.uniform(0, 0.002))
        with cond:
            cond.notify()
        join_threads(timed)
        got = dict((tag, ok) for tag, ok, _ in [out.get(timeout=TIMEOUT)])
        if "untimed" in got:
            got.update((tag, ok) for tag, ok, _ in [out.get(timeout=TIMEOUT)])
        if got["timed"]:
            # The notification was the older waiter's: the younger still waits.
            assert "untimed" not in got, f"{ctx}: notify(1) woke both"
            assert cond.statistics()["condition_waiters"] == 1, ctx
            with cond:
                cond.notify()
            got.update((tag, ok) for tag, ok, _ in [out.get(timeout=TIMEOUT)])
        else:
            if "untimed" not in got:
                got.update((tag, ok) for tag, ok, _ in [out.get(timeout=TIMEOUT)])
        join_threads(untimed)
        assert got["untimed"] is True, f"{ctx}: the notification was lost: {got}"
    assert cond.statistics()["condition_waiters"] == 0


def test_notify_passes_over_a_dead_waiter_and_frees_its_slot():
    cond = interproc.Condition()
    arrived = counter()
    victim = start(FORK, cb.cond_wait_until_killed, cond, arrived)
    all_in_wait(cond, arrived, 1)
    assert kill_and_reap(victim) == -signal.SIGKILL
    live_arrived, out = counter(), interproc.Queue()
    t = start_thread(cb.cond_wait_once, cond, live_arrived, out, TIMEOUT, "live")
    all_in_wait(cond, live_arrived, 1)
    with cond:
        cond.notify()  # the dead waiter is the oldest
    assert out.get(timeout=TIMEOUT)[:2] == ("live", True)
    join_threads(t)
    assert cond.statistics()["condition_waiters"] == 0, "the dead waiter still counts"


@pytest.mark.timeout(120)
def test_more_waiters_than_slots():
    """Waiters beyond the slots still get every notification: each
    notify() wakes at least one, none is lost, notify_all() wakes all."""
    n = SLOTS + 12
    cond = interproc.Condition()
    for phase in ("notify", "notify_all"):
        arrived, out = counter(), interproc.Queue()
        threads = [start_thread(cb.cond_wait_once, cond, arrived, out, TIMEOUT, i) for i in range(n)]
        all_in_wait(cond, arrived, n)
        assert cond.statistics()["condition_waiters"] == n
        woken = []
        if phase == "notify_all":
            with cond:
                cond.notify_all()
            woken = collect(out, n)
        while len(woken) < n:
            with cond:
                cond.notify()
            woken.append(out.get(timeout=TIMEOUT))
            woken += drain_for(out, 0)
        join_threads(*threads)
        assert sorted(tag for tag, _, _ in woken) == list(range(n)), phase
        assert all(ok is True for _, ok, _ in woken), phase
        assert cond.statistics()["condition_waiters"] == 0, phase


@pytest.mark.timeout(120)
def test_rlock_release_wakes_the_acquirer_not_a_condition_waiter():
    """With three threads asleep in wait() and a fourth asleep in acquire(),
    release() must wake the acquirer.  Sleeps are made 600 s long, so an
    acquirer left asleep shows up as one still asleep seconds later, not as
    a 50 ms delay."""
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import interproc
        from _cb_helpers import native_thread_sleeps_on_futex as asleep
        interproc._core.SyncCore._set_wait_slice(600)
        cond = interproc.Condition()
        arrived = interproc.RawValue("q", 0)
        tids, got = [], []
        deadline = time.monotonic() + 30

        def until(predicate, what):
            while not predicate():
                if time.monotonic() > deadline:
                    print("timed out waiting for", what, flush=True)
                    sys.exit(2)
                time.sleep(0.005)

        def waiter():
            tids.append(threading.get_native_id())
            with cond:
                arrived.fetch_add(1)
                cond.wait(120)

        def acquirer():
            tids.append(threading.get_native_id())
            got.append(cond.acquire(timeout=300))

        for _ in range(3):
            threading.Thread(target=waiter, daemon=True).start()
        until(lambda: arrived.load() == 3, "the waiters")
        cond.acquire()
        until(lambda: all(asleep(t) for t in tids), "the waiters to sleep")
        threading.Thread(target=acquirer, daemon=True).start()
        until(lambda: len(tids) == 4 and asleep(tids[3]), "the acquirer to sleep")
        cond.release()
        deadline = time.monotonic() + 10  # a slice is 600 s: woken, or left asleep
        until(lambda: got, "the acquirer to be woken by the release")
        print("acquired" if got == [True] else got, flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert r.returncode == 0 and r.stdout.strip() == "acquired", (r.returncode, r.stdout, r.stderr)


# ========================================================================
# Barrier: every party of a generation passes, or every one is told
# ========================================================================

def test_a_timeout_during_the_last_partys_action_does_not_break_the_barrier(lib):
    """As threading: once the last party is in, the generation passes, even
    if a waiter's timeout expires while the action runs."""
    barrier = make(lib, "Barrier", 2, functools.partial(time.sleep, 1.0))
    out = interproc.Queue()
    t = start_thread(cb.barrier_wait_report, barrier, out, 0.3, "waiter")
    wait_until(lambda: barrier.n_waiting == 1, what="the waiter")
    index = barrier.wait(TIMEOUT)  # runs the action, during which the waiter times out
    tag, what, other, _ = out.get(timeout=TIMEOUT)
    join_threads(t)
    assert what == "ok", "one party passed while the other was told the barrier broke"
    assert {index, other} == {0, 1}
    assert barrier.broken is False


def test_a_timeout_racing_the_last_arrival_is_all_or_nothing():
    seed = new_seed()
    rng = random.Random(seed)
    barrier = interproc.Barrier(2)
    for i in range(150):
        out = interproc.Queue()
        t = start_thread(cb.barrier_wait_report, barrier, out, rng.uniform(0, 0.002), "timed")
        time.sleep(rng.uniform(0, 0.002))
        cb.barrier_wait_report(barrier, out, TIMEOUT, "last")
        join_threads(t)
        results = {tag: what for tag, what, _, _ in collect(out, 2)}
        assert len(set(results.values())) == 1, f"seed={seed} round {i}: {results}"
        barrier.reset()


def test_a_party_arriving_while_the_last_finishes_waits_for_the_next_generation(lib):
    in_action = threading.Event()

    def action():
        if not in_action.is_set():
            in_action.set()
            time.sleep(0.5)

    barrier = make(lib, "Barrier", 2, action)
    out = interproc.Queue()
    a = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "a")
    wait_until(lambda: barrier.n_waiting == 1, what="the first party")
    b = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "b")
    assert in_action.wait(TIMEOUT)
    c = start_thread(cb.barrier_wait_report, barrier, out, TIMEOUT, "c")
    first = collect(out, 2)
    assert sorted(tag for tag, _, _, _ in first) == ["a", "b"], first
    assert all(what == "ok" for _, what, _, _ in first), first
    wait_until(lambda: barrier.n_waiting == 1, what="the third party to wait for a partner")
    assert drain_for(out, 0.2) == [], "the third party passed without a partner"
    assert barrier.wait(TIMEOUT) in (0, 1)
    assert out.get(timeout=TIMEOUT)[:2] == ("c", "ok")
    join_threads(a, b, c)


@pytest.mark.timeout(120)
def test_condition_users_killed_at_random_points():
    """Processes notify and wait as fast as they can and are SIGKILLed at
    random: inside wait, registering, holding the lock, notifying.  The
    condition keeps working: the lock is taken over, live waiters are
    notified past the slots of the dead, and nobody hangs."""
    seed = new_seed()
    rng = random.Random(seed)
    cond, count = interproc.Condition(), counter()
    churners = [start(FORK, cb.cond_churn, cond, count, rng.getrandbits(32)) for _ in range(3)]
    try:
        for i in range(40):
            before = count.load()
            wait_until(lambda: count.load() > before, 10, f"seed={seed} kill #{i}: progress")
            time.sleep(rng.uniform(0, 0.01))
            victim = churners.pop(rng.randrange(len(churners)))
            assert kill_and_reap(victim) == -signal.SIGKILL, f"seed={seed}: {cb.describe_exit(victim.exitcode)}"
            churners.append(start(FORK, cb.cond_churn, cond, count, rng.getrandbits(32)))
    finally:
        for p in churners:
            kill_and_reap(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", interproc.OwnerDiedWarning)
        assert cond.acquire(timeout=5) is True, f"seed={seed}: the lock was not taken over"
        cond.release()
    arrived, out = counter(), interproc.Queue()
    waiters = [start_thread(cb.cond_wait_once, cond, arrived, out, TIMEOUT, i) for i in range(3)]
    all_in_wait(cond, arrived, 3)
    for _ in range(3):
        with cond:
            cond.notify()
        assert out.get(timeout=10)[1] is True, f"seed={seed}: a notify was lost to a dead waiter"
    join_threads(*waiters)
    results = ping_pong_in_threads(cond, 50)
    assert results == [0, 0], f"seed={seed}: {results}"
