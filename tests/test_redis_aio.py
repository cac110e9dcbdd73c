"""The Redis backend's awaitable methods (``get_async``, ``acquire_async``,
``wait_async``...), on a real redis-server with real processes, on asyncio's
own loop and on uvloop when it is installed."""

import asyncio
import os
import queue
import random
import signal
import threading
import time

import pytest

import _aio_helpers as h
import _redis_aio_helpers as helpers
from _helpers import CHILD_TIMEOUT
from interproc.backends.redis import _aio
from interproc.backends.redis.queues import JoinableQueue, Queue, ShutDown, SimpleQueue
from interproc.backends.redis.synchronize import (Barrier, BoundedSemaphore, Condition, Event,
                                                   Lock, RLock, Semaphore)

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0


@pytest.fixture(params=h.LOOPS)
def arun(request):
    """Run a coroutine function to completion on a fresh loop of the kind."""
    return h.runner(request.param, TIMEOUT)


@pytest.fixture(params=["standalone", "cluster"])
def any_conn(request):
    """A backend Connection to the standalone server, or to the Redis Cluster."""
    from interproc.backends.redis.client import Connection

    if request.param == "standalone":
        return request.getfixturevalue("conn")
    return Connection.from_url(request.getfixturevalue("redis_cluster_url"))


async def _cancel_soon(task, i, rng):
    """Cancel ``task`` after i % 7 turns of the loop (odd i) or a random
    delay of up to 4 ms (even i)."""
    if i % 2:
        for _ in range(i % 7):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.random() * 0.004)
    task.cancel()


def _join(proc):
    proc.join(CHILD_TIMEOUT)
    assert proc.exitcode == 0, proc.exitcode


def _drain(q):
    out = []
    while True:
        try:
            out.append(q.get(timeout=0))
        except queue.Empty:
            return out


# ------------------------------------------------------------------ queues


def test_get_async_gets_what_another_process_puts_without_blocking_the_loop(
        start_method, conn, made, arun):
    q = Queue(conn)
    made.append(q)
    items = list(range(5))

    async def main():
        ticker = h.Ticker()
        child = start_method.Process(target=helpers.put_slowly, args=(q, items, 0.1))
        child.start()
        try:
            got = [await q.get_async(timeout=TIMEOUT) for _ in items]
        finally:
            await asyncio.get_running_loop().run_in_executor(None, _join, child)
        ticker.task.cancel()
        return got, ticker.ticks

    got, ticks = arun(main)
    assert got == items
    assert ticks >= 20  # the loop ran all along (0.5 s of puts, a tick every 10 ms)


def test_a_process_awaiting_gets_what_this_one_puts(conn, made):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    q = SimpleQueue(conn)
    made.append(q)
    ready, out = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=helpers.async_get_n, args=(q, ready, out, 3))
    child.start()
    assert ready.wait(CHILD_TIMEOUT)
    time.sleep(0.2)
    for x in "abc":
        q.put(x)
    assert out.get(timeout=CHILD_TIMEOUT) == ["a", "b", "c"]
    _join(child)


def test_timeouts_raise_what_the_blocking_forms_raise_and_never_early(conn, made, arun):
    q, full = Queue(conn), Queue(conn, 1)
    lock, sem, ev = Lock(conn), Semaphore(conn, 0), Event(conn)
    made.extend([q, full, lock, sem, ev])
    full.put(0)
    lock.acquire()

    async def main():
        results = []
        for what, aw, expect in [
                ("get", lambda: q.get_async(timeout=0.3), queue.Empty),
                ("get_many", lambda: q.get_many_async(timeout=0.3), queue.Empty),
                ("put", lambda: full.put_async(1, timeout=0.3), queue.Full),
                ("put_many", lambda: full.put_many_async([1, 2], timeout=0.3), queue.Full)]:
            t0 = time.monotonic()
            with pytest.raises(expect) as info:
                await aw()
            results.append((what, time.monotonic() - t0))
            if what == "put_many":
                assert info.value.count == 0
        for what, aw in [("acquire", lambda: lock.acquire_async(timeout=0.3)),
                         ("sem", lambda: sem.acquire_async(timeout=0.3)),
                         ("event", lambda: ev.wait_async(timeout=0.3))]:
            t0 = time.monotonic()
            assert await aw() is False
            results.append((what, time.monotonic() - t0))
        # A timeout of 0 (or less) tries once.
        with pytest.raises(queue.Empty):
            await q.get_async(timeout=0)
        assert await lock.acquire_async(timeout=-1) is False
        return results

    for what, took in arun(main):
        assert 0.3 <= took < 2.0, (what, took)
    lock.release()
    assert full.get_nowait() == 0 and q.empty()


