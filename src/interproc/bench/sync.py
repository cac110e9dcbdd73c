"""Synchronization primitives and shared values: Event ping-pong, uncontended
Lock, locked and atomic increments.

Each trial gets the module to measure (``interproc`` or ``multiprocessing``)
through the contender, so both run the very same loop.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from .runner import CTX, Sample, Settings, run_processes

__all__ = [
    "barrier_round", "event_idle_cpu", "event_ping_pong", "lock_uncontended", "locked_increments", "single_increments",
]


def _module(name: str) -> Any:
    if name == "interproc":
        import interproc

        return interproc
    return CTX


def event_ping_pong(name: str, n: int, settings: Settings) -> Sample:
    """Median microseconds for a set→wait→clear round between two processes."""
    mod = _module(name)
    ping, pong, done = mod.Event(), mod.Event(), mod.Event()
    jobs = [(_pinger, (ping, pong, done, settings.trial_seconds)), (_ponger, (ping, pong, done))]
    median_us, elapsed = run_processes(jobs, settings.timeout)[0]
    return Sample(value=median_us, elapsed=elapsed)


def _ponger(ping: Any, pong: Any, done: Any) -> None:
    while True:
        ping.wait()
        ping.clear()
        if done.is_set():
            return
        pong.set()


def _pinger(ping: Any, pong: Any, done: Any, duration: float) -> tuple[float, float]:
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        t0 = time.perf_counter_ns()
        ping.set()
        pong.wait()
        pong.clear()
        times.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    done.set()
    ping.set()
    return statistics.median(times) / 1000, elapsed


def lock_uncontended(name: str, n: int, settings: Settings) -> Sample:
    """Nanoseconds per acquire+release of a Lock nobody else wants."""
    lock = _module(name).Lock()
    ns, elapsed = run_processes([(_acquire_release, (lock, n))], settings.timeout)[0]
    return Sample(value=ns, elapsed=elapsed)


def _acquire_release(lock: Any, n: int) -> tuple[float, float]:
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    elapsed = time.perf_counter() - start
    return elapsed / n * 1e9, elapsed


def locked_increments(name: str, n: int, settings: Settings) -> Sample:
    """Increments per second of one shared Value by two processes, each
    taking the Value's own lock around every increment."""
    counter = _module(name).Value("q", 0)
    half = max(n // 2, 1)
    start = time.perf_counter()
    run_processes([(_increment, (counter, half))] * 2, settings.timeout)
    elapsed = time.perf_counter() - start
    if counter.value != 2 * half:
        from .runner import TrialError

        raise TrialError(f"lost increments: {counter.value} of {2 * half}")
    return Sample(value=2 * half / elapsed, elapsed=elapsed)


def _increment(counter: Any, n: int) -> None:
    lock = counter.get_lock()
    for _ in range(n):
        with lock:
            counter.value += 1


def single_increments(name: str, n: int, settings: Settings) -> Sample:
    """Increments per second of an integer Value in one process: interproc's
    atomic fetch_add against multiprocessing's increment under the lock."""
    counter = _module(name).Value("q", 0)
    rate, elapsed = run_processes([(_single, (counter, n, name == "interproc"))], settings.timeout)[0]
    return Sample(value=rate, elapsed=elapsed)


def _single(counter: Any, n: int, atomic: bool) -> tuple[float, float]:
    start = time.perf_counter()
    if atomic:
        add = counter.fetch_add
        for _ in range(n):
            add(1)
    else:
        lock = counter.get_lock()
        for _ in range(n):
            with lock:
                counter.value += 1
    elapsed = time.perf_counter() - start
    return n / elapsed, elapsed


def barrier_round(name: str, n: int, settings: Settings) -> Sample:
    """Median microseconds per round of a Barrier(2) between two processes."""
    barrier = _module(name).Barrier(2)
    jobs = [(_barrier_timed, (barrier, settings.trial_seconds)), (_barrier_follow, (barrier,))]
    median_us, elapsed = run_processes(jobs, settings.timeout)[0]
    return Sample(value=median_us, elapsed=elapsed)


def _barrier_follow(barrier: Any) -> None:
    import threading

    try:
        while True:
            barrier.wait()
    except threading.BrokenBarrierError:
        return  # the timed side aborts the barrier to end the trial


def _barrier_timed(barrier: Any, duration: float) -> tuple[float, float]:
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        t0 = time.perf_counter_ns()
        barrier.wait()
        times.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    barrier.abort()
    return statistics.median(times) / 1000, elapsed


def event_idle_cpu(name: str, n: int, settings: Settings) -> Sample:
    """CPU seconds a child spends blocked in Event.wait() for ``idle_seconds``."""
    event = _module(name).Event()
    jobs = [(_blocked_wait, (event,)), (_late_set, (event, settings.idle_seconds))]
    cpu, waited = run_processes(jobs, settings.idle_seconds + settings.timeout)[0]
    return Sample(value=cpu, elapsed=waited)


def _blocked_wait(event: Any) -> tuple[float, float]:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    event.wait()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, time.perf_counter() - start


def _late_set(event: Any, delay: float) -> None:
    time.sleep(delay)
    event.set()
