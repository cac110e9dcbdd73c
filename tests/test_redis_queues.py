"""Queue, JoinableQueue and SimpleQueue of the Redis backend, against real
servers (standalone, and a smoke test of each kind on a 3-node cluster)."""

import os
import pickle
import queue
import threading
import time
import uuid

import pytest

pytest.importorskip("redis")

from interproc.backends.redis import queues as rq  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402

import _redis_sync_helpers as h  # noqa: E402
from _fault_proxy import FaultProxy  # noqa: E402




def Q(made, cls, *args, **kwargs):
    obj = cls(*args, **kwargs)
    made.append(obj)
    return obj


def fresh_name():
    return f"t-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ basics

def test_fifo_and_sizes(conn, made):
    q = Q(made, rq.Queue, conn)
    assert q.empty() and q.qsize() == 0 and not q.full() and q.maxsize == 0
    for i in range(5):
        q.put(i)
    q.put_nowait({"x": [1, 2]})
    assert q.qsize() == 6
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert q.get_nowait() == {"x": [1, 2]}
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False)


def test_get_timeout_waits_in_redis(conn, made):
    q = Q(made, rq.Queue, conn)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    threading.Timer(0.2, q.put, ("late",)).start()
    t0 = time.monotonic()
    assert q.get(timeout=5) == "late"
    assert time.monotonic() - t0 < 2.0


def test_bounded_put_blocks_and_times_out(conn, made):
    q = Q(made, rq.Queue, conn, 2)
    assert q.maxsize == 2
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    # A get frees room: the blocked put is woken (not by polling: well
    # before its own timeout, and before a wait chunk would end).
    threading.Timer(0.2, q.get).start()
    t0 = time.monotonic()
    q.put(3, timeout=10)
    assert time.monotonic() - t0 < 1.5
    assert q.get_many() == [2, 3]


def test_put_many_get_many(conn, made):
    q = Q(made, rq.Queue, conn)
    q.put_many(range(2500))
    assert q.qsize() == 2500
    assert q.get_many(3) == [0, 1, 2]
    assert q.get_many(max_items=1000) == list(range(3, 1003))
    assert q.get_many() == list(range(1003, 2500))
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.1)
    with pytest.raises(ValueError):
        q.get_many(0)
    q.put_many([])
    assert q.empty()


def test_put_many_on_bounded_queue_reports_count(conn, made):
    q = Q(made, rq.Queue, conn, 3)
    q.put(0)
    with pytest.raises(queue.Full) as info:
        q.put_many([1, 2, 3, 4], timeout=0.2)
    assert info.value.count == 2
    assert q.get_many() == [0, 1, 2]
    # Room appears while it waits: every item goes in, in order.
    threading.Timer(0.2, lambda: q.get_many(2)).start()
    q.put_many([5, 6, 7, 8, 9], timeout=10)
    assert q.get_many() == [7, 8, 9]


def test_put_many_serializes_everything_first(conn, made):
    q = Q(made, rq.Queue, conn)
    with pytest.raises(Exception):
        q.put_many([1, lambda: None])
    assert q.empty()


def test_put_and_get_many_are_one_round_trip(conn, made):
    q = Q(made, rq.Queue, conn)
    # The consumer is registered by now, and the scripts are on the server.
    q.put_many([0, 0])
    q.get_many(2)
    q.put(0)
    q.get()
    # What goes over the socket: one send per round trip, whichever way
    # the client packs it.
    connection = conn.client.connection
    sends = []
    real_send = type(connection).send_packed_command

    def send(self, *a, **k):
        sends.append(1)
        return real_send(self, *a, **k)

    pipes = []
    real_pipe_exec = type(conn.client.pipeline()).execute

    def pipe_exec(self, *a, **k):
        pipes.append(len(self.command_stack))
        return real_pipe_exec(self, *a, **k)

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(type(connection), "send_packed_command", send)
        mp.setattr(type(conn.client.pipeline()), "execute", pipe_exec)
        q.put_many(range(100))
        assert sends == [1]  # one script
        sends.clear()
        # items present: one script, no pipeline
        assert q.get_many(50) == list(range(50))
        assert sends == [1] and pipes == []
        sends.clear()
        assert q.get() == 50
        assert sends == [1] and pipes == []
    finally:
        mp.undo()


