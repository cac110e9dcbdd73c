"""Synchronization primitives shared between real processes: mutual
exclusion, wake-ups, names, passing them around, idle CPU, and holders and
waiters SIGKILLed at random points.

The kill tests use fork only: they start hundreds of processes, and spawn
would spend the time budget on interpreter start-up instead of on kills.
Every random choice comes from one seed that is printed with each failure.
"""

import functools
import multiprocessing
import os
import random
import signal
import threading
import time
import warnings

import pytest

import interproc

import _helpers
import _sync_helpers as sh
from _helpers import TIMEOUT, collect, keep_killing, kill_and_reap, new_seed, owner_died_warnings, start, wait_until

# How soon a process blocked in a wait must notice a release or a set().
# Futex wake-ups take microseconds; this leaves room for a loaded machine
# while still catching a waiter that only polls.
PROMPT = 0.25
# How soon the lock of a dead holder must be taken over.
TAKEOVER = 1.0
FORK = multiprocessing.get_context("fork")

pytestmark = pytest.mark.timeout(120)

join_ok = functools.partial(_helpers.join_ok, meanings=sh.EXIT_MEANINGS)


@pytest.fixture(params=["anonymous", "named"])
def make(request, unique_name):
    def make_(kind, *args):
        kwargs = {"name": unique_name()} if request.param == "named" else {}
        return getattr(interproc, kind)(*args, **kwargs)

    return make_


# ------------------------------------------------------ mutual exclusion

@pytest.mark.parametrize(
    "kind,nested",
    [("Lock", False), ("RLock", True), ("Semaphore", False), ("BoundedSemaphore", False)],
    ids=["Lock", "RLock-nested", "Semaphore1", "BoundedSemaphore1"],
)
def test_mutual_exclusion_under_contention(start_method, kind, nested):
    n_procs, n_iters = 4, 1500
    lock = getattr(interproc, kind)() if kind.endswith("Lock") else getattr(interproc, kind)(1)
    counter = start_method.RawValue("q", 0)
    inside = start_method.RawValue("b", 0)
    go = start_method.Event()
    procs = [
        start(start_method, sh.increment_under_lock, lock, counter, inside, n_iters, go, nested)
        for _ in range(n_procs)
    ]
    go.set()
    join_ok(*procs)
    assert counter.value == n_procs * n_iters
    if kind.endswith("Lock"):
        assert lock.statistics()["locked"] is False
        assert lock.acquire(False) is True
    else:
        assert lock.get_value() == 1


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_limits_concurrency(start_method, kind):
    limit, n_procs = 2, 5
    sem = getattr(interproc, kind)(limit)
    oracle = start_method.Lock()  # independent of what is under test
    current = start_method.RawValue("i", 0)
    peak = start_method.RawValue("i", 0)
    go = start_method.Event()
    procs = [
        start(start_method, sh.hold_semaphore, sem, oracle, current, peak, 15, 0.003, go)
        for _ in range(n_procs)
    ]
    go.set()
    join_ok(*procs)
    assert peak.value <= limit, f"{peak.value} holders at once under Semaphore({limit})"
    assert peak.value == limit, "the semaphore never let two holders in at once"
    assert current.value == 0
    assert sem.get_value() == limit


# ------------------------------------------------------ wake-ups

def test_event_wakes_waiters_in_other_processes(start_method, make):
    ev = make("Event")
    ready, out = interproc.Queue(), interproc.Queue()
    n = 3
    procs = [start(start_method, sh.wait_event_and_report, ev, ready, out, TIMEOUT) for _ in range(n)]
    collect(ready, n)
    wait_until(lambda: ev.statistics()["waiters"] == n, what="every child to wait")
    t_set = time.monotonic()
    ev.set()
    results = collect(out, n)
    join_ok(*procs)
    assert all(ok is True for _, ok, _ in results), results
    lags = sorted(t - t_set for _, _, t in results)
    assert lags[-1] < PROMPT, f"waiters woke {lags} s after set()"
    assert ev.statistics()["waiters"] == 0


