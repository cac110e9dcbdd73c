"""Round trips through two queues or over one pipe: one process pings, another echoes."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from .adapters import Adapter, PipeAdapter, Sizing
from .runner import Sample, Settings, TrialError, run_processes
from .throughput import OBJECT

__all__ = ["SIZING", "WARMUP_ROUND_TRIPS", "echo", "ping_pong", "pipe_ping_pong"]

# Long enough for mp.Queue to start both feeder threads, for a REQ socket to
# finish connecting and for the caches to settle before the first round trip
# counts.
WARMUP_ROUND_TRIPS = 200
SIZING = Sizing(item_bytes=64, in_flight_bytes=1 << 16)


def ping_pong(
    adapter: Adapter, n: int, settings: Settings,
    ping: Callable[[Adapter, Any, Any, float], tuple[float, float]] | None = None,
) -> Sample:
    """Median microseconds per round trip, over ``settings.trial_seconds`` of them.

    ``n`` is unused: the trial is bounded by time, so every implementation
    gets as many round trips as it can make.  ``ping`` is the pinging
    process's job, ``(adapter, there, back, duration) -> (median µs,
    seconds timed)``; by default a blocking put then get (the asyncio cases
    pass coroutines' ways to the same echo).
    """
    there = adapter.make(SIZING)
    try:
        back = adapter.make(SIZING)
        try:
            jobs = [
                (ping or _ping, (adapter, there, back, settings.trial_seconds)),
                (echo, (adapter, there, back)),
            ]
            median_us, elapsed = run_processes(jobs, settings.timeout)[0]
        finally:
            adapter.destroy(back)
    finally:
        adapter.destroy(there)
    return Sample(value=median_us, elapsed=elapsed)


def echo(adapter: Adapter, there: Any, back: Any) -> None:
    """Put back every item got, until None."""
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
    return _round_trips(put, get, duration)


def _round_trips(
    send: Callable[[Any], Any], receive: Callable[[], Any], duration: float
) -> tuple[float, float]:
    """Median microseconds per round trip and the seconds timed; ends the echo with None."""
    clock = time.perf_counter_ns
    item = OBJECT
    for _ in range(WARMUP_ROUND_TRIPS):
        send(item)
        receive()
    times = []
    start = clock()
    stop = start + int(duration * 1e9)
    now = start
    while now < stop:
        send(item)
        reply = receive()
        then, now = now, clock()
        times.append(now - then)
    elapsed = (now - start) / 1e9
    send(None)
    receive()
    if reply != item:
        raise TrialError(f"echo differs from what was sent: {reply!r:.80}")
    return statistics.median(times) / 1000, elapsed


def pipe_ping_pong(adapter: PipeAdapter, n: int, settings: Settings) -> Sample:
    """Median microseconds per round trip over one duplex pipe, as `ping_pong`.

    One pipe, not two: a request and its reply going back over the same
    connection is what a duplex pipe is for, and what REQ/REP does.
    """
    pipe = adapter.make(duplex=True)
    try:
        jobs = [
            (_pipe_ping, (adapter, pipe, settings.trial_seconds)),
            (_pipe_echo, (adapter, pipe)),
        ]
        median_us, elapsed = run_processes(jobs, settings.timeout)[0]
    finally:
        adapter.destroy(pipe)
    return Sample(value=median_us, elapsed=elapsed)


def _pipe_echo(adapter: PipeAdapter, pipe: Any) -> None:
    end = adapter.open(pipe, 1)
    send, recv = end.send, end.recv
    try:
        while True:
            item = recv()
            send(item)
            if item is None:
                return
    finally:
        end.close()


def _pipe_ping(adapter: PipeAdapter, pipe: Any, duration: float) -> tuple[float, float]:
    end = adapter.open(pipe, 0)
    try:
        return _round_trips(end.send, end.recv, duration)
    finally:
        end.close()
