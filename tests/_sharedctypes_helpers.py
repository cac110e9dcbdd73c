"""Child-process targets and types for the shared ctypes tests.

They live at module level, in a module of their own, because spawn and
forkserver children import targets and ctypes types by reference: a
Structure defined inside a test function could not be rebuilt there.  Every
blocking call has a timeout, and a child that sees something wrong exits
with a code of its own, so a bug shows up as a failed child, not a hang.
"""

import ctypes
import os
import sys
import time

import _helpers
from _helpers import CHILD_TIMEOUT

EXIT_ACQUIRE_TIMED_OUT = 3
EXIT_WRONG_VALUE = 4
EXIT_LOCK_NOT_SHARED = 5
EXIT_RAN_TOO_LONG = 6

EXIT_MEANINGS = {
    EXIT_ACQUIRE_TIMED_OUT: "acquire() timed out",
    EXIT_WRONG_VALUE: "saw a value other than the one shared",
    EXIT_LOCK_NOT_SHARED: "could take a lock another process holds",
    EXIT_RAN_TOO_LONG: "was not killed in time",
}


def describe_exit(code):
    """A child's exit code in words, with the meanings above."""
    return _helpers.describe_exit(code, EXIT_MEANINGS)


class Point3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double), ("tag", ctypes.c_char * 4)]


def _acquire_or_exit(lock):
    if not lock.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)


# ------------------------------------------------------------ plain use

def double_everything(v, a, raw_v, raw_a, point):
    """Read what the parent wrote and write back something derived from it."""
    with v.get_lock():
        v.value = v.value * 2
    with a.get_lock():
        for i in range(len(a)):
            a[i] = a[i] * 10
    raw_v.value = raw_v.value * 2
    raw_a[:] = [x + 1 for x in raw_a[:]]
    with point.get_lock():
        point.x = point.x * 2
        point.y = point.y * 2
        point.tag = b"kid"


def _ready_set_go(ready, start):
    # Spawned children come up tens of milliseconds apart, longer than a
    # whole run of increments: without a common start they would not overlap.
    ready.put(os.getpid())
    if not start.wait(CHILD_TIMEOUT):
        sys.exit(EXIT_ACQUIRE_TIMED_OUT)


def locked_increments(v, a, n, ready, start):
    """``value += 1`` loses updates unless the lock excludes the others;
    the nested acquisition checks that the default lock is reentrant."""
    _ready_set_go(ready, start)
    lock = v.get_lock()
    for i in range(n):
        _acquire_or_exit(lock)
        try:
            with v.get_lock():
                v.value += 1
            if i % 32 == 0:
                os.sched_yield()
        finally:
            lock.release()
        with a.get_lock():
            a[0] += 1
            a[1] -= 1


def atomic_increments(counter, cas_counter, wrapping, n, ready, start):
    """fetch_add and a compare_exchange retry loop; neither takes a lock, so
    only the atomicity of the operations keeps the totals exact."""
    _ready_set_go(ready, start)
    for _ in range(n):
        counter.fetch_add()
        wrapping.fetch_sub(3)
        seen = cas_counter.load()
        while True:
            ok, seen = cas_counter.compare_exchange(seen, seen + 1)
            if ok:
                break


def from_queue_add(q, out, n):
    """Receive a Value and an Array through a queue after start-up (so not
    while being spawned), update them under their locks, and report."""
    v = q.get(timeout=CHILD_TIMEOUT)
    a = q.get(timeout=CHILD_TIMEOUT)
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    with a.get_lock():
        a[:] = [x * 3 for x in a[:]]
    out.put(("done", v.value, a[:]))
    # Anonymous objects sent back are reopened through this process, so it
    # stays alive until the parent acknowledges having unpickled them.
    out.put((v, a))
    q.get(timeout=CHILD_TIMEOUT)


def probe_lock(v, out, release):
    """Report whether the parent's hold on ``v.get_lock()`` is seen here,
    then whether the lock can be taken once the parent lets go."""
    lock = v.get_lock()
    out.put(("while-held", lock.acquire(timeout=0.2)))
    release.get(timeout=CHILD_TIMEOUT)
    ok = lock.acquire(timeout=CHILD_TIMEOUT)
    if ok:
        v.value = os.getpid()
        lock.release()
    out.put(("after-release", ok))


def attach_and_increment(name, n, expect_len):
    import interproc

    obj = interproc.attach(name)
    for _ in range(n):
        with obj.get_lock():
            if expect_len is None:
                obj.value += 1
            else:
                if len(obj) != expect_len:
                    sys.exit(EXIT_WRONG_VALUE)
                obj[0] += 1


def open_by_name_and_set(name, value):
    """Opening an existing name must ignore the initial value given here."""
    import interproc

    v = interproc.Value("q", -1, name=name, create=False)
    with v.get_lock():
        v.value += value


# ------------------------------------------------------------ crashes

def hold_until_killed(v, depth, held):
    """Take ``v``'s lock ``depth`` times, change the value, say so, and wait
    to be killed while holding it."""
    lock = v.get_lock()
    for _ in range(depth):
        _acquire_or_exit(lock)
    v.value += 1
    held.value = 1
    time.sleep(CHILD_TIMEOUT)
    sys.exit(EXIT_RAN_TOO_LONG)


# ------------------------------------------------------------ numpy

def scale_ndarray(a, factor):
    import interproc

    arr = interproc.as_ndarray(a)
    arr *= factor
