"""Single-process semantics of Pipe and Connection.

Tests that take the ``Pipe`` fixture run against both ``interproc.Pipe`` and
``multiprocessing.Pipe``: passing on both is what makes interproc a drop-in.
Tests of what multiprocessing does not promise (several threads on one end,
sends that never block) use ``interproc.Pipe`` alone.
"""

import array
import collections
import datetime
import decimal
import fractions
import gc
import inspect
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import signal
import threading
import time

import pytest

import interproc

import _helpers
from _helpers import TIMING_SLACK, Point, assert_took, check_item, checked_item, cpu_seconds
from _pipe_helpers import (
    RING_IDS,
    RINGS,
    KiB,
    MiB,
    MyBytes,
    MyDict,
    MyInt,
    MyStr,
    closing_pipes,
    finish_within,
    pipe_payload,
    ring_pipe,
    send_until_broken,
)

pytestmark = pytest.mark.timeout(60)

IMPLS = ["interproc", "multiprocessing"]


@pytest.fixture(params=IMPLS)
def Pipe(request):
    """Pipe() of interproc or of multiprocessing; every end is closed afterwards."""
    yield from closing_pipes(request.param)


@pytest.fixture(params=IMPLS)
def RawPipe(request):
    """Pipe() of either, with nothing kept alive by the fixture, for tests
    of what happens when the last reference to an end goes."""
    return interproc.Pipe if request.param == "interproc" else multiprocessing.Pipe


@pytest.fixture
def IPipe():
    """interproc.Pipe alone, for what multiprocessing does not promise."""
    yield from closing_pipes("interproc")


def directions(pair):
    """Both ways through a duplex pipe: (sender, receiver)."""
    a, b = pair
    return [(a, b), (b, a)]


# -------------------------------------------------------------- surface

def test_signatures_match_multiprocessing():
    def params(func, skip_self):
        ps = list(inspect.signature(func).parameters.values())[1 if skip_self else 0:]
        return [(p.name, p.default) for p in ps]

    assert params(interproc.Pipe, False)[0] == ("duplex", True)
    assert params(interproc.wait, False) == params(multiprocessing.connection.wait, False)
    for method in ["send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into", "poll", "fileno", "close"]:
        mine = params(getattr(interproc.Connection, method), True)
        theirs = params(getattr(multiprocessing.connection.Connection, method), True)
        assert mine == theirs, method


def test_keyword_arguments_as_multiprocessing(Pipe):
    a, b = Pipe()
    a.send_bytes(buf=b"0123456789", offset=2, size=3)
    assert b.poll(timeout=1.0)
    assert b.recv_bytes(maxlength=3) == b"234"
    a.send_bytes(b"xy")
    buf = bytearray(4)
    assert b.recv_bytes_into(buf=buf, offset=1) == 2
    assert buf == b"\0xy\0"


# ----------------------------------------------------------- object types

OBJECTS = {
    "None": None,
    "True": True,
    "False": False,
    "zero": 0,
    "negative": -1,
    "bigint": 2**200 + 7,
    "negbigint": -(2**70),
    "float": 3.5,
    "inf": float("inf"),
    "complex": 1 + 2j,
    "empty-str": "",
    "unicode": "h\u00e9llo \u2603 \U0001f600",
    "long-str": "x" * 10_000,
    "empty-bytes": b"",
    "bytes": bytes(range(256)) * 4,
    "bytearray": bytearray(b"abc\x00def"),
    "empty-tuple": (),
    "tuple": (1, "a", None, 2.5),
    "nested-list": [1, [2, [3, [4, []]]]],
    "dict": {"a": 1, 2: [3, 4], (5, 6): {"x": None}},
    "set": {1, 2, 3},
    "frozenset": frozenset({"x", "y"}),
    "range": range(3, 30, 2),
    "slice": slice(1, 5, 2),
    "ellipsis": Ellipsis,
    "user-class": Point(1, [2, 3]),
    "datetime": datetime.datetime(2024, 2, 29, 12, 30, 1, 123456),
    "decimal": decimal.Decimal("1.10"),
    "fraction": fractions.Fraction(1, 3),
    "ordered-dict": collections.OrderedDict([("b", 1), ("a", 2)]),
    "deque": collections.deque([1, 2, 3]),
    "int-subclass": MyInt(7),
    "str-subclass": MyStr("seven"),
    "bytes-subclass": MyBytes(b"seven"),
    "dict-subclass": MyDict(a=1),
    "type": int,
    "function": pickle.dumps,
    "tuple-of-bytes": (b"a", b"b" * 1000),
    "list-of-mixed": [1, "two", 3.0, b"four", None, True],
}


