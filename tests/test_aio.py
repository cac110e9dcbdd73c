"""The awaitable methods of the shared-memory objects: get_async, put_async,
acquire_async, wait_async, join_async and ``async with``, across real
processes, under every start method, with cancellation and kills; on
asyncio's own loop and on uvloop when it is installed."""

import asyncio
import os
import pickle
import queue
import random
import signal
import threading
import time

import pytest

import interproc
from interproc import _aio

import _aio_helpers as h
from _helpers import (CHILD_TIMEOUT, TIMEOUT, consume_until_none, cpu_seconds, join_ok,
                      kill_and_reap, start)

from _aio_fixtures import LATE, arun, rings_only  # noqa: F401  (fixtures)


# ------------------------------------------------------------------ Queue

def test_get_async_waits_for_another_process_without_blocking_the_loop(start_method, arun):
    q = interproc.Queue()

    async def main():
        ticker = h.Ticker()
        p = start(start_method, h.put_later, q, [1, 2, 3], 0.3)
        got = [await q.get_async() for _ in range(3)]
        ticker.task.cancel()
        join_ok(p)
        return got, ticker.ticks

    got, ticks = arun(main)
    assert got == [1, 2, 3]
    assert ticks >= 3  # the loop ran while get_async waited


def test_a_process_awaiting_gets_what_processes_put(start_method):
    q, out, ready = interproc.Queue(), interproc.Queue(), interproc.Event()
    p = start(start_method, h.async_get_n, q, ready, out, 20)
    assert ready.wait(CHILD_TIMEOUT)
    time.sleep(0.1)
    for i in range(20):
        q.put(i)
        if i % 5 == 0:
            time.sleep(0.02)  # some arrive while it sleeps, some while it runs
    got, ticks = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert got == list(range(20))


def test_get_async_timeout_raises_empty_not_early(arun):
    q = interproc.Queue()

    async def main():
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            await q.get_async(timeout=0.2)
        return time.monotonic() - t0

    elapsed = arun(main)
    assert 0.2 <= elapsed < 0.2 + LATE


def test_get_async_with_items_present_does_not_wait(arun):
    q = interproc.Queue()
    q.put_many(range(5))

    async def main():
        return [await q.get_async(timeout=0) for _ in range(5)]

    assert arun(main) == list(range(5))
    with pytest.raises(queue.Empty):
        arun(lambda: q.get_async(timeout=0))


def test_get_many_async_takes_what_is_there_at_most_max_items(start_method, arun):
    q = interproc.Queue()

    async def main():
        p = start(start_method, h.put_later, q, list(range(10)), 0.2)
        join_ok(p)
        first = await q.get_many_async(4)
        rest = await q.get_many_async()
        return first, rest

    assert arun(main) == ([0, 1, 2, 3], list(range(4, 10)))
    with pytest.raises(ValueError):
        arun(lambda: q.get_many_async(0))


class CountsPickles:
    pickled = 0

    def __reduce__(self):
        CountsPickles.pickled += 1
        return (CountsPickles, ())


def test_put_async_on_a_full_queue_awaits_room_and_pickles_once(start_method, arun):
    q = interproc.Queue(maxsize=2)
    q.put_many([1, 2])
    out = interproc.Queue()
    CountsPickles.pickled = 0

    async def main():
        p = start(start_method, h.sync_get_n, q, out, 3)
        await q.put_async(CountsPickles())
        got = out.get(timeout=TIMEOUT)
        join_ok(p)
        return got

    got = arun(main)
    assert got[:2] == [1, 2] and isinstance(got[2], CountsPickles)
    assert CountsPickles.pickled == 1


def test_put_async_timeout_raises_full_and_puts_nothing(arun):
    q = interproc.Queue(maxsize=1)
    q.put("x")

    async def main():
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            await q.put_async("y", timeout=0.15)
        return time.monotonic() - t0

    elapsed = arun(main)
    assert 0.15 <= elapsed < 0.15 + LATE
    assert q.qsize() == 1 and q.get_nowait() == "x"


