"""Large arrays through queues and pipes: out-of-band buffers.

A message that holds large contiguous buffers (NumPy arrays, bytearray...)
is pickled with pickle protocol 5's out-of-band buffers: each is copied
once into the ring and once out of it, and the receiver's object is
rebuilt over its copy.  What arrives must be what multiprocessing delivers:
the same type, dtype, shape, strides and values.
"""
import multiprocessing
import os
import pickle
import queue
import random
import signal
import struct
import threading
import time

import pytest

np = pytest.importorskip("numpy")

import interproc  # noqa: E402
from interproc import SegmentError, _core  # noqa: E402

import _arrays_helpers as ah  # noqa: E402
from test_hostile_queue import run_child  # noqa: E402
from _helpers import (  # noqa: E402
    CHILD_TIMEOUT, join_ok, kill_and_reap, new_seed, shm_path, start, wait_until)

MiB = 1 << 20
FORK = multiprocessing.get_context("fork")
L = _core._layout()


def same_as_multiprocessing(ours, theirs, original):
    """``ours`` holds what ``theirs`` (through multiprocessing) holds, and
    is exactly what pickle protocol 5 rebuilds: dtype, strides and
    writability included.  Where multiprocessing pickles with protocol 4
    (the default before Python 3.14) it makes a read-only array writable
    and a big-endian one native; protocol 5 keeps both as they were."""
    assert ah.describe(ours) == ah.describe(pickle.loads(pickle.dumps(original, protocol=5)))
    if pickle.DEFAULT_PROTOCOL >= 5:
        assert ah.describe(ours) == ah.describe(theirs)
    else:
        assert ah.contents(ours) == ah.contents(theirs)


def samples_arrive_as_through_multiprocessing(q, start_method):
    """A child puts every sample into ``q`` and into a multiprocessing
    queue; what ``q`` delivers is what multiprocessing's does."""
    mp_q = start_method.Queue()
    p = start(start_method, ah.put_samples, q, mp_q)
    try:
        for original in ah.samples():
            ours = q.get(timeout=CHILD_TIMEOUT)
            theirs = mp_q.get(timeout=CHILD_TIMEOUT)
            same_as_multiprocessing(ours, theirs, original)
    finally:
        join_ok(p)


def test_arrays_arrive_as_multiprocessing_delivers_them(start_method):
    samples_arrive_as_through_multiprocessing(interproc.Queue(), start_method)


