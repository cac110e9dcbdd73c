"""Streams of items from producers to one consumer, through a queue or a pipe, and a memcpy reference."""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable

from .adapters import Adapter, PipeAdapter, Sizing
from .runner import CTX, Sample, Settings, TrialError, run_processes

__all__ = [
    "MIB", "OBJECT", "BYTES_32", "Recipe", "check_last", "made", "payload_bytes", "stream",
    "pipe_stream", "memcpy",
]

OBJECT = (12345, "hello world payload")
BYTES_32 = bytes(range(32))
MIB = 1 << 20

# Enough for tens of thousands of small items or a dozen 1 MiB ones, so the
# consumer rarely starves, without letting a fast producer run far ahead.
_SMALL_BUDGET = 4 * MIB
_LARGE_BUDGET = 16 * MIB


class Recipe:
    """A payload too large to build in the parent and inherit: each producing
    process builds its own item with `build` before the clock starts, and the
    consumer checks the last item it got with `check`.  The parent only ever
    holds the recipe."""

    #: The size of the built item's data, for GB/s.
    nbytes: int

    def build(self) -> Any:
        raise NotImplementedError

    def check(self, last: Any) -> None:
        raise NotImplementedError

    def sizing(self) -> Sizing:
        raise NotImplementedError


def made(payload: Any) -> Any:
    """The item to send: ``payload`` itself, or what its recipe builds."""
    return payload.build() if isinstance(payload, Recipe) else payload


def payload_bytes(payload: Any) -> int:
    """The bytes one item carries, for GB/s."""
    return payload.nbytes if isinstance(payload, Recipe) else len(payload)


def _sizing(payload: Any) -> Sizing:
    if isinstance(payload, Recipe):
        return payload.sizing()
    item = len(pickle.dumps(payload, pickle.HIGHEST_PROTOCOL))
    budget = _LARGE_BUDGET if item >= MIB else _SMALL_BUDGET
    return Sizing(item_bytes=item, in_flight_bytes=budget)


