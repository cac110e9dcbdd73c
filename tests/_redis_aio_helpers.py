"""Child targets of the Redis asyncio tests (module level: spawn and
forkserver import them by name).  Every wait has a timeout, so that a bug
fails the child instead of hanging the test."""

import asyncio
import time

from _aio_helpers import run
from _helpers import CHILD_TIMEOUT


def put_slowly(q, items, pause):
    """Put ``items`` one by one, ``pause`` seconds apart."""
    for x in items:
        time.sleep(pause)
        q.put(x)


def async_get_n(q, ready, out, n):
    """Await n items with get_async; report them through ``out``."""
    async def main():
        ready.set()
        return [await q.get_async(timeout=CHILD_TIMEOUT) for _ in range(n)]

    out.put(run(main))


def await_forever(q, lock, ready):
    """Await an item and the lock (which the parent holds), until killed."""
    async def main():
        ready.set()
        await asyncio.gather(q.get_async(), lock.acquire_async())

    run(main)


def hold_lock(lock, held, seconds):
    """Take the lock, say so, hold it ``seconds``, release it."""
    with lock:
        held.set()
        time.sleep(seconds)


def get_later(q, pause, out):
    """Take one item after ``pause`` seconds; report it."""
    time.sleep(pause)
    out.put(q.get(timeout=CHILD_TIMEOUT))


def task_done_later(q, n, pause):
    """Take n items and mark them done, ``pause`` seconds apart."""
    for _ in range(n):
        q.get(timeout=CHILD_TIMEOUT)
        time.sleep(pause)
        q.task_done()


def set_later(event, pause):
    time.sleep(pause)
    event.set()


def notify_later(cond, pause, n):
    """Notify the condition ``n`` times, ``pause`` seconds apart."""
    for _ in range(n):
        time.sleep(pause)
        with cond:
            cond.notify_all()


def pass_barrier(barrier, out):
    """Wait at the barrier; report the arrival index (or the error's name)."""
    try:
        out.put(barrier.wait(CHILD_TIMEOUT))
    except Exception as exc:
        out.put(type(exc).__name__)


def increment_under_lock(d, key, n, pause):
    """``d[key] += 1`` n times, each under ``with d.lock``, ``pause``
    seconds between the read and the write."""
    for _ in range(n):
        with d.lock:
            v = d[key]
            time.sleep(pause)
            d[key] = v + 1
