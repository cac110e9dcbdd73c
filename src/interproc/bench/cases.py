"""The benchmark cases: who runs, what is measured, and the targets."""
from __future__ import annotations

import contextlib
import fnmatch
import functools
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

from . import adapters, aio, arrays, containers, latency, resources, sync, throughput
from . import redis as redis_cases
from .runner import Sample, Series, Settings
from .throughput import BYTES_32, MIB, OBJECT

__all__ = ["Case", "Contender", "Metric", "Target", "all_cases", "bind", "select", "session"]


def _significant(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ops(value: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{_significant(value / scale)} {suffix}ops/s"
    return f"{_significant(value)} ops/s"


@dataclass(frozen=True)
class Metric:
    unit: str
    higher_is_better: bool
    format: Callable[[float], str]

    def ratio_text(self, ratio: float) -> str:
        if self.higher_is_better or ratio <= 0 or ratio >= 1:
            return f"{ratio:.2f}×"
        return f"{ratio:.3f}× (1/{1 / ratio:.1f})"


OPS = Metric("ops/s", True, _ops)
GBPS = Metric("GB/s", True, lambda v: f"{v:.2f} GB/s")
ROUND_TRIP = Metric("µs per round trip", False, lambda v: f"{_significant(v)} µs")
CPU = Metric("CPU s", False, lambda v: f"{v:.4f} s CPU")
MEMORY = Metric("KiB per queue", False, lambda v: f"{v:.1f} KiB")
NANOS = Metric("ns per call", False, lambda v: f"{_significant(v)} ns")
PSS_SUM = Metric("MiB PSS, summed over processes", False, lambda v: f"{v:,.1f} MiB PSS")
RSS_SUM = Metric("MiB RSS, summed over processes", False, lambda v: f"{v:,.1f} MiB RSS")
WAKE = Metric("µs from put to the awaiting coroutine", False,
              lambda v: f"{_significant(v)} µs wake")


def _count(noun: str, after: str = "") -> Callable[[float], str]:
    def format(value: float) -> str:
        return f"{value:,.0f} {noun}{'' if value == 1 else 's'}{after}"

    return format


THREADS = Metric("threads in the process", False, _count("thread"))
FDS_ADDED = Metric("descriptors the waits added", False, _count("descriptor", " added"))
FDS = Metric("descriptors in the process", False, _count("descriptor"))


@dataclass(frozen=True)
class Target:
    """A goal for interproc: a ratio to ``peer``, or its own value when ``peer`` is None."""

    peer: str | None
    bound: float
    text: str

    def met(self, value: float, metric: Metric) -> bool:
        return value >= self.bound if metric.higher_is_better else value <= self.bound


@dataclass(frozen=True)
class Contender:
    """One implementation in one case.

    ``trial(adapter, n, settings)`` runs one trial in fresh processes.
    ``adapter`` names the queue adapter; ``None`` marks a reference figure
    that needs no queue.
    """

    key: str
    label: str
    adapter: str | None
    trial: Callable[[Any, int, Settings], Sample]


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    description: str
    metric: Metric
    contenders: tuple[Contender, ...]
    targets: tuple[Target, ...] = ()
    # Sized cases move n items per trial, n scaled to the trial length;
    # the others are bounded by time or are one-shot.
    sized: bool = True
    quick_n: int = 2000
    n_max: int = 20_000_000
    # False where peers' values are context only: a ratio of two near-zero
    # CPU figures is noise.
    compare: bool = True
    # Further figures each trial reports beside the main one; shown in the
    # measurements only.
    more: tuple[Metric, ...] = ()
    # What the case needs around all of its trials (a Redis server): a
    # context manager that takes the settings and yields the settings its
    # trials get.  It may raise adapters.Unavailable (every contender is
    # then skipped) or TrialError (every contender failed).
    around: Callable[[Settings], ContextManager[Settings]] | None = None


def _streaming(
    metric: Metric, stream: Callable[..., float] = throughput.stream, **options: Any
) -> Callable[[Any, int, Settings], Sample]:
    def trial(adapter: Any, n: int, settings: Settings) -> Sample:
        elapsed = stream(adapter, n, settings, **options)
        if metric is GBPS:
            size = throughput.payload_bytes(options["payload"])
            return throughput.gigabytes_per_second(n, size, elapsed)
        return throughput.rate(n, elapsed)

    return trial


def _memcpy(adapter: Any, n: int, settings: Settings) -> Sample:
    return throughput.gigabytes_per_second(n, MIB, throughput.memcpy(n, settings))


def _queue(key: str, trial: Callable[[Any, int, Settings], Sample], mode: str = "") -> Contender:
    label = adapters.label(key) + (f" {mode}" if mode else "")
    return Contender(key, label, key, trial)


def _pipe(key: str, adapter: str, trial: Callable[[Any, int, Settings], Sample]) -> Contender:
    # The contender's key is what targets and the report go by ("interproc"
    # is ours); the adapter's key tells pipes from queues.
    return Contender(key, adapters.label(adapter), adapter, trial)


def all_cases(settings: Settings) -> list[Case]:
    obj = _streaming(OPS, payload=OBJECT)
    fan_in = _streaming(OPS, payload=OBJECT, producers=4)
    small = _streaming(OPS, payload=BYTES_32)
    batched = _streaming(OPS, payload=OBJECT, batch=100)
    large = _streaming(GBPS, payload=bytes(MIB))
    pipe_obj = _streaming(OPS, throughput.pipe_stream, payload=OBJECT)
    pipe_large = _streaming(GBPS, throughput.pipe_stream, payload=bytes(MIB), as_bytes=True)
    idle_share = 0.01
    idle_target = Target(None, idle_share * settings.idle_seconds,
                         f"≤ {idle_share * settings.idle_seconds:.3g} s (1% of a core)")
    return [
        Case(
            "object-1to1", "1→1 object",
            "one producer, one consumer, the tuple (12345, 'hello world payload')",
            OPS,
            (_queue("interproc", obj), _queue("mp", obj), _queue("faster_fifo", obj),
             _queue("hyperq", obj)),
            (Target("mp", 6, "≥ 6× mp.Queue"), Target("hyperq", 3, "≥ 3× hyperq.HyperQ")),
        ),
        Case(
            "object-4to1", "4→1 object",
            "four producers, one consumer, the same tuple",
            OPS,
            (_queue("interproc", fan_in), _queue("mp", fan_in), _queue("faster_fifo", fan_in)),
            (Target("mp", 6, "≥ 6× mp.Queue"),),
        ),
        Case(
            "bytes-32", "32-byte bytes",
            "one producer, one consumer, a 32-byte bytes object",
            OPS,
            (_queue("interproc", small), _queue("hyperq_bytes", small), _queue("mp", small),
             _queue("faster_fifo", small)),
            (Target("hyperq_bytes", 1.0, "≥ 1.0× hyperq.BytesHyperQ"),),
        ),
        Case(
            "batch-100", "batches of 100",
            "put_many/get_many in lists of 100 against mp.Queue's one-at-a-time put/get",
            OPS,
            (_queue("interproc", batched, "put_many/get_many"), _queue("mp", obj, "put/get"),
             _queue("faster_fifo", batched, "put_many/get_many")),
            (Target("mp", 12, "≥ 12× mp put/get"),),
        ),
        Case(
            "bytes-1mib", "1 MiB bytes",
            "one producer, one consumer, 1 MiB bytes objects; memcpy for reference",
            GBPS,
            (_queue("interproc", large), _queue("mp", large), _queue("faster_fifo", large),
             Contender("memcpy", "memcpy 1 MiB (reference)", None, _memcpy)),
            (Target("mp", 4, "≥ 4× mp.Queue"),),
            quick_n=16, n_max=200_000,
        ),
        Case(
            "ping-pong", "ping-pong",
            "median round trip through two queues, a child echoing each item",
            ROUND_TRIP,
            (_queue("interproc", latency.ping_pong), _queue("mp", latency.ping_pong),
             _queue("faster_fifo", latency.ping_pong)),
            (Target("mp", 1 / 8, "≤ 1/8 of mp.Queue"),),
            sized=False,
        ),
        Case(
            "idle-cpu", "idle CPU",
            f"CPU used by a child blocked in get() for {settings.idle_seconds:g} s",
            CPU,
            (_queue("interproc", resources.idle_cpu), _queue("mp", resources.idle_cpu)),
            (idle_target,),
            sized=False, compare=False,
        ),
        Case(
            "memory", "memory per queue",
            f"resident memory added per new, unused queue "
            f"({resources.QUEUES_PER_TRIAL} created in a fresh child)",
            MEMORY,
            (_queue("interproc", resources.queue_memory), _queue("mp", resources.queue_memory),
             _queue("faster_fifo", resources.queue_memory)),
            sized=False,
        ),
        Case(
            "pipe-ping-pong", "pipe ping-pong",
            "median round trip over one duplex Pipe (pyzmq: REQ/REP over ipc://), "
            "a child echoing each object",
            ROUND_TRIP,
            (_pipe("interproc", "interproc_pipe", latency.pipe_ping_pong),
             _pipe("mp", "mp_pipe", latency.pipe_ping_pong),
             _pipe("pyzmq", "pyzmq", latency.pipe_ping_pong)),
            (Target("mp", 1 / 10, "≤ 1/10 of mp.Pipe"),
             Target("pyzmq", 1 / 2, "≤ 1/2 of pyzmq REQ/REP")),
            sized=False,
        ),
        Case(
            "pipe-stream", "pipe stream",
            "one-way Pipe(duplex=False), send/recv of the tuple (12345, 'hello world payload')",
            OPS,
            (_pipe("interproc", "interproc_pipe", pipe_obj),
             _pipe("mp", "mp_pipe", pipe_obj)),
            (Target("mp", 6, "≥ 6× mp.Pipe"),),
        ),
        Case(
            "pipe-1mib", "pipe 1 MiB",
            "one-way Pipe(duplex=False), send_bytes/recv_bytes of 1 MiB",
            GBPS,
            (_pipe("interproc", "interproc_pipe", pipe_large),
             _pipe("mp", "mp_pipe", pipe_large)),
            (Target("mp", 4, "≥ 4× mp.Pipe"),),
            quick_n=16, n_max=200_000,
        ),
        Case(
            "pipe-idle-cpu", "pipe idle CPU",
            f"CPU used by a child blocked in recv() for {settings.idle_seconds:g} s",
            CPU,
            (_pipe("interproc", "interproc_pipe", resources.pipe_idle_cpu),
             _pipe("mp", "mp_pipe", resources.pipe_idle_cpu)),
            (idle_target,),
            sized=False, compare=False,
        ),
        Case(
            "event-ping-pong", "Event ping-pong",
            "median set→wait→clear round between two processes",
            ROUND_TRIP,
            (_module("interproc", sync.event_ping_pong), _module("mp", sync.event_ping_pong)),
            (Target("mp", 1 / 10, "≤ 1/10 of multiprocessing's"),),
            sized=False,
        ),
        Case(
            "event-idle-cpu", "Event idle CPU",
            f"CPU used by a child blocked in Event.wait() for {settings.idle_seconds:g} s",
            CPU,
            (_module("interproc", sync.event_idle_cpu), _module("mp", sync.event_idle_cpu)),
            (idle_target,),
            sized=False, compare=False,
        ),
        Case(
            "barrier-round", "Barrier(2) round",
            "median round of a Barrier(2) shared by two processes",
            ROUND_TRIP,
            (_module("interproc", sync.barrier_round), _module("mp", sync.barrier_round)),
            (Target("mp", 1 / 10, "≤ 1/10 of multiprocessing's"),),
            sized=False,
        ),
        Case(
            "lock-uncontended", "uncontended Lock",
            "acquire+release of a Lock no other process wants",
            NANOS,
            (_module("interproc", sync.lock_uncontended), _module("mp", sync.lock_uncontended)),
            (Target("mp", 1.0, "no slower than multiprocessing's"),),
            quick_n=20_000,
        ),
        Case(
            "value-increments", "Value locked increments",
            "two processes increment one shared Value('q') under its own lock",
            OPS,
            (_module("interproc", sync.locked_increments), _module("mp", sync.locked_increments)),
            (Target("mp", 2, "≥ 2× multiprocessing's"),),
            n_max=5_000_000,
        ),
        Case(
            "atomic-add", "atomic fetch_add",
            "one process: interproc Value.fetch_add(1) against multiprocessing's "
            "increment under the Value's lock",
            OPS,
            (_module("interproc", sync.single_increments), _module("mp", sync.single_increments)),
            (Target(None, 10e6, "≥ 10 M ops/s"), Target("mp", 10, "≥ 10× mp locked increment")),
            quick_n=20_000,
        ),
        *_container_cases(settings),
        *_redis_cases(),
        *_asyncio_cases(settings),
        *_array_cases(settings),
    ]


def _container(key: str, adapter: str, trial: Callable[[Any, int, Settings], Sample]) -> Contender:
    return Contender(key, adapters.label(adapter), adapter, trial)


def _container_cases(settings: Settings) -> list[Case]:
    entries = containers.memory_entries(settings)
    one_million = Target(None, 1e6, "≥ 1 M ops/s")
    return [
        Case(
            "dict-child-set-get", "dict set+get in a child",
            "a child does d[i] = i, then d[i], for i in range(n), on a dict the parent made "
            "(2n operations)",
            OPS,
            (_container("interproc", "interproc_dict", containers.dict_child_set_get),
             _container("mp", "mp_dict", containers.dict_child_set_get),
             _container("ultradict", "ultradict", containers.dict_child_set_get)),
            (Target("mp", 50, "≥ 50× Manager().dict()"),
             Target("ultradict", 1.0, "≥ 1.0× UltraDict")),
            n_max=5_000_000,
        ),
        Case(
            "dict-read", "dict d[k] reads",
            f"one process reads d[k], cycling over the keys of a dict prefilled with "
            f"{containers.PREFILL:,} small ints",
            OPS,
            (_container("interproc", "interproc_dict", containers.dict_reads),
             _container("reference", "builtin_dict", containers.dict_reads),
             _container("ultradict", "ultradict", containers.dict_reads)),
            (Target(None, 2e6, "≥ 2 M ops/s"),),
        ),
        Case(
            "dict-write", "dict d[k] = v writes",
            f"one process writes d[k] = v, giving each of {containers.PREFILL:,} existing "
            f"small-int keys in turn a new small int",
            OPS,
            (_container("interproc", "interproc_dict", containers.dict_writes),
             _container("reference", "builtin_dict", containers.dict_writes),
             _container("ultradict", "ultradict", containers.dict_writes)),
            (one_million,),
            n_max=10_000_000,
        ),
        Case(
            "list-append", "list append",
            "one process appends small ints to an empty list",
            OPS,
            (_container("interproc", "interproc_list", containers.list_appends),
             _container("mp", "mp_list", containers.list_appends),
             _container("reference", "builtin_list", containers.list_appends)),
            (one_million,),
            n_max=10_000_000,
        ),
        Case(
            "list-read", "list l[i] reads",
            f"one process reads l[i], cycling over the indexes of a list of "
            f"{containers.PREFILL:,} small ints",
            OPS,
            (_container("interproc", "interproc_list", containers.list_reads),
             _container("mp", "mp_list", containers.list_reads),
             _container("reference", "builtin_list", containers.list_reads)),
            (one_million,),
        ),
        Case(
            "dict-memory", "dict memory",
            f"memory {containers.READERS} processes gain by reading every entry of one shared "
            f"dict of {entries:,} small ints: sum of their PSS increases (and of RSS)",
            PSS_SUM,
            (_container("interproc", "interproc_dict", containers.dict_memory),
             _container("ultradict", "ultradict", containers.dict_memory)),
            sized=False, more=(RSS_SUM,),
        ),
    ]


def _redis(key: str, label: str, adapter: str,
           trial: Callable[[str, int, Settings], Sample]) -> Contender:
    return Contender(key, label, adapter, lambda _adapter, n, settings: trial(key, n, settings))


def _redis_cases() -> list[Case]:
    overhead = Target("redis_py", 0.87, "≥ 0.87× redis-py (overhead ≤ 15%)")
    batch = redis_cases.BATCH
    return [
        Case(
            "redis-queue", "Redis queue put+get",
            "one process: put(x) then get() of the tuple (12345, 'hello world payload'), "
            "n times (2n operations), over TCP; interproc "
            "Manager(url).Queue() against RPUSH/BLPOP of pickled items with redis-py",
            OPS,
            (_redis("interproc", "interproc Manager(url).Queue()", "interproc_redis",
                    redis_cases.queue_put_get),
             _redis("redis_py", "redis-py RPUSH/BLPOP", "redis_py", redis_cases.queue_put_get)),
            (overhead,),
            quick_n=200, n_max=2_000_000, around=redis_cases.server,
        ),
        Case(
            "redis-dict", "Redis dict set+get",
            "one process: d[i] = i for i in range(n), then d[i] (2n operations), over TCP; "
            "interproc Manager(url).dict() against HSET/HGET of "
            "pickled keys and values with redis-py",
            OPS,
            (_redis("interproc", "interproc Manager(url).dict()", "interproc_redis",
                    redis_cases.dict_set_get),
             _redis("redis_py", "redis-py HSET/HGET", "redis_py", redis_cases.dict_set_get)),
            (overhead,),
            quick_n=200, n_max=2_000_000, around=redis_cases.server,
        ),
        Case(
            "redis-batch", f"Redis batches of {batch}",
            f"one process: put_many of {batch} tuples, then get_many until they are back, "
            f"against put(x) then get() one at a time, both on interproc "
            f"Manager(url).Queue() (2 operations per item)",
            OPS,
            (Contender("interproc", "interproc put_many/get_many", "interproc_redis",
                       lambda _adapter, n, settings: redis_cases.queue_batches(n, settings)),
             _redis("single", "interproc put/get", "interproc_redis",
                    lambda _key, n, settings: redis_cases.queue_put_get("interproc", n, settings))),
            (Target("single", 5, "≥ 5× single put/get"),),
            quick_n=2000, n_max=20_000_000, around=redis_cases.server,
        ),
    ]


def _asyncio_cases(settings: Settings) -> list[Case]:
    idle_share = 0.01
    small = _streaming(OPS, aio.async_stream, payload=OBJECT)
    sync_small = _streaming(OPS, payload=OBJECT)
    return [
        Case(
            "async-ping-pong", "async round trip",
            "median round trip from a coroutine: put_async a request, a child echoes it on "
            "a second queue, await get_async; vs run_in_executor(None, mp.Queue.get), "
            "aiomultiprocess Pool.apply and interproc's blocking put + get",
            ROUND_TRIP,
            (Contender("interproc", "interproc put_async + get_async", "interproc",
                       aio.async_ping_pong),
             Contender("executor", "mp.Queue put + run_in_executor(get)", "mp",
                       aio.executor_ping_pong),
             Contender("aiomultiprocess", adapters.label("aiomultiprocess"), "aiomultiprocess",
                       aio.pool_ping_pong),
             Contender("sync", "interproc put + get (blocking)", "interproc",
                       latency.ping_pong)),
            (Target("executor", 1 / 10, "≤ 1/10 of run_in_executor"),
             Target("sync", 3, "≤ 3× interproc blocking")),
            sized=False,
        ),
        Case(
            "async-1to1", "async 1→1 object",
            "a producer coroutine put_async, a consumer coroutine in another process "
            "get_async, the tuple (12345, 'hello world payload'); vs the same pipeline "
            "with blocking put/get",
            OPS,
            (Contender("interproc", "interproc put_async/get_async", "interproc", small),
             Contender("sync", "interproc put/get (blocking)", "interproc", sync_small)),
            (Target("sync", 0.5, "≥ 0.5× blocking put/get"),),
        ),
        Case(
            "async-idle-cpu", "async idle CPU",
            f"CPU used by a process whose loop has {aio.IDLE_WAITERS:,} get_async calls "
            f"pending on as many empty queues for {settings.async_idle_seconds:g} s",
            CPU,
            (Contender("interproc", f"interproc {aio.IDLE_WAITERS:,} × get_async", "interproc",
                       aio.idle_cpu),),
            (Target(None, idle_share * settings.async_idle_seconds,
                    f"≤ {idle_share * settings.async_idle_seconds:.3g} s (1% of a core)"),),
            sized=False,
        ),
        Case(
            "async-10k-waiters", "10k awaiting coroutines",
            f"{aio.MANY_WAITERS:,} coroutines in one loop, each awaiting get_async on its own "
            "queue: median µs from another process's put to one of them returning, and the "
            "process's threads and descriptors while they wait",
            WAKE,
            (Contender("interproc", f"interproc {aio.MANY_WAITERS:,} × get_async", "interproc",
                       aio.many_waiters),),
            sized=False, more=(THREADS, FDS_ADDED, FDS),
        ),
    ]


def _array_cases(settings: Settings) -> list[Case]:
    """Queue, then pipe, throughput of float64 arrays, one case per size of `arrays.SIZES`."""
    families = (  # in the order of arrays.KINDS
        ("queue", "Queue put/get", "mp.Queue", throughput.stream,
         lambda trial: (_queue("interproc", trial), _queue("mp", trial),
                        _queue("faster_fifo", trial))),
        ("pipe", "Pipe(duplex=False) send/recv", "mp.Pipe", throughput.pipe_stream,
         lambda trial: (_pipe("interproc", "interproc_pipe", trial),
                        _pipe("mp", "mp_pipe", trial))),
    )
    cases = []
    for kind, calls, mp_peer, stream, contenders in families:
        for tag, nbytes in arrays.SIZES.items():
            payload = arrays.ArrayPayload(arrays.sized(nbytes, settings))
            targets = []
            if nbytes >= MIB:
                targets.append(Target("mp", 5, f"≥ 5× {mp_peer}"))
            if nbytes >= 16 * MIB:
                targets.append(Target("copyto", 0.5, "≥ 0.5× the np.copyto floor"))
            size = arrays.size_text(nbytes)
            moved = size if payload.nbytes == nbytes else (
                f"{arrays.size_text(payload.nbytes)} (--quick; {size} in a real run)")
            cases.append(Case(
                arrays.case_name(kind, tag), f"{size} array {kind}",
                f"float64 numpy arrays of {moved}, one producer to one consumer, {calls}; "
                f"vs a SharedMemory block copied by hand and one np.copyto (the floor)",
                GBPS,
                (*contenders(_streaming(GBPS, stream, payload=payload)),
                 Contender("shm", "SharedMemory + np.copyto by hand", None,
                           functools.partial(arrays.shared_memory_stream, payload=payload)),
                 Contender("copyto", "np.copyto in one process (floor)", None,
                           functools.partial(arrays.copyto_floor, payload=payload))),
                tuple(targets),
                quick_n=max(2, min(2000, 16 * MIB // payload.nbytes)),
                around=arrays.needs_numpy,
            ))
    for tag, nbytes in arrays.VIEW_SIZES.items():
        payload = arrays.ArrayPayload(arrays.sized(nbytes, settings))
        size = arrays.size_text(nbytes)
        targets = (Target("copyto", 10, "≥ 10× the np.copyto floor"),) if tag == "100m" else ()
        cases.append(Case(
            arrays.case_name("view", tag), f"{size} array received in place",
            f"the consumer's side alone: interproc.Queue.get_view() (read in place, first and "
            f"last elements read, view released) vs get() (copied out), each timed once the "
            f"item is there, float64 arrays of {arrays.size_text(payload.nbytes)}; "
            f"vs one np.copyto of the same array",
            GBPS,
            (Contender("interproc", "interproc Queue.get_view()", None,
                       functools.partial(arrays.receive_only, payload=payload, in_place=True)),
             Contender("interproc_get", "interproc Queue.get()", None,
                       functools.partial(arrays.receive_only, payload=payload, in_place=False)),
             Contender("copyto", "np.copyto in one process (floor)", None,
                       functools.partial(arrays.copyto_floor, payload=payload))),
            targets,
            quick_n=2,
            # Sized by the receiving time alone, a trial would make the
            # producer copy in thousands of items: 4 GiB of them at most.
            n_max=max(4, 4 * arrays.GIB // payload.nbytes),
            around=arrays.needs_numpy,
        ))
    return cases


def _module(key: str, trial: Callable[[str, int, Settings], Sample]) -> Contender:
    # No adapter: the trial builds the primitives itself from the module.
    name = "interproc" if key == "interproc" else "multiprocessing"
    label = "interproc" if key == "interproc" else "multiprocessing"
    return Contender(key, label, None, lambda _adapter, n, settings: trial(name, n, settings))


def select(cases: list[Case], wanted: list[str]) -> list[Case]:
    """The cases named in ``wanted`` (names, 1-based numbers or shell-style
    patterns such as ``array-*``), in run order."""
    if not wanted:
        return cases
    chosen = set()
    for word in wanted:
        matching = {case.name for case in cases if fnmatch.fnmatchcase(case.name, word)}
        if word.isdigit() and 1 <= int(word) <= len(cases):
            chosen.add(cases[int(word) - 1].name)
        elif matching:
            chosen |= matching
        else:
            names = ", ".join(case.name for case in cases)
            raise ValueError(f"unknown case {word!r}; choose from {names} (or 1-{len(cases)})")
    return [case for case in cases if case.name in chosen]


@contextlib.contextmanager
def session(case: Case, settings: Settings) -> Iterator[Settings]:
    """What ``case`` needs around its trials (see ``Case.around``); yields
    the settings the trials get."""
    if case.around is None:
        yield settings
    else:
        with case.around(settings) as inner:
            yield inner


def bind(case: Case, settings: Settings) -> list[tuple[Series, Callable[[int], Sample] | None]]:
    """Each contender's series with its ready-to-run trial, or ``None`` if unavailable."""
    bound = []
    for contender in case.contenders:
        series = Series(contender.key, contender.label)
        try:
            adapter = adapters.load(contender.adapter) if contender.adapter else None
        except adapters.Unavailable as exc:
            series.skipped = str(exc)
            bound.append((series, None))
            continue
        bound.append((series, functools.partial(contender.trial, adapter, settings=settings)))
    return bound
