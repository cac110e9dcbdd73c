"""Single-process semantics of Queue, SimpleQueue and JoinableQueue."""

import collections
import math
import os
import pickle
import queue
import signal
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import interproc
from interproc import Empty, Full, JoinableQueue, Queue, SimpleQueue

from _helpers import TIMING_SLACK, Point, assert_took, sigint_soon

KiB = 1024
MiB = 1024 * KiB


def test_exceptions_are_the_standard_ones():
    assert interproc.Empty is queue.Empty
    assert interproc.Full is queue.Full


def test_fifo():
    q = Queue()
    for i in range(1000):
        q.put(i)
    assert [q.get() for _ in range(1000)] == list(range(1000))


def test_put_get_nowait():
    q = Queue()
    q.put_nowait("a")
    q.put_nowait("b")
    assert q.get_nowait() == "a"
    assert q.get_nowait() == "b"
    with pytest.raises(Empty):
        q.get_nowait()


def test_get_nonblocking_on_empty_raises_at_once():
    q = Queue()
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get(False, 5.0)  # the timeout is ignored when block=False, as in multiprocessing
    with pytest.raises(Empty):
        q.get(timeout=0)
    assert time.monotonic() - t0 < TIMING_SLACK


@pytest.mark.parametrize("timeout", [0.1, 0.3])
def test_get_timeout_is_honoured(timeout):
    q = Queue()
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=timeout)
    assert_took(time.monotonic() - t0, timeout)


@pytest.mark.parametrize("timeout", [0.1, 0.3])
def test_put_timeout_is_honoured(timeout):
    q = Queue(maxsize=2)
    q.put(1)
    q.put(2)
    t0 = time.monotonic()
    with pytest.raises(Full):
        q.put(3, timeout=timeout)
    assert_took(time.monotonic() - t0, timeout)
    assert q.qsize() == 2


def test_put_nonblocking_on_full_raises_at_once():
    q = Queue(maxsize=1)
    q.put("x")
    t0 = time.monotonic()
    with pytest.raises(Full):
        q.put("y", block=False)
    with pytest.raises(Full):
        q.put_nowait("y")
    with pytest.raises(Full):
        q.put("y", False, 5.0)
    with pytest.raises(Full):
        q.put("y", timeout=0)
    assert time.monotonic() - t0 < TIMING_SLACK
    assert q.get_nowait() == "x"
    with pytest.raises(Empty):
        q.get_nowait()


def test_get_returns_item_put_by_another_thread_while_waiting():
    q = Queue()
    timer = threading.Timer(0.1, q.put, ("late",))
    timer.start()
    try:
        t0 = time.monotonic()
        assert q.get(timeout=5) == "late"
        assert time.monotonic() - t0 < 1.0
    finally:
        timer.join()


def test_maxsize_zero_never_blocks_beyond_capacity_bytes():
    q = Queue(capacity_bytes=64 * KiB)
    chunk = bytes(range(256)) * 256  # 64 KiB, as big as the whole ring
    n = 160  # 10 MiB in all
    t0 = time.monotonic()
    for i in range(n):
        q.put(chunk + i.to_bytes(4, "little"), block=False)
    assert q.qsize() == n
    assert not q.full()
    for i in range(n):
        assert q.get(block=False) == chunk + i.to_bytes(4, "little")
    assert q.empty()
    assert time.monotonic() - t0 < 20


def test_maxsize_counts_items_not_bytes():
    q = Queue(maxsize=3, capacity_bytes=64 * KiB)
    for i in range(3):
        q.put(bytes([i]) * (100 * KiB), block=False)
    assert q.full()
    with pytest.raises(Full):
        q.put(b"", block=False)
    assert [q.get_nowait()[0] for _ in range(3)] == [0, 1, 2]


def test_object_larger_than_ring():
    q = Queue(capacity_bytes=64 * KiB)
    big = os.urandom(5 * MiB)
    q.put(big)
    q.put("after")
    assert q.get(timeout=5) == big
    assert q.get(timeout=5) == "after"


def test_big_list_larger_than_ring():
    q = Queue(capacity_bytes=64 * KiB)
    big = [(i, str(i)) for i in range(200_000)]
    q.put("before")
    q.put(big)
    q.put("after")
    assert q.get(timeout=5) == "before"
    assert q.get(timeout=5) == big
    assert q.get(timeout=5) == "after"


