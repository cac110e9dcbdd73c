"""Redis locks under faults: a holder frozen past its lease (SIGSTOP), a
lock whose keys vanish, a Barrier whose action's process dies, and a
server that stalls (SIGSTOP of redis-server).  Real servers and real
processes; every fault is made at a known point."""

import multiprocessing
import os
import signal
import threading
import time
import uuid
import warnings

import pytest

pytest.importorskip("redis")

from interproc.backends.redis import LeaseLostError  # noqa: E402
from interproc.backends.redis import synchronize as rs  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402
from interproc.backends.redis.containers import RedisDict  # noqa: E402
from interproc.backends.redis.sharedctypes import Value  # noqa: E402

import _redis_sync_helpers as h  # noqa: E402

#: Short enough that the tests wait little for a lease to run out, long
#: enough for the renewer to keep it on a loaded machine (renewed every third).
SHORT_LEASE = 1.5




def M(made, obj):
    made.append(obj)
    return obj


def fresh_name():
    return f"t-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def wait_until(predicate, bound=30.0):
    """Poll ``predicate`` until true; fail after ``bound`` seconds."""
    end = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > end:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


def start_paused_writer(start_method, slot, lock):
    ready, go, results = start_method.Event(), start_method.Event(), start_method.Queue()
    p = start_method.Process(target=h.write_after_a_pause, args=(slot, lock, ready, go, results))
    p.start()
    if not ready.wait(60):
        p.kill()
        pytest.fail("the writer did not take the lock")
    return p, go, results


# ------------------------------------------------------------------ fencing


@pytest.mark.timeout(90)
def test_frozen_holder_cannot_write_after_another_took_the_lock(conn, made, start_method):
    d = M(made, RedisDict(conn, name=fresh_name(), lease=SHORT_LEASE))
    d["x"] = 100
    p, go, results = start_paused_writer(start_method, h.DictSlot(d, "x"), d.lock)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        # The frozen holder stops renewing: its lease runs out, and this
        # acquire takes the lock over.
        assert quietly(d.lock.acquire, timeout=30)
        assert d.lock.owner_died
        mine = d.lock.fencing_token
        d["x"] = d["x"] + 5
    finally:
        os.kill(p.pid, signal.SIGCONT)
    try:
        go.set()
        # While this process still holds the lock, the old holder's write is
        # refused at once (it used to wait for the lock and then write).
        fence, outcome = results.get(timeout=30)
    finally:
        d.lock.release()
        p.join(30)
    assert outcome == ["write refused", "release refused"]
    assert mine > fence
    assert d["x"] == 105
    assert p.exitcode == 0


@pytest.mark.timeout(90)
def test_frozen_holder_cannot_write_after_its_lease_ran_out_unused(conn, made, start_method):
    v = M(made, Value(conn, "i", 100, name=fresh_name(), lease=SHORT_LEASE))
    p, go, results = start_paused_writer(start_method, h.ValueSlot(v), v.get_lock())
    os.kill(p.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not v.get_lock().locked())
    finally:
        os.kill(p.pid, signal.SIGCONT)
    go.set()
    fence, outcome = results.get(timeout=30)
    p.join(30)
    # Nobody took the lock meanwhile: the release is an ordinary one, but the
    # write, made without a lease, was refused all the same.
    assert outcome == ["write refused", "released"]
    assert v.value == 100
    assert p.exitcode == 0


@pytest.mark.timeout(30)
def test_operations_of_a_holder_whose_lock_keys_vanished_are_refused(conn, made):
    d = M(made, RedisDict(conn, name=fresh_name()))
    d["x"] = 1
    with pytest.raises(LeaseLostError):
        with d.lock:
            d["x"] = 2
            conn.client.delete(d.lock._keys[0])  # the lease is gone
            d["x"] = 3
    assert d["x"] == 2


@pytest.mark.timeout(30)
def test_rlock_reentry_after_the_lease_was_lost_is_refused(conn, made):
    d = M(made, RedisDict(conn, name=fresh_name()))
    with pytest.raises(LeaseLostError):
        with d.lock:
            conn.client.delete(d.lock._keys[0])
            # Re-entering would take the lock afresh and hide the gap.
            d.lock.acquire()
    assert not d.lock.locked()


@pytest.mark.timeout(30)
def test_leaving_an_inner_rlock_hold_after_the_lease_was_lost_keeps_the_outer_fenced(conn, made):
    d = M(made, RedisDict(conn, name=fresh_name()))
    with d.lock:
        with pytest.raises(LeaseLostError):
            with d.lock:
                conn.client.delete(d.lock._keys[0])
        # The outer hold is still this thread's, and its lease still gone.
        with pytest.raises(LeaseLostError):
            d["x"] = 1
        assert d.lock.fencing_token is not None
    assert d.lock.fencing_token is None
    assert "x" not in d and not d.lock.locked()


@pytest.mark.timeout(30)
def test_condition_notify_by_a_holder_whose_lease_was_lost_is_refused(conn, made):
    cond = M(made, rs.Condition(conn, name=fresh_name()))
    with pytest.raises(LeaseLostError):
        with cond:
            conn.client.delete(cond._lock._keys[0])
            cond.notify()


