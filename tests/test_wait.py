"""fileno() and readiness: select, selectors, multiprocessing.connection.wait,
asyncio's add_reader, and interproc.wait.

Each check looks both ways: readable once data (or end of stream) is there,
and not readable once it has been drained, since a descriptor that stays
readable would make every event loop spin.  Tests that take the ``Pipe``
fixture also run against ``multiprocessing.Pipe``, whose descriptors are
the behaviour to match.
"""

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import select
import selectors
import signal
import socket
import threading
import time

import pytest

import interproc

import _pipe_helpers as ph
from _helpers import TIMEOUT, assert_took, cpu_seconds, join_ok, start
from _pipe_helpers import closing_pipes, finish_within

pytestmark = pytest.mark.timeout(60)

IMPLS = ["interproc", "multiprocessing"]


@pytest.fixture(params=IMPLS)
def Pipe(request):
    yield from closing_pipes(request.param)


@pytest.fixture
def IPipe():
    yield from closing_pipes("interproc")


def readable_now(*conns):
    """The connections select() reports readable without waiting."""
    fds = {c.fileno(): c for c in conns}
    ready, _, _ = select.select(list(fds), [], [], 0)
    return [fds[fd] for fd in ready]


def ids(objs):
    return sorted(id(o) for o in objs)


# ---------------------------------------------------------------- fileno

def test_fileno_is_a_real_descriptor(Pipe):
    ends = list(Pipe()) + list(Pipe(duplex=False))
    fds = []
    for conn in ends:
        fd = conn.fileno()
        assert type(fd) is int and fd >= 0
        os.fstat(fd)  # a live descriptor of this process
        assert conn.fileno() == fd
        fds.append(fd)
    assert len(set(fds)) == len(fds)


def test_select_sees_messages_and_nothing_else(Pipe):
    a, b = Pipe()
    for rnd in range(3):
        assert readable_now(a, b) == [], f"round {rnd}: readable with nothing there"
        a.send(rnd)
        a.send_bytes(b"x" * 100_000)
        assert readable_now(a, b) == [b]
        assert b.recv() == rnd
        assert readable_now(b) == [b], "one message is still waiting"
        assert b.recv_bytes() == b"x" * 100_000
        assert readable_now(a, b) == [], f"round {rnd}: still readable after draining"
        b.send("back")
        assert readable_now(a, b) == [a]
        assert a.recv() == "back"


def test_readable_for_messages_sent_before_fileno(Pipe):
    a, b = Pipe()
    a.send("early")
    assert readable_now(b) == [b]
    assert b.recv() == "early"
    assert readable_now(b) == []


def test_select_wakes_when_a_thread_sends(Pipe):
    a, b = Pipe()
    fd = b.fileno()
    timer = threading.Timer(0.1, a.send, ("late",))
    timer.start()
    try:
        t0 = time.monotonic()
        ready, _, _ = select.select([fd], [], [], 5)
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
    assert ready == [fd]
    assert 0.09 <= elapsed < 1.0
    assert b.recv() == "late"
    assert select.select([fd], [], [], 0)[0] == []


def test_select_readable_at_end_of_stream(Pipe):
    for duplex in (True, False):
        a, b = Pipe(duplex)
        receiver, sender = a, b
        fd = receiver.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        timer = threading.Timer(0.1, sender.close)
        timer.start()
        try:
            ready, _, _ = select.select([fd], [], [], 5)
        finally:
            timer.join()
        assert ready == [fd]
        with pytest.raises(EOFError):
            receiver.recv()
        assert select.select([fd], [], [], 0)[0] == [fd], "end of stream must stay readable"