def test_put_async_awaits_the_room_another_process_makes(start_method, conn, made, arun):
    q = Queue(conn, 1)
    made.append(q)
    q.put("first")
    out = start_method.Queue()

    async def main():
        child = start_method.Process(target=helpers.get_later, args=(q, 0.3, out))
        child.start()
        t0 = time.monotonic()
        await q.put_async("second", timeout=TIMEOUT)
        took = time.monotonic() - t0
        await asyncio.get_running_loop().run_in_executor(None, _join, child)
        return took

    assert arun(main) >= 0.2
    assert out.get(timeout=CHILD_TIMEOUT) == "first"
    assert q.get_nowait() == "second"


def test_put_many_async_says_how_many_went_in(conn, made, arun):
    q = Queue(conn, 3)
    made.append(q)

    async def main():
        with pytest.raises(queue.Full) as info:
            await q.put_many_async(range(5), timeout=0.2)
        assert info.value.count == 3
        task = asyncio.ensure_future(q.put_many_async(range(3, 8)))
        await asyncio.sleep(0.05)
        assert q.get_many(2) == [0, 1]  # room for 2 of the 5: they go in
        return await h.cancelled_count(task, 0.3)

    assert arun(main) == 2
    assert _drain(q) == [2, 3, 4]


def test_get_many_async_takes_what_is_there(conn, made, arun):
    q = Queue(conn)
    made.append(q)
    q.put_many(range(10))

    async def main():
        return (await q.get_many_async(4), await q.get_many_async(), await q.get_many_async(
            max_items=3, timeout=0.1) if not q.empty() else None)

    assert arun(main) == ([0, 1, 2, 3], [4, 5, 6, 7, 8, 9], None)


def test_shutdown_ends_awaiting_gets_and_puts(conn, made, arun):
    q, full = Queue(conn), Queue(conn, 1)
    made.extend([q, full])
    full.put(0)

    async def main():
        get = asyncio.ensure_future(q.get_async())
        put = asyncio.ensure_future(full.put_async(1))
        await asyncio.sleep(0.2)
        await asyncio.get_running_loop().run_in_executor(None, q.shutdown)
        await asyncio.get_running_loop().run_in_executor(None, full.shutdown)
        for t in (get, put):
            with pytest.raises(ShutDown):
                await t

    arun(main)


def test_join_async_waits_for_the_last_task_done_of_another_process(start_method, conn, made, arun):
    q = JoinableQueue(conn)
    made.append(q)
    q.put_many([1, 2])

    async def main():
        child = start_method.Process(target=helpers.task_done_later, args=(q, 2, 0.2))
        child.start()
        t0 = time.monotonic()
        await q.join_async()
        took = time.monotonic() - t0
        await asyncio.get_running_loop().run_in_executor(None, _join, child)
        return took

    assert arun(main) >= 0.3