@pytest.mark.parametrize("obj", list(OBJECTS.values()), ids=list(OBJECTS))
def test_object_round_trips_with_its_type(Pipe, obj):
    for sender, receiver in directions(Pipe()):
        sender.send(obj)
        got = receiver.recv()
        assert got == obj
        assert type(got) is type(obj)


def test_many_objects_in_order(Pipe):
    a, b = Pipe()
    objs = list(OBJECTS.values())
    for obj in objs:
        a.send(obj)
    got = [b.recv() for _ in objs]
    assert got == objs
    assert [type(x) for x in got] == [type(x) for x in objs]
    assert not b.poll(0)


def test_nan_and_self_referencing_objects(Pipe):
    a, b = Pipe()
    cyclic = [1]
    cyclic.append(cyclic)
    a.send(float("nan"))
    a.send(cyclic)
    assert math.isnan(b.recv())
    got = b.recv()
    assert got[0] == 1 and got[1] is got


def test_exceptions_round_trip(Pipe):
    a, b = Pipe()
    a.send(ValueError("bad", 3))
    a.send(KeyError("k"))
    got = b.recv()
    assert type(got) is ValueError and got.args == ("bad", 3)
    got = b.recv()
    assert type(got) is KeyError and got.args == ("k",)


def test_objects_sent_from_another_thread(Pipe):
    a, b = Pipe()
    items = [(i, "x" * i) for i in range(500)]
    t = threading.Thread(target=lambda: [a.send(x) for x in items])
    t.start()
    got = [finish_within(10, b.recv) for _ in items]
    t.join(10)
    assert got == items


# ------------------------------------------------------------------ sizes

SIZES = [0, 1, 100, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, MiB + 3, 17 * MiB + 5]


@pytest.mark.parametrize("size", SIZES)
def test_send_bytes_sizes(Pipe, size):
    """A reader thread drains while the main thread sends: multiprocessing's
    socket buffer is far smaller than the biggest message."""
    a, b = Pipe()
    payload = random.Random(size).randbytes(size)
    for sender, receiver in directions((a, b)):
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("got", receiver.recv_bytes()))
        t.start()
        sender.send_bytes(payload)
        t.join(30)
        assert not t.is_alive(), "recv_bytes() did not return"
        assert box["got"] == payload


@pytest.mark.parametrize("size", [64 * KiB + 1, MiB + 3, 17 * MiB + 5])
def test_send_big_objects(Pipe, size):
    a, b = Pipe()
    rng = random.Random(size)
    obj = {"head": "h", "blob": rng.randbytes(size), "chunks": [rng.randbytes(1000) for _ in range(10)]}
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("got", b.recv()))
    t.start()
    a.send(obj)
    t.join(30)
    assert not t.is_alive(), "recv() did not return"
    assert box["got"] == obj


def test_send_never_blocks_without_a_reader(IPipe):
    """docs/api.md: send() never blocks, the ring grows."""
    a, b = IPipe()
    rng = random.Random(1)
    payloads = [rng.randbytes(MiB) for _ in range(20)] + [rng.randbytes(40 * MiB)]

    def send_all():
        for i, p in enumerate(payloads):
            if i % 2:
                a.send_bytes(p)
            else:
                a.send((i, p))

    finish_within(30, send_all)
    for i, p in enumerate(payloads):
        if i % 2:
            assert b.recv_bytes() == p
        else:
            assert b.recv() == (i, p)
    assert not b.poll(0)


