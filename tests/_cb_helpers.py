"""Child-process targets and actions for the Condition and Barrier tests.

They live here, at module level, because spawn and forkserver pickle
targets (and a Barrier's action) by reference.  Every blocking call has a
timeout, and a child that sees something wrong exits with a code of its own
(see _sync_helpers.describe_exit), so a bug fails the test instead of
hanging it.

Children that wait on a Condition count themselves in ``arrived`` while
holding its lock, just before wait().  A parent that has seen the count and
then takes the lock knows every counted child is inside wait(): the only way
they could have let the lock go.  That works alike for interproc's and
multiprocessing's Condition, with no peeking at either one's internals.
"""

import os
import sys
import threading
import time
import warnings

from _sync_helpers import (  # noqa: F401 - re-exported for the tests
    CHILD_TIMEOUT,
    EXIT_ACQUIRE_TIMED_OUT,
    EXIT_MEANINGS,
    EXIT_RAN_TOO_LONG,
    EXIT_WAIT_TIMED_OUT,
    cpu_seconds,
    describe_exit,
)


class ActionFailed(Exception):
    """Raised by a Barrier action on purpose."""


class AppendPid:
    """A Barrier action that appends the pid running it to a file.

    One ``write()`` of one short line on an O_APPEND descriptor is atomic,
    so the file's line count is how many times the action ran, whoever ran it.
    """

    def __init__(self, path):
        self.path = path

    def __call__(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)


def action_lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def raise_action_failed():
    raise ActionFailed("the action failed")


# ------------------------------------------------------------- Condition

def cond_wait_once(cond, arrived, out, timeout, tag):
    """Count in, wait once, report (tag, what wait returned, when)."""
    if not cond.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    try:
        arrived.fetch_add(1)
        ok = cond.wait(timeout)
    finally:
        cond.release()
    out.put((tag, ok, time.monotonic()))


def cond_from_queue_wait_once(q, arrived, out, tag):
    cond = q.get(timeout=CHILD_TIMEOUT)
    cond_wait_once(cond, arrived, out, CHILD_TIMEOUT, tag)


def cond_named_wait_once(name, arrived, out, probe):
    """Open a named Condition; report whether its lock looked free (the
    parent holds it, so it must not), then wait once."""
    import interproc

    cond = interproc.Condition(name=name, create=False)
    got = cond.acquire(False)
    if got:
        cond.release()
    probe.put(got)
    cond_wait_once(cond, arrived, out, CHILD_TIMEOUT, "named")


def cond_wait_for_value(cond, value, target, timeout, out, holding=None, slice_seconds=None):
    """wait_for(value >= target); report what it returned and when.

    ``holding`` (an Event) is set once the lock is held, so whoever then
    takes the lock knows this process is waiting.  ``slice_seconds`` makes
    interproc's sleeps that long: a wait that ends before it was woken, not
    by the next look at the clock."""
    if slice_seconds is not None:
        import interproc
        interproc._core.SyncCore._set_wait_slice(slice_seconds)
    if not cond.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    if holding is not None:
        holding.set()
    try:
        result = cond.wait_for(lambda: value.load() >= target and value.load(), timeout)
    finally:
        cond.release()
    out.put((result, time.monotonic()))


def cond_bump(cond, value, n, pause):
    """Add 1 to ``value`` n times under the lock, notifying all each time."""
    for _ in range(n):
        time.sleep(pause)
        if not cond.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_ACQUIRE_TIMED_OUT)
        try:
            value.fetch_add(1)
            cond.notify_all()
        finally:
            cond.release()


def cond_wait_report_takeover(cond, arrived, out):
    """Wait once, and report whether getting the lock back meant taking it
    over from a dead holder: (pid, wait's result, owner_died, warned)."""
    import interproc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not cond.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_ACQUIRE_TIMED_OUT)
        try:
            del caught[:]
            arrived.fetch_add(1)
            ok = cond.wait(CHILD_TIMEOUT)
            died = cond.owner_died
            warned = sum(issubclass(w.category, interproc.OwnerDiedWarning) for w in caught)
        finally:
            cond.release()
    out.put((os.getpid(), ok, died, warned))


def cond_hold_until_killed(cond, depth, held, notify_first):
    """Take the lock ``depth`` times (notifying all first if asked), say so,
    and keep it until killed."""
    for _ in range(depth):
        if not cond.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    if notify_first:
        cond.notify_all()
    held.store(1)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.001)
    sys.exit(EXIT_RAN_TOO_LONG)