def test_cancelled_gets_and_puts_lose_and_duplicate_nothing(any_conn, made, arun):
    """Gets and puts cancelled at many points (after 0..N turns of the
    loop, or a random delay) while producers and consumers race on a
    bounded queue: every item put is taken exactly once (standalone and
    Redis Cluster)."""
    q = Queue(any_conn, 4)
    made.append(q)
    rng = random.Random(1234)
    n = 150

    async def cancel_soon(aw, i):
        task = asyncio.ensure_future(aw)
        await _cancel_soon(task, i, rng)
        try:
            return "done", await task
        except asyncio.CancelledError as exc:
            return "cancelled", getattr(exc, "count", None)

    async def producer(put):
        for i in range(n):
            # put_many_async says how many went in even when cancelled
            state, count = await cancel_soon(q.put_many_async([i]), i)
            if state == "done" or count == 1:
                put.append(i)

    async def consumer(got, stop):
        i = 0
        while not stop.is_set():
            i += 1
            state, item = await cancel_soon(
                q.get_async() if i % 3 else q.get_many_async(2), i)
            if state == "done":
                got.extend(item if isinstance(item, list) else [item])

    async def main():
        put, got1, got2 = [], [], []
        stop = asyncio.Event()
        consumers = [asyncio.ensure_future(consumer(got1, stop)),
                     asyncio.ensure_future(consumer(got2, stop))]
        await producer(put)
        # Whatever is left is drained after the consumers stop.
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*consumers)
        return put, got1 + got2

    put, got = arun(main)
    got += _drain(q)
    assert sorted(got) == sorted(put)
    assert len(set(got)) == len(got)
    assert len(put) > 10 and len(got) > 10
    assert q.empty()


