"""Hostile input for queues and pipes: damaged segments, user code that runs
at the worst moment, absurd arguments.

Whatever happens, a process must end with an exception it can catch
(``SegmentError`` for damaged shared memory): never a signal, a hang or a
silently wrong result.  Every reproduction that could crash or hang the
interpreter runs in a child interpreter (``python -c``) with a timeout, and
the test asserts on its exit status and output, so a regression fails one
test instead of killing pytest.

The damaged-segment tests map the segment file through
``/proc/self/fd/<fd>`` and rewrite fields at the offsets the core reports
(``_core._layout()``), the way another process with access to the segment
could at any moment.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import interproc
from interproc import Queue

pytestmark = pytest.mark.timeout(120)

CHILD_TIMEOUT = 60

PRELUDE = r'''
import mmap, os, pickle, signal, struct, sys, threading, time
import interproc
from interproc import _core, Queue, Pipe, SegmentError, Empty, Full

L = _core._layout()
NO_REGION = 0xFFFFFFFF
OWNER_DIED = 0x40000000  # the futex word of a robust mutex whose holder died
HELD = 0x3FFFFFF0        # ... of one held by a thread that never lets go


class Seg:
    """The segment behind a descriptor, mapped whole as it is now."""

    def __init__(self, fd):
        self.fd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.m = mmap.mmap(self.fd, self.size)

    def u64(self, off, value=None):
        if value is None:
            return struct.unpack_from("<Q", self.m, off)[0]
        struct.pack_into("<Q", self.m, off, value % 2**64)

    def u32(self, off, value=None):
        if value is None:
            return struct.unpack_from("<I", self.m, off)[0]
        struct.pack_into("<I", self.m, off, value % 2**32)

    def close(self):
        self.m.close()
        os.close(self.fd)


class Ring:
    """Field access to one ring of a mapped segment."""

    def __init__(self, seg, base):
        self.s, self.b = seg, base

    def region(self, i, field, value=None):
        off = self.b + L["ring.regions"] + i * L["region.size"] + L["region." + field]
        return self.s.u64(off, value)

    def head(self, i, value=None):
        return self.s.u64(self.b + L["ring.heads"] + 8 * i, value)

    def side(self, side, field, value=None):
        off = self.b + L["ring." + side] + L["side." + field]
        if field in ("cur", "hint_region"):
            return self.s.u32(off, value)
        return self.s.u64(off, value)

    def journal(self, side, field, value=None):
        off = self.b + L["ring." + side] + L["side.journal"] + L["journal." + field]
        if field in ("region", "cur", "other"):
            return self.s.u32(off, value)
        return self.s.u64(off, value)

    def lock_word(self, side, value):
        self.s.u32(self.b + L["ring." + side] + L["side.lock"], value)

    def record(self, i, pos, type=None, length=None):
        """The record header at position pos of region i."""
        cap = self.region(i, "cap")
        off = self.region(i, "offset") + pos % cap
        if type is not None:
            self.s.u32(off + L["rec.type"], type)
        if length is not None:
            self.s.u64(off + L["rec.len"], length)
        return self.s.u32(off + L["rec.type"]), self.s.u64(off + L["rec.len"])


def queue_ring(q):
    seg = Seg(q._fd)
    return seg, Ring(seg, L["queue.ring"])


def pipe_ring(conn, k):
    seg = Seg(conn._handles[0])
    return seg, Ring(seg, L["pipe.rings"] + k * L["ring.size"])


END0_LOCK = L["pipe.ends"] + L["pipe.end.lock"]  # the lock of a pipe's end 0


class Ticker:
    """A thread that counts while the main thread is blocked: it only gets
    to count if the blocked call released the GIL."""

    def __enter__(self):
        self.ticks = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            self.ticks += 1
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def interrupted(fn, *args, after=1.0):
    """fn(*args) must end in KeyboardInterrupt once SIGINT (Ctrl-C) comes,
    after `after` seconds."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        fn(*args)
    except KeyboardInterrupt:
        print(f"{fn.__name__}: interrupted", flush=True)
        return
    finally:
        timer.cancel()
    raise AssertionError(f"{fn.__name__} returned instead of being interrupted")