# ------------------------------------------------------ send_bytes slices

BUF = b"0123456789"


@pytest.mark.parametrize(
    "args,expected",
    [
        ((), BUF),
        ((0,), BUF),
        ((3,), b"3456789"),
        ((3, 4), b"3456"),
        ((10,), b""),
        ((0, 0), b""),
        ((0, 10), BUF),
        ((9, 1), b"9"),
    ],
    ids=repr,
)
def test_send_bytes_offset_and_size(Pipe, args, expected):
    a, b = Pipe()
    for buf in (BUF, bytearray(BUF), memoryview(BUF)):
        a.send_bytes(buf, *args)
        assert b.recv_bytes() == expected
    if len(args) == 2:
        a.send_bytes(BUF, offset=args[0], size=args[1])
        assert b.recv_bytes() == expected


def test_send_bytes_offsets_count_bytes_for_wide_items(Pipe):
    """multiprocessing casts to bytes first: offset and size are in bytes."""
    a, b = Pipe()
    arr = array.array("i", [1, 2, 3, 4])
    raw = arr.tobytes()
    a.send_bytes(arr)
    assert b.recv_bytes() == raw
    a.send_bytes(arr, 4, 8)
    assert b.recv_bytes() == raw[4:12]
    a.send_bytes(memoryview(arr), 2)
    assert b.recv_bytes() == raw[2:]


# -------------------------------------------------------- recv_bytes_into

def test_recv_bytes_into(Pipe):
    a, b = Pipe()
    a.send_bytes(b"hello")
    buf = bytearray(b"." * 12)
    assert b.recv_bytes_into(buf) == 5
    assert buf == b"hello......."
    a.send_bytes(b"world")
    assert b.recv_bytes_into(buf, 7) == 5
    assert buf == b"hello..world"
    a.send_bytes(b"")
    assert b.recv_bytes_into(buf, 12) == 0
    assert buf == b"hello..world"


def test_recv_bytes_into_exact_fit_and_other_buffers(Pipe):
    a, b = Pipe()
    a.send_bytes(b"abcd")
    buf = bytearray(6)
    assert b.recv_bytes_into(memoryview(buf), 2) == 4
    assert buf == b"\0\0abcd"

    arr = array.array("i", [0, 0, 0, 0])
    a.send_bytes(array.array("i", [7, 8]))
    assert b.recv_bytes_into(arr, 4) == 8  # the offset is in bytes
    assert arr.tolist() == [0, 7, 8, 0]


@pytest.mark.parametrize("size", [10, 100 * KiB, 3 * MiB])
def test_recv_bytes_into_too_short(Pipe, size):
    a, b = Pipe()
    msg = random.Random(size).randbytes(size)
    buf = bytearray(size - 1)
    t = threading.Thread(target=lambda: (a.send_bytes(msg), a.send_bytes(b"next")))
    t.start()
    with pytest.raises(multiprocessing.BufferTooShort) as info:
        finish_within(30, b.recv_bytes_into, buf)
    assert info.value.args[0] == msg
    assert isinstance(info.value, multiprocessing.ProcessError)
    # The message went out in the exception; the next one is intact.
    assert finish_within(30, b.recv_bytes) == b"next"
    t.join(10)


def test_recv_bytes_into_too_short_because_of_offset(Pipe):
    a, b = Pipe()
    a.send_bytes(b"abcd")
    buf = bytearray(6)
    with pytest.raises(multiprocessing.BufferTooShort) as info:
        b.recv_bytes_into(buf, 3)
    assert info.value.args[0] == b"abcd"
    assert buf == bytearray(6)


# ------------------------------------------------------------ mixed families

MIXED = [b"raw bytes", b"", bytearray(b"ba"), "text", 12345, None, [1, (2, b"x")], Point(3, 4), MyBytes(b"sub")]