def test_a_consumer_killed_mid_await_loses_nothing(any_conn, made):
    """SIGKILL a process whose coroutines await an item and a lock, at
    random moments: the items put afterwards all arrive, the lock is
    free once its holder releases it (standalone and Redis Cluster)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    q, lock = Queue(any_conn), Lock(any_conn)
    made.extend([q, lock])
    rng = random.Random(7)
    for round_ in range(4):
        lock.acquire()
        ready = ctx.Event()
        child = ctx.Process(target=helpers.await_forever, args=(q, lock, ready))
        child.start()
        assert ready.wait(CHILD_TIMEOUT)
        time.sleep(rng.random() * 0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.join(CHILD_TIMEOUT)
        assert child.exitcode == -signal.SIGKILL
        q.put_many([round_, "x"])
        assert [q.get(timeout=5), q.get(timeout=5)] == [round_, "x"]
        lock.release()
        assert lock.acquire(timeout=5)
        lock.release()
    assert q.empty() and not lock.locked()


def test_a_thread_and_a_coroutine_share_a_queue(conn, made, arun):
    q = Queue(conn)
    made.append(q)
    n = 200
    from_thread = []

    def thread_consumer():
        while True:
            x = q.get(timeout=TIMEOUT)
            if x is None:
                return
            from_thread.append(x)

    async def main():
        t = threading.Thread(target=thread_consumer)
        t.start()
        got = []

        async def produce():
            for i in range(n):
                await q.put_async(i)
                if i % 20 == 0:
                    await asyncio.sleep(0.01)
            await q.put_many_async([None, None])

        prod = asyncio.ensure_future(produce())
        while True:
            x = await q.get_async(timeout=TIMEOUT)
            if x is None:
                break
            got.append(x)
        await prod
        await asyncio.get_running_loop().run_in_executor(None, t.join, TIMEOUT)
        return got

    got = arun(main)
    assert sorted(got + from_thread) == list(range(n))
    assert got  # the coroutine was served too


def test_closing_the_handle_ends_its_awaiters_with_valueerror(conn, made, arun):
    q, lock, ev = Queue(conn), Lock(conn), Event(conn)
    made.extend([q, lock, ev])
    lock.acquire()

    async def main():
        tasks = [asyncio.ensure_future(q.get_async()),
                 asyncio.ensure_future(lock.acquire_async()),
                 asyncio.ensure_future(ev.wait_async())]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        for h in (q, lock, ev):
            h.close()
        for t in tasks:
            with pytest.raises(ValueError, match="closed"):
                await t
        took = time.monotonic() - t0
        with pytest.raises(ValueError):
            await q.put_async(1)
        with pytest.raises(ValueError):
            await lock.acquire_async()
        return took

    assert arun(main) < 1.0


# ------------------------------------------------------------------ locks


def test_a_coroutine_a_thread_and_a_process_take_turns_on_one_lock(start_method, conn, made, arun):
    lock = Lock(conn)
    made.append(lock)
    held = start_method.Event()
    order = []

    def thread_waiter():
        with lock:
            order.append("thread")

    async def main():
        child = start_method.Process(target=helpers.hold_lock, args=(lock, held, 0.4))
        child.start()
        await asyncio.get_running_loop().run_in_executor(None, held.wait, CHILD_TIMEOUT)
        t = threading.Thread(target=thread_waiter)
        t.start()
        async with lock:
            assert lock.locked_by_me()
            order.append("coroutine")
        await asyncio.get_running_loop().run_in_executor(None, t.join, TIMEOUT)
        await asyncio.get_running_loop().run_in_executor(None, _join, child)

    arun(main)
    assert sorted(order) == ["coroutine", "thread"]
    assert not lock.locked()


def test_rlock_taken_with_acquire_async_belongs_to_the_task(conn, made, arun):
    r = RLock(conn)
    made.append(r)

    async def main():
        assert await r.acquire_async()
        assert await r.acquire_async(timeout=0)  # the same task again
        assert r.statistics()["recursion"] == 2

        async def other():
            return await r.acquire_async(timeout=0.2)

        assert await asyncio.ensure_future(other()) is False
        # Nor may the thread (outside the task) take it or release it.
        assert await asyncio.get_running_loop().run_in_executor(
            None, lambda: r.acquire(timeout=0.1)) is False
        r.release()
        async with r:
            assert r.statistics()["recursion"] == 2
        r.release()
        assert not r.locked()
        assert await asyncio.ensure_future(other()) is True
        with pytest.raises(RuntimeError):
            r.release()  # held by the other task, which ended holding it

    arun(main)


def test_cancelled_acquires_hold_nothing(conn, made, arun):
    """acquire_async cancelled at many points, while other tasks take and
    release the lock (or the semaphore's units): nothing stays held."""
    lock, rlock, sem = Lock(conn), RLock(conn), BoundedSemaphore(conn, 2)
    made.extend([lock, rlock, sem])
    rng = random.Random(99)

    async def hold(prim):
        # The lock belongs to the task that took it: this one releases it.
        assert await prim.acquire_async()
        try:
            await asyncio.sleep(rng.random() * 0.002)
        finally:
            prim.release()
        return 1

    async def churn(prim, i):
        task = asyncio.ensure_future(hold(prim))
        await _cancel_soon(task, i, rng)
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    async def main():
        taken = 0
        for prim in (lock, rlock, sem):
            for i in range(0, 60, 3):
                results = await asyncio.gather(churn(prim, i), churn(prim, i + 1),
                                               churn(prim, i + 2))
                taken += sum(results)
        return taken

    assert arun(main) > 0
    assert not lock.locked() and not rlock.locked()
    assert sem.get_value() == 2
    for prim in (lock, rlock, sem):
        assert prim.statistics()["waiters"] == 0


def test_semaphore_and_event_across_processes(start_method, conn, made, arun):
    sem, ev = Semaphore(conn, 0), Event(conn)
    made.extend([sem, ev])

    async def main():
        child = start_method.Process(target=helpers.set_later, args=(ev, 0.2))
        child.start()
        assert await ev.wait_async(timeout=TIMEOUT)
        await asyncio.get_running_loop().run_in_executor(None, _join, child)
        waiter = asyncio.ensure_future(sem.acquire_async(timeout=TIMEOUT))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await asyncio.get_running_loop().run_in_executor(None, sem.release)
        assert await waiter
        sem.release()
        async with sem:
            assert sem.get_value() == 0
        assert sem.get_value() == 1

    arun(main)


# ------------------------------------------------------------------ condition


def test_condition_wait_async_is_woken_by_another_process(start_method, conn, made, arun):
    cond = Condition(conn)
    made.append(cond)

    async def main():
        child = start_method.Process(target=helpers.notify_later, args=(cond, 0.3, 3))
        child.start()
        async with cond:
            t0 = time.monotonic()
            assert await cond.wait_async(timeout=TIMEOUT)
            took = time.monotonic() - t0
            assert cond._lock.locked_by_me()
            n = [0]

            def predicate():
                n[0] += 1
                return n[0] >= 3  # true after two more notifications

            assert await cond.wait_for_async(predicate, timeout=TIMEOUT)
        await asyncio.get_running_loop().run_in_executor(None, _join, child)
        return took

    assert arun(main) >= 0.2
    assert not cond._lock.locked()


def test_condition_wait_async_timeout_cancel_and_misuse(conn, made, arun):
    cond = Condition(conn)
    made.append(cond)

    async def main():
        with pytest.raises(RuntimeError):
            await cond.wait_async(0.1)  # the lock is not held
        async with cond:
            t0 = time.monotonic()
            assert await cond.wait_async(0.3) is False
            assert time.monotonic() - t0 >= 0.3
            assert await cond.wait_for_async(lambda: False, 0.2) is False
            assert cond._lock.locked_by_me()

        async def waiter():
            async with cond:
                await cond.wait_async()

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0.2)
        assert not cond._lock.locked()  # released while it waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # It took the lock back before the cancellation went on, and the
        # end of its ``async with`` released it.
        assert not cond._lock.locked()
        assert cond.statistics()["condition_waiters"] == 0

    arun(main)


