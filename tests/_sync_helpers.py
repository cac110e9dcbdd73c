"""Child-process targets and small helpers for the synchronization tests.

Targets live here, at module level, because spawn and forkserver pickle them
by reference.  Every blocking call in a child has a timeout, and a child that
sees something wrong exits with a code of its own (listed below), so a bug
shows up as a failed child rather than a hung test.
"""

import os
import random
import sys
import time
import warnings

import _helpers
from _helpers import CHILD_TIMEOUT, cpu_seconds

# Exit codes of children, so that a failure says what went wrong.
EXIT_ACQUIRE_TIMED_OUT = 3
EXIT_START_TIMED_OUT = 4
EXIT_EXCLUSION_BROKEN = 5
EXIT_WARNING_MISMATCH = 6
EXIT_RAN_TOO_LONG = 7
EXIT_WAIT_TIMED_OUT = 8

EXIT_MEANINGS = {
    EXIT_ACQUIRE_TIMED_OUT: "acquire() timed out",
    EXIT_START_TIMED_OUT: "never got the start signal",
    EXIT_EXCLUSION_BROKEN: "found another process inside the critical section",
    EXIT_WARNING_MISMATCH: "owner_died and OwnerDiedWarning disagreed",
    EXIT_RAN_TOO_LONG: "was not killed in time",
    EXIT_WAIT_TIMED_OUT: "a Condition wait for the notification it needed timed out",
}


def describe_exit(code):
    """A child's exit code in words, with the meanings above."""
    return _helpers.describe_exit(code, EXIT_MEANINGS)


def _acquire_or_exit(lock, timeout=CHILD_TIMEOUT):
    if not lock.acquire(timeout=timeout):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)


def _wait_start(start):
    if not start.wait(CHILD_TIMEOUT):
        sys.exit(EXIT_START_TIMED_OUT)


# ------------------------------------------------------ mutual exclusion

def increment_under_lock(lock, counter, inside, n, start, nested):
    """Increment ``counter`` n times with a read-modify-write that loses
    updates unless ``lock`` excludes the others.

    ``inside`` is set for the length of each critical section, so overlap is
    caught directly too, not only through a short count.  The occasional
    sched_yield() inside the critical section hands the CPU to a competitor
    at the worst moment, which is what exposes a broken lock on 2 cores.
    """
    _wait_start(start)
    for i in range(n):
        _acquire_or_exit(lock)
        if nested:
            _acquire_or_exit(lock)
        try:
            if inside.value:
                sys.exit(EXIT_EXCLUSION_BROKEN)
            inside.value = 1
            v = counter.value
            if i % 16 == 0:
                os.sched_yield()
            counter.value = v + 1
            inside.value = 0
        finally:
            if nested:
                lock.release()
            lock.release()


def hold_semaphore(sem, oracle_lock, current, peak, n, hold, start):
    """Take ``sem`` n times, holding it ``hold`` seconds each time, and track
    how many holders there are at once with an independent lock."""
    _wait_start(start)
    for _ in range(n):
        _acquire_or_exit(sem)
        try:
            with oracle_lock:
                current.value += 1
                peak.value = max(peak.value, current.value)
            time.sleep(hold)
            with oracle_lock:
                current.value -= 1
        finally:
            sem.release()


# ------------------------------------------------------ waits and wake-ups

def wait_event_and_report(ev, ready, out, timeout):
    ready.put(os.getpid())
    ok = ev.wait(timeout)
    out.put((os.getpid(), ok, time.monotonic()))


def acquire_and_report(lock, ready, out, timeout):
    """Block in acquire(); report the outcome and when it returned."""
    ready.put(os.getpid())
    ok = lock.acquire(timeout=timeout)
    out.put((ok, time.monotonic()))
    if ok:
        lock.release()


