"""Child targets of the asyncio tests (module level: spawn and forkserver
import them by name).  Every wait has a timeout, so that a bug fails the
child instead of hanging the test."""

import asyncio
import queue
import time

from _helpers import CHILD_TIMEOUT


def run(coro_fn, *args):
    """``asyncio.run`` with a timeout on the whole coroutine."""
    async def bounded():
        return await asyncio.wait_for(coro_fn(*args), CHILD_TIMEOUT)

    return asyncio.run(bounded())


def async_get_n(q, ready, out, n):
    """Await n items with get_async, while a ticker shows that the loop
    keeps running; report (items, ticks)."""
    async def main():
        ticker = Ticker()
        ready.set()
        got = [await q.get_async() for _ in range(n)]
        ticker.task.cancel()
        out.put((got, ticker.ticks))

    run(main)


def put_slowly(q, items, pause):
    for x in items:
        q.put(x)
        time.sleep(pause)


try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

#: The event loops the asyncio tests run on.
LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


def runner(kind, timeout):
    """A function that runs a coroutine function to completion, within
    ``timeout`` seconds, on a fresh loop of ``kind`` (one of LOOPS): the
    body of the tests' ``arun`` fixtures."""
    factory = asyncio.new_event_loop if kind == "asyncio" else uvloop.new_event_loop

    def run(coro_fn, *args):
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(coro_fn(*args), timeout))

    return run


async def cancelled_count(task, delay):
    """Cancel ``task`` after ``delay`` seconds; the ``.count`` of the
    CancelledError it then raises (AssertionError if it does not)."""
    await asyncio.sleep(delay)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as exc:
        return exc.count
    raise AssertionError(f"{task!r} was not cancelled")


async def until(predicate):
    """Await, turn by turn of 10 ms, until ``predicate()`` is true: for a
    test to see a waiter registered before it acts (the test's own timeout
    bounds it)."""
    while not predicate():
        await asyncio.sleep(0.01)


class Ticker:
    """A task that counts the loop's turns: proof that it keeps running."""

    def __init__(self):
        self.ticks = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1


def put_later(q, items, delay):
    time.sleep(delay)
    for x in items:
        q.put(x)


def async_wait_forever(q, which, ready):
    """Register a bell on the queue (a get_async that waits), say so, and
    wait until killed."""
    async def main():
        if which == "get":
            task = asyncio.create_task(q.get_async())
        else:
            task = asyncio.create_task(q.put_async("blocked"))
        await asyncio.sleep(0.05)  # the task is now awaiting its bell
        ready.set()
        await task

    run(main)


def async_acquire_and_report(lock, ready, out):
    async def main():
        ready.set()
        t0 = time.monotonic()
        async with lock:
            out.put(time.monotonic() - t0)

    run(main)


def hold_then_release(lock, ready, seconds, released_at=None):
    """Hold ``lock`` for ``seconds`` after setting ``ready``; with
    ``released_at`` (a shared double), store ``time.monotonic()`` (one
    clock for every process) just before letting go."""
    with lock:
        ready.set()
        time.sleep(seconds)
        if released_at is not None:
            released_at.value = time.monotonic()


def set_later(ev, delay):
    time.sleep(delay)
    ev.set()


def release_later(sem, delay, n):
    time.sleep(delay)
    for _ in range(n):
        sem.release()


def finish_tasks_later(q, n, delay):
    for _ in range(n):
        q.get(timeout=CHILD_TIMEOUT)
    time.sleep(delay)
    for _ in range(n):
        q.task_done()


def sync_get_n(q, out, n):
    got = []
    for _ in range(n):
        try:
            got.append(q.get(timeout=CHILD_TIMEOUT))
        except queue.Empty:
            break
    out.put(got)


def send_slowly(conn, items, pause):
    for x in items:
        conn.send(x)
        time.sleep(pause)
    conn.send_bytes(b"raw bytes")


def sleep_forever(conn, ready):
    ready.set()
    time.sleep(CHILD_TIMEOUT)


def notify_later(cond, delay, n):
    """Notify ``cond`` once, ``delay`` seconds from now, waking up to n."""
    time.sleep(delay)
    with cond:
        cond.notify(n)


def set_value_and_notify(cond, value, delay):
    time.sleep(delay)
    with cond:
        value.value = 1
        cond.notify_all()


def async_cond_wait_forever(cond, ready):
    """Await a notification that never comes, having said so."""
    async def main():
        async with cond:
            ready.set()
            await cond.wait_async()

    run(main)


def barrier_party(barrier, out):
    try:
        out.put(barrier.wait(CHILD_TIMEOUT))
    except Exception as exc:  # BrokenBarrierError: reported, not raised
        out.put(type(exc).__name__)


def barrier_party_then_hang(barrier, ready):
    """Arrive in a barrier of more parties than will come, and wait."""
    ready.set()
    barrier.wait()


def add_under_the_lock(d, n, pause):
    """Read, pause, write, n times, under the container's lock: increments
    that only the lock keeps from being lost."""
    for _ in range(n):
        with d.lock:
            v = d["n"]
            time.sleep(pause)
            d["n"] = v + 1


def hold_container_lock(d, ready, seconds):
    with d.lock:
        ready.set()
        time.sleep(seconds)


def die_holding_container_lock(d, ready, delay):
    import os
    import signal

    d.lock.acquire()
    d["done"] = 1
    ready.set()
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


class CountCalls:
    """A barrier action that counts its calls in shared memory (picklable,
    so that spawned parties get it too)."""

    def __init__(self, counter):
        self.counter = counter

    def __call__(self):
        with self.counter.get_lock():
            self.counter.value += 1