def test_put_many_async_counts_what_went_in(arun):
    q = interproc.Queue(maxsize=3)

    async def main():
        with pytest.raises(queue.Full) as info:
            await q.put_many_async(range(5), timeout=0.1)
        return info.value.count

    assert arun(main) == 3
    assert q.get_many() == [0, 1, 2]
    with pytest.raises(TypeError):
        arun(lambda: q.put_many_async(5))


def test_put_many_async_feeds_a_slow_consumer_in_order(start_method, arun):
    q, out = interproc.Queue(maxsize=4), interproc.Queue()

    async def main():
        p = start(start_method, h.sync_get_n, q, out, 50)
        await q.put_many_async(range(50))
        got = out.get(timeout=TIMEOUT)
        join_ok(p)
        return got

    assert arun(main) == list(range(50))


def test_unpicklable_item_fails_put_async_at_once(arun):
    q = interproc.Queue()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        arun(lambda: q.put_async(lambda: None))
    assert q.empty()


def test_shutdown_wakes_awaiting_gets_and_puts(arun):
    q, full = interproc.Queue(), interproc.Queue(maxsize=1)
    full.put(0)

    async def main():
        getter = asyncio.create_task(q.get_async())
        putter = asyncio.create_task(full.put_async(1))
        await asyncio.sleep(0.05)
        threading.Thread(target=q.shutdown).start()
        threading.Thread(target=full.shutdown).start()
        with pytest.raises(interproc.ShutDown):
            await getter
        with pytest.raises(interproc.ShutDown):
            await putter

    arun(main)


def test_closing_the_handle_ends_its_awaiters_with_valueerror(arun):
    q = interproc.Queue()

    async def main():
        getter = asyncio.create_task(q.get_async())
        await asyncio.sleep(0.05)
        q.close()
        with pytest.raises(ValueError):
            await getter

    arun(main)


def test_join_async_waits_for_the_last_task_done(start_method, arun):
    q = interproc.JoinableQueue()
    q.put_many(["a", "b"])

    async def main():
        # Before the start: the child's delay may begin before start() returns.
        t0 = time.monotonic()
        p = start(start_method, h.finish_tasks_later, q, 2, 0.2)
        await q.join_async()
        elapsed = time.monotonic() - t0
        join_ok(p)
        return elapsed

    assert arun(main) >= 0.2


# ------------------------------------------------------------------ cancellation

def test_cancelled_gets_take_nothing_and_the_rest_get_everything_once(arun):
    """Many coroutines await one queue; some are cancelled at random moments
    while items arrive from threads: every item ends up returned once or
    still in the queue."""
    q = interproc.Queue()
    rng = random.Random(7)
    n_items = 300

    async def main():
        results = []

        async def getter():
            while True:
                results.append(await q.get_async())

        tasks = [asyncio.create_task(getter()) for _ in range(20)]
        feeder = threading.Thread(target=h.put_later, args=(q, range(n_items), 0.0))
        feeder.start()
        cancels = 0
        while feeder.is_alive() or cancels < 20:
            await asyncio.sleep(rng.uniform(0, 0.003))
            i = rng.randrange(len(tasks))
            tasks[i].cancel()
            cancels += 1
            tasks[i] = asyncio.create_task(getter())
        feeder.join()
        await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return results

    results = arun(main)
    left = []
    while True:
        try:
            left.append(q.get_nowait())
        except queue.Empty:
            break
    assert sorted(results + left) == list(range(n_items))


def test_cancelled_put_async_puts_nothing(arun):
    q = interproc.Queue(maxsize=1)
    q.put("first")

    async def main():
        t = asyncio.create_task(q.put_async("second"))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert q.get_nowait() == "first"
        with pytest.raises(queue.Empty):
            q.get_nowait()

    arun(main)


def test_put_many_async_cancelled_midway_says_how_many_went_in(arun):
    q = interproc.Queue(maxsize=2)

    async def main():
        return await h.cancelled_count(asyncio.create_task(q.put_many_async(range(5))), 0.05)

    assert arun(main) == 2
    assert q.get_many() == [0, 1]