ROUND_TRIP_OBJECTS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**200 + 12345,
    -(3**150),
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    1e-308,
    complex(1, -2),
    "",
    "ascii",
    "héllo wörld ☃ 日本語 🐍",
    "\x00embedded nul",
    "x" * 100_000,
    b"",
    b"\x00\xff" * 1000,
    bytearray(b"mutable"),
    (),
    (1, "two", 3.0),
    [],
    [1, [2, [3, [4]]]],
    {},
    {"a": 1, 2: "b", (3, 4): [5]},
    set(),
    {1, 2, 3},
    frozenset({"x", "y"}),
    {"nested": [{"deep": ({1, 2}, b"bytes", None)}], "point": Point(1, 2)},
    Point(3, "four"),
    [Point(i, -i) for i in range(100)],
    range(0, 10, 3),
    slice(1, 2, 3),
    Ellipsis,
    collections.OrderedDict([("b", 1), ("a", 2)]),
]


@pytest.mark.parametrize("obj", ROUND_TRIP_OBJECTS, ids=lambda o: type(o).__name__)
def test_round_trip(obj):
    q = Queue()
    q.put(obj)
    got = q.get(timeout=5)
    assert type(got) is type(obj)
    assert got == obj
    if isinstance(obj, float) and obj == 0.0:
        assert math.copysign(1.0, got) == math.copysign(1.0, obj)


def test_round_trip_nan():
    q = Queue()
    q.put(float("nan"))
    assert math.isnan(q.get(timeout=5))


def test_round_trip_keeps_shared_references():
    shared = [1, 2]
    q = Queue()
    q.put((shared, shared))
    a, b = q.get(timeout=5)
    assert a is b


def test_qsize_empty_full():
    q = Queue(maxsize=3)
    assert q.qsize() == 0 and q.empty() and not q.full()
    q.put(1)
    assert q.qsize() == 1 and not q.empty() and not q.full()
    q.put(2)
    q.put(3)
    assert q.qsize() == 3 and not q.empty() and q.full()
    q.get()
    assert q.qsize() == 2 and not q.full()


def test_unbounded_queue_is_never_full():
    q = Queue()
    for i in range(10_000):
        q.put(i)
    assert not q.full()
    assert q.qsize() == 10_000


def test_attributes():
    q = Queue(maxsize=7, capacity_bytes=64 * KiB)
    assert q.maxsize == 7
    assert isinstance(q.capacity_bytes, int) and q.capacity_bytes >= 64 * KiB
    assert q.name is None
    with pytest.raises(AttributeError):
        q.maxsize = 8
    with pytest.raises(AttributeError):
        q.capacity_bytes = 1 << 20
    assert Queue().maxsize == 0


def test_unlink_is_noop_for_anonymous():
    q = Queue()
    q.unlink()
    q.put(1)
    assert q.get(timeout=5) == 1


# ------------------------------------------------------------ put/get_many

def test_put_many_get_many_order():
    q = Queue()
    q.put_many(range(100))
    assert q.qsize() == 100
    assert q.get_many() == list(range(100))
    assert q.empty()


def test_put_many_accepts_any_iterable():
    q = Queue()
    q.put_many(x * x for x in range(5))
    q.put_many([])
    q.put_many(iter(()))
    assert q.get_many() == [0, 1, 4, 9, 16]


def test_get_many_max_items():
    q = Queue()
    q.put_many(range(25))
    assert q.get_many(max_items=10) == list(range(10))
    assert q.get_many(max_items=10) == list(range(10, 20))
    assert q.get_many(max_items=10) == list(range(20, 25))


def test_get_many_mixed_with_get():
    q = Queue()
    q.put_many(["a", "b"])
    q.put("c")
    assert q.get() == "a"
    assert q.get_many() == ["b", "c"]


def test_get_many_on_empty():
    q = Queue()
    with pytest.raises(Empty):
        q.get_many(block=False)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        q.get_many(timeout=0.2)
    assert_took(time.monotonic() - t0, 0.2)


def test_get_many_waits_for_the_first_item():
    q = Queue()
    timer = threading.Timer(0.1, q.put_many, ([1, 2, 3],))
    timer.start()
    try:
        assert q.get_many(timeout=5) == [1, 2, 3]
    finally:
        timer.join()


def test_put_many_partial_reports_count():
    q = Queue(maxsize=5)
    with pytest.raises(Full) as info:
        q.put_many(range(8), block=False)
    assert info.value.count == 5
    assert q.qsize() == 5
    assert q.get_many() == [0, 1, 2, 3, 4]


def test_put_many_partial_with_timeout():
    q = Queue(maxsize=3)
    q.put("already")
    t0 = time.monotonic()
    with pytest.raises(Full) as info:
        q.put_many(["a", "b", "c"], timeout=0.2)
    elapsed = time.monotonic() - t0
    assert info.value.count == 2
    assert_took(elapsed, 0.2)
    assert q.get_many() == ["already", "a", "b"]


def test_put_many_blocks_until_room():
    q = Queue(maxsize=2)

    def drain_slowly():
        for _ in range(6):
            time.sleep(0.02)
            got.append(q.get(timeout=5))

    got = []
    t = threading.Thread(target=drain_slowly)
    t.start()
    try:
        q.put_many(range(6), timeout=5)
    finally:
        t.join(10)
    assert got == list(range(6))


