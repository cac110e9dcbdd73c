"""Fuzz target `segment`: attach to damaged segments of every kind, then use them.

A segment file is a database file: any byte of it may be wrong, and may
change after it was checked.  Seeding with whole files is impractical (a
heap's sparse undo log alone is 16 MiB), so the input drives the damage
structurally:

    u8   kind           which of KINDS to build
    u8   content        how much to put in it first (through the public API)
    u8   patches        how many patches follow (at most MAX_PATCHES)
    per patch:
      u8   how          low 2 bits: where (0-1 the header, 2 a data region,
                        3 anywhere in the file); the other bits: what (raw
                        bytes, an interesting 64- or 32-bit word, a word
                        moved by a small delta, a word copied from
                        elsewhere in the file, a flipped bit)
      u16/u32 offset    within the chosen area (u32 for "anywhere")
      ...               the patch's own bytes
    then ops, each:
      u8   op           low bit: which handle (the creator's, which
                        validated the segment before the damage, or a
                        second one attached after it); the rest picks the
                        operation of the kind
      ...               the operation's arguments

The object is made, filled, damaged through a writable mapping of its file
(/dev/shm for named objects, /proc/self/fd for anonymous ones), then a
second handle is attached and the operations run on both.  Every exception
interproc documents is a fine outcome; a signal, a sanitizer report, an
undocumented exception or a hang (libFuzzer's -timeout) is a finding.
"""
from __future__ import annotations

import os
import pickle
import struct
import warnings
from typing import Any, Callable, Dict, List, Tuple

from common import (
    Blocked,
    Finding,
    Reader,
    SegmentFile,
    Watchdog,
    Writer,
    close_all,
    documented_errors,
    item_from,
    private_shm,
    trace,
    real_loads,
    remove_stale_names,
    robust_mutexes_held,
    run_op,
    shm_path,
    unique_name,
)

import interproc
from interproc import _core, naming

MAX_PATCHES = 8
MAX_OPS = 40
QUEUE_CAP = 4096          # a small ring, so a few items reach overflow regions
BIG_ITEM = 6000
HEAP_START = getattr(_core, "HEAP_START", 4096 + (1 << 20) * 16)
IP_MAGIC = 0x434F525052544E49

ALLOWED = documented_errors()


# ---------------------------------------------------------------------------
# Operations.  Each takes (handle, reader) and returns nothing useful.

def _q_put(q, r):
    q.put_nowait(item_from(r, BIG_ITEM))


def _q_put_many(q, r):
    q.put_many([item_from(r, BIG_ITEM) for _ in range(r.below(5))], block=False)


def _q_get_many(q, r):
    q.get_many(max_items=1 + r.below(6), block=False)


def _q_get_timeout(q, r):
    q.get(timeout=0.001)


def _q_task_done(q, r):
    if hasattr(q, "task_done"):
        q.task_done()


def _q_info(q, r):
    if getattr(q, "name", None) is not None:
        naming.object_info(q.name)


QUEUE_OPS: List[Callable[[Any, Reader], Any]] = [
    _q_put, _q_put, lambda q, r: q.get_nowait(), lambda q, r: q.get_nowait(), _q_put_many,
    _q_get_many, _q_get_timeout, lambda q, r: q.qsize(), lambda q, r: q.empty(),
    lambda q, r: q.full(), _q_task_done, _q_info,
]


def _p_recv(c, r):
    if c.poll(0):
        c.recv()


def _p_recv_bytes(c, r):
    if c.poll(0):
        c.recv_bytes(maxlength=[None, 16, 1 << 20][r.below(3)])


def _p_recv_into(c, r):
    if c.poll(0):
        c.recv_bytes_into(bytearray(r.u8() * 32))


