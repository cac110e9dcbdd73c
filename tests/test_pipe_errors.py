"""Misuse of Pipe and Connection raises what multiprocessing raises.

Every test runs against both ``interproc.Pipe`` and ``multiprocessing.Pipe``.
Where multiprocessing's message is part of what users match on, the
message is checked in a test of its own, so that a differing text is told
apart from a differing exception.
"""

import array
import multiprocessing
import os
import pickle
import re
import threading
import time

import pytest

import interproc

from _pipe_helpers import Unpicklable

pytestmark = pytest.mark.timeout(60)

IMPLS = ["interproc", "multiprocessing"]


@pytest.fixture(params=IMPLS)
def Pipe(request):
    made = []

    def make(*args, **kwargs):
        func = interproc.Pipe if request.param == "interproc" else multiprocessing.Pipe
        pair = func(*args, **kwargs)
        made.extend(pair)
        return pair

    yield make
    for conn in made:
        conn.close()


# ------------------------------------------------------------ send_bytes

BAD_RANGES = [
    # (offset, size, multiprocessing's message)
    (-1, None, "offset is negative"),
    (-1, 2, "offset is negative"),
    (11, None, "buffer length < offset"),
    (11, 0, "buffer length < offset"),
    (0, -1, "size is negative"),
    (5, 6, "buffer length < offset + size"),
    (0, 11, "buffer length < offset + size"),
    (10, 1, "buffer length < offset + size"),
]


@pytest.mark.parametrize("offset,size,message", BAD_RANGES, ids=lambda x: repr(x))
def test_send_bytes_bad_range_is_value_error_and_sends_nothing(Pipe, offset, size, message):
    a, b = Pipe()
    with pytest.raises(ValueError):
        a.send_bytes(b"0123456789", offset, size)
    assert b.poll(0) is False
    a.send_bytes(b"ok")
    assert b.recv_bytes() == b"ok"


@pytest.mark.parametrize("offset,size,message", BAD_RANGES, ids=lambda x: repr(x))
def test_send_bytes_bad_range_message_matches_multiprocessing(Pipe, offset, size, message):
    a, b = Pipe()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        a.send_bytes(b"0123456789", offset=offset, size=size)


def test_send_bytes_ranges_count_bytes_for_wide_items(Pipe):
    a, b = Pipe()
    arr = array.array("i", [1, 2, 3])  # 12 bytes
    with pytest.raises(ValueError):
        a.send_bytes(arr, 13)
    with pytest.raises(ValueError):
        a.send_bytes(arr, 4, 9)
    a.send_bytes(arr, 12)
    assert b.recv_bytes() == b""


@pytest.mark.parametrize("bad", [42, 4.2, None, "text", [1, 2], object()], ids=repr)
def test_send_bytes_non_buffer_is_type_error(Pipe, bad):
    a, b = Pipe()
    with pytest.raises(TypeError):
        a.send_bytes(bad)
    assert b.poll(0) is False


# ----------------------------------------------------- recv_bytes(_into)

def test_recv_bytes_negative_maxlength(Pipe):
    a, b = Pipe()
    with pytest.raises(ValueError, match="^negative maxlength$"):
        b.recv_bytes(-1)
    with pytest.raises(ValueError, match="^negative maxlength$"):
        b.recv_bytes(maxlength=-(2**40))
    # Refused before anything was read, and the end is still readable.
    a.send_bytes(b"data")
    assert b.readable
    assert b.recv_bytes(maxlength=4) == b"data"


@pytest.mark.parametrize("bad", [b"immutable", memoryview(b"immutable")], ids=["bytes", "memoryview-of-bytes"])
def test_recv_bytes_into_read_only_buffer_is_type_error(Pipe, bad):
    # With nothing to read multiprocessing would block before checking,
    # so a message is waiting.
    a, b = Pipe()
    a.send_bytes(b"abc")
    with pytest.raises(TypeError):
        b.recv_bytes_into(bad)


@pytest.mark.parametrize("bad", [42, None, "text"], ids=repr)
def test_recv_bytes_into_non_buffer_is_type_error(Pipe, bad):
    a, b = Pipe()
    a.send_bytes(b"abc")
    with pytest.raises(TypeError):
        b.recv_bytes_into(bad)
    assert b.recv_bytes() == b"abc", "a refused buffer must not consume the message"


@pytest.mark.parametrize(
    "offset,message", [(-1, "negative offset"), (11, "offset too large")], ids=["negative", "too-large"]
)
def test_recv_bytes_into_bad_offset(Pipe, offset, message):
    a, b = Pipe()
    a.send_bytes(b"abc")
    with pytest.raises(ValueError, match=f"^{message}$"):
        b.recv_bytes_into(bytearray(10), offset)
    assert b.recv_bytes() == b"abc", "a refused offset must not consume the message"


# ------------------------------------------------------------------ send

@pytest.mark.parametrize("bad", [lambda: 0, Unpicklable()], ids=["lambda", "reduce-raises"])
def test_unpicklable_object_raises_in_send_and_sends_nothing(Pipe, bad):
    a, b = Pipe()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError, RuntimeError)):
        a.send(bad)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError, RuntimeError)):
        a.send([1, 2, bad])
    assert b.poll(0) is False
    a.send("next")
    assert b.recv() == "next"