@pytest.mark.timeout(30)
def test_fencing_tokens_increase_with_every_acquisition(conn, made):
    name = fresh_name()
    lock = M(made, rs.Lock(conn, name=name))
    assert lock.fencing_token is None
    seen = []
    for _ in range(3):
        with lock:
            seen.append(lock.fencing_token)
            assert threading_fence(lock) is None  # another thread holds nothing
        assert lock.fencing_token is None
    assert seen == sorted(set(seen)) and len(seen) == 3
    # Another handle (another process would do the same) continues the count.
    other = rs.Lock(conn, name=name, create=False)
    with other:
        assert other.fencing_token > seen[-1]
        assert lock.fencing_token == other.fencing_token  # the same thread holds it

    rlock = M(made, rs.RLock(conn, name=fresh_name()))
    with rlock:
        first = rlock.fencing_token
        with rlock:  # a re-entry is not a new acquisition
            assert rlock.fencing_token == first
        assert rlock.fencing_token == first
    with rlock:
        assert rlock.fencing_token > first

    cond = M(made, rs.Condition(conn, name=fresh_name()))
    with cond:
        before = cond.fencing_token
        assert cond.wait(0.01) is False  # released, then taken afresh
        assert cond.fencing_token > before

    d = M(made, RedisDict(conn, name=fresh_name()))
    with d.lock:
        assert d.lock.fencing_token >= 1


def threading_fence(lock):
    box = []
    t = threading.Thread(target=lambda: box.append(lock.fencing_token))
    t.start()
    t.join(10)
    return box[0]


@pytest.mark.timeout(30)
def test_fencing_counter_lives_and_dies_with_the_lock(conn):
    name = fresh_name()
    lock = rs.Lock(conn, name=name)
    with lock:
        first = lock.fencing_token
    # Released, nobody holding it: the count is kept for the next holder.
    assert any(conn.client.hget(k, "fence") for k in conn.client.keys(f"*{name}*"))
    with lock:
        assert lock.fencing_token == first + 1
    lock._destroy()
    assert conn.client.keys(f"*{name}*") == []


# ------------------------------------------------------------------ barrier


@pytest.mark.timeout(120)
def test_barrier_breaks_when_the_process_running_its_action_dies(conn, made, redis_url, monkeypatch):
    ctx = multiprocessing.get_context("spawn")
    started = f"ip-test-action-{uuid.uuid4().hex}"
    monkeypatch.setenv("IP_TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("IP_TEST_ACTION_KEY", started)
    b = M(made, rs.Barrier(conn, 3, action=h.barrier_action_that_hangs, name=fresh_name()))
    results = ctx.Queue()
    # Waits longer than the test: only the runner's death can break it.
    waiters = [ctx.Process(target=h.barrier_expect_broken, args=(b, results, 300))
               for _ in range(2)]
    runner = ctx.Process(target=h.barrier_expect_broken, args=(b, results))
    try:
        for p in waiters:
            p.start()
        wait_until(lambda: b.n_waiting == 2, bound=60)
        runner.start()  # the last party: it runs the action
        wait_until(lambda: conn.client.get(started) is not None, bound=60)
        os.kill(runner.pid, signal.SIGKILL)
        # The dead runner's registration runs out (about 6 s): both break.
        assert [results.get(timeout=45) for _ in waiters] == ["broken", "broken"]
        assert b.broken
    finally:
        conn.client.delete(started)
        for p in waiters + [runner]:
            if p.pid is not None:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join()


def slow_action():
    time.sleep(7)  # longer than a registration lasts without a refresh


@pytest.mark.timeout(60)
def test_barrier_action_longer_than_a_registration_does_not_break_it(conn, made):
    b = M(made, rs.Barrier(conn, 2, action=slow_action, name=fresh_name()))
    box = []
    waiter = threading.Thread(target=lambda: box.append(b.wait(h.CHILD_TIMEOUT)))
    waiter.start()
    wait_until(lambda: b.n_waiting == 1)
    assert b.wait(h.CHILD_TIMEOUT) == 1  # runs the action
    waiter.join(h.CHILD_TIMEOUT)
    assert box == [0] and not b.broken


@pytest.mark.timeout(120)
def test_barrier_survives_a_server_stall_with_every_party_alive(private_redis):
    server = private_redis()
    ctx = multiprocessing.get_context("spawn")
    conn = Connection.from_url(server.url, socket_timeout=h.CHILD_TIMEOUT)
    name = fresh_name()
    b = rs.Barrier(conn, 3, name=name)
    results = ctx.Queue()
    procs = [ctx.Process(target=h.barrier_wait_by_name, args=(server.url, name, 3, results))
             for _ in range(2)]
    try:
        for p in procs:
            p.start()
        wait_until(lambda: b.n_waiting == 2, bound=60)
        # Longer than a registration lasts (6 s): no party can refresh its
        # own meanwhile, and none of them is dead.
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(7)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        b.wait(h.CHILD_TIMEOUT)
        assert [results.get(timeout=60) for _ in procs] == ["passed", "passed"]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