def test_no_lost_or_spurious_readiness_under_a_stream(Pipe):
    """A thread sends in bursts while the main thread waits in select and
    drains with poll(0): select never reports readable with nothing to read
    (one receiver only, so nothing can vanish) and never sleeps through a
    message."""
    a, b = Pipe()
    fd = b.fileno()
    n = 3000
    go = threading.Event()

    def sender():
        for i in range(n):
            a.send(i)
            if i % 37 == 0:
                time.sleep(0.0005)
        go.set()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = []
    while len(got) < n:
        ready, _, _ = select.select([fd], [], [], 5)
        assert ready, f"select slept through a message after {len(got)} of {n}"
        assert b.poll(0), f"select said readable with nothing there after {len(got)}"
        while b.poll(0):
            got.append(b.recv())
    t.join(10)
    assert got == list(range(n))
    assert select.select([fd], [], [], 0)[0] == []


# ------------------------------------------------------------- selectors

def test_default_selector(Pipe):
    a, b = Pipe()
    with selectors.DefaultSelector() as sel:
        sel.register(b, selectors.EVENT_READ, data="b")
        assert sel.select(0) == []
        timer = threading.Timer(0.1, a.send, ("hi",))
        timer.start()
        try:
            events = sel.select(5)
        finally:
            timer.join()
        assert [(key.fileobj, key.data, mask) for key, mask in events] == [(b, "b", selectors.EVENT_READ)]
        assert b.recv() == "hi"
        assert sel.select(0) == []
        a.close()
        events = sel.select(5)
        assert [key.fileobj for key, _ in events] == [b]
        with pytest.raises(EOFError):
            b.recv()


# ------------------------------------------ multiprocessing.connection.wait

def test_multiprocessing_wait_mixes_both_kinds(IPipe):
    ia, ib = IPipe()
    ma, mb = multiprocessing.Pipe()
    try:
        mpwait = multiprocessing.connection.wait
        assert mpwait([ib, mb], 0) == []
        ia.send(1)
        assert mpwait([ib, mb], 0) == [ib]
        ma.send(2)
        assert ids(mpwait([ib, mb], 0)) == ids([ib, mb])
        assert ib.recv() == 1
        assert mpwait([ib, mb], 0) == [mb]
        assert mb.recv() == 2
        assert mpwait([ib, mb], 0) == []

        t0 = time.monotonic()
        assert mpwait([ib, mb], 0.2) == []
        assert_took(time.monotonic() - t0, 0.2)

        timer = threading.Timer(0.1, ia.send, ("late",))
        timer.start()
        try:
            assert finish_within(10, mpwait, [ib, mb], None) == [ib]
        finally:
            timer.join()
        assert ib.recv() == "late"
        ia.close()
        assert mpwait([ib, mb], 5) == [ib]
    finally:
        ma.close()
        mb.close()


# ------------------------------------------------------------------ asyncio

def _run_reader(receiver, sender_actions, n_expected):
    """Register receiver with add_reader, run sender_actions ((delay,
    callable) pairs, each run by a timer thread), and collect what the
    callback receives.  Returns (messages, callbacks before any data,
    callbacks after everything was read, callbacks that found nothing)."""

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"calls": 0, "empty_calls": 0, "got": []}

        def on_readable():
            state["calls"] += 1
            if not receiver.poll(0):
                state["empty_calls"] += 1
                return
            while receiver.poll(0):
                state["got"].append(receiver.recv())
            if len(state["got"]) >= n_expected and not done.done():
                done.set_result(None)

        fd = receiver.fileno()
        loop.add_reader(fd, on_readable)
        try:
            await asyncio.sleep(0.1)
            calls_before = state["calls"]
            for timer in timers:
                timer.start()
            await asyncio.wait_for(done, 20)
            calls_at_done = state["calls"]
            await asyncio.sleep(0.1)
            calls_after = state["calls"] - calls_at_done
        finally:
            loop.remove_reader(fd)
        return state["got"], calls_before, calls_after, state["empty_calls"]

    timers = [threading.Timer(delay, action) for delay, action in sender_actions]
    try:
        return asyncio.run(main())
    finally:
        for timer in timers:
            timer.cancel()
            if timer.is_alive():
                timer.join(10)


