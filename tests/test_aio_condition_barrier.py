"""Condition.wait_async / wait_for_async / ``async with`` and
Barrier.wait_async, across real processes, threads and coroutines, with
cancellation and kills; on asyncio's own loop and on uvloop."""

import asyncio
import random
import threading
import time

import pytest

import interproc
from interproc import _aio

import _aio_helpers as h
from _aio_fixtures import LATE, arun, rings_only  # noqa: F401  (fixtures)
from _helpers import CHILD_TIMEOUT, join_ok, kill_and_reap, start

LOCKS = [None, "Lock", "RLock"]


def make_condition(lock_kind):
    return interproc.Condition(None if lock_kind is None else getattr(interproc, lock_kind)())


def lock_is_free(cond):
    """Whether another thread can take the condition's lock at once."""
    got = []

    def try_it():
        got.append(cond.acquire(timeout=0.5))
        if got[0]:
            cond.release()

    t = threading.Thread(target=try_it)
    t.start()
    t.join()
    return got[0]


# -------------------------------------------------------------- Condition

@pytest.mark.parametrize("lock_kind", LOCKS)
def test_wait_async_is_woken_by_a_notify_in_another_process(lock_kind, start_method, arun):
    cond = make_condition(lock_kind)

    async def main():
        ticker = h.Ticker()
        async with cond:
            p = start(start_method, h.notify_later, cond, 0.3, 1)
            woken = await cond.wait_async(CHILD_TIMEOUT)
            held = cond._owner()._is_owned()
        ticker.task.cancel()
        join_ok(p)
        return woken, held, ticker.ticks

    woken, held, ticks = arun(main)
    assert woken and held
    assert ticks >= 3  # the loop ran while the coroutine waited
    assert lock_is_free(cond)


@pytest.mark.parametrize("lock_kind", LOCKS)
def test_wait_async_times_out_with_false_not_early_and_the_lock_held(lock_kind, arun):
    cond = make_condition(lock_kind)

    async def main():
        async with cond:
            t = time.monotonic()
            woken = await cond.wait_async(0.2)
            return woken, time.monotonic() - t, cond._owner()._is_owned()

    woken, took, held = arun(main)
    assert woken is False and held
    assert 0.2 <= took < 0.2 + LATE


def test_wait_async_gives_an_rlock_back_as_deep_as_it_was_held(arun):
    lock = interproc.RLock()
    cond = interproc.Condition(lock)

    async def main():
        await lock.acquire_async()
        await lock.acquire_async()
        assert await cond.wait_async(0.05) is False
        lock.release()
        assert lock._is_owned()  # one level left
        lock.release()
        with pytest.raises(AssertionError):
            lock.release()

    arun(main)
    assert lock_is_free(cond)


def test_wait_async_without_the_lock_raises(arun):
    cond = interproc.Condition()

    async def main():
        with pytest.raises(RuntimeError):
            await cond.wait_async(0.1)
        with pytest.raises(RuntimeError):
            cond.notify()

    arun(main)


def test_notify_wakes_the_oldest_and_notify_all_wakes_coroutines_threads_and_processes(
        start_method, arun):
    cond = interproc.Condition()
    out = interproc.Queue()

    def thread_waiter():
        with cond:
            out.put(("thread", cond.wait(CHILD_TIMEOUT)))

    async def waiter(i, registered):
        async with cond:
            registered.set()
            return await cond.wait_async(CHILD_TIMEOUT)

    async def main():
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(waiter(0, first))
        await first.wait()
        b = asyncio.create_task(waiter(1, second))
        await second.wait()
        async with cond:
            cond.notify(1)  # the oldest: a
        assert await a is True
        await asyncio.sleep(0.1)
        assert not b.done()
        t = threading.Thread(target=thread_waiter)
        t.start()
        p = start(start_method, h.async_cond_wait_forever, cond, interproc.Event())
        # Both registered once they stand among the condition's waiters.
        await h.until(lambda: cond.statistics()["condition_waiters"] >= 3)
        async with cond:
            cond.notify_all()
        assert await b is True
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        join_ok(p)
        return out.get(timeout=1)

    assert arun(main) == ("thread", True)


def test_wait_for_async_waits_for_the_predicate(start_method, arun):
    cond = interproc.Condition()
    flag = interproc.Value("i", 0)

    async def main():
        p = start(start_method, h.set_value_and_notify, cond, flag, 0.2)
        async with cond:
            got = await cond.wait_for_async(lambda: flag.value == 1, CHILD_TIMEOUT)
            timed_out = await cond.wait_for_async(lambda: flag.value == 2, 0.1)
        join_ok(p)
        return got, timed_out

    assert arun(main) == (True, False)


def test_a_cancelled_waiter_takes_the_lock_back_and_passes_its_notification_on(arun):
    """asyncio.Condition's rule: a waiter cancelled after it was notified
    does not swallow the notification."""
    cond = interproc.Condition()

    async def waiter(registered):
        async with cond:
            registered.set()
            woken = await cond.wait_async(CHILD_TIMEOUT)
            return woken, cond._is_owned()

    async def main():
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(waiter(first))
        await first.wait()
        b = asyncio.create_task(waiter(second))
        await second.wait()
        async with cond:
            cond.notify(1)  # to a ...
            await asyncio.sleep(0.05)
            a.cancel()  # ... cancelled while it waits to take the lock back
            await asyncio.sleep(0.05)
            assert not a.done()  # it cannot end without the lock, which we hold
        with pytest.raises(asyncio.CancelledError):
            await a
        return await b

    assert arun(main) == (True, True)
    assert lock_is_free(cond)
    assert cond.statistics()["condition_waiters"] == 0