def expect(exc, fn, *args, **kwargs):
    """fn(*args, **kwargs) must raise exc; anything else fails the child."""
    try:
        result = fn(*args, **kwargs)
    except exc as e:
        print(f"{getattr(fn, '__name__', fn)}: {type(e).__name__}: {e}", flush=True)
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} returned {result!r}, not {exc.__name__}")


def survey(q, ops=("get_nowait", "get_many", "qsize", "put_nowait", "attach", "close")):
    """Runs each operation on q; each either works or raises SegmentError
    (Empty and Full are fine too).  Returns the names that raised
    SegmentError."""
    bad = []
    for op in ops:
        try:
            if op == "get_many":
                q.get_many(block=False)
            elif op == "put_nowait":
                q.put_nowait(b"probe")
            elif op == "attach":
                pickle.loads(pickle.dumps(q)).close()
            else:
                getattr(q, op)()
        except SegmentError as e:
            print(f"survey {op}: SegmentError: {e}", flush=True)
            bad.append(op)
        except (Empty, Full):
            pass
    return bad
'''


def run_child(body, timeout=CHILD_TIMEOUT):
    """Runs PRELUDE + body in a new interpreter; asserts that it exited 0
    and printed OK last.  Returns its output."""
    code = PRELUDE + "\n" + textwrap.dedent(body) + "\nprint('OK', flush=True)\n"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"child hung for {timeout}s; output so far:\n{out}", pytrace=False)
    what = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), (
        f"child ended with {what}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


# ------------------------------------------------------------------
# The plain codec: a container changed between sizing and writing


def test_put_many_list_mutated_by_a_later_items_pickling():
    """put_many serializes every item before any goes in; pickling a later
    item may run code that grows an earlier list.  What goes in is the list
    as it was when it was serialized."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        victim = [1, "two", 3.0]

        class Grow:
            def __reduce__(self):
                victim.extend(["x" * 4000] * 20000)
                return (int, (7,))

        q.put_many([victim, Grow(), {"k": victim[:1]}])
        assert q.get_many(timeout=10) == [[1, "two", 3.0], 7, {"k": [1]}]
        q.put("after")
        assert q.get(timeout=10) == "after"
    ''')


def test_put_many_dict_mutated_by_a_later_items_pickling():
    run_child('''
        q = Queue(capacity_bytes=4096)
        victim = {"a": 1}

        class Grow:
            def __reduce__(self):
                victim.update((f"key{i}", "x" * 3000) for i in range(5000))
                return (int, (7,))

        q.put_many([victim, Grow()])
        assert q.get_many(timeout=10) == [{"a": 1}, 7]
    ''')


def test_put_many_items_list_emptied_by_an_items_pickling():
    """Pickling one item may empty the very list put_many walks, dropping
    the last reference to the items."""
    run_child('''
        q = Queue()

        class Clear:
            def __reduce__(self):
                del items[:]
                return (int, (2,))

        items = [1, Clear(), [3] * 3, "four"]
        q.put_many(items)
        assert q.get_many(timeout=10) == [1, 2, [3, 3, 3], "four"]
    ''')


def test_shared_dict_update_value_mutated_by_a_later_keys_hash():
    """SharedDict.update serializes each value, then encodes the next key,
    which may run the key's __hash__.  A list value grown there must be
    stored as it was, and the dict's other entries must stay intact."""
    run_child('''
        d = interproc.SharedDict()
        d["other"] = "untouched"
        victim = [1, 2, 3]

        class Key:
            def __hash__(self):
                victim.extend(["x" * 4000] * 25000)
                return 1

            def __eq__(self, other):
                return isinstance(other, Key)

        d.update([("a", victim), (Key(), "k")])
        assert d["a"] == [1, 2, 3], d["a"]
        assert d["other"] == "untouched"
        d["b"] = "still works"
        assert d["b"] == "still works"
    ''')


def test_list_mutated_by_another_thread_while_put_waits_on_maxsize():
    """put() waits with the GIL released while the queue is full; another
    thread may grow the list meanwhile.  What goes in is the list as it was
    when put() was called."""
    run_child('''
        q = Queue(maxsize=1, capacity_bytes=4096)
        q.put(0)
        victim = [1, 2, 3]
        done = []
        t = threading.Thread(target=lambda: done.append(q.put(victim, timeout=30)))
        t.start()
        # The putter counts itself as a sleeper of get_ev only once it is
        # past serializing and waiting for room.
        seg, ring = queue_ring(q)
        waiters = L["queue.ring"] + L["ring.get_ev"] + L["event.waiters"]
        deadline = time.monotonic() + 30
        while seg.u32(waiters) == 0:
            assert time.monotonic() < deadline, "the putter never waited"
            time.sleep(0.001)
        victim.extend(["x" * 4000] * 25000)
        assert q.get(timeout=10) == 0
        t.join(30)
        assert done == [None]
        assert q.get(timeout=10) == [1, 2, 3]
    ''')