def cond_wait_until_killed(cond, arrived):
    if not cond.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    arrived.fetch_add(1)
    cond.wait(CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


def idle_in_cond_wait(cond, arrived, out):
    """Block in one untimed wait() and report the CPU it cost; untimed on
    purpose, since a wait for ever is where polling would hide."""
    if not cond.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    arrived.fetch_add(1)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    ok = cond.wait()
    cpu1, t1 = cpu_seconds(), time.monotonic()
    cond.release()
    out.put(("Condition", ok, cpu1 - cpu0, t1 - t0))


# --------------------------------------------------------------- Barrier

def barrier_wait_report(barrier, out, timeout, tag):
    """One wait(); report (tag, "ok" or the exception's name, index, when)."""
    try:
        index = barrier.wait(timeout)
    except threading.BrokenBarrierError:
        out.put((tag, "BrokenBarrierError", None, time.monotonic()))
    except BaseException as exc:  # noqa: BLE001 - the type is the answer
        out.put((tag, type(exc).__name__, None, time.monotonic()))
    else:
        out.put((tag, "ok", index, time.monotonic()))


def barrier_rounds(barrier, rounds, out, tag, log_path):
    """Pass the barrier ``rounds`` times; report the index of each pass and
    whether the action had already run that round when the wait returned."""
    indices, action_first = [], []
    for r in range(rounds):
        indices.append(barrier.wait(CHILD_TIMEOUT))
        if log_path is not None:
            action_first.append(len(action_lines(log_path)) >= r + 1)
    out.put((tag, indices, action_first))


def barrier_wait_until_killed(barrier, ready):
    ready.put(os.getpid())
    try:
        barrier.wait(CHILD_TIMEOUT)
    except threading.BrokenBarrierError:
        pass
    sys.exit(EXIT_RAN_TOO_LONG)


def idle_in_barrier_wait(barrier, ready, out):
    ready.put("Barrier")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    index = barrier.wait()
    cpu1, t1 = cpu_seconds(), time.monotonic()
    out.put(("Barrier", index is not None, cpu1 - cpu0, t1 - t0))


def barrier_pass_then_hang(barrier, held):
    """Pass the barrier once, say so, and wait elsewhere until killed."""
    barrier.wait(CHILD_TIMEOUT)
    held.store(1)
    time.sleep(CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


class HangOnce:
    """A Barrier action that says it started, then hangs until killed, the
    first time it runs in the process whose pid is in ``victim``."""

    def __init__(self, victim, started):
        self.victim = victim
        self.started = started

    def __call__(self):
        if os.getpid() == self.victim.load():
            self.started.store(1)
            time.sleep(CHILD_TIMEOUT)
            sys.exit(EXIT_RAN_TOO_LONG)


def barrier_arrive_last(barrier, victim):
    victim.store(os.getpid())
    barrier.wait(CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


# ----------------------------------------------- notify reaches earlier waiters

def cond_ping_pong(cond, turn, me, rounds, timeout):
    """Play one side of a ping-pong: wait for ``turn`` to be ``me``, hand
    it over with notify(), ``rounds`` times.  Exits EXIT_WAIT_TIMED_OUT if a
    wait for the turn timed out: the other side's notification never
    arrived."""
    if not cond.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)
    try:
        for _ in range(rounds):
            while turn.value != me:
                if not cond.wait(timeout):
                    sys.exit(EXIT_WAIT_TIMED_OUT)
            turn.value = 1 - me
            cond.notify()
    finally:
        cond.release()


def cpython_waitfor_child(cond, state):
    """CPython's _TestCondition._test_waitfor_f, with a timeout so that a
    lost wake-up fails instead of hanging."""
    with cond:
        state.value = 0
        cond.notify()
        result = cond.wait_for(lambda: state.value == 4, CHILD_TIMEOUT)
        if not result or state.value != 4:
            sys.exit(1)


def native_thread_sleeps_on_futex(tid):
    """Whether thread ``tid`` of this process is asleep in a futex wait."""
    try:
        with open(f"/proc/self/task/{tid}/wchan") as f:
            return "futex" in f.read()
    except OSError:
        return False


def cond_churn(cond, count, seed):
    """Notify and wait in a loop, as fast as it goes, until killed."""
    import random

    rng = random.Random(seed)
    warnings.simplefilter("ignore")  # takeovers from killed churners
    while True:
        if not cond.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_ACQUIRE_TIMED_OUT)
        try:
            count.fetch_add(1)
            cond.notify(rng.randint(1, 2))
            cond.wait(rng.uniform(0, 0.003))
        finally:
            cond.release()