def test_joinable_queue_task_done_and_join(conn, made):
    q = Q(made, rq.JoinableQueue, conn)
    with pytest.raises(ValueError):
        q.task_done()
    q.put_many(["a", "b"])
    q.get()
    q.task_done()
    q.get()
    done = []

    def finish():
        time.sleep(0.2)
        done.append(1)
        q.task_done()

    threading.Thread(target=finish).start()
    t0 = time.monotonic()
    q.join()
    assert done and time.monotonic() - t0 < 2.0
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    q.join()  # nothing unfinished: returns at once


def test_simple_queue(conn, made):
    q = Q(made, rq.SimpleQueue, conn)
    assert q.empty()
    q.put("x")
    assert not q.empty() and q.get() == "x"
    assert not hasattr(q, "task_done")


def test_close_and_join_thread(conn, made):
    q = Q(made, rq.Queue, conn)
    with pytest.raises(ValueError):
        q.join_thread()
    q.cancel_join_thread()
    other = pickle.loads(pickle.dumps(q))
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="closed"):
        q.put(1)
    with pytest.raises(ValueError, match="closed"):
        q.get()
    other.put(1)
    assert other.get() == 1


def test_names_follow_the_create_rules(conn, made):
    name = fresh_name()
    with pytest.raises(FileNotFoundError):
        rq.Queue(conn, name=name, create=False)
    a = Q(made, rq.Queue, conn, 5, name=name, create=True)
    assert a.name == name
    with pytest.raises(FileExistsError):
        rq.Queue(conn, name=name, create=True)
    b = rq.Queue(conn, name=name)
    assert b.maxsize == 5  # the creator's
    b.put("shared")
    assert a.get() == "shared"
    with pytest.raises(TypeError):
        rq.JoinableQueue(conn, name=name)
    a.put(1)
    a.unlink()
    assert not conn.client.keys(f"ip:{{{name}}}:*")
    with pytest.raises(FileNotFoundError):
        rq.Queue(conn, name=name, create=False)
    anon = Q(made, rq.Queue, conn)
    assert anon.name is None


def test_queue_travels_through_a_queue(conn, made):
    outer = Q(made, rq.Queue, conn)
    inner = Q(made, rq.JoinableQueue, conn, 7)
    outer.put({"q": inner})
    got = outer.get()["q"]
    assert isinstance(got, rq.JoinableQueue) and got.maxsize == 7
    got.put("through")
    assert inner.get() == "through"


def test_taken_item_is_recovered_after_a_failed_take(conn, made):
    # As if the connection broke after the server moved an item into this
    # consumer's processing list: the next take puts it back first.
    q = Q(made, rq.Queue, conn)
    q.put("second")
    c = q._consumer()
    conn.client.rpush(c.proc, q._codec.dumps("first"))
    c.recover = True
    assert q.get_many() == ["first", "second"]
    assert not c.recover


def test_connection_killed_during_blocking_get_loses_nothing(conn, made):
    q = Q(made, rq.Queue, conn)
    errors = []

    def getter():
        try:
            errors.append(("got", q.get(timeout=10)))
        except Exception as exc:
            errors.append(("error", exc))

    t = threading.Thread(target=getter)
    t.start()
    time.sleep(0.3)
    admin = Connection.from_url(conn.url, cluster=False).client
    blocked = [c for c in admin.client_list() if c.get("cmd") in ("blmove", "exec", "multi")]
    assert blocked, "the getter is not blocked in Redis"
    for c in blocked:
        admin.client_kill_filter(_id=c["id"])
    t.join(10)
    assert errors and errors[0][0] == "error"
    assert isinstance(errors[0][1], ConnectionError)
    q.put("after")
    assert q.get(timeout=5) == "after"
    assert q.empty()