def test_timeouts_from_asyncio_cancel_cleanly(arun):
    q, lock = interproc.Queue(), interproc.Lock()
    lock.acquire()

    async def main():
        for _ in range(20):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.005):
                    await q.get_async()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(lock.acquire_async(), 0.005)
        q.put("kept")
        return await q.get_async(timeout=5)

    assert arun(main) == "kept"
    lock.release()
    assert lock.acquire(False)  # no cancelled acquire holds it
    lock.release()


# ------------------------------------------------------------------ bells

def _own_bells(handle, which, n):
    """Register n bells of this process by hand (their slots), as loops do."""
    base = os.getpid() << 32
    return [(handle._bell(which, base | (0xabc << 20) | (i + 1)), base | (0xabc << 20) | (i + 1))
            for i in range(n)]


@pytest.mark.parametrize("which", ["get", "put"])
def test_a_waiter_killed_mid_await_loses_nothing_and_its_slot_is_freed(start_method, which):
    q = interproc.Queue(maxsize=1 if which == "put" else 0)
    if which == "put":
        q.put("resident")
    ready = interproc.Event()
    p = start(start_method, h.async_wait_forever, q, which, ready)
    assert ready.wait(CHILD_TIMEOUT)
    kill_and_reap(p)
    # The next signal finds its bell's socket gone and frees the slot.
    if which == "get":
        q.put("after")
        assert q.get(timeout=TIMEOUT) == "after"
    else:
        assert q.get(timeout=TIMEOUT) == "resident"
        q.put("again")
        assert q.get(timeout=TIMEOUT) == "again"
    event = 0 if which == "get" else 1
    regs = _own_bells(q, event, _aio.SLOTS)
    try:
        assert all(slot >= 0 for slot, _ in regs), regs
    finally:
        for slot, bell in regs:
            if slot >= 0:
                q._bell(event, slot, bell)


def test_more_awaiting_loops_than_slots_are_all_served(start_method):
    q, out = interproc.Queue(), interproc.Queue()
    readies = [interproc.Event() for _ in range(_aio.SLOTS + 2)]
    procs = [start(start_method, h.async_get_n, q, r, out, 1) for r in readies]
    for r in readies:
        assert r.wait(CHILD_TIMEOUT)
    time.sleep(0.2)
    for i in range(len(procs)):
        q.put(i)
    got = sorted(out.get(timeout=TIMEOUT)[0][0] for _ in procs)
    join_ok(*procs)
    assert got == list(range(len(procs)))


def test_forged_bells_cost_nothing_but_a_datagram():
    q = interproc.Queue()
    # A bell whose process does not exist, one with pid 0 bits set oddly,
    # one naming this process's pid with no socket behind it.
    forged = [(2**31 - 7) << 32 | 5, (1 << 32) | 1, (os.getpid() << 32) | (0xfff << 20) | 9]
    slots = [q._bell(0, b) for b in forged]
    assert all(s >= 0 for s in slots)
    q.put(1)  # rings them all: each is gone, so each slot is freed
    assert q.get_nowait() == 1
    with pytest.raises(ValueError):
        q._bell(0, 5)  # no pid: not a bell
    with pytest.raises(ValueError):
        q._bell(3, forged[0])  # no such event
    regs = _own_bells(q, 0, _aio.SLOTS)
    assert all(slot >= 0 for slot, _ in regs)
    for slot, bell in regs:
        q._bell(0, slot, bell)


def test_a_lost_ring_is_made_up_for_by_the_sweep(arun, monkeypatch):
    """A ring that never arrives (here: the loop's receive buffer is full,
    so the signaller's datagram is dropped) delays the waiter by at most
    one sweep."""
    monkeypatch.setattr(_aio, "SWEEP", 0.3)
    import socket

    q = interproc.Queue()

    async def main():
        getter = asyncio.create_task(q.get_async())
        await asyncio.sleep(0.05)  # registered, and waiting
        bell = _aio._bell_of(asyncio.get_running_loop())
        junk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        sent = 0
        try:
            while True:
                junk.sendto(b"junk!", bell.sock.getsockname())
                sent += 1
        except BlockingIOError:
            pass
        junk.close()
        q.put("late")  # its ring finds the buffer full
        t0 = time.monotonic()
        got = await getter
        return got, time.monotonic() - t0, sent

    got, waited, sent = arun(main)
    assert got == "late" and sent > 0
    assert waited < 0.3 + LATE