@pytest.mark.parametrize("obj", MIXED, ids=repr)
def test_recv_bytes_of_send_is_its_pickle(Pipe, obj):
    a, b = Pipe()
    a.send(obj)
    data = b.recv_bytes()
    assert type(data) is bytes
    got = pickle.loads(data)
    assert got == obj and type(got) is type(obj)

    a.send(obj)
    buf = bytearray(len(data) + 10)
    n = b.recv_bytes_into(buf)
    got = pickle.loads(buf[:n])
    assert got == obj and type(got) is type(obj)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("obj", MIXED, ids=repr)
def test_recv_of_send_bytes_unpickles(Pipe, obj, protocol):
    a, b = Pipe()
    a.send_bytes(pickle.dumps(obj, protocol=protocol))
    got = b.recv()
    assert got == obj and type(got) is type(obj)


def test_recv_of_bytes_that_are_no_pickle_raises_and_pipe_survives(Pipe):
    a, b = Pipe()
    a.send_bytes(b"\x00\x01 not a pickle")
    a.send("after")
    with pytest.raises(pickle.UnpicklingError):
        b.recv()
    assert b.recv() == "after"


# ------------------------------------------------------------------- poll

def test_poll_reflects_pending_messages(Pipe):
    a, b = Pipe()
    assert b.poll() is False
    assert b.poll(0) is False
    a.send(1)
    a.send(2)
    assert b.poll() is True
    assert b.poll(0) is True  # poll does not consume
    assert b.recv() == 1
    assert b.poll(0) is True
    assert b.recv() == 2
    assert b.poll(0) is False
    assert a.poll(0) is False  # nothing came the other way


@pytest.mark.parametrize("timeout", [0.1, 0.3])
def test_poll_timeout_is_honoured(Pipe, timeout):
    a, b = Pipe()
    t0 = time.monotonic()
    assert b.poll(timeout) is False
    assert_took(time.monotonic() - t0, timeout)


def test_poll_zero_returns_at_once(Pipe):
    a, b = Pipe()
    t0 = time.monotonic()
    for _ in range(100):
        assert b.poll(0) is False
    assert time.monotonic() - t0 < TIMING_SLACK


def test_poll_returns_when_data_arrives_from_a_thread(Pipe):
    a, b = Pipe()
    timer = threading.Timer(0.1, a.send, ("late",))
    timer.start()
    try:
        t0 = time.monotonic()
        assert b.poll(10) is True
        assert 0.1 - 0.01 <= time.monotonic() - t0 < 1.0
        assert b.recv() == "late"
    finally:
        timer.join()


def test_poll_none_waits_for_data_from_a_thread(Pipe):
    a, b = Pipe()
    timer = threading.Timer(0.2, a.send_bytes, (b"late",))
    timer.start()
    try:
        t0 = time.monotonic()
        assert finish_within(10, b.poll, None) is True
        elapsed = time.monotonic() - t0
        assert 0.2 - 0.01 <= elapsed < 2.0, elapsed
        assert b.recv_bytes() == b"late"
    finally:
        timer.join()


def test_blocking_recv_returns_data_from_a_thread(Pipe):
    a, b = Pipe()
    timer = threading.Timer(0.1, a.send, ({"k": "v"},))
    timer.start()
    try:
        assert finish_within(10, b.recv) == {"k": "v"}
    finally:
        timer.join()


# ----------------------------------------------------------------- duplex

def test_duplex_flags(Pipe):
    a, b = Pipe()
    assert (a.readable, a.writable, b.readable, b.writable) == (True, True, True, True)
    a, b = Pipe(True)
    assert a.writable and b.readable


def test_simplex_directions(Pipe):
    r, w = Pipe(duplex=False)
    assert (r.readable, r.writable) == (True, False)
    assert (w.readable, w.writable) == (False, True)
    w.send("one way")
    w.send_bytes(b"raw")
    assert r.poll(0)
    assert r.recv() == "one way"
    assert r.recv_bytes() == b"raw"

    for call in (lambda: r.send("x"), lambda: r.send_bytes(b"x")):
        with pytest.raises(OSError):
            call()
    for call in (w.recv, w.recv_bytes, lambda: w.recv_bytes_into(bytearray(10)), w.poll, lambda: w.poll(0.1)):
        with pytest.raises(OSError):
            call()
    # A refused call changes nothing.
    assert not r.poll(0)
    w.send("still works")
    assert r.recv() == "still works"