def test_event_wait_in_another_process_times_out(start_method):
    ev = interproc.Event()
    ready, out = interproc.Queue(), interproc.Queue()
    p = start(start_method, sh.wait_event_and_report, ev, ready, out, 0.3)
    collect(ready, 1)
    t0 = time.monotonic()
    _, ok, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert ok is False
    assert t - t0 < 0.3 + PROMPT


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore"])
def test_release_wakes_a_waiter_in_another_process(start_method, make, kind):
    obj = make(kind, 0) if kind == "Semaphore" else make(kind)
    if kind != "Semaphore":
        obj.acquire()
    ready, out = interproc.Queue(), interproc.Queue()
    p = start(start_method, sh.acquire_and_report, obj, ready, out, TIMEOUT)
    collect(ready, 1)
    wait_until(lambda: obj.statistics()["waiters"] == 1, what="the child to wait")
    t_release = time.monotonic()
    obj.release()
    ok, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert ok is True
    assert t - t_release < PROMPT, f"the waiter woke {t - t_release:.3f}s after release()"


def test_lock_released_by_another_process(start_method, make):
    lock = make("Lock")
    lock.acquire()
    join_ok(start(start_method, sh.release_lock, lock))
    assert lock.locked() is False
    assert lock.acquire(False) is True


def test_rlock_release_from_another_process_is_assertion_error(start_method, make):
    rlock = make("RLock")
    rlock.acquire()
    out = interproc.Queue()
    p = start(start_method, sh.try_release_rlock, rlock, out)
    assert out.get(timeout=TIMEOUT) == "AssertionError"
    join_ok(p)
    stats = rlock.statistics()
    assert stats["locked"] is True
    assert stats["owner_pid"] == os.getpid()
    assert stats["recursion"] == 1
    rlock.release()
    assert rlock.statistics()["locked"] is False


def test_lock_held_by_parent_is_seen_held_by_a_forked_child():
    """The state is shared, not copied at fork."""
    lock = interproc.Lock()
    lock.acquire()
    ready, out = interproc.Queue(), interproc.Queue()
    p = start(FORK, sh.acquire_and_report, lock, ready, out, 0.2)
    ok, _ = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert ok is False


# ------------------------------------------------------ names, passing

def test_named_lock_opened_by_name_in_a_spawned_process(unique_name):
    ctx = multiprocessing.get_context("spawn")
    name = unique_name()
    lock = interproc.Lock(name=name, create=True)
    lock.acquire()
    out, cmd = interproc.Queue(), interproc.Queue()
    p = start(ctx, sh.probe_named_lock, name, out, cmd)
    try:
        assert out.get(timeout=TIMEOUT) == ("opened", "Lock", False, True, os.getpid())
        lock.release()
        tag, ok, owner = out.get(timeout=TIMEOUT)
        assert (tag, ok, owner) == ("acquired", True, p.pid)
        assert lock.locked() is True
        assert lock.statistics()["owner_pid"] == p.pid
        assert lock.acquire(False) is False
        cmd.put("release")
        assert out.get(timeout=TIMEOUT) == ("released",)
    finally:
        join_ok(p)
    assert lock.acquire(False) is True
    assert lock.owner_died is False


def test_named_event_opened_by_name_in_a_spawned_process(unique_name):
    ctx = multiprocessing.get_context("spawn")
    name = unique_name()
    ev = interproc.Event(name=name)
    ev.set()
    out = interproc.Queue()
    p = start(ctx, sh.probe_named_event, name, out)
    assert out.get(timeout=TIMEOUT) is True
    join_ok(p)
    assert ev.is_set() is False


def test_primitives_through_a_queue(start_method, make):
    """Each kind, set up so that the child's answers are known."""
    lock = make("Lock")
    lock.acquire()
    rlock = make("RLock")
    rlock.acquire()
    sem = make("Semaphore", 3)
    bsem = make("BoundedSemaphore", 2)
    ev = make("Event")
    ev.set()
    objs = [lock, rlock, sem, bsem, ev]
    q, out = interproc.Queue(), interproc.Queue()
    p = start(start_method, sh.exercise_received, q, out, len(objs))
    for obj in objs:
        q.put(obj)
    results = [out.get(timeout=TIMEOUT) for _ in objs]
    join_ok(p)
    assert results == [
        ("Lock", False, True),
        ("RLock", False, "AssertionError"),
        ("Semaphore", [True, True], 1),
        ("BoundedSemaphore", 2, "ValueError"),
        ("Event", True),
    ]
    assert lock.locked() is False
    assert rlock.statistics()["owner_pid"] == os.getpid()
    assert sem.get_value() == 1
    assert bsem.get_value() == 2
    assert ev.is_set() is False


# ------------------------------------------------------------- idle CPU