def test_asyncio_add_reader_from_a_thread(Pipe):
    a, b = Pipe()
    actions = [(0.05, lambda: a.send("one")), (0.1, lambda: a.send("two")), (0.15, lambda: a.send("three"))]
    got, before, after, empty = _run_reader(b, actions, 3)
    assert got == ["one", "two", "three"]
    assert before == 0, "the reader was called with nothing there"
    assert after == 0, f"the reader was called {after} more times after everything was read"
    assert empty <= 1, f"{empty} callbacks found nothing to read"


def test_asyncio_add_reader_from_a_process(start_method, IPipe):
    a, b = IPipe()
    p = start(start_method, ph.delayed_send_then_hold, b, 0.3, "from child")
    b.close()
    try:
        got, before, after, empty = _run_reader(a, [], 1)
    finally:
        a.send("done")
        join_ok(p)
    assert got == ["from child"]
    assert before == 0 and after == 0
    assert empty <= 1


# ----------------------------------------------------- other processes

def test_select_sees_data_from_a_child(start_method, IPipe):
    a, b = IPipe()
    fd = a.fileno()
    p = start(start_method, ph.delayed_send_then_hold, b, 0.3, "from child")
    b.close()
    try:
        assert select.select([fd], [], [], 0)[0] == []
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready == [fd]
        assert a.recv() == "from child"
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        a.send("done")
        join_ok(p)
    # The child has gone with its end: end of stream is readable.
    assert select.select([fd], [], [], 5)[0] == [fd]


@pytest.fixture
def cpu_hog():
    """One busy process for the length of a test."""
    hog = multiprocessing.get_context("fork").Process(target=ph.spin, args=(TIMEOUT,), daemon=True)
    hog.start()
    yield
    hog.kill()
    hog.join(10)


def test_no_stale_readiness_after_recv_in_a_ping_pong(start_method, Pipe, cpu_hog):
    """A child sends one message at a time and waits for an answer.  Each
    time, select wakes, recv() takes the message, and with the child now
    waiting, nothing is left: select must not report readable, or a program
    doing select-then-recv would block in recv."""
    a, b = Pipe()
    fd = a.fileno()
    n = 300
    p = start(start_method, ph.ping_pong, b, n)
    b.close()
    stale = []
    try:
        for i in range(n):
            assert select.select([fd], [], [], TIMEOUT)[0] == [fd]
            assert a.recv() == i
            if select.select([fd], [], [], 0)[0]:
                stale.append(i)
            a.send("ack")
    finally:
        join_ok(p)
    assert not stale, f"readable with nothing to read after {len(stale)} of {n} messages: {stale[:10]}"


def test_fileno_first_called_after_the_sender_started(start_method, IPipe):
    """The child got its end before notification was turned on here."""
    r, w = IPipe(duplex=False)
    go_here, go_there = IPipe()
    p = start(start_method, ph.wait_go_then_send, w, go_there, "after fileno")
    w.close()
    go_there.close()
    try:
        fd = r.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        go_here.send("go")
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready == [fd], "the child's message never made the descriptor readable"
        assert r.recv() == "after fileno"
    finally:
        join_ok(p)


def test_child_waits_with_a_selector(start_method, IPipe):
    a, b = IPipe()
    p = start(start_method, ph.select_echo, b, 5)
    b.close()
    for i in range(5):
        time.sleep(0.05)
        a.send(i)
        assert a.poll(TIMEOUT)
        assert a.recv() == ("echo", i)
    join_ok(p)


def test_select_readable_when_the_child_is_killed(start_method, IPipe):
    a, b = IPipe()
    sent = interproc.Queue()
    p = start(start_method, ph.send_then_hold, b, ["ready"], sent)
    b.close()
    try:
        fd = a.fileno()
        assert a.poll(TIMEOUT)
        assert a.recv() == "ready"
        assert select.select([fd], [], [], 0)[0] == []
        t_kill = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        ready, _, _ = select.select([fd], [], [], 5)
        assert ready == [fd], "a dead peer did not make the descriptor readable"
        assert time.monotonic() - t_kill < 1.0
        with pytest.raises(EOFError):
            a.recv()
    finally:
        p.join(30)