def acquire_then_wait_forever(lock, ready):
    """Signal readiness and block in acquire() until killed."""
    ready.put(os.getpid())
    lock.acquire(timeout=CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


def wait_event_forever(ev, ready):
    ready.put(os.getpid())
    ev.wait(CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


def release_lock(lock):
    lock.release()


def try_release_rlock(rlock, out):
    """Report what releasing an RLock this process does not own raises."""
    try:
        rlock.release()
    except BaseException as exc:  # noqa: BLE001 - the type is the answer
        out.put(type(exc).__name__)
    else:
        out.put(None)


def idle_cpu_in_wait(kind, obj, ready, out):
    """Block in one untimed wait and report the CPU it cost.

    The wait is untimed on purpose: an implementation that polls for
    signals while waiting for ever shows up here, not in a timed wait.
    """
    ready.put(kind)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    if kind == "Event":
        ok = obj.wait()
    else:
        ok = obj.acquire()
    cpu1, t1 = cpu_seconds(), time.monotonic()
    if ok and kind != "Event":
        obj.release()
    out.put((kind, ok, cpu1 - cpu0, t1 - t0))


# ------------------------------------------------------ named and passed

def probe_named_lock(name, out, cmd):
    """Open an existing named Lock by name and report what it looks like."""
    import interproc

    lock = interproc.Lock(name=name, create=False)
    attached = interproc.attach(name)
    out.put((
        "opened",
        type(attached).__name__,
        lock.acquire(False),
        lock.locked(),
        lock.statistics()["owner_pid"],
    ))
    ok = lock.acquire(timeout=CHILD_TIMEOUT)
    out.put(("acquired", ok, lock.statistics()["owner_pid"]))
    cmd.get(timeout=CHILD_TIMEOUT)
    lock.release()
    out.put(("released",))


def probe_named_event(name, out):
    import interproc

    ev = interproc.Event(name=name, create=False)
    was_set = ev.is_set()
    ev.clear()
    out.put(was_set)


def exercise_received(q, out, n):
    """Take ``n`` primitives out of ``q`` and act on each; the parent set
    them up so that every answer below is known in advance."""
    for _ in range(n):
        obj = q.get(timeout=CHILD_TIMEOUT)
        out.put(_exercise(obj))


def _exercise(obj):
    kind = type(obj).__name__
    if kind == "Lock":
        # The parent holds it: a second holder is refused, yet any process
        # may release a Lock.
        refused = obj.acquire(False)
        obj.release()
        taken = obj.acquire(False)
        obj.release()
        return (kind, refused, taken)
    if kind == "RLock":
        refused = obj.acquire(False)
        try:
            obj.release()
            raised = None
        except AssertionError:
            raised = "AssertionError"
        return (kind, refused, raised)
    if kind == "Semaphore":
        got = [obj.acquire(False) for _ in range(2)]
        return (kind, got, obj.get_value())
    if kind == "BoundedSemaphore":
        obj.acquire(timeout=CHILD_TIMEOUT)
        obj.release()
        try:
            obj.release()
            raised = None
        except ValueError:
            raised = "ValueError"
        return (kind, obj.get_value(), raised)
    if kind == "Event":
        was_set = obj.is_set()
        obj.clear()
        return (kind, was_set)
    return (kind, "unexpected kind")


# ------------------------------------------------------ crash-test children

def hold_until_killed(lock, depth, held, seed):
    """Take ``lock`` (``depth`` times for an RLock), say so, then keep busy
    holding it so that the kill lands at varied points: in a sleep, in
    Python code, or inside the lock's own methods."""
    rng = random.Random(seed)
    for _ in range(depth):
        _acquire_or_exit(lock)
    held.value = 1
    reentrant = type(lock).__name__ == "RLock"
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        r = rng.random()
        if r < 0.25:
            time.sleep(rng.uniform(0, 0.002))
        elif r < 0.5:
            sum(range(rng.randint(1, 5000)))
        elif r < 0.75 and reentrant:
            lock.acquire(timeout=CHILD_TIMEOUT)
            lock.release()
        else:
            lock.statistics()
    sys.exit(EXIT_RAN_TOO_LONG)


def fork_holder_with_child(lock):
    """os.fork() a process that takes ``lock``, forks a child of its own
    (which inherits its descriptors and just sleeps) and keeps the lock
    until killed.  Plain os.fork(), not multiprocessing: the grandchild
    would inherit a multiprocessing child's sentinel and keep it "running".
    Returns (holder pid, grandchild pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = EXIT_RAN_TOO_LONG
        try:
            os.close(r)
            if not lock.acquire(timeout=CHILD_TIMEOUT):
                code = EXIT_ACQUIRE_TIMED_OUT
            else:
                child = os.fork()
                if child:
                    os.write(w, b"%d\n" % child)
                time.sleep(CHILD_TIMEOUT)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline()
    if not line:
        raise AssertionError(f"the holder failed: {describe_exit(os.waitpid(pid, 0)[1] >> 8)}")
    return pid, int(line)


def churn_lock(lock, inside, holder, deaths_seen, stop, seed, timeout):
    """Take and release ``lock`` as fast as possible until told to stop.
    While it holds the lock, ``holder`` names this process's pid.

    Invariants checked on every acquisition:
    - ``owner_died`` is true exactly when an OwnerDiedWarning came with it;
    - if the previous holder did not die, nobody is inside the critical
      section (a holder that died may have left ``inside`` set; the one
      that inherits the lock repairs it, as real code would).
    """
    import interproc

    rng = random.Random(seed)
    reentrant = type(lock).__name__ == "RLock"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not stop.value:
            del caught[:]
            # Shorter than CHILD_TIMEOUT: a lock wedged by a kill must fail
            # the run quickly, not after every churner has waited 30 s.
            _acquire_or_exit(lock, timeout)
            died = lock.owner_died
            warned = any(issubclass(w.category, interproc.OwnerDiedWarning) for w in caught)
            if died != warned:
                sys.exit(EXIT_WARNING_MISMATCH)
            if died:
                deaths_seen.value += 1
                inside.value = 0
            elif inside.value:
                sys.exit(EXIT_EXCLUSION_BROKEN)
            inside.value = 1
            holder.value = os.getpid()
            if reentrant and rng.random() < 0.5:
                _acquire_or_exit(lock, timeout)
                lock.release()
            for _ in range(rng.randint(0, 3000)):
                pass
            holder.value = 0
            inside.value = 0
            lock.release()
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.0005))


def barrier_outcome(barrier, timeout):
    """One Barrier.wait(timeout): "passed" or "broken"."""
    import threading

    try:
        barrier.wait(timeout)
        return "passed"
    except threading.BrokenBarrierError:
        return "broken"


# ------------------------------------------------------ other PID namespaces

# Runs in a new PID namespace (and its own /proc): takes the object named
# argv[2] of kind argv[1], says "ready <pid>" and sleeps until killed, or,
# for a Barrier, says "ready" and waits at it, then says how that ended.
NAMESPACE_PARTY = r"""
import os, sys, time, threading, interproc
kind, name = sys.argv[1], sys.argv[2]
if kind == "Barrier":
    barrier = interproc.Barrier(int(sys.argv[3]), name=name, create=False)
    print("ready", os.getpid(), flush=True)
    try:
        barrier.wait(60)
        print("passed", flush=True)
    except threading.BrokenBarrierError:
        print("broken", flush=True)
    sys.exit(0)
if kind == "Value":
    lock = interproc.Value("i", name=name, create=False).get_lock()
else:
    lock = getattr(interproc, kind)(name=name, create=False)
depth = 2 if kind in ("RLock", "Condition", "Value") else 1
for _ in range(depth):
    if not lock.acquire(timeout=30):
        sys.exit(3)
print("ready", os.getpid(), flush=True)
time.sleep(120)
"""


def pid_namespace_unavailable():
    """Why another PID namespace (with its own /proc, sharing /dev/shm)
    cannot be made here, or None."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if r.returncode != 0:
        return f"unshare --pid is not permitted here: {r.stderr.decode(errors='replace').strip()}"
    return None


def _pid_free_here(lowest=1000):
    """A pid that no process of this namespace has, so that a pid check
    made from here would call its owner dead."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except OSError:
        pid_max = 32768
    rng = random.Random()
    for _ in range(1000):
        pid = rng.randrange(lowest, pid_max - 1)
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    return pid_max - 2


def start_in_pid_namespace(*args):
    """Run NAMESPACE_PARTY with ``args`` in a new PID namespace, as a pid
    that does not exist here; return (Popen, its pid there) once it said
    ready.  Killing the Popen (unshare) kills everything in the namespace."""
    import subprocess

    pid = _pid_free_here()
    script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "{sys.executable}" -c "$0" "$@"; true'
    p = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script,
         NAMESPACE_PARTY, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    if line[:1] != ["ready"]:
        p.kill()
        _, err = p.communicate(timeout=CHILD_TIMEOUT)
        raise AssertionError(f"the party in the other namespace did not start: {line} {err}")
    return p, int(line[1])
