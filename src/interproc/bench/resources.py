"""What a queue or pipe costs when nothing moves: CPU while blocked, memory when new."""
from __future__ import annotations

import gc
import os
import resource
import time
from typing import Any, Callable

from .adapters import Adapter, PipeAdapter
from .runner import CTX, Sample, Settings, TrialError, run_processes

__all__ = ["idle_cpu", "pipe_idle_cpu", "queue_memory"]

QUEUES_PER_TRIAL = 10


def idle_cpu(adapter: Adapter, n: int, settings: Settings) -> Sample:
    """CPU seconds a child burns blocked in ``get()`` for ``settings.idle_seconds``.

    A second child puts one item to end the wait, so the getter blocks the way
    an idle worker does: with no timeout.
    """
    q = adapter.make(None)
    try:
        blocked = CTX.Event()
        jobs = [
            (_blocked_get, (adapter, q, blocked)),
            (_late_put, (adapter, q, blocked, settings.idle_seconds)),
        ]
        timeout = settings.idle_seconds + settings.timeout
        cpu, waited = run_processes(jobs, timeout)[0]
    finally:
        adapter.destroy(q)
    return Sample(value=cpu, elapsed=waited)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _blocked_get(adapter: Adapter, q: Any, blocked: Any) -> tuple[float, float]:
    return _cpu_while_blocked(adapter.endpoint(q).get, blocked)


def _late_put(adapter: Adapter, q: Any, blocked: Any, delay: float) -> None:
    _wake_later(adapter.endpoint(q).put, blocked, delay)


def pipe_idle_cpu(adapter: PipeAdapter, n: int, settings: Settings) -> Sample:
    """CPU seconds a child burns blocked in ``recv()`` for ``settings.idle_seconds``.

    As `idle_cpu`, over a one-way pipe: a second child sends one object.
    """
    pipe = adapter.make(duplex=False)
    try:
        blocked = CTX.Event()
        jobs = [
            (_blocked_recv, (adapter, pipe, blocked)),
            (_late_send, (adapter, pipe, blocked, settings.idle_seconds)),
        ]
        timeout = settings.idle_seconds + settings.timeout
        cpu, waited = run_processes(jobs, timeout)[0]
    finally:
        adapter.destroy(pipe)
    return Sample(value=cpu, elapsed=waited)


def _blocked_recv(adapter: PipeAdapter, pipe: Any, blocked: Any) -> tuple[float, float]:
    return _cpu_while_blocked(adapter.open(pipe, 0).recv, blocked)


def _late_send(adapter: PipeAdapter, pipe: Any, blocked: Any, delay: float) -> None:
    _wake_later(adapter.open(pipe, 1).send, blocked, delay)


def _cpu_while_blocked(receive: Callable[[], Any], blocked: Any) -> tuple[float, float]:
    blocked.set()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    item = receive()
    waited = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    if item != "wake":
        raise TrialError(f"expected the wake-up item, got {item!r:.80}")
    return cpu, waited


def _wake_later(send: Callable[[Any], Any], blocked: Any, delay: float) -> None:
    blocked.wait()
    time.sleep(delay)
    send("wake")


def queue_memory(adapter: Adapter, n: int, settings: Settings) -> Sample:
    """KiB of resident memory per new, unused queue, measured in a fresh child."""
    kib = run_processes([(_rss_per_queue, (adapter, QUEUES_PER_TRIAL))], settings.timeout)[0]
    return Sample(value=kib, elapsed=0.0)


def _resident_kib() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1024


def _rss_per_queue(adapter: Adapter, count: int) -> float:
    # The first queue pays one-time costs (lazy imports, allocator arenas,
    # the C module's state) that a program pays once, not per queue.
    kept = [adapter.make(None)]
    kept.extend(None for _ in range(count))
    gc.collect()
    before = _resident_kib()
    for i in range(1, count + 1):
        kept[i] = adapter.make(None)
    after = _resident_kib()
    return (after - before) / count