def test_pipe_send_snapshots_plain_values():
    run_child('''
        a, b = Pipe(capacity_bytes=4096)
        victim = [1, 2]
        a.send(victim)
        victim.extend(["x" * 4000] * 1000)
        assert b.recv() == [1, 2]
    ''')


# ------------------------------------------------------------------
# get_many: sizes computed from user input


def test_get_many_huge_max_items_with_pending_records():
    """Records left pending by an unpickling error, then max_items=2**62: the
    scratch size computation must not wrap."""
    run_child('''
        def fail():
            raise RuntimeError("cannot rebuild")

        class Bad:
            def __reduce__(self):
                return (fail, ())

        q = Queue()
        q.put_many([Bad()] + list(range(10000)))
        expect(RuntimeError, q.get_many, timeout=10)
        got = q.get_many(max_items=2**62)
        assert got == list(range(10000)), len(got)
        [bytes(1000) for _ in range(10000)]  # a damaged allocator shows here
    ''')


def test_get_many_huge_max_items():
    q = Queue()
    q.put_many(range(100))
    assert q.get_many(max_items=2**62) == list(range(100))
    q.put(100)
    assert q.get_many(max_items=sys.maxsize, block=False) == [100]
    with pytest.raises(OverflowError):
        q.get_many(max_items=2**64)


def test_get_many_takes_more_than_one_scratch_chunk():
    q = Queue()
    q.put_many(range(200000))
    assert q.get_many(timeout=10) == list(range(200000))
    q.put_many(range(5000))
    assert q.get_many(max_items=4999, timeout=10) == list(range(4999))
    assert q.get_many(timeout=10) == [4999]


def test_get_many_without_max_items_ends_while_producers_keep_up():
    """Without max_items, get_many takes what is there and what comes while
    it copies, within a bound: a producer that keeps the ring full cannot
    keep it going."""
    import threading

    q = Queue()
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            q.put_many(range(1000))

    q.put_many(range(1000))
    t = threading.Thread(target=produce)
    t.start()
    try:
        for _ in range(5):
            assert q.get_many(timeout=10)
    finally:
        stop.set()
        t.join()


# ------------------------------------------------------------------
# Damaged segments: positions


def test_head_misaligned_or_past_the_end_of_the_region():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"first")
        seg, ring = queue_ring(q)
        ring.head(0, 8)
        expect(SegmentError, q.get_nowait)
        # A head 8 bytes before the end of the region: its record header
        # would straddle the region's end.
        ring.head(0, 4088)
        ring.region(0, "tail", 4088 + 16)
        expect(SegmentError, q.get_nowait)
        expect(SegmentError, q.put, b"y" * 100)
        assert "get_nowait" in survey(q)
    ''')


def test_tail_misaligned_for_the_producer():
    """A tail 8 bytes before the region's end: a producer would write a PAD
    header straddling the end of the mapping."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        seg, ring = queue_ring(q)
        ring.region(0, "tail", 4088)
        ring.head(0, 4088)
        expect(SegmentError, q.put, b"y" * 100)
        expect(SegmentError, q.put_many, [b"y" * 100] * 3)
        assert "put_nowait" in survey(q)
    ''')