def test_a_received_array_is_the_receivers_own():
    """Writable where the sender's was, and it outlives the queue, the
    sender's changes and the sender."""
    q = interproc.Queue()
    a = np.arange(MiB // 8, dtype=np.float64)
    q.put(a)
    a[:] = -1  # after put() returned: not seen
    b = q.get()
    q.close()
    assert b.flags.writeable and b.flags.c_contiguous
    assert b[0] == 0 and b[-1] == MiB // 8 - 1
    b += 1
    assert b[0] == 1
    c = b.copy()
    del b
    assert c[-1] == MiB // 8


def test_pipes_carry_arrays_both_ways(start_method):
    a, b = interproc.Pipe()
    p = start(start_method, ah.echo_arrays, b, 3)
    try:
        big = np.arange(3 * MiB // 8, dtype=np.float64).reshape(3, -1)
        for msg in (big, np.asfortranarray(big), {"x": big[0], "n": 1}):
            a.send(msg)
            back = a.recv()
            if isinstance(msg, np.ndarray):
                assert np.array_equal(back, msg * 2)
                assert back.flags.f_contiguous == msg.flags.f_contiguous
            else:
                assert np.array_equal(back["x"], big[0]) and back["n"] == 1
    finally:
        join_ok(p)


def test_recv_bytes_of_a_message_with_buffers_is_its_pickle():
    r, w = interproc.Pipe(duplex=False)
    a = np.arange(MiB // 8, dtype=np.float64)
    w.send(a)
    assert np.array_equal(pickle.loads(r.recv_bytes()), a)
    w.send_bytes(a)  # the memory itself, as multiprocessing sends it
    assert r.recv_bytes() == a.tobytes()


def test_batches_keep_order_and_maxsize_counts_items():
    q = interproc.Queue(maxsize=3)
    big = [np.full(MiB // 8, i, dtype=np.float64) for i in range(3)]
    q.put_many([big[0], "small", big[1]])
    with pytest.raises(queue.Full):
        q.put_nowait(big[2])
    got = q.get_many(max_items=3)
    assert np.array_equal(got[0], big[0]) and got[1] == "small"
    assert np.array_equal(got[2], big[1])
    for kind in (interproc.SimpleQueue(), interproc.JoinableQueue()):
        kind.put(big[2])
        assert np.array_equal(kind.get(), big[2])
        if isinstance(kind, interproc.JoinableQueue):
            kind.task_done()


def test_put_async_and_get_async_carry_arrays():
    import asyncio

    q = interproc.Queue(maxsize=1)
    a = np.arange(2 * MiB // 8, dtype=np.float64)

    async def main():
        await q.put_async(a)
        waiting = asyncio.ensure_future(q.put_async(a * 2))  # full: waits
        first = await q.get_async(timeout=5)
        await waiting
        return first, await q.get_async(timeout=5)

    first, second = asyncio.run(main())
    assert np.array_equal(first, a) and np.array_equal(second, a * 2)


def test_an_item_larger_than_any_region_so_far():
    q = interproc.Queue(capacity_bytes=64 * 1024)
    a = np.arange(300 * MiB // 8, dtype=np.float64)
    q.put(a)
    b = q.get(timeout=5)
    assert b.shape == a.shape and b[12345] == 12345 and b[-1] == a[-1]


@pytest.mark.parametrize("kind", ["queue", "pipe"])
def test_items_around_the_size_copied_past_the_cache_arrive_byte_for_byte(kind):
    """From 16 MiB both copies, into the ring and out of it, are written
    with non-temporal stores, in 64-byte lines after an unaligned head:
    every length and start around that size arrives exact, as arrays
    (copied out into a page-aligned receive buffer) and as bytes (into a
    bytes object, whose data is not aligned)."""
    rng = random.Random(new_seed())
    if kind == "queue":
        q = interproc.Queue()
        send, recv = q.put, lambda: q.get(timeout=CHILD_TIMEOUT)
    else:
        r, w = interproc.Pipe(duplex=False)
        send, recv = w.send, r.recv
    noise = np.frombuffer(rng.randbytes(16 * MiB + 4096), dtype=np.uint8)
    for length in (16 * MiB - 1, 16 * MiB, 16 * MiB + 1, 16 * MiB + 63, 16 * MiB + 65):
        start = rng.randrange(64)
        a = noise[start:start + length]
        send(a)
        send(a.tobytes())
        b = recv()
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b), (length, start)
        assert recv() == a.tobytes(), (length, start)


def test_non_contiguous_buffers_travel_in_band():
    q = interproc.Queue()
    a = np.arange(MiB, dtype=np.int32).reshape(1024, 1024)[:, ::2]
    q.put(pickle.PickleBuffer(bytearray(100_000)))
    q.put(a)
    assert bytes(q.get()) == bytes(100_000)
    assert np.array_equal(q.get(), a)


# ------------------------------------------------------------- crash safety


@pytest.mark.timeout(120)
def test_producers_killed_while_putting_arrays_lose_nothing_else():
    """Producers SIGKILLed at random points while they copy 8 MiB arrays
    in: every array a consumer gets is whole (all of it the number its
    producer filled in), each producer's numbers arrive in order, and the
    queue goes on working."""
    seed = new_seed()
    rng = random.Random(seed)
    q = interproc.Queue(maxsize=4)
    size = 8 * MiB
    seen = {}
    kills = 0
    for producer in range(12):
        p = start(FORK, ah.put_numbered, q, producer, 0, 1000, size)
        deadline = time.monotonic() + rng.uniform(0.05, 0.3)
        while time.monotonic() < deadline:
            try:
                a = q.get(timeout=0.05)
            except queue.Empty:
                continue
            v = a[0]
            assert (a == v).all(), f"seed {seed}: a torn array ({v} and others)"
            who, seq = divmod(int(v), 1_000_000)
            assert seq == seen.get(who, -1) + 1, f"seed {seed}: producer {who} skipped"
            seen[who] = seq
        kills += kill_and_reap(p) == -signal.SIGKILL
    while True:
        try:
            a = q.get(timeout=0.5)
        except queue.Empty:
            break
        who, seq = divmod(int(a[0]), 1_000_000)
        assert (a == a[0]).all() and seq == seen.get(who, -1) + 1, f"seed {seed}"
        seen[who] = seq
    assert kills >= 6, f"seed {seed}: only {kills} producers were killed mid-stream"
    q.put(np.ones(MiB))
    assert q.get(timeout=5).sum() == MiB


@pytest.mark.timeout(60)
def test_a_consumer_killed_while_copying_an_array_out_leaves_it_or_takes_it():
    """Killed while it copies a 64 MiB array out of the ring (under the
    consumers' lock), a consumer either took the item or left it whole."""
    seed = new_seed()
    rng = random.Random(seed)
    q = interproc.Queue()
    size = 64 * MiB
    for i in range(6):
        q.put(np.full(size // 8, i, dtype=np.float64))
        p = start(FORK, q.get)
        time.sleep(rng.uniform(0, 0.05))
        kill_and_reap(p)
        try:
            a = q.get(timeout=1)
        except queue.Empty:
            continue  # the child took it
        assert (a == i).all(), f"seed {seed}"


# ---------------------------------------------------------------- memory


def test_a_stream_of_big_items_gives_its_memory_back_when_it_stops(unique_name):
    """Big overflow regions stay warm while a stream uses them, and give
    their memory back once it has stopped for a second and a consumer is
    waiting."""
    name = unique_name()
    q = interproc.Queue(name=name, create=True, maxsize=2)
    path = shm_path(name)
    try:
        a = np.ones(32 * MiB // 8)
        for _ in range(6):
            q.put(a)
            q.get()
        resident = os.stat(path).st_blocks * 512
        assert resident >= 32 * MiB  # warm: not faulted in again per item
        got = []
        waiting = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
        waiting.start()
        try:
            wait_until(lambda: os.stat(path).st_blocks * 512 < 16 * MiB, timeout=20,
                       what="the idle regions' memory to be given back")
        finally:
            q.put("wake up")
            waiting.join()
        assert got == ["wake up"]
    finally:
        q.close()
        interproc.unlink(name)


# ---------------------------------------------------------------- hostile


# Each runs in a fresh interpreter: a reader misled by forged bytes must
# end in an exception there, never in a signal here.
FORGE = """
import numpy as np
q = Queue(capacity_bytes=1 << 20)
q.put(np.arange(40_000, dtype=np.float64))
seg, ring = queue_ring(q)
head = ring.head(0)
assert ring.record(0, head)[0] == L["rec.OOB"]
payload = ring.region(0, "offset") + head % ring.region(0, "cap") + L["rec.size"]
"""


@pytest.mark.parametrize("field, value", [
    (0, 1 << 62),        # a pickle longer than the record
    (8, 0),              # no buffers
    (8, 1 << 60),        # more buffer lengths than the record holds
    (16, 1 << 40),       # the buffer runs past the record
    (16, 8),             # the buffers end before the record does
])
def test_a_forged_out_of_band_layout_is_a_clear_error(field, value):
    run_child(FORGE + f"""
seg.u64(payload + {field}, {value})
expect(SegmentError, q.get_nowait)
q.put("next")
assert q.get(timeout=5) == "next"
""")


def test_record_types_swapped_under_the_reader():
    run_child(FORGE + """
ring.record(0, head, type=L["rec.PICKLE"])  # its layout read as a pickle
try:
    q.get_nowait()
except Exception as exc:
    assert isinstance(exc, pickle.UnpicklingError), exc
else:
    raise AssertionError("a layout unpickled")
q.put(b"\\xff" * 1000)
ring.record(0, ring.head(0), type=L["rec.OOB"])  # bytes read as out-of-band
expect(SegmentError, q.get_nowait)
q.put("next")
assert q.get(timeout=5) == "next"
""")


# ------------------------------------------------------------ get_view


def region_pins(q):
    """Every pin slot of every region of ``q``'s ring, read from its segment."""
    seg = open(f"/proc/self/fd/{q._fd}", "rb")
    try:
        data = seg.read(L["queue.size"])
    finally:
        seg.close()
    base = L["queue.ring"] + L["ring.regions"]
    return [struct.unpack_from("<4Q", data, base + i * L["region.size"] + L["region.pins"])
            for i in range(32)]


def pinned_regions(q):
    return [i for i, slots in enumerate(region_pins(q)) if any(slots)]


def test_get_view_reads_in_place_while_the_queue_goes_on():
    q = interproc.Queue(maxsize=2)
    a = np.arange(4 * MiB // 8, dtype=np.float64)
    q.put(a)
    view = q.get_view()
    x = view.value
    assert isinstance(view, interproc.ItemView)
    assert not x.flags.writeable and np.array_equal(x, a)
    with pytest.raises(ValueError):
        x[0] = 1
    assert len(pinned_regions(q)) == 1
    # Producers go on, elsewhere: what the view shows never changes.
    for i in range(20):
        q.put(np.full_like(a, i))
        assert (q.get() == i).all()
        assert x[0] == 0 and x[-1] == a[-1]
    view.release()
    with pytest.raises(ValueError, match="released"):
        view.value
    assert pinned_regions(q)  # the array still lies over the memory
    del x
    assert pinned_regions(q) == []


def test_with_releases_and_small_items_are_copied():
    q = interproc.Queue()
    q.put(np.ones(MiB // 8))
    with q.get_view() as arr:
        assert arr.sum() == MiB // 8
        assert pinned_regions(q)
    del arr  # the name bound by `as` held it after the block
    assert pinned_regions(q) == []
    q.put("small")
    q.put(np.arange(10))
    assert q.get_view().value == "small"
    small = q.get_view().value
    assert small.flags.writeable and pinned_regions(q) == []
    with pytest.raises(queue.Empty):
        q.get_view(timeout=0.01)


def test_get_view_async_awaits_an_item_from_another_process_and_reads_it_in_place(start_method):
    import asyncio

    q = interproc.Queue()
    a = np.arange(4 * MiB // 8, dtype=np.float64)

    async def main():
        waiting = asyncio.ensure_future(q.get_view_async(timeout=CHILD_TIMEOUT))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        p = start(start_method, ah.put_numbered, q, 0, 0, 1, a.nbytes)
        try:
            return await waiting
        finally:
            join_ok(p)

    view = asyncio.run(main())
    x = view.value
    assert not x.flags.writeable and (x == 0).all() and x.shape == a.shape
    assert len(pinned_regions(q)) == 1
    view.release()
    del x
    assert pinned_regions(q) == []


def test_get_view_async_cancelled_or_timed_out_takes_and_pins_nothing():
    import asyncio

    q = interproc.Queue()

    async def main():
        waiting = asyncio.ensure_future(q.get_view_async())
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(queue.Empty):
            await q.get_view_async(timeout=0.05)
        q.put(np.ones(MiB // 8))
        with await q.get_view_async(timeout=0) as arr:  # present: no wait
            return float(arr.sum())

    assert asyncio.run(main()) == MiB // 8
    assert pinned_regions(q) == [] and q.empty()


def test_views_held_at_once_pin_a_few_regions_then_copy():
    """A pinned region is full for producers, so each item read in place
    while the earlier ones are held lands in a region of its own; past
    eight pinned regions, get_view copies instead, and the stream keeps
    the rest of the regions."""
    q = interproc.Queue(capacity_bytes=1 * MiB)
    views = []
    for i in range(12):
        q.put(np.full(64 * 1024, i, dtype=np.float64))  # 512 KiB each
        views.append(q.get_view())
    assert [v.value[0] for v in views] == list(range(12))
    in_place = [not v.value.flags.writeable for v in views]
    assert in_place == [True] * 8 + [False] * 4
    assert len(pinned_regions(q)) == 8
    for i in range(100):  # the queue goes on meanwhile
        q.put(np.full(64 * 1024, i, dtype=np.float64))
        assert q.get()[0] == i
    del views[:]
    assert pinned_regions(q) == []


def test_a_view_keeps_the_memory_of_a_closed_handle():
    q = interproc.Queue()
    q.put(np.arange(MiB // 8, dtype=np.float64))
    x = q.get_view().value
    q.close()
    assert x[-1] == MiB // 8 - 1  # mapped until the view goes
    del x


@pytest.mark.timeout(60)
def test_a_reader_killed_while_holding_a_view_pins_nothing_for_long(start_method):
    q = interproc.Queue(maxsize=2)
    q.put(np.ones(8 * MiB // 8))
    ready = start_method.Event()
    p = start(start_method, ah.hold_view, q, ready)
    try:
        assert ready.wait(CHILD_TIMEOUT)
        assert pinned_regions(q)
    finally:
        kill_and_reap(p)
    # The stream goes on; the dead reader's pin is cleared when the region
    # is next looked at, and its memory is used again.
    for i in range(40):
        q.put(np.full(8 * MiB // 8, i, dtype=np.float64))
        assert q.get(timeout=5)[0] == i
    wait_until(lambda: pinned_regions(q) == [], timeout=10, what="the dead reader's pin to go")


@pytest.mark.parametrize("size", [0, 100, MiB - 1, MiB, 3 * MiB + 5])
def test_a_receive_buffer_is_writable_memory_of_the_size_asked(size):
    buf = _core.receive_buffer(size)
    view = memoryview(buf)
    assert len(buf) == len(view) == view.nbytes == size and not view.readonly
    view[:] = b"\x5a" * size
    assert bytes(view) == b"\x5a" * size
    del view, buf
    _core.trim_receive_buffers()


@pytest.mark.parametrize("size, error", [(-1, ValueError), (1 << 70, OverflowError),
                                         (1 << 62, MemoryError), (2.0, TypeError),
                                         (True, TypeError)])
def test_a_receive_buffer_of_a_bad_size_is_a_clear_error(size, error):
    with pytest.raises(error):
        _core.receive_buffer(size)
