"""asyncio: coroutines' round trips, streams and idle waits on interproc queues.

Each trial runs its coroutines under ``asyncio.run`` in a fresh process, as
the other cases run their loops, so every contender pays for its own event
loop and nothing else.  The echo processes are the blocking ones of the
``ping-pong`` case: what differs is only how the pinging side waits.
"""
from __future__ import annotations

import asyncio
import functools
import os
import resource
import statistics
import time
from typing import Any, Awaitable, Callable

from . import adapters, latency, throughput
from .adapters import Adapter
from .runner import CTX, Sample, Settings, TrialError, run_processes

__all__ = [
    "IDLE_WAITERS", "MANY_WAITERS", "async_ping_pong", "async_stream", "executor_ping_pong",
    "idle_cpu", "many_waiters", "pool_ping_pong",
]

#: Pending get_async calls, one per empty queue, in the idle case.
IDLE_WAITERS = 1_000
#: Coroutines, one per queue, in the many-waiters case.
MANY_WAITERS = 10_000
# aiomultiprocess's Pool looks for results every 5 ms, so a round trip
# takes milliseconds: a few are warm-up enough, and 200 would take seconds.
_POOL_WARMUP = 5
# Queues the many-waiters case wakes, one after another, and how many times.
_WAKEABLE = 16
_WAKES = 40
# Between wakes: long enough for the woken loop to be back asleep in
# epoll_wait, so that each wake starts from idle.
_WAKE_GAP = 0.01


async def _round_trips(
    call: Callable[[Any], Awaitable[Any]], duration: float,
    warmup: int = latency.WARMUP_ROUND_TRIPS,
) -> tuple[float, float]:
    """``latency``'s round-trip loop with an awaited request: median µs and
    the seconds timed; ends the echo with None."""
    clock = time.perf_counter_ns
    item = throughput.OBJECT
    for _ in range(warmup):
        await call(item)
    times = []
    start = clock()
    stop = start + int(duration * 1e9)
    now = start
    while now < stop:
        reply = await call(item)
        then, now = now, clock()
        times.append(now - then)
    elapsed = (now - start) / 1e9
    await call(None)
    if reply != item:
        raise TrialError(f"echo differs from what was sent: {reply!r:.80}")
    return statistics.median(times) / 1000, elapsed


def _ping_async(adapter: Adapter, there: Any, back: Any, duration: float) -> tuple[float, float]:
    # What a program writes: both sides awaited, on the queues themselves.
    async def call(item: Any) -> Any:
        await there.put_async(item)
        return await back.get_async()

    return asyncio.run(_round_trips(call, duration))


def _ping_executor(adapter: Adapter, there: Any, back: Any, duration: float) -> tuple[float, float]:
    # The usual way to await a blocking get: the loop's default thread pool.
    put = adapter.endpoint(there).put
    get = adapter.endpoint(back).get

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()

        def call(item: Any) -> Awaitable[Any]:
            put(item)  # mp.Queue.put never blocks: it hands the item to a feeder thread
            return loop.run_in_executor(None, get)

        return await _round_trips(call, duration)

    return asyncio.run(main())


async_ping_pong = functools.partial(latency.ping_pong, ping=_ping_async)
executor_ping_pong = functools.partial(latency.ping_pong, ping=_ping_executor)


class AioMultiprocessAdapter(adapters.Implementation):
    """aiomultiprocess: only imported here; its Pool makes its own queues."""

    key = "aiomultiprocess"
    label = "aiomultiprocess Pool.apply"
    module = "aiomultiprocess"

    def load(self) -> None:
        import aiomultiprocess

        self.pool = aiomultiprocess.Pool


adapters.register(AioMultiprocessAdapter)


async def _echo_coroutine(item: Any) -> Any:
    return item


def pool_ping_pong(adapter: AioMultiprocessAdapter, n: int, settings: Settings) -> Sample:
    """Median µs per ``await pool.apply(echo, (item,))`` on a one-process Pool:
    aiomultiprocess's own request/reply."""
    median_us, elapsed = run_processes(
        [(_pool_ping, (adapter, settings.trial_seconds))], settings.timeout)[0]
    return Sample(value=median_us, elapsed=elapsed)


def _pool_ping(adapter: AioMultiprocessAdapter, duration: float) -> tuple[float, float]:
    # The trial's processes are daemonic, and a daemonic process may not
    # start children: this one must, for the pool.  run_processes still
    # kills it on a timeout, and the pool's exit stops the worker.
    import multiprocessing

    multiprocessing.current_process().daemon = False

    async def main() -> tuple[float, float]:
        async with adapter.pool(processes=1) as pool:
            def call(item: Any) -> Awaitable[Any]:
                return pool.apply(_echo_coroutine, (item,))

            return await _round_trips(call, duration, warmup=_POOL_WARMUP)

    return asyncio.run(main())


def _produce_async(adapter: Adapter, q: Any, barrier: Any, n: int, payload: Any,
                   batch: int) -> None:
    async def main() -> None:
        put = q.put_async
        barrier.wait()
        for _ in range(n):
            await put(payload)

    asyncio.run(main())


