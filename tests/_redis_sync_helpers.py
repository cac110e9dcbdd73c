"""Child-process targets of the Redis queue and synchronization tests.

Module level, so that spawn and forkserver can import them by name.  Every
blocking call has a timeout, and a child that sees something wrong exits
with a code of its own, so a bug shows up as a failed child, not a hang.
"""

import os
import sys
import time
import warnings

CHILD_TIMEOUT = 30.0

EXIT_TIMED_OUT = 3
EXIT_EXCLUSION_BROKEN = 5
EXIT_WRONG = 6


def produce(q, tag, n):
    for i in range(n):
        q.put((tag, i))


def consume_and_finish(q, n, results):
    """Take n items from a JoinableQueue, mark each done, report them."""
    got = []
    for _ in range(n):
        got.append(q.get(timeout=CHILD_TIMEOUT))
        q.task_done()
    results.put_many(got)


def increment_under_lock(lock, counter_key, n, nested):
    """A read-modify-write of a Redis key that loses updates unless ``lock``
    excludes the other processes; a second key catches overlap directly."""
    client = lock._conn.client
    inside = counter_key + ":inside"
    for _ in range(n):
        if not lock.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_TIMED_OUT)
        if nested and not lock.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_TIMED_OUT)
        try:
            if client.incr(inside) != 1:
                sys.exit(EXIT_EXCLUSION_BROKEN)
            value = int(client.get(counter_key) or 0)
            time.sleep(0.0005)
            client.set(counter_key, value + 1)
            client.decr(inside)
        finally:
            if nested:
                lock.release()
            lock.release()


def hold_lock_forever(lock, started):
    """Take the lock, say so, and wait to be killed."""
    if not lock.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_TIMED_OUT)
    started.set()
    time.sleep(CHILD_TIMEOUT)
    sys.exit(EXIT_WRONG)


def try_release(lock):
    """Release a lock this process does not hold: must raise."""
    try:
        lock.release()
    except RuntimeError:
        sys.exit(0)
    sys.exit(EXIT_WRONG)


def take_lock_briefly(lock, result_q):
    """Report whether the lock could be taken within a short timeout."""
    got = lock.acquire(timeout=0.5)
    if got:
        lock.release()
    result_q.put(got)


def use_semaphore(sem, key, n):
    """Hold the semaphore n times; a Redis counter records the concurrency."""
    client = sem._conn.client
    for _ in range(n):
        if not sem.acquire(timeout=CHILD_TIMEOUT):
            sys.exit(EXIT_TIMED_OUT)
        try:
            now = client.incr(key)
            client.execute_command("EVAL", "local m = tonumber(redis.call('GET', KEYS[1]) or '0') "
                                   "if tonumber(ARGV[1]) > m then redis.call('SET', KEYS[1], ARGV[1]) end",
                                   1, key + ":max", now)
            time.sleep(0.002)
            client.decr(key)
        finally:
            sem.release()


def wait_event(event, ready, result_q):
    ready.put("waiting")
    t0 = time.monotonic()
    ok = event.wait(CHILD_TIMEOUT)
    result_q.put((ok, time.monotonic() - t0))


def wait_condition(cond, key, result_q):
    """Wait under ``cond`` until the Redis key is set, then report it."""
    client = cond._conn.client
    with cond:
        result_q.put("waiting")
        ok = cond.wait_for(lambda: client.get(key) is not None, CHILD_TIMEOUT)
        result_q.put(client.get(key) if ok else None)


def barrier_rounds(barrier, rounds, result_q):
    out = []
    for _ in range(rounds):
        out.append(barrier.wait(CHILD_TIMEOUT))
    result_q.put(out)


def barrier_expect_broken(barrier, result_q, timeout=CHILD_TIMEOUT):
    import threading

    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        result_q.put("broken")
        return
    result_q.put("passed")


def barrier_action():
    """An importable barrier action: counts its runs in Redis."""
    from interproc.backends.redis.client import Connection

    conn = Connection.from_url(os.environ["IP_TEST_REDIS_URL"])
    conn.client.incr(os.environ["IP_TEST_ACTION_KEY"])


def ignore_warnings():
    warnings.simplefilter("ignore")


def open_shut_down_queue(url, name, expected):
    """Open the queue `name` after its shutdown: it says so, refuses a put
    and hands out what is left, then ShutDown."""
    from interproc import ShutDown
    from interproc.backends.redis import queues as rq
    from interproc.backends.redis.client import Connection

    q = rq.Queue(Connection.from_url(url), name=name, create=False)
    if not q.is_shutdown:
        sys.exit(EXIT_WRONG)
    try:
        q.put("late")
        sys.exit(EXIT_WRONG)
    except ShutDown:
        pass
    got = []
    while True:
        try:
            got.append(q.get(timeout=CHILD_TIMEOUT))
        except ShutDown:
            break
    if got != expected:
        sys.exit(EXIT_WRONG)


def write_after_a_pause(obj, lock, ready, go, result_q):
    """Take ``lock``, read ``obj``, say so, wait for ``go`` (the test freezes
    this process meanwhile, past the lease), then write what was read plus
    one and release.  Reports the fencing token held and what each of the
    write and the release did."""
    from interproc.backends.redis import LeaseLostError

    warnings.simplefilter("ignore")
    if not lock.acquire(timeout=CHILD_TIMEOUT):
        sys.exit(EXIT_TIMED_OUT)
    value = obj.read()
    fence = getattr(lock, "fencing_token", None)  # so that a missing one shows as a wrong outcome
    ready.set()
    if not go.wait(CHILD_TIMEOUT):
        sys.exit(EXIT_TIMED_OUT)
    outcome = []
    try:
        obj.write(value + 1)
        outcome.append("wrote")
    except LeaseLostError:
        outcome.append("write refused")
    try:
        lock.release()
        outcome.append("released")
    except LeaseLostError:
        outcome.append("release refused")
    result_q.put((fence, outcome))


class DictSlot:
    """``d[key]`` as something to read and write (picklable)."""

    def __init__(self, d, key):
        self.d, self.key = d, key

    def read(self):
        return self.d[self.key]

    def write(self, value):
        self.d[self.key] = value


class ValueSlot:
    """A Redis Value's ``value``, read and written without its own lock."""

    def __init__(self, v):
        self.v = v

    def read(self):
        return self.v.get_obj().value

    def write(self, value):
        self.v.get_obj().value = value


def barrier_wait_by_name(url, name, parties, result_q):
    """Open the Barrier ``name`` on a connection that outlasts a stalled
    server (its socket timeout is longer than the stall), wait, report."""
    from interproc.backends.redis import synchronize as rs
    from interproc.backends.redis.client import Connection

    barrier = rs.Barrier(Connection.from_url(url, socket_timeout=CHILD_TIMEOUT), parties,
                         name=name, create=False)
    barrier_expect_broken(barrier, result_q)


def barrier_action_that_hangs():
    """An importable barrier action: says it started (a Redis key), then
    sleeps until the test kills its process."""
    from interproc.backends.redis.client import Connection

    conn = Connection.from_url(os.environ["IP_TEST_REDIS_URL"])
    conn.client.set(os.environ["IP_TEST_ACTION_KEY"], "running")
    time.sleep(CHILD_TIMEOUT)