def test_head_beyond_tail_and_tail_beyond_a_lap():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(1)
        seg, ring = queue_ring(q)
        tail = ring.region(0, "tail")
        ring.head(0, tail + 4 * 4096)
        expect(SegmentError, q.get_nowait)
        ring.side("prod", "hint_region", NO_REGION)  # else the producer trusts its cached head
        expect(SegmentError, q.put, 2)
        ring.head(0, 0)
        ring.region(0, "tail", 3 * 4096)
        ring.side("cons", "hint_region", NO_REGION)  # else the consumer trusts its cached tail
        expect(SegmentError, q.get_nowait)
        expect(SegmentError, q.put, 2)
    ''')


def test_current_region_out_of_range():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(1)
        seg, ring = queue_ring(q)
        ring.side("cons", "cur", 77)
        expect(SegmentError, q.get_nowait)
        expect(SegmentError, q.get_many, timeout=1)
        ring.side("cons", "cur", 0)
        ring.side("prod", "cur", 1000)
        expect(SegmentError, q.put, 2)
        ring.side("prod", "cur", 0)
        assert q.get(timeout=5) == 1
        q.put(3)
        assert q.get(timeout=5) == 3
    ''')


def test_hint_words_out_of_range():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(1)
        seg, ring = queue_ring(q)
        # A hint is a cache: one that fails a check is dropped and the word
        # it stands for read instead.
        ring.side("cons", "hint_region", 0)
        ring.side("cons", "hint_pos", ring.head(0) + 8)
        assert q.get(timeout=5) == 1
        q.put(2)
        ring.side("cons", "hint_region", 1234)
        assert q.get(timeout=5) == 2
        for bogus in (12345, 2**63, 8):
            ring.side("prod", "hint_region", 0)
            ring.side("prod", "hint_pos", bogus)
            q.put(3)
            assert q.get(timeout=5) == 3
    ''')


def test_counts_out_of_range():
    run_child('''
        q = Queue(capacity_bytes=1 << 20)
        q.put_many(range(1000))
        seg, ring = queue_ring(q)
        out = ring.side("cons", "count")
        ring.side("prod", "count", out + 2**62)
        expect(SegmentError, q.qsize)
        expect(SegmentError, q.empty)
        # Taking does not depend on the counts: the records are there.
        assert q.get_many(max_items=2**62, timeout=5) == list(range(1000))
        ring.side("prod", "count", 5)
        ring.side("cons", "count", 10)
        expect(SegmentError, q.qsize)

        b = Queue(maxsize=5, capacity_bytes=4096)
        seg2, ring2 = queue_ring(b)
        ring2.side("prod", "count", 2**50)
        expect(SegmentError, b.put, 1, timeout=5)
        expect(SegmentError, b.full)
    ''')


# ------------------------------------------------------------------
# Damaged segments: region extents


def test_base_region_cap_changed_after_attach():
    """The handle keeps the capacity it validated; a new attach refuses the
    segment."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        seg, ring = queue_ring(q)
        ring.region(0, "cap", 1 << 30)
        seg.u64(L["queue.base_cap"], 1 << 30)
        items = [bytes([i % 256]) * 1000 for i in range(3000)]
        for i in range(0, 3000, 100):
            q.put_many(items[i:i + 100])
            assert q.get_many(timeout=5) == items[i:i + 100]
        assert q.capacity_bytes == 4096
        expect(SegmentError, lambda: pickle.loads(pickle.dumps(q)))
    ''')


def test_overflow_region_cap_changed_before_close():
    """close() unmaps what it mapped, not what the header says now."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"x" * 10000)  # does not fit the base region: region 1
        assert q.get(timeout=5) == b"x" * 10000
        seg, ring = queue_ring(q)
        assert ring.region(1, "offset") != 0
        # A length that reaches over the interpreter's own mappings (one
        # past the top of the address space would merely be refused).
        ring.region(1, "cap", 1 << 32)
        q.close()
        seg.close()
        sum(len(str(i)) for i in range(200000))  # the interpreter's memory is intact
    ''')


def test_overflow_region_beyond_the_file_for_the_producer():
    """An overflow region assigned after attach with an extent past the end
    of the file: mapping it and writing would raise SIGBUS."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        seg, ring = queue_ring(q)
        size = seg.size
        ring.region(1, "cap", 1 << 20)
        ring.region(1, "tail", 0)
        ring.region(1, "state", 0)
        ring.region(1, "offset", size)
        expect(SegmentError, q.put, b"x" * 5000)
        ring.region(1, "offset", (size + (1 << 30)) & ~4095)
        expect(SegmentError, q.put, b"x" * 5000)
        ring.region(1, "offset", 2**64 - 4096)
        expect(SegmentError, q.put, b"x" * 5000)
        q.put(b"small")
        assert q.get(timeout=5) == b"small"
    ''')


def test_overflow_region_beyond_the_file_for_the_consumer():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"a")
        seg, ring = queue_ring(q)
        head = ring.head(0)
        ring.record(0, head, type=L["rec.FWD"], length=1)
        ring.region(1, "cap", 1 << 20)
        ring.region(1, "tail", 64)
        ring.region(1, "state", 3)
        ring.region(1, "offset", seg.size)
        ring.head(1, 0)
        expect(SegmentError, q.get_nowait)
        ring.region(1, "offset", seg.size - 4096)  # inside the base region
        expect(SegmentError, q.get_nowait)
        ring.region(1, "offset", 0)  # unassigned
        expect(SegmentError, q.get_nowait)
        survey(q)
    ''')


