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