# ------------------------------------------------------------------ duplex

@pytest.mark.parametrize("duplex,expect", [
    ("x", True), (1, True), ([0], True), (0, False), ("", False), (None, False), ([], False),
], ids=repr)
def test_duplex_takes_any_truth_value(Pipe, duplex, expect):
    a, b = Pipe(duplex)
    assert (a.writable, b.readable) == (expect, expect)
    assert a.readable and b.writable
    b.send("b to a")
    assert a.recv() == "b to a"
    if expect:
        a.send("a to b")
        assert b.recv() == "a to b"


def test_duplex_keyword_and_positional(Pipe):
    a, b = Pipe(duplex=False)
    assert not a.writable
    a, b = Pipe(True)
    assert a.writable


def test_wrong_direction_messages_match_multiprocessing(Pipe):
    r, w = Pipe(duplex=False)
    with pytest.raises(OSError, match="^connection is read-only$"):
        r.send("x")
    with pytest.raises(OSError, match="^connection is read-only$"):
        r.send_bytes(b"x")
    with pytest.raises(OSError, match="^connection is write-only$"):
        w.recv()
    with pytest.raises(OSError, match="^connection is write-only$"):
        w.recv_bytes()
    with pytest.raises(OSError, match="^connection is write-only$"):
        w.recv_bytes_into(bytearray(4))
    with pytest.raises(OSError, match="^connection is write-only$"):
        w.poll()


# ------------------------------------------------------------------ closed

CALLS = {
    "send": lambda c: c.send("x"),
    "send_bytes": lambda c: c.send_bytes(b"x"),
    "send_bytes-bad-args": lambda c: c.send_bytes(b"x", -1),
    "recv": lambda c: c.recv(),
    "recv_bytes": lambda c: c.recv_bytes(),
    "recv_bytes-maxlength": lambda c: c.recv_bytes(-1),
    "recv_bytes_into": lambda c: c.recv_bytes_into(bytearray(4)),
    "poll": lambda c: c.poll(),
    "poll-timeout": lambda c: c.poll(0.5),
    "poll-none": lambda c: c.poll(None),
    "fileno": lambda c: c.fileno(),
}


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
@pytest.mark.parametrize("duplex,end", [(True, 0), (True, 1), (False, 0), (False, 1)],
                         ids=["duplex-first", "duplex-second", "simplex-reader", "simplex-writer"])
def test_every_method_on_a_closed_connection_is_os_error(Pipe, call, duplex, end):
    conn = Pipe(duplex)[end]
    conn.close()
    t0 = time.monotonic()
    with pytest.raises(OSError, match="^handle is closed$"):
        call(conn)
    assert time.monotonic() - t0 < 0.1, "a closed connection must refuse at once"


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
def test_closed_by_context_manager_is_os_error(Pipe, call):
    a, b = Pipe()
    with a:
        pass
    with pytest.raises(OSError, match="^handle is closed$"):
        call(a)


def test_closed_connection_keeps_its_flags(Pipe):
    r, w = Pipe(False)
    r.close()
    w.close()
    assert r.closed and w.closed
    assert (r.readable, r.writable, w.readable, w.writable) == (True, False, False, True)
    r.close()
    w.close()


def test_peer_of_a_closed_end_still_works_for_what_was_sent(Pipe):
    a, b = Pipe()
    b.send("before close")
    b.close()
    assert a.recv() == "before close"
    with pytest.raises(EOFError):
        a.recv()


# ------------------------------------------------------------------- poll

@pytest.mark.parametrize("timeout", [-1, -0.5, float("-inf")])
def test_poll_negative_timeout_looks_without_waiting(Pipe, timeout):
    a, b = Pipe()
    assert b.poll(timeout) is False
    a.send("x")
    assert b.poll(timeout) is True
    assert b.recv() == "x"


def test_poll_nan_timeout_is_value_error(Pipe):
    a, b = Pipe()
    with pytest.raises(ValueError):
        b.poll(float("nan"))


def test_poll_non_number_timeout_is_type_error(Pipe):
    a, b = Pipe()
    with pytest.raises(TypeError):
        b.poll("1")


def test_send_handle_over_an_interproc_end_says_what_to_use_instead():
    """multiprocessing.reduction passes descriptors over the socket behind
    fileno(); an interproc end has none, and says so instead of failing
    with "Socket operation on non-socket"."""
    from multiprocessing import reduction

    a, b = interproc.Pipe()
    r, w = os.pipe()
    try:
        with pytest.raises(TypeError, match="socketpair"):
            reduction.send_handle(a, w, os.getpid())
        with pytest.raises(TypeError, match="not sockets"):
            reduction.recv_handle(b)
        # multiprocessing's own connections still pass descriptors.
        ma, mb = multiprocessing.Pipe()
        with ma, mb:
            # From a thread: since Python 3.15 send_handle waits for the
            # receiver's acknowledgement.
            sender = threading.Thread(target=reduction.send_handle, args=(ma, w, os.getpid()))
            sender.start()
            got = reduction.recv_handle(mb)
            sender.join(10)
            assert not sender.is_alive()
        os.write(got, b"x")
        os.close(got)
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()