def _p_send_bytes(c, r):
    data = bytes(range(256)) * (1 + r.u8() // 8)
    c.send_bytes(data, r.u8(), r.u8())


PIPE_OPS = [
    lambda c, r: c.send(item_from(r, BIG_ITEM)), _p_recv, _p_recv, _p_recv_bytes, _p_recv_into,
    _p_send_bytes, lambda c, r: c.poll(0), lambda c, r: c.fileno(),
]


def _release(lock, r):
    lock.release()


LOCK_OPS = [
    lambda l, r: l.acquire(False), lambda l, r: l.acquire(timeout=0.001), _release,
    lambda l, r: l.locked(), lambda l, r: l.statistics(), lambda l, r: l.owner_died,
    lambda l, r: repr(l),
]

SEMAPHORE_OPS = [
    lambda s, r: s.acquire(False), lambda s, r: s.acquire(timeout=0.001), _release,
    lambda s, r: s.get_value(), lambda s, r: s.statistics(), lambda s, r: repr(s),
]

EVENT_OPS = [
    lambda e, r: e.set(), lambda e, r: e.clear(), lambda e, r: e.is_set(),
    lambda e, r: e.wait(0.001), lambda e, r: e.statistics(),
]

CONDITION_OPS = [
    lambda c, r: c.acquire(False), _release, lambda c, r: c.notify(r.u8() % 4),
    lambda c, r: c.notify_all(), lambda c, r: c.wait(0.001), lambda c, r: c.statistics(),
    lambda c, r: repr(c),
]

BARRIER_OPS = [
    lambda b, r: b.parties, lambda b, r: b.n_waiting, lambda b, r: b.broken,
    lambda b, r: b.wait(0.001), lambda b, r: b.reset(), lambda b, r: b.abort(),
    lambda b, r: b.statistics(),
]


def _v_set(v, r):
    v.value = r.u32() - (1 << 31)


def _v_lock(v, r):
    lock = v.get_lock()
    if lock.acquire(False):
        lock.release()


def _v_atomic(v, r):
    op = r.below(4)
    if op == 0:
        v.fetch_add(r.u8())
    elif op == 1:
        v.compare_exchange(r.u8(), r.u8())
    elif op == 2:
        v.exchange(r.u8())
    else:
        v.load()


VALUE_OPS = [lambda v, r: v.value, _v_set, _v_lock, _v_atomic, lambda v, r: repr(v)]


def _a_get(a, r):
    return a[r.u8() % 24 - 4]


def _a_set(a, r):
    a[r.u8() % 24 - 4] = r.u8()


ARRAY_OPS = [_a_get, _a_set, lambda a, r: a[:], lambda a, r: len(a), _v_lock]

KEYS = [0, 1, -7, "a", "key", "\u20ac", (1, "x"), 2.5, b"b", None, frozenset({1, 2}), 10**20,
        ("t", (2, 3)), True, 1.0]


def _key(r):
    return KEYS[r.below(len(KEYS))]


def _d_set(d, r):
    d[_key(r)] = item_from(r, 3000)


def _d_update(d, r):
    d.update({_key(r): item_from(r, 200) for _ in range(r.below(6))})


def _d_iter(d, r):
    for _ in d.items():
        pass


def _d_nested(d, r):
    v = d[r.u8() % 8 - 2] if isinstance(d, interproc.SharedList) else d.get(_key(r))
    if isinstance(v, (interproc.SharedDict, interproc.SharedList)):
        len(v)
        repr(v)


DICT_OPS = [
    _d_set, _d_set, lambda d, r: d[_key(r)], lambda d, r: d.get(_key(r)),
    lambda d, r: d.__delitem__(_key(r)), lambda d, r: _key(r) in d, lambda d, r: len(d),
    lambda d, r: d.pop(_key(r), None), lambda d, r: d.setdefault(_key(r), r.u8()),
    lambda d, r: d.popitem(), _d_update, lambda d, r: d.copy(), _d_iter,
    lambda d, r: d.increment(_key(r)), _d_nested, lambda d, r: d.clear() if r.u8() < 16 else None,
]


def _l_index(r):
    return r.u8() % 24 - 8


def _l_slice_set(l, r):
    a, b = _l_index(r), _l_index(r)
    l[a:b] = [item_from(r, 200) for _ in range(r.below(4))]


def _l_sort(l, r):
    l.sort(key=repr, reverse=bool(r.u8() & 1))


LIST_OPS = [
    lambda l, r: l.append(item_from(r, 3000)), lambda l, r: l[_l_index(r)],
    lambda l, r: l.__setitem__(_l_index(r), item_from(r, 200)),
    lambda l, r: l.__delitem__(_l_index(r)), lambda l, r: l.insert(_l_index(r), r.u8()),
    lambda l, r: l.pop(_l_index(r)), lambda l, r: l[_l_index(r):_l_index(r)], _l_slice_set,
    lambda l, r: len(l), lambda l, r: l.extend([r.u8()] * r.below(5)),
    lambda l, r: l.index(r.u8()), lambda l, r: l.count(None), lambda l, r: l.remove(r.u8()),
    _l_sort, lambda l, r: l.reverse(), lambda l, r: l.copy(), _d_nested,
]

ATTRS = ["a", "b", "value", "x1"]


def _ns_get(ns, r):
    try:
        getattr(ns, ATTRS[r.below(4)])
    except AttributeError:
        pass


def _ns_del(ns, r):
    try:
        delattr(ns, ATTRS[r.below(4)])
    except AttributeError:
        pass


NAMESPACE_OPS = [
    lambda ns, r: setattr(ns, ATTRS[r.below(4)], item_from(r, 200)), _ns_get, _ns_del,
    lambda ns, r: repr(ns), lambda ns, r: ns == ns,
]

# Every kind may also be looked up and listed as `interproc ls` does.


def _common_ops(kind: "Kind") -> List[Callable[[Any, Reader], Any]]:
    def info(obj, r):
        if kind.named:
            naming.object_info(kind.name)

    def ls(obj, r):
        if private_shm():
            naming.list_objects()
        elif kind.named:
            naming.object_info(kind.name)

    def attach(obj, r):
        if kind.named:
            kind.extra.append(interproc.attach(kind.name))

    return [info, ls, attach]


# ---------------------------------------------------------------------------
# Kinds: how to make, fill, find, re-attach and use each.

class Kind:
    named = True
    ops: List[Callable[[Any, Reader], Any]] = []

    def __init__(self) -> None:
        self.name = ""
        self.extra: List[Any] = []  # handles made by operations, closed at the end

    # Returns the handles on the new object.
    def make(self, r: Reader) -> List[Any]:
        raise NotImplementedError

    def path(self, handles: List[Any]) -> str:
        return shm_path(self.name)

    def attach(self, handles: List[Any]) -> List[Any]:
        return [interproc.attach(self.name)]

    def regions(self, seg: SegmentFile) -> List[Tuple[int, int]]:
        """Where the data is, beside the header."""
        hs = seg.header_size()
        if not 0 < hs < seg.size:
            hs = 4096
        return [(hs, min(seg.size - hs, 1 << 16))]

    def cleanup(self) -> None:
        if self.named:
            try:
                naming.unlink(self.name)
            except OSError:
                pass


class QueueKind(Kind):
    cls: Any = interproc.Queue
    ops = QUEUE_OPS

    def make(self, r):
        q = self.cls(maxsize=r.u8() % 12, name=self.name, capacity_bytes=QUEUE_CAP)
        n = r.below(8)
        for _ in range(n):
            run_op(lambda: q.put_nowait(item_from(r, BIG_ITEM)), ALLOWED)
        for _ in range(r.below(n + 1)):
            run_op(q.get_nowait, ALLOWED)
        return [q]


class SimpleQueueKind(QueueKind):
    cls = interproc.SimpleQueue

    def make(self, r):
        q = self.cls(name=self.name, capacity_bytes=QUEUE_CAP)
        for _ in range(r.below(8)):
            q.put(item_from(r, BIG_ITEM))
        if r.u8() & 1:
            run_op(q.get_nowait, ALLOWED)
        return [q]


class JoinableQueueKind(QueueKind):
    cls = interproc.JoinableQueue

    def make(self, r):
        handles = super().make(r)
        run_op(handles[0].task_done, ALLOWED)
        return handles


class PipeKind(Kind):
    named = False
    ops = PIPE_OPS

    def make(self, r):
        a, b = interproc.Pipe(capacity_bytes=QUEUE_CAP)
        for _ in range(r.below(6)):
            (a if r.u8() & 1 else b).send(item_from(r, BIG_ITEM))
        return [a, b]

    def path(self, handles):
        return f"/proc/self/fd/{handles[0]._handles[0]}"

    def attach(self, handles):
        return [real_loads(pickle.dumps(c)) for c in handles]


class LockKind(Kind):
    cls: Any = interproc.Lock
    ops = LOCK_OPS

    def make(self, r):
        lock = self.cls(name=self.name)
        for _ in range(r.below(3)):
            lock.acquire(False)
        return [lock]


class RLockKind(LockKind):
    cls = interproc.RLock


class SemaphoreKind(Kind):
    cls: Any = interproc.Semaphore
    ops = SEMAPHORE_OPS

    def make(self, r):
        s = self.cls(r.u8() % 4, name=self.name)
        s.acquire(False)
        return [s]


class BoundedSemaphoreKind(SemaphoreKind):
    cls = interproc.BoundedSemaphore


class EventKind(Kind):
    ops = EVENT_OPS

    def make(self, r):
        e = interproc.Event(name=self.name)
        if r.u8() & 1:
            e.set()
        return [e]


class ConditionKind(Kind):
    ops = CONDITION_OPS

    def make(self, r):
        c = interproc.Condition(name=self.name)
        if r.u8() & 1:
            c.acquire()
            c.notify()
        return [c]


class BarrierKind(Kind):
    ops = BARRIER_OPS

    def make(self, r):
        return [interproc.Barrier(1 + r.u8() % 3, name=self.name)]


class ValueKind(Kind):
    ops = VALUE_OPS

    def make(self, r):
        return [interproc.Value(["i", "q", "B"][r.below(3)], r.u8(), name=self.name)]

    def regions(self, seg):
        return [(_core.DATA_OFFSET, 64)]


class ArrayKind(ValueKind):
    ops = ARRAY_OPS

    def make(self, r):
        n = r.below(20)
        return [interproc.Array(["i", "d", "c"][r.below(3)], n, name=self.name)]


class _ContainerKind(Kind):
    def regions(self, seg):
        # The undo log's first entries, and the first blocks.
        return [(4096, 4096), (HEAP_START, min(max(seg.size - HEAP_START, 1), 1 << 16))]


class DictKind(_ContainerKind):
    ops = DICT_OPS

    def make(self, r):
        d = interproc.SharedDict(name=self.name)
        for _ in range(r.below(10)):
            d[_key(r)] = item_from(r, 3000)
        if r.u8() & 1 and len(d):
            d.popitem()  # a hole in the entry array
        return [d]


class ListKind(_ContainerKind):
    ops = LIST_OPS

    def make(self, r):
        lst = interproc.SharedList(name=self.name)
        for _ in range(r.below(10)):
            lst.append(item_from(r, 3000))
        return [lst]


class NamespaceKind(_ContainerKind):
    ops = NAMESPACE_OPS

    def make(self, r):
        ns = interproc.Namespace(name=self.name)
        for _ in range(r.below(4)):
            setattr(ns, ATTRS[r.below(4)], item_from(r, 200))
        return [ns]


def _by_type(i: int) -> Callable[[Any, Reader], Any]:
    def op(h, r):
        ops = LIST_OPS if isinstance(h, interproc.SharedList) else DICT_OPS
        return ops[i % len(ops)](h, r)
    return op


HEAP_OPS = [_by_type(i) for i in range(len(LIST_OPS))]


class HeapKind(_ContainerKind):
    """The anonymous heap a process's unnamed containers share.  There is no
    public way to attach to a second anonymous heap in one process, so this
    kind uses the internals a spawned child uses (containers._default and
    _rebuild's steps); it gets its own heap per input, so that one input's
    damage never reaches the next."""

    named = False
    ops = HEAP_OPS

    def make(self, r):
        from interproc import containers

        fd, _ = naming.open_segment(None, True, 0o600)
        heap = containers._register(_core.HeapCore(fd, _core.KIND_HEAP, True), None)
        self._saved_default = containers._default
        containers._default = heap  # anonymous containers made now live in this heap
        self._heap = heap
        d = interproc.SharedDict()
        inner = interproc.SharedList([1, 2, 3])
        d["list"] = inner                     # a stored reference to another container
        d["dict"] = interproc.SharedDict({"x": 1})
        for _ in range(r.below(6)):
            d[_key(r)] = item_from(r, 2000)
        return [d, inner]

    def path(self, handles):
        return f"/proc/self/fd/{self._heap.fd}"

    def attach(self, handles):
        from interproc import containers

        heap = containers._register(_core.HeapCore(os.dup(self._heap.fd), _core.KIND_HEAP, False),
                                    None)
        return [containers._handle(type(h), heap, h._offset, h._oid) for h in handles]

    def cleanup(self):
        from interproc import containers

        containers._default = self._saved_default


KINDS = [
    QueueKind, SimpleQueueKind, JoinableQueueKind, PipeKind, LockKind, RLockKind, SemaphoreKind,
    BoundedSemaphoreKind, EventKind, ConditionKind, BarrierKind, ValueKind, ArrayKind, DictKind,
    ListKind, NamespaceKind, HeapKind,
]


# ---------------------------------------------------------------------------
# Damage.

def _interesting(seg: SegmentFile) -> List[int]:
    hs = seg.header_size()
    return [
        0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 63, 64, 255, 256, 4095, 4096, 4097, 0x7FFF, 0xFFFF,
        0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63,
        (1 << 64) - 1, (1 << 64) - 16, seg.size, seg.size - 1, seg.size + 1, seg.size - 16,
        seg.size + 4096, hs, hs + QUEUE_CAP, 1 << 40, HEAP_START, os.getpid(), IP_MAGIC,
        0xFFFFFFFF00000000,
    ]


DELTAS = [1, 2, 4, 8, 16, 64, 4096, 1 << 20, 1 << 32]


def apply_patch(seg: SegmentFile, regions: List[Tuple[int, int]], r: Reader) -> None:
    how = r.u8()
    where, what = how & 3, (how >> 2) % 7
    if where < 2:
        hs = seg.header_size()
        off = r.u16() % (hs if 0 < hs < seg.size else 4096)
    elif where == 2:
        start, length = regions[r.u8() % len(regions)]
        off = start + r.u16() % max(length, 1)
    else:
        off = r.u32() % seg.size
    before = seg.read(off & ~7, 8)
    if what == 0:  # raw bytes
        seg.write(off, r.take(1 + (how >> 5)))
    elif what in (1, 2):  # an interesting word, aligned
        values = _interesting(seg)
        v = values[r.below(len(values))]
        if what == 1:
            seg.write(off & ~7, struct.pack("<Q", v % (1 << 64)))
        else:
            seg.write(off & ~3, struct.pack("<I", v % (1 << 32)))
    elif what in (3, 4):  # a word moved by a small delta
        d = DELTAS[r.below(len(DELTAS))] * (1 if r.u8() & 1 else -1)
        width, fmt = (8, "<Q") if what == 3 else (4, "<I")
        off &= ~(width - 1)
        old = struct.unpack(fmt, seg.read(off, width).ljust(width, b"\0"))[0]
        seg.write(off, struct.pack(fmt, (old + d) % (1 << (8 * width))))
    elif what == 5:  # a word copied from elsewhere: offsets that point at real structures
        src = (r.u32() % seg.size) & ~7
        seg.write(off & ~7, seg.read(src, 8))
    else:  # a flipped bit
        b = seg.read(off, 1)
        if b:
            seg.write(off, bytes([b[0] ^ (1 << (r.u8() % 8))]))
    trace(f"patch {['header', 'header', 'data', 'file'][where]} @{off:#x}: word @{off & ~7:#x} "
          f"{before.hex()} -> {seg.read(off & ~7, 8).hex()}")


# ---------------------------------------------------------------------------

# FUZZ_SKIP_KINDS=DictKind,HeapKind,... leaves kinds out (the input still
# picks among all of them, so inputs keep their meaning): to look past a
# finding that keeps stopping the run until its fix lands.
SKIP = set(filter(None, os.environ.get("FUZZ_SKIP_KINDS", "").split(",")))


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    cls = KINDS[r.below(len(KINDS))]
    if cls.__name__ in SKIP:
        return
    kind: Kind = cls()
    kind.name = unique_name("seg")
    content = Reader(r.take(16))
    handles: List[Any] = []
    _watchdog.arm()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trace(f"kind {type(kind).__name__} {kind.name}")
            handles = kind.make(content)
            seg = SegmentFile(kind.path(handles))
            try:
                regions = kind.regions(seg)
                for _ in range(r.u8() % (MAX_PATCHES + 1)):
                    apply_patch(seg, regions, r)
            finally:
                seg.close()
            _watchdog.arm()
            second = run_op(lambda: kind.attach(handles), ALLOWED) or []
            ops = kind.ops + _common_ops(kind)
            for _ in range(MAX_OPS):
                if r.left() <= 0:
                    break
                op = r.u8()
                pool = second if (op & 1) and second else handles
                target = pool[(op >> 1) % len(pool)]
                fn = ops[(op >> 2) % len(ops)]
                trace(f"op on {'second' if pool is second else 'first'} handle "
                      f"{type(target).__name__}: {_op_name(fn)}")
                _watchdog.arm()
                run_op(lambda: fn(target, r), ALLOWED)
            _watchdog.arm()
            close_all(second)
            close_all(kind.extra)
    except Blocked:
        pass  # the rest would wait for the same lock
    finally:
        try:
            _watchdog.arm()
            try:
                close_all(handles)
                del handles
            finally:
                kind.cleanup()
        except Blocked:
            pass
        finally:
            _watchdog.disarm()
    if robust_mutexes_held():
        raise Finding("a robust mutex of a closed segment is still held: its unmapped memory "
                      "stays on this thread's robust list")


_watchdog: Watchdog


def _op_name(fn: Any) -> str:
    import inspect

    if fn.__name__ != "<lambda>":
        return fn.__name__
    try:
        return inspect.getsource(fn).strip().split(":", 1)[1].strip().rstrip(",")
    except (OSError, IndexError):
        return "lambda"


def initialize() -> None:
    global _watchdog
    remove_stale_names()
    _watchdog = Watchdog()


# ---------------------------------------------------------------------------
# Seeds: every kind, undamaged and with one typical patch, with a tour of
# its operations on both handles.

def seeds() -> Dict[str, bytes]:
    out = {}
    for k, cls in enumerate(KINDS):
        nops = len(cls.ops) + 3
        tour = Writer()
        for i in range(nops):
            for handle in (0, 1):
                tour.u8((i << 2) | handle).raw(bytes([i * 37 % 256, 5, 9, 3]))
        content = bytes([3, 5, 7, 2, 1, 4, 6, 8, 2, 3, 4, 5, 6, 7, 8, 9])
        out[f"{cls.__name__}-clean"] = Writer().u8(k).raw(content).u8(0).raw(tour.bytes()).bytes()
        # A header word set to an interesting value, and a data word moved.
        patched = (Writer().u8(k).raw(content).u8(2)
                   .u8(1 << 2).u16(24).u8(31)               # initial_size = file size + 1
                   .u8(2 | (3 << 2)).u8(0).u16(8).u8(6).u8(1)  # a data word + 4096
                   .raw(tour.bytes()))
        out[f"{cls.__name__}-patched"] = patched.bytes()
    return out
