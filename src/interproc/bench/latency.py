"""Round trips through two queues: one process pings, another echoes."""
from __future__ import annotations

import statistics
import time
from typing import Any

from .adapters import Adapter, Sizing
from .runner import Sample, Settings, TrialError, run_processes
from .throughput import OBJECT

__all__ = ["ping_pong"]

# Long enough for mp.Queue to start both feeder threads and for the caches to
# settle before the first round trip counts.
_WARMUP_ROUND_TRIPS = 200
_SIZING = Sizing(item_bytes=64, in_flight_bytes=1 << 16)


def ping_pong(adapter: Adapter, n: int, settings: Settings) -> Sample:
    """Median microseconds per round trip, over ``settings.trial_seconds`` of them.

    ``n`` is unused: the trial is bounded by time, so every implementation
    gets as many round trips as it can make.
    """
    there = adapter.make(_SIZING)
    try:
        back = adapter.make(_SIZING)
        try:
            jobs = [
                (_ping, (adapter, there, back, settings.trial_seconds)),
                (_echo, (adapter, there, back)),
            ]
            median_us, elapsed = run_processes(jobs, settings.timeout)[0]
        finally:
            adapter.destroy(back)
    finally:
        adapter.destroy(there)
    return Sample(value=median_us, elapsed=elapsed)


def _echo(adapter: Adapter, there: Any, back: Any) -> None:
    get = adapter.endpoint(there).get
    put = adapter.endpoint(back).put
    while True:
        item = get()
        put(item)
        if item is None:
            return


def _ping(adapter: Adapter, there: Any, back: Any, duration: float) -> tuple[float, float]:
    put = adapter.endpoint(there).put
    get = adapter.endpoint(back).get
    clock = time.perf_counter_ns
    item = OBJECT
    for _ in range(_WARMUP_ROUND_TRIPS):
        put(item)
        get()
    times = []
    start = clock()
    stop = start + int(duration * 1e9)
    now = start
    while now < stop:
        put(item)
        reply = get()
        then, now = now, clock()
        times.append(now - then)
    elapsed = (now - start) / 1e9
    put(None)
    get()
    if reply != item:
        raise TrialError(f"echo differs from what was sent: {reply!r:.80}")
    return statistics.median(times) / 1000, elapsed
