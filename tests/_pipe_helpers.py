"""Helpers for the Pipe/Connection/wait tests, and the targets of their children.

Child targets live here, at module level, because spawn and forkserver pickle
them by reference.  A child never calls a blocking method without a bound:
it polls with CHILD_TIMEOUT first, so that a lost message shows up as a
non-zero exit code instead of a hung test.
"""

import multiprocessing
import os
import random
import selectors
import sys
import threading
import time

from _helpers import CHILD_TIMEOUT, check_item, checked_item, cpu_seconds

KiB = 1024
MiB = 1024 * KiB


def finish_within(timeout, fn, *args):
    """fn(*args) in a daemon thread: its result, or the exception it raised.

    A call that may hang because of a bug runs here rather than in the main
    thread, so that the hang is an assertion failure and the main thread stays
    free to run pytest-timeout's handler and the remaining tests.
    """
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{getattr(fn, '__qualname__', fn)} still running after {timeout}s")
    if "exc" in box:
        raise box["exc"]
    return box["value"]


def recv_within(conn, timeout=CHILD_TIMEOUT):
    """recv() that fails instead of hanging when nothing comes."""
    if not conn.poll(timeout):
        raise TimeoutError(f"nothing to receive within {timeout}s")
    return conn.recv()


def send_until_broken(conn, grace, obj="ping"):
    """Send until BrokenPipeError; return how long it took to be noticed.

    The peer's death may be noticed a little after it happens, so the sends
    before that are allowed to succeed.
    """
    t0 = time.monotonic()
    while True:
        try:
            conn.send(obj)
        except BrokenPipeError:
            return time.monotonic() - t0
        if time.monotonic() - t0 > grace:
            raise AssertionError(f"send() still succeeds {grace}s after the peer went away")
        time.sleep(0.001)


def pipe_payload(rng):
    """Mixed sizes: tiny, ~1 KiB, ~100 KiB and, rarely, 1-3 MiB, so that
    some messages are far larger than any ring and take many steps."""
    r = rng.random()
    if r < 0.45:
        size = rng.randint(0, 16)
    elif r < 0.78:
        size = rng.randint(768, 1280)
    elif r < 0.96:
        size = rng.randint(90_000, 110_000)
    else:
        size = rng.randint(MiB + 1, 3 * MiB)
    return rng.randbytes(size)


SMALL_RING = 64 * KiB
RINGS = [None, SMALL_RING]
RING_IDS = ["default-ring", "64KiB-ring"]


def closing_pipes(impl):
    """The body of the Pipe fixtures: yields a ``Pipe(duplex=True)`` of
    interproc (``impl`` "interproc") or of multiprocessing, and closes every
    end it made once the test is over."""
    made = []

    def make(duplex=True):
        import interproc

        func = interproc.Pipe if impl == "interproc" else multiprocessing.Pipe
        pair = func(duplex)
        made.extend(pair)
        return pair

    yield make
    for conn in made:
        conn.close()


def ring_pipe(ring, duplex=True):
    """interproc.Pipe with its default ring, or with a small one so that
    most messages wrap around it and take many steps.  The size is an
    interproc extension; without it the small-ring variant is skipped."""
    import inspect

    import interproc

    if ring is None:
        return interproc.Pipe(duplex)
    if "capacity_bytes" not in inspect.signature(interproc.Pipe).parameters:
        import pytest

        pytest.skip("interproc.Pipe takes no capacity_bytes")
    return interproc.Pipe(duplex, capacity_bytes=ring)


# ------------------------------------------------- picklable by reference

class MyInt(int):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


class MyDict(dict):
    def __eq__(self, other):
        return type(other) is MyDict and dict.__eq__(self, other)

    __hash__ = None


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("this object refuses to be pickled")


# ---------------------------------------------------------------- children

def echo_double(conn, n):
    for _ in range(n):
        conn.send(recv_within(conn) * 2)


def seed_child(conn):
    """The seed's program, made to terminate.

    It stops on a message rather than on end of stream: under fork this
    process also inherits the parent's end, so it would never see EOF, just
    as with an OS pipe.
    """
    conn.send([42, None, "hello"])
    while True:
        got = recv_within(conn)
        if got is None:
            return
        conn.send(("child rec", got))


def send_items(conn, items):
    for item in items:
        conn.send(item)
    return len(items)


def send_items_and_close(conn, items):
    for item in items:
        conn.send(item)
    conn.close()


def read_until_eof(r, w, out):
    """The OS-pipe idiom: close the end this process does not use, then
    read until end of stream."""
    w.close()
    got = []
    while True:
        try:
            got.append(recv_within(r))
        except EOFError:
            break
    out.put(got)


def recv_n_and_report(conn, n, out):
    out.put([recv_within(conn) for _ in range(n)])


def send_then_hold(conn, items, sent):
    """Send, say so on ``sent``, then hold the end open until killed."""
    for item in items:
        conn.send(item)
    sent.put("sent")
    time.sleep(CHILD_TIMEOUT)
    sys.exit(6)


def announce_then_recv_forever(conn):
    conn.send("ready")
    while True:
        conn.recv()


def idle_recv_cpu(conn):
    """Report the CPU this process used while blocked in one recv()."""
    conn.send("ready")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    msg = conn.recv()
    cpu1, t1 = cpu_seconds(), time.monotonic()
    conn.send((msg, cpu1 - cpu0, t1 - t0))


