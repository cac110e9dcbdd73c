"""Trials in fresh processes, sizing, alternation and medians.

Every measurement runs in processes forked for it alone, so no trial inherits
a warm cache, a feeder thread or a grown heap from the one before, and the
parent never touches a queue's hot path.
"""
from __future__ import annotations

import multiprocessing
import statistics
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .cases import Case

__all__ = ["CTX", "Sample", "Series", "Settings", "TrialError", "run_case", "run_processes"]

# fork keeps queue handles usable in children without pickling them, which
# is the one thing every compared implementation supports.
CTX = multiprocessing.get_context("fork")

# A sizing trial shorter than this is mostly fork and barrier jitter.
_CALIBRATION_FLOOR_S = 0.05


class TrialError(RuntimeError):
    """A trial crashed, hung or returned wrong data."""


@dataclass(frozen=True)
class Settings:
    trials: int = 3
    quick: bool = False
    trial_seconds: float = 0.5
    idle_seconds: float = 2.0
    # The asyncio idle case: a server's loop idles for long stretches, so
    # its default is longer than the blocked-get cases'.
    async_idle_seconds: float = 10.0
    # The Redis server of the Redis cases: given with --redis-url, or set
    # by each case to the throw-away server it starts.
    redis_url: str | None = None

    @property
    def timeout(self) -> float:
        """How long one trial may take before its processes are killed."""
        return 30.0 if self.quick else max(60.0, 20 * self.trial_seconds)


@dataclass(frozen=True)
class Sample:
    value: float
    elapsed: float
    # Further figures from the same trial, one for each of the case's
    # ``more`` metrics (e.g. RSS beside PSS).
    more: tuple[float, ...] = ()


@dataclass
class Series:
    """Every trial of one implementation in one case."""

    key: str
    label: str
    n: int = 0
    values: list[float] = field(default_factory=list)
    # One list per further figure of the case, trial by trial.
    more: list[list[float]] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _child(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        result = ("ok", fn(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
    conn.send(result)
    conn.close()


def run_processes(jobs: Sequence[tuple[Callable[..., Any], tuple]], timeout: float) -> list[Any]:
    """Run each ``(fn, args)`` in its own forked process; return the results in order.

    A job that raises, dies or outlives ``timeout`` raises `TrialError` after
    every job's process has been killed, so a hung queue costs one trial, not
    the run.
    """
    procs = []
    pending = {}
    try:
        for index, (fn, args) in enumerate(jobs):
            reader, writer = CTX.Pipe(duplex=False)
            proc = CTX.Process(target=_child, args=(writer, fn, args), daemon=True)
            proc.start()
            # Only the child may hold the write end, so its death reads as EOF.
            writer.close()
            procs.append(proc)
            pending[reader] = index
        results: list[Any] = [None] * len(jobs)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TrialError(f"timed out after {timeout:.0f} s")
            for reader in wait(list(pending), timeout=remaining):
                index = pending.pop(reader)
                try:
                    status, value = reader.recv()
                except EOFError:
                    procs[index].join(1)
                    role = getattr(jobs[index][0], "__name__", "a job").lstrip("_")
                    raise TrialError(
                        f"the {role} process died (exit code {procs[index].exitcode})"
                    ) from None
                finally:
                    reader.close()
                if status != "ok":
                    raise TrialError(value.rstrip())
                results[index] = value
        for proc in procs:
            proc.join(timeout)
        return results
    finally:
        for reader in pending:
            reader.close()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


def _calibrate(trial: Callable[[int], Sample], case: Case, settings: Settings) -> int:
    """The item count that makes one trial last about ``settings.trial_seconds``."""
    n = case.quick_n
    while True:
        sample = trial(n)
        if sample.elapsed >= _CALIBRATION_FLOOR_S or n >= case.n_max:
            break
        grow = min(64.0, max(2.0, 2 * _CALIBRATION_FLOOR_S / max(sample.elapsed, 1e-4)))
        n = min(case.n_max, int(n * grow))
    scaled = int(n * settings.trial_seconds / max(sample.elapsed, 1e-6))
    return max(case.quick_n, min(case.n_max, scaled))


def run_case(
    case: Case,
    contenders: Sequence[tuple[Series, Callable[[int], Sample] | None]],
    settings: Settings,
    log: Callable[[str], None],
) -> list[Series]:
    """Measure every contender of ``case``, alternating them trial by trial.

    ``contenders`` pairs each series with its trial, or with ``None`` when the
    implementation is unavailable (the series then says why).  Alternating
    (A, B, C, A, B, C, ...) spreads the noise of a shared machine over all
    contenders instead of letting it land on whichever ran last.
    """
    runnable = [(s, trial) for s, trial in contenders if trial is not None]
    for s, trial in runnable:
        if not case.sized or settings.quick:
            s.n = case.quick_n if case.sized else 0
            continue
        try:
            s.n = _calibrate(trial, case, settings)
        except TrialError as exc:
            s.error = str(exc)
            log(f"{case.name}: {s.label} failed while sizing: {exc}")
        else:
            log(f"{case.name}: {s.label} sized: {s.n:,} per trial")

    for number in range(1, settings.trials + 1):
        for s, trial in runnable:
            if s.error:
                continue
            try:
                sample = trial(s.n)
            except TrialError as exc:
                s.error = str(exc)
                log(f"{case.name}: {s.label} failed: {exc}")
                continue
            s.values.append(sample.value)
            if not s.more:
                s.more = [[] for _ in sample.more]
            for values, value in zip(s.more, sample.more):
                values.append(value)
            figures = [case.metric.format(sample.value)]
            figures += [metric.format(value) for metric, value in zip(case.more, sample.more)]
            log(f"{case.name}: {s.label} trial {number}/{settings.trials}: "
                f"{', '.join(figures)}")
    return [s for s, _ in contenders]