def test_idle_awaiters_cost_no_cpu(arun):
    queues = [interproc.Queue() for _ in range(300)]

    async def main():
        tasks = [asyncio.create_task(q.get_async()) for q in queues]
        await asyncio.sleep(0.2)
        c0 = cpu_seconds()
        await asyncio.sleep(2.5)
        used = cpu_seconds() - c0
        queues[17].put("x")
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return used, [t.result() for t in done]

    used, results = arun(main)
    assert results == ["x"]
    # A sweep every second reads one word per registration; anything like
    # polling would cost far more than this.
    assert used < 0.25, f"{used:.3f}s of CPU while idle"
    for q in queues:
        q.close()


def test_a_forked_child_awaits_with_its_own_bell(arun):
    """A loop that used a bell, then fork: the child's loop makes its own."""
    q, out, ready = interproc.Queue(), interproc.Queue(), interproc.Event()

    async def warm():
        q.put(0)
        return await q.get_async()

    assert arun(warm) == 0
    import multiprocessing

    p = start(multiprocessing.get_context("fork"), h.async_get_n, q, ready, out, 2)
    assert ready.wait(CHILD_TIMEOUT)
    q.put_many([1, 2])
    assert out.get(timeout=TIMEOUT)[0] == [1, 2]
    join_ok(p)


# ------------------------------------------------------------------ synchronization

@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "BoundedSemaphore"])
def test_acquire_async_waits_for_a_release_in_another_process(kind, start_method, arun):
    lock = getattr(interproc, kind)()
    ready, released_at = interproc.Event(), interproc.Value("d", 0.0)
    p = start(start_method, h.hold_then_release, lock, ready, 0.3, released_at)
    assert ready.wait(CHILD_TIMEOUT)

    async def main():
        async with lock:
            return time.monotonic()

    # Taken after the child let go, however late this process ran.
    assert arun(main) >= released_at.value > 0
    join_ok(p)
    assert lock.acquire(False)
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_lock_whose_holder_is_killed_is_taken_over_by_an_awaiting_task(kind, start_method, arun,
                                                                       monkeypatch):
    """No one rings when a holder dies: a lock's waiters also try at each
    sweep, and their try takes a dead holder's lock over."""
    monkeypatch.setattr(_aio, "SWEEP", 0.3)
    lock = getattr(interproc, kind)()
    ready = interproc.Event()
    p = start(start_method, h.hold_then_release, lock, ready, CHILD_TIMEOUT)
    assert ready.wait(CHILD_TIMEOUT)

    async def take_it():
        with pytest.warns(interproc.OwnerDiedWarning):
            async with lock:
                return lock.owner_died

    async def main():
        waiter = asyncio.create_task(take_it())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        kill_and_reap(p)
        return await waiter

    assert arun(main) is True
    assert lock.acquire(False)
    lock.release()


def test_rlock_belongs_to_the_task_that_acquired_it(arun):
    rlock = interproc.RLock()

    async def main():
        order = []

        async def worker(name):
            async with rlock:
                async with rlock:  # the same task takes it again
                    order.append(f"{name} in")
                    await asyncio.sleep(0.02)
                    order.append(f"{name} out")

        await asyncio.gather(*(worker(n) for n in "abc"))
        assert await rlock.acquire_async()

        async def other_task():
            with pytest.raises(AssertionError):
                rlock.release()
            return await rlock.acquire_async(timeout=0.05)

        assert await asyncio.create_task(other_task()) is False
        rlock.release()  # from the task that holds it
        return order

    order = arun(main)
    assert all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, len(order), 2))
    assert rlock.acquire(False)  # free again, for a thread
    rlock.release()