def test_blocked_children_do_not_burn_cpu(start_method):
    """A child blocked for ~2 s in an untimed wait uses < 2% of a core."""
    lock, rlock, sem, ev = interproc.Lock(), interproc.RLock(), interproc.Semaphore(0), interproc.Event()
    lock.acquire()
    rlock.acquire()
    ready, out = interproc.Queue(), interproc.Queue()
    waits = {"Lock": lock, "RLock": rlock, "Semaphore": sem, "Event": ev}
    procs = [start(start_method, sh.idle_cpu_in_wait, kind, obj, ready, out) for kind, obj in waits.items()]
    try:
        collect(ready, len(waits))
        wait_until(
            lambda: all(o.statistics()["waiters"] == 1 for o in waits.values()),
            what="every child to wait",
        )
        time.sleep(2.0)
    finally:
        lock.release()
        rlock.release()
        sem.release()
        ev.set()
    results = {r[0]: r[1:] for r in (out.get(timeout=TIMEOUT) for _ in waits)}
    join_ok(*procs)
    for kind, (ok, cpu, wall) in results.items():
        assert ok is True, kind
        assert wall >= 1.9, f"{kind}: the wait ended after {wall:.2f}s, before anything woke it"
        assert cpu < 0.02 * wall, f"{kind}: {cpu * 1000:.1f} ms of CPU in {wall:.2f}s blocked"


# ------------------------------------------------------ crash safety

HOLDER_KILLS = 100         # per kind
CHURN_KILLS = 100          # per kind
CHURN_SECONDS = 12         # normally CHURN_KILLS ends it first (see keep_killing)
CHURNERS = 3
# How the parent takes over: after the kill, or blocked in acquire() when
# the kill happens.  Non-blocking takeover has a test of its own below.
RECOVERY_MODES = ("timed", "already-waiting")


def _take_over(lock, mode, victim, rng):
    """Kill ``victim`` (if mode says the kill happens during the wait) and
    take ``lock`` over; return (acquired, seconds from kill to acquired)."""
    if mode == "already-waiting":
        killed_at = []

        def kill():
            killed_at.append(time.monotonic())
            os.kill(victim.pid, signal.SIGKILL)

        timer = threading.Timer(rng.uniform(0.005, 0.02), kill)
        timer.start()
        ok = lock.acquire(timeout=5)
        done = time.monotonic()
        timer.join()
        code = kill_and_reap(victim)
        assert code == -signal.SIGKILL, sh.describe_exit(code)
        return ok, done - killed_at[0]
    code = kill_and_reap(victim)
    assert code == -signal.SIGKILL, f"the holder was not killed holding: {sh.describe_exit(code)}"
    t0 = time.monotonic()
    ok = lock.acquire(timeout=5)
    return ok, time.monotonic() - t0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_holder_killed_at_random_points(kind):
    """Kill the holder at a random moment of its hold (asleep, in Python
    code, inside the lock's own methods); the parent then takes the lock
    over at once, is told so, and the next acquisition is a normal one."""
    seed = new_seed()
    rng = random.Random(seed)
    lock = getattr(interproc, kind)()
    held = FORK.RawValue("b", 0)
    for i in range(HOLDER_KILLS):
        mode = RECOVERY_MODES[i % len(RECOVERY_MODES)]
        depth = rng.randint(1, 3) if kind == "RLock" else 1
        ctx = f"seed={seed} kill #{i} mode={mode} depth={depth}"
        held.value = 0
        victim = start(FORK, sh.hold_until_killed, lock, depth, held, rng.getrandbits(32))
        wait_until(lambda: held.value or victim.exitcode is not None, 10, f"{ctx}: the child to hold")
        assert held.value, f"{ctx}: child {sh.describe_exit(victim.exitcode)}"
        if mode != "already-waiting":
            time.sleep(rng.uniform(0, 0.005))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ok, took = _take_over(lock, mode, victim, rng)
        assert ok is True, f"{ctx}: the lock of a dead holder could not be taken"
        assert took < TAKEOVER, f"{ctx}: took {took:.3f}s to take over a dead holder's lock"
        assert lock.owner_died is True, ctx
        assert len(owner_died_warnings(caught)) == 1, f"{ctx}: warnings {[str(w) for w in caught]}"
        stats = lock.statistics()
        assert stats["locked"] is True and stats["owner_pid"] == os.getpid(), f"{ctx}: {stats}"
        if kind == "RLock":
            # The dead thread's recursion is not inherited.
            assert stats["recursion"] == 1, f"{ctx}: {stats}"
        lock.release()
        assert lock.statistics()["locked"] is False, f"{ctx}: one release did not free it"

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=1) is True, ctx
            assert lock.owner_died is False, f"{ctx}: owner_died stuck after a normal acquisition"
        assert not owner_died_warnings(caught), f"{ctx}: warned on a normal acquisition"
        lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_holder_killed_under_each_start_method(start_method, make, kind):
    """The holder's death is seen whoever its parent is: under forkserver
    the victim is the server's child, and may linger as its zombie."""
    lock = make(kind)
    held = start_method.RawValue("b", 0)
    victim = start(start_method, sh.hold_until_killed, lock, 2 if kind == "RLock" else 1, held, 0)
    wait_until(lambda: held.value or victim.exitcode is not None, what="the child to hold")
    assert held.value, sh.describe_exit(victim.exitcode)
    assert lock.statistics()["owner_pid"] == victim.pid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Killed while the parent waits: the takeover must not depend on
        # the victim having been reaped.
        timer = threading.Timer(0.05, os.kill, (victim.pid, signal.SIGKILL))
        timer.start()
        t0 = time.monotonic()
        ok = lock.acquire(timeout=5)
        took = time.monotonic() - t0
        timer.join()
    assert kill_and_reap(victim) == -signal.SIGKILL
    assert ok is True
    assert took < 0.05 + TAKEOVER, f"took {took:.3f}s to take over"
    assert lock.owner_died is True
    assert len(owner_died_warnings(caught)) == 1
    lock.release()
    assert lock.locked() is False