@pytest.fixture
def proxy(redis_server):
    """A FaultProxy in front of the standalone server."""
    p = FaultProxy(redis_server.port)
    yield p
    p.close()


@pytest.mark.parametrize("maxsize", [0, 5])
@pytest.mark.parametrize("take", ["get", "get_many"])
def test_take_failing_after_a_delivery_does_not_deliver_it_again(proxy, maxsize, take):
    """An outage after a get returned: the next take fails before it reaches
    the server, and so does the recovery it tries.  Once the server is back,
    the recovery must not put back what that get delivered: only items whose
    reply never arrived may come again."""
    conn = Connection.from_url(proxy.url)
    q = rq.JoinableQueue(conn, maxsize)
    try:
        q.put_many(["item-1", "item-2", "item-3"])
        one = (lambda: q.get(timeout=5)) if take == "get" else (lambda: q.get_many(1, timeout=5)[0])
        assert one() == "item-1"
        q.task_done()
        proxy.refuse()
        with pytest.raises(ConnectionError):
            one()
        proxy.accept()
        got = q.get_many(timeout=5)
        assert got == ["item-2", "item-3"], got
        for _ in got:
            q.task_done()
        q.join()
    finally:
        proxy.accept()
        q._destroy()


def test_fifo_across_producer_processes(conn, made, start_method):
    q = Q(made, rq.Queue, conn)
    procs = [start_method.Process(target=h.produce, args=(q, tag, 50)) for tag in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=30) for _ in range(150)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for tag in range(3):
        assert [i for t, i in got if t == tag] == list(range(50))
    assert q.empty()