def test_rlock_shared_by_a_task_and_another_process(start_method, arun):
    rlock, ready = interproc.RLock(), interproc.Event()
    released_at = interproc.Value("d", 0.0)
    p = start(start_method, h.hold_then_release, rlock, ready, 0.2, released_at)
    assert ready.wait(CHILD_TIMEOUT)

    async def main():
        async with rlock:
            return time.monotonic()

    assert arun(main) >= released_at.value > 0
    join_ok(p)


def test_acquire_async_timeout_returns_false(arun):
    lock = interproc.Lock()
    lock.acquire()

    async def main():
        t0 = time.monotonic()
        ok = await lock.acquire_async(timeout=0.1)
        return ok, time.monotonic() - t0

    ok, elapsed = arun(main)
    assert ok is False and 0.1 <= elapsed < 0.1 + LATE
    lock.release()


def test_a_coroutine_and_a_process_share_a_lock_in_turns(start_method, arun):
    lock, ready, out = interproc.Lock(), interproc.Event(), interproc.Queue()

    async def main():
        await lock.acquire_async()
        p = start(start_method, h.async_acquire_and_report, lock, ready, out)
        assert ready.wait(CHILD_TIMEOUT)
        await asyncio.sleep(0.2)
        lock.release()
        waited = out.get(timeout=TIMEOUT)
        join_ok(p)
        return waited

    assert arun(main) >= 0.1


def test_semaphore_units_go_to_awaiters(start_method, arun):
    sem = interproc.Semaphore(0)

    async def main():
        p = start(start_method, h.release_later, sem, 0.1, 3)
        got = await asyncio.gather(*(sem.acquire_async(timeout=TIMEOUT) for _ in range(3)))
        join_ok(p)
        return got

    assert arun(main) == [True, True, True]
    assert sem.get_value() == 0


def test_event_wait_async(start_method, arun):
    ev = interproc.Event()

    async def main():
        assert await ev.wait_async(0.05) is False
        assert await ev.wait_async(-1) is False
        p = start(start_method, h.set_later, ev, 0.1)
        ok = await ev.wait_async(TIMEOUT)
        join_ok(p)
        return ok, await ev.wait_async(0)

    assert arun(main) == (True, True)


def test_a_coroutine_a_thread_and_a_process_share_one_queue(start_method, arun):
    """Items put one by one, slowly, while a coroutine, a thread of the
    same process and another process all wait: each gets a share, and
    every item goes to exactly one.

    A futex sleeper wakes sooner than a loop does (much sooner under a
    sanitizer or on a loaded machine), so were both woken for every item
    the coroutine would hardly ever be served; a signal gives the loops
    their turns instead (wait.c, wake_waiters)."""
    q, out = interproc.Queue(), interproc.Queue()
    n = 240
    by_thread, by_coroutine = [], []
    stop = threading.Event()

    def thread_consumer():
        while not stop.is_set():
            try:
                by_thread.append(q.get(timeout=0.05))
            except queue.Empty:
                pass

    async def main():
        p = start(start_method, consume_until_none, q, out, "process")
        t = threading.Thread(target=thread_consumer)
        t.start()

        async def coroutine_consumer():
            while True:
                by_coroutine.append(await q.get_async())

        c = asyncio.create_task(coroutine_consumer())
        await asyncio.sleep(0.3)  # the process is up and waiting too
        # From a thread of its own: a producer in the loop's thread would
        # hand the loop every item before the others could wake.
        producer = threading.Thread(target=h.put_slowly, args=(q, range(n), 0.002))
        producer.start()
        while producer.is_alive():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        c.cancel()
        stop.set()
        t.join()
        q.put(None)
        _, by_process = out.get(timeout=TIMEOUT)
        join_ok(p)
        return by_process

    by_process = arun(main)
    assert sorted(by_thread + by_coroutine + by_process) == list(range(n))
    shares = [len(by_thread), len(by_coroutine), len(by_process)]
    # Each kind has about a third of the turns; a turn can still go to
    # another (a sleeper at the end of its slice takes what a slow loop
    # was rung for), so the promise is a fair share, not an even split.
    assert min(shares) >= n // 10, f"thread, coroutine, process got {shares}"