def _consume_async(adapter: Adapter, q: Any, barrier: Any, n: int, expected: Any,
                   batch: int) -> float:
    async def main() -> tuple[float, Any]:
        get = q.get_async
        barrier.wait()
        start = time.perf_counter()
        for _ in range(n - 1):
            await get()
        last = await get()
        return time.perf_counter() - start, last

    elapsed, last = asyncio.run(main())
    throughput.check_last(last, expected)
    return elapsed


async_stream = functools.partial(throughput.stream, produce=_produce_async,
                                 consume=_consume_async)


def idle_cpu(adapter: Adapter, n: int, settings: Settings) -> Sample:
    """CPU seconds of one process whose loop has ``IDLE_WAITERS`` pending
    ``get_async`` calls on as many empty queues, over ``async_idle_seconds``."""
    cpu, waited = run_processes(
        [(_idle_waiters, (adapter, IDLE_WAITERS, settings.async_idle_seconds))],
        settings.async_idle_seconds + settings.timeout)[0]
    return Sample(value=cpu, elapsed=waited)


def _idle_waiters(adapter: Adapter, count: int, seconds: float) -> tuple[float, float]:
    queues = [adapter.make(None) for _ in range(count)]

    async def main() -> tuple[float, float]:
        tasks = [asyncio.create_task(q.get_async()) for q in queues]
        # One pass of the loop runs every task to its first await: each
        # has tried, found nothing, and registered its queue.
        await asyncio.sleep(0)
        _all_pending(tasks)
        cpu = time.process_time()
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        waited = time.perf_counter() - start
        cpu = time.process_time() - cpu
        _all_pending(tasks)
        # Then wake them all, to check that they were really waiting.
        for q in queues:
            q.put("wake")
        got = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        if got != ["wake"] * count:
            raise TrialError("a waiter did not get its wake-up item")
        return cpu, waited

    try:
        return asyncio.run(main())
    finally:
        for q in queues:
            adapter.destroy(q)


def _all_pending(tasks: list[asyncio.Task]) -> None:
    done = sum(task.done() for task in tasks)
    if done:
        raise TrialError(f"{done} of {len(tasks)} get_async calls on empty queues returned")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def many_waiters(adapter: Adapter, n: int, settings: Settings) -> Sample:
    """``MANY_WAITERS`` coroutines, each awaiting ``get_async`` on its own
    queue: the median µs from another process's put to the coroutine's
    return (``_WAKES`` wakes, one at a time), and, while they all wait, the
    process's threads, the descriptors their waits added, and its
    descriptors in all (each queue holds one: its segment)."""
    wakeable = [adapter.make(None) for _ in range(_WAKEABLE)]
    acks = adapter.make(None)
    try:
        ready = CTX.Event()
        jobs = [
            (_many_waiters, (adapter, wakeable, acks, ready, MANY_WAITERS, _WAKES)),
            (_waker, (wakeable, acks, ready, _WAKES)),
        ]
        median_us, threads, added, descriptors = run_processes(jobs, settings.timeout)[0]
    finally:
        for q in (*wakeable, acks):
            adapter.destroy(q)
    return Sample(value=median_us, elapsed=0.0, more=(threads, added, descriptors))


def _many_waiters(adapter: Adapter, wakeable: list, acks: Any, ready: Any, count: int,
                  wakes: int) -> tuple[float, int, int, int]:
    # A queue holds a descriptor, and 10,000 exceed the usual soft limit
    # of 1,024 open files: raise it as far as the hard limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise TrialError(f"{count:,} queues need ~{wanted:,} descriptors; "
                             f"the hard limit is {hard:,}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    queues = wakeable + [adapter.make(None) for _ in range(count - len(wakeable))]
    clock = functools.partial(time.clock_gettime_ns, time.CLOCK_MONOTONIC)

    async def main() -> tuple[float, int, int, int]:
        latencies: list[int] = []
        enough = asyncio.Event()

        async def wait_on(q: Any) -> None:
            while True:
                stamp = await q.get_async()
                latencies.append(clock() - stamp)
                acks.put(None)
                if len(latencies) >= wakes:
                    enough.set()

        before = _descriptors()
        tasks = [asyncio.create_task(wait_on(q)) for q in queues]
        await asyncio.sleep(0)
        _all_pending(tasks)
        threads, descriptors = _threads(), _descriptors()
        ready.set()
        await asyncio.wait_for(enough.wait(), 60)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return statistics.median(latencies) / 1000, threads, descriptors - before, descriptors

    try:
        return asyncio.run(main())
    finally:
        for q in queues[len(wakeable):]:
            adapter.destroy(q)


def _waker(wakeable: list, acks: Any, ready: Any, wakes: int) -> None:
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    clock = functools.partial(time.clock_gettime_ns, time.CLOCK_MONOTONIC)
    if not ready.wait(60):
        raise TrialError("the waiters never got ready")
    for number in range(wakes):
        time.sleep(_WAKE_GAP)
        wakeable[number % len(wakeable)].put(clock())
        acks.get(timeout=10)
