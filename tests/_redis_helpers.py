"""Helpers of the Redis backend tests: ``require_redis()``, and child-process
targets (module level, so that spawn and forkserver can import them by name).

The servers themselves come from ``interproc.backends.redis.local_server``,
which the benchmarks use too.
"""

import os

INSTALL_HINT = (
    "install Redis to run these tests (Debian/Ubuntu: apt-get install redis-server; "
    "CI: .ci/run installs it and runs make test)"
)


def require_redis(cli: bool = False) -> None:
    """Skip (or, with INTERPROC_REQUIRE_REDIS=1, fail) when Redis is missing."""
    import pytest

    from interproc.backends.redis.local_server import missing_binaries

    missing = missing_binaries(cli)
    if not missing:
        return
    msg = f"{' and '.join(missing)} not found: {INSTALL_HINT}"
    if os.environ.get("INTERPROC_REQUIRE_REDIS") == "1":
        pytest.fail(f"INTERPROC_REQUIRE_REDIS=1, but {msg}", pytrace=False)
    pytest.skip(msg)


def child_uses_connection(conn, key, out):
    """Write through a Connection handed to a child; report the child's client id."""
    try:
        client = conn.client
        client.set(key, str(os.getpid()).encode())
        out.put(("ok", client.client_id(), conn.options))
    except BaseException as exc:  # reported, not lost in the child's stderr
        out.put(("error", f"{type(exc).__name__}: {exc}", None))


def child_reconnects_from_options(options, key, out):
    """Rebuild a Connection from its pickled options in a child."""
    try:
        from interproc.backends.redis.client import Connection

        conn = Connection.from_options(options)
        conn.client.set(key, b"from-options")
        out.put(("ok", conn.client.client_id(), conn.is_cluster))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None))


def child_creates_meta(url, name, barrier, out):
    """Race other children to create one object; report whether this one made it."""
    try:
        from interproc.backends.redis import keys
        from interproc.backends.redis.client import Connection

        conn = Connection.from_url(url)
        conn.ping()
        barrier.wait(30)
        meta = keys.create_meta(conn, name, "Queue", {"maxsize": os.getpid()}, None, parts=["items"])
        out.put(("ok", meta.created, meta["maxsize"], meta.uid))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None, None))


def child_puts_replicated(q, item, out):
    """Put through a queue handed to a child; report the child's replica
    setting and what the put raised (None if nothing)."""
    try:
        conn = q._conn
        try:
            q.put(item)
            raised = None
        except Exception as exc:
            raised = type(exc).__name__
        out.put(("ok", conn.replicas, conn.replica_timeout, raised))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}", None, None))


# ---------------------------------------------------------------------------
# Objects of every kind, used so that their keys are deleted and made afresh
# (test_redis_lifetime; the child processes there import these).

def make_every_kind(m, name=None):
    """One object of every kind a manager makes; ``name(kind)`` names them
    (anonymous when ``name`` is None)."""
    def n(kind):
        return {} if name is None else {"name": name(kind)}
    return {
        "dict": m.dict({"a": 1}, **n("dict")),
        "list": m.list([1], **n("list")),
        "set": m.set({1}, **n("set")),
        "Namespace": m.Namespace(x=1, **n("Namespace")),
        "Value": m.Value("i", 1, **n("Value")),
        "Array": m.Array("i", [1, 2], **n("Array")),
        "Queue": m.Queue(**n("Queue")),
        "BoundedQueue": m.Queue(2, **n("BoundedQueue")),
        "JoinableQueue": m.JoinableQueue(**n("JoinableQueue")),
        "SimpleQueue": m.SimpleQueue(**n("SimpleQueue")),
        "Lock": m.Lock(**n("Lock")),
        "RLock": m.RLock(**n("RLock")),
        "Semaphore": m.Semaphore(2, **n("Semaphore")),
        "BoundedSemaphore": m.BoundedSemaphore(2, **n("BoundedSemaphore")),
        "Condition": m.Condition(**n("Condition")),
        "Event": m.Event(**n("Event")),
        "Barrier": m.Barrier(2, **n("Barrier")),
        "Barrier1": m.Barrier(1, **n("Barrier1")),
    }


def exercise(objs):
    """Empty and refill every container and queue (Redis deletes an emptied
    list, hash or set, so their keys are made afresh), and wait on and
    wake every primitive; leaves nothing held or waiting, and every
    container and queue holding something."""
    import queue as _queue
    import threading

    d = objs["dict"]
    d.clear()
    d["b"] = 2
    d.setdefault("c", [3])
    lst = objs["list"]
    del lst[:]
    lst.extend([3, 4])
    s = objs["set"]
    s.clear()
    s.add(5)
    ns = objs["Namespace"]
    ns.y = 2
    del ns.x
    ns.x = 3
    v = objs["Value"]
    v.value += 1
    v.get_obj().value += 1
    a = objs["Array"]
    a[0] = a[1] + 1
    for key in ("Queue", "BoundedQueue", "JoinableQueue", "SimpleQueue"):
        q = objs[key]
        while not q.empty():  # what the previous round left
            q.get()
            if key == "JoinableQueue":
                q.task_done()
        q.put("x")
        assert q.get() == "x"
        if key == "JoinableQueue":
            q.task_done()
        if key != "SimpleQueue":
            try:  # waits in Redis, and gives up
                q.get(timeout=0.05)
            except _queue.Empty:
                pass
        q.put("y")
    bq = objs["BoundedQueue"]
    bq.put("z")
    try:
        bq.put("full", timeout=0.05)  # a producer registers to wait, and gives up
    except _queue.Full:
        pass
    for key in ("Lock", "RLock"):
        lock = objs[key]
        with lock:
            # Another thread registers to wait, and gives up.
            t = threading.Thread(target=lock.acquire, kwargs={"timeout": 0.05})
            t.start()
            t.join()
    for key in ("Semaphore", "BoundedSemaphore"):
        sem = objs[key]
        sem.acquire()
        sem.acquire()
        sem.acquire(timeout=0.05)
        sem.release()
        sem.release()
    c = objs["Condition"]
    with c:
        c.wait(0.05)
        c.notify_all()
    e = objs["Event"]
    e.set()
    e.clear()
    e.wait(0.05)
    objs["Barrier1"].wait()
    b = objs["Barrier"]
    try:
        b.wait(0.05)  # breaks it
    except threading.BrokenBarrierError:
        pass
    b.reset()


def outlive(parent, seconds):
    """In a child of ``parent``: wait until ``parent`` is gone, then
    ``seconds`` more (long enough for a test to watch what the parent left
    expire), with no pipe of the parent's held open meanwhile."""
    import time

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    while os.getppid() == parent:
        time.sleep(0.1)
    time.sleep(seconds)
