"""Shared containers: dict and list operations, and the memory a shared dict costs its readers.

interproc's SharedDict and SharedList run against ``multiprocessing``'s
``Manager().dict()`` / ``Manager().list()`` proxies, UltraDict, and a plain
``dict`` or ``list`` as a reference line.  Every implementation is driven by
the very same loop, with the subscript and method syntax a program would
write (``d[k]``, ``d[k] = v``, ``l.append(x)``).

UltraDict keeps a full ordinary dict in every process and shares only a
stream of pickled updates (plus, when that stream fills, a pickled full
dump).  Each UltraDict here gets a stream large enough to hold every update
of its trial, so it never pays for a full dump in a timed loop, and a fixed
full-dump segment, so that every shared-memory file it makes has a name
known in advance and is removed after the trial whatever happened.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable, NamedTuple

from . import adapters
from .runner import CTX, Sample, Settings, TrialError, run_processes

__all__ = [
    "PREFILL", "READERS", "dict_child_set_get", "dict_memory", "dict_reads", "dict_writes",
    "list_appends", "list_reads", "memory_entries",
]

# Keys (or indexes) the one-process read and write cases cycle over.
PREFILL = 10_000
# Processes that share the dict in the memory case, and its size.
READERS = 4
_MEMORY_ENTRIES = 1_000_000
_MEMORY_ENTRIES_QUICK = 20_000

_names = itertools.count()


def _unique_name(prefix: str) -> str:
    return f"{prefix}{os.getpid()}_{next(_names)}"


class Capacity(NamedTuple):
    """What one trial will put in a container: how many writes, how many live entries."""

    updates: int
    entries: int


class ContainerAdapter(adapters.Implementation):
    """A dict or list that a forked child uses as the parent made it.

    ``make`` runs in the parent and returns a handle; ``open`` turns the
    handle into the container in the child; ``destroy`` runs in the parent
    once the children are gone.
    """

    def make(self, capacity: Capacity) -> Any:
        raise NotImplementedError

    def open(self, handle: Any) -> Any:
        return handle

    def destroy(self, handle: Any) -> None:
        pass


class SharedDictAdapter(ContainerAdapter):
    key = "interproc_dict"
    label = "interproc.SharedDict"
    module = "interproc"

    def load(self) -> None:
        from interproc import SharedDict, unlink

        self._dict = SharedDict
        self._unlink = unlink

    def make(self, capacity: Capacity) -> Any:
        # Anonymous (a memfd): nothing is left behind if the trial is killed.
        return self._dict()

    def destroy(self, handle: Any) -> None:
        handle.close()

    # The memory case: a named dict, made and filled by one process and
    # opened by name in the others.
    def create(self, name: str, capacity: Capacity) -> Any:
        return self._dict(name=name, create=True)

    def fill(self, d: Any, data: dict) -> None:
        d.update(data)

    def attach(self, name: str) -> Any:
        return self._dict(name=name, create=False)

    def close(self, d: Any) -> None:
        d.close()

    def remove(self, name: str) -> None:
        try:
            self._unlink(name)
        except FileNotFoundError:
            pass


class SharedListAdapter(ContainerAdapter):
    key = "interproc_list"
    label = "interproc.SharedList"
    module = "interproc"

    def load(self) -> None:
        from interproc import SharedList

        self._list = SharedList

    def make(self, capacity: Capacity) -> Any:
        return self._list()

    def destroy(self, handle: Any) -> None:
        handle.close()


class _ManagerAdapter(ContainerAdapter):
    module = "multiprocessing"
    typeid = ""

    def make(self, capacity: Capacity) -> Any:
        # The manager's server process is forked before the trial's
        # processes; the child uses the proxy it inherits.
        manager = CTX.Manager()
        try:
            return manager, getattr(manager, self.typeid)()
        except BaseException:
            manager.shutdown()
            raise

    def open(self, handle: Any) -> Any:
        return handle[1]

    def destroy(self, handle: Any) -> None:
        handle[0].shutdown()


class ManagerDictAdapter(_ManagerAdapter):
    key = "mp_dict"
    label = "mp Manager().dict()"
    typeid = "dict"


class ManagerListAdapter(_ManagerAdapter):
    key = "mp_list"
    label = "mp Manager().list()"
    typeid = "list"


class PlainDictAdapter(ContainerAdapter):
    key = "builtin_dict"
    label = "dict (reference)"
    module = "builtins"

    def make(self, capacity: Capacity) -> Any:
        return {}


class PlainListAdapter(ContainerAdapter):
    key = "builtin_list"
    label = "list (reference)"
    module = "builtins"

    def make(self, capacity: Capacity) -> Any:
        return []


class UltraDictAdapter(ContainerAdapter):
    """UltraDict (PyPI ``UltraDict``), sized so that no timed loop triggers a full dump.

    Options, and why:

    - ``buffer_size``: room for every update the trial makes, so writes only
      append to the stream (a full stream makes the writer pickle the whole
      dict into the full-dump segment, and every other process load it).
    - ``full_dump_size``: a fixed full-dump segment, ``<name>_full``, large
      enough for the trial's entries.  Without it each dump goes to a new
      randomly named segment.
    - ``shared_lock`` stays off: no case has two processes writing, and the
      processes that share a dict here are forked from the one that made it,
      so they share its ``multiprocessing.RLock``.  ``shared_lock=True``
      (which needs the ``atomics`` package) is for processes that attach by
      name and write.
    - ``auto_unlink=False``: the parent removes the segments itself, by
      name, after the children are gone.

    Importing UltraDict patches ``multiprocessing.resource_tracker`` to stop
    tracking ``shared_memory`` segments (in this process and its children):
    nothing else in the benchmarks uses them.
    """

    key = "ultradict"
    label = "UltraDict"
    module = "UltraDict"
    # A pickled (True, key, value) update of ints below 2**31 takes at most
    # 25 bytes, plus UltraDict's 6-byte header; a pickled dict of such ints
    # about 10 bytes an entry.
    _UPDATE_BYTES = 32
    _ENTRY_BYTES = 16
    _SLACK = 1 << 16

    def load(self) -> None:
        from UltraDict import UltraDict

        self._class = UltraDict

    def _options(self, capacity: Capacity) -> dict:
        return {
            "buffer_size": capacity.updates * self._UPDATE_BYTES + self._SLACK,
            "full_dump_size": capacity.entries * self._ENTRY_BYTES + self._SLACK,
            "shared_lock": False,
            "auto_unlink": False,
        }

    def make(self, capacity: Capacity) -> Any:
        name = _unique_name("ipbench_ud")
        try:
            return self._class(name=name, create=True, **self._options(capacity))
        except BaseException:
            self.remove(name)
            raise

    def destroy(self, handle: Any) -> None:
        try:
            handle.unlink()
        finally:
            self.remove(handle.name)

    def create(self, name: str, capacity: Capacity) -> Any:
        return self._class(name=name, create=True, **self._options(capacity))

    def fill(self, d: Any, data: dict) -> None:
        d.update(data)
        # One full dump at the end, so that the readers load the dict from a
        # single pickle, as a process attaching late does, rather than by
        # replaying a stream of single updates.
        d.dump()

    def attach(self, name: str) -> Any:
        return self._class(name=name, create=False)

    def close(self, d: Any) -> None:
        d.close()

    def remove(self, name: str) -> None:
        # Whatever a killed trial left: the control block, the update stream
        # and the full dump.
        for suffix in ("", "_memory", "_full"):
            try:
                os.unlink(f"/dev/shm/{name}{suffix}")
            except FileNotFoundError:
                pass


for _cls in (SharedDictAdapter, SharedListAdapter, ManagerDictAdapter, ManagerListAdapter,
             PlainDictAdapter, PlainListAdapter, UltraDictAdapter):
    adapters.register(_cls)


def _with_container(
    adapter: ContainerAdapter, capacity: Capacity, job: Callable[..., tuple[float, float]],
    args: tuple, settings: Settings,
) -> tuple[float, float]:
    """Run ``job(adapter, handle, *args)`` in one fresh child, which opens the
    container from the handle; the parent makes the container and destroys it."""
    handle = adapter.make(capacity)
    try:
        return run_processes([(job, (adapter, handle, *args))], settings.timeout)[0]
    finally:
        adapter.destroy(handle)


def _ops(result: tuple[float, float]) -> Sample:
    ops, elapsed = result
    return Sample(value=ops / elapsed, elapsed=elapsed)


# --- dict set then get, in a child ---------------------------------------------------------

def dict_child_set_get(adapter: ContainerAdapter, n: int, settings: Settings) -> Sample:
    """Operations per second of a child doing ``d[i] = i`` for ``i`` in ``range(n)``,
    then ``d[i]`` for the same keys, on a dict the parent made: 2n operations."""
    return _ops(_with_container(adapter, Capacity(n, n), _set_get, (n,), settings))


def _set_get(adapter: ContainerAdapter, handle: Any, n: int) -> tuple[float, float]:
    d = adapter.open(handle)
    start = time.perf_counter()
    for i in range(n):
        d[i] = i
    for i in range(n):
        d[i]
    elapsed = time.perf_counter() - start
    # Outside the clock: a fast dict that loses data must not post a record.
    if len(d) != n or d[n - 1] != n - 1:
        raise TrialError(f"after {n} sets: len {len(d)}, last value {d.get(n - 1)!r}")
    return 2 * n, elapsed


# --- one process: dict reads and writes, list appends and reads ----------------------------

def dict_reads(adapter: ContainerAdapter, n: int, settings: Settings) -> Sample:
    """``d[k]`` per second in one process, cycling over the keys of a dict
    prefilled with ``PREFILL`` small ints."""
    return _ops(_with_container(adapter, Capacity(PREFILL, PREFILL), _reads, (n,), settings))


def _prefilled_dict(adapter: ContainerAdapter, handle: Any) -> tuple[Any, list[int]]:
    d = adapter.open(handle)
    keys = list(range(PREFILL))
    d.update({k: k for k in keys})
    return d, keys


def _reads(adapter: ContainerAdapter, handle: Any, n: int) -> tuple[float, float]:
    d, keys = _prefilled_dict(adapter, handle)
    start = time.perf_counter()
    for k in itertools.islice(itertools.cycle(keys), n):
        d[k]
    elapsed = time.perf_counter() - start
    last = keys[-1]
    if d[last] != last:
        raise TrialError(f"d[{last}] is {d[last]!r}")
    return n, elapsed


def dict_writes(adapter: ContainerAdapter, n: int, settings: Settings) -> Sample:
    """``d[k] = v`` per second in one process: each write gives one of the
    ``PREFILL`` existing keys, in turn, a new small int."""
    capacity = Capacity(PREFILL + n, PREFILL)
    return _ops(_with_container(adapter, capacity, _writes, (n,), settings))


def _writes(adapter: ContainerAdapter, handle: Any, n: int) -> tuple[float, float]:
    d, keys = _prefilled_dict(adapter, handle)
    start = time.perf_counter()
    for v, k in zip(range(n), itertools.cycle(keys)):
        d[k] = v
    elapsed = time.perf_counter() - start
    k = keys[(n - 1) % len(keys)]
    if len(d) != len(keys) or d[k] != n - 1:
        raise TrialError(f"after {n} writes: len {len(d)}, d[{k}] is {d[k]!r}, not {n - 1}")
    return n, elapsed


def list_appends(adapter: ContainerAdapter, n: int, settings: Settings) -> Sample:
    """``l.append(i)`` per second in one process, onto an empty list."""
    return _ops(_with_container(adapter, Capacity(n, n), _appends, (n,), settings))


def _appends(adapter: ContainerAdapter, handle: Any, n: int) -> tuple[float, float]:
    lst = adapter.open(handle)
    start = time.perf_counter()
    for i in range(n):
        lst.append(i)
    elapsed = time.perf_counter() - start
    if len(lst) != n or lst[-1] != n - 1:
        raise TrialError(f"after {n} appends: len {len(lst)}, last {lst[-1]!r}")
    return n, elapsed


def list_reads(adapter: ContainerAdapter, n: int, settings: Settings) -> Sample:
    """``l[i]`` per second in one process, cycling over the indexes of a list
    prefilled with ``PREFILL`` small ints."""
    return _ops(_with_container(adapter, Capacity(PREFILL, PREFILL), _index_reads, (n,),
                                settings))


def _index_reads(adapter: ContainerAdapter, handle: Any, n: int) -> tuple[float, float]:
    lst = adapter.open(handle)
    lst.extend(range(PREFILL))
    start = time.perf_counter()
    for i in itertools.islice(itertools.cycle(range(PREFILL)), n):
        lst[i]
    elapsed = time.perf_counter() - start
    if lst[PREFILL - 1] != PREFILL - 1:
        raise TrialError(f"l[{PREFILL - 1}] is {lst[PREFILL - 1]!r}")
    return n, elapsed


# --- memory of one dict shared by several processes ----------------------------------------

def memory_entries(settings: Settings) -> int:
    return _MEMORY_ENTRIES_QUICK if settings.quick else _MEMORY_ENTRIES


def dict_memory(adapter: Any, n: int, settings: Settings) -> Sample:
    """MiB of memory that ``READERS`` processes gain by reading every entry of
    one shared dict of small ints: the sum of their PSS increases, and (as a
    second figure) the sum of their RSS increases.

    One process makes the named dict, fills it and exits; the readers then
    open it by name, so no process that the figures leave out maps it while
    they are measured.
    """
    entries = memory_entries(settings)
    name = _unique_name("ipbench-mem-")
    try:
        run_processes([(_fill, (adapter, name, entries))], settings.timeout)
        barriers = [CTX.Barrier(READERS) for _ in range(3)]
        job = (_read_all, (adapter, name, entries, barriers, settings.timeout))
        start = time.perf_counter()
        grown = run_processes([job] * READERS, settings.timeout)
        elapsed = time.perf_counter() - start
    finally:
        adapter.remove(name)
    pss = sum(p for p, _ in grown) / 1024
    rss = sum(r for _, r in grown) / 1024
    return Sample(value=pss, elapsed=elapsed, more=(rss,))


def _fill(adapter: Any, name: str, entries: int) -> None:
    d = adapter.create(name, Capacity(entries, entries))
    adapter.fill(d, {i: i for i in range(entries)})
    adapter.close(d)


def _rollup_kib() -> tuple[int, int]:
    """This process's (PSS, RSS) in KiB, from /proc/self/smaps_rollup."""
    found = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            field, _, rest = line.partition(":")
            if field in ("Pss", "Rss"):
                found[field] = int(rest.split()[0])
    return found["Pss"], found["Rss"]


def _read_all(
    adapter: Any, name: str, entries: int, barriers: list, timeout: float,
) -> tuple[int, int]:
    started, read_all, measured = barriers
    # The first figure waits until every reader is forked: each fork adds a
    # process to those sharing the parent's pages, which lowers the PSS of
    # the readers already running.  The implementation's module was
    # imported by the parent before the fork: opening the dict counts,
    # loading the module does not.
    started.wait(timeout)
    pss0, rss0 = _rollup_kib()
    d = adapter.attach(name)
    total = 0
    for k in range(entries):
        total += d[k]
    if total != entries * (entries - 1) // 2:
        raise TrialError(f"the entries add up to {total}, not {entries * (entries - 1) // 2}")
    # Every reader has mapped what it reads before any figure is taken, and
    # none leaves (unmapping its share) until all are taken.
    read_all.wait(timeout)
    pss1, rss1 = _rollup_kib()
    measured.wait(timeout)
    adapter.close(d)
    return pss1 - pss0, rss1 - rss0
