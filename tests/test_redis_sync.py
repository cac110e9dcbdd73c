"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier of
the Redis backend, against real servers (standalone, and a smoke test of
each kind on a 3-node cluster)."""

import os
import pickle
import signal
import threading
import time
import uuid
import warnings

import pytest

pytest.importorskip("redis")

from interproc import OwnerDiedWarning  # noqa: E402
from interproc.backends.redis import queues as rq  # noqa: E402
from interproc.backends.redis import synchronize as rs  # noqa: E402
from interproc.backends.redis.client import Connection  # noqa: E402

import _redis_sync_helpers as h  # noqa: E402




def M(made, cls, *args, **kwargs):
    obj = cls(*args, **kwargs)
    made.append(obj)
    return obj


def fresh_name():
    return f"t-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def in_thread(fn, *args):
    box = []
    t = threading.Thread(target=lambda: box.append(fn(*args)))
    t.start()
    t.join(30)
    return box[0]


# ------------------------------------------------------------------ Lock

RENEWER_AROUND_FORK = """
import multiprocessing, os, sys, threading
from interproc.backends.redis import synchronize as rs
from interproc.backends.redis.client import Connection

def renewer():
    return any(t.name == "interproc-lease-renewer" for t in threading.enumerate())

def nothing():
    pass

lock = rs.Lock(Connection.from_url(sys.argv[1]))
try:
    with lock:
        held = renewer()
    child = multiprocessing.get_context("fork").Process(target=nothing)
    child.start()
    child.join()
    print(held, renewer(), child.exitcode)
    with lock:
        print(renewer())
finally:
    lock._destroy()
"""


def test_a_fork_with_no_lock_held_stops_the_lease_renewer_first(redis_url):
    """Python 3.12+ warns when a process with threads forks: the renewer
    thread must not be there to cause it when it has no lease to renew."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", RENEWER_AROUND_FORK, redis_url],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False", "0", "True"], (res.stdout, res.stderr)


def test_lock_basics(conn, made):
    lock = M(made, rs.Lock, conn)
    assert not lock.locked()
    assert lock.acquire()
    assert lock.locked()
    assert lock.acquire(False) is False  # not re-entrant
    t0 = time.monotonic()
    assert lock.acquire(timeout=0.3) is False
    assert 0.25 <= time.monotonic() - t0 < 2.0
    assert in_thread(lock.acquire, False) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    with lock:
        assert lock.statistics()["locked"]
        assert lock.statistics()["owner_pid"] == os.getpid()


def test_only_the_owner_releases(conn, made):
    lock = M(made, rs.Lock, conn)
    lock.acquire()

    def other():
        try:
            lock.release()
        except RuntimeError as exc:
            return exc
    exc = in_thread(other)
    assert isinstance(exc, rs.LockNotOwnedError)
    assert isinstance(exc, RuntimeError) and isinstance(exc, AssertionError)
    assert "only be released by the thread that acquired it" in str(exc)
    from interproc.backends.redis import LockNotOwnedError
    assert LockNotOwnedError is rs.LockNotOwnedError
    assert lock.locked()
    lock.release()


def test_waiter_is_woken_by_release(conn, made):
    lock = M(made, rs.Lock, conn)
    lock.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append((lock.acquire(timeout=10), time.monotonic())))
    t.start()
    time.sleep(0.3)
    released = time.monotonic()
    lock.release()
    t.join(10)
    assert got[0][0] and got[0][1] - released < 0.5  # woken, not a chunk later


def test_lease_is_renewed_while_held(conn, made):
    lock = M(made, rs.Lock, conn, lease=0.5)
    assert lock.lease == 0.5
    lock.acquire()
    time.sleep(1.5)
    assert in_thread(lock.acquire, False) is False
    lock.release()
    assert in_thread(lambda: lock.acquire(False) and (lock.release() or True))


def test_lock_mutual_exclusion_across_processes(conn, made, start_method):
    lock = M(made, rs.Lock, conn)
    key = f"t-counter-{uuid.uuid4().hex}"
    procs = [start_method.Process(target=h.increment_under_lock, args=(lock, key, 40, False))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert int(conn.client.get(key)) == 120
    conn.client.delete(key, key + ":inside")


def test_killed_holder_loses_the_lock_after_its_lease(conn, made, start_method):
    lock = M(made, rs.Lock, conn, lease=1.0)
    started = M(made, rs.Event, conn)
    p = start_method.Process(target=h.hold_lock_forever, args=(lock, started))
    p.start()
    assert started.wait(30)
    assert lock.acquire(False) is False
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    t0 = time.monotonic()
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=10)
    assert time.monotonic() - t0 < 2.5
    assert lock.owner_died
    assert lock.statistics()["owner_deaths"] == 1
    lock.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lock.acquire(timeout=1)
    assert not lock.owner_died
    lock.release()