def test_a_cancelled_condition_waiter_passes_its_notification_on(conn, made, arun):
    """notify(1) reaches the oldest of two waiting tasks, which is cancelled
    while the notifier still holds the lock: once it holds the lock again
    it passes the notification on, and the second waiter wakes."""
    cond = Condition(conn)
    made.append(cond)

    async def main():
        async def waiter(timeout):
            async with cond:
                return await cond.wait_async(timeout)

        first = asyncio.ensure_future(waiter(TIMEOUT))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(waiter(5.0))
        await asyncio.sleep(0.2)
        assert cond.statistics()["condition_waiters"] == 2
        async with cond:
            cond.notify(1)
            assert cond.statistics()["condition_waiters"] == 1  # the oldest was taken
            await asyncio.sleep(0.1)  # the first may be woken, or still in its BLPOP
            first.cancel()
            await asyncio.sleep(0.1)
        with pytest.raises(asyncio.CancelledError):
            await first
        t0 = time.monotonic()
        assert await second is True  # notified, not timed out
        assert time.monotonic() - t0 < 4.0
        assert not cond._lock.locked()
        assert cond.statistics()["condition_waiters"] == 0

    arun(main)


# ------------------------------------------------------------------ barrier


def test_barrier_wait_async_with_processes_and_tasks(conn, made, arun):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    b = Barrier(conn, 4)
    made.append(b)
    out = ctx.Queue()

    async def main():
        children = [ctx.Process(target=helpers.pass_barrier, args=(b, out)) for _ in range(2)]
        for c in children:
            c.start()
        mine = await asyncio.gather(b.wait_async(TIMEOUT), b.wait_async(TIMEOUT))
        for c in children:
            await asyncio.get_running_loop().run_in_executor(None, _join, c)
        return list(mine)

    mine = arun(main)
    theirs = [out.get(timeout=CHILD_TIMEOUT) for _ in range(2)]
    assert sorted(mine + theirs) == [0, 1, 2, 3]