def test_items_rung_to_a_busy_loop_go_to_a_sleeping_thread(arun):
    """A loop whose turn it is but that cannot run (here its thread is
    blocked on purpose) never holds items back from a thread that sleeps
    on the same queue: the thread finds them at its next slice, if not
    at the next signal."""
    q = interproc.Queue()
    n = 6
    by_thread = []
    all_taken = threading.Event()

    def thread_consumer():
        while len(by_thread) < n:
            by_thread.append(q.get(timeout=TIMEOUT))
        all_taken.set()

    async def main():
        t = threading.Thread(target=thread_consumer)
        t.start()
        waiting = asyncio.ensure_future(q.get_async())
        await asyncio.sleep(0.2)  # registered, and the thread asleep
        producer = threading.Thread(target=h.put_slowly, args=(q, range(n), 0.1))
        producer.start()
        # The loop's thread blocks: whatever is rung to it waits.
        assert all_taken.wait(TIMEOUT)
        producer.join()
        t.join()
        q.put("for the coroutine")
        return await asyncio.wait_for(waiting, TIMEOUT)

    assert arun(main) == "for the coroutine"
    assert by_thread == list(range(n))


# ------------------------------------------------------------------ Connection

def test_recv_async_gets_what_another_process_sends(start_method, arun):
    rx, tx = interproc.Pipe(duplex=False)

    async def main():
        ticker = h.Ticker()
        p = start(start_method, h.send_slowly, tx, list(range(30)), 0.005)
        got = [await rx.recv_async() for _ in range(30)]
        raw = await rx.recv_bytes_async(100)
        ticker.task.cancel()
        join_ok(p)
        return got, raw, ticker.ticks

    got, raw, ticks = arun(main)
    assert got == list(range(30)) and raw == b"raw bytes" and ticks >= 3


def test_recv_async_raises_eoferror_when_the_sender_is_killed_while_it_waits(start_method, arun):
    rx, tx = interproc.Pipe(duplex=False)
    ready = interproc.Event()
    p = start(start_method, h.sleep_forever, tx, ready)
    tx.close()
    assert ready.wait(CHILD_TIMEOUT)

    async def main():
        waiter = asyncio.create_task(rx.recv_async())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        kill_and_reap(p)
        t0 = time.monotonic()
        with pytest.raises(EOFError):
            await waiter
        return time.monotonic() - t0

    # The hang-up wakes it: no signaller is left to ring, and the sweep is off.
    assert arun(main) < LATE


def test_recv_bytes_async_keeps_maxlength_semantics(arun):
    a, b = interproc.Pipe()
    b.send_bytes(b"x" * 10)

    async def main():
        with pytest.raises(ValueError):
            await a.recv_bytes_async(-1)
        with pytest.raises(OSError):
            await a.recv_bytes_async(5)  # too long: as multiprocessing, the end stops reading

    arun(main)


def test_poll_async_and_a_cancelled_recv_async(arun):
    a, b = interproc.Pipe()

    async def main():
        assert await a.poll_async(0.05) is False
        t = asyncio.create_task(a.recv_async())
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        b.send("kept")
        assert await a.poll_async() is True
        return await a.recv_async()

    assert arun(main) == "kept"


def test_recv_async_beside_the_programs_own_reader_of_fileno(arun):
    """A program that watches fileno() itself keeps its reader."""
    a, b = interproc.Pipe()

    async def main():
        loop = asyncio.get_running_loop()
        seen = asyncio.Event()
        loop.add_reader(a.fileno(), seen.set)
        b.send(1)
        await asyncio.wait_for(seen.wait(), TIMEOUT)
        assert await a.recv_async() == 1
        seen.clear()
        b.send(2)
        await asyncio.wait_for(seen.wait(), TIMEOUT)  # still ours
        loop.remove_reader(a.fileno())
        return await a.recv_async()

    assert arun(main) == 2


def test_ctrl_c_stops_a_loop_blocked_in_an_await(default_sigint):
    """SIGINT reaches asyncio.run while every task waits on a bell."""
    q = interproc.Queue()

    async def main():
        await q.get_async()

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    timer.cancel()
    assert time.monotonic() - t0 < 5