def test_another_process_cannot_release(conn, made, start_method):
    lock = M(made, rs.Lock, conn)
    lock.acquire()
    p = start_method.Process(target=h.try_release, args=(lock,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert lock.locked()
    lock.release()


# ------------------------------------------------------------------ RLock

def test_rlock_reentry(conn, made):
    r = M(made, rs.RLock, conn)
    assert r.acquire() and r.acquire(timeout=1)
    assert r.statistics()["recursion"] == 2
    assert in_thread(r.acquire, False) is False

    def other():
        try:
            r.release()
        except AssertionError as exc:  # multiprocessing's RLock error
            return exc
    assert isinstance(in_thread(other), RuntimeError)
    r.release()
    assert r.locked()
    r.release()
    assert not r.locked()
    with pytest.raises(RuntimeError):
        r.release()


def test_rlock_mutual_exclusion_across_processes(conn, made, start_method):
    lock = M(made, rs.RLock, conn)
    key = f"t-counter-{uuid.uuid4().hex}"
    procs = [start_method.Process(target=h.increment_under_lock, args=(lock, key, 25, True))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert int(conn.client.get(key)) == 50
    conn.client.delete(key, key + ":inside")


# ------------------------------------------------------------------ semaphores

def test_semaphore_counts(conn, made):
    s = M(made, rs.Semaphore, conn, 2)
    assert s.get_value() == 2
    assert s.acquire() and s.acquire()
    assert s.acquire(False) is False
    assert s.acquire(timeout=0.1) is False
    s.release(2)
    assert s.get_value() == 2
    with pytest.raises(ValueError):
        s.release(0)
    s.release()  # unbounded
    assert s.get_value() == 3
    with pytest.raises(ValueError):
        rs.Semaphore(conn, -1)


def test_bounded_semaphore_refuses_over_release(conn, made):
    s = M(made, rs.BoundedSemaphore, conn, 1)
    with pytest.raises(ValueError):
        s.release()
    with s:
        assert s.get_value() == 0
    assert s.get_value() == 1


def test_semaphore_limits_concurrency_across_processes(conn, made, start_method):
    s = M(made, rs.Semaphore, conn, 2)
    key = f"t-sem-{uuid.uuid4().hex}"
    procs = [start_method.Process(target=h.use_semaphore, args=(s, key, 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert 1 <= int(conn.client.get(key + ":max")) <= 2
    assert s.get_value() == 2
    conn.client.delete(key, key + ":max")


# ------------------------------------------------------------------ Event

def test_event_basics(conn, made):
    e = M(made, rs.Event, conn)
    assert not e.is_set() and e.wait(0) is False
    t0 = time.monotonic()
    assert e.wait(0.2) is False
    assert time.monotonic() - t0 >= 0.15
    e.set()
    assert e.is_set() and e.wait() and e.wait(0)
    e.clear()
    assert not e.is_set()


def test_event_wakes_processes(conn, made, start_method):
    e = M(made, rs.Event, conn)
    ready = M(made, rq.Queue, conn)
    results = M(made, rq.Queue, conn)
    procs = [start_method.Process(target=h.wait_event, args=(e, ready, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.get(timeout=30) == "waiting"
    time.sleep(0.3)
    e.set()
    for _ in procs:
        ok, waited = results.get(timeout=30)
        assert ok
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


# ------------------------------------------------------------------ Condition

def test_condition_rules(conn, made):
    c = M(made, rs.Condition, conn)
    with pytest.raises(RuntimeError):
        c.notify()
    with pytest.raises(RuntimeError):
        c.wait(0.1)
    with c:
        assert c.wait(0.1) is False
        c.notify_all()
        assert c._lock._is_owned()
    with pytest.raises(TypeError):
        rs.Condition(conn, threading.Lock())


def test_condition_notify_across_processes(conn, made, start_method):
    c = M(made, rs.Condition, conn)
    results = M(made, rq.Queue, conn)
    key = f"t-cond-{uuid.uuid4().hex}"
    p = start_method.Process(target=h.wait_condition, args=(c, key, results))
    p.start()
    assert results.get(timeout=30) == "waiting"
    with c:  # the child is waiting by now (it released the lock)
        conn.client.set(key, b"done")
        c.notify()
    assert results.get(timeout=30) == b"done"
    p.join(30)
    assert p.exitcode == 0
    conn.client.delete(key)


def test_condition_with_a_given_lock_pickles(conn, made):
    lock = M(made, rs.Lock, conn)
    c = M(made, rs.Condition, conn, lock)
    c2 = pickle.loads(pickle.dumps(c))
    assert isinstance(c2._lock, rs.Lock) and c2._lock._ident == lock._ident
    q = M(made, rq.Queue, conn)
    q.put(c)
    c3 = q.get()
    assert c3._lock._ident == lock._ident
    with c3:
        assert lock.locked()


# ------------------------------------------------------------------ Barrier

def test_barrier_rounds_across_processes(conn, made, start_method):
    b = M(made, rs.Barrier, conn, 3)
    results = M(made, rq.Queue, conn)
    procs = [start_method.Process(target=h.barrier_rounds, args=(b, 2, results)) for _ in range(2)]
    for p in procs:
        p.start()
    mine = [b.wait(30) for _ in range(2)]
    theirs = [results.get(timeout=30) for _ in procs]
    for r in range(2):
        assert sorted([mine[r]] + [t[r] for t in theirs]) == [0, 1, 2]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert b.n_waiting == 0 and not b.broken and b.parties == 3


def test_barrier_action_and_broken(conn, made, redis_url, monkeypatch):
    key = f"t-action-{uuid.uuid4().hex}"
    monkeypatch.setenv("IP_TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("IP_TEST_ACTION_KEY", key)
    b = M(made, rs.Barrier, conn, 2, h.barrier_action)
    out = []
    t = threading.Thread(target=lambda: out.append(b.wait(10)))
    t.start()
    out.append(b.wait(10))
    t.join()
    assert sorted(out) == [0, 1] and int(conn.client.get(key)) == 1
    conn.client.delete(key)
    # A wait that times out breaks the barrier for everyone.
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(0.3)
    assert time.monotonic() - t0 < 2.0
    assert b.broken
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(1)
    b.reset()
    assert not b.broken
    # abort() wakes a waiter with BrokenBarrierError
    errs = []

    def waiter():
        try:
            b.wait(10)
        except threading.BrokenBarrierError:
            errs.append("broken")
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert b.n_waiting == 1
    b.abort()
    t.join(5)
    assert errs == ["broken"]
    b.reset()
    # a Barrier travels by reference through a queue, action included
    q = M(made, rq.Queue, conn)
    q.put(b)
    b2 = q.get()
    assert b2.parties == 2 and b2._action is h.barrier_action


def test_barrier_reset_breaks_waiters(conn, made, start_method):
    b = M(made, rs.Barrier, conn, 2)
    results = M(made, rq.Queue, conn)
    p = start_method.Process(target=h.barrier_expect_broken, args=(b, results))
    p.start()
    deadline = time.monotonic() + 30
    while b.n_waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    b.reset()
    assert results.get(timeout=30) == "broken"
    p.join(30)
    assert p.exitcode == 0


# ------------------------------------------------------------------ names, cluster

def test_names_and_kinds(conn, made):
    name = fresh_name()
    s = M(made, rs.Semaphore, conn, 3, name=name, create=True)
    s.acquire()
    s2 = rs.Semaphore(conn, 99, name=name)
    assert s2.get_value() == 2  # the existing one's value
    with pytest.raises(FileExistsError):
        rs.Semaphore(conn, name=name, create=True)
    with pytest.raises(TypeError):
        rs.Lock(conn, name=name)
    s.unlink()
    assert not conn.client.keys(f"ip:{{{name}}}:*")
    with pytest.raises(FileNotFoundError):
        rs.Event(conn, name=name, create=False)


def test_cluster_smoke(redis_cluster_url):
    conn = Connection.from_url(redis_cluster_url)
    assert conn.is_cluster
    objs = []
    try:
        lock = rs.Lock(conn, name=fresh_name(), lease=1.0)
        objs.append(lock)
        assert lock.acquire() and not in_thread(lock.acquire, False)
        lock.release()
        r = rs.RLock(conn, name=fresh_name())
        objs.append(r)
        with r, r:
            assert r.statistics()["recursion"] == 2
        s = rs.BoundedSemaphore(conn, 1, name=fresh_name())
        objs.append(s)
        assert s.acquire() and not s.acquire(timeout=0.1)
        threading.Timer(0.2, s.release).start()
        assert s.acquire(timeout=5)
        s.release()
        e = rs.Event(conn, name=fresh_name())
        objs.append(e)
        threading.Timer(0.2, e.set).start()
        assert e.wait(5)
        c = rs.Condition(conn, name=fresh_name())
        objs.append(c)
        box = []

        def notifier():
            time.sleep(0.2)
            with c:
                box.append(1)
                c.notify_all()
        threading.Thread(target=notifier).start()
        with c:
            assert c.wait_for(lambda: box, 5)
        b = rs.Barrier(conn, 2, name=fresh_name())
        objs.append(b)
        out = []
        t = threading.Thread(target=lambda: out.append(b.wait(5)))
        t.start()
        out.append(b.wait(5))
        t.join()
        assert sorted(out) == [0, 1]
        copy = pickle.loads(pickle.dumps(lock))
        assert copy.acquire(timeout=1)
        copy.release()
    finally:
        for obj in objs:
            obj.unlink()
    for obj in objs:
        assert not conn.client.keys(f"ip:{{{obj.name}}}:*")