# ------------------------------------------------------- closing, with

def test_close_and_closed(Pipe):
    a, b = Pipe()
    assert a.closed is False and b.closed is False
    a.close()
    assert a.closed is True
    assert b.closed is False
    a.close()  # twice is fine
    assert a.closed is True
    with pytest.raises(OSError, match="handle is closed"):
        a.send("x")
    with pytest.raises(OSError, match="handle is closed"):
        a.recv()
    b.close()
    b.close()
    assert b.closed


def test_context_manager_closes(Pipe):
    a, b = Pipe()
    with a as entered:
        assert entered is a
        a.send("in with")
        assert b.recv() == "in with"
    assert a.closed
    with pytest.raises(OSError):
        a.send("x")

    c, d = Pipe()
    with pytest.raises(ZeroDivisionError):
        with c, d:
            1 / 0
    assert c.closed and d.closed


def test_is_a_connection(IPipe):
    a, b = IPipe()
    assert isinstance(a, interproc.Connection)
    assert isinstance(b, interproc.Connection)
    r, w = IPipe(False)
    assert isinstance(r, interproc.Connection) and isinstance(w, interproc.Connection)


# -------------------------------------------------------------- maxlength

def test_recv_bytes_maxlength_exact_fit(Pipe):
    a, b = Pipe()
    a.send_bytes(b"x" * 100)
    assert b.recv_bytes(100) == b"x" * 100
    a.send_bytes(b"")
    assert b.recv_bytes(0) == b""
    assert b.readable


def test_recv_bytes_maxlength_exceeded_duplex(Pipe):
    a, b = Pipe()
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError):
        b.recv_bytes(99)
    assert b.readable is False
    assert b.closed is False
    for call in (b.recv, b.recv_bytes, lambda: b.recv_bytes_into(bytearray(200)), b.poll):
        with pytest.raises(OSError):
            call()
    # It can still send.
    b.send("still writable")
    assert a.recv() == "still writable"


def test_recv_bytes_maxlength_exceeded_simplex(Pipe):
    r, w = Pipe(duplex=False)
    w.send_bytes(b"x" * 100)
    w.send_bytes(b"y")
    with pytest.raises(OSError):
        r.recv_bytes(10)
    # multiprocessing closes a read-only end; either way it reads no more.
    assert r.closed or not r.readable
    for call in (r.recv, r.recv_bytes, r.poll):
        with pytest.raises(OSError):
            call()


# -------------------------------------------------------- threads, one end

@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_several_threads_sending_on_one_end(ring):
    a, b = ring_pipe(ring)
    n_threads, per_thread = 4, 300
    start = threading.Barrier(n_threads)
    errors = []

    def sender(tid):
        rng = random.Random(tid)
        try:
            start.wait(10)
            for seq in range(per_thread):
                if rng.random() < 0.5:
                    a.send(checked_item(tid, seq, pipe_payload(rng)))
                else:
                    a.send_bytes(pickle.dumps(checked_item(tid, seq, pipe_payload(rng))))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    last = {}
    for _ in range(n_threads * per_thread):
        item = finish_within(30, b.recv)
        tid, seq, ok = check_item(item)
        assert ok, f"torn message: {item!r:.200}"
        assert seq == last.get(tid, -1) + 1, f"thread {tid}: got {seq} after {last.get(tid)}"
        last[tid] = seq
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert last == {i: per_thread - 1 for i in range(n_threads)}
    assert not b.poll(0)