def test_multiprocessing_wait_sees_a_child(start_method, IPipe):
    ir, iw = IPipe(duplex=False)
    mr, mw = multiprocessing.Pipe(duplex=False)
    try:
        p = start(start_method, ph.delayed_send, iw, 0.3, "from child")
        iw.close()
        try:
            assert multiprocessing.connection.wait([ir, mr], 0) == []
            assert multiprocessing.connection.wait([ir, mr], TIMEOUT) == [ir]
            assert ir.recv() == "from child"
        finally:
            join_ok(p)
    finally:
        mr.close()
        mw.close()


# ========================================================= interproc.wait

def test_wait_returns_the_ready_subset(IPipe):
    ia, ib = IPipe()
    q = interproc.Queue()
    ma, mb = multiprocessing.Pipe()
    s1, s2 = socket.socketpair()
    objects = [ib, q, mb, s2]
    try:
        assert interproc.wait(objects, 0) == []
        ia.send("i")
        assert interproc.wait(objects, 0) == [ib]
        q.put("q")
        assert ids(interproc.wait(objects, 0)) == ids([ib, q])
        ma.send("m")
        s1.send(b"s")
        assert ids(interproc.wait(objects, 0)) == ids(objects)
        assert ids(interproc.wait(tuple(objects), 5)) == ids(objects)

        assert ib.recv() == "i"
        assert ids(interproc.wait(objects, 0)) == ids([q, mb, s2])
        assert q.get(timeout=1) == "q"
        assert ids(interproc.wait(objects, 0)) == ids([mb, s2])
        assert mb.recv() == "m"
        assert s2.recv(10) == b"s"
        assert interproc.wait(objects, 0) == []
    finally:
        for c in (ma, mb, s1, s2):
            c.close()
        q.close()


def test_wait_zero_reports_ready_descriptors():
    """timeout=0 still looks at multiprocessing Connections and sockets."""
    ma, mb = multiprocessing.Pipe()
    s1, s2 = socket.socketpair()
    try:
        ma.send("m")
        s1.send(b"s")
        assert ids(interproc.wait([mb, s2], 0)) == ids([mb, s2])
        assert interproc.wait([mb], 0) == [mb]
    finally:
        for c in (ma, mb, s1, s2):
            c.close()


@pytest.mark.parametrize("timeout", [0.1, 0.3])
def test_wait_timeout_is_honoured(IPipe, timeout):
    a, b = IPipe()
    q = interproc.Queue()
    ma, mb = multiprocessing.Pipe()
    try:
        t0 = time.monotonic()
        assert interproc.wait([b, q, mb], timeout) == []
        assert_took(time.monotonic() - t0, timeout)
        t0 = time.monotonic()
        assert interproc.wait([b], timeout) == []
        assert_took(time.monotonic() - t0, timeout)
        t0 = time.monotonic()
        assert interproc.wait([q], timeout) == []
        assert_took(time.monotonic() - t0, timeout)
    finally:
        ma.close()
        mb.close()
        q.close()


def test_wait_zero_and_empty_list_return_at_once(IPipe):
    a, b = IPipe()
    t0 = time.monotonic()
    for _ in range(50):
        assert interproc.wait([b], 0) == []
    assert interproc.wait([], 0) == []
    assert time.monotonic() - t0 < 0.1


@pytest.mark.parametrize("source", ["pipe", "queue", "mp-pipe"])
def test_wait_forever_returns_when_a_thread_delivers(IPipe, source):
    a, b = IPipe()
    q = interproc.Queue()
    ma, mb = multiprocessing.Pipe()
    action, expected = {
        "pipe": (lambda: a.send(1), b),
        "queue": (lambda: q.put(1), q),
        "mp-pipe": (lambda: ma.send(1), mb),
    }[source]
    timer = threading.Timer(0.2, action)
    timer.start()
    try:
        t0 = time.monotonic()
        ready = finish_within(10, interproc.wait, [b, q, mb])
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
        ma.close()
        mb.close()
        q.close()
    assert ready == [expected]
    assert 0.19 <= elapsed < 2.0


