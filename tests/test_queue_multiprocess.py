"""Queues shared between real processes, under fork, spawn and forkserver."""

import gc
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from interproc import Empty, JoinableQueue, Queue, SimpleQueue

import _helpers
from _helpers import TIMEOUT, join_ok, start, wait_until

KiB = 1024
MiB = 1024 * KiB

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["anonymous", "named"])
def make_queue(request, unique_name):
    """Builds queues that are either all anonymous or all named."""

    def make(cls=Queue, **kwargs):
        if request.param == "named":
            kwargs["name"] = unique_name()
        return cls(**kwargs)

    return make


# ------------------------------------------------------ as Process args

def test_process_args_both_directions(start_method, make_queue):
    q_in, q_out = make_queue(), make_queue()
    p = start(start_method, _helpers.echo_double, q_in, q_out, 50)
    for i in range(50):
        q_in.put(i)
    got = [q_out.get(timeout=TIMEOUT) for _ in range(50)]
    join_ok(p)
    assert got == [2 * i for i in range(50)]
    assert q_in.empty() and q_out.empty()


def test_simple_queue_as_process_args(start_method, make_queue):
    q_in, q_out = make_queue(SimpleQueue), make_queue(SimpleQueue)
    p = start(start_method, _helpers.simple_echo, q_in, q_out, 20)
    for i in range(20):
        q_in.put(("item", i))
    got = []
    for _ in range(20):
        wait_until(lambda: not q_out.empty(), what="the echo", interval=0.005)
        got.append(q_out.get())
    join_ok(p)
    assert got == [("item", i) for i in range(20)]


def test_qsize_is_exact_across_processes(start_method):
    q = Queue()
    p = start(start_method, _helpers.put_items, q, list(range(7)))
    join_ok(p)
    assert q.qsize() == 7
    assert q.get_many() == list(range(7))


def test_big_items_across_processes(start_method):
    q = Queue(capacity_bytes=64 * KiB)
    out = Queue()
    size = 5 * MiB
    p = start(start_method, _helpers.put_big, q, 1, size)
    producer, seq, ok = _helpers.check_item(q.get(timeout=TIMEOUT))
    join_ok(p)
    assert (producer, seq, ok) == ("big", 1, True)

    p = start(start_method, _helpers.get_big_and_check, q, out)
    _helpers.put_big(q, 2, size)
    assert out.get(timeout=TIMEOUT) == ("big", 2, True)
    join_ok(p)


# ------------------------------------------------------------ fan in/out

def test_many_producers_one_consumer(start_method):
    q = Queue(maxsize=16)
    n_producers, per_producer = 3, 500
    procs = [start(start_method, _helpers.produce_range, q, i, per_producer) for i in range(n_producers)]
    got = [q.get(timeout=TIMEOUT) for _ in range(n_producers * per_producer)]
    join_ok(*procs)
    with pytest.raises(Empty):
        q.get_nowait()
    for i in range(n_producers):
        assert [seq for pid, seq in got if pid == i] == list(range(per_producer))


def test_one_producer_many_consumers_exactly_once(start_method):
    q = Queue(maxsize=32)
    results = Queue()
    n_consumers, n_items = 3, 1500
    procs = [start(start_method, _helpers.consume_until_none, q, results, c) for c in range(n_consumers)]
    for i in range(n_items):
        q.put(i, timeout=TIMEOUT)
    for _ in procs:
        q.put(None, timeout=TIMEOUT)
    per_consumer = dict(results.get(timeout=TIMEOUT) for _ in procs)
    join_ok(*procs)
    everything = [x for got in per_consumer.values() for x in got]
    assert len(everything) == n_items, "an item was lost or delivered twice"
    assert sorted(everything) == list(range(n_items))
    for got in per_consumer.values():
        assert got == sorted(got), "a consumer saw items out of order"


def test_joinable_queue_across_processes(start_method, make_queue):
    q = make_queue(JoinableQueue)
    out = make_queue()
    workers = [start(start_method, _helpers.joinable_worker, q, out) for _ in range(2)]
    for i in range(20):
        q.put(i)
    joiner = threading.Thread(target=q.join, daemon=True)
    joiner.start()
    joiner.join(TIMEOUT)
    assert not joiner.is_alive(), "join() did not return after the children's task_done()"
    assert sorted(out.get(timeout=TIMEOUT) for _ in range(20)) == [i * i for i in range(20)]
    for _ in workers:
        q.put(None)
    join_ok(*workers)
    q.join()


# ----------------------------------------------------------------- pools

def test_pool_initializer_argument(start_method, make_queue):
    q = make_queue()
    with start_method.Pool(2, initializer=_helpers.pool_init, initargs=(q,)) as pool:
        assert pool.map_async(_helpers.pool_put, range(20), chunksize=1).get(TIMEOUT) == list(range(20))
        pool.close()
        pool.join()
    got = [q.get(timeout=TIMEOUT) for _ in range(20)]
    assert sorted(x for _, x in got) == list(range(20))
    assert os.getpid() not in {pid for pid, _ in got}