# ------------------------------------------------------------------
# Damaged segments: records


def test_record_length_beyond_its_region_or_its_tail():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"abc")
        seg, ring = queue_ring(q)
        head = ring.head(0)
        ring.record(0, head, length=1 << 40)
        expect(SegmentError, q.get_nowait)
        ring.record(0, head, length=4096)
        expect(SegmentError, q.get_nowait)
        # Inside the region, but running past what was published.
        ring.record(0, head, length=100)
        expect(SegmentError, q.get_nowait)
        ring.record(0, head, length=3)
        assert q.get_nowait() == b"abc"
    ''')


def test_unknown_record_type_and_plain_garbage():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put([1, 2, 3])
        seg, ring = queue_ring(q)
        head = ring.head(0)
        ring.record(0, head, type=99)
        expect(SegmentError, q.get_nowait)
        ring.record(0, head, type=L["rec.PLAIN"])
        # The plain payload's count says more items than it holds.
        payload = ring.region(0, "offset") + head % 4096 + 16
        seg.m[payload + 1:payload + 5] = struct.pack("<I", 200)
        expect(SegmentError, q.get_nowait)
        q.put("next")
        assert q.get(timeout=5) == "next"
    ''')


def test_plain_string_with_an_impossible_code_point():
    run_child('''
        q = Queue(capacity_bytes=4096)
        for cp in (0x110000, 0xFFFFFFFF):
            q.put("\\U0001F600")
            seg, ring = queue_ring(q)
            payload = ring.region(0, "offset") + ring.head(0) % 4096 + 16
            assert seg.m[payload:payload + 2] == b"s\\x04"
            seg.u32(payload + 6, cp)
            expect(SegmentError, q.get_nowait)
            seg.close()
    ''')


def test_forward_records_in_a_loop_do_not_spin():
    """Region 0 forwards to region 1 and region 1 back to region 0: a reader
    following them would go round for ever with the GIL held."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"x" * 5000)  # region 1
        assert q.get(timeout=5) == b"x" * 5000
        seg, ring = queue_ring(q)
        assert ring.side("cons", "cur") == 1
        h1 = ring.head(1)
        ring.record(1, h1, type=L["rec.FWD"], length=0)
        ring.region(1, "tail", h1 + 16)
        ring.region(0, "state", ring.region(0, "state") | 1)
        h0 = ring.head(0)
        ring.record(0, h0, type=L["rec.FWD"], length=1)
        ring.region(0, "tail", h0 + 16)
        expect(SegmentError, q.get, timeout=5)
        expect(SegmentError, q.get_many, timeout=5)
    ''')


def test_forward_record_to_itself_or_out_of_range():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"a")
        seg, ring = queue_ring(q)
        head = ring.head(0)
        for target in (0, 32, 2**40, 5):
            ring.record(0, head, type=L["rec.FWD"], length=target)
            expect(SegmentError, q.get_nowait)
    ''')


def test_padding_past_the_tail():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put(b"a")
        seg, ring = queue_ring(q)
        ring.record(0, ring.head(0), type=L["rec.PAD"])
        expect(SegmentError, q.get_nowait)
    ''')


# ------------------------------------------------------------------
# Damaged segments: journals replayed by recovery


def test_wild_producer_journal_is_refused_not_replayed():
    """A producer lock whose holder died, with a journal of wild values:
    the next producer refuses it with SegmentError, and the ring goes on
    from its last consistent state."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put("kept")
        seg, ring = queue_ring(q)
        cases = [
            dict(region=0, cur=0, other=NO_REGION, pos=0x123456789, count=ring.side("prod", "count") + 1),
            dict(region=0, cur=0, other=NO_REGION, pos=8, count=ring.side("prod", "count") + 1),
            dict(region=40, cur=0, other=NO_REGION, pos=64, count=ring.side("prod", "count") + 1),
            dict(region=0, cur=3, other=7, pos=64, count=ring.side("prod", "count") + 1, other_state=2),
            dict(region=0, cur=0, other=NO_REGION, pos=64, count=0),
        ]
        for case in cases:
            for field, value in case.items():
                ring.journal("prod", field, value)
            ring.journal("prod", "valid", 1)
            ring.lock_word("prod", OWNER_DIED)
            expect(SegmentError, q.put, "refused")
            assert ring.journal("prod", "valid") == 0
        q.put("next")
        assert q.get_many(timeout=5) == ["kept", "next"]
    ''')


def test_wild_consumer_journal_is_refused_not_replayed():
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put_many(["a", "b"])
        seg, ring = queue_ring(q)
        count = ring.side("cons", "count")
        cases = [
            dict(region=0, cur=0, other=NO_REGION, pos=8, count=count + 1),
            dict(region=0, cur=0, other=5, pos=32, count=count + 1, other_state=3),
            dict(region=33, cur=33, other=NO_REGION, pos=32, count=count + 1),
            dict(region=0, cur=0, other=NO_REGION, pos=32, count=count - 1),
        ]
        for case in cases:
            for field, value in case.items():
                ring.journal("cons", field, value)
            ring.journal("cons", "valid", 1)
            ring.lock_word("cons", OWNER_DIED)
            expect(SegmentError, q.get, timeout=5)
        assert q.get_many(timeout=5) == ["a", "b"]
    ''')