@pytest.mark.parametrize("kind", [interproc.Queue, interproc.SimpleQueue, interproc.JoinableQueue],
                         ids=lambda k: k.__name__)
def test_wait_on_queues_means_get_would_not_block(kind):
    q, other = kind(), kind()
    try:
        assert interproc.wait([q, other], 0) == []
        q.put("a")
        q.put("b")
        assert interproc.wait([q, other], 0) == [q]
        q.get()
        assert interproc.wait([q, other], 0) == [q]
        q.get()
        assert interproc.wait([q, other], 0) == []
        timer = threading.Timer(0.1, other.put, ("late",))
        timer.start()
        try:
            assert finish_within(10, interproc.wait, [q, other], 5) == [other]
        finally:
            timer.join()
    finally:
        q.close()
        other.close()


def test_wait_counts_end_of_stream_as_ready(IPipe):
    a, b = IPipe()
    r, w = IPipe(duplex=False)
    assert interproc.wait([b, r], 0) == []
    a.close()
    assert interproc.wait([b, r], 0) == [b]
    timer = threading.Timer(0.1, w.close)
    timer.start()
    try:
        assert finish_within(10, interproc.wait, [r], 5) == [r]
    finally:
        timer.join()
    assert ids(interproc.wait([b, r], 0)) == ids([b, r])


def test_wait_sees_other_processes(start_method, IPipe):
    r, w = IPipe(duplex=False)
    q = interproc.Queue()
    p1 = start(start_method, ph.delayed_send, w, 0.2, "sent")
    w.close()
    try:
        assert interproc.wait([r, q], TIMEOUT) == [r]
        assert r.recv() == "sent"
        p2 = start(start_method, ph.delayed_put, q, 0.2, "put")
        try:
            # r is at end of stream once the first child is gone; leave it out.
            assert interproc.wait([q], TIMEOUT) == [q]
            assert q.get(timeout=1) == "put"
        finally:
            join_ok(p2)
    finally:
        join_ok(p1)
        q.close()


def _assert_idle(what, cpu0, t0, share):
    used, elapsed = cpu_seconds() - cpu0, time.monotonic() - t0
    assert used < share * elapsed, f"{what} used {used * 1000:.1f} ms of CPU in {elapsed:.2f}s"


@pytest.mark.parametrize("with_queue", [False, True], ids=["descriptors-only", "with-a-queue"])
def test_wait_does_not_burn_cpu(IPipe, with_queue):
    a, b = IPipe()
    q = interproc.Queue()
    ma, mb = multiprocessing.Pipe()
    objects = [b, q, mb] if with_queue else [b, mb]
    # Descriptors alone are watched by the kernel: next to no CPU.  A queue
    # is looked at every 10 ms, as documented; on a loaded machine each look
    # may cost far more than its usual tens of microseconds, so the bound is
    # one that only spinning, or looking every millisecond, would break.
    share = 0.10 if with_queue else 0.02
    try:
        interproc.wait(objects, 0)  # first-call costs are not waiting costs
        cpu0, t0 = cpu_seconds(), time.monotonic()
        assert interproc.wait(objects, 1.0) == []
        _assert_idle("wait(timeout=1)", cpu0, t0, share)

        timer = threading.Timer(1.0, ma.send, ("wake",))
        cpu0, t0 = cpu_seconds(), time.monotonic()
        timer.start()
        try:
            assert interproc.wait(objects) == [mb]
        finally:
            timer.join()
        _assert_idle("wait()", cpu0, t0, share)
    finally:
        ma.close()
        mb.close()
        q.close()