def test_cancelling_waiters_at_random_points_leaves_nothing_behind(arun):
    cond = interproc.Condition(interproc.Lock())
    rng = random.Random(7)

    async def waiter():
        async with cond:
            await cond.wait_async(CHILD_TIMEOUT)

    async def notifier(stop):
        while not stop.is_set():
            async with cond:
                cond.notify(rng.randint(0, 2))
            await asyncio.sleep(0)

    async def main():
        stop = asyncio.Event()
        n = asyncio.create_task(notifier(stop))
        for _ in range(100):
            tasks = [asyncio.create_task(waiter()) for _ in range(3)]
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() / 500)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        await n

    arun(main)
    assert lock_is_free(cond)
    assert cond.statistics()["condition_waiters"] == 0


def test_a_waiter_killed_mid_await_does_not_swallow_a_notify(start_method, arun):
    cond = interproc.Condition()
    ready = interproc.Event()
    p = start(start_method, h.async_cond_wait_forever, cond, ready)
    assert ready.wait(CHILD_TIMEOUT)
    time.sleep(0.1)  # from setting ready to registering
    kill_and_reap(p)

    async def main():
        registered = asyncio.Event()

        async def waiter():
            async with cond:
                registered.set()
                return await cond.wait_async(CHILD_TIMEOUT)

        w = asyncio.create_task(waiter())
        await registered.wait()
        async with cond:
            cond.notify(1)  # the dead process is older, and passed over
        return await w

    assert arun(main) is True


def test_a_closed_condition_ends_its_awaiters_with_valueerror(arun):
    lock = interproc.Lock()
    cond = interproc.Condition(lock)

    async def main():
        async def waiter():
            async with cond:
                await cond.wait_async()

        w = asyncio.create_task(waiter())
        await h.until(lambda: cond.statistics()["condition_waiters"] >= 1)
        cond.close()
        with pytest.raises(ValueError):
            await w

    arun(main)


# ---------------------------------------------------------------- Barrier

def test_barrier_parties_of_every_kind_pass_together(start_method, arun):
    ran = interproc.Value("i", 0)
    barrier = interproc.Barrier(4, action=h.CountCalls(ran))
    out = interproc.Queue()

    async def main():
        ticker = h.Ticker()
        p = start(start_method, h.barrier_party, barrier, out)
        t = threading.Thread(target=h.barrier_party, args=(barrier, out))
        t.start()
        got = await asyncio.gather(barrier.wait_async(CHILD_TIMEOUT),
                                   barrier.wait_async(CHILD_TIMEOUT))
        ticker.task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        join_ok(p)
        return got + [out.get(timeout=1), out.get(timeout=1)], ticker.ticks

    indexes, ticks = arun(main)
    assert sorted(indexes) == [0, 1, 2, 3]
    assert ran.value == 1


def test_barrier_wait_async_twice_in_a_row(arun):
    barrier = interproc.Barrier(2)

    async def main():
        for _ in range(20):
            got = await asyncio.gather(barrier.wait_async(5), barrier.wait_async(5))
            assert sorted(got) == [0, 1]

    arun(main)


def test_barrier_timeout_breaks_it_for_everyone(start_method, arun):
    barrier = interproc.Barrier(3)
    out = interproc.Queue()

    async def main():
        p = start(start_method, h.barrier_party, barrier, out)
        await h.until(lambda: barrier.n_waiting >= 1)
        t = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            await barrier.wait_async(0.2)
        took = time.monotonic() - t
        join_ok(p)
        return took

    assert 0.2 <= arun(main) < 0.2 + LATE
    assert out.get(timeout=1) == "BrokenBarrierError"
    assert barrier.broken


def test_a_cancelled_party_breaks_the_barrier(arun):
    barrier = interproc.Barrier(3)

    async def main():
        other = asyncio.create_task(barrier.wait_async())
        await h.until(lambda: barrier.n_waiting >= 1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(barrier.wait_async(), 0.1)
        with pytest.raises(threading.BrokenBarrierError):
            await other

    arun(main)
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken and barrier.n_waiting == 0


def test_a_reset_breaks_the_waiting_generation(arun):
    barrier = interproc.Barrier(2)

    async def main():
        w = asyncio.create_task(barrier.wait_async())
        await h.until(lambda: barrier.n_waiting >= 1)
        barrier.reset()
        with pytest.raises(threading.BrokenBarrierError):
            await w

    arun(main)
    assert not barrier.broken


def test_a_party_killed_while_waiting_breaks_the_barrier_for_an_awaiting_one(
        start_method, arun, monkeypatch):
    """Nobody rings when a party dies: the waiters' tries at each sweep
    find the dead party."""
    monkeypatch.setattr(_aio, "SWEEP", 0.3)
    barrier = interproc.Barrier(3)
    ready = interproc.Event()
    p = start(start_method, h.barrier_party_then_hang, barrier, ready)
    assert ready.wait(CHILD_TIMEOUT)

    async def main():
        w = asyncio.create_task(barrier.wait_async())
        await h.until(lambda: barrier.n_waiting >= 2)
        kill_and_reap(p)
        t = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            await w
        return time.monotonic() - t

    assert arun(main) < 0.3 + LATE