@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_several_threads_receiving_on_one_end(ring):
    a, b = ring_pipe(ring)
    n_threads, n_items = 4, 1200
    results = {}
    errors = []

    def receiver(tid):
        got = []
        try:
            while True:
                item = b.recv()
                if item is None:
                    break
                got.append(check_item(item))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        results[tid] = got

    threads = [threading.Thread(target=receiver, args=(i,), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for seq in range(n_items):
        a.send(checked_item("main", seq, pipe_payload(rng)))
    for _ in threads:
        a.send(None)
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a receiving thread never got its None"
    assert not errors, errors
    everything = [seq for got in results.values() for _, seq, _ in got]
    assert all(ok for got in results.values() for _, _, ok in got), "torn message"
    assert sorted(everything) == list(range(n_items)), "a message was lost or received twice"
    for got in results.values():
        seqs = [seq for _, seq, _ in got]
        assert seqs == sorted(seqs), "a thread saw messages out of order"


@pytest.mark.parametrize("ring", RINGS, ids=RING_IDS)
def test_threads_sending_and_receiving_at_once(ring):
    a, b = ring_pipe(ring)
    n_senders, n_receivers, per_sender = 3, 3, 300
    results = collections.defaultdict(list)
    errors = []

    def sender(tid):
        rng = random.Random(100 + tid)
        try:
            for seq in range(per_sender):
                a.send(checked_item(tid, seq, pipe_payload(rng)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def receiver(rid):
        try:
            while True:
                buf = b.recv_bytes()
                item = pickle.loads(buf)
                if item is None:
                    return
                results[rid].append(check_item(item))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    receivers = [threading.Thread(target=receiver, args=(i,), daemon=True) for i in range(n_receivers)]
    senders = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(n_senders)]
    for t in receivers + senders:
        t.start()
    for t in senders:
        t.join(30)
    for _ in receivers:
        a.send(None)
    for t in receivers:
        t.join(30)
    assert not any(t.is_alive() for t in receivers + senders), "a thread hung"
    assert not errors, errors
    got = [x for r in results.values() for x in r]
    assert all(ok for _, _, ok in got), "torn message"
    assert sorted((tid, seq) for tid, seq, _ in got) == [
        (tid, seq) for tid in range(n_senders) for seq in range(per_sender)
    ], "a message was lost or received twice"
    for r in results.values():
        for tid in range(n_senders):
            seqs = [seq for t, seq, _ in r if t == tid]
            assert seqs == sorted(seqs), f"sender {tid}'s messages out of order"


# -------------------------------------------------------------------- EOF

def test_eof_after_peer_closes_duplex(Pipe):
    for closing in (0, 1):
        ends = Pipe()
        sender, receiver = ends[closing], ends[1 - closing]
        sender.send("a")
        sender.send_bytes(b"b")
        sender.close()
        assert receiver.poll(0) is True
        assert receiver.recv() == "a"
        assert receiver.recv_bytes() == b"b"
        assert receiver.poll(0) is True  # end of stream counts as something to read
        with pytest.raises(EOFError):
            receiver.recv()
        with pytest.raises(EOFError):
            receiver.recv_bytes()
        with pytest.raises(EOFError):
            receiver.recv_bytes_into(bytearray(10))


def test_eof_after_writer_closes_simplex(Pipe):
    r, w = Pipe(duplex=False)
    payload = random.Random(3).randbytes(100 * KiB)
    t = threading.Thread(target=lambda: ([w.send(i) for i in range(10)], w.send_bytes(payload), w.close()))
    t.start()
    got = [finish_within(10, r.recv) for _ in range(10)]
    assert got == list(range(10))
    assert finish_within(10, r.recv_bytes) == payload
    t.join(10)
    with pytest.raises(EOFError):
        finish_within(5, r.recv)


def test_eof_wakes_a_blocked_recv(Pipe):
    a, b = Pipe()
    box = {}

    def blocked():
        try:
            box["got"] = b.recv()
        except EOFError:
            box["eof"] = time.monotonic()

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    time.sleep(0.2)  # let it block
    assert t.is_alive()
    t_close = time.monotonic()
    a.close()
    t.join(5)
    assert not t.is_alive(), "recv() still blocked 5 s after the other end was closed"
    assert "eof" in box, box
    assert box["eof"] - t_close < 1.0


def test_eof_wakes_a_blocked_poll(Pipe):
    r, w = Pipe(False)
    timer = threading.Timer(0.1, w.close)
    timer.start()
    try:
        assert finish_within(5, r.poll, None) is True
        with pytest.raises(EOFError):
            r.recv()
    finally:
        timer.join()


def test_dropping_the_other_end_is_like_closing_it(RawPipe):
    a, b = RawPipe()
    a.send("last words")
    del a
    gc.collect()
    assert b.recv() == "last words"
    with pytest.raises(EOFError):
        finish_within(5, b.recv)

    c, d = RawPipe()
    del d
    gc.collect()
    send_until_broken(c, 0.05)


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


@_helpers.needs_plain_allocator
def test_closed_pipes_release_descriptors_and_memory(RawPipe):
    def maps():
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)

    RawPipe()  # first-use costs (imports, caches) are not leaks
    gc.collect()
    fds0, maps0 = _open_fds(), maps()
    for i in range(100):
        a, b = RawPipe(duplex=bool(i % 2))
        a.fileno()
        b.fileno()
        if i % 2:
            a.send_bytes(bytes(200 * KiB))
            assert b.recv_bytes() == bytes(200 * KiB)
        if i % 3:
            a.close()
            b.close()
        else:
            del a, b
    gc.collect()
    assert _open_fds() - fds0 == set(), "descriptors outlived their pipes"
    assert maps() <= maps0 + 2, "mappings outlived their pipes"


# ----------------------------------------------------------- broken pipe

def test_send_after_peer_closed_is_broken_pipe(Pipe):
    for duplex in (True, False):
        a, b = Pipe(duplex)
        receiver, sender = (a, b)
        sender.send("unread")  # unread data does not change the answer
        receiver.close()
        send_until_broken(sender, 0.05)
        with pytest.raises(BrokenPipeError):
            sender.send_bytes(b"x")
        with pytest.raises(BrokenPipeError):
            sender.send("x")


def test_send_bytes_big_after_peer_closed_is_broken_pipe(Pipe):
    r, w = Pipe(False)
    r.close()
    send_until_broken(w, 0.05)
    with pytest.raises(BrokenPipeError):
        finish_within(10, w.send_bytes, bytes(5 * MiB))


# ---------------------------------------------------------------- signals

class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted()


@pytest.mark.parametrize("how", ["recv", "poll-none", "recv_bytes"])
def test_signal_handler_interrupts_a_blocked_call(Pipe, how):
    """A blocked call runs signal handlers and lets their exception out."""
    a, b = Pipe()
    main = threading.main_thread().ident
    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    kicker = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
    # If the handler never gets to run, this unblocks the call so that the
    # test fails instead of hanging.
    rescue = threading.Timer(5.0, a.send, ("rescued",))
    kicker.start()
    rescue.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            if how == "recv":
                b.recv()
            elif how == "poll-none":
                b.poll(None)
            else:
                b.recv_bytes()
        assert time.monotonic() - t0 < 2.0
    finally:
        kicker.join()
        rescue.cancel()
        signal.signal(signal.SIGUSR1, previous)
    a.send("after")
    assert b.recv() == "after"


# ------------------------------------------------------------- idle CPU

def test_blocked_recv_does_not_burn_cpu(IPipe):
    a, b = IPipe()
    timer = threading.Timer(1.0, a.send, ("wake",))
    cpu0 = cpu_seconds()
    timer.start()
    try:
        assert b.recv() == "wake"
    finally:
        timer.join()
    used = cpu_seconds() - cpu0
    assert used < 0.02, f"blocked recv() used {used * 1000:.1f} ms of CPU in 1 s"


def test_blocked_poll_does_not_burn_cpu(IPipe):
    a, b = IPipe()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    assert b.poll(1.0) is False
    used, elapsed = cpu_seconds() - cpu0, time.monotonic() - t0
    assert used < 0.02 * elapsed, f"poll(1.0) used {used * 1000:.1f} ms of CPU in {elapsed:.2f} s"