def test_pool_task_argument(start_method, make_queue):
    q = make_queue()
    with start_method.Pool(2) as pool:
        assert pool.apply_async(_helpers.put_items, (q, list(range(10)))).get(TIMEOUT) == 10
        assert [q.get(timeout=TIMEOUT) for _ in range(10)] == list(range(10))
        q.put_many(["a", "b", "c"])
        assert pool.apply_async(_helpers.get_items, (q, 3)).get(TIMEOUT) == ["a", "b", "c"]
        pool.close()
        pool.join()
    assert q.empty()


def test_process_pool_executor(start_method, make_queue):
    q = make_queue()
    with ProcessPoolExecutor(
        max_workers=2, mp_context=start_method, initializer=_helpers.pool_init, initargs=(q,)
    ) as ex:
        futures = [ex.submit(_helpers.pool_put, i) for i in range(10)]
        assert [f.result(timeout=TIMEOUT) for f in futures] == list(range(10))
        assert ex.submit(_helpers.put_items, q, ["x", "y"]).result(timeout=TIMEOUT) == 2
    got = [q.get(timeout=TIMEOUT) for _ in range(12)]
    assert sorted(item[1] for item in got if isinstance(item, tuple)) == list(range(10))
    assert [item for item in got if isinstance(item, str)] == ["x", "y"]


# ------------------------------------------------------- queue in a queue

def test_queue_sent_inside_another_queue(start_method, make_queue):
    outer, inner = make_queue(), make_queue()
    p = start(start_method, _helpers.use_queue_from_queue, outer, 5)
    outer.put(inner)
    assert [inner.get(timeout=TIMEOUT) for _ in range(5)] == list(range(5))
    join_ok(p)


def test_child_sends_back_an_anonymous_queue(start_method, make_queue):
    outer, ack = make_queue(), make_queue()
    p = start(start_method, _helpers.send_anonymous_queue, outer, ack, "payload")
    inner = outer.get(timeout=TIMEOUT)
    ack.put("got it")
    join_ok(p)
    # The child is gone; our handle keeps the memory alive.
    assert inner.name is None
    assert inner.get(timeout=5) == "payload"
    inner.put("mine")
    assert inner.get(timeout=5) == "mine"


def test_anonymous_queue_from_dead_sender_raises_runtime_error(start_method):
    outer = Queue()
    p = start(start_method, _helpers.send_anonymous_queue_and_exit, outer)
    join_ok(p)
    with pytest.raises(RuntimeError):
        outer.get(timeout=10)
    outer.put("still usable")
    assert outer.get(timeout=5) == "still usable"


# ----------------------------------------------------------- no leaks

def test_anonymous_queues_never_touch_dev_shm_and_are_freed(start_method):
    shm_before = _helpers.shm_entries()
    maps_before = len(_helpers.memfd_maps())
    fds_before = set(_helpers.memfd_fds())

    queues = [Queue(capacity_bytes=64 * KiB), SimpleQueue(), JoinableQueue()]
    out = Queue()
    procs = []
    for q in queues:
        q.put(b"z" * (200 * KiB))  # bigger than the ring: makes it grow
        procs.append(start(start_method, _helpers.echo_double, q, out, 1))
    got = [out.get(timeout=TIMEOUT) for _ in queues]
    join_ok(*procs)
    assert got == [b"z" * (400 * KiB)] * 3
    assert _helpers.new_shm_entries(shm_before) == set(), "an anonymous queue made a /dev/shm entry"
    assert len(_helpers.memfd_maps()) > maps_before, "anonymous queues are not memfd-backed"

    for q in queues + [out]:
        q.close()
    del q, queues, out, got
    gc.collect()
    # <=: a mapping counted before may belong to an object collected meanwhile.
    assert len(_helpers.memfd_maps()) <= maps_before, "memfd mappings outlived their queues"
    assert set(_helpers.memfd_fds()) <= fds_before, "memfd descriptors outlived their queues"


# ----------------------------------------------------------- wake-ups

def test_blocking_get_in_child_released_by_parent_put(start_method, make_queue):
    q, ready, out = make_queue(), make_queue(), make_queue()
    p = start(start_method, _helpers.get_and_report, q, ready, out)
    assert ready.get(timeout=TIMEOUT) == p.pid
    time.sleep(0.3)  # let the child go to sleep in get()
    assert p.is_alive()
    t_put = time.monotonic()
    q.put("wake")
    item, t_woke = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert item == "wake"
    assert t_woke - t_put < 0.5, f"woke {t_woke - t_put:.3f}s after the put"


def test_blocking_put_in_child_released_by_parent_get(start_method):
    q, ready, out = Queue(maxsize=1), Queue(), Queue()
    q.put("first")
    p = start(start_method, _helpers.put_and_report, q, ready, out, "second")
    assert ready.get(timeout=TIMEOUT) == p.pid
    time.sleep(0.3)
    assert q.qsize() == 1 and p.is_alive()
    t_get = time.monotonic()
    assert q.get(timeout=5) == "first"
    t_done = out.get(timeout=TIMEOUT)
    join_ok(p)
    assert t_done - t_get < 0.5, f"put returned {t_done - t_get:.3f}s after room was made"
    assert q.get(timeout=5) == "second"