def wait_go_then_recv_bytes(conn, go, out):
    recv_within(go)
    out.put(conn.recv_bytes())


def wait_go_then_send(conn, go, item):
    recv_within(go)
    conn.send(item)


def delayed_send(conn, delay, item):
    time.sleep(delay)
    conn.send(item)


def delayed_send_then_hold(conn, delay, item):
    """As delayed_send, but keep the end open until the parent answers, so
    that the parent sees the message and not also the end of the stream."""
    time.sleep(delay)
    conn.send(item)
    recv_within(conn)


def delayed_put(q, delay, item):
    time.sleep(delay)
    q.put(item)


def select_echo(conn, n):
    """Wait for each message with a selector on fileno(), then echo it."""
    with selectors.DefaultSelector() as sel:
        sel.register(conn.fileno(), selectors.EVENT_READ)
        for _ in range(n):
            if not sel.select(CHILD_TIMEOUT):
                raise TimeoutError("the selector never saw the message")
            if not conn.poll(0):
                sys.exit(7)  # the selector reported data that is not there
            conn.send(("echo", conn.recv()))


def ping_pong(conn, n):
    """Send i, wait for the answer, n times."""
    for i in range(n):
        conn.send(i)
        if recv_within(conn) != "ack":
            sys.exit(9)


def spin(seconds):
    """Keep a CPU busy, so that the processes under test are preempted at
    arbitrary points instead of running undisturbed on a core each."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


# ------------------------------------------------------- pools and carriers

_POOL_CONN = None


def pool_init(conn):
    global _POOL_CONN
    _POOL_CONN = conn


def pool_send(x):
    _POOL_CONN.send((os.getpid(), x))
    return x


def pool_task_recv(conn, n):
    return [recv_within(conn) for _ in range(n)]


def conn_from_queue(outer, n):
    conn = outer.get(timeout=CHILD_TIMEOUT)
    for i in range(n):
        conn.send(("via queue", i))
    conn.close()


def conn_from_pipe(carrier, n):
    conn = recv_within(carrier)
    for i in range(n):
        conn.send(("via pipe", i))
    carrier.send(recv_within(conn))


def pipe_made_in_child(carrier):
    """Create a Pipe, hand one end to the parent, and talk on the other."""
    import interproc

    mine, theirs = interproc.Pipe()
    carrier.send(theirs)
    mine.send("from child")
    # The parent acknowledges once it has unpickled our end; only then may
    # this process go away.
    if recv_within(carrier) != "ack":
        sys.exit(8)
    mine.send("bye")


# ------------------------------------------------------- fan in / fan out

def checked_sender(conn, sender_id, n, seed):
    rng = random.Random(seed)
    for seq in range(n):
        conn.send(checked_item(sender_id, seq, pipe_payload(rng)))


def checked_receiver(conn, out, worker_id):
    """Receive until None; report (sender, seq, ok) of everything, in order."""
    got = []
    while True:
        item = recv_within(conn)
        if item is None:
            break
        got.append(check_item(item))
    out.put((worker_id, got))


# ------------------------------------------------------ crash-test children

def crash_sender(conn, sender_id, log_path, stop, seed, sent, received, slot, limit):
    """Send checksummed items until told to stop.

    A seq is logged only after send() returned, so the log is a lower bound
    of what went in.  ``sent``/``received`` are per-slot counters used only
    to keep the pipe from growing without bound; kills make them drift, so
    a sender never waits on them for long.
    """
    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    seq = 0
    while not stop.value:
        waited = 0
        while sum(sent) - sum(received) > limit and waited < 50 and not stop.value:
            time.sleep(0.001)
            waited += 1
        conn.send(checked_item(sender_id, seq, pipe_payload(rng)))
        os.write(fd, f"{seq}\n".encode())
        sent[slot] += 1
        seq += 1
    os.close(fd)


def crash_receiver(conn, log_path, received, slot):
    """Receive until None, logging "sender seq ok|BAD" after each recv()."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    errors = 0
    while True:
        try:
            item = conn.recv()
        except Exception as exc:  # noqa: BLE001 - a torn item may raise anything
            os.write(fd, f"EXC {type(exc).__name__}: {exc!r}\n".encode())
            errors += 1
            if errors > 100:
                sys.exit(4)
            continue
        received[slot] += 1
        if item is None:
            break
        producer, seq, ok = check_item(item)
        os.write(fd, f"{producer} {seq} {'ok' if ok else 'BAD'}\n".encode())
    os.close(fd)


def send_then_exit(conn, item):
    conn.send(item)


def recv_and_check(conn, expected):
    """Exit 0 if the item received is intact, 3 if it is not."""
    seq, payload = conn.recv()
    if payload != expected:
        sys.exit(3)


# ------------------------------------------------ ends closed by their sender

def use_handed_ends(carrier):
    """CPython's test_access, child side: an end the parent closed at once
    after sending it must arrive alive, whichever end it is."""
    w = recv_within(carrier)
    w.send("all is well")
    w.close()
    r = recv_within(carrier)
    carrier.send(recv_within(r) * 2)
    r.close()


def take_ends_and_close(carrier, n):
    for _ in range(n):
        end = recv_within(carrier)
        end.close()
    carrier.send("done")


def write_from_queue(outer, n):
    conn = outer.get(timeout=CHILD_TIMEOUT)
    for i in range(n):
        conn.send(i)
    conn.close()


def put_end_and_exit(outer, end):
    outer.put(end)
    end.close()
