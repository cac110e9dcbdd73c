"""Large arrays through the Redis backend's queues: out-of-band buffers.

A pickle's large contiguous buffers leave the sender as they are, as pieces
of the put's script call that the server joins into one item; the receiver
copies them once, into memory of its own that the rebuilt objects lie over.
What arrives must be what pickle protocol 5 rebuilds, as through the shared
memory queues.
"""
import asyncio
import queue
import struct

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("redis")

from interproc.backends.redis import queues as rq  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.codec import Codec  # noqa: E402
from interproc.backends.redis.errors import CorruptDataError, SignatureError  # noqa: E402

import _arrays_helpers as ah  # noqa: E402
from test_arrays import samples_arrive_as_through_multiprocessing  # noqa: E402

MiB = 1 << 20


def Q(made, *args, **kwargs):
    q = rq.Queue(*args, **kwargs)
    made.append(q)
    return q


def stored(conn, q):
    """The payloads in ``q``'s list on the server, oldest first."""
    return conn.client.lrange(q._items, 0, -1)


def address(buf):
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


@pytest.mark.parametrize("authkey", [None, b"secret"], ids=["unsigned", "signed"])
def test_arrays_arrive_as_multiprocessing_delivers_them(conn, made, start_method, authkey):
    samples_arrive_as_through_multiprocessing(Q(made, conn, codec=Codec(authkey=authkey)),
                                              start_method)