def test_join_across_processes(conn, made, start_method):
    q = Q(made, rq.JoinableQueue, conn)
    results = Q(made, rq.Queue, conn)
    q.put_many(range(20))
    procs = [start_method.Process(target=h.consume_and_finish, args=(q, 10, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    q.join()
    got = []
    while len(got) < 20:
        got += results.get_many(timeout=10)
    assert sorted(got) == list(range(20))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


@pytest.mark.parametrize("cls", [rq.Queue, rq.JoinableQueue, rq.SimpleQueue])
def test_cluster_smoke(redis_cluster_url, cls):
    conn = Connection.from_url(redis_cluster_url)
    assert conn.is_cluster
    args = () if cls is rq.SimpleQueue else (3,)
    q = cls(conn, *args, name=fresh_name())
    try:
        q.put_many([1, 2])
        q.put(3)
        if cls is not rq.SimpleQueue:
            with pytest.raises(queue.Full):
                q.put(4, timeout=0.1)
        assert q.get() == 1
        assert q.get_many() == [2, 3]
        with pytest.raises(queue.Empty):
            q.get(timeout=0.1)
        if cls is rq.JoinableQueue:
            for _ in range(3):
                q.task_done()
            q.join()
        threading.Timer(0.2, q.put, ("late",)).start()
        assert q.get(timeout=5) == "late"
        copy = pickle.loads(pickle.dumps(q))
        copy.put("copy")
        assert q.get() == "copy"
    finally:
        q.unlink()
    assert not conn.client.keys(f"ip:{{{q.name}}}:*")


# ------------------------------------------------------------------ shutdown
# The behaviour both backends share is in test_contract.py; these are the
# Redis mechanics: the end marker, and recovery after a shutdown.

@pytest.mark.parametrize("immediate", [False, True])
def test_named_queue_opened_after_shutdown_sees_it(conn, made, start_method, redis_url,
                                                   immediate):
    name = fresh_name()
    q = Q(made, rq.Queue, conn, name=name)
    q.put_many([1, 2, 3])
    q.shutdown(immediate=immediate)
    p = start_method.Process(target=h.open_shut_down_queue,
                             args=(redis_url, name, [] if immediate else [1, 2, 3]))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_end_marker_stays_last_and_is_not_an_item(conn, made):
    q = Q(made, rq.Queue, conn)
    q.put_many(["a", "b"])
    q.shutdown()
    q.shutdown()
    assert conn.client.lrange(q._items, 0, -1)[-1] == b""
    assert conn.client.llen(q._items) == 3 and q.qsize() == 2
    assert q.get_many() == ["a", "b"]
    with pytest.raises(rq.ShutDown):
        q.get_many()
    assert conn.client.lrange(q._items, 0, -1) == [b""]  # put back for the next consumer


def test_end_marker_taken_by_a_dead_consumer_comes_back(conn, made):
    """A consumer killed between its BLMOVE and the script after it keeps
    the marker in its processing list; the next take puts one back."""
    q = Q(made, rq.Queue, conn)
    q.shutdown()
    conn.client.lmove(q._items, q._key("proc:dead"), "LEFT", "RIGHT")
    assert conn.client.llen(q._items) == 0
    with pytest.raises(rq.ShutDown):
        q.get(timeout=60)
    with pytest.raises(rq.ShutDown):
        q.get(timeout=60)  # the registered consumer's first, non-blocking take
    assert conn.client.lrange(q._items, 0, -1) == [b""]


@pytest.mark.parametrize("take", ["get", "get_many"])
@pytest.mark.parametrize("maxsize", [0, 5])
def test_marker_lost_behind_items_comes_back_once_they_are_drained(conn, made, take, maxsize):
    """Takes that get every item they asked for do not look for the marker;
    the one that drains the queue does, and puts back the one a dead
    consumer took, so that the next get raises at once instead of waiting."""
    q = Q(made, rq.Queue, conn, maxsize)
    q.put_many([1, 2])
    q.shutdown()
    conn.client.lmove(q._items, q._key("proc:dead"), "RIGHT", "RIGHT")
    left = conn.client.lrange(q._items, 0, -1)
    assert len(left) == 2 and b"" not in left
    one = (lambda: q.get(timeout=60)) if take == "get" else (lambda: q.get_many(1, timeout=60))
    got = [one(), one()]
    assert got == ([1, 2] if take == "get" else [[1], [2]])
    started = time.monotonic()
    with pytest.raises(rq.ShutDown):
        one()
    assert time.monotonic() - started < rq.GET_CHUNK / 2
    assert conn.client.lrange(q._items, 0, -1) == [b""]


def test_forged_end_marker_in_an_open_queue_is_dropped(conn, made):
    q = Q(made, rq.Queue, conn)
    conn.client.rpush(q._items, b"")
    q.put("real")
    assert q.get(timeout=5) == "real"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert not q.is_shutdown


@pytest.mark.parametrize("immediate", [False, True])
def test_items_in_flight_during_a_shutdown(conn, made, immediate):
    """Items the server moved to a consumer whose reply was lost: after a
    plain shutdown they go back ahead of the marker, to be drained; after
    an immediate one they are discarded with the rest, and their tasks with
    them, so join() returns."""
    q = Q(made, rq.JoinableQueue, conn)
    q.put_many([1, 2, 3])
    c = q._consumer()
    conn.client.lmove(q._items, c.proc, "LEFT", "RIGHT")  # in flight, never delivered
    q.shutdown(immediate=immediate)
    q._recover(c)
    if immediate:
        assert q.qsize() == 0
        q.join()
        with pytest.raises(rq.ShutDown):
            q.get_nowait()
    else:
        assert q.get_many() == [1, 2, 3]
        for _ in range(3):
            q.task_done()
        q.join()
        with pytest.raises(rq.ShutDown):
            q.get_nowait()