def stream(
    adapter: Adapter,
    n: int,
    settings: Settings,
    *,
    payload: Any,
    producers: int = 1,
    batch: int = 0,
    produce: Callable[..., None] | None = None,
    consume: Callable[..., float] | None = None,
) -> float:
    """Seconds for one consumer to receive ``n`` copies of ``payload``.

    The clock starts when every process has passed a barrier (and the
    consumer has received the payload's warm-up items, see `warmup_items`)
    and stops at the last item, both in the consumer.  With ``batch``, items move through
    ``put_many``/``get_many`` in lists of that size.  ``produce`` and
    ``consume`` replace the blocking loops of each side (the asyncio case
    passes coroutines'); they take the same arguments.
    """
    q = adapter.make(_sizing(payload))
    try:
        barrier = CTX.Barrier(producers + 1)
        sent = n + warmup_items(payload)
        shares = [sent // producers + (i < sent % producers) for i in range(producers)]
        jobs: list = [(consume or _consume, (adapter, q, barrier, n, payload, batch))]
        jobs += [(produce or _produce, (adapter, q, barrier, share, payload, batch))
                 for share in shares]
        return run_processes(jobs, settings.timeout)[0]
    finally:
        adapter.destroy(q)


def _produce(adapter: Adapter, q: Any, barrier: Any, n: int, payload: Any, batch: int) -> None:
    ends = adapter.endpoint(q, batch)
    payload = made(payload)
    if batch:
        put_many = ends.put_many
        chunk = [payload] * batch
        full, rest = divmod(n, batch)
        barrier.wait()
        for _ in range(full):
            put_many(chunk)
        if rest:
            put_many(chunk[:rest])
    else:
        put = ends.put
        barrier.wait()
        for _ in range(n):
            put(payload)


def _consume(adapter: Adapter, q: Any, barrier: Any, n: int, expected: Any, batch: int) -> float:
    ends = adapter.endpoint(q, batch)
    if batch:
        get_many = ends.get_many
        got = 0
        barrier.wait()
        start = time.perf_counter()
        while got < n:
            items = get_many()
            got += len(items)
        elapsed = time.perf_counter() - start
        last = items[-1]
        if got != n:
            raise TrialError(f"received {got} items, {n} were sent")
    else:
        get = ends.get
        barrier.wait()
        for _ in range(warmup_items(expected)):
            get()
        start = time.perf_counter()
        for _ in range(n - 1):
            get()
        last = get()
        elapsed = time.perf_counter() - start
    check_last(last, expected)
    return elapsed


def warmup_items(payload: Any) -> int:
    """Items sent before the timed ones: a stream of large items is timed
    once it runs (``Recipe.warmup``), past the first lap of a fresh queue or
    pipe, whose memory is faulted in page by page.  Every implementation
    gets the same."""
    return getattr(payload, "warmup", 0)


def check_last(last: Any, expected: Any) -> None:
    """One comparison, outside the clock: a fast queue that mangles data
    must not post a record.  A recipe checks what it would have built."""
    if isinstance(expected, Recipe):
        expected.check(last)
    elif last != expected:
        raise TrialError(f"last item differs from what was sent: {last!r:.80}")


def pipe_stream(
    adapter: PipeAdapter, n: int, settings: Settings, *, payload: Any, as_bytes: bool = False
) -> float:
    """Seconds for one process to receive ``n`` copies of ``payload`` over a one-way pipe
    (after the payload's warm-up items).

    Timed as `stream`.  With ``as_bytes``, ``payload`` goes through
    ``send_bytes``/``recv_bytes`` instead of ``send``/``recv``.

    A pipe has no ``maxsize``, and one whose ``send`` never blocks would let
    the sender run as far ahead as memory allows.  So the receiver hands out
    credit over a second pipe: the sender may be at most two blocks of the
    queue cases' byte budget ahead.  That is one small message per block,
    for every implementation alike, and a pipe that blocks on its own (an OS
    pipe holds 64 KiB) never waits for it.
    """
    data = adapter.make(duplex=False)
    try:
        credit = adapter.make(duplex=False)
        try:
            sizing = _sizing(payload)
            block = max(1, sizing.in_flight_bytes // (2 * sizing.item_bytes))
            barrier = CTX.Barrier(2)
            sent = n + warmup_items(payload)
            jobs: list = [
                (_pipe_receive, (adapter, data, credit, barrier, sent, block, payload, as_bytes)),
                (_pipe_send, (adapter, data, credit, barrier, sent, block, payload, as_bytes)),
            ]
            return run_processes(jobs, settings.timeout)[0]
        finally:
            adapter.destroy(credit)
    finally:
        adapter.destroy(data)


def _blocks(n: int, block: int) -> list[int]:
    full, rest = divmod(n, block)
    return [block] * full + ([rest] if rest else [])


def _pipe_send(
    adapter: PipeAdapter, data: Any, credit: Any, barrier: Any, n: int, block: int,
    payload: Any, as_bytes: bool,
) -> None:
    out = adapter.open(data, 1)
    send = out.send_bytes if as_bytes else out.send
    payload = made(payload)
    wait_for_credit = adapter.open(credit, 0).recv
    barrier.wait()
    for number, count in enumerate(_blocks(n, block)):
        if number >= 2:
            wait_for_credit()
        for _ in range(count):
            send(payload)


def _pipe_receive(
    adapter: PipeAdapter, data: Any, credit: Any, barrier: Any, n: int, block: int,
    expected: Any, as_bytes: bool,
) -> float:
    source = adapter.open(data, 0)
    recv = source.recv_bytes if as_bytes else source.recv
    grant = adapter.open(credit, 1).send
    blocks = _blocks(n, block)
    # The sender waits for credit before each block from the third on, so the
    # last two blocks need none: granting them would write to a pipe that
    # nobody reads any more.
    granted = len(blocks) - 2
    untimed = warmup_items(expected)
    barrier.wait()
    start = time.perf_counter()
    for number, count in enumerate(blocks):
        for _ in range(count - 1):
            recv()
            untimed -= 1
            if untimed == 0:
                start = time.perf_counter()
        last = recv()
        untimed -= 1
        if untimed == 0:
            start = time.perf_counter()
        if number < granted:
            grant(None)
    elapsed = time.perf_counter() - start
    check_last(last, expected)
    return elapsed


def memcpy(n: int, settings: Settings) -> float:
    """Seconds for ``n`` copies of 1 MiB between two buffers in one fresh process."""
    return run_processes([(_copy, (n,))], settings.timeout)[0]


def _copy(n: int) -> float:
    src = bytes(MIB)
    dst = bytearray(MIB)
    dst[:] = src  # fault both buffers in before the clock starts
    start = time.perf_counter()
    for _ in range(n):
        dst[:] = src
    return time.perf_counter() - start


def rate(n: int, elapsed: float) -> Sample:
    return Sample(value=n / elapsed, elapsed=elapsed)


def gigabytes_per_second(n: int, size: int, elapsed: float) -> Sample:
    return Sample(value=n * size / elapsed / 1e9, elapsed=elapsed)