@pytest.mark.parametrize("call", ["acquire(False)", "acquire(timeout=0)"])
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_nonblocking_acquire_takes_over_a_dead_holder(kind, call):
    """The next process to acquire gets the lock, however it asks: code
    that polls with acquire(False) must not be locked out for ever."""
    lock = getattr(interproc, kind)()
    held = FORK.RawValue("b", 0)
    victim = start(FORK, sh.hold_until_killed, lock, 1, held, 0)
    wait_until(lambda: held.value, 10, "the child to hold")
    assert kill_and_reap(victim) == -signal.SIGKILL
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = lock.acquire(False) if call == "acquire(False)" else lock.acquire(timeout=0)
    assert ok is True, f"{call} did not take over the lock of a dead holder"
    assert lock.owner_died is True
    assert len(owner_died_warnings(caught)) == 1
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_forked_child_does_not_keep_its_dead_parent_looking_alive(kind):
    """The child inherits the descriptors behind its parent's liveness; it
    lets go of them, so the parent's death is seen while the child lives."""
    lock = getattr(interproc, kind)()
    holder, grandchild = sh.fork_holder_with_child(lock)
    try:
        assert lock.acquire(timeout=0.2) is False
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        os.kill(grandchild, 0)  # it lives on
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=5) is True, "the dead parent's lock was kept by its child"
        assert lock.owner_died is True
        assert len(owner_died_warnings(caught)) == 1
        lock.release()
    finally:
        for pid in (holder, grandchild):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill_a_holder(procs, holder, timeout=TIMEOUT):
    """SIGKILL whichever of ``procs`` holds the lock (it names itself in
    ``holder``); stopping it first makes sure it still does when killed.
    Returns the victim's slot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = holder.value
        slot = next((i for i, p in enumerate(procs) if p.pid == pid), None)
        if slot is None:  # nobody, or a victim already gone
            time.sleep(0.0005)
            continue
        os.kill(pid, signal.SIGSTOP)
        if holder.value == pid:
            code = kill_and_reap(procs[slot])
            assert code == -signal.SIGKILL, f"the holder {sh.describe_exit(code)}"
            return slot
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"no churner was seen holding the lock in {timeout} s")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_churning_processes_killed_at_random_points(kind):
    """Processes take and release the lock as fast as they can and are
    SIGKILLed at random, holding it or waiting for it.  None may ever find
    another inside the critical section unless told its holder died, none
    may wait more than a few seconds, and the lock ends up working.  Random
    kills may all miss a holder on a loaded machine, so the run ends with
    one that cannot: a churner stopped while holding the lock, then killed,
    whose death the others must see."""
    seed = new_seed()
    rng = random.Random(seed)
    lock = getattr(interproc, kind)()
    inside = FORK.RawValue("b", 0)
    holder = FORK.RawValue("q", 0)
    deaths_seen = FORK.RawValue("q", 0)
    stop = FORK.RawValue("b", 0)

    def churner():
        return start(FORK, sh.churn_lock, lock, inside, holder, deaths_seen, stop,
                     rng.getrandbits(32), 5.0)

    procs = [churner() for _ in range(CHURNERS)]
    kills = 0
    t0 = time.monotonic()
    try:
        while keep_killing(kills, CHURN_KILLS, t0, CHURN_SECONDS):
            time.sleep(rng.uniform(0, 0.01))
            slot = rng.randrange(CHURNERS)
            code = kill_and_reap(procs[slot])
            assert code == -signal.SIGKILL, f"seed={seed}: a churner {sh.describe_exit(code)}"
            kills += 1
            procs[slot] = churner()
        seen = deaths_seen.value
        slot = _kill_a_holder(procs, holder)
        kills += 1
        procs[slot] = churner()
        wait_until(lambda: deaths_seen.value > seen, TIMEOUT,
                   f"seed={seed}: a churner taking over from the holder killed last")
    finally:
        stop.value = 1
    join_ok(*procs, timeout=30)
    ctx = f"seed={seed} kills={kills}"
    assert kills >= CHURN_KILLS // 2, f"{ctx}: too slow to kill enough"
    assert deaths_seen.value <= kills, f"{ctx}: {deaths_seen.value} takeovers seen"

    # A last victim's lock may not have been taken over by anyone yet.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t1 = time.monotonic()
        assert lock.acquire(timeout=5) is True, ctx
        assert time.monotonic() - t1 < TAKEOVER, ctx
        assert lock.owner_died == bool(owner_died_warnings(caught)), ctx
    lock.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error", interproc.OwnerDiedWarning)
        assert lock.acquire(timeout=1) is True, ctx
        assert lock.owner_died is False, ctx
    lock.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore"])
def test_waiter_killed_does_not_break_the_lock(kind):
    """A process killed while waiting (spinning or asleep) holds nothing:
    the next acquisition is normal and nothing it left behind swallows a
    later wake-up."""
    seed = new_seed()
    rng = random.Random(seed)
    obj = interproc.Semaphore(0) if kind == "Semaphore" else getattr(interproc, kind)()
    ready = interproc.Queue()
    for i in range(20):
        ctx = f"seed={seed} kill #{i}"
        if kind != "Semaphore":
            assert obj.acquire(timeout=1) is True, ctx
        victim = start(FORK, sh.acquire_then_wait_forever, obj, ready)
        ready.get(timeout=TIMEOUT)
        time.sleep(rng.uniform(0, 0.02))
        code = kill_and_reap(victim)
        assert code == -signal.SIGKILL, f"{ctx}: waiter {sh.describe_exit(code)}"
        obj.release()
        if kind == "Semaphore":
            # The dead waiter must not have taken the unit.
            assert obj.get_value() == 1, ctx
        with warnings.catch_warnings():
            warnings.simplefilter("error", interproc.OwnerDiedWarning)
            assert obj.acquire(False) is True, f"{ctx}: a killed waiter left it taken"
            if kind != "Semaphore":
                assert obj.owner_died is False, ctx
        obj.release()
        if kind == "Semaphore":
            assert obj.acquire(False) is True, ctx

    # A live waiter is still woken promptly.
    if kind != "Semaphore":
        obj.acquire()
    out = interproc.Queue()
    p = start(FORK, sh.acquire_and_report, obj, ready, out, TIMEOUT)
    ready.get(timeout=TIMEOUT)
    time.sleep(0.1)
    t_release = time.monotonic()
    obj.release()
    ok, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert ok is True
    assert t - t_release < PROMPT, f"seed={seed}: woke {t - t_release:.3f}s after release()"


@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "Event"])
def test_killed_waiters_are_not_counted_as_waiters(kind):
    """statistics()['waiters'] reflects live waiters, not dead ones."""
    obj = interproc.Semaphore(0) if kind == "Semaphore" else getattr(interproc, kind)()
    if kind == "Lock":
        obj.acquire()
    ready = interproc.Queue()
    target = sh.wait_event_forever if kind == "Event" else sh.acquire_then_wait_forever
    victims = [start(FORK, target, obj, ready) for _ in range(3)]
    collect(ready, 3)
    wait_until(lambda: obj.statistics()["waiters"] == 3, 10, "3 waiters")
    for v in victims:
        assert kill_and_reap(v) == -signal.SIGKILL
    wait_until(lambda: obj.statistics()["waiters"] == 0, 2, "the dead waiters to be forgotten")


def test_event_waiter_killed_does_not_break_the_event():
    ev = interproc.Event()
    ready, out = interproc.Queue(), interproc.Queue()
    victim = start(FORK, sh.wait_event_forever, ev, ready)
    ready.get(timeout=TIMEOUT)
    time.sleep(0.05)
    assert kill_and_reap(victim) == -signal.SIGKILL
    p = start(FORK, sh.wait_event_and_report, ev, ready, out, TIMEOUT)
    ready.get(timeout=TIMEOUT)
    time.sleep(0.1)
    t_set = time.monotonic()
    ev.set()
    _, ok, t = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert ok is True
    assert t - t_set < PROMPT


def test_semaphore_units_of_a_dead_holder_are_not_returned():
    """As documented: a semaphore has no owner to recover from."""
    sem = interproc.Semaphore(2)
    held = FORK.RawValue("b", 0)
    victim = start(FORK, sh.hold_until_killed, sem, 1, held, 0)
    wait_until(lambda: held.value, 10, "the child to hold")
    assert kill_and_reap(victim) == -signal.SIGKILL
    assert sem.get_value() == 1
    assert sem.acquire(False) is True
    assert sem.acquire(False) is False


# ------------------------------------------- holders in other PID namespaces

@pytest.fixture(scope="module")
def pid_namespaces():
    reason = sh.pid_namespace_unavailable()
    if reason:
        pytest.skip(reason)


def _kill_namespace(p):
    p.kill()  # unshare --kill-child: its namespace goes with it
    p.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Condition", "Value"])
def test_holder_in_another_pid_namespace_is_not_taken_for_dead(pid_namespaces, unique_name, kind):
    """A container that shares /dev/shm runs its processes under pids that
    mean nothing (or someone else) here.  Its live holder must keep the
    lock; once it is killed, the lock is taken over and the taker is told."""
    name = unique_name()
    if kind == "Value":
        obj = interproc.Value("i", 7, name=name)
        lock = obj.get_lock()
    else:
        lock = obj = getattr(interproc, kind)(name=name)
    p, their_pid = sh.start_in_pid_namespace(kind, name)
    try:
        assert not os.path.exists(f"/proc/{their_pid}")  # what a pid check would call dead
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=0.3) is False, "took the lock of a live holder"
            assert lock.acquire(False) is False, "took the lock of a live holder"
        assert not owner_died_warnings(caught)
        stats = lock.statistics()
        assert stats["locked"] is True and stats["owner_pid"] == their_pid, stats
    finally:
        _kill_namespace(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire(timeout=TIMEOUT) is True
    assert lock.owner_died is True
    assert len(owner_died_warnings(caught)) == 1
    lock.release()
    assert lock.statistics()["locked"] is False


def test_barrier_party_in_another_pid_namespace_is_not_taken_for_dead(pid_namespaces, unique_name):
    """A party waiting in another PID namespace keeps the barrier whole;
    killed, it breaks it for the parties waiting here."""
    name = unique_name()
    barrier = interproc.Barrier(3, name=name)
    p, _ = sh.start_in_pid_namespace("Barrier", name, 3)
    try:
        wait_until(lambda: barrier.n_waiting == 1, what="the other namespace's party to arrive")
        out = interproc.Queue()
        t = threading.Thread(target=lambda: out.put(sh.barrier_outcome(barrier, TIMEOUT)))
        t.start()
        wait_until(lambda: barrier.n_waiting == 2, what="the thread to arrive")
        time.sleep(0.3)  # several sleep slices of the waiting thread, each with its check
        assert barrier.broken is False, "a live party in another namespace was taken for dead"
        assert sh.barrier_outcome(barrier, TIMEOUT) == "passed"
        assert out.get(timeout=TIMEOUT) == "passed"
        t.join(TIMEOUT)
        assert p.stdout.readline().strip() == "passed"
        p.communicate(timeout=TIMEOUT)
        # Again, and this time the other party dies waiting.
        p, _ = sh.start_in_pid_namespace("Barrier", name, 3)
        wait_until(lambda: barrier.n_waiting == 1, what="the other namespace's party to arrive")
        t = threading.Thread(target=lambda: out.put(sh.barrier_outcome(barrier, TIMEOUT)))
        t.start()
        wait_until(lambda: barrier.n_waiting == 2, what="the thread to arrive")
    finally:
        _kill_namespace(p)
    assert out.get(timeout=TIMEOUT) == "broken"
    t.join(TIMEOUT)