def test_sane_journal_is_still_replayed():
    """The checks do not refuse what a producer killed mid-commit leaves."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        q.put("first")
        seg, ring = queue_ring(q)
        tail = ring.region(0, "tail")
        # What a producer of "second" left when killed after filling its
        # journal: the record is written, the tail not yet moved.
        q2 = Queue(capacity_bytes=4096)
        q2.put("second")
        seg2, ring2 = queue_ring(q2)
        size = ring2.region(0, "tail")
        seg.m[4096 + tail:4096 + tail + size] = seg2.m[4096:4096 + size]
        ring.journal("prod", "region", 0)
        ring.journal("prod", "cur", 0)
        ring.journal("prod", "other", NO_REGION)
        ring.journal("prod", "pos", tail + size)
        ring.journal("prod", "count", ring.side("prod", "count") + 1)
        ring.journal("prod", "valid", 1)
        ring.lock_word("prod", OWNER_DIED)
        q.put("third")
        assert q.get_many(timeout=5) == ["first", "second", "third"]
    ''')


# ------------------------------------------------------------------
# Pipes


def test_pipe_base_region_cap_not_matching():
    run_child('''
        a, b = Pipe(capacity_bytes=4096)
        seg, ring0 = pipe_ring(a, 0)
        ring0.region(0, "cap", 8192)
        expect(SegmentError, lambda: pickle.loads(pickle.dumps(a)))
        ring0.region(0, "cap", 4096)
        c = pickle.loads(pickle.dumps(a))
        c.close()
    ''')


def test_pipe_base_region_cap_changed_after_attach():
    run_child('''
        a, b = Pipe(capacity_bytes=4096)
        seg, ring1 = pipe_ring(a, 1)
        ring1.region(0, "cap", 1 << 30)
        seg.u64(L["pipe.base_cap"], 1 << 30)
        for i in range(300):
            a.send_bytes(bytes([i % 256]) * 3000)
        for i in range(300):
            assert b.recv_bytes() == bytes([i % 256]) * 3000
    ''')


def test_pipe_base_cap_that_overflows_the_size_check():
    """base_cap + 2**63 doubles to the same sum: the attach must not accept
    it and then place ring 1 far outside the mapping."""
    run_child('''
        a, b = Pipe(capacity_bytes=4096)
        seg, ring1 = pipe_ring(a, 1)
        seg.u64(L["pipe.base_cap"], 4096 + 2**63)
        hsize = seg.u64(L["seg.header_size"])
        ring1.region(0, "offset", hsize + 4096 + 2**63)
        def attach_and_send():
            c = pickle.loads(pickle.dumps(a))
            c.send(b"x" * 3000)
            c.send(b"x" * 3000)
        expect(SegmentError, attach_and_send)
    ''')


def test_pipe_damaged_ring_gives_segment_error():
    run_child('''
        a, b = Pipe(capacity_bytes=4096)
        a.send("hello")
        seg, ring0 = pipe_ring(b, 0)  # ring 0 carries messages to end 0: a
        seg, ring1 = pipe_ring(b, 1)
        ring1.head(0, 8)
        expect(SegmentError, b.recv)
        ring1.head(0, 0)
        assert b.recv() == "hello"
        ring0.region(0, "tail", 8)
        expect(SegmentError, b.send, "x")
    ''')


# ------------------------------------------------------------------
# Locks held by a frozen process


def test_frozen_grow_lock_holder_leaves_other_threads_and_ctrl_c_working():
    """A process frozen (SIGSTOP) while growing the segment holds its grow
    lock.  A producer that must grow waits without the GIL, and Ctrl-C
    interrupts it."""
    run_child('''
        q = Queue(capacity_bytes=4096)
        seg = Seg(q._fd)
        seg.u32(L["seg.grow_lock"], HELD)
        with Ticker() as ticker:
            interrupted(q.put, b"x" * 10000)  # needs a new region
        assert ticker.ticks > 5, ticker.ticks
        seg.u32(L["seg.grow_lock"], 0)
        q.put(b"x" * 10000)
        assert q.get(timeout=5) == b"x" * 10000
    ''')


def test_frozen_pipe_end_lock_holder_leaves_other_threads_and_ctrl_c_working():
    run_child('''
        a, b = Pipe()
        seg = Seg(a._handles[0])
        seg.u32(END0_LOCK, HELD)
        with Ticker() as ticker:
            interrupted(a.fileno)  # end 0's readiness pipe is brought in step under its lock
        assert ticker.ticks > 5, ticker.ticks
        seg.u32(END0_LOCK, 0)
        b.send(1)
        assert a.recv() == 1
        assert a.fileno() >= 0
    ''')


def test_interrupted_readiness_update_after_a_take_keeps_the_message():
    """recv() took a message, then was interrupted waiting for the end's lock
    to update fileno()'s readiness: the message comes back on the next
    recv(), not lost."""
    run_child('''
        a, b = Pipe()
        a.fileno()  # arms end 0's readiness pipe
        b.send("kept")
        seg = Seg(a._handles[0])
        seg.u32(END0_LOCK, HELD)
        interrupted(a.recv)
        seg.u32(END0_LOCK, 0)
        assert a.poll(0)
        assert a.recv() == "kept"
        assert not a.poll(0)
    ''')


# ------------------------------------------------------------------
# Descriptors and names on bad arguments


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _closed(fd):
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@pytest.mark.parametrize("args", [(1, "x"), (), (1, 0, "x"), (1, 0, 0, 2**70)], ids=repr)
def test_queue_core_owns_its_fd_also_on_bad_arguments(args):
    fd = os.memfd_create("t")
    with pytest.raises((TypeError, OverflowError, ValueError)):
        interproc._core.QueueCore(fd, *args)
    assert _closed(fd)


def test_queue_core_owns_its_fd_given_by_keyword():
    fd = os.memfd_create("t")
    with pytest.raises(TypeError):
        interproc._core.QueueCore(fd=fd, kind=1, maxsize="x")
    assert _closed(fd)


@pytest.mark.parametrize("extra", [("x",), (-1, 5), ()], ids=repr)
def test_connection_core_owns_its_fds_also_on_bad_arguments(extra):
    fd = os.memfd_create("t")
    r, w = os.pipe()
    args = (fd, 0, True, True, r, w) + extra if extra != () else (fd, 0, True, True, r)
    with pytest.raises((TypeError, ValueError)):
        interproc._core.ConnectionCore(*args)
    assert _closed(fd) and _closed(r)
    if extra != ():
        assert _closed(w)
    else:
        os.close(w)


@pytest.mark.parametrize("kwargs", [
    dict(maxsize="x"), dict(maxsize=2**64), dict(maxsize=2**63), dict(capacity_bytes=0),
    dict(capacity_bytes="1"), dict(capacity_bytes=2**41),
], ids=repr)
def test_bad_queue_arguments_open_nothing(unique_name, kwargs):
    name = unique_name()
    before = _open_fds()
    with pytest.raises((TypeError, ValueError, OverflowError)):
        Queue(name=name, **kwargs)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        Queue(**kwargs)
    assert _open_fds() == before
    assert not os.path.exists(f"/dev/shm/interproc.{name}")


@pytest.mark.parametrize("capacity", [0, -5, "x", 2**41], ids=repr)
def test_bad_pipe_arguments_open_nothing(capacity):
    before = _open_fds()
    with pytest.raises((TypeError, ValueError)):
        interproc.Pipe(capacity_bytes=capacity)
    assert _open_fds() == before


# ------------------------------------------------------------------
# Sizes computed from user input


def test_send_bytes_size_that_overflows_offset_plus_size():
    a, b = interproc.Pipe()
    with pytest.raises(ValueError, match="buffer length < offset \\+ size"):
        a.send_bytes(b"0123456789", 5, sys.maxsize)
    with pytest.raises(ValueError):
        a.send_bytes(b"0123456789", sys.maxsize, sys.maxsize)
    a.send_bytes(b"ok")
    assert b.recv_bytes() == b"ok"


# ------------------------------------------------------------------
# A damaged shutdown state


@pytest.mark.parametrize("state", [3, 2**63, 2**64 - 1])
def test_unknown_shutdown_state_raises_segment_error_everywhere(state):
    """A state no shutdown() writes: every operation that reads it says the
    header is corrupt, and writing a real state back heals the queue."""
    run_child(f'''
        q = interproc.JoinableQueue(2)
        q.put("a")
        seg = Seg(q._fd)
        seg.u64(L["queue.shut.state"], {state})
        for call, args in [(q.put, ("b",)), (q.get, ()), (q.get_nowait, ()), (q.get_many, ()),
                           (q.put_many, (["c"],)), (q.shutdown, ()), (q.join, ())]:
            expect(SegmentError, call, *args)
        expect(SegmentError, getattr, q, "is_shutdown")
        seg.u64(L["queue.shut.state"], 0)
        assert not q.is_shutdown and q.get(timeout=10) == "a"
        q.task_done()
        seg.close()
    ''')


def test_forged_discarded_count_never_blocks_join_or_crashes():
    """An absurd count of discarded items only ends tasks early: join()
    returns and task_done() refuses, nothing worse."""
    run_child('''
        q = interproc.JoinableQueue()
        q.put_many(range(3))
        seg = Seg(q._fd)
        q.shutdown(immediate=True)
        for forged in (2**64 - 1, 2**63, 10**6):
            seg.u64(L["queue.shut.discarded"], forged)
            q.join()
            expect(ValueError, q.task_done)
            expect(interproc.ShutDown, q.get_nowait)
        seg.close()
    ''')


def test_forged_immediate_state_is_finished_by_the_next_get():
    """A state set to immediate with nothing recorded (as a shutdown killed
    between its two steps leaves it): the next get discards and records."""
    run_child('''
        q = interproc.JoinableQueue()
        q.put_many(range(5))
        seg = Seg(q._fd)
        seg.u64(L["queue.shut.state"], 2)
        assert q.qsize() == 5
        expect(interproc.ShutDown, q.get)
        assert q.qsize() == 0 and q._info()["discarded"] == 6
        q.join()
        seg.close()
    ''')


def test_drain_left_half_done_is_finished_without_counting_twice():
    """Immediate state with the count recorded and items still there (a
    shutdown killed in the middle of its drain): the next get discards them
    and leaves the count alone, so join() neither hangs nor ends early."""
    run_child('''
        q = interproc.JoinableQueue()
        q.put_many(range(5))
        assert q.get() == 0
        seg = Seg(q._fd)
        seg.u64(L["queue.shut.discarded"], 4 + 1)
        seg.u64(L["queue.shut.state"], 2)
        expect(interproc.ShutDown, q.get_nowait)
        assert q.qsize() == 0 and q._info()["discarded"] == 5
        done = threading.Event()
        t = threading.Thread(target=lambda: (q.join(), done.set()))
        t.start()
        assert not done.wait(0.2)  # the item taken before is not done yet
        q.task_done()
        t.join(10)
        assert done.is_set()
        expect(ValueError, q.task_done)
        seg.close()
    ''')
