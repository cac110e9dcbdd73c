"""``async with d.lock`` / ``d.lock.acquire_async()`` on the shared
containers, across real processes, with other tasks, cancellation and a
holder killed; on asyncio's own loop and on uvloop."""

import asyncio
import time

import pytest

import interproc
from interproc import _aio

import _aio_helpers as h
from _aio_fixtures import LATE, arun, rings_only  # noqa: F401  (fixtures)
from _helpers import CHILD_TIMEOUT, join_ok, start


def test_async_with_the_lock_makes_compound_updates_atomic_beside_processes(start_method, arun):
    d = interproc.SharedDict()
    d["n"] = 0

    async def main():
        ticker = h.Ticker()
        procs = [start(start_method, h.add_under_the_lock, d, 20, 0.002) for _ in range(2)]
        for _ in range(20):
            async with d.lock:
                v = d["n"]
                await asyncio.sleep(0.002)  # other processes must wait, not the loop
                d["n"] = v + 1
        ticker.task.cancel()
        join_ok(*procs)
        return ticker.ticks

    assert arun(main) >= 3
    assert d["n"] == 60


def test_another_task_awaits_the_lock_and_may_not_block_on_it(arun):
    lst = interproc.SharedList()

    async def main():
        order = []

        async def other():
            with pytest.raises(RuntimeError, match="another task"):
                lst.append("not now")  # it would wait for ever on its own loop
            with pytest.raises(RuntimeError, match="another task"):
                lst.lock.acquire()
            with pytest.raises(RuntimeError, match="another task"):
                with lst.lock:
                    pass
            async with lst.lock:
                order.append("other")

        async with lst.lock:
            lst.append(1)  # the holder's own operations enter
            with lst.lock:  # and so does its blocking form, as a re-entry
                lst.append(2)
            task = asyncio.create_task(other())
            await asyncio.sleep(0.05)
            assert not task.done()
            order.append("holder")
            assert lst.lock.locked_by_me()
        await task
        return order

    assert arun(main) == ["holder", "other"]
    assert list(lst) == [1, 2]


def held_by_a_process(start_method, seconds):
    """A dict whose lock a child process holds for ``seconds``; the child."""
    d = interproc.SharedDict()
    ready = interproc.Event()
    p = start(start_method, h.hold_container_lock, d, ready, seconds)
    assert ready.wait(CHILD_TIMEOUT)
    return d, p


def test_acquire_async_waits_for_a_process_that_holds_it_and_times_out(start_method, arun):
    d, p = held_by_a_process(start_method, 0.5)

    async def main():
        t = time.monotonic()
        first = await d.lock.acquire_async(0.1)
        timed_out_after = time.monotonic() - t
        second = await d.lock.acquire_async(CHILD_TIMEOUT)
        d.lock.release()
        return first, timed_out_after, second

    first, took, second = arun(main)
    join_ok(p)
    assert first is False and second is True
    assert 0.1 <= took < 0.1 + LATE


def test_a_cancelled_acquire_async_holds_nothing(start_method, arun):
    d, p = held_by_a_process(start_method, 0.3)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(d.lock.acquire_async(), 0.05)
        assert not d.lock.locked_by_me()

    arun(main)
    join_ok(p)
    assert d.lock.acquire(timeout=CHILD_TIMEOUT)
    d.lock.release()


def test_a_holder_killed_is_taken_over_by_an_awaiting_task(start_method, arun, monkeypatch):
    """A robust mutex's holder that dies rings nobody: the waiters' tries
    at each sweep take it over."""
    monkeypatch.setattr(_aio, "SWEEP", 0.3)
    d = interproc.SharedDict()
    ready = interproc.Event()
    p = start(start_method, h.die_holding_container_lock, d, ready, 0.2)
    assert ready.wait(CHILD_TIMEOUT)

    async def main():
        async with d.lock:
            return dict(d)

    assert arun(main) == {"done": 1}
    p.join(CHILD_TIMEOUT)