def test_put_many_big_items():
    q = Queue(capacity_bytes=64 * KiB)
    items = [os.urandom(n) for n in (10, 100 * KiB, 1 * MiB, 3)]
    q.put_many(items)
    assert q.get_many() == items


# ------------------------------------------------------------------- close

def test_close_leaves_other_handles_working(unique_name):
    name = unique_name()
    a = Queue(name=name)
    b = Queue(name=name, create=False)
    a.put("x")
    a.close()
    assert b.get(timeout=5) == "x"
    b.put("y")
    assert b.get(timeout=5) == "y"
    b.close()


def test_join_thread_and_cancel_join_thread():
    q = Queue()
    q.cancel_join_thread()
    with pytest.raises(ValueError):
        q.join_thread()
    q.put(1)
    q.close()
    q.join_thread()
    q.cancel_join_thread()


# ------------------------------------------------------------- SimpleQueue

def test_simple_queue():
    q = SimpleQueue()
    assert q.empty()
    q.put(1)
    q.put({"two": 2})
    assert not q.empty()
    assert q.qsize() == 2
    assert q.get() == 1
    assert q.get() == {"two": 2}
    assert q.empty()
    q.put_many([3, 4])
    assert q.get_many() == [3, 4]
    assert q.name is None
    q.unlink()
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put(5)
    with pytest.raises(ValueError, match="closed"):
        q.get()


def test_simple_queue_big_item():
    q = SimpleQueue(capacity_bytes=64 * KiB)
    big = os.urandom(2 * MiB)
    q.put(big)
    assert q.get() == big


# ----------------------------------------------------------- JoinableQueue

def test_joinable_task_done_too_often():
    q = JoinableQueue()
    with pytest.raises(ValueError):
        q.task_done()
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()
    q.join()  # nothing outstanding


def test_joinable_join_returns_when_all_done():
    q = JoinableQueue()
    for i in range(5):
        q.put(i)
    done = []

    def worker():
        for _ in range(5):
            done.append(q.get(timeout=5))
            time.sleep(0.02)
            q.task_done()

    joiner_finished = threading.Event()

    def joiner():
        q.join()
        joiner_finished.set()

    j = threading.Thread(target=joiner, daemon=True)
    j.start()
    time.sleep(0.1)
    assert not joiner_finished.is_set(), "join() returned with tasks outstanding"
    w = threading.Thread(target=worker)
    w.start()
    w.join(10)
    assert joiner_finished.wait(5), "join() did not return after every task_done()"
    assert done == list(range(5))


def test_joinable_join_blocks_until_last_task_done():
    q = JoinableQueue()
    q.put_many(["a", "b"])
    q.get()
    q.get()
    q.task_done()
    finished = threading.Event()
    t = threading.Thread(target=lambda: (q.join(), finished.set()), daemon=True)
    t.start()
    assert not finished.wait(0.2)
    q.task_done()
    assert finished.wait(5)


def test_joinable_has_queue_methods():
    q = JoinableQueue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(Full):
        q.put(3, timeout=0.05)
    assert q.get_many() == [1, 2]
    q.task_done()
    q.task_done()
    q.join()


# ------------------------------------------------------------ unpicklable

@pytest.mark.parametrize(
    "bad", [lambda: None, threading.Lock()], ids=["lambda", "lock"]
)
def test_unpicklable_raises_in_put_and_queue_survives(bad):
    q = Queue(maxsize=3)
    q.put("first")
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(bad)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(["fine", {"nested": bad}])
    assert q.qsize() == 1
    q.put("second")
    assert q.get(timeout=5) == "first"
    assert q.get(timeout=5) == "second"
    with pytest.raises(Empty):
        q.get_nowait()


class _ExplodingReduce:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_exception_from_reduce_propagates():
    q = Queue()
    with pytest.raises(RuntimeError, match="boom"):
        q.put(_ExplodingReduce())
    q.put(1)
    assert q.get(timeout=5) == 1


# ---------------------------------------------------------------- threads