def test_barrier_wait_async_timeout_and_cancel_break_it(conn, made, arun):
    import threading as _threading

    b = Barrier(conn, 3)
    made.append(b)

    async def main():
        t0 = time.monotonic()
        with pytest.raises(_threading.BrokenBarrierError):
            await b.wait_async(0.3)
        assert time.monotonic() - t0 >= 0.3
        assert b.broken
        b.reset()
        other = asyncio.ensure_future(b.wait_async(TIMEOUT))
        cancelled = asyncio.ensure_future(b.wait_async(TIMEOUT))
        await asyncio.sleep(0.2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        with pytest.raises(_threading.BrokenBarrierError):
            await other
        b.reset()
        # An action runs once, in the last party.
        ran = []
        b2 = Barrier(conn, 2, action=lambda: ran.append(1))
        made.append(b2)
        assert sorted(await asyncio.gather(b2.wait_async(TIMEOUT), b2.wait_async(TIMEOUT))) == [0, 1]
        assert ran == [1]

    arun(main)


# ------------------------------------------------------------------ clients


def test_one_async_client_per_connection_and_loop(conn, made):
    q = Queue(conn)
    made.append(q)

    async def client_of():
        await q.put_async(1)
        assert await q.get_async() == 1
        return _aio.client(conn), _aio.client(conn)

    def connected():
        return {c["id"] for c in conn.client.client_list()}

    before = connected()
    a1, a2 = asyncio.run(client_of())
    # The loop's client was closed with the loop: its connection is gone.
    for _ in range(100):
        if connected() <= before:
            break
        time.sleep(0.01)
    assert connected() <= before
    b1, _ = asyncio.run(client_of())
    assert a1 is a2 and a1 is not b1
    # Closed loops' clients are forgotten at the next use.
    asyncio.run(client_of())
    assert len(conn._aio_clients[1]) <= 1
    conn.close()
    assert "_aio_clients" not in conn.__dict__


def test_redis_cluster(redis_cluster_url):
    from interproc.backends.redis.client import Connection

    cconn = Connection.from_url(redis_cluster_url)
    q, lock, ev = Queue(cconn, 2), Lock(cconn), Event(cconn)
    try:
        async def main():
            await q.put_many_async([1, 2])
            with pytest.raises(queue.Full):
                await q.put_async(3, timeout=0.2)
            assert await q.get_many_async() == [1, 2]
            getter = asyncio.ensure_future(q.get_async(timeout=TIMEOUT))
            await asyncio.sleep(0.1)
            await q.put_async("x")
            assert await getter == "x"
            async with lock:
                assert lock.locked()
            assert await ev.wait_async(0.1) is False

        asyncio.run(main())
    finally:
        for h in (q, lock, ev):
            h._destroy()


# ------------------------------------------------------- containers' lock


def test_containers_lock_held_by_a_task(start_method, conn, made, arun):
    """``async with d.lock``: the task's own operations run as the holder's;
    a plain operation from another task of the loop raises RuntimeError
    instead of blocking the loop; a process waits for the lock, and
    read-modify-writes of both under it lose no increment."""
    from interproc.backends.redis.containers import RedisDict, RedisList, RedisSet

    d, lst, st = RedisDict(conn), RedisList(conn), RedisSet(conn)
    made.extend([d, lst, st])
    d["n"] = 0
    n = 15

    async def main():
        async with lst.lock, st.lock:
            lst.append(1)
            st.add("a")
            assert lst[0] == 1 and "a" in st

        async def other_task():
            d["other"] = 1

        async def other_task_locking():
            with d.lock:
                d["other"] = 2

        async with d.lock:
            d["k"] = "v"
            assert d["k"] == "v"
            with d.lock:  # the blocking form, in the holding task: a re-entry
                d["k2"] = "v2"
            # Another thread is not the loop's: it is told the lock is taken.
            assert await asyncio.to_thread(d.lock.acquire, False) is False
            with pytest.raises(RuntimeError, match="held by another task of this event loop"):
                await asyncio.wait_for(asyncio.create_task(other_task_locking()), 5)
            # A task of its own: wait_for runs a coroutine in the caller's
            # task on Python 3.12 and later.
            with pytest.raises(RuntimeError, match="held by another task of this event loop"):
                await asyncio.wait_for(asyncio.create_task(other_task()), 5)
        assert "other" not in d
        await other_task()  # free again: it just runs
        assert d["other"] == 1

        child = start_method.Process(target=helpers.increment_under_lock,
                                     args=(d, "n", n, 0.005))
        child.start()
        try:
            while d["n"] == 0:  # the child has begun: the two interleave
                await asyncio.sleep(0.005)
            for _ in range(n):
                async with d.lock:
                    v = d["n"]
                    await asyncio.sleep(0.005)
                    d["n"] = v + 1
        finally:
            await asyncio.get_running_loop().run_in_executor(None, _join, child)

    arun(main)
    assert d["n"] == 2 * n


# ------------------------------------------------- TLS and Sentinel servers


def test_tls_connections(redis_tls_server):
    """``rediss://``: the awaitable methods speak TLS with the connection's
    options, and the server's certificate is checked as the blocking
    client checks it."""
    import redis

    from interproc.backends.redis.client import Connection

    ca = redis_tls_server.tls_files["ca"]
    tconn = Connection.from_url(redis_tls_server.tls_url, ssl_ca_certs=ca)
    q, lock = Queue(tconn), Lock(tconn)
    try:
        async def main():
            await q.put_many_async([1, 2])
            assert await q.get_many_async() == [1, 2]
            getter = asyncio.ensure_future(q.get_async(timeout=TIMEOUT))
            await asyncio.sleep(0.1)
            q.put("x")
            assert await getter == "x"
            async with lock:
                assert lock.locked()

        asyncio.run(main())
        unchecked = Connection.from_url(redis_tls_server.tls_url, cluster=False)

        async def refused():
            # The loop's client of a connection without the CA refuses the server.
            with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await _aio.client(unchecked).ping()

        asyncio.run(refused())
    finally:
        q._destroy()
        lock._destroy()


def test_sentinel_master_is_found_and_followed_after_failover(private_redis, tmp_path):
    """``redis+sentinel://``: the awaitable methods ask the Sentinel for the
    master, and once it has promoted the replica of a killed master the
    same handles go on against the new one; with ``replicas=1`` what
    returned is there, and a write that now lacks its replica raises
    ReplicationError."""
    from interproc.backends.redis import local_server
    from interproc.backends.redis.client import Connection
    from interproc.backends.redis.errors import (ConnectionLostError, ReplicationError,
                                                 ServerTimeoutError, UnreachableError)

    master, replica = private_redis(), private_redis()
    replica.replicate(master)
    with local_server.RedisSentinel(str(tmp_path / "sentinel"), master) as sentinel:
        sconn = Connection.from_url(sentinel.url, replicas=1, replica_timeout=0.5)
        q, lock = Queue(sconn), Lock(sconn)

        def promoted():
            reply = local_server._commands(("127.0.0.1", sentinel.port), (
                "SENTINEL", "get-master-addr-by-name", sentinel.service), timeout=1.0)[0]
            return str(replica.port).encode() in reply

        async def main():
            await q.put_many_async(list(range(5)))
            async with lock:
                assert lock.locked()
            assert await q.get_async(timeout=2) == 0
            master.kill()
            deadline = time.monotonic() + 20
            while not promoted():
                assert time.monotonic() < deadline, "Sentinel promoted no replica"
                await asyncio.sleep(0.05)
            while True:  # the first calls may still reach for the dead master
                try:
                    first = await q.get_async(timeout=2)
                    break
                except (ConnectionLostError, UnreachableError, ServerTimeoutError):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert [first] + await q.get_many_async(timeout=2) == [1, 2, 3, 4]
            with pytest.raises(ReplicationError, match="only 0 of the 1 replica"):
                await q.put_async("unreplicated")
            assert await q.get_async(timeout=2) == "unreplicated"  # done all the same

        asyncio.run(main())