def test_the_sender_hands_over_the_buffers_themselves_and_the_server_joins_them(conn, made):
    q = Q(made, conn)
    a = np.arange(MiB // 8, dtype=np.float64)
    b = np.arange(MiB // 4, dtype=np.int32).reshape(512, 512)
    message = {"a": a, "b": b, "small": np.arange(3), "n": 7}
    pieces = q._codec.dumps_message(message)
    # The head, then each large buffer: a view of the array, not a copy.
    assert type(pieces) is list and len(pieces) == 3
    assert [address(p) for p in pieces[1:]] == [a.ctypes.data, b.ctypes.data]
    q.put(message)
    assert stored(conn, q) == [b"".join(bytes(p) for p in pieces)]
    got = q.get()
    assert ah.describe(got) == ah.describe(message)


def test_an_item_without_large_buffers_is_one_plain_payload(conn, made):
    for codec in (Codec(), Codec(authkey=b"k"), Codec("json"), Codec("msgpack")):
        for value in ([1, "two"], {"x": 3.5}):
            assert codec.dumps_message(value) == codec.dumps(value)
    small = np.arange(100)
    assert Codec().dumps_message(small)[:1] == b"p"


def test_the_receivers_arrays_are_its_own_writable_and_aligned(conn, made):
    q = Q(made, conn)
    a = np.arange(3 * MiB // 8, dtype=np.float64)
    q.put_many([(a, a[: MiB // 8 + 3]), a])
    (first, second), third = q.get_many(2)
    for x in (first, second, third):
        assert x.flags.writeable and x.flags.c_contiguous
        assert x.ctypes.data % 64 == 0
    assert address(first) != address(third)
    first[:] = -1
    assert (third == a).all() and (second == a[: MiB // 8 + 3]).all()
    assert (a >= 0).all()


def test_maxsize_counts_items_not_pieces(conn, made):
    q = Q(made, conn, maxsize=2)
    arrays = [np.full(MiB // 8, i, dtype=np.float64) for i in range(3)]
    with pytest.raises(queue.Full) as full:
        q.put_many(arrays, block=False)
    assert full.value.count == 2 and q.qsize() == 2
    assert [x[0] for x in q.get_many(5)] == [0, 1]
    q.put(arrays[2])
    assert q.get()[0] == 2


def test_the_awaitable_forms_carry_arrays(conn, made):
    q = Q(made, conn, maxsize=1)
    a = np.arange(MiB // 8, dtype=np.float64)

    async def main():
        await q.put_async(a)
        got = await q.get_async()
        await q.put_many_async([a * 2])
        more = await q.get_many_async()
        return got, more

    got, more = asyncio.run(main())
    assert (got == a).all() and len(more) == 1 and (more[0] == a * 2).all()


def test_references_to_redis_objects_travel_beside_the_buffers(conn, made):
    q = Q(made, conn)
    other = Q(made, conn)
    a = np.arange(MiB // 8, dtype=np.float64)
    q.put({"reply_to": other, "a": a})
    got = q.get()
    got["reply_to"].put(got["a"].sum())
    assert other.get() == a.sum()


def oob_payload(plen, lens, pickled=b"", buffers=b"", count=None):
    count = len(lens) if count is None else count
    return (b"o" + struct.pack(f"<QQ{len(lens)}Q", plen, count, *lens) + pickled + buffers)


GOOD_PICKLE = b"\x80\x05\x97."  # NEXT_BUFFER, STOP: the first buffer itself


@pytest.mark.parametrize("payload", [
    pytest.param(b"o" + b"\x00" * 15, id="truncated"),
    pytest.param(oob_payload(len(GOOD_PICKLE), [], GOOD_PICKLE), id="no-buffers"),
    pytest.param(oob_payload(4, [8], GOOD_PICKLE, b"x" * 8, count=1 << 60), id="count-past-the-end"),
    pytest.param(oob_payload(1 << 40, [8], GOOD_PICKLE, b"x" * 8), id="pickle-past-the-end"),
    pytest.param(oob_payload(4, [9], GOOD_PICKLE, b"x" * 8), id="buffers-too-long"),
    pytest.param(oob_payload(4, [7], GOOD_PICKLE, b"x" * 8), id="buffers-too-short"),
    pytest.param(oob_payload(4, [1 << 63, 1 << 63], GOOD_PICKLE, b"x" * 8), id="lengths-that-wrap"),
])
def test_a_forged_layout_is_a_clear_error_and_the_queue_goes_on(conn, made, payload):
    q = Q(made, conn)
    q.put("before")
    conn.client.rpush(q._items, payload)
    q.put("after")
    assert q.get() == "before"
    with pytest.raises(CorruptDataError, match="out-of-band"):
        q.get()
    assert q.get() == "after"


def test_a_well_formed_forgery_reads_as_its_layout_says(conn, made):
    q = Q(made, conn)
    conn.client.rpush(q._items, oob_payload(4, [8], GOOD_PICKLE, b"abcdefgh"))
    got = q.get()
    assert bytes(got) == b"abcdefgh"


def test_signed_buffers_are_covered_by_the_signature(conn, made):
    codec = Codec(authkey=b"secret")
    q = Q(made, conn, codec=codec)
    other = Q(made, conn, codec=codec)
    a = np.arange(MiB // 8, dtype=np.float64)
    q.put(a)
    q.put(a)
    payload = stored(conn, q)[0]
    assert payload[:1] == b"O"
    altered = bytearray(payload)
    altered[-1] ^= 1
    conn.client.lset(q._items, 0, bytes(altered))
    with pytest.raises(SignatureError, match="bad signature"):
        q.get()
    # Moved to another object, a signed item fails there.
    conn.client.rpush(other._items, payload)
    with pytest.raises(SignatureError, match="bad signature"):
        other.get()
    # Unsigned, or read as a value of a place, it is refused too.
    unsigned = Codec().dumps_message(a)
    conn.client.rpush(other._items, b"".join(bytes(p) for p in unsigned))
    with pytest.raises(SignatureError, match="unsigned"):
        other.get()
    with pytest.raises(SignatureError, match="queue item"):
        q._codec.loads(payload, part="h", field=b"f")
    assert (q.get() == a).all()


def test_an_unsigned_reader_refuses_signed_buffers(conn, made):
    signed = Q(made, conn, codec=Codec(authkey=b"secret"))
    signed.put(np.arange(MiB // 8, dtype=np.float64))
    with pytest.raises(SignatureError, match="no authkey"):
        Codec().loads(stored(conn, signed)[0])


def test_on_a_cluster_the_buffers_join_on_the_slots_node(redis_cluster_url, made):
    conn = Connection.from_url(redis_cluster_url)
    q = Q(made, conn, maxsize=2)
    a = np.arange(MiB // 8, dtype=np.float64)
    q.put_many([a, {"a": a * 2}])
    got = q.get_many(2)
    assert (got[0] == a).all() and (got[1]["a"] == a * 2).all()