@pytest.mark.timeout(60)
def test_many_threads_put_and_get():
    q = Queue(maxsize=50)
    n_producers, n_consumers, per_producer = 4, 4, 2000
    received = [[] for _ in range(n_consumers)]
    errors = []

    def produce(pid):
        try:
            for i in range(per_producer):
                q.put((pid, i), timeout=10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def consume(cid):
        try:
            while True:
                item = q.get(timeout=10)
                if item is None:
                    return
                received[cid].append(item)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    consumers = [threading.Thread(target=consume, args=(c,)) for c in range(n_consumers)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(n_producers)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(30)
    for _ in consumers:
        q.put(None, timeout=10)
    for t in consumers:
        t.join(30)
    assert not errors
    assert not any(t.is_alive() for t in consumers + producers)

    everything = [item for got in received for item in got]
    assert len(everything) == n_producers * per_producer
    assert set(everything) == {(p, i) for p in range(n_producers) for i in range(per_producer)}
    # A consumer sees a subsequence of the queue, so each producer's items
    # reach it in the order they were put.
    for got in received:
        last = {}
        for pid, i in got:
            assert i > last.get(pid, -1)
            last[pid] = i


# --------------------------------------------------------------- signals

@pytest.mark.timeout(30)
def test_keyboard_interrupt_breaks_blocked_get(default_sigint):
    q = Queue()
    # If the signal is not noticed, this item ends the wait instead of a hang.
    backstop = threading.Timer(3.0, q.put, ("backstop",))
    backstop.start()
    timer = sigint_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.get()
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
        backstop.cancel()
    assert elapsed < 1.0, f"get() took {elapsed:.2f}s to notice SIGINT"
    q.put("still works")
    assert q.get(timeout=5) == "still works"


@pytest.mark.timeout(30)
def test_keyboard_interrupt_breaks_timed_get(default_sigint):
    q = Queue()
    timer = sigint_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.get(timeout=5)
    finally:
        timer.join()
    assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(30)
def test_keyboard_interrupt_breaks_blocked_put(default_sigint):
    q = Queue(maxsize=1)
    q.put("full")
    backstop = threading.Timer(3.0, q.get)
    backstop.start()
    timer = sigint_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.put("blocked")
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
        backstop.cancel()
    assert elapsed < 1.0
    assert q.qsize() == 1


@pytest.mark.timeout(30)
def test_keyboard_interrupt_breaks_joinable_join(default_sigint):
    q = JoinableQueue()
    q.put(1)
    timer = sigint_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.join()
    finally:
        timer.join()
    assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(30)
def test_harmless_signals_do_not_cut_a_timed_wait_short():
    """A handler that returns normally must not end the wait early: the
    wait resumes against the same absolute deadline."""
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    timers = [
        threading.Timer(d, os.kill, (os.getpid(), signal.SIGUSR1)) for d in (0.05, 0.1, 0.15, 0.2)
    ]
    try:
        q = Queue()
        for t in timers:
            t.start()
        t0 = time.monotonic()
        with pytest.raises(Empty):
            q.get(timeout=0.4)
        elapsed = time.monotonic() - t0
    finally:
        for t in timers:
            t.join()
        signal.signal(signal.SIGUSR1, old)
    assert len(hits) == 4
    assert_took(elapsed, 0.4)


# ------------------------------------------------------ model-based check

class QueueModel(RuleBasedStateMachine):
    """Random sequences of operations agree with a deque."""

    MAXSIZE = 6

    def __init__(self):
        super().__init__()
        self.q = Queue(maxsize=self.MAXSIZE, capacity_bytes=64 * KiB)
        self.model = collections.deque()

    items = st.one_of(
        st.integers(),
        st.text(max_size=20),
        st.binary(max_size=3000),
        # bigger than the ring, built cheaply from one drawn byte
        st.integers(0, 255).map(lambda b: bytes([b]) * (70 * KiB)),
    )

    @rule(item=items)
    def put(self, item):
        if len(self.model) >= self.MAXSIZE:
            with pytest.raises(Full):
                self.q.put(item, block=False)
        else:
            self.q.put(item, block=False)
            self.model.append(item)

    @rule(batch=st.lists(items, max_size=8))
    def put_many(self, batch):
        room = self.MAXSIZE - len(self.model)
        if len(batch) > room:
            with pytest.raises(Full) as info:
                self.q.put_many(batch, block=False)
            assert info.value.count == room
            self.model.extend(batch[:room])
        else:
            self.q.put_many(batch, block=False)
            self.model.extend(batch)

    @rule()
    def get(self):
        if self.model:
            assert self.q.get(block=False) == self.model.popleft()
        else:
            with pytest.raises(Empty):
                self.q.get(block=False)

    @rule(max_items=st.one_of(st.none(), st.integers(1, 10)))
    def get_many(self, max_items):
        if self.model:
            n = len(self.model) if max_items is None else min(max_items, len(self.model))
            expected = [self.model.popleft() for _ in range(n)]
            assert self.q.get_many(max_items=max_items, block=False) == expected
        else:
            with pytest.raises(Empty):
                self.q.get_many(max_items=max_items, block=False)

    @precondition(lambda self: not self.model)
    @rule()
    def get_times_out(self):
        with pytest.raises(Empty):
            self.q.get(timeout=0.001)

    @invariant()
    def sizes_agree(self):
        assert self.q.qsize() == len(self.model)
        assert self.q.empty() == (not self.model)
        assert self.q.full() == (len(self.model) >= self.MAXSIZE)

    def teardown(self):
        self.q.close()


QueueModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestQueueModel = QueueModel.TestCase
